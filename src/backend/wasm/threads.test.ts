/**
 * The wasm backend on several threads: every split kernel gives the same bits as on one thread
 * (odd sizes, partial panels, groups, both conv paths), the one-thread results are checked against
 * the reference (so the comparison is not between two wrong answers), a LeNet-5 training run equals
 * the one-thread run bit for bit, and without SharedArrayBuffer the backend says why it runs on one
 * thread and still computes. Each threaded case asserts that workers really ran parts of it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';

import '../reference/index.ts';
import type { PrimitiveAttrs, PrimitiveName, RawTensor } from '../primitives.ts';
import { sizeOf } from '../primitives.ts';
import { getBackend, runKernel, setBackend } from '../registry.ts';
import { loadWasm, wasmKernel } from './index.ts';
import { setCanvasPaths, setParallelMinMacs } from './kernels.ts';
import { PARALLEL_MIN_MACS } from './util.ts';
import { setWasmThreads, wasmPoolForTests, wasmRuntime, wasmThreadsInfo } from './runtime.ts';
import { lenet5 } from '../../nn/models/lenet5.ts';
import { createOptimizer } from '../../optim/index.ts';
import { crossEntropy, manualSeed, randint, randn, type Tensor } from '../../tensor/index.ts';

const loaded = loadWasm();
const skip = loaded.ok ? false : `wasm backend not available: ${loaded.reason}`;
const THREADS = 3;

after(async () => {
  await setWasmThreads(1);
});

function random(shape: readonly number[], seed: number): RawTensor {
  let state = seed * 2654435761 + 12345;
  const data = new Float32Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    data[i] = -1 + ((state >>> 8) / (1 << 24)) * 2;
  }
  return { data, shape, dtype: 'float32' };
}

function reference<P extends PrimitiveName>(op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P]): RawTensor {
  const previous = getBackend();
  setBackend('reference');
  try {
    return runKernel(op, inputs, attrs);
  } finally {
    setBackend(previous);
  }
}

/** The wasm kernel's result on `threads` threads (it must not decline) and how many calls went to workers. */
async function onThreads<P extends PrimitiveName>(threads: number, op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P]): Promise<{ y: RawTensor; dispatched: number }> {
  assert.equal(await setWasmThreads(threads), threads, `${threads} threads ready`);
  const before = wasmThreadsInfo().dispatched;
  // scribble over the memory so that a part that wrote nothing cannot pass on the previous run's results
  const rt = wasmRuntime();
  if (typeof rt !== 'string') rt.arena.view().fill(Number.NaN);
  const y = wasmKernel(op)?.(inputs, attrs);
  assert.ok(y, `wasm ${op} declined`);
  return { y, dispatched: wasmThreadsInfo().dispatched - before };
}

/** Kernel calls per op that ran parts on workers (each test asserts its ops ran threaded at least once). */
const dispatchedBy = new Map<string, number>();

function assertThreaded(ops: readonly string[]): void {
  for (const op of ops) assert.ok((dispatchedBy.get(op) ?? 0) > 0, `${op} ran parts on workers in at least one case`);
  dispatchedBy.clear();
}

/**
 * One thread against THREADS: same bits; one thread within `atol` of the reference. Calls below
 * the size threshold stay on the caller, so whether workers ran is counted per op (dispatchedBy).
 */
async function sameBits<P extends PrimitiveName>(op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P], atol: number, label: string): Promise<void> {
  const one = await onThreads(1, op, inputs, attrs);
  const many = await onThreads(THREADS, op, inputs, attrs);
  assert.equal(one.dispatched, 0, `${label}: one thread dispatched nothing`);
  dispatchedBy.set(op, (dispatchedBy.get(op) ?? 0) + many.dispatched);
  const a = new Uint32Array((one.y.data as Float32Array).buffer);
  const b = new Uint32Array((many.y.data as Float32Array).buffer);
  assert.deepEqual(many.y.shape, one.y.shape);
  assert.equal(b.length, a.length);
  for (let i = 0; i < a.length; i++) assert.equal(b[i], a[i], `${label}: element ${i} differs (${one.y.data[i]} vs ${many.y.data[i]})`);
  const ref = reference(op, inputs, attrs);
  let nonzero = 0;
  for (let i = 0; i < ref.data.length; i++) {
    const r = ref.data[i]!;
    if (r !== 0) nonzero++;
    assert.ok(Math.abs(one.y.data[i]! - r) <= atol + 1e-6 * Math.abs(r), `${label}: element ${i} ${one.y.data[i]} vs reference ${r}`);
  }
  assert.ok(nonzero > ref.data.length / 2, `${label}: the case is not trivial`);
}

