/**
 * The `.lowbit` model file, format version 1 (docs/format.md).
 *
 * A safetensors container (src/format/safetensors.ts) whose `__metadata__` holds
 *   format: "lowbit", version: "1",
 *   graph:    JSON array of nodes `{op: string, name?, bits?, tensors?: string[] | {role: name}}`,
 *   tensors:  JSON object, per tensor `{dtype, shape}` in logical terms (+ packing for packed ones),
 *   metadata: JSON object, free-form (model name, dataset, accuracy, quantization plan).
 * Packed low-bit tensors (int4/uint4/int2/uint2/bits) are stored as 1-D `U8` of exactly their
 * packed byte length; int8 as `I8`, uint8 as `U8`, int32 as `I32`, float32 as `F32`.
 *
 * The reader validates the whole header before it touches tensor data: sizes, a linear scan of
 * every JSON text for nesting depth and duplicate keys (before `JSON.parse`), dtypes, shapes,
 * offsets (in range, non-overlapping, covering the data section contiguously), the byte length
 * of every tensor against its logical shape, the metadata and the graph's tensor references.
 * Every problem is reported as a `LowbitFormatError` with a `code`.
 */
import { FileLimitError, readFileLimited, writeFileAtomic } from './files.ts';
import {
  encodeSafetensors,
  type SafetensorsDType,
  type SafetensorsInput,
} from './safetensors.ts';

/** Logical element types of a .lowbit tensor. `bits` is 1-bit sign data (bit 1 = +1). */
export type LogicalDType = 'int8' | 'uint8' | 'int4' | 'uint4' | 'int2' | 'uint2' | 'bits' | 'int32' | 'float32';

export const LOGICAL_DTYPES: readonly LogicalDType[] = ['int8', 'uint8', 'int4', 'uint4', 'int2', 'uint2', 'bits', 'int32', 'float32'];

/**
 * One tensor: logical dtype and shape, and its stored data. Packed dtypes hold their packed bytes
 * (`packedByteLength(dtype, shape)` of them, see `packLowbitValues`); int8 an Int8Array, uint8
 * a Uint8Array, int32 an Int32Array, float32 a Float32Array, each of `product(shape)` elements.
 */
export interface LowbitTensor {
  readonly dtype: LogicalDType;
  readonly shape: readonly number[];
  readonly data: Uint8Array | Int8Array | Int32Array | Float32Array;
}

/** A graph node. Opaque to the format except `op`, and `tensors` whose names must exist. */
export interface LowbitNode {
  readonly op: string;
  /** Tensor names the node uses: a list, or an object role → name (`{weight: 'fc1.w'}`). */
  readonly tensors?: readonly string[] | Readonly<Record<string, string>>;
  readonly [field: string]: unknown;
}

/** What a .lowbit file holds. */
export interface LowbitModel {
  readonly graph: readonly LowbitNode[];
  /** Tensors by name, in the order they are listed in the `tensors` metadata. */
  readonly tensors: Readonly<Record<string, LowbitTensor>>;
  /** Free-form JSON object: model name, dataset, accuracy, quantization plan... */
  readonly metadata?: Readonly<Record<string, unknown>>;
}

/**
 * What `encodeLowbit` / `writeLowbit` take: as `LowbitModel`, with the graph and metadata typed
 * loosely (any node objects, e.g. the runtime's own node interfaces); they are checked at run time
 * (every node a JSON object with a string `op` and existing `tensors`).
 */
export interface LowbitModelInput {
  readonly graph: readonly object[];
  readonly tensors: Readonly<Record<string, LowbitTensor>>;
  readonly metadata?: object;
}

export type LowbitErrorCode =
  | 'truncated'
  | 'file-too-large'
  | 'header-too-large'
  | 'bad-utf8'
  | 'bad-json'
  | 'json-too-deep'
  | 'duplicate-key'
  | 'bad-header'
  | 'bad-dtype'
  | 'bad-shape'
  | 'bad-offsets'
  | 'size-mismatch'
  | 'bad-metadata'
  | 'unsupported-version'
  | 'bad-graph'
  | 'missing-tensor'
  | 'bad-input';

