import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { Tensor, tensor } from '../../tensor/tensor.ts';
import { randn } from '../../tensor/creation.ts';
import { Rng } from '../../tensor/random.ts';
import { grad } from '../../autograd/engine.ts';
import * as o from '../../tensor/ops.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { qRange, qparamsFromRange, rangesOf, type QuantSpec } from './qparams.ts';
import { dequantizeArray, fakeQuantize, quantizeArray, roundSte, scaleGrad, signSte } from './quantize.ts';
import { packBinaryRows, packBits, unpackBinaryRows, unpackBits } from './packing.ts';

const rng = new Rng(11);

describe('quant/core: ranges and qparams', () => {
  it('integer ranges follow the conventions', () => {
    assert.deepEqual(qRange({ bits: 8, signed: true, symmetric: true }), [-127, 127]);
    assert.deepEqual(qRange({ bits: 8, signed: true, symmetric: false }), [-128, 127]);
    assert.deepEqual(qRange({ bits: 8, signed: false, symmetric: false }), [0, 255]);
    assert.deepEqual(qRange({ bits: 4, signed: true, symmetric: true }), [-7, 7]);
    assert.deepEqual(qRange({ bits: 2, signed: true, symmetric: true }), [-1, 1]);
    assert.throws(() => qRange({ bits: 1, signed: true, symmetric: true }), /binary/);
  });
  it('qparams from a range: symmetric s = max|x|/qmax, asymmetric s = (max-min)/(qmax-qmin), z = qmin - round(min/s)', () => {
    const sym = qparamsFromRange([-0.5], [2.54], { bits: 8, signed: true, symmetric: true, granularity: 'tensor' });
    assert.ok(Math.abs(sym.scale[0]! - 2.54 / 127) < 1e-9);
    assert.equal(sym.zeroPoint[0], 0);
    const asym = qparamsFromRange([-1], [3], { bits: 8, signed: false, symmetric: false, granularity: 'tensor' });
    assert.ok(Math.abs(asym.scale[0]! - 4 / 255) < 1e-9);
    assert.equal(asym.zeroPoint[0], Math.round(0 - -1 / (4 / 255)));
    const pow2 = qparamsFromRange([-1], [3], { bits: 8, signed: true, symmetric: true, granularity: 'tensor', powerOfTwoScale: true });
    assert.equal(pow2.scale[0], 2 ** Math.ceil(Math.log2(3 / 127)));
  });
  for (const spec of [
    { bits: 8, signed: true, symmetric: true, granularity: 'tensor' },
    { bits: 4, signed: true, symmetric: true, granularity: 'channel', axis: 0 },
    { bits: 3, signed: false, symmetric: false, granularity: 'channel', axis: 1 },
    { bits: 4, signed: true, symmetric: false, granularity: 'group', axis: 1, groupSize: 4 },
    { bits: 2, signed: true, symmetric: true, granularity: 'channel', axis: 0, powerOfTwoScale: true },
  ] satisfies QuantSpec[]) {
    it(`quantize/dequantize round trip within s/2: ${JSON.stringify(spec)}`, () => {
      const shape = [5, 8, 3];
      const x = randn(shape, { rng });
      const { min, max } = rangesOf(x.data, shape, spec);
      const qp = qparamsFromRange(min, max, spec);
      const q = quantizeArray(x.data, shape, qp);
      const back = dequantizeArray(q, shape, qp);
      const count = qp.scale.length;
      assert.equal(count, spec.granularity === 'tensor' ? 1 : spec.granularity === 'channel' ? shape[spec.axis!] : (5 * 8 * 3) / 4);
      for (let i = 0; i < q.length; i++) assert.ok(q[i]! >= qp.qmin && q[i]! <= qp.qmax);
      // Every element is inside its parameter's range, so the error is at most half a step.
      const maxScale = Math.max(...qp.scale);
      for (let i = 0; i < x.size; i++) assert.ok(Math.abs(back[i]! - x.data[i]!) <= maxScale / 2 + 1e-6, `error at ${i}`);
      // And fakeQuantize (the differentiable op) computes the same values.
      const fq = fakeQuantize(x, qp);
      for (let i = 0; i < x.size; i++) assert.ok(Math.abs(fq.data[i]! - back[i]!) <= 1e-6 * Math.max(1, Math.abs(back[i]!)));
    });
  }
});

