/**
 * SPOS (single-path one-shot supernet + evolutionary search) against uniform widths on LeNet-5 /
 * MNIST at the weight size of uniform 3-bit and 2-bit weights (activations 8 bit), with the
 * fp32 start, data splits and QAT fine-tune of bench/search/mixed.ts (imported from it, so the
 * uniform arms are the very runs of docs/search.md's Summary, taken from its fine-tune cache):
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/search/spos.ts [--budgets 3,2] [--seeds 0,1,2]
 *       [--supernet-steps 2721] [--supernet-lr 1e-4] [--population 50] [--iterations 20] [--wbits 2,3,4,8] [--fitness accuracy|loss]
 *
 * One supernet (weights {2, 3, 4, 8} per layer, A8) is trained from the fp32 checkpoint by uniform
 * path sampling on the training images minus the last 2,000; for each budget the evolution ranks
 * paths by their inherited accuracy on those last 2,000 training images (mixed.ts's search split;
 * never the test set). The chosen plan then gets mixed.ts's calibration + 1-epoch QAT fine-tune
 * from the fp32 model (as every arm), seeds as given; test accuracy on the full test set.
 * Writes docs/results/search-spos.json and prints a markdown table.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.LOWBIT_THREADS ??= '2';

const { DATASET_STATS, DataLoader, loadDataset, subset } = await import('../../src/data/index.ts');
const { writeFileAtomic } = await import('../../src/format/files.ts');
const { ProgressBar } = await import('../../src/train/progress.ts');
const { evaluate } = await import('../../src/train/fit.ts');
const search = await import('../../src/quant/search/index.ts');
const { buildSupernet, trainSupernet, searchSupernet } = await import('../../src/quant/search/spos.ts');
const { backendDetails, describeBackend, useBackend } = await import('../../src/cli/backend-info.ts');
const mixed = await import('./mixed.ts');

import type { BitAssignment, SearchData } from '../../src/quant/search/index.ts';
import { flagOr } from '../flags.ts';
import { gitCommit } from '../lib.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '..', '..');
const RESULTS = join(ROOT, 'docs', 'results', 'search-spos.json');
const BUDGETS = flagOr('budgets', '3,2').split(',').map(Number);
const SEEDS = flagOr('seeds', '0,1,2').split(',').map(Number);
const W_BITS = flagOr('wbits', '2,3,4,8').split(',').map(Number);
const SEARCH = 2000;
const SUPERNET_STEPS = Number(flagOr('supernet-steps', String(3 * Math.ceil((60000 - SEARCH) / 64))));
const SUPERNET_LR = Number(flagOr('supernet-lr', '1e-4'));
const POPULATION = Number(flagOr('population', '50'));
const ITERATIONS = Number(flagOr('iterations', '20'));
/** Fitness of a path: inherited accuracy on the search split (ties: lower loss), or its loss. */
const FITNESS = flagOr('fitness', 'accuracy') as 'accuracy' | 'loss';
const COMMAND = `node --import tsx bench/search/spos.ts ${process.argv.slice(2).join(' ')}`.trim();
const log = (s: string): void => void process.stdout.write(`${s}\n`);
const pct = (x: number): string => `${(x * 100).toFixed(2)} %`;

useBackend(undefined);
const cpuSeconds = (from: NodeJS.CpuUsage): number => {
  const u = process.cpuUsage(from);
  return (u.user + u.system) / 1e6;
};

const setup = mixed.SETUPS['lenet5']!;
const fp32 = mixed.fp32Model(setup);
const base = mixed.loaders(setup, 0);
const floatTest = evaluate(fp32, base.test).accuracy;
log(`LeNet-5 fp32 ${pct(floatTest)} on the test set; backend ${describeBackend(backendDetails())}; commit ${gitCommit()}`);

// Supernet: a second copy of the fp32 model, trained on the training images minus the search split.
const train = loadDataset('mnist', 'train');
const norm = DATASET_STATS.mnist;
const supernetData: SearchData = {
  calibration: base.calibration,
  eval: base.search,
  train: new DataLoader(subset(train, 0, train.length - SEARCH), { batchSize: 64, shuffle: true, seed: 0, normalize: norm }),
};
const supernet = buildSupernet(mixed.fp32Model(setup), supernetData.calibration, { wBits: W_BITS, aBits: [8] });
const layers = supernet.space.layers;
const bits = (a: BitAssignment): string => layers.map((l) => `${a[l.name]!.w}`).join('/');
const t0 = performance.now();
const c0 = process.cpuUsage();
const bar = new ProgressBar({ total: SUPERNET_STEPS, label: 'supernet', rateUnit: 'step' });
let ema = NaN;
const trained = await trainSupernet(supernet, supernetData.train!, {
  steps: SUPERNET_STEPS, lr: SUPERNET_LR, seed: 0,
  onStep: (_s, info) => {
    ema = Number.isNaN(ema) ? info.loss : 0.98 * ema + 0.02 * info.loss;
    bar.tick(1, { loss: ema.toFixed(4) });
  },
});
bar.done();
const trainWall = (performance.now() - t0) / 1000;
const trainCpu = cpuSeconds(c0);
log(`supernet: ${trained.steps} steps (lr ${SUPERNET_LR}) in ${trainWall.toFixed(0)} s wall / ${trainCpu.toFixed(0)} s CPU; samples per width per layer: ${trained.counts.map((c) => c.join('/')).join(', ')}`);

