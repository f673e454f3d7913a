/**
 * The small ops of a training step on the wasm backend, as float32-only TypeScript loops: sum to a
 * bias gradient, max (a whole-tensor maximum), bias add, ReLU and its backward, tanh / exp / log /
 * sigmoid. Bit-exact with the reference kernels.
 * @internal
 */
import type { Kernel, RawTensor } from '../primitives.ts';
import { sizeOf } from '../primitives.ts';
import { allF32, f32 } from './util.ts';

/**
 * sum over `axes` when they make the input (R1, K, R2) -- reduced, kept, reduced dims, each group
 * contiguous (a bias gradient: [N, C, H, W] over [0, 2, 3], [N, F] over [0]). A TypeScript loop
 * without the reference's index map: each output accumulates in float64 in input order, as the
 * reference does, so the result is the reference's bit for bit. Other axis sets decline.
 */
export const sumKernel: Kernel<'sum'> = (inputs, { axes, keepDims }) => {
  const [x] = inputs as [RawTensor];
  if (!allF32(inputs)) return undefined;
  const groups = reductionGroups(x.shape, axes, keepDims);
  if (!groups) return undefined;
  const { r1, k, r2, shape } = groups;
  const acc = new Float64Array(k);
  const src = x.data;
  if (r2 === 1) {
    for (let a = 0; a < r1; a++) {
      const base = a * k;
      for (let j = 0; j < k; j++) acc[j] += src[base + j]!;
    }
  } else {
    // four outputs at a time: four independent addition chains, each in input order
    for (let a = 0; a < r1; a++) {
      let j = 0;
      for (; j + 4 <= k; j += 4) {
        let s0 = acc[j]!, s1 = acc[j + 1]!, s2 = acc[j + 2]!, s3 = acc[j + 3]!;
        const b0 = (a * k + j) * r2;
        for (let b = 0; b < r2; b++) {
          s0 += src[b0 + b]!;
          s1 += src[b0 + r2 + b]!;
          s2 += src[b0 + 2 * r2 + b]!;
          s3 += src[b0 + 3 * r2 + b]!;
        }
        acc[j] = s0;
        acc[j + 1] = s1;
        acc[j + 2] = s2;
        acc[j + 3] = s3;
      }
      for (; j < k; j++) {
        let s = acc[j]!;
        const base = (a * k + j) * r2;
        for (let b = 0; b < r2; b++) s += src[base + b]!;
        acc[j] = s;
      }
    }
  }
  const y = f32(shape);
  y.data.set(acc);
  return y;
};

/** (R1, K, R2) of a reduction whose axes make the input (reduced, kept, reduced) dims, each group contiguous, and the output shape; null otherwise. */
function reductionGroups(xs: readonly number[], axes: readonly number[], keepDims: boolean): { r1: number; k: number; r2: number; shape: number[] } | null {
  const rank = xs.length;
  const reduced = (d: number) => axes.includes(d);
  let first = 0;
  while (first < rank && reduced(first)) first++;
  let last = first;
  while (last < rank && !reduced(last)) last++;
  for (let d = last; d < rank; d++) if (!reduced(d)) return null;
  return {
    r1: sizeOf(xs.slice(0, first)), k: sizeOf(xs.slice(first, last)), r2: sizeOf(xs.slice(last)),
    shape: xs.flatMap((d, i) => (reduced(i) ? (keepDims ? [1] : []) : [d])),
  };
}

/**
 * max over `axes` for the same axis sets as sum (a whole-tensor maximum: DoReFa's max |tanh w|):
 * the reference's rule element by element in input order (`v > m || isNaN(v)` replaces m, from
 * −Infinity), so the same value, the sign of a zero and NaN included.
 */