/** Anything malformed in a .lowbit buffer or file (or, with code `bad-input`, in what is written). */
export class LowbitFormatError extends Error {
  override name = 'LowbitFormatError';
  readonly code: LowbitErrorCode;
  constructor(code: LowbitErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export const LOWBIT_FORMAT = 'lowbit';
export const LOWBIT_VERSION = '1';
/** Largest JSON header accepted (and written). */
export const MAX_LOWBIT_HEADER_BYTES = 16 * 1024 * 1024;
/** Deepest JSON nesting accepted in the header and in the JSON strings of `__metadata__`. */
export const MAX_JSON_DEPTH = 64;
/** Largest element count of one tensor. */
export const MAX_TENSOR_ELEMENTS = 2 ** 31;
export const MAX_RANK = 16;
/** Most tensors in one file (bounds the work an adversarial header can cause). */
export const MAX_TENSORS = 65536;
/** Default `maxBytes` of `readLowbit`: 2 GiB. */
export const DEFAULT_MAX_FILE_BYTES = 2 ** 31;

const METADATA_KEY = '__metadata__';

interface DTypeInfo {
  /** Bits per logical element. */
  readonly bits: number;
  /** On-disk safetensors dtype. */
  readonly stored: SafetensorsDType;
  /** Packed sub-byte dtype (stored as 1-D U8 of the packed length). */
  readonly packed: boolean;
  /** Row padding in bits for packed dtypes: 0 = none (flat, last byte zero-filled), 64 for `bits`. */
  readonly rowPadBits: number;
}

const DTYPES: Readonly<Record<LogicalDType, DTypeInfo>> = {
  int8: { bits: 8, stored: 'I8', packed: false, rowPadBits: 0 },
  uint8: { bits: 8, stored: 'U8', packed: false, rowPadBits: 0 },
  int4: { bits: 4, stored: 'U8', packed: true, rowPadBits: 0 },
  uint4: { bits: 4, stored: 'U8', packed: true, rowPadBits: 0 },
  int2: { bits: 2, stored: 'U8', packed: true, rowPadBits: 0 },
  uint2: { bits: 2, stored: 'U8', packed: true, rowPadBits: 0 },
  bits: { bits: 1, stored: 'U8', packed: true, rowPadBits: 64 },
  int32: { bits: 32, stored: 'I32', packed: false, rowPadBits: 0 },
  float32: { bits: 32, stored: 'F32', packed: false, rowPadBits: 0 },
};

/** The packing rule name written for every packed tensor (version 1 has one). */
export const PACKING_RULE = 'lsb-first';

function isLogicalDType(d: unknown): d is LogicalDType {
  return typeof d === 'string' && Object.hasOwn(DTYPES, d);
}

/** Bits per element of a logical dtype (1 for `bits`). */
export function logicalBits(dtype: LogicalDType): number {
  return DTYPES[dtype].bits;
}

/** Rows and columns of a `bits` tensor: rows = shape[0], cols = product(shape[1..]); rank 0 is 1×1, rank 1 is 1×n. */
export function bitRowsCols(shape: readonly number[]): { rows: number; cols: number } {
  if (shape.length === 0) return { rows: 1, cols: 1 };
  if (shape.length === 1) return { rows: 1, cols: shape[0]! };
  return { rows: shape[0]!, cols: shape.slice(1).reduce((p, d) => p * d, 1) };
}

/**
 * Bytes a tensor occupies on disk: int4/uint4 ceil(n/2), int2/uint2 ceil(n/4),
 * bits rows·ceil(cols/64)·8, others n·itemsize. `shape` must already be validated.
 */
export function packedByteLength(dtype: LogicalDType, shape: readonly number[]): number {
  const n = shape.reduce((p, d) => p * d, 1);
  switch (dtype) {
    case 'int4':
    case 'uint4':
      return Math.ceil(n / 2);
    case 'int2':
    case 'uint2':
      return Math.ceil(n / 4);
    case 'bits': {
      if (n === 0) return 0;
      const { rows, cols } = bitRowsCols(shape);
      return rows * Math.ceil(cols / 64) * 8;
    }
    default:
      return n * (DTYPES[dtype].bits / 8);
  }
}

/** Element count of a stored typed array for the tensor (bytes for packed, elements otherwise). */
function storedLength(dtype: LogicalDType, shape: readonly number[]): number {
  const info = DTYPES[dtype];
  return info.packed || info.bits === 8 ? packedByteLength(dtype, shape) : packedByteLength(dtype, shape) / 4;
}

// ---------------------------------------------------------------------------------------------
// Packing helpers (the rules of DESIGN.md, "Quantization conventions")

/**
 * Packs integer values of a logical dtype into the stored data of a tensor: int4/uint4 two per
 * byte (low nibble first), int2/uint2 four per byte (lowest bits first), bits eight per byte with
 * bit 1 = +1 (value >= 0), each row (shape[0]) padded to 64 bits; int8/uint8/int32/float32 copied
 * into their typed array. Throws `LowbitFormatError('bad-input')` for values out of range.
 */
export function packLowbitValues(dtype: LogicalDType, shape: readonly number[], values: ArrayLike<number>): LowbitTensor {
  if (!isLogicalDType(dtype)) throw new LowbitFormatError('bad-input', `unknown dtype ${JSON.stringify(dtype)}`);
  checkShape(shape, 'values', 'bad-input');
  const n = shape.reduce((p, d) => p * d, 1);
  if (values.length !== n) throw new LowbitFormatError('bad-input', `${values.length} values for shape [${shape.join(', ')}] (${n} elements)`);
  const range = (lo: number, hi: number): void => {
    for (let i = 0; i < n; i++) {
      const v = values[i]!;
      if (!Number.isInteger(v) || v < lo || v > hi) throw new LowbitFormatError('bad-input', `${dtype} value ${v} at ${i} out of range [${lo}, ${hi}]`);
    }
  };
  const s = [...shape];
  switch (dtype) {
    case 'float32':
      return { dtype, shape: s, data: Float32Array.from(values) };
    case 'int32':
      range(-(2 ** 31), 2 ** 31 - 1);
      return { dtype, shape: s, data: Int32Array.from(values) };
    case 'int8':
      range(-128, 127);
      return { dtype, shape: s, data: Int8Array.from(values) };
    case 'uint8':
      range(0, 255);
      return { dtype, shape: s, data: Uint8Array.from(values) };
    case 'bits': {
      const { rows, cols } = bitRowsCols(shape);
      const rowBytes = Math.ceil(cols / 64) * 8;
      const out = new Uint8Array(packedByteLength(dtype, shape));
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const v = values[r * cols + c]!;
          if (Number.isNaN(v)) throw new LowbitFormatError('bad-input', `bits value NaN at ${r * cols + c}`);
          if (v >= 0) out[r * rowBytes + (c >> 3)]! |= 1 << (c & 7);
        }
      }
      return { dtype, shape: s, data: out };
    }
    default: {
      const bits = DTYPES[dtype].bits;
      const signed = dtype.startsWith('int');
      const mask = (1 << bits) - 1;
      range(signed ? -(1 << (bits - 1)) : 0, signed ? (1 << (bits - 1)) - 1 : mask);
      const perByte = 8 / bits;
      const out = new Uint8Array(packedByteLength(dtype, shape));
      for (let i = 0; i < n; i++) out[(i / perByte) | 0]! |= (values[i]! & mask) << ((i % perByte) * bits);
      return { dtype, shape: s, data: out };
    }
  }
}

