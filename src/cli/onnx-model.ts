/**
 * A float32 ONNX image classifier as a model of the CLI (`lowbit info|eval FILE.onnx`,
 * `lowbit quantize --model FILE.onnx`): the file imported by `onnx.importOnnx` (a lowbit Module),
 * checked against the image dataset it will run on before any work, and the input scaling it
 * expects.
 *
 * The file is untrusted: every failure of reading, decoding or importing it, and every mismatch
 * with the dataset (the graph's input shape, its number of classes), is one Error naming the file
 * (exit 1); nothing runs before the checks pass.
 */
import { extname } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { noGrad } from '../autograd/engine.ts';
import type { Module, TensorModule } from '../nn/module.ts';
import { zeros } from '../tensor/index.ts';
import { DATASET_NAMES, DATASET_STATS, isDatasetName, type DatasetName } from '../data/index.ts';
import { parseNormalizeStats, type NormalizeStats } from '../data/dataset.ts';
import { importOnnx, type OnnxModule } from '../onnx/import.ts';
import { OnnxError, readOnnx, type OnnxModel } from '../onnx/proto.ts';
import { UsageError } from './args.ts';

/** True when `path` names an ONNX file (by its extension). */
export function isOnnxPath(path: string): boolean {
  return extname(path).toLowerCase() === '.onnx';
}

/** How image pixels (in [0, 1] as the datasets load them) are scaled before the ONNX graph. */
export const ONNX_NORMALIZE_CHOICES = ['auto', 'none', 'dataset'] as const;
export type OnnxNormalizeChoice = (typeof ONNX_NORMALIZE_CHOICES)[number];

/** The --normalize help text shared by the commands that read ONNX files. */
export const ONNX_NORMALIZE_HELP =
  'ONNX models: input scaling: none = pixels in [0, 1] (torchvision ToTensor), dataset = (x - mean) / std of the dataset as lowbit train normalises, auto = what the file\'s lowbit.normalize metadata says (files lowbit export wrote), else none';

export interface OnnxImageModel {
  readonly file: string;
  /** The imported graph, in eval mode. */
  readonly module: OnnxModule;
  readonly opset: number;
  /** `producer version` of the file ('unknown' when empty). */
  readonly producer: string;
  /** The graph's input and output names. */
  readonly inputName: string;
  readonly outputName: string;
  /** One sample's input shape (the graph input without its batch dim). */
  readonly sampleShape: readonly number[];
  /** Outputs per sample: the number of classes. */
  readonly classes: number;
  /** lowbit.dataset / lowbit.normalize of files lowbit export wrote, else null. */
  readonly metadataDataset: DatasetName | null;
  readonly metadataNormalize: NormalizeStats | null;
  /** Trainable parameters (all float initializers the graph uses). */
  readonly parameters: number;
  /** Node count per ONNX op type, in first-seen order. */
  readonly opCounts: Readonly<Record<string, number>>;
}

function fail(file: string, message: string): Error {
  return new Error(`${file}: ${message}`);
}

/** lowbit.normalize (`{"mean": …, "std": …}`) checked; null when absent or malformed (then ignored). */
function normalizeOf(model: OnnxModel): NormalizeStats | null {
  const text = model.metadataProps?.find((p) => p.key === 'lowbit.normalize')?.value;
  if (text === undefined) return null;
  try {
    return parseNormalizeStats(JSON.parse(text));
  } catch {
    return null;
  }
}

function countOps(model: OnnxModel): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const node of model.graph?.node ?? []) {
    const op = node.opType ?? '?';
    counts[op] = (counts[op] ?? 0) + 1;
  }
  return counts;
}

/**
 * Reads, decodes and imports the ONNX file at `file` (`label` names the argument in errors), and
 * checks what the CLI's image commands need: one float input [batch, ...sample dims] with fixed
 * sample dims, one output of one row of class scores per sample (found by running one zero sample).
 * @throws Error naming the file (missing, too large, malformed, an unsupported op, an input of
 *   another kind...).
 */
