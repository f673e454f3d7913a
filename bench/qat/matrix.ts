/**
 * The QAT experiment matrix: every row of docs/results.md is one run defined here (model, dataset,
 * scheme, estimator, epochs, optimizer and schedule, seed, initialisation), trained through the
 * public API (createModel / prepareQat / fit / trainAdmm / trainAskew) on the native backend.
 *
 *   LOWBIT_THREADS=2 node --import tsx bench/qat/matrix.ts [--only GLOB[,GLOB]] [--quick] [--force] [--list]
 *
 * Resumable: after each run its record is written to docs/results/qat.json (replacing an earlier
 * record of the same id); runs already recorded are skipped unless `--force`. Runs that start from
 * an fp32 checkpoint (`init: <fp32 run id>`) load runs/qat/ckpt/<id>.safetensors, training that fp32
 * run first when the file is missing (fresh clone). `--quick` trains on tiny subsets (2,000 train /
 * 500 test samples, 1 epoch) into runs/qat/quick.json: a smoke test of the whole matrix.
 *
 * Flags
 *   --only a,b    run ids matching these globs (`*` = anything), e.g. 'lenet5-mnist/w4a4/*'
 *   --force       re-run even if the id is recorded
 *   --quick       smoke test on subsets (results to runs/qat/quick.json)
 *   --list        print the run ids (with [done] marks) and exit
 *   --out PATH    results file (default docs/results/qat.json, or runs/qat/quick.json with --quick)
 *   --seed N      override every run's seed (id gets a `@sN` suffix)
 *   --allow-reference  run full runs even when the native backend is not loaded
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.LOWBIT_THREADS ??= '2';

// The native addon may be mid-rebuild (another engineer's `npm run build:native`): wait for it.
{
  const addon = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'lowbit_native.node');
  const deadline = Date.now() + 600_000;
  let warned = false;
  while (!existsSync(addon) && Date.now() < deadline && process.env.LOWBIT_BACKEND !== 'reference') {
    if (!warned) process.stdout.write(`waiting for ${addon} (native rebuild in progress?)\n`);
    warned = true;
    await new Promise((r) => setTimeout(r, 2000));
  }
  if (warned) await new Promise((r) => setTimeout(r, 3000));
}

const { getBackend } = await import('../../src/backend/index.ts');
const { DATASET_STATS, DataLoader, loadDataset, take } = await import('../../src/data/index.ts');
const nn = await import('../../src/nn/index.ts');
const { SGD, Adam, CosineAnnealingLR } = await import('../../src/optim/index.ts');
const { manualSeed } = await import('../../src/tensor/index.ts');
const { fit, evaluate } = await import('../../src/train/fit.ts');
const { saveCheckpoint, loadCheckpoint } = await import('../../src/train/checkpoint.ts');
const { prepareQat, quantizedLayers, setQuantProgress, formatQuantTable, qatParamGroups } = await import('../../src/quant/qat/index.ts');
const { qconfigFor, BINARY_KINDS, binarySign, int8PerChannelSym } = await import('../../src/quant/config/index.ts');
const { trainAdmm, trainAskew } = await import('../../src/quant/constrained/index.ts');

import type { Dataset } from '../../src/data/index.ts';
import type { Module, TensorModule } from '../../src/nn/index.ts';
import type { Tensor } from '../../src/tensor/index.ts';
import type { EpochRecord, TrainOptimizer } from '../../src/train/fit.ts';
import type { Estimator, QConfigForOptions, QuantPlan, Scheme } from '../../src/quant/config/index.ts';
import { gitCommit, openblasCoreType, torchPeerEnv } from '../lib.ts';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '..', '..');
export const RESULTS_PATH = join(ROOT, 'docs', 'results', 'qat.json');
const QUICK_PATH = join(ROOT, 'runs', 'qat', 'quick.json');

// ------------------------------------------------------------------ the matrix
export type ModelKind = 'lenet5' | 'bnn-mlp' | 'mlp' | 'cnn';
export type DatasetKind = 'mnist' | 'fashion-mnist';
export type Method = 'fp32' | 'qat' | 'admm' | 'askew' | 'torch';

export interface Recipe {
  readonly optimizer: 'adam' | 'sgd';
  readonly lr: number;
  readonly momentum?: number;
  readonly weightDecay?: number;
  /** Per-epoch schedule over the run's epochs. */
  readonly schedule: 'cosine' | 'none';
  readonly batch: number;
  /** LR multiplier of quantizer parameters (LSQ steps, PACT α, LQ-Nets bases); default 1. */
  readonly quantLrScale?: number;
  /** LR multiplier of the latent weights of binary layers (BNN practice); default 1. */
  readonly binaryLrScale?: number;
  /** Clip latent binary weights to [−1, 1] after every step (BinaryConnect). */
  readonly clipBinaryWeights?: boolean;
}

