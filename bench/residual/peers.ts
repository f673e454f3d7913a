/**
 * ResNet-8 W8A8 inference against peers, all measured in the same run, interleaved round by round:
 *
 *   - lowbit native IntModel executor (the DAG plan of native/intmodel.cc)
 *   - lowbit float fake-quant forward of the same prepared model (native float kernels)
 *   - onnxruntime-node on the QDQ export of the same IntModel (`exportOnnx(im)`, default bias)
 *   - onnxruntime-node on the float32 export of a float ResNet-8 (`exportOnnx(model)`)
 *   - PyTorch fp32 ResNet-8 of the same shapes (bench/residual/torch_resnet8.py, eval mode), run by
 *     /usr/bin/python3 (or LOWBIT_BENCH_PYTHON) as a child process that times the calls we ask for
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/residual/peers.ts [--batches 64,256]
 *       [--rounds 5] [--seconds 0.5] [--threads 2] [--seed 0]
 *
 * Each round times every peer once per batch size for about `seconds` (calls per measurement fixed
 * after a warm-up call); the table gives the median over rounds (and the best) in images/s, and
 * each peer's ratio to the lowbit native executor's median. Beside wall time it records the
 * process CPU time (all threads: `process.cpuUsage()`, Python's `time.process_time()`) per image,
 * which other jobs on the machine disturb less (but which counts a thread pool's spinning). Weights are untrained (speed does not
 * depend on them); inputs random normal. Every peer gets `threads` threads: LOWBIT_THREADS,
 * onnxruntime intraOpNumThreads, torch.set_num_threads with OMP_WAIT_POLICY=PASSIVE (with the
 * default spinning OpenMP barrier torch collapses to ~50 images/s when the 2 cores are shared
 * with other jobs). A peer that is not installed is skipped with the reason. Also checks that
 * the native and TypeScript executors agree on 16 images and reports how often onnxruntime's QDQ
 * argmax equals the IntModel's.
 *
 * Writes bench/results/residual-peers.json.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { flagOr, numberFlag } from '../flags.ts';
import { median, torchPeerEnv, writeAtomic } from '../lib.ts';
import { ortRunner } from '../peers/ort.ts';
import { pythonPath } from '../peers/torch.ts';

const threads = numberFlag('threads', 2, { integer: true, min: 1 });
process.env.LOWBIT_THREADS ??= String(threads);

const { noGrad } = await import('../../src/autograd/engine.ts');
const { resnet8 } = await import('../../src/nn/index.ts');
const { manualSeed, randn } = await import('../../src/tensor/index.ts');
const { buildBenchModel } = await import('../runtime-ts/models.ts');
const { exportOnnx } = await import('../../src/onnx/index.ts');
const { argmaxRows } = await import('../../src/eval/attack.ts');

const batches = flagOr('batches', '64,256').split(',').map(Number);
const rounds = numberFlag('rounds', 5, { integer: true, min: 1 });
const seconds = numberFlag('seconds', 0.5);
const seed = numberFlag('seed', 0, { integer: true });
const log = (s: string): void => console.log(`[residual-peers] ${s}`);

/** Wall and process CPU seconds of one measurement. */
interface Timing { seconds: number; cpu: number }

/** One peer: `measure(batch, calls)` runs `calls` inferences of `batch` images. */
interface Peer {
  name: string;
  measure: (batch: number, calls: number) => Promise<Timing>;
  close?: () => Promise<void>;
}

const timed = async (calls: number, run: () => unknown): Promise<Timing> => {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let c = 0; c < calls; c++) await run();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { seconds, cpu: (cpu.user + cpu.system) / 1e6 };
};

// ---------------------------------------------------------------- models
const { model, im } = buildBenchModel('resnet8', 'w8a8', seed);
log(`W8A8 IntModel: graph version ${im.graph.version}, ${im.nodes.length} nodes; native: ${im.nativeUnavailableReason() ?? 'yes'}`);
manualSeed(seed);
const floatModel = resnet8();
floatModel.train();
noGrad(() => floatModel.forward(randn([32, 1, 28, 28])));  // BatchNorm running statistics
floatModel.eval();

