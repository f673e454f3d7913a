/**
 * The native backend against the reference backend, op by op, on random inputs with odd shapes.
 * Each op states its tolerance: |native - reference| <= atol + rtol * |reference|.
 * Skipped as a whole when the addon did not load (e.g. no compiler at install time).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

import '../reference/index.ts';
import type { PrimitiveAttrs, PrimitiveName, RawTensor } from '../primitives.ts';
import { sizeOf } from '../primitives.ts';
import { runKernel, setBackend } from '../registry.ts';
import { fmaPeakGflops, loadNative, nativeAddon, nativeInfo, setNativeThreads } from './index.ts';
import { nativeKernel } from './kernels.ts';
import { runEveryIsaTests } from './isa-testing.ts';

const loaded = loadNative();
const skip = loaded.ok ? false : `native addon not loaded: ${loaded.reason}`;
if (skip) console.warn(`native tests skipped (${skip})`);

interface Tolerance {
  atol: number;
  rtol: number;
}
const EXACT: Tolerance = { atol: 0, rtol: 0 };
const TRANSCENDENTAL: Tolerance = { atol: 1e-7, rtol: 1e-6 };

/** Deterministic uniform values in [lo, hi). */
function random(shape: readonly number[], seed: number, lo = -1, hi = 1): RawTensor {
  let state = seed * 2654435761 + 12345;
  const data = new Float32Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    data[i] = lo + ((state >>> 8) / (1 << 24)) * (hi - lo);
  }
  return { data, shape, dtype: 'float32' };
}

/** Runs `op` on both backends, checks that native did not decline, and compares. */
function check<P extends PrimitiveName>(op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P], tol: Tolerance): void {
  const direct = nativeKernel(op)?.(inputs, attrs);
  assert.ok(direct, `native ${op} declined shapes ${inputs.map((t) => `[${t.shape.join(',')}]`).join(' ')}`);
  setBackend('reference');
  const ref = runKernel(op, inputs, attrs);
  setBackend('native');
  const got = runKernel(op, inputs, attrs);
  setBackend('reference');
  assert.deepEqual(got.shape, ref.shape, `${op}: shape`);
  assert.equal(got.dtype, ref.dtype, `${op}: dtype`);
  let worst = 0;
  let where = -1;
  for (let i = 0; i < ref.data.length; i++) {
    const r = ref.data[i]!;
    const g = got.data[i]!;
    if ((Number.isNaN(r) && Number.isNaN(g)) || g === r) continue; // equal infinities too
    const excess = Math.abs(g - r) - (tol.atol + tol.rtol * Math.abs(r));
    if (!(excess <= worst)) {
      worst = Number.isNaN(excess) ? Infinity : excess;
      where = i;
    }
  }
  assert.ok(where < 0, `${op}: element ${where} native ${got.data[where]} vs reference ${ref.data[where]}`);
}

function declines<P extends PrimitiveName>(op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P]): void {
  assert.equal(nativeKernel(op)?.(inputs, attrs), undefined, `native ${op} should decline`);
}

const NO_ATTRS = {} as Record<string, never>;
const ODD = [1, 3, 7, 17, 33, 65, 129];

