/**
 * Integer-only inference for `nn.TransformerLM` (I-BERT style: Kim et al., "I-BERT: Integer-only
 * BERT Quantization", ICML 2021), converted from a QAT run (`quant.transformer.prepareTransformerQat`).
 *
 * Every tensor between the token ids and the logits is an integer:
 *
 * | value                                   | integers                       | real value                  |
 * | --------------------------------------- | ------------------------------ | --------------------------- |
 * | residual stream x                       | int32, \|q\| ≤ 2^24            | q·s_r (s_r = max\|x\|/2^20 on calibration) |
 * | token table                             | int8 (the run's 4/8-bit codes) | q·s_t[row], → s_r per row by M0·2^−n |
 * | position table                          | int32 at s_r                   | q·s_r                       |
 * | LayerNorm output = next Linear's input  | int8 (the input LSQ range)     | q·s_in (the LSQ step)       |
 * | Linear weights                          | int8 codes (4- or 8-bit LSQ)   | q·s_w[row]                  |
 * | Linear bias                             | int32                          | q·s_in·s_w[row]             |
 * | Q, K, V                                 | int8 (their LSQ ranges)        | q·s_q, q·s_k, q·s_v         |
 * | scores Q·Kᵀ/√d                          | int32 grid 2^−12               | q·2^−12                     |
 * | attention weights A                     | uint8 (the LSQ range of A)     | q·s_p                       |
 * | GELU input fc1(x)/√2                    | int32 grid 2^−12, \|q\| ≤ 2^20 | q·2^−12                     |
 * | logits                                  | int32 accumulators             | (acc + bias)·s_in·s_w[row] (the only float step) |
 *
 * Kernels: int8 × int8 GEMMs with int32 accumulators (`runtime.gemmInt8`), fixed-point
 * requantization round(acc·M0·2^−n) (`runtime.requantizeScalar`), the integer LayerNorm of iRNN
 * (`intLayerNormRow`, integer √ by Newton), I-BERT's i-exp (`intExp`) for a causal softmax whose
 * output lands on the run's probability step, and I-BERT's i-GELU (`intGelu`: erf by a clipped
 * second-order polynomial). The MLP's 'gelu-tanh' (the CLI's) and 'gelu' both run as i-GELU, an
 * approximation of the erf form; 'relu' is exact.
 */
import { noGrad } from '../../autograd/index.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Embedding } from '../../nn/embedding.ts';
import { LayerNorm } from '../../nn/layernorm.ts';
import { Linear } from '../../nn/linear.ts';
import type { Module, TensorModule } from '../../nn/module.ts';
import { CausalSelfAttention, TransformerBlock, type TransformerLM } from '../../nn/models/transformer-lm.ts';
import { GELU, ReLU } from '../../nn/activation.ts';
import type { NativeAddon } from '../../backend/native/addon.ts';
import { gemmInt8, nativeIntAddon, packInt8Weights, type PackedWeights } from '../../runtime/kernels/index.ts';
import { quantizeMultiplier, requantizeFast as importedRequantizeFast } from '../../runtime/requantize.ts';
import { add, arange, Tensor } from '../../tensor/index.ts';
import { QuantLinear } from '../qat/layers.ts';
import type { Quantizer } from '../quantizers/quantizer.ts';
import { QatEmbedding } from '../rnn/qat-embedding.ts';
import { intExp, SCORE_FRAC } from './attention.ts';
import { WIDE as WIDE_LIMIT } from './formats.ts';
import { intLayerNormRow, layerNormParams, quantizeBeta, quantizeGamma, sqrtSizeConstant, type IntLayerNormParams } from './layernorm.ts';
import { roundShift } from './pwl.ts';

/** ±2^24, the int32 clamp of the residual stream and the scores (a local copy for the hot loops). */
const WIDE = WIDE_LIMIT;

/** Fractional bits of the GELU input t = x/√2 (int32). */
export const GELU_FRAC = 12;
/** Fractional bits of the i-GELU erf value. */
export const ERF_FRAC = 15;
/** Largest |t| code of the GELU input (|x/√2| ≤ 256). */
export const GELU_INPUT_MAX = 2 ** 20;
/** Fractional bits of the softmax probabilities before they are requantized to the run's step. */
export const PROB16_FRAC = 16;
/** The residual stream's scale is max|x| (calibration) / 2^RESIDUAL_BITS. */
export const RESIDUAL_BITS = 20;

/** I-BERT's erf(x) ≈ sign(x)·[a·(min(|x|, −b) + b)² + 1], a = −0.2888, b = −1.769. */
export const IGELU_A = -0.2888;
export const IGELU_B = -1.769;
const ERF_CLIP = Math.round(-IGELU_B * 2 ** GELU_FRAC);
const ERF_A = Math.round(IGELU_A * 2 ** ERF_FRAC);
const ERF_SHIFT = 2 * GELU_FRAC; // A at 2^−15 × (c)² at 2^−24 → 2^−15
const RECIPROCAL_BITS = 46;

/**
 * I-BERT's integer erf at t·2^−12, as an integer at 2^−15: c = min(|t|, 7246) − 7246 ≤ 0,
 * erf = sign(t)·(roundShift(−9464·c², 24) + 2^15). Its float64 closed form is {@link erfPolynomial}.
 */
export function intErf(t: number): number {
  const c = Math.min(Math.abs(t), ERF_CLIP) - ERF_CLIP;
  const v = roundShift(ERF_A * c * c, ERF_SHIFT) + 2 ** ERF_FRAC;
  return t < 0 ? -v : v;
}

/** The float64 polynomial i-GELU's erf stands for: sign(x)·[a·(min(|x|, −b) + b)² + 1]. */
export function erfPolynomial(x: number): number {
  const c = Math.min(Math.abs(x), -IGELU_B) + IGELU_B;
  const v = IGELU_A * c * c + 1;
  return x < 0 ? -v : v;
}

/**
 * i-GELU's integer product before its requantization: for t = x/√2 on the grid 2^−12 (|t| ≤ 2^20),
 * g = t·(2^15 + intErf(t)), the real GELU(x) = x·(1 + erf(x/√2))/2 being g·2^−27·√2/2.
 */
export function intGelu(t: number): number {
  return t * (2 ** ERF_FRAC + intErf(t));
}

/**
 * Causal integer softmax of one query row: scores a[off .. off + L) on the grid 2^−12 (the keys
 * 0..L−1 the query may see) → codes of the probabilities on the step s_p of the run's LSQ
 * quantizer of A: e_j = intExp(a_j − max a) (Q.15), p16_j = roundShift(e_j·⌊2^46/Σe⌋, 30) (Q.16),
 * code_j = clamp(round(p16_j·M0·2^−n), 0, qmax) with M0·2^−n ≈ 2^−16/s_p.
 */
export function intCausalSoftmaxRow(a: ArrayLike<number>, off: number, L: number, multiplier: number, shift: number, qmax: number, out: { [i: number]: number }, outOff: number, exps: Float64Array): void {
  let m = -Infinity;
  for (let j = 0; j < L; j++) if (a[off + j]! > m) m = a[off + j]!;
  let total = 0;
  for (let j = 0; j < L; j++) {
    const e = intExp(a[off + j]! - m);
    exps[j] = e;
    total += e;
  }
  const reciprocal = Math.floor(2 ** RECIPROCAL_BITS / total);
  for (let j = 0; j < L; j++) {
    const p16 = roundShift(exps[j]! * reciprocal, RECIPROCAL_BITS - PROB16_FRAC);
    const code = requantizeFast(p16, multiplier, shift);
    out[outOff + j] = code > qmax ? qmax : code;
  }
}

