import { noGrad } from '../../autograd/engine.ts';
import { mul } from '../../tensor/ops.ts';
import { zeros } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import type { QParams } from '../core/qparams.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, channelIndexOf, choiceOption, constant, numberOption, resolveFormat, straightThrough } from './common.ts';

/** Relative tolerance under which learned levels count as a uniform (affine) grid. */
const UNIFORM_TOLERANCE = 1e-6;

/**
 * LQ-Nets learned quantizers (Zhang et al., "LQ-Nets: Learned Quantization for Highly Accurate
 * and Compact Deep Neural Networks", ECCV 2018).
 *
 * A K-bit quantizer (K = bits) has a basis v ∈ R^K (one per output channel for weights, one per
 * tensor for activations) and the 2^K levels {vᵀb : b ∈ {−1, +1}^K} (signed, weights) or
 * b ∈ {0, 1}^K (unsigned, activations). Forward: y = the level nearest to x (encoding).
 * Gradient: straight-through, ∂y/∂x = 1 (`gradient: 'clipped'`: 1 only between the lowest and the
 * highest level). The basis is not trained by SGD: in training mode each forward, after
 * quantizing with the current basis, runs the paper's quantization error minimization (QEM):
 *   1. encode: B = the codes of the nearest levels for all elements of the batch (per channel);
 *   2. v* = argmin_v ‖Bv − x‖² = (BᵀB)⁻¹Bᵀx (K×K normal equations, per channel);
 *   3. v ← m·v + (1 − m)·v* (moving average, m = `basisMomentum`, default 0.9),
 * repeated `qemIterations` times (default 1). Each step cannot increase ‖Q(x) − x‖² on the batch
 * (step 2 is optimal for fixed B, the average is a convex combination, re-encoding is optimal).
 * Initial basis (first batch): v_i = 2^i·max|x|/(2^K − 1) (unsigned: max x), i.e. the uniform grid.
 *
 * Export: 'affine' when the levels are uniform (unsigned only: the signed grid {vᵀb} has no zero
 * level), else 'codebook' with the ascending levels per channel.
 * Spec options: bits (1–8), signed, granularity, basisMomentum, qemIterations, gradient.
 */
