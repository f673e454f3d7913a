/**
 * An attack leaves every parameter and buffer of the model bit for bit as it found them, also when
 * the forward initializes state lazily (LSQ steps and observers of a freshly prepared QAT model).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Flatten, Linear, ReLU, Sequential } from '../nn/index.ts';
import { manualSeed, Rng, Tensor } from '../tensor/index.ts';
import { prepareQat, qatFromCliOptions } from '../quant/qat/index.ts';
import { fgsm, pgd } from './attack.ts';

function snapshot(model: Sequential): Map<string, number[]> {
  return new Map([...model.namedParameters(), ...model.namedBuffers()].map(([name, t]) => [name, Array.from(t.data, Number)]));
}

describe('attacks and lazily initialized model state', () => {
  it('fgsm / pgd on a never-run w4a4 LSQ model change no parameter or buffer', () => {
    manualSeed(3);
    const model = new Sequential(new Flatten(), new Linear(16, 8), new ReLU(), new Linear(8, 3));
    prepareQat(model, { ...qatFromCliOptions({ quant: 'w4a4' })!, keepFirstLast8bit: false });
    model.train();
    const before = snapshot(model);
    const rng = new Rng(4);
    const x = new Tensor(Float32Array.from({ length: 6 * 16 }, () => rng.uniform()), [6, 1, 4, 4]);
    const labels = Int32Array.from([0, 1, 2, 0, 1, 2]);
    fgsm(model, x, labels, { eps: 0.1 });
    pgd(model, x, labels, { eps: 0.1, steps: 2, temperature: 'njs' });
    const after = snapshot(model);
    const changed = [...before].filter(([name, values]) => !Object.is(JSON.stringify(values), JSON.stringify(after.get(name)))).map(([name]) => name);
    assert.deepEqual(changed, []);
    assert.equal(model.training, true);
  });
});
