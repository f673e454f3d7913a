/**
 * Simultaneous learning and pruning with variational Bernoulli unit gates (Guenter & Sideris,
 * arXiv 2205.04650): the ELBO's prior terms, the projected gradient step of the gate
 * probabilities, the closed-form hyper-prior updates, and the removal of units during training.
 */
import { noGrad } from '../../autograd/engine.ts';
import { add, crossEntropy, mul, sum, Tensor } from '../../tensor/index.ts';
import type { Optimizer, BaseHyper, ParamState, OptimizerStateDict } from '../../optim/optimizer.ts';
import type { Module, TensorModule } from '../module.ts';
import { bernoulliKl, gaussianKl, GatedUnits } from './gate.ts';
import { checkChain, keptUnits, layerChain, layerSizes, prunablePairs, PruneError, removeUnits, type LayerSize, type ParamReplacement } from './structure.ts';

/** Options of {@link VariationalPruner}. */
export interface VariationalPrunerOptions {
  /** N, the number of training samples: the prior terms enter the per-sample loss divided by N. */
  datasetSize: number;
  /** Shape of one input sample, e.g. [1, 28, 28] (checks the model and measures layer sizes). */
  inputShape: readonly number[];
  /** Layers to gate, by dotted path (default: every Linear / Conv2d except the output layer). */
  layers?: readonly string[];
  /** Initial gate probability θ (default 0.9). */
  initialTheta?: number;
  /** Temperature τ of the relaxed Bernoulli gates (default 0.2). */
  temperature?: number;
  /** Learning rate of the projected SGD step on θ (default 0.1). */
  thetaLr?: number;
  /**
   * s, the standard deviation of the posterior N(w, s²) of a kept unit's weights (default 0.02):
   * the precision a kept weight is paid for; smaller s makes each unit cost more (log σ²/s² nats per weight).
   */
  posteriorStd?: number;
  /**
   * σ² of the slab N(0, σ²) per layer: 'fanIn' (default) σ_l² = 1/n_l (n_l = weights + bias per
   * unit, the scale of the usual initialisations), a number for every layer, or 'learned': the
   * closed-form maximiser σ_l² = Σθ(‖w‖² + n s²)/(n Σθ) after every step (type-II MAP, flat hyper-prior;
   * see docs/pruning.md for why it is not the default).
   */
  priorVariance?: number | 'learned' | 'fanIn';
  /**
   * λ, the prior probability of a unit being on: a number in (0, 1) adds KL(Bern θ ‖ Bern λ);
   * 'learned' (default) sets λ_i = θ_i (maximum a posteriori under a flat hyper-prior), where that
   * KL and its gradient vanish and the objective is linear in each θ_i.
   */
  priorInclusion?: number | 'learned';
  /** Units with θ below this are removed during training (default 0.01). */
  pruneThreshold?: number;
  /** Check for prunable units every this many optimizer steps (default 50). */
  pruneEvery?: number;
}

/** One removal during training. */
export interface PruneEvent {
  /** Optimizer step (1-based, counted by the pruner) after which the units were removed. */
  readonly step: number;
  readonly layer: string;
  readonly before: number;
  readonly after: number;
}

function positive(name: string, v: number, max = Infinity): number {
  if (!(Number.isFinite(v) && v > 0 && v <= max)) throw new PruneError(`VariationalPruner: ${name} must be a number in (0, ${max}], got ${v}`);
  return v;
}

/**
 * Turns `model` (a Sequential-like chain of Linear / Conv2d / ReLU / pooling / Flatten layers,
 * e.g. `mlp()` or `lenet5()`) into a gated model and runs the pruning side of training:
 *
 * - `penalty()`: the prior part of the negative ELBO per sample,
 *   (1/N) Σ_units [θ_i·KL(N(w_i, s²) ‖ N(0, σ_l²)) + KL(Bern θ_i ‖ Bern λ)];
 * - `lossFn()`: cross-entropy + penalty, for `fit` (the data term is the expected NLL under the
 *   relaxed gates sampled in the forward pass);
 * - `wrap(optimizer)`: an optimizer for `fit` whose `step()` steps the weights, then θ by projected
 *   SGD onto [0, 1], updates σ² in closed form, and every `pruneEvery` steps removes units with
 *   θ < pruneThreshold (smaller layers, the next layer's inputs cut, weights and optimizer state
 *   inherited exactly).
 *
 * Create the weight optimizer over `weightParameters()` (θ is stepped by the pruner).
 */
