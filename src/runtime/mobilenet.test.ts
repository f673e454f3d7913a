/**
 * MobileNetV2-style nets (nn/models/mobilenet.ts) through the quantization pipeline at a tiny
 * width: QAT (W8A8 STE, W4A4 LSQ) trains with every conv's BatchNorm folded; PTQ calibration per
 * tensor and per channel (per-tensor weights zero a depthwise channel whose range is 1000× smaller,
 * per-channel scales keep it); convert → IntModel with ReLU6 as the requantization clamp, three
 * integer residual adds and the integer global average pool; the TypeScript and native executors
 * agree bit for bit; the IntModel's argmax follows the fake-quant forward on fresh images; the
 * .lowbit file round-trips bit for bit.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../autograd/engine.ts';
import { Conv2d, mobilenet, type InvertedResidual, type MobileNet } from '../nn/index.ts';
import { crossEntropy, manualSeed, randn, Rng, Tensor } from '../tensor/index.ts';
import { Adam } from '../optim/index.ts';
import { prepareQat, quantizedLayers } from '../quant/qat/index.ts';
import { QuantConvBn2d, QuantLayer } from '../quant/qat/layers.ts';
import { qconfigFor } from '../quant/config/qconfig.ts';
import { calibrate } from '../quant/ptq/calibrate.ts';
import { loadAddon } from '../backend/native/load.ts';
import { argmaxRows } from '../eval/attack.ts';
import { convert, type IntModel } from './index.ts';
import { loadIntModel, saveIntModel } from './io.ts';
import type { LayerNode } from './intmodel.ts';

const addon = loadAddon();
const nativeSkip = addon?.intPlanCreate && addon.intAddValues ? false : 'native addon without the IntModel executor';

/** A tiny MobileNet (widths 4–16, head 32) with BatchNorm statistics from a few training forwards, in eval mode. */
function tinyMobilenet(seed: number, x: Tensor): MobileNet {
  manualSeed(seed);
  const model = mobilenet({ widthMultiplier: 0.25, expandRatio: 2 });
  model.train();
  for (let i = 0; i < 2; i++) noGrad(() => model.forward(x));
  model.eval();
  return model;
}

/** Images with some structure: a class-dependent bright square on noise, labels = the class. */
function squares(n: number, seed: number): { x: Tensor; labels: Tensor } {
  const rng = new Rng(seed);
  const x = randn([n, 1, 28, 28], { rng }).mul(0.3);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 4;
    labels[i] = c;
    const r0 = c < 2 ? 4 : 16;
    const c0 = c % 2 === 0 ? 4 : 16;
    for (let r = r0; r < r0 + 8; r++) for (let k = c0; k < c0 + 8; k++) x.data[i * 784 + r * 28 + k]! += 2;
  }
  return { x, labels: new Tensor(labels, [n]) };
}

function qatModel(scheme: 'w8a8' | 'w4a4', seed: number, x: Tensor): MobileNet {
  const model = tinyMobilenet(seed, x);
  prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
  model.eval();
  return model;
}

function bothExecutors(im: IntModel, x: Tensor): { ts: Float32Array; native: Float32Array } {
  im.useNative = false;
  const ts = im.run(x.data as Float32Array, x.shape[0]!);
  im.useNative = true;
  const native = im.run(x.data as Float32Array, x.shape[0]!);
  return { ts, native };
}

function agreement(a: ArrayLike<number>, b: ArrayLike<number>, classes: number): number {
  const ia = argmaxRows(a, classes);
  const ib = argmaxRows(b, classes);
  return ia.reduce((same, v, i) => same + (v === ib[i] ? 1 : 0), 0) / ia.length;
}

