/**
 * VQ-RNN-T on MNIST digit strings: an RNN transducer with the usual LSTM prediction network vs the
 * same with a VQ-LSTM prediction network (nn.vq.VqLstmPredictor, trained jointly), decoded by
 * beam search with lattice generation (nn.vq.beamLattice). Reported per model and beam: the label
 * error rate of the 1-best, the oracle label error rate of the lattice (exact DP), lattice density
 * (arcs, label arcs and nodes per frame; mean log10 of the number of paths) and decoding time.
 *   LSTM predictor: hypotheses merged by label sequence ('labels': a prefix tree).
 *   VQ predictor: merged by code ('state': nodes are (frame, code)), and, as a control, by labels.
 *
 *   nice -n 10 node --import tsx bench/vq/vq-rnnt.ts [--steps 1000] [--batch 32] [--train 10000]
 *        [--test 300] [--codebook 32] [--predictor 64] [--encoder 128] [--joint 128] [--lr 0.002]
 *        [--max-digits 5] [--frame-stack 2] [--beams 4,8] [--dead 0.01] [--update loss|ema] [--seed 0]
 *        [--out bench/results/vq-rnnt.json]
 *
 * Task: data.digitStrings (1..maxDigits MNIST digits on a 28-px strip with random gaps; train
 * strings from MNIST train images, test strings from test images; frames of `frameStack` columns;
 * blank = 10), the sizes of bench/transducer/digits.ts by default. Training: Adam on the RNN-T loss
 * (+ the VQ loss for the VQ predictor), the same shuffled batches for both models, `--steps`
 * updates. One seed; timings are wall-clock on a shared machine.
 */
import '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { digitStrings, type DigitStrings } from '../../src/data/index.ts';
import { LstmPredictor, Transducer, labelErrorRate } from '../../src/nn/transducer/index.ts';
import { beamLattice, latticeDensity, oracleErrors, VqLstmPredictor } from '../../src/nn/vq/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { add, manualSeed, Rng } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { flagOr, numberFlag } from '../flags.ts';
import { choiceFlag } from './flags.ts';
import { gitCommit, writeAtomic } from '../lib.ts';

const steps = numberFlag('steps', 1000, { integer: true, min: 1 });
const batchSize = numberFlag('batch', 32, { integer: true, min: 1 });
const trainCount = numberFlag('train', 10000, { integer: true, min: 1 });
const testCount = numberFlag('test', 300, { integer: true, min: 1 });
const codebookSize = numberFlag('codebook', 32, { integer: true, min: 1 });
const predictorSize = numberFlag('predictor', 64, { integer: true, min: 1 });
const encoderSize = numberFlag('encoder', 128, { integer: true, min: 1 });
const jointSize = numberFlag('joint', 128, { integer: true, min: 1 });
const lr = numberFlag('lr', 0.002);
const maxDigits = numberFlag('max-digits', 5, { integer: true, min: 1 });
const frameStack = numberFlag('frame-stack', 2, { integer: true, min: 1 });
const dead = numberFlag('dead', 0.01);
const update = choiceFlag('update', ['loss', 'ema'] as const);
const beams = flagOr('beams', '4,8').split(',').map(Number);
const seed = numberFlag('seed', 0, { integer: true });
const outPath = flagOr('out', 'bench/results/vq-rnnt.json');
if (beams.some((b) => !Number.isInteger(b) || b < 1)) throw new Error(`--beams needs positive integers, got '${flagOr('beams', '')}'`);

function buildModel(kind: 'lstm' | 'vq', featureSize: number): Transducer {
  const rng = new Rng(seed);
  const predictor = kind === 'lstm'
    ? new LstmPredictor(11, { embeddingSize: 32, hiddenSize: predictorSize, rng })
    : new VqLstmPredictor(11, { embeddingSize: 32, hiddenSize: predictorSize, codebookSize, deadCodeThreshold: dead, update, rng });
  return new Transducer({ inputSize: featureSize, numLabels: 10, encoderSize, jointSize, predictor, rng });
}

function train(model: Transducer, data: DigitStrings, label: string): { loss: number; seconds: number } {
  const optimizer = new Adam(model.parameters(), { lr });
  model.train();
  const bar = new ProgressBar({ total: steps, label });
  const started = Date.now();
  const recent: number[] = [];
  let done = 0;
  for (let epoch = 0; done < steps; epoch++) {
    for (const batch of data.batches({ batchSize, shuffle: true, seed, epoch, dropLast: true })) {
      if (done >= steps) break;
      optimizer.zeroGrad();
      const rnnt = model.loss(batch.features, batch.featureLengths, batch.labels, batch.labelLengths);
      const vq = model.predictor instanceof VqLstmPredictor ? model.predictor.vqLoss : null;
      (vq ? add(rnnt, vq) : rnnt).backward();
      optimizer.step();
      recent.push(rnnt.item());
      if (recent.length > 50) recent.shift();
      done++;
      bar.tick(1, { loss: recent.reduce((a, b) => a + b, 0) / recent.length });
    }
  }
  bar.done();
  return { loss: recent.reduce((a, b) => a + b, 0) / recent.length, seconds: (Date.now() - started) / 1000 };
}

