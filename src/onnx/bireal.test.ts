/**
 * ONNX export of binary (sign) activations: the sign add (AddNode.output 'sign') as exact int64
 * arithmetic (Cast → Sub → Mul → Add → GreaterOrEqual → Where → QuantizeLinear to int8 ±1), a
 * layer's sign output as a float32 accumulator (integer-valued, exact below 2^24) compared with its
 * thresholds, and sign inputs of binary layers as int8 ±1. onnxruntime-node gives the IntModel's
 * logits exactly on small graphs that expose the signs, and the Bi-Real ResNet-8's argmax on most
 * inputs (its requantizing binary convs are QDQ float Conv, not bit-exact).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { biRealResnet8 } from '../nn/index.ts';
import { noGrad } from '../autograd/engine.ts';
import { manualSeed, randn, Rng, Tensor } from '../tensor/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { biRealPlan } from '../quant/config/index.ts';
import { convert } from '../runtime/index.ts';
import { IntModel, packWeightTensor, type IntNode, type IntTensor } from '../runtime/intmodel.ts';
import { argmaxRows } from '../eval/attack.ts';
import { exportOnnx } from './export.ts';
import { loadOnnxRuntime } from './verify.ts';
import { runOrt } from './ort-testing.ts';

const ortLoad = await loadOnnxRuntime();
const noOrt = ortLoad.ok ? false : `skipped: ${ortLoad.reason}`;

const F = 24;

/** An identity Linear reading ±1 (sign input) and dequantizing with scale 1: the logits are the signs. */
function readSigns(name: string, from: string): { node: IntNode; tensors: [string, IntTensor][] } {
  const eye = new Int8Array(F * F);
  for (let i = 0; i < F; i++) eye[i * F + i] = 1;
  return {
    node: {
      op: 'linear', name, inputs: [from], inFeatures: F, outFeatures: F, weight: `${name}.w`, weightFormat: 'int8', weightBits: 8,
      input: { mode: 'sign', scale: 1 }, output: { mode: 'dequantize', scale: `${name}.S`, bias: `${name}.B` },
    },
    tensors: [
      [`${name}.w`, packWeightTensor('int8', eye, [F, F])],
      [`${name}.S`, { dtype: 'float32', shape: [F], data: new Float32Array(F).fill(1) }],
      [`${name}.B`, { dtype: 'float32', shape: [F], data: new Float32Array(F) }],
    ],
  };
}

const INPUT = { mode: 'affine', scale: 0.25, zeroPoint: 3, bits: 8, qmin: -128, qmax: 127 } as const;

/** quantize → sign add of the input with itself (multipliers M_a, M_b) → identity Linear. */
function signAddModel(ma: number, mb: number, za: number, zb: number): IntModel {
  const read = readSigns('fc', 'sum');
  const nodes: IntNode[] = [
    { op: 'quantize', name: 'input', inputs: [], input: INPUT },
    {
      op: 'add', name: 'sum', inputs: ['input', 'input'], inputZeroPoints: [za, zb], inputScales: [0.25, 0.25], multipliers: [ma, mb],
      shift: 0, scale: 1, zeroPoint: 0, lo: -1, hi: 1, output: 'sign',
    },
    read.node,
  ];
  return new IntModel({ format: 'lowbit-intmodel', version: 2, inputShape: [F], nodes }, new Map(read.tensors));
}

/** quantize → int8 Linear with a sign output (thresholds, directions ±1 / 0) → identity Linear. */
function signLayerModel(rng: Rng, K = F, weights?: Int8Array): IntModel {
  const read = readSigns('fc', 'layer');
  const w = weights ?? Int8Array.from({ length: F * K }, () => Math.floor(rng.uniform() * 255) - 127);
  const threshold = Int32Array.from({ length: F }, (_, c) => (c % 5 === 0 ? 0 : Math.floor(rng.uniform() * 20001) - 10000));
  const direction = Int32Array.from({ length: F }, (_, c) => (c % 7 === 3 ? 0 : c % 2 ? -1 : 1));
  const nodes: IntNode[] = [
    { op: 'quantize', name: 'input', inputs: [], input: INPUT },
    {
      op: 'linear', name: 'layer', inputs: ['input'], inFeatures: K, outFeatures: F, weight: 'layer.w', weightFormat: 'int8', weightBits: 8,
      input: INPUT, output: { mode: 'sign', threshold: 'layer.t', direction: 'layer.d' },
    },
    read.node,
  ];
  const tensors = new Map<string, IntTensor>([
    ['layer.w', packWeightTensor('int8', w, [F, K])],
    ['layer.t', { dtype: 'int32', shape: [F], data: threshold }],
    ['layer.d', { dtype: 'int32', shape: [F], data: direction }],
    ...read.tensors,
  ]);
  return new IntModel({ format: 'lowbit-intmodel', version: 2, inputShape: [K], nodes }, tensors);
}


