/**
 * Plain-TS integer loops of the runtime (the reference the executor uses until/unless faster
 * kernels are wired in): centred im2col, int32 GEMM, XNOR-popcount GEMM, pooling on integers.
 * Activations travel as Int32Array in NCHW (or [N, F]) order.
 */

export interface ConvGeometry {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly dilation: readonly [number, number];
  readonly groups: number;
  /**
   * true: a Conv1d, whose activations are [N, C, L] — the height-1 maps [N, C, 1, L] of this
   * conv (kernelSize [1, k], stride [1, s], padding [0, p], dilation [1, d]) — and whose output is
   * [N, O, L']. Absent (false) for a Conv2d.
   */
  readonly conv1d?: boolean;
}

export function convOutputSize(h: number, w: number, g: Pick<ConvGeometry, 'kernelSize' | 'stride' | 'padding' | 'dilation'>): [number, number] {
  const oh = Math.floor((h + 2 * g.padding[0] - g.dilation[0] * (g.kernelSize[0] - 1) - 1) / g.stride[0]) + 1;
  const ow = Math.floor((w + 2 * g.padding[1] - g.dilation[1] * (g.kernelSize[1] - 1) - 1) / g.stride[1]) + 1;
  return [oh, ow];
}

/**
 * The output of a linear or conv layer node on an input of `shape`, checked: P output positions per
 * channel (1 for linear), the output shape, and for a conv its input and output height and width.
 * Throws naming the node when the input shape does not fit. Shared by both TypeScript executors.
 */
export function layerOutput(
  node: { readonly op: 'conv2d' | 'linear'; readonly name: string; readonly inFeatures: number; readonly outFeatures: number; readonly conv?: ConvGeometry },
  shape: readonly number[],
): { P: number; outShape: number[]; h: number; w: number; oh: number; ow: number } {
  const n = shape[0]!;
  const O = node.outFeatures;
  if (node.op === 'linear') {
    const K = node.inFeatures;
    if (shape.length !== 2 || shape[1] !== K) throw new Error(`IntModel: '${node.name}' expects [N, ${K}], got [${shape.join(', ')}]`);
    return { P: 1, outShape: [n, O], h: 1, w: 1, oh: 1, ow: 1 };
  }
  const g = node.conv!;
  if (g.conv1d === true) {
    if (shape.length !== 3 || shape[1] !== g.inChannels) throw new Error(`IntModel: '${node.name}' (conv1d) expects [N, ${g.inChannels}, L], got [${shape.join(', ')}]`);
    const w = shape[2]!;
    const [, ow] = convOutputSize(1, w, g);
    return { P: ow, outShape: [n, O, ow], h: 1, w, oh: 1, ow };
  }
  if (shape.length !== 4 || shape[1] !== g.inChannels) throw new Error(`IntModel: '${node.name}' expects [N, ${g.inChannels}, H, W], got [${shape.join(', ')}]`);
  const [, , h, w] = shape as [number, number, number, number];
  const [oh, ow] = convOutputSize(h, w, g);
  return { P: oh * ow, outShape: [n, O, oh, ow], h, w, oh, ow };
}

/**
 * Patches of one image and one group, centred by the input zero point: col[p·K + k] = x − z
 * (padding is the real value 0, i.e. 0 after centring). K = (C/groups)·kh·kw in OIHW order.
 */
export function im2colCentered(
  x: Int32Array, xOffset: number, h: number, w: number, g: ConvGeometry, group: number, zeroPoint: number, out: Int32Array,
): void {
  im2col(x, xOffset, h, w, g, group, zeroPoint, 0, out);
}

/** Patches [P, K] of one image and group: out = x − sub inside, `padValue` in the padding. */
export function im2col(
  x: Int32Array, xOffset: number, h: number, w: number, g: ConvGeometry, group: number, sub: number, padValue: number,
  out: Int32Array | Int8Array | Uint8Array,
): void {
  const zeroPoint = sub;
  const cg = g.inChannels / g.groups;
  const [kh, kw] = g.kernelSize;
  const [sh, sw] = g.stride;
  const [ph, pw] = g.padding;
  const [dh, dw] = g.dilation;
  const [oh, ow] = convOutputSize(h, w, g);
  const K = cg * kh * kw;
  for (let oy = 0; oy < oh; oy++) {
    for (let ox = 0; ox < ow; ox++) {
      const base = (oy * ow + ox) * K;
      let k = 0;
      for (let c = 0; c < cg; c++) {
        const plane = xOffset + (group * cg + c) * h * w;
        for (let ky = 0; ky < kh; ky++) {
          const iy = oy * sh - ph + ky * dh;
          for (let kx = 0; kx < kw; kx++, k++) {
            const ix = ox * sw - pw + kx * dw;
            out[base + k] = iy < 0 || iy >= h || ix < 0 || ix >= w ? padValue : x[plane + iy * w + ix]! - zeroPoint;
          }
        }
      }
    }
  }
}

/**
 * acc[m·ldc + n·cstride] = Σ_k a[m·K + k]·b[n·K + k] for m < M, n < N (both operands row-major
 * with rows of K: a holds weights [M, K], b holds patches or input rows [N, K]).
 */
