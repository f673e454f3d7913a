import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LowbitFormatError,
  decodeLowbit,
  encodeLowbit,
  lowbitSizeReport,
  packLowbitValues,
  packedByteLength,
  readLowbit,
  unpackLowbitValues,
  writeLowbit,
  type LogicalDType,
  type LowbitErrorCode,
  type LowbitModel,
  type LowbitTensor,
} from './lowbit.ts';
import { decodeSafetensors } from './safetensors.ts';
import { packBinaryRows, packBits } from '../quant/core/packing.ts';
import { fuzzRng } from '../../test/fuzz-timing.ts';

/** A seeded generator (mulberry32) so that tests are reproducible. */
function randomInts(n: number, lo: number, hi: number, seed: number): number[] {
  const r = fuzzRng(seed);
  return Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo + 1)));
}

function sample(): LowbitModel {
  return {
    graph: [
      { op: 'conv2d', name: 'c1', bits: 4, tensors: { weight: 'c1.w', bias: 'c1.b' }, stride: 1 },
      { op: 'linear', name: 'fc', bits: 1, tensors: ['fc.w', 'fc.scale'] },
      { op: 'relu' },
    ],
    tensors: {
      'c1.w': packLowbitValues('int4', [3, 1, 1, 5], randomInts(15, -8, 7, 1)),
      'c1.b': packLowbitValues('int32', [3], [-5, 0, 2147483647]),
      'fc.w': packLowbitValues('bits', [2, 70], randomInts(140, -1, 0, 2)),
      'fc.scale': packLowbitValues('float32', [2], [0.5, -1.25]),
      u2: packLowbitValues('uint2', [7], [0, 1, 2, 3, 3, 2, 1]),
      i2: packLowbitValues('int2', [5], [-2, -1, 0, 1, 1]),
      u4: packLowbitValues('uint4', [3], [15, 0, 9]),
      i8: packLowbitValues('int8', [2, 2], [-128, 127, 0, 5]),
      u8: packLowbitValues('uint8', [3], [0, 255, 7]),
      empty: packLowbitValues('int4', [0, 3], []),
    },
    metadata: { model: 'test', accuracy: 0.99, plan: { c1: { bits: 4 } } },
  };
}

function rejects(bytes: Uint8Array, code: LowbitErrorCode, pattern?: RegExp): void {
  assert.throws(
    () => decodeLowbit(bytes),
    (e: unknown) => e instanceof LowbitFormatError && e.code === code && (pattern === undefined || pattern.test(e.message)),
  );
}

