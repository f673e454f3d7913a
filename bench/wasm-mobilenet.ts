/**
 * One MobileNet training step (nn.mobilenet(), batch 64, Adam lr 2e-3, bench/workloads.ts
 * adamStepper) on the wasm backend: samples/s per step at each thread count given, then the
 * per-primitive kernel time of the last count (`profileOps`, ms per step; ops without a wasm kernel
 * show up as reference/<op>).
 *
 *   node --import tsx bench/wasm-mobilenet.ts [--threads 2,1] [--steps 5] [--batch 64] [--rounds 3]
 *
 * Thread counts are measured interleaved (round-robin, `--rounds` times) and the median is printed.
 */
import { parseArgs } from 'node:util';
import { profileOps, setBackend } from '../src/backend/index.ts';
import { loadWasm, setWasmThreads } from '../src/backend/wasm/index.ts';
import { mobilenet } from '../src/nn/index.ts';
import { manualSeed } from '../src/tensor/index.ts';
import { preferThroughputGc } from '../src/train/gc.ts';
import { adamStepper, batchPool } from './workloads.ts';

const { values } = parseArgs({ options: { threads: { type: 'string', default: '2,1' }, steps: { type: 'string', default: '5' }, batch: { type: 'string', default: '64' }, rounds: { type: 'string', default: '3' } } });
const counts = values.threads.split(',').map(Number);
const steps = Number(values.steps);
const batch = Number(values.batch);
const rounds = Number(values.rounds);
const loaded = loadWasm();
if (!loaded.ok) throw new Error(`wasm backend not available: ${loaded.reason}`);
preferThroughputGc();
setBackend('wasm');
manualSeed(0);
const model = mobilenet();
const pool = batchPool(batch, 8).batches;
const step = adamStepper(model, pool, 2e-3);
const times = new Map<number, number[]>(counts.map((t) => [t, []]));
for (const t of counts) {
  await setWasmThreads(t);
  step(); step();
}
for (let r = 0; r < rounds; r++) {
  for (const t of counts) {
    await setWasmThreads(t);
    step();
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) step();
    times.get(t)!.push((performance.now() - t0) / steps);
  }
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
for (const t of counts) {
  const ms = median(times.get(t)!);
  console.log(`wasm ${t} thread${t === 1 ? '' : 's'}: ${ms.toFixed(1)} ms/step, ${((batch * 1000) / ms).toFixed(0)} samples/s (median of ${rounds}; ${times.get(t)!.map((x) => x.toFixed(1)).join(' ')})`);
}
const last = counts[counts.length - 1]!;
await setWasmThreads(last);
const prof = profileOps(() => { for (let s = 0; s < steps; s++) step(); });
console.log(`kernel ms per step at ${last} thread${last === 1 ? '' : 's'}:`);
for (const [op, e] of [...prof].sort((a, b) => b[1].ms - a[1].ms).slice(0, 16)) console.log(`  ${op.padEnd(32)} ${(e.ms / steps).toFixed(1)}`);
process.exit(0);
