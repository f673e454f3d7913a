import { test } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, randn, tensor, Rng, Tensor } from '../tensor/index.ts';
import { Linear } from './linear.ts';
import { Conv2d } from './conv.ts';
import { BatchNorm1d, BatchNorm2d } from './batchnorm.ts';
import { GELU, LeakyReLU, ReLU, ReLU6, Sigmoid, Tanh } from './activation.ts';
import { AdaptiveAvgPool2d, AvgPool2d, MaxPool2d } from './pooling.ts';
import { Flatten } from './flatten.ts';
import { Dropout } from './dropout.ts';
import { Embedding } from './embedding.ts';
import { LayerNorm } from './layernorm.ts';
import { availableBackends, withBackend } from '../backend/index.ts';

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-5, what = ''): void {
  assert.equal(actual.length, expected.length, `${what} length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.ok(Math.abs(a - e) <= tol * (1 + Math.abs(e)), `${what}[${i}]: ${a} vs ${e}`);
  }
}

test('Linear matches a manual x·Wᵀ + b, on rank 2 and rank 3 inputs', () => {
  manualSeed(0);
  const layer = new Linear(3, 2);
  const x = randn([4, 3]);
  const w = layer.weight.data;
  const b = layer.bias!.data;
  const expected: number[] = [];
  for (let n = 0; n < 4; n++) {
    for (let o = 0; o < 2; o++) {
      let s = b[o]!;
      for (let i = 0; i < 3; i++) s += x.data[n * 3 + i]! * w[o * 3 + i]!;
      expected.push(s);
    }
  }
  close(layer.forward(x).data, expected);
  const y3 = layer.forward(x.reshape([2, 2, 3]));
  assert.deepEqual(y3.shape, [2, 2, 2]);
  close(y3.data, expected);
  assert.throws(() => layer.forward(randn([2, 4])), /last dim should be 3/);
  assert.equal(new Linear(3, 2, { bias: false }).bias, null);
});

test('Linear and Conv2d default init: bounds 1/√fanIn, seeded by rng', () => {
  const layer = new Linear(100, 50, { rng: new Rng(7) });
  const bound = 1 / Math.sqrt(100);
  assert.ok(layer.weight.toArray().every((v) => Math.abs(v) <= bound));
  assert.ok(layer.bias!.toArray().every((v) => Math.abs(v) <= bound));
  assert.ok(Math.max(...layer.weight.toArray()) > 0.9 * bound, 'spreads over the range');
  assert.deepEqual(new Linear(100, 50, { rng: new Rng(7) }).weight.toArray(), layer.weight.toArray());
  const conv = new Conv2d(4, 8, 3, { rng: new Rng(1) });
  const cb = 1 / Math.sqrt(4 * 9);
  assert.ok(conv.weight.toArray().every((v) => Math.abs(v) <= cb));
  assert.ok(Math.max(...conv.weight.toArray().map(Math.abs)) > 0.9 * cb);
});

test('Conv2d matches a direct convolution with stride, padding, dilation and groups', () => {
  const rng = new Rng(3);
  const conv = new Conv2d(4, 6, [3, 2], { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 2, rng });
  const x = randn([2, 4, 5, 6], { rng });
  const y = conv.forward(x);
  const [N, C, H, W] = [2, 4, 5, 6];
  const [O, kh, kw] = [6, 3, 2];
  const OH = Math.floor((H + 2 - 1 * (kh - 1) - 1) / 2) + 1;
  const OW = Math.floor((W + 4 - 2 * (kw - 1) - 1) / 1) + 1;
  assert.deepEqual(y.shape, [N, O, OH, OW]);
  const cg = C / 2;
  const og = O / 2;
  const expected: number[] = [];
  for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) for (let oh = 0; oh < OH; oh++) for (let ow = 0; ow < OW; ow++) {
    const g = Math.floor(o / og);
    let s = conv.bias!.data[o]!;
    for (let c = 0; c < cg; c++) for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
      const ih = oh * 2 - 1 + i;
      const iw = ow - 2 + j * 2;
      if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
      s += x.data[((n * C + g * cg + c) * H + ih) * W + iw]! * conv.weight.data[((o * cg + c) * kh + i) * kw + j]!;
    }
    expected.push(s);
  }
  close(y.data, expected, 1e-5, 'conv');
});

test('BatchNorm2d training: per-channel mean≈0 / var≈1 and running stats as PyTorch', () => {
  manualSeed(5);
  const bn = new BatchNorm2d(3);
  const x = randn([4, 3, 2, 3], { mean: 2, std: 3 });
  const y = bn.forward(x);
  const count = 4 * 2 * 3;
  for (let c = 0; c < 3; c++) {
    const xs: number[] = [];
    const ys: number[] = [];
    for (let n = 0; n < 4; n++) for (let i = 0; i < 6; i++) {
      xs.push(x.data[(n * 3 + c) * 6 + i]!);
      ys.push(y.data[(n * 3 + c) * 6 + i]!);
    }
    const mean = (a: number[]): number => a.reduce((s, v) => s + v, 0) / a.length;
    const ym = mean(ys);
    const yv = mean(ys.map((v) => (v - ym) ** 2));
    assert.ok(Math.abs(ym) < 1e-5, `channel ${c} mean ${ym}`);
    const xm = mean(xs);
    const xvBiased = mean(xs.map((v) => (v - xm) ** 2));
    assert.ok(Math.abs(yv - xvBiased / (xvBiased + 1e-5)) < 1e-4, `channel ${c} var ${yv}`);
    // running = 0.9·init + 0.1·batch, with the unbiased variance
    close([bn.runningMean!.data[c]!], [0.1 * xm], 1e-5, 'runningMean');
    close([bn.runningVar!.data[c]!], [0.9 + 0.1 * xvBiased * count / (count - 1)], 1e-5, 'runningVar');
  }
  assert.equal(bn.numBatchesTracked!.item(), 1);
});

test('BatchNorm2d training forward and gradients against float64 closed forms, reference and native backends', () => {
  const [n, c, s] = [5, 3, 12];
  for (const backend of availableBackends().filter((b) => b === 'reference' || b === 'native')) {
    withBackend(backend, () => {
      manualSeed(9);
      const bn = new BatchNorm2d(c);
      bn.weight!.data.set([0.5, 1.5, -2]);
      bn.bias!.data.set([0.1, -0.3, 2]);
      const x = randn([n, c, 4, 3], { mean: 3, std: 2 }).requiresGrad_();
      const R = randn([n, c, 4, 3]);
      const y = bn.forward(x);
      y.mul(R).sum().backward();
      for (let ch = 0; ch < c; ch++) {
        const at = (i: number, j: number): number => (i * c + ch) * s + j;
        let mean = 0;
        for (let i = 0; i < n; i++) for (let j = 0; j < s; j++) mean += x.data[at(i, j)]!;
        mean /= n * s;
        let variance = 0;
        for (let i = 0; i < n; i++) for (let j = 0; j < s; j++) variance += (x.data[at(i, j)]! - mean) ** 2;
        variance /= n * s;
        const rstd = 1 / Math.sqrt(variance + 1e-5);
        const w = bn.weight!.data[ch]!;
        let sumR = 0;
        let sumRX = 0;
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < s; j++) {
            sumR += R.data[at(i, j)]!;
            sumRX += R.data[at(i, j)]! * (x.data[at(i, j)]! - mean) * rstd;
          }
        }
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < s; j++) {
            const xhat = (x.data[at(i, j)]! - mean) * rstd;
            close([y.data[at(i, j)]!], [xhat * w + bn.bias!.data[ch]!], 1e-5, `${backend} y`);
            close([x.grad!.data[at(i, j)]!], [w * rstd * (R.data[at(i, j)]! - sumR / (n * s) - (xhat * sumRX) / (n * s))], 1e-5, `${backend} dx`);
          }
        }
        close([bn.weight!.grad!.data[ch]!], [sumRX], 1e-5, `${backend} dweight`);
        close([bn.bias!.grad!.data[ch]!], [sumR], 1e-5, `${backend} dbias`);
        close([bn.runningMean!.data[ch]!], [0.1 * mean], 1e-6, `${backend} runningMean`);
        close([bn.runningVar!.data[ch]!], [0.9 + (0.1 * variance * n * s) / (n * s - 1)], 1e-6, `${backend} runningVar`);
      }
    });
  }
});

test('BatchNorm2d eval uses running stats; affine params get gradients', () => {
  const bn = new BatchNorm2d(2);
  bn.runningMean!.data.set([1, -2]);
  bn.runningVar!.data.set([4, 0.25]);
  bn.weight!.data.set([2, 3]);
  bn.bias!.data.set([0.5, -1]);
  bn.eval();
  const x = tensor([[[[3]], [[-1]]]]);
  const y = bn.forward(x);
  close(y.data, [2 * (3 - 1) / Math.sqrt(4 + 1e-5) + 0.5, 3 * (-1 + 2) / Math.sqrt(0.25 + 1e-5) - 1]);
  y.sum().backward();
  close(bn.weight!.grad!.data, [(3 - 1) / Math.sqrt(4 + 1e-5), 1 / Math.sqrt(0.25 + 1e-5)]);
  close(bn.bias!.grad!.data, [1, 1]);
});

test('BatchNorm1d on [N, C] and [N, C, L]; cumulative average with momentum null; errors', () => {
  const bn = new BatchNorm1d(2, { momentum: null });
  bn.forward(tensor([[1, 10], [3, 30]]));
  bn.forward(tensor([[5, 0], [7, 0]]));
  // cumulative average of batch means (2, 20) and (6, 0)
  close(bn.runningMean!.data, [4, 10]);
  // unbiased variances: (2, 200) and (2, 0); cumulative average
  close(bn.runningVar!.data, [2, 100]);
  const y = new BatchNorm1d(3, { affine: false }).forward(randn([2, 3, 5]));
  assert.deepEqual(y.shape, [2, 3, 5]);
  assert.throws(() => bn.forward(tensor([[1, 2]])), /more than 1 value per channel/);
  assert.throws(() => bn.forward(randn([2, 3])), /expected input \[N, 2\]/);
});

test('activations against closed forms', () => {
  const xs = [-3, -0.5, 0, 0.7, 8];
  const x = tensor(xs);
  close(new ReLU().forward(x).data, xs.map((v) => Math.max(v, 0)));
  close(new ReLU6().forward(x).data, xs.map((v) => Math.min(Math.max(v, 0), 6)));
  close(new LeakyReLU(0.2).forward(x).data, xs.map((v) => (v > 0 ? v : 0.2 * v)));
  close(new Sigmoid().forward(x).data, xs.map((v) => 1 / (1 + Math.exp(-v))));
  close(new Tanh().forward(x).data, xs.map(Math.tanh));
  // GELU: x·Φ(x); Φ(−3) = 0.0013499, Φ(−0.5) = 0.3085375, Φ(0.7) = 0.7580363, Φ(8) ≈ 1
  close(new GELU().forward(x).data, [-3 * 0.0013499, -0.5 * 0.3085375, 0, 0.7 * 0.7580363, 8], 1e-4);
  const tanhApprox = xs.map((v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))));
  close(new GELU({ approximate: 'tanh' }).forward(x).data, tanhApprox);
});

test('pooling and flatten', () => {
  const x = new Tensor(Float32Array.from({ length: 16 }, (_, i) => i), [1, 1, 4, 4]);
  close(new MaxPool2d(2).forward(x).data, [5, 7, 13, 15]);
  close(new AvgPool2d(2).forward(x).data, [2.5, 4.5, 10.5, 12.5]);
  close(new MaxPool2d(3, { stride: 1 }).forward(x).data, [10, 11, 14, 15]);
  close(new AdaptiveAvgPool2d(1).forward(x).data, [7.5]);
  close(new AdaptiveAvgPool2d(2).forward(x).data, [2.5, 4.5, 10.5, 12.5]);
  assert.deepEqual(new Flatten().forward(randn([2, 3, 4, 5])).shape, [2, 60]);
  assert.deepEqual(new Flatten(1, 2).forward(randn([2, 3, 4, 5])).shape, [2, 12, 5]);
  assert.deepEqual(new Flatten(0).forward(randn([2, 3])).shape, [6]);
});

test('Dropout: inverted scaling, drop rate ≈ p, seeded, identity in eval', () => {
  const x = randn([10000], { mean: 0, std: 0 }).add(1);
  const drop = new Dropout(0.3, { rng: new Rng(11) });
  const y = drop.forward(x).toArray();
  const zeros = y.filter((v) => v === 0).length;
  assert.ok(Math.abs(zeros / 10000 - 0.3) < 0.02, `drop rate ${zeros / 10000}`);
  assert.ok(y.filter((v) => v !== 0).every((v) => Math.abs(v - 1 / 0.7) < 1e-6));
  assert.deepEqual(new Dropout(0.3, { rng: new Rng(11) }).forward(x).toArray(), y);
  drop.eval();
  assert.equal(drop.forward(x), x);
  assert.ok(new Dropout(1).forward(x).toArray().every((v) => v === 0));
  assert.throws(() => new Dropout(1.5), /\[0, 1\]/);
});

test('Embedding paddingIdx: the row is zeroed at init and gets no gradient, but forward uses it as is (torch 1.13 values)', () => {
  // torch.nn.Embedding(4, 2, padding_idx=1) with weight arange(1, 9).view(4, 2), indices [[1, 2], [1, 0]],
  // loss sum(y * arange(1, 9).view(2, 2, 2)).
  const emb = new Embedding(4, 2, { paddingIdx: 1 });
  assert.deepEqual(Array.from(emb.weight.data.subarray(2, 4)), [0, 0]);
  emb.weight.data.set([1, 2, 3, 4, 5, 6, 7, 8]);
  const y = emb.forward(new Tensor(Int32Array.from([1, 2, 1, 0]), [2, 2]));
  assert.deepEqual(y.toArray(), [3, 4, 5, 6, 3, 4, 1, 2]);
  y.mul(tensor([1, 2, 3, 4, 5, 6, 7, 8]).reshape([2, 2, 2])).sum().backward();
  assert.deepEqual(emb.weight.grad!.toArray(), [7, 8, 0, 0, 3, 4, 0, 0]);
});

test('Embedding gathers rows; padding row stays zero and gets no gradient', () => {
  const emb = new Embedding(5, 3, { paddingIdx: 0, rng: new Rng(2) });
  assert.deepEqual(Array.from(emb.weight.data.subarray(0, 3)), [0, 0, 0]);
  const idx = new Tensor(Int32Array.from([2, 0, 4, 2]), [2, 2]);
  const y = emb.forward(idx);
  assert.deepEqual(y.shape, [2, 2, 3]);
  const w = emb.weight.data;
  close(y.data, [...w.subarray(6, 9), 0, 0, 0, ...w.subarray(12, 15), ...w.subarray(6, 9)]);
  emb.weight.data.fill(1, 0, 3);
  y.sum().backward();
  close(emb.weight.grad!.data, [0, 0, 0, 0, 0, 0, 2, 2, 2, 0, 0, 0, 1, 1, 1]);
  assert.throws(() => emb.forward(tensor([1])), /int32/);
});

test('LayerNorm normalises the trailing dims per sample, then scales and shifts', () => {
  const ln = new LayerNorm([2, 2]);
  ln.weight!.data.set([1, 2, 3, 4]);
  ln.bias!.data.set([0, 0, 1, 1]);
  const x = tensor([[[1, 2], [3, 4]], [[2, 2], [2, 6]]]);
  const y = ln.forward(x);
  const expected: number[] = [];
  for (const sample of [[1, 2, 3, 4], [2, 2, 2, 6]]) {
    const m = sample.reduce((a, b) => a + b) / 4;
    const v = sample.reduce((a, b) => a + (b - m) ** 2, 0) / 4;
    sample.forEach((s, i) => expected.push(((s - m) / Math.sqrt(v + 1e-5)) * [1, 2, 3, 4][i]! + [0, 0, 1, 1][i]!));
  }
  close(y.data, expected);
  const plain = new LayerNorm(4, { elementwiseAffine: false });
  assert.equal(plain.parameters().length, 0);
  const z = plain.forward(randn([3, 4])).toArray();
  for (let r = 0; r < 3; r++) assert.ok(Math.abs(z.slice(r * 4, r * 4 + 4).reduce((a, b) => a + b)) < 1e-5);
  assert.throws(() => ln.forward(randn([2, 3])), /does not end with/);
});

test('Conv2d and pooling layers validate their geometry when built, with the op layer\'s checks', () => {
  assert.throws(() => new Conv2d(1, 1, 3, { padding: -1 }), /^Error: Conv2d: padding must be non-negative integers, got -1x-1$/);
  assert.throws(() => new Conv2d(1, 1, 3, { stride: 1.5 }), /Conv2d: stride must be positive integers, got 1.5x1.5/);
  assert.throws(() => new Conv2d(1, 1, 3, { stride: 0 }), /Conv2d: stride must be positive integers/);
  assert.throws(() => new Conv2d(1, 1, 3, { dilation: 0 }), /Conv2d: dilation must be positive integers/);
  assert.throws(() => new Conv2d(2, 2, 3, { groups: 0 }), /Conv2d: groups must be a positive integer, got 0/);
  assert.throws(() => new Conv2d(1, 1, 0), /Conv2d: kernelSize must be positive integers, got 0x0/);
  assert.throws(() => new Conv2d(0, 1, 3), /Conv2d: inChannels must be a positive integer, got 0/);
  assert.throws(() => new MaxPool2d(0), /^Error: MaxPool2d: kernel must be positive integers, got 0x0$/);
  assert.throws(() => new MaxPool2d(2, { stride: 0 }), /MaxPool2d: stride must be positive integers/);
  assert.throws(() => new AvgPool2d(2, { padding: -1 }), /AvgPool2d: padding must be non-negative integers/);
  assert.throws(() => new AvgPool2d(2, { padding: 2 }), /AvgPool2d: padding must be at most half the kernel/);
  const pool = new MaxPool2d(3, { stride: 2, padding: 1 });
  assert.deepEqual([pool.kernelSize, pool.stride, pool.padding], [[3, 3], [2, 2], [1, 1]]);
  const conv = new Conv2d(2, 4, [3, 1], { stride: [2, 1], padding: 1, groups: 2 });
  assert.deepEqual([conv.stride, conv.padding, conv.dilation, conv.groups], [[2, 1], [1, 1], [1, 1], 2]);
});