/** Inverse of `packLowbitValues`: the logical values (±1 for `bits`) as numbers. */
export function unpackLowbitValues(tensor: LowbitTensor): Int32Array | Float32Array {
  const { dtype, shape, data } = tensor;
  const n = shape.reduce((p, d) => p * d, 1);
  switch (dtype) {
    case 'float32':
      return Float32Array.from(data);
    case 'int32':
    case 'int8':
    case 'uint8':
      return Int32Array.from(data);
    case 'bits': {
      const { rows, cols } = bitRowsCols(shape);
      const rowBytes = Math.ceil(cols / 64) * 8;
      const out = new Int32Array(n);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) out[r * cols + c] = (data[r * rowBytes + (c >> 3)]! >> (c & 7)) & 1 ? 1 : -1;
      }
      return out;
    }
    default: {
      const bits = DTYPES[dtype].bits;
      const signed = dtype.startsWith('int');
      const mask = (1 << bits) - 1;
      const perByte = 8 / bits;
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        let v = (data[(i / perByte) | 0]! >> ((i % perByte) * bits)) & mask;
        if (signed && v & (1 << (bits - 1))) v -= 1 << bits;
        out[i] = v;
      }
      return out;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Validation helpers

/** Shape: an array of at most MAX_RANK non-negative safe integers with product ≤ 2^31 (zeros aside). */
function checkShape(shape: unknown, where: string, code: LowbitErrorCode = 'bad-shape'): asserts shape is number[] {
  if (!Array.isArray(shape) || shape.length > MAX_RANK) {
    throw new LowbitFormatError(code, `${where}: shape must be an array of at most ${MAX_RANK} integers, got ${preview(shape)}`);
  }
  let product = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new LowbitFormatError(code, `${where}: shape entries must be non-negative integers, got ${preview(shape)}`);
    if (d > 0) product *= d;
    if (product > MAX_TENSOR_ELEMENTS) throw new LowbitFormatError(code, `${where}: shape ${preview(shape)} has more than 2^31 elements`);
  }
}