export function loadOnnxImageModel(file: string, label: string): OnnxImageModel {
  if (!existsSync(file)) throw new Error(`${label}: '${file}' does not exist`);
  if (!statSync(file).isFile()) throw new Error(`${label}: '${file}' is not a regular file`);
  let model: OnnxModel;
  let module: OnnxModule;
  try {
    model = readOnnx(file);
    module = importOnnx(model);
  } catch (e) {
    if (e instanceof OnnxError) {
      // A QDQ file (what lowbit export writes for integer models) is already quantized.
      const hint = e.code === 'unsupported-op' && /QuantizeLinear|DequantizeLinear/.test(e.message) ? '; lowbit imports float32 graphs, and a QDQ file is already quantized (run its .lowbit model instead)' : '';
      throw fail(file, `cannot import the ONNX model: ${e.message} [${e.code}]${hint}`);
    }
    throw e;
  }
  if (module.inputs.length !== 1 || module.outputNames.length !== 1) {
    throw fail(file, `the CLI runs graphs with one input and one output; this one has ${module.inputs.length} input(s) (${module.inputs.map((i) => i.name).join(', ')}) and ${module.outputNames.length} output(s)`);
  }
  const input = module.inputs[0]!;
  if (input.integer) throw fail(file, `input '${input.name}' is an integer tensor; the image commands feed float32 pixels`);
  const dims = input.dims;
  if (!dims || dims.length < 2) throw fail(file, `input '${input.name}' has ${dims ? `rank ${dims.length}` : 'no declared shape'}; expected [batch, ...one sample's dims] (e.g. [N, 1, 28, 28])`);
  const sampleShape = dims.slice(1);
  if (sampleShape.some((d) => d === null || d < 1)) {
    throw fail(file, `input '${input.name}' has shape [${dims.map((d) => d ?? '?').join(', ')}]: the dims after the batch dim must be fixed sizes`);
  }
  const sample = sampleShape as number[];
  if (sample.reduce((p, d) => p * d, 1) > 1 << 24) throw fail(file, `input '${input.name}' of [${sample.join(', ')}] per sample is larger than any image dataset`);
  let outShape: readonly number[];
  try {
    outShape = noGrad(() => module.forward(zeros([1, ...sample]))).shape;
  } catch (e) {
    throw fail(file, `the graph does not run on one zero sample of [${sample.join(', ')}]: ${(e as Error).message}`);
  }
  if (outShape.length !== 2 || outShape[0] !== 1) throw fail(file, `output '${module.outputNames[0]}' is [${outShape.join(', ')}] for one sample; the image commands need one row of class scores per sample ([N, classes])`);
  const dataset = model.metadataProps?.find((p) => p.key === 'lowbit.dataset')?.value;
  const producer = `${model.producerName ?? ''} ${model.producerVersion ?? ''}`.trim();
  return {
    file,
    module,
    opset: module.opset,
    producer: producer === '' ? 'unknown' : producer,
    inputName: input.name,
    outputName: module.outputNames[0]!,
    sampleShape: sample,
    classes: outShape[1]!,
    metadataDataset: dataset !== undefined && isDatasetName(dataset) ? dataset : null,
    metadataNormalize: normalizeOf(model),
    parameters: module.parameters().reduce((n, p) => n + p.size, 0),
    opCounts: countOps(model),
  };
}

/**
 * The dataset an ONNX model runs on: --dataset, else the file's lowbit.dataset, else mnist; its
 * samples must have the graph's input shape and its classes the graph's output count.
 */
export function onnxDataset(model: OnnxImageModel, given: string | undefined, data: { sampleShape: readonly number[]; numClasses: number } | ((name: DatasetName) => { sampleShape: readonly number[]; numClasses: number }), command: string): DatasetName {
  const name = given ?? model.metadataDataset ?? 'mnist';
  if (!isDatasetName(name)) throw new UsageError(`--dataset: '${name}' is not an image dataset (known: ${DATASET_NAMES.join(', ')})`, command);
  const d = typeof data === 'function' ? data(name) : data;
  const same = d.sampleShape.length === model.sampleShape.length && d.sampleShape.every((s, i) => s === model.sampleShape[i]);
  if (!same) {
    throw new Error(`${model.file}: input '${model.inputName}' takes samples of [${model.sampleShape.join(', ')}], ${name} has [${d.sampleShape.join(', ')}]` +
      (model.sampleShape.reduce((p, v) => p * v, 1) === d.sampleShape.reduce((p, v) => p * v, 1) ? ' (the same values in another shape: export the model with an image-shaped input and flatten inside it)' : ''));
  }
  if (d.numClasses !== model.classes) throw new Error(`${model.file}: output '${model.outputName}' has ${model.classes} scores per sample, ${name} has ${d.numClasses} classes`);
  return name;
}

/** The input scaling of --normalize (see ONNX_NORMALIZE_HELP), with a label for the printout. */
export function onnxNormalize(model: OnnxImageModel, choice: OnnxNormalizeChoice, dataset: DatasetName): { stats: NormalizeStats | undefined; label: string } {
  const list = (v: number | readonly number[]): readonly number[] => (typeof v === 'number' ? [v] : v);
  const fmt = (s: NormalizeStats): string => `(x - ${list(s.mean).join(',')}) / ${list(s.std).join(',')}`;
  if (choice === 'dataset') return { stats: DATASET_STATS[dataset], label: `${fmt(DATASET_STATS[dataset])} (${dataset})` };
  if (choice === 'auto' && model.metadataNormalize) {
    const channels = list(model.metadataNormalize.mean).length;
    if (channels !== 1 && channels !== model.sampleShape[0]) {
      throw new Error(`${model.file}: lowbit.normalize has ${channels} channel(s), the input ${model.sampleShape[0]}; pass --normalize none|dataset`);
    }
    return { stats: model.metadataNormalize, label: `${fmt(model.metadataNormalize)} (the file's lowbit.normalize)` };
  }
  return { stats: undefined, label: 'none: pixels in [0, 1]' };
}

/** The imported module as the CLI's models (`TensorModule`), for evaluate / calibrate / convert. */
export function onnxTensorModule(model: OnnxImageModel): TensorModule & Module {
  return model.module as unknown as TensorModule & Module;
}

/**
 * Fresh copies of the imported graph for commands that build several models (fp32 evaluation,
 * calibration, QAT): the already checked import first, then a new import of the same file per call.
 */
export function onnxBuilder(model: OnnxImageModel, label: string): () => TensorModule & Module {
  let first: (TensorModule & Module) | null = onnxTensorModule(model);
  return () => {
    const m = first ?? onnxTensorModule(loadOnnxImageModel(model.file, label));
    first = null;
    return m;
  };
}
