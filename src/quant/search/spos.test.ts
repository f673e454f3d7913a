import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import './testing.ts';
import { noGrad } from '../../autograd/engine.ts';
import { BatchNorm1d } from '../../nn/batchnorm.ts';
import { Linear } from '../../nn/linear.ts';
import { ReLU } from '../../nn/activation.ts';
import { Sequential } from '../../nn/sequential.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { calibrate } from '../ptq/calibrate.ts';
import { quantizedLayers } from '../qat/prepare.ts';
import { sizeCost, totalCost, uniformAssignment } from './costs.ts';
import { planFromAssignment } from './plan.ts';
import {
  buildSupernet, evolutionarySearch, pathCardinalities, pathToAssignment, recalibrateBatchNorm, samplePath, scoreBetter, sposSearch, trainSupernet,
} from './spos.ts';
import { blobBatches, trainedBlobMlp } from './testing.ts';

describe('spos: uniform path sampling', () => {
  it('draws every choice of every gene with its 1/K frequency (chi-square, seed 0)', () => {
    const cards = [4, 4, 3, 6, 2];
    const n = 6000;
    const counts = cards.map((k) => new Array<number>(k).fill(0));
    const rng = new Rng(0);
    for (let i = 0; i < n; i++) samplePath(cards, rng).forEach((g, j) => counts[j]![g]!++);
    cards.forEach((k, j) => {
      const expected = n / k;
      const chi2 = counts[j]!.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
      // 99.9 % quantiles of chi-square with k − 1 degrees of freedom (1: 10.83, 2: 13.82, 3: 16.27, 5: 20.52).
      const bound = ({ 2: 10.83, 3: 13.82, 4: 16.27, 6: 20.52 } as Record<number, number>)[k]!;
      assert.ok(chi2 < bound, `gene ${j}: chi-square ${chi2.toFixed(2)} >= ${bound} (counts ${counts[j]!.join(', ')})`);
      assert.ok(counts[j]!.every((c) => c > 0));
    });
  });

  it('trainSupernet samples paths uniformly too (counts per choice, the same chi-square bound)', async () => {
    const { model, data } = trainedBlobMlp(0, 60);
    const supernet = buildSupernet(model, data.calibration, { wBits: [2, 3, 4, 8], aBits: [4, 8] });
    const r = await trainSupernet(supernet, data.train, { steps: 240, lr: 1e-4, seed: 3, rescaleEvery: 0 });
    assert.equal(r.steps, 240);
    r.counts.forEach((counts) => {
      const k = counts.length;
      const expected = 240 / k;
      const chi2 = counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
      assert.ok(chi2 < (k === 4 ? 16.27 : 10.83), `counts ${counts.join(', ')}: chi-square ${chi2.toFixed(2)}`);
    });
  });
});

describe('spos: supernet', () => {
  it('a fixed path of the trained supernet equals the plain fake-quant model of its plan, exactly', async () => {
    const { model, data } = trainedBlobMlp(0, 60);
    const supernet = buildSupernet(model, data.calibration, { wBits: [2, 3, 4, 8], aBits: [3, 8] });
    await trainSupernet(supernet, data.train, { steps: 30, lr: 1e-3, seed: 1, rescaleEvery: 10 });
    const rng = new Rng(7);
    const x = [...data.eval][0]!.x;
    for (let trial = 0; trial < 4; trial++) {
      const path = samplePath(pathCardinalities(supernet.space), rng);
      supernet.setPath(path);
      const assignment = pathToAssignment(supernet.space, path);
      const plain = trainedBlobMlp(0, 60).model;  // same architecture; the supernet's shared float weights copied in
      for (const { name, layer } of quantizedLayers(model)) {
        const target = plain.getSubmodule(name) as Linear;
        target.weight.data.set(layer.weight.data);
        target.bias!.data.set(layer.bias!.data);
      }
      calibrate(plain, data.calibration, { plan: planFromAssignment(assignment, { firstLayer: supernet.space.layers[0]!.name }), samples: 512 });
      const a = noGrad(() => model.forward(x));
      const b = noGrad(() => plain.forward(x));
      assert.deepEqual([...a.data], [...b.data], `path [${path.join(', ')}]`);
    }
    // And the weights did move (a supernet that did not train would pass the above trivially for untrained weights too).
    const fresh = trainedBlobMlp(0, 60).model;
    assert.notDeepEqual([...(fresh.getSubmodule('0') as Linear).weight.data], [...quantizedLayers(model)[0]!.layer.weight.data]);
  });

  it('different widths give different outputs, and the widest path is close to the float model', () => {
    const { model, data } = trainedBlobMlp(0, 60);
    const float = noGrad(() => model.forward([...data.eval][0]!.x));
    const supernet = buildSupernet(model, data.calibration, { wBits: [2, 8] });
    const x = [...data.eval][0]!.x;
    supernet.setPath([0, 0, 0]);
    const low = noGrad(() => model.forward(x));
    supernet.setPath([1, 1, 1]);
    const high = noGrad(() => model.forward(x));
    const err = (t: Tensor): number => Math.max(...[...t.data].map((v, i) => Math.abs(v - float.data[i]!)));
    assert.ok(err(high) < err(low) / 4, `8-bit error ${err(high)} vs 2-bit ${err(low)}`);
    assert.throws(() => supernet.setPath([2, 0, 0]), /setPath/);
  });
});

