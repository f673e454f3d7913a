/**
 * Per-op profile of the native IntModel executor on LeNet-5 (W8A8 and with conv1 / conv2 pruned)
 * or on the binary MLP 784-1024-1024-10 of the int-inference section (`--model bnn-mlp`, real MNIST
 * test images as input, bench/binary-mlp.ts), and whole-model timings of the same models, paired
 * and interleaved.
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/intmodel-profile.ts [--model lenet5|bnn-mlp]
 *       [--batches 64,256] [--reps 20] [--rounds 40] [--keep 1:1,0.5:0.5,0.25:0.25] [--ckpt path.safetensors]
 *       [--base other.node] [--base-isa avx2-novnni]
 *
 * Per op: thread CPU time (clock_gettime(CLOCK_THREAD_CPUTIME_ID) around each op, `intPlanProfile`)
 * of the batch run serially on one thread in the chunks of a 1- and a 2-thread run, minimum over
 * `reps` runs, in µs per sample; CPU time is not inflated by other processes taking the core, so the
 * figures hold on a loaded machine. Whole model: IntModel.run wall time on LOWBIT_THREADS threads,
 * the models interleaved round by round (`measureModelsInterleaved`), minimum per model.
 * `--base` loads a second build of the addon (e.g. a copy of main's) and runs every plan on both,
 * interleaved (A/B in one process); `--base-isa ISA` sets LOWBIT_ISA before the base build loads (each
 * addon reads it at its first call; this one's is fixed before), so a copy of this build under
 * LOWBIT_ISA=avx2-novnni runs against this one under avx2 (AVX-VNNI against int16 kernels) in one
 * process. `--keep a:b` keeps the fraction a of conv1's and b of conv2's channels (the first ones).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { flagOr } from './flags.ts';

process.env.LOWBIT_THREADS ??= '2';

const { lenet5 } = await import('../src/nn/models/index.ts');
const { Tensor } = await import('../src/tensor/index.ts');
const { Rng } = await import('../src/tensor/random.ts');
const { calibrate } = await import('../src/quant/ptq/calibrate.ts');
const { convert } = await import('../src/runtime/convert.ts');
const { compileNativePlan } = await import('../src/runtime/native-plan.ts');
const { nativeIntAddon, intKernelsBackend } = await import('../src/runtime/kernels/index.ts');
const { planFromAssignment } = await import('../src/quant/search/index.ts');
const { loadCheckpoint } = await import('../src/train/checkpoint.ts');

const BATCHES = flagOr('batches', '64,256').split(',').map(Number);
const REPS = Number(flagOr('reps', '20'));
const ROUNDS = Number(flagOr('rounds', '40'));
const KEEPS = flagOr('keep', '1:1,0.5:0.5,0.25:0.25').split(',').map((k) => k.split(':').map(Number) as [number, number]);
const BASE = flagOr('base', '');
const BASE_ISA = flagOr('base-isa', '');
const MODEL = flagOr('model', 'lenet5');
if (MODEL !== 'lenet5' && MODEL !== 'bnn-mlp') throw new Error(`--model must be lenet5 or bnn-mlp, not '${MODEL}'`);
const CKPT = flagOr('ckpt', '/work/main/runs/qat/ckpt/lenet5-mnist_fp32.safetensors');

const addon = nativeIntAddon();
if (!addon?.intPlanProfile) throw new Error('the native addon has no intPlanProfile (npm run build:native)');

const rng = new Rng(7);
const N = Math.max(...BATCHES);
let input = new Float32Array(N * 784);
for (let i = 0; i < input.length; i++) input[i] = rng.normal() * 0.8;
if (MODEL === 'bnn-mlp') {
  // real images: the input quantizer's work depends on the pixel values
  const { batchPool } = await import('./workloads.ts');
  const pool = batchPool(N, 2, 'test');
  input = Float32Array.from(pool.batches[0]!.x.data as Float32Array);
  console.log(`input: ${pool.source}`);
}
const sample = new Tensor(input.slice(0, 64 * 784), [64, 1, 28, 28]);

function perChannel(channels: number, keep: number): number[] | undefined {
  if (keep >= 1) return undefined;
  const k = Math.max(1, Math.round(channels * keep));
  return Array.from({ length: channels }, (_, c) => (c < k ? 8 : 0));
}

function build(keep1: number, keep2: number) {
  const model = lenet5();
  if (existsSync(CKPT)) model.loadStateDict(loadCheckpoint(CKPT).model);
  const w1 = perChannel(6, keep1), w2 = perChannel(16, keep2);
  const assignment = {
    conv1: { w: 8, a: 8, ...(w1 ? { wPerChannel: w1 } : {}) },
    conv2: { w: 8, a: 8, ...(w2 ? { wPerChannel: w2 } : {}) },
    fc1: { w: 8, a: 8 }, fc2: { w: 8, a: 8 }, fc3: { w: 8, a: 8 },
  };
  calibrate(model, [{ x: sample }], { plan: planFromAssignment(assignment, { firstLayer: 'conv1' }) });
  return convert(model, { sample });
}

console.log(`kernels ${JSON.stringify(intKernelsBackend())}, LOWBIT_THREADS=${process.env.LOWBIT_THREADS}${BASE ? `, A/B against ${BASE}` : ''}`);
const addons: { label: string; addon: NonNullable<typeof addon> }[] = [{ label: 'this build', addon }];
if (BASE) {
  if (BASE_ISA) process.env.LOWBIT_ISA = BASE_ISA;
  const base = createRequire(import.meta.url)(BASE) as NonNullable<typeof addon>;
  if (BASE_ISA) console.log(`base: LOWBIT_ISA=${BASE_ISA}, kernels ${JSON.stringify(base.intKernelsInfo!())}`);
  base.setThreads(Number(process.env.LOWBIT_THREADS));
  addons.push({ label: 'base', addon: base });
}
async function binaryMlp() {
  const { batchPool } = await import('./workloads.ts');
  const { binaryMlpIntModel } = await import('./binary-mlp.ts');
  return [{ label: 'binary MLP 784-1024-1024-10', im: binaryMlpIntModel(batchPool(N, 2, 'test').batches[1]!.x) }];
}
const models = MODEL === 'bnn-mlp' ? await binaryMlp() : KEEPS.map(([a, b]) => ({ label: `conv1 ${a} conv2 ${b}`, im: build(a, b) }));
const sleeper = new Int32Array(new SharedArrayBuffer(4));
interface Entry { label: string; run: (x: Float32Array, n: number, out: Float32Array) => void; outputSize: number }
const entries: Entry[] = [];
for (const { label, im } of models) {
  const spec = compileNativePlan(im);
  if (typeof spec === 'string') throw new Error(spec);
  for (const { label: which, addon: ad } of addons) {
    const plan = ad.intPlanCreate!(spec.ops);
    const names = ad.intPlanKernels!(plan);
    const tag = `${label} [${which}]`;
    entries.push({ label: tag, run: (x, n, out) => ad.intPlanRun!(plan, x, n, out), outputSize: spec.outputSize });
    console.log(`\n${tag}: ${names.join(' | ')}`);
    if (!ad.intPlanProfile) continue;
    for (const batch of BATCHES) {
      const x = input.subarray(0, batch * 784);
      const out = new Float32Array(batch * spec.outputSize);
      for (const threads of [1, 2]) {
        const best = new Float64Array(names.length).fill(Infinity);
        for (let r = 0; r < REPS + 2; r++) {
          const nanos = new Float64Array(names.length);
          ad.intPlanProfile(plan, x, batch, out, threads, nanos);
          if (r >= 2) nanos.forEach((v, i) => (best[i] = Math.min(best[i]!, v)));
        }
        const us = Array.from(best, (v) => v / 1000 / batch);
        console.log(`  batch ${batch}, chunks of ${threads}-thread run: ${us.map((v, i) => `${names[i]!.split(' (')[0]} ${v.toFixed(3)}`).join(', ')}; sum ${us.reduce((a, b) => a + b, 0).toFixed(3)} µs/sample`);
      }
    }
  }
}
// Whole plans, wall time, round-robin over every (model, build) with a 1 ms pause between runs
// (so that the idle pool of the other build sleeps rather than spins): minimum per entry.
for (const batch of BATCHES) {
  const x = Float32Array.from(input.subarray(0, batch * 784));
  const outs = entries.map((e) => new Float32Array(batch * e.outputSize));
  const best = entries.map(() => Infinity);
  const all = entries.map(() => [] as number[]);
  for (let r = 0; r <= ROUNDS; r++) {
    entries.forEach((e, i) => {
      Atomics.wait(sleeper, 0, 0, 1);
      const t = performance.now();
      e.run(x, batch, outs[i]!);
      const us = (performance.now() - t) * 1000 / batch;
      if (r > 0) {
        best[i] = Math.min(best[i]!, us);
        all[i]!.push(us);
      }
    });
  }
  const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  console.log(`whole plan, batch ${batch}, ${process.env.LOWBIT_THREADS} threads, interleaved wall min µs/sample (speed-up vs the first model of the same build) [median; images/s at the median]:`);
  entries.forEach((e, i) => console.log(`  ${e.label}: ${best[i]!.toFixed(3)} (${(best[i % addons.length]! / best[i]!).toFixed(3)}x) [${median(all[i]!).toFixed(3)}; ${Math.round(1e6 / median(all[i]!))}/s]`));
}
