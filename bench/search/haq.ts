/**
 * HAQ against the other searches on LeNet-5 / MNIST: at the weight size of uniform 3-bit and 4-bit
 * weights (activations 8 bit) and at a latency budget on lowbit's measured latency table, the plan
 * of the DDPG agent (`haqSearch`, PTQ reward) against the exact allocation of per-layer PTQ loss
 * perturbations (`exactSearch`, as `lowbit search --method ilp`), NSGA-II (`nsga2Search`, PTQ
 * scores, no beacons, about as many evaluations as HAQ has episodes) and the uniform plan. Every
 * plan is then scored on the full test set by PTQ and after the same QAT fine-tune (calibration +
 * straight-through fine-tune, Adam 1e-4 cosine, batch 64, `--epochs` epochs; as bench/search/mixed.ts).
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/search/haq.ts [--budgets size3,size4,latency]
 *       [--episodes 300] [--epochs 1] [--seed 0] [--wbits 2,3,4,8] [--quick]
 *   node --import tsx bench/search/haq.ts --synthetic      (agent variants on the test's known-optimum problem)
 *
 * Search signals use training images only (calibration: the first 512; scores: the last 2,000).
 * fp32 start: runs/qat/ckpt/lenet5-mnist_fp32.safetensors (trained here, 5 epochs, when missing).
 * Writes docs/results/search-haq.json (merged by budget) and prints a markdown table.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.LOWBIT_THREADS ??= '2';

const { DATASET_STATS, DataLoader, loadDataset, subset } = await import('../../src/data/index.ts');
const { createModel } = await import('../../src/nn/models/index.ts');
const { Adam, CosineAnnealingLR } = await import('../../src/optim/index.ts');
const { manualSeed } = await import('../../src/tensor/index.ts');
const { fit, evaluate } = await import('../../src/train/fit.ts');
const { saveCheckpoint, loadCheckpoint } = await import('../../src/train/checkpoint.ts');
const { writeFileAtomic } = await import('../../src/format/files.ts');
const { ProgressBar } = await import('../../src/train/progress.ts');
const search = await import('../../src/quant/search/index.ts');
const { haqSearch } = await import('../../src/quant/search/haq.ts');
const { nsga2Search, chooseWithinBudget } = await import('../../src/quant/search/mohaq.ts');
const { exactSearch } = await import('../../src/quant/search/outcome.ts');
const { backendDetails, describeBackend, useBackend } = await import('../../src/cli/backend-info.ts');

import type { TensorModule } from '../../src/nn/module.ts';
import type { BitAssignment, CostModel, LayerInfo, SearchData } from '../../src/quant/search/index.ts';
import { flagOr } from '../flags.ts';
import { gitCommit } from '../lib.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '..', '..');
const QUICK = process.argv.includes('--quick');
const BUDGETS = flagOr('budgets', 'size3,size4,latency').split(',');
const EPISODES = Number(flagOr('episodes', QUICK ? '30' : '300'));
const EPOCHS = Number(flagOr('epochs', QUICK ? '0.05' : '1'));
const SEED = Number(flagOr('seed', '0'));
const RESULTS = join(ROOT, QUICK ? 'runs/search/haq-quick.json' : 'docs/results/search-haq.json');
const COMMAND = `node --import tsx bench/search/haq.ts ${process.argv.slice(2).join(' ')}`.trim();
const W_BITS = flagOr('wbits', '2,3,4,8').split(',').map(Number);
/** Results are keyed by budget, plus the width set when it is not the default. */
const KEY_SUFFIX = W_BITS.join(',') === '2,3,4,8' ? '' : ` w{${W_BITS.join(',')}}`;
const log = (s: string): void => void process.stdout.write(`${s}\n`);
const pct = (x: number): string => `${(x * 100).toFixed(2)} %`;

useBackend(undefined);

/**
 * --synthetic: the agent variants on the known-optimum problem of haq.test.ts (seeds 0–4, 400
 * episodes, hidden 64): share of the gap between uniform 3 bits and the exact optimum closed by
 * the best plan, against as many uniformly random plans forced the same way.
 */
