import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { conv2d, crossEntropy, randn, Rng, Tensor, zeros, manualSeed, linear, relu } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { fakeQuantize } from '../core/quantize.ts';
import { qparamsFromRange, qRange, rangesOf } from '../core/qparams.ts';
import { Quantizer, quantizerKinds, registerQuantizer, type ExportedQuant, type QuantizerContext, type QuantizerSpec } from '../quantizers/quantizer.ts';
import { BatchNorm2d, cnn, Conv2d, Identity, lenet5, Linear, mlp, ReLU, Sequential, type Module } from '../../nn/index.ts';
import type { QConfig } from '../config/qconfig.ts';
import type { QuantPlan } from '../config/plan.ts';
import { estimatorsFor, int8PerTensorAffine, qconfigFor, SCHEMES } from '../config/index.ts';
import {
  disableFakeQuant, enableFakeQuant, formatQuantTable, prepareQat, quantizedLayers, quantizers, setQuantProgress,
  QuantConv2d, QuantConvBn2d, QuantLinear,
} from './index.ts';

/**
 * Test-only quantizer kind 'testFq' (the real kinds live in quant/quantizers):
 * weights: min-max symmetric per output channel, recomputed every call (buffer `lastMax`);
 * activations: a learned per-tensor scale (parameter `scale`, initialised to max|x|/qmax on the
 * first batch, LSQ gradient through fakeQuantize), unsigned unless `signed: true`.
 */
class TestQuantizer extends Quantizer {
  readonly spec: QuantizerSpec;
  readonly role: 'weight' | 'activation';
  readonly qmin: number;
  readonly qmax: number;
  readonly lastMax: Tensor | null = null;
  readonly scale: Tensor | null = null;
  readonly initialized: Tensor | null = null;
  progress: [number, number] | null = null;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    super();
    this.spec = spec;
    this.role = context.role;
    const signed = context.role === 'weight' || spec.signed === true;
    [this.qmin, this.qmax] = qRange({ bits: spec.bits, signed, symmetric: true });
    if (context.role === 'weight') {
      this.lastMax = this.registerBuffer('lastMax', zeros([context.shape![0]!]));
    } else {
      this.scale = this.registerParameter('scale', zeros([1]).add(1).detach());
      this.initialized = this.registerBuffer('initialized', zeros([1]));
    }
  }

  forward(x: Tensor): Tensor {
    if (!this.fakeQuantEnabled) return x;
    if (this.role === 'weight') {
      const spec = { bits: this.spec.bits, signed: true, symmetric: true, granularity: 'channel', axis: 0 } as const;
      const { min, max } = rangesOf(x.data, x.shape, spec);
      for (let c = 0; c < max.length; c++) this.lastMax!.data[c] = Math.max(max[c]!, -min[c]!);
      return fakeQuantize(x, qparamsFromRange(min, max, spec), { gradient: 'ste' });
    }
    if (this.initialized!.data[0] === 0) {
      let m = 0;
      for (const v of x.data) m = Math.max(m, Math.abs(v));
      this.scale!.data[0] = m > 0 ? m / this.qmax : 1;
      this.initialized!.data[0] = 1;
    }
    return fakeQuantize(x, { scale: this.scale!, zeroPoint: zeros([1]), qmin: this.qmin, qmax: this.qmax });
  }

  exportQuant(): ExportedQuant {
    const channels = this.role === 'weight' ? this.lastMax!.size : 1;
    const scale = this.role === 'weight' ? Float32Array.from(this.lastMax!.data, (m) => m / this.qmax) : Float32Array.from(this.scale!.data);
    return {
      type: 'affine',
      qparams: { scale, zeroPoint: new Int32Array(channels), bits: this.spec.bits, qmin: this.qmin, qmax: this.qmax, axis: this.role === 'weight' ? 0 : null, groupSize: null },
    };
  }

  override setProgress(epoch: number, totalEpochs: number): void {
    this.progress = [epoch, totalEpochs];
  }
}
if (!quantizerKinds().includes('testFq')) registerQuantizer('testFq', (spec, context) => new TestQuantizer(spec, context));

