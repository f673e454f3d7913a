/**
 * The fast TypeScript executor (ts-kernels) with both GEMM kernels ('double' lane-packed doubles
 * and 'wasm' WebAssembly SIMD128) against the reference TypeScript executor
 * (`tsExecutor = 'reference'`, the reference GEMM kernels): every layer input (trace) and every
 * logit bit for bit, on converted models (LeNet-5, the Fashion CNN, ResNet-8, binary layers with
 * sign activations) and on hand-built conv graphs of random geometry, zero points and out-of-range
 * inputs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { AvgPool2d, Conv2d, Flatten, Linear, ReLU, ReLU6, Sequential, cnn, lenet5, mlp, resnet8, type Module } from '../../nn/index.ts';
import { manualSeed, randn, Rng, type Tensor } from '../../tensor/index.ts';
import { prepareQat } from '../../quant/qat/index.ts';
import { qconfigFor, type QConfig } from '../../quant/config/qconfig.ts';
import { setIntKernelsReference } from '../kernels/index.ts';
import { convert } from '../convert.ts';
import { IntModel, packWeightTensor, type IntGraph, type IntNode, type IntTensor, type LayerNode } from '../intmodel.ts';
import { quantizeMultiplier } from '../requantize.ts';

type Trace = Map<string, { shape: number[]; data: Int32Array }>;

function runWith(im: IntModel, mode: 'fast' | 'reference', x: Float32Array, batch: number, kernels: 'wasm' | 'double' = 'double'): { logits: Float32Array; trace: Trace } {
  im.useNative = false;
  im.tsExecutor = mode;
  im.tsKernels = kernels;
  const trace: Trace = new Map();
  const logits = im.run(x, batch);
  im.run(x, batch, { trace }); // same integers with a trace (the layer inputs)
  return { logits, trace };
}

/**
 * Runs the reference executor and the fast one with either kernels, asserts identical layer inputs
 * and logits; returns how many layers ran fast on the wasm kernels (fewer ran fast on doubles:
 * the counts are asserted equal).
 */
function assertSame(im: IntModel, x: Float32Array, batch: number, label: string): number {
  const ref = runWith(im, 'reference', x, batch);
  for (const kernels of ['double', 'wasm'] as const) {
    const fast = runWith(im, 'fast', x, batch, kernels);
    const tag = `${label} (${kernels})`;
    assert.equal(fast.logits.length, ref.logits.length);
    for (let i = 0; i < ref.logits.length; i++) assert.ok(Object.is(fast.logits[i], ref.logits[i]), `${tag}: logit ${i}: ${fast.logits[i]} vs ${ref.logits[i]}`);
    assert.deepEqual([...fast.trace.keys()], [...ref.trace.keys()]);
    for (const [name, t] of ref.trace) assert.deepEqual(fast.trace.get(name), t, `${tag}: input of ${name}`);
  }
  // the resident wasm run handed to TypeScript only nodes its kernels do not take: sign
  // quantizers / adds, layers the wasm kernels cannot run, nodes on float values
  for (const name of im.wasmHostNodes()) {
    const node = im.nodes.find((n) => n.name === name)!;
    const allowed = (node.op === 'quantize' && node.input.mode === 'sign') || (node.op === 'add' && node.output === 'sign')
      || ((node.op === 'conv2d' || node.op === 'linear') && im.wasmLayerFallback(name) !== null) || node.op === 'clamp' || node.op === 'flatten';
    assert.ok(allowed, `${label}: node ${name} (${node.op}) ran in TypeScript in the resident wasm run`);
  }
  const layers = im.nodes.filter((n): n is LayerNode => n.op === 'conv2d' || n.op === 'linear');
  const fast = layers.filter((n) => im.fastLayerFallback(n.name) === null).length;
  const wasm = layers.filter((n) => im.wasmLayerFallback(n.name) === null).length;
  assert.equal(wasm, fast, `${label}: layers on wasm vs fast: ${layers.map((n) => `${n.name}: ${im.wasmLayerFallback(n.name)}`).join('; ')}`);
  return wasm;
}

function prepared<M extends Module>(model: M, qconfig: QConfig, seed = 0): M {
  manualSeed(seed);
  prepareQat(model, { default: qconfig });
  model.train();
  const forward = (t: Tensor): Tensor => (model as unknown as { forward(t: Tensor): Tensor }).forward(t);
  for (let i = 0; i < 3; i++) noGrad(() => forward(randn([8, 1, 28, 28])));
  model.eval();
  return model;
}

