import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { Rng, Tensor } from '../../tensor/index.ts';
import { NextWordModel } from './next-word.ts';
import { nextWordQatPlan, prepareRnnQat, QatLSTM } from '../../quant/rnn/index.ts';
import { QuantLinear } from '../../quant/qat/index.ts';

const ids = new Tensor(Int32Array.of(1, 4, 2, 0, 3, 3, 9, 5, 1, 2, 7, 8), [3, 4]);

/** sigmoid/tanh LSTM step in float64, PyTorch gate order [i, f, g, o]. */
function lstmLastH(model: NextWordModel, row: number): Float64Array {
  const E = model.embedding.stateDict();
  const table = E.get('weight')!.data;
  const r = model.rnn.stateDict();
  const wih = r.get('weight_ih_l0')!.data;
  const whh = r.get('weight_hh_l0')!.data;
  const bih = r.get('bias_ih_l0')!.data;
  const bhh = r.get('bias_hh_l0')!.data;
  const H = model.hiddenSize;
  const D = table.length / model.vocabSize;
  let h = new Float64Array(H);
  const c = new Float64Array(H);
  const sig = (v: number): number => 1 / (1 + Math.exp(-v));
  for (let t = 0; t < 4; t++) {
    const word = ids.data[row * 4 + t]!;
    const gates = new Float64Array(4 * H);
    for (let g = 0; g < 4 * H; g++) {
      let s = bih[g]! + bhh[g]!;
      for (let k = 0; k < D; k++) s += wih[g * D + k]! * table[word * D + k]!;
      for (let k = 0; k < H; k++) s += whh[g * H + k]! * h[k]!;
      gates[g] = s;
    }
    const next = new Float64Array(H);
    for (let j = 0; j < H; j++) {
      c[j] = sig(gates[H + j]!) * c[j]! + sig(gates[j]!) * Math.tanh(gates[2 * H + j]!);
      next[j] = sig(gates[3 * H + j]!) * Math.tanh(c[j]!);
    }
    h = next;
  }
  return h;
}

describe('NextWordModel', () => {
  it('lstm: logits = head(h after the last word), against a float64 reference', () => {
    const model = new NextWordModel({ vocabSize: 10, embeddingDim: 3, hiddenSize: 5, rng: new Rng(1) });
    const logits = noGrad(() => model.forward(ids));
    assert.deepEqual(logits.shape, [3, 10]);
    const head = model.head.stateDict();
    const w = head.get('weight')!.data;
    const b = head.get('bias')!.data;
    for (let row = 0; row < 3; row++) {
      const h = lstmLastH(model, row);
      for (let v = 0; v < 10; v++) {
        let ref = b[v]!;
        for (let k = 0; k < 5; k++) ref += w[v * 5 + k]! * h[k]!;
        assert.ok(Math.abs(logits.data[row * 10 + v]! - ref) < 1e-5, `row ${row} word ${v}: ${logits.data[row * 10 + v]} vs ${ref}`);
      }
    }
  });

  it('gru: same shapes; bad options throw naming the option', () => {
    const model = new NextWordModel({ vocabSize: 10, embeddingDim: 3, hiddenSize: 4, cell: 'gru', rng: new Rng(2) });
    assert.equal(model.rnn.constructor.name, 'GRU');
    assert.deepEqual(noGrad(() => model.forward(ids)).shape, [3, 10]);
    assert.throws(() => new NextWordModel({ vocabSize: 1 }), /vocabSize must be at least 2/);
    assert.throws(() => new NextWordModel({ vocabSize: 10, hiddenSize: 0 }), /hiddenSize must be a positive integer/);
    assert.throws(() => new NextWordModel({ vocabSize: 10, cell: 'rnn' as 'gru' }), /cell must be one of lstm, gru/);
    assert.throws(() => model.forward(new Tensor(Int32Array.of(1, 2), [2])), /expected int32 ids \[N, C\]/);
  });
});

describe('nextWordQatPlan', () => {
  it('wXaY: X-bit per-row weights, Y-bit per-tensor activations on x_t, h_{t-1} and the head input; w4 weight-only; fp32 none', () => {
    const w4a8 = nextWordQatPlan('w4a8')!;
    assert.equal(w4a8.default.weight!.bits, 4);
    assert.equal(w4a8.default.weight!['granularity'], 'channel');
    assert.equal(w4a8.default.activation!.bits, 8);
    assert.equal(w4a8.default.hidden!.bits, 8);
    assert.equal(nextWordQatPlan('w4')!.default.activation, null);
    assert.equal(nextWordQatPlan('fp32'), null);
    assert.throws(() => nextWordQatPlan('w2a2' as 'w4'), /unknown scheme "w2a2"/);
    const model = new NextWordModel({ vocabSize: 10, embeddingDim: 3, hiddenSize: 4, rng: new Rng(3) });
    prepareRnnQat(model, w4a8);
    assert.ok(model.rnn instanceof QatLSTM);
    assert.ok(model.head instanceof QuantLinear);
    assert.deepEqual(model.forward(ids).shape, [3, 10]);
  });
});
