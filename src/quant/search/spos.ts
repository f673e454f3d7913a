/**
 * Single Path One-Shot search (SPOS; Guo, Zhang, Mu, Heng, Liu, Wei, Sun, ECCV 2020, "Single Path
 * One-Shot Neural Architecture Search with Uniform Sampling") over per-layer bit widths.
 *
 * 1. **Supernet.** The float model with a switchable fake quantizer per layer (`SposQuantizer`,
 *    kind 'spos'): one branch per candidate width, each an ordinary 'static' quantizer (weights:
 *    per-channel symmetric, MSE scales; activations: per-tensor min-max ranges), all branches
 *    sharing the layer's one float weight. Every architecture of the space is a single path: one
 *    weight width (and, with several activation widths, one input width) per layer.
 *    Why 'static' branches and not LSQ steps learned per width: the arms this search is compared
 *    with deploy exactly that quantizer (calibrated MSE scales, frozen, straight-through), and a
 *    static branch's scale is a function of the shared weights alone (and its activation range a
 *    function of the float model's calibration inputs), so a path of the supernet IS the plain
 *    fake-quant model of its plan (tested exactly): what the search ranks is what gets deployed.
 * 2. **Training by uniform path sampling.** Starting from the trained float weights, every step
 *    samples one choice per layer uniformly (independently), switches the quantizers to it and
 *    takes one Adam step on the cross-entropy through that path (cosine-decayed learning rate).
 *    Every branch is re-calibrated from the current weights every `rescaleEvery` steps and after
 *    the last one (weights drift; scales and activation ranges follow them).
 * 3. **Evolutionary search** (SPOS's: population 50, top-k 10, 20 iterations, 25 mutations with
 *    per-gene probability 0.1 and 25 uniform crossovers per iteration). Only candidates within
 *    every budget enter the population: the initial ones are sampled uniformly until they fit,
 *    a mutation or crossover child over budget is drawn again (SPOS's constraint handling).
 *    Fitness: accuracy on held-out images with the weights inherited from the supernet (ties:
 *    lower loss), after recomputing BatchNorm statistics for the path on a few training batches.
 *
 * Channel counts are not searched (the pruned-channel machinery of prune.ts keeps a channel's
 * width at 0 inside one quantizer; a switchable keep ratio would need a mask per branch).
 */
import { noGrad } from '../../autograd/engine.ts';
import { cycleBatches } from '../../data/loader.ts';
import { BatchNorm } from '../../nn/batchnorm.ts';
import type { Module, TensorModule } from '../../nn/module.ts';
import { Adam } from '../../optim/adam.ts';
import { crossEntropy } from '../../tensor/ops.ts';
import { manualSeed, Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { evaluate as evaluateModel, type Batch } from '../../train/fit.ts';
import type { QuantPlan, PlanOverride } from '../config/plan.ts';
import { calibrate, collectCalibrationBatches } from '../ptq/calibrate.ts';
import { StaticQuantizer } from '../ptq/static.ts';
import { quantizedLayers } from '../qat/prepare.ts';
import { QuantConvBn2d } from '../qat/layers.ts';
import { qatParamGroups } from '../qat/param-groups.ts';
import { createQuantizer, Quantizer, quantizerKinds, registerQuantizer, type ExportedQuant, type QuantizerContext, type QuantizerSpec } from '../quantizers/quantizer.ts';
import '../quantizers/index.ts';
import { NoAllocationFitsError } from './allocate.ts';
import { layerChoiceCost } from './costs.ts';
import type { SearchData } from './evaluate.ts';
import { describeLayers } from './layers.ts';
import { assignmentCosts, candidateFront, uniformLabel, type SearchCandidate } from './mohaq.ts';
import { activationSpecFor, weightSpecFor, type PlanBase } from './plan.ts';
import type { BitAssignment, CostModel, LayerInfo } from './types.ts';

// ------------------------------------------------------------------ the switchable quantizer

/** The quantizer kind of a supernet's switchable quantizer. */
export const SPOS_KIND = 'spos';

/**
 * A quantizer with one branch per candidate width; `choice` selects the branch the forward runs
 * (y = Q_{b_choice}(x)). Spec: { kind: 'spos', bits: widest branch, branches: [spec, ...] } with
 * the branch specs in increasing width. While any 'static' branch calibrates, every branch sees
 * the input (each observes it) and x passes through unchanged, as a calibrating static quantizer
 * does. `exportQuant` exports the selected branch.
 */
export class SposQuantizer extends Quantizer {
  readonly spec: QuantizerSpec;
  readonly branches: readonly Quantizer[];
  /** Bit width of each branch. */
  readonly widths: readonly number[];
  /** Index of the branch in use (default: the widest). */
  choice: number;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    super();
    const raw = spec['branches'];
    if (!Array.isArray(raw) || raw.length < 1) throw new Error(`quantizer '${SPOS_KIND}': 'branches' must be a non-empty array of quantizer specs`);
    const specs = raw as QuantizerSpec[];
    specs.forEach((s, i) => {
      if (typeof s !== 'object' || s === null || typeof s.kind !== 'string' || !Number.isInteger(s.bits)) throw new Error(`quantizer '${SPOS_KIND}': branch ${i} is not a quantizer spec`);
      if (s.kind === SPOS_KIND) throw new Error(`quantizer '${SPOS_KIND}': a branch cannot be '${SPOS_KIND}'`);
      if (i > 0 && s.bits <= specs[i - 1]!.bits) throw new Error(`quantizer '${SPOS_KIND}': branch widths must be strictly increasing, got ${specs.map((b) => b.bits).join(', ')}`);
    });
    if (spec.bits !== specs[specs.length - 1]!.bits) throw new Error(`quantizer '${SPOS_KIND}': bits (${spec.bits}) must equal the widest branch (${specs[specs.length - 1]!.bits})`);
    this.spec = spec;
    this.widths = specs.map((s) => s.bits);
    this.branches = specs.map((s, i) => this.registerModule(`b${i}`, createQuantizer(s, context)));
    this.choice = specs.length - 1;
  }

  /** True while a 'static' branch is calibrating. */
  get calibrating(): boolean {
    return this.branches.some((b) => b instanceof StaticQuantizer && b.calibrating);
  }

  forward(x: Tensor): Tensor {
    if (!this.fakeQuantEnabled) return x;
    if (this.calibrating) {
      for (const b of this.branches) b.forward(x);
      return x;
    }
    const branch = this.branches[this.choice];
    if (!branch) throw new Error(`quantizer '${SPOS_KIND}': choice ${this.choice} outside [0, ${this.branches.length})`);
    return branch.forward(x);
  }

  exportQuant(): ExportedQuant {
    return this.branches[this.choice]!.exportQuant();
  }
}