/** Normal inputs, a few of them far outside the calibrated range (the input quantizer saturates). */
function inputs(batch: number, seed: number): Float32Array {
  manualSeed(seed);
  const x = randn([batch, 1, 28, 28]).data as Float32Array;
  for (let i = 0; i < x.length; i += 97) x[i] = x[i]! * 1000;
  return x;
}

function layerCount(im: IntModel): number {
  return im.nodes.filter((n) => n.op === 'conv2d' || n.op === 'linear').length;
}

describe('fast TypeScript executor == reference TypeScript executor', () => {
  before(() => setIntKernelsReference(true));
  after(() => setIntKernelsReference(false));

  for (const scheme of ['w8a8', 'w4a4'] as const) {
    it(`LeNet-5 ${scheme}`, () => {
      const model = prepared(lenet5(), qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq'));
      const im = convert(model, { inputShape: [1, 28, 28] });
      assert.equal(assertSame(im, inputs(6, 1), 6, `lenet5 ${scheme}`), layerCount(im));
    });
  }

  it('runSegment (one layer and the nodes after it, the wasm kernels outside a resident run) == reference', () => {
    const model = prepared(lenet5(), qconfigFor('w8a8', 'ste'));
    const im = convert(model, { inputShape: [1, 28, 28] });
    const ref = runWith(im, 'reference', inputs(3, 8), 3);
    im.tsExecutor = 'fast';
    im.tsKernels = 'wasm';
    for (const [name, input] of ref.trace) {
      const fast = im.runSegment(name, input.data, input.shape);
      im.tsExecutor = 'reference';
      const want = im.runSegment(name, input.data, input.shape);
      im.tsExecutor = 'fast';
      assert.deepEqual(fast, want, `segment ${name}`);
    }
  });

  it('Fashion CNN w8a8 (folded BatchNorm)', () => {
    const model = prepared(cnn(), qconfigFor('w8a8', 'ste'));
    const im = convert(model, { inputShape: [1, 28, 28] });
    assert.equal(assertSame(im, inputs(4, 2), 4, 'cnn w8a8'), layerCount(im));
  });

  for (const scheme of ['w8a8', 'w4a4'] as const) {
    it(`ResNet-8 ${scheme} (graph version 2, add nodes)`, () => {
      const model = prepared(resnet8(), qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq'));
      const im = convert(model, { sample: randn([8, 1, 28, 28]) });
      assert.equal(im.graph.version, 2);
      assert.ok(im.nodes.some((n) => n.op === 'add'));
      assert.equal(assertSame(im, inputs(3, 3), 3, `resnet8 ${scheme}`), layerCount(im));
    });
  }

  it('average pooling and ReLU6 (avgpool2d with fractional bits, clamps)', () => {
    const net = new Sequential(new Conv2d(1, 4, 3, { padding: 1 }), new ReLU6(), new AvgPool2d(2), new Conv2d(4, 4, 3), new ReLU(), new Flatten(), new Linear(4 * 12 * 12, 10));
    const model = prepared(net, qconfigFor('w8a8', 'ste'));
    const im = convert(model, { inputShape: [1, 28, 28] });
    assert.ok(im.nodes.some((n) => n.op === 'avgpool2d'), im.formatLayers());
    assert.equal(assertSame(im, inputs(4, 7), 4, 'avgpool relu6'), layerCount(im));
  });

  it('MLP w8a8 on 300 samples (linear layers in chunks of 256 samples)', () => {
    const model = prepared(mlp({ hidden: [32] }), qconfigFor('w8a8', 'ste'));
    const im = convert(model, { inputShape: [1, 28, 28] });
    assert.equal(assertSame(im, inputs(300, 6), 300, 'mlp w8a8 300'), layerCount(im));
  });

  it('binary layers: 1-bit affine and sign activations (XNOR linear and conv, sign outputs)', () => {
    const binary = (sign: boolean): QConfig => qconfigFor('w1a1', 'binary' as never, { signActivations: sign });
    for (const sign of [false, true]) {
      const m = prepared(mlp({ hidden: [64, 32], batchNorm: true }), binary(sign));
      const im = convert(m, { inputShape: [1, 28, 28] });
      assert.equal(assertSame(im, inputs(5, 4), 5, `mlp w1a1 sign=${sign}`), layerCount(im));
      if (sign) assert.ok(im.layers().some((l) => l.bits.includes('xnor')));
    }
    const net = prepared(lenet5(), binary(true));
    const im = convert(net, { inputShape: [1, 28, 28] });
    const xnorConv = im.nodes.find((n): n is LayerNode => n.op === 'conv2d' && n.weightFormat === 'binary' && n.input.mode === 'sign');
    assert.ok(xnorConv, im.formatLayers());
    assert.ok(im.nodes.some((n) => (n.op === 'conv2d' || n.op === 'linear') && n.output.mode === 'sign'), im.formatLayers());
    assert.equal(assertSame(im, inputs(4, 5), 4, 'lenet5 w1a1 sign'), layerCount(im));
  });
});

/**
 * quantize → conv2d (random geometry) → flatten → linear (dequantize). `same`: stride 1 and
 * width-preserving padding; `wrap`: the quantize node
 * produces values outside the conv's declared input range (the reference stores them in the byte
 * type, wrapping); `wide`: the conv's input range is 16-bit (the fast executor must fall back).
 */
function randomConvModel(rng: Rng, variant: 'plain' | 'same' | 'wrap' | 'wide' | 'deep8' | 'deep4' | 'direct'): IntModel {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const deep = variant === 'deep8' || variant === 'deep4';
  const groups = deep ? 1 : int(1, 3);
  // deep: K = cg·kh·kw above the lane limits (1,036 for 8-bit, 624 for 4-bit): K chunks
  // direct: stride 1 and ≥ 8 channels per group (the wasm kernels' direct convolution)
  const cg = variant === 'deep8' ? 130 : variant === 'deep4' ? 80 : variant === 'direct' ? int(8, 11) : int(1, 3), og = int(1, 5);
  const Cin = groups * cg, Cout = groups * og;
  const k: [number, number] = deep ? [3, 3] : [int(1, 3), int(1, 3)];
  const stride: [number, number] = [int(1, 2), int(1, 2)];
  const padding: [number, number] = [int(0, 2), int(0, 2)];
  const dilation: [number, number] = [int(1, 2), int(1, 2)];
  if (variant === 'direct') stride[0] = stride[1] = 1;
  if (variant === 'same') {
    // stride 1, output as wide as the input (the im2col block-copy path)
    stride[0] = stride[1] = 1;
    k[1] = [1, 3][int(0, 1)]!;
    padding[1] = (dilation[1] * (k[1] - 1)) / 2;
  }
  const H = int(dilation[0] * (k[0] - 1) + 1, 9), W = int(dilation[1] * (k[1] - 1) + 1, 9);
  const oh = Math.floor((H + 2 * padding[0] - dilation[0] * (k[0] - 1) - 1) / stride[0]) + 1;
  const ow = Math.floor((W + 2 * padding[1] - dilation[1] * (k[1] - 1) - 1) / stride[1]) + 1;
  const unsigned = rng.uniform() < 0.5;
  const [qmin, qmax] = variant === 'wide' ? [-32768, 32767] : variant === 'deep8' ? [0, 255] : variant === 'deep4' ? [0, 15] : unsigned ? [0, int(15, 255)] : [int(-128, -8), int(7, 127)];
  const z = deep ? 0 : int(qmin, qmax);
  const convInput = { mode: 'affine' as const, scale: 0.05, zeroPoint: z, bits: variant === 'wide' ? 16 : 8, qmin, qmax };
  const quantInput = variant === 'wrap' || (variant === 'direct' && rng.uniform() < 0.5) ? { ...convInput, qmin: -700, qmax: 700 } : convInput;
  const Kc = cg * k[0] * k[1];
  const tensors = new Map<string, IntTensor>();
  const wMax = variant === 'deep4' ? 7 : 127;
  // deep: every weight at ±wMax and inputs at the range ends make the sums reach the bound
  const weight = (): number => (deep ? (rng.uniform() < 0.5 ? -wMax : wMax) : int(-wMax, wMax));
  tensors.set('conv.w', packWeightTensor('int8', Array.from({ length: Cout * Kc }, weight), [Cout, cg, k[0], k[1]]));
  const M = new Int32Array(Cout), sh = new Int32Array(Cout), bias = new Int32Array(Cout);
  for (let c = 0; c < Cout; c++) {
    const m = quantizeMultiplier(2 ** -(8 + rng.uniform() * 10));
    M[c] = m.multiplier;
    sh[c] = m.shift + 4;
    bias[c] = int(-100000, 100000);
  }
  tensors.set('conv.b', { dtype: 'int32', shape: [Cout], data: bias });
  tensors.set('conv.m', { dtype: 'int32', shape: [Cout], data: M });
  tensors.set('conv.s', { dtype: 'int32', shape: [Cout], data: sh });
  const [lo, hi] = rng.uniform() < 0.5 ? [0, 255] : [-128, 127];
  const outZ = int(lo, hi);
  const F = Cout * oh * ow;
  tensors.set('fc.w', packWeightTensor('int8', Array.from({ length: 5 * F }, () => int(-127, 127)), [5, F]));
  tensors.set('fc.scale', { dtype: 'float32', shape: [5], data: Float32Array.from({ length: 5 }, () => rng.uniform() * 1e-3) });
  tensors.set('fc.bias', { dtype: 'float32', shape: [5], data: Float32Array.from({ length: 5 }, () => rng.uniform() - 0.5) });
  const nodes: IntNode[] = [
    { op: 'quantize', name: 'q', input: quantInput },
    {
      op: 'conv2d', name: 'conv', inFeatures: Cin, outFeatures: Cout, weight: 'conv.w', weightFormat: 'int8', weightBits: 8,
      conv: { inChannels: Cin, outChannels: Cout, kernelSize: k, stride, padding, dilation, groups }, input: convInput,
      output: { mode: 'requantize', bias: 'conv.b', multiplier: 'conv.m', shift: 'conv.s', biasShift: 4, scale: 0.1, zeroPoint: outZ, lo, hi },
    },
    { op: 'flatten', name: 'flat', startDim: 1, endDim: -1 },
    {
      op: 'linear', name: 'fc', inFeatures: F, outFeatures: 5, weight: 'fc.w', weightFormat: 'int8', weightBits: 8,
      input: { mode: 'affine', scale: 0.1, zeroPoint: outZ, bits: 8, qmin: lo, qmax: hi },
      output: { mode: 'dequantize', scale: 'fc.scale', bias: 'fc.bias' },
    },
  ];
  const graph: IntGraph = { format: 'lowbit-intmodel', version: 1, inputShape: [Cin, H, W], nodes };
  return new IntModel(graph, tensors);
}

describe('fast TypeScript executor on hand-built conv graphs', () => {
  before(() => setIntKernelsReference(true));
  after(() => setIntKernelsReference(false));

  it('random geometry (groups, stride, padding, dilation), zero points, byte types: identical', () => {
    const rng = new Rng(21);
    for (let trial = 0; trial < 40; trial++) {
      const im = randomConvModel(rng, trial % 2 === 0 ? 'same' : 'plain');
      const per = im.graph.inputShape.reduce((p, d) => p * d, 1);
      const x = Float32Array.from({ length: 3 * per }, () => (rng.uniform() - 0.5) * 30);
      assert.equal(assertSame(im, x, 3, `trial ${trial}`), 2, `trial ${trial}: a layer fell back`);
    }
  });

  it('stride 1 with 8–11 channels per group (direct convolution on the wasm kernels), some inputs wrapping: identical', () => {
    const rng = new Rng(23);
    for (let trial = 0; trial < 16; trial++) {
      const im = randomConvModel(rng, 'direct');
      const per = im.graph.inputShape.reduce((p, d) => p * d, 1);
      const x = Float32Array.from({ length: 2 * per }, () => (rng.uniform() - 0.5) * 40);
      assert.equal(assertSame(im, x, 2, `direct ${trial}`), 2, `direct ${trial}: a layer fell back`);
    }
  });

  it('inputs outside the declared range wrap (byte types), K above the lane limits runs in chunks, wider inputs fall back', () => {
    const rng = new Rng(22);
    for (let trial = 0; trial < 15; trial++) {
      const im = randomConvModel(rng, 'wrap');
      const per = im.graph.inputShape.reduce((p, d) => p * d, 1);
      const x = Float32Array.from({ length: 2 * per }, () => (rng.uniform() - 0.5) * 60);
      assert.equal(assertSame(im, x, 2, `wrap ${trial}`), 2);
    }
    for (const variant of ['deep8', 'deep4'] as const) {
      const deep = randomConvModel(rng, variant);
      const per = deep.graph.inputShape.reduce((p, d) => p * d, 1);
      // inputs at the ends of the range (0 and qmax) and in between
      const x = Float32Array.from({ length: 2 * per }, () => (rng.uniform() < 0.4 ? 1e6 : rng.uniform() < 0.5 ? -1e6 : rng.uniform() * 20));
      assert.equal(assertSame(deep, x, 2, variant), 2, variant);
    }
    const im = randomConvModel(rng, 'wide');
    const per = im.graph.inputShape.reduce((p, d) => p * d, 1);
    assertSame(im, Float32Array.from({ length: 2 * per }, () => (rng.uniform() - 0.5) * 60), 2, 'wide');
    assert.match(im.fastLayerFallback('conv') ?? '', /wider than 8 bits/);
    assert.equal(im.fastLayerFallback('fc'), null);
  });
});
