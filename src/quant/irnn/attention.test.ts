import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { grad, noGrad } from '../../autograd/index.ts';
import { withBackend } from '../../backend/index.ts';
import { mul, randn, Rng, sum, Tensor } from '../../tensor/index.ts';
import { convertQuantAttention, intAttention, intExp, intSoftmax, QuantAttention } from './attention.ts';

function random64(shape: number[], rng: Rng, scale = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

describe('integer exponential and softmax', () => {
  it('intExp is within 2.2e-3 (absolute) of Math.exp on every d ∈ [−2^16, 0], 3.3e-3 relative on (−ln 2, 0]', () => {
    let worst = 0;
    let worstRelative = 0;
    for (let d = 0; d >= -(2 ** 16); d--) {
      const exact = Math.exp(d / 4096);
      const err = Math.abs(intExp(d) / 32768 - exact);
      worst = Math.max(worst, err);
      if (d > -2839) worstRelative = Math.max(worstRelative, err / exact);
    }
    // Measured: 2.146e-3 and 3.12e-3.
    assert.ok(worst < 2.2e-3, `absolute ${worst}`);
    assert.ok(worstRelative < 3.3e-3, `relative ${worstRelative}`);
    assert.equal(intExp(-(2 ** 20)), 0);
    assert.throws(() => intExp(1), RangeError);
  });

  it('intSoftmax: uint8 probabilities within 1.5/256 of the float softmax; masked entries 0; all masked → all 0; one entry → 255', () => {
    const rng = new Rng(41);
    let worst = 0;
    for (let trial = 0; trial < 200; trial++) {
      const L = 1 + Math.floor(rng.uniform() * 12);
      const a = Float64Array.from({ length: L }, () => Math.round((rng.uniform() * 2 - 1) * 4096 * (trial % 2 ? 6 : 1)));
      const mask = Float64Array.from({ length: L }, () => (rng.uniform() < 0.8 ? 1 : 0));
      const out = new Int32Array(L);
      intSoftmax(a, 0, L, out, 0, mask, 0, new Float64Array(L));
      const live = Array.from(a).filter((_, l) => mask[l]);
      if (live.length === 0) {
        assert.deepEqual(Array.from(out), new Array(L).fill(0));
        continue;
      }
      const m = Math.max(...live);
      const total = live.reduce((s, v) => s + Math.exp((v - m) / 4096), 0);
      for (let l = 0; l < L; l++) {
        if (!mask[l]) {
          assert.equal(out[l], 0);
          continue;
        }
        const p = Math.exp((a[l]! - m) / 4096) / total;
        worst = Math.max(worst, Math.abs(out[l]! - Math.min(255, p * 256)));
      }
    }
    // Measured 0.65 / 256.
    assert.ok(worst < 1.5, `worst ${worst} / 256`);
    const one = new Int32Array(1);
    intSoftmax([1234], 0, 1, one, 0, null, 0, new Float64Array(1));
    assert.equal(one[0], 255);
  });
});

describe('QuantAttention ↔ IntAttention', () => {
  it('the fake-quant output equals the integer runtime bit for bit (observed and given input scales, padding masks, a fully masked row)', () => {
    const rng = new Rng(42);
    const [N, L, D] = [6, 5, 8];
    for (const given of [false, true]) {
      const model = new QuantAttention(D, { rng });
      const q = randn([N, D], { rng });
      const k = randn([N, L, D], { rng, std: 1.5 });
      const v = randn([N, L, D], { rng });
      const mask = Float32Array.from({ length: N * L }, (_, i) => (Math.floor(i / L) === 0 ? 0 : i % L < 1 + (Math.floor(i / L) % L) ? 1 : 0));
      const inputScale = given ? 3 / 127 : undefined;
      for (let step = 0; step < 2; step++) model.forward(q, k, v, { mask, inputScale });
      model.eval();
      const y = noGrad(() => model.forward(q, k, v, { mask }));
      const runtime = convertQuantAttention(model);
      if (given) assert.equal(runtime.params.inputScale, Math.fround(3 / 127));
      const out = runtime.run(runtime.quantizeInput(q.data), runtime.quantizeInput(k.data), runtime.quantizeInput(v.data), N, L, mask);
      for (let i = 0; i < out.length; i++) assert.equal(y.data[i], Math.fround(out[i]! * runtime.params.outputScale), `given ${given}, element ${i}`);
      for (let r = 0; r < D; r++) assert.equal(out[r], 0, 'a fully masked row attends to nothing');
    }
    assert.throws(() => convertQuantAttention(new QuantAttention(4)), /never observed/);
  });

  it('the integer output is within 3 LSB of a float64 attention on the same int8 inputs and weights', () => {
    const rng = new Rng(43);
    const [N, L, D] = [8, 7, 16];
    const model = new QuantAttention(D, { rng });
    const q = randn([N, D], { rng });
    const k = randn([N, L, D], { rng });
    const v = randn([N, L, D], { rng });
    model.forward(q, k, v);
    const runtime = convertQuantAttention(model);
    const p = runtime.params;
    const [qc, kc, vc] = [q, k, v].map((t) => runtime.quantizeInput(t.data)) as [Int8Array, Int8Array, Int8Array];
    const out = runtime.run(qc, kc, vc, N, L);
    const wScale = (r: number): number => Math.max(...Array.from(model.weight.data.subarray(r * D, (r + 1) * D), Math.abs)) / 127;
    let worst = 0;
    for (let n = 0; n < N; n++) {
      const proj = Array.from({ length: D }, (_, r) => {
        let a = 0;
        for (let j = 0; j < D; j++) a += p.weight[r * D + j]! * wScale(r) * qc[n * D + j]! * p.inputScale;
        return a;
      });
      const scores = Array.from({ length: L }, (_, l) => proj.reduce((s, x, r) => s + x * kc[(n * L + l) * D + r]! * p.inputScale, 0) / Math.sqrt(D));
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const total = e.reduce((a, b) => a + b, 0);
      for (let r = 0; r < D; r++) {
        const ref = e.reduce((s, x, l) => s + (x / total) * vc[(n * L + l) * D + r]! * p.inputScale, 0);
        worst = Math.max(worst, Math.abs(out[n * D + r]! - ref / p.outputScale));
      }
    }
    // Measured 1.91 LSB: mostly the uint8 probabilities (an error of ~0.6/256 in p, times |v| up to
    // a few times the output range, over 7 positions), then the int8 projected query and the i-exp error.
    assert.ok(worst < 3, `worst ${worst} LSB`);
  });
});

describe('QuantAttention gradients', () => {
  it('quantize=false: gradients of q, k, v (with a mask) and W_q match float64 finite differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(44);
      const model = new QuantAttention(3, { quantize: false, dtype: 'float64', rng });
      const q = random64([2, 3], rng).requiresGrad_();
      const k = random64([2, 4, 3], rng).requiresGrad_();
      const v = random64([2, 4, 3], rng).requiresGrad_();
      const mask = [1, 1, 0, 1, 1, 1, 1, 0];
      const result = gradcheck(() => model.forward(q, k, v, { mask }), [q, k, v, model.weight]);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.join(' ')}`);
    });
  });

  it('quantize=true: d output / d v is the integer probabilities (closed form); q, k and W_q get gradients through the float softmax', () => {
    withBackend('reference', () => {
      const rng = new Rng(45);
      const [N, L, D] = [3, 4, 5];
      const model = new QuantAttention(D, { dtype: 'float64', rng });
      const q = random64([N, D], rng).requiresGrad_();
      const k = random64([N, L, D], rng).requiresGrad_();
      const v = random64([N, L, D], rng, 0.5).requiresGrad_();
      model.forward(q, k, v);
      model.outputAbsMax.data[0] = 4; // no output clamp: the straight-through gradient is the whole story
      model.eval();
      const y = model.forward(q, k, v);
      const R = random64([N, D], rng);
      const [gq, gk, gv, gw] = grad(sum(mul(y, R)), [q, k, v, model.weight]);
      const runtime = convertQuantAttention(model);
      const codes = (t: Tensor): Int8Array => runtime.quantizeInput(t.data);
      const { probabilities } = intAttention(runtime.params, codes(q), codes(k), codes(v), N, L, null);
      for (let n = 0; n < N; n++) {
        for (let l = 0; l < L; l++) {
          for (let r = 0; r < D; r++) {
            const expected = R.data[n * D + r]! * probabilities[n * L + l]! / 256;
            assert.ok(Math.abs(gv!.data[(n * L + l) * D + r]! - expected) < 1e-12, `dv ${gv!.data[(n * L + l) * D + r]} vs ${expected}`);
          }
        }
      }
      for (const g of [gq!, gk!, gw!]) assert.ok(g.data.some((x) => x !== 0) && g.data.every(Number.isFinite));
    });
  });
});