if (!quantizerKinds().includes(SPOS_KIND)) registerQuantizer(SPOS_KIND, (spec, context) => new SposQuantizer(spec, context));

// ------------------------------------------------------------------ search space and sampling

/** The search space: per layer, candidate weight widths and input-activation widths. */
export interface SposSpace {
  readonly layers: readonly LayerInfo[];
  readonly wBits: readonly number[];
  readonly aBits: readonly number[];
}

/**
 * Number of choices of each gene of a path: one weight gene per layer, followed (when `aBits`
 * has more than one width) by that layer's activation gene.
 */
export function pathCardinalities(space: SposSpace): number[] {
  return space.layers.flatMap(() => (space.aBits.length > 1 ? [space.wBits.length, space.aBits.length] : [space.wBits.length]));
}

/** The bit assignment a path encodes. */
export function pathToAssignment(space: SposSpace, path: readonly number[]): BitAssignment {
  const per = space.aBits.length > 1 ? 2 : 1;
  if (path.length !== space.layers.length * per) throw new Error(`pathToAssignment: a path of this space has ${space.layers.length * per} genes, got ${path.length}`);
  const out: BitAssignment = {};
  space.layers.forEach((l, i) => {
    const w = space.wBits[path[per * i]!];
    const a = per === 2 ? space.aBits[path[per * i + 1]!] : space.aBits[0];
    if (w === undefined || a === undefined) throw new Error(`pathToAssignment: gene of layer '${l.name}' out of range in [${path.join(', ')}]`);
    out[l.name] = { w, a };
  });
  return out;
}

/** The path of an assignment over the space's layers (every width must be a candidate). */
export function assignmentToPath(space: SposSpace, assignment: BitAssignment): number[] {
  return space.layers.flatMap((l) => {
    const c = assignment[l.name];
    if (!c) throw new Error(`assignmentToPath: layer '${l.name}' is not assigned`);
    const w = space.wBits.indexOf(c.w);
    const a = space.aBits.indexOf(c.a);
    if (w < 0 || a < 0) throw new Error(`assignmentToPath: '${l.name}' w${c.w}a${c.a} is not in the space (w {${space.wBits.join(', ')}}, a {${space.aBits.join(', ')}})`);
    return space.aBits.length > 1 ? [w, a] : [w];
  });
}

/** One path drawn uniformly: every gene independently uniform over its choices. */
export function samplePath(cardinalities: readonly number[], rng: Rng): number[] {
  return cardinalities.map((k) => {
    if (!Number.isInteger(k) || k < 1) throw new Error(`samplePath: cardinalities must be positive integers, got ${k}`);
    return rng.int(k);
  });
}

// ------------------------------------------------------------------ supernet

