/**
 * Pruned (0-bit) channels: the fake-quant layer outputs exactly 0 there, convert removes them,
 * and the compacted IntModel computes the uncompacted model's logits bit for bit (LeNet-5 and the
 * Fashion-MNIST CNN's layer shapes, random prune masks, random inputs); a trained LeNet-5 with
 * pruned channels agrees with the compacted IntModel as DESIGN.md's integer-runtime bound asks.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lenet5 } from '../nn/models/lenet5.ts';
import { Cnn } from '../nn/models/cnn.ts';
import type { TensorModule } from '../nn/module.ts';
import { DATASET_STATS, loadDataset } from '../data/index.ts';
import { normalizeInPlace } from '../data/dataset.ts';
import { Adam } from '../optim/index.ts';
import { crossEntropy, manualSeed, Rng, Tensor } from '../tensor/index.ts';
import { noGrad } from '../autograd/engine.ts';
import { calibrate } from '../quant/ptq/calibrate.ts';
import { quantizedLayers } from '../quant/qat/prepare.ts';
import { planFromAssignment } from '../quant/search/plan.ts';
import type { BitAssignment } from '../quant/search/types.ts';
import { convert, compareWithFakeQuant } from './convert.ts';
import { simulateFloat64 } from './simulate.ts';
import { loadIntModel, saveIntModel } from './io.ts';
import type { IntModel, LayerNode } from './intmodel.ts';

function images(n: number, seed: number): Tensor {
  const rng = new Rng(seed);
  return new Tensor(new Float32Array(n * 784).map(() => rng.normal()), [n, 1, 28, 28]);
}

/** Channel widths of `channels` channels: a random subset of `prune` channels at 0, the rest at `w` (some at 2..w−1 when `mixed`). */
function randomWidths(rng: Rng, channels: number, prune: number, w: number, mixed = false): number[] {
  const order = [...Array(channels).keys()].sort(() => rng.uniform() - 0.5);
  const widths = new Array<number>(channels).fill(w);
  order.slice(0, prune).forEach((c) => (widths[c] = 0));
  if (mixed) order.slice(prune, prune + Math.floor((channels - prune) / 2)).forEach((c) => (widths[c] = 2 + rng.int(w - 2)));
  widths[order[channels - 1]!] = w; // the container width is reached
  return widths;
}

function layerNodes(im: IntModel): LayerNode[] {
  return im.nodes.filter((n): n is LayerNode => n.op === 'conv2d' || n.op === 'linear');
}

function assertSameLogits(a: Float32Array, b: Float32Array): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`logit ${i}: ${a[i]} vs ${b[i]}`);
}

/** Calibrates `model` by `assignment` and converts it with and without compaction. */
function both(model: TensorModule, assignment: BitAssignment, first: string, x: Tensor): { full: IntModel; small: IntModel } {
  calibrate(model, [{ x }], { plan: planFromAssignment(assignment, { firstLayer: first }) });
  return { full: convert(model, { inputShape: [1, 28, 28], compact: false }), small: convert(model, { inputShape: [1, 28, 28], sample: x, minAgreement: 0 }) };
}

