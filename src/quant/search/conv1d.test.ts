import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BatchNorm1d, Conv1d, Flatten, Linear, ReLU, Sequential, summary } from '../../nn/index.ts';
import { Rng } from '../../tensor/index.ts';
import { prepareQat } from '../qat/prepare.ts';
import { qconfigFor } from '../config/qconfig.ts';
import { describeLayers } from './layers.ts';
import { bitOpsCost, sizeCost, totalCost, uniformAssignment } from './costs.ts';
import { singleLayerIntModel } from './latency.ts';

const net = (rng: Rng): Sequential => new Sequential(
  new Conv1d(4, 8, 3, { padding: 1, rng }), new BatchNorm1d(8), new ReLU(),
  new Conv1d(8, 6, 3, { stride: 2, dilation: 2, groups: 2, rng }), new ReLU(),
  new Flatten(), new Linear(6 * 6, 5, { rng }),
);

describe('search and summary: Conv1d layers', () => {
  it('describeLayers gives Conv1d shapes and MACs; size and BitOps costs count them', () => {
    const layers = describeLayers(net(new Rng(1)), [4, 16]);
    assert.deepEqual(layers.map((l) => [l.name, l.type]), [['0', 'Conv1d'], ['3', 'Conv1d'], ['6', 'Linear']]);
    // conv 0: 8 outputs × 16 positions, reduction 4·3; conv 3: 6 × 6 positions, reduction (8/2)·3
    assert.deepEqual(layers.map((l) => [l.macs, l.reduction, l.weightCount]), [[8 * 16 * 12, 12, 96], [6 * 6 * 12, 12, 72], [5 * 36, 36, 180]]);
    assert.deepEqual(layers[0]!.inShape, [4, 16]);
    assert.deepEqual(layers[1]!.outShape, [6, 6]);
    assert.deepEqual(layers[1]!.conv, { inChannels: 8, kernelSize: [1, 3], stride: [1, 2], padding: [0, 0], dilation: [1, 2], groups: 2 });
    const a = uniformAssignment(layers, 4, 4);
    assert.equal(totalCost(sizeCost(), layers, a), (96 + 72 + 180) * 4);
    assert.equal(totalCost(bitOpsCost(), layers, a), (8 * 16 * 12 + 6 * 6 * 12 + 5 * 36) * 16);
  });

  it('the latency table builds, calibrates and converts a single Conv1d layer', () => {
    const layers = describeLayers(net(new Rng(2)), [4, 16]);
    const { model, input } = singleLayerIntModel(layers[1]!, 4, 8, 3);
    const conv = model.nodes.find((n) => n.op === 'conv2d');
    assert.ok(conv && conv.op === 'conv2d' && conv.conv!.conv1d === true && conv.weightBits === 4);
    assert.deepEqual(model.graph.inputShape, [8, 16]);
    assert.equal(model.run(input, 3).length, 3);
  });

  it('nn.summary shows a prepared Conv1d net with its bit widths and quantized size', () => {
    const model = prepareQat(net(new Rng(3)), qconfigFor('w4a4', 'lsq'));
    const s = summary(model, [1, 4, 16]);
    const row = (name: string) => s.rows.find((r) => r.name === name)!;
    assert.equal(row('0').type, 'QuantConvBn1d');
    assert.equal(row('3').type, 'QuantConv1d');
    assert.deepEqual([row('0').weightBits, row('3').weightBits, row('3').activationBits, row('6').weightBits], [8, 4, 4, 8]);
    assert.equal(s.quantizedLayers, 3);
    // weights at their bits: conv 0 and the Linear at 8, conv 3 at 4, the rest fp32
    assert.equal(s.fp32Bytes - s.quantizedBytes, 96 * 3 + 72 * 3.5 + 180 * 3);
    assert.match(s.format(), /QuantConv1d\s+\[1, 6, 6\]/);
  });
});
