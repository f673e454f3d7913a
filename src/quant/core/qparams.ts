/**
 * Quantization parameters and the one affine definition used everywhere:
 *   q = clamp(roundHalfEven(x / s) + z, qmin, qmax),   x̂ = (q − z)·s.
 * Signed b-bit range [−2^(b−1), 2^(b−1)−1]; symmetric specs use the narrow range
 * [−(2^(b−1)−1), 2^(b−1)−1] and z = 0. Unsigned range [0, 2^b − 1].
 */

/** How parameters are shared: one per tensor, per slice along `axis`, or per group of `groupSize` along `axis`. */
export type Granularity = 'tensor' | 'channel' | 'group';

/** A serializable description of a uniform quantizer's number format. */
export interface QuantSpec {
  readonly bits: number;
  /** Signed integers (weights) or unsigned (post-ReLU activations). */
  readonly signed: boolean;
  /** Symmetric: z = 0 and, when signed, the narrow range. */
  readonly symmetric: boolean;
  readonly granularity: Granularity;
  /** Channel axis (default 0, the output channel of Conv2d/Linear weights). */
  readonly axis?: number;
  /** Elements per group along `axis` (granularity 'group'). */
  readonly groupSize?: number;
  /** Round scales up to powers of two (shift-only requantization). */
  readonly powerOfTwoScale?: boolean;
}

/** Parameters of a quantized tensor: they always travel with its values. */
export interface QParams {
  readonly scale: Float32Array;
  readonly zeroPoint: Int32Array;
  readonly bits: number;
  readonly qmin: number;
  readonly qmax: number;
  /** null for per-tensor. */
  readonly axis: number | null;
  /** null unless per-group. */
  readonly groupSize: number | null;
}

/** Integer range of a spec. */
export function qRange(spec: Pick<QuantSpec, 'bits' | 'signed' | 'symmetric'>): [number, number] {
  const { bits, signed, symmetric } = spec;
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) throw new Error(`bits must be an integer in [1, 16], got ${bits}`);
  if (bits === 1) {
    if (signed) throw new Error('a signed 1-bit affine range does not exist: use a binary quantizer (sign, values ±α)');
    return [0, 1];
  }
  if (!signed) return [0, 2 ** bits - 1];
  const half = 2 ** (bits - 1);
  return symmetric ? [-(half - 1), half - 1] : [-half, half - 1];
}

/** Smallest power of two >= s (keeps the range representable). */
export function ceilPowerOfTwo(s: number): number {
  return 2 ** Math.ceil(Math.log2(s));
}

/**
 * Scale and zero point that map [min, max] onto the integer range of `spec`. The range is widened
 * to include 0 so that zero is exact; a degenerate range gets scale 1 (or the tiny epsilon).
 */
export function qparamsFromRange(min: ArrayLike<number>, max: ArrayLike<number>, spec: QuantSpec): QParams {
  const [qmin, qmax] = qRange(spec);
  const n = min.length;
  if (max.length !== n) throw new Error('min and max differ in length');
  const scale = new Float32Array(n);
  const zeroPoint = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const lo = Math.min(min[i]!, 0);
    const hi = Math.max(max[i]!, 0);
    let s: number;
    let z: number;
    if (spec.symmetric) {
      const bound = Math.max(-lo, hi);
      s = bound / qmax;
      z = 0;
    } else {
      s = (hi - lo) / (qmax - qmin);
      z = 0;
    }
    if (!(s > 1e-12) || !Number.isFinite(s)) s = Number.isFinite(s) && s > 0 ? 1e-12 : 1;
    if (spec.powerOfTwoScale) s = ceilPowerOfTwo(s);
    if (!spec.symmetric) z = Math.min(qmax, Math.max(qmin, Math.round(qmin - lo / s)));
    scale[i] = s;
    zeroPoint[i] = z;
  }
  return {
    scale, zeroPoint, bits: spec.bits, qmin, qmax,
    axis: spec.granularity === 'tensor' ? null : spec.axis ?? 0,
    groupSize: spec.granularity === 'group' ? spec.groupSize ?? null : null,
  };
}

