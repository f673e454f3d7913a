/**
 * QAT epoch time vs fp32 epoch time of the same model (issue 4, acceptance 5: ≤ 1.3×), with
 * one definition: full MNIST epochs of the default `lowbit train` job (LeNet-5, W4A4 LSQ, first
 * and last layers and the input at 8 bit, Adam lr 2e-3, quantizer parameters at 0.1x, batch 64)
 * against the same job with `--quant fp32`, on the native backend, the two alternating epoch by
 * epoch; the figure is median(W4A4 epochs) / median(fp32 epochs). The epochs are the ones
 * `epoch-time` reports (bench/sections/train-job.ts measures them once per bench process), so the
 * two sections cannot disagree. Peer: bench/qat/torch_qat.py (PyTorch eager-mode QAT with the
 * fbgemm qconfig on the same LeNet-5), its QAT / fp32 epoch-time ratio over a 1-epoch run on a
 * subset.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage, measured, median, skippedMeasurement, torchPeerEnv, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { benchBackends, mnist, nativeMissingReason } from '../workloads.ts';
import { measureTrainJob, TRAIN_JOB, trainJobRatios } from './train-job.ts';

const BATCH = TRAIN_JOB.batchSize;
const ACCEPT_RATIO = 1.3;
const root = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

/** Rows of the section: measurement id and label per configuration of the shared job. */
const CONFIGS = [
  { key: 'lenet5-fp32', quant: 'fp32', label: 'fp32 (`lowbit train --quant fp32`)' },
  { key: 'lenet5-w4a4-lsq', quant: 'w4a4', label: 'W4A4 LSQ (`lowbit train` default)' },
] as const;

interface TorchResult {
  ok: boolean;
  reason?: string;
  json?: Record<string, unknown>;
}

function runTorchQat(ctx: SectionContext, limit: number): TorchResult {
  const script = join(root, 'bench', 'qat', 'torch_qat.py');
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const r = spawnSync(python, [script, '--epochs', '1', '--limit', String(limit), '--test-limit', '2000', '--threads', String(ctx.threads)], {
    cwd: root, encoding: 'utf8', timeout: 900_000, env: torchPeerEnv(ctx.threads),
  });
  if (r.error) return { ok: false, reason: errorMessage(r.error) };
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    const json = JSON.parse(last) as Record<string, unknown>;
    if (typeof json.skipped === 'string') return { ok: false, reason: json.skipped };
    return { ok: true, json };
  } catch {
    return { ok: false, reason: `torch_qat.py exited ${r.status}: ${(r.stderr ?? '').trim().split('\n').pop() ?? ''}` };
  }
}

async function run(ctx: SectionContext): Promise<SectionOutput> {
  if (!benchBackends().includes('native')) return { status: 'skipped', reason: nativeMissingReason(), measurements: [] };
  const ds = mnist('train');
  if (typeof ds === 'string') return { status: 'skipped', reason: `MNIST not available: ${ds}`, measurements: [] };
  const job = await measureTrainJob(ctx, ds);
  const epochSteps = job.steps;
  const group = `LeNet-5 MNIST epoch (${epochSteps} steps of ${BATCH}, full epochs, W4A4 and fp32 alternating), Adam`;
  const ratios = trainJobRatios(job);
  const measurements: Measurement[] = [];
  const fp32Median = median(job.wall.fp32);
  for (const c of CONFIGS) {
    const values = job.wall[c.quant];
    measurements.push(measured({
      id: `qat-epoch/${c.key}`, group, impl: `lowbit (native) ${c.label}`, unit: 's', higherIsBetter: false,
      details: {
        epochSteps, qatOverFp32: median(values) / fp32Median, cpuSeconds: job.cpu[c.quant], trainAccuracyPerEpoch: job.trainAccuracy[c.quant], gcPerStep: job.gcPerStep[c.quant],
        ...(c.quant === 'w4a4' ? { pairRatios: job.pairRatios, medianPairRatio: ratios.pairs, cpuRatio: ratios.cpu } : {}),
      },
    }, values));
  }

  ctx.log('PyTorch QAT peer (1 epoch on a subset, fp32 then QAT)');
  const limit = ctx.quick ? 3200 : 12800;
  const t = runTorchQat(ctx, limit);
  const tgroup = `PyTorch LeNet-5 epoch (${epochSteps} steps of ${BATCH}, extrapolated from one ${limit}-sample epoch), Adam`;
  const scale = ds.length / limit;
  const torchFp32 = t.ok ? Number(t.json!.fp32EpochSeconds) * scale : null;
  const torchQat = t.ok ? Number(t.json!.qatEpochSeconds) * scale : null;
  const tbase = (key: string, label: string): Omit<Measurement, 'median' | 'repeats' | 'skipped'> => ({
    id: `qat-epoch/torch-${key}`, group: tgroup, impl: `PyTorch ${t.ok ? String(t.json!.torch) : ''} ${label}`.replace('  ', ' '), unit: 's', higherIsBetter: false,
  });
  if (t.ok && torchFp32 !== null && torchQat !== null) {
    measurements.push(measured({ ...tbase('fp32', 'fp32'), details: { limit } }, [torchFp32]));
    measurements.push(measured({ ...tbase('qat', `QAT int8 (${String(t.json!.qconfig ?? t.json!.engine)} qconfig, ${String(t.json!.engine)} engine)`), details: { limit, qatOverFp32: torchQat / torchFp32 } }, [torchQat]));
  } else {
    measurements.push(skippedMeasurement(tbase('qat', 'QAT'), t.reason ?? 'failed'));
  }

  const w4 = ratios.wall;
  const notes = [
    `lowbit: the default \`lowbit train\` job (LeNet-5, W4A4 LSQ, Adam lr ${TRAIN_JOB.lr}, quantizer parameters at ${TRAIN_JOB.quantLrScale}x, batch ${BATCH}) and the same job with \`--quant fp32\`, one full MNIST epoch (${job.samples} samples) per repeat each, alternating (A B, B A, ...), ${job.repeats} repeats, wall time of the \`fit\` call (bench/sections/train-job.ts; the same epochs as the \`epoch-time\` section).`,
    `QAT / fp32 epoch time (median / median): W4A4 LSQ **${w4.toFixed(2)}×**; median of the per-repeat ratios ${ratios.pairs.toFixed(2)}×; process CPU time ${ratios.cpu.toFixed(2)}×. Acceptance (W4A4 LSQ ≤ ${ACCEPT_RATIO}×): **${w4 <= ACCEPT_RATIO ? 'met' : 'NOT met'}**.`,
    t.ok && torchFp32 && torchQat
      ? `PyTorch ${String(t.json!.torch)} (bench/qat/torch_qat.py, eager-mode QAT, ${String(t.json!.qconfig ?? t.json!.engine)} qconfig, ${String(t.json!.engine)} int8 engine, ${ctx.threads} threads): QAT / fp32 epoch time **${(torchQat / torchFp32).toFixed(2)}×** (one epoch each over ${limit} samples, extrapolated).`
      : `PyTorch peer skipped: ${t.reason}.`,
  ];
  return { measurements, notes };
}

export const qatEpoch: Section = {
  name: 'qat-epoch',
  title: 'QAT vs fp32 epoch time (LeNet-5, MNIST)',
  run,
};
