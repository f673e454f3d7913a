import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grad, noGrad } from '../../autograd/index.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { withBackend } from '../../backend/index.ts';
import { add, concat, linear, mean, mul, reshape, Rng, sigmoid, slice, square, sub, sum, tanh, Tensor } from '../../tensor/index.ts';
import { START_CODE, VQLSTM } from './vq-lstm.ts';

function random(shape: number[], rng: Rng, dtype: 'float32' | 'float64' = 'float64', scale = 1): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const data = dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

/**
 * A VQLSTM in eval mode whose codebook holds states the cell really reaches: one training-mode
 * forward over random inputs initialises it from those states (init 'data').
 */
function model(inputSize: number, hidden: number, k: number, seed: number, dtype: 'float32' | 'float64' = 'float64', batchFirst = false, match: 'state' | 'hidden' = 'state'): VQLSTM {
  const rng = new Rng(seed);
  const m = new VQLSTM(inputSize, hidden, { codebookSize: k, rng, dtype, batchFirst, match, update: 'loss' });
  const warm = random(batchFirst ? [k, 3, inputSize] : [3, k, inputSize], rng, dtype, 2);
  noGrad(() => m.forward(warm));
  m.eval();
  return m;
}

const sig = (v: number): number => 1 / (1 + Math.exp(-v));

/** Plain float64 reference: the LSTM cell on the quantized state, then the brute-force nearest code. */
function reference(m: VQLSTM, x: Tensor): { outputs: number[]; codes: number[] } {
  const [steps, batch, inputSize] = x.shape as [number, number, number];
  const hs = m.hiddenSize;
  const w = m.weightIh.data;
  const u = m.weightHh.data;
  const b = m.biasIh!.data;
  const bb = m.biasHh!.data;
  const e = m.quantizer.codebook.data;
  const outputs: number[] = [];
  const codes: number[] = [];
  const state = Array.from({ length: batch }, () => ({ h: new Float64Array(hs), c: new Float64Array(hs) }));
  for (let t = 0; t < steps; t++) {
    for (let n = 0; n < batch; n++) {
      const { h, c } = state[n]!;
      const pre = new Float64Array(4 * hs);
      for (let r = 0; r < 4 * hs; r++) {
        let s = b[r]! + bb[r]!;
        for (let j = 0; j < inputSize; j++) s += w[r * inputSize + j]! * x.data[(t * batch + n) * inputSize + j]!;
        for (let j = 0; j < hs; j++) s += u[r * hs + j]! * h[j]!;
        pre[r] = s;
      }
      const z = new Float64Array(2 * hs);
      for (let j = 0; j < hs; j++) {
        const cNew = sig(pre[hs + j]!) * c[j]! + sig(pre[j]!) * Math.tanh(pre[2 * hs + j]!);
        z[hs + j] = cNew;
        z[j] = sig(pre[3 * hs + j]!) * Math.tanh(cNew);
      }
      let best = 0;
      let bestDistance = Infinity;
      const compared = m.match === 'state' ? 2 * hs : hs;
      for (let k = 0; k < m.codebookSize; k++) {
        let s = 0;
        for (let j = 0; j < compared; j++) s += (z[j]! - e[k * 2 * hs + j]!) ** 2;
        if (s < bestDistance) {
          bestDistance = s;
          best = k;
        }
      }
      codes.push(best);
      for (let j = 0; j < hs; j++) {
        h[j] = e[best * 2 * hs + j]!;
        c[j] = e[best * 2 * hs + hs + j]!;
        outputs.push(h[j]!);
      }
    }
  }
  return { outputs, codes };
}

