import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { grad } from '../../autograd/engine.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { Linear } from '../../nn/linear.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Sequential } from '../../nn/index.ts';
import { SGD } from '../../optim/sgd.ts';
import { Adam } from '../../optim/adam.ts';
import { manualSeed, mseLoss, Tensor } from '../../tensor/index.ts';
import { Rng } from '../../tensor/random.ts';
import { assertClose, randomTensor } from '../quantizers/testing.ts';
import {
  compactSize, decomposeWeight, denseForward, exportSmartDeal, makeLayout, pow2Exponent, pow2ExponentFast, pow2Range, pow2Ste,
  prepareSmartDeal, roundPow2, roundPow2Masked, shiftAddForward, SmartDealConv2d, SmartDealLinear, smartDealLayers, type SmartDealLayer,
} from './index.ts';

const rng = new Rng(2024);
const range = pow2Range(3, 0);

/** A SmartDeal linear layer in float64 without bias, decomposed from a random weight. */
function float64Linear(inF: number, outF: number, options: { sparsity: number; basisSize?: number; rowsPerBasis?: number }): SmartDealLinear {
  manualSeed(7);
  const dense = new Linear(inF, outF, { bias: false });
  const dec = decomposeWeight(dense.weight.data, dense.weight.shape, options.basisSize ?? 3, { sparsity: options.sparsity, range, ...(options.rowsPerBasis ? { rowsPerBasis: options.rowsPerBasis } : {}) });
  return new SmartDealLinear(dense, dec, { range, exponentBits: 3, basisBits: 32 }, 'float64');
}

/** Ĉ·B̂ of a layer computed with plain loops in float64, scattered into the weight's flat layout. */
function handWeight(layer: SmartDealLayer): Float64Array {
  const { coefficients, basis } = layer.factors();
  const { outChannels: O, fanIn: F, groupsPerChannel: gpc, rowsPerGroup: S, basisSize: K } = layer.layout;
  const w = new Float64Array(O * F);
  for (let o = 0; o < O; o++) {
    for (let f = 0; f < F; f++) {
      const row = Math.floor(f / K);
      const k = f % K;
      const g = o * gpc + Math.floor(row / S);
      const s = row % S;
      let v = 0;
      for (let j = 0; j < K; j++) v += coefficients[(g * S + s) * K + j]! * basis[(g * K + j) * K + k]!;
      w[o * F + f] = v;
    }
  }
  return w;
}

