import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { concat, reshape, Rng, sum, Tensor, zeros } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/index.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { withBackend } from '../../backend/index.ts';
import { LSTM } from '../rnn.ts';
import { DeltaLSTM } from './delta-lstm.ts';
import { ColumnBalancedTargetedDropout } from './cbtd.ts';

function random(shape: number[], rng: Rng, dtype: 'float32' | 'float64' = 'float64', scale = 1): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const data = dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

function flat(...ts: Tensor[]): Tensor {
  return concat(ts.map((t) => reshape(t, [t.size])), 0);
}

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(a.data[i]! - b.data[i]!));
  return m;
}

describe('DeltaLSTM with Θ = 0 is nn.LSTM', () => {
  for (const dtype of ['float32', 'float64'] as const) {
    it(`${dtype}: 2-layer bidirectional batchFirst with h0, c0: output, hN, cN agree (${dtype === 'float32' ? '1e-5' : '1e-12'})`, () => {
      const rng = new Rng(1);
      const options = { numLayers: 2, bidirectional: true, batchFirst: true, dtype, rng };
      const lstm = new LSTM(5, 6, options);
      const delta = new DeltaLSTM(5, 6, options);
      assert.deepEqual([...delta.stateDict().keys()], [...lstm.stateDict().keys()]);
      delta.loadStateDict(lstm.stateDict());
      const x = random([3, 9, 5], rng, dtype);
      const h0 = random([4, 3, 6], rng, dtype);
      const c0 = random([4, 3, 6], rng, dtype);
      const [a, [ha, ca]] = noGrad(() => lstm.forward(x, [h0, c0]));
      const [b, [hb, cb]] = noGrad(() => delta.forward(x, [h0, c0]));
      const tolerance = dtype === 'float32' ? 1e-5 : 1e-12;
      for (const [name, p, q] of [['output', a, b], ['hN', ha, hb], ['cN', ca, cb]] as const) {
        const error = maxDiff(p, q);
        assert.ok(error < tolerance, `${name}: ${error}`);
      }
      const counts = delta.lastCounts;
      assert.equal(counts.inputSent, counts.inputTotal, 'Θ = 0 sends every changed input');
      assert.equal(counts.inputTotal, 2 * (3 * 9 * 5) + 2 * (3 * 9 * 12));
    });
  }
});

describe('DeltaLSTM thresholds', () => {
  it('a unit transmits only when |x − x̂| > Θ; with Θh = 0 the layer is the LSTM fed the held inputs x̂', () => {
    const xs = [0, 0.05, 0.2, 0.21, 0.1, -0.5, -0.45];
    const held = [0, 0, 0.2, 0.2, 0.2, -0.5, -0.5]; // by hand, Θx = 0.1, strict inequality: |0.1 − 0.2| = 0.1 is held
    const rng = new Rng(2);
    const delta = new DeltaLSTM(1, 3, { dtype: 'float64', thresholdX: 0.1, thresholdH: 0, rng });
    const lstm = new LSTM(1, 3, { dtype: 'float64' });
    lstm.loadStateDict(delta.stateDict());
    const [a] = noGrad(() => delta.forward(new Tensor(Float64Array.from(xs), [7, 1])));
    const [b] = noGrad(() => lstm.forward(new Tensor(Float64Array.from(held), [7, 1])));
    assert.ok(maxDiff(a, b) < 1e-14, `${maxDiff(a, b)}`);
    assert.equal(delta.lastCounts.inputSent, 2);
    assert.equal(delta.lastCounts.inputTotal, 7);
    const [plain] = noGrad(() => lstm.forward(new Tensor(Float64Array.from(xs), [7, 1])));
    assert.ok(maxDiff(a, plain) > 1e-3, 'the threshold changes the output');
  });

  it('Θh skips hidden columns: the counts fall monotonically as Θ grows and the output moves away from the LSTM', () => {
    const rng = new Rng(3);
    const delta = new DeltaLSTM(4, 8, { rng, dtype: 'float64' });
    const x = random([20, 2, 4], rng);
    const [reference] = noGrad(() => delta.forward(x));
    let lastSent = Infinity;
    let lastError = -1;
    for (const theta of [0, 0.05, 0.2, 0.5]) {
      delta.setThreshold(theta);
      const [y] = noGrad(() => delta.forward(x));
      const { inputSent, hiddenSent } = delta.lastCounts;
      assert.ok(inputSent + hiddenSent < lastSent || theta === 0, `Θ ${theta}: sent ${inputSent + hiddenSent}`);
      const error = maxDiff(y, reference);
      assert.ok(error >= lastError, `Θ ${theta}: error ${error}`);
      lastSent = inputSent + hiddenSent;
      lastError = error;
    }
    assert.equal(lastError > 0.01, true);
  });

  it('bad thresholds are refused', () => {
    assert.throws(() => new DeltaLSTM(2, 2, { thresholdX: -0.1 }), /DeltaLSTM: thresholdX must be a finite number ≥ 0, got -0.1/);
    assert.throws(() => new DeltaLSTM(2, 2, { thresholdH: Number.NaN }), /thresholdH must be a finite number ≥ 0, got NaN/);
    const layer = new DeltaLSTM(2, 2);
    assert.throws(() => layer.setThreshold(Infinity), /thresholdX must be a finite number/);
    assert.throws(() => new DeltaLSTM(0, 2), /DeltaLSTM: inputSize must be a positive integer/);
    assert.throws(() => layer.forward(zeros([3, 1, 5])), /DeltaLSTM\(2, 2\): input has shape \[3, 1, 5\], last dim should be 2/);
  });
});