export class LqNetQuantizer extends BaseQuantizer {
  /** K×count basis, row c = basis of channel c. */
  readonly basis: Tensor;
  readonly initialized: Tensor;
  readonly basisMomentum: number;
  readonly qemIterations: number;
  readonly gradient: 'ste' | 'clipped';

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { minBits: 1, maxBits: 8 });
    super(spec, format);
    this.basis = this.registerBuffer('basis', zeros([format.count, format.bits]));
    this.initialized = this.registerBuffer('initialized', zeros([1]));
    this.basisMomentum = numberOption(spec, 'basisMomentum', 0.9);
    if (!(this.basisMomentum >= 0 && this.basisMomentum < 1)) throw new Error(`quantizer 'lqnet': basisMomentum must be in [0, 1), got ${this.basisMomentum}`);
    this.qemIterations = numberOption(spec, 'qemIterations', 1);
    this.gradient = choiceOption(spec, 'gradient', ['ste', 'clipped'] as const, 'ste');
  }

  private get bitsK(): number {
    return this.format.bits;
  }

  /** Code j ↦ b_i(j) ∈ {−1, +1} (signed) or {0, 1}: bit i of j. */
  private coefficient(code: number, i: number): number {
    const bit = (code >> i) & 1;
    return this.format.signed ? (bit ? 1 : -1) : bit;
  }

  /** Levels of channel c with their codes, ascending (float64). */
  levelsOf(c: number): { values: Float64Array; codes: Int32Array } {
    const k = this.bitsK;
    const count = 1 << k;
    const pairs: [number, number][] = [];
    for (let j = 0; j < count; j++) {
      let v = 0;
      for (let i = 0; i < k; i++) v += this.coefficient(j, i) * this.basis.data[c * k + i]!;
      pairs.push([v, j]);
    }
    pairs.sort((a, b) => a[0] - b[0]);
    return { values: Float64Array.from(pairs, (p) => p[0]), codes: Int32Array.from(pairs, (p) => p[1]) };
  }

  /** Nearest-level encoding of x: per element the code and the level value (float64). */
  encode(x: Tensor): { codes: Int32Array; values: Float64Array } {
    const idx = channelIndexOf(x.shape, this.format.axis);
    const tables = Array.from({ length: this.format.count }, (_, c) => this.levelsOf(c));
    const codes = new Int32Array(x.size);
    const values = new Float64Array(x.size);
    for (let e = 0; e < x.size; e++) {
      const { values: lv, codes: lc } = tables[idx(e)]!;
      const v = x.data[e]!;
      // Binary search for the first level >= v, then pick the nearer neighbour (ties to the lower).
      let lo = 0;
      let hi = lv.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (lv[mid]! < v) lo = mid + 1;
        else hi = mid;
      }
      let best = Math.min(lo, lv.length - 1);
      if (lo > 0 && (lo === lv.length || v - lv[lo - 1]! <= lv[lo]! - v)) best = lo - 1;
      codes[e] = lc[best]!;
      values[e] = lv[best]!;
    }
    return { codes, values };
  }

  /** Σ (Q(x) − x)² under the current basis. */
  quantizationError(x: Tensor): number {
    const { values } = this.encode(x);
    let err = 0;
    for (let e = 0; e < x.size; e++) err += (values[e]! - x.data[e]!) ** 2;
    return err;
  }

  /** Sets the basis to the uniform grid covering x's range (per channel). */
  initializeFrom(x: Tensor): void {
    const k = this.bitsK;
    const idx = channelIndexOf(x.shape, this.format.axis);
    const top = new Float64Array(this.format.count);
    for (let e = 0; e < x.size; e++) {
      const v = this.format.signed ? Math.abs(x.data[e]!) : x.data[e]!;
      if (v > top[idx(e)]!) top[idx(e)] = v;
    }
    for (let c = 0; c < this.format.count; c++) {
      const unit = Math.max(top[c]!, 1e-8) / (2 ** k - 1);
      for (let i = 0; i < k; i++) this.basis.data[c * k + i] = unit * 2 ** i;
    }
    this.initialized.data[0] = 1;
  }

  /** QEM (see the class doc): `qemIterations` rounds of encode, least squares, moving average. */
  updateBasis(x: Tensor): void {
    if (this.initialized.data[0] === 0) this.initializeFrom(x);
    const k = this.bitsK;
    const count = this.format.count;
    const idx = channelIndexOf(x.shape, this.format.axis);
    for (let iter = 0; iter < this.qemIterations; iter++) {
      const { codes } = this.encode(x);
      const gram = new Float64Array(count * k * k);
      const rhs = new Float64Array(count * k);
      const b = new Float64Array(k);
      for (let e = 0; e < x.size; e++) {
        const c = idx(e);
        for (let i = 0; i < k; i++) b[i] = this.coefficient(codes[e]!, i);
        for (let i = 0; i < k; i++) {
          rhs[c * k + i]! += b[i]! * x.data[e]!;
          for (let j = 0; j < k; j++) gram[(c * k + i) * k + j]! += b[i]! * b[j]!;
        }
      }
      for (let c = 0; c < count; c++) {
        const solution = solveSymmetric(gram.subarray(c * k * k, (c + 1) * k * k), rhs.subarray(c * k, (c + 1) * k), k);
        if (!solution) continue; // codes do not span R^K (e.g. a constant channel): keep the basis
        for (let i = 0; i < k; i++) {
          const old = this.basis.data[c * k + i]!;
          this.basis.data[c * k + i] = this.basisMomentum * old + (1 - this.basisMomentum) * solution[i]!;
        }
      }
    }
  }

  protected quantize(x: Tensor): Tensor {
    if (this.initialized.data[0] === 0) noGrad(() => this.initializeFrom(x));
    const { values } = this.encode(x);
    const value = constant(values, x.shape, x.dtype);
    let surrogate = x;
    if (this.gradient === 'clipped') {
      const idx = channelIndexOf(x.shape, this.format.axis);
      const tables = Array.from({ length: this.format.count }, (_, c) => this.levelsOf(c).values);
      const mask = new Float64Array(x.size);
      for (let e = 0; e < x.size; e++) {
        const lv = tables[idx(e)]!;
        mask[e] = x.data[e]! >= lv[0]! && x.data[e]! <= lv[lv.length - 1]! ? 1 : 0;
      }
      surrogate = mul(x, constant(mask, x.shape, x.dtype));
    }
    const y = straightThrough(value, surrogate);
    if (this.training) noGrad(() => this.updateBasis(x));
    return y;
  }

  /** Affine parameters when the (unsigned) levels form the grid {0, s, …, (2^K − 1)·s}, else null. */
  uniformQParams(): QParams | null {
    if (this.format.signed) return null;
    const count = this.format.count;
    const scale = new Float32Array(count);
    const top = 2 ** this.bitsK - 1;
    for (let c = 0; c < count; c++) {
      const lv = this.levelsOf(c).values;
      const step = lv[lv.length - 1]! / top;
      if (!(step > 0)) return null;
      for (let j = 0; j < lv.length; j++) if (Math.abs(lv[j]! - j * step) > UNIFORM_TOLERANCE * lv[lv.length - 1]!) return null;
      scale[c] = step;
    }
    return { scale, zeroPoint: new Int32Array(count), bits: this.format.bits, qmin: 0, qmax: top, axis: this.format.axis, groupSize: null };
  }

  exportQuant(): ExportedQuant {
    if (this.initialized.data[0] === 0) throw new Error("quantizer 'lqnet' is not initialised: run a forward pass first");
    const affine = this.uniformQParams();
    if (affine) return { type: 'affine', qparams: affine };
    const l = 1 << this.bitsK;
    const levels = new Float32Array(this.format.count * l);
    for (let c = 0; c < this.format.count; c++) levels.set(this.levelsOf(c).values, c * l);
    return { type: 'codebook', levels, axis: this.format.axis };
  }
}

