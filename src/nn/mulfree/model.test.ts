import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { Rng } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { LeNet5 } from '../models/lenet5.ts';
import { Conv2d } from '../conv.ts';
import { Linear } from '../linear.ts';
import { AdderConv2d, AdderLinear, adderLinear } from './adder.ts';
import { ShiftConv2d, ShiftLinear } from './shift.ts';
import { DEFAULT_ENERGY_CONSTANTS } from '../../quant/search/costs.ts';
import { reestimateBatchNorm, countMulFreeOps, DEFAULT_MULFREE_ENERGY, LENET5_MULFREE_PLANS, mulFreeEnergy, mulFreeLeNet5, toMulFree } from './model.ts';

// LeNet-5 MACs per sample: conv1 6·25·28·28, conv2 16·150·10·10, fc1 400·120, fc2 120·84, fc3 84·10.
const MACS = [117_600, 240_000, 48_000, 10_080, 840];
const OUTPUTS = [6 * 28 * 28, 16 * 10 * 10, 120, 84, 10];

describe('multiplication-reduced LeNet-5', () => {
  it('toMulFree swaps layers by plan and keeps conv geometry and filters', () => {
    const model = mulFreeLeNet5('hybrid');
    assert.ok(model.conv1 instanceof Conv2d && model.fc3 instanceof Linear);
    assert.ok(model.conv2 instanceof AdderConv2d && model.fc1 instanceof ShiftLinear && model.fc2 instanceof ShiftLinear);
    const float = new LeNet5();
    const conv1Weights = Array.from((float.conv1 as Conv2d).weight.data);
    toMulFree(float, { conv1: 'adder', conv2: 'shift', fc3: 'adder' });
    const adder = float.conv1 as AdderConv2d;
    assert.ok(adder instanceof AdderConv2d && float.conv2 instanceof ShiftConv2d && float.fc3 instanceof AdderLinear);
    assert.deepEqual(adder.padding, [2, 2]);
    assert.deepEqual(Array.from(adder.weight.data), conv1Weights);
    assert.throws(() => toMulFree(new LeNet5(), { relu1: 'shift' }), /not a Conv2d or Linear/);
    assert.throws(() => toMulFree(new LeNet5(), { conv1: 'xnor' as 'shift' }), /unknown kind/);
  });

  it('a LeNet-5 whose weights are powers of two gives the same logits after conversion to shifts', () => {
    const model = new LeNet5();
    const rng = new Rng(12);
    for (const p of model.parameters()) if (p.rank > 1) for (let i = 0; i < p.size; i++) p.data[i] = (rng.uniform() < 0.5 ? -1 : 1) * 2 ** -(1 + Math.floor(rng.uniform() * 6));
    const x = new Tensor(Float32Array.from({ length: 2 * 784 }, (_, i) => Math.sin(i / 7)), [2, 1, 28, 28]);
    const before = Array.from(noGrad(() => model.forward(x)).data);
    toMulFree(model, LENET5_MULFREE_PLANS['all-shift']);
    assert.deepEqual(Array.from(noGrad(() => model.forward(x)).data), before);
  });

  it('operation counts per layer follow the stated rules; energy is their weighted sum', () => {
    const mult = countMulFreeOps(new LeNet5(), [1, 28, 28]);
    assert.deepEqual(mult.map((l) => l.macs), MACS);
    assert.deepEqual(mult.map((l) => l.mults), MACS);
    assert.deepEqual(mult.map((l) => l.adds), MACS.map((m, i) => m + OUTPUTS[i]!));
    const adder = countMulFreeOps(mulFreeLeNet5('all-adder'), [1, 28, 28]);
    assert.deepEqual(adder.map((l) => l.mults), OUTPUTS); // the BN scale after each adder layer
    assert.deepEqual(adder.map((l) => l.adds), MACS.map((m, i) => 2 * m + OUTPUTS[i]!));
    const shiftModel = mulFreeLeNet5('all-shift');
    const fc3 = shiftModel.fc3 as ShiftLinear;
    fc3.sign.data.fill(0, 0, 84); // zero the first output row: its 84 shifts and adds disappear
    const shift = countMulFreeOps(shiftModel, [1, 28, 28]);
    assert.equal(shift[4]!.shifts, 840 - 84);
    assert.equal(shift[4]!.weightBits, 6);
    const e = DEFAULT_MULFREE_ENERGY;
    assert.equal(e.mult, DEFAULT_ENERGY_CONSTANTS.mult8);
    assert.equal(e.add, DEFAULT_ENERGY_CONSTANTS.add32);
    const total = MACS.reduce((s, m) => s + m, 0);
    const outs = OUTPUTS.reduce((s, m) => s + m, 0);
    assert.ok(Math.abs(mulFreeEnergy(mult) - (total * 0.2 + (total + outs) * 0.1)) < 1e-6);
    assert.ok(Math.abs(mulFreeEnergy(adder, { add: 1, mult: 0 }) - (2 * total + outs)) < 1e-6);
  });
  it('reestimateBatchNorm: running stats become the cumulative average of the batches, momentum restored', () => {
    const layer = new AdderLinear(3, 2, { rng: new Rng(13) });
    const batches = [0, 1, 2].map((b) => new Tensor(Float32Array.from({ length: 12 }, (_, i) => Math.sin(i + 5 * b)), [4, 3]));
    const raw = batches.map((x) => noGrad(() => adderLinear(x, layer.weight)));
    layer.eval();
    assert.equal(reestimateBatchNorm(layer, batches, 2), 2);
    assert.equal(layer.training, false);
    assert.equal(layer.bn!.momentum, 0.1);
    for (let c = 0; c < 2; c++) {
      let meanSum = 0;
      let varSum = 0;
      for (const y of raw.slice(0, 2)) {
        const v = [0, 1, 2, 3].map((n) => y.data[n * 2 + c]!);
        const m = v.reduce((s, a) => s + a, 0) / 4;
        meanSum += m;
        varSum += v.reduce((s, a) => s + (a - m) ** 2, 0) / 3; // unbiased, as BatchNorm's running variance
      }
      assert.ok(Math.abs(layer.bn!.runningMean!.data[c]! - meanSum / 2) < 1e-4, `mean ${c}`);
      assert.ok(Math.abs(layer.bn!.runningVar!.data[c]! - varSum / 2) < 1e-3 * Math.max(1, varSum), `var ${c}`);
    }
  });
  it('reestimateBatchNorm: no batch leaves the statistics as they were; every module keeps its own mode', () => {
    const layer = new AdderLinear(3, 2, { rng: new Rng(13) });
    layer.bn!.runningMean!.data.set([3, -1]);
    layer.bn!.runningVar!.data.set([7, 2]);
    layer.train();
    layer.bn!.eval();
    assert.throws(() => reestimateBatchNorm(layer, []), /no input batches/);
    assert.deepEqual(Array.from(layer.bn!.runningMean!.data), [3, -1]);
    assert.deepEqual(Array.from(layer.bn!.runningVar!.data), [7, 2]);
    assert.equal(layer.bn!.momentum, 0.1);
    assert.equal(layer.training, true);
    assert.equal(layer.bn!.training, false);
    const x = new Tensor(Float32Array.from({ length: 12 }, (_, i) => Math.cos(i)), [4, 3]);
    assert.equal(reestimateBatchNorm(layer, [x]), 1);
    assert.equal(layer.training, true);
    assert.equal(layer.bn!.training, false);
    assert.notDeepEqual(Array.from(layer.bn!.runningMean!.data), [3, -1]);
  });
});
