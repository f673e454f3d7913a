/**
 * convert refuses a model whose forward is not the chain of its leaf modules (API audit s8 item
 * 1: ops in a custom forward were silently dropped and the sample check still passed), and the
 * models it supports still convert and agree with their fake-quant forward.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential, cnn, lenet5, mlp } from '../nn/index.ts';
import { manualSeed, randn, Tensor } from '../tensor/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor, type QConfig } from '../quant/config/qconfig.ts';
import { QuantLinear } from '../quant/qat/layers.ts';
import { captureGraph, compareWithFakeQuant, ConvertError, captureLeaves, convert, type AgreementReport, type ConvertErrorReason } from './index.ts';

const w8a8 = (): QConfig => qconfigFor('w8a8', 'ste');

/** Prepared with `qconfig`, quantizers observed on a few train-mode forwards of `x`, then eval. */
function prepared<M extends Module & { forward(x: Tensor): Tensor }>(model: M, qconfig: QConfig, x: Tensor): M {
  prepareQat(model, { default: qconfig });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
  model.eval();
  return model;
}

/** fc1 (8→16) – act – fc2 (16→3), registered in that order; `chain` is the plain forward. */
abstract class Small extends Module {
  readonly fc1 = this.registerModule('fc1', new Linear(8, 16));
  readonly act = this.registerModule('act', new ReLU());
  readonly fc2 = this.registerModule('fc2', new Linear(16, 3));
  protected chain(x: Tensor): Tensor {
    return this.fc2.forward(this.act.forward(this.fc1.forward(x)));
  }
  abstract override forward(x: Tensor): Tensor;
}

/** The audit's first model: tensor ops after the last module. */
class PostOps extends Small {
  forward(x: Tensor): Tensor {
    return this.chain(x).mul(2).add(1);
  }
}

/** The audit's residual block fc2(relu(fc1(x)) + x) (fc1 is 8→8 so the add type-checks). */
class ResidualBlock extends Module {
  readonly fc1 = this.registerModule('fc1', new Linear(8, 8));
  readonly act = this.registerModule('act', new ReLU());
  readonly fc2 = this.registerModule('fc2', new Linear(8, 3));
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.act.forward(this.fc1.forward(x)).add(x));
  }
}

function refusal(reason: ConvertErrorReason, message: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof ConvertError, `a ConvertError, got ${String(e)}`);
    assert.equal(e.reason, reason, e.message);
    assert.match(e.message, message);
    return true;
  };
}

function data(rows: number, features = 8, seed = 3): Tensor {
  manualSeed(seed);
  return randn([rows, features]);
}

