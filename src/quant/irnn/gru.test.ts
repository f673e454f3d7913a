import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { noGrad } from '../../autograd/index.ts';
import { withBackend } from '../../backend/index.ts';
import { GRU } from '../../nn/rnn.ts';
import { quantizeMultiplier, multiplierValue } from '../../runtime/requantize.ts';
import { setIntKernelsReference } from '../../runtime/kernels/index.ts';
import { concat, mul, randn, reshape, Rng, sum, Tensor } from '../../tensor/index.ts';
import { convertQuantGRU, IntGRU, intGruStep, type IntGRUParams } from './intgru.ts';
import { QuantGRU } from './qgru.ts';
import { lstmPwlTables } from './qlstm.ts';
import { pwlOfInt, evalPwl, sigmoidExact, type IntPwl, type Pwl } from './pwl.ts';
import { assertLearnsRunningMean, pwlReal, random64, randomInt8, randomRowMultipliers, roundAway } from './testing.ts';

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));
const int8 = randomInt8;

/**
 * The GRU step of intgru.ts's file comment written in real (float64) units, every rounding done on
 * the real value scaled to its grid: an independent statement of the integer arithmetic. Returns h codes.
 */
function simulateStep(p: IntGRUParams, x: Int8Array, h: Int8Array): number[] {
  const { inputSize: I, hiddenSize: H } = p;
  const gx: number[] = [];
  const gh: number[] = [];
  for (let r = 0; r < 3 * H; r++) {
    let ax = 0;
    let ah = 0;
    for (let j = 0; j < I; j++) ax += p.weightIh[r * I + j]! * x[j]!;
    for (let j = 0; j < H; j++) ah += p.weightHh[r * H + j]! * h[j]!;
    gx.push(clamp(roundAway(ax * multiplierValue({ multiplier: p.multiplierIh[r]!, shift: p.shiftIh[r]! })), -(2 ** 24), 2 ** 24) / 4096);
    gh.push(clamp(roundAway(ah * multiplierValue({ multiplier: p.multiplierHh[r]!, shift: p.shiftHh[r]! })), -(2 ** 24), 2 ** 24) / 4096);
  }
  const top = 32767 / 4096;
  const out: number[] = [];
  for (let k = 0; k < H; k++) {
    const r = pwlReal(p.sigmoid, clamp(gx[k]! + gh[k]! + p.bias[k]! / 4096, -8, top));
    const z = pwlReal(p.sigmoid, clamp(gx[H + k]! + gh[H + k]! + p.bias[H + k]! / 4096, -8, top));
    const hn = clamp(gh[2 * H + k]! + p.biasHn[k]! / 4096, -8, top);
    const rhn = Math.floor(r * hn * 4096 + 0.5) / 4096;
    const n = pwlReal(p.tanh, clamp(gx[2 * H + k]! + p.bias[2 * H + k]! / 4096 + rhn, -8, top));
    const keep = Math.floor((1 - z) * n * 32768 + 0.5) / 32768;
    const moved = roundAway(keep * 32768 * multiplierValue({ multiplier: p.outputMultiplier, shift: p.outputShift }));
    out.push(clamp(moved + Math.floor(z * h[k]! + 0.5), -127, 127) + 0);
  }
  return out;
}

function randomParams(rng: Rng, I: number, H: number, segments = 8): IntGRUParams {
  const rows = 3 * H;
  const mult = (lo: number, hi: number): { m: Int32Array; s: Int32Array } => randomRowMultipliers(rng, rows, lo, hi);
  // Ratios s_w·s_x·2^12 of a trained model are ~1e-2 .. 1; these reach the int16 clamps too.
  const ih = mult(2e-3, 0.5);
  const hh = mult(2e-3, 0.5);
  const out = quantizeMultiplier(2 ** -15 / (0.9 / 127));
  const tables = lstmPwlTables(segments);
  return {
    inputSize: I, hiddenSize: H, inputScale: 0.1, hiddenScale: 0.9 / 127,
    weightIh: int8(rng, rows * I), weightHh: int8(rng, rows * H),
    multiplierIh: ih.m, shiftIh: ih.s, multiplierHh: hh.m, shiftHh: hh.s,
    bias: Int32Array.from({ length: rows }, () => Math.round((rng.uniform() * 2 - 1) * 20000)),
    biasHn: Int32Array.from({ length: H }, () => Math.round((rng.uniform() * 2 - 1) * 20000)),
    outputMultiplier: out.multiplier, outputShift: out.shift,
    sigmoid: tables.sigmoid, tanh: tables.tanh,
  };
}