const maxBatch = Math.max(...batches);
const inputs = new Map(batches.map((b) => [b, randn([b, 1, 28, 28])]));

// the two executors agree (16 images)
const probe = (inputs.get(maxBatch)!.data as Float32Array).subarray(0, 16 * 784);
im.useNative = false;
const tsLogits = im.run(probe, 16);
im.useNative = true;
const nativeLogits = im.run(probe, 16);
const identical = tsLogits.every((v, i) => Object.is(v, nativeLogits[i]));
log(`native and TypeScript executors give identical logits on 16 images: ${identical}`);

const dir = mkdtempSync(join(tmpdir(), 'lowbit-residual-peers-'));
const qdqPath = join(dir, 'resnet8-w8a8-qdq.onnx');
const fp32Path = join(dir, 'resnet8-fp32.onnx');
writeFileSync(qdqPath, exportOnnx(im).bytes);
writeFileSync(fp32Path, exportOnnx(floatModel, { inputShape: [1, 28, 28] }).bytes);

const peers: Peer[] = [
  { name: 'lowbit native IntModel W8A8', measure: (b, calls) => { const x = inputs.get(b)!.data as Float32Array; return timed(calls, () => im.run(x, b)); } },
  { name: 'lowbit float fake-quant W8A8', measure: (b, calls) => { const x = inputs.get(b)!; return timed(calls, () => noGrad(() => model.forward(x))); } },
];
const skipped: Record<string, string> = {};
let ortVersion: string | null = null;
let qdqArgmaxAgreement: number | null = null;
for (const [name, path] of [['onnxruntime-node QDQ W8A8', qdqPath], ['onnxruntime-node fp32', fp32Path]] as const) {
  const runners = new Map<number, () => Promise<void>>();
  let reason: string | null = null;
  for (const b of batches) {
    const r = await ortRunner({ modelPath: path, batch: b, threads, input: inputs.get(b)!.data as Float32Array });
    if (!r.ok) { reason = r.reason; break; }
    ortVersion = r.version;
    runners.set(b, r.run);
  }
  if (reason) { skipped[name] = reason; log(`skip ${name}: ${reason}`); continue; }
  peers.push({ name, measure: (b, calls) => timed(calls, runners.get(b)!) });
}
if (!skipped['onnxruntime-node QDQ W8A8']) {
  // how often onnxruntime's QDQ argmax equals the IntModel's (default bias: see docs/onnx.md)
  const { loadOnnxRuntime } = await import('../../src/onnx/verify.ts');
  const loaded = await loadOnnxRuntime();
  if (loaded.ok) {
    const session = await loaded.ort.InferenceSession.create(qdqPath, { executionProviders: ['cpu'], intraOpNumThreads: threads });
    const x = inputs.get(maxBatch)!.data as Float32Array;
    const out = await session.run({ [session.inputNames[0]!]: new loaded.ort.Tensor('float32', x, [maxBatch, 1, 28, 28]) });
    const y = out[session.outputNames[0]!]!.data as Float32Array;
    const a = argmaxRows(y, 10);
    const b = argmaxRows(im.run(x, maxBatch), 10);
    qdqArgmaxAgreement = a.filter((v, i) => v === b[i]).length / maxBatch;
    log(`onnxruntime QDQ argmax = IntModel argmax on ${(qdqArgmaxAgreement * 100).toFixed(2)} % of ${maxBatch} images`);
  }
}

