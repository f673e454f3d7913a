/**
 * Fuzz test of the .lowbit reader: more than 10,000 malformed files (every truncation of a small
 * valid file, seeded random bit flips and byte replacements, structured header mutations and
 * hand-crafted malicious files). Each must end in a LowbitFormatError or, for harmless changes,
 * decode to a structurally valid model that the writer accepts again, within 100 ms.
 * LOWBIT_FUZZ_REPORT=1 prints the statistics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import {
  LowbitFormatError,
  decodeLowbit,
  encodeLowbit,
  nodeTensorNames,
  packLowbitValues,
  packedByteLength,
  type LowbitModel,
} from './lowbit.ts';
import { fuzzRng, timeFuzzCase, type FuzzTiming } from '../../test/fuzz-timing.ts';

const small: LowbitModel = {
  graph: [
    { op: 'linear', name: 'fc', bits: 4, tensors: { weight: 'w', bias: 'b' } },
    { op: 'sign', name: 's', bits: 1, tensors: ['m', 'scale'] },
  ],
  tensors: {
    w: packLowbitValues('int4', [3, 5], [1, -2, 3, -4, 5, -6, 7, -8, 0, 1, 2, 3, 4, 5, 6]),
    b: packLowbitValues('int32', [3], [7, -7, 70000]),
    m: packLowbitValues('bits', [2, 9], [1, -1, 1, 1, -1, -1, 1, -1, 1, 1, 1, 1, -1, -1, -1, 1, 1, -1]),
    scale: packLowbitValues('float32', [2], [0.25, 0.5]),
    q: packLowbitValues('int8', [3], [-1, 0, 1]),
  },
  metadata: { model: 'fuzz', accuracy: 0.5 },
};

const STORED_ARRAY = { int8: Int8Array, uint8: Uint8Array, int4: Uint8Array, uint4: Uint8Array, int2: Uint8Array, uint2: Uint8Array, bits: Uint8Array, int32: Int32Array, float32: Float32Array } as const;

/** A decoded model must be self-consistent and accepted by the writer as it is. */
function assertStructurallyValid(model: LowbitModel): void {
  for (const [name, t] of Object.entries(model.tensors)) {
    assert.ok(t.data instanceof STORED_ARRAY[t.dtype], `${name}: array type`);
    const bytes = packedByteLength(t.dtype, t.shape);
    assert.equal(t.data.byteLength, bytes, `${name}: byte length`);
  }
  assert.ok(Array.isArray(model.graph));
  for (const node of model.graph) {
    assert.equal(typeof node.op, 'string');
    for (const ref of nodeTensorNames(node)) assert.ok(Object.hasOwn(model.tensors, ref), `reference ${ref}`);
  }
  const again = decodeLowbit(encodeLowbit(model));
  assert.deepEqual(Object.keys(again.tensors), Object.keys(model.tensors));
}

interface Stats extends FuzzTiming {
  rejected: number;
  decoded: number;
  codes: Map<string, number>;
}

function run(stats: Stats, label: string, bytes: Uint8Array, mustReject: boolean): void {
  const outcome = timeFuzzCase(stats, label, 'a LowbitFormatError', (): LowbitModel | LowbitFormatError => {
    try {
      return decodeLowbit(bytes);
    } catch (e) {
      if (e instanceof LowbitFormatError) return e;
      throw e;
    }
  });
  if (outcome instanceof LowbitFormatError) {
    stats.rejected++;
    stats.codes.set(outcome.code, (stats.codes.get(outcome.code) ?? 0) + 1);
    assert.ok(outcome.message.length > 0 && outcome.message.length < 1000, `${label}: message length`);
  } else {
    assert.ok(!mustReject, `${label}: decoded although it must be rejected`);
    stats.decoded++;
    assertStructurallyValid(outcome);
  }
}

