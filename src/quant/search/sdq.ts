/**
 * Differentiable bit widths learned during QAT (in the manner of SDQ, Huang et al. 2022, and CSQ,
 * Xiao et al. 2023): every layer's weight quantizer is a mixture over candidate bit widths
 * b_1 < … < b_K,
 *   ŵ = Σ_k p_k · Q_{b_k}(w),   p = softmax(θ / τ),
 * with learnable logits θ (one per candidate; initialised towards the widest widths, as a
 * float-trained model starts at high precision) and a temperature τ annealed from τ₀ to τ₁ so
 * that the mixture concentrates on one width by the end. Each Q_b is an ordinary fake quantizer
 * (default LSQ: learned per-channel step). A budget regularizer on the EXPECTED cost
 *   E = Σ_l Σ_k p_lk · c_l(b_k, a),   R = λ · max(0, E/B − 1)²
 * is added to the task loss, so the gradient pushes probability mass to cheaper widths only while
 * the expected cost is over the budget B. The result is the per-layer argmax; if that still
 * exceeds the budget, layers are stepped down one width at a time where the logits give up the
 * least per unit of cost saved (`repairToBudget`).
 *
 * This is the softmax (DNAS-style) relaxation: SDQ's stochastic choice between adjacent widths and
 * CSQ's bit-level sparsification are not reproduced; activations keep a fixed width.
 */
import type { TensorModule } from '../../nn/module.ts';
import { Adam } from '../../optim/adam.ts';
import { add, crossEntropy, div, mul, narrow, relu, softmax, sum, sub } from '../../tensor/ops.ts';
import { manualSeed } from '../../tensor/random.ts';
import { Tensor, tensor, zeros } from '../../tensor/tensor.ts';
import { noGrad } from '../../autograd/engine.ts';
import type { Batch } from '../../train/fit.ts';
import { cycleBatches } from '../../data/loader.ts';
import type { QuantPlan, PlanOverride } from '../config/plan.ts';
import { prepareQat, quantizedLayers } from '../qat/prepare.ts';
import { createQuantizer, Quantizer, quantizerKinds, registerQuantizer, type ExportedQuant, type QuantizerContext, type QuantizerSpec } from '../quantizers/quantizer.ts';
import '../quantizers/index.ts';
import { describeLayers } from './layers.ts';
import { activationSpecFor } from './plan.ts';
import type { SearchData } from './evaluate.ts';
import type { BitAssignment, CostModel, LayerInfo } from './types.ts';

/** The quantizer kind of a learnable-width weight quantizer. */
export const SDQ_KIND = 'sdq';

/**
 * A weight quantizer mixing fake quantizers of several widths (see the module comment).
 * Spec: { kind: 'sdq', bits: widest candidate, candidates: [2, 3, 4, 8], inner?: 'lsq',
 * initBias?: 2, granularity?: 'channel' }. `bits` must equal the widest candidate (it is what the
 * layer's storage must hold).
 */
