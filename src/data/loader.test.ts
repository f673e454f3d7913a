import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDataset, type Dataset } from './dataset.ts';
import { DataLoader } from './loader.ts';
import { DataError } from './errors.ts';

function toy(n: number): Dataset {
  const images = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) images.fill(i / n, i * 4, (i + 1) * 4);
  return createDataset({
    name: 'toy',
    images,
    labels: Int32Array.from({ length: n }, (_, i) => i % 5),
    sampleShape: [1, 2, 2],
    numClasses: 5,
    classNames: ['a', 'b', 'c', 'd', 'e'],
  });
}

function epochOrder(loader: DataLoader): number[] {
  const out: number[] = [];
  for (const b of loader) out.push(...b.indices);
  return out;
}

test('batches have the right shapes, dtypes and contents', () => {
  const ds = toy(10);
  const loader = new DataLoader(ds, { batchSize: 4 });
  assert.equal(loader.length, 3);
  const batches = [...loader];
  assert.deepEqual(batches.map((b) => b.x.shape), [[4, 1, 2, 2], [4, 1, 2, 2], [2, 1, 2, 2]]);
  assert.equal(batches[0]!.x.dtype, 'float32');
  assert.equal(batches[0]!.y.dtype, 'int32');
  assert.deepEqual(batches[0]!.y.shape, [4]);
  assert.deepEqual(epochOrder(new DataLoader(ds, { batchSize: 4 })), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const b = batches[2]!;
  assert.deepEqual([...b.y.data], [3, 4]);
  assert.deepEqual([...b.x.data], [0.8, 0.8, 0.8, 0.8, 0.9, 0.9, 0.9, 0.9].map(Math.fround));
});

test('shuffle covers every index exactly once per epoch, reproducibly, differently per epoch', () => {
  const ds = toy(103);
  const a = new DataLoader(ds, { batchSize: 16, shuffle: true, seed: 42 });
  const b = new DataLoader(ds, { batchSize: 16, shuffle: true, seed: 42 });
  const e0 = epochOrder(a);
  const e1 = epochOrder(a);
  assert.equal(a.epoch, 2);
  assert.deepEqual([...e0].sort((x, y) => x - y), Array.from({ length: 103 }, (_, i) => i));
  assert.deepEqual([...e1].sort((x, y) => x - y), Array.from({ length: 103 }, (_, i) => i));
  assert.notDeepEqual(e0, e1);
  assert.deepEqual(epochOrder(b), e0);
  assert.deepEqual(epochOrder(b), e1);
  b.setEpoch(0);
  assert.deepEqual(epochOrder(b), e0);
  const other = new DataLoader(ds, { batchSize: 16, shuffle: true, seed: 43 });
  assert.notDeepEqual(epochOrder(other), e0);
  // labels follow their samples
  for (const batch of new DataLoader(ds, { batchSize: 16, shuffle: true, seed: 1 })) {
    batch.indices.forEach((i, k) => {
      assert.equal(batch.y.data[k], ds.labels[i]);
      assert.equal(batch.x.data[k * 4 + 3], ds.images[i * 4]);
    });
  }
});

test('dropLast drops the short batch', () => {
  const loader = new DataLoader(toy(10), { batchSize: 4, dropLast: true, shuffle: true });
  assert.equal(loader.length, 2);
  const sizes = [...loader].map((b) => b.y.size);
  assert.deepEqual(sizes, [4, 4]);
  assert.equal(new DataLoader(toy(8), { batchSize: 4, dropLast: true }).length, 2);
  assert.equal(new DataLoader(toy(3), { batchSize: 4, dropLast: true }).length, 0);
  assert.equal(new DataLoader(toy(3), { batchSize: 4 }).length, 1);
});

test('normalize option applies (x − mean) / std to the batch only', () => {
  const ds = toy(4);
  const [batch] = [...new DataLoader(ds, { batchSize: 4, normalize: { mean: 0.25, std: 0.5 } })];
  const expected = [0, 0.25, 0.5, 0.75].flatMap((v) => new Array(4).fill(Math.fround((Math.fround(v) - 0.25) * 2)));
  assert.deepEqual([...batch!.x.data], expected);
  assert.equal(ds.images[4], 0.25);
});

test('invalid options throw DataError', () => {
  assert.throws(() => new DataLoader(toy(4), { batchSize: 0 }), DataError);
  assert.throws(() => new DataLoader(toy(4), { normalize: { mean: 0, std: -1 } }), DataError);
  assert.throws(() => new DataLoader(toy(4)).setEpoch(-1), DataError);
});