export class VariationalPruner {
  readonly model: TensorModule;
  readonly datasetSize: number;
  readonly inputShape: readonly number[];
  readonly thetaLr: number;
  readonly posteriorStd: number;
  readonly priorVariance: number | 'learned' | 'fanIn';
  readonly priorInclusion: number | 'learned';
  readonly pruneThreshold: number;
  readonly pruneEvery: number;
  /** Current σ² per gated layer path. */
  readonly sigma2 = new Map<string, number>();
  /** Removals so far. */
  readonly events: PruneEvent[] = [];
  private steps = 0;

  constructor(model: TensorModule, options: VariationalPrunerOptions) {
    if (!Number.isInteger(options.datasetSize) || options.datasetSize < 1) throw new PruneError(`VariationalPruner: datasetSize must be a positive integer, got ${options.datasetSize}`);
    if (!Array.isArray(options.inputShape) || options.inputShape.length === 0 || !options.inputShape.every((d) => Number.isInteger(d) && d > 0)) {
      throw new PruneError(`VariationalPruner: inputShape must be positive integers, got [${String(options.inputShape)}]`);
    }
    this.model = model;
    this.datasetSize = options.datasetSize;
    this.inputShape = [...options.inputShape];
    this.thetaLr = positive('thetaLr', options.thetaLr ?? 0.1);
    this.posteriorStd = positive('posteriorStd', options.posteriorStd ?? 0.02);
    const pv = options.priorVariance ?? 'fanIn';
    this.priorVariance = pv === 'learned' || pv === 'fanIn' ? pv : positive('priorVariance', pv);
    const pi = options.priorInclusion ?? 'learned';
    if (pi !== 'learned' && !(pi > 0 && pi < 1)) throw new PruneError(`VariationalPruner: priorInclusion must be 'learned' or in (0, 1), got ${pi}`);
    this.priorInclusion = pi;
    this.pruneThreshold = positive('pruneThreshold', options.pruneThreshold ?? 0.01, 0.5);
    const every = options.pruneEvery ?? 50;
    if (!Number.isInteger(every) || every < 1) throw new PruneError(`VariationalPruner: pruneEvery must be a positive integer, got ${every}`);
    this.pruneEvery = every;
    const initialTheta = options.initialTheta ?? 0.9;
    if (!(initialTheta > 0 && initialTheta <= 1)) throw new PruneError(`VariationalPruner: initialTheta must be in (0, 1], got ${initialTheta}`);
    const temperature = positive('temperature', options.temperature ?? 0.2);

    checkChain(model, this.inputShape);
    const chain = layerChain(model);
    const pairs = prunablePairs(chain, options.layers);
    for (const pair of pairs) {
      const { path, module } = chain[pair.index]!;
      if (module instanceof GatedUnits) throw new PruneError(`layer '${path}' is already gated`);
      model.setSubmodule(path, new GatedUnits(module as GatedUnits['layer'], { initialTheta, temperature }));
    }
    this.updatePriorVariance();
  }

  /** The gated layers with their paths, in forward order. */
  gatedLayers(): { path: string; gated: GatedUnits }[] {
    return layerChain(this.model).flatMap(({ path, module }) => (module instanceof GatedUnits ? [{ path, gated: module }] : []));
  }

  /** Every parameter except the gate probabilities θ (what the weight optimizer should hold). */
  weightParameters(): Tensor[] {
    const thetas = new Set(this.gatedLayers().map((g) => g.gated.theta));
    return this.model.parameters().filter((p) => !thetas.has(p));
  }

  /** σ² of a gated layer (throws for an unknown path). */
  sigma2Of(path: string): number {
    if (typeof this.priorVariance === 'number') return this.priorVariance;
    if (this.priorVariance === 'fanIn') {
      const layer = this.gatedLayers().find((g) => g.path === path);
      if (!layer) throw new PruneError(`no gated layer '${path}'`);
      return 1 / layer.gated.entriesPerUnit;
    }
    const v = this.sigma2.get(path);
    if (v === undefined) throw new PruneError(`no gated layer '${path}'`);
    return v;
  }

