/**
 * AdaSTE and quantized gradients on LeNet-5 / MNIST, W1A8 (binary weights with per-channel α on
 * conv2, fc1, fc2; the first and last layers at 8 bits; 8-bit EMA activations), one seed each.
 *
 *   nice -n 10 node --import tsx bench/adaste/run.ts [--epochs 3] [--seed 0] [--limit N] [--only id,id]
 *
 * Rows (ids): the weight estimator with float gradients — 'ste' ('binary', clipped STE),
 * 'ste-ma' ('binary', identity STE, α constant in the backward: AdaSTE's μ → 0 limit), 'adaste' (the authors' μ schedule: μ₀ 0.01, ×1.05 per epoch), 'adaste-annealed' (μ grown from
 * 0.01 to μ_max = 200 by the last epoch), 'adaste-mild' (μ 0.01 → 2), 'smooth-binary'; and the clipped-STE run with k-bit
 * parameter gradients — 'grad8', 'grad6', 'grad4' (withQuantizedGradients). Writes
 * bench/results/adaste.json after every run (records of other ids kept).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import '../../src/backend/index.ts';
import { getBackend } from '../../src/backend/index.ts';
import { DATASET_STATS, DataLoader, loadDataset, take } from '../../src/data/index.ts';
import { createModel } from '../../src/nn/index.ts';
import { Adam, CosineAnnealingLR, withQuantizedGradients } from '../../src/optim/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';
import { fit } from '../../src/train/fit.ts';
import { makeDirs, writeFileAtomic } from '../../src/format/index.ts';
import { prepareQat, qatParamGroups, setQuantProgress } from '../../src/quant/qat/index.ts';
import { uint8Ema } from '../../src/quant/config/index.ts';
import type { QuantizerSpec } from '../../src/quant/quantizers/index.ts';

const { values: args } = parseArgs({
  options: {
    epochs: { type: 'string', default: '3' },
    seed: { type: 'string', default: '0' },
    limit: { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string', default: 'adaste.json' },
  },
});
const epochs = Number(args.epochs);
const seed = Number(args.seed);
const limit = args.limit === undefined ? undefined : Number(args.limit);

interface Row {
  readonly id: string;
  readonly weight: QuantizerSpec;
  readonly gradBits?: number;
}

const binary: QuantizerSpec = { kind: 'binary', bits: 1, granularity: 'channel' };
/** μ growth per epoch that takes μ from 0.01 to 200 at the last epoch (epochs − 1 growths). */
const annealGrowth = epochs > 1 ? (200 / 0.01) ** (1 / (epochs - 1)) : 1;
const ROWS: Row[] = [
  { id: 'ste', weight: binary },
  // Control for 'adaste' at small μ: identity STE with α held constant in the backward pass.
  { id: 'ste-ma', weight: { kind: 'binary', bits: 1, granularity: 'channel', gradient: 'ste', magnitudeAware: true } },
  { id: 'adaste', weight: { kind: 'adaste', bits: 1, granularity: 'channel' } },
  { id: 'adaste-annealed', weight: { kind: 'adaste', bits: 1, granularity: 'channel', muGrowth: annealGrowth } },
  // μ grown from 0.01 to 2 by the last epoch: AdaSTE's asymmetry (toward-the-flip slope 0.5 vs 1/(1+μ)) only for μ > 1.
  { id: 'adaste-mild', weight: { kind: 'adaste', bits: 1, granularity: 'channel', muGrowth: epochs > 1 ? (2 / 0.01) ** (1 / (epochs - 1)) : 1 } },
  { id: 'smooth-binary', weight: { kind: 'smoothBinary', bits: 1, granularity: 'channel' } },
  { id: 'grad8', weight: binary, gradBits: 8 },
  { id: 'grad6', weight: binary, gradBits: 6 },
  { id: 'grad4', weight: binary, gradBits: 4 },
];
const only = args.only?.split(',');
const rows = only ? ROWS.filter((r) => only.includes(r.id)) : ROWS;
if (rows.length === 0) throw new Error(`--only ${args.only}: no such rows (${ROWS.map((r) => r.id).join(', ')})`);

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const outPath = join(root, 'bench', 'results', args.out!);
const fullTrain = loadDataset('mnist', 'train');
const fullTest = loadDataset('mnist', 'test');
const trainSet = limit === undefined ? fullTrain : take(fullTrain, limit);
const testSet = fullTest;
const normalize = DATASET_STATS.mnist;

const previous = existsSync(outPath) ? (JSON.parse(readFileSync(outPath, 'utf8')) as { runs?: Record<string, unknown> }) : {};
const results = { runs: { ...(previous.runs ?? {}) } as Record<string, unknown> };

for (const row of rows) {
  manualSeed(seed);
  const model = createModel('lenet5', { numClasses: 10 });
  prepareQat(model, { default: { weight: row.weight, activation: uint8Ema } });
  const lr = 1e-3;
  const optimizer = new Adam(qatParamGroups(model, { lr, quantLrScale: 0.1 }), { lr });
  const scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
  const stepper = row.gradBits === undefined ? optimizer : withQuantizedGradients(optimizer, { bits: row.gradBits, seed });
  setQuantProgress(model, 0, epochs);
  process.stdout.write(`${row.id}: ${JSON.stringify(row.weight)}${row.gradBits ? `, ${row.gradBits}-bit gradients` : ''}, ${epochs} epochs, ${trainSet.length} train samples, seed ${seed}, backend ${getBackend()}\n`);
  const start = performance.now();
  const history = fit(model, {
    trainLoader: new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed, normalize }),
    testLoader: new DataLoader(testSet, { batchSize: 256, normalize }),
    optimizer: stepper,
    scheduler,
    epochs,
    progress: false,
    log: (line) => process.stdout.write(`  ${line}\n`),
    onEpochEnd: (record) => setQuantProgress(model, record.epoch, epochs),
  });
  const seconds = (performance.now() - start) / 1000;
  results.runs[row.id] = {
    weight: row.weight,
    activation: uint8Ema,
    gradBits: row.gradBits ?? null,
    epochs,
    seed,
    trainSamples: trainSet.length,
    testSamples: testSet.length,
    optimizer: 'adam lr 1e-3 cosine, batch 64, quantizer params 0.1x lr',
    testAccuracy: history.epochs.at(-1)?.testAccuracy ?? null,
    perEpoch: history.epochs.map((e) => ({ epoch: e.epoch, trainLoss: e.trainLoss, testAccuracy: e.testAccuracy ?? null })),
    seconds,
    command: `nice -n 10 node --import tsx bench/adaste/run.ts --epochs ${epochs} --seed ${seed}${limit === undefined ? '' : ` --limit ${limit}`} --only ${row.id}`,
  };
  makeDirs(dirname(outPath));
  writeFileAtomic(outPath, new TextEncoder().encode(`${JSON.stringify(results, null, 2)}\n`));
  process.stdout.write(`${row.id}: test accuracy ${(((history.epochs.at(-1)?.testAccuracy ?? NaN) * 100)).toFixed(2)} % (${seconds.toFixed(0)} s)\n`);
}
