/**
 * SmartDeal on LeNet-5 / MNIST: accuracy and weight storage of fp32, uniform W8 / W4 / W2 (lowbit's
 * QAT presets int8PerChannelSym / int4PerChannelSym / int2PerChannelSym, weights only) and SmartDeal at several row
 * sparsities, every variant fine-tuned for the same epochs from one fp32 model.
 *
 *   nice -n 10 node --import tsx bench/smartdeal/lenet-mnist.ts [--epochs 2] [--finetune 1] [--seed 0]
 *     [--limit 60000] [--sd 0,0.5,0.75,0.5e,0.75e] [--basis-bits 8] [--exponent-bits 3] [--out bench/results/smartdeal-lenet.json]
 *
 * An `--sd` entry is the fraction of Ce rows removed in every layer; with a trailing `e` the two
 * smallest layers (conv1, 150 weights, and fc3, 840) keep all their rows (per-layer fractions, as
 * the paper's per-layer percentages), the others lose that fraction.
 *
 * Recipe: fp32 LeNet-5 trained `--epochs` epochs (SGD lr 0.05, momentum 0.9, batch 64, seed), then
 * each variant starts from that model and trains `--finetune` epochs with SGD lr 0.01, momentum 0.9
 * (the fp32 row continues training for the same epochs). Test accuracy on the full 10k test set.
 * Storage: fp32 = 4 bytes per parameter; W8 / W4 / W2 = packed weight codes + a float32 scale per output
 * channel + float32 bias; SmartDeal = `compactSize` (basis + sign/exponent codes + row bitmap +
 * float32 bias). Prints a markdown table and writes the records (atomically) to `--out`.
 * Last, the final SmartDeal model is run on the first 1,000 test images with every SD layer replaced
 * by its shift-add form (`shiftAddForward`, float input) and compared with the model's own forward.
 */
import { DataLoader, DATASET_STATS, loadMnist, take } from '../../src/data/index.ts';
import { lenet5, Conv2d, Linear, Module } from '../../src/nn/index.ts';
import { SGD } from '../../src/optim/sgd.ts';
import { argmax, manualSeed, Tensor } from '../../src/tensor/index.ts';
import { noGrad } from '../../src/autograd/engine.ts';
import { evaluate, fit } from '../../src/train/fit.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { int2PerChannelSym, int4PerChannelSym, int8PerChannelSym } from '../../src/quant/config/index.ts';
import { compactSize, exportSmartDeal, outputShape, prepareSmartDeal, shiftAddForward, smartDealLayers, type SmartDealExport } from '../../src/quant/smartdeal/index.ts';
import { writeFileAtomic } from '../../src/format/files.ts';
import { getBackend } from '../../src/backend/index.ts';
import { flagOr } from '../flags.ts';

const epochs = Number(flagOr('epochs', '2'));
const finetune = Number(flagOr('finetune', '1'));
const seed = Number(flagOr('seed', '0'));
const limit = Number(flagOr('limit', '60000'));
const settings = flagOr('sd', '0,0.5,0.75,0.5e,0.75e').split(',').map((entry) => {
  const keepEnds = entry.endsWith('e');
  const sparsity = Number(keepEnds ? entry.slice(0, -1) : entry);
  if (!(sparsity >= 0 && sparsity < 1)) throw new Error(`--sd: '${entry}' is not a fraction in [0, 1) (optionally followed by 'e')`);
  return { sparsity, keepEnds };
});
const basisBits = Number(flagOr('basis-bits', '8'));
const exponentBits = Number(flagOr('exponent-bits', '3'));
const out = flagOr('out', 'bench/results/smartdeal-lenet.json');
if (basisBits !== 8 && basisBits !== 32) throw new Error(`--basis-bits must be 8 or 32, got ${basisBits}`);

const train = loadMnist({ split: 'train', limit });
const test = loadMnist({ split: 'test' });
const trainLoader = (): DataLoader => new DataLoader(train, { batchSize: 64, shuffle: true, seed, normalize: DATASET_STATS.mnist });
const testLoader = new DataLoader(test, { batchSize: 500, normalize: DATASET_STATS.mnist });
const log = (line: string): void => void process.stdout.write(`  ${line}\n`);

