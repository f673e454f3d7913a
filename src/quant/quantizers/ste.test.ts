import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import './index.ts';
import { grad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Rng } from '../../tensor/random.ts';
import { createQuantizer } from './quantizer.ts';
import { SteQuantizer } from './ste.ts';
import { assertClose, assertExportReproduces, maxDistinctPerChannel, randomTensor } from './testing.ts';

const rng = new Rng(101);

describe("quantizers: 'ste' / 'clippedSte' (min-max)", () => {
  it('weights: per-channel symmetric min-max each step, y = clamp(round(x/s), ±(2^(b−1)−1))·s, s = max|w_c|/qmax', () => {
    const shape = [4, 3, 5];
    const w = randomTensor(rng, shape).requiresGrad_();
    const q = createQuantizer({ kind: 'ste', bits: 4 }, { role: 'weight', shape });
    const y = q.forward(w);
    const per = 15;
    const expected: number[] = [];
    for (let c = 0; c < 4; c++) {
      let m = 0;
      for (let j = 0; j < per; j++) m = Math.max(m, Math.abs(w.data[c * per + j]!));
      const s = Math.fround(m / 7);
      for (let j = 0; j < per; j++) expected.push(Math.min(7, Math.max(-7, roundHalfEven(w.data[c * per + j]! / s))) * s);
    }
    assertClose(y.data, expected, 1e-12);
    assert.ok(maxDistinctPerChannel(y, 0) <= 15);
    const gy = randomTensor(rng, shape);
    assertClose(grad(y, [w], { gradOutputs: [gy] })[0]!.data, gy.data, 0, 'ste gradient');
    assertExportReproduces(q.exportQuant(), y, y, 1e-6);
  });

  it('activations: EMA of batch min/max (momentum 0.1) in buffers, frozen in eval', () => {
    const q = createQuantizer({ kind: 'clippedSte', bits: 8, signed: true }, { role: 'activation' }) as SteQuantizer;
    const a = randomTensor(rng, [8, 6]);
    const b = randomTensor(rng, [8, 6], { std: 3, mean: 1 });
    q.forward(a);
    q.forward(b);
    const range = (t: typeof a): [number, number] => [Math.min(...t.data), Math.max(...t.data)];
    const [amin, amax] = range(a);
    const [bmin, bmax] = range(b);
    assertClose([q.runningMin.data[0]!, q.runningMax.data[0]!], [amin + 0.1 * (bmin - amin), amax + 0.1 * (bmax - amax)], 1e-6);
    q.eval();
    const before = [...q.runningMin.data, ...q.runningMax.data];
    q.forward(randomTensor(rng, [8, 6], { std: 10 }));
    assert.deepEqual([...q.runningMin.data, ...q.runningMax.data], before);
  });

  it("clipped gradient is 1 only where x/s + z rounds inside [qmin, qmax]; 'ste' passes everywhere", () => {
    for (const kind of ['clippedSte', 'ste'] as const) {
      const q = createQuantizer({ kind, bits: 4 }, { role: 'activation' });
      q.forward(randomTensor(rng, [16, 4], { std: 0.5, mean: 1 }));
      q.eval();
      const x = randomTensor(rng, [16, 4], { std: 3 }).requiresGrad_();
      const y = q.forward(x);
      const e = q.exportQuant();
      assert.equal(e.type, 'affine');
      if (e.type !== 'affine') return;
      const { scale, zeroPoint, qmin, qmax } = e.qparams;
      const gx = grad(y, [x])[0]!;
      for (let i = 0; i < x.size; i++) {
        const r = roundHalfEven(x.data[i]! / scale[0]!) + zeroPoint[0]!;
        const inside = r >= qmin && r <= qmax;
        assert.ok(gx.data[i] === (kind === 'ste' || inside ? 1 : 0), `gradient at ${i}`);
      }
      assertExportReproduces(e, x, y, 1e-6);
      assert.ok(maxDistinctPerChannel(y, null) <= 16);
    }
  });

  it('state (EMA range) survives stateDict → loadStateDict', () => {
    const q = createQuantizer({ kind: 'ste', bits: 4 }, { role: 'activation' });
    for (let i = 0; i < 3; i++) q.forward(randomTensor(rng, [8, 5], { mean: 1 }));
    const r = createQuantizer({ kind: 'ste', bits: 4 }, { role: 'activation' });
    r.loadStateDict(q.stateDict());
    q.eval();
    r.eval();
    const x = randomTensor(rng, [8, 5]);
    assert.deepEqual(r.forward(x).toArray(), q.forward(x).toArray());
    assert.deepEqual(r.exportQuant(), q.exportQuant());
  });

  it('per-group weights use one range per group', () => {
    const shape = [2, 8];
    const w = randomTensor(rng, shape, { dtype: 'float32' });
    const q = createQuantizer({ kind: 'ste', bits: 4, granularity: 'group', groupSize: 4, axis: 1 }, { role: 'weight', shape });
    const y = q.forward(w);
    const e = q.exportQuant();
    assert.equal(e.type === 'affine' && e.qparams.scale.length, 4);
    assertExportReproduces(e, w, y, 1e-6);
  });

  it('a groupSize that does not divide the grouped axis fails when the quantizer is built, naming both', () => {
    const context = { role: 'weight', shape: [4, 6] } as const;
    const build = (groupSize: number, axis: number) => createQuantizer({ kind: 'ste', bits: 4, granularity: 'group', groupSize, axis }, context);
    assert.throws(() => build(5, 1), /^Error: quantizer 'ste': groupSize 5 does not divide axis 1 of the weight \[4, 6\] \(size 6\); choose a divisor of 6$/);
    assert.throws(() => build(3, 0), /groupSize 3 does not divide axis 0 of the weight \[4, 6\] \(size 4\)/);
    assert.equal((build(3, 1) as SteQuantizer).scale.size, 8);
  });
});
