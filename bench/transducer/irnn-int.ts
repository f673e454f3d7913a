/**
 * Integer-only RNN transducer on MNIST digit strings (docs/rnnt-4bit.md, "Integer runtime";
 * docs/irnn.md, "4-bit and 2-bit weights"): a float RNN-T is trained briefly as
 * bench/transducer/digits.ts does, then for each weight width a fake-quant twin
 * (`quant.irnn.QuantTransducer`: iRNN QuantLSTM encoder and predictor, A8, PWL sigmoid/tanh, integer
 * joint) is fine-tuned from it with the same data order, steps and learning rate, converted to the
 * integer runtime (`IntTransducer`, decoding from its written-and-reloaded file) and evaluated:
 * greedy label error rate of float / fake quant / integer, label agreement of fake quant vs
 * integer, packed model and file bytes, and decode speed of the integer greedy decoder against the
 * float one (same strings, batches of 100, timed in the same pass). A float copy fine-tuned with the
 * same steps, data order and learning rate is the fair float baseline ('float-ft').
 *
 *   nice -n 10 node --import tsx bench/transducer/irnn-int.ts [--train 30000] [--test 1000]
 *        [--pretrain-minutes 4] [--finetune-steps 150] [--batch 32] [--lr 0.002] [--ft-lr 0.0005]
 *        [--bits 8,4,2] [--output-bits 0 (= the weight bits)] [--seed 0] [--out irnn-int-rnnt]
 *
 * Model and data as digits.ts: encoder LSTM 128, predictor Embedding(11, 32) + LSTM 64, joint
 * 128 → 11 (blank = 10), frames of 2 columns (56 features). One seed; timings are wall-clock on
 * a shared 2-core machine. Writes bench/results/<out>.json atomically.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { getBackend } from '../../src/backend/index.ts';
import { digitStrings, type DigitStringBatch, type DigitStrings } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { transducer } from '../../src/nn/index.ts';
import type { Module } from '../../src/nn/module.ts';
import { Adam, clipGradNorm } from '../../src/optim/index.ts';
import { manualSeed, Rng, type Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { convertQuantTransducer, intTransducerToLowbit, loadIntTransducer, QuantTransducer } from '../../src/quant/irnn/index.ts';
import { encodeLowbit } from '../../src/format/lowbit.ts';
import { flag, flagOr, numberFlag } from '../flags.ts';
import { gitCommit } from '../lib.ts';
import { labelsOf, seconds } from './common.ts';

const trainCount = numberFlag('train', 30000, { integer: true, min: 1 });
const testCount = numberFlag('test', 1000, { integer: true, min: 1 });
const pretrainMinutes = numberFlag('pretrain-minutes', 4);
const finetuneSteps = numberFlag('finetune-steps', 150, { integer: true, min: 0 });
const batchSize = numberFlag('batch', 32, { integer: true, min: 1 });
const lr = numberFlag('lr', 0.002);
const ftLr = numberFlag('ft-lr', 0.0005);
const bitList = flagOr('bits', '8,4,2').split(',').map(Number);
const outputBits = numberFlag('output-bits', 0, { integer: true });
const seed = numberFlag('seed', 0, { integer: true });
const out = flagOr('out', 'irnn-int-rnnt');
if (flag('help') !== undefined) process.exit(0);

type Trainable = Module & { loss(f: Tensor, fl: Tensor, l: Tensor, ll: Tensor): Tensor };

/** Adam for `steps` batches or until `minutes` pass, data order fixed by `seed`. */
function train(model: Trainable, data: DigitStrings, steps: number, minutes: number, rate: number, label: string): { steps: number; seconds: number; lossFirst: number; lossLast20: number } {
  const parameters = model.parameters();
  const optimizer = new Adam(parameters, { lr: rate });
  model.train();
  const start = performance.now();
  const deadline = start + minutes * 60_000;
  const bar = new ProgressBar({ total: steps, label });
  const losses: number[] = [];
  for (let epoch = 0; losses.length < steps && performance.now() < deadline; epoch++) {
    for (const batch of data.batches({ batchSize, shuffle: true, seed, epoch })) {
      optimizer.zeroGrad();
      const loss = model.loss(batch.features, batch.featureLengths, batch.labels, batch.labelLengths);
      loss.backward();
      clipGradNorm(parameters, 1);
      optimizer.step();
      losses.push(loss.item());
      bar.tick(1, { loss: losses.at(-1)! });
      if (losses.length >= steps || performance.now() > deadline) break;
    }
  }
  bar.done();
  const tail = losses.slice(-20);
  return { steps: losses.length, seconds: seconds(start), lossFirst: losses[0]!, lossLast20: tail.reduce((a, b) => a + b, 0) / tail.length };
}

/** Decodes the first `count` test strings with each decoder (batches of 100): hypotheses and seconds per decoder. */
function decodeAll(data: DigitStrings, count: number, decoders: Record<string, (b: DigitStringBatch) => number[][]>): { refs: number[][]; hyps: Record<string, number[][]>; seconds: Record<string, number> } {
  const refs: number[][] = [];
  const hyps: Record<string, number[][]> = Object.fromEntries(Object.keys(decoders).map((k) => [k, []]));
  const time: Record<string, number> = Object.fromEntries(Object.keys(decoders).map((k) => [k, 0]));
  const bar = new ProgressBar({ total: count, label: `decode (${Object.keys(decoders).join(', ')})` });
  for (const batch of data.batches({ batchSize: 100 })) {
    if (refs.length >= count) break;
    refs.push(...labelsOf(batch));
    for (const [name, decode] of Object.entries(decoders)) {
      const start = performance.now();
      hyps[name]!.push(...decode(batch));
      time[name]! += seconds(start);
    }
    bar.tick(batch.indices.length);
  }
  bar.done();
  return { refs, hyps, seconds: time };
}

