/** sposSearch refuses an unreachable budget before it turns the model into a supernet (audit s11 #4). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import './testing.ts';
import { quantizedLayers } from '../qat/prepare.ts';
import { sizeCost } from './costs.ts';
import { NoAllocationFitsError } from './allocate.ts';
import { sposSearch } from './spos.ts';
import { trainedBlobMlp } from './testing.ts';

describe('spos: budget checked first', () => {
  it('an unreachable budget throws NoAllocationFitsError and leaves the float model unchanged', async () => {
    const { model, data } = trainedBlobMlp(0, 1);
    const before = model.stateDict();
    const training = model.training;
    const copies = new Map([...before].map(([k, t]) => [k, Array.from(t.data)]));
    await assert.rejects(sposSearch(model, data, { budgets: [{ cost: sizeCost(), value: 8 }], training: { steps: 2 } }), NoAllocationFitsError);
    assert.equal(quantizedLayers(model).length, 0);
    assert.deepEqual([...model.stateDict().keys()], [...copies.keys()]);
    for (const [k, t] of model.stateDict()) assert.deepEqual(Array.from(t.data), copies.get(k), k);
    assert.equal(model.training, training);
  });
});
