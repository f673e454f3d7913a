/**
 * Integer-only layer normalisation for iRNN (Nia et al., "iRNN: integer-only recurrent neural
 * network"; integer square root by Newton's iteration as in I-BERT, Kim et al. 2021).
 *
 * One row of D integers v (|v| ≤ 2^24, a common scale s_in; D ≤ 2^18) → D integers y:
 *   S    = Σ v                                   exact, |S| ≤ 2^42
 *   c_i  = D·v_i − S                             = D·(v_i − mean), exact, |c| ≤ 2^43
 *   k    = bitLength(max|c|) − 15                 so that max|c|·2^−k ∈ [2^14, 2^15)
 *   e_i  = roundShift(c_i, k)  (k > 0)  or  c_i·2^−k  (k ≤ 0, exact)       |e| ≤ 2^15
 *   Q    = Σ e_i² + min(epsCode·D³·4^−k, 2^51)   < 2^52 (exact in doubles)
 *   r    = round(√Q)                              integer Newton iteration (exact floor √, then rounded)
 *   n_i  = round(e_i·√D·2^20 / (r·2^8))          normalised value, Q.12: (v − mean)/√(var + eps)
 *   y_i  = clamp(roundShift(rq(γ_i·n_i; M) + β_i, 8), outMin, outMax)
 * with γ int16 codes at s_γ, β int32 codes at s_out·2^−8 and M0·2^−n ≈ s_γ·2^−12 / (s_out·2^−8).
 * A constant row (max|c| = 0) gives n = 0, i.e. y = β. √D·2^20 is an integer constant of the row
 * length (`sqrtSizeConstant`). Error of the normalisation: √ rounded to nearest with r ≥ 2^14 (a
 * relative error ≤ 2^−15), the e rounding (only when k > 0: ≤ 2^−15 of the largest |e|) and the
 * final rounding of n (≤ 2^−13); the test measures at most 1.75e-4 against a float64 layer norm.
 *
 * `QuantLayerNorm` (fake quant) takes its forward values from this function and its gradient from
 * the float layer norm with the same quantized γ, β (straight-through; see `integerForward`), so
 * its output equals `IntLayerNorm`'s codes bit for bit.
 */
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { noGrad } from '../../autograd/index.ts';
import { Module, shapeText } from '../../nn/module.ts';
import type { FloatDType } from '../../nn/rnn.ts';
import { quantizeMultiplier, requantizeScalar } from '../../runtime/requantize.ts';
import { add, div, mean, mul, ones, sqrt, sub, zeros } from '../../tensor/index.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { absMaxScale, integerForward, Q8_MAX, observeAbsMax, fq, maxAbs } from './formats.ts';
import { roundShift } from './pwl.ts';

/** Fractional bits of the normalised value n. */
export const NORM_FRAC = 12;
/** Fractional bits of the √D constant. */
export const SQRT_FRAC = 20;
/** Extra fractional bits of β below the output grid. */
export const BETA_FRAC = 8;
/** Largest row length. */
export const MAX_LN_SIZE = 1 << 18;
/** Largest |input| the row kernel accepts. */
export const MAX_LN_INPUT = 2 ** 24;
/** Largest γ code (int16, symmetric). */
export const GAMMA_MAX = 32767;
/** Largest |β code| (int32). */
export const BETA_MAX = 2 ** 31 - 1;
/** Largest epsCode. */
export const MAX_EPS_CODE = 2 ** 30;
const EPS_CAP = 2 ** 51;

/** The integers of one layer normalisation (what the file stores). */
export interface IntLayerNormParams {
  /** Row length D. */
  readonly size: number;
  /** γ codes [D], |γ| ≤ 32767 (real γ = code·s_γ). */
  readonly gamma: Int32Array;
  /** β codes [D] on the grid s_out·2^−8 (zeros without β). */
  readonly beta: Int32Array;
  /** round(eps / s_in²), the variance floor in input units squared. */
  readonly epsCode: number;
  /** M0, n of s_γ·2^−12 / (s_out·2^−8). */
  readonly multiplier: number;
  readonly shift: number;
  /** Clamp of the output codes. */
  readonly outMin: number;
  readonly outMax: number;
}