describe('spos: batch-norm recalibration', () => {
  it('sets running mean / var to the average of the exact per-batch mean and unbiased variance', () => {
    const rng = new Rng(5);
    const model = new Sequential(new Linear(8, 6, { rng }), new BatchNorm1d(6), new ReLU(), new Linear(6, 4, { rng }));
    const batches = blobBatches(rng, 3, 16).map((b) => b.x);
    model.eval();
    const bn = model.getSubmodule('1') as BatchNorm1d;
    const n = recalibrateBatchNorm(model, batches);
    assert.equal(n, 1);
    assert.equal(bn.momentum, 0.1, 'momentum restored');
    assert.equal(model.training, false);
    const lin = model.getSubmodule('0') as Linear;
    const mean = new Float64Array(6);
    const variance = new Float64Array(6);
    for (const x of batches) {
      const h = noGrad(() => lin.forward(x));
      const rows = x.shape[0]!;
      for (let c = 0; c < 6; c++) {
        let m = 0;
        for (let r = 0; r < rows; r++) m += h.data[r * 6 + c]!;
        m /= rows;
        let v = 0;
        for (let r = 0; r < rows; r++) v += (h.data[r * 6 + c]! - m) ** 2;
        mean[c]! += m / batches.length;
        variance[c]! += v / (rows - 1) / batches.length;
      }
    }
    for (let c = 0; c < 6; c++) {
      assert.ok(Math.abs(bn.runningMean!.data[c]! - mean[c]!) < 1e-5 * (1 + Math.abs(mean[c]!)), `mean ${c}: ${bn.runningMean!.data[c]} vs ${mean[c]}`);
      assert.ok(Math.abs(bn.runningVar!.data[c]! - variance[c]!) < 1e-5 * (1 + variance[c]!), `var ${c}: ${bn.runningVar!.data[c]} vs ${variance[c]}`);
    }
    // Recalibrating twice gives the same statistics (no memory of the earlier ones).
    const first = [...bn.runningMean!.data];
    recalibrateBatchNorm(model, batches);
    assert.deepEqual([...bn.runningMean!.data], first);
  });

  it('is a no-op on a model without BatchNorm', () => {
    const { model, data } = trainedBlobMlp(0, 10);
    assert.equal(recalibrateBatchNorm(model, [[...data.eval][0]!.x]), 0);
  });
});

