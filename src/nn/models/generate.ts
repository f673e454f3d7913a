/**
 * Text generation with a next-word language model: autoregressive sampling of ids after a prompt.
 *
 * A {@link TransformerLM} decodes with a KV cache ({@link TransformerLM.forwardCached}): the prompt
 * is fed once, then one new id per step. Any other next-word model (nn.NextWordModel: LSTM/GRU, or
 * a TransformerLM with `cache: false`) recomputes `forward` on the last `context` ids at every step.
 * Both see the same context at each step — the last min(length, context) ids — so they give the
 * same logits (up to float rounding) and, with the same seed, the same text: once the sequence is
 * longer than the context, the cache is rebuilt from the last `context` ids at every step (learned
 * absolute positions cannot slide), so the cache saves work only while the text fits the context.
 * A {@link CachedLanguageModel} that is not a module (quant.irnn.IntTransformerLM, with its integer
 * KV cache) is decoded by the same loop and the same sampling.
 */
import { noGrad } from '../../autograd/engine.ts';
import { narrow, reshape, Rng, Tensor } from '../../tensor/index.ts';
import type { Module, TensorModule } from '../module.ts';
import { TransformerLM } from './transformer-lm.ts';

/** How the next id is drawn from a row of logits. */
export interface SampleOptions {
  /** Softmax temperature: logits / temperature; 0 = greedy (the first largest logit). Default 1. */
  readonly temperature?: number;
  /** Sample among the k largest logits only (ties broken towards the lower id); default: all. */
  readonly topK?: number;
  /** Ids never drawn (e.g. `<unk>`, id 0 of a corpus vocabulary): left out before top-k and softmax. */
  readonly exclude?: readonly number[];
}

export interface GenerateOptions extends SampleOptions {
  /** How many ids to generate (a positive integer). */
  readonly tokens: number;
  /** Seed of the sampling generator (default 0); the same seed gives the same ids. */
  readonly seed?: number;
  /** Ids of context the model sees per step (default: a TransformerLM's maxContext, else all of them). */
  readonly context?: number;
  /** Use the KV cache of a TransformerLM (default true; ignored for other models). */
  readonly cache?: boolean;
  /** Called with each step's logits row (a copy, length V) before its id is drawn. */
  readonly onStep?: (logits: Float64Array, step: number) => void;
}

/** A next-word model: ids [N, C] → logits [N, V] of the word after each row, with its vocabulary size. */
export type NextWordLanguageModel = TensorModule & { readonly vocabSize: number };

function checkSampleOptions(options: SampleOptions, where: string): { temperature: number; topK: number | null } {
  const temperature = options.temperature ?? 1;
  if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature < 0) throw new RangeError(`${where}: temperature must be a finite number ≥ 0, got ${String(temperature)}`);
  const topK = options.topK ?? null;
  if (topK !== null && (!Number.isInteger(topK) || topK < 1)) throw new RangeError(`${where}: topK must be a positive integer, got ${String(topK)}`);
  const exclude = options.exclude ?? [];
  if (!Array.isArray(exclude) || exclude.some((id) => !Number.isInteger(id) || id < 0)) throw new RangeError(`${where}: exclude must be a list of non-negative integer ids, got ${JSON.stringify(exclude)}`);
  return { temperature, topK };
}

/**
 * Draws one id from `logits` (length V): greedy at temperature 0, else from
 * softmax(logits / temperature) restricted to the `topK` largest (all without it), with one
 * `rng.uniform()` per call.
 */