export class SdqQuantizer extends Quantizer {
  readonly spec: QuantizerSpec;
  readonly candidates: readonly number[];
  /** Learnable logits θ, [K]. */
  readonly logits: Tensor;
  readonly branches: readonly Quantizer[];
  /** Softmax temperature τ (set by the search as it anneals). */
  temperature = 1;
  /** When set, the forward uses only this branch index (evaluation of a hard choice). */
  hardChoice: number | null = null;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    super();
    if (context.role !== 'weight') throw new Error(`quantizer '${SDQ_KIND}' quantizes weights only`);
    const raw = spec['candidates'];
    if (!Array.isArray(raw) || raw.length < 1) throw new Error(`quantizer '${SDQ_KIND}': 'candidates' must be a non-empty array of bit widths`);
    const candidates = raw.map(Number);
    candidates.forEach((b, i) => {
      if (!Number.isInteger(b) || b < 2 || b > 16) throw new Error(`quantizer '${SDQ_KIND}': candidate widths must be integers in [2, 16], got ${String(raw[i])}`);
      if (i > 0 && b <= candidates[i - 1]!) throw new Error(`quantizer '${SDQ_KIND}': candidates must be strictly increasing, got [${candidates.join(', ')}]`);
    });
    if (spec.bits !== candidates[candidates.length - 1]) throw new Error(`quantizer '${SDQ_KIND}': bits (${spec.bits}) must equal the widest candidate (${candidates[candidates.length - 1]})`);
    const inner = typeof spec['inner'] === 'string' ? spec['inner'] : 'lsq';
    if (inner === SDQ_KIND) throw new Error(`quantizer '${SDQ_KIND}': inner kind cannot be '${SDQ_KIND}'`);
    const initBias = typeof spec['initBias'] === 'number' ? spec['initBias'] : 2;
    this.spec = spec;
    this.candidates = candidates;
    const k = candidates.length;
    this.logits = this.registerParameter('logits', tensor(candidates.map((_, i) => (k === 1 ? 0 : (initBias * i) / (k - 1)))));
    const granularity = spec['granularity'] ?? 'channel';
    this.branches = candidates.map((b) => this.registerModule(`q${b}`, createQuantizer({ kind: inner, bits: b, signed: true, symmetric: true, granularity }, context)));
  }

  /** p = softmax(θ/τ) as a differentiable [K] tensor. */
  probabilityTensor(): Tensor {
    return softmax(div(this.logits, this.temperature), 0);
  }

  /** Current p (no gradient). */
  probabilities(): number[] {
    return noGrad(() => [...this.probabilityTensor().data]);
  }

  /** Index of the most likely width (the first on ties). */
  argmax(): number {
    const l = this.logits.data;
    let best = 0;
    for (let i = 1; i < l.length; i++) if (l[i]! > l[best]!) best = i;
    return best;
  }

  forward(x: Tensor): Tensor {
    if (!this.fakeQuantEnabled) return x;
    if (this.hardChoice !== null) return this.branches[this.hardChoice]!.forward(x);
    const p = this.probabilityTensor();
    let y: Tensor | null = null;
    this.branches.forEach((q, i) => {
      const term = mul(q.forward(x), narrow(p, 0, i, 1));
      y = y === null ? term : add(y, term);
    });
    return y!;
  }

  /** Expected cost Σ_k p_k · costs[k] (differentiable in θ). */
  expectedCost(costs: readonly number[]): Tensor {
    if (costs.length !== this.candidates.length) throw new Error(`SdqQuantizer.expectedCost: ${costs.length} costs for ${this.candidates.length} candidates`);
    return sum(mul(this.probabilityTensor(), tensor([...costs])));
  }

  /** The quantization of the most likely width. */
  exportQuant(): ExportedQuant {
    return this.branches[this.hardChoice ?? this.argmax()]!.exportQuant();
  }
}

if (!quantizerKinds().includes(SDQ_KIND)) registerQuantizer(SDQ_KIND, (spec, context) => new SdqQuantizer(spec, context));

export interface SdqOptions {
  /** The cost the budget constrains. */
  readonly cost: CostModel;
  /** Budget B on `cost` (in its unit). */
  readonly budget: number;
  /** Candidate weight widths (default [2, 3, 4, 8]). */
  readonly wBits?: readonly number[];
  /** Activation width of every layer (default 8). */
  readonly aBits?: number;
  /** Training steps (default 300). */
  readonly steps?: number;
  /** Learning rate of weights and quantizer steps (Adam, default 1e-4, cosine-decayed). */
  readonly lr?: number;
  /** Learning rate of the width logits (Adam, default 0.05). */
  readonly logitLr?: number;
  /** Strength λ of the budget regularizer (default 5). */
  readonly lambda?: number;
  /** Softmax temperature annealed geometrically from τ₀ to τ₁ (default [1, 0.2]). */
  readonly temperature?: readonly [number, number];
  /** Initial logit advantage of the widest candidate over the narrowest (linear in between; default 2). */
  readonly initBias?: number;
  /** Fake quantizer kind of each width (default 'lsq'). */
  readonly inner?: string;
  /** Seed of in-model randomness (default 0). */
  readonly seed?: number;
  /** Polled every step; true stops training and returns the widths learned so far. */
  shouldStop?(): boolean;
  /** Called after each step. */
  onStep?(step: number, info: { loss: number; expectedCost: number; regularizer: number }): void;
}

