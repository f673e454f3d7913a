import { describe, it } from 'node:test';
import { accuracyOf, leftRightImages, threeClassData, trainWithAdam } from './testing.ts';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { Tensor } from '../../tensor/tensor.ts';
import * as o from '../../tensor/ops.ts';
import { Rng } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { AdderConv2d, AdderLinear, adderConv2d, adderLinear } from './adder.ts';

function rand(shape: number[], rng: Rng, low = -1, high = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = low + (high - low) * rng.uniform();
  return new Tensor(data, shape);
}

interface Geo { stride: [number, number]; padding: [number, number] }

/**
 * Brute force over every (image, filter, output position, patch element): calls
 * visit(n, o, oy, ox, yIndex, xIndex or -1 for padding, wIndex).
 */
function eachTerm(xShape: number[], wShape: number[], geo: Geo, visit: (yIndex: number, xIndex: number, wIndex: number) => void): number[] {
  const [n, c, h, w] = xShape as [number, number, number, number];
  const [out, , kh, kw] = wShape as [number, number, number, number];
  const oh = Math.floor((h + 2 * geo.padding[0] - kh) / geo.stride[0]) + 1;
  const ow = Math.floor((w + 2 * geo.padding[1] - kw) / geo.stride[1]) + 1;
  for (let img = 0; img < n; img++) for (let oc = 0; oc < out; oc++) for (let oy = 0; oy < oh; oy++) for (let ox = 0; ox < ow; ox++) {
    const yIndex = ((img * out + oc) * oh + oy) * ow + ox;
    for (let ci = 0; ci < c; ci++) for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) {
      const iy = oy * geo.stride[0] - geo.padding[0] + ky;
      const ix = ox * geo.stride[1] - geo.padding[1] + kx;
      const inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
      visit(yIndex, inside ? ((img * c + ci) * h + iy) * w + ix : -1, ((oc * c + ci) * kh + ky) * kw + kx);
    }
  }
  return [n, out, oh, ow];
}

const hardTanh = (v: number): number => Math.max(-1, Math.min(1, v));

describe('adder forward: y = −Σ|x − w| (closed form)', () => {
  it('a hand-computed 3×3 image, two 2×2 filters', () => {
    const x = new Tensor(Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]), [1, 1, 3, 3]);
    const w = new Tensor(Float64Array.from([0, 1, 1, 0, 2, 2, 2, 2]), [2, 1, 2, 2]);
    // filter 0 on [1,2,4,5]: 1+1+3+5; on [2,3,5,6]: 2+2+4+6; [4,5,7,8]: 4+4+6+8; [5,6,8,9]: 5+5+7+9
    // filter 1: [1,2,4,5] -> 1+0+2+3 ...
    assert.deepEqual(Array.from(adderConv2d(x, w).data), [-10, -14, -22, -26, -6, -8, -16, -20]);
  });

  it('stride and padding (padding counts as x = 0) against a brute-force sum', () => {
    const rng = new Rng(1);
    const x = rand([2, 3, 5, 4], rng);
    const w = rand([4, 3, 3, 2], rng);
    const geo: Geo = { stride: [2, 1], padding: [1, 1] };
    const ref = new Float64Array(2 * 4 * 3 * 5);
    const shape = eachTerm(x.shape as number[], w.shape as number[], geo, (yi, xi, wi) => {
      ref[yi]! -= Math.abs((xi < 0 ? 0 : x.data[xi]!) - w.data[wi]!);
    });
    const y = adderConv2d(x, w, geo);
    assert.deepEqual(y.shape, shape);
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(y.data[i]! - ref[i]!) < 1e-12, `output ${i}`);
  });

  it('adderLinear: y[n, o] = −Σ_k |x[n, k] − w[o, k]|', () => {
    const rng = new Rng(2);
    const x = rand([3, 5], rng);
    const w = rand([4, 5], rng);
    const y = adderLinear(x, w);
    for (let n = 0; n < 3; n++) for (let oc = 0; oc < 4; oc++) {
      let s = 0;
      for (let k = 0; k < 5; k++) s -= Math.abs(x.data[n * 5 + k]! - w.data[oc * 5 + k]!);
      assert.ok(Math.abs(y.data[n * 4 + oc]! - s) < 1e-12);
    }
  });
});

