/**
 * Vertical-layered LeNet-5 on MNIST: once QAT over a width set vs a dedicated QAT model per width,
 * all fine-tuned from the same fp32 checkpoint with the same recipe (Adam, cosine, batch 64).
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/qat/vertical.ts [--epochs 1] [--bits 8,4,2] [--train N] [--test N] [--lr 2e-4]
 *       [--rows once,dedicated,standard] [--cascade top|stepwise] [--seed N (data order)] [--out PATH]
 * --epochs 0 (rows once): no training, the fp32 weights cascaded as they are, activation ranges
 * calibrated on 8 training batches per width: what the rounding rule alone does.
 *
 * Rows (test accuracy of the fake-quant model and of the IntModel from `convertAtBits`, every width):
 * - once:        prepareVertical({bitsSet}), trainOnce (Σ_b L_b per step), one model for every width;
 * - dedicated-b: prepareVertical with the same width set (same grids, same cascade), trained on L_b
 *                only; evaluated at every width (the other widths' activation ranges are
 *                calibrated on the first test batch), to show what happens without once QAT;
 * - standard-b:  lowbit's usual QAT of that width, prepareQat(qconfigFor('w{b}a{b}', 'ste')): its
 *                own min-max grid per width (s = max|w|/M_b), for reference.
 * First and last layers stay 8-bit in every row (lowbit's default plan rule).
 * The fp32 start is runs/qat/ckpt/lenet5-mnist_fp32.safetensors (bench/qat/matrix.ts writes it); when
 * missing, a 1-epoch fp32 model is trained here first. Results: bench/results/vertical.json.
 */
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.LOWBIT_THREADS ??= '2';

const { getBackend } = await import('../../src/backend/index.ts');
const { DATASET_STATS, DataLoader, loadDataset, take } = await import('../../src/data/index.ts');
const nn = await import('../../src/nn/index.ts');
const { Adam, CosineAnnealingLR } = await import('../../src/optim/index.ts');
const { manualSeed, Tensor } = await import('../../src/tensor/index.ts');
const { fit, evaluate } = await import('../../src/train/fit.ts');
const { loadCheckpoint, saveCheckpoint } = await import('../../src/train/checkpoint.ts');
const { prepareQat, qatParamGroups } = await import('../../src/quant/qat/index.ts');
const { qconfigFor } = await import('../../src/quant/config/index.ts');
const { convert } = await import('../../src/runtime/convert.ts');
const { noGrad } = await import('../../src/autograd/engine.ts');
const vertical = await import('../../src/quant/vertical/index.ts');

import type { Module, TensorModule } from '../../src/nn/index.ts';
import type { Dataset } from '../../src/data/index.ts';
import type { IntModel } from '../../src/runtime/intmodel.ts';
import { gitCommit } from '../lib.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '..', '..');

interface Flags {
  epochs: number;
  bits: number[];
  train: number | null;
  test: number | null;
  lr: number;
  rows: string[];
  cascade: 'top' | 'stepwise';
  seed: number;
  out: string;
}

