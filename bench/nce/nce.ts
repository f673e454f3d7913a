/**
 * Neural channel expansion (src/quant/nce) against the baseline architecture at uniform W2A2
 * (LSQ, first and last layers 8-bit as qconfigFor's plan default), under the SAME budget:
 *  - baseline: the model as defined, QAT from scratch for --epochs epochs;
 *  - NCE: nceSearch (W2A2 supernet, --search-steps steps) with the budget = the baseline's cost
 *    (--budget params: weight count; flops: MACs), then the found architecture trained from scratch
 *    with the same recipe (Adam lr 1e-3, cosine to 0, batch 64, same data, same seed; the kept
 *    channels start from the baseline's initial weights, new channels are drawn fresh).
 * LeNet-5 on MNIST and the CNN on Fashion-MNIST; test accuracy on the full test set.
 *
 *   LOWBIT_THREADS=1 nice -n 10 node --import tsx bench/nce/nce.ts [--models lenet5,cnn] [--seeds 0]
 *       [--epochs 2] [--train 20000] [--search-steps 300] [--budget params|flops] [--out docs/results/nce.json]
 *
 * Writes the JSON (merged per model, budget and seed) and prints a markdown table.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.LOWBIT_THREADS ??= '1';

const { DATASET_STATS, DataLoader, loadDataset, subset } = await import('../../src/data/index.ts');
const { createModel } = await import('../../src/nn/models/index.ts');
const { Adam, CosineAnnealingLR } = await import('../../src/optim/index.ts');
const { manualSeed } = await import('../../src/tensor/index.ts');
const { fit, evaluate } = await import('../../src/train/fit.ts');
const { writeFileAtomic } = await import('../../src/format/files.ts');
const { prepareQat } = await import('../../src/quant/qat/index.ts');
const { qconfigFor } = await import('../../src/quant/config/qconfig.ts');
const { sizeCost, bitOpsCost } = await import('../../src/quant/search/costs.ts');
const { nceSearch, expandModel, architectureCost, modelChain } = await import('../../src/quant/nce/index.ts');
import type { TensorModule } from '../../src/nn/module.ts';
import { flagOr, numberFlag } from '../flags.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '..', '..');
const MODELS = flagOr('models', 'lenet5,cnn').split(',');
const SEEDS = flagOr('seeds', '0').split(',').map(Number);
const EPOCHS = numberFlag('epochs', 2, { integer: true, min: 1 });
const TRAIN = numberFlag('train', 20000, { integer: true, min: 64 });
const SEARCH_STEPS = numberFlag('search-steps', 300, { integer: true, min: 2 });
const BUDGET = flagOr('budget', 'params');
if (BUDGET !== 'params' && BUDGET !== 'flops') throw new Error(`--budget must be params or flops, got '${BUDGET}'`);
const OUT = resolve(ROOT, flagOr('out', 'docs/results/nce.json'));
const COMMAND = `node --import tsx bench/nce/nce.ts ${process.argv.slice(2).join(' ')}`.trim();
const SHAPE = [1, 28, 28];
const log = (s: string): void => void process.stdout.write(`${s}\n`);

const SETUPS: Record<string, { model: 'lenet5' | 'cnn'; dataset: 'mnist' | 'fashion-mnist' }> = {
  lenet5: { model: 'lenet5', dataset: 'mnist' },
  cnn: { model: 'cnn', dataset: 'fashion-mnist' },
};

interface Arm {
  readonly testAccuracy: number;
  /** Weight count of the Conv2d / Linear layers (the params budget metric). */
  readonly weights: number;
  /** Every trainable parameter of the float model (biases and BN included). */
  readonly parameters: number;
  /** MACs per sample of the Conv2d / Linear layers. */
  readonly macs: number;
  readonly widths: Record<string, number>;
  readonly trainSeconds: number;
}

function trainArm(model: TensorModule, setup: { dataset: 'mnist' | 'fashion-mnist' }, seed: number): { accuracy: number; seconds: number } {
  const norm = DATASET_STATS[setup.dataset];
  const train = subset(loadDataset(setup.dataset, 'train'), 0, TRAIN);
  const test = loadDataset(setup.dataset, 'test');
  prepareQat(model, { default: qconfigFor('w2a2', 'lsq') });
  const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
  const history = fit(model, {
    trainLoader: new DataLoader(train, { batchSize: 64, shuffle: true, seed, normalize: norm }),
    optimizer,
    scheduler: new CosineAnnealingLR(optimizer, { tMax: EPOCHS }),
    epochs: EPOCHS,
    seed,
    progress: false,
    log: (line) => log(`    ${line}`),
  });
  const result = evaluate(model, new DataLoader(test, { batchSize: 500, normalize: norm }));
  return { accuracy: result.accuracy, seconds: history.epochs.reduce((s, e) => s + e.seconds, 0) };
}

