import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { grad, noGrad } from '../../autograd/engine.ts';
import { Rng, Tensor, manualSeed, randn, sum, crossEntropy } from '../../tensor/index.ts';
import { Module, type TensorModule } from '../module.ts';
import { Linear } from '../linear.ts';
import { ReLU } from '../activation.ts';
import { mlp } from '../models/mlp.ts';
import { lenet5 } from '../models/lenet5.ts';
import { Adam } from '../../optim/index.ts';
import { prepareQat } from '../../quant/qat/index.ts';
import { qconfigFor } from '../../quant/config/qconfig.ts';
import { compareWithFakeQuant, convert } from '../../runtime/index.ts';
import { bernoulliKl, gaussianKl, GatedUnits, relaxedBernoulli, THETA_EPS } from './gate.ts';
import { finalizePruned, layerChain, layerSizes, PruneError, shapeLike } from './structure.ts';
import { isGated, VariationalPruner } from './pruner.ts';

function f64(values: readonly number[], shape = [values.length]): Tensor {
  return new Tensor(Float64Array.from(values), shape);
}

function gatedLayer(model: Module, path: string): GatedUnits {
  const m = model.getSubmodule(path);
  assert.ok(m instanceof GatedUnits, `${path} is gated`);
  return m;
}

/** Eval-mode forward without a graph, as a plain array. */
function evalOut(model: TensorModule, x: Tensor): number[] {
  model.eval();
  return Array.from(noGrad(() => model.forward(x)).data);
}

describe('relaxed Bernoulli gates', () => {
  const u = f64([0.13, 0.5, 0.91, 0.37, 0.02, 0.66], [2, 3]);

  it('gradient in θ matches float64 central differences and the closed form z(1 − z)/τ · (1 − 2ε)/(θ′(1 − θ′))', () => {
    for (const tau of [0.5, 2]) {
      const theta = f64([0.2, 0.55, 0.97]).requiresGrad_(true);
      const r = gradcheck((t) => relaxedBernoulli(t, u, tau, [1, 3]), [theta]);
      assert.ok(r.maxRelativeError < 1e-7, `τ=${tau}: relative error ${r.maxRelativeError}`);
      const z = relaxedBernoulli(theta, u, tau, [1, 3]);
      const [g] = grad(sum(z), [theta]);
      for (let i = 0; i < 3; i++) {
        const t = THETA_EPS + (1 - 2 * THETA_EPS) * theta.data[i]!;
        let expected = 0;
        for (let b = 0; b < 2; b++) {
          const zi = z.data[b * 3 + i]!;
          expected += (zi * (1 - zi)) / tau * (1 - 2 * THETA_EPS) / (t * (1 - t));
        }
        assert.ok(Math.abs(g!.data[i]! - expected) < 1e-12 * (1 + Math.abs(expected)), `unit ${i}: ${g!.data[i]} vs ${expected}`);
      }
    }
  });

  it('as τ → 0 the sample is the Bernoulli draw 1[θ > 1 − u]', () => {
    const theta = f64([0.2, 0.55, 0.97]);
    const z = relaxedBernoulli(theta, u, 1e-4, [1, 3]);
    for (let b = 0; b < 2; b++) {
      for (let i = 0; i < 3; i++) assert.equal(Math.round(z.data[b * 3 + i]!), theta.data[i]! > 1 - u.data[b * 3 + i]! ? 1 : 0);
    }
  });

  it('the empirical mean of hard draws (τ small) over uniform noise is θ', () => {
    const rng = new Rng(7);
    const n = 20000;
    const noise = new Float64Array(n * 2);
    for (let i = 0; i < noise.length; i++) noise[i] = Math.min(1 - 1e-12, Math.max(1e-12, rng.uniform()));
    const z = relaxedBernoulli(f64([0.3, 0.8]), new Tensor(noise, [n, 2]), 1e-3, [1, 2]);
    const means = [0, 0];
    for (let i = 0; i < n; i++) for (let j = 0; j < 2; j++) means[j]! += z.data[i * 2 + j]! / n;
    assert.ok(Math.abs(means[0]! - 0.3) < 0.015 && Math.abs(means[1]! - 0.8) < 0.015, `means ${means}`);
  });
});

