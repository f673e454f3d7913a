/**
 * Per-op profile of the default `lowbit train` job (LeNet-5, W4A4 LSQ QAT, first/last layers and
 * the input at 8 bit, Adam lr 2e-3 with quantizer parameters at 0.1x, batch 64, real MNIST) on one
 * backend: after `WARMUP` untimed steps, `STEPS` steps run under `profileOps` (src/backend/registry.ts),
 * which times every kernel call and records which backend ran it (a wasm kernel, or the reference
 * kernel it fell back to). Prints the ops by time, their share of the kernel time and of the steps'
 * wall time; the rest of the wall time is autograd bookkeeping, the optimizer's TypeScript loop
 * and the tensor layer.
 *
 *   npx tsx bench/wasm-qat-profile.ts [BACKEND] [STEPS] [QUANT] [ESTIMATOR]   # default: wasm 200 w4a4 (lsq)
 *   LOWBIT_PROFILE_JSON=FILE ...                               # also write the table as JSON (atomically)
 */
import { loadavg } from 'node:os';
import { profileOps, setBackend, type BackendName } from '../src/backend/index.ts';
import { DATASET_STATS, DataLoader, loadDataset } from '../src/data/index.ts';
import { createModel } from '../src/nn/index.ts';
import { Adam } from '../src/optim/index.ts';
import { prepareQat, qatFromCliOptions, qatParamGroups, type EstimatorChoice, type QuantChoice } from '../src/quant/qat/index.ts';
import { crossEntropy, manualSeed, type Tensor } from '../src/tensor/index.ts';
import { preferThroughputGc } from '../src/train/gc.ts';
import { benchBackends } from './workloads.ts';
import { gitCommit, writeAtomic } from './lib.ts';

const backendText = process.argv[2] ?? 'wasm';
const stepsText = process.argv[3] ?? '200';
const steps = Number(stepsText);
if (!Number.isInteger(steps) || steps < 1 || steps > 100_000) throw new Error(`STEPS must be an integer in 1..100000, got '${stepsText}'`);
if (!(['wasm', 'reference', 'native'] as const).includes(backendText as BackendName)) throw new Error(`BACKEND must be wasm, reference or native, got '${backendText}'`);
const backend = backendText as BackendName;
const quant = (process.argv[4] ?? 'w4a4') as QuantChoice;
const estimator = process.argv[5] as EstimatorChoice | undefined;
const plan = qatFromCliOptions({ quant, estimator }); // validates both
if (!benchBackends().includes(backend)) throw new Error(`backend '${backend}' is not available here`);

preferThroughputGc();
setBackend(backend);
const ds = loadDataset('mnist', 'train');
manualSeed(0);
const model = createModel('lenet5', { numClasses: ds.numClasses });
if (plan) prepareQat(model, plan);
const optimizer = new Adam(qatParamGroups(model, { lr: 2e-3, quantLrScale: 0.1 }), { lr: 2e-3, weightDecay: 0 });
model.train();
const loader = new DataLoader(ds, { batchSize: 64, shuffle: true, seed: 0, normalize: DATASET_STATS.mnist, dropLast: true });
const batches: { x: Tensor; y: Tensor }[] = [];
const warmup = backend === 'reference' ? 3 : 20;
for (const b of loader) {
  batches.push({ x: b.x, y: b.y });
  if (batches.length === warmup + steps) break;
}
let optimizerMs = 0;
const step = (i: number): number => {
  const { x, y } = batches[i % batches.length]!;
  const loss = crossEntropy(model.forward(x), y);
  const value = loss.item();
  loss.backward();
  const t = performance.now();
  optimizer.step();
  optimizerMs += performance.now() - t;
  optimizer.zeroGrad();
  return value;
};
for (let i = 0; i < warmup; i++) step(i);
optimizerMs = 0;
let lastLoss = NaN;
const t0 = performance.now();
const profile = profileOps(() => {
  for (let i = 0; i < steps; i++) lastLoss = step(warmup + i);
});
const wallMs = performance.now() - t0;
const rows = [...profile.entries()].map(([key, e]) => ({ key, calls: e.calls / steps, ms: e.ms / steps })).sort((a, b) => b.ms - a.ms);
const kernelMs = rows.reduce((s, r) => s + r.ms, 0);
const stepMs = wallMs / steps;
const fallbackMs = backend === 'reference' ? 0 : rows.filter((r) => r.key.startsWith('reference/')).reduce((s, r) => s + r.ms, 0);
console.log(`--quant ${quant}${estimator ? ` --estimator ${estimator}` : ''}, backend ${backend}, ${steps} steps of 64 after ${warmup} warm-up steps; last loss ${lastLoss.toFixed(4)}; load ${loadavg()[0]!.toFixed(2)}`);
console.log(`step ${stepMs.toFixed(2)} ms (${((64 * 1000) / stepMs).toFixed(0)} samples/s); kernels ${kernelMs.toFixed(2)} ms/step (${((100 * kernelMs) / stepMs).toFixed(1)} %), outside kernels ${(stepMs - kernelMs).toFixed(2)} ms/step, of which Adam's step (TypeScript loop) ${(optimizerMs / steps).toFixed(2)} ms`);
if (backend !== 'reference') console.log(`fallbacks to reference: ${fallbackMs.toFixed(2)} ms/step (${((100 * fallbackMs) / stepMs).toFixed(1)} % of the step)`);
console.log('op (backend that ran it)            calls/step   ms/step   % of step');
for (const r of rows) console.log(`${r.key.padEnd(36)} ${r.calls.toFixed(1).padStart(9)} ${r.ms.toFixed(3).padStart(9)} ${((100 * r.ms) / stepMs).toFixed(1).padStart(9)}`);
const json = process.env.LOWBIT_PROFILE_JSON;
if (json) {
  writeAtomic(json, `${JSON.stringify({ commit: gitCommit(), date: new Date().toISOString(), backend, quant, estimator: estimator ?? null, steps, warmup, loadAverage1m: loadavg()[0], stepMs, kernelMs, fallbackMs, optimizerMs: optimizerMs / steps, rows }, null, 2)}\n`);
  console.log(`wrote ${json}`);
}
