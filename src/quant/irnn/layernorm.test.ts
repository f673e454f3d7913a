import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { grad, noGrad } from '../../autograd/index.ts';
import { withBackend } from '../../backend/index.ts';
import { mul, Rng, sum, Tensor } from '../../tensor/index.ts';
import {
  bitLength, convertQuantLayerNorm, intLayerNormRow, isqrtFloor, isqrtRound, layerNormParams, NORM_FRAC, QuantLayerNorm, sqrtSizeConstant,
  type IntLayerNormParams,
} from './layernorm.ts';

function bigSqrtFloor(n: bigint): bigint {
  if (n < 2n) return n;
  let x = 1n << BigInt(Math.ceil(n.toString(2).length / 2));
  for (;;) {
    const y = (x + n / x) >> 1n;
    if (y >= x) return x;
    x = y;
  }
}

function random64(shape: number[], rng: Rng, scale = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

/** Plain γ = 1 (code 2^12 at s_γ = 2^−12), β = 0, output on the n grid: y = n. */
function identityParams(size: number, epsCode = 0): IntLayerNormParams {
  return { ...layerNormParams(new Int32Array(size).fill(4096), 2 ** -12, new Int32Array(size), 0, 1, 2 ** -NORM_FRAC, -(2 ** 30), 2 ** 30), epsCode };
}

describe('integer square root', () => {
  it('isqrtFloor is ⌊√n⌋ exactly (BigInt reference) and isqrtRound is √n rounded, on edge and random values', () => {
    const rng = new Rng(5);
    const values: number[] = [0, 1, 2, 3, 4, 15, 16, 17, 2 ** 28, 2 ** 52 - 1, 2 ** 51, (2 ** 26 - 1) ** 2, (2 ** 26 - 1) ** 2 - 1, (2 ** 26 - 1) ** 2 + 1];
    for (let i = 0; i < 3000; i++) values.push(Math.floor(2 ** (rng.uniform() * 52)));
    for (let i = 0; i < 300; i++) {
      const r = Math.floor(rng.uniform() * 2 ** 26);
      values.push(r * r, r * r + r, r * r + r + 1, Math.max(0, r * r - 1));
    }
    for (const n of values) {
      const f = isqrtFloor(n);
      assert.equal(BigInt(f), bigSqrtFloor(BigInt(n)), `floor sqrt ${n}`);
      const r = isqrtRound(n);
      assert.ok(Math.abs(r - Math.sqrt(n)) <= 0.5, `round sqrt ${n}: ${r}`);
    }
    assert.throws(() => isqrtFloor(2 ** 52), RangeError);
    assert.throws(() => isqrtFloor(-1), RangeError);
  });

  it('as the normaliser: 1/round(√Q) is within 2^−15 (relative) of 1/Math.sqrt(Q) for every Q ≥ 2^28 the kernel can see', () => {
    const rng = new Rng(6);
    let worst = 0;
    for (let i = 0; i < 5000; i++) {
      const q = Math.floor(2 ** (28 + rng.uniform() * 23.9));
      const exact = 1 / Math.sqrt(q);
      worst = Math.max(worst, Math.abs(1 / isqrtRound(q) - exact) / exact);
    }
    // Measured 3.03e-5 (the bound 2^−15 = 3.05e-5: round(√Q) is within 0.5 of √Q ≥ 2^14).
    assert.ok(worst <= 2 ** -15, `relative error ${worst}`);
    assert.equal(sqrtSizeConstant(512), Math.round(Math.sqrt(512) * 2 ** 20));
    assert.equal(sqrtSizeConstant(4), 2 ** 21);
    assert.equal(bitLength(0), 0);
    assert.equal(bitLength(2 ** 40), 41);
    assert.equal(bitLength(2 ** 40 - 1), 40);
  });
});

describe('intLayerNormRow', () => {
  it('normalised values n match a float64 layer norm within the stated bound (int8, int16, ±2^24 and tiny ranges, eps)', () => {
    const rng = new Rng(11);
    let worst = 0;
    const cases: [string, number, () => number, number][] = [
      ['int8', 64, () => Math.floor(rng.uniform() * 255) - 127, 0],
      ['int8, D = 512', 512, () => Math.floor(rng.uniform() * 255) - 127, 0],
      ['int16', 48, () => Math.floor(rng.uniform() * 65536) - 32768, 0],
      ['±2^24', 37, () => Math.floor((rng.uniform() * 2 - 1) * 2 ** 24), 0],
      ['tiny range {5, 6}', 33, () => (rng.uniform() < 0.3 ? 6 : 5), 0],
      ['tiny range with eps', 33, () => (rng.uniform() < 0.3 ? 6 : 5), 3],
      ['int16 with eps', 100, () => Math.floor(rng.uniform() * 2000) - 1000, 40000],
      ['D = 3', 3, () => Math.floor(rng.uniform() * 255) - 127, 0],
    ];
    for (const [what, D, draw, epsCode] of cases) {
      const p = identityParams(D, epsCode);
      for (let trial = 0; trial < 20; trial++) {
        const v = Float64Array.from({ length: D }, draw);
        const out = new Float64Array(D);
        const n = new Float64Array(D);
        intLayerNormRow(p, v, 0, out, 0, n);
        const m = v.reduce((a, b) => a + b, 0) / D;
        const variance = v.reduce((a, b) => a + (b - m) ** 2, 0) / D;
        const sigma = Math.sqrt(variance + epsCode);
        if (sigma === 0) continue;
        for (let i = 0; i < D; i++) {
          const exact = (v[i]! - m) / sigma;
          // Bound: n's rounding 2^−13, √ rounding 2^−15·|n| (+ margin), e's rounding when k > 0.
          const bound = 2 ** -13 + 2 ** -14 * Math.abs(exact) + 0.5 * Math.sqrt(D) * 2 ** -14;
          const err = Math.abs(n[i]! / 2 ** NORM_FRAC - exact);
          assert.ok(err <= bound, `${what}: n ${n[i]! / 4096} vs ${exact} (bound ${bound})`);
          assert.equal(out[i], n[i], 'γ = 1, β = 0 on the n grid gives y = n');
          worst = Math.max(worst, err);
        }
      }
    }
    // Measured: 1.75e-4 at worst over these cases.
    assert.ok(worst < 4e-4, `worst ${worst}`);
  });

  it('a constant row (variance 0) gives β; D = 1 is always constant', () => {
    const beta = Int32Array.from([256 * 3, -256 * 5, 1000, 0]);
    const p = layerNormParams(new Int32Array(4).fill(32767), 1 / 32767, beta, 0, 0.01, 0.02, -127, 127);
    const out = new Int32Array(4);
    intLayerNormRow(p, [7, 7, 7, 7], 0, out, 0);
    assert.deepEqual(Array.from(out), [3, -5, 4, 0]);
    const one = layerNormParams(Int32Array.of(100), 0.01, Int32Array.of(-256 * 9), 0, 0.01, 0.02, -127, 127);
    const y = new Int32Array(1);
    intLayerNormRow(one, [-120], 0, y, 0);
    assert.equal(y[0], -9);
  });
});

describe('QuantLayerNorm ↔ IntLayerNorm', () => {
  it('the fake-quant forward equals the integer runtime bit for bit (random rows, constant rows, tiny and saturating ranges, eps > 0, no β)', () => {
    const rng = new Rng(12);
    for (const [D, options] of [[24, {}], [7, { bias: false }], [16, { eps: 1 }]] as const) {
      const model = new QuantLayerNorm(D, options);
      for (let i = 0; i < D; i++) {
        model.weight.data[i] = 0.5 + rng.uniform() * 2 * (i % 3 === 0 ? -1 : 1);
        if (model.bias) model.bias.data[i] = rng.uniform() - 0.5;
      }
      const rows = 40;
      const data = new Float32Array(rows * D);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < D; i++) {
          const kind = r % 5;
          data[r * D + i] = kind === 0 ? 1.25 // constant row
            : kind === 1 ? (i === r % D ? 0.04 : 0.03) // one code apart (tiny range)
              : kind === 2 ? (rng.uniform() * 2 - 1) * 50 // saturates the int8 input
                : (rng.uniform() * 2 - 1) * 3;
        }
      }
      const x = new Tensor(data, [rows, D]);
      for (let step = 0; step < 3; step++) model.forward(x);
      model.eval();
      const y = noGrad(() => model.forward(x));
      const runtime = convertQuantLayerNorm(model);
      const codes = runtime.run(runtime.quantizeInput(data), rows);
      // Bit for bit: the float32 the fake quantization outputs is the runtime code times the output scale.
      for (let i = 0; i < codes.length; i++) assert.equal(y.data[i], Math.fround(codes[i]! * runtime.outputScale), `D ${D} element ${i}`);
      if (options.eps) assert.ok(runtime.params.epsCode > 0);
      // Constant rows give β (0 without bias): the normalised part is exactly 0.
      for (let i = 0; i < D; i++) assert.equal(codes[i], model.bias ? Math.max(-127, Math.min(127, Math.round(model.bias.data[i]! / runtime.outputScale))) + 0 : 0);
    }
    assert.throws(() => convertQuantLayerNorm(new QuantLayerNorm(4)), /never observed/);
  });

  it('the integer output is within about 1 LSB of a float64 layer norm of the quantized input (γ, β quantized)', () => {
    const rng = new Rng(13);
    const D = 32;
    const model = new QuantLayerNorm(D);
    for (let i = 0; i < D; i++) {
      model.weight.data[i] = 0.5 + rng.uniform();
      model.bias!.data[i] = rng.uniform() - 0.5;
    }
    const x = new Tensor(Float32Array.from({ length: 10 * D }, () => (rng.uniform() * 2 - 1) * 2), [10, D]);
    model.forward(x);
    model.eval();
    const runtime = convertQuantLayerNorm(model);
    const xq = runtime.quantizeInput(x.data);
    const codes = runtime.run(xq, 10);
    let worst = 0;
    for (let r = 0; r < 10; r++) {
      const v = Array.from(xq.subarray(r * D, (r + 1) * D));
      const m = v.reduce((a, b) => a + b, 0) / D;
      const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / D + runtime.params.epsCode);
      for (let i = 0; i < D; i++) {
        const ref = ((v[i]! - m) / sd) * model.weight.data[i]! + model.bias!.data[i]!;
        worst = Math.max(worst, Math.abs(codes[r * D + i]! - Math.max(-127, Math.min(127, ref / runtime.outputScale))));
      }
    }
    // Measured 0.507 LSB: the final rounding (0.5) plus the normalisation's and γ's errors.
    assert.ok(worst < 1, `worst ${worst} LSB`);
  });
});

