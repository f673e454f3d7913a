import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lenet5 } from '../../nn/models/lenet5.ts';
import { cnn } from '../../nn/models/cnn.ts';
import { describeLayers } from './layers.ts';
import {
  bitOpsCost, bitSerialCost, costModel, DEFAULT_ENERGY_CONSTANTS, energyCost, layerChoiceCost, sizeCost, totalCost, uniformAssignment,
} from './costs.ts';
import { latencyCost, latencyTablePath, measureAssignmentLatency, measureLayerLatency, modelFingerprint } from './latency.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { LayerInfo } from './types.ts';

const conv: LayerInfo = {
  name: 'c', type: 'Conv2d', weightCount: 16 * 6 * 25, outChannels: 16, macs: 16 * 10 * 10 * 150, inShape: [6, 14, 14], outShape: [16, 10, 10], reduction: 150,
  conv: { inChannels: 6, kernelSize: [5, 5], stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 },
};
const fc: LayerInfo = { name: 'f', type: 'Linear', weightCount: 120 * 400, outChannels: 120, macs: 48000, inShape: [400], outShape: [120], reduction: 400 };

describe('describeLayers', () => {
  it('LeNet-5: forward order, weight counts, MACs and shapes by hand', () => {
    const layers = describeLayers(lenet5(), [1, 28, 28]);
    assert.deepEqual(layers.map((l) => l.name), ['conv1', 'conv2', 'fc1', 'fc2', 'fc3']);
    // conv1: 6 outputs of 28×28, 1·5·5 per output; conv2: 16 of 10×10, 6·5·5.
    assert.deepEqual(layers.map((l) => l.macs), [6 * 28 * 28 * 25, 16 * 10 * 10 * 150, 400 * 120, 120 * 84, 84 * 10]);
    assert.deepEqual(layers.map((l) => l.weightCount), [150, 2400, 48000, 10080, 840]);
    assert.deepEqual(layers[1]!.inShape, [6, 14, 14]);
    assert.deepEqual(layers[1]!.outShape, [16, 10, 10]);
    assert.deepEqual(layers[1]!.conv!.padding, [0, 0]);
    assert.deepEqual(layers[0]!.conv!.padding, [2, 2]);
  });
  it('CNN: BN and Sequential names, and the model is left as it was', () => {
    const model = cnn();
    model.train();
    const layers = describeLayers(model, [1, 28, 28]);
    assert.deepEqual(layers.map((l) => l.name), ['features.0', 'features.3', 'features.7', 'features.10', 'classifier.1', 'classifier.5']);
    assert.equal(layers[4]!.macs, 32 * 7 * 7 * 128);
    assert.equal(model.training, true);
    assert.equal(Object.hasOwn(model.getSubmodule('features.0'), 'forward'), false);
  });
  it('rejects bad input shapes', () => {
    assert.throws(() => describeLayers(lenet5(), [0, 28]), /inputShape/);
  });
});

describe('cost models against hand computation', () => {
  it('size = weights × w bits; bitops = MACs × w × a', () => {
    assert.equal(sizeCost().layerCost(fc, 3, 8), 144000);
    assert.equal(bitOpsCost().layerCost(conv, 4, 8), 240000 * 32);
  });
  it('bit-serial: MACs·⌈w/2⌉·⌈a/2⌉/(units·bricks)', () => {
    const m = bitSerialCost({ fusionUnits: 2, bricksPerUnit: 4 });
    assert.equal(m.layerCost(fc, 3, 8), (48000 * 2 * 4) / 8);
    assert.equal(m.layerCost(fc, 2, 2), 48000 / 8);
    assert.equal(m.layerCost(fc, 1, 1), m.layerCost(fc, 2, 2));
    assert.equal(bitSerialCost().layerCost(fc, 8, 8), (48000 * 16) / (512 * 16));
  });
  it('energy: MACs·(mult8·w·a/64 + add32) + weights·w·dram + inputs·a·sram', () => {
    const c = { mult8: 0.2, add32: 0.1, sramPerBit: 0.5, dramPerBit: 2 };
    const e = energyCost(c).layerCost(conv, 4, 8);
    const byHand = 240000 * (0.2 * 32 / 64 + 0.1) + 2400 * 4 * 2 + 6 * 14 * 14 * 8 * 0.5;
    assert.ok(Math.abs(e - byHand) < 1e-6 * byHand, `${e} vs ${byHand}`);
    assert.equal(DEFAULT_ENERGY_CONSTANTS.dramPerBit, 1950 / 64);
    assert.throws(() => energyCost({ mult8: -1 }), /mult8/);
  });
  it('per-channel bits: mean over channels for linear costs', () => {
    const per = [...Array(120)].map((_, i) => (i < 30 ? 4 : 2));
    const got = layerChoiceCost(sizeCost(), fc, { w: 4, a: 8, wPerChannel: per });
    assert.equal(got, 400 * (30 * 4 + 90 * 2));
    assert.throws(() => layerChoiceCost(sizeCost(), fc, { w: 4, a: 8, wPerChannel: [4, 2] }), /120 output channels/);
  });
  it('totalCost sums layers, and uses `missing` for unassigned ones', () => {
    const layers = [conv, fc];
    assert.equal(totalCost(sizeCost(), layers, uniformAssignment(layers, 2, 8)), 2 * (2400 + 48000));
    assert.equal(totalCost(sizeCost(), layers, { c: { w: 8, a: 8 } }, { w: 32, a: 32 }), 8 * 2400 + 32 * 48000);
    assert.throws(() => totalCost(sizeCost(), layers, { c: { w: 8, a: 8 } }), /no bits for layer 'f'/);
  });
  it('registry by name', () => {
    assert.equal(costModel('bitops').name, 'bitops');
    assert.equal(costModel('bitserial').unit, 'cycles');
    assert.throws(() => costModel('flops'), /known: size, bitops, latency, bitserial, energy/);
  });
});

