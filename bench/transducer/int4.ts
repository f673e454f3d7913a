/**
 * 4-bit QAT of an RNN transducer on MNIST digit strings (docs/rnnt-4bit.md): one fp32 model is
 * trained, then each quantization recipe fine-tunes a copy of it with the same data order, steps
 * and learning rate, and is evaluated (label error rate greedy and beam, packed model size).
 *
 *   nice -n 10 node --import tsx bench/transducer/int4.ts [--train 30000] [--test 2000]
 *        [--pretrain-minutes 5] [--finetune-steps 300] [--batch 32] [--lr 0.002] [--ft-lr 0.0005]
 *        [--beam 4] [--beam-limit 500] [--configs fp32,naive,tailored,tailored-all4,naive-perrow]
 *        [--seed 0] [--out rnnt-4bit]
 *
 * Model and data as bench/transducer/digits.ts (encoder LSTM 128, predictor Embedding(11, 32) +
 * LSTM 64, joint 128 → 11, frames of 2 columns). Recipes (every LSTM, Linear and the Embedding
 * quantized; see `recipes` below): fp32 (plain fine-tune); naive (W4A4 per tensor everywhere,
 * min-max weights, EMA min-max symmetric activations, embedding and joint output included);
 * tailored (LSQ per-row 4-bit weights, LSQ 4-bit activations, asymmetric LSQ+ on the one-sided
 * encoder input, embedding and joint output at 8 bits); ablations of tailored.
 * Activation ranges of the fp32 model are measured first (16-bit min-max observers on every
 * quantized operand) and written to the JSON. One seed; timings are wall-clock on a shared machine.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { getBackend } from '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { digitStrings, type DigitStringBatch, type DigitStrings } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { transducer } from '../../src/nn/index.ts';
import { Adam, clipGradNorm } from '../../src/optim/index.ts';
import { manualSeed, Rng, type Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { modelSize, prepareRnnQat, type RnnQatPlan } from '../../src/quant/rnn/index.ts';
import { quantizers } from '../../src/quant/qat/prepare.ts';
import { SteQuantizer } from '../../src/quant/quantizers/ste.ts';
import type { QuantizerSpec } from '../../src/quant/quantizers/quantizer.ts';
import { flag, flagOr, numberFlag } from '../flags.ts';
import { gitCommit } from '../lib.ts';
import { evaluateDecoder, seconds } from './common.ts';

const trainCount = numberFlag('train', 30000, { integer: true, min: 1 });
const testCount = numberFlag('test', 2000, { integer: true, min: 1 });
const pretrainMinutes = numberFlag('pretrain-minutes', 5);
const finetuneSteps = numberFlag('finetune-steps', 300, { integer: true, min: 0 });
const batchSize = numberFlag('batch', 32, { integer: true, min: 1 });
const lr = numberFlag('lr', 0.002);
const ftLr = numberFlag('ft-lr', 0.0005);
const beamSize = numberFlag('beam', 4, { integer: true, min: 1 });
const beamLimit = numberFlag('beam-limit', 500, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const configNames = flagOr('configs', 'fp32,naive,tailored,tailored-all4,naive-perrow').split(',');
const out = flagOr('out', 'rnnt-4bit');
if (flag('help') !== undefined) process.exit(0);

// ------------------------------------------------------------------ recipes
const naiveW4: QuantizerSpec = { kind: 'ste', bits: 4, signed: true, symmetric: true, granularity: 'tensor' };
const naiveA4: QuantizerSpec = { kind: 'ste', bits: 4, signed: true, symmetric: true, granularity: 'tensor', observer: 'movingAverage' };
const lsqW4Row: QuantizerSpec = { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'channel' };
const lsqA4: QuantizerSpec = { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'tensor' };
/** Encoder input: normalised pixels in [−0.42, 2.82], one-sided → unsigned with a learned offset. */
const lsqPlusA4: QuantizerSpec = { kind: 'lsqPlus', bits: 4, signed: false, symmetric: false, granularity: 'tensor' };
const at8 = (s: QuantizerSpec): QuantizerSpec => ({ ...s, bits: 8 });