interface Row {
  method: string;
  accuracyBeforeFinetune: number | null;
  accuracy: number;
  bytes: number;
  detail: string;
  seconds: number;
}

function finetuneModel(model: Module & { forward(x: Tensor): Tensor }): void {
  if (finetune <= 0) return;
  fit(model, { trainLoader: trainLoader(), testLoader, optimizer: new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 }), epochs: finetune, seed: seed + 1, progress: false, log });
}

/** Packed weight bytes of a uniform per-channel b-bit model: codes + float32 scale per channel + float32 bias (+ other parameters at 4 bytes). */
function uniformBytes(model: Module, bits: number): number {
  let bytes = 0;
  for (const [, m] of model.namedModules()) {
    if (m instanceof Conv2d || m instanceof Linear) {
      const w = m.weight;
      bytes += Math.ceil((w.size * bits) / 8) + 4 * w.shape[0]! + 4 * (m.bias?.size ?? 0);
    }
  }
  return bytes;
}

process.stdout.write(`backend ${getBackend()}; LeNet-5 fp32: ${epochs} epochs on ${train.length} images, seed ${seed}\n`);
manualSeed(seed);
const base = lenet5();
let t0 = performance.now();
fit(base, { trainLoader: trainLoader(), testLoader, optimizer: new SGD(base.parameters(), { lr: 0.05, momentum: 0.9 }), epochs, seed, progress: false, log });
const baseAccuracy = evaluate(base, testLoader).accuracy;
process.stdout.write(`fp32 after ${epochs} epochs: ${(baseAccuracy * 100).toFixed(2)} % (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
const snapshot = new Map([...base.stateDict()].map(([k, v]) => [k, new Tensor(v.data.slice(), v.shape)]));
const fresh = (): ReturnType<typeof lenet5> => {
  manualSeed(seed);
  const m = lenet5();
  m.loadStateDict(snapshot);
  return m;
};

const rows: Row[] = [];
const record = (row: Row): void => {
  rows.push(row);
  process.stdout.write(`${row.method}: ${(row.accuracy * 100).toFixed(2)} % (before fine-tune ${row.accuracyBeforeFinetune === null ? '-' : `${(row.accuracyBeforeFinetune * 100).toFixed(2)} %`}), ${row.bytes} bytes; ${row.detail} (${row.seconds.toFixed(0)} s)\n`);
};

{
  t0 = performance.now();
  const m = fresh();
  finetuneModel(m);
  record({ method: 'fp32', accuracyBeforeFinetune: baseAccuracy, accuracy: evaluate(m, testLoader).accuracy, bytes: compactSize(m).totalBytes, detail: '4 bytes per parameter', seconds: (performance.now() - t0) / 1000 });
}
for (const [name, spec, bits] of [['W8 (int8PerChannelSym)', int8PerChannelSym, 8], ['W4 (int4PerChannelSym)', int4PerChannelSym, 4], ['W2 (int2PerChannelSym, levels {−1, 0, 1})', int2PerChannelSym, 2]] as const) {
  t0 = performance.now();
  const m = fresh();
  prepareQat(m, { weight: spec, activation: null });
  const before = evaluate(m, testLoader).accuracy;
  finetuneModel(m);
  record({ method: name, accuracyBeforeFinetune: before, accuracy: evaluate(m, testLoader).accuracy, bytes: uniformBytes(fresh(), bits), detail: `${bits}-bit codes + fp32 scale/channel + fp32 bias`, seconds: (performance.now() - t0) / 1000 });
}
let lastSd: ReturnType<typeof lenet5> | null = null;
for (const { sparsity, keepEnds } of settings) {
  t0 = performance.now();
  const m = fresh();
  lastSd = m;
  prepareSmartDeal(m, { sparsity, basisBits: basisBits as 8 | 32, exponentBits, ...(keepEnds ? { overrides: { conv1: { sparsity: 0 }, fc3: { sparsity: 0 } } } : {}) });
  const errors = smartDealLayers(m).map(({ name, layer }) => `${name} ${layer.initialError.toFixed(3)}`).join(', ');
  const before = evaluate(m, testLoader).accuracy;
  finetuneModel(m);
  const size = compactSize(m);
  const terms = size.layers.reduce((t, l) => ({ basis: t.basis + l.basisBits / 8, coefficients: t.coefficients + l.coefficientBits / 8, index: t.index + l.indexBits / 8, bias: t.bias + l.biasBits / 8 }), { basis: 0, coefficients: 0, index: 0, bias: 0 });
  record({
    method: `SD rows removed ${(sparsity * 100).toFixed(0)} %${keepEnds ? ' (conv1, fc3: 0 %)' : ''}, ${basisBits === 8 ? 'int8' : 'float32'} basis, ${exponentBits}-bit exponents`,
    accuracyBeforeFinetune: before,
    accuracy: evaluate(m, testLoader).accuracy,
    bytes: size.totalBytes,
    detail: `bytes: basis ${terms.basis.toFixed(0)}, sign+exponent ${terms.coefficients.toFixed(0)}, row bitmap ${terms.index.toFixed(0)}, bias ${terms.bias.toFixed(0)}; ‖W−ĈB‖/‖W‖ after decomposition: ${errors}`,
    seconds: (performance.now() - t0) / 1000,
  });
}

/** A SmartDeal layer run through `shiftAddForward` (inference only). */
class ShiftAddLayer extends Module {
  constructor(private readonly packed: SmartDealExport) {
    super();
  }

  forward(x: Tensor): Tensor {
    return new Tensor(Float32Array.from(shiftAddForward(this.packed, { data: x.data, shape: x.shape })), outputShape(this.packed, x.shape));
  }
}

let shiftAddCheck: { images: number; sameArgmax: number; maxAbsLogitDifference: number } | null = null;
if (lastSd !== null) {
  const sd = lastSd;
  const sample = new DataLoader(take(test, 1000), { batchSize: 500, normalize: DATASET_STATS.mnist });
  const shiftAdd = fresh();
  prepareSmartDeal(shiftAdd, { sparsity: 0 });
  shiftAdd.loadStateDict(sd.stateDict());
  sd.eval();
  shiftAdd.eval();
  for (const { name, layer } of smartDealLayers(shiftAdd)) shiftAdd.setSubmodule(name, new ShiftAddLayer(exportSmartDeal(layer)));
  let same = 0;
  let images = 0;
  let maxDiff = 0;
  noGrad(() => {
    for (const { x } of sample) {
      const a = sd.forward(x);
      const b = shiftAdd.forward(x);
      const pa = argmax(a, 1).data;
      const pb = argmax(b, 1).data;
      for (let i = 0; i < pa.length; i++) if (pa[i] === pb[i]) same++;
      for (let i = 0; i < a.size; i++) maxDiff = Math.max(maxDiff, Math.abs(a.data[i]! - b.data[i]!));
      images += pa.length;
    }
  });
  shiftAddCheck = { images, sameArgmax: same, maxAbsLogitDifference: maxDiff };
  process.stdout.write(`shift-add inference of the last SD model on ${images} test images: same argmax on ${same}, max |logit difference| ${maxDiff.toExponential(2)}\n`);
}

const fp32Bytes = rows[0]!.bytes;
const table = [
  '| method | accuracy before fine-tune | accuracy | weight storage (bytes) | vs fp32 |',
  '| --- | --- | --- | --- | --- |',
  ...rows.map((r) => `| ${r.method} | ${r.accuracyBeforeFinetune === null ? '-' : `${(r.accuracyBeforeFinetune * 100).toFixed(2)} %`} | ${(r.accuracy * 100).toFixed(2)} % | ${r.bytes} | ${(fp32Bytes / r.bytes).toFixed(2)}x |`),
].join('\n');
process.stdout.write(`\nLeNet-5 / MNIST, fp32 ${epochs} epochs + ${finetune} fine-tune epoch(s), ${train.length} training images, seed ${seed}:\n${table}\n`);
for (const r of rows) process.stdout.write(`- ${r.method}: ${r.detail}\n`);
writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify({ epochs, finetune, seed, limit: train.length, basisBits, exponentBits, backend: getBackend(), rows, shiftAddCheck }, null, 2)}\n`));
process.stdout.write(`wrote ${out}\n`);