describe('convert: graph capture refuses what the IntModel cannot represent', () => {
  it('the audit models: ops after the last module, a residual add (with and without a sample)', () => {
    const x = data(32);
    manualSeed(1);
    const post = prepared(new PostOps(), w8a8(), x);
    const after = /model\.forward applies operations outside its modules after 'fc2' \(its result is not the output of 'fc2'\): convert captures graphs of module calls only/;
    assert.throws(() => convert(post, { inputShape: [8] }), refusal('capture', after));
    assert.throws(() => convert(post, { inputShape: [8], sample: x }), refusal('capture', after));
    manualSeed(1);
    const res = prepared(new ResidualBlock(), w8a8(), x);
    const between = /outside its modules between 'act' and 'fc2' \(the input of 'fc2' is not the output of 'act' or of any other module, .*a residual add written as a tensor op instead of an nn\.Add module/;
    assert.throws(() => convert(res, { inputShape: [8] }), refusal('capture', between));
    assert.throws(() => convert(res, { sample: x }), refusal('capture', between));
    // The probe left no own `forward` behind (so conv–relu–pool fusion works again) and the
    // model still runs as before.
    for (const m of [...post.modules(), ...res.modules()]) assert.ok(!Object.hasOwn(m, 'forward'), m.constructor.name);
  });

  it('a module called twice, never called, out of order, an output used twice, a functional op, an in-place edit', () => {
    const x = data(16);
    const cases: [string, new () => Module & { forward(x: Tensor): Tensor }, RegExp][] = [
      ['called twice', class extends Module {
        readonly fc = this.registerModule('fc', new Linear(8, 8));
        readonly act = this.registerModule('act', new ReLU());
        readonly out = this.registerModule('out', new Linear(8, 3));
        forward(t: Tensor): Tensor { return this.out.forward(this.act.forward(this.fc.forward(this.act.forward(this.fc.forward(t))))); }
      }, /model\.forward calls 'fc' \(QuantLinear\) 2 times: convert captures graphs of module calls only, each module applied once/],
      ['never called', class extends Small {
        readonly spare = this.registerModule('spare', new Linear(3, 3));
        forward(t: Tensor): Tensor { return this.chain(t); }
      }, /model\.forward never calls 'spare' \(QuantLinear\)/],
      ['out of order', class extends Module {
        readonly fc2 = this.registerModule('fc2', new Linear(16, 3));
        readonly act = this.registerModule('act', new ReLU());
        readonly fc1 = this.registerModule('fc1', new Linear(8, 16));
        forward(t: Tensor): Tensor { return this.fc2.forward(this.act.forward(this.fc1.forward(t))); }
      }, /calls 'act' after 'fc1', but 'act' is registered first: .*in registration order/],
      ['output used twice', class extends Module {
        readonly fc1 = this.registerModule('fc1', new Linear(8, 16));
        readonly act = this.registerModule('act', new ReLU());
        readonly fc2 = this.registerModule('fc2', new Linear(16, 3));
        forward(t: Tensor): Tensor {
          const h = this.fc1.forward(t);
          this.act.forward(h);
          return this.fc2.forward(h);
        }
      }, /the output of 'act' \(ReLU\) is never used by a later module nor returned/],
      ['functional relu', class extends Module {
        readonly fc1 = this.registerModule('fc1', new Linear(8, 16));
        readonly fc2 = this.registerModule('fc2', new Linear(16, 3));
        forward(t: Tensor): Tensor { return this.fc2.forward(this.fc1.forward(t).relu()); }
      }, /outside its modules between 'fc1' and 'fc2'/],
      ['in place', class extends Small {
        forward(t: Tensor): Tensor {
          const h = this.act.forward(this.fc1.forward(t));
          h.data[0] = h.data[0]! + 1;
          return this.fc2.forward(h);
        }
      }, /modifies the output of 'act' in place before 'fc2'/],
    ];
    for (const [what, Model, message] of cases) {
      manualSeed(2);
      const model = prepared(new Model(), w8a8(), x);
      assert.throws(() => convert(model, { inputShape: [8] }), refusal('capture', message), what);
    }
  });

  it('a subclass of a supported module whose forward computes something else; an equivalent override passes', () => {
    class DoublingReLU extends ReLU {
      override forward(t: Tensor): Tensor { return super.forward(t).mul(2); }
    }
    class SameReLU extends ReLU {
      override forward(t: Tensor): Tensor { return t.relu(); }
    }
    const x = data(16);
    manualSeed(4);
    const bad = prepared(new Sequential(new Linear(8, 16), new DoublingReLU(), new Linear(16, 3)), w8a8(), x);
    assert.throws(() => convert(bad, { inputShape: [8] }), refusal('capture', /'1' \(DoublingReLU\) overrides ReLU\.forward and computes something else/));
    manualSeed(4);
    const good = prepared(new Sequential(new Linear(8, 16), new SameReLU(), new Linear(16, 3)), w8a8(), x);
    const im = convert(good, { sample: x });
    assert.equal((im.verification as AgreementReport).argmaxAgreement, 1);
  });

  it('the probe leaves no trace: an unobserved input quantizer still stops convert, its buffers unchanged', () => {
    manualSeed(5);
    const model = new Sequential(new Linear(8, 16), new ReLU(), new Linear(16, 3));
    prepareQat(model, { default: w8a8() });
    model.eval();
    const before = model.stateDict();
    assert.throws(() => convert(model, { inputShape: [8] }), /has not observed any data/);
    // (the weight quantizers do observe: build exports the weights before it meets the input quantizer)
    const inputs = [...model.stateDict()].filter(([name]) => name.includes('inputQuantizer'));
    assert.ok(inputs.length >= 4);
    for (const [name, t] of inputs) assert.deepEqual(t.data, before.get(name)!.data, name);
  });

  it('the probe leaves no trace in parameters either: an LSQ quantizer that initializes its step from the first batch', () => {
    manualSeed(6);
    const model = new Sequential(new Linear(8, 16), new ReLU(), new Linear(16, 3));
    prepareQat(model, { default: qconfigFor('w4a4', 'lsq') });
    model.eval();
    const before = model.stateDict();
    assert.throws(() => convert(model, { inputShape: [8] }), /has not observed any data/);
    // The input quantizers only ever see the probe (building the weights initializes the weight
    // quantizers' steps, as a first forward would).
    const inputs = [...model.stateDict()].filter(([name]) => name.includes('inputQuantizer'));
    assert.ok(inputs.some(([name]) => name.endsWith('.step')), inputs.map(([n]) => n).join(', '));
    for (const [name, t] of inputs) assert.deepEqual(t.data, before.get(name)!.data, name);
  });
});

describe('convert: the sample check against the float32 forward', () => {
  /** A forward that leaves the chain only for batches larger than the 4-row probe. */
  class BatchDependent extends Small {
    offset: Tensor | null = null;
    forward(x: Tensor): Tensor {
      const y = this.chain(x);
      return x.shape[0]! > 4 && this.offset ? y.add(this.offset) : y;
    }
  }

  it('tolerance 1 + Σ|w| LSB per class from the last layer\'s integer weights; a chain forward stays within it', () => {
    const x = data(64);
    manualSeed(6);
    const model = prepared(new BatchDependent(), w8a8(), x);
    const r = convert(model, { sample: x }).verification as AgreementReport;
    const fc2 = model.getSubmodule('fc2');
    assert.ok(fc2 instanceof QuantLinear);
    const ex = fc2.exportLayer();
    assert.ok(ex.weightQuant?.type === 'affine');
    const scale = ex.weightQuant.qparams.scale;
    const w = ex.weightFakeQuant;
    const expected = [0, 1, 2].map((c) => {
      let sum = 0;
      for (let k = 0; k < 16; k++) sum += Math.abs(Math.round(w.data[c * 16 + k]! / scale[scale.length === 1 ? 0 : c]!));
      return 1 + sum;
    });
    assert.deepEqual(r.float32ToleranceLsb, expected);
    assert.ok(expected.every((t) => t > 100), JSON.stringify(expected));
    assert.equal(r.float32BeyondTolerance, 0);
    assert.ok(r.float32MaxToleranceRatio <= 1);
  });

  it('logits far from the float32 forward (an op the probe did not see) throw float32-logits', () => {
    const x = data(64);
    manualSeed(6);
    const model = prepared(new BatchDependent(), w8a8(), x);
    model.offset = new Tensor(Float32Array.from([2, -1, 0.5]), [3]);
    assert.throws(() => convert(model, { sample: x }), refusal('float32-logits', /differ from the fake-quant model's float32 forward by up to \d+\.\d\d LSB, \d+\.\d× what quantization explains .* the float64 simulation of the captured chain is 0\.\d\d LSB away/));
  });

  it('an argmax failure reports the logit distance to the float32 forward it was measured against', () => {
    const x = data(64);
    manualSeed(6);
    const model = prepared(new BatchDependent(), w8a8(), x);
    const im = convert(model, { sample: x });
    const r = im.verification as AgreementReport;
    // Shift class 0 by 0.9 of its tolerance: argmax changes for rows whose top two logits are
    // closer than that, while every logit stays within the tolerance.
    const lsb = im.tensor(`fc2.outScale`).data[0]!;
    model.offset = new Tensor(Float32Array.from([0.9 * r.float32ToleranceLsb[0]! * lsb, 0, 0]), [3]);
    const shifted = compareWithFakeQuant(model, im, x);
    assert.equal(shifted.float32BeyondTolerance, 0);
    assert.ok(shifted.argmaxAgreement < 0.99, `${shifted.argmaxAgreement}`);
    assert.ok(shifted.float32MaxLogitLsb > 0.8 * r.float32ToleranceLsb[0]!);
    const expected = `max logit difference to that forward ${shifted.float32MaxLogitLsb.toFixed(2)} LSB`;
    assert.throws(() => convert(model, { sample: x }), (e: unknown) => {
      assert.ok(e instanceof ConvertError && e.reason === 'agreement', String(e));
      assert.ok(e.message.includes(`agrees with the fake-quant model's float32 forward on only ${(shifted.argmaxAgreement * 100).toFixed(2)} %`), e.message);
      assert.ok(e.message.includes(expected), e.message);
      return true;
    });
  });
});

describe('convert: supported models still convert and agree', () => {
  const images = (): Tensor => { manualSeed(11); return randn([8, 1, 28, 28]); };

  /** A custom Module (not a Sequential) with a Flatten module between its conv and linear parts. */
  class ConvFlatFc extends Module {
    readonly conv = this.registerModule('conv', new Conv2d(1, 4, 3));
    readonly relu = this.registerModule('relu', new ReLU());
    readonly pool = this.registerModule('pool', new MaxPool2d(2));
    readonly flatten = this.registerModule('flatten', new Flatten());
    readonly fc = this.registerModule('fc', new Linear(4 * 13 * 13, 10));
    forward(x: Tensor): Tensor {
      return this.fc.forward(this.flatten.forward(this.pool.forward(this.relu.forward(this.conv.forward(x)))));
    }
  }

  const lenetChain = ['conv1', 'relu1', 'pool1', 'conv2', 'relu2', 'pool2', 'flatten', 'fc1', 'relu3', 'fc2', 'relu4', 'fc3'];
  const cases: [string, () => Module & { forward(x: Tensor): Tensor }, QConfig, number][] = [
    ['LeNet-5 (fused conv-relu-pool forward)', () => lenet5(), w8a8(), 12],
    ['CNN (folded BatchNorm, dropout)', () => cnn({ channels: [4, 8], hidden: 16 }), qconfigFor('w4a4', 'lsq'), 20],
    ['MLP', () => mlp({ hidden: [32, 16] }), w8a8(), 6],
    ['BNN-MLP (w1a1, BatchNorm1d)', () => mlp({ hidden: [64, 32], batchNorm: true }), qconfigFor('w1a1', 'binary'), 8],
    ['Sequential', () => new Sequential(new Flatten(), new Linear(784, 16), new ReLU(), new Linear(16, 10)), w8a8(), 4],
    ['custom Module with a Flatten', () => new ConvFlatFc(), w8a8(), 5],
  ];
  for (const [name, make, qconfig, leafCount] of cases) {
    it(name, () => {
      manualSeed(0);
      const x = images();
      const model = prepared(make(), qconfig, x);
      // Every leaf called once, in registration order (fusion is off while leaves are recorded).
      const leaves = captureLeaves(model).map(([n]) => n);
      assert.equal(leaves.length, leafCount);
      const captured = captureGraph(model, captureLeaves(model), x);
      assert.deepEqual({ called: captured.called, skipped: captured.skipped }, { called: leaves, skipped: [] });
      // A chain: each call takes the previous one's output (the first, the model input).
      assert.deepEqual(captured.nodes.map((n) => n.inputs), leaves.map((_, i) => [i - 1]));
      if (name.startsWith('LeNet')) assert.deepEqual(leaves, lenetChain);
      const im = convert(model, { sample: x });
      const r = im.verification as AgreementReport;
      assert.equal(r.argmaxAgreement, 1, `${name}: ${JSON.stringify(r)}`);
      assert.ok(r.maxLogitLsb <= 1, `${name}: ${r.maxLogitLsb} LSB from the float64 simulation`);
      assert.equal(r.float32BeyondTolerance, 0, `${name}: ${r.float32MaxToleranceRatio}`);
    });
  }
});
