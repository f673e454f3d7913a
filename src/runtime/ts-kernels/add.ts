/**
 * The integer add node for the fast TypeScript executor: out = clamp(z + round(((a − z_a)·M_a +
 * (b − z_b)·M_b)·2^−n), lo, hi), the same arithmetic as `addRescaled` (../intmodel.ts) inlined in
 * one loop (its double path; values that would need its BigInt path call it).
 * @internal
 */
import { addRescaled } from '../intmodel.ts';

const LIMIT = 2 ** 21;
/** Bound of the rounded sums and clamp offsets handled in int32 without branches. */
const SMALL = 2 ** 29;

export function addInts(
  a: Int32Array, b: Int32Array, za: number, zb: number, ma: number, mb: number, shift: number,
  z: number, lo: number, hi: number, out: Int32Array,
): void {
  // shift 0: floor((|t| + 0)·1) = |t|, the sum itself, as addRescaled returns it.
  const half = shift === 0 ? 0 : 2 ** (shift - 1);
  const inv = 2 ** -shift;
  // Branch-free clamp as in ./requantize.ts: clamp(r + z, lo, hi) = hi − max(span − max(r − loT, 0), 0).
  const loT = lo - z;
  const span = hi - lo;
  const branchFree = Math.abs(loT) <= SMALL && Math.abs(hi - z) <= SMALL;
  for (let i = 0; i < out.length; i++) {
    const da = a[i]! - za;
    const db = b[i]! - zb;
    let r: number;
    if (da < LIMIT && da > -LIMIT && db < LIMIT && db > -LIMIT) {
      const t = da * ma + db * mb; // |t| < 2^53: exact
      const m = Math.floor((Math.abs(t) + half) * inv);
      if (branchFree && m < SMALL) {
        const negative = +(t < 0);
        let x = (m | 0) * (1 - 2 * negative) - loT;
        x &= ~(x >> 31);
        let y = span - x;
        y &= ~(y >> 31);
        out[i] = hi - y;
        continue;
      }
      r = t < 0 ? 0 - m : m;
    } else r = addRescaled(da, ma, db, mb, shift);
    r += z;
    out[i] = r < lo ? lo : r > hi ? hi : r;
  }
}
