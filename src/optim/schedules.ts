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

export interface ReduceLROnPlateauOptions {
  /** 'min' (default): the metric should fall (a loss); 'max': it should rise (an accuracy). */
  mode?: 'min' | 'max';
  /** New lr = lr·factor (default 0.1; must be in [0, 1)). */
  factor?: number;
  /** Steps without improvement tolerated before the lr is reduced (default 10). */
  patience?: number;
  /** Smallest change that counts as an improvement (default 1e-4), see thresholdMode. */
  threshold?: number;
  /**
   * 'rel' (default): better means below best·(1 − threshold) in min mode, above
   * best·(1 + threshold) in max mode; 'abs': below best − threshold / above best + threshold.
   */
  thresholdMode?: 'rel' | 'abs';
  /** Steps to wait after a reduction before counting bad steps again (default 0). */
  cooldown?: number;
  /** Lower bound of the lr: one for all groups or one per group (default 0). */
  minLr?: number | readonly number[];
  /** A reduction smaller than eps is skipped (default 1e-8). */
  eps?: number;
}

/** Serializable state of ReduceLROnPlateau. `best` is ±Infinity before the first step. */
export interface ReduceLROnPlateauState {
  lastStep: number;
  best: number;
  numBadSteps: number;
  cooldownCounter: number;
}

/**
 * Reduces every group's learning rate by `factor` when a metric has stopped improving for more
 * than `patience` steps, as PyTorch's ReduceLROnPlateau: `step(metric)` once per epoch with the
 * validation loss (mode 'min') or accuracy (mode 'max'). A step improves when the metric beats
 * the best so far by the threshold; otherwise it is a bad step, and when the bad steps exceed
 * `patience` each lr becomes max(lr·factor, minLr) (skipped when that changes it by less than
 * eps), followed by `cooldown` steps in which bad steps are not counted. A NaN metric never
 * improves (it counts as a bad step, as in PyTorch). Unlike the closed-form schedules it does not
 * write an lr at construction: the optimizer's lr is the starting value.
 */
export class ReduceLROnPlateau {
  /** fit() steps this scheduler with the monitored metric instead of calling step() without one. */
  readonly stepsOnMetric = true;
  readonly optimizer: LrGroups;
  readonly mode: 'min' | 'max';
  readonly factor: number;
  readonly patience: number;
  readonly threshold: number;
  readonly thresholdMode: 'rel' | 'abs';
  readonly cooldown: number;
  readonly minLrs: readonly number[];
  readonly eps: number;
  /** Number of `step()` calls so far. */
  lastStep = 0;
  /** Best metric seen (+Infinity in min mode, −Infinity in max mode before the first step). */
  best: number;
  /** Bad steps since the last improvement or reduction. */
  numBadSteps = 0;
  /** Cooldown steps left. */
  cooldownCounter = 0;

