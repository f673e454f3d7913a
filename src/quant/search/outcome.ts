/**
 * What every search method hands back (`SearchOutcome`), the exact-allocation search as a method
 * of the same shape (`exactSearch`: PTQ-perturbation errors + allocateExact, its proxy front
 * checked by PTQ), and the three output files: plan.json (the chosen plan, which prepareQat /
 * calibrate / convert accept), front.json (every evaluated candidate and the front) and
 * report.html (Pareto plots + per-layer table). Each file is written atomically.
 */
import { join } from 'node:path';
import { makeDirs } from '../../format/files.ts';
import type { TensorModule } from '../../nn/module.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { allocateExact, allocateExactMulti, layerOptions, layerOptionsMulti, NoAllocationFitsError, paretoFront as exactFront, type Allocation, type MultiCostAllocation } from './allocate.ts';
import { layerChoiceCost, uniformAssignment } from './costs.ts';
import { evaluateAssignmentSync, type EvaluateAssignmentOptions, type SearchData } from './evaluate.ts';
import { describeLayers } from './layers.ts';
import { planFromAssignment, savePlanFile, type PlanBase } from './plan.ts';
import { activationPerturbation, ptqPerturbation } from './sensitivity.ts';
import { pruneLayerOptions, type PruneOptionsConfig } from './prune.ts';
import type { BitAssignment, BitChoice, CostModel, LayerInfo } from './types.ts';
import { assignmentCosts, bitChoices, candidateFront, uniformLabel, type BitSpaceOptions, type SearchCandidate } from './mohaq.ts';
import { costDisplay, type Budget } from './budget.ts';
import { ACCURACY_METRIC, formatSi, PERPLEXITY_METRIC, writeSearchReport, writeTextAtomic, type PointKind, type ReportMetric, type ReportPoint, type SearchReport } from './report.ts';

/** The result of a search, whatever the method. */
export interface SearchOutcome {
  readonly method: 'ilp' | 'nsga2' | 'sdq' | 'haq' | 'spos';
  readonly title: string;
  /** Extra summary lines (model, dataset, samples, time...). */
  readonly summary: readonly (readonly [string, string])[];
  readonly layers: readonly LayerInfo[];
  /** Cost models; the budgeted one first. */
  readonly costs: readonly CostModel[];
  readonly budget: Budget;
  /** Every evaluated candidate (uniform references included). */
  readonly candidates: readonly SearchCandidate[];
  /** Non-dominated candidates. */
  readonly front: readonly SearchCandidate[];
  /** The plan to deploy (null when nothing fits the budget). */
  readonly chosen: SearchCandidate | null;
  /** Accuracy of the chosen plan (and the float model) on data the search did not see, when measured. */
  readonly heldOut?: { readonly samples: number; readonly chosen?: number; readonly float?: number };
  readonly floatAccuracy?: number;
  /** Per-layer sensitivity numbers for the table (e.g. ΔL at the lowest width). */
  readonly sensitivity?: Readonly<Record<string, number>>;
  readonly notes?: readonly string[];
  /** Quantizer kinds of the emitted plan. */
  readonly base?: PlanBase;
  /** Method-specific record (kept in front.json). */
  readonly details?: Record<string, unknown>;
  readonly stopped?: boolean;
  /**
   * What candidate scores (`accuracy`, `floatAccuracy`, `heldOut`) are: 'accuracy' (default) or
   * 'perplexity' (a language model: the score is 1/perplexity, see quant/search/lm.ts).
   */
  readonly metric?: 'accuracy' | 'perplexity';
}

/** The report metric of an outcome. */
function metricOf(outcome: SearchOutcome): ReportMetric {
  return outcome.metric === 'perplexity' ? PERPLEXITY_METRIC : ACCURACY_METRIC;
}

function bitsString(layers: readonly LayerInfo[], assignment: BitAssignment): string {
  const single = new Set(Object.values(assignment).map((c) => c.a)).size === 1;
  return layers.map((l) => {
    const c = assignment[l.name];
    return c === undefined ? 'f' : single ? String(c.w) : `${c.w}/${c.a}`;
  }).join(' ');
}