/** One integer Linear: y_code[r] = clamp(rq(Σ x·w[r] + bias[r]; M[r], n[r]), outMin, outMax). */
export interface IntLinearParams {
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** Bits of the weight codes (2..8), |w| ≤ 2^(b−1)−1. */
  readonly weightBits: number;
  /** int8 codes [out, in]. */
  readonly weight: Int8Array;
  /** int32 codes [out] on the grid s_in·s_w[r]. */
  readonly bias: Int32Array;
  /** Per row: M0 and n of the requantization to the output grid. */
  readonly multiplier: Int32Array;
  readonly shift: Int32Array;
  readonly outMin: number;
  readonly outMax: number;
}

/** The head: int8 weights [V, E], int32 bias, logits = (acc + bias)·scale[r] (float32). */
export interface IntHeadParams {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weightBits: number;
  readonly weight: Int8Array;
  readonly bias: Int32Array;
  /** s_in·s_w[r], float32 [V]. */
  readonly scale: Float32Array;
}

/** The MLP nonlinearity of the runtime. */
export type IntTransformerActivation = 'gelu' | 'relu';

/** One pre-LN block. */
export interface IntTransformerBlockParams {
  /** residual → qkv input (int8). */
  readonly ln1: IntLayerNormParams;
  /** rows 0..E−1 → Q codes, E..2E−1 → K codes, 2E..3E−1 → V codes. */
  readonly qkv: IntLinearParams;
  /** Σ q·k → scores at 2^−12 (s_q·s_k/√d·2^12). */
  readonly scoreMultiplier: number;
  readonly scoreShift: number;
  /** p at 2^−16 → the A codes (2^−16/s_p), at most probsMax. */
  readonly probsMultiplier: number;
  readonly probsShift: number;
  readonly probsMax: number;
  /** Σ p·v → proj input codes (s_p·s_v/s_in(proj)). */
  readonly contextMultiplier: number;
  readonly contextShift: number;
  readonly contextMin: number;
  readonly contextMax: number;
  /** → residual scale. */
  readonly proj: IntLinearParams;
  readonly ln2: IntLayerNormParams;
  /** → GELU input t at 2^−12 (clamp ±2^20), or for 'relu' → fc2 input codes. */
  readonly fc1: IntLinearParams;
  readonly activation: IntTransformerActivation;
  /** 'gelu': g = intGelu(t) → fc2 input codes (√2/2·2^−27/s_in(fc2)); unused (0) for 'relu'. */
  readonly geluMultiplier: number;
  readonly geluShift: number;
  /** 'gelu': the clamp of the fc2 input codes (its LSQ range). */
  readonly geluMin: number;
  readonly geluMax: number;
  /** → residual scale. */
  readonly fc2: IntLinearParams;
}