export function gemmInt32(
  a: Int8Array | Int32Array, aOffset: number, b: Int32Array, bOffset: number, M: number, N: number, K: number,
  acc: Int32Array, accOffset: number, rowStride: number, colStride: number,
): void {
  for (let m = 0; m < M; m++) {
    const ao = aOffset + m * K;
    for (let n = 0; n < N; n++) {
      const bo = bOffset + n * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += a[ao + k]! * b[bo + k]!;
      acc[accOffset + m * rowStride + n * colStride] = s;
    }
  }
}

/** Bit count of a 32-bit word. */
export function popcount32(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Packs ±1 rows (value ≥ 0 → bit 1) of length K into 32-bit words, `words` per row (rows padded with 0 bits). */
export function packSignRows(values: Int32Array, rows: number, K: number, words: number): Uint32Array {
  const out = new Uint32Array(rows * words);
  for (let r = 0; r < rows; r++) {
    const o = r * words;
    const vo = r * K;
    for (let k = 0; k < K; k++) if (values[vo + k]! >= 0) out[o + (k >>> 5)]! |= 1 << (k & 31);
  }
  return out;
}

/**
 * Binary dot products by XNOR-popcount: acc[m·rowStride + n·colStride] = K − 2·popcount(a_m xor b_n)
 * over `words` 32-bit words per row (padding bits are 0 in both operands, so they never count).
 */
export function gemmBinaryXnor(
  a: Uint32Array, b: Uint32Array, M: number, N: number, K: number, words: number,
  acc: Int32Array, accOffset: number, rowStride: number, colStride: number,
): void {
  for (let m = 0; m < M; m++) {
    const ao = m * words;
    for (let n = 0; n < N; n++) {
      const bo = n * words;
      let pc = 0;
      for (let j = 0; j < words; j++) pc += popcount32((a[ao + j]! ^ b[bo + j]!) >>> 0);
      acc[accOffset + m * rowStride + n * colStride] = K - 2 * pc;
    }
  }
}

/** Max pooling of integer NCHW data; padded cells never win (−∞). */
export function maxPoolInt(
  x: Int32Array, n: number, c: number, h: number, w: number,
  k: readonly [number, number], s: readonly [number, number], p: readonly [number, number],
): { data: Int32Array; oh: number; ow: number } {
  const oh = Math.floor((h + 2 * p[0] - k[0]) / s[0]) + 1;
  const ow = Math.floor((w + 2 * p[1] - k[1]) / s[1]) + 1;
  const out = new Int32Array(n * c * oh * ow);
  let o = 0;
  for (let plane = 0; plane < n * c; plane++) {
    const base = plane * h * w;
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let best = -Infinity;
        for (let ky = 0; ky < k[0]; ky++) {
          const iy = oy * s[0] - p[0] + ky;
          if (iy < 0 || iy >= h) continue;
          for (let kx = 0; kx < k[1]; kx++) {
            const ix = ox * s[1] - p[1] + kx;
            if (ix < 0 || ix >= w) continue;
            const v = x[base + iy * w + ix]!;
            if (v > best) best = v;
          }
        }
        out[o++] = best;
      }
    }
  }
  return { data: out, oh, ow };
}

/**
 * Average pooling of integers: out = z + round(Σ (q − z·2^F) / (count·2^F)), half to even on the
 * exact rational, where the input carries F = fracBits extra fractional bits (zero point z·2^F);
 * padded cells are the real 0 and count in the divisor (as AvgPool2d counts padded zeros).
 */
export function avgPoolInt(
  x: Int32Array, n: number, c: number, h: number, w: number,
  k: readonly [number, number], s: readonly [number, number], p: readonly [number, number], zeroPoint: number, fracBits = 0,
): { data: Int32Array; oh: number; ow: number } {
  const inZero = zeroPoint * 2 ** fracBits;
  const divisor = k[0] * k[1] * 2 ** fracBits;
  const oh = Math.floor((h + 2 * p[0] - k[0]) / s[0]) + 1;
  const ow = Math.floor((w + 2 * p[1] - k[1]) / s[1]) + 1;
  const out = new Int32Array(n * c * oh * ow);
  let o = 0;
  for (let plane = 0; plane < n * c; plane++) {
    const base = plane * h * w;
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let sum = 0;
        for (let ky = 0; ky < k[0]; ky++) {
          const iy = oy * s[0] - p[0] + ky;
          if (iy < 0 || iy >= h) continue;
          for (let kx = 0; kx < k[1]; kx++) {
            const ix = ox * s[1] - p[1] + kx;
            if (ix < 0 || ix >= w) continue;
            sum += x[base + iy * w + ix]! - inZero;
          }
        }
        out[o++] = zeroPoint + divRoundHalfEven(sum, divisor);
      }
    }
  }
  return { data: out, oh, ow };
}

/** round(a / b) for integers, b > 0, half to even. */
export function divRoundHalfEven(a: number, b: number): number {
  const q = Math.floor(a / b);
  const r = a - q * b; // [0, b)
  const twice = 2 * r;
  if (twice > b) return q + 1;
  if (twice < b) return q;
  return q % 2 === 0 ? q : q + 1;
}
