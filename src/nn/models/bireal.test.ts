import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../autograd/engine.ts';
import { crossEntropy, manualSeed, randint, randn, Tensor } from '../../tensor/index.ts';
import { Adam } from '../../optim/index.ts';
import { BatchNorm2d } from '../batchnorm.ts';
import { Conv2d } from '../conv.ts';
import { Identity } from '../activation.ts';
import { BiRealBlock, BiRealResNet, SignClip, biRealResnet8, resnet8 } from './index.ts';
import { prepareQat, quantizedLayers } from '../../quant/qat/index.ts';
import { int8PerChannelSym, int8PerTensorAffine } from '../../quant/config/index.ts';
import type { QuantPlan } from '../../quant/config/index.ts';

const close = (actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void => {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol, `${what} [${i}]: ${actual[i]} vs ${expected[i]}`);
};
const plus = (a: Tensor, b: Tensor): Float64Array => Float64Array.from(a.data, (v, i) => v + b.data[i]!);

describe('BiRealBlock', () => {
  it("'double': y1 = main1(x) + x, y = main2(y1) + y1; 'block': y = main2(main1(x)) + x (identity shortcuts)", () => {
    manualSeed(3);
    const x = randn([2, 4, 6, 6]);
    for (const shortcut of ['double', 'block'] as const) {
      const b = new BiRealBlock(4, 4, 1, { shortcut });
      b.eval();
      assert.equal(b.downsample, null);
      assert.equal(b.add1 === null, shortcut === 'block');
      const h = b.main1.forward(x);
      const y = b.forward(x);
      if (shortcut === 'double') {
        const y1 = new Tensor(Float32Array.from(plus(h, x)), x.shape);
        close(y.data, plus(b.main2.forward(y1), y1), 1e-5, 'double');
      } else {
        close(y.data, plus(b.main2.forward(h), x), 1e-5, 'block');
      }
    }
  });

  it("'real' downsampling = BN(conv1×1(2×2 mean)), 'projection' = BN(conv1×1 stride 2), checked against explicit sums", () => {
    manualSeed(4);
    const x = randn([1, 2, 4, 4]);
    for (const downsample of ['real', 'projection'] as const) {
      const b = new BiRealBlock(2, 3, 2, { downsample, shortcut: 'block' });
      b.eval();
      const down = b.downsample!;
      const conv = down.at(downsample === 'real' ? 1 : 0) as Conv2d;
      assert.ok(conv instanceof Conv2d && conv.weight.shape.join() === '3,2,1,1');
      assert.ok(downsample === 'projection' || down.at(0).constructor.name === 'AvgPool2d');
      const bn = down.at(downsample === 'real' ? 2 : 1) as BatchNorm2d;
      // Running stats 0 / 1, γ 1, β 0: eval BN divides by sqrt(1 + eps).
      const inv = 1 / Math.sqrt(1 + bn.eps);
      const s = down.forward(x);
      assert.deepEqual(s.shape, [1, 3, 2, 2]);
      const at = (c: number, i: number, j: number): number => x.data[c * 16 + i * 4 + j]!;
      const expected: number[] = [];
      for (let o = 0; o < 3; o++) {
        for (let i = 0; i < 2; i++) {
          for (let j = 0; j < 2; j++) {
            let acc = 0;
            for (let c = 0; c < 2; c++) {
              const v = downsample === 'real'
                ? (at(c, 2 * i, 2 * j) + at(c, 2 * i + 1, 2 * j) + at(c, 2 * i, 2 * j + 1) + at(c, 2 * i + 1, 2 * j + 1)) / 4
                : at(c, 2 * i, 2 * j);
              acc += conv.weight.data[o * 2 + c]! * v;
            }
            expected.push(acc * inv);
          }
        }
      }
      close(s.data, expected, 1e-5, downsample);
      // The block output adds that shortcut to the main path.
      close(b.forward(x).data, plus(b.main2.forward(b.main1.forward(x)), s), 1e-5, `${downsample} block output`);
    }
  });

  it('SignClip: clip(x, −1, 1) with gradient 1{|x| ≤ 1}; sign(clip(x)) = sign(x)', () => {
    const x = new Tensor(Float32Array.of(-2.5, -1, -0.3, 0, 0.7, 1, 3), [7]).requiresGrad_();
    const y = new SignClip().forward(x);
    assert.deepEqual(y.toArray(), [-1, -1, Math.fround(-0.3), 0, Math.fround(0.7), 1, 1]);
    assert.deepEqual(grad(y, [x])[0]!.toArray(), [0, 1, 1, 1, 1, 1, 0]);
    const sgn = (v: number): number => (v >= 0 ? 1 : -1);
    assert.deepEqual(y.toArray().map(sgn), x.toArray().map(sgn));
    manualSeed(8);
    const r = randn([200], { std: 2 }).requiresGrad_();
    const clipped = new SignClip().forward(r);
    close(clipped.data, Array.from(r.data, (v) => Math.min(1, Math.max(-1, v))), 1e-6, 'clip of random values');
    assert.deepEqual(grad(clipped, [r])[0]!.toArray(), Array.from(r.data, (v) => (Math.abs(v) <= 1 ? 1 : 0)));
  });

  it('rejects a bad shortcut, downsampling or stride, naming the value', () => {
    assert.throws(() => new BiRealBlock(2, 2, 1, { shortcut: 'triple' as 'double' }), /shortcut must be one of double, block, got "triple"/);
    assert.throws(() => new BiRealBlock(2, 2, 1, { downsample: 'pool' as 'real' }), /downsample must be one of real, projection, got "pool"/);
    assert.throws(() => new BiRealBlock(2, 2, 3), /stride must be 1 or 2, got 3/);
    assert.throws(() => new BiRealResNet({ blocks: 0 }), /blocks must be a positive integer, got 0/);
  });
});