/** Everything an IntTransformerLM holds (what the file stores). */
export interface IntTransformerLMParams {
  readonly vocabSize: number;
  readonly embedDim: number;
  readonly numHeads: number;
  readonly mlpDim: number;
  readonly maxContext: number;
  /** s_r of the int32 residual stream. */
  readonly residualScale: number;
  readonly tokenBits: number;
  /** int8 codes [V, E] at s_t[row]. */
  readonly tokenTable: Int8Array;
  /** Per row: code → residual grid (s_t[row]/s_r). */
  readonly tokenMultiplier: Int32Array;
  readonly tokenShift: Int32Array;
  /** int32 codes [maxContext, E] at s_r. */
  readonly positions: Int32Array;
  readonly blocks: readonly IntTransformerBlockParams[];
  readonly lnFinal: IntLayerNormParams;
  readonly head: IntHeadParams;
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** Caches packed GEMM weights per Int8Array (the native kernel's VNNI panel). */
const packedCache = new WeakMap<Int8Array, PackedWeights>();

function packed(weight: Int8Array, rows: number, cols: number): PackedWeights {
  let p = packedCache.get(weight);
  if (!p) {
    p = packInt8Weights(weight, rows, cols);
    packedCache.set(weight, p);
  }
  return p;
}

// A module-local binding: under the TypeScript loader an imported one is a getter call in the
// hot loops below (see intgru.ts).
const requantizeFast = importedRequantizeFast;

/** acc [M, out] = x [M, in] · Wᵀ (int32), into `out` when given. */
function matmulInt8(x: Int8Array, M: number, w: Int8Array, rows: number, cols: number, out?: Int32Array): Int32Array {
  const acc = out ?? new Int32Array(M * rows);
  gemmInt8(M, rows, cols, x, 0, packed(w, rows, cols), acc);
  return acc;
}

/**
 * An integer Linear on int8 rows x [M, in]: clamp(rq(Σ x·w[r] + bias[r]; M0[r], n[r]), outMin, outMax)
 * as int32 [M, out]. @internal
 */
export function intLinearCodes(p: IntLinearParams, x: Int8Array, M: number): Int32Array {
  const acc = matmulInt8(x, M, p.weight, p.outFeatures, p.inFeatures);
  const R = p.outFeatures;
  const { bias, multiplier, shift, outMin, outMax } = p;
  for (let m = 0; m < M; m++) {
    const o = m * R;
    for (let r = 0; r < R; r++) {
      const v = requantizeFast(acc[o + r]! + bias[r]!, multiplier[r]!, shift[r]!);
      acc[o + r] = v < outMin ? outMin : v > outMax ? outMax : v;
    }
  }
  return acc;
}

/** The head over the lnFinal codes of the chosen rows of the residual stream → float32 logits [rows.length, V]. */
function headLogits(p: IntTransformerLMParams, x: Int32Array, rowIndices: readonly number[], addon: NativeAddon | null): Float32Array {
  const E = p.embedDim;
  const V = p.vocabSize;
  const M = rowIndices.length;
  const h = new Int8Array(M * E);
  if (addon) {
    const rows = M * E === x.length ? x : new Int32Array(M * E);
    if (rows !== x) for (let m = 0; m < M; m++) rows.set(x.subarray(rowIndices[m]! * E, rowIndices[m]! * E + E), m * E);
    nativeLayerNorm(addon, p.lnFinal, rows, M, h);
  } else {
    for (let m = 0; m < M; m++) intLayerNormRow(p.lnFinal, x, rowIndices[m]! * E, h, m * E);
  }
  const acc = matmulInt8(h, M, p.head.weight, V, E);
  const out = new Float32Array(M * V);
  if (fusedCalls && addon?.intTfHead) addon.intTfHead(Int32Array.of(M, V), acc, p.head.bias, p.head.scale, out);
  else for (let m = 0; m < M; m++) for (let r = 0; r < V; r++) out[m * V + r] = (acc[m * V + r]! + p.head.bias[r]!) * p.head.scale[r]!;
  return out;
}

/**
 * Whether the native forward uses the fused calls (fc1's output stage with i-GELU, the head's float
 * step in C++); false runs the per-op calls of before (benchmarks compare both in one process, with
 * `addon.intTfLoops(false)` for the scalar loops). Both give the same integers and logits. @internal
 */
let fusedCalls = true;

/** @internal See `fusedCalls`. */
export function setIntTransformerFusedCalls(on: boolean): void {
  fusedCalls = on;
}

/**
 * Whether the native forward runs as one call (`addon.intTfForward`: embedding, blocks, lnFinal and head over
 * groups of whole sequences, each group on one thread) when the fused calls are on and the model fits it (int8
 * Q, K, V codes; i-GELU inputs within ±2^20 or int8 ReLU codes); false runs the per-op calls (benchmarks and
 * tests compare both in one process). The same integers and logits either way. @internal
 */
let fusedForward = true;

/** @internal See `fusedForward`. */
export function setIntTransformerFusedForward(on: boolean): void {
  fusedForward = on;
}

/** The 7 LayerNorm scalars of intTfForward's dims and block scalars. */
function layerNormScalars(p: IntLayerNormParams): number[] {
  return [p.size, p.epsCode, p.multiplier, p.shift, sqrtSizeConstant(p.size), p.outMin, p.outMax];
}

/** intTfForward's arguments that depend only on the model (native/binding.cc IntTfForward). */
interface FusedPlan {
  readonly lnFinalScalars: number[];
  readonly embed: readonly [Int8Array, Int32Array, Int32Array, Int32Array];
  /** Per block: scalars, LayerNorm vectors and the four Linears (keys and values are appended per call). */
  readonly blocks: readonly (Int32Array | Int8Array)[][];
  readonly lnFinal: readonly [Int32Array, Int32Array];
  readonly head: readonly [Int8Array, Int32Array, Int32Array, Float32Array];
}

/** The plan of `p` for intTfForward, or null when a block does not fit it (the per-op calls run then). */
function fusedPlan(p: IntTransformerLMParams): FusedPlan | null {
  const E = p.embedDim;
  const blocks: (Int32Array | Int8Array)[][] = [];
  let panels = true;
  const linear = (l: IntLinearParams): (Int32Array | Int8Array)[] => {
    const w = packed(l.weight, l.outFeatures, l.inFeatures);
    if (!w.panel) panels = false;
    return [w.panel ?? new Int8Array(0), w.rowSums, l.bias, l.multiplier, l.shift];
  };
  for (const b of p.blocks) {
    if (b.qkv.outMin < -128 || b.qkv.outMax > 127) return null;
    const gelu = b.activation === 'gelu';
    if (gelu ? b.fc1.outMin < -GELU_INPUT_MAX || b.fc1.outMax > GELU_INPUT_MAX : b.fc1.outMin < -128 || b.fc1.outMax > 127) return null;
    const scalars = Int32Array.from([
      ...layerNormScalars(b.ln1), ...layerNormScalars(b.ln2),
      b.scoreMultiplier, b.scoreShift, b.probsMultiplier, b.probsShift, b.probsMax, b.contextMultiplier, b.contextShift, b.contextMin, b.contextMax,
      b.qkv.outMin, b.qkv.outMax, b.proj.outMin, b.proj.outMax, b.fc1.outMin, b.fc1.outMax, b.fc2.outMin, b.fc2.outMax,
      gelu ? 1 : 0, b.geluMultiplier, b.geluShift, b.geluMin, b.geluMax, ERF_CLIP, ERF_A, p.mlpDim,
    ]);
    blocks.push([scalars, b.ln1.gamma, b.ln1.beta, b.ln2.gamma, b.ln2.beta, ...linear(b.qkv), ...linear(b.proj), ...linear(b.fc1), ...linear(b.fc2)]);
  }
  const head = packed(p.head.weight, p.vocabSize, E);
  if (!head.panel || !panels) return null;
  return {
    lnFinalScalars: layerNormScalars(p.lnFinal),
    embed: [p.tokenTable, p.tokenMultiplier, p.tokenShift, p.positions],
    blocks, lnFinal: [p.lnFinal.gamma, p.lnFinal.beta],
    head: [head.panel, head.rowSums, p.head.bias, p.head.scale],
  };
}

/** The native LayerNorm of `rows` int32 rows x → int8 out (native/inttransformer.h). */
function nativeLayerNorm(addon: NativeAddon, p: IntLayerNormParams, x: Int32Array, rows: number, out: Int8Array): void {
  const dims = Int32Array.of(rows, p.size, p.epsCode, p.multiplier, p.shift, sqrtSizeConstant(p.size), p.outMin, p.outMax);
  addon.intTfLayerNorm!(dims, p.gamma, p.beta, x, out);
}

/**
 * A native integer Linear over int8 rows x [M, in]: the GEMM, then the output stage into `out`
 * (mode 0: int32 codes, 1: added to the residual stream `out`, 2: int8 codes).
 */
function nativeLinear(addon: NativeAddon, p: IntLinearParams, x: Int8Array, M: number, mode: 0 | 1 | 2, scratch: WorkBuffers, out?: Int32Array | Int8Array): Int32Array | Int8Array {
  const acc = matmulInt8(x, M, p.weight, p.outFeatures, p.inFeatures, scratch.int32(`acc:${p.outFeatures}`, M * p.outFeatures));
  const target = out ?? (mode === 2 ? scratch.int8('linear', acc.length) : acc);
  addon.intTfRequantize!(Int32Array.of(M, p.outFeatures, p.outMin, p.outMax, mode), acc, p.bias, p.multiplier, p.shift, target);
  return target;
}

/**
 * Work buffers of the native forward, one per role, kept between calls (reallocated when a call
 * needs another size): the intermediate codes die within a block, so reusing them spares the
 * garbage collector. @internal
 */
class WorkBuffers {
  private readonly bytes = new Map<string, Int8Array>();
  private readonly words = new Map<string, Int32Array>();

  int8(role: string, length: number): Int8Array {
    let b = this.bytes.get(role);
    if (b?.length !== length) this.bytes.set(role, (b = new Int8Array(length)));
    return b;
  }

  int32(role: string, length: number): Int32Array {
    let b = this.words.get(role);
    if (b?.length !== length) this.words.set(role, (b = new Int32Array(length)));
    return b;
  }
}

/** The requantization shifts of a model (the native loops take [−32, 100]). */
function modelShifts(p: IntTransformerLMParams): number[] {
  const shifts: number[] = [...p.tokenShift, p.lnFinal.shift];
  for (const b of p.blocks) {
    shifts.push(b.ln1.shift, b.ln2.shift, b.scoreShift, b.probsShift, b.contextShift, b.geluShift);
    for (const l of [b.qkv, b.proj, b.fc1, b.fc2]) shifts.push(...l.shift);
  }
  return shifts;
}

/** x ← clamp(x + y, ±2^24) (the residual add, both on the grid s_r). */
function addResidual(x: Int32Array, y: Int32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]! + y[i]!;
    x[i] = v < -WIDE ? -WIDE : v > WIDE ? WIDE : v;
  }
}

/** Options of the IntTransformerLM forward methods. */
export interface IntTransformerRunOptions {
  /**
   * Run the attention, LayerNorm, GELU and embedding loops in the native kernels
   * (native/inttransformer.cc) when the addon has them (default true); false runs the TypeScript
   * loops, the specification the native kernels equal bit for bit. The GEMMs are the runtime's
   * int8 GEMM either way.
   */
  readonly native?: boolean;
}

