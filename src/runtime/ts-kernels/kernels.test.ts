import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../tensor/random.ts';
import { requantizeScalar } from '../requantize.ts';
import { addRescaled } from '../intmodel.ts';
import { gemmLanes, laneChunk, laneLayout, packLaneWeights } from './gemm.ts';
import { requantPlan, requantizeBlock } from './requantize.ts';
import { addInts, addIntsWasm } from './add.ts';
import { REQUANT_UNSURE, WasmGemm } from '../wasm/gemm.ts';
import { maxPoolValues, quantizeValues } from './elementwise.ts';
import { maxPoolInt } from '../ops.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';

/** round(v·m·2^−n), half away from zero, in BigInt (v, m integers). */
function bigRequant(v: number, m: number, n: number): number {
  const p = BigInt(v) * BigInt(m);
  const a = p < 0n ? -p : p;
  const q = n <= 0 ? a << BigInt(-n) : (a + (1n << BigInt(n - 1))) >> BigInt(n);
  return Number(p < 0n ? -q : q);
}

const clamp = (v: number, lo: number, hi: number): number => (v < lo ? lo : v > hi ? hi : v);

describe('ts-kernels: requantizeBlock', () => {
  /** The reference executor's output stage, element by element. */
  function reference(acc: Int32Array, rows: number, O: number, P: number, bias: Int32Array, M: Int32Array, sh: Int32Array, k: number, z: number, lo: number, hi: number): Int32Array {
    const out = new Int32Array(acc.length);
    for (let i = 0; i < acc.length; i++) {
      const c = Math.floor(i / P) % O;
      out[i] = clamp(requantizeScalar(acc[i]! * 2 ** k + bias[c]!, M[c]!, sh[c]!) + z, lo, hi);
    }
    return out;
  }

  it('equals the scalar reference and BigInt on random channels, ties, saturation and extreme shifts', () => {
    const rng = new Rng(5);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    let ties = 0;
    let bigChecked = 0;
    for (let trial = 0; trial < 60; trial++) {
      const O = int(1, 6), P = int(1, 9), rows = int(1, 3);
      const M = new Int32Array(O), sh = new Int32Array(O), bias = new Int32Array(O);
      const k = int(0, 16);
      for (let c = 0; c < O; c++) {
        const kind = int(0, 5);
        // power-of-two multipliers make exact ties (x.5) frequent; the rest are Q31 mantissas
        M[c] = kind === 0 ? 2 ** 30 : kind === 1 ? -(2 ** 30) : kind === 2 ? 0 : (rng.uniform() < 0.5 ? -1 : 1) * int(2 ** 30, 2 ** 31 - 1);
        sh[c] = trial % 10 === 9 ? [-3, 0, 5, 15, 54, 62, 1000][int(0, 6)]! : int(16, 53);
        bias[c] = int(-(2 ** 31), 2 ** 31 - 1) >> int(0, 31);
        if (kind <= 1 && trial % 10 !== 9) {
          // ratio ±2^(30 − n) with n = 31 + j, j ≤ k: v = acc·2^k + odd·2^j is an odd multiple of 2^j, a tie
          const j = int(0, k);
          sh[c] = 31 + j;
          bias[c] = (2 * int(-1000, 1000) + 1) * 2 ** j;
        }
      }
      const wide = trial % 7 === 6;
      const z = wide ? int(-(2 ** 31), 2 ** 31 - 1) : int(-128, 127);
      const lo = wide ? -(2 ** 31) : int(-128, 0);
      const hi = wide ? 2 ** 31 - 1 : int(lo, 255);
      const acc = new Int32Array(rows * O * P);
      for (let i = 0; i < acc.length; i++) {
        const r = rng.uniform();
        acc[i] = r < 0.05 ? [0, 1, -1, 2 ** 31 - 1, -(2 ** 31)][int(0, 4)]! : r < 0.3 ? int(-9, 9) : Math.round((rng.uniform() * 2 - 1) * 2 ** (rng.uniform() * 31));
      }
      const plan = requantPlan(bias, M, sh, k, z, lo, hi);
      const out = new Int32Array(acc.length);
      requantizeBlock(acc, rows, O, P, plan, out);
      assert.deepEqual(out, reference(acc, rows, O, P, bias, M, sh, k, z, lo, hi), `trial ${trial}`);
      for (let i = 0; i < acc.length; i++) {
        const c = Math.floor(i / P) % O;
        const v = acc[i]! * 2 ** k + bias[c]!;
        if (!Number.isSafeInteger(v)) continue;
        const exact = bigRequant(v, M[c]!, sh[c]!);
        assert.equal(out[i], clamp(exact + z, lo, hi), `trial ${trial} value ${v}`);
        bigChecked++;
        if (sh[c]! > 0 && (BigInt(v) * BigInt(M[c]!)) % (1n << BigInt(sh[c]!)) === 1n << BigInt(sh[c]! - 1)) ties++;
      }
    }
    assert.ok(ties > 50, `only ${ties} exact ties were exercised`);
    assert.ok(bigChecked > 1000, `${bigChecked}`);
  });

  it('rounds exact ties half away from zero and saturates at lo / hi', () => {
    const M = Int32Array.of(2 ** 30); // ratio 2^30·2^−31 = ½
    const plan = requantPlan(new Int32Array(1), M, Int32Array.of(31), 0, 3, -5, 6);
    const acc = Int32Array.of(1, -1, 3, -3, 5, -5, 100, -100, 0);
    const out = new Int32Array(acc.length);
    requantizeBlock(acc, 1, 1, acc.length, plan, out);
    // 0.5→1, −0.5→−1, 1.5→2, −1.5→−2, 2.5→3, −2.5→−3 (then + 3, clamped to [−5, 6])
    assert.deepEqual([...out], [4, 2, 5, 1, 6, 0, 6, -5, 3]);
  });
});