const t4config: QConfig = { weight: { kind: 'testFq', bits: 4 }, activation: { kind: 'testFq', bits: 4 } };
/** 4-bit everywhere except first/last layers (8 bits) and the image input (signed 8 bits). */
const t4: QuantPlan = { default: t4config, inputActivation: { kind: 'testFq', bits: 8, signed: true } };
const rng = new Rng(5);

function maxAbsDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let d = 0;
  for (let i = 0; i < a.size; i++) d = Math.max(d, Math.abs(a.data[i]! - b.data[i]!));
  return d;
}

/** Two models with identical state (b loads a's state dict). */
function twin<M extends Module>(make: () => M): [M, M] {
  const a = make();
  const b = make();
  b.loadStateDict(a.stateDict());
  return [a, b];
}

const smallCnn = (): ReturnType<typeof cnn> => cnn({ channels: [4, 6], hidden: 12, dropout: 0 });

describe('quant/qat: prepareQat swaps layers and keeps parameters', () => {
  it('lenet5: Conv2d / Linear become QuantConv2d / QuantLinear holding the same tensors', () => {
    manualSeed(1);
    const model = lenet5();
    const x = randn([2, 1, 28, 28], { rng });
    const before = model.forward(x);
    const weights = new Map(model.namedParameters());
    const prepared = prepareQat(model, t4);
    assert.equal(prepared, model);
    assert.ok(model.conv1 instanceof QuantConv2d && model.conv2 instanceof QuantConv2d);
    assert.ok(model.fc1 instanceof QuantLinear && model.fc3 instanceof QuantLinear);
    assert.equal(model.getSubmodule('fc2'), model.fc2);
    const params = model.parameters();
    for (const [name, tensor] of weights) {
      assert.equal(model.namedParameters().find(([n]) => n === name)?.[1], tensor, `${name} is the same tensor under the same name`);
      assert.ok(params.includes(tensor));
    }
    // Five activation quantizers with one learned scale each.
    assert.equal(params.length, weights.size + 5);
    assert.ok(model.namedParameters().some(([n]) => n === 'fc1.inputQuantizer.scale'));
    assert.deepEqual(model.forward(x).shape, before.shape);
    assert.deepEqual(quantizedLayers(model).map((l) => `${l.name}:${l.type}`), ['conv1:Conv2d', 'conv2:Conv2d', 'fc1:Linear', 'fc2:Linear', 'fc3:Linear']);
    assert.throws(() => prepareQat(model, t4), /already prepared/);
  });

  it('mlp (a Sequential): layers swapped in place, forward shape unchanged', () => {
    const model = mlp({ inputSize: 12, hidden: [16, 8], numClasses: 3 });
    const x = randn([5, 12], { rng });
    prepareQat(model, { ...t4, overrides: [{ match: '3', config: null }] });
    assert.ok(model.at(1) instanceof QuantLinear);
    assert.ok(model.at(3) instanceof Linear && !(model.at(3) instanceof QuantLinear), 'override null keeps the layer float');
    assert.ok(model.at(5) instanceof QuantLinear);
    assert.deepEqual(model.forward(x).shape, [5, 3]);
  });

  it('a per-group weight spec whose groupSize does not divide a layer fails in prepareQat, naming the layer, and leaves the model float', () => {
    const model = mlp({ inputSize: 12, hidden: [16], numClasses: 3 });
    const grouped: QConfig = { weight: { kind: 'ste', bits: 4, granularity: 'group', groupSize: 8, axis: 1 }, activation: null };
    // fc 0: [16, 12] (12 is not a multiple of 8); fc 2: [3, 16].
    assert.throws(() => prepareQat(model, { default: grouped }), /prepareQat: cannot build the weight quantizer of '1' .*groupSize 8 does not divide axis 1 of the weight \[16, 12\] \(size 12\)/);
    assert.equal(quantizedLayers(model).length, 0);
  });

  it('cnn: Conv2d→BatchNorm2d folded into QuantConvBn2d, BN replaced by Identity, BN state kept', () => {
    const model = smallCnn();
    const bn = model.features.at(1) as BatchNorm2d;
    prepareQat(model, t4);
    const fused = model.features.at(0);
    assert.ok(fused instanceof QuantConvBn2d);
    assert.equal(fused.bn, bn);
    assert.ok(model.features.at(1) instanceof Identity);
    assert.ok(model.features.at(3) instanceof QuantConvBn2d);
    assert.ok(model.classifier.at(1) instanceof QuantLinear);
    const names = [...model.stateDict().keys()];
    for (const key of ['features.0.weight', 'features.0.bn.weight', 'features.0.bn.runningMean', 'features.0.bn.numBatchesTracked', 'features.0.weightQuantizer.lastMax', 'features.0.inputQuantizer.scale']) {
      assert.ok(names.includes(key), `${key} in stateDict`);
    }
    assert.ok(model.parameters().includes(bn.weight!));
    assert.deepEqual(model.forward(randn([3, 1, 28, 28], { rng })).shape, [3, 10]);
    assert.match(formatQuantTable(quantizedLayers(model)), /features\.3\s+Conv2d\+BN\s+testFq int4\s+testFq uint4/);
  });

  it('stateDict holds the quantizer state and loads into a freshly prepared model with identical outputs', () => {
    for (const make of [() => lenet5(), smallCnn]) {
      const a = prepareQat(make(), t4);
      const x = randn([4, 1, 28, 28], { rng });
      a.forward(x); // initialises the activation scales, updates BN statistics
      a.eval();
      const state = a.stateDict();
      assert.ok([...state.keys()].some((k) => k.endsWith('inputQuantizer.initialized')));
      const b = prepareQat(make(), t4);
      b.loadStateDict(state);
      b.eval();
      assert.deepEqual(b.forward(x).toArray(), a.forward(x).toArray());
    }
  });

  it('builds nothing when a quantizer cannot be built (the model is left as it was)', () => {
    const model = lenet5();
    registerOnce('testBroken', () => { throw new Error('boom'); });
    assert.throws(() => prepareQat(model, { ...t4, overrides: [{ match: 'fc3', config: { weight: { kind: 'testBroken', bits: 4 } } }] }), /weight quantizer of 'fc3'.*boom/);
    assert.ok(model.conv1 instanceof Conv2d);
    assert.equal(quantizedLayers(model).length, 0);
  });
});

