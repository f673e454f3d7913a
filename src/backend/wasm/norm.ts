/**
 * batchNorm, batchNormBackward, batchNormStats, clamp and clampBackward on the wasm backend:
 * adapters to ./norm-module.ts. BatchNorm follows native/batchnorm.cc: per channel, a shifted sum
 * about the channel's first element gives the mean rounded to float32 (hi), a second pass
 * Σ(x − hi) and Σ(x − hi)² gives hi's remainder lo and the biased variance; each row sums in
 * float32 lanes and rows add in float64, so statistics match the reference's float64 ones to about
 * 1e-7 relative (the op tests allow 1e-5). Unlike the native kernel, x − mean is computed as
 * (x − hi) − lo, so a channel whose mean is large against its spread (100 ± 0.05) keeps float32
 * precision. Per-channel scalars are computed here in
 * float64. clamp and clampBackward are the reference's selects lane by lane: bit-exact. Channels
 * (BatchNorm) or ranges of whole vectors (clamp) are split over the worker pool for large calls.
 * batchNorm and batchNormBackward take the optional statistics input ([2, C], batchNormStats(x),
 * which BatchNorm2d hands them in training) instead of their two statistics passes: forward then
 * makes one pass over x, backward two. Declines on anything but float32, x of rank < 2, empty x,
 * weights of another length than C and statistics of another size than [2, C].
 * @internal
 */
import type { ClampAttrs, Kernel, RawTensor } from '../primitives.ts';
import type { WasmRuntime } from './runtime.ts';
import { allF32, copyOut, outputF32, partRange, partsFor } from './util.ts';

/** N, C, S of x [N, C, ...], or null when the kernel declines it. */
function layout(x: RawTensor): [number, number, number] | null {
  if (x.shape.length < 2) return null;
  const n = x.shape[0]!;
  const c = x.shape[1]!;
  const size = x.data.length;
  if (size === 0) return null;
  return [n, c, size / (n * c)];
}

/** The arena blocks of one BatchNorm call. */
interface BnPlan {
  n: number; c: number; s: number; size: number;
  /** Float index of x in the arena; of the per-channel float32 shifts / means; of the [C][2] float64 sums (as float index). */
  xp: number; mp: number; sums: number;
}

/** Runs `fn` over channel ranges, split over the pool when the call is large (`work` ≈ float operations). */
function overChannels(rt: WasmRuntime, c: number, work: number, fn: (call: (name: 'bnSums' | 'bnGradSums' | 'bnApply' | 'bnBackApply' | 'bnGradSumsClamp' | 'bnApplyClamp' | 'bnBackApplyClamp', ...args: number[]) => void, c0: number, c1: number) => void): void {
  const parts = partsFor(rt.threads(), work, c);
  rt.parallel(parts, (part, call) => {
    const [c0, c1] = partRange(c, parts, part);
    if (c1 > c0) fn((name, ...args) => call(rt.fn[name], ...args), c0, c1);
  });
}

/**
 * Per channel: the mean as a float32 pair hi + lo (hi left in the arena at p.mp, where bnGradSums
 * reads it) and the biased variance (float64), as native/batchnorm.cc: a shifted sum about each
 * channel's first element gives hi, then Σ(x − hi) and Σ(x − hi)² give lo = Σ(x − hi)/M and the
 * variance Σ(x − hi)²/M − lo² (the second pass corrects for hi's rounding).
 */
function channelStats(rt: WasmRuntime, p: BnPlan, mem: Float32Array): { hi: Float32Array; lo: Float64Array; variance: Float64Array } {
  const { n, c, s, xp, mp, sums } = p;
  for (let ch = 0; ch < c; ch++) mem[mp + ch] = mem[xp + ch * s]!;
  const pass = () => overChannels(rt, c, UNITS_PER_ELEMENT * p.size, (call, c0, c1) => call('bnSums', xp * 4, n, c, s, c0, c1, mp * 4, sums * 4));
  pass();
  const count = n * s;
  const sum = new Float64Array(mem.buffer, mem.byteOffset + sums * 4, 2 * c);
  const hi = new Float32Array(c);
  for (let ch = 0; ch < c; ch++) hi[ch] = mem[mp + ch]! + sum[2 * ch]! / count;
  mem.set(hi, mp);
  pass();
  const lo = new Float64Array(c);
  const variance = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    const d = sum[2 * ch]! / count;
    lo[ch] = d;
    variance[ch] = sum[2 * ch + 1]! / count - d * d;
  }
  return { hi, lo, variance };
}

