import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataError } from './errors.ts';
import { encodeIdx, parseIdx, parseIdxImages, parseIdxLabels } from './idx.ts';
import { packageDir } from './paths.ts';

function code(fn: () => unknown, expected: string, message?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DataError, `expected DataError, got ${String(e)}`);
    assert.equal(e.code, expected, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

test('parseIdx reads a hand-built rank-3 buffer', () => {
  const buf = new Uint8Array([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 255]);
  const { dims, data } = parseIdx(buf);
  assert.deepEqual(dims, [2, 2, 3]);
  assert.deepEqual([...data], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 255]);
  const img = parseIdxImages(buf, 'x');
  assert.equal(img.count, 2);
  assert.equal(img.rows, 2);
  assert.equal(img.cols, 3);
  assert.deepEqual(encodeIdx([2, 2, 3], data), buf);
});

test('parseIdxLabels checks magic 0x00000801 and the label range', () => {
  assert.deepEqual([...parseIdxLabels(encodeIdx([4], [5, 0, 9, 3]), 10)], [5, 0, 9, 3]);
  code(() => parseIdxLabels(encodeIdx([3], [1, 10, 2]), 10, 'lbl'), 'label-range', /lbl: label 10 at index 1/);
  // an image file given as labels: magic 0x00000803 where 0x00000801 is expected
  code(() => parseIdxLabels(encodeIdx([1, 1, 1], [0]), 10), 'bad-magic', /0x00000803.*expected 0x00000801/);
  code(() => parseIdxImages(encodeIdx([2], [0, 1])), 'bad-magic', /expected 0x00000803/);
});

test('malformed IDX buffers throw DataError', () => {
  const good = encodeIdx([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
  const badMagic = good.slice();
  badMagic[0] = 0x12;
  code(() => parseIdx(badMagic), 'bad-magic', /bad IDX magic number 0x12000803/);
  const int32Type = good.slice();
  int32Type[2] = 0x0c;
  code(() => parseIdx(int32Type), 'unsupported-type');
  code(() => parseIdxImages(int32Type), 'bad-magic');
  code(() => parseIdx(good.subarray(0, 3)), 'truncated');
  code(() => parseIdx(good.subarray(0, 10)), 'truncated', /header/);
  code(() => parseIdx(good.subarray(0, good.length - 1)), 'truncated', /need 24 bytes but the file has 23/);
  const longer = new Uint8Array(good.length + 2);
  longer.set(good);
  code(() => parseIdx(longer), 'trailing-bytes');
  // header says 3 images but only 2 are present (wrong count)
  const wrongCount = good.slice();
  wrongCount[7] = 3;
  code(() => parseIdx(wrongCount), 'truncated');
  code(() => parseIdx(new Uint8Array([0, 0, 8, 0])), 'bad-dims');
  code(() => parseIdxImages(encodeIdx([1, 0, 2], [])), 'bad-dims');
});

test('parseIdx works on a view with a byte offset', () => {
  const good = encodeIdx([3], [7, 8, 9]);
  const host = new Uint8Array(good.length + 5);
  host.set(good, 5);
  assert.deepEqual([...parseIdx(host.subarray(5)).data], [7, 8, 9]);
});

test('a missing package is one clear error', () => {
  code(() => packageDir('lowbit-no-such-package', 'loadThing'), 'missing-package', /npm install lowbit-no-such-package/);
});
