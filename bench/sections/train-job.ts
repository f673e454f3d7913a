/**
 * One measurement shared by the `epoch-time` and `qat-epoch` sections: wall time of full MNIST
 * training epochs of the default `lowbit train` job (LeNet-5, W4A4 LSQ QAT, first/last layers
 * and the input at 8 bit, Adam lr 2e-3 with quantizer parameters at 0.1x, batch 64, shuffled
 * with seed 0, normalised) and of the same job with `--quant fp32`, on the native backend,
 * through the train API exactly as src/cli/commands/train.ts builds it (`createModel`,
 * `qatFromCliOptions`, `prepareQat`, `qatParamGroups`, `Adam`, `fit`, and the CLI's GC policy
 * `preferThroughputGc`). The training pass is
 * timed; the CLI's per-epoch test pass and checkpoint are not part of it.
 *
 * Each repeat trains one full epoch of every configuration, in alternating order (A B, B A, ...)
 * so that drifting background load on the shared machine hits both alike; each model keeps
 * training across repeats (after an untimed 40-step warm-up). Per epoch it records the wall
 * time, the process CPU time and the QAT / fp32 ratio of the epochs of the same repeat.
 * Both sections call `measureTrainJob`; within one bench process the epochs run once and both
 * report the same numbers.
 */
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { DATASET_STATS, DataLoader, take, type Dataset } from '../../src/data/index.ts';
import { createModel } from '../../src/nn/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';
import { fit } from '../../src/train/fit.ts';
import { preferThroughputGc } from '../../src/train/gc.ts';
import { prepareQat, qatFromCliOptions, qatParamGroups, type QuantChoice } from '../../src/quant/qat/index.ts';
import { median, now, tick, type SectionContext } from '../lib.ts';
import { withBackend } from '../workloads.ts';

/** `lowbit train` defaults (src/cli/commands/train.ts). */
export const TRAIN_JOB = { batchSize: 64, lr: 2e-3, quantLrScale: 0.1, seed: 0, warmupSteps: 40 } as const;

/** The configurations timed: the CLI default and `--quant fp32`. */
export const TRAIN_JOB_CONFIGS = ['w4a4', 'fp32'] as const satisfies readonly QuantChoice[];
export type TrainJobConfig = (typeof TRAIN_JOB_CONFIGS)[number];

export interface TrainJobEpochs {
  /** Wall seconds of each timed epoch, per configuration, in repeat order. */
  readonly wall: Readonly<Record<TrainJobConfig, number[]>>;
  /** Process CPU seconds (user + system, all threads) of the same epochs. */
  readonly cpu: Readonly<Record<TrainJobConfig, number[]>>;
  /** Training accuracy of each timed epoch (sanity: the runs really train). */
  readonly trainAccuracy: Readonly<Record<TrainJobConfig, number[]>>;
  /** Garbage collections per training step over the timed epochs: scavenges and major (mark-compact) GCs. */
  readonly gcPerStep: Readonly<Record<TrainJobConfig, { minor: number; major: number }>>;
  /** QAT / fp32 wall-time ratio of the two epochs of each repeat. */
  readonly pairRatios: readonly number[];
  readonly samples: number;
  readonly steps: number;
  readonly repeats: number;
}

let cached: { repeats: number; result: Promise<TrainJobEpochs> } | null = null;

/**
 * Full-epoch timings of the default job and its fp32 twin (see the file comment). Memoised per
 * process for a given repeat count, so `epoch-time` and `qat-epoch` share one measurement.
 */
export function measureTrainJob(ctx: SectionContext, ds: Dataset): Promise<TrainJobEpochs> {
  if (cached?.repeats !== ctx.repeats) cached = { repeats: ctx.repeats, result: run(ctx, ds) };
  else ctx.log('reusing the epochs measured earlier in this run (shared with the other epoch section)');
  return cached.result;
}

