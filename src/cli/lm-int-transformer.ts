/**
 * The integer-only transformer-lm of the CLI: `lowbit export RUN --format irnn` for a QAT
 * transformer-lm run (quant.irnn.convertTransformerLM; the residual stream's scale calibrated on
 * the first IRNN_CALIBRATION_WINDOWS train windows) and `lowbit eval FILE.irnn` for the file it
 * writes. The file is quant.irnn's IntTransformerLM file plus
 *   metadata.lm = { format: 'lowbit-irnn-transformer-lm', version: 1, context, vocabulary: string[V],
 *                   source?, quant?, dataset?, corpusVocab? }.
 */
import { basename } from 'node:path';
import { noGrad } from '../autograd/engine.ts';
import { contextIdBatches, DataLoader, take } from '../data/index.ts';
import { readLowbit } from '../format/lowbit.ts';
import type { TransformerLM } from '../nn/models/transformer-lm.ts';
import { convertTransformerLM, type IntTransformerLM } from '../quant/irnn/transformer.ts';
import { intTransformerFromLowbit, isIntTransformerFile, saveIntTransformer } from '../quant/irnn/transformer-io.ts';
import { IrnnFormatError } from '../quant/irnn/io.ts';
import { UsageError } from './args.ts';
import type { CommandIO } from './command.ts';
import type { LmEvalOptions } from './commands/eval-lm.ts';
import type { LmExportOptions } from './commands/export-lm.ts';
import type { IntLmMeta } from './lm-irnn.ts';
import { lmTestBatches, type LmCheckpoint } from './lm-run.ts';
import { intLmTestSplit, printIntLmScore, verifyIntLm } from './lm-int-eval.ts';

const LM_FORMAT = 'lowbit-irnn-transformer-lm';
const LM_VERSION = 1;
const MAX_VOCAB = 1 << 20;
/** Train windows the residual stream's range is calibrated on (the first ones, in order). */
export const INT_TRANSFORMER_CALIBRATION_WINDOWS = 4096;
const BATCH = 256;

/** An integer-only transformer-lm and what the file says about its run. */
export interface IntTransformerLmFile {
  readonly model: IntTransformerLM;
  readonly meta: IntLmMeta;
}

function bad(message: string): never {
  throw new IrnnFormatError('bad-field', `language model: ${message}`);
}

/** Reads an integer transformer-lm file (container, model and metadata.lm validated). */
export function loadIntTransformerLm(file: string | Uint8Array): IntTransformerLmFile {
  const decoded = readLowbit(file);
  const model = intTransformerFromLowbit(decoded);
  const lm = (decoded.metadata as Record<string, unknown> | undefined)?.['lm'];
  if (typeof lm !== 'object' || lm === null || Array.isArray(lm)) bad(`metadata.lm is ${JSON.stringify(lm)}, expected { format: '${LM_FORMAT}', version: ${LM_VERSION}, ... }`);
  const meta = lm as Record<string, unknown>;
  if (meta['format'] !== LM_FORMAT || meta['version'] !== LM_VERSION) bad(`metadata.lm format/version is ${JSON.stringify(meta['format'])}/${JSON.stringify(meta['version'])}, expected '${LM_FORMAT}'/${LM_VERSION}`);
  const context = meta['context'];
  if (typeof context !== 'number' || !Number.isInteger(context) || context < 1 || context > model.maxContext) bad(`context ${JSON.stringify(context)} is not an integer in [1, ${model.maxContext}] (the model's maxContext)`);
  const vocabulary = meta['vocabulary'];
  if (!Array.isArray(vocabulary) || vocabulary.length !== model.vocabSize || vocabulary.some((w) => typeof w !== 'string')) bad(`vocabulary must be a list of ${model.vocabSize} strings (the model's vocabulary size)`);
  for (const key of ['source', 'quant', 'dataset'] as const) if (meta[key] !== undefined && typeof meta[key] !== 'string') bad(`${key} must be a string`);
  const corpusVocab = meta['corpusVocab'];
  if (corpusVocab !== undefined && (typeof corpusVocab !== 'number' || !Number.isInteger(corpusVocab) || corpusVocab < 2 || corpusVocab > MAX_VOCAB)) bad(`corpusVocab ${JSON.stringify(corpusVocab)} is not an integer in [2, ${MAX_VOCAB}]`);
  const text = (key: 'source' | 'quant' | 'dataset'): Record<string, string> => (typeof meta[key] === 'string' ? { [key]: meta[key] } : {});
  return {
    model,
    meta: {
      context: context as number, vocabulary: vocabulary as string[], ...text('source'), ...text('quant'), ...text('dataset'),
      ...(typeof corpusVocab === 'number' ? { corpusVocab } : {}),
    },
  };
}