describe('IntGRU step', () => {
  it('equals a float64 simulation of the same fixed-point arithmetic exactly (incl. saturated gates and h)', () => {
    const rng = new Rng(17);
    const [I, H] = [7, 6];
    let saturated = 0;
    for (let trial = 0; trial < 40; trial++) {
      const p = randomParams(rng, I, H);
      const x = int8(rng, I);
      const h = int8(rng, H);
      const out = new Int8Array(H);
      intGruStep(p, 1, x, h, out);
      const sim = simulateStep(p, x, h);
      assert.deepEqual(Array.from(out), sim, `trial ${trial}`);
      saturated += sim.filter((v) => Math.abs(v) === 127).length;
    }
    assert.ok(saturated > 0, 'the cases reach the int8 clamp of h');
  });
});

describe('IntGRU.run', () => {
  it('equals the loop reference intGruStep step by step, with the native and the reference int8 GEMM', () => {
    const rng = new Rng(23);
    const [L, N, I, H] = [5, 3, 7, 6];
    const p = randomParams(rng, I, H);
    const x = int8(rng, L * N * I);
    const initial = int8(rng, N * H);
    let h = initial.slice();
    const expected: number[] = [];
    for (let t = 0; t < L; t++) {
      const next = new Int8Array(N * H);
      intGruStep(p, N, x.subarray(t * N * I, (t + 1) * N * I), h, next);
      expected.push(...next);
      h = next;
    }
    for (const reference of [false, true]) {
      setIntKernelsReference(reference);
      try {
        const result = new IntGRU(p).run(x, L, N, initial);
        assert.deepEqual(Array.from(result.output), expected);
        assert.deepEqual(Array.from(result.state.h), Array.from(h));
      } finally {
        setIntKernelsReference(false);
      }
    }
    assert.throws(() => new IntGRU(p).run(new Int8Array(3), 1, 1), /x has 3 values/);
    assert.throws(() => new IntGRU({ ...p, biasHn: new Int32Array(H + 1) }), /biasHn has 7 values, expected 6/);
  });
});

describe('QuantGRU vs IntGRU', () => {
  for (const weightBits of [8, 4, 2]) {
    it(`weightBits ${weightBits}: the eval-mode fake-quant output equals the integer runtime bit for bit (batch-first, with h0)`, () => {
      const rng = new Rng(3 + weightBits);
      const [N, L, I, H] = [4, 7, 5, 8];
      const model = new QuantGRU(I, H, { rng, weightBits, batchFirst: true });
      // Larger weights so that the gates and the int16 clamps are exercised, not just the linear region.
      for (const w of [model.weightIh, model.weightHh]) for (let i = 0; i < w.size; i++) w.data[i] = (rng.uniform() * 2 - 1) * 1.5;
      const x = randn([N, L, I], { rng });
      const h0 = new Tensor(Float32Array.from({ length: N * H }, () => rng.uniform() * 2 - 1), [N, H]);
      model.forward(x, h0);
      model.forward(x);
      model.eval();
      const [out, hN] = noGrad(() => model.forward(x, h0));
      const runtime = convertQuantGRU(model);
      assert.equal(runtime.params.weightBits, weightBits);
      const top = 2 ** (weightBits - 1) - 1;
      assert.ok(runtime.params.weightIh.every((v) => Math.abs(v) <= top) && runtime.params.weightHh.some((v) => Math.abs(v) === top));
      const sh = model.hiddenScale;
      // IntGRU is time-major; the model is batch-first.
      const xt = new Float32Array(L * N * I);
      for (let n = 0; n < N; n++) for (let t = 0; t < L; t++) for (let j = 0; j < I; j++) xt[(t * N + n) * I + j] = x.data[(n * L + t) * I + j]!;
      const { output, state: { h } } = runtime.run(runtime.quantizeInput(xt), L, N, Int8Array.from(h0.data, (v) => Math.round(v / sh)));
      let saturatedGates = 0;
      for (let n = 0; n < N; n++) {
        for (let t = 0; t < L; t++) {
          for (let k = 0; k < H; k++) {
            const q = out.data[(n * L + t) * H + k]! / sh;
            assert.ok(Math.abs(q - Math.round(q)) < 1e-4, 'the fake-quant output lies on the int8 grid');
            assert.equal(Math.round(q), output[(t * N + n) * H + k], `n ${n} t ${t} k ${k}`);
          }
        }
      }
      assert.deepEqual(Array.from(hN.data, (v) => Math.round(v / sh)), Array.from(h));
      // The case is not trivial: some h codes saturate or sit at large values.
      for (const v of output) if (Math.abs(v) >= 100) saturatedGates++;
      assert.ok(saturatedGates > 0);
    });
  }

  it('convertQuantGRU refuses float or never-observed models', () => {
    assert.throws(() => convertQuantGRU(new QuantGRU(2, 2, { quantize: false, segments: 8 })), /quantize=false/);
    assert.throws(() => convertQuantGRU(new QuantGRU(2, 2, { segments: 8 })), /never observed/);
    assert.throws(() => new QuantGRU(2, 2, { weightBits: 1 }), /weightBits must be an integer in \[2, 8\], got 1/);
    assert.throws(() => QuantGRU.fromGRU(new GRU(2, 3, { numLayers: 2 })), /one-layer/);
  });
});

