/**
 * `lowbit export RUN` for a transformer-lm run: the run's TransformerLM as ONNX through
 * onnx.saveTransformerOnnx (float32, or weight + activation QDQ for QAT runs; the context fixed to
 * the run's --seq-len), and with --verify the file run in onnxruntime-node on the corpus' test
 * windows: perplexity of both, argmax agreement and the largest logit difference against lowbit.
 */
import { basename } from 'node:path';
import { noGrad } from '../autograd/engine.ts';
import type { TransformerLM } from '../nn/models/transformer-lm.ts';
import { openRnnOnnx, saveTransformerOnnx, TRANSFORMER_ONNX_OPSET } from '../onnx/index.ts';
import { formatPercent, PerplexityMeter } from '../train/index.ts';
import { UsageError } from './args.ts';
import type { CommandIO } from './command.ts';
import type { LmExportOptions } from './commands/export-lm.ts';
import { describeLmRun, lmTestBatches, type LmCheckpoint } from './lm-run.ts';

/** Windows per onnxruntime / lowbit forward during --verify. */
const VERIFY_BATCH = 256;

export async function exportTransformerLanguageModel(run: LmCheckpoint, model: TransformerLM, out: string, options: LmExportOptions, io: CommandIO): Promise<number> {
  const { settings } = run;
  const refuse = (message: string): never => {
    throw new UsageError(`${message} ('${run.checkpoint}' is a transformer-lm run)`, 'export');
  };
  if (options.profile !== 'default') refuse('--profile web is for image models');
  if (options.weightBits === '4') refuse('--weight-bits 4: language-model weights are stored in int8 containers (4-bit values included)');
  if (options.bias !== undefined) refuse('--bias applies to integer image models');
  if (options.arch !== undefined) refuse('--arch applies to image checkpoints; the architecture comes from the run');
  if (options.opset !== undefined && options.opset !== TRANSFORMER_ONNX_OPSET) refuse(`--opset ${options.opset}: a transformer-lm is written at opset ${TRANSFORMER_ONNX_OPSET} (LayerNormalization)`);
  if (options.activations === 'exact') refuse('--activations exact is implemented for LSTM/GRU runs only; a transformer-lm writes QuantizeLinear/DequantizeLinear');
  if (options.dataset !== undefined && options.dataset !== settings.dataset) refuse(`--dataset ${options.dataset}: the run was trained on ${settings.dataset}`);
  const result = saveTransformerOnnx(out, model, {
    sequenceLength: settings.seqLen,
    metadata: {
      'lowbit.source': basename(run.checkpoint), 'lowbit.dataset': settings.dataset, 'lowbit.model': settings.model, 'lowbit.quant': settings.quant,
      'lowbit.context': String(settings.seqLen), 'lowbit.vocabulary': JSON.stringify(run.corpus.vocab.words),
    },
  });
  const what = result.kind === 'qdq'
    ? `QDQ: ${result.quantizedWeights} int8 weight tensors + DequantizeLinear, ${result.quantizedActivations} activation QuantizeLinear/DequantizeLinear pairs`
    : 'float32';
  io.print(`wrote ${out} (${result.bytes.length.toLocaleString('en-US')} bytes, ${what}, opset ${result.opset})`);
  io.print(`  input '${result.inputName}' int32 word ids [N, ${result.sequenceLength}] -> '${result.outputName}' [N, ${settings.vocabSize}] next-word logits; vocabulary in the metadata (lowbit.vocabulary)`);
  if (!options.verify) return 0;

  const runner = await openRnnOnnx(result.bytes, { matMulNBitsAccuracyLevel: 0 });
  if ('skipped' in runner) {
    io.print(`verify: skipped (${runner.skipped})`);
    return 0;
  }
  const mine = new PerplexityMeter();
  const theirs = new PerplexityMeter();
  let agree = 0;
  let maxDiff = 0;
  let maxRef = 0;
  try {
    const { windows, batches } = lmTestBatches(run, VERIFY_BATCH, options.samples);
    for (const { x, y } of batches) {
      const ref = noGrad(() => model.forward(x)).data;
      const got = (await runner.run({ [result.inputName]: x }))[result.outputName]!.data;
      const a = mine.add(ref, y.data, settings.vocabSize);
      const b = theirs.add(got, y.data, settings.vocabSize);
      for (let i = 0; i < a.length; i++) if (a[i] === b[i]) agree++;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(got[i]! - ref[i]!);
        maxDiff = Number.isNaN(d) ? Infinity : Math.max(maxDiff, d);
        maxRef = Math.max(maxRef, Math.abs(ref[i]!));
      }
    }
    const l = mine.result();
    const o = theirs.result();
    io.print(`verify: onnxruntime-node ${runner.version} vs lowbit (${describeLmRun(settings)}), ${windows} ${settings.dataset} test windows`);
    io.print(`  perplexity       onnxruntime ${o.perplexity.toFixed(4)}, lowbit ${l.perplexity.toFixed(4)} (ratio ${(o.perplexity / l.perplexity).toFixed(6)})`);
    io.print(`  argmax           ${formatPercent(agree / windows)} same next word (${agree}/${windows})`);
    io.print(`  logits           max |diff| ${maxDiff.toExponential(3)} (${(maxDiff / Math.max(maxRef, Number.MIN_VALUE)).toExponential(3)} of the largest |logit|)`);
  } finally {
    await runner.release();
  }
  return 0;
}
