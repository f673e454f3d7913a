/**
 * The wasm backend against the reference backend, op by op, on random inputs with odd shapes
 * (modelled on native.test.ts). Each op states its tolerance: |wasm − reference| ≤ atol + rtol·|reference|;
 * the GEMM sums float32 products in another order than the reference, so tolerances grow with the
 * number of terms. Then a few LeNet-5 training steps on 'wasm' track the same steps on 'reference'.
 * Skipped as a whole when the engine has no WebAssembly SIMD128.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import '../reference/index.ts';
import type { PrimitiveAttrs, PrimitiveName, RawTensor } from '../primitives.ts';
import { sizeOf } from '../primitives.ts';
import { hasKernel, runKernel, setBackend, getBackend } from '../registry.ts';
import { loadWasm, WASM_OPS, wasmKernel } from './index.ts';
import { setCanvasPaths, setPool2x2 } from './kernels.ts';
import { Arena, MAX_BYTES, type WasmMemory } from './runtime.ts';
import { profileOps } from '../registry.ts';
import { lenet5 } from '../../nn/models/lenet5.ts';
import { createOptimizer } from '../../optim/index.ts';
import { crossEntropy, manualSeed, randint, randn, type Tensor } from '../../tensor/index.ts';

const loaded = loadWasm();
const skip = loaded.ok ? false : `wasm backend not available: ${loaded.reason}`;
if (skip) console.warn(`wasm tests skipped (${skip})`);

interface Tolerance {
  atol: number;
  rtol: number;
}

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

function withBackendNamed<T>(name: 'reference' | 'wasm', fn: () => T): T {
  const previous = getBackend();
  setBackend(name);
  try {
    return fn();
  } finally {
    setBackend(previous);
  }
}

/** The wasm kernel's result (it must not decline) against the reference kernel's. */
function check<P extends PrimitiveName>(op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P], tol: Tolerance): void {
  const direct = wasmKernel(op)?.(inputs, attrs);
  assert.ok(direct, `wasm ${op} declined shapes ${inputs.map((t) => `[${t.shape.join(',')}]`).join(' ')}`);
  const ref = withBackendNamed('reference', () => runKernel(op, inputs, attrs));
  const got = withBackendNamed('wasm', () => runKernel(op, inputs, attrs));
  assert.deepEqual(got.shape, ref.shape, `${op}: shape`);
  assert.equal(got.dtype, ref.dtype, `${op}: dtype`);
  let where = -1;
  for (let i = 0; i < ref.data.length; i++) {
    const r = ref.data[i]!;
    const g = got.data[i]!;
    if ((Number.isNaN(r) && Number.isNaN(g)) || g === r) continue;
    if (!(Math.abs(g - r) <= tol.atol + tol.rtol * Math.abs(r))) {
      where = i;
      break;
    }
  }
  assert.ok(where < 0, `${op} [${inputs.map((t) => t.shape.join('x')).join(', ')}]: element ${where} wasm ${got.data[where]} vs reference ${ref.data[where]}`);
}