describe('VQLSTM forward', () => {
  for (const match of ['state', 'hidden'] as const) {
    it(`match '${match}': equals a float64 reference: LSTM cell on the quantized (h, c), then the nearest codebook row`, () => {
      const rng = new Rng(1);
      const m = model(3, 4, 6, 2, 'float64', false, match);
      const x = random([5, 3, 3], rng, 'float64', 2);
      const { output, codes, final } = noGrad(() => m.forward(x));
      const ref = reference(m, x);
      assert.deepEqual([...codes], ref.codes);
      assert.deepEqual([...final], ref.codes.slice(12));
      assert.deepEqual(output.shape, [5, 3, 4]);
      output.data.forEach((v, i) => assert.ok(Math.abs(v - ref.outputs[i]!) < 1e-14, `output ${i}`));
      assert.ok(new Set(ref.codes).size > 1, 'the test visits several codes');
    });
  }

  it('batchFirst gives the same outputs as the [L, N, ·] layout, transposed', () => {
    const rng = new Rng(4);
    const a = model(2, 3, 5, 9);
    const b = new VQLSTM(2, 3, { codebookSize: 5, dtype: 'float64', batchFirst: true, update: 'loss' });
    b.loadStateDict(a.stateDict());
    b.eval();
    const x = random([4, 2, 2], rng, 'float64', 2);
    const xFirst = new Tensor(new Float64Array(16), [2, 4, 2]);
    for (let t = 0; t < 4; t++) for (let n = 0; n < 2; n++) for (let j = 0; j < 2; j++) xFirst.data[(n * 4 + t) * 2 + j] = x.data[(t * 2 + n) * 2 + j]!;
    const ra = noGrad(() => a.forward(x));
    const rb = noGrad(() => b.forward(xFirst));
    assert.deepEqual([...rb.codes], [...ra.codes]);
    for (let t = 0; t < 4; t++) for (let n = 0; n < 2; n++) for (let j = 0; j < 3; j++) {
      assert.equal(rb.output.data[(n * 4 + t) * 3 + j], ra.output.data[(t * 2 + n) * 3 + j]);
    }
  });

  it('step-by-step decoding from codes reproduces the sequence bit for bit', () => {
    for (const dtype of ['float32', 'float64'] as const) {
      const rng = new Rng(5);
      const m = model(3, 5, 8, 6, dtype);
      const x = random([6, 2, 3], rng, dtype, 2);
      const whole = noGrad(() => m.forward(x));
      let codes: Int32Array = new Int32Array(2).fill(START_CODE);
      for (let t = 0; t < 6; t++) {
        const xt = new Tensor(x.data.slice(t * 6, (t + 1) * 6), [2, 3]);
        const step = noGrad(() => m.step(xt, codes));
        assert.deepEqual([...step.codes], [...whole.codes.subarray(t * 2, t * 2 + 2)], `${dtype} step ${t}`);
        step.output.data.forEach((v, i) => assert.ok(Object.is(v, whole.output.data[t * 10 + i]), `${dtype} step ${t} output ${i}`));
        codes = step.codes;
      }
    }
  });
});

describe('VQLSTM merge property', () => {
  it('two different histories that reach the same code give bit-identical futures (float32 default backend, float64 reference; both match rules)', () => {
    for (const [dtype, backend, match] of [['float32', null, 'state'], ['float64', 'reference', 'state'], ['float32', null, 'hidden']] as const) {
      const run = (): void => {
        const rng = new Rng(21);
        const m = model(2, 6, 3, 8, dtype, false, match);
        const seen = new Map<number, Tensor>();
        let pair: [Tensor, Tensor] | null = null;
        for (let attempt = 0; attempt < 200 && !pair; attempt++) {
          const history = random([1 + (attempt % 4), 1, 2], rng, dtype, 3);
          const code = noGrad(() => m.forward(history)).final[0]!;
          const other = seen.get(code);
          if (other && other.shape[0] !== history.shape[0]) pair = [other, history];
          else seen.set(code, history);
        }
        assert.ok(pair, 'found two histories of different lengths with the same final code');
        const future = random([7, 1, 2], rng, dtype, 3);
        const [a, b] = pair.map((history) => noGrad(() => m.forward(concat([history, future], 0))));
        const la = pair[0].shape[0]!;
        const lb = pair[1].shape[0]!;
        assert.deepEqual([...a!.codes.subarray(la)], [...b!.codes.subarray(lb)]);
        const ha = a!.output.data.subarray(la * 6);
        const hb = b!.output.data.subarray(lb * 6);
        assert.equal(ha.length, 42);
        ha.forEach((v, i) => assert.ok(Object.is(v, hb[i]), `${dtype}: future output ${i} ${v} vs ${hb[i]}`));
        // The histories themselves differ (not a trivially equal input).
        assert.notEqual(la, lb);
      };
      if (backend) withBackend(backend, run);
      else run();
    }
  });
});

