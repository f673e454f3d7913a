import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DATASET_NAMES, DATASET_STATS, DataLoader, loadDataset, take } from '../../data/index.ts';
import { createModel, MODEL_NAMES } from '../../nn/index.ts';
import { CosineAnnealingLR, createOptimizer, OPTIMIZER_NAMES, StepLR, type OptimizerName } from '../../optim/index.ts';
import { manualSeed } from '../../tensor/index.ts';
import { fit, formatPercent, type EpochScheduler } from '../../train/index.ts';
import { writeFileAtomic } from '../../format/index.ts';
import { defineCommand } from '../command.ts';
import { BACKEND_CHOICES, backendDetails, describeBackend, useBackend } from '../backend-info.ts';
import { formatQuantTable, prepareQat, qatFromCliOptions, quantCliOptions, quantizedLayers, setQuantProgress } from '../../quant/qat/index.ts';

/** Learning rate used when `--lr` is not given. */
// Adam at 2e-3 with cosine decay over 4 epochs: LeNet-5 on MNIST reached 99.12 % / 99.05 % test
// accuracy with seeds 0 / 1 (1e-3 gave 98.95 % / 98.92 %).
const DEFAULT_LR: Record<OptimizerName, number> = { sgd: 0.05, adam: 2e-3, adamw: 2e-3 };

