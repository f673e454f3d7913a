/**
 * Synchronous data-parallel SGD over W model replicas, with dense or DGC-compressed gradient exchange.
 */
import type { TensorModule } from '../nn/module.ts';
import { autocastDtype } from '../lowp/autocast.ts';
import { QuantEmbedding } from '../quant/embedding/quant-embedding.ts';
import { Tensor } from '../tensor/tensor.ts';
import { Rng } from '../tensor/random.ts';
import { crossEntropy } from '../tensor/ops.ts';
import { countCorrect, type Batch } from '../train/fit.ts';
import { InProcessCommunicator, type Communicator, type SparseMessage, type TrafficStats } from './communicator.ts';
import { dgcSendCount, dgcSparsityAt, DgcTensorState, resolveDgcOptions, type DgcOptions, type ResolvedDgcOptions } from './dgc.ts';

/** Gradient exchange: `none` = dense all-reduce of the gradient; `dgc` = Deep Gradient Compression. */
export type CompressorName = 'none' | 'dgc';

/** The compressors `DataParallel` knows, for CLI choices. */
export const COMPRESSOR_NAMES: readonly CompressorName[] = ['none', 'dgc'];

/** Settings of {@link DataParallel}. */
export interface DataParallelOptions {
  /** Number of workers W (replicas), >= 1. */
  readonly workers: number;
  /** Builds a fresh model of the same architecture; called W − 1 times (rank 0 is the model given). */
  readonly replica: () => TensorModule;
  /** Learning rate (required). */
  readonly lr: number;
  /** Momentum factor m (default 0.9). */
  readonly momentum?: number;
  /** L2 penalty added to every worker's gradient before exchange (default 0). */
  readonly weightDecay?: number;
  /** Gradient exchange (default `none`). */
  readonly compressor?: CompressorName;
  /**
   * Local gradient clipping (DGC's, usable with either exchange): each worker scales its share c_r
   * (all tensors together) to L2 norm ≤ clipNorm·W^(−1/2) before accumulating or sending it.
   * clipNorm is in the units of the averaged gradient a single-worker run would clip (default: off).
   */
  readonly clipNorm?: number;
  /** DGC settings (used when compressor is `dgc`). */
  readonly dgc?: DgcOptions;
  /** Default: an InProcessCommunicator of W ranks. */
  readonly communicator?: Communicator;
  /** Steps per epoch, for the warm-up schedule (fitDataParallel sets it from the loader; default 1). */
  readonly stepsPerEpoch?: number;
  /** Seed of the workers' threshold samplers (default 0). */
  readonly seed?: number;
  /**
   * Hold and run rank `localRank` only, with `model` as its replica (one worker of a multi-thread
   * run: see `fitDataParallelThreads`); `replica` is not called and steps go through `stepShard`.
   * Default: all W ranks in this thread.
   */
  readonly localRank?: number;
}

/** What one synchronous step did. */
export interface DataParallelStep {
  /** Mean loss over the global batch (shard losses weighted by shard size). */
  readonly loss: number;
  /** Correctly classified samples of the global batch (train mode). */
  readonly correct: number;
  /** Samples in the global batch. */
  readonly count: number;
  /** Bytes all workers sent this step. */
  readonly bytesSent: number;
  /** Bytes a dense all-reduce of every gradient would have sent this step (all workers). */
  readonly denseBytes: number;
  /** DGC sparsity used this step (0 for the dense exchange). */
  readonly sparsity: number;
  /** Times the sampled threshold left fewer than k candidates, summed over workers and tensors. */
  readonly thresholdFallbacks: number;
}

/** One parameter's place in the flat gradient vector. */
interface Slot {
  readonly name: string;
  readonly size: number;
  readonly offset: number;
  /** Eligible for compression: rank > 1 and size >= minCompressSize. */
  readonly compressible: boolean;
}

interface Worker {
  readonly rank: number;
  readonly model: TensorModule;
  readonly params: Tensor[];
  /** DGC state of compressible slots (null elsewhere, and without DGC). */
  readonly dgc: (DgcTensorState | null)[];
  /** Momentum buffer of the averaged gradient, per slot sent dense (identical on every replica). */
  readonly denseMomentum: (Float32Array | null)[];
  readonly rng: Rng;
  /** Scratch: sum of the gathered sparse messages, flat. */
  readonly sparseSum: Float32Array;
}

