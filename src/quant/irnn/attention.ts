/**
 * Integer-only dot-product attention for iRNN (Nia et al., "iRNN: integer-only recurrent neural
 * network"; the integer exponential is I-BERT's i-exp, Kim et al. 2021). One head, one query per
 * sequence over L keys/values (e.g. the last LSTM h over the LSTM outputs of the context):
 *
 *   q'   = clamp8(rq(W_q·q; M_q[r]))                 int8 × int8 → int32, per-row weight scales
 *   s_l  = Σ_r q'_r·k_{l,r}                            int32
 *   a_l  = clamp(rq(s_l; M_s), ±2^24)                  grid 2^−12, M_s ≈ s_p·s_in/√D·2^12
 *   d_l  = a_l − max_l a_l  (≤ 0; masked l left out)
 *   e_l  = iexp(d_l)                                   Q.15, see `intExp`
 *   p_l  = min(255, roundShift(e_l·⌊2^46 / Σe⌋, 38))   uint8 probabilities, Q0.8
 *   o_r  = clamp8(rq(Σ_l p_l·v_{l,r}; M_o))            M_o ≈ 2^−8·s_in/s_out
 * q, k and v share one int8 scale s_in (they are all LSTM h in the LM); s_p (projected query) and
 * s_out are observed in training. `QuantAttention` takes its forward values from these integers
 * and its gradient from the float attention (softmax(W_q q·k/√D)·v) through the same quantized
 * weights (straight-through), so it equals `IntAttention` bit for bit.
 */
import { noGrad } from '../../autograd/index.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Module, shapeText } from '../../nn/module.ts';
import type { FloatDType } from '../../nn/rnn.ts';
import { uniform } from '../../nn/init.ts';
import { quantizeMultiplier, requantizeScalar } from '../../runtime/requantize.ts';
import { add, globalRng, linear, mul, softmax, sum, unsqueeze, zeros, type Rng } from '../../tensor/index.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { absMaxScale, integerForward, Q8_MAX, rowScales, WIDE, observeAbsMax, fq, maxAbs } from './formats.ts';
import { roundShift } from './pwl.ts';

/** Fractional bits of the softmax input (the requantized scores). */
export const SCORE_FRAC = 12;
/** Fractional bits of the integer exponential's output. */
export const EXP_FRAC = 15;
/** Fractional bits of the probabilities (uint8, 0..255). */
export const PROB_FRAC = 8;
export const PROB_MAX = 255;
/** Largest sequence length and width accepted. */
export const MAX_ATTENTION_SIZE = 1 << 16;

/** ln 2, −b and a, c of I-BERT's exp(p) ≈ a·(p + b)² + c on (−ln 2, 0], as integers. */
const LN2 = Math.round(Math.LN2 * 2 ** SCORE_FRAC);
const POLY_B = Math.round(1.353 * 2 ** SCORE_FRAC);
const POLY_A_FRAC = 15;
const POLY_A = Math.round(0.3585 * 2 ** POLY_A_FRAC);
const POLY_C = Math.round(0.344 * 2 ** EXP_FRAC);
const POLY_SHIFT = 2 * SCORE_FRAC + POLY_A_FRAC - EXP_FRAC;
const RECIPROCAL_BITS = 46;

/**
 * exp(d·2^−12) for an integer d ≤ 0, as an integer at 2^−15 (I-BERT's i-exp): with
 * z = ⌊−d / ln2⌋ and p = d + z·ln2 ∈ (−ln2, 0] (ln2 = round(ln 2·2^12) = 2839),
 *   exp(p) ≈ 0.3585·(p + 1.353)² + 0.344  →  roundShift(A·(p + B)², 24) + C   (A = 11747, B = 5542, C = 11272)
 * and exp(d) = that · 2^−z, a rounding right shift (0 once z > 30). Against Math.exp over every
 * d ∈ [−2^16, 0]: max absolute error 2.15e-3 (at d = −556, the polynomial's own error), max
 * relative error 3.2e-3 on (−ln 2, 0] (measured by the test).
 */
export function intExp(d: number): number {
  if (d > 0) throw new RangeError(`intExp: d must be ≤ 0, got ${d}`);
  const z = Math.floor(-d / LN2);
  if (z > 30) return 0;
  const p = d + z * LN2;
  const t = p + POLY_B;
  const poly = roundShift(POLY_A * t * t, POLY_SHIFT) + POLY_C;
  return z === 0 ? poly : roundShift(poly, z);
}