const same = (a: number[], b: number[]): boolean => a.length === b.length && a.every((v, i) => v === b[i]);

manualSeed(seed);
console.log(`backend ${getBackend()}; building ${trainCount} train / ${testCount} test digit strings`);
const trainSet = digitStrings('train', { count: trainCount, seed, frameStack: 2 });
const testSet = digitStrings('test', { count: testCount, seed: seed + 1, frameStack: 2 });
const float = new transducer.Transducer({ inputSize: trainSet.featureSize, numLabels: 10, encoderSize: 128, embeddingSize: 32, predictorSize: 64, jointSize: 128, rng: new Rng(seed) });
const pretrain = train(float, trainSet, Number.MAX_SAFE_INTEGER, pretrainMinutes, lr, 'float pretrain');
console.log(`float: ${pretrain.steps} steps in ${pretrain.seconds.toFixed(0)} s, loss ${pretrain.lossLast20.toFixed(3)}`);
float.eval();

const floatTuned = new transducer.Transducer({ inputSize: trainSet.featureSize, numLabels: 10, encoderSize: 128, embeddingSize: 32, predictorSize: 64, jointSize: 128 });
floatTuned.loadStateDict(float.stateDict());
const floatFinetune = train(floatTuned, trainSet, finetuneSteps, Number.POSITIVE_INFINITY, ftLr, 'float fine-tune');
floatTuned.eval();
const baseline = decodeAll(testSet, testCount, { float: (b) => float.greedyDecode(b.features, b.featureLengths), floatTuned: (b) => floatTuned.greedyDecode(b.features, b.featureLengths) });
const floatResult = {
  labelErrorRate: transducer.labelErrorRate(baseline.hyps.float!, baseline.refs),
  fineTunedLabelErrorRate: transducer.labelErrorRate(baseline.hyps.floatTuned!, baseline.refs),
  fineTune: floatFinetune,
};
console.log(`float greedy LER ${(100 * floatResult.labelErrorRate).toFixed(2)} %, after the same fine-tune ${(100 * floatResult.fineTunedLabelErrorRate).toFixed(2)} %`);

const rows: Record<string, unknown>[] = [];
for (const bits of bitList) {
  const twin = QuantTransducer.fromTransducer(float, { weightBits: bits, ...(outputBits > 0 ? { outputWeightBits: outputBits } : {}) });
  const finetune = train(twin, trainSet, finetuneSteps, Number.POSITIVE_INFINITY, ftLr, `W${bits}A8 fine-tune`);
  twin.eval();
  // The runtime decodes from its own file (written and read back through the validated reader).
  const fileBytes = encodeLowbit(intTransducerToLowbit(convertQuantTransducer(twin)));
  const runtime = loadIntTransducer(fileBytes);
  const decoders: Record<string, (b: DigitStringBatch) => number[][]> = {
    fakeQuant: (b) => twin.greedyDecode(b.features, b.featureLengths),
    integer: (b) => runtime.greedyDecode(b.features, b.featureLengths),
    float: (b) => floatTuned.greedyDecode(b.features, b.featureLengths),
  };
  const { refs, hyps, seconds: time } = decodeAll(testSet, testCount, decoders);
  const floatRate = refs.length / time.float!;
  const agree = hyps.integer!.filter((h, i) => same(h, hyps.fakeQuant![i]!)).length;
  const row = {
    weightBits: bits, outputWeightBits: twin.joint.outputWeightBits, activationBits: 8,
    finetune,
    labelErrorRate: { fakeQuant: transducer.labelErrorRate(hyps.fakeQuant!, refs), integer: transducer.labelErrorRate(hyps.integer!, refs) },
    agreement: { equalSequences: agree, strings: refs.length, fraction: agree / refs.length },
    bytes: { file: fileBytes.length, integer: runtime.byteLength, encoder: runtime.encoder.byteLength, predictor: runtime.predictor.byteLength, float32: float.numParameters() * 4 },
    speed: { integerStringsPerSecond: refs.length / time.integer!, integerSeconds: time.integer!, fakeQuantSeconds: time.fakeQuant!, floatStringsPerSecond: floatRate, floatSeconds: time.float!, ratioToFloat: (refs.length / time.integer!) / floatRate },
    cellBackend: runtime.encoder.cellBackend,
  };
  console.log(`W${bits}A8: LER fake quant ${(100 * row.labelErrorRate.fakeQuant).toFixed(2)} %, integer ${(100 * row.labelErrorRate.integer).toFixed(2)} %, agreement ${agree}/${refs.length}, ${row.bytes.integer} B (file ${fileBytes.length} B), integer ${row.speed.integerStringsPerSecond.toFixed(0)} strings/s (${row.speed.ratioToFloat.toFixed(2)}× float)`);
  rows.push(row);
}

const result = {
  benchmark: 'irnn-int-rnnt',
  commit: gitCommit(),
  backend: getBackend(),
  date: new Date().toISOString(),
  seed,
  data: { train: trainCount, test: testCount, frameStack: 2, features: trainSet.featureSize },
  model: { encoderSize: 128, embeddingSize: 32, predictorSize: 64, jointSize: 128, parameters: float.numParameters() },
  pretrain: { ...pretrain, lr, batchSize, minutes: pretrainMinutes },
  finetune: { steps: finetuneSteps, lr: ftLr, batchSize },
  float: floatResult,
  rows,
};
const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', `${out}.json`);
writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify(result, null, 2)}\n`));
console.log(`wrote ${resultsPath}`);