function registerOnce(kind: string, factory: Parameters<typeof registerQuantizer>[1]): void {
  if (!quantizerKinds().includes(kind)) registerQuantizer(kind, factory);
}

describe('quant/qat: with fake quantization disabled the prepared model is the float model', () => {
  for (const [name, make] of [['lenet5', () => lenet5()], ['mlp', () => mlp({ inputSize: 784, hidden: [32, 16] })]] as const) {
    it(`${name}: outputs equal exactly`, () => {
      const [float, quant] = twin<Module & { forward(x: Tensor): Tensor }>(make);
      prepareQat(quant, t4);
      const x = randn([3, 1, 28, 28], { rng });
      disableFakeQuant(quant);
      assert.deepEqual(quant.forward(x).toArray(), float.forward(x).toArray());
      enableFakeQuant(quant);
      assert.ok(maxAbsDiff(quant.forward(x), float.forward(x)) > 0);
    });
  }

  it('cnn (conv-BN folded): equals conv→BN in train mode (and running stats) and in eval mode within 1e-5', () => {
    const [float, quant] = twin(smallCnn);
    prepareQat(quant, t4);
    disableFakeQuant(quant);
    for (let step = 0; step < 3; step++) {
      const x = randn([4, 1, 28, 28], { rng });
      assert.ok(maxAbsDiff(quant.forward(x), float.forward(x)) < 1e-5, `train step ${step}`);
    }
    const floatBn = float.features.at(4) as BatchNorm2d;
    const quantBn = (quant.features.at(3) as QuantConvBn2d).bn;
    assert.ok(maxAbsDiff(quantBn.runningMean!, floatBn.runningMean!) < 1e-6);
    assert.ok(maxAbsDiff(quantBn.runningVar!, floatBn.runningVar!) < 1e-6);
    assert.deepEqual(quantBn.numBatchesTracked!.toArray(), [3]);
    float.eval();
    quant.eval();
    const x = randn([4, 1, 28, 28], { rng });
    assert.ok(maxAbsDiff(quant.forward(x), float.forward(x)) < 1e-5, 'eval');
  });

  it('conv with bias + BN with momentum null: same equivalence', () => {
    const make = (): Sequential => new Sequential(new Conv2d(2, 3, 3, { padding: 1 }), new BatchNorm2d(3, { momentum: null }), new ReLU());
    const [float, quant] = twin(make);
    prepareQat(quant, { ...t4, keepFirstLast8bit: false });
    disableFakeQuant(quant);
    for (let step = 0; step < 2; step++) {
      const x = randn([3, 2, 5, 5], { rng, mean: 0.5 });
      assert.ok(maxAbsDiff(quant.forward(x), float.forward(x)) < 1e-5);
    }
    float.eval();
    quant.eval();
    const x = randn([3, 2, 5, 5], { rng });
    assert.ok(maxAbsDiff(quant.forward(x), float.forward(x)) < 1e-5);
  });
});

