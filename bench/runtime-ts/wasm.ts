/**
 * The TypeScript executor's two GEMM kernels (lane-packed doubles vs WebAssembly SIMD128, the
 * browser path), the native executor, and the browser peer: onnxruntime-web (its WASM backend,
 * which runs in Node too) on the same IntModel exported as QDQ ONNX and on an fp32 ONNX export of
 * the float architecture. LeNet-5 W8A8 and ResNet-8 W8A8, untrained weights (speed does not depend
 * on them), random inputs, single-threaded on both sides (onnxruntime-web numThreads = 1; the native
 * executor runs with its default threads unless LOWBIT_THREADS says otherwise — see the JSON).
 *
 *   nice -n 10 node --import tsx bench/runtime-ts/wasm.ts [--batch 64] [--rounds 7] [--seed 0]
 *       [--models lenet5-w8a8,resnet8-w8a8] [--out bench/results/runtime-ts-wasm.json]
 *
 * The variants of one model run interleaved, one batch each per round, after one warm-up round;
 * best (min) and median wall time and the best process CPU time per batch are kept as images/s
 * (the machine is shared: CPU time leaves out waiting for a core, but adds the native executor's
 * threads). Logits of the wasm and double
 * kernels and of the native executor are compared bit for bit; onnxruntime-web's QDQ argmax is
 * compared with the IntModel's (ONNX QDQ does not reproduce the integer requantization exactly).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { noGrad } from '../../src/autograd/engine.ts';
import { lenet5, resnet8 } from '../../src/nn/index.ts';
import { manualSeed, randn } from '../../src/tensor/index.ts';
import { exportOnnx } from '../../src/onnx/index.ts';
import { wasmSimdAvailable } from '../../src/runtime/wasm/gemm.ts';
import { flagOr, numberFlag } from '../flags.ts';
import { buildBenchModel } from './models.ts';

const batch = numberFlag('batch', 64, { integer: true, min: 1 });
const rounds = numberFlag('rounds', 7, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const models = flagOr('models', 'lenet5-w8a8,resnet8-w8a8').split(',');
const outFile = flagOr('out', 'bench/results/runtime-ts-wasm.json');
const log = (s: string): void => console.log(`[runtime-ts-wasm] ${s}`);

interface OrtWebTensor { readonly data: unknown; readonly dims: readonly number[] }
interface OrtWebSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtWebTensor>): Promise<Record<string, OrtWebTensor>>;
}
interface OrtWeb {
  env: { wasm: { numThreads?: number; simd?: boolean }; versions?: Record<string, string> };
  InferenceSession: { create(bytes: Uint8Array, options: Record<string, unknown>): Promise<OrtWebSession> };
  Tensor: new (type: 'float32', data: Float32Array, dims: number[]) => OrtWebTensor;
}

let ortWeb: OrtWeb | null = null;
let ortSkip: string | null = null;
try {
  ortWeb = (await import('onnxruntime-web')) as unknown as OrtWeb;
  ortWeb.env.wasm.numThreads = 1;
} catch (e) {
  ortSkip = `onnxruntime-web did not load: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`;
  log(`skip onnxruntime-web: ${ortSkip}`);
}

interface Variant {
  readonly name: string;
  readonly run: () => Float32Array | Promise<Float32Array>;
  wall: number[];
  cpu: number[];
  out?: Float32Array;
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const argmax = (y: Float32Array, i: number): number => {
  let best = 0;
  for (let c = 1; c < 10; c++) if (y[i * 10 + c]! > y[i * 10 + best]!) best = c;
  return best;
};
log(`wasm SIMD128 available: ${wasmSimdAvailable()}, batch ${batch}, ${rounds} rounds, ${cpus().length} cpus, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
const rows: Record<string, unknown>[] = [];
const skipped: Record<string, string> = {};
for (const spec of models) {
  const [kind, scheme] = spec.split('-') as ['lenet5' | 'resnet8', 'w8a8' | 'w4a4'];
  const { label, im } = buildBenchModel(kind, scheme, seed);
  manualSeed(seed + 7);
  const x = randn([batch, 1, 28, 28]);
  const data = x.data as Float32Array;
  const ts = (kernels: 'wasm' | 'double') => (): Float32Array => {
    im.useNative = false;
    im.tsKernels = kernels;
    try {
      return im.run(data, batch);
    } finally {
      im.useNative = true;
      im.tsKernels = 'wasm';
    }
  };
  const variants: Variant[] = [
    { name: 'ts-double', run: ts('double'), wall: [], cpu: [] },
    { name: 'ts-wasm', run: ts('wasm'), wall: [], cpu: [] },
  ];
  if (im.nativeUnavailableReason() === null) variants.push({ name: 'native', run: () => im.run(data, batch), wall: [], cpu: [] });
  if (ortWeb) {
    const ort = ortWeb;
    const floatModel = kind === 'lenet5' ? lenet5() : resnet8();
    floatModel.train();
    noGrad(() => floatModel.forward(randn([32, 1, 28, 28]))); // BatchNorm running statistics
    floatModel.eval();
    const exports: [string, Uint8Array][] = [
      ['ort-web-qdq', exportOnnx(im).bytes],
      ['ort-web-fp32', exportOnnx(floatModel, { inputShape: [1, 28, 28] }).bytes],
    ];
    for (const [name, bytes] of exports) {
      try {
        const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
        const feeds = { [session.inputNames[0]!]: new ort.Tensor('float32', data, [batch, 1, 28, 28]) };
        variants.push({
          name,
          run: async () => (await session.run(feeds))[session.outputNames[0]!]!.data as Float32Array,
          wall: [],
          cpu: [],
        });
      } catch (e) {
        skipped[`${label} ${name}`] = e instanceof Error ? e.message.split('\n')[0]! : String(e);
        log(`skip ${label} ${name}: ${skipped[`${label} ${name}`]}`);
      }
    }
  }
  for (let r = 0; r <= rounds; r++) {
    for (const v of variants) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const out = await v.run();
      const wall = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      if (r === 0) v.out = Float32Array.from(out);
      else {
        v.wall.push(wall);
        v.cpu.push((c.user + c.system) / 1e6);
      }
    }
    if (r > 0) log(`${label} round ${r}/${rounds}: ${variants.map((v) => `${v.name} ${(batch / v.wall.at(-1)!).toFixed(0)}`).join(', ')} images/s`);
  }
  const byName = new Map(variants.map((v) => [v.name, v]));
  const same = (a: string, b: string): boolean | null => {
    const va = byName.get(a)?.out;
    const vb = byName.get(b)?.out;
    return va && vb ? va.length === vb.length && va.every((y, i) => Object.is(y, vb[i])) : null;
  };
  const best = (name: string): number => batch / Math.min(...byName.get(name)!.wall);
  const result: Record<string, unknown> = { model: label, batch, macsPerSample: im.size.macs };
  const bestCpu = (name: string): number => batch / Math.min(...byName.get(name)!.cpu);
  for (const v of variants) result[v.name] = { imagesPerSecondBestWall: best(v.name), imagesPerSecondMedianWall: batch / median(v.wall), imagesPerSecondBestCpu: bestCpu(v.name) };
  result.wasmOverDouble = best('ts-wasm') / best('ts-double');
  result.wasmOverDoubleCpu = bestCpu('ts-wasm') / bestCpu('ts-double');
  for (const peer of ['ort-web-qdq', 'ort-web-fp32', 'native']) {
    if (!byName.has(peer)) continue;
    result[`wasmOver_${peer}`] = best('ts-wasm') / best(peer);
    result[`wasmOver_${peer}_cpu`] = bestCpu('ts-wasm') / bestCpu(peer);
  }
  result.identicalWasmDouble = same('ts-wasm', 'ts-double');
  result.identicalWasmNative = same('ts-wasm', 'native');
  const qdq = byName.get('ort-web-qdq')?.out;
  if (qdq) {
    const ours = byName.get('ts-wasm')!.out!;
    let agree = 0;
    for (let i = 0; i < batch; i++) if (argmax(qdq, i) === argmax(ours, i)) agree++;
    result.ortQdqArgmaxAgreement = agree / batch;
  }
  log(`${label}: best images/s wall (CPU) ${variants.map((v) => `${v.name} ${best(v.name).toFixed(0)} (${bestCpu(v.name).toFixed(0)})`).join(', ')}; wasm/double x${(result.wasmOverDouble as number).toFixed(2)}; logits wasm==double ${result.identicalWasmDouble}, wasm==native ${result.identicalWasmNative}`);
  rows.push(result);
}

mkdirSync('bench/results', { recursive: true });
writeFileSync(`${outFile}.tmp`, JSON.stringify({
  bench: 'runtime-ts-wasm', seed, batch, rounds, cpus: cpus().length, loadAverageAtEnd: loadavg(),
  onnxruntimeWeb: ortWeb?.env.versions ?? null, ortWebThreads: 1, lowbitThreads: process.env.LOWBIT_THREADS ?? 'default',
  skipped: ortSkip ? { 'onnxruntime-web': ortSkip, ...skipped } : skipped, rows,
}, null, 2));
renameSync(`${outFile}.tmp`, outFile);
log(`wrote ${outFile}`);