describe('ts-kernels: gemmLanes', () => {
  it('laneLayout: lanes hold |S| ≤ bound with L·b ≤ 53', () => {
    assert.deepEqual(laneLayout(0), { lanes: 4, laneBits: 1 });
    assert.deepEqual(laneLayout(576 * 255 * 127), { lanes: 2, laneBits: 26 });
    assert.deepEqual(laneLayout(576 * 15 * 7), { lanes: 3, laneBits: 17 }); // W4A4, narrow int4 weights
    assert.deepEqual(laneLayout(576 * 15 * 8), { lanes: 2, laneBits: 18 });
    assert.equal(laneLayout(2 ** 52).lanes, 0);
    for (const bound of [1, 2, 3, 1000, 2 ** 20 - 1, 2 ** 20, 2 ** 40]) {
      const { lanes, laneBits } = laneLayout(bound);
      assert.ok(2 ** (laneBits - 1) > bound && 2 ** (laneBits - 2) <= bound && lanes * laneBits <= 53, `${bound}`);
    }
  });

  it('equals the plain int dot products for every lane count, odd shapes and the largest values', () => {
    const rng = new Rng(9);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    for (let trial = 0; trial < 40; trial++) {
      const C = int(1, 13), K = int(1, 40), P = int(1, 11);
      const maxX = [1, 15, 255, 383][int(0, 3)]!, maxW = [1, 7, 8, 127, 128][int(0, 4)]!;
      const extreme = trial % 4 === 0; // every product at the bound, same sign: sums reach the bound
      const w = new Int8Array(C * K).map(() => (extreme ? -maxW : int(-maxW, Math.min(maxW, 127))));
      const xs = Array.from({ length: K * P }, () => (extreme ? maxX : int(-maxX, maxX)));
      const Pp = Math.ceil(P / 4) * 4;
      const x = new Float64Array(K * Pp);
      for (let k = 0; k < K; k++) for (let p = 0; p < P; p++) x[k * Pp + p] = xs[k * P + p]!;
      const bound = K * maxX * maxW;
      for (let lanes = 1; lanes <= 4; lanes++) {
        const wp = packLaneWeights(w, 0, C, K, bound, lanes);
        assert.ok(wp.lanes <= lanes && wp.rows % 4 === 0);
        // output with strides: [C, P] block inside a larger buffer, sentinel elsewhere
        const acc = new Int32Array(3 + C * P * 2).fill(-7);
        gemmLanes(wp, x, Pp, P, acc, 3, P * 2, 1);
        for (let o = 0; o < C; o++) {
          for (let p = 0; p < P; p++) {
            let s = 0;
            for (let k = 0; k < K; k++) s += w[o * K + k]! * xs[k * P + p]!;
            assert.equal(acc[3 + o * P * 2 + p], s, `trial ${trial} lanes ${wp.lanes} o ${o} p ${p}`);
            assert.equal(acc[3 + o * P * 2 + P + p], -7, 'wrote outside the block');
          }
        }
      }
    }
  });

  it('laneChunk: the longest K chunk that keeps more lanes than the whole K', () => {
    assert.equal(laneChunk(576, 255 * 127), 576); // 2 lanes for the whole K already
    assert.equal(laneChunk(1152, 255 * 127), 1036); // 1036·32385 < 2^25 ≤ 1037·32385
    assert.equal(laneChunk(640, 15 * 7), 624); // 3 lanes of 17 bits: 624·105 < 2^16
    assert.equal(laneChunk(5000, 0), 5000);
    assert.equal(laneChunk(3000, 2 ** 24), 3000); // chunks would be shorter than 64
  });

  it('refuses bounds a double cannot hold exactly', () => {
    assert.throws(() => packLaneWeights(new Int8Array(4), 0, 1, 4, 2 ** 53), /do not stay exact/);
  });
});

