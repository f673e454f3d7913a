/**
 * The integer add node for the fast TypeScript executor: out = clamp(z + round(((a − z_a)·M_a +
 * (b − z_b)·M_b)·2^−n), lo, hi), the same arithmetic as `addRescaled` (../intmodel.ts) inlined in
 * one loop (its double path; values that would need its BigInt path call it).
 * @internal
 */
import { addRescaled } from '../intmodel.ts';

const LIMIT = 2 ** 21;

export function addInts(
  a: Int32Array, b: Int32Array, za: number, zb: number, ma: number, mb: number, shift: number,
  z: number, lo: number, hi: number, out: Int32Array,
): void {
  const half = shift === 0 ? 0 : 2 ** (shift - 1);
  const inv = 2 ** -shift;
  for (let i = 0; i < out.length; i++) {
    const da = a[i]! - za;
    const db = b[i]! - zb;
    let r: number;
    if (da < LIMIT && da > -LIMIT && db < LIMIT && db > -LIMIT) {
      const t = da * ma + db * mb; // |t| < 2^53: exact
      if (shift === 0) r = t;
      else {
        const m = Math.floor(((t < 0 ? -t : t) + half) * inv);
        r = t < 0 ? 0 - m : m;
      }
    } else r = addRescaled(da, ma, db, mb, shift);
    r += z;
    out[i] = r < lo ? lo : r > hi ? hi : r;
  }
}
