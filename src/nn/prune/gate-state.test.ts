/** GatedUnits' θ are probabilities: a state dict or a theta option outside [0, 1] is refused (audit s11 #7). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../tensor/index.ts';
import { Linear } from '../linear.ts';
import { GatedUnits } from './gate.ts';

describe('GatedUnits θ range', () => {
  it('loads θ in [0, 1] and refuses NaN or values outside, naming the key', () => {
    const source = new GatedUnits(new Linear(4, 3), { initialTheta: 0.3 });
    const target = new GatedUnits(new Linear(4, 3));
    target.loadStateDict(source.stateDict());
    assert.deepEqual(Array.from(target.theta.data), Array.from(source.theta.data));
    for (const bad of [7, -0.5, NaN]) {
      const state = source.stateDict();
      state.get('theta')!.data[1] = bad;
      assert.throws(() => target.loadStateDict(state), /theta.*\[0, 1\]/);
      assert.deepEqual(Array.from(target.theta.data), Array.from(source.theta.data), 'unchanged after a refused load');
    }
  });
  it('refuses a theta option outside [0, 1]', () => {
    assert.throws(() => new GatedUnits(new Linear(4, 2), { theta: new Tensor(Float32Array.from([0.5, 2]), [2]) }), /theta.*\[0, 1\]/);
  });
});
