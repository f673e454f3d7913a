import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { availableBackends, profileOps, withBackend, type BackendName } from '../backend/index.ts';
import { hasKernel } from '../backend/registry.ts';
import { noGrad } from '../autograd/engine.ts';
import { Conv2d } from '../nn/conv.ts';
import { Linear } from '../nn/linear.ts';
import { LSTM } from '../nn/rnn.ts';
import { MultiheadAttention } from '../nn/attention.ts';
import { lenet5 } from '../nn/models/lenet5.ts';
import {
  add, castFloat, conv2d, crossEntropy, manualSeed, matmul, mul, randn, reshape, Rng, sum, Tensor, tensor,
} from '../tensor/index.ts';
import { autocast, autocastDtype } from './autocast.ts';
import { autocastFormat, withAutocast } from './context.ts';
import { roundArrayToFormat, roundToFormat, type FloatFormat } from './formats.ts';

const FORMATS: readonly FloatFormat[] = ['fp16', 'bf16'];

/** Values spread over many binades (both formats' subnormal and overflow ranges included). */
function wideValues(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.uniform() - 0.5) * 2 ** (rng.int(80) - 40);
  out[0] = 70000;
  out[1] = -3e-8;
  return out;
}

function assertSameValues(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) assert.ok(Object.is(actual[i], expected[i]), `${what}[${i}]: ${actual[i]} != ${expected[i]}`);
}

function isRepresentable(data: ArrayLike<number>, format: FloatFormat): boolean {
  for (let i = 0; i < data.length; i++) if (!Object.is(roundToFormat(data[i]!, format), data[i])) return false;
  return true;
}

describe('castFloat primitive', () => {
  for (const backend of availableBackends() as BackendName[]) {
    // A backend without a castFloat kernel (wasm) runs the reference one.
    const runs = hasKernel(backend, 'castFloat') ? backend : 'reference';
    it(`${backend}: forward rounds each float32 element to the format on ${runs === backend ? "that backend's own kernel" : 'the reference kernel'}`, () => {
      withBackend(backend, () => {
        const src = wideValues(1000, 1);
        for (const format of FORMATS) {
          let y: Tensor | null = null;
          const profile = profileOps(() => (y = castFloat(new Tensor(src.slice(), [10, 100]), format)));
          assert.deepEqual(y!.shape, [10, 100]);
          assert.equal(y!.dtype, 'float32');
          assertSameValues(y!.data, Array.from(src, (v) => roundToFormat(v, format)), format);
          assert.ok(profile.has(`${runs}/castFloat`), `ran on ${[...profile.keys()].join(', ')}`);
        }
      });
    });
  }

  it('float64 input is taken as float32 first; int32 input is refused', () => {
    const x = new Tensor(Float64Array.from([1 + 2 ** -11 + 2 ** -40, 1 / 3, 1e-9]), [3]);
    const y = castFloat(x, 'fp16');
    assert.equal(y.dtype, 'float64');
    assertSameValues(y.data, [roundToFormat(Math.fround(1 + 2 ** -11 + 2 ** -40), 'fp16'), roundToFormat(1 / 3, 'fp16'), 0], 'float64');
    assert.equal(y.data[0], 1);  // fround gives the tie 1 + 2^-11, which rounds to even
    assert.throws(() => castFloat(new Tensor(Int32Array.from([1]), [1]), 'fp16'), /float tensor/);
    assert.throws(() => castFloat(tensor([1]), 'fp8' as FloatFormat), /'fp16' or 'bf16'/);
  });

  it('gradient: the incoming gradient rounded to the same format (fp16 flushes tiny gradients, bf16 keeps them)', () => {
    const c = wideValues(64, 2);
    c[2] = 1e-8;  // below fp16's smallest subnormal / 2: 0 in fp16, kept (rounded) in bf16
    for (const format of FORMATS) {
      const x = new Tensor(wideValues(64, 3), [64]).requiresGrad_();
      sum(mul(castFloat(x, format), new Tensor(c.slice(), [64]))).backward();
      assertSameValues(x.grad!.data, roundArrayToFormat(c, format), `${format} grad`);
      assert.equal(x.grad!.data[2] === 0, format === 'fp16');
    }
  });
});