function preview(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Linear scan of a JSON text before `JSON.parse`: rejects nesting deeper than MAX_JSON_DEPTH and
 * duplicate keys in any object (JSON.parse would silently keep the last one). Malformed JSON
 * that gets past the scan is left to `JSON.parse`.
 */
function scanJson(text: string, what: string): void {
  const objectKeys: (Set<string> | null)[] = []; // one entry per open container; null for arrays
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    switch (c) {
      case 0x22: { // '"'
        // Skip to the closing quote with indexOf (native speed): a quote preceded by an odd
        // number of backslashes is escaped.
        const start = i;
        let from = i + 1;
        for (;;) {
          const quote = text.indexOf('"', from);
          if (quote < 0) return; // unterminated string: JSON.parse reports it
          let k = quote - 1;
          while (k > start && text.charCodeAt(k) === 0x5c) k--;
          if ((quote - 1 - k) % 2 === 0) {
            i = quote;
            break;
          }
          from = quote + 1;
        }
        if (expectKey) {
          const keys = objectKeys[objectKeys.length - 1];
          let key = text.slice(start + 1, i);
          if (key.includes('\\')) {
            try {
              key = JSON.parse(text.slice(start, i + 1)) as string;
            } catch {
              return; // bad escape: JSON.parse reports it
            }
          }
          if (keys) {
            if (keys.has(key)) throw new LowbitFormatError('duplicate-key', `${what}: duplicate key ${preview(key)}`);
            keys.add(key);
          }
          expectKey = false;
        }
        break;
      }
      case 0x7b: // '{'
      case 0x5b: // '['
        if (objectKeys.length >= MAX_JSON_DEPTH) throw new LowbitFormatError('json-too-deep', `${what}: JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
        objectKeys.push(c === 0x7b ? new Set() : null);
        expectKey = c === 0x7b;
        break;
      case 0x7d: // '}'
      case 0x5d: // ']'
        objectKeys.pop();
        expectKey = false;
        break;
      case 0x2c: // ','
        expectKey = objectKeys.length > 0 && objectKeys[objectKeys.length - 1] !== null;
        break;
      case 0x20:
      case 0x09:
      case 0x0a:
      case 0x0d:
        break;
      default:
        expectKey = false;
    }
  }
}

/** Scans then parses a JSON text; failures are LowbitFormatError. */
function parseJson(text: string, what: string): unknown {
  scanJson(text, what);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new LowbitFormatError('bad-json', `${what} is not valid JSON (${(e as Error).message})`);
  }
}

/** The names a node references (its `tensors` field), validated. */
export function nodeTensorNames(node: LowbitNode, index = 0): string[] {
  const refs = node.tensors;
  if (refs === undefined) return [];
  const names = Array.isArray(refs) ? refs : isPlainObject(refs) ? Object.values(refs) : null;
  if (names === null || !names.every((r) => typeof r === 'string')) {
    throw new LowbitFormatError('bad-graph', `graph node ${index} (${preview(node.op)}): 'tensors' must be a list of names or an object of role → name`);
  }
  return names as string[];
}

/** Checks a graph: an array of objects with a string `op` whose referenced tensors all exist. */
function checkGraph(graph: unknown, hasTensor: (name: string) => boolean, code: LowbitErrorCode = 'bad-graph'): asserts graph is LowbitNode[] {
  if (!Array.isArray(graph)) throw new LowbitFormatError(code, `graph must be a JSON array of nodes, got ${preview(graph)}`);
  graph.forEach((node: unknown, i) => {
    if (!isPlainObject(node)) throw new LowbitFormatError(code, `graph node ${i} must be an object, got ${preview(node)}`);
    if (typeof node.op !== 'string' || node.op === '') throw new LowbitFormatError(code, `graph node ${i} needs a string 'op', got ${preview(node.op)}`);
    if (node.name !== undefined && typeof node.name !== 'string') throw new LowbitFormatError(code, `graph node ${i}: 'name' must be a string`);
    let names: string[];
    try {
      names = nodeTensorNames(node as LowbitNode, i);
    } catch (e) {
      if (e instanceof LowbitFormatError) throw new LowbitFormatError(code, e.message);
      throw e;
    }
    for (const name of names) {
      if (!hasTensor(name)) throw new LowbitFormatError(code === 'bad-graph' ? 'missing-tensor' : code, `graph node ${i} (${node.op}) references tensor ${preview(name)}, which is not in the file`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Logical description of a stored tensor, as written in the `tensors` metadata. */
export interface LowbitTensorMeta {
  dtype: LogicalDType;
  shape: number[];
  packing?: string;
  rowPadBits?: number;
}

function tensorMeta(t: LowbitTensor): LowbitTensorMeta {
  const info = DTYPES[t.dtype];
  const meta: LowbitTensorMeta = { dtype: t.dtype, shape: [...t.shape] };
  if (info.packed) {
    meta.packing = PACKING_RULE;
    meta.rowPadBits = info.rowPadBits;
  }
  return meta;
}

function expectedArray(dtype: LogicalDType): string {
  const stored = DTYPES[dtype].stored;
  return stored === 'I8' ? 'Int8Array' : stored === 'U8' ? 'Uint8Array' : stored === 'I32' ? 'Int32Array' : 'Float32Array';
}

function storedArrayMatches(dtype: LogicalDType, data: unknown): boolean {
  switch (DTYPES[dtype].stored) {
    case 'I8': return data instanceof Int8Array;
    case 'U8': return data instanceof Uint8Array;
    case 'I32': return data instanceof Int32Array;
    default: return data instanceof Float32Array;
  }
}

/**
 * Serialises a model into .lowbit bytes. Tensors with 4-byte elements are laid out first so that
 * they start 4-byte aligned; the `tensors` metadata keeps the order given.
 */
export function encodeLowbit(model: LowbitModelInput): Uint8Array {
  const { graph, tensors, metadata = {} } = model;
  if (!isPlainObject(tensors)) throw new LowbitFormatError('bad-input', 'tensors must be an object of name → tensor');
  if (!isPlainObject(metadata)) throw new LowbitFormatError('bad-input', 'metadata must be a plain object');
  const names = Object.keys(tensors);
  if (names.length > MAX_TENSORS) throw new LowbitFormatError('bad-input', `${names.length} tensors, more than the ${MAX_TENSORS}-tensor limit`);
  const metaTensors: Record<string, LowbitTensorMeta> = {};
  for (const name of names) {
    const t = tensors[name]!;
    const where = `tensor '${name}'`;
    // '__proto__' would be dropped by the safetensors writer's header object; refuse it here.
    if (name === '' || name === METADATA_KEY || name === '__proto__') throw new LowbitFormatError('bad-input', `${where}: invalid tensor name`);
    if (!isPlainObject(t)) throw new LowbitFormatError('bad-input', `${where}: must be {dtype, shape, data}`);
    if (!isLogicalDType(t.dtype)) throw new LowbitFormatError('bad-input', `${where}: unknown dtype ${preview(t.dtype)} (known: ${LOGICAL_DTYPES.join(', ')})`);
    checkShape(t.shape, where, 'bad-input');
    if (!storedArrayMatches(t.dtype, t.data)) throw new LowbitFormatError('bad-input', `${where}: ${t.dtype} data must be a ${expectedArray(t.dtype)}`);
    const want = storedLength(t.dtype, t.shape);
    if (t.data.length !== want) {
      const unit = DTYPES[t.dtype].packed ? 'packed bytes' : 'elements';
      throw new LowbitFormatError('bad-input', `${where}: ${t.dtype} [${t.shape.join(', ')}] needs ${want} ${unit}, got ${t.data.length}`);
    }
    Object.defineProperty(metaTensors, name, { value: tensorMeta(t), enumerable: true, writable: true, configurable: true });
  }
  checkGraph(graph, (name) => Object.hasOwn(tensors, name), 'bad-input');
  const ordered = [...names].sort((a, b) => alignmentRank(tensors[a]!) - alignmentRank(tensors[b]!));
  const entries: [string, SafetensorsInput][] = ordered.map((name) => {
    const t = tensors[name]!;
    const shape = DTYPES[t.dtype].packed ? [t.data.length] : [...t.shape];
    return [name, { shape, data: t.data }];
  });
  let json: Record<string, string>;
  try {
    json = {
      format: LOWBIT_FORMAT,
      version: LOWBIT_VERSION,
      graph: JSON.stringify(graph),
      tensors: JSON.stringify(metaTensors),
      metadata: JSON.stringify(metadata),
    };
  } catch (e) {
    throw new LowbitFormatError('bad-input', `graph or metadata is not JSON-serialisable (${(e as Error).message})`);
  }
  for (const key of ['graph', 'metadata'] as const) {
    const text = json[key];
    if (typeof text !== 'string') throw new LowbitFormatError('bad-input', `${key} is not JSON-serialisable`);
    try {
      scanJson(text, key);
    } catch (e) {
      if (e instanceof LowbitFormatError) throw new LowbitFormatError('bad-input', e.message);
      throw e;
    }
  }
  const bytes = encodeSafetensors(entries, json);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > MAX_LOWBIT_HEADER_BYTES) throw new LowbitFormatError('bad-input', `header of ${headerLength} bytes exceeds the ${MAX_LOWBIT_HEADER_BYTES}-byte limit`);
  return bytes;
}

function alignmentRank(t: LowbitTensor): number {
  return t.data.BYTES_PER_ELEMENT === 4 ? 0 : 1;
}

/** Writes a model to `path` atomically (temp file, fsync, rename); returns the bytes written. */
export function writeLowbit(path: string, model: LowbitModelInput): number {
  const bytes = encodeLowbit(model);
  writeFileAtomic(path, bytes);
  return bytes.length;
}

// ---------------------------------------------------------------------------------------------
// Reading

interface RawEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

const STORED_ITEM: Readonly<Record<string, number>> = { F32: 4, I32: 4, U8: 1, I8: 1 };

/** The header of a .lowbit buffer, fully validated; no tensor data is read. */
export interface LowbitHeader {
  readonly headerBytes: number;
  /** Offset of the data section in the buffer (8 + headerBytes). */
  readonly dataStart: number;
  readonly graph: LowbitNode[];
  /** Per tensor, in metadata order: logical description, stored dtype and byte range in the data section. */
  readonly tensors: Map<string, LowbitStoredTensor>;
  readonly metadata: Record<string, unknown>;
}

/** A tensor of a validated header: its logical description and where its bytes are. */
export interface LowbitStoredTensor extends LowbitTensorMeta {
  readonly stored: SafetensorsDType;
  readonly storedBytes: number;
  /** [begin, end) relative to the data section. */
  readonly dataOffsets: readonly [number, number];
}

/** Validates the header of a .lowbit buffer (everything but the tensor bytes themselves). */
export function parseLowbitHeader(bytes: Uint8Array): LowbitHeader {
  if (!(bytes instanceof Uint8Array)) throw new LowbitFormatError('bad-input', 'expected a Uint8Array');
  if (bytes.length < 8) throw new LowbitFormatError('truncated', `file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const declared = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (declared > BigInt(MAX_LOWBIT_HEADER_BYTES)) throw new LowbitFormatError('header-too-large', `header length ${declared} exceeds the ${MAX_LOWBIT_HEADER_BYTES}-byte limit`);
  if (declared > BigInt(bytes.length - 8)) throw new LowbitFormatError('truncated', `header length ${declared} exceeds the ${bytes.length - 8} bytes after the length field (truncated file?)`);
  const headerBytes = Number(declared);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerBytes));
  } catch {
    throw new LowbitFormatError('bad-utf8', 'header is not valid UTF-8');
  }
  const header = parseJson(text, 'header');
  if (!isPlainObject(header)) throw new LowbitFormatError('bad-header', `header must be a JSON object, got ${preview(header)}`);

  const dataLength = bytes.length - 8 - headerBytes;
  const keyCount = Object.keys(header).length;
  if (keyCount > MAX_TENSORS + 1) throw new LowbitFormatError('bad-header', `header lists ${keyCount} entries, more than the ${MAX_TENSORS}-tensor limit`);
  const raw: RawEntry[] = [];
  let stringMeta: Record<string, unknown> | undefined;
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (!isPlainObject(value)) throw new LowbitFormatError('bad-metadata', `'${METADATA_KEY}' must be an object of strings`);
      stringMeta = value;
      continue;
    }
    raw.push(parseEntry(name, value, dataLength));
  }
  checkCoverage(raw, dataLength);

  // __metadata__
  if (stringMeta === undefined) throw new LowbitFormatError('bad-metadata', `no '${METADATA_KEY}': not a .lowbit file`);
  for (const [k, v] of Object.entries(stringMeta)) {
    if (typeof v !== 'string') throw new LowbitFormatError('bad-metadata', `metadata '${k}' must be a string, got ${typeof v}`);
  }
  const meta = stringMeta as Record<string, string>;
  if (meta.format !== LOWBIT_FORMAT) throw new LowbitFormatError('bad-metadata', `metadata format is ${preview(meta.format)}, expected "${LOWBIT_FORMAT}": not a .lowbit file`);
  if (meta.version !== LOWBIT_VERSION) throw new LowbitFormatError('unsupported-version', `.lowbit version ${preview(meta.version)} is not supported (this reader knows version ${LOWBIT_VERSION})`);
  for (const key of ['graph', 'tensors'] as const) {
    if (typeof meta[key] !== 'string') throw new LowbitFormatError('bad-metadata', `metadata '${key}' is missing`);
  }

  // tensors: logical dtype/shape per stored tensor, checked against the stored bytes
  const logical = parseJson(meta.tensors!, "metadata 'tensors'");
  if (!isPlainObject(logical)) throw new LowbitFormatError('bad-metadata', "metadata 'tensors' must be a JSON object");
  const stored = new Map(raw.map((e) => [e.name, e]));
  const tensors = new Map<string, LowbitStoredTensor>();
  for (const [name, value] of Object.entries(logical)) {
    const entry = stored.get(name);
    if (!entry) throw new LowbitFormatError('bad-metadata', `metadata 'tensors' lists '${name}', which is not stored in the file`);
    tensors.set(name, { ...checkLogical(name, value, entry), stored: entry.dtype, storedBytes: entry.end - entry.begin, dataOffsets: [entry.begin, entry.end] });
  }
  for (const e of raw) {
    if (!tensors.has(e.name)) throw new LowbitFormatError('bad-metadata', `tensor '${e.name}' is stored but has no entry in metadata 'tensors'`);
  }

  const graph = parseJson(meta.graph!, "metadata 'graph'");
  checkGraph(graph, (name) => tensors.has(name));

  let metadata: Record<string, unknown> = {};
  if (meta.metadata !== undefined) {
    const parsed = parseJson(meta.metadata, "metadata 'metadata'");
    if (!isPlainObject(parsed)) throw new LowbitFormatError('bad-metadata', "metadata 'metadata' must be a JSON object");
    metadata = parsed;
  }
  return { headerBytes, dataStart: 8 + headerBytes, graph, tensors, metadata };
}

