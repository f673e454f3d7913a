/**
 * A / B of two builds of the native addon on a W8A8 IntModel (untrained weights: speed does not
 * depend on them): --model cnn, the Fashion-shaped CNN (src/nn/models/cnn.ts: 3x3 pad-1 convs
 * 1->16, 16->16 + max pool, 16->32, 32->32 + max pool, then 1568-128-10), --model resnet8 or --model lenet5; all
 * built by bench/runtime-ts/models.ts's buildBenchModel (seed 0). Both addons in one process; intPlanRun timed in
 * alternating rounds, and the per-op thread CPU time (intPlanProfile) also taken in alternating
 * rounds (min per op over the rounds), so that load changes hit both builds alike; then a check
 * that the logits are identical.
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/native/ab-models.ts --model cnn|resnet8|lenet5 --base /path/to/other/lowbit_native.node
 *     [--batch 64] [--rounds 15] [--seconds 0.4]
 *
 * "new" is this tree's build/Release/lowbit_native.node. Writes bench/results/native-ab-<model>.json
 * (native-ab-<model>-<isa>.json under LOWBIT_ISA=<isa>).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { flagOr, numberFlag } from '../flags.ts';
import { median, writeAtomic } from '../lib.ts';
import type { NativeAddon } from '../../src/backend/native/addon.ts';
import { randn } from '../../src/tensor/index.ts';
import { buildBenchModel } from '../runtime-ts/models.ts';
import { compileNativePlan } from '../../src/runtime/native-plan.ts';

const base = flagOr('base', '');
if (!base) throw new Error('ab-models: --base <path to the other lowbit_native.node> is required');
const kind = flagOr('model', 'cnn');
if (kind !== 'cnn' && kind !== 'resnet8' && kind !== 'lenet5') throw new Error(`ab-models: --model must be cnn, resnet8 or lenet5, got '${kind}'`);
const batch = numberFlag('batch', 64);
const rounds = numberFlag('rounds', 15);
const seconds = numberFlag('seconds', 0.4);
const threads = Number(process.env.LOWBIT_THREADS ?? 2);
const require = createRequire(import.meta.url);
const builds: [string, NativeAddon][] = [
  ['base', require(base) as NativeAddon],
  ['new', require(fileURLToPath(new URL('../../build/Release/lowbit_native.node', import.meta.url))) as NativeAddon],
];

const { im } = buildBenchModel(kind, 'w8a8', 0);
const spec = compileNativePlan(im);
if (typeof spec === 'string') throw new Error(spec);
const x = randn([batch, 1, 28, 28]).data as Float32Array;
const plans = builds.map(([, a]) => a.intPlanCreate!(spec.ops));
const outs = builds.map(() => new Float32Array(batch * spec.outputSize));
builds.forEach(([, a], i) => a.intPlanRun!(plans[i]!, x, batch, outs[i]!));
const identical = outs[0]!.every((v, i) => Object.is(v, outs[1]![i]));
console.log(`[ab-models] identical logits at batch ${batch}: ${identical}`);

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
  console.log(`[ab-models] round ${r + 1}/${rounds}: ${builds.map(([name], b) => `${name} ${Math.round(rates[b]![r]!)}`).join(', ')} images/s`);
}

const names = builds.map(([, a], b) => a.intPlanKernels!(plans[b]!));
const mins = names.map((list) => new Float64Array(list.length).fill(Infinity));
for (let r = 0; r < 11; r++) {
  for (let b = 0; b < builds.length; b++) {
    const nanos = new Float64Array(names[b]!.length);
    builds[b]![1].intPlanProfile!(plans[b]!, x, batch, outs[b]!, threads, nanos);
    nanos.forEach((v, i) => (mins[b]![i] = Math.min(mins[b]![i]!, v)));
  }
}
const profiles = names.map((list, b) => {
  const ops = list.map((name, i) => ({ name, usPerImage: mins[b]![i]! / 1000 / batch }));
  return { ops, totalUsPerImage: ops.reduce((s, o) => s + o.usPerImage, 0) };
});
for (const [b, [name]] of builds.entries()) {
  const p = profiles[b]!;
  console.log(`[ab-models] ${name}: median ${Math.round(median(rates[b]!))} img/s (best ${Math.round(Math.max(...rates[b]!))}), per-op CPU ${p.totalUsPerImage.toFixed(2)} µs/image`);
  for (const op of p.ops) console.log(`[ab-models]   ${op.name.padEnd(48)} ${op.usPerImage.toFixed(2)}`);
}
const summary = builds.map(([name], b) => ({
  build: name,
  medianImagesPerSec: median(rates[b]!),
  bestImagesPerSec: Math.max(...rates[b]!),
  profileUsPerImage: profiles[b]!.totalUsPerImage,
}));
console.log(`[ab-models] new / base: median ${(summary[1]!.medianImagesPerSec / summary[0]!.medianImagesPerSec).toFixed(3)}x, CPU ${(summary[0]!.profileUsPerImage / summary[1]!.profileUsPerImage).toFixed(3)}x`);
const out = `bench/results/native-ab-${kind}${process.env.LOWBIT_ISA ? `-${process.env.LOWBIT_ISA}` : ''}.json`;
writeAtomic(out, JSON.stringify({ model: kind, base, batch, rounds, seconds, threads, identical, summary, rates, profiles }, null, 2) + '\n');
console.log(`[ab-models] wrote ${out}`);