describe('wasm kernels on several threads equal one thread bit for bit', { skip }, () => {
  // every call large enough to split is split, however small (odd sizes, one panel per part)
  let threshold = PARALLEL_MIN_MACS;
  before(() => {
    threshold = setParallelMinMacs(0);
  });
  after(() => {
    setParallelMinMacs(threshold);
  });

  it('matmul: split by column panels, by row panels, batched, transposed (odd sizes)', async () => {
    // [a shape, b shape, transA, transB]: a is [..., K, M] when transA, b [..., N, K] when transB
    const cases: [number[], number[], boolean, boolean][] = [
      [[67, 53], [53, 129], false, false], // more column panels than row panels
      [[301, 100], [100, 9], false, false], // more row panels
      [[3, 77, 61], [95, 61], false, true], // batched, b broadcast
      [[2, 61, 77], [2, 95, 61], true, true],
    ];
    for (const [i, [aShape, bShape, transA, transB]] of cases.entries()) {
      const k = transA ? aShape.at(-2)! : aShape.at(-1)!;
      await sameBits('matmul', [random(aShape, i), random(bShape, i + 50)], { transA, transB }, 1e-6 * k, `matmul case ${i}`);
      assert.ok((dispatchedBy.get('matmul') ?? 0) > 0, `matmul case ${i} ran threaded`);
    }
    assertThreaded(['matmul']);
  });

  it('a call that grows the shared memory with the workers running: they see the grown memory', async () => {
    assert.equal(await setWasmThreads(THREADS), THREADS);
    const rt = wasmRuntime();
    assert.ok(typeof rt !== 'string');
    const have = rt.arena.view().byteLength;
    // A, B and C of an s × s × s matmul take about 3·s² floats: 2 MB more than the memory has
    const s = Math.ceil(Math.sqrt((have + 2 ** 21) / 12));
    const inputs = [random([s, s], 7), random([s, s], 8)];
    const attrs = { transA: false, transB: false };
    const before = wasmThreadsInfo().dispatched;
    const many = wasmKernel('matmul')!(inputs, attrs)!;
    assert.ok(wasmThreadsInfo().dispatched > before, 'workers ran parts');
    assert.ok(rt.arena.view().byteLength > have, `the memory grew past ${have} bytes`);
    const one = await onThreads(1, 'matmul', inputs, attrs);
    assert.deepEqual(new Uint32Array((many.data as Float32Array).buffer), new Uint32Array((one.y.data as Float32Array).buffer));
  });

  it('linear (x·wᵀ + bias) on a 129 × 300 × 77 call', async () => {
    await sameBits('linear', [random([129, 300], 1), random([77, 300], 2), random([77], 3)], {}, 1e-6 * 300, 'linear');
    assertThreaded(['linear']);
  });

  // [N, C, H, W, O, KH, KW, stride, padding, dilation, groups]
  const convCases: [number, number, number, number, number, number, number, [number, number], [number, number], [number, number], number][] = [
    [7, 1, 28, 28, 6, 5, 5, [1, 1], [2, 2], [1, 1], 1], // LeNet conv1 as in the model, odd batch
    [5, 6, 14, 14, 16, 5, 5, [1, 1], [0, 0], [1, 1], 1], // LeNet conv2
    [3, 4, 19, 23, 10, 3, 3, [1, 1], [2, 1], [2, 1], 2], // groups, dilation, partial panels
    [2, 3, 7, 9, 5, 3, 3, [1, 1], [1, 1], [1, 1], 1], // tiny: fewer units than threads
    [3, 9, 45, 37, 21, 4, 4, [2, 2], [1, 2], [1, 2], 1], // strided: im2col path, split GEMM
  ];
  for (const canvas of [true, false]) {
    it(`conv2d, conv2dBackwardInput, conv2dBackwardWeight: ${canvas ? 'padded-image paths (images / row panels split)' : 'im2col paths (GEMM panels split)'}`, async () => {
      const previous = setCanvasPaths(canvas);
      try {
        for (const [i, [n, c, h, w, o, kh, kw, stride, padding, dilation, groups]] of convCases.entries()) {
          const attrs = { stride, padding, dilation, groups };
          const x = random([n, c, h, w], i);
          const weight = random([o, c / groups, kh, kw], i + 10);
          const taps = (c / groups) * kh * kw;
          await sameBits('conv2d', [x, weight], attrs, 1e-6 * taps, `conv2d case ${i}`);
          const y = reference('conv2d', [x, weight], attrs);
          const dy = random(y.shape, i + 20);
          await sameBits('conv2dBackwardInput', [dy, weight], { ...attrs, inputShape: x.shape }, 1e-6 * o * kh * kw, `conv2dBackwardInput case ${i}`);
          const pixels = y.shape[0]! * y.shape[2]! * y.shape[3]!;
          await sameBits('conv2dBackwardWeight', [x, dy], { ...attrs, weightShape: weight.shape }, 1e-6 * pixels, `conv2dBackwardWeight case ${i}`);
        }
        assertThreaded(['conv2d', 'conv2dBackwardInput', 'conv2dBackwardWeight']);
      } finally {
        setCanvasPaths(previous);
      }
    });
  }

  it('conv2dFused (bias, ReLU, 2×2 max pooling) on LeNet conv1 geometry, batch 9', async () => {
    const attrs = { stride: [1, 1] as [number, number], padding: [2, 2] as [number, number], dilation: [1, 1] as [number, number], groups: 1, relu: true, clampMax: null, pool: { kernel: [2, 2] as [number, number], stride: [2, 2] as [number, number], padding: [0, 0] as [number, number] } };
    await sameBits('conv2dFused', [random([9, 1, 28, 28], 4), random([6, 1, 5, 5], 5), random([6], 6)], attrs, 1e-5, 'conv2dFused');
    assertThreaded(['conv2dFused']);
  });

  it('batchNorm, batchNormBackward (plain, with statistics, clamped), batchNormStats (split by channels) and clamp, clampBackward (split by vectors), odd sizes', async () => {
    for (const [i, shape] of [[5, 7, 9, 3], [3, 13, 1, 1], [2, 3, 5, 5]].entries()) {
      const c = shape[1]!;
      const count = sizeOf(shape) / c;
      const x = random(shape, 60 + i);
      const w = random([c], 70 + i);
      await sameBits('batchNorm', [x, w, random([c], 80 + i)], { eps: 1e-5 }, 1e-5, `batchNorm ${shape}`);
      await sameBits('batchNormBackward', [random(shape, 90 + i), x, w], { eps: 1e-5 }, 1e-5 * Math.sqrt(count), `batchNormBackward ${shape}`);
      await sameBits('batchNormStats', [x], {}, 1e-5, `batchNormStats ${shape}`);
      const stats = reference('batchNormStats', [x], {});
      await sameBits('batchNorm', [x, w, random([c], 80 + i), stats], { eps: 1e-5 }, 1e-5, `batchNorm with stats ${shape}`);
      await sameBits('batchNormBackward', [random(shape, 90 + i), x, w, stats], { eps: 1e-5 }, 1e-5 * Math.sqrt(count), `batchNormBackward with stats ${shape}`);
      // clamped (BatchNorm → ReLU6 as one op: the clamp's selects and mask inside the passes)
      await sameBits('batchNorm', [x, w, random([c], 80 + i), stats], { eps: 1e-5, clamp: [-0.3, 0.8] }, 1e-5, `clamped batchNorm ${shape}`);
      await sameBits('batchNormBackward', [random(shape, 90 + i), x, w, stats, random([c], 80 + i)], { eps: 1e-5, clamp: [-0.3, 0.8] }, 1e-5 * Math.sqrt(count), `clamped batchNormBackward ${shape}`);
      await sameBits('clamp', [x], { min: -0.8, max: 0.9 }, 0, `clamp ${shape}`);
      await sameBits('clampBackward', [random(shape, 100 + i), x], { min: -0.8, max: 0.9 }, 0, `clampBackward ${shape}`);
    }
    assertThreaded(['batchNorm', 'batchNormBackward', 'batchNormStats', 'clamp', 'clampBackward']);
  });

  it('depthwise 3×3 conv2d, conv2dBackwardInput, conv2dBackwardWeight (split by planes), stride 1 and 2', async () => {
    for (const [i, [n, c, h, w, st]] of [[3, 5, 7, 7, 1], [2, 7, 9, 6, 2]].entries()) {
      const attrs = { stride: [st, st] as [number, number], padding: [1, 1] as [number, number], dilation: [1, 1] as [number, number], groups: c };
      const x = random([n, c, h, w], 110 + i);
      const weight = random([c, 1, 3, 3], 120 + i);
      const y = reference('conv2d', [x, weight], attrs);
      const dy = random(y.shape, 130 + i);
      await sameBits('conv2d', [x, weight], attrs, 1e-5, `depthwise conv2d ${i}`);
      await sameBits('conv2dBackwardInput', [dy, weight], { ...attrs, inputShape: x.shape }, 1e-5, `depthwise conv2dBackwardInput ${i}`);
      await sameBits('conv2dBackwardWeight', [x, dy], { ...attrs, weightShape: weight.shape }, 1e-6 * n * h * w, `depthwise conv2dBackwardWeight ${i}`);
    }
    assertThreaded(['conv2d', 'conv2dBackwardInput', 'conv2dBackwardWeight']);
  });
});