type Json = Record<string, unknown>;
/** Merges this run's entries into docs/results/search-spos.json (after every budget, so a cut run keeps what it finished). */
function save(entries: Json, trained: { steps: number; counts: number[][] }, trainWall: number, trainCpu: number): void {
  let all: Json = {};
  try {
    all = JSON.parse(readFileSync(RESULTS, 'utf8')) as Json;
  } catch {}
  const key = `lenet5 steps${trained.steps} lr${SUPERNET_LR} w{${W_BITS.join(',')}}${FITNESS === 'accuracy' ? '' : ` fitness ${FITNESS}`}`;
  all[key] = {
    ...((all[key] as Json | undefined) ?? {}), ...entries,
    supernet: { steps: trained.steps, lr: SUPERNET_LR, trainWallSeconds: trainWall, trainCpuSeconds: trainCpu, counts: trained.counts },
    population: POPULATION, iterations: ITERATIONS, floatTest, command: COMMAND, commit: gitCommit(), date: new Date().toISOString(),
  };
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileAtomic(RESULTS, new TextEncoder().encode(`${JSON.stringify(all, null, 1)}\n`));
}

const entries: Json = {};
for (const b of BUDGETS) {
  const size = search.sizeCost();
  const uniform = search.uniformAssignment(layers, b, 8);
  const budget = search.totalCost(size, layers, uniform);
  const t1 = performance.now();
  const c1 = process.cpuUsage();
  const found = await searchSupernet(supernet, supernetData, {
    budgets: [{ cost: size, value: budget }], evolution: { population: POPULATION, iterations: ITERATIONS }, seed: 0, fitness: FITNESS,
  });
  const searchWall = (performance.now() - t1) / 1000;
  const searchCpu = cpuSeconds(c1);
  const chosen = found.chosen.assignment;
  const inheritedUniform = found.uniform.find((u) => u.uniform === `W${b}A8`)?.accuracy ?? null;
  log(`\n== size of uniform ${b}-bit weights (${(budget / 8000).toFixed(2)} kB): SPOS ${bits(chosen)} (${(search.totalCost(size, layers, chosen) / 8000).toFixed(2)} kB), inherited ${pct(found.chosen.accuracy)} ` +
    `vs uniform path ${inheritedUniform === null ? '–' : pct(inheritedUniform)}; ${found.evaluations} paths in ${found.iterations} iterations, ${searchWall.toFixed(0)} s wall / ${searchCpu.toFixed(0)} s CPU`);
  const top = [...found.candidates].filter((c) => !c.uniform).sort((x, y) => y.accuracy - x.accuracy).slice(0, 5).map((c) => `${bits(c.assignment)} ${pct(c.accuracy)}`);
  log(`  top inherited: ${top.join(', ')}`);
  const ptq = search.evaluateAssignmentSync(fp32, chosen, { calibration: base.calibration, eval: base.test }, { method: 'ptq' }).accuracy;
  const arms: Json[] = [];
  for (const [arm, assignment] of [['uniform', uniform], ['SPOS', chosen]] as const) {
    const accs: number[] = [];
    for (const seed of SEEDS) {
      const t = performance.now();
      const r = mixed.qatScore(setup, fp32, assignment, mixed.loaders(setup, seed), seed);
      accs.push(r.accuracy);
      log(`  ${arm} ${bits(assignment)} seed ${seed}: ${pct(r.accuracy)} ${r.cached ? '(fine-tune cache)' : `(${((performance.now() - t) / 1000).toFixed(0)} s)`}`);
    }
    arms.push({ arm, bits: bits(assignment), assignment, cost: search.totalCost(size, layers, assignment), accuracies: accs, seeds: SEEDS, mean: accs.reduce((s, x) => s + x, 0) / accs.length });
  }
  const [u, s] = arms as { mean: number }[];
  log(`  mean: uniform ${pct(u!.mean)}, SPOS ${pct(s!.mean)} (${((s!.mean - u!.mean) * 100).toFixed(2)} pt)`);
  entries[`size${b}`] = {
    budget, arms, chosenTestPtq: ptq, inheritedChosen: found.chosen.accuracy, inheritedUniform, inheritedWidest: found.widestAccuracy,
    evaluations: found.evaluations, iterations: found.iterations, searchWallSeconds: searchWall, searchCpuSeconds: searchCpu, history: found.history,
    topInherited: top,
  };
  save(entries, trained, trainWall, trainCpu);
}

log('\n| budget | arm | weight bits (conv1/conv2/fc1/fc2/fc3) | size | test after QAT, per seed | mean | vs uniform |');
log('|---|---|---|---|---|---|---|');
for (const [name, e] of Object.entries(entries)) {
  const arms = (e as { arms: { arm: string; bits: string; cost: number; accuracies: number[]; mean: number }[] }).arms;
  for (const a of arms) {
    log(`| ${name} | ${a.arm} | ${a.bits} | ${(a.cost / 8000).toFixed(2)} kB | ${a.accuracies.map(pct).join(' / ')} | ${pct(a.mean)} | ${((a.mean - arms[0]!.mean) * 100).toFixed(2)} pt |`);
  }
}