/** ⌊a / b⌋ for integers 0 ≤ a < 2^52, 0 < b < 2^52. */
function floorDiv(a: number, b: number): number {
  let q = Math.floor(a / b);
  if (q * b > a) q--;
  else if ((q + 1) * b <= a) q++;
  return q;
}

/**
 * Integer softmax of `a[off .. off + L)` (grid 2^−12) into uint8 probabilities (Q0.8) at
 * `out[outOff ..]`; entries with mask[l] = 0 get 0 (all masked: all 0). `exps` is scratch [L].
 */
export function intSoftmax(a: ArrayLike<number>, off: number, L: number, out: { [i: number]: number }, outOff: number, mask: ArrayLike<number> | null, maskOff: number, exps: Float64Array): void {
  let m = -Infinity;
  for (let l = 0; l < L; l++) if ((!mask || mask[maskOff + l]) && a[off + l]! > m) m = a[off + l]!;
  if (m === -Infinity) {
    for (let l = 0; l < L; l++) out[outOff + l] = 0;
    return;
  }
  let total = 0;
  for (let l = 0; l < L; l++) {
    const e = !mask || mask[maskOff + l] ? intExp(a[off + l]! - m) : 0;
    exps[l] = e;
    total += e;
  }
  const reciprocal = floorDiv(2 ** RECIPROCAL_BITS, total);
  for (let l = 0; l < L; l++) out[outOff + l] = Math.min(PROB_MAX, roundShift(exps[l]! * reciprocal, RECIPROCAL_BITS - PROB_FRAC));
}

/** Everything an IntAttention holds (what the file stores). */
export interface IntAttentionParams {
  /** Width D of q, k, v (and of the output). */
  readonly size: number;
  /** The shared int8 scale of q, k, v, and of the output. */
  readonly inputScale: number;
  readonly outputScale: number;
  /** W_q int8 [D, D] (row r = output r). */
  readonly weight: Int8Array;
  /** Per row: W_q·q accumulator → int8 q' (s_w[r]·s_in/s_p). */
  readonly multiplier: Int32Array;
  readonly shift: Int32Array;
  /** Scores → grid 2^−12 (s_p·s_in/√D·2^12). */
  readonly scoreMultiplier: number;
  readonly scoreShift: number;
  /** Σ p·v → int8 output (2^−8·s_in/s_out). */
  readonly outputMultiplier: number;
  readonly outputShift: number;
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** The integers of one attention (for QAT): projected query [N·D], scores [N·L], probabilities [N·L], output [N·D]. */
export interface AttentionTrace {
  readonly query: Int32Array;
  readonly scores: Int32Array;
  readonly probabilities: Int32Array;
  readonly output: Int32Array;
}

/** The stages before the output requantization: projected query, scores, probabilities. */
function attentionStages(p: Omit<IntAttentionParams, 'outputMultiplier' | 'outputShift' | 'outputScale'>, q: ArrayLike<number>, k: ArrayLike<number>, N: number, L: number, mask: ArrayLike<number> | null): Omit<AttentionTrace, 'output'> {
  const D = p.size;
  const query = new Int32Array(N * D);
  const scores = new Int32Array(N * L);
  const probabilities = new Int32Array(N * L);
  const exps = new Float64Array(L);
  for (let n = 0; n < N; n++) {
    for (let r = 0; r < D; r++) {
      let acc = 0;
      for (let j = 0; j < D; j++) acc += p.weight[r * D + j]! * q[n * D + j]!;
      query[n * D + r] = clamp(requantizeScalar(acc, p.multiplier[r]!, p.shift[r]!), -Q8_MAX, Q8_MAX);
    }
    for (let l = 0; l < L; l++) {
      let acc = 0;
      for (let r = 0; r < D; r++) acc += query[n * D + r]! * k[(n * L + l) * D + r]!;
      scores[n * L + l] = clamp(requantizeScalar(acc, p.scoreMultiplier, p.scoreShift), -WIDE, WIDE);
    }
    intSoftmax(scores, n * L, L, probabilities, n * L, mask, n * L, exps);
  }
  return { query, scores, probabilities };
}

/** Σ_l p_l·v_{l,r}: uint8 × int8 → int32 accumulators [N·D]. */
function contextSums(probabilities: Int32Array, v: ArrayLike<number>, N: number, L: number, D: number): Int32Array {
  const acc = new Int32Array(N * D);
  for (let n = 0; n < N; n++) {
    for (let l = 0; l < L; l++) {
      const pl = probabilities[n * L + l]!;
      if (pl === 0) continue;
      for (let r = 0; r < D; r++) acc[n * D + r] += pl * v[(n * L + l) * D + r]!;
    }
  }
  return acc;
}

/**
 * The integer attention of N sequences: q int8 [N, D], k, v int8 [N, L, D], mask [N, L] (1 =
 * attend, 0 = padding) or null. Plain loops; see the file comment for the formulas.
 */
export function intAttention(p: IntAttentionParams, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, N: number, L: number, mask: ArrayLike<number> | null): AttentionTrace {
  const stages = attentionStages(p, q, k, N, L, mask);
  const acc = contextSums(stages.probabilities, v, N, L, p.size);
  const output = Int32Array.from(acc, (a) => clamp(requantizeScalar(a, p.outputMultiplier, p.outputShift), -Q8_MAX, Q8_MAX));
  return { ...stages, output };
}

/** The integer-only attention runtime. */
export class IntAttention {
  readonly params: IntAttentionParams;

