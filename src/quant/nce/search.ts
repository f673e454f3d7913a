/**
 * Neural channel expansion (NCE; Park et al., "Neural channel expansion for ultra-low uniform-precision
 * quantization"): a differentiable search over the channel widths of a network trained under
 * uniform low-bit QAT. Quantization-sensitive layers are widened, others narrowed, so that the
 * total (parameters or FLOPs) stays within a budget, by default the original network's.
 *
 * Search space: each searched layer l takes one of K widths c_lk = round(r_k·c_l), r ∈ {0.5, 0.75,
 * 1, 1.5, 2} by default. The supernet holds the widest widths; a width is a mask keeping the first
 * c_lk channels. Each step (after `warmupSteps` steps of weights only, with uniform probabilities)
 *   p_l = softmax((α_l [+ Gumbel noise]) / τ),  mask_l = Σ_k p_lk·mask_lk,
 *   E[C] = Σ_j κ_j · E[c_in,j] · E[c_out,j]             (closed form, see ./cost.ts)
 *   L = CE(supernet(x), y) + λ·(E[C]/B − 1)²      (penalty 'target', the default), or
 *   L = CE(supernet(x), y) + λ·max(0, E[C]/B − 1)²  (penalty 'over')
 * and both the weights (with their QAT quantizers) and α step on L (first-order, one batch); τ is
 * annealed geometrically from τ₀ to τ₁. The result is the per-layer argmax, stepped down (the
 * layer whose step saves the most cost per unit of logit given up, first) until its exact cost is
 * within B, then (option `fill`, default on) widened one candidate at a time, largest logit gain
 * first, while it stays within B: the returned architecture is never over budget. The default two-sided penalty holds the
 * expected cost at the budget, so the search redistributes the budget between layers instead of
 * also choosing how much of it to spend (with 'over', Adam's momentum on the logits after the
 * initial over-budget phase tends to leave much of the budget unused). The paper's exact schedule and its
 * search on ImageNet-scale ResNets are not reproduced; see docs/nce.md.
 */
import type { TensorModule } from '../../nn/module.ts';
import { Adam } from '../../optim/adam.ts';
import { add, crossEntropy, div, mul, relu, sub } from '../../tensor/ops.ts';
import { manualSeed, Rng } from '../../tensor/random.ts';
import { Tensor, zeros } from '../../tensor/tensor.ts';
import { noGrad } from '../../autograd/engine.ts';
import type { Batch } from '../../train/fit.ts';
import { cycleBatches } from '../../data/loader.ts';
import { ProgressBar } from '../../train/progress.ts';
import { qconfigFor } from '../config/qconfig.ts';
import { prepareQat, type QatTarget } from '../qat/prepare.ts';
import { sizeCost } from '../search/costs.ts';
import type { CostModel } from '../search/types.ts';
import { NceError } from './chain.ts';
import { architectureCost, costFromWidths, costTerms, type CostBits, type CostTerm } from './cost.ts';
import { Supernet } from './supernet.ts';

