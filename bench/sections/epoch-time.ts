/**
 * Wall time of one full MNIST training epoch in the default `lowbit train` configuration
 * (LeNet-5, W4A4 LSQ QAT, batch 64, Adam lr 2e-3) and of the same job with `--quant fp32`, on
 * the native backend, through the train API (`fit`), not the CLI: see ./train-job.ts, whose one
 * measurement (full epochs, the two configurations alternating) this section shares with
 * `qat-epoch`. Acceptance: the default job under 10 s per epoch.
 * Peer: PyTorch running one epoch of the same model, batch size and optimizer over 60,000
 * in-memory samples.
 */
import { measured, median, skippedMeasurement, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { repeatsOf, runTorch } from '../peers/torch.ts';
import { benchBackends, mnist, nativeMissingReason } from '../workloads.ts';
import { measureTrainJob, TRAIN_JOB, trainJobRatios } from './train-job.ts';

const BATCH = TRAIN_JOB.batchSize;
const ACCEPT_SECONDS = 10;
const ADAM_LR = TRAIN_JOB.lr;

/** The two configurations timed: the CLI default (W4A4 QAT) first, then fp32. */
const CONFIGS = [
  { id: 'epoch/lowbit-native-w4a4', impl: 'lowbit (native), W4A4 LSQ QAT = `lowbit train` default', quant: 'w4a4' },
  { id: 'epoch/lowbit-native', impl: 'lowbit (native), fp32', quant: 'fp32' },
] as const;

async function run(ctx: SectionContext): Promise<SectionOutput> {
  if (!benchBackends().includes('native')) return { status: 'skipped', reason: nativeMissingReason(), measurements: [] };
  const ds = mnist('train');
  if (typeof ds === 'string') return { status: 'skipped', reason: `MNIST not available: ${ds}`, measurements: [] };

  const group = `MNIST epoch (${ds.length.toLocaleString('en-US')} samples), LeNet-5, batch ${BATCH}`;
  const torchId = 'epoch/torch';
  const measurements: Measurement[] = [];
  const job = await measureTrainJob(ctx, ds);
  const medians = new Map<string, number>();
  for (const config of CONFIGS) {
    const wall = job.wall[config.quant];
    medians.set(config.quant, median(wall));
    measurements.push(
      measured(
        {
          id: config.id,
          group,
          impl: config.impl,
          unit: 's',
          higherIsBetter: false,
          peers: [torchId],
          details: { samplesPerSecond: ds.length / median(wall), cpuSeconds: job.cpu[config.quant], trainAccuracyPerEpoch: job.trainAccuracy[config.quant], acceptanceSeconds: ACCEPT_SECONDS },
        },
        wall,
      ),
    );
  }
  const samples = ds.length;

  ctx.log('PyTorch');
  const t = await runTorch({ task: 'epoch', model: 'lenet5', batch: BATCH, repeats: ctx.repeats, warmup: 20, samples, threads: ctx.threads, optimizer: 'adam', lr: ADAM_LR }, 600);
  const tbase = { id: torchId, group, impl: t.ok ? `PyTorch ${String(t.json.torch)}` : 'PyTorch', unit: 's', higherIsBetter: false };
  measurements.push(t.ok ? measured({ ...tbase, details: { samplesPerSecond: t.json.samples_per_s, data: t.json.data } }, repeatsOf(t.json)) : skippedMeasurement(tbase, t.reason));

  const med = medians.get('w4a4')!;
  const fp32 = medians.get('fp32')!;
  const notes = [
    `lowbit: \`fit()\` for one epoch over MNIST train (${samples} samples, ${Math.ceil(samples / BATCH)} steps), DataLoader shuffle + normalise, Adam lr ${ADAM_LR} (quantizer parameters at ${TRAIN_JOB.quantLrScale}x), the \`lowbit train\` defaults, training pass only (no test pass, no checkpoint); wall time of the \`fit\` call, W4A4 and fp32 epochs alternating (bench/sections/train-job.ts, shared with \`qat-epoch\`). Default (W4A4 QAT): median ${med.toFixed(2)} s = **${Math.round(samples / med).toLocaleString('en-US')} samples/s**; fp32: ${fp32.toFixed(2)} s = ${Math.round(samples / fp32).toLocaleString('en-US')} samples/s (QAT/fp32 = ${trainJobRatios(job).wall.toFixed(2)}x).`,
    `Acceptance (< ${ACCEPT_SECONDS} s per epoch of the default \`lowbit train\` on the native backend): **${med < ACCEPT_SECONDS ? 'met' : 'NOT met'}** (${med.toFixed(2)} s).`,
    t.ok
      ? `PyTorch: one epoch over ${samples} random MNIST-shaped samples held in memory (shuffled index per epoch, batches sliced out), same model, batch and optimizer; ${Math.round(Number(t.json.samples_per_s)).toLocaleString('en-US')} samples/s. Ratio compares samples/s.`
      : `PyTorch peer skipped: ${t.reason}.`,
  ];
  return { measurements, notes };
}

export const epochTime: Section = {
  name: 'epoch-time',
  title: 'MNIST epoch time (default `lowbit train` configuration)',
  run,
};
