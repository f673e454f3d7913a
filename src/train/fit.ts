/**
 * The training loop (`fit`) and evaluation (`evaluate`) over any tensor-to-logits module.
 */
import { noGrad } from '../autograd/engine.ts';
import { autocast, checkPrecision, type Precision } from '../lowp/autocast.ts';
import { GradScaler, type ScalableOptimizer } from '../lowp/grad-scaler.ts';
import type { TensorModule } from '../nn/module.ts';
import { crossEntropy } from '../tensor/ops.ts';
import { manualSeed } from '../tensor/random.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { saveCheckpoint } from './checkpoint.ts';
import { checkMonitor, describeEarlyStop, EarlyStopping, monitorValue, type EarlyStoppingOptions, type EarlyStoppingState, type Monitor } from './early-stopping.ts';
import { compareStateDicts, type StateDict } from '../nn/module.ts';
import { ProgressBar, type ProgressStream } from './progress.ts';

/** One batch: inputs and int32 class indices. */
export interface Batch {
  readonly x: Tensor;
  readonly y: Tensor;
}

/** What `fit` and `evaluate` iterate: batches, and how many there are when known. */
export interface BatchSource extends Iterable<Batch> {
  /** Number of batches per pass (used for the progress bar); optional. */
  readonly length?: number;
}

/** The optimizer calls the loop makes. */
export interface TrainOptimizer {
  step(): void;
  zeroGrad(): void;
  stateDict?(): unknown;
  /** Current learning rate (first group), recorded in the history when present. */
  readonly lr?: number;
  /** The parameters, which a loss scaler unscales (every lowbit optimizer has them). */
  readonly paramGroups?: ScalableOptimizer['paramGroups'];
}

/** A learning-rate schedule stepped once per epoch. */
export interface EpochScheduler {
  step(): void;
  /** Its state, saved in fit's checkpoints when present. */
  stateDict?(): unknown;
}

/**
 * A schedule stepped once per epoch with a monitored metric (ReduceLROnPlateau): fit calls
 * `step(value)` with FitOptions.schedulerMonitor's value of the epoch.
 */
export interface MetricScheduler {
  readonly stepsOnMetric: true;
  step(metric: number): void;
  stateDict?(): unknown;
}

function isMetricScheduler(scheduler: EpochScheduler | MetricScheduler): scheduler is MetricScheduler {
  return 'stepsOnMetric' in scheduler && scheduler.stepsOnMetric === true;
}

/** `(logits [N, C], int32 targets [N]) → scalar loss` (mean over the batch). */
export type LossFn = (logits: Tensor, targets: Tensor) => Tensor;

export interface EpochRecord {
  /** 1-based epoch number. */
  epoch: number;
  /** Mean training loss over the epoch's samples (as measured during training). */
  trainLoss: number;
  /** Fraction in [0, 1] of training samples classified correctly during training. */
  trainAccuracy: number;
  testLoss?: number;
  testAccuracy?: number;
  /** Wall time of the training pass (evaluation excluded). */
  seconds: number;
  /** Training samples per second over the training pass. */
  samplesPerSecond: number;
  /** Learning rate used during the epoch, when the optimizer exposes one. */
  lr?: number;
  /** With a loss scaler: optimizer steps of the epoch it skipped (Inf/NaN gradients). */
  skippedSteps?: number;
  /** With a loss scaler: its scale at the end of the epoch. */
  lossScale?: number;
}

export interface History {
  epochs: EpochRecord[];
  /** The loss of every optimizer step, in order. */
  stepLosses: number[];
  /**
   * With FitOptions.earlyStopping: its state after the last epoch, including why training stopped
   * (`stoppedEpoch`) and which epoch's weights were restored (`restoredEpoch`). A resumed fit
   * continues from it.
   */
  earlyStopping?: EarlyStoppingState;
}

