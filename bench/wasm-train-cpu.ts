/**
 * Training throughput of the wasm backend against the reference backend in CPU time, for a busy
 * machine: LeNet-5 at batch 64 and MLP 784-512-512-10 at batch 128 (the `train-throughput`
 * section's models, batches and SGD) and the default `lowbit train` job, LeNet-5 W4A4 LSQ QAT with
 * Adam at batch 64 (bench/workloads.ts qatTrainStepper), both backends in interleaved rounds, samples per second of
 * process CPU time (`process.cpuUsage`, so time the process spends waiting for a core does not
 * count), medians; wall-clock samples/s of the same rounds too. Both run on one thread (the reference backend and the wasm kernels are
 * single-threaded), so CPU time is their run time on an idle core, up to cache sharing.
 *
 *   npx tsx bench/wasm-train-cpu.ts [ROUNDS]     # default 7
 *
 * Writes bench/results/wasm-train-cpu.json (atomically).
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { getBackend, setBackend } from '../src/backend/index.ts';
import { preferThroughputGc } from '../src/train/gc.ts';
import { gitCommit, median, writeAtomic } from './lib.ts';
import { MODEL_LABEL, batchPool, benchBackends, buildModel, qatTrainStepper, trainStepper, type BenchModel } from './workloads.ts';

const roundsText = process.argv[2] ?? '7';
const rounds = Number(roundsText);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100) throw new Error(`ROUNDS must be an integer in 1..100, got '${roundsText}'`);
if (!benchBackends().includes('wasm')) throw new Error('the wasm backend is not available in this Node.js (no WebAssembly SIMD128)');

preferThroughputGc();
const CASES: readonly { model: BenchModel; qat: boolean; batch: number; steps: { wasm: number; reference: number } }[] = [
  { model: 'lenet5', qat: false, batch: 64, steps: { wasm: 20, reference: 2 } },
  { model: 'mlp', qat: false, batch: 128, steps: { wasm: 10, reference: 1 } },
  { model: 'lenet5', qat: true, batch: 64, steps: { wasm: 20, reference: 2 } },
];
const BACKENDS = ['wasm', 'reference'] as const;

/** Process CPU seconds and wall seconds of `fn`. */
function timed(fn: () => void): { cpu: number; wall: number } {
  const start = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const wall = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(start);
  return { cpu: (used.user + used.system) / 1e6, wall };
}

const previous = getBackend();
const results: Record<string, unknown>[] = [];
for (const { model, qat, batch, steps } of CASES) {
  const pool = batchPool(batch, 8);
  const label = qat ? `${MODEL_LABEL[model]} W4A4 LSQ QAT (Adam)` : MODEL_LABEL[model];
  const steppers = new Map(BACKENDS.map((backend) => {
    setBackend(backend);
    const step = qat ? qatTrainStepper(pool.batches) : trainStepper(buildModel(model), pool.batches);
    for (let i = 0; i < (backend === 'wasm' ? 10 : 1); i++) step(); // warm-up: compile, tier up
    return [backend, step] as const;
  }));
  const rates: Record<string, number[]> = { wasm: [], reference: [] };
  const wallRates: Record<string, number[]> = { wasm: [], reference: [] };
  const loads: number[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const backend of BACKENDS) {
      setBackend(backend);
      const step = steppers.get(backend)!;
      const n = steps[backend];
      const seconds = timed(() => {
        for (let i = 0; i < n; i++) step();
      });
      rates[backend]!.push((n * batch) / seconds.cpu);
      wallRates[backend]!.push((n * batch) / seconds.wall);
    }
    loads.push(loadavg()[0]!);
  }
  const wasm = median(rates.wasm!);
  const reference = median(rates.reference!);
  const wasmWall = median(wallRates.wasm!);
  const referenceWall = median(wallRates.reference!);
  console.log(`${label} training, batch ${batch}: wasm ${wasm.toFixed(0)} samples/CPU-s, reference ${reference.toFixed(0)} samples/CPU-s, ${(wasm / reference).toFixed(1)}x; wall: wasm ${wasmWall.toFixed(0)} samples/s, reference ${referenceWall.toFixed(0)} samples/s, ${(wasmWall / referenceWall).toFixed(1)}x; load ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} (${pool.source})`);
  results.push({
    model: label, batch, stepsPerRound: steps, samplesPerCpuSecond: rates, samplesPerWallSecond: wallRates, loadAverage1mPerRound: loads,
    median: { wasm, reference, speedup: wasm / reference }, medianWall: { wasm: wasmWall, reference: referenceWall, speedup: wasmWall / referenceWall }, data: pool.source,
  });
}
setBackend(previous);
const out = {
  what: 'training throughput per CPU second (and per wall second), wasm vs reference backend, interleaved rounds, medians (bench/wasm-train-cpu.ts)',
  commit: gitCommit(), date: new Date().toISOString(), loadAverage1m: loadavg()[0], rounds, node: process.versions.node, results,
};
writeAtomic(join(import.meta.dirname, 'results', 'wasm-train-cpu.json'), `${JSON.stringify(out, null, 2)}\n`);
console.log(`load average ${loadavg()[0]!.toFixed(1)}; wrote bench/results/wasm-train-cpu.json`);