export interface RunSpec {
  /** Unique id: `<table>/<scheme>/<estimator>[/<variant>]`. */
  readonly id: string;
  /** Which table of docs/results.md: 'lenet5-mnist', 'bnn-mlp-mnist', 'cnn-fashion'. */
  readonly table: string;
  readonly model: ModelKind;
  /** Hidden widths (MLPs). */
  readonly hidden?: readonly number[];
  /** Dropout probability (MLPs: after each hidden BatchNorm; the fp32 MLP after each ReLU). */
  readonly dropout?: number;
  /** Dropout on the flattened input image (binary MLP; Courbariaux et al. use 0.2). */
  readonly inputDropout?: number;
  readonly dataset: DatasetKind;
  readonly scheme: 'fp32' | Scheme;
  /** QAT estimator, or 'admm' / 'askew' / 'fp32'. */
  readonly estimator: string;
  readonly method: Method;
  readonly qconfigOptions?: QConfigForOptions;
  /** 'scratch' or the id of the fp32 run whose trained weights this run starts from. */
  readonly init: string;
  readonly epochs: number;
  readonly recipe: Recipe;
  readonly seed: number;
  readonly admm?: { rho: number; rhoGrowth: number; projectEvery: number; perChannel: boolean; table: 'ternary' };
  readonly askew?: { bits: number; warmupFraction: number; annealFraction: number; epsilon0: number };
  /** One line shown under the table. */
  readonly note?: string;
}

const LENET = { table: 'lenet5-mnist', model: 'lenet5', dataset: 'mnist' } as const;
/** The fp32 LeNet-5 recipe, shared by every QAT row that trains from scratch. */
export const LENET_EPOCHS = 5;
const LENET_RECIPE: Recipe = { optimizer: 'adam', lr: 1e-3, schedule: 'cosine', batch: 64 };
/**
 * QAT from scratch: the fp32 recipe, with quantizer parameters (LSQ steps, PACT α, LQ-Nets bases)
 * at 0.1× the LR: Adam's ~lr-sized steps at 1e-3 drove LSQ's 4-bit weight step (≈0.04) through
 * zero within the first epoch (W4A4 LSQ collapsed to 11 % test accuracy).
 */
const LENET_QAT: Recipe = { ...LENET_RECIPE, quantLrScale: 0.1 };
/** Fine-tuning from the fp32 checkpoint: same epochs and optimizer, 5x lower starting LR; quantizer parameters at 1e-4 too. */
const LENET_FT: Recipe = { optimizer: 'adam', lr: 2e-4, schedule: 'cosine', batch: 64, quantLrScale: 0.5 };
const LENET_FP32 = 'lenet5-mnist/fp32';

const BNN_HIDDEN = [512, 512] as const;
const BNN = { table: 'bnn-mlp-mnist', model: 'bnn-mlp', dataset: 'mnist', hidden: BNN_HIDDEN } as const;
export const BNN_EPOCHS = 10;
const BNN_RECIPE: Recipe = { optimizer: 'adam', lr: 1e-3, schedule: 'cosine', batch: 100, binaryLrScale: 10, clipBinaryWeights: true, quantLrScale: 0.1 };

const CNN = { table: 'cnn-fashion', model: 'cnn', dataset: 'fashion-mnist' } as const;
export const CNN_EPOCHS = 2;
const CNN_RECIPE: Recipe = { optimizer: 'adam', lr: 1e-3, schedule: 'cosine', batch: 64 };
const CNN_QAT: Recipe = { ...CNN_RECIPE, quantLrScale: 0.1 };

