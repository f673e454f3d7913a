/**
 * The data-parallel training loop: `fit` for W workers, with traffic accounting per epoch.
 */
import type { TensorModule } from '../nn/module.ts';
import { manualSeed } from '../tensor/random.ts';
import { evaluate, formatPercent, TrainingDivergedError, type Batch, type BatchSource, type EpochRecord, type EpochScheduler } from '../train/fit.ts';
import type { LrGroups } from '../optim/schedules.ts';
import { ProgressBar, type ProgressStream } from '../train/progress.ts';
import type { TrafficStats } from './communicator.ts';
import { DataParallel, type DataParallelOptions, type DataParallelStep } from './data-parallel.ts';

/** Options of {@link fitDataParallel}: the DataParallel settings plus the loop's. */
export interface FitDataParallelOptions extends Omit<DataParallelOptions, 'stepsPerEpoch'> {
  /** Global batches (each is split over the workers). */
  readonly trainLoader: BatchSource;
  /** Evaluated on rank 0's replica after every epoch when given. */
  readonly testLoader?: BatchSource;
  readonly epochs: number;
  /** Builds an epoch schedule over the learning rate (e.g. `(g) => new CosineAnnealingLR(g, { tMax: epochs })`). */
  readonly scheduler?: (groups: LrGroups) => EpochScheduler;
  /** `manualSeed(seed)` before the first step (dropout); also seeds the threshold samplers. */
  readonly seed?: number;
  /** Progress bar (default true in Node.js). */
  readonly progress?: boolean;
  readonly progressStream?: ProgressStream;
  /** One summary line per epoch (default: the progress stream when the bar is on). */
  readonly log?: (line: string) => void;
  /** Called after every epoch. */
  readonly onEpochEnd?: (record: DataParallelEpochRecord, trainer: DataParallel) => void;
}

/** An epoch of data-parallel training: the usual record plus what the workers sent. */
export interface DataParallelEpochRecord extends EpochRecord {
  /** Bytes all workers sent during the epoch. */
  bytesSent: number;
  /** Bytes a dense all-reduce would have sent during the epoch (all workers). */
  denseBytes: number;
  /** denseBytes / bytesSent. */
  compressionRatio: number;
  /** Sparsity of the epoch's last step. */
  sparsity: number;
  /** Sampled thresholds that fell back to a full exact top-k during the epoch. */
  thresholdFallbacks: number;
}

/** Gradient traffic of a whole run. */
export interface TrafficSummary {
  readonly workers: number;
  readonly steps: number;
  /** Bytes each worker sent (index = rank). */
  readonly bytesSentPerWorker: readonly number[];
  readonly bytesSent: number;
  readonly denseBytes: number;
  /** Total gradient compression ratio: dense bytes / bytes sent. */
  readonly compressionRatio: number;
}

export interface DataParallelHistory {
  epochs: DataParallelEpochRecord[];
  /** Global-batch loss of every step. */
  stepLosses: number[];
  /** Bytes all workers sent at every step. */
  stepBytesSent: number[];
  /** Sparsity of every step (0 for the dense exchange). */
  stepSparsities: number[];
  traffic: TrafficSummary;
  /** Largest parameter difference between replicas at the end (0: in sync). */
  maxReplicaDifference: number;
}

/**
 * Trains `model` (rank 0) and W − 1 replicas by synchronous data-parallel SGD for `epochs` passes
 * over `trainLoader` (see {@link DataParallel} for the step), evaluating rank 0's replica on
 * `testLoader` after every epoch. Stops with a TrainingDivergedError after a step whose loss is NaN
 * or infinite (that step has already been applied). Returns the history with the traffic summary.
 */
export async function fitDataParallel(model: TensorModule, options: FitDataParallelOptions): Promise<DataParallelHistory> {
  checkEpochs('fitDataParallel', options.epochs);
  if (options.seed !== undefined) manualSeed(options.seed);
  const trainer = new DataParallel(model, { ...options, stepsPerEpoch: Math.max(1, options.trainLoader.length ?? 1) });
  return runDataParallelLoop(model, trainer, options);
}

/** @internal Refuses a bad epoch count before any worker is built. */
export function checkEpochs(caller: string, epochs: number): void {
  if (!Number.isInteger(epochs) || epochs < 0) throw new RangeError(`${caller}: epochs must be a non-negative integer, got ${epochs}`);
}

/**
 * @internal What the data-parallel loop drives: the in-process `DataParallel` or the worker-thread
 * trainer. `syncModel` brings rank 0's weights into the model the loop evaluates (a no-op in-process).
 */
export interface DataParallelTrainer {
  readonly workers: number;
  readonly paramGroups: { lr: number; initialLr?: number }[];
  readonly lr: number;
  readonly denseBytesPerWorker: number;
  step(batch: Batch): Promise<DataParallelStep>;
  trafficStats(): TrafficStats;
  syncModel?(): Promise<void>;
  maxReplicaDifference(): number | Promise<number>;
}

/** The loop options the shared data-parallel loop reads. */
type LoopOptions<T> = Pick<FitDataParallelOptions, 'trainLoader' | 'testLoader' | 'epochs' | 'scheduler' | 'progress' | 'progressStream' | 'log'> & {
  readonly onEpochEnd?: (record: DataParallelEpochRecord, trainer: T) => void;
};

