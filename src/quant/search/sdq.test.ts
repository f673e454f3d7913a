import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SdqQuantizer, repairToBudget, sdqSearch } from './sdq.ts';
import { sizeCost, totalCost } from './costs.ts';
import { evaluateAssignmentSync } from './evaluate.ts';
import { trainedBlobMlp } from './testing.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { sum } from '../../tensor/ops.ts';
import { createQuantizer } from '../quantizers/quantizer.ts';

function randomWeight(seed: number, shape: [number, number]): Tensor {
  const rng = new Rng(seed);
  return new Tensor(Float32Array.from({ length: shape[0] * shape[1] }, () => rng.normal() * 0.3), shape);
}

describe('SdqQuantizer', () => {
  it('forward is the softmax mixture of its branches; the logit gradient is the softmax Jacobian times ⟨g, Q_k(w)⟩', () => {
    const w = randomWeight(1, [4, 6]);
    const q = new SdqQuantizer({ kind: 'sdq', bits: 8, candidates: [2, 4, 8], initBias: 0 }, { role: 'weight', shape: [4, 6], channelAxis: 0 });
    q.logits.data.set([0.3, -0.2, 0.5]);
    q.temperature = 0.7;
    const y = q.forward(w);
    const p = q.probabilities();
    const e = [0.3, -0.2, 0.5].map((v) => Math.exp(v / 0.7));
    const z = e.reduce((s, v) => s + v, 0);
    p.forEach((v, k) => assert.ok(Math.abs(v - e[k]! / z) < 1e-6));
    const branches = q.branches.map((b) => b.forward(w).data);
    for (let i = 0; i < w.size; i++) {
      const mix = branches.reduce((s, b, k) => s + p[k]! * b[i]!, 0);
      assert.ok(Math.abs(y.data[i]! - mix) < 1e-5, `element ${i}`);
    }
    // d(sum ŵ)/dθ_k = (1/τ) p_k (S_k − Σ_j p_j S_j), S_k = Σ_i Q_k(w)_i.
    sum(q.forward(w)).backward();
    const s = branches.map((b) => Array.from(b).reduce((acc, v) => acc + v, 0));
    const mean = s.reduce((acc, v, k) => acc + p[k]! * v, 0);
    s.forEach((sk, k) => {
      const expected = (p[k]! * (sk - mean)) / 0.7;
      assert.ok(Math.abs(q.logits.grad!.data[k]! - expected) < 1e-4 * Math.max(1, Math.abs(expected)), `θ_${k}: ${q.logits.grad!.data[k]} vs ${expected}`);
    });
  });

  it('is registered as a kind, weights only, and checks its candidates', () => {
    const ctx = { role: 'weight' as const, shape: [2, 3], channelAxis: 0 };
    assert.ok(createQuantizer({ kind: 'sdq', bits: 4, candidates: [2, 4] }, ctx) instanceof SdqQuantizer);
    assert.throws(() => createQuantizer({ kind: 'sdq', bits: 8, candidates: [4, 2, 8] }, ctx), /strictly increasing/);
    assert.throws(() => createQuantizer({ kind: 'sdq', bits: 4, candidates: [2, 8] }, ctx), /widest candidate/);
    assert.throws(() => createQuantizer({ kind: 'sdq', bits: 8, candidates: [2, 8] }, { role: 'activation' }), /weights only/);
    // initBias favours the widest width at the start.
    const q = createQuantizer({ kind: 'sdq', bits: 8, candidates: [2, 4, 8], initBias: 2 }, ctx) as SdqQuantizer;
    assert.deepEqual([...q.logits.data], [0, 1, 2]);
    assert.equal(q.argmax(), 2);
  });
});

describe('repairToBudget', () => {
  it('steps down where the logits lose least per unit of cost until the budget holds', () => {
    // Two layers, candidate costs [2, 4, 8]·n with n = 10 and 100; both at index 2 (cost 80 + 800 = 880).
    const cost = (l: number, c: number) => [2, 4, 8][c]! * [10, 100][l]!;
    // Layer 1 (big) is only slightly preferred at 8 over 4: it goes down first.
    const r = repairToBudget([2, 2], [[0, 0, 3], [0, 1.9, 2]], cost, 500);
    assert.deepEqual(r.choice, [2, 1]);
    assert.equal(r.cost, 480);
    assert.equal(r.withinBudget, true);
    assert.deepEqual(repairToBudget([2, 2], [[0, 0, 3], [0, 1.9, 2]], cost, 10).withinBudget, false);
    assert.deepEqual(repairToBudget([1, 0], [[0, 1, 0], [1, 0, 0]], cost, 1000).choice, [1, 0], 'already within budget: unchanged');
  });
});

describe('sdqSearch', () => {
  const size = sizeCost();
  // Layers of the blob MLP: 8·24 + 24·24 + 24·4 = 864 weights; 8 bits everywhere = 6912 bits.
  it('a tight budget drives the widths down, a loose one keeps them high', async () => {
    const tight = trainedBlobMlp(3, 100);
    const rTight = await sdqSearch(tight.model, tight.data, { cost: size, budget: 864 * 2.6, steps: 80, wBits: [2, 4, 8] });
    const loose = trainedBlobMlp(3, 100);
    const rLoose = await sdqSearch(loose.model, loose.data, { cost: size, budget: 864 * 9, steps: 80, wBits: [2, 4, 8] });
    const bits = (a: Record<string, { w: number }>) => Object.values(a).map((c) => c.w);
    assert.deepEqual(bits(rLoose.argmaxAssignment), [8, 8, 8], `loose: ${JSON.stringify(rLoose.probabilities)}`);
    assert.ok(rTight.withinBudget);
    assert.ok(rTight.cost <= 864 * 2.6);
    assert.equal(rTight.cost, totalCost(size, rTight.layers, rTight.assignment));
    assert.ok(bits(rTight.argmaxAssignment).every((b) => b <= 4), `tight argmax ${bits(rTight.argmaxAssignment)}`);
    // The expected cost came down towards the budget during training.
    assert.ok(rTight.history[0]!.expectedCost > 864 * 5);
    assert.ok(rTight.expectedCost < 864 * 3.2, `final expected cost ${rTight.expectedCost}`);
    assert.ok(rLoose.expectedCost > 864 * 6.5);
    // The learned plan is a usable assignment: PTQ on a fresh float model.
    const fresh = trainedBlobMlp(3, 100);
    const score = evaluateAssignmentSync(fresh.model, rTight.assignment, fresh.data, { method: 'ptq', calibrationSamples: 128 });
    assert.ok(score.accuracy > 0.5, `accuracy ${score.accuracy}`);
  });

  it('stops early on request and still returns an assignment', async () => {
    const { model, data } = trainedBlobMlp(4, 40);
    let n = 0;
    const r = await sdqSearch(model, data, { cost: size, budget: 864 * 3, steps: 100, shouldStop: () => ++n > 5 });
    assert.equal(r.stopped, true);
    assert.equal(r.steps, 5);
    assert.equal(Object.keys(r.assignment).length, 3);
    assert.ok(r.withinBudget);
  });

  it('validates its options', async () => {
    const { model, data } = trainedBlobMlp(5, 10);
    await assert.rejects(sdqSearch(model, data, { cost: size, budget: 0 }), /budget/);
    await assert.rejects(sdqSearch(model, { calibration: data.calibration, eval: data.eval }, { cost: size, budget: 10 }), /data.train/);
  });
});
