/**
 * A 1-D conv net on row-MNIST, fp32 vs QAT (W8A8, W4A4) and after `convert` (the IntModel).
 *
 * Each 28×28 digit is read as a sequence: the 28 image rows are the channels and the 28 columns
 * the positions (input [N, 28, 28] = [N, C, L]). The net: Conv1d(28, 32, 5, padding 2) →
 * BatchNorm1d → ReLU → Conv1d(32, 32, 5, stride 2, padding 2) → ReLU → Flatten → Linear(32·14, 10).
 * fp32 trains from scratch (Adam); 'fp32 fine-tuned' continues it with the QAT recipe's epochs and
 * learning rate without quantization (the control); each QAT run starts from the fp32 weights, is prepared with
 * `qconfigFor(scheme, estimator)` (first and last layer at 8 bits, BN folded: QuantConvBn1d) and
 * fine-tunes; the QAT model is then converted and the IntModel evaluated on the same test images.
 *
 *   OPENBLAS_NUM_THREADS=1 nice -n 10 node --import tsx bench/qat/conv1d.ts [--train N] [--test N] [--epochs E] [--qat-epochs E] [--save DIR]
 *
 * --save DIR writes DIR/conv1d-w8a8.lowbit and conv1d-w4a4.lowbit (metadata dataset 'mnist'), which
 * `lowbit export FILE --verify` exports to ONNX and checks in onnxruntime-node on MNIST test images.
 */
import { fileURLToPath } from 'node:url';
import { loadMnist } from '../../src/data/mnist.ts';
import { createDataset, type Dataset } from '../../src/data/dataset.ts';
import { DataLoader } from '../../src/data/loader.ts';
import { BatchNorm1d, Conv1d, Flatten, Linear, ReLU, Sequential } from '../../src/nn/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { fit, evaluate, type BatchSource } from '../../src/train/fit.ts';
import { manualSeed, Rng, Tensor } from '../../src/tensor/index.ts';
import { prepareQat, setQuantProgress } from '../../src/quant/qat/index.ts';
import { qconfigFor, type Estimator, type Scheme } from '../../src/quant/config/qconfig.ts';
import { convert } from '../../src/runtime/convert.ts';
import { saveIntModel } from '../../src/runtime/io.ts';
import { join } from 'node:path';

export interface Conv1dRunOptions {
  readonly train?: number;
  readonly test?: number;
  readonly epochs?: number;
  readonly qatEpochs?: number;
  readonly schemes?: readonly (readonly [Scheme, Estimator])[];
  readonly log?: (line: string) => void;
  /** Write each converted IntModel to `${saveDir}/conv1d-${scheme}.lowbit` (metadata dataset 'mnist'). */
  readonly saveDir?: string;
}

export interface Conv1dResult {
  readonly name: string;
  /** Accuracy of the model (fp32, or fake-quant after QAT) on the test subset. */
  readonly accuracy: number;
  /** Accuracy of the converted IntModel (QAT rows only). */
  readonly intAccuracy?: number;
  /** Fraction of test images whose IntModel argmax equals the fake-quant model's. */
  readonly intAgreement?: number;
  readonly seconds: number;
}

const MEAN = 0.1307;
const STD = 0.3081;

/** MNIST, normalised ([N, 1, 28, 28] images; `sequences` views batches as [N, 28, 28]). */
export function rowMnist(split: 'train' | 'test', limit: number): Dataset {
  const ds = loadMnist({ split, limit });
  const images = Float32Array.from(ds.images, (v) => (v - MEAN) / STD);
  return createDataset({ name: `row-mnist-${split}`, images, labels: ds.labels, sampleShape: [1, 28, 28], numClasses: 10, classNames: ds.classNames });
}

/** The batches of `loader` with x viewed as [N, 28, 28] sequences (rows = channels, columns = positions). */
export function sequences(loader: DataLoader): BatchSource {
  return {
    length: loader.length,
    *[Symbol.iterator]() {
      for (const { x, y } of loader) yield { x: new Tensor(x.data, [x.shape[0]!, 28, 28]), y };
    },
  };
}

/** The 1-D conv net of the module comment. */
export function conv1dNet(rng: Rng): Sequential {
  return new Sequential(
    new Conv1d(28, 32, 5, { padding: 2, rng }), new BatchNorm1d(32), new ReLU(),
    new Conv1d(32, 32, 5, { stride: 2, padding: 2, rng }), new ReLU(),
    new Flatten(), new Linear(32 * 14, 10, { rng }),
  );
}

function accuracyOf(logits: Float32Array, labels: ArrayLike<number>, classes: number): number {
  let correct = 0;
  for (let i = 0; i < labels.length; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
    if (best === labels[i]) correct++;
  }
  return correct / labels.length;
}

