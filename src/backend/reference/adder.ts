/**
 * AdderNet's convolution (Chen et al., CVPR 2020) and its estimator gradient: the reference
 * kernels of `adderConv2d` and `adderConv2dGrad` (see backend/primitives.ts for the formulas).
 * Layouts as conv2d: x [N, C, H, W], w [O, C/groups, kh, kw] (OIHW), y [N, O, OH, OW].
 */
import type { Conv2dAttrs, Kernel, TypedArray } from '../primitives.ts';
import { outSize } from './conv.ts';
import { alloc, raw } from './util.ts';

interface AdderGeometry {
  n: number; c: number; h: number; w: number;
  o: number; kh: number; kw: number; oh: number; ow: number;
  groups: number; cg: number; og: number;
  /** Receptive-field length cg·kh·kw. */
  k: number;
  /** Output positions oh·ow. */
  l: number;
}

function adderGeometry(op: string, xShape: readonly number[], wShape: readonly number[], a: Conv2dAttrs): AdderGeometry {
  if (xShape.length !== 4 || wShape.length !== 4) throw new Error(`${op}: expected x [N,C,H,W] and w [O,C/g,kh,kw], got [${xShape.join(', ')}] and [${wShape.join(', ')}]`);
  const [n, c, h, w] = xShape as [number, number, number, number];
  const [o, cg, kh, kw] = wShape as [number, number, number, number];
  const groups = a.groups;
  if (cg * groups !== c || o % groups !== 0) throw new Error(`${op}: ${c} input channels do not match w [${wShape.join(', ')}] with groups=${groups}`);
  const oh = outSize(h, kh, a.stride[0], a.padding[0], a.dilation[0]);
  const ow = outSize(w, kw, a.stride[1], a.padding[1], a.dilation[1]);
  if (oh <= 0 || ow <= 0) throw new Error(`${op}: kernel ${kh}x${kw} does not fit input ${h}x${w}`);
  return { n, c, h, w, o, kh, kw, oh, ow, groups, cg, og: o / groups, k: cg * kh * kw, l: oh * ow };
}

/**
 * Patches of one group of one image, position-major: patches[l·k + j] is element j (channel,
 * ky, kx order, as w's row) of output position l's receptive field; 0 outside the image.
 * With `adjoint`, adds the patches back into x instead (each padded cell is dropped).
 */
function patches(x: TypedArray, xOff: number, buf: Float64Array, geo: AdderGeometry, a: Conv2dAttrs, adjoint: boolean): void {
  const { h, w, kh, kw, ow, cg, k, l } = geo;
  for (let pos = 0; pos < l; pos++) {
    const oy = Math.floor(pos / ow);
    const ox = pos - oy * ow;
    let j = pos * k;
    for (let ci = 0; ci < cg; ci++) {
      for (let ky = 0; ky < kh; ky++) {
        const iy = oy * a.stride[0] - a.padding[0] + ky * a.dilation[0];
        const rowInside = iy >= 0 && iy < h;
        const xRow = xOff + (ci * h + iy) * w;
        for (let kx = 0; kx < kw; kx++, j++) {
          const ix = ox * a.stride[1] - a.padding[1] + kx * a.dilation[1];
          const inside = rowInside && ix >= 0 && ix < w;
          if (adjoint) {
            if (inside) x[xRow + ix] += buf[j]!;
          } else {
            buf[j] = inside ? x[xRow + ix]! : 0;
          }
        }
      }
    }
  }
}

/** (x [N, C, H, W], w [O, C/g, kh, kw]) -> y [N, O, OH, OW] = −Σ_j |patch_j − w_j|. */
export const adderConv2dKernel: Kernel<'adderConv2d'> = ([x, w], attrs) => {
  const geo = adderGeometry('adderConv2d', x!.shape, w!.shape, attrs);
  const { n, c, h, o, oh, ow, groups, cg, og, k, l } = geo;
  const out = alloc(x!.dtype, [n, o, oh, ow]);
  const buf = new Float64Array(l * k);
  const wd = w!.data;
  for (let img = 0; img < n; img++) {
    for (let grp = 0; grp < groups; grp++) {
      patches(x!.data, (img * c + grp * cg) * h * geo.w, buf, geo, attrs, false);
      for (let oc = grp * og; oc < (grp + 1) * og; oc++) {
        const wOff = oc * k;
        const yOff = (img * o + oc) * l;
        for (let pos = 0; pos < l; pos++) {
          const pOff = pos * k;
          let s = 0;
          for (let j = 0; j < k; j++) s += Math.abs(buf[pOff + j]! - wd[wOff + j]!);
          out[yOff + pos] = -s;
        }
      }
    }
  }
  return raw(out, [n, o, oh, ow]);
};

/**
 * (g [N, O, OH, OW], x, w) -> 'input': dx = Σ g·HardTanh(w − patch) scattered back to x's cells;
 * 'weight': dw = Σ_{n, l} g·(patch − w). Sums run in float64.
 */
export const adderConv2dGradKernel: Kernel<'adderConv2dGrad'> = ([g, x, w], attrs) => {
  const geo = adderGeometry('adderConv2dGrad', x!.shape, w!.shape, attrs);
  const { n, c, h, o, groups, cg, og, k, l } = geo;
  const buf = new Float64Array(l * k);
  const gd = g!.data;
  const wd = w!.data;
  if (attrs.part === 'weight') {
    const acc = new Float64Array(o * k);
    for (let img = 0; img < n; img++) {
      for (let grp = 0; grp < groups; grp++) {
        patches(x!.data, (img * c + grp * cg) * h * geo.w, buf, geo, attrs, false);
        for (let oc = grp * og; oc < (grp + 1) * og; oc++) {
          const gOff = (img * o + oc) * l;
          const aOff = oc * k;
          let gSum = 0;
          for (let pos = 0; pos < l; pos++) {
            const gv = gd[gOff + pos]!;
            if (gv === 0) continue;
            gSum += gv;
            const pOff = pos * k;
            for (let j = 0; j < k; j++) acc[aOff + j] += gv * buf[pOff + j]!;
          }
          for (let j = 0; j < k; j++) acc[aOff + j] -= gSum * wd[aOff + j]!;
        }
      }
    }
    const dw = alloc(x!.dtype, w!.shape);
    dw.set(acc);
    return raw(dw, w!.shape);
  }
  const dx = new Float64Array(x!.data.length);
  const dPatches = new Float64Array(l * k);
  for (let img = 0; img < n; img++) {
    for (let grp = 0; grp < groups; grp++) {
      const xOff = (img * c + grp * cg) * h * geo.w;
      patches(x!.data, xOff, buf, geo, attrs, false);
      dPatches.fill(0);
      for (let oc = grp * og; oc < (grp + 1) * og; oc++) {
        const gOff = (img * o + oc) * l;
        const wOff = oc * k;
        for (let pos = 0; pos < l; pos++) {
          const gv = gd[gOff + pos]!;
          if (gv === 0) continue;
          const pOff = pos * k;
          for (let j = 0; j < k; j++) {
            const d = wd[wOff + j]! - buf[pOff + j]!;
            dPatches[pOff + j] += gv * (d > 1 ? 1 : d < -1 ? -1 : d);
          }
        }
      }
      patches(dx, xOff, dPatches, geo, attrs, true);
    }
  }
  const out = alloc(x!.dtype, x!.shape);
  out.set(dx);
  return raw(out, x!.shape);
};
