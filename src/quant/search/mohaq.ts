/**
 * Multi-objective mixed-precision search of a network (MOHAQ, Rezk et al. 2022): NSGA-II over
 * per-layer bit widths, minimizing the error and one or more costs. Every candidate is scored by
 * post-training quantization (`evaluateAssignment` 'ptq': calibrate and evaluate, the float model
 * restored after each); a few front candidates — beacons — are retrained ('qat') and lend their
 * PTQ→QAT error reduction to their neighbours (`beacons.ts`; by default relative to the float
 * model's error, so that a large reduction at a poor beacon is not lent in full to better neighbours). The initial population holds the
 * uniform assignments (W2, W3, ... at the widest activation bits), evaluated exactly like every
 * other candidate, so the reported front is comparable to them point for point.
 */
import type { TensorModule } from '../../nn/module.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { evaluate as evaluateModel } from '../../train/fit.ts';
import { describeLayers } from './layers.ts';
import { totalCost } from './costs.ts';
import { evaluateAssignmentSync, type EvaluateAssignmentOptions, type SearchData } from './evaluate.ts';
import type { BitAssignment, BitChoice, CostModel, LayerInfo } from './types.ts';
import { nsga2, nonDominated, type Genome } from './nsga2.ts';
import { BeaconSet, beaconHooks } from './beacons.ts';

/** One evaluated bit assignment. */
export interface SearchCandidate {
  readonly assignment: BitAssignment;
  /** Accuracy the search ranks on (beacon-corrected PTQ accuracy for NSGA-II). */
  readonly accuracy: number;
  /** Accuracy after post-training quantization, when measured. */
  readonly ptqAccuracy?: number;
  /** Accuracy after QAT fine-tuning, when this candidate was retrained (a beacon, or a final check). */
  readonly retrainedAccuracy?: number;
  /** Cost by cost-model name, in that model's unit. */
  readonly costs: Readonly<Record<string, number>>;
  /** 'W4A8' when every layer has the same bits and the search seeded it as a reference. */
  readonly uniform?: string;
}

export interface BitSpaceOptions {
  /** Candidate weight bits (default [2, 3, 4, 8]). */
  readonly wBits?: readonly number[];
  /** Candidate activation bits (default [8]). */
  readonly aBits?: readonly number[];
}

/** The per-layer options: every (w, a) of the two lists, ordered by w then a (mutation steps move to a neighbour). */
export function bitChoices(options: BitSpaceOptions = {}): BitChoice[] {
  const wBits = [...new Set(options.wBits ?? [2, 3, 4, 8])].sort((x, y) => x - y);
  const aBits = [...new Set(options.aBits ?? [8])].sort((x, y) => x - y);
  for (const [name, list] of [['wBits', wBits], ['aBits', aBits]] as const) {
    if (list.length === 0) throw new Error(`bitChoices: ${name} is empty`);
    for (const b of list) if (!Number.isInteger(b) || b < 1 || b > 16) throw new Error(`bitChoices: ${name} entries must be integers in [1, 16], got ${b}`);
  }
  return wBits.flatMap((w) => aBits.map((a) => ({ w, a })));
}

/** The label of a uniform assignment, e.g. 'W4A8'. */
export function uniformLabel(choice: BitChoice): string {
  return `W${choice.w}A${choice.a}`;
}

/** Costs of an assignment under every model, keyed by model name. */
export function assignmentCosts(costs: readonly CostModel[], layers: readonly LayerInfo[], assignment: BitAssignment): Record<string, number> {
  return Object.fromEntries(costs.map((c) => [c.name, totalCost(c, layers, assignment)]));
}

export interface BeaconOptions {
  /** Most retrained candidates (default 4). */
  readonly maxBeacons?: number;
  /** Correction radius in RMS log2-bits per layer (default 0.6: one layer changed by ×2 in a 3-layer net, or two layers in a 5+-layer net partly). */
  readonly radius?: number;
  /** A beacon round every this many generations (default 2). */
  readonly every?: number;
  /** QAT fine-tune steps of a beacon (default 100). */
  readonly qatSteps?: number;
  /** QAT learning rate (default 1e-4). */
  readonly qatLr?: number;
  /**
   * 'relative' (default): a neighbour's excess error over the float model is scaled by the
   * beacon's QAT/PTQ excess ratio; 'additive': the beacon's error reduction is subtracted (see
   * `BeaconSet.correct`).
   */
  readonly correction?: 'relative' | 'additive';
}

