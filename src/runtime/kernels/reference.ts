/**
 * Pure-TypeScript reference of the integer kernels: the living definition that the native
 * kernels (native/intgemm.cc) must match bit for bit.
 *
 * Integer semantics: every accumulator is an int32 and wraps modulo 2^32 (as the vpdpbusd /
 * vpaddd hardware does); for realistic shapes (|a − z|·|w|·K < 2^31) nothing wraps at all.
 */

/** Activations: int8 or uint8 rows (the array type says which). */
export type Activations = Int8Array | Uint8Array;

function checkLength(name: string, have: number, need: number): void {
  if (have < need) throw new Error(`${name}: buffer of ${have} elements is too small (need ${need})`);
}

function checkShape(M: number, N: number, K: number): void {
  for (const [n, v] of [['M', M], ['N', N], ['K', K]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`bad ${n} = ${v}`);
  }
}

/** c[m, n] = Σ_k (a[m, k] − aZeroPoint)·w[n, k] (int32, wrapping); w is (N, K), one row per output channel. */
export function gemmInt8Ref(M: number, N: number, K: number, a: Activations, aZeroPoint: number, w: Int8Array, c: Int32Array): void {
  checkShape(M, N, K);
  checkLength('a', a.length, M * K);
  checkLength('w', w.length, N * K);
  checkLength('c', c.length, M * N);
  const z = aZeroPoint | 0;
  const centred = new Int32Array(K);
  for (let m = 0; m < M; m++) {
    const ao = m * K;
    for (let k = 0; k < K; k++) centred[k] = (a[ao + k]! - z) | 0;
    for (let n = 0; n < N; n++) {
      const wo = n * K;
      let s = 0;
      for (let k = 0; k < K; k++) s = (s + Math.imul(centred[k]!, w[wo + k]!)) | 0;
      c[m * N + n] = s;
    }
  }
}

/** Signed `bits`-bit weights from packed rows of ceil(K·bits/8) bytes (first element in the low bits) as an int8 (N, K) matrix. */
export function unpackWeightRows(wPacked: Uint8Array, bits: 2 | 4, N: number, K: number): Int8Array {
  const perByte = 8 / bits;
  const rowBytes = Math.ceil(K / perByte);
  checkLength('wPacked', wPacked.length, N * rowBytes);
  const mask = (1 << bits) - 1;
  const sign = 1 << (bits - 1);
  const out = new Int8Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const v = (wPacked[n * rowBytes + Math.floor(k / perByte)]! >> ((k % perByte) * bits)) & mask;
      out[n * K + k] = v & sign ? v - (1 << bits) : v;
    }
  }
  return out;
}

/** As gemmInt8Ref with int4 weights, two per byte, low nibble first, rows of ceil(K/2) bytes. */
export function gemmInt4Ref(M: number, N: number, K: number, a: Activations, aZeroPoint: number, wPacked: Uint8Array, c: Int32Array): void {
  gemmInt8Ref(M, N, K, a, aZeroPoint, unpackWeightRows(wPacked, 4, N, K), c);
}

/** As gemmInt8Ref with int2 weights, four per byte, lowest bits first, rows of ceil(K/4) bytes. */
export function gemmInt2Ref(M: number, N: number, K: number, a: Activations, aZeroPoint: number, wPacked: Uint8Array, c: Int32Array): void {
  gemmInt8Ref(M, N, K, a, aZeroPoint, unpackWeightRows(wPacked, 2, N, K), c);
}

/** Popcount of a 32-bit word. */
function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/**
 * Binary (±1) GEMM: c[m, n] = Σ_k a[m, k]·w[n, k] with bit 1 = +1, bit 0 = −1, = K − 2·popcount(a_m xor w_n).
 * Rows hold ceil(K/64)·8 bytes; the padding bits past K must be zero in both operands, so their
 * xor is zero and they never count (a row with stray padding bits gives a wrong result).
 */
export function gemmBinaryRef(M: number, N: number, K: number, a: Uint8Array, w: Uint8Array, c: Int32Array): void {
  checkShape(M, N, K);
  const rowBytes = Math.ceil(K / 64) * 8;
  checkLength('a', a.length, M * rowBytes);
  checkLength('w', w.length, N * rowBytes);
  checkLength('c', c.length, M * N);
  const words = rowBytes / 4;
  const a32 = new Uint32Array(M * words);
  const w32 = new Uint32Array(N * words);
  new Uint8Array(a32.buffer).set(a.subarray(0, M * rowBytes));
  new Uint8Array(w32.buffer).set(w.subarray(0, N * rowBytes));
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let pc = 0;
      for (let i = 0; i < words; i++) pc += popcount32(a32[m * words + i]! ^ w32[n * words + i]!);
      c[m * N + n] = K - 2 * pc;
    }
  }
}

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const TWO15 = 32768;
const TWO16 = 65536;
const TWO31 = 2147483648;