/**
 * The integer KV cache of an IntTransformerLM (`createCache`): for every block, the int8 K and V
 * codes [batch, numHeads, capacity, headDim] of the positions fed so far.
 */
export interface IntTransformerCache {
  readonly batch: number;
  /** Positions it can hold (the model's maxContext). */
  readonly capacity: number;
  /** Positions fed so far (the next id goes to this position). */
  length: number;
  readonly keys: readonly Int8Array[];
  readonly values: readonly Int8Array[];
}

/** The integer-only Transformer LM (see the file comment). */
export class IntTransformerLM {
  readonly params: IntTransformerLMParams;
  /** The addon whose loops run this model, or why none does (cached per addon state). */
  private nativeState: { addon: NativeAddon | null; loops: NativeAddon | string } | null = null;
  private readonly work = new WorkBuffers();
  /** intTfForward's plan per addon (null: the model does not fit it). */
  private fused: { addon: NativeAddon; plan: FusedPlan | null } | null = null;

  constructor(params: IntTransformerLMParams) {
    const { vocabSize: V, embedDim: E, numHeads, mlpDim, maxContext } = params;
    if (E % numHeads !== 0) throw new RangeError(`IntTransformerLM: embedDim ${E} is not divisible by numHeads ${numHeads}`);
    const check = (what: string, have: number, need: number): void => {
      if (have !== need) throw new RangeError(`IntTransformerLM: ${what} has ${have} values, expected ${need}`);
    };
    check('tokenTable', params.tokenTable.length, V * E);
    check('tokenMultiplier', params.tokenMultiplier.length, V);
    check('positions', params.positions.length, maxContext * E);
    params.blocks.forEach((b, i) => {
      for (const [name, l, inF, outF] of [['qkv', b.qkv, E, 3 * E], ['proj', b.proj, E, E], ['fc1', b.fc1, E, mlpDim], ['fc2', b.fc2, mlpDim, E]] as const) {
        if (l.inFeatures !== inF || l.outFeatures !== outF) throw new RangeError(`IntTransformerLM: blocks.${i}.${name} is ${l.inFeatures} → ${l.outFeatures}, expected ${inF} → ${outF}`);
        check(`blocks.${i}.${name}.weight`, l.weight.length, inF * outF);
      }
      for (const [name, ln] of [['ln1', b.ln1], ['ln2', b.ln2]] as const) check(`blocks.${i}.${name}`, ln.size, E);
    });
    check('lnFinal', params.lnFinal.size, E);
    if (params.head.inFeatures !== E || params.head.outFeatures !== V) throw new RangeError(`IntTransformerLM: the head is ${params.head.inFeatures} → ${params.head.outFeatures}, expected ${E} → ${V}`);
    this.params = params;
  }

  get vocabSize(): number {
    return this.params.vocabSize;
  }

  /** The addon that runs the attention, LayerNorm, GELU and embedding loops, or why the TypeScript loops run. */
  private nativeLoops(): NativeAddon | string {
    const addon = nativeIntAddon();
    if (this.nativeState && this.nativeState.addon === addon) return this.nativeState.loops;
    let loops: NativeAddon | string;
    if (!addon) loops = 'the native addon is not loaded (or the reference kernels are forced)';
    else if (!addon.intTfAttention || !addon.intTfLayerNorm || !addon.intTfRequantize || !addon.intTfGelu || !addon.intTfEmbed) loops = 'the native addon predates the integer Transformer loops';
    else {
      const bad = modelShifts(this.params).find((n) => n < -32 || n > 100);
      const capacity = this.params.maxContext > 1 << 16 ? `maxContext ${this.params.maxContext} exceeds 2^16` : null;
      loops = bad !== undefined ? `requantization shift ${bad} is outside [-32, 100]` : capacity ?? addon;
    }
    this.nativeState = { addon, loops };
    return loops;
  }

  /**
   * Where the loops other than the GEMMs run: 'native', or 'typescript (<why>)' when the addon is
   * missing, the reference kernels are forced, or the model has a requantization shift outside
   * [−32, 100] (converted models have none).
   */
  get loopsBackend(): string {
    const loops = this.nativeLoops();
    return typeof loops === 'string' ? `typescript (${loops})` : 'native';
  }

  private addonFor(options: IntTransformerRunOptions): NativeAddon | null {
    if (options.native === false) return null;
    const loops = this.nativeLoops();
    return typeof loops === 'string' ? null : loops;
  }

  get maxContext(): number {
    return this.params.maxContext;
  }

  /** Bytes of the integer weights, tables, biases and multipliers (weights at their bit width). */
  get byteLength(): number {
    const p = this.params;
    const weightBytes = (n: number, bits: number): number => Math.ceil((n * (bits <= 2 ? 2 : bits <= 4 ? 4 : 8)) / 8);
    const linear = (l: IntLinearParams): number => weightBytes(l.weight.length, l.weightBits) + 12 * l.outFeatures;
    const ln = (l: IntLayerNormParams): number => 8 * l.size;
    let bytes = weightBytes(p.tokenTable.length, p.tokenBits) + 8 * p.vocabSize + 4 * p.positions.length + ln(p.lnFinal);
    for (const b of p.blocks) bytes += ln(b.ln1) + ln(b.ln2) + linear(b.qkv) + linear(b.proj) + linear(b.fc1) + linear(b.fc2);
    return bytes + weightBytes(p.head.weight.length, p.head.weightBits) + 8 * p.vocabSize;
  }

  /** Logits [N, V] (float32, row-major) of the word after each row's last id: ids [N, C] int32, 1 ≤ C ≤ maxContext. */
  logits(ids: ArrayLike<number>, batch: number, options: IntTransformerRunOptions = {}): Float32Array {
    const { x, logits } = this.whole(ids, batch, options, 2);
    const steps = ids.length / batch;
    return logits ?? headLogits(this.params, x, Array.from({ length: batch }, (_, n) => n * steps + steps - 1), this.addonFor(options));
  }

  /** Logits [N, C, V] of every position (position t: the word after ids[:, t]). */
  logitsAll(ids: ArrayLike<number>, batch: number, options: IntTransformerRunOptions = {}): Float32Array {
    const { x, logits } = this.whole(ids, batch, options, 1);
    return logits ?? headLogits(this.params, x, Array.from({ length: ids.length }, (_, i) => i), this.addonFor(options));
  }

  /** The int32 residual stream [N·C·E] after the last block (before lnFinal). */
  residual(ids: ArrayLike<number>, batch: number, options: IntTransformerRunOptions = {}): Int32Array {
    return this.whole(ids, batch, options, 0).x;
  }