const tailoredBase: RnnQatPlan['overrides'] = [{ match: 'encoder', config: { activation: lsqPlusA4, hidden: lsqA4 } }];
const recipes: Record<string, RnnQatPlan | null> = {
  fp32: null,
  naive: { default: { weight: naiveW4, activation: naiveA4 } },
  'naive-perrow': { default: { weight: { ...naiveW4, granularity: 'channel' }, activation: naiveA4 } },
  tailored: {
    default: { weight: lsqW4Row, activation: lsqA4 },
    overrides: [
      ...tailoredBase!,
      { match: { type: 'Embedding' }, config: { weight: at8(lsqW4Row) } },
      { match: 'joint.output', config: { weight: at8(lsqW4Row), activation: at8(lsqA4) } },
    ],
  },
  'tailored-all4': { default: { weight: lsqW4Row, activation: lsqA4 }, overrides: tailoredBase },
  'tailored-symmetric-input': {
    default: { weight: lsqW4Row, activation: lsqA4 },
    overrides: [
      { match: { type: 'Embedding' }, config: { weight: at8(lsqW4Row) } },
      { match: 'joint.output', config: { weight: at8(lsqW4Row), activation: at8(lsqA4) } },
    ],
  },
};
for (const name of configNames) if (!(name in recipes)) throw new Error(`--configs: unknown recipe '${name}' (known: ${Object.keys(recipes).join(', ')})`);

// ------------------------------------------------------------------ helpers
/** Trains `model` with Adam for `steps` batches (or until `deadline`), data order fixed by `seed`. */
function train(model: transducer.Transducer, data: DigitStrings, options: { steps: number; lr: number; deadline: number; label: string }): { steps: number; seconds: number; lossLast50: number } {
  const parameters = model.parameters();
  const optimizer = new Adam(parameters, { lr: options.lr });
  model.train();
  const start = performance.now();
  const losses: number[] = [];
  const bar = new ProgressBar({ total: options.steps, label: options.label });
  let epoch = 0;
  outer: for (;;) {
    for (const batch of data.batches({ batchSize, shuffle: true, seed, epoch })) {
      if (losses.length >= options.steps || performance.now() > options.deadline) break outer;
      optimizer.zeroGrad();
      const loss = model.loss(batch.features, batch.featureLengths, batch.labels, batch.labelLengths);
      loss.backward();
      clipGradNorm(parameters, 1);
      optimizer.step();
      losses.push(loss.item());
      bar.tick(1, { loss: losses.slice(-50).reduce((a, b) => a + b, 0) / Math.min(50, losses.length) });
    }
    epoch++;
  }
  bar.done();
  const tail = losses.slice(-50);
  return { steps: losses.length, seconds: seconds(start), lossLast50: tail.reduce((a, b) => a + b, 0) / Math.max(1, tail.length) };
}

// ------------------------------------------------------------------ run
manualSeed(seed);
console.log(`backend ${getBackend()}; ${trainCount} train / ${testCount} test digit strings; recipes ${configNames.join(', ')}`);
const trainSet = digitStrings('train', { count: trainCount, seed, frameStack: 2 });
const testSet = digitStrings('test', { count: testCount, seed: seed + 1, frameStack: 2 });
const build = (): transducer.Transducer => new transducer.Transducer({ inputSize: trainSet.featureSize, numLabels: 10, encoderSize: 128, embeddingSize: 32, predictorSize: 64, jointSize: 128, rng: new Rng(seed) });

const base = build();
const pretrain = train(base, trainSet, { steps: Number.MAX_SAFE_INTEGER, lr, deadline: performance.now() + pretrainMinutes * 60_000, label: 'fp32 pretrain' });
console.log(`pretrained ${pretrain.steps} steps in ${pretrain.seconds.toFixed(0)} s, loss ${pretrain.lossLast50.toFixed(3)}`);
const start = base.stateDict();

