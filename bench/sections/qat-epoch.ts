/**
 * QAT epoch time vs fp32 epoch time of the same model: LeNet-5 on MNIST, fp32 vs W8A8 (STE,
 * per-channel int8 weights, EMA uint8 activations) vs W4A4 LSQ, on the native backend, through
 * `prepareQat` + `fit` exactly as bench/qat/matrix.ts trains them (batch 64, Adam lr 1e-3).
 * Acceptance: W4A4-LSQ epoch time ≤ 1.3× the fp32 epoch time.
 *
 * Each repeat trains a fixed number of steps (`fit` over the first STEPS·64 shuffled MNIST samples,
 * training pass only) and is extrapolated to a full epoch (938 steps); the three models take
 * turns within each repeat so that background load on the shared machine hits them alike. The
 * figure is the median over repeats. Peer: bench/qat/torch_qat.py (PyTorch eager-mode QAT with the
 * fbgemm qconfig on the same LeNet-5) — its QAT / fp32 epoch-time ratio over a 1-epoch run on a
 * subset.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATASET_STATS, DataLoader, take } from '../../src/data/index.ts';
import { fit } from '../../src/train/fit.ts';
import { Adam } from '../../src/optim/index.ts';
import { lenet5, type TensorModule } from '../../src/nn/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { qconfigFor } from '../../src/quant/config/index.ts';
import { errorMessage, measured, median, now, skippedMeasurement, tick, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { benchBackends, mnist, nativeMissingReason, withBackend } from '../workloads.ts';

const BATCH = 64;
const LR = 1e-3;
const ACCEPT_RATIO = 1.3;
const root = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

type Config = { key: string; label: string; build: () => TensorModule };

const CONFIGS: Config[] = [
  { key: 'lenet5-fp32', label: 'fp32', build: () => lenet5() },
  { key: 'lenet5-w8a8-ste', label: 'W8A8 STE', build: () => prepareQat(lenet5(), { default: qconfigFor('w8a8', 'ste') }) },
  { key: 'lenet5-w4a4-lsq', label: 'W4A4 LSQ', build: () => prepareQat(lenet5(), { default: qconfigFor('w4a4', 'lsq') }) },
];

interface TorchResult {
  ok: boolean;
  reason?: string;
  json?: Record<string, unknown>;
}

function runTorchQat(ctx: SectionContext, limit: number): TorchResult {
  const script = join(root, 'bench', 'qat', 'torch_qat.py');
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const r = spawnSync(python, [script, '--epochs', '1', '--limit', String(limit), '--test-limit', '2000', '--threads', String(ctx.threads)], {
    cwd: root, encoding: 'utf8', timeout: 900_000, env: { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: String(ctx.threads) },
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
  const steps = ctx.quick ? 60 : 200;
  const epochSteps = Math.ceil(ds.length / BATCH);
  const subset = take(ds, steps * BATCH);
  const group = `LeNet-5 MNIST epoch (${epochSteps} steps of ${BATCH}, extrapolated from ${steps}-step runs), Adam`;
  const seconds = new Map<string, number[]>(CONFIGS.map((c) => [c.key, []]));

  await withBackend('native', async () => {
    const runs = CONFIGS.map((c) => {
      manualSeed(0);
      const model = c.build();
      const optimizer = new Adam(model.parameters(), { lr: LR });
      // Untimed warm-up: initialises LSQ steps and observers, JIT, thread pool.
      fit(model, { trainLoader: new DataLoader(take(ds, BATCH * 20), { batchSize: BATCH, shuffle: true, seed: 99, normalize: DATASET_STATS.mnist }), optimizer, epochs: 1, progress: false });
      return { c, model, optimizer, loader: new DataLoader(subset, { batchSize: BATCH, shuffle: true, seed: 0, normalize: DATASET_STATS.mnist }) };
    });
    for (let r = 0; r < ctx.repeats; r++) {
      for (const { c, model, optimizer, loader } of runs) {
        await tick();
        const t0 = now();
        fit(model, { trainLoader: loader, optimizer, epochs: 1, progress: false });
        const s = ((now() - t0) * epochSteps) / steps;
        seconds.get(c.key)!.push(s);
        ctx.log(`repeat ${r + 1}/${ctx.repeats} ${c.label}: ${s.toFixed(2)} s / epoch`);
      }
    }
  });

  const measurements: Measurement[] = [];
  const fp32Median = median(seconds.get('lenet5-fp32')!);
  for (const c of CONFIGS) {
    const values = seconds.get(c.key)!;
    measurements.push(measured({
      id: `qat-epoch/${c.key}`, group, impl: `lowbit (native) ${c.label}`, unit: 's', higherIsBetter: false,
      details: { steps, epochSteps, qatOverFp32: median(values) / fp32Median },
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

  const w4 = median(seconds.get('lenet5-w4a4-lsq')!) / fp32Median;
  const w8 = median(seconds.get('lenet5-w8a8-ste')!) / fp32Median;
  const notes = [
    `lowbit: \`prepareQat(lenet5(), qconfigFor(scheme, estimator))\` (first/last layers 8-bit, int8 image input) trained with \`fit\` and Adam lr ${LR}, batch ${BATCH}, on the first ${steps * BATCH} MNIST training samples per repeat; the timed figure is the wall time of that \`fit\` call × ${epochSteps}/${steps}. fp32, W8A8 and W4A4 alternate within every repeat.`,
    `QAT / fp32 epoch time: W8A8 STE **${w8.toFixed(2)}×**, W4A4 LSQ **${w4.toFixed(2)}×**. Acceptance (W4A4 LSQ ≤ ${ACCEPT_RATIO}×): **${w4 <= ACCEPT_RATIO ? 'met' : 'NOT met'}**.`,
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