describe('ts-kernels: addInts', () => {
  it('addInts and addIntsWasm equal addRescaled + clamp element by element, including its BigInt range and wide bounds', () => {
    const rng = new Rng(13);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const gemm = WasmGemm.create()!;
    for (let trial = 0; trial < 80; trial++) {
      const n = trial % 2 === 0 ? 200 : 203;
      const big = trial % 8 === 7;
      const a = new Int32Array(n).map(() => (big ? int(-(2 ** 31), 2 ** 31 - 1) : int(-300, 300)));
      const b = new Int32Array(n).map(() => (big ? int(-(2 ** 31), 2 ** 31 - 1) : int(-300, 300)));
      const za = int(-128, 255), zb = int(-128, 255);
      const shift = trial % 5 === 0 ? [0, 1, 62][int(0, 2)]! : int(20, 40);
      const ma = (rng.uniform() < 0.5 ? -1 : 1) * int(0, 2 ** 31 - 1) * (trial % 9 === 0 ? 0 : 1);
      const mb = trial % 3 === 0 ? 2 ** Math.max(0, shift - 1) : (rng.uniform() < 0.5 ? -1 : 1) * int(0, 2 ** 31 - 1);
      // wide: bounds anywhere in int32 (addIntsWasm hands lo = −2^31 to addInts); trial % 6 === 2:
      // [0, 2^30] with z = 0 (the last add of ResNet-8, which the wasm kernel takes)
      const wide = trial % 6 === 5;
      const z = wide ? int(-(2 ** 31), 2 ** 31 - 1) : trial % 6 === 2 ? 0 : int(-128, 127);
      const lo = wide ? -(2 ** 31) : trial % 6 === 2 ? 0 : int(-128, 0);
      const hi = wide ? 2 ** 31 - 1 : trial % 6 === 2 ? 2 ** 30 : int(lo, 255);
      const out = new Int32Array(n);
      const outWasm = new Int32Array(n);
      addInts(a, b, za, zb, ma, mb, shift, z, lo, hi, out);
      addIntsWasm(gemm, a, b, za, zb, ma, mb, shift, z, lo, hi, outWasm);
      for (let i = 0; i < n; i++) {
        const expected = clamp(addRescaled(a[i]! - za, ma, b[i]! - zb, mb, shift) + z, lo, hi);
        assert.equal(out[i], expected | 0, `trial ${trial} i ${i}`);
        assert.equal(outWasm[i], expected | 0, `wasm: trial ${trial} i ${i}`);
      }
    }
  });

  it('the wasm add kernel does the common case itself and marks the values it leaves to addInts', () => {
    const gemm = WasmGemm.create()!;
    const { i32, a, b, out } = gemm.addOperands(8);
    const av = [10, -20, 300, 7, 2 ** 22, 0, -5, 1], bv = [3, 4, -100, 7, 0, 0, 5, 2 ** 30];
    i32.set(av, a);
    i32.set(bv, b);
    // t = (a − 1)·3 + (b − 2)·5, r = round-half-away(t / 4) (shift 2), out = clamp(r + 2, −58, 62);
    // a − 1 = 2^22 − 1 and b − 2 = 2^30 − 2 are past the kernel's 2^21 limit
    assert.equal(gemm.add(8, 1, 2, 3, 5, 2, 0.25, -60, 60, 2), false);
    const expected = av.map((x, i) => (i === 4 || i === 7 ? REQUANT_UNSURE : clamp(addRescaled(x - 1, 3, bv[i]! - 2, 5, 2) + 2, -58, 62)));
    assert.deepEqual([...i32.subarray(out, out + 8)], expected);
    assert.deepEqual(expected.slice(0, 4), [10, -11, 62, 13]); // worked by hand
  });
});