/** A model prepared as a supernet (see `buildSupernet`). */
export interface Supernet {
  readonly model: TensorModule;
  readonly space: SposSpace;
  /** Per layer (space order): the weight quantizer and the input quantizer (switchable when several activation widths). */
  readonly quantizers: readonly { readonly weight: SposQuantizer; readonly activation: Quantizer | null }[];
  /** The path the quantizers are switched to. */
  readonly path: readonly number[];
  /** Switches every layer to the path's widths. */
  setPath(path: readonly number[]): void;
  /**
   * Re-calibrates every branch from the current weights, exactly as `calibrate` would the plain
   * model: weight scales from the weights each layer quantizes (e.g. BN-folded), activation ranges
   * from the float model's inputs on the calibration batches (they depend on the weights upstream).
   */
  refreshScales(): void;
}

export interface SupernetOptions {
  /**
   * Candidate weight widths (default [2, 3, 4, 8]; each in [2, 16]). No 1-bit: `calibrate` runs a
   * binary weight quantized (it has no calibration state), so the next layers' activation ranges
   * would depend on the path and a path would no longer equal its plain calibrated plan.
   */
  readonly wBits?: readonly number[];
  /** Candidate input-activation widths (default [8]). */
  readonly aBits?: readonly number[];
  /** Observers and granularity of the static branches (`PlanBase`; kinds are always 'static'). */
  readonly base?: Omit<PlanBase, 'weightKind' | 'activationKind' | 'firstLayer'>;
  /** Calibration samples of the activation ranges (default 512). */
  readonly calibrationSamples?: number;
}

function sortedBits(list: readonly number[] | undefined, fallback: number[], name: string, lowest: number): number[] {
  const bits = [...new Set(list ?? fallback)].sort((x, y) => x - y);
  if (bits.length === 0) throw new Error(`spos: ${name} is empty`);
  for (const b of bits) if (!Number.isInteger(b) || b < lowest || b > 16) throw new Error(`spos: ${name} entries must be integers in [${lowest}, 16], got ${b}`);
  return bits;
}

function firstInput(data: Iterable<{ x: Tensor }>, who: string): Tensor {
  for (const { x } of data) return x;
  throw new Error(`${who}: the calibration data is empty`);
}

/**
 * Turns a float `model` IN PLACE into a supernet: every Conv2d / Linear gets a switchable weight
 * quantizer over `wBits` and an input quantizer over `aBits` (switchable when there are several),
 * all branches 'static' and calibrated on `calibration` (the float model runs; weights: MSE
 * scales below 8 bits, min-max at 8; activations: min-max; the first layer's input signed). The
 * path starts at the widest widths. The model is left in eval mode.
 */
export function buildSupernet(model: TensorModule, calibration: Iterable<{ x: Tensor }>, options: SupernetOptions = {}): Supernet {
  const wBits = sortedBits(options.wBits, [2, 3, 4, 8], 'wBits', 2);
  const aBits = sortedBits(options.aBits, [8], 'aBits', 2);
  const sample = firstInput(calibration, 'buildSupernet');
  const layers = describeLayers(model, sample.shape.slice(1));
  const base: PlanBase = { ...options.base, weightKind: 'static', activationKind: 'static' };
  const overrides: PlanOverride[] = layers.map((l, i) => {
    const acts = aBits.map((a) => activationSpecFor(a, i === 0, base));
    return {
      match: l.name,
      config: {
        weight: { kind: SPOS_KIND, bits: wBits[wBits.length - 1]!, branches: wBits.map((w) => weightSpecFor({ w }, base)) },
        activation: acts.length > 1 ? { kind: SPOS_KIND, bits: aBits[aBits.length - 1]!, branches: acts } : acts[0]!,
      },
    };
  });
  const plan: QuantPlan = { default: { weight: null, activation: null }, overrides, keepFirstLast8bit: false, inputActivation: 'layer' };
  calibrate(model, calibration, { plan, samples: options.calibrationSamples ?? 512 });
  const byName = new Map(quantizedLayers(model).map((q) => [q.name, q.layer]));
  const quantizers = layers.map((l) => {
    const layer = byName.get(l.name);
    const weight = layer?.weightQuantizer;
    if (!(weight instanceof SposQuantizer)) throw new Error(`buildSupernet: layer '${l.name}' did not get a '${SPOS_KIND}' weight quantizer`);
    return { weight, activation: layer!.inputQuantizer ?? null };
  });
  const space: SposSpace = { layers, wBits, aBits };
  let current = pathCardinalities(space).map((k) => k - 1);
  const per = aBits.length > 1 ? 2 : 1;
  const setPath = (path: readonly number[]): void => {
    const cards = pathCardinalities(space);
    if (path.length !== cards.length || path.some((g, i) => !Number.isInteger(g) || g < 0 || g >= cards[i]!)) {
      throw new Error(`Supernet.setPath: expected ${cards.length} genes with gene i in [0, ${cards.join(' | ')}), got [${path.join(', ')}]`);
    }
    quantizers.forEach((q, i) => {
      q.weight.choice = path[per * i]!;
      if (per === 2) (q.activation as SposQuantizer).choice = path[per * i + 1]!;
    });
    current = path.slice();
  };
  const batches = collectCalibrationBatches(calibration, { samples: options.calibrationSamples ?? 512 });
  const statics = quantizers.flatMap((q) => [...q.weight.branches, ...(q.activation instanceof SposQuantizer ? q.activation.branches : q.activation ? [q.activation] : [])])
    .filter((b): b is StaticQuantizer => b instanceof StaticQuantizer);
  const refreshScales = (): void => {
    const training = model.training;
    model.eval();
    for (const b of statics) b.startCalibration();
    try {
      noGrad(() => {
        for (const x of batches) model.forward(x);
      });
    } finally {
      for (const b of statics) if (b.calibrating) b.freeze();
      model.train(training);
    }
  };
  return {
    model, space, quantizers, setPath, refreshScales,
    get path() {
      return current;
    },
  };
}