describe('DeltaLSTM gradients against float64 central differences', () => {
  it('Θx = 0.3, Θh = 0.05 (units held at some steps): input, h0, c0 and every parameter', () => {
    withBackend('reference', () => {
      const rng = new Rng(7);
      const delta = new DeltaLSTM(3, 4, { dtype: 'float64', thresholdX: 0.3, thresholdH: 0.05, rng });
      const x = random([6, 2, 3], rng).requiresGrad_();
      const h0 = random([1, 2, 4], rng, 'float64', 0.5).requiresGrad_();
      const c0 = random([1, 2, 4], rng).requiresGrad_();
      const f = (): Tensor => {
        const [output, [hN, cN]] = delta.forward(x, [h0, c0]);
        return flat(output, hN, cN);
      };
      noGrad(f);
      const counts = delta.lastCounts;
      assert.ok(counts.inputSent < counts.inputTotal && counts.inputSent > 0, `inputs sent ${counts.inputSent}/${counts.inputTotal}`);
      assert.ok(counts.hiddenSent < counts.hiddenTotal && counts.hiddenSent > 0, `hidden sent ${counts.hiddenSent}/${counts.hiddenTotal}`);
      const result = gradcheck(f, [x, h0, c0, ...delta.parameters()]);
      assert.equal(result.relativeErrors.length, 7);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });

  it('CBTD weight transform: gradcheck through the pruned weights; pruned entries get exactly zero gradient', () => {
    withBackend('reference', () => {
      const rng = new Rng(8);
      const delta = new DeltaLSTM(4, 2, { dtype: 'float64', thresholdX: 0.1, thresholdH: 0, rng });
      const cbtd = new ColumnBalancedTargetedDropout({ sparsity: 0.5, blockRows: 4, rng });
      delta.weightTransform = (w, training) => cbtd.apply(w, training);
      const weights = [delta.parameters()[0]!, delta.parameters()[1]!];
      cbtd.prune(weights);
      const x = random([5, 1, 4], rng).requiresGrad_();
      const result = gradcheck(() => flat(delta.forward(x)[0]), [x, ...delta.parameters()]);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
      for (const p of delta.parameters()) p.grad = null;
      sum(delta.forward(x)[0]).backward();
      for (const w of weights) {
        let zeros = 0;
        for (let i = 0; i < w.size; i++) {
          if (w.data[i] === 0) {
            zeros++;
            assert.equal(Math.abs(w.grad!.data[i]!), 0);
          } else {
            assert.notEqual(w.grad!.data[i], 0);
          }
        }
        assert.equal(zeros, w.size / 2);
      }
    });
  });
});
