import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../autograd/engine.ts';
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/linear.ts';
import { Tanh } from '../../nn/activation.ts';
import { conv2d, crossEntropy, linear, maxPool2d, relu, reshape, softmax } from '../../tensor/ops.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { Batch } from '../../train/fit.ts';
import {
  activationPerturbation, channelQuantErrors, fisherInformation, hessianTrace, hessianVectorProduct, ptqPerturbation, quantizationErrors, quantizeWeight, rankCorrelation, ranks,
} from './sensitivity.ts';

/** A smooth two-layer net (tanh), so the Hessian is well defined everywhere. */
class Tiny extends Module {
  readonly fc1: Linear;
  readonly act = new Tanh();
  readonly fc2: Linear;
  constructor(seed: number) {
    super();
    const rng = new Rng(seed);
    this.fc1 = this.registerModule('fc1', new Linear(3, 4, { rng }));
    this.registerModule('act', this.act);
    this.fc2 = this.registerModule('fc2', new Linear(4, 3, { rng }));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.act.forward(this.fc1.forward(x)));
  }
}

function batch(seed: number, n = 6): Batch {
  const rng = new Rng(seed);
  const x = new Float32Array(n * 3).map(() => rng.uniform() * 4 - 2);
  const y = Int32Array.from({ length: n }, () => rng.int(3));
  return { x: new Tensor(x, [n, 3]), y: new Tensor(y, [n]) };
}

/** Exact Hessian diagonal blocks by central differences of the gradient (per weight coordinate). */
function fdHessianDiagonal(model: Tiny, b: Batch, eps = 1e-2): Float64Array[] {
  const ws = [model.fc1.weight, model.fc2.weight];
  const gradAt = (): Float64Array[] => grad(crossEntropy(model.forward(b.x), b.y), ws).map((g) => Float64Array.from(g.data));
  return ws.map((w, wi) => {
    const diag = new Float64Array(w.size);
    for (let k = 0; k < w.size; k++) {
      const keep = w.data[k]!;
      w.data[k] = keep + eps;
      const gp = gradAt()[wi]![k]!;
      w.data[k] = keep - eps;
      const gm = gradAt()[wi]![k]!;
      w.data[k] = keep;
      diag[k] = (gp - gm) / (2 * eps);
    }
    return diag;
  });
}

