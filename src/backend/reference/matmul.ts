import type { Kernel, TypedArray } from '../primitives.ts';
import { broadcastShapes } from '../primitives.ts';
import { alloc, broadcastStrides, offsetMap, raw } from './util.ts';

/**
 * @internal C[m, n] (+)= Σ_k A(m, k)·B(k, n) on one matrix pair.
 * A is (M, K) row-major, or (K, M) when transA; B is (K, N), or (N, K) when transB; C is (M, N).
 */
export function gemm(
  transA: boolean, transB: boolean, m: number, n: number, k: number,
  a: TypedArray, aOff: number, b: TypedArray, bOff: number, c: TypedArray, cOff: number, accumulate = false,
): void {
  const sam = transA ? 1 : k; // stride of A along m
  const sak = transA ? m : 1; // stride of A along k
  if (!accumulate) c.fill(0, cOff, cOff + m * n);
  if (transB) {
    // B(k, n) = b[n*K + k]: dot products, both contiguous in k when A is not transposed.
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        const bRow = bOff + j * k;
        for (let p = 0; p < k; p++) s += a[aOff + i * sam + p * sak]! * b[bRow + p]!;
        c[cOff + i * n + j] += s;
      }
    }
  } else {
    // B(k, n) = b[k*N + n]: i-k-j order streams rows of B and C.
    for (let i = 0; i < m; i++) {
      const cRow = cOff + i * n;
      for (let p = 0; p < k; p++) {
        const av = a[aOff + i * sam + p * sak]!;
        if (av === 0) continue;
        const bRow = bOff + p * n;
        for (let j = 0; j < n; j++) c[cRow + j] += av * b[bRow + j]!;
      }
    }
  }
}

/** (a [...batch, M, K] or [..., K, M], b [...batch, K, N] or [..., N, K]) -> [...batch, M, N]. */
export const matmulKernel: Kernel<'matmul'> = ([a, b], { transA, transB }) => {
  const ra = a!.shape.length;
  const rb = b!.shape.length;
  const m = a!.shape[ra - (transA ? 1 : 2)]!;
  const k = a!.shape[ra - (transA ? 2 : 1)]!;
  const n = b!.shape[rb - (transB ? 2 : 1)]!;
  const batch = broadcastShapes(a!.shape.slice(0, -2), b!.shape.slice(0, -2));
  const shape = [...batch, m, n];
  const out = alloc(a!.dtype, shape);
  const aBatch = a!.shape.slice(0, -2);
  const bBatch = b!.shape.slice(0, -2);
  const aOffsets = offsetMap(batch, broadcastStrides(aBatch, batch).map((s) => s * m * k));
  const bOffsets = offsetMap(batch, broadcastStrides(bBatch, batch).map((s) => s * k * n));
  for (let i = 0; i < aOffsets.length; i++) {
    gemm(transA, transB, m, n, k, a!.data, aOffsets[i]!, b!.data, bOffsets[i]!, out, i * m * n);
  }
  return raw(out, shape, a!.dtype);
};

/**
 * (x [M, K], w [N, K], bias [N]) -> x·wᵀ + bias [M, N]: the product rounded to the dtype, then the
 * bias added, so the specification equals matmul followed by add bit for bit (an ONNX MatMul + Add
 * and an nn.Linear train alike on this backend).
 */
export const linearKernel: Kernel<'linear'> = ([x, w, bias]) => {
  const m = x!.shape[0]!;
  const k = x!.shape[1]!;
  const n = w!.shape[0]!;
  const out = alloc(x!.dtype, [m, n]);
  gemm(false, true, m, n, k, x!.data, 0, w!.data, 0, out, 0);
  const b = bias!.data;
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[i * n + j] += b[j]!;
  return raw(out, [m, n], x!.dtype);
};
