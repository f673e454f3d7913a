/**
 * `lowbit eval RUN` for a language-model run (lowbit train --model lstm-lm|gru-lm): the test
 * perplexity of the checkpoint's model (the fake-quant model for QAT runs) on the corpus' held-out
 * test split, and its forward throughput.
 */
import { evaluatePerplexity, formatPercent } from '../../train/index.ts';
import { UsageError } from '../args.ts';
import type { CommandIO } from '../command.ts';
import { describeLmRun, lmTestBatches, type LmCheckpoint } from '../lm-run.ts';

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
