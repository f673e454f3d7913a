import { noGrad } from '../../autograd/engine.ts';
import { abs, mean, mul } from '../../tensor/ops.ts';
import { full } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { adasteSign } from '../core/quantize.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, booleanOption, numberOption, reduceAxes, resolveFormat } from './common.ts';

/**
 * The relaxed inner solution of AdaSTE, w*(θ) = clamp((θ + μ(1+ρ)·sign θ)/(1+μ), −1, 1) with
 * sign(0) = +1: the minimizer over w ∈ [−1, 1] of ½(w − θ)² + (μ/2)(|w| − (1+ρ))², a quadratic
 * pull toward θ plus a double well with minima just outside ±1. Linear with slope 1/(1+μ) on
 * |θ| < 1 − μρ, ±1 beyond; for μρ ≥ 1 it is sign(θ) exactly. Float64, for tests and plots.
 */
export function adasteInnerSolution(theta: number, mu: number, relaxAlpha: number): number {
  const s = theta >= 0 ? 1 : -1;
  return Math.min(1, Math.max(-1, (theta + mu * (1 + relaxAlpha) * s) / (1 + mu)));
}

/**
 * AdaSTE's backward slope s(θ, g) (the gradient reaching θ is g·s), in float64: the closed form
 * the `signSte` 'adaste' rule computes with tensor ops (src/autograd/gradients.ts).
 */
export function adasteSlope(theta: number, g: number, mu: number, relaxAlpha: number, cap: number): number {
  const a = Math.abs(theta);
  const linear = a < 1 - mu * relaxAlpha ? 1 / (1 + mu) : 0;
  if (!(g * theta > 0)) return linear;
  const across = Math.min(1, (mu * (1 + relaxAlpha)) / (1 + mu));
  const finiteDifference = (Math.abs(adasteInnerSolution(theta, mu, relaxAlpha)) + across) / a;
  return Math.max(linear, Math.min(cap, finiteDifference));
}

/**
 * AdaSTE, an adaptive straight-through estimator for binary weights (Le, Høier, Lin, Zach,
 * CVPR 2022, "AdaSTE: An Adaptive Straight-Through Estimator to Train Binary Neural Networks").
 *
 * Forward (training and eval): y = α·sign(θ), sign(0) = +1, α = mean|θ| per output channel (or
 * tensor; 1 with `scaled: false`), α held constant in the backward pass.
 *
 * Backward. The paper casts binary training as a bilevel program, min_θ ℓ(w*(θ)) with w*(θ) the
 * solution of an inner problem, relaxes it, and estimates the gradient by a finite difference of
 * the inner solution along the loss gradient: ∂ℓ/∂θ ≈ (w*(θ) − w*(θ − β·ℓ'))/β, with the step β
 * chosen per weight. The inner problem here is the double-well one above (`adasteInnerSolution`),
 * so the gradient is ℓ'·s with
 * - s = 1/(1+μ) on |θ| < 1 − μρ and 0 beyond, when ℓ'·θ ≤ 0 (the update pushes θ away from the
 *   flip; β → 0 gives the derivative of w*): linear inside, zero in saturation;
 * - s = max(1/(1+μ)·1{|θ| < 1 − μρ}, min(cap, (|w*(θ)| + |w*(0⁻)|)/|θ|)), when ℓ'·θ > 0 (the update
 *   moves θ toward the flip): β = θ/ℓ' is the step that just reaches the other side of 0, so a
 *   saturated weight whose sign the loss wants changed still gets a gradient ("leaky").
 * Special cases: μ = 0 is the identity (plain STE) on |θ| < 1, made leaky (min(cap, 1/|θ|)) beyond
 * in the flipping direction; μρ ≥ 1 (the end of the schedule) is 0 for updates away from the
 * flip and min(cap, 2/|θ|) toward it.
 *
 * Schedule: μ = min(muMax, mu0·muGrowth^epoch) via `setProgress`. Defaults from the authors'
 * public code (github.com/intellhave/AdaSTE, their `beta` is μ and `alpha` is ρ): ρ = 0.01,
 * μ₀ = 0.01, growth 1.05, μ_max = 1/ρ + 100, boost cap 0.5; they grow μ every 500 iterations,
 * lowbit once per epoch (raise `muGrowth` for short runs). The paper's own text of the adaptive
 * step was not available here: the rule is derived from the abstract, Fig. 1's description and
 * the authors' code, and differs from that code in the saturated/linear boosted values (see
 * docs/adaste.md).
 * Export: 'binary' with the α of the last forward.
 * Spec options: bits = 1, granularity, scaled, relaxAlpha, mu0, muGrowth, muMax, cap.
 */
export class AdaSteQuantizer extends BaseQuantizer {
  readonly relaxAlpha: number;
  readonly mu0: number;
  readonly muGrowth: number;
  readonly muMax: number;
  readonly cap: number;
  readonly scaled: boolean;
  /** The current relaxation weight μ, [1]. */
  readonly mu: Tensor;
  /** α of the last forward, [count]. */
  readonly alpha: Tensor;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { minBits: 1, maxBits: 1 });
    super(spec, format);
    this.relaxAlpha = numberOption(spec, 'relaxAlpha', 0.01);
    this.mu0 = numberOption(spec, 'mu0', 0.01);
    this.muGrowth = numberOption(spec, 'muGrowth', 1.05);
    this.muMax = numberOption(spec, 'muMax', 1 / this.relaxAlpha + 100);
    this.cap = numberOption(spec, 'cap', 0.5);
    const bad = (name: string, value: number, need: string): never => {
      throw new Error(`quantizer 'adaste': option '${name}' must be ${need}, got ${value}`);
    };
    if (!(this.relaxAlpha > 0 && Number.isFinite(this.relaxAlpha))) bad('relaxAlpha', this.relaxAlpha, 'a finite number > 0');
    if (!(this.mu0 >= 0 && Number.isFinite(this.mu0))) bad('mu0', this.mu0, 'a finite number >= 0');
    if (!(this.muGrowth >= 1 && Number.isFinite(this.muGrowth))) bad('muGrowth', this.muGrowth, 'a finite number >= 1');
    if (!(this.muMax >= this.mu0 && Number.isFinite(this.muMax))) bad('muMax', this.muMax, `finite and >= mu0 (${this.mu0})`);
    if (!(this.cap > 0 && Number.isFinite(this.cap))) bad('cap', this.cap, 'a finite number > 0');
    this.scaled = booleanOption(spec, 'scaled', context.role === 'weight');
    this.mu = this.registerBuffer('mu', full([1], this.mu0));
    this.alpha = this.registerBuffer('alpha', full([format.count], 1));
  }

  override setProgress(epoch: number, _totalEpochs: number): void {
    this.mu.data[0] = Math.min(this.muMax, this.mu0 * this.muGrowth ** epoch);
  }

  /** The current μ (read back from its float32 buffer). */
  currentMu(): number {
    return this.mu.data[0]!;
  }

  protected quantize(x: Tensor): Tensor {
    const s = adasteSign(x, this.currentMu(), this.relaxAlpha, this.cap);
    if (!this.scaled) return s;
    const alpha = noGrad(() => mean(abs(x), reduceAxes(x.rank, this.format.axis), true));
    this.alpha.data.set(alpha.data);
    return mul(s, alpha);
  }

  exportQuant(): ExportedQuant {
    return { type: 'binary', alpha: Float32Array.from(this.alpha.data), axis: this.scaled ? this.format.axis : null };
  }
}

export function createAdaSteQuantizer(spec: QuantizerSpec, context: QuantizerContext): AdaSteQuantizer {
  return new AdaSteQuantizer(spec, context);
}
