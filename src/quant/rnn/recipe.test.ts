import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { grad } from '../../autograd/engine.ts';
import { noGrad } from '../../autograd/index.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Embedding } from '../../nn/embedding.ts';
import { Transducer } from '../../nn/transducer/model.ts';
import { Rng, Tensor } from '../../tensor/index.ts';
import { QuantLinear } from '../qat/layers.ts';
import { disableFakeQuant, enableFakeQuant } from '../qat/prepare.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import { QatEmbedding } from './qat-embedding.ts';
import { QatLSTM } from './qat-lstm.ts';
import { modelSize, prepareRnnQat, resolveRnnQatPlan, type RnnQatPlan } from './recipe.ts';

const w4: QuantizerSpec = { kind: 'lsq', bits: 4, granularity: 'channel' };
const a4: QuantizerSpec = { kind: 'lsq', bits: 4, signed: true, symmetric: true };
const plan: RnnQatPlan = {
  default: { weight: w4, activation: a4 },
  overrides: [
    { match: 'joint.output', config: { weight: { ...w4, bits: 8 }, activation: { ...a4, bits: 8 } } },
    { match: { type: 'Embedding' }, config: { weight: { kind: 'ste', bits: 8, granularity: 'tensor' } } },
  ],
};

function tiny(seed: number): Transducer {
  return new Transducer({ inputSize: 4, numLabels: 3, encoderSize: 6, embeddingSize: 4, predictorSize: 5, jointSize: 7, rng: new Rng(seed) });
}

function batch(rng: Rng): { features: Tensor; labels: Tensor } {
  const features = new Tensor(Float32Array.from({ length: 2 * 5 * 4 }, () => rng.normal()), [2, 5, 4]);
  const labels = new Tensor(Int32Array.from([0, 2, 1, 1]), [2, 2]);
  return { features, labels };
}