async function run(ctx: SectionContext, ds: Dataset): Promise<TrainJobEpochs> {
  const { batchSize, lr, quantLrScale, seed, warmupSteps } = TRAIN_JOB;
  const wall = { w4a4: [] as number[], fp32: [] as number[] };
  const cpu = { w4a4: [] as number[], fp32: [] as number[] };
  const trainAccuracy = { w4a4: [] as number[], fp32: [] as number[] };
  const pairRatios: number[] = [];
  // GC entries arrive asynchronously: keep (kind, start) and attribute them to the epochs by time.
  const gcEntries: { kind: number; start: number }[] = [];
  const epochSpans: { quant: TrainJobConfig; start: number; end: number }[] = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcEntries.push({ kind: (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? 0, start: entry.startTime });
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  // The GC policy `lowbit train` sets for itself (src/train/gc.ts), so the job runs as the CLI runs it.
  preferThroughputGc();
  await withBackend('native', async () => {
    const loaderOptions = { batchSize, shuffle: true, normalize: DATASET_STATS.mnist } as const;
    const jobs = TRAIN_JOB_CONFIGS.map((quant) => {
      manualSeed(seed);
      const model = createModel('lenet5', { numClasses: ds.numClasses });
      const plan = qatFromCliOptions({ quant });
      if (plan) prepareQat(model, plan);
      const optimizer = new Adam(qatParamGroups(model, { lr, quantLrScale }), { lr, weightDecay: 0 });
      // Untimed warm-up: initialises LSQ steps and observers, JIT, allocator and thread pool.
      fit(model, { trainLoader: new DataLoader(take(ds, batchSize * warmupSteps), { ...loaderOptions, seed: 99 }), optimizer, epochs: 1, progress: false });
      return { quant, model, optimizer, loader: new DataLoader(ds, { ...loaderOptions, seed }) };
    });
    for (let r = 0; r < ctx.repeats; r++) {
      const order = r % 2 === 0 ? jobs : [...jobs].reverse();
      for (const job of order) {
        await tick();
        const c0 = process.cpuUsage();
        const spanStart = performance.now();
        const t0 = now();
        const history = fit(job.model, { trainLoader: job.loader, optimizer: job.optimizer, epochs: 1, progress: false });
        const seconds = now() - t0;
        const c = process.cpuUsage(c0);
        epochSpans.push({ quant: job.quant, start: spanStart, end: performance.now() });
        wall[job.quant].push(seconds);
        cpu[job.quant].push((c.user + c.system) / 1e6);
        trainAccuracy[job.quant].push(history.epochs[0]!.trainAccuracy);
        ctx.log(`repeat ${r + 1}/${ctx.repeats} ${job.quant}: ${seconds.toFixed(2)} s (cpu ${((c.user + c.system) / 1e6).toFixed(2)} s)`);
      }
      pairRatios.push(wall.w4a4[r]! / wall.fp32[r]!);
    }
  });
  await new Promise((resolve) => setTimeout(resolve, 100));
  observer.disconnect();
  const steps = Math.ceil(ds.length / batchSize);
  const gcPerStep = { w4a4: { minor: 0, major: 0 }, fp32: { minor: 0, major: 0 } };
  // Node reports scavenges as kind 1 and mark-compacts as kind 2 or 4 (incremental marking).
  for (const { kind, start } of gcEntries) {
    const span = epochSpans.find((e) => start >= e.start && start <= e.end);
    if (!span) continue;
    if (kind === 1) gcPerStep[span.quant].minor += 1 / (steps * ctx.repeats);
    else if (kind === 2 || kind === 4) gcPerStep[span.quant].major += 1 / (steps * ctx.repeats);
  }
  return { wall, cpu, trainAccuracy, gcPerStep, pairRatios, samples: ds.length, steps, repeats: ctx.repeats };
}

/** Median QAT / fp32 figures of a measurement: ratio of medians and median of per-repeat ratios. */
export function trainJobRatios(m: TrainJobEpochs): { wall: number; pairs: number; cpu: number } {
  return {
    wall: median(m.wall.w4a4) / median(m.wall.fp32),
    pairs: median([...m.pairRatios]),
    cpu: median(m.cpu.w4a4) / median(m.cpu.fp32),
  };
}
