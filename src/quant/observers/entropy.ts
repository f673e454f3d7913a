/**
 * Entropy (KL-divergence) observer for activations — TensorRT's calibration (Migacz, "8-bit
 * Inference with TensorRT", GTC 2017). |x| is collected in a 2048-bin histogram H on [0, R]
 * (x⁺ only for unsigned specs, whose negative values clip to 0 anyway). For every candidate
 * threshold bin i = L … 2048, with L the number of quantization levels of the magnitude
 * (2^b for unsigned, 2^(b−1) for signed):
 *   P = H[0..i), with the outliers Σ H[i..) added to P[i−1]  (the clipped reference);
 *   Q = H[0..i) merged into L equal chunks (the last takes the remainder), each chunk's count spread
 *       evenly over its nonzero bins                           (what L levels can represent);
 *   KL(P‖Q) = Σ p·log(p/q) over bins with p > 0, both normalised (a bin with p > 0 = q gets
 *       q = ε, as in TensorRT's smoothing).
 * The threshold is T = i*·R/2048 for the i* of least KL; the range is [−T, T] (symmetric),
 * [0, T] (unsigned) or [max(min, −T), min(max, T)] (asymmetric signed).
 */
import { qparamsFromRange, qRange, type QParams, type QuantSpec } from '../core/qparams.ts';
import { HistogramObserver } from './histogram.ts';
import { checkGranularity, type Observer, type ObserverOptions } from './observer.ts';

export interface EntropyOptions extends ObserverOptions {
  /** Histogram bins (default 2048). */
  readonly bins?: number;
}

const EPSILON = 1e-10;

export class EntropyObserver extends HistogramObserver implements Observer {
  readonly method = 'entropy';

  constructor(options: EntropyOptions = {}) {
    super(options);
  }

  /** Thresholds T per channel for `levels` magnitude levels (x⁺ only when `positiveOnly`). */
  thresholds(levels: number, positiveOnly: boolean): Float64Array {
    return Float64Array.from(this.histograms, (h) => {
      if (h.total === 0 || h.range === 0) return 0;
      const bin = klThresholdBin(h.magnitude(positiveOnly), levels);
      return bin * h.binWidth;
    });
  }

  qparams(spec: QuantSpec): QParams {
    checkGranularity(this, spec, this.histograms.length);
    const [qmin, qmax] = qRange(spec);
    const unsigned = qmin >= 0;
    const levels = unsigned ? qmax - qmin + 1 : qmax + 1;
    const t = this.thresholds(levels, unsigned);
    const min = new Float64Array(t.length);
    const max = new Float64Array(t.length);
    this.histograms.forEach((h, c) => {
      if (spec.symmetric && !unsigned) {
        min[c] = -t[c]!;
        max[c] = t[c]!;
      } else {
        min[c] = unsigned ? 0 : Math.max(h.min, -t[c]!);
        max[c] = Math.min(h.max, t[c]!);
      }
    });
    return qparamsFromRange(min, max, spec);
  }
}

/**
 * The number of bins i* (threshold i*·w) minimising KL(P‖Q) over i = levels … hist.length (see the
 * file comment). Returns hist.length when the histogram has fewer bins than levels.
 */
export function klThresholdBin(hist: Float64Array, levels: number): number {
  const n = hist.length;
  if (levels >= n) return n;
  // suffix[i] = Σ hist[i..)
  const suffix = new Float64Array(n + 1);
  for (let i = n - 1; i >= 0; i--) suffix[i] = suffix[i + 1]! + hist[i]!;
  let bestBin = n;
  let bestKl = Infinity;
  const p = new Float64Array(n);
  const q = new Float64Array(n);
  for (let i = levels; i <= n; i++) {
    for (let j = 0; j < i; j++) p[j] = hist[j]!;
    p[i - 1]! += suffix[i]!;
    const chunk = Math.floor(i / levels);
    for (let l = 0; l < levels; l++) {
      const start = l * chunk;
      const end = l === levels - 1 ? i : start + chunk;
      let total = 0;
      let nonzero = 0;
      for (let j = start; j < end; j++) {
        total += hist[j]!;
        if (hist[j]! !== 0) nonzero++;
      }
      const each = nonzero > 0 ? total / nonzero : 0;
      for (let j = start; j < end; j++) q[j] = hist[j]! !== 0 ? each : 0;
    }
    const kl = divergence(p, q, i);
    if (kl < bestKl) {
      bestKl = kl;
      bestBin = i;
    }
  }
  return bestBin;
}

/** KL(P‖Q) of the first n bins, both normalised; q = 0 where p > 0 becomes ε. */
function divergence(p: Float64Array, q: Float64Array, n: number): number {
  let sp = 0;
  let sq = 0;
  for (let j = 0; j < n; j++) {
    sp += p[j]!;
    sq += q[j]!;
  }
  if (sp === 0 || sq === 0) return Infinity;
  let kl = 0;
  for (let j = 0; j < n; j++) {
    const pj = p[j]! / sp;
    if (pj === 0) continue;
    const qj = Math.max(q[j]! / sq, EPSILON);
    kl += pj * Math.log(pj / qj);
  }
  return kl;
}