describe('QuantLayerNorm gradients', () => {
  it('quantize=false: gradients of x, γ and β match float64 finite differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(14);
      const model = new QuantLayerNorm(5, { quantize: false, dtype: 'float64' });
      for (const p of model.parameters()) for (let i = 0; i < p.size; i++) p.data[i] = rng.uniform() * 2 - 1;
      const x = random64([3, 5], rng, 2).requiresGrad_();
      const result = gradcheck(() => model.forward(x), [x, ...model.parameters()]);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.join(' ')}`);
    });
  });

  it('quantize=true: the gradient is the closed-form layer-norm gradient at the quantized input with the quantized γ (straight-through)', () => {
    withBackend('reference', () => {
      const rng = new Rng(15);
      const D = 6;
      const rows = 4;
      const model = new QuantLayerNorm(D, { dtype: 'float64' });
      for (let i = 0; i < D; i++) {
        model.weight.data[i] = 0.5 + rng.uniform();
        model.bias!.data[i] = 0.2 * (rng.uniform() - 0.5);
      }
      const x = random64([rows, D], rng, 1).requiresGrad_();
      model.forward(x);
      model.outputAbsMax.data[0] = 10; // a wide output range: no clamp, so the straight-through gradient is the whole story
      const R = random64([rows, D], rng, 1);
      const y = model.forward(x);
      const [gx, gGamma, gBeta] = grad(sum(mul(y, R)), [x, model.weight, model.bias!]);
      const sIn = model.inputScale;
      const sGamma = Math.fround(Math.max(...model.weight.data.map(Math.abs)) / 32767);
      const gammaHat = Array.from(model.weight.data, (g) => Math.round(g / sGamma) * sGamma);
      const floorEps = 2 ** -16 * sIn * sIn;
      for (let r = 0; r < rows; r++) {
        const v = Array.from({ length: D }, (_, i) => Math.round(x.data[r * D + i]! / sIn) * sIn);
        const m = v.reduce((a, b) => a + b, 0) / D;
        const sigma = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / D + floorEps);
        const n = v.map((a) => (a - m) / sigma);
        const g = Array.from({ length: D }, (_, i) => R.data[r * D + i]! * gammaHat[i]!);
        const gMean = g.reduce((a, b) => a + b, 0) / D;
        const gnMean = g.reduce((a, b, i) => a + b * n[i]!, 0) / D;
        for (let i = 0; i < D; i++) {
          const expected = (g[i]! - gMean - n[i]! * gnMean) / sigma;
          assert.ok(Math.abs(gx!.data[r * D + i]! - expected) < 1e-9 * Math.max(1, Math.abs(expected)), `dx ${gx!.data[r * D + i]} vs ${expected}`);
        }
      }
      for (let i = 0; i < D; i++) {
        let dg = 0;
        let db = 0;
        for (let r = 0; r < rows; r++) {
          const v = Array.from({ length: D }, (_, j) => Math.round(x.data[r * D + j]! / sIn) * sIn);
          const m = v.reduce((a, b) => a + b, 0) / D;
          const sigma = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / D + floorEps);
          dg += R.data[r * D + i]! * (v[i]! - m) / sigma;
          db += R.data[r * D + i]!;
        }
        assert.ok(Math.abs(gGamma!.data[i]! - dg) < 1e-9, `dγ ${gGamma!.data[i]} vs ${dg}`);
        assert.ok(Math.abs(gBeta!.data[i]! - db) < 1e-12, `dβ ${gBeta!.data[i]} vs ${db}`);
      }
    });
  });
});
