import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { bestWithinBudget, bitChoices, candidateFront, chooseWithinBudget, nsga2Search, rankByRetraining, retrainAssignment, type SearchCandidate } from './mohaq.ts';
import { uniformAssignment } from './costs.ts';
import { describeLayers } from './layers.ts';
import { bitOpsCost, sizeCost, totalCost } from './costs.ts';
import { evaluateAssignmentSync } from './evaluate.ts';
import { trainedBlobMlp } from './testing.ts';

function cand(accuracy: number, size: number, uniform?: string): SearchCandidate {
  return { assignment: {}, accuracy, costs: { size }, ...(uniform ? { uniform } : {}) };
}

describe('mohaq helpers', () => {
  it('bitChoices orders (w, a) pairs by w then a and validates', () => {
    assert.deepEqual(bitChoices({ wBits: [8, 2, 4], aBits: [8, 4] }), [
      { w: 2, a: 4 }, { w: 2, a: 8 }, { w: 4, a: 4 }, { w: 4, a: 8 }, { w: 8, a: 4 }, { w: 8, a: 8 },
    ]);
    assert.deepEqual(bitChoices(), [{ w: 2, a: 8 }, { w: 3, a: 8 }, { w: 4, a: 8 }, { w: 8, a: 8 }]);
    assert.throws(() => bitChoices({ wBits: [] }), /wBits is empty/);
    assert.throws(() => bitChoices({ aBits: [0] }), /aBits entries/);
  });

  it('candidateFront keeps the accuracy/cost trade-offs; chooseWithinBudget the best that fits', () => {
    const all = [cand(0.90, 10), cand(0.97, 20), cand(0.96, 25), cand(0.98, 30), cand(0.98, 40), cand(0.97, 20)];
    assert.deepEqual(candidateFront(all, ['size']).map((c) => [c.accuracy, c.costs.size]), [[0.9, 10], [0.97, 20], [0.98, 30]]);
    assert.equal(chooseWithinBudget(all, 'size', 29)?.costs.size, 20);
    assert.equal(chooseWithinBudget(all, 'size', 100)?.costs.size, 30, 'equal accuracy: the cheaper');
    assert.equal(chooseWithinBudget(all, 'size', 5), null);
    assert.deepEqual(bestWithinBudget(all, 'size', 29, 3).map((c) => [c.accuracy, c.costs.size]), [[0.97, 20], [0.97, 20], [0.96, 25]]);
    assert.deepEqual(bestWithinBudget(all, 'size', 100, 2).map((c) => c.costs.size), [30, 40], 'equal accuracy: the cheaper first');
    assert.deepEqual(bestWithinBudget(all, 'size', 5, 3), []);
  });
});

describe('rankByRetraining', () => {
  it('orders candidates by their accuracy after retrainAssignment, restores the model and stops on request', () => {
    const { model, data } = trainedBlobMlp(3);
    const layers = describeLayers(model, [8]);
    const before = model.parameters().map((p) => p.data.slice());
    const options = { calibrationSamples: 64, qatSteps: 6, qatLr: 1e-3, seed: 1 };
    const candidates: SearchCandidate[] = [2, 3, 4, 8].map((w) => {
      const assignment = uniformAssignment(layers, w, 8);
      // PTQ scores that rank the plans the other way round from retraining (which favours more bits here)
      return { assignment, accuracy: 0.9 - w / 100, ptqAccuracy: 0.9 - w / 100, costs: { size: w } };
    });
    const seen: number[] = [];
    const ranked = rankByRetraining(model, candidates, data, { ...options, onCandidate: (_c, i) => seen.push(i) });
    assert.deepEqual(seen, [0, 1, 2, 3]);
    model.parameters().forEach((p, i) => assert.deepEqual(p.data, before[i], 'model restored'));
    // Each retrained accuracy is what retrainAssignment gives on its own; the order is by it (ties: higher PTQ first).
    const expected = candidates.map((c) => ({ w: c.costs.size!, acc: retrainAssignment(model, c.assignment, data, options).accuracy }))
      .sort((x, y) => y.acc - x.acc || x.w - y.w);
    assert.deepEqual(ranked.map((c) => [c.costs.size, c.retrainedAccuracy]), expected.map((e) => [e.w, e.acc]));
    assert.notDeepEqual(ranked.map((c) => c.costs.size), [2, 3, 4, 8], 'retraining reorders what PTQ ranked');
    for (const c of ranked) assert.equal(c.accuracy, c.ptqAccuracy, 'the search accuracy is kept');
    let n = 0;
    assert.equal(rankByRetraining(model, candidates, data, { ...options, shouldStop: () => n++ >= 2 }).length, 2);
  });
});

