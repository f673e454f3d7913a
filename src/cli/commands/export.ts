import { existsSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { DATASET_NAMES, DATASET_STATS, isDatasetName, LM_DATASET_NAMES, loadDataset, take, type DatasetName, type NormalizeStats } from '../../data/index.ts';
import { normalizeInPlace } from '../../data/dataset.ts';
import { createModel, isModelName, MODEL_NAMES, type Module, type TensorModule } from '../../nn/index.ts';
import { prepareQat, qatPlanOfRunConfig } from '../../quant/qat/index.ts';
import { convert, type IntModel } from '../../runtime/index.ts';
import { loadCheckpoint } from '../../train/checkpoint.ts';
import { MAX_EXPORT_OPSET, MIN_EXPORT_OPSET, ONNX_PROFILES, saveOnnx, weightRange } from '../../onnx/export.ts';
import { formatVerifyReport, moduleReference, verifyOnnx } from '../../onnx/verify.ts';
import { UsageError } from '../args.ts';
import { defineCommand } from '../command.ts';
import { modelOfCheckpoint } from '../checkpoint-model.ts';
import { checkOutputFile, loadIntModelFile, MODEL_PATH_KINDS, resolveModelInput, type ModelInput } from '../inputs.ts';
import { readTextLimited } from '../../format/index.ts';
import { readLmCheckpoint } from '../lm-run.ts';
import { exportLanguageModel, exportLanguageModelIrnn } from './export-lm.ts';

/** What the input file holds, ready to export. */
type Source =
  | { kind: 'intmodel'; model: IntModel; dataset: string | undefined; normalize: NormalizeStats | undefined }
  | { kind: 'module'; model: Module; quantized: boolean; dataset: string | undefined; arch: string; normalize: NormalizeStats | undefined };

/** A training checkpoint, rebuilt as trained. */
function readCheckpointSource(checkpoint: string, archOption: string | undefined): Source {
  const { model, quantized, dataset, arch, normalize } = modelOfCheckpoint(checkpoint, 'export', archOption !== undefined ? { arch: archOption } : {});
  return { kind: 'module', model, quantized, dataset, arch, normalize };
}

function readSource(input: ModelInput, archOption: string | undefined): Source {
  if (input.kind === 'lowbit') {
    const model = loadIntModelFile(input.file);
    const meta = model.graph.metadata ?? {};
    return { kind: 'intmodel', model, dataset: typeof meta.dataset === 'string' ? meta.dataset : undefined, normalize: meta.normalize as NormalizeStats | undefined };
  }
  return readCheckpointSource(input.file, archOption);
}

/** `<run dir>/model[.web].onnx` for a run directory, else `<name>[.web].onnx` next to the file. */
function defaultOut(input: ModelInput, profile: string): string {
  const dir = input.directory ?? dirname(input.file);
  const stem = input.directory !== undefined ? 'model' : basename(input.file, extname(input.file));
  return join(dir, `${stem}${profile === 'web' ? '.web' : ''}.onnx`);
}

/** The first layer whose integer weights do not fit int4 ([−8, 7]), for --weight-bits 4. */
function int4Misfit(model: IntModel): { name: string; lo: number; hi: number } | undefined {
  for (const node of model.nodes) {
    if (node.op !== 'conv2d' && node.op !== 'linear') continue;
    const [lo, hi] = weightRange(model, node);
    if (lo < -8 || hi > 7) return { name: node.name, lo, hi };
  }
  return undefined;
}

export const exportCommand = defineCommand({
  name: 'export',
  summary: 'export a model to ONNX (QDQ for .lowbit integer models, float32 for checkpoints); --verify runs it in onnxruntime-node',
  description: [
    'Writes an ONNX file. A .lowbit integer model becomes a QDQ graph (QuantizeLinear/DequantizeLinear',
    'with the IntModel\'s activation scales and zero points, int8 or int4 per-channel weights, int32 biases;',
    'opset 13, or 21 when int4 weights are written). A float32 training checkpoint (lowbit train, --quant fp32)',
    'becomes a float graph; a QAT checkpoint is converted to an IntModel first. --profile web keeps to what',
    'onnxruntime-web accepts (opset 13, no int4). --verify runs the file with onnxruntime-node (optional',
    'dependency) on --samples test images and reports the agreement with lowbit\'s own output (the IntModel',
    'simulation, or the float model). See docs/onnx.md.',
    'A language-model run (lowbit train --model lstm-lm|gru-lm) becomes a sequence graph (onnx.saveRnnOnnx:',
    'int32 word ids [N, L] -> next-word logits; float32, or int8-container weight QDQ for QAT runs);',
    '--verify then compares perplexity and next-word argmax with lowbit on --samples test windows (docs/lm.md).',
  ].join('\n'),
  examples: [
    'lowbit export runs/lenet5-mnist-fp32/ptq-w8a8-minmax/model.lowbit --verify',
    'lowbit export model.lowbit --profile web --out model.web.onnx',
    'lowbit export runs/lenet5-mnist-fp32 --out lenet5-fp32.onnx --verify --samples 10000',
    'lowbit export runs/lstm-lm-moby-dick-w4a8 --out lm.onnx --verify',
    'lowbit export runs/lstm-lm-moby-dick-w4a8 --format irnn --out lm.irnn --verify   # integer-only LSTM runtime (lowbit eval lm.irnn)',
  ],
  options: {
    input: { type: 'string', placeholder: 'PATH', positional: true, help: `${MODEL_PATH_KINDS} (lowbit train's or lowbit quantize's folder)` },
    format: { type: 'enum', choices: ['onnx', 'irnn'], default: 'onnx', help: 'output format: onnx, or irnn (language-model runs of lstm-lm and gru-lm: the integer-only LSTM / GRU runtime; transformer-lm w8a8/w4a8: the integer-only Transformer, docs/lm.md)' },
    profile: { type: 'enum', choices: ONNX_PROFILES, default: 'default', help: 'target runtime: default (onnxruntime) or web (onnxruntime-web)' },
    out: { type: 'string', placeholder: 'FILE', help: 'output file (default: next to the input, <name>.onnx or <name>.web.onnx)' },
    weightBits: { type: 'enum', choices: ['8', '4'], help: 'weight container: 8 = int8, 4 = int4 (opset 21); default: int4 for <= 4-bit layers, int8 otherwise' },
    opset: { type: 'int', min: MIN_EXPORT_OPSET, max: MAX_EXPORT_OPSET, help: `opset of the default domain (${MIN_EXPORT_OPSET}..${MAX_EXPORT_OPSET}; default 13, 21 with int4 or per-group weights)` },
    bias: { type: 'enum', choices: ['standard', 'intmodel'], help: 'int32 bias scale (default: intmodel for int4-weight layers, standard for int8): standard = s_in*s_w (integer kernels in onnxruntime with int8 weights), intmodel = the IntModel\'s finer scale (exact bias, float layers)' },
    verify: { type: 'boolean', help: 'run the exported file with onnxruntime-node and compare with lowbit' },
    samples: { type: 'int', positive: true, default: 1000, help: 'test images (language models: test windows) for --verify' },
    activations: { type: 'enum', choices: ['qdq', 'exact'], help: "language models: activation quantizers as QuantizeLinear/DequantizeLinear (default qdq) or as lowbit's float64 arithmetic (exact; docs/onnx-rnn.md)" },
    dataset: { type: 'enum', choices: [...DATASET_NAMES, ...LM_DATASET_NAMES], help: 'dataset of the verification samples (default: the model\'s, else mnist)' },
    arch: { type: 'enum', choices: MODEL_NAMES, help: 'architecture of a checkpoint (default: from its run config)' },
  },
  async run(options, io) {
    if (options.input === undefined) throw new UsageError(`give the model to export: lowbit export PATH, where PATH is ${MODEL_PATH_KINDS}`, 'export');
    if (options.profile === 'web' && options.weightBits === '4') throw new UsageError('--profile web writes no int4 tensors (onnxruntime-web); drop --weight-bits 4 (4-bit weights go in int8 containers)', 'export');
    if (options.profile === 'web' && options.opset !== undefined && options.opset !== 13) throw new UsageError(`--profile web writes opset 13; drop --opset ${options.opset}`, 'export');
    if (options.weightBits === '4' && options.opset !== undefined && options.opset < 21) throw new UsageError(`--weight-bits 4 needs --opset 21 (int4 tensors), got --opset ${options.opset}`, 'export');
    const input = resolveModelInput(options.input, 'export', 'export', 'checkpoint');
    const out = options.out ?? (options.format === 'irnn' ? defaultOut(input, options.profile).replace(/\.onnx$/, '.irnn') : defaultOut(input, options.profile));
    checkOutputFile(out, options.out === undefined ? 'export: output' : 'export: --out', input.file);
    if (input.kind === 'checkpoint') {
      const lm = readLmCheckpoint(input.file, 'export', { unreadable: 'null' });
      // A --plan run's per-layer widths are in its quantizers, which the ONNX exporters read; the
      // integer-only LSTM runtime has one weight width per model.
      if (lm?.assignment && options.format === 'irnn') throw new UsageError(`--format irnn: '${input.file}' is a --plan language-model run (per-layer widths); the integer-only runtime takes one weight width: export it to ONNX`, 'export');
      if (lm) return options.format === 'irnn' ? exportLanguageModelIrnn(lm, out, options, io) : exportLanguageModel(lm, out, options, io);
    }
    if (options.format === 'irnn') throw new UsageError(`--format irnn converts language-model runs (lowbit train --model lstm-lm or gru-lm); '${input.file}' is ${input.kind === 'lowbit' ? 'an integer image model' : 'an image-model checkpoint'}`, 'export');
    if (options.activations !== undefined) throw new UsageError(`--activations applies to language-model runs; '${input.file}' is ${input.kind === 'lowbit' ? 'an integer image model' : 'an image-model checkpoint'}`, 'export');
    const source = readSource(input, options.arch);
    const datasetName = options.dataset ?? source.dataset ?? 'mnist';
    if (!isDatasetName(datasetName)) throw new Error(`export: unknown dataset '${datasetName}' (known: ${DATASET_NAMES.join(', ')})`);
    const dataset: DatasetName = datasetName;
    const normalize = source.normalize ?? DATASET_STATS[dataset];
    let intModel: IntModel | null = source.kind === 'intmodel' ? source.model : null;
    if (source.kind === 'module' && source.quantized) intModel = convert(source.model, { inputShape: [1, 28, 28] });
    const notes: string[] = [];
    if (intModel === null) {
      // The library's own note names its option names; the CLI names its flags.
      const ignored = [options.weightBits !== undefined ? '--weight-bits' : '', options.bias !== undefined ? '--bias' : ''].filter((f) => f !== '');
      if (ignored.length > 0) notes.push(`${ignored.join(' and ')} ${ignored.length > 1 ? 'have' : 'has'} no effect on a float32 export`);
    } else if (options.weightBits === '4') {
      const misfit = int4Misfit(intModel);
      if (misfit) throw new Error(`export: layer '${misfit.name}' has weights in [${misfit.lo}, ${misfit.hi}], which do not fit int4; pass --weight-bits 8, or leave --weight-bits out (int4 where the weights fit, int8 elsewhere)`);
    }
    const exportOptions = {
      profile: options.profile,
      weightBits: intModel === null || options.weightBits === undefined ? undefined : (Number(options.weightBits) as 8 | 4),
      opset: options.opset,
      bias: intModel === null ? undefined : options.bias,
      inputShape: source.kind === 'module' ? [1, 28, 28] : undefined,
      metadata: { 'lowbit.source': basename(input.file), 'lowbit.dataset': dataset, 'lowbit.normalize': JSON.stringify(normalize) },
    };
    const result = saveOnnx(out, intModel ?? source.model, exportOptions);
    const what = result.kind === 'qdq' ? `QDQ, weights ${summarizeWeights(result.weightTypes)}` : 'float32';
    io.print(`wrote ${out} (${result.bytes.length.toLocaleString('en-US')} bytes, ${what}, opset ${result.opset}, ${result.profile} profile)`);
    for (const note of [...notes, ...result.notes]) io.print(`  note: ${note}`);
    if (!options.verify) return 0;

    const test = take(loadDataset(dataset, 'test'), options.samples);
    const x = new Float32Array(test.images);
    normalizeInPlace(x, test.sampleShape, normalize);
    const reference = intModel
      ? (batch: Float32Array, n: number): Float32Array => intModel.run(batch, n)
      : moduleReference(source.model as TensorModule, test.sampleShape);
    // An IntModel whose samples hold the test images' values in another shape (a Conv1d net reading
    // each 28×28 digit as [28, 28]) is fed that shape.
    const per = test.sampleShape.reduce((p, d) => p * d, 1);
    const shape = intModel && intModel.graph.inputShape.reduce((p, d) => p * d, 1) === per ? [...intModel.graph.inputShape] : test.sampleShape;
    const report = await verifyOnnx(result.bytes, reference, { data: x, shape, count: test.length }, { progress: io.stderr });
    io.print(formatVerifyReport(report));
    if (report.status === 'ok') {
      io.print(`  reference: ${intModel ? 'the IntModel (integer simulation)' : 'the float32 model'}, ${test.name} test images`);
      // Layers on the standard bias: all with --bias standard; by default the int8-weight layers.
      const standardLayers = options.bias === 'standard' || (options.bias === undefined && Object.values(result.weightTypes).includes('int8'));
      if (result.kind === 'qdq' && standardLayers && report.argmaxAgreement < 1) {
        // docs/onnx.md, "Measured: the bias scale at 4 bits": most visible with <= 4-bit layers, where
        // one accumulator step is a large part of an output step; test accuracy moved by <= 0.03 pt.
        const int4 = Object.values(result.weightTypes).includes('int4');
        io.print(`  note: the standard int32 bias (s_in*s_w, integer kernels in onnxruntime)${options.bias === undefined ? ' of the int8-weight layers' : ''} is rounded to one`);
        io.print('        accumulator step, so activations near a rounding boundary can land one step from the IntModel\'s;');
        io.print(options.bias === 'standard' && int4
          ? '        --bias intmodel reproduces the IntModel exactly (int4 weights run as float layers in onnxruntime either way; see docs/onnx.md)'
          : '        --bias intmodel reproduces the IntModel exactly (those layers then run as float in onnxruntime; see docs/onnx.md)');
      }
    }
    return 0;
  },
});

function summarizeWeights(types: Readonly<Record<string, string>>): string {
  const counts = new Map<string, number>();
  for (const t of Object.values(types)) counts.set(t, (counts.get(t) ?? 0) + 1);
  return [...counts].map(([t, n]) => `${t} x${n}`).join(', ');
}
