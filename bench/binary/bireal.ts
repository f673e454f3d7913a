/**
 * Repairing a binary ResNet-8 on Fashion-MNIST (Bi-Real Net, Liu et al. 2018): binary convs (sign
 * inputs, ±α weights, BN after each conv) with
 *   (a) one shortcut per block and 1×1 stride-2 binary projections,
 *   (b) a shortcut around every conv (double residual), binary projections,
 *   (c) (b) + real-valued downsampling (avg-pool + 8-bit 1×1 conv),
 *   (d) (c) trained in two stages: real-valued with clip(x, −1, 1) in place of sign, then binarized,
 * and the float32 ResNet-8 (nn.resnet8, ReLU) at the same recipe (Adam, batch 64, per-step cosine
 * decay of the lr to 0 over each training run — `--schedule constant` keeps it constant).
 * Binary runs from scratch get `--epochs`; (d) gets `--epochs` real-valued plus `--epochs` binary
 * (twice the budget), so (c2) repeats (c) for 2·epochs as its equal-budget control.
 * Test accuracy of the fake-quant model (eval mode) and the packed weight size; one seed. Also
 * tries `convert()` to an IntModel and records its error.
 *
 *   nice -n 10 node --import tsx bench/binary/bireal.ts [--train 10000] [--test 2000] [--epochs 2] [--lr 2e-3] [--schedule cosine] [--seed 0] [--variants fp32,a,b,c,d,c2] [--out bireal.json]
 *
 * Writes bench/results/<out> (default binary-bireal.json).
 */
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { loadDataset } from '../../src/data/index.ts';
import { biRealResnet8, resnet8, Conv2d, Linear, type BiRealResNet, type Module, type TensorModule } from '../../src/nn/index.ts';
import { manualSeed, Tensor } from '../../src/tensor/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { noGrad } from '../../src/autograd/engine.ts';
import { prepareQat, quantizedLayers } from '../../src/quant/qat/index.ts';
import { convert } from '../../src/runtime/index.ts';
import { getBackend } from '../../src/backend/index.ts';
import { argmaxRows } from '../../src/eval/attack.ts';
import { trainAdam } from '../train-loop.ts';
import { gitCommit, writeAtomic } from '../lib.ts';
import { biRealPlan } from './plan.ts';
import { fitCosine, normalizedFashion } from './common.ts';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
};
const TRAIN = Number(opt('train', '10000'));
const TEST = Number(opt('test', '2000'));
const EPOCHS = Number(opt('epochs', '2'));
const LR = Number(opt('lr', '2e-3'));
const SEED = Number(opt('seed', '0'));
const SCHEDULE = opt('schedule', 'cosine');
if (SCHEDULE !== 'cosine' && SCHEDULE !== 'constant') throw new Error(`--schedule must be cosine or constant, got '${SCHEDULE}'`);
const VARIANTS = opt('variants', 'fp32,a,b,c,d,c2').split(',');
const OUT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'results', opt('out', 'binary-bireal.json'));
const KNOWN = ['fp32', 'a', 'b', 'c', 'd', 'c2'];
for (const v of VARIANTS) if (!KNOWN.includes(v)) throw new Error(`--variants: unknown variant '${v}' (known: ${KNOWN.join(', ')})`);


const train = normalizedFashion(loadDataset('fashion-mnist', 'train', { limit: TRAIN }));
const test = normalizedFashion(loadDataset('fashion-mnist', 'test', { limit: TEST }));
const log = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
log(`backend ${getBackend()}; Fashion-MNIST train ${train.length}, test ${test.length}; seed ${SEED}; epochs ${EPOCHS}, lr ${LR} (${SCHEDULE})`);

/** Adam on cross-entropy, batch 64, the lr decayed to 0 by a per-step cosine (or constant: bench/train-loop.ts). */
function fitModel(model: TensorModule, epochs: number, label: string, seed: number): void {
  if (SCHEDULE === 'constant') {
    trainAdam(model, train, { rounds: epochs, lr: LR, label, batchSize: 64, seed });
    return;
  }
  fitCosine(model, train, { epochs, lr: LR, seed, label });
}

/** Test accuracy of `model` in eval mode. */
function accuracy(model: TensorModule): number {
  model.eval();
  let correct = 0;
  for (let s = 0; s < test.length; s += 256) {
    const n = Math.min(256, test.length - s);
    const x = new Tensor(test.images.subarray(s * 784, (s + n) * 784), [n, 1, 28, 28]);
    const pred = argmaxRows(noGrad(() => model.forward(x)).data as Float32Array, 10);
    pred.forEach((p, i) => { if (p === test.labels[s + i]) correct++; });
  }
  return correct / test.length;
}