/** Builds a file from a raw header object (tensor entries + __metadata__) and `dataBytes` zero bytes. */
function craft(header: unknown, dataBytes: number, rawHeader?: string): Uint8Array {
  const json = new TextEncoder().encode(rawHeader ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

function meta(tensors: Record<string, unknown>, graph: unknown[] = [], extra: Record<string, string> = {}): Record<string, string> {
  return { format: 'lowbit', version: '1', graph: JSON.stringify(graph), tensors: JSON.stringify(tensors), metadata: '{}', ...extra };
}

test('packing follows DESIGN.md and matches quant/core/packing', () => {
  const i4 = randomInts(37, -8, 7, 3);
  assert.deepEqual(packLowbitValues('int4', [37], i4).data, packBits(i4, 4, true));
  const u2 = randomInts(37, 0, 3, 4);
  assert.deepEqual(packLowbitValues('uint2', [37], u2).data, packBits(u2, 2, false));
  const b = randomInts(3 * 70, -1, 0, 5).map((v) => (v === 0 ? 1 : -1));
  assert.deepEqual(packLowbitValues('bits', [3, 70], b).data, packBinaryRows(b, 3, 70));
  // byte example of docs/format.md
  assert.deepEqual(Array.from(packLowbitValues('int4', [3], [1, -2, 7]).data), [0xe1, 0x07]);
  assert.deepEqual(Array.from(packLowbitValues('int2', [5], [1, -2, 0, -1, 1]).data), [0xc9, 0x01]);
  const bits = packLowbitValues('bits', [2, 3], [1, -1, 1, -1, -1, 1]).data;
  assert.equal(bits.length, 16);
  assert.deepEqual([bits[0], bits[8]], [0b101, 0b100]);
  for (const [dtype, shape, n] of [['int4', [5], 3], ['int2', [5], 2], ['bits', [3, 65], 48], ['bits', [130], 24], ['bits', [], 8], ['float32', [2, 3], 24], ['int8', [4], 4]] as const) {
    assert.equal(packedByteLength(dtype, shape), n, `${dtype} [${shape.join(',')}]`);
  }
  assert.throws(() => packLowbitValues('int4', [1], [8]), LowbitFormatError);
  assert.throws(() => packLowbitValues('uint2', [1], [-1]), LowbitFormatError);
});

test('round trip of every logical dtype, graph and metadata', () => {
  const model = sample();
  const bytes = encodeLowbit(model);
  const out = decodeLowbit(bytes);
  assert.deepEqual(out.graph, model.graph);
  assert.deepEqual(out.metadata, model.metadata);
  assert.deepEqual(Object.keys(out.tensors), Object.keys(model.tensors));
  for (const [name, t] of Object.entries(model.tensors)) {
    const back = out.tensors[name]!;
    assert.equal(back.dtype, t.dtype, name);
    assert.deepEqual(back.shape, t.shape, name);
    assert.deepEqual(back.data, t.data, name);
    assert.deepEqual(unpackLowbitValues(back), unpackLowbitValues(t), name);
  }
  assert.deepEqual(Array.from(unpackLowbitValues(out.tensors['u2']!)), [0, 1, 2, 3, 3, 2, 1]);
  assert.deepEqual(Array.from(unpackLowbitValues(out.tensors['i2']!)), [-2, -1, 0, 1, 1]);
});

test('odd tensor names round trip; the writer refuses __proto__', () => {
  const tensors: Record<string, LowbitTensor> = {};
  for (const name of ['toString', 'constructor', 'ä.weight', 'a"b\\c', ' ']) {
    Object.defineProperty(tensors, name, { value: packLowbitValues('int2', [3], [1, 0, -1]), enumerable: true });
  }
  const out = decodeLowbit(encodeLowbit({ graph: [{ op: 'x', tensors: ['toString', 'a"b\\c'] }], tensors }));
  assert.deepEqual(Object.keys(out.tensors), ['toString', 'constructor', 'ä.weight', 'a"b\\c', ' ']);
  assert.ok(Object.hasOwn(out.tensors, 'toString'));
  const proto: Record<string, LowbitTensor> = {};
  Object.defineProperty(proto, '__proto__', { value: packLowbitValues('int2', [3], [1, 0, -1]), enumerable: true });
  assert.throws(() => encodeLowbit({ graph: [], tensors: proto }), (e: unknown) => e instanceof LowbitFormatError && e.code === 'bad-input');
  // a file from another writer with a tensor named __proto__ reads as an own property
  const u8 = { dtype: 'U8', shape: [1], data_offsets: [0, 1] };
  const protoMeta = { ...meta({}), tensors: '{"__proto__":{"dtype":"uint8","shape":[1]}}' };
  const file = craft(null, 1, `{"__metadata__":${JSON.stringify(protoMeta)},"__proto__":${JSON.stringify(u8)}}`);
  assert.ok(Object.hasOwn(decodeLowbit(file).tensors, '__proto__'));
  assert.deepEqual(Array.from(unpackLowbitValues(out.tensors['a"b\\c']!)), [1, 0, -1]);
});

test('the writer takes the runtime\'s own node interfaces (no index signature needed)', () => {
  interface RuntimeNode {
    op: 'linear';
    name: string;
    bits: number;
    tensors: { weight: string };
    multiplier: number;
  }
  const graph: RuntimeNode[] = [{ op: 'linear', name: 'fc', bits: 2, tensors: { weight: 'w' }, multiplier: 123 }];
  const out = decodeLowbit(encodeLowbit({ graph, tensors: { w: packLowbitValues('int2', [4], [1, 0, -1, -2]) }, metadata: { plan: [2] } }));
  assert.deepEqual(out.graph, graph);
});

test('a .lowbit file is a plain safetensors file: packed tensors are 1-D U8, 4-byte tensors first', () => {
  const bytes = encodeLowbit(sample());
  const st = decodeSafetensors(bytes);
  assert.equal(st.metadata.format, 'lowbit');
  assert.equal(st.metadata.version, '1');
  assert.deepEqual(st.tensors.get('c1.w')!.dtype, 'U8');
  assert.deepEqual(st.tensors.get('c1.w')!.shape, [8]);
  assert.deepEqual(st.tensors.get('fc.w')!.shape, [32]);
  assert.deepEqual(st.tensors.get('i8')!.dtype, 'I8');
  assert.deepEqual(st.tensors.get('c1.b')!.dtype, 'I32');
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, { data_offsets: number[] }>;
  assert.deepEqual(header['c1.b']!.data_offsets, [0, 12]);
  assert.deepEqual(header['fc.scale']!.data_offsets, [12, 20]);
  const logical = JSON.parse(st.metadata.tensors!) as Record<string, unknown>;
  assert.deepEqual(logical['fc.w'], { dtype: 'bits', shape: [2, 70], packing: 'lsb-first', rowPadBits: 64 });
  assert.deepEqual(logical['c1.b'], { dtype: 'int32', shape: [3] });
});

test('writeLowbit is atomic and returns the size; readLowbit reads paths and honours maxBytes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-fmt-'));
  try {
    const path = join(dir, 'm.lowbit');
    const n = writeLowbit(path, sample());
    assert.equal(writeLowbit(path, sample()), n);
    assert.deepEqual(readdirSync(dir), ['m.lowbit']);
    assert.equal(readFileSync(path).length, n);
    assert.deepEqual(readLowbit(path).graph, sample().graph);
    assert.throws(() => readLowbit(path, { maxBytes: n - 1 }), (e: unknown) => e instanceof LowbitFormatError && e.code === 'file-too-large');
    assert.throws(() => readLowbit(join(dir, 'missing.lowbit')), /ENOENT/);
    // A directory or a device is refused up front (reading /dev/zero would never end).
    const refused = (e: unknown) => e instanceof LowbitFormatError && e.code === 'bad-input';
    assert.throws(() => readLowbit(dir), refused);
    if (existsSync('/dev/zero')) assert.throws(() => readLowbit('/dev/zero'), refused);
    // Format errors of a file name the file.
    writeFileSync(join(dir, 'bad.lowbit'), '{"not": "a lowbit file"}');
    assert.throws(() => readLowbit(join(dir, 'bad.lowbit')), (e: unknown) => e instanceof LowbitFormatError && e.message.startsWith(`${join(dir, 'bad.lowbit')} is not a valid .lowbit file: `));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writer rejects bad input with code bad-input', () => {
  const good = sample();
  const bad = (model: LowbitModel): void => {
    assert.throws(() => encodeLowbit(model), (e: unknown) => e instanceof LowbitFormatError && e.code === 'bad-input');
  };
  const w = (t: Partial<LowbitTensor> & Record<string, unknown>): LowbitModel => ({ graph: [], tensors: { x: t as LowbitTensor } });
  bad(w({ dtype: 'int3' as LogicalDType, shape: [1], data: new Uint8Array(1) }));
  bad(w({ dtype: 'int4', shape: [3], data: new Uint8Array(1) }));
  bad(w({ dtype: 'int4', shape: [3], data: new Int8Array(2) }));
  bad(w({ dtype: 'float32', shape: [-1], data: new Float32Array(0) }));
  bad(w({ dtype: 'float32', shape: [1.5], data: new Float32Array(1) }));
  bad({ ...good, graph: [{ op: 'linear', tensors: ['nope'] }] });
  bad({ ...good, graph: [{ op: 3 } as never] });
  bad({ ...good, graph: {} as never });
  bad({ ...good, metadata: { big: 1n } });
  bad({ graph: [], tensors: { __metadata__: packLowbitValues('int8', [1], [1]) } });
});