function withHeader(header: string, dataBytes: Uint8Array | number): Uint8Array {
  const json = new TextEncoder().encode(header);
  const data = typeof dataBytes === 'number' ? new Uint8Array(dataBytes) : dataBytes;
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function splitFile(bytes: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return { header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>, data: bytes.slice(8 + n) };
}

/** Hand-crafted malicious files: every one must be rejected. */
function malicious(valid: Uint8Array): [string, Uint8Array][] {
  const { header, data } = splitFile(valid);
  const meta = header['__metadata__'] as Record<string, string>;
  const logical = JSON.parse(meta['tensors']!) as Record<string, Record<string, unknown>>;
  const cases: [string, Uint8Array][] = [];
  const add = (label: string, h: Record<string, unknown>, d: Uint8Array | number = data): void => void cases.push([label, withHeader(JSON.stringify(h), d)]);
  const entry = (name: string, patch: Record<string, unknown>): Record<string, unknown> => ({ ...header, [name]: { ...(header[name] as object), ...patch } });
  const withMeta = (patch: Record<string, unknown>): Record<string, unknown> => ({ ...header, __metadata__: { ...meta, ...patch } });
  const withLogical = (name: string, patch: Record<string, unknown>): Record<string, unknown> => withMeta({ tensors: JSON.stringify({ ...logical, [name]: { ...logical[name], ...patch } }) });

  for (const length of [2n ** 64n - 1n, 2n ** 63n, 2n ** 53n + 1n, 2n ** 32n, 16n * 1024n * 1024n + 1n, BigInt(valid.length), BigInt(valid.length - 7)]) {
    const b = valid.slice();
    new DataView(b.buffer).setBigUint64(0, length, true);
    cases.push([`header length ${length}`, b]);
  }
  cases.push(['empty', new Uint8Array(0)]);
  cases.push(['header length zero', withHeader('', 0)]);
  cases.push(['header spaces', withHeader('        ', 0)]);
  cases.push(['header not JSON', withHeader('this is not json', data)]);
  cases.push(['header JSON array', withHeader('[]', data)]);
  cases.push(['header JSON null', withHeader('null', data)]);
  cases.push(['header JSON string', withHeader('"lowbit"', data)]);
  cases.push(['header bad UTF-8', withHeader('{"\udc00": 1}', data)]);
  const latin = withHeader('{}', 0);
  latin[9] = 0xc3;
  cases.push(['header invalid UTF-8 byte', latin]);
  cases.push(['10^6-deep arrays', withHeader('['.repeat(1_000_000) + ']'.repeat(1_000_000), 0)]);
  cases.push(['10^6-deep objects', withHeader('{"a":'.repeat(1_000_000) + '1' + '}'.repeat(1_000_000), 0)]);
  cases.push(['65-deep arrays', withHeader('['.repeat(65) + ']'.repeat(65), 0)]);
  add('10^6-deep graph', withMeta({ graph: '['.repeat(1_000_000) }));
  add('10^6-deep tensors metadata', withMeta({ tensors: '['.repeat(1_000_000) }));
  add('10^5-deep tensors metadata objects', withMeta({ tensors: '{"a":'.repeat(100_000) }));
  add('10^6-deep free metadata', withMeta({ metadata: '['.repeat(1_000_000) }));
  add('10^5-deep free metadata objects', withMeta({ metadata: '[{"a":'.repeat(50_000) }));
  const raw = JSON.stringify(header);
  cases.push(['duplicate tensor name', withHeader(raw.replace(/}$/, `,"w":${JSON.stringify(header['w'])}}`), data)]);
  cases.push(['duplicate __metadata__', withHeader(raw.replace(/}$/, `,"__metadata__":${JSON.stringify(meta)}}`), data)]);
  add('duplicate logical name', withMeta({ tensors: JSON.stringify(logical).replace(/}$/, `,"w":${JSON.stringify(logical['w'])}}`) }));

  for (const name of ['w', 'b', 'm', 'scale', 'q']) {
    for (const shape of [[-1], [1.5], [2 ** 31 + 1], [1e9, 1e9], [2 ** 53], [1e308], ['3'], [null], [[1]], [{}], 'x', null, {}, Array(17).fill(1), [0, 2 ** 60]]) {
      add(`${name} stored shape ${JSON.stringify(shape)}`, entry(name, { shape }));
      add(`${name} logical shape ${JSON.stringify(shape)}`, withLogical(name, { shape }));
    }
    cases.push([`${name} NaN shape`, withHeader(JSON.stringify(entry(name, { shape: [0] })).replace(/"shape":\[0\]/, '"shape":[NaN]'), data)]);
    for (const offsets of [[0, 1e15], [-1, 4], [4, 0], [0.5, 4], [0], [0, 1, 2], 'x', null, [0, data.length + 1], [1, 1 + ((header[name] as { data_offsets: number[] }).data_offsets[1]! - (header[name] as { data_offsets: number[] }).data_offsets[0]!)]]) {
      add(`${name} offsets ${JSON.stringify(offsets)}`, entry(name, { data_offsets: offsets }));
    }
    for (const dtype of ['F16', 'BF16', 'F64', 'I64', 'u8', '', 3, null]) add(`${name} stored dtype ${JSON.stringify(dtype)}`, entry(name, { dtype }));
    for (const dtype of ['int3', 'float16', 'INT4', '', 7, null]) add(`${name} logical dtype ${JSON.stringify(dtype)}`, withLogical(name, { dtype }));
    add(`${name} missing from metadata`, withMeta({ tensors: JSON.stringify(Object.fromEntries(Object.entries(logical).filter(([k]) => k !== name))) }));
    const { [name]: _dropped, ...rest } = header;
    add(`${name} missing from header`, rest);
    add(`${name} entry not an object`, { ...header, [name]: [1, 2] });
  }
  add('overlapping offsets', entry('scale', { data_offsets: [0, 8] }));
  add('bits with wrong row padding', withLogical('m', { rowPadBits: 0 }));
  add('int4 with unknown packing', withLogical('w', { packing: 'msb-first' }));
  add('int4 without packing', withLogical('w', { packing: undefined }));
  add('float32 with packing', withLogical('scale', { packing: 'lsb-first' }));
  add('int4 as I8', entry('w', { dtype: 'I8' }));
  add('trailing data', header, new Uint8Array([...data, 0, 0, 0, 0]));
  add('missing data', header, data.subarray(0, data.length - 4));
  add('no metadata', Object.fromEntries(Object.entries(header).filter(([k]) => k !== '__metadata__')));
  add('metadata not object', { ...header, __metadata__: 'lowbit' });
  add('metadata value not string', withMeta({ graph: [] }));
  for (const version of ['0', '2', '1.0', ' 1', '', undefined]) add(`version ${JSON.stringify(version)}`, withMeta({ version }));
  for (const format of ['safetensors', 'LOWBIT', '', undefined]) add(`format ${JSON.stringify(format)}`, withMeta({ format }));
  for (const graph of ['', '{', '{}', '[1]', '[null]', '[{}]', '[{"op":1}]', '[{"op":""}]', '[{"op":"x","tensors":"w"}]', '[{"op":"x","tensors":[1]}]', '[{"op":"x","tensors":["nope"]}]', '[{"op":"x","tensors":{"weight":"nope"}}]', '[{"op":"x","name":3}]', undefined]) {
    add(`graph ${JSON.stringify(graph)}`, withMeta({ graph }));
  }
  for (const tensors of ['', '[]', 'null', '{"w":3}', undefined]) add(`tensors meta ${JSON.stringify(tensors)}`, withMeta({ tensors }));
  for (const metadata of ['', '[]', '3', '{']) add(`free metadata ${JSON.stringify(metadata)}`, withMeta({ metadata }));
  return cases;
}