describe('native backend vs reference', { skip }, () => {
  it('reports its ISA, threads and a positive FMA peak', () => {
    const info = nativeInfo();
    assert.ok(info && ['avx512', 'avx2', 'scalar'].includes(info.isa));
    assert.ok(info.threads >= 1);
    assert.ok(fmaPeakGflops(1, 0.02) > 0);
    // The load-fed probe exists for the vector ISAs only.
    const loadFed = nativeAddon()!.loadFedPeak(1, 0.02);
    if (info.isa === 'scalar') assert.equal(loadFed, 0);
    else assert.ok(loadFed > 0);
  });

  it('unary ops (neg, abs, relu, sqrt: exact; exp, log, sigmoid, tanh: 1e-6 relative)', () => {
    for (const [i, n] of ODD.entries()) {
      const shape = [n, (i % 3) + 1];
      const x = random(shape, i, -4, 4);
      const positive = random(shape, i + 50, 1e-3, 10);
      for (const op of ['neg', 'abs', 'relu'] as const) check(op, [x], NO_ATTRS, EXACT);
      check('sqrt', [positive], NO_ATTRS, EXACT);
      check('log', [positive], NO_ATTRS, TRANSCENDENTAL);
      for (const op of ['exp', 'sigmoid', 'tanh'] as const) check(op, [x], NO_ATTRS, TRANSCENDENTAL);
    }
    const wide = random([3], 9, -100, 100);
    check('sigmoid', [wide], NO_ATTRS, TRANSCENDENTAL);
  });

  it('binary ops, same shape and scalar / row / channel broadcasts (exact)', () => {
    const pairs: [number[], number[]][] = [
      [[17, 33], [17, 33]], [[129], [129]], [[7, 33], []], [[1], [65, 3]], [[7, 33], [33]], [[33], [5, 7, 33]],
      [[3, 7, 5, 5], [1, 7, 1, 1]], [[1, 7, 1, 1], [3, 7, 5, 5]], [[2, 3, 1], [1, 3, 4]], [[1], [1]],
    ];
    for (const [i, [sa, sb]] of pairs.entries()) {
      const a = random(sa, i);
      const b = random(sb, i + 100, 0.5, 2);
      for (const op of ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'greater', 'greaterEqual', 'equal', 'reluBackward'] as const) {
        check(op, [a, b], NO_ATTRS, EXACT);
      }
    }
    const a = random([9, 9], 1);
    check('equal', [a, a], NO_ATTRS, EXACT);
    declines('add', [random([2, 1, 3, 1], 1), random([1, 2, 1, 3], 2)], NO_ATTRS);
    declines('add', [{ data: new Float64Array(3), shape: [3], dtype: 'float64' }, { data: new Float64Array(3), shape: [3], dtype: 'float64' }], NO_ATTRS);
  });

  it('where with float32 and int32 conditions (exact)', () => {
    for (const n of ODD) {
      const a = random([n, 5], n);
      const b = random([n, 5], n + 1);
      const cond = runKernel('greater', [a, b], NO_ATTRS);
      check('where', [cond, a, b], NO_ATTRS, EXACT);
      const condInt: RawTensor = { data: Int32Array.from(cond.data), shape: cond.shape, dtype: 'int32' };
      check('where', [condInt, a, b], NO_ATTRS, EXACT);
    }
  });

  /** Every subset of the axes of `rank` dims. */
  function axisSubsets(rank: number): number[][] {
    const out: number[][] = [];
    for (let mask = 1; mask < 1 << rank; mask++) out.push([...Array(rank).keys()].filter((d) => mask & (1 << d)));
    return out;
  }

  it('[every-isa] sum and max over any set of axes (sum: float64 accumulation, 1e-6 relative; max: exact, NaN propagates)', () => {
    const tol = { atol: 1e-6, rtol: 1e-6 };
    const shapes = [[3, 17, 5], [2, 7, 1, 9], [5, 3, 7, 11], [1, 33, 1], [65, 129], [3, 1, 5, 1, 7]];
    for (const [i, shape] of shapes.entries()) {
      const x = random(shape, i);
      for (const axes of axisSubsets(shape.length)) {
        for (const keepDims of [false, true]) {
          check('sum', [x], { axes, keepDims }, tol);
          check('max', [x], { axes, keepDims }, EXACT);
        }
      }
    }
    // The bias gradient of a conv layer: NCHW summed over [0, 2, 3].
    check('sum', [random([64, 6, 28, 28], 3)], { axes: [0, 2, 3], keepDims: true }, tol);
    const withNan = random([4, 5, 6], 9);
    withNan.data[37] = NaN;
    for (const axes of axisSubsets(3)) check('max', [withNan], { axes, keepDims: false }, EXACT);
  });

  it('argmax along every axis (exact, first maximum on ties)', () => {
    for (const [i, shape] of [[7, 33], [3, 5, 17], [2, 1, 9, 4], [129]].entries()) {
      const x = random(shape, i);
      const ties: RawTensor = { ...x, data: x.data.map((v) => Math.round(v * 2) / 2) };
      for (const input of [x, ties]) {
        for (let axis = 0; axis < shape.length; axis++) {
          for (const keepDims of [false, true]) check('argmax', [input], { axis, keepDims }, EXACT);
        }
      }
    }
  });

  function ints(shape: readonly number[], seed: number, n: number): RawTensor {
    const r = random(shape, seed, 0, n);
    return { data: Int32Array.from(r.data, (v) => Math.floor(v)), shape, dtype: 'int32' };
  }

  it('gather and scatterAdd along every axis, float32 and int32 data (exact / 1e-6)', () => {
    for (const [i, shape] of [[7, 10], [3, 5, 17], [2, 9, 4, 3]].entries()) {
      for (let axis = 0; axis < shape.length; axis++) {
        const x = random(shape, i);
        const idx = ints([5], i + axis, shape[axis]!);
        check('gather', [x, idx], { axis }, EXACT);
        check('gather', [ints(shape, i, 100), idx], { axis }, EXACT);
        check('gather', [x, ints([2, 3], i, shape[axis]!)], { axis }, EXACT);
        const gathered = runKernel('gather', [x, idx], { axis });
        check('scatterAdd', [random(gathered.shape, i + 1), idx], { axis, shape }, { atol: 1e-6, rtol: 1e-6 });
      }
    }
    const bad: RawTensor = { data: Int32Array.from([0, 7]), shape: [2], dtype: 'int32' };
    declines('gather', [random([3, 4], 1), bad], { axis: 1 });
    declines('scatterAdd', [random([3, 2], 1), bad], { axis: 1, shape: [3, 4] });
  });

  it('broadcastTo, slice, pad and concat on float32 and int32 (exact)', () => {
    for (const make of [(s: number[], k: number) => random(s, k), (s: number[], k: number) => ints(s, k, 1000)]) {
      check('broadcastTo', [make([3, 1, 5], 1)], { shape: [2, 3, 7, 5] }, EXACT);
      check('broadcastTo', [make([1, 17], 2)], { shape: [33, 17] }, EXACT);
      check('broadcastTo', [make([7, 1], 3)], { shape: [7, 9] }, EXACT);
      check('broadcastTo', [make([], 4)], { shape: [3, 5] }, EXACT);
      const x = make([5, 7, 9], 5);
      check('slice', [x], { starts: [1, 0, 2], ends: [4, 7, 9] }, EXACT);
      check('slice', [x], { starts: [0, 3, 0], ends: [5, 4, 9] }, EXACT);
      check('slice', [x], { starts: [2, 2, 2], ends: [2, 5, 8] }, EXACT);
      check('pad', [x], { pads: [[1, 0], [0, 2], [3, 1]], value: 0 }, EXACT);
      check('pad', [x], { pads: [[0, 0], [2, 2], [0, 0]], value: -1.5 }, EXACT);
      check('pad', [make([2, 3, 4, 5], 6)], { pads: [[0, 0], [0, 0], [2, 2], [2, 2]], value: 0 }, EXACT);
      for (let axis = 0; axis < 3; axis++) {
        const shapes = [[5, 7, 9], [5, 7, 9], [5, 7, 9]].map((s, k) => s.map((d, j) => (j === axis ? d - k * 2 : d)));
        check('concat', shapes.map((s, k) => make(s, k + 7)), { axis }, EXACT);
      }
    }
  });

  it('cast float32 <-> int32 (exact, truncation and ToInt32 wrap like the reference)', () => {
    const x = random([7, 33], 1, -1e3, 1e3);
    x.data.set([NaN, Infinity, -Infinity, 3e9, -3e9, 2147483647.5, -0.5, 0.99, -2147483648, 1e20]);
    check('cast', [x], { dtype: 'int32' }, EXACT);
    check('cast', [ints([5, 9], 2, 1e6)], { dtype: 'float32' }, EXACT);
    check('cast', [{ data: Int32Array.from([2147483647, -2147483648, 16777217]), shape: [3], dtype: 'int32' }], { dtype: 'float32' }, EXACT);
  });

  it('[every-isa] fakeQuantize per tensor and per channel, roundSte, signSte, scaleGrad (exact)', () => {
    const x = random([5, 6, 7, 3], 1, -3, 3);
    // exact halves exercise round-half-even
    for (let i = 0; i < 40; i++) x.data[i] = (i - 20) * 0.25;
    const scalar = (v: number): RawTensor => ({ data: Float32Array.of(v), shape: [], dtype: 'float32' });
    const gradient = 'ste' as const;
    for (const [qmin, qmax] of [[-128, 127], [0, 255], [-1, 1], [-8, 7]] as const) {
      check('fakeQuantize', [x, scalar(0.05), scalar(0)], { qmin, qmax, gradient }, EXACT);
      check('fakeQuantize', [x, scalar(0.25), scalar(3)], { qmin, qmax, gradient }, EXACT);
      check('fakeQuantize', [x, random([5, 1, 1, 1], 2, 0.01, 0.3), scalar(0)], { qmin, qmax, gradient }, EXACT);
      check('fakeQuantize', [x, random([3], 5, 0.01, 0.3), scalar(1)], { qmin, qmax, gradient }, EXACT);
      check('fakeQuantize', [x, random([6, 7, 1], 6, 0.01, 0.3), random([1, 7, 1], 7, -2, 2)], { qmin, qmax, gradient }, EXACT);
    }
    const zpInt = ints([6, 1, 1], 4, 5);
    const zp: RawTensor = { data: Float32Array.from(zpInt.data), shape: zpInt.shape, dtype: 'float32' };
    check('fakeQuantize', [x, random([6, 1, 1], 3, 0.01, 0.3), zp], { qmin: -128, qmax: 127, gradient }, EXACT);
    for (const part of ['x', 'scale', 'zeroPoint'] as const) for (const gradient of ['ste', 'clipped'] as const) {
      const gy = random([6, 7, 5], 9, -1, 1);
      const xx = random([6, 7, 5], 10, -2, 2);
      for (const reduce of [false, true]) {
        // Reduced parts are float64 sums in another order than the reference's: 1e-6 relative.
        const tol = reduce && part !== 'x' ? { atol: 1e-6, rtol: 1e-6 } : EXACT;
        check('fakeQuantizeGrad', [gy, xx, random([6, 1, 1], 11, 0.01, 0.3), random([6, 1, 1], 12, -3, 3)], { qmin: -8, qmax: 7, gradient, part, reduce }, tol);
        check('fakeQuantizeGrad', [gy, xx, scalar(0.1), scalar(2)], { qmin: 0, qmax: 15, gradient, part, reduce }, tol);
      }
    }
  });

  it('[every-isa] fakeQuantizeGrad summed to the scale / zero point: chunked, threaded and per-element layouts (1e-6)', () => {
    // 21,000 elements: several 4096-element chunks, enough work for the pool's second thread.
    const shape = [6, 7, 500];
    const gy = random(shape, 21, -1, 1);
    const xx = random(shape, 22, -2, 2);
    const tol = { atol: 1e-6, rtol: 1e-6 };
    const layouts: [number[], number[]][] = [
      [[], []], // per tensor
      [[6, 1, 1], [6, 1, 1]], // per output channel (long runs)
      [[1, 7, 1], [1, 1, 1]], // middle axis: runs of 500 alternating channels
      [[7, 500], [1, 500]], // scale per (channel, position), zero point per position
      [[6, 7, 500], [6, 7, 500]], // per element: more parameters than chunk partials allow
    ];
    for (const [i, [sShape, zShape]] of layouts.entries()) {
      const s = random(sShape, 30 + i, 0.01, 0.3);
      const zInt = ints(zShape, 40 + i, 3);
      const z: RawTensor = { data: Float32Array.from(zInt.data), shape: zShape, dtype: 'float32' };
      for (const part of ['scale', 'zeroPoint'] as const) {
        const attrs = { qmin: -8, qmax: 7, gradient: 'clipped', part, reduce: true } as const;
        check('fakeQuantizeGrad', [gy, xx, s, z], attrs, tol);
        // Fixed chunks: bit-identical sums on one thread and on two.
        const kernel = nativeKernel('fakeQuantizeGrad')!;
        const threads = nativeInfo()!.threads;
        setNativeThreads(1);
        const one = kernel([gy, xx, s, z], attrs)!;
        setNativeThreads(2);
        const two = kernel([gy, xx, s, z], attrs)!;
        setNativeThreads(threads);
        assert.deepEqual(Array.from(two.data), Array.from(one.data), `layout ${i} ${part}: 1 vs 2 threads`);
      }
    }
    const y = random([9, 17], 8, -5, 5);
    for (let i = 0; i < 21; i++) y.data[i] = (i - 10) * 0.5;
    y.data[21] = 0;
    y.data[22] = -0;
    check('roundSte', [y], NO_ATTRS, EXACT);
    check('signSte', [y], { gradient: 'ste' }, EXACT);
    check('scaleGrad', [y], { scale: 0.5 }, EXACT);
  });

  /** Native and reference agree bit for bit (sign of zero included), NaN matching any NaN. */
  function checkBits<P extends PrimitiveName>(op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P], what: string): void {
    const got = nativeKernel(op)?.(inputs, attrs);
    assert.ok(got, `native ${op} declined (${what})`);
    setBackend('reference');
    const ref = runKernel(op, inputs, attrs);
    assert.deepEqual(got.shape, ref.shape, `${op} ${what}: shape`);
    for (let i = 0; i < ref.data.length; i++) {
      const r = ref.data[i]!;
      const g = got.data[i]!;
      if (Number.isNaN(r) && Number.isNaN(g)) continue;
      assert.ok(Object.is(g, r), `${op} ${what}: element ${i} native ${g} vs reference ${r}`);
    }
  }

  it('[every-isa] fakeQuantize and its gradient parts: special values, exact ties, odd scales and every tail length (bit-exact)', () => {
    // Values the vector kernels could get wrong: NaN, ±Infinity, ±0, the float32 extremes and
    // denormals, exact ties (k + ½)·s, the clamp edges, and near-ties fl32((k + ½)·s) for odd s.
    const special = [NaN, Infinity, -Infinity, 0, -0, 3.4e38, -3.4e38, 1e-45, -1e-45, 1.2e-38, 0.125, -0.375, 0.625, 7.5, -8.5, 7.49, 15.5, 16];
    const scales = [0.25, 0.1, 0.0123, 1e-30, 3e-39, 7.3e5, -0.3, 0, Infinity, NaN];
    for (const scale of scales) {
      const n = 45;
      const x = random([n], 71, -4 / Math.max(Math.abs(scale), 1e-30) * 0.05, 4);
      x.data.set(special);
      for (let k = 0; k < 8; k++) x.data[special.length + k] = Math.fround((k - 4 + 0.5) * (Number.isFinite(scale) ? scale : 1));
      const s: RawTensor = { data: Float32Array.of(scale), shape: [], dtype: 'float32' };
      const g = random([n], 72, -2, 2);
      g.data[3] = 0;
      g.data[4] = -0;
      for (const [zp, qmin, qmax] of [[0, -8, 7], [3, 0, 15], [-1, -128, 127]] as const) {
        const z: RawTensor = { data: Float32Array.of(zp), shape: [], dtype: 'float32' };
        // Every tail length 1..17 of the 8-lane loops (prefixes of x).
        for (const len of [1, 2, 3, 7, 8, 9, 15, 16, 17, n]) {
          const xs: RawTensor = { data: x.data.slice(0, len), shape: [len], dtype: 'float32' };
          const gs: RawTensor = { data: g.data.slice(0, len), shape: [len], dtype: 'float32' };
          const what = `s=${scale} z=${zp} [${qmin}, ${qmax}] n=${len}`;
          checkBits('fakeQuantize', [xs, s, z], { qmin, qmax, gradient: 'clipped' }, what);
          for (const part of ['x', 'scale', 'zeroPoint'] as const) {
            for (const gradient of ['ste', 'clipped'] as const) {
              checkBits('fakeQuantizeGrad', [gs, xs, s, z], { qmin, qmax, gradient, part, reduce: false }, `${what} ${part} ${gradient}`);
            }
          }
          checkBits('fakeQuantizeGrad', [gs, xs, s, z], { qmin, qmax, gradient: 'clipped', part: 'scale', reduce: false, scaleGradFactor: 0.37 }, `${what} scaled`);
          // The x half of the fused part is exact; its scale half is a float64 sum (1e-6).
          for (const gradient of ['ste', 'clipped'] as const) {
            const attrs = { qmin, qmax, gradient, part: 'xAndScale', reduce: true } as const;
            const fused = nativeKernel('fakeQuantizeGrad')!([gs, xs, s, z], attrs)!;
            setBackend('reference');
            // (unreduced: the reference's float64 re-summing of a same-shape part turns −0 into +0)
            const xPart = runKernel('fakeQuantizeGrad', [gs, xs, s, z], { ...attrs, part: 'x', reduce: false });
            const sPart = runKernel('fakeQuantizeGrad', [gs, xs, s, z], { ...attrs, part: 'scale' });
            assert.deepEqual(fused.shape, [len + 1]);
            for (let i = 0; i < len; i++) assert.ok(Object.is(fused.data[i], xPart.data[i]), `${what} xAndScale ${gradient}: x part ${i}`);
            const want = sPart.data[0]!;
            const have = fused.data[len]!;
            assert.ok((Number.isNaN(want) && Number.isNaN(have)) || Math.abs(have - want) <= 1e-6 * (1 + Math.abs(want)), `${what} xAndScale: scale part ${have} vs ${want}`);
          }
        }
      }
    }
  });

  it("[every-isa] fakeQuantizeGrad 'xAndScale' and scaleGradFactor: per tensor and per channel, one thread = two threads", () => {
    const shape = [6, 7, 500];
    const gy = random(shape, 81, -1, 1);
    const xx = random(shape, 82, -2, 2);
    const z: RawTensor = { data: new Float32Array(6), shape: [6, 1, 1], dtype: 'float32' };
    const tol = { atol: 1e-6, rtol: 1e-6 };
    for (const s of [random([], 83, 0.01, 0.3), random([6, 1, 1], 84, 0.01, 0.3)]) {
      const zz = s.shape.length === 0 ? { ...z, data: Float32Array.of(0), shape: [] } : z;
      for (const scaleGradFactor of [1, 0.0123]) {
        const attrs = { qmin: -8, qmax: 7, gradient: 'clipped', reduce: true, scaleGradFactor } as const;
        check('fakeQuantizeGrad', [gy, xx, s, zz], { ...attrs, part: 'xAndScale' }, tol);
        check('fakeQuantizeGrad', [gy, xx, s, zz], { ...attrs, part: 'scale' }, tol);
        const kernel = nativeKernel('fakeQuantizeGrad')!;
        const threads = nativeInfo()!.threads;
        setNativeThreads(1);
        const one = kernel([gy, xx, s, zz], { ...attrs, part: 'xAndScale' })!;
        setNativeThreads(2);
        const two = kernel([gy, xx, s, zz], { ...attrs, part: 'xAndScale' })!;
        setNativeThreads(threads);
        assert.deepEqual(Array.from(two.data), Array.from(one.data), 'xAndScale: 1 vs 2 threads');
        // The fused pass gives exactly what the two separate native passes give.
        const xOnly = kernel([gy, xx, s, zz], { ...attrs, part: 'x' })!;
        const sOnly = kernel([gy, xx, s, zz], { ...attrs, part: 'scale' })!;
        assert.deepEqual(Array.from(one.data), [...xOnly.data, ...sOnly.data], 'xAndScale = x part then scale part');
      }
    }
  });

  it('softmax and logSoftmax along the last axis (1e-6 absolute)', () => {
    for (const [i, n] of ODD.entries()) {
      const x = random([4, n], i, -10, 10);
      check('softmax', [x], { axis: 1 }, { atol: 1e-6, rtol: 1e-5 });
      check('logSoftmax', [x], { axis: 1 }, { atol: 1e-5, rtol: 1e-6 });
      check('softmax', [random([2, 3, n], i)], { axis: 2 }, { atol: 1e-6, rtol: 1e-5 });
    }
    declines('softmax', [random([3, 4], 1)], { axis: 0 });
  });

  it('[every-isa] matmul, all transposes, batched and broadcast batch (1e-5 * K absolute)', () => {
    const sizes: [number, number, number][] = [
      [1, 1, 1], [3, 7, 17], [17, 33, 65], [65, 129, 7], [129, 65, 33], [14, 32, 256], [15, 33, 257], [200, 300, 150],
      // On 2 threads: split by columns into 128 + 128 (not whole 48-wide panels), each block ending
      // in a 32-wide panel; rows 40 = 4 x 9 + 4.
      [40, 256, 70],
    ];
    for (const [i, [m, n, k]] of sizes.entries()) {
      const tol = { atol: 1e-5 * k, rtol: 1e-5 };
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const a = random(transA ? [k, m] : [m, k], i);
          const b = random(transB ? [n, k] : [k, n], i + 7);
          check('matmul', [a, b], { transA, transB }, tol);
        }
      }
      const a3 = random([3, m, k], i + 1);
      const b3 = random([3, k, n], i + 2);
      check('matmul', [a3, b3], { transA: false, transB: false }, tol);
      check('matmul', [a3, random([k, n], i + 3)], { transA: false, transB: false }, tol);
      check('matmul', [random([m, k], i + 4), b3], { transA: false, transB: false }, tol);
    }
    declines('matmul', [random([2, 1, 3, 4], 1), random([1, 2, 4, 5], 2)], { transA: false, transB: false });
  });

  it('[every-isa] matmul gives the same result on 1 and 2 threads', () => {
    // The second size spans several (K, N) blocks: the 2-thread path packs the next block of B
    // while it computes on the current one.
    // The transposed case also has a partial last row task and a partial last panel of B.
    for (const [m, k, n, trans] of [[300, 200, 250, false], [125, 530, 1070, false], [131, 600, 517, true]] as const) {
      const a = random(trans ? [k, m] : [m, k], 1);
      const b = random(trans ? [n, k] : [k, n], 2);
      setNativeThreads(1);
      const one = nativeKernel('matmul')!([a, b], { transA: trans, transB: trans })!;
      setNativeThreads(2);
      const two = nativeKernel('matmul')!([a, b], { transA: trans, transB: trans })!;
      assert.deepEqual(one.data, two.data, `${m}x${k}x${n}${trans ? ' transposed' : ''}`);
    }
  });

  it('[every-isa] linear = x·wᵀ + bias against float64, odd sizes, 1 and 2 threads', () => {
    const before = nativeInfo()!.threads;
    const sizes: [number, number, number][] = [[1, 1, 1], [3, 7, 17], [17, 33, 65], [65, 129, 7], [129, 80, 320], [257, 80, 1001], [2048, 80, 2000]];
    for (const [i, [m, n, k]] of sizes.entries()) {
      const x = random([m, k], i + 11);
      const w = random([n, k], i + 12);
      const bias = random([n], i + 13, -3, 3);
      for (const threads of [1, 2]) {
        setNativeThreads(threads);
        const y = nativeKernel('linear')!([x, w, bias], NO_ATTRS)!;
        assert.deepEqual(y.shape, [m, n]);
        let worst = 0;
        for (let r = 0; r < m; r++) {
          for (let c = 0; c < n; c++) {
            let s = bias.data[c]!;
            for (let p = 0; p < k; p++) s += x.data[r * k + p]! * w.data[c * k + p]!;
            const excess = Math.abs(y.data[r * n + c]! - s) - (1e-6 * k + 1e-6 * Math.abs(s));
            if (!(excess <= worst)) worst = Number.isNaN(excess) ? Infinity : excess;
          }
        }
        assert.equal(worst, 0, `${m}x${n}x${k}, ${threads} thread(s)`);
        if (m * n * k < 1e7) check('linear', [x, w, bias], NO_ATTRS, { atol: 1e-5 * k, rtol: 1e-5 });
      }
    }
    setNativeThreads(before);
    declines('linear', [random([3, 4], 1), random([5, 3], 2), random([5], 3)], NO_ATTRS);
    declines('linear', [random([3, 4], 1), random([5, 4], 2), random([4], 3)], NO_ATTRS);
    declines('linear', [random([2, 3, 4], 1), random([5, 4], 2), random([5], 3)], NO_ATTRS);
  });

  it('transpose for rank 2 to 4 (exact)', () => {
    const cases: [number[], number[]][] = [
      [[7, 33], [1, 0]], [[3, 5, 7], [2, 0, 1]], [[3, 5, 7], [0, 2, 1]], [[2, 3, 5, 7], [0, 2, 3, 1]],
      [[2, 3, 5, 7], [0, 3, 1, 2]], [[2, 3, 5, 7], [1, 0, 2, 3]], [[1, 17, 1, 3], [3, 2, 1, 0]],
    ];
    for (const [i, [shape, perm]] of cases.entries()) check('transpose', [random(shape, i)], { perm }, EXACT);
  });

  // [N, C, H, W, O, KH, KW, stride, padding, dilation, groups]
  const convCases: [number, number, number, number, number, number, number, [number, number], [number, number], [number, number], number][] = [
    [4, 1, 28, 28, 6, 5, 5, [1, 1], [0, 0], [1, 1], 1], // LeNet conv1
    [3, 6, 14, 14, 16, 5, 5, [1, 1], [0, 0], [1, 1], 1], // LeNet conv2
    [2, 3, 7, 9, 5, 3, 3, [2, 2], [1, 1], [1, 1], 1],
    [1, 4, 17, 13, 6, 3, 2, [1, 2], [2, 1], [2, 1], 2],
    [3, 6, 9, 9, 6, 3, 3, [1, 1], [1, 1], [1, 1], 6], // depthwise
    [2, 8, 5, 7, 3, 1, 1, [1, 1], [0, 0], [1, 1], 1], // pointwise
    [1, 2, 3, 3, 1, 3, 3, [1, 1], [0, 0], [1, 1], 1],
    [16, 1, 28, 28, 6, 5, 5, [1, 1], [2, 2], [1, 1], 1], // LeNet conv1 as in the model (padded), parallel over samples
    [16, 6, 14, 14, 16, 5, 5, [1, 1], [0, 0], [1, 1], 1],
    [2, 40, 9, 9, 70, 3, 3, [1, 1], [1, 1], [1, 1], 1], // wide enough for the packed SGEMM path
    [3, 4, 11, 10, 6, 3, 3, [2, 3], [0, 2], [1, 1], 2],
    [5, 3, 33, 17, 7, 4, 4, [3, 2], [1, 2], [1, 2], 1],
    [3, 4, 9, 8, 6, 3, 3, [1, 1], [2, 1], [2, 1], 2], // stride 1: the wide path with groups, dilation, padding
    [2, 3, 5, 37, 9, 2, 4, [1, 1], [0, 3], [1, 1], 1], // rows longer than one vector, 9 output channels
    [2, 2, 12, 14, 56, 5, 5, [1, 1], [1, 0], [1, 2], 2], // 28 channels per group in the lanes (second block masked)
    [2, 24, 7, 6, 10, 3, 3, [1, 1], [1, 1], [1, 1], 2], // backward in x by tap-major tiles, 12 channels per group in two blocks
    // depthwise (groups = C = O): native/dwconv.cc; odd maps, rows off the vector width, N = 1 and N > 1;
    // stride-1 maps whose padded row is shorter than OW rounded up to a vector take the flat variants
    [1, 5, 9, 11, 5, 3, 3, [1, 1], [1, 1], [1, 1], 5],
    [3, 7, 13, 17, 7, 3, 3, [2, 2], [1, 1], [1, 1], 7], // stride 2 (column phases), padded
    [2, 4, 10, 10, 4, 3, 3, [2, 2], [0, 0], [1, 1], 4], // stride 2, unpadded
    [2, 3, 8, 19, 3, 3, 3, [1, 1], [0, 0], [1, 1], 3], // rows of 17 outputs: a full vector and a masked tail
    [2, 6, 14, 14, 6, 5, 5, [1, 1], [2, 2], [1, 1], 6], // 5x5
    [2, 5, 7, 9, 5, 5, 5, [1, 1], [2, 2], [1, 1], 5], // 5x5 on a short row: the flat (row pitch) variants
    [3, 5, 15, 33, 5, 5, 5, [2, 2], [2, 2], [1, 1], 5], // 5x5, stride 2, 17 outputs per row
    [2, 4, 9, 7, 4, 7, 7, [1, 1], [3, 3], [1, 1], 4], // 7x7: the generic loops
    [2, 3, 11, 9, 3, 3, 2, [1, 2], [1, 0], [1, 1], 3], // non-square kernel, strides 1 x 2
    [2, 3, 10, 12, 3, 3, 3, [3, 3], [1, 1], [1, 1], 3], // stride 3
    [1, 2, 1, 1, 2, 3, 3, [1, 1], [1, 1], [1, 1], 2], // a 1x1 map, all taps but one in the padding
    [8, 32, 7, 7, 32, 3, 3, [1, 1], [1, 1], [1, 1], 32], // MobileNet-like, parallel over planes / channels
    [4, 24, 14, 14, 24, 3, 3, [2, 2], [1, 1], [1, 1], 24],
    // stride-2 column matrices (AVX-512: rows of at most 16 outputs by one permute; longer rows
    // by the scalar loop), padded and unpadded, odd widths
    [2, 2, 11, 13, 5, 3, 3, [2, 2], [1, 1], [1, 1], 1],
    [2, 1, 9, 40, 3, 3, 3, [2, 2], [0, 1], [1, 1], 1],
    [3, 1, 28, 28, 16, 3, 3, [2, 2], [1, 1], [1, 1], 1],
    // ungrouped 1x1 convs, three images per call (AVX-512): 1, 2, 4 and 5 images (a last call of
    // one or two), rows off the 8-row blocks, a map of 64 values and one past a vector
    [5, 20, 7, 7, 13, 1, 1, [1, 1], [0, 0], [1, 1], 1],
    [4, 40, 4, 4, 36, 1, 1, [1, 1], [0, 0], [1, 1], 1],
    [1, 128, 3, 5, 70, 1, 1, [1, 1], [0, 0], [1, 1], 1],
    [2, 33, 8, 8, 9, 1, 1, [1, 1], [0, 0], [1, 1], 1],
    [4, 7, 17, 1, 30, 1, 1, [1, 1], [0, 0], [1, 1], 1],
    // 3x3 stride 2 on maps of at most 14 + 2 pw columns (AVX-512: four row x column phase planes of
    // pitch 8): odd and even heights and widths, padding 0, 1 and 2
    [3, 5, 11, 9, 5, 3, 3, [2, 2], [1, 1], [1, 1], 5],
    [2, 3, 14, 13, 3, 3, 3, [2, 2], [1, 1], [1, 1], 3],
    [2, 3, 9, 12, 3, 3, 3, [2, 2], [0, 0], [1, 1], 3],
    [2, 4, 10, 12, 4, 3, 3, [2, 2], [2, 2], [1, 1], 4],
    [1, 2, 23, 10, 2, 3, 3, [2, 2], [1, 2], [1, 1], 2],
    // grad weight over blocks of 16 channels (AVX-512, 3x3 / 5x5, C >= 32): a masked last block,
    // strides 1 and 2, padded and unpadded, 5x5 with one lane in the last block
    [3, 40, 9, 11, 40, 3, 3, [2, 2], [1, 1], [1, 1], 40],
    [2, 33, 8, 8, 33, 5, 5, [1, 1], [2, 2], [1, 1], 33],
    [2, 48, 6, 5, 48, 3, 3, [1, 1], [0, 0], [1, 1], 48],
    [5, 64, 14, 14, 64, 3, 3, [2, 2], [1, 1], [1, 1], 64],
    [2, 36, 10, 9, 36, 5, 5, [1, 1], [2, 2], [1, 1], 36], // (grad input over blocks too on maps of more than 64 values)
    [2, 6, 9, 9, 6, 3, 3, [1, 1], [1, 1], [2, 2], 6], // dilation 2: the generic grouped path
    // maps of at most 64 values (AVX-512: held in 1, 2, 3 or 4 vectors, taps by permutation tables)
    [64, 16, 4, 4, 16, 3, 3, [1, 1], [1, 1], [1, 1], 16], // MobileNet's 4x4 stage: one vector per plane
    [3, 5, 5, 6, 5, 3, 3, [1, 1], [1, 1], [1, 1], 5], // 30 values: two vectors
    [2, 4, 7, 6, 4, 3, 3, [1, 1], [1, 1], [1, 1], 4], // 42 values: three vectors
    [2, 4, 8, 8, 4, 3, 3, [1, 1], [1, 1], [1, 1], 4], // 64 values: four vectors
    [9, 6, 7, 7, 6, 3, 3, [2, 2], [1, 1], [1, 1], 6], // 7x7 -> 4x4 at stride 2: four input vectors, one output vector
    [2, 3, 8, 8, 3, 5, 5, [1, 1], [2, 2], [1, 1], 3], // 5x5 taps
    [2, 3, 6, 7, 3, 2, 3, [2, 1], [0, 1], [1, 1], 3], // non-square kernel, unpadded rows, strides 2 x 1
    [2, 3, 5, 5, 3, 3, 3, [1, 1], [0, 0], [1, 1], 3], // valid convolution: 3x3 outputs
  ];

  it('[every-isa] conv2d forward and both backward passes (1e-5 * taps absolute)', () => {
    for (const [i, [n, c, h, w, o, kh, kw, stride, padding, dilation, groups]] of convCases.entries()) {
      const attrs = { stride, padding, dilation, groups };
      const x = random([n, c, h, w], i);
      const weight = random([o, c / groups, kh, kw], i + 10);
      const taps = (c / groups) * kh * kw;
      check('conv2d', [x, weight], attrs, { atol: 1e-5 * taps, rtol: 1e-5 });
      setBackend('reference');
      const y = runKernel('conv2d', [x, weight], attrs);
      const dy = random(y.shape, i + 20);
      check('conv2dBackwardInput', [dy, weight], { ...attrs, inputShape: x.shape }, { atol: 1e-5 * o * kh * kw, rtol: 1e-5 });
      const pixels = y.shape[0]! * y.shape[2]! * y.shape[3]!;
      check('conv2dBackwardWeight', [x, dy], { ...attrs, weightShape: weight.shape }, { atol: 1e-5 * pixels, rtol: 1e-5 });
    }
  });

  // AdderNet: float32 sums of |x - w| (the reference sums in float64): tolerances scale with the number of terms.
  const adderCases: typeof convCases = [
    [8, 1, 28, 28, 6, 5, 5, [1, 1], [2, 2], [1, 1], 1], // LeNet conv1 (padded), split over two threads
    [8, 6, 14, 14, 16, 5, 5, [1, 1], [0, 0], [1, 1], 1], // LeNet conv2
    [9, 400, 1, 1, 17, 1, 1, [1, 1], [0, 0], [1, 1], 1], // adderLinear (a 1x1 adderConv2d)
    [2, 3, 7, 9, 5, 3, 3, [2, 2], [1, 1], [1, 1], 1],
    [1, 4, 17, 13, 6, 3, 2, [1, 2], [2, 1], [2, 1], 2],
    [3, 6, 9, 9, 6, 3, 3, [1, 1], [1, 1], [1, 1], 6], // depthwise
    [5, 3, 33, 17, 7, 4, 4, [3, 2], [1, 2], [1, 2], 1],
    [2, 2, 12, 14, 56, 5, 5, [1, 1], [1, 0], [1, 2], 2],
    [3, 6, 5, 5, 4, 3, 3, [2, 2], [1, 1], [1, 1], 2], // 9 output positions: vectorised over the receptive field
    [2, 5, 4, 3, 7, 3, 2, [2, 1], [1, 0], [1, 1], 1], // 4 output positions
  ];

  /** Every `every`-th element of t replaced by values[k % values.length] (k-th replacement). */
  function sprinkle(t: RawTensor, every: number, offset: number, values: readonly number[]): RawTensor {
    const data = (t.data as Float32Array).slice();
    for (let i = offset, k = 0; i < data.length; i += every, k++) data[i] = values[k % values.length]!;
    return { ...t, data };
  }

  function checkAdder(i: number, [n, c, h, w, o, kh, kw, stride, padding, dilation, groups]: (typeof convCases)[number], specials: boolean): void {
    const attrs = { stride, padding, dilation, groups };
    let x = random([n, c, h, w], 100 + i);
    let weight = random([o, c / groups, kh, kw], 110 + i);
    if (specials) {
      x = sprinkle(x, 37, i, [NaN, Infinity, -Infinity, -0]);
      weight = sprinkle(weight, 23, 1, [NaN, 0.5]);
    }
    const taps = (c / groups) * kh * kw;
    check('adderConv2d', [x, weight], attrs, { atol: 1e-6 * taps, rtol: 1e-5 });
    setBackend('reference');
    const y = runKernel('adderConv2d', [x, weight], attrs);
    // gy == 0 outputs are skipped by the reference (a NaN patch there adds nothing): every 3rd is 0 / -0.
    let gy = sprinkle(random(y.shape, 120 + i), 3, 0, [0, -0]);
    if (specials) gy = sprinkle(gy, 101, 7, [NaN]);
    check('adderConv2dGrad', [gy, x, weight], { ...attrs, part: 'input' }, { atol: 1e-6 * o * kh * kw, rtol: 1e-5 });
    const pixels = y.shape[0]! * y.shape[2]! * y.shape[3]!;
    check('adderConv2dGrad', [gy, x, weight], { ...attrs, part: 'weight' }, { atol: 2e-6 * pixels, rtol: 1e-5 });
  }

  it('[every-isa] adderConv2d and both parts of adderConv2dGrad: stride, padding, dilation, groups (1e-6 * terms absolute)', () => {
    for (const [i, conv] of adderCases.entries()) checkAdder(i, conv, false);
  });

  it('[every-isa] adderConv2d and adderConv2dGrad: NaN and infinities propagate as in the reference, gy == 0 skipped', () => {
    for (const [i, conv] of adderCases.entries()) checkAdder(i, conv, true);
    // the skip is observable: a NaN cell seen only by outputs with gy = 0 gets gradient 0, not NaN
    const x = random([1, 1, 3, 3], 1);
    (x.data as Float32Array)[0] = NaN;
    const weight = random([1, 1, 2, 2], 2);
    const attrs = { stride: [1, 1] as [number, number], padding: [0, 0] as [number, number], dilation: [1, 1] as [number, number], groups: 1 };
    const gy: RawTensor = { data: Float32Array.from([0, 1, 1, 1]), shape: [1, 1, 2, 2], dtype: 'float32' };
    const dx = nativeKernel('adderConv2dGrad')!([gy, x, weight], { ...attrs, part: 'input' })!;
    assert.equal(dx.data[0], 0);
    assert.ok(!Number.isNaN(dx.data[4]!));
    const dw = nativeKernel('adderConv2dGrad')!([gy, x, weight], { ...attrs, part: 'weight' })!;
    assert.ok(Array.from(dw.data).every((v) => Number.isFinite(v)));
    check('adderConv2dGrad', [gy, x, weight], { ...attrs, part: 'input' }, { atol: 1e-6, rtol: 1e-6 });
  });

  it('adderConv2d kernels give the same result on 1 and 2 threads', () => {
    const conv = adderCases[1]!;
    const [n, c, h, w, o, kh, kw, stride, padding, dilation, groups] = conv;
    const attrs = { stride, padding, dilation, groups };
    const x = random([n, c, h, w], 5);
    const weight = random([o, c / groups, kh, kw], 6);
    const gy = random([n, o, 10, 10], 7);
    const run = (): number[][] => [
      Array.from(nativeKernel('adderConv2d')!([x, weight], attrs)!.data),
      Array.from(nativeKernel('adderConv2dGrad')!([gy, x, weight], { ...attrs, part: 'input' })!.data),
      Array.from(nativeKernel('adderConv2dGrad')!([gy, x, weight], { ...attrs, part: 'weight' })!.data),
    ];
    const saved = nativeInfo()!.threads;
    try {
      setNativeThreads(1);
      const one = run();
      setNativeThreads(2);
      assert.deepEqual(run(), one);
    } finally {
      setNativeThreads(saved);
    }
  });

  it('[every-isa] conv2dFused = conv2d + bias, ReLU, max pooling (1e-5 * taps absolute)', () => {
    type Fused = [number[], number[], Partial<PrimitiveAttrs['conv2d']>, boolean, PrimitiveAttrs['maxPool2d'] | null];
    const p2 = { kernel: [2, 2], stride: [2, 2], padding: [0, 0] } as PrimitiveAttrs['maxPool2d'];
    const cases: Fused[] = [
      [[5, 1, 28, 28], [6, 1, 5, 5], { padding: [2, 2] }, true, p2], // LeNet conv1 block
      [[5, 6, 14, 14], [16, 6, 5, 5], {}, true, p2], // LeNet conv2 block
      [[3, 2, 11, 13], [5, 2, 3, 3], { padding: [1, 0] }, true, p2], // odd sizes: the last row / column is not pooled
      [[2, 3, 10, 12], [9, 3, 3, 3], { padding: [1, 1] }, true, p2], // pooled row pairs in two channel blocks
      [[2, 3, 9, 35], [7, 3, 3, 2], { dilation: [2, 1] }, false, p2],
      [[2, 4, 8, 9], [6, 2, 3, 3], { groups: 2, padding: [1, 1] }, true, { kernel: [3, 2], stride: [2, 1], padding: [0, 0] }],
      [[3, 3, 7, 6], [4, 3, 2, 2], {}, true, null],
      [[2, 2, 9, 9], [3, 2, 3, 3], { stride: [2, 1], padding: [1, 1] }, true, p2], // stride 2: not the wide path
      [[2, 3, 6, 6], [70, 3, 3, 3], { padding: [1, 1] }, true, p2], // many channels: im2col + SGEMM, then the epilogue
      [[2, 2, 12, 14], [56, 1, 5, 5], { groups: 2, padding: [1, 0] }, true, p2], // channels in the lanes, masked tail block
      [[3, 16, 7, 9], [32, 16, 3, 3], { padding: [1, 1] }, false, { kernel: [3, 3], stride: [2, 2], padding: [0, 0] }],
    ];
    for (const [i, [xs, ws, geo, relu, pool]] of cases.entries()) {
      const attrs = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, ...geo, relu, pool } as PrimitiveAttrs['conv2dFused'];
      const taps = ws[1]! * ws[2]! * ws[3]!;
      const x = random(xs, i);
      check('conv2dFused', [x, random(ws, i + 30), random([ws[0]!], i + 60)], attrs, { atol: 1e-5 * taps, rtol: 1e-5 });
      // A few NaN pixels: the outputs they reach stay NaN through the bias, ReLU and pooling.
      const withNan: RawTensor = { ...x, data: x.data.map((v, k) => (k % 97 === 13 ? NaN : v)) };
      check('conv2dFused', [withNan, random(ws, i + 30), random([ws[0]!], i + 60)], attrs, { atol: 1e-5 * taps, rtol: 1e-5 });
    }
  });

  it('[every-isa] conv2dFused with a BatchNorm scale and a ReLU6 clamp (pointwise, depthwise, stem, implicit, wide, pooled paths)', () => {
    type Case = [number[], number[], Partial<PrimitiveAttrs['conv2d']>, boolean, number | null, boolean, PrimitiveAttrs['maxPool2d'] | null];
    const p2 = { kernel: [2, 2], stride: [2, 2], padding: [0, 0] } as PrimitiveAttrs['maxPool2d'];
    const cases: Case[] = [
      [[5, 24, 7, 7], [96, 24, 1, 1], {}, true, 6, true, null], // MobileNet expand 1x1 (per-sample GEMM)
      [[5, 96, 7, 7], [24, 96, 1, 1], {}, false, null, true, null], // project 1x1, linear bottleneck
      [[3, 32, 7, 7], [32, 1, 3, 3], { padding: [1, 1], groups: 32 }, true, 6, true, null], // depthwise stride 1
      [[3, 16, 14, 14], [16, 1, 3, 3], { padding: [1, 1], stride: [2, 2], groups: 16 }, true, 6, true, null], // depthwise stride 2
      [[2, 8, 13, 11], [8, 1, 3, 3], { padding: [1, 1], stride: [2, 2], groups: 8 }, false, null, true, null], // stride 2, odd map, no clamp
      [[4, 1, 28, 28], [16, 1, 3, 3], { padding: [1, 1], stride: [2, 2] }, true, 6, true, null], // stem: im2col
      [[2, 6, 12, 10], [8, 6, 3, 3], { padding: [1, 1] }, true, 6, true, null], // few output channels: implicit path
      [[2, 3, 12, 10], [8, 3, 3, 3], { padding: [1, 1] }, true, 1.5, false, p2], // wide path with the clamp in the pooled tiles
      [[2, 3, 11, 10], [8, 3, 3, 3], { padding: [1, 1] }, true, 6, true, p2], // scale then pooling (negative scales)
    ];
    for (const [i, [xs, ws, geo, relu, clampMax, scaled, pool]] of cases.entries()) {
      const attrs = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, ...geo, relu, clampMax, pool } as PrimitiveAttrs['conv2dFused'];
      const taps = ws[1]! * ws[2]! * ws[3]!;
      const x = random(xs, i + 100);
      const scale = random([ws[0]!], i + 160); // signs mixed, as BatchNorm weights can be
      const inputs = [x, random(ws, i + 130), random([ws[0]!], i + 190), ...(scaled ? [scale] : [])];
      check('conv2dFused', inputs, attrs, { atol: 1e-5 * taps, rtol: 1e-5 });
      const withNan: RawTensor = { ...x, data: x.data.map((v, k) => (k % 89 === 7 ? NaN : v)) };
      check('conv2dFused', [withNan, ...inputs.slice(1)], attrs, { atol: 1e-5 * taps, rtol: 1e-5 });
    }
  });

  it('[every-isa] pooling: max with and without fused relu (exact, first maximum), avg (1e-6 relative) and their backward passes', () => {
    const cases: [number[], [number, number], [number, number], [number, number]][] = [
      [[2, 3, 28, 28], [2, 2], [2, 2], [0, 0]], [[1, 2, 7, 9], [3, 3], [2, 2], [1, 1]], [[3, 1, 17, 5], [2, 3], [1, 2], [1, 0]],
      [[1, 1, 1, 1], [1, 1], [1, 1], [0, 0]], [[2, 2, 33, 65], [3, 2], [3, 1], [1, 1]],
      [[3, 2, 9, 7], [2, 2], [2, 2], [0, 0]], [[64, 6, 28, 28], [2, 2], [2, 2], [0, 0]],
    ];
    for (const [i, [shape, kernel, stride, padding]] of cases.entries()) {
      const attrs = { kernel, stride, padding };
      const x = random(shape, i);
      // Quantised values make ties, so "first maximum" is really exercised; NaN anywhere in a
      // window wins (its last NaN, as torch's max_pool2d), with or without the fused relu.
      const ties: RawTensor = { ...x, data: x.data.map((v) => Math.round(v * 2) / 2) };
      const nans: RawTensor = { ...x, data: x.data.map((v, k) => (k % 7 === 3 || k % 11 === 5 ? NaN : v)) };
      for (const input of [x, ties, nans]) {
        check('avgPool2d', [input], attrs, { atol: 1e-7, rtol: 1e-6 });
        // With relu, windows whose maximum is <= 0 (many exact zeros among the ties) drop out.
        for (const maxAttrs of [attrs, { ...attrs, relu: true }]) {
          check('maxPool2d', [input], maxAttrs, EXACT);
          setBackend('reference');
          const y = runKernel('maxPool2d', [input], maxAttrs);
          const dy = random(y.shape, i + 5);
          check('maxPool2dBackward', [dy, input], maxAttrs, { atol: 1e-6, rtol: 1e-6 });
          check('maxPool2dGather', [random(shape, i + 6), input], maxAttrs, EXACT);
          check('avgPool2dBackward', [dy], { ...attrs, inputShape: shape }, { atol: 1e-6, rtol: 1e-6 });
        }
      }
    }
  });

  it('[every-isa] lstmSequence, gruSequence and their backward passes: layouts, directions, odd sizes (2e-6 + 2e-5 relative)', () => {
    // [steps, batch, hidden, batchFirst, reverse]; batch 33 and 32 are split between two threads.
    const cases: [number, number, number, boolean, boolean][] = [
      [1, 1, 1, false, false], [4, 3, 5, true, false], [5, 2, 17, false, true], [7, 33, 16, true, true], [12, 32, 64, true, false],
    ];
    const tol = { atol: 2e-6, rtol: 2e-5 };
    for (const [i, [steps, batch, hidden, batchFirst, reverse]] of cases.entries()) {
      const attrs = { batchFirst, reverse };
      const rows = batchFirst ? [batch, steps] : [steps, batch];
      const scale = 2 / Math.sqrt(hidden);
      const h0 = random([batch, hidden], i + 1);
      const c0 = random([batch, hidden], i + 2, -2, 2);
      // Gate inputs up to ±4: both branches of the tanh approximation and saturated gates.
      const lstmInputs = [random([...rows, 4 * hidden], i + 3, -4, 4), random([4 * hidden, hidden], i + 4, -scale, scale), random([4 * hidden], i + 10), h0, c0];
      check('lstmSequence', lstmInputs, attrs, tol);
      setBackend('reference');
      const lstmOut = runKernel('lstmSequence', lstmInputs, attrs);
      check('lstmSequenceBackward', [random(lstmOut.shape, i + 5), lstmOut, lstmInputs[1]!, c0], attrs, tol);
      const gruInputs = [random([...rows, 3 * hidden], i + 6, -4, 4), random([3 * hidden, hidden], i + 7, -scale, scale), random([3 * hidden], i + 8), random([3 * hidden], i + 11), h0];
      check('gruSequence', gruInputs, attrs, tol);
      setBackend('reference');
      const gruOut = runKernel('gruSequence', gruInputs, attrs);
      check('gruSequenceBackward', [random(gruOut.shape, i + 9), gruOut, gruInputs[1]!, h0], attrs, tol);
    }
  });

  it('lstmSequence and gruSequence: one thread gives the two-thread result bit for bit', () => {
    const attrs = { batchFirst: true, reverse: false };
    const gates = random([33, 9, 4 * 24], 1, -3, 3);
    const w = random([4 * 24, 24], 2, -0.4, 0.4);
    const state = random([33, 24], 3);
    const runs = [1, 2].map((threads) => {
      setNativeThreads(threads);
      const out = nativeKernel('lstmSequence')!([gates, w, random([4 * 24], 8), state, state], attrs)!;
      const grads = nativeKernel('lstmSequenceBackward')!([random(out.shape, 4), out, w, state], attrs)!;
      const gru = nativeKernel('gruSequence')!([random([33, 9, 3 * 24], 5), random([3 * 24, 24], 6, -0.4, 0.4), random([3 * 24], 7), random([3 * 24], 9), state], attrs)!;
      return [out.data, grads.data, gru.data];
    });
    setNativeThreads(nativeInfo()!.threads);
    runs[0]!.forEach((data, k) => assert.deepEqual(data, runs[1]![k], `output ${k}`));
  });

  it('[every-isa] batchNorm, batchNormBackward and batchNormStats against the float64 reference (1e-5 + 1e-5 relative; sums 1e-5 * sqrt(count))', () => {
    const shapes: number[][] = [[3, 5, 7, 3], [64, 16, 14, 14], [5, 4], [2, 3, 17], [1, 2, 1, 1], [64, 96, 4, 4], [7, 9, 33]];
    for (const [k, shape] of shapes.entries()) {
      const c = shape[1]!;
      const count = sizeOf(shape) / c;
      // An offset far from zero checks the statistics' accuracy (mean 50, spread 2).
      const x = random(shape, 40 + k, k % 2 === 0 ? -2 : 48, k % 2 === 0 ? 3 : 52);
      const w = random([c], 50 + k, 0.5, 1.5);
      const b = random([c], 60 + k);
      const g = random(shape, 70 + k);
      check('batchNorm', [x, w, b], { eps: 1e-5 }, { atol: 1e-5, rtol: 1e-5 });
      check('batchNormStats', [x], NO_ATTRS, { atol: 1e-5, rtol: 1e-5 });
      check('batchNormBackward', [g, x, w], { eps: 1e-5 }, { atol: 1e-5 * Math.sqrt(count), rtol: 1e-5 });
      // batchNormStats's adjoint (g [2, C], x, stats): one value each, so the elementwise tolerance.
      setBackend('reference');
      const xStats = runKernel('batchNormStats', [x], NO_ATTRS);
      check('batchNormStatsBackward', [random([2, c], 75 + k), x, xStats], NO_ATTRS, { atol: 1e-5, rtol: 1e-5 });
      // dx alone to the elementwise tolerance (the check above allows the summed dw, db more).
      const ref = runKernel('batchNormBackward', [g, x, w], { eps: 1e-5 });
      const got = nativeKernel('batchNormBackward')!([g, x, w], { eps: 1e-5 })!;
      for (let i = 0; i < x.data.length; i++) {
        assert.ok(Math.abs(got.data[i]! - ref.data[i]!) <= 1e-5 + 1e-5 * Math.abs(ref.data[i]!), `dx ${i}: ${got.data[i]} vs ${ref.data[i]}`);
      }
      // With batchNormStats(x) handed in (what BatchNorm2d does in training): the same results.
      setBackend('reference');
      const stats = runKernel('batchNormStats', [x], NO_ATTRS);
      check('batchNorm', [x, w, b, stats], { eps: 1e-5 }, { atol: 1e-5, rtol: 1e-5 });
      check('batchNormBackward', [g, x, w, stats], { eps: 1e-5 }, { atol: 1e-5 * Math.sqrt(count), rtol: 1e-5 });
      setBackend('reference');
      const fresh = runKernel('batchNorm', [x, w, b], { eps: 1e-5 });
      const cached = nativeKernel('batchNorm')!([x, w, b, stats], { eps: 1e-5 })!;
      for (let i = 0; i < x.data.length; i++) {
        assert.ok(Math.abs(cached.data[i]! - fresh.data[i]!) <= 1e-5 + 1e-5 * Math.abs(fresh.data[i]!), `cached stats ${i}: ${cached.data[i]} vs ${fresh.data[i]}`);
      }
    }
    // Clamped (BatchNorm → ReLU6 in one op): forward values and the masked backward.
    for (const [k, shape] of [[64, 16, 14, 14], [3, 5, 7, 3], [7, 9, 33], [64, 96, 4, 4]].entries()) {
      const c = shape[1]!;
      const x = random(shape, 80 + k, -2, 3);
      const w = random([c], 81 + k, 0.5, 3);
      const b = random([c], 82 + k, 0, 4);
      const g = random(shape, 83 + k);
      setBackend('reference');
      const stats = runKernel('batchNormStats', [x], NO_ATTRS);
      const attrs = { eps: 1e-5, clamp: [0, 6] as const };
      check('batchNorm', [x, w, b, stats], attrs, { atol: 1e-5, rtol: 1e-5 });
      check('batchNorm', [x, w, b], attrs, { atol: 1e-5, rtol: 1e-5 });
      check('batchNormBackward', [g, x, w, stats, b], attrs, { atol: 1e-5 * Math.sqrt(sizeOf(shape) / c), rtol: 1e-5 });
      setBackend('reference');
      const y = runKernel('batchNorm', [x, w, b, stats], attrs);
      assert.ok(Array.from(y.data).some((v) => v === 0) && Array.from(y.data).some((v) => v === 6), 'both bounds clamp some values');
    }
    // The statistics are used, not recomputed: shifted ones shift the output.
    const x = random([4, 3, 5], 90);
    const stats = { data: Float32Array.from([0, 1, -1, 1, 2, 4]), shape: [2, 3], dtype: 'float32' } as RawTensor;
    const y = nativeKernel('batchNorm')!([x, random([3], 91, 1, 1), random([3], 92, 0, 0), stats], { eps: 0 })!;
    for (let i = 0; i < x.data.length; i++) {
      const ch = Math.floor(i / 5) % 3;
      const expected = (x.data[i]! - stats.data[ch]!) / Math.sqrt(stats.data[3 + ch]!);
      assert.ok(Math.abs(y.data[i]! - expected) <= 1e-6 * (1 + Math.abs(expected)), `given stats ${i}: ${y.data[i]} vs ${expected}`);
    }
  });

  it('[every-isa] clamp and clampBackward: ReLU6 bounds, special values, every tail length (exact)', () => {
    const special = [Number.NaN, Infinity, -Infinity, 0, -0, 6, -6, 6.0000005, 5.9999995, 3, -1e-30, 1e30];
    for (const n of [...ODD, 4096 * 3 + 5, 100003]) {
      const x = random([n], n, -3, 9);
      for (let i = 0; i < Math.min(n, special.length); i++) (x.data as Float32Array)[(i * 7919) % n] = special[i]!;
      const g = random([n], n + 1);
      check('clamp', [x], { min: 0, max: 6 }, EXACT);
      check('clampBackward', [g, x], { min: 0, max: 6 }, EXACT);
      check('clamp', [x], { min: 2, max: -1 }, EXACT); // min > max gives max, as ops.clamp's two wheres
      check('clampBackward', [g, x], { min: -0.5, max: 0.25 }, EXACT);
    }
  });

  it('declines float64 inputs', () => {
    const x: RawTensor = { data: new Float64Array(6), shape: [2, 3], dtype: 'float64' };
    declines('relu', [x], NO_ATTRS);
    declines('matmul', [x, { ...x, shape: [3, 2] }], { transA: false, transB: false });
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`LOWBIT_ISA=${isa} dispatches to the lower ISA and stays correct`, () => {
      const addonPath = fileURLToPath(new URL('../../../build/Release/lowbit_native.node', import.meta.url));
      const script = `
        const a = require(${JSON.stringify(addonPath)});
        const m = 37, n = 45, k = 29;
        const A = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i));
        const B = Float32Array.from({ length: k * n }, (_, i) => Math.cos(i));
        const C = new Float32Array(m * n);
        a.setThreads(2);
        a.sgemm(false, false, m, n, k, A, k, B, n, 0, C, n, 1, 0, 0, 0);
        let err = 0;
        for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
          let s = 0; for (let p = 0; p < k; p++) s += A[i * k + p] * B[p * n + j];
          err = Math.max(err, Math.abs(s - C[i * n + j]));
        }
        console.log(JSON.stringify({ isa: a.info().isa, err }));`;
      const run = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, LOWBIT_ISA: isa }, encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
      const result = JSON.parse(run.stdout) as { isa: string; err: number };
      // The CPU's best ISA from its features (this process may itself run under a forced LOWBIT_ISA).
      const features = nativeInfo()!.features;
      const best = ['avx2', 'fma'].every((f) => features.includes(f)) ? 'avx2' : 'scalar';
      const expected = best === 'scalar' ? best : isa;
      assert.equal(result.isa, expected);
      assert.ok(result.err < 1e-4, `max error ${result.err}`);
    });
  }
});

