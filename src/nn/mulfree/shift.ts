/**
 * DeepShift-PS layers (Elhoushi et al., "DeepShift: Towards Multiplication-Less Neural Networks"):
 * every weight is w = s·2^p with a ternary sign s ∈ {−1, 0, +1} and an integer exponent p in a
 * configured range, so that a product x·w is a bit shift of x (and a negation or nothing).
 *
 * Trained parameters ("PS": P and S are learned directly): a real `shift` P and a real `sign` S
 * of the weight's shape. Forward:
 *   s = roundSte(clamp(S, −1, 1)),  p = roundSte(clamp(P, pMin, pMax)),  w = s·2^p
 * (round half to even). Gradient (straight-through rounding; clamp passes the gradient on
 * [min, max] and zero outside):
 *   ∂L/∂S = ∂L/∂w · 2^p            where −1 ≤ S ≤ 1, else 0
 *   ∂L/∂P = ∂L/∂w · s·2^p·ln 2     where pMin ≤ P ≤ pMax, else 0
 */
import * as o from '../../tensor/ops.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { zeros, type Rng } from '../../tensor/index.ts';
import { Module } from '../module.ts';
import { Linear } from '../linear.ts';
import { Conv2d, pair, type Pair } from '../conv.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { shiftConv2dInteger, shiftLinearInteger, type ShiftCodes } from './kernel.ts';


/** Exponent range and initialisation of a shift layer. */
export interface ShiftOptions {
  /**
   * Bits of the exponent (default 4): p ∈ [−(2^bits − 1), 0], i.e. |w| ∈ {2^−15, …, 1} for 4 bits.
   * Storage per weight: these bits plus a 2-bit ternary sign.
   */
  exponentBits?: number;
  /** Explicit exponent range [pMin, pMax] (integers, pMin ≤ pMax); overrides `exponentBits`. */
  range?: readonly [number, number];
  /** Add a learned bias (default true). */
  bias?: boolean;
  rng?: Rng;
}

/** The exponent range of `options`, validated: [pMin, pMax]. */
export function shiftRange(options: Pick<ShiftOptions, 'exponentBits' | 'range'> = {}): [number, number] {
  if (options.range) {
    const [lo, hi] = options.range;
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo > hi || lo < -60 || hi > 60) {
      throw new Error(`shift range must be integers pMin <= pMax within [-60, 60], got [${lo}, ${hi}]`);
    }
    return [lo, hi];
  }
  const bits = options.exponentBits ?? 4;
  if (!Number.isInteger(bits) || bits < 1 || bits > 5) throw new Error(`exponentBits must be an integer in [1, 5], got ${bits}`);
  return [-(2 ** bits - 1), 0];
}

/**
 * The weight s·2^p of shift parameters (see the module doc for the forward and gradient rules).
 * `shift` and `sign` have the weight's shape.
 */
export function shiftWeight(shift: Tensor, sign: Tensor, range: readonly [number, number]): Tensor {
  const s = o.apply('roundSte', [o.clamp(sign, -1, 1)], {});
  const p = o.apply('roundSte', [o.clamp(shift, range[0], range[1])], {});
  return o.mul(s, o.pow(2, p));
}

/**
 * DeepShift's conversion of a float weight: S = sign(w) (0 for w = 0), P = log2|w| clamped to
 * the range (pMin where w = 0). Rounding then gives the nearest power of two in the log domain.
 */
export function shiftParamsFrom(weight: Tensor, range: readonly [number, number]): { shift: Float32Array; sign: Float32Array } {
  const shift = new Float32Array(weight.size);
  const sign = new Float32Array(weight.size);
  for (let i = 0; i < weight.size; i++) {
    const w = weight.data[i]!;
    sign[i] = w > 0 ? 1 : w < 0 ? -1 : 0;
    const p = w === 0 ? range[0] : Math.log2(Math.abs(w));
    shift[i] = Math.min(range[1], Math.max(range[0], p));
  }
  return { shift, sign };
}

