/**
 * Profiling driver: ResNet-8 W8A8, batch 64, TypeScript executor with the 'wasm' kernels, a fixed
 * number of batches (run under `node --cpu-prof` to see where the time goes).
 *   nice -n 10 node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/wasm-glue/profile.ts [--batches 30]
 */
import { manualSeed, randn } from '../../src/tensor/index.ts';
import { numberFlag } from '../flags.ts';
import { buildBenchModel } from '../runtime-ts/models.ts';

const batches = numberFlag('batches', 30, { integer: true, min: 1 });
const { im } = buildBenchModel('resnet8', 'w8a8', 0);
manualSeed(7);
const data = randn([64, 1, 28, 28]).data as Float32Array;
im.useNative = false;
im.tsKernels = 'wasm';
im.run(data, 64);
const t0 = performance.now();
for (let i = 0; i < batches; i++) im.run(data, 64);
const ms = (performance.now() - t0) / batches;
console.log(`[wasm-glue/profile] ${ms.toFixed(1)} ms per batch of 64 = ${((64 * 1000) / ms).toFixed(0)} img/s`);
