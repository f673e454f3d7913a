import { Tensor } from '../tensor/tensor.ts';
import { Rng } from '../tensor/random.ts';
import { normalizeInPlace, sampleSize, type Dataset, type NormalizeStats } from './dataset.ts';
import { DataError } from './errors.ts';

/** One mini-batch. */
export interface Batch {
  /** `[B, C, H, W]` float32 images. */
  readonly x: Tensor;
  /** `[B]` int32 labels. */
  readonly y: Tensor;
  /** The dataset indices of the B samples, in batch order. */
  readonly indices: Int32Array;
}

/** Options of {@link DataLoader}. */
export interface DataLoaderOptions {
  /** Samples per batch (default 64). */
  readonly batchSize?: number;
  /** Reshuffle every epoch (default false: dataset order). */
  readonly shuffle?: boolean;
  /** Base seed of the per-epoch shuffles (default 0). */
  readonly seed?: number;
  /** Drop the last, smaller batch (default false). */
  readonly dropLast?: boolean;
  /** Apply `(x − mean) / std` to each batch (e.g. `DATASET_STATS.mnist`); the dataset is untouched. */
  readonly normalize?: NormalizeStats;
}

/**
 * Iterates a dataset in mini-batches of `{ x: [B,C,H,W] float32, y: [B] int32 }`.
 *
 * Epochs: every new iteration (`for (const b of loader)`) runs one epoch and then advances the
 * loader's `epoch` counter (starting at 0); `setEpoch(e)` chooses the epoch of the next iteration.
 * With `shuffle`, epoch `e` visits the samples in the order of a Fisher–Yates shuffle driven by
 * `Rng(deriveSeed(seed, e))`: the same seed and epoch always give the same order, and
 * different epochs give different orders. Without `shuffle` the order is 0..N−1.
 * Batches are copied out of contiguous sample rows with `TypedArray.set`.
 */
export class DataLoader implements Iterable<Batch> {
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly normalize: NormalizeStats | undefined;
  /** The epoch the next iteration will run. */
  epoch = 0;

  constructor(dataset: Dataset, options: DataLoaderOptions = {}) {
    const { batchSize = 64, shuffle = false, seed = 0, dropLast = false, normalize } = options;
    if (!Number.isInteger(batchSize) || batchSize <= 0) throw new DataError('invalid-argument', `DataLoader: batchSize must be a positive integer, got ${batchSize}`);
    if (!Number.isInteger(seed)) throw new DataError('invalid-argument', `DataLoader: seed must be an integer, got ${seed}`);
    this.dataset = dataset;
    this.batchSize = batchSize;
    this.shuffle = shuffle;
    this.seed = seed;
    this.dropLast = dropLast;
    this.normalize = normalize;
    if (normalize) normalizeInPlace(new Float32Array(0), dataset.sampleShape, normalize); // validate early
  }

  /** Number of batches per epoch. */
  get length(): number {
    const n = this.dataset.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** Sets the epoch of the next iteration (for resuming or for explicit per-epoch control). */
  setEpoch(epoch: number): void {
    if (!Number.isInteger(epoch) || epoch < 0) throw new DataError('invalid-argument', `DataLoader: epoch must be a non-negative integer, got ${epoch}`);
    this.epoch = epoch;
  }

  /** The sample order of `epoch` (a permutation of 0..N−1). */
  order(epoch: number): Int32Array {
    const n = this.dataset.length;
    const perm = new Int32Array(n);
    for (let i = 0; i < n; i++) perm[i] = i;
    if (this.shuffle) new Rng(deriveSeed(this.seed, epoch)).shuffle(perm);
    return perm;
  }

  /** Runs the current epoch, then advances `epoch`. */
  [Symbol.iterator](): Iterator<Batch> {
    const epoch = this.epoch;
    this.epoch = epoch + 1;
    return this.batches(epoch);
  }

  /** The batches of one epoch, without touching the epoch counter. */
  *batches(epoch: number): Generator<Batch, void, undefined> {
    const order = this.order(epoch);
    const ds = this.dataset;
    const per = sampleSize(ds);
    const [c, h, w] = ds.sampleShape;
    const batches = this.length;
    for (let b = 0; b < batches; b++) {
      const from = b * this.batchSize;
      const idx = order.slice(from, Math.min(from + this.batchSize, order.length));
      const size = idx.length;
      const x = new Float32Array(size * per);
      const y = new Int32Array(size);
      for (let k = 0; k < size; k++) {
        const i = idx[k]!;
        x.set(ds.images.subarray(i * per, (i + 1) * per), k * per);
        y[k] = ds.labels[i]!;
      }
      if (this.normalize) normalizeInPlace(x, ds.sampleShape, this.normalize);
      yield { x: new Tensor(x, [size, c, h, w]), y: new Tensor(y, [size]), indices: idx };
    }
  }
}

/** The 32-bit seed of epoch `epoch`'s generator: a hash of (seed, epoch). */
export function deriveSeed(seed: number, epoch: number): number {
  let z = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul((epoch + 1) >>> 0, 0x85ebca77)) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x2c1b3c6d) >>> 0;
  z = Math.imul(z ^ (z >>> 12), 0x297a2d39) >>> 0;
  return (z ^ (z >>> 15)) >>> 0;
}

/**
 * The batches of `batches` over and over (a fresh pass each time it ends), for step-budgeted loops
 * (searches that run N steps, not epochs). Throws `emptyError()` when a pass yields no batch, so an
 * empty source fails instead of looping forever.
 */
export function* cycleBatches<B>(batches: Iterable<B>, emptyError: () => Error): Generator<B> {
  for (;;) {
    let any = false;
    for (const b of batches) {
      any = true;
      yield b;
    }
    if (!any) throw emptyError();
  }
}
