/**
 * Safetensors-compatible container: an 8-byte little-endian header length N, N bytes of UTF-8
 * JSON (`name → {dtype, shape, data_offsets: [begin, end]}` plus an optional `__metadata__`
 * object of string values), then the raw little-endian tensor bytes. Offsets are relative to the
 * first byte after the header. Files written here are readable by the `safetensors` Python
 * package and vice versa (for the dtypes below).
 *
 * The reader validates the whole header (lengths, JSON, dtypes, shapes, offsets in range and
 * non-overlapping, byte size = product(shape)·itemsize) before it touches any tensor data, and
 * reports every problem as a `SafetensorsError`.
 */
import { FileLimitError, readFileLimited, writeFileAtomic } from './files.ts';

/** Element types stored on disk: F32/F64/I32 map to Tensor dtypes; U8/I8 hold packed low-bit data. */
export type SafetensorsDType = 'F32' | 'F64' | 'I32' | 'U8' | 'I8';

export type SafetensorsArray = Float32Array | Float64Array | Int32Array | Uint8Array | Int8Array;

/** One tensor as stored: its on-disk dtype, shape and a copy of its elements. */
export interface SafetensorsEntry {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly data: SafetensorsArray;
}

/** A decoded file: tensors in header order and the string metadata. */
export interface SafetensorsContents {
  readonly tensors: Map<string, SafetensorsEntry>;
  readonly metadata: Record<string, string>;
}

/** Anything malformed in a safetensors buffer or file. */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

/** Largest header accepted by the reader (the reference implementation uses the same bound). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const ITEM_SIZE: Record<SafetensorsDType, number> = { F32: 4, F64: 8, I32: 4, U8: 1, I8: 1 };

const METADATA_KEY = '__metadata__';

/** The on-disk dtype of a typed array. */
export function safetensorsDTypeOf(data: SafetensorsArray): SafetensorsDType {
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Float64Array) return 'F64';
  if (data instanceof Int32Array) return 'I32';
  if (data instanceof Uint8Array) return 'U8';
  return 'I8';
}

function assertLittleEndianHost(): void {
  if (new Uint8Array(Uint16Array.of(1).buffer)[0] !== 1) throw new SafetensorsError('safetensors io needs a little-endian host');
}

/** A tensor to write: anything with a shape and a typed array (Tensor qualifies). */
export interface SafetensorsInput {
  readonly shape: readonly number[];
  readonly data: SafetensorsArray;
}

/**
 * Serialises tensors (in the order given) and string metadata into one buffer.
 * The header is padded with spaces to a multiple of 8 bytes so that data starts aligned.
 */
export function encodeSafetensors(
  tensors: Iterable<readonly [string, SafetensorsInput]>,
  metadata: Record<string, string> = {},
): Uint8Array {
  assertLittleEndianHost();
  // A null-prototype object: a tensor named `__proto__` must be an ordinary key.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  const pieces: Uint8Array[] = [];
  let offset = 0;
  for (const key of Object.keys(metadata)) {
    if (typeof metadata[key] !== 'string') throw new SafetensorsError(`metadata value '${key}' must be a string`);
  }
  if (Object.keys(metadata).length > 0) header[METADATA_KEY] = metadata;
  for (const [name, t] of tensors) {
    if (name === METADATA_KEY) throw new SafetensorsError(`'${METADATA_KEY}' cannot name a tensor`);
    if (Object.hasOwn(header, name)) throw new SafetensorsError(`duplicate tensor name '${name}'`);
    const count = t.shape.reduce((p, d) => p * d, 1);
    if (count !== t.data.length) throw new SafetensorsError(`tensor '${name}': shape [${t.shape.join(', ')}] does not match ${t.data.length} elements`);
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: safetensorsDTypeOf(t.data), shape: [...t.shape], data_offsets: [offset, offset + bytes.length] };
    pieces.push(bytes);
    offset += bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);
  let at = 8 + padded;
  for (const p of pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

interface HeaderEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

/** Parses and validates the header; returns entries and metadata without reading tensor data. */
function parseHeader(bytes: Uint8Array): { entries: HeaderEntry[]; metadata: Record<string, string>; dataStart: number } {
  if (bytes.length < 8) throw new SafetensorsError(`file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(`header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (headerLength > BigInt(bytes.length - 8)) throw new SafetensorsError(`header length ${headerLength} exceeds the ${bytes.length - 8} bytes after the length field`);
  const n = Number(headerLength);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new SafetensorsError('header is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(parsed)) throw new SafetensorsError('header must be a JSON object');

  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(parsed)) {
    if (name === METADATA_KEY) {
      if (!isPlainObject(value)) throw new SafetensorsError(`'${METADATA_KEY}' must be an object of strings`);
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw new SafetensorsError(`metadata '${k}' must be a string, got ${typeof v}`);
        metadata[k] = v;
      }
      continue;
    }
    entries.push(parseEntry(name, value, dataLength));
  }
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.begin < prev.end) throw new SafetensorsError(`tensors '${prev.name}' and '${cur.name}' overlap ([${prev.begin}, ${prev.end}) and [${cur.begin}, ${cur.end}))`);
  }
  return { entries, metadata, dataStart };
}

