/**
 * SmartDeal inference form: a layer run as z = x·Bᵀ on each piece of its input (K values), then
 * shift-add with the power-of-two coefficients (acc += ±(z_j << e), integer exponents), beside
 * the dense reference that builds the integer weight W = Ĉ·B and multiplies.
 *
 * Integer form (int8 basis): with Ĉ = ±2^p, p ≥ minExponent, and B̂_g = scale_g·B_int,
 *   W[o, f] = scale_g·2^minExponent · Σ_j ±2^(p_j − minExponent)·B_int[j, k]
 * so for integer inputs x (e.g. quantized activation codes) both paths accumulate the same
 * integers per group g exactly (float64 holds integers below 2^53; the sizes here stay far below),
 * and the output y = Σ_g acc_g·scale_g·2^minExponent·xScale + bias is computed by one shared
 * function from those accumulators. With a float32 basis the accumulators are float64 sums of
 * products and the two paths agree to rounding only.
 */
import { noGrad } from '../../autograd/engine.ts';
import type { LayerGeometry } from '../qat/layers.ts';
import type { SmartDealLayout } from './layout.ts';
import { pow2Exponent, type Pow2Range } from './pow2.ts';
import type { SmartDealLayer } from './layers.ts';

/** The packed content of a SmartDeal layer. */
export interface SmartDealExport {
  readonly geometry: LayerGeometry;
  readonly layout: SmartDealLayout;
  readonly range: Pow2Range;
  /** Row bitmap [G, S] (1 kept). */
  readonly rowMask: Uint8Array;
  /** Exponent p of each coefficient [G, S, K] (meaningful where the row is kept). */
  readonly exponents: Int8Array;
  /** 1 where the coefficient is negative. */
  readonly negative: Uint8Array;
  /** Integer basis [G, K, K] (int8 basis) or null (float basis). */
  readonly basisCodes: Int32Array | null;
  /** Per-group basis scale [G] (1 for a float basis). */
  readonly basisScales: Float64Array;
  /** Basis values [G, K, K]: the codes as numbers for an int8 basis, else the float basis. */
  readonly basisValues: Float64Array;
  readonly bias: Float64Array | null;
}

/** Packs a SmartDeal layer: exponents and signs of Ĉ, the row bitmap and the basis (codes + scales when int8). */
export function exportSmartDeal(layer: SmartDealLayer): SmartDealExport {
  return noGrad(() => {
    const { layout } = layer;
    const { groups: G, rowsPerGroup: S, basisSize: K } = layout;
    const { coefficients, basis } = layer.factors();
    const range = layer.format.range;
    const rowMask = new Uint8Array(G * S);
    const exponents = new Int8Array(G * S * K);
    const negative = new Uint8Array(G * S * K);
    for (let r = 0; r < G * S; r++) {
      rowMask[r] = layer.mask.data[r * K] === 0 ? 0 : 1;
      for (let j = 0; j < K; j++) {
        const c = coefficients[r * K + j]!;
        if (rowMask[r] === 0) continue;
        exponents[r * K + j] = pow2Exponent(c, range);
        negative[r * K + j] = c < 0 ? 1 : 0;
      }
    }
    let basisCodes: Int32Array | null = null;
    const basisScales = new Float64Array(G).fill(1);
    let basisValues = basis;
    const quantizer = layer.basisQuantizer;
    if (quantizer) {
      const exported = quantizer.exportQuant();
      if (exported.type !== 'affine') throw new Error(`exportSmartDeal: unexpected basis quantization '${exported.type}'`);
      basisCodes = new Int32Array(G * K * K);
      basisValues = new Float64Array(G * K * K);
      for (let g = 0; g < G; g++) {
        const scale = exported.qparams.scale[g]!;
        basisScales[g] = scale;
        for (let i = 0; i < K * K; i++) {
          const q = Math.round(basis[g * K * K + i]! / scale);
          basisCodes[g * K * K + i] = q;
          basisValues[g * K * K + i] = q;
        }
      }
    }
    return {
      geometry: layer.geometry(), layout, range, rowMask, exponents, negative, basisCodes, basisScales, basisValues,
      bias: layer.bias ? Float64Array.from(layer.bias.data) : null,
    };
  });
}

