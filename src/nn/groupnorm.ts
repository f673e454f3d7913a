import { add, div, mean, mul, ones, reshape, sqrt, sub, zeros, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';
import type { FloatDType } from './rnn.ts';

export interface GroupNormOptions {
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
  /** Learn a per-channel `weight` (ones) and `bias` (zeros) of shape [numChannels] (default true). */
  affine?: boolean;
  /** Parameter dtype (default float32; float64 runs on the reference backend, for gradient checks). */
  dtype?: FloatDType;
}

/**
 * Group normalisation (Wu & He, 2018) with PyTorch's semantics: the channels of an [N, C, *]
 * input are split into `numGroups` consecutive groups, and each sample's group is normalised
 * over its channels and all spatial positions, y = (x − E[x]) / √(Var[x] + eps) (biased
 * variance), then scaled and shifted per channel: y·weight[c] + bias[c]. The same in training
 * and eval (no running statistics). numGroups = numChannels is InstanceNorm (with affine);
 * numGroups = 1 is LayerNorm over (C, *) with per-channel instead of per-element affine.
 */
export class GroupNorm extends Module {
  readonly numGroups: number;
  readonly numChannels: number;
  readonly eps: number;
  readonly affine: boolean;
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;

  constructor(numGroups: number, numChannels: number, options: GroupNormOptions = {}) {
    super();
    for (const [name, n] of [['numGroups', numGroups], ['numChannels', numChannels]] as const) {
      if (!(Number.isInteger(n) && n >= 1)) throw new Error(`GroupNorm: ${name} must be a positive integer, got ${n}`);
    }
    if (numChannels % numGroups !== 0) throw new Error(`GroupNorm: numChannels ${numChannels} must be divisible by numGroups ${numGroups}`);
    const eps = options.eps ?? 1e-5;
    if (!(Number.isFinite(eps) && eps >= 0)) throw new Error(`GroupNorm: eps must be a finite number >= 0, got ${eps}`);
    this.numGroups = numGroups;
    this.numChannels = numChannels;
    this.eps = eps;
    this.affine = options.affine ?? true;
    this.weight = this.affine ? this.registerParameter('weight', ones([numChannels], options.dtype)) : null;
    this.bias = this.affine ? this.registerParameter('bias', zeros([numChannels], options.dtype)) : null;
  }

  /** x [N, numChannels, *] -> the same shape. */
  forward(x: Tensor): Tensor {
    if (x.rank < 2 || x.shape[1] !== this.numChannels) {
      throw new Error(`GroupNorm(${this.numGroups}, ${this.numChannels}): expected input [N, ${this.numChannels}, *], got [${x.shape.join(', ')}]`);
    }
    const n = x.shape[0]!;
    const perGroup = x.shape.slice(1).reduce((a, d) => a * d, 1) / this.numGroups;
    const grouped = reshape(x, [n, this.numGroups, perGroup]);
    const centered = sub(grouped, mean(grouped, 2, true));
    const variance = mean(mul(centered, centered), 2, true);
    let y = reshape(div(centered, sqrt(add(variance, this.eps))), x.shape);
    if (this.weight && this.bias) {
      const view = x.shape.map((d, i) => (i === 1 ? d : 1));
      y = add(mul(y, reshape(this.weight, view)), reshape(this.bias, view));
    }
    return y;
  }

  override extraRepr(): string {
    return `${this.numGroups}, ${this.numChannels}, eps=${this.eps}, affine=${this.affine}`;
  }
}