describe('spos: evolutionary search', () => {
  it('never evaluates or returns a genome over budget (random instances)', async () => {
    const rng = new Rng(11);
    for (let instance = 0; instance < 12; instance++) {
      const genes = 3 + rng.int(5);
      const cards = Array.from({ length: genes }, () => 2 + rng.int(4));
      const cost = cards.map((k) => Array.from({ length: k }, (_, j) => (j + 1) * (1 + rng.int(9))));
      const value = cards.map((k) => Array.from({ length: k }, () => rng.uniform()));
      const total = (g: readonly number[]): number => g.reduce((s, c, i) => s + cost[i]![c]!, 0);
      const cheapest = total(cards.map(() => 0));
      const dearest = total(cards.map((k) => k - 1));
      const budget = cheapest + (dearest - cheapest) * (0.1 + 0.5 * rng.uniform());
      const fits = (g: readonly number[]): boolean => total(g) <= budget;
      const r = await evolutionarySearch({
        cardinalities: cards, fits, seed: instance, population: 12, topK: 4, iterations: 5,
        evaluate: (g) => [g.reduce((s, c, i) => s + value[i]![c]!, 0) + 3 * total(g) / dearest],  // rewards spending: pushes to the budget's edge
      });
      assert.ok(r.evaluated.length > 0);
      for (const e of r.evaluated) assert.ok(total(e.genome) <= budget, `instance ${instance}: evaluated [${e.genome.join(', ')}] costs ${total(e.genome)} > ${budget}`);
      assert.ok(total(r.best.genome) <= budget);
      const keys = r.evaluated.map((e) => e.genome.join(','));
      assert.equal(new Set(keys).size, keys.length, 'no genome is evaluated twice');
    }
  });

  it('finds the known best path of a LeNet-5-shaped synthetic problem (5 layers, widths {2, 3, 4, 8}, size of uniform 3 bits)', async () => {
    const bits = [2, 3, 4, 8];
    const rng = new Rng(1);
    const counts = Array.from({ length: 5 }, () => Math.round(150 * 2 ** (rng.uniform() * 8)));
    const sensitivity = Array.from({ length: 5 }, () => 2 ** (rng.uniform() * 8 - 4));
    // "accuracy" = −Σ s_l·4^−(b_l − 2): each layer's quantization noise power times a known sensitivity.
    const value = (g: readonly number[]): number => -g.reduce((s, k, l) => s + sensitivity[l]! * 4 ** -(bits[k]! - 2), 0);
    const cost = (g: readonly number[]): number => g.reduce((s, k, l) => s + counts[l]! * bits[k]!, 0);
    const budget = counts.reduce((s, c) => s + 3 * c, 0);
    let best = -Infinity;
    let feasible = 0;
    for (let i = 0; i < 4 ** 5; i++) {
      const g = Array.from({ length: 5 }, (_, l) => Math.floor(i / 4 ** l) % 4);
      if (cost(g) > budget) continue;
      feasible++;
      best = Math.max(best, value(g));
    }
    assert.ok(best > value([1, 1, 1, 1, 1]), 'the optimum is not uniform 3 bits');
    for (const seed of [0, 1, 2]) {
      const r = await evolutionarySearch({ cardinalities: [4, 4, 4, 4, 4], fits: (g) => cost(g) <= budget, evaluate: (g) => [value(g)], seed, population: 12, topK: 6, iterations: 6 });
      assert.equal(r.best.score[0], best, `seed ${seed}`);
      assert.ok(r.evaluated.length < feasible / 2, `seed ${seed}: ${r.evaluated.length} evaluations of ${feasible} feasible paths`);
    }
  });

  it('compares scores lexicographically and refuses bad options', async () => {
    assert.equal(scoreBetter([0.9, -1], [0.9, -2]), true);
    assert.equal(scoreBetter([0.9, -2], [0.9, -1]), false);
    assert.equal(scoreBetter([0.8, 0], [0.9, -5]), false);
    await assert.rejects(evolutionarySearch({ cardinalities: [2], fits: () => true, evaluate: () => [0], topK: 0 }), /topK/);
    await assert.rejects(evolutionarySearch({ cardinalities: [2, 2], fits: () => false, evaluate: () => [0] }), /no genome that fits/);
  });
});

describe('spos: end to end', () => {
  it('sposSearch returns a within-budget plan scored with the inherited weights', async () => {
    const { model, data } = trainedBlobMlp(0, 80);
    const layers = buildSupernet(trainedBlobMlp(0, 1).model, data.calibration).space.layers;
    const size = sizeCost();
    const budget = totalCost(size, layers, uniformAssignment(layers, 3, 8));
    const r = await sposSearch(model, data, {
      budgets: [{ cost: size, value: budget }], wBits: [2, 3, 4, 8], training: { steps: 40, lr: 1e-3 },
      evolution: { population: 10, topK: 4, iterations: 3 }, seed: 0,
    });
    assert.ok(r.chosen.costs['size']! <= budget);
    for (const c of r.candidates.filter((c) => c.uniform === undefined)) assert.ok(c.costs['size']! <= budget);
    assert.equal(r.uniform.length, 4);
    assert.ok(r.chosen.accuracy >= Math.max(...r.candidates.filter((c) => !c.uniform).map((c) => c.accuracy)));
    assert.ok(r.chosen.accuracy > 0.8, `inherited accuracy ${r.chosen.accuracy}`);
    assert.equal(r.trainSteps, 40);
  });
});
