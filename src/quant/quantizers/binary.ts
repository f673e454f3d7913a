import { noGrad } from '../../autograd/engine.ts';
import { abs, mean, mul } from '../../tensor/ops.ts';
import { full } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { signSte } from '../core/quantize.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, booleanOption, choiceOption, reduceAxes, resolveFormat } from './common.ts';

/** Gradient estimators of sign(x) available to 'binary'. */
export type SignGradient = 'ste' | 'clipped' | 'approxSign';

/**
 * Binarization y = α·sign(x) with sign(0) = +1 — BinaryConnect / BNN (Courbariaux, Hubara et al.
 * 2015–2016, "Quantized Neural Networks") and XNOR-Net's scaling (Rastegari et al. 2016).
 *
 * Weights: α = mean|w| per output channel ('channel', XNOR-Net) or per tensor ('tensor'), or
 * α = 1 with `scaled: false` (BinaryConnect). Activations: α = 1.
 * Gradient: ∂y_i/∂x_j = δ_ij·α·σ'(x_i) + sign(x_i)·sign(x_j)/n (the second term is the exact
 * derivative of α = mean|x| over the n elements of the channel; absent when α is fixed), with
 * the estimator σ' of sign chosen by `gradient`: 'clipped' (default, BinaryConnect/BNN:
 * 1{|x| ≤ 1}), 'ste' (1) or 'approxSign' (Bi-Real Net: max(0, 2 − 2|x|)).
 *
 * `magnitudeAware: true` (needs `scaled`) is Bi-Real Net's magnitude-aware weight gradient (Liu et
 * al. 2018, "Bi-Real Net", §3.3): α is a constant of the backward pass, so the gradient is
 * ∂y_i/∂x_j = δ_ij·α_c·σ'(x_i) — the sign estimator scaled by the channel's mean magnitude, without
 * the α cross term. With the default 'clipped' σ' it is α_c·1{|x_i| ≤ 1}, the paper's weight
 * gradient and Larq's `magnitude_aware_sign`.
 * Export: 'binary' with the per-channel (or tensor) α of the last forward.
 * Spec options: bits = 1, granularity, scaled, gradient, magnitudeAware.
 */
export class BinaryQuantizer extends BaseQuantizer {
  readonly gradient: SignGradient;
  readonly scaled: boolean;
  /** α is held constant in the backward pass (Bi-Real Net's magnitude-aware gradient). */
  readonly magnitudeAware: boolean;
  /** α of the last forward, [count]. */
  readonly alpha: Tensor;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { minBits: 1, maxBits: 1 });
    super(spec, format);
    this.gradient = choiceOption(spec, 'gradient', ['ste', 'clipped', 'approxSign'] as const, 'clipped');
    this.scaled = booleanOption(spec, 'scaled', context.role === 'weight');
    this.magnitudeAware = booleanOption(spec, 'magnitudeAware', false);
    if (this.magnitudeAware && !this.scaled) {
      throw new Error(`quantizer 'binary': option 'magnitudeAware' scales the gradient by α = mean|x|, so it needs scaled: true (got scaled: false${context.role === 'activation' ? ', the default for activations' : ''})`);
    }
    this.alpha = this.registerBuffer('alpha', full([format.count], 1));
  }

  protected quantize(x: Tensor): Tensor {
    const s = signSte(x, this.gradient);
    if (!this.scaled) return s;
    const axes = reduceAxes(x.rank, this.format.axis);
    // Magnitude-aware: α computed outside the tape, a constant factor of the gradient.
    const alpha = this.magnitudeAware ? noGrad(() => mean(abs(x), axes, true)) : mean(abs(x), axes, true);
    noGrad(() => this.alpha.data.set(alpha.data));
    return mul(s, alpha);
  }

  exportQuant(): ExportedQuant {
    return { type: 'binary', alpha: Float32Array.from(this.alpha.data), axis: this.format.axis };
  }
}

export function createBinaryQuantizer(spec: QuantizerSpec, context: QuantizerContext): BinaryQuantizer {
  return new BinaryQuantizer(spec, context);
}