/**
 * The function whose true gradient the straight-through VQLSTM computes: the same LSTM with each
 * quantization replaced by adding the constant offset δ_t = E_{k_t} − [h_t; c_t] taken at the base
 * point, plus the commitment term against the constant chosen rows.
 */
function offsetLstm(m: VQLSTM, x: Tensor, offsets: Tensor[], chosen: Tensor[], weights: Tensor, beta: number): Tensor {
  const [steps, batch] = x.shape as [number, number, number];
  const hs = m.hiddenSize;
  let h = new Tensor(new Float64Array(batch * hs), [batch, hs]);
  let c = new Tensor(new Float64Array(batch * hs), [batch, hs]);
  let objective: Tensor | null = null;
  for (let t = 0; t < steps; t++) {
    const xt = sliceStep(x, t);
    const pre = add(add(linear(xt, m.weightIh, m.biasIh), linear(h, m.weightHh)), m.biasHh!);
    const gate = (g: number): Tensor => slice(pre, [0, g * hs], [batch, (g + 1) * hs]);
    const cNew = add(mul(sigmoid(gate(1)), c), mul(sigmoid(gate(0)), tanh(gate(2))));
    const hNew = mul(sigmoid(gate(3)), tanh(cNew));
    const z = concat([hNew, cNew], 1);
    const commitment = mul(mean(square(sub(z, chosen[t]!))), beta / steps);
    const q = add(z, offsets[t]!);
    h = slice(q, [0, 0], [batch, hs]);
    c = slice(q, [0, hs], [batch, 2 * hs]);
    const term = add(sum(mul(h, reshape(slice(weights, [t, 0, 0], [t + 1, batch, hs]), [batch, hs]))), commitment);
    objective = objective ? add(objective, term) : term;
  }
  return objective!;
}

function sliceStep(x: Tensor, t: number): Tensor {
  const [, batch, inputSize] = x.shape as [number, number, number];
  return reshape(slice(x, [t, 0, 0], [t + 1, batch, inputSize]), [batch, inputSize]);
}

/** ∂f/∂p by float64 central differences (step 1e-6). */
function centralDifferences(f: () => number, p: Tensor): Float64Array {
  const out = new Float64Array(p.size);
  for (let j = 0; j < p.size; j++) {
    const keep = p.data[j]!;
    p.data[j] = keep + 1e-6;
    const plus = f();
    p.data[j] = keep - 1e-6;
    const minus = f();
    p.data[j] = keep;
    out[j] = (plus - minus) / 2e-6;
  }
  return out;
}

