/**
 * Neural channel expansion (src/quant/nce) at the sizes of issue 7, point 1, with the issue-7
 * recipe of bench/search/mixed.ts (imported from it): at the weight size of the base model at
 * uniform B-bit weights (activations 8 bit),
 *  - uniform WB (shared start): mixed.ts's uniform arm — the shared fp32 checkpoint, calibration +
 *    QAT fine-tune (its fine-tune cache, so the very runs of docs/search.md's Summary);
 *  - uniform WB (base retrained here): the base architecture trained from scratch by THIS script's
 *    fp32 recipe (the one the NCE architectures get), then the same fine-tune — the fair control;
 *  - NCE Wb: nceSearch with a uniform Wb A8 supernet (LSQ, every layer at b bits, no 8-bit first /
 *    last layer) under the budget "weights · b ≤ base weights · B" (size at Wb ≤ size of uniform WB);
 *    the found architecture trained from scratch with the same fp32 recipe, then the same fine-tune
 *    at uniform WbA8.
 * fp32 recipe of every architecture trained here: mixed.ts's (manualSeed 0, Adam 1e-3, cosine over
 * the model's fp32 epochs — 5 for LeNet-5, 2 for the CNN — batch 64, the whole training set, seed 0).
 * Fine-tune: mixed.qatScore (512-image calibration, 'static' per-channel MSE weights, min-max A8,
 * --epochs of QAT, Adam 1e-4 cosine), seeds as given; test accuracy on the full test set.
 * The search trains on the training images minus the last 2,000 (mixed.ts's search split).
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/nce/issue7.ts --model lenet5 [--seeds 0,1,2]
 *       [--combos 3:3,3:2,2:2] [--search-steps 1000] [--search-seeds 0] [--fp32-seeds single|paired]
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/nce/issue7.ts --model cnn --epochs 0.5 --seeds 0 --combos 3:3,3:2
 *
 * A combo B:b = budget at the size of uniform B-bit weights, NCE model at uniform b bits.
 * Writes docs/results/nce-issue7.json (merged by model, QAT epochs and combo) and prints a markdown table.
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
const presets = await import('../../src/quant/config/presets.ts');
const search = await import('../../src/quant/search/index.ts');
const { nceSearch, expandModel, architectureCost, modelChain, outWidth, weightedLayers } = await import('../../src/quant/nce/index.ts');
const { backendDetails, describeBackend, useBackend } = await import('../../src/cli/backend-info.ts');
const mixed = await import('../search/mixed.ts');

import type { TensorModule } from '../../src/nn/module.ts';
import { flagOr, numberFlag } from '../flags.ts';
import { gitCommit } from '../lib.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '..', '..');
const RESULTS = join(ROOT, 'docs', 'results', 'nce-issue7.json');
const CKPT = join(ROOT, 'runs', 'nce', 'issue7');
const MODEL = flagOr('model', 'lenet5');
const setup = mixed.SETUPS[MODEL];
if (!setup) throw new Error(`--model must be one of ${Object.keys(mixed.SETUPS).join(', ')}, got '${MODEL}'`);
const SEEDS = flagOr('seeds', '0,1,2').split(',').map(Number);
const COMBOS = flagOr('combos', '3:3,3:2,2:2').split(',').map((c) => {
  const [budgetBits, bits] = c.split(':').map(Number);
  if (!Number.isInteger(budgetBits) || !Number.isInteger(bits) || budgetBits! < 2 || bits! < 2) throw new Error(`--combos: '${c}' is not B:b with integers B, b >= 2`);
  return { budgetBits: budgetBits!, bits: bits! };
});
const SEARCH_STEPS = numberFlag('search-steps', 1000, { integer: true, min: 2 });
/** NCE searches per combo, one architecture (arm) each. */
const SEARCH_SEEDS = flagOr('search-seeds', '0').split(',').map(Number);
/**
 * --fp32-seeds paired: every architecture trained here (base and NCE) is trained from scratch at
 * fp32 seed = the fine-tune seed (init and data order), so the seeds cover the whole pipeline;
 * default: one fp32 training (seed 0) per architecture, as mixed.ts's single fp32 start.
 */
const PAIRED = flagOr('fp32-seeds', 'single') === 'paired';
const QAT_EPOCHS = numberFlag('epochs', 1);
const SEARCH = 2000;
const SHAPE = [1, 28, 28];
const COMMAND = `node --import tsx bench/nce/issue7.ts ${process.argv.slice(2).join(' ')}`.trim();
const log = (s: string): void => void process.stdout.write(`${s}\n`);
const pct = (x: number): string => `${(x * 100).toFixed(2)} %`;