export function sampleNext(logits: ArrayLike<number>, options: SampleOptions, rng: Rng): number {
  const { temperature, topK } = checkSampleOptions(options, 'sampleNext');
  const v = logits.length;
  const excluded = options.exclude && options.exclude.length > 0 ? new Set(options.exclude) : null;
  if (temperature === 0 && excluded === null && v > 0) {
    // Greedy over every id (the common decoding case): one pass, NaN checked on the way.
    let best = 0;
    for (let i = 0; i < v; i++) {
      const value = logits[i]!;
      if (Number.isNaN(value)) throw new RangeError(`sampleNext: logits[${i}] is NaN`);
      if (value > logits[best]!) best = i;
    }
    return best;
  }
  for (let i = 0; i < v; i++) if (Number.isNaN(logits[i]!)) throw new RangeError(`sampleNext: logits[${i}] is NaN`);
  const allowed = (i: number): boolean => excluded === null || !excluded.has(i);
  let first = 0;
  while (first < v && !allowed(first)) first++;
  if (first >= v) throw new RangeError(`sampleNext: no id left to draw (${v} logits, ${excluded?.size ?? 0} excluded)`);
  if (temperature === 0) {
    let best = first;
    for (let i = first + 1; i < v; i++) if (allowed(i) && logits[i]! > logits[best]!) best = i;
    return best;
  }
  // Candidates in ascending id order, or the topK largest (ties towards the lower id).
  let candidates: number[] | null = null;
  if (topK !== null && topK < v) {
    candidates = [];
    for (let i = 0; i < v; i++) if (allowed(i)) candidates.push(i);
    candidates.sort((a, b) => logits[b]! - logits[a]! || a - b);
    candidates = candidates.slice(0, topK);
  }
  const count = candidates ? candidates.length : v;
  const idAt = (k: number): number => (candidates ? candidates[k]! : k);
  const usable = (k: number): boolean => candidates !== null || allowed(k);
  let max = -Infinity;
  for (let k = 0; k < count; k++) if (usable(k)) max = Math.max(max, logits[idAt(k)]!);
  const weights = new Float64Array(count);
  let total = 0;
  for (let k = 0; k < count; k++) {
    if (!usable(k)) continue;
    weights[k] = Math.exp((logits[idAt(k)]! - max) / temperature);
    total += weights[k]!;
  }
  let u = rng.uniform() * total;
  for (let k = 0; k < count; k++) {
    if (!usable(k)) continue;
    u -= weights[k]!;
    if (u < 0) return idAt(k);
  }
  // Rounding left u ≥ 0 after the last weight: the last candidate with a nonzero weight.
  for (let k = count - 1; k >= 0; k--) if (usable(k) && weights[k]! > 0) return idAt(k);
  return idAt(candidates ? 0 : first);
}

function idsTensor(ids: readonly number[]): Tensor {
  return new Tensor(Int32Array.from(ids), [1, ids.length]);
}

function lastRow(logits: Tensor): ArrayLike<number> {
  // [1, S, V] → the last position's row, or [1, V] as it is: a view of the (contiguous) data, no
  // primitive call; the caller copies it once.
  const v = logits.shape.at(-1)!;
  return logits.data.subarray(logits.size - v, logits.size);
}

/**
 * A next-word model with its own KV cache that is not a module (e.g. quant.irnn.IntTransformerLM,
 * the integer-only transformer): `generate` drives it as it drives a TransformerLM.
 */
export interface CachedLanguageModel<Cache extends { readonly length: number } = { readonly length: number }> {
  readonly vocabSize: number;
  /** Longest context (positions of the cache). */
  readonly maxContext: number;
  /** An empty cache for one sequence. */
  createCache(): Cache;
  /** Appends `ids` (one sequence) to `cache`; returns the logits [V] of the word after the last of them. */
  nextLogitsCached(ids: readonly number[], cache: Cache): ArrayLike<number>;
  /** The logits [V] of the word after `ids` (one sequence), recomputed without a cache. */
  nextLogits(ids: readonly number[]): ArrayLike<number>;
}

function isCachedLanguageModel(model: NextWordLanguageModel | CachedLanguageModel): model is CachedLanguageModel {
  const m = model as Partial<CachedLanguageModel>;
  return typeof m.nextLogitsCached === 'function' && typeof m.nextLogits === 'function' && typeof m.createCache === 'function';
}

