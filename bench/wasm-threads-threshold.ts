/**
 * Where splitting a wasm GEMM over threads starts to pay: the round trip of an empty job (wake a
 * worker, wait for it) and square GEMMs of growing size on 1 and 2 threads (always split on 2: the
 * GEMM is called through the pool directly), interleaved rounds, medians; and the whole `matmul`
 * kernel call of the MLP's first layer (x [128, 784] · wᵀ, w [512, 784]: packing, GEMM, copy out)
 * on 1 and 2 threads. The backend's PARALLEL_MIN_MACS (src/backend/wasm/util.ts) comes from this.
 *
 *   npx tsx bench/wasm-threads-threshold.ts [ROUNDS]     # default 9
 *
 * Writes bench/results/wasm-threads-threshold.json (atomically).
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { loadWasm, wasmKernel } from '../src/backend/wasm/index.ts';
import { setWasmThreads, wasmRuntime, type WasmRuntime } from '../src/backend/wasm/runtime.ts';
import { partRange } from '../src/backend/wasm/util.ts';
import { gitCommit, median, writeAtomic } from './lib.ts';

const rounds = Number(process.argv[2] ?? '9');
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100) throw new Error(`ROUNDS must be an integer in 1..100, got '${process.argv[2]}'`);
const runtime = wasmRuntime();
if (typeof runtime === 'string') throw new Error(`wasm backend not available: ${runtime}`);
const rt: WasmRuntime = runtime;
if ((await setWasmThreads(2)) !== 2) throw new Error('2 wasm threads did not start');

/** m = n = k = size: mb = size/4 row panels, nb = size/8 column panels, split by columns on 2 threads. */
const SIZES = [16, 32, 64, 96, 128, 192, 256];
const arena = rt.arena;
const big = SIZES.at(-1)!;
arena.reset();
const ap = arena.reserve(big * big);
const bp = arena.reserve(big * big);
const cp = arena.reserve(big * big);
if (!arena.fits()) throw new Error('no memory');
const mem = arena.view();
for (let i = 0; i < big * big; i++) {
  mem[ap + i] = Math.sin(i);
  mem[bp + i] = Math.cos(i);
}

function gemmOn(parts: number, size: number): void {
  const mb = size / 4, nb = size / 8, ldc = size;
  rt.parallel(parts, (part, call) => {
    const [lo, hi] = partRange(nb, parts, part);
    call(rt.fn.gemm, ap * 4, (bp + lo * 8 * size) * 4, (cp + lo * 8) * 4, mb, hi - lo, size, ldc * 4, 0);
  });
}

/** Microseconds per call of `fn`, over enough calls for ~20 ms. */
function usPerCall(fn: () => void): number {
  let calls = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) fn();
    const ms = performance.now() - t0;
    if (ms > 20) return (ms * 1000) / calls;
    calls *= 2;
  }
}

loadWasm();
const matmul = wasmKernel('matmul')!;
const randomData = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
const layerInputs = [
  { data: randomData(128 * 784), shape: [128, 784], dtype: 'float32' as const },
  { data: randomData(512 * 784), shape: [512, 784], dtype: 'float32' as const },
];
const layer = () => void matmul(layerInputs, { transA: false, transB: true });

const samples: Record<string, number[]> = {};
const push = (key: string, v: number) => (samples[key] ??= []).push(v);
const loads: number[] = [];
for (let r = 0; r < rounds; r++) {
  push('roundTrip', usPerCall(() => rt.parallel(2, (part, call) => call(rt.fn.gemm, ap * 4, bp * 4, (cp + part * 8) * 4, 1, 1, 1, big * 4, 0))));
  for (const size of SIZES) {
    for (const threads of [1, 2]) push(`${size}/${threads}`, usPerCall(() => gemmOn(threads, size)));
  }
  for (const threads of [1, 2]) {
    await setWasmThreads(threads);
    push(`mlpLayer/${threads}`, usPerCall(layer));
  }
  await setWasmThreads(2);
  loads.push(loadavg()[0]!);
}
const rows = SIZES.map((size) => {
  const one = median(samples[`${size}/1`]!);
  const two = median(samples[`${size}/2`]!);
  return { size, macs: size ** 3, us1: one, us2: two, speedup: one / two };
});
console.log(`round trip of an empty 2-thread job: ${median(samples.roundTrip!).toFixed(1)} µs (median of ${rounds}); load ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}`);
for (const row of rows) console.log(`gemm ${row.size}³ (${row.macs} MACs): 1 thread ${row.us1.toFixed(1)} µs, 2 threads ${row.us2.toFixed(1)} µs, ${row.speedup.toFixed(2)}x`);
const layer1 = median(samples['mlpLayer/1']!);
const layer2 = median(samples['mlpLayer/2']!);
console.log(`matmul call 128 × 784 × 512 (transB, packing included): 1 thread ${(layer1 / 1000).toFixed(2)} ms, 2 threads ${(layer2 / 1000).toFixed(2)} ms, ${(layer1 / layer2).toFixed(2)}x`);
await setWasmThreads(1);
writeAtomic(join(import.meta.dirname, 'results', 'wasm-threads-threshold.json'), `${JSON.stringify({
  what: 'wasm GEMM m = n = k on 1 and 2 threads, and an empty 2-thread job, µs per call, medians of interleaved rounds (bench/wasm-threads-threshold.ts)',
  commit: gitCommit(), date: new Date().toISOString(), rounds, loadAverage1mPerRound: loads, roundTripUs: samples.roundTrip, rows, mlpLayerMatmulUs: { one: layer1, two: layer2 }, samples,
}, null, 2)}\n`);
