import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../tensor/random.ts';
import { allocateExact, allocateExactMulti, allocatePerChannel, layerOptionsMulti, NoAllocationFitsError, paretoFront, type LayerChoices, type MultiCostLayerChoices } from './allocate.ts';
import { bitOpsCost, sizeCost } from './costs.ts';
import type { LayerInfo } from './types.ts';

/** Every combination of one option per layer: [cost, error, choices]. */
function enumerate(layers: readonly LayerChoices[]): { cost: number; error: number; choices: number[] }[] {
  let partial = [{ cost: 0, error: 0, choices: [] as number[] }];
  for (const l of layers) {
    partial = partial.flatMap((p) => l.options.map((o, i) => ({ cost: p.cost + o.cost, error: p.error + o.error, choices: [...p.choices, i] })));
  }
  return partial;
}

function randomInstance(rng: Rng, layers: number, options: number, integerCosts: boolean): LayerChoices[] {
  return [...Array(layers)].map((_, l) => ({
    name: `l${l}`,
    options: [...Array(options)].map((__, o) => ({
      choice: { w: o + 1, a: 8 },
      cost: integerCosts ? 1 + rng.int(20) : rng.uniform() * 10,
      error: rng.uniform() * 5 - 0.5,
    })),
  }));
}

describe('allocateExact', () => {
  it('matches brute force on random instances (real and integer costs, ties)', () => {
    const rng = new Rng(11);
    for (let trial = 0; trial < 60; trial++) {
      const layers = randomInstance(rng, 2 + rng.int(4), 2 + rng.int(4), trial % 2 === 0);
      const all = enumerate(layers);
      const costs = all.map((a) => a.cost).sort((x, y) => x - y);
      const budget = costs[Math.floor(rng.uniform() * costs.length)]! + (trial % 3 === 0 ? 0 : rng.uniform());
      const feasible = all.filter((a) => a.cost <= budget);
      const best = Math.min(...feasible.map((a) => a.error));
      const got = allocateExact(layers, budget);
      assert.ok(got.cost <= budget + 1e-9);
      assert.ok(Math.abs(got.error - best) < 1e-9, `trial ${trial}: ${got.error} vs brute force ${best}`);
      // The reported choices reproduce the reported cost and error, and the assignment names them.
      const re = got.choices.reduce((s, c, l) => s + layers[l]!.options[c]!.error, 0);
      const rc = got.choices.reduce((s, c, l) => s + layers[l]!.options[c]!.cost, 0);
      assert.ok(Math.abs(re - got.error) < 1e-9 && Math.abs(rc - got.cost) < 1e-9);
      layers.forEach((l, i) => assert.deepEqual(got.assignment[l.name], l.options[got.choices[i]!]!.choice));
    }
  });
  it('paretoFront is exactly the non-dominated set of the brute force', () => {
    const rng = new Rng(3);
    for (let trial = 0; trial < 20; trial++) {
      const layers = randomInstance(rng, 3, 3, false);
      const all = enumerate(layers);
      const nonDominated = all.filter((a) => !all.some((b) => b.cost <= a.cost && b.error <= a.error && (b.cost < a.cost || b.error < a.error)));
      const front = paretoFront(layers);
      assert.equal(front.length, new Set(nonDominated.map((a) => `${a.cost}|${a.error}`)).size);
      for (let i = 1; i < front.length; i++) assert.ok(front[i]!.cost > front[i - 1]!.cost && front[i]!.error < front[i - 1]!.error);
    }
  });
  it('throws when nothing fits, naming the cheapest cost', () => {
    const layers: LayerChoices[] = [{ name: 'a', options: [{ choice: { w: 2, a: 8 }, cost: 5, error: 1 }] }];
    assert.throws(() => allocateExact(layers, 4), (e: unknown) => e instanceof NoAllocationFitsError && e.minimum[0] === 5 && e.budgets[0] === 4 && /cheapest costs 5/.test(e.message));
    assert.throws(() => allocateExact([{ name: 'a', options: [{ choice: { w: 2, a: 8 }, cost: -1, error: 0 }] }], 4), />= 0/);
  });
});

describe('allocatePerChannel', () => {
  it('minimises the channel errors under the layer size budget (brute force on 4 channels)', () => {
    const layer: LayerInfo = { name: 'fc', type: 'Linear', weightCount: 4 * 10, outChannels: 4, macs: 40, inShape: [10], outShape: [4], reduction: 10 };
    const errors: Record<number, number[]> = { 2: [9, 1, 5, 0.5], 3: [3, 0.5, 2, 0.4], 4: [1, 0.2, 0.3, 0.3] };
    const budget = 10 * 12; // 3 bits per channel on average
    const got = allocatePerChannel(layer, errors, budget);
    let best = Infinity;
    for (const a of [2, 3, 4]) for (const b of [2, 3, 4]) for (const c of [2, 3, 4]) for (const d of [2, 3, 4]) {
      if (10 * (a + b + c + d) > budget) continue;
      best = Math.min(best, errors[a]![0]! + errors[b]![1]! + errors[c]![2]! + errors[d]![3]!);
    }
    assert.ok(Math.abs(got.error - best) < 1e-12, `${got.error} vs ${best}`);
    assert.equal(got.w, Math.max(...got.wPerChannel!));
    assert.ok(got.cost <= budget);
    // The sensitive channel 0 gets the most bits.
    assert.equal(got.wPerChannel![0], 4);
  });
  it('returns plain bits when every channel agrees', () => {
    const layer: LayerInfo = { name: 'fc', type: 'Linear', weightCount: 20, outChannels: 2, macs: 20, inShape: [10], outShape: [2], reduction: 10 };
    const got = allocatePerChannel(layer, { 2: [5, 5], 4: [1, 1] }, 80);
    assert.equal(got.w, 4);
    assert.equal(got.wPerChannel, undefined);
  });
});

