/**
 * NSGA-II (Deb, Pratap, Agarwal, Meyarivan 2002, "A fast and elitist multiobjective genetic
 * algorithm") over integer genomes: gene i takes a value in [0, cardinalities[i]) — for a
 * mixed-precision search, the index of a layer's bit-width choice.
 *
 * One generation: binary tournaments on (rank, crowding distance) pick parents; uniform crossover
 * and per-gene mutation make N children (duplicates of genomes already in the population are
 * re-mutated, so that a small discrete space does not fill up with copies); parents ∪ children are
 * sorted into non-dominated fronts and the best N survive, the last admitted front cut by
 * crowding distance. Every objective is minimized. Evaluations are cached by genome, so an
 * expensive evaluator (PTQ of a network) runs once per distinct candidate.
 *
 * The search is async so that a caller's stop flag (SIGINT, a deadline) is seen between
 * evaluations; `transform` and `afterGeneration` let a caller re-map raw evaluations later (the
 * MOHAQ beacon correction of `beacons.ts` does).
 */
import { Rng } from '../../tensor/random.ts';

/** Objective values of one candidate, every one minimized. */
export type Objectives = readonly number[];

/** A genome: gene i is an integer in [0, cardinalities[i]). */
export type Genome = readonly number[];

/** An evaluated candidate. */
export interface Individual {
  readonly genome: Genome;
  /** What the evaluator returned. */
  readonly raw: Objectives;
  /** The objectives the search ranks on: `transform(genome, raw)`, or `raw`. */
  objectives: Objectives;
  /** Index of the non-dominated front it belongs to in its population (0 = best). */
  rank: number;
  /** Crowding distance within its front (Infinity at the front's ends). */
  crowding: number;
}

/** Progress of a running search, passed to `onGeneration` / `afterGeneration`. */
export interface Nsga2State {
  /** Generations finished (0 after the initial population). */
  readonly generation: number;
  /** The current population (ranked). */
  readonly population: readonly Individual[];
  /** Distinct genomes evaluated so far. */
  readonly evaluations: number;
  /** Every distinct evaluated candidate, in evaluation order. */
  readonly archive: readonly Individual[];
  /** True when `shouldStop` has ended the search (skip expensive work in the callbacks). */
  readonly stopping: boolean;
}

export interface Nsga2Options {
  /** Number of values of each gene (all ≥ 1). */
  readonly cardinalities: readonly number[];
  /** Objectives of a genome (all minimized); called once per distinct genome. */
  evaluate(genome: Genome): Objectives | Promise<Objectives>;
  /** Re-maps raw objectives to the ranked ones (default identity). Must be cheap: it is re-applied to the whole archive. */
  transform?(genome: Genome, raw: Objectives): Objectives;
  /** Population size N (default 24, at least 4). */
  readonly populationSize?: number;
  /** Generations after the initial population (default 20; 0 evaluates the initial population only). */
  readonly generations?: number;
  /** Probability that two parents are crossed (uniform crossover), default 0.9. */
  readonly crossoverRate?: number;
  /** Per-gene mutation probability (default 1 / number of genes). */
  readonly mutationRate?: number;
  /** Seed of the search's own generator (default 0). */
  readonly seed?: number;
  /** Genomes placed in the initial population first (e.g. uniform bit widths); the rest is random. */
  readonly initial?: readonly Genome[];
  /** Polled before every evaluation: true stops the search, keeping everything evaluated so far. */
  shouldStop?(): boolean;
  /**
   * Called after each generation's survival (and after the initial population) with the state;
   * resolve to true when `transform` changed (the whole archive and population are then re-mapped
   * and re-ranked).
   */
  afterGeneration?(state: Nsga2State): boolean | void | Promise<boolean | void>;
  /** Called after each generation (after `afterGeneration`), e.g. for a progress bar. */
  onGeneration?(state: Nsga2State): void;
}

export interface Nsga2Result {
  /** The final population, ranked. */
  readonly population: Individual[];
  /** Non-dominated candidates among everything evaluated (distinct objective vectors, sorted by the first objective). */
  readonly front: Individual[];
  /** Every distinct evaluated candidate, with its final objectives. */
  readonly archive: Individual[];
  readonly evaluations: number;
  /** Generations completed after the initial population. */
  readonly generations: number;
  /** True when `shouldStop` ended the search early. */
  readonly stopped: boolean;
}

/** True when `a` is no worse than `b` in every objective and better in at least one (minimization). */
export function dominates(a: Objectives, b: Objectives): boolean {
  if (a.length !== b.length) throw new Error(`dominates: objective vectors differ in length (${a.length} vs ${b.length})`);
  let better = false;
  for (let i = 0; i < a.length; i++) {
    if (a[i]! > b[i]!) return false;
    if (a[i]! < b[i]!) better = true;
  }
  return better;
}