// ------------------------------------------------------------------ batch-norm recalibration

/** Modules holding BatchNorm running statistics: plain BatchNorms and the BN inside a folded conv. */
function batchNorms(model: Module): BatchNorm[] {
  const out = new Set<BatchNorm>();
  for (const m of model.modules()) {
    if (m instanceof BatchNorm && m.trackRunningStats) out.add(m);
    if (m instanceof QuantConvBn2d && m.bn.trackRunningStats) out.add(m.bn);
  }
  return [...out];
}

/**
 * Recomputes every BatchNorm's running statistics for the model as it is now (e.g. one supernet
 * path): per BN, running mean = the mean of the per-batch means over `batches`, running var =
 * the mean of the per-batch unbiased variances (PyTorch's cumulative average, `momentum=None`,
 * as SPOS recalibrates). Only the BatchNorms (and folded conv+BN layers) run in training mode;
 * dropout and quantizers stay in eval mode; no gradient. Returns the number of BatchNorms
 * recalibrated (0: nothing to do, the model is not run).
 */
export function recalibrateBatchNorm(model: TensorModule, batches: readonly Tensor[]): number {
  const norms = batchNorms(model);
  if (norms.length === 0) return 0;
  if (batches.length === 0) throw new Error('recalibrateBatchNorm: no batches');
  const owners = model.modules().filter((m) => m instanceof BatchNorm || m instanceof QuantConvBn2d);
  const sums = norms.map((bn) => ({ mean: new Float64Array(bn.numFeatures), variance: new Float64Array(bn.numFeatures) }));
  const momenta = norms.map((bn) => bn.momentum);
  const training = model.training;
  model.eval();
  for (const m of owners) m.train(true);
  for (const m of model.modules()) if (m instanceof Quantizer) m.train(false);
  try {
    // Momentum 1: after a batch the running buffers hold exactly that batch's mean and unbiased variance.
    for (const bn of norms) {
      const writable: { momentum: number | null } = bn;
      writable.momentum = 1;
    }
    noGrad(() => {
      for (const x of batches) {
        model.forward(x);
        norms.forEach((bn, k) => {
          for (let c = 0; c < bn.numFeatures; c++) {
            sums[k]!.mean[c]! += bn.runningMean!.data[c]!;
            sums[k]!.variance[c]! += bn.runningVar!.data[c]!;
          }
        });
      }
    });
    norms.forEach((bn, k) => {
      for (let c = 0; c < bn.numFeatures; c++) {
        bn.runningMean!.data[c] = sums[k]!.mean[c]! / batches.length;
        bn.runningVar!.data[c] = sums[k]!.variance[c]! / batches.length;
      }
      bn.numBatchesTracked!.data[0] = batches.length;
    });
  } finally {
    norms.forEach((bn, k) => {
      const writable: { momentum: number | null } = bn;
      writable.momentum = momenta[k]!;
    });
    model.train(training);
  }
  return norms.length;
}

// ------------------------------------------------------------------ supernet training

export interface SupernetTrainOptions {
  /** Training steps (one sampled path each; default 1,000). */
  readonly steps?: number;
  /** Adam learning rate, cosine-decayed to 0 (default 1e-4). */
  readonly lr?: number;
  /** Seed of the path sampling and in-model randomness (default 0). */
  readonly seed?: number;
  /** Re-calibrate every branch (`refreshScales`) every this many steps (default 100; 0 = only after the last step). */
  readonly rescaleEvery?: number;
  /** Polled every step; true stops training. */
  shouldStop?(): boolean;
  /** After each step. */
  onStep?(step: number, info: { loss: number; path: readonly number[] }): void;
}


/**
 * Fine-tunes the supernet's shared weights by uniform path sampling (see the module comment):
 * each step a path drawn with `samplePath`, one Adam step through it. Returns the steps done and
 * how many times each choice of each gene was sampled.
 */
