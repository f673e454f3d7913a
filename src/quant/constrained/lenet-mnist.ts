/**
 * Experiment: LeNet-5 on MNIST, fp32 vs ADMM ternary vs AskewSGD 2-bit, same epochs and data.
 *
 *   node --import tsx src/quant/constrained/lenet-mnist.ts [--epochs 3] [--limit 20000] [--methods fp32,admm,askew]
 *     [--rho 0.1] [--project-every 50]   (ADMM: initial ρ, growing ×1.5 per epoch; G/U update period)
 *
 * Prints one line per run and a final table (test accuracy on the full 10k test set).
 */
import { manualSeed } from '../../tensor/index.ts';
import { lenet5 } from '../../nn/index.ts';
import { DataLoader, DATASET_STATS, loadMnist } from '../../data/index.ts';
import { SGD } from '../../optim/sgd.ts';
import { evaluate, fit } from '../../train/fit.ts';
import { trainAdmm, trainAskew } from './train.ts';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const epochs = Number(arg('epochs', '3'));
const limit = Number(arg('limit', '20000'));
const methods = arg('methods', 'fp32,admm,askew').split(',');
const lr = 0.05;
const momentum = 0.9;
const seed = 0;
const rho = Number(arg('rho', '0.1'));
const projectEvery = Number(arg('project-every', '50'));

const train = loadMnist({ split: 'train', limit });
const test = loadMnist({ split: 'test' });
const loaders = (): { train: DataLoader; test: DataLoader } => ({
  train: new DataLoader(train, { batchSize: 64, shuffle: true, seed, normalize: DATASET_STATS.mnist }),
  test: new DataLoader(test, { batchSize: 500, normalize: DATASET_STATS.mnist }),
});
const log = (line: string): void => void process.stdout.write(`  ${line}\n`);
const rows: string[] = [];

for (const method of methods) {
  manualSeed(seed);
  const model = lenet5();
  const l = loaders();
  const t0 = performance.now();
  let row: string;
  if (method === 'fp32') {
    fit(model, { trainLoader: l.train, testLoader: l.test, optimizer: new SGD(model.parameters(), { lr, momentum }), epochs, seed, progress: false, log });
    row = `fp32 LeNet-5            | ${(evaluate(model, l.test).accuracy * 100).toFixed(2)} %`;
  } else if (method === 'admm') {
    const r = trainAdmm(model, l, { epochs, lr, momentum, seed, log, admm: { table: 'ternary', perChannel: true, rho, rhoGrowth: 1.5, projectEvery } });
    row = `ADMM ternary LeNet-5    | ${(r.accuracy! * 100).toFixed(2)} % (continuous before finalize ${(r.accuracyBeforeFinalize! * 100).toFixed(2)} %, violation per epoch ${r.violation.map((v) => v.toFixed(3)).join(' ')})`;
  } else if (method === 'askew') {
    const r = trainAskew(model, l, { epochs, lr, momentum, seed, log, askew: { bits: 2 } });
    row = `AskewSGD 2-bit LeNet-5  | ${(r.accuracy! * 100).toFixed(2)} % (before snap ${(r.accuracyBeforeFinalize! * 100).toFixed(2)} %, rms grid distance per epoch ${r.violation.map((v) => v.toFixed(4)).join(' ')})`;
  } else {
    throw new Error(`unknown method ${method}`);
  }
  row += ` | ${((performance.now() - t0) / 1000).toFixed(0)} s`;
  process.stdout.write(`${row}\n`);
  rows.push(row);
}
process.stdout.write(`\nLeNet-5 / MNIST, ${epochs} epochs on ${train.length} training images, SGD lr ${lr} momentum ${momentum}, batch 64, test on ${test.length}:\n${rows.join('\n')}\n`);
