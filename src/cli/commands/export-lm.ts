/**
 * `lowbit export RUN` for a language-model run: the checkpoint's chain (Embedding → LSTM/GRU → last
 * step → Linear) as ONNX through onnx.saveRnnOnnx — float32, or weight QDQ for QAT runs — and with
 * --verify the file run in onnxruntime-node on the corpus' test windows: perplexity of both, argmax
 * agreement and the largest logit difference against lowbit's own forward.
 */
import { basename } from 'node:path';
import { noGrad } from '../../autograd/engine.ts';
import { saveRnnOnnx } from '../../onnx/index.ts';
import { UsageError } from '../args.ts';
import type { CommandIO } from '../command.ts';
import { lmTestBatches, type LmCheckpoint } from '../lm-run.ts';
import { convertNextWordModel, saveIntNextWord } from '../lm-irnn.ts';
import { contextIdBatches, DataLoader, take } from '../../data/index.ts';
import { NextWordModel, TransformerLM } from '../../nn/index.ts';
import { exportTransformerLanguageModel } from '../lm-transformer-export.ts';
import { exportTransformerIrnn } from '../lm-int-transformer.ts';
import { verifyIntLm } from '../lm-int-eval.ts';
import { lmOnnxMetadata, verifyLmOnnx } from '../lm-onnx-verify.ts';

/** The export options a language-model run reads; the image-only ones must be left out. */
export interface LmExportOptions {
  readonly profile: string;
  readonly weightBits?: string;
  readonly bias?: string;
  readonly arch?: string;
  readonly opset?: number;
  readonly dataset?: string;
  readonly activations?: 'qdq' | 'exact';
  readonly verify?: boolean;
  readonly samples: number;
}

/** Windows per onnxruntime / lowbit forward during --verify. */
const VERIFY_BATCH = 256;

export async function exportLanguageModel(run: LmCheckpoint, out: string, options: LmExportOptions, io: CommandIO): Promise<number> {
  if (run.model instanceof TransformerLM) return exportTransformerLanguageModel(run, run.model, out, options, io);
  const { settings } = run;
  const refuse = (message: string): never => {
    throw new UsageError(`${message} ('${run.checkpoint}' is a ${settings.model} run)`, 'export');
  };
  if (options.profile !== 'default') refuse('--profile web is for image models; a language model is written at opset 13 with int8 weight containers by default');
  if (options.weightBits === '4') refuse('--weight-bits 4: language-model weights are stored in int8 containers (4-bit values included)');
  if (options.bias !== undefined) refuse('--bias applies to integer image models');
  if (options.arch !== undefined) refuse('--arch applies to image checkpoints; the architecture comes from the run');
  if (options.dataset !== undefined && options.dataset !== settings.dataset) refuse(`--dataset ${options.dataset}: the run was trained on ${settings.dataset}`);
  // A quantized h_{t-1} cannot live inside an ONNX LSTM node: that layer is unrolled over the run's context.
  const unrolled = settings.quant !== 'fp32' && settings.quant !== 'w4';
  const result = saveRnnOnnx(out, run.model, {
    lastStep: true,
    ...(unrolled ? { sequenceLength: settings.seqLen } : {}),
    activations: options.activations ?? 'qdq',
    ...(options.opset === undefined ? {} : { opset: options.opset }),
    metadata: lmOnnxMetadata(run),
  });
  const inputDims = result.inputs[0]!.dims.join(', ');
  io.print(`wrote ${out} (${result.bytes.length.toLocaleString('en-US')} bytes, ${result.kind === 'qdq' ? 'weight QDQ (int8 containers)' : 'float32'}, opset ${result.opset}; ${Object.entries(result.recurrent).map(([k, v]) => `${k}: ${v}`).join(', ')})`);
  io.print(`  input '${result.inputs[0]!.name}' int32 word ids [${inputDims}] -> '${result.outputs[0]!.name}' [${result.outputs[0]!.dims.join(', ')}] next-word logits; vocabulary in the metadata (lowbit.vocabulary)`);
  for (const note of result.notes) io.print(`  note: ${note}`);
  if (!options.verify) return 0;

  await verifyLmOnnx(run, result.bytes, result.inputs[0]!.name, result.outputs[0]!.name, options.samples, io);
  return 0;
}

/** Train windows the integer model's x and h ranges are calibrated on (the first ones, in order). */
export const IRNN_CALIBRATION_WINDOWS = 4096;

/**
 * `lowbit export RUN --format irnn`: the run's LSTM or GRU language model converted to the integer-only
 * iRNN runtime (src/cli/lm-irnn.ts; post-training, ranges calibrated on the first
 * IRNN_CALIBRATION_WINDOWS train windows) and written as an .irnn file; with --verify the integer
 * model's and the run's (fake-quant) perplexity on the first --samples test windows.
 */
export function exportLanguageModelIrnn(run: LmCheckpoint, out: string, options: LmExportOptions, io: CommandIO): number {
  const { settings } = run;
  const refuse = (message: string): never => {
    throw new UsageError(`--format irnn: ${message} ('${run.checkpoint}' is a ${settings.model} run)`, 'export');
  };
  if (run.model instanceof TransformerLM) return exportTransformerIrnn(run, run.model, out, options, io);
  const lstm = run.model;
  if ((settings.model !== 'lstm-lm' && settings.model !== 'gru-lm') || !(lstm instanceof NextWordModel)) return refuse(`the integer runtime (quant.irnn) has LSTM and GRU cores only; export a ${settings.model} run to ONNX`);
  if (options.profile !== 'default') refuse('--profile applies to ONNX');
  if (options.weightBits !== undefined) refuse('--weight-bits applies to ONNX; the LSTM keeps the run\'s weight bits (8 for fp32 runs), the head int8');
  if (options.bias !== undefined || options.arch !== undefined || options.opset !== undefined || options.activations !== undefined) refuse('--bias, --arch, --opset and --activations apply to ONNX');
  if (options.dataset !== undefined && options.dataset !== settings.dataset) refuse(`--dataset ${options.dataset}: the run was trained on ${settings.dataset}`);
  const calibration = [...contextIdBatches(new DataLoader(take(run.corpus.train, IRNN_CALIBRATION_WINDOWS), { batchSize: VERIFY_BATCH }))].map((b) => b.x);
  const model = convertNextWordModel(lstm, calibration, {
    context: settings.seqLen, vocabulary: run.corpus.vocab.words, source: basename(run.checkpoint), quant: settings.quant, dataset: settings.dataset, corpusVocab: settings.vocab,
  });
  const bytes = saveIntNextWord(out, model);
  const bits = model.rnn.params.weightBits ?? 8;
  io.print(`wrote ${out} (${bytes.toLocaleString('en-US')} bytes; integer-only ${lstm.cell.toUpperCase()} with ${bits}-bit weights, int8 x/h, PWL gates; int8 embedding and head)`);
  io.print(`  x and h ranges calibrated on the first ${Math.min(IRNN_CALIBRATION_WINDOWS, run.corpus.train.length)} train windows; evaluate it with lowbit eval ${out}`);
  if (!options.verify) return 0;
  verifyIntLm(settings, lmTestBatches(run, VERIFY_BATCH, options.samples), (x) => noGrad(() => run.model.forward(x)).data, (x, n) => model.logits(x.data, n), io);
  return 0;
}