export async function trainSupernet(supernet: Supernet, train: Iterable<Batch>, options: SupernetTrainOptions = {}): Promise<{ steps: number; stopped: boolean; counts: number[][]; losses: number[] }> {
  const steps = options.steps ?? 1000;
  const lr = options.lr ?? 1e-4;
  const rescaleEvery = options.rescaleEvery ?? 100;
  if (!Number.isInteger(steps) || steps < 0) throw new Error(`trainSupernet: steps must be a non-negative integer, got ${steps}`);
  if (!(lr >= 0)) throw new Error(`trainSupernet: lr must be >= 0, got ${lr}`);
  if (!Number.isInteger(rescaleEvery) || rescaleEvery < 0) throw new Error(`trainSupernet: rescaleEvery must be a non-negative integer, got ${rescaleEvery}`);
  const { model } = supernet;
  const cards = pathCardinalities(supernet.space);
  const counts = cards.map((k) => new Array<number>(k).fill(0));
  const rng = new Rng(options.seed ?? 0);
  manualSeed(options.seed ?? 0);
  const optimizer = new Adam(qatParamGroups(model, { lr }));
  const baseLr = optimizer.paramGroups.map((g) => g.lr);
  const batches = cycleBatches(train, () => new Error('trainSupernet: the training data yielded no batch'));
  const losses: number[] = [];
  let done = 0;
  let stopped = false;
  const start = supernet.path;
  model.train();
  for (let step = 0; step < steps; step++) {
    if (step % 16 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    if (options.shouldStop?.()) {
      stopped = true;
      break;
    }
    const path = samplePath(cards, rng);
    path.forEach((g, i) => counts[i]![g]!++);
    supernet.setPath(path);
    const scale = 0.5 * (1 + Math.cos((Math.PI * step) / steps));
    optimizer.paramGroups.forEach((g, i) => (g.lr = baseLr[i]! * scale));
    const { x, y } = batches.next().value!;
    const loss = crossEntropy(model.forward(x), y);
    optimizer.zeroGrad();
    loss.backward();
    optimizer.step();
    done = step + 1;
    const value = loss.item();
    losses.push(value);
    options.onStep?.(step, { loss: value, path });
    if (rescaleEvery > 0 && done % rescaleEvery === 0 && done < steps) supernet.refreshScales();
  }
  optimizer.zeroGrad();
  if (done > 0) supernet.refreshScales();
  supernet.setPath(start);
  model.eval();
  return { steps: done, stopped, counts, losses };
}

// ------------------------------------------------------------------ evolutionary search

/** Options of the generic evolutionary search over integer genomes. */
export interface EvolutionOptions {
  /** Choices per gene. */
  readonly cardinalities: readonly number[];
  /** Whether a genome meets every constraint. */
  fits(genome: readonly number[]): boolean;
  /** The score of a genome, compared lexicographically (higher is better), e.g. [accuracy, −loss]. */
  evaluate(genome: readonly number[]): readonly number[] | Promise<readonly number[]>;
  /** Population size (default 50). */
  readonly population?: number;
  /** Parents kept between iterations (default 10). */
  readonly topK?: number;
  /** Iterations (default 20). */
  readonly iterations?: number;
  /** Mutation children per iteration (default population/2). */
  readonly mutations?: number;
  /** Crossover children per iteration (default population/2). */
  readonly crossovers?: number;
  /** Per-gene probability of a mutation resampling the gene (default 0.1). */
  readonly mutationProbability?: number;
  /** Draws per wanted genome before giving up on finding a new valid one (default 100). */
  readonly maxTries?: number;
  readonly seed?: number;
  /** Polled before each evaluation; true stops the search with the best so far. */
  shouldStop?(): boolean;
  /** After each evaluation of a new genome. */
  onEvaluation?(genome: readonly number[], score: readonly number[]): void;
  /** After each iteration with the current top-k. */
  onIteration?(iteration: number, top: readonly { genome: readonly number[]; score: readonly number[] }[]): void;
}

export interface EvolutionResult {
  readonly best: { readonly genome: readonly number[]; readonly score: readonly number[] };
  /** Every genome evaluated, in order. */
  readonly evaluated: readonly { readonly genome: readonly number[]; readonly score: readonly number[] }[];
  readonly iterations: number;
  readonly stopped: boolean;
}

/** a > b lexicographically (first differing entry). */
export function scoreBetter(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i]! !== b[i]!) return a[i]! > b[i]!;
  }
  return false;
}

/**
 * SPOS's evolutionary search: an initial population of `population` distinct genomes drawn
 * uniformly until they fit; then for `iterations` rounds: the top-k of everything evaluated are
 * the parents; `mutations` children resample each gene of a random parent with probability
 * `mutationProbability`, `crossovers` children take each gene from one of two random parents;
 * a child that does not fit or was seen before is drawn again (up to `maxTries` draws per child).
 * Throws NoAllocationFitsError when no valid initial genome is found in `maxTries·population` draws.
 */