/** A GRU step in float64 with explicit weights: the reference the bounds are stated against. */
function gruStep64(W: Float64Array, U: Float64Array, bih: Float64Array, bhh: Float64Array, I: number, H: number, x: ArrayLike<number>, h: ArrayLike<number>) {
  const dot = (M: Float64Array, cols: number, r: number, v: ArrayLike<number>): number => {
    let s = 0;
    for (let j = 0; j < cols; j++) s += M[r * cols + j]! * v[j]!;
    return s;
  };
  const out = { r: [] as number[], z: [] as number[], n: [] as number[], hn: [] as number[], h: [] as number[] };
  for (let k = 0; k < H; k++) {
    const r = sigmoidExact(dot(W, I, k, x) + bih[k]! + dot(U, H, k, h) + bhh[k]!);
    const z = sigmoidExact(dot(W, I, H + k, x) + bih[H + k]! + dot(U, H, H + k, h) + bhh[H + k]!);
    const hn = dot(U, H, 2 * H + k, h) + bhh[2 * H + k]!;
    const n = Math.tanh(dot(W, I, 2 * H + k, x) + bih[2 * H + k]! + r * hn);
    out.r.push(r); out.z.push(z); out.n.push(n); out.hn.push(hn);
    out.h.push((1 - z) * n + z * h[k]!);
  }
  return out;
}

/** sup over the real line of |pwl − f|: a dense scan of [−9, 9] (+ spacing: |pwl − f| is 2-Lipschitz) and the limits at ±∞. */
function pwlSupError(pwl: Pwl, f: (x: number) => number, limits: [number, number]): number {
  const spacing = 1e-4;
  let worst = 0;
  for (let x = -9; x <= 9; x += spacing) worst = Math.max(worst, Math.abs(evalPwl(pwl, x) - f(x)));
  const n = pwl.values.length;
  const end = pwl.values[n - 1]! + pwl.slopes[n - 1]! * (pwl.knots[n]! - pwl.knots[n - 1]!);
  return Math.max(worst + spacing, Math.abs(pwl.values[0]! - limits[0]), Math.abs(end - limits[1]));
}