describe('ELBO prior terms', () => {
  const normal = (w: number, m: number, v: number): number => Math.exp(-((w - m) ** 2) / (2 * v)) / Math.sqrt(2 * Math.PI * v);

  it('gaussianKl equals the KL of N(μ, s²I) to N(0, σ²I) by quadrature', () => {
    const mu = [0.3, -0.1, 0.05];
    const sigma2 = 0.2;
    const s2 = 0.01;
    let quad = 0;
    for (const m of mu) {
      const h = 1e-4;
      for (let w = m - 12 * Math.sqrt(s2); w <= m + 12 * Math.sqrt(s2); w += h) {
        const q = normal(w, m, s2);
        quad += q * Math.log(q / normal(w, 0, sigma2)) * h;
      }
    }
    const closed = gaussianKl(f64([mu.reduce((a, b) => a + b * b, 0)]), 3, sigma2, s2).data[0]!;
    assert.ok(Math.abs(closed - quad) < 1e-6, `closed ${closed} vs quadrature ${quad}`);
  });

  it('the spike-and-slab KL with q(w | ξ=0) = p(w | ξ=0) is KL(Bern θ ‖ Bern λ) + θ·KL(slab), by quadrature over (w, ξ)', () => {
    const [theta, lambda, mu, sigma2, s2, spike] = [0.7, 0.2, 0.4, 0.5, 0.02, 1e-3];
    let quad = 0;
    const h = 2e-5;
    for (let w = -3; w <= 3; w += h) {
      const q1 = theta * normal(w, mu, s2);
      const p1 = lambda * normal(w, 0, sigma2);
      const q0 = (1 - theta) * normal(w, 0, spike);
      const p0 = (1 - lambda) * normal(w, 0, spike);
      if (q1 > 0) quad += q1 * Math.log(q1 / p1) * h;
      if (q0 > 0) quad += q0 * Math.log(q0 / p0) * h;
    }
    const closed = bernoulliKl(f64([theta]), lambda).data[0]! + theta * gaussianKl(f64([mu * mu]), 1, sigma2, s2).data[0]!;
    assert.ok(Math.abs(closed - quad) < 1e-5, `closed ${closed} vs quadrature ${quad}`);
  });

  it('KL(Bern θ ‖ Bern λ) is 0 at λ = θ and positive elsewhere (why a flat hyper-prior on λ removes it)', () => {
    for (const theta of [0.1, 0.5, 0.93]) {
      assert.ok(Math.abs(bernoulliKl(f64([theta]), theta).data[0]!) < 1e-9);
      for (const lambda of [0.05, 0.3, 0.7, 0.99]) if (Math.abs(lambda - theta) > 0.01) assert.ok(bernoulliKl(f64([theta]), lambda).data[0]! > 0);
    }
  });

  it("priorVariance 'learned' is the σ² that minimises the penalty (finite differences)", () => {
    manualSeed(3);
    const model = mlp({ inputSize: 6, hidden: [5], numClasses: 2 });
    const pruner = new VariationalPruner(model, { datasetSize: 100, inputShape: [6], priorVariance: 'learned', posteriorStd: 0.05 });
    const g = gatedLayer(model, '1');
    g.theta.data.set([0.9, 0.2, 0.6, 1, 0.4]);
    pruner.updatePriorVariance();
    const best = pruner.sigma2Of('1');
    const at = (v: number): number => noGrad(() => {
      pruner.sigma2.set('1', v);
      return pruner.penalty().item();
    });
    const f0 = at(best);
    assert.ok(at(best * 1.01) > f0 && at(best * 0.99) > f0, 'a minimum');
    const slope = (at(best * (1 + 1e-5)) - at(best * (1 - 1e-5))) / (2e-5 * best);
    assert.ok(Math.abs(slope * best) < 1e-6 * Math.abs(f0) + 1e-9, `dP/dσ² = ${slope}`);
  });
});