/** A TransformerLM (forwardCached) or any next-word module (forward over the window) as a CachedLanguageModel. */
function moduleDecoder(model: NextWordLanguageModel): CachedLanguageModel {
  const transformer = model instanceof TransformerLM ? model : null;
  return {
    vocabSize: model.vocabSize,
    maxContext: transformer ? transformer.maxContext : Infinity,
    createCache: () => (transformer ? transformer.createCache() : { length: 0 }),
    nextLogitsCached: (ids, cache) => lastRow(transformer!.forwardCached(idsTensor(ids), cache as ReturnType<TransformerLM['createCache']>)),
    nextLogits: (ids) => lastRow(model.forward(idsTensor(ids))),
  };
}

/**
 * Generates `options.tokens` ids after `prompt` (ids of `model`'s vocabulary, at least one) and
 * returns them (the prompt not included). A module runs in eval mode without a tape (its
 * previous mode is restored); see the module comment for the context and the KV cache. A
 * {@link CachedLanguageModel} (e.g. the integer-only IntTransformerLM) decodes with its own cache
 * exactly as a TransformerLM does (`cache: false` recomputes every step).
 */
export function generate(model: NextWordLanguageModel | CachedLanguageModel, prompt: readonly number[], options: GenerateOptions): number[] {
  checkSampleOptions(options, 'generate');
  const sampling: SampleOptions = { temperature: options.temperature, topK: options.topK, exclude: options.exclude };
  const { tokens } = options;
  if (!Number.isInteger(tokens) || tokens < 1) throw new RangeError(`generate: tokens must be a positive integer, got ${String(tokens)}`);
  if (prompt.length < 1) throw new RangeError('generate: the prompt is empty (give at least one id)');
  for (const [i, id] of prompt.entries()) {
    if (!Number.isInteger(id) || id < 0 || id >= model.vocabSize) throw new RangeError(`generate: prompt id ${String(id)} at index ${i} is outside [0, ${model.vocabSize}) (the vocabulary)`);
  }
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0) throw new RangeError(`generate: seed must be a non-negative integer, got ${String(seed)}`);
  const cachedModel = isCachedLanguageModel(model);
  const decoder = cachedModel ? model : moduleDecoder(model);
  const limit = decoder.maxContext;
  const context = options.context ?? limit;
  if (context !== Infinity && (!Number.isInteger(context) || context < 1)) throw new RangeError(`generate: context must be a positive integer, got ${String(context)}`);
  if (context > limit) throw new RangeError(`generate: context ${context} is longer than the model's maxContext ${limit}`);
  const useCache = (cachedModel || model instanceof TransformerLM) && (options.cache ?? true);
  const rng = new Rng(seed);
  const sequence = [...prompt];
  const window = (): number[] => sequence.slice(Math.max(0, sequence.length - context));
  const decode = (): number[] => {
    const out: number[] = [];
    let cache = useCache ? decoder.createCache() : null;
    let logits = new Float64Array(useCache ? decoder.nextLogitsCached(window(), cache!) : decoder.nextLogits(window()));
    for (let step = 0; step < tokens; step++) {
      options.onStep?.(logits.slice(), step);
      const next = sampleNext(logits, sampling, rng);
      out.push(next);
      sequence.push(next);
      if (step === tokens - 1) break;
      let row: ArrayLike<number>;
      if (!useCache) {
        row = decoder.nextLogits(window());
      } else if (cache!.length < context) {
        row = decoder.nextLogitsCached([next], cache!);
      } else {
        // The window slides: rebuild the cache from the last `context` ids (positions restart at 0).
        cache = decoder.createCache();
        row = decoder.nextLogitsCached(window(), cache);
      }
      logits = new Float64Array(row);
    }
    return out;
  };
  if (cachedModel) return decode();
  return inEvalWithoutGrad(model, decode);
}

export type GenerateBatchOptions = Omit<GenerateOptions, 'onStep'>;

/**
 * {@link generate} for several prompts of one length at once, as one batch [N, ·] per step (a
 * TransformerLM's KV cache holds every row; other next-word modules recompute `forward` on the
 * window). Row r draws with its own generator seeded `seed + r`, so it is what
 * `generate(model, prompts[r], {...options, seed: seed + r})` gives (up to float rounding between a
 * batched and a single-row forward). Returns the generated ids per row.
 */