function parseFlags(argv: readonly string[]): Flags {
  const flags: Flags = { epochs: 1, bits: [8, 4, 2], train: null, test: null, lr: 2e-4, rows: ['once', 'dedicated', 'standard'], cascade: 'top', seed: 0, out: join(ROOT, 'bench', 'results', 'vertical.json') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const positive = (v: string): number => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a positive integer, got ${v}`);
      return n;
    };
    if (a === '--epochs') {
      flags.epochs = Number(value());
      if (!Number.isInteger(flags.epochs) || flags.epochs < 0) throw new Error('--epochs must be a non-negative integer (0: no training, activation ranges calibrated on 8 training batches per width)');
    }
    else if (a === '--bits') flags.bits = value().split(',').map((s) => positive(s.trim()));
    else if (a === '--train') flags.train = positive(value());
    else if (a === '--test') flags.test = positive(value());
    else if (a === '--lr') flags.lr = Number(value());
    else if (a === '--seed') flags.seed = Number(value());
    else if (a === '--rows') flags.rows = value().split(',').map((r) => r.trim());
    else if (a === '--cascade') {
      const c = value();
      if (c !== 'top' && c !== 'stepwise') throw new Error(`--cascade must be top or stepwise, got ${c}`);
      flags.cascade = c;
    }
    else if (a === '--out') flags.out = resolve(value());
    else throw new Error(`unknown flag '${a}'`);
  }
  if (!(flags.lr > 0)) throw new Error('--lr must be positive');
  if (!Number.isInteger(flags.seed) || flags.seed < 0) throw new Error('--seed must be a non-negative integer');
  for (const r of flags.rows) if (!['once', 'dedicated', 'standard'].includes(r)) throw new Error(`--rows: unknown row '${r}' (once, dedicated, standard)`);
  return flags;
}

const flags = parseFlags(process.argv.slice(2));
const bitsSet = [...new Set(flags.bits)].sort((a, b) => b - a);
const log = (line: string): void => void process.stdout.write(`${line}\n`);

const fullTrain = loadDataset('mnist', 'train');
const fullTest = loadDataset('mnist', 'test');
const trainSet: Dataset = flags.train ? take(fullTrain, flags.train) : fullTrain;
const testSet: Dataset = flags.test ? take(fullTest, flags.test) : fullTest;
const normalize = DATASET_STATS.mnist;
const SEED = flags.seed;
const trainLoader = (): InstanceType<typeof DataLoader> => new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed: SEED, normalize });
const testLoader = new DataLoader(testSet, { batchSize: 500, normalize });

/** The whole test set as one normalised tensor and its labels (for IntModel runs). */
const testX = new Tensor(new Float32Array(testSet.length * 784), [testSet.length, 1, 28, 28]);
const testY = new Int32Array(testSet.length);
{
  let at = 0;
  for (const { x, y } of testLoader) {
    (testX.data as Float32Array).set(x.data as Float32Array, at * 784);
    testY.set(y.data as Int32Array, at);
    at += y.shape[0]!;
  }
}
const calibration = new Tensor((testX.data as Float32Array).slice(0, 256 * 784), [256, 1, 28, 28]);

const FP32_PATH = join(ROOT, 'runs', 'qat', 'ckpt', 'lenet5-mnist_fp32.safetensors');

function fp32Model(): TensorModule & Module {
  manualSeed(SEED);
  const model = nn.lenet5();
  if (existsSync(FP32_PATH)) {
    model.loadStateDict(loadCheckpoint(FP32_PATH).model);
    return model;
  }
  log(`no ${FP32_PATH}: training a 1-epoch fp32 LeNet-5 first`);
  const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
  fit(model, { trainLoader: trainLoader(), optimizer, epochs: 1, seed: SEED, progress: true });
  mkdirSync(dirname(FP32_PATH), { recursive: true });
  saveCheckpoint(FP32_PATH, { model: model.stateDict(), epoch: 1, config: { note: 'bench/qat/vertical.ts fallback fp32 LeNet-5, 1 epoch' } });
  return fp32Model();
}

function optimizerFor(model: Module): { optimizer: InstanceType<typeof Adam>; scheduler: InstanceType<typeof CosineAnnealingLR> } {
  const optimizer = new Adam(qatParamGroups(model, { lr: flags.lr, quantLrScale: 0.5, binaryLrScale: 1, weightDecay: 0 }), { lr: flags.lr });
  return { optimizer, scheduler: new CosineAnnealingLR(optimizer, { tMax: Math.max(flags.epochs, 1) }) };
}

function argmaxRows(logits: ArrayLike<number>, classes: number): Int32Array {
  const out = new Int32Array(logits.length / classes);
  for (let i = 0; i < out.length; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
    out[i] = best;
  }
  return out;
}

/**
 * IntModel test accuracy on the whole test set, and its argmax agreement with the fake-quant
 * model's own (float32, eval-mode) forward on the same images. (compareWithFakeQuant's float64
 * simulation of 10,000 images is too slow here; `convert` ran it on the 256-image sample.)
 */
function intAccuracy(model: TensorModule & Module, intModel: IntModel): { accuracy: number; agreement: number } {
  const intPred = argmaxRows(intModel.run(testX), 10);
  const wasTraining = model.training;
  model.eval();
  let correct = 0;
  let agree = 0;
  noGrad(() => {
    for (let from = 0; from < testY.length; from += 500) {
      const n = Math.min(500, testY.length - from);
      const x = new Tensor((testX.data as Float32Array).slice(from * 784, (from + n) * 784), [n, 1, 28, 28]);
      const logits = model.forward(x);
      const pred = argmaxRows(logits.data as Float32Array, logits.shape[1]!);
      for (let i = 0; i < n; i++) if (pred[i] === intPred[from + i]) agree++;
    }
  });
  model.train(wasTraining);
  for (let i = 0; i < testY.length; i++) if (intPred[i] === testY[i]) correct++;
  return { accuracy: correct / testY.length, agreement: agree / testY.length };
}

/** --epochs 0: activation ranges of every width observed on 8 training batches (no weight update). */
function calibrateWidths(model: TensorModule & Module): void {
  model.train();
  for (const b of bitsSet) {
    vertical.withActiveBits(model, b, () => noGrad(() => {
      let n = 0;
      for (const { x } of trainLoader()) {
        model.forward(x);
        if (++n === 8) break;
      }
    }));
  }
  model.eval();
}

interface WidthResult {
  bits: number;
  fakeQuant: number;
  intModel: number;
  intAgreement: number;
}

interface Row {
  id: string;
  trainedAt: number[];
  widths: WidthResult[];
  trainSeconds: number;
  note?: string;
}

function measureVertical(model: TensorModule & Module, widths: readonly number[]): WidthResult[] {
  return widths.map((bits) => {
    const fakeQuant = vertical.evaluateAtBits(model, testLoader, bits).accuracy;
    const intModel = vertical.convertAtBits(model, bits, { sample: calibration });
    const ints = vertical.withActiveBits(model, bits, () => intAccuracy(model, intModel));
    log(`    ${bits}-bit: fake-quant ${(fakeQuant * 100).toFixed(2)} %, IntModel ${(ints.accuracy * 100).toFixed(2)} % (argmax agreement ${(ints.agreement * 100).toFixed(2)} %)`);
    return { bits, fakeQuant, intModel: ints.accuracy, intAgreement: ints.agreement };
  });
}

const rows: Row[] = [];
const fp32Accuracy = evaluate(fp32Model(), testLoader).accuracy;
log(`fp32 start: ${(fp32Accuracy * 100).toFixed(2)} % (${existsSync(FP32_PATH) ? FP32_PATH : 'trained here'}); train ${trainSet.length}, test ${testSet.length}, epochs ${flags.epochs}, Adam lr ${flags.lr} cosine, batch 64, backend ${getBackend()}`);

// ---- once QAT over the whole set
if (flags.rows.includes('once')) {
  log(`once QAT over {${bitsSet.join(', ')}}`);
  const model = vertical.prepareVertical(fp32Model(), { bitsSet, cascade: flags.cascade });
  const { optimizer, scheduler } = optimizerFor(model);
  const t0 = performance.now();
  vertical.trainOnce(model, { trainLoader: trainLoader(), optimizer, scheduler, epochs: flags.epochs, log: (l) => log(`  ${l}`) });
  if (flags.epochs === 0) calibrateWidths(model);
  const trainSeconds = (performance.now() - t0) / 1000;
  const widths = measureVertical(model, bitsSet);
  // The single stored artifact: bake, then every width again from the baked codes.
  const codes = vertical.bakeVertical(model);
  const codeBytes = codes.reduce((s, c) => s + c.codes.length * Math.ceil(c.topBits / 8) + c.scale.length * 4, 0);
  const baked = bitsSet.map((b) => vertical.evaluateAtBits(model, testLoader, b).accuracy);
  const same = baked.every((a, i) => a === widths[i]!.fakeQuant);
  log(`  baked (B-bit codes + scales of the vertical layers: ${codeBytes} bytes): accuracies ${same ? 'identical' : `differ: ${baked.join(', ')}`}`);
  rows.push({ id: flags.cascade === 'top' ? 'once' : `once-${flags.cascade}`, trainedAt: bitsSet, widths, trainSeconds, note: `baked artifact ${same ? 'gives identical accuracies' : 'DIFFERS'}; vertical-layer codes+scales ${codeBytes} bytes` });
}

// ---- dedicated: same vertical grids, one width's loss
for (const b of flags.rows.includes('dedicated') ? bitsSet : []) {
  log(`dedicated ${b}-bit (vertical grid, trained on L_${b} only)`);
  const model = vertical.prepareVertical(fp32Model(), { bitsSet, cascade: flags.cascade });
  const { optimizer, scheduler } = optimizerFor(model);
  const t0 = performance.now();
  vertical.trainOnce(model, { trainLoader: trainLoader(), optimizer, scheduler, epochs: flags.epochs, bitsSet: [b], log: (l) => log(`  ${l}`) });
  const trainSeconds = (performance.now() - t0) / 1000;
  rows.push({ id: `dedicated-${b}`, trainedAt: [b], widths: measureVertical(model, bitsSet), trainSeconds });
}

// ---- standard lowbit QAT per width
if (flags.rows.includes('standard')) {
  for (const b of bitsSet) {
    if (b !== 8 && b !== 4 && b !== 2) continue;
    const scheme = `w${b}a${b}` as 'w8a8' | 'w4a4' | 'w2a2';
    log(`standard ${scheme} ste (min-max grid of its own width)`);
    const model = prepareQat(fp32Model(), { default: qconfigFor(scheme, 'ste') });
    const { optimizer, scheduler } = optimizerFor(model);
    const t0 = performance.now();
    const history = fit(model, { trainLoader: trainLoader(), testLoader, optimizer, scheduler, epochs: flags.epochs, seed: SEED, progress: true });
    const trainSeconds = (performance.now() - t0) / 1000;
    const fakeQuant = history.epochs.at(-1)!.testAccuracy!;
    model.eval();
    const intModel = convert(model, { sample: calibration });
    const ints = intAccuracy(model, intModel);
    log(`    ${b}-bit: fake-quant ${(fakeQuant * 100).toFixed(2)} %, IntModel ${(ints.accuracy * 100).toFixed(2)} %`);
    rows.push({ id: `standard-${b}`, trainedAt: [b], widths: [{ bits: b, fakeQuant, intModel: ints.accuracy, intAgreement: ints.agreement }], trainSeconds });
  }
}

// ---- report
const pct = (x: number | undefined): string => (x === undefined ? '—' : (x * 100).toFixed(2));
const header = `| model | trained at | ${bitsSet.map((b) => `${b}-bit fake-quant / IntModel`).join(' | ')} | train s |`;
const lines = [header, `|${' --- |'.repeat(bitsSet.length + 3)}`];
for (const r of rows) {
  const cells = bitsSet.map((b) => {
    const w = r.widths.find((x) => x.bits === b);
    return w ? `${pct(w.fakeQuant)} / ${pct(w.intModel)}` : '—';
  });
  lines.push(`| ${r.id} | {${r.trainedAt.join(', ')}} | ${cells.join(' | ')} | ${r.trainSeconds.toFixed(0)} |`);
}
log(`\n${lines.join('\n')}`);

const commit = gitCommit();
const result = {
  format: 'lowbit-vertical-bench', version: 1, command: `LOWBIT_THREADS=2 node --import tsx bench/qat/vertical.ts ${process.argv.slice(2).join(' ')}`.trim(),
  commit, backend: getBackend(), threads: process.env.LOWBIT_THREADS, finishedAt: new Date().toISOString(),
  fp32Start: { path: existsSync(FP32_PATH) ? 'runs/qat/ckpt/lenet5-mnist_fp32.safetensors' : null, accuracy: fp32Accuracy },
  trainSamples: trainSet.length, testSamples: testSet.length, epochs: flags.epochs, lr: flags.lr, seed: SEED, bitsSet, cascade: flags.cascade, rows, table: lines.join('\n'),
};
mkdirSync(dirname(flags.out), { recursive: true });
const tmp = `${flags.out}.${process.pid}.tmp`;
writeFileSync(tmp, `${JSON.stringify(result, null, 1)}\n`);
renameSync(tmp, flags.out);
log(`results: ${flags.out}`);
