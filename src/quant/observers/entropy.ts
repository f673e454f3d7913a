/**
 * Entropy (KL-divergence) observer for activations — TensorRT's calibration (Migacz, "8-bit
 * Inference with TensorRT", GTC 2017). |x| is collected in a 2048-bin histogram H on [0, R]
 * (x⁺ only for unsigned specs, whose negative values clip to 0 anyway). For every candidate
 * threshold bin i = L … 2048, with L the number of quantization levels of the magnitude
 * (2^b for unsigned, 2^(b−1) for signed):
 *   P = H[0..i), with the outliers Σ H[i..) added to P[i−1]  (the clipped reference);
 *   Q = H[0..i) merged into L levels, bin j into level ⌊j·L/i⌋ (each spans ⌊i/L⌋ or ⌈i/L⌉ bins),
 *       each level's count spread evenly over its nonzero bins (what L levels can represent);
 *   KL(P‖Q) = Σ p·log(p/q) over bins with p > 0, both normalised (a bin with p > 0 = q gets
 *       q = ε, as in TensorRT's smoothing).
 * The threshold is T = i*·R/2048 for the i* of least KL; the range is [−T, T] (symmetric),
 * [0, T] (unsigned) or [max(min, −T), min(max, T)] (asymmetric signed).
 *
 * Exact zeros are left out of H. Every threshold represents 0 exactly, so they say nothing about
 * where to clip, and after a ReLU they are often half of all values: counted in bin 0 they make
 * that bin a spike which the spreading of Q flattens whenever a level spans more than one bin, so
 * the KL favours the few thresholds whose first level is one bin wide, whatever the tail looks
 * like. NVIDIA's pytorch-quantization meets the same spike by setting bin 0 to bin 1's count.
 * Before both rules (zeros out, and TensorRT's "L chunks of ⌊i/L⌋ bins, the last takes the rest"
 * replaced by the even partition above, which has no long last chunk), W8A8 entropy calibration of
 * examples/ptq.ts's CNN lost 16.2 pt (tiny settings) and 6.0 pt (full settings).
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
      const hist = h.magnitude(positiveOnly);
      hist[0] = hist[0]! - h.zeros; // exact zeros carry no information on the threshold (file comment)
      if (h.zeros === h.total) return 0;
      const bin = klThresholdBin(hist, levels);
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
  const total = new Float64Array(levels);
  const nonzero = new Float64Array(levels);
  for (let i = levels; i <= n; i++) {
    for (let j = 0; j < i; j++) p[j] = hist[j]!;
    p[i - 1]! += suffix[i]!;
    // Bin j of the first i belongs to level ⌊j·L/i⌋: every level spans ⌊i/L⌋ or ⌈i/L⌉ bins.
    total.fill(0);
    nonzero.fill(0);
    for (let j = 0; j < i; j++) {
      const l = Math.floor((j * levels) / i);
      total[l]! += hist[j]!;
      if (hist[j]! !== 0) nonzero[l]!++;
    }
    for (let j = 0; j < i; j++) {
      const l = Math.floor((j * levels) / i);
      q[j] = hist[j]! !== 0 ? total[l]! / nonzero[l]! : 0;
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
