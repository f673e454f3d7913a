import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BatchNorm2d, Conv2d, Flatten, Linear, ReLU, Sequential } from '../../nn/index.ts';
import { Tensor, crossEntropy, manualSeed, Rng, linear } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { Adam } from '../../optim/adam.ts';
import { countCorrect } from '../../train/fit.ts';
import { fakeQuantize } from '../core/quantize.ts';
import { createQuantizer } from '../quantizers/quantizer.ts';
import { QuantConvBn2d, QuantLinear } from '../qat/layers.ts';
import { quantizedLayers } from '../qat/prepare.ts';
import type { QuantPlan } from '../config/plan.ts';
import { adaroundLayer, calibrate, calibrationReport, correctBias, ptqPlan, StaticQuantizer } from './index.ts';

const staticInt4 = { kind: 'static', bits: 4, signed: true, symmetric: true, granularity: 'channel', method: 'minmax' };

function randomData(rng: Rng, shape: number[], mean = 0, std = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(Float32Array.from({ length: n }, () => mean + std * rng.normal()), shape);
}

/** Three Gaussian clusters in 8 dimensions (labels 0..2). */
function clusters(rng: Rng, n: number): { x: Tensor; y: Tensor } {
  const centres = [[2, 0, 0, 1, 0, 0, -1, 0], [0, 2, 0, -1, 1, 0, 0, 0], [0, 0, 2, 0, -1, 1, 0, 1]];
  const x = new Float32Array(n * 8);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 3;
    y[i] = c;
    for (let j = 0; j < 8; j++) x[i * 8 + j] = centres[c]![j]! + 0.9 * rng.normal();
  }
  return { x: new Tensor(x, [n, 8]), y: new Tensor(y, [n]) };
}

describe('quant/ptq: the static quantizer', () => {
  it('observes while calibrating (identity), then fake-quantizes with frozen parameters', () => {
    const q = createQuantizer({ kind: 'static', bits: 8, signed: false, method: 'minmax' }, { role: 'activation' });
    assert.ok(q instanceof StaticQuantizer);
    const x = new Tensor(Float32Array.from([0, 0.5, 1, 2.55]), [4]);
    assert.throws(() => q.forward(x), /not calibrated/);
    q.startCalibration();
    assert.deepEqual(Array.from(q.forward(x).data), Array.from(x.data));
    q.forward(new Tensor(Float32Array.from([0, 5.1]), [2]));
    q.freeze();
    const qp = q.qparams();
    assert.equal(qp.scale[0], Math.fround(5.1 / 255));
    const y = q.forward(new Tensor(Float32Array.from([1.01, 9]), [2]));
    assert.deepEqual(Array.from(y.data), Array.from(fakeQuantize(new Tensor(Float32Array.from([1.01, 9]), [2]), qp).data));
    const exported = q.exportQuant();
    assert.equal(exported.type, 'affine');
    // The buffers are the state: a fresh quantizer loading them computes the same.
    const copy = createQuantizer(q.spec, { role: 'activation' });
    copy.loadStateDict(q.stateDict());
    assert.deepEqual(Array.from(copy.forward(x).data), Array.from(q.forward(x).data));
  });

  it('a weight quantizer calibrates itself from the weight (per channel)', () => {
    const w = new Tensor(Float32Array.from([0.7, -0.35, 0.1, 0.05]), [2, 2]);
    const q = createQuantizer(staticInt4, { role: 'weight', shape: [2, 2], channelAxis: 0 }) as StaticQuantizer;
    q.forward(w);
    assert.deepEqual(Array.from(q.qparams().scale), [Math.fround(0.7 / 7), Math.fround(0.1 / 7)]);
  });
});