/** The report of an outcome: costs in display units, uniform / front / chosen / beacon points, the chosen plan's layers. */
export function buildSearchReport(outcome: SearchOutcome): SearchReport {
  const displays = outcome.costs.map((c) => ({ model: c, display: costDisplay(c.name, c.unit) }));
  const onFront = new Set(outcome.front);
  const kindOf = (c: SearchCandidate): PointKind => {
    if (c === outcome.chosen) return 'chosen';
    if (c.uniform !== undefined) return 'uniform';
    if (c.retrainedAccuracy !== undefined && outcome.method === 'nsga2') return 'beacon';
    return onFront.has(c) ? 'front' : 'evaluated';
  };
  const points: ReportPoint[] = outcome.candidates.map((c) => ({
    accuracy: c.accuracy,
    kind: kindOf(c),
    label: c === outcome.chosen ? 'plan' : c.uniform,
    bits: bitsString(outcome.layers, c.assignment),
    costs: Object.fromEntries(displays.map(({ model, display }) => [model.name, c.costs[model.name]! * display.scale])),
  }));
  const accuracies = outcome.candidates.map((c) => c.accuracy);
  const best = Math.max(...accuracies, outcome.floatAccuracy ?? 0);
  // The axis ends 10 points below the best accuracy, or (perplexity) at 3x the best perplexity.
  const floor = outcome.metric === 'perplexity' ? best / 3 : best - 0.1;
  const minAccuracy = accuracies.length ? Math.max(Math.min(...accuracies), floor) : undefined;
  const metric = metricOf(outcome);
  const chosen = outcome.chosen;
  const primary = displays[0]!;
  const summary: [string, string][] = [
    ['method', outcome.method],
    ['budget', `${outcome.budget.text} (${formatSi(outcome.budget.value * primary.display.scale, primary.display.unit)})`],
    ...outcome.summary.map(([k, v]) => [k, v] as [string, string]),
    ['evaluated candidates', String(outcome.candidates.length)],
  ];
  if (chosen) {
    summary.push(['chosen plan', `${bitsString(outcome.layers, chosen.assignment)} — ${metric.name} ${metric.text(chosen.accuracy)}, ${displays.map(({ model, display }) => formatSi(chosen.costs[model.name]! * display.scale, display.unit)).join(', ')}`]);
  } else {
    summary.push(['chosen plan', 'none fits the budget']);
  }
  if (outcome.heldOut?.chosen !== undefined) {
    summary.push([`held-out ${metric.name}`, `${metric.text(outcome.heldOut.chosen)} on ${outcome.heldOut.samples} samples the search did not use${outcome.heldOut.float !== undefined ? ` (float32 ${metric.text(outcome.heldOut.float)})` : ''}`]);
  }
  if (outcome.stopped) summary.push(['stopped early', 'yes: the best plan found so far']);
  return {
    title: outcome.title,
    summary,
    costs: displays.map(({ model, display }, i) => ({
      key: model.name, label: display.label, unit: display.unit, ...(i === 0 ? { budget: outcome.budget.value * display.scale } : {}),
    })),
    points,
    floatAccuracy: outcome.floatAccuracy,
    minAccuracy,
    layers: outcome.layers.map((l) => {
      const c = chosen?.assignment[l.name];
      return {
        name: l.name, type: l.type, params: l.weightCount, macs: l.macs,
        weightBits: c?.w ?? null, activationBits: c?.a ?? null,
        ...(c ? { costs: Object.fromEntries(displays.map(({ model, display }) => [model.name, layerChoiceCost(model, l, c) * display.scale])) } : {}),
        ...(outcome.sensitivity?.[l.name] !== undefined ? { sensitivity: outcome.sensitivity[l.name]! } : {}),
      };
    }),
    notes: outcome.notes,
    ...(outcome.metric === 'perplexity' ? { metric } : {}),
  };
}

/** The JSON record of an outcome (front.json). */
export function outcomeJson(outcome: SearchOutcome): Record<string, unknown> {
  const index = new Map(outcome.candidates.map((c, i) => [c, i]));
  return {
    format: 'lowbit-search', version: 1, method: outcome.method, title: outcome.title, ...(outcome.metric === 'perplexity' ? { metric: 'perplexity', score: '1/perplexity' } : {}),
    budget: { ...outcome.budget, unit: outcome.costs[0]!.unit },
    costs: outcome.costs.map((c) => ({ name: c.name, unit: c.unit })),
    layers: outcome.layers.map((l) => ({ name: l.name, type: l.type, weightCount: l.weightCount, macs: l.macs })),
    floatAccuracy: outcome.floatAccuracy ?? null,
    heldOut: outcome.heldOut ?? null,
    stopped: outcome.stopped ?? false,
    chosen: outcome.chosen ? index.get(outcome.chosen) ?? null : null,
    front: outcome.front.map((c) => index.get(c)),
    candidates: outcome.candidates,
    details: outcome.details ?? {},
  };
}

