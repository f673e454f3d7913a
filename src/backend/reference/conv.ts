import type { Conv2dAttrs, Kernel, TypedArray } from '../primitives.ts';
import { gemm } from './matmul.ts';
import { alloc, raw } from './util.ts';

/** @internal Output size of a convolution or pooling window along one dim. */
export function outSize(n: number, k: number, stride: number, pad: number, dilation = 1): number {
  return Math.floor((n + 2 * pad - dilation * (k - 1) - 1) / stride) + 1;
}

interface Geometry {
  n: number; c: number; h: number; w: number;
  o: number; kh: number; kw: number;
  oh: number; ow: number;
  g: number; cg: number; og: number;
}

function geometry(xShape: readonly number[], wShape: readonly number[], a: Conv2dAttrs): Geometry {
  const [n, c, h, w] = xShape as [number, number, number, number];
  const [o, , kh, kw] = wShape as [number, number, number, number];
  const oh = outSize(h, kh, a.stride[0], a.padding[0], a.dilation[0]);
  const ow = outSize(w, kw, a.stride[1], a.padding[1], a.dilation[1]);
  return { n, c, h, w, o, kh, kw, oh, ow, g: a.groups, cg: c / a.groups, og: o / a.groups };
}

/**
 * col is (cg·kh·kw, oh·ow): column (oy, ox) holds the receptive field of output (oy, ox) for the
 * cg channels of one group of one image starting at `xOff`; zero outside the image.
 * With `adjoint`, it adds col back into x instead (col2im).
 */
function im2col(x: TypedArray, xOff: number, col: TypedArray, geo: Geometry, a: Conv2dAttrs, adjoint: boolean): void {
  const { h, w, kh, kw, oh, ow, cg } = geo;
  const [sh, sw] = a.stride;
  const [ph, pw] = a.padding;
  const [dh, dw] = a.dilation;
  let row = 0;
  for (let ci = 0; ci < cg; ci++) {
    for (let ky = 0; ky < kh; ky++) {
      for (let kx = 0; kx < kw; kx++, row++) {
        const colRow = row * oh * ow;
        for (let oy = 0; oy < oh; oy++) {
          const iy = oy * sh - ph + ky * dh;
          const colBase = colRow + oy * ow;
          if (iy < 0 || iy >= h) {
            if (!adjoint) col.fill(0, colBase, colBase + ow);
            continue;
          }
          const xRow = xOff + (ci * h + iy) * w;
          for (let ox = 0; ox < ow; ox++) {
            const ix = ox * sw - pw + kx * dw;
            const inside = ix >= 0 && ix < w;
            if (adjoint) {
              if (inside) x[xRow + ix] += col[colBase + ox]!;
            } else {
              col[colBase + ox] = inside ? x[xRow + ix]! : 0;
            }
          }
        }
      }
    }
  }
}

/** x is (N,C,H,W), w is (O,C/g,KH,KW) -> y (N,O,OH,OW); per image and group y_g = W_g · im2col(x_g). */
export const conv2dKernel: Kernel<'conv2d'> = ([x, wt], attrs) => {
  const geo = geometry(x!.shape, wt!.shape, attrs);
  const { n, c, h, w, o, kh, kw, oh, ow, g, cg, og } = geo;
  const kk = cg * kh * kw;
  const col = alloc(x!.dtype, [kk, oh * ow]);
  const y = alloc(x!.dtype, [n, o, oh, ow]);
  for (let b = 0; b < n; b++) {
    for (let gi = 0; gi < g; gi++) {
      im2col(x!.data, (b * c + gi * cg) * h * w, col, geo, attrs, false);
      gemm(false, false, og, oh * ow, kk, wt!.data, gi * og * kk, col, 0, y, (b * o + gi * og) * oh * ow);
    }
  }
  return raw(y, [n, o, oh, ow], x!.dtype);
};

/** dy is (N,O,OH,OW), w is (O,C/g,KH,KW) -> dx (inputShape); dx_g = col2im(W_gᵀ · dy_g). */
export const conv2dBackwardInputKernel: Kernel<'conv2dBackwardInput'> = ([dy, wt], attrs) => {
  const geo = geometry(attrs.inputShape, wt!.shape, attrs);
  const { n, c, h, w, o, kh, kw, oh, ow, g, cg, og } = geo;
  const kk = cg * kh * kw;
  const col = alloc(dy!.dtype, [kk, oh * ow]);
  const dx = alloc(dy!.dtype, attrs.inputShape);
  for (let b = 0; b < n; b++) {
    for (let gi = 0; gi < g; gi++) {
      gemm(true, false, kk, oh * ow, og, wt!.data, gi * og * kk, dy!.data, (b * o + gi * og) * oh * ow, col, 0);
      im2col(dx, (b * c + gi * cg) * h * w, col, geo, attrs, true);
    }
  }
  return raw(dx, attrs.inputShape, dy!.dtype);
};

/** x is (N,C,H,W), dy is (N,O,OH,OW) -> dw (weightShape); dW_g = Σ_images dy_g · im2col(x_g)ᵀ. */
export const conv2dBackwardWeightKernel: Kernel<'conv2dBackwardWeight'> = ([x, dy], attrs) => {
  const geo = geometry(x!.shape, attrs.weightShape, attrs);
  const { n, c, h, w, o, kh, kw, oh, ow, g, cg, og } = geo;
  const kk = cg * kh * kw;
  const col = alloc(x!.dtype, [kk, oh * ow]);
  const dw = alloc(x!.dtype, attrs.weightShape);
  for (let b = 0; b < n; b++) {
    for (let gi = 0; gi < g; gi++) {
      im2col(x!.data, (b * c + gi * cg) * h * w, col, geo, attrs, false);
      gemm(false, true, og, kk, oh * ow, dy!.data, (b * o + gi * og) * oh * ow, col, 0, dw, gi * og * kk, true);
    }
  }
  return raw(dw, attrs.weightShape, x!.dtype);
};
