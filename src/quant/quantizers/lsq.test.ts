import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import './index.ts';
import { grad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Rng } from '../../tensor/random.ts';
import { createQuantizer } from './quantizer.ts';
import type { LsqQuantizer } from './lsq.ts';
import type { NoiseQuantizer } from './noise.ts';
import { assertClose, assertExportReproduces, maxDistinctPerChannel, randomTensor } from './testing.ts';

const rng = new Rng(202);
const clampTo = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

describe("quantizers: 'lsq' (Esser et al. 2020)", () => {
  it('weights: s₀ = 2·mean|w_c|/√qmax per channel; forward and gradients (x: clipped STE, s: g·(round(v) − v) inside, g·q outside)', () => {
    const shape = [3, 8];
    const w = randomTensor(rng, shape).requiresGrad_();
    const q = createQuantizer({ kind: 'lsq', bits: 3 }, { role: 'weight', shape }) as LsqQuantizer;
    const y = q.forward(w);
    const qmax = 3;
    const g = 1 / Math.sqrt(8 * qmax);
    const gy = randomTensor(rng, shape);
    const [gw, gs] = grad(y, [w, q.step], { gradOutputs: [gy] });
    for (let c = 0; c < 3; c++) {
      let meanAbs = 0;
      for (let j = 0; j < 8; j++) meanAbs += Math.abs(w.data[c * 8 + j]!) / 8;
      const s = Math.fround((2 * meanAbs) / Math.sqrt(qmax));
      assertClose([q.step.data[c]!], [s], 1e-7, 'init');
      let es = 0;
      for (let j = 0; j < 8; j++) {
        const i = c * 8 + j;
        const v = w.data[i]! / s;
        const r = roundHalfEven(v);
        const qi = clampTo(r, -qmax, qmax);
        assertClose([y.data[i]!], [qi * s], 1e-12, 'forward');
        const inside = r === qi;
        assert.ok(gw!.data[i] === (inside ? gy.data[i] : 0), `gradient at ${i}`);
        es += gy.data[i]! * (inside ? r - v : qi);
      }
      assertClose([gs!.data[c]!], [g * es], 1e-5, 'step gradient');
    }
    assert.ok(maxDistinctPerChannel(y, 0) <= 7);
  });

  it('a step driven through zero: forward at the 1e-8 floor, the step gradient (taken at the floor) still reaches s, so it can recover', () => {
    const shape = [2, 6];
    const w = randomTensor(rng, shape).requiresGrad_();
    const q = createQuantizer({ kind: 'lsq', bits: 4 }, { role: 'weight', shape }) as LsqQuantizer;
    q.forward(w); // initialise
    const s0 = q.step.data[0]!;
    q.step.data[1] = -0.003; // channel 1 crossed zero (as an optimizer step can do)
    const y = q.forward(w);
    const qmax = 7;
    const floor = Math.fround(1e-8);
    const g = 1 / Math.sqrt(6 * qmax);
    const gy = randomTensor(rng, shape);
    const [gs] = grad(y, [q.step], { gradOutputs: [gy] });
    for (let c = 0; c < 2; c++) {
      const s = c === 0 ? s0 : floor;
      let es = 0;
      for (let j = 0; j < 6; j++) {
        const i = c * 6 + j;
        const v = w.data[i]! / s;
        const r = roundHalfEven(v);
        const qi = clampTo(r, -qmax, qmax);
        assertClose([y.data[i]!], [qi * s], 1e-12, `forward ${i}`);
        es += gy.data[i]! * (r === qi ? r - v : qi);
      }
      assertClose([gs!.data[c]!], [g * es], 1e-5, `step gradient ${c}`);
    }
    assert.ok(gs!.data[1] !== 0, 'the floored step still gets a gradient');
  });

  it('activations: unsigned [0, 2^b − 1], g = 1/√(features per sample · qmax), export reproduces eval forward', () => {
    const q = createQuantizer({ kind: 'lsq', bits: 4 }, { role: 'activation' }) as LsqQuantizer;
    const x = randomTensor(rng, [5, 6], { dtype: 'float32', std: 2 }).requiresGrad_();
    const y = q.forward(x);
    const s = q.step.data[0]!;
    const [gs] = grad(y, [q.step]);
    let es = 0;
    for (let i = 0; i < x.size; i++) {
      const v = x.data[i]! / s;
      const r = roundHalfEven(v);
      const qi = clampTo(r, 0, 15);
      es += r === qi ? r - v : qi;
    }
    assertClose([gs!.item()], [es / Math.sqrt(6 * 15)], 1e-4);
    assert.ok(maxDistinctPerChannel(y, null) <= 16);
    q.eval();
    const x2 = randomTensor(rng, [5, 6], { dtype: 'float32', std: 2 });
    assertExportReproduces(q.exportQuant(), x2, q.forward(x2));
  });

  it("'lsqPlus': offset β from min-max, z = clamp(round(−β/s)), ∂y/∂β = g outside the range, 0 inside", () => {
    const q = createQuantizer({ kind: 'lsqPlus', bits: 3 }, { role: 'activation' }) as LsqQuantizer;
    const x0 = randomTensor(rng, [4, 5], { mean: 0.5 });
    q.forward(x0);
    let lo = 0;
    let hi = 0;
    for (const v of x0.data) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
    assertClose([q.step.data[0]!, q.offset!.data[0]!], [(hi - lo) / 7, lo], 1e-6, 'init');
    const x = randomTensor(rng, [4, 5], { std: 2 }).requiresGrad_();
    const y = q.forward(x);
    const s = q.step.data[0]!;
    const z = clampTo(roundHalfEven(-q.offset!.data[0]! / s), 0, 7);
    const gy = randomTensor(rng, [4, 5]);
    const [gx, gb] = grad(y, [x, q.offset!], { gradOutputs: [gy] });
    let eb = 0;
    for (let i = 0; i < x.size; i++) {
      const r = roundHalfEven(x.data[i]! / s) + z;
      const qi = clampTo(r, 0, 7);
      assertClose([y.data[i]!], [(qi - z) * s], 1e-12);
      assert.ok(gx!.data[i] === (r === qi ? gy.data[i] : 0), `gradient at ${i}`);
      if (r !== qi) eb += gy.data[i]!;
    }
    assertClose([gb!.item()], [eb / Math.sqrt(5 * 7)], 1e-5);
    const e = q.exportQuant();
    assert.ok(e.type === 'affine' && e.qparams.zeroPoint[0] === z);
  });

  it('learned step survives stateDict → loadStateDict (and is not re-initialised)', () => {
    const shape = [2, 4];
    const q = createQuantizer({ kind: 'lsq', bits: 4 }, { role: 'weight', shape }) as LsqQuantizer;
    q.forward(randomTensor(rng, shape));
    q.step.data[0] = 0.123;
    const r = createQuantizer({ kind: 'lsq', bits: 4 }, { role: 'weight', shape }) as LsqQuantizer;
    r.loadStateDict(q.stateDict());
    r.forward(randomTensor(rng, shape, { std: 5 }));
    assert.equal(r.step.data[0], Math.fround(0.123));
  });
});