  /**
   * The prior part of the negative ELBO per training sample (a scalar with gradients to the
   * weights and θ): (1/N) Σ_l Σ_i [θ_i (‖w_i‖²/(2σ_l²) + (n_l/2)(s²/σ_l² − 1 + log σ_l²/s²)) + KL(Bern θ_i ‖ Bern λ)],
   * the last term only with a fixed `priorInclusion`.
   */
  penalty(): Tensor {
    let total: Tensor | null = null;
    const s2 = this.posteriorStd ** 2;
    for (const { path, gated } of this.gatedLayers()) {
      const sigma2 = this.priorVariance === 'fanIn' ? 1 / gated.entriesPerUnit : this.sigma2Of(path);
      const kl = gaussianKl(gated.rowSquares(), gated.entriesPerUnit, sigma2, s2);
      let layerTerm = sum(mul(gated.theta, kl));
      if (this.priorInclusion !== 'learned') layerTerm = add(layerTerm, sum(bernoulliKl(gated.theta, this.priorInclusion)));
      total = total ? add(total, layerTerm) : layerTerm;
    }
    if (!total) throw new PruneError('no gated layers left');
    return mul(total, 1 / this.datasetSize);
  }

  /** Cross-entropy (or `base`) plus `penalty()`: the negative ELBO per sample, for `fit`. */
  lossFn(base: (logits: Tensor, targets: Tensor) => Tensor = crossEntropy): (logits: Tensor, targets: Tensor) => Tensor {
    return (logits, targets) => add(base(logits, targets), this.penalty());
  }

  /**
   * Closed-form σ_l² maximising the ELBO (flat hyper-prior): σ² = Σ_i θ_i (‖w_i‖² + n s²) / (n Σ_i θ_i).
   * No-op with a fixed `priorVariance`.
   */
  updatePriorVariance(): void {
    if (this.priorVariance !== 'learned') return;
    const s2 = this.posteriorStd ** 2;
    noGrad(() => {
      for (const { path, gated } of this.gatedLayers()) {
        const rows = gated.rowSquares().data;
        const n = gated.entriesPerUnit;
        let num = 0;
        let den = 0;
        gated.theta.data.forEach((t, i) => {
          num += t * (rows[i]! + n * s2);
          den += t * n;
        });
        this.sigma2.set(path, den > 0 ? num / den : s2);
      }
    });
  }

  /** Projected SGD on every θ: θ ← clip(θ − thetaLr·∂L/∂θ, 0, 1); θ without a gradient is left alone. */
  stepTheta(): void {
    for (const { gated } of this.gatedLayers()) {
      const g = gated.theta.grad;
      if (!g) continue;
      const t = gated.theta.data;
      for (let i = 0; i < t.length; i++) t[i] = Math.min(1, Math.max(0, t[i]! - this.thetaLr * g.data[i]!));
    }
  }

  /**
   * Removes, in every gated layer, the units with θ < pruneThreshold (always keeping at least the
   * unit with the largest θ), moving `optimizer`'s parameters and state to the smaller tensors.
   * Returns the number of units removed.
   */
  pruneNow(optimizer?: Optimizer<BaseHyper, ParamState>): number {
    let removed = 0;
    const replacements: ParamReplacement[] = [];
    for (;;) {
      const chain = layerChain(this.model);
      const pair = prunablePairs(chain).find((p) => {
        const m = chain[p.index]!.module;
        return m instanceof GatedUnits && m.theta.data.some((t) => t < this.pruneThreshold) && m.units > 1;
      });
      if (!pair) break;
      const { path } = chain[pair.index]!;
      const gated = chain[pair.index]!.module as GatedUnits;
      let keep = keptUnits(gated, this.pruneThreshold);
      if (keep.length === 0) keep = [gated.theta.data.indexOf(Math.max(...gated.theta.data))];
      if (keep.length === gated.units) break;
      replacements.push(...removeUnits(this.model, chain, pair, keep));
      this.events.push({ step: this.steps, layer: path, before: gated.units, after: keep.length });
      removed += gated.units - keep.length;
    }
    if (replacements.length > 0 && optimizer) moveOptimizerState(optimizer, replacements);
    if (replacements.length > 0) this.updatePriorVariance();
    return removed;
  }

