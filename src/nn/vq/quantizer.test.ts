import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../autograd/index.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { mul, Rng, sum, Tensor } from '../../tensor/index.ts';
import { nearestCodes, VectorQuantizer } from './quantizer.ts';

function random(shape: number[], rng: Rng, dtype: 'float32' | 'float64' = 'float64', scale = 1): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const data = dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

/** Brute-force nearest rows in float64 over the first `m` columns (ties: lowest index). */
function bruteNearest(z: Tensor, codebook: Tensor, m?: number): number[] {
  const [n, width] = z.shape as [number, number];
  const d = m ?? width;
  const k = codebook.shape[0]!;
  return Array.from({ length: n }, (_, i) => {
    let best = 0;
    let bestDistance = Infinity;
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let e = 0; e < d; e++) s += (z.data[i * width + e]! - codebook.data[j * width + e]!) ** 2;
      if (s < bestDistance) {
        bestDistance = s;
        best = j;
      }
    }
    return best;
  });
}

function uniformQuantizer(k: number, d: number, options: ConstructorParameters<typeof VectorQuantizer>[2] = {}): VectorQuantizer {
  return new VectorQuantizer(k, d, { init: 'uniform', initScale: 1, rng: new Rng(3), dtype: 'float64', ...options });
}

describe('nearestCodes', () => {
  it('matches brute-force float64 distances on random rows, float32 and float64', () => {
    for (const dtype of ['float32', 'float64'] as const) {
      const rng = new Rng(7);
      const z = random([40, 6], rng, dtype);
      const codebook = random([17, 6], rng, dtype);
      assert.deepEqual([...nearestCodes(z, codebook)], bruteNearest(z, codebook), dtype);
    }
  });

  it('with matchDims compares only the first columns (brute force), and the quantizer returns the whole row', () => {
    const rng = new Rng(8);
    const z = random([30, 6], rng);
    const codebook = random([9, 6], rng);
    const codes = nearestCodes(z, codebook, 2);
    assert.deepEqual([...codes], bruteNearest(z, codebook, 2));
    assert.notDeepEqual([...codes], bruteNearest(z, codebook), 'the test distinguishes the two');
    const vq = uniformQuantizer(9, 6, { matchDims: 2 });
    vq.codebook.data.set(codebook.data);
    const { quantized } = vq.forward(z);
    codes.forEach((k, i) => assert.deepEqual([...quantized.data.subarray(i * 6, i * 6 + 6)], [...codebook.data.subarray(k * 6, k * 6 + 6)]));
    assert.throws(() => nearestCodes(z, codebook, 7), /matchDims must be an integer in \[1, 6\], got 7/);
  });

  it('breaks ties towards the lowest index', () => {
    const codebook = new Tensor(Float64Array.from([1, 0, 0, 1, 1, 0]), [3, 2]); // rows 0 and 2 equal
    const z = new Tensor(Float64Array.from([0.9, 0.1, 0.5, 0.5]), [2, 2]); // row 1 is equidistant from all
    assert.deepEqual([...nearestCodes(z, codebook)], [0, 0]);
  });
});

describe('VectorQuantizer forward', () => {
  it('returns exactly the codebook rows of the nearest codes, and the loss terms by their closed forms', () => {
    for (const dtype of ['float32', 'float64'] as const) {
      const rng = new Rng(11);
      const vq = uniformQuantizer(5, 3, { dtype, commitment: 0.4 });
      const z = random([8, 3], rng, dtype);
      const { quantized, codes, loss, codebookLoss, commitmentLoss } = vq.forward(z);
      assert.deepEqual([...codes], bruteNearest(z, vq.codebook));
      codes.forEach((k, i) => {
        for (let d = 0; d < 3; d++) assert.ok(Object.is(quantized.data[i * 3 + d], vq.codebook.data[k * 3 + d]), `${dtype} row ${i}`);
      });
      let squared = 0;
      codes.forEach((k, i) => {
        for (let d = 0; d < 3; d++) squared += (z.data[i * 3 + d]! - vq.codebook.data[k * 3 + d]!) ** 2;
      });
      const expected = squared / 24;
      const tolerance = dtype === 'float32' ? 1e-6 : 1e-14;
      assert.ok(Math.abs(codebookLoss.item() - expected) < tolerance);
      assert.ok(Math.abs(commitmentLoss.item() - expected) < tolerance);
      assert.ok(Math.abs(loss.item() - 1.4 * expected) < tolerance);
    }
  });
});

