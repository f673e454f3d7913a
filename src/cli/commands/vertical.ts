import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DATASET_NAMES, DATASET_STATS, DataLoader, isDatasetName, loadDataset, take, type DatasetName } from '../../data/index.ts';
import { createModel, isModelName, MODEL_NAMES, type ModelName } from '../../nn/index.ts';
import { Adam, CosineAnnealingLR } from '../../optim/index.ts';
import { manualSeed } from '../../tensor/index.ts';
import { formatPercent } from '../../train/index.ts';
import { makeDirs, writeFileAtomic } from '../../format/index.ts';
import { saveIntModel } from '../../runtime/index.ts';
import {
  CASCADE_MODES, convertAtBits, evaluateAtBits, loadVerticalArtifact, prepareVertical, readVerticalArtifactMetadata, saveVerticalArtifact, trainOnce, type CascadeMode,
} from '../../quant/vertical/index.ts';
import { defineCommand } from '../command.ts';
import { UsageError } from '../args.ts';
import { locateFloatRun } from '../float-run.ts';
import { BACKEND_CHOICES, useBackend } from '../backend-info.ts';

/** What `lowbit vertical` stores in the checkpoint's config: enough to rebuild the prepared model. */
interface VerticalRunConfig {
  readonly format: 'lowbit-vertical';
  readonly arch: ModelName;
  readonly dataset: DatasetName;
  readonly bitsSet: number[];
  readonly topBits: number;
  readonly cascade: CascadeMode;
  readonly init: string | null;
  readonly epochs: number;
  readonly lr: number;
  readonly seed: number;
}

/** `8,4,2` → [8, 4, 2] (integers in [2, 16]). */
function parseBitsSet(text: string): number[] {
  const widths = text.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (widths.length === 0 || widths.some((b) => !Number.isInteger(b) || b < 2 || b > 16)) {
    throw new UsageError(`--bits-set must list widths in [2, 16] separated by commas (e.g. 8,4,2), got '${text}'`, 'vertical');
  }
  return [...new Set(widths)].sort((a, b) => b - a);
}

/** Reads and checks the run config stored in a vertical artifact's metadata. */
function readVerticalConfig(path: string): VerticalRunConfig {
  const metadata = readVerticalArtifactMetadata(path);
  const fail = (what: string): never => {
    throw new Error(`${path}: not a vertical run of lowbit vertical (${what})`);
  };
  let config: Partial<VerticalRunConfig> = {};
  try {
    config = JSON.parse(metadata.run ?? 'null') as Partial<VerticalRunConfig>;
  } catch {
    fail('its run metadata is not JSON');
  }
  const c = config ?? {};
  if (c.format !== 'lowbit-vertical') fail(`run format is ${JSON.stringify(c.format)}`);
  if (!isModelName(String(c.arch))) fail(`unknown model ${JSON.stringify(c.arch)}`);
  if (!isDatasetName(String(c.dataset))) fail(`unknown dataset ${JSON.stringify(c.dataset)}`);
  if (!Array.isArray(c.bitsSet) || c.bitsSet.length === 0 || c.bitsSet.some((b) => !Number.isInteger(b) || b < 2 || b > 16)) fail(`bitsSet ${JSON.stringify(c.bitsSet)}`);
  if (!Number.isInteger(c.topBits) || c.topBits! < Math.max(...c.bitsSet!) || c.topBits! > 16) fail(`topBits ${JSON.stringify(c.topBits)}`);
  if (!CASCADE_MODES.includes(c.cascade as CascadeMode)) fail(`cascade ${JSON.stringify(c.cascade)}`);
  return c as VerticalRunConfig;
}

