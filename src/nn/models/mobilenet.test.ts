import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { crossEntropy, manualSeed, randint, randn } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { Conv2d } from '../conv.ts';
import { ReLU6 } from '../activation.ts';
import { Add } from '../merge.ts';
import { createModel } from './registry.ts';
import { InvertedResidual, MobileNet, mobilenet, mobilenetStages } from './mobilenet.ts';

/** Parameters of one inverted residual block (conv weights, no bias; BN γ and β) by its widths. */
function blockParameters(inChannels: number, outChannels: number, t: number): number {
  const hidden = inChannels * t;
  const expand = t === 1 ? 0 : inChannels * hidden + 2 * hidden;
  return expand + hidden * 9 + 2 * hidden + hidden * outChannels + 2 * outChannels;
}

describe('mobilenet', () => {
  it('default: six inverted residual blocks, parameter count, 28×28 → 4×4 and logits [N, 10]', () => {
    manualSeed(0);
    const model = createModel('mobilenet');
    assert.ok(model instanceof MobileNet);
    const blocks = [...model.blocks];
    assert.equal(blocks.length, 6);
    // (in, out, t) per block from the stages (1,16,1,1), (4,24,2,2), (4,32,2,2), (4,64,1,1).
    const widths: [number, number, number][] = [[16, 16, 1], [16, 24, 4], [24, 24, 4], [24, 32, 4], [32, 32, 4], [32, 64, 4]];
    const expected = 16 * 9 + 32 + widths.reduce((n, [i, o, t]) => n + blockParameters(i, o, t), 0) + 64 * 128 + 256 + 128 * 10 + 10;
    assert.equal(model.numParameters(), expected);
    assert.equal(expected, 50_410);
    // Residual adds exactly where the stride is 1 and the width stays.
    assert.deepEqual(blocks.map((b) => (b as InvertedResidual).add instanceof Add), [true, false, true, false, true, false]);
    // Depthwise convs: groups = channels, 3×3, stride 2 in the first block of stages 2 and 3.
    const dw = blocks.map((b) => (b as InvertedResidual).depthwise.at(0) as Conv2d);
    assert.deepEqual(dw.map((c) => [c.groups, c.inChannels, c.outChannels]), [[16, 16, 16], [64, 64, 64], [96, 96, 96], [96, 96, 96], [128, 128, 128], [128, 128, 128]]);
    assert.equal((blocks[0] as InvertedResidual).expand, null);
    assert.ok((blocks[1] as InvertedResidual).depthwise.at(2) instanceof ReLU6);
    const x = randn([2, 1, 28, 28]);
    assert.deepEqual(noGrad(() => model.blocks.forward(model.stem.forward(x))).shape, [2, 64, 4, 4]);
    assert.deepEqual(noGrad(() => model.forward(x)).shape, [2, 10]);
  });

  it('the block forward is project(depthwise(expand(x))) + x, against the same layers run by hand', () => {
    manualSeed(1);
    const block = new InvertedResidual(4, 4, 1, 2);
    block.eval();
    const x = randn([2, 4, 5, 5]);
    const y = noGrad(() => block.forward(x));
    const byHand = noGrad(() => block.project.forward(block.depthwise.forward(block.expand!.forward(x))));
    for (let i = 0; i < y.size; i++) assert.ok(Math.abs(y.data[i]! - (byHand.data[i]! + x.data[i]!)) < 1e-6);
    const strided = new InvertedResidual(4, 4, 2, 2);
    assert.equal(strided.add, null);
    assert.deepEqual(noGrad(() => strided.forward(x)).shape, [2, 4, 3, 3]);
  });

  it('options: width multiplier, expand ratio, 32×32×3 input, no head conv, custom stages', () => {
    manualSeed(2);
    const tiny = mobilenet({ widthMultiplier: 0.25, expandRatio: 2 });
    // 16·0.25 = 4, 24·0.25 = 6 → 8 (multiple of 4), 32·0.25 = 8, 64·0.25 = 16, head 128·0.25 = 32.
    const dw = [...tiny.blocks].map((b) => ((b as InvertedResidual).depthwise.at(0) as Conv2d).groups);
    assert.deepEqual(dw, [4, 8, 16, 16, 16, 16]);
    assert.equal((tiny.head!.at(0) as Conv2d).outChannels, 32);
    const rgb = mobilenet({ inChannels: 3, numClasses: 100, headChannels: 0, widthMultiplier: 0.5 });
    assert.equal(rgb.head, null);
    assert.deepEqual(noGrad(() => rgb.forward(randn([1, 3, 32, 32]))).shape, [1, 100]);
    const custom = mobilenet({ stages: [{ expand: 3, channels: 8, blocks: 3, stride: 2 }], stemStride: 1 });
    assert.equal([...custom.blocks].length, 3);
    assert.deepEqual(noGrad(() => custom.blocks.forward(custom.stem.forward(randn([1, 1, 28, 28])))).shape, [1, 8, 14, 14]);
    assert.deepEqual(mobilenetStages(6).map((s) => s.expand), [1, 6, 6, 6]);
  });

  it('refuses bad options with the option named', () => {
    assert.throws(() => mobilenet({ widthMultiplier: 0 }), /widthMultiplier must be a positive number/);
    assert.throws(() => mobilenet({ expandRatio: 1.5 }), /expandRatio must be a positive integer/);
    assert.throws(() => mobilenet({ stemStride: 3 }), /stemStride must be 1 or 2/);
    assert.throws(() => mobilenet({ stages: [] }), /stages must not be empty/);
    assert.throws(() => mobilenet({ stages: [{ expand: 2, channels: 8, blocks: 1, stride: 3 }] }), /stride must be 1 or 2/);
    assert.throws(() => mobilenet({ headChannels: -1 }), /headChannels/);
  });

  it('backward reaches every parameter', () => {
    manualSeed(3);
    const model = mobilenet({ widthMultiplier: 0.25 });
    crossEntropy(model.forward(randn([3, 1, 28, 28])), randint(10, [3])).backward();
    for (const [name, p] of model.namedParameters()) assert.ok(p.grad && p.grad.toArray().some((v) => v !== 0), name);
  });
});