describe("adder gradients are the paper's estimator", () => {
  // These are deliberately NOT the true gradient of −Σ|x − w| (that would be sign(x − w) for w and
  // sign(w − x) for x), so they are checked against the paper's formulas, not finite differences.
  it('dL/dw = Σ g·(x − w) (full precision), dL/dx = Σ g·HardTanh(w − x), on a strided, padded conv', () => {
    const rng = new Rng(3);
    const x = rand([2, 2, 5, 5], rng, -2, 2).requiresGrad_();
    const w = rand([3, 2, 3, 3], rng, -2, 2).requiresGrad_();
    const geo: Geo = { stride: [2, 2], padding: [1, 1] };
    const y = adderConv2d(x, w, geo);
    const g = rand(y.shape as number[], rng);
    o.sum(o.mul(y, g)).backward();
    const dw = new Float64Array(w.size);
    const dx = new Float64Array(x.size);
    eachTerm(x.shape as number[], w.shape as number[], geo, (yi, xi, wi) => {
      const xv = xi < 0 ? 0 : x.data[xi]!;
      dw[wi]! += g.data[yi]! * (xv - w.data[wi]!);
      if (xi >= 0) dx[xi]! += g.data[yi]! * hardTanh(w.data[wi]! - xv);
    });
    for (let i = 0; i < w.size; i++) assert.ok(Math.abs(w.grad!.data[i]! - dw[i]!) < 1e-10, `dw[${i}] ${w.grad!.data[i]} vs ${dw[i]}`);
    for (let i = 0; i < x.size; i++) assert.ok(Math.abs(x.grad!.data[i]! - dx[i]!) < 1e-10, `dx[${i}] ${x.grad!.data[i]} vs ${dx[i]}`);
  });

  it('adaptive scaling: dL/dw = η·√k·G/‖G‖₂ (x gradient unchanged)', () => {
    const rng = new Rng(4);
    const x = rand([2, 6], rng).requiresGrad_();
    const w = rand([3, 6], rng).requiresGrad_();
    const g = rand([2, 3], rng);
    o.sum(o.mul(adderLinear(x, w), g)).backward();
    const plainW = Array.from(w.grad!.data);
    const plainX = Array.from(x.grad!.data);
    x.grad = null;
    w.grad = null;
    o.sum(o.mul(adderLinear(x, w, { adaptiveEta: 0.2 }), g)).backward();
    const norm = Math.hypot(...plainW);
    for (let i = 0; i < w.size; i++) assert.ok(Math.abs(w.grad!.data[i]! - (0.2 * Math.sqrt(18) * plainW[i]!) / norm) < 1e-12);
    assert.deepEqual(Array.from(x.grad!.data), plainX);
    assert.ok(Math.abs(Math.hypot(...w.grad!.data) - 0.2 * Math.sqrt(18)) < 1e-12, 'the scaled gradient has norm η·√k');
  });

  it('where every |x − w| ≥ 1 the x gradient is the true one: float64 finite differences agree', () => {
    // HardTanh(w − x) = sign(w − x) = ∂(−|x − w|)/∂x there, so the estimator is exact.
    const rng = new Rng(5);
    const x = rand([2, 2, 4, 4], rng, 2, 3).requiresGrad_();
    const w = rand([3, 2, 2, 2], rng, -1.5, 0.5);
    const g = rand([2, 3, 3, 3], rng);
    const res = gradcheck((xi) => o.sum(o.mul(adderConv2d(xi!, w), g)), [x]);
    assert.ok(res.maxRelativeError < 1e-6, `relative error ${res.maxRelativeError}`);
  });

  it('…and where |x − w| < 1 they differ from the true gradient (the estimator is intended)', () => {
    const x = new Tensor(Float64Array.from([0.25]), [1, 1, 1, 1]).requiresGrad_();
    const w = new Tensor(Float64Array.from([0.75]), [1, 1, 1, 1]).requiresGrad_();
    o.sum(adderConv2d(x, w)).backward();
    assert.equal(x.grad!.data[0], 0.5); // HardTanh(0.5); the true derivative is sign(0.5) = 1
    assert.equal(w.grad!.data[0], -0.5); // x − w; the true derivative is sign(x − w) = −1
  });
});

describe('adder layers', () => {
  it('AdderConv2d = BatchNorm2d(adderConv2d(x, w)): per-channel mean 0, variance 1 in training', () => {
    const rng = new Rng(6);
    const layer = new AdderConv2d(2, 3, 3, { padding: 1, rng });
    assert.ok(layer.bn);
    const x = new Tensor(Float32Array.from({ length: 4 * 2 * 5 * 5 }, (_, i) => Math.sin(i)), [4, 2, 5, 5]);
    const y = noGrad(() => layer.forward(x));
    const raw = noGrad(() => adderConv2d(x, layer.weight, { padding: 1 }));
    // Training-mode BN with unit weight and zero bias: each channel has mean 0 and variance ≈ 1.
    for (let c = 0; c < 3; c++) {
      const vals: number[] = [];
      for (let n = 0; n < 4; n++) for (let i = 0; i < 25; i++) vals.push(y.data[(n * 3 + c) * 25 + i]!);
      const mean = vals.reduce((s, v) => s + v, 0) / vals.length;
      const variance = vals.reduce((s, v) => s + (v - mean) ** 2, 0) / vals.length;
      assert.ok(Math.abs(mean) < 1e-5 && Math.abs(variance - 1) < 1e-3, `channel ${c}: mean ${mean} variance ${variance}`);
    }
    assert.equal(raw.shape.join(), y.shape.join());
  });

  it('AdderLinear learns a 3-class problem (seeded, with BN, adaptive η and Adam)', () => {
    const { x, y, labels } = threeClassData(6);
    const layer = new AdderLinear(4, 3, { rng: new Rng(2) });
    const { first, last } = trainWithAdam(layer.parameters(), () => layer.forward(x), y);
    layer.eval();
    const accuracy = accuracyOf(() => layer.forward(x), labels);
    assert.ok(last < first * 0.5, `loss ${first} -> ${last}`);
    assert.ok(accuracy >= 0.9, `accuracy ${accuracy}`);
  });

  it('AdderConv2d learns to tell bright-left from bright-right 6×6 images (seeded)', () => {
    const { x, y } = leftRightImages(7);
    const conv = new AdderConv2d(1, 2, 3, { stride: 3, rng: new Rng(3) });
    // Logits: each channel's outputs over the left column of positions (2×2 positions in all).
    const { first, last } = trainWithAdam(conv.parameters(), () => o.sum(o.narrow(conv.forward(x), 3, 0, 1), [2, 3]), y);
    assert.ok(last < first * 0.5, `loss ${first} -> ${last}`);
  });
});