describe('nsga2Search on a small MLP', () => {
  it('searches bit widths with PTQ + beacons, seeded with the uniform points, and restores the model', async () => {
    const { model, data } = trainedBlobMlp(1);
    const before = model.parameters().map((p) => p.data.slice());
    const costs = [sizeCost(), bitOpsCost()];
    const beaconsSeen: SearchCandidate[] = [];
    const result = await nsga2Search(model, data, {
      costs, wBits: [2, 4, 8], populationSize: 6, generations: 3, seed: 2,
      evaluation: { calibrationSamples: 128 },
      beacons: { maxBeacons: 2, every: 1, qatSteps: 8, qatLr: 1e-3, radius: 0.6 },
      onBeacon: (c) => beaconsSeen.push(c),
    });
    // Model restored bit for bit.
    model.parameters().forEach((p, i) => assert.deepEqual(p.data, before[i]));
    assert.deepEqual(result.layers.map((l) => l.name), ['0', '2', '4']);
    // Uniform seeds: W2A8, W4A8, W8A8, evaluated like the others.
    assert.deepEqual(result.uniform.map((u) => u.uniform).sort(), ['W2A8', 'W4A8', 'W8A8']);
    for (const c of result.candidates) {
      assert.equal(c.costs.size, totalCost(sizeCost(), result.layers, c.assignment));
      assert.equal(c.costs.bitops, totalCost(bitOpsCost(), result.layers, c.assignment));
      assert.ok(c.accuracy >= 0 && c.accuracy <= 1 && c.ptqAccuracy! >= 0);
    }
    // The W8A8 PTQ accuracy is exactly what evaluateAssignment gives.
    const w8 = result.uniform.find((u) => u.uniform === 'W8A8')!;
    assert.equal(w8.ptqAccuracy, evaluateAssignmentSync(model, w8.assignment, data, { method: 'ptq', calibrationSamples: 128 }).accuracy);
    // Beacons: at most 2, their ranked accuracy is their retrained accuracy.
    assert.ok(result.beacons.length >= 1 && result.beacons.length <= 2, `${result.beacons.length} beacons`);
    assert.equal(beaconsSeen.length, result.beacons.length);
    for (const b of result.beacons) assert.equal(b.accuracy, b.retrainedAccuracy);
    // Front: non-dominated, and every uniform point is on it or dominated by one of its points.
    const front = result.front;
    assert.ok(front.length >= 1);
    const dominatesOrEqual = (f: SearchCandidate, u: SearchCandidate) => f.accuracy >= u.accuracy && costs.every((c) => f.costs[c.name]! <= u.costs[c.name]!);
    for (const u of result.uniform) assert.ok(front.some((f) => dominatesOrEqual(f, u)), `uniform ${u.uniform} is covered`);
    for (const f of front) assert.ok(!result.candidates.some((c) => c !== f && dominatesOrEqual(c, f) && (c.accuracy > f.accuracy || costs.some((m) => c.costs[m.name]! < f.costs[m.name]!))));
    assert.ok(result.evaluations > 6 && result.evaluations <= 6 * 4);
    assert.equal(result.stopped, false);
  });

  it('stops early on request and keeps the candidates evaluated so far', async () => {
    const { model, data } = trainedBlobMlp(2, 60);
    let n = 0;
    const result = await nsga2Search(model, data, {
      costs: [sizeCost()], wBits: [2, 4, 8], populationSize: 6, generations: 10, beacons: false,
      evaluation: { calibrationSamples: 64 }, onEvaluation: () => n++, shouldStop: () => n >= 5,
    });
    assert.equal(result.stopped, true);
    assert.equal(result.candidates.length, 5);
    assert.equal(result.beacons.length, 0);
    for (const c of result.candidates) assert.equal(c.accuracy, c.ptqAccuracy, 'no beacons: PTQ accuracy as is');
  });
});