describe('allocateExactMulti', () => {
  /** Every combination of one option per layer with its cost vector and error. */
  function enumerateMulti(layers: readonly MultiCostLayerChoices[], dims: number): { costs: number[]; error: number }[] {
    let partial = [{ costs: new Array<number>(dims).fill(0), error: 0 }];
    for (const l of layers) partial = partial.flatMap((p) => l.options.map((o) => ({ costs: p.costs.map((c, k) => c + o.costs[k]!), error: p.error + o.error })));
    return partial;
  }

  it('matches brute force with 1, 2 and 3 budgets (integer costs with ties, real errors)', () => {
    const rng = new Rng(5);
    for (let trial = 0; trial < 90; trial++) {
      const dims = 1 + (trial % 3);
      const layers: MultiCostLayerChoices[] = [...Array(2 + rng.int(4))].map((_, l) => ({
        name: `l${l}`,
        options: [...Array(2 + rng.int(5))].map((__, o) => ({ choice: { w: o + 1, a: 8 }, costs: [...Array(dims)].map(() => rng.int(12)), error: rng.uniform() * 4 - 0.5 })),
      }));
      const all = enumerateMulti(layers, dims);
      const pick = all[rng.int(all.length)]!;
      const budgets = pick.costs.map((c) => c + rng.int(3));
      const feasible = all.filter((a) => a.costs.every((c, k) => c <= budgets[k]!));
      const best = Math.min(...feasible.map((a) => a.error));
      const got = allocateExactMulti(layers, budgets);
      assert.ok(Math.abs(got.error - best) < 1e-9, `trial ${trial} (${dims} budgets): ${got.error} vs brute force ${best}`);
      got.costs.forEach((c, k) => assert.ok(c <= budgets[k]!, `cost ${k} ${c} over budget ${budgets[k]}`));
      // The choices reproduce the reported costs and error.
      const costs = new Array<number>(dims).fill(0);
      let error = 0;
      got.choices.forEach((ci, l) => {
        const o = layers[l]!.options[ci]!;
        o.costs.forEach((c, k) => (costs[k]! += c));
        error += o.error;
        assert.equal(got.assignment[layers[l]!.name], o.choice);
      });
      assert.deepEqual(costs, got.costs);
      assert.ok(Math.abs(error - got.error) < 1e-9);
    }
  });

  it('agrees with allocateExact on one budget and binds both budgets of size and BitOps', () => {
    const rng = new Rng(8);
    const single = randomInstance(rng, 4, 5, true);
    const multi: MultiCostLayerChoices[] = single.map((l) => ({ name: l.name, options: l.options.map((o) => ({ choice: o.choice, costs: [o.cost], error: o.error })) }));
    for (const budget of [20, 35, 50]) assert.ok(Math.abs(allocateExactMulti(multi, [budget]).error - allocateExact(single, budget).error) < 1e-12);
    // Two layers with the same MACs: weights are cheap to widen in the small layer, activations cost BitOps in both.
    const layers: LayerInfo[] = [
      { name: 'a', type: 'Linear', weightCount: 100, outChannels: 10, macs: 1000, inShape: [10], outShape: [10], reduction: 10 },
      { name: 'b', type: 'Linear', weightCount: 1000, outChannels: 10, macs: 1000, inShape: [100], outShape: [10], reduction: 100 },
    ];
    const choices = [2, 4, 8].flatMap((w) => [2, 4, 8].map((a) => ({ w, a })));
    // Error falls with every bit; 'a' is ten times as sensitive as 'b'.
    const opts = layerOptionsMulti(layers, choices, [sizeCost(), bitOpsCost()], (l, c) => (l.name === 'a' ? 10 : 1) * (2 ** -c.w + 2 ** -c.a));
    const sizeBudget = 1100 * 2;  // uniform 2-bit weights
    const opsBudget = 2000 * 4;  // uniform W2A2
    const got = allocateExactMulti(opts, [sizeBudget, opsBudget]);
    assert.ok(got.costs[0]! <= sizeBudget && got.costs[1]! <= opsBudget);
    // Brute force over the 81 combinations.
    let best = Infinity;
    for (const x of opts[0]!.options) for (const y of opts[1]!.options) {
      if (x.costs[0]! + y.costs[0]! <= sizeBudget && x.costs[1]! + y.costs[1]! <= opsBudget) best = Math.min(best, x.error + y.error);
    }
    assert.equal(got.error, best);
    // Each cost's own minimum: every layer at 2 bits (size 2 * 1100), W2A2 (BitOps 4 * 2000).
    assert.throws(() => allocateExactMulti(opts, [100, opsBudget]), (e: unknown) => e instanceof NoAllocationFitsError && e.minimum[0] === 1100 * 2 && e.minimum[1] === 2000 * 4 && /no allocation fits the budgets 100, 8000/.test(e.message));
    assert.throws(() => allocateExactMulti(opts, [sizeBudget]), /2 costs for 1 budgets/);
  });
});