describe('QuantGRU against a float64 GRU (16 PWL segments)', () => {
  const tables = lstmPwlTables(16);
  const epsSigma = pwlSupError(pwlOfInt(tables.sigmoid), sigmoidExact, [0, 1]);
  const epsTanh = pwlSupError(pwlOfInt(tables.tanh), Math.tanh, [-1, 1]);
  const slope = (t: IntPwl): number => Math.max(...Array.from(t.slopes, (s) => Math.abs(s) / 32768));
  const [I, H, N, L] = [4, 8, 3, 6];

  function setup(seed: number) {
    const rng = new Rng(seed);
    const gru = new GRU(I, H, { rng, dtype: 'float64' });
    const sd = gru.stateDict();
    const get = (k: string): Float64Array => Float64Array.from(sd.get(k)!.data);
    const x = random64([L, N, I], rng, 1.5);
    const [ref] = noGrad(() => gru.forward(x));
    return { rng, gru, W: get('weight_ih_l0'), U: get('weight_hh_l0'), bih: get('bias_ih_l0'), bhh: get('bias_hh_l0'), x, ref };
  }

  it('nn.GRU (float64) equals the explicit float64 step the bounds use', () => {
    const { W, U, bih, bhh, x, ref } = setup(5);
    for (let n = 0; n < N; n++) {
      let h = new Array<number>(H).fill(0);
      for (let t = 0; t < L; t++) {
        h = gruStep64(W, U, bih, bhh, I, H, x.data.subarray((t * N + n) * I, (t * N + n + 1) * I), h).h;
        for (let k = 0; k < H; k++) assert.ok(Math.abs(h[k]! - ref.data[(t * N + n) * H + k]!) < 1e-12);
      }
    }
  });

  it(`float PWL GRU (quantize=false): per step within (1+ε_σ)(ε_tanh + ε_σ|W_hn h + b_hn|) + ε_σ|n − h| of the float64 GRU`, () => {
    // Derivation, from the same h and x: |r̃ − r|, |z̃ − z| ≤ ε_σ; |ñ − n| ≤ ε_tanh + |r̃ − r|·|hn| (tanh is
    // 1-Lipschitz); h̃' − h' = (1 − z̃)(ñ − n) + (z − z̃)(n − h).
    assert.ok(epsSigma < 5e-3 && epsTanh < 1e-2, `PWL errors ε_σ ${epsSigma}, ε_tanh ${epsTanh}`);
    const { gru, W, U, bih, bhh, x, ref } = setup(6);
    const model = QuantGRU.fromGRU(gru, { quantize: false });
    let worstRatio = 0;
    for (let t = 0; t < L; t++) {
      const hPrev = t === 0 ? new Float64Array(N * H) : ref.data.subarray((t - 1) * N * H, t * N * H);
      const [, hNew] = noGrad(() => model.forward(new Tensor(x.data.slice(t * N * I, (t + 1) * N * I), [1, N, I]), new Tensor(Float64Array.from(hPrev), [N, H])));
      for (let n = 0; n < N; n++) {
        const e = gruStep64(W, U, bih, bhh, I, H, x.data.subarray((t * N + n) * I, (t * N + n + 1) * I), hPrev.subarray(n * H, (n + 1) * H));
        for (let k = 0; k < H; k++) {
          const bound = (1 + epsSigma) * (epsTanh + epsSigma * Math.abs(e.hn[k]!)) + epsSigma * Math.abs(e.n[k]! - hPrev[n * H + k]!);
          const err = Math.abs(hNew.data[n * H + k]! - e.h[k]!);
          assert.ok(err <= bound, `t ${t} n ${n} k ${k}: ${err} > ${bound}`);
          worstRatio = Math.max(worstRatio, err / bound);
        }
      }
    }
    // Measured: worst error/bound 0.53 (seed 6).
    assert.ok(worstRatio > 0.05, `the bound is not loose beyond reason (worst error/bound ${worstRatio})`);
  });

  it('fake-quant GRU (quantize=true, 8-bit): per step within the derived operand-quantization + rounding + PWL bound', () => {
    const { gru, W, U, bih, bhh, x, ref } = setup(7);
    const model = QuantGRU.fromGRU(gru);
    // Calibrate the int8 ranges on the sequence and the reference states.
    model.forward(x);
    model.eval();
    const sx = model.inputScale;
    const sh = model.hiddenScale;
    const [wq, uq] = model.quantizedWeights();
    const Wq = Float64Array.from(wq.data);
    const Uq = Float64Array.from(uq.data);
    const grid = (v: number, s: number): number => clamp(Math.round(v / s), -127, 127) * s;
    const [Ls, Lt] = [slope(tables.sigmoid), slope(tables.tanh)];
    const half12 = 2 ** -13;
    const half15 = 2 ** -16;
    let worstRatio = 0;
    for (let t = 0; t < L; t++) {
      const hPrev = t === 0 ? new Float64Array(N * H) : ref.data.subarray((t - 1) * N * H, t * N * H);
      const x32 = x.data.subarray(t * N * I, (t + 1) * N * I);
      const [, hNew] = noGrad(() => model.forward(new Tensor(Float64Array.from(x32), [1, N, I]), new Tensor(Float64Array.from(hPrev), [N, H])));
      for (let n = 0; n < N; n++) {
        const xs = x32.subarray(n * I, (n + 1) * I);
        const hs = hPrev.subarray(n * H, (n + 1) * H);
        const e = gruStep64(W, U, bih, bhh, I, H, xs, hs);
        const xh = Array.from(xs, (v) => grid(v, sx));
        const hh = Array.from(hs, (v) => grid(v, sh));
        // |Ŵx̂ − Wx| per row, exactly (both sums in float64), + the requantization (½ LSB of Q3.12 and
        // the multiplier's relative error 2^−31 on |Ŵx̂| ≤ 2^24 LSB).
        const rowErr = (Mq: Float64Array, M: Float64Array, cols: number, r: number, vq: number[], v: ArrayLike<number>): number => {
          let a = 0;
          let b = 0;
          for (let j = 0; j < cols; j++) {
            a += Mq[r * cols + j]! * vq[j]!;
            b += M[r * cols + j]! * v[j]!;
          }
          return Math.abs(a - b) + half12 + 2 ** -19;
        };
        for (let k = 0; k < H; k++) {
          assert.ok(Math.abs(e.hn[k]!) < 7.9, 'the reference W_hn·h + b_hn stays inside the int16 range');
          const eR = rowErr(Wq, W, I, k, xh, xs) + rowErr(Uq, U, H, k, hh, hs) + half12;
          const eZ = rowErr(Wq, W, I, H + k, xh, xs) + rowErr(Uq, U, H, H + k, hh, hs) + half12;
          const dR = epsSigma + Ls * eR + half15;
          const dZ = epsSigma + Ls * eZ + half15;
          const eHn = rowErr(Uq, U, H, 2 * H + k, hh, hs) + half12;
          const eN = rowErr(Wq, W, I, 2 * H + k, xh, xs) + half12 + (1 + dR) * eHn + dR * Math.abs(e.hn[k]!) + half12;
          const dN = epsTanh + Lt * eN + half15;
          // h̃' − h' = (1 − z̃)(ñ − n) + (z − z̃)(n − h) + z̃(ĥ − h), then ½ LSB of Q0.15, ½ LSB of h twice.
          const bound = (1 + dZ) * dN + dZ * Math.abs(e.n[k]! - hs[k]!) + (1 + dZ) * sh / 2 + half15 + sh + 1e-6;
          const err = Math.abs(hNew.data[n * H + k]! - e.h[k]!);
          assert.ok(err <= bound, `t ${t} n ${n} k ${k}: ${err} > ${bound}`);
          worstRatio = Math.max(worstRatio, err / bound);
        }
      }
    }
    // Measured: worst error/bound 0.43 (seed 7).
    assert.ok(worstRatio > 0.05, `worst error/bound ${worstRatio}`);
  });
});