/** Integer sign and exponent codes of shift parameters (what a deployment stores). */
export function shiftCodesOf(shift: Tensor, sign: Tensor, range: readonly [number, number]): ShiftCodes {
  const signs = new Int8Array(sign.size);
  const exponents = new Int8Array(shift.size);
  for (let i = 0; i < sign.size; i++) {
    signs[i] = roundHalfEven(Math.min(1, Math.max(-1, sign.data[i]!)));
    exponents[i] = roundHalfEven(Math.min(range[1], Math.max(range[0], shift.data[i]!)));
  }
  return { signs, exponents };
}

/** int8 codes of x: clamp(roundHalfEven(x / scale), −128, 127), as int32 values. */
export function quantizeInt8(x: Tensor, scale: number): Int32Array {
  if (!(scale > 0 && Number.isFinite(scale))) throw new Error(`quantizeInt8: scale must be a positive finite number, got ${scale}`);
  const q = new Int32Array(x.size);
  for (let i = 0; i < x.size; i++) q[i] = Math.min(127, Math.max(-128, roundHalfEven(x.data[i]! / scale)));
  return q;
}

/** Shared parameter handling of the two shift layers. */
abstract class ShiftLayer extends Module {
  readonly range: [number, number];
  readonly shift: Tensor;
  readonly sign: Tensor;
  readonly bias: Tensor | null;

  protected constructor(weightShape: readonly number[], biasSize: number, options: ShiftOptions) {
    super();
    this.range = shiftRange(options);
    this.shift = this.registerParameter('shift', zeros(weightShape));
    this.sign = this.registerParameter('sign', zeros(weightShape));
    this.bias = options.bias ?? true ? this.registerParameter('bias', zeros([biasSize])) : null;
  }

  /** Sets S and P from a float weight (and copies `bias` when both have one). */
  loadFloat(weight: Tensor, bias: Tensor | null): void {
    if (weight.shape.join() !== this.shift.shape.join()) throw new Error(`${this.constructor.name}: weight [${weight.shape.join(', ')}] does not match [${this.shift.shape.join(', ')}]`);
    const { shift, sign } = shiftParamsFrom(weight, this.range);
    this.shift.data.set(shift);
    this.sign.data.set(sign);
    if (this.bias) {
      if (bias) this.bias.data.set(bias.data);
      else this.bias.data.fill(0);
    }
  }

  /** The effective weight s·2^p (differentiable in `shift` and `sign`). */
  weight(): Tensor {
    return shiftWeight(this.shift, this.sign, this.range);
  }

  /** Integer sign and exponent of every weight. */
  codes(): ShiftCodes {
    return shiftCodesOf(this.shift, this.sign, this.range);
  }

  override extraRepr(): string {
    return `shape=[${this.shift.shape.join(', ')}], exponents=[${this.range.join(', ')}], bias=${this.bias !== null}`;
  }
}

/** DeepShift-PS fully connected layer y = x·Wᵀ + b with W = s·2^p [outFeatures, inFeatures]. */
export class ShiftLinear extends ShiftLayer {
  readonly inFeatures: number;
  readonly outFeatures: number;

  /** A fresh layer: PyTorch's Linear initialisation, converted to shifts (DeepShift's from-scratch start). */
  constructor(inFeatures: number, outFeatures: number, options: ShiftOptions = {}) {
    super([outFeatures, inFeatures], outFeatures, options);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const init = new Linear(inFeatures, outFeatures, { bias: options.bias ?? true, rng: options.rng });
    this.loadFloat(init.weight, init.bias);
  }

