import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { noGrad } from '../../autograd/index.ts';
import { Transducer } from '../../nn/transducer/model.ts';
import { beamSearch } from '../../nn/transducer/beam.ts';
import { logSoftmax, Rng, Tensor } from '../../tensor/index.ts';
import { fusionScorer, LstmLanguageModel } from './fusion.ts';

const V = 3;

function setup(): { model: Transducer; target: LstmLanguageModel; source: LstmLanguageModel; frames: Tensor } {
  const model = new Transducer({ inputSize: 4, numLabels: V, encoderSize: 5, embeddingSize: 3, predictorSize: 4, jointSize: 6, rng: new Rng(1) });
  model.eval();
  const target = new LstmLanguageModel(V, { embeddingSize: 3, hiddenSize: 5, rng: new Rng(2) });
  const source = new LstmLanguageModel(V, { embeddingSize: 3, hiddenSize: 5, rng: new Rng(3) });
  const rng = new Rng(4);
  const features = new Tensor(Float32Array.from({ length: 2 * 3 * 4 }, () => rng.normal()), [2, 3, 4]);
  const frames = noGrad(() => model.encodeForDecoding(features));
  return { model, target, source, frames };
}

describe('LstmLanguageModel', () => {
  it('loss = mean −log p of the labels below each length, read from forward; step = forward row by row', () => {
    const lm = new LstmLanguageModel(V, { rng: new Rng(5) });
    const labels = new Tensor(Int32Array.from([0, 2, 1, 2, 0, 0]), [2, 3]);
    const logp = lm.forward(labels);
    let nll = 0;
    for (const [b, len] of [[0, 3], [1, 1]] as const) for (let t = 0; t < len; t++) nll -= logp.data[(b * 4 + t) * V + labels.data[b * 3 + t]!]!;
    assert.ok(Math.abs(lm.loss(labels, [3, 1]).item() - nll / 4) < 1e-6);
    let state = lm.initialState(2);
    const prev = [Int32Array.from([V, V]), Int32Array.from([0, 2]), Int32Array.from([2, 0])];
    prev.forEach((p, t) => {
      const stepped = lm.step(p, state);
      state = stepped.state;
      for (let b = 0; b < 2; b++) for (let k = 0; k < V; k++) assert.ok(Math.abs(stepped.logProbs.data[b * V + k]! - logp.data[(b * 4 + t) * V + k]!) < 1e-5, `step ${t}`);
    });
    assert.throws(() => lm.loss(labels, [4, 1]), /lengths\[0\] = 4 is outside \[0, 3\]/);
  });
});

describe('fusionScorer', () => {
  it('joint = log-softmax of the transducer joint + λ_t·log p_T − λ_s·log p_S + β on labels, blank untouched', () => {
    const { model, target, source, frames } = setup();
    const plain = model.scorer();
    const fused = fusionScorer(plain, { target: { lm: target, weight: 0.7 }, source: { lm: source, weight: 0.4 }, labelBonus: 0.25 });
    noGrad(() => {
      const start = fused.predictor.step(Int32Array.of(V, 1), fused.predictor.initialState(2));
      const next = fused.predictor.step(Int32Array.of(2, 0), start.state);
      const frame = new Tensor(frames.data.slice(0, 2 * 6), [2, 6]);
      const got = fused.joint(frame, next.output);
      // The same pieces, separately.
      const p0 = plain.predictor.step(Int32Array.of(V, 1), plain.predictor.initialState(2));
      const p1 = plain.predictor.step(Int32Array.of(2, 0), p0.state);
      const lp = logSoftmax(plain.joint(frame, p1.output), -1);
      const t1 = target.step(Int32Array.of(2, 0), target.step(Int32Array.of(V, 1), target.initialState(2)).state).logProbs;
      const s1 = source.step(Int32Array.of(2, 0), source.step(Int32Array.of(V, 1), source.initialState(2)).state).logProbs;
      for (let b = 0; b < 2; b++) {
        for (let k = 0; k <= V; k++) {
          const want = lp.data[b * (V + 1) + k]! + (k < V ? 0.7 * t1.data[b * V + k]! - 0.4 * s1.data[b * V + k]! + 0.25 : 0);
          assert.ok(Math.abs(got.data[b * (V + 1) + k]! - want) < 1e-5, `[${b}, ${k}]`);
        }
      }
    });
  });

  it("beam search: weights 0 give the plain search's hypotheses; on one frame each hypothesis scores its fused label score", () => {
    const { model, target, source, frames } = setup();
    const lengths = Int32Array.of(3, 2);
    const plain = beamSearch(model.scorer(), frames, lengths, { beamSize: 3 });
    const zero = beamSearch(fusionScorer(model.scorer(), { target: { lm: target, weight: 0 }, source: { lm: source, weight: 0 } }), frames, lengths, { beamSize: 3, scores: 'logProbs' });
    assert.deepEqual(zero.map((n) => n.map((h) => h.labels)), plain.map((n) => n.map((h) => h.labels)));
    zero.flat().forEach((h, i) => assert.ok(Math.abs(h.score - plain.flat()[i]!.score) < 1e-5));
    // One frame, beam V + 1 keeps every candidate: blank → [], label k → [k], scored by the fused step.
    const one = beamSearch(fusionScorer(model.scorer(), { target: { lm: target, weight: 0.5 }, source: { lm: source, weight: 0.3 } }), frames, Int32Array.of(1, 1), { beamSize: V + 1, scores: 'logProbs' });
    noGrad(() => {
      const p = model.scorer().predictor.step(Int32Array.of(V), model.scorer().predictor.initialState(1));
      const lp = logSoftmax(model.scorer().joint(new Tensor(frames.data.slice(0, 6), [1, 6]), p.output), -1);
      const t = target.step(Int32Array.of(V), target.initialState(1)).logProbs;
      const s = source.step(Int32Array.of(V), source.initialState(1)).logProbs;
      for (const h of one[0]!) {
        const k = h.labels.length === 0 ? V : h.labels[0]!;
        const want = lp.data[k]! + (k < V ? 0.5 * t.data[k]! - 0.3 * s.data[k]! : 0);
        assert.ok(Math.abs(h.score - want) < 1e-5, `hypothesis [${h.labels.join(',')}]: ${h.score} vs ${want}`);
      }
      assert.equal(one[0]!.length, V + 1);
    });
  });

  it('refuses negative weights, LMs over other labels, and a bad scores option', () => {
    const { model, target, frames } = setup();
    assert.throws(() => fusionScorer(model.scorer(), { target: { lm: target, weight: -1 } }), /target.weight must be a finite number >= 0, got -1/);
    assert.throws(() => fusionScorer(model.scorer(), { source: { lm: new LstmLanguageModel(5), weight: 1 } }), /the source LM has 5 labels, the transducer 3/);
    assert.throws(() => fusionScorer(model.scorer(), { labelBonus: Number.NaN }), /labelBonus must be a finite number/);
    assert.throws(() => beamSearch(model.scorer(), frames, [1, 1], { scores: 'probs' as 'logits' }), /scores must be 'logits' or 'logProbs'/);
  });
});
