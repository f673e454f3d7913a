import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, randn, Rng, Tensor } from '../../tensor/index.ts';
import { grad } from '../../autograd/engine.ts';
import { BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, type TensorModule } from '../../nn/index.ts';
import { createDataset, type Dataset } from '../../data/dataset.ts';
import { ceilPowerOfTwo, type QParams } from '../core/qparams.ts';
import { createQuantizer } from '../quantizers/quantizer.ts';
import type { LsqQuantizer } from '../quantizers/lsq.ts';
import { prepareQat, quantizedLayers } from '../qat/prepare.ts';
import type { ExportedQuant } from '../quantizers/quantizer.ts';
import type { SteQuantizer } from '../quantizers/ste.ts';
import { backendPlan, backendProfile, MqbenchError } from './backends.ts';
import { roundPowerOfTwo } from './pow2.ts';
import { benchmarkQuantization } from './runner.ts';

/** conv(1→4, 3x3) + BN + ReLU + pool, Linear(36→8) + ReLU, Linear(8→3): three quantized layers. */
function tinyModel(): TensorModule {
  return new Sequential(
    new Conv2d(1, 4, 3, { padding: 1 }), new BatchNorm2d(4), new ReLU(), new MaxPool2d(2),
    new Flatten(), new Linear(36, 8), new ReLU(), new Linear(8, 3),
  );
}

function affine(q: ExportedQuant | null): QParams {
  assert.ok(q !== null && q.type === 'affine', `expected an affine quantizer, got ${q?.type}`);
  return q.qparams;
}

function isPowerOfTwo(s: number): boolean {
  return s > 0 && Number.isInteger(Math.log2(s));
}

/** Per output channel (axis 0) or per tensor: min and max of w. */
function ranges(w: Tensor, perChannel: boolean): { lo: number[]; hi: number[] } {
  const rows = perChannel ? w.shape[0]! : 1;
  const per = w.size / rows;
  const lo: number[] = [];
  const hi: number[] = [];
  for (let r = 0; r < rows; r++) {
    let a = Infinity;
    let b = -Infinity;
    for (let i = r * per; i < (r + 1) * per; i++) {
      a = Math.min(a, w.data[i]!);
      b = Math.max(b, w.data[i]!);
    }
    lo.push(a);
    hi.push(b);
  }
  return { lo, hi };
}

/** A prepared tiny model of `backend` with `ste` at 4 bits, after 3 training-mode forwards. */
function preparedTiny(backend: string, algorithm = 'ste', bits = 4): TensorModule {
  manualSeed(3);
  const model = tinyModel();
  const { plan, resolve } = backendPlan(backend, algorithm, bits);
  prepareQat(model, plan, resolve);
  model.train();
  for (let i = 0; i < 3; i++) model.forward(randn([8, 1, 6, 6]));
  model.eval();
  return model;
}