export interface NceSearchOptions {
  /** One sample's shape without the batch dim, e.g. [1, 28, 28]. */
  readonly inputShape: readonly number[];
  /** Training batches (cycled). */
  readonly train: Iterable<Batch>;
  /** Cost the budget constrains (default sizeCost(): weight count at `bits` {1, 1}); 'size' or 'bitops' models. */
  readonly cost?: CostModel;
  /** Bits the cost is taken at (default { w: 1, a: 1 }: size = weights, BitOps = MACs). */
  readonly bits?: CostBits;
  /** Budget B in the cost's unit (default: budgetRatio × the source model's cost). */
  readonly budget?: number;
  /** Budget as a multiple of the source model's cost (default 1), when `budget` is not given. */
  readonly budgetRatio?: number;
  /** QAT of the supernet (default { default: qconfigFor('w2a2', 'lsq') }: uniform W2A2, first/last layers 8-bit). */
  readonly qat?: QatTarget;
  /** Width multipliers (default [0.5, 0.75, 1, 1.5, 2]). */
  readonly ratios?: readonly number[];
  /** Layers to search (default every Conv2d / Linear but the output layer). */
  readonly layers?: readonly string[];
  /** Search steps (default 300), of which `warmupSteps` (default steps/4, rounded down) train the weights only. */
  readonly steps?: number;
  readonly warmupSteps?: number;
  /** Adam learning rate of the weights and quantizer parameters (default 1e-3). */
  readonly lr?: number;
  /** Adam learning rate of the architecture logits (default 0.05). */
  readonly archLr?: number;
  /** Strength λ of the budget penalty (default 10). */
  readonly lambda?: number;
  /** 'target' (default): λ·(E/B − 1)², holds the expected cost at the budget; 'over': λ·max(0, E/B − 1)², only pushes down. */
  readonly penalty?: 'target' | 'over';
  /**
   * After the budget repair, widen layers while the budget allows (`fillChoice`; default true), so
   * the architecture spends about the budget it was searched for.
   */
  readonly fill?: boolean;
  /** Softmax temperature annealed geometrically from τ₀ to τ₁ after the warm-up (default [1, 0.05]). */
  readonly temperature?: readonly [number, number];
  /** Gumbel noise on the logits (FBNet's sampling; default false: plain softmax, DARTS-style). */
  readonly gumbel?: boolean;
  /** Seed of the supernet's weights, dropout and Gumbel noise (default 0). */
  readonly seed?: number;
  /** Progress bar on stderr (default false). */
  readonly progress?: boolean;
  /** Called after each step. */
  onStep?(step: number, info: { loss: number; expectedCost: number; penalty: number }): void;
}

export interface NceResult {
  /** Chosen width of every searched layer (source layer name → width). */
  readonly widths: Record<string, number>;
  /** Widths of the source model. */
  readonly baseWidths: Record<string, number>;
  /** Per-layer argmax before the budget repair and fill. */
  readonly argmaxWidths: Record<string, number>;
  /** Candidate widths per layer. */
  readonly candidates: Record<string, number[]>;
  /** Final architecture probabilities (temperature τ₁, no noise) per layer, aligned with `candidates`. */
  readonly probabilities: Record<string, number[]>;
  /** Exact cost of `widths` (≤ budget). */
  readonly cost: number;
  /** Cost of the source model. */
  readonly baseCost: number;
  readonly budget: number;
  /** Expected cost under the final probabilities. */
  readonly expectedCost: number;
  readonly unit: string;
  readonly steps: number;
  /** Every 10th step: task loss and expected cost. */
  readonly history: { step: number; loss: number; expectedCost: number }[];
}


/** The differentiable closed-form cost Σ κ·E[c_in]·E[c_out] of expected widths (tensors). */
export function expectedCostTensor(terms: readonly CostTerm[], expectedWidths: readonly Tensor[]): Tensor {
  let total: Tensor = zeros([]);
  for (const t of terms) {
    const cin: Tensor | number = t.inputFrom === null ? t.fixedInput : expectedWidths[t.inputFrom]!;
    const cout: Tensor | number = t.outputFrom === null ? t.fixedOutput : expectedWidths[t.outputFrom]!;
    if (typeof cin === 'number' && typeof cout === 'number') total = add(total, cin * cout * t.coefficient);
    else total = add(total, mul(mul(cin, cout), t.coefficient));
  }
  return total;
}

/**
 * Steps layers down one candidate at a time until the exact cost is within `budget`: each time the
 * layer whose step saves the most cost per unit of logit given up (α_current − α_lower, floored at
 * 0). `choice[l]` indexes layer l's candidates. Throws when the narrowest architecture is over budget.
 */