describe('quant/core: per-tensor range', () => {
  it('rangesOf per tensor = the sequential min / max for every length mod 4, NaN skipped', () => {
    const spec: QuantSpec = { bits: 8, signed: true, symmetric: false, granularity: 'tensor' };
    for (let n = 0; n <= 11; n++) {
      const data = Float32Array.from({ length: n }, (_, i) => Math.sin(3.7 * i + n) * (i + 1));
      if (n > 5) data[n - 3] = NaN;
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of data) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const { min, max } = rangesOf(data, [n], spec);
      assert.deepEqual([min[0], max[0]], [lo, hi], `length ${n}`);
    }
  });
});

describe('quant/core: estimator gradients against their closed forms', () => {
  const data = [-3.1, -1.26, -0.74, -0.2, 0, 0.25, 0.5, 0.76, 1.5, 2.9];
  it('fakeQuantize: clipped STE for x, LSQ for s, affine for z', () => {
    const x = tensor(data, undefined, 'float64').requiresGrad_();
    const s = tensor([0.5], [], 'float64').requiresGrad_();
    const z = tensor([1], [], 'float64').requiresGrad_();
    const qmin = -3;
    const qmax = 4;
    const y = o.apply('fakeQuantize', [x, s, z], { qmin, qmax, gradient: 'clipped' });
    const gy = tensor(data.map((_, i) => 1 + i / 10), undefined, 'float64');
    const [gx, gs, gz] = grad(y, [x, s, z], { gradOutputs: [gy] });
    let es = 0;
    let ez = 0;
    data.forEach((xv, i) => {
      const v = xv / 0.5 + 1;
      const r = roundHalfEven(xv / 0.5) + 1;
      const q = Math.min(qmax, Math.max(qmin, r));
      assert.ok(Math.abs(y.data[i]! - (q - 1) * 0.5) < 1e-12, 'forward');
      const inside = r >= qmin && r <= qmax;
      assert.equal(gx!.data[i], inside ? gy.data[i] : 0, `dx at ${i}`);
      es += gy.data[i]! * (inside ? r - v : q - 1);
      ez += gy.data[i]! * (inside ? 0 : -0.5);
    });
    assert.ok(Math.abs(gs!.item() - es) < 1e-12, `ds ${gs!.item()} vs ${es}`);
    assert.ok(Math.abs(gz!.item() - ez) < 1e-12, `dz ${gz!.item()} vs ${ez}`);
    const yste = o.apply('fakeQuantize', [x, s, z], { qmin, qmax, gradient: 'ste' });
    assert.deepEqual(grad(yste, [x], { gradOutputs: [gy] })[0]!.toArray(), gy.toArray());
  });
  it('fakeQuantize per channel: scale gradient summed per channel', () => {
    const x = randn([3, 4], { rng, dtype: 'float64' });
    const s = new Tensor(Float64Array.from([0.1, 0.2, 0.3]), [3, 1]).requiresGrad_();
    const z = new Tensor(new Float64Array(3), [3, 1]);
    const y = o.apply('fakeQuantize', [x, s, z], { qmin: -7, qmax: 7, gradient: 'clipped' });
    const [gs] = grad(o.sum(y), [s]);
    for (let c = 0; c < 3; c++) {
      let e = 0;
      for (let j = 0; j < 4; j++) {
        const v = x.data[c * 4 + j]! / s.data[c]!;
        const r = roundHalfEven(v);
        e += r >= -7 && r <= 7 ? r - v : Math.min(7, Math.max(-7, r));
      }
      assert.ok(Math.abs(gs!.data[c]! - e) < 1e-12);
    }
  });
  it('fakeQuantize double backward: the reduced scale / zero-point parts are linear in g (per-element factors)', () => {
    const x = randn([3, 4], { rng, dtype: 'float64' });
    const s = new Tensor(Float64Array.from([0.1, 0.2, 0.3]), [3, 1]).requiresGrad_();
    const z = new Tensor(Float64Array.from([1, -2, 0]), [3, 1]).requiresGrad_();
    const y = o.apply('fakeQuantize', [x, s, z], { qmin: -7, qmax: 7, gradient: 'clipped' });
    const g = randn([3, 4], { rng, dtype: 'float64' }).requiresGrad_();
    // First-order gradients recorded (createGraph), then differentiated with respect to g.
    const [gs, gz] = grad(y, [s, z], { gradOutputs: [g], createGraph: true });
    assert.deepEqual(gs!.shape, [3, 1]);
    const ws = new Tensor(Float64Array.from([0.5, -1, 2]), [3, 1]);
    const wz = new Tensor(Float64Array.from([1.5, 0.25, -3]), [3, 1]);
    const [dg] = grad([gs!, gz!], [g], { gradOutputs: [ws, wz] });
    for (let c = 0; c < 3; c++) {
      for (let j = 0; j < 4; j++) {
        const v = x.data[c * 4 + j]! / s.data[c]!;
        const r = roundHalfEven(v) + z.data[c]!;
        const q = Math.min(7, Math.max(-7, r));
        const inside = q === r;
        // d(gs_c)/dg_i = (inside ? r − (v + z) : q − z), d(gz_c)/dg_i = (inside ? 0 : −s).
        const expected = ws.data[c]! * (inside ? r - (v + z.data[c]!) : q - z.data[c]!) + wz.data[c]! * (inside ? 0 : -s.data[c]!);
        assert.ok(Math.abs(dg!.data[c * 4 + j]! - expected) < 1e-12, `dg at ${c},${j}: ${dg!.data[c * 4 + j]} vs ${expected}`);
      }
    }
  });
  it("fakeQuantize with scaleGradFactor: the fused 'xAndScale' backward, its double backward, and the separate parts agree with the closed forms", () => {
    const x = randn([3, 4], { rng, dtype: 'float64' }).requiresGrad_();
    const s = new Tensor(Float64Array.from([0.1, 0.2, 0.3]), [3, 1]).requiresGrad_();
    const z = new Tensor(Float64Array.from([1, -2, 0]), [3, 1]);
    const factor = 0.37;
    const attrs = { qmin: -7, qmax: 7, gradient: 'clipped', scaleGradFactor: factor } as const;
    const g = randn([3, 4], { rng, dtype: 'float64' }).requiresGrad_();
    const closed = (c: number, j: number): { inside: boolean; ds: number } => {
      const v = x.data[c * 4 + j]! / s.data[c]!;
      const r = roundHalfEven(v) + z.data[c]!;
      const q = Math.min(7, Math.max(-7, r));
      return { inside: q === r, ds: q === r ? r - (v + z.data[c]!) : q - z.data[c]! };
    };
    // x and s both need gradients: the rule takes the one-pass 'xAndScale' route.
    const y = o.apply('fakeQuantize', [x, s, z], attrs);
    const [gx, gs] = grad(y, [x, s], { gradOutputs: [g.detach()] });
    // Only s: the separate 'scale' part, which must agree.
    const [gsAlone] = grad(o.apply('fakeQuantize', [x.detach(), s, z], attrs), [s], { gradOutputs: [g.detach()] });
    for (let c = 0; c < 3; c++) {
      let es = 0;
      for (let j = 0; j < 4; j++) {
        const { inside, ds } = closed(c, j);
        assert.equal(gx!.data[c * 4 + j], inside ? g.data[c * 4 + j] : 0, `dx at ${c},${j}`);
        es += g.data[c * 4 + j]! * ds;
      }
      assert.ok(Math.abs(gs!.data[c]! - factor * es) < 1e-12, `ds_${c}: ${gs!.data[c]} vs ${factor * es}`);
      assert.equal(gsAlone!.data[c], gs!.data[c]);
    }
    // Double backward through the fused part: d/dg of Σ wx·gx + Σ ws·gs.
    const [gx2, gs2] = grad(y, [x, s], { gradOutputs: [g], createGraph: true });
    const wx = randn([3, 4], { rng, dtype: 'float64' });
    const ws = new Tensor(Float64Array.from([0.5, -1, 2]), [3, 1]);
    const [dg] = grad([gx2!, gs2!], [g], { gradOutputs: [wx, ws] });
    for (let c = 0; c < 3; c++) {
      for (let j = 0; j < 4; j++) {
        const { inside, ds } = closed(c, j);
        const expected = wx.data[c * 4 + j]! * (inside ? 1 : 0) + ws.data[c]! * factor * ds;
        assert.ok(Math.abs(dg!.data[c * 4 + j]! - expected) < 1e-12, `dg at ${c},${j}: ${dg!.data[c * 4 + j]} vs ${expected}`);
      }
    }
  });
  it('roundSte and scaleGrad', () => {
    const x = tensor(data, undefined, 'float64').requiresGrad_();
    const y = roundSte(x);
    assert.deepEqual(y.toArray(), data.map((v) => roundHalfEven(v) + 0));
    assert.deepEqual(grad(o.sum(y), [x])[0]!.toArray(), data.map(() => 1));
    const g = grad(o.sum(scaleGrad(x, 0.25)), [x])[0]!;
    assert.deepEqual(g.toArray(), data.map(() => 0.25));
  });
  it('signSte: sign(0) = +1 and the four estimators', () => {
    const x = tensor(data, undefined, 'float64').requiresGrad_();
    assert.deepEqual(signSte(x).toArray(), data.map((v) => (v >= 0 ? 1 : -1)));
    const cases: ['ste' | 'clipped' | 'approxSign' | 'ede', (v: number) => number][] = [
      ['ste', () => 1],
      ['clipped', (v) => (Math.abs(v) <= 1 ? 1 : 0)],
      ['approxSign', (v) => Math.max(0, 2 - 2 * Math.abs(v))],
      ['ede', (v) => 1.5 * 3 * (1 - Math.tanh(3 * v) ** 2)],
    ];
    for (const [name, d] of cases) {
      const g = grad(o.sum(signSte(x, name, 3, 1.5)), [x])[0]!;
      g.toArray().forEach((v, i) => assert.ok(Math.abs(v - d(data[i]!)) < 1e-12, `${name} at ${i}`));
    }
  });
});