describe('quant/ptq: calibrate', () => {
  it('W8A8 keeps the accuracy of a trained MLP on a synthetic task; W4A4 stays close', () => {
    const rng = new Rng(7);
    manualSeed(7);
    const train = clusters(rng, 600);
    const test = clusters(rng, 600);
    const build = (): Sequential => new Sequential(new Linear(8, 32), new ReLU(), new Linear(32, 16), new ReLU(), new Linear(16, 3));
    const model = build();
    const optimizer = new Adam(model.parameters(), { lr: 0.01 });
    for (let step = 0; step < 150; step++) {
      optimizer.zeroGrad();
      crossEntropy(model.forward(train.x), train.y).backward();
      optimizer.step();
    }
    const accuracy = (m: Sequential): number => noGrad(() => countCorrect(m.forward(test.x), test.y) / 600);
    const fp32 = accuracy(model);
    assert.ok(fp32 > 0.85, `float accuracy ${fp32}`);
    const batches = [0, 1, 2].map((b) => ({ x: new Tensor(train.x.data.slice(b * 800, (b + 1) * 800), [100, 8]) }));
    for (const [scheme, tolerance] of [['w8a8', 0.01], ['w4a4', 0.05]] as const) {
      const q = build();
      q.loadStateDict(model.stateDict());
      calibrate(q, batches, { scheme, method: 'mse' });
      const acc = accuracy(q);
      assert.ok(acc >= fp32 - tolerance, `${scheme}: ${acc} vs float ${fp32}`);
      assert.equal(calibrationReport(q)!.samples, 300);
      const layers = quantizedLayers(q);
      assert.equal(layers.length, 3);
      for (const { layer } of layers) {
        const e = layer.exportLayer();
        assert.equal(e.weightQuant?.type, 'affine');
        assert.equal(e.activationQuant?.type, 'affine');
      }
    }
  });

  it('folds BatchNorm with its running statistics and never updates them', () => {
    const rng = new Rng(8);
    manualSeed(8);
    const model = new Sequential(new Conv2d(2, 4, 3, { padding: 1 }), new BatchNorm2d(4), new ReLU(), new Flatten(), new Linear(4 * 5 * 5, 3));
    const bn = model.at(1) as BatchNorm2d;
    bn.runningMean!.data.set([0.1, -0.2, 0.3, 0]);
    bn.runningVar!.data.set([0.5, 2, 1, 1.5]);
    const before = [Array.from(bn.runningMean!.data), Array.from(bn.runningVar!.data)];
    const x = randomData(rng, [16, 2, 5, 5]);
    const reference = noGrad(() => model.eval().forward(x));
    calibrate(model, [{ x }], { scheme: 'w8a8' });
    assert.ok(model.at(0) instanceof QuantConvBn2d);
    assert.deepEqual([Array.from(bn.runningMean!.data), Array.from(bn.runningVar!.data)], before);
    const out = noGrad(() => model.forward(x));
    let err = 0;
    let ref = 0;
    for (let i = 0; i < out.size; i++) {
      err += (out.data[i]! - reference.data[i]!) ** 2;
      ref += reference.data[i]! ** 2;
    }
    assert.ok(err / ref < 1e-3, `relative error ${err / ref}`);
  });

  it('rejects unknown schemes and methods', () => {
    assert.throws(() => ptqPlan('w8'), /w<2..16>a<1..16>/);
    assert.throws(() => ptqPlan('w8a8', { method: 'median' as 'mse' }), /method must be one of/);
  });
});