describe('removing units during training', () => {
  it('LeNet-300-100 shape: removing units whose eval gate is 0 leaves the eval function unchanged and moves Adam state exactly', () => {
    manualSeed(11);
    const model = mlp({ inputSize: 12, hidden: [8, 6], numClasses: 3 });
    const pruner = new VariationalPruner(model, { datasetSize: 50, inputShape: [12], pruneThreshold: 0.05 });
    const adam = new Adam(pruner.weightParameters(), { lr: 1e-2 });
    const opt = pruner.wrap(adam);
    const x = randn([4, 12]);
    model.train();
    pruner.lossFn()(model.forward(x), new Tensor(Int32Array.from([0, 1, 2, 0]), [4])).backward();
    opt.step();
    opt.zeroGrad();
    gatedLayer(model, '1').theta.data.set([1, 0.01, 0.9, 0, 0.7, 0.02, 1, 0.6]);
    gatedLayer(model, '3').theta.data.set([0.8, 0.001, 1, 1, 0.03, 0.9]);
    const fc2Before = (gatedLayer(model, '3').layer as Linear).weight;
    const m2Before = Array.from(adam.stateOf(fc2Before)!.expAvg);
    const before = evalOut(model, x);
    assert.equal(pruner.pruneNow(adam), 5);
    assert.deepEqual(evalOut(model, x), before);
    assert.deepEqual(layerSizes(model, [12]).map((s) => s.units), [5, 4, 3]);
    // fc2 lost inputs 1, 3, 5 and outputs 1, 4: its moments follow its weights.
    const fc2 = (gatedLayer(model, '3').layer as Linear).weight;
    assert.deepEqual(fc2.shape, [4, 5]);
    const keptOut = [0, 2, 3, 5];
    const keptIn = [0, 2, 4, 6, 7];
    const m2 = adam.stateOf(fc2)!.expAvg;
    keptOut.forEach((r, i) => keptIn.forEach((c, j) => assert.equal(m2[i * 5 + j], m2Before[r * 8 + c])));
    assert.ok(adam.paramGroups[0]!.params.includes(fc2) && !adam.paramGroups[0]!.params.includes(fc2Before));
    // Training goes on with the smaller tensors.
    model.train();
    pruner.lossFn()(model.forward(x), new Tensor(Int32Array.from([0, 1, 2, 0]), [4])).backward();
    opt.step();
    assert.equal(adam.stateOf(fc2)!.step, 2);
  });

  it('LeNet-5: removing conv filters (through pooling and Flatten) leaves the eval function unchanged', () => {
    manualSeed(5);
    const model = lenet5();
    const pruner = new VariationalPruner(model, { datasetSize: 100, inputShape: [1, 28, 28] });
    const conv1 = gatedLayer(model, 'conv1');
    const conv2 = gatedLayer(model, 'conv2');
    conv1.theta.data.set([1, 0, 0.9, 0.004, 1, 1]);
    conv2.theta.data.fill(1);
    conv2.theta.data.set([0, 0.001], 3);
    gatedLayer(model, 'fc1').theta.data[7] = 0;
    const x = randn([2, 1, 28, 28]);
    const before = evalOut(model, x);
    assert.equal(pruner.pruneNow(), 5);
    const after = evalOut(model, x);
    after.forEach((v, i) => assert.ok(Math.abs(v - before[i]!) <= 1e-6 * (1 + Math.abs(before[i]!)), `logit ${i}: ${v} vs ${before[i]}`));
    assert.deepEqual(layerSizes(model, [1, 28, 28]).map((s) => [s.path, s.units, s.params]), [
      ['conv1', 4, 4 * 26], ['conv2', 14, 14 * (4 * 25 + 1)], ['fc1', 119, 119 * (14 * 25 + 1)], ['fc2', 84, 84 * 120], ['fc3', 10, 850],
    ]);
  });
});

