/**
 * LeNet-5 on MNIST trained with Adam (float32), Madam (float32) and LNS-Madam (weights in a b-bit
 * logarithmic format): test accuracy after the same schedule as `lowbit train --quant fp32
 * --optimizer <name> --epochs E` (batch 64, cosine decay per epoch, seed 0, full data by default).
 * Results go to bench/results/lns-madam.json (one row per run, merged with earlier rows by name).
 *
 *   nice -n 10 node --import tsx bench/lns-madam.ts [--epochs 2] [--seed 0] [--limit N] [--only adam,madam,lns-8-8-0.125]
 *
 * Run names: 'adam', 'madam', 'madam-<lr>', and 'lns-<bits>-<gamma>-<lr>[-sr]' (LnsMadam with
 * that format and lr in octaves; '-sr' for stochastic rounding). Accuracy is a property of the
 * run, not of the machine's load; the seconds column is wall time under whatever load there was.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATASET_STATS, DataLoader, loadDataset, take } from '../src/data/index.ts';
import { createModel } from '../src/nn/index.ts';
import { Adam, CosineAnnealingLR, LnsMadam, Madam, lnsMinExponent, type Optimizer, type BaseHyper, type ParamState } from '../src/optim/index.ts';
import { manualSeed } from '../src/tensor/index.ts';
import { fit } from '../src/train/index.ts';
import { writeFileAtomic } from '../src/format/index.ts';
import { flag } from './flags.ts';

const DEFAULT_RUNS = ['adam', 'madam', 'lns-8-8-0.125', 'lns-8-8-0.0144-sr', 'lns-6-4-0.25', 'lns-5-2-0.5', 'lns-4-1-1'];

interface Row {
  name: string;
  optimizer: string;
  epochs: number;
  seed: number;
  trainSamples: number;
  testAccuracy: number;
  finalTrainLoss: number;
  seconds: number;
  /** LNS runs: share of weights at the top (e = 0) and bottom (e = min) of the exponent range. */
  atTop?: number;
  atBottom?: number;
}

function makeOptimizer(name: string, params: ReturnType<ReturnType<typeof createModel>['parameters']>): { optimizer: Optimizer<BaseHyper, ParamState>; text: string } {
  if (name === 'adam') return { optimizer: new Adam(params, { lr: 2e-3 }), text: 'Adam lr 0.002' };
  if (name === 'madam') return { optimizer: new Madam(params), text: 'Madam lr 0.01' };
  const madam = /^madam-([0-9.e-]+)$/.exec(name);
  if (madam) return { optimizer: new Madam(params, { lr: Number(madam[1]) }), text: `Madam lr ${madam[1]}` };
  const lns = /^lns-(\d+)-([0-9.]+)-([0-9.e-]+)(-sr)?$/.exec(name);
  if (lns) {
    const [bits, gamma, lr] = [Number(lns[1]), Number(lns[2]), Number(lns[3])];
    const stochasticRounding = lns[4] !== undefined;
    return {
      optimizer: new LnsMadam(params, { bits, gamma, lr, stochasticRounding }),
      text: `LnsMadam ${bits}-bit gamma ${gamma} lr ${lr}${stochasticRounding ? ' stochastic rounding' : ''}`,
    };
  }
  throw new Error(`unknown run '${name}' (adam, madam, madam-<lr>, lns-<bits>-<gamma>-<lr>[-sr])`);
}

const epochs = Number(flag('epochs') ?? 2);
const seed = Number(flag('seed') ?? 0);
const limit = flag('limit') === undefined ? undefined : Number(flag('limit'));
const runs = flag('only')?.split(',') ?? DEFAULT_RUNS;

const fullTrain = loadDataset('mnist', 'train');
const trainSet = limit === undefined ? fullTrain : take(fullTrain, limit);
const testSet = loadDataset('mnist', 'test');
const normalize = DATASET_STATS.mnist;

const resultsPath = join(dirname(fileURLToPath(import.meta.url)), 'results', 'lns-madam.json');
const rows: Row[] = existsSync(resultsPath) ? (JSON.parse(readFileSync(resultsPath, 'utf8')) as { rows: Row[] }).rows : [];

for (const name of runs) {
  manualSeed(seed);
  const model = createModel('lenet5', { numClasses: 10 });
  const { optimizer, text } = makeOptimizer(name, model.parameters());
  const trainLoader = new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed, normalize });
  const testLoader = new DataLoader(testSet, { batchSize: 256, normalize });
  const start = performance.now();
  const history = fit(model, { trainLoader, testLoader, optimizer, scheduler: new CosineAnnealingLR(optimizer, { tMax: epochs }), epochs, progress: false });
  const seconds = (performance.now() - start) / 1000;
  const last = history.epochs.at(-1)!;
  const row: Row = {
    name, optimizer: text, epochs, seed, trainSamples: trainSet.length,
    testAccuracy: last.testAccuracy ?? Number.NaN, finalTrainLoss: last.trainLoss, seconds,
  };
  if (optimizer instanceof LnsMadam) {
    let top = 0, bottom = 0, total = 0;
    for (const group of optimizer.paramGroups) {
      const min = lnsMinExponent(group);
      for (const p of group.params) {
        const exponent = optimizer.stateOf(p)?.exponent;
        if (!exponent) continue;
        for (const e of exponent) {
          if (e === 0) top++;
          if (e === min) bottom++;
        }
        total += exponent.length;
      }
    }
    row.atTop = top / total;
    row.atBottom = bottom / total;
  }
  console.log(`${name.padEnd(20)} ${text.padEnd(48)} test acc ${(row.testAccuracy * 100).toFixed(2)} %  train loss ${row.finalTrainLoss.toFixed(4)}  ${seconds.toFixed(1)} s` +
    (row.atTop === undefined ? '' : `  at top ${(row.atTop * 100).toFixed(2)} %  at bottom ${(row.atBottom! * 100).toFixed(2)} %`));
  const index = rows.findIndex((r) => r.name === name && r.epochs === epochs && r.seed === seed && r.trainSamples === row.trainSamples);
  if (index >= 0) rows[index] = row;
  else rows.push(row);
  writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify({ benchmark: 'lns-madam', rows }, null, 2)}\n`));
}
