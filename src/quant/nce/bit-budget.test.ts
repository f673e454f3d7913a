/**
 * nceSearch under a size budget in bits at a different uniform width than the budget's (issue 7:
 * an NCE model at W2 within the size of the base model at uniform W3 = 1.5× its weights).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { ReLU } from '../../nn/activation.ts';
import { Linear } from '../../nn/linear.ts';
import { Sequential } from '../../nn/sequential.ts';
import { manualSeed, Rng } from '../../tensor/random.ts';
import { sizeCost } from '../search/costs.ts';
import { blobBatches } from '../search/testing.ts';
import { architectureCost, modelChain, nceSearch } from './index.ts';

describe('nceSearch with a size budget in bits', () => {
  it('W2 weights within the bits of uniform W3: cost = 2·weights ≤ 3·base weights, and the extra room is used', async () => {
    const train = blobBatches(new Rng(2), 4, 32);
    manualSeed(0);
    // 8 → 16 → 16 → 4: 384 weights; hidden widths from {8, 12, 16, 24, 32}.
    const model = new Sequential(new Linear(8, 16), new ReLU(), new Linear(16, 16), new ReLU(), new Linear(16, 4));
    const chain = modelChain(model, [8]);
    const baseWeights = architectureCost(sizeCost(), chain, {});
    assert.equal(baseWeights, 8 * 16 + 16 * 16 + 16 * 4);
    const budget = 3 * baseWeights;
    const qat = { default: { weight: { kind: 'lsq', bits: 2, signed: true, symmetric: true, granularity: 'tensor' as const }, activation: { kind: 'lsq', bits: 8, signed: false, symmetric: true, granularity: 'tensor' as const } }, keepFirstLast8bit: false };
    const r = await nceSearch(model, { inputShape: [8], train, steps: 16, warmupSteps: 4, cost: sizeCost(), bits: { w: 2, a: 8 }, budget, qat });
    assert.equal(r.budget, budget);
    assert.equal(r.baseCost, 2 * baseWeights, 'the base model priced at 2 bits');
    const weights = architectureCost(sizeCost(), chain, r.widths);
    assert.equal(r.cost, 2 * weights, 'cost = weights at 2 bits');
    assert.ok(r.cost <= budget, `cost ${r.cost} > budget ${budget}`);
    // The fill spends the 1.5x room: no single widening of one layer still fits.
    assert.ok(weights > baseWeights, `weights ${weights} should exceed the base ${baseWeights} (1.5x room)`);
    const names = Object.keys(r.widths);
    for (const name of names) {
      const wider = r.candidates[name]!.filter((c) => c > r.widths[name]!);
      if (wider.length === 0) continue;
      const next = { ...r.widths, [name]: Math.min(...wider) };
      assert.ok(2 * architectureCost(sizeCost(), chain, next) > budget, `widening ${name} to ${next[name]} still fits: the fill stopped early`);
    }
  });
});
