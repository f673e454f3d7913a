/**
 * Exact budgeted bit allocation: choose one option (bit widths) per layer minimising the summed
 * error estimate subject to a summed cost ≤ budget — a multiple-choice knapsack, solved exactly by
 * dynamic programming over Pareto fronts of partial solutions. Per-channel allocation inside a
 * layer is the same problem with the layer's channels as the groups.
 */
import { layerChoiceCost } from './costs.ts';
import type { BitAssignment, BitChoice, CostModel, LayerInfo, LayerOption } from './types.ts';

/** The options of one layer (or channel) to choose from. */
export interface LayerChoices {
  readonly name: string;
  readonly options: readonly LayerOption[];
}

/** One solution: the option index chosen per layer, its total cost and error. */
export interface Allocation {
  readonly cost: number;
  readonly error: number;
  /** Index into each layer's `options`, in layer order. */
  readonly choices: readonly number[];
  readonly assignment: BitAssignment;
}

interface State {
  cost: number;
  error: number;
  /** Index of the state it extends in the previous layer's front (−1 for the start). */
  parent: number;
  option: number;
}

/** Throws unless there are layers, each with options of finite costs ≥ 0 (`costsOf`) and finite errors. */
function checkChoices<O extends { readonly error: number }>(
  what: string, layers: readonly { readonly name: string; readonly options: readonly O[] }[], costsOf: (o: O) => readonly number[],
): void {
  if (layers.length === 0) throw new Error(`${what}: no layers`);
  for (const l of layers) {
    if (l.options.length === 0) throw new Error(`${what}: layer '${l.name}' has no option`);
    for (const o of l.options) {
      const costs = costsOf(o);
      if (!costs.every((c) => Number.isFinite(c) && c >= 0)) throw new Error(`${what}: layer '${l.name}' has an option with cost ${costs.join(', ')} (costs must be finite and >= 0)`);
      if (!Number.isFinite(o.error)) throw new Error(`${what}: layer '${l.name}' has an option with error ${o.error}`);
    }
  }
}

/** The option index per layer of state `index` of the last front, following the parent links back. */
function backtrackChoices(fronts: readonly (readonly { parent: number; option: number }[])[], index: number): number[] {
  const choices = new Array<number>(fronts.length);
  let i = index;
  for (let l = fronts.length - 1; l >= 0; l--) {
    const s = fronts[l]![i]!;
    choices[l] = s.option;
    i = s.parent;
  }
  return choices;
}

/**
 * Every Pareto-optimal allocation (no other has both lower-or-equal cost and lower-or-equal error,
 * one strictly lower) with cost ≤ `budget` (default ∞), sorted by increasing cost (and so
 * decreasing error). Exact: a dominated partial solution over the first k layers can be replaced
 * by its dominator in any completion without loss, so keeping only each prefix's Pareto front
 * loses no optimum. Costs must be ≥ 0 (partials over budget are pruned).
 */
export function paretoFront(layers: readonly LayerChoices[], budget = Infinity): Allocation[] {
  checkChoices('allocate', layers, (o) => [o.cost]);
  const limit = budget + Math.abs(budget) * 1e-12;
  const fronts: State[][] = [];
  let front: State[] = [{ cost: 0, error: 0, parent: -1, option: -1 }];
  for (const layer of layers) {
    const next: State[] = [];
    front.forEach((s, si) => {
      layer.options.forEach((o, oi) => {
        const cost = s.cost + o.cost;
        if (cost <= limit) next.push({ cost, error: s.error + o.error, parent: si, option: oi });
      });
    });
    next.sort((a, b) => a.cost - b.cost || a.error - b.error);
    const kept: State[] = [];
    for (const s of next) if (kept.length === 0 || s.error < kept[kept.length - 1]!.error) kept.push(s);
    if (kept.length === 0) return [];
    fronts.push(kept);
    front = kept;
  }
  return front.map((_, i) => backtrack(layers, fronts, i));
}

function backtrack(layers: readonly LayerChoices[], fronts: readonly State[][], index: number): Allocation {
  const choices = backtrackChoices(fronts, index);
  const last = fronts[layers.length - 1]![index]!;
  const assignment: BitAssignment = {};
  layers.forEach((l, k) => (assignment[l.name] = l.options[choices[k]!]!.choice));
  return { cost: last.cost, error: last.error, choices, assignment };
}

/**
 * No allocation meets the budget(s). `minimum[k]` is the least total of cost k over all
 * allocations (each cost on its own), in the same units as `budgets[k]`; `costs` names them when
 * known (exactSearch fills it in).
 */
