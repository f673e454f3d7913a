/**
 * Post-training quantization (PTQ): quantize a trained float model without training it.
 *
 * A small VGG-style CNN with BatchNorm (`nn.cnn`) is trained in float32 on MNIST, then quantized
 * several ways by `quant.ptq.calibrate`: every Conv2d followed by a BatchNorm2d is folded into one
 * quantized conv (the BN's running statistics go into its weights and bias), weights get one scale
 * per output channel (or one per tensor, to compare), and the activation ranges come from an
 * observer you choose (min-max, percentile, entropy; also 'ema' and 'mse') watching a few hundred
 * calibration images.
 * The best setting is then converted to the integer-only runtime.
 *
 *   npx tsx examples/ptq.ts                        # full data, 1-2 minutes on 2 cores
 *   LOWBIT_EXAMPLE_QUICK=1 npx tsx examples/ptq.ts # tiny settings (what the tests run)
 */
import { data, evaluate, fit, formatPercent, manualSeed, nn, optim, preferThroughputGc, quant, runtime, Tensor } from 'lowbit';

const quick = process.env.LOWBIT_EXAMPLE_QUICK === '1';
const settings = quick
  ? { trainSamples: 6000, testSamples: 1000, epochs: 1, calibrationSamples: 256 }
  : { trainSamples: 60000, testSamples: 10000, epochs: 1, calibrationSamples: 1000 };

preferThroughputGc();
manualSeed(0);
const stats = data.DATASET_STATS.mnist;
const train = data.take(data.loadDataset('mnist', 'train'), settings.trainSamples);
const test = data.take(data.loadDataset('mnist', 'test'), settings.testSamples);
const trainLoader = new data.DataLoader(train, { batchSize: 64, shuffle: true, seed: 0, normalize: stats });
const testLoader = new data.DataLoader(test, { batchSize: 256, normalize: stats });
// Calibration images come from the training split, never from the test set.
const calibrationLoader = new data.DataLoader(train, { batchSize: 128, shuffle: true, seed: 1, normalize: stats });

// ---- the float32 model
// Conv–BN–ReLU blocks and a Linear–BN1d–ReLU head; narrower than the default so it trains in seconds.
const architecture = { channels: [8, 16], hidden: 64 } as const;
const floatModel = nn.cnn(architecture);
const optimizer = new optim.Adam(floatModel.parameters(), { lr: 2e-3 });
fit(floatModel, { trainLoader, optimizer, epochs: settings.epochs, progress: false });
const floatAccuracy = evaluate(floatModel, testLoader).accuracy;
console.log(`float32 accuracy: ${formatPercent(floatAccuracy)}`);
const floatWeights = floatModel.stateDict(); // every PTQ run starts from these weights

/** A fresh copy of the trained float model (calibrate quantizes the model it is given, in place). */
function floatCopy(): nn.Cnn {
  const copy = nn.cnn(architecture);
  copy.loadStateDict(floatWeights);
  return copy;
}

// ---- PTQ settings to compare: bits, activation observer, weight granularity
const runs: { label: string; options: quant.ptq.CalibrateOptions }[] = [
  { label: 'W8A8 minmax, weights per channel', options: { scheme: 'w8a8', method: 'minmax' } },
  { label: 'W8A8 percentile 99.99, per channel', options: { scheme: 'w8a8', method: 'percentile', percentile: 99.99 } },
  { label: 'W8A8 entropy (KL), per channel', options: { scheme: 'w8a8', method: 'entropy' } },
  // Below 8 bits the weight scales are fitted by MSE (weightMethod's default there).
  { label: 'W4A8 minmax, weights per tensor', options: { scheme: 'w4a8', method: 'minmax', weightGranularity: 'tensor' } },
  { label: 'W4A8 minmax, weights per channel', options: { scheme: 'w4a8', method: 'minmax', weightGranularity: 'channel' } },
  { label: 'W4A8 minmax, per channel + bias corr.', options: { scheme: 'w4a8', method: 'minmax', biasCorrection: true } },
];

let best: { label: string; accuracy: number; model: nn.Cnn } | null = null;
console.log('setting                                 accuracy  vs float');
for (const run of runs) {
  const model = quant.ptq.calibrate(floatCopy(), calibrationLoader, { ...run.options, samples: settings.calibrationSamples });
  const accuracy = evaluate(model, testLoader).accuracy;
  const delta = (accuracy - floatAccuracy) * 100;
  console.log(`${run.label.padEnd(40)}${formatPercent(accuracy).padStart(8)}  ${delta >= 0 ? '+' : ''}${delta.toFixed(2)} pt`);
  if (run.options.scheme === 'w4a8' && (best === null || accuracy > best.accuracy)) best = { label: run.label, accuracy, model };
}
if (best === null) throw new Error('no W4A8 run');

// Which layers were quantized and how: '+BN' marks a conv with its BatchNorm2d folded in (running
// statistics into weight and bias). The first and last layers stay at 8 bits (keepFirstLast8bit).
console.log(`\nlayers of "${best.label}":`);
console.log(quant.formatQuantTable(quant.quantizedLayers(best.model)));

// ---- the integer-only runtime
// convert() checks the IntModel against the fake-quant model on `sample` and throws if they disagree.
const images = data.normalize(test, stats);
const sample = new Tensor(images.images.slice(0, 256 * 784), [256, 1, 28, 28]);
const intModel = runtime.convert(best.model, { sample });
const logits = intModel.run(images.images, test.length);
let correct = 0;
for (let i = 0; i < test.length; i++) {
  let top = 0;
  for (let c = 1; c < 10; c++) if (logits[i * 10 + c]! > logits[i * 10 + top]!) top = c;
  if (top === test.labels[i]) correct++;
}
const packed = intModel.layers().reduce((sum, layer) => sum + layer.packedBytes, 0);
console.log(`integer runtime accuracy: ${formatPercent(correct / test.length)} (${packed} bytes of packed weights; float32: ${floatModel.numParameters() * 4})`);
console.log(`best W4A8: ${best.label}: ${formatPercent(best.accuracy)} (float32 ${formatPercent(floatAccuracy)})`);
