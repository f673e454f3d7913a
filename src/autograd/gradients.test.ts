/**
 * Every primitive's gradient against float64 central differences (relative error < 1e-6),
 * on random shapes with broadcasting and odd sizes. A primitive without a case here fails.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../backend/index.ts';
import { ESTIMATOR_PRIMITIVES, PRIMITIVES, type PrimitiveName } from '../backend/primitives.ts';
import { setBackend } from '../backend/registry.ts';
import { Tensor } from '../tensor/tensor.ts';
import * as o from '../tensor/ops.ts';
import { Rng } from '../tensor/random.ts';
import { grad as autogradGrad } from './engine.ts';
import { gradcheck } from './gradcheck.ts';
import { isDifferentiable } from './gradients.ts';

const rng = new Rng(7);

/** float64 tensor with values uniform in [low, high), requiring grad. */
function r(shape: number[], low = -1, high = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = low + (high - low) * rng.uniform();
  return new Tensor(data, shape).requiresGrad_();
}

/** Values bounded away from zero (for kinks and denominators). */
function away(shape: number[]): Tensor {
  const t = r(shape, 0.2, 1.5);
  for (let i = 0; i < t.size; i++) if (rng.uniform() < 0.5) t.data[i] = -t.data[i]!;
  return t;
}

function idx(values: number[], shape = [values.length]): Tensor {
  return new Tensor(Int32Array.from(values), shape);
}

interface Case {
  name: string;
  /** Finite-difference step; linear ops with float32 rounding inside need a large one. */
  eps?: number;
  f: (...xs: Tensor[]) => Tensor;
  inputs: () => Tensor[];
}

const conv = (stride: [number, number], padding: [number, number], dilation: [number, number], groups: number) =>
  ({ stride, padding, dilation, groups });
const pool = (k: number, s: number, p: number) => ({ kernel: [k, k] as [number, number], stride: [s, s] as [number, number], padding: [p, p] as [number, number] });

