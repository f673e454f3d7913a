/**
 * Spartus on row-by-row MNIST: spatio-temporal sparsity of an LSTM 128 classifier (28 steps of 28
 * pixels → LSTM(28, 128) → h at the last step → Linear(128, 10)).
 *
 *   nice -n 10 node --import tsx bench/delta/spartus-mnist.ts [--train 12000] [--test 2000]
 *        [--epochs 3] [--ft-epochs 1] [--thetas 0,0.05,0.1,0.2,0.3] [--sparsities 0.75,0.9,0.94]
 *        [--block-rows 64] [--combined-theta 0.1] [--ft-batches N (per fine-tune epoch; 0 = all)] [--seed 0]
 *
 * 1. Dense training: nn.LSTM (fused kernel), Adam 2e-3, batch 64, `--epochs` over the first
 *    `--train` training images; the weights load unchanged into a DeltaLSTM.
 * 2. Temporal sparsity: for each Θ (= Θx = Θh; pixels are in [0, 1]) the dense model is evaluated
 *    as is, and after `--ft-epochs` of fine-tuning as a DeltaLSTM with that Θ in the forward pass.
 * 3. Spatial sparsity: for each γ, CBTD fine-tuning from the dense model (`--ft-epochs`, the target
 *    fraction ramping over the first half, drop rate 0.5), hard prune to `keep` per column block of
 *    `--block-rows` rows, `--ft-epochs` more with the mask fixed; evaluated at Θ = 0 and at
 *    `--combined-theta` (plus a Θ fine-tune epoch for the combined point).
 * Every accuracy is measured with the batch-1 DeltaLstmEngine (sparse path) on the first `--test`
 * test images, which also counts the LSTM's multiply-accumulates (the 1,280 of the head are not
 * counted): temporal sparsity = skipped / considered columns, op reduction = dense LSTM MACs / MACs.
 * Rows go to bench/results/spartus-mnist.json (atomically).
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { loadMnist, type Dataset } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { Linear, LSTM, Module } from '../../src/nn/index.ts';
import { ColumnBalancedTargetedDropout, DeltaLSTM, DeltaLstmEngine } from '../../src/nn/delta/index.ts';
import { manualSeed, reshape, Rng, type Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { trainAdam } from '../train-loop.ts';
import { flagOr, numberFlag } from '../flags.ts';

const trainCount = numberFlag('train', 12000, { integer: true, min: 1 });
const testCount = numberFlag('test', 2000, { integer: true, min: 1 });
const epochs = numberFlag('epochs', 3, { integer: true, min: 1 });
const ftEpochs = numberFlag('ft-epochs', 1, { integer: true, min: 1 });
const blockRows = numberFlag('block-rows', 64, { integer: true, min: 1 });
const combinedTheta = numberFlag('combined-theta', 0.1, { min: 0 });
const seed = numberFlag('seed', 0, { integer: true });
const ftBatches = numberFlag('ft-batches', 0, { integer: true });
const list = (name: string, fallback: string): number[] => flagOr(name, fallback).split(',').map((s) => {
  const v = Number(s);
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`--${name}: '${s}' is not a number ≥ 0`);
  return v;
});
const thetas = list('thetas', '0,0.05,0.1,0.2,0.3');
const sparsities = list('sparsities', '0.75,0.9,0.94');
const hidden = 128;
const steps = 28;
const batchSize = 64;

/** Rows of an image as a sequence: [N, 28, 28] batch first → LSTM → last h → head. */
class RowClassifier extends Module {
  rnn: LSTM | DeltaLSTM;
  readonly head: Linear;
  constructor(rnn: LSTM | DeltaLSTM, rng: Rng) {
    super();
    this.rnn = this.registerModule('rnn', rnn);
    this.head = this.registerModule('head', new Linear(hidden, 10, { rng }));
  }

  forward(x: Tensor): Tensor {
    const n = x.shape[0]!;
    const [, [hN]] = this.rnn.forward(reshape(x, [n, steps, steps]));
    return this.head.forward(reshape(hN, [n, hidden]));
  }
}

/** A DeltaLSTM copy of `model` (same weights, head included) with threshold Θ. */
function deltaCopy(model: RowClassifier, theta: number): RowClassifier {
  const rnn = new DeltaLSTM(steps, hidden, { batchFirst: true, thresholdX: theta });
  const copy = new RowClassifier(rnn, new Rng(seed));
  copy.loadStateDict(model.stateDict());
  return copy;
}

function train(model: RowClassifier, ds: Dataset, rounds: number, label: string, maxBatches = Infinity, onStep?: () => void): number {
  return trainAdam(model, ds, { rounds, lr: 2e-3, label, batchSize, seed, maxBatches, onStep });
}

interface Row {
  method: string;
  theta: number;
  /** Actual weight sparsity of W_ih and W_hh together. */
  weightSparsity: number;
  accuracy: number;
  temporalSparsity: number;
  inputSkipped: number;
  hiddenSkipped: number;
  macsPerSequence: number;
  opReduction: number;
  trainLoss: number | null;
}