describe('quant/qat: QuantConvBn2d folding against an independent computation', () => {
  it('eval: output = conv(x, quantize(W·γ/σ)) + β + (b − μ)·γ/σ, and exportLayer returns those', () => {
    const conv = new Conv2d(3, 4, 3, { padding: 1, stride: 2 });
    const bn = new BatchNorm2d(4);
    const model = new Sequential(conv, bn);
    // Non-trivial BN state.
    for (let c = 0; c < 4; c++) {
      bn.weight!.data[c] = 0.5 + 0.3 * c;
      bn.bias!.data[c] = -0.2 + 0.1 * c;
      bn.runningMean!.data[c] = 0.05 * (c - 1.5);
      bn.runningVar!.data[c] = 0.3 + 0.4 * c;
    }
    const W = conv.weight.clone();
    const b = conv.bias!.clone();
    prepareQat(model, { default: { weight: { kind: 'testFq', bits: 4 }, activation: null }, keepFirstLast8bit: false, inputActivation: null });
    model.eval();
    const x = randn([2, 3, 7, 7], { rng });
    const y = model.forward(x);

    // Independent: fold with loops in float64, quantize per channel with the narrow int4 range.
    const [o, i, kh, kw] = W.shape as [number, number, number, number];
    const per = i * kh * kw;
    const folded = new Float32Array(W.size);
    const qw = new Float32Array(W.size);
    const foldedBias = new Float32Array(o);
    for (let c = 0; c < o; c++) {
      const invStd = 1 / Math.sqrt(bn.runningVar!.data[c]! + bn.eps);
      const g = bn.weight!.data[c]! * invStd;
      foldedBias[c] = bn.bias!.data[c]! + (b.data[c]! - bn.runningMean!.data[c]!) * g;
      let m = 0;
      for (let j = 0; j < per; j++) {
        folded[c * per + j] = W.data[c * per + j]! * g;
        m = Math.max(m, Math.abs(folded[c * per + j]!));
      }
      const s = Math.fround(m / 7);
      for (let j = 0; j < per; j++) qw[c * per + j] = Math.min(7, Math.max(-7, roundHalfEven(folded[c * per + j]! / s))) * s;
    }
    const expected = conv2d(x, new Tensor(qw, W.shape), new Tensor(foldedBias, [o]), { stride: 2, padding: 1 });
    assert.ok(maxAbsDiff(y, expected) < 1e-5, `max diff ${maxAbsDiff(y, expected)}`);

    const exported = (model.at(0) as QuantConvBn2d).exportLayer();
    assert.ok(maxAbsDiff(exported.weightFloat, new Tensor(folded, W.shape)) < 1e-6);
    assert.ok(maxAbsDiff(exported.bias!, new Tensor(foldedBias, [o])) < 1e-6);
    assert.ok(maxAbsDiff(exported.weightFakeQuant, new Tensor(qw, W.shape)) < 1e-6);
    assert.equal(exported.activationQuant, null);
    assert.equal(exported.weightQuant?.type, 'affine');
    assert.deepEqual(exported.geometry, { type: 'conv2d', inChannels: 3, outChannels: 4, kernelSize: [3, 3], stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 1 });
  });

  it('QuantLinear.exportLayer returns the weight, bias and both quantizations', () => {
    const model = prepareQat(mlp({ inputSize: 6, hidden: [5], numClasses: 2 }), t4);
    model.forward(randn([3, 6], { rng }));
    const layer = model.at(1) as QuantLinear;
    const e = layer.exportLayer();
    assert.equal(e.weightFloat.data, layer.weight.data);
    assert.deepEqual(e.geometry, { type: 'linear', inFeatures: 6, outFeatures: 5 });
    assert.equal(e.activationQuant?.type, 'affine');
  });
});

