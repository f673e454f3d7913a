/**
 * Power-of-two coefficients of SmartDeal (Chen et al., "SmartDeal: Re-Modeling Deep Network
 * Weights for Efficient Inference and Training", IEEE TNNLS 2022, arXiv 2101.01163).
 *
 * A kept coefficient is stored as a sign and an exponent code: c = ±2^p with p in
 * [minExponent, maxExponent], 2^exponentBits exponents in all. A coefficient removed by the
 * structured-sparsity mask is 0; inside the mask there is no zero code (the mask alone carries
 * the zeros, as in the paper's hardware format).
 */
import { mul, Tensor } from '../../tensor/index.ts';
import { straightThrough } from '../quantizers/common.ts';

/** Exponent range of the coefficients. */
export interface Pow2Range {
  /** Smallest exponent p. */
  readonly minExponent: number;
  /** Largest exponent p. */
  readonly maxExponent: number;
}

/** The range of `exponentBits` exponent codes ending at `maxExponent` (2^bits exponents). */
export function pow2Range(exponentBits: number, maxExponent = 0): Pow2Range {
  if (!Number.isInteger(exponentBits) || exponentBits < 1 || exponentBits > 6) {
    throw new Error(`smartdeal: exponentBits must be an integer in [1, 6], got ${exponentBits}`);
  }
  if (!Number.isInteger(maxExponent) || Math.abs(maxExponent) > 30) throw new Error(`smartdeal: maxExponent must be an integer in [-30, 30], got ${maxExponent}`);
  return { minExponent: maxExponent - 2 ** exponentBits + 1, maxExponent };
}

/**
 * Exponent of the power of two nearest to |c| on the linear scale, clamped to the range:
 * with q = floor(log2|c|), |c| is between 2^q and 2^(q+1); it rounds up when |c| ≥ 1.5·2^q (the
 * midpoint; ties go up, as the reference code's "previous is better only if strictly closer").
 * |c| = 0 (or below the range) gives minExponent.
 */
export function pow2Exponent(c: number, range: Pow2Range): number {
  const a = Math.abs(c);
  if (!(a > 0)) return range.minExponent;
  let q = Math.floor(Math.log2(a));
  // Guard the floor against log2 rounding at exact powers of two.
  if (2 ** q > a) q -= 1;
  else if (2 ** (q + 1) <= a) q += 1;
  const p = a >= 1.5 * 2 ** q ? q + 1 : q;
  return Math.min(range.maxExponent, Math.max(range.minExponent, p));
}

/** sign(c)·2^p with p = pow2Exponent(c) and sign(0) = +1 (DESIGN.md); NaN stays NaN (a diverged value is not hidden). */
export function roundPow2(c: number, range: Pow2Range): number {
  if (Number.isNaN(c)) return Number.NaN;
  const v = 2 ** pow2Exponent(c, range);
  return c < 0 ? -v : v;
}

/**
 * Rounds every entry of `values` to ±2^p (`roundPow2`, NaN stays NaN) where `mask` is 1 and writes 0
 * where it is 0; returns a new array of the same type.
 */
export function roundPow2Masked<T extends Float32Array | Float64Array>(values: T, mask: ArrayLike<number>, range: Pow2Range): T {
  const out = values.slice() as T;
  const { minExponent, maxExponent } = range;
  const powers = new Float64Array(maxExponent - minExponent + 1).map((_, i) => 2 ** (minExponent + i));
  // float32 input: exponent and first mantissa bit straight from the bits (see pow2ExponentFast).
  const words = values instanceof Float32Array ? new Uint32Array(values.buffer, values.byteOffset, values.length) : null;
  for (let i = 0; i < values.length; i++) {
    if (mask[i] === 0) {
      out[i] = 0;
      continue;
    }
    if (Number.isNaN(values[i]!)) {
      out[i] = Number.NaN;
      continue;
    }
    let p: number;
    if (words !== null) {
      const bits = words[i]!;
      const biased = (bits >>> 23) & 0xff;
      p = biased === 0 || biased === 0xff ? pow2ExponentFast(values[i]!) : biased - 127 + ((bits >>> 22) & 1);
    } else {
      p = pow2ExponentFast(values[i]!);
    }
    const v = powers[(p < minExponent ? minExponent : p > maxExponent ? maxExponent : p) - minExponent]!;
    out[i] = values[i]! < 0 ? -v : v;
  }
  return out;
}

const scratch = new Float64Array(1);
const scratchWords = new Uint32Array(scratch.buffer);
const highWord = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;

/**
 * @internal `pow2Exponent` before clamping, read from the float64 bits: |c| = 1.m·2^q, and
 * |c| ≥ 1.5·2^q exactly when the first mantissa bit is 1, so p = q + that bit. Zero, subnormal
 * and non-finite values take the formula path (Number.NEGATIVE_INFINITY for 0).
 */
export function pow2ExponentFast(c: number): number {
  scratch[0] = c;
  const high = scratchWords[highWord]!;
  const biased = (high >>> 20) & 0x7ff;
  if (biased === 0 || biased === 0x7ff) {
    const a = Math.abs(c);
    if (!(a > 0)) return Number.NEGATIVE_INFINITY;
    return pow2Exponent(c, { minExponent: -1100, maxExponent: 1100 });
  }
  return biased - 1023 + ((high >>> 19) & 1);
}

/**
 * The straight-through power-of-two coefficient op used in training.
 *
 * Forward: Ĉ = mask ⊙ pow2(C) (`roundPow2` per entry).
 * Gradient: ∂L/∂C = mask ⊙ ∂L/∂Ĉ (straight through the rounding, zero where the mask is 0, so
 * pruned coefficients never receive an update; SmartDeal §III, the reference code's
 * `SparsifyAndNearestPow2` backward passes the gradient unchanged and the mask multiplies it).
 *
 * `mask` has C's shape (entries 0 or 1) and C's dtype.
 */
export function pow2Ste(coefficients: Tensor, mask: Tensor, range: Pow2Range): Tensor {
  if (mask.size !== coefficients.size) throw new Error(`pow2Ste: mask has ${mask.size} entries for ${coefficients.size} coefficients`);
  const data = roundPow2Masked(coefficients.data as Float32Array | Float64Array, mask.data, range);
  const value = new Tensor(data, coefficients.shape);
  return straightThrough(value, mul(coefficients, mask));
}
