/**
 * @internal Per-channel histograms of the two signs of a tensor, kept over calibration batches:
 * `pos` counts x ≥ 0 by x, `neg` counts x < 0 by −x, both with `bins` equal bins on [0, R].
 * When a batch exceeds R, R doubles (adjacent bin pairs merge, which re-bins exactly) until the
 * batch fits, so earlier counts are never interpolated. Bin i covers [i·R/bins, (i+1)·R/bins).
 */
import type { Tensor } from '../../tensor/tensor.ts';
import { checkFinite, extremes, observerSlots, splitChannels, type ObserverOptions } from './observer.ts';

export class SignedHistogram {
  readonly bins: number;
  /** Upper edge of the range (0 until a nonzero value was seen). */
  range = 0;
  readonly pos: Float64Array;
  readonly neg: Float64Array;
  /** Observed extremes (for ranges narrower than the clipping threshold). */
  min = Infinity;
  max = -Infinity;
  total = 0;
  /** How many of the counted values were exactly 0 (all in pos[0]). */
  zeros = 0;

  constructor(bins: number) {
    if (!Number.isInteger(bins) || bins < 8 || bins % 2 !== 0) throw new Error(`histogram: bins must be an even integer >= 8, got ${bins}`);
    this.bins = bins;
    this.pos = new Float64Array(bins);
    this.neg = new Float64Array(bins);
  }

  get binWidth(): number {
    return this.range / this.bins;
  }

  add(values: ArrayLike<number>): void {
    const { min, max } = extremes(values);
    if (min === Infinity) return;
    this.min = Math.min(this.min, min);
    this.max = Math.max(this.max, max);
    const peak = Math.max(-min, max);
    if (this.range === 0) this.range = peak;
    while (peak > this.range) this.grow();
    const n = this.bins;
    const perUnit = this.range > 0 ? n / this.range : 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (!Number.isFinite(v)) continue;
      if (v === 0) this.zeros++;
      if (v >= 0) this.pos[Math.min(n - 1, Math.floor(v * perUnit))]! += 1;
      else this.neg[Math.min(n - 1, Math.floor(-v * perUnit))]! += 1;
      this.total++;
    }
  }

  /** Doubles the range: bins 2j and 2j+1 merge into j. */
  private grow(): void {
    for (const h of [this.pos, this.neg]) {
      for (let j = 0; j < this.bins / 2; j++) h[j] = h[2 * j]! + h[2 * j + 1]!;
      h.fill(0, this.bins / 2);
    }
    this.range *= 2;
  }

  /** Counts of |x| per bin (pos + neg), or of x⁺ only when `positiveOnly`. */
  magnitude(positiveOnly = false): Float64Array {
    const out = Float64Array.from(this.pos);
    if (!positiveOnly) for (let i = 0; i < this.bins; i++) out[i]! += this.neg[i]!;
    return out;
  }
}

/**
 * @internal The value t with `k` counts of `hist` (bins of width w on [0, bins·w]) at or below it,
 * interpolating linearly inside the bin where the cumulative count reaches k.
 */
export function quantileOfCounts(hist: Float64Array, binWidth: number, k: number): number {
  let cumulative = 0;
  for (let i = 0; i < hist.length; i++) {
    const c = hist[i]!;
    if (c > 0 && cumulative + c >= k) return (i + Math.max(0, k - cumulative) / c) * binWidth;
    cumulative += c;
  }
  return hist.length * binWidth;
}

/**
 * State shared by histogram-based observers (percentile, entropy): one `SignedHistogram` of
 * `bins` bins per tensor, or per channel along `axis`, filled by `observe`.
 */
export abstract class HistogramObserver {
  abstract readonly method: string;
  readonly axis: number | null;
  readonly groupSize: number | null;
  readonly bins: number;
  protected histograms: SignedHistogram[] = [];

  constructor(options: ObserverOptions & { readonly bins?: number }) {
    ({ axis: this.axis, groupSize: this.groupSize } = observerSlots(new.target.name.replace(/Observer$/, '').toLowerCase(), options));
    this.bins = options.bins ?? 2048;
  }

  get observed(): boolean {
    return this.histograms.some((h) => h.total > 0);
  }

  observe(x: Tensor): void {
    checkFinite(this.method, x);
    const channels = splitChannels(x, this.axis, this.groupSize);
    if (this.histograms.length === 0) this.histograms = channels.map(() => new SignedHistogram(this.bins));
    if (channels.length !== this.histograms.length) throw new Error(`${this.method} observer: ${channels.length} channels, earlier batches had ${this.histograms.length}`);
    channels.forEach((values, c) => this.histograms[c]!.add(values));
  }
}
