/**
 * SmartDeal layers: Linear and Conv2d whose weight is W = Ĉ·B̂ (layout.ts), trained with
 * Ĉ = mask ⊙ pow2(C) through the straight-through op `pow2Ste` (the row mask is a buffer fixed
 * by the decomposition) and B̂ = B, or B fake-quantized to int8 per group (the 'ste' quantizer
 * kind of quant/quantizers, symmetric narrow range, one scale per basis) with its STE gradient.
 */
import { Module } from '../../nn/module.ts';
import type { Conv2d } from '../../nn/conv.ts';
import type { Linear } from '../../nn/linear.ts';
import { conv2d, linear, matmul, reshape, slice, Tensor } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { createQuantizer, type Quantizer } from '../quantizers/index.ts';
import type { LayerGeometry } from '../qat/layers.ts';
import type { Decomposition } from './decompose.ts';
import type { SmartDealLayout } from './layout.ts';
import { pow2Ste, type Pow2Range } from './pow2.ts';

/** Storage and number format of a SmartDeal layer. */
export interface SmartDealFormat {
  readonly range: Pow2Range;
  /** Exponent bits per nonzero coefficient (2^bits exponents in `range`). */
  readonly exponentBits: number;
  /** 8: int8 basis with one float32 scale per group; 32: float32 basis. */
  readonly basisBits: 8 | 32;
}

/** Common part of SmartDealLinear and SmartDealConv2d. */
export abstract class SmartDealLayer extends Module {
  abstract readonly layerType: 'Conv2d' | 'Linear';
  readonly layout: SmartDealLayout;
  readonly format: SmartDealFormat;
  /** Latent coefficients C [G, S, K] (trained through the STE; the forward uses mask ⊙ pow2(C)). */
  readonly coefficients: Tensor;
  /** Basis B [G, K, K]. */
  readonly basis: Tensor;
  /** Element mask [G, S, K] of Ce (1 kept, 0 removed), fixed. */
  readonly mask: Tensor;
  readonly bias: Tensor | null;
  /** int8 fake quantizer of the basis (one scale per group), or null for a float basis. */
  readonly basisQuantizer: Quantizer | null;
  /** ‖W − Ĉ·B‖/‖W‖ of the decomposition this layer was built from. */
  readonly initialError: number;

  constructor(decomposition: Decomposition, format: SmartDealFormat, bias: Tensor | null, dtype: 'float32' | 'float64') {
    super();
    const { layout } = decomposition;
    this.layout = layout;
    this.format = format;
    const { groups: G, rowsPerGroup: S, basisSize: K } = layout;
    const make = (values: ArrayLike<number>, shape: number[]): Tensor => new Tensor(dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values), shape);
    this.coefficients = this.registerParameter('coefficients', make(decomposition.coefficients, [G, S, K]));
    this.basis = this.registerParameter('basis', make(decomposition.basis, [G, K, K]));
    const maskValues = new Float64Array(G * S * K);
    for (let r = 0; r < G * S; r++) if (decomposition.rowMask[r] === 1) maskValues.fill(1, r * K, (r + 1) * K);
    this.mask = this.registerBuffer('mask', make(maskValues, [G, S, K]));
    if (bias && bias.dtype !== dtype) throw new Error(`smartdeal: the bias is ${bias.dtype} but the layer is built in ${dtype}`);
    this.bias = bias;
    if (bias) {
      const flag = bias.requiresGrad;
      this.registerParameter('bias', bias);
      bias.requiresGrad_(flag);
    }
    this.basisQuantizer = format.basisBits === 8
      ? this.registerModule('basisQuantizer', createQuantizer(
        { kind: 'ste', bits: 8, signed: true, symmetric: true, granularity: 'channel' },
        { role: 'weight', shape: [G, K, K], channelAxis: 0 },
      ))
      : null;
    this.initialError = decomposition.relativeError;
  }

  /** Ĉ = mask ⊙ pow2(C) with the straight-through gradient. */
  quantizedCoefficients(): Tensor {
    return pow2Ste(this.coefficients, this.mask, this.format.range);
  }

  /** B̂: B, or B fake-quantized to int8 per group. */
  quantizedBasis(): Tensor {
    return this.basisQuantizer ? this.basisQuantizer.forward(this.basis) : this.basis;
  }

  /** The dense weight W = Ĉ·B̂ in the original layer's shape (differentiable in C and B). */
  effectiveWeight(): Tensor {
    const { outChannels: O, fanIn: F, groupsPerChannel, rowsPerGroup: S, basisSize: K } = this.layout;
    let w = reshape(matmul(this.quantizedCoefficients(), this.quantizedBasis()), [O, groupsPerChannel * S * K]);
    if (groupsPerChannel * S * K !== F) w = slice(w, [0, 0], [O, F]);
    return reshape(w, this.layout.weightShape);
  }

  /** Ce rows kept / real rows (1 − achieved structured sparsity). */
  keptFraction(): number {
    const { rowsPerChannel, outChannels, basisSize: K } = this.layout;
    let kept = 0;
    for (let i = 0; i < this.mask.size; i += K) kept += this.mask.data[i]!;
    return kept / (rowsPerChannel * outChannels);
  }

  abstract override forward(x: Tensor): Tensor;

  /** Geometry of the layer (as the QAT export describes it). */
  abstract geometry(): LayerGeometry;

  /** The current Ĉ (float64) and B̂ (float64), without gradient. */
  factors(): { coefficients: Float64Array; basis: Float64Array } {
    return noGrad(() => ({
      coefficients: Float64Array.from(this.quantizedCoefficients().data),
      basis: Float64Array.from(this.quantizedBasis().data),
    }));
  }
}