const CASES: Record<PrimitiveName, Case[]> = {
  neg: [{ name: 'odd shape', f: o.neg, inputs: () => [r([3, 5, 7])] }],
  exp: [{ name: 'odd shape', f: o.exp, inputs: () => [r([7, 3])] }],
  log: [{ name: 'positive', f: o.log, inputs: () => [r([5, 3], 0.3, 2)] }],
  sqrt: [{ name: 'positive', f: o.sqrt, inputs: () => [r([17], 0.3, 2)] }],
  abs: [{ name: 'away from 0', f: o.abs, inputs: () => [away([4, 5])] }],
  sign: [],
  relu: [{ name: 'away from 0', f: o.relu, inputs: () => [away([3, 7])] }],
  sigmoid: [{ name: 'wide range', f: o.sigmoid, inputs: () => [r([5, 5], -6, 6)] }],
  tanh: [{ name: 'wide range', f: o.tanh, inputs: () => [r([9], -3, 3)] }],
  erf: [{ name: 'both regimes', f: o.erf, inputs: () => [r([33], -4, 4)] }],
  floor: [],
  round: [],
  add: [
    { name: 'same shape', f: o.add, inputs: () => [r([3, 4]), r([3, 4])] },
    { name: 'broadcast both', f: o.add, inputs: () => [r([3, 1, 5]), r([4, 1])] },
  ],
  sub: [{ name: 'broadcast rank', f: o.sub, inputs: () => [r([2, 3, 5]), r([5])] }],
  mul: [
    { name: 'broadcast', f: o.mul, inputs: () => [r([1, 7]), r([3, 1])] },
    { name: 'scalar tensor', f: o.mul, inputs: () => [r([]), r([4, 3])] },
  ],
  div: [{ name: 'broadcast', f: o.div, inputs: () => [r([3, 4]), away([3, 1])] }],
  pow: [
    { name: 'base and exponent', f: o.pow, inputs: () => [r([3, 4], 0.5, 2), r([4], -1.5, 2)] },
    { name: 'negative base, integer exponent', f: (a) => o.pow(a, 3), inputs: () => [r([5], -2, 2)] },
  ],
  maximum: [{ name: 'broadcast', f: o.maximum, inputs: () => [r([4, 5]), r([5])] }],
  minimum: [{ name: 'broadcast', f: o.minimum, inputs: () => [r([2, 1, 3]), r([2, 4, 1])] }],
  greater: [],
  greaterEqual: [],
  equal: [],
  where: [{ name: 'broadcast cond', f: (a, b) => o.where(o.greater(a, 0), a, b), inputs: () => [away([3, 4]), r([4])] }],
  sum: [
    { name: 'all', f: (x) => o.sum(x), inputs: () => [r([3, 4, 5])] },
    { name: 'axes, keepDims', f: (x) => o.sum(x, [0, 2], true), inputs: () => [r([3, 4, 5])] },
    { name: 'middle axis', f: (x) => o.sum(x, 1), inputs: () => [r([2, 7, 3])] },
  ],
  max: [
    { name: 'last axis', f: (x) => o.max(x, -1), inputs: () => [r([4, 9])] },
    { name: 'two axes keepDims', f: (x) => o.max(x, [0, 2], true), inputs: () => [r([3, 2, 5])] },
  ],
  argmax: [],
  reshape: [{ name: 'split dims', f: (x) => o.reshape(x, [5, -1]), inputs: () => [r([3, 5, 2])] }],
  transpose: [
    { name: '3d perm', f: (x) => o.transpose(x, [2, 0, 1]), inputs: () => [r([2, 3, 4])] },
    { name: '4d NCHW->NHWC', f: (x) => o.transpose(x, [0, 2, 3, 1]), inputs: () => [r([2, 3, 3, 5])] },
  ],
  broadcastTo: [{ name: 'new and unit dims', f: (x) => o.broadcastTo(x, [2, 3, 4]), inputs: () => [r([3, 1])] }],
  slice: [{ name: 'inner box', f: (x) => o.slice(x, [1, 0, 2], [3, 4, 5]), inputs: () => [r([4, 5, 7])] }],
  pad: [{ name: 'asymmetric', f: (x) => o.pad(x, [[1, 0], [2, 3]], 0.5), inputs: () => [r([3, 4])] }],
  concat: [{ name: 'axis 1, three inputs', f: (a, b, c) => o.concat([a!, b!, c!], 1), inputs: () => [r([2, 3, 2]), r([2, 1, 2]), r([2, 4, 2])] }],
  gather: [
    { name: 'rows with repeats', f: (x) => o.gather(x, idx([2, 0, 2, 1]), 0), inputs: () => [r([3, 5])] },
    { name: 'axis 1, 2-d indices', f: (x) => o.gather(x, idx([1, 3, 0, 1], [2, 2]), 1), inputs: () => [r([2, 4, 3])] },
  ],
  scatterAdd: [{ name: 'with repeats', f: (u) => o.scatterAdd(u, idx([1, 1, 0]), 0, [3, 4]), inputs: () => [r([3, 4])] }],
  cast: [{ name: 'float64 -> float32 -> float64 (linear: exact with a unit step)', eps: 1, f: (x) => o.cast(o.cast(x, 'float32'), 'float64'), inputs: () => [r([5])] }],
  matmul: [
    { name: 'plain', f: (a, b) => o.matmul(a!, b!), inputs: () => [r([3, 5]), r([5, 4])] },
    { name: 'transA', f: (a, b) => o.matmul(a!, b!, { transA: true }), inputs: () => [r([5, 3]), r([5, 4])] },
    { name: 'transB', f: (a, b) => o.matmul(a!, b!, { transB: true }), inputs: () => [r([3, 5]), r([4, 5])] },
    { name: 'both', f: (a, b) => o.matmul(a!, b!, { transA: true, transB: true }), inputs: () => [r([5, 3]), r([4, 5])] },
    { name: 'batch broadcast', f: (a, b) => o.matmul(a!, b!), inputs: () => [r([2, 1, 3, 5]), r([3, 5, 2])] },
  ],
  linear: [
    { name: 'odd sizes', f: (x, w, b) => o.apply('linear', [x!, w!, b!], {}), inputs: () => [r([3, 5]), r([4, 5]), r([4])] },
    { name: 'through linear(), rank 3', f: (x, w, b) => o.linear(x!, w!, b!), inputs: () => [r([2, 3, 5]), r([7, 5]), r([7])] },
  ],
  conv2d: [
    { name: 'plain', f: (x, w) => o.conv2d(x!, w!), inputs: () => [r([2, 3, 6, 5]), r([4, 3, 3, 3])] },
    { name: 'stride 2 pad 1 dilation 2 groups 2', f: (x, w) => o.conv2d(x!, w!, null, { stride: 2, padding: 1, dilation: 2, groups: 2 }), inputs: () => [r([1, 4, 9, 7]), r([6, 2, 3, 2])] },
    { name: 'with bias, rect stride', f: (x, w, b) => o.conv2d(x!, w!, b, { stride: [1, 2], padding: [2, 0] }), inputs: () => [r([2, 1, 5, 7]), r([3, 1, 5, 3]), r([3])] },
    // depthwise (groups = C = O; the native backend's dwconv kernels are checked against the reference in native.test.ts)
    { name: 'depthwise 3x3 stride 2 pad 1', f: (x, w, b) => o.conv2d(x!, w!, b, { stride: 2, padding: 1, groups: 3 }), inputs: () => [r([2, 3, 7, 6]), r([3, 1, 3, 3]), r([3])] },
    { name: 'depthwise 5x5 pad 2, N = 1', f: (x, w) => o.conv2d(x!, w!, null, { padding: 2, groups: 4 }), inputs: () => [r([1, 4, 5, 6]), r([4, 1, 5, 5])] },
  ],
  conv2dBackwardInput: [{
    name: 'stride 2 groups 2 (double backward)',
    f: (dy, w) => o.apply('conv2dBackwardInput', [dy!, w!], { ...conv([2, 2], [1, 1], [1, 1], 2), inputShape: [2, 4, 7, 6] }),
    inputs: () => [r([2, 6, 4, 3]), r([6, 2, 3, 3])],
  }],
  conv2dBackwardWeight: [{
    name: 'dilation 2 (double backward)',
    f: (x, dy) => o.apply('conv2dBackwardWeight', [x!, dy!], { ...conv([1, 1], [1, 0], [2, 1], 1), weightShape: [3, 2, 2, 3] }),
    inputs: () => [r([2, 2, 6, 5]), r([2, 3, 6, 3])],
  }],
  reluBackward: [{
    name: 'linear in g, mask from y',
    f: (g, y) => o.apply('reluBackward', [g!, y!.detach()], {}),
    inputs: () => [r([3, 4]), away([3, 4])],
  }],
  clamp: [
    { name: 'number bounds (ReLU6-like), values away from the kinks', f: (x) => o.apply('clamp', [x!], { min: 0.1, max: 1 }), inputs: () => [away([3, 5])] },
    { name: 'via ops.clamp, both bounds reached', f: (x) => o.clamp(x!, -0.5, 0.6), inputs: () => [away([4, 4])] },
  ],
  clampBackward: [{
    name: 'linear in g, mask from x',
    f: (g, x) => o.apply('clampBackward', [g!, x!.detach()], { min: -0.5, max: 0.6 }),
    inputs: () => [r([3, 4]), away([3, 4])],
  }],
  batchNorm: [
    { name: 'NCHW, odd sizes', f: (x, w, b) => o.batchNorm(x!, w!, b!, 1e-5), inputs: () => [r([3, 2, 3, 5], -2, 2), r([2], 0.5, 1.5), r([2])] },
    { name: '[N, C, L], large eps', f: (x, w, b) => o.batchNorm(x!, w!, b!, 0.1), inputs: () => [r([5, 3, 4], -1, 3), r([3]), r([3])] },
    { name: '[N, C]', f: (x, w, b) => o.batchNorm(x!, w!, b!), inputs: () => [r([6, 4], -1, 2), r([4]), r([4])] },
    { name: 'NCHW, statistics handed in', f: (x, w, b) => o.batchNorm(x!, w!, b!, 1e-5, o.batchNormStats(x!.detach())), inputs: () => [r([3, 2, 3, 5], -2, 2), r([2], 0.5, 1.5), r([2])] },
    { name: 'clamped to [-0.5, 0.7] (BatchNorm → ReLU6-like), statistics handed in', f: (x, w, b) => o.batchNorm(x!, w!, b!, 1e-5, o.batchNormStats(x!.detach()), [-0.5, 0.7]), inputs: () => [r([3, 2, 3, 5], -2, 2), r([2], 0.5, 1.5), r([2])] },
    { name: 'clamped to [0, 6], no statistics', f: (x, w, b) => o.batchNorm(x!, w!, b!, 1e-5, null, [0, 6]), inputs: () => [r([4, 3, 5], -1, 3), r([3], 1, 4), r([3], 0, 2)] },
  ],
  batchNormBackward: [],
  batchNormStats: [
    { name: 'NCHW', f: (x) => o.batchNormStats(x!), inputs: () => [r([3, 2, 3, 5], -2, 2)] },
    { name: '[N, C]', f: (x) => o.batchNormStats(x!), inputs: () => [r([6, 4], -1, 3)] },
  ],
  conv2dFused: [
    { name: 'bias + relu + 2x2 max pool', f: (x, w, b) => o.conv2dFused(x!, w!, b!, { padding: 1, relu: true, pool: { kernel: 2 } }), inputs: () => [r([2, 2, 5, 6]), r([3, 2, 3, 3]), r([3])] },
    { name: 'bias only, stride 2 dilation 2 groups 2', f: (x, w, b) => o.conv2dFused(x!, w!, b!, { stride: 2, padding: 1, dilation: 2, groups: 2 }), inputs: () => [r([1, 4, 9, 7]), r([6, 2, 3, 2]), r([6])] },
    { name: 'bias + relu, no pool (mask from the output)', f: (x, w, b) => o.conv2dFused(x!, w!, b!, { padding: [0, 1], relu: true }), inputs: () => [r([2, 3, 4, 5]), r([2, 3, 2, 3]), r([2])] },
    { name: 'relu + 3x2 pool stride 1x2', f: (x, w, b) => o.conv2dFused(x!, w!, b!, { relu: true, pool: { kernel: [3, 2], stride: [1, 2] } }), inputs: () => [r([2, 1, 7, 6]), r([2, 1, 2, 2]), r([2])] },
  ],
  maxPool2d: [
    { name: '2x2 stride 2', f: (x) => o.maxPool2d(x, 2), inputs: () => [r([2, 3, 6, 6])] },
    { name: '3x3 stride 2 pad 1 odd', f: (x) => o.maxPool2d(x, 3, { stride: 2, padding: 1 }), inputs: () => [r([1, 2, 7, 5])] },
    { name: 'relu fused, 2x2 stride 2', f: (x) => o.maxPool2d(x, 2, { relu: true }), inputs: () => [r([2, 3, 6, 6])] },
    { name: 'relu fused, 3x2 stride 1x2 pad 1x0', f: (x) => o.maxPool2d(x, [3, 2], { stride: [1, 2], padding: [1, 0], relu: true }), inputs: () => [r([1, 2, 5, 7])] },
  ],
  maxPool2dBackward: [{
    name: 'linear in dy',
    f: (dy, x) => o.apply('maxPool2dBackward', [dy!, x!.detach()], pool(3, 2, 1)),
    inputs: () => [r([1, 2, 4, 3]), r([1, 2, 7, 5])],
  }, {
    name: 'linear in dy, relu fused',
    f: (dy, x) => o.apply('maxPool2dBackward', [dy!, x!.detach()], { ...pool(3, 2, 1), relu: true }),
    inputs: () => [r([1, 2, 4, 3]), r([1, 2, 7, 5])],
  }],
  maxPool2dGather: [{
    name: 'linear in g',
    f: (g, x) => o.apply('maxPool2dGather', [g!, x!.detach()], pool(2, 2, 0)),
    inputs: () => [r([2, 2, 6, 4]), r([2, 2, 6, 4])],
  }, {
    name: 'linear in g, relu fused',
    f: (g, x) => o.apply('maxPool2dGather', [g!, x!.detach()], { ...pool(2, 2, 0), relu: true }),
    inputs: () => [r([2, 2, 6, 4]), r([2, 2, 6, 4])],
  }],
  avgPool2d: [
    { name: '2x2', f: (x) => o.avgPool2d(x, 2), inputs: () => [r([2, 3, 4, 6])] },
    { name: '3x3 stride 2 pad 1', f: (x) => o.avgPool2d(x, 3, { stride: 2, padding: 1 }), inputs: () => [r([1, 2, 7, 5])] },
  ],
  avgPool2dBackward: [{
    name: 'adjoint',
    f: (dy) => o.apply('avgPool2dBackward', [dy!], { ...pool(3, 2, 1), inputShape: [1, 2, 7, 5] }),
    inputs: () => [r([1, 2, 4, 3])],
  }],
  softmax: [
    { name: 'last axis', f: (x) => o.softmax(x), inputs: () => [r([3, 7], -3, 3)] },
    { name: 'middle axis', f: (x) => o.softmax(x, 1), inputs: () => [r([2, 5, 3], -3, 3)] },
  ],
  logSoftmax: [{ name: 'axis 0', f: (x) => o.logSoftmax(x, 0), inputs: () => [r([6, 4], -3, 3)] }],
  layerNorm: [
    { name: 'rows of 7, odd batch dims', f: (x, w, b) => o.layerNorm(x!, w!, b!, 1e-5), inputs: () => [r([3, 2, 7], -2, 2), r([7], 0.5, 1.5), r([7])] },
    { name: 'two trailing dims, large eps', f: (x, w, b) => o.layerNorm(x!, w!, b!, 0.1), inputs: () => [r([2, 3, 5], -1, 3), r([3, 5]), r([3, 5])] },
  ],
  layerNormBackward: [],
  batchNormStatsBackward: [], // batchNormStats's gradient (above) runs through it
  gelu: [
    { name: 'erf form, both tails', f: (x) => o.gelu(x!), inputs: () => [r([29], -5, 5)] },
    { name: 'tanh form, both tails', f: (x) => o.gelu(x!, 'tanh'), inputs: () => [r([4, 7], -5, 5)] },
  ],
  geluBackward: [],
  attention: [
    { name: 'causal, 2 heads, odd sizes', f: (qkv) => o.attention(qkv!, { heads: 2, causal: true }), inputs: () => [r([3, 5, 18], -1.5, 1.5)] },
    { name: 'unmasked, 3 heads', f: (qkv) => o.attention(qkv!, { heads: 3 }), inputs: () => [r([2, 4, 9], -1.5, 1.5)] },
    { name: 'causal, one position', f: (qkv) => o.attention(qkv!, { heads: 1, causal: true }), inputs: () => [r([2, 1, 6])] },
  ],
  attentionBackward: [],
  decodeAttention: [],  // inference only (nondifferentiable); tested against attention in src/backend/reference/decode-attention.test.ts
  crossEntropyLoss: [
    { name: 'per row, odd sizes', f: (x) => o.crossEntropy(x!, idx([2, 0, 4, 1, 4]), 'none', { fused: true }), inputs: () => [r([5, 5], -3, 3)] },
    { name: 'mean over rows', f: (x) => o.crossEntropy(x!, idx([6, 0, 3]), 'mean', { fused: true }), inputs: () => [r([3, 7], -3, 3)] },
  ],
  crossEntropyLossBackward: [],
  // Every output part (states and saved activations) weighted, so each part's gradient path is checked.
  lstmSequence: [
    { name: 'time-major, 3 steps', f: (x, w, b, h, c) => o.lstmSequence(x!, w!, b!, h!, c!), inputs: () => [r([3, 2, 12], -2, 2), r([12, 3]), r([12]), r([2, 3]), r([2, 3])] },
    { name: 'batchFirst, reverse', f: (x, w, b, h, c) => o.lstmSequence(x!, w!, b!, h!, c!, { batchFirst: true, reverse: true }), inputs: () => [r([2, 4, 8], -2, 2), r([8, 2]), r([8]), r([2, 2]), r([2, 2])] },
    { name: 'one step', f: (x, w, b, h, c) => o.lstmSequence(x!, w!, b!, h!, c!, { batchFirst: true }), inputs: () => [r([3, 1, 8], -2, 2), r([8, 2]), r([8]), r([3, 2]), r([3, 2])] },
  ],
  lstmSequenceBackward: [],
  gruSequence: [
    { name: 'time-major, 3 steps', f: (x, w, bi, bh, h) => o.gruSequence(x!, w!, bi!, bh!, h!), inputs: () => [r([3, 2, 9], -2, 2), r([9, 3]), r([9]), r([9]), r([2, 3])] },
    { name: 'batchFirst, reverse', f: (x, w, bi, bh, h) => o.gruSequence(x!, w!, bi!, bh!, h!, { batchFirst: true, reverse: true }), inputs: () => [r([2, 4, 6], -2, 2), r([6, 2]), r([6]), r([6]), r([2, 2])] },
  ],
  gruSequenceBackward: [],
  // Estimators: their gradients are approximations by design, checked against the papers'
  // closed forms in src/quant (quant/estimators.test.ts), not against finite differences.
  fakeQuantize: [],
  fakeQuantizeGrad: [],
  roundSte: [],
  signSte: [],
  adderConv2d: [],  // an estimator by design: tested against the paper's formulas in src/nn/mulfree/adder.test.ts
  adderConv2dGrad: [],
  castFloat: [],  // its rule (the gradient rounded to the format) is tested in src/lowp/cast.test.ts
  quantizeGradient: [],  // a stochastic estimator by design: tested in src/quant/qat/activation-gradients.test.ts
  stochasticQuantize: [],
  scaleGrad: [{ name: 'identity forward, scaled gradient', f: (x) => o.apply('scaleGrad', [x!], { scale: 1 }), inputs: () => [r([4, 3])] }],
};

