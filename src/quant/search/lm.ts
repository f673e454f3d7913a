/**
 * Mixed-precision search for language models (nn.TransformerLM, nn.NextWordModel): the searchable
 * layers with their weight counts and MACs per token, a bit assignment applied through the LM
 * QAT recipe (quant.rnn.prepareRnnQat / quant.transformer.prepareTransformerQat) with per-layer
 * widths, and a post-training evaluation of an assignment as validation cross-entropy. The search
 * algorithms stay generic: they take an evaluator `(assignment) => error` (lower is better).
 *
 * A language model's score in a `SearchCandidate` is exp(−cross-entropy) = 1/perplexity (the
 * geometric-mean probability of the next word): higher is better, like accuracy, so the front and
 * budget helpers of mohaq.ts rank language models by perplexity unchanged.
 */
import { noGrad } from '../../autograd/engine.ts';
import { Embedding } from '../../nn/embedding.ts';
import { Linear } from '../../nn/linear.ts';
import type { Module } from '../../nn/module.ts';
import { NextWordModel } from '../../nn/models/next-word.ts';
import { TransformerLM, TransformerBlock } from '../../nn/models/transformer-lm.ts';
import { GRU, LSTM } from '../../nn/rnn.ts';
import { evaluate, type Batch } from '../../train/fit.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { StaticQuantizer, STATIC_KIND } from '../ptq/static.ts';
import { quantizers } from '../qat/prepare.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import { prepareRnnQat, type RnnQatPlan } from '../rnn/recipe.ts';
import { prepareTransformerQat } from '../transformer/qat.ts';
import { allocateExact, layerOptions, paretoFront } from './allocate.ts';
import { uniformAssignment } from './costs.ts';
import { bitChoices, uniformLabel, assignmentCosts, candidateFront, type BitSpaceOptions, type SearchCandidate } from './mohaq.ts';
import { nsga2 } from './nsga2.ts';
import { checkAssignment } from './plan.ts';
import type { BitAssignment, BitChoice, CostModel, LayerInfo } from './types.ts';

/** A language model the search accepts. */
export type SearchableLm = TransformerLM | NextWordModel;

/** True for a model `describeLmLayers` describes. */
export function isSearchableLm(model: unknown): model is SearchableLm {
  return model instanceof TransformerLM || model instanceof NextWordModel;
}

function weightOf(module: Module, what: string): Tensor {
  const named = module.namedParameters().filter(([name]) => name === 'weight');
  if (named.length !== 1) throw new Error(`describeLmLayers: ${what} has no single 'weight' (already prepared for QAT?)`);
  return named[0]![1];
}

function linearInfo(name: string, module: Module): LayerInfo {
  if (!(module instanceof Linear)) throw new Error(`describeLmLayers: '${name}' is a ${module.constructor.name}, not a float Linear (already prepared for QAT?)`);
  return {
    name, type: 'Linear', weightCount: module.weight.size, outChannels: module.outFeatures, macs: module.inFeatures * module.outFeatures,
    inShape: [module.inFeatures], outShape: [module.outFeatures], reduction: module.inFeatures,
  };
}

function embeddingInfo(name: string, module: Module): LayerInfo {
  if (!(module instanceof Embedding)) throw new Error(`describeLmLayers: '${name}' is a ${module.constructor.name}, not a float Embedding (already prepared for QAT?)`);
  // A lookup: no multiply-accumulate; one row of embeddingDim values per token.
  return {
    name, type: 'Embedding', weightCount: weightOf(module, name).size, outChannels: module.numEmbeddings, macs: 0,
    inShape: [1], outShape: [module.embeddingDim], reduction: 1,
  };
}

function recurrentInfo(name: string, module: Module): LayerInfo {
  if (!(module instanceof LSTM) && !(module instanceof GRU)) throw new Error(`describeLmLayers: '${name}' is a ${module.constructor.name}, not a float LSTM or GRU (already prepared for QAT?)`);
  if (module.numLayers !== 1 || module.bidirectional) throw new Error(`describeLmLayers: '${name}': one unidirectional recurrent layer is supported`);
  const weights = module.namedParameters().filter(([n]) => n.startsWith('weight'));
  const count = weights.reduce((n, [, w]) => n + w.size, 0);
  const gates = module instanceof LSTM ? 4 : 3;
  // Per token: [gates·H, E]·x_t + [gates·H, H]·h_{t−1}, every weight element once.
  return {
    name, type: module instanceof LSTM ? 'LSTM' : 'GRU', weightCount: count, outChannels: gates * module.hiddenSize, macs: count,
    inShape: [module.inputSize], outShape: [module.hiddenSize], reduction: module.inputSize + module.hiddenSize,
  };
}

