/**
 * Beacon-based error correction (MOHAQ, Rezk et al. 2022, "MOHAQ: Multi-Objective Hardware-Aware
 * Quantization of Recurrent Neural Networks"): candidates are scored cheaply by post-training
 * quantization (PTQ); a few chosen candidates — the beacons — are retrained (QAT) and their error
 * reduction Δ = e_PTQ − e_QAT is lent to every candidate near them, whose error is estimated as
 * e_PTQ − Δ_nearest beacon (additive), or — given the float model's error as a floor — by scaling
 * the candidate's excess error over that floor with the beacon's QAT/PTQ excess ratio (relative;
 * see `BeaconSet.correct`). Candidates farther than `radius` from every beacon keep their PTQ
 * error; new beacons are picked among front candidates that no beacon covers yet.
 *
 * Positions are plain number vectors (per-layer bit widths); the distance is the root mean square
 * per-coordinate difference, i.e. "bits per layer".
 */
import type { Genome, Individual, Nsga2State, Objectives } from './nsga2.ts';

/** A retrained candidate. */
export interface Beacon {
  /** Where it sits (e.g. per-layer bit widths). */
  readonly position: readonly number[];
  /** Error after post-training quantization. */
  readonly ptqError: number;
  /** Error after retraining (QAT). */
  readonly retrainedError: number;
}

