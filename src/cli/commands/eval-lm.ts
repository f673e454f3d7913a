/**
 * `lowbit eval RUN` for a language-model run (lowbit train --model lstm-lm|gru-lm): the test
 * perplexity of the checkpoint's model (the fake-quant model for QAT runs) on the corpus' held-out
 * test split, and its forward throughput.
 */
import { extname } from 'node:path';
import { evaluatePerplexity, formatPercent } from '../../train/index.ts';
import { loadIntNextWord } from '../lm-irnn.ts';
import { evalIntTransformerLm, intTransformerLmOrNull } from '../lm-int-transformer.ts';
import { IntGRU } from '../../quant/irnn/index.ts';
import { UsageError } from '../args.ts';
import type { CommandIO } from '../command.ts';
import { describeLmRun, lmTestBatches, type LmCheckpoint } from '../lm-run.ts';
import { intLmTestSplit, printIntLmScore } from '../lm-int-eval.ts';

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
  io.print(`${describeLmRun(settings, run.assignment)}: ${run.checkpoint}`);
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
  const split = intLmTestSplit(path, model.meta, model.vocabSize, options);
  const bits = model.rnn.params.weightBits ?? 8;
  const cell = model.rnn instanceof IntGRU ? 'GRU' : 'LSTM';
  io.print(`integer-only ${cell} language model (${model.meta.quant ?? '?'} run${model.meta.source ? ` ${model.meta.source}` : ''}; ${cell} ${bits}-bit weights, int8 x/h, PWL gates; int8 embedding and head), embedding ${model.rnn.inputSize}, hidden ${model.rnn.hiddenSize}, vocabulary ${model.vocabSize}: ${path}`);
  printIntLmScore(io, model, split, options.batchSize, { contextTokens: false, bytesWhat: 'weights, scales, biases, tables' });
}