/**
 * @internal The epoch loop of data-parallel training (progress bar, per-epoch record and log line,
 * schedule, NaN/Inf stop, traffic summary), shared by `fitDataParallel` and `fitDataParallelThreads`.
 */
export async function runDataParallelLoop<T extends DataParallelTrainer>(model: TensorModule, trainer: T, options: LoopOptions<T>): Promise<DataParallelHistory> {
  const { trainLoader, testLoader, epochs } = options;
  const stream = options.progressStream ?? (typeof process !== 'undefined' ? process.stderr : undefined);
  const progress = (options.progress ?? true) && stream !== undefined;
  const log = options.log ?? (progress ? (line: string) => void stream.write(`${line}\n`) : undefined);
  const scheduler = options.scheduler?.(trainer);
  const history: DataParallelHistory = { epochs: [], stepLosses: [], stepBytesSent: [], stepSparsities: [], traffic: traffic(trainer, 0), maxReplicaDifference: 0 };
  let steps = 0;
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const lr = trainer.lr;
    const bar = progress ? new ProgressBar({ total: trainLoader.length ?? 0, label: `epoch ${epoch}/${epochs}`, rateUnit: 'samples', stream }) : null;
    const start = performance.now();
    let lossSum = 0;
    let correct = 0;
    let count = 0;
    let bytesSent = 0;
    let denseBytes = 0;
    let sparsity = 0;
    let fallbacks = 0;
    let step = 0;
    for (const batch of trainLoader) {
      step++;
      const result = await trainer.step(batch);
      steps++;
      if (!Number.isFinite(result.loss)) {
        bar?.done();
        throw new TrainingDivergedError(epoch, step, result.loss, lr);
      }
      history.stepLosses.push(result.loss);
      history.stepBytesSent.push(result.bytesSent);
      history.stepSparsities.push(result.sparsity);
      lossSum += result.loss * result.count;
      correct += result.correct;
      count += result.count;
      bytesSent += result.bytesSent;
      denseBytes += result.denseBytes;
      sparsity = result.sparsity;
      fallbacks += result.thresholdFallbacks;
      bar?.tick(1, { loss: lossSum / count, acc: `${((correct / count) * 100).toFixed(2)}%`, sparsity, ratio: `${(denseBytes / bytesSent).toFixed(1)}x` }, result.count);
    }
    const seconds = (performance.now() - start) / 1000;
    bar?.done();
    const record: DataParallelEpochRecord = {
      epoch,
      trainLoss: count > 0 ? lossSum / count : NaN,
      trainAccuracy: count > 0 ? correct / count : NaN,
      seconds,
      samplesPerSecond: seconds > 0 ? count / seconds : 0,
      lr,
      bytesSent,
      denseBytes,
      compressionRatio: bytesSent > 0 ? denseBytes / bytesSent : NaN,
      sparsity,
      thresholdFallbacks: fallbacks,
    };
    if (testLoader) {
      await trainer.syncModel?.();
      const result = evaluate(model, testLoader);
      record.testLoss = result.loss;
      record.testAccuracy = result.accuracy;
    }
    history.epochs.push(record);
    scheduler?.step();
    log?.(summaryLine(record, epochs, trainer.workers));
    options.onEpochEnd?.(record, trainer);
  }
  await trainer.syncModel?.();
  history.traffic = traffic(trainer, steps);
  history.maxReplicaDifference = await trainer.maxReplicaDifference();
  return history;
}

function traffic(trainer: DataParallelTrainer, steps: number): TrafficSummary {
  const perWorker = trainer.trafficStats().bytesSent;
  const bytesSent = perWorker.reduce((a, b) => a + b, 0);
  const denseBytes = steps * trainer.workers * trainer.denseBytesPerWorker;
  return { workers: trainer.workers, steps, bytesSentPerWorker: perWorker, bytesSent, denseBytes, compressionRatio: bytesSent > 0 ? denseBytes / bytesSent : NaN };
}

function summaryLine(r: DataParallelEpochRecord, epochs: number, workers: number): string {
  const parts = [`epoch ${r.epoch}/${epochs}`, `train loss ${r.trainLoss.toFixed(4)}`, `train acc ${formatPercent(r.trainAccuracy)}`];
  if (r.testLoss !== undefined && r.testAccuracy !== undefined) parts.push(`test loss ${r.testLoss.toFixed(4)}`, `test acc ${formatPercent(r.testAccuracy)}`);
  parts.push(`${workers} workers`, `sent ${formatBytes(r.bytesSent)} (dense ${formatBytes(r.denseBytes)}, ${r.compressionRatio.toFixed(1)}x)`, `sparsity ${(r.sparsity * 100).toPrecision(4)} %`, `${r.seconds.toFixed(1)} s`);
  return parts.join('  ');
}

/** `1234567` → `1.23 MB` (decimal units). */
export function formatBytes(bytes: number): string {
  if (bytes < 1e3) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(2)} kB`;
  if (bytes < 1e9) return `${(bytes / 1e6).toFixed(2)} MB`;
  return `${(bytes / 1e9).toFixed(2)} GB`;
}
