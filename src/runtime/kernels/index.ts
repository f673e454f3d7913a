/**
 * Integer kernels of the runtime: int8 / int4 / int2 GEMM (int32 accumulators), binary (±1)
 * XNOR-popcount GEMM and fixed-point requantization. Each function runs the native kernel
 * (native/intgemm.cc: AVX-512 VNNI / VPOPCNTDQ, AVX2, scalar) when the addon provides it, else
 * the TypeScript reference (./reference.ts); both give bit-identical results.
 *
 * Layouts (DESIGN.md "Quantization conventions"):
 * - activations a: (M, K) row-major, Int8Array or Uint8Array (the type decides the signedness);
 * - int8 weights w: (N, K) row-major, one row per output channel;
 * - int4 / int2 weights: N rows of ceil(K/2) / ceil(K/4) bytes, first element in the low bits;
 * - binary rows: ceil(K/64)·8 bytes, bit 1 = +1, padding bits zero;
 * - c: (M, N) Int32Array, c[m, n] = Σ_k (a[m, k] − aZeroPoint)·w[n, k] (int32, wrapping).
 */
import type { NativeAddon } from '../../backend/native/addon.ts';
import { loadAddon } from '../../backend/native/load.ts';
import {
  gemmBinaryRef, gemmInt2Ref, gemmInt4Ref, gemmInt8Ref, requantizeRef, unpackWeightRows, type Activations,
} from './reference.ts';

export {
  gemmBinaryRef, gemmInt2Ref, gemmInt4Ref, gemmInt8Ref, requantizeRef, requantizeValue, roundingDivideByPOT,
  saturatingRoundingDoublingHighMul, unpackWeightRows, type Activations,
} from './reference.ts';

/** int8 weights packed once for repeated GEMMs (the VNNI panel of the native kernel). */
export interface PackedWeights {
  readonly kind: 'int8-packed';
  readonly N: number;
  readonly K: number;
  /** The original (N, K) weights (used by the reference path). */
  readonly w: Int8Array;
  /** Native VNNI panel (16-channel panels, 4 k per 32-bit lane), null without the addon. */
  readonly panel: Int8Array | null;
  /** Σ_k w[n, k] per output channel (int32, wrapping). */
  readonly rowSums: Int32Array;
}

let forceReference = false;

/** @internal Tests and benchmarks: run the TypeScript reference even when the addon is loaded. */
export function setIntKernelsReference(on: boolean): void {
  forceReference = on;
}

function native(): NativeAddon | null {
  if (forceReference) return null;
  const addon = loadAddon();
  return addon && typeof addon.gemmInt8Packed === 'function' ? addon : null;
}

/** @internal The addon when it has the native IntModel executor and the reference is not forced. */
export function nativeIntAddon(): NativeAddon | null {
  const addon = native();
  return addon && typeof addon.intPlanCreate === 'function' && typeof addon.intPlanRun === 'function' ? addon : null;
}

/**
 * Which implementation runs: `{ int8, binary }` path names, or 'reference'; `amx` is 'amx-int8'
 * when the native IntModel executor uses AMX tiles for int8 layers, else why not (e.g.
 * 'disabled by LOWBIT_AMX=0', 'CPU without AMX-INT8').
 */
export function intKernelsBackend(): { int8: string; binary: string; amx: string } {
  const addon = native();
  if (!addon?.intKernelsInfo) return { int8: 'reference', binary: 'reference', amx: 'reference kernels' };
  const info = addon.intKernelsInfo();
  return { int8: info.int8, binary: info.binary, amx: info.amx ?? 'addon without AMX support' };
}

function checkInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0) throw new Error(`bad ${name} = ${v}`);
}

/**
 * A zeroed Int8Array of `bytes` whose data starts on a 64-byte (cache line) boundary when the addon
 * can tell where it lies: the native int8 kernels read packed weights a whole line per load, and a
 * panel starting mid-line (large allocations usually start 16 bytes past a page) splits each load
 * in two. Speed only: the kernels accept any alignment.
 * @internal
 */
export function cacheAlignedBytes(bytes: number, addon: NativeAddon | null = native()): Int8Array {
  if (!addon?.alignmentPad) return new Int8Array(bytes);
  const buf = new Int8Array(bytes + 64);
  const pad = addon.alignmentPad(buf);
  return buf.subarray(pad, pad + bytes);
}

/**
 * As cacheAlignedBytes, `n` int32 values (e.g. a GEMM output: the AMX GEMM writes a large, line-aligned
 * C with streaming stores).
 * @internal
 */
export function cacheAlignedInt32(n: number, addon: NativeAddon | null = native()): Int32Array {
  const b = cacheAlignedBytes(n * 4 + 4, addon);
  const skip = (4 - (b.byteOffset % 4)) % 4; // (backing stores are at least 8-byte aligned: skip = 0)
  return new Int32Array(b.buffer, b.byteOffset + skip, n);
}

