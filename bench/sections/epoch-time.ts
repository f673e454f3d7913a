/**
 * Wall time of one full MNIST training epoch in the default `lowbit train` configuration
 * (LeNet-5, W4A4 LSQ QAT with quantizer parameters at 0.1x LR, batch 64, shuffled with seed 0,
 * normalised, Adam lr 2e-3; see src/cli/commands/train.ts) and of the same run in fp32, on the
 * native backend, through the train API (`fit`), not the CLI. The training pass is timed; the
 * CLI's per-epoch test pass and checkpoint are not part of it. Acceptance: under 10 s.
 * Peer: PyTorch running one epoch of the same model, batch size and optimizer over 60,000
 * in-memory samples.
 */
import { DATASET_STATS, DataLoader, take } from '../../src/data/index.ts';
import { fit } from '../../src/train/fit.ts';
import { Adam } from '../../src/optim/index.ts';
import { prepareQat, qatFromCliOptions, qatParamGroups } from '../../src/quant/qat/index.ts';
import { measured, median, now, skippedMeasurement, tick, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { repeatsOf, runTorch } from '../peers/torch.ts';
import { benchBackends, buildModel, mnist, nativeMissingReason, withBackend } from '../workloads.ts';

const BATCH = 64;
const ACCEPT_SECONDS = 10;
/** `lowbit train` defaults: Adam, lr 2e-3, no weight decay (the cosine schedule steps after the epoch). */
const ADAM_LR = 2e-3;

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
  const medians = new Map<string, number>();
  for (const config of CONFIGS) {
    const fitSeconds: number[] = [];
    const wall: number[] = [];
    const accuracy: number[] = [];
    await withBackend('native', async () => {
      const model = buildModel('lenet5');
      const plan = qatFromCliOptions({ quant: config.quant });
      if (plan) prepareQat(model, plan);
      const optimizer = new Adam(qatParamGroups(model, { lr: ADAM_LR }), { lr: ADAM_LR, weightDecay: 0 });
      const loaderOptions = { batchSize: BATCH, shuffle: true, normalize: DATASET_STATS.mnist } as const;
      // Warm-up (untimed): a short pass so that JIT, allocator and thread pool are hot.
      fit(model, { trainLoader: new DataLoader(take(ds, BATCH * 40), { ...loaderOptions, seed: 99 }), optimizer, epochs: 1, progress: false });
      const loader = new DataLoader(ds, { ...loaderOptions, seed: 0 });
      for (let r = 0; r < ctx.repeats; r++) {
        await tick();
        ctx.log(`${config.quant} epoch ${r + 1}/${ctx.repeats}`);
        const t0 = now();
        const h = fit(model, { trainLoader: loader, optimizer, epochs: 1, progress: false });
        wall.push(now() - t0);
        const rec = h.epochs[0]!;
        fitSeconds.push(rec.seconds);
        accuracy.push(rec.trainAccuracy);
      }
    });
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
          details: { samplesPerSecond: ds.length / median(wall), fitReportedSeconds: fitSeconds, trainAccuracyPerEpoch: accuracy, acceptanceSeconds: ACCEPT_SECONDS },
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
    `lowbit: \`fit()\` for one epoch over MNIST train (${samples} samples, ${Math.ceil(samples / BATCH)} steps), DataLoader shuffle + normalise, Adam lr ${ADAM_LR} (the \`lowbit train\` defaults), training pass only (no test pass, no checkpoint); wall time of the \`fit\` call, the same model training on across repeats (after an untimed 40-step warm-up). Default (W4A4 QAT): median ${med.toFixed(2)} s = **${Math.round(samples / med).toLocaleString('en-US')} samples/s**; fp32: ${fp32.toFixed(2)} s = ${Math.round(samples / fp32).toLocaleString('en-US')} samples/s (QAT/fp32 = ${(med / fp32).toFixed(2)}x).`,
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