function describe(model: TensorModule, widths: Record<string, number>): Pick<Arm, 'weights' | 'parameters' | 'macs'> {
  const chain = modelChain(model, SHAPE);
  const built = expandModel(model, SHAPE, widths);
  return {
    weights: architectureCost(sizeCost(), chain, widths),
    parameters: built.parameters().reduce((s, p) => s + p.size, 0),
    macs: architectureCost(bitOpsCost(), chain, widths),
  };
}

type Results = Record<string, { command: string; date: string; epochs: number; train: number; searchSteps: number; baseline: Arm; nce: Arm; search: unknown }>;
const results: Results = existsSync(OUT) ? (JSON.parse(readFileSync(OUT, 'utf8')) as Results) : {};

for (const name of MODELS) {
  const setup = SETUPS[name];
  if (!setup) throw new Error(`unknown model '${name}' (known: ${Object.keys(SETUPS).join(', ')})`);
  for (const seed of SEEDS) {
    log(`== ${name} / ${setup.dataset}, seed ${seed}, ${EPOCHS} epochs on ${TRAIN} images, budget = baseline ${BUDGET}`);
    // Baseline.
    manualSeed(seed);
    const baseModel = createModel(setup.model);
    const baseDescription = describe(baseModel, {});
    const base = trainArm(baseModel, setup, seed);
    log(`  baseline W2A2: ${(base.accuracy * 100).toFixed(2)} %`);

    // Search.
    const norm = DATASET_STATS[setup.dataset];
    const searchLoader = new DataLoader(subset(loadDataset(setup.dataset, 'train'), 0, TRAIN), { batchSize: 64, shuffle: true, seed: seed + 1000, normalize: norm });
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const found = await nceSearch(createModel(setup.model), {
      inputShape: SHAPE, train: searchLoader, steps: SEARCH_STEPS, seed, progress: true,
      cost: BUDGET === 'params' ? sizeCost() : bitOpsCost(),
    });
    const cpu = process.cpuUsage(cpu0);
    const searchSeconds = (performance.now() - t0) / 1000;
    log(`  search (${SEARCH_STEPS} steps, ${searchSeconds.toFixed(0)} s wall, ${((cpu.user + cpu.system) / 1e6).toFixed(0)} s CPU): ${JSON.stringify(found.widths)} (argmax ${JSON.stringify(found.argmaxWidths)}), cost ${found.cost} / budget ${found.budget}`);

    // The found architecture from scratch, same recipe and seed: the baseline's initial weights on
    // the kept channels (identical to the baseline when no width changed), fresh draws on new ones.
    manualSeed(seed);
    const nceModel = expandModel(createModel(setup.model), SHAPE, found.widths);
    const nce = trainArm(nceModel, setup, seed);
    log(`  NCE W2A2: ${(nce.accuracy * 100).toFixed(2)} %`);
    const fullBaseWidths = Object.fromEntries(Object.keys(found.widths).map((k) => [k, found.baseWidths[k]!]));
    results[`${name}/${BUDGET}/seed${seed}`] = {
      command: COMMAND, date: new Date().toISOString(), epochs: EPOCHS, train: TRAIN, searchSteps: SEARCH_STEPS,
      baseline: { testAccuracy: base.accuracy, ...baseDescription, widths: fullBaseWidths, trainSeconds: base.seconds },
      nce: { testAccuracy: nce.accuracy, ...describe(createModel(setup.model), found.widths), widths: found.widths, trainSeconds: nce.seconds },
      search: { ...found, history: found.history.filter((_, i) => i % 5 === 0), searchSeconds, searchCpuSeconds: (cpu.user + cpu.system) / 1e6 },
    };
    writeFileAtomic(OUT, new TextEncoder().encode(`${JSON.stringify(results, null, 1)}\n`));
  }
}

log('\n| model | seed | arm | W2A2 test acc | weights | params | MACs | widths |');
log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const [key, r] of Object.entries(results)) {
  const [model, budget, seed] = key.split('/');
  for (const [arm, a] of [['baseline', r.baseline], [`NCE (${budget})`, r.nce]] as const) {
    log(`| ${model} | ${seed!.replace('seed', '')} | ${arm} | ${(a.testAccuracy * 100).toFixed(2)} % | ${a.weights} | ${a.parameters} | ${a.macs} | ${Object.values(a.widths).join('-')} |`);
  }
}