/** fp32 training, then per scheme QAT from the fp32 weights, convert and IntModel evaluation. */
export function runConv1dRowMnist(options: Conv1dRunOptions = {}): Conv1dResult[] {
  const log = options.log ?? (() => {});
  const train = rowMnist('train', options.train ?? 10000);
  const test = rowMnist('test', options.test ?? 2000);
  const trainLoader = (seed: number): BatchSource => sequences(new DataLoader(train, { batchSize: 64, shuffle: true, seed }));
  const testLoader = sequences(new DataLoader(test, { batchSize: 500 }));
  const testX = new Tensor(test.images, [test.length, 28, 28]);
  const results: Conv1dResult[] = [];

  manualSeed(1);
  let t0 = performance.now();
  const fp32 = conv1dNet(new Rng(1));
  fit(fp32, { trainLoader: trainLoader(1), optimizer: new Adam(fp32.parameters(), { lr: 2e-3 }), epochs: options.epochs ?? 3, progress: false });
  const fp32Accuracy = evaluate(fp32, testLoader).accuracy;
  results.push({ name: 'fp32', accuracy: fp32Accuracy, seconds: (performance.now() - t0) / 1000 });
  log(`fp32: ${(fp32Accuracy * 100).toFixed(2)} %`);
  const fp32State = fp32.stateDict();

  // Control: the QAT recipe's fine-tune (same epochs, lr, seed) without quantization, so that the
  // QAT rows compare with equally long float training.
  {
    t0 = performance.now();
    manualSeed(2);
    const model = conv1dNet(new Rng(1));
    model.loadStateDict(fp32State);
    fit(model, { trainLoader: trainLoader(2), optimizer: new Adam(model.parameters(), { lr: 5e-4 }), epochs: options.qatEpochs ?? 2, progress: false });
    const accuracy = evaluate(model, testLoader).accuracy;
    results.push({ name: 'fp32 fine-tuned', accuracy, seconds: (performance.now() - t0) / 1000 });
    log(`fp32 fine-tuned: ${(accuracy * 100).toFixed(2)} %`);
  }

  for (const [scheme, estimator] of options.schemes ?? [['w8a8', 'ste'], ['w4a4', 'lsq']] as const) {
    t0 = performance.now();
    manualSeed(2);
    const model = conv1dNet(new Rng(1));
    model.loadStateDict(fp32State);
    prepareQat(model, qconfigFor(scheme, estimator));
    const epochs = options.qatEpochs ?? 2;
    fit(model, {
      trainLoader: trainLoader(2), optimizer: new Adam(model.parameters(), { lr: 5e-4 }), epochs, progress: false,
      onEpochEnd: (r) => setQuantProgress(model, r.epoch + 1, epochs),
    });
    const accuracy = evaluate(model, testLoader).accuracy;
    model.eval();
    const im = convert(model, { sample: new Tensor(test.images.subarray(0, 256 * 784), [256, 28, 28]), metadata: { dataset: 'mnist', model: 'conv1d row-mnist' } });
    if (options.saveDir) saveIntModel(join(options.saveDir, `conv1d-${scheme}.lowbit`), im);
    const intLogits = im.run(testX);
    const intAccuracy = accuracyOf(intLogits, test.labels, 10);
    const ref = (evaluateLogits(model, testX));
    let agree = 0;
    for (let i = 0; i < test.length; i++) if (argmax(intLogits, i) === argmax(ref, i)) agree++;
    const name = `${scheme} ${estimator}`;
    results.push({ name, accuracy, intAccuracy, intAgreement: agree / test.length, seconds: (performance.now() - t0) / 1000 });
    log(`${name}: fake-quant ${(accuracy * 100).toFixed(2)} %, IntModel ${(intAccuracy * 100).toFixed(2)} % (argmax agreement ${(agree / test.length * 100).toFixed(2)} %)`);
  }
  return results;
}

function evaluateLogits(model: Sequential, x: Tensor): Float32Array {
  const out: number[] = [];
  for (let i = 0; i < x.shape[0]!; i += 500) {
    const n = Math.min(500, x.shape[0]! - i);
    const y = model.forward(new Tensor(x.data.subarray(i * 784, (i + n) * 784) as Float32Array, [n, 28, 28]));
    out.push(...y.data);
  }
  return Float32Array.from(out);
}

function argmax(logits: Float32Array, i: number): number {
  let best = 0;
  for (let c = 1; c < 10; c++) if (logits[i * 10 + c]! > logits[i * 10 + best]!) best = c;
  return best;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name: string, fallback: number): number => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? Number(process.argv[i + 1]) : fallback;
  };
  const results = runConv1dRowMnist({
    train: arg('--train', 10000), test: arg('--test', 2000), epochs: arg('--epochs', 3), qatEpochs: arg('--qat-epochs', 2),
    log: (l) => console.error(l),
    ...(process.argv.includes('--save') ? { saveDir: process.argv[process.argv.indexOf('--save') + 1]! } : {}),
  });
  console.log('| model | accuracy | IntModel accuracy | IntModel vs fake-quant argmax | seconds |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const r of results) {
    const pct = (v: number | undefined): string => (v === undefined ? '—' : `${(v * 100).toFixed(2)} %`);
    console.log(`| ${r.name} | ${pct(r.accuracy)} | ${pct(r.intAccuracy)} | ${pct(r.intAgreement)} | ${r.seconds.toFixed(1)} |`);
  }
}
