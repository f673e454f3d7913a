/**
 * `lowbit train --workers N --compress none|dgc --sparsity S`: float32 data-parallel training over N
 * workers simulated in-process (src/distributed), dense all-reduce or Deep Gradient Compression.
 */
import { join } from 'node:path';
import { DATASET_STATS, DataLoader, loadDataset, take, type DatasetName } from '../../data/index.ts';
import { createModel, type ModelName } from '../../nn/index.ts';
import { CosineAnnealingLR, StepLR, type LrGroups } from '../../optim/index.ts';
import { manualSeed } from '../../tensor/index.ts';
import { formatPercent, saveCheckpoint, type EpochScheduler } from '../../train/index.ts';
import { makeDirs, writeFileAtomic } from '../../format/index.ts';
import { fitDataParallel, formatBytes, type CompressorName } from '../../distributed/index.ts';
import { fitDataParallelThreads } from '../../distributed/threads.ts';
import { UsageError } from '../args.ts';
import type { CommandIO } from '../command.ts';
import { backendDetails, describeBackend } from '../backend-info.ts';

/** The train options a data-parallel run reads (the rest must keep their defaults). */
export interface DataParallelTrainOptions {
  readonly model: ModelName;
  readonly dataset: DatasetName;
  readonly epochs: number;
  readonly batchSize: number;
  readonly optimizer: string;
  readonly lr?: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly schedule: 'cosine' | 'step' | 'none';
  readonly seed: number;
  readonly out?: string;
  readonly limit?: number;
  readonly testLimit?: number;
  readonly progress: boolean;
  readonly quant: string;
  readonly workers: number;
  readonly compress: CompressorName;
  readonly sparsity: number;
  readonly threads?: boolean;
  readonly init?: string;
  readonly resume?: boolean;
  readonly plan?: string;
  readonly estimator?: string;
  readonly baseline: string;
}

/** True when the train options ask for data-parallel training. */
export function wantsDataParallel(options: { workers: number; compress: CompressorName }): boolean {
  return options.workers > 1 || options.compress !== 'none';
}

/**
 * Trains float32 with W in-process workers (synchronous SGD, --batch-size is the global batch),
 * writes <out>/checkpoint.safetensors and <out>/metrics.json (with the traffic summary) and prints
 * the test accuracy and the gradient compression ratio.
 */