  constructor(params: IntAttentionParams) {
    this.params = params;
  }

  get size(): number {
    return this.params.size;
  }

  /** Real values → int8 codes at the input scale (round half to even, saturated; NaN throws). */
  quantizeInput(x: ArrayLike<number>): Int8Array {
    const out = new Int8Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!;
      if (Number.isNaN(v)) throw new RangeError(`IntAttention.quantizeInput: x[${i}] is NaN; the int8 input has no code for it`);
      out[i] = clamp(roundHalfEven(v / this.params.inputScale), -Q8_MAX, Q8_MAX);
    }
    return out;
  }

  /**
   * q int8 [N, D], keys and values int8 [N, L, D] (at inputScale), optional mask [N, L] (nonzero =
   * attend). Returns the int8 output [N, D] (real value q·outputScale).
   */
  run(q: Int8Array, keys: Int8Array, values: Int8Array, N: number, L: number, mask?: ArrayLike<number>): Int8Array {
    const D = this.size;
    if (!Number.isInteger(N) || N < 1 || !Number.isInteger(L) || L < 1 || L > MAX_ATTENTION_SIZE) throw new RangeError(`IntAttention.run: N and L must be positive integers (L ≤ ${MAX_ATTENTION_SIZE}), got ${N}, ${L}`);
    if (q.length !== N * D) throw new RangeError(`IntAttention.run: the query has ${q.length} values, expected N·D = ${N}·${D}`);
    if (keys.length !== N * L * D || values.length !== N * L * D) throw new RangeError(`IntAttention.run: keys and values must hold N·L·D = ${N * L * D} values, got ${keys.length} and ${values.length}`);
    if (mask && mask.length !== N * L) throw new RangeError(`IntAttention.run: the mask has ${mask.length} values, expected N·L = ${N * L}`);
    return Int8Array.from(intAttention(this.params, q, keys, values, N, L, mask ?? null).output);
  }
}

export interface QuantAttentionOptions {
  /** Fake-quantize (default true); false is the float attention, for gradient checks and float baselines. */
  quantize?: boolean;
  dtype?: FloatDType;
  rng?: Rng;
}

/** Options of `QuantAttention.forward`. */
export interface AttentionForwardOptions {
  /** [N, L], nonzero = attend (default: all). */
  mask?: ArrayLike<number>;
  /**
   * The int8 scale q, k and v are already on (e.g. the LSTM's s_h); it is recorded as the input
   * scale. Without it, the input range is observed (EMA of max |q|, |k|, |v|) in training.
   */
  inputScale?: number;
}

/**
 * Single-head dot-product attention of one query over L keys/values with a learned query
 * projection W_q (Luong's "general" score q·W_qᵀ·k/√D): int8 per-row W_q, int8 q, k, v at one
 * shared scale, int8 projected query and output at observed scales, the integer softmax of
 * `intSoftmax`. Parameter `weight` [D, D]; buffers input_absmax, input_scale (a given scale,
 * 0 = observe), query_absmax, output_absmax.
 */