describe('LeNet-5 training on several wasm threads equals one thread', { skip }, () => {
  async function train(threads: number): Promise<{ losses: number[]; params: Float32Array[]; dispatched: number }> {
    assert.equal(await setWasmThreads(threads), threads);
    const previous = getBackend();
    setBackend('wasm');
    try {
      manualSeed(11);
      const model = lenet5();
      const x = randn([33, 1, 28, 28]);
      const y = randint(10, [33]);
      const optimizer = createOptimizer('sgd', model.parameters(), { lr: 0.05, momentum: 0.9 });
      model.train();
      const before = wasmThreadsInfo().dispatched;
      const losses: number[] = [];
      for (let i = 0; i < 3; i++) {
        const loss = crossEntropy(model.forward(x), y);
        loss.backward();
        optimizer.step();
        optimizer.zeroGrad();
        losses.push(loss.item());
      }
      return { losses, params: model.parameters().map((p: Tensor) => Float32Array.from(p.data)), dispatched: wasmThreadsInfo().dispatched - before };
    } finally {
      setBackend(previous);
    }
  }

  it('3 SGD steps at batch 33: the same losses and weights, bit for bit', async () => {
    const one = await train(1);
    const many = await train(THREADS);
    assert.equal(one.dispatched, 0);
    assert.ok(many.dispatched >= 3 * 3, `workers ran parts of the steps (${many.dispatched} dispatches)`);
    assert.ok(one.losses[2]! < one.losses[0]!, `the loss falls: ${one.losses.join(', ')}`);
    assert.deepEqual(many.losses, one.losses);
    for (const [j, p] of one.params.entries()) {
      assert.deepEqual(new Uint32Array(many.params[j]!.buffer), new Uint32Array(p.buffer), `parameter ${j}`);
    }
  });
});

