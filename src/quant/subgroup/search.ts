import { noGrad } from '../../autograd/engine.ts';
import type { Module } from '../../nn/module.ts';
import { Adam } from '../../optim/adam.ts';
import { add, div, mul, relu } from '../../tensor/ops.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { ProgressBar } from '../../train/progress.ts';
import { derivePlan, expectedModelBytes, planBytes, subgroupLayers, type SubgroupPlan } from './plan.ts';

export interface SubgroupSearchOptions {
  /** Byte budget of the searchable weights (codes + scales), e.g. the size of uniform 4 bits. */
  budgetBytes: number;
  /** Search steps; each is one weight step and (after warm-up) one architecture step. */
  steps: number;
  /** Task loss on a training batch for step `step` (the weights and steps are updated on it). */
  trainLoss: (step: number) => Tensor;
  /** Task loss on a held-out batch for the architecture step (default: `trainLoss`, single-level). */
  archLoss?: (step: number) => Tensor;
  /** Adam learning rate of the weights and quantizer steps (default 1e-3). */
  weightLr?: number;
  /** Adam learning rate of the architecture logits (default 0.05). */
  archLr?: number;
  /** λ of the size penalty λ·max(0, E/B − 1) (default 2). */
  sizeWeight?: number;
  /** First steps update the weights only (default 0). */
  warmupSteps?: number;
  /** Softmax temperature, annealed geometrically from `start` to `end` (default 1 → 0.2). */
  temperature?: { start: number; end: number };
  /** Spend bytes left under the budget when deriving the plan (default true; see derivePlan). */
  fill?: boolean;
  /** Show a progress bar (default true). */
  progress?: boolean;
}

/** One logged search step. */
export interface SubgroupSearchStep {
  readonly step: number;
  readonly trainLoss: number;
  /** Task loss of the architecture step (NaN during warm-up). */
  readonly archLoss: number;
  /** Expected bytes E after the step's architecture update. */
  readonly expectedBytes: number;
  readonly temperature: number;
}

export interface SubgroupSearchResult {
  /** The plan fitted to the budget (argmax, repaired, filled). */
  readonly plan: SubgroupPlan;
  readonly planBytes: number;
  /** The plain argmax plan and its size, before fitting to the budget. */
  readonly argmaxPlan: SubgroupPlan;
  readonly argmaxBytes: number;
  readonly history: readonly SubgroupSearchStep[];
}

/**
 * Differentiable subgroup-wise precision and pruning search (DARTS-style, first order): every
 * {@link SubgroupLinear} of `model` runs in search mode; each step updates the weights and quantizer
 * steps on `trainLoss` (Adam), then the architecture logits on `archLoss + λ·max(0, E/B − 1)`
 * (Adam), with E the expected stored bytes and B the budget; the temperature anneals from start to
 * end. Afterwards each subgroup takes its argmax choice, fitted to the budget ({@link derivePlan}).
 * The layers are left in search mode: {@link applyPlan} fixes them for the fine-tune.
 */
export function searchSubgroups(model: Module, options: SubgroupSearchOptions): SubgroupSearchResult {
  const { budgetBytes, steps } = options;
  if (!(budgetBytes > 0) || !Number.isFinite(budgetBytes)) throw new RangeError(`searchSubgroups: budgetBytes must be a positive finite number, got ${budgetBytes}`);
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`searchSubgroups: steps must be a positive integer, got ${steps}`);
  const warmup = options.warmupSteps ?? 0;
  if (!Number.isInteger(warmup) || warmup < 0 || warmup >= steps) throw new RangeError(`searchSubgroups: warmupSteps must be an integer in [0, steps), got ${warmup}`);
  const sizeWeight = options.sizeWeight ?? 2;
  if (!(sizeWeight >= 0) || !Number.isFinite(sizeWeight)) throw new RangeError(`searchSubgroups: sizeWeight must be a finite number >= 0, got ${sizeWeight}`);
  const { start, end } = options.temperature ?? { start: 1, end: 0.2 };
  if (!(start > 0 && end > 0) || !Number.isFinite(start) || !Number.isFinite(end)) throw new RangeError(`searchSubgroups: temperatures must be positive and finite, got ${start} -> ${end}`);
  for (const [name, lr] of [['weightLr', options.weightLr], ['archLr', options.archLr]] as const) {
    if (lr !== undefined && !(lr > 0 && Number.isFinite(lr))) throw new RangeError(`searchSubgroups: ${name} must be a positive finite number, got ${lr}`);
  }
  const layers = subgroupLayers(model).map(([, layer]) => layer);
  const archParams = new Set(layers.flatMap((l) => l.architectureParameters()));
  const weightOptimizer = new Adam(model.parameters().filter((p) => !archParams.has(p)), { lr: options.weightLr ?? 1e-3 });
  const archOptimizer = new Adam([...archParams], { lr: options.archLr ?? 0.05 });
  const archLoss = options.archLoss ?? options.trainLoss;
  for (const layer of layers) layer.mode = 'search';
  model.train();
  const bar = options.progress ?? true ? new ProgressBar({ total: steps, label: 'subgroup search' }) : null;
  const history: SubgroupSearchStep[] = [];
  for (let step = 0; step < steps; step++) {
    const temperature = start * (end / start) ** (steps === 1 ? 1 : step / (steps - 1));
    for (const layer of layers) layer.temperature = temperature;
    weightOptimizer.zeroGrad();
    archOptimizer.zeroGrad();
    const task = options.trainLoss(step);
    task.backward();
    weightOptimizer.step();
    let archValue = Number.NaN;
    if (step >= warmup) {
      weightOptimizer.zeroGrad();
      archOptimizer.zeroGrad();
      const loss = archLoss(step);
      archValue = loss.item();
      const penalty = mul(relu(add(div(expectedModelBytes(model), budgetBytes), -1)), sizeWeight);
      add(loss, penalty).backward();
      archOptimizer.step();
    }
    const expected = noGrad(() => expectedModelBytes(model).item());
    history.push({ step, trainLoss: task.item(), archLoss: archValue, expectedBytes: expected, temperature });
    bar?.tick(1, { loss: task.item(), 'E/B': expected / budgetBytes });
  }
  bar?.done();
  weightOptimizer.zeroGrad();
  archOptimizer.zeroGrad();
  const argmaxPlan = derivePlan(model);
  const plan = derivePlan(model, { budgetBytes, fill: options.fill });
  return { plan, planBytes: planBytes(plan), argmaxPlan, argmaxBytes: planBytes(argmaxPlan), history };
}
