/**
 * AskewSGD — Annealed Skewed SGD (L. Leconte, S. Schechtman, E. Moulines, "AskewSGD: an annealed
 * interval-constrained optimisation method to train quantized neural networks", AISTATS 2023,
 * arXiv:2211.03741).
 *
 * Training a quantized network is posed as a sequence of interval-constrained problems whose
 * intervals shrink to the quantization grid. Each constrained weight w (with a fixed scale α per
 * output channel, fitted once to the initial weights, and a level table T) must satisfy
 *
 *     ψ_ε(w) = (α·ε)² − d² ≥ 0,   d = w − α·q,   q = nearest(w/α) ∈ T,
 *
 * i.e. stay within α·ε of its nearest grid point. The iterate may be infeasible; instead of a
 * projection the step uses the velocity formulation of the constraint (Muehlebach & Jordan):
 * the direction v is the closest vector to the negative (momentum) gradient −g that satisfies the
 * linearised constraint ψ'(w)·v + κ·ψ(w) ≥ 0 — active only where ψ(w) < 0:
 *
 *   feasible   (|d| ≤ α·ε):  v = −g                                  (plain SGD step)
 *   infeasible (|d| > α·ε):  v = −g + λ·ψ'(w),  ψ'(w) = −2d,
 *                            λ = max(0, (ψ'(w)·g − κ·ψ(w)) / ψ'(w)²)
 *   w ← w + lr·v.
 *
 * When the gradient already moves w back fast enough (λ = 0) the step is SGD; otherwise it is the
 * "skewed" direction v = −κ(d² − (αε)²)/(2d), pulling w towards its grid point at a rate set by
 * the violation. κ is `pull` (default 1/lr, so lr·κ = 1: an infeasible weight never overshoots its
 * grid point and at ε = 0 halves its distance each step).
 *
 * Annealing: ε_k = epsilon0·decay^(k − warmupSteps) at the k-th step (k = 0, 1, …; ε = ∞, i.e.
 * plain SGD, during the first `warmupSteps`), set to 0 once below `epsilonMin`; ε is in units of α (epsilon0 = 0.5 leaves every in-range weight feasible at the
 * start for unit-spaced tables). As ε → 0 every weight is driven onto α·T up to a residual of
 * about 2·lr·|g| (the balance of one gradient step against the pull), which vanishes as the
 * learning rate decays; `finalize()` snaps that residual exactly.
 *
 * The scale α is fitted (MSE-optimal, `fitScaleExact`) to the weights at the first constrained
 * step and then fixed. From a random initialisation that scale is meaningless (measured: a
 * 2-bit MLP on a toy task reaches 74 % from scratch vs 98.5 % after an unconstrained warm-up),
 * so start from a trained model or use `warmupSteps`.
 *
 * Momentum (heavy ball, PyTorch semantics: b ← g on the first step, then b ← μ·b + g) and L2
 * weight decay act on g before the rule above. Parameter groups with `quantize: false` (biases,
 * normalisation) take plain SGD steps. This rule is our reading of the public paper; the paper's
 * exact constraint function ψ may differ in form (we use the interval's squared distance).
 */
import type { Tensor } from '../../tensor/index.ts';
import type { TypedArray } from '../../backend/primitives.ts';
import type { Module } from '../../nn/module.ts';
import { checkNonNegative, Optimizer, zerosLikeData, type ParamGroup, type ParamGroupInput, type ParamsInput, type ParamState } from '../../optim/optimizer.ts';
import { fitScaleExact, makeTable, nearestIndex, type LevelTable, type TableSpec } from './tables.ts';
import { defaultWeightSelector, type ParamSelector, type QuantizedTensorExport } from './admm.ts';