export async function evolutionarySearch(options: EvolutionOptions): Promise<EvolutionResult> {
  const cards = options.cardinalities;
  const populationSize = options.population ?? 50;
  const topK = options.topK ?? 10;
  const iterations = options.iterations ?? 20;
  const mutations = options.mutations ?? Math.floor(populationSize / 2);
  const crossovers = options.crossovers ?? populationSize - Math.floor(populationSize / 2);
  const p = options.mutationProbability ?? 0.1;
  const maxTries = options.maxTries ?? 100;
  for (const [name, v, lo] of [['population', populationSize, 1], ['topK', topK, 1], ['iterations', iterations, 0], ['mutations', mutations, 0], ['crossovers', crossovers, 0], ['maxTries', maxTries, 1]] as const) {
    if (!Number.isInteger(v) || v < lo) throw new Error(`evolutionarySearch: ${name} must be an integer >= ${lo}, got ${v}`);
  }
  if (!(p >= 0 && p <= 1)) throw new Error(`evolutionarySearch: mutationProbability must be in [0, 1], got ${p}`);
  if (cards.length === 0) throw new Error('evolutionarySearch: no genes');
  const rng = new Rng(options.seed ?? 0);
  const seen = new Map<string, readonly number[]>();
  const evaluated: { genome: readonly number[]; score: readonly number[] }[] = [];
  let stopped = false;

  const draw = (make: () => number[]): number[] | null => {
    for (let t = 0; t < maxTries; t++) {
      const g = make();
      if (!seen.has(g.join(',')) && options.fits(g)) return g;
    }
    return null;
  };
  const score = async (genome: number[]): Promise<boolean> => {
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (evaluated.length > 0 && options.shouldStop?.()) {
      stopped = true;
      return false;
    }
    seen.set(genome.join(','), genome);  // reserved before scoring, so a child equal to it is not drawn again
    const s = [...(await options.evaluate(genome))];
    if (s.length === 0 || s.some((v) => Number.isNaN(v))) throw new Error(`evolutionarySearch: the score of [${genome.join(', ')}] is [${s.join(', ')}]`);
    evaluated.push({ genome, score: s });
    options.onEvaluation?.(genome, s);
    return true;
  };
  const top = (): { genome: readonly number[]; score: readonly number[] }[] =>
    [...evaluated].sort((a, b) => (scoreBetter(a.score, b.score) ? -1 : scoreBetter(b.score, a.score) ? 1 : 0)).slice(0, topK);

  // Initial population: uniform draws that fit.
  let attempts = 0;
  const initial: number[][] = [];
  while (initial.length < populationSize && attempts < maxTries * populationSize) {
    attempts++;
    const g = samplePath(cards, rng);
    const key = g.join(',');
    if (initial.some((h) => h.join(',') === key) || !options.fits(g)) continue;
    initial.push(g);
  }
  if (initial.length === 0) throw new Error(`evolutionarySearch: no genome that fits was found in ${attempts} uniform draws`);
  for (const g of initial) if (!(await score(g))) break;

  let iteration = 0;
  for (; iteration < iterations && !stopped; iteration++) {
    const parents = top();
    options.onIteration?.(iteration, parents);
    const children: number[][] = [];
    for (let m = 0; m < mutations; m++) {
      const child = draw(() => {
        const parent = parents[rng.int(parents.length)]!.genome;
        return parent.map((g, i) => (rng.uniform() < p ? rng.int(cards[i]!) : g));
      });
      if (child) {
        seen.set(child.join(','), child);
        children.push(child);
      }
    }
    for (let c = 0; c < crossovers; c++) {
      const child = draw(() => {
        const a = parents[rng.int(parents.length)]!.genome;
        const b = parents[rng.int(parents.length)]!.genome;
        return a.map((g, i) => (rng.uniform() < 0.5 ? g : b[i]!));
      });
      if (child) {
        seen.set(child.join(','), child);
        children.push(child);
      }
    }
    for (const g of children) if (!(await score(g))) break;
  }
  const best = top()[0]!;
  return { best, evaluated, iterations: iteration, stopped };
}

// ------------------------------------------------------------------ the whole search

/** A budget of `sposSearch`: a cost model and its limit (in the model's unit). */
export interface SposBudget {
  readonly cost: CostModel;
  readonly value: number;
}

