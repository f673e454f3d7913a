import type { Kernel, RawTensor } from '../primitives.ts';
import { stridesOf } from '../primitives.ts';
import { alloc, offsetMap, raw } from './util.ts';

function reducedShape(shape: readonly number[], axes: readonly number[], keepDims: boolean): number[] {
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (!axes.includes(i)) out.push(d);
    else if (keepDims) out.push(1);
  });
  return out;
}

/** For each input element, the flat index of the output element it reduces into. */
function reductionTargets(shape: readonly number[], axes: readonly number[]): Int32Array {
  const keep = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const keepStrides = stridesOf(keep);
  return offsetMap(shape, shape.map((_, i) => (axes.includes(i) ? 0 : keepStrides[i]!)));
}

/** (x) -> sum over `axes`. Accumulates in float64. */
export const sumKernel: Kernel<'sum'> = ([x], { axes, keepDims }) => {
  const shape = reducedShape(x!.shape, axes, keepDims);
  const acc = new Float64Array(shape.reduce((p, d) => p * d, 1));
  const target = reductionTargets(x!.shape, axes);
  const src = x!.data;
  for (let i = 0; i < src.length; i++) acc[target[i]!] += src[i]!;
  const out = alloc(x!.dtype, shape);
  out.set(acc);
  return raw(out, shape, x!.dtype);
};

/** (x) -> max over `axes` (NaN propagates). */
export const maxKernel: Kernel<'max'> = ([x], { axes, keepDims }) => {
  const shape = reducedShape(x!.shape, axes, keepDims);
  const out = alloc(x!.dtype, shape).fill(-Infinity);
  const target = reductionTargets(x!.shape, axes);
  const src = x!.data;
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    const t = target[i]!;
    if (v > out[t]! || Number.isNaN(v)) out[t] = v;
  }
  return raw(out, shape, x!.dtype);
};

/** Splits a shape around `axis` into (outer, length, inner) for axis-wise loops. */
export function aroundAxis(shape: readonly number[], axis: number): [number, number, number] {
  const outer = shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  return [outer, shape[axis]!, inner];
}

/** (x) -> int32 index of the first maximum along `axis`. */
export const argmaxKernel: Kernel<'argmax'> = ([x], { axis, keepDims }) => {
  const [outer, len, inner] = aroundAxis(x!.shape, axis);
  const shape = reducedShape(x!.shape, [axis], keepDims);
  const out = new Int32Array(outer * inner);
  const src = x!.data;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * len * inner + i;
      let best = 0;
      let bestV = src[base]!;
      for (let k = 1; k < len; k++) {
        const v = src[base + k * inner]!;
        if (v > bestV) {
          bestV = v;
          best = k;
        }
      }
      out[o * inner + i] = best;
    }
  }
  return raw(out, shape, 'int32');
};

function softmaxLike(log: boolean): (inputs: readonly RawTensor[], attrs: { readonly axis: number }) => RawTensor {
  return ([x], { axis }) => {
    const [outer, len, inner] = aroundAxis(x!.shape, axis);
    const src = x!.data;
    const out = alloc(x!.dtype, x!.shape);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * len * inner + i;
        let m = -Infinity;
        for (let k = 0; k < len; k++) m = Math.max(m, src[base + k * inner]!);
        let s = 0;
        for (let k = 0; k < len; k++) s += Math.exp(src[base + k * inner]! - m);
        if (log) {
          const lse = m + Math.log(s);
          for (let k = 0; k < len; k++) out[base + k * inner] = src[base + k * inner]! - lse;
        } else {
          for (let k = 0; k < len; k++) out[base + k * inner] = Math.exp(src[base + k * inner]! - m) / s;
        }
      }
    }
    return raw(out, x!.shape, x!.dtype);
  };
}

/** (x) -> exp(x - max) / sum exp(x - max) along `axis`. */
export const softmaxKernel = softmaxLike(false);
/** (x) -> x - logsumexp(x) along `axis`. */
export const logSoftmaxKernel = softmaxLike(true);