export class QuantAttention extends Module {
  readonly size: number;
  readonly quantize: boolean;
  readonly dtype: FloatDType;
  readonly weight: Tensor;
  readonly inputAbsMax: Tensor;
  readonly givenInputScale: Tensor;
  readonly queryAbsMax: Tensor;
  readonly outputAbsMax: Tensor;

  constructor(size: number, options: QuantAttentionOptions = {}) {
    super();
    if (!Number.isInteger(size) || size < 1 || size > MAX_ATTENTION_SIZE) throw new RangeError(`QuantAttention: size must be an integer in [1, ${MAX_ATTENTION_SIZE}], got ${size}`);
    this.size = size;
    this.quantize = options.quantize ?? true;
    this.dtype = options.dtype ?? 'float32';
    this.weight = this.registerParameter('weight', zeros([size, size], this.dtype));
    const bound = 1 / Math.sqrt(size);
    uniform(this.weight, -bound, bound, options.rng ?? globalRng);
    this.inputAbsMax = this.registerBuffer('input_absmax', zeros([1]));
    this.givenInputScale = this.registerBuffer('input_scale', zeros([1]));
    this.queryAbsMax = this.registerBuffer('query_absmax', zeros([1]));
    this.outputAbsMax = this.registerBuffer('output_absmax', zeros([1]));
  }

  get inputScale(): number {
    const given = this.givenInputScale.data[0]!;
    return given > 0 ? given : absMaxScale(this.inputAbsMax.data[0]!);
  }

  get queryScale(): number {
    return absMaxScale(this.queryAbsMax.data[0]!);
  }

  get outputScale(): number {
    return absMaxScale(this.outputAbsMax.data[0]!);
  }


  /** query [N, D], keys and values [N, L, D] → [N, D]. */
  forward(query: Tensor, keys: Tensor, values: Tensor, options: AttentionForwardOptions = {}): Tensor {
    const D = this.size;
    if (query.rank !== 2 || query.shape[1] !== D) throw new Error(`QuantAttention(${D}): expected the query [N, ${D}], got ${shapeText(query.shape)}`);
    const N = query.shape[0]!;
    for (const [name, t] of [['keys', keys], ['values', values]] as const) {
      if (t.rank !== 3 || t.shape[0] !== N || t.shape[2] !== D) throw new Error(`QuantAttention(${D}): expected ${name} [${N}, L, ${D}], got ${shapeText(t.shape)}`);
    }
    const L = keys.shape[1]!;
    if (values.shape[1] !== L || L < 1) throw new Error(`QuantAttention: keys ${shapeText(keys.shape)} and values ${shapeText(values.shape)} need the same L ≥ 1`);
    const mask = options.mask ?? null;
    if (mask && mask.length !== N * L) throw new RangeError(`QuantAttention: the mask has ${mask.length} values, expected N·L = ${N * L}`);
    // Masked scores get −1e4 before the float softmax (e^−1e4 = 0 in float32).
    const maskBias = mask ? new Tensor(this.dtype === 'float64' ? Float64Array.from(mask, (m) => (m ? 0 : -1e4)) : Float32Array.from(mask, (m) => (m ? 0 : -1e4)), [N, L]) : null;
    const inverseRoot = 1 / Math.sqrt(D);
    if (!this.quantize) {
      const projected = linear(query, this.weight);
      let scores = mul(sum(mul(unsqueeze(projected, 1), keys), 2), inverseRoot);
      if (maskBias) scores = add(scores, maskBias);
      return sum(mul(unsqueeze(softmax(scores, 1), 2), values), 1);
    }
    if (this.training) {
      if (options.inputScale !== undefined) {
        if (!(options.inputScale > 0) || !Number.isFinite(options.inputScale)) throw new RangeError(`QuantAttention: inputScale must be a positive finite number, got ${options.inputScale}`);
        this.givenInputScale.data[0] = options.inputScale;
      } else {
        const m = maxAbs(query.data, keys.data, values.data);
        if (Number.isNaN(m)) throw new RangeError('QuantAttention: the inputs hold NaN or ±Infinity; their int8 range is observed in training mode and needs finite values');
        observeAbsMax(this.inputAbsMax, m);
      }
    }
    const sIn = this.inputScale;
    const qq = fq(query, sIn, -Q8_MAX, Q8_MAX);
    const kq = fq(keys, sIn, -Q8_MAX, Q8_MAX);
    const vq = fq(values, sIn, -Q8_MAX, Q8_MAX);
    const wScales = rowScales(this.weight);
    const w = fq(this.weight, wScales, -Q8_MAX, Q8_MAX);
    const projected = linear(qq, w);
    if (this.training) observeAbsMax(this.queryAbsMax, maxAbs(projected.data));
    const sP = this.queryScale;
    const params = this.integerParams(sIn, sP, wScales, w);
    const codes = (t: Tensor): Int32Array => Int32Array.from(t.data, (x) => Math.round(x / sIn));
    const [qc, kc, vc] = [codes(qq), codes(kq), codes(vq)];
    const stages = attentionStages(params, qc, kc, N, L, mask);
    const acc = contextSums(stages.probabilities, vc, N, L, D);
    if (this.training) observeAbsMax(this.outputAbsMax, maxAbs(acc) * 2 ** -PROB_FRAC * sIn);
    const sOut = this.outputScale;
    const out = quantizeMultiplier(2 ** -PROB_FRAC * sIn / sOut);
    const trace = { ...stages, output: Int32Array.from(acc, (a) => clamp(requantizeScalar(a, out.multiplier, out.shift), -Q8_MAX, Q8_MAX)) };
    const qp = integerForward(projected, trace.query, sP, -Q8_MAX, Q8_MAX);
    const scoreGrid = 2 ** -SCORE_FRAC;
    const scores = integerForward(mul(sum(mul(unsqueeze(qp, 1), kq), 2), inverseRoot), trace.scores, scoreGrid, -WIDE, WIDE);
    const probabilities = integerForward(softmax(maskBias ? add(scores, maskBias) : scores, 1), trace.probabilities, 2 ** -PROB_FRAC, 0, PROB_MAX + 1); // 255 is a clamp of the code, not of p: the gradient passes
    return integerForward(sum(mul(unsqueeze(probabilities, 2), vq), 1), trace.output, sOut, -Q8_MAX, Q8_MAX);
  }

