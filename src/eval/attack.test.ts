import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Flatten, Linear, ReLU, Sequential, mlp } from '../nn/index.ts';
import { manualSeed, Rng, Tensor } from '../tensor/index.ts';
import { prepareQat, qatFromCliOptions } from '../quant/qat/index.ts';
import { attack, fgsm, lossGradient, pgd, betaRule, argmaxRows } from './attack.ts';
import { classifierOf, withFrozenModel } from './classifier.ts';

const D = 4;
const C = 3;
/** Rows of W: the logits z = W·x + b of a flattened 1×2×2 image. */
const W = [
  [0.9, -0.4, 0.3, 0.2],
  [-0.5, 0.8, -0.1, 0.6],
  [0.2, 0.1, -0.7, -0.3],
];
const B = [0.1, -0.2, 0.05];

/** Flatten → Linear(4, 3) with W and B, weights times `gain`. */
function linearModel(gain = 1): Sequential {
  const fc = new Linear(D, C);
  fc.weight.data.set(W.flat().map((v) => v * gain));
  fc.bias!.data.set(B.map((v) => v * gain));
  return new Sequential(new Flatten(), fc);
}

function images(n: number, seed: number): { x: Tensor; labels: Int32Array } {
  const rng = new Rng(seed);
  const data = Float32Array.from({ length: n * D }, () => rng.uniform());
  return { x: new Tensor(data, [n, 1, 2, 2]), labels: Int32Array.from({ length: n }, (_, i) => i % C) };
}

/** Closed form: ∂ CE(z / T, y) / ∂x = (1/T) Wᵀ (softmax(z / T) − e_y), with z = gain · (W x + b), in float64. */
function analyticGradient(x: ArrayLike<number>, y: number, temperature: number, gain = 1, std = 1): number[] {
  const z = W.map((row, c) => gain * (row.reduce((s, w, k) => s + w * x[k]!, 0) + B[c]!) / temperature);
  const top = Math.max(...z);
  const e = z.map((v) => Math.exp(v - top));
  const total = e.reduce((s, v) => s + v, 0);
  const dz = e.map((v, c) => v / total - (c === y ? 1 : 0));
  return Array.from({ length: D }, (_, k) => dz.reduce((s, d, c) => s + (d * gain * W[c]![k]!) / temperature / std, 0));
}

describe('FGSM', () => {
  it('on a linear softmax model equals clip(x + eps · sign(Wᵀ(softmax − e_y))) exactly', () => {
    const model = linearModel();
    const { x, labels } = images(12, 1);
    for (const temperature of [1, 0.25, 3]) {
      const eps = 0.07;
      const result = fgsm(model, x, labels, { eps, temperature });
      for (let i = 0; i < labels.length; i++) {
        const xi = x.data.subarray(i * D, (i + 1) * D);
        const g = analyticGradient(xi, labels[i]!, temperature);
        for (let k = 0; k < D; k++) {
          assert.ok(Math.abs(g[k]!) > 1e-6, 'the closed form has no near-zero component here');
          const expected = Math.fround(Math.min(1, Math.max(0, xi[k]! + eps * Math.sign(g[k]!))));
          assert.equal(result.adversarial.data[i * D + k], expected, `sample ${i}, pixel ${k}, T ${temperature}`);
        }
      }
    }
  });

  it('with normalization inside the model still follows the pixel-space gradient', () => {
    const model = linearModel();
    const { x, labels } = images(6, 2);
    const stats = { mean: 0.3, std: 0.5 };
    const result = fgsm(model, x, labels, { eps: 0.05, normalize: stats });
    for (let i = 0; i < labels.length; i++) {
      const xi = x.data.subarray(i * D, (i + 1) * D);
      const normalized = Array.from(xi, (v) => Math.fround((v - 0.3) / 0.5));
      const g = analyticGradient(normalized, labels[i]!, 1, 1, 0.5);
      for (let k = 0; k < D; k++) assert.equal(result.adversarial.data[i * D + k], Math.fround(Math.min(1, Math.max(0, xi[k]! + 0.05 * Math.sign(g[k]!)))));
    }
  });

  it('leaves the model as it was: weights, no .grad, training flag', () => {
    manualSeed(3);
    const model = mlp({ inputSize: D, hidden: [5], numClasses: C });
    model.train();
    const before = [...model.stateDict()].map(([k, v]) => [k, Float32Array.from(v.data)] as const);
    const { x, labels } = images(8, 3);
    pgd(model, x, labels, { eps: 0.1, steps: 3, temperature: 'hns' });
    fgsm(model, x, labels, { eps: 0.1, temperature: 'njs' });
    assert.equal(model.training, true);
    for (const p of model.parameters()) {
      assert.equal(p.grad, null);
      assert.equal(p.requiresGrad, true);
    }
    for (const [k, v] of before) assert.deepEqual(model.stateDict().get(k)!.data, v, k);
  });
});

