import { noGrad } from '../../autograd/engine.ts';
import { add, cast, mul, reshape, sub } from '../../tensor/ops.ts';
import { full, zeros } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { Rng } from '../../tensor/random.ts';
import type { QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { LsqQuantizer } from './lsq.ts';
import { booleanOption, constant, numberOption, progressOf } from './common.ts';

/**
 * Quantization-error-aware noise with a learned task-gradient scale, after "Error-aware
 * Quantization through Noise Tempering" (Wang, Li, Qu, Metze, Strubell, 2022): exponentially
 * decaying noise shaped by each element's own quantization error, plus a learnable scale of the
 * task-loss gradient. The abstract fixes those ingredients, not every detail; this is the
 * formulation implemented here.
 *
 * Q_s is the LSQ quantizer (learned step s, same init, ranges and gradient scaling g as 'lsq').
 * With e = Q_s(x) − x the quantization error (no gradient), u ~ U[0, 1) per element (seeded),
 * p ∈ [0, 1] the training progress (`setProgress`) and the normalised exponential decay
 *   λ(p) = (exp(−p/τ) − exp(−1/τ)) / (1 − exp(−1/τ))   (λ(0) = 1, λ(1) = 0; τ = `tau`, default 0.2),
 * the training forward is
 *   y = Q_s(x) − λ(p)·(1 − u)·e  =  x + (1 − λ(p)·(1 − u))·e,
 * i.e. x moved a random fraction of the way to its quantized value, within its own bin: at the
 * start a uniform fraction (error-aware noise), at the end exactly Q_s(x) (pure quantization).
 * Eval forward: y = Q_s(x). Gradients (training), with γ the learned task-gradient scale
 * (parameter "gradScale", init 1, one per quantizer):
 *   ∂y/∂x = γ·1{x inside the range}      (clipped STE, scaled by γ)
 *   ∂y/∂s = γ·g·(round(x/s) − x/s) inside, γ·g·q outside   (LSQ, scaled by γ)
 *   ∂y/∂γ = Q_s(x)                        (γ learns from the task loss as a gain on the output)
 * implemented as y = sg(value) + (γ·Q_s(x) − sg(γ·Q_s(x))): forward exactly `value`.
 * `learnGradScale: false` freezes γ at 1 (then the gradients are LSQ's).
 * Export: the affine LSQ parameters (eval forward is exactly Q_s).
 * Spec options: as 'lsq', plus tau, seed, learnGradScale.
 */
export class NoiseQuantizer extends LsqQuantizer {
  readonly gradScaleParam: Tensor;
  readonly progress: Tensor;
  readonly tau: number;
  private readonly rng: Rng;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    super(spec, context);
    this.tau = numberOption(spec, 'tau', 0.2);
    if (!(this.tau > 0)) throw new Error(`quantizer 'noise': tau must be positive, got ${this.tau}`);
    this.gradScaleParam = this.registerParameter('gradScale', full([1], 1));
    if (!booleanOption(spec, 'learnGradScale', true)) this.gradScaleParam.requiresGrad_(false);
    this.progress = this.registerBuffer('progress', zeros([1]));
    this.rng = new Rng(numberOption(spec, 'seed', 0));
  }

  /** Noise amplitude λ(p) at the current progress. */
  noiseLevel(): number {
    const p = this.progress.data[0]!;
    const end = Math.exp(-1 / this.tau);
    return Math.max(0, (Math.exp(-p / this.tau) - end) / (1 - end));
  }

  override setProgress(epoch: number, totalEpochs: number): void {
    this.progress.data[0] = progressOf(epoch, totalEpochs);
  }

  protected override quantize(x: Tensor): Tensor {
    const q = super.quantize(x);
    if (!this.training) return q;
    const lambda = this.noiseLevel();
    const value = noGrad(() => {
      const out = new Float64Array(x.size);
      for (let i = 0; i < x.size; i++) {
        const e = q.data[i]! - x.data[i]!;
        out[i] = lambda === 0 ? q.data[i]! : q.data[i]! - lambda * (1 - this.rng.uniform()) * e;
      }
      return constant(out, x.shape, x.dtype);
    });
    const gamma = reshape(cast(this.gradScaleParam, x.dtype), []);
    const scaled = mul(q, gamma);
    if (!scaled.requiresGrad) return value;
    return add(value, sub(scaled, scaled.detach()));
  }
}

export function createNoiseQuantizer(spec: QuantizerSpec, context: QuantizerContext): NoiseQuantizer {
  return new NoiseQuantizer(spec, context);
}
