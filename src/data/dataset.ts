import { Rng } from '../tensor/random.ts';
import { DataError } from './errors.ts';

/**
 * An in-memory image-classification dataset.
 *
 * `images` holds `length` samples of `C·H·W` float32 values each, sample-major and NCHW inside a
 * sample, so sample `i` is the contiguous slice `[i·C·H·W, (i+1)·C·H·W)`. Loaders return raw
 * pixel values scaled to [0, 1]; see {@link normalize} and `DataLoader`'s `normalize` option.
 * Text datasets will get their own interface.
 */
export interface Dataset {
  /** e.g. `mnist-train`, `fashion-mnist-test[0:1000]`. */
  readonly name: string;
  /** `length · C · H · W` values. */
  readonly images: Float32Array;
  /** One class index in `[0, numClasses)` per sample. */
  readonly labels: Int32Array;
  /** Number of samples. */
  readonly length: number;
  /** `[C, H, W]` of one sample. */
  readonly sampleShape: readonly [number, number, number];
  readonly numClasses: number;
  /** `numClasses` human-readable names, index = label. */
  readonly classNames: readonly string[];
}

/** Per-dataset pixel statistics: a scalar, or one value per channel. */
export interface NormalizeStats {
  readonly mean: number | readonly number[];
  readonly std: number | readonly number[];
}

/**
 * `value` as NormalizeStats when it is one (from an untrusted file or config): `mean` and `std` each
 * a finite number or a list of 1–16 finite numbers, every std > 0, two lists of one length; else null.
 */
export function parseNormalizeStats(value: unknown): NormalizeStats | null {
  if (typeof value !== 'object' || value === null) return null;
  const { mean, std } = value as { mean?: unknown; std?: unknown };
  const values = (x: unknown): number[] | null => {
    const xs = typeof x === 'number' ? [x] : x;
    return Array.isArray(xs) && xs.length > 0 && xs.length <= 16 && xs.every((n) => typeof n === 'number' && Number.isFinite(n)) ? (xs as number[]) : null;
  };
  const m = values(mean);
  const d = values(std);
  if (!m || !d || d.some((v) => v <= 0)) return null;
  if (Array.isArray(mean) && Array.isArray(std) && m.length !== d.length) return null;
  return { mean: mean as number | number[], std: std as number | number[] };
}

/** Number of values in one sample (`C·H·W`). */
export function sampleSize(ds: Pick<Dataset, 'sampleShape'>): number {
  const [c, h, w] = ds.sampleShape;
  return c * h * w;
}

/**
 * Builds a dataset after checking that its fields agree: images length = length·C·H·W, one
 * label per sample, labels in `[0, numClasses)`, one class name per class. Throws `DataError`.
 */
export function createDataset(fields: Omit<Dataset, 'length'> & { length?: number }): Dataset {
  const { name, images, labels, sampleShape, numClasses, classNames } = fields;
  const length = fields.length ?? labels.length;
  if (sampleShape.length !== 3 || sampleShape.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new DataError('invalid-argument', `${name}: sampleShape must be three positive integers [C, H, W], got [${sampleShape.join(', ')}]`);
  }
  if (!Number.isInteger(length) || length < 0) throw new DataError('invalid-argument', `${name}: invalid length ${length}`);
  if (labels.length !== length) {
    throw new DataError('count-mismatch', `${name}: ${labels.length} labels for ${length} samples`);
  }
  const per = sampleShape[0] * sampleShape[1] * sampleShape[2];
  if (images.length !== length * per) {
    throw new DataError('count-mismatch', `${name}: images hold ${images.length} values, expected ${length} × ${per} = ${length * per}`);
  }
  if (!Number.isInteger(numClasses) || numClasses <= 0) throw new DataError('invalid-argument', `${name}: invalid numClasses ${numClasses}`);
  if (classNames.length !== numClasses) {
    throw new DataError('invalid-argument', `${name}: ${classNames.length} class names for ${numClasses} classes`);
  }
  checkLabels(labels, numClasses, name);
  return { name, images, labels, length, sampleShape: [sampleShape[0], sampleShape[1], sampleShape[2]], numClasses, classNames };
}

/** Throws `DataError('label-range')` at the first label outside `[0, numClasses)`. */
export function checkLabels(labels: ArrayLike<number>, numClasses: number, source: string): void {
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i]!;
    if (!(y >= 0 && y < numClasses) || !Number.isInteger(y)) {
      throw new DataError('label-range', `${source}: label ${y} at index ${i} is outside [0, ${numClasses - 1}]`);
    }
  }
}

/**
 * Samples `[start, end)` (negative indices count from the end, bounds are clamped like
 * `Array.prototype.slice`). The result shares memory with `ds` (no copy).
 */
export function subset(ds: Dataset, start: number, end: number = ds.length): Dataset {
  const n = ds.length;
  const s = clampIndex(start, n);
  const e = Math.max(s, clampIndex(end, n));
  const per = sampleSize(ds);
  return {
    ...ds,
    name: `${ds.name}[${s}:${e}]`,
    images: ds.images.subarray(s * per, e * per),
    labels: ds.labels.subarray(s, e),
    length: e - s,
  };
}