export interface FitOptions {
  trainLoader: BatchSource;
  /** Evaluated after every epoch when given. */
  testLoader?: BatchSource;
  optimizer: TrainOptimizer;
  /**
   * Stepped once at the end of every epoch (after the epoch's evaluation); a MetricScheduler
   * (ReduceLROnPlateau) is stepped with the epoch's `schedulerMonitor` value.
   */
  scheduler?: EpochScheduler | MetricScheduler;
  /** The metric a MetricScheduler is stepped with (default 'val_loss', which needs testLoader). */
  schedulerMonitor?: Monitor;
  /**
   * Stop when a monitored metric stops improving (Keras' EarlyStopping): see EarlyStoppingOptions.
   * The state is kept in `history.earlyStopping`; when training stops early, a checkpoint of the
   * stopping epoch is written (whatever checkpoint.every says).
   */
  earlyStopping?: EarlyStoppingOptions;
  epochs: number;
  /** Default: softmax cross-entropy. */
  lossFn?: LossFn;
  /** Calls `manualSeed(seed)` before the first step (dropout and other in-model randomness). */
  seed?: number;
  /** Progress bar on stderr (default true in Node.js; off in a browser unless progressStream is given). */
  progress?: boolean;
  /** Stream for the progress bar (default process.stderr). */
  progressStream?: ProgressStream;
  /** Called after every epoch (after evaluation and checkpointing). */
  onEpochEnd?: (record: EpochRecord, history: History) => void;
  /** Saves a checkpoint every `every` epochs (default 1) and after the last one. */
  checkpoint?: { path: string; every?: number };
  /** Run configuration stored in checkpoints. */
  config?: unknown;
  /**
   * Stop with a TrainingDivergedError when a step's loss is NaN or infinite (default true), before
   * that step updates the weights: the model keeps its last finite weights and no checkpoint of
   * the diverged state is written (like Keras' TerminateOnNaN).
   */
  stopOnNonFinite?: boolean;
  /**
   * Epochs already done (resuming a run, like Keras' initial_epoch): training runs epochs
   * initialEpoch + 1 .. epochs. The caller restores the model, optimizer and scheduler state and
   * the loader's epoch (`DataLoader.setEpoch`); `history` continues the earlier run's history.
   */
  initialEpoch?: number;
  history?: History;
  /**
   * Mixed precision (src/lowp): 'fp16' or 'bf16' runs the model's forward under `autocast` to that
   * format during training and evaluation (removed again when fit returns), 'fp32' (default) as is.
   * 'fp16' uses a loss scaler: `scaler`, or a new GradScaler with torch's defaults.
   */
  precision?: Precision;
  /**
   * Dynamic loss scaling: each step runs `scaler.scale(loss).backward()`, `scaler.step(optimizer)`,
   * `scaler.update()`. Pass one to set its options, restore its state when resuming, or use it
   * with a model the caller put under autocast; its state goes into checkpoints.
   */
  scaler?: GradScaler;
  /**
   * Receives one summary line per epoch. Default: the progress stream when `progress` is on,
   * nothing otherwise.
   */
  log?: (line: string) => void;
}

/** fit() stopped because a training loss was NaN or infinite (see FitOptions.stopOnNonFinite). */
export class TrainingDivergedError extends Error {
  override name = 'TrainingDivergedError';
  constructor(
    readonly epoch: number,
    /** 1-based step within the epoch. */
    readonly step: number,
    readonly loss: number,
    lr: number | undefined,
  ) {
    super(
      `training diverged: the loss is ${loss} at epoch ${epoch}, step ${step}${lr === undefined ? '' : ` (lr ${lr})`}; ` +
        'stopped before that step changed the weights (a lower learning rate usually helps)',
    );
  }
}

export interface EvaluateResult {
  /** Mean loss per sample. */
  loss: number;
  /** Fraction in [0, 1]. */
  accuracy: number;
  /** Number of samples seen. */
  count: number;
}