describe("quantizers: 'noise' (error-aware decaying noise + learned gradient scale)", () => {
  it('eval is exactly the LSQ quantizer; training noise stays inside the bin and decays to pure quantization at progress 1', () => {
    const make = (): NoiseQuantizer => createQuantizer({ kind: 'noise', bits: 3, seed: 5 }, { role: 'activation' }) as NoiseQuantizer;
    const q = make();
    const x = randomTensor(rng, [6, 5], { std: 2 });
    const yTrain = q.forward(x);
    q.eval();
    const yq = q.forward(x);
    const lsq = createQuantizer({ kind: 'lsq', bits: 3 }, { role: 'activation' });
    assert.deepEqual(yq.toArray(), lsq.forward(x).toArray());
    let moved = 0;
    for (let i = 0; i < x.size; i++) {
      const e = yq.data[i]! - x.data[i]!;
      const d = yTrain.data[i]! - x.data[i]!;
      assert.ok(d * e >= -1e-15 && Math.abs(d) <= Math.abs(e) + 1e-12, `noise outside the bin at ${i}`);
      if (Math.abs(d - e) > 1e-9) moved++;
    }
    assert.ok(moved > x.size / 2, 'progress 0 adds noise');
    q.train();
    const levels = [0, 0.25, 0.5, 0.75, 1].map((p) => {
      q.setProgress(p * 10, 10);
      return q.noiseLevel();
    });
    assertClose([levels[0]!, levels[4]!], [1, 0], 1e-12);
    for (let i = 1; i < levels.length; i++) assert.ok(levels[i]! < levels[i - 1]!);
    q.setProgress(10, 10);
    assert.deepEqual(q.forward(x).toArray(), yq.toArray());
    assertExportReproduces(q.exportQuant(), x, yq);
  });

  it('gradients: ∂y/∂x = γ·1{inside}, ∂y/∂γ = Q(x), ∂y/∂s = γ·(LSQ gradient)', () => {
    const q = createQuantizer({ kind: 'noise', bits: 3 }, { role: 'activation' }) as NoiseQuantizer;
    const lsq = createQuantizer({ kind: 'lsq', bits: 3 }, { role: 'activation' }) as LsqQuantizer;
    const x = randomTensor(rng, [4, 5], { std: 2 }).requiresGrad_();
    q.forward(x);
    lsq.forward(x);
    q.gradScaleParam.data[0] = 2;
    const gy = randomTensor(rng, [4, 5]);
    const yq = lsq.forward(x);
    const [gx, gg, gs] = grad(q.forward(x), [x, q.gradScaleParam, q.step], { gradOutputs: [gy] });
    const [lx, ls] = grad(yq, [x, lsq.step], { gradOutputs: [gy] });
    assertClose(gx!.data, lx!.data.map((v) => 2 * v), 1e-12, 'x');
    assertClose([gs!.item()], [2 * ls!.item()], 1e-6, 's');
    let eg = 0;
    for (let i = 0; i < x.size; i++) eg += gy.data[i]! * yq.data[i]!;
    assertClose([gg!.item()], [eg], 1e-5, 'γ');
  });
});
