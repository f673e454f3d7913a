/**
 * Reference kernels of batchNorm (training-mode batch statistics), its backward primitive and
 * batchNormStats, and of clamp / clampBackward: the specification the native kernels are tested
 * against. BatchNorm sums run in float64 whatever the dtype; results are rounded once, at the store.
 */
import type { ClampAttrs, Kernel, RawTensor } from '../primitives.ts';
import { alloc, raw } from './util.ts';

/** Batch N, channels C and the spatial size S of x [N, C, ...]. */
function layout(x: RawTensor): [number, number, number] {
  const n = x.shape[0] ?? 1;
  const c = x.shape[1] ?? 1;
  const s = n * c === 0 ? 0 : x.data.length / (n * c);
  return [n, c, s];
}

/** Mean and biased variance of channel c of x [N, C, S], in float64 (two passes). */
function channelStats(x: RawTensor['data'], n: number, c: number, s: number, ch: number): [number, number] {
  const count = n * s;
  let sum = 0;
  for (let i = 0; i < n; i++) for (let j = 0, base = (i * c + ch) * s; j < s; j++) sum += x[base + j]!;
  const mean = count > 0 ? sum / count : 0;
  let sq = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0, base = (i * c + ch) * s; j < s; j++) {
      const d = x[base + j]! - mean;
      sq += d * d;
    }
  }
  return [mean, count > 0 ? sq / count : 0];
}

/** Channel ch's mean and variance: from `stats` (batchNormStats(x), [2, C]) when given, else computed. */
function statsOf(x: RawTensor, stats: RawTensor | undefined, n: number, c: number, s: number, ch: number): [number, number] {
  return stats ? [stats.data[ch]!, stats.data[c + ch]!] : channelStats(x.data, n, c, s, ch);
}

/** The clamp bounds as x's dtype stores them, or null. */
function clampBounds(x: RawTensor, clamp: readonly [number, number] | null | undefined): [number, number] | null {
  return clamp ? bounds(x, { min: clamp[0], max: clamp[1] }) : null;
}

/**
 * The batchNorm outputs of channel ch (y rounded to x's dtype) passed to `each(index, y)`, with
 * the channel's statistics; shared by the forward and the clamped backward's mask.
 */
function channelOutputs(x: RawTensor, w: RawTensor, b: RawTensor, stats: RawTensor | undefined, eps: number, ch: number, each: (index: number, y: number) => void): void {
  const [n, c, s] = layout(x);
  const [mean, variance] = statsOf(x, stats, n, c, s, ch);
  const scale = w.data[ch]! / Math.sqrt(variance + eps);
  const round = x.data instanceof Float32Array ? Math.fround : (v: number) => v;
  for (let i = 0; i < n; i++) for (let j = 0, base = (i * c + ch) * s; j < s; j++) each(base + j, round((x.data[base + j]! - mean) * scale + b.data[ch]!));
}

/** x [N, C, ...], weight [C], bias [C][, stats [2, C]] -> [clamp]((x − mean)·weight/√(var + eps) + bias) per channel. */
export const batchNormKernel: Kernel<'batchNorm'> = ([x, w, b, stats], { eps, clamp }) => {
  const [, c] = layout(x!);
  const y = alloc(x!.dtype, x!.shape);
  const range = clampBounds(x!, clamp);
  for (let ch = 0; ch < c; ch++) {
    channelOutputs(x!, w!, b!, stats, eps, ch, (i, v) => {
      if (!range) {
        y[i] = v;
        return;
      }
      const low = range[0] > v ? range[0] : v;
      y[i] = low > range[1] ? range[1] : low;
    });
  }
  return raw(y, x!.shape, x!.dtype);
};

/**
 * g, x [N, C, ...], weight [C][, stats [2, C]] -> flat [dx (x.size), dweight (C), dbias (C)];
 * with `clamp`: g, x, weight, stats, bias, and g is first masked as clampBackward masks it.
 */
