/**
 * The Bi-Real ResNet-8 (docs/binary.md, variant (d)) on the native executor (sign adds; the binary
 * convs as ±1 int8 GEMMs, the default here, or XNOR-popcount, forced) and in onnxruntime-node (its ONNX export), against the TypeScript executor
 * and a W8A8 ResNet-8 on the native executor. A short training on a Fashion-MNIST subset (one
 * seed) gives the accuracies: IntModel (TS executor), native (must be the same integers), and
 * onnxruntime's argmax agreement with the IntModel on the test subset. Throughput: images/s at
 * batch 64, wall clock, the native executor and onnxruntime on `threads` threads (LOWBIT_THREADS,
 * intraOpNumThreads), the TypeScript executor on the main thread; the configurations interleaved
 * round by round, median of the rounds; the W8A8 ResNet-8 is untrained (speed does not depend on
 * its weights). The machine's load average is recorded before and after.
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/binary/native.ts [--train 4000] [--test 1000] [--epochs 1]
 *       [--rounds 5] [--seconds 1] [--threads 2] [--seed 0] [--out binary-native.json]
 */
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { loadDataset } from '../../src/data/index.ts';
import { biRealResnet8 } from '../../src/nn/index.ts';
import { manualSeed, randn, Tensor } from '../../src/tensor/index.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { convert, type IntModel } from '../../src/runtime/index.ts';
import { compileNativePlan } from '../../src/runtime/native-plan.ts';
import { loadAddon } from '../../src/backend/native/load.ts';
import { exportOnnx } from '../../src/onnx/export.ts';
import { createOrtSession } from '../../src/onnx/verify.ts';
import { argmaxRows } from '../../src/eval/attack.ts';
import { gitCommit, median, writeAtomic } from '../lib.ts';
import { buildBenchModel } from '../runtime-ts/models.ts';
import { biRealPlan } from './plan.ts';
import { fitCosine, normalizedFashion } from './common.ts';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
};
const TRAIN = Number(opt('train', '4000'));
const TEST = Number(opt('test', '1000'));
const EPOCHS = Number(opt('epochs', '1'));
const ROUNDS = Number(opt('rounds', '5'));
const SECONDS = Number(opt('seconds', '1'));
const THREADS = Number(opt('threads', '2'));
const SEED = Number(opt('seed', '0'));
process.env.LOWBIT_THREADS ??= String(THREADS);
const OUT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'results', opt('out', 'binary-native.json'));
const BATCH = 64;
const log = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

const started = performance.now();
const loadBefore = loadavg();
const addon = loadAddon();
if (!addon?.intPlanCreate) throw new Error('bench/binary/native.ts needs the native addon');
const train = normalizedFashion(loadDataset('fashion-mnist', 'train', { limit: TRAIN }));
const test = normalizedFashion(loadDataset('fashion-mnist', 'test', { limit: TEST }));
log(`Fashion-MNIST train ${train.length}, test ${test.length}; seed ${SEED}; ${EPOCHS} epoch(s) per stage; ${THREADS} threads; load ${loadBefore.map((v) => v.toFixed(2)).join(' ')}`);

// Bi-Real (d): stage 1 real-valued with clip, stage 2 binarized (as bench/binary/intmodel.ts).
manualSeed(SEED);
const real = biRealResnet8({ clip: true });
fitCosine(real, train, { epochs: EPOCHS, lr: 2e-3, seed: SEED, label: 'bireal stage 1 (real, clip)' });
manualSeed(SEED);
const binary = biRealResnet8();
binary.loadStateDict(real.stateDict());
prepareQat(binary, biRealPlan(binary, { realDownsample: true }));
fitCosine(binary, train, { epochs: EPOCHS, lr: 2e-3, seed: SEED, label: 'bireal stage 2 (binary)' });
binary.eval();
const bireal = convert(binary, { sample: new Tensor(test.images.slice(0, 256 * 784), [256, 1, 28, 28]) });
const r8 = buildBenchModel('resnet8', 'w8a8', SEED).im;

// Accuracy and agreement on the test subset.
function logitsOf(run: (x: Float32Array, n: number) => Float32Array): Float32Array {
  const out = new Float32Array(test.length * 10);
  for (let s = 0; s < test.length; s += 256) {
    const n = Math.min(256, test.length - s);
    out.set(run(test.images.subarray(s * 784, (s + n) * 784), n), s * 10);
  }
  return out;
}
const accuracy = (logits: Float32Array): number => argmaxRows(logits, 10).reduce((c, p, i) => c + (p === test.labels[i] ? 1 : 0), 0) / test.length;
bireal.useNative = false;
const tsLogits = logitsOf((x, n) => bireal.run(x, n));
bireal.useNative = true;
if (bireal.nativeUnavailableReason() !== null) throw new Error(`the Bi-Real model does not run natively: ${bireal.nativeUnavailableReason()}`);
const nativeLogits = logitsOf((x, n) => bireal.run(x, n));
const identical = nativeLogits.every((v, i) => Object.is(v, tsLogits[i]));
const spec = compileNativePlan(bireal);
if (typeof spec !== 'object') throw new Error(`no native plan: ${spec}`);
const kernels = addon.intPlanKernels!(addon.intPlanCreate!(spec.ops));
// the default native plan runs the binary convs as ±1 int8 GEMMs unless that GEMM is the scalar one; this one forces XNOR
const xnorPlan = addon.intPlanCreate!(spec.ops, true, true, true, true, true);
const xnorKernels = addon.intPlanKernels!(xnorPlan);
{
  const forced = new Float32Array(tsLogits.length);
  for (let s = 0; s < test.length; s += 256) {
    const n = Math.min(256, test.length - s);
    const out = new Float32Array(n * 10);
    addon.intPlanRun!(xnorPlan, test.images.subarray(s * 784, (s + n) * 784), n, out);
    forced.set(out, s * 10);
  }
  if (!forced.every((v, i) => Object.is(v, tsLogits[i]))) throw new Error('the XNOR plan\'s logits differ from the TS executor\'s');
}
log(`Bi-Real IntModel: TS ${(accuracy(tsLogits) * 100).toFixed(2)} %, native ${(accuracy(nativeLogits) * 100).toFixed(2)} %, logits identical: ${identical}`);