describe('prepareRnnQat', () => {
  it('swaps a transducer\'s LSTMs, Linears and Embedding as the plan says; with fake quantization off the logits are the float model\'s', () => {
    const float = tiny(1);
    const model = tiny(1);
    const { features, labels } = batch(new Rng(2));
    const rows = prepareRnnQat(model, plan);
    assert.deepEqual(rows.map((r) => `${r.name}:${r.type}:${r.weight?.bits ?? '-'}:${r.activation?.bits ?? '-'}:${r.hidden?.bits ?? '-'}`), [
      'encoder:LSTM:4:4:4', 'predictor.embedding:Embedding:8:-:-', 'predictor.lstm:LSTM:4:4:4',
      'joint.encoderProjection:Linear:4:4:-', 'joint.predictorProjection:Linear:4:4:-', 'joint.output:Linear:8:8:-',
    ]);
    assert.ok(model.encoder instanceof QatLSTM);
    assert.ok(model.getSubmodule('predictor.lstm') instanceof QatLSTM);
    assert.ok(model.getSubmodule('predictor.embedding') instanceof QatEmbedding);
    assert.ok(model.joint.output instanceof QuantLinear);
    const quantized = model.forward(features, labels); // initialises every quantizer
    disableFakeQuant(model);
    const a = noGrad(() => float.forward(features, labels));
    const b = noGrad(() => model.forward(features, labels));
    for (let i = 0; i < a.size; i++) assert.ok(Math.abs(a.data[i]! - b.data[i]!) < 1e-5, `logit ${i}`);
    enableFakeQuant(model);
    let differs = 0;
    for (let i = 0; i < a.size; i++) differs = Math.max(differs, Math.abs(a.data[i]! - quantized.data[i]!));
    assert.ok(differs > 1e-3, 'fake quantization changes the logits');
    // Training and both decoders run on the prepared model.
    const loss = model.loss(features, [5, 4], labels, [2, 2]);
    loss.backward();
    assert.ok(model.parameters().every((p) => p.grad !== null || !p.requiresGrad), 'every parameter (steps too) gets a gradient');
    model.eval();
    assert.equal(model.greedyDecode(features, [5, 4]).length, 2);
    assert.equal(model.beamSearch(features, [5, 4], { beamSize: 2 }).length, 2);
  });

  it('modelSize: packed bits + 4 bytes per scale, biases and float layers at 32 bits (closed form on the tiny transducer)', () => {
    const model = tiny(3);
    const float32 = model.numParameters() * 4;
    prepareRnnQat(model, plan);
    const { features, labels } = batch(new Rng(4));
    model.forward(features, labels);
    const size = modelSize(model);
    const packed = (n: number, bits: number): number => Math.ceil((n * bits) / 8);
    // encoder: W_ih [24, 4], W_hh [24, 6] at 4 bits + 24 row scales each, x and h scales, biases 2·24 float.
    const encoder = packed(96, 4) + 96 + packed(144, 4) + 96 + 4 + 4 + 2 * 24 * 4;
    const embedding = packed(16, 8) + 4;
    const predictor = packed(20 * 4, 4) + 80 + packed(20 * 5, 4) + 80 + 4 + 4 + 2 * 20 * 4;
    const joint = packed(42, 4) + 28 + 4 + 7 * 4 + packed(35, 4) + 28 + 4 + packed(28, 8) + 16 + 4 + 4 * 4;
    assert.equal(size.float32Bytes, float32);
    assert.equal(size.bytes, encoder + embedding + predictor + joint);
    assert.equal(size.compression, float32 / size.bytes);
  });

  it('refuses overrides that match nothing, bad match types and bad LSTM specs (naming the layer)', () => {
    assert.throws(() => resolveRnnQatPlan(tiny(5), { default: { weight: w4, activation: a4 }, overrides: [{ match: 'decoder.*', config: null }] }), /overrides "decoder.\*" match no layer/);
    assert.throws(() => resolveRnnQatPlan(tiny(5), { default: { weight: w4, activation: a4 }, overrides: [{ match: { type: 'SRU' as 'LSTM' }, config: null }] }), /must be a name glob or \{ type/);
    assert.throws(() => resolveRnnQatPlan(tiny(5), { default: { weight: { ...w4, granularity: 'group', groupSize: 2 }, activation: a4 } }), /'encoder': weight granularity must be/);
    const model = tiny(5);
    assert.throws(() => prepareRnnQat(model, { default: { weight: w4, activation: { kind: 'lsq', bits: 1, signed: true } } }), /cannot build the quantizer/);
    assert.ok(!(model.encoder instanceof QatLSTM) && !(model.joint.output instanceof QuantLinear), 'a failed prepare leaves the model untouched');
  });
});

describe('QatEmbedding', () => {
  it('looks up rows of the per-row fake-quantized table; gradients: clipped STE scattered to the used rows', () => {
    const emb = new Embedding(5, 3, { rng: new Rng(8) });
    const q = new QatEmbedding(emb, { kind: 'lsq', bits: 3, granularity: 'channel' });
    assert.equal(q.weight, emb.weight);
    const ids = new Tensor(Int32Array.from([4, 1, 4]), [3]);
    q.forward(ids); // initialises the steps
    const step = (q.weightQuantizer as unknown as { step: Tensor }).step;
    step.data[4] = step.data[4]! * 0.15; // row 4 clips
    const out = q.forward(ids);
    const gy = new Tensor(Float32Array.from({ length: 9 }, (_, i) => i + 1), [3, 3]);
    const [gw] = grad(out, [emb.weight], { gradOutputs: [gy] });
    const expected = new Float64Array(15);
    let clipped = 0;
    [4, 1, 4].forEach((row, i) => {
      for (let k = 0; k < 3; k++) {
        const w = emb.weight.data[row * 3 + k]!;
        const s = step.data[row]!;
        const r = roundHalfEven(w / s);
        const qv = Math.min(3, Math.max(-3, r));
        assert.ok(Math.abs(out.data[i * 3 + k]! - qv * s) < 1e-6, `value [${i}, ${k}]`);
        if (qv === r) expected[row * 3 + k] += gy.data[i * 3 + k]!;
        else clipped++;
      }
    });
    assert.deepEqual(Array.from(gw!.data), Array.from(expected));
    assert.ok(clipped > 0, 'some looked-up entries clip');
    assert.throws(() => q.forward(new Tensor(Int32Array.from([5]), [1])), /index 5 at position 0 is outside \[0, 4\]/);
    assert.throws(() => new QatEmbedding(new Embedding(3, 2, { paddingIdx: 0 }), null), /paddingIdx/);
  });
});