export function matrix(): RunSpec[] {
  const runs: RunSpec[] = [];
  const lenet = (scheme: RunSpec['scheme'], estimator: string, extra: Partial<RunSpec> = {}): void => {
    const init = extra.init ?? 'scratch';
    const variant = init === 'scratch' ? '' : '/ft';
    runs.push({
      ...LENET, id: `lenet5-mnist/${scheme}/${estimator}${variant}`, scheme, estimator,
      method: scheme === 'fp32' ? 'fp32' : 'qat', init, epochs: LENET_EPOCHS,
      recipe: init === 'scratch' ? LENET_QAT : LENET_FT, seed: 0, ...extra,
    });
  };
  runs.push({ ...LENET, id: LENET_FP32, scheme: 'fp32', estimator: 'fp32', method: 'fp32', init: 'scratch', epochs: LENET_EPOCHS, recipe: LENET_RECIPE, seed: 0 });
  const multiBit = ['ste', 'lsq', 'pact', 'dorefa', 'lqnet', 'noise'];
  for (const scheme of ['w8a8', 'w4a4', 'w2a2'] as const) {
    for (const est of multiBit) {
      if (scheme === 'w8a8' && est === 'lqnet') continue;
      lenet(scheme, est);
      lenet(scheme, est, { init: LENET_FP32 });
    }
  }
  for (const est of ['ternary', 'lsq']) {
    lenet('ternary', est);
    lenet('ternary', est, { init: LENET_FP32 });
  }
  // Constrained training (weights only, activations float), from the fp32 checkpoint.
  runs.push({
    ...LENET, id: 'lenet5-mnist/ternary/admm/ft', scheme: 'ternary', estimator: 'admm', method: 'admm', init: LENET_FP32,
    epochs: LENET_EPOCHS, recipe: { optimizer: 'sgd', lr: 0.01, momentum: 0.9, schedule: 'none', batch: 64 }, seed: 0,
    admm: { table: 'ternary', perChannel: true, rho: 1e-2, rhoGrowth: 1.5, projectEvery: 20 },
    note: 'ADMM (Leng et al. 2018): ternary weights {−α,0,+α} per output channel on every conv/linear weight, activations float; SGD inner optimizer; ρ grows ×1.5 per epoch; G/U update every 20 steps; hard projection at the end.',
  });
  runs.push({
    ...LENET, id: 'lenet5-mnist/ternary/askew/ft', scheme: 'ternary', estimator: 'askew', method: 'askew', init: LENET_FP32,
    epochs: LENET_EPOCHS, recipe: { optimizer: 'sgd', lr: 0.01, momentum: 0.9, schedule: 'none', batch: 64 }, seed: 0,
    askew: { bits: 2, warmupFraction: 0, annealFraction: 0.8, epsilon0: 0.5 },
    note: 'AskewSGD (Leconte et al. 2023): 2-bit narrow grid = ternary {−α,0,+α} per output channel on every conv/linear weight, activations float; no warm-up (pretrained); ε anneals 0.5 → 1e-3 over 80 % of the steps; snapped to the grid at the end.',
  });

  // PyTorch peer: eager-mode int8 QAT of the same LeNet-5 (bench/qat/torch_qat.py), same epochs and recipe.
  for (const init of ['scratch', LENET_FP32]) {
    runs.push({
      table: 'torch-lenet5-mnist', model: 'lenet5', dataset: 'mnist', id: `torch/lenet5-mnist/w8a8/fbgemm${init === 'scratch' ? '' : '/ft'}`,
      scheme: 'w8a8', estimator: 'fbgemm', method: 'torch', init, epochs: LENET_EPOCHS, recipe: LENET_RECIPE, seed: 0,
    });
  }

  // Binary MLP on MNIST (BNN): Linear–BN–sign, first/last Linear 8-bit weights.
  runs.push({
    ...BNN, table: 'bnn-mlp-mnist', model: 'mlp', id: 'bnn-mlp-mnist/fp32', scheme: 'fp32', estimator: 'fp32', method: 'fp32',
    init: 'scratch', epochs: BNN_EPOCHS, recipe: { optimizer: 'adam', lr: 1e-3, schedule: 'cosine', batch: 100 }, seed: 0, dropout: 0.1,
    note: 'fp32 reference: the same widths with ReLU after each BatchNorm (a sign-free float MLP), dropout 0.2.',
  });
  for (const est of ['binary', 'irnet', 'smoothBinary']) {
    runs.push({
      ...BNN, id: `bnn-mlp-mnist/w1a1/${est}`, scheme: 'w1a1', estimator: est, method: 'qat', init: 'scratch',
      qconfigOptions: { signActivations: true }, epochs: BNN_EPOCHS, recipe: BNN_RECIPE, seed: 0, dropout: 0.1,
    });
  }
  // Against the 512-wide rows' overfitting (train 99.5 %, test 97.9 %): dropout 0.2 on the input image
  // (Courbariaux et al. 2016's input rate) and after each hidden BatchNorm; `/d02` keeps 512 wide
  // (fits the shared machine's budget), `/w1024` is 784-1024-1024-10 (~3× the compute).
  runs.push({
    ...BNN, id: 'bnn-mlp-mnist/w1a1/binary/d02', scheme: 'w1a1', estimator: 'binary', method: 'qat', init: 'scratch',
    qconfigOptions: { signActivations: true }, epochs: BNN_EPOCHS, recipe: BNN_RECIPE, seed: 0, dropout: 0.2, inputDropout: 0.2,
    note: '`/d02` row: 784-512-512-10 binary MLP, dropout 0.2 on the input image and after each hidden BatchNorm (momentum 0.1).',
  });
  runs.push({
    ...BNN, hidden: [768, 768], id: 'bnn-mlp-mnist/w1a1/binary/w768', scheme: 'w1a1', estimator: 'binary', method: 'qat', init: 'scratch',
    qconfigOptions: { signActivations: true }, epochs: BNN_EPOCHS, recipe: BNN_RECIPE, seed: 0, dropout: 0.2, inputDropout: 0.2,
    note: '`/w768` row: 784-768-768-10 binary MLP, dropout 0.2 on the input image and after each hidden BatchNorm (momentum 0.1).',
  });
  runs.push({
    ...BNN, id: 'bnn-mlp-mnist/w1a1/binary/d02e15', scheme: 'w1a1', estimator: 'binary', method: 'qat', init: 'scratch',
    qconfigOptions: { signActivations: true }, epochs: 15, recipe: BNN_RECIPE, seed: 0, dropout: 0.2, inputDropout: 0.2,
    note: '`/d02e15` row: the `/d02` model and recipe over 15 epochs (cosine over 15).',
  });
  for (const est of ['binary', 'irnet']) {
    runs.push({
      ...BNN, hidden: [1024, 1024], id: `bnn-mlp-mnist/w1a1/${est}/w1024`, scheme: 'w1a1', estimator: est, method: 'qat', init: 'scratch',
      qconfigOptions: { signActivations: true }, epochs: BNN_EPOCHS, recipe: BNN_RECIPE, seed: 0, dropout: 0.2, inputDropout: 0.2,
      note: '`/w1024` rows: 784-1024-1024-10 binary MLP, dropout 0.2 on the input image and after each hidden BatchNorm (momentum 0.1).',
    });
  }

  // Fashion-MNIST CNN.
  runs.push({ ...CNN, id: 'cnn-fashion/fp32', scheme: 'fp32', estimator: 'fp32', method: 'fp32', init: 'scratch', epochs: CNN_EPOCHS, recipe: CNN_RECIPE, seed: 0 });
  for (const est of ['lsq', 'ste']) {
    runs.push({ ...CNN, id: `cnn-fashion/w4a4/${est}`, scheme: 'w4a4', estimator: est, method: 'qat', init: 'scratch', epochs: CNN_EPOCHS, recipe: CNN_QAT, seed: 0 });
    runs.push({
      ...CNN, id: `cnn-fashion/w4a4/${est}/ft`, scheme: 'w4a4', estimator: est, method: 'qat', init: 'cnn-fashion/fp32',
      epochs: CNN_EPOCHS, recipe: { ...CNN_RECIPE, lr: 2e-4, quantLrScale: 0.5 }, seed: 0,
    });
  }
  return runs;
}

