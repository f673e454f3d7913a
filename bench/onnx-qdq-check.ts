/**
 * ONNX export check on the whole MNIST test set (docs/onnx.md, "Export"): a float32 LeNet-5 (loaded
 * with --checkpoint, or trained here for --epochs with Adam), its post-training-quantized IntModels
 * (W8A8 and W4A8, `calibrate` on --calib training images), and their ONNX exports run in
 * onnxruntime-node:
 *   - fp32 export vs the float model: max |Δlogit|;
 *   - int8 QDQ export (opset 13) vs the IntModel: argmax agreement, both bias scales;
 *   - int4-weight QDQ export (opset 21) and its web-profile twin (int8 containers) vs the IntModel.
 * Optional --cnn-checkpoint: the same fp32 check for the Fashion-MNIST CNN.
 *
 *   node --import tsx bench/onnx-qdq-check.ts [--checkpoint runs/lenet5-mnist] [--epochs 1]
 *        [--samples 10000] [--calib 1000] [--cnn-checkpoint FILE] [--json FILE]
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { noGrad } from '../src/autograd/engine.ts';
import { DATASET_STATS, DataLoader, loadDataset, take, type DatasetName } from '../src/data/index.ts';
import { normalizeInPlace } from '../src/data/dataset.ts';
import { writeFileAtomic } from '../src/format/files.ts';
import { cnn, lenet5, type Module, type TensorModule } from '../src/nn/index.ts';
import { exportOnnx, type OnnxExportOptions } from '../src/onnx/export.ts';
import { formatVerifyReport, loadOnnxRuntime, verifyOnnx, type VerifyReport } from '../src/onnx/verify.ts';
import { Adam } from '../src/optim/index.ts';
import { calibrate } from '../src/quant/ptq/index.ts';
import { convert, type IntModel } from '../src/runtime/index.ts';
import { manualSeed, Tensor } from '../src/tensor/index.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { evaluate, fit } from '../src/train/index.ts';

const { values: args } = parseArgs({
  options: {
    checkpoint: { type: 'string' },
    epochs: { type: 'string', default: '1' },
    samples: { type: 'string', default: '10000' },
    calib: { type: 'string', default: '1000' },
    'cnn-checkpoint': { type: 'string' },
    json: { type: 'string' },
  },
});
const samples = Number(args.samples);
const epochs = Number(args.epochs);
const calibSamples = Number(args.calib);
for (const [k, v] of [['samples', samples], ['epochs', epochs], ['calib', calibSamples]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`);
}

const ort = await loadOnnxRuntime();
if (!ort.ok) {
  console.log(`skipped: ${ort.reason}`);
  process.exit(0);
}

function checkpointFile(path: string): string {
  return statSync(path).isDirectory() ? join(path, 'checkpoint.safetensors') : path;
}

function testSet(name: DatasetName): { x: Float32Array; labels: Int32Array | Uint8Array; count: number; shape: readonly [number, number, number] } {
  const ds = take(loadDataset(name, 'test'), samples);
  const x = new Float32Array(ds.images);
  normalizeInPlace(x, ds.sampleShape, DATASET_STATS[name]);
  return { x, labels: ds.labels, count: ds.length, shape: ds.sampleShape };
}

function forwardFn(model: Module, shape: readonly number[]): (x: Float32Array, n: number) => Float32Array {
  model.eval();
  return (x, n) => noGrad(() => (model as TensorModule).forward(new Tensor(x, [n, ...shape]))).data as Float32Array;
}

function accuracy(logits: Float32Array, labels: ArrayLike<number>, count: number): number {
  const classes = logits.length / count;
  let correct = 0;
  for (let i = 0; i < count; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
    if (best === labels[i]) correct++;
  }
  return correct / count;
}

interface Row {
  name: string;
  opset: number;
  weights: string;
  bytes: number;
  report: VerifyReport;
}
const rows: Row[] = [];
const log = (line: string): void => console.log(line);

async function check(name: string, model: Module | IntModel, options: OnnxExportOptions, reference: (x: Float32Array, n: number, from: number) => Float32Array, data: ReturnType<typeof testSet>): Promise<void> {
  const r = exportOnnx(model, options);
  const report = await verifyOnnx(r.bytes, reference, { data: data.x, shape: data.shape, count: data.count }, { progress: process.stderr });
  const weights = r.kind === 'fp32' ? 'fp32' : [...new Set(Object.values(r.weightTypes))].join('+');
  rows.push({ name, opset: r.opset, weights, bytes: r.bytes.length, report });
  log(`${name.padEnd(34)} ${formatVerifyReport(report)}`);
}

/** The IntModel's logits for the whole test set, computed once; the reference slices them. */
function intReference(im: IntModel, data: ReturnType<typeof testSet>): { logits: Float32Array; fn: (x: Float32Array, n: number, from: number) => Float32Array } {
  const per = data.shape[0] * data.shape[1] * data.shape[2];
  const parts: Float32Array[] = [];
  for (let from = 0; from < data.count; from += 500) {
    const n = Math.min(500, data.count - from);
    parts.push(im.run(data.x.subarray(from * per, (from + n) * per), n));
  }
  const classes = parts[0]!.length / Math.min(500, data.count);
  const logits = new Float32Array(data.count * classes);
  let o = 0;
  for (const p of parts) { logits.set(p, o); o += p.length; }
  return { logits, fn: (_x, n, from) => logits.subarray(from * classes, (from + n) * classes) };
}