describe('wasm threads: configuration and fallback', { skip }, () => {
  it(`calls under ${PARALLEL_MIN_MACS} multiply-adds stay on the caller; larger ones split`, async () => {
    const small = await onThreads(THREADS, 'matmul', [random([40, 50], 1), random([50, 60], 2)], { transA: false, transB: false });
    assert.equal(small.dispatched, 0, '40·50·60 multiply-adds stay on the caller');
    const large = await onThreads(THREADS, 'matmul', [random([128, 200], 1), random([200, 96], 2)], { transA: false, transB: false });
    assert.equal(large.dispatched, 1, '128·200·96 multiply-adds are split');
  });

  it('the weight gradient of a stride-1 conv splits only with enough work per image (MobileNet 1×1 convs stay on the caller, LeNet-5 conv2 splits)', async () => {
    const conv = { stride: [1, 1] as [number, number], padding: [0, 0] as [number, number], dilation: [1, 1] as [number, number], groups: 1 };
    // MobileNet's 64·[64, 4, 4] -> 128 1×1 conv: 8.4·10^6 multiply-adds, 1.3·10^5 per image
    const x = random([64, 64, 4, 4], 1), w = random([128, 64, 1, 1], 2), dy = random([64, 128, 4, 4], 3);
    assert.equal((await onThreads(THREADS, 'conv2dBackwardWeight', [x, dy], { ...conv, weightShape: w.shape })).dispatched, 0, 'weight gradient of the 1×1 conv on the caller');
    assert.equal((await onThreads(THREADS, 'conv2dBackwardInput', [dy, w], { ...conv, inputShape: x.shape })).dispatched, 1, 'its input gradient splits');
    // LeNet-5's conv2 at batch 64: 3.4·10^5 multiply-adds per image
    const x2 = random([64, 6, 14, 14], 4), w2 = random([16, 6, 5, 5], 5), dy2 = random([64, 16, 10, 10], 6);
    assert.equal((await onThreads(THREADS, 'conv2dBackwardWeight', [x2, dy2], { ...conv, weightShape: w2.shape })).dispatched, 2, 'LeNet-5 conv2 weight gradient splits (layout, then tap rows)');
  });

  it('a worker that died: the call throws after the wait limit instead of hanging, later calls run on the caller and are right', async () => {
    assert.equal(await setWasmThreads(2), 2);
    const pool = wasmPoolForTests();
    assert.ok(pool);
    pool.waitLimitMs = 300;
    pool.killWorkerForTests(0);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const inputs = [random([256, 200], 3), random([200, 256], 4)];
    const attrs = { transA: false, transB: false };
    const t0 = Date.now();
    assert.throws(() => wasmKernel('matmul')?.(inputs, attrs), /wasm worker 1 did not finish its part of a kernel call within 0\.3 s/);
    assert.ok(Date.now() - t0 < 10_000, 'failed within seconds, not hung');
    const info = wasmThreadsInfo();
    assert.equal(info.active, 1);
    assert.match(info.reason ?? '', /did not finish its part/);
    const y = wasmKernel('matmul')?.(inputs, attrs);
    assert.ok(y);
    const ref = reference('matmul', inputs, attrs);
    for (let i = 0; i < ref.data.length; i++) assert.ok(Math.abs(y.data[i]! - ref.data[i]!) <= 1e-4, `element ${i}`);
    assert.equal(await setWasmThreads(2), 2, 'a new pool replaces the failed one');
  });

  it('setWasmThreads refuses counts outside [1, 16]', async () => {
    for (const bad of [0, 17, 1.5, Number.NaN]) await assert.rejects(setWasmThreads(bad), /integer in \[1, 16\]/);
  });

  const child = (script: string, env: Record<string, string> = {}) => spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8', env: { ...process.env, LOWBIT_BACKEND: 'wasm', LOWBIT_THREADS: '', ...env }, timeout: 60000,
  });

  it('without SharedArrayBuffer: one thread, the reason says so, kernels still compute; the process exits', () => {
    const script = `
      delete globalThis.SharedArrayBuffer;
      const { wasmThreadsInfo, setWasmThreads } = await import(${JSON.stringify(new URL('./runtime.ts', import.meta.url).href)});
      const { wasmKernel, loadWasm } = await import(${JSON.stringify(new URL('./index.ts', import.meta.url).href)});
      loadWasm();
      const a = { data: new Float32Array([1, 2, 3, 4]), shape: [2, 2], dtype: 'float32' };
      const y = wasmKernel('matmul')([a, a], { transA: false, transB: false });
      const active = await setWasmThreads(4);
      console.log(JSON.stringify({ y: [...y.data], active, info: wasmThreadsInfo() }));`;
    const r = child(script);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    assert.deepEqual(out.y, [7, 10, 15, 22]);
    assert.equal(out.active, 1);
    assert.equal(out.info.active, 1);
    assert.equal(out.info.requested, 4);
    assert.match(out.info.reason, /SharedArrayBuffer is not available/);
  });

  it('LOWBIT_THREADS sets the default count; started workers do not keep the process alive', () => {
    const script = `
      const { wasmThreadsInfo, wasmRuntime } = await import(${JSON.stringify(new URL('./runtime.ts', import.meta.url).href)});
      const rt = wasmRuntime();
      rt.threads(); // starts the default pool, without waiting for it
      // the workers report ready on their own (up to 20 s on a crowded machine)
      for (let i = 0; i < 400 && wasmThreadsInfo().active < 3; i++) await new Promise((resolve) => setTimeout(resolve, 50));
      console.log(JSON.stringify(wasmThreadsInfo()));`;
    const t0 = Date.now();
    const r = child(script, { LOWBIT_THREADS: '3' });
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    assert.equal(info.requested, 3);
    assert.equal(info.active, 3);
    assert.equal(info.reason, null);
    assert.ok(Date.now() - t0 < 30000, 'the child exited on its own');
  });
});
