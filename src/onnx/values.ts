/**
 * Values that flow through an imported ONNX graph: float data as lowbit `Tensor`s (float32, so
 * autograd sees them), integer and boolean data (shapes, axes, indices) as `IntValue`s holding
 * exact JS numbers. Plus the typed attribute reader the op handlers use.
 */
import { Tensor } from '../tensor/index.ts';
import {
  OnnxAttributeType,
  OnnxDataType,
  OnnxError,
  dataTypeName,
  tensorValue,
  type OnnxAttribute,
  type OnnxNode,
  type OnnxTensor,
} from './proto.ts';

/** Integer (or boolean) data with exact values: int64 shapes, axes, indices. */
export class IntValue {
  readonly shape: readonly number[];
  readonly data: readonly number[];
  constructor(shape: readonly number[], data: readonly number[]) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (size !== data.length) throw new OnnxError('shape', `integer value of shape [${shape.join(', ')}] with ${data.length} elements`);
    this.shape = [...shape];
    this.data = data;
  }

  get size(): number {
    return this.data.length;
  }

  get rank(): number {
    return this.shape.length;
  }
}

/** A value in an imported graph. */
export type OnnxValue = Tensor | IntValue;

/**
 * Element budget of constant folding at import beyond the model's own data: every folded value
 * (other than a Constant's) spends its size from MAX_FOLD_ELEMENTS + the initializers' size.
 */
export const MAX_FOLD_ELEMENTS = 2 ** 16;
/** Largest element count of any value an op handler creates. */
export const MAX_VALUE_ELEMENTS = 2 ** 28;

const FLOAT_TYPES: ReadonlySet<number> = new Set([OnnxDataType.FLOAT, OnnxDataType.DOUBLE, OnnxDataType.FLOAT16, OnnxDataType.BFLOAT16]);
const INT_TYPES: ReadonlySet<number> = new Set([
  OnnxDataType.INT8, OnnxDataType.UINT8, OnnxDataType.INT16, OnnxDataType.UINT16, OnnxDataType.INT32, OnnxDataType.UINT32,
  OnnxDataType.INT64, OnnxDataType.UINT64, OnnxDataType.BOOL, OnnxDataType.INT4, OnnxDataType.UINT4,
]);

/** True for the ONNX data types that become float Tensors. */
export function isFloatType(dataType: number): boolean {
  return FLOAT_TYPES.has(dataType);
}

/** True for the ONNX data types that become IntValues. */
export function isIntType(dataType: number): boolean {
  return INT_TYPES.has(dataType);
}

/** A TensorProto as a graph value (float types -> float32 Tensor, integer types -> IntValue). */
export function valueFromTensor(t: OnnxTensor): OnnxValue {
  const dataType = t.dataType ?? OnnxDataType.UNDEFINED;
  if (!isFloatType(dataType) && !isIntType(dataType)) {
    throw new OnnxError('unsupported-data-type', `tensor ${JSON.stringify(t.name ?? '')}: data type ${dataTypeName(dataType)} is not supported by the importer`);
  }
  // Slice ends and similar int64 sentinels (INT64_MAX) saturate to ±(2^53 - 1).
  const { dims, data } = tensorValue(t, { saturate: true });
  if (isFloatType(dataType)) return new Tensor(data instanceof Float32Array ? data : Float32Array.from(data), dims);
  return new IntValue(dims, Array.from(data));
}

/** Shape of any value. */
export function shapeOf(v: OnnxValue): readonly number[] {
  return v.shape;
}

/** The value's elements as numbers (float or integer). */
export function numbersOf(v: OnnxValue): number[] {
  return v instanceof IntValue ? [...v.data] : Array.from(v.data);
}

/** Element count check for a shape about to be created. */
export function checkElements(shape: readonly number[], limit: number, what: string): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new OnnxError('shape', `${what}: invalid dimension ${d} in [${shape.join(', ')}]`);
    n *= d;
    if (n > limit) throw new OnnxError('shape', `${what}: [${shape.join(', ')}] has more than ${limit} elements`);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Attributes

