/**
 * Speed of the integer GRU runtime against lowbit's float GRU (the GRU twin of cell-speed.ts), at the
 * gru-lm's shapes (input 64, hidden 128) and 8-step sequences: IntGRU with the native cell
 * (native/intgru.cc) on each of its paths this machine runs (run's cellPath: 'avx512' 16 units per
 * vector, 'avx2' 8 per vector, 'avx2-loop' the int64 row loop; the int8 GEMM is the same for all),
 * IntGRU with the TypeScript cell (options.native = false; the int8 GEMMs stay native), and nn.GRU
 * forward (noGrad, native backend: fused kernel), at batch 1, 64 and 512.
 *
 *   nice -n 10 node --import tsx bench/irnn/gru-cell-speed.ts [--threads 1] [--rounds 7] [--seconds 0.25]
 *       [--paths avx512,avx2,avx2-loop,scalar] [--isa avx2|avx2-novnni|scalar]
 *
 * --paths: the native cell paths to time (default: avx512, avx2 and avx2-loop, those this machine runs).
 * --isa: rerun the bench in a child process with the native addon forced to that ISA (LOWBIT_ISA; the GEMMs
 * and the float GRU lose AVX-512 too, as on an AVX2-only CPU).
 * Each round runs every variant for about `seconds` of CPU time, variants interleaved; the figure is
 * the median over rounds of sequences per CPU second (process.cpuUsage, user + system), with the
 * wall-clock rate beside it. One pool thread by default, so CPU time is the work done. IntGRU's input is
 * already int8 (as in the LM, whose embedding rows are quantized once); the float GRU reads float32.
 * Writes bench/results/irnn-gru-cell-speed.json (with --threads T > 1: irnn-gru-cell-speed-Tt.json; with
 * --isa: irnn-gru-cell-speed-<isa>.json), atomically.
 */
import { spawnSync } from 'node:child_process';
import { nativeInfo, setNativeThreads } from '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { GRU } from '../../src/nn/index.ts';
import { convertQuantGRU, QuantGRU, type IntGRUCellPath } from '../../src/quant/irnn/index.ts';
import { intKernelsBackend } from '../../src/runtime/kernels/index.ts';
import { randn, Rng } from '../../src/tensor/index.ts';
import { flag, numberFlag } from '../flags.ts';
import { runCellBench, type CellVariant } from './cell-bench.ts';

const isaFlag = flag('isa');
if (isaFlag !== undefined && !['avx2', 'avx2-novnni', 'scalar'].includes(isaFlag)) throw new Error(`gru-cell-speed: --isa must be avx2, avx2-novnni or scalar, got '${isaFlag}'`);
if (isaFlag !== undefined && process.env.LOWBIT_ISA !== isaFlag) {
  // The ISA is fixed when the addon loads: run again in a child with LOWBIT_ISA set.
  const child = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { env: { ...process.env, LOWBIT_ISA: isaFlag }, stdio: 'inherit' });
  process.exit(child.status ?? 1);
}
const allPaths: readonly IntGRUCellPath[] = ['avx512', 'avx2', 'avx2-loop', 'scalar'];
const pathsAsked = (flag('paths') ?? 'avx512,avx2,avx2-loop').split(',');
for (const path of pathsAsked) if (!allPaths.includes(path as IntGRUCellPath)) throw new Error(`gru-cell-speed: --paths takes ${allPaths.join(', ')}; got '${path}'`);
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
// The asked paths this machine runs for the model's tables (a path above the active ISA throws).
const probe = inputs.get(1)!.xq;
const reference = runtime.run(probe, steps, 1, undefined, { native: false }).output;
const paths = (pathsAsked as IntGRUCellPath[]).filter((cellPath) => {
  try {
    const output = runtime.run(probe, steps, 1, undefined, { cellPath }).output;
    if (output.some((v, i) => v !== reference[i])) throw new Error(`gru-cell-speed: the ${cellPath} cell differs from the TypeScript cell`);
    return true;
  } catch (error) {
    if (error instanceof Error && /cannot run here/.test(error.message)) {
      console.log(`skipping the ${cellPath} cell path: ${error.message}`);
      return false;
    }
    throw error;
  }
});
const variants: CellVariant[] = [
  ...paths.map((cellPath): CellVariant => ({ name: `IntGRU native cell, ${cellPath}`, run: (n) => runtime.run(inputs.get(n)!.xq, steps, n, undefined, { cellPath }) })),
  { name: 'IntGRU TypeScript cell', run: (n) => runtime.run(inputs.get(n)!.xq, steps, n, undefined, { native: false }) },
  { name: 'float nn.GRU (native)', run: (n) => noGrad(() => gru.forward(inputs.get(n)!.x)) },
];

const suffix = `${threads === 1 ? '' : `-${threads}t`}${isaFlag ? `-${isaFlag}` : ''}`;
runCellBench({
  what: 'IntGRU', variants, batches, rounds, seconds,
  setup: `input ${inputSize}, hidden ${hiddenSize}, ${steps}-step sequences; native ISA ${info.isa}${process.env.LOWBIT_ISA ? ` (LOWBIT_ISA=${process.env.LOWBIT_ISA})` : ''}, int8 GEMM ${intKernelsBackend().int8}, best cell ${runtime.cellBackend}; ${threads} pool thread(s)`,
  file: `irnn-gru-cell-speed${suffix}.json`,
  record: { inputSize, hiddenSize, steps, threads, isa: info.isa, forcedIsa: process.env.LOWBIT_ISA ?? null, int8: intKernelsBackend().int8, cell: runtime.cellBackend, paths },
  outputs: (n) => [runtime.run(inputs.get(n)!.xq, steps, n).output, runtime.run(inputs.get(n)!.xq, steps, n, undefined, { native: false }).output],
});
