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
import { nativeInfo, setNativeThreads } from '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { GRU } from '../../src/nn/index.ts';
import { convertQuantGRU, QuantGRU } from '../../src/quant/irnn/index.ts';
import { intKernelsBackend } from '../../src/runtime/kernels/index.ts';
import { randn, Rng } from '../../src/tensor/index.ts';
import { numberFlag } from '../flags.ts';
import { runCellBench, type CellVariant } from './cell-bench.ts';

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
const variants: CellVariant[] = [
  { name: 'IntGRU native cell', run: (n) => runtime.run(inputs.get(n)!.xq, steps, n) },
  { name: 'IntGRU TypeScript cell', run: (n) => runtime.run(inputs.get(n)!.xq, steps, n, undefined, { native: false }) },
  { name: 'float nn.GRU (native)', run: (n) => noGrad(() => gru.forward(inputs.get(n)!.x)) },
];

runCellBench({
  what: 'IntGRU', variants, batches, rounds, seconds,
  setup: `input ${inputSize}, hidden ${hiddenSize}, ${steps}-step sequences; native ISA ${info.isa}, int8 GEMM ${intKernelsBackend().int8}, cell ${runtime.cellBackend}; ${threads} pool thread(s)`,
  file: threads === 1 ? 'irnn-gru-cell-speed.json' : `irnn-gru-cell-speed-${threads}t.json`,
  record: { inputSize, hiddenSize, steps, threads, isa: info.isa, int8: intKernelsBackend().int8, cell: runtime.cellBackend },
  outputs: (n) => [runtime.run(inputs.get(n)!.xq, steps, n).output, runtime.run(inputs.get(n)!.xq, steps, n, undefined, { native: false }).output],
});