describe('mqbench backend profiles (tiny model, ste, 4 bits: the schemes against their formulas)', () => {
  it('tensorrt: symmetric per-channel weights s_c = max|w_c|/7, signed symmetric activations, BN folded, every layer 4-bit', () => {
    const layers = quantizedLayers(preparedTiny('tensorrt'));
    assert.deepEqual(layers.map((l) => l.foldedBatchNorm), [true, false, false]);
    for (const { layer } of layers) {
      const e = layer.exportLayer();
      const w = affine(e.weightQuant);
      assert.equal(w.bits, 4);
      assert.deepEqual([w.qmin, w.qmax], [-7, 7]);
      assert.equal(w.scale.length, e.weightFloat.shape[0]);
      assert.ok(w.zeroPoint.every((z) => z === 0));
      const { lo, hi } = ranges(e.weightFloat, true);
      w.scale.forEach((s, c) => assert.equal(s, Math.fround(Math.max(-lo[c]!, hi[c]!) / 7), `channel ${c}`));
    }
    const input = affine(layers[0]!.layer.exportLayer().activationQuant);
    assert.deepEqual([input.bits, input.qmin, input.qmax, input.zeroPoint[0]], [8, -127, 127, 0]);
    for (const { layer } of layers.slice(1)) {
      const a = affine(layer.exportLayer().activationQuant);
      assert.deepEqual([a.bits, a.qmin, a.qmax, a.zeroPoint[0], a.scale.length], [4, -7, 7, 0, 1]);
      const q = layer.inputQuantizer as SteQuantizer;
      const bound = Math.max(Math.abs(q.runningMin.data[0]!), Math.abs(q.runningMax.data[0]!));
      assert.equal(a.scale[0], Math.fround(bound / 7));
    }
  });

  it('fbgemm: per-channel symmetric weights, asymmetric uint4 activations with s = (max − min)/15, z = round(−min/s) in [0, 15]', () => {
    const layers = quantizedLayers(preparedTiny('fbgemm'));
    const input = affine(layers[0]!.layer.exportLayer().activationQuant);
    assert.deepEqual([input.bits, input.qmin, input.qmax], [8, 0, 255]);
    assert.ok(input.zeroPoint[0]! > 0 && input.zeroPoint[0]! < 255, `the input (negative in places) needs a zero point inside the range, got ${input.zeroPoint[0]}`);
    for (const { layer } of layers) {
      const w = affine(layer.exportLayer().weightQuant);
      assert.equal(w.scale.length, layer.exportLayer().weightFloat.shape[0]);
      assert.ok(w.zeroPoint.every((z) => z === 0));
    }
    for (const { layer } of layers.slice(1)) {
      const a = affine(layer.exportLayer().activationQuant);
      assert.deepEqual([a.bits, a.qmin, a.qmax], [4, 0, 15]);
      const q = layer.inputQuantizer as SteQuantizer;
      const lo = Math.min(q.runningMin.data[0]!, 0);
      const hi = Math.max(q.runningMax.data[0]!, 0);
      const s = (hi - lo) / 15;
      assert.equal(a.scale[0], Math.fround(s));
      assert.equal(a.zeroPoint[0], Math.min(15, Math.max(0, Math.round(-lo / s))));
    }
  });

  it('snpe: per-tensor asymmetric weights s = (max − min)/15, z = round(−8 − min/s) in [−8, 7]; not deployable', () => {
    const layers = quantizedLayers(preparedTiny('snpe'));
    let nonZero = 0;
    for (const { layer } of layers) {
      const e = layer.exportLayer();
      const w = affine(e.weightQuant);
      assert.deepEqual([w.scale.length, w.qmin, w.qmax], [1, -8, 7]);
      const { lo: [min], hi: [max] } = ranges(e.weightFloat, false);
      const lo = Math.min(min!, 0);
      const hi = Math.max(max!, 0);
      const s = (hi - lo) / 15;
      assert.equal(w.scale[0], Math.fround(s));
      assert.equal(w.zeroPoint[0], Math.min(7, Math.max(-8, Math.round(-8 - lo / s))));
      if (w.zeroPoint[0] !== 0) nonZero++;
    }
    assert.ok(nonZero > 0, 'some weight zero point differs from 0 (asymmetric)');
    assert.match(backendProfile('snpe').notDeployable ?? '', /asymmetric/);
  });

  it('tvm: per-tensor symmetric power-of-two scales s = 2^⌈log2(max|w|/7)⌉ for weights, activations and the input', () => {
    const layers = quantizedLayers(preparedTiny('tvm'));
    for (const { layer } of layers) {
      const e = layer.exportLayer();
      const w = affine(e.weightQuant);
      const a = affine(e.activationQuant);
      assert.equal(w.scale.length, 1);
      const { lo: [min], hi: [max] } = ranges(e.weightFloat, false);
      assert.equal(w.scale[0], ceilPowerOfTwo(Math.max(-min!, max!) / 7));
      for (const qp of [w, a]) {
        assert.ok(isPowerOfTwo(qp.scale[0]!), `scale ${qp.scale[0]} is a power of two`);
        assert.equal(qp.zeroPoint[0], 0);
      }
      // The fake-quantized weight is an integer multiple of that scale inside [−7, 7].
      for (const v of e.weightFakeQuant.data) {
        const k = v / w.scale[0]!;
        assert.ok(Number.isInteger(k) && k >= -7 && k <= 7, `weight level ${k}`);
      }
    }
  });

  it('academic: per-tensor symmetric weights, unsigned z = 0 activations, first and last layers 8-bit, BN not folded', () => {
    const layers = quantizedLayers(preparedTiny('academic'));
    assert.deepEqual(layers.map((l) => l.foldedBatchNorm), [false, false, false]);
    assert.deepEqual(layers.map((l) => l.weightSpec?.bits), [8, 4, 8]);
    const mid = layers[1]!.layer.exportLayer();
    const w = affine(mid.weightQuant);
    const a = affine(mid.activationQuant);
    assert.deepEqual([w.scale.length, w.qmin, w.qmax, w.zeroPoint[0]], [1, -7, 7, 0]);
    assert.deepEqual([a.qmin, a.qmax, a.zeroPoint[0]], [0, 15, 0]);
    const q = layers[1]!.layer.inputQuantizer as SteQuantizer;
    assert.equal(a.scale[0], Math.fround(Math.max(q.runningMax.data[0]!, 0) / 15));
  });
});

