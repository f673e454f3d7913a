/**
 * Training throughput of the wasm backend on 1 and 2 threads against the reference backend: LeNet-5
 * at batch 64 and MLP 784-512-512-10 at batch 128 (the `train-throughput` section's models, batches
 * and SGD), the default `lowbit train` job, LeNet-5 W4A4 LSQ QAT with Adam at batch 64
 * (bench/workloads.ts qatTrainStepper), and LeNet-5 inference at batch 256 (the `inference`
 * section's case); every variant in interleaved rounds, medians. Samples per wall second compare
 * the thread counts; samples per second of process CPU time (`process.cpuUsage`, all threads) say
 * what the second thread costs, and on a busy machine the one-thread rows' CPU rate is their speed
 * on an idle core. Every row names its thread count.
 *
 *   npx tsx bench/wasm-train-cpu.ts [ROUNDS] [THREADS]     # defaults 7 and 2 (the threaded variant)
 *
 * Writes bench/results/wasm-train-cpu.json (atomically).
 */
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../src/autograd/index.ts';
import { getBackend, setBackend, setWasmThreads, wasmThreadsInfo } from '../src/backend/index.ts';
import { preferThroughputGc } from '../src/train/gc.ts';
import { gitCommit, median, writeAtomic } from './lib.ts';
import { MODEL_LABEL, batchPool, benchBackends, buildModel, qatTrainStepper, trainStepper, type BenchModel } from './workloads.ts';

const roundsText = process.argv[2] ?? '7';
const rounds = Number(roundsText);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100) throw new Error(`ROUNDS must be an integer in 1..100, got '${roundsText}'`);
const threadsText = process.argv[3] ?? '2';
const threads = Number(threadsText);
if (!Number.isInteger(threads) || threads < 2 || threads > 16) throw new Error(`THREADS must be an integer in 2..16, got '${threadsText}'`);
if (!benchBackends().includes('wasm')) throw new Error('the wasm backend is not available in this Node.js (no WebAssembly SIMD128)');
if ((await setWasmThreads(threads)) !== threads) throw new Error(`the wasm backend did not start ${threads} threads: ${wasmThreadsInfo().reason ?? 'workers not ready'}`);

preferThroughputGc();
type Task = 'train' | 'qat' | 'infer';
const CASES: readonly { model: BenchModel; task: Task; batch: number; steps: { wasm: number; reference: number } }[] = [
  { model: 'lenet5', task: 'train', batch: 64, steps: { wasm: 20, reference: 2 } },
  { model: 'mlp', task: 'train', batch: 128, steps: { wasm: 10, reference: 1 } },
  { model: 'lenet5', task: 'qat', batch: 64, steps: { wasm: 20, reference: 2 } },
  { model: 'lenet5', task: 'infer', batch: 256, steps: { wasm: 20, reference: 2 } },
];
/** The variants: a backend and, for wasm, a thread count. */
const VARIANTS = [
  { name: 'wasm×1', backend: 'wasm', threads: 1 },
  { name: `wasm×${threads}`, backend: 'wasm', threads },
  { name: 'reference', backend: 'reference', threads: 1 },
] as const;

/** Process CPU seconds and wall seconds of `fn`. */
function timed(fn: () => void): { cpu: number; wall: number } {
  const start = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const wall = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(start);
  return { cpu: (used.user + used.system) / 1e6, wall };
}

/** A step of `task` on the current backend. */
function stepper(model: BenchModel, task: Task, pool: ReturnType<typeof batchPool>): () => void {
  if (task === 'qat') return qatTrainStepper(pool.batches);
  if (task === 'train') return trainStepper(buildModel(model), pool.batches);
  const net = buildModel(model);
  net.eval();
  const x = pool.batches[0]!.x;
  return () => void noGrad(() => net.forward(x));
}

const previous = getBackend();
const results: Record<string, unknown>[] = [];
for (const { model, task, batch, steps } of CASES) {
  const pool = batchPool(batch, task === 'infer' ? 1 : 8, task === 'infer' ? 'test' : 'train');
  const label = task === 'qat' ? `${MODEL_LABEL[model]} W4A4 LSQ QAT (Adam) training` : `${MODEL_LABEL[model]} ${task === 'infer' ? 'inference' : 'training'}`;
  const steppers = new Map<string, () => void>();
  for (const v of VARIANTS) {
    setBackend(v.backend);
    if (v.backend === 'wasm') await setWasmThreads(v.threads);
    const step = stepper(model, task, pool);
    for (let i = 0; i < (v.backend === 'wasm' ? 10 : 1); i++) step(); // warm-up: compile, tier up
    steppers.set(v.name, step);
  }
  const rates: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v.name, []]));
  const wallRates: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v.name, []]));
  const loads: number[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const v of VARIANTS) {
      setBackend(v.backend);
      if (v.backend === 'wasm' && (await setWasmThreads(v.threads)) !== v.threads) throw new Error(`${v.name}: threads not ready`);
      const step = steppers.get(v.name)!;
      const n = steps[v.backend];
      const seconds = timed(() => {
        for (let i = 0; i < n; i++) step();
      });
      rates[v.name]!.push((n * batch) / seconds.cpu);
      wallRates[v.name]!.push((n * batch) / seconds.wall);
    }
    loads.push(loadavg()[0]!);
  }
  const med = Object.fromEntries(VARIANTS.map((v) => [v.name, { wall: median(wallRates[v.name]!), cpu: median(rates[v.name]!) }]));
  const one = med['wasm×1']!;
  const many = med[`wasm×${threads}`]!;
  const ref = med.reference!;
  console.log(`${label}, batch ${batch} (samples/s, wall | per CPU-s): wasm 1 thread ${one.wall.toFixed(0)} | ${one.cpu.toFixed(0)}; wasm ${threads} threads ${many.wall.toFixed(0)} | ${many.cpu.toFixed(0)} (${(many.wall / one.wall).toFixed(2)}x wall); reference ${ref.wall.toFixed(0)} | ${ref.cpu.toFixed(0)}; load ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} (${pool.source})`);
  results.push({
    case: label, batch, stepsPerRound: steps, samplesPerWallSecond: wallRates, samplesPerCpuSecond: rates, loadAverage1mPerRound: loads,
    median: med, threadSpeedupWall: many.wall / one.wall, data: pool.source,
  });
}
setBackend(previous);
await setWasmThreads(1);
const out = {
  what: `samples per wall second (and per process CPU second) of the wasm backend on 1 and ${threads} threads and of the reference backend, interleaved rounds, medians (bench/wasm-train-cpu.ts)`,
  commit: gitCommit(), date: new Date().toISOString(), loadAverage1m: loadavg()[0], rounds, threads, node: process.versions.node, results,
};
writeAtomic(join(import.meta.dirname, 'results', 'wasm-train-cpu.json'), `${JSON.stringify(out, null, 2)}\n`);
console.log(`load average ${loadavg()[0]!.toFixed(1)}; wrote bench/results/wasm-train-cpu.json`);