describe('smartdeal: power-of-two coefficients', () => {
  it('range: 2^bits exponents ending at maxExponent; bad bits refused', () => {
    assert.deepEqual(pow2Range(3, 0), { minExponent: -7, maxExponent: 0 });
    assert.deepEqual(pow2Range(2, 1), { minExponent: -2, maxExponent: 1 });
    assert.throws(() => pow2Range(0), /exponentBits/);
    assert.throws(() => pow2Range(2.5), /exponentBits/);
  });

  it('rounding: nearest power of two on the linear scale (midpoint 1.5·2^q goes up), clamped, sign(0) = +1', () => {
    const cases: [number, number][] = [
      [0.74, 0.5], [0.75, 1], [0.7499, 0.5], [2.99, 1], [0.3, 0.25], [-0.3, -0.25], [-0.375, -0.5], [0.5, 0.5], [1, 1],
      [100, 1], [-100, -1], [1e-9, 2 ** -7], [0, 2 ** -7], [2 ** -7, 2 ** -7], [1.4 * 2 ** -6, 2 ** -6], [1.5 * 2 ** -6, 2 ** -5],
    ];
    for (const [c, expected] of cases) assert.equal(roundPow2(c, range), expected, `roundPow2(${c})`);
    const wide = pow2Range(4, 3);
    assert.equal(roundPow2(3, wide), 4);
    assert.equal(roundPow2(2.99, wide), 2);
    assert.equal(roundPow2(6, wide), 8);
    assert.equal(pow2Exponent(12, wide), 3);
  });

  it('rounding is the nearest representable value: |c − r| ≤ |c − (±2^p)| for every p in range, r in the set', () => {
    for (let t = 0; t < 2000; t++) {
      const c = (rng.uniform() * 2 - 1) * 2 ** (rng.uniform() * 12 - 9);
      const r = roundPow2(c, range);
      const p = Math.log2(Math.abs(r));
      assert.ok(Number.isInteger(p) && p >= range.minExponent && p <= range.maxExponent, `${c} -> ${r}`);
      assert.equal(Math.sign(r), Math.sign(c) || 1);
      for (let q = range.minExponent; q <= range.maxExponent; q++) {
        assert.ok(Math.abs(c - r) <= Math.abs(Math.abs(c) - 2 ** q) + 1e-15, `${c} -> ${r}, 2^${q} closer`);
      }
    }
  });

  it('the bit-level exponent and masked rounding used in training equal the formula (random values, powers of two, midpoints, subnormals; float32 and float64)', () => {
    const wide = { minExponent: -1100, maxExponent: 1100 };
    const values = [1, 1.5, 1.4999999999999998, 0.75, 3, 2 ** -1074, 3 * 2 ** -1074, 2 ** -1022, 1.5 * 2 ** -1022, 1e300, -6, -0.3];
    for (let t = 0; t < 2000; t++) values.push((rng.uniform() * 2 - 1) * 2 ** (rng.uniform() * 80 - 40));
    for (const c of values) assert.equal(pow2ExponentFast(c), pow2Exponent(c, wide), `exponent of ${c}`);
    assert.equal(pow2ExponentFast(0), Number.NEGATIVE_INFINITY);
    assert.ok(Number.isNaN(roundPow2(Number.NaN, range)));
    assert.equal(roundPow2(Number.POSITIVE_INFINITY, range), 1);
    const withNan = roundPow2Masked(Float32Array.from([Number.NaN, Number.NaN, -Infinity]), [1, 0, 1], range);
    assert.ok(Number.isNaN(withNan[0]!));
    assert.deepEqual([withNan[1], withNan[2]], [0, -1]);
    // The masked rounding reads float32 bits directly: same values as roundPow2 on float32 and float64 input.
    for (const make of [(v: number[]) => Float32Array.from(v), (v: number[]) => Float64Array.from(v)]) {
      const input = make([...values, 0, -0, 2 ** -140, 1.5 * 2 ** -130]);
      const mask = Float64Array.from(input, (_, i) => (i % 7 === 3 ? 0 : 1));
      const out = roundPow2Masked(input, mask, range);
      for (let i = 0; i < input.length; i++) assert.equal(out[i], mask[i] === 0 ? 0 : roundPow2(input[i]!, range), `${input[i]}`);
    }
  });

  it('pow2Ste: forward mask ⊙ pow2(C), gradient mask ⊙ g (straight through)', () => {
    const c = randomTensor(rng, [2, 3, 2]).requiresGrad_();
    const m = new Tensor(Float64Array.from({ length: 12 }, (_, i) => (i % 4 === 1 ? 0 : 1)), [2, 3, 2]);
    const y = pow2Ste(c, m, range);
    for (let i = 0; i < 12; i++) assert.equal(y.data[i], m.data[i] === 0 ? 0 : roundPow2(c.data[i]!, range));
    const g = randomTensor(rng, [2, 3, 2]);
    const gc = grad(y, [c], { gradOutputs: [g] })[0]!;
    assertClose(gc.data, Array.from(g.data, (v, i) => v * m.data[i]!), 0, 'ste gradient');
  });
});