/**
 * The searchable layers of a float language model, in forward order, with weight counts (bias
 * excluded) and multiply-accumulates per token:
 * - TransformerLM: `tokenEmbedding` (V·E weights, 0 MACs: a lookup), then per block
 *   `blocks.i.attn.qkv` (E·3E), `blocks.i.attn.proj` (E·E), `blocks.i.fc1` (E·H), `blocks.i.fc2`
 *   (H·E), then `head` (E·V). The position table, LayerNorms and the activation-by-activation
 *   matmuls of attention (Q·Kᵀ, A·V) are not searched (the first two stay float, the latter are
 *   quantized at the widest activation width).
 * - NextWordModel: `embedding` (V·E, 0 MACs), `rnn` (an LSTM or GRU: W_ih and W_hh, gates·H·(E+H)
 *   weights and MACs), `head` (H·V).
 * MACs are per token of an every-position forward (the head once per predicted word).
 */
export function describeLmLayers(model: SearchableLm): LayerInfo[] {
  if (model instanceof TransformerLM) {
    if (model.tieWeights || !model.head) throw new Error('describeLmLayers: a TransformerLM with tieWeights shares the token table with the head; build it with tieWeights: false');
    const out: LayerInfo[] = [embeddingInfo('tokenEmbedding', model.tokenEmbedding)];
    model.blocks.children().forEach((block, i) => {
      if (!(block instanceof TransformerBlock)) throw new Error(`describeLmLayers: block ${i} is a ${block.constructor.name}, not a TransformerBlock`);
      out.push(linearInfo(`blocks.${i}.attn.qkv`, block.attn.qkv), linearInfo(`blocks.${i}.attn.proj`, block.attn.proj), linearInfo(`blocks.${i}.fc1`, block.fc1), linearInfo(`blocks.${i}.fc2`, block.fc2));
    });
    out.push(linearInfo('head', model.head));
    return out;
  }
  if (model instanceof NextWordModel) return [embeddingInfo('embedding', model.embedding), recurrentInfo('rnn', model.rnn), linearInfo('head', model.head)];
  throw new TypeError(`describeLmLayers: expected a TransformerLM or NextWordModel, got ${(model as object)?.constructor?.name}`);
}

/** How `prepareLmAssignment` quantizes. */
export interface LmQuantKind {
  /**
   * 'static': calibrated post-training quantizers (weights per row, MSE observer below 8 bits,
   * min-max at 8; activations per tensor, min-max); 'lsq': learned step sizes for QAT (what
   * `lowbit train --model ...-lm --quant` uses).
   */
  readonly kind: 'static' | 'lsq';
}

function weightSpec(w: number, kind: LmQuantKind['kind']): QuantizerSpec {
  const base = { bits: w, signed: true, symmetric: true, granularity: 'channel' };
  return (kind === 'static' ? { kind: STATIC_KIND, ...base, method: w >= 8 ? 'minmax' : 'mse' } : { kind: 'lsq', ...base }) as QuantizerSpec;
}

function activationSpec(a: number, kind: LmQuantKind['kind'], signed = true): QuantizerSpec {
  if (kind === 'static') return { kind: STATIC_KIND, bits: a, signed, symmetric: false, granularity: 'tensor', method: 'minmax' } as QuantizerSpec;
  return (signed ? { kind: 'lsq', bits: a, signed: true, symmetric: true, granularity: 'tensor' } : { kind: 'lsq', bits: a, signed: false, symmetric: false, granularity: 'tensor' }) as QuantizerSpec;
}

/**
 * The `prepareRnnQat` plan of an assignment: every assigned layer gets `w`-bit weights (per row)
 * and `a`-bit inputs (per tensor; an LSTM/GRU also its h_{t−1}); layers not assigned stay float.
 * Names must be layers of `describeLmLayers(model)`.
 */