describe('wasm backend vs reference', { skip }, () => {
  it('registers its kernels', () => {
    for (const op of WASM_OPS) assert.ok(hasKernel('wasm', op), op);
  });

  it('declines float64 and int32 inputs and mismatched shapes', () => {
    const f64: RawTensor = { data: new Float64Array(6), shape: [2, 3], dtype: 'float64' };
    const i32: RawTensor = { data: new Int32Array(6), shape: [3, 2], dtype: 'int32' };
    assert.equal(wasmKernel('matmul')!([f64, random([3, 2], 1)], { transA: false, transB: false }), undefined);
    assert.equal(wasmKernel('matmul')!([random([2, 3], 1), i32], { transA: false, transB: false }), undefined);
    assert.equal(wasmKernel('matmul')!([random([2, 3], 1), random([4, 2], 1)], { transA: false, transB: false }), undefined);
    assert.equal(wasmKernel('matmul')!([random([2, 2, 3], 1), random([3, 3, 2], 1)], { transA: false, transB: false }), undefined);
    const conv = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 } as const;
    assert.equal(wasmKernel('conv2d')!([random([1, 2, 5, 5], 1), random([3, 3, 3, 3], 1)], conv), undefined);
    assert.equal(wasmKernel('conv2d')!([random([1, 2, 2, 2], 1), random([3, 2, 3, 3], 1)], conv), undefined);
  });

  it('the arena grows the memory for its reservations, keeps 16-byte alignment and refuses more than MAX_BYTES', () => {
    const wasm = (globalThis as { WebAssembly?: { Memory: new (d: { initial: number; maximum: number }) => WasmMemory } }).WebAssembly!;
    const memory = new wasm.Memory({ initial: 1, maximum: MAX_BYTES / 65536 });
    const arena = new Arena(memory);
    const a = arena.reserve(3);
    const b = arena.reserve(100_000);
    assert.equal(a, 0);
    assert.equal(b % 4, 0);
    assert.ok(b >= 3 + 16, 'slack past each block');
    assert.ok(arena.fits());
    assert.ok(arena.view().length >= b + 100_000);
    arena.reset();
    arena.reserve(MAX_BYTES / 4);
    assert.equal(arena.fits(), false);
  });

  it('matmul with an empty inner dimension is zeros; empty outputs are empty', () => {
    const y = wasmKernel('matmul')!([random([3, 0], 1), random([0, 5], 1)], { transA: false, transB: false })!;
    assert.deepEqual(y.shape, [3, 5]);
    assert.ok(y.data.every((v) => v === 0));
    assert.deepEqual(wasmKernel('matmul')!([random([0, 4], 1), random([4, 5], 1)], { transA: false, transB: false })!.shape, [0, 5]);
  });

  it('matmul propagates NaN and infinities of B (every product is computed)', () => {
    const a = random([5, 6], 3, 0.5, 1);
    const b = random([6, 9], 4);
    (b.data as Float32Array)[2 * 9 + 4] = NaN;
    (b.data as Float32Array)[3 * 9 + 7] = Infinity;
    check('matmul', [a, b], { transA: false, transB: false }, { atol: 1e-5, rtol: 1e-6 });
  });

  it('matmul, all transposes, batched and broadcast batch (1e-6·K absolute)', () => {
    const sizes: [number, number, number][] = [
      [1, 1, 1], [3, 7, 17], [17, 33, 65], [65, 129, 7], [129, 65, 33], [4, 8, 5], [5, 9, 1], [15, 33, 257], [64, 120, 400],
    ];
    for (const [i, [m, n, k]] of sizes.entries()) {
      const tol = { atol: 1e-6 * k, rtol: 1e-6 };
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
      check('matmul', [a3, random([n, k], i + 3)], { transA: false, transB: true }, tol);
      check('matmul', [random([m, k], i + 4), b3], { transA: false, transB: false }, tol);
      check('matmul', [random([2, 1, k, m], i + 5), random([1, 3, n, k], i + 6)], { transA: true, transB: true }, tol);
    }
  });
});

