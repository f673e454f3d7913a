import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { crossEntropy, manualSeed, rand, Tensor, type Tensor as TensorType } from '../../tensor/index.ts';
import { Adam } from '../../optim/index.ts';
import { BatchNorm1d, BatchNorm2d, cnn, Conv2d, Flatten, lenet5, Linear, MaxPool2d, Module, ReLU, Sequential, Tanh } from '../../nn/index.ts';
import { prepareQat } from '../qat/index.ts';
import { uint4Lsq, int4PerChannelSym } from '../config/index.ts';
import { bitOpsCost, bitSerialCost } from '../search/costs.ts';
import { CyclicShuffle, PalQuantConv2d, PalQuantLinear } from './layers.ts';
import { palQuantLayers, toPalQuant, PalQuantNet } from './convert.ts';
import { palQuantCost } from './cost.ts';

const probe = (): TensorType => rand([2, 1, 28, 28]);

describe('toPalQuant', () => {
  it('turns LeNet-5 into a G-wide chain: float first/last layers, grouped 2-bit layers, shuffles after the poolings', () => {
    manualSeed(30);
    const net = toPalQuant(lenet5(), { groups: 2, wBits: 2, aBits: 2, probe: probe() });
    assert.ok(net instanceof PalQuantNet);
    assert.equal(net.shuffle, 'cyclic');
    const layers = [...net];
    assert.deepEqual(layers.map((l) => l.constructor.name), [
      'Conv2d', 'ReLU', 'MaxPool2d', 'CyclicShuffle', 'PalQuantConv2d', 'ReLU', 'MaxPool2d', 'CyclicShuffle', 'Flatten',
      'PalQuantLinear', 'ReLU', 'PalQuantLinear', 'ReLU', 'Linear',
    ]);
    const conv1 = layers[0] as Conv2d;
    assert.deepEqual([conv1.inChannels, conv1.outChannels], [1, 12]);
    assert.equal((layers[3] as CyclicShuffle).channels, 12);
    const conv2 = layers[4] as PalQuantConv2d;
    assert.deepEqual(conv2.weight.shape, [32, 6, 5, 5]);
    assert.equal(conv2.geometry().outChannels, 16);
    assert.equal((layers[7] as CyclicShuffle).channels, 32);
    assert.deepEqual((layers[9] as PalQuantLinear).weight.shape, [240, 400]);
    assert.deepEqual((layers[11] as PalQuantLinear).weight.shape, [168, 120]);
    const fc3 = layers[13] as Linear;
    assert.deepEqual([fc3.inFeatures, fc3.outFeatures], [168, 10]);
    assert.equal(palQuantLayers(net).length, 5);
    for (const { layer } of palQuantLayers(net)) assert.equal(layer.weightQuantizer.spec.bits, 2);
    assert.deepEqual(net.forward(probe()).shape, [2, 10]);
  });

  it('keeps the groups apart without shuffle, widens BatchNorm layers, and G = 1 is the plain b-bit network', () => {
    manualSeed(31);
    const plain = toPalQuant(cnn(), { groups: 2, wBits: 2, aBits: 2, shuffle: 'none', probe: probe() });
    const kinds = [...plain].map((l) => l.constructor.name);
    assert.ok(!kinds.includes('CyclicShuffle'));
    const bns = [...plain].filter((l) => l instanceof BatchNorm2d || l instanceof BatchNorm1d).map((l) => (l as BatchNorm2d).numFeatures);
    assert.deepEqual(bns, [32, 32, 64, 64, 256]);
    const single = toPalQuant(cnn(), { groups: 1, wBits: 4, aBits: 4 });
    assert.equal(single.shuffle, 'none');
    for (const { layer } of palQuantLayers(single)) {
      assert.equal(layer.groups, 1);
      assert.equal(layer.inputQuantizers.length, 1);
    }
    assert.deepEqual(single.forward(probe()).shape, [2, 10]);
  });

  it('learns: a few Adam steps on one batch lower the loss of the W2A2 G=2 LeNet-5', () => {
    manualSeed(32);
    const net = toPalQuant(lenet5(), { groups: 2, wBits: 2, aBits: 2 });
    const x = rand([8, 1, 28, 28]);
    const y = new Tensor(Int32Array.from({ length: 8 }, (_, i) => i % 4), [8]);
    const opt = new Adam(net.parameters(), { lr: 5e-3 });
    const losses: number[] = [];
    for (let step = 0; step < 6; step++) {
      const loss = crossEntropy(net.forward(x), y);
      losses.push(loss.data[0]!);
      opt.zeroGrad();
      loss.backward();
      opt.step();
    }
    assert.ok(losses[5]! < 0.85 * losses[0]!, `losses ${losses.map((l) => l.toFixed(3)).join(' ')}`);
  });

  it('refuses bad options and models it cannot convert', () => {
    const m = lenet5();
    assert.throws(() => toPalQuant(m, { groups: 0, wBits: 2, aBits: 2 }), /groups must be an integer/);
    assert.throws(() => toPalQuant(m, { groups: 1.5, wBits: 2, aBits: 2 }), /groups must be an integer/);
    assert.throws(() => toPalQuant(m, { groups: 2, wBits: 1, aBits: 2 }), /wBits must be an integer in \[2, 8\]/);
    assert.throws(() => toPalQuant(m, { groups: 2, wBits: 2, aBits: 9 }), /aBits must be an integer in \[1, 8\]/);
    assert.throws(() => toPalQuant(m, { groups: 2, wBits: 2, aBits: 2, shuffle: 'mix' as 'none' }), /shuffle must be 'cyclic' or 'none'/);
    assert.throws(() => toPalQuant(m, { groups: 1, wBits: 2, aBits: 2, shuffle: 'cyclic' }), /needs groups >= 2/);
    assert.throws(() => toPalQuant(m, { groups: 2, wBits: 2, aBits: 2, weightSpec: { kind: 'lsq', bits: 4 } }), /weightSpec.bits 4 differs from wBits 2/);
    assert.throws(() => toPalQuant(new Sequential(new Linear(4, 4), new Tanh(), new Linear(4, 4), new Linear(4, 2)), { groups: 2, wBits: 2, aBits: 2 }), /is a Tanh; supported/);
    assert.throws(() => toPalQuant(new Sequential(new Linear(4, 4), new ReLU(), new Linear(4, 2)), { groups: 2, wBits: 2, aBits: 2 }), /has 2 Conv2d\/Linear layers/);
    const prepared = prepareQat(lenet5(), { weight: int4PerChannelSym, activation: uint4Lsq });
    assert.throws(() => toPalQuant(prepared, { groups: 2, wBits: 2, aBits: 2 }), /already quantized/);
    // Registration order differs from the forward order: the probe exposes it.
    class Swapped extends Module {
      readonly b = this.registerModule('b', new Linear(8, 8));
      readonly a = this.registerModule('a', new Linear(8, 8));
      readonly c = this.registerModule('c', new Linear(8, 3));
      forward(x: TensorType): TensorType {
        return this.c.forward(this.b.forward(this.a.forward(x)));
      }
    }
    assert.throws(() => toPalQuant(new Swapped(), { groups: 2, wBits: 2, aBits: 2, probe: rand([2, 8]) }), /not a chain/);
    class WrongShapes extends Swapped {
      override forward(x: TensorType): TensorType {
        return x;
      }
    }
    assert.throws(() => toPalQuant(new WrongShapes(), { groups: 2, wBits: 2, aBits: 2, probe: rand([2, 8]) }), /not a chain/);
    assert.throws(() => toPalQuant(new Sequential(new Conv2d(1, 2, 3), new MaxPool2d(2), new Flatten()), { groups: 2, wBits: 2, aBits: 2 }), /has 1 Conv2d/);
  });
});