/** Whether the optional statistics input fits: absent, or [2, C] floats (batchNormStats's output). */
function statsFit(stats: RawTensor | undefined, c: number): boolean {
  return !stats || stats.data.length === 2 * c;
}

/**
 * The statistics handed in (`stats` = batchNormStats(x), [mean (C), variance (C)], as BatchNorm2d
 * passes them): hi the float32 means (also written to the arena at p.mp for bnGradSums), lo zero,
 * the variances as given; no pass over x.
 */
function givenStats(stats: RawTensor, p: BnPlan, mem: Float32Array): { hi: Float32Array; lo: Float64Array; variance: Float64Array } {
  const { c, mp } = p;
  const hi = Float32Array.from(stats.data.subarray(0, c));
  mem.set(hi, mp);
  return { hi, lo: new Float64Array(c), variance: Float64Array.from(stats.data.subarray(c, 2 * c)) };
}

/**
 * Writes the forward's per-channel parameters into the 8-float blocks at pp: the mean (hi, lo) at
 * slots 0 and 1, then the scale fl32(w/√(var + eps)) and the bias at slots `at` and `at` + 1 (2 for
 * batchNorm's bnApply; 5 for the clamped backward, which recomputes the forward's output) -- and
 * the clamp bounds at cl when there are any.
 */
function writeForward(mem: Float32Array, pp: number, at: number, hi: Float32Array, lo: Float64Array, variance: Float64Array,
  w: RawTensor, b: RawTensor, eps: number, clamp: readonly [number, number] | null | undefined, cl: number): void {
  for (let ch = 0; ch < hi.length; ch++) {
    mem[pp + 8 * ch] = hi[ch]!;
    mem[pp + 8 * ch + 1] = lo[ch]!;
    mem[pp + 8 * ch + at] = w.data[ch]! / Math.sqrt(variance[ch]! + eps);
    mem[pp + 8 * ch + at + 1] = b.data[ch]!;
  }
  if (clamp) {
    mem[cl] = clamp[0];
    mem[cl + 1] = clamp[1];
  }
}

/** Reserves x (copied in), the means and the sums; null when the memory does not fit. */
function plan(rt: WasmRuntime, x: RawTensor, extra: (floats: number) => void): BnPlan | null {
  const l = layout(x);
  if (!l) return null;
  const [n, c, s] = l;
  const size = x.data.length;
  const arena = rt.arena;
  arena.reset();
  const xp = arena.reserve(size);
  const mp = arena.reserve(c);
  const sums = arena.reserve(4 * c);
  extra(size);
  return { n, c, s, size, xp, mp, sums };
}

/**
 * (x, weight [C], bias [C]) -> (x − mean)·fl32(weight/√(var + eps)) + bias per channel; with
 * `clamp`, clamp's selects in the same pass (bnApplyClamp).
 */
export function batchNormKernel(rt: WasmRuntime): Kernel<'batchNorm'> {
  return (inputs, { eps, clamp }) => {
    const [x, w, b, stats] = inputs as [RawTensor, RawTensor, RawTensor, RawTensor | undefined];
    if ((inputs.length !== 3 && inputs.length !== 4) || !allF32(inputs)) return undefined;
    let yp = 0, pp = 0, cl = 0;
    const p = plan(rt, x, (size) => {
      yp = rt.arena.reserve(size);
      pp = rt.arena.reserve(8 * (x.shape[1] ?? 0));
      cl = rt.arena.reserve(2);
    });
    if (!p || w.data.length !== p.c || b.data.length !== p.c || !statsFit(stats, p.c) || !rt.arena.fits()) return undefined;
    const mem = rt.arena.view();
    mem.set(x.data, p.xp);
    const { hi, lo, variance } = stats ? givenStats(stats, p, mem) : channelStats(rt, p, mem);
    writeForward(mem, pp, 2, hi, lo, variance, w, b, eps, clamp, cl);
    const { n, c, s, xp } = p;
    overChannels(rt, c, UNITS_PER_ELEMENT * p.size, (call, c0, c1) => {
      if (clamp) call('bnApplyClamp', xp * 4, yp * 4, n, c, s, c0, c1, pp * 4, cl * 4);
      else call('bnApply', xp * 4, yp * 4, n, c, s, c0, c1, pp * 4);
    });
    return { data: copyOut(mem, yp, p.size), shape: [...x.shape], dtype: 'float32' };
  };
}

