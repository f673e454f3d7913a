import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, cast, sum } from '../../tensor/index.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { logAddExp, transducerLoss } from './loss.ts';

/** float64 tensor of values uniform in [−scale, scale). */
function random64(shape: number[], rng: Rng, scale = 2): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

function int32(values: number[], shape: number[]): Tensor {
  return new Tensor(Int32Array.from(values), shape);
}

/**
 * −log P(y|x) by enumerating every alignment: each path moves from (0, 0) by blank (t+1) or the
 * next label (u+1) and ends with a blank out of (T−1, U); its probability is the product of the
 * softmax of the cells it leaves. Sums the probabilities directly (no log-space recursion).
 */
function bruteForce(logits: Tensor, b: number, tn: number, labels: number[], blank: number): number {
  const [, maxT, maxU1, vocab] = logits.shape as [number, number, number, number];
  const prob = (t: number, u: number, k: number): number => {
    const o = ((b * maxT + t) * maxU1 + u) * vocab;
    let z = 0;
    for (let j = 0; j < vocab; j++) z += Math.exp(logits.data[o + j]!);
    return Math.exp(logits.data[o + k]!) / z;
  };
  let total = 0;
  let paths = 0;
  const walk = (t: number, u: number, p: number): void => {
    if (t === tn - 1 && u === labels.length) {
      total += p * prob(t, u, blank);
      paths++;
      return;
    }
    if (t < tn - 1) walk(t + 1, u, p * prob(t, u, blank));
    if (u < labels.length) walk(t, u + 1, p * prob(t, u, labels[u]!));
  };
  walk(0, 0, 1);
  assert.ok(paths > 0);
  return -Math.log(total);
}

function binomial(n: number, k: number): number {
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
  return r;
}

