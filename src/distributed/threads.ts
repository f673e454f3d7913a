/**
 * Data-parallel training on W real worker threads: each holds its own replica, its shard of every
 * global batch and its own DGC state; gradients meet in a SharedArrayBuffer (SharedMemoryCommunicator).
 */
import { Worker } from 'node:worker_threads';
import { getBackend } from '../backend/registry.ts';
import { nativeInfo, setNativeThreads } from '../backend/index.ts';
import type { TensorModule } from '../nn/module.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { Batch } from '../train/fit.ts';
import type { TrafficStats } from './communicator.ts';
import { combineShardResults, COMPRESSOR_NAMES, shardRows, sliceRows, type DataParallelStep } from './data-parallel.ts';
import { dgcSparsityAt, resolveDgcOptions, type ResolvedDgcOptions } from './dgc.ts';
import { checkEpochs, runDataParallelLoop, type DataParallelHistory, type DataParallelTrainer, type FitDataParallelOptions } from './fit-data-parallel.ts';
import { abortCommunicatorMemory, allocateCommunicatorMemory, type SharedCommunicatorMemory } from './shared-communicator.ts';
import type { ModelFactorySpec, TensorPayload, WorkerInit, WorkerReply, WorkerRequest, WorkerTrainerOptions } from './threads-protocol.ts';

export type { ModelFactorySpec } from './threads-protocol.ts';

/** Settings of {@link ThreadedDataParallel}: DataParallel's, with the replica named by module and export. */
export interface ThreadedDataParallelOptions extends WorkerTrainerOptions {
  /** Number of worker threads W (one rank each), >= 1. */
  readonly workers: number;
  /** Builds each worker's replica (it then receives the model's weights and buffers). */
  readonly replica: ModelFactorySpec;
  /**
   * Native kernel threads (LOWBIT_THREADS of each worker, default 1: W threads x 1). The addon's
   * pool is one per process: `create` sizes it before the workers start (so this also sizes the
   * caller's kernels) and `close()` restores the caller's size once every worker has exited.
   */
  readonly kernelThreads?: number;
}

/** A worker thread failed (a throw in its forward or setup, an exit); the message names the rank. */
export class WorkerThreadError extends Error {
  override name = 'WorkerThreadError';
  constructor(
    readonly rank: number,
    message: string,
    readonly workerStack?: string,
  ) {
    super(`data-parallel worker rank ${rank}: ${message}`);
  }
}

interface Pending {
  resolve: (reply: WorkerReply) => void;
  reject: (error: Error) => void;
}

/**
 * The `DataParallel` step on W worker threads. The parent slices every global batch into the W
 * shards (`shardRows`), transfers each shard to its worker (postMessage with the buffers moved, not
 * copied twice) and gathers the per-rank losses; the gradients never pass through the parent: the
 * workers all-reduce / all-gather them in shared memory, summed in rank order, so every step's
 * weights, losses and byte counts are bit-identical to the in-process `DataParallel` (models
 * without dropout: dropout draws from each worker's own generator). Build with `create`, end with
 * `close` (idempotent; every worker is terminated). After a worker fails, every call rejects.
 */
