/**
 * The WebAssembly SIMD128 GEMM against a plain int32 loop (products summed with wrapping int32
 * additions, as the reference kernels): random shapes with odd K, pixel counts and channel
 * counts, saturated int8 weights and int16 activations (K large enough that the sums wrap),
 * accumulation into the output and shifted x views (the direct convolution's taps); the pad
 * kernels against a plain loop over the pair-plane layout.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../tensor/index.ts';
import { requantizeScalar, quantizeMultiplier } from '../requantize.ts';
import { gemmModuleBytes, packInt16Weights, REQUANT_UNSURE, requantConstants, WasmGemm, wasmSimdAvailable } from './gemm.ts';
import { layoutModuleBytes } from './layout.ts';

/** out[o, p] = Σ_k w[o·K + k]·x[k·stride + shift + p] wrapped to int32. */
function reference(w: Int8Array, x: Int16Array, O: number, K: number, P: number, stride: number, shift: number): Int32Array {
  const out = new Int32Array(O * P);
  for (let o = 0; o < O; o++) {
    for (let p = 0; p < P; p++) {
      let s = 0;
      for (let k = 0; k < K; k++) s = (s + w[o * K + k]! * x[k * stride + shift + p]!) | 0;
      out[o * P + p] = s;
    }
  }
  return out;
}

/** Writes x [K, stride] into the kernel's [K2, stride, 2] layout; the odd padding row gets junk. */
function place(i16: Int16Array, at: number, x: Int16Array, K: number, stride: number, junk: number): void {
  for (let k = 0; k < K; k++) for (let p = 0; p < stride; p++) i16[at + (k >> 1) * 2 * stride + 2 * p + (k & 1)] = x[k * stride + p]!;
  if (K % 2 === 1) for (let p = 0; p < stride; p++) i16[at + (K >> 1) * 2 * stride + 2 * p + 1] = junk;
}

