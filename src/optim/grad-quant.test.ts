import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../backend/index.ts';
import { manualSeed, Tensor } from '../tensor/index.ts';
import { Rng } from '../tensor/random.ts';
import { DataLoader } from '../data/index.ts';
import { rowClassDataset } from '../data/testing.ts';
import { mlp } from '../nn/index.ts';
import { fit } from '../train/fit.ts';
import { crossEntropy } from '../tensor/ops.ts';
import { SGD } from './sgd.ts';
import { quantizeGradientInPlace, withQuantizedGradients } from './grad-quant.ts';

function normals(rng: Rng, n: number, std = 1): Float64Array {
  return Float64Array.from({ length: n }, () => std * rng.normal());
}

describe('quantized gradients (QNN)', () => {
  it('k bits: values are integer multiples j·s of s = max|g|/(2^(k−1)−1), |j| ≤ 2^(k−1)−1, at most 2^k − 1 levels, max|g| kept', () => {
    const rng = new Rng(7);
    for (const bits of [2, 3, 4, 6, 8]) {
      // Mirrored normal draws: both extremes ±max|g| are present.
      const half = normals(rng, 2000, 0.01);
      const g = Float64Array.from([...half, ...half.map((v) => -v)]);
      const max = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const original = Float64Array.from(g);
      const scale = quantizeGradientInPlace(g, bits, rng);
      const qmax = 2 ** (bits - 1) - 1;
      assert.equal(scale, max / qmax);
      const levels = new Set<number>();
      g.forEach((v, i) => {
        const j = v / scale;
        assert.ok(Math.abs(j - Math.round(j)) < 1e-9, `bits ${bits}: ${v} is not a multiple of ${scale}`);
        assert.ok(Math.abs(Math.round(j)) <= qmax);
        // Stochastic rounding picks one of the two neighbouring levels.
        assert.ok(Math.abs(v - original[i]!) < scale * (1 + 1e-9));
        levels.add(Math.round(j));
      });
      assert.ok(levels.size <= 2 ** bits - 1, `bits ${bits}: ${levels.size} levels`);
      if (bits <= 4) assert.equal(levels.size, 2 ** bits - 1, `bits ${bits}: 4000 normal draws reach every level`);
      const newMax = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assert.ok(Math.abs(newMax - max) <= 1e-15, 'the largest magnitude is a level itself');
    }
    const zeros = new Float32Array(5);
    assert.equal(quantizeGradientInPlace(zeros, 6, rng), 0);
    assert.deepEqual([...zeros], [0, 0, 0, 0, 0]);
    assert.throws(() => quantizeGradientInPlace(new Float32Array(2), 1, rng), /bits must be an integer in \[2, 16\], got 1/);
    assert.throws(() => quantizeGradientInPlace(Float32Array.of(1, NaN), 6, rng), /entry 1 is NaN/);
  });

  it('unbiased: the mean of N = 4000 draws is within 5·s/(2√N) of g for every element (the per-draw variance is at most s²/4)', () => {
    const rng = new Rng(11);
    const g = normals(rng, 40, 0.3);
    g[0] = 1.2; // max|g|, so s = 1.2/31 at 6 bits
    const n = 4000;
    const sum = new Float64Array(g.length);
    let scale = 0;
    for (let t = 0; t < n; t++) {
      const copy = Float64Array.from(g);
      scale = quantizeGradientInPlace(copy, 6, rng);
      copy.forEach((v, i) => (sum[i] += v));
    }
    const bound = (5 * scale) / (2 * Math.sqrt(n));
    let biggestError = 0;
    g.forEach((v, i) => {
      const error = Math.abs(sum[i]! / n - v);
      biggestError = Math.max(biggestError, error);
      assert.ok(error <= bound, `element ${i}: mean ${sum[i]! / n} vs g ${v} (bound ${bound})`);
    });
    // Round-to-nearest would be biased by up to s/2 on some element: stochastic rounding is not.
    assert.ok(biggestError < scale / 10);
  });

  it('k = 16 is within max|g|/32767 of the float gradient (relative error ≤ 3.1e-5 of the largest entry)', () => {
    const rng = new Rng(3);
    const g = normals(rng, 1000);
    const max = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const original = Float64Array.from(g);
    quantizeGradientInPlace(g, 16, rng);
    const worst = g.reduce((m, v, i) => Math.max(m, Math.abs(v - original[i]!)), 0);
    assert.ok(worst <= max / 32767, `${worst} > ${max / 32767}`);
    assert.ok(worst / max <= 3.1e-5);
  });

  it('the optimizer applies it: an SGD step moves each weight by −lr·j·s; 2 bits gives only {−s, 0, s} steps, unlike float', () => {
    const w = new Tensor(Float64Array.of(0.5, -0.25, 1, 2, 0, 0.125), [6]).requiresGrad_();
    const gradient = Float64Array.of(0.3, -0.05, 0.01, -0.6, 0.2, 0.45);
    const lr = 0.5;
    const quantized = withQuantizedGradients(new SGD([w], { lr }), { bits: 2, seed: 5 });
    const before = Float64Array.from(w.data);
    w.grad = new Tensor(Float64Array.from(gradient), [6]);
    quantized.step();
    const s = 0.6; // max|g| / (2^1 − 1)
    const steps = [...w.data].map((v, i) => (before[i]! - v) / lr);
    for (const step of steps) assert.ok([-s, 0, s].some((l) => Math.abs(step - l) < 1e-12), `step ${step} is not in {−0.6, 0, 0.6}`);
    assert.ok(Math.abs(steps[3]! + s) < 1e-12, 'the largest entry is exact');
    // The same draws as quantizeGradientInPlace with the same seed.
    const expected = Float64Array.from(gradient);
    quantizeGradientInPlace(expected, 2, new Rng(5));
    assert.deepEqual(steps.map((v) => Math.round(v * 1e9) / 1e9), [...expected].map((v) => Math.round(v * 1e9) / 1e9));
    // A float step would have moved by lr·g exactly: at 2 bits the steps differ from it.
    assert.ok(steps.some((v, i) => Math.abs(v - gradient[i]!) > 0.1));
    quantized.zeroGrad();
    assert.equal(w.grad, null);
    assert.equal(quantized.lr, lr);
    assert.throws(() => withQuantizedGradients(new SGD([w], { lr }), { bits: 17 }), /bits must be an integer in \[2, 16\], got 17/);
  });

  it('fit trains through it: 16-bit gradients track float training closely, 2-bit ones differ, and a seed reproduces a run', () => {
    const run = (bits: number | null, seed = 0): number[] => {
      manualSeed(1);
      const model = mlp({ inputSize: 16, hidden: [12], numClasses: 3 });
      const trainLoader = new DataLoader(rowClassDataset(96, 1, 0.3), { batchSize: 16, shuffle: true, seed: 1 });
      const sgd = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
      const optimizer = bits === null ? sgd : withQuantizedGradients(sgd, { bits, seed });
      return fit(model, { trainLoader, optimizer, epochs: 2, progress: false, lossFn: crossEntropy }).stepLosses;
    };
    const float = run(null);
    const b16 = run(16);
    const b2 = run(2);
    assert.equal(b16.length, 12);
    for (let i = 0; i < float.length; i++) assert.ok(Math.abs(b16[i]! - float[i]!) < 1e-3, `step ${i}: ${b16[i]} vs ${float[i]}`);
    assert.ok(b2.some((v, i) => Math.abs(v - float[i]!) > 1e-3));
    assert.deepEqual(run(6, 4), run(6, 4));
    assert.notDeepEqual(run(6, 4), run(6, 5));
  });
});