describe('quant/qat: training helpers', () => {
  it('setQuantProgress reaches every quantizer; disable/enable flip every one', () => {
    const model = prepareQat(smallCnn(), t4);
    const all = quantizers(model) as TestQuantizer[];
    assert.equal(all.length, 2 * 6);
    setQuantProgress(model, 3, 10);
    assert.ok(all.every((q) => q.progress?.[0] === 3 && q.progress[1] === 10));
    disableFakeQuant(model);
    assert.ok(all.every((q) => !q.fakeQuantEnabled));
    enableFakeQuant(model);
    assert.ok(all.every((q) => q.fakeQuantEnabled));
    assert.throws(() => setQuantProgress(model, 1, 0), /totalEpochs > 0/);
  });

  it('a short QAT fine-tune on a synthetic task decreases the loss', () => {
    const data = new Rng(21);
    const teacherW = randn([3, 8], { rng: data });
    const x = randn([64, 8], { rng: data });
    const labels = noGrad(() => linear(relu(x), teacherW).argmax(1));
    const targets = new Tensor(Int32Array.from(labels.data), [64]);
    manualSeed(4);
    const model = prepareQat(mlp({ inputSize: 8, hidden: [16], numClasses: 3 }), { ...t4, keepFirstLast8bit: false });
    const params = model.parameters();
    const loss = (): number => noGrad(() => crossEntropy(model.forward(x), targets).item());
    const initial = loss();
    for (let step = 0; step < 60; step++) {
      model.zeroGrad();
      crossEntropy(model.forward(x), targets).backward();
      for (const p of params) {
        if (!p.grad) continue;
        const lr = p.size === 1 ? 0.001 : 0.2; // the activation scales move slowly
        for (let k = 0; k < p.size; k++) p.data[k] = p.data[k]! - lr * p.grad.data[k]!;
      }
    }
    const final = loss();
    assert.ok(final < 0.7 * initial, `loss ${initial} -> ${final}`);
    const scale = model.namedParameters().find(([n]) => n === '1.inputQuantizer.scale')![1];
    assert.ok(scale.grad !== null, 'the learned activation scale receives a gradient');
  });
});