export function lmQatPlan(model: SearchableLm, assignment: BitAssignment, options: LmQuantKind): RnnQatPlan {
  checkAssignment(assignment);
  const names = new Set(describeLmLayers(model).map((l) => l.name));
  const unknown = Object.keys(assignment).filter((n) => !names.has(n));
  if (unknown.length > 0) throw new Error(`the plan names ${unknown.join(', ')}, which are not searchable layers of this ${model.constructor.name} (${[...names].join(', ')})`);
  for (const [name, c] of Object.entries(assignment)) {
    if (c.wPerChannel) throw new Error(`'${name}': per-channel bit widths are not supported for language models`);
    if (c.w < 2) throw new Error(`'${name}': ${c.w}-bit weights are not supported for language models (2 to 16)`);
  }
  const overrides = Object.entries(assignment).map(([name, c]) => ({
    match: name,
    config: { weight: weightSpec(c.w, options.kind), activation: activationSpec(c.a, options.kind), hidden: activationSpec(c.a, options.kind) },
  }));
  return { default: { weight: null, activation: null }, overrides };
}

/**
 * Quantizes a float language model in place by `assignment` (see `lmQatPlan`). A TransformerLM
 * also gets attention operand quantizers (Q, K, V signed, A unsigned) at the widest activation
 * width of the assignment, as the uniform `--quant wXaY` runs have. With kind 'static' the
 * quantizers still need calibrating (`calibrateLm`); with 'lsq' the model is ready for QAT
 * (build the optimizer afterwards).
 */
export function prepareLmAssignment(model: SearchableLm, assignment: BitAssignment, options: LmQuantKind): void {
  const plan = lmQatPlan(model, assignment, options);
  if (model instanceof TransformerLM) {
    const widest = Math.max(...Object.values(assignment).map((c) => c.a));
    const operands = Object.keys(assignment).length > 0;
    prepareTransformerQat(model, {
      weight: null, activation: null,
      attentionOperand: operands ? activationSpec(widest, options.kind) : null,
      attentionProbs: operands ? activationSpec(widest, options.kind, false) : null,
      overrides: plan.overrides,
    });
  } else {
    prepareRnnQat(model, plan);
  }
}

/** Runs `batches` (int32 ids) through a model prepared with 'static' quantizers and freezes them. */
export function calibrateLm(model: SearchableLm, batches: Iterable<Tensor>): void {
  const statics = quantizers(model).filter((q): q is StaticQuantizer => q instanceof StaticQuantizer);
  if (statics.length === 0) return;  // nothing assigned: the float model
  const wasTraining = model.training;
  model.eval();
  for (const q of statics) q.startCalibration();
  let any = false;
  noGrad(() => {
    for (const x of batches) {
      model.forward(x);
      any = true;
    }
  });
  if (!any) throw new Error('calibrateLm: no calibration batch');
  for (const q of statics) q.freeze();
  model.train(wasTraining);
}

/** The data a language-model evaluation uses. */
export interface LmSearchData {
  /** Calibration windows of token ids [N, C] int32 (training windows). */
  readonly calibration: readonly Tensor[];
  /** Batches the cross-entropy is measured on ({ x: ids [N, C], y: next word [N] }). */
  readonly eval: Iterable<Batch>;
}

/** What an evaluation of a language model gives. */
export interface LmScore {
  /** Mean cross-entropy per predicted word (nats). */
  readonly loss: number;
  readonly perplexity: number;
  /** Next-word accuracy in [0, 1]. */
  readonly accuracy: number;
}

/**
 * A post-training evaluator of assignments: each call builds a fresh float model (`build`, weights
 * loaded), quantizes it by the assignment with 'static' quantizers, calibrates them on
 * `data.calibration` and measures the mean cross-entropy on `data.eval`. The empty assignment
 * measures the float model.
 */
export function lmPtqEvaluator(build: () => SearchableLm, data: LmSearchData): (assignment: BitAssignment) => LmScore {
  return (assignment) => {
    const model = build();
    model.eval();
    prepareLmAssignment(model, assignment, { kind: 'static' });
    calibrateLm(model, data.calibration);
    model.eval();
    const r = evaluate(model, data.eval);
    return { loss: r.loss, perplexity: Math.exp(r.loss), accuracy: r.accuracy };
  };
}

