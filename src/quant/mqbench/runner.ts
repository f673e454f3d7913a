/**
 * `benchmarkQuantization`: the MQBench protocol on lowbit. Every algorithm × backend × bit width is
 * trained with ONE fixed recipe (same starting weights, optimizer, learning rates, epochs, data
 * order and seed), then evaluated twice on the test set: as the fake-quant (simulated) model and,
 * for schemes the integer runtime runs, as the deployed IntModel (`runtime.convert`). The deployed
 * accuracy must equal the simulated one; the report gives both and their argmax agreement.
 */
import { DataLoader } from '../../data/loader.ts';
import type { Dataset, NormalizeStats } from '../../data/dataset.ts';
import type { TensorModule } from '../../nn/module.ts';
import { Adam } from '../../optim/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { manualSeed, Tensor } from '../../tensor/index.ts';
import { fit, type History } from '../../train/fit.ts';
import { ProgressBar, type ProgressStream } from '../../train/progress.ts';
import { convert } from '../../runtime/convert.ts';
import type { IntModel } from '../../runtime/intmodel.ts';
import { prepareQat, quantizedLayers, setQuantProgress } from '../qat/prepare.ts';
import { qatParamGroups } from '../qat/param-groups.ts';
import { describeSpec } from '../config/qconfig.ts';
import { ALGORITHMS, BACKENDS, backendPlan, backendProfile, MqbenchError, type Algorithm, type BackendName } from './backends.ts';

/** The one training recipe every cell of the benchmark uses. */
export interface MqbenchRecipe {
  /** Training epochs over `train` (default 1). */
  readonly epochs?: number;
  /** Mini-batch size (default 64). */
  readonly batchSize?: number;
  /** Adam learning rate of the weights (default 2e-4: a fine-tune of the float model). */
  readonly lr?: number;
  /** LR multiplier of quantizer parameters (LSQ steps, PACT α; default 0.5). */
  readonly quantLrScale?: number;
  /** Seed of the data order and of in-model randomness (default 0). */
  readonly seed?: number;
}

export interface BenchmarkOptions {
  /**
   * A fresh float model with the starting weights (typically a trained fp32 checkpoint: MQBench
   * fine-tunes from the same pretrained model). Called once per cell.
   */
  readonly createModel: () => TensorModule;
  readonly train: Dataset;
  readonly test: Dataset;
  /** Per-batch normalisation of both sets (e.g. `DATASET_STATS.mnist`). */
  readonly normalize?: NormalizeStats;
  readonly algorithms: readonly string[];
  readonly backends: readonly string[];
  /** Weight and activation bits of the hidden layers (WnAn), e.g. [4, 8]. */
  readonly bits: readonly number[];
  readonly recipe?: MqbenchRecipe;
  /** Test samples `convert` verifies on (default 256). */
  readonly verifySamples?: number;
  /** Progress bar over the cells on stderr (default true). */
  readonly progress?: boolean;
  readonly progressStream?: ProgressStream;
  /** Called after every cell. */
  readonly onResult?: (result: MqbenchResult) => void;
  /** Receives every deployed IntModel (e.g. to export and check it as ONNX), before `onResult` of its cell. */
  readonly onIntModel?: (cell: { readonly algorithm: Algorithm; readonly backend: BackendName; readonly bits: number }, intModel: IntModel) => void;
}

/** One cell of the benchmark. */
export interface MqbenchResult {
  readonly algorithm: Algorithm;
  readonly backend: BackendName;
  readonly bits: number;
  /** 'ok', 'unsupported' (the scheme cannot express the algorithm: `reason`), or 'error'. */
  readonly status: 'ok' | 'unsupported' | 'error';
  readonly reason?: string;
  /** Per layer: `name: weight / input` as `describeSpec` prints them. */
  readonly layers?: readonly string[];
  /** Test accuracy of the fake-quant model (fraction). */
  readonly simulatedAccuracy?: number;
  /** Test accuracy of the IntModel, or null when the runtime cannot run the scheme (`deployReason`). */
  readonly deployedAccuracy?: number | null;
  readonly deployReason?: string;
  /** Fraction of test samples whose IntModel argmax equals the fake-quant model's. */
  readonly argmaxAgreement?: number;
  /** On the verification sample: max |Δlogit| to the float64 simulation, in output LSB. */
  readonly maxLogitLsb?: number;
  /** On the verification sample: max |Δlogit| to the float32 forward over what quantization explains (≤ 1 = explained). */
  readonly float32ToleranceRatio?: number;
  readonly finalTrainLoss?: number;
  readonly seconds?: number;
}

