/**
 * SmartDeal decomposition of a trained weight: W ≈ Ĉ·B per group (layout.ts), Ĉ row-sparse with
 * power-of-two nonzeros, B a dense K × K basis.
 *
 * Alternating minimisation (the paper's SED initialiser, re-derived here), starting from B = I:
 *   1. Ce ← argmin ‖Ce·B − W‖ (least squares, Ce = W·Bᵀ(B·Bᵀ + λI)⁻¹), per group;
 *   2. structured sparsity: the rows of Ce (pieces of K weights) are ranked by the norm of their
 *      reconstruction ‖Ce_r·B‖ over the whole layer and the `sparsity` fraction with the smallest
 *      norm is removed (mask 0);
 *   3. each column j of Ce is scaled by a power of two 2^t so that its largest kept entry is about
 *      2^maxExponent, and row j of B by 2^−t (Ce·B unchanged), so the exponent range is used;
 *   4. Ĉ ← mask ⊙ pow2(Ce) (nearest power of two, exponents clamped to the range), then two
 *      passes of exact coordinate descent per kept row: with the other entries fixed, ‖ĉ·B − w‖²
 *      is a parabola in ĉ_j with vertex t = ĉ_j + ⟨e, B_j⟩/‖B_j‖² (e the row's residual), so the
 *      best power of two for ĉ_j is pow2(t) — each update can only lower the error;
 *   5. B ← argmin ‖Ĉ·B − W‖ (least squares, B = (ĈᵀĈ + λI)⁻¹ĈᵀW), per group.
 * The iterate with the smallest error ‖W − Ĉ·B‖ is kept. With an 8-bit basis, B is then rounded
 * symmetrically per group (scale max|B|/127) and the error reported is that of the rounded basis.
 */
import { makeLayout, isRealRow, weightIndex, type SmartDealLayout } from './layout.ts';
import { pow2Exponent, roundPow2, type Pow2Range } from './pow2.ts';

export interface DecomposeOptions {
  /** Fraction of Ce rows removed (structured sparsity), in [0, 1). */
  readonly sparsity: number;
  readonly range: Pow2Range;
  /** Alternating rounds (default 10). */
  readonly iterations?: number;
  /** 8: basis rounded to int8 per group at the end; 32: float basis (default 32). */
  readonly basisBits?: 8 | 32;
}

/** A decomposed weight (float64 arrays in the layout's shapes). */
export interface Decomposition {
  readonly layout: SmartDealLayout;
  /** Ĉ [G, S, K]: ±2^p where the row is kept, 0 elsewhere. */
  readonly coefficients: Float64Array;
  /** Row mask [G, S]: 1 kept, 0 removed (padding rows are always 0). */
  readonly rowMask: Uint8Array;
  /** B [G, K, K]. */
  readonly basis: Float64Array;
  /** ‖W − Ĉ·B‖_F / ‖W‖_F of the returned factors. */
  readonly relativeError: number;
  /** The same error after each alternating round (before basis rounding). */
  readonly errorHistory: readonly number[];
}

/** Reconstructs W = Ĉ·B (flattened [O, F]) from factors in `layout`. */
export function reconstruct(layout: SmartDealLayout, coefficients: ArrayLike<number>, basis: ArrayLike<number>): Float64Array {
  const { groups, rowsPerGroup: S, basisSize: K } = layout;
  const w = new Float64Array(layout.outChannels * layout.fanIn);
  for (let g = 0; g < groups; g++) {
    for (let s = 0; s < S; s++) {
      for (let k = 0; k < K; k++) {
        const at = weightIndex(layout, g, s, k);
        if (at < 0) continue;
        let v = 0;
        for (let j = 0; j < K; j++) v += coefficients[(g * S + s) * K + j]! * basis[(g * K + j) * K + k]!;
        w[at] = v;
      }
    }
  }
  return w;
}

