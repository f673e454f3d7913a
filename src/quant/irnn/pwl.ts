/**
 * Adaptive piecewise-linear (PWL) approximations of activation functions, after iRNN (Nia et al.,
 * "iRNN: integer-only recurrent neural network"): the knots of an N-segment PWL are placed where
 * the function bends (density ∝ |f''|^½), then knots and knot values are refined by a pattern
 * search that minimises the maximum or the mean-squared error over the input range.
 *
 * The same PWL is used three ways:
 * - float, fitted (`Pwl` from `fitPwl`): y = values[k] + slopes[k]·(x − knots[k]) on segment k,
 *   the input clamped to [knots[0], knots[N]] (constant outside);
 * - fixed point (`IntPwl` from `quantizePwl`): knots on the input grid 2^−inputFrac, values on the
 *   output grid 2^−outputFrac, slopes as integers at 2^−slopeFrac; evaluated by `evalIntPwl` with
 *   integer arithmetic only (one int32 product, one rounding shift);
 * - float, snapped (`pwlOfInt`): the real-valued function the IntPwl computes before its final
 *   rounding, used by QAT (`applyPwl`: forward that value, gradient the segment's own slope).
 */
import { add, mul } from '../../tensor/ops.ts';
import { Tensor } from '../../tensor/tensor.ts';

/** A piecewise-linear function of N segments on [knots[0], knots[N]], constant outside. */
export interface Pwl {
  /** N + 1 increasing knots. */
  readonly knots: Float64Array;
  /** N values, the function at the left knot of each segment. */
  readonly values: Float64Array;
  /** N slopes; segment k is values[k] + slopes[k]·(x − knots[k]). */
  readonly slopes: Float64Array;
}

/** What `fitPwl` minimises over the input range: the largest absolute error or the mean squared error. */
export type PwlObjective = 'maxError' | 'mse';

export interface PwlFitOptions {
  /** Number of linear segments (default 12). */
  segments?: number;
  /** Input range covered; outside it the PWL is constant (default [−8, 8], the Q3.12 range). */
  range?: readonly [number, number];
  /** Error measure minimised (default 'maxError'). */
  objective?: PwlObjective;
  /** Points of the uniform grid the error is measured on (default 2049). */
  samples?: number;
  /** Upper bound on pattern-search sweeps (default 300). */
  maxSweeps?: number;
}

/** The error of a PWL against the exact function on a uniform grid. */
export interface PwlError {
  readonly maxError: number;
  readonly rmse: number;
}

