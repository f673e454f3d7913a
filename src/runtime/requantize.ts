/**
 * Fixed-point requantization: a real ratio r = s_in·s_w/s_out is represented as
 *   r ≈ M0·2^−n,   M0 a signed int32 with 2^30 ≤ |M0| < 2^31 (Q31 mantissa), n the right shift,
 * and an int32 accumulator `acc` maps to round(acc·M0·2^−n) with ONE rounding of the exact
 * product, half away from zero (as gemmlowp's RoundingDivideByPOT does for the final shift, but
 * without the intermediate doubling-high-mul rounding). The relative error of M0·2^−n against r
 * is at most 2^−31 (|M0| ≥ 2^30, rounding error ≤ 1/2).
 *
 * The exact product acc·M0 has up to 62 bits, more than a double holds, so `requantizeScalar`
 * splits M0 in 16-bit halves and carries the remainder; for shifts outside [16, 53] it falls back
 * to BigInt (rare: ratios ≥ 2^15 or < 2^−22).
 */

export interface FixedPointMultiplier {
  /** Signed Q31 mantissa, 2^30 ≤ |M0| < 2^31, or 0 when the ratio is 0. */
  readonly multiplier: number;
  /** Right shift n (may be negative for ratios ≥ 2^31: then a left shift). */
  readonly shift: number;
}

/** M0 and n with M0·2^−n ≈ real (relative error ≤ 2^−31). */
export function quantizeMultiplier(real: number): FixedPointMultiplier {
  if (!Number.isFinite(real)) throw new Error(`quantizeMultiplier: the ratio must be finite, got ${real}`);
  if (real === 0) return { multiplier: 0, shift: 0 };
  const sign = real < 0 ? -1 : 1;
  const a = Math.abs(real);
  // a = f·2^e with f in [0.5, 1)
  let e = Math.floor(Math.log2(a)) + 1;
  let f = a / 2 ** e;
  if (f >= 1) { f /= 2; e += 1; }
  if (f < 0.5) { f *= 2; e -= 1; }
  let m = Math.round(f * 2 ** 31);
  if (m === 2 ** 31) { m = 2 ** 30; e += 1; }
  return { multiplier: sign * m, shift: 31 - e };
}

const TWO16 = 65536;

/**
 * round(acc·M0·2^−n), half away from zero, computed exactly. `M0` is an int32 value; `acc` any
 * integer with |acc| < 2^37 (the runtime passes acc·2^k + bias, see LayerOutput.biasShift).
 */
export function requantizeScalar(acc: number, multiplier: number, shift: number): number {
  if (acc === 0 || multiplier === 0) return 0;
  const negative = (acc < 0) !== (multiplier < 0);
  const a = Math.abs(acc);
  const m = Math.abs(multiplier);
  let r: number;
  if (shift >= 16 && shift <= 53 && a < 2 ** 37) {
    const hi = a * Math.floor(m / TWO16); // < 2^52, exact
    const lo = a * (m % TWO16); // < 2^53, exact
    const q1 = Math.floor(lo / TWO16);
    const r1 = lo - q1 * TWO16; // [0, 2^16)
    const t = hi + q1; // < 2^53, exact; value = (t·2^16 + r1)·2^−shift
    const s = shift - 16;
    const p = 2 ** s;
    const q = Math.floor(t / p);
    const rem = (t - q * p) * TWO16 + r1; // fraction·2^shift, < 2^(s+16) ≤ 2^53
    r = rem * 2 >= p * TWO16 ? q + 1 : q;
  } else {
    const prod = BigInt(a) * BigInt(m);
    if (shift <= 0) r = Number(prod << BigInt(-shift));
    else {
      const q = prod >> BigInt(shift);
      const rem = prod - (q << BigInt(shift));
      r = Number(rem * 2n >= 1n << BigInt(shift) ? q + 1n : q);
    }
  }
  return negative && r !== 0 ? -r : r;
}

/** The real ratio M0·2^−n represents. */
export function multiplierValue(m: FixedPointMultiplier): number {
  return m.multiplier * 2 ** -m.shift;
}

const POW2 = Float64Array.from({ length: 64 }, (_, i) => 2 ** i);
const TWO53 = 2 ** 53;
const TWO36 = 2 ** 36;

/**
 * requantizeScalar(acc, multiplier, shift), bit for bit, with a fast path: when |acc·M0| < 2^53 the
 * float64 product is exact, and so are its floor division by 2^n and the remainder; otherwise (or
 * for shifts outside [1, 62]) it calls requantizeScalar. The TypeScript integer Transformer
 * (quant/irnn/transformer.ts) requantizes through it; quant/irnn/intlstm.ts's `requantizeExact` is
 * the variant with the powers of two precomputed per row. @internal
 */
export function requantizeFast(acc: number, multiplier: number, shift: number): number {
  if (acc === 0 || multiplier === 0) return 0;
  if (shift > 0 && shift < 63) {
    // |acc|·(|M0|·2^−n): one float64 rounding (|M0|·2^−n is exact), so f is within 2^−23 of the
    // exact value while f < 2^30; its rounding is then exact unless f's fraction is near ½.
    const a = acc < 0 ? -acc : acc;
    const f = a * ((multiplier < 0 ? -multiplier : multiplier) / POW2[shift]!);
    if (f < 1073741824) {
      const q = Math.floor(f);
      const frac = f - q;
      if (frac < 0.4999990 || frac > 0.5000010) {
        const r = frac > 0.5 ? q + 1 : q;
        return (acc < 0) !== (multiplier < 0) && r !== 0 ? -r : r;
      }
    }
  }
  const prod = acc * multiplier;
  if (prod < TWO53 && prod > -TWO53 && shift > 0 && shift < 63) {
    const a = prod < 0 ? -prod : prod;
    const p = POW2[shift]!;
    const q = Math.floor(a / p);
    const r = (a - q * p) * 2 >= p ? q + 1 : q;
    return prod < 0 && r !== 0 ? -r : r;
  }
  if (shift >= 17 && shift < 63 && acc < TWO36 && acc > -TWO36) {
    // |acc|·M0 = |acc|·hi·2^16 + |acc|·lo with both products exact (< 2^52); the sum is split as
    // t·2^16 + r1 (t < 2^53 exact), then t is divided by 2^(n−16) with its remainder.
    const a = acc < 0 ? -acc : acc;
    const m = multiplier < 0 ? -multiplier : multiplier;
    const hi = a * Math.floor(m / 65536);
    const lo = a * (m % 65536);
    const q1 = Math.floor(lo / 65536);
    const r1 = lo - q1 * 65536;
    const t = hi + q1;
    const p = POW2[shift - 16]!;
    const q = Math.floor(t / p);
    const rem = (t - q * p) * 65536 + r1;
    const r = rem * 2 >= p * 65536 ? q + 1 : q;
    return (acc < 0) !== (multiplier < 0) && r !== 0 ? -r : r;
  }
  return requantizeScalar(acc, multiplier, shift);
}
