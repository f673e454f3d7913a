import { DATASET_NAMES, DATASET_STATS, DataLoader, loadDataset, take, type DatasetName } from '../../data/index.ts';
import { createModel, MODEL_NAMES, type ModelName } from '../../nn/index.ts';
import { writeFileAtomic } from '../../format/index.ts';
import { bitOpsCost, sizeCost } from '../../quant/search/costs.ts';
import { expandModel, nceSearch } from '../../quant/nce/index.ts';
import { BACKEND_CHOICES, useBackend } from '../backend-info.ts';
import { defineCommand } from '../command.ts';
import { checkOutputFile } from '../inputs.ts';

const DEFAULT_DATASET: Record<ModelName, DatasetName> = { lenet5: 'mnist', mlp: 'mnist', cnn: 'fashion-mnist', resnet8: 'fashion-mnist', mobilenet: 'fashion-mnist' };

export const nceCommand = defineCommand({
  name: 'nce',
  summary: 'neural channel expansion: search per-layer channel widths under uniform W2A2 QAT within a params/FLOPs budget',
  description: [
    'Builds the widest supernet of the model (each Conv2d/Linear but the output layer at 0.5-2x its',
    'width, realised by channel masks), prepares it for uniform W2A2 LSQ QAT and trains weights and',
    'architecture logits together, with the expected weight count (--budget params) or MACs (flops)',
    'held at --budget-ratio times the original model\'s. Prints the chosen widths (never over budget)',
    'and their cost; --json writes them with the search details. Build the network with',
    'quant.nce.expandModel(model, inputShape, widths). See docs/nce.md.',
  ].join('\n'),
  examples: [
    'lowbit nce --model lenet5 --steps 300 --limit 20000 --json lenet5-widths.json',
    'lowbit nce --model cnn --budget flops --budget-ratio 0.8 --steps 200',
  ],
  options: {
    model: { type: 'enum', choices: MODEL_NAMES, default: 'lenet5', help: 'model whose widths are searched' },
    dataset: { type: 'enum', choices: DATASET_NAMES, help: 'training data (default: mnist, fashion-mnist for cnn)' },
    steps: { type: 'int', positive: true, default: 300, help: 'search steps (batch 64; the first quarter trains weights only)' },
    budget: { type: 'enum', choices: ['params', 'flops'] as const, default: 'params', help: 'what the budget constrains: weight count or MACs' },
    budgetRatio: { type: 'number', positive: true, default: 1, help: 'budget as a multiple of the original model\'s cost' },
    limit: { type: 'int', positive: true, help: 'use the first N training images only' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of the supernet weights and the data order' },
    json: { type: 'string', placeholder: 'FILE', help: 'also write the result as JSON to FILE' },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend: reference, native or wasm (default: native when the addon loads)' },
    progress: { type: 'boolean', default: true, help: 'hide the progress bar' },
  },
  async run(options, io) {
    if (options.json !== undefined) checkOutputFile(options.json, 'nce: --json');
    useBackend(options.backend);
    const modelName: ModelName = options.model;
    const dataset: DatasetName = options.dataset ?? DEFAULT_DATASET[modelName];
    const all = loadDataset(dataset, 'train');
    const train = options.limit === undefined ? all : take(all, Math.min(options.limit, all.length));
    const inputShape = [1, 28, 28];
    const model = createModel(modelName);
    io.print(`lowbit nce  ${modelName} on ${dataset} (${train.length} training images), uniform W2A2 LSQ, budget ${options.budgetRatio} x the ${options.budget} of ${modelName}`);
    const result = await nceSearch(model, {
      inputShape,
      // Full batches only (when there are 64 images or more): a last batch of one image fails in BatchNorm (cnn).
      train: new DataLoader(train, { batchSize: 64, shuffle: true, seed: options.seed, normalize: DATASET_STATS[dataset], dropLast: train.length >= 64 }),
      steps: options.steps,
      cost: options.budget === 'params' ? sizeCost() : bitOpsCost(),
      budgetRatio: options.budgetRatio,
      seed: options.seed,
      progress: options.progress,
    });
    const unit = options.budget === 'params' ? 'weights' : 'MACs';
    io.print(`${'layer'.padEnd(16)}  ${'original'.padStart(8)}  ${'chosen'.padStart(8)}  candidates`);
    for (const [name, width] of Object.entries(result.widths)) {
      io.print(`${name.padEnd(16)}  ${String(result.baseWidths[name]).padStart(8)}  ${String(width).padStart(8)}  ${result.candidates[name]!.join(', ')}`);
    }
    io.print(`cost ${result.cost} ${unit} (budget ${result.budget}, original ${result.baseCost})`);
    const expanded = expandModel(model, inputShape, result.widths);
    io.print(`expanded model: ${expanded.parameters().reduce((s, p) => s + p.size, 0)} parameters (original ${model.parameters().reduce((s, p) => s + p.size, 0)})`);
    if (options.json !== undefined) {
      const out = { model: modelName, dataset, trainImages: train.length, budgetMetric: options.budget, budgetRatio: options.budgetRatio, seed: options.seed, ...result };
      writeFileAtomic(options.json, new TextEncoder().encode(`${JSON.stringify(out, null, 2)}\n`));
      io.print(`wrote ${options.json}`);
    }
  },
});
