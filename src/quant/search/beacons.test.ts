import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BeaconSet, beaconHooks, rmsDistance } from './beacons.ts';
import { nsga2, type Genome } from './nsga2.ts';

describe('beacon correction', () => {
  it('rmsDistance is the root mean square coordinate difference', () => {
    assert.equal(rmsDistance([4, 4], [4, 3]), Math.sqrt(0.5));
    assert.equal(rmsDistance([8, 2, 4, 4], [4, 2, 4, 4]), 2);
    assert.throws(() => rmsDistance([1], [1, 2]), /differ in length/);
  });

  it('corrects by the nearest beacon within the radius, floored at 0', () => {
    const set = new BeaconSet({ radius: 1 });
    assert.equal(set.correct([4, 4], 0.2), 0.2, 'no beacon: unchanged');
    set.add({ position: [4, 4], ptqError: 0.10, retrainedError: 0.04 }); // Δ = 0.06
    set.add({ position: [2, 2], ptqError: 0.50, retrainedError: 0.20 }); // Δ = 0.30
    assert.ok(Math.abs(set.correct([4, 4], 0.10) - 0.04) < 1e-15, 'a beacon gets its retrained error');
    assert.ok(Math.abs(set.correct([4, 3], 0.12) - 0.06) < 1e-15, 'distance 0.71 from [4,4]');
    assert.ok(Math.abs(set.correct([2, 3], 0.45) - 0.15) < 1e-15, 'distance 0.71 from [2,2], 1.58 from [4,4]');
    assert.equal(set.correct([8, 8], 0.07), 0.07, 'farther than the radius from both');
    assert.equal(set.correct([4, 5], 0.03), 0, 'floored at 0');
    assert.equal(set.covers([3, 3]), true);
    assert.equal(set.covers([8, 2]), false);
    assert.throws(() => set.add({ position: [1, 1], ptqError: NaN, retrainedError: 0 }), /finite/);
  });

  it('relative correction scales the excess error over the float floor by the beacon ratio', () => {
    // Float error 0.08. Beacon at W2: PTQ 0.18, QAT 0.10 → excesses 0.10 and 0.02; κ = 0.005:
    // r = (0.02 + 0.005)/(0.10 + 0.005) = 0.238095…
    const set = new BeaconSet({ radius: 1, floorError: 0.08, shrinkage: 0.005 });
    set.add({ position: [1, 1, 1], ptqError: 0.18, retrainedError: 0.10 });
    const r = 0.025 / 0.105;
    assert.ok(Math.abs(set.correct([1, 1, 1.5], 0.12) - (0.08 + 0.04 * r)) < 1e-15, 'a better neighbour keeps most of its advantage');
    assert.ok(set.correct([1, 1, 1.5], 0.12) > 0.08, 'never below the floor');
    // Additive would lend the full 0.08 reduction: 0.12 − 0.08 = 0.04, below the float error.
    const additive = new BeaconSet({ radius: 1 });
    additive.add({ position: [1, 1, 1], ptqError: 0.18, retrainedError: 0.10 });
    assert.ok(Math.abs(additive.correct([1, 1, 1.5], 0.12) - 0.04) < 1e-15);
    assert.equal(set.correct([1, 1, 1], 0.18), 0.10, 'the beacon itself: its retrained error');
    assert.equal(set.correct([1, 1, 1.5], 0.07), 0.07, 'at or below the floor: unchanged');
    // A noisy beacon whose QAT is slightly worse (excess 0.0006 → 0.0012): the ratio stays near 1.
    const noisy = new BeaconSet({ radius: 1, floorError: 0.0048 });
    noisy.add({ position: [3, 3], ptqError: 0.0054, retrainedError: 0.0060 });
    const rn = (0.0012 + 0.005) / (0.0006 + 0.005);
    assert.ok(Math.abs(noisy.correct([3, 3.5], 0.0148) - (0.0048 + 0.01 * rn)) < 1e-15);
    assert.ok(rn < 1.11);
    assert.throws(() => new BeaconSet({ floorError: NaN }), /floorError/);
    assert.throws(() => new BeaconSet({ shrinkage: 0 }), /shrinkage/);
  });

  it('pickNew takes the farthest uncovered positions greedily', () => {
    const set = new BeaconSet({ radius: 1 });
    set.add({ position: [4, 4], ptqError: 0.1, retrainedError: 0.05 });
    const positions = [[4, 3], [2, 2], [8, 8], [8, 7], [2, 3]];
    // Distances to [4,4]: 0.71, 2, 4, 3.54, 1.58 → [8,8] first; then [2,2] (2 from [4,4], 6 from [8,8]);
    // [8,7] is 0.71 from [8,8] and [2,3] 0.71 from [2,2]: covered, so nothing else.
    assert.deepEqual(set.pickNew(positions, 5), [2, 1]);
    assert.deepEqual(set.pickNew(positions, 1), [2]);
    // No beacon yet: the medoid first ([4,3]: total distance 11.52, the least), then farthest-first:
    // [8,8] (4.53 from [4,3]), then [2,2] (1.58 from [4,3]); [8,7] and [2,3] are then covered.
    assert.deepEqual(new BeaconSet({ radius: 1 }).pickNew(positions, 5), [0, 2, 1]);
    assert.deepEqual(new BeaconSet({ radius: 1 }).pickNew(positions, 0), []);
  });

  it('inside NSGA-II, beacon-corrected errors track the retrained truth better than PTQ errors', async () => {
    // Synthetic: true (retrained) error e(b) = Σ 2^(−b_i); PTQ adds a smooth penalty that grows as bits fall,
    // 0.1·Σ (8 − b_i)/6. Nearby configurations have nearly the same PTQ→QAT gap, which is what beacons exploit.
    const bits = [2, 3, 4, 6, 8];
    const params = [10, 40, 20, 5];
    const position = (g: Genome) => g.map((v) => bits[v]!);
    const trueError = (b: readonly number[]) => b.reduce((s, v) => s + 2 ** -v, 0);
    const ptqError = (b: readonly number[]) => trueError(b) + 0.1 * b.reduce((s, v) => s + (8 - v) / 6, 0);
    const retrained: Genome[] = [];
    const set = new BeaconSet({ radius: 1.2 });
    const hooks = beaconHooks({
      beacons: set, position, maxBeacons: 3, every: 1,
      retrain: (genome) => { retrained.push(genome); return trueError(position(genome)); },
    });
    const result = await nsga2({
      cardinalities: params.map(() => bits.length), populationSize: 12, generations: 8, seed: 4,
      evaluate: (g) => [ptqError(position(g)), position(g).reduce((s, b, i) => s + b * params[i]!, 0)],
      ...hooks,
    });
    assert.equal(set.size, 3);
    assert.equal(retrained.length, 3);
    for (const genome of retrained) {
      const individual = result.archive.find((a) => a.genome.join() === genome.join())!;
      assert.ok(Math.abs(individual.objectives[0]! - trueError(position(genome))) < 1e-12, 'beacons carry their retrained error');
    }
    const covered = result.archive.filter((a) => set.covers(position(a.genome)));
    assert.ok(covered.length >= 10, `covered ${covered.length}`);
    let ptqGap = 0;
    let correctedGap = 0;
    for (const a of covered) {
      const truth = trueError(position(a.genome));
      ptqGap += Math.abs(a.raw[0]! - truth);
      correctedGap += Math.abs(a.objectives[0]! - truth);
      // Uncorrected cost objective is untouched.
      assert.equal(a.objectives[1], a.raw[1]);
    }
    assert.ok(correctedGap < 0.25 * ptqGap, `corrected gap ${correctedGap} vs PTQ gap ${ptqGap}`);
    for (const a of result.archive.filter((x) => !set.covers(position(x.genome)))) assert.equal(a.objectives[0], a.raw[0]);
  });
});
