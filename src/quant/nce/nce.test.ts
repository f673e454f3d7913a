import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { withBackend } from '../../backend/registry.ts';
import { noGrad } from '../../autograd/engine.ts';
import { ReLU } from '../../nn/activation.ts';
import { BatchNorm2d } from '../../nn/batchnorm.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Linear } from '../../nn/linear.ts';
import { Module } from '../../nn/module.ts';
import { cnn, lenet5 } from '../../nn/models/index.ts';
import { Sequential } from '../../nn/sequential.ts';
import { crossEntropy } from '../../tensor/ops.ts';
import { manualSeed, Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { Adam } from '../../optim/adam.ts';
import { loadDataset, DATASET_STATS } from '../../data/index.ts';
import { normalizeInPlace } from '../../data/dataset.ts';
import { compareWithFakeQuant, convert } from '../../runtime/index.ts';
import { bitOpsCost, sizeCost, totalCost, uniformAssignment, energyCost } from '../search/costs.ts';
import { describeLayers } from '../search/layers.ts';
import { blobBatches } from '../search/testing.ts';
import { qconfigFor } from '../config/qconfig.ts';
import { prepareQat } from '../qat/prepare.ts';
import { architectureCost, architectureLayers, costTerms, expandModel, expectedCostTensor, modelChain, nceSearch, NceError, repairChoice, fillChoice, Supernet } from './index.ts';

const SHAPE = [1, 28, 28];

function images(seed: number, n: number): Tensor {
  const rng = new Rng(seed);
  return new Tensor(Float32Array.from({ length: n * 784 }, () => rng.normal()), [n, 1, 28, 28]);
}

function smallCnn() {
  manualSeed(3);
  return cnn({ channels: [4, 6], hidden: 12 });
}

/** Every choice index vector of a supernet (the full architecture grid). */
function allChoices(sizes: readonly number[]): number[][] {
  let out: number[][] = [[]];
  for (const k of sizes) out = out.flatMap((c) => Array.from({ length: k }, (_, i) => [...c, i]));
  return out;
}

describe('modelChain', () => {
  it('lists the leaves of LeNet-5 and the CNN in forward order', () => {
    assert.deepEqual(modelChain(lenet5(), SHAPE).map((l) => l.name), ['conv1', 'relu1', 'pool1', 'conv2', 'relu2', 'pool2', 'flatten', 'fc1', 'relu3', 'fc2', 'relu4', 'fc3']);
    const chain = modelChain(smallCnn(), SHAPE);
    assert.equal(chain.length, 20);
    assert.equal(chain[14]!.name, 'classifier.0');
    assert.deepEqual(chain[14]!.outShape, [6 * 49]);
  });

  it('refuses a forward that is not the chain of its leaves, and prepared models', () => {
    class Residual extends Module {
      readonly a = this.registerModule('a', new Linear(4, 4));
      readonly b = this.registerModule('b', new Linear(4, 4));
      forward(x: Tensor): Tensor {
        const h = this.a.forward(x);
        return this.b.forward(h).add(h);
      }
    }
    assert.throws(() => modelChain(new Residual(), [4]), NceError);
    const prepared = prepareQat(lenet5(), { default: qconfigFor('w4a4', 'lsq') });
    assert.throws(() => modelChain(prepared, SHAPE), /prepared/);
  });
});

describe('Supernet channel masks', () => {
  // Every mask choice of the widest network equals the narrower network cut out of it.
  const check = (make: () => Module & { forward(x: Tensor): Tensor }, choices: number[][], exact: boolean) => {
    manualSeed(5);
    const supernet = new Supernet(make(), SHAPE, { rng: new Rng(7) });
    const x = images(11, 3);
    supernet.net.eval();
    for (const choice of choices) {
      const narrow = supernet.extract(choice);
      narrow.eval();
      supernet.setChoice(choice);
      const [masked, direct] = noGrad(() => [supernet.net.forward(x), narrow.forward(x)]);
      assert.deepEqual(masked.shape, direct.shape);
      if (exact) assert.deepEqual([...masked.data], [...direct.data], `choice ${choice.join(',')}`);
      else masked.data.forEach((v, i) => assert.ok(Math.abs(v - direct.data[i]!) <= 1e-5 * (1 + Math.abs(v)), `choice ${choice.join(',')} [${i}]: ${v} vs ${direct.data[i]}`));
    }
  };
  const lenetChoices = [[0, 0, 0, 0], [2, 2, 2, 2], [4, 1, 3, 0], [1, 4, 0, 4], [4, 4, 4, 4]];
  const cnnChoices = [[0, 0, 0, 0, 0], [2, 2, 2, 2, 2], [4, 0, 3, 1, 2], [1, 3, 4, 0, 4]];
  it('give exactly the narrower network (reference backend, bit for bit): LeNet-5 and the CNN with BN', () => {
    withBackend('reference', () => {
      check(lenet5, lenetChoices, true);
      check(smallCnn, cnnChoices, true);
    });
  });
  it('give the narrower network on the default backend within 1e-5 (summation order of the kernels)', () => {
    check(lenet5, lenetChoices, false);
    check(smallCnn, cnnChoices, false);
  });
});

describe('resizeChain / expandModel', () => {
  it('widens and narrows LeNet-5 layers: forward shapes hold and kept channels inherit their weights exactly', () => {
    manualSeed(2);
    const base = lenet5();
    const wide = expandModel(base, SHAPE, { conv1: 9, conv2: 10, fc1: 200, fc2: 42 });
    const layers = [...wide];
    const conv1 = layers[0] as Conv2d;
    const conv2 = layers[3] as Conv2d;
    const fc1 = layers[7] as Linear;
    const fc2 = layers[9] as Linear;
    const fc3 = layers[11] as Linear;
    assert.deepEqual([conv1.outChannels, conv2.inChannels, conv2.outChannels, fc1.inFeatures, fc1.outFeatures, fc2.inFeatures, fc2.outFeatures, fc3.inFeatures, fc3.outFeatures], [9, 9, 10, 250, 200, 200, 42, 42, 10]);
    assert.deepEqual(wide.forward(images(1, 2)).shape, [2, 10]);
    const b = base as unknown as Record<'conv1' | 'conv2' | 'fc1' | 'fc2' | 'fc3', Conv2d & Linear>;
    // conv1 widened: all 6 old filters kept; conv2: inputs 0..5 of its first 10 filters kept.
    for (let o = 0; o < 6; o++) for (let k = 0; k < 25; k++) assert.equal(conv1.weight.data[o * 25 + k], b.conv1.weight.data[o * 25 + k]);
    for (let o = 0; o < 10; o++) for (let i = 0; i < 6; i++) for (let k = 0; k < 25; k++) {
      assert.equal(conv2.weight.data[(o * 9 + i) * 25 + k], b.conv2.weight.data[(o * 6 + i) * 25 + k]);
    }
    // fc1 behind the flatten: features c·25 + s of the 10 kept channels, first 120 rows.
    for (let o = 0; o < 120; o++) for (let f = 0; f < 250; f++) assert.equal(fc1.weight.data[o * 250 + f], b.fc1.weight.data[o * 400 + f]);
    assert.deepEqual([...fc1.bias!.data.subarray(0, 120)], [...b.fc1.bias!.data]);
    // fc2 narrowed to 42 rows, inputs widened: old 120 columns kept; fc3 keeps 42 of 84 inputs.
    for (let o = 0; o < 42; o++) for (let i = 0; i < 120; i++) assert.equal(fc2.weight.data[o * 200 + i], b.fc2.weight.data[o * 120 + i]);
    for (let o = 0; o < 10; o++) for (let i = 0; i < 42; i++) assert.equal(fc3.weight.data[o * 42 + i], b.fc3.weight.data[o * 84 + i]);
    assert.deepEqual([...fc3.bias!.data], [...b.fc3.bias!.data]);
    // New filters are drawn fresh, not zero.
    assert.ok(conv1.weight.data.subarray(6 * 25).some((v) => v !== 0));
  });

  it('carries BatchNorm parameters and running statistics of kept channels; refuses changing the output layer', () => {
    const base = smallCnn();
    const bn = base.features.at(1) as BatchNorm2d;
    bn.runningMean!.data.set([0.1, 0.2, 0.3, 0.4]);
    bn.weight!.data.set([1.5, 2.5, 3.5, 4.5]);
    const wide = expandModel(base, SHAPE, { 'features.0': 6, 'features.3': 3 });
    const bn1 = [...wide][1] as BatchNorm2d;
    assert.deepEqual([...bn1.runningMean!.data.subarray(0, 4)], [...bn.runningMean!.data]);
    assert.deepEqual([...bn1.weight!.data], [1.5, 2.5, 3.5, 4.5, 1, 1]);
    assert.equal(([...wide][4] as BatchNorm2d).numFeatures, 3);
    assert.deepEqual(wide.forward(images(2, 2)).shape, [2, 10]);
    assert.throws(() => expandModel(base, SHAPE, { 'classifier.5': 12 }), /output layer/);
    assert.throws(() => expandModel(base, SHAPE, { 'features.0': 0 }), /positive integer/);
  });
});

describe('NCE cost', () => {
  it('architectureLayers equals describeLayers of the built model', () => {
    for (const [make, widths] of [[lenet5, { conv1: 3, conv2: 24, fc1: 180, fc2: 42 }], [smallCnn, { 'features.0': 2, 'features.7': 9, 'classifier.1': 18 }]] as const) {
      const base = make();
      const built = expandModel(base, SHAPE, widths);
      const expected = describeLayers(built, SHAPE);
      const got = architectureLayers(modelChain(base, SHAPE), widths);
      assert.deepEqual(got.map((l) => [l.weightCount, l.macs, l.outChannels, l.reduction, [...l.inShape], [...l.outShape]]),
        expected.map((l) => [l.weightCount, l.macs, l.outChannels, l.reduction, [...l.inShape], [...l.outShape]]));
    }
  });

  it('the constraint term equals the expected cost over the architecture distribution (enumerated on built models)', () => {
    manualSeed(4);
    const base = lenet5();
    const supernet = new Supernet(base, SHAPE, { ratios: [0.5, 1, 2], rng: new Rng(1) });
    const rng = new Rng(9);
    for (const l of supernet.layers) l.logits.data.set(l.widths.map(() => 2 * rng.normal()));
    const p = noGrad(() => supernet.probabilities(0.7));
    const names = supernet.layers.map((l) => l.name);
    const grid = allChoices(supernet.layers.map((l) => l.widths.length));
    const costs = [sizeCost(), bitOpsCost()].map((model) => ({ model, bits: model.name === 'size' ? { w: 2, a: 2 } : { w: 1, a: 1 } }));
    const built = grid.map((choice) => describeLayers(expandModel(base, SHAPE, supernet.widthsOf(choice)), SHAPE));
    for (const { model, bits } of costs) {
      let enumerated = 0;
      grid.forEach((choice, g) => {
        const probability = choice.reduce((q, k, i) => q * p[i]!.data[k]!, 1);
        enumerated += probability * totalCost(model, built[g]!, uniformAssignment(built[g]!, bits.w, bits.a));
      });
      const closed = noGrad(() => expectedCostTensor(costTerms(model, supernet.chain, names, bits), supernet.expectedWidths(p)).item());
      assert.ok(Math.abs(closed - enumerated) <= 1e-5 * enumerated, `${model.name}: ${closed} vs ${enumerated}`);
    }
    // The base architecture's cost is the plain weight count (size at 1 bit) of LeNet-5: 61,470 weights.
    assert.equal(architectureCost(sizeCost(), supernet.chain, {}), 61470);
  });

  it('its gradient in the logits matches finite differences', () => {
    const supernet = new Supernet(lenet5(), SHAPE, { rng: new Rng(1) });
    const terms = costTerms(bitOpsCost(), supernet.chain, supernet.layers.map((l) => l.name));
    const rng = new Rng(3);
    for (const l of supernet.layers) l.logits.data.set(l.widths.map(() => rng.normal()));
    const value = () => noGrad(() => expectedCostTensor(terms, supernet.expectedWidths(supernet.probabilities(1))).item());
    expectedCostTensor(terms, supernet.expectedWidths(supernet.probabilities(1))).backward();
    for (const l of supernet.layers) {
      for (let k = 0; k < l.widths.length; k++) {
        const h = 1e-2;
        const v0 = l.logits.data[k]!;
        l.logits.data[k] = v0 + h;
        const up = value();
        l.logits.data[k] = v0 - h;
        const down = value();
        l.logits.data[k] = v0;
        const numeric = (up - down) / (2 * h);
        assert.ok(Math.abs(l.logits.grad!.data[k]! - numeric) <= 2e-3 * Math.max(1000, Math.abs(numeric)), `${l.name}[${k}]: ${l.logits.grad!.data[k]} vs ${numeric}`);
      }
    }
  });

  it('refuses cost models that are not bilinear in the widths', () => {
    assert.throws(() => costTerms(energyCost(), modelChain(lenet5(), SHAPE), ['conv1']), /not bilinear/);
  });
});

describe('nceSearch', () => {
  it('repairChoice steps down until the budget holds, where the logits lose least', () => {
    const widths = [[2, 4, 8], [10, 20, 40]];
    // Cost 1·c0 + c0·c1: bilinear as in a chain.
    const cost = (c: readonly number[]) => widths[0]![c[0]!]! + widths[0]![c[0]!]! * widths[1]![c[1]!]!;
    const r = repairChoice([2, 2], [[0, 0, 5], [0, 4.9, 5]], cost, 200);
    assert.deepEqual(r, [2, 1], 'layer 1 gives up 0.1 of logit, layer 0 gives up 5');
    assert.ok(cost(r) <= 200);
    assert.deepEqual(repairChoice([0, 1], [[0, 0, 0], [0, 0, 0]], cost, 1000), [0, 1], 'within budget: unchanged');
    assert.throws(() => repairChoice([2, 2], [[0, 0, 0], [0, 0, 0]], cost, 10), /narrowest/);
  });

  it('fillChoice widens where the logits gain most while the budget holds', () => {
    const widths = [[2, 4, 8], [10, 20, 40]];
    const cost = (c: readonly number[]) => widths[0]![c[0]!]! + widths[0]![c[0]!]! * widths[1]![c[1]!]!;
    // From [0, 0] (cost 22), budget 90: layer 1 gains more (+3 vs +1): [0, 1] = 42; then [0, 2] = 82
    // (gain 2) beats [1, 1] = 84 (gain 1); then every step costs > 90: stop.
    assert.deepEqual(fillChoice([0, 0], [[0, 1, 2], [0, 3, 5]], [3, 3], cost, 90), [0, 2]);
    // Equal gains after [0, 1] ([0, 2] = 82 and [1, 1] = 84, both +1): the earlier layer.
    assert.deepEqual(fillChoice([0, 0], [[0, 1, 2], [0, 3, 4]], [3, 3], cost, 90), [1, 1]);
    assert.deepEqual(fillChoice([2, 2], [[0, 0, 0], [0, 0, 0]], [3, 3], cost, 1e9), [2, 2], 'all widest: unchanged');
  });

  it('never returns an over-budget architecture, even when the penalty is too weak to hold the budget', async () => {
    const rng = new Rng(1);
    const train = blobBatches(rng, 4, 32);
    manualSeed(0);
    const model = new Sequential(new Linear(8, 16), new ReLU(), new Linear(16, 16), new ReLU(), new Linear(16, 4));
    const expanded: number[] = [];
    for (const budgetRatio of [0.55, 0.8, 1]) {
      for (const [lambda, archLr] of [[1e-6, 0.3], [10, 0.05]] as const) {
        const r = await nceSearch(model, { inputShape: [8], train, steps: 12, warmupSteps: 2, budgetRatio, lambda, archLr, penalty: 'over', qat: { default: qconfigFor('w2a2', 'lsq'), keepFirstLast8bit: false } });
        assert.ok(r.cost <= r.budget, `ratio ${budgetRatio}, λ ${lambda}: cost ${r.cost} > budget ${r.budget}`);
        assert.equal(r.cost, architectureCost(sizeCost(), modelChain(model, [8]), r.widths));
        assert.equal(r.baseCost, 8 * 16 + 16 * 16 + 16 * 4);
        expanded.push(architectureCost(sizeCost(), modelChain(model, [8]), r.argmaxWidths) / r.budget);
      }
    }
    assert.ok(expanded.some((ratio) => ratio > 1), `the repair was exercised at least once (argmax/budget: ${expanded.map((v) => v.toFixed(2)).join(', ')})`);
    await assert.rejects(nceSearch(model, { inputShape: [8], train, steps: 2, budget: 10 }), /narrowest/);
  });
});

describe('expanded LeNet-5 through QAT and convert', () => {
  it('an NCE-expanded LeNet-5 at W2A2 converts to an IntModel matching its fake-quant forward', () => {
    manualSeed(1);
    const model = expandModel(lenet5(), SHAPE, { conv1: 9, conv2: 12, fc1: 90, fc2: 126 }, { inherit: false });
    prepareQat(model, { default: qconfigFor('w2a2', 'lsq') });
    const train = loadDataset('mnist', 'train', { limit: 1024 });
    const batch = (ds: typeof train, from: number, n: number) => {
      const x = ds.images.slice(from * 784, (from + n) * 784);
      normalizeInPlace(x, [1, 28, 28], DATASET_STATS.mnist);
      return { x: new Tensor(x, [n, 1, 28, 28]), y: new Tensor(Int32Array.from(ds.labels.subarray(from, from + n)), [n]) };
    };
    const opt = new Adam(model.parameters(), { lr: 2e-3 });
    model.train();
    for (let step = 0; step < 16; step++) {
      const { x, y } = batch(train, step * 64, 64);
      const loss = crossEntropy(model.forward(x), y);
      opt.zeroGrad();
      loss.backward();
      opt.step();
    }
    model.eval();
    const test = batch(loadDataset('mnist', 'test', { limit: 128 }), 0, 128);
    const im = convert(model, { inputShape: SHAPE });
    const r = compareWithFakeQuant(model, im, test.x);
    assert.ok(r.argmaxAgreement >= 0.99, `argmax agreement ${r.argmaxAgreement}`);
    assert.equal(r.argmaxAgreementFloat64, 1);
    assert.ok(r.maxLogitLsb <= 1, `logits ${r.maxLogitLsb} LSB from the float64 simulation`);
    for (const [layer, d] of Object.entries(r.layerMaxDiff)) assert.equal(d, 0, `layer ${layer}`);
    assert.deepEqual(Object.keys(r.layerMaxDiff), ['0', '3', '7', '9', '11']);
  });
});
