import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../tensor/random.ts';
import {
  crowdingDistance, dominates, fastNonDominatedSort, mutate, nsga2, nonDominated, selectSurvivors, uniformCrossover,
  type Genome, type Individual, type Objectives,
} from './nsga2.ts';

/** Every genome of a product space. */
function allGenomes(cardinalities: readonly number[]): number[][] {
  let out: number[][] = [[]];
  for (const k of cardinalities) out = out.flatMap((g) => Array.from({ length: k }, (_, v) => [...g, v]));
  return out;
}

/** The non-dominated objective vectors by brute force (distinct, as 'a,b' keys). */
function bruteForceFront(points: readonly Objectives[]): Set<string> {
  const front = new Set<string>();
  for (const p of points) if (!points.some((q) => dominates(q, p))) front.add(p.join(','));
  return front;
}

/** Area dominated by a 2-objective front up to a reference point (both minimized). */
function hypervolume2d(points: readonly Objectives[], ref: readonly [number, number]): number {
  const sorted = [...points].filter((p) => p[0]! < ref[0] && p[1]! < ref[1]).sort((a, b) => a[0]! - b[0]!);
  let area = 0;
  let bestY = ref[1];
  for (let i = 0; i < sorted.length; i++) {
    const [x, y] = sorted[i]!;
    if (y! >= bestY) continue;
    const nextX = sorted.slice(i + 1).find((p) => p[1]! < y!)?.[0] ?? ref[0];
    area += (nextX - x!) * (ref[1] - y!);
    bestY = y!;
  }
  return area;
}

function ind(objectives: Objectives): Individual {
  return { genome: [], raw: objectives, objectives, rank: 0, crowding: 0 };
}

describe('dominance and sorting', () => {
  it('dominates: no worse everywhere and better somewhere', () => {
    assert.equal(dominates([1, 2], [2, 2]), true);
    assert.equal(dominates([1, 2], [1, 2]), false);
    assert.equal(dominates([1, 3], [2, 2]), false);
    assert.equal(dominates([2, 2], [1, 2]), false);
    assert.throws(() => dominates([1], [1, 2]), /differ in length/);
  });

  it('fast non-dominated sort: hand-computed fronts', () => {
    const points = [[1, 5], [2, 3], [3, 1], [2, 4], [4, 4], [3, 3], [5, 5]];
    // (2,4) and (3,3) are dominated only by (2,3); (4,4) by (3,3) and (2,4); (5,5) by (4,4).
    assert.deepEqual(fastNonDominatedSort(points), [[0, 1, 2], [3, 5], [4], [6]]);
    // Equal points share a front.
    assert.deepEqual(fastNonDominatedSort([[1, 1], [1, 1], [2, 2]]), [[0, 1], [2]]);
    assert.deepEqual(fastNonDominatedSort([]), []);
  });

  it('fast non-dominated sort agrees with the definition on random 3-objective points', () => {
    const rng = new Rng(7);
    const points = Array.from({ length: 60 }, () => [rng.int(6), rng.int(6), rng.int(6)]);
    const fronts = fastNonDominatedSort(points);
    assert.equal(fronts.flat().length, points.length);
    const rankOf = new Map<number, number>();
    fronts.forEach((f, r) => f.forEach((i) => rankOf.set(i, r)));
    for (let p = 0; p < points.length; p++) {
      const dominators = points.map((_, q) => q).filter((q) => dominates(points[q]!, points[p]!));
      // rank = 0 iff nobody dominates; otherwise 1 + the highest rank among dominators.
      const expected = dominators.length === 0 ? 0 : 1 + Math.max(...dominators.map((q) => rankOf.get(q)!));
      assert.equal(rankOf.get(p), expected, `point ${p}`);
    }
  });

  it('crowding distance: hand-computed values', () => {
    // Three points on a line: the ends are infinite, the middle gets 2/2 + 4/4 = 2.
    assert.deepEqual(crowdingDistance([[1, 5], [2, 3], [3, 1]], [0, 1, 2]), [Infinity, 2, Infinity]);
    // (1,2): (3−0)/4 + (4−1)/4 = 1.5; (3,1): (4−1)/4 + (2−0)/4 = 1.25.
    const points = [[0, 4], [1, 2], [3, 1], [4, 0]];
    assert.deepEqual(crowdingDistance(points, [3, 1, 0, 2]), [Infinity, 1.5, Infinity, 1.25]);
    // A constant objective adds nothing; two points are both ends.
    assert.deepEqual(crowdingDistance([[0, 7], [1, 7], [2, 7]], [0, 1, 2]), [Infinity, 1, Infinity]);
    assert.deepEqual(crowdingDistance([[0, 1], [1, 0]], [0, 1]), [Infinity, Infinity]);
  });

  it('survival keeps whole fronts, then the least crowded of the last one', () => {
    const pop = [[1, 5], [2, 3], [3, 1], [2, 4], [4, 4], [3, 3], [5, 5], [1.5, 4.5]].map(ind);
    // Front 0 = (1,5), (2,3), (3,1), (1.5,4.5) (4 members), front 1 = (2,4), (3,3).
    const five = selectSurvivors(pop, 5).map((i) => i.objectives.join(','));
    assert.deepEqual(five.slice(0, 4).sort(), ['1,5', '1.5,4.5', '2,3', '3,1']);
    assert.equal(five.length, 5);
    assert.ok(['2,4', '3,3'].includes(five[4]!));
    // From front 0 alone, keeping 3: the two ends survive, then (2,3) (crowding (3−1.5)/2 + (4.5−1)/4 = 1.625) beats (1.5,4.5) (0.5 + 0.5 = 1).
    assert.deepEqual(selectSurvivors(pop.filter((_, i) => [0, 1, 2, 7].includes(i)), 3).map((i) => i.objectives.join(',')).sort(), ['1,5', '2,3', '3,1']);
  });

  it('nonDominated keeps one representative per objective vector, sorted', () => {
    const front = nonDominated([[3, 1], [1, 5], [2, 3], [2, 3], [2, 4]].map(ind));
    assert.deepEqual(front.map((i) => i.objectives), [[1, 5], [2, 3], [3, 1]]);
  });
});