export interface AskewHyper {
  /** Step size (default 0.01). */
  lr: number;
  /** Heavy-ball momentum (default 0). */
  momentum: number;
  /** L2 penalty added to the gradient (default 0). */
  weightDecay: number;
  /** The level table T in units of α (default ternary [−1, 0, 1]); `bits`/`table` options set it. */
  levels: readonly number[];
  /** Initial interval half-width in units of α (default 0.5). */
  epsilon0: number;
  /** Multiplicative decay of ε per step (default 0.999). */
  decay: number;
  /**
   * Unconstrained SGD steps before the constrained phase (default 0). α is fitted to the weights
   * at the first constrained step, so a warm-up (or a pretrained model) gives it a meaningful scale.
   */
  warmupSteps: number;
  /** ε below this is treated as 0 (default 1e-4). */
  epsilonMin: number;
  /** κ of the velocity constraint; 0 means 1/lr (default 0). */
  pull: number;
  /** α per output channel (axis 0) or per tensor (default true). */
  perChannel: boolean;
  /** Constrain this group to the grid (default true; false = plain SGD, e.g. for biases). */
  quantize: boolean;
}

export type AskewOptions = Partial<AskewHyper> & {
  /** Level table (overrides `levels`). */
  table?: TableSpec;
  /** Shorthand for `table: { bits }` (narrow signed range: 2 bits = ternary levels). */
  bits?: number;
};

/** Per-parameter state: steps taken, the per-element scale α (channel value broadcast), momentum. */
export type AskewState = { step: number; scale?: TypedArray; momentumBuffer?: TypedArray };

/** ε of the step after `step` steps of a group's schedule (Infinity during warm-up). */
export function askewEpsilon(hyper: Pick<AskewHyper, 'epsilon0' | 'decay' | 'epsilonMin'> & { warmupSteps?: number }, step: number): number {
  const warmup = hyper.warmupSteps ?? 0;
  if (step < warmup) return Infinity;
  const eps = hyper.epsilon0 * hyper.decay ** (step - warmup);
  return eps < hyper.epsilonMin ? 0 : eps;
}

/** The per-step decay that takes ε from `epsilon0` to `epsilonEnd` in `steps` steps. */
export function decayFor(steps: number, epsilon0: number, epsilonEnd: number): number {
  if (!(steps > 0 && epsilon0 > 0 && epsilonEnd > 0)) throw new Error('decayFor: steps, epsilon0 and epsilonEnd must be positive');
  return Math.min(1, (epsilonEnd / epsilon0) ** (1 / steps));
}

function levelsOf(options: AskewOptions): readonly number[] | undefined {
  if (options.table !== undefined) return makeTable(options.table).levels;
  if (options.bits !== undefined) return makeTable(options.bits === 1 ? 'binary' : { bits: options.bits }).levels;
  return options.levels;
}

const tableCache = new WeakMap<readonly number[], LevelTable>();

export class AskewSGD extends Optimizer<AskewHyper, AskewState> {
  constructor(params: ParamsInput<AskewHyper> | readonly (ParamGroupInput<AskewHyper> & { table?: TableSpec; bits?: number })[], options: AskewOptions = {}) {
    const groups = isGroupList(params)
      ? params.map((g) => {
          const levels = levelsOf(g);
          const { table: _t, bits: _b, ...rest } = g;
          return levels ? { ...rest, levels } : rest;
        })
      : params;
    super(groups as ParamsInput<AskewHyper>, {
      lr: options.lr ?? 0.01,
      momentum: options.momentum ?? 0,
      weightDecay: options.weightDecay ?? 0,
      levels: levelsOf(options) ?? makeTable('ternary').levels,
      epsilon0: options.epsilon0 ?? 0.5,
      decay: options.decay ?? 0.999,
      warmupSteps: options.warmupSteps ?? 0,
      epsilonMin: options.epsilonMin ?? 1e-4,
      pull: options.pull ?? 0,
      perChannel: options.perChannel ?? true,
      quantize: options.quantize ?? true,
    });
  }