/** The first `n` samples (all of them if `n ≥ length`); shares memory with `ds`. */
export function take(ds: Dataset, n: number): Dataset {
  if (!Number.isInteger(n) || n < 0) throw new DataError('invalid-argument', `take: n must be a non-negative integer, got ${n}`);
  return subset(ds, 0, Math.min(n, ds.length));
}

/** A new dataset of the given samples, in that order (copied). */
export function select(ds: Dataset, indices: ArrayLike<number>, name = `${ds.name}[selected ${indices.length}]`): Dataset {
  const per = sampleSize(ds);
  const images = new Float32Array(indices.length * per);
  const labels = new Int32Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k]!;
    if (!Number.isInteger(i) || i < 0 || i >= ds.length) {
      throw new DataError('invalid-argument', `select: index ${i} out of range [0, ${ds.length})`);
    }
    images.set(ds.images.subarray(i * per, (i + 1) * per), k * per);
    labels[k] = ds.labels[i]!;
  }
  return { ...ds, name, images, labels, length: indices.length };
}

/**
 * Splits `ds` at random into disjoint parts (e.g. train / validation), reproducibly from `seed`.
 *
 * `sizes` are sample counts summing to `ds.length`, or fractions summing to 1 (each part gets
 * `floor(f·length)`, the remainder goes one by one to the first parts, as in PyTorch).
 * Samples are copied; each part keeps the permutation order. Part names end in `/split{k}`.
 */
export function randomSplit(ds: Dataset, sizes: readonly number[], seed = 0): Dataset[] {
  const n = ds.length;
  let counts: number[];
  const total = sizes.reduce((a, b) => a + b, 0);
  if (sizes.some((s) => !(s >= 0))) throw new DataError('invalid-argument', `randomSplit: sizes must be non-negative, got [${sizes.join(', ')}]`);
  if (sizes.every((s) => Number.isInteger(s)) && total === n) {
    counts = [...sizes];
  } else if (Math.abs(total - 1) < 1e-9 && sizes.every((s) => s <= 1)) {
    counts = sizes.map((f) => Math.floor(f * n));
    let rest = n - counts.reduce((a, b) => a + b, 0);
    for (let k = 0; rest > 0; k = (k + 1) % counts.length, rest--) counts[k]!++;
  } else {
    throw new DataError('invalid-argument', `randomSplit: sizes [${sizes.join(', ')}] must be counts summing to ${n} or fractions summing to 1`);
  }
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  new Rng(seed).shuffle(perm);
  const parts: Dataset[] = [];
  let at = 0;
  counts.forEach((c, k) => {
    parts.push(select(ds, perm.subarray(at, at + c), `${ds.name}/split${k}`));
    at += c;
  });
  return parts;
}

/**
 * A copy of `ds` with every value mapped to `(x − mean) / std` (per channel when `mean`/`std`
 * are arrays of length C). Typical stats are in `DATASET_STATS`.
 */
export function normalize(ds: Dataset, stats: NormalizeStats): Dataset {
  const images = ds.images.slice();
  normalizeInPlace(images, ds.sampleShape, stats);
  return { ...ds, images };
}

/** Normalizes a buffer of whole samples in place. @internal used by DataLoader. */
export function normalizeInPlace(data: Float32Array, sampleShape: readonly [number, number, number], stats: NormalizeStats): void {
  const [c, h, w] = sampleShape;
  const plane = h * w;
  const means = perChannel(stats.mean, c, 'mean');
  const stds = perChannel(stats.std, c, 'std');
  for (const s of stds) {
    if (!(s > 0) || !Number.isFinite(s)) throw new DataError('invalid-argument', `normalize: std must be positive and finite, got ${s}`);
  }
  const per = c * plane;
  for (let base = 0; base < data.length; base += per) {
    for (let ch = 0; ch < c; ch++) {
      const m = means[ch]!;
      const inv = 1 / stds[ch]!;
      const from = base + ch * plane;
      const to = from + plane;
      for (let i = from; i < to; i++) data[i] = (data[i]! - m) * inv;
    }
  }
}

function perChannel(v: number | readonly number[], c: number, what: string): number[] {
  if (typeof v === 'number') return new Array<number>(c).fill(v);
  if (v.length === 1) return new Array<number>(c).fill(v[0]!);
  if (v.length !== c) throw new DataError('invalid-argument', `normalize: ${what} has ${v.length} values for ${c} channels`);
  return [...v];
}

/** Number of samples per class (index = label). */
export function classCounts(ds: Dataset): number[] {
  const counts = new Array<number>(ds.numClasses).fill(0);
  for (let i = 0; i < ds.length; i++) counts[ds.labels[i]!]!++;
  return counts;
}

function clampIndex(i: number, n: number): number {
  if (!Number.isInteger(i)) throw new DataError('invalid-argument', `index must be an integer, got ${i}`);
  return i < 0 ? Math.max(0, n + i) : Math.min(i, n);
}

/** Float32 value of each byte `v / 255` (exact same rounding as `Math.fround(v / 255)`). */
const BYTE_TO_UNIT = (() => {
  const t = new Float32Array(256);
  for (let v = 0; v < 256; v++) t[v] = v / 255;
  return t;
})();

/** Converts uint8 pixels to float32 in [0, 1]. @internal */
export function bytesToUnitFloat(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.length);
  const lut = BYTE_TO_UNIT;
  for (let i = 0; i < bytes.length; i++) out[i] = lut[bytes[i]!]!;
  return out;
}