  /** The forward of whole sequences ids [N, C] (see forwardCached for `head`). */
  private whole(ids: ArrayLike<number>, batch: number, options: IntTransformerRunOptions, head: 0 | 1 | 2): { x: Int32Array; logits: Float32Array | null } {
    if (!Number.isInteger(batch) || batch < 1 || ids.length === 0 || ids.length % batch !== 0) throw new RangeError(`IntTransformerLM: ${ids.length} ids do not make ${batch} rows`);
    const steps = ids.length / batch;
    if (steps > this.params.maxContext) throw new RangeError(`IntTransformerLM: context length ${steps} is outside [1, ${this.params.maxContext}] (maxContext)`);
    // The whole sequence is the cached step from an empty cache that holds just these positions. When only the
    // logits leave (head 1, 2), that cache and the residual stream are work buffers kept between calls: every
    // position of both is written before it is read.
    if (head === 0) return this.forwardCached(ids, this.newCache(batch, steps), options, 'IntTransformerLM', head);
    const size = batch * steps * this.params.embedDim;
    const cache: IntTransformerCache = {
      batch, capacity: steps, length: 0,
      keys: this.params.blocks.map((_, i) => this.work.int8(`keys:${i}`, size)),
      values: this.params.blocks.map((_, i) => this.work.int8(`values:${i}`, size)),
    };
    return this.forwardCached(ids, cache, options, 'IntTransformerLM', head, this.work.int32('x', size));
  }

  /**
   * An empty integer KV cache for `batch` sequences (default 1): per block, the int8 K and V codes
   * of every head at up to maxContext positions.
   */
  createCache(batch = 1): IntTransformerCache {
    if (!Number.isInteger(batch) || batch < 1) throw new RangeError(`IntTransformerLM.createCache: batch must be a positive integer, got ${batch}`);
    return this.newCache(batch, this.params.maxContext);
  }

  private newCache(batch: number, capacity: number): IntTransformerCache {
    const size = batch * capacity * this.params.embedDim;
    return {
      batch, capacity, length: 0,
      keys: this.params.blocks.map(() => new Int8Array(size)),
      values: this.params.blocks.map(() => new Int8Array(size)),
    };
  }

  /**
   * Incremental decoding with the integer KV cache: ids [N, S] (int32, N = cache.batch) are the
   * next S positions after the cache.length ones fed before (at most maxContext in all). Their K
   * and V codes are appended to `cache` and the float32 logits [N, V] of the last new position are
   * returned — bit for bit what `logits` gives on the whole sequence (same integers: every
   * position's K and V depend only on the ids up to it). Feed the prompt at once, then one id per step.
   */
  logitsCached(ids: ArrayLike<number>, cache: IntTransformerCache, options: IntTransformerRunOptions = {}): Float32Array {
    const p = this.params;
    if (cache.keys.length !== p.blocks.length || cache.values.length !== p.blocks.length || cache.capacity !== p.maxContext || cache.keys.some((k) => k.length !== cache.batch * p.maxContext * p.embedDim)) {
      throw new RangeError('IntTransformerLM.logitsCached: the cache does not belong to this model (make it with createCache())');
    }
    const batch = cache.batch;
    if (ids.length === 0 || ids.length % batch !== 0) throw new RangeError(`IntTransformerLM.logitsCached: ${ids.length} ids do not make the cache's ${batch} rows`);
    const steps = ids.length / batch;
    if (cache.length + steps > p.maxContext) throw new RangeError(`IntTransformerLM.logitsCached: positions ${cache.length}..${cache.length + steps - 1} are outside [0, ${p.maxContext - 1}] (maxContext ${p.maxContext}; start a new cache for a longer text)`);
    const { x, logits } = this.forwardCached(ids, cache, options, 'IntTransformerLM.logitsCached', 2);
    return logits ?? headLogits(p, x, Array.from({ length: batch }, (_, n) => n * steps + steps - 1), this.addonFor(options));
  }

  /** nn.generate's cached model: logits [V] after appending one sequence's ids to a batch-1 cache. */
  nextLogitsCached(ids: readonly number[], cache: IntTransformerCache): Float32Array {
    return this.logitsCached(ids, cache);
  }

  /** nn.generate's recompute: logits [V] of the word after `ids` (one sequence, no cache). */
  nextLogits(ids: readonly number[]): Float32Array {
    return this.logits(ids, 1);
  }

  /**
   * The residual stream [N·S·E] of ids [N, S] at positions cache.length.., appending to `cache` (into `residual`
   * when given); with the fused native forward also the logits of every row (head 1) or of each sequence's last
   * row (head 2), else null.
   */
  private forwardCached(ids: ArrayLike<number>, cache: IntTransformerCache, options: IntTransformerRunOptions, where: string, head: 0 | 1 | 2 = 0, residual?: Int32Array): { x: Int32Array; logits: Float32Array | null } {
    const p = this.params;
    const E = p.embedDim;
    const batch = cache.batch;
    const steps = ids.length / batch;
    const past = cache.length;
    const rows = batch * steps;
    const x = residual ?? new Int32Array(rows * E);
    const addon = this.addonFor(options);
    for (let n = 0; n < batch; n++) {
      for (let t = 0; t < steps; t++) {
        const id = ids[n * steps + t]!;
        if (!Number.isInteger(id) || id < 0 || id >= p.vocabSize) throw new RangeError(`${where}: word id ${id} (row ${n}, step ${t}) is outside [0, ${p.vocabSize - 1}]`);
        if (addon) continue;
        const o = (n * steps + t) * E;
        const M = p.tokenMultiplier[id]!;
        const S = p.tokenShift[id]!;
        const po = (past + t) * E;
        for (let e = 0; e < E; e++) x[o + e] = clamp(requantizeFast(p.tokenTable[id * E + e]!, M, S) + p.positions[po + e]!, -WIDE, WIDE);
      }
    }
    const plan = addon ? this.fusedPlanFor(addon) : null;
    if (addon && plan) {
      const dims = Int32Array.of(batch, steps, past, cache.capacity, E, p.numHeads, p.vocabSize, p.maxContext, head, p.blocks.length, ...plan.lnFinalScalars);
      const logits = head === 0 ? undefined : new Float32Array((head === 1 ? rows : batch) * p.vocabSize);
      const blocks = plan.blocks.map((b, i) => [...b, cache.keys[i]!, cache.values[i]!]);
      addon.intTfForward!(dims, ids instanceof Int32Array ? ids : Int32Array.from(ids), plan.embed, blocks, plan.lnFinal, plan.head, x, logits);
      cache.length = past + steps;
      return { x, logits: logits ?? null };
    }
    if (addon) {
      const dims = Int32Array.of(rows, steps, past, E, p.vocabSize, p.maxContext);
      addon.intTfEmbed!(dims, ids instanceof Int32Array ? ids : Int32Array.from(ids), p.tokenTable, p.tokenMultiplier, p.tokenShift, p.positions, x);
      p.blocks.forEach((block, i) => this.nativeBlock(addon, block, x, batch, steps, past, cache.capacity, cache.keys[i]!, cache.values[i]!));
    } else {
      p.blocks.forEach((block, i) => this.block(block, x, batch, steps, past, cache.capacity, cache.keys[i]!, cache.values[i]!));
    }
    cache.length = past + steps;
    return { x, logits: null };
  }

  /** intTfForward's plan when the fused forward is on, the addon has it and the model fits it; else null. */
  private fusedPlanFor(addon: NativeAddon): FusedPlan | null {
    if (!fusedCalls || !fusedForward || !addon.intTfForward) return null;
    if (this.fused?.addon !== addon) this.fused = { addon, plan: fusedPlan(this.params) };
    return this.fused.plan;
  }

