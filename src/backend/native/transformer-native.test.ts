/**
 * The fused Transformer kernels of the native backend (native/transformer.cc: layerNorm, gelu,
 * attention and their backward primitives) against the reference kernels (float64 sums, the
 * specification), on odd sizes, causal and unmasked attention, several head counts, with 1 and 2
 * pool threads (whose results must be identical: the kernels' sums do not depend on the thread
 * count). Tests tagged [every-isa] re-run under LOWBIT_ISA=avx2 and scalar.
 * Tolerances: |native − reference| <= atol + rtol·|reference|, stated per kernel.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import '../reference/index.ts';
import type { PrimitiveAttrs, PrimitiveName, RawTensor } from '../primitives.ts';
import { sizeOf } from '../primitives.ts';
import { runKernel, setBackend } from '../registry.ts';
import { loadNative, nativeInfo, setNativeThreads } from './index.ts';
import { nativeKernel } from './kernels.ts';
import { runEveryIsaTests } from './isa-testing.ts';

const loaded = loadNative();
const skip = loaded.ok ? false : `native addon not loaded: ${loaded.reason}`;
const forcedIsa = process.env.LOWBIT_ISA !== undefined;

interface Tolerance {
  readonly atol: number;
  readonly rtol: number;
}

/** Deterministic uniform float32 values in [lo, hi). */
function random(shape: readonly number[], seed: number, lo = -1, hi = 1): RawTensor {
  let state = (seed * 2654435761 + 12345) >>> 0;
  const data = new Float32Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    data[i] = lo + ((state >>> 8) / (1 << 24)) * (hi - lo);
  }
  return { data, shape, dtype: 'float32' };
}

/**
 * Runs `op` natively with 1 and 2 threads (asserting it did not decline and that both give the same
 * bits) and on the reference backend; a mismatch beyond the tolerance is pushed to `failures`
 * (every case runs, so one report names every kernel that is off).
 */
function compare<P extends PrimitiveName>(failures: string[], op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P], tol: Tolerance): void {
  const kernel = nativeKernel(op);
  const results: Float32Array[] = [];
  for (const threads of [1, 2]) {
    setNativeThreads(threads);
    const out = kernel?.(inputs, attrs);
    assert.ok(out, `native ${op} declined [${inputs.map((t) => t.shape.join(',')).join('] [')}]`);
    results.push(out.data as Float32Array);
  }
  setNativeThreads(nativeInfo()?.threads ?? 2);
  assert.deepEqual(results[1], results[0], `${op}: 2 threads differ from 1`);
  setBackend('reference');
  const ref = runKernel(op, inputs, attrs);
  assert.equal(ref.data.length, results[0]!.length, `${op}: length`);
  let worst = -Infinity;
  let at = -1;
  for (let i = 0; i < ref.data.length; i++) {
    const r = ref.data[i]!;
    const g = results[0]![i]!;
    const excess = Number.isNaN(g) !== Number.isNaN(r) ? Infinity : Number.isNaN(r) ? 0 : Math.abs(g - r) - (tol.atol + tol.rtol * Math.abs(r));
    if (excess > worst) {
      worst = excess;
      at = i;
    }
  }
  if (!(worst <= 0)) failures.push(`${op} ${JSON.stringify(attrs)} [${inputs[0]!.shape.join(', ')}]: element ${at} native ${results[0]![at]} reference ${ref.data[at]} (tolerance ${tol.atol} + ${tol.rtol}·|ref|)`);
}

/** Wide-range GELU inputs: uniform [−12, 12], the kinks of the polynomials, zero, tiny and huge values. */
function geluInputs(n: number, seed: number): RawTensor {
  const x = random([n], seed, -12, 12);
  const special = [0, -0, 1e-7, -1e-7, 0.5, -0.5, -0.7517916, 1, -1, 3, -3, 5.5, -5.5, 9, -9, 13, -13, 20, -20, 40, -40, 88, -88, 1e4, -1e4];
  special.slice(0, n).forEach((v, i) => (x.data[i] = v));
  return x;
}

const GELU: Tolerance = { atol: 1e-7, rtol: 2e-6 };
const GELU_GRAD: Tolerance = { atol: 1e-6, rtol: 1e-5 };
const LAYER_NORM: Tolerance = { atol: 1e-5, rtol: 1e-5 };
const ATTENTION: Tolerance = { atol: 1e-6, rtol: 1e-5 };

