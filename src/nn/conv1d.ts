import { conv2d, conv2dAttrs, reshape, zeros, type Rng, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';
import type { FloatDType } from './rnn.ts';
import { defaultLayerInit } from './init.ts';

export interface Conv1dLayerOptions {
  /** Step along the length (default 1). */
  stride?: number;
  /** Zero padding on both ends of the length (default 0). */
  padding?: number;
  /** Spacing of the kernel taps (default 1). */
  dilation?: number;
  /** Channel groups: inChannels and outChannels must both divide by it (default 1). */
  groups?: number;
  /** Add a learned bias (default true). */
  bias?: boolean;
  rng?: Rng;
  /** Parameter dtype (default float32; float64 runs on the reference backend, for gradient checks). */
  dtype?: FloatDType;
}

/**
 * 1-D convolution over [N, C, L] input with weight [outChannels, inChannels/groups, kernelSize]
 * and bias [outChannels] (PyTorch's names and shapes, so its state dicts load as they are):
 * y[n, o, t] = b[o] + Σ_{c in o's group, j} w[o, c, j]·x[n, c, t·stride + j·dilation − padding].
 * Computed by the conv2d op with height 1 (input [N, C, 1, L], weight [O, C/g, 1, k]), so it
 * has conv2d's kernels and gradients on every backend. Initialised as PyTorch: kaiming_uniform
 * (a = √5) weights and U(±1/√fanIn) bias, fanIn = inChannels/groups·kernelSize.
 *
 * Quantization (`quant.prepareQat`, `quant.ptq.calibrate`, `runtime.convert`, ONNX export) handles
 * it as a Conv2d on height 1: QuantConv1d / QuantConvBn1d (see docs/guide.md, "Quantizing a Conv1d net").
 */
export class Conv1d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: number;
  readonly stride: number;
  readonly padding: number;
  readonly dilation: number;
  readonly groups: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(inChannels: number, outChannels: number, kernelSize: number, options: Conv1dLayerOptions = {}) {
    super();
    // conv2d's own checks on the length axis (the height axis is fixed at stride 1, no padding).
    const attrs = conv2dAttrs({ stride: [1, options.stride ?? 1], padding: [0, options.padding ?? 0], dilation: [1, options.dilation ?? 1], groups: options.groups }, 'Conv1d');
    for (const [name, n] of [['inChannels', inChannels], ['outChannels', outChannels], ['kernelSize', kernelSize]] as const) {
      if (!(Number.isInteger(n) && n >= 1)) throw new Error(`Conv1d: ${name} must be a positive integer, got ${n}`);
    }
    if (inChannels % attrs.groups !== 0 || outChannels % attrs.groups !== 0) {
      throw new Error(`Conv1d: inChannels ${inChannels} and outChannels ${outChannels} must be divisible by groups ${attrs.groups}`);
    }
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = kernelSize;
    this.stride = attrs.stride[1];
    this.padding = attrs.padding[1];
    this.dilation = attrs.dilation[1];
    this.groups = attrs.groups;
    this.weight = this.registerParameter('weight', zeros([outChannels, inChannels / this.groups, kernelSize], options.dtype));
    this.bias = options.bias ?? true ? this.registerParameter('bias', zeros([outChannels], options.dtype)) : null;
    this.resetParameters(options.rng);
  }

  /** Re-draws the weights with the default initialisation. */
  resetParameters(rng?: Rng): void {
    defaultLayerInit(this.weight, this.bias, rng);
  }

  /** Output length for an input of length `length` (PyTorch's formula). */
  outputLength(length: number): number {
    return Math.floor((length + 2 * this.padding - this.dilation * (this.kernelSize - 1) - 1) / this.stride) + 1;
  }

  /** x [N, inChannels, L] -> [N, outChannels, outputLength(L)]. */
  forward(x: Tensor): Tensor {
    if (x.rank !== 3 || x.shape[1] !== this.inChannels) {
      throw new Error(`Conv1d(${this.inChannels}, ${this.outChannels}): expected input [N, ${this.inChannels}, L], got [${x.shape.join(', ')}]`);
    }
    const [n, c, length] = x.shape as [number, number, number];
    if (this.outputLength(length) < 1) {
      throw new Error(`Conv1d: kernel ${this.kernelSize} (dilation ${this.dilation}) does not fit input length ${length} with padding ${this.padding}`);
    }
    const w = reshape(this.weight, [this.outChannels, this.inChannels / this.groups, 1, this.kernelSize]);
    const y = conv2d(reshape(x, [n, c, 1, length]), w, this.bias, {
      stride: [1, this.stride],
      padding: [0, this.padding],
      dilation: [1, this.dilation],
      groups: this.groups,
    });
    return reshape(y, [n, this.outChannels, y.shape[3]!]);
  }

  override extraRepr(): string {
    const parts = [`${this.inChannels}, ${this.outChannels}`, `kernelSize=${this.kernelSize}`];
    if (this.stride !== 1) parts.push(`stride=${this.stride}`);
    if (this.padding !== 0) parts.push(`padding=${this.padding}`);
    if (this.dilation !== 1) parts.push(`dilation=${this.dilation}`);
    if (this.groups !== 1) parts.push(`groups=${this.groups}`);
    if (!this.bias) parts.push('bias=false');
    return parts.join(', ');
  }
}
