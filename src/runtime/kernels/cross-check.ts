/**
 * Cross-check of the dispatched integer kernels against the TypeScript reference (exact
 * equality) on random odd shapes. Used by kernels.test.ts, in-process and in child processes
 * with LOWBIT_ISA=avx2 / scalar (the native ISA is fixed when the addon loads).
 * Run directly: `node --import tsx src/runtime/kernels/cross-check.ts [quick]` (exit code 1 on a mismatch).
 */
import { fileURLToPath } from 'node:url';
import {
  gemmBinary, gemmBinaryRef, gemmInt2, gemmInt2Ref, gemmInt4, gemmInt4Ref, gemmInt8, gemmInt8Ref, intKernelsBackend,
  packInt8Weights, packLowBitWeights, requantize, requantizeRef,
} from './index.ts';

export const SIZES = [1, 3, 17, 64, 65, 129, 400] as const;

/** Deterministic xorshift32 generator. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** Shapes covering every size on every axis: each (M, N, K) from a Latin-square walk plus extremes. */
export function shapes(quick: boolean): [number, number, number][] {
  const out: [number, number, number][] = [];
  const n = SIZES.length;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < (quick ? 2 : n); j++) out.push([SIZES[i]!, SIZES[(i + j) % n]!, SIZES[(i + 2 * j + 1) % n]!]);
  }
  out.push([400, 400, 400], [1, 1, 1], [129, 65, 17]);
  return out;
}

function randBytes(next: () => number, n: number, signed: boolean): Int8Array | Uint8Array {
  const out = signed ? new Int8Array(n) : new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = next() & 0xff;
  return out;
}

function firstDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  if (x.length !== y.length) return -2;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

/** Runs all checks; returns a list of failure messages (empty = all equal). */
export function crossCheck(quick = false, seed = 1234): string[] {
  const fails: string[] = [];
  const next = rng(seed);
  const report = (what: string, shape: number[], x: ArrayLike<number>, y: ArrayLike<number>): void => {
    const d = firstDiff(x, y);
    if (d !== -1) fails.push(`${what} ${shape.join('x')}: first difference at ${d}: ${x[d]} vs ${y[d]}`);
  };
  for (const [M, N, K] of shapes(quick)) {
    for (const signed of [false, true]) {
      const a = randBytes(next, M * K, signed);
      const w = randBytes(next, N * K, true) as Int8Array;
      const zero = signed ? (next() % 256) - 128 : next() % 256;
      const want = new Int32Array(M * N);
      gemmInt8Ref(M, N, K, a, zero, w, want);
      const got = new Int32Array(M * N).fill(7);
      gemmInt8(M, N, K, a, zero, w, got);
      report(`gemmInt8 (${signed ? 'int8' : 'uint8'} a, z=${zero})`, [M, N, K], got, want);
      const got2 = new Int32Array(M * N).fill(-3);
      gemmInt8(M, N, K, a, zero, packInt8Weights(w, N, K), got2);
      report('gemmInt8 (packed handle)', [M, N, K], got2, want);
      for (const bits of [4, 2] as const) {
        const wp = randBytes(next, N * Math.ceil((K * bits) / 8), false) as Uint8Array;
        const want4 = new Int32Array(M * N);
        (bits === 4 ? gemmInt4Ref : gemmInt2Ref)(M, N, K, a, zero, wp, want4);
        const got4 = new Int32Array(M * N).fill(11);
        (bits === 4 ? gemmInt4 : gemmInt2)(M, N, K, a, zero, wp, got4);
        report(`gemmInt${bits}`, [M, N, K], got4, want4);
        const got5 = new Int32Array(M * N);
        gemmInt8(M, N, K, a, zero, packLowBitWeights(wp, bits, N, K), got5);
        report(`gemmInt8 (int${bits} handle)`, [M, N, K], got5, want4);
      }
    }
    // binary: K in bits, padding bits zero
    const rowBytes = Math.ceil(K / 64) * 8;
    const bits = (rows: number): Uint8Array => {
      const out = new Uint8Array(rows * rowBytes);
      for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) if (next() & 1) out[r * rowBytes + (k >> 3)]! |= 1 << (k & 7);
      return out;
    };
    for (const Kb of [K, K * 13]) {
      const KK = Kb;
      const rb = Math.ceil(KK / 64) * 8;
      const mk = (rows: number): Uint8Array => {
        const out = new Uint8Array(rows * rb);
        for (let r = 0; r < rows; r++) for (let k = 0; k < KK; k++) if (next() & 1) out[r * rb + (k >> 3)]! |= 1 << (k & 7);
        return out;
      };
      const ab = KK === K ? bits(M) : mk(M);
      const wb = KK === K ? bits(N) : mk(N);
      const wantB = new Int32Array(M * N);
      gemmBinaryRef(M, N, KK, ab, wb, wantB);
      const gotB = new Int32Array(M * N).fill(5);
      gemmBinary(M, N, KK, ab, wb, gotB);
      report('gemmBinary', [M, N, KK], gotB, wantB);
    }
    // requantize on random accumulators, including extremes
    const acc = new Int32Array(M * N);
    for (let i = 0; i < acc.length; i++) {
      const r = next() % 8;
      acc[i] = r === 0 ? -2147483648 : r === 1 ? 2147483647 : r < 4 ? (next() | 0) : (next() % 200001) - 100000;
    }
    const mult = new Int32Array(N);
    const shift = new Int32Array(N);
    for (let n = 0; n < N; n++) {
      const r = next() % 6;
      mult[n] = r === 0 ? -2147483648 : r === 1 ? (next() | 0) : 1073741824 + (next() % 1073741823);
      shift[n] = (next() % 40) - 8;
      if (shift[n]! > 31) shift[n] = 31;
    }
    for (const signed of [true, false]) {
      const zOut = signed ? (next() % 21) - 10 : next() % 256;
      const qmin = signed ? -127 : 0;
      const qmax = signed ? 127 : 255;
      const want = signed ? new Int8Array(M * N) : new Uint8Array(M * N);
      const got = signed ? new Int8Array(M * N) : new Uint8Array(M * N);
      requantizeRef(acc, M, N, mult, shift, zOut, qmin, qmax, want);
      requantize(acc, M, N, mult, shift, zOut, qmin, qmax, got);
      report(`requantize (${signed ? 'int8' : 'uint8'})`, [M, N], got, want);
    }
  }
  return fails;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const fails = crossCheck(process.argv.includes('quick'));
  const backend = intKernelsBackend();
  if (fails.length > 0) {
    console.error(`${backend.int8}/${backend.binary}: ${fails.length} mismatches\n${fails.slice(0, 20).join('\n')}`);
    process.exit(1);
  }
  console.log(JSON.stringify({ ok: true, ...backend }));
}
