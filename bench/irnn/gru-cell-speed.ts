/**
 * Speed of the integer GRU runtime against lowbit's float GRU (the GRU twin of cell-speed.ts), at the
 * gru-lm's shapes (input 64, hidden 128) and 8-step sequences: IntGRU with the native cell
 * (native/intgru.cc), IntGRU with the TypeScript cell (options.native = false; the int8 GEMMs stay
 * native), and nn.GRU forward (noGrad, native backend: fused kernel), at batch 1, 64 and 512.
 *
 *   nice -n 10 node --import tsx bench/irnn/gru-cell-speed.ts [--threads 1] [--rounds 7] [--seconds 0.25]
 *
 * Each round runs every variant for about `seconds` of CPU time, variants interleaved; the figure is
 * the median over rounds of sequences per CPU second (process.cpuUsage, user + system), with the
 * wall-clock rate beside it. One pool thread by default, so CPU time is the work done. IntGRU's input is
 * already int8 (as in the LM, whose embedding rows are quantized once); the float GRU reads float32.
 * Writes bench/results/irnn-gru-cell-speed.json (with --threads T > 1: irnn-gru-cell-speed-Tt.json), atomically.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nativeInfo, setNativeThreads } from '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { GRU } from '../../src/nn/index.ts';
import { convertQuantGRU, QuantGRU } from '../../src/quant/irnn/index.ts';
import { intKernelsBackend } from '../../src/runtime/kernels/index.ts';
import { randn, Rng } from '../../src/tensor/index.ts';
import { numberFlag } from '../flags.ts';

const threads = numberFlag('threads', 1, { integer: true, min: 1 });
const rounds = numberFlag('rounds', 7, { integer: true, min: 1 });
const seconds = numberFlag('seconds', 0.25, { min: 0.01 });
const [inputSize, hiddenSize, steps] = [64, 128, 8];
const batches = [1, 64, 512];

const info = nativeInfo();
if (!info) throw new Error('gru-cell-speed: the native addon is not loaded (npm run build:native)');
setNativeThreads(threads);

const rng = new Rng(11);
const gru = new GRU(inputSize, hiddenSize, { rng });
const qgru = QuantGRU.fromGRU(gru);
// Calibration on random inputs of the embedding's scale (observers in training mode), then integer.
for (let i = 0; i < 4; i++) noGrad(() => qgru.forward(randn([steps, 64, inputSize], { rng, std: 0.5 })));
qgru.eval();
const runtime = convertQuantGRU(qgru);
gru.eval();

const inputs = new Map(batches.map((n) => {
  const x = randn([steps, n, inputSize], { rng, std: 0.5 });
  return [n, { x, xq: runtime.quantizeInput(x.data) }];
}));
const variants: { name: string; run: (batch: number) => void }[] = [
  { name: 'IntGRU native cell', run: (n) => runtime.run(inputs.get(n)!.xq, steps, n) },
  { name: 'IntGRU TypeScript cell', run: (n) => runtime.run(inputs.get(n)!.xq, steps, n, undefined, { native: false }) },
  { name: 'float nn.GRU (native)', run: (n) => noGrad(() => gru.forward(inputs.get(n)!.x)) },
];

/** Runs `fn` for about `seconds` of CPU time; returns sequences per CPU second and per wall second. */
function measure(fn: () => void, batch: number): { cpu: number; wall: number } {
  fn();  // warm (packing, tables)
  let calls = 0;
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  let used = 0;
  while (used < seconds * 1e6) {
    fn();
    calls++;
    const u = process.cpuUsage(cpu0);
    used = u.user + u.system;
  }
  const wall = (performance.now() - wall0) / 1000;
  return { cpu: (calls * batch) / (used / 1e6), wall: (calls * batch) / wall };
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

// Same integers from both cells (gru-native.test.ts checks it thoroughly; a cheap guard here).
for (const n of batches) {
  const a = runtime.run(inputs.get(n)!.xq, steps, n);
  const b = runtime.run(inputs.get(n)!.xq, steps, n, undefined, { native: false });
  if (a.output.some((v, i) => v !== b.output[i])) throw new Error(`gru-cell-speed: native and TypeScript cells differ at batch ${n}`);
}

const rows: { batch: number; variant: string; seqPerCpuSecond: number; seqPerWallSecond: number }[] = [];
for (const batch of batches) {
  console.log(`batch ${batch}: ${rounds} rounds`);
  const cpu = variants.map(() => [] as number[]);
  const wall = variants.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    variants.forEach((v, i) => {
      const m = measure(() => v.run(batch), batch);
      cpu[i]!.push(m.cpu);
      wall[i]!.push(m.wall);
    });
  }
  variants.forEach((v, i) => rows.push({ batch, variant: v.name, seqPerCpuSecond: median(cpu[i]!), seqPerWallSecond: median(wall[i]!) }));
}

const load = (await import('node:os')).loadavg()[0]!;
console.log(`IntGRU cell speed: input ${inputSize}, hidden ${hiddenSize}, ${steps}-step sequences; native ISA ${info.isa}, int8 GEMM ${intKernelsBackend().int8}, cell ${runtime.cellBackend}; ${threads} pool thread(s); load average ${load.toFixed(1)}`);
console.log('| batch | variant | sequences / CPU s | sequences / wall s | vs float (CPU) |');
console.log('| ---: | --- | ---: | ---: | ---: |');
for (const row of rows) {
  const float = rows.find((r) => r.batch === row.batch && r.variant.startsWith('float'))!;
  console.log(`| ${row.batch} | ${row.variant} | ${row.seqPerCpuSecond.toFixed(0)} | ${row.seqPerWallSecond.toFixed(0)} | ${(row.seqPerCpuSecond / float.seqPerCpuSecond).toFixed(2)}x |`);
}
const name = threads === 1 ? 'irnn-gru-cell-speed.json' : `irnn-gru-cell-speed-${threads}t.json`;
const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', name);
const record = { date: new Date().toISOString(), inputSize, hiddenSize, steps, threads, rounds, seconds, isa: info.isa, int8: intKernelsBackend().int8, cell: runtime.cellBackend, loadAverage: load, rows };
writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`));
console.log(`written ${out}`);
