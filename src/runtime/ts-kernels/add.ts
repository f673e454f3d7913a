/**
 * The integer add node for the fast TypeScript executor: out = clamp(z + round(((a − z_a)·M_a +
 * (b − z_b)·M_b)·2^−n), lo, hi), the same arithmetic as `addRescaled` (../intmodel.ts) inlined in
 * one loop (its double path; values that would need its BigInt path call it).
 * @internal
 */
import { addRescaled } from '../intmodel.ts';
import { REQUANT_UNSURE, type WasmGemm } from '../wasm/gemm.ts';

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

/** Values per call of the wasm add kernel (bounds its memory). */
const WASM_CHUNK = 1 << 16;

/**
 * addInts with the WebAssembly SIMD128 add kernel (../wasm/gemm.ts: the same double arithmetic
 * in f64x2); the values it leaves unsure, and layers whose clamp range it cannot take, go through
 * addInts itself. Same integers as addInts.
 */
export function addIntsWasm(
  gemm: WasmGemm, a: Int32Array, b: Int32Array, za: number, zb: number, ma: number, mb: number, shift: number,
  z: number, lo: number, hi: number, out: Int32Array,
): void {
  const loT = lo - z, hiT = hi - z;
  // the kernel clamps sums below 2^29 in int32: any int32 offsets will do
  if (!(loT >= -(2 ** 31) && hiT <= 2 ** 31 - 1) || lo <= REQUANT_UNSURE || out.length < 4) {
    addInts(a, b, za, zb, ma, mb, shift, z, lo, hi, out);
    return;
  }
  const half = shift === 0 ? 0 : 2 ** (shift - 1);
  const inv = 2 ** -shift;
  for (let s0 = 0; s0 < out.length; s0 += WASM_CHUNK) {
    const m = Math.min(WASM_CHUNK, out.length - s0);
    const m4 = Math.ceil(m / 4) * 4;
    const { i32, a: ai, b: bi, out: oi } = gemm.addOperands(m4);
    i32.set(a.subarray(s0, s0 + m), ai);
    i32.set(b.subarray(s0, s0 + m), bi);
    i32.fill(za, ai + m, ai + m4); // the tail lanes add zero
    i32.fill(zb, bi + m, bi + m4);
    const sure = gemm.add(m4, za, zb, ma, mb, half, inv, loT, hiT, z);
    out.set(i32.subarray(oi, oi + m), s0);
    if (sure) continue;
    for (let i = s0; i < s0 + m; i++) {
      if (out[i] === REQUANT_UNSURE) addInts(a.subarray(i, i + 1), b.subarray(i, i + 1), za, zb, ma, mb, shift, z, lo, hi, out.subarray(i, i + 1));
    }
  }
}