export async function trainDataParallel(options: DataParallelTrainOptions, io: CommandIO): Promise<void> {
  const refuse = (message: string): never => {
    throw new UsageError(message, 'train');
  };
  if (options.quant !== 'fp32') refuse(`--workers/--compress train float32 only: pass --quant fp32 (got --quant ${options.quant})`);
  if (options.optimizer !== 'sgd') refuse(`--workers/--compress use momentum SGD (DGC's update rule): pass --optimizer sgd (got ${options.optimizer})`);
  if (options.init !== undefined || options.plan !== undefined || options.resume) refuse('--workers/--compress do not support --init, --plan or --resume');
  // QAT-only options a float32 data-parallel run would otherwise ignore without a word.
  if (options.estimator !== undefined) refuse(`--estimator ${options.estimator} needs a QAT run; --workers/--compress train float32 only`);
  if (options.baseline === 'train') refuse('--baseline train compares a QAT run with a float32 one; --workers/--compress train float32 only');
  if (!(options.sparsity >= 0 && options.sparsity < 1)) refuse(`--sparsity must be in [0, 1), got ${options.sparsity}`);
  if (options.momentum >= 1) refuse(`--momentum must be below 1 for data-parallel training, got ${options.momentum}`);
  if (options.batchSize < options.workers) refuse(`--batch-size ${options.batchSize} is smaller than --workers ${options.workers}: every worker needs samples`);

  const lr = options.lr ?? 0.05;
  const fullTrain = loadDataset(options.dataset, 'train');
  const fullTest = loadDataset(options.dataset, 'test');
  const trainSet = options.limit === undefined ? fullTrain : take(fullTrain, options.limit);
  const testSet = options.testLimit === undefined ? fullTest : take(fullTest, options.testLimit);
  const normalize = DATASET_STATS[options.dataset];
  const trainLoader = new DataLoader(trainSet, { batchSize: options.batchSize, shuffle: true, seed: options.seed, normalize });
  const testLoader = new DataLoader(testSet, { batchSize: 256, normalize });
  manualSeed(options.seed);
  const numClasses = trainSet.numClasses;
  const model = createModel(options.model, { numClasses });
  const out = options.out ?? join('runs', `${options.model}-${options.dataset}-fp32-${options.compress === 'dgc' ? 'dgc' : 'dense'}-w${options.workers}`);
  const makeScheduler = (groups: LrGroups): EpochScheduler | undefined =>
    options.schedule === 'cosine' ? new CosineAnnealingLR(groups, { tMax: options.epochs })
      : options.schedule === 'step' ? new StepLR(groups, { stepSize: Math.max(1, Math.round(options.epochs / 3)), gamma: 0.1 })
        : undefined;
  const backend = backendDetails();
  const exchange = options.compress === 'dgc'
    ? `DGC, final sparsity ${(options.sparsity * 100).toPrecision(4)} % (warm-up 75 / 93.75 / 98.4375 / 99.6 % over the first 10 % of the epochs, capped at the final), momentum correction and masking`
    : 'dense all-reduce';
  io.print('lowbit train (data parallel)');
  const rows: [string, string][] = [
    ['model', `${options.model}, ${model.numParameters().toLocaleString('en-US')} parameters, float32`],
    ['data', `${options.dataset}: ${trainSet.length} train / ${testSet.length} test samples, global batch ${options.batchSize}`],
    ['workers', `${options.workers} (${options.threads ? 'worker threads x 1 kernel thread' : 'in-process'}, synchronous SGD)`],
    ['exchange', exchange],
    ['optimizer', `momentum SGD lr ${lr} momentum ${options.momentum}${options.weightDecay > 0 ? ` weight decay ${options.weightDecay}` : ''}, ${options.schedule} schedule, ${options.epochs} epoch${options.epochs === 1 ? '' : 's'}, seed ${options.seed}`],
    ['backend', describeBackend(backend)],
    ['output', out],
  ];
  for (const [k, v] of rows) io.print(`  ${k.padEnd(9)}  ${v}`);

  makeDirs(out);
  const config = { ...options, lr, out, backend: backend.active };
  const start = performance.now();
  const common = {
    workers: options.workers,
    lr,
    momentum: options.momentum,
    weightDecay: options.weightDecay,
    compressor: options.compress,
    // The four warm-up stages below the final sparsity take the first 10 % of the run (paper: the
    // first 4 of 90 ImageNet epochs).
    dgc: { sparsity: options.sparsity, warmupStageEpochs: options.epochs / 40 },
    epochs: options.epochs,
    trainLoader,
    testLoader,
    scheduler: (groups: LrGroups) => makeScheduler(groups) ?? { step: () => undefined },
    seed: options.seed,
    progress: options.progress,
    progressStream: io.stderr,
    log: (line: string) => io.print(line),
  };
  const history = options.threads
    ? await fitDataParallelThreads(model, { ...common, replica: { module: import.meta.resolve(`../../nn/index${import.meta.url.slice(import.meta.url.lastIndexOf('.'))}`), export: 'createModel', args: [options.model, { numClasses }] } })
    : await fitDataParallel(model, { ...common, replica: () => createModel(options.model, { numClasses }) });
  const totalSeconds = (performance.now() - start) / 1000;
  const checkpointPath = join(out, 'checkpoint.safetensors');
  saveCheckpoint(checkpointPath, { model: model.stateDict(), optimizer: null, epoch: options.epochs, config, history: { epochs: history.epochs, stepLosses: history.stepLosses } });
  const last = history.epochs.at(-1);
  const metrics = {
    config,
    backend,
    parameters: model.numParameters(),
    trainSamples: trainSet.length,
    testSamples: testSet.length,
    testAccuracy: last?.testAccuracy ?? null,
    testLoss: last?.testLoss ?? null,
    totalSeconds,
    traffic: history.traffic,
    maxReplicaDifference: history.maxReplicaDifference,
    history: { epochs: history.epochs, stepLosses: history.stepLosses },
  };
  const metricsPath = join(out, 'metrics.json');
  writeFileAtomic(metricsPath, new TextEncoder().encode(`${JSON.stringify(metrics, null, 2)}\n`));
  io.print(`wrote ${checkpointPath} and ${metricsPath} (${totalSeconds.toFixed(1)} s)`);
  if (last?.testAccuracy !== undefined) io.print(`test accuracy: ${formatPercent(last.testAccuracy)}`);
  const t = history.traffic;
  io.print(`gradient traffic: ${formatBytes(t.bytesSent)} sent by ${t.workers} workers over ${t.steps} steps (dense all-reduce: ${formatBytes(t.denseBytes)}), compression ${t.compressionRatio.toFixed(1)}x`);
}