useBackend(undefined);
const size = search.sizeCost();
const source = createModel(setup.model);
const chain = modelChain(source, SHAPE);
const baseWeights = architectureCost(size, chain, {});
const base = mixed.loaders(setup, 0);
log(`${setup.id}: base weights ${baseWeights}; QAT ${QAT_EPOCHS} epoch(s); backend ${describeBackend(backendDetails())}; commit ${gitCommit()}`);

type Json = Record<string, unknown>;
function save(key: string, value: Json): void {
  let all: Json = {};
  try {
    all = JSON.parse(readFileSync(RESULTS, 'utf8')) as Json;
  } catch {}
  const group = `${setup!.id} qat${QAT_EPOCHS}ep`;
  const model = (all[group] as Json | undefined) ?? {};
  model[key] = { ...value, command: COMMAND, commit: gitCommit(), date: new Date().toISOString() };
  all[group] = model;
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileAtomic(RESULTS, new TextEncoder().encode(`${JSON.stringify(all, null, 1)}\n`));
}

/** Searched layer names in chain order (every Conv2d / Linear but the output layer). */
const searched = weightedLayers(chain).slice(0, -1).map(({ layer }) => ({ name: layer.name, width: outWidth(layer.module) }));
const searchedNames = searched.map((l) => l.name);
/** Output widths of the searched layers ('6-16-120-84'); a layer not in `w` keeps its base width. */
const widthsText = (w: Readonly<Record<string, number>>): string => searched.map((l) => w[l.name] ?? l.width).join('-');

/** The architecture (empty widths: the base one) trained from scratch with the fp32 recipe at `seed` (init and data order), cached on disk. */
const trained = new Map<string, { model: TensorModule; test: number; seconds: number | null }>();
function trainedArch(widths: Readonly<Record<string, number>>, seed: number): { model: TensorModule; test: number; seconds: number | null } {
  const key = `${widthsText(widths)}${seed === 0 ? '' : `-s${seed}`}`;
  const hit = trained.get(key);
  if (hit) return hit;
  manualSeed(seed);
  const model = expandModel(createModel(setup!.model), SHAPE, widths, { inherit: false });
  const path = join(CKPT, `${setup!.id}-${key}-fp32-e${setup!.fp32Epochs}.safetensors`);
  let seconds: number | null = null;
  if (existsSync(path)) {
    model.loadStateDict(loadCheckpoint(path).model);
  } else {
    const t = performance.now();
    const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
    fit(model, { trainLoader: mixed.loaders(setup!, seed).train, optimizer, scheduler: new CosineAnnealingLR(optimizer, { tMax: setup!.fp32Epochs }), epochs: setup!.fp32Epochs, seed, progress: false });
    seconds = (performance.now() - t) / 1000;
    mkdirSync(CKPT, { recursive: true });
    saveCheckpoint(path, { model: model.stateDict(), optimizer: null, epoch: setup!.fp32Epochs, config: { model: setup!.model, widths, seed }, history: null });
  }
  model.eval();
  const out = { model, test: evaluate(model, base.test).accuracy, seconds };
  log(`  ${key}: fp32 ${pct(out.test)}${seconds === null ? ' (checkpoint)' : ` (trained ${setup!.fp32Epochs} epochs in ${seconds.toFixed(0)} s wall)`}`);
  trained.set(key, out);
  return out;
}

interface Arm { arm: string; widths: string; bits: number; weights: number; sizeBits: number; macs: number; fp32Tests: number[]; accuracies: number[]; mean: number }
/**
 * Fine-tune at uniform `bits` over the seeds. `widths` null: mixed.ts's fp32 start. Otherwise the
 * architecture trained here: at fp32 seed 0 for every fine-tune seed, or (--fp32-seeds paired) at
 * fp32 seed = fine-tune seed.
 */
function qatArm(arm: string, widths: Readonly<Record<string, number>> | null, bits: number): Arm {
  const accs: number[] = [];
  const fp32Tests: number[] = [];
  let layers: ReturnType<typeof search.describeLayers> = [];
  for (const seed of SEEDS) {
    const fp32Seed = PAIRED ? seed : 0;
    const t = widths === null ? null : trainedArch(widths, fp32Seed);
    const model = t ? t.model : mixed.fp32Model(setup!);
    fp32Tests.push(t ? t.test : evaluate(model, base.test).accuracy);
    layers = search.describeLayers(model, SHAPE);
    const assignment = search.uniformAssignment(layers, bits, 8);
    const split = widths === null ? '' : `nce-issue7-${widthsText(widths)}${fp32Seed === 0 ? '' : `-fp32s${fp32Seed}`}`;
    const t0 = performance.now();
    const r = mixed.qatScore(setup!, model, assignment, mixed.loaders(setup!, seed), seed, undefined, undefined, split);
    accs.push(r.accuracy);
    log(`  ${arm} W${bits}A8 seed ${seed}${PAIRED && widths !== null ? ` (fp32 seed ${fp32Seed})` : ''}: ${pct(r.accuracy)} ${r.cached ? '(fine-tune cache)' : `(${((performance.now() - t0) / 1000).toFixed(0)} s)`}`);
  }
  const weights = layers.reduce((s, l) => s + l.weightCount, 0);
  const macs = layers.reduce((s, l) => s + l.macs, 0);
  return { arm, widths: widthsText(widths ?? {}), bits, weights, sizeBits: weights * bits, macs, fp32Tests, accuracies: accs, mean: accs.reduce((s, x) => s + x, 0) / accs.length };
}

