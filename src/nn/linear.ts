import { linear, zeros, type Rng, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';
import { defaultLayerInit } from './init.ts';

export interface LinearOptions {
  /** Add a learned bias (default true). */
  bias?: boolean;
  /** Generator for the initial weights (default: the global one). */
  rng?: Rng;
}

/**
 * Fully connected layer y = x·Wᵀ + b, with W [outFeatures, inFeatures] (PyTorch's layout) and
 * x [..., inFeatures]. Initialised as PyTorch: W ~ kaiming_uniform(a = √5), i.e.
 * U(±1/√inFeatures), and b ~ U(±1/√inFeatures).
 */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, options: LinearOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.weight = this.registerParameter('weight', zeros([outFeatures, inFeatures]));
    this.bias = options.bias ?? true ? this.registerParameter('bias', zeros([outFeatures])) : null;
    this.resetParameters(options.rng);
  }

  /** Re-draws the weights with the default initialisation. */
  resetParameters(rng?: Rng): void {
    defaultLayerInit(this.weight, this.bias, rng);
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new Error(`Linear(${this.inFeatures}, ${this.outFeatures}): input has shape [${x.shape.join(', ')}], last dim should be ${this.inFeatures}`);
    }
    return linear(x, this.weight, this.bias);
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}