export class NoAllocationFitsError extends Error {
  override name = 'NoAllocationFitsError';
  constructor(
    readonly budgets: readonly number[],
    readonly minimum: readonly number[],
    readonly costs: readonly string[] = [],
  ) {
    super(`no allocation fits the budget${budgets.length > 1 ? 's' : ''} ${budgets.join(', ')} (the cheapest costs ${minimum.join(', ')}${budgets.length > 1 ? ', each cost on its own' : ''})`);
  }
}

/**
 * The allocation of least total error with total cost ≤ `budget` (exact; ties: the cheaper one).
 * Throws NoAllocationFitsError when even the cheapest options exceed the budget.
 */
export function allocateExact(layers: readonly LayerChoices[], budget: number): Allocation {
  if (!(typeof budget === 'number' && !Number.isNaN(budget))) throw new Error(`allocateExact: budget must be a number, got ${budget}`);
  const front = paretoFront(layers, budget);
  if (front.length === 0) {
    const minimum = layers.reduce((s, l) => s + Math.min(...l.options.map((o) => o.cost)), 0);
    throw new NoAllocationFitsError([budget], [minimum]);
  }
  return front[front.length - 1]!;
}

/**
 * The layer options of a search: for each layer, every (w, a) in `choices` with its cost under
 * `model` and its error from `error(layer, choice)` (e.g. a PTQ perturbation or a Hessian
 * estimate).
 */
export function layerOptions(layers: readonly LayerInfo[], choices: readonly BitChoice[], model: CostModel, error: (layer: LayerInfo, choice: BitChoice) => number): LayerChoices[] {
  return layers.map((layer) => ({
    name: layer.name,
    options: choices.map((choice) => ({ choice, cost: layerChoiceCost(model, layer, choice), error: error(layer, choice) })),
  }));
}

export interface PerChannelOptions {
  /** Candidate channel widths (each ≥ 2; keys of `channelErrors` by default). */
  readonly bits?: readonly number[];
  /** Input-activation bits of the layer (default 8). */
  readonly a?: number;
}

/**
 * Per-channel weight bits inside one layer: minimises Σ_c error_c(b_c) subject to the layer's
 * weight size Σ_c (weightCount/outChannels)·b_c ≤ `budgetBits` (exact, `allocateExact` over the
 * channels). `channelErrors[b][c]` is channel c's error estimate at b bits (e.g. ½·h_c·‖Q_b(w_c) − w_c‖²
 * with a per-channel Hessian or Fisher trace). Returns the layer's BitChoice: w = the widest
 * channel (the container), `wPerChannel` the channel widths.
 */
export function allocatePerChannel(layer: LayerInfo, channelErrors: Readonly<Record<number, ArrayLike<number>>>, budgetBits: number, options: PerChannelOptions = {}): BitChoice & { error: number; cost: number } {
  const bits = [...(options.bits ?? Object.keys(channelErrors).map(Number))].sort((x, y) => x - y);
  if (bits.length === 0 || bits.some((b) => !Number.isInteger(b) || b < 2 || b > 16)) throw new Error(`allocatePerChannel: channel bit widths must be integers in [2, 16], got ${JSON.stringify(bits)}`);
  const channels = layer.outChannels;
  const perChannel = layer.weightCount / channels;
  for (const b of bits) {
    const e = channelErrors[b];
    if (!e || e.length !== channels) throw new Error(`allocatePerChannel: '${layer.name}' needs ${channels} channel errors at ${b} bits`);
  }
  const groups: LayerChoices[] = [];
  for (let c = 0; c < channels; c++) {
    groups.push({ name: String(c), options: bits.map((b) => ({ choice: { w: b, a: options.a ?? 8 }, cost: perChannel * b, error: channelErrors[b]![c]! })) });
  }
  const best = allocateExact(groups, budgetBits);
  const wPerChannel = best.choices.map((i) => bits[i]!);
  const w = Math.max(...wPerChannel);
  const uniform = wPerChannel.every((b) => b === w);
  return { w, a: options.a ?? 8, ...(uniform ? {} : { wPerChannel }), error: best.error, cost: best.cost };
}

/** One option of a layer under several cost models at once (`costs[k]` under the k-th model). */
export interface MultiCostOption {
  readonly choice: BitChoice;
  readonly costs: readonly number[];
  readonly error: number;
}

/** The options of one layer for `allocateExactMulti`. */
export interface MultiCostLayerChoices {
  readonly name: string;
  readonly options: readonly MultiCostOption[];
}

/** A solution of `allocateExactMulti`: its total cost under every model. */
export interface MultiCostAllocation {
  readonly costs: readonly number[];
  readonly error: number;
  readonly choices: readonly number[];
  readonly assignment: BitAssignment;
}

interface MultiState {
  costs: number[];
  error: number;
  parent: number;
  option: number;
}

