/**
 * Bernoulli unit gates: the variational posterior q(ξ_i) = Bernoulli(θ_i) of a 0/1 variable that
 * multiplies unit i of a Linear layer (output feature i) or filter i of a Conv2d layer (output
 * channel i), its relaxation for gradients, and the KL terms of the ELBO. Method of Guenter &
 * Sideris, "Robust Learning of Parsimonious Deep Neural Networks" (arXiv 2205.04650); the exact
 * formulas used here are written out in docs/pruning.md.
 */
import { noGrad } from '../../autograd/engine.ts';
import { Tensor, add, div, log, mul, reshape, sigmoid, sub, sum, square, globalRng, type Rng } from '../../tensor/index.ts';
import { typedArrayFor } from '../../backend/primitives.ts';
import { Module, type TensorModule } from '../module.ts';
import { Linear } from '../linear.ts';
import { Conv2d } from '../conv.ts';

/** θ is mapped to ε + (1 − 2ε)·θ before its logit, so θ = 0 or 1 stays finite and differentiable. */
export const THETA_EPS = 1e-6;

/**
 * Relaxed Bernoulli (binary Concrete, Maddison et al. 2017) sample of gates with probabilities
 * `theta` [U], for the uniform noise `u` (same shape as the result, values in (0, 1)):
 *
 *   z = σ((logit(θ') + logit(u)) / τ),   θ' = ε + (1 − 2ε)·θ,   logit(p) = log p − log(1 − p).
 *
 * As τ → 0, z → 1[θ' > 1 − u], an exact Bernoulli(θ') sample; for τ > 0 z is differentiable in θ:
 * ∂z/∂θ = z(1 − z)/τ · (1 − 2ε)/(θ'(1 − θ')). `shape` is how θ broadcasts against the batch:
 * [1, U] for Linear outputs [B, U], [1, U, 1, 1] for conv outputs [B, U, H, W].
 */
export function relaxedBernoulli(theta: Tensor, u: Tensor, temperature: number, shape: readonly number[]): Tensor {
  const t = add(mul(theta, 1 - 2 * THETA_EPS), THETA_EPS);
  const logit = reshape(sub(log(t), log(sub(1, t))), shape);
  const noise = noGrad(() => sub(log(u), log(sub(1, u))));
  return sigmoid(div(add(logit, noise), temperature));
}

/**
 * KL(Bernoulli(θ) ‖ Bernoulli(λ)) = θ log(θ/λ) + (1 − θ) log((1 − θ)/(1 − λ)), elementwise, with
 * 0·log 0 = 0 (θ is mapped as in `relaxedBernoulli` inside the logs, so θ = 0 or 1 is finite).
 */
export function bernoulliKl(theta: Tensor, lambda: number): Tensor {
  if (!(lambda > 0 && lambda < 1)) throw new Error(`bernoulliKl: lambda must be in (0, 1), got ${lambda}`);
  const t = add(mul(theta, 1 - 2 * THETA_EPS), THETA_EPS);
  const one = sub(1, t);
  return add(mul(t, sub(log(t), Math.log(lambda))), mul(one, sub(log(one), Math.log(1 - lambda))));
}

/**
 * KL(N(μ, s²·I_n) ‖ N(0, σ²·I_n)) = ‖μ‖²/(2σ²) + (n/2)·(s²/σ² − 1 + log(σ²/s²)) for each row of
 * `rowSquares` (‖μ_i‖², a tensor [U]) with `n` entries: the price in nats of keeping one unit whose
 * incoming weights (and bias) are μ_i, under the slab N(0, σ²) of the Gaussian scale-mixture prior
 * and the posterior width s.
 */
export function gaussianKl(rowSquares: Tensor, n: number, sigma2: number, s2: number): Tensor {
  const constant = (n / 2) * (s2 / sigma2 - 1 + Math.log(sigma2 / s2));
  return add(div(rowSquares, 2 * sigma2), constant);
}

/** A layer whose output units can be gated: a plain Linear or Conv2d (groups 1). */
export type GateableLayer = Linear | Conv2d;

/** A message naming the first θ that is NaN or outside [0, 1], or null. */
function outsideUnitInterval(theta: Tensor): string | null {
  for (let i = 0; i < theta.size; i++) {
    const v = theta.data[i]!;
    if (!(v >= 0 && v <= 1)) return `theta[${i}] = ${v} is not a probability in [0, 1]`;
  }
  return null;
}

/**
 * `layer` (Linear or Conv2d) with a Bernoulli gate on each output unit / filter: output unit i is
 * multiplied by ξ_i. Its own parameter `theta` [U] holds the posterior probabilities θ_i = q(ξ_i = 1).
 *
 * - training: ξ_i is the relaxed sample of `relaxedBernoulli` (fresh noise per sample and unit);
 * - eval: ξ_i = 1[θ_i ≥ 0.5] (the posterior mode), the deterministic network, so a unit with
 *   θ_i < 0.5 contributes exactly 0 and can be removed without changing the function.
 *
 * The gate multiplies the layer's output (before its activation); for the ReLU / max-pooling
 * chains pruning accepts (positively homogeneous, f(0) = 0) this equals gating the unit's output.
 */