function parseEntry(name: string, value: unknown, dataLength: number): RawEntry {
  const where = `tensor '${name}'`;
  if (name === '') throw new LowbitFormatError('bad-header', 'empty tensor name');
  if (!isPlainObject(value)) throw new LowbitFormatError('bad-header', `${where}: entry must be an object, got ${preview(value)}`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string' || !Object.hasOwn(STORED_ITEM, dtype)) {
    throw new LowbitFormatError('bad-dtype', `${where}: stored dtype ${preview(dtype)} is not one of ${Object.keys(STORED_ITEM).join(', ')}`);
  }
  checkShape(shape, where);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new LowbitFormatError('bad-offsets', `${where}: data_offsets must be [begin, end] non-negative integers, got ${preview(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > dataLength) throw new LowbitFormatError('bad-offsets', `${where}: data_offsets [${begin}, ${end}] out of range (data section is ${dataLength} bytes)`);
  const count = shape.reduce((p, d) => p * d, 1);
  const need = count * STORED_ITEM[dtype]!;
  if (need !== end - begin) throw new LowbitFormatError('size-mismatch', `${where}: ${end - begin} bytes stored but ${dtype} [${shape.join(', ')}] needs ${need}`);
  return { name, dtype: dtype as SafetensorsDType, shape, begin, end };
}

/** Offsets must not overlap and must cover the data section exactly, as safetensors requires. */
function checkCoverage(entries: RawEntry[], dataLength: number): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let prev: RawEntry | undefined;
  for (const e of sorted) {
    if (e.begin < at) throw new LowbitFormatError('bad-offsets', `tensors '${prev!.name}' and '${e.name}' overlap ([${prev!.begin}, ${prev!.end}) and [${e.begin}, ${e.end}))`);
    if (e.begin > at) throw new LowbitFormatError('bad-offsets', `gap of ${e.begin - at} bytes before tensor '${e.name}' (data must be contiguous)`);
    at = e.end;
    prev = e;
  }
  if (at !== dataLength) throw new LowbitFormatError('bad-offsets', `${dataLength - at} trailing bytes after the last tensor (data must be contiguous)`);
}

function checkLogical(name: string, value: unknown, entry: RawEntry): LowbitTensorMeta {
  const where = `tensor '${name}'`;
  if (!isPlainObject(value)) throw new LowbitFormatError('bad-metadata', `${where}: metadata entry must be an object`);
  const { dtype, shape, packing, rowPadBits } = value;
  if (!isLogicalDType(dtype)) throw new LowbitFormatError('bad-dtype', `${where}: logical dtype ${preview(dtype)} is not one of ${LOGICAL_DTYPES.join(', ')}`);
  checkShape(shape, where);
  const info = DTYPES[dtype];
  if (entry.dtype !== info.stored) throw new LowbitFormatError('bad-dtype', `${where}: ${dtype} must be stored as ${info.stored}, found ${entry.dtype}`);
  const meta: LowbitTensorMeta = { dtype, shape };
  if (info.packed) {
    if (packing !== PACKING_RULE) throw new LowbitFormatError('bad-metadata', `${where}: packing ${preview(packing)} is not "${PACKING_RULE}"`);
    if (rowPadBits !== info.rowPadBits) throw new LowbitFormatError('bad-metadata', `${where}: rowPadBits ${preview(rowPadBits)} must be ${info.rowPadBits} for ${dtype}`);
    if (entry.shape.length !== 1) throw new LowbitFormatError('bad-shape', `${where}: packed ${dtype} must be stored as a 1-D U8 array, found shape [${entry.shape.join(', ')}]`);
    meta.packing = PACKING_RULE;
    meta.rowPadBits = info.rowPadBits;
  } else {
    if (packing !== undefined || rowPadBits !== undefined) throw new LowbitFormatError('bad-metadata', `${where}: ${dtype} is not packed but has packing fields`);
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new LowbitFormatError('bad-shape', `${where}: stored shape [${entry.shape.join(', ')}] differs from logical shape [${shape.join(', ')}]`);
    }
  }
  const need = packedByteLength(dtype, shape);
  const have = entry.end - entry.begin;
  if (have !== need) throw new LowbitFormatError('size-mismatch', `${where}: ${have} bytes stored but ${dtype} [${shape.join(', ')}] packs into ${need}`);
  return meta;
}

/** Options of `readLowbit` / `decodeLowbit`. */
export interface ReadLowbitOptions {
  /** Reject files larger than this (default 2 GiB). */
  readonly maxBytes?: number;
}

/** Validates and decodes .lowbit bytes; tensor data is copied out of `bytes`. */
export function decodeLowbit(bytes: Uint8Array, options: ReadLowbitOptions = {}): LowbitModel {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_FILE_BYTES;
  if (bytes instanceof Uint8Array && bytes.length > maxBytes) throw new LowbitFormatError('file-too-large', `file of ${bytes.length} bytes exceeds maxBytes ${maxBytes}`);
  const header = parseLowbitHeader(bytes);
  const tensors: Record<string, LowbitTensor> = {};
  for (const [name, meta] of header.tensors) {
    const [begin, end] = meta.dataOffsets;
    const data = typedCopy(meta.stored, bytes.subarray(header.dataStart + begin, header.dataStart + end));
    Object.defineProperty(tensors, name, { value: { dtype: meta.dtype, shape: meta.shape, data }, enumerable: true, writable: true, configurable: true });
  }
  return { graph: header.graph, tensors, metadata: header.metadata };
}

/** Copies stored bytes into a fresh (aligned) typed array of the stored dtype. */
function typedCopy(stored: SafetensorsDType, bytes: Uint8Array): LowbitTensor['data'] {
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  switch (stored) {
    case 'F32': return new Float32Array(copy.buffer);
    case 'I32': return new Int32Array(copy.buffer);
    case 'I8': return new Int8Array(copy.buffer);
    default: return copy;
  }
}

/** The bytes of a .lowbit file: a regular file of at most maxBytes (FileLimitError -> LowbitFormatError). */
export function readLowbitBytes(path: string, maxBytes = DEFAULT_MAX_FILE_BYTES): Uint8Array {
  try {
    return readFileLimited(path, maxBytes);
  } catch (e) {
    if (e instanceof FileLimitError) throw new LowbitFormatError(e.code === 'too-large' ? 'file-too-large' : 'bad-input', `${path}: ${e.message}`);
    throw e;
  }
}

/** Reads and validates a .lowbit file (or bytes). I/O errors propagate as they are (ENOENT, EACCES). */
export function readLowbit(file: string | Uint8Array, options: ReadLowbitOptions = {}): LowbitModel {
  if (typeof file !== 'string') return decodeLowbit(file, options);
  const bytes = readLowbitBytes(file, options.maxBytes ?? DEFAULT_MAX_FILE_BYTES);
  try {
    return decodeLowbit(bytes, options);
  } catch (e) {
    if (e instanceof LowbitFormatError) throw new LowbitFormatError(e.code, `${file} is not a valid .lowbit file: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Size report

export interface LowbitTensorSize {
  readonly name: string;
  readonly dtype: LogicalDType;
  readonly shape: readonly number[];
  readonly elements: number;
  /** Bytes stored in the file (packed, with row padding). */
  readonly bytes: number;
  /** elements × bits per element: the information content, no padding. */
  readonly theoreticalBits: number;
}

export interface LowbitSizeReport {
  readonly fileBytes: number;
  readonly headerBytes: number;
  readonly tensors: readonly LowbitTensorSize[];
  readonly totalElements: number;
  readonly tensorBytes: number;
  /** Sum of theoretical bits / 8: the size of a file with no header and no padding. */
  readonly theoreticalBytes: number;
  /** Every element as float32. */
  readonly fp32Bytes: number;
  /** fileBytes − theoreticalBytes: header plus padding. */
  readonly overheadBytes: number;
}

/** Per-tensor and total sizes of a .lowbit file (path or bytes); validates the header only. */
export function lowbitSizeReport(file: string | Uint8Array, options: ReadLowbitOptions = {}): LowbitSizeReport {
  const bytes = typeof file === 'string' ? readLowbitBytes(file, options.maxBytes ?? DEFAULT_MAX_FILE_BYTES) : file;
  const header = parseLowbitHeader(bytes);
  const tensors: LowbitTensorSize[] = [];
  for (const [name, meta] of header.tensors) {
    const elements = meta.shape.reduce((p, d) => p * d, 1);
    tensors.push({ name, dtype: meta.dtype, shape: meta.shape, elements, bytes: meta.storedBytes, theoreticalBits: elements * DTYPES[meta.dtype].bits });
  }
  const totalElements = tensors.reduce((s, t) => s + t.elements, 0);
  const theoreticalBytes = tensors.reduce((s, t) => s + t.theoreticalBits, 0) / 8;
  return {
    fileBytes: bytes.length,
    headerBytes: header.headerBytes,
    tensors,
    totalElements,
    tensorBytes: tensors.reduce((s, t) => s + t.bytes, 0),
    theoreticalBytes,
    fp32Bytes: totalElements * 4,
    overheadBytes: bytes.length - theoreticalBytes,
  };
}
