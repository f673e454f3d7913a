/**
 * `lowbit export RUN` for a transformer-lm run: the run's TransformerLM as ONNX through
 * onnx.saveTransformerOnnx (float32, or weight + activation QDQ for QAT runs; the context fixed to
 * the run's --seq-len), and with --verify the file run in onnxruntime-node on the corpus' test
 * windows: perplexity of both, argmax agreement and the largest logit difference against lowbit.
 */
import type { TransformerLM } from '../nn/models/transformer-lm.ts';
import { saveTransformerOnnx, TRANSFORMER_ONNX_OPSET } from '../onnx/index.ts';
import { UsageError } from './args.ts';
import type { CommandIO } from './command.ts';
import type { LmExportOptions } from './commands/export-lm.ts';
import { lmOnnxMetadata, verifyLmOnnx } from './lm-onnx-verify.ts';
import type { LmCheckpoint } from './lm-run.ts';

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
    metadata: lmOnnxMetadata(run),
  });
  const what = result.kind === 'qdq'
    ? `QDQ: ${result.quantizedWeights} int8 weight tensors + DequantizeLinear, ${result.quantizedActivations} activation QuantizeLinear/DequantizeLinear pairs`
    : 'float32';
  io.print(`wrote ${out} (${result.bytes.length.toLocaleString('en-US')} bytes, ${what}, opset ${result.opset})`);
  io.print(`  input '${result.inputName}' int32 word ids [N, ${result.sequenceLength}] -> '${result.outputName}' [N, ${settings.vocabSize}] next-word logits; vocabulary in the metadata (lowbit.vocabulary)`);
  if (!options.verify) return 0;

  await verifyLmOnnx(run, result.bytes, result.inputName, result.outputName, options.samples, io);
  return 0;
}
