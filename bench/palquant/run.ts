/**
 * PalQuant on MNIST / Fashion-MNIST: W4A4 and W2A2 baselines vs PalQuant (2-bit groups, G = 2,
 * with and without the cyclic shuffle), all built by `toPalQuant` from the same template (so the
 * first and last layers are float in every variant and every quantized layer uses the same LSQ
 * quantizers), trained from scratch with one recipe (Adam 1e-3, quantizer parameters at 0.1x,
 * cosine over the epochs, batch 64). Reports test accuracy, the cost on a 2-bit bit-serial
 * accelerator (`bitSerialCost()` of src/quant/search/costs.ts: BitFusion-like 2-bit bricks,
 * 512 units x 16 bricks, a w x a MAC = ceil(w/2)·ceil(a/2) brick ops) and BitOps, and checks on
 * the trained nets that every PalQuant layer's integer form (runtime gemmInt2 kernels) matches the
 * fake-quant layer.
 *
 *   nice -n 10 node --import tsx bench/palquant/run.ts [--model lenet5|cnn|all] [--epochs N]
 *       [--train N] [--test N] [--seed S] [--only id,id] [--force] [--out PATH] [--allow-reference]
 *
 * Run ids are `<model>/<variant>` (with `@s<seed>` for a seed other than 0).
 * Resumable: each finished run is written (atomically) to the results file (default
 * bench/results/palquant.json) and skipped next time unless --force.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flagOr, numberFlag } from '../flags.ts';
import { writeAtomic } from '../lib.ts';
import { getBackend } from '../../src/backend/index.ts';
import { DATASET_STATS, DataLoader, loadDataset, take, type Dataset } from '../../src/data/index.ts';
import { cnn, lenet5, type TensorModule } from '../../src/nn/index.ts';
import { Adam, CosineAnnealingLR } from '../../src/optim/index.ts';
import { manualSeed, Tensor } from '../../src/tensor/index.ts';
import { noGrad } from '../../src/autograd/engine.ts';
import { fit } from '../../src/train/fit.ts';
import { qatParamGroups } from '../../src/quant/qat/index.ts';
import { bitOpsCost, bitSerialCost } from '../../src/quant/search/costs.ts';
import { CyclicShuffle, cyclicPermuteGroups, lowerPalQuantLayer, palQuantAccumulators, palQuantCost, PalQuantLayer, quantizePalQuantInput, runPalQuantInteger, toPalQuant, type PalQuantNet, type PalQuantOptions } from '../../src/quant/palquant/index.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Variant {
  readonly id: string;
  readonly label: string;
  readonly options: PalQuantOptions;
}

const VARIANTS: readonly Variant[] = [
  { id: 'w4a4', label: 'W4A4 baseline', options: { groups: 1, wBits: 4, aBits: 4 } },
  { id: 'w2a2', label: 'W2A2 baseline', options: { groups: 1, wBits: 2, aBits: 2 } },
  { id: 'pal-g2', label: 'PalQuant W2A2 G=2, no shuffle', options: { groups: 2, wBits: 2, aBits: 2, shuffle: 'none' } },
  { id: 'pal-g2-shuffle', label: 'PalQuant W2A2 G=2, cyclic shuffle', options: { groups: 2, wBits: 2, aBits: 2, shuffle: 'cyclic' } },
];

const MODELS = {
  lenet5: { dataset: 'mnist', build: (): TensorModule => lenet5(), epochs: 2 },
  cnn: { dataset: 'fashion-mnist', build: (): TensorModule => cnn(), epochs: 1 },
} as const;
type ModelName = keyof typeof MODELS;

interface RunRecord {
  id: string;
  model: ModelName;
  dataset: string;
  variant: string;
  label: string;
  groups: number;
  wBits: number;
  aBits: number;
  shuffle: string;
  epochs: number;
  trainSamples: number;
  testSamples: number;
  seed: number;
  testAccuracy: number[];
  finalTestAccuracy: number;
  parameters: number;
  bitSerialCycles: number;
  bitOps: number;
  quantizedMacs: number;
  floatMacs: number;
  cpuSeconds: number;
  integerCheck: { layers: number; maxAbsDiff: number; maxRelDiff: number; accumulatorsExact: boolean };
  backend: string;
  date: string;
}

/** Inputs of every PalQuant layer (the shuffle convs included) on `x`, by running the chain. */
function layerInputs(net: PalQuantNet, x: Tensor): { layer: PalQuantLayer; input: Tensor }[] {
  const out: { layer: PalQuantLayer; input: Tensor }[] = [];
  noGrad(() => {
    let y = x;
    for (const layer of net) {
      if (layer instanceof PalQuantLayer) out.push({ layer, input: y });
      if (layer instanceof CyclicShuffle) {
        // Its conv sees the permuted input: recompute it the way CyclicShuffle does.
        out.push({ layer: layer.conv, input: cyclicPermuteGroups(y, layer.groups, layer.shift) });
      }
      y = layer.forward(y);
    }
  });
  return out;
}