export class ThreadedDataParallel implements DataParallelTrainer {
  readonly workers: number;
  readonly paramGroups: { lr: number; initialLr?: number }[];
  readonly denseBytesPerWorker: number;
  readonly compressor: 'none' | 'dgc';
  stepsPerEpoch: number;
  stepCount = 0;
  private readonly dgcOptions: ResolvedDgcOptions;
  private readonly threads: Worker[] = [];
  private readonly pending: (Pending | null)[];
  private readonly bytesSent: number[];
  private readonly savedKernelThreads: number | null;
  private collectives = 0;
  private failure: Error | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly model: TensorModule,
    private readonly memory: SharedCommunicatorMemory,
    options: ThreadedDataParallelOptions,
  ) {
    this.workers = options.workers;
    this.paramGroups = [{ lr: options.lr }];
    this.denseBytesPerWorker = 4 * memory.capacity;
    this.compressor = options.compressor ?? 'none';
    this.dgcOptions = resolveDgcOptions(options.dgc);
    this.stepsPerEpoch = options.stepsPerEpoch ?? 1;
    this.pending = new Array<Pending | null>(this.workers).fill(null);
    this.bytesSent = new Array<number>(this.workers).fill(0);
    this.savedKernelThreads = nativeInfo()?.threads ?? null;
  }

  /**
   * Starts W worker threads training `model` (its weights and buffers are copied to every replica;
   * the parent keeps `model` and fills it with rank 0's weights on `syncModel`). Options are checked
   * here (workers, lr, replica spec, kernelThreads) and by each worker's DataParallel (momentum, DGC,
   * ...): a worker refusing them rejects `create` naming the rank, after terminating every worker.
   */
  static async create(model: TensorModule, options: ThreadedDataParallelOptions): Promise<ThreadedDataParallel> {
    const { workers } = options;
    if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`ThreadedDataParallel: workers must be a positive integer, got ${workers}`);
    if (!(options.lr >= 0 && Number.isFinite(options.lr))) throw new RangeError(`ThreadedDataParallel: lr must be a finite number >= 0, got ${options.lr}`);
    const spec = options.replica as Partial<ModelFactorySpec> | undefined;
    if (typeof spec?.module !== 'string' || spec.module === '' || typeof spec.export !== 'string' || spec.export === '') {
      throw new TypeError('ThreadedDataParallel: replica must be { module, export } naming a model factory a worker can import (a closure cannot cross threads)');
    }
    if (spec.args !== undefined && !Array.isArray(spec.args)) throw new TypeError('ThreadedDataParallel: replica.args must be an array');
    const kernelThreads = options.kernelThreads ?? 1;
    if (!Number.isInteger(kernelThreads) || kernelThreads < 1 || kernelThreads > 256) throw new RangeError(`ThreadedDataParallel: kernelThreads must be an integer in [1, 256], got ${kernelThreads}`);
    if (options.compressor !== undefined && !COMPRESSOR_NAMES.includes(options.compressor)) {
      throw new RangeError(`ThreadedDataParallel: unknown compressor '${String(options.compressor)}' (choose ${COMPRESSOR_NAMES.join(', ')})`);
    }
    const named = model.namedParameters();
    const capacity = named.reduce((n, [, p]) => n + p.size, 0);
    if (capacity === 0) throw new Error('ThreadedDataParallel: the model has no parameters');
    const trainer = new ThreadedDataParallel(model, allocateCommunicatorMemory(workers, capacity), options);
    const state = [...model.stateDict()].map(([name, t]) => ({ name, data: t.data.slice(), shape: [...t.shape] }));
    const trainerOptions: WorkerTrainerOptions = {
      lr: options.lr,
      momentum: options.momentum,
      weightDecay: options.weightDecay,
      compressor: options.compressor,
      clipNorm: options.clipNorm,
      dgc: options.dgc,
      stepsPerEpoch: options.stepsPerEpoch,
      seed: options.seed,
    };
    // The addon's pool is one per process and resizing it from several threads at once deadlocks
    // (a resize joins pool threads another caller may be using): size it here, before any worker
    // starts, so that each worker's load-time setThreads(LOWBIT_THREADS) finds it sized and does nothing.
    if (trainer.savedKernelThreads !== null) setNativeThreads(kernelThreads);
    const env = { ...process.env, LOWBIT_THREADS: String(kernelThreads) };
    for (let rank = 0; rank < workers; rank++) {
      const init: WorkerInit = {
        rank,
        memory: trainer.memory,
        backend: getBackend(),
        factory: { module: spec.module, export: spec.export, args: spec.args },
        parameters: named.map(([name, p]) => ({ name, shape: [...p.shape] })),
        state,
        options: trainerOptions,
        seed: options.seed === undefined ? undefined : options.seed + rank,
      };
      const thread = startWorker(init, env);
      trainer.threads.push(thread);
      trainer.listen(thread, rank);
    }
    try {
      await Promise.all(trainer.threads.map((_, rank) => trainer.expect(rank)));
    } catch (error) {
      await trainer.close();
      throw error;
    }
    return trainer;
  }

  /** The worker threads, rank order (to watch them, e.g. their `exit` events; the trainer owns their messages). */
  get workerThreads(): readonly Worker[] {
    return this.threads;
  }

  /** Learning rate (of the single param group); sent to the workers with every step. */
  get lr(): number {
    return this.paramGroups[0]!.lr;
  }

  set lr(value: number) {
    this.paramGroups[0]!.lr = value;
  }

  /** Sparsity of the next step (0 for the dense exchange); the workers compute the same. */
  currentSparsity(): number {
    return this.compressor === 'dgc' ? dgcSparsityAt(this.dgcOptions, this.stepCount, this.stepsPerEpoch) : 0;
  }

  /** One synchronous step on the global batch (see `DataParallel.step`); rejects naming the rank when a worker fails. */
  async step(batch: Batch): Promise<DataParallelStep> {
    const total = batch.y.shape[0]!;
    if (batch.x.shape[0] !== total) throw new Error(`ThreadedDataParallel.step: x has ${batch.x.shape[0]} rows, y ${total}`);
    if (total === 0) throw new Error('ThreadedDataParallel.step: empty batch');
    const sparsity = this.currentSparsity();
    const lr = this.lr;
    const replies = await Promise.all(
      this.threads.map((_, rank) => {
        const { lo, hi } = shardRows(rank, this.workers, total);
        const x = hi > lo ? payload(sliceRows(batch.x, lo, hi)) : null;
        const y = hi > lo ? payload(sliceRows(batch.y, lo, hi)) : null;
        const transfer = [x, y].flatMap((p) => (p ? [p.data.buffer as ArrayBuffer] : []));
        return this.request(rank, { type: 'step', lr, total, x, y }, transfer);
      }),
    );
    this.stepCount++;
    let stepBytes = 0;
    const results = replies.map((reply, rank) => {
      if (reply.type !== 'step') throw new WorkerThreadError(rank, `answered a step with '${reply.type}'`);
      stepBytes += reply.bytesSent - this.bytesSent[rank]!;
      this.bytesSent[rank] = reply.bytesSent;
      this.collectives = reply.collectives;
      return reply.result;
    });
    return { ...combineShardResults(results, total), bytesSent: stepBytes, denseBytes: this.workers * this.denseBytesPerWorker, sparsity };
  }

  /** Bytes each rank sent so far (as the workers' shared counters read after the last step). */
  trafficStats(): TrafficStats {
    return { bytesSent: [...this.bytesSent], collectives: this.collectives };
  }

  /** Copies rank `rank`'s current parameters (default 0) into the parent's model. */
  async syncModel(rank = 0): Promise<void> {
    const params = await this.weights(rank);
    this.model.parameters().forEach((p, i) => p.data.set(params[i]!));
  }

  /** Every rank's parameters, rank order (one Float32Array per parameter, the model's order). */
  async replicaWeights(): Promise<Float32Array[][]> {
    return Promise.all(this.threads.map((_, rank) => this.weights(rank)));
  }

  /** Largest |difference| between any rank's parameter and rank 0's (0 when in sync). */
  async maxReplicaDifference(): Promise<number> {
    const all = await this.replicaWeights();
    let worst = 0;
    for (const params of all.slice(1)) {
      params.forEach((a, i) => {
        const b = all[0]![i]!;
        for (let j = 0; j < a.length; j++) worst = Math.max(worst, Math.abs(a[j]! - b[j]!));
      });
    }
    return worst;
  }

  /** Terminates every worker (idempotent) and restores the caller's native kernel threads. */
  close(): Promise<void> {
    this.closing ??= this.terminateAll();
    return this.closing;
  }

  private async terminateAll(): Promise<void> {
    this.closed = true;
    abortCommunicatorMemory(this.memory);
    this.fail(new Error('ThreadedDataParallel: closed'));
    await Promise.all(this.threads.map((t) => t.terminate()));
    if (this.savedKernelThreads !== null) setNativeThreads(this.savedKernelThreads);
  }

  private async weights(rank: number): Promise<Float32Array[]> {
    const reply = await this.request(rank, { type: 'weights' }, []);
    if (reply.type !== 'weights') throw new WorkerThreadError(rank, `answered a weights request with '${reply.type}'`);
    return reply.params;
  }

  private listen(thread: Worker, rank: number): void {
    thread.on('message', (reply: WorkerReply) => {
      if (reply.type === 'error') {
        this.fail(new WorkerThreadError(rank, `${reply.name}: ${reply.message}`, reply.stack));
        return;
      }
      const waiter = this.pending[rank];
      this.pending[rank] = null;
      waiter?.resolve(reply);
    });
    thread.on('error', (error) => this.fail(new WorkerThreadError(rank, `uncaught ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`)));
    thread.on('exit', (code) => {
      if (!this.closed) this.fail(new WorkerThreadError(rank, `the thread exited (code ${code})`));
    });
  }

  /** Rejects every pending request and refuses later ones; aborts the collectives and terminates the workers. */
  private fail(error: Error): void {
    if (this.failure === null) this.failure = error;
    for (let rank = 0; rank < this.pending.length; rank++) {
      const waiter = this.pending[rank];
      this.pending[rank] = null;
      waiter?.reject(this.failure);
    }
    if (!this.closed) void this.close();
  }

  private expect(rank: number): Promise<WorkerReply> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.pending[rank]) return Promise.reject(new Error(`ThreadedDataParallel: rank ${rank} already has a request in flight (await each call)`));
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending[rank] = { resolve, reject };
    });
  }

  private request(rank: number, message: WorkerRequest, transfer: ArrayBuffer[]): Promise<WorkerReply> {
    const reply = this.expect(rank);
    if (!this.failure) this.threads[rank]!.postMessage(message, transfer);
    return reply;
  }
}