describe('pruned (0-bit) channels', () => {
  it('the fake-quant conv (BN folded, BN far from identity) outputs exactly 0 in pruned channels, in eval and train mode', () => {
    manualSeed(5);
    const model = new Cnn({ channels: [4, 8], hidden: 16 });
    const x = images(8, 1);
    const assignment: BitAssignment = {
      'features.0': { w: 8, a: 8, wPerChannel: [8, 0, 8, 0] },
      'features.3': { w: 8, a: 8 }, 'features.7': { w: 8, a: 8 }, 'features.10': { w: 8, a: 8 },
      'classifier.1': { w: 8, a: 8 }, 'classifier.5': { w: 8, a: 8 },
    };
    // BN parameters far from identity, so a pruned channel would show its shift if it were not masked.
    for (const [name, p] of model.namedParameters()) if (name.includes('features.1')) p.data.fill(name.endsWith('bias') ? 3 : 2);
    calibrate(model, [{ x }], { plan: planFromAssignment(assignment, { firstLayer: 'features.0' }) });
    const conv = quantizedLayers(model).find((l) => l.name === 'features.0')!.layer;
    assert.deepEqual(conv.prunedChannels, [1, 3]);
    for (const mode of ['eval', 'train'] as const) {
      model[mode]();
      const y = noGrad(() => (conv as unknown as TensorModule).forward(x));
      const [n, c, h, w] = y.shape as [number, number, number, number];
      let kept = 0;
      for (let i = 0; i < n * c * h * w; i++) {
        const ch = Math.floor(i / (h * w)) % c;
        if (ch === 1 || ch === 3) assert.equal(y.data[i], 0, `${mode}: channel ${ch} is pruned`);
        else kept += Math.abs(y.data[i]!);
      }
      assert.ok(kept > 0, 'kept channels compute');
    }
    model.eval();
    const ex = conv.exportLayer();
    for (const c of [1, 3]) {
      assert.equal(ex.bias!.data[c], 0);
      assert.ok(ex.weightFakeQuant.data.subarray(c * 9, (c + 1) * 9).every((v) => v === 0));
    }
  });

  it('LeNet-5: compacted IntModel == uncompacted IntModel exactly on random inputs (random masks, int8/int4 containers); smaller .lowbit', () => {
    const rng = new Rng(11);
    for (let trial = 0; trial < 3; trial++) {
      manualSeed(20 + trial);
      const model = lenet5();
      const w = trial === 1 ? 4 : 8;
      const prune = { conv1: 1 + rng.int(4), conv2: 1 + rng.int(12), fc1: 1 + rng.int(100), fc2: 1 + rng.int(70) };
      const assignment: BitAssignment = {
        conv1: { w: 8, a: 8, wPerChannel: randomWidths(rng, 6, prune.conv1, 8, trial === 2) },
        conv2: { w, a: 8, wPerChannel: randomWidths(rng, 16, prune.conv2, w, trial === 2) },
        fc1: { w, a: 8, wPerChannel: randomWidths(rng, 120, prune.fc1, w) },
        fc2: { w: 8, a: 8, wPerChannel: randomWidths(rng, 84, prune.fc2, 8, true) },
        fc3: { w: 8, a: 8 },
      };
      const { full, small } = both(model, assignment, 'conv1', images(32, trial));
      const shapes = layerNodes(small).map((n) => [n.inFeatures, n.outFeatures]);
      assert.deepEqual(shapes, [
        [1, 6 - prune.conv1], [6 - prune.conv1, 16 - prune.conv2], [(16 - prune.conv2) * 25, 120 - prune.fc1],
        [120 - prune.fc1, 84 - prune.fc2], [84 - prune.fc2, 10],
      ]);
      assert.deepEqual(layerNodes(full).map((n) => n.outFeatures), [6, 16, 120, 84, 10]);
      const x = images(16, 100 + trial);
      assertSameLogits(small.run(x), full.run(x));
      // The TypeScript executor as well (the native one runs above when the addon is loaded).
      small.useNative = false;
      full.useNative = false;
      assertSameLogits(small.run(x), full.run(x));
      const dir = mkdtempSync(join(tmpdir(), 'lowbit-compact-'));
      try {
        saveIntModel(join(dir, 'full.lowbit'), full);
        saveIntModel(join(dir, 'small.lowbit'), small);
        assert.ok(statSync(join(dir, 'small.lowbit')).size < statSync(join(dir, 'full.lowbit')).size);
        const back = loadIntModel(join(dir, 'small.lowbit'));
        assertSameLogits(back.run(x), full.run(x));
        assert.deepEqual((back.graph.metadata?.['prunedChannels'] as Record<string, number[]>)['conv1']!.length, prune.conv1);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it('Fashion-MNIST CNN shapes (BN folded into the convs, max pooling, flatten): compacted == uncompacted exactly', () => {
    const rng = new Rng(3);
    for (let trial = 0; trial < 2; trial++) {
      manualSeed(40 + trial);
      const model = new Cnn({ channels: [8, 16], hidden: 32 });
      const p = [1 + rng.int(6), 1 + rng.int(6), 1 + rng.int(14), 1 + rng.int(14)];
      const assignment: BitAssignment = {
        'features.0': { w: 8, a: 8, wPerChannel: randomWidths(rng, 8, p[0]!, 8) },
        'features.3': { w: 8, a: 8, wPerChannel: randomWidths(rng, 8, p[1]!, 8, true) },
        'features.7': { w: 8, a: 8, wPerChannel: randomWidths(rng, 16, p[2]!, 8) },
        'features.10': { w: 8, a: 8, wPerChannel: randomWidths(rng, 16, p[3]!, 8) },
        'classifier.1': { w: 8, a: 8 }, 'classifier.5': { w: 8, a: 8 },
      };
      const { full, small } = both(model, assignment, 'features.0', images(32, 50 + trial));
      assert.deepEqual(layerNodes(small).map((n) => n.inFeatures), [1, 8 - p[0]!, 8 - p[1]!, 16 - p[2]!, (16 - p[3]!) * 49, 32]);
      const x = images(16, 60 + trial);
      assertSameLogits(small.run(x), full.run(x));
    }
  });

  it('refuses pruning the last layer and a layer feeding an unfolded BatchNorm; channelBits validated', () => {
    manualSeed(7);
    const x = images(8, 2);
    const lenet = lenet5();
    const last: BitAssignment = { conv1: { w: 8, a: 8 }, conv2: { w: 8, a: 8 }, fc1: { w: 8, a: 8 }, fc2: { w: 8, a: 8 }, fc3: { w: 8, a: 8, wPerChannel: [0, ...Array(9).fill(8)] } };
    calibrate(lenet, [{ x }], { plan: planFromAssignment(last, { firstLayer: 'conv1' }) });
    assert.throws(() => convert(lenet, { inputShape: [1, 28, 28] }), /last layer.*may not/);
    const cnn = new Cnn({ channels: [4, 8], hidden: 16 });
    const bn: BitAssignment = {
      'features.0': { w: 8, a: 8 }, 'features.3': { w: 8, a: 8 }, 'features.7': { w: 8, a: 8 }, 'features.10': { w: 8, a: 8 },
      'classifier.1': { w: 8, a: 8, wPerChannel: [0, ...Array(15).fill(8)] }, 'classifier.5': { w: 8, a: 8 },
    };
    calibrate(cnn, [{ x }], { plan: planFromAssignment(bn, { firstLayer: 'features.0' }) });
    assert.throws(() => convert(cnn, { inputShape: [1, 28, 28] }), /not folded/);
    assert.throws(() => planFromAssignment({ conv1: { w: 8, a: 8, wPerChannel: [0, 0, 0, 0, 0, 0] } }), /widest channel/);
    assert.throws(() => planFromAssignment({ conv1: { w: 8, a: 8, wPerChannel: [1, 8, 8, 8, 8, 8] } }), /0 \(channel pruned\)/);
  });

  it('trained LeNet-5 with pruned channels: the compacted IntModel agrees with the fake-quant model (same argmax, ≤ 1 LSB)', () => {
    manualSeed(1);
    const model = lenet5();
    const train = loadDataset('mnist', 'train');
    const batch = (from: number, n: number): { x: Tensor; y: Tensor } => {
      const im = train.images.slice(from * 784, (from + n) * 784);
      normalizeInPlace(im, [1, 28, 28], DATASET_STATS.mnist);
      return { x: new Tensor(im, [n, 1, 28, 28]), y: new Tensor(Int32Array.from(train.labels.subarray(from, from + n)), [n]) };
    };
    const opt = new Adam(model.parameters(), { lr: 2e-3 });
    model.train();
    for (let step = 0; step < 40; step++) {
      const { x, y } = batch(step * 64, 64);
      const loss = crossEntropy(model.forward(x), y);
      opt.zeroGrad();
      loss.backward();
      opt.step();
    }
    model.eval();
    const rng = new Rng(9);
    const assignment: BitAssignment = {
      conv1: { w: 8, a: 8, wPerChannel: randomWidths(rng, 6, 2, 8) },
      conv2: { w: 8, a: 8, wPerChannel: randomWidths(rng, 16, 6, 8) },
      fc1: { w: 8, a: 8, wPerChannel: randomWidths(rng, 120, 60, 8) },
      fc2: { w: 8, a: 8, wPerChannel: randomWidths(rng, 84, 40, 8) },
      fc3: { w: 8, a: 8 },
    };
    calibrate(model, [{ x: batch(3000, 256).x }], { plan: planFromAssignment(assignment, { firstLayer: 'conv1' }) });
    const test = batch(5000, 256).x;
    const small = convert(model, { sample: test, minAgreement: 0.999 });
    const full = convert(model, { inputShape: [1, 28, 28], compact: false });
    // The uncompacted model meets the bound against the float64 simulation layer by layer ...
    const r = compareWithFakeQuant(model, full, test);
    assert.equal(r.argmaxAgreementFloat64, 1);
    assert.ok(r.argmaxAgreement >= 0.999);
    assert.ok(r.maxLogitLsb <= 1, `${r.maxLogitLsb} LSB`);
    for (const [layer, d] of Object.entries(r.layerMaxDiff)) assert.equal(d, 0, `layer ${layer}`);
    // ... and the compacted one directly: logits within 1 LSB of the simulation, same argmax.
    const sim = simulateFloat64(model, test).output;
    const logits = small.run(test);
    const last = layerNodes(small).at(-1)!;
    assert.equal(last.output.mode, 'dequantize');
    const lsb = small.tensor((last.output as { scale: string }).scale).data as Float32Array;
    for (let i = 0; i < logits.length; i++) assert.ok(Math.abs(logits[i]! - sim[i]!) <= Math.abs(lsb[i % 10]!) * (1 + 1e-6), `logit ${i}`);
    assertSameLogits(logits, full.run(test));
    const direct = compareWithFakeQuant(model, small, test);
    assert.equal(direct.argmaxAgreementFloat64, 1);
    assert.ok(direct.maxLogitLsb <= 1);
    assert.deepEqual(Object.keys(direct.layerMaxDiff), ['conv1'], 'only the un-narrowed first layer input is compared');
    assert.deepEqual(layerNodes(small).map((n) => n.outFeatures), [4, 10, 60, 44, 10]);
  });
});