type AttrKind = 'float' | 'int' | 'string' | 'tensor' | 'floats' | 'ints' | 'strings';
const KIND_CODE: Record<AttrKind, number> = {
  float: OnnxAttributeType.FLOAT,
  int: OnnxAttributeType.INT,
  string: OnnxAttributeType.STRING,
  tensor: OnnxAttributeType.TENSOR,
  floats: OnnxAttributeType.FLOATS,
  ints: OnnxAttributeType.INTS,
  strings: OnnxAttributeType.STRINGS,
};

/** Typed access to a node's attributes; a wrong type or a repeated name is an OnnxError. */
export class Attributes {
  private readonly byName = new Map<string, OnnxAttribute>();
  constructor(readonly node: OnnxNode, readonly where: string) {
    for (const a of node.attribute ?? []) {
      const name = a.name ?? '';
      if (this.byName.has(name)) throw new OnnxError('bad-attribute', `${where}: attribute '${name}' repeated`);
      if (a.refAttrName) throw new OnnxError('bad-attribute', `${where}: attribute '${name}' refers to a function attribute`);
      this.byName.set(name, a);
    }
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  private get(name: string, kind: AttrKind): OnnxAttribute | undefined {
    const a = this.byName.get(name);
    if (!a) return undefined;
    const code = KIND_CODE[kind];
    // IR version 1 models have no type field: accept it when the value field is the one expected.
    const type = a.type ?? code;
    if (type !== code) throw new OnnxError('bad-attribute', `${this.where}: attribute '${name}' should be ${kind.toUpperCase()}, is type ${type}`);
    return a;
  }

  int(name: string, fallback: number): number {
    const a = this.get(name, 'int');
    if (!a) return fallback;
    const v = a.i ?? 0;
    if (!Number.isSafeInteger(v)) {
      if (Number.isInteger(v)) return v > 0 ? Number.MAX_SAFE_INTEGER : -Number.MAX_SAFE_INTEGER;
      throw new OnnxError('bad-attribute', `${this.where}: attribute '${name}' = ${v}`);
    }
    return v;
  }

  float(name: string, fallback: number): number {
    const a = this.get(name, 'float');
    return a ? (a.f ?? 0) : fallback;
  }

  string(name: string, fallback: string): string {
    const a = this.get(name, 'string');
    return a ? new TextDecoder().decode(a.s ?? new Uint8Array(0)) : fallback;
  }

  ints(name: string): number[] | undefined {
    const a = this.get(name, 'ints');
    if (!a) return undefined;
    return (a.ints ?? []).map((v) => {
      if (Number.isSafeInteger(v)) return v;
      if (Number.isInteger(v)) return v > 0 ? Number.MAX_SAFE_INTEGER : -Number.MAX_SAFE_INTEGER;
      throw new OnnxError('bad-attribute', `${this.where}: attribute '${name}' holds ${v}`);
    });
  }

  floats(name: string): number[] | undefined {
    const a = this.get(name, 'floats');
    return a ? [...(a.floats ?? [])] : undefined;
  }

  strings(name: string): string[] | undefined {
    const a = this.get(name, 'strings');
    return a ? (a.strings ?? []).map((s) => new TextDecoder().decode(s)) : undefined;
  }

  tensor(name: string): OnnxTensor | undefined {
    const a = this.get(name, 'tensor');
    if (!a) return undefined;
    if (!a.t) throw new OnnxError('bad-attribute', `${this.where}: tensor attribute '${name}' has no tensor`);
    return a.t;
  }

  /** Throws when one of `names` is set (attributes this importer does not implement). */
  rejectAny(names: readonly string[], why = 'is not supported'): void {
    for (const n of names) if (this.byName.has(n)) throw new OnnxError('bad-attribute', `${this.where}: attribute '${n}' ${why}`);
  }
}