describe('QuantGRU gradients', () => {
  it('quantize=false: gradients of x, h0 and every parameter match float64 finite differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(3);
      const model = new QuantGRU(3, 2, { quantize: false, dtype: 'float64', rng, segments: 8 });
      const x = random64([3, 2, 3], rng, 2).requiresGrad_();
      const h0 = random64([2, 2], rng).requiresGrad_();
      const result = gradcheck(() => {
        const [out, h] = model.forward(x, h0);
        return concat([reshape(out, [out.size]), reshape(h, [h.size])], 0);
      }, [x, h0, ...model.parameters()]);
      assert.equal(result.relativeErrors.length, 6);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });

  it('quantize=true (straight-through): the weight gradients point the way of the float PWL GRU\'s', () => {
    const rng = new Rng(11);
    const float = new QuantGRU(4, 8, { quantize: false, rng });
    const fake = new QuantGRU(4, 8);
    fake.loadStateDict(float.stateDict());
    const x = randn([5, 3, 4], { rng });
    const probe = randn([5, 3, 8], { rng });
    fake.forward(x);
    fake.eval();
    const grads = [float, fake].map((m) => {
      sum(mul(m.forward(x)[0], probe)).backward();
      return m.parameters().map((p) => Float64Array.from(p.grad!.data));
    });
    for (let i = 0; i < grads[0]!.length; i++) {
      const [a, b] = [grads[0]![i]!, grads[1]![i]!];
      let dot = 0, na = 0, nb = 0;
      for (let j = 0; j < a.length; j++) { dot += a[j]! * b[j]!; na += a[j]! ** 2; nb += b[j]! ** 2; }
      const cosine = dot / Math.sqrt(na * nb);
      // Measured: cosines 0.9993 .. 0.9997.
      assert.ok(cosine > 0.95, `parameter ${i}: cosine ${cosine}`);
    }
  });

  it('QAT trains (straight-through gradients): the loss on a tiny sequence task drops by more than half', () => {
    const rng = new Rng(21);
    assertLearnsRunningMean(new QuantGRU(2, 8, { rng, segments: 8 }), rng);
  });
});