  /** `block` with the native loops (native/inttransformer.h): the same integers. */
  private nativeBlock(addon: NativeAddon, b: IntTransformerBlockParams, x: Int32Array, batch: number, steps: number, past: number, capacity: number, keys: Int8Array, values: Int8Array): void {
    const p = this.params;
    const E = p.embedDim;
    const rows = batch * steps;
    const work = this.work;
    const h = work.int8('h', rows * E);
    nativeLayerNorm(addon, b.ln1, x, rows, h);
    // The Q, K, V codes as int8 when they fit (fused calls), else as int32 (the attention checks their range).
    const qkvBytes = fusedCalls && b.qkv.outMin >= -128 && b.qkv.outMax <= 127;
    const qkv = qkvBytes ? nativeLinear(addon, b.qkv, h, rows, 2, work, work.int8('qkv', rows * 3 * E)) : nativeLinear(addon, b.qkv, h, rows, 0, work);
    const context = work.int8('context', rows * E);
    const dims = Int32Array.of(batch, steps, past, capacity, p.numHeads, E / p.numHeads, b.scoreMultiplier, b.scoreShift,
      b.probsMultiplier, b.probsShift, b.probsMax, b.contextMultiplier, b.contextShift, b.contextMin, b.contextMax);
    addon.intTfAttention!(dims, qkv, keys, values, context);
    nativeLinear(addon, b.proj, context, rows, 1, work, x);
    nativeLayerNorm(addon, b.ln2, x, rows, h);
    let u: Int8Array;
    if (b.activation === 'relu' && b.fc1.outMin >= -128 && b.fc1.outMax <= 127) u = nativeLinear(addon, b.fc1, h, rows, 2, work) as Int8Array;
    else if (b.activation === 'relu') {
      // Unsigned codes above 127: stored into int8 as the TypeScript path stores them.
      u = work.int8('linear', rows * b.fc1.outFeatures);
      u.set(nativeLinear(addon, b.fc1, h, rows, 0, work));
    } else if (fusedCalls && addon.intTfRequantizeGelu && b.fc1.outMin >= -GELU_INPUT_MAX && b.fc1.outMax <= GELU_INPUT_MAX) {
      // fc1's output stage and i-GELU in one pass (the GELU inputs within ±2^20, as converted and loaded models clamp them).
      const { fc1 } = b;
      const acc = matmulInt8(h, rows, fc1.weight, fc1.outFeatures, fc1.inFeatures, work.int32(`acc:${fc1.outFeatures}`, rows * fc1.outFeatures));
      u = work.int8('gelu', acc.length);
      const dims = Int32Array.of(rows, fc1.outFeatures, fc1.outMin, fc1.outMax, b.geluMultiplier, b.geluShift, b.geluMin, b.geluMax, ERF_CLIP, ERF_A);
      addon.intTfRequantizeGelu(dims, acc, fc1.bias, fc1.multiplier, fc1.shift, u);
    } else {
      const t = nativeLinear(addon, b.fc1, h, rows, 0, work) as Int32Array;
      u = work.int8('gelu', t.length);
      addon.intTfGelu!(Int32Array.of(t.length, b.geluMultiplier, b.geluShift, b.geluMin, b.geluMax, ERF_CLIP, ERF_A), t, u);
    }
    nativeLinear(addon, b.fc2, u, rows, 1, work, x);
  }

  /**
   * One block on the rows x [N·S, E] at positions past..past+S−1; keys and values [N, H,
   * capacity, d] hold the K, V codes of positions 0..past−1 and receive those of the new ones.
   */
  private block(b: IntTransformerBlockParams, x: Int32Array, batch: number, steps: number, past: number, capacity: number, keys: Int8Array, values: Int8Array): void {
    const p = this.params;
    const E = p.embedDim;
    const H = p.numHeads;
    const d = E / H;
    const rows = batch * steps;
    const h = new Int8Array(rows * E);
    for (let r = 0; r < rows; r++) intLayerNormRow(b.ln1, x, r * E, h, r * E);
    const qkv = intLinearCodes(b.qkv, h, rows);
    const W = 3 * E;
    // Append the new K and V codes: head hd of sequence n at position j is row (n·H + hd)·capacity + j.
    for (let n = 0; n < batch; n++) {
      for (let t = 0; t < steps; t++) {
        const src = (n * steps + t) * W;
        for (let hd = 0; hd < H; hd++) {
          const dst = ((n * H + hd) * capacity + past + t) * d;
          for (let c = 0; c < d; c++) {
            keys[dst + c] = qkv[src + E + hd * d + c]!;
            values[dst + c] = qkv[src + 2 * E + hd * d + c]!;
          }
        }
      }
    }
    // Attention per sequence and head, causal: the query at position past + t sees keys 0..past + t.
    const context = new Int8Array(rows * E);
    const total = past + steps;
    const scores = new Float64Array(total);
    const probs = new Int32Array(total);
    const exps = new Float64Array(total);
    const sums = new Float64Array(d);
    for (let n = 0; n < batch; n++) {
      for (let hd = 0; hd < H; hd++) {
        const head = (n * H + hd) * capacity * d;
        for (let t = 0; t < steps; t++) {
          const qRow = (n * steps + t) * W + hd * d;
          const L = past + t + 1;
          for (let j = 0; j < L; j++) {
            const kRow = head + j * d;
            let acc = 0;
            for (let c = 0; c < d; c++) acc += qkv[qRow + c]! * keys[kRow + c]!;
            scores[j] = clamp(requantizeFast(acc, b.scoreMultiplier, b.scoreShift), -WIDE, WIDE);
          }
          intCausalSoftmaxRow(scores, 0, L, b.probsMultiplier, b.probsShift, b.probsMax, probs, 0, exps);
          sums.fill(0);
          for (let j = 0; j < L; j++) {
            const pj = probs[j]!;
            if (pj === 0) continue;
            const vRow = head + j * d;
            for (let c = 0; c < d; c++) sums[c] += pj * values[vRow + c]!;
          }
          const out = (n * steps + t) * E + hd * d;
          for (let c = 0; c < d; c++) context[out + c] = clamp(requantizeFast(sums[c]!, b.contextMultiplier, b.contextShift), b.contextMin, b.contextMax);
        }
      }
    }
    addResidual(x, intLinearCodes(b.proj, context, rows));
    for (let r = 0; r < rows; r++) intLayerNormRow(b.ln2, x, r * E, h, r * E);
    const t = intLinearCodes(b.fc1, h, rows);
    const u = new Int8Array(t.length);
    if (b.activation === 'relu') u.set(t);
    else {
      const { geluMultiplier, geluShift, geluMin, geluMax } = b;
      for (let i = 0; i < t.length; i++) {
        const v = requantizeFast(intGelu(t[i]!), geluMultiplier, geluShift);
        u[i] = v < geluMin ? geluMin : v > geluMax ? geluMax : v;
      }
    }
    addResidual(x, intLinearCodes(b.fc2, u, rows));
  }
}

/** A per-tensor activation quantizer's step and integer range (symmetric/zero-point-free only). */
interface ActivationGrid {
  readonly scale: number;
  readonly qmin: number;
  readonly qmax: number;
}