export interface Nsga2SearchOptions extends BitSpaceOptions {
  /** Cost objectives (at least one), minimized with the error. */
  readonly costs: readonly CostModel[];
  readonly populationSize?: number;
  readonly generations?: number;
  readonly seed?: number;
  readonly crossoverRate?: number;
  readonly mutationRate?: number;
  /** Seed the initial population with the uniform assignments (default true). */
  readonly seedUniform?: boolean;
  /** Options of every PTQ evaluation (plan base, calibration samples). */
  readonly evaluation?: Omit<EvaluateAssignmentOptions, 'method' | 'qatSteps' | 'qatLr' | 'progress' | 'inspect'>;
  /** Beacon-based correction (default on, see `BeaconOptions`); false: PTQ errors only. */
  readonly beacons?: false | BeaconOptions;
  /** Polled between evaluations; true stops the search and keeps what was evaluated. */
  shouldStop?(): boolean;
  /** After each new PTQ evaluation: the candidate (PTQ accuracy) and the number done. */
  onEvaluation?(candidate: SearchCandidate, evaluations: number): void;
  /** After a beacon was retrained. */
  onBeacon?(candidate: SearchCandidate): void;
  /** After each generation. */
  onGeneration?(generation: number, evaluations: number): void;
}

export interface Nsga2SearchResult {
  readonly layers: LayerInfo[];
  readonly choices: BitChoice[];
  /** Accuracy of the float model on `data.eval` (the floor of the relative beacon correction). */
  readonly floatAccuracy: number;
  /** Every evaluated candidate with its final (corrected) accuracy. */
  readonly candidates: SearchCandidate[];
  /** Non-dominated candidates on (accuracy ↑, every cost ↓), sorted by the first cost. */
  readonly front: SearchCandidate[];
  /** The uniform reference assignments (evaluated like the others). */
  readonly uniform: SearchCandidate[];
  /** The retrained candidates. */
  readonly beacons: SearchCandidate[];
  readonly evaluations: number;
  readonly generations: number;
  readonly stopped: boolean;
}

/** QAT score of an assignment (`evaluateAssignment` 'qat': calibrate, fine-tune, evaluate; the float model is restored). */
export function retrainAssignment(model: TensorModule, assignment: BitAssignment, data: SearchData, options: Omit<EvaluateAssignmentOptions, 'method'>): { accuracy: number; loss: number } {
  return evaluateAssignmentSync(model, assignment, data, { ...options, method: 'qat' });
}

function sampleShape(data: SearchData): number[] {
  for (const { x } of data.calibration as Iterable<{ x: Tensor }>) return x.shape.slice(1);
  throw new Error('nsga2Search: the calibration data is empty');
}

/**
 * NSGA-II + beacons over the bit widths of `model`'s Conv2d / Linear layers (see the module
 * comment). `model` is a trained float model; it is quantized and restored for every candidate.
 */
export async function nsga2Search(model: TensorModule, data: SearchData, options: Nsga2SearchOptions): Promise<Nsga2SearchResult> {
  if (options.costs.length === 0) throw new Error('nsga2Search: give at least one cost model');
  const layers = describeLayers(model, sampleShape(data));
  const choices = bitChoices(options);
  const searchActivations = new Set(choices.map((c) => c.a)).size > 1;
  const assignmentOf = (genome: Genome): BitAssignment => Object.fromEntries(layers.map((l, i) => [l.name, choices[genome[i]!]!]));
  const position = (genome: Genome): number[] => {
    const w = genome.map((g) => Math.log2(choices[g]!.w));
    return searchActivations ? [...w, ...genome.map((g) => Math.log2(choices[g]!.a))] : w;
  };
  const evaluation = options.evaluation ?? {};
  const widestA = Math.max(...choices.map((c) => c.a));
  const uniformGenomes = options.seedUniform === false ? [] : choices.map((c, i) => (c.a === widestA ? layers.map(() => i) : null)).filter((g): g is number[] => g !== null);
  const uniformKeys = new Map(uniformGenomes.map((g) => [g.join(','), uniformLabel(choices[g[0]!]!)]));
  let evaluations = 0;

  const evaluate = (genome: Genome): number[] => {
    const assignment = assignmentOf(genome);
    const score = evaluateAssignmentSync(model, assignment, data, { ...evaluation, method: 'ptq' });
    const costs = assignmentCosts(options.costs, layers, assignment);
    evaluations++;
    options.onEvaluation?.({ assignment, accuracy: score.accuracy, ptqAccuracy: score.accuracy, costs, uniform: uniformKeys.get(genome.join(',')) }, evaluations);
    return [1 - score.accuracy, ...options.costs.map((c) => costs[c.name]!)];
  };

  const beaconOptions = options.beacons === false ? null : options.beacons ?? {};
  const floatAccuracy = evaluateModel(model, data.eval).accuracy;
  const relative = (beaconOptions?.correction ?? 'relative') === 'relative';
  const set = new BeaconSet({ radius: beaconOptions?.radius ?? 0.6, ...(relative ? { floorError: 1 - floatAccuracy } : {}) });
  const retrainedByKey = new Map<string, number>();
  const hooks = beaconOptions
    ? beaconHooks({
      beacons: set,
      position,
      maxBeacons: beaconOptions.maxBeacons ?? 4,
      every: beaconOptions.every ?? 2,
      retrain: (genome, ptqError) => {
        const assignment = assignmentOf(genome);
        const score = retrainAssignment(model, assignment, data, {
          ...evaluation, qatSteps: beaconOptions.qatSteps ?? 100, qatLr: beaconOptions.qatLr ?? 1e-4, seed: options.seed ?? 0,
        });
        retrainedByKey.set(genome.join(','), score.accuracy);
        options.onBeacon?.({
          assignment, accuracy: score.accuracy, ptqAccuracy: 1 - ptqError, retrainedAccuracy: score.accuracy,
          costs: assignmentCosts(options.costs, layers, assignment), uniform: uniformKeys.get(genome.join(',')),
        });
        return 1 - score.accuracy;
      },
    })
    : null;

  const result = await nsga2({
    cardinalities: layers.map(() => choices.length),
    evaluate,
    populationSize: options.populationSize,
    generations: options.generations,
    seed: options.seed,
    crossoverRate: options.crossoverRate,
    mutationRate: options.mutationRate,
    initial: uniformGenomes,
    shouldStop: options.shouldStop,
    ...(hooks ? { transform: hooks.transform, afterGeneration: hooks.afterGeneration } : {}),
    onGeneration: (state) => options.onGeneration?.(state.generation, state.evaluations),
  });

  const candidates: SearchCandidate[] = result.archive.map((ind) => {
    const key = ind.genome.join(',');
    const assignment = assignmentOf(ind.genome);
    const retrained = retrainedByKey.get(key);
    return {
      assignment,
      accuracy: 1 - ind.objectives[0]!,
      ptqAccuracy: 1 - ind.raw[0]!,
      ...(retrained !== undefined ? { retrainedAccuracy: retrained } : {}),
      costs: Object.fromEntries(options.costs.map((c, i) => [c.name, ind.raw[i + 1]!])),
      ...(uniformKeys.has(key) ? { uniform: uniformKeys.get(key)! } : {}),
    };
  });
  return {
    layers,
    choices,
    floatAccuracy,
    candidates,
    front: candidateFront(candidates, options.costs.map((c) => c.name)),
    uniform: candidates.filter((c) => c.uniform !== undefined),
    beacons: candidates.filter((c) => c.retrainedAccuracy !== undefined),
    evaluations: result.evaluations,
    generations: result.generations,
    stopped: result.stopped,
  };
}