describe('transducerLoss', () => {
  it('logAddExp is log(eᵃ + eᵇ), exact at −∞', () => {
    assert.ok(Math.abs(logAddExp(Math.log(2), Math.log(3)) - Math.log(5)) < 1e-15);
    assert.equal(logAddExp(-Infinity, 1.5), 1.5);
    assert.equal(logAddExp(-Infinity, -Infinity), -Infinity);
    assert.ok(Math.abs(logAddExp(1000, 1000) - (1000 + Math.LN2)) < 1e-12);
  });

  it('equals the brute-force sum over every alignment (float64, per-sample lengths)', () => {
    const rng = new Rng(7);
    const [n, maxT, maxU, vocab] = [4, 4, 3, 4];
    const logits = random64([n, maxT, maxU + 1, vocab], rng);
    const labels = int32([0, 1, 2, 2, 2, 0, 1, 0, 0, 1, 1, 1], [n, maxU]);
    const tLengths = [4, 3, 1, 2];
    const uLengths = [3, 2, 2, 0];
    const losses = transducerLoss(logits, labels, tLengths, uLengths, { reduction: 'none' });
    assert.deepEqual(losses.shape, [n]);
    for (let b = 0; b < n; b++) {
      const y = Array.from(labels.data.subarray(b * maxU, b * maxU + uLengths[b]!));
      const expected = bruteForce(logits, b, tLengths[b]!, y, vocab - 1);
      assert.ok(Math.abs(losses.data[b]! - expected) < 1e-12, `sample ${b}: ${losses.data[b]} vs ${expected}`);
    }
    const mean = transducerLoss(logits, labels, tLengths, uLengths);
    const total = transducerLoss(logits, labels, tLengths, uLengths, { reduction: 'sum' });
    const s = Array.from(losses.data).reduce((p, v) => p + v, 0);
    assert.ok(Math.abs(total.item() - s) < 1e-12);
    assert.ok(Math.abs(mean.item() - s / n) < 1e-12);
  });

  it('blank at index 0 gives the brute-force value too', () => {
    const rng = new Rng(3);
    const logits = random64([1, 3, 3, 3], rng);
    const labels = int32([2, 1], [1, 2]);
    const loss = transducerLoss(logits, labels, [3], [2], { blank: 0 }).item();
    assert.ok(Math.abs(loss - bruteForce(logits, 0, 3, [2, 1], 0)) < 1e-12);
  });

  it('closed form: uniform logits give −log(C(T+U−1, U)·(V+1)^−(T+U))', () => {
    for (const [t, u, vocab] of [[1, 0, 2], [1, 3, 5], [5, 2, 11], [6, 4, 3]] as const) {
      const logits = new Tensor(new Float64Array(t * (u + 1) * vocab).fill(0.3), [1, t, u + 1, vocab]);
      const labels = int32(new Array<number>(u).fill(0), [1, u]);
      const expected = -(Math.log(binomial(t + u - 1, u)) - (t + u) * Math.log(vocab));
      const loss = transducerLoss(logits, labels, [t], [u]).item();
      assert.ok(Math.abs(loss - expected) < 1e-10, `T=${t} U=${u}: ${loss} vs ${expected}`);
    }
  });

  it('gradient matches float64 finite differences (gradcheck), with short lengths', () => {
    const rng = new Rng(11);
    const logits = random64([3, 4, 3, 4], rng).requiresGrad_();
    const labels = int32([0, 2, 1, 1, 0, 0], [3, 2]);
    for (const reduction of ['sum', 'mean', 'none'] as const) {
      const result = gradcheck((z) => transducerLoss(z, labels, [4, 2, 3], [2, 1, 0], { reduction }), [logits]);
      assert.ok(result.maxRelativeError < 1e-7, `${reduction}: ${result.maxRelativeError}`);
    }
  });

  it('padding beyond the lengths changes nothing and gets exactly zero gradient', () => {
    const rng = new Rng(5);
    const [n, maxT, maxU, vocab] = [2, 5, 3, 4];
    const logits = random64([n, maxT, maxU + 1, vocab], rng).requiresGrad_();
    const labels = int32([1, 0, 2, 2, 1, 0], [n, maxU]);
    const tLengths = [3, 5];
    const uLengths = [1, 3];
    const loss = transducerLoss(logits, labels, tLengths, uLengths, { reduction: 'sum' });
    loss.backward();
    const g = logits.grad!.data;
    const changed = logits.detach().clone();
    const changedLabels = labels.clone();
    for (let b = 0; b < n; b++) {
      for (let u = uLengths[b]!; u < maxU; u++) changedLabels.data[b * maxU + u] = 3 - b; // even blank (3) is ignored there
      for (let t = 0; t < maxT; t++) {
        for (let u = 0; u <= maxU; u++) {
          const inside = t < tLengths[b]! && u <= uLengths[b]!;
          for (let k = 0; k < vocab; k++) {
            const i = ((b * maxT + t) * (maxU + 1) + u) * vocab + k;
            if (inside) {
              assert.ok(g[i] !== 0, `inside cell (${b}, ${t}, ${u}, ${k}) has zero gradient`);
            } else {
              assert.equal(g[i], 0, `padding cell (${b}, ${t}, ${u}, ${k}) has gradient ${g[i]}`);
              changed.data[i] = 100 * (rng.uniform() - 0.5);
            }
          }
        }
      }
    }
    assert.equal(transducerLoss(changed, changedLabels, tLengths, uLengths, { reduction: 'sum' }).item(), loss.item());
    // Each cell's gradient sums to 0 over the vocabulary (it goes through a softmax).
    for (let c = 0; c < g.length / vocab; c++) {
      let s = 0;
      for (let k = 0; k < vocab; k++) s += g[c * vocab + k]!;
      assert.ok(Math.abs(s) < 1e-12);
    }
  });

  it('float32 logits agree with float64 and backpropagate', () => {
    const rng = new Rng(9);
    const logits64 = random64([2, 6, 4, 5], rng);
    const labels = int32([0, 1, 2, 3, 3, 0], [2, 3]);
    const logits32 = cast(logits64, 'float32').requiresGrad_();
    const l32 = transducerLoss(logits32, labels, [6, 4], [3, 2]);
    const l64 = transducerLoss(logits64, labels, [6, 4], [3, 2]);
    assert.equal(l32.dtype, 'float32');
    assert.ok(Math.abs(l32.item() - l64.item()) < 1e-5);
    sum(l32).backward();
    assert.equal(logits32.grad!.dtype, 'float32');
  });

  it('refuses impossible inputs with errors naming the argument', () => {
    const logits = new Tensor(new Float64Array(2 * 3 * 3 * 4), [2, 3, 3, 4]);
    const labels = int32([0, 1, 2, 0], [2, 2]);
    const ok = (): Tensor => transducerLoss(logits, labels, [3, 3], [2, 1]);
    assert.doesNotThrow(ok);
    assert.throws(() => transducerLoss(logits, labels, [3, 4], [2, 1]), /logitLengths\[1\] = 4 is outside \[1, 3\]/);
    assert.throws(() => transducerLoss(logits, labels, [0, 3], [2, 1]), /logitLengths\[0\] = 0/);
    assert.throws(() => transducerLoss(logits, labels, [3, 3], [-1, 1]), /labelLengths\[0\] = -1/);
    assert.throws(() => transducerLoss(logits, labels, [3, 3], [2, 3]), /labelLengths\[1\] = 3 is outside \[0, 2\]/);
    assert.throws(() => transducerLoss(logits, labels, [3, 3, 3], [2, 1]), /logitLengths has 3 entries for a batch of 2/);
    assert.throws(() => transducerLoss(logits, labels, [3, 1.5], [2, 1]), /logitLengths\[1\] = 1.5/);
    assert.throws(() => transducerLoss(logits, int32([0, 3, 2, 0], [2, 2]), [3, 3], [2, 1]), /labels\[0, 1\] is the blank index 3/);
    assert.throws(() => transducerLoss(logits, int32([0, 4, 2, 0], [2, 2]), [3, 3], [2, 1]), /labels\[0, 1\] = 4 is outside \[0, 3\]/);
    assert.throws(() => transducerLoss(logits, int32([-1, 1, 2, 0], [2, 2]), [3, 3], [2, 1]), /labels\[0, 0\] = -1/);
    assert.throws(() => transducerLoss(logits, int32([0, 1, 2, 0, 0, 0], [2, 3]), [3, 3], [2, 1]), /labels must be \[N, U\] = \[2, 2\]/);
    assert.throws(() => transducerLoss(logits, new Tensor(new Float32Array(4), [2, 2]), [3, 3], [2, 1]), /labels must be int32/);
    assert.throws(() => transducerLoss(new Tensor(new Float64Array(12), [3, 4]), labels, [3, 3], [2, 1]), /logits must be \[N, T, U\+1, V\+1\]/);
    assert.throws(() => transducerLoss(logits, labels, [3, 3], [2, 1], { blank: 4 }), /blank must be an integer in \[0, 3\], got 4/);
    assert.throws(() => transducerLoss(logits, labels, new Tensor(new Float32Array([3, 3]), [2]), [2, 1]), /logitLengths must be int32/);
    // Any label length fits a single frame: U = 2 with T = 1 is a valid input.
    assert.ok(Number.isFinite(transducerLoss(logits, labels, [1, 1], [2, 2]).item()));
  });
});
