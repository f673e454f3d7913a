import type { Kernel, RawTensor } from '../primitives.ts';
import { Rng } from '../../tensor/random.ts';
import { alloc, raw } from './util.ts';

/** quantizeGradient forward: a copy of x (its gradient is where the quantization happens). */
export const quantizeGradientKernel: Kernel<'quantizeGradient'> = ([x]) => {
  if (x!.dtype === 'int32') throw new Error('quantizeGradient: expects a float tensor, got int32');
  return raw(x!.data.slice(), x!.shape, x!.dtype);
};

/**
 * stochasticQuantize (see StochasticQuantizeAttrs in ../primitives.ts): x [N, ...] or any shape for
 * 'tensor'; groups are the whole tensor or the N rows of axis 0 for 'sample'. Computed in float64,
 * stored in x's dtype; one uniform draw per element, in row-major order: the draws of
 * `new Rng(seed).uniform()`, generated here by the same xoshiro128** steps on int32 locals (the
 * Rng method stores its state as uint32 object fields, several times slower per draw).
 */
export const stochasticQuantizeKernel: Kernel<'stochasticQuantize'> = ([x], { bits, granularity, grid, seed }) => {
  const input = x as RawTensor;
  if (input.dtype === 'int32') throw new Error('stochasticQuantize: expects a float tensor, got int32');
  const src = input.data;
  const out = alloc(input.dtype, input.shape);
  const groups = granularity === 'sample' && input.shape.length > 0 ? input.shape[0]! : 1;
  const width = groups === 0 ? 0 : src.length / groups;
  const dorefa = grid === 'dorefa';
  // dorefa: t = n·(x/(2m) + 1/2) = (x/s + n)/2, y = (2q − n)·s; symmetric: t = x/s, y = q·s; s = m/n.
  const n = dorefa ? 2 ** bits - 1 : 2 ** (bits - 1) - 1;
  const qmin = dorefa ? 0 : -n;
  const offset = dorefa ? n : 0;
  const half = dorefa ? 0.5 : 1;
  const levelScale = dorefa ? 2 : 1;
  const [w0, w1, w2, w3] = new Rng(seed).getState().words;
  let s0 = w0 | 0;
  let s1 = w1 | 0;
  let s2 = w2 | 0;
  let s3 = w3 | 0;
  for (let group = 0; group < groups; group++) {
    const start = group * width;
    const end = start + width;
    let max = 0;
    let finite = true;
    for (let i = start; i < end; i++) {
      const a = Math.abs(src[i]!);
      if (a > max) max = a;
      else if (!(a <= max)) finite = false;  // NaN
    }
    const invalid = !finite || max === Number.POSITIVE_INFINITY;
    const skip = invalid || max === 0;
    if (invalid) out.fill(Number.NaN, start, end);
    const scale = max / n;
    const inverse = n / max;
    for (let i = start; i < end; i++) {
      // xoshiro128** (Rng.nextUint32): the draws are taken even for skipped groups, so later groups
      // get the same ones whatever this group holds.
      const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = rotl(s3, 11);
      if (skip) continue;
      let q = Math.floor((src[i]! * inverse + offset) * half + r / 4294967296);
      if (q > n) q = n;
      else if (q < qmin) q = qmin;
      out[i] = (levelScale * q - offset) * scale;
    }
  }
  return raw(out, input.shape, input.dtype);
};

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
