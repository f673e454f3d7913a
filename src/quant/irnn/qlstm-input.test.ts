/** QuantLSTM's range observers and input checks. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randn, Rng, Tensor } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/index.ts';
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

  it('the state dict records segments and objective (pwl_config); loading into a model with other PWL tables fails naming both', () => {
    const rng = new Rng(4);
    const sixteen = new QuantLSTM(2, 3, { rng });
    const x = randn([3, 2, 2], { rng });
    sixteen.forward(x);
    const state = sixteen.stateDict();
    assert.deepEqual(Array.from(state.get('pwl_config')!.data), [16, 0]);
    for (const options of [{ segments: 8 }, { objective: 'mse' as const }]) {
      const other = new QuantLSTM(2, 3, options);
      const before = other.stateDict();
      assert.throws(() => other.loadStateDict(state), /pwl_config: the state dict was saved by a QuantLSTM with 16 PWL segments and objective 'maxError', this one has (8 and 'maxError'|16 and 'mse'); construct it with \{ segments: 16, objective: 'maxError' \}/);
      assert.deepEqual(other.stateDict(), before, 'nothing was loaded');
    }
    // The matching configuration loads, and then computes what the saved model computes.
    const same = new QuantLSTM(2, 3, { segments: 16 });
    same.loadStateDict(state);
    sixteen.eval();
    same.eval();
    assert.deepEqual(noGrad(() => same.forward(x)[0]).data, noGrad(() => sixteen.forward(x)[0]).data);
    // A state dict without the buffer (a float nn.LSTM's, as fromLSTM loads) is not refused for it.
    assert.doesNotThrow(() => same.loadStateDict(new Map([...state].filter(([k]) => k !== 'pwl_config')), { strict: false }));
    assert.throws(() => new QuantLSTM(2, 3, { segments: 0 }), /segments must be an integer in \[1, 256\]/);
  });
});

describe('IntLSTM.quantizeInput', () => {
  it('rounds half to even at the input scale, saturates beyond ±127 (±Infinity included) and refuses NaN naming its index', () => {
    const q = new QuantLSTM(2, 3);
    q.forward(input([0.5, -0.25, 0.1, 0.2]));
    q.eval();
    const runtime = convertQuantLSTM(q);
    const s = runtime.params.inputScale;
    assert.deepEqual(Array.from(runtime.quantizeInput([2.5 * s, 3.5 * s, -2.5 * s, 126.4 * s, 500 * s, -500 * s, Infinity, -Infinity])), [2, 4, -2, 126, 127, -127, 127, -127]);
    assert.throws(() => runtime.quantizeInput([0, 1, NaN]), /^RangeError: IntLSTM.quantizeInput: x\[2\] is NaN/);
  });
});
