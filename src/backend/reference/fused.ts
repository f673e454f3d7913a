import type { Kernel } from '../primitives.ts';
import { conv2dKernel } from './conv.ts';
import { maxPool2dKernel } from './pool.ts';

/**
 * x (N,C,H,W), w (O,C/g,KH,KW), bias (O)[, scale (O)] -> maxPool(min(relu(conv2d(x, w)·scale + bias),
 * clampMax)), stage by stage exactly as the unfused ops compute it: the convolution, × scale[o]
 * rounded to the output's precision (when given), + bias[o] on every pixel of channel o, max(v, 0) when `relu`,
 * min(v, clampMax) when set (NaN stays NaN in both), then the max pooling kernel when `pool` is set.
 */
export const conv2dFusedKernel: Kernel<'conv2dFused'> = ([x, w, bias, scale], attrs) => {
  const { stride, padding, dilation, groups } = attrs;
  const y = conv2dKernel([x!, w!], { stride, padding, dilation, groups })!;
  const [n, o, oh, ow] = y.shape as [number, number, number, number];
  const data = y.data;
  const plane = oh * ow;
  const hi = attrs.clampMax ?? Infinity;
  // The product is rounded to the output's precision before the bias is added, as mul then add round it.
  const round = data instanceof Float32Array ? Math.fround : (v: number) => v;
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < o; c++) {
      const bc = bias!.data[c]!;
      const sc = scale ? scale.data[c]! : 1;
      const base = (b * o + c) * plane;
      for (let i = base; i < base + plane; i++) {
        const v = (scale ? round(data[i]! * sc) : data[i]!) + bc;
        const a = attrs.relu && v <= 0 ? 0 : v;
        data[i] = a > hi ? hi : a;
      }
    }
  }
  return attrs.pool ? maxPool2dKernel([y], attrs.pool) : y;
};
