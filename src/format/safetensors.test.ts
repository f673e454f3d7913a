import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  MAX_HEADER_BYTES,
  SafetensorsError,
  decodeSafetensors,
  encodeSafetensors,
  readSafetensorsFile,
  writeSafetensorsFile,
} from './safetensors.ts';

/** A buffer with a hand-written header and `dataBytes` zero bytes of data. */
function craft(header: unknown, dataBytes: number, rawHeader?: string): Uint8Array {
  const json = new TextEncoder().encode(rawHeader ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

function rejects(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(() => decodeSafetensors(bytes), (e: unknown) => e instanceof SafetensorsError && pattern.test(e.message));
}

test('round trip of F32 / F64 / I32 / U8 tensors and metadata', () => {
  const a = { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, -6.5]) };
  const b = { shape: [], data: Float64Array.from([Math.PI]) };
  const c = { shape: [3], data: Int32Array.from([-1, 0, 2147483647]) };
  const d = { shape: [5], data: Uint8Array.from([0, 1, 2, 254, 255]) };
  const e = { shape: [0, 4], data: new Float32Array(0) };
  const bytes = encodeSafetensors([['a', a], ['b', b], ['c', c], ['d', d], ['e', e]], { note: 'hi', json: '{"x":1}' });
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(headerLength % 8, 0, 'header padded to 8 bytes');
  const out = decodeSafetensors(bytes);
  assert.deepEqual([...out.tensors.keys()], ['a', 'b', 'c', 'd', 'e']);
  assert.deepEqual(out.metadata, { note: 'hi', json: '{"x":1}' });
  assert.deepEqual(out.tensors.get('a'), { dtype: 'F32', shape: [2, 3], data: a.data });
  assert.deepEqual(out.tensors.get('b'), { dtype: 'F64', shape: [], data: b.data });
  assert.deepEqual(out.tensors.get('c'), { dtype: 'I32', shape: [3], data: c.data });
  assert.deepEqual(out.tensors.get('d'), { dtype: 'U8', shape: [5], data: d.data });
  assert.deepEqual(out.tensors.get('e')?.shape, [0, 4]);
});

test('unaligned offsets (after a U8 tensor) still decode', () => {
  const bytes = encodeSafetensors([
    ['u', { shape: [3], data: Uint8Array.from([7, 8, 9]) }],
    ['f', { shape: [2], data: Float32Array.from([1.5, -2.25]) }],
  ]);
  assert.deepEqual(Array.from(decodeSafetensors(bytes).tensors.get('f')!.data), [1.5, -2.25]);
});

test('header follows the safetensors layout', () => {
  const bytes = encodeSafetensors([['w', { shape: [2], data: Float32Array.from([1, 2]) }]], { k: 'v' });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.deepEqual(header, { __metadata__: { k: 'v' }, w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } });
  assert.equal(bytes.length, 8 + n + 8);
});

test('writer rejects bad input', () => {
  assert.throws(() => encodeSafetensors([['x', { shape: [3], data: new Float32Array(2) }]]), SafetensorsError);
  assert.throws(() => encodeSafetensors([['__metadata__', { shape: [1], data: new Float32Array(1) }]]), SafetensorsError);
  assert.throws(() => encodeSafetensors([['x', { shape: [1], data: new Float32Array(1) }], ['x', { shape: [1], data: new Float32Array(1) }]]), /duplicate/);
});

test('reader validates before touching data', () => {
  rejects(new Uint8Array(4), /too short/);
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
  rejects(huge, /exceeds the .*limit/);
  const long = new Uint8Array(16);
  new DataView(long.buffer).setBigUint64(0, 9n, true);
  rejects(long, /exceeds the 8 bytes/);
  const max = new Uint8Array(16);
  new DataView(max.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
  rejects(max, /limit/);
  rejects(craft(null, 0, '{"a": '), /not valid JSON/);
  rejects(craft([1, 2], 0), /must be a JSON object/);
  rejects(craft({ a: { dtype: 'BF16', shape: [1], data_offsets: [0, 2] } }, 2), /unsupported dtype "BF16"/);
  rejects(craft({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), /shape must be/);
  rejects(craft({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4), /shape must be/);
  rejects(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0] } }, 4), /data_offsets must be/);
  rejects(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 8] } }, 4), /out of range/);
  rejects(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4), /out of range/);
  rejects(craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4), /needs 8/);
  rejects(craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8), /overlap/);
  rejects(craft({ a: { dtype: 'F32', shape: [1e308, 1e308], data_offsets: [0, 4] } }, 4), /shape must be|too large/);
  rejects(craft({ __metadata__: { k: 1 } }, 0), /must be a string/);
  rejects(craft({ a: 3 }, 0), /entry must be an object/);
  const badUtf8 = craft(null, 0, '{}');
  badUtf8[8] = 0xff;
  rejects(badUtf8, /UTF-8/);
});

test('files are written atomically, leaving no temporary files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-st-'));
  try {
    const path = join(dir, 'x.safetensors');
    writeSafetensorsFile(path, [['a', { shape: [1], data: Float32Array.from([1]) }]]);
    writeSafetensorsFile(path, [['a', { shape: [1], data: Float32Array.from([2]) }]]);
    assert.deepEqual(readdirSync(dir), ['x.safetensors']);
    assert.equal(readSafetensorsFile(path).tensors.get('a')!.data[0], 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