/** The candidate score of a language model: exp(−loss) = 1/perplexity (see the module comment). */
export function lmScore(loss: number): number {
  return Math.exp(-loss);
}

/** Perplexity of a candidate's score (inverse of `lmScore`). */
export function perplexityOfScore(score: number): number {
  return 1 / score;
}

/** Options of the error-driven searches. */
export interface ErrorSearchOptions extends BitSpaceOptions {
  readonly layers: readonly LayerInfo[];
  /** Cost models; the first one is budgeted. */
  readonly costs: readonly CostModel[];
  readonly budget: number;
  /** Error of an assignment, lower is better (e.g. the PTQ cross-entropy); called once per distinct assignment. */
  evaluate(assignment: BitAssignment): number;
  /** Turns an error into the candidate score (higher is better; default: −error). */
  score?(error: number): number;
  shouldStop?(): boolean;
  onProgress?(stage: 'sensitivity' | 'evaluate' | 'search', done: number, total: number): void;
  /** Called with every newly evaluated candidate. */
  onCandidate?(candidate: SearchCandidate): void;
}

export interface ErrorSearchResult {
  /** Every evaluated candidate (uniform references first). */
  readonly candidates: SearchCandidate[];
  readonly front: SearchCandidate[];
  /** The best evaluated candidate within the budget (null if none fits). */
  readonly chosen: SearchCandidate | null;
  /** Error by assignment key, as measured. */
  readonly errors: Map<BitAssignment, number>;
  readonly stopped: boolean;
}

/** @internal Evaluates assignments once each (by bit pattern) and keeps them as candidates. */
class CandidateBook {
  readonly candidates: SearchCandidate[] = [];
  readonly errors = new Map<BitAssignment, number>();
  private readonly seen = new Map<string, SearchCandidate>();
  constructor(private readonly options: ErrorSearchOptions) {}

  key(assignment: BitAssignment): string {
    return JSON.stringify(this.options.layers.map((l) => assignment[l.name] ?? null));
  }

  get(assignment: BitAssignment, uniform?: string): SearchCandidate {
    const key = this.key(assignment);
    const known = this.seen.get(key);
    if (known) return known;
    const error = this.options.evaluate(assignment);
    const score = this.options.score ? this.options.score(error) : -error;
    const cand: SearchCandidate = { assignment, accuracy: score, ptqAccuracy: score, costs: assignmentCosts(this.options.costs, this.options.layers, assignment), ...(uniform ? { uniform } : {}) };
    this.seen.set(key, cand);
    this.errors.set(assignment, error);
    this.candidates.push(cand);
    this.options.onCandidate?.(cand);
    return cand;
  }
}

/** Lets pending events (SIGINT) run between evaluations, so `shouldStop` can see them. */
function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function bestWithin(candidates: readonly SearchCandidate[], cost: string, budget: number): SearchCandidate | null {
  let best: SearchCandidate | null = null;
  for (const c of candidates) if (c.costs[cost]! <= budget && (best === null || c.accuracy > best.accuracy)) best = c;
  return best;
}

/**
 * Exact allocation with a measured error model: the error of layer l at w bits is the increase of
 * `evaluate` when l alone is quantized at w (the others float) over the float model's (the empty
 * assignment); `allocateExact` minimizes the summed increases under the budget. The allocation at
 * the budget, the uniform references and `frontPoints` allocations along the proxy front are then
 * evaluated for real. Returns the allocation at the budget as `chosen` (null only if stopped
 * before it was measured) and `deltaError[layer][w]`.
 */
