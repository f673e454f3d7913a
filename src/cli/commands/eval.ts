import { DATASET_NAMES, DATASET_STATS, DataLoader, isDatasetName, isLmDatasetName, LM_DATASET_NAMES, loadDataset, take, type DatasetName, type NormalizeStats } from '../../data/index.ts';
import { normalizeInPlace } from '../../data/dataset.ts';
import type { Module } from '../../nn/index.ts';
import { Tensor } from '../../tensor/index.ts';
import { evaluate, formatPercent } from '../../train/index.ts';
import { compareWithFakeQuant, convert, type IntModel } from '../../runtime/index.ts';
import { saveIntModel } from '../../runtime/io.ts';
import { UsageError } from '../args.ts';
import { defineCommand } from '../command.ts';
import { BACKEND_CHOICES, useBackend } from '../backend-info.ts';
import { modelOfCheckpoint, type CheckpointModel } from '../checkpoint-model.ts';
import { checkOutputFile, loadIntModelFile, resolveModelInput } from '../inputs.ts';
import { readLmCheckpoint, type LmCheckpoint } from '../lm-run.ts';
import { evalIntLanguageModel, evalLanguageModel, isIrnnPath } from './eval-lm.ts';
import { evalOnnxModel } from './eval-onnx.ts';
import { isOnnxPath, ONNX_NORMALIZE_CHOICES, ONNX_NORMALIZE_HELP } from '../onnx-model.ts';

/** The prepared (fake-quant) model of a QAT training checkpoint, in eval mode; float32 runs are refused. */
function preparedFromCheckpoint(path: string): CheckpointModel {
  const loaded = modelOfCheckpoint(path, 'eval', { defaultArch: 'lenet5' });
  if (!loaded.quantized) throw new Error(`eval: '${path}' is a float32 checkpoint (quant fp32): train with --quant to get an integer model`);
  return loaded;
}