export function repairChoice(choice: readonly number[], logits: readonly (readonly number[])[], cost: (choice: readonly number[]) => number, budget: number): number[] {
  const current = choice.slice();
  let total = cost(current);
  while (total > budget) {
    let best = -1;
    let bestScore = -Infinity;
    for (let l = 0; l < current.length; l++) {
      const c = current[l]!;
      if (c === 0) continue;
      const lower = current.slice();
      lower[l] = c - 1;
      const saving = total - cost(lower);
      if (!(saving > 0)) continue;
      const score = saving / (Math.max(0, logits[l]![c]! - logits[l]![c - 1]!) + 1e-6);
      if (score > bestScore) {
        best = l;
        bestScore = score;
      }
    }
    if (best < 0) throw new NceError(`repairChoice: even the narrowest architecture costs ${total} > budget ${budget}`);
    current[best]!--;
    total = cost(current);
  }
  return current;
}

/**
 * Widens layers one candidate at a time while the exact cost stays within `budget`: each time the
 * step that fits with the largest logit change α_upper − α_current (ties to the earlier layer), so
 * the budget the argmax left unused goes where the search liked wider widths best. `sizes[l]` is
 * layer l's number of candidates.
 */
export function fillChoice(choice: readonly number[], logits: readonly (readonly number[])[], sizes: readonly number[], cost: (choice: readonly number[]) => number, budget: number): number[] {
  const current = choice.slice();
  for (;;) {
    let best = -1;
    let bestGain = -Infinity;
    for (let l = 0; l < current.length; l++) {
      const c = current[l]!;
      if (c + 1 >= sizes[l]!) continue;
      const upper = current.slice();
      upper[l] = c + 1;
      if (cost(upper) > budget) continue;
      const gain = logits[l]![c + 1]! - logits[l]![c]!;
      if (gain > bestGain) {
        best = l;
        bestGain = gain;
      }
    }
    if (best < 0) return current;
    current[best]!++;
  }
}

/**
 * Searches channel widths of the float feed-forward `model` under uniform low-bit QAT and a cost
 * budget (see the module comment). `model` is not modified (the supernet is built fresh from its
 * structure). Build the searched network with `expandModel(model, inputShape, result.widths)`.
 */
