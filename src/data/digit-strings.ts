/**
 * Digit strings: a stand-in for speech recognition built from MNIST. Each sample is 1..maxDigits
 * MNIST digits pasted left to right on a 28-pixel-high strip with random gaps; a sequence model
 * reads the strip column by column ("frames") and must output the digit sequence. Samples are
 * stored as descriptors (which images, gaps, shifts) and rendered per batch, padded to the
 * batch's longest strip.
 */
import { Tensor } from '../tensor/tensor.ts';
import { Rng } from '../tensor/random.ts';
import { normalizeInPlace, type Dataset, type NormalizeStats } from './dataset.ts';
import { DataError } from './errors.ts';
import { deriveSeed } from './loader.ts';
import { loadMnist, type Split } from './mnist.ts';
import { DATASET_STATS } from './registry.ts';

/** Rows of a strip (MNIST's height). */
export const DIGIT_STRIP_HEIGHT = 28;

/** Options of {@link digitStrings}. */
export interface DigitStringsOptions {
  /** Number of strings (default 10,000 for train, 2,000 for test). */
  readonly count?: number;
  /** Fewest digits per string (default 1). */
  readonly minDigits?: number;
  /** Most digits per string (default 5). */
  readonly maxDigits?: number;
  /**
   * Blank columns [min, max] (inclusive, drawn uniformly) between two digits' inked columns, and
   * before the first and after the last digit (default [2, 8]).
   */
  readonly gap?: readonly [number, number];
  /** Largest vertical shift of a digit in pixels, drawn uniformly in [−jitter, jitter] (default 0). */
  readonly jitter?: number;
  /** Columns per frame: frame t holds columns t·k .. t·k + k − 1, feature s·28 + row (default 2 → 56 features). */
  readonly frameStack?: number;
  /** Seed of the draws (default 0). */
  readonly seed?: number;
  /** (x − mean) / std on the pixels, padding included; null keeps [0, 1] pixels (default MNIST's 0.1307 / 0.3081). */
  readonly normalize?: NormalizeStats | null;
  /** Images to draw digits from, [1, 28, W] with labels 0..9 (default: the MNIST split). */
  readonly source?: Dataset;
}

/** One padded mini-batch of digit strings. */
export interface DigitStringBatch {
  /** [B, T, F] float32 frames, T = the batch's longest string; frames past a length hold background. */
  readonly features: Tensor;
  /** [B] int32 frames per string. */
  readonly featureLengths: Tensor;
  /** [B, U] int32 digits, U = the batch's longest string; padded with 0. */
  readonly labels: Tensor;
  /** [B] int32 digits per string. */
  readonly labelLengths: Tensor;
  /** The samples' indices, in batch order. */
  readonly indices: Int32Array;
}

/** Options of {@link DigitStrings.batches}. */
export interface DigitStringBatchOptions {
  /** Strings per batch (default 32). */
  readonly batchSize?: number;
  /** Shuffle with `Rng(deriveSeed(seed, epoch))`, as DataLoader (default false). */
  readonly shuffle?: boolean;
  readonly seed?: number;
  readonly epoch?: number;
  /** Drop the last, smaller batch (default false). */
  readonly dropLast?: boolean;
}

interface Piece {
  /** Source image index. */
  readonly image: number;
  /** First strip column of the digit's inked columns. */
  readonly offset: number;
  /** Vertical shift (rows). */
  readonly shift: number;
}

function checkInteger(value: number, min: number, name: string): number {
  if (!Number.isInteger(value) || value < min) throw new DataError('invalid-argument', `digitStrings: ${name} must be an integer >= ${min}, got ${value}`);
  return value;
}

/**
 * A set of digit strings (see {@link digitStrings}). Labels are the digits 0..9; a transducer's
 * joint output has 11 entries with blank = 10 (`DigitStrings.blank`).
 */