test('fuzz: >= 10,000 malformed .lowbit files all end in LowbitFormatError (or a valid model), each within 100 ms', () => {
  const valid = encodeLowbit(small);
  assertStructurallyValid(decodeLowbit(valid));
  const stats: Stats = { count: 0, rejected: 0, decoded: 0, maxMs: 0, slowest: '', rawMaxMs: 0, retimed: 0, totalMs: 0, codes: new Map() };
  const began = performance.now();

  // 1. every truncation
  for (let n = 0; n < valid.length; n++) run(stats, `prefix ${n}`, valid.subarray(0, n), true);
  const truncations = stats.count;

  // 2. seeded random bit flips (1-4 bits), half of them aimed at the header
  const random = fuzzRng(20261122);
  const headerEnd = 8 + Number(new DataView(valid.buffer).getBigUint64(0, true));
  for (let i = 0; i < 6000; i++) {
    const b = valid.slice();
    const flips = 1 + Math.floor(random() * 4);
    for (let f = 0; f < flips; f++) {
      const at = i % 2 === 0 ? Math.floor(random() * headerEnd) : Math.floor(random() * b.length);
      b[at]! ^= 1 << Math.floor(random() * 8);
    }
    run(stats, `bit flips #${i}`, b, false);
  }

  // 3. byte replacements in the header by JSON-significant characters (structure-breaking edits)
  const alphabet = new TextEncoder().encode('{}[]":,0123456789-.eE \\nulltrfa');
  for (let i = 0; i < 3000; i++) {
    const b = valid.slice();
    const edits = 1 + Math.floor(random() * 3);
    for (let e = 0; e < edits; e++) b[8 + Math.floor(random() * (headerEnd - 8))] = alphabet[Math.floor(random() * alphabet.length)]!;
    run(stats, `byte edits #${i}`, b, false);
  }

  // 4. hand-crafted malicious files
  const crafted = malicious(valid);
  for (const [label, bytes] of crafted) run(stats, label, bytes, true);

  const totalMs = performance.now() - began;
  if (process.env.LOWBIT_FUZZ_REPORT) {
    const codes = [...stats.codes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`).join(', ');
    console.log(`fuzz: ${stats.count} files (${truncations} truncations, 6000 bit-flip, 3000 byte-edit, ${crafted.length} crafted); ` +
      `${stats.rejected} rejected, ${stats.decoded} decoded valid; max ${stats.maxMs.toFixed(2)} ms (${stats.slowest}), mean ${(stats.totalMs / stats.count).toFixed(3)} ms per file (first-run max ${stats.rawMaxMs.toFixed(1)} ms, ${stats.retimed} re-timings); total ${(totalMs / 1000).toFixed(1)} s\ncodes: ${codes}`);
  }
  assert.ok(stats.count >= 10_000, `${stats.count} files`);
  assert.ok(stats.rejected > stats.count / 2);
  assert.ok(stats.maxMs < 100, `max ${stats.maxMs} ms`);
  assert.ok(totalMs < 20_000, `total ${totalMs} ms`);
});