describe('PGD', () => {
  it('stays within eps of the clean image and inside the valid range', () => {
    manualSeed(4);
    const model = mlp({ inputSize: D, hidden: [8], numClasses: C });
    // Pixels on and near both ends of the range.
    const data = Float32Array.from([0, 1, 0.02, 0.98, 0.5, 0.97, 0.01, 0.3, 1, 0, 0.6, 0.04]);
    const labels = Int32Array.from([0, 1, 2]);
    for (const eps of [0.03, 0.25]) {
      const result = pgd(model, new Tensor(data, [3, 1, 2, 2]), labels, { eps, steps: 7, stepSize: eps / 2, seed: 5, range: [0, 1] });
      result.adversarial.data.forEach((v, k) => {
        assert.ok(v >= 0 && v <= 1, `pixel ${k} = ${v} outside [0, 1]`);
        assert.ok(Math.abs(v - data[k]!) <= eps * (1 + 1e-6), `pixel ${k} moved ${Math.abs(v - data[k]!)} > eps ${eps}`);
      });
    }
  });

  it('is never weaker than FGSM on a tiny seeded model', () => {
    manualSeed(6);
    const model = mlp({ inputSize: D, hidden: [16, 16], numClasses: C });
    // Larger weights than the default init, so that the predictions spread over the classes.
    for (const p of model.parameters()) p.data.forEach((v, k, a) => { a[k] = v * 3; });
    const { x } = images(200, 7);
    // Labels = the model's own clean predictions, so every sample starts correct.
    const labels = withFrozenModel(model, () => argmaxRows(classifierOf(model)(x).data as Float32Array, C));
    let fgsmTotal = 0;
    let pgdTotal = 0;
    for (const eps of [0.02, 0.05, 0.1]) {
      const f = fgsm(model, x, labels, { eps });
      const p = pgd(model, x, labels, { eps, steps: 10, seed: 8 });
      const fgsmCorrect = f.predictions.filter((c, i) => c === labels[i]).length;
      const pgdCorrect = p.predictions.filter((c, i) => c === labels[i]).length;
      assert.ok(pgdCorrect <= fgsmCorrect, `eps ${eps}: PGD leaves ${pgdCorrect} correct, FGSM ${fgsmCorrect}`);
      fgsmTotal += fgsmCorrect;
      pgdTotal += pgdCorrect;
    }
    assert.ok(pgdTotal < fgsmTotal, 'PGD finds strictly more adversarial examples over the three budgets');
  });

  it('refuses bad options with clear errors', () => {
    const model = linearModel();
    const { x, labels } = images(2, 9);
    assert.throws(() => attack(model, x, labels, { eps: -1 }), /eps must be a finite number >= 0/);
    assert.throws(() => attack(model, x, labels, { eps: 0.1, attack: 'pgd', steps: 0 }), /steps must be a positive integer/);
    assert.throws(() => attack(model, x, labels, { eps: 0.1, temperature: 0 }), /temperature must be a positive finite number/);
    assert.throws(() => attack(model, x, labels.subarray(0, 1), { eps: 0.1 }), /1 labels for images/);
    assert.throws(() => attack(model, x, labels, { eps: 0.1, range: [1, 0] }), /lo < hi/);
    assert.throws(() => attack(model, x, labels, { eps: 0.1, attack: 'pgd', seed: Number.NaN }), /seed must be an integer, got NaN/);
    assert.throws(() => attack(model, x, Int32Array.from([0, -1]), { eps: 0.1 }), /label -1 of sample 1 is negative/);
    assert.throws(() => attack(model, x, Int32Array.from([0, 99]), { eps: 0.1 }), /label 99 of sample 1 is not a class of this model/);
    const withNaN = new Tensor(Float32Array.from(x.data), x.shape);
    withNaN.data[withNaN.size - 1] = Number.NaN;
    assert.throws(() => attack(model, withNaN, labels, { eps: 0.1 }), /image value NaN at flat index \d+ \(sample 1\) is not finite/);
  });
});

