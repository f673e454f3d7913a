/**
 * The wasm quantize and pooling kernels (./layout.ts through WasmGemm) against the reference
 * executor's own functions, bit for bit: the quantize step (clamp(roundHalfEven(x / s) + z)),
 * ops.ts maxPoolInt and avgPoolInt.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../tensor/index.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { avgPoolInt, maxPoolInt } from '../ops.ts';
import { WasmGemm } from './gemm.ts';

const INT32_MIN = -(2 ** 31), INT32_MAX = 2 ** 31 - 1;

/** The reference quantize step for one value, stored as an Int32Array stores it. */
function quantizeRef(x: number, scale: number, z: number, qmin: number, qmax: number): number {
  const q = roundHalfEven(x / scale) + z;
  return Int32Array.of(q < qmin ? qmin : q > qmax ? qmax : q)[0]!;
}

describe('wasm quantize kernel', () => {
  it('equals clamp(roundHalfEven(x / s) + z) on ties, saturation, NaN, ±Infinity, −0 and odd counts', () => {
    const rng = new Rng(23);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    let ties = 0;
    for (let trial = 0; trial < 40; trial++) {
      const n = int(1, 67);
      // power-of-two scales make x / s exact, so k + ½ is an exact tie
      const pow2 = trial % 2 === 0;
      const scale = pow2 ? 2 ** int(-8, 2) : Math.fround(0.001 + rng.uniform() * 0.2);
      const [qmin, qmax] = trial % 5 === 4 ? [INT32_MIN, INT32_MAX] : trial % 3 === 0 ? [-128, 127] : trial % 3 === 1 ? [0, 255] : [-8, 7];
      const z = trial % 5 === 4 ? int(-1000, 1000) : int(qmin, qmax);
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const kind = i % 9;
        x[i] = kind === 0 ? (int(-300, 300) + 0.5) * scale // exact ties when scale is a power of two
          : kind === 1 ? (rng.uniform() < 0.5 ? -1 : 1) * 1e30 // saturates (and past 2^31 in int32 ranges)
          : kind === 2 ? [NaN, Infinity, -Infinity, -0, 0][int(0, 4)]!
          : kind === 3 ? int(-(2 ** 24), 2 ** 24) * scale
          : (rng.uniform() - 0.5) * 400 * scale;
      }
      const dst = gemm.arena(Math.ceil(n / 4) * 4);
      const src = gemm.scratch(Math.ceil(n / 4) * 16) / 4;
      gemm.float32View().set(x, src);
      gemm.quantize(src, dst, n, scale, z, qmin, qmax);
      const got = gemm.int32View();
      for (let i = 0; i < n; i++) {
        const want = quantizeRef(x[i]!, scale, z, qmin, qmax);
        assert.equal(got[dst + i], want, `trial ${trial}: x ${x[i]} / ${scale} + ${z} in [${qmin}, ${qmax}]`);
        if (pow2 && i % 9 === 0) ties++;
      }
    }
    assert.ok(ties > 50, `exact ties exercised (${ties})`);
    assert.throws(() => gemm.quantize(0, 0, 0, 1, 0, 0, 255), /outside memory/);
    const dst = gemm.arena(8);
    assert.throws(() => gemm.quantize(dst + 2, dst, 8, 1, 0, 0, 255), /overlap/);
    assert.throws(() => gemm.quantize(dst, dst + 4, 4, 1, 0, 0, 2 ** 31), /int32/);
  });
});