/** Writes plan.json (when a plan was chosen), front.json and report.html into `dir`; returns their paths. */
export function writeSearchOutputs(dir: string, outcome: SearchOutcome): { plan: string | null; front: string; report: string } {
  makeDirs(dir);
  let plan: string | null = null;
  if (outcome.chosen) {
    plan = join(dir, 'plan.json');
    const c = outcome.chosen;
    savePlanFile(plan, planFromAssignment(c.assignment, { firstLayer: outcome.layers[0]?.name, ...outcome.base }), c.assignment, {
      method: outcome.method, budget: outcome.budget, accuracy: c.accuracy, ptqAccuracy: c.ptqAccuracy ?? null,
      retrainedAccuracy: c.retrainedAccuracy ?? null, costs: c.costs, heldOut: outcome.heldOut ?? null,
      ...(outcome.metric === 'perplexity' ? { metric: 'perplexity', perplexity: 1 / c.accuracy, score: '1/perplexity' } : {}),
    });
  }
  const front = join(dir, 'front.json');
  writeTextAtomic(front, `${JSON.stringify(outcomeJson(outcome), null, 1)}\n`);
  const report = join(dir, 'report.html');
  writeSearchReport(report, buildSearchReport(outcome));
  return { plan, front, report };
}

export interface ExactSearchOptions extends BitSpaceOptions {
  readonly costs: readonly CostModel[];
  readonly budget: number;
  /**
   * Budgets on the other cost models, aligned with `costs` (`budgets[k]` limits `costs[k]`;
   * index 0 is ignored, `budget` limits `costs[0]`; undefined = unconstrained). E.g. the size of
   * uniform 3-bit weights AND the BitOps of uniform W3A3, so activation bits are not free.
   */
  readonly budgets?: readonly (number | undefined)[];
  /** Options of every PTQ evaluation. */
  readonly evaluation?: Omit<EvaluateAssignmentOptions, 'method' | 'qatSteps' | 'qatLr' | 'progress' | 'inspect'>;
  /** How many allocations of the proxy front to check by PTQ, spread over its cost range (default 8). */
  readonly frontPoints?: number;
  /**
   * Also choose per layer how many output channels to keep (0-bit channels, `pruneLayerOptions`:
   * the lowest-scoring channels go; error = the PTQ loss increase of the width plus the float
   * model's loss increase with those channels zeroed). `ratios` are keep ratios, e.g. [1, 0.75, 0.5].
   */
  readonly prune?: Pick<PruneOptionsConfig, 'ratios' | 'scores' | 'prunable'>;
  /** Progress of the sensitivity measurement and evaluations. */
  onProgress?(stage: 'sensitivity' | 'evaluate', done: number, total: number): void;
  shouldStop?(): boolean;
}

export interface ExactSearchResult {
  readonly layers: LayerInfo[];
  readonly candidates: SearchCandidate[];
  readonly uniform: SearchCandidate[];
  readonly front: SearchCandidate[];
  /** The allocation at the budget, evaluated. */
  readonly chosen: SearchCandidate;
  /** Layer → bits → PTQ loss increase of that layer alone (the allocator's error). */
  readonly deltaLoss: Record<string, Record<number, number>>;
  readonly stopped: boolean;
}

function sampleShape(data: SearchData): number[] {
  for (const { x } of data.calibration as Iterable<{ x: Tensor }>) return x.shape.slice(1);
  throw new Error('exactSearch: the calibration data is empty');
}

/**
 * Adapter over the exact allocator: per-layer errors are the PTQ loss perturbations
 * (`ptqPerturbation`, weights of one layer at a time, measured on `data.eval`), the allocation
 * at the budget is `allocateExact` on the first cost; `frontPoints` allocations of the proxy's
 * Pareto front and the uniform assignments are then measured by real PTQ like NSGA-II
 * candidates, for the plot. Activation widths: with one width in `aBits` (default 8) only weights
 * are allocated; with several, every (w, a) pair is a choice and its error adds the loss increase
 * of the layer's input alone at a bits (`activationPerturbation`) — useful under a BitOps budget
 * (`budgets` adds limits on the other cost models: `allocateExactMulti`).
 */
