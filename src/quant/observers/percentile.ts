/**
 * Percentile observer (e.g. McKinstry et al. 2019; Wu et al. 2020, "Integer Quantization for
 * Deep Learning Inference", §4.2): the range clips the most extreme (100 − p) % of the values.
 * Values are collected in 2048-bin histograms (`SignedHistogram`, per tensor or channel), and
 *   - symmetric specs: bound = P_p(|x|), range [−bound, bound];
 *   - asymmetric specs ("both tails"): max = P_p(x), min = P_(100−p)(x), each tail losing
 *     (100 − p) % of the values (an unsigned spec on x ≥ 0 thus clips only the top);
 * where P_q is the q-th percentile read off the cumulative histogram with linear interpolation
 * inside a bin (exact to one bin width, R/2048). The range is never wider than the observed one.
 */
import { qparamsFromRange, type QParams, type QuantSpec } from '../core/qparams.ts';
import { HistogramObserver, quantileOfCounts } from './histogram.ts';
import { checkGranularity, type Observer, type ObserverOptions } from './observer.ts';

export interface PercentileOptions extends ObserverOptions {
  /** Percentile p in (0, 100] kept inside the range (default 99.99). */
  readonly percentile?: number;
  /** Histogram bins (default 2048). */
  readonly bins?: number;
}

export class PercentileObserver extends HistogramObserver implements Observer {
  readonly method = 'percentile';
  readonly percentile: number;

  constructor(options: PercentileOptions = {}) {
    super(options);
    this.percentile = options.percentile ?? 99.99;
    if (!(this.percentile > 0 && this.percentile <= 100)) throw new Error(`percentile observer: percentile must be in (0, 100], got ${this.percentile}`);
  }

  /** The clipping range [min, max] of every channel under a symmetric or asymmetric spec. */
  ranges(symmetric: boolean): { min: Float64Array; max: Float64Array } {
    const n = this.histograms.length;
    const min = new Float64Array(n);
    const max = new Float64Array(n);
    const tail = 1 - this.percentile / 100;
    this.histograms.forEach((h, c) => {
      if (h.total === 0) return;
      const w = h.binWidth;
      if (symmetric) {
        const bound = Math.min(quantileOfCounts(h.magnitude(), w, h.total * (1 - tail)), Math.max(-h.min, h.max));
        min[c] = -bound;
        max[c] = bound;
        return;
      }
      const dropped = h.total * tail;
      const negCount = h.neg.reduce((a, b) => a + b, 0);
      const posCount = h.total - negCount;
      // Upper tail: the top `dropped` values lie in pos (else the bound is ≤ 0, widened to 0 later).
      max[c] = posCount > dropped ? Math.min(h.max, quantileOfCounts(h.pos, w, posCount - dropped)) : 0;
      min[c] = negCount > dropped ? Math.max(h.min, -quantileOfCounts(h.neg, w, negCount - dropped)) : 0;
    });
    return { min, max };
  }

  qparams(spec: QuantSpec): QParams {
    checkGranularity(this, spec, this.histograms.length);
    const { min, max } = this.ranges(spec.symmetric);
    return qparamsFromRange(min, max, spec);
  }
}
