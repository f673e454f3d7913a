/**
 * Mixed-precision search experiments (issue 7, core): on LeNet-5/MNIST and the CNN/Fashion-MNIST,
 *  - sensitivity: Hessian trace (Hutchinson), HAWQ-v2 Ω, PTQ loss perturbation and Fisher per
 *    layer, with Spearman / Kendall rank correlations;
 *  - size budget: at the weight size of uniform b-bit weights (b = 3, 2), the exact allocation
 *    (DP over per-layer choices, PTQ-perturbation errors) against uniform b bits, both after the
 *    same calibration + QAT fine-tune, over seeds;
 *  - latency budget: the latency table of lowbit's integer runtime and the best plan under a
 *    latency budget against uniform W8A8, measured on the converted IntModel.
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/search/mixed.ts [--models lenet5,cnn]
 *       [--sections sensitivity,size,latency] [--seeds 0,1,2] [--budgets 3,2] [--epochs 1] [--quick]
 *
 * Writes docs/results/search.json (merged per model and section) and regenerates the block between
 * the `search-results` markers of docs/search.md. fp32 starting points: runs/qat/ckpt/<id>.safetensors
 * when present (bench/qat/matrix.ts trains them), else trained here into runs/search/ckpt.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';

process.env.LOWBIT_THREADS ??= '2';

const { getBackend } = await import('../../src/backend/index.ts');
const { DATASET_STATS, DataLoader, loadDataset, subset } = await import('../../src/data/index.ts');
const { createModel } = await import('../../src/nn/models/index.ts');
const { Adam, CosineAnnealingLR } = await import('../../src/optim/index.ts');
const { manualSeed } = await import('../../src/tensor/index.ts');
const { fit, evaluate } = await import('../../src/train/fit.ts');
const { saveCheckpoint, loadCheckpoint } = await import('../../src/train/checkpoint.ts');
const { writeFileAtomic } = await import('../../src/format/safetensors.ts');
const { convert } = await import('../../src/runtime/convert.ts');
const { intKernelsBackend } = await import('../../src/runtime/kernels/index.ts');
const search = await import('../../src/quant/search/index.ts');

import type { TensorModule } from '../../src/nn/module.ts';
import type { BitAssignment, BitChoice, LayerInfo, SearchData } from '../../src/quant/search/index.ts';
import type { IntModel } from '../../src/runtime/intmodel.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '..', '..');
const QUICK_FLAG = process.argv.includes('--quick');
const RESULTS = QUICK_FLAG ? join(ROOT, 'runs', 'search', 'quick.json') : join(ROOT, 'docs', 'results', 'search.json');
const DOC = join(ROOT, 'docs', 'search.md');

// ------------------------------------------------------------------ arguments
function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const QUICK = process.argv.includes('--quick');
const MODELS = arg('models', 'lenet5,cnn').split(',');
const SECTIONS = arg('sections', 'sensitivity,size,latency').split(',');
const SEEDS = arg('seeds', '0,1,2').split(',').map(Number);
const BUDGETS = arg('budgets', '3,2').split(',').map(Number);
const EPOCHS = Number(arg('epochs', '1'));
const COMMAND = `node --import tsx bench/search/mixed.ts ${process.argv.slice(2).join(' ')}`.trim();

const log = (s: string): void => void process.stdout.write(`${s}\n`);
const pct = (x: number): string => `${(x * 100).toFixed(2)} %`;

interface Setup {
  readonly id: 'lenet5-mnist' | 'cnn-fashion';
  readonly model: 'lenet5' | 'cnn';
  readonly dataset: 'mnist' | 'fashion-mnist';
  readonly fp32Epochs: number;
}
const SETUPS: Record<string, Setup> = {
  lenet5: { id: 'lenet5-mnist', model: 'lenet5', dataset: 'mnist', fp32Epochs: 5 },
  cnn: { id: 'cnn-fashion', model: 'cnn', dataset: 'fashion-mnist', fp32Epochs: 2 },
};

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

// ------------------------------------------------------------------ data and fp32 model
function loaders(setup: Setup, seed: number) {
  const norm = DATASET_STATS[setup.dataset];
  const train = loadDataset(setup.dataset, 'train');
  const test = loadDataset(setup.dataset, 'test');
  const trainSet = QUICK ? subset(train, 0, 3000) : train;
  const testSet = QUICK ? subset(test, 0, 1000) : test;
  // Search signals (sensitivity, PTQ evaluation) use the last 2,000 training images, never the test set.
  const searchSet = subset(train, train.length - (QUICK ? 500 : 2000));
  return {
    train: new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed, normalize: norm }),
    test: new DataLoader(testSet, { batchSize: 500, normalize: norm }),
    search: new DataLoader(searchSet, { batchSize: 250, normalize: norm }),
    calibration: new DataLoader(subset(train, 0, 512), { batchSize: 128, normalize: norm }),
    hessian: new DataLoader(subset(train, 0, 256), { batchSize: 256, normalize: norm }),
  };
}

function fp32Model(setup: Setup): TensorModule {
  manualSeed(0);
  const model = createModel(setup.model);
  const shared = join(ROOT, 'runs', 'qat', 'ckpt', `${setup.id}_fp32.safetensors`);
  const own = join(ROOT, 'runs', 'search', 'ckpt', `${setup.id}_fp32${QUICK ? '-quick' : ''}.safetensors`);
  const path = !QUICK && existsSync(shared) ? shared : own;
  if (!existsSync(path)) {
    log(`training the fp32 ${setup.model} on ${setup.dataset} (${setup.fp32Epochs} epochs, Adam 1e-3 cosine) -> ${path}`);
    const l = loaders(setup, 0);
    const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
    const epochs = QUICK ? 1 : setup.fp32Epochs;
    fit(model, { trainLoader: l.train, optimizer, scheduler: new CosineAnnealingLR(optimizer, { tMax: epochs }), epochs, seed: 0, progress: false });
    mkdirSync(dirname(path), { recursive: true });
    saveCheckpoint(path, { model: model.stateDict(), optimizer: null, epoch: epochs, config: { model: setup.model, dataset: setup.dataset }, history: null });
  } else {
    model.loadStateDict(loadCheckpoint(path).model);
  }
  model.eval();
  return model;
}

// ------------------------------------------------------------------ results file
type Json = Record<string, unknown>;
function readResults(): Json {
  try {
    return JSON.parse(readFileSync(RESULTS, 'utf8')) as Json;
  } catch {
    return {};
  }
}
function saveResult(modelId: string, section: string, value: unknown): void {
  const all = readResults();
  const entry = (all[modelId] as Json | undefined) ?? {};
  entry[section] = value;
  all[modelId] = entry;
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileAtomic(RESULTS, new TextEncoder().encode(`${JSON.stringify(all, null, 1)}\n`));
}

// ------------------------------------------------------------------ sensitivity
const PTQ_BITS = [1, 2, 3, 4, 5, 6, 8];

interface Sensitivity {
  layers: LayerInfo[];
  hessian: { name: string; trace: number; meanTrace: number }[];
  fisher: { name: string; trace: number; meanTrace: number }[];
  ptq: { name: string; deltaLoss: Record<number, number>; deltaAccuracy: Record<number, number> }[];
  omega: { name: string; omega: Record<number, number> }[];
  fisherOmega: { name: string; omega: Record<number, number> }[];
  correlations: { bits: number; pair: string; spearman: number; kendall: number }[];
  seconds: { hessian: number; fisher: number; ptq: number };
}

function sensitivity(setup: Setup, model: TensorModule, data: ReturnType<typeof loaders>): Sensitivity {
  const layers = search.describeLayers(model, [1, 28, 28]);
  let t = performance.now();
  const hess = search.hessianTrace(model, data.hessian, { samples: QUICK ? 4 : 64, batches: 1 });
  const hSec = (performance.now() - t) / 1000;
  t = performance.now();
  const fish = search.fisherInformation(model, data.hessian, { samples: QUICK ? 32 : 256 });
  const fSec = (performance.now() - t) / 1000;
  t = performance.now();
  const ptq = search.ptqPerturbation(model, data.search, PTQ_BITS);
  const pSec = (performance.now() - t) / 1000;
  const weights = new Map(layers.map((l) => [l.name, (model.getSubmodule(l.name) as unknown as { weight: import('../../src/tensor/tensor.ts').Tensor }).weight]));
  const omega = hess.map((h) => ({ name: h.name, omega: search.quantizationErrors(weights.get(h.name)!, h, PTQ_BITS) }));
  const fisherOmega = fish.map((f) => ({ name: f.name, omega: search.quantizationErrors(weights.get(f.name)!, f, PTQ_BITS) }));
  const correlations: Sensitivity['correlations'] = [];
  for (const b of PTQ_BITS) {
    const p = ptq.map((r) => r.deltaLoss[b]!);
    const add = (pair: string, other: number[]): void => void correlations.push({ bits: b, pair, ...search.rankCorrelation(other, p) });
    add('hessian mean trace vs PTQ Δloss', hess.map((h) => h.mean));
    add('HAWQ-v2 Ω vs PTQ Δloss', omega.map((o) => o.omega[b]!));
    add('Fisher Ω vs PTQ Δloss', fisherOmega.map((o) => o.omega[b]!));
  }
  log(`${setup.id}: sensitivity in ${hSec.toFixed(1)} s (Hessian) / ${fSec.toFixed(1)} s (Fisher) / ${pSec.toFixed(1)} s (PTQ)`);
  return {
    layers,
    hessian: hess.map((h) => ({ name: h.name, trace: h.value, meanTrace: h.mean })),
    fisher: fish.map((h) => ({ name: h.name, trace: h.value, meanTrace: h.mean })),
    ptq, omega, fisherOmega, correlations,
    seconds: { hessian: hSec, fisher: fSec, ptq: pSec },
  };
}

// ------------------------------------------------------------------ size budget
const SIZE_CHOICES: BitChoice[] = [1, 2, 3, 4, 5, 6, 8].map((w) => ({ w, a: 8 }));

function sizePlans(sens: Sensitivity, budgetBits: number): Record<string, BitAssignment> {
  const size = search.sizeCost();
  const uniform = search.uniformAssignment(sens.layers, budgetBits, 8);
  const budget = search.totalCost(size, sens.layers, uniform);
  const ptqErr = new Map(sens.ptq.map((p) => [p.name, p.deltaLoss]));
  const omega = new Map(sens.omega.map((p) => [p.name, p.omega]));
  const byPtq = search.allocateExact(search.layerOptions(sens.layers, SIZE_CHOICES, size, (l, c) => ptqErr.get(l.name)![c.w]!), budget);
  const byHessian = search.allocateExact(search.layerOptions(sens.layers, SIZE_CHOICES, size, (l, c) => omega.get(l.name)![c.w]!), budget);
  return { uniform, searched: byPtq.assignment, 'searched (Hessian Ω)': byHessian.assignment };
}

function describe(assignment: BitAssignment, layers: readonly LayerInfo[]): string {
  return layers.map((l) => `${l.name}:w${assignment[l.name]!.w}a${assignment[l.name]!.a}`).join(' ');
}

function qatScore(model: TensorModule, assignment: BitAssignment, data: ReturnType<typeof loaders>, seed: number, inspect?: (m: TensorModule) => void) {
  const steps = EPOCHS * (data.train.dataset.length / 64);
  const sd: SearchData = { calibration: data.calibration, eval: data.test, train: data.train };
  return search.evaluateAssignmentSync(model, assignment, sd, { method: 'qat', qatSteps: Math.ceil(steps), qatLr: 1e-4, seed, inspect });
}

function sizeSection(setup: Setup, model: TensorModule, sens: Sensitivity): unknown {
  const size = search.sizeCost();
  const rows: Json[] = [];
  for (const b of BUDGETS) {
    const plans = sizePlans(sens, b);
    const budget = search.totalCost(size, sens.layers, plans['uniform']!);
    for (const [arm, assignment] of Object.entries(plans)) {
      const accs: number[] = [];
      for (const seed of SEEDS) {
        const data = loaders(setup, seed);
        const t = performance.now();
        const r = qatScore(model, assignment, data, seed);
        accs.push(r.accuracy);
        log(`${setup.id} size@${b}b ${arm} seed ${seed}: ${pct(r.accuracy)} (${describe(assignment, sens.layers)}) ${((performance.now() - t) / 1000).toFixed(0)} s`);
      }
      rows.push({
        budgetBits: b, budget, arm, assignment, cost: search.totalCost(size, sens.layers, assignment), accuracies: accs,
        mean: accs.reduce((s, x) => s + x, 0) / accs.length,
      });
      saveResult(setup.id, 'size', { rows, seeds: SEEDS, epochs: EPOCHS, command: COMMAND, commit: gitCommit(), quick: QUICK });
    }
  }
  return rows;
}

// ------------------------------------------------------------------ latency budget
function intModelOf(model: TensorModule, assignment: BitAssignment, data: ReturnType<typeof loaders>, sensLayers: readonly LayerInfo[]) {
  let im: IntModel | null = null;
  const score = qatScore(model, assignment, data, 0, (m) => {
    const x = data.calibration[Symbol.iterator]().next().value!.x;
    im = convert(m, { sample: x });
  });
  return { score, im: im! as IntModel, layers: sensLayers };
}

function latencySection(setup: Setup, model: TensorModule, sens: Sensitivity): unknown {
  const latency = search.latencyCost({ onMeasure: (k) => log(`  measuring ${k}`) });
  const choices: BitChoice[] = [];
  for (const w of [1, 2, 4, 8]) for (const a of [2, 4, 8]) choices.push({ w, a });
  choices.push({ w: 1, a: 1 });
  const table = sens.layers.map((l) => ({ name: l.name, cost: Object.fromEntries(choices.map((c) => [`w${c.w}a${c.a}`, latency.layerCost(l, c.w, c.a)])) }));
  const w8a8 = search.uniformAssignment(sens.layers, 8, 8);
  const base = search.totalCost(latency, sens.layers, w8a8);
  // Error estimate: PTQ weight Δloss at w (activation error not modelled beyond 8 bits; a < 8 gets the weight table at a as a proxy).
  const ptqErr = new Map(sens.ptq.map((p) => [p.name, p.deltaLoss]));
  const err = (l: LayerInfo, c: BitChoice): number => ptqErr.get(l.name)![c.w]! + (c.a < 8 ? ptqErr.get(l.name)![Math.max(c.a, 2)]! : 0) + (c.a === 1 ? 10 : 0);
  const front = search.paretoFront(search.layerOptions(sens.layers, choices, latency, err));
  const target = base / 1.3;
  const fastest = front[0]!;
  const withinTarget = front.filter((f) => f.cost <= target);
  const pick = withinTarget[withinTarget.length - 1] ?? null;
  const data = loaders(setup, 0);
  const measure = (assignment: BitAssignment) => {
    const { score, im } = intModelOf(model, assignment, data, sens.layers);
    const x = new Float32Array(data.calibration[Symbol.iterator]().next().value!.x.data.slice(0, 64 * 784));
    const us = search.measureModelLatency(im, x, 64, 7);
    return { accuracy: score.accuracy, usPerSample: us };
  };
  const w8 = measure(w8a8);
  log(`${setup.id} latency: W8A8 ${w8.usPerSample.toFixed(1)} µs/sample, ${pct(w8.accuracy)}; table estimate ${base.toFixed(1)} µs; fastest plan in the table ${fastest.cost.toFixed(1)} µs (${(base / fastest.cost).toFixed(2)}x)`);
  const rows: Json[] = [{ arm: 'uniform W8A8', assignment: w8a8, estimate: base, ...w8 }];
  if (pick) {
    const m = measure(pick.assignment);
    rows.push({ arm: 'latency-budget plan', assignment: pick.assignment, estimate: pick.cost, ...m, speedup: w8.usPerSample / m.usPerSample });
  }
  const f = measure(fastest.assignment);
  rows.push({ arm: 'fastest plan in the table', assignment: fastest.assignment, estimate: fastest.cost, ...f, speedup: w8.usPerSample / f.usPerSample });
  return { kernels: intKernelsBackend(), table, rows, target, reachable: pick !== null };
}

// ------------------------------------------------------------------ markdown
function markdown(all: Json): string {
  const out: string[] = [];
  for (const id of Object.keys(all).sort()) {
    const entry = all[id] as Json;
    out.push(`### ${id}`, '');
    const s = entry['sensitivity'] as (Sensitivity & { command: string }) | undefined;
    if (s) {
      out.push(`Sensitivity (\`${s.command}\`): Hessian trace by Hutchinson (64 Rademacher vectors, 256 training images), Fisher (256 single images), PTQ Δloss (only that layer's weights quantized per channel, MSE scales; 2,000 held-out training images).`, '');
      out.push('| layer | Tr(H) | Tr(H)/n | Fisher Tr | PTQ Δloss 2b | 3b | 4b | rank Tr/n | rank PTQ 3b |', '|---|---|---|---|---|---|---|---|---|');
      const rt = search.ranks(s.hessian.map((h) => -h.meanTrace));
      const rp = search.ranks(s.ptq.map((p) => -p.deltaLoss[3]!));
      s.hessian.forEach((h, i) => {
        const p = s.ptq[i]!;
        out.push(`| ${h.name} | ${h.trace.toExponential(3)} | ${h.meanTrace.toExponential(3)} | ${s.fisher[i]!.trace.toExponential(3)} | ${p.deltaLoss[2]!.toFixed(4)} | ${p.deltaLoss[3]!.toFixed(4)} | ${p.deltaLoss[4]!.toFixed(4)} | ${rt[i]} | ${rp[i]} |`);
      });
      out.push('', '| bits | pair | Spearman ρ | Kendall τ-b |', '|---|---|---|---|');
      for (const c of s.correlations.filter((c) => [2, 3, 4].includes(c.bits))) out.push(`| ${c.bits} | ${c.pair} | ${c.spearman.toFixed(3)} | ${c.kendall.toFixed(3)} |`);
      out.push('');
    }
    const size = entry['size'] as { rows: Json[]; seeds: number[]; epochs: number; command: string } | undefined;
    if (size) {
      out.push(`Size budget, same calibration + QAT fine-tune for every arm (${size.epochs} epoch, Adam 1e-4 cosine, activations 8 bit), test accuracy over seeds ${size.seeds.join(', ')} (\`${size.command}\`):`, '');
      out.push('| budget | arm | weight bits per layer | size (bits) | accuracies | mean |', '|---|---|---|---|---|---|');
      for (const r of size.rows) {
        const a = r['assignment'] as BitAssignment;
        out.push(`| ${String(r['budgetBits'])}-bit size | ${String(r['arm'])} | ${Object.entries(a).map(([n, c]) => `${n}:${c.w}`).join(' ')} | ${String(r['cost'])} | ${(r['accuracies'] as number[]).map(pct).join(', ')} | ${pct(r['mean'] as number)} |`);
      }
      out.push('');
    }
    const lat = entry['latency'] as { rows: Json[]; kernels: unknown; target: number; command: string; reachable: boolean } | undefined;
    if (lat) {
      out.push(`Latency on lowbit's integer runtime as in /work/main at commit ${String((entry['latency'] as Json)['commit'])} (kernels ${JSON.stringify(lat.kernels)}), process CPU time per sample, batch 64 (\`${lat.command}\`):`, '');
      out.push('| arm | bits | table estimate (µs) | measured (µs/sample) | speedup vs W8A8 | accuracy |', '|---|---|---|---|---|---|');
      for (const r of lat.rows) {
        const a = r['assignment'] as BitAssignment;
        out.push(`| ${String(r['arm'])} | ${Object.entries(a).map(([n, c]) => `${n}:w${c.w}a${c.a}`).join(' ')} | ${(r['estimate'] as number).toFixed(1)} | ${(r['usPerSample'] as number).toFixed(1)} | ${r['speedup'] ? `${(r['speedup'] as number).toFixed(2)}x` : '1.00x'} | ${pct(r['accuracy'] as number)} |`);
      }
      out.push('', lat.reachable ? '' : `No plan in the table reaches the 1.3x latency target (${lat.target.toFixed(1)} µs).`, '');
    }
  }
  return out.join('\n');
}

function writeDoc(): void {
  if (QUICK || !existsSync(DOC)) return;
  const doc = readFileSync(DOC, 'utf8');
  const begin = '<!-- search-results:begin -->';
  const end = '<!-- search-results:end -->';
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i < 0 || j < i) return;
  const next = `${doc.slice(0, i + begin.length)}\n${markdown(readResults())}\n${doc.slice(j)}`;
  writeFileAtomic(DOC, new TextEncoder().encode(next));
}

// ------------------------------------------------------------------ main
log(`backend ${getBackend()}, threads ${process.env.LOWBIT_THREADS}, kernels ${JSON.stringify(intKernelsBackend())}${QUICK ? ', QUICK' : ''}`);
for (const name of MODELS) {
  const setup = SETUPS[name];
  if (!setup) throw new Error(`unknown model '${name}' (known: ${Object.keys(SETUPS).join(', ')})`);
  const model = fp32Model(setup);
  const data = loaders(setup, 0);
  log(`${setup.id}: fp32 test accuracy ${pct(evaluate(model, data.test).accuracy)}`);
  const sens = sensitivity(setup, model, data);
  if (SECTIONS.includes('sensitivity')) saveResult(setup.id, 'sensitivity', { ...sens, command: COMMAND, commit: gitCommit(), quick: QUICK });
  if (SECTIONS.includes('size')) sizeSection(setup, model, sens);
  if (SECTIONS.includes('latency')) saveResult(setup.id, 'latency', { ...(latencySection(setup, model, sens) as Json), command: COMMAND, commit: gitCommit(), quick: QUICK });
  writeDoc();
}
