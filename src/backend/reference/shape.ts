import type { Kernel } from '../primitives.ts';
import { stridesOf } from '../primitives.ts';
import { aroundAxis } from './reduce.ts';
import { alloc, broadcastStrides, offsetMap, raw } from './util.ts';

/** (x) -> the same buffer viewed with a new shape (kernels never write their inputs, so sharing is safe). */
export const reshapeKernel: Kernel<'reshape'> = ([x], { shape }) => raw(x!.data, shape, x!.dtype);

/** (x) -> x with dims permuted: out.shape[i] = x.shape[perm[i]]. */
export const transposeKernel: Kernel<'transpose'> = ([x], { perm }) => {
  const inStrides = stridesOf(x!.shape);
  const shape = perm.map((p) => x!.shape[p]!);
  const src = offsetMap(shape, perm.map((p) => inStrides[p]!));
  const out = alloc(x!.dtype, shape);
  for (let i = 0; i < out.length; i++) out[i] = x!.data[src[i]!]!;
  return raw(out, shape, x!.dtype);
};

/** (x) -> x repeated along broadcast dims to `shape`. */
export const broadcastToKernel: Kernel<'broadcastTo'> = ([x], { shape }) => {
  const src = offsetMap(shape, broadcastStrides(x!.shape, shape));
  const out = alloc(x!.dtype, shape);
  for (let i = 0; i < out.length; i++) out[i] = x!.data[src[i]!]!;
  return raw(out, shape, x!.dtype);
};

/** (x) -> x[starts[0]:ends[0], starts[1]:ends[1], ...]. */
export const sliceKernel: Kernel<'slice'> = ([x], { starts, ends }) => {
  const shape = starts.map((s, d) => ends[d]! - s);
  const inStrides = stridesOf(x!.shape);
  const base = starts.reduce((p, s, d) => p + s * inStrides[d]!, 0);
  const src = offsetMap(shape, inStrides);
  const out = alloc(x!.dtype, shape);
  for (let i = 0; i < out.length; i++) out[i] = x!.data[base + src[i]!]!;
  return raw(out, shape, x!.dtype);
};

/** (x) -> x surrounded by `value`: out.shape[d] = before + x.shape[d] + after. */
export const padKernel: Kernel<'pad'> = ([x], { pads, value }) => {
  const shape = x!.shape.map((n, d) => pads[d]![0] + n + pads[d]![1]);
  const outStrides = stridesOf(shape);
  const base = pads.reduce((p, [before], d) => p + before * outStrides[d]!, 0);
  const dst = offsetMap(x!.shape, outStrides);
  const out = alloc(x!.dtype, shape);
  if (value !== 0) out.fill(value);
  for (let i = 0; i < x!.data.length; i++) out[base + dst[i]!] = x!.data[i]!;
  return raw(out, shape, x!.dtype);
};

/** (...xs) -> xs joined along `axis`. */
export const concatKernel: Kernel<'concat'> = (xs, { axis }) => {
  const first = xs[0]!;
  const shape = [...first.shape];
  shape[axis] = xs.reduce((p, t) => p + t.shape[axis]!, 0);
  const out = alloc(first.dtype, shape);
  const [outer, total, inner] = aroundAxis(shape, axis);
  let offset = 0;
  for (const t of xs) {
    const len = t.shape[axis]!;
    const block = len * inner;
    for (let o = 0; o < outer; o++) {
      out.set(t.data.subarray(o * block, (o + 1) * block), o * total * inner + offset * inner);
    }
    offset += len;
  }
  return raw(out, shape, first.dtype);
};

/** (x, indices) -> x.shape[:axis] + indices.shape + x.shape[axis+1:]. */
export const gatherKernel: Kernel<'gather'> = ([x, idx], { axis }) => {
  const [outer, len, inner] = aroundAxis(x!.shape, axis);
  const shape = [...x!.shape.slice(0, axis), ...idx!.shape, ...x!.shape.slice(axis + 1)];
  const out = alloc(x!.dtype, shape);
  const m = idx!.data.length;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < m; j++) {
      const k = idx!.data[j]!;
      out.set(x!.data.subarray((o * len + k) * inner, (o * len + k + 1) * inner), (o * m + j) * inner);
    }
  }
  return raw(out, shape, x!.dtype);
};

/** (updates, indices) -> zeros(shape) with updates added at indices along `axis`. */
export const scatterAddKernel: Kernel<'scatterAdd'> = ([u, idx], { axis, shape }) => {
  const [outer, len, inner] = aroundAxis(shape, axis);
  const out = alloc(u!.dtype, shape);
  const m = idx!.data.length;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < m; j++) {
      const dst = (o * len + idx!.data[j]!) * inner;
      const src = (o * m + j) * inner;
      for (let i = 0; i < inner; i++) out[dst + i] += u!.data[src + i]!;
    }
  }
  return raw(out, shape, u!.dtype);
};
