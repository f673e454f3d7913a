import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import './index.ts';
import { grad } from '../../autograd/engine.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { Rng } from '../../tensor/random.ts';
import { createQuantizer } from './quantizer.ts';
import type { IrNetQuantizer } from './irnet.ts';
import { assertClose, assertExportReproduces, maxDistinctPerChannel, randomTensor } from './testing.ts';

const rng = new Rng(505);
const sgn = (v: number): number => (v >= 0 ? 1 : -1);

describe("quantizers: 'binary' (BinaryConnect / XNOR-Net)", () => {
  it('weights: y = mean|w_c|·sign(w) with sign(0) = +1; gradient α·1{|w| ≤ 1} + sign(w_i)·Σ g_j sign(w_j)/n', () => {
    const shape = [3, 5];
    const w = randomTensor(rng, shape, { std: 0.8 }).requiresGrad_();
    const q = createQuantizer({ kind: 'binary', bits: 1 }, { role: 'weight', shape });
    const y = q.forward(w);
    const gy = randomTensor(rng, shape);
    const [gw] = grad(y, [w], { gradOutputs: [gy] });
    for (let c = 0; c < 3; c++) {
      const row = [...w.data.subarray(c * 5, c * 5 + 5)];
      const alpha = row.reduce((a, v) => a + Math.abs(v), 0) / 5;
      const dot = row.reduce((a, v, j) => a + gy.data[c * 5 + j]! * sgn(v), 0);
      row.forEach((v, j) => {
        const i = c * 5 + j;
        assertClose([y.data[i]!], [alpha * sgn(v)], 1e-12);
        assertClose([gw!.data[i]!], [gy.data[i]! * alpha * (Math.abs(v) <= 1 ? 1 : 0) + (sgn(v) * dot) / 5], 1e-12);
      });
    }
    assert.ok(maxDistinctPerChannel(y, 0) <= 2);
    assertExportReproduces(q.exportQuant(), w, y, 1e-6);
    const zero = createQuantizer({ kind: 'binary', bits: 1 }, { role: 'activation' }).forward(new Tensor(Float32Array.of(0, -0.5, 2), [3]));
    assert.deepEqual(zero.toArray(), [1, -1, 1]);
  });

  it("activations: α = 1, gradient 'approxSign' max(0, 2 − 2|x|), 'ste' 1", () => {
    const x = randomTensor(rng, [20]).requiresGrad_();
    const approx = createQuantizer({ kind: 'binary', bits: 1, gradient: 'approxSign' }, { role: 'activation' });
    const y = approx.forward(x);
    assert.deepEqual(y.toArray(), [...x.data].map(sgn));
    assertClose(grad(y, [x])[0]!.data, [...x.data].map((v) => Math.max(0, 2 - 2 * Math.abs(v))), 1e-12);
    const ste = createQuantizer({ kind: 'binary', bits: 1, gradient: 'ste' }, { role: 'activation' });
    assert.deepEqual(grad(ste.forward(x), [x])[0]!.toArray(), Array(20).fill(1));
    assert.deepEqual(approx.exportQuant(), { type: 'binary', alpha: Float32Array.of(1), axis: null });
  });
});