describe('the final deterministic network', () => {
  it('finalizePruned: a plain model (no gates) whose forward equals the gated model with gates 1[θ ≥ 0.5]', () => {
    manualSeed(2);
    const model = mlp({ inputSize: 10, hidden: [7, 5], numClasses: 4 });
    new VariationalPruner(model, { datasetSize: 10, inputShape: [10] });
    gatedLayer(model, '1').theta.data.set([0.3, 0.7, 1, 0.49, 0.5, 0.95, 0.2]);
    gatedLayer(model, '3').theta.data.set([0.8, 0.1, 1, 0.6, 0.45]);
    const x = randn([3, 10]);
    const gatedOut = evalOut(model, x);
    finalizePruned(model);
    assert.equal(isGated(model), false);
    assert.deepEqual(layerChain(model).filter((e) => e.module instanceof Linear).map((e) => (e.module as Linear).weight.shape), [[4, 10], [3, 4], [4, 3]]);
    const out = evalOut(model, x);
    out.forEach((v, i) => assert.ok(Math.abs(v - gatedOut[i]!) <= 1e-6 * (1 + Math.abs(gatedOut[i]!)), `${v} vs ${gatedOut[i]}`));
  });

  it('finalizePruned on a layer whose every gate is off: terminates, keeps one zeroed unit, same eval function', () => {
    manualSeed(8);
    const model = mlp({ inputSize: 5, hidden: [4, 3], numClasses: 2 });
    new VariationalPruner(model, { datasetSize: 10, inputShape: [5] });
    gatedLayer(model, '1').theta.data.set([0.2, 0.1, 0.4, 0]);
    gatedLayer(model, '3').theta.data.set([1, 0.3, 0.9]);
    const x = randn([3, 5]);
    const gatedOut = evalOut(model, x);
    finalizePruned(model);
    assert.deepEqual(layerSizes(model, [5]).map((l) => l.units), [1, 2, 2]);
    const out = evalOut(model, x);
    out.forEach((v, i) => assert.ok(Math.abs(v - gatedOut[i]!) <= 1e-6 * (1 + Math.abs(gatedOut[i]!)), `${v} vs ${gatedOut[i]}`));
  });

  it('shapeLike: a pruned LeNet-5 checkpoint loads (strict) into a fresh nn.lenet5() and computes the same function', () => {
    manualSeed(4);
    const model = lenet5();
    new VariationalPruner(model, { datasetSize: 10, inputShape: [1, 28, 28] });
    for (const e of layerChain(model)) {
      if (e.module instanceof GatedUnits) e.module.theta.data.forEach((_, i, t) => { t[i] = i % 3 === 1 ? 0.2 : 0.9; });
    }
    finalizePruned(model);
    const checkpoint = model.stateDict();
    const fresh = shapeLike(lenet5(), checkpoint);
    fresh.loadStateDict(checkpoint);
    assert.deepEqual(layerSizes(fresh, [1, 28, 28]).map((l) => l.units), layerSizes(model, [1, 28, 28]).map((l) => l.units));
    const x = randn([2, 1, 28, 28]);
    assert.deepEqual(evalOut(fresh, x), evalOut(model, x));
    // Without it the load fails on the shapes; a wider checkpoint is refused by name.
    assert.throws(() => lenet5().loadStateDict(checkpoint), /shape/);
    assert.throws(() => shapeLike(model, lenet5().stateDict()), (e: Error) => e instanceof PruneError && /conv1\.weight' has 6 output units, the model's layer has 4/.test(e.message));
  });

  it('a pruned LeNet-5 converts through prepareQat / convert (W8A8) and agrees with its fake-quant simulation', () => {
    manualSeed(4);
    const model = lenet5();
    new VariationalPruner(model, { datasetSize: 100, inputShape: [1, 28, 28] });
    gatedLayer(model, 'conv1').theta.data.set([1, 0, 1, 1, 0.1, 1]);
    gatedLayer(model, 'conv2').theta.data.set([1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1]);
    gatedLayer(model, 'fc2').theta.data.fill(0, 0, 40);
    finalizePruned(model);
    prepareQat(model, { default: qconfigFor('w8a8', 'ste') });
    model.train();
    const x = randn([16, 1, 28, 28]);
    noGrad(() => model.forward(x));
    model.eval();
    const im = convert(model, { sample: x, minAgreement: 0 });
    const r = compareWithFakeQuant(model, im, x);
    assert.deepEqual(Object.keys(r.layerMaxDiff), ['conv1', 'conv2', 'fc1', 'fc2', 'fc3']);
    assert.equal(r.argmaxAgreementFloat64, 1);
    assert.ok(r.maxLogitLsb <= 1, `${r.maxLogitLsb} LSB`);
    assert.equal(im.run(x).length, 16 * 10);
  });
});

