import { describe, it } from 'node:test';
import { accuracyOf, leftRightImages, threeClassData, trainWithAdam } from './testing.ts';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { Tensor } from '../../tensor/tensor.ts';
import * as o from '../../tensor/ops.ts';
import { Rng } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { Linear } from '../linear.ts';
import { Conv2d } from '../conv.ts';
import { ShiftConv2d, ShiftLinear, shiftRange, shiftWeight } from './shift.ts';
import { shiftConv2dInteger, shiftLinearInteger, type ShiftCodes } from './kernel.ts';

const f64 = (values: number[], shape = [values.length]): Tensor => new Tensor(Float64Array.from(values), shape);

describe('shift weight w = round(clamp(S, -1, 1))·2^round(clamp(P, pMin, pMax))', () => {
  it('default range is 4 exponent bits: [-15, 0]; explicit ranges and bad options', () => {
    assert.deepEqual(shiftRange(), [-15, 0]);
    assert.deepEqual(shiftRange({ exponentBits: 3 }), [-7, 0]);
    assert.deepEqual(shiftRange({ range: [-6, 2] }), [-6, 2]);
    assert.throws(() => shiftRange({ exponentBits: 0 }), /exponentBits/);
    assert.throws(() => shiftRange({ range: [1, -1] }), /pMin <= pMax/);
    assert.throws(() => shiftRange({ range: [-2.5, 0] }), /integers/);
  });

  it('values: ternary sign, exponent rounded half to even and clamped to the range', () => {
    const sign = f64([0.7, -0.2, -0.6, 3, -5, 0.5, -0.5, 1]);
    const shift = f64([-2.4, -3, -2.5, -3.5, 4, -20, -1, -15.2]);
    const w = shiftWeight(shift, sign, [-15, 0]);
    // signs: 1, -0 -> 0, -1, 1 (clamped), -1 (clamped), 0 (0.5 -> 0), 0 (-0.5 -> -0), 1
    // exponents: -2, -3, -2 (half even), -4 (half even), 0 (clamped), -15 (clamped), -1, -15 (clamped)
    const expected = [2 ** -2, 0, -(2 ** -2), 2 ** -4, -1, 0, 0, 2 ** -15];
    assert.deepEqual(Array.from(w.data).map((v) => (v === 0 ? 0 : v)), expected);
  });

  it('every value of a layer is 0 or ±2^p with p inside the range', () => {
    const layer = new ShiftConv2d(3, 4, 3, { exponentBits: 3, rng: new Rng(3) });
    const w = noGrad(() => layer.weight());
    for (const v of w.data) {
      if (v === 0) continue;
      const p = Math.log2(Math.abs(v));
      assert.ok(Number.isInteger(p) && p >= -7 && p <= 0, `weight ${v}`);
    }
  });
});

describe('straight-through gradients of the shift weight', () => {
  it('dL/dS = g·2^p inside [-1, 1], 0 outside; dL/dP = g·s·2^p·ln2 inside the range, 0 outside', () => {
    const sign = f64([0.7, -1, 1.5, -0.3, 0.9]).requiresGrad_();
    const shift = f64([-2.4, 0, -1.2, -3.6, -16]).requiresGrad_();
    const g = f64([0.5, -2, 1, 3, 0.25]);
    o.sum(o.mul(shiftWeight(shift, sign, [-15, 0]), g)).backward();
    const s = [1, -1, 1, 0, 1];
    const p = [-2, 0, -1, -4, -15];
    const signInside = [true, true, false, true, true];
    const shiftInside = [true, true, true, true, false];
    for (let i = 0; i < 5; i++) {
      const dS = signInside[i] ? g.data[i]! * 2 ** p[i]! : 0;
      const dP = shiftInside[i] ? g.data[i]! * s[i]! * 2 ** p[i]! * Math.LN2 : 0;
      assert.ok(Math.abs(sign.grad!.data[i]! - dS) < 1e-12, `dS[${i}] ${sign.grad!.data[i]} vs ${dS}`);
      assert.ok(Math.abs(shift.grad!.data[i]! - dP) < 1e-12, `dP[${i}] ${shift.grad!.data[i]} vs ${dP}`);
    }
  });
});

describe('conversion from float layers', () => {
  it('fromLinear rounds each weight to the nearest power of two in the log domain and keeps the bias', () => {
    const float = new Linear(6, 3, { rng: new Rng(11) });
    const shifted = ShiftLinear.fromLinear(float, { exponentBits: 4 });
    const w = noGrad(() => shifted.weight());
    for (let i = 0; i < w.size; i++) {
      const v = float.weight.data[i]!;
      const p = Math.min(0, Math.max(-15, Math.round(Math.log2(Math.abs(v)))));
      assert.equal(w.data[i], Math.sign(v) * 2 ** p);
    }
    assert.deepEqual(Array.from(shifted.bias!.data), Array.from(float.bias!.data));
    const x = new Tensor(Float32Array.from({ length: 12 }, (_, i) => Math.sin(i)), [2, 6]);
    const expected = noGrad(() => o.linear(x, w, float.bias));
    assert.deepEqual(Array.from(noGrad(() => shifted.forward(x)).data), Array.from(expected.data));
  });

  it('a float layer whose weights are already powers of two converts without change', () => {
    const float = new Conv2d(2, 3, 3, { padding: 1, rng: new Rng(5) });
    for (let i = 0; i < float.weight.size; i++) float.weight.data[i] = (i % 3 === 0 ? -1 : 1) * 2 ** -(i % 6);
    const shifted = ShiftConv2d.fromConv2d(float);
    const x = new Tensor(Float32Array.from({ length: 2 * 2 * 5 * 5 }, (_, i) => Math.cos(i)), [2, 2, 5, 5]);
    assert.deepEqual(Array.from(noGrad(() => shifted.forward(x)).data), Array.from(noGrad(() => float.forward(x)).data));
  });
});

