/**
 * The wasm BatchNorm / clamp / depthwise kernels on 1 and 2 threads at MobileNet's largest batch-64
 * shapes, interleaved rounds, median µs per call (does splitting these memory-bound calls pay?).
 * Each output is handed back to the recycling pool (backend/recycle.ts) as autograd does in a
 * training step, so the next call's output is a warm buffer: without that, the page faults of a
 * fresh 3 MB output (about 0.8 ms) decide the timings.
 *
 *   node --import tsx bench/wasm-norm-threads.ts [--rounds 9]
 */
import { parseArgs } from 'node:util';
import '../src/backend/reference/index.ts';
import type { PrimitiveAttrs, PrimitiveName, RawTensor } from '../src/backend/primitives.ts';
import { loadWasm, setWasmThreads, wasmKernel } from '../src/backend/wasm/index.ts';
import { releaseOutput } from '../src/backend/recycle.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '9' } } });
const rounds = Number(values.rounds);
if (!loadWasm().ok) throw new Error('wasm backend not available');
function random(shape: number[], seed: number): RawTensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let s = seed;
  for (let i = 0; i < data.length; i++) data[i] = ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  return { data, shape, dtype: 'float32' };
}
const x = random([64, 64, 14, 14], 1), g = random([64, 64, 14, 14], 2), w = random([64], 3), b = random([64], 4);
const dw = random([64, 1, 3, 3], 5);
const conv = { stride: [1, 1] as [number, number], padding: [1, 1] as [number, number], dilation: [1, 1] as [number, number], groups: 64 };
const conv2 = { ...conv, stride: [2, 2] as [number, number] };
const g2 = random([64, 64, 7, 7], 6);
const stats = wasmKernel('batchNormStats')!([x], {})!;
const cases: [string, PrimitiveName, RawTensor[], object][] = [
  ['clamp 64x64x14x14', 'clamp', [x], { min: 0, max: 6 }],
  ['clampBackward', 'clampBackward', [g, x], { min: 0, max: 6 }],
  ['batchNorm', 'batchNorm', [x, w, b], { eps: 1e-5 }],
  ['batchNormBackward', 'batchNormBackward', [g, x, w], { eps: 1e-5 }],
  ['batchNormStats', 'batchNormStats', [x], {}],
  ['batchNorm with stats', 'batchNorm', [x, w, b, stats], { eps: 1e-5 }],
  ['batchNormBackward with stats', 'batchNormBackward', [g, x, w, stats], { eps: 1e-5 }],
  ['depthwise conv2d s1', 'conv2d', [x, dw], conv],
  ['depthwise conv2dBackwardInput s1', 'conv2dBackwardInput', [g, dw], { ...conv, inputShape: x.shape }],
  ['depthwise conv2dBackwardWeight s1', 'conv2dBackwardWeight', [x, g], { ...conv, weightShape: dw.shape }],
  ['depthwise conv2d s2', 'conv2d', [x, dw], conv2],
  ['depthwise conv2dBackwardInput s2', 'conv2dBackwardInput', [g2, dw], { ...conv2, inputShape: x.shape }],
  ['depthwise conv2dBackwardWeight s2', 'conv2dBackwardWeight', [x, g2], { ...conv2, weightShape: dw.shape }],
];
const times = new Map<string, number[]>();
for (let r = 0; r < rounds; r++) {
  for (const threads of [1, 2]) {
    await setWasmThreads(threads);
    for (const [name, op, inputs, attrs] of cases) {
      const k = wasmKernel(op)!;
      const call = () => releaseOutput(k(inputs, attrs as PrimitiveAttrs[typeof op])!.data);
      call();
      const t = performance.now();
      for (let i = 0; i < 5; i++) call();
      const key = `${name} ${threads}`;
      times.set(key, [...(times.get(key) ?? []), ((performance.now() - t) / 5) * 1000]);
    }
  }
}
const median = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]!;
for (const [name] of cases) console.log(`${name.padEnd(36)} 1 thread ${median(times.get(`${name} 1`)!).toFixed(0).padStart(6)} µs, 2 threads ${median(times.get(`${name} 2`)!).toFixed(0).padStart(6)} µs`);
process.exit(0);