describe('biRealResnet8', () => {
  it('ResNet-8 sized (77,754 parameters for every layout), layer names, clip and binary layouts share one state dict', () => {
    manualSeed(5);
    for (const shortcut of ['double', 'block'] as const) {
      for (const downsample of ['real', 'projection'] as const) {
        assert.equal(biRealResnet8({ shortcut, downsample }).numParameters(), resnet8().numParameters());
      }
    }
    const m = biRealResnet8();
    assert.deepEqual(m.binaryConvNames(), ['stages.0.main1.0', 'stages.0.main2.0', 'stages.1.main1.0', 'stages.1.main2.0', 'stages.2.main1.0', 'stages.2.main2.0']);
    assert.deepEqual(m.downsampleConvNames(), ['stages.1.downsample.1', 'stages.2.downsample.1']);
    assert.deepEqual(biRealResnet8({ downsample: 'projection' }).downsampleConvNames(), ['stages.1.downsample.0', 'stages.2.downsample.0']);
    for (const name of [...m.binaryConvNames(), ...m.downsampleConvNames()]) assert.ok(m.getSubmodule(name) instanceof Conv2d, name);
    assert.ok((m.stages.at(0) as BiRealBlock).act1 instanceof Identity);
    const clipped = biRealResnet8({ clip: true });
    assert.ok((clipped.stages.at(0) as BiRealBlock).act1 instanceof SignClip);
    assert.deepEqual(m.loadStateDict(clipped.stateDict()), { missingKeys: [], unexpectedKeys: [] });
    assert.deepEqual(m.forward(randn([2, 1, 28, 28])).shape, [2, 10]);
  });

  it('binarized with a Bi-Real plan: binary block convs with sign inputs, 8-bit stem/fc/downsampling, all parameters get gradients, Adam steps lower the loss', () => {
    manualSeed(6);
    const model = new BiRealResNet({ channels: [4, 8, 8], blocks: 1 });
    const int8 = { weight: int8PerChannelSym, activation: int8PerTensorAffine };
    const plan: QuantPlan = {
      default: { weight: { kind: 'binary', bits: 1, granularity: 'channel', magnitudeAware: true }, activation: { kind: 'binary', bits: 1, granularity: 'tensor', gradient: 'approxSign' } },
      overrides: [{ match: 'fc', config: int8 }, ...model.downsampleConvNames().map((match) => ({ match, config: int8 }))],
    };
    prepareQat(model, plan);
    const table = new Map(quantizedLayers(model).map((l) => [l.name, l]));
    for (const name of model.binaryConvNames()) {
      assert.equal(table.get(name)?.weightSpec?.kind, 'binary', name);
      assert.equal(table.get(name)?.activationSpec?.kind, 'binary', name);
      assert.ok(table.get(name)?.foldedBatchNorm, name);
    }
    for (const name of ['stem.0', 'fc', ...model.downsampleConvNames()]) assert.equal(table.get(name)?.weightSpec?.bits, 8, name);
    // A binary conv's fake-quant input is ±1.
    const conv = table.get('stages.1.main2.0')!.layer;
    const signs = conv.inputQuantizer!.forward(randn([2, 8, 3, 3]));
    assert.ok(signs.toArray().every((v) => v === 1 || v === -1));

    const x = randn([16, 1, 8, 8]);
    const y = randint(10, [16]);
    model.train();
    const optimizer = new Adam(model.parameters(), { lr: 1e-2 });
    const first = crossEntropy(model.forward(x), y);
    first.backward();
    for (const [name, p] of model.namedParameters()) assert.ok(p.grad && p.grad.toArray().some((v) => v !== 0), `no gradient: ${name}`);
    optimizer.step();
    let last = first.item();
    for (let step = 0; step < 15; step++) {
      optimizer.zeroGrad();
      const loss = crossEntropy(model.forward(x), y);
      loss.backward();
      optimizer.step();
      last = loss.item();
    }
    assert.ok(last < first.item() - 0.3, `loss ${first.item()} -> ${last}`);
  });
});
