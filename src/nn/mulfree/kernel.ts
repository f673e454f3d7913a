/**
 * Integer kernels of shift layers: int8 activations times weights s·2^p computed with bit shifts
 * and integer additions only (no multiply instruction in the inner loops).
 *
 * With base = the smallest exponent among the layer's non-zero weights, every product is
 * x·s·2^p = ±(x << (p − base))·2^base, so the int32 accumulator acc = Σ ±(x << (p − base)) gives
 * the exact layer output acc·2^base (times the input's scale). The kernels refuse layers whose
 * worst case K·128·2^(pMax − base) would not fit in int32.
 */

/** Sign (−1, 0, +1) and integer exponent of every weight, in the weight's layout. */
export interface ShiftCodes {
  readonly signs: Int8Array;
  readonly exponents: Int8Array;
}

/** Result of an integer shift kernel: y = acc·2^base (in the input's units). */
export interface ShiftAccumulator {
  readonly acc: Int32Array;
  readonly base: number;
}

const INT32_MAX = 2 ** 31 - 1;

/** Per-weight left shifts relative to the smallest used exponent, with the overflow check. */
function relativeShifts(codes: ShiftCodes, fanIn: number, op: string): { shifts: Uint8Array; base: number } {
  if (codes.signs.length !== codes.exponents.length) throw new Error(`${op}: ${codes.signs.length} signs for ${codes.exponents.length} exponents`);
  let base = Infinity;
  let top = -Infinity;
  for (let i = 0; i < codes.signs.length; i++) {
    const s = codes.signs[i]!;
    if (s !== 0 && s !== 1 && s !== -1) throw new Error(`${op}: sign ${s} at ${i} is not -1, 0 or +1`);
    if (s === 0) continue;
    base = Math.min(base, codes.exponents[i]!);
    top = Math.max(top, codes.exponents[i]!);
  }
  if (base === Infinity) return { shifts: new Uint8Array(codes.signs.length), base: 0 };
  if (fanIn * 128 * 2 ** (top - base) > INT32_MAX) {
    throw new RangeError(`${op}: exponents span [${base}, ${top}] over ${fanIn} inputs: int8 sums of up to ${fanIn}·128·2^${top - base} overflow int32`);
  }
  const shifts = new Uint8Array(codes.signs.length);
  for (let i = 0; i < shifts.length; i++) if (codes.signs[i] !== 0) shifts[i] = codes.exponents[i]! - base;
  return { shifts, base };
}

function checkInt8(q: Int32Array, op: string): void {
  for (let i = 0; i < q.length; i++) {
    const v = q[i]!;
    if (v < -128 || v > 127) throw new RangeError(`${op}: input ${v} at ${i} is outside int8 [-128, 127]`);
  }
}

/**
 * x [N, K] (int8 values in an Int32Array) times Wᵀ, W [O, K] given by `codes`:
 * acc [N, O] with y = acc·2^base.
 */
export function shiftLinearInteger(x: Int32Array, n: number, codes: ShiftCodes, outFeatures: number, inFeatures: number): ShiftAccumulator {
  const op = 'shiftLinearInteger';
  if (x.length !== n * inFeatures) throw new Error(`${op}: input has ${x.length} values, expected ${n}·${inFeatures}`);
  if (codes.signs.length !== outFeatures * inFeatures) throw new Error(`${op}: ${codes.signs.length} weights, expected ${outFeatures}·${inFeatures}`);
  checkInt8(x, op);
  const { shifts, base } = relativeShifts(codes, inFeatures, op);
  const acc = new Int32Array(n * outFeatures);
  for (let row = 0; row < n; row++) {
    const xOff = row * inFeatures;
    for (let oc = 0; oc < outFeatures; oc++) {
      const wOff = oc * inFeatures;
      let sum = 0;
      for (let k = 0; k < inFeatures; k++) {
        const s = codes.signs[wOff + k]!;
        if (s === 0) continue;
        const term = x[xOff + k]! << shifts[wOff + k]!;
        sum = s > 0 ? (sum + term) | 0 : (sum - term) | 0;
      }
      acc[row * outFeatures + oc] = sum;
    }
  }
  return { acc, base };
}

/**
 * x [N, C, H, W] (int8 values) convolved with W [O, C, kh, kw] given by `codes` (zero padding,
 * groups and dilation 1): acc [N, O, OH, OW] with y = acc·2^base.
 */
export function shiftConv2dInteger(
  x: Int32Array,
  xShape: readonly [number, number, number, number],
  codes: ShiftCodes,
  wShape: readonly [number, number, number, number],
  stride: readonly [number, number],
  padding: readonly [number, number],
): ShiftAccumulator & { shape: [number, number, number, number] } {
  const op = 'shiftConv2dInteger';
  const [n, c, h, w] = xShape;
  const [o, wc, kh, kw] = wShape;
  if (wc !== c) throw new Error(`${op}: weight has ${wc} input channels, input has ${c}`);
  if (x.length !== n * c * h * w) throw new Error(`${op}: input has ${x.length} values, expected ${xShape.join('·')}`);
  if (codes.signs.length !== o * c * kh * kw) throw new Error(`${op}: ${codes.signs.length} weights, expected ${wShape.join('·')}`);
  const oh = Math.floor((h + 2 * padding[0] - kh) / stride[0]) + 1;
  const ow = Math.floor((w + 2 * padding[1] - kw) / stride[1]) + 1;
  if (oh <= 0 || ow <= 0) throw new Error(`${op}: kernel ${kh}x${kw} does not fit input ${h}x${w}`);
  checkInt8(x, op);
  const { shifts, base } = relativeShifts(codes, c * kh * kw, op);
  const acc = new Int32Array(n * o * oh * ow);
  for (let img = 0; img < n; img++) {
    for (let oc = 0; oc < o; oc++) {
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          let sum = 0;
          for (let ci = 0; ci < c; ci++) {
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * stride[0] - padding[0] + ky;
              if (iy < 0 || iy >= h) continue;
              const xRow = ((img * c + ci) * h + iy) * w;
              const wRow = ((oc * c + ci) * kh + ky) * kw;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * stride[1] - padding[1] + kx;
                if (ix < 0 || ix >= w) continue;
                const s = codes.signs[wRow + kx]!;
                if (s === 0) continue;
                const term = x[xRow + ix]! << shifts[wRow + kx]!;
                sum = s > 0 ? (sum + term) | 0 : (sum - term) | 0;
              }
            }
          }
          acc[((img * o + oc) * oh + oy) * ow + ox] = sum;
        }
      }
    }
  }
  return { acc, base, shape: [n, o, oh, ow] };
}