describe('wasm convolutions vs reference', { skip }, () => {
  // [N, C, H, W, O, KH, KW, stride, padding, dilation, groups]
  const convCases: [number, number, number, number, number, number, number, [number, number], [number, number], [number, number], number][] = [
    [4, 1, 28, 28, 6, 5, 5, [1, 1], [0, 0], [1, 1], 1], // LeNet conv1
    [3, 6, 14, 14, 16, 5, 5, [1, 1], [0, 0], [1, 1], 1], // LeNet conv2
    [5, 1, 28, 28, 6, 5, 5, [1, 1], [2, 2], [1, 1], 1], // LeNet conv1 as in the model (padded)
    [2, 3, 7, 9, 5, 3, 3, [2, 2], [1, 1], [1, 1], 1],
    [1, 4, 17, 13, 6, 3, 2, [1, 2], [2, 1], [2, 1], 2],
    [3, 6, 9, 9, 6, 3, 3, [1, 1], [1, 1], [1, 1], 6], // depthwise
    [2, 8, 5, 7, 3, 1, 1, [1, 1], [0, 0], [1, 1], 1], // pointwise
    [1, 2, 3, 3, 1, 3, 3, [1, 1], [0, 0], [1, 1], 1], // one output pixel
    [2, 40, 9, 9, 70, 3, 3, [1, 1], [1, 1], [1, 1], 1],
    [3, 4, 11, 10, 6, 3, 3, [2, 3], [0, 2], [1, 1], 2],
    [5, 3, 33, 17, 7, 4, 4, [3, 2], [1, 2], [1, 2], 1],
    [2, 3, 5, 37, 9, 2, 4, [1, 1], [0, 3], [1, 1], 1],
    [1, 2, 4, 4, 3, 3, 3, [1, 1], [3, 3], [1, 1], 1], // padding wider than the kernel reach: all-zero rows
    [2, 4, 9, 8, 6, 3, 3, [1, 1], [2, 1], [2, 1], 2], // stride 1 with groups, dilation, padding
    [3, 5, 6, 13, 9, 2, 4, [1, 1], [1, 3], [2, 1], 1], // 9 output channels: a partial panel on both sides
  ];

  for (const canvas of [true, false]) {
    const path = canvas ? 'stride 1 on the padded image, else im2col' : 'im2col everywhere';
    it(`conv2d forward and both backward passes, ${path} (1e-6·terms absolute)`, () => {
      const previous = setCanvasPaths(canvas);
      try {
        checkConvCases();
      } finally {
        setCanvasPaths(previous);
      }
    });
  }

  function checkConvCases(): void {
    for (const [i, [n, c, h, w, o, kh, kw, stride, padding, dilation, groups]] of convCases.entries()) {
      const attrs = { stride, padding, dilation, groups };
      const x = random([n, c, h, w], i);
      const weight = random([o, c / groups, kh, kw], i + 10);
      const taps = (c / groups) * kh * kw;
      check('conv2d', [x, weight], attrs, { atol: 1e-6 * taps, rtol: 1e-6 });
      const y = withBackendNamed('reference', () => runKernel('conv2d', [x, weight], attrs));
      const dy = random(y.shape, i + 20);
      check('conv2dBackwardInput', [dy, weight], { ...attrs, inputShape: x.shape }, { atol: 1e-6 * o * kh * kw, rtol: 1e-6 });
      const pixels = y.shape[0]! * y.shape[2]! * y.shape[3]!;
      check('conv2dBackwardWeight', [x, dy], { ...attrs, weightShape: weight.shape }, { atol: 1e-6 * pixels, rtol: 1e-6 });
    }
  }

  it('conv2dFused = conv2d + bias, ReLU, max pooling; NaN pixels stay NaN; padded-image and im2col paths (1e-6·taps absolute)', () => {
    for (const canvas of [true, false]) {
      const previous = setCanvasPaths(canvas);
      try {
        checkFusedCases();
      } finally {
        setCanvasPaths(previous);
      }
    }
  });

  function checkFusedCases(): void {
    type Fused = [number[], number[], Partial<PrimitiveAttrs['conv2d']>, boolean, PrimitiveAttrs['maxPool2d'] | null];
    const p2 = { kernel: [2, 2], stride: [2, 2], padding: [0, 0] } as PrimitiveAttrs['maxPool2d'];
    const cases: Fused[] = [
      [[5, 1, 28, 28], [6, 1, 5, 5], { padding: [2, 2] }, true, p2], // LeNet conv1 block
      [[5, 6, 14, 14], [16, 6, 5, 5], {}, true, p2], // LeNet conv2 block
      [[5, 6, 14, 14], [16, 6, 5, 5], {}, false, null], // conv + bias only (the training path)
      [[3, 2, 11, 13], [5, 2, 3, 3], { padding: [1, 0] }, true, p2],
      [[2, 3, 9, 35], [7, 3, 3, 2], { dilation: [2, 1] }, false, p2],
      [[2, 4, 8, 9], [6, 2, 3, 3], { groups: 2, padding: [1, 1] }, true, { kernel: [3, 2], stride: [2, 1], padding: [0, 0] }],
      [[3, 3, 7, 6], [4, 3, 2, 2], {}, true, null],
      [[2, 2, 9, 9], [3, 2, 3, 3], { stride: [2, 1], padding: [1, 1] }, true, p2], // stride 2: im2col, then bias + ReLU in wasm
      [[2, 3, 11, 10], [5, 3, 3, 3], { stride: [2, 2] }, false, null], // bias only
    ];
    for (const [i, [xs, ws, geo, relu, pool]] of cases.entries()) {
      const attrs = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, ...geo, relu, pool } as PrimitiveAttrs['conv2dFused'];
      const taps = ws[1]! * ws[2]! * ws[3]!;
      const x = random(xs, i);
      check('conv2dFused', [x, random(ws, i + 30), random([ws[0]!], i + 60)], attrs, { atol: 1e-6 * taps, rtol: 1e-6 });
      const withNan: RawTensor = { ...x, data: x.data.map((v, k) => (k % 97 === 13 ? NaN : v)) };
      check('conv2dFused', [withNan, random(ws, i + 30), random([ws[0]!], i + 60)], attrs, { atol: 1e-6 * taps, rtol: 1e-6 });
    }
  }
});

