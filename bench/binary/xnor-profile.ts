/**
 * Per-op thread CPU time of the Bi-Real ResNet-8's native plan (untrained, seeded: the integers'
 * values do not change the work) with its binary 3×3 convs as ±1 int8 GEMMs and with XNOR-popcount
 * forced, on the ISA the addon runs (set LOWBIT_ISA=avx2 or scalar to lower it). intPlanProfile runs
 * the batch serially on the calling thread in the chunks a 2-thread run uses; the two plans are
 * interleaved round by round, median per op over the rounds.
 *
 *   nice -n 10 node --import tsx bench/binary/xnor-profile.ts [--rounds 7] [--batch 64] [--out binary-xnor-profile-<isa>.json]
 */
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { biRealResnet8 } from '../../src/nn/index.ts';
import { manualSeed, randn } from '../../src/tensor/index.ts';
import { noGrad } from '../../src/autograd/engine.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { convert } from '../../src/runtime/index.ts';
import { compileNativePlan } from '../../src/runtime/native-plan.ts';
import { loadAddon } from '../../src/backend/native/load.ts';
import { gitCommit, median, writeAtomic } from '../lib.ts';
import { biRealPlan } from './plan.ts';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
};
const ROUNDS = Number(opt('rounds', '7'));
const BATCH = Number(opt('batch', '64'));
const addon = loadAddon();
if (!addon?.intPlanProfile) throw new Error('bench/binary/xnor-profile.ts needs the native addon');
const isa = addon.info().isa;
const OUT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'results', opt('out', `binary-xnor-profile-${isa}.json`));

manualSeed(0);
const model = biRealResnet8();
prepareQat(model, biRealPlan(model, { realDownsample: true }));
const sample = randn([32, 1, 28, 28]);
model.train();
noGrad(() => model.forward(sample));
model.eval();
const im = convert(model, { sample });
const spec = compileNativePlan(im);
if (typeof spec !== 'object') throw new Error(`no native plan: ${spec}`);
const x = randn([BATCH, 1, 28, 28]).data as Float32Array;
const plans = { gemm: addon.intPlanCreate!(spec.ops, true, true, true, true, false), xnor: addon.intPlanCreate!(spec.ops, true, true, true, true, true) };
const loadBefore = loadavg();
const perOp: Record<string, number[][]> = { gemm: [], xnor: [] };
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, plan] of Object.entries(plans)) {
    const nanos = new Float64Array(spec.ops.length);
    addon.intPlanProfile!(plan, x, BATCH, new Float32Array(BATCH * 10), 2, nanos);
    perOp[name]!.push(Array.from(nanos));
  }
}
const result = Object.fromEntries(Object.entries(plans).map(([name, plan]) => {
  const kernels = addon.intPlanKernels!(plan);
  if (kernels.length !== spec.ops.length) throw new Error('the plan merged ops: per-op times no longer line up with spec.ops');
  const ops = kernels.map((k, i) => ({ kernel: k, msPerBatch: median(perOp[name]!.map((r) => r[i]!)) / 1e6 }));
  const total = median(perOp[name]!.map((r) => r.reduce((a, b) => a + b, 0))) / 1e6;
  const binaryConvs = ops.filter((o, i) => spec.ops[i]!.meta[32] === 1).reduce((a, o) => a + o.msPerBatch, 0);
  return [name, { totalMsPerBatch: total, binaryConvMsPerBatch: binaryConvs, ops }];
}));
const summary = `${isa}: whole plan ${result.gemm!.totalMsPerBatch.toFixed(2)} ms (int8 GEMM) vs ${result.xnor!.totalMsPerBatch.toFixed(2)} ms (XNOR) per ${BATCH} images; binary convs ${result.gemm!.binaryConvMsPerBatch.toFixed(2)} vs ${result.xnor!.binaryConvMsPerBatch.toFixed(2)} ms`;
console.log(summary);
writeAtomic(OUT, `${JSON.stringify({
  bench: 'binary-xnor-profile', commit: gitCommit(), date: new Date().toISOString(), isa, batch: BATCH, rounds: ROUNDS,
  command: `${process.env.LOWBIT_ISA ? `LOWBIT_ISA=${process.env.LOWBIT_ISA} ` : ''}nice -n 10 node --import tsx bench/binary/xnor-profile.ts ${args.join(' ')}`.trim(),
  loadAverageBefore: loadBefore, loadAverageAfter: loadavg(), summary, ...result,
}, null, 2)}\n`);
console.log(`wrote ${OUT}`);