const rows: { combo: string; arms: Arm[] }[] = [];
for (const { budgetBits, bits } of COMBOS) {
  const budget = baseWeights * budgetBits;
  const comboKey = `size of W${budgetBits}, NCE W${bits}`;
  log(`\n== ${comboKey}: weights·${bits} ≤ ${budget} bits (${(budget / 8000).toFixed(2)} kB)`);
  const norm = DATASET_STATS[setup.dataset];
  const train = loadDataset(setup.dataset, 'train');
  const searches: Json[] = [];
  const found: { seed: number; widths: Record<string, number> }[] = [];
  for (const searchSeed of SEARCH_SEEDS) {
    const searchLoader = new DataLoader(subset(train, 0, train.length - SEARCH), { batchSize: 64, shuffle: true, seed: 1000 + searchSeed, normalize: norm });
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const r = await nceSearch(createModel(setup.model), {
      inputShape: SHAPE, train: searchLoader, steps: SEARCH_STEPS, seed: searchSeed, progress: true,
      cost: size, bits: { w: bits, a: 8 }, budget,
      qat: { default: { weight: { ...presets.int8Lsq, bits }, activation: { ...presets.uint8Lsq, bits: 8 } }, keepFirstLast8bit: false },
    });
    const cpu = process.cpuUsage(cpu0);
    const wall = (performance.now() - t0) / 1000;
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    log(`  search seed ${searchSeed}, ${SEARCH_STEPS} steps (${wall.toFixed(0)} s wall, ${cpuSeconds.toFixed(0)} s CPU): ${widthsText(r.widths)} (argmax ${widthsText(r.argmaxWidths)}), ` +
      `cost ${r.cost} / ${r.budget} bits (${r.cost / bits} weights)`);
    searches.push({ seed: searchSeed, widths: r.widths, argmaxWidths: r.argmaxWidths, probabilities: r.probabilities, cost: r.cost, expectedCost: r.expectedCost, wallSeconds: wall, cpuSeconds, history: r.history.filter((_, i) => i % 5 === 0) });
    found.push({ seed: searchSeed, widths: r.widths });
  }
  const arms = [
    qatArm(`uniform W${budgetBits} (mixed.ts fp32 start)`, null, budgetBits),
    qatArm(`uniform W${budgetBits} (base retrained here)`, {}, budgetBits),
    ...found.map((f) => qatArm(`NCE W${bits} (search seed ${f.seed})`, f.widths, bits)),
  ];
  const u = arms[1]!;
  log(`  mean: uniform (retrained) ${pct(u.mean)}; ${arms.slice(2).map((n) => `${n.arm} ${n.widths} ${pct(n.mean)} (${((n.mean - u.mean) * 100).toFixed(2)} pt)`).join('; ')}; uniform (mixed.ts start) ${pct(arms[0]!.mean)}`);
  save(`${comboKey}${PAIRED ? ', fp32 seeds paired' : ''}`, {
    budgetBits, bits, budget, searchSteps: SEARCH_STEPS, qatEpochs: QAT_EPOCHS, seeds: SEEDS, fp32Seeds: PAIRED ? 'paired with the fine-tune seed' : 0, searches,
    fp32Seconds: Object.fromEntries([...trained].map(([k, v]) => [k, v.seconds])),
    arms,
  });
  rows.push({ combo: comboKey, arms });
}

log(`\n| budget | arm | widths (${searchedNames.join('/')}) | weights | size | MACs | fp32 test, per fp32 seed | test after QAT, per seed | mean | vs uniform (retrained) |`);
log('|---|---|---|---|---|---|---|---|---|---|');
for (const { combo, arms } of rows) {
  for (const a of arms) {
    log(`| ${combo} | ${a.arm} | ${a.widths} | ${a.weights} | ${(a.sizeBits / 8000).toFixed(2)} kB | ${a.macs} | ${a.fp32Tests.map(pct).join(' / ')} | ${a.accuracies.map(pct).join(' / ')} | ${pct(a.mean)} | ${((a.mean - arms[1]!.mean) * 100).toFixed(2)} pt |`);
  }
}