describe('VectorQuantizer gradients', () => {
  it('straight-through: ∂Σ R⊙ẑ/∂z = R exactly and nothing reaches the codebook through ẑ', () => {
    const rng = new Rng(12);
    const vq = uniformQuantizer(6, 4);
    const z = random([9, 4], rng).requiresGrad_();
    const weights = random([9, 4], rng);
    const [dz, dCodebook] = grad(sum(mul(vq.forward(z).quantized, weights)), [z, vq.codebook]);
    assert.deepEqual([...dz!.data], [...weights.data]);
    assert.ok(dCodebook === null || dCodebook.data.every((v) => v === 0), 'no codebook gradient through ẑ');
  });

  it('codebook loss → codebook: 2(E_k − z_i)/(N·D) per assigned row; commitment → z: 2β(z − E_k)/(N·D)', () => {
    const rng = new Rng(13);
    const beta = 0.3;
    const vq = uniformQuantizer(4, 3, { commitment: beta });
    const z = random([10, 3], rng).requiresGrad_();
    const { loss, codes } = vq.forward(z);
    const [dz, dCodebook] = grad(loss, [z, vq.codebook]);
    const scale = 2 / 30;
    const expectedCodebook = new Float64Array(12);
    codes.forEach((k, i) => {
      for (let d = 0; d < 3; d++) {
        const diff = vq.codebook.data[k * 3 + d]! - z.data[i * 3 + d]!;
        expectedCodebook[k * 3 + d]! += scale * diff;
        assert.ok(Math.abs(dz!.data[i * 3 + d]! - beta * scale * -diff) < 1e-15, `dz[${i}, ${d}]`);
      }
    });
    expectedCodebook.forEach((v, j) => assert.ok(Math.abs(dCodebook!.data[j]! - v) < 1e-15, `dE[${j}]`));
  });

  it('codebook loss (in E) and commitment loss (in z) agree with float64 finite differences, codes fixed away from ties', () => {
    const rng = new Rng(14);
    const vq = uniformQuantizer(5, 2);
    vq.eval();
    const z = random([7, 2], rng);
    const inCodebook = gradcheck(() => vq.forward(z).codebookLoss, [vq.codebook]);
    assert.ok(inCodebook.maxRelativeError < 1e-7, `codebook: max relative error ${inCodebook.maxRelativeError}`);
    // With EMA updates the codebook is a buffer, so only z is checked.
    const ema = uniformQuantizer(5, 2, { update: 'ema' });
    ema.eval();
    const inZ = gradcheck((x) => ema.forward(x).commitmentLoss, [z.requiresGrad_()]);
    assert.ok(inZ.maxRelativeError < 1e-7, `z: max relative error ${inZ.maxRelativeError}`);
  });
});