/** What `searchSupernet` needs besides the supernet. */
export interface SposEvolveOptions {
  /** Budgets; the plan fits all of them. The first orders the report. */
  readonly budgets: readonly SposBudget[];
  /** Further cost models recorded per candidate (report axes). */
  readonly costs?: readonly CostModel[];
  /** Evolution (population, topK, iterations, mutations, crossovers, mutationProbability). */
  readonly evolution?: Pick<EvolutionOptions, 'population' | 'topK' | 'iterations' | 'mutations' | 'crossovers' | 'mutationProbability' | 'maxTries'>;
  /** Training batches that recompute BN statistics per candidate (default 4; unused without BatchNorm). */
  readonly recalibrationBatches?: number;
  /** Fitness: 'accuracy' (ties: lower loss; default) or 'loss' (lower is better). */
  readonly fitness?: 'accuracy' | 'loss';
  /** Also score the uniform paths (every layer at one weight width, widest activations) as references (default true). */
  readonly references?: boolean;
  readonly seed?: number;
  shouldStop?(): boolean;
  onEvaluation?(candidate: SearchCandidate): void;
}

export interface SposSearchOptions extends SupernetOptions, SposEvolveOptions {
  /** Supernet training (steps, lr, rescaleEvery); its seed is `seed`. */
  readonly training?: Omit<SupernetTrainOptions, 'shouldStop' | 'onStep' | 'seed'>;
  onTrainStep?(step: number, info: { loss: number; path: readonly number[] }): void;
}

export interface SposEvolveResult {
  readonly layers: LayerInfo[];
  readonly space: SposSpace;
  /** Inherited accuracy of the widest path on `data.eval`. */
  readonly widestAccuracy: number;
  /** The best path found (within every budget); accuracy = inherited supernet accuracy on `data.eval`. */
  readonly chosen: SearchCandidate;
  /** Every path evaluated, then the uniform references. */
  readonly candidates: SearchCandidate[];
  readonly front: SearchCandidate[];
  readonly uniform: SearchCandidate[];
  readonly searchSeconds: number;
  readonly evaluations: number;
  readonly iterations: number;
  readonly stopped: boolean;
  /** Best inherited accuracy among the parents of each iteration. */
  readonly history: { iteration: number; bestAccuracy: number }[];
}

export interface SposSearchResult extends SposEvolveResult {
  readonly trainSteps: number;
  readonly trainSeconds: number;
  /** How often each choice of each gene was sampled during training. */
  readonly sampleCounts: number[][];
}

const FIT_SLACK = 1e-12;

/** Costs of a path per budget (tables priced once) and whether it fits every budget. */
function budgetChecker(space: SposSpace, budgets: readonly SposBudget[]): { costsOf(path: readonly number[]): number[]; fits(path: readonly number[]): boolean } {
  if (budgets.length === 0) throw new Error('spos: give at least one budget');
  for (const b of budgets) if (!(b.value > 0 && Number.isFinite(b.value))) throw new Error(`spos: the ${b.cost.name} budget must be a positive finite number, got ${b.value}`);
  // Cost tables [budget][layer][w][a] (the latency model measures here).
  const tables = budgets.map((b) => space.layers.map((l) => space.wBits.map((w) => space.aBits.map((a) => layerChoiceCost(b.cost, l, { w, a })))));
  const per = space.aBits.length > 1 ? 2 : 1;
  const costsOf = (path: readonly number[]): number[] => tables.map((t) => space.layers.reduce((s, _l, i) => s + t[i]![path[per * i]!]![per === 2 ? path[per * i + 1]! : 0]!, 0));
  const fits = (path: readonly number[]): boolean => costsOf(path).every((c, k) => c <= budgets[k]!.value + Math.abs(budgets[k]!.value) * FIT_SLACK);
  const narrowest = pathCardinalities(space).map(() => 0);
  if (!fits(narrowest)) throw new NoAllocationFitsError(budgets.map((b) => b.value), costsOf(narrowest));
  return { costsOf, fits };
}

/**
 * The evolutionary search on a trained supernet (step 3 of the module comment): paths within
 * every budget, each scored on `data.eval` with the inherited weights after recomputing BN
 * statistics on the first `recalibrationBatches` batches of `data.train` (models with BatchNorm
 * only; the branches are then re-calibrated too, as BN-folded weights changed). Leaves the
 * supernet switched to the chosen path.
 */