/**
 * (g, x, weight) -> flat [dx, dweight = Σ g·x̂, dbias = Σ g], statistics recomputed. With `clamp`
 * (inputs g, x, weight, stats, bias) g is first masked as clampBackward masks it on the clamped
 * forward's output, recomputed in both passes (bnGradSumsClamp, bnBackApplyClamp): no forward pass,
 * no clamp pass.
 */
export function batchNormBackwardKernel(rt: WasmRuntime): Kernel<'batchNormBackward'> {
  return (inputs, { eps, clamp }) => {
    const [g, x, w, stats, bias] = inputs as [RawTensor, RawTensor, RawTensor, RawTensor | undefined, RawTensor | undefined];
    if (clamp ? inputs.length !== 5 : inputs.length !== 3 && inputs.length !== 4) return undefined;
    if (!allF32(inputs) || g.data.length !== x.data.length) return undefined;
    let gp = 0, yp = 0, pp = 0, gsums = 0, cl = 0;
    const c = x.shape[1] ?? 0;
    const p = plan(rt, x, (size) => {
      gp = rt.arena.reserve(size);
      yp = rt.arena.reserve(size);
      pp = rt.arena.reserve(8 * c);
      gsums = rt.arena.reserve(4 * c);
      cl = rt.arena.reserve(2);
    });
    if (!p || w.data.length !== p.c || !statsFit(stats, p.c) || (clamp && bias!.data.length !== p.c) || !rt.arena.fits()) return undefined;
    const mem = rt.arena.view();
    mem.set(x.data, p.xp);
    mem.set(g.data, gp);
    const { n, s, xp, mp, size } = p;
    const { hi, lo, variance } = stats ? givenStats(stats, p, mem) : channelStats(rt, p, mem);
    // the mean at slots 0, 1 (both passes); with a clamp the forward's scale and bias at 5, 6
    if (clamp) writeForward(mem, pp, 5, hi, lo, variance, w, bias!, eps, clamp, cl);
    else {
      for (let ch = 0; ch < c; ch++) {
        mem[pp + 8 * ch] = hi[ch]!;
        mem[pp + 8 * ch + 1] = lo[ch]!;
      }
    }
    overChannels(rt, c, UNITS_PER_ELEMENT * size, (call, c0, c1) => {
      if (clamp) call('bnGradSumsClamp', gp * 4, xp * 4, n, c, s, c0, c1, mp * 4, gsums * 4, pp * 4, cl * 4);
      else call('bnGradSums', gp * 4, xp * 4, n, c, s, c0, c1, mp * 4, gsums * 4);
    });
    const gs = new Float64Array(mem.buffer, mem.byteOffset + gsums * 4, 2 * c);
    const out = outputF32(size + 2 * c);
    const count = n * s;
    for (let ch = 0; ch < c; ch++) {
      const rstd = 1 / Math.sqrt(variance[ch]! + eps);
      const sumG = gs[2 * ch]!;
      // Σ g·(x − mean) = Σ g·(x − hi) − lo·Σ g
      const sumGX = (gs[2 * ch + 1]! - lo[ch]! * sumG) * rstd;
      out[size + ch] = sumGX;
      out[size + c + ch] = sumG;
      // dx = k·g − k·Σg/M − (x − mean)·k·rstd·Σg·x̂/M
      const k = w.data[ch]! * rstd;
      mem[pp + 8 * ch + 2] = k;
      mem[pp + 8 * ch + 3] = (k * sumG) / count;
      mem[pp + 8 * ch + 4] = (k * rstd * sumGX) / count;
    }
    overChannels(rt, c, UNITS_PER_ELEMENT * size, (call, c0, c1) => {
      if (clamp) call('bnBackApplyClamp', gp * 4, xp * 4, yp * 4, n, c, s, c0, c1, pp * 4, cl * 4);
      else call('bnBackApply', gp * 4, xp * 4, yp * 4, n, c, s, c0, c1, pp * 4);
    });
    out.set(mem.subarray(yp, yp + size));
    return { data: out, shape: [size + 2 * c], dtype: 'float32' };
  };
}