export const evalCommand = defineCommand({
  name: 'eval',
  summary: 'run an integer model (.lowbit) on a test set: accuracy and images/s',
  description: [
    'Evaluates an IntModel (integer-only inference, src/runtime) on the test split.',
    '--model reads a .lowbit file (or the model.lowbit of a lowbit quantize folder); --checkpoint',
    'converts a QAT training checkpoint (or a run directory\'s checkpoint.safetensors) on the fly',
    '(model, scheme and estimator from its config), optionally saves it (--save) and, with',
    '--compare, also runs the fake-quant model and reports their agreement (same argmax, logit',
    'difference in units of the last layer\'s s_in·s_w, per-layer integer input differences).',
    'A language-model run (lowbit train --model lstm-lm|gru-lm; as --model or --checkpoint) reports its',
    'test perplexity on the corpus\' held-out test split and the forward throughput (docs/lm.md); so does an',
    'integer-only language model (FILE.irnn, from lowbit export RUN --format irnn), run by the iRNN runtime.',
    'A float32 ONNX image classifier (FILE.onnx, e.g. from torch.onnx.export) is imported as a lowbit module',
    'and evaluated (--normalize: its input scaling); --verify also runs it in onnxruntime-node and compares.',
  ].join('\n'),
  examples: [
    'lowbit eval --model lenet5-w8a8.lowbit --dataset mnist',
    'lowbit eval --checkpoint runs/lenet5-mnist-w8a8/checkpoint.safetensors --save lenet5-w8a8.lowbit --compare',
    'lowbit eval runs/lstm-lm-moby-dick-w4a8          # test perplexity of a language-model run',
    'lowbit eval lm.irnn                              # ... of its integer-only export (lowbit export RUN --format irnn --out lm.irnn)',
    'lowbit eval lenet5.onnx --dataset mnist --verify # a float ONNX model (torch.onnx.export), checked against onnxruntime-node',
  ],
  options: {
    model: { type: 'string', placeholder: 'FILE', positional: true, help: 'the .lowbit integer model (or .irnn language model, or float32 .onnx image classifier) to evaluate (also: lowbit eval FILE)' },
    checkpoint: { type: 'string', placeholder: 'PATH', help: 'a QAT training checkpoint or run directory to convert (instead of --model)' },
    save: { type: 'string', placeholder: 'FILE', help: 'with --checkpoint: write the converted model to this .lowbit file' },
    compare: { type: 'boolean', help: 'with --checkpoint: compare with the fake-quant model on the same images' },
    dataset: { type: 'enum', choices: [...DATASET_NAMES, ...LM_DATASET_NAMES], help: 'dataset (default: the one the model was trained on, else mnist)' },
    limit: { type: 'int', positive: true, help: 'evaluate on the first N test images (language models: test windows) only' },
    batchSize: { type: 'int', positive: true, default: 256, help: 'images per IntModel.run call (language models: windows per forward)' },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'backend of the fake-quant model (--compare) or of an imported .onnx model' },
    normalize: { type: 'enum', choices: ONNX_NORMALIZE_CHOICES, help: ONNX_NORMALIZE_HELP },
    verify: { type: 'boolean', help: 'ONNX models: also run the test images through onnxruntime-node and compare its outputs with lowbit\'s' },
  },
  run(options, io) {
    if ((options.model === undefined) === (options.checkpoint === undefined)) throw new UsageError('give exactly one of --model FILE.lowbit (or lowbit eval FILE.lowbit) and --checkpoint FILE.safetensors', 'eval');
    if (options.model !== undefined && isIrnnPath(options.model)) return evalIntLanguageModel(options.model, options, io);
    if (options.model !== undefined && isOnnxPath(options.model)) {
      if (options.save !== undefined || options.compare) throw new UsageError('--save and --compare need --checkpoint; an .onnx file is evaluated as it is (--verify compares it with onnxruntime-node)', 'eval');
      useBackend(options.backend);
      return evalOnnxModel(options.model, options, io);
    }
    if (options.normalize !== undefined || options.verify) throw new UsageError('--normalize and --verify apply to .onnx models (lowbit eval FILE.onnx)', 'eval');
    const lm = options.checkpoint !== undefined ? languageModelRun(options.checkpoint, 'eval: --checkpoint', 'checkpoint') : languageModelRun(options.model!, 'eval: --model', 'lowbit');
    if (lm) {
      useBackend(options.backend);
      return evalLanguageModel(lm, options, io);
    }
    if (options.dataset !== undefined && isLmDatasetName(options.dataset)) throw new UsageError(`--dataset ${options.dataset} is a text corpus: evaluate a language-model run (lowbit train --model lstm-lm) on it, not an image model`, 'eval');
    if (options.checkpoint === undefined && (options.save !== undefined || options.compare)) throw new UsageError('--save and --compare need --checkpoint', 'eval');
    const input = options.checkpoint !== undefined ? checkpointInput(options.checkpoint) : modelInput(options.model!);
    if (options.save !== undefined) checkOutputFile(options.save, 'eval: --save', input);
    useBackend(options.backend);
    let intModel: IntModel;
    let fakeQuant: Module | null = null;
    let datasetName: string | undefined = options.dataset;
    if (options.checkpoint !== undefined) {
      const { model, config, arch, dataset, quantLabel, normalize } = preparedFromCheckpoint(input);
      datasetName ??= dataset;
      const ds = resolveDataset(datasetName);
      const stats = normalize ?? DATASET_STATS[ds];
      const calib = take(loadDataset(ds, 'test'), 256);
      const x = new Float32Array(calib.images);
      normalizeInPlace(x, calib.sampleShape, stats);
      intModel = convert(model, {
        sample: new Tensor(x, [calib.length, ...calib.sampleShape]),
        metadata: { model: arch, dataset: ds, quant: config.plan ? quantLabel : config.quant, estimator: config.estimator ?? null, normalize: stats, source: input },
      });
      if (options.save !== undefined) {
        const bytes = saveIntModel(options.save, intModel);
        io.print(`wrote ${options.save} (${bytes.toLocaleString('en-US')} bytes)`);
      }
      if (options.compare) fakeQuant = model;
    } else {
      intModel = loadIntModelFile(input);
      datasetName ??= intModel.graph.metadata?.dataset as string | undefined;
    }
    const ds = resolveDataset(datasetName);
    const meta = intModel.graph.metadata ?? {};
    const stats = (meta.normalize as NormalizeStats | undefined) ?? DATASET_STATS[ds];
    const full = loadDataset(ds, 'test');
    const test = options.limit === undefined ? full : take(full, options.limit);
    io.print(intModel.formatLayers());
    const per = test.sampleShape.reduce((p, d) => p * d, 1);
    let correct = 0;
    let seconds = 0;
    let agree = 0;
    let maxLsb = 0;
    let sumLsb = 0;
    let within = 0;
    let cpuSeconds = 0;
    let within32 = 0;
    let maxLsb32 = 0;
    const layerMax: Record<string, number> = {};
    const layerMismatch: Record<string, number> = {};
    const layerLocal: Record<string, number> = {};
    for (let from = 0; from < test.length; from += options.batchSize) {
      const n = Math.min(options.batchSize, test.length - from);
      const x = test.images.slice(from * per, (from + n) * per);
      normalizeInPlace(x, test.sampleShape, stats);
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const logits = intModel.run(x, n);
      seconds += (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(c0);
      cpuSeconds += (cpu.user + cpu.system) / 1e6;
      const classes = logits.length / n;
      for (let i = 0; i < n; i++) {
        let best = 0;
        for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
        if (best === test.labels[from + i]) correct++;
      }
      if (fakeQuant) {
        const r = compareWithFakeQuant(fakeQuant, intModel, new Tensor(x, [n, ...test.sampleShape]));
        agree += r.argmaxAgreement * n;
        maxLsb = Math.max(maxLsb, r.maxLogitLsb);
        sumLsb += r.meanLogitLsb * n;
        within += r.logitWithin1Lsb * n;
        within32 += r.float32LogitWithin1Lsb * n;
        maxLsb32 = Math.max(maxLsb32, r.float32MaxLogitLsb);
        for (const [k, v] of Object.entries(r.layerMaxDiff)) layerMax[k] = Math.max(layerMax[k] ?? 0, v);
        for (const [k, v] of Object.entries(r.layerMismatch)) layerMismatch[k] = (layerMismatch[k] ?? 0) + v * n;
        for (const [k, v] of Object.entries(r.layerLocalMaxDiff)) layerLocal[k] = Math.max(layerLocal[k] ?? 0, v);
      }
    }
    io.print(`${test.name}: ${test.length} images`);
    io.print(`accuracy      ${formatPercent(correct / test.length)} (${correct}/${test.length})`);
    io.print(`throughput    ${(test.length / seconds).toFixed(0)} images/s wall, ${(test.length / cpuSeconds).toFixed(0)} images/s of process CPU time (IntModel.run, batch ${Math.min(options.batchSize, test.length)}, ${seconds.toFixed(2)} s)`);
    if (fakeQuant) {
      io.print(`agreement     ${formatPercent(agree / test.length)} same argmax as the fake-quant model`);
      io.print(`logits        ${formatPercent(within / test.length)} within 1 LSB of the float64 fake-quant simulation; max ${maxLsb.toFixed(4)} / mean ${(sumLsb / test.length).toFixed(5)} LSB apart (LSB = s_in·s_w of the last layer)`);
      io.print(`              ${formatPercent(within32 / test.length)} within 1 LSB of the float32 fake-quant forward; max ${maxLsb32.toFixed(4)} LSB apart (float32 rounding flips hidden integers near rounding boundaries)`);
      for (const k of Object.keys(layerMax)) {
        const own = layerLocal[k];
        io.print(`  ${k.padEnd(14)} input max |Δq| ${layerMax[k]}, ${formatPercent(layerMismatch[k]! / test.length)} of integers differ; own error on the fake-quant input: max ${own === undefined ? '-' : Number.isInteger(own) ? own : `${own.toFixed(4)} LSB`}`);
      }
    }
  },
});