/**
 * Deb's fast non-dominated sort: the indices of `points` grouped into fronts, front 0 being the
 * non-dominated set, front k the non-dominated set once fronts < k are removed. Indices within a
 * front are ascending. O(M·N²).
 */
export function fastNonDominatedSort(points: readonly Objectives[]): number[][] {
  const n = points.length;
  const dominatedBy: number[][] = Array.from({ length: n }, () => []);
  const dominationCount = new Array<number>(n).fill(0);
  let current: number[] = [];
  for (let p = 0; p < n; p++) {
    for (let q = p + 1; q < n; q++) {
      if (dominates(points[p]!, points[q]!)) {
        dominatedBy[p]!.push(q);
        dominationCount[q]!++;
      } else if (dominates(points[q]!, points[p]!)) {
        dominatedBy[q]!.push(p);
        dominationCount[p]!++;
      }
    }
  }
  for (let p = 0; p < n; p++) if (dominationCount[p] === 0) current.push(p);
  const fronts: number[][] = [];
  while (current.length > 0) {
    fronts.push(current);
    const next: number[] = [];
    for (const p of current) {
      for (const q of dominatedBy[p]!) {
        if (--dominationCount[q]! === 0) next.push(q);
      }
    }
    current = next.sort((a, b) => a - b);
  }
  return fronts;
}

/**
 * Crowding distances of the members of one front (aligned with `front`): for each objective the
 * front is sorted, the two extreme members get Infinity and every other member adds the gap
 * between its neighbours divided by the objective's range on the front (an objective that is
 * constant on the front adds nothing). Ties keep index order, so the result is deterministic.
 */
export function crowdingDistance(points: readonly Objectives[], front: readonly number[]): number[] {
  const size = front.length;
  const distance = new Array<number>(size).fill(0);
  if (size === 0) return distance;
  const objectives = points[front[0]!]!.length;
  for (let m = 0; m < objectives; m++) {
    const order = Array.from({ length: size }, (_, i) => i).sort((a, b) => points[front[a]!]![m]! - points[front[b]!]![m]! || front[a]! - front[b]!);
    const lo = points[front[order[0]!]!]![m]!;
    const hi = points[front[order[size - 1]!]!]![m]!;
    distance[order[0]!] = Infinity;
    distance[order[size - 1]!] = Infinity;
    if (!(hi > lo)) continue;
    for (let k = 1; k < size - 1; k++) {
      distance[order[k]!]! += (points[front[order[k + 1]!]!]![m]! - points[front[order[k - 1]!]!]![m]!) / (hi - lo);
    }
  }
  return distance;
}

/** Assigns `rank` and `crowding` to every individual; returns the fronts (indices into `individuals`). */
export function rankPopulation(individuals: readonly Individual[]): number[][] {
  const points = individuals.map((ind) => ind.objectives);
  const fronts = fastNonDominatedSort(points);
  fronts.forEach((front, rank) => {
    const distances = crowdingDistance(points, front);
    front.forEach((index, k) => {
      individuals[index]!.rank = rank;
      individuals[index]!.crowding = distances[k]!;
    });
  });
  return fronts;
}

/** The crowded-comparison order of NSGA-II: lower rank first, then larger crowding distance. Negative when `a` is preferred. */
export function crowdedCompare(a: Individual, b: Individual): number {
  if (a.rank !== b.rank) return a.rank - b.rank;
  if (a.crowding === b.crowding) return 0;
  return a.crowding > b.crowding ? -1 : 1;
}

/**
 * Survival: the best `size` of `candidates` by whole fronts, the last admitted front cut by
 * descending crowding distance (ties keep candidate order). Ranks and crowding are (re)computed.
 */
export function selectSurvivors(candidates: readonly Individual[], size: number): Individual[] {
  const fronts = rankPopulation(candidates);
  const survivors: Individual[] = [];
  for (const front of fronts) {
    const members = front.map((i) => candidates[i]!);
    if (survivors.length + members.length <= size) {
      survivors.push(...members);
      continue;
    }
    const order = members.map((ind, i) => ({ ind, i })).sort((a, b) => (b.ind.crowding - a.ind.crowding) || (a.i - b.i) || 0);
    for (const { ind } of order) {
      if (survivors.length >= size) break;
      survivors.push(ind);
    }
    break;
  }
  return survivors;
}

/**
 * The non-dominated subset of `individuals` with one representative per distinct objective
 * vector (the first seen), sorted by the first objective, then the next ones.
 */
