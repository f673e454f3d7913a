import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../autograd/engine.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { manualSeed, mul, rand, randn, sum, Tensor } from '../../tensor/index.ts';
import { BatchNorm2d, Conv2d, Linear } from '../../nn/index.ts';
import { createQuantizer } from '../quantizers/quantizer.ts';
import { QuantConv2d, QuantLinear } from '../qat/index.ts';
import { cyclicPermutation, cyclicPermuteGroups, invertPermutation } from './permute.ts';
import { CyclicShuffle, PalQuantConv2d, PalQuantLinear, type GroupedConvSource, type PalQuantSpecs } from './layers.ts';
import { palQuantActivationSpec, palQuantWeightSpec } from './convert.ts';
import type { Module } from '../../nn/module.ts';
import { Quantizer } from '../quantizers/quantizer.ts';

const specs = (w: number, a: number): PalQuantSpecs => ({ weight: palQuantWeightSpec(w), activation: palQuantActivationSpec(a) });

function setFakeQuant(module: Module, on: boolean): void {
  for (const m of module.modules()) if (m instanceof Quantizer) m.fakeQuantEnabled = on;
}

/** A float64 grouped conv source: weight [outChannels, inChannels/groups, k, k]. */
function conv64(inChannels: number, outChannels: number, k: number, groups: number, padding = 0): GroupedConvSource {
  return {
    weight: randn([outChannels, inChannels / groups, k, k], { dtype: 'float64', std: 0.5 }),
    bias: randn([outChannels], { dtype: 'float64' }),
    inChannels, outChannels, kernelSize: [k, k], stride: [1, 1], padding: [padding, padding], dilation: [1, 1], groups,
  };
}

describe('cyclic group permutation', () => {
  it('has the closed form source[g·m + j] = ((g + shift) mod G)·m + j', () => {
    assert.deepEqual([...cyclicPermutation(6, 3, 1)], [2, 3, 4, 5, 0, 1]);
    assert.deepEqual([...cyclicPermutation(6, 3, -1)], [4, 5, 0, 1, 2, 3]);
    assert.deepEqual([...cyclicPermutation(4, 2, 1)], [2, 3, 0, 1]);
    assert.deepEqual([...cyclicPermutation(5, 1, 1)], [0, 1, 2, 3, 4]);
  });

  it('moves the channels of a tensor as the index map says, is inverted by −shift and has period G', () => {
    manualSeed(1);
    const G = 3;
    const x = randn([2, 6, 2, 3]);
    const y = cyclicPermuteGroups(x, G, 1);
    const source = cyclicPermutation(6, G, 1);
    const plane = 6;
    for (let n = 0; n < 2; n++) {
      for (let c = 0; c < 6; c++) {
        for (let p = 0; p < plane; p++) assert.equal(y.data[(n * 6 + c) * plane + p], x.data[(n * 6 + source[c]!) * plane + p]);
      }
    }
    assert.deepEqual([...cyclicPermuteGroups(y, G, -1).data], [...x.data]);
    let z = x;
    for (let i = 0; i < G; i++) z = cyclicPermuteGroups(z, G, 1);
    assert.deepEqual([...z.data], [...x.data]);
    assert.deepEqual([...invertPermutation(cyclicPermutation(12, 4, 1))], [...cyclicPermutation(12, 4, -1)]);
    assert.deepEqual([...invertPermutation(cyclicPermutation(12, 4, 3))], [...cyclicPermutation(12, 4, 1)]);
  });

  it('passes gradients back through the inverse permutation (finite differences, float64)', () => {
    manualSeed(2);
    const x = randn([2, 6, 2, 2], { dtype: 'float64' }).requiresGrad_(true);
    const r = gradcheck((t) => cyclicPermuteGroups(t, 3, 2), [x]);
    assert.ok(r.maxRelativeError < 1e-8, `relative error ${r.maxRelativeError}`);
  });

  it('refuses bad groups, shifts and non-permutations', () => {
    assert.throws(() => cyclicPermutation(6, 4), /do not split into 4 equal groups/);
    assert.throws(() => cyclicPermutation(6, 0), /positive integer/);
    assert.throws(() => cyclicPermutation(6, 2, 0.5), /shift must be an integer/);
    assert.throws(() => cyclicPermuteGroups(randn([2, 5, 2, 2]), 2), /5 channels do not split/);
    assert.throws(() => invertPermutation([0, 0, 1]), /not a permutation/);
  });
});

