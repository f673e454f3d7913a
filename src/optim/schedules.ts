/**
 * Learning-rate schedules. Each writes `lr` into its optimizer's param groups: once at construction
 * (the value for step 0) and on every `step()`. A schedule counts calls to `step()` — call it once
 * per epoch for epoch-based schedules (StepLR, MultiStepLR, CosineAnnealingLR over epochs) or once
 * per iteration for iteration-based ones (warmup, OneCycleLR); the unit is whatever you choose, the
 * parameters (stepSize, milestones, tMax, warmupSteps, totalSteps) are counted in it.
 */

/** What a schedule needs of an optimizer: its param groups' learning rates. */
export interface LrGroups {
  readonly paramGroups: readonly { lr: number; initialLr?: number }[];
}

/** Serializable schedule state. */
export interface SchedulerStateDict {
  lastStep: number;
}

/**
 * Base of the closed-form schedules: lr(step, group) from the group's base LR (its `initialLr`,
 * recorded on first use so that several schedules on one optimizer agree).
 */
export abstract class LRScheduler {
  readonly optimizer: LrGroups;
  /** Each group's learning rate at step 0. */
  readonly baseLrs: readonly number[];
  /** Number of `step()` calls so far. */
  lastStep = 0;

  constructor(optimizer: LrGroups) {
    this.optimizer = optimizer;
    this.baseLrs = optimizer.paramGroups.map((group) => (group.initialLr ??= group.lr));
  }

  /** The learning rate of group `groupIndex` after `step` calls (closed form). */
  abstract lrAt(step: number, groupIndex?: number): number;

  /** Advances one step and writes the new learning rates. */
  step(): void {
    this.lastStep += 1;
    this.apply();
  }

  /** Current learning rate of each group. */
  getLr(): number[] {
    return this.optimizer.paramGroups.map((group) => group.lr);
  }

  stateDict(): SchedulerStateDict {
    return { lastStep: this.lastStep };
  }

  loadStateDict(state: SchedulerStateDict): void {
    this.lastStep = state.lastStep;
    this.apply();
  }

  /** Writes lrAt(lastStep) into every group (subclass constructors call it once they are set up). */
  protected apply(): void {
    this.optimizer.paramGroups.forEach((group, i) => (group.lr = this.lrAt(this.lastStep, i)));
  }

  protected base(groupIndex: number): number {
    const lr = this.baseLrs[groupIndex];
    if (lr === undefined) throw new Error(`${this.constructor.name}: no param group ${groupIndex}`);
    return lr;
  }
}

/** lr = base·gamma^⌊step / stepSize⌋ (decay by gamma every stepSize steps). */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;

  constructor(optimizer: LrGroups, options: { stepSize: number; gamma?: number }) {
    super(optimizer);
    if (!(Number.isInteger(options.stepSize) && options.stepSize > 0)) throw new Error(`StepLR: stepSize must be a positive integer, got ${options.stepSize}`);
    this.stepSize = options.stepSize;
    this.gamma = options.gamma ?? 0.1;
    this.apply();
  }

  lrAt(step: number, groupIndex = 0): number {
    return this.base(groupIndex) * this.gamma ** Math.floor(step / this.stepSize);
  }
}

/** lr = base·gamma^(number of milestones ≤ step). */
export class MultiStepLR extends LRScheduler {
  readonly milestones: readonly number[];
  readonly gamma: number;

  constructor(optimizer: LrGroups, options: { milestones: readonly number[]; gamma?: number }) {
    super(optimizer);
    this.milestones = [...options.milestones].sort((a, b) => a - b);
    this.gamma = options.gamma ?? 0.1;
    this.apply();
  }

  lrAt(step: number, groupIndex = 0): number {
    let passed = 0;
    for (const m of this.milestones) if (m <= step) passed++;
    return this.base(groupIndex) * this.gamma ** passed;
  }
}

/** lr = etaMin + (base − etaMin)·(1 + cos(π·step / tMax)) / 2 (SGDR without restarts; periodic past tMax). */
export class CosineAnnealingLR extends LRScheduler {
  readonly tMax: number;
  readonly etaMin: number;

  constructor(optimizer: LrGroups, options: { tMax: number; etaMin?: number }) {
    super(optimizer);
    if (!(options.tMax > 0)) throw new Error(`CosineAnnealingLR: tMax must be > 0, got ${options.tMax}`);
    this.tMax = options.tMax;
    this.etaMin = options.etaMin ?? 0;
    this.apply();
  }

  lrAt(step: number, groupIndex = 0): number {
    const base = this.base(groupIndex);
    return this.etaMin + ((base - this.etaMin) * (1 + Math.cos((Math.PI * step) / this.tMax))) / 2;
  }
}

export interface LinearWarmupOptions {
  /** Steps of the linear ramp. */
  warmupSteps: number;
  /**
   * Fraction of the base LR at step 0 (default 1/(warmupSteps + 1), so the ramp is
   * base·(step + 1)/(warmupSteps + 1) and no step runs at lr 0).
   */
  startFactor?: number;
  /**
   * Schedule for the steps after warmup, evaluated at (step − warmupSteps). Build it on the same
   * optimizer and step only the warmup. Without it the LR stays at its base value.
   */
  after?: LRScheduler;
}