/** The .lowbit file of --model (a file or a lowbit quantize folder); a checkpoint there is a usage error. */
function modelInput(path: string): string {
  const input = resolveModelInput(path, 'eval: --model', 'eval', 'lowbit');
  if (input.kind === 'checkpoint') throw new UsageError(`--model: '${path}' is a training checkpoint${input.directory ? ' folder' : ''}: pass it as --checkpoint ${path}`, 'eval');
  return input.file;
}

/** The checkpoint file of --checkpoint (a file or a run directory); a .lowbit there is a usage error. */
function checkpointInput(path: string): string {
  const input = resolveModelInput(path, 'eval: --checkpoint', 'eval', 'checkpoint');
  if (input.kind === 'lowbit') throw new UsageError(`--checkpoint: '${path}' is ${input.directory ? 'a folder with a .lowbit integer model' : 'a .lowbit integer model'}: pass it as --model ${path} (or lowbit eval ${path})`, 'eval');
  return input.file;
}

/** The language-model run at `path` (a run directory or its checkpoint), else null (image runs, .lowbit files, unreadable files: the image path reports those). */
function languageModelRun(path: string, label: string, prefer: 'lowbit' | 'checkpoint'): LmCheckpoint | null {
  const input = resolveModelInput(path, label, 'eval', prefer);
  return input.kind === 'checkpoint' ? readLmCheckpoint(input.file, 'eval', { unreadable: 'null' }) : null;
}

function resolveDataset(name: string | undefined): DatasetName {
  const ds = name ?? 'mnist';
  if (!isDatasetName(ds)) throw new Error(`eval: unknown dataset '${ds}' (known: ${DATASET_NAMES.join(', ')})`);
  return ds;
}
