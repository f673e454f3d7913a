/**
 * Multiplication-reduced LeNet-5 on MNIST: all-mult, all-shift (DeepShift-PS), all-adder (AdderNet)
 * and hybrid (conv1/fc3 mult, conv2 adder, fc1/fc2 shift), each trained with the same short recipe
 * from scratch and, for the mult-free variants, by progressive pretraining (the all-mult model's
 * trained weights converted with toMulFree, then fine-tuned with the same recipe); operation counts
 * and compute energy per sample; and the integer shift kernel against the fake-shift model.
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/mulfree/lenet5.ts [--epochs 1] [--train N] [--test N]
 *       [--lr 1e-3] [--seed 0] [--variants all-mult,all-shift,all-adder,hybrid] [--adder-sgd LR] [--out PATH]
 *
 * Recipe: Adam (lr 1e-3), batch 64, `--epochs` epochs over the first `--train` training images
 * (shuffled with `--seed`), manualSeed(seed) before building each model. With --adder-sgd LR the
 * adder weights take SGD (momentum 0.9, that LR) as in the AdderNet paper, everything else Adam. Results:
 * bench/results/mulfree.json (written atomically) and a table on stdout.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.LOWBIT_THREADS ??= '2';

const { getBackend } = await import('../../src/backend/index.ts');
const { DATASET_STATS, DataLoader, loadDataset, take } = await import('../../src/data/index.ts');
const { LeNet5, BatchNorm } = await import('../../src/nn/index.ts');
const mf = await import('../../src/nn/mulfree/index.ts');
const { Adam, SGD } = await import('../../src/optim/index.ts');
const { manualSeed, Tensor } = await import('../../src/tensor/index.ts');
const { fit, evaluate } = await import('../../src/train/fit.ts');
const { noGrad } = await import('../../src/autograd/engine.ts');
const { writeTextAtomic } = await import('../../src/quant/search/report.ts');

import type { Dataset } from '../../src/data/index.ts';
import type { Module, TensorModule } from '../../src/nn/index.ts';
import type { LeNet5MulFreeVariant, LayerOps } from '../../src/nn/mulfree/index.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '..', '..');

interface Flags { epochs: number; train: number | null; test: number | null; lr: number; seed: number; variants: LeNet5MulFreeVariant[]; out: string; adderSgd: number | null }

function parseFlags(argv: readonly string[]): Flags {
  const flags: Flags = { epochs: 1, train: null, test: null, lr: 1e-3, seed: 0, variants: ['all-mult', 'all-shift', 'all-adder', 'hybrid'], out: join(ROOT, 'bench', 'results', 'mulfree.json'), adderSgd: null };
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
    if (a === '--epochs') flags.epochs = positive(value());
    else if (a === '--train') flags.train = positive(value());
    else if (a === '--test') flags.test = positive(value());
    else if (a === '--lr') {
      flags.lr = Number(value());
      if (!(flags.lr > 0)) throw new Error('--lr must be a positive number');
    } else if (a === '--seed') {
      flags.seed = Number(value());
      if (!Number.isInteger(flags.seed) || flags.seed < 0) throw new Error('--seed must be a non-negative integer');
    }
    else if (a === '--variants') {
      const known = Object.keys(mf.LENET5_MULFREE_PLANS);
      flags.variants = value().split(',').map((s) => {
        if (!known.includes(s)) throw new Error(`unknown variant '${s}' (known: ${known.join(', ')})`);
        return s as LeNet5MulFreeVariant;
      });
    } else if (a === '--adder-sgd') {
      flags.adderSgd = Number(value());
      if (!(flags.adderSgd > 0)) throw new Error('--adder-sgd must be a positive learning rate');
    } else if (a === '--out') flags.out = resolve(value());
    else throw new Error(`unknown flag ${a}`);
  }
  return flags;
}

const flags = parseFlags(process.argv.slice(2));
const fullTrain = loadDataset('mnist', 'train');
const fullTest = loadDataset('mnist', 'test');
const trainSet: Dataset = flags.train ? take(fullTrain, flags.train) : fullTrain;
const testSet: Dataset = flags.test ? take(fullTest, flags.test) : fullTest;
const normalize = DATASET_STATS.mnist;
const trainLoader = () => new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed: flags.seed, normalize });
const testLoader = () => new DataLoader(testSet, { batchSize: 500, normalize });

interface Row {
  variant: string;
  start: 'scratch' | 'progressive';
  testAccuracy: number;
  /** Test accuracy after reestimateBatchNorm (50 training batches), for models with batch norms; else null. */
  testAccuracyBnReestimated: number | null;
  /** Test accuracy right after conversion, before fine-tuning (progressive rows only). */
  convertedAccuracy: number | null;
  trainSeconds: number;
}

/**
 * Adam over every parameter; with --adder-sgd LR, the adder layers' weights instead take the
 * AdderNet paper's optimizer (SGD, momentum 0.9, that LR) on top of their adaptive η scaling.
 */
