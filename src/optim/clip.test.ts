import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, type Tensor } from '../tensor/index.ts';
import { clipGradNorm } from './clip.ts';

function withGrad(values: number[]): Tensor {
  const t = tensor(values);
  t.grad = tensor(values.map((v) => 2 * v));
  return t;
}

test('clipGradNorm scales every gradient by maxNorm / (norm + 1e-6) when the global 2-norm exceeds maxNorm', () => {
  const a = withGrad([1.5, 0]); // grad [3, 0]
  const b = withGrad([0, 2]); // grad [0, 4] -> global norm 5
  const c = tensor([7]); // no gradient: skipped
  const norm = clipGradNorm([a, b, c], 1);
  assert.equal(norm, 5);
  const s = 1 / (5 + 1e-6);
  assert.deepEqual([...a.grad!.data], [Math.fround(3 * s), 0]);
  assert.deepEqual([...b.grad!.data], [0, Math.fround(4 * s)]);
  assert.equal(c.grad, null);
});

test('clipGradNorm leaves gradients below maxNorm unchanged and returns their norm', () => {
  const a = withGrad([0.5, 1]); // grad [1, 2], norm sqrt 5
  const norm = clipGradNorm([a], 10);
  assert.ok(Math.abs(norm - Math.sqrt(5)) < 1e-12);
  assert.deepEqual([...a.grad!.data], [1, 2]);
});

test('clipGradNorm: p = 1 and p = Infinity norms', () => {
  const a = withGrad([-1, 2]); // grad [-2, 4]
  assert.equal(clipGradNorm([a], 100, { normType: 1 }), 6);
  assert.equal(clipGradNorm([a], 100, { normType: Infinity }), 4);
  clipGradNorm([a], 2, { normType: Infinity });
  const s = 2 / (4 + 1e-6);
  assert.deepEqual([...a.grad!.data], [Math.fround(-2 * s), Math.fround(4 * s)]);
});

test('clipGradNorm: a non-finite norm leaves the gradients alone, or throws on request; bad arguments throw', () => {
  const a = withGrad([1, 2]);
  a.grad!.data[0] = NaN;
  assert.ok(Number.isNaN(clipGradNorm([a], 1)));
  assert.ok(Number.isNaN(a.grad!.data[0]!));
  assert.equal(a.grad!.data[1], 4);
  assert.ok(Number.isNaN(clipGradNorm([a], 1, { normType: Infinity })));
  assert.throws(() => clipGradNorm([a], 1, { errorIfNonfinite: true }), /total gradient norm is NaN/);
  assert.throws(() => clipGradNorm([a], -1), /maxNorm must be/);
  assert.throws(() => clipGradNorm([a], 1, { normType: 0.5 }), /normType must be/);
});
