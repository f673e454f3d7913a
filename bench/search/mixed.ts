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
 *       [--sections sensitivity,size,sizewa,latency,prune] [--seeds 0,1,2] [--budgets 3,2] [--epochs 1] [--quick]
 *       [--arms uniform,kl,hessian,loss,channel,prune0,qat] [--per-channel] [--fp32-epochs N [--holdout]] [--doc-only]
 *
 * Writes docs/results/search.json (merged per model and section) and regenerates the block between
 * the `search-results` markers of docs/search.md. fp32 starting points: runs/qat/ckpt/<id>.safetensors
 * when present (bench/qat/matrix.ts trains them), else trained here into runs/search/ckpt.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.LOWBIT_THREADS ??= '2';

const { getBackend } = await import('../../src/backend/index.ts');
const { DATASET_STATS, DataLoader, loadDataset, subset } = await import('../../src/data/index.ts');
const { createModel } = await import('../../src/nn/models/index.ts');
const { Adam, CosineAnnealingLR } = await import('../../src/optim/index.ts');
const { manualSeed, Tensor } = await import('../../src/tensor/index.ts');
const { fit, evaluate } = await import('../../src/train/fit.ts');
const { saveCheckpoint, loadCheckpoint } = await import('../../src/train/checkpoint.ts');
const { writeFileAtomic } = await import('../../src/format/files.ts');
const { convert } = await import('../../src/runtime/convert.ts');
const { intKernelsBackend } = await import('../../src/runtime/kernels/index.ts');
const search = await import('../../src/quant/search/index.ts');

import type { TensorModule } from '../../src/nn/module.ts';
import type { BitAssignment, BitChoice, LayerInfo, SearchData } from '../../src/quant/search/index.ts';
import type { IntModel } from '../../src/runtime/intmodel.ts';
import type { PlanBase } from '../../src/quant/search/plan.ts';
import { flagOr } from '../flags.ts';
import { gitCommit } from '../lib.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '..', '..');
const QUICK_FLAG = process.argv.includes('--quick');
/**
 * --fp32-epochs N: start from an fp32 model trained N epochs here (its own checkpoint) instead of the
 * shared 5-epoch one; results go to runs/search/fp32-e<N>.json and docs/search.md is left alone.
 */
const FP32_EPOCHS = process.argv.includes('--fp32-epochs') ? Number(flagOr('fp32-epochs', '')) : null;
if (FP32_EPOCHS !== null && !(Number.isInteger(FP32_EPOCHS) && FP32_EPOCHS > 0)) throw new Error('--fp32-epochs needs a positive integer');
/**
 * --holdout: the fp32 start (needs --fp32-epochs) is trained without the last 10,000 training
 * images, so that the QAT-ranked arm can rank candidates on images the model has never seen.
 * The arms' final fine-tune still uses the whole training set.
 */
const HOLDOUT = process.argv.includes('--holdout');
if (HOLDOUT && FP32_EPOCHS === null) throw new Error('--holdout needs --fp32-epochs (its own fp32 start)');
const START = FP32_EPOCHS === null ? '' : `-e${FP32_EPOCHS}${HOLDOUT ? '-h10k' : ''}`;
/**
 * --weight-granularity tensor: every arm of the size experiments quantizes weights with one scale
 * per tensor instead of per output channel (the calibration and fine-tune are otherwise the same);
 * results go to runs/search/wtensor[-e<N>].json and docs/search.md is left alone.
 */
const WEIGHT_GRANULARITY = flagOr('weight-granularity', 'channel');
if (WEIGHT_GRANULARITY !== 'channel' && WEIGHT_GRANULARITY !== 'tensor') throw new Error('--weight-granularity is channel or tensor');
const SIZE_BASE: PlanBase | undefined = WEIGHT_GRANULARITY === 'tensor' ? { weightGranularity: 'tensor' } : undefined;
/**
 * --act-bits A: the size + BitOps experiment (sizewa) compares against uniform W<b>A<A> (the size of
 * uniform b-bit weights, the BitOps of W<b>A<A>) instead of W<b>A<b>; results go to
 * docs/results/search-act<A>[-e<N>].json (docs/search.md quotes them in its Summary; the tables are not rewritten).
 */
const ACT_BITS = process.argv.includes('--act-bits') ? Number(flagOr('act-bits', '')) : null;
if (ACT_BITS !== null && ![2, 3, 4, 5, 6, 8].includes(ACT_BITS)) throw new Error('--act-bits is one of 2, 3, 4, 5, 6, 8');
/** The results docs/search.md's generated tables show; every flag above writes elsewhere and leaves the doc alone. */
const MAIN_RESULTS = join(ROOT, 'docs', 'results', 'search.json');
const RESULTS = QUICK_FLAG ? join(ROOT, 'runs', 'search', 'quick.json')
  : ACT_BITS !== null ? join(ROOT, 'docs', 'results', `search-act${ACT_BITS}${START}.json`)
  : SIZE_BASE ? join(ROOT, 'runs', 'search', `wtensor${START}.json`)
  : FP32_EPOCHS !== null ? join(ROOT, 'runs', 'search', `fp32${START}.json`) : MAIN_RESULTS;
const DOC = join(ROOT, 'docs', 'search.md');

// ------------------------------------------------------------------ arguments
const QUICK = process.argv.includes('--quick');
const MODELS = flagOr('models', 'lenet5,cnn').split(',');
const SECTIONS = flagOr('sections', 'sensitivity,size,latency').split(',');
const SEEDS = flagOr('seeds', '0,1,2').split(',').map(Number);
const BUDGETS = flagOr('budgets', '3,2').split(',').map(Number);
const EPOCHS = Number(flagOr('epochs', '1'));
/** Learning rate of the QAT fine-tune (Adam, cosine to 0), the same for every arm (default 1e-4). */
const LR = Number(flagOr('lr', '1e-4'));
const PER_CHANNEL = process.argv.includes('--per-channel');
/**
 * Arms of the size experiments (default: uniform, kl, hessian, loss, channel (needs --per-channel));
 * prune0 (0-bit channels) and qat (QAT-ranked candidates, needs --holdout; also adds that arm to
 * the size + BitOps experiment) only when named.
 */
const ARMS = flagOr('arms', 'uniform,kl,hessian,loss,channel').split(',');
const ARMS_ORDER = ['uniform', 'searched (PTQ KL)', 'searched (Hessian Ω)', 'searched (PTQ Δloss)', 'searched (Hessian Ω, per-channel)', 'searched (Hessian Ω, 0-bit channels)', 'searched (QAT-ranked)'];
const ARM_KEYS: Record<string, string> = {
  uniform: 'uniform', 'searched (PTQ KL)': 'kl', 'searched (Hessian Ω)': 'hessian', 'searched (PTQ Δloss)': 'loss', 'searched (Hessian Ω, per-channel)': 'channel',
  'searched (Hessian Ω, 0-bit channels)': 'prune0', 'searched (QAT-ranked)': 'qat',
};
const COMMAND = `node --import tsx bench/search/mixed.ts ${process.argv.slice(2).join(' ')}`.trim();

const log = (s: string): void => void process.stdout.write(`${s}\n`);
const pct = (x: number): string => `${(x * 100).toFixed(2)} %`;