export function nonDominated<T extends { objectives: Objectives }>(individuals: readonly T[]): T[] {
  if (individuals.length === 0) return [];
  const fronts = fastNonDominatedSort(individuals.map((ind) => ind.objectives));
  const seen = new Set<string>();
  const out: T[] = [];
  for (const i of fronts[0]!) {
    const key = individuals[i]!.objectives.join(',');
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(individuals[i]!);
  }
  return out.sort((a, b) => {
    for (let m = 0; m < a.objectives.length; m++) {
      const d = a.objectives[m]! - b.objectives[m]!;
      if (d !== 0) return d;
    }
    return 0;
  });
}

/** The key of a genome in caches and duplicate checks. @internal */
export function genomeKey(genome: Genome): string {
  return genome.join(',');
}

function checkGenome(genome: Genome, cardinalities: readonly number[], where: string): void {
  if (genome.length !== cardinalities.length) throw new Error(`${where}: genome has ${genome.length} genes, expected ${cardinalities.length}`);
  genome.forEach((g, i) => {
    if (!Number.isInteger(g) || g < 0 || g >= cardinalities[i]!) throw new Error(`${where}: gene ${i} is ${g}, expected an integer in [0, ${cardinalities[i]! - 1}]`);
  });
}

/**
 * Mutates `genome` in place: each gene with probability `rate` moves one step up or down (the
 * values are ordered, e.g. bit widths) half of the time, or jumps to another random value.
 * Returns whether anything changed. @internal
 */
export function mutate(genome: number[], cardinalities: readonly number[], rate: number, rng: Rng): boolean {
  let changed = false;
  for (let i = 0; i < genome.length; i++) {
    const k = cardinalities[i]!;
    if (k < 2 || rng.uniform() >= rate) continue;
    genome[i] = mutatedGene(genome[i]!, k, rng);
    changed = true;
  }
  return changed;
}

function mutatedGene(value: number, k: number, rng: Rng): number {
  if (rng.uniform() < 0.5) {
    const up = value === 0 ? true : value === k - 1 ? false : rng.uniform() < 0.5;
    return up ? value + 1 : value - 1;
  }
  const other = rng.int(k - 1);
  return other >= value ? other + 1 : other;
}

/** Uniform crossover: each gene from either parent with probability 1/2; returns two children. @internal */
export function uniformCrossover(a: Genome, b: Genome, rng: Rng): [number[], number[]] {
  const c1 = a.slice();
  const c2 = b.slice();
  for (let i = 0; i < a.length; i++) {
    if (rng.uniform() < 0.5) {
      c1[i] = b[i]!;
      c2[i] = a[i]!;
    }
  }
  return [c1, c2];
}

function tournament(population: readonly Individual[], rng: Rng): Individual {
  const a = population[rng.int(population.length)]!;
  const b = population[rng.int(population.length)]!;
  const order = crowdedCompare(a, b);
  if (order !== 0) return order < 0 ? a : b;
  return rng.uniform() < 0.5 ? a : b;
}

function spaceSize(cardinalities: readonly number[]): number {
  return cardinalities.reduce((n, k) => n * k, 1);
}

/**
 * Runs NSGA-II (see the module comment). The initial population is `initial` (deduplicated) then
 * random distinct genomes; each generation breeds `populationSize` children. Stops after
 * `generations`, or as soon as `shouldStop()` is true, returning everything evaluated so far.
 */