describe('gradients of every primitive (float64 central differences)', () => {
  setBackend('reference');
  it('every primitive has a gradient case or is non-differentiable', () => {
    for (const op of PRIMITIVES) {
      if (ESTIMATOR_PRIMITIVES.includes(op)) continue;
      if (isDifferentiable(op)) assert.ok(CASES[op].length > 0, `no gradient case for ${op}`);
      else assert.equal(CASES[op].length, 0, `${op} is non-differentiable but has cases`);
    }
  });
  for (const op of PRIMITIVES) {
    for (const c of CASES[op]) {
      it(`${op}: ${c.name}`, () => {
        const res = gradcheck(c.f, c.inputs(), { eps: c.eps });
        assert.ok(res.maxRelativeError < 1e-6, `${op} relative error ${res.maxRelativeError.toExponential(2)}`);
      });
    }
  }
  it('composite ops: crossEntropy, layer-norm-like, gelu, leakyRelu', () => {
    const labels = idx([2, 0, 1, 2]);
    const cases: [string, (...xs: Tensor[]) => Tensor, Tensor[]][] = [
      ['crossEntropy', (x) => o.crossEntropy(x!, labels), [r([4, 3], -2, 2)]],
      ['normalize', (x) => o.div(o.sub(x!, o.mean(x!, -1, true)), o.sqrt(o.add(o.variance(x!, -1, true), 1e-5))), [r([3, 6])]],
      ['gelu', (x) => o.gelu(x!), [r([11], -3, 3)]],
      ['leakyRelu', (x) => o.leakyRelu(x!, 0.1), [away([7])]],
      ['mseLoss', (a, b) => o.mseLoss(a!, b!), [r([5]), r([5])]],
    ];
    for (const [name, f, inputs] of cases) {
      const res = gradcheck(f, inputs);
      assert.ok(res.maxRelativeError < 1e-6, `${name} relative error ${res.maxRelativeError.toExponential(2)}`);
    }
  });
  it('random shapes: broadcasting binary ops, reductions, matmul, conv2d (seeded draws)', () => {
    const shapeRng = new Rng(2024);
    const dim = (): number => 1 + shapeRng.int(5);
    /** A random shape of rank 1..4 and a second one that broadcasts against it. */
    const broadcastPair = (): [number[], number[]] => {
      const rank = 1 + shapeRng.int(4);
      const a = Array.from({ length: rank }, dim);
      const b = a.slice(shapeRng.int(rank)).map((d) => (shapeRng.uniform() < 0.4 ? 1 : d));
      return shapeRng.uniform() < 0.5 ? [a, b] : [b, a];
    };
    const binaryOps: [string, (a: Tensor, b: Tensor) => Tensor, boolean][] = [
      ['add', o.add, false], ['sub', o.sub, false], ['mul', o.mul, false], ['div', o.div, true],
      ['maximum', o.maximum, false], ['minimum', o.minimum, false],
    ];
    for (let trial = 0; trial < 6; trial++) {
      for (const [name, f, positiveB] of binaryOps) {
        const [sa, sb] = broadcastPair();
        const res = gradcheck(f, [r(sa), positiveB ? away(sb) : r(sb)]);
        assert.ok(res.maxRelativeError < 1e-6, `${name} [${sa}] [${sb}]: ${res.maxRelativeError.toExponential(2)}`);
      }
      const shape = Array.from({ length: 1 + shapeRng.int(4) }, dim);
      const axes = shape.map((_, i) => i).filter(() => shapeRng.uniform() < 0.5);
      const keepDims = shapeRng.uniform() < 0.5;
      const sres = gradcheck((x) => o.sum(x!, axes, keepDims), [r(shape)]);
      assert.ok(sres.maxRelativeError < 1e-6, `sum [${shape}] axes [${axes}]`);
      const [m, k, n] = [dim(), dim(), dim()];
      const batch = shapeRng.uniform() < 0.5 ? [dim()] : [];
      const mres = gradcheck((a, b) => o.matmul(a!, b!), [r([...batch, m, k]), r([k, n])]);
      assert.ok(mres.maxRelativeError < 1e-6, `matmul [${batch},${m},${k}]x[${k},${n}]`);
      const groups = 1 + shapeRng.int(2);
      const cin = groups * dim();
      const cout = groups * dim();
      const kh = 1 + shapeRng.int(3);
      const kw = 1 + shapeRng.int(3);
      const h = kh + shapeRng.int(5);
      const w = kw + shapeRng.int(5);
      const stride = 1 + shapeRng.int(2);
      const padding = shapeRng.int(2);
      const cres = gradcheck((x, wt) => o.conv2d(x!, wt!, null, { stride, padding, groups }), [r([1 + shapeRng.int(2), cin, h, w]), r([cout, cin / groups, kh, kw])]);
      assert.ok(cres.maxRelativeError < 1e-6, `conv2d x[${cin},${h},${w}] w[${cout},${cin / groups},${kh},${kw}] s${stride} p${padding} g${groups}`);
    }
  });
  it('double backward: gradient of a gradient (Hessian-vector product of conv + relu)', () => {
    // f(x) = d/dw Σ relu(conv(x, w))·R, checked as a function of x.
    const w = r([2, 1, 3, 3]);
    const R = r([1, 2, 4, 4]).detach();
    const f = (x: Tensor): Tensor => {
      const y = o.mul(o.conv2d(x, w), R);
      const [gw] = gradOf(o.sum(y), [w]);
      return gw!;
    };
    const res = gradcheck(f, [r([1, 1, 6, 6])]);
    assert.ok(res.maxRelativeError < 1e-6, `relative error ${res.maxRelativeError.toExponential(2)}`);
  });
  it('double backward through batchNorm and clamp (the recorded backward pass composed of tensor ops)', () => {
    // f(x, w, b) = every input's gradient of Σ clamp(batchNorm(x, w, b), -0.5, 0.6)·R, flattened and joined.
    const R = r([3, 2, 2, 3]).detach();
    const f = (x: Tensor, w: Tensor, b: Tensor): Tensor => {
      const y = o.mul(o.clamp(o.batchNorm(x, w, b), -0.5, 0.6), R);
      return o.concat(gradOf(o.sum(y), [x, w, b]).map((t) => o.reshape(t, [-1])), 0);
    };
    const res = gradcheck((x, w, b) => f(x!, w!, b!), [r([3, 2, 2, 3], -2, 2), r([2], 0.2, 0.4), r([2], -0.1, 0.1)]);
    assert.ok(res.maxRelativeError < 1e-6, `relative error ${res.maxRelativeError.toExponential(2)}`);
  });
  it('double backward through lstmSequence and gruSequence (the recorded backward pass composed of tensor ops)', () => {
    // f(x, w, state) = every input's gradient of Σ sequence(x, w, ...)·R, flattened and joined.
    const flatGrads = (y: Tensor, xs: Tensor[], R: Tensor): Tensor => o.concat(gradOf(o.sum(o.mul(y, R)), xs).map((t) => o.reshape(t, [-1])), 0);
    const lstmR = r([6, 2, 3, 2]).detach();
    const lstm = (x: Tensor, w: Tensor, b: Tensor, h: Tensor, c: Tensor): Tensor => flatGrads(o.lstmSequence(x, w, b, h, c, { batchFirst: true, reverse: true }), [x, w, b, h, c], lstmR);
    const lstmRes = gradcheck((...xs) => lstm(xs[0]!, xs[1]!, xs[2]!, xs[3]!, xs[4]!), [r([2, 3, 8], -2, 2), r([8, 2]), r([8]), r([2, 2]), r([2, 2])]);
    assert.ok(lstmRes.maxRelativeError < 1e-6, `lstm relative error ${lstmRes.maxRelativeError.toExponential(2)}`);
    const gruR = r([5, 3, 2, 2]).detach();
    const gru = (x: Tensor, w: Tensor, bi: Tensor, bh: Tensor, h: Tensor): Tensor => flatGrads(o.gruSequence(x, w, bi, bh, h), [x, w, bi, bh, h], gruR);
    const gruRes = gradcheck((...xs) => gru(xs[0]!, xs[1]!, xs[2]!, xs[3]!, xs[4]!), [r([3, 2, 6], -2, 2), r([6, 2]), r([6]), r([6]), r([2, 2])]);
    assert.ok(gruRes.maxRelativeError < 1e-6, `gru relative error ${gruRes.maxRelativeError.toExponential(2)}`);
    // The recorded (composed) first-order gradients equal the backward primitives' ones.
    const inputs = [r([2, 3, 8], -2, 2), r([8, 2]), r([8]), r([2, 2]), r([2, 2])];
    const y = o.sum(o.mul(o.lstmSequence(inputs[0]!, inputs[1]!, inputs[2]!, inputs[3]!, inputs[4]!, { batchFirst: true, reverse: true }), lstmR));
    const recorded = autogradGrad(y, inputs, { createGraph: true });
    autogradGrad(y, inputs).forEach((fused, k) => fused.data.forEach((v, i) => assert.ok(Math.abs(v - recorded[k]!.data[i]!) < 1e-12, `input ${k}, element ${i}`)));
  });
});

