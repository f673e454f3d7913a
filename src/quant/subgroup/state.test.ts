/** The fixed plan and the mode of SubgroupLinear survive stateDict / loadStateDict (audit s11 #1). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { Rng, Tensor } from '../../tensor/index.ts';
import { SubgroupLinear } from './linear.ts';
import { applyPlan, derivePlan, subgroupLayers } from './plan.ts';
import { TinyTransformerLm } from './transformer.ts';

function searchable(seed: number): TinyTransformerLm {
  return new TinyTransformerLm({ vocabSize: 12, context: 6, embedDim: 8, heads: 2, ffnDim: 16, layers: 1, rng: new Rng(seed) }).makeSearchable({ ffnGroupSize: 8 });
}

describe('SubgroupLinear state dict', () => {
  it('a model with an applied plan reloads into a fresh searchable model with the same plan and outputs', () => {
    const source = searchable(1);
    const [, first] = subgroupLayers(source)[0]!;
    first.archLogits.data.set(Array.from({ length: first.archLogits.size }, (_v, i) => ((i * 7) % 5) - 2));
    const plan = derivePlan(source);
    applyPlan(source, plan);
    source.eval();
    const ids = new Tensor(Int32Array.from([1, 5, 3, 7, 2, 11]), [1, 6]);
    const expected = noGrad(() => source.forward(ids)).data;
    const target = searchable(2);
    target.loadStateDict(source.stateDict());
    target.eval();
    for (const [name, layer] of subgroupLayers(target)) {
      assert.equal(layer.mode, 'fixed', name);
      assert.deepEqual(Array.from(layer.assignment!), plan.layers.find((l) => l.name === name)!.bits, name);
    }
    assert.deepEqual(Array.from(noGrad(() => target.forward(ids)).data), Array.from(expected));
  });

  it('keeps float / search modes and refuses a bad assignment', () => {
    const a = new SubgroupLinear(4, 4, { groupSize: 2 });
    a.mode = 'float';
    const b = new SubgroupLinear(4, 4, { groupSize: 2 });
    b.loadStateDict(a.stateDict());
    assert.equal(b.mode, 'float');
    assert.equal(b.assignment, null);
    const bad = a.stateDict();
    bad.get('assignment')!.data.set([4, 3]);
    assert.throws(() => b.loadStateDict(bad), /assignment/);
    const fixedWithout = a.stateDict();
    fixedWithout.get('mode')!.data[0] = 2;
    assert.throws(() => b.loadStateDict(fixedWithout), /fixed/);
    assert.throws(() => (a.mode = 'other' as 'float'), /mode/);
  });
});