export interface Setup {
  readonly id: 'lenet5-mnist' | 'cnn-fashion';
  readonly model: 'lenet5' | 'cnn';
  readonly dataset: 'mnist' | 'fashion-mnist';
  readonly fp32Epochs: number;
}
export const SETUPS: Record<string, Setup> = {
  lenet5: { id: 'lenet5-mnist', model: 'lenet5', dataset: 'mnist', fp32Epochs: 5 },
  cnn: { id: 'cnn-fashion', model: 'cnn', dataset: 'fashion-mnist', fp32Epochs: 2 },
};


// ------------------------------------------------------------------ data and fp32 model
export function loaders(setup: Setup, seed: number) {
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

/**
 * The split the QAT-ranked arm ranks candidates on: fine-tune on the training set minus its last
 * 10,000 images, accuracy on those 10,000 (never the test set).
 */
function rankLoaders(setup: Setup, seed: number) {
  const norm = DATASET_STATS[setup.dataset];
  const train = loadDataset(setup.dataset, 'train');
  const hold = QUICK ? 500 : 10000;
  const fit = QUICK ? subset(train, 0, 3000) : subset(train, 0, train.length - hold);
  return {
    train: new DataLoader(fit, { batchSize: 64, shuffle: true, seed, normalize: norm }),
    test: new DataLoader(subset(train, train.length - hold), { batchSize: 500, normalize: norm }),
    calibration: new DataLoader(subset(train, 0, 512), { batchSize: 128, normalize: norm }),
  };
}

export function fp32Model(setup: Setup): TensorModule {
  manualSeed(0);
  const model = createModel(setup.model);
  const shared = join(ROOT, 'runs', 'qat', 'ckpt', `${setup.id}_fp32.safetensors`);
  const own = join(ROOT, 'runs', 'search', 'ckpt', `${setup.id}_fp32${QUICK ? '-quick' : START}.safetensors`);
  const path = !QUICK && FP32_EPOCHS === null && existsSync(shared) ? shared : own;
  if (!existsSync(path)) {
    const epochs = QUICK ? 1 : FP32_EPOCHS ?? setup.fp32Epochs;
    log(`training the fp32 ${setup.model} on ${setup.dataset} (${epochs} epochs, Adam 1e-3 cosine) -> ${path}`);
    const l = HOLDOUT ? rankLoaders(setup, 0) : loaders(setup, 0);
    const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
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
  ptq: { name: string; deltaLoss: Record<number, number>; deltaAccuracy: Record<number, number>; kl: Record<number, number> }[];
  omega: { name: string; omega: Record<number, number> }[];
  fisherOmega: { name: string; omega: Record<number, number> }[];
  correlations: { bits: number; pair: string; spearman: number; kendall: number }[];
  seconds: { hessian: number; fisher: number; ptq: number };
  /** Not saved: per-layer, per-bits channel errors ½·h_c·‖Q_b(w_c) − w_c‖² from the per-channel Hessian. */
  channelErrors?: Map<string, Record<number, Float64Array>>;
  /** Not saved: per-layer channel pruning scores ½·(H_c/n_c)·‖w_c‖² (per-channel Hessian). */
  pruneScores?: Map<string, Float64Array>;
}

type ErrorMap = Map<string, Record<number, number>>;

/** The per-layer weight error by width of each error model, keyed by layer name. */
function weightErrors(sens: Pick<Sensitivity, 'ptq' | 'omega'>): { kl: ErrorMap; omega: ErrorMap; deltaLoss: ErrorMap } {
  return {
    kl: new Map(sens.ptq.map((p) => [p.name, p.kl])),
    omega: new Map(sens.omega.map((o) => [o.name, o.omega])),
    deltaLoss: new Map(sens.ptq.map((p) => [p.name, p.deltaLoss])),
  };
}

function sensitivity(setup: Setup, model: TensorModule, data: ReturnType<typeof loaders>): Sensitivity {
  const layers = search.describeLayers(model, [1, 28, 28]);
  let t = performance.now();
  const hessChannels = search.hessianTrace(model, data.hessian, { samples: QUICK ? 4 : 64, batches: 1, perChannel: true });
  // Layer-level copies (HAWQ-v2's Ω uses the layer's mean trace); the channel sums feed the per-channel arm.
  const hess = hessChannels.map(({ name, value, mean, weightCount }) => ({ name, value, mean, weightCount }));
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
    for (const [what, p] of [['PTQ Δloss', ptq.map((r) => r.deltaLoss[b]!)], ['PTQ KL', ptq.map((r) => r.kl[b]!)]] as const) {
      const add = (pair: string, other: number[]): void => void correlations.push({ bits: b, pair: `${pair} vs ${what}`, ...search.rankCorrelation(other, [...p]) });
      add('Hessian mean trace', hess.map((h) => h.mean));
      add('HAWQ-v2 Ω', omega.map((o) => o.omega[b]!));
      add('Fisher Ω', fisherOmega.map((o) => o.omega[b]!));
    }
  }
  log(`${setup.id}: sensitivity in ${hSec.toFixed(1)} s (Hessian) / ${fSec.toFixed(1)} s (Fisher) / ${pSec.toFixed(1)} s (PTQ)`);
  return {
    layers,
    hessian: hess.map((h) => ({ name: h.name, trace: h.value, meanTrace: h.mean })),
    fisher: fish.map((h) => ({ name: h.name, trace: h.value, meanTrace: h.mean })),
    ptq, omega, fisherOmega, correlations,
    seconds: { hessian: hSec, fisher: fSec, ptq: pSec },
    pruneScores: new Map(hessChannels.map((h) => [h.name, search.channelPruneScores(weights.get(h.name)!, h)])),
    channelErrors: new Map(hessChannels.map((h) => {
      const w = weights.get(h.name)!;
      const perWeight = w.size / w.shape[0]!;
      return [h.name, Object.fromEntries(PTQ_BITS.filter((b) => b >= 2).map((b) => {
        const e = search.channelQuantErrors(w, b);
        return [b, e.map((v, c) => 0.5 * (h.perChannel![c]! / perWeight) * v)];
      }))];
    })),
  };
}

// ------------------------------------------------------------------ size budget
const SIZE_CHOICES: BitChoice[] = [1, 2, 3, 4, 5, 6, 8].map((w) => ({ w, a: 8 }));

function sizePlans(sens: Sensitivity, budgetBits: number): Record<string, BitAssignment> {
  const size = search.sizeCost();
  const uniform = search.uniformAssignment(sens.layers, budgetBits, 8);
  const budget = search.totalCost(size, sens.layers, uniform);
  const plan = (errors: ErrorMap): BitAssignment =>
    search.allocateExact(search.layerOptions(sens.layers, SIZE_CHOICES, size, (l, c) => errors.get(l.name)![c.w]!), budget).assignment;
  const { kl, omega, deltaLoss } = weightErrors(sens);
  return {
    uniform,
    'searched (PTQ KL)': plan(kl),
    'searched (Hessian Ω)': plan(omega),
    'searched (PTQ Δloss)': plan(deltaLoss),
    ...(PER_CHANNEL ? { 'searched (Hessian Ω, per-channel)': perChannelPlan(sens, budget) } : {}),
    ...(ARMS.includes('prune0') ? { 'searched (Hessian Ω, 0-bit channels)': zeroBitPlan(sens, budget) } : {}),
  };
}

/**
 * Exact allocation whose layer options are the uniform widths plus, for b = 2..7, per-channel
 * mixes of b and b + 1 bits at b + 0.5 bits per weight (allocatePerChannel), all with the
 * per-channel Hessian error ½·Σ_c h_c·‖Q(w_c) − w_c‖².
 */
function perChannelPlan(sens: Sensitivity, budget: number): BitAssignment {
  const size = search.sizeCost();
  const { omega } = weightErrors(sens);
  const layers = sens.layers.map((l) => {
    const ch = sens.channelErrors!.get(l.name)!;
    const total = (b: number): number => ch[b]!.reduce((s, v) => s + v, 0);
    const options: { choice: BitChoice; cost: number; error: number }[] = SIZE_CHOICES.map((c) => ({
      choice: c, cost: size.layerCost(l, c.w, c.a), error: c.w === 1 ? omega.get(l.name)![1]! : total(c.w),
    }));
    for (const b of [2, 3, 4, 5, 6]) {
      const hi = b === 6 ? 8 : b + 1;
      const mix = search.allocatePerChannel(l, { [b]: ch[b]!, [hi]: ch[hi]! }, ((b + hi) / 2) * l.weightCount);
      if (mix.wPerChannel) options.push({ choice: { w: mix.w, a: 8, wPerChannel: mix.wPerChannel }, cost: mix.cost, error: mix.error });
    }
    return { name: l.name, options };
  });
  return search.allocateExact(layers, budget).assignment;
}

/**
 * Exact allocation over widths {1..8} and, in prunable layers, keep ratios {1, 0.875, 0.75, 0.625, 0.5}
 * (the rest at 0 bits, lowest ½·(H_c/n_c)·‖w_c‖² first), all in Hessian-Ω units: a kept channel
 * costs its ½·h_c·‖Q_w(w_c) − w_c‖², a pruned one its ½·h_c·‖w_c‖² (Q = 0); size = kept weights · w.
 */
function zeroBitPlan(sens: Sensitivity, budget: number): BitAssignment {
  const size = search.sizeCost();
  const { omega } = weightErrors(sens);
  const prunable = new Set(sens.layers.slice(0, -1).map((l) => l.name));
  const layers = sens.layers.map((l) => {
    const ch = sens.channelErrors!.get(l.name)!;
    const scores = sens.pruneScores!.get(l.name)!;
    const options: { choice: BitChoice; cost: number; error: number }[] = [{ choice: { w: 1, a: 8 }, cost: size.layerCost(l, 1, 8), error: omega.get(l.name)![1]! }];
    const counts = prunable.has(l.name) ? [...new Set([1, 0.875, 0.75, 0.625, 0.5].map((r) => search.keptChannels(l.outChannels, r)))] : [l.outChannels];
    for (const w of [2, 3, 4, 5, 6, 8]) {
      for (const kept of counts) {
        const choice = search.pruneChoice(l, scores, kept, w, 8);
        const widths = choice.wPerChannel ?? new Array<number>(l.outChannels).fill(w);
        const error = widths.reduce((e, b, c) => e + (b === 0 ? scores[c]! : ch[w]![c]!), 0);
        options.push({ choice, cost: search.layerChoiceCost(size, l, choice), error });
      }
    }
    return { name: l.name, options };
  });
  return search.allocateExact(layers, budget).assignment;
}

function describe(assignment: BitAssignment, layers: readonly LayerInfo[]): string {
  return layers.map((l) => `${l.name}:${bitsLabel(assignment[l.name]!)}`).join(' ');
}

/** 'w4a8', or 'w2/3a8(2:40,3:80)' for per-channel widths. */
function bitsLabel(c: BitChoice): string {
  if (!c.wPerChannel) return `w${c.w}a${c.a}`;
  const counts = new Map<number, number>();
  for (const b of c.wPerChannel) counts.set(b, (counts.get(b) ?? 0) + 1);
  const keys = [...counts.keys()].sort((x, y) => x - y);
  return `w${keys.join('/')}a${c.a}(${keys.map((k) => `${k}:${counts.get(k)}`).join(',')})`;
}

const CACHE = join(ROOT, 'runs', 'search', QUICK_FLAG ? 'qat-cache-quick.json' : 'qat-cache.json');

/** Calibration + QAT fine-tune + test accuracy; identical (model, assignment, seed, epochs) runs come from runs/search/qat-cache.json. */
export function qatScore(setup: Setup, model: TensorModule, assignment: BitAssignment, data: Pick<ReturnType<typeof loaders>, 'train' | 'test' | 'calibration'>, seed: number, inspect?: (m: TensorModule) => void, base?: PlanBase, split = '') {
  const steps = Math.ceil(EPOCHS * (data.train.dataset.length / 64));
  const start = FP32_EPOCHS === null ? '' : `|fp32e${FP32_EPOCHS}${HOLDOUT ? 'h10k' : ''}`;  // the starting point (default: the shared fp32 model)
  const key = `${setup.id}${start}${split ? `|${split}` : ''}|${JSON.stringify(Object.entries(assignment).sort())}|seed${seed}|steps${steps}${LR === 1e-4 ? '' : `|lr${LR}`}${base ? `|base${JSON.stringify(base)}` : ''}`;
  let cache: Record<string, { accuracy: number; loss: number }> = {};
  try {
    cache = JSON.parse(readFileSync(CACHE, 'utf8'));
  } catch {}
  if (!inspect && cache[key]) return { ...cache[key]!, cached: true };
  const sd: SearchData = { calibration: data.calibration, eval: data.test, train: data.train };
  const r = search.evaluateAssignmentSync(model, assignment, sd, { method: 'qat', qatSteps: steps, qatLr: LR, seed, inspect, ...(base ? { base } : {}) });
  try {
    cache = JSON.parse(readFileSync(CACHE, 'utf8'));
  } catch {}
  cache[key] = r;
  mkdirSync(dirname(CACHE), { recursive: true });
  writeFileAtomic(CACHE, new TextEncoder().encode(JSON.stringify(cache, null, 1)));
  return { ...r, cached: false };
}

/**
 * Candidates of the QAT-ranked arm at a weight-size budget (activations 8 bit): for each error
 * model (PTQ KL, Hessian Ω, PTQ Δloss), its exact allocation and, for every layer, the exact
 * allocation with that layer's chosen width taken away (the runners-up the error model nearly picked).
 */
function sizeCandidates(sens: Sensitivity, budget: number, uniform: BitAssignment): BitAssignment[] {
  const size = search.sizeCost();
  const out: BitAssignment[] = [uniform];
  const { kl, omega, deltaLoss } = weightErrors(sens);
  for (const errors of [kl, omega, deltaLoss]) {
    const options = search.layerOptions(sens.layers, SIZE_CHOICES, size, (l, c) => errors.get(l.name)![c.w]!);
    const best = search.allocateExact(options, budget).assignment;
    out.push(best);
    for (const [i, l] of sens.layers.entries()) {
      const without = options.map((o, j) => (j === i ? { ...o, options: o.options.filter((x) => x.choice.w !== best[l.name]!.w) } : o));
      try {
        out.push(search.allocateExact(without, budget).assignment);
      } catch (e) {
        if (!(e instanceof search.NoAllocationFitsError)) throw e;
      }
    }
  }
  return out;
}

function sizeSection(setup: Setup, model: TensorModule, sens: Sensitivity): unknown {
  const size = search.sizeCost();
  const rows: Json[] = [];
  for (const b of BUDGETS) {
    const plans = sizePlans(sens, b);
    const budget = search.totalCost(size, sens.layers, plans['uniform']!);
    let ranking: Json | undefined;
    if (ARMS.includes('qat')) {
      const r = qatRanked(setup, model, sizeCandidates(sens, budget, plans['uniform']!), sens.layers, undefined, `size@${b}b`);
      plans['searched (QAT-ranked)'] = r.best;
      ranking = r.ranking;
    }
    for (const [arm, assignment] of Object.entries(plans)) {
      if (!ARMS.includes(ARM_KEYS[arm] ?? arm)) continue;
      const accs: number[] = [];
      for (const seed of SEEDS) {
        const data = loaders(setup, seed);
        const t = performance.now();
        const r = qatScore(setup, model, assignment, data, seed, undefined, SIZE_BASE);
        accs.push(r.accuracy);
        log(`${setup.id} size@${b}b ${arm} seed ${seed}: ${pct(r.accuracy)} (${describe(assignment, sens.layers)}) ${r.cached ? 'cached' : `${((performance.now() - t) / 1000).toFixed(0)} s`}`);
      }
      const row = {
        budgetBits: b, budget, arm, assignment, cost: search.totalCost(size, sens.layers, assignment), accuracies: accs, seeds: SEEDS,
        mean: accs.reduce((s, x) => s + x, 0) / accs.length, epochs: EPOCHS, lr: LR, command: COMMAND, commit: gitCommit(),
        ...(arm === 'searched (QAT-ranked)' ? { ranking } : {}),
      };
      rows.push(row);
      // Merge into the recorded rows: a row is identified by (budget, arm).
      const prior = ((readResults()[setup.id] as Json | undefined)?.['size'] as { rows?: Json[] } | undefined)?.rows ?? [];
      // Rows of earlier runs without 'lr' used the default 1e-4.
      const sameRecipe = (r: Json): boolean => r['epochs'] === EPOCHS && ((r['lr'] as number | undefined) ?? 1e-4) === LR;
      const merged = [...prior.filter((r) => !(r['budgetBits'] === b && r['arm'] === arm && sameRecipe(r))), row]
        .sort((x, y) => (y['budgetBits'] as number) - (x['budgetBits'] as number) || (x['epochs'] as number) - (y['epochs'] as number) ||
          ((x['lr'] as number | undefined) ?? 1e-4) - ((y['lr'] as number | undefined) ?? 1e-4) || ARMS_ORDER.indexOf(x['arm'] as string) - ARMS_ORDER.indexOf(y['arm'] as string));
      saveResult(setup.id, 'size', { rows: merged, quick: QUICK });
    }
  }
  return rows;
}

// ------------------------------------------------------------------ size and BitOps budget, weight and activation bits
const WA_W = [1, 2, 3, 4, 5, 6, 8];
const WA_A = [2, 3, 4, 5, 6, 8];
/** Every arm of this experiment calibrates activations with the MSE observer (min-max ranges are poor at 2-3 bits). */
const WA_BASE: PlanBase = { activationMethod: 'mse' };
const WA_ORDER = ['uniform', 'searched (Hessian Ω + act. Δloss)', 'searched (PTQ KL w + a)', 'searched (QAT-ranked)'];

/**
 * Uniform WbAb against per-layer (w, a) plans chosen by the exact allocation under BOTH the weight
 * size of uniform b-bit weights and the BitOps of uniform WbAb (activation bits are not free), the
 * error of (w, a) = weight error + input-activation error (Hessian Ω + PTQ Δloss of the input
 * alone, or PTQ KL + KL). Same calibration (MSE activation ranges) + QAT fine-tune per arm.
 */
function sizeWaSection(setup: Setup, model: TensorModule, sens: Sensitivity): unknown {
  const data0 = loaders(setup, 0);
  let t = performance.now();
  const act = search.activationPerturbation(model, data0.calibration, data0.search, WA_A, { method: 'mse' });
  const actSeconds = (performance.now() - t) / 1000;
  log(`${setup.id}: activation perturbation in ${actSeconds.toFixed(1)} s`);
  const size = search.sizeCost();
  const ops = search.bitOpsCost();
  const choices: BitChoice[] = WA_W.flatMap((w) => WA_A.map((a) => ({ w, a })));
  const { omega, kl: klW } = weightErrors(sens);
  const lossA = new Map(act.map((p) => [p.name, p.deltaLoss]));
  const klA = new Map(act.map((p) => [p.name, p.kl]));
  const rows: Json[] = [];
  for (const b of BUDGETS) {
    const ab = ACT_BITS ?? b;
    const uniform = search.uniformAssignment(sens.layers, b, ab);
    const budgets = [search.totalCost(size, sens.layers, uniform), search.totalCost(ops, sens.layers, uniform)];
    const plan = (error: (l: LayerInfo, c: BitChoice) => number, minA = 2): BitAssignment =>
      search.allocateExactMulti(search.layerOptionsMulti(sens.layers, choices.filter((c) => c.a >= minA), [size, ops], error), budgets).assignment;
    const plans: Record<string, BitAssignment> = {
      uniform,
      'searched (Hessian Ω + act. Δloss)': plan((l, c) => omega.get(l.name)![c.w]! + Math.max(0, lossA.get(l.name)![c.a]!)),
      'searched (PTQ KL w + a)': plan((l, c) => klW.get(l.name)![c.w]! + Math.max(0, klA.get(l.name)![c.a]!)),
    };
    let ranking: Json | undefined;
    if (ARMS.includes('qat')) {
      // Candidates: the exact allocation under both budgets for each error model with the weight
      // error scaled by α (the two terms' units differ), over all (w, a) and over a >= 3 only.
      const candidates: BitAssignment[] = [uniform];
      for (const [w, a] of [[omega, lossA], [klW, klA]] as const) {
        for (const alpha of [1 / 16, 1 / 4, 1, 4, 16]) {
          for (const minA of [2, 3]) {
            try {
              candidates.push(plan((l, c) => alpha * w.get(l.name)![c.w]! + Math.max(0, a.get(l.name)![c.a]!), minA));
            } catch (e) {
              if (!(e instanceof search.NoAllocationFitsError)) throw e; // a >= 3 cannot fit a W<b>A2 BitOps budget
            }
          }
        }
      }
      const r = qatRanked(setup, model, candidates, sens.layers, WA_BASE, `W${b}A${ab}`);
      plans['searched (QAT-ranked)'] = r.best;
      ranking = r.ranking;
    }
    for (const [arm, assignment] of Object.entries(plans)) {
      const accs: number[] = [];
      for (const seed of SEEDS) {
        t = performance.now();
        const r = qatScore(setup, model, assignment, loaders(setup, seed), seed, undefined, WA_BASE);
        accs.push(r.accuracy);
        log(`${setup.id} size+bitops@W${b}A${ab} ${arm} seed ${seed}: ${pct(r.accuracy)} (${describe(assignment, sens.layers)}) ${r.cached ? 'cached' : `${((performance.now() - t) / 1000).toFixed(0)} s`}`);
      }
      rows.push({
        budgetBits: b, actBits: ab, budgets, arm, assignment, size: search.totalCost(size, sens.layers, assignment), bitops: search.totalCost(ops, sens.layers, assignment),
        accuracies: accs, seeds: SEEDS, mean: accs.reduce((s, x) => s + x, 0) / accs.length, epochs: EPOCHS, lr: LR,
        ...(arm === 'searched (QAT-ranked)' ? { ranking } : {}),
      });
    }
  }
  return { rows, activation: act, activationSeconds: actSeconds };
}

/**
 * Ranks budget-feasible candidates by the fine-tune itself (the MOHAQ beacon idea taken to its
 * end: every shortlisted candidate is a beacon): each gets the arms' calibration + QAT recipe on
 * the training set minus 10,000 held-out training images (seed 0) and is scored on those 10,000;
 * the best accuracy (then the lowest loss) wins. The test set plays no part.
 */
function qatRanked(setup: Setup, model: TensorModule, candidates: readonly BitAssignment[], layers: readonly LayerInfo[], base: PlanBase | undefined, label: string): { best: BitAssignment; ranking: Json } {
  if (!HOLDOUT && !QUICK) throw new Error('the QAT-ranked arm needs --holdout: its fp32 start must not have seen the images it ranks on');
  const seen = new Set<string>();
  const unique = candidates.filter((c) => {
    const k = JSON.stringify(Object.entries(c).sort());
    return seen.has(k) ? false : (seen.add(k), true);
  });
  const data = rankLoaders(setup, 0);
  const t0 = performance.now();
  const scored = unique.map((assignment, i) => {
    const t = performance.now();
    const r = qatScore(setup, model, assignment, data, 0, undefined, base, 'rank10k');
    log(`${setup.id} ${label} rank ${i + 1}/${unique.length}: held-out ${pct(r.accuracy)} loss ${r.loss.toFixed(4)} (${describe(assignment, layers)}) ${r.cached ? 'cached' : `${((performance.now() - t) / 1000).toFixed(0)} s`}`);
    return { assignment, accuracy: r.accuracy, loss: r.loss };
  });
  const order = [...scored].sort((x, y) => y.accuracy - x.accuracy || x.loss - y.loss);
  return {
    best: order[0]!.assignment,
    ranking: {
      candidates: order.map((c) => ({ bits: describe(c.assignment, layers), heldOutAccuracy: c.accuracy, heldOutLoss: c.loss })),
      seconds: (performance.now() - t0) / 1000,
    },
  };
}

// ------------------------------------------------------------------ latency budget
function intModelOf(setup: Setup, model: TensorModule, assignment: BitAssignment, data: ReturnType<typeof loaders>, sensLayers: readonly LayerInfo[]) {
  let im: IntModel | null = null;
  const score = qatScore(setup, model, assignment, data, 0, (m) => {
    const x = data.calibration[Symbol.iterator]().next().value!.x;
    im = convert(m, { sample: x });
  });
  return { score, im: im! as IntModel, layers: sensLayers };
}

function latencySection(setup: Setup, model: TensorModule, sens: Sensitivity): unknown {
  const sample = loaders(setup, 0).calibration[Symbol.iterator]().next().value!.x;
  const latency = search.latencyCost({ context: { model, sample }, batch: 64, repeats: 20, onMeasure: (k) => log(`  measuring ${k}`) });
  // Weight widths only, activations 8 bit: the activation error is not modelled by the sensitivity pass.
  const choices: BitChoice[] = [2, 3, 4, 5, 6, 8].map((w) => ({ w, a: 8 }));
  const table = sens.layers.map((l) => ({ name: l.name, cost: Object.fromEntries(choices.map((c) => [`w${c.w}a${c.a}`, latency.layerCost(l, c.w, c.a)])) }));
  const w8a8 = search.uniformAssignment(sens.layers, 8, 8);
  const base = search.totalCost(latency, sens.layers, w8a8);
  const { kl } = weightErrors(sens);
  const err = (l: LayerInfo, c: BitChoice): number => kl.get(l.name)![c.w]!;
  const front = search.paretoFront(search.layerOptions(sens.layers, choices, latency, err));
  const target = base / 1.3;
  const fastest = front[0]!;
  const withinTarget = front.filter((f) => f.cost <= target);
  const pick = withinTarget[withinTarget.length - 1] ?? null;
  const data = loaders(setup, 0);
  const arms: { arm: string; assignment: BitAssignment; estimate: number }[] = [{ arm: 'uniform W8A8', assignment: w8a8, estimate: base }];
  if (pick) arms.push({ arm: 'latency-budget plan', assignment: pick.assignment, estimate: pick.cost });
  const w4a8 = search.uniformAssignment(sens.layers, 4, 8);
  arms.push({ arm: 'uniform W4A8 (reference)', assignment: w4a8, estimate: search.totalCost(latency, sens.layers, w4a8) });
  if (!pick || JSON.stringify(pick.assignment) !== JSON.stringify(fastest.assignment)) arms.push({ arm: 'fastest plan in the table', assignment: fastest.assignment, estimate: fastest.cost });
  // Same calibration + QAT fine-tune per arm, converted; then all IntModels timed interleaved.
  const built = arms.map((a) => ({ ...a, ...intModelOf(setup, model, a.assignment, data, sens.layers) }));
  const perSample = sample.size / sample.shape[0]!;
  const x = Float32Array.from(sample.data.subarray(0, 64 * perSample));
  const times = search.measureModelsInterleaved(built.map((b) => b.im), x, 64, 40);
  const rows: Json[] = built.map((b, i) => ({
    arm: b.arm, assignment: b.assignment, estimate: b.estimate, accuracy: b.score.accuracy, usPerSample: times[i]!,
    ...(i > 0 ? { speedup: times[0]! / times[i]! } : {}),
  }));
  log(`${setup.id} latency: ${rows.map((r) => `${String(r['arm'])} ${(r['usPerSample'] as number).toFixed(2)} µs ${pct(r['accuracy'] as number)}`).join('; ')}`);
  return { kernels: intKernelsBackend(), table, rows, target, reachable: pick !== null };
}

// ------------------------------------------------------------------ latency budget with pruned (0-bit) channels
const KEEP_RATIOS = flagOr('keep', '1,0.875,0.75,0.625,0.5,0.375,0.25').split(',').map(Number);
const SPEEDUP = Number(flagOr('speedup', '1.35'));
/** Recovery fine-tune steps before a pruning option's error is measured (0: the error right after pruning). */
const RECOVER_STEPS = Number(flagOr('recover-steps', '200'));
const PRUNE_ERROR = flagOr('prune-error', 'kl') as 'kl' | 'deltaLoss';

/** The first `n` calibration images as one batch. */
function firstImages(data: ReturnType<typeof loaders>, n: number): InstanceType<typeof Tensor> {
  const parts: Float32Array[] = [];
  let shape: number[] = [];
  let count = 0;
  for (const { x } of data.calibration) {
    shape = x.shape.slice(1);
    parts.push(x.data as Float32Array);
    count += x.shape[0]!;
    if (count >= n) break;
  }
  const per = shape.reduce((p, d) => p * d, 1);
  const out = new Float32Array(n * per);
  let at = 0;
  for (const p of parts) {
    const take = Math.min(p.length, out.length - at);
    out.set(p.subarray(0, take), at);
    at += take;
  }
  return new Tensor(out, [n, ...shape]);
}

function pruneSection(setup: Setup, model: TensorModule, sens: Sensitivity): unknown {
  const data = loaders(setup, 0);
  const sample = firstImages(data, 256);
  const sample64 = firstImages(data, 64);
  // Batch 256: with the AMX kernels LeNet-5 runs ~2 µs/sample, and batch-64 runs are too short to time reliably.
  const context = { model, sample };
  const latency = search.latencyCost({ context, batch: 256, repeats: 30, onMeasure: (k) => log(`  measuring ${k}`) });
  const layers = sens.layers;
  const { kl } = weightErrors(sens);
  const t0 = performance.now();
  const recoveryBatches: { x: InstanceType<typeof Tensor>; y: InstanceType<typeof Tensor> }[] = [];
  for (const b of data.train) {
    if (recoveryBatches.length >= RECOVER_STEPS) break;
    recoveryBatches.push(b);
  }
  const options = search.pruneLayerOptions(model, layers, data.search, latency, {
    ratios: KEEP_RATIOS, widths: [8], scores: sens.pruneScores, widthError: (l, w) => kl.get(l.name)![w]!, error: PRUNE_ERROR,
    ...(RECOVER_STEPS > 0 ? { recovery: { batches: recoveryBatches, lr: LR, seed: 0 } } : {}),
    onProgress: (d, t) => log(`  pruning error ${d}/${t}`),
  });
  const w8a8 = search.uniformAssignment(layers, 8, 8);
  const base = latency.w8a8Total!();
  // Option costs are latencies plus a constant `costOffset` (0 unless the layers' savings overlap, see pruneLayerOptions).
  const offset = options.costOffset;
  const budget = base / SPEEDUP;
  // Each allocation is checked by measuring the whole compacted IntModel against W8A8 (paired, interleaved).
  const measured = search.allocateMeasured(options, budget + offset, (a) => {
    const d = search.measureAssignmentDelta(context, a.assignment, { batch: 256, repeats: 40 });
    log(`  allocation at ${(a.cost - offset).toFixed(2)} µs (estimate) measures ${(base * d.changed / d.base).toFixed(2)} µs (ratio ${(d.base / d.changed).toFixed(3)}x)`);
    return base * (d.changed / d.base) + offset;
  });
  const searchSeconds = (performance.now() - t0) / 1000;
  const plan = measured.allocation.assignment;
  log(`${setup.id} prune plan: ${describe(plan, layers)} (estimate ${(measured.allocation.cost - offset).toFixed(2)} µs, measured ${(measured.measured - offset).toFixed(2)} µs, budget ${budget.toFixed(2)} µs, W8A8 ${base.toFixed(2)} µs)`);
  const arms: { arm: string; assignment: BitAssignment }[] = [{ arm: 'uniform W8A8', assignment: w8a8 }, { arm: 'latency-budget plan (pruned channels)', assignment: plan }];
  const rows: Json[] = [];
  const ims: IntModel[] = [];
  for (const a of arms) {
    const accs: number[] = [];
    for (const seed of SEEDS) {
      const d = loaders(setup, seed);
      const t = performance.now();
      let im: IntModel | null = null;
      const r = qatScore(setup, model, a.assignment, d, seed, seed === SEEDS[0] ? (m) => (im = convert(m, { sample: sample64 })) : undefined);
      if (im) ims.push(im);
      accs.push(r.accuracy);
      log(`${setup.id} prune ${a.arm} seed ${seed}: ${pct(r.accuracy)} ${r.cached ? 'cached' : `${((performance.now() - t) / 1000).toFixed(0)} s`}`);
    }
    const estimate = options.reduce((sum, o) => sum + o.options.find((p) => JSON.stringify(p.choice) === JSON.stringify(a.assignment[o.name]))!.cost, 0) - offset;
    rows.push({ arm: a.arm, assignment: a.assignment, accuracies: accs, seeds: SEEDS, mean: accs.reduce((x, y) => x + y, 0) / accs.length, estimate });
  }
  // Whole fine-tuned, converted (compacted) IntModels, timed interleaved at batch 256 and at the search's batch 64.
  const timing: Json = {};
  for (const b of [256, 64]) {
    const x = Float32Array.from(sample.data.subarray(0, b * (sample.size / sample.shape[0]!)));
    const times = search.measureModelsInterleaved(ims, x, b, b === 256 ? 30 : 60);
    timing[`batch${b}`] = { usPerSample: times, speedup: times[0]! / times[1]! };
    log(`${setup.id} prune timing batch ${b}: W8A8 ${times[0]!.toFixed(2)} µs, plan ${times[1]!.toFixed(2)} µs, ${(times[0]! / times[1]!).toFixed(3)}x`);
  }
  const table = options.map((o) => ({
    name: o.name,
    options: o.options.map((p) => ({ kept: p.choice.wPerChannel ? p.choice.wPerChannel.filter((v) => v !== 0).length : layers.find((l) => l.name === o.name)!.outChannels, cost: p.cost, error: p.error })),
  }));
  return {
    kernels: intKernelsBackend(), base, budget, speedupTarget: SPEEDUP, keepRatios: KEEP_RATIOS, table, costOffset: offset, latencyBatch: 256, searchMeasured: measured.measured - offset,
    rounds: measured.rounds.map((r) => ({ ...r, estimate: r.estimate - offset, measured: r.measured - offset })), fits: measured.fits,
    kept: Object.fromEntries(layers.map((l) => [l.name, plan[l.name]!.wPerChannel ? plan[l.name]!.wPerChannel!.filter((v) => v !== 0).length : l.outChannels])),
    rows, timing, searchSeconds, epochs: EPOCHS, lr: LR, recoverSteps: RECOVER_STEPS, pruneError: PRUNE_ERROR,
  };
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
      out.push('| layer | Tr(H) | Tr(H)/n | Fisher Tr | Ω 2b | PTQ Δloss 2b | Δloss 3b | KL 2b | KL 3b | KL 4b | rank Tr/n | rank Ω 3b | rank KL 3b | rank Δloss 2b |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
      const rank = (v: number[]): number[] => search.ranks(v.map((x) => -x));
      const rt = rank(s.hessian.map((h) => h.meanTrace));
      const ro = rank(s.omega.map((o) => o.omega[3]!));
      const rk = rank(s.ptq.map((p) => p.kl[3]!));
      const rl = rank(s.ptq.map((p) => p.deltaLoss[2]!));
      const e = (x: number): string => x.toExponential(2);
      s.hessian.forEach((h, i) => {
        const p = s.ptq[i]!;
        out.push(`| ${h.name} | ${e(h.trace)} | ${e(h.meanTrace)} | ${e(s.fisher[i]!.trace)} | ${e(s.omega[i]!.omega[2]!)} | ${p.deltaLoss[2]!.toFixed(4)} | ${p.deltaLoss[3]!.toFixed(4)} | ${e(p.kl[2]!)} | ${e(p.kl[3]!)} | ${e(p.kl[4]!)} | ${rt[i]} | ${ro[i]} | ${rk[i]} | ${rl[i]} |`);
      });
      out.push('', 'Rank 1 = most sensitive. Rank correlations over the layers (Spearman ρ, Kendall τ-b):');
      out.push('', '| bits | pair | Spearman ρ | Kendall τ-b |', '|---|---|---|---|');
      for (const c of s.correlations.filter((c) => [2, 3, 4].includes(c.bits))) out.push(`| ${c.bits} | ${c.pair} | ${c.spearman.toFixed(3)} | ${c.kendall.toFixed(3)} |`);
      out.push('');
    }
    const size = entry['size'] as { rows: Json[] } | undefined;
    if (size) {
      out.push('Size budget: every arm gets the same calibration (512 training images) + QAT fine-tune (Adam at the lr shown, cosine, batch 64, frozen MSE weight scales, straight-through weights; activations 8 bit) and is tested on the full test set:', '');
      out.push('| budget | arm | weight bits per layer | size (bits) | fine-tune | test accuracy per seed | mean | vs uniform |', '|---|---|---|---|---|---|---|---|');
      for (const r of size.rows) {
        const a = r['assignment'] as BitAssignment;
        const lrOf = (x: Json): number => (x['lr'] as number | undefined) ?? 1e-4;
        const uni = size.rows.find((u) => u['budgetBits'] === r['budgetBits'] && u['arm'] === 'uniform' && u['epochs'] === r['epochs'] && lrOf(u) === lrOf(r));
        const diff = uni ? `${(((r['mean'] as number) - (uni['mean'] as number)) * 100).toFixed(2)} pt` : '';
        out.push(`| ${String(r['budgetBits'])}-bit size | ${String(r['arm'])} | ${Object.entries(a).map(([n, c]) => `${n}:${bitsLabel(c).replace(/a\d+/, '')}`).join(' ')} | ${String(r['cost'])} | ${String(r['epochs'])} epoch, lr ${lrOf(r)} | ${(r['accuracies'] as number[]).map((x, i) => `${pct(x)} (s${(r['seeds'] as number[])[i]})`).join(', ')} | ${pct(r['mean'] as number)} | ${diff} |`);
      }
      const cmds = [...new Set(size.rows.map((r) => String(r['command'])))];
      out.push('', `Commands: ${cmds.map((c) => `\`${c}\``).join('; ')}.`, '');
    }
    for (const waKey of Object.keys(entry).filter((k) => k === 'sizewa' || k.startsWith('sizewa ')).sort()) {
      const wa = entry[waKey] as { rows: Json[]; activation: { name: string; deltaLoss: Record<number, number>; kl: Record<number, number> }[]; command: string; commit: string };
      out.push(`Size and BitOps budget, weight AND activation bits (\`${wa.command}\`, commit ${wa.commit}): uniform WbAb against the exact allocation over (w ∈ {${WA_W.join(',')}}, a ∈ {${WA_A.join(',')}}) per layer under both the weight size of uniform b-bit weights and the BitOps of uniform WbAb. Error of (w, a) per layer = weight error (HAWQ-v2 Ω, or PTQ KL) + the loss increase (or KL) when only that layer's input is quantized to a bits (\`activationPerturbation\`, MSE range, 2,000 held-out training images). Every arm: the same calibration (512 training images, MSE activation ranges, frozen) + QAT fine-tune (Adam, cosine, batch 64, straight-through weights) and the full test set.`, '');
      out.push('| layer | act. Δloss 2b | 3b | 4b | 8b | act. KL 2b | 3b |', '|---|---|---|---|---|---|---|');
      for (const a of wa.activation) out.push(`| ${a.name} | ${a.deltaLoss[2]!.toFixed(4)} | ${a.deltaLoss[3]!.toFixed(4)} | ${a.deltaLoss[4]!.toFixed(4)} | ${a.deltaLoss[8]!.toFixed(4)} | ${a.kl[2]!.toExponential(2)} | ${a.kl[3]!.toExponential(2)} |`);
      out.push('', '| budget | arm | bits per layer | size (bits) | BitOps | fine-tune | test accuracy per seed | mean | vs uniform |', '|---|---|---|---|---|---|---|---|---|');
      const sorted = [...wa.rows].sort((x, y) => (y['budgetBits'] as number) - (x['budgetBits'] as number) || WA_ORDER.indexOf(x['arm'] as string) - WA_ORDER.indexOf(y['arm'] as string));
      for (const r of sorted) {
        const a = r['assignment'] as BitAssignment;
        const uni = wa.rows.find((u) => u['budgetBits'] === r['budgetBits'] && u['arm'] === 'uniform');
        const diff = uni ? `${(((r['mean'] as number) - (uni['mean'] as number)) * 100).toFixed(2)} pt` : '';
        const b = r['budgetBits'] as number;
        out.push(`| W${b}A${b} size + BitOps | ${String(r['arm'])} | ${Object.entries(a).map(([n, c]) => `${n}:${bitsLabel(c)}`).join(' ')} | ${String(r['size'])} | ${String(r['bitops'])} | ${String(r['epochs'])} epoch, lr ${String(r['lr'])} | ${(r['accuracies'] as number[]).map((x, i) => `${pct(x)} (s${(r['seeds'] as number[])[i]})`).join(', ')} | ${pct(r['mean'] as number)} | ${diff} |`);
      }
      out.push('');
    }
    const lat = entry['latency'] as { rows: Json[]; kernels: unknown; target: number; command: string; reachable: boolean; commit: string; table: { name: string; cost: Record<string, number> }[] } | undefined;
    if (lat) {
      out.push(`Latency table on lowbit's integer runtime as in /work/main at commit ${lat.commit} (\`IntModel.run\`, native executor; kernels ${JSON.stringify(lat.kernels)}), activations 8 bit: cost(L, w) = T₈/n + (r − 1)·T₈ in µs per sample, r = T(L at w, others W8A8)/T₈ from paired interleaved whole-model runs (min wall time of 20 rounds, 64 samples):`, '');
      const keys = Object.keys(lat.table[0]!.cost);
      out.push(`| layer | ${keys.join(' | ')} |`, `|---|${keys.map(() => '---').join('|')}|`);
      for (const t of lat.table) out.push(`| ${t.name} | ${keys.map((k) => t.cost[k]!.toFixed(1)).join(' | ')} |`);
      out.push('', `Whole IntModels after the same calibration + QAT fine-tune (seed 0), µs per sample (min wall time of 40 interleaved rounds, 64 samples per run) (\`${lat.command}\`):`, '');
      out.push('| arm | bits | table estimate (µs) | measured (µs/sample) | speedup vs W8A8 | accuracy | Δ vs W8A8 |', '|---|---|---|---|---|---|---|');
      const ref = lat.rows[0]!['accuracy'] as number;
      for (const r of lat.rows) {
        const a = r['assignment'] as BitAssignment;
        out.push(`| ${String(r['arm'])} | ${Object.entries(a).map(([n, c]) => `${n}:w${c.w}a${c.a}`).join(' ')} | ${(r['estimate'] as number).toFixed(1)} | ${(r['usPerSample'] as number).toFixed(1)} | ${r['speedup'] ? `${(r['speedup'] as number).toFixed(2)}x` : '1.00x'} | ${pct(r['accuracy'] as number)} | ${(((r['accuracy'] as number) - ref) * 100).toFixed(2)} pt |`);
      }
      out.push('', lat.reachable ? '' : `No plan in the table reaches the 1.3x latency target (${lat.target.toFixed(1)} µs).`, '');
    }
    for (const key of Object.keys(entry).filter((k) => k.startsWith('prune')).sort()) out.push(...pruneMarkdown(entry[key] as PruneResult));
  }
  return out.join('\n');
}

