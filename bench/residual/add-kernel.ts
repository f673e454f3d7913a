/**
 * The native add op per ISA (LOWBIT_ISA = the CPU's best, avx2, scalar; each in a child process):
 *
 *   1. the kernel alone: `intAddValues` on 802,816 values (ResNet-8's first add at batch 64:
 *      16 x 28 x 28 per image) for u8 + u8 -> u8, s8 + u8 -> s8 and int32 + int32 -> int32, best
 *      of `reps` calls, ns per value;
 *   2. in ResNet-8 W8A8 (full width, untrained, random inputs): the thread CPU time of the plan's
 *      add ops and of the whole plan (`intPlanProfile`, the chunks of a 2-thread run executed
 *      serially, best of `reps` per op), µs per image at batch 64. Only the add ops' times compare
 *      the add kernels; the other ops also change with LOWBIT_ISA.
 *
 *   3. with `--base other.node` (a build of the addon before the vector add, e.g. of commit 9a105bc):
 *      the same ResNet-8 plan on both builds in one process (default ISA): the add ops' CPU time as
 *      above, and the whole plan's wall time on LOWBIT_THREADS threads, the builds interleaved
 *      run by run, best of `reps`, images/s at batch 64 and 256.
 *
 *   nice -n 10 node --import tsx bench/residual/add-kernel.ts [--reps 20] [--seed 0] [--base old.node]
 *
 * Writes bench/results/residual-add-kernel.json.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { flagOr, numberFlag } from '../flags.ts';
import { writeAtomic } from '../lib.ts';

const reps = numberFlag('reps', 20, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const base = flagOr('base', '');
const log = (s: string): void => console.log(`[residual-add] ${s}`);

interface ChildResult {
  isa: string;
  kernel: Record<string, number>;
  addKernels: string[];
  addTypes: string[];
  addMicrosPerImage: number;
  planMicrosPerImage: number;
  base?: { addKernels: string[]; addMicrosPerImage: number; planMicrosPerImage: number; wallImagesPerSecond: Record<string, { this: number; base: number }> };
}

async function child(): Promise<ChildResult> {
  const { loadAddon } = await import('../../src/backend/native/load.ts');
  const { randn, Rng } = await import('../../src/tensor/index.ts');
  const { compileNativePlan } = await import('../../src/runtime/native-plan.ts');
  const { buildBenchModel } = await import('../runtime-ts/models.ts');
  const addon = loadAddon();
  if (!addon?.intAddValues || !addon.intPlanProfile) throw new Error('the native addon has no IntModel executor (npm run build:native)');
  const isa = addon.info().isa;
  const n = 64 * 16 * 28 * 28;
  const rng = new Rng(seed);
  const fill = <T extends Uint8Array | Int8Array | Int32Array>(a: T, lo: number, hi: number): T => {
    for (let i = 0; i < a.length; i++) a[i] = lo + Math.floor(rng.uniform() * (hi - lo + 1));
    return a;
  };
  const best = (run: () => void): number => {
    run();
    let min = Infinity;
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      run();
      min = Math.min(min, performance.now() - t);
    }
    return (min * 1e6) / n;
  };
  const kernel: Record<string, number> = {};
  const u8a = fill(new Uint8Array(n), 0, 255);
  const u8b = fill(new Uint8Array(n), 0, 255);
  const s8a = fill(new Int8Array(n), -128, 127);
  const i32a = fill(new Int32Array(n), -(2 ** 20), 2 ** 20);
  const i32b = fill(new Int32Array(n), -(2 ** 20), 2 ** 20);
  const p = Float64Array.of(3, 130, 1_234_567_890, 987_654_321, 31, 5, 0, 255);
  const u8out = new Uint8Array(n);
  const s8out = new Int8Array(n);
  const i32out = new Int32Array(n);
  kernel['u8+u8->u8'] = best(() => addon.intAddValues!(u8a, u8b, p, u8out));
  kernel['s8+u8->s8'] = best(() => addon.intAddValues!(s8a, u8b, Float64Array.of(-3, 130, 1_234_567_890, 987_654_321, 31, 5, -128, 127), s8out));
  kernel['i32+i32->i32'] = best(() => addon.intAddValues!(i32a, i32b, Float64Array.of(0, 0, 1_234_567_890, 987_654_321, 38, 0, -(2 ** 31), 2 ** 31 - 1), i32out));

  const { im } = buildBenchModel('resnet8', 'w8a8', seed);
  const spec = compileNativePlan(im);
  if (typeof spec === 'string') throw new Error(spec);
  type Addon = NonNullable<typeof addon>;
  const batch = 64;
  const x = randn([256, 1, 28, 28]).data as Float32Array;
  const profile = (ad: Addon) => {
    const plan = ad.intPlanCreate!(spec.ops);
    const names = ad.intPlanKernels!(plan);
    const out = new Float32Array(batch * spec.outputSize);
    const min = new Float64Array(names.length).fill(Infinity);
    for (let r = 0; r < reps + 1; r++) {
      const nanos = new Float64Array(names.length);
      ad.intPlanProfile!(plan, x, batch, out, 2, nanos);
      if (r > 0) nanos.forEach((v, i) => (min[i] = Math.min(min[i]!, v)));
    }
    const adds = names.map((k, i) => (k.startsWith('add') ? i : -1)).filter((i) => i >= 0);
    return {
      plan, adds, addKernels: adds.map((i) => names[i]!),
      addMicrosPerImage: adds.reduce((s, i) => s + min[i]!, 0) / 1000 / batch,
      planMicrosPerImage: min.reduce((s, v) => s + v, 0) / 1000 / batch,
    };
  };
  const mine = profile(addon);
  const typeName = ['u8', 's8', 'i32'];
  const result: ChildResult = {
    isa,
    kernel,
    addKernels: mine.addKernels,
    addTypes: mine.adds.map((i) => `${typeName[spec.ops[i]!.meta[1]!]}+${typeName[spec.ops[i]!.meta[20]!]}->${typeName[spec.ops[i]!.meta[2]!]}`),
    addMicrosPerImage: mine.addMicrosPerImage,
    planMicrosPerImage: mine.planMicrosPerImage,
  };
  if (base && !process.env.LOWBIT_ISA) {
    const other = createRequire(import.meta.url)(base) as Addon;
    other.setThreads(addon.info().threads);
    const theirs = profile(other);
    const wall: Record<string, { this: number; base: number }> = {};
    for (const n of [64, 256]) {
      const outs = [new Float32Array(n * spec.outputSize), new Float32Array(n * spec.outputSize)];
      const bestMs = [Infinity, Infinity];
      const plans = [mine.plan, theirs.plan];
      const runs = [addon, other];
      for (let r = 0; r <= reps; r++) {
        for (const k of [0, 1]) {
          const t = performance.now();
          runs[k]!.intPlanRun!(plans[k]!, x, n, outs[k]!);
          if (r > 0) bestMs[k] = Math.min(bestMs[k]!, performance.now() - t);
        }
      }
      if (!outs[0]!.every((v, i) => Object.is(v, outs[1]![i]))) throw new Error('the two builds give different logits');
      wall[String(n)] = { this: (n * 1000) / bestMs[0]!, base: (n * 1000) / bestMs[1]! };
    }
    result.base = { addKernels: theirs.addKernels, addMicrosPerImage: theirs.addMicrosPerImage, planMicrosPerImage: theirs.planMicrosPerImage, wallImagesPerSecond: wall };
  }
  return result;
}

if (process.argv.includes('--child')) {
  console.log(JSON.stringify(await child()));
} else {
  const results: ChildResult[] = [];
  for (const isa of [undefined, 'avx2', 'scalar']) {
    const run = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', '--reps', String(reps), '--seed', String(seed), ...(base ? ['--base', base] : [])], {
      env: { ...process.env, ...(isa ? { LOWBIT_ISA: isa } : {}) }, encoding: 'utf8', timeout: 600_000,
    });
    if (run.status !== 0) throw new Error(`child (${isa ?? 'default ISA'}) failed: ${run.stderr.slice(-2000)}`);
    const r = JSON.parse(run.stdout.trim().split('\n').pop()!) as ChildResult;
    results.push(r);
    if (r.base) {
      const w = r.base.wallImagesPerSecond;
      log(`base build (${base}): add ops ${r.base.addMicrosPerImage.toFixed(1)} µs/image of ${r.base.planMicrosPerImage.toFixed(1)} (${r.base.addKernels.join(', ')}); whole plan wall images/s this / base: ${Object.entries(w).map(([n, v]) => `batch ${n} ${v.this.toFixed(0)} / ${v.base.toFixed(0)} (${(v.this / v.base).toFixed(2)}x)`).join(', ')}`);
    }
    log(`${r.isa}: kernel ns/value ${Object.entries(r.kernel).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')}; ResNet-8 W8A8 batch 64: add ops ${r.addMicrosPerImage.toFixed(1)} µs/image of ${r.planMicrosPerImage.toFixed(1)} (${r.addKernels.join(', ')}; ${r.addTypes.join(', ')})`);
  }
  writeAtomic('bench/results/residual-add-kernel.json', JSON.stringify({ bench: 'residual-add-kernel', reps, seed, results }, null, 2));
  log('wrote bench/results/residual-add-kernel.json');
}