/** Packs int8 weights (N, K) once; pass the handle to gemmInt8 instead of the raw weights. */
export function packInt8Weights(w: Int8Array, N: number, K: number): PackedWeights {
  checkInt('N', N);
  checkInt('K', K);
  if (w.length < N * K) throw new Error(`packInt8Weights: ${w.length} weights, need ${N * K}`);
  const addon = native();
  const rowSums = new Int32Array(N);
  if (addon?.packInt8 && addon.int8PackedBytes) {
    const panel = cacheAlignedBytes(addon.int8PackedBytes(N, K), addon);
    addon.packInt8(w, N, K, panel, rowSums);
    return { kind: 'int8-packed', N, K, w, panel, rowSums };
  }
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s = (s + w[n * K + k]!) | 0;
    rowSums[n] = s;
  }
  return { kind: 'int8-packed', N, K, w, panel: null, rowSums };
}

/**
 * c (M, N) = Σ_k (a[m, k] − aZeroPoint)·w[n, k]. `w` is the raw (N, K) int8 matrix (packed on
 * every call) or, better for repeated calls, a `packInt8Weights` handle.
 */
export function gemmInt8(M: number, N: number, K: number, a: Activations, aZeroPoint: number, w: Int8Array | PackedWeights, c: Int32Array): void {
  const packed = w instanceof Int8Array ? null : w;
  if (packed && (packed.N !== N || packed.K !== K)) throw new Error(`gemmInt8: weights are ${packed.N}x${packed.K}, expected ${N}x${K}`);
  const addon = native();
  if (addon?.gemmInt8Packed) {
    checkInt('M', M);
    const p = packed?.panel ? packed : packInt8Weights(packed ? packed.w : (w as Int8Array), N, K);
    addon.gemmInt8Packed(M, N, K, a, aZeroPoint, p.panel!, p.rowSums, c);
    return;
  }
  gemmInt8Ref(M, N, K, a, aZeroPoint, packed ? packed.w : (w as Int8Array), c);
}

/** As gemmInt8 with int4 weights (N rows of ceil(K/2) bytes, low nibble first). */
export function gemmInt4(M: number, N: number, K: number, a: Activations, aZeroPoint: number, wPacked: Uint8Array, c: Int32Array): void {
  const addon = native();
  if (addon?.gemmLowBit) {
    addon.gemmLowBit(4, M, N, K, a, aZeroPoint, wPacked, c);
    return;
  }
  gemmInt4Ref(M, N, K, a, aZeroPoint, wPacked, c);
}

/** As gemmInt8 with int2 weights (N rows of ceil(K/4) bytes, lowest bits first). */
export function gemmInt2(M: number, N: number, K: number, a: Activations, aZeroPoint: number, wPacked: Uint8Array, c: Int32Array): void {
  const addon = native();
  if (addon?.gemmLowBit) {
    addon.gemmLowBit(2, M, N, K, a, aZeroPoint, wPacked, c);
    return;
  }
  gemmInt2Ref(M, N, K, a, aZeroPoint, wPacked, c);
}

/**
 * Low-bit weights unpacked once into an int8 handle (for repeated calls with the same int4/int2
 * weights this avoids the per-call unpacking of gemmInt4 / gemmInt2).
 */
export function packLowBitWeights(wPacked: Uint8Array, bits: 2 | 4, N: number, K: number): PackedWeights {
  return packInt8Weights(unpackWeightRows(wPacked, bits, N, K), N, K);
}

/** c (M, N) = K − 2·popcount(a_m xor w_n) on ±1 bit rows (ceil(K/64)·8 bytes each, padding zero). */
export function gemmBinary(M: number, N: number, K: number, a: Uint8Array, w: Uint8Array, c: Int32Array): void {
  const addon = native();
  if (addon?.gemmBinary) {
    addon.gemmBinary(M, N, K, a, w, c);
    return;
  }
  gemmBinaryRef(M, N, K, a, w, c);
}

/**
 * out = clamp(rdbpot(srdhm(acc·2^max(−shift,0), M0[n]), max(shift,0)) + outZeroPoint, qmin, qmax)
 * (gemmlowp / TFLite MultiplyByQuantizedMultiplier; see reference.ts for the exact rounding).
 */
export function requantize(
  acc: Int32Array, M: number, N: number, multiplier: Int32Array, shift: Int32Array,
  outZeroPoint: number, qmin: number, qmax: number, out: Int8Array | Uint8Array,
): void {
  const addon = native();
  if (addon?.requantize) {
    addon.requantize(acc, M, N, multiplier, shift, outZeroPoint, qmin, qmax, out);
    return;
  }
  requantizeRef(acc, M, N, multiplier, shift, outZeroPoint, qmin, qmax, out);
}

/** Measured vpdpbusd peak (GOP/s) on `threads` threads (zmm on 'avx512-vnni', ymm on 'avx-vnni'); null without the addon or VNNI. */
export function vnniPeakGops(threads: number, seconds = 0.2): number | null {
  const addon = loadAddon();
  const v = addon?.vnniPeakGops ? addon.vnniPeakGops(threads, seconds) : 0;
  return v > 0 ? v : null;
}

/** Measured xor + vpopcntq peak (Gbit/s) on `threads` threads; null without the addon or VPOPCNTDQ. */
export function popcountPeakGbits(threads: number, seconds = 0.2): number | null {
  const addon = loadAddon();
  const v = addon?.popcountPeakGbits ? addon.popcountPeakGbits(threads, seconds) : 0;
  return v > 0 ? v : null;
}