describe('quant/core: packing', () => {
  it('int4 / int2 pack low bits first and round trip', () => {
    assert.deepEqual([...packBits([1, -2, 7, -8], 4)], [0xe1, 0x87]);
    assert.deepEqual([...packBits([1, -1, 0, -2], 2)], [0b10001101]);
    for (const bits of [2, 4, 8] as const) {
      const lo = -(1 << (bits - 1));
      const vals = Array.from({ length: 37 }, () => lo + rng.int(1 << bits));
      assert.deepEqual([...unpackBits(packBits(vals, bits), vals.length, bits)], vals);
      const uvals = Array.from({ length: 37 }, () => rng.int(1 << bits));
      assert.deepEqual([...unpackBits(packBits(uvals, bits, false), uvals.length, bits, false)], uvals);
    }
    assert.throws(() => packBits([8], 4), /does not fit/);
  });
  it('binary rows: bit 1 = +1, rows padded to 64 bits', () => {
    const vals = Array.from({ length: 3 * 70 }, () => (rng.uniform() < 0.5 ? -1 : 1));
    const packed = packBinaryRows(vals, 3, 70);
    assert.equal(packed.length, 3 * 16);
    assert.deepEqual([...unpackBinaryRows(packed, 3, 70)], vals);
    assert.equal(packBinaryRows([1, -1, 1, 1, -1, -1, -1, 1], 1, 8)[0], 0b10001101);
  });
});
