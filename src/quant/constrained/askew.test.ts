import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, randn, Rng, manualSeed, crossEntropy } from '../../tensor/index.ts';
import { mlp } from '../../nn/index.ts';
import { SGD } from '../../optim/sgd.ts';
import { AskewSGD, askewEpsilon, askewParamGroups, decayFor } from './askew.ts';
import { fitScaleExact, makeTable, nearestLevel } from './tables.ts';

/** An AskewSGD over one parameter whose scale is forced to `scale` (via its state dict). */
function withScale(p: Tensor, scale: number, options: ConstructorParameters<typeof AskewSGD>[1]): AskewSGD {
  const opt = new AskewSGD([p], options);
  const sd = opt.stateDict();
  sd.state.set(0, { step: 0, scale: new Tensor(new Float32Array(p.size).fill(scale), p.shape) });
  opt.loadStateDict(sd);
  return opt;
}

describe('constrained/askew: AskewSGD update rule', () => {
  it('feasible iterates take exactly the SGD (momentum) step', () => {
    const a = randn([6, 5], { rng: new Rng(1) }).requiresGrad_();
    const b = a.clone().requiresGrad_();
    // epsilon0 = 100 keeps every weight inside its interval.
    const askew = new AskewSGD([a], { lr: 0.03, momentum: 0.9, weightDecay: 1e-3, epsilon0: 100, decay: 1 });
    const sgd = new SGD([b], { lr: 0.03, momentum: 0.9, weightDecay: 1e-3 });
    const rng = new Rng(2);
    for (let step = 0; step < 5; step++) {
      const g = randn([6, 5], { rng });
      a.grad = g;
      b.grad = g.clone();
      askew.step();
      sgd.step();
      assert.deepEqual(a.data, b.data, `step ${step}`);
    }
  });

  it('infeasible iterates follow the skewed direction (hand-computed)', () => {
    // Ternary levels, α = 1, ε = 0.05, lr = 0.1, κ = 2.
    const w = tensor([0.9, 0.9, 0.3, 2.0, 1.02]).requiresGrad_();
    w.grad = tensor([0.3, -0.5, 0.1, 0, 0.2]);
    const opt = withScale(w, 1, { lr: 0.1, pull: 2, epsilon0: 0.05, decay: 1, table: 'ternary' });
    opt.step();
    // w=0.9, g=0.3: d=−0.1, ψ=0.0025−0.01=−0.0075, ψ'=0.2, λ=(0.2·0.3+2·0.0075)/0.04=1.875,
    //   v=−0.3+1.875·0.2=0.075 → 0.9075.
    // w=0.9, g=−0.5: λ=max(0,(−0.1+0.015)/0.04)=0 → SGD → 0.95.
    // w=0.3, g=0.1: d=0.3, ψ=−0.0875, ψ'=−0.6, λ=(−0.06+0.175)/0.36, v=−0.1−0.6λ=−0.291667 → 0.2708333.
    // w=2.0 (beyond the last level), g=0: d=1, ψ=−0.9975, ψ'=−2, λ=0.49875, v=−0.9975 → 1.90025.
    // w=1.02, g=0.2: |d|=0.02 ≤ ε, feasible → SGD → 1.0.
    const expected = [0.9075, 0.95, 0.3 - 0.1 * (0.1 + 0.6 * ((0.175 - 0.06) / 0.36)), 1.90025, 1.0];
    w.data.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-6, `w[${i}] = ${v}, expected ${expected[i]}`));
    // The skewed velocity has the closed form −κ(d² − ε²)/(2d) whenever λ > 0.
    assert.ok(Math.abs(expected[2]! - (0.3 + 0.1 * (-2 * (0.09 - 0.0025)) / 0.6)) < 1e-12);
  });

  it('ε anneals geometrically per step and snaps to 0 below epsilonMin', () => {
    const hyper = { epsilon0: 0.5, decay: 0.5, epsilonMin: 0.1 };
    assert.deepEqual([0, 1, 2, 3].map((k) => askewEpsilon(hyper, k)), [0.5, 0.25, 0.125, 0]);
    const d = decayFor(100, 0.5, 1e-3);
    assert.ok(Math.abs(0.5 * d ** 100 - 1e-3) < 1e-12);
    const w = tensor([0.1, 0.2]).requiresGrad_();
    const opt = new AskewSGD([w], { epsilon0: 0.5, decay: 0.5, epsilonMin: 0.1 });
    assert.equal(opt.epsilon(), 0.5);
    w.grad = tensor([0, 0]);
    opt.step();
    assert.equal(opt.epsilon(), 0.25);
  });

  it('warm-up: ε = ∞ (plain SGD, no scale yet) for warmupSteps, then α is fitted to the weights of that moment', () => {
    const w = randn([2, 8], { rng: new Rng(9) }).requiresGrad_();
    const opt = new AskewSGD([w], { lr: 0.1, warmupSteps: 2, epsilon0: 0.4, decay: 0.5 });
    assert.equal(opt.epsilon(), Infinity);
    for (let k = 0; k < 2; k++) {
      w.grad = randn([2, 8], { rng: new Rng(10 + k) });
      opt.step();
    }
    assert.equal(opt.stateOf(w)!.scale, undefined);
    assert.ok(Number.isNaN(opt.distanceToGrid().max));
    assert.equal(opt.epsilon(), 0.4);
    const atFit = w.data.slice();
    w.grad = tensor(new Float32Array(16), [2, 8]);
    opt.step();
    const expected = Math.fround(fitScaleExact(atFit.subarray(0, 8), makeTable('ternary')).alpha);
    assert.equal(opt.stateOf(w)!.scale![0], expected);
    assert.equal(opt.epsilon(), 0.2);
  });

  it('scale α per output channel is fitted to the initial weights', () => {
    const w = randn([3, 16], { rng: new Rng(4) }).requiresGrad_();
    for (let i = 16; i < 32; i++) w.data[i] = w.data[i]! * 5;
    const initial = w.data.slice();
    const opt = new AskewSGD([w], { bits: 3, lr: 0 });
    w.grad = tensor(new Float32Array(48), [3, 16]);
    opt.step();
    const layers = opt.finalize();
    for (let c = 0; c < 3; c++) {
      const expected = fitScaleExact(initial.subarray(c * 16, (c + 1) * 16), makeTable({ bits: 3 })).alpha;
      assert.ok(Math.abs(layers[0]!.alpha[c]! - expected) < 1e-6 * expected);
    }
    assert.ok(layers[0]!.alpha[1]! > 3 * layers[0]!.alpha[0]!);
  });

  it('state dict round trip (scale, momentum, step count, levels)', () => {
    const w = randn([2, 3], { rng: new Rng(5) }).requiresGrad_();
    const opt = new AskewSGD([w], { momentum: 0.9, bits: 3, decay: 0.9 });
    w.grad = randn([2, 3], { rng: new Rng(6) });
    opt.step();
    const w2 = w.clone().requiresGrad_();
    const opt2 = new AskewSGD([w2]);
    opt2.loadStateDict(opt.stateDict());
    assert.deepEqual(opt2.paramGroups[0]!.levels, [-3, -2, -1, 0, 1, 2, 3]);
    assert.equal(opt2.epsilon(), opt.epsilon());
    const g = randn([2, 3], { rng: new Rng(7) });
    w.grad = g;
    w2.grad = g.clone();
    opt.step();
    opt2.step();
    assert.deepEqual(w2.data, w.data);
  });
});