/** Non-dominated candidates on (accuracy ↑, each named cost ↓), one per distinct point, sorted by the first cost. */
export function candidateFront(candidates: readonly SearchCandidate[], costNames: readonly string[]): SearchCandidate[] {
  const wrapped = candidates.map((c) => ({ c, objectives: [-c.accuracy, ...costNames.map((n) => c.costs[n]!)] }));
  return nonDominated(wrapped).map((w) => w.c).sort((a, b) => a.costs[costNames[0]!]! - b.costs[costNames[0]!]! || b.accuracy - a.accuracy);
}

/**
 * The candidate to deploy under a budget: the most accurate one whose `cost` is ≤ `budget`
 * (ties: the cheaper one); null when none fits.
 */
export function chooseWithinBudget(candidates: readonly SearchCandidate[], cost: string, budget: number): SearchCandidate | null {
  return bestWithinBudget(candidates, cost, budget, 1)[0] ?? null;
}

/** The `count` most accurate candidates whose `cost` is within `budget` (ties: the cheaper first). */
export function bestWithinBudget(candidates: readonly SearchCandidate[], cost: string, budget: number, count: number): SearchCandidate[] {
  return candidates
    .filter((c) => c.costs[cost] !== undefined && c.costs[cost]! <= budget)
    .sort((x, y) => y.accuracy - x.accuracy || x.costs[cost]! - y.costs[cost]!)
    .slice(0, Math.max(0, count));
}

export interface RankByRetrainingOptions extends Omit<EvaluateAssignmentOptions, 'method'> {
  /** Called after each candidate is retrained, with its index in `candidates`. */
  readonly onCandidate?: (candidate: SearchCandidate, index: number) => void;
  /** Polled before each candidate; the ranking then holds the ones retrained so far. */
  readonly shouldStop?: () => boolean;
}

/**
 * Ranks candidates by retraining each (calibration + QAT fine-tune of `model`, restored after
 * each; see `retrainAssignment`) and scoring it on `data.eval`: post-training scores can mis-rank
 * plans whose errors a short fine-tune repairs unevenly (e.g. very low activation widths). Returns
 * the retrained candidates, `retrainedAccuracy` set, best first (ties: the higher PTQ accuracy).
 */
export function rankByRetraining(model: TensorModule, candidates: readonly SearchCandidate[], data: SearchData, options: RankByRetrainingOptions = {}): SearchCandidate[] {
  const { onCandidate, shouldStop, ...evaluation } = options;
  const ranked: SearchCandidate[] = [];
  for (const [i, c] of candidates.entries()) {
    if (shouldStop?.()) break;
    const retrained: SearchCandidate = { ...c, retrainedAccuracy: retrainAssignment(model, c.assignment, data, evaluation).accuracy };
    ranked.push(retrained);
    onCandidate?.(retrained, i);
  }
  const ptq = (c: SearchCandidate): number => c.ptqAccuracy ?? c.accuracy;
  return ranked.sort((x, y) => y.retrainedAccuracy! - x.retrainedAccuracy! || ptq(y) - ptq(x));
}