// ------------------------------------------------------------------ results file
export interface EpochLine {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  testAccuracy: number | null;
  seconds: number;
  lr: number | null;
}

export interface RunRecord {
  id: string;
  spec: RunSpec;
  status: 'ok' | 'error';
  error?: string;
  /** Test accuracy (fraction) of the final model (after the last epoch / the final projection). */
  accuracy: number | null;
  /** Constrained methods: test accuracy before the final projection onto the grid. */
  accuracyBeforeProjection?: number | null;
  /** Test accuracy of the fp32 checkpoint this run started from (init != scratch). */
  initAccuracy?: number | null;
  epochs: EpochLine[];
  /** Median training-pass seconds per epoch (evaluation excluded). */
  epochSeconds: number | null;
  wallSeconds: number;
  trainSamples: number;
  testSamples: number;
  /** PyTorch peer runs: the script's summary. */
  torch?: Record<string, unknown>;
  /** The per-layer quantization table (formatQuantTable) of QAT runs. */
  quantTable?: string;
  command: string;
  commit: string;
  backend: string;
  threads: string;
  finishedAt: string;
  quick: boolean;
}

export interface ResultsFile {
  format: 'lowbit-qat-results';
  version: 1;
  runs: RunRecord[];
}

export function readResults(path: string): ResultsFile {
  if (!existsSync(path)) return { format: 'lowbit-qat-results', version: 1, runs: [] };
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as ResultsFile;
  if (parsed.format !== 'lowbit-qat-results' || !Array.isArray(parsed.runs)) throw new Error(`${path}: not a lowbit QAT results file`);
  return parsed;
}