export const verticalCommand = defineCommand({
  name: 'vertical',
  summary: 'one model, several bit widths: once QAT of vertical-layered weights, then an integer model at any width',
  description: [
    'Train mode (--bits-set): prepares the model with vertical-layered weights (one stored B-bit code per',
    'weight, B = the widest width; each lower width b is the code rounded to its top b bits, scale',
    's_B*2^(B-b)), per-width input quantizers and first/last layers at 8 bits, and trains it with the',
    'summed losses of every width at each step (once QAT). Writes <out>/vertical.safetensors (the B-bit',
    'integer codes and per-channel scales, the fixed layers and every width\'s activation ranges) and',
    '<out>/metrics.json with the test accuracy at every width. Convert mode (--from, --bits): loads that',
    'file and writes the integer model of one width, <from>/model-w<bits>.lowbit. See docs/vertical.md.',
  ].join('\n'),
  examples: [
    'lowbit train --quant fp32 && lowbit vertical --init runs/lenet5-mnist-fp32 --bits-set 8,4,2 --epochs 1',
    'lowbit vertical --from runs/lenet5-mnist-vertical-8-4-2 --bits 4',
    'lowbit vertical --bits-set 8,4,2 --limit 2048 --epochs 1 --no-progress   # a quick try from scratch',
  ],
  options: {
    bitsSet: { type: 'string', placeholder: 'B,B,..', help: 'train mode: the widths the model serves, widest first or in any order (e.g. 8,4,2)' },
    from: { type: 'string', placeholder: 'PATH', help: 'convert mode: a vertical run directory or its vertical.safetensors' },
    bits: { type: 'int', positive: true, help: 'convert mode: the width to convert to (one of the run\'s set)' },
    init: { type: 'string', placeholder: 'RUN', help: 'train mode: start from a float32 run (directory or checkpoint); default: from scratch' },
    model: { type: 'enum', choices: MODEL_NAMES, default: 'lenet5', help: 'model architecture (train mode, without --init)' },
    dataset: { type: 'enum', choices: DATASET_NAMES, default: 'mnist', help: 'dataset (train mode, without --init)' },
    epochs: { type: 'int', positive: true, default: 1, help: 'passes over the training set (each step runs every width)' },
    batchSize: { type: 'int', positive: true, default: 64, help: 'samples per step' },
    lr: { type: 'number', positive: true, placeholder: 'LR', help: 'Adam learning rate, cosine decay (default 2e-4 with --init, 2e-3 from scratch)' },
    cascade: { type: 'enum', choices: CASCADE_MODES, default: 'top', help: 'lower widths from the top code (top) or from the next wider width of the set (stepwise)' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of initialisation and shuffling' },
    limit: { type: 'int', positive: true, help: 'train on the first N training samples only' },
    testLimit: { type: 'int', positive: true, help: 'evaluate on the first N test samples only' },
    out: { type: 'string', placeholder: 'PATH', help: 'train mode: output directory (default runs/<model>-<dataset>-vertical-<set>); convert mode: the .lowbit file' },
    progress: { type: 'boolean', default: true, help: 'hide the progress bar' },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend: reference, native or wasm (default: native when the addon loads)' },
  },
  run(options, io) {
    useBackend(options.backend);
    const usage = (message: string): UsageError => new UsageError(message, 'vertical');
    if ((options.bitsSet === undefined) === (options.from === undefined)) throw usage('give either --bits-set (train a vertical model) or --from with --bits (convert one width)');
    const testLoaderOf = (dataset: DatasetName) => {
      const full = loadDataset(dataset, 'test');
      const set = options.testLimit === undefined ? full : take(full, options.testLimit);
      return new DataLoader(set, { batchSize: 256, normalize: DATASET_STATS[dataset] });
    };

    if (options.from !== undefined) {
      if (options.bits === undefined) throw usage('--from needs --bits B: the width to convert to');
      if (!existsSync(options.from)) throw new Error(`vertical: --from: '${options.from}' does not exist`);
      const path = statSync(options.from).isDirectory() ? join(options.from, 'vertical.safetensors') : options.from;
      const config = readVerticalConfig(path);
      if (!config.bitsSet.includes(options.bits)) throw usage(`--bits ${options.bits}: ${path} serves widths ${config.bitsSet.join(', ')}`);
      const testLoader = testLoaderOf(config.dataset);
      const model = prepareVertical(createModel(config.arch, { numClasses: testLoader.dataset.numClasses }), {
        bitsSet: config.bitsSet, topBits: config.topBits, cascade: config.cascade,
      });
      loadVerticalArtifact(path, model);
      const accuracy = evaluateAtBits(model, testLoader, options.bits).accuracy;
      io.print(`${config.arch} on ${config.dataset} at ${options.bits} bits (from ${config.topBits}-bit codes): fake-quant test accuracy ${formatPercent(accuracy)}`);
      const sample = testLoader[Symbol.iterator]().next().value?.x;
      const intModel = convertAtBits(model, options.bits, { sample, metadata: { dataset: config.dataset, source: path } });
      const out = options.out ?? join(statSync(options.from).isDirectory() ? options.from : join(path, '..'), `model-w${options.bits}.lowbit`);
      const bytes = saveIntModel(out, intModel);
      const agreement = intModel.verification?.argmaxAgreement;
      io.print(`wrote ${out} (${bytes.toLocaleString('en-US')} bytes, integer model${agreement === undefined ? '' : `, argmax agreement with the fake-quant model ${formatPercent(agreement)} on ${sample?.shape[0]} test samples`})`);
      return 0;
    }

    const bitsSet = parseBitsSet(options.bitsSet!);
    if (options.bits !== undefined) throw usage('--bits is for convert mode (--from); in train mode the widths are --bits-set');
    const init = options.init === undefined ? null : locateFloatRun(options.init, {}, 'vertical', 'once QAT with --init', '--init');
    const arch = init?.arch ?? options.model;
    const dataset = init?.dataset ?? options.dataset;
    const lr = options.lr ?? (init ? 2e-4 : 2e-3);
    const fullTrain = loadDataset(dataset, 'train');
    const trainSet = options.limit === undefined ? fullTrain : take(fullTrain, options.limit);
    const trainLoader = new DataLoader(trainSet, { batchSize: options.batchSize, shuffle: true, seed: options.seed, normalize: DATASET_STATS[dataset] });
    const testLoader = testLoaderOf(dataset);
    manualSeed(options.seed);
    const model = createModel(arch, { numClasses: fullTrain.numClasses });
    if (init) model.loadStateDict(init.weights());
    prepareVertical(model, { bitsSet, cascade: options.cascade });
    const out = options.out ?? join('runs', `${arch}-${dataset}-vertical-${bitsSet.join('-')}`);
    io.print(`once QAT of ${arch} on ${dataset} at widths {${bitsSet.join(', ')}}${init ? ` from ${init.checkpoint}` : ' from scratch'}: ${options.epochs} epoch(s), Adam ${lr} cosine, batch ${options.batchSize}`);
    const optimizer = new Adam(model.parameters(), { lr });
    const scheduler = new CosineAnnealingLR(optimizer, { tMax: options.epochs });
    const records = trainOnce(model, {
      trainLoader, testLoader, optimizer, scheduler, epochs: options.epochs, progress: options.progress, progressStream: io.stderr, log: (line) => io.print(line),
    });
    const accuracy = Object.fromEntries(bitsSet.map((b) => [b, evaluateAtBits(model, testLoader, b).accuracy]));
    for (const b of bitsSet) io.print(`  ${b}-bit test accuracy: ${formatPercent(accuracy[b]!)}`);
    const config: VerticalRunConfig = {
      format: 'lowbit-vertical', arch, dataset, bitsSet, topBits: bitsSet[0]!, cascade: options.cascade, init: init?.checkpoint ?? null,
      epochs: options.epochs, lr, seed: options.seed,
    };
    makeDirs(out);
    const codeBytes = saveVerticalArtifact(join(out, 'vertical.safetensors'), model, { run: JSON.stringify(config) });
    const metrics = { config, accuracy, epochs: records, trainSamples: trainSet.length, codeBytes };
    writeFileAtomic(join(out, 'metrics.json'), new TextEncoder().encode(`${JSON.stringify(metrics, null, 2)}\n`));
    io.print(`wrote ${join(out, 'vertical.safetensors')} (${codeBytes.toLocaleString('en-US')} bytes of ${config.topBits}-bit codes) and ${join(out, 'metrics.json')}; convert a width with: lowbit vertical --from ${out} --bits ${bitsSet[bitsSet.length - 1]}`);
    return 0;
  },
});