/** Number of rows of `logits` [N, C] whose argmax equals the int32 target (first max wins). */
export function countCorrect(logits: Tensor, targets: Tensor): number {
  if (logits.rank !== 2 || targets.rank !== 1 || targets.shape[0] !== logits.shape[0]) {
    throw new Error(`countCorrect: expected logits [N, C] and targets [N], got [${logits.shape.join(', ')}] and [${targets.shape.join(', ')}]`);
  }
  const [n, c] = logits.shape as [number, number];
  const data = logits.data;
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const row = i * c;
    let best = 0;
    let bestValue = data[row]!;
    for (let j = 1; j < c; j++) {
      const v = data[row + j]!;
      if (v > bestValue) {
        bestValue = v;
        best = j;
      }
    }
    if (best === targets.data[i]) correct++;
  }
  return correct;
}

/**
 * Mean loss and accuracy of `model` over `loader`, without recording a graph and in eval mode
 * (the previous train/eval mode is restored afterwards).
 */
export function evaluate(model: TensorModule, loader: Iterable<Batch>, lossFn: LossFn = crossEntropy): EvaluateResult {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(() => {
      let lossSum = 0;
      let correct = 0;
      let count = 0;
      for (const { x, y } of loader) {
        const logits = model.forward(x);
        const n = y.shape[0]!;
        lossSum += lossFn(logits, y).item() * n;
        correct += countCorrect(logits, y);
        count += n;
      }
      return { loss: count > 0 ? lossSum / count : NaN, accuracy: count > 0 ? correct / count : NaN, count };
    });
  } finally {
    model.train(wasTraining);
  }
}

/** `0.4213` → `42.13 %`. */
export function formatPercent(fraction: number): string {
  return `${(fraction * 100).toFixed(2)} %`;
}

function summaryLine(r: EpochRecord, epochs: number): string {
  const parts = [
    `epoch ${r.epoch}/${epochs}`,
    `train loss ${r.trainLoss.toFixed(4)}`,
    `train acc ${formatPercent(r.trainAccuracy)}`,
  ];
  if (r.testLoss !== undefined && r.testAccuracy !== undefined) {
    parts.push(`test loss ${r.testLoss.toFixed(4)}`, `test acc ${formatPercent(r.testAccuracy)}`);
  }
  parts.push(`${r.seconds.toFixed(1)} s`, `${Math.round(r.samplesPerSecond)} samples/s`);
  if (r.lr !== undefined) parts.push(`lr ${r.lr.toPrecision(3)}`);
  return parts.join('  ');
}

/**
 * Trains `model` for `epochs` passes over `trainLoader`.
 *
 * Each step: forward, loss, backward, `optimizer.step()`, `optimizer.zeroGrad()`; the step's loss
 * is read once (`loss.item()`, before the backward pass) for the history, the running metrics and
 * the divergence check (`stopOnNonFinite`). The scheduler, when
 * given, is stepped once per epoch, after that epoch's evaluation, so epoch k (1-based) trains
 * with the learning rate the schedule gives for index k − 1. Running accuracy is measured on the
 * training batches as they are trained (train mode), like PyTorch examples report it.
 * With `precision` 'fp16'/'bf16' the forward runs under autocast, and with a loss scaler the
 * backward starts from the scaled loss and the scaler decides whether the optimizer steps.
 *
 * Deterministic: with the same model initialisation (`manualSeed`), the same loader seed and the
 * same `seed` here, two runs give bit-identical step losses on one backend.
 */
export function fit(model: TensorModule, options: FitOptions): History {
  const { optimizer, epochs } = options;
  if (!Number.isInteger(epochs) || epochs < 0) throw new Error(`fit: epochs must be a non-negative integer, got ${epochs}`);
  const every = options.checkpoint?.every ?? 1;
  if (!Number.isInteger(every) || every < 1) throw new Error(`fit: checkpoint.every must be a positive integer, got ${every}`);
  const precision = checkPrecision(options.precision ?? 'fp32', 'fit: precision');
  const scaler = options.scaler ?? (precision === 'fp16' ? new GradScaler() : null);
  const paramGroups = optimizer.paramGroups;
  if (scaler && !paramGroups) throw new Error('fit: loss scaling needs an optimizer with paramGroups (every lowbit optimizer has them)');
  const scaling = scaler && paramGroups ? { scaler, optimizer: { paramGroups, step: () => optimizer.step() } } : null;
  if (options.seed !== undefined) manualSeed(options.seed);
  const autocastHandle = precision === 'fp32' ? null : autocast(model, { dtype: precision });
  try {
    return trainEpochs(model, options, scaling);
  } finally {
    autocastHandle?.restore();
  }
}