export const batchNormBackwardKernel: Kernel<'batchNormBackward'> = ([g0, x, w, stats, bias], { eps, clamp }) => {
  const [n, c, s] = layout(x!);
  const size = x!.data.length;
  const out = alloc(x!.dtype, [size + 2 * c]);
  const count = n * s;
  const range = clampBounds(x!, clamp);
  let g = g0!;
  if (range) {
    const masked = alloc(g.dtype, g.shape);
    for (let ch = 0; ch < c; ch++) {
      channelOutputs(x!, w!, bias!, stats, eps, ch, (i, v) => {
        const low = range[0] > v ? range[0] : v;
        masked[i] = range[0] > v || low > range[1] ? 0 : g0!.data[i]!;
      });
    }
    g = raw(masked, g.shape, g.dtype);
  }
  for (let ch = 0; ch < c; ch++) {
    const [mean, variance] = statsOf(x!, stats, n, c, s, ch);
    const rstd = 1 / Math.sqrt(variance + eps);
    let sumG = 0;
    let sumGX = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0, base = (i * c + ch) * s; j < s; j++) {
        const gi = g!.data[base + j]!;
        sumG += gi;
        sumGX += gi * (x!.data[base + j]! - mean) * rstd;
      }
    }
    const k = w!.data[ch]! * rstd;
    for (let i = 0; i < n; i++) {
      for (let j = 0, base = (i * c + ch) * s; j < s; j++) {
        const xhat = (x!.data[base + j]! - mean) * rstd;
        out[base + j] = k * (g!.data[base + j]! - sumG / count - (xhat * sumGX) / count);
      }
    }
    out[size + ch] = sumGX;
    out[size + c + ch] = sumG;
  }
  return raw(out, [size + 2 * c], x!.dtype);
};

/** x [N, C, ...] -> [2, C]: per-channel mean, then biased variance. */
export const batchNormStatsKernel: Kernel<'batchNormStats'> = ([x]) => {
  const [n, c, s] = layout(x!);
  const out = alloc(x!.dtype, [2, c]);
  for (let ch = 0; ch < c; ch++) {
    const [mean, variance] = channelStats(x!.data, n, c, s, ch);
    out[ch] = mean;
    out[c + ch] = variance;
  }
  return raw(out, [2, c], x!.dtype);
};

/**
 * g [2, C], x [N, C, ...], stats [2, C] -> dx like x: (x − mean_c)·(2·g[1, c]/M) + g[0, c]/M, each
 * value computed in float64 (the per-channel factors too) and rounded once.
 */
export const batchNormStatsBackwardKernel: Kernel<'batchNormStatsBackward'> = ([g, x, stats]) => {
  const [n, c, s] = layout(x!);
  const count = n * s;
  const out = alloc(x!.dtype, x!.shape);
  for (let ch = 0; ch < c; ch++) {
    const mean = stats!.data[ch]!;
    const a = (2 * g!.data[c + ch]!) / count;
    const b = g!.data[ch]! / count;
    for (let i = 0; i < n; i++) {
      for (let j = 0, base = (i * c + ch) * s; j < s; j++) out[base + j] = (x!.data[base + j]! - mean) * a + b;
    }
  }
  return raw(out, x!.shape, x!.dtype);
};

/** The bounds as the array's type stores them (float32 rounding, as a filled bound tensor would). */
function bounds(x: RawTensor, { min, max }: ClampAttrs): [number, number] {
  return x.dtype === 'float32' ? [Math.fround(min), Math.fround(max)] : [min, max];
}

/** x -> clamp(x, min, max) in ops.clamp's order: low = min > x ? min : x, then low > max ? max : low. */
export const clampKernel: Kernel<'clamp'> = ([x], attrs) => {
  const [lo, hi] = bounds(x!, attrs);
  const y = alloc(x!.dtype, x!.shape);
  for (let i = 0; i < y.length; i++) {
    const v = x!.data[i]!;
    const low = lo > v ? lo : v;
    y[i] = low > hi ? hi : low;
  }
  return raw(y, x!.shape, x!.dtype);
};

/** (g, x) -> g where neither bound clamped x, else 0. */
export const clampBackwardKernel: Kernel<'clampBackward'> = ([g, x], attrs) => {
  const [lo, hi] = bounds(x!, attrs);
  const y = alloc(g!.dtype, g!.shape);
  for (let i = 0; i < y.length; i++) {
    const v = x!.data[i]!;
    const low = lo > v ? lo : v;
    y[i] = lo > v || low > hi ? 0 : g!.data[i]!;
  }
  return raw(y, g!.shape, g!.dtype);
};