/**
 * W replicas of one model trained by synchronous data-parallel SGD.
 *
 * Each step splits the global batch into W contiguous shards (sizes differ by at most one). Worker r
 * runs forward and backward on its shard (mean loss), and contributes c_r = (n_r / N)·(∇ + wd·w),
 * so that the sum over workers is the gradient of the global batch's mean loss whatever the shard
 * sizes. With `compressor: 'none'` the c_r are summed by one all-reduce and every replica applies
 * momentum SGD (PyTorch's rule, b ← m·b + G, w ← w − lr·b) to the sum G. With `dgc`, compressible
 * tensors go through DGC (see `DgcTensorState`: local momentum correction, top-k of the accumulated
 * velocity, masking) and are exchanged by one all-gather of (index, value) messages; every replica
 * then applies plain SGD, w ← w − lr·S, with S the sum of all messages. Tensors sent dense (small
 * ones, biases, or every tensor while the sparsity is 0) follow the dense rule. Local gradient
 * clipping (`clipNorm`) scales each c_r to norm ≤ clipNorm·W^(−1/2) before accumulation.
 *
 * Every replica applies the same update to the same weights, so all replicas stay bit-identical
 * (`maxReplicaDifference()` is 0). Replicas' buffers (BatchNorm statistics) are their own.
 */
export class DataParallel {
  readonly workers: number;
  readonly compressor: CompressorName;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly dgcOptions: ResolvedDgcOptions;
  readonly clipNorm: number | undefined;
  readonly communicator: Communicator;
  /** The learning rate as a param group, so that the optim schedules (CosineAnnealingLR, ...) can drive it. */
  readonly paramGroups: { lr: number; initialLr?: number }[];
  /** Steps per epoch of the warm-up schedule. */
  stepsPerEpoch: number;
  /** Steps taken so far. */
  stepCount = 0;
  private readonly slots: Slot[];
  private readonly workerStates: Worker[];
  private readonly totalSize: number;

  constructor(model: TensorModule, options: DataParallelOptions) {
    const { workers } = options;
    if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`DataParallel: workers must be a positive integer, got ${workers}`);
    if (!(options.lr >= 0 && Number.isFinite(options.lr))) throw new RangeError(`DataParallel: lr must be a finite number >= 0, got ${options.lr}`);
    // Its codes are not a parameter: only AlptOptimizer's row update trains them, which SGD here never runs.
    if (model.modules().some((m) => m instanceof QuantEmbedding)) throw new Error('DataParallel: the model has a QuantEmbedding, whose codes only AlptOptimizer trains; data-parallel training would train its step size alone');
    this.workers = workers;
    this.compressor = options.compressor ?? 'none';
    if (!COMPRESSOR_NAMES.includes(this.compressor)) throw new RangeError(`DataParallel: unknown compressor '${String(this.compressor)}' (choose ${COMPRESSOR_NAMES.join(', ')})`);
    this.momentum = options.momentum ?? 0.9;
    this.weightDecay = options.weightDecay ?? 0;
    if (!(this.momentum >= 0 && this.momentum < 1)) throw new RangeError(`DataParallel: momentum must be in [0, 1), got ${this.momentum}`);
    if (!(this.weightDecay >= 0 && Number.isFinite(this.weightDecay))) throw new RangeError(`DataParallel: weightDecay must be >= 0, got ${this.weightDecay}`);
    this.dgcOptions = resolveDgcOptions(options.dgc);
    this.clipNorm = options.clipNorm;
    if (this.clipNorm !== undefined && !(this.clipNorm > 0 && Number.isFinite(this.clipNorm))) throw new RangeError(`DataParallel: clipNorm must be > 0, got ${this.clipNorm}`);
    this.communicator = options.communicator ?? new InProcessCommunicator(workers);
    if (this.communicator.size !== workers) throw new RangeError(`DataParallel: the communicator has ${this.communicator.size} ranks, workers is ${workers}`);
    this.paramGroups = [{ lr: options.lr }];
    this.stepsPerEpoch = options.stepsPerEpoch ?? 1;