// ---------------------------------------------------------------- split and vector elementwise paths
//
// Arrays large enough to be split between two threads (more than the pool's inline threshold of
// 150,000 operations), with lengths and rows that are not multiples of 16, and the special values
// sprinkled in. Compared bit for bit with the reference backend (any NaN matches any NaN). The
// tests tagged [every-isa] also run under LOWBIT_ISA=avx2 and scalar (child processes).

const SPECIAL = [NaN, Infinity, -Infinity, 0, -0, 1e-40, -1e-40, 1, -1, 3.4e38, -3.4e38];

/** random() with every 5th element a special value: over the indices, a (seed) and b (seed + 1) see every pair of specials. */
function withSpecials(shape: readonly number[], seed: number, lo = -2, hi = 2): RawTensor {
  const t = random(shape, seed, lo, hi);
  const data = t.data as Float32Array;
  const L = SPECIAL.length;
  for (let i = 0, k = 0; i < data.length; i += 5, k++) {
    data[i] = SPECIAL[seed % 2 === 0 ? k % L : (k + Math.floor(k / L)) % L]!;
  }
  return t;
}

function assertSameBits(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const g = new Uint32Array(Float32Array.from(got).buffer);
  const w = new Uint32Array(Float32Array.from(want).buffer);
  for (let i = 0; i < g.length; i++) {
    if (g[i] === w[i] || (Number.isNaN(got[i]) && Number.isNaN(want[i]))) continue;
    assert.fail(`${what}: element ${i} native ${got[i]} (0x${g[i]!.toString(16)}) vs expected ${want[i]} (0x${w[i]!.toString(16)})`);
  }
}

