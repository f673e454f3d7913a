/**
 * ONNX protobuf I/O: the official schema (`onnx.proto`, IR version 10) through protobufjs.
 *
 * `decodeModel` never trusts its input. Before protobufjs sees a byte, a wire-level walk over the
 * whole buffer, driven by the schema, checks every tag, wire type, varint and length (in range of
 * its enclosing message), the nesting depth and the number of values, so that the decoder can
 * neither read past a length nor recurse without bound nor allocate more than a small constant
 * times the input size. Tensors whose data lives in an external file are checked (relative path
 * inside the model's folder, offset and length inside the file) and loaded into `rawData` when a
 * `baseDir` is given. Every failure is an `OnnxError` with a `code`.
 *
 * Messages are plain objects with the camelCase field names protobufjs gives (`opType`,
 * `rawData`, `opsetImport`); 64-bit integers are JS numbers (exact up to 2^53, see `toSafeInt`).
 * Decoded `bytes` fields (`rawData`, string attributes) are views into the input buffer.
 */
import { closeSync, openSync, readSync, realpathSync, statSync } from 'node:fs';
import { FileLimitError, readFileLimited } from '../format/files.ts';
import { basename, dirname, isAbsolute, join, posix, relative, resolve, sep, win32 } from 'node:path';
import protobuf from 'protobufjs';
import { writeFileAtomic } from '../format/files.ts';
import { ONNX_PROTO_SCHEMA } from './schema.ts';

// ---------------------------------------------------------------------------------------------
// Errors

/** What went wrong, as a stable code. */
export type OnnxErrorCode =
  | 'io'
  | 'too-large'
  | 'truncated'
  | 'bad-wire'
  | 'too-deep'
  | 'too-many-values'
  | 'decode'
  | 'bad-tensor'
  | 'unsupported-data-type'
  | 'int64-range'
  | 'external-data'
  | 'bad-input'
  | 'bad-model'
  | 'unsupported-op'
  | 'unsupported-opset'
  | 'bad-graph'
  | 'bad-attribute'
  | 'shape';

const MAX_MESSAGE = 1500;