/** Integer form vs fake quant on every PalQuant layer of the trained net, on a few test images. */
function integerCheck(net: PalQuantNet, x: Tensor): RunRecord['integerCheck'] {
  net.eval();
  let maxAbsDiff = 0;
  let maxRelDiff = 0;
  let exact = true;
  const inputs = layerInputs(net, x);
  for (const { layer, input } of inputs) {
    const fake = noGrad(() => layer.forward(input));
    const int = lowerPalQuantLayer(layer);
    const y = runPalQuantInteger(int, input);
    const { acc } = palQuantAccumulators(int, quantizePalQuantInput(int, input), input.shape);
    const geo = int.geometry;
    const otot = geo.outChannels * geo.groups;
    const spatial = acc.length / input.shape[0]! / otot;
    for (let i = 0; i < y.size; i++) {
      const d = Math.abs(y.data[i]! - fake.data[i]!);
      maxAbsDiff = Math.max(maxAbsDiff, d);
      maxRelDiff = Math.max(maxRelDiff, d / (1 + Math.abs(fake.data[i]!)));
      const o = Math.floor(i / spatial) % otot;
      const unit = int.inputs[Math.floor(o / geo.outChannels)]!.scale * int.weightScale[o]!;
      if (Math.round((fake.data[i]! - (int.bias ? int.bias[o]! : 0)) / unit) !== acc[i]) exact = false;
    }
  }
  return { layers: inputs.length, maxAbsDiff, maxRelDiff, accumulatorsExact: exact };
}

function loadResults(path: string): RunRecord[] {
  if (!existsSync(path)) return [];
  const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
  if (!Array.isArray(parsed)) throw new Error(`${path}: expected a JSON array of run records`);
  return parsed as RunRecord[];
}