function optimizerFor(model: TensorModule) {
  if (flags.adderSgd === null) return new Adam(model.parameters(), { lr: flags.lr });
  const adderWeights = new Set(model.modules().flatMap((m) => (m instanceof mf.AdderConv2d || m instanceof mf.AdderLinear ? [m.weight] : [])));
  const rest = model.parameters().filter((p) => !adderWeights.has(p));
  const adam = new Adam(rest, { lr: flags.lr });
  if (adderWeights.size === 0) return adam;
  const sgd = new SGD([...adderWeights], { lr: flags.adderSgd, momentum: 0.9 });
  return { step: () => { adam.step(); sgd.step(); }, zeroGrad: () => { adam.zeroGrad(); sgd.zeroGrad(); }, lr: flags.lr };
}

function train(model: TensorModule): number {
  const started = process.cpuUsage();
  fit(model, { trainLoader: trainLoader(), optimizer: optimizerFor(model), epochs: flags.epochs, seed: flags.seed, progress: true });
  const used = process.cpuUsage(started);
  return (used.user + used.system) / 1e6;
}

const accuracy = (model: TensorModule): number => evaluate(model, testLoader()).accuracy;

/** Accuracy with the batch norms' statistics re-estimated on 50 training batches (null without BN). */
function reestimatedAccuracy(model: TensorModule): number | null {
  const batches = (function* () { for (const { x } of trainLoader()) yield x; })();
  return mf.reestimateBatchNorm(model, batches, 50) > 0 ? accuracy(model) : null;
}

const rows: Row[] = [];
const ops: Record<string, LayerOps[]> = {};
const models = new Map<string, TensorModule>();

// The all-mult model first: it is a variant of its own and the start of every progressive row.
manualSeed(flags.seed);
const multModel = new LeNet5();
const multSeconds = train(multModel);
rows.push({ variant: 'all-mult', start: 'scratch', testAccuracy: accuracy(multModel), testAccuracyBnReestimated: null, convertedAccuracy: null, trainSeconds: multSeconds });
ops['all-mult'] = mf.countMulFreeOps(multModel, [1, 28, 28]);
console.log(`all-mult scratch: ${(rows[0]!.testAccuracy * 100).toFixed(2)} %`);

for (const variant of flags.variants) {
  if (variant === 'all-mult') continue;
  manualSeed(flags.seed);
  const scratch = mf.mulFreeLeNet5(variant);
  const scratchSeconds = train(scratch);
  rows.push({ variant, start: 'scratch', testAccuracy: accuracy(scratch), testAccuracyBnReestimated: reestimatedAccuracy(scratch), convertedAccuracy: null, trainSeconds: scratchSeconds });
  ops[variant] = mf.countMulFreeOps(scratch, [1, 28, 28]);
  models.set(`${variant}/scratch`, scratch);
  console.log(`${variant} scratch: ${(rows.at(-1)!.testAccuracy * 100).toFixed(2)} % (BN re-estimated: ${pct(rows.at(-1)!.testAccuracyBnReestimated)})`);

  manualSeed(flags.seed);
  const progressive = new LeNet5();
  progressive.loadStateDict(multModel.stateDict());
  mf.toMulFree(progressive, mf.LENET5_MULFREE_PLANS[variant]);
  // The adder layers' batch norms start with fresh statistics: estimate them on one training
  // pass before the converted model is scored (no weight changes).
  calibrateBatchNorm(progressive);
  const converted = accuracy(progressive);
  const progressiveSeconds = train(progressive);
  rows.push({ variant, start: 'progressive', testAccuracy: accuracy(progressive), testAccuracyBnReestimated: reestimatedAccuracy(progressive), convertedAccuracy: converted, trainSeconds: progressiveSeconds });
  models.set(`${variant}/progressive`, progressive);
  console.log(`${variant} progressive: converted ${(converted * 100).toFixed(2)} %, fine-tuned ${(rows.at(-1)!.testAccuracy * 100).toFixed(2)} % (BN re-estimated: ${pct(rows.at(-1)!.testAccuracyBnReestimated)})`);
}

function pct(v: number | null): string {
  return v === null ? '-' : `${(v * 100).toFixed(2)} %`;
}

/** BN running statistics from 20 training batches in train mode, without gradients (cumulative average). */
function calibrateBatchNorm(model: Module): void {
  if (!model.modules().some((m) => m instanceof BatchNorm)) return;
  model.train();
  noGrad(() => {
    let i = 0;
    for (const { x } of trainLoader()) {
      (model as TensorModule).forward(x);
      if (++i === 20) break;
    }
  });
}

// Integer shift kernel vs the fake-shift model (trained all-shift models): each shift layer's
// input quantized to int8 with a per-layer scale max|x|/127 from 500 training images.
const agreement: Record<string, { argmaxAgreement: number; maxAbsLogitDiff: number; integerAccuracy: number; fakeAccuracy: number }> = {};
for (const [key, model] of models) {
  if (!key.startsWith('all-shift')) continue;
  agreement[key] = integerAgreement(model);
  const a = agreement[key]!;
  console.log(`${key} integer kernel: argmax agreement ${(a.argmaxAgreement * 100).toFixed(2)} %, max |logit diff| ${a.maxAbsLogitDiff.toFixed(4)}, accuracy int ${(a.integerAccuracy * 100).toFixed(2)} % vs fake ${(a.fakeAccuracy * 100).toFixed(2)} %`);
}