describe('latency cost model', () => {
  it('caches measurements in a JSON table keyed by shape and bits, per machine', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-lat-'));
    try {
      let calls = 0;
      const measure = (l: LayerInfo, w: number, a: number): number => {
        calls++;
        return l.macs / 1000 + w + a / 10;
      };
      const m = latencyCost({ cacheDir: dir, measure });
      assert.equal(m.layerCost(fc, 4, 8), 48 + 4 + 0.8);
      assert.equal(m.layerCost(fc, 4, 8), 48 + 4 + 0.8);
      assert.equal(calls, 1);
      // Per-channel: the widest channel decides.
      assert.equal(m.channelCost!(fc, [2, 4, 3], 8), 48 + 4 + 0.8);
      const path = latencyTablePath(dir);
      assert.ok(existsSync(path));
      const table = JSON.parse(readFileSync(path, 'utf8'));
      assert.equal(table.format, 'lowbit-latency-table');
      assert.equal(Object.keys(table.entries).length, 1);
      // A second model instance reads the file instead of measuring.
      const again = latencyCost({ cacheDir: dir, measure: () => assert.fail('should come from the cache') });
      assert.equal(again.layerCost(fc, 4, 8), 48 + 4 + 0.8);
      // Same geometry under another name hits the same entry.
      assert.equal(again.layerCost({ ...fc, name: 'other' }, 4, 8), 48 + 4 + 0.8);
      const refreshed = latencyCost({ cacheDir: dir, refresh: true, measure: () => 7 });
      assert.equal(refreshed.layerCost(fc, 4, 8), 7);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('measures a real layer on the integer runtime (positive µs per sample)', () => {
    const us = measureLayerLatency({ ...fc, weightCount: 16 * 8, outChannels: 16, macs: 128, inShape: [8], outShape: [16], reduction: 8 }, 4, 8, { batch: 4, repeats: 1 });
    assert.ok(us > 0 && Number.isFinite(us));
  });
  it('in-model latency: whole-model runs, additive by layer, the model left unchanged', () => {
    const model = lenet5();
    const rng = new Rng(2);
    const sample = new Tensor(new Float32Array(4 * 784).map(() => rng.normal()), [4, 1, 28, 28]);
    const before = modelFingerprint(model);
    const us = measureAssignmentLatency({ model, sample }, { fc2: { w: 4, a: 8 } }, { batch: 4, repeats: 1 });
    assert.ok(us > 0 && Number.isFinite(us));
    assert.equal(modelFingerprint(model), before);
    assert.throws(() => measureAssignmentLatency({ model, sample }, { nope: { w: 4, a: 8 } }), /no layer 'nope'/);
    const seen: string[] = [];
    const m = latencyCost({ context: { model, sample }, noCache: true, batch: 4, repeats: 1, onMeasure: (k) => seen.push(k) });
    const layers = describeLayers(model, [1, 28, 28]);
    // The W8A8 plan costs exactly the measured W8A8 model: T8/n per layer, one measurement.
    const t8 = totalCost(m, layers, uniformAssignment(layers, 8, 8));
    assert.equal(seen.length, 1);
    assert.ok(Math.abs(m.layerCost(layers[0]!, 8, 8) * layers.length - t8) < 1e-9);
    // Another width of one layer adds its measured change to that layer only.
    const c = m.layerCost(layers[3]!, 4, 8);
    assert.equal(seen.length, 2);
    assert.ok(c >= 0 && Number.isFinite(c));
  });
});