/** ⌊a / b⌋ for integers 0 ≤ a < 2^52, 0 < b < 2^52 (the float quotient corrected by one step). */
function floorDiv(a: number, b: number): number {
  let q = Math.floor(a / b);
  if (q * b > a) q--;
  else if ((q + 1) * b <= a) q++;
  return q;
}

/** Bits of a non-negative integer < 2^53 (0 for 0). */
export function bitLength(m: number): number {
  if (m >= 2 ** 32) return 32 + bitLength(Math.floor(m / 2 ** 32));
  return 32 - Math.clz32(m);
}

/**
 * ⌊√n⌋ for an integer 0 ≤ n < 2^52 by Newton's iteration on integers, x ← ⌊(x + ⌊n/x⌋)/2⌋ from
 * x0 = 2^⌈bits/2⌉ ≥ √n, stopping when x no longer decreases (then x = ⌊√n⌋ exactly).
 */
export function isqrtFloor(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n >= 2 ** 52) throw new RangeError(`isqrtFloor: n must be an integer in [0, 2^52), got ${n}`);
  if (n < 2) return n;
  let x = 2 ** Math.ceil(bitLength(n) / 2);
  for (;;) {
    const y = Math.floor((x + floorDiv(n, x)) / 2);
    if (y >= x) return x;
    x = y;
  }
}

/** round(√n) (ties cannot occur for integers): ⌊√n⌋ + 1 when n − ⌊√n⌋² > ⌊√n⌋. */
export function isqrtRound(n: number): number {
  const r = isqrtFloor(n);
  return n - r * r > r ? r + 1 : r;
}

/** round(a / b), half away from zero, for integers |a| < 2^52, 0 < b < 2^52. */
function roundDiv(a: number, b: number): number {
  const m = Math.abs(a);
  const q = floorDiv(m, b);
  const r = 2 * (m - q * b) >= b ? q + 1 : q;
  return a < 0 ? -r : r;
}

/** round(√D·2^20), computed once per row length with BigInt Newton (integers only). */
export function sqrtSizeConstant(size: number): number {
  const n = BigInt(size) << BigInt(2 * SQRT_FRAC);
  let x = 1n << BigInt(Math.ceil((n.toString(2).length) / 2));
  for (;;) {
    const y = (x + n / x) >> 1n;
    if (y >= x) break;
    x = y;
  }
  return Number(n - x * x > x ? x + 1n : x);
}

const sqrtCache = new Map<number, number>();
const epsCache = new Map<string, bigint>();

/**
 * The integer layer normalisation of one row: input[inOff .. inOff + D) (integers, |v| ≤ 2^24) →
 * out[outOff .. outOff + D) (see the file comment). `normalized`, when given, receives n (Q.12).
 */