describe('palQuantCost', () => {
  it('counts MACs in closed form and prices them with the search cost models (4-bit = 4x 2-bit on 2-bit bricks)', () => {
    manualSeed(33);
    // LeNet-5 per group: conv2 16·10·10·6·25, fc1 120·400, fc2 84·120.
    const perGroup = 16 * 100 * 150 + 120 * 400 + 84 * 120;
    const w4a4 = palQuantCost(toPalQuant(lenet5(), { groups: 1, wBits: 4, aBits: 4 }), [1, 28, 28]);
    const pal = palQuantCost(toPalQuant(lenet5(), { groups: 2, wBits: 2, aBits: 2, shuffle: 'none' }), [1, 28, 28]);
    const palShuffle = palQuantCost(toPalQuant(lenet5(), { groups: 2, wBits: 2, aBits: 2 }), [1, 28, 28]);
    const w2a2 = palQuantCost(toPalQuant(lenet5(), { groups: 1, wBits: 2, aBits: 2 }), [1, 28, 28]);
    const cyclesPerMac = 1 / (512 * 16);
    assert.equal(w4a4.unit, 'cycles');
    assert.equal(w4a4.quantizedMacs, perGroup);
    assert.ok(Math.abs(w4a4.total - perGroup * 4 * cyclesPerMac) < 1e-9);
    assert.ok(Math.abs(w2a2.total - perGroup * cyclesPerMac) < 1e-9);
    assert.equal(pal.quantizedMacs, 2 * perGroup);
    assert.ok(Math.abs(pal.total - 2 * perGroup * cyclesPerMac) < 1e-9);
    assert.ok(Math.abs(w4a4.total / pal.total - 2) < 1e-12);
    // Shuffle 1x1 convs: 12 channels at 14x14 (6 per group) and 32 at 5x5 (16 per group).
    const shuffleMacs = 12 * 196 * 6 + 32 * 25 * 16;
    assert.equal(palShuffle.quantizedMacs, 2 * perGroup + shuffleMacs);
    assert.deepEqual(palShuffle.layers.filter((l) => l.role === 'shuffle').map((l) => l.macs), [12 * 196 * 6, 32 * 25 * 16]);
    // Float layers: conv1 (12 channels at 28x28, 25 taps) and fc3 (168 -> 10).
    assert.equal(pal.floatMacs, 12 * 784 * 25 + 168 * 10);
    const bitops = palQuantCost(toPalQuant(lenet5(), { groups: 2, wBits: 2, aBits: 2, shuffle: 'none' }), [1, 28, 28], bitOpsCost());
    assert.equal(bitops.total, 2 * perGroup * 4);
    const wideBricks = palQuantCost(toPalQuant(lenet5(), { groups: 1, wBits: 4, aBits: 4 }), [1, 28, 28], bitSerialCost({ brickBits: 4 }));
    assert.ok(Math.abs(wideBricks.total - perGroup * cyclesPerMac) < 1e-9);
  });

  it('leaves the LSQ quantizers uninitialised and the mode unchanged', () => {
    const net = toPalQuant(lenet5(), { groups: 2, wBits: 2, aBits: 2 });
    net.train();
    palQuantCost(net, [1, 28, 28]);
    assert.equal(net.training, true);
    for (const { layer } of palQuantLayers(net)) {
      assert.equal(layer.weightQuantizer.fakeQuantEnabled, true);
      assert.equal(layer.weightQuantizer.buffers().some((b) => b.data[0] !== 0), false);
    }
  });
});