export async function exactSearch(model: TensorModule, data: SearchData, options: ExactSearchOptions): Promise<ExactSearchResult> {
  const primary = options.costs[0];
  if (!primary) throw new Error('exactSearch: give at least one cost model');
  const layers = describeLayers(model, sampleShape(data));
  const aList = [...new Set(options.aBits ?? [8])].sort((x, y) => x - y);
  const multiA = aList.length > 1;
  if (multiA && aList[0]! < 2) throw new Error('exactSearch: several activation widths need each >= 2 (the activation error is a calibrated PTQ perturbation)');
  if (multiA && options.prune) throw new Error('exactSearch: pruning works with one activation width');
  const choices = bitChoices({ wBits: options.wBits, aBits: multiA ? aList : [aList[aList.length - 1]!] });
  const a = choices[0]!.a;
  const wBits = [...new Set(choices.map((c) => c.w))];
  const progress = (d: number, t: number): void => options.onProgress?.('sensitivity', d, t);
  const perturbation = ptqPerturbation(model, data.eval, wBits, { onProgress: progress });
  const deltaLoss = Object.fromEntries(perturbation.map((p) => [p.name, p.deltaLoss]));
  // Several activation widths: the error of (w, a) adds the loss increase of the layer's input alone at a bits.
  const actLoss = multiA ? Object.fromEntries(activationPerturbation(model, data.calibration, data.eval, aList, { onProgress: progress }).map((p) => [p.name, p.deltaLoss])) : null;
  const error = (layer: LayerInfo, choice: BitChoice): number => Math.max(0, deltaLoss[layer.name]![choice.w]!) + (actLoss ? Math.max(0, actLoss[layer.name]![choice.a]!) : 0);
  const opts = options.prune
    ? pruneLayerOptions(model, layers, data.eval, primary, {
      ...options.prune, widths: wBits, a, error: 'deltaLoss', widthError: (layer, w) => Math.max(0, deltaLoss[layer.name]![w]!),
      onProgress: progress,
    })
    : layerOptions(layers, choices, primary, error);
  // With pruning and in-model latency, option costs may carry a constant offset over the predicted latency.
  const offset = 'costOffset' in opts ? (opts as { costOffset: number }).costOffset : 0;
  // The other cost models with a budget of their own.
  const limited = options.costs.flatMap((cost, k) => {
    const budget = k > 0 ? options.budgets?.[k] : undefined;
    return budget === undefined ? [] : [{ cost, budget }];
  });
  if (limited.length > 0 && options.prune) throw new Error('exactSearch: several budgets work without pruning');
  let atBudget: Allocation | MultiCostAllocation;
  try {
    atBudget = limited.length === 0
      ? allocateExact(opts, options.budget + offset)
      : allocateExactMulti(layerOptionsMulti(layers, choices, [primary, ...limited.map((l) => l.cost)], error), [options.budget, ...limited.map((l) => l.budget)]);
  } catch (e) {
    if (!(e instanceof NoAllocationFitsError)) throw e;
    // In the caller's terms: without the offset, with the cost names.
    throw new NoAllocationFitsError([options.budget, ...limited.map((l) => l.budget)], e.minimum.map((m, k) => (k === 0 ? m - offset : m)), [primary.name, ...limited.map((l) => l.cost.name)]);
  }
  const front = exactFront(opts);
  const count = Math.max(2, options.frontPoints ?? 8);
  const picked: Allocation[] = [];
  for (let i = 0; i < count; i++) {
    const target = front[0]!.cost + ((front[front.length - 1]!.cost - front[0]!.cost) * i) / (count - 1);
    const nearest = front.reduce((best, f) => (Math.abs(f.cost - target) < Math.abs(best.cost - target) ? f : best));
    if (!picked.includes(nearest)) picked.push(nearest);
  }
  const toEvaluate: { assignment: BitAssignment; uniform?: string }[] = [
    ...choices.map((c) => ({ assignment: uniformAssignment(layers, c.w, c.a), uniform: uniformLabel(c) })),
    { assignment: atBudget.assignment },
    ...picked.map((p) => ({ assignment: p.assignment })),
  ];
  const seen = new Map<string, SearchCandidate>();
  const candidates: SearchCandidate[] = [];
  let stopped = false;
  let chosen: SearchCandidate | null = null;
  for (const [i, item] of toEvaluate.entries()) {
    const key = JSON.stringify(layers.map((l) => item.assignment[l.name]));
    let cand = seen.get(key);
    if (!cand) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      // The allocation at the budget is always measured; the rest only until a stop.
      if (options.shouldStop?.() && item.assignment !== atBudget.assignment) {
        stopped = true;
        continue;
      }
      const score = evaluateAssignmentSync(model, item.assignment, data, { ...options.evaluation, method: 'ptq' });
      cand = { assignment: item.assignment, accuracy: score.accuracy, ptqAccuracy: score.accuracy, costs: assignmentCosts(options.costs, layers, item.assignment), ...(item.uniform ? { uniform: item.uniform } : {}) };
      seen.set(key, cand);
      candidates.push(cand);
    }
    if (item.assignment === atBudget.assignment) chosen = cand;
    options.onProgress?.('evaluate', i + 1, toEvaluate.length);
  }
  return {
    layers,
    candidates,
    uniform: candidates.filter((c) => c.uniform !== undefined),
    front: candidateFront(candidates, options.costs.map((c) => c.name)),
    chosen: chosen!,
    deltaLoss,
    stopped,
  };
}