  protected validate(group: ParamGroup<AskewHyper>): void {
    checkNonNegative('AskewSGD', 'lr', group.lr);
    checkNonNegative('AskewSGD', 'momentum', group.momentum);
    checkNonNegative('AskewSGD', 'weightDecay', group.weightDecay);
    checkNonNegative('AskewSGD', 'epsilon0', group.epsilon0);
    checkNonNegative('AskewSGD', 'epsilonMin', group.epsilonMin);
    checkNonNegative('AskewSGD', 'pull', group.pull);
    if (!Number.isInteger(group.warmupSteps) || group.warmupSteps < 0) throw new Error(`AskewSGD: warmupSteps must be a non-negative integer, got ${group.warmupSteps}`);
    if (!(group.decay > 0 && group.decay <= 1)) throw new Error(`AskewSGD: decay must be in (0, 1], got ${group.decay}`);
    this.tableOf(group);
  }

  private tableOf(group: ParamGroup<AskewHyper>): LevelTable {
    // (A module-level cache: validate() runs inside the base constructor, before fields exist.)
    let t = tableCache.get(group.levels);
    if (!t) {
      t = makeTable({ levels: group.levels });
      tableCache.set(group.levels, t);
    }
    return t;
  }

  /** ε the next step of group `g` uses (from its first parameter's step count). */
  epsilon(g = 0): number {
    const group = this.paramGroups[g]!;
    const p = group.params[0];
    const step = p ? this.state.get(p)?.step ?? 0 : 0;
    return askewEpsilon(group, step);
  }

  step(): void {
    for (const group of this.paramGroups) {
      const { lr, momentum, weightDecay } = group;
      const table = this.tableOf(group);
      const levels = table.levels;
      const kappa = group.pull > 0 ? group.pull : lr > 0 ? 1 / lr : 0;
      for (const p of group.params) {
        if (!p.grad) continue;
        const state = this.stateFor(p, () => ({ step: 0 }));
        const eps = askewEpsilon(group, state.step);
        state.step += 1;
        const w = p.data;
        const grad = p.grad.data;
        const n = w.length;
        const first = momentum > 0 && state.momentumBuffer === undefined;
        if (momentum > 0 && !state.momentumBuffer) state.momentumBuffer = zerosLikeData(p);
        const buf = state.momentumBuffer;
        const scale = group.quantize && eps !== Infinity ? this.scaleOf(p, group) : null;
        for (let i = 0; i < n; i++) {
          let g = grad[i]! + weightDecay * w[i]!;
          if (buf) {
            g = first ? g : momentum * buf[i]! + g;
            buf[i] = g;
          }
          if (!scale) {
            w[i] = w[i]! - lr * g;
            continue;
          }
          const s = scale[i]!;
          const q = s > 0 ? s * levels[nearestIndex(table, w[i]! / s)]! : 0;
          const d = w[i]! - q;
          const e = eps * s;
          if (d * d <= e * e) {
            w[i] = w[i]! - lr * g;
          } else {
            const psi = e * e - d * d;
            const dpsi = -2 * d;
            const lambda = Math.max(0, (dpsi * g - kappa * psi) / (dpsi * dpsi));
            w[i] = w[i]! + lr * (-g + lambda * dpsi);
          }
        }
      }
    }
  }

  /** The per-element scale of `p`, fitted to its current weights on first use. */
  private scaleOf(p: Tensor, group: ParamGroup<AskewHyper>): TypedArray {
    const state = this.stateFor(p, () => ({ step: 0 }));
    if (state.scale) return state.scale;
    const table = this.tableOf(group);
    const scale = zerosLikeData(p);
    const channels = group.perChannel && p.rank >= 2 ? p.shape[0]! : 1;
    const inner = channels > 0 ? p.size / channels : 0;
    const whole = fitScaleExact(p.data, table).alpha;
    for (let c = 0; c < channels; c++) {
      let alpha = channels === 1 ? whole : fitScaleExact(p.data.subarray(c * inner, (c + 1) * inner), table).alpha;
      if (!(alpha > 0)) alpha = whole > 0 ? whole : 1;
      alpha = Math.fround(alpha); // float32 scales (DESIGN.md): α·level is then what export describes
      scale.fill(alpha, c * inner, (c + 1) * inner);
    }
    state.scale = scale;
    return scale;
  }

