/**
 * AdderNet layers (Chen et al., "AdderNet: Do We Really Need Multiplications in Deep Learning?",
 * CVPR 2020): the output is the negative L1 distance between each receptive field and the filter,
 * y = −Σ |x − w|, computed with subtractions and additions only.
 *
 * Training follows the paper:
 * - full-precision gradient for the filter, ∂y/∂w = x − w (not sign(x − w));
 * - HardTanh-clipped gradient for the input, ∂y/∂x = HT(w − x) = clamp(w − x, −1, 1);
 * - adaptive learning-rate scaling per layer: the layer's weight gradient G becomes
 *   η·√k·G/‖G‖₂ (k = number of weights), so every adder layer takes steps of the same size;
 * - a batch normalisation after every adder layer (the outputs are large negative numbers whose
 *   scale grows with the fan-in; BN brings them back to a usable range).
 * These gradients are estimators by design (see the `adderConv2d` primitive).
 */
import * as o from '../../tensor/ops.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { conv2dAttrs, zeros, type Rng } from '../../tensor/index.ts';
import { Module } from '../module.ts';
import { BatchNorm1d, BatchNorm2d } from '../batchnorm.ts';
import { Conv2d, pair, type Pair } from '../conv.ts';
import { Linear } from '../linear.ts';
import { normal } from '../init.ts';


/** The released AdderNet code's η (its weight gradient is scaled by √k/‖G‖/5). */
export const DEFAULT_ADAPTIVE_ETA = 0.2;

export interface AdderOptions {
  /** η of the adaptive gradient scaling (default 0.2); 0 turns it off (the plain estimator). */
  adaptiveEta?: number;
  /** Batch norm after the adder (default true, as the paper requires). */
  batchNorm?: boolean;
  rng?: Rng;
}

export interface AdderConv2dOptions extends AdderOptions {
  stride?: Pair;
  padding?: Pair;
}

/**
 * y [N, O, OH, OW] = −Σ |x_patch − w| for x [N, C, H, W] and w [O, C, kh, kw] (zero padding
 * counts as x = 0), with AdderNet's gradients (η as in `AdderOptions.adaptiveEta`, default off here).
 */
export function adderConv2d(x: Tensor, weight: Tensor, options: { stride?: Pair; padding?: Pair; adaptiveEta?: number } = {}): Tensor {
  const attrs = conv2dAttrs({ stride: options.stride, padding: options.padding }, 'adderConv2d');
  const eta = options.adaptiveEta ?? 0;
  if (!(Number.isFinite(eta) && eta >= 0)) throw new Error(`adderConv2d: adaptiveEta must be a finite number >= 0, got ${eta}`);
  if (x.rank !== 4 || weight.rank !== 4 || x.shape[1] !== weight.shape[1]) {
    throw new Error(`adderConv2d: expected x [N, C, H, W] and weight [O, C, kh, kw], got [${x.shape.join(', ')}] and [${weight.shape.join(', ')}]`);
  }
  return o.apply('adderConv2d', [x, weight], eta > 0 ? { ...attrs, adaptiveEta: eta } : attrs);
}

/** y [N, O] = −Σ_k |x[n, k] − w[o, k]| for x [N, K] and w [O, K] (a 1×1 adderConv2d). */
export function adderLinear(x: Tensor, weight: Tensor, options: { adaptiveEta?: number } = {}): Tensor {
  if (x.rank !== 2 || weight.rank !== 2 || x.shape[1] !== weight.shape[1]) {
    throw new Error(`adderLinear: expected x [N, K] and weight [O, K], got [${x.shape.join(', ')}] and [${weight.shape.join(', ')}]`);
  }
  const [n, k] = x.shape as [number, number];
  const outFeatures = weight.shape[0]!;
  const y = adderConv2d(o.reshape(x, [n, k, 1, 1]), o.reshape(weight, [outFeatures, k, 1, 1]), options);
  return o.reshape(y, [n, outFeatures]);
}

function checkEta(layer: string, eta: number): number {
  if (!(Number.isFinite(eta) && eta >= 0)) throw new Error(`${layer}: adaptiveEta must be a finite number >= 0, got ${eta}`);
  return eta;
}