interface ResolvedRecipe {
  readonly epochs: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly quantLrScale: number;
  readonly seed: number;
}

function resolveRecipe(recipe: MqbenchRecipe = {}): ResolvedRecipe {
  const r = { epochs: 1, batchSize: 64, lr: 2e-4, quantLrScale: 0.5, seed: 0, ...recipe };
  if (!Number.isInteger(r.epochs) || r.epochs < 1) throw new MqbenchError('unsupported', `recipe.epochs must be a positive integer, got ${String(r.epochs)}`);
  if (!Number.isInteger(r.batchSize) || r.batchSize < 1) throw new MqbenchError('unsupported', `recipe.batchSize must be a positive integer, got ${String(r.batchSize)}`);
  if (!(r.lr > 0) || !(r.quantLrScale > 0)) throw new MqbenchError('unsupported', `recipe.lr and recipe.quantLrScale must be positive, got ${String(r.lr)} and ${String(r.quantLrScale)}`);
  if (!Number.isInteger(r.seed)) throw new MqbenchError('unsupported', `recipe.seed must be an integer, got ${String(r.seed)}`);
  return r;
}

/** The first `n` samples of `ds`, normalised as the loaders do, as one [n, C, H, W] batch. */
function firstSamples(ds: Dataset, n: number, normalize: NormalizeStats | undefined): Tensor {
  const loader = new DataLoader(ds, { batchSize: Math.min(n, ds.length), normalize });
  for (const batch of loader) return batch.x;
  throw new MqbenchError('unsupported', `dataset '${ds.name}' is empty`);
}

function argmaxRow(logits: ArrayLike<number>, row: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (logits[row * classes + c]! > logits[row * classes + best]!) best = c;
  return best;
}

/**
 * Accuracy of the fake-quant model and of its IntModel (when given) on `loader`, and their argmax
 * agreement, in one pass (model in eval mode).
 */
export function evaluateSimulatedAndDeployed(model: TensorModule, intModel: IntModel | null, loader: Iterable<{ x: Tensor; y: Tensor }>): { simulated: number; deployed: number | null; agreement: number | null; count: number } {
  const wasTraining = model.training;
  model.eval();
  let simCorrect = 0;
  let intCorrect = 0;
  let agree = 0;
  let count = 0;
  try {
    for (const { x, y } of loader) {
      const n = x.shape[0]!;
      const logits = noGrad(() => model.forward(x));
      const classes = logits.size / n;
      const ints = intModel ? intModel.run(x, n) : null;
      for (let i = 0; i < n; i++) {
        const label = y.data[i]!;
        const sim = argmaxRow(logits.data, i, classes);
        if (sim === label) simCorrect++;
        if (ints) {
          const dep = argmaxRow(ints, i, classes);
          if (dep === label) intCorrect++;
          if (dep === sim) agree++;
        }
      }
      count += n;
    }
  } finally {
    if (wasTraining) model.train();
  }
  if (count === 0) throw new MqbenchError('unsupported', 'evaluateSimulatedAndDeployed: the test loader yielded no samples');
  return { simulated: simCorrect / count, deployed: intModel ? intCorrect / count : null, agreement: intModel ? agree / count : null, count };
}

/** Throws MqbenchError when the training or the test set has no samples (a cell would report an untrained model). */
function checkData(options: BenchmarkOptions): void {
  for (const [name, ds] of [['train', options.train], ['test', options.test]] as const) {
    if (ds.length === 0) throw new MqbenchError('unsupported', `the ${name} set has no samples`);
  }
}

