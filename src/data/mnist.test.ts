import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadMnist } from './mnist.ts';
import { classCounts } from './dataset.ts';
import { DATASET_NAMES, DATASET_STATS, loadDataset } from './registry.ts';
import { DataError } from './errors.ts';

function range(a: Float32Array): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of a) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

test('MNIST train: 60000 samples, first label 5, pixels in [0, 1], stats match DATASET_STATS', () => {
  const ds = loadMnist({ split: 'train' });
  assert.equal(ds.name, 'mnist-train');
  assert.equal(ds.length, 60000);
  assert.equal(ds.labels.length, 60000);
  assert.deepEqual(ds.sampleShape, [1, 28, 28]);
  assert.equal(ds.images.length, 60000 * 784);
  assert.equal(ds.labels[0], 5);
  assert.equal(ds.numClasses, 10);
  assert.deepEqual(range(ds.images), [0, 1]);
  let s = 0;
  let s2 = 0;
  for (const v of ds.images) {
    s += v;
    s2 += v * v;
  }
  const mean = s / ds.images.length;
  const std = Math.sqrt(s2 / ds.images.length - mean * mean);
  assert.ok(Math.abs(mean - (DATASET_STATS.mnist.mean as number)) < 1e-3, `mean ${mean}`);
  assert.ok(Math.abs(std - (DATASET_STATS.mnist.std as number)) < 1e-3, `std ${std}`);
  assert.equal(classCounts(ds).reduce((a, b) => a + b, 0), 60000);
});

test('MNIST test: 10000 samples, first label 7', () => {
  const ds = loadMnist({ split: 'test' });
  assert.equal(ds.length, 10000);
  assert.equal(ds.labels[0], 7);
  assert.deepEqual(range(ds.images), [0, 1]);
});

test('limit keeps a prefix; loadDataset dispatches by name', () => {
  const ds = loadMnist({ split: 'test', limit: 100 });
  const full = loadDataset('mnist', 'test');
  assert.equal(ds.length, 100);
  assert.deepEqual(ds.labels, full.labels.subarray(0, 100));
  assert.deepEqual(ds.images, full.images.subarray(0, 100 * 784));
  assert.deepEqual([...DATASET_NAMES], ['mnist', 'fashion-mnist']);
  assert.throws(() => loadMnist({ split: 'val' as 'train' }), DataError);
  assert.throws(() => loadMnist({ split: 'test', limit: -1 }), DataError);
  assert.throws(() => loadDataset('cifar' as 'mnist', 'test'), /unknown dataset 'cifar'/);
});
