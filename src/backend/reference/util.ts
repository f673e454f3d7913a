import type { DType, RawTensor, TypedArray } from '../primitives.ts';
import { sizeOf, stridesOf, typedArrayFor } from '../primitives.ts';

/** @internal A RawTensor from a buffer and shape. */
export function raw(data: TypedArray, shape: readonly number[], dtype: DType = dtypeName(data)): RawTensor {
  return { data, shape, dtype };
}

function dtypeName(data: TypedArray): DType {
  return data instanceof Float32Array ? 'float32' : data instanceof Float64Array ? 'float64' : 'int32';
}

/** @internal A new zeroed buffer of `dtype` for `shape`. */
export function alloc(dtype: DType, shape: readonly number[]): TypedArray {
  return typedArrayFor(dtype, sizeOf(shape));
}

/**
 * @internal For every position of `shape` in row-major order, the offset
 * `sum_d index[d] * strides[d]` (strides may be 0 for broadcast or reduced dims).
 */
export function offsetMap(shape: readonly number[], strides: readonly number[]): Int32Array {
  const n = sizeOf(shape);
  const out = new Int32Array(n);
  const rank = shape.length;
  if (n === 0) return out;
  const idx = new Array<number>(rank).fill(0);
  let offset = 0;
  for (let i = 0; i < n; i++) {
    out[i] = offset;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]!++;
      offset += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      offset -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

/** @internal Strides that read `inShape` broadcast to `outShape` (0 on broadcast dims). */
export function broadcastStrides(inShape: readonly number[], outShape: readonly number[]): number[] {
  const inStrides = stridesOf(inShape);
  const lead = outShape.length - inShape.length;
  return outShape.map((_, d) => {
    const k = d - lead;
    if (k < 0) return 0;
    return inShape[k] === 1 ? 0 : inStrides[k]!;
  });
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
