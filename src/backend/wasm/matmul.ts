/**
 * matmul on the wasm backend: operands packed into the GEMM's panels, one `gemm` call per batch
 * entry (./module.ts). @internal
 */
import type { Kernel, RawTensor, TypedArray } from '../primitives.ts';
import { broadcastShapes, matmulSizes } from '../primitives.ts';
import { broadcastStrides, offsetMap } from '../reference/util.ts';
import { packPanels } from './pack.ts';
import type { WasmRuntime } from './runtime.ts';
import { allF32, f32, partRange, partsFor } from './util.ts';

/** Packs panels [lo, hi) of an operand (row panels of A, column panels of B). */
export type PanelPacker = (lo: number, hi: number) => void;

/**
 * gemm(ap, bp, cp, mb, nb, k, ldc) (float indices) split over threads by row or column panels,
 * whichever there are more of: every tile of C is computed by the same calls as on one thread.
 * `pack.a` / `pack.b`, when given, fill panels of A / B first: the operand that is split is packed
 * part by part, so the caller packs its own part while the workers already compute theirs.
 * @internal
 */
export function gemmParallel(
  rt: WasmRuntime, ap: number, bp: number, cp: number, mb: number, nb: number, k: number, ldc: number, accumulate = 0,
  pack: { a?: PanelPacker; b?: PanelPacker } = {},
): void {
  const byRows = mb > nb;
  const parts = partsFor(rt.threads(), mb * nb * 32 * k, byRows ? mb : nb);
  if (parts === 1) {
    pack.a?.(0, mb);
    pack.b?.(0, nb);
    rt.gemm(ap * 4, bp * 4, cp * 4, mb, nb, k, ldc * 4, accumulate);
    return;
  }
  if (byRows) pack.b?.(0, nb);
  else pack.a?.(0, mb);
  // parts 1.. are recorded (and packed) before the workers start; part 0 packs while they run
  rt.parallel(parts, (part, call) => {
    const [lo, hi] = partRange(byRows ? mb : nb, parts, part);
    if (byRows) {
      pack.a?.(lo, hi);
      call(rt.fn.gemm, (ap + lo * 4 * k) * 4, bp * 4, (cp + lo * 4 * ldc) * 4, hi - lo, nb, k, ldc * 4, accumulate);
    } else {
      pack.b?.(lo, hi);
      call(rt.fn.gemm, ap * 4, (bp + lo * 8 * k) * 4, (cp + lo * 8) * 4, mb, hi - lo, k, ldc * 4, accumulate);
    }
  });
}

/**
 * A PanelPacker for packPanels(dst, d, src, off, outer, inner, sOuter, sInner, width): panels
 * [lo, hi) hold outer indices [lo·width, min(hi·width, outer)).
 */
export function panelPacker(
  dst: Float32Array, d: number, src: TypedArray, off: number, outer: number, inner: number, sOuter: number, sInner: number, width: 4 | 8,
): PanelPacker {
  return (lo, hi) => {
    const first = lo * width;
    const count = Math.min(hi * width, outer) - first;
    if (count > 0) packPanels(dst, d + lo * inner * width, src, off + first * sOuter, count, inner, sOuter, sInner, width);
  };
}

/** a [...batch, M, K] (or [..., K, M]), b [...batch, K, N] (or [..., N, K]) -> [...batch, M, N]; batch dims broadcast. */
export function matmulKernel(rt: WasmRuntime): Kernel<'matmul'> {
  return (inputs, { transA, transB }) => {
    const [a, b] = inputs as [RawTensor, RawTensor];
    const sizes = allF32(inputs) ? matmulSizes(a.shape, b.shape, transA, transB) : null;
    if (!sizes) return undefined;
    const { m, k, n, aBatch, bBatch } = sizes;
    let batch: number[];
    try {
      batch = broadcastShapes(aBatch, bBatch);
    } catch {
      return undefined;
    }
    const y = f32([...batch, m, n]);
    if (y.data.length === 0 || k === 0) return y;
    const mb = Math.ceil(m / 4);
    const nb = Math.ceil(n / 8);
    const ldc = nb * 8;
    const arena = rt.arena;
    arena.reset();
    const ap = arena.reserve(mb * 4 * k);
    const bp = arena.reserve(nb * 8 * k);
    const cp = arena.reserve(mb * 4 * ldc);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    const aOffsets = offsetMap(batch, broadcastStrides(aBatch, batch).map((s) => s * m * k));
    const bOffsets = offsetMap(batch, broadcastStrides(bBatch, batch).map((s) => s * k * n));
    let aPacked = -1;
    let bPacked = -1;
    for (let i = 0; i < aOffsets.length; i++) {
      const aOff = aOffsets[i]!;
      const bOff = bOffsets[i]!;
      // A(m, k) = a[m·K + k], or a[k·M + m] when transA; B(k, n) = b[k·N + n], or b[n·K + k] when transB.
      const pack = {
        a: aOff !== aPacked ? panelPacker(mem, ap, a.data, aOff, m, k, transA ? 1 : k, transA ? m : 1, 4) : undefined,
        b: bOff !== bPacked ? panelPacker(mem, bp, b.data, bOff, n, k, transB ? k : 1, transB ? 1 : n, 8) : undefined,
      };
      aPacked = aOff;
      bPacked = bOff;
      gemmParallel(rt, ap, bp, cp, mb, nb, k, ldc, 0, pack);
      const out = y.data;
      const base = i * m * n;
      for (let r = 0; r < m; r++) out.set(mem.subarray(cp + r * ldc, cp + r * ldc + n), base + r * n);
    }
    return y;
  };
}

/**
 * (x [M, K], w [N, K], bias [N]) -> x·wᵀ + bias: the matmul kernel with B transposed, then the bias
 * added to every row. Without it `nn.Linear` (the `linear` primitive) would run on the reference
 * backend under wasm. Same values as the reference within fp32 rounding (the bias is added after
 * the sum instead of before it).
 */
export function linearKernel(rt: WasmRuntime): Kernel<'linear'> {
  const matmul = matmulKernel(rt);
  return (inputs) => {
    const [x, w, bias] = inputs as [RawTensor, RawTensor, RawTensor];
    if (!allF32(inputs) || x.shape.length !== 2 || w.shape.length !== 2 || bias.shape.length !== 1 || bias.shape[0] !== w.shape[0]) return undefined;
    const y = matmul([x, w], { transA: false, transB: true });
    if (!y) return undefined;
    const out = y.data as Float32Array;
    const b = bias.data as Float32Array;
    const n = b.length;
    for (let row = 0; row < out.length; row += n) {
      for (let j = 0; j < n; j++) out[row + j] += b[j]!;
    }
    return y;
  };
}