describe('WebAssembly SIMD128 GEMM', () => {
  it('the kernel module validates in this engine (Node has SIMD128)', () => {
    assert.ok(wasmSimdAvailable());
    // each module under the 4 KB older Chromium compiles synchronously on the main thread
    for (const bytes of [gemmModuleBytes(), layoutModuleBytes()]) assert.ok(bytes.length < 4096, `${bytes.length} bytes`);
  });

  it('random shapes (odd K, P, channels), int8 weights, centred-byte and full int16 activations', () => {
    const rng = new Rng(5);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    for (let trial = 0; trial < 30; trial++) {
      const O = int(1, 13), K = int(1, 41), P = int(1, 37);
      const saturate = trial % 3 === 0;
      const xMax = trial % 2 === 0 ? 255 : 32767;
      const w = Int8Array.from({ length: O * K }, () => (saturate ? (rng.uniform() < 0.5 ? -128 : 127) : int(-128, 127)));
      const x = Int16Array.from({ length: K * P }, () => (saturate ? (rng.uniform() < 0.5 ? -xMax : xMax) : int(-xMax, xMax)));
      const packed = packInt16Weights(w, 0, O, K);
      const at = gemm.upload(packed);
      const Pp = Math.ceil(P / 8) * 8;
      const padded = new Int16Array(K * Pp);
      for (let k = 0; k < K; k++) for (let p = 0; p < Pp; p++) padded[k * Pp + p] = p < P ? x[k * P + p]! : int(-32768, 32767);
      const { i16, x: xi } = gemm.operands(packed.K2, Pp, packed.blocks);
      place(i16, xi, padded, K, Pp, int(-32768, 32767));
      gemm.gemm(packed, at, Pp);
      const { i32, out } = gemm.operands(packed.K2, Pp, packed.blocks);
      const ref = reference(w, padded, O, K, Pp, Pp, 0);
      for (let o = 0; o < O; o++) for (let p = 0; p < P; p++) assert.equal(i32[out + o * Pp + p], ref[o * Pp + p], `trial ${trial} (O ${O}, K ${K}, P ${P}): out[${o}, ${p}]`);
    }
  });

  it('sums past 2^31 wrap as int32 (K = 1,023 of 128·32,767)', () => {
    const gemm = WasmGemm.create()!;
    const O = 3, K = 1023, P = 9, Pp = 16;
    const w = Int8Array.from({ length: O * K }, (_, i) => (i % 11 === 0 ? 127 : -128)); // mostly −128
    const x = Int16Array.from({ length: K * Pp }, (_, i) => (i % 13 === 0 ? 32767 : -32767)); // mostly (−128)·(−32,767) > 0
    const packed = packInt16Weights(w, 0, O, K);
    const at = gemm.upload(packed);
    const { i16, x: xi } = gemm.operands(packed.K2, Pp, packed.blocks);
    place(i16, xi, x, K, Pp, 0);
    gemm.gemm(packed, at, Pp);
    const { i32, out } = gemm.operands(packed.K2, Pp, packed.blocks);
    const ref = reference(w, x, O, K, Pp, Pp, 0);
    let wrapped = 0;
    for (let o = 0; o < O; o++) {
      for (let p = 0; p < P; p++) {
        assert.equal(i32[out + o * Pp + p], ref[o * Pp + p]);
        let exact = 0;
        for (let k = 0; k < K; k++) exact += w[o * K + k]! * x[k * Pp + p]!;
        if (exact !== ref[o * Pp + p]) wrapped++;
      }
    }
    assert.ok(wrapped > 0, 'the test must reach int32 wrapping');
  });

  it('strided weights, shifted x views and accumulation (direct-convolution taps)', () => {
    const rng = new Rng(9);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    // weights [O, C, T] (T taps); tap t uses w[o, c, t] against x rows shifted by shifts[t]
    const O = 6, C = 9, T = 3, Pp = 24, shifts = [0, 1, 7];
    const stride = Pp + 7;
    const w = Int8Array.from({ length: O * C * T }, () => int(-128, 127));
    const x = Int16Array.from({ length: C * stride }, () => int(-255, 255));
    const taps = [0, 1, 2].map((t) => packInt16Weights(w, t, O, C, C * T, T));
    const at = taps.map((p) => gemm.upload(p));
    const { i16, x: xi } = gemm.operands(taps[0]!.K2, Pp, taps[0]!.blocks, stride);
    place(i16, xi, x, C, stride, 77);
    for (let t = 0; t < T; t++) gemm.gemm(taps[t]!, at[t]!, Pp, { xStride: stride, xShift: shifts[t], accumulate: t > 0 });
    const { i32, out } = gemm.operands(taps[0]!.K2, Pp, taps[0]!.blocks, stride);
    for (let o = 0; o < O; o++) {
      for (let p = 0; p < Pp; p++) {
        let s = 0;
        for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) s = (s + w[(o * C + c) * T + t]! * x[c * stride + shifts[t]! + p]!) | 0;
        assert.equal(i32[out + o * Pp + p], s, `out[${o}, ${p}]`);
      }
    }
  });

  it('requantize: rows of random geometry to their compact layout; sure values equal clamp(requantizeScalar(acc·2^k + bias) + z), the unsure ones listed by source offset', () => {
    const rng = new Rng(11);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    let unsure = 0, sure = 0;
    for (let trial = 0; trial < 40; trial++) {
      const rows = int(1, 5), oh = int(1, 6), ow = int(1, 9), Wp = ow + int(0, 3);
      const Pp = (oh - 1) * Wp + ow + int(0, 9);
      // trial % 4 === 0: ratio 2^−s exactly and small accumulators, so many products are exact ties;
      // trial % 4 === 2: ratio 2^−16 and accumulators (2j + 1)·2^15 ± 1, 2^−16 from a tie (the
      // kernel's sure path must round them: its margin is 2^−20)
      const exactTies = trial % 4 === 0, nearTies = trial % 4 === 2;
      const biasShift = nearTies ? 0 : int(0, 2), up = 2 ** biasShift;
      // per row its own multiplier, shift and bias (a row given another's constants would show)
      // trial % 8 === 7: row 0's bias·ratio is past 2^26, so requantConstants leaves the whole row unsure
      const hugeBias = trial % 8 === 7;
      const row = Array.from({ length: rows }, (_, o) => {
        // (ratios 2^−20 … 1: rows bounded (2^31·|F| + |C| < 2^26, no range check) and not)
        const { multiplier, shift } = exactTies ? { multiplier: 2 ** 30, shift: 30 + int(1, 4) } : nearTies ? { multiplier: 2 ** 30, shift: 46 } : hugeBias && o === 0 ? quantizeMultiplier(0.5) : quantizeMultiplier(2 ** -(int(0, 20) + rng.uniform()));
        return { multiplier, shift, bias: nearTies ? 0 : hugeBias && o === 0 ? 2 ** 31 - 1 : int(-5000, 5000) };
      });
      // trial % 8 === 5: clamp offsets far past 2^29 (e.g. the [0, 2^30] range of an add feeding a pool)
      const wideClamp = trial % 8 === 5;
      const [lo, hi] = wideClamp ? [-(2 ** 31) + 200, 2 ** 31 - 201] : trial % 2 === 0 ? [0, 255] : [-128, 127];
      const z = wideClamp ? int(-100, 100) : int(lo, hi);
      const accOf = (i: number): number => (exactTies ? int(-300, 300) : nearTies ? (2 * int(-200, 200) + 1) * 2 ** 15 + (i % 2 === 0 ? 1 : -1) : i % 16 === 0 ? int(-(2 ** 31), 2 ** 31 - 1) : int(-(2 ** 20), 2 ** 20));
      const consts = gemm.uploadF64(requantConstants(row.map((r) => r.bias), row.map((r) => r.multiplier * 2 ** -r.shift), up));
      const { i32, out, q, list } = gemm.operands(1, Math.ceil((rows * Pp) / 8) * 8, 1);
      // every source cell, also the junk columns and the 3 read past the end, holds an accumulator
      for (let i = 0; i < rows * Pp + 3; i++) i32[out + i] = accOf(i);
      const total = rows * oh * ow;
      i32.fill(777, q + total + 3, q + total + 8); // past the allowed overshoot
      i32.fill(-1, list, list + total);
      const listed = gemm.requantize(out, q, rows, oh, ow, Wp, Pp, consts, lo - z, hi - z, z, list);
      const unsureAt: number[] = [];
      let here = 0;
      for (let o = 0; o < rows; o++) {
        for (let oy = 0; oy < oh; oy++) {
          for (let ox = 0; ox < ow; ox++) {
            const from = o * Pp + oy * Wp + ox;
            const got = i32[q + (o * oh + oy) * ow + ox]!;
            if (got === REQUANT_UNSURE) { here++; unsureAt.push(from); continue; }
            const { multiplier, shift, bias } = row[o]!;
            const r = requantizeScalar(i32[out + from]! * up + bias, multiplier, shift) + z;
            assert.equal(got, Math.min(hi, Math.max(lo, r)), `trial ${trial}: row ${o} (${oy}, ${ox}) acc ${i32[out + from]}`);
            sure++;
          }
        }
      }
      // the list names exactly the unsure values (none of the junk columns), in order
      assert.equal(listed, here);
      assert.deepEqual([...i32.subarray(list, list + listed)], unsureAt);
      assert.deepEqual([...i32.subarray(q + total + 3, q + total + 8)], Array<number>(5).fill(777), `trial ${trial}: wrote past the overshoot`);
      if (nearTies) assert.equal(here, 0, `trial ${trial}: values 2^−16 from a tie are sure`);
      if (hugeBias) for (let i = 0; i < oh * ow; i++) assert.equal(i32[q + i], REQUANT_UNSURE, `trial ${trial}: row 0 unsure`);
      unsure += here;
    }
    assert.ok(unsure > 20 && sure > 1000, `both paths exercised (${sure} sure, ${unsure} unsure)`);
    const consts = gemm.uploadF64(requantConstants([0], [1], 1));
    const { out, q, list } = gemm.operands(1, 8, 1);
    assert.throws(() => gemm.requantize(out, q, 1, 2, 5, 4, 8, consts, 0, 255, 0, list), /bad geometry/);
    assert.throws(() => gemm.requantize(out, q, 1, 1, 8, 8, 8, consts, -(2 ** 31) - 1, 255, 0, list), /int32/);
    assert.throws(() => gemm.requantize(out, out + 4, 1, 1, 8, 8, 8, consts, 0, 255, 0, list), /overlap/);
  });

  it('pad: padded, shifted pair rows of random odd shapes, every mode, values outside the byte range wrap', () => {
    const rng = new Rng(13);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    for (let trial = 0; trial < 40; trial++) {
      const mode = (['uint8', 'int8', 'sign'] as const)[trial % 3]!;
      const channels = int(1, 7), h = int(1, 9), w = int(1, 9), ph = int(0, 2), pw = int(0, 2);
      // fold > 1: row c·fold + f is channel c shifted by f·dw (shifts past the first cell drop cells)
      const fold = trial % 2 === 0 ? 1 : int(2, 5), dw = int(0, 3);
      const Wp = w + 2 * pw, S = (h + 2 * ph) * Wp + int(0, 11);
      const zx = mode === 'sign' ? 0 : mode === 'uint8' ? int(0, 255) : int(-128, 127);
      const pad = int(-300, 300);
      // mostly in-range bytes, some anywhere in int32 (the reference wraps them into the byte type)
      const x = Int32Array.from({ length: channels * h * w }, (_, i) => (i % 7 === 0 ? int(-(2 ** 31), 2 ** 31 - 1) : i % 5 === 0 ? int(-1000, 1000) : int(-128, 255)));
      const rows = channels * fold, K2 = Math.ceil(rows / 2);
      // the input images in the arena (below the scratch region where x is built)
      const extra = gemm.arena(x.length);
      const { i16, i32, x: xi, out } = gemm.operands(K2, 8, 1, S);
      // junk everywhere in x, and a guard in the region after it (the pairs are filled 16 bytes at a time)
      i16.fill(12345, xi, xi + K2 * S * 2);
      i32.fill(777, out, out + 8);
      i32.set(x, extra);
      gemm.pad(mode, extra, channels, fold, dw, h, w, Wp, ph, pw, S, pad, zx);
      assert.deepEqual([...i32.subarray(out, out + 8)], Array<number>(8).fill(777), `trial ${trial}: wrote past x`);
      const operand = (v: number): number => (mode === 'sign' ? (v >= 0 ? 1 : -1) : mode === 'uint8' ? (v & 255) - zx : ((v << 24) >> 24) - zx);
      for (let r = 0; r < K2 * 2; r++) {
        const c = Math.floor(r / fold), shift = (r % fold) * dw;
        for (let q = 0; q < S; q++) {
          const cell = q + shift;
          const y = Math.floor(cell / Wp) - ph, xx = (cell % Wp) - pw;
          const want = r >= rows ? pad : y >= 0 && y < h && xx >= 0 && xx < w ? operand(x[(c * h + y) * w + xx]!) : pad;
          assert.equal(i16[xi + (r >> 1) * S * 2 + 2 * q + (r & 1)], want, `trial ${trial} (${mode}, fold ${fold}, dw ${dw}): row ${r}, cell ${q}`);
        }
      }
    }
    const extra = gemm.arena(16);
    const { x: xi } = gemm.operands(1, 8, 1, 16);
    assert.throws(() => gemm.pad('uint8', extra, 1, 1, 1, 4, 4, 4, 1, 0, 16, 0, 0), /bad geometry/);
    assert.throws(() => gemm.pad('uint8', xi / 2, 1, 1, 1, 2, 2, 4, 1, 1, 16, 0, 0), /overlapping x/);
  });

  it('im2col: patches of random geometry (stride, padding, dilation, odd sizes), every mode, wrapping values', () => {
    const rng = new Rng(17);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    for (let trial = 0; trial < 40; trial++) {
      const mode = (['uint8', 'int8', 'sign'] as const)[trial % 3]!;
      const cg = int(1, 5), h = int(1, 9), w = int(1, 9), kh = int(1, 3), kw = int(1, 3), sh = int(1, 3), sw = int(1, 3);
      const ph = int(0, 2), pw = int(0, 2), dh = int(1, 2), dw = int(1, 2);
      const oh = Math.floor((h + 2 * ph - dh * (kh - 1) - 1) / sh) + 1, ow = Math.floor((w + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
      if (oh < 1 || ow < 1) continue;
      const P = oh * ow, Pp = Math.ceil(P / 8) * 8, K = cg * kh * kw, K2 = Math.ceil(K / 2);
      const zx = mode === 'sign' ? 0 : mode === 'uint8' ? int(0, 255) : int(-128, 127);
      const pad = int(-300, 300);
      const x = Int32Array.from({ length: cg * h * w }, (_, i) => (i % 7 === 0 ? int(-(2 ** 31), 2 ** 31 - 1) : i % 5 === 0 ? int(-1000, 1000) : int(-128, 255)));
      const extra = gemm.arena(x.length);
      const { i16, i32, x: xi } = gemm.operands(K2, Pp, 1, Pp);
      i16.fill(12345, xi, xi + K2 * Pp * 2);
      i32.set(x, extra);
      gemm.im2col(mode, extra, cg, h, w, [kh, kw], [sh, sw], [ph, pw], [dh, dw], oh, ow, Pp, pad, zx);
      const operand = (v: number): number => (mode === 'sign' ? (v >= 0 ? 1 : -1) : mode === 'uint8' ? (v & 255) - zx : ((v << 24) >> 24) - zx);
      for (let k = 0; k < 2 * K2; k++) {
        const c = Math.floor(k / (kh * kw)), ky = Math.floor(k / kw) % kh, kx = k % kw;
        for (let p = 0; p < Pp; p++) {
          const iy = Math.floor(p / ow) * sh - ph + ky * dh, ix = (p % ow) * sw - pw + kx * dw;
          const want = k >= K || p >= P ? 12345 : iy >= 0 && iy < h && ix >= 0 && ix < w ? operand(x[(c * h + iy) * w + ix]!) : pad;
          assert.equal(i16[xi + (k >> 1) * 2 * Pp + 2 * p + (k & 1)], want, `trial ${trial} (${mode}): row ${k}, pixel ${p}`);
        }
      }
    }
    const extra = gemm.arena(16);
    const { x: xi } = gemm.operands(1, 8, 1, 8);
    assert.throws(() => gemm.im2col('int8', extra, 1, 4, 4, [1, 1], [1, 1], [0, 0], [1, 1], 4, 4, 8, 0, 0), /bad geometry/);
    assert.throws(() => gemm.im2col('int8', xi / 2, 1, 2, 2, [1, 1], [1, 1], [0, 0], [1, 1], 2, 2, 8, 0, 0), /overlapping x/);
  });

  it('compact: valid outputs of random row geometries packed contiguously, both region orders', () => {
    const rng = new Rng(19);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    for (let trial = 0; trial < 40; trial++) {
      const rows = int(1, 9), oh = int(1, 7), ow = int(1, 9), Wp = ow + int(0, 3);
      const Pp = Math.ceil((oh * Wp) / 8) * 8;
      const { i32, out, q } = gemm.operands(1, Pp, Math.ceil(rows / 4));
      const [src, dst] = trial % 2 === 0 ? [out, q] : [q, out];
      for (let i = 0; i < 4 * Math.ceil(rows / 4) * Pp; i++) i32[src + i] = int(-(2 ** 31), 2 ** 31 - 1);
      const want: number[] = [];
      for (let o = 0; o < rows; o++) for (let oy = 0; oy < oh; oy++) for (let ox = 0; ox < ow; ox++) want.push(i32[src + o * Pp + oy * Wp + ox]!);
      gemm.compact(src, dst, rows, oh, ow, Wp, Pp);
      assert.deepEqual([...i32.subarray(dst, dst + rows * oh * ow)], want, `trial ${trial}: rows ${rows}, ${oh}x${ow}, Wp ${Wp}`);
    }
    const { out } = gemm.operands(1, 8, 1);
    assert.throws(() => gemm.compact(out, out + 4, 1, 2, 4, 4, 8), /overlap/);
    assert.throws(() => gemm.compact(out, out + 32, 1, 2, 4, 3, 8), /bad geometry/);
  });

  it('rejects bad geometry', () => {
    const gemm = WasmGemm.create()!;
    const packed = packInt16Weights(new Int8Array(8), 0, 2, 4);
    const at = gemm.upload(packed);
    gemm.operands(packed.K2, 8, packed.blocks);
    assert.throws(() => gemm.gemm(packed, at, 12), /multiple of 8/);
    assert.throws(() => gemm.gemm(packed, at, 8, { xShift: 3 }), /bad x geometry/);
    assert.throws(() => gemm.gemm(packed, at, 1 << 20), /not reserved/);
  });
});
