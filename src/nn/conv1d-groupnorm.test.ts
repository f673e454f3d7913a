import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, randn } from '../tensor/index.ts';
import { withBackend } from '../backend/registry.ts';
import { gradcheck } from '../autograd/gradcheck.ts';
import { Conv1d } from './conv1d.ts';
import { GroupNorm } from './groupnorm.ts';
import { LayerNorm } from './layernorm.ts';
import { grad } from '../autograd/engine.ts';
import { mul, sum } from '../tensor/index.ts';
import { float64Of, torchParity } from '../../test/fixtures/torch-keras-parity.ts';

function random64(shape: number[], rng: Rng, scale = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what} length`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol * (1 + Math.abs(expected[i]!)), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

/** The direct loop of PyTorch's Conv1d definition, in float64. */
function conv1dLoop(x: Tensor, conv: Conv1d): Float64Array {
  const [n, c, length] = x.shape as [number, number, number];
  const { outChannels: o, kernelSize: k, stride, padding, dilation, groups } = conv;
  const cg = c / groups;
  const og = o / groups;
  const outLength = Math.floor((length + 2 * padding - dilation * (k - 1) - 1) / stride) + 1;
  const w = conv.weight.data;
  const out = new Float64Array(n * o * outLength);
  for (let b = 0; b < n; b++) for (let oc = 0; oc < o; oc++) for (let t = 0; t < outLength; t++) {
    let s = conv.bias ? conv.bias.data[oc]! : 0;
    const g = Math.floor(oc / og);
    for (let ic = 0; ic < cg; ic++) for (let j = 0; j < k; j++) {
      const pos = t * stride + j * dilation - padding;
      if (pos < 0 || pos >= length) continue;
      s += w[(oc * cg + ic) * k + j]! * x.data[(b * c + g * cg + ic) * length + pos]!;
    }
    out[(b * o + oc) * outLength + t] = s;
  }
  return out;
}

describe('nn.Conv1d', () => {
  const cases = [
    { name: 'plain', cin: 3, cout: 4, k: 3, options: {} },
    { name: 'stride 2, padding 2, dilation 2, groups 2', cin: 4, cout: 6, k: 3, options: { stride: 2, padding: 2, dilation: 2, groups: 2 } },
    { name: 'depthwise, no bias, kernel 1', cin: 3, cout: 3, k: 1, options: { groups: 3, bias: false } },
  ];
  for (const c of cases) {
    it(`${c.name}: forward equals the direct loop (float32 and float64)`, () => {
      const rng = new Rng(5);
      const conv32 = new Conv1d(c.cin, c.cout, c.k, { ...c.options, rng });
      const x = randn([2, c.cin, 9], { rng });
      const y = conv32.forward(x);
      assert.deepEqual(y.shape, [2, c.cout, conv32.outputLength(9)]);
      close(y.data, conv1dLoop(x, conv32), 1e-5, 'float32');
      withBackend('reference', () => {
        const conv64 = new Conv1d(c.cin, c.cout, c.k, { ...c.options, rng, dtype: 'float64' });
        const x64 = random64([2, c.cin, 9], rng);
        close(conv64.forward(x64).data, conv1dLoop(x64, conv64), 1e-12, 'float64');
      });
    });
  }

  it('gradients of input, weight and bias against float64 central differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(9);
      const conv = new Conv1d(4, 2, 3, { stride: 2, padding: 1, dilation: 2, groups: 2, rng, dtype: 'float64' });
      const x = random64([2, 4, 8], rng).requiresGrad_();
      const result = gradcheck((input) => conv.forward(input!), [x, conv.weight, conv.bias!]);
      assert.equal(result.relativeErrors.length, 3);
      assert.ok(result.maxRelativeError < 1e-7, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });

  it('PyTorch state-dict names and shapes, PyTorch init bounds, and clear errors', () => {
    const conv = new Conv1d(4, 6, 5, { groups: 2, rng: new Rng(1) });
    assert.deepEqual([...conv.stateDict()].map(([name, t]) => `${name}:${t.shape.join('x')}`), ['weight:6x2x5', 'bias:6']);
    const bound = 1 / Math.sqrt(2 * 5);
    assert.ok(conv.weight.toArray().every((v) => Math.abs(v) <= bound));
    assert.ok(Math.max(...conv.weight.toArray().map(Math.abs)) > 0.8 * bound);
    assert.ok(conv.bias!.toArray().every((v) => Math.abs(v) <= bound));
    assert.equal(conv.outputLength(10), 6);
    assert.equal(new Conv1d(1, 1, 3, { stride: 2, padding: 1, dilation: 2 }).outputLength(10), 4); // floor((10 + 2 − 4 − 1)/2) + 1
    assert.throws(() => conv.forward(randn([1, 4, 3])), /does not fit input length 3/);
    assert.throws(() => conv.forward(randn([1, 3, 10])), /expected input \[N, 4, L\]/);
    assert.throws(() => new Conv1d(3, 4, 3, { groups: 2 }), /divisible by groups 2/);
    assert.throws(() => new Conv1d(3, 4, 0), /kernelSize must be a positive integer/);
    assert.throws(() => new Conv1d(3, 4, 3, { stride: 0 }), /Conv1d: stride/);
    assert.match(conv.toString(), /Conv1d\(4, 6, kernelSize=5, groups=2\)/);
  });
});

/** GroupNorm by its definition, in float64: per (sample, group) mean and biased variance. */
function groupNormLoop(x: Tensor, groups: number, eps: number, weight: ArrayLike<number> | null, bias: ArrayLike<number> | null): Float64Array {
  const [n, c] = x.shape as [number, number];
  const spatial = x.size / (n * c);
  const per = (c / groups) * spatial;
  const out = new Float64Array(x.size);
  for (let b = 0; b < n; b++) for (let g = 0; g < groups; g++) {
    const start = (b * groups + g) * per;
    let m = 0;
    for (let i = 0; i < per; i++) m += x.data[start + i]!;
    m /= per;
    let v = 0;
    for (let i = 0; i < per; i++) v += (x.data[start + i]! - m) ** 2;
    v /= per;
    for (let i = 0; i < per; i++) {
      const channel = g * (c / groups) + Math.floor(i / spatial);
      const normalised = (x.data[start + i]! - m) / Math.sqrt(v + eps);
      out[start + i] = normalised * (weight ? weight[channel]! : 1) + (bias ? bias[channel]! : 0);
    }
  }
  return out;
}

describe('nn.GroupNorm', () => {
  it('forward equals the per-group definition on [N, C, H, W] and [N, C], float32 and float64', () => {
    const rng = new Rng(3);
    const gn = new GroupNorm(2, 6, { eps: 1e-3 });
    for (let i = 0; i < 6; i++) {
      gn.weight!.data[i] = rng.uniform() + 0.5;
      gn.bias!.data[i] = rng.uniform() - 0.5;
    }
    for (const shape of [[3, 6, 2, 3], [4, 6]]) {
      const x = randn(shape, { rng, mean: 2, std: 3 });
      close(gn.forward(x).data, groupNormLoop(x, 2, 1e-3, gn.weight!.data, gn.bias!.data), 1e-5, `[${shape.join(', ')}]`);
    }
    withBackend('reference', () => {
      const gn64 = new GroupNorm(3, 6, { affine: false, dtype: 'float64' });
      assert.equal(gn64.parameters().length, 0);
      const x = random64([2, 6, 5], rng, 4);
      close(gn64.forward(x).data, groupNormLoop(x, 3, 1e-5, null, null), 1e-12, 'float64');
    });
  });

  it('gradients of input, weight and bias against float64 central differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(11);
      const gn = new GroupNorm(2, 4, { dtype: 'float64' });
      for (let i = 0; i < 4; i++) {
        gn.weight!.data[i] = rng.uniform() + 0.5;
        gn.bias!.data[i] = rng.uniform() - 0.5;
      }
      const x = random64([2, 4, 3], rng).requiresGrad_();
      const result = gradcheck((input) => gn.forward(input!), [x, gn.weight!, gn.bias!]);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });

  it('groups = channels is InstanceNorm: every (sample, channel) plane has mean 0, variance 1/(1 + eps/var)', () => {
    withBackend('reference', () => {
      const rng = new Rng(2);
      const x = random64([2, 3, 4, 4], rng, 5);
      const y = new GroupNorm(3, 3, { dtype: 'float64', eps: 0 }).forward(x);
      for (let plane = 0; plane < 6; plane++) {
        const values = Array.from(y.data.subarray(plane * 16, plane * 16 + 16));
        const m = values.reduce((a, b) => a + b, 0) / 16;
        const v = values.reduce((a, b) => a + (b - m) ** 2, 0) / 16;
        assert.ok(Math.abs(m) < 1e-12 && Math.abs(v - 1) < 1e-12, `plane ${plane}: mean ${m}, variance ${v}`);
      }
    });
  });

  it('one group is LayerNorm over (C, H, W) (default affine: ones and zeros)', () => {
    withBackend('reference', () => {
      const rng = new Rng(8);
      const x = random64([3, 4, 2, 5], rng, 2);
      const gn = new GroupNorm(1, 4, { dtype: 'float64' }).forward(x);
      const ln = new LayerNorm([4, 2, 5], { elementwiseAffine: false }).forward(x);
      close(gn.data, ln.data, 1e-12, 'GroupNorm(1) vs LayerNorm');
    });
  });

  it('refuses bad arguments and inputs; state dict names as PyTorch (weight, bias [C])', () => {
    assert.throws(() => new GroupNorm(4, 6), /numChannels 6 must be divisible by numGroups 4/);
    assert.throws(() => new GroupNorm(0, 6), /numGroups must be a positive integer/);
    assert.throws(() => new GroupNorm(2, 6).forward(randn([2, 4, 3])), /expected input \[N, 6, \*\]/);
    assert.deepEqual(new GroupNorm(2, 6).forward(randn([0, 6, 3])).shape, [0, 6, 3], 'an empty batch stays empty');
    assert.deepEqual([...new GroupNorm(2, 6).stateDict()].map(([name, t]) => `${name}:${t.shape.join('x')}`), ['weight:6', 'bias:6']);
  });
});

describe('Conv1d and GroupNorm against torch 1.13 (fixture): PyTorch state dicts load as they are', () => {
  for (const c of torchParity().modules) {
    it(c.name, () => {
      withBackend('reference', () => {
        const k = c.config;
        const layer = c.name.startsWith('conv1d')
          ? new Conv1d(k.inChannels as number, k.outChannels as number, k.kernelSize as number, { stride: k.stride as number, padding: k.padding as number, dilation: k.dilation as number, groups: k.groups as number, bias: k.bias as boolean, dtype: 'float64' })
          : new GroupNorm(k.numGroups as number, k.numChannels as number, { eps: k.eps as number, affine: k.affine as boolean, dtype: 'float64' });
        const state = new Map(c.state.map(([name, t]) => [name, float64Of(t)]));
        assert.deepEqual([...layer.stateDict().keys()], [...state.keys()]);
        layer.loadStateDict(state);
        const x = float64Of(c.x).requiresGrad_();
        const y = layer.forward(x);
        assert.deepEqual(y.shape, c.y.shape);
        close(y.data, c.y.data, 1e-12, 'output');
        const params = layer.namedParameters();
        const grads = grad(sum(mul(y, float64Of(c.probe))), [x, ...params.map(([, p]) => p)]);
        close(grads[0]!.data, c.grads.x!.data, 1e-12, 'dx');
        params.forEach(([name], i) => close(grads[i + 1]!.data, c.grads[name]!.data, 1e-12, `d${name}`));
      });
    });
  }
});
