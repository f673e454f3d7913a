/**
 * Speed of the integer LSTM runtime against lowbit's float LSTM, at the Moby-Dick LM's shapes
 * (input 64, hidden 128, 8-step sequences): IntLSTM with the native cell (native/irnn.cc), IntLSTM
 * with the TypeScript cell (options.native = false; the int8 GEMMs stay native), and nn.LSTM forward
 * (noGrad, native backend: fused AVX-512 kernel), at batch 1, 64 and 512.
 *
 *   nice -n 10 node --import tsx bench/irnn/cell-speed.ts [--threads 1] [--rounds 7] [--seconds 0.25]
 *
 * Each round runs every variant for about `seconds` of CPU time, variants interleaved; the figure is
 * the median over rounds of sequences per CPU second (process.cpuUsage, user + system: far less
 * sensitive to the other jobs on a shared machine than wall time), with the wall-clock rate beside
 * it. One pool thread by default, so CPU time is the work done. IntLSTM's input is already int8 (as
 * in the LM, where the embedding table is stored at the input scale); the float LSTM reads float32.
 * Writes bench/results/irnn-cell-speed.json (atomically).
 */
import { nativeInfo, setNativeThreads } from '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { LSTM } from '../../src/nn/index.ts';
import { convertQuantLSTM, QuantLSTM } from '../../src/quant/irnn/index.ts';
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
if (!info) throw new Error('cell-speed: the native addon is not loaded (npm run build:native)');
setNativeThreads(threads);

const rng = new Rng(11);
const lstm = new LSTM(inputSize, hiddenSize, { rng });
const qlstm = QuantLSTM.fromLSTM(lstm);
// Calibration on random inputs of the embedding's scale (observers in training mode), then integer.
for (let i = 0; i < 4; i++) noGrad(() => qlstm.forward(randn([steps, 64, inputSize], { rng, std: 0.5 })));
qlstm.eval();
const runtime = convertQuantLSTM(qlstm);
lstm.eval();

const inputs = new Map(batches.map((n) => {
  const x = randn([steps, n, inputSize], { rng, std: 0.5 });
  return [n, { x, xq: runtime.quantizeInput(x.data) }];
}));
const variants: CellVariant[] = [
  { name: 'IntLSTM native cell', run: (n) => runtime.run(inputs.get(n)!.xq, steps, n) },
  { name: 'IntLSTM TypeScript cell', run: (n) => runtime.run(inputs.get(n)!.xq, steps, n, undefined, { native: false }) },
  { name: 'float nn.LSTM (native)', run: (n) => noGrad(() => lstm.forward(inputs.get(n)!.x)) },
];

runCellBench({
  what: 'IntLSTM', variants, batches, rounds, seconds,
  setup: `input ${inputSize}, hidden ${hiddenSize}, ${steps}-step sequences; native ISA ${info.isa}, int8 GEMM ${intKernelsBackend().int8}, cell ${runtime.cellBackend}; ${threads} pool thread(s)`,
  file: 'irnn-cell-speed.json',
  record: { inputSize, hiddenSize, steps, threads, isa: info.isa, int8: intKernelsBackend().int8, cell: runtime.cellBackend },
  outputs: (n) => [runtime.run(inputs.get(n)!.xq, steps, n).output, runtime.run(inputs.get(n)!.xq, steps, n, undefined, { native: false }).output],
});