export function generateBatch(model: NextWordLanguageModel, prompts: readonly (readonly number[])[], options: GenerateBatchOptions): number[][] {
  checkSampleOptions(options, 'generateBatch');
  const sampling: SampleOptions = { temperature: options.temperature, topK: options.topK, exclude: options.exclude };
  const { tokens } = options;
  if (!Number.isInteger(tokens) || tokens < 1) throw new RangeError(`generateBatch: tokens must be a positive integer, got ${String(tokens)}`);
  if (prompts.length < 1) throw new RangeError('generateBatch: no prompts');
  const length = prompts[0]!.length;
  if (length < 1) throw new RangeError('generateBatch: the prompts are empty (give at least one id each)');
  for (const [r, prompt] of prompts.entries()) {
    if (prompt.length !== length) throw new RangeError(`generateBatch: prompt ${r} has ${prompt.length} ids, prompt 0 has ${length} (the prompts must have one length)`);
    for (const [i, id] of prompt.entries()) {
      if (!Number.isInteger(id) || id < 0 || id >= model.vocabSize) throw new RangeError(`generateBatch: prompt ${r} id ${String(id)} at index ${i} is outside [0, ${model.vocabSize}) (the vocabulary)`);
    }
  }
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0) throw new RangeError(`generateBatch: seed must be a non-negative integer, got ${String(seed)}`);
  const transformer = model instanceof TransformerLM ? model : null;
  const limit = transformer ? transformer.maxContext : Infinity;
  const context = options.context ?? limit;
  if (context !== Infinity && (!Number.isInteger(context) || context < 1)) throw new RangeError(`generateBatch: context must be a positive integer, got ${String(context)}`);
  if (context > limit) throw new RangeError(`generateBatch: context ${context} is longer than the model's maxContext ${limit}`);
  const useCache = transformer !== null && (options.cache ?? true);
  const rows = prompts.length;
  const rngs = prompts.map((_, r) => new Rng(seed + r));
  const sequences = prompts.map((p) => [...p]);
  const windowIds = (from: number): Tensor => {
    const width = sequences[0]!.length - from;
    const ids = new Int32Array(rows * width);
    sequences.forEach((sequence, r) => ids.set(sequence.slice(from), r * width));
    return new Tensor(ids, [rows, width]);
  };
  const window = (): Tensor => windowIds(Math.max(0, sequences[0]!.length - context));
  /** Logits [N, S, V] or [N, V] → the last position's row of each batch row (views, not copies). */
  const lastRows = (logits: Tensor): ArrayLike<number>[] => {
    const v = logits.shape.at(-1)!;
    const last = logits.rank === 3 && logits.shape[1] !== 1 ? reshape(narrow(logits, 1, logits.shape[1]! - 1, 1), [rows, v]) : logits;
    return Array.from({ length: rows }, (_, r) => last.data.subarray(r * v, (r + 1) * v));
  };
  const decode = (): number[][] => {
    const out: number[][] = prompts.map(() => []);
    let cache = useCache ? transformer!.createCache() : null;
    let logits = lastRows(useCache ? transformer!.forwardCached(window(), cache!) : model.forward(window()));
    for (let step = 0; step < tokens; step++) {
      const next = logits.map((row, r) => sampleNext(row, sampling, rngs[r]!));
      next.forEach((id, r) => {
        out[r]!.push(id);
        sequences[r]!.push(id);
      });
      if (step === tokens - 1) break;
      if (!useCache) {
        logits = lastRows(model.forward(window()));
      } else if (cache!.length < context) {
        logits = lastRows(transformer!.forwardCached(windowIds(sequences[0]!.length - 1), cache!));
      } else {
        cache = transformer!.createCache();
        logits = lastRows(transformer!.forwardCached(window(), cache));
      }
    }
    return out;
  };
  return inEvalWithoutGrad(model, decode);
}

/** `fn()` with `model` in eval mode and no graph recorded; the training flag is put back afterwards. */
function inEvalWithoutGrad<T>(model: Module, fn: () => T): T {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(fn);
  } finally {
    model.train(wasTraining);
  }
}