describe('smartdeal: decomposition', () => {
  it('a rank-one row with power-of-two ratios is recovered (K = 1): Ĉ = [1/8, 1/4, 1/2, 1] exactly, B = 24', () => {
    const w = [3, 6, 12, 24, -1.5, -3, 0.75, 6];
    const dec = decomposeWeight(w, [2, 4], 1, { sparsity: 0, range, iterations: 3 });
    assert.deepEqual([...dec.coefficients.subarray(0, 4)], [1 / 8, 1 / 4, 1 / 2, 1]);
    // The least-squares solves carry a 1e-10 relative ridge.
    assertClose([dec.basis[0]!], [24], 1e-9, 'B');
    assert.ok(dec.relativeError < 1e-9, `error ${dec.relativeError}`);
  });

  it('row-structured sparsity, power-of-two nonzeros in range, reported error = ‖W − Ĉ·B‖/‖W‖, refinement helps', () => {
    const shape = [6, 4, 3, 3];
    const w = randomTensor(rng, shape);
    const one = decomposeWeight(w.data, shape, 3, { sparsity: 0.5, range, iterations: 1 });
    const dec = decomposeWeight(w.data, shape, 3, { sparsity: 0.5, range, iterations: 12 });
    const layout = makeLayout(shape, 3);
    assert.equal(layout.rowsPerChannel, 12);
    assert.equal(layout.groups, 6);
    const kept = [...dec.rowMask].reduce((s, v) => s + v, 0);
    assert.equal(kept, 36);
    for (let r = 0; r < layout.groups * layout.rowsPerGroup; r++) {
      for (let j = 0; j < 3; j++) {
        const c = dec.coefficients[r * 3 + j]!;
        if (dec.rowMask[r] === 0) assert.equal(c, 0);
        else assert.equal(c, roundPow2(c, range));
      }
    }
    // Error computed independently from the OIHW indices: W[o,i,r,c] ≈ Σ_j Ĉ[o, i·3 + r, j]·B[o, j, c].
    let num = 0;
    let den = 0;
    for (let o = 0; o < 6; o++) for (let i = 0; i < 4; i++) for (let r = 0; r < 3; r++) for (let c = 0; c < 3; c++) {
      let v = 0;
      for (let j = 0; j < 3; j++) v += dec.coefficients[(o * 12 + i * 3 + r) * 3 + j]! * dec.basis[(o * 3 + j) * 3 + c]!;
      const x = w.data[((o * 4 + i) * 3 + r) * 3 + c]!;
      num += (x - v) ** 2;
      den += x * x;
    }
    assertClose([dec.relativeError], [Math.sqrt(num / den)], 1e-12, 'error');
    assert.ok(dec.relativeError <= one.relativeError, `${dec.relativeError} vs one round ${one.relativeError}`);
    assert.ok(dec.relativeError < 0.75, `error ${dec.relativeError}`);
    assert.ok(Math.min(...dec.errorHistory) === Math.min(...dec.errorHistory.slice(0, 12)));
  });

  it('refuses bad input with clear messages', () => {
    assert.throws(() => decomposeWeight([1, Number.NaN], [1, 2], 2, { sparsity: 0, range }), /not finite/);
    assert.throws(() => decomposeWeight([1, 2], [1, 2], 2, { sparsity: 1, range }), /sparsity/);
    assert.throws(() => decomposeWeight([1, 2, 3], [1, 2], 2, { sparsity: 0, range }), /3 values/);
  });
});