describe('quant/ptq: bias correction', () => {
  it('removes a constructed systematic output shift: δ = (W_q − W)·E[x]', () => {
    const rng = new Rng(9);
    // Per-channel 4-bit scales are max|w|/7; every other weight sits 0.4 steps above a grid
    // point, so nearest rounding lowers it: the output shifts by −0.4·s·Σ E[x_j] per channel.
    const weight = new Float32Array(2 * 8);
    for (let o = 0; o < 2; o++) {
      const s = 0.1 * (o + 1);
      for (let j = 0; j < 8; j++) weight[o * 8 + j] = j === 0 ? 7 * s : s * ((j % 5) - 2 + 0.4);
    }
    const build = (): Sequential => {
      const m = new Sequential(new Linear(8, 2));
      const layer = m.at(0) as Linear;
      layer.weight.data.set(weight);
      layer.bias!.data.set([0.5, -0.5]);
      return m;
    };
    const float = build();
    const batches = [0, 1, 2, 3].map(() => ({ x: randomData(rng, [64, 8], 1, 0.3) }));
    const plan: QuantPlan = { default: { weight: staticInt4, activation: null }, keepFirstLast8bit: false, inputActivation: null };
    const meanShift = (m: Sequential): number[] => noGrad(() => {
      const sums = [0, 0];
      let n = 0;
      for (const { x } of batches) {
        const d = m.forward(x);
        const f = float.forward(x);
        for (let i = 0; i < d.size; i++) sums[i % 2]! += d.data[i]! - f.data[i]!;
        n += x.shape[0]!;
      }
      return sums.map((s) => s / n);
    });
    const plain = calibrate(build(), batches, { plan });
    const shiftBefore = meanShift(plain);
    assert.ok(Math.abs(shiftBefore[0]!) > 0.05 && Math.abs(shiftBefore[1]!) > 0.1, `constructed shift ${shiftBefore}`);
    const corrected = calibrate(build(), batches, { plan, biasCorrection: true });
    const result = calibrationReport(corrected)!.biasCorrection[0]!;
    assert.ok(result.corrected);
    for (let c = 0; c < 2; c++) assert.ok(Math.abs(result.shift[c]! - shiftBefore[c]!) < 1e-5, `δ ${result.shift[c]} vs measured ${shiftBefore[c]}`);
    const shiftAfter = meanShift(corrected);
    for (let c = 0; c < 2; c++) assert.ok(Math.abs(shiftAfter[c]!) < 1e-5, `shift after correction ${shiftAfter}`);
    // After AdaRound (which overwrites the weight with its rounding) δ is still measured against
    // the float weight, and the output shift is removed as well.
    const both = calibrate(build(), batches, { plan, adaround: { iterations: 50 }, biasCorrection: true });
    const bothShift = meanShift(both);
    assert.ok(Math.abs(calibrationReport(both)!.biasCorrection[0]!.meanAbsShift) > 1e-3);
    for (let c = 0; c < 2; c++) assert.ok(Math.abs(bothShift[c]!) < 1e-5, `shift after AdaRound + correction ${bothShift}`);
    // δ depends on the weights only: measuring again gives the same shift, now compensated.
    const again = correctBias(corrected, batches.map((b) => b.x));
    assert.ok(Math.abs(again[0]!.shift[1]! - result.shift[1]!) < 1e-6);
  });
});

describe('quant/ptq: AdaRound', () => {
  it('lowers the layer reconstruction error below nearest rounding and writes an on-grid weight', () => {
    const rng = new Rng(10);
    manualSeed(10);
    const model = new Sequential(new Linear(32, 16));
    const x = randomData(rng, [256, 32], 0.5, 1);
    const plan: QuantPlan = { default: { weight: { ...staticInt4, bits: 3 }, activation: null }, keepFirstLast8bit: false, inputActivation: null };
    calibrate(model, [{ x }], { plan });
    const layer = model.at(0) as QuantLinear;
    const floatWeight = Tensor.prototype.detach.call(layer.weight);
    const weightCopy = new Tensor(Float32Array.from(floatWeight.data), floatWeight.shape);
    const result = adaroundLayer(layer, x, { iterations: 300, lr: 1e-2, seed: 1 });
    assert.ok(result.adaroundError < 0.95 * result.nearestError, `AdaRound ${result.adaroundError} vs nearest ${result.nearestError}`);
    assert.ok(result.flipped > 0 && result.flipped < 0.5);
    // The written weight is on the grid: the frozen quantizer reproduces it exactly, and its
    // reconstruction error is the reported one.
    const exported = layer.exportLayer();
    assert.deepEqual(Array.from(exported.weightFakeQuant.data), Array.from(layer.weight.data));
    const y = noGrad(() => linear(x, exported.weightFakeQuant));
    const t = noGrad(() => linear(x, weightCopy));
    let e = 0;
    for (let i = 0; i < y.size; i++) e += (y.data[i]! - t.data[i]!) ** 2;
    assert.ok(Math.abs(e / 256 - result.adaroundError) <= 1e-4 * result.adaroundError);
    // Every weight moved by less than one step from its float value (rounded up or down).
    const s = (layer.weightQuantizer as StaticQuantizer).qparams().scale;
    for (let i = 0; i < weightCopy.size; i++) {
      assert.ok(Math.abs(layer.weight.data[i]! - weightCopy.data[i]!) < s[Math.floor(i / 32)]! * 1.0001);
    }
  });
});