describe('wasm pooling and sum vs reference', { skip }, () => {
  const EXACT: Tolerance = { atol: 0, rtol: 0 };

  for (const vector of [true, false]) {
    it(`max pooling with and without fused relu, its backward and gather: ties, NaN, padding (exact; ${vector ? '2×2 windows on the vector kernel' : 'general kernel only'})`, () => {
      const previous = setPool2x2(vector);
      try {
        checkPoolCases();
      } finally {
        setPool2x2(previous);
      }
    });
  }

  function checkPoolCases(): void {
    const cases: [number[], [number, number], [number, number], [number, number]][] = [
      [[2, 3, 28, 28], [2, 2], [2, 2], [0, 0]], [[1, 2, 7, 9], [3, 3], [2, 2], [1, 1]], [[3, 1, 17, 5], [2, 3], [1, 2], [1, 0]],
      [[1, 1, 1, 1], [1, 1], [1, 1], [0, 0]], [[2, 2, 33, 65], [3, 2], [3, 1], [1, 1]], [[3, 2, 9, 7], [2, 2], [2, 2], [0, 0]],
      [[4, 6, 28, 28], [2, 2], [2, 2], [0, 0]], [[1, 2, 5, 5], [4, 4], [1, 1], [2, 2]], // windows overlapping, mostly padding
      [[2, 3, 7, 11], [2, 2], [2, 2], [0, 0]], [[3, 16, 10, 10], [2, 2], [2, 2], [0, 0]], [[1, 1, 2, 19], [2, 2], [2, 2], [0, 0]], // odd sizes, 5 and 9 outputs a row
    ];
    for (const [i, [shape, kernel, stride, padding]] of cases.entries()) {
      const attrs = { kernel, stride, padding };
      const x = random(shape, i);
      const ties: RawTensor = { ...x, data: x.data.map((v) => Math.round(v * 2) / 2) };
      const nans: RawTensor = { ...x, data: x.data.map((v, k) => (k % 7 === 3 || k % 11 === 5 ? NaN : v)) };
      for (const input of [x, ties, nans]) {
        for (const maxAttrs of [attrs, { ...attrs, relu: true }]) {
          check('maxPool2d', [input], maxAttrs, EXACT);
          const y = withBackendNamed('reference', () => runKernel('maxPool2d', [input], maxAttrs));
          check('maxPool2dBackward', [random(y.shape, i + 5), input], maxAttrs, EXACT);
          check('maxPool2dGather', [random(shape, i + 6), input], maxAttrs, EXACT);
        }
      }
    }
  }

  it('sum over (reduced, kept, reduced) axis groups: bit-exact; other axis sets decline', () => {
    const x = random([5, 7, 9, 11], 3);
    for (const axes of [[0, 2, 3], [0], [0, 1], [2, 3], [3], [0, 3], [1, 2, 3], [0, 1, 2, 3], []]) {
      for (const keepDims of [false, true]) check('sum', [x], { axes, keepDims }, EXACT);
    }
    check('sum', [random([64, 120], 4, -1e3, 1e3)], { axes: [0], keepDims: false }, EXACT);
    assert.equal(wasmKernel('sum')!([x], { axes: [0, 2], keepDims: false }), undefined);
    assert.equal(wasmKernel('sum')!([x], { axes: [1, 3], keepDims: true }), undefined);
    assert.equal(wasmKernel('sum')!([x], { axes: [1, 2], keepDims: false }), undefined);
  });

  it('add (same shape, row broadcast), relu and reluBackward: special values, bit-exact; other broadcasts decline', () => {
    const specials = (t: RawTensor): RawTensor => ({ ...t, data: t.data.map((v, k) => [NaN, Infinity, -Infinity, 0, -0, 3.4e38][k % 13] ?? v) });
    const a = specials(random([7, 33], 1));
    check('add', [a, specials(random([7, 33], 2))], {}, EXACT);
    check('add', [a, random([33], 3)], {}, EXACT);
    check('add', [random([2, 3, 5], 4), random([1, 5], 5)], {}, EXACT);
    check('relu', [a], {}, EXACT);
    check('reluBackward', [random([7, 33], 6), a], {}, EXACT);
    assert.equal(wasmKernel('add')!([a, random([7, 1], 7)], {}), undefined);
    assert.equal(wasmKernel('add')!([random([33], 8), a], {}), undefined);
  });
});

