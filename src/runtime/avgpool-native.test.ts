/**
 * The native executor's average pooling (native/intpool.cc: AVX-512 / AVX2 kernels with a scalar
 * fallback) against the TypeScript `avgPoolInt` (ops.ts), bit for bit: random shapes (global
 * pools, k×k stride s windows with padding, channel counts with and without a scalar tail), u8 /
 * s8 / int32 inputs, zero points and fractional bits, rounding ties, int32 extremes whose quotient
 * leaves the vector lanes, and divisors past the vector path's bound.
 * Tests tagged [every-isa] re-run under LOWBIT_ISA=avx2 and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../tensor/index.ts';
import { loadAddon } from '../backend/native/load.ts';
import { INT32_MAX, INT32_MIN, INT_VALUE_TYPES, runEveryIsaTests, type IntArray } from '../backend/native/isa-testing.ts';
import { avgPoolInt } from './ops.ts';

const addon = loadAddon();
const skip = addon?.intAvgPoolValues ? false : 'native addon without intAvgPoolValues';
const forcedIsa = process.env.LOWBIT_ISA !== undefined;
const TYPES = INT_VALUE_TYPES;

interface Case { n: number; c: number; h: number; w: number; k: [number, number]; s: [number, number]; p: [number, number]; zero: number; frac: number }

/** Native pooling of x (NHWC samples) vs avgPoolInt on the NCHW copy; returns the kernel name and the ties seen. */
function compare(x: IntArray, g: Case, label: string): { kernel: string; ties: number } {
  const { n, c, h, w, k, s, p, zero, frac } = g;
  const nchw = new Int32Array(n * c * h * w);
  for (let b = 0; b < n; b++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) for (let ch = 0; ch < c; ch++) {
    nchw[((b * c + ch) * h + y) * w + xx] = x[((b * h + y) * w + xx) * c + ch]!;
  }
  const ref = avgPoolInt(nchw, n, c, h, w, k, s, p, zero, frac);
  const { oh, ow } = ref;
  const out = new Int32Array(n * oh * ow * c);
  const kernel = addon!.intAvgPoolValues!(x, Float64Array.of(n, c, h, w, k[0], k[1], s[0], s[1], p[0], p[1], zero, frac), out);
  // ties: window sums exactly half way between two multiples of the divisor
  let ties = 0;
  const divisor = k[0] * k[1] * 2 ** frac;
  for (let b = 0; b < n; b++) for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++) for (let ch = 0; ch < c; ch++) {
    const want = ref.data[((b * c + ch) * oh + y) * ow + xx]!;
    const got = out[((b * oh + y) * ow + xx) * c + ch]!;
    if (got !== want) assert.fail(`${label}: sample ${b} (${y}, ${xx}) channel ${ch}: native ${got}, TS ${want} (${JSON.stringify(g)})`);
    let sum = 0;
    for (let ky = 0; ky < k[0]; ky++) for (let kx = 0; kx < k[1]; kx++) {
      const iy = y * s[0] - p[0] + ky;
      const ix = xx * s[1] - p[1] + kx;
      if (iy >= 0 && iy < h && ix >= 0 && ix < w) sum += nchw[((b * c + ch) * h + iy) * w + ix]! - zero * 2 ** frac;
    }
    const r = ((sum % divisor) + divisor) % divisor;
    if (2 * r === divisor) ties++;
  }
  return { kernel, ties };
}

