/**
 * `lowbit eval RUN` for a language-model run (lowbit train --model lstm-lm|gru-lm): the test
 * perplexity of the checkpoint's model (the fake-quant model for QAT runs) on the corpus' held-out
 * test split, and its forward throughput.
 */
import { extname } from 'node:path';
import { isLmDatasetName } from '../../data/index.ts';
import { evaluatePerplexity, formatPercent, PerplexityMeter } from '../../train/index.ts';
import { loadIntNextWord } from '../lm-irnn.ts';
import { evalIntTransformerLm, intTransformerLmOrNull } from '../lm-int-transformer.ts';
import { IntGRU } from '../../quant/irnn/index.ts';
import { UsageError } from '../args.ts';
import type { CommandIO } from '../command.ts';
import { describeLmRun, lmCorpus, lmTestBatches, type LmCheckpoint } from '../lm-run.ts';

/** The eval options a language-model run reads. */
export interface LmEvalOptions {
  readonly dataset?: string;
  readonly limit?: number;
  readonly batchSize: number;
  readonly save?: string;
  readonly compare?: boolean;
}

export function evalLanguageModel(run: LmCheckpoint, options: LmEvalOptions, io: CommandIO): void {
  const { settings } = run;
  if (options.save !== undefined || options.compare) {
    throw new UsageError(`--save and --compare convert to an integer model (IntModel), which lowbit has for image models only; '${run.checkpoint}' is a ${settings.model} run (lowbit export it to ONNX instead)`, 'eval');
  }
  if (options.dataset !== undefined && options.dataset !== settings.dataset) {
    throw new UsageError(`--dataset ${options.dataset} does not fit '${run.checkpoint}', a ${settings.model} trained on ${settings.dataset} (leave --dataset out)`, 'eval');
  }
  const { windows, batches } = lmTestBatches(run, options.batchSize, options.limit);
  io.print(`${describeLmRun(settings)}: ${run.checkpoint}`);
  const r = evaluatePerplexity(run.model, batches);
  io.print(`${settings.dataset} test split: ${windows} windows of ${settings.seqLen} words (each predicts the next word)`);
  io.print(`test perplexity  ${r.perplexity.toFixed(2)} (cross-entropy ${r.crossEntropy.toFixed(4)} nats/word, next-word accuracy ${formatPercent(r.accuracy)})`);
  io.print(`throughput       ${(r.count / r.seconds).toFixed(0)} predicted words/s = ${((r.count * settings.seqLen) / r.seconds).toFixed(0)} context tokens/s (forward only, wall clock, batch ${Math.min(options.batchSize, windows)}, ${r.seconds.toFixed(2)} s)`);
}

/** True for a path `lowbit eval` reads as an integer language model (`lowbit export RUN --format irnn`). */
export function isIrnnPath(path: string): boolean {
  return extname(path).toLowerCase() === '.irnn';
}

/**
 * `lowbit eval FILE.irnn`: the integer-only language model's test perplexity on the corpus it was
 * trained on (rebuilt from the file's metadata, its vocabulary checked word by word) and its throughput.
 */
export function evalIntLanguageModel(path: string, options: LmEvalOptions, io: CommandIO): void {
  if (options.save !== undefined || options.compare) throw new UsageError(`--save and --compare apply to --checkpoint; '${path}' is already an integer language model`, 'eval');
  let model;
  let transformer;
  try {
    transformer = intTransformerLmOrNull(path);
    if (!transformer) model = loadIntNextWord(path);
  } catch (e) {
    throw new Error(`eval: '${path}' is not a valid integer language-model file: ${(e as Error).message}`);
  }
  if (transformer) return evalIntTransformerLm(path, transformer, options, io);
  if (!model) throw new Error(`eval: '${path}' holds no integer language model`);
  const { dataset, corpusVocab, context } = model.meta;
  if (dataset === undefined || !isLmDatasetName(dataset) || corpusVocab === undefined) throw new Error(`eval: '${path}' does not name its corpus (metadata.lm.dataset / corpusVocab), so its test split cannot be rebuilt`);
  if (options.dataset !== undefined && options.dataset !== dataset) throw new UsageError(`--dataset ${options.dataset} does not fit '${path}', trained on ${dataset} (leave --dataset out)`, 'eval');
  const corpus = lmCorpus({ dataset, seqLen: context, vocab: corpusVocab });
  const words = corpus.vocab.words;
  if (words.length !== model.vocabSize || words.some((w, i) => w !== model.meta.vocabulary[i])) {
    throw new Error(`eval: '${path}' was built on a vocabulary that ${dataset} with --vocab ${corpusVocab} no longer gives (another version of the corpus package?)`);
  }
  const { windows, batches } = lmTestBatches({ corpus }, options.batchSize, options.limit);
  const bits = model.rnn.params.weightBits ?? 8;
  const cell = model.rnn instanceof IntGRU ? 'GRU' : 'LSTM';
  io.print(`integer-only ${cell} language model (${model.meta.quant ?? '?'} run${model.meta.source ? ` ${model.meta.source}` : ''}; ${cell} ${bits}-bit weights, int8 x/h, PWL gates; int8 embedding and head), embedding ${model.rnn.inputSize}, hidden ${model.rnn.hiddenSize}, vocabulary ${model.vocabSize}: ${path}`);
  const meter = new PerplexityMeter();
  const start = performance.now();
  for (const { x, y } of batches) meter.add(model.logits(x.data, y.size), y.data, model.vocabSize);
  const seconds = (performance.now() - start) / 1000;
  const r = meter.result(seconds);
  io.print(`${dataset} test split: ${windows} windows of ${context} words (each predicts the next word)`);
  io.print(`test perplexity  ${r.perplexity.toFixed(2)} (cross-entropy ${r.crossEntropy.toFixed(4)} nats/word, next-word accuracy ${formatPercent(r.accuracy)})`);
  io.print(`throughput       ${(r.count / seconds).toFixed(0)} predicted words/s (integer runtime, wall clock incl. the float softmax scoring, batch ${Math.min(options.batchSize, windows)}, ${seconds.toFixed(2)} s)`);
  io.print(`model bytes      ${model.byteLength.toLocaleString('en-US')} (weights, scales, biases, tables)`);
}