function integerAgreement(model: TensorModule) {
  type ShiftLayer = InstanceType<typeof mf.ShiftConv2d> | InstanceType<typeof mf.ShiftLinear>;
  const layers = model.modules().filter((m): m is ShiftLayer => m instanceof mf.ShiftConv2d || m instanceof mf.ShiftLinear);
  const maxAbs = new Map<ShiftLayer, number>();
  model.eval();
  const calib = new DataLoader(take(fullTrain, 500), { batchSize: 500, normalize });
  for (const layer of layers) {
    const forward = layer.forward;
    Object.defineProperty(layer, 'forward', {
      configurable: true, writable: true, value: (x: InstanceType<typeof Tensor>) => {
        let m = maxAbs.get(layer) ?? 0;
        for (let i = 0; i < x.size; i++) m = Math.max(m, Math.abs(x.data[i]!));
        maxAbs.set(layer, m);
        return forward.call(layer, x);
      },
    });
  }
  noGrad(() => { for (const { x } of calib) model.forward(x); });
  for (const layer of layers) Reflect.deleteProperty(layer, 'forward');
  let agree = 0, total = 0, maxDiff = 0, intCorrect = 0, fakeCorrect = 0;
  for (const { x, y } of testLoader()) {
    const fake = noGrad(() => model.forward(x));
    for (const layer of layers) {
      const scale = (maxAbs.get(layer) || 1) / 127;
      Object.defineProperty(layer, 'forward', { configurable: true, writable: true, value: (input: InstanceType<typeof Tensor>) => layer.forwardInteger(input, scale) });
    }
    const int = noGrad(() => model.forward(x));
    for (const layer of layers) Reflect.deleteProperty(layer, 'forward');
    const classes = fake.shape[1]!;
    for (let n = 0; n < fake.shape[0]!; n++) {
      let bestF = 0, bestI = 0;
      for (let c = 0; c < classes; c++) {
        const i = n * classes + c;
        maxDiff = Math.max(maxDiff, Math.abs(fake.data[i]! - int.data[i]!));
        if (fake.data[i]! > fake.data[n * classes + bestF]!) bestF = c;
        if (int.data[i]! > int.data[n * classes + bestI]!) bestI = c;
      }
      const label = y.data[n]!;
      if (bestF === bestI) agree++;
      if (bestF === label) fakeCorrect++;
      if (bestI === label) intCorrect++;
      total++;
    }
  }
  return { argmaxAgreement: agree / total, maxAbsLogitDiff: maxDiff, integerAccuracy: intCorrect / total, fakeAccuracy: fakeCorrect / total };
}

// Operation counts and energy per sample.
const energyRows = Object.entries(ops).map(([variant, layers]) => {
  const sum = (k: 'mults' | 'shifts' | 'adds') => layers.reduce((s, l) => s + l[k], 0);
  const weightBits = layers.reduce((s, l) => s + l.weights * l.weightBits, 0);
  return { variant, mults: sum('mults'), shifts: sum('shifts'), adds: sum('adds'), computeEnergyPj: mf.mulFreeEnergy(layers), weightKbit: weightBits / 1000, layers };
});
const multEnergy = energyRows.find((r) => r.variant === 'all-mult')!.computeEnergyPj;

console.log('\nvariant     start        test acc   BN re-est.  (converted)  train CPU s');
for (const r of rows) console.log(`${r.variant.padEnd(11)} ${r.start.padEnd(12)} ${pct(r.testAccuracy).padStart(9)}  ${pct(r.testAccuracyBnReestimated).padStart(9)}  ${pct(r.convertedAccuracy).padStart(9)}    ${r.trainSeconds.toFixed(0).padStart(8)}`);
console.log('\nvariant     mults     shifts    adds      energy pJ/sample (x all-mult)  weight kbit');
for (const r of energyRows) console.log(`${r.variant.padEnd(11)} ${String(r.mults).padEnd(9)} ${r.shifts.toFixed(0).padEnd(9)} ${String(r.adds).padEnd(9)} ${r.computeEnergyPj.toFixed(0).padStart(8)} (${(r.computeEnergyPj / multEnergy).toFixed(3)})          ${r.weightKbit.toFixed(1)}`);

writeTextAtomic(flags.out, JSON.stringify({
  when: new Date().toISOString(),
  backend: getBackend(),
  command: `node --import tsx bench/mulfree/lenet5.ts ${process.argv.slice(2).join(' ')}`.trim(),
  recipe: { optimizer: flags.adderSgd === null ? 'Adam' : `Adam; adder weights SGD momentum 0.9 lr ${flags.adderSgd}`, lr: flags.lr, batchSize: 64, epochs: flags.epochs, trainImages: trainSet.length, testImages: testSet.length, seed: flags.seed },
  energyConstantsPj: mf.DEFAULT_MULFREE_ENERGY,
  accuracy: rows,
  ops: energyRows,
  integerShiftKernel: agreement,
}, null, 2) + '\n');
console.log(`\nwrote ${flags.out}`);