describe('VQLSTM gradients', () => {
  it('straight-through BPTT equals float64 finite differences of the LSTM with the quantization frozen as constant offsets', () => {
    withBackend('reference', () => {
      const rng = new Rng(31);
      const beta = 0.25;
      const m = model(2, 3, 5, 12);
      const x = random([4, 2, 2], rng, 'float64', 2).requiresGrad_();
      const weights = random([4, 2, 3], rng);
      const result = m.forward(x);
      const objective = add(sum(mul(result.output, weights)), result.loss);
      const params = [x, m.weightIh, m.weightHh, m.biasIh!, m.biasHh!];
      const analytic = grad(objective, params);
      // The offsets and chosen rows at this point, from a plain forward.
      const hs = 3;
      const offsets: Tensor[] = [];
      const chosen: Tensor[] = [];
      noGrad(() => {
        let h = new Tensor(new Float64Array(2 * hs), [2, hs]);
        let c = new Tensor(new Float64Array(2 * hs), [2, hs]);
        for (let t = 0; t < 4; t++) {
          const pre = add(add(linear(sliceStep(x, t), m.weightIh, m.biasIh), linear(h, m.weightHh)), m.biasHh!);
          const gate = (g: number): Tensor => slice(pre, [0, g * hs], [2, (g + 1) * hs]);
          const cNew = add(mul(sigmoid(gate(1)), c), mul(sigmoid(gate(0)), tanh(gate(2))));
          const z = concat([mul(sigmoid(gate(3)), tanh(cNew)), cNew], 1);
          const rows = m.quantizer.lookup(result.codes.slice(t * 2, t * 2 + 2));
          offsets.push(sub(rows, z));
          chosen.push(rows);
          h = slice(rows, [0, 0], [2, hs]);
          c = slice(rows, [0, hs], [2, 2 * hs]);
        }
      });
      // The reference is smooth: check its own autograd against finite differences first.
      const own = gradcheck(() => offsetLstm(m, x, offsets, chosen, weights, beta), params);
      assert.ok(own.maxRelativeError < 1e-7, `the offset LSTM's own check: ${own.maxRelativeError}`);
      params.forEach((p, i) => {
        const numeric = centralDifferences(() => offsetLstm(m, x, offsets, chosen, weights, beta).item(), p);
        let diff = 0;
        let scale = 1e-12;
        numeric.forEach((v, j) => {
          diff = Math.max(diff, Math.abs(analytic[i]!.data[j]! - v));
          scale = Math.max(scale, Math.abs(v));
        });
        assert.ok(diff / scale < 1e-7, `parameter ${i}: ${diff / scale}`);
      });
      // The codebook gets the codebook term only: (1/L)·Σ_t 2(E_k − z)/(N·2H) per assigned row.
      const [dCodebook] = grad(m.forward(x).loss, [m.quantizer.codebook]);
      const expected = new Float64Array(m.quantizer.codebook.size);
      for (let t = 0; t < 4; t++) {
        const z = sub(chosen[t]!, offsets[t]!);
        for (let n = 0; n < 2; n++) {
          const k = result.codes[t * 2 + n]!;
          for (let j = 0; j < 2 * hs; j++) expected[k * 2 * hs + j]! += (2 * (chosen[t]!.data[n * 2 * hs + j]! - z.data[n * 2 * hs + j]!)) / (2 * 2 * hs) / 4;
        }
      }
      expected.forEach((v, j) => assert.ok(Math.abs(dCodebook!.data[j]! - v) < 1e-12, `codebook ${j}`));
    });
  });
});

describe('VQLSTM training with the default EMA codebook', () => {
  it("defaults to update 'ema': a training forward moves the codebook buffer (no gradient), unused codes only rescale", () => {
    const rng = new Rng(40);
    const m = new VQLSTM(2, 3, { codebookSize: 4, dtype: 'float64', rng, decay: 0.5, init: 'uniform', initScale: 0.5 });
    assert.equal(m.quantizer.update, 'ema');
    assert.equal(m.quantizer.codebook.requiresGrad, false);
    const before = Float64Array.from(m.quantizer.codebook.data);
    const x = random([1, 5, 2], rng, 'float64', 2);
    m.train();
    const { codes } = m.forward(x);
    assert.notDeepEqual([...m.quantizer.codebook.data], [...before]);
    // A code no row chose keeps E_k = m_k / ñ_k with its sum and count both decayed by γ: the row
    // rescales only through the Laplace smoothing's renormalisation (the sums are float32), never
    // towards other rows' states.
    const unused = [0, 1, 2, 3].filter((k) => !codes.includes(k));
    assert.ok(unused.length > 0 && unused.length < 4, `codes used: ${codes}`);
    for (const k of unused) {
      const ratio = m.quantizer.codebook.data[k * 6]! / before[k * 6]!;
      for (let j = 1; j < 6; j++) assert.ok(Math.abs(m.quantizer.codebook.data[k * 6 + j]! / before[k * 6 + j]! - ratio) < 1e-5, `code ${k} keeps its direction`);
    }
  });
});

describe('VQLSTM errors', () => {
  it('names the bad argument', () => {
    const m = model(2, 3, 4, 1);
    assert.throws(() => new VQLSTM(0, 3), /inputSize must be a positive integer, got 0/);
    assert.throws(() => m.forward(new Tensor(new Float64Array(6), [1, 2, 3])), /inputSize 2, got \[1, 2, 3\]/);
    assert.throws(() => m.forward(new Tensor(new Float64Array(4), [1, 2, 2]), Int32Array.of(0)), /1 start codes for a batch of 2/);
    assert.throws(() => m.step(new Tensor(new Float64Array(2), [1, 2]), Int32Array.of(4)), /code 4 is outside \[0, 4\)/);
    assert.throws(() => m.forward(new Tensor(new Float32Array(4), [1, 2, 2])), /dtype float32/);
  });
});