describe('Hessian trace (Hutchinson)', () => {
  it('Hv by double backward equals finite differences of the gradient', () => {
    const model = new Tiny(1);
    const b = batch(2);
    const ws = [model.fc1.weight, model.fc2.weight];
    for (const w of ws) w.requiresGrad_(true);
    const rng = new Rng(5);
    const vs = ws.map((w) => new Tensor(new Float32Array(w.size).map(() => rng.uniform() * 2 - 1), w.shape));
    const hv = hessianVectorProduct(model, [b], ws, vs);
    const eps = 1e-2;
    const shifted = (s: number): Float64Array[] => {
      ws.forEach((w, i) => w.data.forEach((_, k) => (w.data[k] = w.data[k]! + s * eps * vs[i]!.data[k]!)));
      const g = grad(crossEntropy(model.forward(b.x), b.y), ws).map((t) => Float64Array.from(t.data));
      ws.forEach((w, i) => w.data.forEach((_, k) => (w.data[k] = w.data[k]! - s * eps * vs[i]!.data[k]!)));
      return g;
    };
    const gp = shifted(1);
    const gm = shifted(-1);
    hv.forEach((h, i) => {
      let num = 0;
      let den = 0;
      h.forEach((v, k) => {
        const fd = (gp[i]![k]! - gm[i]![k]!) / (2 * eps);
        num += (fd - v) ** 2;
        den += fd * fd;
      });
      assert.ok(Math.sqrt(num / den) < 2e-3, `layer ${i}: relative error ${Math.sqrt(num / den)}`);
    });
  });

  it('Hv through conv2d → ReLU → max-pool → flatten → linear → cross-entropy matches float64 central differences', () => {
    const rng = new Rng(21);
    const r64 = (shape: readonly number[]): Tensor => new Tensor(new Float64Array(shape.reduce((p, d) => p * d, 1)).map(() => rng.uniform() * 2 - 1), shape);
    class ConvNet extends Module {
      readonly wc = this.registerParameter('wc', r64([3, 1, 3, 3]));
      readonly wl = this.registerParameter('wl', r64([4, 3 * 3 * 3]));
      forward(x: Tensor): Tensor {
        const h = maxPool2d(relu(conv2d(x, this.wc, null, { padding: 1 })), 2);
        return linear(reshape(h, [x.shape[0]!, 27]), this.wl);
      }
    }
    const model = new ConvNet();
    const b: Batch = { x: r64([2, 1, 6, 6]), y: new Tensor(Int32Array.from([1, 3]), [2]) };
    const ws = [model.wc, model.wl];
    const vs = ws.map((w) => r64(w.shape));
    const hv = hessianVectorProduct(model, [b], ws, vs);
    const eps = 1e-5;
    const gradAt = (s: number): Float64Array[] => {
      ws.forEach((w, i) => w.data.forEach((_, k) => (w.data[k] = w.data[k]! + s * eps * vs[i]!.data[k]!)));
      const g = grad(crossEntropy(model.forward(b.x), b.y), ws).map((t) => Float64Array.from(t.data));
      ws.forEach((w, i) => w.data.forEach((_, k) => (w.data[k] = w.data[k]! - s * eps * vs[i]!.data[k]!)));
      return g;
    };
    const gp = gradAt(1);
    const gm = gradAt(-1);
    hv.forEach((h, i) => h.forEach((v, k) => {
      const fd = (gp[i]![k]! - gm[i]![k]!) / (2 * eps);
      assert.ok(Math.abs(fd - v) < 1e-6 * Math.max(1, Math.abs(fd)), `weight ${i}[${k}]: Hv ${v} vs ${fd}`);
    }));
  });

  it('the per-layer estimate agrees with the exact trace within 4 standard errors', () => {
    const model = new Tiny(3);
    const b = batch(4);
    const exact = fdHessianDiagonal(model, b).map((d) => d.reduce((s, v) => s + v, 0));
    const samples = 400;
    const est = hessianTrace(model, [b], { samples, perChannel: true, seed: 9 });
    // One Hutchinson sample of block l is Σ_{i∈l} H_ii + Σ_{i∈l, j≠i} v_i·v_j·H_ij (j over all layers):
    // its variance is at most 2·Σ_{i∈l} Σ_j H_ij², the squared norm of l's rows of H (from Hv of unit vectors).
    const ws = [model.fc1.weight, model.fc2.weight];
    ws.forEach((w) => w.requiresGrad_(true));
    est.forEach((e, l) => {
      const w = ws[l]!;
      let frob = 0;
      for (let k = 0; k < w.size; k++) {
        const unit = ws.map((u) => new Tensor(new Float32Array(u.size), u.shape));
        unit[l]!.data[k] = 1;
        for (const col of hessianVectorProduct(model, [b], ws, unit)) frob += col.reduce((s, v) => s + v * v, 0);
      }
      const stderr = Math.sqrt((2 * frob) / samples);
      assert.ok(Math.abs(e.value - exact[l]!) < 4 * stderr + 1e-4, `layer ${e.name}: ${e.value} vs exact ${exact[l]} (stderr ${stderr})`);
      assert.equal(e.weightCount, w.size);
      assert.ok(Math.abs(e.mean - e.value / w.size) < 1e-12);
      // Channel sums add up to the layer's trace.
      const sum = e.perChannel!.reduce((s, v) => s + v, 0);
      assert.ok(Math.abs(sum - e.value) < 1e-9 * Math.max(1, Math.abs(e.value)));
    });
    // The model was left in its mode with its gradient flags.
    assert.equal(model.fc1.weight.grad, null);
  });
});