describe('PalQuantConv2d / PalQuantLinear', () => {
  it('with G = 1 equals a plain QuantConv2d with the same quantizers (forward and gradients, exactly)', () => {
    manualSeed(3);
    const conv = new Conv2d(3, 4, 3, { padding: 1 });
    const pal = new PalQuantConv2d(conv, 1, specs(2, 2));
    const plain = new QuantConv2d(conv, createQuantizer(palQuantWeightSpec(2), { role: 'weight', shape: conv.weight.shape, channelAxis: 0 }), createQuantizer(palQuantActivationSpec(2), { role: 'activation' }));
    const x = rand([2, 3, 5, 5], { high: 2 });
    const yPal = pal.forward(x);
    const yPlain = plain.forward(x);
    assert.deepEqual([...yPal.data], [...yPlain.data]);
    assert.ok(yPal.data.some((v) => v !== 0));
    const r = randn(yPal.shape);
    const gPal = grad(sum(mul(yPal, r)), [conv.weight, pal.weightQuantizer.parameters()[0]!, pal.inputQuantizers[0]!.parameters()[0]!]);
    const gPlain = grad(sum(mul(plain.forward(x), r)), [conv.weight, plain.weightQuantizer!.parameters()[0]!, plain.inputQuantizer!.parameters()[0]!]);
    for (let i = 0; i < 3; i++) assert.deepEqual([...gPal[i]!.data], [...gPlain[i]!.data]);
  });

  it('PalQuantLinear with G = 1 equals QuantLinear with the same weights and quantizers', () => {
    manualSeed(4);
    const lin = new Linear(7, 5);
    const pal = new PalQuantLinear(lin.weight, lin.bias, 1, specs(2, 2));
    const plain = new QuantLinear(lin, createQuantizer(palQuantWeightSpec(2), { role: 'weight', shape: lin.weight.shape, channelAxis: 0 }), createQuantizer(palQuantActivationSpec(2), { role: 'activation' }));
    const x = rand([3, 7], { high: 2 });
    const a = pal.forward(x);
    const b = plain.forward(x);
    assert.deepEqual(a.shape, b.shape);
    for (let i = 0; i < a.size; i++) assert.ok(Math.abs(a.data[i]! - b.data[i]!) <= 1e-6 * (1 + Math.abs(b.data[i]!)), `${a.data[i]} vs ${b.data[i]}`);
  });

  it('runs G independent groups, each with its own activation quantizer', () => {
    manualSeed(5);
    const G = 2;
    const pal = PalQuantConv2d.fromConv(new Conv2d(3, 4, 3), G, specs(2, 2));
    assert.deepEqual(pal.weight.shape, [8, 3, 3, 3]);
    assert.equal(pal.inputQuantizers.length, G);
    // Group 1's input ten times larger: its learned step is initialised ten times larger.
    const x0 = rand([2, 3, 5, 5]);
    const x = new Tensor(Float32Array.from([...Array(2 * 6 * 25).keys()].map((i) => {
      const n = Math.floor(i / 150);
      const c = Math.floor(i / 25) % 6;
      return x0.data[(n * 3 + (c % 3)) * 25 + (i % 25)]! * (c >= 3 ? 10 : 1);
    })), [2, 6, 5, 5]);
    const y = pal.forward(x);
    assert.deepEqual(y.shape, [2, 8, 3, 3]);
    const s0 = pal.inputQuantizers[0]!.parameters()[0]!.data[0]!;
    const s1 = pal.inputQuantizers[1]!.parameters()[0]!.data[0]!;
    assert.ok(Math.abs(s1 / s0 - 10) < 1e-4, `steps ${s0} ${s1}`);
    // Output group g depends on input group g only: the gradient of group 0's outputs vanishes on input group 1.
    const xg = x.detach().requiresGrad_(true);
    const yg = pal.forward(xg);
    const [gx] = grad(sum(mul(yg, new Tensor(Float32Array.from({ length: yg.size }, (_, i) => (Math.floor(i / 9) % 8 < 4 ? 1 : 0)), yg.shape))), [xg]);
    for (let i = 0; i < gx!.size; i++) {
      const c = Math.floor(i / 25) % 6;
      if (c >= 3) assert.equal(gx!.data[i], 0);
    }
    assert.ok(gx!.data.some((v) => v !== 0));
  });

  it('routes each activation step gradient to its own group (equal to that quantizer run on the slice alone)', () => {
    manualSeed(6);
    const G = 3;
    const pal = PalQuantConv2d.fromConv(new Conv2d(2, 2, 1, { bias: false }), G, specs(2, 2));
    const x = rand([2, 6, 3, 3], { high: 3 });
    setFakeQuant(pal, true);
    const xq = pal.quantizeInput(x);
    const r = randn(xq.shape);
    const steps = pal.inputQuantizers.map((q) => q.parameters()[0]!);
    const grads = grad(sum(mul(xq, r)), steps);
    for (let g = 0; g < G; g++) {
      const alone = createQuantizer(palQuantActivationSpec(2), { role: 'activation' });
      const slice = new Tensor(Float32Array.from({ length: 2 * 2 * 9 }, (_, i) => x.data[(Math.floor(i / 18) * 6 + g * 2 + (Math.floor(i / 9) % 2)) * 9 + (i % 9)]!), [2, 2, 3, 3]);
      const rs = new Tensor(Float32Array.from({ length: 36 }, (_, i) => r.data[(Math.floor(i / 18) * 6 + g * 2 + (Math.floor(i / 9) % 2)) * 9 + (i % 9)]!), [2, 2, 3, 3]);
      const ys = alone.forward(slice);
      const [gs] = grad(sum(mul(ys, rs)), [alone.parameters()[0]!]);
      assert.equal(alone.parameters()[0]!.data[0], steps[g]!.data[0]);
      assert.ok(Math.abs(gs!.data[0]! - grads[g]!.data[0]!) <= 1e-6 * (1 + Math.abs(gs!.data[0]!)), `group ${g}: ${gs!.data[0]} vs ${grads[g]!.data[0]}`);
      assert.notEqual(grads[g]!.data[0], 0);
    }
  });

  it('matches finite differences in x, weight and bias with fake quantization off (float64)', () => {
    manualSeed(7);
    const src = conv64(4, 6, 3, 2, 1);
    const pal = new PalQuantConv2d(src, 2, specs(2, 2));
    setFakeQuant(pal, false);
    const x = randn([2, 4, 4, 4], { dtype: 'float64' }).requiresGrad_(true);
    const r = gradcheck((t) => pal.forward(t), [x, src.weight, src.bias!]);
    assert.ok(r.maxRelativeError < 1e-7, `relative errors ${r.relativeErrors.join(', ')}`);
    const lw = randn([6, 5], { dtype: 'float64' }).requiresGrad_(true);
    const lb = randn([6], { dtype: 'float64' }).requiresGrad_(true);
    const lin = new PalQuantLinear(lw, lb, 3, specs(2, 2));
    setFakeQuant(lin, false);
    const xl = randn([3, 15], { dtype: 'float64' }).requiresGrad_(true);
    const rl = gradcheck((t) => lin.forward(t), [xl, lw, lb]);
    assert.ok(rl.maxRelativeError < 1e-7, `relative errors ${rl.relativeErrors.join(', ')}`);
  });

  it('CyclicShuffle matches finite differences (float64, fake quantization off, batch-statistics BN)', () => {
    manualSeed(8);
    const shuffle = new CyclicShuffle(6, 3, specs(2, 2));
    // A float32 BN's parameters cannot meet float64 inputs: batch statistics only, no affine part.
    shuffle.setSubmodule('bn', new BatchNorm2d(6, { affine: false, trackRunningStats: false }));
    assert.ok(shuffle.bn.runningMean === null);
    setFakeQuant(shuffle, false);
    const x = rand([2, 6, 3, 3], { dtype: 'float64', low: -1, high: 1 }).requiresGrad_(true);
    const r = gradcheck((t) => shuffle.forward(t), [x]);
    assert.ok(r.maxRelativeError < 1e-6, `relative error ${r.maxRelativeError}`);
  });

  it('mixes groups: after k shuffles output group i depends on input groups i … i+k (mod G), on all after G − 1', () => {
    manualSeed(9);
    const G = 3;
    const C = 6;
    const m = C / G;
    for (let k = 0; k < G; k++) {
      const layers: Module[] = [PalQuantConv2d.fromConv(new Conv2d(m, m, 3, { padding: 1 }), G, specs(2, 2))];
      for (let s = 0; s < k; s++) {
        layers.push(new CyclicShuffle(C, G, specs(2, 2)));
        layers.push(PalQuantConv2d.fromConv(new Conv2d(m, m, 3, { padding: 1 }), G, specs(2, 2)));
      }
      for (const l of layers) {
        l.eval();
        setFakeQuant(l, false);
      }
      const x = rand([1, C, 5, 5]).requiresGrad_(true);
      let y: Tensor = x;
      for (const l of layers) y = (l as PalQuantConv2d).forward(y);
      for (let i = 0; i < G; i++) {
        const mask = new Tensor(Float32Array.from({ length: y.size }, (_, e) => (Math.floor(Math.floor(e / 25) / m) === i ? 1 : 0)), y.shape);
        const [gx] = grad(sum(mul(y, mask)), [x]);
        const expected = new Set(Array.from({ length: k + 1 }, (_, t) => (i + t) % G));
        for (let j = 0; j < G; j++) {
          let mass = 0;
          for (let e = j * m * 25; e < (j + 1) * m * 25; e++) mass += Math.abs(gx!.data[e]!);
          if (expected.has(j)) assert.ok(mass > 1e-6, `k=${k}: output group ${i} should depend on input group ${j}`);
          else assert.equal(mass, 0, `k=${k}: output group ${i} must not depend on input group ${j}`);
        }
      }
    }
  });

  it('refuses bad shapes and groups', () => {
    assert.throws(() => PalQuantConv2d.fromConv(new Conv2d(3, 4, 3), 0, specs(2, 2)), /positive integer/);
    assert.throws(() => new PalQuantConv2d(new Conv2d(4, 4, 1, { groups: 2 }), 4, specs(2, 2)), /does not split into 4 parallel groups|do not split/);
    const pal = PalQuantConv2d.fromConv(new Conv2d(3, 4, 3), 2, specs(2, 2));
    assert.throws(() => pal.forward(randn([1, 3, 5, 5])), /expected input \[N, 6, H, W\]/);
    assert.throws(() => new PalQuantConv2d({ ...conv64(4, 4, 3, 2), weight: randn([4, 4, 3, 3], { dtype: 'float64' }) }, 2, specs(2, 2)), /does not match the geometry \[4, 2, 3, 3\]/);
    assert.throws(() => new CyclicShuffle(6, 3, specs(2, 2), 3), /shift must be an integer that is not a multiple/);
    assert.throws(() => new CyclicShuffle(5, 2, specs(2, 2)), /do not split/);
    assert.throws(() => PalQuantConv2d.fromConv(new Conv2d(3, 4, 3), 2, { weight: { kind: 'nope', bits: 2 }, activation: palQuantActivationSpec(2) }), /unknown quantizer kind 'nope'/);
  });
});
