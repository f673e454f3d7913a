import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import './index.ts';
import { grad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Rng } from '../../tensor/random.ts';
import { createQuantizer } from './quantizer.ts';
import type { PactQuantizer } from './pact.ts';
import { assertClose, assertExportReproduces, maxDistinctPerChannel, randomTensor } from './testing.ts';

const rng = new Rng(303);

describe("quantizers: 'pact' (Choi et al. 2018)", () => {
  it('y = round(clamp(x, 0, α)/s)·s, s = α/(2^k − 1); ∂y/∂α = 1{x ≥ α}, ∂y/∂x = 1{0 ≤ x < α}', () => {
    const q = createQuantizer({ kind: 'pact', bits: 3, alpha: 1.5, alphaL2: 0.01 }, { role: 'activation' }) as PactQuantizer;
    const x = randomTensor(rng, [6, 7], { std: 1.5 }).requiresGrad_();
    const y = q.forward(x);
    const s = Math.fround(1.5 / 7);
    const gy = randomTensor(rng, [6, 7]);
    const [gx, ga] = grad(y, [x, q.alpha], { gradOutputs: [gy] });
    let ea = 0;
    for (let i = 0; i < x.size; i++) {
      const v = x.data[i]!;
      const clipped = Math.min(1.5, Math.max(0, v));
      assertClose([y.data[i]!], [roundHalfEven(clipped / s) * s], 1e-9, 'forward');
      assert.ok(gx!.data[i] === (v >= 0 && v < 1.5 ? gy.data[i] : 0), `x gradient at ${i}`);
      if (v >= 1.5) ea += gy.data[i]!;
    }
    assertClose([ga!.item()], [ea], 1e-5, 'α gradient');
    assert.ok(maxDistinctPerChannel(y, null) <= 8);
    const reg = q.regularization();
    assertClose([reg.item()], [0.01 * 1.5 * 1.5], 1e-6);
    assertClose([grad(reg, [q.alpha])[0]!.item()], [0.02 * 1.5], 1e-6);
    q.eval();
    const x32 = randomTensor(rng, [6, 7], { dtype: 'float32', std: 2 });
    assertExportReproduces(q.exportQuant(), x32, q.forward(x32));
  });

  it('signed PACT clamps to [−α, α] with ∂y/∂α = −1 where x ≤ −α; α survives stateDict', () => {
    const q = createQuantizer({ kind: 'pact', bits: 4, signed: true, alpha: 1 }, { role: 'activation' }) as PactQuantizer;
    const x = randomTensor(rng, [30], { std: 1.5 }).requiresGrad_();
    const [ga] = grad(q.forward(x), [q.alpha]);
    let ea = 0;
    for (const v of x.data) ea += v >= 1 ? 1 : v <= -1 ? -1 : 0;
    assertClose([ga!.item()], [ea], 1e-6);
    q.alpha.data[0] = 2.5;
    const r = createQuantizer({ kind: 'pact', bits: 4, signed: true }, { role: 'activation' }) as PactQuantizer;
    r.loadStateDict(q.stateDict());
    assert.equal(r.alpha.data[0], 2.5);
    assert.throws(() => createQuantizer({ kind: 'pact', bits: 4 }, { role: 'weight', shape: [2, 2] }), /activations/);
  });
});

describe("quantizers: 'dorefa' (Zhou et al. 2016)", () => {
  for (const granularity of ['tensor', 'channel'] as const) {
    it(`weights (${granularity}): w_q = 2·Q_k(tanh(w)/(2·max|tanh w|) + ½) − 1, gradient through tanh and the max`, () => {
      const shape = [3, 6];
      const w = randomTensor(rng, shape).requiresGrad_();
      const q = createQuantizer({ kind: 'dorefa', bits: 2, granularity }, { role: 'weight', shape });
      const y = q.forward(w);
      const gy = randomTensor(rng, shape);
      const [gw] = grad(y, [w], { gradOutputs: [gy] });
      const groups = granularity === 'tensor' ? [[...Array(18).keys()]] : [0, 1, 2].map((c) => [...Array(6).keys()].map((j) => c * 6 + j));
      for (const members of groups) {
        const t = members.map((i) => Math.tanh(w.data[i]!));
        const m = Math.max(...t.map(Math.abs));
        const arg = t.findIndex((v) => Math.abs(v) === m);
        const dot = members.reduce((acc, i, j) => acc + gy.data[i]! * t[j]!, 0);
        members.forEach((i, j) => {
          const u = t[j]! / (2 * m) + 0.5;
          assertClose([y.data[i]!], [(2 * roundHalfEven(3 * u)) / 3 - 1], 1e-12, 'forward');
          const dt = gy.data[i]! / m - (j === arg ? Math.sign(t[j]!) * dot / (m * m) : 0);
          assertClose([gw!.data[i]!], [(1 - t[j]! ** 2) * dt], 1e-9, 'gradient');
        });
      }
      assert.ok(maxDistinctPerChannel(y, null) <= 4);
    });
  }

  it('weights export as a codebook containing every forward value; activations Q_k(clamp(x, 0, 1)) with a clipped STE', () => {
    const shape = [4, 5];
    const w = randomTensor(rng, shape, { dtype: 'float32' });
    const qw = createQuantizer({ kind: 'dorefa', bits: 3 }, { role: 'weight', shape });
    qw.eval();
    assertExportReproduces(qw.exportQuant(), w, qw.forward(w));
    const qa = createQuantizer({ kind: 'dorefa', bits: 2 }, { role: 'activation' });
    const x = randomTensor(rng, [20], { dtype: 'float32', mean: 0.5 }).requiresGrad_();
    const y = qa.forward(x);
    const [gx] = grad(y, [x]);
    for (let i = 0; i < x.size; i++) {
      const v = x.data[i]!;
      assertClose([y.data[i]!], [roundHalfEven(3 * Math.min(1, Math.max(0, v))) * Math.fround(1 / 3)], 1e-7);
      assert.ok(gx!.data[i] === (v >= 0 && v <= 1 ? 1 : 0));
    }
    assertExportReproduces(qa.exportQuant(), x, y);
  });
});