describe('wasm pooling kernels', () => {
  it('maxpool equals maxPoolInt on random geometry (padding-only windows, int32 extremes)', () => {
    const rng = new Rng(29);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    for (let trial = 0; trial < 60; trial++) {
      const n = int(1, 3), c = int(1, 4), h = int(1, 11), w = int(1, 11);
      const k: [number, number] = [int(1, 4), int(1, 4)], s: [number, number] = [int(1, 3), int(1, 3)];
      // padding up to the kernel size: windows of padding only (the reference stores −∞ as 0)
      const p: [number, number] = [int(0, k[0]), int(0, k[1])];
      const oh = Math.floor((h + 2 * p[0] - k[0]) / s[0]) + 1, ow = Math.floor((w + 2 * p[1] - k[1]) / s[1]) + 1;
      if (oh < 1 || ow < 1) continue;
      const x = Int32Array.from({ length: n * c * h * w }, (_, i) => (i % 5 === 0 ? [INT32_MIN, INT32_MAX][int(0, 1)]! : trial % 2 === 0 ? int(-300, 300) : int(INT32_MIN, INT32_MAX)));
      const want = maxPoolInt(x, n, c, h, w, k, s, p);
      assert.deepEqual([want.oh, want.ow], [oh, ow]);
      const src = gemm.arena(x.length + want.data.length);
      const dst = src + x.length;
      gemm.int32View().set(x, src);
      gemm.pool(src, dst, n * c, h, w, k, s, p, oh, ow);
      assert.deepEqual([...gemm.int32View().subarray(dst, dst + want.data.length)], [...want.data], `trial ${trial}: ${h}x${w}, k ${k}, s ${s}, p ${p}`);
    }
  });

  it('avgpool equals avgPoolInt: rounding ties both ways, negative sums, fracBits, padding, int32 wrap of the output', () => {
    const rng = new Rng(31);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    let ties = 0;
    for (let trial = 0; trial < 60; trial++) {
      const n = int(1, 3), c = int(1, 3), h = int(1, 9), w = int(1, 9);
      const k: [number, number] = [int(1, 3), int(1, 3)], s: [number, number] = [int(1, 3), int(1, 3)];
      const p: [number, number] = [int(0, Math.floor(k[0] / 2)), int(0, Math.floor(k[1] / 2))];
      const oh = Math.floor((h + 2 * p[0] - k[0]) / s[0]) + 1, ow = Math.floor((w + 2 * p[1] - k[1]) / s[1]) + 1;
      if (oh < 1 || ow < 1) continue;
      const fracBits = trial % 4 === 3 ? int(1, 6) : 0;
      // trial % 7 === 6: the output zero point near int32's end, so zero + q wraps
      const zero = trial % 7 === 6 ? INT32_MAX - int(0, 3) : int(-128, 127);
      const inZero = zero * 2 ** fracBits;
      const wide = trial % 5 === 4 && fracBits === 0 && trial % 7 !== 6;
      // small values around the zero point give many exact halves (window sums of 2 or 4 cells)
      const x = Int32Array.from({ length: n * c * h * w }, () => (wide ? int(INT32_MIN, INT32_MAX) : inZero + int(-6, 6) * (fracBits > 0 ? int(1, 3) : 1)));
      if (!(Math.abs(inZero) < 2 ** 31)) continue;
      const want = avgPoolInt(x, n, c, h, w, k, s, p, zero, fracBits);
      const src = gemm.arena(x.length + want.data.length);
      const dst = src + x.length;
      gemm.int32View().set(x, src);
      gemm.pool(src, dst, n * c, h, w, k, s, p, oh, ow, { zero, inZero, divisor: k[0] * k[1] * 2 ** fracBits });
      assert.deepEqual([...gemm.int32View().subarray(dst, dst + want.data.length)], [...want.data], `trial ${trial}: ${h}x${w}, k ${k}, s ${s}, p ${p}, zero ${zero}, F ${fracBits}`);
      // count windows whose exact mean is a half (both rounding directions occur across trials)
      for (let plane = 0; plane < n * c && !wide; plane++) {
        for (let oy = 0; oy < oh; oy++) {
          for (let ox = 0; ox < ow; ox++) {
            let sum = 0;
            for (let ky = 0; ky < k[0]; ky++) for (let kx = 0; kx < k[1]; kx++) {
              const iy = oy * s[0] - p[0] + ky, ix = ox * s[1] - p[1] + kx;
              if (iy >= 0 && iy < h && ix >= 0 && ix < w) sum += x[(plane * h + iy) * w + ix]! - inZero;
            }
            if ((2 * sum) % (k[0] * k[1] * 2 ** fracBits) === 0 && (sum % (k[0] * k[1] * 2 ** fracBits)) !== 0) ties++;
          }
        }
      }
    }
    assert.ok(ties > 20, `exact halves exercised (${ties})`);
    const src = gemm.arena(32);
    assert.throws(() => gemm.pool(src, src + 16, 1, 4, 4, [2, 2], [2, 2], [0, 0], 2, 2, { zero: 0, inZero: 2 ** 31, divisor: 4 }), /out of range/);
    assert.throws(() => gemm.pool(src, src + 4, 1, 4, 4, [2, 2], [2, 2], [0, 0], 2, 2), /overlap/);
    assert.throws(() => gemm.pool(src, src + 16, 1, 4, 4, [0, 2], [2, 2], [0, 0], 2, 2), /bad geometry/);
  });
});