describe('LeNet-5 training on wasm tracks reference', { skip }, () => {
  /** Losses of `steps` SGD steps (lr 0.05, momentum 0.9) of LeNet-5 on a fixed random batch of 32, and the final weights. */
  function train(backend: 'reference' | 'wasm', steps: number): { losses: number[]; params: Float32Array[]; ops: string[] } {
    return withBackendNamed(backend, () => {
      manualSeed(7);
      const model = lenet5();
      const x = randn([32, 1, 28, 28]);
      const y = randint(10, [32]);
      const optimizer = createOptimizer('sgd', model.parameters(), { lr: 0.05, momentum: 0.9 });
      model.train();
      const losses: number[] = [];
      const profile = profileOps(() => {
        for (let i = 0; i < steps; i++) {
          const loss = crossEntropy(model.forward(x), y);
          loss.backward();
          optimizer.step();
          optimizer.zeroGrad();
          losses.push(loss.item());
        }
      });
      const params = model.parameters().map((p: Tensor) => Float32Array.from(p.data));
      return { losses, params, ops: [...profile.keys()] };
    });
  }

  it('8 steps: every loss within 1e-4 of the reference one, the loss falls, final weights within 1e-4 (wasm ran the convs, matmuls and pooling)', () => {
    const ref = train('reference', 8);
    const got = train('wasm', 8);
    for (const op of ['conv2dFused', 'conv2dBackwardWeight', 'conv2dBackwardInput', 'matmul', 'maxPool2d', 'maxPool2dBackward', 'sum']) {
      assert.ok(got.ops.includes(`wasm/${op}`), `wasm/${op} ran (ran: ${got.ops.join(', ')})`);
    }
    assert.ok(ref.losses.at(-1)! < ref.losses[0]! - 0.05, `reference loss falls: ${ref.losses.join(', ')}`);
    for (let i = 0; i < ref.losses.length; i++) {
      assert.ok(Math.abs(got.losses[i]! - ref.losses[i]!) <= 1e-4, `step ${i}: wasm ${got.losses[i]} vs reference ${ref.losses[i]}`);
    }
    for (const [j, p] of ref.params.entries()) {
      const q = got.params[j]!;
      for (let i = 0; i < p.length; i++) assert.ok(Math.abs(q[i]! - p[i]!) <= 1e-4, `parameter ${j}[${i}]: wasm ${q[i]} vs reference ${p[i]}`);
    }
  });
});