describe('Fisher information', () => {
  it('equals the mean of squared per-sample gradients (closed form for the last layer: (p − e_y)·hᵀ)', () => {
    const model = new Tiny(5);
    const b = batch(6, 5);
    const fisher = fisherInformation(model, [b], { samples: 5, perChannel: true });
    const expected = new Float64Array(model.fc2.weight.size);
    for (let n = 0; n < 5; n++) {
      const x = new Tensor(b.x.data.slice(n * 3, n * 3 + 3), [1, 3]);
      const h = model.act.forward(model.fc1.forward(x)).detach();
      const p = softmax(model.fc2.forward(h), 1).data;
      const y = b.y.data[n]!;
      for (let o = 0; o < 3; o++) for (let i = 0; i < 4; i++) expected[o * 4 + i]! += (((p[o]! - (o === y ? 1 : 0)) * h.data[i]!) ** 2) / 5;
    }
    const got = fisher[1]!.diagonal!;
    expected.forEach((v, k) => assert.ok(Math.abs(got[k]! - v) < 1e-5 * Math.max(1e-3, v), `F[${k}] ${got[k]} vs ${v}`));
    assert.ok(Math.abs(fisher[1]!.value - expected.reduce((s, v) => s + v, 0)) < 1e-5);
  });
});

describe('PTQ perturbation and quantization errors', () => {
  it('Δloss is the loss of the model with only that layer quantized minus the float loss; weights restored', () => {
    const model = new Tiny(7);
    const b = batch(8, 12);
    const before = model.fc1.weight.data.slice();
    const r = ptqPerturbation(model, [b], [2, 16]);
    assert.deepEqual(model.fc1.weight.data, before);
    const base = crossEntropy(model.forward(b.x), b.y).item();
    const keep = model.fc2.weight.data.slice();
    model.fc2.weight.data.set(quantizeWeight(model.fc2.weight, 2));
    const quantLoss = crossEntropy(model.forward(b.x), b.y).item();
    model.fc2.weight.data.set(keep);
    assert.ok(Math.abs(r[1]!.deltaLoss[2]! - (quantLoss - base)) < 1e-6);
    // KL(p ‖ q) by hand for the same quantized model.
    const p = softmax(model.forward(b.x), 1).data;
    model.fc2.weight.data.set(quantizeWeight(model.fc2.weight, 2));
    const q = softmax(model.forward(b.x), 1).data;
    model.fc2.weight.data.set(keep);
    let kl = 0;
    for (let i = 0; i < p.length; i++) kl += p[i]! * Math.log(p[i]! / q[i]!);
    assert.ok(Math.abs(r[1]!.kl[2]! - kl / 12) < 1e-5, `${r[1]!.kl[2]} vs ${kl / 12}`);
    // ≈ 0: KL of two float32 softmaxes that differ by 16-bit weight rounding can round to a tiny negative.
    assert.ok(Math.abs(r[0]!.kl[16]!) < 1e-6, `kl at 16 bits ${r[0]!.kl[16]}`);
    assert.ok(Math.abs(r[0]!.deltaLoss[16]!) < 1e-4, '16-bit weights barely change the loss');
  });
  it('2-bit per-channel symmetric weights take values {−s, 0, s} with s = the MSE-chosen scale', () => {
    const w = new Tensor(Float32Array.from([0.9, -0.1, 0.3, 0.05, -2, 1, 0.2, 0]), [2, 4]);
    const q = quantizeWeight(w, 2);
    for (let c = 0; c < 2; c++) {
      const row = [...q.slice(c * 4, c * 4 + 4)];
      const levels = new Set(row.map((v) => Math.abs(v)).filter((v) => v > 0));
      assert.ok(levels.size <= 1, `channel ${c}: ${row}`);
    }
    const e = channelQuantErrors(w, 2);
    let direct = 0;
    for (let k = 0; k < 4; k++) direct += (q[k]! - w.data[k]!) ** 2;
    assert.ok(Math.abs(e[0]! - direct) < 1e-9);
  });
  it('quantizationErrors = ½·Σ_c h_c·‖Q(w_c) − w_c‖² (per channel) or ½·(Tr/n)·‖Q(W) − W‖²', () => {
    const w = new Tensor(Float32Array.from([0.9, -0.1, 0.3, 0.05, -2, 1, 0.2, 0]), [2, 4]);
    const e = channelQuantErrors(w, 3);
    const perLayer = quantizationErrors(w, { name: 'x', value: 8, mean: 1, weightCount: 8 }, [3]);
    assert.ok(Math.abs(perLayer[3]! - 0.5 * (e[0]! + e[1]!)) < 1e-12);
    const perChannel = quantizationErrors(w, { name: 'x', value: 8, mean: 1, weightCount: 8, perChannel: Float64Array.from([4, 40]) }, [3]);
    assert.ok(Math.abs(perChannel[3]! - 0.5 * (1 * e[0]! + 10 * e[1]!)) < 1e-12);
  });
});