describe('VectorQuantizer training-mode statistics', () => {
  it("'ema' moves usage, sums and codebook by the closed form (γ, Laplace smoothing) and keeps the output from before", () => {
    const gamma = 0.9;
    const epsilon = 1e-3;
    const vq = new VectorQuantizer(3, 2, { update: 'ema', decay: gamma, epsilon, init: 'uniform', initScale: 1, rng: new Rng(5), dtype: 'float64' });
    vq.codebook.data.set([0, 0, 1, 1, -1, -1]);
    vq.embedSum!.data.set([0, 0, 1, 1, -1, -1]); // usage starts at 1 per code
    const before = Float64Array.from(vq.codebook.data);
    const z = new Tensor(Float64Array.from([0.1, 0, 0.9, 1.2, 1.1, 0.8, 0.2, -0.1]), [4, 2]); // codes 0, 1, 1, 0
    vq.train();
    const { codes, quantized } = vq.forward(z);
    assert.deepEqual([...codes], [0, 1, 1, 0]);
    assert.deepEqual([...quantized.data], [0, 0, 1, 1, 1, 1, 0, 0].map((_, j) => before[[0, 1, 1, 0][j >> 1]! * 2 + (j & 1)]!));
    const usage = [gamma + (1 - gamma) * 2, gamma + (1 - gamma) * 2, gamma];
    usage.forEach((u, k) => assert.ok(Math.abs(vq.usage.data[k]! - u) < 1e-6, `usage ${k}`));
    const sums = [
      [0 * gamma + (1 - gamma) * 0.3, 0 * gamma + (1 - gamma) * -0.1],
      [gamma + (1 - gamma) * 2.0, gamma + (1 - gamma) * 2.0],
      [-gamma, -gamma],
    ];
    const usage32 = Array.from(vq.usage.data); // the buffer is float32; the update divides by what it holds
    const total = usage32.reduce((a, b) => a + b, 0);
    for (let k = 0; k < 3; k++) {
      const smoothed = ((usage32[k]! + epsilon) / (total + 3 * epsilon)) * total;
      for (let d = 0; d < 2; d++) {
        assert.ok(Math.abs(vq.embedSum!.data[k * 2 + d]! - sums[k]![d]!) < 1e-6, `sum ${k},${d}`);
        assert.ok(Math.abs(vq.codebook.data[k * 2 + d]! - vq.embedSum!.data[k * 2 + d]! / smoothed) < 1e-12, `codebook ${k},${d}`);
      }
    }
  });

  it('a code unused long enough is restarted onto a row of the batch; used codes are kept', () => {
    const vq = new VectorQuantizer(3, 2, { decay: 0.5, deadCodeThreshold: 0.3, init: 'uniform', rng: new Rng(6), dtype: 'float64' });
    vq.codebook.data.set([0, 0, 1, 1, 50, 50]);
    const z = new Tensor(Float64Array.from([0.1, 0, 0.9, 1.2, -0.1, 0.2]), [3, 2]); // never near code 2
    vq.train();
    vq.forward(z); // usage of code 2: 0.5 ≥ 0.3, kept
    assert.deepEqual([...vq.codebook.data.subarray(4)], [50, 50]);
    vq.forward(z); // 0.25 < 0.3: restarted
    assert.equal(vq.restarts, 1);
    const row = [...vq.codebook.data.subarray(4)];
    assert.ok([0, 1, 2].some((i) => row[0] === z.data[i * 2] && row[1] === z.data[i * 2 + 1]), `restarted onto ${row}`);
    assert.deepEqual([...vq.codebook.data.subarray(0, 4)], [0, 0, 1, 1]);
    assert.equal(vq.usage.data[2], Math.fround(0.6));
  });

  it("init 'data' copies rows of the first training batch; eval before that is refused", () => {
    const vq = new VectorQuantizer(2, 2, { rng: new Rng(1), dtype: 'float64' });
    const z = new Tensor(Float64Array.from([1, 2, 3, 4, 5, 6]), [3, 2]);
    vq.eval();
    assert.throws(() => vq.forward(z), /not initialised/);
    vq.train();
    vq.forward(z);
    for (let k = 0; k < 2; k++) {
      const row = [vq.codebook.data[2 * k], vq.codebook.data[2 * k + 1]];
      assert.ok([0, 1, 2].some((i) => row[0] === z.data[2 * i] && row[1] === z.data[2 * i + 1]), `code ${k} = ${row}`);
    }
  });
});

describe('VectorQuantizer errors', () => {
  it('names the bad argument and value', () => {
    assert.throws(() => new VectorQuantizer(0, 2), /codebookSize must be a positive integer, got 0/);
    assert.throws(() => new VectorQuantizer(2, 2, { decay: 1 }), /decay is out of range, got 1/);
    assert.throws(() => new VectorQuantizer(2, 2, { commitment: -1 }), /commitment/);
    const vq = uniformQuantizer(2, 3);
    assert.throws(() => vq.forward(new Tensor(new Float64Array(4), [2, 2])), /expected z \[N, 3\], got \[2, 2\]/);
    assert.throws(() => vq.forward(new Tensor(new Float32Array(3), [1, 3])), /dtype float32/);
    assert.throws(() => vq.lookup(Int32Array.of(2)), /code 2 is outside \[0, 2\)/);
  });
});