// ---------------------------------------------------------------------------------------------
const mnist = testSet('mnist');
manualSeed(0);
const fp32 = lenet5();
let source: string;
if (args.checkpoint !== undefined) {
  const file = checkpointFile(args.checkpoint);
  if (!existsSync(file)) throw new Error(`--checkpoint: no ${file}`);
  fp32.loadStateDict(loadCheckpoint(file).model);
  source = file;
} else {
  const train = loadDataset('mnist', 'train');
  const loader = new DataLoader(train, { batchSize: 64, shuffle: true, seed: 0, normalize: DATASET_STATS.mnist });
  fit(fp32, { trainLoader: loader, optimizer: new Adam(fp32.parameters(), { lr: 2e-3 }), epochs, seed: 0, progress: true, log });
  source = `trained here: ${epochs} epoch(s), Adam 2e-3, batch 64, seed 0`;
}
const floatRef = forwardFn(fp32, mnist.shape);
const fp32Acc = evaluate(fp32, new DataLoader(take(loadDataset('mnist', 'test'), samples), { batchSize: 256, normalize: DATASET_STATS.mnist })).accuracy;
log(`LeNet-5 fp32 (${source}): test accuracy ${(fp32Acc * 100).toFixed(2)} % on ${mnist.count} images`);
await check('lenet5 fp32', fp32, { inputShape: [1, 28, 28] }, (x, n) => floatRef(x, n), mnist);

const calibLoader = (): DataLoader => new DataLoader(loadDataset('mnist', 'train'), { batchSize: 100, shuffle: true, seed: 0, normalize: DATASET_STATS.mnist });
const accuracies: Record<string, { intModel: number; onnx?: number }> = {};
for (const scheme of ['w8a8', 'w4a8'] as const) {
  const ptq = lenet5();
  ptq.loadStateDict(fp32.stateDict());
  calibrate(ptq, calibLoader(), { scheme, samples: calibSamples });
  const im = convert(ptq, { inputShape: [1, 28, 28] });
  const ref = intReference(im, mnist);
  accuracies[scheme] = { intModel: accuracy(ref.logits, mnist.labels, mnist.count) };
  log(`LeNet-5 ${scheme} IntModel (PTQ, ${calibSamples} calibration images): test accuracy ${(accuracies[scheme].intModel * 100).toFixed(2)} %`);
  if (scheme === 'w8a8') {
    await check('lenet5 w8a8 int8 QDQ (opset 13)', im, {}, ref.fn, mnist);
    await check('lenet5 w8a8 int8 QDQ, intmodel bias', im, { bias: 'intmodel' }, ref.fn, mnist);
  } else {
    await check('lenet5 w4a8 int4 QDQ (opset 21)', im, {}, ref.fn, mnist);
    await check('lenet5 w4a8 int4 QDQ, intmodel bias', im, { bias: 'intmodel' }, ref.fn, mnist);
    await check('lenet5 w4a8 web profile (int8, opset 13)', im, { profile: 'web' }, ref.fn, mnist);
  }
}

if (args['cnn-checkpoint'] !== undefined) {
  const fashion = testSet('fashion-mnist');
  const model = cnn();
  model.loadStateDict(loadCheckpoint(checkpointFile(args['cnn-checkpoint'])).model);
  const ref = forwardFn(model, fashion.shape);
  await check('cnn fp32 (Fashion-MNIST)', model, { inputShape: [1, 28, 28] }, (x, n) => ref(x, n), fashion);
}

console.log('\n| export | opset | weights | bytes | argmax agreement | max |Δ| | mean |Δ| |');
console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  if (r.report.status !== 'ok') { console.log(`| ${r.name} | ${r.opset} | ${r.weights} | ${r.bytes} | skipped | | |`); continue; }
  const p = r.report;
  console.log(`| ${r.name} | ${r.opset} | ${r.weights} | ${r.bytes.toLocaleString('en-US')} | ${(p.argmaxAgreement * 100).toFixed(2)} % (${Math.round(p.argmaxAgreement * p.samples)}/${p.samples}) | ${p.maxAbsDiff.toExponential(2)} | ${p.meanAbsDiff.toExponential(2)} |`);
}
if (args.json !== undefined) {
  const json = { source, samples: mnist.count, calibSamples, fp32Accuracy: fp32Acc, accuracies, ortVersion: ort.version, rows };
  writeFileAtomic(args.json, new TextEncoder().encode(`${JSON.stringify(json, null, 2)}\n`));
  log(`wrote ${args.json}`);
}