function gradOf(y: Tensor, xs: Tensor[]): Tensor[] {
  return autogradGrad(y, xs, { createGraph: true });
}

describe('leaf gradients own their buffers', () => {
  it('.grad of leaves fed the same upstream gradient, and of a leaf fed the caller\'s gradient, are separate copies', () => {
    const a = new Tensor(Float32Array.from([1, 2]), [2]).requiresGrad_();
    const b = new Tensor(Float32Array.from([3, 4]), [2]).requiresGrad_();
    o.sum(o.add(a, b)).backward();
    assert.deepEqual(Array.from(a.grad!.data), [1, 1]);
    assert.deepEqual(Array.from(b.grad!.data), [1, 1]);
    a.grad!.data[0] = 100;  // an in-place edit (e.g. hand-written clipping) of one gradient
    assert.deepEqual(Array.from(b.grad!.data), [1, 1]);
    const x = new Tensor(Float32Array.from([1, 2]), [2]).requiresGrad_();
    const g = new Tensor(Float32Array.from([5, 6]), [2]);
    o.add(x, 1).backward(g);
    assert.deepEqual(Array.from(x.grad!.data), [5, 6]);
    x.grad!.data[1] = 0;
    assert.deepEqual(Array.from(g.data), [5, 6], 'the caller\'s gradient is untouched');
  });

  it('with createGraph the copies stay differentiable: d/da of (da + db) for y = sum((a + b)^2)', () => {
    const a = new Tensor(Float32Array.from([1, 2]), [2]).requiresGrad_();
    const b = new Tensor(Float32Array.from([3, 4]), [2]).requiresGrad_();
    const s = o.add(a, b);
    o.sum(o.mul(s, s)).backward(undefined, { createGraph: true });
    // .grad = 2(a + b) for both; d/da sum(a.grad + b.grad) = 4 per element.
    assert.deepEqual(Array.from(a.grad!.data), [8, 12]);
    assert.notEqual(a.grad!.data.buffer, b.grad!.data.buffer);
    const [d] = autogradGrad(o.sum(o.add(a.grad!, b.grad!)), [a]);
    assert.deepEqual(Array.from(d!.data), [4, 4]);
  });
});
