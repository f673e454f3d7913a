import type { DType, PrimitiveAttrs, PrimitiveName, RawTensor, TypedArray } from '../backend/primitives.ts';
import { dtypeOf, sizeOf, typedArrayFor } from '../backend/primitives.ts';
import { backward } from '../autograd/engine.ts';
import * as ops from './ops.ts';

/** How a tensor was made: the primitive, its inputs and attributes (the autograd tape entry). */
export interface GradNode {
  readonly op: PrimitiveName;
  readonly inputs: readonly Tensor[];
  readonly attrs: PrimitiveAttrs[PrimitiveName];
}

/**
 * A dense, row-major n-dimensional array with optional gradient tracking.
 * Data lives in a JS TypedArray that kernels (TS or native) read and write in place.
 */
export class Tensor implements RawTensor {
  readonly data: TypedArray;
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** True for parameters and for every result computed from them while grad mode is on. */
  requiresGrad: boolean;
  /** Accumulated gradient of a leaf after `backward()`. */
  grad: Tensor | null = null;
  /** The op that produced this tensor, or null for leaves and tensors made without grad. */
  node: GradNode | null = null;

  constructor(data: TypedArray, shape: readonly number[], requiresGrad = false) {
    if (sizeOf(shape) !== data.length) {
      throw new Error(`data has ${data.length} elements but shape [${shape.join(', ')}] needs ${sizeOf(shape)}`);
    }
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`invalid shape [${shape.join(', ')}]`);
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtypeOf(data);
    this.requiresGrad = requiresGrad;
  }

  get size(): number {
    return this.data.length;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) throw new Error(`item() needs one element, tensor has shape [${this.shape.join(', ')}]`);
    return this.data[0]!;
  }

  toArray(): number[] {
    return Array.from(this.data);
  }

  /** A tensor sharing this data, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape);
  }

  /** A deep copy (no graph). */
  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape);
  }

  /** Marks a leaf as needing gradients (returns this). */
  requiresGrad_(flag = true): this {
    if (this.node) throw new Error('requiresGrad_ applies to leaf tensors only');
    if (flag && this.dtype === 'int32') throw new Error('int32 tensors cannot require gradients');
    this.requiresGrad = flag;
    return this;
  }

  /** Reverse-mode differentiation from this tensor; accumulates into leaves' `.grad`. */
  backward(grad?: Tensor, options: { createGraph?: boolean } = {}): void {
    backward(this, grad, options);
  }

  toString(): string {
    const head = Array.from(this.data.subarray(0, 8), (v) => (Number.isInteger(v) ? String(v) : v.toPrecision(4)));
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, data=[${head.join(', ')}${this.size > 8 ? ', …' : ''}])`;
  }

  // ---- method forms of common ops (see tensor/ops.ts for docs)
  add(other: Tensor | number): Tensor { return ops.add(this, other); }
  sub(other: Tensor | number): Tensor { return ops.sub(this, other); }
  mul(other: Tensor | number): Tensor { return ops.mul(this, other); }
  div(other: Tensor | number): Tensor { return ops.div(this, other); }
  pow(other: Tensor | number): Tensor { return ops.pow(this, other); }
  neg(): Tensor { return ops.neg(this); }
  exp(): Tensor { return ops.exp(this); }
  log(): Tensor { return ops.log(this); }
  sqrt(): Tensor { return ops.sqrt(this); }
  abs(): Tensor { return ops.abs(this); }
  relu(): Tensor { return ops.relu(this); }
  sigmoid(): Tensor { return ops.sigmoid(this); }
  tanh(): Tensor { return ops.tanh(this); }
  matmul(other: Tensor): Tensor { return ops.matmul(this, other); }
  sum(axes?: number | readonly number[], keepDims = false): Tensor { return ops.sum(this, axes, keepDims); }
  mean(axes?: number | readonly number[], keepDims = false): Tensor { return ops.mean(this, axes, keepDims); }
  max(axes?: number | readonly number[], keepDims = false): Tensor { return ops.max(this, axes, keepDims); }
  argmax(axis = -1, keepDims = false): Tensor { return ops.argmax(this, axis, keepDims); }
  reshape(shape: readonly number[]): Tensor { return ops.reshape(this, shape); }
  transpose(perm?: readonly number[]): Tensor { return ops.transpose(this, perm); }
  flatten(startDim = 1): Tensor { return ops.flatten(this, startDim); }
  cast(dtype: DType): Tensor { return ops.cast(this, dtype); }
}

/** Builds a tensor from nested arrays or flat values (float32 unless `dtype` says otherwise). */
export function tensor(values: NestedNumbers | TypedArray, shape?: readonly number[], dtype: DType = 'float32'): Tensor {
  if (ArrayBuffer.isView(values)) {
    return new Tensor(values, shape ?? [values.length]);
  }
  const flat: number[] = [];
  const inferred = flattenNested(values, flat);
  const data = typedArrayFor(dtype, flat.length);
  data.set(flat);
  return new Tensor(data, shape ?? inferred);
}

export type NestedNumbers = number | readonly NestedNumbers[];

function flattenNested(values: NestedNumbers, out: number[]): number[] {
  if (typeof values === 'number') {
    out.push(values);
    return [];
  }
  let inner: number[] | null = null;
  for (const v of values) {
    const s = flattenNested(v, out);
    if (inner && inner.join(',') !== s.join(',')) throw new Error('ragged nested array');
    inner = s;
  }
  return [values.length, ...(inner ?? [])];
}

export function full(shape: readonly number[], value: number, dtype: DType = 'float32'): Tensor {
  const data = typedArrayFor(dtype, sizeOf(shape));
  if (value !== 0) data.fill(value);
  return new Tensor(data, shape);
}

export function zeros(shape: readonly number[], dtype: DType = 'float32'): Tensor {
  return full(shape, 0, dtype);
}

export function ones(shape: readonly number[], dtype: DType = 'float32'): Tensor {
  return full(shape, 1, dtype);
}

export function scalar(value: number, dtype: DType = 'float32'): Tensor {
  return full([], value, dtype);
}

/** [start, start+step, ...) up to `end` (exclusive). */
export function arange(start: number, end?: number, step = 1, dtype: DType = 'float32'): Tensor {
  if (end === undefined) {
    end = start;
    start = 0;
  }
  const n = Math.max(0, Math.ceil((end - start) / step));
  const data = typedArrayFor(dtype, n);
  for (let i = 0; i < n; i++) data[i] = start + i * step;
  return new Tensor(data, [n]);
}