/** Input of the inference functions: values in NCHW (conv) or [N, F] (linear) and a scale (1 for float input). */
export interface InferenceInput {
  readonly data: ArrayLike<number>;
  readonly shape: readonly number[];
  /** Real value of one unit of `data` (integer codes: the activation scale); default 1. */
  readonly scale?: number;
}

/** Per-group accumulators [positions, G] of the layer on `input`, and the output geometry. */
interface Accumulated {
  readonly acc: Float64Array;
  readonly batch: number;
  /** Output positions per image (OH·OW for conv, 1 for linear). */
  readonly positions: number;
  readonly outShape: number[];
}

/**
 * The layer on `input` as z = (input piece)·Bᵀ followed by shift-add with the coefficients:
 * acc_g += Σ_j ±(z_j·2^(p_j − minExponent)) over the kept rows (integer shifts for integer z).
 * Returns the output (float64, [N, O] or [N, O, OH, OW]).
 */
export function shiftAddForward(e: SmartDealExport, input: InferenceInput): Float64Array {
  return combine(e, input, accumulate(e, input, shiftAddGroup(e)));
}

/** The same layer through the dense integer weight W_int = Ĉ_int·B_int (reference for `shiftAddForward`). */
export function denseForward(e: SmartDealExport, input: InferenceInput): Float64Array {
  return combine(e, input, accumulate(e, input, denseGroup(e)));
}

/** Output shape of the layer on an input of `shape`. */
export function outputShape(e: SmartDealExport, shape: readonly number[]): number[] {
  return accumulateGeometry(e, shape).outShape;
}

/** Accumulates one group over one input patch (F values). */
type GroupKernel = (patch: Float64Array, g: number) => number;

function shiftAddGroup(e: SmartDealExport): GroupKernel {
  const { rowsPerGroup: S, basisSize: K, groupsPerChannel } = e.layout;
  const z = new Float64Array(K);
  return (patch, g) => {
    const offset = (g % groupsPerChannel) * S * K;
    let acc = 0;
    for (let s = 0; s < S; s++) {
      const r = g * S + s;
      if (e.rowMask[r] === 0) continue;
      // z = piece · Bᵀ: z_j = Σ_k x_k·B[j, k]
      for (let j = 0; j < K; j++) {
        let v = 0;
        for (let k = 0; k < K; k++) v += patch[offset + s * K + k]! * e.basisValues[(g * K + j) * K + k]!;
        z[j] = v;
      }
      // shift-add: ±(z_j << (p_j − minExponent))
      for (let j = 0; j < K; j++) {
        const shifted = z[j]! * 2 ** (e.exponents[r * K + j]! - e.range.minExponent);
        acc += e.negative[r * K + j] === 1 ? -shifted : shifted;
      }
    }
    return acc;
  };
}

function denseGroup(e: SmartDealExport): GroupKernel {
  const { rowsPerGroup: S, basisSize: K, groupsPerChannel, groups: G } = e.layout;
  // W_int per group [S, K] = Ĉ_int·B (Ĉ_int = ±2^(p − minExponent), 0 in removed rows).
  const w = new Float64Array(G * S * K);
  for (let g = 0; g < G; g++) {
    for (let s = 0; s < S; s++) {
      const r = g * S + s;
      if (e.rowMask[r] === 0) continue;
      for (let k = 0; k < K; k++) {
        let v = 0;
        for (let j = 0; j < K; j++) {
          const c = 2 ** (e.exponents[r * K + j]! - e.range.minExponent) * (e.negative[r * K + j] === 1 ? -1 : 1);
          v += c * e.basisValues[(g * K + j) * K + k]!;
        }
        w[r * K + k] = v;
      }
    }
  }
  return (patch, g) => {
    const offset = (g % groupsPerChannel) * S * K;
    let acc = 0;
    for (let i = 0; i < S * K; i++) acc += patch[offset + i]! * w[g * S * K + i]!;
    return acc;
  };
}