/** Trains and evaluates one cell (see `benchmarkQuantization`). */
export function runCell(options: BenchmarkOptions, algorithm: string, backend: string, bits: number): MqbenchResult {
  const profile = backendProfile(backend);
  const base = { algorithm: algorithm as Algorithm, backend: profile.name, bits };
  let built;
  try {
    built = backendPlan(backend, algorithm, bits);
  } catch (error) {
    if (error instanceof MqbenchError && error.reason === 'unsupported') return { ...base, status: 'unsupported', reason: error.message };
    throw error;
  }
  const recipe = resolveRecipe(options.recipe);
  const t0 = performance.now();
  try {
    checkData(options);
    manualSeed(recipe.seed);
    const model = options.createModel();
    prepareQat(model, built.plan, built.resolve);
    const layers = quantizedLayers(model).map((l) => `${l.name}${l.foldedBatchNorm ? '+BN' : ''}: ${describeSpec(l.weightSpec)} / ${describeSpec(l.activationSpec, 'activation')}`);
    setQuantProgress(model, 0, recipe.epochs);
    model.train();
    // A last batch of one image would fail a BatchNorm in training mode: drop just that one.
    const dropLast = options.train.length > recipe.batchSize && options.train.length % recipe.batchSize === 1;
    const trainLoader = new DataLoader(options.train, { batchSize: recipe.batchSize, shuffle: true, seed: recipe.seed, normalize: options.normalize, dropLast });
    const optimizer = new Adam(qatParamGroups(model, { lr: recipe.lr, quantLrScale: recipe.quantLrScale }), { lr: recipe.lr });
    const history: History = fit(model, {
      trainLoader, optimizer, epochs: recipe.epochs, seed: recipe.seed, progress: false, log: () => {},
      onEpochEnd: (r) => setQuantProgress(model, r.epoch, recipe.epochs),
    });
    model.eval();
    let intModel: IntModel | null = null;
    let deployReason: string | undefined = profile.notDeployable ?? undefined;
    let maxLogitLsb: number | undefined;
    let float32ToleranceRatio: number | undefined;
    if (deployReason === undefined) {
      try {
        intModel = convert(model, { sample: firstSamples(options.test, options.verifySamples ?? 256, options.normalize), minAgreement: 0 });
        maxLogitLsb = intModel.verification?.maxLogitLsb;
        float32ToleranceRatio = intModel.verification?.float32MaxToleranceRatio;
      } catch (error) {
        deployReason = (error as Error).message;
      }
    }
    const testLoader = new DataLoader(options.test, { batchSize: 500, normalize: options.normalize });
    const ev = evaluateSimulatedAndDeployed(model, intModel, testLoader);
    if (intModel) options.onIntModel?.(base, intModel);
    return {
      ...base, status: 'ok', layers, simulatedAccuracy: ev.simulated, deployedAccuracy: ev.deployed,
      ...(deployReason === undefined ? {} : { deployReason }),
      ...(ev.agreement === null ? {} : { argmaxAgreement: ev.agreement }),
      ...(maxLogitLsb === undefined ? {} : { maxLogitLsb }),
      ...(float32ToleranceRatio === undefined ? {} : { float32ToleranceRatio }),
      finalTrainLoss: history.epochs[history.epochs.length - 1]?.trainLoss,
      seconds: (performance.now() - t0) / 1000,
    };
  } catch (error) {
    return { ...base, status: 'error', reason: (error as Error).message, seconds: (performance.now() - t0) / 1000 };
  }
}

/**
 * Runs every algorithm × backend × bits cell with the same recipe (see the module comment) and
 * returns the results in that order. Names are checked before any training: an unknown backend or
 * algorithm, or an empty training / test set, throws `MqbenchError`; a combination a backend's scheme cannot express becomes an
 * 'unsupported' cell with the reason, a failure during training an 'error' cell.
 */
export function benchmarkQuantization(options: BenchmarkOptions): MqbenchResult[] {
  for (const b of options.backends) backendProfile(b);
  for (const a of options.algorithms) {
    if (!(ALGORITHMS as readonly string[]).includes(a)) throw new MqbenchError('unknown-algorithm', `unknown algorithm '${String(a)}' (known: ${ALGORITHMS.join(', ')})`);
  }
  for (const bits of options.bits) if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new MqbenchError('unsupported', `bits must be integers in [2, 8], got ${String(bits)}`);
  resolveRecipe(options.recipe);
  checkData(options);
  const cells: [string, string, number][] = [];
  for (const bits of options.bits) for (const backend of options.backends) for (const algorithm of options.algorithms) cells.push([algorithm, backend, bits]);
  const bar = options.progress ?? true ? new ProgressBar({ total: cells.length, label: 'mqbench', rateUnit: 'cell', stream: options.progressStream }) : null;
  const results: MqbenchResult[] = [];
  for (const [algorithm, backend, bits] of cells) {
    const result = runCell(options, algorithm, backend, bits);
    results.push(result);
    options.onResult?.(result);
    bar?.tick(1, { cell: `${backend}/${algorithm}/W${bits}A${bits}` });
  }
  bar?.done();
  return results;
}

/** The backends `benchmarkQuantization` knows (re-exported for callers building a matrix). */
export const MQBENCH_BACKENDS = BACKENDS;