describe('native average pooling', { skip }, () => {
  it('[every-isa] random shapes, types, zero points and fractional bits equal avgPoolInt bit for bit (ties, tails, fallbacks)', () => {
    const isa = addon!.info().isa;
    const rng = new Rng(97);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const kernels = new Map<string, number>();
    let ties = 0;
    let cases = 0;
    for (const t of TYPES) {
      for (let round = 0; round < 36; round++) {
        const c = [1, 3, 8, 13, 16, 24, 33, 64][round % 8]!;
        const global = round % 4 === 0;
        const h = int(1, 9);
        const w = int(1, 9);
        let k: [number, number];
        let s: [number, number];
        let p: [number, number];
        if (global) { k = [h, w]; s = [h, w]; p = [0, 0]; }
        else {
          k = [int(1, Math.min(3, h + 1)), int(1, Math.min(3, w + 1))];
          p = [int(0, k[0] >> 1), int(0, k[1] >> 1)];
          if (h + 2 * p[0] < k[0]) p[0] = k[0] >> 1;
          if (w + 2 * p[1] < k[1]) p[1] = k[1] >> 1;
          if (h + 2 * p[0] < k[0] || w + 2 * p[1] < k[1]) { k = [1, 1]; p = [0, 0]; }
          s = [int(1, 3), int(1, 3)];
        }
        const n = int(1, 3);
        // fractional bits: 0 mostly (ties), else up to 24 (int32 inputs carry them)
        const frac = t.name === 'i32' && round % 3 !== 0 ? int(0, 24) : 0;
        // zero points: ordinary, or an int32 extreme kept where the TS double sum stays exact (< 2^52)
        const taps = k[0] * k[1];
        let zero = t.name === 'u8' ? int(0, 255) : int(-128, 127);
        if (round % 5 === 4) zero = Math.max(INT32_MIN, Math.min(INT32_MAX, Math.trunc(rng.uniform() < 0.5 ? -(2 ** 51) / taps / 2 ** frac : 2 ** 51 / taps / 2 ** frac)));
        const x = t.make(n * h * w * c);
        const small = t.name === 'i32' && round % 2 === 1;
        for (let i = 0; i < x.length; i++) {
          x[i] = rng.uniform() < 0.1 ? [t.lo, t.hi, 0, -1, 1][int(0, 4)]! : small ? int(-300, 300) : int(t.lo, t.hi);
        }
        const r = compare(x, { n, c, h, w, k, s, p, zero, frac }, `${t.name} round ${round}`);
        kernels.set(r.kernel, (kernels.get(r.kernel) ?? 0) + 1);
        ties += r.ties;
        cases++;
      }
    }
    // the vector kernel of the active ISA ran (channel counts >= 16 / 8), and rounding ties occurred
    if (isa !== 'scalar') assert.ok((kernels.get(isa) ?? 0) >= 10, `kernels ${JSON.stringify([...kernels])}`);
    else assert.deepEqual([...kernels.keys()], ['scalar']);
    assert.ok(ties >= 50, `only ${ties} ties in ${cases} cases`);
  });

  it('[every-isa] quotients past int32 (wrapped like the TS Int32Array store) and divisors past 2^31 (scalar fallback)', () => {
    const isa = addon!.info().isa;
    // int32 extremes with an opposite zero point: (q - z) ~ ±2^32, so z + quotient wraps; the vector
    // kernel redoes such blocks in scalar code
    for (const [v, zero] of [[INT32_MAX, INT32_MIN], [INT32_MIN, INT32_MAX], [INT32_MAX, -5], [INT32_MIN, 7]] as const) {
      const g: Case = { n: 2, c: 32, h: 4, w: 4, k: [2, 2], s: [2, 2], p: [0, 0], zero, frac: 0 };
      const x = new Int32Array(2 * 4 * 4 * 32).fill(v);
      x[5] = 0; // one block with a smaller sum
      compare(x, g, `extreme ${v} zero ${zero}`);
    }
    // global 12x12 with F = 24: divisor 144·2^24 > 2^31 takes the scalar path
    const rng = new Rng(5);
    const g: Case = { n: 2, c: 16, h: 12, w: 12, k: [12, 12], s: [12, 12], p: [0, 0], zero: 3, frac: 24 };
    const x = Int32Array.from({ length: 2 * 12 * 12 * 16 }, () => Math.floor((rng.uniform() * 2 - 1) * 2 ** 31));
    assert.equal(compare(x, g, 'divisor past 2^31').kernel, 'scalar');
    // the same geometry with F = 0 runs the vector kernel
    const g0 = { ...g, frac: 0 };
    assert.equal(compare(x, g0, 'global 12x12').kernel, isa);
  });

  it('rejects bad arguments with errors naming them', () => {
    const out = new Int32Array(4);
    assert.throws(() => addon!.intAvgPoolValues!(new Float32Array(4) as unknown as Int32Array, Float64Array.of(1, 1, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0), out), /expected \(x: Uint8Array/);
    assert.throws(() => addon!.intAvgPoolValues!(new Int32Array(4), Float64Array.of(1, 1, 2, 2, 1, 1, 1, 1, 0, 0, 0, 25), out), /fracBits = 25/);
    assert.throws(() => addon!.intAvgPoolValues!(new Int32Array(4), Float64Array.of(1, 1, 2, 2, 1, 1, 0, 1, 0, 0, 0, 0), out), /sh = 0/);
    assert.throws(() => addon!.intAvgPoolValues!(new Int32Array(4), Float64Array.of(1, 1, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0), out), /padding over half/);
    assert.throws(() => addon!.intAvgPoolValues!(new Int32Array(4), Float64Array.of(65536, 65536, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0), out), /values is over 1e9/);
    assert.throws(() => addon!.intAvgPoolValues!(new Int32Array(3), Float64Array.of(1, 1, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0), out), /x needs n H W C = 4/);
    assert.equal(addon!.intAvgPoolValues!(new Int32Array([1, 2, 3, 5]), Float64Array.of(1, 1, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0), out), 'scalar');
    assert.deepEqual(Array.from(out), [1, 2, 3, 5]);
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 2, `expected the 2 tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