/** Any problem with an ONNX model: malformed bytes, bad tensors, unsupported content. */
export class OnnxError extends Error {
  override name = 'OnnxError';
  readonly code: OnnxErrorCode;
  constructor(code: OnnxErrorCode, message: string, options?: { cause?: unknown }) {
    // Names in messages come from the file: keep messages readable whatever their length.
    super(message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE)}… (${message.length - MAX_MESSAGE} more characters)` : message, options);
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------
// Message types (camelCase, as protobufjs maps the schema's snake_case names)

/** `TensorProto.DataType`. */
export const OnnxDataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  COMPLEX64: 14,
  COMPLEX128: 15,
  BFLOAT16: 16,
  FLOAT8E4M3FN: 17,
  FLOAT8E4M3FNUZ: 18,
  FLOAT8E5M2: 19,
  FLOAT8E5M2FNUZ: 20,
  UINT4: 21,
  INT4: 22,
} as const;
export type OnnxDataTypeName = keyof typeof OnnxDataType;

/** `AttributeProto.AttributeType`. */
export const OnnxAttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
  SPARSE_TENSOR: 11,
  SPARSE_TENSORS: 12,
  TYPE_PROTO: 13,
  TYPE_PROTOS: 14,
} as const;

/** `TensorProto.DataLocation`. */
export const OnnxDataLocation = { DEFAULT: 0, EXTERNAL: 1 } as const;

/** `StringStringEntryProto`. */
export interface OnnxStringStringEntry {
  key?: string;
  value?: string;
}

/** `OperatorSetIdProto`: `domain` '' (or absent) is the default ONNX domain. */
export interface OnnxOperatorSetId {
  domain?: string;
  version?: number;
}

/** `TensorProto`. Data is in exactly one of `rawData`, a typed field, or external data. */
export interface OnnxTensor {
  dims?: number[];
  dataType?: number;
  segment?: { begin?: number; end?: number };
  floatData?: number[];
  int32Data?: number[];
  stringData?: Uint8Array[];
  int64Data?: number[];
  name?: string;
  docString?: string;
  rawData?: Uint8Array;
  externalData?: OnnxStringStringEntry[];
  dataLocation?: number;
  doubleData?: number[];
  uint64Data?: number[];
  metadataProps?: OnnxStringStringEntry[];
}

/** `SparseTensorProto`. */
export interface OnnxSparseTensor {
  values?: OnnxTensor;
  indices?: OnnxTensor;
  dims?: number[];
}

/** `TensorShapeProto.Dimension`: a fixed size or a symbolic name. */
export interface OnnxDimension {
  dimValue?: number;
  dimParam?: string;
  denotation?: string;
}

/** `TensorShapeProto`. */
export interface OnnxTensorShape {
  dim?: OnnxDimension[];
}

/** `TypeProto` (one of its value fields is set). */
export interface OnnxType {
  tensorType?: { elemType?: number; shape?: OnnxTensorShape };
  sequenceType?: { elemType?: OnnxType };
  mapType?: { keyType?: number; valueType?: OnnxType };
  optionalType?: { elemType?: OnnxType };
  sparseTensorType?: { elemType?: number; shape?: OnnxTensorShape };
  denotation?: string;
}

/** `ValueInfoProto`. */
export interface OnnxValueInfo {
  name?: string;
  type?: OnnxType;
  docString?: string;
  metadataProps?: OnnxStringStringEntry[];
}

/** `AttributeProto`: `type` says which value field is in use. */
export interface OnnxAttribute {
  name?: string;
  refAttrName?: string;
  docString?: string;
  type?: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: OnnxTensor;
  g?: OnnxGraph;
  sparseTensor?: OnnxSparseTensor;
  tp?: OnnxType;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  tensors?: OnnxTensor[];
  graphs?: OnnxGraph[];
  sparseTensors?: OnnxSparseTensor[];
  typeProtos?: OnnxType[];
}

/** `NodeProto`. */
export interface OnnxNode {
  input?: string[];
  output?: string[];
  name?: string;
  opType?: string;
  domain?: string;
  overload?: string;
  attribute?: OnnxAttribute[];
  docString?: string;
  metadataProps?: OnnxStringStringEntry[];
}

/** `TensorAnnotation`. */
export interface OnnxTensorAnnotation {
  tensorName?: string;
  quantParameterTensorNames?: OnnxStringStringEntry[];
}

/** `GraphProto`. */
export interface OnnxGraph {
  node?: OnnxNode[];
  name?: string;
  initializer?: OnnxTensor[];
  sparseInitializer?: OnnxSparseTensor[];
  docString?: string;
  input?: OnnxValueInfo[];
  output?: OnnxValueInfo[];
  valueInfo?: OnnxValueInfo[];
  quantizationAnnotation?: OnnxTensorAnnotation[];
  metadataProps?: OnnxStringStringEntry[];
}

/** `TrainingInfoProto`. */
export interface OnnxTrainingInfo {
  initialization?: OnnxGraph;
  algorithm?: OnnxGraph;
  initializationBinding?: OnnxStringStringEntry[];
  updateBinding?: OnnxStringStringEntry[];
}

/** `FunctionProto`. */
export interface OnnxFunction {
  name?: string;
  input?: string[];
  output?: string[];
  attribute?: string[];
  attributeProto?: OnnxAttribute[];
  node?: OnnxNode[];
  docString?: string;
  opsetImport?: OnnxOperatorSetId[];
  domain?: string;
  overload?: string;
  valueInfo?: OnnxValueInfo[];
  metadataProps?: OnnxStringStringEntry[];
}

/** `ModelProto`: the top-level message of a .onnx file. */
export interface OnnxModel {
  irVersion?: number;
  opsetImport?: OnnxOperatorSetId[];
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: number;
  docString?: string;
  graph?: OnnxGraph;
  metadataProps?: OnnxStringStringEntry[];
  trainingInfo?: OnnxTrainingInfo[];
  functions?: OnnxFunction[];
}

// ---------------------------------------------------------------------------------------------
// Schema

let schemaRoot: protobuf.Root | undefined;

/** The parsed official schema (parsed once, from the text in schema.ts). */
export function onnxSchema(): protobuf.Root {
  if (!schemaRoot) {
    schemaRoot = protobuf.parse(ONNX_PROTO_SCHEMA, { keepCase: false }).root;
    schemaRoot.resolveAll();
  }
  return schemaRoot;
}

function modelType(): protobuf.Type {
  return onnxSchema().lookupType('onnx.ModelProto');
}

// ---------------------------------------------------------------------------------------------
// Limits

/** Default largest model file (protobuf's own limit): 2 GiB - 1. */
export const DEFAULT_MAX_ONNX_BYTES = 2 ** 31 - 1;
/** Deepest message nesting accepted (graphs inside attributes inside nodes inside graphs...). */
export const MAX_ONNX_DEPTH = 64;
/** Largest element count of one tensor. */
export const MAX_ONNX_ELEMENTS = 2 ** 31;
/** Largest tensor rank. */
export const MAX_ONNX_RANK = 32;

// ---------------------------------------------------------------------------------------------
// Wire-level validation

const VARINT = 0;
const FIXED64 = 1;
const LENGTH = 2;
const FIXED32 = 5;

/** Wire type of each scalar protobuf type. */
const SCALAR_WIRE: Record<string, number> = {
  int32: VARINT, uint32: VARINT, sint32: VARINT, int64: VARINT, uint64: VARINT, sint64: VARINT, bool: VARINT,
  fixed64: FIXED64, sfixed64: FIXED64, double: FIXED64,
  fixed32: FIXED32, sfixed32: FIXED32, float: FIXED32,
  string: LENGTH, bytes: LENGTH,
};
/** Scalar types protobufjs reads as 32-bit varints (it assumes 1-5 or exactly 10 bytes). */
const VARINT32 = new Set(['int32', 'uint32', 'sint32', 'enum']);

interface FieldRule {
  /** Message type of a message field. */
  readonly message?: protobuf.Type;
  /** Scalar type name ('enum' for enums). */
  readonly scalar?: string;
  readonly repeated: boolean;
}

const rulesCache = new Map<protobuf.Type, Map<number, FieldRule>>();

function rulesOf(type: protobuf.Type): Map<number, FieldRule> {
  let rules = rulesCache.get(type);
  if (!rules) {
    rules = new Map();
    for (const field of type.fieldsArray) {
      field.resolve();
      const resolved = field.resolvedType;
      if (resolved instanceof protobuf.Type) rules.set(field.id, { message: resolved, repeated: field.repeated });
      else rules.set(field.id, { scalar: resolved instanceof protobuf.Enum ? 'enum' : field.type, repeated: field.repeated });
    }
    rulesCache.set(type, rules);
  }
  return rules;
}

class WireCursor {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  fail(code: OnnxErrorCode, what: string): never {
    throw new OnnxError(code, `invalid ONNX protobuf at byte ${this.pos}: ${what}`);
  }

  /** Reads a varint; returns its byte length, value in `lastValue` (exact below 2^53). */
  varint(end: number): number {
    const start = this.pos;
    let value = 0;
    let scale = 1;
    for (;;) {
      if (this.pos >= end) this.fail('truncated', 'varint runs past the end of its message');
      const byte = this.buf[this.pos++]!;
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (byte < 0x80) break;
      if (this.pos - start >= 10) this.fail('bad-wire', 'varint longer than 10 bytes');
    }
    const length = this.pos - start;
    if (length === 10 && this.buf[this.pos - 1]! > 1) this.fail('bad-wire', 'varint overflows 64 bits');
    this.lastValue = value;
    return length;
  }
  lastValue = 0;

  /** A tag or a length: at most 5 bytes and below 2^31. */
  small(end: number, what: string): number {
    const bytes = this.varint(end);
    if (bytes > 5 || this.lastValue >= 2 ** 31) this.fail('bad-wire', `${what} out of range`);
    return this.lastValue;
  }

  scalarVarint(end: number, scalar: string): void {
    const bytes = this.varint(end);
    if (VARINT32.has(scalar) && bytes > 5 && bytes < 10) this.fail('bad-wire', `${bytes}-byte varint for a 32-bit field`);
  }
}

/**
 * Walks the whole buffer as an instance of `root` without building anything. Throws OnnxError on
 * any malformation protobufjs might misread or choke on.
 */
function validateWire(bytes: Uint8Array, root: protobuf.Type): void {
  const cur = new WireCursor(bytes);
  // Each count costs at least one byte of input, so values and messages stay below bytes.length.
  const stack: { type: protobuf.Type; end: number }[] = [{ type: root, end: bytes.length }];
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    if (cur.pos === frame.end) {
      stack.pop();
      continue;
    }
    const tag = cur.small(frame.end, 'tag');
    const id = tag >>> 3;
    const wire = tag & 7;
    if (id === 0) cur.fail('bad-wire', 'field number 0');
    const rule = rulesOf(frame.type).get(id);
    if (wire === 3 || wire === 4) cur.fail('bad-wire', `group wire type ${wire} (field ${id})`);
    if (wire !== VARINT && wire !== FIXED64 && wire !== LENGTH && wire !== FIXED32) cur.fail('bad-wire', `invalid wire type ${wire}`);
    if (!rule) {
      // Unknown field: skip it by its wire type.
      if (wire === VARINT) cur.varint(frame.end);
      else skipBytes(cur, frame.end, wire === FIXED64 ? 8 : wire === FIXED32 ? 4 : cur.small(frame.end, 'length'));
      continue;
    }
    if (rule.message) {
      if (wire !== LENGTH) cur.fail('bad-wire', `message field ${frame.type.name}.${id} with wire type ${wire}`);
      const length = cur.small(frame.end, 'length');
      if (length > frame.end - cur.pos) cur.fail('truncated', `message of ${length} bytes runs past its parent`);
      if (stack.length >= MAX_ONNX_DEPTH) cur.fail('too-deep', `messages nested deeper than ${MAX_ONNX_DEPTH}`);
      stack.push({ type: rule.message, end: cur.pos + length });
      continue;
    }
    const scalar = rule.scalar!;
    const expected = scalar === 'enum' ? VARINT : SCALAR_WIRE[scalar];
    if (expected === undefined) cur.fail('bad-wire', `unknown scalar type ${scalar}`);
    if (wire === expected) {
      if (wire === VARINT) cur.scalarVarint(frame.end, scalar);
      else skipBytes(cur, frame.end, wire === FIXED64 ? 8 : wire === FIXED32 ? 4 : cur.small(frame.end, 'length'));
      continue;
    }
    if (wire === LENGTH && rule.repeated && expected !== LENGTH) {
      // Packed repeated scalars: whole values exactly filling the length.
      const length = cur.small(frame.end, 'length');
      if (length > frame.end - cur.pos) cur.fail('truncated', `packed field of ${length} bytes runs past its message`);
      const end = cur.pos + length;
      if (expected === VARINT) {
        while (cur.pos < end) cur.scalarVarint(end, scalar);
      } else {
        const size = expected === FIXED64 ? 8 : 4;
        if (length % size !== 0) cur.fail('bad-wire', `packed ${scalar} field of ${length} bytes`);
        cur.pos = end;
      }
      continue;
    }
    cur.fail('bad-wire', `field ${frame.type.name}.${id} (${scalar}) with wire type ${wire}`);
  }
}

function skipBytes(cur: WireCursor, end: number, n: number): void {
  if (n > end - cur.pos) cur.fail('truncated', `${n} bytes run past the end of their message`);
  cur.pos += n;
}

// ---------------------------------------------------------------------------------------------
// Decode / encode

/** Options of `decodeModel`. */
export interface DecodeOptions {
  /**
   * Folder that external-data locations are relative to (the model file's folder). With it,
   * external tensors are validated and loaded into `rawData`; without it they are only checked
   * for a safe relative location and stay external.
   */
  baseDir?: string;
  /** Largest accepted model size in bytes (default 2 GiB - 1). */
  maxBytes?: number;
  /** Largest total external data loaded, in bytes (default 16 GiB). */
  maxExternalBytes?: number;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, enums: Number, arrays: true, defaults: false };

/**
 * Decodes a serialized `ModelProto`. The buffer is validated first at the wire level (see the
 * module comment); every tensor's external-data reference is validated and, with `baseDir`,
 * loaded. Throws OnnxError.
 */
export function decodeModel(bytes: Uint8Array, opts: DecodeOptions = {}): OnnxModel {
  if (!(bytes instanceof Uint8Array)) throw new OnnxError('bad-input', 'decodeModel expects a Uint8Array');
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_ONNX_BYTES;
  if (bytes.length > maxBytes) throw new OnnxError('too-large', `ONNX model of ${bytes.length} bytes exceeds the limit of ${maxBytes}`);
  const type = modelType();
  // A plain view (not a Node Buffer) so that bytes fields decode to plain Uint8Array views.
  const plain = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  validateWire(plain, type);
  let model: OnnxModel;
  try {
    const message = type.decode(plain);
    model = type.toObject(message, TO_OBJECT) as OnnxModel;
  } catch (e) {
    throw new OnnxError('decode', `cannot decode ONNX model: ${e instanceof Error ? e.message : String(e)}`);
  }
  resolveExternalData(model, opts);
  return model;
}

/** Encodes a model as a serialized `ModelProto`. Throws OnnxError('bad-input') on ill-typed fields. */
export function encodeModel(model: OnnxModel): Uint8Array {
  const type = modelType();
  const problem = type.verify(model);
  if (problem) throw new OnnxError('bad-input', `cannot encode ONNX model: ${problem}`);
  try {
    const out = type.encode(type.fromObject(model)).finish();
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch (e) {
    throw new OnnxError('bad-input', `cannot encode ONNX model: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Options of `readOnnx`. */
export type ReadOnnxOptions = Omit<DecodeOptions, 'baseDir'>;

/** Reads and decodes a .onnx file; external data is resolved next to it. Throws OnnxError. */
export function readOnnx(path: string, opts: ReadOnnxOptions = {}): OnnxModel {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_ONNX_BYTES;
  let bytes: Uint8Array;
  try {
    bytes = readFileLimited(path, maxBytes);
  } catch (e) {
    if (e instanceof FileLimitError) throw new OnnxError(e.code === 'too-large' ? 'too-large' : 'io', `${path}: ${e.message}`);
    throw new OnnxError('io', `cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return decodeModel(bytes, { ...opts, baseDir: dirname(resolve(path)) });
}

/** Options of `writeOnnx`. */
export interface WriteOnnxOptions {
  /**
   * Store tensors whose raw data has at least `threshold` bytes (default 1024) in one external
   * file `location` (default `<model file name>.data`) next to the model, each at an offset
   * aligned to `align` bytes (default 4096, as the ONNX IR recommends for memory mapping).
   */
  externalData?: { location?: string; threshold?: number; align?: number };
}

/**
 * Writes a model to `path` atomically (temporary file + rename); with `externalData` the large
 * tensors go to a side file first (also atomically). Returns the model bytes written.
 */
export function writeOnnx(path: string, model: OnnxModel, opts: WriteOnnxOptions = {}): Uint8Array {
  let toEncode = model;
  if (opts.externalData) {
    const location = opts.externalData.location ?? `${basename(path)}.data`;
    checkLocationSyntax(location);
    const { model: moved, data } = moveToExternal(model, location, opts.externalData.threshold ?? 1024, opts.externalData.align ?? 4096);
    writeFileAtomic(join(dirname(path), location), data);
    toEncode = moved;
  }
  const bytes = encodeModel(toEncode);
  writeFileAtomic(path, bytes);
  return bytes;
}

function moveToExternal(model: OnnxModel, location: string, threshold: number, align: number): { model: OnnxModel; data: Uint8Array } {
  const chunks: { offset: number; bytes: Uint8Array }[] = [];
  let size = 0;
  const initializer = (model.graph?.initializer ?? []).map((t) => {
    if (!t.rawData || t.rawData.length < threshold || t.dataLocation === OnnxDataLocation.EXTERNAL) return t;
    const offset = Math.ceil(size / align) * align;
    chunks.push({ offset, bytes: t.rawData });
    size = offset + t.rawData.length;
    const { rawData: _moved, ...rest } = t;
    return {
      ...rest,
      dataLocation: OnnxDataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(t.rawData.length) },
      ],
    };
  });
  const data = new Uint8Array(size);
  for (const c of chunks) data.set(c.bytes, c.offset);
  return { model: model.graph ? { ...model, graph: { ...model.graph, initializer } } : model, data };
}

// ---------------------------------------------------------------------------------------------
// External data

/** Every TensorProto of a model (initializers, attribute tensors, sparse parts, subgraphs, functions). */
export function forEachTensor(model: OnnxModel, visit: (t: OnnxTensor) => void): void {
  const sparse = (s: OnnxSparseTensor): void => {
    if (s.values) visit(s.values);
    if (s.indices) visit(s.indices);
  };
  const attribute = (a: OnnxAttribute, depth: number): void => {
    if (a.t) visit(a.t);
    for (const t of a.tensors ?? []) visit(t);
    if (a.sparseTensor) sparse(a.sparseTensor);
    for (const s of a.sparseTensors ?? []) sparse(s);
    if (a.g) graph(a.g, depth + 1);
    for (const g of a.graphs ?? []) graph(g, depth + 1);
  };
  const graph = (g: OnnxGraph, depth: number): void => {
    if (depth > MAX_ONNX_DEPTH) throw new OnnxError('too-deep', 'subgraphs nested too deeply');
    for (const t of g.initializer ?? []) visit(t);
    for (const s of g.sparseInitializer ?? []) sparse(s);
    for (const n of g.node ?? []) for (const a of n.attribute ?? []) attribute(a, depth);
  };
  if (model.graph) graph(model.graph, 0);
  for (const info of model.trainingInfo ?? []) {
    if (info.initialization) graph(info.initialization, 0);
    if (info.algorithm) graph(info.algorithm, 0);
  }
  for (const f of model.functions ?? []) for (const n of f.node ?? []) for (const a of n.attribute ?? []) attribute(a, 0);
}

/** Rejects locations that are empty, absolute, or that leave the model's folder. */
function checkLocationSyntax(location: string): void {
  if (location.length === 0) throw new OnnxError('external-data', 'external data location is empty');
  if (location.length > 4096) throw new OnnxError('external-data', 'external data location is too long');
  if (location.includes('\0')) throw new OnnxError('external-data', 'external data location contains a NUL byte');
  if (posix.isAbsolute(location) || win32.isAbsolute(location) || /^[a-zA-Z]:/.test(location)) {
    throw new OnnxError('external-data', `external data location ${JSON.stringify(location)} is absolute`);
  }
  const normal = posix.normalize(location.replaceAll('\\', '/'));
  if (normal === '..' || normal.startsWith('../') || normal === '.' || normal.endsWith('/')) {
    throw new OnnxError('external-data', `external data location ${JSON.stringify(location)} is outside the model's folder`);
  }
}

function parseCount(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]{1,16}$/.test(value)) throw new OnnxError('external-data', `external data ${what} ${JSON.stringify(value.slice(0, 40))} is not a non-negative integer`);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new OnnxError('external-data', `external data ${what} ${value} is too large`);
  return n;
}