// The worker entry beside this module: threads-worker.ts from the sources, threads-worker.js from dist/.
const WORKER_ENTRY = new URL(`./threads-worker${import.meta.url.slice(import.meta.url.lastIndexOf('.'))}`, import.meta.url);

/**
 * Starts the worker entry. Running from TypeScript sources (tsx), a worker does not inherit the
 * parent's module hooks on Node 20, so a two-line bootstrap registers tsx's in the worker first.
 */
function startWorker(init: WorkerInit, env: NodeJS.ProcessEnv): Worker {
  if (!WORKER_ENTRY.pathname.endsWith('.ts')) return new Worker(WORKER_ENTRY, { workerData: init, env });
  const tsx = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(WORKER_ENTRY.href)}); });`;
  return new Worker(bootstrap, { eval: true, workerData: init, env });
}

function payload(t: Tensor): TensorPayload {
  return { data: t.data, shape: [...t.shape] };
}

/** Options of {@link fitDataParallelThreads}: fitDataParallel's loop options with a thread trainer. */
export interface FitDataParallelThreadsOptions
  extends Omit<ThreadedDataParallelOptions, 'stepsPerEpoch'>,
    Pick<FitDataParallelOptions, 'trainLoader' | 'testLoader' | 'epochs' | 'scheduler' | 'progress' | 'progressStream' | 'log'> {
  /** Called after every epoch. */
  readonly onEpochEnd?: (record: import('./fit-data-parallel.ts').DataParallelEpochRecord, trainer: ThreadedDataParallel) => void;
}

/**
 * `fitDataParallel` on W worker threads: the same loop (progress bar, per-epoch log, schedule,
 * NaN/Inf stop, traffic summary) over a {@link ThreadedDataParallel}. Rank 0's weights are copied
 * into `model` before every evaluation and at the end. Every worker is terminated when the run
 * ends, fails (a worker's error rejects naming its rank) or diverges.
 */
export async function fitDataParallelThreads(model: TensorModule, options: FitDataParallelThreadsOptions): Promise<DataParallelHistory> {
  checkEpochs('fitDataParallelThreads', options.epochs);
  const trainer = await ThreadedDataParallel.create(model, { ...options, stepsPerEpoch: Math.max(1, options.trainLoader.length ?? 1) });
  try {
    return await runDataParallelLoop(model, trainer, options);
  } finally {
    await trainer.close();
  }
}