// Activation ranges of the fp32 model at every operand the recipes quantize (16-bit min-max observers).
const probe = build();
probe.loadStateDict(start);
const observer: QuantizerSpec = { kind: 'ste', bits: 16, signed: true, symmetric: false, observer: 'minMax' };
prepareRnnQat(probe, { default: { weight: { kind: 'ste', bits: 16, granularity: 'tensor' }, activation: observer } });
probe.train();
noGrad(() => {
  let n = 0;
  for (const batch of trainSet.batches({ batchSize: 64, shuffle: true, seed: seed + 7 })) {
    probe.forward(batch.features, batch.labels);
    if (++n >= 10) break;
  }
});
const ranges: Record<string, { min: number; max: number }> = {};
for (const [name, m] of probe.namedModules()) {
  if (m instanceof SteQuantizer && m.role === 'activation') ranges[name] = { min: m.runningMin.data[0]!, max: m.runningMax.data[0]! };
}
console.log('fp32 activation ranges:', Object.entries(ranges).map(([k, r]) => `${k} [${r.min.toFixed(2)}, ${r.max.toFixed(2)}]`).join('; '));

const results: Record<string, unknown>[] = [];
const float32Bytes = base.numParameters() * 4;
for (const name of configNames) {
  const model = build();
  model.loadStateDict(start);
  const plan = recipes[name]!;
  const table = plan ? prepareRnnQat(model, plan) : null;
  const fine = train(model, trainSet, { steps: finetuneSteps, lr: ftLr, deadline: Number.POSITIVE_INFINITY, label: `${name} fine-tune` });
  model.eval();
  const greedy = evaluateDecoder(testSet, testSet.length, (b) => model.greedyDecode(b.features, b.featureLengths), `${name} greedy`);
  const greedySubset = evaluateDecoder(testSet, beamLimit, (b) => model.greedyDecode(b.features, b.featureLengths), `${name} greedy (beam subset)`);
  const beam = evaluateDecoder(testSet, beamLimit, (b) => model.beamSearch(b.features, b.featureLengths, { beamSize }).map((n) => n[0]!.labels), `${name} beam ${beamSize}`);
  const size = plan ? modelSize(model) : { bytes: float32Bytes, float32Bytes, compression: 1, entries: [] };
  console.log(`${name}: greedy LER ${(100 * greedy.labelErrorRate).toFixed(2)} %, beam ${beamSize} LER ${(100 * beam.labelErrorRate).toFixed(2)} % (greedy on same ${beam.strings}: ${(100 * greedySubset.labelErrorRate).toFixed(2)} %), size ${size.bytes} B (${size.compression.toFixed(2)}x)`);
  results.push({
    recipe: name, plan, table, finetune: fine, greedy, greedyOnBeamSubset: greedySubset, beam: { beamSize, merge: 'labels', ...beam },
    size: { bytes: size.bytes, float32Bytes: size.float32Bytes, compression: size.compression, entries: size.entries },
    quantizers: plan ? quantizers(model).length : 0,
  });
  const row = {
    benchmark: 'rnnt-4bit', commit: gitCommit(), backend: getBackend(), date: new Date().toISOString(), seed,
    data: { train: trainCount, test: testCount, frameStack: 2, features: trainSet.featureSize },
    model: { encoderSize: 128, embeddingSize: 32, predictorSize: 64, jointSize: 128, parameters: base.numParameters(), float32Bytes },
    pretrain: { ...pretrain, lr, batchSize, minutes: pretrainMinutes },
    finetune: { steps: finetuneSteps, lr: ftLr, batchSize, clip: 1, optimizer: 'Adam' },
    fp32ActivationRanges: ranges,
    results,
  };
  const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', `${out}.json`);
  writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify(row, null, 2)}\n`));
  console.log(`wrote ${resultsPath}`);
}