export async function exactErrorSearch(options: ErrorSearchOptions & { readonly frontPoints?: number }): Promise<ErrorSearchResult & { readonly deltaError: Record<string, Record<number, number>>; readonly floatError: number }> {
  const primary = options.costs[0];
  if (!primary) throw new Error('exactErrorSearch: give at least one cost model');
  const choices = bitChoices(options);
  const aBits = [...new Set(choices.map((c) => c.a))];
  if (aBits.length > 1) throw new Error('exactErrorSearch: one activation width (the error model is per weight width)');
  const a = aBits[0]!;
  const wBits = [...new Set(choices.map((c) => c.w))];
  const floatError = options.evaluate({});
  const deltaError: Record<string, Record<number, number>> = {};
  const total = options.layers.length * wBits.length;
  let done = 0;
  let stopped = false;
  for (const layer of options.layers) {
    deltaError[layer.name] = {};
    for (const w of wBits) {
      await yieldToEvents();
      if (options.shouldStop?.()) {
        stopped = true;
        break;
      }
      deltaError[layer.name]![w] = options.evaluate({ [layer.name]: { w, a } }) - floatError;
      options.onProgress?.('sensitivity', ++done, total);
    }
  }
  const book = new CandidateBook(options);
  if (stopped) return { candidates: [], front: [], chosen: null, errors: book.errors, stopped, deltaError, floatError };
  const error = (layer: LayerInfo, c: BitChoice): number => Math.max(0, deltaError[layer.name]![c.w]!);
  const opts = layerOptions(options.layers, choices, primary, error);
  const atBudget = allocateExact(opts, options.budget);
  const front = paretoFront(opts);
  const count = Math.max(2, options.frontPoints ?? 6);
  const picked: BitAssignment[] = [];
  for (let i = 0; i < count; i++) {
    const target = front[0]!.cost + ((front[front.length - 1]!.cost - front[0]!.cost) * i) / (count - 1);
    const nearest = front.reduce((best, f) => (Math.abs(f.cost - target) < Math.abs(best.cost - target) ? f : best));
    if (!picked.includes(nearest.assignment)) picked.push(nearest.assignment);
  }
  const items: { assignment: BitAssignment; uniform?: string }[] = [
    { assignment: atBudget.assignment },
    ...choices.map((c) => ({ assignment: uniformAssignment(options.layers, c.w, c.a), uniform: uniformLabel(c) })),
    ...picked.map((assignment) => ({ assignment })),
  ];
  let chosen: SearchCandidate | null = null;
  for (const [i, item] of items.entries()) {
    await yieldToEvents();
    if (i > 0 && options.shouldStop?.()) {
      stopped = true;
      continue;
    }
    const cand = book.get(item.assignment, item.uniform);
    if (i === 0) chosen = cand;
    options.onProgress?.('evaluate', i + 1, items.length);
  }
  return {
    candidates: book.candidates, front: candidateFront(book.candidates, options.costs.map((c) => c.name)), chosen, errors: book.errors, stopped, deltaError, floatError,
  };
}

/**
 * NSGA-II over per-layer widths with objectives (budgeted cost, error) and the other costs, every
 * candidate scored by `evaluate` (no beacons); the uniform assignments seed the population. The
 * plan is the lowest-error candidate within the budget.
 */
export async function nsga2ErrorSearch(options: ErrorSearchOptions & { readonly populationSize?: number; readonly generations?: number; readonly seed?: number }): Promise<ErrorSearchResult & { readonly generations: number }> {
  const primary = options.costs[0];
  if (!primary) throw new Error('nsga2ErrorSearch: give at least one cost model');
  const choices = bitChoices(options);
  const book = new CandidateBook(options);
  const assignmentOf = (genome: readonly number[]): BitAssignment => Object.fromEntries(options.layers.map((l, i) => [l.name, choices[genome[i]!]!]));
  const populationSize = options.populationSize ?? 20;
  const generations = options.generations ?? 12;
  const total = populationSize * (generations + 1);
  let evaluated = 0;
  const uniformIndex = new Map(choices.map((c, i) => [i, uniformLabel(c)]));
  const result = await nsga2({
    cardinalities: options.layers.map(() => choices.length),
    populationSize, generations, seed: options.seed ?? 0,
    initial: choices.map((_c, i) => options.layers.map(() => i)),
    shouldStop: options.shouldStop,
    evaluate: async (genome) => {
      await yieldToEvents();
      const uniform = genome.every((g) => g === genome[0]) ? uniformIndex.get(genome[0]!) : undefined;
      const cand = book.get(assignmentOf(genome), uniform);
      options.onProgress?.('search', ++evaluated, total);
      return [cand.costs[primary.name]!, -cand.accuracy, ...options.costs.slice(1).map((c) => cand.costs[c.name]!)];
    },
  });
  return {
    candidates: book.candidates, front: candidateFront(book.candidates, options.costs.map((c) => c.name)),
    chosen: bestWithin(book.candidates, primary.name, options.budget), errors: book.errors, stopped: result.stopped, generations: result.generations,
  };
}