// PyTorch: a child process that times the calls we ask for
let torchInfo: Record<string, unknown> | null = null;
const py = pythonPath();
if (!existsSync(py)) {
  skipped['PyTorch fp32'] = `python not found at ${py}`;
} else {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'torch_resnet8.py');
  const child: ChildProcessWithoutNullStreams = spawn(py, [script, '--serve', '--threads', String(threads), '--seed', String(seed)], {
    env: { ...torchPeerEnv(threads), OMP_WAIT_POLICY: 'PASSIVE' },
  });
  process.on('exit', () => child.kill());
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown> | null> => {
    const r = await lines.next();
    return r.done ? null : (JSON.parse(r.value) as Record<string, unknown>);
  };
  const ready = await next();
  if (!ready || !ready.ready) {
    skipped['PyTorch fp32'] = ready?.skipped ? String(ready.skipped) : `the PyTorch peer did not start: ${stderr.split('\n').slice(-3).join(' ')}`;
    child.kill();
  } else {
    torchInfo = ready;
    peers.push({
      name: 'PyTorch fp32',
      measure: async (b, calls) => {
        child.stdin.write(`${b} ${calls}\n`);
        const r = await next();
        if (!r || typeof r.seconds !== 'number' || typeof r.cpu !== 'number') throw new Error(`PyTorch peer failed: ${stderr.slice(-500)}`);
        return { seconds: r.seconds, cpu: r.cpu };
      },
      close: async () => { child.stdin.end(); },
    });
  }
}
if (skipped['PyTorch fp32']) log(`skip PyTorch fp32: ${skipped['PyTorch fp32']}`);

// ---------------------------------------------------------------- interleaved rounds
const rates = new Map<string, number[]>();
const cpuMicros = new Map<string, number[]>();
const calls = new Map<string, number>();
for (const b of batches) {
  for (const p of peers) {
    await p.measure(b, 1); // warm-up
    const one = await p.measure(b, 1);
    calls.set(`${p.name}@${b}`, Math.max(1, Math.round(seconds / one.seconds)));
    rates.set(`${p.name}@${b}`, []);
    cpuMicros.set(`${p.name}@${b}`, []);
  }
}
for (let r = 0; r < rounds; r++) {
  for (const b of batches) {
    for (const p of peers) {
      const key = `${p.name}@${b}`;
      const n = calls.get(key)!;
      const t = await p.measure(b, n);
      rates.get(key)!.push((n * b) / t.seconds);
      cpuMicros.get(key)!.push((t.cpu * 1e6) / (n * b));
    }
  }
  log(`round ${r + 1}/${rounds}: ${batches.map((b) => peers.map((p) => `${p.name}@${b} ${rates.get(`${p.name}@${b}`)!.at(-1)!.toFixed(0)}`).join(', ')).join(' | ')}`);
}
for (const p of peers) await p.close?.();
rmSync(dir, { recursive: true, force: true });

const rows: Record<string, unknown>[] = [];
for (const b of batches) {
  const ref = median(rates.get(`${peers[0]!.name}@${b}`)!);
  const refCpu = median(cpuMicros.get(`${peers[0]!.name}@${b}`)!);
  log(`batch ${b} (median of ${rounds} rounds: wall images/s, native / peer; CPU µs per image, peer / native):`);
  for (const p of peers) {
    const rs = rates.get(`${p.name}@${b}`)!;
    const cs = cpuMicros.get(`${p.name}@${b}`)!;
    const med = median(rs);
    const cpu = median(cs);
    log(`  ${p.name.padEnd(30)} ${med.toFixed(0).padStart(7)}  (best ${Math.max(...rs).toFixed(0)})  native / this ${(ref / med).toFixed(2)}x;  CPU ${cpu.toFixed(1).padStart(7)} µs/image (this / native ${(cpu / refCpu).toFixed(2)}x)`);
    rows.push({
      batch: b, peer: p.name, medianImagesPerSecond: med, bestImagesPerSecond: Math.max(...rs), imagesPerSecond: rs, callsPerMeasurement: calls.get(`${p.name}@${b}`),
      nativeOverPeer: ref / med, medianCpuMicrosPerImage: cpu, cpuMicrosPerImage: cs, cpuPeerOverNative: cpu / refCpu,
    });
  }
}
const out = 'bench/results/residual-peers.json';
writeAtomic(out, JSON.stringify({
  bench: 'residual-peers', seed, threads, rounds, seconds, batches, identicalLogits: identical, qdqArgmaxAgreement,
  onnxruntime: ortVersion, torch: torchInfo, skipped, rows,
}, null, 2));
log(`wrote ${out}`);