export interface SdqResult {
  readonly layers: LayerInfo[];
  /** Per-layer argmax, stepped down where needed to fit the budget. */
  readonly assignment: BitAssignment;
  /** Per-layer argmax before the budget repair. */
  readonly argmaxAssignment: BitAssignment;
  /** Final width probabilities per layer (aligned with `candidates`). */
  readonly probabilities: Record<string, number[]>;
  readonly candidates: readonly number[];
  /** Expected cost under the final probabilities. */
  readonly expectedCost: number;
  /** Cost of `assignment`. */
  readonly cost: number;
  /** Whether `assignment` fits the budget (false only if even the narrowest widths do not). */
  readonly withinBudget: boolean;
  readonly steps: number;
  readonly stopped: boolean;
  /** Every 10th step: expected cost and loss. */
  readonly history: { step: number; expectedCost: number; loss: number }[];
}


/**
 * Steps layers down one candidate width at a time until `cost` ≤ `budget`: each time the layer
 * whose step saves the most cost per unit of logit given up (θ_current − θ_lower, ≥ 0 for an
 * argmax) — ties to the earlier layer. `choice[l]` indexes `candidates`; returns new indices.
 */
export function repairToBudget(choice: readonly number[], logits: readonly (readonly number[])[], layerCost: (layer: number, index: number) => number, budget: number): { choice: number[]; cost: number; withinBudget: boolean } {
  const current = choice.slice();
  const total = () => current.reduce((s, c, l) => s + layerCost(l, c), 0);
  let cost = total();
  while (cost > budget) {
    let best = -1;
    let bestScore = -Infinity;
    current.forEach((c, l) => {
      if (c === 0) return;
      const saving = layerCost(l, c) - layerCost(l, c - 1);
      if (!(saving > 0)) return;
      const regret = Math.max(0, logits[l]![c]! - logits[l]![c - 1]!);
      const score = saving / (regret + 1e-6);
      if (score > bestScore) {
        best = l;
        bestScore = score;
      }
    });
    if (best < 0) return { choice: current, cost, withinBudget: false };
    current[best]!--;
    cost = total();
  }
  return { choice: current, cost, withinBudget: true };
}

function sampleShape(data: SearchData): number[] {
  for (const { x } of data.calibration as Iterable<{ x: Tensor }>) return x.shape.slice(1);
  throw new Error('sdqSearch: the calibration data is empty');
}

/**
 * Learns per-layer weight widths of a trained float `model` under a budget (see the module
 * comment). The model is prepared for QAT and trained IN PLACE (pass a copy to keep the float
 * model). Needs `data.train`; `data.calibration` gives the sample shape.
 */