function main(): void {
  const modelFlag = flagOr('model', 'all');
  if (modelFlag !== 'all' && !(modelFlag in MODELS)) throw new Error(`--model must be lenet5, cnn or all, got '${modelFlag}'`);
  const models = (modelFlag === 'all' ? Object.keys(MODELS) : [modelFlag]) as ModelName[];
  const seed = numberFlag('seed', 0, { integer: true });
  const trainLimit = numberFlag('train', 0, { integer: true });
  const testLimit = numberFlag('test', 0, { integer: true });
  const only = flagOr('only', '').split(',').filter((s) => s !== '');
  const force = process.argv.includes('--force');
  const out = resolve(ROOT, flagOr('out', join('bench', 'results', 'palquant.json')));
  const results = loadResults(out);
  const backend = getBackend();
  if (backend !== 'native' && !process.argv.includes('--allow-reference')) {
    throw new Error(`the native addon did not load (backend '${backend}'): runs would be very slow and their CPU seconds not comparable; rebuild it (npm run build:native) or pass --allow-reference`);
  }
  for (const model of models) {
    const spec = MODELS[model];
    const epochs = numberFlag('epochs', spec.epochs, { integer: true, min: 1 });
    const fullTrain: Dataset = loadDataset(spec.dataset, 'train');
    const trainSet = trainLimit > 0 ? take(fullTrain, trainLimit) : fullTrain;
    const fullTest: Dataset = loadDataset(spec.dataset, 'test');
    const testSet = testLimit > 0 ? take(fullTest, testLimit) : fullTest;
    const normalize = DATASET_STATS[spec.dataset];
    for (const variant of VARIANTS) {
      const id = `${model}/${variant.id}${seed === 0 ? '' : `@s${seed}`}`;
      if (only.length > 0 && !only.includes(variant.id) && !only.includes(id)) continue;
      if (!force && results.some((r) => r.id === id)) {
        process.stdout.write(`${id}: recorded, skipped (--force to re-run)\n`);
        continue;
      }
      manualSeed(seed);
      const net = toPalQuant(spec.build(), variant.options);
      const trainLoader = new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed, normalize });
      const testLoader = new DataLoader(testSet, { batchSize: 500, normalize });
      const optimizer = new Adam(qatParamGroups(net, { lr: 1e-3, quantLrScale: 0.1 }), { lr: 1e-3 });
      const scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
      const cpu0 = process.cpuUsage();
      const accuracies: number[] = [];
      process.stdout.write(`${id}: ${variant.label}, ${epochs} epoch(s) on ${trainSet.length} ${spec.dataset} images (${backend})\n`);
      fit(net, {
        trainLoader, testLoader, optimizer, scheduler, epochs, seed, progress: true,
        onEpochEnd: (rec) => {
          accuracies.push(rec.testAccuracy ?? Number.NaN);
          process.stdout.write(`  epoch ${rec.epoch}: train loss ${rec.trainLoss.toFixed(4)}, test ${((rec.testAccuracy ?? Number.NaN) * 100).toFixed(2)} %\n`);
        },
      });
      const cpu = process.cpuUsage(cpu0);
      const serial = palQuantCost(net, [1, 28, 28], bitSerialCost());
      const bitops = palQuantCost(net, [1, 28, 28], bitOpsCost());
      const firstBatch = testLoader[Symbol.iterator]().next().value!;
      const check = integerCheck(net, sliceBatch(firstBatch.x, 16));
      const record: RunRecord = {
        id, model, dataset: spec.dataset, variant: variant.id, label: variant.label,
        groups: net.groups, wBits: net.wBits, aBits: net.aBits, shuffle: net.shuffle,
        epochs, trainSamples: trainSet.length, testSamples: testSet.length, seed,
        testAccuracy: accuracies, finalTestAccuracy: accuracies[accuracies.length - 1]!,
        parameters: net.parameters().reduce((p, t) => p + t.size, 0),
        bitSerialCycles: serial.total, bitOps: bitops.total, quantizedMacs: serial.quantizedMacs, floatMacs: serial.floatMacs,
        cpuSeconds: (cpu.user + cpu.system) / 1e6, integerCheck: check, backend, date: new Date().toISOString(),
      };
      process.stdout.write(`  -> test ${(record.finalTestAccuracy * 100).toFixed(2)} %, ${serial.total.toFixed(1)} cycles/sample on the 2-bit unit, integer check ${JSON.stringify(check)}\n`);
      const kept = loadResults(out).filter((r) => r.id !== id);
      writeAtomic(out, `${JSON.stringify([...kept, record], null, 2)}\n`);
    }
  }
}

/** The first `n` samples of a batch tensor. */
function sliceBatch(x: Tensor, n: number): Tensor {
  const per = x.size / x.shape[0]!;
  const k = Math.min(n, x.shape[0]!);
  return new Tensor(Float32Array.from(x.data.subarray(0, k * per)), [k, ...x.shape.slice(1)]);
}

main();
