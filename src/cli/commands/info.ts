import { UsageError } from '../args.ts';
import { defineCommand, type CommandIO } from '../command.ts';
import { backendDetails, describeBackend, useBackend } from '../backend-info.ts';
import { packageVersion } from '../package-info.ts';
import { intModelOfFile, resolveModelInput } from '../inputs.ts';
import { LOWBIT_VERSION, LowbitFormatError, decodeLowbit, lowbitSizeReport, readLowbitBytes, type LowbitNode } from '../../format/lowbit.ts';
import type { IntNode, LayerSummary } from '../../runtime/intmodel.ts';
import { modelOfCheckpoint, quantLabelOfRunConfig } from '../checkpoint-model.ts';
import { readLmCheckpoint } from '../lm-run.ts';
import { summary } from '../../nn/summary.ts';
import { isOnnxPath, loadOnnxImageModel, onnxTensorModule } from '../onnx-model.ts';
import { loadCheckpoint } from '../../train/checkpoint.ts';

export const infoCommand = defineCommand({
  name: 'info',
  summary: 'print version, runtime and backend information, or describe a .lowbit model file',
  description:
    'Without --file: the lowbit and node versions, the platform and the compute backends.\n' +
    'With --file: validates a .lowbit file and prints its format version, graph nodes (op, name, bits),\n' +
    'tensors (logical dtype, shape, bytes) and its size against the same model in float32. An integer\n' +
    'model (what lowbit quantize and lowbit eval --save write) is checked as lowbit eval loads it.\n' +
    'A lowbit train run (its directory or checkpoint.safetensors) is rebuilt as trained and summarised\n' +
    'like Keras model.summary(): every layer with its output shape for one 28x28 image (one window of\n' +
    'token ids for a language-model run), its parameters,\n' +
    'the weight/input bits of fake-quant layers, and the model size in float32 and at those bits.\n' +
    'A float32 ONNX image classifier (FILE.onnx) is imported and summarised the same way, with its op types.\n' +
    'A malformed file is reported on one line with exit code 1.',
  examples: ['lowbit info', 'lowbit info --backend --json', 'lowbit info model.lowbit', 'lowbit info --file model.lowbit --json', 'lowbit info runs/lenet5-mnist-w4a4   # layer table of a training run'],
  options: {
    file: { type: 'string', placeholder: 'FILE', positional: true, help: 'describe this .lowbit model file, lowbit train run (directory or checkpoint) or .onnx model (also: lowbit info FILE)' },
    backend: { type: 'boolean', help: 'print only the backend details (backends, threads, CPU features)' },
    json: { type: 'boolean', help: 'print the same information as JSON' },
  },
  run(options, io) {
    if (options.file !== undefined) {
      if (options.backend) throw new UsageError('--backend prints the compute backends, not a model file: run lowbit info --backend on its own', 'info');
      describeLowbitFile(options.file, options.json, io);
      return;
    }
    useBackend(undefined);
    const backend = backendDetails();
    const info = {
      lowbit: packageVersion(),
      node: process.versions.node,
      platform: `${process.platform}-${process.arch}`,
      backends: backend,
    };
    if (options.json) {
      io.print(JSON.stringify(options.backend ? backend : info, null, 2));
      return;
    }
    const lines: [string, string][] = [];
    if (!options.backend) {
      lines.push(['lowbit', info.lowbit], ['node', info.node], ['platform', info.platform]);
    }
    lines.push(['backends', backend.available.join(', ')], ['active', describeBackend(backend)]);
    if (backend.nativeUnavailable) lines.push(['native', `not available: ${backend.nativeUnavailable}`]);
    lines.push(['wasm', 'ops' in backend.wasm ? `WebAssembly SIMD128 kernels for ${backend.wasm.ops.join(', ')} (the rest on reference)` : `not available: ${backend.wasm.unavailable}`]);
    if ('ops' in backend.wasm) lines.push(['wasm threads', wasmThreadsLine(backend.wasm)]);
    if (backend.cpuFeatures) lines.push(['cpu features', backend.cpuFeatures.join(' ') || '(none detected)']);
    if (backend.intKernels) {
      const k = backend.intKernels;
      lines.push(['integer kernels', `int8 ${k.int8}, binary ${k.binary}`], ['amx', k.amx]);
    }
    const width = Math.max(...lines.map(([k]) => k.length));
    for (const [k, v] of lines) io.print(`${k.padEnd(width)}  ${v}`);
  },
});