/** (x) -> [2, C]: mean, then biased variance per channel. */
export function batchNormStatsKernel(rt: WasmRuntime): Kernel<'batchNormStats'> {
  return (inputs) => {
    const [x] = inputs as [RawTensor];
    if (inputs.length !== 1 || !allF32(inputs)) return undefined;
    const p = plan(rt, x, () => {});
    if (!p || !rt.arena.fits()) return undefined;
    const mem = rt.arena.view();
    mem.set(x.data, p.xp);
    const { hi, lo, variance } = channelStats(rt, p, mem);
    const out = new Float32Array(2 * p.c);
    for (let ch = 0; ch < p.c; ch++) out[ch] = hi[ch]! + lo[ch]!;
    out.set(variance, p.c);
    return { data: out, shape: [2, p.c], dtype: 'float32' };
  };
}

/**
 * Splitting these memory-bound calls: the copies in and out of wasm memory stay on the caller and
 * take most of a call (clamp at [64, 64, 14, 14]: about 0.1 ms of SIMD work in a 1.3 ms call), so
 * a pass counts one unit of ./util.ts's threshold per element (2^20: calls of 4 MB and more split;
 * none of MobileNet's at batch 64) -- on the loaded 2-core machine, splitting MobileNet-sized
 * calls made them slower (docs/runtime.md).
 */
const UNITS_PER_ELEMENT = 1;

/** clamp (back = false: (x) -> y) or clampBackward (back = true: (g, x) -> dx) with number bounds. */
function clampKernelOf(rt: WasmRuntime, back: boolean): (inputs: readonly RawTensor[], attrs: ClampAttrs) => RawTensor | undefined {
  return (inputs, attrs) => {
    const arity = back ? 2 : 1;
    if (inputs.length !== arity || !allF32(inputs)) return undefined;
    const x = inputs[arity - 1]!;
    const g = inputs[0]!;
    const size = x.data.length;
    if (size === 0 || (back && g.data.length !== size)) return undefined;
    const arena = rt.arena;
    arena.reset();
    const pp = arena.reserve(2);
    const xp = arena.reserve(size);
    const gp = back ? arena.reserve(size) : 0;
    const yp = arena.reserve(size);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    mem[pp] = attrs.min;
    mem[pp + 1] = attrs.max;
    mem.set(x.data, xp);
    if (back) mem.set(g.data, gp);
    const vectors = Math.ceil(size / 4);
    const parts = partsFor(rt.threads(), UNITS_PER_ELEMENT * size, vectors);
    const fn = rt.fn[back ? 'clampBackward' : 'clamp'];
    rt.parallel(parts, (part, call) => {
      const [v0, v1] = partRange(vectors, parts, part);
      const lo = 4 * v0, len = Math.min(size, 4 * v1) - lo;
      if (len <= 0) return;
      if (back) call(fn, (gp + lo) * 4, (xp + lo) * 4, (yp + lo) * 4, len, pp * 4);
      else call(fn, (xp + lo) * 4, (yp + lo) * 4, len, pp * 4);
    });
    return { data: copyOut(mem, yp, size), shape: [...(back ? g : x).shape], dtype: 'float32' };
  };
}

export function clampKernel(rt: WasmRuntime): Kernel<'clamp'> {
  return clampKernelOf(rt, false);
}

export function clampBackwardKernel(rt: WasmRuntime): Kernel<'clampBackward'> {
  return clampKernelOf(rt, true);
}