describe("quantizers: 'binary' with magnitudeAware (Bi-Real Net weight gradient)", () => {
  it('same forward as the scaled binarizer; gradient g·α_c·σ′(w) with α_c = mean|w_c| held constant', () => {
    const shape = [3, 4, 2];
    const n = 8;
    const w = randomTensor(rng, shape, { std: 0.9 }).requiresGrad_();
    const gy = randomTensor(rng, shape);
    for (const gradient of ['clipped', 'approxSign'] as const) {
      const q = createQuantizer({ kind: 'binary', bits: 1, granularity: 'channel', magnitudeAware: true, gradient }, { role: 'weight', shape, channelAxis: 0 });
      const plain = createQuantizer({ kind: 'binary', bits: 1, granularity: 'channel', gradient }, { role: 'weight', shape, channelAxis: 0 });
      const y = q.forward(w);
      assert.deepEqual(y.toArray(), plain.forward(w).toArray());
      const [gw] = grad(y, [w], { gradOutputs: [gy] });
      const sigma = (v: number): number => (gradient === 'clipped' ? (Math.abs(v) <= 1 ? 1 : 0) : Math.max(0, 2 - 2 * Math.abs(v)));
      let differsFromExact = false;
      for (let c = 0; c < 3; c++) {
        const row = [...w.data.subarray(c * n, c * n + n)];
        const alpha = row.reduce((a, v) => a + Math.abs(v), 0) / n;
        const dot = row.reduce((a, v, j) => a + gy.data[c * n + j]! * sgn(v), 0);
        row.forEach((v, j) => {
          const i = c * n + j;
          assertClose([gw!.data[i]!], [gy.data[i]! * alpha * sigma(v)], 1e-12, `${gradient} gradient ${i}`);
          if (Math.abs(sgn(v) * dot) / n > 1e-6) differsFromExact = true;
        });
      }
      // The cross term the magnitude-aware form drops is not negligible on these values.
      assert.ok(differsFromExact);
    }
    const q = createQuantizer({ kind: 'binary', bits: 1, granularity: 'channel', magnitudeAware: true }, { role: 'weight', shape, channelAxis: 0 });
    const yq = q.forward(w);
    assertExportReproduces(q.exportQuant(), w, yq, 1e-6);
  });

  it('the gradient is the float64 finite-difference gradient of the surrogate α·clamp(w, −1, 1) with α frozen', () => {
    const shape = [2, 5];
    const w = new Tensor(Float64Array.from({ length: 10 }, (_, i) => [0.3, -1.4, 0.05, -0.7, 2.1, -0.2, 0.9, -0.6, 1.3, 0.45][i]!), shape).requiresGrad_();
    const gy = new Tensor(Float64Array.from({ length: 10 }, (_, i) => Math.sin(i + 1)), shape);
    const q = createQuantizer({ kind: 'binary', bits: 1, granularity: 'channel', magnitudeAware: true }, { role: 'weight', shape, channelAxis: 0 });
    const [gw] = grad(q.forward(w), [w], { gradOutputs: [gy] });
    const alpha = [0, 1].map((c) => [...w.data.subarray(c * 5, c * 5 + 5)].reduce((a, v) => a + Math.abs(v), 0) / 5);
    const surrogate = (v: Float64Array): number => v.reduce((a, x, i) => a + gy.data[i]! * alpha[Math.floor(i / 5)]! * Math.min(1, Math.max(-1, x)), 0);
    const eps = 1e-6;
    const numeric = [...w.data].map((x, i) => {
      const v = Float64Array.from(w.data);
      v[i] = x + eps;
      const plus = surrogate(v);
      v[i] = x - eps;
      return (plus - surrogate(v)) / (2 * eps);
    });
    assertClose(gw!.data, numeric, 1e-8);
  });

  it('needs scaled: true', () => {
    assert.throws(() => createQuantizer({ kind: 'binary', bits: 1, magnitudeAware: true }, { role: 'activation' }), /'magnitudeAware'.*needs scaled: true.*default for activations/);
    assert.throws(() => createQuantizer({ kind: 'binary', bits: 1, magnitudeAware: 'yes' }, { role: 'weight', shape: [2, 2] }), /magnitudeAware/);
  });
});