if (process.argv.includes('--synthetic')) {
  const { syntheticHaqProblem } = await import('../../src/quant/search/testing.ts');
  const { haq, forceToBudget } = await import('../../src/quant/search/haq.ts');
  const { Rng } = await import('../../src/tensor/random.ts');
  const { env, optimum, uniform, value } = syntheticHaqProblem();
  const closed = (v: number): number => (v - uniform) / (optimum - uniform);
  const variants: [string, Record<string, unknown>][] = [
    ['lowbit defaults (credit forced, σ decay 0.995)', {}],
    ['credit proposed', { credit: 'proposed' }],
    ['σ decay 0.99', { sigmaDecay: 0.99 }],
    ['as the HAQ code (proposed, 0.99)', { credit: 'proposed', sigmaDecay: 0.99 }],
  ];
  const seeds = [0, 1, 2, 3, 4];
  log('| variant | gap closed, seeds 0–4 | mean |');
  log('|---|---|---|');
  for (const [name, extra] of variants) {
    const gaps: number[] = [];
    for (const seed of seeds) gaps.push(closed((await haq(env, { episodes: 400, hidden: 64, seed, ...extra })).best.reward));
    log(`| ${name} | ${gaps.map((g) => g.toFixed(3)).join(' / ')} | ${(gaps.reduce((a, b) => a + b, 0) / gaps.length).toFixed(3)} |`);
  }
  const random = seeds.map((seed) => {
    const rng = new Rng(seed + 99);
    let best = -Infinity;
    for (let e = 0; e < 400; e++) {
      const plan = env.decisions.map((d) => rng.int(d.choices));
      best = Math.max(best, value(forceToBudget(plan, (p) => env.costs(p)[0]! <= env.budgets[0]!).plan));
    }
    return closed(best);
  });
  log(`| 400 random plans, forced | ${random.map((g) => g.toFixed(3)).join(' / ')} | ${(random.reduce((a, b) => a + b, 0) / random.length).toFixed(3)} |`);
  process.exit(0);
}

const norm = DATASET_STATS.mnist;
const train = loadDataset('mnist', 'train');
const test = loadDataset('mnist', 'test');
const trainSet = QUICK ? subset(train, 0, 3000) : train;
const testSet = QUICK ? subset(test, 0, 1000) : test;
const calibration = new DataLoader(subset(train, 0, 512), { batchSize: 128, normalize: norm });
const searchData: SearchData = {
  calibration,
  eval: new DataLoader(subset(train, train.length - (QUICK ? 500 : 2000)), { batchSize: 250, normalize: norm }),
  train: new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed: SEED, normalize: norm }),
};
const testData: SearchData = { ...searchData, eval: new DataLoader(testSet, { batchSize: 500, normalize: norm }) };

function fp32Model(): TensorModule {
  manualSeed(0);
  const model = createModel('lenet5');
  const path = join(ROOT, 'runs', 'qat', 'ckpt', 'lenet5-mnist_fp32.safetensors');
  if (!existsSync(path)) {
    log(`training the fp32 LeNet-5 (5 epochs, Adam 1e-3 cosine) -> ${path}`);
    const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
    const loader = new DataLoader(train, { batchSize: 64, shuffle: true, seed: 0, normalize: norm });
    fit(model, { trainLoader: loader, optimizer, scheduler: new CosineAnnealingLR(optimizer, { tMax: 5 }), epochs: 5, seed: 0, progress: false });
    mkdirSync(dirname(path), { recursive: true });
    saveCheckpoint(path, { model: model.stateDict(), optimizer: null, epoch: 5, config: { model: 'lenet5', dataset: 'mnist' }, history: null });
  } else {
    model.loadStateDict(loadCheckpoint(path).model);
  }
  model.eval();
  return model;
}


type Json = Record<string, unknown>;
function readResults(): Json {
  try {
    return JSON.parse(readFileSync(RESULTS, 'utf8')) as Json;
  } catch {
    return {};
  }
}

/** Wall and process CPU seconds of `fn`. */
async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; wall: number; cpu: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const cpu = process.cpuUsage(cpu0);
  return { value, wall: (performance.now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 };
}