/** Root mean square coordinate difference of two positions ("bits per layer" for bit vectors). */
export function rmsDistance(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new Error(`rmsDistance: positions differ in length (${a.length} vs ${b.length})`);
  if (a.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(sum / a.length);
}

export interface BeaconSetOptions {
  /** A beacon corrects candidates within this distance (default 1: one bit per layer RMS). */
  readonly radius?: number;
  /** Distance of two positions (default `rmsDistance`). */
  readonly distance?: (a: readonly number[], b: readonly number[]) => number;
  /**
   * Error of the unquantized model. When given, the correction is relative: a candidate's excess
   * error over this floor is scaled by the beacon's retrained/PTQ excess ratio (see `correct`);
   * without it the beacon's error reduction is subtracted as is (additive).
   */
  readonly floorError?: number;
  /** Shrinkage κ of the relative ratio (default 0.005: half a point of error), damping ratios of tiny, noisy excesses. */
  readonly shrinkage?: number;
}

/** The beacons found so far and the correction they give. */
export class BeaconSet {
  readonly radius: number;
  readonly floorError: number | null;
  readonly shrinkage: number;
  private readonly distance: (a: readonly number[], b: readonly number[]) => number;
  private readonly list: Beacon[] = [];

  constructor(options: BeaconSetOptions = {}) {
    this.radius = options.radius ?? 1;
    if (!(this.radius >= 0)) throw new Error(`BeaconSet: radius must be >= 0, got ${this.radius}`);
    this.distance = options.distance ?? rmsDistance;
    this.floorError = options.floorError ?? null;
    if (this.floorError !== null && !Number.isFinite(this.floorError)) throw new Error(`BeaconSet: floorError must be finite, got ${this.floorError}`);
    this.shrinkage = options.shrinkage ?? 0.005;
    if (!(this.shrinkage > 0)) throw new Error(`BeaconSet: shrinkage must be > 0, got ${this.shrinkage}`);
  }

  get beacons(): readonly Beacon[] {
    return this.list;
  }

  get size(): number {
    return this.list.length;
  }

  /** Adds a retrained candidate. */
  add(beacon: Beacon): void {
    if (!Number.isFinite(beacon.ptqError) || !Number.isFinite(beacon.retrainedError)) {
      throw new Error(`BeaconSet.add: errors must be finite, got PTQ ${beacon.ptqError}, retrained ${beacon.retrainedError}`);
    }
    this.list.push({ position: beacon.position.slice(), ptqError: beacon.ptqError, retrainedError: beacon.retrainedError });
  }

  /** The beacon closest to `position` (the first one on ties) and its distance; null when there is none. */
  nearest(position: readonly number[]): { beacon: Beacon; distance: number } | null {
    let best: { beacon: Beacon; distance: number } | null = null;
    for (const beacon of this.list) {
      const d = this.distance(position, beacon.position);
      if (best === null || d < best.distance) best = { beacon, distance: d };
    }
    return best;
  }

  /**
   * The estimated retrained error of a candidate with PTQ error `e` near a beacon B (the nearest
   * within `radius`; none: `e` unchanged; at distance 0: B's retrained error exactly):
   * - additive (no `floorError`): e − (e_PTQ(B) − e_QAT(B)), floored at 0 — MOHAQ's error
   *   reduction lent as is;
   * - relative (with floor f): f + (e − f)·r, r = (x_QAT(B) + κ)/(x_PTQ(B) + κ), x = max(0, error − f):
   *   the excess error that quantization adds is scaled by the beacon's ratio, so a large
   *   reduction measured at a poor beacon does not push a better neighbour below the floor
   *   (κ damps the ratio of tiny, noisy excesses). A candidate already at or below f is unchanged.
   */
  correct(position: readonly number[], ptqError: number): number {
    const near = this.nearest(position);
    if (near === null || near.distance > this.radius) return ptqError;
    const b = near.beacon;
    if (near.distance === 0) return b.retrainedError;
    const f = this.floorError;
    if (f === null) return Math.max(0, ptqError - (b.ptqError - b.retrainedError));
    if (ptqError <= f) return ptqError;
    const ratio = (Math.max(0, b.retrainedError - f) + this.shrinkage) / (Math.max(0, b.ptqError - f) + this.shrinkage);
    return f + (ptqError - f) * ratio;
  }

  /** True when some beacon lies within `radius` of `position`. */
  covers(position: readonly number[]): boolean {
    const near = this.nearest(position);
    return near !== null && near.distance <= this.radius;
  }

  /**
   * Up to `count` of `positions` to retrain next. Without any beacon yet, the first pick is the
   * medoid (least total distance to the others: the most central candidate, covering the most);
   * then greedily the one farthest from every beacon and every already picked one, as long as
   * that distance exceeds `radius` (ties: the earlier one). Returns indices into `positions`.
   */
  pickNew(positions: readonly (readonly number[])[], count: number): number[] {
    const anchors: (readonly number[])[] = this.list.map((b) => b.position);
    const picked: number[] = [];
    if (anchors.length === 0 && positions.length > 0 && count > 0) {
      const totals = positions.map((p) => positions.reduce((s, q) => s + this.distance(p, q), 0));
      const medoid = totals.indexOf(Math.min(...totals));
      picked.push(medoid);
      anchors.push(positions[medoid]!);
    }
    while (picked.length < count) {
      let best = -1;
      let bestDistance = -Infinity;
      positions.forEach((p, i) => {
        if (picked.includes(i)) return;
        const d = anchors.length === 0 ? Infinity : Math.min(...anchors.map((a) => this.distance(p, a)));
        if (d > bestDistance) {
          best = i;
          bestDistance = d;
        }
      });
      if (best < 0 || !(bestDistance > this.radius)) break;
      picked.push(best);
      anchors.push(positions[best]!);
    }
    return picked;
  }
}

export interface BeaconSearchOptions {
  /** The beacons (filled as the search runs). */
  readonly beacons: BeaconSet;
  /** Position of a genome (e.g. its per-layer weight bits). */
  position(genome: Genome): readonly number[];
  /** Index of the error in the objective vector (default 0). */
  readonly errorIndex?: number;
  /** Retrains a candidate; resolves to its error after retraining. */
  retrain(genome: Genome, ptqError: number): number | Promise<number>;
  /** Most beacons in total (default 4). */
  readonly maxBeacons?: number;
  /** New beacons per round (default 1). */
  readonly perRound?: number;
  /** A round every this many generations, starting after the initial population (default 2). */
  readonly every?: number;
  /** Called after a candidate was retrained. */
  onBeacon?(beacon: Beacon, genome: Genome): void;
}

/**
 * The NSGA-II hooks of a beacon-based search: `transform` replaces the error objective by its
 * beacon-corrected value; `afterGeneration` (every `every` generations, while under `maxBeacons`)
 * retrains the front candidates no beacon covers yet and reports that the correction changed.
 */
export function beaconHooks(options: BeaconSearchOptions): {
  transform(genome: Genome, raw: Objectives): Objectives;
  afterGeneration(state: Nsga2State): Promise<boolean>;
} {
  const errorIndex = options.errorIndex ?? 0;
  const maxBeacons = options.maxBeacons ?? 4;
  const perRound = options.perRound ?? 1;
  const every = options.every ?? 2;
  if (!Number.isInteger(every) || every < 1) throw new Error(`beaconHooks: every must be a positive integer, got ${every}`);
  const set = options.beacons;
  return {
    transform(genome, raw) {
      const out = raw.slice();
      out[errorIndex] = set.correct(options.position(genome), raw[errorIndex]!);
      return out;
    },
    async afterGeneration(state) {
      if (state.stopping || state.generation % every !== 0 || set.size >= maxBeacons) return false;
      const front: Individual[] = state.population.filter((ind) => ind.rank === 0);
      const positions = front.map((ind) => options.position(ind.genome));
      const picked = set.pickNew(positions, Math.min(perRound, maxBeacons - set.size));
      for (const i of picked) {
        const ind = front[i]!;
        const ptqError = ind.raw[errorIndex]!;
        const retrainedError = await options.retrain(ind.genome, ptqError);
        const beacon: Beacon = { position: positions[i]!, ptqError, retrainedError };
        set.add(beacon);
        options.onBeacon?.(beacon, ind.genome);
      }
      return picked.length > 0;
    },
  };
}
