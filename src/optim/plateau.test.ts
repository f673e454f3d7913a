import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ReduceLROnPlateau, type ReduceLROnPlateauOptions } from './schedules.ts';
import { torchParity } from '../../test/fixtures/torch-keras-parity.ts';

/** Two param groups as the fixture's SGD has them (lr 0.5 and 0.02). */
function groups(): { paramGroups: { lr: number }[] } {
  return { paramGroups: [{ lr: 0.5 }, { lr: 0.02 }] };
}

describe('optim.ReduceLROnPlateau', () => {
  for (const c of torchParity().plateaus) {
    it(`matches torch 1.13 step by step: ${c.name}`, () => {
      const opt = groups();
      const sched = new ReduceLROnPlateau(opt, c.config as ReduceLROnPlateauOptions);
      c.metrics.forEach((m, i) => {
        sched.step(m === null ? NaN : m);
        assert.deepEqual(sched.getLr(), c.lrs[i], `after step ${i + 1} (metric ${m})`);
      });
    });
  }

  it('closed form: a constant metric reduces every patience + 1 steps, then every patience + 1 + cooldown', () => {
    const opt = { paramGroups: [{ lr: 1 }] };
    const sched = new ReduceLROnPlateau(opt, { patience: 3, factor: 0.5, cooldown: 2 });
    const lrs: number[] = [];
    for (let i = 0; i < 20; i++) {
      sched.step(1);
      lrs.push(opt.paramGroups[0]!.lr);
    }
    // Step 1 sets best; bad steps 2..5 -> the 4th bad step (step 5) reduces; cooldown 2 swallows
    // steps 6 and 7; then 4 more bad steps (8..11) reduce at step 11, next at 17.
    const expected = lrs.map((_, i) => 0.5 ** [5, 11, 17].filter((s) => s <= i + 1).length);
    assert.deepEqual(lrs, expected);
  });

  it('state dict round trip continues identically; checks its input', () => {
    const metrics = [3, 2, 2.5, 2.4, 2.3, 2.2, 2.1, 2, 1.99995, 2];
    const a = { paramGroups: [{ lr: 0.1 }] };
    const full = new ReduceLROnPlateau(a, { patience: 1, threshold: 0.05 });
    for (const m of metrics) full.step(m);
    const b = { paramGroups: [{ lr: 0.1 }] };
    const first = new ReduceLROnPlateau(b, { patience: 1, threshold: 0.05 });
    for (const m of metrics.slice(0, 5)) first.step(m);
    const saved = JSON.parse(JSON.stringify(first.stateDict()));
    const resumed = new ReduceLROnPlateau(b, { patience: 1, threshold: 0.05 });
    resumed.loadStateDict(saved);
    for (const m of metrics.slice(5)) resumed.step(m);
    assert.deepEqual(resumed.stateDict(), full.stateDict());
    assert.equal(b.paramGroups[0]!.lr, a.paramGroups[0]!.lr);
    assert.ok(a.paramGroups[0]!.lr < 0.1, 'the sequence does reduce');
    // Before any step best is +Infinity, which JSON writes as null.
    const fresh = new ReduceLROnPlateau({ paramGroups: [{ lr: 1 }] }, { mode: 'max' });
    fresh.loadStateDict(JSON.parse(JSON.stringify(fresh.stateDict())));
    assert.equal(fresh.best, -Infinity);
    assert.throws(() => fresh.loadStateDict({ lastStep: -1, best: 0, numBadSteps: 0, cooldownCounter: 0 }), /lastStep must be a non-negative integer/);
  });

  it('refuses bad options', () => {
    assert.throws(() => new ReduceLROnPlateau(groups(), { factor: 1 }), /factor must be in \[0, 1\)/);
    assert.throws(() => new ReduceLROnPlateau(groups(), { patience: -1 }), /patience must be a non-negative integer/);
    assert.throws(() => new ReduceLROnPlateau(groups(), { minLr: [0.1] }), /1 minLr values for 2 param groups/);
    assert.throws(() => new ReduceLROnPlateau(groups(), { mode: 'up' as 'min' }), /mode must be 'min' or 'max'/);
  });
});