describe('constrained/askew: convergence onto the grid', () => {
  it('least squares with ternary weights from the fp optimum: ends on the grid, loss no worse than projecting that optimum', (t) => {
    // f(w) = 1/(2m)·‖A·w − y‖², w ∈ R^{1×n} seen as one output channel.
    const rng = new Rng(11);
    const m = 64;
    const n = 12;
    const A = Float64Array.from({ length: m * n }, () => rng.normal());
    const wTrue = Float64Array.from({ length: n }, () => [-1, 0, 1][rng.int(3)]! * 0.7 + 0.15 * rng.normal());
    const y = Float64Array.from({ length: m }, (_, i) => wTrue.reduce((s, v, j) => s + A[i * n + j]! * v, 0) + 0.05 * rng.normal());
    const loss = (w: ArrayLike<number>): number => {
      let s = 0;
      for (let i = 0; i < m; i++) {
        let r = -y[i]!;
        for (let j = 0; j < n; j++) r += A[i * n + j]! * w[j]!;
        s += r * r;
      }
      return s / (2 * m);
    };
    const gradient = (w: ArrayLike<number>): Float64Array => {
      const g = new Float64Array(n);
      for (let i = 0; i < m; i++) {
        let r = -y[i]!;
        for (let j = 0; j < n; j++) r += A[i * n + j]! * w[j]!;
        for (let j = 0; j < n; j++) g[j] = g[j]! + (A[i * n + j]! * r) / m;
      }
      return g;
    };
    // The unconstrained optimum (plain gradient descent to convergence) and its projection.
    const wStar = new Float64Array(n);
    for (let k = 0; k < 3000; k++) gradient(wStar).forEach((g, j) => (wStar[j] = wStar[j]! - 0.2 * g));
    const table = makeTable('ternary');
    const { alpha } = fitScaleExact(wStar, table);
    const projected = Array.from(wStar, (v) => alpha * nearestLevel(table, v / alpha));

    // AskewSGD from the unconstrained optimum (the usual "pretrained fp32 → low-bit" setting;
    // α is fitted to the starting weights, so it is α* here).
    const w = new Tensor(wStar.slice(), [1, n]).requiresGrad_();
    const steps = 1500;
    const opt = new AskewSGD([w], { table: 'ternary', lr: 0.05, momentum: 0.5, epsilon0: 0.5, decay: decayFor(1000, 0.5, 1e-3), epsilonMin: 1e-3 });
    for (let k = 0; k < steps; k++) {
      w.grad = new Tensor(gradient(w.data), [1, n]);
      opt.step();
      if (k >= steps - 300) opt.lr = opt.lr * 0.98; // the residual distance scales with lr
    }
    const dist = opt.distanceToGrid();
    assert.ok(dist.max < 1e-3, `distance to grid ${dist.max}`);
    const before = loss(w.data);
    const [layer] = opt.finalize();
    const after = loss(w.data);
    w.data.forEach((v, j) => assert.equal(v, layer!.alpha[0]! * layer!.levels[layer!.index[j]!]!));
    assert.ok(Math.abs(after - before) < 1e-3, `snap changed the loss ${before} → ${after}`);
    t.diagnostic(`loss: unconstrained ${loss(wStar).toFixed(5)}, projected optimum ${loss(projected).toFixed(5)}, AskewSGD ${after.toFixed(5)}`);
    assert.ok(after <= loss(projected) * 1.05 + 1e-9, `AskewSGD ${after} vs projected optimum ${loss(projected)} (unconstrained ${loss(wStar)})`);
  });

  it('small MLP: every constrained weight ends on the 2-bit grid; biases stay free', () => {
    manualSeed(3);
    const model = mlp({ inputSize: 4, hidden: [8], numClasses: 2 });
    const rng = new Rng(3);
    for (const p of model.parameters()) p.data.set(randn(p.shape as number[], { rng, std: 0.5 }).data);
    const groups = askewParamGroups(model);
    assert.equal(groups.length, 2);
    const opt = new AskewSGD(groups, { bits: 2, lr: 0.05, momentum: 0.9, decay: decayFor(150, 0.5, 1e-3), epsilonMin: 1e-3 });
    const x = randn([32, 4], { rng });
    const labels = new Int32Array(32).map((_, i) => (x.data[i * 4]! + x.data[i * 4 + 1]! > 0 ? 1 : 0));
    const distances: number[] = [];
    for (let k = 0; k < 250; k++) {
      crossEntropy(model.forward(x), new Tensor(labels, [32])).backward();
      opt.step();
      opt.zeroGrad();
      // Once ε = 0 the residual distance is about 2·lr·|g|: decaying lr drives it to 0.
      if (k >= 200) opt.lr = opt.lr * 0.9;
      if (k === 199 || k === 249) distances.push(opt.distanceToGrid().max);
    }
    assert.ok(distances[0]! < 0.05 && distances[1]! < 1e-3 && distances[1]! < distances[0]! / 10, `max distances ${distances}`);
    const layers = opt.finalize(model);
    assert.deepEqual(layers.map((l) => l.name), ['1.weight', '3.weight']);
    assert.equal(opt.distanceToGrid().max, 0);
  });
});