function writeResults(path: string, file: ResultsFile): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(file, null, 1)}\n`);
  renameSync(tmp, path);
}

/** Re-reads the file before writing, so concurrent edits (another shell) are not lost. */
function recordRun(path: string, record: RunRecord): void {
  const file = readResults(path);
  const i = file.runs.findIndex((r) => r.id === record.id);
  if (i >= 0) file.runs[i] = record;
  else file.runs.push(record);
  writeResults(path, file);
}

export function commandFor(id: string): string {
  const seed = /@s(\d+)$/.exec(id);
  return `LOWBIT_THREADS=2 node --import tsx bench/qat/matrix.ts --only '${id}'${seed ? ` --seed ${seed[1]}` : ''} --force`;
}

// ------------------------------------------------------------------ building and training
interface Flags {
  only: string[] | null;
  force: boolean;
  quick: boolean;
  list: boolean;
  out: string;
  seed: number | null;
  allowReference: boolean;
}

function parseFlags(argv: readonly string[]): Flags {
  const flags: Flags = { only: null, force: false, quick: false, list: false, out: '', seed: null, allowReference: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--only') flags.only = value().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--force') flags.force = true;
    else if (a === '--quick') flags.quick = true;
    else if (a === '--list') flags.list = true;
    else if (a === '--out') flags.out = resolve(value());
    else if (a === '--seed') flags.seed = Number(value());
    else if (a === '--allow-reference') flags.allowReference = true;
    else if (a === '--help' || a === '-h') {
      console.log('usage: node --import tsx bench/qat/matrix.ts [--only GLOB,...] [--force] [--quick] [--list] [--out PATH] [--seed N]');
      process.exit(0);
    } else throw new Error(`unknown flag '${a}' (try --help)`);
  }
  if (!flags.out) flags.out = flags.quick ? QUICK_PATH : RESULTS_PATH;
  return flags;
}

function globMatch(pattern: string, id: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
  return re.test(id);
}

const datasets = new Map<string, Dataset>();
function dataset(name: DatasetKind, split: 'train' | 'test'): Dataset {
  const key = `${name}/${split}`;
  let d = datasets.get(key);
  if (!d) {
    d = loadDataset(name, split);
    datasets.set(key, d);
  }
  return d;
}

/**
 * Binary MLP: Flatten, [Dropout(input)], [Linear(no bias) – BatchNorm1d – Dropout] per hidden width,
 * Linear. Signs live in the next layer's input quantizer. BatchNorm1d keeps the default momentum 0.1
 * (running = 0.9·running + 0.1·batch), the moving-average factor α = 0.1 of Courbariaux / Hubara et al.'s BNN code.
 */
function bnnMlp(hidden: readonly number[], dropout: number, inputDropout = 0): Module {
  const model = new nn.Sequential(new nn.Flatten());
  if (inputDropout > 0) model.append(new nn.Dropout(inputDropout));
  let width = 784;
  for (const h of hidden) {
    model.append(new nn.Linear(width, h, { bias: false }));
    model.append(new nn.BatchNorm1d(h));
    if (dropout > 0) model.append(new nn.Dropout(dropout));
    width = h;
  }
  model.append(new nn.Linear(width, 10));
  return model;
}

function buildModel(spec: RunSpec): TensorModule {
  manualSeed(spec.seed);
  switch (spec.model) {
    case 'lenet5':
      return nn.lenet5();
    case 'cnn':
      return nn.cnn();
    case 'mlp':
      return nn.mlp({ hidden: spec.hidden ?? [512, 512], batchNorm: true, dropout: spec.dropout ?? 0 });
    case 'bnn-mlp':
      return bnnMlp(spec.hidden ?? [512, 512], spec.dropout ?? 0, spec.inputDropout ?? 0) as TensorModule;
  }
}

/** The QuantPlan of a QAT run. w1a1 with sign activations: the last layer keeps its ±1 input (8-bit weights). */
function planFor(spec: RunSpec, model: Module): QuantPlan {
  const config = qconfigFor(spec.scheme as Scheme, spec.estimator as Estimator, spec.qconfigOptions ?? {});
  if (spec.scheme === 'w1a1' && spec.qconfigOptions?.signActivations) {
    const linears = model.namedModules().filter(([, m]) => m instanceof nn.Linear).map(([n]) => n);
    const last = linears[linears.length - 1]!;
    return { default: config, overrides: [{ match: last, config: { weight: int8PerChannelSym, activation: config.activation ?? binarySign } }] };
  }
  return { default: config };
}

/** Parameters split into groups by role: quantizer parameters, latent binary weights, the rest. */
function paramGroups(model: Module, recipe: Recipe): { params: Tensor[]; lr: number; weightDecay?: number }[] {
  return qatParamGroups(model, { lr: recipe.lr, quantLrScale: recipe.quantLrScale ?? 1, binaryLrScale: recipe.binaryLrScale ?? 1, weightDecay: recipe.weightDecay ?? 0 });
}

function clipper(model: Module, inner: TrainOptimizer): TrainOptimizer {
  const weights: Tensor[] = [];
  for (const l of quantizedLayers(model)) {
    if (l.weightSpec && BINARY_KINDS.includes(l.weightSpec.kind)) weights.push((l.layer as unknown as { weight: Tensor }).weight);
  }
  return {
    step(): void {
      inner.step();
      for (const w of weights) {
        const d = w.data;
        for (let i = 0; i < d.length; i++) d[i] = d[i]! > 1 ? 1 : d[i]! < -1 ? -1 : d[i]!;
      }
    },
    zeroGrad: () => inner.zeroGrad(),
    get lr(): number | undefined {
      return inner.lr;
    },
  };
}

function checkpointPath(id: string, quick: boolean): string {
  return join(ROOT, 'runs', 'qat', quick ? 'quick-ckpt' : 'ckpt', `${id.replace(/[^A-Za-z0-9._-]+/g, '_')}.safetensors`);
}


function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface Context {
  flags: Flags;
  byId: Map<string, RunSpec>;
  log: (line: string) => void;
}

function pct(x: number | null | undefined): string {
  return x === null || x === undefined ? '—' : `${(x * 100).toFixed(2)} %`;
}

/** Trains one run and returns its record (errors become status 'error'). */
function runOne(spec: RunSpec, ctx: Context): RunRecord {
  const { quick } = ctx.flags;
  const epochs = quick ? 1 : spec.epochs;
  const fullTrain = dataset(spec.dataset, 'train');
  const fullTest = dataset(spec.dataset, 'test');
  const trainSet = quick ? take(fullTrain, 2000) : fullTrain;
  const testSet = quick ? take(fullTest, 500) : fullTest;
  const normalize = DATASET_STATS[spec.dataset];
  const trainLoader = new DataLoader(trainSet, { batchSize: spec.recipe.batch, shuffle: true, seed: spec.seed, normalize });
  const testLoader = new DataLoader(testSet, { batchSize: 500, normalize });
  const t0 = performance.now();
  const base = {
    id: spec.id, spec, trainSamples: trainSet.length, testSamples: testSet.length, command: commandFor(spec.id),
    commit: gitCommit(), backend: getBackend(), threads: process.env.LOWBIT_THREADS ?? '', quick,
  };
  const lines: EpochLine[] = [];
  const onEpoch = (r: EpochRecord): void => {
    lines.push({ epoch: r.epoch, trainLoss: r.trainLoss, trainAccuracy: r.trainAccuracy, testAccuracy: r.testAccuracy ?? null, seconds: r.seconds, lr: r.lr ?? null });
    ctx.log(`  ${spec.id} epoch ${r.epoch}/${epochs}: train loss ${r.trainLoss.toFixed(4)}, train ${pct(r.trainAccuracy)}, test ${pct(r.testAccuracy)}, ${r.seconds.toFixed(1)} s${r.lr !== undefined ? `, lr ${r.lr.toPrecision(3)}` : ''}`);
  };
  if (spec.method === 'torch') return runTorch(spec, ctx, base, t0);
  try {
    const model = buildModel(spec);
    let initAccuracy: number | null | undefined;
    if (spec.init !== 'scratch') {
      const path = ensureCheckpoint(spec.init, ctx);
      model.loadStateDict(loadCheckpoint(path).model);
      initAccuracy = evaluate(model, testLoader).accuracy;
      ctx.log(`  ${spec.id}: starts from ${spec.init} (${pct(initAccuracy)} on this test set)`);
    }
    let quantTable: string | undefined;
    let accuracy: number | null = null;
    let accuracyBeforeProjection: number | null | undefined;
    const common = { epochs, seed: spec.seed, progress: false, log: () => {}, onEpochEnd: onEpoch };
    if (spec.method === 'admm') {
      const a = spec.admm!;
      const r = trainAdmm(model, { train: trainLoader, test: testLoader }, {
        ...common, lr: spec.recipe.lr, momentum: spec.recipe.momentum ?? 0.9, optimizer: spec.recipe.optimizer,
        admm: { table: a.table, perChannel: a.perChannel, rho: a.rho, rhoGrowth: a.rhoGrowth, projectEvery: a.projectEvery },
      });
      accuracy = r.accuracy ?? null;
      accuracyBeforeProjection = r.accuracyBeforeFinalize ?? null;
    } else if (spec.method === 'askew') {
      const a = spec.askew!;
      const r = trainAskew(model, { train: trainLoader, test: testLoader }, {
        ...common, lr: spec.recipe.lr, momentum: spec.recipe.momentum ?? 0.9,
        warmupFraction: a.warmupFraction, annealFraction: a.annealFraction, askew: { bits: a.bits, epsilon0: a.epsilon0 },
      });
      accuracy = r.accuracy ?? null;
      accuracyBeforeProjection = r.accuracyBeforeFinalize ?? null;
    } else {
      const qat = spec.method === 'qat';
      if (qat) {
        prepareQat(model, planFor(spec, model));
        quantTable = formatQuantTable(quantizedLayers(model));
        setQuantProgress(model, 0, epochs);
      }
      const r = spec.recipe;
      const groups = paramGroups(model, r);
      const optimizer = r.optimizer === 'sgd'
        ? new SGD(groups, { lr: r.lr, momentum: r.momentum ?? 0.9, weightDecay: r.weightDecay ?? 0 })
        : new Adam(groups, { lr: r.lr, weightDecay: r.weightDecay ?? 0 });
      const scheduler = r.schedule === 'cosine' ? new CosineAnnealingLR(optimizer, { tMax: epochs }) : undefined;
      const stepper = r.clipBinaryWeights ? clipper(model, optimizer) : optimizer;
      fit(model, {
        trainLoader, testLoader, optimizer: stepper, ...(scheduler ? { scheduler } : {}), ...common,
        onEpochEnd: (rec) => {
          onEpoch(rec);
          if (qat) setQuantProgress(model, rec.epoch, epochs);
        },
      });
      accuracy = lines.at(-1)?.testAccuracy ?? null;
      if (spec.method === 'fp32') {
        const path = checkpointPath(spec.id, quick);
        mkdirSync(dirname(path), { recursive: true });
        saveCheckpoint(path, { model: model.stateDict(), epoch: epochs, config: spec });
      }
    }
    return {
      ...base, status: 'ok', accuracy,
      ...(accuracyBeforeProjection !== undefined ? { accuracyBeforeProjection } : {}),
      ...(initAccuracy !== undefined ? { initAccuracy } : {}),
      epochs: lines, epochSeconds: median(lines.map((l) => l.seconds)), wallSeconds: (performance.now() - t0) / 1000,
      ...(quantTable ? { quantTable } : {}),
      finishedAt: new Date().toISOString(),
    };
  } catch (e) {
    const message = e instanceof Error ? (e.stack ?? e.message) : String(e);
    ctx.log(`  ${spec.id}: ERROR ${message}`);
    return {
      ...base, status: 'error', error: message.split('\n').slice(0, 4).join('\n'), accuracy: null, epochs: lines,
      epochSeconds: median(lines.map((l) => l.seconds)), wallSeconds: (performance.now() - t0) / 1000, finishedAt: new Date().toISOString(),
    };
  }
}

/** A PyTorch peer run: bench/qat/torch_qat.py in a child process (its fp32 model, then QAT, then convert). */
function runTorch(spec: RunSpec, ctx: Context, base: Omit<RunRecord, 'status' | 'accuracy' | 'epochs' | 'epochSeconds' | 'wallSeconds' | 'finishedAt'>, t0: number): RunRecord {
  const quick = ctx.flags.quick;
  const args = [join(ROOT, 'bench', 'qat', 'torch_qat.py'), '--epochs', String(quick ? 1 : spec.epochs), '--lr', String(spec.recipe.lr),
    '--batch', String(spec.recipe.batch), '--seed', String(spec.seed), '--threads', '2', '--init', spec.init === 'scratch' ? 'scratch' : 'fp32'];
  if (quick) args.push('--limit', '2000', '--test-limit', '500');
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const r = spawnSync(python, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: torchPeerEnv(2) });
  const wallSeconds = (performance.now() - t0) / 1000;
  const command = `OPENBLAS_NUM_THREADS=1${openblasCoreType() ? ` OPENBLAS_CORETYPE=${openblasCoreType()}` : ''} ${python} bench/qat/torch_qat.py ${args.slice(1).join(' ')}`;
  let json: Record<string, unknown> | null = null;
  try {
    json = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as Record<string, unknown>;
  } catch {
    json = null;
  }
  const finishedAt = new Date().toISOString();
  if (!json || typeof json.skipped === 'string') {
    const error = json ? String(json.skipped) : `torch_qat.py exited ${String(r.status)}${r.error ? `: ${r.error.message}` : ''}`;
    ctx.log(`  ${spec.id}: ${error}`);
    return { ...base, command, status: 'error', error, accuracy: null, epochs: [], epochSeconds: null, wallSeconds, finishedAt };
  }
  const qatSeconds = (json.qatEpochSecondsAll as number[] | undefined) ?? [];
  return {
    ...base, command, status: 'ok', accuracy: Number(json.qatInt8Accuracy), initAccuracy: spec.init === 'scratch' ? null : Number(json.fp32Accuracy),
    epochs: qatSeconds.map((seconds, i) => ({ epoch: i + 1, trainLoss: NaN, trainAccuracy: NaN, testAccuracy: null, seconds, lr: null })),
    epochSeconds: Number(json.qatEpochSeconds), wallSeconds, trainSamples: Number(json.trainSamples), testSamples: Number(json.testSamples),
    torch: json, finishedAt,
  };
}

/** The checkpoint of fp32 run `id`, training (and recording) that run first when the file is missing. */
function ensureCheckpoint(id: string, ctx: Context): string {
  const path = checkpointPath(id, ctx.flags.quick);
  if (existsSync(path)) return path;
  const spec = ctx.byId.get(id);
  if (!spec || spec.method !== 'fp32') throw new Error(`init '${id}' is not an fp32 run of the matrix`);
  ctx.log(`  ${id}: no checkpoint at ${path}; training it first`);
  const record = runOne(spec, ctx);
  recordRun(ctx.flags.out, record);
  if (record.status !== 'ok' || !existsSync(path)) throw new Error(`could not train ${id}: ${record.error ?? 'no checkpoint written'}`);
  return path;
}

function withSeed(spec: RunSpec, seed: number | null): RunSpec {
  if (seed === null || seed === spec.seed) return spec;
  const init = spec.init === 'scratch' ? spec.init : `${spec.init}@s${seed}`;
  return { ...spec, id: `${spec.id}@s${seed}`, seed, init };
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  const all = matrix().map((s) => withSeed(s, flags.seed));
  const byId = new Map(all.map((s) => [s.id, s]));
  const done = new Set(readResults(flags.out).runs.filter((r) => r.status === 'ok').map((r) => r.id));
  // With --seed, a glob may name the id with or without its `@sN` suffix.
  const baseId = (id: string): string => id.replace(/@s\d+$/, '');
  const selected = all.filter((s) => !flags.only || flags.only.some((p) => globMatch(p, s.id) || globMatch(p, baseId(s.id))));
  if (flags.only && selected.length === 0) throw new Error(`--only ${flags.only.join(',')} matches no run (try --list)`);
  if (flags.list) {
    for (const s of selected) console.log(`${done.has(s.id) ? '[done] ' : '       '}${s.id}`);
    return;
  }
  const todo = selected.filter((s) => flags.force || !done.has(s.id));
  if (!flags.quick && !flags.allowReference && getBackend() !== 'native' && todo.length > 0) {
    throw new Error(`the native backend is not loaded (active: ${getBackend()}); full runs on the reference backend take hours. Build it (npm run build:native) or pass --allow-reference`);
  }
  const log = (line: string): void => void process.stdout.write(`${line}\n`);
  const ctx: Context = { flags, byId, log };
  log(`qat matrix${flags.quick ? ' (quick)' : ''}: ${todo.length} run(s) to do, ${selected.length - todo.length} already recorded in ${flags.out}; backend ${getBackend()}, LOWBIT_THREADS=${process.env.LOWBIT_THREADS}`);
  let k = 0;
  for (const spec of todo) {
    k++;
    log(`[${k}/${todo.length}] ${spec.id}: ${spec.method} ${spec.scheme}/${spec.estimator}, ${flags.quick ? 1 : spec.epochs} epochs, ${spec.recipe.optimizer} lr ${spec.recipe.lr} ${spec.recipe.schedule}, init ${spec.init}, seed ${spec.seed}`);
    const record = runOne(spec, ctx);
    recordRun(flags.out, record);
    log(`[${k}/${todo.length}] ${spec.id}: ${record.status === 'ok' ? pct(record.accuracy) : 'ERROR'}${record.accuracyBeforeProjection != null ? ` (before projection ${pct(record.accuracyBeforeProjection)})` : ''} in ${record.wallSeconds.toFixed(0)} s (median epoch ${record.epochSeconds?.toFixed(1) ?? '—'} s)`);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
