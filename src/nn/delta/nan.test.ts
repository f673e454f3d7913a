/** A NaN input is not "unchanged": DeltaLSTM and the delta engine propagate it as nn.LSTM does (audit s11 #3). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/index.ts';
import { LSTM } from '../rnn.ts';
import { DeltaLSTM } from './delta-lstm.ts';
import { DeltaLstmEngine } from './engine.ts';

/** Steps [4, 1, 3] of uniform values with a NaN in feature 1 of step 1. */
function inputWithNaN(): Tensor {
  const rng = new Rng(3);
  const x = new Float64Array(12);
  for (let i = 0; i < x.length; i++) x[i] = rng.uniform() * 2 - 1;
  x[4] = NaN;
  return new Tensor(x, [4, 1, 3]);
}

/** Per step: does any hidden unit of the output hold NaN? */
function nanSteps(output: ArrayLike<number>, hidden: number): boolean[] {
  return Array.from({ length: output.length / hidden }, (_v, t) => Array.from({ length: hidden }, (_u, k) => output[t * hidden + k]!).some(Number.isNaN));
}

describe('DeltaLSTM NaN inputs', () => {
  for (const threshold of [0, 0.25]) {
    it(`the layer with Θ = ${threshold} gives NaN from the NaN step on, like nn.LSTM`, () => {
      const lstm = new LSTM(3, 2, { dtype: 'float64' });
      const delta = new DeltaLSTM(3, 2, { dtype: 'float64', thresholdX: threshold });
      delta.loadStateDict(lstm.stateDict());
      const x = inputWithNaN();
      const expected = nanSteps(noGrad(() => lstm.forward(x))[0].data, 2);
      assert.deepEqual(expected, [false, true, true, true]);
      assert.deepEqual(nanSteps(noGrad(() => delta.forward(x))[0].data, 2), expected);
    });
  }

  it('the engine gives NaN from the NaN step on', () => {
    const delta = new DeltaLSTM(3, 2, { dtype: 'float64', thresholdX: 0.25 });
    const engine = DeltaLstmEngine.fromModule(delta);
    const x = inputWithNaN();
    for (const mode of ['sparse', 'dense'] as const) {
      assert.deepEqual(nanSteps(engine.run(x.data, 4, mode).output, 2), [false, true, true, true], mode);
    }
  });
});