describe("quantizers: 'irnet' (IR-Net / DIR-Net)", () => {
  it('balanced, standardized weights, power-of-two scale, EDE gradient at annealed (t, k)', () => {
    const shape = [2, 9];
    const w = randomTensor(rng, shape, { mean: 0.3 }).requiresGrad_();
    const q = createQuantizer({ kind: 'irnet', bits: 1 }, { role: 'weight', shape }) as IrNetQuantizer;
    q.setProgress(3, 10);
    // progress is a float32 buffer: 0.3 up to float32 rounding
    assertClose([q.edeParameters().t, q.edeParameters().k], [0.1 * 10 ** (0.3 * Math.log10(100)), 1 / (0.1 * 10 ** 0.6)], 1e-6);
    const { t, k } = q.edeParameters();
    const y = q.forward(w);
    const gy = randomTensor(rng, shape);
    const [gw] = grad(y, [w], { gradOutputs: [gy] });
    for (let c = 0; c < 2; c++) {
      const row = [...w.data.subarray(c * 9, c * 9 + 9)];
      const n = 9;
      const mu = row.reduce((a, v) => a + v, 0) / n;
      const sigma = Math.sqrt(row.reduce((a, v) => a + (v - mu) ** 2, 0) / (n - 1));
      const hat = row.map((v) => (v - mu) / sigma);
      const scale = 2 ** Math.round(Math.log2(hat.reduce((a, v) => a + Math.abs(v), 0) / n));
      const h = hat.map((v, j) => gy.data[c * 9 + j]! * scale * k * t * (1 - Math.tanh(t * v) ** 2));
      const hMean = h.reduce((a, v) => a + v, 0) / n;
      const hatDotH = hat.reduce((a, v, j) => a + v * h[j]!, 0);
      hat.forEach((v, j) => {
        assertClose([y.data[c * 9 + j]!], [scale * sgn(v)], 1e-12, 'forward');
        assertClose([gw!.data[c * 9 + j]!], [(h[j]! - hMean - (v * hatDotH) / (n - 1)) / sigma], 1e-9, 'EDE gradient');
      });
    }
    assert.ok(maxDistinctPerChannel(y, 0) <= 2);
    assertExportReproduces(q.exportQuant(), w, y);
    q.setProgress(10, 10);
    assertClose([q.edeParameters().t, q.edeParameters().k], [10, 1], 1e-12);
    const r = createQuantizer({ kind: 'irnet', bits: 1 }, { role: 'weight', shape }) as IrNetQuantizer;
    r.loadStateDict(q.stateDict());
    assert.deepEqual(r.edeParameters(), q.edeParameters());
  });
});

describe("quantizers: 'smoothBinary' (annealed tanh relaxation)", () => {
  it('training: α·tanh(β·w) with β = β₀·growth^epoch and its exact gradient; eval/export: α·sign(w)', () => {
    const shape = [2, 6];
    const w = randomTensor(rng, shape).requiresGrad_();
    const q = createQuantizer({ kind: 'smoothBinary', bits: 1, beta0: 2, betaGrowth: 1.5 }, { role: 'weight', shape });
    q.setProgress(3, 10);
    const beta = 2 * 1.5 ** 3;
    const y = q.forward(w);
    const [gw] = grad(y, [w]);
    for (let c = 0; c < 2; c++) {
      const row = [...w.data.subarray(c * 6, c * 6 + 6)];
      const alpha = row.reduce((a, v) => a + Math.abs(v), 0) / 6;
      row.forEach((v, j) => {
        assertClose([y.data[c * 6 + j]!], [alpha * Math.tanh(beta * v)], 1e-12);
        assertClose([gw!.data[c * 6 + j]!], [alpha * beta * (1 - Math.tanh(beta * v) ** 2)], 1e-9);
      });
    }
    q.eval();
    const yb = q.forward(w);
    assert.ok(maxDistinctPerChannel(yb, 0) <= 2);
    assertExportReproduces(q.exportQuant(), w, yb, 1e-6);
  });
});

describe("quantizers: 'ternary' (TWN)", () => {
  it('Δ = 0.7·mean|w_c|, α = mean{|w| > Δ}, values {−α, 0, α}, STE gradient', () => {
    const shape = [3, 8];
    const w = randomTensor(rng, shape).requiresGrad_();
    const q = createQuantizer({ kind: 'ternary', bits: 2 }, { role: 'weight', shape });
    const y = q.forward(w);
    for (let c = 0; c < 3; c++) {
      const row = [...w.data.subarray(c * 8, c * 8 + 8)];
      const delta = (0.7 * row.reduce((a, v) => a + Math.abs(v), 0)) / 8;
      const big = row.filter((v) => Math.abs(v) > delta).map(Math.abs);
      const alpha = big.reduce((a, v) => a + v, 0) / big.length;
      row.forEach((v, j) => assertClose([y.data[c * 8 + j]!], [Math.abs(v) > delta ? alpha * sgn(v) : 0], 1e-6));
    }
    assert.ok(maxDistinctPerChannel(y, 0) <= 3);
    assert.deepEqual(grad(y, [w])[0]!.toArray(), Array(24).fill(1));
    assertExportReproduces(q.exportQuant(), w, y, 1e-6);
  });
});