describe('ts-kernels: quantizeValues and maxPoolValues', () => {
  it('quantizeValues equals clamp(roundHalfEven(x / s) + z) on ties, saturation, NaN and ±Infinity', () => {
    const rng = new Rng(17);
    for (let trial = 0; trial < 30; trial++) {
      const scale = trial % 3 === 0 ? 0.25 : 0.01 + rng.uniform(); // 0.25: x / s hits exact halves
      const wide = trial % 10 === 9;
      const z = wide ? 2 ** 31 - 5 : Math.floor(rng.uniform() * 256) - 128;
      const qmin = wide ? -(2 ** 31) : [-128, 0, -8][trial % 3]!;
      const qmax = wide ? 2 ** 31 - 1 : [127, 255, 7][trial % 3]!;
      const x = Float32Array.from({ length: 500 }, (_, i) => {
        const r = rng.uniform();
        if (i < 4) return [NaN, Infinity, -Infinity, 3e38][i]!;
        if (r < 0.3) return (Math.floor(rng.uniform() * 200) - 100 + 0.5) * scale; // ties (exact for scale 0.25)
        return (rng.uniform() - 0.5) * 2 ** (rng.uniform() * 20);
      });
      const out = new Int32Array(x.length);
      quantizeValues(x, scale, z, qmin, qmax, out);
      const expected = new Int32Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const q = roundHalfEven(x[i]! / scale) + z;
        expected[i] = q < qmin ? qmin : q > qmax ? qmax : q;
      }
      assert.deepEqual(out, expected, `trial ${trial}`);
    }
  });

  it('maxPoolValues equals maxPoolInt (padding, strides, values spanning more than 2^31)', () => {
    const rng = new Rng(19);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    for (let trial = 0; trial < 40; trial++) {
      const k: [number, number] = [int(1, 3), int(1, 3)];
      const s: [number, number] = [int(1, 3), int(1, 3)];
      const p: [number, number] = [int(0, Math.floor(k[0] / 2)), int(0, Math.floor(k[1] / 2))];
      const n = int(1, 2), c = int(1, 3), h = int(k[0], 9), w = int(k[1], 9);
      const span = trial % 8 === 7 ? 2 ** 31 - 1 : 300;
      const x = new Int32Array(n * c * h * w).map(() => int(-span, span));
      assert.deepEqual(maxPoolValues(x, n, c, h, w, k, s, p), maxPoolInt(x, n, c, h, w, k, s, p), `trial ${trial}`);
    }    // the 2×2 / stride 2 fast path, odd and even sizes
    for (let trial = 0; trial < 12; trial++) {
      const n = int(1, 2), c = int(1, 3), h = int(2, 9), w = int(2, 9);
      const span = trial % 4 === 3 ? 2 ** 31 - 1 : 300;
      const x = new Int32Array(n * c * h * w).map(() => int(-span, span));
      assert.deepEqual(maxPoolValues(x, n, c, h, w, [2, 2], [2, 2], [0, 0]), maxPoolInt(x, n, c, h, w, [2, 2], [2, 2], [0, 0]), `2x2 trial ${trial}`);
    }
  });
});
