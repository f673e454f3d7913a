/**
 * RNN transducer on MNIST digit strings (the stand-in for speech recognition, src/data/digit-strings.ts):
 * trains a small RNN-T with Adam and reports test label error rate (greedy and beam search),
 * sequence accuracy, training time, model size and the loss's own speed.
 *
 *   nice -n 10 node --import tsx bench/transducer/digits.ts [--train 30000] [--test 2000]
 *        [--epochs 2] [--batch 32] [--lr 0.002] [--clip 1] [--frame-stack 2] [--encoder 128]
 *        [--encoder-layers 1] [--embed 32] [--predictor 64] [--joint 128] [--beam 4]
 *        [--beam-limit 1000] [--max-minutes 9] [--seed 0] [--out transducer-digits]
 *
 * Data: train strings from MNIST train images, test strings from MNIST test images, 1..5 digits,
 * gaps 2..8 px, no jitter, frames of 2 columns (56 features), MNIST-normalised. Model: LSTM
 * encoder (batchFirst, unidirectional) → joint; predictor Embedding(11, 32) + LSTM(32, 64); joint
 * 128 → 11 logits (blank = 10). Training stops after `--epochs` or `--max-minutes`, whichever is
 * first; the gradient's global L2 norm is clipped to `--clip`. Beam search (modified, 1 label per
 * frame, merge 'labels') runs on the first `--beam-limit` test strings, greedy on all of them (and
 * on the same subset, for a like-for-like row). Timings are wall-clock on a shared machine.
 * Writes bench/results/<out>.json atomically.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { getBackend, nativeInfo } from '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { digitStrings, type DigitStringBatch, type DigitStrings } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { transducer } from '../../src/nn/index.ts';
import { Adam, clipGradNorm } from '../../src/optim/index.ts';
import { manualSeed, Rng, Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { flag, flagOr, numberFlag } from '../flags.ts';
import { gitCommit, median } from '../lib.ts';
import { evaluateDecoder, seconds } from './common.ts';

const trainCount = numberFlag('train', 30000, { integer: true, min: 1 });
const testCount = numberFlag('test', 2000, { integer: true, min: 1 });
const epochs = numberFlag('epochs', 2, { integer: true, min: 1 });
const batchSize = numberFlag('batch', 32, { integer: true, min: 1 });
const lr = numberFlag('lr', 0.002);
const clip = numberFlag('clip', 1);
const frameStack = numberFlag('frame-stack', 2, { integer: true, min: 1 });
const encoderSize = numberFlag('encoder', 128, { integer: true, min: 1 });
const encoderLayers = numberFlag('encoder-layers', 1, { integer: true, min: 1 });
const embeddingSize = numberFlag('embed', 32, { integer: true, min: 1 });
const predictorSize = numberFlag('predictor', 64, { integer: true, min: 1 });
const jointSize = numberFlag('joint', 128, { integer: true, min: 1 });
const beamSize = numberFlag('beam', 4, { integer: true, min: 1 });
const beamLimit = numberFlag('beam-limit', 1000, { integer: true, min: 1 });
const maxMinutes = numberFlag('max-minutes', 9);
const seed = numberFlag('seed', 0, { integer: true });
const out = flagOr('out', 'transducer-digits');
if (flag('help') !== undefined) process.exit(0);

manualSeed(seed);
console.log(`backend ${getBackend()}; building ${trainCount} train / ${testCount} test digit strings`);
const train = digitStrings('train', { count: trainCount, seed, frameStack });
const test = digitStrings('test', { count: testCount, seed: seed + 1, frameStack });
const meanFrames = (s: DigitStrings): number => Array.from({ length: s.length }, (_, i) => s.frames(i)).reduce((a, b) => a + b, 0) / s.length;

const model = new transducer.Transducer({
  inputSize: train.featureSize, numLabels: 10, encoderSize, encoderLayers, embeddingSize, predictorSize, jointSize, rng: new Rng(seed),
});
const parameters = model.parameters();
const parameterCount = model.numParameters();
console.log(`model: ${parameterCount} parameters (${(parameterCount * 4 / 1024).toFixed(0)} KiB float32); mean frames train ${meanFrames(train).toFixed(1)}`);
const optimizer = new Adam(parameters, { lr });
model.train();
const trainStart = performance.now();
const deadline = trainStart + maxMinutes * 60_000;
let steps = 0;
let samples = 0;
let stopped = false;
const losses: number[] = [];
for (let epoch = 0; epoch < epochs && !stopped; epoch++) {
  const total = Math.ceil(train.length / batchSize);
  const bar = new ProgressBar({ total, label: `train epoch ${epoch + 1}/${epochs}` });
  let sum = 0;
  let count = 0;
  for (const batch of train.batches({ batchSize, shuffle: true, seed, epoch })) {
    optimizer.zeroGrad();
    const loss = model.loss(batch.features, batch.featureLengths, batch.labels, batch.labelLengths);
    loss.backward();
    if (clip > 0) clipGradNorm(parameters, clip);
    optimizer.step();
    steps++;
    samples += batch.indices.length;
    sum += loss.item();
    count++;
    losses.push(loss.item());
    bar.tick(1, { loss: sum / count });
    if (performance.now() > deadline) {
      stopped = true;
      break;
    }
  }
  bar.done();
}
const trainSeconds = seconds(trainStart);
const tail = losses.slice(-50);
const finalLoss = tail.reduce((a, b) => a + b, 0) / tail.length;
console.log(`trained ${steps} steps (${(samples / train.length).toFixed(2)} epochs) in ${trainSeconds.toFixed(0)} s; loss (last 50 steps) ${finalLoss.toFixed(4)}`);

model.eval();
const greedy = evaluateDecoder(test, test.length, (b) => model.greedyDecode(b.features, b.featureLengths), 'greedy');
const greedySubset = evaluateDecoder(test, beamLimit, (b) => model.greedyDecode(b.features, b.featureLengths), 'greedy (beam subset)');
const beam = evaluateDecoder(test, beamLimit, (b) => model.beamSearch(b.features, b.featureLengths, { beamSize }).map((n) => n[0]!.labels), `beam ${beamSize}`);
console.log(`greedy LER ${(100 * greedy.labelErrorRate).toFixed(2)} % seq acc ${(100 * greedy.sequenceAccuracy).toFixed(2)} % (${greedy.strings} strings)`);
console.log(`first ${beam.strings}: greedy LER ${(100 * greedySubset.labelErrorRate).toFixed(2)} %, beam ${beamSize} LER ${(100 * beam.labelErrorRate).toFixed(2)} % seq acc ${(100 * beam.sequenceAccuracy).toFixed(2)} %`);

// Loss speed: forward + backward of transducerLoss alone on a fixed batch of logits.
const probe = train.batch(Array.from({ length: batchSize }, (_, i) => i));
const logits = noGrad(() => model.forward(probe.features, probe.labels)).detach().requiresGrad_();
const lossTimes: number[] = [];
for (let r = 0; r < 21; r++) {
  const start = performance.now();
  transducer.transducerLoss(logits, probe.labels, probe.featureLengths, probe.labelLengths).backward();
  logits.grad = null;
  if (r > 0) lossTimes.push(performance.now() - start);
}
console.log(`transducerLoss fwd+bwd on logits [${logits.shape.join(', ')}]: ${median(lossTimes).toFixed(2)} ms`);

const row = {
  benchmark: 'transducer-digits',
  commit: gitCommit(),
  backend: getBackend(),
  native: getBackend() === 'native' ? nativeInfo() : null,
  date: new Date().toISOString(),
  seed,
  data: { train: trainCount, test: testCount, digits: [1, 5], gap: [2, 8], frameStack, features: train.featureSize, meanFramesTrain: meanFrames(train), meanFramesTest: meanFrames(test) },
  model: { encoderSize, encoderLayers, embeddingSize, predictorSize, jointSize, parameters: parameterCount, float32Bytes: parameterCount * 4 },
  training: { optimizer: 'Adam', lr, batchSize, clip, epochsRequested: epochs, maxMinutes, steps, epochsDone: samples / train.length, seconds: trainSeconds, secondsPerStep: trainSeconds / steps, stoppedByTime: stopped, lossLast50: finalLoss, lossFirst: losses[0] },
  test: { greedy, greedyOnBeamSubset: greedySubset, beam: { beamSize, merge: 'labels', ...beam } },
  lossSpeed: { logitsShape: logits.shape, medianMs: median(lossTimes), repeatsMs: lossTimes },
};
const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', `${out}.json`);
writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify(row, null, 2)}\n`));
console.log(`wrote ${resultsPath}`);