/** Runs `op` on the native kernel directly and on the reference backend; bitwise comparison. */
function checkBits<P extends PrimitiveName>(op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P]): void {
  const got = nativeKernel(op)?.(inputs, attrs);
  assert.ok(got, `native ${op} declined shapes ${inputs.map((t) => `[${t.shape.join(',')}]`).join(' ')}`);
  setBackend('reference');
  const ref = runKernel(op, inputs, attrs);
  assert.deepEqual(got.shape, ref.shape, `${op}: shape`);
  assertSameBits(got.data, ref.data, `${op} [${inputs.map((t) => t.shape.join('x')).join(', ')}]`);
}

/** Runs `body` with the native pool at `threads` threads, then restores the previous size. */
function withThreads(threads: number, body: () => void): void {
  const saved = nativeInfo()!.threads;
  setNativeThreads(threads);
  try {
    body();
  } finally {
    setNativeThreads(saved);
  }
}

interface SumAddon {
  sumInner(x: Float32Array, y: Float32Array, outer: number, inner: number): void;
  sumOuter(x: Float32Array, y: Float32Array, outer: number, inner: number): void;
}

describe('native elementwise kernels: split and vector paths (bit-exact)', { skip }, () => {
  const forcedIsa = process.env.LOWBIT_ISA;

  it('[every-isa] runs on the ISA LOWBIT_ISA asks for', () => {
    const info = nativeInfo()!;
    if (forcedIsa === 'scalar') assert.equal(info.isa, 'scalar');
    if (forcedIsa === 'avx2') assert.notEqual(info.isa, 'avx512');
  });

  it('[every-isa] binary ops: same shape, scalar and few-row broadcasts with long odd rows, special values', () => {
    const all = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'greater', 'greaterEqual', 'equal', 'reluBackward'] as const;
    const some = ['add', 'div', 'maximum', 'minimum', 'reluBackward'] as const;
    // [a shape, b shape, ops]: layouts [1, 1, n], scalar operand, [1, 3, n] / [1, 2, n] / [2, 3, n] rows, channels.
    const cases: [number[], number[], readonly (typeof all)[number][]][] = [
      [[160007], [160007], all],
      [[160007], [], some],
      [[], [160007], some],
      [[3, 53337], [3, 1], some],
      [[2, 80021], [80021], some],
      [[2, 3, 26669], [2, 1, 26669], some],
      [[5, 7, 4573], [1, 7, 1], some],
    ];
    withThreads(2, () => {
      for (const [i, [sa, sb, ops]] of cases.entries()) {
        const a = withSpecials(sa, 2 * i);
        const b = withSpecials(sb, 2 * i + 1);
        // Equal operands in places, for equal / greaterEqual / the ties of maximum and minimum.
        if (sizeOf(sa) === sizeOf(sb)) for (let k = 3; k < a.data.length; k += 11) b.data[k] = a.data[k]!;
        for (const op of ops) checkBits(op, [a, b], NO_ATTRS);
      }
      // Signed zeros both ways: maximum / minimum return the first operand on ties.
      const z = { data: Float32Array.from({ length: 160000 }, (_, k) => (k % 2 ? 0 : -0)), shape: [160000], dtype: 'float32' } as const;
      const zr = { ...z, data: z.data.map((v) => (Object.is(v, -0) ? 0 : -0)) };
      for (const op of ['maximum', 'minimum', 'add', 'sub'] as const) checkBits(op, [z, zr], NO_ATTRS);
    });
  });

  it('[every-isa] unary neg, abs, relu, sqrt and where with float32 and int32 conditions, special values', () => {
    withThreads(2, () => {
      for (const n of [160007, 1000003 % 160000 + 160000]) {
        const x = withSpecials([n], 7);
        for (const op of ['neg', 'abs', 'relu', 'sqrt'] as const) checkBits(op, [x], NO_ATTRS);
        const a = withSpecials([n], 8);
        const b = withSpecials([n], 9);
        checkBits('where', [x, a, b], NO_ATTRS);  // x as the condition: NaN selects a, -0 selects b
        const condInt: RawTensor = { data: Int32Array.from(x.data, (v) => (v > 0 ? 5 : v < 0 ? -1 : 0)), shape: [n], dtype: 'int32' };
        checkBits('where', [condInt, a, b], NO_ATTRS);
      }
    });
  });

  it('[every-isa] sumInner and sumOuter keep their summation order (double, eight chains / rows in order)', () => {
    const addon = nativeAddon() as unknown as SumAddon;
    const expectInner = (x: Float32Array, outer: number, inner: number): number[] =>
      Array.from({ length: outer }, (_, r) => {
        const acc = [0, 0, 0, 0, 0, 0, 0, 0];
        let k = 0;
        for (; k + 8 <= inner; k += 8) for (let l = 0; l < 8; l++) acc[l]! += x[r * inner + k + l]!;
        for (; k < inner; k++) acc[0]! += x[r * inner + k]!;
        return ((acc[0]! + acc[1]!) + (acc[2]! + acc[3]!)) + ((acc[4]! + acc[5]!) + (acc[6]! + acc[7]!));
      });
    const expectOuter = (x: Float32Array, outer: number, inner: number): number[] =>
      Array.from({ length: inner }, (_, c) => {
        let s = 0;
        for (let r = 0; r < outer; r++) s += x[r * inner + c]!;
        return s;
      });
    withThreads(2, () => {
      for (const [outer, inner] of [[1, 200003], [3, 70001], [200003, 1], [1001, 157], [7, 33]]) {
        const x = random([outer, inner], outer + inner, -3, 3).data as Float32Array;
        x[inner >> 1] = 1e30;  // large terms: any other order rounds differently
        x[x.length - 1] = -1e30;
        const y = new Float32Array(outer);
        addon.sumInner(x, y, outer, inner);
        assertSameBits(y, expectInner(x, outer, inner), `sumInner ${outer}x${inner}`);
        const yo = new Float32Array(inner);
        addon.sumOuter(x, yo, outer, inner);
        assertSameBits(yo, expectOuter(x, outer, inner), `sumOuter ${outer}x${inner}`);
      }
    });
  });

  it('[every-isa] softmax and logSoftmax of few long rows: two threads give the one-thread result', () => {
    const kernels = [nativeKernel('softmax')!, nativeKernel('logSoftmax')!];
    for (const shape of [[1, 100003], [1, 40009]]) {
      const x = random(shape, shape[1]!, -30, 30);
      const withInf = random(shape, 5, -30, 30);
      withInf.data[17] = -Infinity;
      withInf.data[40000] = 30.5;
      for (const input of [x, withInf]) {
        for (const [i, kernel] of kernels.entries()) {
          let one!: RawTensor;
          let two!: RawTensor;
          withThreads(1, () => (one = kernel([input], { axis: 1 })!));
          withThreads(2, () => (two = kernel([input], { axis: 1 })!));
          assertSameBits(two.data, one.data, `${i ? 'logSoftmax' : 'softmax'} [${shape}]`);
        }
      }
      check('softmax', [x], { axis: 1 }, { atol: 1e-6, rtol: 1e-5 });
      check('logSoftmax', [x], { axis: 1 }, { atol: 1e-5, rtol: 1e-6 });
    }
    // Rows of NaN or of -inf take the same path on both thread counts.
    const odd: RawTensor = { data: Float32Array.from({ length: 2 * 60000 }, (_, k) => (k < 60000 ? -Infinity : k === 70000 ? NaN : k % 7)), shape: [2, 60000], dtype: 'float32' };
    for (const kernel of kernels) {
      let one!: RawTensor;
      let two!: RawTensor;
      withThreads(1, () => (one = kernel([odd], { axis: 1 })!));
      withThreads(2, () => (two = kernel([odd], { axis: 1 })!));
      assertSameBits(two.data, one.data, 'rows of -inf / with a NaN');
    }
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : false }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 15, `expected the 15 tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
