/**
 * Requantization of int32 accumulators for the TypeScript executor: the same integers as
 * `requantizeScalar` (../requantize.ts: round(v·M0·2^−n), one rounding of the exact product, half
 * away from zero), with one double multiply per value in the common case.
 *
 * Why it is exact: f = M0·2^−n is a double exactly (|M0| < 2^31, n in [−60, 900]); d = v·f is the
 * exact product rounded once, relative error ≤ 2^−53, so for |d| < 2^29 the error is below 2^−23.
 * Rounding to nearest changes only at fractional part ½: when |round(d) − d| < ½ − 2^−10 (d is
 * not near a tie) round(d) is also the nearest integer to the exact product, whatever the tie rule. Values near a tie, large
 * values and channels with extreme shifts go through `requantizeScalar` itself.
 * @internal
 */
import { requantizeScalar } from '../requantize.ts';

/** Per-channel requantization constants of one layer. */
export interface RequantPlan {
  readonly bias: Int32Array;
  readonly multiplier: Int32Array;
  readonly shift: Int32Array;
  /** M0·2^−n per channel (0 where the channel takes the scalar path). */
  readonly ratio: Float64Array;
  /** 1 when the channel's ratio is an exact double and the fast path applies. */
  readonly fast: Uint8Array;
  /** 2^k (LayerOutput.biasShift). */
  readonly up: number;
  readonly zeroPoint: number;
  readonly lo: number;
  readonly hi: number;
}

/** Bound of the fast path's rounded values and clamp offsets (int32 arithmetic stays exact). */
const SMALL = 2 ** 29;
/** |round(d) − d| below this: d is not within 2^−10 of a tie. */
const NEAR = 0.5 - 2 ** -10;

export function requantPlan(bias: Int32Array, multiplier: Int32Array, shift: Int32Array, biasShift: number, zeroPoint: number, lo: number, hi: number): RequantPlan {
  const channels = multiplier.length;
  const ratio = new Float64Array(channels);
  const fast = new Uint8Array(channels);
  for (let c = 0; c < channels; c++) {
    const s = shift[c]!;
    if (s >= -60 && s <= 900) {
      ratio[c] = multiplier[c]! * 2 ** -s;
      fast[c] = 1;
    }
  }
  return { bias, multiplier, shift, ratio, fast, up: 2 ** biasShift, zeroPoint, lo, hi };
}

/**
 * out[i] = clamp(requantizeScalar(acc[i]·2^k + bias[c], M0[c], n[c]) + z, lo, hi) for the values of
 * `rows` × `channels` × `positions` (channel c = (i / positions) mod channels), as the reference
 * executor's output stage.
 */
export function requantizeBlock(acc: Int32Array, rows: number, channels: number, positions: number, plan: RequantPlan, out: Int32Array): void {
  const { bias, multiplier, shift, ratio, fast, up, zeroPoint: z, lo, hi } = plan;
  // Branch-free clamp in int32 (a data-dependent branch per value costs more than the arithmetic):
  // with t = round(d), |t| < 2^29, clamp(t + z, lo, hi) = hi − max(span − max(t − loT, 0), 0),
  // loT = lo − z, span = hi − lo; valid when |lo − z| and |hi − z| are at most 2^29.
  const loT = lo - z;
  const span = hi - lo;
  const branchFree = Math.abs(loT) <= SMALL && Math.abs(hi - z) <= SMALL;
  let i = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < channels; c++) {
      const b = bias[c]!;
      const end = i + positions;
      if (fast[c] === 0 || !branchFree) {
        for (; i < end; i++) {
          const q = requantizeScalar(acc[i]! * up + b, multiplier[c]!, shift[c]!) + z;
          out[i] = q < lo ? lo : q > hi ? hi : q;
        }
        continue;
      }
      const f = ratio[c]!;
      for (; i < end; i++) {
        const v = acc[i]! * up + b;
        const d = v * f;
        const nearest = Math.floor(d + 0.5);
        const e = nearest - d;
        if (e < NEAR && e > -NEAR && d < SMALL && d > -SMALL) {
          let x = (nearest | 0) - loT;
          x &= ~(x >> 31);
          let y = span - x;
          y &= ~(y >> 31);
          out[i] = hi - y;
        } else {
          const q = requantizeScalar(v, multiplier[c]!, shift[c]!) + z;
          out[i] = q < lo ? lo : q > hi ? hi : q;
        }
      }
    }
  }
}