function accumulateGeometry(e: SmartDealExport, shape: readonly number[]): { batch: number; positions: number; outShape: number[]; ow: number } {
  const geo = e.geometry;
  if (geo.type === 'linear') {
    if (shape.length !== 2 || shape[1] !== geo.inFeatures) throw new Error(`smartdeal inference: linear input must be [N, ${geo.inFeatures}], got [${shape.join(', ')}]`);
    return { batch: shape[0]!, positions: 1, outShape: [shape[0]!, geo.outFeatures], ow: 1 };
  }
  if (shape.length !== 4 || shape[1] !== geo.inChannels) throw new Error(`smartdeal inference: conv input must be [N, ${geo.inChannels}, H, W], got [${shape.join(', ')}]`);
  const [kh, kw] = geo.kernelSize;
  const oh = Math.floor((shape[2]! + 2 * geo.padding[0] - geo.dilation[0] * (kh - 1) - 1) / geo.stride[0]) + 1;
  const ow = Math.floor((shape[3]! + 2 * geo.padding[1] - geo.dilation[1] * (kw - 1) - 1) / geo.stride[1]) + 1;
  if (oh < 1 || ow < 1) throw new Error(`smartdeal inference: input [${shape.join(', ')}] is smaller than the kernel`);
  return { batch: shape[0]!, positions: oh * ow, outShape: [shape[0]!, geo.outChannels, oh, ow], ow };
}

/** Runs `kernel` for every (image, position, group) on the input patch of the group's channel. */
function accumulate(e: SmartDealExport, input: InferenceInput, kernel: GroupKernel): Accumulated {
  const { batch, positions, outShape, ow } = accumulateGeometry(e, input.shape);
  if (input.data.length !== input.shape.reduce((p, d) => p * d, 1)) throw new Error(`smartdeal inference: ${input.data.length} values for shape [${input.shape.join(', ')}]`);
  const { groups: G, groupsPerChannel, rowsPerGroup: S, basisSize: K, fanIn: F, outChannels: O } = e.layout;
  const patch = new Float64Array(groupsPerChannel * S * K);
  const acc = new Float64Array(batch * positions * G);
  const geo = e.geometry;
  for (let n = 0; n < batch; n++) {
    for (let pos = 0; pos < positions; pos++) {
      for (let o = 0; o < O; o++) {
        if (geo.type === 'linear') {
          if (o === 0) for (let f = 0; f < F; f++) patch[f] = input.data[n * F + f]!;
        } else {
          // im2col of output position (h, w) for channel o's input-channel group.
          const [kh, kw] = geo.kernelSize;
          const ig = geo.inChannels / geo.groups;
          const first = Math.floor(o / (O / geo.groups)) * ig;
          const h = Math.floor(pos / ow);
          const w = pos % ow;
          const [H, W] = [input.shape[2]!, input.shape[3]!];
          for (let i = 0; i < ig; i++) {
            for (let r = 0; r < kh; r++) {
              const y = h * geo.stride[0] + r * geo.dilation[0] - geo.padding[0];
              for (let c = 0; c < kw; c++) {
                const x = w * geo.stride[1] + c * geo.dilation[1] - geo.padding[1];
                patch[(i * kh + r) * kw + c] = y >= 0 && y < H && x >= 0 && x < W ? input.data[((n * geo.inChannels + first + i) * H + y) * W + x]! : 0;
              }
            }
          }
        }
        for (let gl = 0; gl < groupsPerChannel; gl++) {
          const g = o * groupsPerChannel + gl;
          acc[(n * positions + pos) * G + g] = kernel(patch, g);
        }
      }
    }
  }
  return { acc, batch, positions, outShape };
}

/** y = Σ_g acc_g·scale_g·2^minExponent·xScale + bias, in the output layout. */
function combine(e: SmartDealExport, input: InferenceInput, a: Accumulated): Float64Array {
  const { groups: G, groupsPerChannel, outChannels: O } = e.layout;
  const unit = 2 ** e.range.minExponent * (input.scale ?? 1);
  const out = new Float64Array(a.batch * O * a.positions);
  for (let n = 0; n < a.batch; n++) {
    for (let pos = 0; pos < a.positions; pos++) {
      for (let o = 0; o < O; o++) {
        let y = 0;
        for (let gl = 0; gl < groupsPerChannel; gl++) {
          const g = o * groupsPerChannel + gl;
          y += a.acc[(n * a.positions + pos) * G + g]! * e.basisScales[g]! * unit;
        }
        out[(n * O + o) * a.positions + pos] = y + (e.bias ? e.bias[o]! : 0);
      }
    }
  }
  return out;
}