export class GatedUnits extends Module implements TensorModule {
  readonly layer: GateableLayer;
  readonly theta: Tensor;
  /** Temperature τ of the relaxation. */
  readonly temperature: number;
  /** Generator of the gate noise (default the global one, so `manualSeed` makes runs repeatable). */
  rng: Rng;

  constructor(layer: GateableLayer, options: { theta?: Tensor; initialTheta?: number; temperature?: number; rng?: Rng } = {}) {
    super();
    if (!(layer instanceof Linear || layer instanceof Conv2d)) throw new Error('GatedUnits: the layer must be a Linear or Conv2d');
    if (layer instanceof Conv2d && layer.groups !== 1) throw new Error(`GatedUnits: grouped convolutions (groups ${layer.groups}) cannot be gated`);
    const units = unitsOf(layer);
    const temperature = options.temperature ?? 0.5;
    if (!(Number.isFinite(temperature) && temperature > 0)) throw new Error(`GatedUnits: temperature must be > 0, got ${temperature}`);
    this.temperature = temperature;
    this.rng = options.rng ?? globalRng;
    this.layer = this.registerModule('layer', layer);
    let theta = options.theta;
    if (theta) {
      if (theta.rank !== 1 || theta.shape[0] !== units) throw new Error(`GatedUnits: theta has shape [${theta.shape.join(', ')}], the layer has ${units} units`);
      const bad = outsideUnitInterval(theta);
      if (bad) throw new Error(`GatedUnits: ${bad}`);
    } else {
      const initial = options.initialTheta ?? 1;
      if (!(initial >= 0 && initial <= 1)) throw new Error(`GatedUnits: initialTheta must be in [0, 1], got ${initial}`);
      const data = typedArrayFor(layer.weight.dtype, units).fill(initial);
      theta = new Tensor(data, [units]);
    }
    this.theta = this.registerParameter('theta', theta);
  }

  /** Refuses a loaded θ that is NaN or outside [0, 1] (θ_i is the posterior probability of unit i). */
  protected override checkLoadedState(incoming: ReadonlyMap<string, Tensor>): string[] {
    const theta = incoming.get('theta');
    const bad = theta ? outsideUnitInterval(theta) : null;
    return bad ? [bad] : [];
  }

  /** Number of gated units (output features or channels). */
  get units(): number {
    return this.theta.shape[0]!;
  }

  /** Deterministic gates 1[θ_i ≥ 0.5] as a tensor [U] in the layer's dtype. */
  hardGates(): Tensor {
    const out = typedArrayFor(this.theta.dtype, this.units);
    for (let i = 0; i < out.length; i++) out[i] = this.theta.data[i]! >= 0.5 ? 1 : 0;
    return new Tensor(out, [this.units]);
  }

  forward(x: Tensor): Tensor {
    const y = this.layer.forward(x);
    const shape = y.rank === 4 ? [1, this.units, 1, 1] : [...Array<number>(y.rank - 1).fill(1), this.units];
    if (!this.training) return mul(y, reshape(this.hardGates(), shape));
    const noiseShape = y.rank === 4 ? [y.shape[0]!, this.units, 1, 1] : [...y.shape.slice(0, -1), this.units];
    const u = typedArrayFor(this.theta.dtype, noiseShape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < u.length; i++) {
      let v = this.rng.uniform();
      while (v <= 0 || v >= 1) v = this.rng.uniform();
      u[i] = v;
    }
    return mul(y, relaxedBernoulli(this.theta, new Tensor(u, noiseShape), this.temperature, shape));
  }

  /**
   * ‖w_i‖² + b_i² of every unit's incoming weights (row i of a Linear, filter i of a Conv2d), [U],
   * differentiable in the weights.
   */
  rowSquares(): Tensor {
    const w = this.layer.weight;
    const rows = sum(square(reshape(w, [w.shape[0]!, w.size / w.shape[0]!])), 1);
    return this.layer.bias ? add(rows, square(this.layer.bias)) : rows;
  }

  /** Entries per unit counted by `rowSquares` (fan-in, plus 1 with a bias). */
  get entriesPerUnit(): number {
    const w = this.layer.weight;
    return w.size / w.shape[0]! + (this.layer.bias ? 1 : 0);
  }

  override extraRepr(): string {
    return `units=${this.units}, temperature=${this.temperature}`;
  }
}

/** Output units of a gateable layer. */
export function unitsOf(layer: GateableLayer): number {
  return layer instanceof Linear ? layer.outFeatures : layer.outChannels;
}