/**
 * @internal Solves the k×k symmetric system A·v = r by Gaussian elimination with partial pivoting;
 * null when A is (numerically) singular.
 */
export function solveSymmetric(a: ArrayLike<number>, r: ArrayLike<number>, k: number): Float64Array | null {
  const m = Float64Array.from(a);
  const v = Float64Array.from(r);
  let scale = 0;
  for (let i = 0; i < k; i++) scale = Math.max(scale, Math.abs(m[i * k + i]!));
  if (!(scale > 0)) return null;
  for (let col = 0; col < k; col++) {
    let pivot = col;
    for (let row = col + 1; row < k; row++) if (Math.abs(m[row * k + col]!) > Math.abs(m[pivot * k + col]!)) pivot = row;
    if (Math.abs(m[pivot * k + col]!) <= 1e-12 * scale) return null;
    if (pivot !== col) {
      for (let j = 0; j < k; j++) [m[col * k + j], m[pivot * k + j]] = [m[pivot * k + j]!, m[col * k + j]!];
      [v[col], v[pivot]] = [v[pivot]!, v[col]!];
    }
    for (let row = col + 1; row < k; row++) {
      const f = m[row * k + col]! / m[col * k + col]!;
      for (let j = col; j < k; j++) m[row * k + j]! -= f * m[col * k + j]!;
      v[row]! -= f * v[col]!;
    }
  }
  for (let row = k - 1; row >= 0; row--) {
    let s = v[row]!;
    for (let j = row + 1; j < k; j++) s -= m[row * k + j]! * v[j]!;
    v[row] = s / m[row * k + row]!;
  }
  return v;
}

export function createLqNetQuantizer(spec: QuantizerSpec, context: QuantizerContext): LqNetQuantizer {
  return new LqNetQuantizer(spec, context);
}
