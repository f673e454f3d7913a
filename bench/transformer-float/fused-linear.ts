/**
 * The float Transformer LM's forward (`noGrad(() => model.forwardAll(ids))`, the seq-inference
 * shapes: vocabulary 2000, width 80, 2 blocks, 4 heads, MLP 320, tanh GELU, batch 256 × 8 tokens)
 * with `linear` as the one `linear` primitive (bias in the GEMM's output) against matmul + add
 * (`setFusedLinear(false)`), interleaved call by call (the order alternates), on the native backend.
 * Prints the median wall and process-CPU ms per call of each and the load (`os.loadavg`); writes nothing.
 *
 *   nice -n 10 node --import tsx bench/transformer-float/fused-linear.ts [--threads 2] [--calls 60]
 */
import { loadavg } from 'node:os';
import { noGrad } from '../../src/autograd/index.ts';
import { nativeInfo } from '../../src/backend/index.ts';
import { setFusedLinear } from '../../src/tensor/index.ts';
import { numberFlag } from '../flags.ts';
import { benchTransformer, useNative } from './common.ts';

const threads = numberFlag('threads', 2, { integer: true, min: 1 });
const calls = numberFlag('calls', 60, { integer: true, min: 2 });
useNative(threads);

const { model, ids } = benchTransformer();

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const modes = ['fused', 'matmul + add'] as const;
const wall = new Map<string, number[]>(modes.map((m) => [m, []]));
const cpu = new Map<string, number[]>(modes.map((m) => [m, []]));
const load0 = loadavg()[0]!;
for (let i = -4; i < calls; i++) {
  for (const mode of i % 2 === 0 ? modes : [...modes].reverse()) {
    setFusedLinear(mode === 'fused');
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    noGrad(() => model.forwardAll(ids));
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    if (i >= 0) {
      wall.get(mode)!.push(ms);
      cpu.get(mode)!.push((c.user + c.system) / 1000);
    }
  }
}
setFusedLinear(true);
console.log(`native ${nativeInfo()!.isa}, ${threads} thread(s), ${calls} calls each, load average ${load0.toFixed(2)} → ${loadavg()[0]!.toFixed(2)}`);
console.log('| linear | wall ms (median) | CPU ms (median) | CPU / wall |');
console.log('| --- | ---: | ---: | ---: |');
for (const mode of modes) {
  const w = median(wall.get(mode)!);
  const c = median(cpu.get(mode)!);
  console.log(`| ${mode} | ${w.toFixed(2)} | ${c.toFixed(2)} | ${(c / w).toFixed(2)} |`);
}
