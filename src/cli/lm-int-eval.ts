/**
 * What `lowbit eval` does for every integer language-model file (./lm-irnn.ts's GRU/LSTM files and
 * ./lm-int-transformer.ts's transformers): rebuild the test split the file names, check the
 * vocabulary still matches, score the integer model on it and print the result.
 */
import { isLmDatasetName } from '../data/index.ts';
import { formatPercent, PerplexityMeter } from '../train/index.ts';
import { UsageError } from './args.ts';
import type { CommandIO } from './command.ts';
import type { IntLmMeta } from './lm-irnn.ts';
import { describeLmRun, lmCorpus, lmTestBatches, type LmRunSettings } from './lm-run.ts';

/** The test split an integer LM file was trained on, rebuilt from its metadata. */
export interface IntLmTestSplit {
  readonly dataset: string;
  readonly context: number;
  readonly windows: number;
  readonly batches: ReturnType<typeof lmTestBatches>['batches'];
}

/**
 * Rebuilds the test split `meta` names (batches of `batchSize`, at most `limit` windows). Throws
 * when the file does not name its corpus, `--dataset` names another one, or the corpus no longer
 * gives the file's vocabulary.
 */
export function intLmTestSplit(path: string, meta: IntLmMeta, vocabSize: number, options: { dataset?: string; batchSize: number; limit?: number }): IntLmTestSplit {
  const { dataset, corpusVocab, context } = meta;
  if (dataset === undefined || !isLmDatasetName(dataset) || corpusVocab === undefined) throw new Error(`eval: '${path}' does not name its corpus (metadata.lm.dataset / corpusVocab), so its test split cannot be rebuilt`);
  if (options.dataset !== undefined && options.dataset !== dataset) throw new UsageError(`--dataset ${options.dataset} does not fit '${path}', trained on ${dataset} (leave --dataset out)`, 'eval');
  const corpus = lmCorpus({ dataset, seqLen: context, vocab: corpusVocab });
  const words = corpus.vocab.words;
  if (words.length !== vocabSize || words.some((w, i) => w !== meta.vocabulary[i])) {
    throw new Error(`eval: '${path}' was built on a vocabulary that ${dataset} with --vocab ${corpusVocab} no longer gives (another version of the corpus package?)`);
  }
  const { windows, batches } = lmTestBatches({ corpus }, options.batchSize, options.limit);
  return { dataset, context, windows, batches };
}

/**
 * Scores `model` on `split` and prints the test perplexity, the throughput (with context tokens/s
 * when `contextTokens`) and the model's bytes (`bytesWhat` says what they count).
 */
export function printIntLmScore(
  io: CommandIO,
  model: { readonly vocabSize: number; readonly byteLength: number; logits(ids: ArrayLike<number>, batch: number): Float32Array },
  split: IntLmTestSplit,
  batchSize: number,
  report: { contextTokens: boolean; bytesWhat: string },
): void {
  const { dataset, context, windows, batches } = split;
  const meter = new PerplexityMeter();
  const start = performance.now();
  for (const { x, y } of batches) meter.add(model.logits(x.data, y.size), y.data, model.vocabSize);
  const seconds = (performance.now() - start) / 1000;
  const r = meter.result(seconds);
  const tokens = report.contextTokens ? ` = ${((r.count * context) / seconds).toFixed(0)} context tokens/s` : '';
  io.print(`${dataset} test split: ${windows} windows of ${context} words (each predicts the next word)`);
  io.print(`test perplexity  ${r.perplexity.toFixed(2)} (cross-entropy ${r.crossEntropy.toFixed(4)} nats/word, next-word accuracy ${formatPercent(r.accuracy)})`);
  io.print(`throughput       ${(r.count / seconds).toFixed(0)} predicted words/s${tokens} (integer runtime, wall clock incl. the float softmax scoring, batch ${Math.min(batchSize, windows)}, ${seconds.toFixed(2)} s)`);
  io.print(`model bytes      ${model.byteLength.toLocaleString('en-US')} (${report.bytesWhat})`);
}

/**
 * `lowbit export RUN --format irnn --verify`: scores the run's own forward (`reference`) and the
 * integer model (`integer`, logits of n windows) on the same test batches and prints both
 * perplexities, the share of windows with the same argmax and, with `maxLogitDiff`, the largest
 * |Δlogit|.
 */
export function verifyIntLm(
  settings: LmRunSettings,
  test: ReturnType<typeof lmTestBatches>,
  reference: (x: IntLmBatch['x']) => ArrayLike<number>,
  integer: (x: IntLmBatch['x'], n: number) => ArrayLike<number>,
  io: CommandIO,
  maxLogitDiff = false,
): void {
  const mine = new PerplexityMeter();
  const ints = new PerplexityMeter();
  let agree = 0;
  let maxDiff = 0;
  for (const { x, y } of test.batches) {
    const ref = reference(x);
    const got = integer(x, y.size);
    if (maxLogitDiff) for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - got[i]!));
    const a = mine.add(ref, y.data, settings.vocabSize);
    const b = ints.add(got, y.data, settings.vocabSize);
    for (let i = 0; i < a.length; i++) if (a[i] === b[i]) agree++;
  }
  const l = mine.result();
  const r = ints.result();
  const windows = test.windows;
  io.print(`verify: integer model vs lowbit (${describeLmRun(settings)}), ${windows} ${settings.dataset} test windows`);
  io.print(`  perplexity       integer ${r.perplexity.toFixed(4)}, lowbit ${l.perplexity.toFixed(4)} (ratio ${(r.perplexity / l.perplexity).toFixed(6)})`);
  io.print(`  argmax           ${formatPercent(agree / windows)} same next word (${agree}/${windows})`);
  if (maxLogitDiff) io.print(`  max |Δlogit|     ${maxDiff.toPrecision(3)}`);
}

type IntLmBatch = ReturnType<typeof lmTestBatches>['batches'] extends Iterable<infer B> ? B : never;