  constructor(optimizer: LrGroups, options: ReduceLROnPlateauOptions = {}) {
    this.optimizer = optimizer;
    this.mode = options.mode ?? 'min';
    if (this.mode !== 'min' && this.mode !== 'max') throw new Error(`ReduceLROnPlateau: mode must be 'min' or 'max', got ${JSON.stringify(this.mode)}`);
    this.factor = options.factor ?? 0.1;
    if (!(this.factor >= 0 && this.factor < 1)) throw new Error(`ReduceLROnPlateau: factor must be in [0, 1), got ${this.factor}`);
    this.patience = options.patience ?? 10;
    if (!(Number.isInteger(this.patience) && this.patience >= 0)) throw new Error(`ReduceLROnPlateau: patience must be a non-negative integer, got ${this.patience}`);
    this.threshold = options.threshold ?? 1e-4;
    if (!(Number.isFinite(this.threshold) && this.threshold >= 0)) throw new Error(`ReduceLROnPlateau: threshold must be a finite number >= 0, got ${this.threshold}`);
    this.thresholdMode = options.thresholdMode ?? 'rel';
    if (this.thresholdMode !== 'rel' && this.thresholdMode !== 'abs') throw new Error(`ReduceLROnPlateau: thresholdMode must be 'rel' or 'abs', got ${JSON.stringify(this.thresholdMode)}`);
    this.cooldown = options.cooldown ?? 0;
    if (!(Number.isInteger(this.cooldown) && this.cooldown >= 0)) throw new Error(`ReduceLROnPlateau: cooldown must be a non-negative integer, got ${this.cooldown}`);
    const groups = optimizer.paramGroups.length;
    const minLr = options.minLr ?? 0;
    this.minLrs = typeof minLr === 'number' ? Array.from({ length: groups }, () => minLr) : [...minLr];
    if (this.minLrs.length !== groups) throw new Error(`ReduceLROnPlateau: ${this.minLrs.length} minLr values for ${groups} param groups`);
    if (!this.minLrs.every((v) => Number.isFinite(v) && v >= 0)) throw new Error(`ReduceLROnPlateau: minLr must be finite numbers >= 0, got ${this.minLrs.join(', ')}`);
    this.eps = options.eps ?? 1e-8;
    this.best = this.worst();
  }

  /** Whether `metric` improves on `best` by the threshold (false for NaN). */
  isBetter(metric: number, best: number = this.best): boolean {
    if (this.mode === 'min') return this.thresholdMode === 'rel' ? metric < best * (1 - this.threshold) : metric < best - this.threshold;
    return this.thresholdMode === 'rel' ? metric > best * (1 + this.threshold) : metric > best + this.threshold;
  }

  /** Records one epoch's metric and reduces the learning rates when it has plateaued. */
  step(metric: number): void {
    if (typeof metric !== 'number') throw new TypeError(`ReduceLROnPlateau.step: expected the monitored metric as a number, got ${typeof metric}`);
    this.lastStep += 1;
    if (this.isBetter(metric)) {
      this.best = metric;
      this.numBadSteps = 0;
    } else {
      this.numBadSteps += 1;
    }
    if (this.cooldownCounter > 0) {
      this.cooldownCounter -= 1;
      this.numBadSteps = 0;
    }
    if (this.numBadSteps > this.patience) {
      this.reduce();
      this.cooldownCounter = this.cooldown;
      this.numBadSteps = 0;
    }
  }

  /** Current learning rate of each group. */
  getLr(): number[] {
    return this.optimizer.paramGroups.map((group) => group.lr);
  }

  stateDict(): ReduceLROnPlateauState {
    return { lastStep: this.lastStep, best: this.best, numBadSteps: this.numBadSteps, cooldownCounter: this.cooldownCounter };
  }

  /** Restores the counters (the learning rates themselves live in the optimizer's state). */
  loadStateDict(state: ReduceLROnPlateauState): void {
    const fields = ['lastStep', 'numBadSteps', 'cooldownCounter'] as const;
    for (const key of fields) {
      const v = state?.[key];
      if (!(Number.isInteger(v) && v >= 0)) throw new Error(`ReduceLROnPlateau.loadStateDict: ${key} must be a non-negative integer, got ${JSON.stringify(v)}`);
    }
    // JSON turns ±Infinity into null: null is the initial best.
    const best = state.best === null ? this.worst() : state.best;
    if (typeof best !== 'number' || Number.isNaN(best)) throw new Error(`ReduceLROnPlateau.loadStateDict: best must be a number, got ${JSON.stringify(state.best)}`);
    this.lastStep = state.lastStep;
    this.best = best;
    this.numBadSteps = state.numBadSteps;
    this.cooldownCounter = state.cooldownCounter;
  }

  private worst(): number {
    return this.mode === 'min' ? Infinity : -Infinity;
  }

  private reduce(): void {
    this.optimizer.paramGroups.forEach((group, i) => {
      const newLr = Math.max(group.lr * this.factor, this.minLrs[i]!);
      if (group.lr - newLr > this.eps) group.lr = newLr;
    });
  }
}