/** ‖W − Ĉ·B‖_F / ‖W‖_F (0 for W = 0). */
export function relativeError(layout: SmartDealLayout, weight: ArrayLike<number>, coefficients: ArrayLike<number>, basis: ArrayLike<number>): number {
  const w = reconstruct(layout, coefficients, basis);
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) {
    const d = weight[i]! - w[i]!;
    num += d * d;
    den += weight[i]! * weight[i]!;
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

/**
 * Decomposes `weight` (data of a tensor of `weightShape`, OIHW or [O, F]) with basis size K and
 * `rowsPerBasis` Ce rows per basis (see layout.ts); see the file comment for the algorithm.
 */
export function decomposeWeight(
  weight: ArrayLike<number>,
  weightShape: readonly number[],
  basisSize: number,
  options: DecomposeOptions & { rowsPerBasis?: number },
): Decomposition {
  const layout = makeLayout(weightShape, basisSize, options.rowsPerBasis);
  if (weight.length !== layout.outChannels * layout.fanIn) throw new Error(`smartdeal: weight has ${weight.length} values for shape [${weightShape.join(', ')}]`);
  for (let i = 0; i < weight.length; i++) if (!Number.isFinite(weight[i]!)) throw new Error(`smartdeal: weight value ${weight[i]} at ${i} is not finite`);
  const sparsity = options.sparsity;
  if (!(sparsity >= 0 && sparsity < 1)) throw new Error(`smartdeal: sparsity must be in [0, 1), got ${sparsity}`);
  const iterations = options.iterations ?? 10;
  if (!Number.isInteger(iterations) || iterations < 1) throw new Error(`smartdeal: iterations must be a positive integer, got ${iterations}`);
  const { groups: G, rowsPerGroup: S, basisSize: K } = layout;
  const target = groupTargets(layout, weight);

  let basis = new Float64Array(G * K * K);
  for (let g = 0; g < G; g++) for (let j = 0; j < K; j++) basis[(g * K + j) * K + j] = 1;
  let best: { coefficients: Float64Array; rowMask: Uint8Array; basis: Float64Array; error: number } | null = null;
  const errorHistory: number[] = [];
  for (let it = 0; it < iterations; it++) {
    const ce = new Float64Array(G * S * K);
    for (let g = 0; g < G; g++) solveCoefficients(target, basis, ce, g, S, K);
    const rowMask = selectRows(layout, ce, basis, sparsity);
    normalizeColumns(layout, ce, basis, rowMask, options.range);
    const coefficients = new Float64Array(G * S * K);
    for (let g = 0; g < G; g++) {
      for (let s = 0; s < S; s++) {
        if (rowMask[g * S + s] === 0) continue;
        for (let j = 0; j < K; j++) coefficients[(g * S + s) * K + j] = roundPow2(ce[(g * S + s) * K + j]!, options.range);
        refineRow(target, coefficients, basis, g, s, S, K, options.range);
      }
    }
    const nextBasis = basis.slice();
    for (let g = 0; g < G; g++) solveBasis(target, coefficients, nextBasis, g, S, K);
    basis = nextBasis;
    const error = relativeError(layout, weight, coefficients, basis);
    errorHistory.push(error);
    if (best === null || error < best.error) best = { coefficients, rowMask, basis: basis.slice(), error };
  }
  const result = best!;
  let finalBasis = result.basis;
  if ((options.basisBits ?? 32) === 8) finalBasis = roundBasisInt8(layout, finalBasis).dequantized;
  return {
    layout,
    coefficients: result.coefficients,
    rowMask: result.rowMask,
    basis: finalBasis,
    relativeError: relativeError(layout, weight, result.coefficients, finalBasis),
    errorHistory,
  };
}

/** Symmetric int8 rounding of each group's basis: scale_g = max|B_g|/127, codes in [−127, 127]. */
export function roundBasisInt8(layout: SmartDealLayout, basis: ArrayLike<number>): { codes: Int32Array; scales: Float64Array; dequantized: Float64Array } {
  const { groups: G, basisSize: K } = layout;
  const codes = new Int32Array(G * K * K);
  const scales = new Float64Array(G);
  const dequantized = new Float64Array(G * K * K);
  for (let g = 0; g < G; g++) {
    let m = 0;
    for (let i = 0; i < K * K; i++) m = Math.max(m, Math.abs(basis[g * K * K + i]!));
    const scale = m > 0 ? m / 127 : 1;
    scales[g] = scale;
    for (let i = 0; i < K * K; i++) {
      const q = Math.max(-127, Math.min(127, Math.round(basis[g * K * K + i]! / scale)));
      codes[g * K * K + i] = q;
      dequantized[g * K * K + i] = q * scale;
    }
  }
  return { codes, scales, dequantized };
}

/** W per group as [G, S, K] (padding 0). */
function groupTargets(layout: SmartDealLayout, weight: ArrayLike<number>): Float64Array {
  const { groups: G, rowsPerGroup: S, basisSize: K } = layout;
  const t = new Float64Array(G * S * K);
  for (let g = 0; g < G; g++) {
    for (let s = 0; s < S; s++) {
      for (let k = 0; k < K; k++) {
        const at = weightIndex(layout, g, s, k);
        if (at >= 0) t[(g * S + s) * K + k] = weight[at]!;
      }
    }
  }
  return t;
}

/** Ce_g = W_g·Bᵀ(B·Bᵀ + λI)⁻¹ into `ce`. */
function solveCoefficients(target: Float64Array, basis: Float64Array, ce: Float64Array, g: number, S: number, K: number): void {
  // A = B·Bᵀ (K × K), rhs_s = B·w_s (the normal equations of each row, transposed).
  const a = new Float64Array(K * K);
  for (let i = 0; i < K; i++) {
    for (let j = 0; j < K; j++) {
      let v = 0;
      for (let k = 0; k < K; k++) v += basis[(g * K + i) * K + k]! * basis[(g * K + j) * K + k]!;
      a[i * K + j] = v;
    }
  }
  const rhs = new Float64Array(S * K);
  for (let s = 0; s < S; s++) {
    for (let i = 0; i < K; i++) {
      let v = 0;
      for (let k = 0; k < K; k++) v += basis[(g * K + i) * K + k]! * target[(g * S + s) * K + k]!;
      rhs[s * K + i] = v;
    }
  }
  solveSpd(a, rhs, K, S);
  ce.set(rhs, g * S * K);
}

/** B_g = (ĈᵀĈ + λI)⁻¹ĈᵀW_g into `basis` (unchanged when Ĉ_g is all zero). */
function solveBasis(target: Float64Array, coefficients: Float64Array, basis: Float64Array, g: number, S: number, K: number): void {
  const a = new Float64Array(K * K);
  let any = false;
  for (let i = 0; i < K; i++) {
    for (let j = 0; j < K; j++) {
      let v = 0;
      for (let s = 0; s < S; s++) v += coefficients[(g * S + s) * K + i]! * coefficients[(g * S + s) * K + j]!;
      a[i * K + j] = v;
      if (v !== 0) any = true;
    }
  }
  if (!any) return;
  // rhs [K (columns of W), K (rows of B)]: column k of W against Ĉ.
  const rhs = new Float64Array(K * K);
  for (let k = 0; k < K; k++) {
    for (let i = 0; i < K; i++) {
      let v = 0;
      for (let s = 0; s < S; s++) v += coefficients[(g * S + s) * K + i]! * target[(g * S + s) * K + k]!;
      rhs[k * K + i] = v;
    }
  }
  solveSpd(a, rhs, K, K);
  for (let k = 0; k < K; k++) for (let i = 0; i < K; i++) basis[(g * K + i) * K + k] = rhs[k * K + i]!;
}

/**
 * Solves (A + λI)·x = b in place for `count` right-hand sides stored as rows of `rhs` ([count, K]),
 * A symmetric positive semi-definite, λ = 1e-10·trace(A)/K + 1e-300 (Cholesky).
 */
function solveSpd(a: Float64Array, rhs: Float64Array, K: number, count: number): void {
  let trace = 0;
  for (let i = 0; i < K; i++) trace += a[i * K + i]!;
  const lambda = (1e-10 * trace) / K + 1e-300;
  const l = new Float64Array(K * K);
  for (let i = 0; i < K; i++) {
    for (let j = 0; j <= i; j++) {
      let v = a[i * K + j]! + (i === j ? lambda : 0);
      for (let k = 0; k < j; k++) v -= l[i * K + k]! * l[j * K + k]!;
      l[i * K + j] = i === j ? Math.sqrt(Math.max(v, lambda)) : v / l[j * K + j]!;
    }
  }
  for (let c = 0; c < count; c++) {
    const x = rhs.subarray(c * K, (c + 1) * K);
    for (let i = 0; i < K; i++) {
      let v = x[i]!;
      for (let k = 0; k < i; k++) v -= l[i * K + k]! * x[k]!;
      x[i] = v / l[i * K + i]!;
    }
    for (let i = K - 1; i >= 0; i--) {
      let v = x[i]!;
      for (let k = i + 1; k < K; k++) v -= l[k * K + i]! * x[k]!;
      x[i] = v / l[i * K + i]!;
    }
  }
}

/** Two passes of coordinate descent over the power-of-two entries of kept row s of group g (step 4). */
function refineRow(target: Float64Array, coefficients: Float64Array, basis: Float64Array, g: number, s: number, S: number, K: number, range: Pow2Range): void {
  const at = (g * S + s) * K;
  const residual = new Float64Array(K);
  for (let k = 0; k < K; k++) {
    let v = target[at + k]!;
    for (let j = 0; j < K; j++) v -= coefficients[at + j]! * basis[(g * K + j) * K + k]!;
    residual[k] = v;
  }
  for (let pass = 0; pass < 2; pass++) {
    for (let j = 0; j < K; j++) {
      let dot = 0;
      let norm = 0;
      for (let k = 0; k < K; k++) {
        const b = basis[(g * K + j) * K + k]!;
        dot += residual[k]! * b;
        norm += b * b;
      }
      if (!(norm > 0)) continue;
      const old = coefficients[at + j]!;
      const next = roundPow2(old + dot / norm, range);
      if (next === old) continue;
      for (let k = 0; k < K; k++) residual[k]! -= (next - old) * basis[(g * K + j) * K + k]!;
      coefficients[at + j] = next;
    }
  }
}

/** Row mask keeping the ⌈(1 − sparsity)·real rows⌉ rows with the largest ‖Ce_r·B‖ over the layer. */
function selectRows(layout: SmartDealLayout, ce: Float64Array, basis: Float64Array, sparsity: number): Uint8Array {
  const { groups: G, rowsPerGroup: S, basisSize: K } = layout;
  const scored: { index: number; score: number }[] = [];
  for (let g = 0; g < G; g++) {
    for (let s = 0; s < S; s++) {
      if (!isRealRow(layout, g, s)) continue;
      let norm = 0;
      for (let k = 0; k < K; k++) {
        let v = 0;
        for (let j = 0; j < K; j++) v += ce[(g * S + s) * K + j]! * basis[(g * K + j) * K + k]!;
        norm += v * v;
      }
      scored.push({ index: g * S + s, score: norm });
    }
  }
  const keep = Math.ceil((1 - sparsity) * scored.length - 1e-9);
  scored.sort((p, q) => q.score - p.score || p.index - q.index);
  const mask = new Uint8Array(G * S);
  for (let i = 0; i < keep; i++) mask[scored[i]!.index] = 1;
  return mask;
}

/** Scales column j of Ce_g by 2^t and row j of B_g by 2^−t so the largest kept |Ce| rounds to 2^maxExponent. */
function normalizeColumns(layout: SmartDealLayout, ce: Float64Array, basis: Float64Array, rowMask: Uint8Array, range: Pow2Range): void {
  const { groups: G, rowsPerGroup: S, basisSize: K } = layout;
  const wide: Pow2Range = { minExponent: -1074, maxExponent: 1023 };
  for (let g = 0; g < G; g++) {
    for (let j = 0; j < K; j++) {
      let m = 0;
      for (let s = 0; s < S; s++) if (rowMask[g * S + s] === 1) m = Math.max(m, Math.abs(ce[(g * S + s) * K + j]!));
      if (!(m > 0)) continue;
      const t = range.maxExponent - pow2Exponent(m, wide);
      const up = 2 ** t;
      for (let s = 0; s < S; s++) ce[(g * S + s) * K + j]! *= up;
      for (let k = 0; k < K; k++) basis[(g * K + j) * K + k]! /= up;
    }
  }
}
