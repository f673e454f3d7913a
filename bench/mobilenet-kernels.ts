/**
 * The native addon's training kernels on the shapes of `lowbit train --model mobilenet` at batch 64,
 * each call timed alone: BatchNorm (statistics, forward with statistics and ReLU6 clamp, backward
 * plain and clamped) and the convolutions (forward, grad input, grad weight) of the depthwise and
 * 1x1 layers. "hot": the same call repeated (data in cache); "cold": 64 MB streamed through the
 * cache before every call, as in a training step where each layer's tensors were last touched a
 * while ago. Random data; microseconds per call, medians of the repeats.
 *
 *   node --import tsx bench/mobilenet-kernels.ts [--repeats 30] [--cold-only] [--hot-only]
 */
import { parseArgs } from 'node:util';
import { loadNative, nativeAddon } from '../src/backend/native/index.ts';

const { values } = parseArgs({ options: { repeats: { type: 'string', default: '30' }, 'cold-only': { type: 'boolean', default: false }, 'hot-only': { type: 'boolean', default: false } } });
const repeats = Number(values.repeats);
if (!loadNative().ok) throw new Error('bench/mobilenet-kernels.ts needs the native addon (npm install builds it)');
const addon = nativeAddon() as unknown as Record<string, (...args: unknown[]) => void>;

const junk = new Float32Array(16 << 20);
const flush = (): void => { for (let i = 0; i < junk.length; i += 16) junk[i]! += 1; };
const random = (n: number): Float32Array => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);

/** Median microseconds of `repeats` calls, each after a cache flush when `cold`. */
function time(f: () => void, cold: boolean): number {
  for (let i = 0; i < 3; i++) f();
  const runs: number[] = [];
  for (let i = 0; i < repeats; i++) {
    if (cold) flush();
    const t0 = performance.now();
    f();
    runs.push((performance.now() - t0) * 1000);
  }
  return runs.sort((a, b) => a - b)[runs.length >> 1]!;
}

const modes = values['cold-only'] ? [true] : values['hot-only'] ? [false] : [false, true];
const report = (label: string, cases: [string, () => void][]): void => {
  const cols = cases.flatMap(([name, f]) => modes.map((cold) => `${name} ${cold ? 'cold' : 'hot'} ${time(f, cold).toFixed(1)}`));
  console.log(`${label.padEnd(28)} ${cols.join('  ')} µs`);
};

console.log('BatchNorm [N, C, S] (stats; forward with stats and clamp [0, 6]; backward; backward clamped)');
for (const [n, c, s] of [[64, 16, 196], [64, 64, 196], [64, 64, 49], [64, 24, 49], [64, 96, 49], [64, 96, 16], [64, 32, 16], [64, 128, 16]] as const) {
  const len = n * c * s;
  const x = random(len), g = random(len), w = new Float32Array(c).fill(1.1), b = new Float32Array(c).fill(0.1);
  const y = new Float32Array(len), out = new Float32Array(len + 2 * c), st = new Float32Array(2 * c);
  addon.batchNormStats!(x, st, n, c, s);
  report(`${n},${c},${s}`, [
    ['stats', () => addon.batchNormStats!(x, st, n, c, s)],
    ['fwd', () => addon.batchNorm!(x, w, b, y, n, c, s, 1e-5, st, 0, 6)],
    ['bwd', () => addon.batchNormBackward!(g, x, w, out, n, c, s, 1e-5, st)],
    ['bwdClamp', () => addon.batchNormBackward!(g, x, w, out, n, c, s, 1e-5, st, 0, 6, b)],
  ]);
}

console.log('conv2d [N, C, H, W] -> O, k×k, stride, groups (forward; grad input; grad weight)');
for (const [n, c, h, o, k, s, groups] of [
  [64, 16, 14, 64, 1, 1, 1], [64, 64, 14, 64, 3, 2, 64], [64, 64, 7, 24, 1, 1, 1], [64, 24, 7, 96, 1, 1, 1], [64, 96, 7, 96, 3, 1, 96],
  [64, 96, 7, 24, 1, 1, 1], [64, 96, 7, 96, 3, 2, 96], [64, 96, 4, 32, 1, 1, 1], [64, 32, 4, 128, 1, 1, 1], [64, 128, 4, 128, 3, 1, 128],
  [64, 128, 4, 32, 1, 1, 1], [64, 128, 4, 64, 1, 1, 1], [64, 64, 4, 128, 1, 1, 1],
] as const) {
  const p = k === 3 ? 1 : 0;
  const oh = Math.floor((h + 2 * p - k) / s) + 1;
  const geom = Int32Array.from([n, c, h, h, o, k, k, oh, oh, s, s, p, p, 1, 1, groups]);
  const x = random(n * c * h * h), dy = random(n * o * oh * oh), w = random((o * c * k * k) / groups);
  const dw = new Float32Array(w.length), dx = new Float32Array(x.length), y = new Float32Array(dy.length);
  report(`${n},${c},${h},${h}->${o} ${k}x${k}/${s} g${groups}`, [
    ['fwd', () => addon.conv2d!(x, w, y, geom)],
    ['gradIn', () => addon.conv2dBackwardInput!(dy, w, dx, geom)],
    ['gradW', () => addon.conv2dBackwardWeight!(x, dy, dw, geom)],
  ]);
}