interface PruneResult {
  kernels: unknown; base: number; budget: number; speedupTarget: number; keepRatios: number[]; fits: boolean; epochs: number; lr: number; command: string; commit: string;
  recoverSteps?: number; pruneError?: string; costOffset?: number; latencyBatch?: number; searchMeasured?: number;
  table: { name: string; options: { kept: number; cost: number; error: number }[] }[];
  rounds: { estimate: number; measured: number; error: number }[];
  kept: Record<string, number>;
  rows: { arm: string; accuracies: number[]; seeds: number[]; mean: number; estimate: number }[];
  timing: Record<string, { usPerSample: number[]; speedup: number }>;
}

function pruneMarkdown(pr: PruneResult): string[] {
  const out: string[] = [];
  out.push(`Latency budget with pruned (0-bit) channels (\`${pr.command}\`, commit ${pr.commit}; kernels ${JSON.stringify(pr.kernels)}): options per layer = keep ratios {${pr.keepRatios.join(', ')}} at 8-bit weights, the kept channels those of highest ½·(H_c/n_c)·‖w_c‖² (per-channel Hessian); error = ${pr.recoverSteps ? `${pr.pruneError === 'deltaLoss' ? 'loss increase' : 'output KL'} of the float model with the channels zeroed and then fine-tuned ${pr.recoverSteps} Adam steps (lr ${pr.lr}, channels held at 0), against the same fine-tune unpruned` : 'output KL of the float model with the channels zeroed'} (2,000 training images) + the layer's PTQ KL at 8 bits; cost = the measured change of the whole compacted IntModel with only that layer pruned (paired interleaved ratio to W8A8, batch ${pr.latencyBatch ?? 64}), spread over the layers (pruneLayerOptions) with T₈ = ${pr.base.toFixed(2)} µs/sample${pr.costOffset ? ` (the layers' largest savings overlap and sum to T₈ + ${pr.costOffset.toFixed(2)} µs, so the option costs below carry that offset; estimates quoted below have it removed)` : ''}. Budget T₈/${pr.speedupTarget} = ${pr.budget.toFixed(2)} µs.`, '');
  out.push('| layer | ' + 'kept channels: cost µs / error |', '|---|---|');
  for (const t of pr.table) out.push(`| ${t.name} | ${t.options.map((o) => `${o.kept}: ${o.cost.toFixed(2)} / ${o.error.toExponential(1)}`).join('; ')} |`);
  out.push('', `Allocations measured (whole compacted IntModel vs W8A8, paired): ${pr.rounds.map((r) => `estimate ${r.estimate.toFixed(2)} → measured ${r.measured.toFixed(2)} µs (${(pr.base / r.measured).toFixed(2)}x)`).join('; ')}; plan keeps ${Object.entries(pr.kept).map(([n, k]) => `${n} ${k}`).join(', ')} channels${pr.fits ? '' : ' (no measured plan fit the budget; the fastest measured is kept)'}.`, '');
  out.push(`Fine-tune: the same for both arms (calibration on 512 training images, QAT ${pr.epochs} epoch(s), Adam ${pr.lr} cosine, batch 64, pruned channels held at 0); full test set:`, '');
  out.push('| arm | test accuracy per seed | mean | vs W8A8 |', '|---|---|---|---|');
  const ref = pr.rows[0]!.mean;
  for (const r of pr.rows) out.push(`| ${r.arm} | ${r.accuracies.map((a, i) => `${pct(a)} (s${r.seeds[i]})`).join(', ')} | ${pct(r.mean)} | ${((r.mean - ref) * 100).toFixed(2)} pt |`);
  const t256 = pr.timing['batch256']!;
  const t64 = pr.timing['batch64']!;
  out.push('', `Speed of the fine-tuned, converted IntModels (seed ${pr.rows[0]!.seeds[0]}) on the native executor, min wall time of interleaved runs on a shared 2-core machine (ratios, not absolute times, are the figure): batch 256: W8A8 ${t256.usPerSample[0]!.toFixed(2)} µs/sample, plan ${t256.usPerSample[1]!.toFixed(2)} µs/sample, **${t256.speedup.toFixed(2)}x**; batch 64: ${t64.usPerSample[0]!.toFixed(2)} vs ${t64.usPerSample[1]!.toFixed(2)} µs/sample, **${t64.speedup.toFixed(2)}x**; the search's own check (batch ${pr.latencyBatch ?? 64}, before fine-tuning): ${pr.searchMeasured ? `${(pr.base / pr.searchMeasured).toFixed(2)}x` : '–'}.`, '');
  return out;
}

function writeDoc(): void {
  // (the --act-bits results once rewrote the generated section with their own rows only)
  if (QUICK || RESULTS !== MAIN_RESULTS || !existsSync(DOC)) return;
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
// Run only as a script: bench/search/spos.ts imports the recipe above (loaders, fp32Model, qatScore).
if (resolve(process.argv[1] ?? '') === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--doc-only')) {
    writeDoc();
    process.exit(0);
  }
  log(`backend ${getBackend()}, threads ${process.env.LOWBIT_THREADS}, kernels ${JSON.stringify(intKernelsBackend())}${QUICK ? ', QUICK' : ''}`);
  for (const name of MODELS) {
    const setup = SETUPS[name];
    if (!setup) throw new Error(`unknown model '${name}' (known: ${Object.keys(SETUPS).join(', ')})`);
    const model = fp32Model(setup);
    const data = loaders(setup, 0);
    log(`${setup.id}: fp32 test accuracy ${pct(evaluate(model, data.test).accuracy)}`);
    const sens = sensitivity(setup, model, data);
    const { channelErrors: _unsaved, pruneScores: _unsavedScores, ...saved } = sens;
    if (SECTIONS.includes('sensitivity')) saveResult(setup.id, 'sensitivity', { ...saved, command: COMMAND, commit: gitCommit(), quick: QUICK });
    if (SECTIONS.includes('size')) sizeSection(setup, model, sens);
    if (SECTIONS.includes('sizewa')) saveResult(setup.id, EPOCHS === 1 && LR === 1e-4 ? 'sizewa' : `sizewa ${EPOCHS}ep ${LR}`, { ...(sizeWaSection(setup, model, sens) as Json), command: COMMAND, commit: gitCommit(), quick: QUICK });
    if (SECTIONS.includes('latency')) saveResult(setup.id, 'latency', { ...(latencySection(setup, model, sens) as Json), command: COMMAND, commit: gitCommit(), quick: QUICK });
    // One record per fine-tune recipe: 'prune' for the size arms' recipe (1 epoch, 1e-4), else 'prune <epochs>ep <lr>' (+ ' recover<N>' unless 200 steps).
    if (SECTIONS.includes('prune')) saveResult(setup.id, `${EPOCHS === 1 && LR === 1e-4 ? 'prune' : `prune ${EPOCHS}ep ${LR}`}${RECOVER_STEPS === 200 ? '' : ` recover${RECOVER_STEPS}`}`, { ...(pruneSection(setup, model, sens) as Json), command: COMMAND, commit: gitCommit(), quick: QUICK });
    writeDoc();
  }
}
