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
 * stored in x's dtype; one uniform draw per element, in row-major order, from Rng(seed).
 */
export const stochasticQuantizeKernel: Kernel<'stochasticQuantize'> = ([x], { bits, granularity, grid, seed }) => {
  const input = x as RawTensor;
  if (input.dtype === 'int32') throw new Error('stochasticQuantize: expects a float tensor, got int32');
  const src = input.data;
  const out = alloc(input.dtype, input.shape);
  const groups = granularity === 'sample' && input.shape.length > 0 ? input.shape[0]! : 1;
  const width = groups === 0 ? 0 : src.length / groups;
  const dorefa = grid === 'dorefa';
  const n = dorefa ? 2 ** bits - 1 : 2 ** (bits - 1) - 1;
  const qmin = dorefa ? 0 : -n;
  const rng = new Rng(seed);
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
    if (!finite || max === Number.POSITIVE_INFINITY) {
      out.fill(Number.NaN, start, end);
      for (let i = start; i < end; i++) rng.uniform();  // later groups draw what they would otherwise
      continue;
    }
    if (max === 0) {
      for (let i = start; i < end; i++) rng.uniform();
      continue;
    }
    // dorefa: t = n·(x/(2m) + 1/2) = (x/s + n)/2, y = (2q − n)·s; symmetric: t = x/s, y = q·s; s = m/n.
    const scale = max / n;
    const inverse = n / max;
    for (let i = start; i < end; i++) {
      const ratio = src[i]! * inverse;
      const t = dorefa ? (ratio + n) / 2 : ratio;
      let q = Math.floor(t + rng.uniform());
      if (q > n) q = n;
      else if (q < qmin) q = qmin;
      out[i] = (dorefa ? 2 * q - n : q) * scale;
    }
  }
  return raw(out, input.shape, input.dtype);
};