export const maxKernel: Kernel<'max'> = (inputs, { axes, keepDims }) => {
  const [x] = inputs as [RawTensor];
  if (!allF32(inputs)) return undefined;
  const groups = reductionGroups(x.shape, axes, keepDims);
  if (!groups) return undefined;
  const { r1, k, r2, shape } = groups;
  const y = f32(shape);
  const out = y.data;
  out.fill(-Infinity);
  const src = x.data;
  for (let a = 0; a < r1; a++) {
    for (let j = 0; j < k; j++) {
      let m = out[j]!;
      const base = (a * k + j) * r2;
      for (let b = 0; b < r2; b++) {
        const v = src[base + b]!;
        if (v > m || v !== v) m = v;
      }
      out[j] = m;
    }
  }
  return y;
};

/*
 * The small elementwise ops of a training step (a Linear layer's bias add, ReLU and its backward)
 * as float32-only loops: the reference kernels compute the same JS expressions per element, but
 * through one shared, polymorphic loop per op. Results equal the reference's bit for bit (each
 * value is the same double expression rounded to float32 once).
 */

/**
 * tanh, exp, log and sigmoid: the reference's JS expressions (Math.tanh, Math.exp, Math.log, its
 * two-branch sigmoid) in one loop per op, so the same values bit for bit; the reference runs them
 * through one shared loop with a polymorphic call per element (DoReFa's tanh of every weight).
 */
function mathKernel(loop: (src: Float32Array, out: Float32Array) => void): Kernel {
  return (inputs) => {
    const [x] = inputs as [RawTensor];
    if (!allF32(inputs)) return undefined;
    const y = f32(x.shape);
    loop(x.data as Float32Array, y.data);
    return y;
  };
}

export const tanhKernel = mathKernel((src, out) => {
  for (let i = 0; i < src.length; i++) out[i] = Math.tanh(src[i]!);
});
export const expKernel = mathKernel((src, out) => {
  for (let i = 0; i < src.length; i++) out[i] = Math.exp(src[i]!);
});
export const logKernel = mathKernel((src, out) => {
  for (let i = 0; i < src.length; i++) out[i] = Math.log(src[i]!);
});
export const sigmoidKernel = mathKernel((src, out) => {
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    out[i] = v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v));
  }
});

/** (x) -> x <= 0 ? 0 : x (NaN stays). */
export const reluKernel: Kernel<'relu'> = (inputs) => {
  const [x] = inputs as [RawTensor];
  if (!allF32(inputs)) return undefined;
  const src = x.data as Float32Array;
  const y = f32(x.shape);
  const out = y.data;
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    out[i] = v <= 0 ? 0 : v;
  }
  return y;
};

/** (g, y) -> y <= 0 ? 0 : g, same shapes only. */
export const reluBackwardKernel: Kernel<'reluBackward'> = (inputs) => {
  const [g, y] = inputs as [RawTensor, RawTensor];
  if (!allF32(inputs) || g.shape.length !== y.shape.length || g.shape.some((d, i) => d !== y.shape[i])) return undefined;
  const gd = g.data as Float32Array;
  const yd = y.data as Float32Array;
  const r = f32(g.shape);
  const out = r.data;
  for (let i = 0; i < gd.length; i++) out[i] = yd[i]! <= 0 ? 0 : gd[i]!;
  return r;
};

/** (a, b) -> a + b when the shapes are equal or b is a row [F] (or [1, …, F]) added to every row of a. */
export const addKernel: Kernel<'add'> = (inputs) => {
  const [a, b] = inputs as [RawTensor, RawTensor];
  if (!allF32(inputs) || a.shape.length === 0) return undefined;
  const ad = a.data as Float32Array;
  const bd = b.data as Float32Array;
  const same = a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
  const cols = a.shape[a.shape.length - 1]!;
  const row = !same && b.shape.length <= a.shape.length && b.shape[b.shape.length - 1] === cols && sizeOf(b.shape) === cols;
  if (!same && !row) return undefined;
  const y = f32(a.shape);
  const out = y.data;
  if (same) {
    for (let i = 0; i < ad.length; i++) out[i] = ad[i]! + bd[i]!;
  } else {
    for (let base = 0; base < ad.length; base += cols) {
      for (let j = 0; j < cols; j++) out[base + j] = ad[base + j]! + bd[j]!;
    }
  }
  return y;
};