function parseEntry(name: string, value: unknown, dataLength: number): HeaderEntry {
  const where = `tensor '${name}'`;
  if (!isPlainObject(value)) throw new SafetensorsError(`${where}: entry must be an object`);
  const { dtype, shape, data_offsets: offsets } = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof dtype !== 'string' || !Object.hasOwn(ITEM_SIZE, dtype)) {
    throw new SafetensorsError(`${where}: unsupported dtype ${JSON.stringify(dtype)} (known: ${Object.keys(ITEM_SIZE).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new SafetensorsError(`${where}: data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > dataLength) throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] out of range (data section is ${dataLength} bytes)`);
  const itemSize = ITEM_SIZE[dtype as SafetensorsDType];
  let count = 1;
  for (const d of shape as number[]) {
    count *= d;
    if (!Number.isSafeInteger(count)) throw new SafetensorsError(`${where}: shape [${shape.join(', ')}] is too large`);
  }
  if (count * itemSize !== end - begin) {
    throw new SafetensorsError(`${where}: ${end - begin} bytes stored but shape [${shape.join(', ')}] of ${dtype} needs ${count * itemSize}`);
  }
  return { name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin, end };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typedCopy(dtype: SafetensorsDType, bytes: Uint8Array): SafetensorsArray {
  // Copy into a fresh, aligned buffer: tensor offsets need not be multiples of the item size.
  // (Not `bytes.slice()`: on a Node Buffer that is a view, not a copy.)
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  const buffer = copy.buffer;
  switch (dtype) {
    case 'F32': return new Float32Array(buffer);
    case 'F64': return new Float64Array(buffer);
    case 'I32': return new Int32Array(buffer);
    case 'U8': return new Uint8Array(buffer);
    case 'I8': return new Int8Array(buffer);
  }
}

/** Validates and decodes a safetensors buffer; tensor data is copied out of `bytes`. */
export function decodeSafetensors(bytes: Uint8Array): SafetensorsContents {
  assertLittleEndianHost();
  const { entries, metadata, dataStart } = parseHeader(bytes);
  const tensors = new Map<string, SafetensorsEntry>();
  for (const e of entries) {
    const data = typedCopy(e.dtype, bytes.subarray(dataStart + e.begin, dataStart + e.end));
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data });
  }
  return { tensors, metadata };
}

/** Encodes and writes a safetensors file atomically. */
export function writeSafetensorsFile(
  path: string,
  tensors: Iterable<readonly [string, SafetensorsInput]>,
  metadata: Record<string, string> = {},
): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

/** Largest safetensors file readSafetensorsFile accepts by default (2 GiB). */
export const MAX_SAFETENSORS_FILE_BYTES = 2 ** 31;

/**
 * Reads and validates a safetensors file: a regular file of at most `maxBytes`. I/O errors
 * propagate as they are (ENOENT, EACCES).
 */
export function readSafetensorsFile(path: string, maxBytes = MAX_SAFETENSORS_FILE_BYTES): SafetensorsContents {
  let bytes: Uint8Array;
  try {
    bytes = readFileLimited(path, maxBytes);
  } catch (e) {
    if (e instanceof FileLimitError) throw new SafetensorsError(e.message);
    throw e;
  }
  return decodeSafetensors(bytes);
}