const exported = exportOnnx(bireal);
const ort = await createOrtSession(exported.bytes, { threads: THREADS });
let onnx: Record<string, unknown> = { skipped: 'skipped' in ort ? ort.skipped : null };
let ortRun: ((x: Float32Array, n: number) => Promise<Float32Array>) | null = null;
if (!('skipped' in ort)) {
  const { ort: mod, session } = ort;
  ortRun = async (x, n) => (await session.run({ [session.inputNames[0]!]: new mod.Tensor('float32', x, [n, 1, 28, 28]) }))[session.outputNames[0]!]!.data as Float32Array;
  const ortLogits = new Float32Array(test.length * 10);
  for (let s = 0; s < test.length; s += 256) {
    const n = Math.min(256, test.length - s);
    ortLogits.set(await ortRun(test.images.slice(s * 784, (s + n) * 784), n), s * 10);
  }
  const a = argmaxRows(ortLogits, 10);
  const b = argmaxRows(tsLogits, 10);
  const agreement = a.reduce((c, v, i) => c + (v === b[i] ? 1 : 0), 0) / test.length;
  onnx = { version: ort.version, bytes: exported.bytes.length, accuracy: accuracy(ortLogits), argmaxAgreementWithIntModel: agreement };
  log(`onnxruntime-node ${ort.version}: accuracy ${(accuracy(ortLogits) * 100).toFixed(2)} %, argmax = IntModel on ${(agreement * 100).toFixed(2)} % (${exported.bytes.length} B)`);
}

// Throughput, interleaved rounds.
const x64 = randn([BATCH, 1, 28, 28]).data as Float32Array;
async function rate(step: () => unknown): Promise<number> {
  await step(); // warm-up
  let images = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < SECONDS * 1000) {
    await step();
    images += BATCH;
  }
  return images / ((performance.now() - t0) / 1000);
}
const xnorOut = new Float32Array(BATCH * 10);
const configs: [string, () => unknown][] = [
  ['Bi-Real ResNet-8, TS executor', () => { bireal.useNative = false; bireal.run(x64, BATCH); bireal.useNative = true; }],
  ['Bi-Real ResNet-8, native', () => bireal.run(x64, BATCH)],
  ['Bi-Real ResNet-8, native, XNOR convs forced', () => addon.intPlanRun!(xnorPlan, x64, BATCH, xnorOut)],
  ['ResNet-8 W8A8, native', () => r8.run(x64, BATCH)],
];
if (ortRun) { const run = ortRun; configs.push(['Bi-Real ResNet-8, onnxruntime-node (QDQ + int64 sign adds)', () => run(x64, BATCH)]); }
const rates: Record<string, number[]> = Object.fromEntries(configs.map(([name]) => [name, []]));
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, step] of configs) rates[name]!.push(await rate(step));
  log(`round ${round + 1}/${ROUNDS}: ${configs.map(([name]) => `${name} ${rates[name]!.at(-1)!.toFixed(0)}`).join(', ')} img/s`);
}
const summary = Object.fromEntries(configs.map(([name]) => [name, median(rates[name]!)]));
const nativeRate = summary['Bi-Real ResNet-8, native']!;
const loadAfter = loadavg();
const seconds = (performance.now() - started) / 1000;
writeAtomic(OUT, `${JSON.stringify({
  bench: 'binary-native', commit: gitCommit(), date: new Date().toISOString(), seed: SEED, train: TRAIN, test: TEST, epochsPerStage: EPOCHS,
  batch: BATCH, threads: THREADS, rounds: ROUNDS, secondsPerMeasurement: SECONDS,
  command: `LOWBIT_THREADS=${THREADS} nice -n 10 node --import tsx bench/binary/native.ts ${args.join(' ')}`.trim(),
  loadAverageBefore: loadBefore, loadAverageAfter: loadAfter, seconds,
  bireal: { tsAccuracy: accuracy(tsLogits), nativeAccuracy: accuracy(nativeLogits), nativeLogitsIdenticalToTs: identical, xnorPlanLogitsIdenticalToTs: true, kernels, xnorKernels, onnx },
  imagesPerSecondMedian: summary,
  ratioToBiRealNative: Object.fromEntries(Object.entries(summary).map(([k, v]) => [k, v / nativeRate])),
  imagesPerSecondRounds: rates,
}, null, 2)}\n`);
log(`medians: ${Object.entries(summary).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')} img/s; load ${loadAfter.map((v) => v.toFixed(2)).join(' ')}`);
log(`wrote ${OUT} (${seconds.toFixed(0)} s)`);