describe('smartdeal: layers', () => {
  it('Linear: forward equals the dense Linear with W = Ĉ·B̂ (bit for bit); W matches Ĉ·B̂ by hand, padding cropped', () => {
    manualSeed(3);
    const model = new Sequential(new Linear(10, 7));
    prepareSmartDeal(model, { sparsity: 0.3, rowsPerBasis: 2 });
    const [{ layer }] = smartDealLayers(model);
    assert.ok(layer instanceof SmartDealLinear);
    assert.equal(layer.layout.rowsPerChannel, 4);
    assert.equal(layer.layout.groupsPerChannel, 2);
    const w = layer.effectiveWeight();
    assert.deepEqual(w.shape, [7, 10]);
    assertClose(w.data, handWeight(layer), 1e-6, 'W');
    const dense = new Linear(10, 7);
    dense.weight.data.set(w.data);
    dense.bias!.data.set(layer.bias!.data);
    const x = randomTensor(rng, [5, 10], { dtype: 'float32' });
    assert.deepEqual(layer.forward(x).data, dense.forward(x).data);
  });

  it('Conv2d (stride 2, padding 1, groups 2): forward equals the dense Conv2d with W = Ĉ·B̂', () => {
    manualSeed(4);
    const conv = new Conv2d(4, 6, 3, { stride: 2, padding: 1, groups: 2 });
    const model = new Sequential(conv);
    prepareSmartDeal(model, { sparsity: 0.5 });
    const [{ layer }] = smartDealLayers(model);
    assert.ok(layer instanceof SmartDealConv2d);
    const w = layer.effectiveWeight();
    assert.deepEqual(w.shape, [6, 2, 3, 3]);
    assertClose(w.data, handWeight(layer), 1e-6, 'W');
    const dense = new Conv2d(4, 6, 3, { stride: 2, padding: 1, groups: 2 });
    dense.weight.data.set(w.data);
    dense.bias!.data.set(layer.bias!.data);
    const x = randomTensor(rng, [2, 4, 7, 7], { dtype: 'float32' });
    assert.deepEqual(layer.forward(x).data, dense.forward(x).data);
  });

  it('gradient to B and to the input match float64 central differences', () => {
    const layer = float64Linear(8, 5, { sparsity: 0.25, rowsPerBasis: 2 });
    const x = randomTensor(rng, [3, 8]).requiresGrad_();
    const result = gradcheck((input) => layer.forward(input!), [x, layer.basis]);
    assert.ok(result.maxRelativeError < 1e-7, `relative error ${result.maxRelativeError}`);
  });

  it('gradient to C is the STE rule: mask ⊙ (∂L/∂W_piece · B̂ᵀ)', () => {
    const layer = float64Linear(8, 5, { sparsity: 0.25 });
    const x = randomTensor(rng, [3, 8]);
    const gy = randomTensor(rng, [3, 5]);
    const gc = grad(layer.forward(x), [layer.coefficients], { gradOutputs: [gy] })[0]!;
    const { basis } = layer.factors();
    const { groups: G, rowsPerGroup: S, basisSize: K, fanIn: F } = layer.layout;
    const expected = new Float64Array(G * S * K);
    for (let g = 0; g < G; g++) for (let s = 0; s < S; s++) for (let j = 0; j < K; j++) {
      let v = 0;
      for (let k = 0; k < K; k++) {
        const f = s * K + k;
        if (f >= F) continue;
        let dw = 0;
        for (let n = 0; n < 3; n++) dw += gy.data[n * 5 + g]! * x.data[n * 8 + f]!;
        v += dw * basis[(g * K + j) * K + k]!;
      }
      expected[(g * S + s) * K + j] = v * layer.mask.data[(g * S + s) * K + j]!;
    }
    assertClose(gc.data, expected, 1e-12, 'dL/dC');
  });

  it('the row mask is kept through training steps: removed rows stay 0 and untouched, kept ones stay ±2^p, B moves', () => {
    manualSeed(5);
    const model = new Sequential(new Linear(12, 6));
    prepareSmartDeal(model, { sparsity: 0.5, basisBits: 8 });
    const [{ layer }] = smartDealLayers(model);
    const mask0 = Float64Array.from(layer.mask.data);
    const c0 = Float64Array.from(layer.coefficients.data);
    const b0 = Float64Array.from(layer.basis.data);
    const optimizer = new SGD(model.parameters(), { lr: 0.5, momentum: 0.9 });
    for (let step = 0; step < 5; step++) {
      optimizer.zeroGrad();
      const x = randomTensor(rng, [4, 12], { dtype: 'float32' });
      mseLoss(model.forward(x), randomTensor(rng, [4, 6], { dtype: 'float32' })).backward();
      optimizer.step();
    }
    assert.deepEqual(Float64Array.from(layer.mask.data), mask0);
    const { coefficients } = layer.factors();
    let changed = 0;
    for (let i = 0; i < mask0.length; i++) {
      if (mask0[i] === 0) {
        assert.equal(coefficients[i], 0);
        assert.equal(layer.coefficients.data[i], c0[i]);
      } else {
        assert.equal(coefficients[i], roundPow2(coefficients[i]!, layer.format.range));
        if (layer.coefficients.data[i] !== c0[i]) changed++;
      }
    }
    assert.ok(changed > 0, 'kept latent coefficients were trained');
    assert.ok(layer.basis.data.some((v, i) => v !== b0[i]), 'basis trained');
  });
});

describe('smartdeal: compactSize', () => {
  it('hand-computed case: Linear(6, 2), K 3, 50 % rows, int8 basis, 3 exponent bits, plus a dense Linear(2, 3)', () => {
    manualSeed(6);
    const model = new Sequential(new Linear(6, 2), new Linear(2, 3));
    prepareSmartDeal(model, { sparsity: 0.5, skip: ['1'] });
    const size = compactSize(model);
    assert.equal(size.layers.length, 1);
    const [l] = size.layers;
    // 2 channels × 2 rows of 3 → one 3×3 basis per channel (G = 2); 2 of 4 rows kept → 6 nonzeros.
    assert.equal(l!.basisBits, 2 * 9 * 8 + 2 * 32);
    assert.equal(l!.nonzeros, 6);
    assert.equal(l!.coefficientBits, 6 * (1 + 3));
    assert.equal(l!.indexBits, 4);
    assert.equal(l!.biasBits, 64);
    assert.equal(l!.bytes, 26 + 3 + 1 + 8);
    assert.equal(size.otherBytes, 4 * (6 + 3));
    assert.equal(size.totalBytes, 38 + 36);
    assert.equal(size.denseBytes, 36 + 4 * (12 + 2));
    // Float basis: 2·9·32 bits.
    const model32 = new Sequential(new Linear(6, 2));
    prepareSmartDeal(model32, { sparsity: 0.5, basisBits: 32 });
    assert.equal(compactSize(model32).layers[0]!.basisBits, 576);
    // A model without SmartDeal layers counts 4 bytes per value.
    assert.equal(compactSize(new Sequential(new Linear(6, 2))).totalBytes, 56);
  });

  it('prepareSmartDeal refuses unknown names, bad options and a second call, leaving the model untouched', () => {
    const model = new Sequential(new Linear(6, 2), new Linear(2, 3));
    assert.throws(() => prepareSmartDeal(model, { skip: ['fc9'] }), /skip lists 'fc9'/);
    assert.throws(() => prepareSmartDeal(model, { overrides: { fc9: { sparsity: 0 } } }), /override for 'fc9'/);
    assert.throws(() => prepareSmartDeal(model, { sparsity: 0.5, overrides: { 1: { sparsity: 1.5 } } }), /sparsity/);
    assert.throws(() => prepareSmartDeal(model, { exponentBits: 9 }), /exponentBits/);
    assert.equal(smartDealLayers(model).length, 0);
    prepareSmartDeal(model);
    assert.throws(() => prepareSmartDeal(model), /already has SmartDeal layers/);
  });
});

