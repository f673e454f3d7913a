import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, zeros as zerosTensor } from '../tensor/index.ts';
import * as init from './init.ts';

function stats(values: ArrayLike<number>): { mean: number; std: number; maxAbs: number } {
  let s = 0;
  let maxAbs = 0;
  for (let i = 0; i < values.length; i++) {
    s += values[i]!;
    maxAbs = Math.max(maxAbs, Math.abs(values[i]!));
  }
  const mean = s / values.length;
  let v = 0;
  for (let i = 0; i < values.length; i++) v += (values[i]! - mean) ** 2;
  return { mean, std: Math.sqrt(v / values.length), maxAbs };
}

test('fans and gains', () => {
  assert.deepEqual(init.fans([64, 32, 3, 3]), { fanIn: 288, fanOut: 576 });
  assert.deepEqual(init.fans([10, 20]), { fanIn: 20, fanOut: 10 });
  assert.throws(() => init.fans([5]), /rank >= 2/);
  assert.equal(init.calculateGain('relu'), Math.SQRT2);
  assert.equal(init.calculateGain('linear'), 1);
  assert.equal(init.calculateGain('tanh'), 5 / 3);
  assert.ok(Math.abs(init.calculateGain('leakyRelu', Math.sqrt(5)) - Math.sqrt(1 / 3)) < 1e-12);
});

test('kaiming and xavier: bounds and standard deviations', () => {
  const rng = new Rng(0);
  const t = zerosTensor([256, 128]);
  // relu, fanIn: std = √2/√128, bound = √3·std
  init.kaimingUniform(t, { nonlinearity: 'relu', rng });
  const bound = Math.sqrt(3) * Math.SQRT2 / Math.sqrt(128);
  let s = stats(t.data);
  assert.ok(s.maxAbs <= bound && s.maxAbs > 0.99 * bound);
  assert.ok(Math.abs(s.std - Math.SQRT2 / Math.sqrt(128)) < 0.01 * s.std);
  init.kaimingNormal(t, { mode: 'fanOut', nonlinearity: 'relu', rng });
  s = stats(t.data);
  assert.ok(Math.abs(s.std - Math.SQRT2 / Math.sqrt(256)) < 0.02 * s.std, `std ${s.std}`);
  assert.ok(Math.abs(s.mean) < 0.002);
  init.xavierUniform(t, { rng });
  s = stats(t.data);
  const xb = Math.sqrt(6 / 384);
  assert.ok(s.maxAbs <= xb && s.maxAbs > 0.99 * xb);
  init.xavierNormal(t, { gain: 2, rng });
  s = stats(t.data);
  assert.ok(Math.abs(s.std - 2 * Math.sqrt(2 / 384)) < 0.02 * s.std);
});

test('constant fills and seeded uniform / normal', () => {
  const t = zerosTensor([3, 4]);
  assert.ok(init.ones(t).toArray().every((v) => v === 1));
  assert.ok(init.constant(t, 0.5).toArray().every((v) => v === 0.5));
  assert.ok(init.zeros(t).toArray().every((v) => v === 0));
  const a = init.uniform(zerosTensor([100]), -2, 3, new Rng(9)).toArray();
  const b = init.uniform(zerosTensor([100]), -2, 3, new Rng(9)).toArray();
  assert.deepEqual(a, b);
  assert.ok(a.every((v) => v >= -2 && v < 3));
  const n = stats(init.normal(zerosTensor([20000]), 1, 0.5, new Rng(4)).data);
  assert.ok(Math.abs(n.mean - 1) < 0.02 && Math.abs(n.std - 0.5) < 0.02);
});
