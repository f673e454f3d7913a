/**
 * The Bi-Real ResNet-8 (docs/binary.md, variant (d): two-stage, double residual, real-valued
 * downsampling) in the integer runtime: a short training on a Fashion-MNIST subset, convert() to
 * an IntModel, then on the test subset the accuracy of the fake-quant model and of the IntModel,
 * their argmax agreement, the `.lowbit` file size (and that the reloaded file gives the same
 * logits), and TypeScript-executor throughput — against a W8A8 `nn.resnet8` (float training, then
 * W8A8 QAT, as bench/residual/resnet8.ts) converted and measured in the same run. The native
 * executor refuses the binary model (no op for an add that emits a sign); its reason is recorded.
 * One seed.
 *
 *   nice -n 10 node --import tsx bench/binary/intmodel.ts [--train 2000] [--test 2000] [--epochs 1] [--seed 0] [--out binary-intmodel.json]
 */
import { resolve, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { loadDataset } from '../../src/data/index.ts';
import { biRealResnet8, resnet8, type TensorModule } from '../../src/nn/index.ts';
import { manualSeed, Tensor } from '../../src/tensor/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { noGrad } from '../../src/autograd/engine.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { qconfigFor } from '../../src/quant/config/index.ts';
import { convert, type IntModel } from '../../src/runtime/index.ts';
import { loadIntModel, saveIntModel } from '../../src/runtime/io.ts';
import { argmaxRows } from '../../src/eval/attack.ts';
import { gitCommit, writeAtomic } from '../lib.ts';
import { biRealPlan } from './plan.ts';
import { fitCosine, normalizedFashion } from './common.ts';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
};
const TRAIN = Number(opt('train', '2000'));
const TEST = Number(opt('test', '2000'));
const EPOCHS = Number(opt('epochs', '1'));
const SEED = Number(opt('seed', '0'));
const OUT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'results', opt('out', 'binary-intmodel.json'));
const log = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

const train = normalizedFashion(loadDataset('fashion-mnist', 'train', { limit: TRAIN }));
const test = normalizedFashion(loadDataset('fashion-mnist', 'test', { limit: TEST }));
log(`Fashion-MNIST train ${train.length}, test ${test.length}; seed ${SEED}; ${EPOCHS} epoch(s) per stage`);

/** Adam, batch 64, lr 2e-3 decayed to 0 by a per-step cosine (as bench/binary/bireal.ts). */
function fit(model: TensorModule, epochs: number, label: string, lr = 2e-3): void {
  fitCosine(model, train, { epochs, lr, seed: SEED, label });
}

function predictions(logitsOf: (x: Tensor) => Float32Array): Int32Array {
  const out = new Int32Array(test.length);
  for (let s = 0; s < test.length; s += 256) {
    const n = Math.min(256, test.length - s);
    const x = new Tensor(test.images.subarray(s * 784, (s + n) * 784), [n, 1, 28, 28]);
    out.set(argmaxRows(logitsOf(x), 10), s);
  }
  return out;
}
const accuracy = (pred: Int32Array): number => pred.reduce((c, p, i) => c + (p === test.labels[i] ? 1 : 0), 0) / test.length;

/** TypeScript executor images/s at batch 64 over the test subset (median of 3 passes). */
function tsSpeed(im: IntModel): number {
  im.useNative = false;
  const rates: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    for (let s = 0; s + 64 <= test.length; s += 64) im.run(new Tensor(test.images.subarray(s * 784, (s + 64) * 784), [64, 1, 28, 28]));
    rates.push((Math.floor(test.length / 64) * 64) / ((performance.now() - t0) / 1000));
  }
  im.useNative = true;
  return rates.sort((a, b) => a - b)[1]!;
}

function measure(label: string, model: TensorModule, dir: string): Record<string, unknown> {
  model.eval();
  const fqPred = predictions((x) => noGrad(() => model.forward(x)).data as Float32Array);
  const sample = new Tensor(test.images.slice(0, 256 * 784), [256, 1, 28, 28]);
  const t0 = performance.now();
  const im = convert(model, { sample });
  const convertSeconds = (performance.now() - t0) / 1000;
  im.useNative = false;
  const intPred = predictions((x) => im.run(x));
  im.useNative = true;
  const agree = intPred.reduce((c, p, i) => c + (p === fqPred[i] ? 1 : 0), 0) / test.length;
  const path = join(dir, `${label}.lowbit`);
  const fileBytes = saveIntModel(path, im);
  const back = loadIntModel(path);
  const ref = im.run(sample);
  const same = back.run(sample).every((v, i) => Object.is(v, ref[i]));
  const speed = tsSpeed(im);
  const row = {
    model: label, fakeQuantAccuracy: accuracy(fqPred), intModelAccuracy: accuracy(intPred), argmaxAgreement: agree,
    convertVerification: { count: im.verification!.count, argmaxAgreement: im.verification!.argmaxAgreement, float32MaxToleranceRatio: im.verification!.float32MaxToleranceRatio },
    lowbitFileBytes: fileBytes, reloadedLogitsIdentical: same, tsExecutorImagesPerSecondBatch64: speed,
    nativeUnavailableReason: im.nativeUnavailableReason(), nodes: im.nodes.length, convertSeconds,
  };
  log(`${label}: fake quant ${(row.fakeQuantAccuracy * 100).toFixed(2)} %, IntModel ${(row.intModelAccuracy * 100).toFixed(2)} %, agreement ${(agree * 100).toFixed(2)} %, .lowbit ${fileBytes} B, TS executor ${speed.toFixed(0)} img/s, native: ${row.nativeUnavailableReason ?? 'runs'}`);
  return row;
}

const started = performance.now();
const dir = mkdtempSync(join(tmpdir(), 'lowbit-bireal-int-'));
const rows: Record<string, unknown>[] = [];
try {
  // Bi-Real (d): stage 1 real-valued with clip, stage 2 binarized.
  manualSeed(SEED);
  const real = biRealResnet8({ clip: true });
  fit(real, EPOCHS, 'bireal stage 1 (real, clip)');
  manualSeed(SEED);
  const binary = biRealResnet8();
  binary.loadStateDict(real.stateDict());
  prepareQat(binary, biRealPlan(binary, { realDownsample: true }));
  fit(binary, EPOCHS, 'bireal stage 2 (binary)');
  rows.push(measure('bireal-resnet8-binary', binary, dir));
  // W8A8 ResNet-8: float, then W8A8 QAT at lr 5e-4 (as bench/residual/resnet8.ts).
  manualSeed(SEED);
  const r8 = resnet8();
  fit(r8, EPOCHS, 'resnet8 float');
  prepareQat(r8, { default: qconfigFor('w8a8', 'ste') });
  fit(r8, EPOCHS, 'resnet8 W8A8 QAT', 5e-4);
  rows.push(measure('resnet8-w8a8', r8, dir));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const seconds = (performance.now() - started) / 1000;
writeAtomic(OUT, `${JSON.stringify({
  bench: 'binary-intmodel', commit: gitCommit(), date: new Date().toISOString(), seed: SEED, train: TRAIN, test: TEST, epochsPerStage: EPOCHS,
  command: `nice -n 10 node --import tsx bench/binary/intmodel.ts ${args.join(' ')}`.trim(), seconds, rows,
}, null, 2)}\n`);
log(`wrote ${OUT} (${seconds.toFixed(0)} s)`);