interface DecodeRow {
  model: string;
  merge: 'labels' | 'state';
  beam: number;
  labelErrorRate: number;
  oracleLabelErrorRate: number;
  arcsPerFrame: number;
  labelArcsPerFrame: number;
  nodesPerFrame: number;
  meanLog10Paths: number;
  decodeSeconds: number;
}

function decode(model: Transducer, name: string, merge: 'labels' | 'state', beam: number, test: DigitStrings): DecodeRow {
  model.eval();
  const started = Date.now();
  const best: number[][] = [];
  const references: number[][] = [];
  let oracle = 0;
  let arcs = 0;
  let labelArcs = 0;
  let nodes = 0;
  let frames = 0;
  let log10Paths = 0;
  for (const batch of test.batches({ batchSize: 32 })) {
    const encoded = noGrad(() => model.encodeForDecoding(batch.features));
    const decoded = beamLattice(model.scorer(), encoded, batch.featureLengths, { beamSize: beam, merge });
    decoded.forEach((d, j) => {
      const reference = [...test.labels[batch.indices[j]!]!];
      best.push(d.best);
      references.push(reference);
      oracle += oracleErrors(d.lattice, reference).errors;
      const density = latticeDensity(d.lattice);
      arcs += density.arcsPerFrame * d.lattice.frames;
      labelArcs += density.labelArcsPerFrame * d.lattice.frames;
      nodes += density.nodesPerFrame * d.lattice.frames;
      frames += d.lattice.frames;
      log10Paths += density.log10Paths;
    });
  }
  const referenceLabels = references.reduce((n, r) => n + r.length, 0);
  const row: DecodeRow = {
    model: name,
    merge,
    beam,
    labelErrorRate: labelErrorRate(best, references),
    oracleLabelErrorRate: oracle / referenceLabels,
    arcsPerFrame: arcs / frames,
    labelArcsPerFrame: labelArcs / frames,
    nodesPerFrame: nodes / frames,
    meanLog10Paths: log10Paths / references.length,
    decodeSeconds: (Date.now() - started) / 1000,
  };
  console.log(JSON.stringify(row));
  return row;
}

const trainSet = digitStrings('train', { count: trainCount, maxDigits, frameStack, seed });
const testSet = digitStrings('test', { count: testCount, maxDigits, frameStack, seed: seed + 1 });
console.log(`digit strings: ${trainSet.length} train / ${testSet.length} test, 1-${maxDigits} digits, ${trainSet.featureSize} features per frame`);

/** Greedy label error rate over the test strings. */
function greedyRate(model: Transducer): number {
  model.eval();
  const hyps: number[][] = [];
  const refs: number[][] = [];
  for (const batch of testSet.batches({ batchSize: 64 })) {
    hyps.push(...model.greedyDecode(batch.features, batch.featureLengths));
    for (const i of batch.indices) refs.push([...testSet.labels[i]!]);
  }
  return labelErrorRate(hyps, refs);
}

const training: Record<string, unknown>[] = [];
const rows: DecodeRow[] = [];
for (const kind of ['lstm', 'vq'] as const) {
  manualSeed(seed);
  const model = buildModel(kind, trainSet.featureSize);
  const name = kind === 'lstm' ? 'LSTM predictor' : `VQ-LSTM predictor K=${codebookSize}`;
  const result = train(model, trainSet, name);
  const vq = model.predictor instanceof VqLstmPredictor ? model.predictor.lstm.quantizer : null;
  const info = { model: name, finalLoss: result.loss, trainSeconds: result.seconds, greedyLabelErrorRate: greedyRate(model), activeCodes: vq ? vq.activeCodes() : null, restarts: vq ? vq.restarts : null };
  console.log(JSON.stringify(info));
  training.push(info);
  for (const beam of beams) {
    if (kind === 'lstm') rows.push(decode(model, name, 'labels', beam, testSet));
    else {
      rows.push(decode(model, name, 'state', beam, testSet));
      rows.push(decode(model, name, 'labels', beam, testSet));
    }
  }
}
const out = {
  bench: 'vq-rnnt',
  commit: gitCommit(),
  date: new Date().toISOString(),
  settings: { steps, batchSize, trainCount, testCount, codebookSize, predictorSize, encoderSize, jointSize, lr, maxDigits, frameStack, deadCodeThreshold: dead, update, beams, seed, task: 'data.digitStrings' },
  training,
  rows,
};
writeAtomic(outPath, `${JSON.stringify(out, null, 2)}\n`);
console.log(`wrote ${outPath}`);
