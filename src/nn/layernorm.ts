import { add, div, layerNorm, mean, mul, ones, sqrt, sub, zeros, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';
import { fusedTransformerLayers } from './fused-layers.ts';

export interface LayerNormOptions {
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
  /** Learn a per-element `weight` (ones) and `bias` (zeros) of shape normalizedShape (default true). */
  elementwiseAffine?: boolean;
  /** With elementwiseAffine, also learn the bias (default true). */
  bias?: boolean;
}

/**
 * Normalises over the trailing dims `normalizedShape`: y = (x − E[x]) / √(Var[x] + eps)·w + b,
 * with the biased variance, per sample (no running statistics). With both weight and bias it runs as
 * one `layerNorm` primitive (a fused native kernel, forward and backward); without, as tensor ops.
 */
export class LayerNorm extends Module {
  readonly normalizedShape: readonly number[];
  readonly eps: number;
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;

  constructor(normalizedShape: number | readonly number[], options: LayerNormOptions = {}) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.eps = options.eps ?? 1e-5;
    const affine = options.elementwiseAffine ?? true;
    this.weight = affine ? this.registerParameter('weight', ones(this.normalizedShape)) : null;
    this.bias = affine && (options.bias ?? true) ? this.registerParameter('bias', zeros(this.normalizedShape)) : null;
  }

  forward(x: Tensor): Tensor {
    const k = this.normalizedShape.length;
    const tail = x.shape.slice(x.rank - k);
    if (x.rank < k || tail.some((d, i) => d !== this.normalizedShape[i])) {
      throw new Error(`LayerNorm([${this.normalizedShape.join(', ')}]): input [${x.shape.join(', ')}] does not end with the normalized shape`);
    }
    if (this.weight && this.bias && x.dtype === this.weight.dtype && fusedTransformerLayers()) return layerNorm(x, this.weight, this.bias, this.eps);
    const axes = tail.map((_, i) => x.rank - k + i);
    const centered = sub(x, mean(x, axes, true));
    const variance = mean(mul(centered, centered), axes, true);
    let y = div(centered, sqrt(add(variance, this.eps)));
    if (this.weight) y = mul(y, this.weight);
    if (this.bias) y = add(y, this.bias);
    return y;
  }

  override extraRepr(): string {
    return `[${this.normalizedShape.join(', ')}], eps=${this.eps}, elementwiseAffine=${this.weight !== null}`;
  }
}
