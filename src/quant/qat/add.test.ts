import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, randn, type Tensor } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { fakeQuantize } from '../core/quantize.ts';
import { Add, resnet8 } from '../../nn/index.ts';
import { qconfigFor } from '../config/index.ts';
import { int8PerTensorAffine } from '../config/presets.ts';
import { calibrate } from '../ptq/calibrate.ts';
import { convert } from '../../runtime/index.ts';
import { prepareQat, quantizers } from './prepare.ts';
import { QuantAdd } from './add.ts';

describe('QuantAdd (prepareQat of nn.Add)', () => {
  it('replaces every nn.Add; both inputs get the plan activation spec made signed; forward = q_a(a) + q_b(b)', () => {
    manualSeed(1);
    const model = resnet8({ channels: [4, 8, 8] });
    prepareQat(model, { default: qconfigFor('w4a4', 'lsq') });
    const adds = model.modules().filter((m): m is QuantAdd => m instanceof QuantAdd);
    assert.equal(adds.length, 3);
    assert.ok(!model.modules().some((m) => m instanceof Add));
    const act = qconfigFor('w4a4', 'lsq').activation!;
    for (const a of adds) {
      assert.deepEqual(a.inputQuantizerA!.spec, { ...act, signed: true });
      assert.notEqual(a.inputQuantizerA, a.inputQuantizerB);
    }
    // The quantizers are children: they are in quantizers(model), the parameters and the state dict.
    assert.ok(adds.every((a) => quantizers(model).includes(a.inputQuantizerA!) && quantizers(model).includes(a.inputQuantizerB!)));
    assert.ok([...model.stateDict().keys()].some((k) => k.startsWith('stages.1.add.inputQuantizerB.')));

    // Closed form with fixed affine quantizers: the sum of the two fake-quantized inputs.
    const m2 = resnet8({ channels: [4, 8, 8] });
    prepareQat(m2, { default: qconfigFor('w8a8', 'ste') }, { addActivation: int8PerTensorAffine });
    const add = m2.modules().find((m): m is QuantAdd => m instanceof QuantAdd)!;
    const a = randn([2, 4, 3, 3]);
    const b = randn([2, 4, 3, 3]);
    add.train();
    noGrad(() => add.forward(a, b)); // observes the ranges
    add.eval();
    const y = noGrad(() => add.forward(a, b));
    const fq = (t: Tensor, q: QuantAdd['inputQuantizerA']): Float32Array => {
      const e = q!.exportQuant();
      assert.equal(e.type, 'affine');
      return fakeQuantize(t, e.type === 'affine' ? e.qparams : (undefined as never)).data as Float32Array;
    };
    const qa = fq(a, add.inputQuantizerA);
    const qb = fq(b, add.inputQuantizerB);
    assert.deepEqual(Array.from(y.data), Array.from(qa, (v, i) => Math.fround(v + qb[i]!)));
    assert.throws(() => add.forward(a, randn([2, 4, 3, 2])), /QuantAdd: input shapes/);
  });

  it('addActivation: null leaves the adds float (convert then refuses them); a sign-valued plan falls back to int8 affine', () => {
    manualSeed(2);
    const model = resnet8({ channels: [4, 8, 8] });
    prepareQat(model, { default: qconfigFor('w8a8', 'ste') }, { addActivation: null });
    const add = model.modules().find((m): m is QuantAdd => m instanceof QuantAdd)!;
    assert.equal(add.inputQuantizerA, null);
    model.train();
    noGrad(() => model.forward(randn([4, 1, 28, 28])));
    model.eval();
    assert.throws(() => convert(model, { inputShape: [1, 28, 28] }), /has a float first input \(no input quantizer\)/);
    const bnn = resnet8({ channels: [4, 8, 8] });
    prepareQat(bnn, { default: qconfigFor('w1a1', 'binary') });
    assert.deepEqual(bnn.modules().find((m): m is QuantAdd => m instanceof QuantAdd)!.inputQuantizerA!.spec, int8PerTensorAffine);
  });

  it('a searched plan (float default, every layer an override) quantizes the adds with the last layer\'s input spec, made signed', () => {
    manualSeed(3);
    const model = resnet8({ channels: [4, 8, 8] });
    const layers = model.namedModules().filter(([, m]) => m.constructor.name === 'Conv2d' || m.constructor.name === 'Linear').map(([n]) => n);
    const last = { kind: 'lsq', bits: 5, signed: false, symmetric: false, granularity: 'tensor' } as const;
    const plan = {
      default: { weight: null, activation: null },
      overrides: layers.map((match, i) => ({
        match,
        config: { weight: qconfigFor('w4a4', 'lsq').weight, activation: i === layers.length - 1 ? last : qconfigFor('w4a4', 'lsq').activation },
      })),
    };
    prepareQat(model, plan);
    const adds = model.modules().filter((m): m is QuantAdd => m instanceof QuantAdd);
    assert.equal(adds.length, 3);
    for (const a of adds) assert.deepEqual(a.inputQuantizerB!.spec, { ...last, signed: true });
    // A plan that quantizes weights only keeps the adds float.
    const weightsOnly = resnet8({ channels: [4, 8, 8] });
    prepareQat(weightsOnly, { default: { weight: null, activation: null }, overrides: layers.map((match) => ({ match, config: { weight: qconfigFor('w4a4', 'lsq').weight, activation: null } })) });
    assert.equal(weightsOnly.modules().find((m): m is QuantAdd => m instanceof QuantAdd)!.inputQuantizerA, null);
  });

  it('PTQ: calibrate observes the add inputs too, and the calibrated ResNet converts with every layer input equal to the float64 simulation', () => {
    manualSeed(3);
    const model = resnet8({ channels: [4, 8, 8] });
    const x = randn([16, 1, 28, 28]);
    model.train();
    for (let i = 0; i < 3; i++) noGrad(() => model.forward(x)); // BatchNorm running statistics
    calibrate(model, [{ x }], { scheme: 'w8a8' });
    const add = model.modules().find((m): m is QuantAdd => m instanceof QuantAdd)!;
    const e = add.inputQuantizerA!.exportQuant();
    assert.ok(e.type === 'affine' && e.qparams.qmin < 0 && e.qparams.scale[0]! > 0, JSON.stringify(e));
    const im = convert(model, { sample: x });
    const r = im.verification!;
    assert.equal(r.argmaxAgreement, 1);
    assert.ok(r.maxLogitLsb <= 1, `${r.maxLogitLsb}`);
    for (const [name, d] of Object.entries(r.layerMaxDiff)) assert.ok(d <= 1, `${name}: ${d}`);
  });
});