  /** W_q codes and the multipliers at given scales (without the output's). */
  private integerParams(sIn: number, sP: number, wScales: Float32Array, w: Tensor): Omit<IntAttentionParams, 'outputMultiplier' | 'outputShift' | 'outputScale'> {
    const D = this.size;
    const weight = Int8Array.from(w.data, (v, i) => Math.round(v / wScales[Math.floor(i / D)]!));
    const multiplier = new Int32Array(D);
    const shift = new Int32Array(D);
    for (let r = 0; r < D; r++) {
      const m = quantizeMultiplier(wScales[r]! * sIn / sP);
      multiplier[r] = m.multiplier;
      shift[r] = m.shift;
    }
    const score = quantizeMultiplier(sP * sIn / Math.sqrt(D) * 2 ** SCORE_FRAC);
    return { size: D, inputScale: sIn, weight, multiplier, shift, scoreMultiplier: score.multiplier, scoreShift: score.shift };
  }

  /** The integer parameters at the observed scales (what `convertQuantAttention` returns). @internal */
  toIntegerParams(): IntAttentionParams {
    const sIn = this.inputScale;
    const wScales = rowScales(this.weight);
    const w = noGrad(() => fq(this.weight, wScales, -Q8_MAX, Q8_MAX));
    const base = this.integerParams(sIn, this.queryScale, wScales, w);
    const out = quantizeMultiplier(2 ** -PROB_FRAC * sIn / this.outputScale);
    return { ...base, outputScale: this.outputScale, outputMultiplier: out.multiplier, outputShift: out.shift };
  }

  override extraRepr(): string {
    return `${this.size}${this.quantize ? '' : ', quantize=false'}`;
  }
}

/** The IntAttention of a trained (observed) QuantAttention. */
export function convertQuantAttention(model: QuantAttention): IntAttention {
  if (!model.quantize) throw new Error('convertQuantAttention: the model runs with quantize=false; only a fake-quant model has integer semantics');
  const unset: string[] = [];
  if (!(model.givenInputScale.data[0]! > 0) && !(model.inputAbsMax.data[0]! > 0)) unset.push('input');
  if (!(model.queryAbsMax.data[0]! > 0)) unset.push('query');
  if (!(model.outputAbsMax.data[0]! > 0)) unset.push('output');
  if (unset.length > 0) throw new Error(`convertQuantAttention: the ${unset.join(', ')} range is 0 (never observed); run the model in training mode on representative data first`);
  return new IntAttention(model.toIntegerParams());
}
