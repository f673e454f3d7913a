/**
 * A / B of two builds of the native addon on the Fashion-shaped CNN (src/nn/models/cnn.ts:
 * conv 1->16, 16->16 + max pool, 16->32, 32->32 + max pool, 3x3 pad 1, then 1568-128-10), W8A8,
 * untrained weights (speed does not depend on them): both addons in one process, intPlanRun timed
 * in alternating rounds (load hits both alike), then the per-op thread CPU time of each
 * (intPlanProfile, min over 11 runs) and a check that the logits are identical.
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/native/ab-cnn.ts --base /path/to/other/lowbit_native.node
 *     [--batch 64] [--rounds 15] [--seconds 0.4]
 *
 * "new" is this tree's build/Release/lowbit_native.node. Writes bench/results/native-ab-cnn.json.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { flagOr, numberFlag } from '../flags.ts';
import { median, writeAtomic } from '../lib.ts';
import type { NativeAddon } from '../../src/backend/native/addon.ts';
import { noGrad } from '../../src/autograd/engine.ts';
import { cnn } from '../../src/nn/index.ts';
import { manualSeed, randn } from '../../src/tensor/index.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { qconfigFor } from '../../src/quant/config/qconfig.ts';
import { convert } from '../../src/runtime/index.ts';
import { compileNativePlan } from '../../src/runtime/native-plan.ts';

const base = flagOr('base', '');
if (!base) throw new Error('ab-cnn: --base <path to the other lowbit_native.node> is required');
const batch = numberFlag('batch', 64);
const rounds = numberFlag('rounds', 15);
const seconds = numberFlag('seconds', 0.4);
const threads = Number(process.env.LOWBIT_THREADS ?? 2);
const require = createRequire(import.meta.url);
const builds: [string, NativeAddon][] = [
  ['base', require(base) as NativeAddon],
  ['new', require(fileURLToPath(new URL('../../build/Release/lowbit_native.node', import.meta.url))) as NativeAddon],
];

manualSeed(0);
const model = cnn();
prepareQat(model, { default: qconfigFor('w8a8', 'ste') });
model.train();
for (let i = 0; i < 3; i++) noGrad(() => model.forward(randn([32, 1, 28, 28])));
model.eval();
const im = convert(model, { sample: randn([32, 1, 28, 28]) });
const spec = compileNativePlan(im);
if (typeof spec === 'string') throw new Error(spec);
const x = randn([batch, 1, 28, 28]).data as Float32Array;
const plans = builds.map(([, a]) => a.intPlanCreate!(spec.ops));
const outs = builds.map(() => new Float32Array(batch * spec.outputSize));
builds.forEach(([, a], i) => a.intPlanRun!(plans[i]!, x, batch, outs[i]!));
const identical = outs[0]!.every((v, i) => Object.is(v, outs[1]![i]));
console.log(`[ab-cnn] identical logits at batch ${batch}: ${identical}`);

const rates: number[][] = builds.map(() => []);
for (let r = 0; r < rounds; r++) {
  for (let b = 0; b < builds.length; b++) {
    const a = builds[b]![1];
    let n = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < seconds * 1000) {
      a.intPlanRun!(plans[b]!, x, batch, outs[b]!);
      n += batch;
    }
    rates[b]!.push((n * 1000) / (performance.now() - t0));
  }
  console.log(`[ab-cnn] round ${r + 1}/${rounds}: ${builds.map(([name], b) => `${name} ${Math.round(rates[b]![r]!)}`).join(', ')} images/s`);
}

const profiles = builds.map(([, a], b) => {
  const names = a.intPlanKernels!(plans[b]!);
  const min = new Float64Array(names.length).fill(Infinity);
  for (let r = 0; r < 11; r++) {
    const nanos = new Float64Array(names.length);
    a.intPlanProfile!(plans[b]!, x, batch, outs[b]!, threads, nanos);
    nanos.forEach((v, i) => (min[i] = Math.min(min[i]!, v)));
  }
  const ops = names.map((name, i) => ({ name, usPerImage: min[i]! / 1000 / batch }));
  return { ops, totalUsPerImage: ops.reduce((s, o) => s + o.usPerImage, 0) };
});
for (const [b, [name]] of builds.entries()) {
  const p = profiles[b]!;
  console.log(`[ab-cnn] ${name}: median ${Math.round(median(rates[b]!))} img/s (best ${Math.round(Math.max(...rates[b]!))}), per-op CPU ${p.totalUsPerImage.toFixed(2)} µs/image`);
  for (const op of p.ops) console.log(`[ab-cnn]   ${op.name.padEnd(48)} ${op.usPerImage.toFixed(2)}`);
}
const summary = builds.map(([name], b) => ({
  build: name,
  medianImagesPerSec: median(rates[b]!),
  bestImagesPerSec: Math.max(...rates[b]!),
  profileUsPerImage: profiles[b]!.totalUsPerImage,
}));
console.log(`[ab-cnn] new / base: median ${(summary[1]!.medianImagesPerSec / summary[0]!.medianImagesPerSec).toFixed(3)}x, CPU ${(summary[0]!.profileUsPerImage / summary[1]!.profileUsPerImage).toFixed(3)}x`);
const out = 'bench/results/native-ab-cnn.json';
writeAtomic(out, JSON.stringify({ base, batch, rounds, seconds, threads, identical, summary, rates, profiles }, null, 2) + '\n');
console.log(`[ab-cnn] wrote ${out}`);
