/**
 * A / B of two builds of the native addon on the ResNet-8 W8A8 IntModel (the model of peers.ts and
 * the per-op profile): both addons are loaded into one process and their intPlanRun is timed in
 * alternating rounds, so machine load hits both alike. Reports the median and best images/s per
 * build, the per-op thread CPU time of each (intPlanProfile, min over rounds) and checks that both
 * give identical logits.
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/residual/ab-addons.ts --base /path/to/other/lowbit_native.node
 *     [--batch 64] [--rounds 15] [--seconds 0.4]
 *
 * "new" is this tree's build/Release/lowbit_native.node. Writes bench/results/residual-ab-addons.json.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { flagOr, numberFlag } from '../flags.ts';
import { median, writeAtomic } from '../lib.ts';
import type { NativeAddon } from '../../src/backend/native/addon.ts';
import { resnet8 } from '../../src/nn/index.ts';
import { compileNativePlan } from '../../src/runtime/native-plan.ts';
import { buildBenchModel } from '../runtime-ts/models.ts';
import { randn } from '../../src/tensor/index.ts';

const base = flagOr('base', '');
if (!base) throw new Error('ab-addons: --base <path to the other lowbit_native.node> is required');
const batch = numberFlag('batch', 64);
const rounds = numberFlag('rounds', 15);
const seconds = numberFlag('seconds', 0.4);
const threads = Number(process.env.LOWBIT_THREADS ?? 2);
const require = createRequire(import.meta.url);
const builds: [string, NativeAddon][] = [
  ['base', require(base) as NativeAddon],
  ['new', require(fileURLToPath(new URL('../../build/Release/lowbit_native.node', import.meta.url))) as NativeAddon],
];

const { im } = buildBenchModel('resnet8', 'w8a8', 0);
const spec = compileNativePlan(im);
if (typeof spec === 'string') throw new Error(spec);
const x = randn([batch, 1, 28, 28]).data as Float32Array;
const plans = builds.map(([, a]) => a.intPlanCreate!(spec.ops));
const outs = builds.map(() => new Float32Array(batch * spec.outputSize));
builds.forEach(([, a], i) => a.intPlanRun!(plans[i]!, x, batch, outs[i]!));
const identical = outs[0]!.every((v, i) => Object.is(v, outs[1]![i]));
console.log(`[ab-addons] identical logits at batch ${batch}: ${identical}`);

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
  console.log(`[ab-addons] round ${r + 1}/${rounds}: ${builds.map(([name], b) => `${name} ${Math.round(rates[b]![r]!)}`).join(', ')} images/s`);
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
const summary = builds.map(([name], b) => ({
  build: name,
  medianImagesPerSec: median(rates[b]!),
  bestImagesPerSec: Math.max(...rates[b]!),
  profileUsPerImage: profiles[b]!.totalUsPerImage,
}));
for (const s of summary) {
  console.log(`[ab-addons] ${s.build.padEnd(5)} median ${Math.round(s.medianImagesPerSec)} img/s (best ${Math.round(s.bestImagesPerSec)}), per-op CPU sum ${s.profileUsPerImage.toFixed(2)} µs/image`);
}
console.log(`[ab-addons] new / base: median ${(summary[1]!.medianImagesPerSec / summary[0]!.medianImagesPerSec).toFixed(3)}x, CPU ${(summary[0]!.profileUsPerImage / summary[1]!.profileUsPerImage).toFixed(3)}x`);
const out = 'bench/results/residual-ab-addons.json';
writeAtomic(out, JSON.stringify({ base, batch, rounds, seconds, threads, identical, summary, rates, profiles }, null, 2) + '\n');
console.log(`[ab-addons] wrote ${out}`);