describe('smartdeal: shift-add inference', () => {
  function integerInput(shape: number[]): { data: Float64Array; shape: number[]; scale: number } {
    const n = shape.reduce((p, d) => p * d, 1);
    return { data: Float64Array.from({ length: n }, () => Math.floor(rng.uniform() * 256) - 128), shape, scale: 0.02 };
  }

  it('Linear (padded, 2 bases per channel, int8 basis): integer shift-add equals the dense integer weight exactly, and the layer', () => {
    manualSeed(8);
    const model = new Sequential(new Linear(10, 7));
    prepareSmartDeal(model, { sparsity: 0.25, rowsPerBasis: 3, exponentBits: 4 });
    const [{ layer }] = smartDealLayers(model);
    layer.eval();
    const e = exportSmartDeal(layer);
    assert.ok(e.basisCodes!.every((q) => Number.isInteger(q) && Math.abs(q) <= 127));
    const input = integerInput([4, 10]);
    const shift = shiftAddForward(e, input);
    assert.deepEqual(shift, denseForward(e, input));
    const x = new Tensor(Float32Array.from(input.data, (v) => v * input.scale), input.shape);
    assertClose(shift, layer.forward(x).data, 1e-5, 'vs layer');
  });

  it('Conv2d (padding 2, stride 1, int8 basis): exact vs dense, and the layer', () => {
    manualSeed(9);
    const model = new Sequential(new Conv2d(3, 4, 5, { padding: 2 }));
    prepareSmartDeal(model, { sparsity: 0.5 });
    const [{ layer }] = smartDealLayers(model);
    const e = exportSmartDeal(layer);
    const input = integerInput([2, 3, 6, 6]);
    const shift = shiftAddForward(e, input);
    assert.deepEqual(shift, denseForward(e, input));
    const x = new Tensor(Float32Array.from(input.data, (v) => v * input.scale), input.shape);
    assertClose(shift, layer.forward(x).data, 1e-5, 'vs layer');
  });

  it('float basis: shift-add agrees with the float64 layer to rounding', () => {
    const layer = float64Linear(9, 4, { sparsity: 0.3 });
    const e = exportSmartDeal(layer);
    const x = randomTensor(rng, [3, 9]);
    assertClose(shiftAddForward(e, { data: x.data, shape: x.shape }), layer.forward(x).data, 1e-12, 'float');
    assert.throws(() => shiftAddForward(e, { data: x.data, shape: [3, 8] }), /\[N, 9\]/);
  });
});

describe('smartdeal: learning', () => {
  it('a seeded SD student fitted to a linear teacher (no rows removed) lowers the loss 10x in 80 Adam steps (seed 11: 1.10 -> 0.032)', () => {
    manualSeed(11);
    const teacher = new Linear(12, 6);
    const model = new Sequential(new Linear(12, 6));
    prepareSmartDeal(model, { sparsity: 0 });
    const optimizer = new Adam(model.parameters(), { lr: 0.02 });
    const data = new Rng(12);
    const batch = (): Tensor => randomTensor(data, [16, 12], { dtype: 'float32' });
    const probe = batch();
    const target = teacher.forward(probe).detach();
    const lossOf = (): number => mseLoss(model.forward(probe), target).data[0]!;
    const before = lossOf();
    for (let step = 0; step < 80; step++) {
      const x = batch();
      optimizer.zeroGrad();
      mseLoss(model.forward(x), teacher.forward(x).detach()).backward();
      optimizer.step();
    }
    const after = lossOf();
    assert.ok(after < before / 10, `loss ${before} -> ${after}`);
  });
});