    const named = model.namedParameters();
    let offset = 0;
    this.slots = named.map(([name, p]) => {
      const slot = { name, size: p.size, offset, compressible: p.rank > 1 && p.size >= this.dgcOptions.minCompressSize };
      offset += p.size;
      return slot;
    });
    this.totalSize = offset;
    const state = model.stateDict();
    const seed = options.seed ?? 0;
    const localRank = options.localRank;
    if (localRank !== undefined && !(Number.isInteger(localRank) && localRank >= 0 && localRank < workers)) {
      throw new RangeError(`DataParallel: localRank must be an integer in [0, ${workers}), got ${localRank}`);
    }
    this.workerStates = [];
    for (let rank = 0; rank < workers; rank++) {
      if (localRank !== undefined && rank !== localRank) continue;
      const replica = rank === 0 || localRank !== undefined ? model : options.replica();
      if (rank > 0 && localRank === undefined) {
        const theirs = replica.namedParameters();
        const same = theirs.length === named.length && theirs.every(([name, p], i) => name === named[i]![0] && p.shape.join() === named[i]![1].shape.join());
        if (!same) throw new Error(`DataParallel: replica ${rank} does not have the model's parameters (names and shapes must match)`);
        // Every rank must compute in the same precision, or rank 0's gradients (fp16 products, say) mix with float32 ones.
        if (autocastDtype(replica) !== autocastDtype(model)) {
          throw new Error(`DataParallel: the model runs under autocast ${autocastDtype(model) ?? 'off'} but replica ${rank} under ${autocastDtype(replica) ?? 'off'}; build the replicas under the same autocast`);
        }
        replica.loadStateDict(state);
      }
      this.workerStates.push({
        rank,
        model: replica,
        params: replica.parameters(),
        dgc: this.slots.map((s) => (this.compressor === 'dgc' && s.compressible ? new DgcTensorState(s.size) : null)),
        denseMomentum: this.slots.map(() => null),
        rng: new Rng((Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(rank + 1, 0x85ebca77)) >>> 0),
        sparseSum: new Float32Array(this.totalSize),
      });
    }
  }

  /** Learning rate (of the single param group). */
  get lr(): number {
    return this.paramGroups[0]!.lr;
  }

  set lr(value: number) {
    this.paramGroups[0]!.lr = value;
  }

  /** The replicas, rank order (rank 0 is the model given to the constructor). */
  get replicas(): readonly TensorModule[] {
    return this.workerStates.map((w) => w.model);
  }

  /** Parameter names, sizes and whether DGC may compress them, in flat-vector order. */
  get layout(): readonly Readonly<Slot>[] {
    return this.slots;
  }

  /** The DGC state of `name` on worker `rank` (undefined when that tensor is sent dense). */
  dgcState(rank: number, name: string): DgcTensorState | undefined {
    const i = this.slots.findIndex((s) => s.name === name);
    return this.workerStates[rank]?.dgc[i] ?? undefined;
  }

  /** Sparsity of the next step (0 for the dense exchange). */
  currentSparsity(): number {
    return this.compressor === 'dgc' ? dgcSparsityAt(this.dgcOptions, this.stepCount, this.stepsPerEpoch) : 0;
  }

  /** Bytes sent per rank so far (the communicator's accounting). */
  trafficStats(): TrafficStats {
    return this.communicator.stats();
  }

  /** Largest |difference| between any replica's parameter and rank 0's (0 when in sync). */
  maxReplicaDifference(): number {
    let worst = 0;
    const reference = this.workerStates[0]!.params;
    for (const worker of this.workerStates.slice(1)) {
      worker.params.forEach((p, i) => {
        const a = p.data;
        const b = reference[i]!.data;
        for (let j = 0; j < a.length; j++) worst = Math.max(worst, Math.abs(a[j]! - b[j]!));
      });
    }
    return worst;
  }

  /** Bytes a dense all-reduce sends per worker per step (4 per parameter). */
  get denseBytesPerWorker(): number {
    return 4 * this.totalSize;
  }

  /**
   * One synchronous step on the global batch `batch` (all workers, one exchange, one update). If a
   * worker throws (a forward error), the step rejects and the others' collectives stay pending: the
   * trainer is then out of step and must not be used again.
   */
  async step(batch: Batch): Promise<DataParallelStep> {
    const total = batch.y.shape[0]!;
    if (batch.x.shape[0] !== total) throw new Error(`DataParallel.step: x has ${batch.x.shape[0]} rows, y ${total}`);
    if (total === 0) throw new Error('DataParallel.step: empty batch');
    if (this.workerStates.length !== this.workers) throw new Error('DataParallel.step: this trainer holds one rank only (localRank); call stepShard');
    const sparsity = this.currentSparsity();
    const before = sum(this.communicator.stats().bytesSent);
    const results = await Promise.all(
      this.workerStates.map((worker) => {
        const { lo, hi } = shardRows(worker.rank, this.workers, total);
        const shard = hi > lo ? { x: sliceRows(batch.x, lo, hi), y: sliceRows(batch.y, lo, hi) } : null;
        return this.workerStep(worker, shard, total, sparsity);
      }),
    );
    this.stepCount++;
    return { ...combineShardResults(results, total), bytesSent: sum(this.communicator.stats().bytesSent) - before, denseBytes: this.workers * this.denseBytesPerWorker, sparsity };
  }

  /**
   * The local rank's part of one synchronous step (a trainer built with `localRank`): `shard` holds
   * rows `shardRows(localRank, workers, total)` of a global batch of `total` rows (null when that
   * range is empty). The other ranks must call it for the same step, each in its own thread.
   */
  async stepShard(shard: Batch | null, total: number): Promise<ShardStepResult> {
    const worker = this.workerStates[0]!;
    if (this.workerStates.length !== 1) throw new Error('DataParallel.stepShard: needs a trainer built with localRank');
    const { lo, hi } = shardRows(worker.rank, this.workers, total);
    const rows = shard?.y.shape[0] ?? 0;
    if (rows !== hi - lo || (shard !== null && shard.x.shape[0] !== rows)) {
      throw new Error(`DataParallel.stepShard: rank ${worker.rank} of a ${total}-row batch takes ${hi - lo} rows, got x ${shard?.x.shape[0] ?? 0} / y ${rows}`);
    }
    const sparsity = this.currentSparsity();
    const result = await this.workerStep(worker, shard, total, sparsity);
    this.stepCount++;
    return result;
  }

  /** Worker `worker`'s part of a step: its shard's gradient, its messages, the update of its replica. */
  private async workerStep(worker: Worker, shard: Batch | null, total: number, sparsity: number): Promise<ShardStepResult> {
    const count = shard?.y.shape[0] ?? 0;
    let loss = 0;
    let correct = 0;
    if (shard !== null && count > 0) {
      const { x, y } = shard;
      worker.model.train();
      const logits = worker.model.forward(x);
      const lossTensor = crossEntropy(logits, y);
      loss = lossTensor.item();
      lossTensor.backward();
      correct = countCorrect(logits, y);
    }

    // c = (n_r / N)·(∇ + wd·w): the worker's share of the global-batch gradient.
    const share = count / total;
    const contributions = worker.params.map((p) => {
      const c = new Float32Array(p.size);
      const g = p.grad?.data;
      const w = p.data;
      if (share > 0) for (let i = 0; i < c.length; i++) c[i] = share * ((g ? g[i]! : 0) + this.weightDecay * w[i]!);
      p.grad = null;
      return c;
    });
    if (this.clipNorm !== undefined) clipInPlace(contributions, this.clipNorm / Math.sqrt(this.workers));

    const sparse = (i: number): boolean => worker.dgc[i] !== null && sparsity > 0;
    const denseLength = this.slots.reduce((n, s, i) => (sparse(i) ? n : n + s.size), 0);
    const denseBuffer = new Float32Array(denseLength);
    const messages: SparseMessage[] = [];
    let fallbacks = 0;
    let at = 0;
    this.slots.forEach((slot, i) => {
      if (!sparse(i)) {
        denseBuffer.set(contributions[i]!, at);
        at += slot.size;
        return;
      }
      const k = dgcSendCount(slot.size, sparsity);
      const { message, selection } = worker.dgc[i]!.compress(contributions[i]!, this.momentum, k, this.dgcOptions.momentumMasking, worker.rng, this.dgcOptions.sampling, slot.offset);
      if (selection.fallback) fallbacks++;
      messages.push(message);
    });

    const denseSum = denseLength > 0 ? await this.communicator.allReduceSum(worker.rank, denseBuffer) : null;
    const gathered = messages.length > 0 ? await this.communicator.allGather(worker.rank, concatMessages(messages)) : [];

    const lr = this.lr;
    if (denseSum) {
      at = 0;
      this.slots.forEach((slot, i) => {
        if (sparse(i)) return;
        const g = denseSum.subarray(at, at + slot.size);
        at += slot.size;
        const w = worker.params[i]!.data;
        if (this.momentum === 0) {
          for (let j = 0; j < slot.size; j++) w[j] = w[j]! - lr * g[j]!;
          return;
        }
        const b = (worker.denseMomentum[i] ??= new Float32Array(slot.size));
        for (let j = 0; j < slot.size; j++) {
          b[j] = this.momentum * b[j]! + g[j]!;
          w[j] = w[j]! - lr * b[j]!;
        }
      });
    }
    if (gathered.length > 0) {
      const s = worker.sparseSum;
      for (const message of gathered) {
        const { indices, values } = message;
        for (let j = 0; j < indices.length; j++) {
          const flat = indices[j]!;
          if (!(flat >= 0 && flat < s.length)) throw new Error(`DataParallel: a gathered message holds index ${flat}, outside [0, ${s.length})`);
          s[flat] = s[flat]! + values[j]!;
        }
      }
      this.slots.forEach((slot, i) => {
        if (!sparse(i)) return;
        const w = worker.params[i]!.data;
        for (let j = 0; j < slot.size; j++) {
          const v = s[slot.offset + j]!;
          if (v === 0) continue;
          w[j] = w[j]! - lr * v;
          s[slot.offset + j] = 0;
        }
      });
    }
    return { loss, correct, count, fallbacks };
  }
}