export async function nceSearch(model: TensorModule, options: NceSearchOptions): Promise<NceResult> {
  const steps = options.steps ?? 300;
  const warmup = options.warmupSteps ?? Math.floor(steps / 4);
  const lr = options.lr ?? 1e-3;
  const archLr = options.archLr ?? 0.05;
  const lambda = options.lambda ?? 10;
  const [tau0, tau1] = options.temperature ?? [1, 0.05];
  const seed = options.seed ?? 0;
  if (!Number.isInteger(steps) || steps < 1) throw new NceError(`nceSearch: steps must be a positive integer, got ${steps}`);
  if (!Number.isInteger(warmup) || warmup < 0 || warmup >= steps) throw new NceError(`nceSearch: warmupSteps must be an integer in [0, steps), got ${warmup}`);
  for (const [k, v] of Object.entries({ lr, archLr, lambda, tau0, tau1 })) if (!(v > 0 && Number.isFinite(v))) throw new NceError(`nceSearch: ${k} must be finite and > 0, got ${v}`);
  const penaltyKind = options.penalty ?? 'target';
  if (penaltyKind !== 'target' && penaltyKind !== 'over') throw new NceError(`nceSearch: penalty must be 'target' or 'over', got '${String(penaltyKind)}'`);
  const cost = options.cost ?? sizeCost();
  const bits = options.bits ?? { w: 1, a: 1 };

  manualSeed(seed);
  const rng = new Rng(seed);
  const supernet = new Supernet(model, options.inputShape, { ratios: options.ratios, layers: options.layers, rng });
  const names = supernet.layers.map((l) => l.name);
  const terms = costTerms(cost, supernet.chain, names, bits);
  const baseCost = architectureCost(cost, supernet.chain, {}, bits);
  const budget = options.budget ?? baseCost * (options.budgetRatio ?? 1);
  if (!(budget > 0 && Number.isFinite(budget))) throw new NceError(`nceSearch: budget must be finite and > 0, got ${budget}`);
  const choiceCost = (choice: readonly number[]): number => costFromWidths(terms, supernet.layers.map((l, i) => l.widths[choice[i]!]!));
  const narrowest = choiceCost(supernet.layers.map(() => 0));
  if (narrowest > budget) {
    // At 1-bit weights / activations size counts weights and BitOps MACs; name the cost, not its full-precision unit.
    const counted = bits.w === 1 && bits.a === 1 ? (cost.name === 'size' ? ': weights' : cost.name === 'bitops' ? ': MACs' : '') : '';
    throw new NceError(`nceSearch: budget ${budget} is below the narrowest architecture's ${narrowest} (${cost.name} at w${bits.w}a${bits.a}${counted})`);
  }

  const net = supernet.net;
  prepareQat(net, options.qat ?? { default: qconfigFor('w2a2', 'lsq') });
  const logits = supernet.layers.map((l) => l.logits);
  const weights = net.parameters().filter((p) => p.requiresGrad);
  const weightOptimizer = new Adam(weights, { lr });
  const archOptimizer = new Adam(logits, { lr: archLr });
  const gumbel = options.gumbel ? rng : null;
  const batches = cycleBatches(options.train, () => new NceError('nceSearch: the training data yielded no batch'));
  const history: NceResult['history'] = [];
  const bar = options.progress ? new ProgressBar({ total: steps, label: 'nce search' }) : null;
  net.train();
  for (let step = 0; step < steps; step++) {
    if (step % 10 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    const searching = step >= warmup;
    const progress = steps - warmup <= 1 ? 1 : Math.max(0, step - warmup) / (steps - warmup - 1);
    const tau = tau0 * (tau1 / tau0) ** progress;
    const p = supernet.probabilities(tau, searching ? gumbel : null);
    supernet.setMixture(p);
    const expected = expectedCostTensor(terms, supernet.expectedWidths(p));
    const { x, y } = batches.next().value!;
    const task = crossEntropy(net.forward(x), y);
    const relative = sub(div(expected, budget), 1);
    const over = penaltyKind === 'over' ? relu(relative) : relative;
    const penalty = mul(mul(over, over), lambda);
    const loss = searching ? add(task, penalty) : task;
    weightOptimizer.zeroGrad();
    archOptimizer.zeroGrad();
    loss.backward();
    weightOptimizer.step();
    if (searching) archOptimizer.step();
    const info = { loss: task.item(), expectedCost: expected.item(), penalty: penalty.item() };
    if (step % 10 === 0 || step === steps - 1) history.push({ step, loss: info.loss, expectedCost: info.expectedCost });
    bar?.tick(1, { loss: info.loss.toFixed(3), 'E[cost]/B': (info.expectedCost / budget).toFixed(3) }, x.shape[0]);
    options.onStep?.(step, info);
  }
  bar?.done();
  supernet.clearMasks();
  net.eval();

  const finalP = noGrad(() => supernet.probabilities(tau1).map((t) => [...t.data]));
  const expectedCost = noGrad(() => expectedCostTensor(terms, supernet.expectedWidths(supernet.probabilities(tau1))).item());
  const logitValues = logits.map((t) => [...t.data]);
  const argmax = logitValues.map((l) => l.reduce((best, v, k) => (v > l[best]! ? k : best), 0));
  const repaired = repairChoice(argmax, logitValues, choiceCost, budget);
  const choice = options.fill ?? true ? fillChoice(repaired, logitValues, supernet.layers.map((l) => l.widths.length), choiceCost, budget) : repaired;
  const widths = supernet.widthsOf(choice);
  const exact = architectureCost(cost, supernet.chain, widths, bits);
  if (exact > budget * (1 + 1e-12)) throw new NceError(`nceSearch: internal error: the chosen architecture costs ${exact} > ${budget}`);
  return {
    widths,
    baseWidths: Object.fromEntries(supernet.layers.map((l) => [l.name, l.baseWidth])),
    argmaxWidths: supernet.widthsOf(argmax),
    candidates: Object.fromEntries(supernet.layers.map((l) => [l.name, [...l.widths]])),
    probabilities: Object.fromEntries(supernet.layers.map((l, i) => [l.name, finalP[i]!])),
    cost: exact,
    baseCost,
    budget,
    expectedCost,
    unit: cost.unit,
    steps,
    history,
  };
}
