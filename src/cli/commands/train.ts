import { existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { isOnnxPath, loadOnnxImageModel, onnxBuilder, onnxDataset, onnxNormalize, ONNX_NORMALIZE_CHOICES, ONNX_NORMALIZE_HELP } from '../onnx-model.ts';
import { fileURLToPath } from 'node:url';
import { DATASET_NAMES, DATASET_STATS, DataLoader, isDatasetName, LM_DATASET_NAMES, loadDataset, take } from '../../data/index.ts';
import { createModel, MODEL_NAMES } from '../../nn/index.ts';
import { CosineAnnealingLR, ReduceLROnPlateau, type ReduceLROnPlateauState, createOptimizer, MAX_GRADIENT_BITS, MIN_GRADIENT_BITS, OPTIMIZER_NAMES, StepLR, withQuantizedGradients, type OptimizerName } from '../../optim/index.ts';
import { manualSeed, STOCHASTIC_QUANTIZE_BITS } from '../../tensor/index.ts';
import { evaluate, fit, formatPercent, preferThroughputGc, type EpochScheduler } from '../../train/index.ts';
import { makeDirs, writeFileAtomic, readTextLimited } from '../../format/index.ts';
import { GradScaler, PRECISIONS, type Precision } from '../../lowp/index.ts';
import { defineCommand } from '../command.ts';
import { COMPRESSOR_NAMES } from '../../distributed/index.ts';
import { trainDataParallel, wantsDataParallel } from './train-data-parallel.ts';
import { flagName, UsageError } from '../args.ts';
import { locateFloatRun } from '../float-run.ts';
import { formatAssignment, loadPlanFile } from '../../quant/search/plan.ts';
import { calibrate } from '../../quant/ptq/index.ts';
import { BACKEND_CHOICES, backendDetails, describeBackend, useBackend } from '../backend-info.ts';
import {
  defaultEstimator, formatQuantTable, prepareQat, qatFromCliOptions, qatParamGroups, quantCliOptions, quantizeActivationGradients, quantizedLayers, QUANT_CHOICES, setQuantProgress,
  type ActivationGradientOptions, type QuantChoice,
} from '../../quant/qat/index.ts';
import { NEXT_WORD_QUANT_CHOICES } from '../../quant/rnn/index.ts';
import { isLmModelName, LM_DEFAULTS, LM_LIMITS, LM_MODEL_NAMES, lmDefaultSizes } from '../lm-run.ts';
import { trainLanguageModel } from './train-lm.ts';
import { resumeState } from '../resume.ts';
import { TRANSFORMER_LM_QUANT_LR_SCALE } from '../lm-transformer.ts';

/** `--quant-lr-scale` when not given (transformer-lm: TRANSFORMER_LM_QUANT_LR_SCALE). */
const DEFAULT_QUANT_LR_SCALE = 0.1;

/** Learning rate used when `--lr` is not given. */
// Adam at 2e-3 with cosine decay over 4 epochs: LeNet-5 on MNIST reached 99.12 % / 99.05 % test
// accuracy with seeds 0 / 1 (1e-3 gave 98.95 % / 98.92 %).
// Madam: the authors' 0.01; LNS-Madam (8-bit, gamma 8): see docs/lowp.md.
/** Final DGC sparsity unless --sparsity says otherwise. */
const DEFAULT_SPARSITY = 0.999;
const DEFAULT_LR: Record<OptimizerName, number> = { sgd: 0.05, adam: 2e-3, adamw: 2e-3, madam: 0.01, 'lns-madam': 0.125 };

export const trainCommand = defineCommand({
  name: 'train',
  summary: 'train an image model or a word-level language model, quantization-aware (default: 4-bit QAT) or float32',
  description: [
    'Trains with a per-epoch learning-rate schedule, evaluates on the test split after every',
    'epoch, writes <out>/checkpoint.safetensors after every epoch and <out>/metrics.json at the',
    'end. By default the run is 4-bit quantization-aware training (W4A4, LSQ; first and last layers',
    'and the input at 8 bit) of LeNet-5 on MNIST, Adam 2e-3 with cosine decay, 4 epochs, batch 64,',
    'and it reports the float32 baseline next to the QAT accuracy: a stored one (a previous',
    '--quant fp32 run in runs/, else the documented result in docs/results) or, with',
    '--baseline train, one trained first with the same settings. --quant fp32 trains float32 only.',
    '',
    'Language models: --model lstm-lm|gru-lm trains a word-level next-word model (embedding, one',
    'LSTM/GRU layer, linear head over the vocabulary; --seq-len words of context) on --dataset',
    'moby-dick (80/10/10 % train/validation/test by position) or sotu (State of the Union addresses,',
    'train <= 2000, validation 2001-2010, test 2011-2021), printing the validation perplexity after',
    'every epoch. Defaults: moby-dick, lstm-lm at --quant w4a8 (LSQ QAT), gru-lm at fp32 (--quant',
    'w8a8|w4a8|w4a4|w4 trains a QAT GRU),',
    '3 epochs, batch 128, Adam 5e-3. lowbit eval RUN reports the test perplexity, lowbit export RUN',
    'writes ONNX. See docs/lm.md.',
    '--model transformer-lm: a causal Transformer (2 pre-LN blocks, 4 heads; --embed is its width,',
    'default 80, --hidden its MLP width, default 320), same --quant choices, every matmul quantized;',
    'it trains every position of non-overlapping windows for 5 epochs by default (--objective all).',
  ].join('\n'),
  examples: [
    'lowbit train                                  # LeNet-5, MNIST, W4A4 LSQ QAT + fp32 baseline',
    'lowbit train --quant fp32',
    'lowbit train --quant w2a2 --estimator lsq --baseline train',
    'lowbit train --model mlp --dataset fashion-mnist --epochs 10 --optimizer sgd --lr 0.05',
    'lowbit train --limit 2048 --epochs 1 --no-progress   # a quick try',
    'lowbit train --quant fp32 && lowbit train --init runs/lenet5-mnist-fp32 --epochs 1 --lr 5e-4   # QAT fine-tune of a float model',
    'lowbit train --model lstm-lm --dataset moby-dick        # 4-bit-weight LSTM language model (W4A8 QAT)',
    'lowbit train --model gru-lm --quant fp32 --hidden 64 --epochs 1',
  ],
  options: {
    model: { type: 'enum', choices: [...MODEL_NAMES, ...LM_MODEL_NAMES], help: 'model architecture (default: lenet5; lstm-lm, gru-lm, transformer-lm: word-level language models; with --init FILE.onnx the file\'s graph)' },
    dataset: { type: 'enum', choices: [...DATASET_NAMES, ...LM_DATASET_NAMES], help: 'dataset (default: mnist; moby-dick for language models, or sotu)' },
    epochs: { type: 'int', positive: true, help: `passes over the training set (default: 4; ${LM_DEFAULTS.epochs} for language models)` },
    batchSize: { type: 'int', positive: true, help: `samples per step (default: 64; ${LM_DEFAULTS.batchSize} for language models)` },
    optimizer: { type: 'enum', choices: OPTIMIZER_NAMES, default: 'adam', help: 'optimizer' },
    lr: { type: 'number', positive: true, placeholder: 'LR', help: `learning rate (default: 0.002 for adam/adamw (${LM_DEFAULTS.adamLr} for language models), 0.05 for sgd, 0.01 for madam, 0.125 for lns-madam)` },
    momentum: { type: 'number', min: 0, max: 1, default: 0.9, help: 'SGD momentum' },
    weightDecay: { type: 'number', min: 0, default: 0, help: 'weight decay (L2 for sgd/adam, decoupled for adamw, multiplicative for madam/lns-madam)' },
    schedule: { type: 'enum', choices: ['cosine', 'step', 'plateau', 'none'], default: 'cosine', help: 'per-epoch learning-rate schedule (step: x0.1 every third of the epochs; plateau: x0.1 after 2 epochs in a row without a lower test loss, ReduceLROnPlateau with patience 1, image models)' },
    patience: { type: 'int', min: 0, placeholder: 'N', help: 'early stopping: stop when the test loss has not improved for N epochs (Keras EarlyStopping; the test split is the validation data here); image models' },
    minDelta: { type: 'number', min: 0, placeholder: 'D', help: 'with --patience: a test loss must beat the best by more than D to count as an improvement (default 0)' },
    restoreBest: { type: 'boolean', help: 'with --patience: load the weights of the best epoch (lowest test loss) back at the end; the checkpoint and the reported accuracy are then that epoch\'s' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of initialisation and shuffling' },
    out: { type: 'string', placeholder: 'DIR', help: 'output directory (default: runs/<model>-<dataset>-<quant>)' },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend: reference, native or wasm (default: native when the addon loads)' },
    limit: { type: 'int', positive: true, help: 'train on the first N training samples (language models: windows) only' },
    testLimit: { type: 'int', positive: true, help: 'evaluate on the first N test samples (language models: validation windows) only' },
    progress: { type: 'boolean', default: true, help: 'hide the progress bar' },
    quant: {
      type: 'enum', choices: [...new Set([...QUANT_CHOICES, ...NEXT_WORD_QUANT_CHOICES])],
      help: `${quantCliOptions.quant.help}; language models: ${NEXT_WORD_QUANT_CHOICES.join(', ')} (w4: 4-bit weights, float activations) (default: w4a4; w4a8 for lstm-lm, fp32 for gru-lm)`,
    },
    estimator: quantCliOptions.estimator,
    quantLrScale: { type: 'number', positive: true, help: `LR multiplier of quantizer parameters (LSQ steps, PACT clips) (default: ${DEFAULT_QUANT_LR_SCALE}; transformer-lm ${TRANSFORMER_LM_QUANT_LR_SCALE})` },
    baseline: { type: 'enum', choices: ['stored', 'train', 'none'], default: 'stored', help: 'fp32 baseline reported next to a QAT run: the stored fp32 run, one trained now with the same settings (kept in OUT/baseline-fp32), or none' },
    init: { type: 'string', placeholder: 'RUN', help: 'start from the weights of a float32 run (run directory or checkpoint), or from a float32 ONNX image classifier (FILE.onnx: its graph and weights) -- QAT fine-tuning; its accuracy is the baseline' },
    normalize: { type: 'enum', choices: ONNX_NORMALIZE_CHOICES, help: `with --init FILE.onnx: ${ONNX_NORMALIZE_HELP}` },
    resume: { type: 'boolean', help: 'continue the run in --out from its last checkpoint (same settings; --epochs may grow)' },
    plan: { type: 'string', placeholder: 'FILE', help: 'with --init: per-layer bit widths from a plan file (lowbit search) instead of --quant, calibrated on the float weights, then fine-tuned' },
    gradBits: { type: 'int', min: MIN_GRADIENT_BITS, max: MAX_GRADIENT_BITS, placeholder: 'K', help: 'quantize every parameter gradient to K bits before the optimizer step (QNN: per-tensor max scale, stochastic rounding; docs/adaste.md); image models, not the --baseline train run' },
    actGradBits: { type: 'int', min: STOCHASTIC_QUANTIZE_BITS.min, max: STOCHASTIC_QUANTIZE_BITS.max, placeholder: 'K', help: 'quantize the gradient entering every quantized layer\'s output to K bits in the backward pass (DoReFa / QNN W·A·G training: max-abs scale, unbiased stochastic rounding; docs/adaste.md); QAT image models, not the --baseline train run' },
    actGradScale: { type: 'enum', choices: ['tensor', 'sample'], default: 'tensor', help: 'with --act-grad-bits: one max-abs scale per tensor or per sample (DoReFa)' },
    actGradGrid: { type: 'enum', choices: ['dorefa', 'symmetric'], default: 'dorefa', help: 'with --act-grad-bits: DoReFa\'s 2^K levels without zero, or 2^K − 1 symmetric levels with zero' },
    precision: { type: 'enum', choices: PRECISIONS, default: 'fp32', help: 'mixed precision: matmuls and convolutions in fp16 (with loss scaling) or bf16, emulated (docs/lowp.md)' },
    workers: { type: 'int', positive: true, default: 1, help: 'data-parallel workers, simulated in-process (with --quant fp32 --optimizer sgd; docs/distributed.md)' },
    compress: { type: 'enum', choices: COMPRESSOR_NAMES, default: 'none', help: 'gradient exchange of data-parallel training: dense all-reduce or Deep Gradient Compression' },
    sparsity: { type: 'number', min: 0, max: 0.99999, default: DEFAULT_SPARSITY, help: 'final DGC sparsity (fraction of each gradient tensor not sent per step)' },
    threads: { type: 'boolean', default: false, help: 'with --workers: run each worker as a worker thread (1 kernel thread each) instead of in-process' },
    seqLen: { type: 'int', positive: true, max: LM_LIMITS.seqLen, help: `language models: words of context per sample (default: ${LM_DEFAULTS.seqLen})` },
    hidden: { type: 'int', positive: true, max: LM_LIMITS.hidden, help: `language models: LSTM/GRU width, transformer-lm MLP width (default: ${LM_DEFAULTS.hidden}; transformer-lm ${lmDefaultSizes('transformer-lm').hidden})` },
    embed: { type: 'int', positive: true, max: LM_LIMITS.embed, help: `language models: embedding width (default: ${LM_DEFAULTS.embed}; transformer-lm ${lmDefaultSizes('transformer-lm').embed})` },
    objective: { type: 'enum', choices: ['all', 'last'], help: 'language models: the training loss over every position of each window (all: transformer-lm only, its default, with 5 epochs and --window-stride = --seq-len unless given) or over the last position (last: the default of lstm-lm/gru-lm)' },
    windowStride: { type: 'int', positive: true, placeholder: 'K', help: 'language models: train on every K-th window only (K = --seq-len: non-overlapping windows; default 1, or --seq-len with --objective all)' },
    vocab: { type: 'int', min: 2, max: LM_LIMITS.vocab, help: `language models: at most this many words in the vocabulary, <unk> included (default: ${LM_DEFAULTS.vocab})` },
  },
  run(given, io) {
    useBackend(given.backend);
    // --sparsity has a default, so only a changed value can be told from an unused one.
    if (given.compress !== 'dgc' && given.sparsity !== DEFAULT_SPARSITY) throw new UsageError(`--sparsity applies to --compress dgc only (got --sparsity ${given.sparsity} with --compress ${given.compress})`, 'train');
    const model = given.model ?? 'lenet5';
    if (given.gradBits !== undefined && (isLmModelName(model) || wantsDataParallel(given))) {
      throw new UsageError(`--grad-bits applies to single-process image-model training (got --model ${model}${wantsDataParallel(given) ? ' with --workers/--compress' : ''})`, 'train');
    }
    if (given.actGradBits !== undefined && (isLmModelName(model) || wantsDataParallel(given))) {
      throw new UsageError(`--act-grad-bits applies to single-process image-model QAT (got --model ${model}${wantsDataParallel(given) ? ' with --workers/--compress' : ''})`, 'train');
    }
    if (given.actGradBits === undefined && (given.actGradScale !== 'tensor' || given.actGradGrid !== 'dorefa')) {
      throw new UsageError(`--act-grad-scale and --act-grad-grid apply with --act-grad-bits K only (got --act-grad-scale ${given.actGradScale} --act-grad-grid ${given.actGradGrid})`, 'train');
    }
    if (given.patience !== undefined && (isLmModelName(model) || wantsDataParallel(given))) {
      throw new UsageError(`--patience (early stopping) applies to single-process image-model training (got --model ${model}${wantsDataParallel(given) ? ' with --workers/--compress' : ''})`, 'train');
    }
    if (isLmModelName(model)) {
      const lr = given.lr ?? (given.optimizer === 'adam' || given.optimizer === 'adamw' ? LM_DEFAULTS.adamLr : DEFAULT_LR[given.optimizer]);
      const quantLrScale = given.quantLrScale ?? (model === 'transformer-lm' ? TRANSFORMER_LM_QUANT_LR_SCALE : DEFAULT_QUANT_LR_SCALE);
      const schedule = given.schedule;
      if (schedule === 'plateau') throw new UsageError(`--schedule plateau applies to single-process image-model training (got --model ${model})`, 'train');
      return trainLanguageModel({ ...given, schedule, model, lr, quantLrScale }, io);
    }
    // Image models: the language-model options and data are refused, the image defaults filled in.
    if ((given.minDelta !== undefined || given.restoreBest) && given.patience === undefined) throw new UsageError('--min-delta and --restore-best set up early stopping: pass --patience N too', 'train');
    const lmOnly = (['seqLen', 'hidden', 'embed', 'vocab', 'objective', 'windowStride'] as const).filter((k) => given[k] !== undefined);
    if (lmOnly.length > 0) throw new UsageError(`${lmOnly.map((k) => `--${flagName(k)}`).join(', ')} apply to language models (--model ${LM_MODEL_NAMES.join('|')}), not --model ${model}`, 'train');
    // --init FILE.onnx: a float32 ONNX image classifier (e.g. torch.onnx.export) is the model and its weights.
    const onnxInit = given.init !== undefined && isOnnxPath(given.init) ? loadOnnxImageModel(given.init, 'train: --init') : null;
    if (onnxInit && given.model !== undefined) throw new UsageError(`--model names a lowbit architecture; --init ${given.init} brings its own graph`, 'train');
    if (!onnxInit && given.normalize !== undefined) throw new UsageError('--normalize applies with --init FILE.onnx (lowbit architectures train on their dataset\'s normalisation)', 'train');
    if (onnxInit && wantsDataParallel(given)) throw new UsageError('--init FILE.onnx trains in one process: drop --workers / --compress', 'train');
    const dataset = onnxInit ? onnxDataset(onnxInit, given.dataset, (name) => loadDataset(name, 'train'), 'train') : given.dataset ?? 'mnist';
    if (!isDatasetName(dataset)) throw new UsageError(`--dataset ${dataset} is a text corpus: train a language model on it (--model ${LM_MODEL_NAMES.join('|')}); --model ${model} takes --dataset ${DATASET_NAMES.join('|')}`, 'train');
    const quantGiven = given.quant ?? 'w4a4';
    if (!isQuantChoice(quantGiven)) throw new UsageError(`--quant ${quantGiven} is a language-model scheme; image models take --quant ${QUANT_CHOICES.join('|')}`, 'train');
    const options = { ...given, model, dataset, quant: quantGiven, epochs: given.epochs ?? 4, batchSize: given.batchSize ?? 64, quantLrScale: given.quantLrScale ?? DEFAULT_QUANT_LR_SCALE };
    if (options.actGradBits !== undefined && options.quant === 'fp32' && options.plan === undefined) {
      throw new UsageError('--act-grad-bits quantizes the gradients at quantized layer outputs: it needs a QAT run (--quant other than fp32, or --plan)', 'train');
    }
    if (options.threads && !wantsDataParallel(options)) throw new UsageError('--threads runs data-parallel workers: pass --workers N (N > 1) or --compress', 'train');
    if (wantsDataParallel(options)) {
      if (options.precision !== 'fp32') throw new UsageError('--workers/--compress train with --precision fp32 only', 'train');
      const schedule = options.schedule;
      if (schedule === 'plateau') throw new UsageError(`--schedule plateau applies to single-process image-model training (got --model ${model} with --workers/--compress)`, 'train');
      return trainDataParallel({ ...options, schedule }, io);
    }
    // A batch job: major GCs only when memory really grows (see preferThroughputGc).
    preferThroughputGc();
    const lr = options.lr ?? DEFAULT_LR[options.optimizer];
    const quant: QuantChoice = options.quant;
    // --plan: a searched plan (per-layer widths) replaces --quant for this run.
    const planFile = options.plan === undefined ? null : loadPlanFile(options.plan);
    const modelTag = onnxInit ? basename(onnxInit.file).replace(/\.onnx$/i, '') : options.model;
    const outFor = (q: QuantChoice): string => options.out !== undefined && q === quant ? options.out : join('runs', `${modelTag}-${options.dataset}-${planFile && q === quant ? 'plan' : q}${q === quant && options.precision !== 'fp32' ? `-${options.precision}` : ''}`);

    // --init: the float32 run the QAT run starts from (same architecture).
    const init = options.init === undefined || onnxInit ? null : locateFloatRun(options.init, {}, 'train', 'fine-tuning with --init', '--init');
    if (init && init.arch !== options.model) throw new UsageError(`--init: '${init.checkpoint}' is a ${init.arch}, not a ${options.model} (pass --model ${init.arch})`, 'train');
    if (init && init.dataset !== options.dataset) {
      // Its accuracy is this run's baseline and the plan of --plan is calibrated for it: the data must be the same.
      throw new UsageError(`--init: '${init.checkpoint}' was trained on ${init.dataset}, this run would train on ${options.dataset} (pass --dataset ${init.dataset})`, 'train');
    }
    if (init && options.baseline === 'train') throw new UsageError('--init and --baseline train do not go together: the --init run is the baseline', 'train');
    if (onnxInit && options.baseline === 'train') throw new UsageError('--init FILE.onnx and --baseline train do not go together: the ONNX model is the baseline', 'train');
    if (planFile && !init && !onnxInit) throw new UsageError('--plan needs --init RUN: a plan is calibrated on trained float32 weights, then fine-tuned', 'train');
    // --quant / --estimator combinations, checked before any work (a --baseline train run included).
    if (!planFile) {
      try {
        qatFromCliOptions({ quant, estimator: options.estimator });
      } catch (e) {
        throw new UsageError((e as Error).message, 'train');
      }
    }

    const fullTrain = loadDataset(options.dataset, 'train');
    const fullTest = loadDataset(options.dataset, 'test');
    const trainSet = options.limit === undefined ? fullTrain : take(fullTrain, options.limit);
    const testSet = options.testLimit === undefined ? fullTest : take(fullTest, options.testLimit);
    const onnxScaling = onnxInit ? onnxNormalize(onnxInit, options.normalize ?? 'auto', options.dataset) : null;
    const normalize = onnxScaling ? onnxScaling.stats : DATASET_STATS[options.dataset];
    const scaling = normalize ? { normalize } : {};
    const backend = backendDetails();
    // The ONNX graph: the checked import for the first model, a fresh import of the file for any other.
    const onnxModel = onnxInit ? onnxBuilder(onnxInit, 'train: --init') : null;

    /** One training run with the command's settings and the given quantization. */
    const trainOnce = (q: QuantChoice, out: string): { accuracy: number | null; seconds: number } => {
      const trainLoader = new DataLoader(trainSet, { batchSize: options.batchSize, shuffle: true, seed: options.seed, ...scaling });
      const testLoader = new DataLoader(testSet, { batchSize: 256, ...scaling });
      manualSeed(options.seed);
      const model = onnxModel ? onnxModel() : createModel(options.model, { numClasses: trainSet.numClasses });
      model.train();
      if (init) model.loadStateDict(init.weights());
      const usePlan = planFile !== null && q === quant;
      const quantPlan = usePlan ? planFile.plan : qatFromCliOptions({ quant: q, estimator: q === 'fp32' ? undefined : options.estimator });
      // A searched plan holds calibrated ('static') quantizers: calibrate them on the float weights
      // (512 training images), then fine-tune through them like any QAT run.
      if (usePlan) calibrate(model, new DataLoader(trainSet, { batchSize: 128, shuffle: true, seed: options.seed, ...scaling }), { plan: planFile.plan, samples: 512 });
      else if (quantPlan) prepareQat(model, quantPlan);
      const groups = qatParamGroups(model, { lr, quantLrScale: options.quantLrScale, weightDecay: options.weightDecay });
      const optimizer = createOptimizer(options.optimizer, groups, options.optimizer === 'sgd'
        ? { lr, momentum: options.momentum, weightDecay: options.weightDecay }
        : { lr, weightDecay: options.weightDecay });
      let scheduler: EpochScheduler | undefined;
      let plateau: ReduceLROnPlateau | undefined;
      if (options.schedule === 'cosine') scheduler = new CosineAnnealingLR(optimizer, { tMax: options.epochs });
      else if (options.schedule === 'step') scheduler = new StepLR(optimizer, { stepSize: Math.max(1, Math.round(options.epochs / 3)), gamma: 0.1 });
      else if (options.schedule === 'plateau') plateau = new ReduceLROnPlateau(optimizer, { factor: 0.1, patience: 1 });

      // --precision and --grad-bits apply to the run asked for, not to a --baseline train run beside it.
      const precision: Precision = q === quant ? options.precision : 'fp32';
      const gradBits = q === quant ? options.gradBits : undefined;
      const actGrad: ActivationGradientOptions | undefined = q === quant && options.actGradBits !== undefined
        ? { bits: options.actGradBits, granularity: options.actGradScale, grid: options.actGradGrid, seed: options.seed }
        : undefined;
      if (actGrad) quantizeActivationGradients(model, actGrad);
      const stepper = gradBits === undefined ? optimizer : withQuantizedGradients(optimizer, { bits: gradBits, seed: options.seed });
      const scaler = precision === 'fp16' ? new GradScaler() : null;
      const config = {
        ...options, quant: q, precision, gradBits, actGradBits: actGrad?.bits, actGradScale: actGrad?.granularity, actGradGrid: actGrad?.grid, lr, out, backend: backend.active,
        // An ONNX run: later commands re-import the file for the graph, and feed its input scaling.
        ...(onnxInit ? { model: 'onnx', onnx: resolve(onnxInit.file), normalize: normalize ?? { mean: 0, std: 1 } } : {}),
        ...(usePlan ? { planFile: options.plan, plan: planFile.plan, assignment: planFile.assignment } : {}) };
      // --resume: the run's last checkpoint, taken with the same settings (only --epochs may differ).
      const resumed = options.resume && q === quant ? resumeState(join(out, 'checkpoint.safetensors'), config, options.epochs, RESUME_KEYS, { precision: 'fp32' /* runs from before --precision trained in fp32 */ }) : null;
      if (resumed) {
        model.loadStateDict(resumed.model);
        optimizer.loadStateDict(resumed.optimizer);
        for (let e = 0; e < resumed.epoch; e++) scheduler?.step();
        // The plateau schedule's counters come from the checkpoint (its lr from the optimizer state).
        if (plateau) {
          if (resumed.scheduler === null) throw new UsageError(`--resume: '${join(out, 'checkpoint.safetensors')}' holds no --schedule plateau state`, 'train');
          plateau.loadStateDict(resumed.scheduler as ReduceLROnPlateauState);
        }
        if (resumed.earlyStopped !== null) io.print(`  note       the run had stopped early after epoch ${resumed.earlyStopped}; it continues with the same early-stopping counters`);
        trainLoader.setEpoch(resumed.epoch);
        if (scaler && resumed.scaler !== null) scaler.loadStateDict(resumed.scaler);
      }
      const optimizerText = `${options.optimizer} lr ${lr}${options.optimizer === 'sgd' ? ` momentum ${options.momentum}` : ''}` +
        `${options.weightDecay > 0 ? ` weight decay ${options.weightDecay}` : ''}, ${options.schedule} schedule` +
        `${quantPlan ? `, quantizer params at ${options.quantLrScale}x lr` : ''}`;
      const rows: [string, string][] = [
        ['model', `${onnxInit ? `ONNX graph of ${onnxInit.file} (opset ${onnxInit.opset}, ${onnxInit.producer})` : options.model}, ${model.numParameters().toLocaleString('en-US')} parameters`],
        ...(onnxScaling ? [['input', onnxScaling.label] as [string, string]] : []),
        ['quant', usePlan ? `plan ${options.plan}${planFile.assignment ? `: ${formatAssignment(planFile.assignment)}` : ''}`
          : q === 'fp32' ? 'fp32 (none)' : `${q}, ${options.estimator ?? defaultEstimator(q)} estimator`],
        ...(precision === 'fp32' ? [] : [['precision', `${precision} matmuls and convolutions (emulated)${scaler ? `, loss scaling from ${scaler.getScale()}` : ''}`] as [string, string]]),
        ['data', `${options.dataset}: ${trainSet.length} train / ${testSet.length} test samples, batch ${options.batchSize}`],
        ['optimizer', `${optimizerText}, ${options.epochs} epoch${options.epochs === 1 ? '' : 's'}, seed ${options.seed}`],
        ...(gradBits === undefined ? [] : [['gradients', `${gradBits}-bit parameter gradients (per-tensor max scale, stochastic rounding)`] as [string, string]]),
        ...(actGrad === undefined ? [] : [['act grads', `${actGrad.bits}-bit gradients at every quantized layer output (per-${actGrad.granularity} max scale, ${actGrad.grid === 'dorefa' ? 'DoReFa' : 'symmetric'} grid, stochastic rounding)`] as [string, string]]),
        ...(options.patience === undefined ? [] : [['stopping', `early stopping on the test loss, patience ${options.patience}${options.minDelta ? `, min delta ${options.minDelta}` : ''}${options.restoreBest ? ', best weights restored at the end' : ''}`] as [string, string]]),
        ['backend', describeBackend(backend)],
        ...(init || onnxInit ? [['init', `weights of ${init ? init.checkpoint : onnxInit!.file}`] as [string, string]] : []),
        ...(resumed ? [['resume', `from epoch ${resumed.epoch} of ${join(out, 'checkpoint.safetensors')}`] as [string, string]] : []),
        ['output', out],
      ];
      io.print(`lowbit train`);
      for (const [k, v] of rows) io.print(`  ${k.padEnd(9)}  ${v}`);
      if (quantPlan) io.print(formatQuantTable(quantizedLayers(model)).replace(/^/gm, '  '));
      if (quantPlan) setQuantProgress(model, resumed?.epoch ?? 0, options.epochs);

      const checkpointPath = join(out, 'checkpoint.safetensors');
      if (!resumed && existsSync(join(out, 'metrics.json'))) io.print(`  note       replacing the earlier run in ${out} (--out DIR keeps it)`);
      makeDirs(out);
      const start = performance.now();
      const history = fit(model, {
        trainLoader,
        testLoader,
        optimizer: stepper,
        scheduler: plateau ?? scheduler,
        epochs: options.epochs,
        precision,
        ...(scaler ? { scaler } : {}),
        ...(resumed ? { initialEpoch: resumed.epoch, history: resumed.history } : {}),
        ...(options.patience === undefined ? {} : {
          earlyStopping: {
            monitor: 'val_loss' as const, patience: options.patience, minDelta: options.minDelta ?? 0, restoreBestWeights: options.restoreBest ?? false,
            ...(resumed?.bestWeights ? { bestWeights: resumed.bestWeights } : {}),
          },
        }),
        progress: options.progress,
        progressStream: io.stderr,
        checkpoint: { path: checkpointPath },
        config,
        log: (line) => io.print(line),
        onEpochEnd: quantPlan ? (record) => setQuantProgress(model, record.epoch, options.epochs) : undefined,
      });
      const totalSeconds = (performance.now() - start) / 1000;
      // With --restore-best the model holds the best epoch's weights: report that epoch.
      const restored = history.earlyStopping?.restoredEpoch ?? null;
      const last = restored === null ? history.epochs.at(-1) : history.epochs.find((r) => r.epoch === restored);
      const metrics = {
        config,
        backend,
        parameters: model.numParameters(),
        trainSamples: trainSet.length,
        testSamples: testSet.length,
        testAccuracy: last?.testAccuracy ?? null,
        testLoss: last?.testLoss ?? null,
        ...(history.earlyStopping ? { earlyStopping: history.earlyStopping, reportedEpoch: last?.epoch ?? null } : {}),
        totalSeconds,
        history,
        ...(scaler ? { lossScaler: scaler.stateDict() } : {}),
      };
      const metricsPath = join(out, 'metrics.json');
      writeFileAtomic(metricsPath, new TextEncoder().encode(`${JSON.stringify(metrics, null, 2)}\n`));
      if (scaler) io.print(`loss scaling: ${scaler.skippedSteps} of ${history.stepLosses.length} steps skipped (Inf/NaN gradients), final scale ${scaler.getScale()}`);
      io.print(`wrote ${checkpointPath} and ${metricsPath} (${totalSeconds.toFixed(1)} s)`);
      return { accuracy: last?.testAccuracy ?? null, seconds: totalSeconds };
    };

    let baseline: Baseline | null = null;
    if (quant !== 'fp32' && options.baseline === 'train') {
      // Inside this run's folder: a baseline trained with this run's settings (--limit, --epochs ...)
      // must not replace the float32 run other commands find at the default fp32 location.
      const fp32 = trainOnce('fp32', join(outFor(quant), 'baseline-fp32'));
      if (fp32.accuracy !== null) baseline = { accuracy: fp32.accuracy, source: `trained now with the same settings (${fp32.seconds.toFixed(1)} s)` };
    }
    const result = trainOnce(quant, outFor(quant));
    if (quant !== 'fp32' && options.baseline === 'stored') {
      baseline = onnxInit && onnxModel
        ? { accuracy: evaluate(onnxModel(), new DataLoader(testSet, { batchSize: 256, ...scaling })).accuracy, source: `${onnxInit.file} as imported, same test images` }
        : storedBaseline(options.model, options.dataset, init ? dirname(init.checkpoint) : outFor('fp32'));
      // With --init the baseline is the very run this one starts from: no recipe to compare.
      const sameRecipe = init !== null || onnxInit !== null || (baseline?.epochs === options.epochs && options.limit === undefined && options.testLimit === undefined);
      if (baseline && !sameRecipe) baseline = { ...baseline, source: `${baseline.source}; not the same recipe as this run` };
    }
    if (result.accuracy === null) return;
    io.print(`test accuracy: ${formatPercent(result.accuracy)}`);
    if (quant === 'fp32' || options.baseline === 'none') return;
    if (baseline) {
      const delta = (result.accuracy - baseline.accuracy) * 100;
      io.print(`fp32 baseline: ${formatPercent(baseline.accuracy)} (${baseline.source}); ${planFile ? 'plan' : quant} - fp32 = ${delta >= 0 ? '+' : ''}${delta.toFixed(2)} pt`);
    } else {
      io.print(`fp32 baseline: none stored for ${options.model} on ${options.dataset} (run with --quant fp32 or --baseline train)`);
    }
  },
});

function isQuantChoice(name: string): name is QuantChoice {
  return (QUANT_CHOICES as readonly string[]).includes(name);
}

/** Settings that must match for --resume (everything that shapes the training trajectory except --epochs). */
const RESUME_KEYS = ['model', 'dataset', 'quant', 'estimator', 'plan', 'optimizer', 'lr', 'momentum', 'weightDecay', 'schedule', 'batchSize', 'seed', 'limit', 'quantLrScale', 'init', 'precision', 'gradBits', 'actGradBits', 'actGradScale', 'actGradGrid', 'patience', 'minDelta', 'restoreBest', 'testLimit'] as const;

interface Baseline {
  accuracy: number;
  source: string;
  /** Epochs of the stored run, when known. */
  epochs?: number;
}

/**
 * A stored fp32 accuracy for (model, dataset): the metrics.json of a previous `--quant fp32` run
 * in `fp32Dir`, else the fp32 row of the documented QAT results (docs/results/qat.json).
 */
function storedBaseline(model: string, dataset: string, fp32Dir: string): Baseline | null {
  const metricsPath = join(fp32Dir, 'metrics.json');
  if (existsSync(metricsPath)) {
    try {
      const metrics = JSON.parse(readTextLimited(metricsPath)) as { testAccuracy?: unknown; testSamples?: unknown; config?: { epochs?: unknown } };
      if (typeof metrics.testAccuracy === 'number') {
        const epochs = typeof metrics.config?.epochs === 'number' ? metrics.config.epochs : undefined;
        const full = metrics.testSamples === 10000 && metrics.config !== undefined && (metrics.config as { limit?: unknown }).limit === undefined;
        return {
          accuracy: metrics.testAccuracy,
          source: `stored: ${metricsPath}, ${String(epochs)} epochs, ${String(metrics.testSamples)} test samples`,
          epochs: full ? epochs : undefined,
        };
      }
    } catch {
      // An unreadable file is no baseline; fall through to the documented one.
    }
  }
  const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'docs', 'results', 'qat.json');
  if (!existsSync(resultsPath)) return null;
  try {
    const results = JSON.parse(readTextLimited(resultsPath)) as { runs?: { spec?: { model?: string; dataset?: string; scheme?: string; epochs?: number }; status?: string; accuracy?: number }[] };
    const row = results.runs?.find((r) => r.spec?.model === model && r.spec.dataset === dataset && r.spec.scheme === 'fp32' && r.status === 'ok' && typeof r.accuracy === 'number');
    if (!row) return null;
    return { accuracy: row.accuracy!, source: `stored: docs/results/qat.json, ${row.spec!.epochs} epochs on the full data`, epochs: row.spec!.epochs };
  } catch {
    return null;
  }
}