/**
 * @internal The parameter index of every element of a tensor of `shape` under `qp`'s granularity
 * (per-channel: the coordinate on `axis`; per-group: groups of `groupSize` along `axis`, one
 * parameter per group and per position of all other dims).
 */
export function paramIndex(shape: readonly number[], qp: Pick<QParams, 'axis' | 'groupSize'>): (i: number) => number {
  if (qp.axis === null) return () => 0;
  const axis = qp.axis;
  const len = shape[axis]!;
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  if (qp.groupSize === null) return (i) => Math.floor(i / inner) % len;
  const g = qp.groupSize;
  if (len % g !== 0) throw new Error(`axis ${axis} of size ${len} is not a multiple of groupSize ${g}`);
  const groups = len / g;
  return (i) => {
    const outer = Math.floor(i / (len * inner));
    const c = Math.floor(i / inner) % len;
    return (outer * groups + Math.floor(c / g)) * inner + (i % inner);
  };
}

/** Number of parameter sets a tensor of `shape` needs under `spec`. */
export function paramCount(shape: readonly number[], spec: QuantSpec): number {
  if (spec.granularity === 'tensor') return 1;
  const axis = spec.axis ?? 0;
  if (spec.granularity === 'channel') return shape[axis]!;
  const size = shape.reduce((p, d) => p * d, 1);
  return size / (spec.groupSize ?? 1);
}

/** Per-parameter min and max of `data` (the ranges a min-max observer would record). */
/**
 * [min, max] of all values (NaN skipped; [Infinity, −Infinity] when there are none). A small
 * function of its own with four independent accumulator pairs, so that the JIT compiles a tight
 * loop (an activation observer runs this on every training batch).
 */
function wholeRange(data: ArrayLike<number>): [number, number] {
  let lo0 = Infinity;
  let hi0 = -Infinity;
  let lo1 = Infinity;
  let hi1 = -Infinity;
  let lo2 = Infinity;
  let hi2 = -Infinity;
  let lo3 = Infinity;
  let hi3 = -Infinity;
  const n = data.length;
  const body = n - (n % 4);
  for (let i = 0; i < body; i += 4) {
    const a = data[i]!;
    const b = data[i + 1]!;
    const c = data[i + 2]!;
    const d = data[i + 3]!;
    if (a < lo0) lo0 = a;
    if (a > hi0) hi0 = a;
    if (b < lo1) lo1 = b;
    if (b > hi1) hi1 = b;
    if (c < lo2) lo2 = c;
    if (c > hi2) hi2 = c;
    if (d < lo3) lo3 = d;
    if (d > hi3) hi3 = d;
  }
  for (let i = body; i < n; i++) {
    const a = data[i]!;
    if (a < lo0) lo0 = a;
    if (a > hi0) hi0 = a;
  }
  // The accumulators are never NaN, so Math.min / Math.max only pick among them.
  return [Math.min(lo0, lo1, lo2, lo3), Math.max(hi0, hi1, hi2, hi3)];
}

export function rangesOf(data: ArrayLike<number>, shape: readonly number[], spec: QuantSpec): { min: Float64Array; max: Float64Array } {
  const n = paramCount(shape, spec);
  const idx = paramIndex(shape, {
    axis: spec.granularity === 'tensor' ? null : spec.axis ?? 0,
    groupSize: spec.granularity === 'group' ? spec.groupSize ?? 1 : null,
  });
  const min = new Float64Array(n).fill(Infinity);
  const max = new Float64Array(n).fill(-Infinity);
  if (spec.granularity === 'tensor') {
    [min[0], max[0]] = wholeRange(data);
    return { min, max };
  }
  for (let i = 0; i < data.length; i++) {
    const p = idx(i);
    const v = data[i]!;
    if (v < min[p]!) min[p] = v;
    if (v > max[p]!) max[p] = v;
  }
  return { min, max };
}