export const trainCommand = defineCommand({
  name: 'train',
  summary: 'train a float32 model on an image dataset',
  description: [
    'Trains with a per-epoch learning-rate schedule, evaluates on the test split after every',
    'epoch, writes <out>/checkpoint.safetensors after every epoch and <out>/metrics.json at the',
    'end. The defaults (LeNet-5, MNIST, Adam 2e-3 with cosine decay, 4 epochs, batch 64) reach',
    'about 99 % test accuracy.',
  ].join('\n'),
  examples: [
    'lowbit train',
    'lowbit train --model mlp --dataset fashion-mnist --epochs 10 --optimizer sgd --lr 0.05',
    'lowbit train --limit 2048 --epochs 1 --no-progress   # a quick try',
  ],
  options: {
    model: { type: 'enum', choices: MODEL_NAMES, default: 'lenet5', help: 'model architecture' },
    dataset: { type: 'enum', choices: DATASET_NAMES, default: 'mnist', help: 'dataset' },
    epochs: { type: 'int', positive: true, default: 4, help: 'passes over the training set' },
    batchSize: { type: 'int', positive: true, default: 64, help: 'samples per step' },
    optimizer: { type: 'enum', choices: OPTIMIZER_NAMES, default: 'adam', help: 'optimizer' },
    lr: { type: 'number', positive: true, placeholder: 'LR', help: 'learning rate (default: 0.002 for adam/adamw, 0.05 for sgd)' },
    momentum: { type: 'number', min: 0, max: 1, default: 0.9, help: 'SGD momentum' },
    weightDecay: { type: 'number', min: 0, default: 0, help: 'weight decay (L2 for sgd/adam, decoupled for adamw)' },
    schedule: { type: 'enum', choices: ['cosine', 'step', 'none'], default: 'cosine', help: 'per-epoch learning-rate schedule (step: x0.1 every third of the epochs)' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of initialisation and shuffling' },
    out: { type: 'string', placeholder: 'DIR', help: 'output directory (default: runs/<model>-<dataset>)' },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend (default: native when the addon loads)' },
    limit: { type: 'int', positive: true, help: 'train on the first N training samples only' },
    testLimit: { type: 'int', positive: true, help: 'evaluate on the first N test samples only' },
    progress: { type: 'boolean', default: true, help: 'hide the progress bar' },
    quant: quantCliOptions.quant,
    estimator: quantCliOptions.estimator,
  },
  run(options, io) {
    useBackend(options.backend);
    const lr = options.lr ?? DEFAULT_LR[options.optimizer];
    const out = options.out ?? join('runs', `${options.model}-${options.dataset}`);

    const fullTrain = loadDataset(options.dataset, 'train');
    const fullTest = loadDataset(options.dataset, 'test');
    const trainSet = options.limit === undefined ? fullTrain : take(fullTrain, options.limit);
    const testSet = options.testLimit === undefined ? fullTest : take(fullTest, options.testLimit);
    const normalize = DATASET_STATS[options.dataset];
    const trainLoader = new DataLoader(trainSet, { batchSize: options.batchSize, shuffle: true, seed: options.seed, normalize });
    const testLoader = new DataLoader(testSet, { batchSize: 256, normalize });

    manualSeed(options.seed);
    const model = createModel(options.model, { numClasses: trainSet.numClasses });
    const quantPlan = qatFromCliOptions({ quant: options.quant, estimator: options.estimator });
    if (quantPlan) prepareQat(model, quantPlan);
    const optimizer =
      options.optimizer === 'sgd'
        ? createOptimizer('sgd', model.parameters(), { lr, momentum: options.momentum, weightDecay: options.weightDecay })
        : createOptimizer(options.optimizer, model.parameters(), { lr, weightDecay: options.weightDecay });
    let scheduler: EpochScheduler | undefined;
    if (options.schedule === 'cosine') scheduler = new CosineAnnealingLR(optimizer, { tMax: options.epochs });
    else if (options.schedule === 'step') scheduler = new StepLR(optimizer, { stepSize: Math.max(1, Math.round(options.epochs / 3)), gamma: 0.1 });

    const backend = backendDetails();
    const config = { ...options, lr, out, backend: backend.active };
    const optimizerText = `${options.optimizer} lr ${lr}${options.optimizer === 'sgd' ? ` momentum ${options.momentum}` : ''}` +
      `${options.weightDecay > 0 ? ` weight decay ${options.weightDecay}` : ''}, ${options.schedule} schedule`;
    const rows: [string, string][] = [
      ['model', `${options.model}, ${model.numParameters().toLocaleString('en-US')} parameters`],
      ['data', `${options.dataset}: ${trainSet.length} train / ${testSet.length} test samples, batch ${options.batchSize}`],
      ['optimizer', `${optimizerText}, ${options.epochs} epoch${options.epochs === 1 ? '' : 's'}, seed ${options.seed}`],
      ['backend', describeBackend(backend)],
      ['output', out],
    ];
    io.print(`lowbit train`);
    for (const [k, v] of rows) io.print(`  ${k.padEnd(9)}  ${v}`);
    if (quantPlan) io.print(formatQuantTable(quantizedLayers(model)).replace(/^/gm, '  '));
    if (quantPlan) setQuantProgress(model, 0, options.epochs);

    mkdirSync(out, { recursive: true });
    const checkpointPath = join(out, 'checkpoint.safetensors');
    const start = performance.now();
    const history = fit(model, {
      trainLoader,
      testLoader,
      optimizer,
      scheduler,
      epochs: options.epochs,
      progress: options.progress,
      progressStream: io.stderr,
      checkpoint: { path: checkpointPath },
      config,
      log: (line) => io.print(line),
      onEpochEnd: quantPlan ? (record) => setQuantProgress(model, record.epoch, options.epochs) : undefined,
    });
    const totalSeconds = (performance.now() - start) / 1000;
    const last = history.epochs.at(-1);
    const metrics = {
      config,
      backend,
      parameters: model.numParameters(),
      trainSamples: trainSet.length,
      testSamples: testSet.length,
      testAccuracy: last?.testAccuracy ?? null,
      testLoss: last?.testLoss ?? null,
      totalSeconds,
      history,
    };
    const metricsPath = join(out, 'metrics.json');
    writeFileAtomic(metricsPath, new TextEncoder().encode(`${JSON.stringify(metrics, null, 2)}\n`));
    io.print(`wrote ${checkpointPath} and ${metricsPath} (${totalSeconds.toFixed(1)} s)`);
    if (last?.testAccuracy !== undefined) io.print(`test accuracy: ${formatPercent(last.testAccuracy)}`);
  },
});