describe('native fused Transformer kernels vs the reference', { skip }, () => {
  it('[every-isa] gelu and geluBackward, erf and tanh forms, odd sizes and the tails', () => {
    const failures: string[] = [];
    for (const approximate of ['none', 'tanh'] as const) {
      for (const [n, seed] of [[1, 1], [17, 2], [4099, 3], [70001, 4]] as const) {
        const x = geluInputs(n, seed);
        compare(failures, 'gelu', [x], { approximate }, GELU);
        compare(failures, 'geluBackward', [random([n], seed + 10, -2, 2), x], { approximate }, GELU_GRAD);
      }
    }
    assert.deepEqual(failures, []);
  });

  it('[every-isa] layerNorm and layerNormBackward: widths 1, 7, 80, 333, two trailing dims, eps', () => {
    const failures: string[] = [];
    const cases: [number[], number[], number][] = [[[5, 1], [1], 1e-5], [[3, 5, 7], [7], 1e-5], [[257, 80], [80], 1e-5], [[9, 333], [333], 1e-3], [[2, 3, 33], [3, 33], 0.1]];
    cases.forEach(([xShape, wShape, eps], c) => {
      const x = random(xShape, 20 + c, -3, 5);
      const w = random(wShape, 30 + c, 0.5, 1.5);
      const b = random(wShape, 40 + c);
      compare(failures, 'layerNorm', [x, w, b], { eps }, LAYER_NORM);
      const rows = sizeOf(xShape) / sizeOf(wShape);
      // dw and db sum `rows` products of O(1): the absolute tolerance grows with the row count.
      compare(failures, 'layerNormBackward', [random(xShape, 50 + c), x, w], { eps }, { atol: 2e-6 * Math.max(1, Math.sqrt(rows)), rtol: 1e-5 });
    });
    assert.deepEqual(failures, []);
  });

  it('[every-isa] attention and attentionBackward: causal and unmasked, 1 to 5 heads, odd lengths, one position', () => {
    const failures: string[] = [];
    const cases: [number[], number, boolean][] = [
      [[3, 5, 18], 2, true], [[2, 7, 30], 5, false], [[1, 1, 12], 4, true], [[4, 8, 240], 4, true], [[2, 13, 9], 1, true], [[3, 6, 24], 4, false],
    ];
    cases.forEach(([shape, heads, causal], c) => {
      const qkv = random(shape, 60 + c, -2, 2);
      compare(failures, 'attention', [qkv], { heads, causal }, ATTENTION);
      compare(failures, 'attentionBackward', [random([shape[0]!, shape[1]!, shape[2]! / 3], 70 + c), qkv], { heads, causal }, ATTENTION);
    });
    assert.deepEqual(failures, []);
  });

  it('[every-isa] decodeAttention: one and several new positions, past 0 to 40, spare capacity, 1 to 5 heads', () => {
    const failures: string[] = [];
    // [batch, steps, past, capacity, embed, heads]
    const cases: [number, number, number, number, number, number][] = [
      [1, 1, 0, 4, 12, 2], [3, 1, 9, 16, 24, 4], [2, 3, 5, 8, 18, 3], [16, 1, 40, 64, 64, 4], [2, 4, 0, 4, 9, 1], [1, 2, 11, 20, 30, 5],
    ];
    cases.forEach(([n, steps, past, capacity, e, heads], c) => {
      const inputs = [random([n, steps, 3 * e], 100 + c, -2, 2), random([n, capacity, e], 110 + c, -2, 2), random([n, capacity, e], 120 + c)];
      compare(failures, 'decodeAttention', inputs, { heads, past }, ATTENTION);
    });
    assert.deepEqual(failures, []);
  });

  it('[every-isa] crossEntropyLoss and its backward: 1 to 2000 classes, odd row counts, large logits', () => {
    const failures: string[] = [];
    const cases: [number, number, number][] = [[1, 1, 1], [7, 5, 3], [33, 17, 8], [300, 2000, 8], [4, 40, 60]];
    cases.forEach(([rows, classes, spread], c) => {
      const x = random([rows, classes], 80 + c, -spread, spread);
      const t: RawTensor = { data: Int32Array.from({ length: rows }, (_, i) => (i * 7919 + c) % classes), shape: [rows], dtype: 'int32' };
      compare(failures, 'crossEntropyLoss', [x, t], {}, { atol: 2e-6 * (1 + spread), rtol: 1e-5 });
      compare(failures, 'crossEntropyLossBackward', [random([rows], 90 + c, 0.5, 2), x, t], {}, { atol: 1e-7, rtol: 1e-5 });
    });
    assert.deepEqual(failures, []);
  });

  it('declines what it does not handle: float64, heads not dividing E, mismatched gradient shapes', () => {
    const x64: RawTensor = { data: new Float64Array(6), shape: [2, 3], dtype: 'float64' };
    assert.equal(nativeKernel('gelu')?.([x64], { approximate: 'none' }), undefined);
    assert.equal(nativeKernel('attention')?.([random([1, 2, 12], 1)], { heads: 3, causal: true }), undefined);
    assert.equal(nativeKernel('attentionBackward')?.([random([1, 2, 3], 1), random([1, 2, 12], 1)], { heads: 2, causal: true }), undefined);
    assert.equal(nativeKernel('geluBackward')?.([random([4], 1), random([5], 1)], { approximate: 'tanh' }), undefined);
    assert.equal(nativeKernel('decodeAttention')?.([random([1, 2, 12], 1), random([1, 3, 4], 1), random([1, 3, 4], 1)], { heads: 2, past: 2 }), undefined, 'past + steps > capacity');
    assert.equal(nativeKernel('decodeAttention')?.([random([1, 1, 12], 1), random([2, 3, 4], 1), random([2, 3, 4], 1)], { heads: 2, past: 0 }), undefined, 'batch mismatch');
    const outOfRange: RawTensor = { data: Int32Array.of(0, 3), shape: [2], dtype: 'int32' };
    assert.equal(nativeKernel('crossEntropyLoss')?.([random([2, 3], 1), outOfRange], {}), undefined);
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : false }, () => {
      const { passed } = runEveryIsaTests(import.meta.url, isa);
      assert.equal(passed, 5);
    });
  }
});