describe('rank correlation', () => {
  it('Spearman and Kendall τ-b against hand-computed values', () => {
    assert.deepEqual(rankCorrelation([1, 2, 3, 4], [10, 20, 30, 40]), { spearman: 1, kendall: 1 });
    assert.deepEqual(rankCorrelation([1, 2, 3], [3, 2, 1]), { spearman: -1, kendall: -1 });
    // x = 1..5, y = [2, 1, 4, 3, 5]: Σd² = 4 → ρ = 1 − 6·4/(5·24) = 0.8; concordant 8, discordant 2 → τ = 0.6.
    const r = rankCorrelation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]);
    assert.ok(Math.abs(r.spearman - 0.8) < 1e-12 && Math.abs(r.kendall - 0.6) < 1e-12);
    // Ties: x = [1, 2, 2, 3], y = [1, 2, 3, 4]. Ranks x = [1, 2.5, 2.5, 4]; ρ = Pearson of ranks = 0.9486833;
    // τ-b: C = 5, D = 0, ties in x only 1 → 5/√(6·5) = 0.9128709.
    const t = rankCorrelation([1, 2, 2, 3], [1, 2, 3, 4]);
    assert.ok(Math.abs(t.spearman - 3 / Math.sqrt(10)) < 1e-9, String(t.spearman));
    assert.ok(Math.abs(t.kendall - 5 / Math.sqrt(30)) < 1e-9, String(t.kendall));
    assert.deepEqual(ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2]);
    assert.throws(() => rankCorrelation([1], [1]), /at least 2/);
  });
});

describe('activationPerturbation', () => {
  it('equals the loss of the model with only that input min-max quantized (formula), and restores the model', () => {
    const model = new Tiny(3);
    const calib = batch(4, 16);
    const b = batch(5, 12);
    const before = model.forward(b.x).data.slice();
    const r = activationPerturbation(model, [calib], [b], [2, 3, 8], { method: 'minmax' });
    assert.deepEqual(model.forward(b.x).data, before, 'the model is restored');
    assert.deepEqual(r.map((x) => x.name), ['fc1', 'fc2']);
    const base = crossEntropy(model.forward(b.x), b.y).item();
    // fc2's input h = tanh(fc1 x): unsigned asymmetric, range [min(0, min h), max(0, max h)] on the calibration batch.
    const hc = model.act.forward(model.fc1.forward(calib.x)).data;
    const lo = Math.min(0, ...hc);
    const hi = Math.max(0, ...hc);
    for (const bits of [2, 3, 8]) {
      const levels = 2 ** bits - 1;
      const s = (hi - lo) / levels;
      const zp = Math.round(-lo / s);
      const h = model.act.forward(model.fc1.forward(b.x));
      const hq = new Tensor(h.data.map((v) => (Math.min(levels, Math.max(0, Math.round(v / s) + zp)) - zp) * s), h.shape);
      const loss = crossEntropy(model.fc2.forward(hq), b.y).item();
      assert.ok(Math.abs(r[1]!.deltaLoss[bits]! - (loss - base)) < 2e-5, `${bits} bits: ${r[1]!.deltaLoss[bits]} vs ${loss - base}`);
    }
    assert.ok(r[1]!.kl[2]! > r[1]!.kl[8]! && r[1]!.kl[8]! >= -1e-7, 'KL shrinks with bits');
    assert.ok(Math.abs(r[0]!.deltaLoss[8]!) < Math.abs(r[0]!.deltaLoss[2]!) + 1e-9);
    assert.throws(() => activationPerturbation(model, [calib], [b], [1]), /bits must be integers in \[2, 16\]/);
  });
});