test('reader rejects malformed headers with typed codes', () => {
  const valid = encodeLowbit(sample());
  rejects(valid.subarray(0, 5), 'truncated');
  rejects(valid.subarray(0, valid.length - 1), 'bad-offsets');
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
  rejects(huge, 'header-too-large');
  const long = new Uint8Array(16);
  new DataView(long.buffer).setBigUint64(0, 9n, true);
  rejects(long, 'truncated');
  rejects(craft(null, 0, '{"a": '), 'bad-json');
  rejects(craft(null, 0, '[1]'), 'bad-header');
  rejects(craft(null, 0, '['.repeat(1_000_000)), 'json-too-deep');
  rejects(craft(null, 0, '{"__metadata__":{},"__metadata__":{}}'), 'duplicate-key');
  const many = Array.from({ length: 65538 }, (_, i) => `"t${i}":0`).join(',');
  rejects(craft(null, 0, `{${many}}`), 'bad-header', /65536-tensor limit/);
  const u8 = { dtype: 'U8', shape: [4], data_offsets: [0, 4] };
  const logicalU8 = { dtype: 'uint8', shape: [4] };
  rejects(craft(null, 8, `{"__metadata__":${JSON.stringify(meta({ a: logicalU8 }))},"a":${JSON.stringify(u8)},"a":${JSON.stringify({ ...u8, data_offsets: [4, 8] })}}`), 'duplicate-key');
});