/**
 * Adder convolution followed by BatchNorm2d (no bias: the BN's shift plays its part).
 * A fresh layer draws w ~ N(0, 1), as the released code does.
 */
export class AdderConv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly adaptiveEta: number;
  readonly weight: Tensor;
  readonly bn: BatchNorm2d | null;

  constructor(inChannels: number, outChannels: number, kernelSize: Pair, options: AdderConv2dOptions = {}) {
    super();
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = pair(kernelSize, 1);
    this.stride = pair(options.stride, 1);
    this.padding = pair(options.padding, 0);
    this.adaptiveEta = checkEta('AdderConv2d', options.adaptiveEta ?? DEFAULT_ADAPTIVE_ETA);
    this.weight = this.registerParameter('weight', zeros([outChannels, inChannels, ...this.kernelSize]));
    normal(this.weight, 0, 1, options.rng);
    this.bn = options.batchNorm ?? true ? this.registerModule('bn', new BatchNorm2d(outChannels)) : null;
  }

  /**
   * An adder layer inheriting a float Conv2d's weights (the progressive-pretrain start): the
   * filters are copied as they are (an L1 template is not equivalent to a correlation filter; the
   * copy is a starting point for fine-tuning), the bias is dropped (BN's shift replaces it).
   */
  static fromConv2d(layer: Conv2d, options: Omit<AdderOptions, 'rng'> = {}): AdderConv2d {
    if (layer.groups !== 1 || layer.dilation.some((d) => d !== 1)) throw new Error('AdderConv2d.fromConv2d: groups and dilation must be 1');
    const out = new AdderConv2d(layer.inChannels, layer.outChannels, layer.kernelSize, { ...options, stride: layer.stride, padding: layer.padding });
    out.weight.data.set(layer.weight.data);
    return out;
  }

  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.inChannels) throw new Error(`AdderConv2d(${this.inChannels}, ${this.outChannels}): expected input [N, ${this.inChannels}, H, W], got [${x.shape.join(', ')}]`);
    const y = adderConv2d(x, this.weight, { stride: this.stride, padding: this.padding, adaptiveEta: this.adaptiveEta });
    return this.bn ? this.bn.forward(y) : y;
  }

  override extraRepr(): string {
    return `${this.inChannels}, ${this.outChannels}, kernelSize=${this.kernelSize.join('x')}, eta=${this.adaptiveEta}`;
  }
}

/** Adder fully connected layer y = −Σ_k |x_k − w_k| followed by BatchNorm1d. */
export class AdderLinear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly adaptiveEta: number;
  readonly weight: Tensor;
  readonly bn: BatchNorm1d | null;

  constructor(inFeatures: number, outFeatures: number, options: AdderOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.adaptiveEta = checkEta('AdderLinear', options.adaptiveEta ?? DEFAULT_ADAPTIVE_ETA);
    this.weight = this.registerParameter('weight', zeros([outFeatures, inFeatures]));
    normal(this.weight, 0, 1, options.rng);
    this.bn = options.batchNorm ?? true ? this.registerModule('bn', new BatchNorm1d(outFeatures)) : null;
  }

  /** An adder layer inheriting a float Linear's weights (see AdderConv2d.fromConv2d). */
  static fromLinear(layer: Linear, options: Omit<AdderOptions, 'rng'> = {}): AdderLinear {
    const out = new AdderLinear(layer.inFeatures, layer.outFeatures, options);
    out.weight.data.set(layer.weight.data);
    return out;
  }

  forward(x: Tensor): Tensor {
    if (x.rank !== 2 || x.shape[1] !== this.inFeatures) throw new Error(`AdderLinear(${this.inFeatures}, ${this.outFeatures}): expected input [N, ${this.inFeatures}], got [${x.shape.join(', ')}]`);
    const y = adderLinear(x, this.weight, { adaptiveEta: this.adaptiveEta });
    return this.bn ? this.bn.forward(y) : y;
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, eta=${this.adaptiveEta}`;
  }
}