/** fit's loop over the epochs, with its options checked (and the model under autocast when asked). */
function trainEpochs(model: TensorModule, options: FitOptions, scaling: { scaler: GradScaler; optimizer: ScalableOptimizer } | null): History {
  const { trainLoader, testLoader, optimizer, scheduler, epochs } = options;
  const steppedOnMetric = scheduler !== undefined && isMetricScheduler(scheduler);
  const schedulerMonitor = steppedOnMetric ? checkMonitor(options.schedulerMonitor ?? 'val_loss', testLoader !== undefined, 'fit: schedulerMonitor') : 'val_loss';
  if (!steppedOnMetric && options.schedulerMonitor !== undefined) throw new Error('fit: schedulerMonitor applies to a scheduler stepped on a metric (ReduceLROnPlateau)');
  const lossFn = options.lossFn ?? crossEntropy;
  // No stream to draw on in a browser: the bar is off there unless one is given.
  const stream = options.progressStream ?? (typeof process !== 'undefined' ? process.stderr : undefined);
  const progress = (options.progress ?? true) && stream !== undefined;
  const stopOnNonFinite = options.stopOnNonFinite ?? true;
  const log = options.log ?? (progress ? (line: string) => void stream.write(`${line}\n`) : undefined);
  const every = options.checkpoint?.every ?? 1;

  const initialEpoch = options.initialEpoch ?? 0;
  if (!Number.isInteger(initialEpoch) || initialEpoch < 0 || initialEpoch > epochs) throw new Error(`fit: initialEpoch must be an integer in [0, epochs], got ${initialEpoch}`);
  const history: History = { epochs: [...(options.history?.epochs ?? [])], stepLosses: [...(options.history?.stepLosses ?? [])] };
  const stopping = options.earlyStopping ? new EarlyStopping(options.earlyStopping, testLoader !== undefined, initialEpoch > 0 ? options.history?.earlyStopping : undefined) : null;
  if (stopping) history.earlyStopping = stopping.state;
  const restoreBest = stopping !== null && (options.earlyStopping?.restoreBestWeights ?? false);
  // The weights of the best epoch so far (restoreBestWeights), a copy of stateDict().
  let bestWeights: StateDict | null = null;
  let bestWeightsEpoch = 0;
  if (restoreBest && initialEpoch > 0) {
    bestWeights = resumedBestWeights(model, stopping.state, initialEpoch, options.earlyStopping?.bestWeights);
    if (bestWeights) bestWeightsEpoch = stopping.state.bestEpoch;
  }
  for (let epoch = initialEpoch + 1; epoch <= epochs; epoch++) {
    const lr = optimizer.lr;
    model.train();
    const steps = trainLoader.length;
    const bar = progress
      ? new ProgressBar({ total: steps ?? 0, label: `epoch ${epoch}/${epochs}`, rateUnit: 'samples', stream })
      : null;
    const start = performance.now();
    let lossSum = 0;
    let correct = 0;
    let count = 0;
    let step = 0;
    let skippedSteps = 0;
    for (const { x, y } of trainLoader) {
      step++;
      const logits = model.forward(x);
      const loss = lossFn(logits, y);
      const value = loss.item();
      if (stopOnNonFinite && !Number.isFinite(value)) {
        bar?.done();
        throw new TrainingDivergedError(epoch, step, value, lr);
      }
      if (scaling) {
        scaling.scaler.scale(loss).backward();
        if (!scaling.scaler.step(scaling.optimizer)) skippedSteps++;
        scaling.scaler.update();
      } else {
        loss.backward();
        optimizer.step();
      }
      optimizer.zeroGrad();
      const n = y.shape[0]!;
      history.stepLosses.push(value);
      lossSum += value * n;
      correct += countCorrect(logits, y);
      count += n;
      bar?.tick(1, { loss: lossSum / count, acc: `${((correct / count) * 100).toFixed(2)}%` }, n);
    }
    const seconds = (performance.now() - start) / 1000;
    bar?.done();
    const record: EpochRecord = {
      epoch,
      trainLoss: count > 0 ? lossSum / count : NaN,
      trainAccuracy: count > 0 ? correct / count : NaN,
      seconds,
      samplesPerSecond: seconds > 0 ? count / seconds : 0,
    };
    if (lr !== undefined) record.lr = lr;
    if (scaling) {
      record.skippedSteps = skippedSteps;
      record.lossScale = scaling.scaler.getScale();
    }
    if (testLoader) {
      const result = evaluate(model, testLoader, lossFn);
      record.testLoss = result.loss;
      record.testAccuracy = result.accuracy;
    }
    history.epochs.push(record);
    if (scheduler && isMetricScheduler(scheduler)) scheduler.step(monitorValue(record, schedulerMonitor));
    else scheduler?.step();
    log?.(summaryLine(record, epochs));
    let stop = false;
    if (stopping) {
      const verdict = stopping.update(epoch, monitorValue(record, stopping.state.monitor));
      // As Keras: the first monitored epoch's weights are kept even when its value is NaN.
      if (restoreBest && (verdict === 'improved' || bestWeights === null)) {
        bestWeights = model.stateDict();
        bestWeightsEpoch = epoch;
      }
      stop = verdict === 'stop';
      if (restoreBest && bestWeights && (stop || epoch === epochs)) {
        model.loadStateDict(bestWeights);
        stopping.state.restoredEpoch = bestWeightsEpoch;
      }
      if (stop || (restoreBest && epoch === epochs)) log?.(describeEarlyStop(stopping.state));
    }
    if (options.checkpoint && (epoch % every === 0 || epoch === epochs || stop)) {
      saveCheckpoint(options.checkpoint.path, {
        model: model.stateDict(),
        optimizer: optimizer.stateDict?.() ?? null,
        epoch,
        config: options.config ?? null,
        history,
        ...(scaling ? { scaler: scaling.scaler.stateDict() } : {}),
        ...(scheduler?.stateDict ? { scheduler: scheduler.stateDict() } : {}),
        ...(restoreBest && bestWeights ? { bestWeights } : {}),
      });
    }
    options.onEpochEnd?.(record, history);
    if (stop) break;
  }
  return history;
}