export async function sdqSearch(model: TensorModule, data: SearchData, options: SdqOptions): Promise<SdqResult> {
  if (!data.train) throw new Error('sdqSearch: data.train is required (the widths are learned by training)');
  if (!(options.budget > 0)) throw new Error(`sdqSearch: budget must be > 0, got ${options.budget}`);
  const candidates = [...new Set(options.wBits ?? [2, 3, 4, 8])].sort((x, y) => x - y);
  const aBits = options.aBits ?? 8;
  const steps = options.steps ?? 300;
  const lr = options.lr ?? 1e-4;
  const logitLr = options.logitLr ?? 0.05;
  const lambda = options.lambda ?? 5;
  const [tau0, tau1] = options.temperature ?? [1, 0.2];
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`sdqSearch: steps must be a positive integer, got ${steps}`);
  if (!(tau0 > 0 && tau1 > 0)) throw new Error(`sdqSearch: temperatures must be > 0, got [${tau0}, ${tau1}]`);
  const layers = describeLayers(model, sampleShape(data));
  const costTable = layers.map((l) => candidates.map((b) => options.cost.layerCost(l, b, aBits)));

  const overrides: PlanOverride[] = layers.map((l, i) => ({
    match: l.name,
    config: {
      weight: { kind: SDQ_KIND, bits: candidates[candidates.length - 1]!, candidates, inner: options.inner ?? 'lsq', initBias: options.initBias ?? 2 },
      activation: activationSpecFor(aBits, i === 0, { activationKind: 'ste' }),
    },
  }));
  const plan: QuantPlan = { default: { weight: null, activation: null }, overrides, keepFirstLast8bit: false, inputActivation: 'layer' };
  prepareQat(model, plan);
  const byName = new Map(quantizedLayers(model).map((q) => [q.name, q.layer.weightQuantizer]));
  const quantizers = layers.map((l) => {
    const q = byName.get(l.name);
    if (!(q instanceof SdqQuantizer)) throw new Error(`sdqSearch: layer '${l.name}' did not get an '${SDQ_KIND}' quantizer`);
    return q;
  });
  const logitParams = new Set(quantizers.map((q) => q.logits));
  const others = model.parameters().filter((p) => !logitParams.has(p) && p.requiresGrad);
  const optimizer = new Adam([{ params: [...logitParams], lr: logitLr }, { params: others, lr }]);
  manualSeed(options.seed ?? 0);

  const history: { step: number; expectedCost: number; loss: number }[] = [];
  const batches = cycleBatches(data.train, () => new Error('sdqSearch: data.train yielded no batch'));
  let done = 0;
  let stopped = false;
  model.train();
  for (let step = 0; step < steps; step++) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (options.shouldStop?.()) {
      stopped = true;
      break;
    }
    const progress = steps === 1 ? 1 : step / (steps - 1);
    const tau = tau0 * (tau1 / tau0) ** progress;
    for (const q of quantizers) q.temperature = tau;
    optimizer.paramGroups[1]!.lr = lr * 0.5 * (1 + Math.cos(Math.PI * progress));
    const { x, y } = batches.next().value!;
    const task = crossEntropy(model.forward(x), y);
    let expected: Tensor = zeros([]);
    quantizers.forEach((q, l) => (expected = add(expected, q.expectedCost(costTable[l]!))));
    const over = relu(sub(div(expected, options.budget), 1));
    const regularizer = mul(mul(over, over), lambda);
    const loss = add(task, regularizer);
    optimizer.zeroGrad();
    loss.backward();
    optimizer.step();
    done = step + 1;
    const info = { loss: task.item(), expectedCost: expected.item(), regularizer: regularizer.item() };
    if (step % 10 === 0 || step === steps - 1) history.push({ step, expectedCost: info.expectedCost, loss: info.loss });
    options.onStep?.(step, info);
  }
  model.eval();

  const argmax = quantizers.map((q) => q.argmax());
  const logits = quantizers.map((q) => [...q.logits.data]);
  const repaired = repairToBudget(argmax, logits, (l, c) => costTable[l]![c]!, options.budget);
  const toAssignment = (choice: readonly number[]): BitAssignment => Object.fromEntries(layers.map((l, i) => [l.name, { w: candidates[choice[i]!]!, a: aBits }]));
  const expectedCost = noGrad(() => quantizers.reduce((s, q, l) => s + q.expectedCost(costTable[l]!).item(), 0));
  return {
    layers,
    assignment: toAssignment(repaired.choice),
    argmaxAssignment: toAssignment(argmax),
    probabilities: Object.fromEntries(layers.map((l, i) => [l.name, quantizers[i]!.probabilities()])),
    candidates,
    expectedCost,
    cost: repaired.cost,
    withinBudget: repaired.withinBudget,
    steps: done,
    stopped,
    history,
  };
}
