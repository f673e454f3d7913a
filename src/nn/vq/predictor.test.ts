import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grad, noGrad } from '../../autograd/index.ts';
import { add, Rng, Tensor } from '../../tensor/index.ts';
import { Transducer } from '../transducer/model.ts';
import { START_CODE } from './vq-lstm.ts';
import { VqLstmPredictor } from './predictor.ts';

function warmed(seed: number): VqLstmPredictor {
  const rng = new Rng(seed);
  const predictor = new VqLstmPredictor(4, { embeddingSize: 3, hiddenSize: 5, codebookSize: 6, rng });
  const labels = new Int32Array(6 * 4);
  for (let i = 0; i < labels.length; i++) labels[i] = rng.int(3);
  noGrad(() => predictor.forward(new Tensor(labels, [6, 4])));
  predictor.eval();
  return predictor;
}

describe('VqLstmPredictor', () => {
  it('teacher forcing equals stepping from the start symbol, bit for bit; stateKey is the code', () => {
    const predictor = warmed(1);
    const labels = new Tensor(Int32Array.of(0, 2, 1, 1, 1, 0), [2, 3]);
    const forced = noGrad(() => predictor.forward(labels));
    assert.deepEqual(forced.shape, [2, 4, 5]);
    let state = predictor.initialState(2);
    assert.deepEqual([...state.codes], [START_CODE, START_CODE]);
    const codes: number[][] = [];
    for (let u = 0; u <= 3; u++) {
      const prev = u === 0 ? Int32Array.of(3, 3) : Int32Array.of(labels.data[u - 1]!, labels.data[3 + u - 1]!);
      const { output, state: next } = noGrad(() => predictor.step(prev, state));
      for (let n = 0; n < 2; n++) {
        for (let j = 0; j < 5; j++) assert.ok(Object.is(output.data[n * 5 + j], forced.data[(n * 4 + u) * 5 + j]), `u ${u} row ${n}`);
        assert.equal(predictor.stateKey(next, n), String(next.codes[n]));
      }
      codes.push([...next.codes]);
      state = next;
    }
    // The output is the ĥ half of the codebook row of the state's code.
    const rows = predictor.lstm.quantizer.lookup(state.codes);
    for (let j = 0; j < 5; j++) assert.equal(forced.data[(0 * 4 + 3) * 5 + j], rows.data[j]);
  });

  it('selectState and joinStates reorder and concatenate codes', () => {
    const predictor = warmed(2);
    const a = { codes: Int32Array.of(4, 1, 2) };
    const b = { codes: Int32Array.of(0) };
    assert.deepEqual([...predictor.selectState(a, [2, 2, 0]).codes], [2, 2, 4]);
    assert.deepEqual([...predictor.joinStates([a, b]).codes], [4, 1, 2, 0]);
    assert.throws(() => predictor.selectState(a, [3]), /index 3 is outside \[0, 3\)/);
    assert.throws(() => predictor.step(Int32Array.of(4), predictor.initialState(1)), /prevLabels\[0\] = 4 is outside \[0, 3\]/);
    assert.throws(() => new VqLstmPredictor(1), /numOutputs must be an integer >= 2, got 1/);
  });

  it("trains jointly inside a Transducer: the RNN-T loss plus vqLoss reaches the encoder, the LSTM and (update 'loss') the codebook", () => {
    const rng = new Rng(3);
    const predictor = new VqLstmPredictor(4, { embeddingSize: 3, hiddenSize: 4, codebookSize: 5, update: 'loss', rng });
    const model = new Transducer({ inputSize: 2, numLabels: 3, encoderSize: 4, jointSize: 6, predictor, rng });
    model.train();
    const features = new Tensor(Float32Array.from({ length: 2 * 5 * 2 }, () => rng.uniform() - 0.5), [2, 5, 2]);
    const labels = new Tensor(Int32Array.of(0, 1, 2, 2), [2, 2]);
    const loss = add(model.loss(features, [5, 4], labels, [2, 1]), predictor.vqLoss!);
    const [encoderGrad, lstmGrad, codebookGrad] = grad(loss, [model.encoder.parameters()[0]!, predictor.lstm.weightHh, predictor.lstm.quantizer.codebook]);
    for (const [name, g] of [['encoder', encoderGrad], ['lstm', lstmGrad], ['codebook', codebookGrad]] as const) {
      assert.ok(g!.data.some((v) => v !== 0) && g!.data.every(Number.isFinite), name);
    }
  });
});