/**
 * Deployed weight bytes with BatchNorm folded: per conv/linear, weights at their bit width
 * (1-bit packed, int8, or float32 when not quantized) plus a float32 scale (α) and an int32 /
 * float32 bias per output channel (a float layer: the bias only).
 */
function packedBytes(model: Module): { bytes: number; layers: { name: string; weightBits: number; weights: number; bytes: number }[] } {
  const layers: { name: string; weightBits: number; weights: number; bytes: number }[] = [];
  const quantized = quantizedLayers(model);
  if (quantized.length > 0) {
    for (const l of quantized) {
      const bits = l.weightSpec?.bits ?? 32;
      const out = l.layer.weight.shape[0]!;
      const bytes = Math.ceil((l.layer.weight.size * bits) / 8) + out * (bits === 32 ? 4 : 8);
      layers.push({ name: l.name, weightBits: bits, weights: l.layer.weight.size, bytes });
    }
  } else {
    for (const [name, m] of model.namedModules()) {
      if (!(m instanceof Conv2d) && !(m instanceof Linear)) continue;
      const bytes = m.weight.size * 4 + m.weight.shape[0]! * 4;
      layers.push({ name, weightBits: 32, weights: m.weight.size, bytes });
    }
  }
  return { bytes: layers.reduce((a, l) => a + l.bytes, 0), layers };
}

function tryConvert(model: BiRealResNet): { ok: true; nodes: number } | { ok: false; error: string } {
  try {
    const im = convert(model, { sample: new Tensor(test.images.slice(0, 64 * 784), [64, 1, 28, 28]) });
    return { ok: true, nodes: im.nodes.length };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

const LAYOUTS = {
  a: { shortcut: 'block', downsample: 'projection' },
  b: { shortcut: 'double', downsample: 'projection' },
  c: { shortcut: 'double', downsample: 'real' },
  c2: { shortcut: 'double', downsample: 'real' },
  d: { shortcut: 'double', downsample: 'real' },
} as const;

const rows: Record<string, unknown>[] = [];
const commit = gitCommit();
const save = (): void => {
  writeAtomic(OUT, `${JSON.stringify({
    bench: 'binary-bireal', commit, date: new Date().toISOString(), backend: getBackend(), seed: SEED,
    command: `nice -n 10 node --import tsx bench/binary/bireal.ts ${args.join(' ')}`.trim(),
    data: { dataset: 'fashion-mnist', train: train.length, test: test.length },
    recipe: { optimizer: 'Adam', lr: LR, batchSize: 64, epochs: EPOCHS, schedule: SCHEDULE === 'cosine' ? 'cosine to 0 per step, per training run' : 'constant' },
    rows,
  }, null, 2)}\n`);
};

for (const variant of VARIANTS) {
  manualSeed(SEED);
  const started = performance.now();
  if (variant === 'fp32') {
    const model = resnet8();
    fitModel(model, EPOCHS, 'fp32 resnet8', SEED);
    const acc = accuracy(model);
    const size = packedBytes(model);
    rows.push({ variant, description: 'float32 ResNet-8 (nn.resnet8, ReLU)', epochs: EPOCHS, accuracy: acc, packedBytes: size.bytes, parameters: model.numParameters(), seconds: (performance.now() - started) / 1000 });
    log(`fp32: accuracy ${(acc * 100).toFixed(2)} %, ${size.bytes} bytes`);
    save();
    continue;
  }
  const layout = LAYOUTS[variant as keyof typeof LAYOUTS];
  const realDownsample = layout.downsample === 'real';
  const row: Record<string, unknown> = { variant, layout };
  const model = biRealResnet8(layout);
  if (variant === 'd') {
    const real = biRealResnet8({ ...layout, clip: true });
    fitModel(real, EPOCHS, 'd stage 1 (real, clip)', SEED);
    row.stage1 = { epochs: EPOCHS, accuracy: accuracy(real), seconds: (performance.now() - started) / 1000 };
    log(`d stage 1 (real-valued, clip): accuracy ${((row.stage1 as { accuracy: number }).accuracy * 100).toFixed(2)} %`);
    model.loadStateDict(real.stateDict());
  }
  prepareQat(model, biRealPlan(model, { realDownsample }));
  const epochs = variant === 'c2' ? 2 * EPOCHS : EPOCHS;
  fitModel(model, epochs, `${variant} binary`, SEED + (variant === 'd' ? 1 : 0));
  const acc = accuracy(model);
  const size = packedBytes(model);
  const conversion = tryConvert(model);
  Object.assign(row, { binaryEpochs: epochs, accuracy: acc, packedBytes: size.bytes, layers: size.layers, convert: conversion, seconds: (performance.now() - started) / 1000 });
  rows.push(row);
  log(`${variant}: accuracy ${(acc * 100).toFixed(2)} %, ${size.bytes} bytes, convert ${conversion.ok ? 'ok' : 'failed'} (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  save();
}
log(`wrote ${OUT}`);