export function intLayerNormRow(p: IntLayerNormParams, input: ArrayLike<number>, inOff: number, out: { [i: number]: number }, outOff: number, normalized?: { [i: number]: number }): void {
  const D = p.size;
  const { gamma, beta, multiplier, shift, outMin, outMax } = p;
  // One pass over the caller's array (int8, int16, int32 or float64 rows), then local arrays only.
  const v = new Float64Array(D);
  let S = 0;
  for (let i = 0; i < D; i++) {
    const x = input[inOff + i]!;
    v[i] = x;
    S += x;
  }
  let m = 0;
  for (let i = 0; i < D; i++) {
    const a = Math.abs(D * v[i]! - S);
    if (a > m) m = a;
  }
  if (m === 0) {
    for (let i = 0; i < D; i++) {
      out[outOff + i] = clamp(roundShift(beta[i]!, BETA_FRAC), outMin, outMax);
      if (normalized) normalized[i] = 0;
    }
    return;
  }
  const k = bitLength(m) - 15;
  const down = 2 ** -k;
  let Q = 0;
  for (let i = 0; i < D; i++) {
    const c = D * v[i]! - S;
    const e = k > 0 ? roundShift(c, k) : c * down;
    v[i] = e;
    Q += e * e;
  }
  if (p.epsCode > 0) {
    const key = `${p.epsCode}/${D}`;
    let epsD3 = epsCache.get(key);
    if (epsD3 === undefined) {
      epsD3 = BigInt(p.epsCode) * BigInt(D) ** 3n;
      epsCache.set(key, epsD3);
    }
    const E = k <= 0 ? epsD3 << BigInt(-2 * k) : (epsD3 + (1n << BigInt(2 * k - 1))) >> BigInt(2 * k);
    Q += E > BigInt(EPS_CAP) ? EPS_CAP : Number(E);
  }
  const r = isqrtRound(Q) * 2 ** (SQRT_FRAC - NORM_FRAC);
  let sqrtD = sqrtCache.get(D);
  if (sqrtD === undefined) {
    sqrtD = sqrtSizeConstant(D);
    sqrtCache.set(D, sqrtD);
  }
  for (let i = 0; i < D; i++) {
    const n = roundDiv(v[i]! * sqrtD, r);
    if (normalized) normalized[i] = n;
    const y = roundShift(requantizeScalar(gamma[i]! * n, multiplier, shift) + beta[i]!, BETA_FRAC);
    out[outOff + i] = y < outMin ? outMin : y > outMax ? outMax : y;
  }
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** γ quantized per tensor to int16 codes: s_γ = max|γ|/32767 (float32; 1 for all zeros). @internal */
export function quantizeGamma(gamma: Tensor): { hat: Tensor; codes: Int32Array; scale: number } {
  let m = 0;
  for (const v of gamma.data) m = Math.max(m, Math.abs(v));
  const scale = Math.fround(m > 0 && Number.isFinite(m) ? m / GAMMA_MAX : 1);
  const hat = fq(gamma, scale, -GAMMA_MAX, GAMMA_MAX);
  return { hat, codes: Int32Array.from(hat.data, (v) => Math.round(v / scale)), scale };
}

/** β quantized to int32 codes on the grid s_out·2^−8. @internal */
export function quantizeBeta(beta: Tensor, outputScale: number): { hat: Tensor; codes: Int32Array } {
  const grid = outputScale * 2 ** -BETA_FRAC;
  const hat = fq(beta, grid, -BETA_MAX, BETA_MAX);
  return { hat, codes: Int32Array.from(hat.data, (v) => Math.round(v / grid)) };
}

/** The epsCode of a float eps at an input scale: round(eps / s_in²), at most 2^30. */
export function epsCodeOf(eps: number, inputScale: number): number {
  return Math.min(MAX_EPS_CODE, roundHalfEven(eps / (inputScale * inputScale)));
}

/**
 * The integer parameters of a layer norm from quantized γ codes (scale s_γ), β codes, the input
 * and output scales and the output clamp. @internal
 */
export function layerNormParams(gammaCodes: Int32Array, gammaScale: number, betaCodes: Int32Array, eps: number, inputScale: number, outputScale: number, outMin: number, outMax: number): IntLayerNormParams {
  const m = quantizeMultiplier(gammaScale * 2 ** -NORM_FRAC / (outputScale * 2 ** -BETA_FRAC));
  return {
    size: gammaCodes.length, gamma: gammaCodes, beta: betaCodes, epsCode: epsCodeOf(eps, inputScale),
    multiplier: m.multiplier, shift: m.shift, outMin, outMax,
  };
}

/** Float layer norm over the last axis, (x − mean)/√(var + eps), without γ and β. @internal */
export function floatLayerNorm(x: Tensor, eps: number): Tensor {
  const axis = x.rank - 1;
  const centered = sub(x, mean(x, axis, true));
  const variance = mean(mul(centered, centered), axis, true);
  return div(centered, sqrt(add(variance, eps)));
}

/**
 * The float layer norm with the variance floor of the integer one, epsCode·s_in² (at least
 * 2^−16·s_in², so that a constant row has a finite gradient): the differentiable surrogate
 * whose gradient QAT uses. @internal
 */
export function surrogateLayerNorm(x: Tensor, epsCode: number, inputScale: number): Tensor {
  return floatLayerNorm(x, Math.max(epsCode, 2 ** -16) * inputScale * inputScale);
}

/** Integer layer norm of `rows` rows of codes (row-major [rows, D]) → output codes. @internal */
export function intLayerNormRows(p: IntLayerNormParams, codes: ArrayLike<number>, rows: number): Int32Array {
  const out = new Int32Array(rows * p.size);
  for (let r = 0; r < rows; r++) intLayerNormRow(p, codes, r * p.size, out, r * p.size);
  return out;
}

export interface QuantLayerNormOptions {
  /** Variance floor, as in nn.LayerNorm (default 1e-5; becomes round(eps/s_in²) in input codes). */
  eps?: number;
  /** Learn β (default true). */
  bias?: boolean;
  /** Fake-quantize (default true); false is the float layer norm with the same variance floor, for gradient checks. */
  quantize?: boolean;
  /** Parameter dtype (default float32). */
  dtype?: FloatDType;
}

/**
 * Layer normalisation over the last axis with int8 input and output (symmetric, per tensor,
 * scales from running absolute-maximum observers, EMA momentum 0.1, updated in training mode),
 * int16 γ, int32 β, and the integer normalisation of `intLayerNormRow`. Forward values are the
 * integer runtime's; the gradient is the float layer norm's with the quantized γ and β
 * (straight-through; zero where the output clamps). Parameters `weight` (γ) and `bias` (β), as
 * nn.LayerNorm's.
 */
export class QuantLayerNorm extends Module {
  readonly size: number;
  readonly eps: number;
  readonly quantize: boolean;
  readonly dtype: FloatDType;
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly inputAbsMax: Tensor;
  readonly outputAbsMax: Tensor;

  constructor(size: number, options: QuantLayerNormOptions = {}) {
    super();
    if (!Number.isInteger(size) || size < 1 || size > MAX_LN_SIZE) throw new RangeError(`QuantLayerNorm: size must be an integer in [1, ${MAX_LN_SIZE}], got ${size}`);
    this.size = size;
    this.eps = options.eps ?? 1e-5;
    if (!(this.eps >= 0) || !Number.isFinite(this.eps)) throw new RangeError(`QuantLayerNorm: eps must be a finite number ≥ 0, got ${this.eps}`);
    this.quantize = options.quantize ?? true;
    this.dtype = options.dtype ?? 'float32';
    this.weight = this.registerParameter('weight', ones([size], this.dtype));
    this.bias = options.bias ?? true ? this.registerParameter('bias', zeros([size], this.dtype)) : null;
    this.inputAbsMax = this.registerBuffer('input_absmax', zeros([1]));
    this.outputAbsMax = this.registerBuffer('output_absmax', zeros([1]));
  }

  get inputScale(): number {
    return absMaxScale(this.inputAbsMax.data[0]!);
  }

  get outputScale(): number {
    return absMaxScale(this.outputAbsMax.data[0]!);
  }


  /** x [..., size] → [..., size]. */
  forward(x: Tensor): Tensor {
    if (x.rank < 1 || x.shape[x.rank - 1] !== this.size) throw new Error(`QuantLayerNorm(${this.size}): input ${shapeText(x.shape)} does not end with ${this.size}`);
    if (x.dtype !== this.dtype) throw new TypeError(`QuantLayerNorm: input dtype ${x.dtype} differs from the parameters' ${this.dtype}`);
    if (!this.quantize) {
      const y = mul(floatLayerNorm(x, this.eps), this.weight);
      return this.bias ? add(y, this.bias) : y;
    }
    const rows = x.size / this.size;
    if (this.training) {
      const m = maxAbs(x.data);
      if (Number.isNaN(m)) throw new RangeError('QuantLayerNorm: the input holds NaN or ±Infinity; its int8 range is observed in training mode and needs finite values');
      observeAbsMax(this.inputAbsMax, m);
    }
    const sIn = this.inputScale;
    const xq = fq(x, sIn, -Q8_MAX, Q8_MAX);
    const codes = Int32Array.from(xq.data, (v) => Math.round(v / sIn));
    const gamma = quantizeGamma(this.weight);
    const epsCode = epsCodeOf(this.eps, sIn);
    const normalized = surrogateLayerNorm(xq, epsCode, sIn);
    if (this.training) {
      noGrad(() => {
        const plain = mul(normalized, gamma.hat);
        observeAbsMax(this.outputAbsMax, maxAbs((this.bias ? add(plain, this.bias) : plain).data));
      });
    }
    const sOut = this.outputScale;
    const beta = this.bias ? quantizeBeta(this.bias, sOut) : null;
    const params = layerNormParams(gamma.codes, gamma.scale, beta?.codes ?? new Int32Array(this.size), this.eps, sIn, sOut, -Q8_MAX, Q8_MAX);
    const out = intLayerNormRows(params, codes, rows);
    let F = mul(normalized, gamma.hat);
    if (beta) F = add(F, beta.hat);
    return integerForward(F, out, sOut, -Q8_MAX, Q8_MAX);
  }

  override extraRepr(): string {
    return `${this.size}, eps=${this.eps}${this.bias ? '' : ', bias=false'}${this.quantize ? '' : ', quantize=false'}`;
  }
}

/** Everything an IntLayerNorm holds. */
export interface IntLayerNormModel {
  readonly inputScale: number;
  readonly outputScale: number;
  readonly params: IntLayerNormParams;
}

/** The integer-only layer norm: int8 rows in, int8 rows out. */
export class IntLayerNorm {
  readonly inputScale: number;
  readonly outputScale: number;
  readonly params: IntLayerNormParams;

  constructor(model: IntLayerNormModel) {
    this.inputScale = model.inputScale;
    this.outputScale = model.outputScale;
    this.params = model.params;
  }

  get size(): number {
    return this.params.size;
  }

  /** Real values → int8 codes at the input scale (round half to even, saturated; NaN throws). */
  quantizeInput(x: ArrayLike<number>): Int8Array {
    const q = new Int8Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!;
      if (Number.isNaN(v)) throw new RangeError(`IntLayerNorm.quantizeInput: x[${i}] is NaN; the int8 input has no code for it`);
      q[i] = clamp(roundHalfEven(v / this.inputScale), -Q8_MAX, Q8_MAX);
    }
    return q;
  }

  /** x int8 [rows, size] → int8 [rows, size] (real value q·outputScale). */
  run(x: Int8Array, rows: number): Int8Array {
    if (!Number.isInteger(rows) || rows < 1) throw new RangeError(`IntLayerNorm.run: rows must be a positive integer, got ${rows}`);
    if (x.length !== rows * this.size) throw new RangeError(`IntLayerNorm.run: x has ${x.length} values, expected rows·size = ${rows}·${this.size}`);
    const out = new Int8Array(x.length);
    for (let r = 0; r < rows; r++) intLayerNormRow(this.params, x, r * this.size, out, r * this.size);
    return out;
  }
}

/** The IntLayerNorm of a trained (observed) QuantLayerNorm. */
export function convertQuantLayerNorm(model: QuantLayerNorm): IntLayerNorm {
  if (!model.quantize) throw new Error('convertQuantLayerNorm: the model runs with quantize=false; only a fake-quant model has integer semantics');
  const unset = [['input', model.inputAbsMax], ['output', model.outputAbsMax]].filter(([, t]) => !((t as Tensor).data[0]! > 0)).map(([n]) => n);
  if (unset.length > 0) throw new Error(`convertQuantLayerNorm: the ${unset.join(' and ')} range is 0 (never observed); run the model in training mode on representative data first`);
  const sIn = model.inputScale;
  const sOut = model.outputScale;
  const { gamma, beta } = noGrad(() => ({ gamma: quantizeGamma(model.weight), beta: model.bias ? quantizeBeta(model.bias, sOut) : null }));
  return new IntLayerNorm({
    inputScale: sIn, outputScale: sOut,
    params: layerNormParams(gamma.codes, gamma.scale, beta?.codes ?? new Int32Array(model.size), model.eps, sIn, sOut, -Q8_MAX, Q8_MAX),
  });
}
