import type { Kernel, PrimitiveAttrs, RawTensor } from '../primitives.ts';
import { broadcastShapes, scaleInPlace, sizeOf } from '../primitives.ts';
import { roundHalfEven } from './elementwise.ts';
import { alloc, broadcastStrides, offsetMap, raw } from './util.ts';

/** (x, scale, zeroPoint) -> (clamp(round(x/s) + z, qmin, qmax) − z)·s; s, z broadcast against x. */
export const fakeQuantizeKernel: Kernel<'fakeQuantize'> = ([x, s, z], { qmin, qmax }) => {
  const shape = broadcastShapes(broadcastShapes(x!.shape, s!.shape), z!.shape);
  const out = alloc(x!.dtype, shape);
  const ix = offsetMap(shape, broadcastStrides(x!.shape, shape));
  const is = offsetMap(shape, broadcastStrides(s!.shape, shape));
  const iz = offsetMap(shape, broadcastStrides(z!.shape, shape));
  for (let i = 0; i < out.length; i++) {
    const scale = s!.data[is[i]!]!;
    const zp = z!.data[iz[i]!]!;
    const q = Math.min(qmax, Math.max(qmin, roundHalfEven(x!.data[ix[i]!]! / scale) + zp));
    out[i] = (q - zp) * scale;
  }
  return raw(out, shape, x!.dtype);
};

/**
 * (g, x, scale, zeroPoint) -> one part of fakeQuantize's gradient, with
 * u = x/s, v = u + z, r = round(u) + z, q = clamp(r), inside = (q == r):
 * 'x' = g·inside (g for 'ste'), 'scale' = g·(inside ? r − v : q − z), 'zeroPoint' = g·(inside ? 0 : −s),
 * per element of the broadcast shape; with `reduce`, those (dtype-rounded) terms summed in float64
 * to the shape of the part's operand. The scale part is then multiplied by `scaleGradFactor`
 * (dtype-rounded, as a `mul` would). 'xAndScale' (with `reduce`): the reduced 'x' and 'scale'
 * parts, concatenated flat.
 */
export const fakeQuantizeGradKernel: Kernel<'fakeQuantizeGrad'> = (inputs, attrs) => {
  const { part, reduce } = attrs;
  if (part !== 'xAndScale') return fakeQuantizeGradPart(inputs, { ...attrs, part });
  if (!reduce) throw new Error("fakeQuantizeGrad: part 'xAndScale' needs reduce: true");
  const gx = fakeQuantizeGradPart(inputs, { ...attrs, part: 'x' });
  const gs = fakeQuantizeGradPart(inputs, { ...attrs, part: 'scale' });
  const out = alloc(gx.dtype, [gx.data.length + gs.data.length]);
  out.set(gx.data);
  out.set(gs.data, gx.data.length);
  return raw(out, [out.length], gx.dtype);
};

function fakeQuantizeGradPart(
  [g, x, s, z]: readonly RawTensor[],
  { qmin, qmax, gradient, part, reduce, scaleGradFactor = 1 }: PrimitiveAttrs['fakeQuantizeGrad'] & { part: 'x' | 'scale' | 'zeroPoint' },
): RawTensor {
  const shape = broadcastShapes(broadcastShapes(broadcastShapes(x!.shape, s!.shape), z!.shape), g!.shape);
  const out = alloc(g!.dtype, shape);
  const ig = offsetMap(shape, broadcastStrides(g!.shape, shape));
  const ix = offsetMap(shape, broadcastStrides(x!.shape, shape));
  const is = offsetMap(shape, broadcastStrides(s!.shape, shape));
  const iz = offsetMap(shape, broadcastStrides(z!.shape, shape));
  for (let i = 0; i < out.length; i++) {
    const gv = g!.data[ig[i]!]!;
    const scale = s!.data[is[i]!]!;
    const zp = z!.data[iz[i]!]!;
    const u = x!.data[ix[i]!]! / scale;
    const r = roundHalfEven(u) + zp;
    const q = Math.min(qmax, Math.max(qmin, r));
    const inside = q === r;
    if (part === 'x') out[i] = gradient === 'ste' || inside ? gv : 0;
    else if (part === 'scale') out[i] = gv * (inside ? r - (u + zp) : q - zp);
    else out[i] = inside ? 0 : -gv * scale;
  }
  let result = out;
  let resultShape: readonly number[] = shape;
  if (reduce) {
    const target = part === 'x' ? x! : part === 'scale' ? s! : z!;
    const it = part === 'x' ? ix : part === 'scale' ? is : iz;
    const sums = new Float64Array(sizeOf(target.shape));
    for (let i = 0; i < out.length; i++) sums[it[i]!] += out[i]!;
    result = alloc(g!.dtype, target.shape);
    result.set(sums);
    resultShape = target.shape;
  }
  if (part === 'scale' && scaleGradFactor !== 1) scaleInPlace(result, scaleGradFactor);
  return raw(result, resultShape, g!.dtype);
}

/** (x) -> roundHalfEven(x). */
export const roundSteKernel: Kernel<'roundSte'> = ([x]) => {
  const out = alloc(x!.dtype, x!.shape);
  for (let i = 0; i < out.length; i++) out[i] = roundHalfEven(x!.data[i]!);
  return raw(out, x!.shape, x!.dtype);
};

/** (x) -> x (a copy; only the gradient differs). */
export const scaleGradKernel: Kernel<'scaleGrad'> = ([x]) => raw(x!.data.slice(), x!.shape, x!.dtype);

/** (x) -> x >= 0 ? +1 : −1. */
export const signSteKernel: Kernel<'signSte'> = ([x]) => {
  const out = alloc(x!.dtype, x!.shape);
  for (let i = 0; i < out.length; i++) out[i] = x!.data[i]! >= 0 ? 1 : -1;
  return raw(out, x!.shape, x!.dtype);
};