/**
 * Linear warmup: lr = base·(f + (1 − f)·step / warmupSteps) for step < warmupSteps, then
 * `after.lrAt(step − warmupSteps)` (or base).
 */
export class LinearWarmupLR extends LRScheduler {
  readonly warmupSteps: number;
  readonly startFactor: number;
  readonly after: LRScheduler | null;

  constructor(optimizer: LrGroups, options: LinearWarmupOptions) {
    super(optimizer);
    if (!(Number.isInteger(options.warmupSteps) && options.warmupSteps >= 0)) {
      throw new Error(`LinearWarmupLR: warmupSteps must be a non-negative integer, got ${options.warmupSteps}`);
    }
    this.warmupSteps = options.warmupSteps;
    this.startFactor = options.startFactor ?? 1 / (options.warmupSteps + 1);
    this.after = options.after ?? null;
    if (this.after && this.after.optimizer !== optimizer) throw new Error('LinearWarmupLR: `after` must schedule the same optimizer');
    this.apply();
  }

  lrAt(step: number, groupIndex = 0): number {
    if (step < this.warmupSteps) {
      const f = this.startFactor;
      return this.base(groupIndex) * (f + ((1 - f) * step) / this.warmupSteps);
    }
    return this.after ? this.after.lrAt(step - this.warmupSteps, groupIndex) : this.base(groupIndex);
  }
}

export interface OneCycleOptions {
  /** Peak learning rate (one value for all groups, or one per group). */
  maxLr: number | readonly number[];
  /**
   * Total number of steps of the cycle. As in PyTorch, `step()` may be called exactly totalSteps
   * times (the last call sets an LR just past the cycle's end, harmless when no optimizer step
   * follows, e.g. fit()'s per-epoch step after the last epoch); the next call throws.
   */
  totalSteps: number;
  /** Fraction of the steps spent increasing the LR (default 0.3). */
  pctStart?: number;
  /** Initial lr = maxLr / divFactor (default 25). */
  divFactor?: number;
  /** Final lr = initial lr / finalDivFactor (default 1e4). */
  finalDivFactor?: number;
  /** Interpolation between phases (default 'cos'). */
  annealStrategy?: 'cos' | 'linear';
}

/**
 * One-cycle policy (Smith & Topsekar, 2018) as PyTorch's OneCycleLR (two phases, no momentum
 * cycling): from maxLr/divFactor up to maxLr over the first pctStart of the steps, then down to
 * maxLr/(divFactor·finalDivFactor) at step totalSteps − 1. Step once per iteration; the
 * totalSteps-th step() is allowed (the annealing formula continued one step, as PyTorch), the
 * next one throws.
 */
export class OneCycleLR extends LRScheduler {
  readonly totalSteps: number;
  private readonly maxLrs: readonly number[];
  private readonly peakStep: number;
  private readonly divFactor: number;
  private readonly finalDivFactor: number;
  private readonly annealStrategy: 'cos' | 'linear';

  constructor(optimizer: LrGroups, options: OneCycleOptions) {
    const groups = optimizer.paramGroups;
    const maxLr = options.maxLr;
    const maxLrs = typeof maxLr === 'number' ? groups.map(() => maxLr) : [...maxLr];
    if (maxLrs.length !== groups.length) throw new Error(`OneCycleLR: ${maxLrs.length} maxLr values for ${groups.length} param groups`);
    const divFactor = options.divFactor ?? 25;
    groups.forEach((group, i) => (group.initialLr = maxLrs[i]! / divFactor));
    super(optimizer);
    if (!(Number.isInteger(options.totalSteps) && options.totalSteps > 1)) throw new Error(`OneCycleLR: totalSteps must be an integer > 1, got ${options.totalSteps}`);
    this.totalSteps = options.totalSteps;
    this.maxLrs = maxLrs;
    this.peakStep = (options.pctStart ?? 0.3) * options.totalSteps - 1;
    this.divFactor = divFactor;
    this.finalDivFactor = options.finalDivFactor ?? 1e4;
    this.annealStrategy = options.annealStrategy ?? 'cos';
    this.apply();
  }

  lrAt(step: number, groupIndex = 0): number {
    if (step > this.totalSteps) throw new Error(`OneCycleLR: step ${step} is past totalSteps ${this.totalSteps} (step() may be called at most totalSteps times)`);
    const maxLr = this.maxLrs[groupIndex]!;
    const initial = maxLr / this.divFactor;
    const final = initial / this.finalDivFactor;
    if (step <= this.peakStep) return this.anneal(initial, maxLr, step / this.peakStep);
    return this.anneal(maxLr, final, (step - this.peakStep) / (this.totalSteps - 1 - this.peakStep));
  }

  private anneal(start: number, end: number, pct: number): number {
    if (this.annealStrategy === 'linear') return start + (end - start) * pct;
    return end + ((start - end) / 2) * (Math.cos(Math.PI * pct) + 1);
  }
}