  /**
   * An optimizer for `fit` over the gated model: `step()` = weight step, θ step, σ² update, and
   * every `pruneEvery` steps `pruneNow`; `zeroGrad()` clears θ's gradients too. `lr`, `paramGroups`
   * and `stateDict` are the weight optimizer's.
   */
  wrap(optimizer: Optimizer<BaseHyper, ParamState>): PruningOptimizer {
    const thetas = new Set(this.gatedLayers().map((g) => g.gated.theta));
    if (optimizer.paramGroups.some((g) => g.params.some((p) => thetas.has(p)))) {
      throw new PruneError('the weight optimizer holds gate probabilities θ: build it over pruner.weightParameters()');
    }
    return new PruningOptimizer(this, optimizer, () => {
      this.steps++;
      this.stepTheta();
      this.updatePriorVariance();
      if (this.steps % this.pruneEvery === 0) this.pruneNow(optimizer);
    });
  }

  /** Units per gated layer and sizes of every weight layer now. */
  sizes(): LayerSize[] {
    return layerSizes(this.model, this.inputShape);
  }

  /** Fraction of gate probabilities of each gated layer that are within `tol` of 0 or 1. */
  saturation(tol = 0.01): Map<string, number> {
    const out = new Map<string, number>();
    for (const { path, gated } of this.gatedLayers()) {
      const t = gated.theta.data;
      let n = 0;
      for (const v of t) if (v <= tol || v >= 1 - tol) n++;
      out.set(path, n / t.length);
    }
    return out;
  }
}

/** The optimizer `VariationalPruner.wrap` returns (see there). */
export class PruningOptimizer {
  constructor(
    private readonly pruner: VariationalPruner,
    readonly inner: Optimizer<BaseHyper, ParamState>,
    private readonly after: () => void,
  ) {}

  step(): void {
    this.inner.step();
    this.after();
  }

  zeroGrad(): void {
    this.inner.zeroGrad();
    for (const { gated } of this.pruner.gatedLayers()) gated.theta.grad = null;
  }

  get lr(): number {
    return this.inner.lr;
  }

  get paramGroups(): Optimizer<BaseHyper, ParamState>['paramGroups'] {
    return this.inner.paramGroups;
  }

  stateDict(): OptimizerStateDict {
    return this.inner.stateDict();
  }
}

/**
 * Puts `replacements[i].replacement` in place of `.old` in the optimizer's param groups and carries
 * each per-parameter state buffer over by the same gather (a buffer the size of the parameter);
 * scalar state (step counts) is kept. Parameters the optimizer does not hold are skipped.
 */
export function moveOptimizerState(optimizer: Optimizer<BaseHyper, ParamState>, replacements: readonly ParamReplacement[]): void {
  // Chained replacements (a tensor replaced twice in one pass) compose.
  const final = new Map<Tensor, { replacement: Tensor; gather: Int32Array }>();
  for (const r of replacements) {
    for (const [old, entry] of final) {
      if (entry.replacement === r.old) final.set(old, { replacement: r.replacement, gather: Int32Array.from(r.gather, (g) => entry.gather[g]!) });
    }
    if (![...final.values()].some((e) => e.replacement === r.replacement)) final.set(r.old, { replacement: r.replacement, gather: r.gather });
  }
  const saved = optimizer.stateDict();
  const flat = optimizer.paramGroups.flatMap((g) => g.params);
  const state: OptimizerStateDict['state'] = new Map();
  flat.forEach((p, index) => {
    const record = saved.state.get(index);
    const move = final.get(p);
    if (!record || !move) {
      if (record) state.set(index, record);
      return;
    }
    const next: Record<string, number | Tensor> = {};
    for (const [key, value] of Object.entries(record)) {
      if (typeof value === 'number' || value.size !== p.size) {
        next[key] = value;
        continue;
      }
      const data = value.data.constructor === Float64Array ? new Float64Array(move.gather.length) : new Float32Array(move.gather.length);
      for (let i = 0; i < data.length; i++) data[i] = value.data[move.gather[i]!]!;
      next[key] = new Tensor(data, move.replacement.shape);
    }
    state.set(index, next);
  });
  for (const group of optimizer.paramGroups) {
    group.params.forEach((p, j) => {
      const move = final.get(p);
      if (move) group.params[j] = move.replacement;
    });
  }
  optimizer.loadStateDict({ state, paramGroups: saved.paramGroups });
}

/** Convenience: whether `model` still has gate wrappers. */
export function isGated(model: Module): boolean {
  return model.modules().some((m) => m instanceof GatedUnits);
}