function readRange(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, out, done, length - done, offset + done);
      if (n === 0) throw new OnnxError('external-data', `${path}: file ended after ${done} of ${length} bytes`);
      done += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

function resolveExternalData(model: OnnxModel, opts: DecodeOptions): void {
  const maxExternal = opts.maxExternalBytes ?? 16 * 2 ** 30;
  let loaded = 0;
  let baseReal: string | undefined;
  forEachTensor(model, (t) => {
    const external = t.dataLocation === OnnxDataLocation.EXTERNAL;
    if (!external) {
      if (t.dataLocation !== undefined && t.dataLocation !== OnnxDataLocation.DEFAULT) {
        throw new OnnxError('bad-tensor', `tensor ${JSON.stringify(t.name ?? '')}: unknown data_location ${t.dataLocation}`);
      }
      return;
    }
    const name = JSON.stringify(t.name ?? '');
    const entries = new Map<string, string>();
    for (const e of t.externalData ?? []) {
      const key = e.key ?? '';
      if (entries.has(key)) throw new OnnxError('external-data', `tensor ${name}: external data key ${JSON.stringify(key)} repeated`);
      entries.set(key, e.value ?? '');
    }
    const location = entries.get('location');
    if (location === undefined) throw new OnnxError('external-data', `tensor ${name}: external data without a location`);
    checkLocationSyntax(location);
    const offset = parseCount(entries.get('offset'), 'offset') ?? 0;
    const length = parseCount(entries.get('length'), 'length');
    if (t.rawData && t.rawData.length > 0) throw new OnnxError('bad-tensor', `tensor ${name}: both raw_data and external data`);
    if (opts.baseDir === undefined) return;
    let file: string;
    try {
      baseReal ??= realpathSync(opts.baseDir);
      file = realpathSync(resolve(baseReal, location));
    } catch (e) {
      throw new OnnxError('external-data', `tensor ${name}: cannot open external data ${JSON.stringify(location)}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const rel = relative(baseReal, file);
    if (rel === '' || rel.startsWith(`..${sep}`) || rel === '..' || isAbsolute(rel)) {
      throw new OnnxError('external-data', `tensor ${name}: external data ${JSON.stringify(location)} resolves outside the model's folder`);
    }
    // stat, not open + fstat: opening a FIFO would wait for a writer.
    let size: number;
    try {
      const st = statSync(file);
      if (!st.isFile()) throw new OnnxError('external-data', `tensor ${name}: external data ${JSON.stringify(location)} is not a regular file`);
      size = st.size;
    } catch (e) {
      if (e instanceof OnnxError) throw e;
      throw new OnnxError('external-data', `tensor ${name}: cannot open external data ${JSON.stringify(location)}: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (offset > size) throw new OnnxError('external-data', `tensor ${name}: external data offset ${offset} beyond the end of ${location} (${size} bytes)`);
    const n = length ?? size - offset;
    if (n > size - offset) throw new OnnxError('external-data', `tensor ${name}: external data [${offset}, ${offset + n}) runs past the end of ${location} (${size} bytes)`);
    loaded += n;
    if (loaded > maxExternal) throw new OnnxError('too-large', `external data exceeds the limit of ${maxExternal} bytes`);
    let data: Uint8Array;
    try {
      data = readRange(file, offset, n);
    } catch (e) {
      if (e instanceof OnnxError) throw e;
      throw new OnnxError('external-data', `tensor ${name}: cannot read external data: ${e instanceof Error ? e.message : String(e)}`);
    }
    t.rawData = data;
    delete t.externalData;
    delete t.dataLocation;
  });
}

// ---------------------------------------------------------------------------------------------
// Tensors <-> typed arrays

/** Decoded element arrays by data type. 64-bit integers become float64 (safe-integer checked). */
export type OnnxArray = Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array;

/** A decoded tensor: data type, validated dims and elements in row-major order. */
export interface OnnxTensorValue {
  readonly dataType: number;
  readonly dims: number[];
  readonly data: OnnxArray;
}

const TYPE_NAMES = new Map<number, string>(Object.entries(OnnxDataType).map(([k, v]) => [v, k]));

/** The name of a data type code ('FLOAT', 'INT4', ... or 'unknown(99)'). */
export function dataTypeName(code: number | undefined): string {
  return TYPE_NAMES.get(code ?? 0) ?? `unknown(${code})`;
}

/** Bits per element stored in raw_data, for the types this module decodes. */
const RAW_BITS = new Map<number, number>([
  [OnnxDataType.FLOAT, 32], [OnnxDataType.DOUBLE, 64], [OnnxDataType.FLOAT16, 16], [OnnxDataType.BFLOAT16, 16],
  [OnnxDataType.INT8, 8], [OnnxDataType.UINT8, 8], [OnnxDataType.BOOL, 8], [OnnxDataType.INT16, 16], [OnnxDataType.UINT16, 16],
  [OnnxDataType.INT32, 32], [OnnxDataType.UINT32, 32], [OnnxDataType.INT64, 64], [OnnxDataType.UINT64, 64],
  [OnnxDataType.INT4, 4], [OnnxDataType.UINT4, 4],
]);

/**
 * Converts a (JSON-ish) 64-bit value to a safe integer. Values beyond ±(2^53 - 1) throw
 * OnnxError('int64-range'), or with `saturate` become ±Number.MAX_SAFE_INTEGER (e.g. for Slice
 * ends of INT64_MAX, which mean "to the end").
 */
export function toSafeInt(value: number, what: string, saturate = false): number {
  if (Number.isSafeInteger(value)) return value;
  if (saturate && !Number.isNaN(value) && Number.isInteger(value)) return value > 0 ? Number.MAX_SAFE_INTEGER : -Number.MAX_SAFE_INTEGER;
  throw new OnnxError('int64-range', `${what}: ${value} is not an integer within ±2^53`);
}

/** Validated dims of a tensor (non-negative safe integers, rank and element count bounded). */
export function tensorDims(t: OnnxTensor): number[] {
  const dims = t.dims ?? [];
  const name = JSON.stringify(t.name ?? '');
  if (dims.length > MAX_ONNX_RANK) throw new OnnxError('bad-tensor', `tensor ${name}: rank ${dims.length} exceeds ${MAX_ONNX_RANK}`);
  let count = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new OnnxError('bad-tensor', `tensor ${name}: invalid dimension ${d}`);
    count *= d;
    if (count > MAX_ONNX_ELEMENTS) throw new OnnxError('bad-tensor', `tensor ${name}: more than ${MAX_ONNX_ELEMENTS} elements`);
  }
  return dims.slice();
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * Decodes a tensor's elements (from raw_data or its typed field) after checking that the data
 * matches its dims exactly. FLOAT16 and BFLOAT16 decode to Float32Array, INT64/UINT64 to
 * Float64Array of safe integers (`saturate` clamps out-of-range values instead of throwing),
 * BOOL to Uint8Array, INT4/UINT4 to one Int8Array/Uint8Array element per value. External data
 * must have been loaded (decode with `baseDir`). Throws OnnxError.
 */
export function tensorValue(t: OnnxTensor, opts: { saturate?: boolean } = {}): OnnxTensorValue {
  const name = JSON.stringify(t.name ?? '');
  const dataType = t.dataType ?? OnnxDataType.UNDEFINED;
  const dims = tensorDims(t);
  const count = dims.reduce((a, b) => a * b, 1);
  const bits = RAW_BITS.get(dataType);
  if (bits === undefined) throw new OnnxError('unsupported-data-type', `tensor ${name}: data type ${dataTypeName(dataType)} is not supported`);
  if (t.dataLocation === OnnxDataLocation.EXTERNAL) throw new OnnxError('external-data', `tensor ${name}: external data not loaded (decode the model with a baseDir)`);
  if (t.segment) throw new OnnxError('bad-tensor', `tensor ${name}: segmented tensors are not supported`);
  const candidates: [string, ArrayLike<unknown> | undefined][] = [
    ['floatData', t.floatData], ['int32Data', t.int32Data], ['int64Data', t.int64Data],
    ['doubleData', t.doubleData], ['uint64Data', t.uint64Data], ['stringData', t.stringData],
  ];
  const typedFields = candidates.filter((c): c is [string, ArrayLike<unknown>] => c[1] !== undefined && c[1].length > 0);
  const raw = t.rawData !== undefined && t.rawData.length > 0 ? t.rawData : undefined;
  if (typedFields.length > 1 || (raw && typedFields.length > 0)) throw new OnnxError('bad-tensor', `tensor ${name}: data stored in more than one field`);
  if (raw) {
    const expected = Math.ceil((count * bits) / 8);
    if (raw.length !== expected) throw new OnnxError('bad-tensor', `tensor ${name}: raw_data has ${raw.length} bytes, ${dimsText(dims)} ${dataTypeName(dataType)} needs ${expected}`);
    return { dataType, dims, data: fromRaw(dataType, raw, count, name, opts.saturate ?? false) };
  }
  const [field, values] = typedFields[0] ?? ['', [] as ArrayLike<unknown>];
  const expectedField = typedFieldOf(dataType);
  const expectedLength = dataType === OnnxDataType.INT4 || dataType === OnnxDataType.UINT4 ? Math.ceil(count / 2) : count;
  if (values.length !== expectedLength) {
    throw new OnnxError('bad-tensor', `tensor ${name}: ${values.length} stored values, ${dimsText(dims)} ${dataTypeName(dataType)} needs ${expectedLength}`);
  }
  if (count === 0) return { dataType, dims, data: emptyArray(dataType) };
  if (field !== expectedField) throw new OnnxError('bad-tensor', `tensor ${name}: ${dataTypeName(dataType)} data in field ${field}`);
  return { dataType, dims, data: fromTyped(dataType, Array.from(values, Number), count, name, opts.saturate ?? false) };
}

function dimsText(dims: number[]): string {
  return `[${dims.join(', ')}]`;
}

function typedFieldOf(dataType: number): string {
  switch (dataType) {
    case OnnxDataType.FLOAT: return 'floatData';
    case OnnxDataType.DOUBLE: return 'doubleData';
    case OnnxDataType.INT64: return 'int64Data';
    case OnnxDataType.UINT32: case OnnxDataType.UINT64: return 'uint64Data';
    default: return 'int32Data';
  }
}

function emptyArray(dataType: number): OnnxArray {
  switch (dataType) {
    case OnnxDataType.DOUBLE: case OnnxDataType.INT64: case OnnxDataType.UINT64: return new Float64Array(0);
    case OnnxDataType.INT8: case OnnxDataType.INT4: return new Int8Array(0);
    case OnnxDataType.UINT8: case OnnxDataType.UINT4: case OnnxDataType.BOOL: return new Uint8Array(0);
    case OnnxDataType.INT16: return new Int16Array(0);
    case OnnxDataType.UINT16: return new Uint16Array(0);
    case OnnxDataType.INT32: return new Int32Array(0);
    case OnnxDataType.UINT32: return new Uint32Array(0);
    default: return new Float32Array(0);
  }
}

function fromRaw(dataType: number, raw: Uint8Array, count: number, name: string, saturate: boolean): OnnxArray {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dataType) {
    case OnnxDataType.FLOAT: {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    }
    case OnnxDataType.DOUBLE: {
      const out = new Float64Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    }
    case OnnxDataType.FLOAT16: {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      return out;
    }
    case OnnxDataType.BFLOAT16: {
      const out = new Float32Array(count);
      const word = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < count; i++) {
        word.setUint32(0, view.getUint16(2 * i, true) << 16, true);
        out[i] = word.getFloat32(0, true);
      }
      return out;
    }
    case OnnxDataType.INT8: return Int8Array.from(raw, (b) => (b << 24) >> 24);
    case OnnxDataType.UINT8: return Uint8Array.from(raw);
    case OnnxDataType.BOOL: return Uint8Array.from(raw, (b) => (b !== 0 ? 1 : 0));
    case OnnxDataType.INT16: {
      const out = new Int16Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt16(2 * i, true);
      return out;
    }
    case OnnxDataType.UINT16: {
      const out = new Uint16Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getUint16(2 * i, true);
      return out;
    }
    case OnnxDataType.INT32: {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt32(4 * i, true);
      return out;
    }
    case OnnxDataType.UINT32: {
      const out = new Uint32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getUint32(4 * i, true);
      return out;
    }
    case OnnxDataType.INT64:
    case OnnxDataType.UINT64: {
      const out = new Float64Array(count);
      const signed = dataType === OnnxDataType.INT64;
      for (let i = 0; i < count; i++) {
        const big = signed ? view.getBigInt64(8 * i, true) : view.getBigUint64(8 * i, true);
        out[i] = toSafeInt(Number(big), `tensor ${name} element ${i}`, saturate);
      }
      return out;
    }
    case OnnxDataType.INT4:
    case OnnxDataType.UINT4:
      return unpackNibbles(dataType === OnnxDataType.INT4, (i) => raw[i]!, count);
    default:
      throw new OnnxError('unsupported-data-type', `tensor ${name}: data type ${dataTypeName(dataType)} is not supported`);
  }
}

function unpackNibbles(signed: boolean, byteAt: (i: number) => number, count: number): Int8Array | Uint8Array {
  const out = signed ? new Int8Array(count) : new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const nibble = (byteAt(i >> 1) >> ((i & 1) * 4)) & 0xf;
    out[i] = signed && nibble >= 8 ? nibble - 16 : nibble;
  }
  return out;
}

function fromTyped(dataType: number, values: number[], count: number, name: string, saturate: boolean): OnnxArray {
  const check = (lo: number, hi: number): void => {
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (!Number.isInteger(v) || v < lo || v > hi) throw new OnnxError('bad-tensor', `tensor ${name}: value ${v} out of range for ${dataTypeName(dataType)}`);
    }
  };
  switch (dataType) {
    case OnnxDataType.FLOAT: return Float32Array.from(values);
    case OnnxDataType.DOUBLE: return Float64Array.from(values);
    case OnnxDataType.FLOAT16: check(0, 0xffff); return Float32Array.from(values, halfToFloat);
    case OnnxDataType.BFLOAT16: {
      check(0, 0xffff);
      const word = new DataView(new ArrayBuffer(4));
      return Float32Array.from(values, (v) => {
        word.setUint32(0, v << 16, true);
        return word.getFloat32(0, true);
      });
    }
    case OnnxDataType.INT8: check(-128, 127); return Int8Array.from(values);
    case OnnxDataType.UINT8: check(0, 255); return Uint8Array.from(values);
    case OnnxDataType.BOOL: check(0, 1); return Uint8Array.from(values);
    case OnnxDataType.INT16: check(-32768, 32767); return Int16Array.from(values);
    case OnnxDataType.UINT16: check(0, 0xffff); return Uint16Array.from(values);
    case OnnxDataType.INT32: return Int32Array.from(values);
    case OnnxDataType.UINT32: check(0, 0xffffffff); return Uint32Array.from(values);
    case OnnxDataType.INT64:
    case OnnxDataType.UINT64:
      return Float64Array.from(values, (v, i) => toSafeInt(v, `tensor ${name} element ${i}`, saturate));
    case OnnxDataType.INT4:
    case OnnxDataType.UINT4:
      check(-128, 255);
      return unpackNibbles(dataType === OnnxDataType.INT4, (i) => values[i]! & 0xff, count);
    default:
      throw new OnnxError('unsupported-data-type', `tensor ${name}: data type ${dataTypeName(dataType)} is not supported`);
  }
}

/** A tensor's elements as float32 (any numeric data type). */
export function tensorToFloat32(t: OnnxTensor): Float32Array {
  const { data } = tensorValue(t);
  return data instanceof Float32Array ? data : Float32Array.from(data);
}

/** A tensor's elements as safe-integer numbers (integer data types; see `tensorValue` for `saturate`). */
export function tensorToInts(t: OnnxTensor, opts: { saturate?: boolean } = {}): number[] {
  const { data, dataType } = tensorValue(t, opts);
  if (data instanceof Float32Array || (data instanceof Float64Array && dataType === OnnxDataType.DOUBLE)) {
    throw new OnnxError('bad-tensor', `tensor ${JSON.stringify(t.name ?? '')}: expected integers, got ${dataTypeName(dataType)}`);
  }
  return Array.from(data);
}

/** Element data accepted by `makeTensor`. */
export type MakeTensorData = ArrayLike<number> | BigInt64Array;

/**
 * Builds a TensorProto with little-endian raw_data: FLOAT/DOUBLE/INT8/UINT8/BOOL/INT16/UINT16/
 * INT32/UINT32/INT64/UINT64 (from numbers or a BigInt64Array), FLOAT16 from float values
 * (rounded to nearest even), INT4/UINT4 packed two per byte (first element in the low nibble).
 * Throws OnnxError('bad-input') when the data does not fit the type or the dims.
 */
export function makeTensor(name: string, dataType: number, dims: readonly number[], values: MakeTensorData): OnnxTensor {
  const t: OnnxTensor = { name, dataType, dims: [...dims] };
  const shapeDims = tensorDimsOrInput(t);
  const count = shapeDims.reduce((a, b) => a * b, 1);
  if (values.length !== count) throw new OnnxError('bad-input', `makeTensor ${name}: ${values.length} values for dims ${dimsText(shapeDims)}`);
  const bits = RAW_BITS.get(dataType);
  if (bits === undefined) throw new OnnxError('bad-input', `makeTensor ${name}: data type ${dataTypeName(dataType)} is not supported`);
  const raw = new Uint8Array(Math.ceil((count * bits) / 8));
  const view = new DataView(raw.buffer);
  const num = (i: number): number => Number(values[i]);
  const intIn = (i: number, lo: number, hi: number): number => {
    const v = num(i);
    if (!Number.isInteger(v) || v < lo || v > hi) throw new OnnxError('bad-input', `makeTensor ${name}: value ${v} does not fit ${dataTypeName(dataType)}`);
    return v;
  };
  for (let i = 0; i < count; i++) {
    switch (dataType) {
      case OnnxDataType.FLOAT: view.setFloat32(4 * i, num(i), true); break;
      case OnnxDataType.DOUBLE: view.setFloat64(8 * i, num(i), true); break;
      case OnnxDataType.FLOAT16: view.setUint16(2 * i, floatToHalf(num(i)), true); break;
      case OnnxDataType.BFLOAT16: throw new OnnxError('bad-input', `makeTensor ${name}: BFLOAT16 is read-only here`);
      case OnnxDataType.INT8: view.setInt8(i, intIn(i, -128, 127)); break;
      case OnnxDataType.UINT8: view.setUint8(i, intIn(i, 0, 255)); break;
      case OnnxDataType.BOOL: view.setUint8(i, intIn(i, 0, 1)); break;
      case OnnxDataType.INT16: view.setInt16(2 * i, intIn(i, -32768, 32767), true); break;
      case OnnxDataType.UINT16: view.setUint16(2 * i, intIn(i, 0, 65535), true); break;
      case OnnxDataType.INT32: view.setInt32(4 * i, intIn(i, -(2 ** 31), 2 ** 31 - 1), true); break;
      case OnnxDataType.UINT32: view.setUint32(4 * i, intIn(i, 0, 2 ** 32 - 1), true); break;
      case OnnxDataType.INT64:
        view.setBigInt64(8 * i, values instanceof BigInt64Array ? values[i]! : BigInt(intIn(i, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)), true);
        break;
      case OnnxDataType.UINT64: view.setBigUint64(8 * i, BigInt(intIn(i, 0, Number.MAX_SAFE_INTEGER)), true); break;
      case OnnxDataType.INT4: raw[i >> 1]! |= (intIn(i, -8, 7) & 0xf) << ((i & 1) * 4); break;
      case OnnxDataType.UINT4: raw[i >> 1]! |= intIn(i, 0, 15) << ((i & 1) * 4); break;
    }
  }
  t.rawData = raw;
  return t;
}

function tensorDimsOrInput(t: OnnxTensor): number[] {
  try {
    return tensorDims(t);
  } catch (e) {
    throw new OnnxError('bad-input', e instanceof Error ? e.message : String(e));
  }
}

/** float32 -> IEEE half bits, round to nearest even. */
function floatToHalf(x: number): number {
  const f = new DataView(new ArrayBuffer(4));
  f.setFloat32(0, x, true);
  const bitsIn = f.getUint32(0, true);
  const sign = (bitsIn >>> 16) & 0x8000;
  const exp = (bitsIn >>> 23) & 0xff;
  let mant = bitsIn & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rem > mid || (rem === mid && half & 1) ? 1 : 0));
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** A float32 tensor from a typed array (convenience over `makeTensor`). */
export function floatTensor(name: string, dims: readonly number[], values: ArrayLike<number>): OnnxTensor {
  return makeTensor(name, OnnxDataType.FLOAT, dims, values);
}

/** Attribute value helpers: the value of an attribute by its `type`. */
export function attributeValue(a: OnnxAttribute): number | number[] | string | string[] | OnnxTensor | OnnxTensor[] | OnnxGraph | OnnxGraph[] | undefined {
  const text = (b: Uint8Array): string => new TextDecoder().decode(b);
  switch (a.type) {
    case OnnxAttributeType.FLOAT: return a.f ?? 0;
    case OnnxAttributeType.INT: return a.i ?? 0;
    case OnnxAttributeType.STRING: return text(a.s ?? new Uint8Array(0));
    case OnnxAttributeType.TENSOR: return a.t;
    case OnnxAttributeType.GRAPH: return a.g;
    case OnnxAttributeType.FLOATS: return a.floats ?? [];
    case OnnxAttributeType.INTS: return a.ints ?? [];
    case OnnxAttributeType.STRINGS: return (a.strings ?? []).map(text);
    case OnnxAttributeType.TENSORS: return a.tensors ?? [];
    case OnnxAttributeType.GRAPHS: return a.graphs ?? [];
    default: return undefined;
  }
}