function activationGrid(q: Quantizer | null | undefined, what: string): ActivationGrid {
  if (!q) throw new Error(`convertTransformerLM: ${what} has no quantizer; convert a QAT model with quantized activations (prepareTransformerQat with an activation spec, e.g. 'w8a8')`);
  const exported = q.exportQuant();
  if (exported.type !== 'affine' || exported.qparams.axis !== null || exported.qparams.groupSize !== null) throw new Error(`convertTransformerLM: ${what} uses quantizer '${q.spec.kind}', not affine per tensor`);
  const { scale, zeroPoint, qmin, qmax } = exported.qparams;
  if (zeroPoint[0] !== 0) throw new Error(`convertTransformerLM: ${what} has zero point ${zeroPoint[0]}; the integer runtime takes symmetric (zero-point-free) activations`);
  if (qmin < -128 || qmax > 255 || (qmin < 0 && qmax > 127)) throw new Error(`convertTransformerLM: ${what} has integer range [${qmin}, ${qmax}], wider than 8 bits`);
  return { scale: scale[0]!, qmin, qmax };
}

/** Integer codes and per-row scales of a weight [rows, cols] as its quantizer's eval forward gives them. */
function weightCodes(q: Quantizer | null | undefined, weight: Tensor, what: string): { codes: Int8Array; scales: Float32Array; bits: number } {
  if (!q) throw new Error(`convertTransformerLM: ${what} has no weight quantizer; convert a QAT model (prepareTransformerQat)`);
  const exported = q.exportQuant();
  if (exported.type !== 'affine' || exported.qparams.groupSize !== null || (exported.qparams.axis !== null && exported.qparams.axis !== 0)) throw new Error(`convertTransformerLM: ${what} uses quantizer '${q.spec.kind}', not affine per row or per tensor`);
  const qp = exported.qparams;
  if (qp.qmin < -127 || qp.qmax > 127 || qp.qmin !== -qp.qmax) throw new Error(`convertTransformerLM: ${what} has integer range [${qp.qmin}, ${qp.qmax}]; the runtime takes symmetric int8 (or narrower) weights`);
  const [rows, cols] = weight.shape as [number, number];
  const hat = noGrad(() => q.forward(weight)).data;
  const scales = new Float32Array(rows);
  const codes = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = qp.scale[qp.axis === 0 ? r : 0]!;
    if (qp.zeroPoint[qp.axis === 0 ? r : 0] !== 0) throw new Error(`convertTransformerLM: ${what} row ${r} has a nonzero zero point`);
    scales[r] = s;
    for (let c = 0; c < cols; c++) codes[r * cols + c] = clamp(roundHalfEven(hat[r * cols + c]! / s), qp.qmin, qp.qmax);
  }
  return { codes, scales, bits: qp.bits };
}

function asQuantLinear(m: Module, what: string): QuantLinear {
  if (!(m instanceof QuantLinear)) throw new Error(`convertTransformerLM: ${what} is a ${m.constructor.name}, expected a QuantLinear (prepare the model with prepareTransformerQat)`);
  return m;
}

function asLayerNorm(m: Module, what: string): LayerNorm {
  if (!(m instanceof LayerNorm) || m.normalizedShape.length !== 1) throw new Error(`convertTransformerLM: ${what} must be a LayerNorm over the last axis, got ${m.constructor.name}`);
  return m;
}

const INT32_MAX = 2 ** 31 - 1;

/**
 * An IntLinearParams from a QuantLinear: output row r requantized by s_in·s_w[r]/outScale(r) and
 * clamped to [outMin, outMax].
 */
function intLinear(m: QuantLinear, input: ActivationGrid, outScale: (r: number) => number, outMin: number, outMax: number, what: string): IntLinearParams {
  const { codes, scales, bits } = weightCodes(m.weightQuantizer, m.weight, `${what}.weight`);
  const R = m.outFeatures;
  const bias = new Int32Array(R);
  const multiplier = new Int32Array(R);
  const shift = new Int32Array(R);
  for (let r = 0; r < R; r++) {
    const grid = input.scale * scales[r]!;
    if (m.bias) bias[r] = clamp(roundHalfEven(m.bias.data[r]! / grid), -INT32_MAX, INT32_MAX);
    const q = quantizeMultiplier(grid / outScale(r));
    multiplier[r] = q.multiplier;
    shift[r] = q.shift;
  }
  return { inFeatures: m.inFeatures, outFeatures: R, weightBits: bits, weight: codes, bias, multiplier, shift, outMin, outMax };
}

function intLn(ln: LayerNorm, residualScale: number, out: ActivationGrid): IntLayerNormParams {
  const E = ln.normalizedShape[0]!;
  const { gamma, beta } = noGrad(() => ({
    gamma: quantizeGamma(ln.weight ?? new Tensor(new Float32Array(E).fill(1), [E])),
    beta: ln.bias ? quantizeBeta(ln.bias, out.scale) : null,
  }));
  return layerNormParams(gamma.codes, gamma.scale, beta?.codes ?? new Int32Array(E), ln.eps, residualScale, out.scale, out.qmin, out.qmax);
}

/**
 * The largest |x| of the residual stream (embeddings and the output of every residual add) of
 * `model` (eval mode, fake-quant) over `calibration` batches of int32 ids [B, C].
 */
