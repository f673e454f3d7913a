/** QuantLSTM's range observers and input checks. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../tensor/index.ts';
import { QuantLSTM } from './qlstm.ts';
import { convertQuantLSTM } from './intlstm.ts';

function input(values: number[]): Tensor {
  return new Tensor(Float32Array.from(values), [values.length / 2, 1, 2]);
}

describe('QuantLSTM observers', () => {
  it('refuses a non-finite input in training mode and keeps the observed range', () => {
    const q = new QuantLSTM(2, 3);
    q.forward(input([0.5, -0.25, 0.1, 0.2]));
    assert.equal(q.inputAbsMax.data[0], 0.5);
    for (const bad of [Infinity, -Infinity, NaN]) {
      assert.throws(() => q.forward(input([0.1, bad, 0.2, 0.3])), /^RangeError: QuantLSTM: the input holds NaN or ±Infinity/, String(bad));
    }
    assert.equal(q.inputAbsMax.data[0], 0.5, 'the range is not poisoned');
    q.forward(input([1, 0, 0, 0]));
    assert.ok(Math.abs(q.inputAbsMax.data[0]! - 0.55) < 1e-6, `running range ${q.inputAbsMax.data[0]}`);
  });

  it('names an empty sequence (as nn.LSTM does) instead of failing inside concat', () => {
    for (const batchFirst of [false, true]) {
      const q = new QuantLSTM(2, 3, { batchFirst });
      assert.throws(() => q.forward(new Tensor(new Float32Array(0), batchFirst ? [1, 0, 2] : [0, 1, 2])), /^Error: QuantLSTM: the input sequence is empty/);
    }
  });

  it('convertQuantLSTM names which range is 0, and that observing only zeros leaves it so', () => {
    assert.throws(() => convertQuantLSTM(new QuantLSTM(2, 3)), /^Error: convertQuantLSTM: the input and hidden ranges are 0: never observed, or only zeros were seen/);
    const zeros = new QuantLSTM(2, 3);
    for (const p of zeros.parameters()) p.data.fill(0);
    zeros.forward(input([0.5, -0.5, 0.25, 0]));  // x observed; h = o·tanh(0) = 0 every step
    assert.throws(() => convertQuantLSTM(zeros), /^Error: convertQuantLSTM: the hidden range is 0: never observed, or only zeros were seen/);
  });
});
