import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/index.ts';
import { reshape, Rng, slice, Tensor } from '../../tensor/index.ts';
import { Adam } from '../../optim/adam.ts';
import { LstmPredictor } from './predictor.ts';
import { TransducerJoint } from './joint.ts';
import { Transducer } from './model.ts';
import { transducerLoss } from './loss.ts';

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function randomFloats(shape: number[], rng: Rng): Tensor {
  const data = new Float32Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  return new Tensor(data, shape);
}

describe('LstmPredictor', () => {
  it('teacher-forced forward equals stepping label by label from the start symbol; select/join reorder rows', () => {
    const predictor = new LstmPredictor(5, { embeddingSize: 6, hiddenSize: 7, numLayers: 2, rng: new Rng(1) });
    const labels = new Tensor(Int32Array.from([0, 3, 1, 2, 2, 0]), [2, 3]);
    const full = noGrad(() => predictor.forward(labels));
    assert.deepEqual(full.shape, [2, 4, 7]);
    let state = predictor.initialState(2);
    let fed = new Int32Array([4, 4]); // blank = start symbol
    for (let u = 0; u <= 3; u++) {
      const stepped = noGrad(() => predictor.step(fed, state));
      const expected = reshape(slice(full, [0, u, 0], [2, u + 1, 7]), [2, 7]);
      assert.ok(maxDiff(stepped.output.data, expected.data) < 1e-6, `step ${u}`);
      state = stepped.state;
      if (u < 3) fed = Int32Array.from([labels.data[u]!, labels.data[3 + u]!]);
    }
    const joined = predictor.joinStates([state, predictor.initialState(1)]);
    assert.deepEqual(joined.h.shape, [2, 3, 7]);
    const picked = predictor.selectState(joined, [1, 2, 1]);
    assert.deepEqual(picked.c.shape, [2, 3, 7]);
    for (let layer = 0; layer < 2; layer++) {
      for (let j = 0; j < 7; j++) {
        assert.equal(picked.h.data[(layer * 3 + 0) * 7 + j], state.h.data[(layer * 2 + 1) * 7 + j]);
        assert.equal(picked.h.data[(layer * 3 + 1) * 7 + j], 0);
        assert.equal(picked.c.data[(layer * 3 + 2) * 7 + j], state.c.data[(layer * 2 + 1) * 7 + j]);
      }
    }
    assert.throws(() => predictor.step(Int32Array.of(5, 0), predictor.initialState(2)), /prevLabels\[0\] = 5 is outside \[0, 4\]/);
    assert.throws(() => predictor.step(Int32Array.of(1), predictor.initialState(2)), /1 labels for a state of 2 hypotheses/);
  });
});

describe('TransducerJoint', () => {
  it('forward broadcasts to [N, T, U+1, V+1] and equals W_out·tanh(W_enc·e + b + W_pred·p) + b_out per cell', () => {
    const rng = new Rng(2);
    const joint = new TransducerJoint(3, 4, 5, 6, { rng });
    const enc = randomFloats([2, 3, 3], rng);
    const pred = randomFloats([2, 2, 4], rng);
    const logits = noGrad(() => joint.forward(enc, pred));
    assert.deepEqual(logits.shape, [2, 3, 2, 6]);
    const W = (l: { weight: Tensor }, o: number, i: number): number => l.weight.data[o * l.weight.shape[1]! + i]!;
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < 3; t++) {
        for (let u = 0; u < 2; u++) {
          const hidden = Array.from({ length: 5 }, (_, j) => {
            let s = joint.encoderProjection.bias!.data[j]!;
            for (let i = 0; i < 3; i++) s += W(joint.encoderProjection, j, i) * enc.data[(b * 3 + t) * 3 + i]!;
            for (let i = 0; i < 4; i++) s += W(joint.predictorProjection, j, i) * pred.data[(b * 2 + u) * 4 + i]!;
            return Math.tanh(s);
          });
          for (let k = 0; k < 6; k++) {
            let s = joint.output.bias!.data[k]!;
            for (let j = 0; j < 5; j++) s += W(joint.output, k, j) * hidden[j]!;
            assert.ok(Math.abs(logits.data[((b * 3 + t) * 2 + u) * 6 + k]! - s) < 1e-5);
          }
        }
      }
    }
  });
});