describe('autocast', () => {
  it('Linear: input, weight and bias rounded, float32 product, output rounded; restore() gives the float32 model back', () => {
    manualSeed(3);
    const layer = new Linear(37, 11);
    const x = randn([5, 37]);
    const fp32 = layer.forward(x);
    const weightBefore = layer.weight.data.slice();
    for (const format of FORMATS) {
      const handle = autocast(layer, { dtype: format });
      assert.equal(autocastDtype(layer), format);
      const y = layer.forward(x);
      const c = (t: Tensor): Tensor => new Tensor(roundArrayToFormat(t.data as Float32Array, format), t.shape);
      const want = roundArrayToFormat(add(matmul(c(x), c(layer.weight), { transB: true }), c(layer.bias!)).data as Float32Array, format);
      assertSameValues(y.data, want, `${format} output`);
      assert.ok(isRepresentable(y.data, format));
      assert.ok(!isRepresentable(fp32.data, format), 'the float32 output is not already in the format');
      assert.throws(() => autocast(layer, { dtype: format }), /already runs under autocast/);
      handle.restore();
      handle.restore();
      assert.equal(autocastDtype(layer), null);
      assertSameValues(layer.forward(x).data, fp32.data, `${format} restored`);
    }
    assertSameValues(layer.weight.data, weightBefore, 'master weights untouched');
    assert.throws(() => autocast(layer, { dtype: 'fp8' as FloatFormat }), /'fp16' or 'bf16'/);
  });

  it('Linear backward: dW = round(round(g)ᵀ · round(x)), float32 master gradient', () => {
    manualSeed(4);
    const layer = new Linear(9, 6);
    const x = randn([4, 9]);
    const g = randn([4, 6]);
    const handle = autocast(layer, { dtype: 'fp16' });
    sum(mul(layer.forward(x), g)).backward();
    handle.restore();
    const r = (t: Tensor): Tensor => new Tensor(roundArrayToFormat(t.data as Float32Array, 'fp16'), t.shape);
    const want = roundArrayToFormat(matmul(r(g), r(x), { transA: true }).data as Float32Array, 'fp16');
    assertSameValues(layer.weight.grad!.data, want, 'dW');
    assert.equal(layer.weight.grad!.dtype, 'float32');
  });

  it('Conv2d under autocast, and LeNet-5: fused inference equals the unfused training path; losses stay float32', () => {
    manualSeed(5);
    const conv = new Conv2d(3, 4, 3, { padding: 1 });
    const x = randn([2, 3, 6, 6]);
    const handle = autocast(conv, { dtype: 'bf16' });
    const y = conv.forward(x);
    handle.restore();
    const r = (t: Tensor): Tensor => new Tensor(roundArrayToFormat(t.data as Float32Array, 'bf16'), t.shape);
    const want = roundArrayToFormat(conv2d(r(x), r(conv.weight), r(conv.bias!), { padding: 1 }).data as Float32Array, 'bf16');
    assertSameValues(y.data, want, 'conv');

    manualSeed(6);
    const model = lenet5();
    const images = randn([3, 1, 28, 28]);
    const labels = new Tensor(Int32Array.from([1, 4, 7]), [3]);
    const h = autocast(model, { dtype: 'fp16' });
    const trainingPath = model.forward(images);  // conv, then ReLU-fused max pooling (gradients on)
    const inferencePath = noGrad(() => model.forward(images));  // one conv2dFused op per block
    assertSameValues(inferencePath.data, trainingPath.data, 'fused vs unfused');
    assert.ok(isRepresentable(trainingPath.data, 'fp16'));
    const loss = crossEntropy(trainingPath, labels);
    h.restore();
    const lossOutside = crossEntropy(trainingPath.detach(), labels);
    assert.ok(Object.is(loss.item(), lossOutside.item()), 'the loss is computed in float32, not rounded');
    assert.ok(!isRepresentable(loss.data, 'fp16'));
  });

  it('LSTM and MultiheadAttention (matmuls inside the layer) run under autocast: their outputs move by fp16 rounding only', () => {
    manualSeed(7);
    const lstm = new LSTM(5, 8);
    const attention = new MultiheadAttention(8, 2);
    const x = randn([4, 3, 5]);  // [L, N, features]
    const run = (): { out: Tensor; grads: Tensor[] } => {
      for (const p of [...lstm.parameters(), ...attention.parameters()]) p.grad = null;
      const [h] = lstm.forward(x);
      const [out] = attention.forward(h, h, h);
      sum(mul(out, out)).backward();
      return { out, grads: [...lstm.parameters(), ...attention.parameters()].map((p) => p.grad!) };
    };
    const fp32 = run();
    const handles = [autocast(lstm, { dtype: 'fp16' }), autocast(attention, { dtype: 'fp16' })];
    const fp16 = run();
    handles.forEach((h) => h.restore());
    let maxDiff = 0;
    fp32.out.data.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - fp16.out.data[i]!))));
    assert.ok(maxDiff > 0 && maxDiff < 1e-2, `max |fp16 - fp32| = ${maxDiff}`);
    // The attention output is an output projection (a linear op): fp16 values.
    assert.ok(isRepresentable(fp16.out.data, 'fp16'));
    fp16.grads.forEach((g, i) => g.data.forEach((v, j) => assert.ok(Math.abs(v - fp32.grads[i]!.data[j]!) <= 0.02 * (1 + Math.abs(fp32.grads[i]!.data[j]!)), `grad ${i}[${j}]`)));
  });

  it('the scope: withAutocast nests and restores on throw; ops outside matmul/conv are not rounded', () => {
    assert.equal(autocastFormat(), null);
    const a = tensor([[1 / 3, 2 / 3]]);
    withAutocast('bf16', () => {
      assert.equal(autocastFormat(), 'bf16');
      assert.ok(!isRepresentable(mul(a, 1).data, 'bf16'));
      assert.ok(isRepresentable(matmul(a, reshape(a, [2, 1])).data, 'bf16'));
      assert.throws(() => withAutocast('fp16', () => {
        assert.equal(autocastFormat(), 'fp16');
        throw new Error('boom');
      }), /boom/);
      assert.equal(autocastFormat(), 'bf16');
    });
    assert.equal(autocastFormat(), null);
    // float64 operands are left alone (autocast casts float32 only).
    const d = new Tensor(Float64Array.from([1 / 3, 1 / 7]), [1, 2]);
    const out = withAutocast('fp16', () => matmul(d, reshape(d, [2, 1])));
    assert.equal(out.data[0], 1 / 9 + 1 / 49);
  });
});