describe('temperature scaling', () => {
  it('keeps the argmax and scales the gradient as the closed form (1/T) Wᵀ(softmax(z/T) − e_y)', () => {
    const model = linearModel();
    const { x, labels } = images(10, 10);
    const classify = classifierOf(model);
    withFrozenModel(model, () => {
      for (const temperature of [1, 0.1, 5, 'njs', 'hns'] as const) {
        const { rule } = betaRule(classify, x, labels, temperature);
        const { gradient, logits, betas } = lossGradient(classify, x, labels, rule);
        const scaled = Float32Array.from(logits, (v, k) => v * betas[Math.floor(k / C)]!);
        assert.deepEqual(argmaxRows(scaled, C), argmaxRows(logits, C), `argmax kept with T ${temperature}`);
        for (let i = 0; i < labels.length; i++) {
          const g = analyticGradient(x.data.subarray(i * D, (i + 1) * D), labels[i]!, 1 / betas[i]!);
          for (let k = 0; k < D; k++) assert.ok(Math.abs(gradient[i * D + k]! - g[k]!) <= 1e-5 * (1 + Math.abs(g[k]!)), `T ${temperature} sample ${i}: ${gradient[i * D + k]} vs ${g[k]}`);
        }
      }
    });
  });

  it('on a saturated linear model: the T = 1 gradient is exactly zero, NJS and HNS bring it back', () => {
    // Logits thousands apart: float32 softmax gives p_y = 1 and the others underflow to 0.
    const model = linearModel(1e4);
    const { x } = images(10, 11);
    const classify = classifierOf(model);
    const labels = withFrozenModel(model, () => argmaxRows(classify(x).data as Float32Array, C));
    const t1 = fgsm(model, x, labels, { eps: 0.1 });
    assert.equal(t1.zeroGradient.reduce((s, v) => s + v, 0), labels.length, 'every T = 1 gradient is zero');
    assert.deepEqual(t1.adversarial.data, x.data, 'so FGSM does not move');
    for (const temperature of ['njs', 'hns'] as const) {
      const scaled = fgsm(model, x, labels, { eps: 0.1, temperature });
      assert.equal(scaled.zeroGradient.reduce((s, v) => s + v, 0), 0, `${temperature}: no zero gradient`);
      assert.ok(scaled.betas.every((b) => b < 1), `${temperature}: β < 1 (T > 1) on a saturated model`);
    }
  });

  it('on a tiny binary (w1a1) model the T = 1 gradient mostly vanishes and NJS recovers it', () => {
    manualSeed(12);
    const model = new Sequential(new Flatten(), new Linear(16, 32), new ReLU(), new Linear(32, 32), new ReLU(), new Linear(32, C));
    // Every layer binary, the first and last included, to make the effect plain.
    const plan = qatFromCliOptions({ quant: 'w1a1' })!;
    prepareQat(model, { ...plan, keepFirstLast8bit: false, inputActivation: null });
    // Large weights give large logits (binary activations, ±α weights summed over 32 inputs).
    for (const p of model.parameters()) p.data.forEach((v, k, a) => { a[k] = v * 30; });
    const rng = new Rng(13);
    const x = new Tensor(Float32Array.from({ length: 50 * 16 }, () => rng.uniform()), [50, 1, 4, 4]);
    const labels = withFrozenModel(model, () => argmaxRows(classifierOf(model)(x).data as Float32Array, C));
    const t1 = fgsm(model, x, labels, { eps: 0.1 });
    const njs = fgsm(model, x, labels, { eps: 0.1, temperature: 'njs' });
    const zeroT1 = t1.zeroGradient.reduce((s, v) => s + v, 0);
    const zeroNjs = njs.zeroGradient.reduce((s, v) => s + v, 0);
    assert.ok(zeroT1 >= 35, `T = 1: ${zeroT1} of 50 zero gradients`); // 39 measured
    assert.ok(zeroNjs < zeroT1 / 2, `NJS: ${zeroNjs} zero gradients`); // 0 measured
  });
});