/** The best weights a resumed fit starts from: the checkpoint's, or the model's own when the best epoch is the last one done. */
function resumedBestWeights(model: TensorModule, state: EarlyStoppingState, initialEpoch: number, saved: EarlyStoppingOptions['bestWeights']): StateDict | null {
  if (saved !== undefined) {
    const copy: StateDict = new Map(saved instanceof Map ? [...saved].map(([k, t]) => [k, t.clone()]) : Object.entries(saved).map(([k, t]) => [k, t.clone()]));
    // Checked now (names and shapes) rather than when training ends.
    const { missingKeys, unexpectedKeys, shapeMismatches } = compareStateDicts(new Map(model.stateDict()), copy);
    if (missingKeys.length + unexpectedKeys.length + shapeMismatches.length > 0) {
      throw new Error(`fit: earlyStopping.bestWeights do not fit the model (missing ${missingKeys.join(', ') || 'none'}; unexpected ${unexpectedKeys.join(', ') || 'none'}; shape mismatches ${shapeMismatches.map((m) => m.name).join(', ') || 'none'})`);
    }
    return copy;
  }
  if (state.bestEpoch === initialEpoch || state.bestEpoch === 0) return state.bestEpoch === 0 ? null : model.stateDict();
  throw new Error(`fit: resuming early stopping with restoreBestWeights needs the weights of epoch ${state.bestEpoch}: pass earlyStopping.bestWeights (loadCheckpoint(path).bestWeights)`);
}