const model = fp32Model();
const layers: LayerInfo[] = search.describeLayers(model, [1, 28, 28]);
const floatTest = evaluate(model, testData.eval).accuracy;
log(`LeNet-5 fp32: ${pct(floatTest)} on the test set; backend ${describeBackend(backendDetails())}; commit ${gitCommit()}`);
const bits = (a: BitAssignment): string => layers.map((l) => `${a[l.name]!.w}`).join('/');
const qatSteps = Math.ceil(EPOCHS * (trainSet.length / 64));

for (const name of BUDGETS) {
  let cost: CostModel;
  let value: number;
  let uniform: BitAssignment;
  if (name === 'size3' || name === 'size4') {
    cost = search.sizeCost();
    uniform = search.uniformAssignment(layers, name === 'size3' ? 3 : 4, 8);
    value = search.totalCost(cost, layers, uniform);
  } else if (name === 'latency') {
    // The microbenchmark table of lowbit's integer runtime (cached per machine); budget = uniform W4A8's table cost.
    cost = search.latencyCost({ onMeasure: (key) => log(`  measuring latency ${key}`) });
    uniform = search.uniformAssignment(layers, 4, 8);
    value = search.totalCost(cost, layers, uniform);
    const table = layers.map((l) => `${l.name} ${W_BITS.map((w) => `w${w} ${cost.layerCost(l, w, 8).toFixed(3)}`).join(', ')} µs`);
    log(`latency table (µs/sample):\n  ${table.join('\n  ')}`);
  } else {
    throw new Error(`unknown budget '${name}' (size3, size4, latency)`);
  }
  log(`\n== budget ${name}: ${cost.name} ≤ ${value.toFixed(cost.name === 'size' ? 0 : 3)} ${cost.unit}`);
  const arms: { arm: string; assignment: BitAssignment; searchAccuracy?: number; wall?: number; cpu?: number; evaluations?: number; extra?: Json }[] = [];
  arms.push({ arm: 'uniform', assignment: uniform });

  const bar = new ProgressBar({ total: EPISODES, label: 'haq', rateUnit: 'ep' });
  let best = -Infinity;
  const h = await timed(() => haqSearch(model, searchData, {
    budgets: [{ cost, value }], wBits: W_BITS, aBits: [8], episodes: EPISODES, seed: SEED, references: false,
    onEpisode: (e, c) => {
      best = Math.max(best, c.accuracy);
      bar.tick(1, { acc: pct(c.accuracy), best: pct(best), sigma: Number.isNaN(e.sigma) ? 'warm-up' : e.sigma.toFixed(3) });
    },
  }));
  bar.done();
  const window = (from: number, to: number): number => {
    const part = h.value.history.slice(from, to);
    return part.reduce((s, e) => s + e.reward, 0) / Math.max(1, part.length);
  };
  const n = h.value.history.length;
  arms.push({
    arm: 'HAQ', assignment: h.value.chosen.assignment, searchAccuracy: h.value.chosen.accuracy, wall: h.wall, cpu: h.cpu, evaluations: h.value.evaluations,
    extra: {
      episodes: h.value.episodes, firstBestEpisode: h.value.history.find((e) => e.plan.join(',') === h.value.history.reduce((b, e) => (e.reward > b.reward ? e : b)).plan.join(','))?.episode,
      meanRewardWarmup: window(0, 20), meanRewardLast50: window(n - 50, n), lastPlan: layers.map((_l, i) => W_BITS[h.value.history[n - 1]!.plan[i]!]).join('/'),
    },
  });
  log(`HAQ: ${bits(h.value.chosen.assignment)} search ${pct(h.value.chosen.accuracy)}; ${h.value.evaluations} distinct plans in ${h.value.episodes} episodes, ${h.wall.toFixed(0)} s wall / ${h.cpu.toFixed(0)} s CPU; mean reward warm-up ${window(0, 20).toFixed(3)}, last 50 ${window(n - 50, n).toFixed(3)}`);

  const e = await timed(() => exactSearch(model, searchData, { costs: [cost], budget: value, wBits: W_BITS, aBits: [8] }));
  arms.push({ arm: 'ILP (exact, PTQ Δloss)', assignment: e.value.chosen.assignment, searchAccuracy: e.value.chosen.accuracy, wall: e.wall, cpu: e.cpu, evaluations: e.value.candidates.length });
  log(`ILP: ${bits(e.value.chosen.assignment)} search ${pct(e.value.chosen.accuracy)}; ${e.wall.toFixed(0)} s`);

  const population = 20;
  const generations = Math.max(1, Math.round(EPISODES / population) - 1);
  const g = await timed(() => nsga2Search(model, searchData, { costs: [cost], wBits: W_BITS, aBits: [8], populationSize: population, generations, seed: SEED, beacons: false }));
  const chosen = chooseWithinBudget(g.value.front, cost.name, value) ?? chooseWithinBudget(g.value.candidates, cost.name, value);
  if (!chosen) throw new Error('NSGA-II found no plan within the budget');
  arms.push({ arm: 'NSGA-II (PTQ)', assignment: chosen.assignment, searchAccuracy: chosen.accuracy, wall: g.wall, cpu: g.cpu, evaluations: g.value.evaluations });
  log(`NSGA-II: ${bits(chosen.assignment)} search ${pct(chosen.accuracy)}; ${g.value.evaluations} candidates, ${g.wall.toFixed(0)} s`);

  const rows: Json[] = [];
  for (const a of arms) {
    const ptq = search.evaluateAssignmentSync(model, a.assignment, testData, { method: 'ptq' });
    const qat = search.evaluateAssignmentSync(model, a.assignment, testData, { method: 'qat', qatSteps, qatLr: 1e-4, seed: SEED, progress: true });
    const c = search.totalCost(cost, layers, a.assignment);
    log(`  ${a.arm}: ${bits(a.assignment)} cost ${c.toFixed(cost.name === 'size' ? 0 : 3)} ${cost.unit}: test PTQ ${pct(ptq.accuracy)}, after QAT ${pct(qat.accuracy)}`);
    rows.push({
      arm: a.arm, bits: bits(a.assignment), assignment: a.assignment, cost: c, budget: value, unit: cost.unit, searchAccuracy: a.searchAccuracy ?? null,
      testPtq: ptq.accuracy, testQat: qat.accuracy, searchWallSeconds: a.wall ?? null, searchCpuSeconds: a.cpu ?? null, evaluations: a.evaluations ?? null, ...(a.extra ?? {}),
    });
  }
  const all = readResults();
  all[`${name}${KEY_SUFFIX}`] = { rows, wBits: W_BITS, floatTest, episodes: EPISODES, qatSteps, seed: SEED, command: COMMAND, commit: gitCommit(), date: new Date().toISOString(), quick: QUICK };
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileAtomic(RESULTS, new TextEncoder().encode(`${JSON.stringify(all, null, 1)}\n`));
}

// Markdown of everything recorded.
const all = readResults();
log('\n| budget | arm | weight bits (conv1/conv2/fc1/fc2/fc3) | cost | search PTQ | test PTQ | test after QAT | evaluations | search time |');
log('|---|---|---|---|---|---|---|---|---|');
for (const [name, entry] of Object.entries(all)) {
  const rows = (entry as { rows: Json[] }).rows;
  for (const r of rows) {
    const costText = r['unit'] === 'bits' ? `${((r['cost'] as number) / 8000).toFixed(2)} kB` : `${(r['cost'] as number).toFixed(3)} ${r['unit'] as string}`;
    const time = r['searchWallSeconds'] === null ? '–' : `${(r['searchWallSeconds'] as number).toFixed(0)} s`;
    log(`| ${name} | ${r['arm'] as string} | ${r['bits'] as string} | ${costText} | ${r['searchAccuracy'] === null ? '–' : pct(r['searchAccuracy'] as number)} | ${pct(r['testPtq'] as number)} | ${pct(r['testQat'] as number)} | ${r['evaluations'] ?? '–'} | ${time} |`);
  }
}