  /** A shift layer initialised from a float Linear's weights (rounded to powers of two). */
  static fromLinear(layer: Linear, options: Omit<ShiftOptions, 'bias' | 'rng'> = {}): ShiftLinear {
    const out = new ShiftLinear(layer.inFeatures, layer.outFeatures, { ...options, bias: layer.bias !== null });
    out.loadFloat(layer.weight, layer.bias);
    return out;
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) throw new Error(`ShiftLinear(${this.inFeatures}, ${this.outFeatures}): input has shape [${x.shape.join(', ')}]`);
    return o.linear(x, this.weight(), this.bias);
  }

  /**
   * Inference with the integer kernel: x [N, inFeatures] quantized to int8 with `inputScale`,
   * accumulated with shifts and adds only, then y = acc·inputScale·2^base + bias (one float
   * rescale per output, as any integer kernel's requantization).
   */
  forwardInteger(x: Tensor, inputScale: number): Tensor {
    if (x.rank !== 2 || x.shape[1] !== this.inFeatures) throw new Error(`ShiftLinear.forwardInteger: expected [N, ${this.inFeatures}], got [${x.shape.join(', ')}]`);
    const q = quantizeInt8(x, inputScale);
    const { acc, base } = shiftLinearInteger(q, x.shape[0]!, this.codes(), this.outFeatures, this.inFeatures);
    return rescale(acc, [x.shape[0]!, this.outFeatures], inputScale * 2 ** base, this.bias, 1);
  }
}

/** Geometry options of ShiftConv2d (groups and dilation 1). */
export interface ShiftConv2dOptions extends ShiftOptions {
  stride?: Pair;
  padding?: Pair;
}

/** DeepShift-PS convolution (NCHW, weight OIHW = s·2^p; groups and dilation 1). */
export class ShiftConv2d extends ShiftLayer {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];

  /** A fresh layer: PyTorch's Conv2d initialisation, converted to shifts. */
  constructor(inChannels: number, outChannels: number, kernelSize: Pair, options: ShiftConv2dOptions = {}) {
    const [kh, kw] = pair(kernelSize, 1);
    super([outChannels, inChannels, kh, kw], outChannels, options);
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = [kh, kw];
    this.stride = pair(options.stride, 1);
    this.padding = pair(options.padding, 0);
    const init = new Conv2d(inChannels, outChannels, [kh, kw], { stride: this.stride, padding: this.padding, bias: options.bias ?? true, rng: options.rng });
    this.loadFloat(init.weight, init.bias);
  }

  /** A shift layer initialised from a float Conv2d (groups and dilation must be 1). */
  static fromConv2d(layer: Conv2d, options: Omit<ShiftOptions, 'bias' | 'rng'> = {}): ShiftConv2d {
    if (layer.groups !== 1 || layer.dilation.some((d) => d !== 1)) throw new Error('ShiftConv2d.fromConv2d: groups and dilation must be 1');
    const out = new ShiftConv2d(layer.inChannels, layer.outChannels, layer.kernelSize, { ...options, stride: layer.stride, padding: layer.padding, bias: layer.bias !== null });
    out.loadFloat(layer.weight, layer.bias);
    return out;
  }

  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.inChannels) throw new Error(`ShiftConv2d(${this.inChannels}, ${this.outChannels}): expected input [N, ${this.inChannels}, H, W], got [${x.shape.join(', ')}]`);
    return o.conv2d(x, this.weight(), this.bias, { stride: this.stride, padding: this.padding });
  }

  /** Inference with the integer kernel (see ShiftLinear.forwardInteger); x [N, C, H, W]. */
  forwardInteger(x: Tensor, inputScale: number): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.inChannels) throw new Error(`ShiftConv2d.forwardInteger: expected [N, ${this.inChannels}, H, W], got [${x.shape.join(', ')}]`);
    const q = quantizeInt8(x, inputScale);
    const { acc, base, shape } = shiftConv2dInteger(q, x.shape as [number, number, number, number], this.codes(), [this.outChannels, this.inChannels, ...this.kernelSize], this.stride, this.padding);
    return rescale(acc, shape, inputScale * 2 ** base, this.bias, shape[2]! * shape[3]!);
  }
}

/** acc·factor + bias[channel] as a float32 tensor; `inner` = elements per (sample, channel). */
function rescale(acc: Int32Array, shape: readonly number[], factor: number, bias: Tensor | null, inner: number): Tensor {
  const out = new Float32Array(acc.length);
  const channels = shape[1]!;
  for (let i = 0; i < acc.length; i++) {
    const c = Math.floor(i / inner) % channels;
    out[i] = acc[i]! * factor + (bias ? bias.data[c]! : 0);
  }
  return new Tensor(out, shape);
}
