/**
 * What `lowbit export RUN` does alike for every language-model run written to ONNX (LSTM/GRU
 * chains through onnx.saveRnnOnnx, TransformerLM through onnx.saveTransformerOnnx): the file's
 * metadata, and --verify: the file run in onnxruntime-node on the corpus' test windows against
 * the run's own forward (perplexity of both, argmax agreement, largest logit difference).
 */
import { basename } from 'node:path';
import { noGrad } from '../autograd/engine.ts';
import { openRnnOnnx } from '../onnx/index.ts';
import { formatPercent, PerplexityMeter } from '../train/index.ts';
import type { CommandIO } from './command.ts';
import { formatAssignment } from '../quant/search/plan.ts';
import { describeLmRun, lmTestBatches, type LmCheckpoint } from './lm-run.ts';

/** Windows per onnxruntime / lowbit forward during --verify. */
const VERIFY_BATCH = 256;

/** The metadata_props of an exported language model: source, dataset, model, quant, context and vocabulary. */
export function lmOnnxMetadata(run: LmCheckpoint): Record<string, string> {
  const { settings } = run;
  return {
    'lowbit.source': basename(run.checkpoint), 'lowbit.dataset': settings.dataset, 'lowbit.model': settings.model, 'lowbit.quant': run.assignment ? `plan ${formatAssignment(run.assignment)}` : settings.quant,
    'lowbit.context': String(settings.seqLen), 'lowbit.vocabulary': JSON.stringify(run.corpus.vocab.words),
  };
}

/**
 * Runs the exported `bytes` in onnxruntime-node on the first `samples` test windows of the run's
 * corpus and prints how it compares with `run.model`; prints a skip line when onnxruntime-node
 * cannot be loaded.
 */
export async function verifyLmOnnx(run: LmCheckpoint, bytes: Uint8Array, inputName: string, outputName: string, samples: number, io: CommandIO): Promise<void> {
  const { settings } = run;
  // onnxruntime would otherwise feed the fused int8 MatMulNBits with int8-quantized inputs (docs/onnx-rnn.md).
  const runner = await openRnnOnnx(bytes, { matMulNBitsAccuracyLevel: 0 });
  if ('skipped' in runner) {
    io.print(`verify: skipped (${runner.skipped})`);
    return;
  }
  const mine = new PerplexityMeter();
  const theirs = new PerplexityMeter();
  let agree = 0;
  let maxDiff = 0;
  let maxRef = 0;
  try {
    const { windows, batches } = lmTestBatches(run, VERIFY_BATCH, samples);
    const vocab = settings.vocabSize;
    for (const { x, y } of batches) {
      const ref = noGrad(() => run.model.forward(x)).data;
      const got = (await runner.run({ [inputName]: x }))[outputName]!.data;
      const a = mine.add(ref, y.data, vocab);
      const b = theirs.add(got, y.data, vocab);
      for (let i = 0; i < a.length; i++) if (a[i] === b[i]) agree++;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(got[i]! - ref[i]!);
        maxDiff = Number.isNaN(d) ? Infinity : Math.max(maxDiff, d);
        maxRef = Math.max(maxRef, Math.abs(ref[i]!));
      }
    }
    const l = mine.result();
    const o = theirs.result();
    io.print(`verify: onnxruntime-node ${runner.version} vs lowbit (${describeLmRun(settings, run.assignment)}), ${windows} ${settings.dataset} test windows`);
    io.print(`  perplexity       onnxruntime ${o.perplexity.toFixed(4)}, lowbit ${l.perplexity.toFixed(4)} (ratio ${(o.perplexity / l.perplexity).toFixed(6)})`);
    io.print(`  argmax           ${formatPercent(agree / windows)} same next word (${agree}/${windows})`);
    io.print(`  logits           max |diff| ${maxDiff.toExponential(3)} (${(maxDiff / Math.max(maxRef, Number.MIN_VALUE)).toExponential(3)} of the largest |logit|)`);
  } finally {
    await runner.release();
  }
}