export async function nsga2(options: Nsga2Options): Promise<Nsga2Result> {
  const cardinalities = options.cardinalities;
  if (cardinalities.length === 0) throw new Error('nsga2: at least one gene is needed');
  cardinalities.forEach((k, i) => {
    if (!Number.isInteger(k) || k < 1) throw new Error(`nsga2: cardinalities[${i}] must be a positive integer, got ${k}`);
  });
  const populationSize = options.populationSize ?? 24;
  const generations = options.generations ?? 20;
  const crossoverRate = options.crossoverRate ?? 0.9;
  const mutationRate = options.mutationRate ?? 1 / cardinalities.length;
  if (!Number.isInteger(populationSize) || populationSize < 4) throw new Error(`nsga2: populationSize must be an integer >= 4, got ${populationSize}`);
  if (!Number.isInteger(generations) || generations < 0) throw new Error(`nsga2: generations must be a non-negative integer, got ${generations}`);
  if (!(crossoverRate >= 0 && crossoverRate <= 1)) throw new Error(`nsga2: crossoverRate must be in [0, 1], got ${crossoverRate}`);
  if (!(mutationRate >= 0 && mutationRate <= 1)) throw new Error(`nsga2: mutationRate must be in [0, 1], got ${mutationRate}`);
  const rng = new Rng(options.seed ?? 0);
  const transform = options.transform ?? ((_genome: Genome, raw: Objectives) => raw);
  const shouldStop = options.shouldStop ?? (() => false);
  const cache = new Map<string, Individual>();
  const archive: Individual[] = [];
  let objectiveCount = -1;
  let stopped = false;

  const evaluate = async (genome: Genome): Promise<Individual | null> => {
    const key = genomeKey(genome);
    const known = cache.get(key);
    if (known) return known;
    // Let signal handlers and timers run (a SIGINT handler setting the stop flag) between evaluations.
    await new Promise<void>((resolve) => setImmediate(resolve));
    // The first evaluation always runs, so a stop (a time limit that expired while data loaded)
    // still leaves a result to keep.
    if (archive.length > 0 && shouldStop()) {
      stopped = true;
      return null;
    }
    const raw = Object.freeze([...(await options.evaluate(genome))]);
    if (objectiveCount < 0) objectiveCount = raw.length;
    if (raw.length !== objectiveCount || raw.length === 0) throw new Error(`nsga2: evaluate returned ${raw.length} objectives, expected ${objectiveCount > 0 ? objectiveCount : 'at least 1'}`);
    if (raw.some((v) => Number.isNaN(v))) throw new Error(`nsga2: evaluate returned NaN for genome [${key}]`);
    const individual: Individual = { genome: Object.freeze(genome.slice()), raw, objectives: transform(genome, raw), rank: 0, crowding: 0 };
    cache.set(key, individual);
    archive.push(individual);
    return individual;
  };

  // Initial population: the given genomes, then random distinct ones.
  let population: Individual[] = [];
  const inPopulation = new Set<string>();
  const addInitial = async (genome: Genome): Promise<boolean> => {
    const key = genomeKey(genome);
    if (inPopulation.has(key)) return true;
    const ind = await evaluate(genome);
    if (!ind) return false;
    inPopulation.add(key);
    population.push(ind);
    return true;
  };
  for (const [i, genome] of (options.initial ?? []).entries()) {
    checkGenome(genome, cardinalities, `nsga2: initial[${i}]`);
    if (population.length >= populationSize || !(await addInitial(genome))) break;
  }
  const target = Math.min(populationSize, spaceSize(cardinalities));
  for (let attempts = 0; !stopped && population.length < target && attempts < 100 * populationSize; attempts++) {
    if (!(await addInitial(cardinalities.map((k) => rng.int(k))))) break;
  }
  if (population.length === 0) {
    return { population: [], front: [], archive: [], evaluations: 0, generations: 0, stopped: true };
  }

  const remap = (): void => {
    for (const ind of archive) ind.objectives = transform(ind.genome, ind.raw);
  };
  const state = (generation: number): Nsga2State => ({ generation, population, evaluations: archive.length, archive, stopping: stopped });
  const finishGeneration = async (generation: number): Promise<void> => {
    population = selectSurvivors(population, population.length);
    if (options.afterGeneration && (await options.afterGeneration(state(generation)))) {
      remap();
      population = selectSurvivors(population, population.length);
    }
    options.onGeneration?.(state(generation));
  };
  await finishGeneration(0);

  let done = 0;
  for (let generation = 1; generation <= generations && !stopped; generation++) {
    const taken = new Set(population.map((ind) => genomeKey(ind.genome)));
    const children: Individual[] = [];
    for (let attempts = 0; children.length < populationSize && !stopped && attempts < 50 * populationSize; attempts++) {
      const p1 = tournament(population, rng);
      const p2 = tournament(population, rng);
      const [c1, c2] = rng.uniform() < crossoverRate ? uniformCrossover(p1.genome, p2.genome, rng) : [p1.genome.slice(), p2.genome.slice()];
      for (const child of [c1, c2]) {
        if (children.length >= populationSize) break;
        mutate(child, cardinalities, mutationRate, rng);
        // A copy of a genome already present adds nothing: mutate it until new (a few tries).
        for (let tries = 0; tries < 20 && taken.has(genomeKey(child)); tries++) {
          const i = rng.int(child.length);
          if (cardinalities[i]! > 1) child[i] = mutatedGene(child[i]!, cardinalities[i]!, rng);
        }
        if (taken.has(genomeKey(child)) && taken.size < spaceSize(cardinalities)) continue;
        const ind = await evaluate(child);
        if (!ind) break;
        taken.add(genomeKey(child));
        children.push(ind);
      }
      if (taken.size >= spaceSize(cardinalities)) break;
    }
    if (stopped && children.length === 0) break;
    population = selectSurvivors([...population, ...children], Math.max(population.length, Math.min(populationSize, population.length + children.length)));
    await finishGeneration(generation);
    if (!stopped) done = generation;
  }

  return { population, front: nonDominated(archive), archive, evaluations: archive.length, generations: done, stopped };
}