describe('variation operators', () => {
  it('uniform crossover swaps genes between the children only', () => {
    const rng = new Rng(1);
    const a = [0, 1, 2, 3, 0, 1];
    const b = [3, 2, 1, 0, 3, 2];
    const [c1, c2] = uniformCrossover(a, b, rng);
    for (let i = 0; i < a.length; i++) {
      assert.deepEqual([c1[i], c2[i]].sort(), [a[i], b[i]].sort());
    }
  });

  it('mutation stays in range and changes genes at about the given rate', () => {
    const rng = new Rng(2);
    const k = [4, 4, 4, 4, 1];
    let changed = 0;
    for (let t = 0; t < 2000; t++) {
      const g = [0, 3, 1, 2, 0];
      const before = g.slice();
      mutate(g, k, 0.25, rng);
      g.forEach((v, i) => assert.ok(Number.isInteger(v) && v >= 0 && v < k[i]!));
      assert.equal(g[4], 0); // a one-valued gene never moves
      changed += g.filter((v, i) => v !== before[i]).length;
    }
    // 4 mutable genes × 0.25 × 2000 = 2000 expected changes; every mutation changes the value.
    assert.ok(Math.abs(changed - 2000) < 150, `changes ${changed}`);
  });
});

describe('nsga2', () => {
  it('finds the exact front of a discretized ZDT1', async () => {
    // x_i = g_i / 10; f1 = x1, g = 1 + 9·mean(x2..x5), f2 = g·(1 − sqrt(f1/g)). Front: x2..5 = 0, any x1 (11 points).
    const cardinalities = [11, 11, 11, 11, 11];
    const zdt1 = (genome: Genome): number[] => {
      const x = genome.map((v) => v / 10);
      const g = 1 + (9 * x.slice(1).reduce((s, v) => s + v, 0)) / 4;
      return [x[0]!, g * (1 - Math.sqrt(x[0]! / g))];
    };
    const result = await nsga2({ cardinalities, evaluate: zdt1, populationSize: 24, generations: 60, seed: 3 });
    const expected = Array.from({ length: 11 }, (_, i) => [i / 10, 1 - Math.sqrt(i / 10)]);
    assert.deepEqual(result.front.map((f) => f.objectives), expected);
    assert.equal(result.generations, 60);
    assert.equal(result.stopped, false);
  });

  it('recovers most of the exact front of a mixed-precision-like problem (brute force over 4096 genomes)', async () => {
    // 6 layers, bits {2, 3, 4, 8}: size = Σ params·bits, error = Σ sensitivity·4^(−bits).
    const bits = [2, 3, 4, 8];
    const params = [150, 2400, 48000, 10080, 850, 300];
    const sensitivity = [8, 3, 1, 2, 5, 9];
    const cardinalities = params.map(() => bits.length);
    const evaluate = (genome: Genome): number[] => [
      genome.reduce((s, g, i) => s + sensitivity[i]! * 4 ** -bits[g]!, 0),
      genome.reduce((s, g, i) => s + params[i]! * bits[g]!, 0),
    ];
    const all = allGenomes(cardinalities).map(evaluate);
    const exact = bruteForceFront(all);
    let calls = 0;
    const result = await nsga2({
      cardinalities, evaluate: (g) => { calls++; return evaluate(g); }, populationSize: 32, generations: 40, seed: 11,
      initial: bits.map((_, v) => cardinalities.map(() => v)),
    });
    assert.equal(calls, result.evaluations, 'each distinct genome is evaluated once');
    assert.ok(result.evaluations < all.length / 2, `evaluated ${result.evaluations} of ${all.length}`);
    const found = result.front.map((f) => f.objectives.join(','));
    const hits = found.filter((k) => exact.has(k)).length;
    const ref: [number, number] = [Math.max(...all.map((p) => p[0]!)) * 1.01, Math.max(...all.map((p) => p[1]!)) * 1.01];
    const hvExact = hypervolume2d([...exact].map((k) => k.split(',').map(Number)), ref);
    const hvFound = hypervolume2d(result.front.map((f) => f.objectives), ref);
    assert.ok(hits / exact.size >= 0.8, `found ${hits} of ${exact.size} exact front points`);
    assert.ok(hvFound / hvExact >= 0.995, `hypervolume ratio ${hvFound / hvExact}`);
    // The seeded uniform genomes were evaluated and none is better than the front.
    for (let v = 0; v < bits.length; v++) {
      const u = evaluate(cardinalities.map(() => v));
      assert.ok(result.archive.some((a) => a.genome.every((g) => g === v)));
      assert.ok(result.front.some((f) => f.objectives.join(',') === u.join(',') || dominates(f.objectives, u)));
    }
  });

  it('is deterministic for a seed and different across seeds', async () => {
    const evaluate = (g: Genome): number[] => [g[0]! + g[1]!, 6 - g[0]! * g[2]!];
    const run = (seed: number) => nsga2({ cardinalities: [4, 4, 4], evaluate, populationSize: 6, generations: 3, seed });
    const a = await run(5);
    const b = await run(5);
    const c = await run(6);
    assert.deepEqual(a.archive.map((i) => i.genome), b.archive.map((i) => i.genome));
    assert.notDeepEqual(a.archive.map((i) => i.genome), c.archive.map((i) => i.genome));
  });

  it('stops when asked and keeps what it evaluated', async () => {
    let calls = 0;
    const result = await nsga2({
      cardinalities: [8, 8, 8], evaluate: (g) => { calls++; return [g[0]!, -g[1]!]; }, populationSize: 8, generations: 50, seed: 1,
      shouldStop: () => calls >= 13,
    });
    assert.equal(result.stopped, true);
    assert.equal(result.evaluations, 13);
    assert.equal(calls, 13);
    assert.ok(result.generations < 50);
    assert.ok(result.front.length > 0);
  });

  it('re-ranks with the new transform when afterGeneration says it changed', async () => {
    // Raw objective says genome [0] is best; after generation 0 the transform flips it.
    let flipped = false;
    const result = await nsga2({
      cardinalities: [5], evaluate: (g) => [g[0]!], populationSize: 5, generations: 0, seed: 0,
      transform: (_g, raw) => (flipped ? [-raw[0]!] : raw),
      afterGeneration: () => { flipped = true; return true; },
    });
    assert.deepEqual(result.front.map((i) => i.genome), [[4]]);
    assert.deepEqual(result.front[0]!.raw, [4]);
    assert.deepEqual(result.front[0]!.objectives, [-4]);
  });

  it('validates its options', async () => {
    await assert.rejects(nsga2({ cardinalities: [], evaluate: () => [0] }), /at least one gene/);
    await assert.rejects(nsga2({ cardinalities: [2, 0], evaluate: () => [0] }), /cardinalities\[1\]/);
    await assert.rejects(nsga2({ cardinalities: [2], evaluate: () => [0], populationSize: 2 }), /populationSize/);
    await assert.rejects(nsga2({ cardinalities: [2, 2], evaluate: () => [0], initial: [[0, 2]] }), /initial\[0\].*gene 1/);
    await assert.rejects(nsga2({ cardinalities: [3], evaluate: (g) => (g[0] === 2 ? [1, 2] : [1]), populationSize: 4 }), /objectives/);
  });
});