/** A toy task: label k shows as one frame one-hot(k) (3 features), each followed by a silent frame. */
function toyBatch(sequences: number[][]): { features: Tensor; featureLengths: number[]; labels: Tensor; labelLengths: number[] } {
  const maxU = Math.max(...sequences.map((s) => s.length));
  const maxT = 2 * maxU + 1;
  const features = new Float32Array(sequences.length * maxT * 3);
  const labels = new Int32Array(sequences.length * maxU);
  sequences.forEach((seq, b) => {
    seq.forEach((k, u) => {
      features[(b * maxT + 2 * u) * 3 + k] = 1;
      labels[b * maxU + u] = k;
    });
  });
  return {
    features: new Tensor(features, [sequences.length, maxT, 3]),
    featureLengths: sequences.map((s) => 2 * s.length + 1),
    labels: new Tensor(labels, [sequences.length, maxU]),
    labelLengths: sequences.map((s) => s.length),
  };
}

describe('Transducer', () => {
  it('logits are [N, T, U+1, V+1]; padding frames after a length do not change a unidirectional model\'s loss', () => {
    const model = new Transducer({ inputSize: 3, numLabels: 3, encoderSize: 8, embeddingSize: 4, predictorSize: 5, jointSize: 6, rng: new Rng(3) });
    assert.equal(model.blank, 3);
    const batch = toyBatch([[0, 1, 2], [2]]);
    const logits = noGrad(() => model.forward(batch.features, batch.labels));
    assert.deepEqual(logits.shape, [2, 7, 4, 4]);
    const loss = noGrad(() => model.loss(batch.features, batch.featureLengths, batch.labels, batch.labelLengths, { reduction: 'none' }));
    const noisy = batch.features.clone();
    for (let t = batch.featureLengths[1]!; t < 7; t++) for (let f = 0; f < 3; f++) noisy.data[(7 + t) * 3 + f] = 5 * Math.sin(t + f);
    const again = noGrad(() => model.loss(noisy, batch.featureLengths, batch.labels, batch.labelLengths, { reduction: 'none' }));
    assert.ok(maxDiff(loss.data, again.data) < 1e-6);
    assert.ok(maxDiff(loss.data, noGrad(() => transducerLoss(logits, batch.labels, batch.featureLengths, batch.labelLengths, { reduction: 'none' })).data) < 1e-6);
    assert.throws(() => model.encode(new Tensor(new Float32Array(8), [1, 2, 4])), /features must be \[N, T, 3\], got \[1, 2, 4\]/);
  });

  it('learns a toy transduction: the loss falls and greedy decoding recovers every sequence', () => {
    const rng = new Rng(4);
    const sequences = Array.from({ length: 12 }, (_, i) => Array.from({ length: 1 + (i % 3) }, () => rng.int(3)));
    const batch = toyBatch(sequences);
    const model = new Transducer({ inputSize: 3, numLabels: 3, encoderSize: 16, embeddingSize: 8, predictorSize: 16, jointSize: 16, rng: new Rng(5) });
    const optimizer = new Adam(model.parameters(), { lr: 0.02 });
    let first = 0;
    let last = 0;
    for (let step = 0; step < 150; step++) {
      optimizer.zeroGrad();
      const loss = model.loss(batch.features, batch.featureLengths, batch.labels, batch.labelLengths);
      loss.backward();
      optimizer.step();
      if (step === 0) first = loss.item();
      last = loss.item();
    }
    assert.ok(last < 0.1 * first, `loss ${first} -> ${last}`);
    model.eval();
    assert.deepEqual(model.greedyDecode(batch.features, batch.featureLengths), sequences);
  });
});