function residualAbsMax(model: TransformerLM, calibration: Iterable<Tensor>): number {
  let m = 0;
  let seen = 0;
  const track = (t: Tensor): void => {
    for (let i = 0; i < t.size; i++) {
      const a = Math.abs(t.data[i]!);
      if (!(a < Infinity)) throw new RangeError('convertTransformerLM: the residual stream holds NaN or ±Infinity on the calibration data');
      if (a > m) m = a;
    }
  };
  for (const ids of calibration) {
    if (ids.rank !== 2 || ids.dtype !== 'int32') throw new RangeError(`convertTransformerLM: calibration batches must be int32 ids [B, C], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    const steps = ids.shape[1]!;
    let x = add(model.tokenEmbedding.forward(ids), model.positionEmbedding.forward(arange(0, steps, 1, 'int32')));
    track(x);
    for (const block of model.blocks.children()) {
      const b = block as TransformerBlock;
      x = add(x, b.attn.forward(b.ln1.forward(x)));
      track(x);
      x = add(x, b.fc2.forward(b.act.forward(b.fc1.forward(b.ln2.forward(x)))));
      track(x);
    }
    seen++;
  }
  if (seen === 0) throw new RangeError('convertTransformerLM: no calibration batches (the residual stream\'s int32 scale is set from its range on them)');
  return m;
}

/**
 * Converts a QAT `nn.TransformerLM` (prepared by `quant.transformer.prepareTransformerQat` with
 * activations quantized, e.g. 'w8a8' or 'w4a8', and trained) to an IntTransformerLM. Every step
 * and range comes from the run's quantizers; the only calibrated value is the residual stream's
 * scale s_r = max|x|/2^20 over `calibration` (int32 id batches [B, C]). Post-training, no fine-tune.
 */
export function convertTransformerLM(model: TransformerLM, calibration: Iterable<Tensor>): IntTransformerLM {
  return noGrad(() => {
    const wasTraining = model.training;
    model.eval();
    try {
      return convertEval(model, calibration);
    } finally {
      model.train(wasTraining);
    }
  });
}

function convertEval(model: TransformerLM, calibration: Iterable<Tensor>): IntTransformerLM {
  if (!model.head) throw new Error('convertTransformerLM: models with tieWeights are not supported (no head Linear)');
  const E = model.embedDim;
  const V = model.vocabSize;
  const tokens = model.tokenEmbedding as Module;
  if (!(tokens instanceof QatEmbedding)) throw new Error(`convertTransformerLM: tokenEmbedding is a ${tokens.constructor.name}, expected a QatEmbedding (prepare the model with prepareTransformerQat)`);
  const positions = model.positionEmbedding as Module;
  if (!(positions instanceof Embedding)) throw new Error(`convertTransformerLM: positionEmbedding is a ${positions.constructor.name}, expected an Embedding`);
  const absMax = residualAbsMax(model, calibration);
  const residualScale = Math.fround((absMax > 0 ? absMax : 1) / 2 ** RESIDUAL_BITS);
  const token = weightCodes(tokens.weightQuantizer, tokens.weight, 'tokenEmbedding');
  const tokenMultiplier = new Int32Array(V);
  const tokenShift = new Int32Array(V);
  for (let r = 0; r < V; r++) {
    const q = quantizeMultiplier(token.scales[r]! / residualScale);
    tokenMultiplier[r] = q.multiplier;
    tokenShift[r] = q.shift;
  }
  const positionCodes = Int32Array.from(positions.weight.data, (v) => clamp(roundHalfEven(v / residualScale), -WIDE, WIDE));
  const blocks: IntTransformerBlockParams[] = [];
  const children = model.blocks.children();
  children.forEach((child, i) => {
    if (!(child instanceof TransformerBlock)) throw new Error(`convertTransformerLM: blocks.${i} is a ${child.constructor.name}`);
    const label = `blocks.${i}`;
    const attn: CausalSelfAttention = child.attn;
    const heads = attn.numHeads;
    const d = attn.headDim;
    if (heads !== model.numHeads) throw new Error(`convertTransformerLM: ${label} has ${heads} heads, the model ${model.numHeads}`);
    const qkv = asQuantLinear(attn.qkv, `${label}.attn.qkv`);
    const proj = asQuantLinear(attn.proj, `${label}.attn.proj`);
    const fc1 = asQuantLinear(child.fc1, `${label}.fc1`);
    const fc2 = asQuantLinear(child.fc2, `${label}.fc2`);
    const operands = attn.operandQuantizers();
    const grid = (m: (Module & TensorModule) | undefined, what: string): ActivationGrid => activationGrid(m as Quantizer | undefined, `${label}.attn.${what}`);
    const [gq, gk, gv, gp] = [grid(operands.query, 'quant_query'), grid(operands.key, 'quant_key'), grid(operands.value, 'quant_value'), grid(operands.probs, 'quant_probs')];
    if (gq.qmin !== gk.qmin || gq.qmin !== gv.qmin || gq.qmax !== gk.qmax || gq.qmax !== gv.qmax) throw new Error(`convertTransformerLM: ${label}: Q, K and V must share one integer range`);
    if (gp.qmin !== 0) throw new Error(`convertTransformerLM: ${label}.attn.quant_probs has range [${gp.qmin}, ${gp.qmax}]; the attention weights must be unsigned`);
    const qkvInput = activationGrid(qkv.inputQuantizer, `${label}.attn.qkv input`);
    const projInput = activationGrid(proj.inputQuantizer, `${label}.attn.proj input`);
    const fc1Input = activationGrid(fc1.inputQuantizer, `${label}.fc1 input`);
    const fc2Input = activationGrid(fc2.inputQuantizer, `${label}.fc2 input`);
    const operandScales = [gq.scale, gk.scale, gv.scale];
    const score = quantizeMultiplier(gq.scale * gk.scale / Math.sqrt(d) * 2 ** SCORE_FRAC);
    const probs = quantizeMultiplier(2 ** -PROB16_FRAC / gp.scale);
    const ctx = quantizeMultiplier(gp.scale * gv.scale / projInput.scale);
    const act = child.act as Module;
    let activation: IntTransformerActivation;
    if (act instanceof ReLU) activation = 'relu';
    else if (act instanceof GELU) activation = 'gelu';
    else throw new Error(`convertTransformerLM: ${label}.act is a ${act.constructor.name}, expected GELU or ReLU`);
    const gelu = quantizeMultiplier(Math.SQRT1_2 * 2 ** -(GELU_FRAC + ERF_FRAC) / fc2Input.scale);
    blocks.push({
      ln1: intLn(asLayerNorm(child.ln1, `${label}.ln1`), residualScale, qkvInput),
      qkv: intLinear(qkv, qkvInput, (r) => operandScales[Math.floor(r / E)]!, gq.qmin, gq.qmax, `${label}.attn.qkv`),
      scoreMultiplier: score.multiplier, scoreShift: score.shift,
      probsMultiplier: probs.multiplier, probsShift: probs.shift, probsMax: gp.qmax,
      contextMultiplier: ctx.multiplier, contextShift: ctx.shift, contextMin: projInput.qmin, contextMax: projInput.qmax,
      proj: intLinear(proj, projInput, () => residualScale, -WIDE, WIDE, `${label}.attn.proj`),
      ln2: intLn(asLayerNorm(child.ln2, `${label}.ln2`), residualScale, fc1Input),
      fc1: activation === 'relu'
        ? intLinear(fc1, fc1Input, () => fc2Input.scale, Math.max(0, fc2Input.qmin), fc2Input.qmax, `${label}.fc1`)
        : intLinear(fc1, fc1Input, () => Math.SQRT2 * 2 ** -GELU_FRAC, -GELU_INPUT_MAX, GELU_INPUT_MAX, `${label}.fc1`),
      activation,
      geluMultiplier: activation === 'gelu' ? gelu.multiplier : 0, geluShift: activation === 'gelu' ? gelu.shift : 0,
      geluMin: fc2Input.qmin, geluMax: fc2Input.qmax,
      fc2: intLinear(fc2, fc2Input, () => residualScale, -WIDE, WIDE, `${label}.fc2`),
    });
  });
  const head = asQuantLinear(model.head, 'head');
  const headInput = activationGrid(head.inputQuantizer, 'head input');
  const hw = weightCodes(head.weightQuantizer, head.weight, 'head.weight');
  const headBias = new Int32Array(V);
  const headScale = new Float32Array(V);
  for (let r = 0; r < V; r++) {
    const g = headInput.scale * hw.scales[r]!;
    headScale[r] = g;
    if (head.bias) headBias[r] = clamp(roundHalfEven(head.bias.data[r]! / g), -INT32_MAX, INT32_MAX);
  }
  return new IntTransformerLM({
    vocabSize: V, embedDim: E, numHeads: model.numHeads, mlpDim: blocks[0]?.fc1.outFeatures ?? 4 * E, maxContext: model.maxContext,
    residualScale, tokenBits: token.bits, tokenTable: token.codes, tokenMultiplier, tokenShift, positions: positionCodes,
    blocks, lnFinal: intLn(asLayerNorm(model.lnFinal, 'lnFinal'), residualScale, headInput),
    head: { inFeatures: E, outFeatures: V, weightBits: hw.bits, weight: hw.codes, bias: headBias, scale: headScale },
  });
}