/** Accuracy and op counts of the batch-1 engine on the test set. */
function evaluate(model: RowClassifier, test: Dataset, method: string, trainLoss: number | null, balanced?: { blockRows: number; keep: number }): Row {
  const rnn = model.rnn;
  if (!(rnn instanceof DeltaLSTM)) throw new Error('evaluate: expected a DeltaLSTM');
  const engine = DeltaLstmEngine.fromModule(rnn, balanced ? { balanced } : {});
  const w = model.head.weight.data;
  const b = model.head.bias!.data;
  let correct = 0;
  let macs = 0;
  let denseMacs = 0;
  let inputSent = 0;
  let hiddenSent = 0;
  const per = steps * steps;
  const bar = new ProgressBar({ total: test.length, label: `eval ${method}`, rateUnit: 'seq' });
  for (let n = 0; n < test.length; n++) {
    if (n % 100 === 99) bar.tick(100);
    const { output, counts } = engine.run(test.images.subarray(n * per, (n + 1) * per), steps);
    let best = 0;
    let max = -Infinity;
    for (let k = 0; k < 10; k++) {
      let z = b[k]!;
      for (let j = 0; j < hidden; j++) z += w[k * hidden + j]! * output[(steps - 1) * hidden + j]!;
      if (z > max) {
        max = z;
        best = k;
      }
    }
    correct += best === test.labels[n] ? 1 : 0;
    macs += counts.macs;
    denseMacs += counts.denseMacs;
    inputSent += counts.inputSent;
    hiddenSent += counts.hiddenSent;
  }
  bar.done();
  const inputColumns = test.length * steps * steps;
  const hiddenColumns = test.length * steps * hidden;
  const stored = engine.weightIh.values.length + engine.weightHh.values.length;
  let nonZero = 0;
  for (const m of [engine.weightIh, engine.weightHh]) for (const v of m.values) nonZero += v !== 0 ? 1 : 0;
  const total = 4 * hidden * (steps + hidden);
  const row: Row = {
    method,
    theta: rnn.thresholdX,
    weightSparsity: 1 - (balanced ? stored : nonZero) / total,
    accuracy: correct / test.length,
    temporalSparsity: 1 - (inputSent + hiddenSent) / (inputColumns + hiddenColumns),
    inputSkipped: 1 - inputSent / inputColumns,
    hiddenSkipped: 1 - hiddenSent / hiddenColumns,
    macsPerSequence: macs / test.length,
    opReduction: denseMacs / macs,
    trainLoss,
  };
  const pct = (v: number): string => `${(100 * v).toFixed(1)} %`;
  console.log(
    `${method.padEnd(28)} Θ=${row.theta.toFixed(2)}  weights ${pct(row.weightSparsity).padStart(7)} sparse  acc ${pct(row.accuracy).padStart(7)}  ` +
      `skipped cols ${pct(row.temporalSparsity).padStart(7)} (x ${pct(row.inputSkipped)}, h ${pct(row.hiddenSkipped)})  MACs/seq ${Math.round(row.macsPerSequence)}  ×${row.opReduction.toFixed(1)}`,
  );
  return row;
}

manualSeed(seed);
const trainSet = loadMnist({ split: 'train', limit: trainCount });
const testSet = loadMnist({ split: 'test', limit: testCount });
const rows: Row[] = [];
const started = process.cpuUsage();

const dense = new RowClassifier(new LSTM(steps, hidden, { batchFirst: true, rng: new Rng(seed) }), new Rng(seed + 1));
const denseLoss = train(dense, trainSet, epochs, 'dense LSTM');
const ftLimit = ftBatches === 0 ? Infinity : ftBatches;

for (const theta of thetas) {
  const model = deltaCopy(dense, theta);
  rows.push(evaluate(model, testSet, 'DeltaLSTM, no fine-tune', denseLoss));
  if (theta > 0) {
    const loss = train(model, trainSet, ftEpochs, `DeltaLSTM Θ=${theta} fine-tune`, ftLimit);
    rows.push(evaluate(model, testSet, 'DeltaLSTM, Θ fine-tuned', loss));
  }
}

for (const sparsity of sparsities) {
  const model = deltaCopy(dense, 0);
  const rnn = model.rnn as DeltaLSTM;
  const batches = Math.min(Math.ceil(trainSet.length / batchSize), ftLimit);
  const cbtd = new ColumnBalancedTargetedDropout({ sparsity, blockRows, dropRate: 0.5, rampSteps: Math.max(1, Math.floor((ftEpochs * batches) / 2)), rng: new Rng(seed + 2) });
  rnn.weightTransform = (weight, training) => cbtd.apply(weight, training);
  train(model, trainSet, ftEpochs, `CBTD γ=${sparsity} targeted dropout`, ftLimit, () => cbtd.step());
  const weights = rnn.parameters().filter((p) => p.rank === 2);
  cbtd.prune(weights);
  const loss = train(model, trainSet, ftEpochs, `CBTD γ=${sparsity} pruned fine-tune`, ftLimit);
  const balanced = { blockRows, keep: cbtd.keepPerBlock };
  rows.push(evaluate(model, testSet, `CBTD γ=${sparsity}`, loss, balanced));
  rnn.setThreshold(combinedTheta);
  rows.push(evaluate(model, testSet, `CBTD γ=${sparsity} + Θ, no ft`, loss, balanced));
  const lossCombined = train(model, trainSet, ftEpochs, `CBTD γ=${sparsity} + Θ=${combinedTheta} fine-tune`, ftLimit);
  rows.push(evaluate(model, testSet, `CBTD γ=${sparsity} + Θ fine-tuned`, lossCombined, balanced));
}

const used = process.cpuUsage(started);
const cpuSeconds = (used.user + used.system) / 1e6;
console.log(`CPU time ${cpuSeconds.toFixed(0)} s (process.cpuUsage, shared machine)`);
const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'spartus-mnist.json');
const config = { trainCount, testCount, epochs, ftEpochs, ftBatches, blockRows, combinedTheta, seed, hidden, batchSize };
writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify({ bench: 'spartus-mnist', config, cpuSeconds, rows }, null, 2)}\n`));
console.log(`wrote ${out}`);
