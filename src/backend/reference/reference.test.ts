/** Forward values of the reference kernels against closed forms and naive loops. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../index.ts';
import { getBackend, setBackend, withBackend } from '../registry.ts';
import { Tensor, tensor } from '../../tensor/tensor.ts';
import * as o from '../../tensor/ops.ts';
import { randn } from '../../tensor/creation.ts';
import { Rng } from '../../tensor/random.ts';
import { erf, roundHalfEven } from './elementwise.ts';

setBackend('reference');
const rng = new Rng(3);
const f64 = (shape: number[]): Tensor => randn(shape, { rng, dtype: 'float64' });

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-12): void {
  assert.equal(actual.length, expected.length, 'length');
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol * Math.max(1, Math.abs(expected[i]!)), `at ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

/** Direct 7-loop convolution: y[n,o,i,j] = Σ_c,ky,kx x[n, g·cg + c, i·s - p + ky·d, j·s - p + kx·d] · w[o,c,ky,kx]. */
function naiveConv(x: Tensor, w: Tensor, s: number[], p: number[], d: number[], groups: number): number[] {
  const [n, c, h, wd] = x.shape as number[];
  const [oc, cg, kh, kw] = w.shape as number[];
  const oh = Math.floor((h! + 2 * p[0]! - d[0]! * (kh! - 1) - 1) / s[0]!) + 1;
  const ow = Math.floor((wd! + 2 * p[1]! - d[1]! * (kw! - 1) - 1) / s[1]!) + 1;
  const og = oc! / groups;
  const out: number[] = [];
  for (let b = 0; b < n!; b++) for (let q = 0; q < oc!; q++) for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) {
    let acc = 0;
    const g = Math.floor(q / og);
    for (let ci = 0; ci < cg!; ci++) for (let ky = 0; ky < kh!; ky++) for (let kx = 0; kx < kw!; kx++) {
      const iy = i * s[0]! - p[0]! + ky * d[0]!;
      const ix = j * s[1]! - p[1]! + kx * d[1]!;
      if (iy < 0 || iy >= h! || ix < 0 || ix >= wd!) continue;
      acc += x.data[((b * c! + g * cg! + ci) * h! + iy) * wd! + ix]! * w.data[((q * cg! + ci) * kh! + ky) * kw! + kx]!;
    }
    out.push(acc);
  }
  return out;
}

describe('withBackend', () => {
  it('selects the backend for the call and restores the previous one, also when fn throws', () => {
    const before = getBackend();
    assert.equal(withBackend('reference', () => getBackend()), 'reference');
    assert.equal(getBackend(), before);
    assert.throws(() => withBackend('reference', () => { throw new Error('inside'); }), /inside/);
    assert.equal(getBackend(), before);
    assert.throws(() => withBackend('nope' as 'reference', () => 1), /not available/);
    assert.equal(getBackend(), before);
  });
});

