/**
 * The quantize node and max pooling for the fast TypeScript executor: the same integers as the
 * reference (IntModel's quantize step with `roundHalfEven`, ops.ts `maxPoolInt`) without
 * data-dependent branches in the common case (a mispredicted branch per value costs more than the
 * arithmetic). Values outside the fast range take the reference expressions.
 * @internal
 */
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { maxPoolInt } from '../ops.ts';

const SMALL = 2 ** 29;

/**
 * out[i] = clamp(roundHalfEven(x[i] / scale) + z, qmin, qmax) (NaN stores 0, as the reference's
 * Int32Array store of NaN does).
 */
export function quantizeValues(x: Float32Array, scale: number, z: number, qmin: number, qmax: number, out: Int32Array): void {
  const loT = qmin - z;
  const span = qmax - qmin;
  const branchFree = Math.abs(loT) <= SMALL && Math.abs(qmax - z) <= SMALL;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]! / scale;
    if (branchFree && v < SMALL && v > -SMALL) {
      // round half to even: f + (d > ½) + (d = ½ and f odd)
      const f = Math.floor(v);
      const d = v - f;
      const fi = f | 0;
      const r = fi + (+(d > 0.5) | (+(d === 0.5) & fi));
      let t = r - loT;
      t &= ~(t >> 31);
      let u = span - t;
      u &= ~(u >> 31);
      out[i] = qmax - u;
    } else {
      const q = roundHalfEven(v) + z;
      out[i] = q < qmin ? qmin : q > qmax ? qmax : q;
    }
  }
}

/**
 * Max pooling of integer NCHW data, as `maxPoolInt` (padded cells never win). Branch-free int32
 * maxima when the input's values differ by less than 2^31, else `maxPoolInt` itself.
 */
export function maxPoolValues(
  x: Int32Array, n: number, c: number, h: number, w: number,
  k: readonly [number, number], s: readonly [number, number], p: readonly [number, number],
): { data: Int32Array; oh: number; ow: number } {
  let lo = 0;
  let hi = 0;
  if (x.length > 0) {
    lo = x[0]!;
    hi = lo;
    for (let i = 1; i < x.length; i++) {
      const v = x[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (hi - lo >= 2 ** 31) return maxPoolInt(x, n, c, h, w, k, s, p);
  const oh = Math.floor((h + 2 * p[0] - k[0]) / s[0]) + 1;
  const ow = Math.floor((w + 2 * p[1] - k[1]) / s[1]) + 1;
  const out = new Int32Array(n * c * oh * ow);
  // Per output column, the window's valid input columns [x0, x1); likewise rows.
  const xs0 = new Int32Array(ow), xs1 = new Int32Array(ow);
  for (let ox = 0; ox < ow; ox++) {
    xs0[ox] = Math.max(0, ox * s[1] - p[1]);
    xs1[ox] = Math.min(w, ox * s[1] - p[1] + k[1]);
  }
  let o = 0;
  if (k[0] === 2 && k[1] === 2 && s[0] === 2 && s[1] === 2 && p[0] === 0 && p[1] === 0) {
    // the common 2×2 / stride 2 window without padding: four loads and three branch-free maxima
    for (let plane = 0; plane < n * c; plane++) {
      const base = plane * h * w;
      for (let oy = 0; oy < oh; oy++) {
        let r0 = base + 2 * oy * w;
        for (let ox = 0; ox < ow; ox++, r0 += 2) {
          const r1 = r0 + w;
          let best = x[r0]! - lo;
          let d = x[r0 + 1]! - lo - best;
          best += d & ~(d >> 31);
          d = x[r1]! - lo - best;
          best += d & ~(d >> 31);
          d = x[r1 + 1]! - lo - best;
          best += d & ~(d >> 31);
          out[o++] = best + lo;
        }
      }
    }
    return { data: out, oh, ow };
  }
  for (let plane = 0; plane < n * c; plane++) {
    const base = plane * h * w;
    for (let oy = 0; oy < oh; oy++) {
      const y0 = Math.max(0, oy * s[0] - p[0]);
      const y1 = Math.min(h, oy * s[0] - p[0] + k[0]);
      for (let ox = 0; ox < ow; ox++) {
        const x0 = xs0[ox]!, x1 = xs1[ox]!;
        if (y0 >= y1 || x0 >= x1) {
          out[o++] = 0; // a window of padding only: the reference's −∞ stored as int32
          continue;
        }
        let best = x[base + y0 * w + x0]! - lo; // values shifted to [0, 2^31): differences stay int32
        for (let iy = y0; iy < y1; iy++) {
          const row = base + iy * w;
          for (let ix = x0; ix < x1; ix++) {
            const d = (x[row + ix]! - lo) - best;
            best += d & ~(d >> 31);
          }
        }
        out[o++] = best + lo;
      }
    }
  }
  return { data: out, oh, ow };
}