export class DigitStrings {
  /** Number of strings. */
  readonly length: number;
  readonly frameStack: number;
  /** Features per frame: 28 · frameStack. */
  readonly featureSize: number;
  /** Label classes (10 digits). */
  readonly numLabels = 10;
  /** The blank index a transducer over these labels uses: 10. */
  readonly blank = 10;
  /** Each string's digits. */
  readonly labels: readonly Int32Array[];
  /** Each string's width in columns. */
  readonly widths: Int32Array;
  private readonly pieces: readonly (readonly Piece[])[];
  /** The value of a pixel without ink, padding included (−0.4242 after MNIST normalisation). */
  readonly background: number;
  private readonly source: Dataset;
  private readonly normalize: NormalizeStats | null;

  /** @internal Use {@link digitStrings}. */
  constructor(source: Dataset, options: DigitStringsOptions, defaultCount: number) {
    const [channels, height, width] = source.sampleShape;
    if (channels !== 1 || height !== DIGIT_STRIP_HEIGHT) {
      throw new DataError('bad-dims', `digitStrings: source images must be [1, ${DIGIT_STRIP_HEIGHT}, W], got [${source.sampleShape.join(', ')}]`);
    }
    if (source.numClasses !== 10) throw new DataError('invalid-argument', `digitStrings: the source must have 10 classes (digits), got ${source.numClasses}`);
    if (source.length === 0) throw new DataError('invalid-argument', 'digitStrings: the source has no image');
    const count = checkInteger(options.count ?? defaultCount, 0, 'count');
    const minDigits = checkInteger(options.minDigits ?? 1, 1, 'minDigits');
    const maxDigits = checkInteger(options.maxDigits ?? 5, minDigits, 'maxDigits');
    const [gapMin, gapMax] = options.gap ?? [2, 8];
    checkInteger(gapMin, 0, 'gap[0]');
    checkInteger(gapMax, gapMin, 'gap[1]');
    const jitter = checkInteger(options.jitter ?? 0, 0, 'jitter');
    if (jitter >= DIGIT_STRIP_HEIGHT) throw new DataError('invalid-argument', `digitStrings: jitter must be below ${DIGIT_STRIP_HEIGHT}, got ${jitter}`);
    this.frameStack = checkInteger(options.frameStack ?? 2, 1, 'frameStack');
    const seed = options.seed ?? 0;
    if (!Number.isInteger(seed)) throw new DataError('invalid-argument', `digitStrings: seed must be an integer, got ${seed}`);
    this.normalize = options.normalize === undefined ? DATASET_STATS.mnist : options.normalize;
    const probe = Float32Array.of(0);
    if (this.normalize) normalizeInPlace(probe, [1, 1, 1], this.normalize); // validates the stats
    this.background = probe[0]!;
    this.featureSize = DIGIT_STRIP_HEIGHT * this.frameStack;
    this.source = source;
    const rng = new Rng(seed);
    const between = (lo: number, hi: number): number => lo + rng.int(hi - lo + 1);
    const labels: Int32Array[] = [];
    const pieces: Piece[][] = [];
    this.widths = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      const digits = between(minDigits, maxDigits);
      const y = new Int32Array(digits);
      const row: Piece[] = [];
      let x = between(gapMin, gapMax);
      for (let d = 0; d < digits; d++) {
        const image = rng.int(source.length);
        const shift = jitter > 0 ? between(-jitter, jitter) : 0;
        y[d] = source.labels[image]!;
        row.push({ image, offset: x, shift });
        const [from, to] = this.ink(image, width);
        x += to - from + between(gapMin, gapMax);
      }
      labels.push(y);
      pieces.push(row);
      this.widths[i] = Math.max(x, 1);
    }
    this.length = count;
    this.labels = labels;
    this.pieces = pieces;
  }

  /** The inked column range [from, to) of a source image (all columns of a blank image). */
  private ink(image: number, width: number): [number, number] {
    const plane = DIGIT_STRIP_HEIGHT * width;
    const pixels = this.source.images.subarray(image * plane, (image + 1) * plane);
    let from = width;
    let to = 0;
    for (let c = 0; c < width; c++) {
      for (let r = 0; r < DIGIT_STRIP_HEIGHT; r++) {
        if (pixels[r * width + c]! > 0) {
          from = Math.min(from, c);
          to = c + 1;
          break;
        }
      }
    }
    return to === 0 ? [0, width] : [from, to];
  }

  /** Frames of string i: ⌈width / frameStack⌉. */
  frames(i: number): number {
    return Math.ceil(this.widths[i]! / this.frameStack);
  }

  /** The raw strip of string i, [28, width] row-major, pixels in [0, 1] (not normalised). */
  strip(i: number): Float32Array {
    this.checkIndex(i);
    const w = this.widths[i]!;
    const out = new Float32Array(DIGIT_STRIP_HEIGHT * w);
    this.paint(i, (column, row, value) => {
      out[row * w + column] = value;
    });
    return out;
  }

  private checkIndex(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new DataError('invalid-argument', `digitStrings: index ${i} is outside [0, ${this.length - 1}]`);
  }

  /** Calls `put(column, row, pixel)` for every inked-range pixel of string i. */
  private paint(i: number, put: (column: number, row: number, value: number) => void): void {
    const width = this.source.sampleShape[2];
    const plane = DIGIT_STRIP_HEIGHT * width;
    for (const { image, offset, shift } of this.pieces[i]!) {
      const [from, to] = this.ink(image, width);
      const base = image * plane;
      for (let r = Math.max(0, shift); r < Math.min(DIGIT_STRIP_HEIGHT, DIGIT_STRIP_HEIGHT + shift); r++) {
        for (let c = from; c < to; c++) put(offset + c - from, r, this.source.images[base + (r - shift) * width + c]!);
      }
    }
  }

  /** Renders the strings `indices` as one padded batch. */
  batch(indices: ArrayLike<number>): DigitStringBatch {
    const b = indices.length;
    if (b === 0) throw new DataError('invalid-argument', 'digitStrings: a batch needs at least one index');
    const idx = Int32Array.from(indices);
    idx.forEach((i) => this.checkIndex(i));
    const featureLengths = Int32Array.from(idx, (i) => this.frames(i));
    const labelLengths = Int32Array.from(idx, (i) => this.labels[i]!.length);
    const maxT = Math.max(...featureLengths);
    const maxU = Math.max(...labelLengths);
    const f = this.featureSize;
    const features = new Float32Array(b * maxT * f);
    const labels = new Int32Array(b * maxU);
    idx.forEach((i, k) => {
      labels.set(this.labels[i]!, k * maxU);
      this.paint(i, (column, row, value) => {
        const t = Math.floor(column / this.frameStack);
        features[(k * maxT + t) * f + (column % this.frameStack) * DIGIT_STRIP_HEIGHT + row] = value;
      });
    });
    if (this.normalize) normalizeInPlace(features, [1, 1, features.length], this.normalize);
    return {
      features: new Tensor(features, [b, maxT, f]),
      featureLengths: new Tensor(featureLengths, [b]),
      labels: new Tensor(labels, [b, maxU]),
      labelLengths: new Tensor(labelLengths, [b]),
      indices: idx,
    };
  }

  /** One epoch of batches (shuffled as DataLoader does when asked). */
  *batches(options: DigitStringBatchOptions = {}): Generator<DigitStringBatch, void, undefined> {
    const { batchSize = 32, shuffle = false, seed = 0, epoch = 0, dropLast = false } = options;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new DataError('invalid-argument', `digitStrings: batchSize must be a positive integer, got ${batchSize}`);
    const order = new Int32Array(this.length);
    for (let i = 0; i < order.length; i++) order[i] = i;
    if (shuffle) new Rng(deriveSeed(seed, epoch)).shuffle(order);
    for (let from = 0; from < order.length; from += batchSize) {
      const part = order.subarray(from, Math.min(from + batchSize, order.length));
      if (dropLast && part.length < batchSize) break;
      yield this.batch(part);
    }
  }
}

/**
 * Digit strings from MNIST's `split` (train strings use train images, test strings test images),
 * deterministic for a seed. See {@link DigitStringsOptions}; throws `DataError`.
 */
export function digitStrings(split: Split, options: DigitStringsOptions = {}): DigitStrings {
  if (split !== 'train' && split !== 'test') throw new DataError('invalid-argument', `digitStrings: split must be 'train' or 'test', got '${String(split)}'`);
  const source = options.source ?? loadMnist({ split });
  return new DigitStrings(source, options, split === 'train' ? 10_000 : 2_000);
}