  /**
   * Distance of the constrained weights to their grid points, in units of α: max and RMS (NaN
   * while no parameter has reached its constrained phase, i.e. during warm-up).
   */
  distanceToGrid(): { max: number; rms: number } {
    let max = 0;
    let sq = 0;
    let n = 0;
    for (const group of this.paramGroups) {
      if (!group.quantize) continue;
      const table = this.tableOf(group);
      for (const p of group.params) {
        const scale = this.state.get(p)?.scale;
        if (!scale) continue;
        for (let i = 0; i < p.size; i++) {
          const u = p.data[i]! / scale[i]!;
          const d = Math.abs(u - table.levels[nearestIndex(table, u)]!);
          max = Math.max(max, d);
          sq += d * d;
          n++;
        }
      }
    }
    return n > 0 ? { max, rms: Math.sqrt(sq / n) } : { max: NaN, rms: NaN };
  }

  /**
   * Snaps every constrained weight onto its grid point (w := α·nearest(w/α), exact in the
   * parameter's dtype) and returns the export records. Names come from `model` when given.
   */
  finalize(model?: Module): QuantizedTensorExport[] {
    const names = new Map<Tensor, string>(model ? model.namedParameters().map(([n, t]) => [t, n] as [Tensor, string]) : []);
    const out: QuantizedTensorExport[] = [];
    let k = 0;
    for (const group of this.paramGroups) {
      const table = this.tableOf(group);
      for (const p of group.params) {
        const index = k++;
        if (!group.quantize) continue;
        const scale = this.scaleOf(p, group);
        const idx = new Uint16Array(p.size);
        for (let i = 0; i < p.size; i++) {
          const j = nearestIndex(table, p.data[i]! / scale[i]!);
          idx[i] = j;
          p.data[i] = scale[i]! * table.levels[j]!;
        }
        const channels = group.perChannel && p.rank >= 2 ? p.shape[0]! : 1;
        const inner = p.size / channels;
        const integer = table.levels.every(Number.isInteger);
        out.push({
          name: names.get(p) ?? `param${index}`,
          shape: [...p.shape],
          table: table.name,
          levels: table.levels,
          axis: group.perChannel && p.rank >= 2 ? 0 : null,
          alpha: Float32Array.from({ length: channels }, (_, c) => scale[c * inner]!),
          index: idx,
          codes: integer ? Int32Array.from(idx, (j) => table.levels[j]!) : null,
        });
      }
    }
    return out;
  }

  protected restoreState(record: ParamState, param: Tensor): AskewState {
    const step = record['step'];
    const scale = record['scale'];
    const buf = record['momentumBuffer'];
    if (typeof step !== 'number') throw new Error('AskewSGD state: step must be a number');
    for (const [key, v] of [['scale', scale], ['momentumBuffer', buf]] as const) {
      if (v !== undefined && (typeof v === 'number' || v.length !== param.size)) throw new Error(`AskewSGD state: ${key} must be a tensor shaped like its parameter`);
    }
    const s: AskewState = { step };
    if (scale !== undefined && typeof scale !== 'number') s.scale = scale;
    if (buf !== undefined && typeof buf !== 'number') s.momentumBuffer = buf;
    return s;
  }
}

/**
 * Param groups for a model: the selected weights (default `*.weight` of rank >= 2) constrained,
 * every other parameter (biases, normalisation) unconstrained.
 */
export function askewParamGroups(model: Module, select: ParamSelector = defaultWeightSelector): ParamGroupInput<AskewHyper>[] {
  const quantized: Tensor[] = [];
  const rest: Tensor[] = [];
  for (const [name, p] of model.namedParameters()) (select(name, p) ? quantized : rest).push(p);
  const groups: ParamGroupInput<AskewHyper>[] = [];
  if (quantized.length > 0) groups.push({ params: quantized, quantize: true });
  if (rest.length > 0) groups.push({ params: rest, quantize: false });
  return groups;
}

function isGroupList(params: unknown): params is readonly (ParamGroupInput<AskewHyper> & { table?: TableSpec; bits?: number })[] {
  return Array.isArray(params) && params.length > 0 && params.every((g) => typeof g === 'object' && g !== null && 'params' in g);
}