test('reader rejects bad tensors, metadata and graphs', () => {
  const u8 = (begin: number, n: number): object => ({ dtype: 'U8', shape: [n], data_offsets: [begin, begin + n] });
  const ok = craft({ __metadata__: meta({ a: { dtype: 'uint8', shape: [4] } }, [{ op: 'x', tensors: ['a'] }]), a: u8(0, 4) }, 4);
  assert.equal(decodeLowbit(ok).tensors['a']!.data.length, 4);
  const m = (tensors: Record<string, unknown>, graph: unknown[] = [], extra: Record<string, string> = {}): Record<string, string> => meta(tensors, graph, extra);
  const a4 = { a: { dtype: 'uint8', shape: [4] } };
  rejects(craft({ __metadata__: m(a4), a: u8(0, 4) }, 5), 'bad-offsets', /trailing/);
  rejects(craft({ __metadata__: m(a4), a: u8(1, 4) }, 5), 'bad-offsets', /gap/);
  rejects(craft({ __metadata__: m({ ...a4, b: { dtype: 'uint8', shape: [4] } }), a: u8(0, 4), b: u8(2, 4) }, 6), 'bad-offsets', /overlap/);
  rejects(craft({ __metadata__: m(a4), a: u8(0, 4) }, 3), 'bad-offsets', /out of range/);
  rejects(craft({ __metadata__: m(a4), a: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] } }, 4), 'bad-dtype');
  rejects(craft({ __metadata__: m(a4), a: { dtype: 'U8', shape: [2], data_offsets: [0, 4] } }, 4), 'size-mismatch');
  rejects(craft({ __metadata__: m(a4), a: { dtype: 'U8', shape: [-4], data_offsets: [0, 4] } }, 4), 'bad-shape');
  rejects(craft({ __metadata__: m(a4), a: { dtype: 'U8', shape: [1e9, 1e9], data_offsets: [0, 4] } }, 4), 'bad-shape');
  rejects(craft({ __metadata__: m({ a: { dtype: 'int4', shape: [2 ** 40] } }), a: u8(0, 4) }, 4), 'bad-shape');
  rejects(craft({ __metadata__: m({ a: { dtype: 'int4', shape: [9], packing: 'lsb-first', rowPadBits: 0 } }), a: u8(0, 4) }, 4), 'size-mismatch');
  assert.equal(decodeLowbit(craft({ __metadata__: m({ a: { dtype: 'int4', shape: [8], packing: 'lsb-first', rowPadBits: 0 } }), a: u8(0, 4) }, 4)).tensors['a']!.dtype, 'int4');
  rejects(craft({ __metadata__: m({ a: { dtype: 'int4', shape: [8], packing: 'msb-first', rowPadBits: 0 } }), a: u8(0, 4) }, 4), 'bad-metadata');
  rejects(craft({ __metadata__: m({ a: { dtype: 'bits', shape: [1, 8], packing: 'lsb-first', rowPadBits: 0 } }), a: u8(0, 4) }, 4), 'bad-metadata');
  rejects(craft({ __metadata__: m({ a: { dtype: 'int5', shape: [4] } }), a: u8(0, 4) }, 4), 'bad-dtype');
  rejects(craft({ __metadata__: m({ a: { dtype: 'int8', shape: [4] } }), a: u8(0, 4) }, 4), 'bad-dtype', /stored as I8/);
  rejects(craft({ __metadata__: m({ a: { dtype: 'uint8', shape: [2, 2] } }), a: u8(0, 4) }, 4), 'bad-shape');
  rejects(craft({ __metadata__: m({ a: { dtype: 'uint8', shape: [NaN] } }), a: u8(0, 4) }, 4), 'bad-shape');
  rejects(craft({ __metadata__: m({}), a: u8(0, 4) }, 4), 'bad-metadata', /no entry/);
  rejects(craft({ __metadata__: m({ ...a4, b: { dtype: 'uint8', shape: [0] } }), a: u8(0, 4) }, 4), 'bad-metadata', /not stored/);
  rejects(craft({ a: u8(0, 4) }, 4), 'bad-metadata', /not a .lowbit/);
  rejects(craft({ __metadata__: { ...m(a4), format: 'gguf' }, a: u8(0, 4) }, 4), 'bad-metadata');
  rejects(craft({ __metadata__: { ...m(a4), version: '2' }, a: u8(0, 4) }, 4), 'unsupported-version');
  rejects(craft({ __metadata__: { ...m(a4), graph: '{' }, a: u8(0, 4) }, 4), 'bad-json');
  rejects(craft({ __metadata__: { ...m(a4), graph: '['.repeat(100000) }, a: u8(0, 4) }, 4), 'json-too-deep');
  rejects(craft({ __metadata__: { ...m(a4), metadata: '[1]' }, a: u8(0, 4) }, 4), 'bad-metadata');
  rejects(craft({ __metadata__: { ...m(a4), graph: 7 }, a: u8(0, 4) }, 4), 'bad-metadata');
  rejects(craft({ __metadata__: m(a4, [{ op: 'x', tensors: ['b'] }]), a: u8(0, 4) }, 4), 'missing-tensor');
  rejects(craft({ __metadata__: m(a4, [{ op: 'x', tensors: { weight: 'b' } }]), a: u8(0, 4) }, 4), 'missing-tensor');
  rejects(craft({ __metadata__: m(a4, [{ op: 'x', tensors: [1] }]), a: u8(0, 4) }, 4), 'bad-graph');
  rejects(craft({ __metadata__: m(a4, [{ name: 'x' }]), a: u8(0, 4) }, 4), 'bad-graph');
  rejects(craft({ __metadata__: m(a4, [3]), a: u8(0, 4) }, 4), 'bad-graph');
  rejects(craft({ __metadata__: { ...m(a4), graph: '{"op":"x"}' }, a: u8(0, 4) }, 4), 'bad-graph');
});

