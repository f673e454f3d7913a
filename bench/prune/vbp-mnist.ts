/**
 * Simultaneous learning and pruning (variational Bernoulli unit gates, src/nn/prune) on MNIST
 * against the same network trained dense for the same epochs: units kept per layer, parameters
 * and multiply-accumulates remaining, test accuracy, and CPU time of each training epoch as the
 * network shrinks (process.cpuUsage, user + system of all threads, evaluation excluded).
 * Rows go to bench/results/prune-vbp-<model>[-<tag>].json (merged by name).
 *
 *   nice -n 10 node --import tsx bench/prune/vbp-mnist.ts --model lenet300 [--epochs 3] [--limit N]
 *     [--seed 0] [--dense 1] [--pruned 1] [--posterior-std 0.02] [--theta-lr 0.1] [--temperature 0.2] [--lr 0.001]
 *
 * Models: lenet300 (mlp 784-300-100-10), lenet300x2 (784-600-200-10), lenet5.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATASET_STATS, DataLoader, loadDataset, take } from '../../src/data/index.ts';
import { lenet5, mlp, type TensorModule } from '../../src/nn/index.ts';
import { finalizePruned, layerSizes, VariationalPruner, type LayerSize } from '../../src/nn/prune/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';
import { evaluate, fit } from '../../src/train/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { flag, flagOr, numberFlag } from '../flags.ts';

interface EpochRow { epoch: number; cpuSeconds: number; wallSeconds: number; testAccuracy: number; units: Record<string, number>; params: number; macs: number }
interface Row {
  name: string; model: string; mode: 'dense' | 'pruned'; epochs: number; seed: number; trainSamples: number;
  options: Record<string, number>;
  testAccuracy: number; before: LayerSize[]; after: LayerSize[];
  paramsKept: number; macsKept: number; perEpoch: EpochRow[]; pruneEvents: number;
}

const modelName = flagOr('model', 'lenet300');
const epochs = numberFlag('epochs', 3, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const limit = flag('limit') === undefined ? undefined : numberFlag('limit', 0, { integer: true, min: 1 });
const withDense = numberFlag('dense', 1, { integer: true }) === 1;
const withPruned = numberFlag('pruned', 1, { integer: true }) === 1;
const posteriorStd = numberFlag('posterior-std', 0.02);
const thetaLr = numberFlag('theta-lr', 0.1);
const lr = numberFlag('lr', 1e-3);
const temperature = numberFlag('temperature', 0.2);
const tag = flagOr('tag', '');

function build(): TensorModule {
  if (modelName === 'lenet300') return mlp({ hidden: [300, 100] });
  if (modelName === 'lenet300x2') return mlp({ hidden: [600, 200] });
  if (modelName === 'lenet5') return lenet5();
  throw new Error(`unknown --model '${modelName}' (lenet300, lenet300x2, lenet5)`);
}

const fullTrain = loadDataset('mnist', 'train');
const trainSet = limit === undefined ? fullTrain : take(fullTrain, limit);
const testSet = loadDataset('mnist', 'test');
const normalize = DATASET_STATS.mnist;
const inputShape = [1, 28, 28];
const total = (s: LayerSize[], k: 'params' | 'macs'): number => s.reduce((a, l) => a + l[k], 0);

function run(mode: 'dense' | 'pruned'): Row {
  manualSeed(seed);
  const model = build();
  const before = layerSizes(model, inputShape);
  const pruner = mode === 'pruned' ? new VariationalPruner(model, { datasetSize: trainSet.length, inputShape, posteriorStd, thetaLr, temperature }) : null;
  const weights = pruner ? pruner.weightParameters() : model.parameters();
  const adam = new Adam(weights, { lr });
  const optimizer = pruner ? pruner.wrap(adam) : adam;
  const trainLoader = new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed, normalize });
  const testLoader = new DataLoader(testSet, { batchSize: 500, normalize });
  const perEpoch: EpochRow[] = [];
  let cpu = process.cpuUsage();
  let wall = performance.now();
  fit(model, {
    trainLoader, optimizer, epochs, progress: false, ...(pruner ? { lossFn: pruner.lossFn() } : {}),
    onEpochEnd: (record) => {
      const used = process.cpuUsage(cpu);
      const cpuSeconds = (used.user + used.system) / 1e6;
      const wallSeconds = (performance.now() - wall) / 1000;
      const acc = evaluate(model, testLoader).accuracy;
      const sizes = layerSizes(model, inputShape);
      const units: Record<string, number> = {};
      for (const s of sizes) units[s.path] = s.units;
      perEpoch.push({ epoch: record.epoch, cpuSeconds, wallSeconds, testAccuracy: acc, units, params: total(sizes, 'params'), macs: total(sizes, 'macs') });
      console.log(`${mode} epoch ${record.epoch}: train loss ${record.trainLoss.toFixed(4)}  test acc ${(acc * 100).toFixed(2)} %  cpu ${cpuSeconds.toFixed(1)} s  wall ${wallSeconds.toFixed(1)} s  units ${JSON.stringify(units)}` +
        (pruner ? `  saturated ${JSON.stringify(Object.fromEntries([...pruner.saturation()].map(([k, v]) => [k, Number(v.toFixed(3))])))}` : ''));
      cpu = process.cpuUsage();
      wall = performance.now();
    },
  });
  if (pruner) finalizePruned(model);
  const after = layerSizes(model, inputShape);
  const testAccuracy = evaluate(model, testLoader).accuracy;
  return {
    name: `${modelName}-${mode}-e${epochs}-s${seed}${tag ? `-${tag}` : ''}`, model: modelName, mode, epochs, seed, trainSamples: trainSet.length,
    options: pruner ? { posteriorStd, thetaLr, lr, initialTheta: 0.9, temperature, pruneThreshold: pruner.pruneThreshold, pruneEvery: pruner.pruneEvery } : { lr },
    testAccuracy, before, after,
    paramsKept: total(after, 'params') / total(before, 'params'), macsKept: total(after, 'macs') / total(before, 'macs'),
    perEpoch, pruneEvents: pruner?.events.length ?? 0,
  };
}

const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', `prune-vbp-${modelName}${tag ? `-${tag}` : ''}.json`);
const rows: Row[] = existsSync(resultsPath) ? (JSON.parse(readFileSync(resultsPath, 'utf8')) as { rows: Row[] }).rows : [];
for (const mode of [...(withPruned ? (['pruned'] as const) : []), ...(withDense ? (['dense'] as const) : [])]) {
  const row = run(mode);
  console.log(`${row.name}: test acc ${(row.testAccuracy * 100).toFixed(2)} %  units ${row.after.map((l) => `${l.path} ${l.units}`).join(', ')}  params kept ${(row.paramsKept * 100).toFixed(1)} %  MACs kept ${(row.macsKept * 100).toFixed(1)} %`);
  const i = rows.findIndex((r) => r.name === row.name);
  if (i >= 0) rows[i] = row;
  else rows.push(row);
  writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify({ benchmark: 'prune-vbp', rows }, null, 2)}\n`));
}