export async function searchSupernet(supernet: Supernet, data: SearchData, options: SposEvolveOptions): Promise<SposEvolveResult> {
  const fitness = options.fitness ?? 'accuracy';
  if (fitness !== 'accuracy' && fitness !== 'loss') throw new Error(`searchSupernet: fitness must be 'accuracy' or 'loss', got '${String(fitness)}'`);
  const recalCount = options.recalibrationBatches ?? 4;
  if (!Number.isInteger(recalCount) || recalCount < 1) throw new Error(`searchSupernet: recalibrationBatches must be a positive integer, got ${recalCount}`);
  const t0 = performance.now();
  const { model, space } = supernet;
  const layers = [...space.layers];
  const cards = pathCardinalities(space);
  const per = space.aBits.length > 1 ? 2 : 1;
  const { fits } = budgetChecker(space, options.budgets);
  const hasBatchNorm = batchNorms(model).length > 0;
  if (hasBatchNorm && !data.train) throw new Error('searchSupernet: a model with BatchNorm needs data.train (its statistics are recomputed per path)');
  const recalBatches = hasBatchNorm ? collectCalibrationBatches(data.train!, { batches: recalCount }) : [];
  const allCosts = [...options.budgets.map((b) => b.cost), ...(options.costs ?? []).filter((c) => !options.budgets.some((b) => b.cost.name === c.name))];
  const candidates = new Map<string, SearchCandidate>();
  const losses = new Map<SearchCandidate, number>();
  const setAndRecalibrate = (path: readonly number[]): void => {
    supernet.setPath(path);
    if (recalBatches.length > 0) {
      recalibrateBatchNorm(model, recalBatches);
      supernet.refreshScales();  // BN-folded weights changed with the statistics
    }
  };
  const scorePath = (path: readonly number[], uniform?: string): SearchCandidate => {
    setAndRecalibrate(path);
    const r = evaluateModel(model, data.eval);
    const assignment = pathToAssignment(space, path);
    const candidate: SearchCandidate = { assignment, accuracy: r.accuracy, ptqAccuracy: r.accuracy, costs: assignmentCosts(allCosts, layers, assignment), ...(uniform ? { uniform } : {}) };
    losses.set(candidate, r.loss);
    return candidate;
  };
  const widestAccuracy = scorePath(cards.map((k) => k - 1)).accuracy;
  const history: { iteration: number; bestAccuracy: number }[] = [];
  const evo = await evolutionarySearch({
    ...options.evolution,
    cardinalities: cards, fits, seed: options.seed ?? 0,
    ...(options.shouldStop ? { shouldStop: options.shouldStop } : {}),
    evaluate(path) {
      const c = scorePath(path);
      candidates.set(path.join(','), c);
      options.onEvaluation?.(c);
      const loss = losses.get(c)!;
      return fitness === 'accuracy' ? [c.accuracy, -loss] : [-loss, c.accuracy];
    },
    onIteration(iteration, top) {
      history.push({ iteration, bestAccuracy: Math.max(...top.map((t) => candidates.get(t.genome.join(','))!.accuracy)) });
    },
  });
  const chosen = candidates.get(evo.best.genome.join(','))!;
  const uniform: SearchCandidate[] = [];
  if (options.references !== false && !evo.stopped) {
    const widestA = space.aBits.length - 1;
    space.wBits.forEach((w, k) => {
      const path = layers.flatMap(() => (per === 2 ? [k, widestA] : [k]));
      uniform.push(scorePath(path, uniformLabel({ w, a: space.aBits[widestA]! })));
    });
  }
  setAndRecalibrate(evo.best.genome);
  const all = [...candidates.values(), ...uniform];
  return {
    layers, space, widestAccuracy, chosen, candidates: all, front: candidateFront(all, allCosts.map((c) => c.name)), uniform,
    searchSeconds: (performance.now() - t0) / 1000, evaluations: evo.evaluated.length, iterations: evo.iterations, stopped: evo.stopped, history,
  };
}

/**
 * SPOS over the Conv2d / Linear layers of a trained float `model` (turned into the supernet and
 * fine-tuned IN PLACE: pass a copy to keep the float model): `buildSupernet` on
 * `data.calibration`, `trainSupernet` on `data.train` by uniform path sampling, then
 * `searchSupernet` within the budgets, each path scored on `data.eval` with the inherited weights.
 * Throws NoAllocationFitsError (before the model is changed) when the narrowest path exceeds a budget.
 */
export async function sposSearch(model: TensorModule, data: SearchData, options: SposSearchOptions): Promise<SposSearchResult> {
  if (!data.train) throw new Error('sposSearch: data.train is required (the supernet is trained)');
  const t0 = performance.now();
  // The budgets are checked on the float model's layers first: an unreachable budget leaves it untouched.
  const probe = firstInput(data.calibration, 'sposSearch');
  const wBits = sortedBits(options.wBits, [2, 3, 4, 8], 'wBits', 2);
  const aBits = sortedBits(options.aBits, [8], 'aBits', 2);
  budgetChecker({ layers: describeLayers(model, probe.shape.slice(1)), wBits, aBits }, options.budgets);
  const supernet = buildSupernet(model, data.calibration, options);
  const trained = await trainSupernet(supernet, data.train, {
    ...options.training, seed: options.seed ?? 0,
    ...(options.shouldStop ? { shouldStop: options.shouldStop } : {}),
    ...(options.onTrainStep ? { onStep: options.onTrainStep } : {}),
  });
  const trainSeconds = (performance.now() - t0) / 1000;
  const found = await searchSupernet(supernet, data, options);
  return { ...found, stopped: trained.stopped || found.stopped, trainSteps: trained.steps, trainSeconds, sampleCounts: trained.counts };
}
