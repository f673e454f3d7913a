import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import './index.ts';
import { grad } from '../../autograd/engine.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { Rng } from '../../tensor/random.ts';
import { createQuantizer } from './quantizer.ts';
import { adasteInnerSolution, adasteSlope, type AdaSteQuantizer } from './adaste.ts';
import { assertClose, assertExportReproduces, maxDistinctPerChannel, randomTensor } from './testing.ts';

const rng = new Rng(2022);
const sgn = (v: number): number => (v >= 0 ? 1 : -1);
const f64 = (values: number[], shape = [values.length]): Tensor => new Tensor(Float64Array.from(values), shape);

/** The gradient reaching θ (float64, unscaled AdaSTE) for upstream gradients g. */
function adasteGrad(theta: number[], g: number[], options: Record<string, number>, epoch = 0): number[] {
  const x = f64(theta).requiresGrad_();
  const q = createQuantizer({ kind: 'adaste', bits: 1, scaled: false, ...options }, { role: 'weight', shape: [theta.length] });
  q.setProgress(epoch, 1);
  const [gx] = grad(q.forward(x), [x], { gradOutputs: [f64(g)] });
  return [...gx!.data];
}

describe("quantizers: 'adaste' (AdaSTE, Le et al. 2022)", () => {
  it('forward is exactly α_c·sign(θ) with α_c = mean|θ_c| and sign(0) = +1, in training and eval; export reproduces it', () => {
    const shape = [3, 7];
    const w = randomTensor(rng, shape, { std: 0.6 });
    w.data[4] = 0;
    const q = createQuantizer({ kind: 'adaste', bits: 1, granularity: 'channel' }, { role: 'weight', shape, channelAxis: 0 });
    for (const mode of ['train', 'eval'] as const) {
      if (mode === 'eval') q.eval();
      const y = q.forward(w);
      for (let c = 0; c < 3; c++) {
        const row = [...w.data.subarray(c * 7, c * 7 + 7)];
        const alpha = row.reduce((a, v) => a + Math.abs(v), 0) / 7;
        row.forEach((v, j) => assert.equal(y.data[c * 7 + j], alpha * sgn(v), `${mode} y[${c},${j}]`));
      }
      assert.ok(maxDistinctPerChannel(y, 0) <= 2);
      assertExportReproduces(q.exportQuant(), w, y, 1e-6);
    }
    const unscaled = createQuantizer({ kind: 'adaste', bits: 1, scaled: false }, { role: 'weight', shape: [3] });
    assert.deepEqual(unscaled.forward(f64([0, -0.25, 3])).toArray(), [1, -1, 1]);
  });

  it('backward at hand-computed points (μ = 0.5, ρ = 0.2, cap 2): linear 1/(1+μ), zero in saturation, boosted toward the flip', () => {
    // μ = mu0 = 0.5 at epoch 0; 1 − μρ = 0.9; slope 1/(1+μ) = 2/3; w*(0⁻) = −μ(1+ρ)/(1+μ) = −0.4.
    const options = { mu0: 0.5, relaxAlpha: 0.2, cap: 2 };
    const theta = [0.3, 0.3, 1.5, 1.5, -0.95, -0.95, -0.6, 0.1];
    const g = [-1, 2, -0.5, 0.5, -1, 1, 1, 3];
    const expected = [
      -2 / 3, // outward, linear region: g/(1+μ)
      4, // toward the flip: (0.6 + 0.4)/0.3 = 3.33 capped at 2 → 2·g
      0, // outward, saturated (|θ| ≥ 0.9)
      0.5 * (1.4 / 1.5), // toward the flip, saturated: (1 + 0.4)/1.5 = 0.9333
      -1 * (1.4 / 0.95), // θ < 0 and g < 0: toward the flip, saturated: 1.4/0.95
      0, // θ < 0 and g > 0: outward, saturated
      2 / 3, // θ < 0 and g > 0: outward, linear region
      3 * 2, // toward the flip at small |θ|: (0.0667 + 0.4 + 0.4)/0.1 = 8.67 capped at 2
    ];
    assertClose(adasteGrad(theta, g, options), expected, 1e-12, 'AdaSTE gradient');
    // The float64 helper is the same closed form.
    assertClose(theta.map((t, i) => g[i]! * adasteSlope(t, g[i]!, 0.5, 0.2, 2)), expected, 1e-12, 'adasteSlope');
  });

  it('equals its definition: the finite difference (w*(θ) − w*(θ − βg))/β at β → 0 (outward) and at β = θ/g just past the flip (toward it)', () => {
    // μ lives in a float32 buffer: values exact in float32 keep the float64 definition comparable.
    const mu = 0.75;
    const rho = 0.125;
    for (let i = 0; i < 200; i++) {
      const theta = (rng.uniform() * 2 - 1) * 2.5;
      const g = (rng.uniform() * 2 - 1) * 3;
      if (Math.abs(theta) < 1e-3 || Math.abs(g) < 1e-3 || Math.abs(Math.abs(theta) - (1 - mu * rho)) < 1e-4) continue;
      const inner = (t: number): number => adasteInnerSolution(t, mu, rho);
      let beta: number;
      if (g * theta > 0) beta = (theta / g) * (1 + 1e-12);
      else beta = 1e-7;
      const definition = (inner(theta) - inner(theta - beta * g)) / beta;
      const [actual] = adasteGrad([theta], [g], { mu0: mu, relaxAlpha: rho, cap: 1e9 });
      assertClose([actual!], [definition], g * theta > 0 ? 1e-9 : 1e-6, `θ ${theta}, g ${g}`);
    }
  });

  it('gradcheck of the smooth part: on |θ| < 1 − μρ the outward slope is the float64 central difference of the relaxed map w*', () => {
    const mu = 0.375;
    const rho = 0.5;
    const eps = 1e-6;
    const theta = [0.05, 0.3, 0.75, -0.1, -0.5, -0.79];
    const g = theta.map((t) => -sgn(t));
    const numeric = theta.map((t, i) => g[i]! * (adasteInnerSolution(t + eps, mu, rho) - adasteInnerSolution(t - eps, mu, rho)) / (2 * eps));
    assertClose(adasteGrad(theta, g, { mu0: mu, relaxAlpha: rho }), numeric, 1e-8);
  });

  it('limits of the schedule: μ = 0 is plain STE on |θ| < 1 (leaky clipped STE beyond); μρ ≥ 1 keeps only flipping gradients, min(cap, 2/|θ|)', () => {
    const theta = [0.2, -0.7, 0.99, 1.6, 1.6, -3, -3, 5];
    const g = [0.3, 0.8, -1.1, -0.4, 0.4, 2, -2, 1];
    // μ = 0: identity inside, 0 outward and min(cap, 1/|θ|) toward the flip outside.
    const ste = adasteGrad(theta, g, { mu0: 0 });
    assertClose(ste, [0.3, 0.8, -1.1, 0, 0.4 * 0.5, 0, -2 * (1 / 3), 1 * 0.2], 1e-12, 'μ = 0');
    // The same as 'binary' with the 'ste' gradient where |θ| < 1.
    const x = f64(theta).requiresGrad_();
    const plain = createQuantizer({ kind: 'binary', bits: 1, gradient: 'ste' }, { role: 'activation' });
    const [gs] = grad(plain.forward(x), [x], { gradOutputs: [f64(g)] });
    for (let i = 0; i < 3; i++) assert.equal(ste[i], gs!.data[i]);
    // End of the default schedule: μ = muMax = 1/ρ + 100 = 200 (μρ = 2 ≥ 1); cap 0.5.
    const q = createQuantizer({ kind: 'adaste', bits: 1, scaled: false, muGrowth: 10 }, { role: 'weight', shape: [8] }) as AdaSteQuantizer;
    q.setProgress(2, 10);
    assertClose([q.currentMu()], [1], 1e-6, 'μ = 0.01·10²');
    q.setProgress(9, 10);
    assert.equal(q.currentMu(), 200);
    assert.equal(q.muMax, 200);
    const final = adasteGrad(theta, g, { muGrowth: 10 }, 9);
    assertClose(final, [0.3 * 0.5, 0, 0, 0, 0.4 * 0.5, 0, -2 * 0.5, 1 * 0.4], 1e-12, 'μ = 200');
  });

  it('scaled weights: the gradient is g·α_c·s(θ) with α_c held constant; μ is a buffer (state dict)', () => {
    const shape = [2, 4];
    const w = f64([0.2, -0.5, 1.2, -0.05, 0.9, 0.1, -1.4, 0.3], shape).requiresGrad_();
    const gy = f64([1, 1, -1, -2, 0.5, -0.5, -1, 1], shape);
    const q = createQuantizer({ kind: 'adaste', bits: 1, granularity: 'channel', mu0: 0.3, relaxAlpha: 0.5 }, { role: 'weight', shape, channelAxis: 0 }) as AdaSteQuantizer;
    const [gw] = grad(q.forward(w), [w], { gradOutputs: [gy] });
    const mu = q.currentMu();
    const expected = [...w.data].map((t, i) => {
      const c = Math.floor(i / 4);
      const alpha = [...w.data.subarray(c * 4, c * 4 + 4)].reduce((a, v) => a + Math.abs(v), 0) / 4;
      return gy.data[i]! * alpha * adasteSlope(t, gy.data[i]!, mu, 0.5, 0.5);
    });
    assertClose(gw!.data, expected, 1e-9);
    q.setProgress(3, 5);
    const r = createQuantizer({ kind: 'adaste', bits: 1, granularity: 'channel' }, { role: 'weight', shape, channelAxis: 0 }) as AdaSteQuantizer;
    r.loadStateDict(q.stateDict());
    assert.equal(r.currentMu(), q.currentMu());
  });

  it('rejects bad options by name', () => {
    const ctx = { role: 'weight' as const, shape: [2, 2] };
    assert.throws(() => createQuantizer({ kind: 'adaste', bits: 1, relaxAlpha: 0 }, ctx), /'relaxAlpha' must be a finite number > 0, got 0/);
    assert.throws(() => createQuantizer({ kind: 'adaste', bits: 1, muGrowth: 0.5 }, ctx), /'muGrowth' must be a finite number >= 1, got 0.5/);
    assert.throws(() => createQuantizer({ kind: 'adaste', bits: 1, mu0: 5, muMax: 1 }, ctx), /'muMax' must be finite and >= mu0/);
    assert.throws(() => createQuantizer({ kind: 'adaste', bits: 1, cap: -1 }, ctx), /'cap'/);
    assert.throws(() => createQuantizer({ kind: 'adaste', bits: 2 }, ctx), /bits/);
  });
});
