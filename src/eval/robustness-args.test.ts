/** Bad options of the attacks name themselves instead of failing somewhere inside. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createDataset } from '../data/index.ts';
import { Flatten, Linear, Sequential } from '../nn/index.ts';
import { Tensor } from '../tensor/index.ts';
import { fgsm } from './attack.ts';
import { evaluateRobustness } from './robustness.ts';

const model = new Sequential(new Flatten(), new Linear(4, 3));
const data = createDataset({
  name: 'tiny', images: Float32Array.from({ length: 5 * 4 }, (_, i) => (i % 7) / 7), labels: Int32Array.from([0, 1, 2, 0, 1]),
  sampleShape: [1, 2, 2], numClasses: 3, classNames: ['a', 'b', 'c'],
});

describe('attack option checks', () => {
  it('evaluateRobustness refuses a limit that is not a positive integer', () => {
    for (const limit of [2.5, NaN, 0, -3]) {
      assert.throws(() => evaluateRobustness(model, data, { eps: [0.1], limit, progress: false }), /^Error: evaluateRobustness: limit must be a positive integer/, String(limit));
    }
    assert.equal(evaluateRobustness(model, data, { eps: [0.1], limit: 3, progress: false }).samples, 3);
  });

  it('an unknown temperature is named as such (not as an NJS temperature of undefined)', () => {
    assert.throws(() => evaluateRobustness(model, data, { eps: [0.1], temperature: 'xyz' as 'njs', progress: false }), /^Error: evaluateRobustness: temperature must be a number, 'njs' or 'hns', got "xyz"/);
    const x = new Tensor(data.images.slice(0, 8), [2, 1, 2, 2]);
    assert.throws(() => fgsm(model, x, Int32Array.from([0, 1]), { eps: 0.1, temperature: 'foo' as 'njs' }), /^Error: attack: temperature must be a number, 'njs', 'hns' or \{ rule: 'njs', temperature \}, got "foo"/);
  });
});