describe('quant/qat: with the shipped quantizer kinds', () => {
  it('every scheme × estimator prepares a small CNN that trains a step, evaluates and exports', () => {
    for (const scheme of SCHEMES) {
      for (const estimator of estimatorsFor(scheme)) {
        const label = `${scheme}/${estimator}`;
        const model = prepareQat(cnn({ channels: [3, 4], hidden: 8, dropout: 0 }), qconfigFor(scheme, estimator));
        const x = randn([2, 1, 28, 28], { rng });
        const loss = crossEntropy(model.forward(x), new Tensor(Int32Array.from([1, 7]), [2]));
        assert.ok(Number.isFinite(loss.item()), label);
        loss.backward();
        const fc = model.classifier.at(1) as QuantLinear;
        assert.ok(fc.weight.grad !== null, `${label}: gradient reaches the weights`);
        setQuantProgress(model, 1, 4);
        model.eval();
        assert.deepEqual(model.forward(x).shape, [2, 10], label);
        for (const { name, layer } of quantizedLayers(model)) {
          const e = layer.exportLayer();
          assert.ok(e.weightQuant !== null && e.activationQuant !== null, `${label}: ${name} exports both`);
        }
      }
    }
  });

  it('a bare QConfig gets the plan defaults: 8-bit first/last layers and int8 image input', () => {
    const model = prepareQat(lenet5(), qconfigFor('w4a4', 'lsq'));
    const rows = quantizedLayers(model);
    assert.equal(rows[0]!.weightSpec!.bits, 8);
    assert.deepEqual(rows[0]!.activationSpec, int8PerTensorAffine);
    assert.equal(rows[2]!.weightSpec!.bits, 4);
    assert.equal(rows[4]!.activationSpec!.bits, 8);
  });

  it('w4a4 LSQ fine-tune of a float-pretrained MLP on a synthetic task decreases the loss', () => {
    const data = new Rng(8);
    const teacher = randn([4, 10], { rng: data });
    const x = randn([96, 10], { rng: data });
    const targets = new Tensor(Int32Array.from(noGrad(() => linear(x, teacher).argmax(1)).data), [96]);
    manualSeed(9);
    const model = mlp({ inputSize: 10, hidden: [24], numClasses: 4 });
    const sgd = (params: Tensor[], lr: number, steps: number): void => {
      for (let step = 0; step < steps; step++) {
        model.zeroGrad();
        crossEntropy(model.forward(x), targets).backward();
        for (const p of params) if (p.grad) for (let k = 0; k < p.size; k++) p.data[k] = p.data[k]! - lr * p.grad.data[k]!;
      }
    };
    sgd(model.parameters(), 0.3, 30); // a float warm-up
    prepareQat(model, { default: qconfigFor('w4a4', 'lsq'), keepFirstLast8bit: false, inputActivation: 'layer' });
    const loss = (): number => noGrad(() => crossEntropy(model.forward(x), targets).item());
    const initial = loss();
    sgd(model.parameters(), 0.1, 60);
    const final = loss();
    assert.ok(final < 0.8 * initial, `QAT loss ${initial} -> ${final}`);
  });
});

describe('quant/qat: fused conv chain', () => {
  it('a prepared LeNet-5 runs QuantConv2d → ReLU (→ pool) fused, with the unfused chain\'s outputs and gradients', () => {
    manualSeed(3);
    const model = prepareQat(lenet5(), { default: qconfigFor('w4a4', 'lsq') });
    const x = randn([4, 1, 28, 28], { rng: new Rng(5) });
    const y = new Tensor(Int32Array.from([1, 7, 3, 0]), [4]);
    const m = model as unknown as Record<string, Module & { forward(t: Tensor): Tensor }>;
    const unfused = (t: Tensor): Tensor => {
      let h = m.pool1!.forward(m.relu1!.forward(m.conv1!.forward(t)));
      h = m.pool2!.forward(m.relu2!.forward(m.conv2!.forward(h)));
      h = m.flatten!.forward(h);
      h = m.relu3!.forward(m.fc1!.forward(h));
      h = m.relu4!.forward(m.fc2!.forward(h));
      return m.fc3!.forward(h);
    };
    model.train();
    model.forward(x); // initialises the LSQ steps and the input observer
    const grads = (f: (t: Tensor) => Tensor): { out: number[]; g: number[][] } => {
      const out = f(x);
      crossEntropy(out, y).backward();
      const g = model.parameters().map((p) => Array.from(p.grad?.data ?? []));
      for (const p of model.parameters()) p.grad = null;
      return { out: Array.from(out.data), g };
    };
    const a = grads((t) => model.forward(t));
    const b = grads(unfused);
    assert.deepEqual(a.out, b.out);
    a.g.forEach((g, i) => g.forEach((v, j) => assert.ok(Math.abs(v - b.g[i]![j]!) <= 1e-6 * (1 + Math.abs(b.g[i]![j]!)), `param ${i}[${j}]: ${v} vs ${b.g[i]![j]}`)));
    model.eval();
    const inference = noGrad(() => model.forward(x));
    assert.deepEqual(Array.from(inference.data), Array.from(noGrad(() => unfused(x)).data));
  });
});
