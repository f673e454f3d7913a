import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../tensor/index.ts';
import { quantizeMultiplier, requantizeFast, requantizeScalar } from './requantize.ts';

describe('requantizeFast', () => {
  it('requantizeFast equals requantizeScalar bit for bit (small and 2^53-crossing products, negative multipliers, every shift path)', () => {
    const rng = new Rng(21);
    for (let i = 0; i < 20000; i++) {
      const acc = Math.round((rng.uniform() * 2 - 1) * 2 ** (1 + (i % 38)));
      const m = quantizeMultiplier((rng.uniform() * 2 - 1) * 2 ** (-30 + (i % 45)));
      assert.equal(requantizeFast(acc, m.multiplier, m.shift), requantizeScalar(acc, m.multiplier, m.shift), `acc ${acc}, M0 ${m.multiplier}, n ${m.shift}`);
    }
    // Exact ties round half away from zero, as requantizeScalar.
    assert.equal(requantizeFast(3, 2 ** 30, 31), 2);
    assert.equal(requantizeFast(-3, 2 ** 30, 31), -2);
  });

});