/** Random codes: signs in {-1, 0, 1}, exponents in [lo, hi]. */
function randomCodes(n: number, lo: number, hi: number, rng: Rng): ShiftCodes {
  const signs = new Int8Array(n);
  const exponents = new Int8Array(n);
  for (let i = 0; i < n; i++) {
    signs[i] = Math.floor(rng.uniform() * 3) - 1;
    exponents[i] = lo + Math.floor(rng.uniform() * (hi - lo + 1));
  }
  return { signs, exponents };
}

const int8 = (n: number, rng: Rng): Int32Array => Int32Array.from({ length: n }, () => Math.floor(rng.uniform() * 256) - 128);
const weightOf = (codes: ShiftCodes, shape: number[]): Tensor =>
  new Tensor(Float64Array.from(codes.signs, (s, i) => s * 2 ** codes.exponents[i]!), shape);

describe('integer shift kernels (shifts and adds on int8) are exact', () => {
  it('linear: acc·2^base equals the float64 product with the same power-of-two weights', () => {
    const rng = new Rng(21);
    const [n, k, out] = [5, 37, 7];
    const codes = randomCodes(out * k, -15, 0, rng);
    const x = int8(n * k, rng);
    const { acc, base } = shiftLinearInteger(x, n, codes, out, k);
    const ref = o.linear(new Tensor(Float64Array.from(x), [n, k]), weightOf(codes, [out, k]));
    for (let i = 0; i < acc.length; i++) assert.equal(acc[i]! * 2 ** base, ref.data[i], `output ${i}`);
  });

  it('conv2d with stride and padding: equal to the float64 convolution', () => {
    const rng = new Rng(22);
    const codes = randomCodes(4 * 3 * 3 * 3, -9, -2, rng);
    const x = int8(2 * 3 * 7 * 6, rng);
    const { acc, base, shape } = shiftConv2dInteger(x, [2, 3, 7, 6], codes, [4, 3, 3, 3], [2, 1], [1, 1]);
    const ref = o.conv2d(new Tensor(Float64Array.from(x), [2, 3, 7, 6]), weightOf(codes, [4, 3, 3, 3]), null, { stride: [2, 1], padding: [1, 1] });
    assert.deepEqual(shape, ref.shape);
    for (let i = 0; i < acc.length; i++) assert.equal(acc[i]! * 2 ** base, ref.data[i], `output ${i}`);
  });

  it('layer forwardInteger equals the fake-shift layer on inputs that are int8 multiples of the scale', () => {
    const layer = new ShiftConv2d(2, 3, 3, { padding: 1, rng: new Rng(8) });
    const scale = 2 ** -5;
    const rng = new Rng(9);
    const q = int8(2 * 2 * 6 * 6, rng);
    const x = new Tensor(Float64Array.from(q, (v) => v * scale), [2, 2, 6, 6]);
    const w = noGrad(() => layer.weight());
    const ref = o.conv2d(x, new Tensor(Float64Array.from(w.data), w.shape), new Tensor(Float64Array.from(layer.bias!.data), [3]), { padding: 1 });
    const int = layer.forwardInteger(x, scale);
    // Integer part exact; the output is float32 (acc·scale + bias rounded once).
    for (let i = 0; i < int.size; i++) assert.equal(int.data[i], Math.fround(ref.data[i]!), `output ${i}`);
  });

  it('refuses int32 overflow, non-int8 inputs and bad signs', () => {
    const codes: ShiftCodes = { signs: Int8Array.from([1, 1]), exponents: Int8Array.from([-30, 0]) };
    assert.throws(() => shiftLinearInteger(Int32Array.from([1, 1]), 1, codes, 1, 2), RangeError);
    const ok: ShiftCodes = { signs: Int8Array.from([1, -1]), exponents: Int8Array.from([-3, 0]) };
    assert.throws(() => shiftLinearInteger(Int32Array.from([200, 1]), 1, ok, 1, 2), /outside int8/);
    assert.throws(() => shiftLinearInteger(Int32Array.from([1, 1]), 1, { signs: Int8Array.from([2, 1]), exponents: ok.exponents }, 1, 2), /not -1, 0 or \+1/);
  });
});

describe('a tiny seeded learning run', () => {
  it('ShiftLinear learns a 3-class linear problem with Adam', () => {
    const { x, y, labels } = threeClassData(4);
    const layer = new ShiftLinear(4, 3, { exponentBits: 3, rng: new Rng(1) });
    const { first, last } = trainWithAdam(layer.parameters(), () => layer.forward(x), y);
    const accuracy = accuracyOf(() => layer.forward(x), labels);
    assert.ok(last < first * 0.5, `loss ${first} -> ${last}`);
    assert.ok(accuracy >= 0.9, `accuracy ${accuracy}`);
  });
  it('ShiftConv2d learns to tell bright-left from bright-right 6×6 images with Adam', () => {
    const { x, y } = leftRightImages(7);
    const conv = new ShiftConv2d(1, 2, 3, { stride: 3, exponentBits: 3, rng: new Rng(3) });
    // Logits: each channel's outputs over the left column of positions.
    const { first, last } = trainWithAdam(conv.parameters(), () => o.sum(o.narrow(conv.forward(x), 3, 0, 1), [2, 3]), y);
    assert.ok(last < first * 0.5, `loss ${first} -> ${last}`);
  });
});
