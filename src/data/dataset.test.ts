import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classCounts, createDataset, normalize, parseNormalizeStats, randomSplit, select, subset, take, type Dataset } from './dataset.ts';
import { DataError } from './errors.ts';

/** N samples of shape [C,2,2]; sample i is filled with the value i, label i % 3. */
export function toy(n: number, c = 1): Dataset {
  const per = c * 4;
  const images = new Float32Array(n * per);
  for (let i = 0; i < n; i++) images.fill(i, i * per, (i + 1) * per);
  return createDataset({
    name: 'toy',
    images,
    labels: Int32Array.from({ length: n }, (_, i) => i % 3),
    sampleShape: [c, 2, 2],
    numClasses: 3,
    classNames: ['a', 'b', 'c'],
  });
}

test('createDataset validates its fields', () => {
  const ok = toy(5);
  assert.equal(ok.length, 5);
  const base = { name: 'x', sampleShape: [1, 2, 2] as [number, number, number], numClasses: 2, classNames: ['a', 'b'] };
  assert.throws(() => createDataset({ ...base, images: new Float32Array(8), labels: new Int32Array(3) }), DataError);
  assert.throws(() => createDataset({ ...base, images: new Float32Array(8), labels: Int32Array.from([0, 2]) }), /label 2 at index 1/);
  assert.throws(() => createDataset({ ...base, images: new Float32Array(8), labels: Int32Array.from([0, 1]), classNames: ['a'] }), DataError);
});

test('subset and take share memory and clamp like slice', () => {
  const ds = toy(10);
  const s = subset(ds, 2, 5);
  assert.equal(s.length, 3);
  assert.deepEqual([...s.labels], [2, 0, 1]);
  assert.equal(s.images[0], 2);
  assert.equal(s.images.buffer, ds.images.buffer);
  assert.equal(subset(ds, -3).length, 3);
  assert.equal(subset(ds, 8, 100).length, 2);
  assert.equal(subset(ds, 6, 2).length, 0);
  assert.equal(take(ds, 4).length, 4);
  assert.equal(take(ds, 40).length, 10);
  assert.equal(take(ds, 4).name, 'toy[0:4]');
});

test('select gathers samples in the given order', () => {
  const s = select(toy(6), [5, 0, 3]);
  assert.deepEqual([...s.labels], [2, 0, 0]);
  assert.deepEqual([...s.images.subarray(0, 4)], [5, 5, 5, 5]);
  assert.deepEqual([...s.images.subarray(8)], [3, 3, 3, 3]);
  assert.throws(() => select(toy(6), [6]), DataError);
});

test('randomSplit: disjoint, complete, seeded', () => {
  const ds = toy(103);
  const [a, b] = randomSplit(ds, [0.9, 0.1], 7) as [Dataset, Dataset];
  assert.equal(a.length + b.length, 103);
  assert.equal(a.length, 93);
  const ids = (d: Dataset) => Array.from({ length: d.length }, (_, i) => d.images[i * 4]!);
  const all = [...ids(a), ...ids(b)].sort((x, y) => x - y);
  assert.deepEqual(all, Array.from({ length: 103 }, (_, i) => i));
  const [a2] = randomSplit(ds, [93, 10], 7) as [Dataset];
  assert.deepEqual(ids(a2), ids(a));
  const [a3] = randomSplit(ds, [93, 10], 8) as [Dataset];
  assert.notDeepEqual(ids(a3), ids(a));
  assert.throws(() => randomSplit(ds, [50, 50]), DataError);
});

test('normalize maps x to (x − mean) / std, per channel when given arrays', () => {
  const ds = toy(3, 2);
  const n = normalize(ds, { mean: 1, std: 2 });
  assert.deepEqual([...n.images.subarray(16, 24)], new Array(8).fill(0.5));
  assert.equal(ds.images[16], 2); // original untouched
  const pc = normalize(ds, { mean: [0, 2], std: [1, 0.5] });
  assert.deepEqual([...pc.images.subarray(16, 24)], [2, 2, 2, 2, 0, 0, 0, 0]);
  assert.throws(() => normalize(ds, { mean: [0, 0, 0], std: 1 }), DataError);
  assert.throws(() => normalize(ds, { mean: 0, std: 0 }), DataError);
});

test('classCounts', () => {
  assert.deepEqual(classCounts(toy(7)), [3, 2, 2]);
});

test('parseNormalizeStats: scalars or equal-length lists of finite numbers with std > 0, else null', () => {
  assert.deepEqual(parseNormalizeStats({ mean: 0.1307, std: 0.3081 }), { mean: 0.1307, std: 0.3081 });
  assert.deepEqual(parseNormalizeStats({ mean: [0.5, 0.4, 0.3], std: 0.2 }), { mean: [0.5, 0.4, 0.3], std: 0.2 });
  assert.deepEqual(parseNormalizeStats({ mean: 0, std: 1 }), { mean: 0, std: 1 });
  for (const bad of [null, 3, 'x', {}, { mean: 0 }, { mean: 0, std: 0 }, { mean: 0, std: -1 }, { mean: [0, 1], std: [1] }, { mean: [], std: 1 },
    { mean: NaN, std: 1 }, { mean: '0', std: 1 }, { mean: new Array(17).fill(0), std: 1 }]) {
    assert.equal(parseNormalizeStats(bad), null, JSON.stringify(bad));
  }
});