describe('ONNX export of sign activations', { skip: noOrt }, () => {
  it('the sign add is exact int64 arithmetic: onnxruntime gives the IntModel\'s signs, +1 at a zero sum, with nearly cancelling 31-bit multipliers', async () => {
    const rng = new Rng(12);
    let zeros = 0;
    // both inputs are the quantized input (zero point 3): t = (q − 3)·(M_a + M_b); with M_a ≈ −M_b ≈ 2^31
    // a float32 sum of the two products would cancel to 0 (+1) where the exact t = q − 3 is negative
    for (const [ma, mb] of [[2 ** 31 - 1, -(2 ** 31 - 2)], [-(2 ** 31 - 1), 2 ** 31 - 2], [7, -7], [1, -3], [123456789, 987654321]] as const) {
      const im = signAddModel(ma, mb, 3, 3);
      const { model, bytes } = exportOnnx(im);
      const ops = model.graph!.node!.map((n) => n.opType);
      assert.ok(ops.includes('GreaterOrEqual') && ops.filter((o) => o === 'Cast').length === 2, ops.join(', '));
      // inputs: every quantized level (x = (q − 3)·0.25 for q in −128..127) and random values
      const n = 16;
      const x = Float32Array.from({ length: n * F }, (_, i) => (i < 256 ? (i - 128 - 3) * 0.25 : (rng.uniform() * 2 - 1) * 40));
      const ort = await runOrt(bytes, new Tensor(x, [n, F]));
      const ref = im.run(x, n);
      assert.deepEqual(Array.from(ort), Array.from(ref), `M ${ma}, ${mb}`);
      for (let q = -128; q < 128; q++) {
        const t = (q - 3) * (ma + mb);
        assert.equal(ort[q + 128], t >= 0 ? 1 : -1, `q ${q}, M ${ma}, ${mb}`);
        if (t === 0) zeros++;
      }
    }
    assert.ok(zeros >= 256 + 4, `${zeros} zero sums`);
  });

  it('a layer\'s sign output (thresholds, directions ±1 and 0) is exact: onnxruntime gives the IntModel\'s signs', async () => {
    const rng = new Rng(13);
    const im = signLayerModel(rng);
    const { bytes } = exportOnnx(im);
    const n = 32;
    const x = Float32Array.from({ length: n * F }, () => (rng.uniform() * 2 - 1) * 30);
    const ort = await runOrt(bytes, new Tensor(x, [n, F]));
    assert.deepEqual(Array.from(ort), Array.from(im.run(x, n)));
  });

  it('the Bi-Real ResNet-8 exports (5 sign adds as int64, binary convs on int8 ±1) and onnxruntime agrees on argmax for ≥ 90 % of random inputs', async () => {
    manualSeed(3);
    const model = biRealResnet8();
    prepareQat(model, biRealPlan(model));
    const x = randn([64, 1, 28, 28]);
    model.train();
    noGrad(() => {
      for (let i = 0; i < 2; i++) model.forward(x);
    });
    model.eval();
    const im = convert(model, { sample: x });
    const { model: onnx, bytes } = exportOnnx(im);
    const ops = onnx.graph!.node!.map((n) => n.opType);
    assert.equal(ops.filter((o) => o === 'GreaterOrEqual').length, 6, 'five sign adds and the stem\'s sign output');
    assert.equal(ops.filter((o) => o === 'Cast').length, 10);
    const ort = await runOrt(bytes, x);
    const ref = im.run(x);
    const a = argmaxRows(ort, 10);
    const b = argmaxRows(ref, 10);
    const agree = a.reduce((s, v, i) => s + (v === b[i] ? 1 : 0), 0) / a.length;
    assert.ok(agree >= 0.9, `argmax agreement ${agree}`);
  });

  it('refuses a sign-output layer whose accumulator could reach 2^24 (float32 would not sum it exactly), naming the layer', () => {
    const rng = new Rng(14);
    // |q − z| ≤ 131 (int8, zero point 3), |w| = 127: 1,008 inputs stay below 2^24, 1,009 do not
    assert.doesNotThrow(() => exportOnnx(signLayerModel(rng, 1008, new Int8Array(F * 1008).fill(127))));
    assert.throws(() => exportOnnx(signLayerModel(rng, 1009, new Int8Array(F * 1009).fill(127))), /layer 'layer' binarizes its output \(sign\) and its accumulator can reach 16[,.]?\d+ ≥ 2\^24/);
  });
});
