import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Flatten, Linear, Sequential } from '../nn/index.ts';
import { Rng, Tensor } from '../tensor/index.ts';
import { classifierOf, logitJacobians, withFrozenModel } from './classifier.ts';
import { gramMatrix, hessianNorm, hnsBeta, jacobianSingularValues, njsTemperature, njsThresholdFactor, oneMinusProbability, symmetricEigenvalues } from './temperature.ts';

const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol * (1 + Math.abs(b)), `${what}: ${a} vs ${b}`);

describe('linear algebra of the temperature rules', () => {
  it('symmetricEigenvalues recovers the spectrum of Q diag(λ) Qᵀ (Q a Householder reflection)', () => {
    const lambda = [-2, 0.5, 3, 7, 1e-3];
    const n = lambda.length;
    const v = [1, -2, 0.5, 3, 1];
    const vv = v.reduce((s, x) => s + x * x, 0);
    const q = (i: number, j: number) => (i === j ? 1 : 0) - (2 * v[i]! * v[j]!) / vv;
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) a[i * n + j]! += q(i, k) * lambda[k]! * q(j, k);
    const found = symmetricEigenvalues(a, n);
    [...lambda].sort((x, y) => x - y).forEach((l, i) => close(found[i]!, l, 1e-12, `eigenvalue ${i}`));
  });

  it('jacobianSingularValues of a 3×5 matrix with orthogonal rows are the row norms', () => {
    const j = Float64Array.from([3, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, -0.5]);
    assert.deepEqual(jacobianSingularValues(j, 3).map((s) => Number(s.toFixed(12))), [3, 2, 0.5]);
  });

  it('hessianNorm equals ‖β² Jᵀ (diag(p) − p pᵀ) J‖_F built explicitly', () => {
    const rng = new Rng(1);
    const c = 4;
    const d = 6;
    const j = Float64Array.from({ length: c * d }, () => rng.normal());
    const z = [1.5, -0.3, 0.8, 2.1];
    for (const beta of [0.2, 1, 3.7]) {
      const e = z.map((v) => Math.exp(beta * v));
      const total = e.reduce((s, v) => s + v, 0);
      const p = e.map((v) => v / total);
      let sum = 0;
      for (let a = 0; a < d; a++) {
        for (let b = 0; b < d; b++) {
          let h = 0;
          for (let r = 0; r < c; r++) for (let s = 0; s < c; s++) h += j[r * d + a]! * ((r === s ? p[r]! : 0) - p[r]! * p[s]!) * j[s * d + b]!;
          sum += (beta * beta * h) ** 2;
        }
      }
      close(hessianNorm(z, gramMatrix(j, c), beta), Math.sqrt(sum), 1e-10, `β ${beta}`);
    }
  });
});

describe('NJS', () => {
  it('the temperature of a linear model is the mean singular value of W / std', () => {
    const fc = new Linear(4, 3);
    fc.weight.data.set([3, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0]);
    const model = new Sequential(new Flatten(), fc);
    const rng = new Rng(2);
    const x = new Tensor(Float32Array.from({ length: 5 * 4 }, () => rng.uniform()), [5, 1, 2, 2]);
    const found = withFrozenModel(model, () => njsTemperature(classifierOf(model, { mean: 0.1, std: 0.5 }), x));
    close(found.temperature, (3 + 2 + 1) / 3 / 0.5, 1e-6, 'T');
    assert.equal(found.samples, 5);
    assert.equal(found.singularValues.length, 15);
  });

  it('the gradient threshold makes 1 − p_y exactly ρ when the other logits sit at the minimum', () => {
    const logits = [40, 0, 0, 0];
    const factor = njsThresholdFactor(logits, 0, 0.01);
    close(oneMinusProbability(logits, 0, factor), 0.01, 1e-12, '1 − p_y after the threshold');
    // Not saturated: no change.
    assert.equal(njsThresholdFactor([1, 0.5, 0], 0, 0.01), 1);
    // Other logits spread out: 1 − p_y ends at or above ρ.
    assert.ok(oneMinusProbability([50, 10, 0], 0, njsThresholdFactor([50, 10, 0], 0)) >= 0.01);
  });

  it('logitJacobians equals W / std for every sample of a linear model', () => {
    const fc = new Linear(4, 2);
    fc.weight.data.set([1, -2, 0.5, 0.25, 0, 3, -1, 2]);
    const model = new Sequential(new Flatten(), fc);
    const x = new Tensor(new Float32Array(3 * 4).fill(0.5), [3, 1, 2, 2]);
    const { jacobians } = withFrozenModel(model, () => logitJacobians(classifierOf(model, { mean: 0, std: 2 }), x));
    for (const j of jacobians) assert.deepEqual([...j], [0.5, -1, 0.25, 0.125, 0, 1.5, -0.5, 1]);
  });
});

describe('HNS', () => {
  it('with two classes picks β·γ at the maximum of u² σ(u) σ(−u) (u* = 2.3994, where 2/u = tanh(u/2)), to the grid spacing', () => {
    // Two classes: ‖Jᵀ S J‖ = p(1 − p)‖j₁ − j₂‖², p = σ(βγ), so the norm is ∝ (βγ)² σ(βγ) σ(−βγ) / γ².
    let u = 2.4;
    for (let i = 0; i < 50; i++) u = 2 / Math.tanh(u / 2);
    close(u, 2.3994, 1e-4, 'u*');
    const j = Float64Array.from([1, 2, -1, 0.5, 0, 1]);
    for (const gap of [0.5, 4, 30]) {
      const beta = hnsBeta([gap, 0], 0, gramMatrix(j, 2));
      const low = -Math.log(0.49 / 0.51) / gap;
      const high = -Math.log(1e-72 / (1 - 1e-72)) / gap;
      const spacing = (high - low) / 99;
      assert.ok(Math.abs(beta - u / gap) <= spacing / 2 + 1e-12, `gap ${gap}: β ${beta}, optimum ${u / gap}, grid step ${spacing}`);
    }
  });

  it('is 1 for a misclassified sample and for tied top logits', () => {
    const g = gramMatrix(Float64Array.from([1, 0, 0, 1, 1, 1]), 3);
    assert.equal(hnsBeta([0, 5, 1], 0, g), 1);
    assert.equal(hnsBeta([5, 5, 1], 0, g), 1);
  });
});
