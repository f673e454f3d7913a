import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import './index.ts';
import { grad } from '../../autograd/engine.ts';
import { Rng } from '../../tensor/random.ts';
import { createQuantizer } from './quantizer.ts';
import { LqNetQuantizer, solveSymmetric } from './lqnet.ts';
import { assertClose, assertExportReproduces, maxDistinctPerChannel, randomTensor } from './testing.ts';

const rng = new Rng(404);

/** All 2^K levels vᵀb of a basis, b ∈ {−1, 1}^K or {0, 1}^K. */
function levelsOf(v: number[], signed: boolean): number[] {
  const out: number[] = [];
  for (let j = 0; j < 1 << v.length; j++) out.push(v.reduce((acc, vi, i) => acc + vi * ((j >> i) & 1 ? 1 : signed ? -1 : 0), 0));
  return out;
}

describe("quantizers: 'lqnet' (Zhang et al. 2018)", () => {
  it('forward = nearest level of {vᵀb : b ∈ {±1}^K} per channel, STE gradient, at most 2^K levels', () => {
    const shape = [3, 10];
    const w = randomTensor(rng, shape).requiresGrad_();
    const q = createQuantizer({ kind: 'lqnet', bits: 2 }, { role: 'weight', shape }) as LqNetQuantizer;
    q.eval();
    q.initializeFrom(w);
    q.basis.data.set([0.3, 0.9, 0.2, 0.5, 0.7, 0.1]);
    const y = q.forward(w);
    for (let c = 0; c < 3; c++) {
      const levels = levelsOf([q.basis.data[2 * c]!, q.basis.data[2 * c + 1]!], true);
      for (let j = 0; j < 10; j++) {
        const v = w.data[c * 10 + j]!;
        const best = levels.reduce((a, b) => (Math.abs(b - v) < Math.abs(a - v) ? b : a));
        assertClose([y.data[c * 10 + j]!], [Math.fround(best)], 1e-7);
      }
    }
    assert.ok(maxDistinctPerChannel(y, 0) <= 4);
    assert.deepEqual(grad(y, [w])[0]!.toArray(), Array(30).fill(1));
  });

  it('one QEM step with momentum 0 is the least-squares basis for the current codes', () => {
    const x = randomTensor(rng, [50]);
    const q = createQuantizer({ kind: 'lqnet', bits: 2, granularity: 'tensor', basisMomentum: 0 }, { role: 'weight', shape: [50] }) as LqNetQuantizer;
    q.initializeFrom(x);
    const { codes } = q.encode(x);
    const b = (code: number, i: number): number => ((code >> i) & 1 ? 1 : -1);
    const a = [0, 0, 0, 0];
    const r = [0, 0];
    for (let e = 0; e < 50; e++) {
      for (let i = 0; i < 2; i++) {
        r[i]! += b(codes[e]!, i) * x.data[e]!;
        for (let j = 0; j < 2; j++) a[i * 2 + j]! += b(codes[e]!, i) * b(codes[e]!, j);
      }
    }
    const det = a[0]! * a[3]! - a[1]! * a[2]!;
    const expected = [(a[3]! * r[0]! - a[1]! * r[1]!) / det, (a[0]! * r[1]! - a[2]! * r[0]!) / det];
    q.updateBasis(x);
    assertClose(q.basis.data, expected, 1e-6);
    assertClose(solveSymmetric([2, 1, 1, 3], [3, 5], 2)!, [0.8, 1.4], 1e-12);
    assert.equal(solveSymmetric([1, 1, 1, 1], [1, 1], 2), null);
  });

  for (const signed of [true, false]) {
    it(`QEM never increases the quantization error on a fixed tensor (${signed ? 'signed' : 'unsigned'}, K = 3)`, () => {
      const x = signed ? randomTensor(rng, [4, 64]) : randomTensor(rng, [4, 64], { mean: 1 });
      const q = new LqNetQuantizer({ kind: 'lqnet', bits: 3, signed, granularity: signed ? 'channel' : 'tensor' }, { role: signed ? 'weight' : 'activation', shape: [4, 64] });
      q.initializeFrom(x);
      const errors = [q.quantizationError(x)];
      for (let i = 0; i < 6; i++) {
        q.updateBasis(x);
        errors.push(q.quantizationError(x));
      }
      for (let i = 1; i < errors.length; i++) assert.ok(errors[i]! <= errors[i - 1]! * (1 + 1e-12), `error rose at step ${i}: ${errors.join(', ')}`);
      assert.ok(errors[errors.length - 1]! < errors[0]!, 'QEM reduced the error');
    });
  }

  it('training forward runs QEM; basis survives stateDict; export is affine for a uniform unsigned grid, else a codebook', () => {
    const shape = [2, 16];
    const w = randomTensor(rng, shape, { dtype: 'float32' });
    const q = createQuantizer({ kind: 'lqnet', bits: 2 }, { role: 'weight', shape }) as LqNetQuantizer;
    q.forward(w);
    const afterInit = Float32Array.from(q.basis.data);
    q.forward(w);
    assert.notDeepEqual([...q.basis.data], [...afterInit]);
    const r = createQuantizer({ kind: 'lqnet', bits: 2 }, { role: 'weight', shape }) as LqNetQuantizer;
    r.loadStateDict(q.stateDict());
    q.eval();
    r.eval();
    assert.deepEqual(r.forward(w).toArray(), q.forward(w).toArray());
    const e = q.exportQuant();
    assert.equal(e.type, 'codebook');
    assertExportReproduces(e, w, q.forward(w));
    const qa = createQuantizer({ kind: 'lqnet', bits: 2 }, { role: 'activation' }) as LqNetQuantizer;
    qa.eval();
    const x = randomTensor(rng, [40], { dtype: 'float32', mean: 1 });
    const ya = qa.forward(x);
    const ea = qa.exportQuant();
    assert.equal(ea.type, 'affine');
    assertExportReproduces(ea, x, ya, 1e-6);
  });
});
