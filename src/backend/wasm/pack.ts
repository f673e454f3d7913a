/**
 * Copies between JS arrays and the panel layouts of the wasm GEMM (./module.ts), written straight
 * into the module's memory. All offsets are in float32 elements.
 * @internal
 */
import type { TypedArray } from '../primitives.ts';
import type { ConvGeometry } from './util.ts';

/**
 * Packs the matrix M(o, i) = src[off + o·sOuter + i·sInner] (o < outer, i < inner) into panels of
 * `width` values of o: dst[d + ⌊o/width⌋·inner·width + i·width + o mod width]. Cells of the last
 * panel past `outer` are left as they are (the GEMM's outputs there are discarded).
 */
export function packPanels(
  dst: Float32Array, d: number, src: TypedArray, off: number, outer: number, inner: number, sOuter: number, sInner: number, width: 4 | 8,
): void {
  const panel = inner * width;
  if (sOuter === 1) {
    // o contiguous in src: for each i, runs of `width` values of o
    for (let o0 = 0; o0 < outer; o0 += width) {
      const count = Math.min(width, outer - o0);
      const base = d + (o0 / width) * panel;
      for (let i = 0; i < inner; i++) {
        const s = off + o0 + i * sInner;
        const t = base + i * width;
        for (let j = 0; j < count; j++) dst[t + j] = src[s + j]!;
      }
    }
    return;
  }
  for (let o = 0; o < outer; o++) {
    const t = d + Math.floor(o / width) * panel + (o % width);
    const s = off + o * sOuter;
    for (let i = 0; i < inner; i++) dst[t + i * width] = src[s + i * sInner]!;
  }
}

/**
 * im2col of one image and group: tap t = (ci, ky, kx) of output pixel q = (oy, ox) is
 * x[xOff + (ci·H + iy)·W + ix] with iy = oy·sh − ph + ky·dh, ix = ox·sw − pw + kx·dw (0 outside the
 * image), written to dst[d + rowTerm[t] + colTerm[q]] (the two terms place it in a panel layout).
 */
export function im2colPanels(
  dst: Float32Array, d: number, x: TypedArray, xOff: number, geo: ConvGeometry, rowTerm: Int32Array, colTerm: Int32Array,
): void {
  const { h, w, kh, kw, oh, ow, cg, sh, sw, ph, pw, dh, dw } = geo;
  let t = 0;
  for (let ci = 0; ci < cg; ci++) {
    for (let ky = 0; ky < kh; ky++) {
      for (let kx = 0; kx < kw; kx++, t++) {
        const rowBase = d + rowTerm[t]!;
        // ox with 0 <= ox·sw − pw + kx·dw < w: [lo, hi)
        const shift = kx * dw - pw;
        const lo = Math.min(ow, Math.max(0, Math.ceil(-shift / sw)));
        const hi = Math.max(lo, Math.min(ow, Math.ceil((w - shift) / sw)));
        for (let oy = 0; oy < oh; oy++) {
          const iy = oy * sh - ph + ky * dh;
          const q0 = oy * ow;
          if (iy < 0 || iy >= h) {
            for (let ox = 0; ox < ow; ox++) dst[rowBase + colTerm[q0 + ox]!] = 0;
            continue;
          }
          const xRow = xOff + (ci * h + iy) * w + shift;
          for (let ox = 0; ox < lo; ox++) dst[rowBase + colTerm[q0 + ox]!] = 0;
          for (let ox = lo; ox < hi; ox++) dst[rowBase + colTerm[q0 + ox]!] = x[xRow + ox * sw]!;
          for (let ox = hi; ox < ow; ox++) dst[rowBase + colTerm[q0 + ox]!] = 0;
        }
      }
    }
  }
}

/**
 * col2im, the adjoint of im2col: the row-major column matrix col [kk, P] at src[s + t·ld + q]
 * (row stride `ld`) added into the image and group at dx[dxOff + (ci·H + iy)·W + ix].
 */
export function col2imPadded(src: Float32Array, s: number, ld: number, dx: TypedArray, dxOff: number, geo: ConvGeometry): void {
  const { h, w, kh, kw, oh, ow, cg, sh, sw, ph, pw, dh, dw } = geo;
  let t = 0;
  for (let ci = 0; ci < cg; ci++) {
    for (let ky = 0; ky < kh; ky++) {
      for (let kx = 0; kx < kw; kx++, t++) {
        const shift = kx * dw - pw;
        const lo = Math.min(ow, Math.max(0, Math.ceil(-shift / sw)));
        const hi = Math.max(lo, Math.min(ow, Math.ceil((w - shift) / sw)));
        const row = s + t * ld;
        for (let oy = 0; oy < oh; oy++) {
          const iy = oy * sh - ph + ky * dh;
          if (iy < 0 || iy >= h) continue;
          const xRow = dxOff + (ci * h + iy) * w + shift;
          const c0 = row + oy * ow;
          for (let ox = lo; ox < hi; ox++) dx[xRow + ox * sw] += src[c0 + ox]!;
        }
      }
    }
  }
}