/**
 * Keeps the states no other state weakly dominates (all costs ≤ and error ≤; of exact duplicates
 * the first). Sorted by error, a state is dominated iff an earlier kept one has every cost ≤ its
 * own: for two costs that is a prefix minimum of the second cost over the first cost's ranks
 * (a Fenwick tree, O(n log n)); for more costs a scan of the kept states.
 */
function paretoFilter(states: MultiState[]): MultiState[] {
  states.sort((a, b) => a.error - b.error || a.costs[0]! - b.costs[0]! || (a.costs[1] ?? 0) - (b.costs[1] ?? 0));
  const dims = states[0]?.costs.length ?? 0;
  const kept: MultiState[] = [];
  if (dims === 1) {
    let best = Infinity;
    for (const s of states) if (s.costs[0]! < best) {
      best = s.costs[0]!;
      kept.push(s);
    }
    return kept;
  }
  if (dims === 2) {
    const values = [...new Set(states.map((s) => s.costs[0]!))].sort((x, y) => x - y);
    const rank = new Map(values.map((v, i) => [v, i + 1]));
    const tree = new Float64Array(values.length + 1).fill(Infinity);
    for (const s of states) {
      const r = rank.get(s.costs[0]!)!;
      let min = Infinity;
      for (let i = r; i > 0; i -= i & -i) min = Math.min(min, tree[i]!);
      if (min <= s.costs[1]!) continue;
      kept.push(s);
      for (let i = r; i < tree.length; i += i & -i) tree[i] = Math.min(tree[i]!, s.costs[1]!);
    }
    return kept;
  }
  for (const s of states) {
    if (!kept.some((k) => k.costs.every((c, i) => c <= s.costs[i]!))) kept.push(s);
  }
  return kept;
}

/**
 * The allocation of least total error whose total cost under every model is within its budget
 * (`budgets[k]` for `costs[k]`): e.g. the model size of uniform 3-bit weights AND the BitOps of
 * uniform W3A3, so that activation bits cannot be raised for free. Exact, by dynamic programming
 * over the Pareto fronts (all costs and the error) of partial solutions, pruning partials over
 * any budget. Costs must be finite and ≥ 0; ties: the first cost, then the next, lower.
 * Throws when no allocation fits.
 */
export function allocateExactMulti(layers: readonly MultiCostLayerChoices[], budgets: readonly number[]): MultiCostAllocation {
  if (budgets.length === 0 || budgets.some((b) => typeof b !== 'number' || Number.isNaN(b))) throw new Error(`allocateExactMulti: budgets must be numbers, got ${JSON.stringify(budgets)}`);
  checkChoices('allocateExactMulti', layers, (o) => {
    if (o.costs.length !== budgets.length) throw new Error(`allocateExactMulti: an option has ${o.costs.length} costs for ${budgets.length} budgets`);
    return o.costs;
  });
  const limits = budgets.map((b) => b + Math.abs(b) * 1e-12);
  const fronts: MultiState[][] = [];
  let front: MultiState[] = [{ costs: budgets.map(() => 0), error: 0, parent: -1, option: -1 }];
  for (const layer of layers) {
    const next: MultiState[] = [];
    front.forEach((s, si) => {
      layer.options.forEach((o, oi) => {
        const costs = s.costs.map((c, k) => c + o.costs[k]!);
        if (costs.every((c, k) => c <= limits[k]!)) next.push({ costs, error: s.error + o.error, parent: si, option: oi });
      });
    });
    front = paretoFilter(next);
    if (front.length === 0) {
      const minimum = budgets.map((_, k) => layers.reduce((sum, l) => sum + Math.min(...l.options.map((o) => o.costs[k]!)), 0));
      throw new NoAllocationFitsError(budgets, minimum);
    }
    fronts.push(front);
  }
  // The front is sorted by error: its first state is the optimum.
  const choices = backtrackChoices(fronts, 0);
  const best = front[0]!;
  const assignment: BitAssignment = {};
  layers.forEach((l, k) => (assignment[l.name] = l.options[choices[k]!]!.choice));
  return { costs: best.costs, error: best.error, choices, assignment };
}

/** `layerOptions` under several cost models: each option's `costs[k]` is its cost under `models[k]`. */
export function layerOptionsMulti(layers: readonly LayerInfo[], choices: readonly BitChoice[], models: readonly CostModel[], error: (layer: LayerInfo, choice: BitChoice) => number): MultiCostLayerChoices[] {
  return layers.map((layer) => ({
    name: layer.name,
    options: choices.map((choice) => ({ choice, costs: models.map((m) => layerChoiceCost(m, layer, choice)), error: error(layer, choice) })),
  }));
}