describe('mqbench lsqPow2', () => {
  it('forwards with step 2^round(log2 s) and gives x and the step exactly the gradients LSQ gives at that power of two', () => {
    const rng = new Rng(11);
    const w = randn([5, 7], { rng }).requiresGrad_();
    const spec = { kind: 'lsqPow2', bits: 4, signed: true, symmetric: true, granularity: 'channel' };
    const pow2 = createQuantizer(spec, { role: 'weight', shape: w.shape, channelAxis: 0 }) as LsqQuantizer;
    const lsq = createQuantizer({ ...spec, kind: 'lsq' }, { role: 'weight', shape: w.shape, channelAxis: 0 }) as LsqQuantizer;
    pow2.forward(w); // initialises the step from w
    lsq.forward(w);
    const learned = [0.0601, 0.09, 0.2, 0.3, 0.011];
    pow2.step.data.set(learned);
    lsq.step.data.set(learned.map(roundPowerOfTwo));
    assert.deepEqual(Array.from(lsq.step.data), [0.0625, 0.125, 0.25, 0.25, 0.0078125]);
    assert.deepEqual(Array.from(affine(pow2.exportQuant()).scale), [0.0625, 0.125, 0.25, 0.25, 0.0078125]);
    const gy = randn([5, 7], { rng });
    const y1 = pow2.forward(w);
    const y2 = lsq.forward(w);
    assert.deepEqual(Array.from(y1.data), Array.from(y2.data));
    for (let i = 0; i < w.size; i++) {
      const k = y1.data[i]! / affine(pow2.exportQuant()).scale[Math.floor(i / 7)]!;
      assert.ok(Number.isInteger(k) && Math.abs(k) <= 7, `level ${k}`);
    }
    const [gx1, gs1] = grad(y1, [w, pow2.step], { gradOutputs: [gy] });
    const [gx2, gs2] = grad(y2, [w, lsq.step], { gradOutputs: [gy] });
    assert.deepEqual(Array.from(gx1!.data), Array.from(gx2!.data));
    assert.deepEqual(Array.from(gs1!.data), Array.from(gs2!.data));
    assert.ok(Array.from(gs1!.data).some((g) => g !== 0));
  });

  it('refuses an asymmetric power-of-two grid', () => {
    assert.throws(() => createQuantizer({ kind: 'stePow2', bits: 4, signed: false, symmetric: false }, { role: 'activation' }), /symmetric only/);
    assert.throws(() => createQuantizer({ kind: 'lsqPow2', bits: 4, signed: true, symmetric: false, granularity: 'tensor' }, { role: 'weight', shape: [2, 2] }), /symmetric only/);
  });
});

/** 3-class 6x6 images: a bright row in the top, middle or bottom third, plus noise. */
function stripes(n: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const images = new Float32Array(n * 36);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const label = i % 3;
    labels[i] = label;
    for (let p = 0; p < 36; p++) images[i * 36 + p] = 0.2 * rng.uniform();
    const row = label * 2 + (rng.uniform() < 0.5 ? 0 : 1);
    for (let c = 0; c < 6; c++) images[i * 36 + row * 6 + c] = 0.8 + 0.2 * rng.uniform();
  }
  return createDataset({ name: 'stripes', images, labels, sampleShape: [1, 6, 6], numClasses: 3, classNames: ['top', 'middle', 'bottom'] });
}