describe('MobileNet through the quantization pipeline', () => {
  for (const scheme of ['w8a8', 'w4a4'] as const) {
    it(`QAT ${scheme}: every conv folds its BatchNorm, and a short fine-tune lowers the loss`, () => {
      const { x, labels } = squares(32, 5);
      const model = tinyMobilenet(1, x);
      prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
      const layers = quantizedLayers(model);
      assert.equal(layers.length, 1 + 2 + 5 * 3 + 1 + 1); // stem, block 0 (no expand), 5 × 3 convs, head, fc
      assert.ok(layers.filter((l) => l.name !== 'fc').every((l) => l.foldedBatchNorm), 'every conv is a QuantConvBn2d');
      const depthwise = layers.filter((l) => l.name.endsWith('depthwise.0'));
      assert.equal(depthwise.length, 6);
      // Inputs after a linear bottleneck: LSQ's zero-point-free unsigned grid becomes signed there
      // (the 8-bit head keeps its bits); the EMA-affine STE grid has a zero point and stays as it is.
      const signed = new Set(model.signedInputLayers());
      assert.deepEqual([...signed], ['blocks.1.expand.0', 'blocks.2.expand.0', 'blocks.3.expand.0', 'blocks.4.expand.0', 'blocks.5.expand.0', 'head.0']);
      for (const l of layers.slice(1)) {
        const spec = l.activationSpec!;
        assert.equal(spec.signed, scheme === 'w4a4' && signed.has(l.name), `${l.name}: ${JSON.stringify(spec)}`);
      }
      const optimizer = new Adam(model.parameters(), { lr: 0.01 });
      model.train();
      const loss = (): number => noGrad(() => crossEntropy(model.forward(x), labels).item());
      const initial = loss();
      for (let step = 0; step < 12; step++) {
        optimizer.zeroGrad();
        crossEntropy(model.forward(x), labels).backward();
        optimizer.step();
      }
      const final = loss();
      assert.ok(final < 0.7 * initial, `${scheme}: loss ${initial} -> ${final}`);
    });
  }

  it('PTQ: per-tensor weights zero a depthwise channel 1000× smaller than the others; per-channel scales keep it', () => {
    const { x } = squares(16, 6);
    const results = (['tensor', 'channel'] as const).map((granularity) => {
      const model = tinyMobilenet(2, x);
      const block = [...model.blocks][1] as InvertedResidual;
      const conv = block.depthwise.at(0) as Conv2d;
      const per = 9;
      for (let c = 0; c < conv.outChannels; c += 2) for (let k = 0; k < per; k++) conv.weight.data[c * per + k]! *= 1e-3;
      calibrate(model, [{ x }], { scheme: 'w8a8', weightGranularity: granularity });
      const layer = [...model.blocks][1] as InvertedResidual;
      const q = layer.depthwise.at(0);
      assert.ok(q instanceof QuantConvBn2d);
      const { weightFloat, weightFakeQuant, weightQuant } = (q as QuantLayer).exportLayer();
      assert.equal(weightQuant?.type, 'affine');
      const scales = weightQuant?.type === 'affine' ? Array.from(weightQuant.qparams.scale) : [];
      return { weightFloat, weightFakeQuant, scales, channels: conv.outChannels, model };
    });
    const [tensor, channel] = results as [typeof results[0], typeof results[0]];
    assert.equal(tensor.scales.length, 1);
    assert.equal(channel.scales.length, channel.channels);
    for (let c = 0; c < tensor.channels; c++) {
      let maxAbs = 0;
      let tensorNonzero = 0;
      let channelErr = 0;
      for (let k = 0; k < 9; k++) {
        const i = c * 9 + k;
        maxAbs = Math.max(maxAbs, Math.abs(channel.weightFloat.data[i]!));
        if (tensor.weightFakeQuant.data[i] !== 0) tensorNonzero++;
        channelErr = Math.max(channelErr, Math.abs(channel.weightFakeQuant.data[i]! - channel.weightFloat.data[i]!));
      }
      // Per channel: symmetric narrow int8, scale = max|w|/127, error at most half a step.
      assert.ok(Math.abs(channel.scales[c]! - maxAbs / 127) <= 1e-6 * maxAbs, `channel ${c} scale`);
      assert.ok(channelErr <= channel.scales[c]! / 2 * (1 + 1e-5), `channel ${c}: error ${channelErr}`);
      if (c % 2 === 0) assert.equal(tensorNonzero, 0, `per-tensor: small channel ${c} rounds to 0`);
    }
    // Both calibrations convert, and the IntModel follows each fake-quant model.
    for (const r of results) {
      const im = convert(r.model, { sample: x });
      assert.ok(im.verification!.argmaxAgreement >= 0.99);
    }
  });

  for (const scheme of ['w8a8', 'w4a4'] as const) {
    it(`convert ${scheme}: ReLU6 as the requantize clamp, 3 integer adds, integer global average pool; IntModel argmax follows the fake-quant forward`, () => {
      const { x } = squares(24, 7);
      const model = qatModel(scheme, 3, x);
      const im = convert(model, { sample: x });
      const nodes = im.graph.nodes;
      assert.equal(nodes.filter((n) => n.op === 'add').length, 3);
      assert.equal(nodes.filter((n) => n.op === 'adaptiveavgpool2d').length, 1);
      // Every ReLU6 folds into its layer: the one clamp left is the pooling's own range (average, then quantize).
      assert.deepEqual(nodes.filter((n) => n.op === 'clamp').map((n) => n.name), ['pool.range']);
      const layers = nodes.filter((n): n is LayerNode => n.op === 'conv2d' || n.op === 'linear');
      // 20 layers; one whose output also feeds an add in another domain runs a second time into the
      // add's domain (name@2): the stem (unsigned ReLU6 for the depthwise conv, signed for the add),
      // and with W8A8's asymmetric grids the two projections whose sum starts a residual pair too.
      assert.equal(new Set(layers.map((n) => n.name.replace(/@2$/, ''))).size, 20);
      assert.deepEqual(layers.filter((n) => n.name.endsWith('@2')).map((n) => n.name), scheme === 'w8a8' ? ['stem.0@2', 'blocks.1.project.0@2', 'blocks.3.project.0@2'] : ['stem.0@2']);
      const byName = new Map(layers.map((n) => [n.name, n]));
      const next = (name: string): LayerNode => layers.filter((n) => !n.name.endsWith('@2'))[layers.filter((n) => !n.name.endsWith('@2')).findIndex((n) => n.name === name) + 1]!;
      // A ReLU6 layer feeding the next conv: its output lies in [z, z + round(6/s)] of the next layer's input.
      for (const name of ['blocks.1.expand.0', 'blocks.1.depthwise.0', 'blocks.3.depthwise.0']) {
        const out = byName.get(name)!.output;
        assert.equal(out.mode, 'requantize');
        if (out.mode !== 'requantize') continue;
        const input = next(name).input;
        assert.equal(input.mode, 'affine');
        if (input.mode !== 'affine') continue;
        assert.equal(out.lo, Math.max(input.qmin, input.zeroPoint), `${name}: ReLU lower bound`);
        assert.equal(out.hi, Math.min(input.qmax, input.zeroPoint + Math.round(6 / input.scale)), `${name}: ReLU6 upper bound`);
      }
      // A signed (symmetric narrow, [-7, 7]) input grid after each linear bottleneck for LSQ (W4A4), a zero point for the STE's EMA range (W8A8).
      const expandInput = byName.get('blocks.1.expand.0')!.input;
      assert.ok(expandInput.mode === 'affine' && (scheme === 'w4a4' ? expandInput.qmin === -7 && expandInput.qmax === 7 && expandInput.zeroPoint === 0 : expandInput.qmin === 0 && expandInput.qmax === 255));
      // Fresh images: the IntModel's argmax against the fake-quant forward.
      const fresh = squares(40, 8).x;
      const fake = noGrad(() => model.forward(fresh)).data;
      im.useNative = false;
      const ints = im.run(fresh.data as Float32Array, 40);
      assert.ok(agreement(ints, fake, 10) >= 0.95, `${scheme}: argmax agreement ${agreement(ints, fake, 10)}`);
    });

    it(`${scheme}: native executor logits equal the TypeScript executor's bit for bit; .lowbit round trip`, { skip: nativeSkip }, () => {
      const { x } = squares(24, 9);
      const im = convert(qatModel(scheme, 4, x), { sample: x });
      const fresh = squares(20, 10).x;
      const { ts, native } = bothExecutors(im, fresh);
      assert.deepEqual(Array.from(native), Array.from(ts));
      im.useNative = false;
      im.tsExecutor = 'reference';
      assert.deepEqual(Array.from(im.run(fresh.data as Float32Array, 20)), Array.from(ts), 'reference TypeScript executor');
      const dir = mkdtempSync(join(tmpdir(), 'lowbit-mobilenet-'));
      try {
        const path = join(dir, 'model.lowbit');
        saveIntModel(path, im);
        const back = loadIntModel(path);
        assert.deepEqual(back.graph.nodes, im.graph.nodes);
        const again = bothExecutors(back, fresh);
        assert.deepEqual(Array.from(again.native), Array.from(ts));
        assert.deepEqual(Array.from(again.ts), Array.from(ts));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