describe('VariationalPruner options and models refused', () => {
  const base = { datasetSize: 10, inputShape: [6] };
  const small = (): TensorModule => mlp({ inputSize: 6, hidden: [4], numClasses: 2 });
  it('bad numbers', () => {
    assert.throws(() => new VariationalPruner(small(), { ...base, datasetSize: 0 }), PruneError);
    assert.throws(() => new VariationalPruner(small(), { ...base, thetaLr: -1 }), /thetaLr/);
    assert.throws(() => new VariationalPruner(small(), { ...base, priorInclusion: 1 }), /priorInclusion/);
    assert.throws(() => new VariationalPruner(small(), { ...base, pruneThreshold: 0.7 }), /pruneThreshold/);
    assert.throws(() => new VariationalPruner(small(), { ...base, initialTheta: 0 }), /initialTheta/);
    assert.throws(() => new VariationalPruner(small(), { ...base, temperature: 0 }), /temperature/);
    assert.throws(() => new VariationalPruner(small(), { ...base, pruneEvery: 1.5 }), /pruneEvery/);
    assert.throws(() => new VariationalPruner(small(), { ...base, inputShape: [0] }), /inputShape/);
  });
  it('models the method does not fit', () => {
    assert.throws(() => new VariationalPruner(mlp({ inputSize: 6, hidden: [4], numClasses: 2, batchNorm: true }), base), /BatchNorm1d/);
    assert.throws(() => new VariationalPruner(small(), { ...base, layers: ['2'] }), /not prunable: 2/);
    assert.throws(() => new VariationalPruner(new Linear(6, 2), base), /no layers|at least two/);
    class Shuffled extends Module {
      readonly a = this.registerModule('a', new Linear(6, 6));
      readonly r = this.registerModule('r', new ReLU());
      readonly b = this.registerModule('b', new Linear(6, 2));
      forward(x: Tensor): Tensor {
        return this.b.forward(this.r.forward(this.a.forward(this.a.forward(x))));
      }
    }
    assert.throws(() => new VariationalPruner(new Shuffled(), base), /not the chain of its layers/);
  });
  it('an optimizer over θ', () => {
    const model = small();
    const pruner = new VariationalPruner(model, base);
    assert.throws(() => pruner.wrap(new Adam(model.parameters())), /weightParameters/);
  });
});

describe('learning and pruning together (tiny problem)', () => {
  it('a 2-class problem that needs 2 of 24 hidden units: units are removed during training and accuracy stays high', () => {
    manualSeed(9);
    const rng = new Rng(9);
    const n = 256;
    const xs = new Float32Array(n * 4);
    const ys = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < 4; j++) xs[i * 4 + j] = rng.normal();
      ys[i] = xs[i * 4]! + 0.5 * xs[i * 4 + 1]! > 0 ? 1 : 0;
    }
    const x = new Tensor(xs, [n, 4]);
    const y = new Tensor(ys, [n]);
    const model = mlp({ inputSize: 4, hidden: [24], numClasses: 2 });
    const pruner = new VariationalPruner(model, { datasetSize: n, inputShape: [4], posteriorStd: 0.02, thetaLr: 0.2, pruneEvery: 20 });
    const opt = pruner.wrap(new Adam(pruner.weightParameters(), { lr: 0.02 }));
    const loss = pruner.lossFn();
    model.train();
    for (let step = 0; step < 300; step++) {
      loss(model.forward(x), y).backward();
      opt.step();
      opt.zeroGrad();
    }
    const units = layerSizes(model, [4])[0]!.units;
    assert.ok(pruner.events.length > 0 && units < 12, `hidden units left: ${units}`);
    finalizePruned(model);
    model.eval();
    const logits = noGrad(() => model.forward(x));
    let correct = 0;
    for (let i = 0; i < n; i++) if ((logits.data[i * 2 + 1]! > logits.data[i * 2]! ? 1 : 0) === ys[i]) correct++;
    assert.ok(correct / n > 0.95, `accuracy ${correct / n}`);
    assert.ok(crossEntropy(logits, y).item() < 0.3);
  });
});