/** Segment of `x` (already clamped to the knot range): the last k with knots[k] ≤ x, at most N − 1. */
function segmentOf(knots: ArrayLike<number>, x: number): number {
  const last = knots.length - 2;
  let lo = 0;
  let hi = last;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (knots[mid]! <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The PWL at x (float64). */
export function evalPwl(pwl: Pwl, x: number): number {
  const n = pwl.values.length;
  const lo = pwl.knots[0]!;
  const hi = pwl.knots[n]!;
  const v = x < lo ? lo : x > hi ? hi : x;
  const k = segmentOf(pwl.knots, v);
  return pwl.values[k]! + pwl.slopes[k]! * (v - pwl.knots[k]!);
}

/** The slope used as the PWL's derivative at x: the segment's slope inside the knot range, 0 outside. */
export function pwlSlope(pwl: Pwl, x: number): number {
  const n = pwl.values.length;
  if (x < pwl.knots[0]! || x > pwl.knots[n]!) return 0;
  return pwl.slopes[segmentOf(pwl.knots, x)]!;
}

/** Max and RMS error of `pwl` against `fn` on `samples` uniform points of `range`. */
export function pwlError(pwl: Pwl, fn: (x: number) => number, range: readonly [number, number], samples = 8193): PwlError {
  let max = 0;
  let sq = 0;
  for (let i = 0; i < samples; i++) {
    const x = range[0] + ((range[1] - range[0]) * i) / (samples - 1);
    const e = Math.abs(evalPwl(pwl, x) - fn(x));
    if (e > max) max = e;
    sq += e * e;
  }
  return { maxError: max, rmse: Math.sqrt(sq / samples) };
}

/** The continuous PWL through (knots[k], knotValues[k]). */
function pwlThrough(knots: Float64Array, knotValues: Float64Array): Pwl {
  const n = knots.length - 1;
  const values = knotValues.slice(0, n);
  const slopes = new Float64Array(n);
  for (let k = 0; k < n; k++) slopes[k] = (knotValues[k + 1]! - knotValues[k]!) / (knots[k + 1]! - knots[k]!);
  return { knots: knots.slice(), values, slopes };
}

function checkFitOptions(options: PwlFitOptions): { segments: number; lo: number; hi: number; objective: PwlObjective; samples: number; maxSweeps: number } {
  const segments = options.segments ?? 12;
  if (!Number.isInteger(segments) || segments < 1 || segments > 256) throw new RangeError(`fitPwl: segments must be an integer in [1, 256], got ${segments}`);
  const [lo, hi] = options.range ?? [-8, 8];
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(lo < hi)) throw new RangeError(`fitPwl: range must be finite with lo < hi, got [${lo}, ${hi}]`);
  const objective = options.objective ?? 'maxError';
  if (objective !== 'maxError' && objective !== 'mse') throw new RangeError(`fitPwl: objective must be 'maxError' or 'mse', got ${String(objective)}`);
  const samples = options.samples ?? 2049;
  if (!Number.isInteger(samples) || samples < 2 * segments + 1) throw new RangeError(`fitPwl: samples must be an integer ≥ 2·segments + 1, got ${samples}`);
  const maxSweeps = options.maxSweeps ?? 300;
  if (!Number.isInteger(maxSweeps) || maxSweeps < 0) throw new RangeError(`fitPwl: maxSweeps must be a non-negative integer, got ${maxSweeps}`);
  return { segments, lo, hi, objective, samples, maxSweeps };
}

/** Knots placed at equal shares of ∫ (|f''| + floor)^½ over [lo, hi]: dense where f bends. */
function curvatureKnots(fn: (x: number) => number, segments: number, lo: number, hi: number): Float64Array {
  const cells = 4096;
  const h = (hi - lo) / cells;
  const density = new Float64Array(cells);
  let peak = 0;
  for (let i = 0; i < cells; i++) {
    const x = lo + (i + 0.5) * h;
    const d2 = Math.abs(fn(x + h) - 2 * fn(x) + fn(x - h)) / (h * h);
    density[i] = Math.sqrt(d2);
    if (density[i]! > peak) peak = density[i]!;
  }
  // A floor keeps knots from leaving the nearly straight parts entirely.
  const floor = 0.05 * peak + 1e-12;
  let total = 0;
  for (let i = 0; i < cells; i++) total += density[i]! + floor;
  const knots = new Float64Array(segments + 1);
  knots[0] = lo;
  knots[segments] = hi;
  let acc = 0;
  let k = 1;
  for (let i = 0; i < cells && k < segments; i++) {
    const w = density[i]! + floor;
    while (k < segments && acc + w >= (total * k) / segments) {
      knots[k] = lo + (i + ((total * k) / segments - acc) / w) * h;
      k++;
    }
    acc += w;
  }
  return knots;
}

/**
 * Fits an N-segment continuous PWL to `fn` on `range`: curvature-based knots, values at the knots,
 * then a pattern search over the interior knots and all knot values (steps halved when a sweep
 * finds no improvement) minimising the max or mean-squared error on a uniform grid.
 */
export function fitPwl(fn: (x: number) => number, options: PwlFitOptions = {}): Pwl {
  const { segments, lo, hi, objective, samples, maxSweeps } = checkFitOptions(options);
  const xs = new Float64Array(samples);
  const ys = new Float64Array(samples);
  for (let i = 0; i < samples; i++) {
    xs[i] = lo + ((hi - lo) * i) / (samples - 1);
    ys[i] = fn(xs[i]!);
  }
  const knots = curvatureKnots(fn, segments, lo, hi);
  const knotValues = new Float64Array(segments + 1);
  for (let k = 0; k <= segments; k++) knotValues[k] = fn(knots[k]!);

  const cost = (): number => {
    let k = 0;
    let worst = 0;
    let sq = 0;
    for (let i = 0; i < samples; i++) {
      const x = xs[i]!;
      while (k < segments - 1 && x >= knots[k + 1]!) k++;
      const t = (x - knots[k]!) / (knots[k + 1]! - knots[k]!);
      const e = knotValues[k]! + t * (knotValues[k + 1]! - knotValues[k]!) - ys[i]!;
      if (objective === 'maxError') {
        const a = Math.abs(e);
        if (a > worst) worst = a;
      } else sq += e * e;
    }
    return objective === 'maxError' ? worst : sq / samples;
  };

  const minGap = ((hi - lo) / samples) * 2;
  let best = cost();
  let knotStep = (hi - lo) / segments / 4;
  let valueStep = 0.01 * (Math.max(...ys) - Math.min(...ys) || 1);
  const tryMove = (array: Float64Array, index: number, delta: number): boolean => {
    const keep = array[index]!;
    array[index] = keep + delta;
    if (array === knots && (array[index]! - knots[index - 1]! < minGap || knots[index + 1]! - array[index]! < minGap)) {
      array[index] = keep;
      return false;
    }
    const c = cost();
    if (c < best) {
      best = c;
      return true;
    }
    array[index] = keep;
    return false;
  };
  for (let sweep = 0; sweep < maxSweeps && (knotStep > 1e-9 || valueStep > 1e-12); sweep++) {
    let improved = false;
    for (let k = 1; k < segments; k++) improved = tryMove(knots, k, knotStep) || tryMove(knots, k, -knotStep) || improved;
    for (let k = 0; k <= segments; k++) improved = tryMove(knotValues, k, valueStep) || tryMove(knotValues, k, -valueStep) || improved;
    if (!improved) {
      knotStep /= 2;
      valueStep /= 2;
    }
  }
  return pwlThrough(knots, knotValues);
}

/** The logistic sigmoid 1/(1 + e^−x). */
export function sigmoidExact(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** PWL fit of the sigmoid (defaults of `fitPwl`: 12 segments on [−8, 8], max error). */
export function fitSigmoidPwl(options: PwlFitOptions = {}): Pwl {
  return fitPwl(sigmoidExact, options);
}

/** PWL fit of tanh (defaults of `fitPwl`). */
export function fitTanhPwl(options: PwlFitOptions = {}): Pwl {
  return fitPwl(Math.tanh, options);
}

// ---------------------------------------------------------------- fixed point

/** Fixed-point formats of an integer PWL. */
export interface PwlFormat {
  /** Input integers z stand for z·2^−inputFrac (default 12: Q3.12 in int16). */
  readonly inputFrac: number;
  /** Output integers y stand for y·2^−outputFrac (default 15: Q0.15 in int16). */
  readonly outputFrac: number;
  /** Slopes are integers at 2^−slopeFrac output units per input unit (default 15). */
  readonly slopeFrac: number;
  /** Output clamp (default [−32767, 32767]). */
  readonly outputMin: number;
  readonly outputMax: number;
}

export const DEFAULT_PWL_FORMAT: PwlFormat = { inputFrac: 12, outputFrac: 15, slopeFrac: 15, outputMin: -32767, outputMax: 32767 };

/** A PWL in integers: y = clamp(values[k] + roundShift((z − knots[k])·slopes[k], shift)), see `evalIntPwl`. */
export interface IntPwl extends PwlFormat {
  /** N + 1 strictly increasing knots on the input grid, within int16. */
  readonly knots: Int32Array;
  /** N values at the left knots, on the output grid. */
  readonly values: Int32Array;
  /** N slopes at 2^−slopeFrac. */
  readonly slopes: Int32Array;
}

/** Right shift of the slope product: slopeFrac + inputFrac − outputFrac (≥ 1). */
export function pwlShift(format: PwlFormat): number {
  return format.slopeFrac + format.inputFrac - format.outputFrac;
}

/** round(v / 2^shift), ties up (toward +∞): floor((v + 2^(shift−1)) / 2^shift) for an integer v, shift ≥ 1. */
export function roundShift(v: number, shift: number): number {
  // Every product the runtime rounds is below 2^30 in magnitude: then int32 shifts do it.
  if (shift <= 30 && v >= -0x40000000 && v < 0x40000000) return (v + (1 << (shift - 1))) >> shift;
  return Math.floor((v + 2 ** (shift - 1)) / 2 ** shift);
}

/** Checks the invariants `evalIntPwl` relies on; returns a list of problems (empty when sound). */
export function intPwlProblems(table: IntPwl): string[] {
  const problems: string[] = [];
  const { knots, values, slopes, inputFrac, outputFrac, slopeFrac, outputMin, outputMax } = table;
  for (const [name, v, lo, hi] of [['inputFrac', inputFrac, 0, 15], ['outputFrac', outputFrac, 0, 15], ['slopeFrac', slopeFrac, 0, 24]] as const) {
    if (!Number.isInteger(v) || v < lo || v > hi) problems.push(`${name} ${v} is not an integer in [${lo}, ${hi}]`);
  }
  if (problems.length === 0 && pwlShift(table) < 1) problems.push(`slopeFrac + inputFrac − outputFrac must be ≥ 1, got ${pwlShift(table)}`);
  if (!Number.isInteger(outputMin) || !Number.isInteger(outputMax) || outputMin < -32768 || outputMax > 32767 || outputMin > outputMax) {
    problems.push(`output clamp [${outputMin}, ${outputMax}] is not an int16 range`);
  }
  const n = values.length;
  if (n < 1 || slopes.length !== n || knots.length !== n + 1) problems.push(`sizes: ${knots.length} knots, ${values.length} values, ${slopes.length} slopes (need N + 1, N, N with N ≥ 1)`);
  else {
    for (let k = 0; k <= n; k++) {
      if (knots[k]! < -32768 || knots[k]! > 32767) problems.push(`knot ${k} = ${knots[k]} is outside int16`);
      if (k > 0 && knots[k]! <= knots[k - 1]!) problems.push(`knots are not strictly increasing at ${k}`);
    }
    for (let k = 0; k < n; k++) {
      // Every product (z − knot)·slope must fit int32, and values stay far from overflow.
      if (Math.abs((knots[k + 1]! - knots[k]!) * slopes[k]!) >= 2 ** 31) problems.push(`segment ${k}: width × slope overflows int32`);
      if (Math.abs(values[k]!) > 2 ** 20) problems.push(`value ${k} = ${values[k]} is out of range`);
    }
  }
  return problems;
}

/**
 * Snaps a fitted PWL to fixed point: knots rounded to the input grid (clamped to int16, duplicates
 * dropped), knot values to the output grid, each slope = round(real slope between the snapped
 * knot points · 2^slopeFrac).
 */
export function quantizePwl(pwl: Pwl, format: Partial<PwlFormat> = {}): IntPwl {
  const f: PwlFormat = { ...DEFAULT_PWL_FORMAT, ...format };
  const inScale = 2 ** f.inputFrac;
  const outScale = 2 ** f.outputFrac;
  const n = pwl.values.length;
  const knots: number[] = [];
  const points: number[] = [];
  for (let k = 0; k <= n; k++) {
    const z = Math.min(32767, Math.max(-32768, Math.round(pwl.knots[k]! * inScale)));
    const y = Math.round(evalPwl(pwl, pwl.knots[k]!) * outScale);
    if (knots.length > 0 && z <= knots[knots.length - 1]!) continue;
    knots.push(z);
    points.push(y);
  }
  if (knots.length < 2) throw new RangeError('quantizePwl: the knots collapse to one point on the input grid');
  const m = knots.length - 1;
  const values = new Int32Array(m);
  const slopes = new Int32Array(m);
  for (let k = 0; k < m; k++) {
    values[k] = points[k]!;
    const real = (points[k + 1]! - points[k]!) / outScale / ((knots[k + 1]! - knots[k]!) / inScale);
    slopes[k] = Math.round(real * 2 ** f.slopeFrac);
  }
  const table: IntPwl = { ...f, knots: Int32Array.from(knots), values, slopes };
  const problems = intPwlProblems(table);
  if (problems.length > 0) throw new RangeError(`quantizePwl: ${problems.join('; ')}`);
  return table;
}

/**
 * The integer PWL at integer input z (scale 2^−inputFrac): z clamped to [knots[0], knots[N]],
 * segment k found by binary search, y = values[k] + roundShift((z − knots[k])·slopes[k], shift),
 * clamped to [outputMin, outputMax]. The product fits int32 (checked by `intPwlProblems`).
 */
export function evalIntPwl(table: IntPwl, z: number): number {
  const knots = table.knots;
  const n = table.values.length;
  const v = z < knots[0]! ? knots[0]! : z > knots[n]! ? knots[n]! : z;
  const k = segmentOf(knots, v);
  const y = table.values[k]! + roundShift((v - knots[k]!) * table.slopes[k]!, pwlShift(table));
  return y < table.outputMin ? table.outputMin : y > table.outputMax ? table.outputMax : y;
}

/**
 * The segment of every input from knots[0] to knots[N] (index z − knots[0]): a lookup table that
 * replaces the binary search of `evalIntPwl` in the runtime's hot loop (`evalIntPwlIndexed`).
 */
export function pwlSegmentIndex(table: IntPwl): Uint8Array {
  const n = table.values.length;
  if (n > 256) throw new RangeError(`pwlSegmentIndex: ${n} segments do not fit a byte index`);
  const lo = table.knots[0]!;
  const index = new Uint8Array(table.knots[n]! - lo + 1);
  let k = 0;
  for (let z = lo; z <= table.knots[n]!; z++) {
    while (k < n - 1 && table.knots[k + 1]! <= z) k++;
    index[z - lo] = k;
  }
  return index;
}

/** `evalIntPwl` with the segment read from `pwlSegmentIndex(table)`: the same integer result. */
export function evalIntPwlIndexed(table: IntPwl, index: Uint8Array, z: number): number {
  const knots = table.knots;
  const lo = knots[0]!;
  const hi = knots[table.values.length]!;
  const v = z < lo ? lo : z > hi ? hi : z;
  const k = index[v - lo]!;
  const y = table.values[k]! + roundShift((v - knots[k]!) * table.slopes[k]!, table.slopeFrac + table.inputFrac - table.outputFrac);
  return y < table.outputMin ? table.outputMin : y > table.outputMax ? table.outputMax : y;
}

/** The real-valued function an IntPwl computes before its final rounding (knots, values, slopes scaled back). */
export function pwlOfInt(table: IntPwl): Pwl {
  const inScale = 2 ** -table.inputFrac;
  const outScale = 2 ** -table.outputFrac;
  return {
    knots: Float64Array.from(table.knots, (z) => z * inScale),
    values: Float64Array.from(table.values, (y) => y * outScale),
    slopes: Float64Array.from(table.slopes, (s) => s * 2 ** -table.slopeFrac),
  };
}

// ---------------------------------------------------------------- autograd

/**
 * The PWL applied elementwise to a tensor, differentiable: forward x·S + B with S, B the slope and
 * intercept of x's segment (S = 0 and B = the end value outside the knot range), so the gradient
 * with respect to x is the segment's own slope. With several PWLs, the last axis is split into
 * that many equal blocks, block j using pwls[j] (an LSTM's [i, f, g, o] gates in one call).
 */
export function applyPwl(x: Tensor, pwls: Pwl | readonly Pwl[]): Tensor {
  const list = Array.isArray(pwls) ? (pwls as readonly Pwl[]) : [pwls as Pwl];
  if (x.dtype === 'int32') throw new TypeError('applyPwl: x must be a float tensor');
  const width = x.rank === 0 ? 1 : x.shape[x.rank - 1]!;
  if (width % list.length !== 0) throw new RangeError(`applyPwl: last dim ${width} does not split into ${list.length} equal blocks`);
  const block = width / list.length;
  const slope = x.dtype === 'float64' ? new Float64Array(x.size) : new Float32Array(x.size);
  const intercept = x.dtype === 'float64' ? new Float64Array(x.size) : new Float32Array(x.size);
  const data = x.data;
  const rows = data.length / width;
  for (let b = 0; b < list.length; b++) {
    const pwl = list[b]!;
    const { knots, values, slopes } = pwl;
    const n = values.length;
    const lo = knots[0]!;
    const hi = knots[n]!;
    const end = values[n - 1]! + slopes[n - 1]! * (hi - knots[n - 1]!);
    const buckets = segmentBuckets(pwl);
    const perUnit = buckets.length / (hi - lo);
    for (let r = 0; r < rows; r++) {
      const first = r * width + b * block;
      for (let i = first; i < first + block; i++) {
        const v = data[i]!;
        if (v < lo) intercept[i] = values[0]!;
        else if (v > hi) intercept[i] = end;
        else {
          // The bucket gives the first candidate segment; at most a few knots lie past it.
          let k = buckets[Math.min(buckets.length - 1, Math.floor((v - lo) * perUnit))]!;
          while (k < n - 1 && knots[k + 1]! <= v) k++;
          slope[i] = slopes[k]!;
          intercept[i] = values[k]! - slopes[k]! * knots[k]!;
        }
      }
    }
  }
  return add(mul(x, new Tensor(slope, x.shape)), new Tensor(intercept, x.shape));
}

const BUCKETS = 256;
const bucketCache = new WeakMap<Pwl, Int32Array>();

/** For 256 equal buckets of [knots[0], knots[N]]: the segment of each bucket's left edge. */
function segmentBuckets(pwl: Pwl): Int32Array {
  let buckets = bucketCache.get(pwl);
  if (!buckets) {
    const n = pwl.values.length;
    const lo = pwl.knots[0]!;
    const step = (pwl.knots[n]! - lo) / BUCKETS;
    buckets = new Int32Array(BUCKETS);
    for (let j = 0; j < BUCKETS; j++) {
      // Floating-point slack: start one segment early, the scan moves forward.
      buckets[j] = Math.max(0, segmentOf(pwl.knots, lo + j * step) - 1);
    }
    bucketCache.set(pwl, buckets);
  }
  return buckets;
}