/**
 * gemmlowp SaturatingRoundingDoublingHighMul(a, b) for int32 a, b: the high 32 bits of 2·a·b,
 * (a·b + (a·b ≥ 0 ? 2^30 : 1 − 2^30)) / 2^31 truncated toward zero, and INT32_MAX for
 * a = b = INT32_MIN. Positive ties round up, negative ties also round up (−1.5 → −1): that is
 * gemmlowp's exact behaviour, kept here bit for bit. Exact without BigInt (the 62-bit product is split).
 */
export function saturatingRoundingDoublingHighMul(a: number, b: number): number {
  if (a === INT32_MIN && b === INT32_MIN) return INT32_MAX;
  const nudge = (a >= 0) === (b >= 0) || a === 0 || b === 0 ? 2 ** 30 : 1 - 2 ** 30;
  // b = bh·2^16 + bl with bl in [0, 2^16): a·b = P1·2^16 + P2
  const bh = Math.floor(b / TWO16);
  const bl = b - bh * TWO16;
  const p1 = a * bh; // |p1| ≤ 2^46
  const p2 = a * bl; // |p2| < 2^47
  // p1·2^16 = q1·2^31 + r1·2^16 with r1 in [0, 2^15)
  const q1 = Math.floor(p1 / TWO15);
  const r1 = p1 - q1 * TWO15;
  const r = r1 * TWO16 + p2 + nudge; // |r| < 2^48, exact; t = a·b + nudge = q1·2^31 + r
  const fr = Math.floor(r / TWO31);
  const f = q1 + fr; // floor(t / 2^31)
  const rem = r - fr * TWO31; // t mod 2^31, in [0, 2^31)
  return f < 0 && rem !== 0 ? f + 1 : f; // truncation toward zero
}

/** gemmlowp RoundingDivideByPOT(x, e), e in [0, 31]: x / 2^e rounded to nearest, ties away from zero. */
export function roundingDivideByPOT(x: number, exponent: number): number {
  const p = 2 ** exponent;
  const q = Math.floor(x / p); // arithmetic shift
  const remainder = x - q * p; // x & mask
  const threshold = Math.floor((p - 1) / 2) + (x < 0 ? 1 : 0);
  return remainder > threshold ? q + 1 : q;
}

/**
 * One requantized value: shift > 0 is a right shift after the high multiply, shift < 0 a left
 * shift of the accumulator before it (wrapping as int32), as TFLite's
 * MultiplyByQuantizedMultiplier: rdbpot(srdhm(acc·2^max(−shift, 0), M0), max(shift, 0)).
 * Overall ≈ acc·M0·2^−(31 + shift), with two roundings (the doubling high mul, then the shift).
 */
export function requantizeValue(acc: number, multiplier: number, shift: number): number {
  const left = shift < 0 ? -shift : 0;
  const right = shift > 0 ? shift : 0;
  const x = left > 0 ? (acc * 2 ** left) | 0 : acc | 0;
  return roundingDivideByPOT(saturatingRoundingDoublingHighMul(x, multiplier | 0), right);
}

/**
 * out[m, n] = clamp(requantizeValue(acc[m, n], multiplier[n], shift[n]) + outZeroPoint, qmin, qmax).
 * multiplier: per output channel Q31 int32 (typically 2^30 ≤ M0 < 2^31); shift in [−31, 31].
 */
export function requantizeRef(
  acc: Int32Array, M: number, N: number, multiplier: Int32Array, shift: Int32Array,
  outZeroPoint: number, qmin: number, qmax: number, out: Int8Array | Uint8Array,
): void {
  checkShape(M, N, 0);
  checkLength('acc', acc.length, M * N);
  checkLength('multiplier', multiplier.length, N);
  checkLength('shift', shift.length, N);
  checkLength('out', out.length, M * N);
  const lo = out instanceof Int8Array ? -128 : 0;
  const hi = out instanceof Int8Array ? 127 : 255;
  if (!(qmin <= qmax) || qmin < lo || qmax > hi) throw new Error(`requantize: [${qmin}, ${qmax}] does not fit the output type`);
  for (let n = 0; n < N; n++) {
    const s = shift[n]!;
    if (s < -31 || s > 31) throw new Error(`requantize: shift ${s} out of [-31, 31]`);
  }
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const v = requantizeValue(acc[m * N + n]!, multiplier[n]!, shift[n]!) + outZeroPoint;
      out[m * N + n] = v < qmin ? qmin : v > qmax ? qmax : v;
    }
  }
}