/** One rank's part of a step: its shard's mean loss and correct count, and its threshold fallbacks. */
export interface ShardStepResult {
  readonly loss: number;
  readonly correct: number;
  readonly count: number;
  readonly fallbacks: number;
}

/** Rows `[lo, hi)` of a `total`-row global batch that rank `rank` of `workers` takes (contiguous, sizes differ by at most one). */
export function shardRows(rank: number, workers: number, total: number): { lo: number; hi: number } {
  return { lo: Math.floor((rank * total) / workers), hi: Math.floor(((rank + 1) * total) / workers) };
}

/** @internal The global-batch figures of a step from every rank's result, summed in rank order. */
export function combineShardResults(results: readonly ShardStepResult[], total: number): { loss: number; correct: number; count: number; thresholdFallbacks: number } {
  let loss = 0;
  let correct = 0;
  let fallbacks = 0;
  for (const r of results) {
    loss += (r.count / total) * r.loss;
    correct += r.correct;
    fallbacks += r.fallbacks;
  }
  return { loss, correct, count: total, thresholdFallbacks: fallbacks };
}

/** @internal Rows [lo, hi) of a tensor whose first axis is the batch. */
export function sliceRows(t: Tensor, lo: number, hi: number): Tensor {
  const rows = t.shape[0]!;
  const per = rows === 0 ? 0 : t.size / rows;
  return new Tensor(t.data.slice(lo * per, hi * per), [hi - lo, ...t.shape.slice(1)]);
}

/** Scales every array by one factor so that their joint L2 norm is at most `limit`. */
function clipInPlace(arrays: Float32Array[], limit: number): void {
  let squares = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) squares += a[i]! * a[i]!;
  const norm = Math.sqrt(squares);
  if (!(norm > limit)) return;
  const factor = limit / norm;
  for (const a of arrays) for (let i = 0; i < a.length; i++) a[i] = a[i]! * factor;
}

function concatMessages(messages: SparseMessage[]): SparseMessage {
  const n = messages.reduce((k, m) => k + m.indices.length, 0);
  const indices = new Int32Array(n);
  const values = new Float32Array(n);
  let at = 0;
  for (const m of messages) {
    indices.set(m.indices, at);
    values.set(m.values, at);
    at += m.indices.length;
  }
  return { indices, values };
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}