describe('reference kernels: forward values', () => {
  it('roundHalfEven and erf', () => {
    assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, -2.6].map((v) => roundHalfEven(v) + 0), [0, 2, 2, 0, -2, -2, 2, -3]);
    close([erf(0), erf(0.5), erf(1), erf(-2), erf(3), erf(5)], [0, 0.5204998778130465, 0.8427007929497149, -0.9953222650189527, 0.9999779095030014, 0.9999999999984626], 1e-14);
  });
  it('unary ops and comparisons', () => {
    const x = tensor([-2, -0.5, 0, 0.5, 3], undefined, 'float64');
    close(o.relu(x).data, [0, 0, 0, 0.5, 3]);
    close(o.sign(x).data, [-1, -1, 0, 1, 1]);
    close(o.floor(x).data, [-2, -1, 0, 0, 3]);
    close(o.sigmoid(x).data, x.toArray().map((v) => 1 / (1 + Math.exp(-v))));
    close(o.greater(x, 0).data, [0, 0, 0, 1, 1]);
    close(o.greaterEqual(x, 0).data, [0, 0, 1, 1, 1]);
    close(o.equal(x, 0.5).data, [0, 0, 0, 1, 0]);
    close(o.where(o.greater(x, 0), x, -1).data, [-1, -1, -1, 0.5, 3]);
  });
  it('non-differentiable ops do not require grad', () => {
    const x = f64([4]).requiresGrad_();
    for (const y of [o.sign(x), o.round(x), o.floor(x), o.greater(x, 0), o.argmax(x)]) assert.equal(y.requiresGrad, false);
    assert.equal(o.relu(x).requiresGrad, true);
  });
  it('broadcasting binary ops match an explicit expansion', () => {
    const a = f64([3, 1, 5]);
    const b = f64([4, 1]);
    const y = o.sub(a, b);
    assert.deepEqual(y.shape, [3, 4, 5]);
    const expected: number[] = [];
    for (let i = 0; i < 3; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 5; k++) expected.push(a.data[i * 5 + k]! - b.data[j]!);
    close(y.data, expected);
    assert.throws(() => o.add(f64([2, 3]), f64([4])), /do not broadcast/);
  });
  it('reductions, argmax, softmax', () => {
    const x = tensor([[1, 5, 3], [7, 2, 7]], undefined, 'float64');
    close(o.sum(x, 0).data, [8, 7, 10]);
    close(o.sum(x, 1, true).data, [9, 16]);
    assert.deepEqual(o.sum(x, 1, true).shape, [2, 1]);
    close(o.max(x, 1).data, [5, 7]);
    close(o.mean(x).data, [25 / 6]);
    assert.deepEqual(o.argmax(x, 1).toArray(), [1, 0]);
    const s = o.softmax(x, 1);
    close(o.sum(s, 1).data, [1, 1]);
    close(o.logSoftmax(x, 1).data, s.toArray().map(Math.log));
  });
  it('matmul in all transpose cases and batched broadcast equals naive products', () => {
    const a = f64([2, 3, 4]);
    const b = f64([4, 5]);
    const y = o.matmul(a, b);
    const expected: number[] = [];
    for (let n = 0; n < 2; n++) for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a.data[n * 12 + i * 4 + k]! * b.data[k * 5 + j]!;
      expected.push(s);
    }
    close(y.data, expected);
    const at = o.transpose(a, [0, 2, 1]);
    const bt = o.transpose(b);
    close(o.matmul(at, b, { transA: true }).data, expected);
    close(o.matmul(a, bt, { transB: true }).data, expected);
    close(o.matmul(at, bt, { transA: true, transB: true }).data, expected);
    assert.throws(() => o.matmul(f64([3, 4]), f64([5, 2])), /inner dimensions/);
  });
  it('conv2d equals a direct convolution (stride, padding, dilation, groups)', () => {
    const configs: [number[], number[], number[], number[], number[], number][] = [
      [[2, 3, 7, 6], [4, 3, 3, 3], [1, 1], [0, 0], [1, 1], 1],
      [[1, 4, 9, 8], [6, 2, 3, 2], [2, 1], [1, 2], [2, 1], 2],
      [[2, 6, 5, 5], [6, 1, 3, 3], [1, 1], [1, 1], [1, 1], 6],
    ];
    for (const [xs, ws, s, p, d, g] of configs) {
      const x = f64(xs);
      const w = f64(ws);
      const y = o.conv2d(x, w, null, { stride: [s[0]!, s[1]!], padding: [p[0]!, p[1]!], dilation: [d[0]!, d[1]!], groups: g });
      close(y.data, naiveConv(x, w, s, p, d, g));
    }
  });
  it('conv2dFused with a per-channel scale and an upper clamp equals conv·scale + bias, ReLU, min(·, max), then pooling', () => {
    const x = f64([2, 3, 6, 5]);
    const w = f64([4, 3, 3, 3]);
    const bias = tensor([0.3, -0.2, 0.1, 0], undefined, 'float64');
    const scale = tensor([2, -1.5, 0.5, 0], undefined, 'float64');
    const conv = naiveConv(x, w, [1, 1], [1, 1], [1, 1], 1);
    const plane = 6 * 5;
    const epilogue = (relu: boolean, hi: number) => conv.map((v, i) => {
      const c = Math.floor(i / plane) % 4;
      const a = v * scale.data[c]! + bias.data[c]!;
      const r = relu && a < 0 ? 0 : a;
      return Math.min(r, hi);
    });
    close(o.conv2dFused(x, w, bias, { padding: 1, scale }).data, epilogue(false, Infinity));
    close(o.conv2dFused(x, w, bias, { padding: 1, scale, relu: true, clampMax: 0.4 }).data, epilogue(true, 0.4));
    close(o.conv2dFused(x, w, bias, { padding: 1, relu: true, clampMax: 0.4 }).data, conv.map((v, i) => Math.min(Math.max(v + bias.data[Math.floor(i / plane) % 4]!, 0), 0.4)));
    // Pooling after a negative scale takes the max of the scaled values (not the scaled max).
    const act = epilogue(true, 6);
    const pooled: number[] = [];
    for (let p = 0; p < 8; p++) for (let ph = 0; ph < 3; ph++) for (let pw = 0; pw < 2; pw++) {
      const at = (h: number, ww: number) => act[p * plane + h * 5 + ww]!;
      pooled.push(Math.max(at(2 * ph, 2 * pw), at(2 * ph, 2 * pw + 1), at(2 * ph + 1, 2 * pw), at(2 * ph + 1, 2 * pw + 1)));
    }
    close(o.conv2dFused(x, w, bias, { padding: 1, scale, relu: true, clampMax: 6, pool: { kernel: 2 } }).data, pooled);
    assert.throws(() => o.conv2dFused(x, w, bias, { padding: 1, scale: tensor([1, 2], undefined, 'float64') }), /conv2dFused: scale must be \[4\], got \[2\]/);
    assert.throws(() => o.conv2dFused(x, w, bias, { clampMax: NaN }), /clampMax must be a number/);
    const wg = f64([4, 3, 3, 3]);
    wg.requiresGrad = true;
    assert.throws(() => o.conv2dFused(x, wg, bias, { clampMax: 6 }), /scale and clampMax are for inference/);
  });
  it('pooling equals window max / mean', () => {
    const x = tensor([[[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]]], undefined, 'float64');
    close(o.maxPool2d(x, 2).data, [6, 8, 14, 16]);
    close(o.avgPool2d(x, 2).data, [3.5, 5.5, 11.5, 13.5]);
    // 3x3 stride 2 pad 1: padded cells are -inf for max and count as zero for the mean.
    close(o.maxPool2d(x, 3, { stride: 2, padding: 1 }).data, [6, 8, 14, 16]);
    close(o.avgPool2d(x, 3, { stride: 2, padding: 1 }).data, [14 / 9, 30 / 9, 57 / 9, 99 / 9]);
    close(o.adaptiveAvgPool2d(x, 1).data, [8.5]);
  });
  it('shape ops: slice, pad, concat, gather, scatterAdd, transpose', () => {
    const x = tensor([[1, 2, 3], [4, 5, 6]], undefined, 'float64');
    close(o.slice(x, [0, 1], [2, 3]).data, [2, 3, 5, 6]);
    close(o.pad(x, [[0, 1], [1, 0]], 9).data, [9, 1, 2, 3, 9, 4, 5, 6, 9, 9, 9, 9]);
    close(o.concat([x, x], 0).data, [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]);
    close(o.concat([x, o.slice(x, [0, 0], [2, 1])], 1).data, [1, 2, 3, 1, 4, 5, 6, 4]);
    const i = new Tensor(Int32Array.from([2, 0, 2]), [3]);
    close(o.gather(x, i, 1).data, [3, 1, 3, 6, 4, 6]);
    close(o.scatterAdd(tensor([1, 2, 3], undefined, 'float64'), i, 0, [3]).data, [2, 0, 4]);
    close(o.transpose(x).data, [1, 4, 2, 5, 3, 6]);
    assert.throws(() => o.gather(x, new Tensor(Int32Array.from([3]), [1]), 1), /out of range/);
  });
  it('crossEntropy equals -log softmax at the label', () => {
    const logits = tensor([[2, 1, 0], [0, 0, 3]], undefined, 'float64');
    const labels = new Tensor(Int32Array.from([0, 2]), [2]);
    const lse = (r: number[]): number => Math.log(r.reduce((s, v) => s + Math.exp(v), 0));
    const expected = ((lse([2, 1, 0]) - 2) + (lse([0, 0, 3]) - 3)) / 2;
    close(o.crossEntropy(logits, labels).data, [expected]);
  });
});

describe('reference linear', () => {
  it('equals matmul (B transposed) followed by add bit for bit in float32, and the float64 sum', () => {
    setBackend('reference');
    for (const [m, n, k] of [[1, 1, 1], [3, 4, 5], [17, 9, 33], [64, 10, 84]] as const) {
      const x = randn([m, k], { rng });
      const w = randn([n, k], { rng });
      const b = randn([n], { rng });
      const fused = o.apply('linear', [x, w, b], {});
      const composed = o.add(o.matmul(x, w, { transB: true }), b);
      assert.deepEqual([...fused.data], [...composed.data], `[${m}, ${n}, ${k}]`);
      const want: number[] = [];
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += x.data[i * k + p]! * w.data[j * k + p]!;
        want.push(s + b.data[j]!);
      }
      close(fused.data, want, 1e-5);
    }
  });
});