describe('benchmarkQuantization', () => {
  it('the deployed IntModel equals the fake-quant model on every test input (argmax agreement 1, logits ≤ 1 LSB from the float64 simulation)', () => {
    const results = benchmarkQuantization({
      createModel: () => {
        manualSeed(5);
        return tinyModel();
      },
      train: stripes(96, 1), test: stripes(48, 2), normalize: { mean: 0.3, std: 0.3 },
      algorithms: ['ste', 'lsq', 'pact', 'dorefa'], backends: ['tensorrt', 'fbgemm', 'tvm', 'snpe'], bits: [4],
      recipe: { epochs: 1, batchSize: 16, lr: 1e-2 }, verifySamples: 48, progress: false,
    });
    assert.equal(results.length, 16);
    const deployed = results.filter((r) => r.status === 'ok' && r.deployedAccuracy !== null);
    assert.deepEqual(deployed.map((r) => `${r.backend}/${r.algorithm}`).sort(), [
      'fbgemm/lsq', 'fbgemm/pact', 'fbgemm/ste', 'tensorrt/lsq', 'tensorrt/pact', 'tensorrt/ste', 'tvm/lsq', 'tvm/ste',
    ]);
    for (const r of deployed) {
      const id = `${r.backend}/${r.algorithm}`;
      assert.equal(r.argmaxAgreement, 1, id);
      assert.equal(r.deployedAccuracy, r.simulatedAccuracy, id);
      assert.ok(r.maxLogitLsb! <= 1, `${id}: ${r.maxLogitLsb} LSB`);
      assert.ok(r.float32ToleranceRatio! <= 1, `${id}: ${r.float32ToleranceRatio}`);
    }
    const snpe = results.filter((r) => r.backend === 'snpe' && r.status === 'ok');
    assert.equal(snpe.length, 3);
    for (const r of snpe) {
      assert.equal(r.deployedAccuracy, null);
      assert.match(r.deployReason ?? '', /asymmetric/);
    }
    const refused = results.filter((r) => r.status === 'unsupported').map((r) => `${r.backend}/${r.algorithm}`).sort();
    assert.deepEqual(refused, ['fbgemm/dorefa', 'snpe/dorefa', 'tensorrt/dorefa', 'tvm/dorefa', 'tvm/pact']);
    assert.equal(results.filter((r) => r.status === 'error').length, 0, JSON.stringify(results.filter((r) => r.status === 'error')));
  });

  it('a training set whose last batch would hold one image trains (BatchNorm model; audit s11 #11)', () => {
    const results = benchmarkQuantization({
      createModel: () => {
        manualSeed(5);
        return new Sequential(new Flatten(), new Linear(36, 8), new BatchNorm1d(8), new ReLU(), new Linear(8, 3));
      },
      train: stripes(17, 1), test: stripes(16, 2), normalize: { mean: 0.3, std: 0.3 },
      algorithms: ['lsq'], backends: ['academic'], bits: [8],
      recipe: { epochs: 1, batchSize: 16, lr: 1e-2 }, verifySamples: 16, progress: false,
    });
    assert.equal(results.length, 1);
    assert.equal(results[0]!.status, 'ok', JSON.stringify(results[0]));
  });

  it('refuses unknown backend and algorithm names before training, naming the known ones', () => {
    const base = { createModel: tinyModel, train: stripes(6, 1), test: stripes(6, 2), bits: [4], progress: false };
    assert.throws(() => benchmarkQuantization({ ...base, algorithms: ['lsq'], backends: ['tpu'] }), (e: unknown) => e instanceof MqbenchError && e.reason === 'unknown-backend' && /'tpu'.*academic, tensorrt, fbgemm, snpe, tvm/.test(e.message));
    assert.throws(() => benchmarkQuantization({ ...base, algorithms: ['adaround'], backends: ['tensorrt'] }), (e: unknown) => e instanceof MqbenchError && e.reason === 'unknown-algorithm' && /'adaround'.*ste, lsq, pact/.test(e.message));
    assert.throws(() => benchmarkQuantization({ ...base, algorithms: ['lsq'], backends: ['tensorrt'], bits: [1] }), /bits must be integers in \[2, 8\]/);
    assert.throws(() => backendPlan('TensorRT', 'lsq', 4), /unknown backend 'TensorRT'/);
    assert.throws(() => backendPlan('tvm', 'pact', 4), (e: unknown) => e instanceof MqbenchError && e.reason === 'unsupported' && /power of two/.test(e.message));
  });
});