/** LeNet-5 (61,470 weights) with per-channel float32 scales and int32 biases at `bits` per weight. */
function lenet(bits: 8 | 4 | 2 | 1): LowbitModel {
  const layers: [string, string, number[]][] = [
    ['conv1', 'conv2d', [6, 1, 5, 5]],
    ['conv2', 'conv2d', [16, 6, 5, 5]],
    ['fc1', 'linear', [120, 400]],
    ['fc2', 'linear', [84, 120]],
    ['fc3', 'linear', [10, 84]],
  ];
  const dtype: LogicalDType = bits === 8 ? 'int8' : bits === 4 ? 'int4' : bits === 2 ? 'int2' : 'bits';
  const tensors: Record<string, LowbitTensor> = {};
  const graph: object[] = [];
  layers.forEach(([name, op, shape], i) => {
    const n = shape.reduce((p, d) => p * d, 1);
    const q = bits === 1 ? randomInts(n, -1, 0, i).map((v) => (v < 0 ? -1 : 1)) : randomInts(n, -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1, i);
    tensors[`${name}.weight`] = packLowbitValues(dtype, shape, q);
    tensors[`${name}.bias`] = packLowbitValues('int32', [shape[0]!], randomInts(shape[0]!, -1000, 1000, 10 + i));
    tensors[`${name}.scale`] = packLowbitValues('float32', [shape[0]!], randomInts(shape[0]!, 1, 100, 20 + i).map((v) => v / 1024));
    graph.push({ op, name, bits, tensors: { weight: `${name}.weight`, bias: `${name}.bias`, scale: `${name}.scale` } });
    if (i < 4) graph.push({ op: 'relu' });
  });
  return { graph: graph as LowbitModel['graph'], tensors, metadata: { model: 'lenet5', dataset: 'mnist', accuracy: 0.99, plan: { weightBits: bits } } };
}

test('size: LeNet-5 files at W8/W4/W2/W1 are within theoretical packed size + 2 % + 4 KiB', () => {
  for (const bits of [8, 4, 2, 1] as const) {
    const bytes = encodeLowbit(lenet(bits));
    const report = lowbitSizeReport(bytes);
    const weights = report.tensors.filter((t) => t.name.endsWith('.weight')).reduce((s, t) => s + t.elements, 0);
    assert.equal(weights, 61470);
    const limit = report.theoreticalBytes * 1.02 + 4096;
    assert.ok(report.fileBytes <= limit, `W${bits}: ${report.fileBytes} bytes > ${limit.toFixed(0)} (theoretical ${report.theoreticalBytes}, header ${report.headerBytes})`);
    assert.equal(report.fileBytes, bytes.length);
    assert.equal(report.fp32Bytes, report.totalElements * 4);
    if (process.env.LOWBIT_SIZE_REPORT) {
      console.log(`W${bits}: file ${report.fileBytes} B, theoretical ${report.theoreticalBytes} B, header ${report.headerBytes} B, overhead ${report.overheadBytes} B (${((report.overheadBytes / report.theoreticalBytes) * 100).toFixed(1)} %), fp32 ${report.fp32Bytes} B`);
    }
    const back = decodeLowbit(bytes);
    assert.deepEqual(unpackLowbitValues(back.tensors['fc1.weight']!), unpackLowbitValues(lenet(bits).tensors['fc1.weight']!));
  }
});
