import { mul, tanh } from '../../tensor/ops.ts';
import { full } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { signSte } from '../core/quantize.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, booleanOption, broadcastParamShape, constant, meanAbsPerChannel, numberOption, resolveFormat } from './common.ts';

/**
 * Binarization by a smooth, annealed transform: the combinatorial choice of a binary weight
 * vector is replaced by a deterministic, differentiable function of real-valued parameters that
 * tends to sign(w) as training proceeds, optimized with plain SGD — the idea of the
 * "smoothing binary weights" abstract in the papers folder (Shulman, binary weighted networks).
 * The transform used here is the standard tanh relaxation with a growing inverse temperature β
 * (as in continuation/annealing methods); the paper's own transform is not reproduced.
 *
 * Training forward: y = α·tanh(β·w), α = mean|w| per output channel (or tensor; 1 for
 * activations or with `scaled: false`) held constant (no gradient). Gradient: the exact
 * derivative, ∂y/∂w = α·β·(1 − tanh²(β·w)).
 * β = beta0·betaGrowth^epoch (defaults 1 and 1.25, capped at betaMax = 1e4) via `setProgress`.
 * Eval forward and export: hard y = α·sign(w), sign(0) = +1 (clipped-STE gradient), 'binary'.
 * Spec options: bits = 1, granularity, scaled, beta0, betaGrowth, betaMax.
 */
export class SmoothBinaryQuantizer extends BaseQuantizer {
  readonly beta: Tensor;
  readonly alpha: Tensor;
  readonly beta0: number;
  readonly betaGrowth: number;
  readonly betaMax: number;
  readonly scaled: boolean;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { minBits: 1, maxBits: 1 });
    super(spec, format);
    this.beta0 = numberOption(spec, 'beta0', 1);
    this.betaGrowth = numberOption(spec, 'betaGrowth', 1.25);
    this.betaMax = numberOption(spec, 'betaMax', 1e4);
    if (!(this.beta0 > 0 && this.betaGrowth >= 1)) throw new Error(`quantizer 'smoothBinary': need beta0 > 0 and betaGrowth >= 1`);
    this.scaled = booleanOption(spec, 'scaled', context.role === 'weight');
    this.beta = this.registerBuffer('beta', full([1], this.beta0));
    this.alpha = this.registerBuffer('alpha', full([format.count], 1));
  }

  override setProgress(epoch: number, _totalEpochs: number): void {
    this.beta.data[0] = Math.min(this.betaMax, this.beta0 * this.betaGrowth ** epoch);
  }

  protected quantize(x: Tensor): Tensor {
    let alpha: Tensor | null = null;
    if (this.scaled) {
      const m = meanAbsPerChannel(x, this.format.axis);
      this.alpha.data.set(m);
      alpha = constant(m, broadcastParamShape(x.shape, this.format.axis), x.dtype);
    }
    const core = this.training ? tanh(mul(x, this.beta.data[0]!)) : signSte(x, 'clipped');
    return alpha ? mul(core, alpha) : core;
  }

  exportQuant(): ExportedQuant {
    return { type: 'binary', alpha: Float32Array.from(this.alpha.data), axis: this.scaled ? this.format.axis : null };
  }
}

export function createSmoothBinaryQuantizer(spec: QuantizerSpec, context: QuantizerContext): SmoothBinaryQuantizer {
  return new SmoothBinaryQuantizer(spec, context);
}