/** `2 (LOWBIT_THREADS, else min(cores, 4); workers start with the first large kernel)` or `1: <reason>`. */
function wasmThreadsLine(wasm: { threads: number; singleThreadReason?: string }): string {
  if (wasm.singleThreadReason) return `1 (${wasm.singleThreadReason})`;
  return `${wasm.threads} (LOWBIT_THREADS, else min(cores, 4); the workers start with the first large kernel)`;
}

/**
 * Prints a validated .lowbit file; format errors become one-line errors naming the file. A file
 * that declares an IntModel graph (metadata.intModel) is also built as one, which checks every
 * node (bits, geometry, tensor references and dtypes) the way eval and export do.
 */
function describeLowbitFile(file: string, json: boolean, io: CommandIO): void {
  if (isOnnxPath(file)) {
    describeOnnxFile(file, json, io);
    return;
  }
  const input = resolveModelInput(file, 'info', 'info', 'lowbit', 'a .lowbit file (or a folder holding model.lowbit)');
  if (input.kind === 'checkpoint') {
    describeTrainingRun(input.file, json, io);
    return;
  }
  const path = input.file;
  let bytes: Uint8Array;
  try {
    bytes = readLowbitBytes(path);
  } catch (e) {
    throw new Error(e instanceof LowbitFormatError ? e.message : `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let model;
  let report;
  try {
    model = decodeLowbit(bytes);
    report = lowbitSizeReport(bytes);
  } catch (e) {
    if (e instanceof LowbitFormatError) throw new Error(`${path} is not a valid .lowbit file: ${e.message.replace(/\s+/g, ' ')} [${e.code}]`);
    throw e;
  }
  const intModel = model.metadata?.['intModel'] === undefined ? undefined : intModelOfFile(model, path);
  const layers = intModel?.layers();
  const nodes = model.graph.map((node, i) => ({
    index: i, op: node.op, name: stringField(node, 'name'), bits: intModel ? intNodeBits(intModel.nodes[i]!, layers![i]!) : bitsOf(node),
  }));
  if (json) {
    io.print(JSON.stringify({ file: path, format: 'lowbit', version: Number(LOWBIT_VERSION), intModel: intModel !== undefined, metadata: model.metadata, nodes, ...report }, null, 2));
    return;
  }
  const ratio = report.fileBytes > 0 ? report.fp32Bytes / report.fileBytes : 0;
  const head: [string, string][] = [
    ['file', path],
    ['format', `lowbit version ${LOWBIT_VERSION}`],
    ['size', `${bytes_(report.fileBytes)} (header ${bytes_(report.headerBytes)}, tensors ${bytes_(report.tensorBytes)})`],
    ['fp32 size', `${bytes_(report.fp32Bytes)} (${ratio.toFixed(1)}x the file)`],
    ['packed bound', `${bytes_(report.theoreticalBytes)} (elements x bits; file overhead ${bytes_(report.overheadBytes)})`],
    ['graph', intModel ? 'integer model (IntModel), valid' : 'not an integer model (no metadata.intModel): eval and export cannot run it'],
  ];
  const name = model.metadata?.['model'];
  if (typeof name === 'string') head.splice(2, 0, ['model', name]);
  const width = Math.max(...head.map(([k]) => k.length));
  for (const [k, v] of head) io.print(`${k.padEnd(width)}  ${v}`);
  io.print();
  io.print(`nodes (${nodes.length})`);
  if (nodes.length > 0) {
    table(io, ['#', 'op', 'name', 'bits'], nodes.map((n) => [String(n.index), n.op, n.name ?? '', n.bits ?? '']));
  }
  io.print();
  io.print(`tensors (${report.tensors.length})`);
  if (report.tensors.length > 0) {
    table(io, ['name', 'dtype', 'shape', 'bytes'], report.tensors.map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, String(t.bytes)]), [3]);
  }
}

/**
 * A float32 ONNX image classifier: imported as `lowbit eval` / `lowbit quantize` import it, then
 * its op types and the nn.summary table of the imported module (ONNX node names as layer names).
 */
function describeOnnxFile(file: string, json: boolean, io: CommandIO): void {
  const model = loadOnnxImageModel(file, 'info');
  const s = summary(onnxTensorModule(model), [1, ...model.sampleShape]);
  if (json) {
    const { format: _format, ...table } = s;
    io.print(JSON.stringify({
      file, format: 'onnx', opset: model.opset, producer: model.producer, input: { name: model.inputName, shape: ['N', ...model.sampleShape] },
      output: { name: model.outputName, shape: ['N', model.classes] }, ops: model.opCounts, dataset: model.metadataDataset, normalize: model.metadataNormalize, summary: table,
    }, null, 2));
    return;
  }
  const head: [string, string][] = [
    ['file', file],
    ['format', `ONNX, opset ${model.opset} (${model.producer})`],
    ['input', `'${model.inputName}' [N, ${model.sampleShape.join(', ')}] float32`],
    ['output', `'${model.outputName}' [N, ${model.classes}]`],
    ['ops', Object.entries(model.opCounts).map(([op, n]) => `${op} ${n}`).join(', ')],
  ];
  if (model.metadataDataset) head.push(['dataset', `${model.metadataDataset} (lowbit.dataset)`]);
  const width = Math.max(...head.map(([k]) => k.length));
  for (const [k, v] of head) io.print(`${k.padEnd(width)}  ${v}`);
  io.print();
  io.print(s.format());
}

/** Input of one sample of the image datasets lowbit train runs on (MNIST, Fashion-MNIST). */
const RUN_INPUT_SHAPE = [1, 1, 28, 28];

/** A lowbit train checkpoint: the model rebuilt as trained (QAT-prepared when it was), then nn.summary. */
function describeTrainingRun(file: string, json: boolean, io: CommandIO): void {
  // A language-model run (lstm-lm, gru-lm, transformer-lm): one window of token ids as the input.
  const lm = readLmCheckpoint(file, 'info');
  const run = lm
    ? { model: lm.model, arch: lm.settings.model, quantLabel: lm.assignment ? quantLabelOfRunConfig({ ...lm.config, plan: lm.config['plan'] ?? {} }, true) : lm.settings.quant, dataset: lm.settings.dataset, input: { shape: [1, lm.settings.seqLen], dtype: 'int32' as const } }
    : { ...modelOfCheckpoint(file, 'info'), input: { shape: RUN_INPUT_SHAPE, dtype: 'float32' as const } };
  const s = summary(run.model, run.input.shape, { dtype: run.input.dtype });
  const epoch = loadCheckpoint(file).epoch;
  if (json) {
    const { format: _format, ...table } = s;
    io.print(JSON.stringify({ file, format: 'lowbit-checkpoint', model: run.arch, quant: run.quantLabel, dataset: run.dataset ?? null, epoch, summary: table }, null, 2));
    return;
  }
  const head: [string, string][] = [['file', file], ['model', `${run.arch} (${run.quantLabel})`], ['dataset', run.dataset ?? 'unknown'], ['epochs', String(epoch)]];
  if (lm) head.push(['input', `one window of ${lm.settings.seqLen} token ids (vocabulary ${lm.settings.vocabSize})`]);
  const width = Math.max(...head.map(([k]) => k.length));
  for (const [k, v] of head) io.print(`${k.padEnd(width)}  ${v}`);
  io.print();
  io.print(s.format());
}

/** Bits of an IntModel node: `w4a4` for layers (`layer` = its `layers()` row, as eval prints them), `a8` for the input quantizer. */
function intNodeBits(node: IntNode, layer: LayerSummary): string | undefined {
  if (node.op === 'conv2d' || node.op === 'linear') return layer.bits;
  if (node.op === 'quantize') return node.input.mode === 'sign' ? 'a1 (sign)' : `a${node.input.bits}`;
  return undefined;
}

function stringField(node: LowbitNode, key: string): string | undefined {
  const v = node[key];
  return typeof v === 'string' ? v : undefined;
}

/** A generic node's `bits` field when it has one: a number, or an object such as {weight: 4, activation: 8}. */
function bitsOf(node: LowbitNode): string | undefined {
  const v = node['bits'];
  if (typeof v === 'number') return String(v);
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const parts = Object.entries(v).filter(([, b]) => typeof b === 'number').map(([k, b]) => `${k[0] ?? ''}${b}`);
    return parts.length > 0 ? parts.join('') : undefined;
  }
  return undefined;
}

function bytes_(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

/** Prints aligned columns (right-aligned where asked), one-line cells. */
function table(io: CommandIO, header: string[], rows: string[][], rightAligned: number[] = [0]): void {
  const clean = rows.map((r) => r.map((c) => c.replace(/[\r\n\t]/g, ' ')));
  const widths = header.map((h, i) => Math.max(h.length, ...clean.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (rightAligned.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  io.print(`  ${line(header)}`);
  for (const r of clean) io.print(`  ${line(r)}`);
}