/** Linear with W = Ĉ·B̂ (pieces of `basisSize` inputs). */
export class SmartDealLinear extends SmartDealLayer {
  readonly layerType = 'Linear';
  readonly inFeatures: number;
  readonly outFeatures: number;

  /** `dtype` of the new parameters: the layer weight's (default) or float64 (gradient checks). */
  constructor(layer: Linear, decomposition: Decomposition, format: SmartDealFormat, dtype: 'float32' | 'float64' = layer.weight.dtype === 'float64' ? 'float64' : 'float32') {
    super(decomposition, format, layer.bias, dtype);
    this.inFeatures = layer.inFeatures;
    this.outFeatures = layer.outFeatures;
    this.training = layer.training;
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new Error(`SmartDealLinear(${this.inFeatures}, ${this.outFeatures}): input has shape [${x.shape.join(', ')}], last dim should be ${this.inFeatures}`);
    }
    return linear(x, this.effectiveWeight(), this.bias);
  }

  geometry(): LayerGeometry {
    return { type: 'linear', inFeatures: this.inFeatures, outFeatures: this.outFeatures };
  }

  override extraRepr(): string {
    const l = this.layout;
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, basis=${l.basisSize}x${l.basisSize}x${l.groups}, kept=${this.keptFraction().toFixed(3)}`;
  }
}

/** Conv2d with W = Ĉ·B̂ (Ce rows = kernel rows, basis along the kernel width). */
export class SmartDealConv2d extends SmartDealLayer {
  readonly layerType = 'Conv2d';
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;

  /** `dtype` of the new parameters: the layer weight's (default) or float64 (gradient checks). */
  constructor(conv: Conv2d, decomposition: Decomposition, format: SmartDealFormat, dtype: 'float32' | 'float64' = conv.weight.dtype === 'float64' ? 'float64' : 'float32') {
    super(decomposition, format, conv.bias, dtype);
    this.inChannels = conv.inChannels;
    this.outChannels = conv.outChannels;
    this.kernelSize = [...conv.kernelSize];
    this.stride = [...conv.stride];
    this.padding = [...conv.padding];
    this.dilation = [...conv.dilation];
    this.groups = conv.groups;
    this.training = conv.training;
  }

  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.inChannels) {
      throw new Error(`SmartDealConv2d(${this.inChannels}, ${this.outChannels}): expected input [N, ${this.inChannels}, H, W], got [${x.shape.join(', ')}]`);
    }
    return conv2d(x, this.effectiveWeight(), this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups });
  }

  geometry(): LayerGeometry {
    return {
      type: 'conv2d', inChannels: this.inChannels, outChannels: this.outChannels, kernelSize: this.kernelSize,
      stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups,
    };
  }

  override extraRepr(): string {
    const l = this.layout;
    return `${this.inChannels}, ${this.outChannels}, kernelSize=${this.kernelSize.join('x')}, basis=${l.basisSize}x${l.basisSize}x${l.groups}, kept=${this.keptFraction().toFixed(3)}`;
  }
}
