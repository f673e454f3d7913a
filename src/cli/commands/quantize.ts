import { createHash } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { DATASET_NAMES, DATASET_STATS, DataLoader, loadDataset, take } from '../../data/index.ts';
import { MODEL_NAMES } from '../../nn/index.ts';
import type { TensorModule } from '../../nn/module.ts';
import { evaluate, formatPercent } from '../../train/index.ts';
import { saveCheckpoint } from '../../train/checkpoint.ts';
import { makeDirs, writeFileAtomic } from '../../format/index.ts';
import { checkDirCreatable } from '../../format/files.ts';
import { OBSERVER_METHODS } from '../../quant/observers/index.ts';
import { calibrate, calibrationReport, equalizeCrossLayer, equalizedStructure, PTQ_SCHEMES, type EqualizeResult } from '../../quant/ptq/index.ts';
import { formatQuantTable, quantizedLayers } from '../../quant/qat/index.ts';
import { convert, saveIntModel } from '../../runtime/index.ts';
import { formatAssignment, loadPlanFile } from '../../quant/search/plan.ts';
import type { QuantPlan } from '../../quant/config/plan.ts';
import { defineCommand } from '../command.ts';
import { BACKEND_CHOICES, backendDetails, describeBackend, useBackend } from '../backend-info.ts';
import { locateFloatRun } from '../float-run.ts';
import { UsageError } from '../args.ts';
import { isOnnxPath, loadOnnxImageModel, onnxBuilder, onnxDataset, onnxNormalize, ONNX_NORMALIZE_CHOICES, ONNX_NORMALIZE_HELP } from '../onnx-model.ts';
import { checkCalibCount, checkDatasetChoice, floatRunBuilder } from '../run-checks.ts';

/**
 * The folder name part of a plan file: its folder's name for a search's `plan.json`
 * (`search-ilp-size-20KB`), else its own name, then 8 hex digits of the plan's SHA-256, so that
 * different plans never share a default output folder and the same plan always finds its own.
 */
function planTag(path: string, plan: QuantPlan): string {
  const name = basename(path).replace(/\.json$/i, '');
  const label = (name === 'plan' ? basename(dirname(resolve(path))) : name).replace(/[^A-Za-z0-9.]+/g, '-').replace(/^-+|-+$/g, '');
  const digest = createHash('sha256').update(JSON.stringify(plan)).digest('hex').slice(0, 8);
  return `${label === '' ? '' : `${label}-`}${digest}`;
}

