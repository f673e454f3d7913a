/**
 * Quantized activation gradients (DoReFa-Net / QNN W·A·G training) on LeNet-5 / MNIST.
 *
 *   nice -n 10 node --import tsx bench/grad-quant/run.ts [--scheme w4a4|w1a8] [--epochs 5] [--seed 0]
 *        [--limit N] [--only id,id] [--out NAME.json]
 *
 * Schemes: 'w4a4' is `lowbit train --quant w4a4` (LSQ 4-bit weights and activations, first and last
 * layers and the input at 8 bits; Adam 2e-3, cosine, batch 64, quantizer parameters at 0.1× LR);
 * 'w1a8' is the clipped-STE row of bench/adaste/run.ts (binary weights with per-channel α on conv2,
 * fc1, fc2, 8-bit EMA activations; Adam 1e-3).
 * Rows (ids, prefixed by the scheme): 'float' (float gradients), 'a8' / 'a6' / 'a4' (k-bit
 * activation gradients at every quantized layer output, per-tensor max scale, DoReFa grid),
 * 'a8g8' / 'a6g6' / 'a4g4' (the same plus k-bit parameter gradients: full W/A/G), 'a4-sample'
 * (per-sample scale), 'a4-symmetric' (grid with zero). Writes bench/results/grad-quant-<scheme>-seed<seed>.json
 * (or --out) after every run (records of other ids kept).
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
import { prepareQat, qatFromCliOptions, qatParamGroups, setQuantProgress, type ActivationGradientOptions } from '../../src/quant/qat/index.ts';
import { uint8Ema } from '../../src/quant/config/index.ts';
import type { QuantPlan } from '../../src/quant/config/plan.ts';

const { values: args } = parseArgs({
  options: {
    scheme: { type: 'string', default: 'w4a4' },
    epochs: { type: 'string', default: '5' },
    seed: { type: 'string', default: '0' },
    limit: { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string' },
  },
});
const scheme = args.scheme!;
if (scheme !== 'w4a4' && scheme !== 'w1a8') throw new Error(`--scheme must be w4a4 or w1a8, got ${scheme}`);
const epochs = Number(args.epochs);
const seed = Number(args.seed);
const limit = args.limit === undefined ? undefined : Number(args.limit);

const plan: QuantPlan = scheme === 'w4a4'
  ? qatFromCliOptions({ quant: 'w4a4' })!
  : { default: { weight: { kind: 'binary', bits: 1, granularity: 'channel' }, activation: uint8Ema } };
const lr = scheme === 'w4a4' ? 2e-3 : 1e-3;

interface Row {
  readonly id: string;
  readonly activationGradients?: Omit<ActivationGradientOptions, 'seed'>;
  readonly gradBits?: number;
}

const ROWS: Row[] = [
  { id: 'float' },
  ...[8, 6, 4].flatMap((bits): Row[] => [
    { id: `a${bits}`, activationGradients: { bits } },
    { id: `a${bits}g${bits}`, activationGradients: { bits }, gradBits: bits },
  ]),
  { id: 'a4-sample', activationGradients: { bits: 4, granularity: 'sample' } },
  { id: 'a4-symmetric', activationGradients: { bits: 4, grid: 'symmetric' } },
];
const only = args.only?.split(',');
const rows = only ? ROWS.filter((r) => only.includes(r.id)) : ROWS;
if (rows.length === 0) throw new Error(`--only ${args.only}: no such rows (${ROWS.map((r) => r.id).join(', ')})`);

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const outName = args.out ?? `grad-quant-${scheme}-seed${seed}.json`;
const outPath = join(root, 'bench', 'results', outName);
const fullTrain = loadDataset('mnist', 'train');
const testSet = loadDataset('mnist', 'test');
const trainSet = limit === undefined ? fullTrain : take(fullTrain, limit);
const normalize = DATASET_STATS.mnist;

const previous = existsSync(outPath) ? (JSON.parse(readFileSync(outPath, 'utf8')) as { runs?: Record<string, unknown> }) : {};
const results = { runs: { ...(previous.runs ?? {}) } as Record<string, unknown> };

for (const row of rows) {
  const key = `${scheme}-${row.id}-seed${seed}`;
  manualSeed(seed);
  const model = createModel('lenet5', { numClasses: 10 });
  const activationGradients = row.activationGradients ? { ...row.activationGradients, seed } : undefined;
  prepareQat(model, plan, activationGradients ? { activationGradients } : {});
  const optimizer = new Adam(qatParamGroups(model, { lr, quantLrScale: 0.1 }), { lr });
  const scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
  const stepper = row.gradBits === undefined ? optimizer : withQuantizedGradients(optimizer, { bits: row.gradBits, seed });
  setQuantProgress(model, 0, epochs);
  process.stdout.write(`${key}: ${scheme}, activation gradients ${activationGradients ? JSON.stringify(activationGradients) : 'float'}, parameter gradients ${row.gradBits ?? 'float'}, ${epochs} epochs, ${trainSet.length} train samples, backend ${getBackend()}\n`);
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
  results.runs[key] = {
    scheme,
    plan,
    activationGradients: activationGradients ?? null,
    gradBits: row.gradBits ?? null,
    epochs,
    seed,
    trainSamples: trainSet.length,
    testSamples: testSet.length,
    optimizer: `adam lr ${lr} cosine, batch 64, quantizer params 0.1x lr`,
    testAccuracy: history.epochs.at(-1)?.testAccuracy ?? null,
    perEpoch: history.epochs.map((e) => ({ epoch: e.epoch, trainLoss: e.trainLoss, testAccuracy: e.testAccuracy ?? null })),
    seconds,
    backend: getBackend(),
    command: `nice -n 10 node --import tsx bench/grad-quant/run.ts --scheme ${scheme} --epochs ${epochs} --seed ${seed}${limit === undefined ? '' : ` --limit ${limit}`} --only ${row.id}${args.out === undefined ? '' : ` --out ${args.out}`}`,
  };
  makeDirs(dirname(outPath));
  writeFileAtomic(outPath, new TextEncoder().encode(`${JSON.stringify(results, null, 2)}\n`));
  process.stdout.write(`${key}: test accuracy ${(((history.epochs.at(-1)?.testAccuracy ?? NaN) * 100)).toFixed(2)} % (${seconds.toFixed(0)} s)\n`);
}