/**
 * `lowbit export RUN --format irnn` for a transformer-lm run: converted to IntTransformerLM and
 * written as an .irnn file; with --verify the integer model against the run's fake-quant forward on
 * the first --samples test windows (perplexity, argmax agreement, largest logit difference).
 */
export function exportTransformerIrnn(run: LmCheckpoint, transformer: TransformerLM, out: string, options: LmExportOptions, io: CommandIO): number {
  const { settings } = run;
  const refuse = (message: string): never => {
    throw new UsageError(`--format irnn: ${message} ('${run.checkpoint}' is a ${settings.model} ${settings.quant} run)`, 'export');
  };
  if (settings.quant !== 'w8a8' && settings.quant !== 'w4a8') refuse('the integer transformer runtime converts QAT runs with 8-bit activations (--quant w8a8 or w4a8); float, w4 and w4a4 runs have no int8 activation steps to run on');
  if (options.profile !== 'default') refuse('--profile applies to ONNX');
  if (options.weightBits !== undefined) refuse('--weight-bits applies to ONNX; the integer model keeps the run\'s weight bits');
  if (options.bias !== undefined || options.arch !== undefined || options.opset !== undefined || options.activations !== undefined) refuse('--bias, --arch, --opset and --activations apply to ONNX');
  if (options.dataset !== undefined && options.dataset !== settings.dataset) refuse(`--dataset ${options.dataset}: the run was trained on ${settings.dataset}`);
  const calibration = [...contextIdBatches(new DataLoader(take(run.corpus.train, INT_TRANSFORMER_CALIBRATION_WINDOWS), { batchSize: BATCH }))].map((b) => b.x);
  const model = convertTransformerLM(transformer, calibration);
  const lm = {
    format: LM_FORMAT, version: LM_VERSION, context: settings.seqLen, vocabulary: [...run.corpus.vocab.words],
    source: basename(run.checkpoint), quant: settings.quant, dataset: settings.dataset, corpusVocab: settings.vocab,
  };
  const bytes = saveIntTransformer(out, model, { lm });
  const p = model.params;
  io.print(`wrote ${out} (${bytes.toLocaleString('en-US')} bytes; integer-only transformer: ${p.blocks[0]?.qkv.weightBits ?? 8}-bit weights, int8 activations, int32 residual stream, integer LayerNorm, i-exp softmax, ${p.blocks[0]?.activation === 'relu' ? 'ReLU' : 'i-GELU'})`);
  io.print(`  residual scale calibrated on the first ${Math.min(INT_TRANSFORMER_CALIBRATION_WINDOWS, run.corpus.train.length)} train windows; evaluate it with lowbit eval ${out}`);
  if (!options.verify) return 0;
  verifyIntLm(settings, lmTestBatches(run, BATCH, options.samples), (x) => noGrad(() => transformer.forward(x)).data, (x, n) => model.logits(x.data, n), io, true);
  return 0;
}

/** `lowbit eval FILE.irnn` for an integer transformer-lm file: test perplexity on its corpus and throughput. */
export function evalIntTransformerLm(path: string, file: IntTransformerLmFile, options: LmEvalOptions, io: CommandIO): void {
  const { model, meta } = file;
  const split = intLmTestSplit(path, meta, model.vocabSize, options);
  const p = model.params;
  io.print(`integer-only transformer language model (${meta.quant ?? '?'} run${meta.source ? ` ${meta.source}` : ''}; ${p.blocks.length} blocks, ${p.numHeads} heads, width ${p.embedDim}, MLP ${p.mlpDim}, vocabulary ${p.vocabSize}): ${path}`);
  printIntLmScore(io, model, split, options.batchSize, { contextTokens: true, bytesWhat: 'weights, tables, biases, multipliers' });
}

/** The integer transformer-lm in `path` when the file is one (validated), null for any other .lowbit content. */
export function intTransformerLmOrNull(path: string): IntTransformerLmFile | null {
  const decoded = readLowbit(path);
  return isIntTransformerFile(decoded) ? loadIntTransformerLm(path) : null;
}