export const quantizeCommand = defineCommand({
  name: 'quantize',
  summary: 'post-training quantization of a trained float32 model (calibration, AdaRound, bias correction)',
  description: [
    'Loads a float32 checkpoint written by `lowbit train`, calibrates static quantizers on --calib',
    'training samples (weights per output channel, activations per tensor; BatchNorm folded with its',
    'running statistics; first and last layers kept at 8 bits), optionally learns the rounding of the',
    '<= 4-bit weights (AdaRound) and corrects biases, then evaluates float32 and quantized accuracy on',
    'the test set. Writes <out>/model.safetensors (the calibrated fake-quant model state),',
    '<out>/ptq.json and, through the integer runtime, <out>/model.lowbit.',
    'An .onnx --model (a float32 image classifier, e.g. from torch.onnx.export) is imported as a lowbit',
    'module and quantized the same way; its folder gets ptq.json and model.lowbit (when the graph is a',
    'chain of layers the integer runtime knows), whose metadata records the input scaling (--normalize).',
  ].join('\n'),
  examples: [
    'lowbit quantize --model runs/lenet5-mnist-fp32 --bits w8a8',
    'lowbit quantize --model runs/lenet5-mnist-fp32 --bits w4a8 --adaround',
    'lowbit quantize --model runs/mlp-mnist-fp32 --bits w2a8 --group-size 32   # per-group Linear weights',
    'lowbit quantize --model runs/cnn-fashion-mnist-fp32 --bits w8a8 --method percentile --bias-correction',
    'lowbit quantize --model runs/lenet5-mnist-fp32 --plan runs/lenet5-mnist-fp32/search-ilp-size-20KB/plan.json',
    'lowbit quantize --model lenet5.onnx --dataset mnist --bits w8a8   # a PyTorch model exported by torch.onnx.export',
  ],
  options: {
    model: { type: 'string', placeholder: 'PATH', help: 'run directory of a float32 run (runs/<model>-<dataset>-fp32), its checkpoint.safetensors, or a float32 ONNX image classifier (FILE.onnx, e.g. from torch.onnx.export)' },
    bits: { type: 'enum', choices: PTQ_SCHEMES, default: 'w8a8', help: 'weight/activation bits' },
    calib: { type: 'int', positive: true, default: 1000, help: 'calibration samples (from the training split; at most its size)' },
    method: { type: 'enum', choices: OBSERVER_METHODS, default: 'minmax', help: 'activation range observer' },
    weightMethod: { type: 'enum', choices: OBSERVER_METHODS, help: 'weight range observer (default: minmax at 8 bits, mse below)' },
    weightGranularity: { type: 'enum', choices: ['channel', 'tensor'] as const, default: 'channel', help: 'weight scales: one per output channel (default), or one per tensor (the per-tensor baseline; depthwise convs suffer most, --equalize helps)' },
    adaround: { type: 'boolean', help: 'learn the rounding of <= 4-bit weights (AdaRound)' },
    adaroundIterations: { type: 'int', positive: true, default: 500, help: 'AdaRound steps per layer' },
    biasCorrection: { type: 'boolean', help: 'subtract the expected output shift of quantized weights from the biases' },
    equalize: { type: 'boolean', help: 'cross-layer equalization before calibration: fold BatchNorms into their convs, rescale consecutive conv/linear pairs so that their per-channel weight ranges match (ReLU6 between a pair becomes ReLU); for per-tensor weights of depthwise nets' },
    groupSize: { type: 'int', positive: true, help: 'Linear weights: one scale per row and per N inputs (layers whose input count N does not divide stay per row); model.lowbit then holds per-group integer weights (graph version 3)' },
    plan: { type: 'string', placeholder: 'FILE', help: 'per-layer bit widths from a plan file (plan.json of lowbit search) instead of --bits' },
    dataset: { type: 'enum', choices: DATASET_NAMES, help: 'dataset (default: the one the model was trained on; another one of the same input shape and classes is warned about, a different shape or class count refused)' },
    arch: { type: 'enum', choices: MODEL_NAMES, help: 'architecture (default: from the run\'s metrics.json)' },
    out: { type: 'string', placeholder: 'DIR', help: 'output directory, created when the results are written (default: <run dir>/ptq-<bits>-<method>[-g<group size>]; with --plan <run dir>/ptq-plan-<plan folder or file name>-<plan hash>-<method>)' },
    testLimit: { type: 'int', positive: true, help: 'evaluate on the first N test samples only' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of the calibration sample' },
    normalize: { type: 'enum', choices: ONNX_NORMALIZE_CHOICES, help: ONNX_NORMALIZE_HELP },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend: reference, native or wasm (default: native when the addon loads)' },
  },
  run(options, io) {
    useBackend(options.backend);
    // A float32 ONNX image classifier (torch.onnx.export...) instead of a lowbit run: its graph imported.
    const onnx = options.model !== undefined && isOnnxPath(options.model) ? loadOnnxImageModel(options.model, 'quantize: --model') : null;
    if (onnx && options.arch !== undefined) throw new UsageError('--arch names a lowbit architecture; an .onnx model brings its own graph', 'quantize');
    if (!onnx && options.normalize !== undefined) throw new UsageError('--normalize applies to .onnx models (a lowbit run is normalised as it was trained)', 'quantize');
    const run = onnx ? null : locateFloatRun(options.model, options, 'quantize', 'post-training quantization');
    const checkpoint = onnx ? onnx.file : run!.checkpoint;
    const dataset = onnx ? onnxDataset(onnx, options.dataset, (name) => loadDataset(name, 'train'), 'quantize') : run!.dataset;
    const arch = onnx ? `ONNX graph (opset ${onnx.opset}, ${onnx.producer})` : run!.arch;
    // A searched plan: its per-layer bit widths replace --bits.
    const planFile = options.plan === undefined ? null : loadPlanFile(options.plan);
    const scheme = planFile ? `plan ${options.plan}` : options.bits;
    const schemeTag = options.plan !== undefined && planFile ? `plan-${planTag(options.plan, planFile.plan)}` : options.bits;
    const folder = `ptq-${schemeTag}-${options.method}${options.groupSize === undefined ? '' : `-g${options.groupSize}`}${options.weightGranularity === 'tensor' ? '-pt' : ''}${options.equalize ? '-cle' : ''}${options.adaround ? '-adaround' : ''}${options.biasCorrection ? '-bc' : ''}`;
    const out = options.out ?? (onnx ? join(dirname(onnx.file), `${basename(onnx.file).replace(/\.onnx$/i, '')}-${folder}`) : join(dirname(checkpoint), folder));
    checkDirCreatable(out);  // an unusable --out fails now, not after the work; it is created when the results are written

    const onnxScaling = onnx ? onnxNormalize(onnx, options.normalize ?? 'auto', dataset) : null;
    const normalize = onnxScaling ? onnxScaling.stats : DATASET_STATS[dataset];
    const trainSet = loadDataset(dataset, 'train');
    if (run) checkDatasetChoice(run.config, options.dataset, trainSet, 'quantize', io);
    checkCalibCount(options.calib, trainSet, dataset, 'quantize');
    const fullTest = loadDataset(dataset, 'test');
    const testSet = options.testLimit === undefined ? fullTest : take(fullTest, options.testLimit);
    const scaling = normalize ? { normalize } : {};
    const calibLoader = new DataLoader(trainSet, { batchSize: 100, shuffle: true, seed: options.seed, ...scaling });
    const testLoader = new DataLoader(testSet, { batchSize: 256, ...scaling });
    const build: () => TensorModule = run
      ? floatRunBuilder(run, trainSet.numClasses, options.arch !== undefined, 'quantize')
      : onnxBuilder(onnx!, 'quantize: --model');

    io.print('lowbit quantize');
    io.print(`  model      ${arch} from ${checkpoint}`);
    if (onnxScaling) io.print(`  input      ${onnxScaling.label}`);
    io.print(`  data       ${dataset}: ${options.calib} calibration samples (train split, seed ${options.seed}), ${testSet.length} test samples`);
    if (planFile?.assignment) io.print(`  plan       ${formatAssignment(planFile.assignment)}`);
    io.print(`  scheme     ${scheme}, activations ${options.method}, weights ${options.weightMethod ?? 'default'} per ${options.weightGranularity === 'tensor' ? 'tensor' : 'channel'}` +
      `${options.groupSize === undefined ? '' : `, Linear weights in groups of ${options.groupSize} inputs`}${options.equalize ? ', cross-layer equalization' : ''}${options.adaround ? `, AdaRound (${options.adaroundIterations} steps/layer)` : ''}${options.biasCorrection ? ', bias correction' : ''}`);
    io.print(`  backend    ${describeBackend(backendDetails())}`);

    const fp32 = evaluate(build(), testLoader);
    io.print(`fp32 test accuracy:      ${formatPercent(fp32.accuracy)}`);
    const base = build();
    let equalized: EqualizeResult | null = null;
    if (options.equalize) {
      // pairs from the graph of the forward on one calibration batch (custom modules included)
      equalized = equalizeCrossLayer(base, { sample: calibLoader[Symbol.iterator]().next().value?.x });
      io.print(`  cross-layer equalization: ${equalized.folded.length} BatchNorm${equalized.folded.length === 1 ? '' : 's'} folded, ${equalized.pairs.length} pair${equalized.pairs.length === 1 ? '' : 's'} in ${equalized.iterations} sweeps${equalized.replacedRelu6.length > 0 ? `, ReLU6 -> ReLU at ${equalized.replacedRelu6.join(', ')}` : ''}`);
      if (equalized.pairs.length === 0) io.print('  (no conv/linear pair found to equalize: the model is unchanged but for the folded BatchNorms)');
      // ReLU6 -> ReLU changes the float function where activations exceeded 6: say by how much
      if (equalized.replacedRelu6.length > 0) io.print(`equalized fp32 accuracy: ${formatPercent(evaluate(base, testLoader).accuracy)}`);
    }
    const model = calibrate(base, calibLoader, {
      ...(planFile ? { plan: planFile.plan } : { scheme: options.bits }),
      samples: options.calib,
      method: options.method,
      weightMethod: options.weightMethod,
      weightGranularity: options.weightGranularity,
      adaround: options.adaround ? { iterations: options.adaroundIterations } : false,
      biasCorrection: options.biasCorrection,
      ...(options.groupSize === undefined ? {} : { weightGroupSize: options.groupSize }),
      progress: (line) => io.print(`  ${line}`),
    });
    io.print(formatQuantTable(quantizedLayers(model)).replace(/^/gm, '  '));
    const quantized = evaluate(model, testLoader);
    io.print(`${planFile ? 'plan' : options.bits} test accuracy:      ${formatPercent(quantized.accuracy)} (${((quantized.accuracy - fp32.accuracy) * 100).toFixed(2)} pt)`);

    const report = calibrationReport(model)!;
    const ptqConfig = {
      source: checkpoint, model: arch, dataset, scheme, ...(planFile?.assignment ? { assignment: planFile.assignment } : {}), calibrationSamples: report.samples, method: options.method,
      weightMethod: options.weightMethod ?? null, ...(options.weightGranularity === 'tensor' ? { weightGranularity: 'tensor' } : {}), adaround: options.adaround ? { iterations: options.adaroundIterations } : false,
      biasCorrection: options.biasCorrection, equalize: equalized ? equalizedStructure(equalized) : false, seed: options.seed, groupSize: options.groupSize ?? null,
    };
    makeDirs(out);
    // The fake-quant state of an ONNX graph needs that graph to load: no model.safetensors for it.
    if (run) saveCheckpoint(join(out, 'model.safetensors'), { model: model.stateDict(), epoch: 0, config: ptqConfig });
    const summary = {
      config: ptqConfig,
      fp32Accuracy: fp32.accuracy,
      quantizedAccuracy: quantized.accuracy,
      testSamples: testSet.length,
      calibrationSeconds: report.seconds,
      adaround: report.adaround,
      biasCorrection: report.biasCorrection.map((r) => ({ layer: r.layer, corrected: r.corrected, meanAbsShift: r.meanAbsShift })),
      ...(equalized ? { equalize: { folded: equalized.folded, pairs: equalized.pairs, replacedRelu6: equalized.replacedRelu6, sweeps: equalized.iterations, rangeRatio: equalized.rangeRatio } } : {}),
    };
    writeFileAtomic(join(out, 'ptq.json'), new TextEncoder().encode(`${JSON.stringify(summary, null, 2)}\n`));
    io.print(run ? `wrote ${join(out, 'model.safetensors')} and ${join(out, 'ptq.json')}` : `wrote ${join(out, 'ptq.json')}`);

    const sample = testLoader[Symbol.iterator]().next().value?.x;
    try {
      // The input scaling travels with the file (lowbit eval / export read it); none = identity.
      const intModel = convert(model, {
        sample,
        metadata: {
          dataset, source: checkpoint, scheme,
          ...(options.groupSize === undefined ? {} : { weightGroupSize: options.groupSize }),
          ...(onnx ? { normalize: normalize ?? { mean: 0, std: 1 } } : {}),
        },
      });
      const bytes = saveIntModel(join(out, 'model.lowbit'), intModel);
      io.print(`wrote ${join(out, 'model.lowbit')} (${bytes.toLocaleString('en-US')} bytes, integer model)`);
    } catch (error) {
      io.print(`integer export failed: ${(error as Error).message}`);
      return 1;
    }
    return 0;
  },
});
