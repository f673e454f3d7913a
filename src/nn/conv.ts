import { conv2d, conv2dAttrs, zeros, type Rng, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';
import { defaultLayerInit } from './init.ts';

/** A size given once for both spatial dimensions, or as [height, width]. */
export type Pair = number | readonly [number, number];

export interface Conv2dLayerOptions {
  stride?: Pair;
  /** Zero padding on both sides of each spatial dim (default 0). */
  padding?: Pair;
  dilation?: Pair;
  /** Channel groups: inChannels and outChannels must both divide by it (default 1). */
  groups?: number;
  /** Add a learned bias (default true). */
  bias?: boolean;
  rng?: Rng;
}

/** `v` as [height, width] (`fallback` for both when absent). @internal */
export function pair(v: Pair | undefined, fallback: number): [number, number] {
  if (v === undefined) return [fallback, fallback];
  return typeof v === 'number' ? [v, v] : [v[0], v[1]];
}

/**
 * 2-D convolution over NCHW input with weight [outChannels, inChannels/groups, kh, kw] (OIHW).
 * Initialised as PyTorch: kaiming_uniform(a = √5) weights and U(±1/√fanIn) bias.
 */
export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(inChannels: number, outChannels: number, kernelSize: Pair, options: Conv2dLayerOptions = {}) {
    super();
    // The op layer's checks (stride, padding, dilation, groups), so the layer and conv2d agree.
    const attrs = conv2dAttrs(options, 'Conv2d');
    const groups = attrs.groups;
    for (const [name, n] of [['inChannels', inChannels], ['outChannels', outChannels]] as const) {
      if (!(Number.isInteger(n) && n >= 1)) throw new Error(`Conv2d: ${name} must be a positive integer, got ${n}`);
    }
    if (inChannels % groups !== 0 || outChannels % groups !== 0) {
      throw new Error(`Conv2d: inChannels ${inChannels} and outChannels ${outChannels} must be divisible by groups ${groups}`);
    }
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = pair(kernelSize, 1);
    if (!this.kernelSize.every((k) => Number.isInteger(k) && k >= 1)) throw new Error(`Conv2d: kernelSize must be positive integers, got ${this.kernelSize.join('x')}`);
    this.stride = [...attrs.stride];
    this.padding = [...attrs.padding];
    this.dilation = [...attrs.dilation];
    this.groups = groups;
    const [kh, kw] = this.kernelSize;
    this.weight = this.registerParameter('weight', zeros([outChannels, inChannels / groups, kh, kw]));
    this.bias = options.bias ?? true ? this.registerParameter('bias', zeros([outChannels])) : null;
    this.resetParameters(options.rng);
  }

  /** Re-draws the weights with the default initialisation. */
  resetParameters(rng?: Rng): void {
    defaultLayerInit(this.weight, this.bias, rng);
  }

  /** x [N, inChannels, H, W] -> [N, outChannels, OH, OW]. */
  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.inChannels) {
      throw new Error(`Conv2d(${this.inChannels}, ${this.outChannels}): expected input [N, ${this.inChannels}, H, W], got [${x.shape.join(', ')}]`);
    }
    return conv2d(x, this.weight, this.bias, {
      stride: this.stride,
      padding: this.padding,
      dilation: this.dilation,
      groups: this.groups,
    });
  }

  override extraRepr(): string {
    const parts = [`${this.inChannels}, ${this.outChannels}`, `kernelSize=${this.kernelSize.join('x')}`];
    if (this.stride.some((s) => s !== 1)) parts.push(`stride=${this.stride.join('x')}`);
    if (this.padding.some((p) => p !== 0)) parts.push(`padding=${this.padding.join('x')}`);
    if (this.dilation.some((d) => d !== 1)) parts.push(`dilation=${this.dilation.join('x')}`);
    if (this.groups !== 1) parts.push(`groups=${this.groups}`);
    if (!this.bias) parts.push('bias=false');
    return parts.join(', ');
  }
}
