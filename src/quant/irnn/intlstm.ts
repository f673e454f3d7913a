/**
 * IntLSTM: the integer-only runtime of a QuantLSTM. Weights are int8 (per-row scales folded into
 * fixed-point multipliers M0·2^−n from src/runtime/requantize.ts), the state is int8 h and int16
 * c (Q4.11), accumulators are int32, activations are the integer PWL tables. Inside the time loop
 * every value is an integer: the two matrix-vector products accumulate int8 × int8 in int32, the
 * requantization is requantize.ts's exact round(acc·M0·2^−n), the PWL and cell products are int32
 * products with rounding shifts. Real numbers appear only at the boundary: quantizing the input
 * (`quantizeInput`) and reading h back (`hiddenScale`).
 */
import { quantizeMultiplier, requantizeScalar } from '../../runtime/requantize.ts';
import { gemmInt8, nativeIntAddon, packInt8Weights, type PackedWeights } from '../../runtime/kernels/index.ts';
import type { NativeAddon } from '../../backend/native/addon.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { ACT_FRAC, CELL_FRAC, GATE_FRAC, INT16_MAX, INT16_MIN, LN_INPUT_FRAC, Q8_MAX, rowScales, WIDE, weightMax, packedWeightBytes } from './formats.ts';
import { intLayerNormRow, type IntLayerNormParams } from './layernorm.ts';
import { evalIntPwl, evalIntPwlIndexed, intPwlProblems, pwlSegmentIndex, pwlShift, roundShift, type IntPwl } from './pwl.ts';
import type { QuantLSTM } from './qlstm.ts';
import type { Tensor } from '../../tensor/tensor.ts';

/** Everything an IntLSTM holds (what the file stores). */
export interface IntLSTMParams {
  readonly inputSize: number;
  readonly hiddenSize: number;
  /** Real value of one step of x and of h (float32). */
  readonly inputScale: number;
  readonly hiddenScale: number;
  /**
   * [4H, inputSize] and [4H, hiddenSize] int8, gates in PyTorch's order i, f, g, o; with
   * `weightBits` b < 8 every value lies in ±(2^(b−1)−1) (the cells read them as int8 all the same).
   */
  readonly weightIh: Int8Array;
  readonly weightHh: Int8Array;
  /** Per row: W_ih·x accumulator → Q3.12, and W_hh·h → Q3.12. */
  readonly multiplierIh: Int32Array;
  readonly shiftIh: Int32Array;
  readonly multiplierHh: Int32Array;
  readonly shiftHh: Int32Array;
  /** Bit width of the weights (2..8; absent = 8): the file packs them to it. */
  readonly weightBits?: number;
  /** b_ih + b_hh in Q3.12 [4H]. */
  readonly bias: Int32Array;
  /** o·tanh(c) rounded to Q0.15 → int8 h (≈ 2^−15 / s_h). */
  readonly outputMultiplier: number;
  readonly outputShift: number;
  readonly sigmoid: IntPwl;
  readonly tanh: IntPwl;
  /**
   * Layer normalisation (LN-LSTM, Ba et al. 2016), when present: then multiplier_ih/hh map the
   * accumulators to the LN input grid 2^−16 (not Q3.12), and a step is `lnCellUpdate`.
   */
  readonly layerNorm?: IntLSTMLayerNorm;
}

/**
 * The three integer layer norms of an LN-LSTM: over the 4H gate rows of W_ih·x and of W_hh·h
 * (input grid 2^−16, output Q3.12, γ only: the LSTM bias is the shift), and over the H cells of
 * c_t before tanh (input Q4.11, output Q3.12 clamped to int16, γ and β).
 */
export interface IntLSTMLayerNorm {
  readonly ih: IntLayerNormParams;
  readonly hh: IntLayerNormParams;
  readonly cell: IntLayerNormParams;
}

/** Integer intermediates of LN-LSTM steps (per sequence: [4H] gate rows, [H] cells), kept for QAT. */
export interface LnStepBuffers {
  /** W_ih·x and W_hh·h on the LN input grid 2^−16. */
  readonly gx: Int32Array;
  readonly gh: Int32Array;
  /** Their layer norms, Q3.12. */
  readonly lnx: Int32Array;
  readonly lnh: Int32Array;
  /** Gate pre-activations Q3.12 and gates Q0.15. */
  readonly z: Int32Array;
  readonly gates: Int32Array;
  /** LN(c_t) Q3.12 and tanh of it, Q0.15. */
  readonly lc: Int32Array;
  readonly t: Int32Array;
}

/** Buffers for `count` sequences. */
export function lnStepBuffers(hiddenSize: number, count: number): LnStepBuffers {
  const rows = 4 * hiddenSize * count;
  const cells = hiddenSize * count;
  return {
    gx: new Int32Array(rows), gh: new Int32Array(rows), lnx: new Int32Array(rows), lnh: new Int32Array(rows),
    z: new Int32Array(rows), gates: new Int32Array(rows), lc: new Int32Array(cells), t: new Int32Array(cells),
  };
}

/**
 * One LN-LSTM cell update of one sequence (integers only; the layer norms are `intLayerNormRow`):
 *   gx = clamp(rq(accX; M_ih), ±2^24), gh = clamp(rq(accH; M_hh), ±2^24)      grid 2^−16
 *   z  = clamp16(LN_ih(gx) + LN_hh(gh) + b)                                    Q3.12
 *   i, f, g, o = PWL_σ, PWL_σ, PWL_tanh, PWL_σ (z)                             Q0.15
 *   c' = clamp16(roundShift(f·c, 15) + roundShift(i·g, 19))                    Q4.11
 *   h' = clamp8(rq(roundShift(o·PWL_tanh(LN_cell(c')), 15); M_out))
 * The intermediates go to `b` at offsets `b4` (gate rows) and `b1` (cells).
 */
export function lnCellUpdate(
  p: IntLSTMParams, accX: Int32Array, xOff: number, accH: Int32Array, hAccOff: number, c: Int16Array, hOff: number, out: IntLSTMState,
  b: LnStepBuffers, b4: number, b1: number,
): void {
  const ln = p.layerNorm;
  if (!ln) throw new Error('lnCellUpdate: the parameters have no layer normalisation');
  const H = p.hiddenSize;
  const rows = 4 * H;
  for (let r = 0; r < rows; r++) {
    b.gx[b4 + r] = clamp(requantizeScalar(accX[xOff + r]!, p.multiplierIh[r]!, p.shiftIh[r]!), -WIDE, WIDE);
    b.gh[b4 + r] = clamp(requantizeScalar(accH[hAccOff + r]!, p.multiplierHh[r]!, p.shiftHh[r]!), -WIDE, WIDE);
  }
  intLayerNormRow(ln.ih, b.gx, b4, b.lnx, b4);
  intLayerNormRow(ln.hh, b.gh, b4, b.lnh, b4);
  for (let r = 0; r < rows; r++) {
    const z = clamp(b.lnx[b4 + r]! + b.lnh[b4 + r]! + p.bias[r]!, INT16_MIN, INT16_MAX);
    b.z[b4 + r] = z;
    const isTanh = r >= 2 * H && r < 3 * H;
    b.gates[b4 + r] = evalIntPwl(isTanh ? p.tanh : p.sigmoid, z);
  }
  for (let k = 0; k < H; k++) {
    const i = b.gates[b4 + k]!;
    const f = b.gates[b4 + H + k]!;
    const g = b.gates[b4 + 2 * H + k]!;
    out.c[hOff + k] = clamp(roundShift(f * c[hOff + k]!, GATE_CELL_SHIFT) + roundShift(i * g, GATE_GATE_SHIFT), INT16_MIN, INT16_MAX);
  }
  intLayerNormRow(ln.cell, out.c, hOff, b.lc, b1);
  for (let k = 0; k < H; k++) {
    const t = evalIntPwl(p.tanh, b.lc[b1 + k]!);
    b.t[b1 + k] = t;
    const ot = roundShift(b.gates[b4 + 3 * H + k]! * t, ACT_FRAC);
    out.h[hOff + k] = clamp(requantizeScalar(ot, p.outputMultiplier, p.outputShift), -Q8_MAX, Q8_MAX);
  }
}

/** The state between steps: h int8 [N·H], c int16 Q4.11 [N·H]. */
export interface IntLSTMState {
  readonly h: Int8Array;
  readonly c: Int16Array;
}

/** Shifts to Q4.11: of a Q0.15 gate times a Q4.11 cell (2^−26), and of two Q0.15 gates (2^−30). */
const GATE_CELL_SHIFT = ACT_FRAC;
const GATE_GATE_SHIFT = 2 * ACT_FRAC - CELL_FRAC;

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** Per-row powers of two for `requantizeExact`: unit = 2^−n, half = 2^(n−1). @internal */
export interface ShiftPowers {
  readonly unit: Float64Array;
  readonly half: Float64Array;
}

/** @internal */
export function shiftPowers(shift: ArrayLike<number>): ShiftPowers {
  return { unit: Float64Array.from(shift, (n) => 2 ** -n), half: Float64Array.from(shift, (n) => 2 ** (n - 1)) };
}

const TWO52 = 2 ** 52;

/**
 * round(acc·M0·2^−n), half away from zero: requantizeScalar's result. When |acc·M0| < 2^52 and
 * 1 ≤ n ≤ 53 (always, for this runtime's accumulators), the product, the added half and the
 * scaling by 2^−n are exact integer operations held in doubles, so one multiply, one add and a
 * floor give it; otherwise requantizeScalar runs. @internal
 */
export function requantizeExact(acc: number, multiplier: number, shift: number, unit: number, half: number): number {
  const product = acc * multiplier;
  if (shift >= 1 && shift <= 53 && product < TWO52 && product > -TWO52) {
    return product >= 0 ? Math.floor((product + half) * unit) : -Math.floor((half - product) * unit);
  }
  return requantizeScalar(acc, multiplier, shift);
}

/** What the batched path precomputes: PWL segment lookups and the powers of two of every shift. */
interface FastPath {
  readonly sigmoid: Uint8Array;
  readonly tanh: Uint8Array;
  readonly ih: ShiftPowers;
  readonly hh: ShiftPowers;
  readonly out: ShiftPowers;
}

/**
 * The elementwise part of a step for one sequence: gate rows from the two int32 accumulators
 * (accX[r] = Σ_j Wih[r,j]·x_j, accH[r] = Σ_j Whh[r,j]·h_j), then the cell and the new h.
 *   z_r = clamp16(rq(accX_r; Mih_r) + rq(accH_r; Mhh_r) + b_r)
 *   i, f, g, o = PWL_σ, PWL_σ, PWL_tanh, PWL_σ (z)
 *   c' = clamp16(roundShift(f·c, 15) + roundShift(i·g, 19))
 *   h' = clamp8(rq(roundShift(o·PWL_tanh(2c'), 15); Mout))
 * `gates` is scratch [4H] (Q0.15 values). Offsets select the sequence in the batch arrays.
 * With `fast`, the PWL segment is looked up instead of searched and the requantization takes
 * `requantizeExact` (same integers; tested against this function without it).
 */
function cellUpdate(
  p: IntLSTMParams, accX: Int32Array, xOff: number, accH: Int32Array, hAccOff: number, c: Int16Array, hOff: number, out: IntLSTMState, gates: Int32Array,
  fast: FastPath | null,
): void {
  const H = p.hiddenSize;
  const { multiplierIh, shiftIh, multiplierHh, shiftHh, bias, sigmoid, tanh } = p;
  for (let r = 0; r < 4 * H; r++) {
    const isTanh = r >= 2 * H && r < 3 * H;
    if (fast) {
      const zx = requantizeExact(accX[xOff + r]!, multiplierIh[r]!, shiftIh[r]!, fast.ih.unit[r]!, fast.ih.half[r]!);
      const zh = requantizeExact(accH[hAccOff + r]!, multiplierHh[r]!, shiftHh[r]!, fast.hh.unit[r]!, fast.hh.half[r]!);
      const z = clamp(zx + zh + bias[r]!, INT16_MIN, INT16_MAX);
      gates[r] = evalIntPwlIndexed(isTanh ? tanh : sigmoid, isTanh ? fast.tanh : fast.sigmoid, z);
    } else {
      const z = clamp(requantizeScalar(accX[xOff + r]!, multiplierIh[r]!, shiftIh[r]!) + requantizeScalar(accH[hAccOff + r]!, multiplierHh[r]!, shiftHh[r]!) + bias[r]!, INT16_MIN, INT16_MAX);
      gates[r] = evalIntPwl(isTanh ? tanh : sigmoid, z);
    }
  }
  for (let k = 0; k < H; k++) {
    const i = gates[k]!;
    const f = gates[H + k]!;
    const g = gates[2 * H + k]!;
    const o = gates[3 * H + k]!;
    const cNew = clamp(roundShift(f * c[hOff + k]!, GATE_CELL_SHIFT) + roundShift(i * g, GATE_GATE_SHIFT), INT16_MIN, INT16_MAX);
    out.c[hOff + k] = cNew;
    // c is Q4.11, the tanh table reads Q3.12: one left shift (the table clamps to its knots).
    const t = fast ? evalIntPwlIndexed(tanh, fast.tanh, cNew * 2) : evalIntPwl(tanh, cNew * 2);
    // o·t is Q0.30; rounded to Q0.15 first so that the multiplier's shift stays in requantizeScalar's exact fast range.
    const ot = roundShift(o * t, ACT_FRAC);
    const h = fast ? requantizeExact(ot, p.outputMultiplier, p.outputShift, fast.out.unit[0]!, fast.out.half[0]!) : requantizeScalar(ot, p.outputMultiplier, p.outputShift);
    out.h[hOff + k] = clamp(h, -Q8_MAX, Q8_MAX);
  }
}

/**
 * One time step for a batch with plain loops (the reference `IntLSTM.run` is tested against):
 * x [N·I] int8, state in, state out (must not alias the input state), `gates` scratch [4H].
 */
export function intLstmStep(p: IntLSTMParams, batch: number, x: Int8Array, state: IntLSTMState, out: IntLSTMState, gates: Int32Array): void {
  const I = p.inputSize;
  const H = p.hiddenSize;
  const accX = new Int32Array(4 * H);
  const accH = new Int32Array(4 * H);
  for (let n = 0; n < batch; n++) {
    for (let r = 0; r < 4 * H; r++) {
      let sx = 0;
      for (let j = 0; j < I; j++) sx += p.weightIh[r * I + j]! * x[n * I + j]!;
      let sh = 0;
      for (let j = 0; j < H; j++) sh += p.weightHh[r * H + j]! * state.h[n * H + j]!;
      accX[r] = sx;
      accH[r] = sh;
    }
    if (p.layerNorm) lnCellUpdate(p, accX, 0, accH, 0, state.c, n * H, out, lnStepBuffers(H, 1), 0, 0);
    else cellUpdate(p, accX, 0, accH, 0, state.c, n * H, out, gates, null);
  }
}

/** Options of `IntLSTM.run`. */
export interface IntLSTMRunOptions {
  /**
   * Run the cell (requantization, PWL gates, cell and h update, and the W_hh product) in the native
   * kernel (native/irnn.cc) when the addon has it and accepts the parameters (default true); false runs
   * the TypeScript cell, the reference the native one equals bit for bit.
   */
  native?: boolean;
}

/** What the native cell needs besides the weights: the parameters flattened as native/irnn.h reads them. */
interface NativeCell {
  readonly addon: NativeAddon;
  readonly path: string;
  /** [steps, batch, hidden, input, outMult, outShift, sigmoid shift, min, max, tanh shift, min, max]; steps and batch set per run. */
  readonly dims: Int32Array;
  readonly rows: Int32Array;
  readonly sigmoid: Int32Array;
  readonly tanh: Int32Array;
}

function flatTable(t: IntPwl): Int32Array {
  const out = new Int32Array(t.knots.length + t.values.length + t.slopes.length);
  out.set(t.knots, 0);
  out.set(t.values, t.knots.length);
  out.set(t.slopes, t.knots.length + t.values.length);
  return out;
}

/** What the native LSTM and GRU cells share: the output requantization and the two PWL tables. */
export interface PwlCellParams {
  readonly hiddenSize: number;
  readonly inputSize: number;
  readonly outputMultiplier: number;
  readonly outputShift: number;
  readonly sigmoid: IntPwl;
  readonly tanh: IntPwl;
}

/**
 * The dims and flat tables a native iRNN cell (intLstmPath / intGruPath) takes, or why the tables
 * cannot run natively: dims = [1, 1, H, I, outputMultiplier, outputShift, sigmoid shift / min / max,
 * tanh shift / min / max], each table as knots | values | slopes.
 */
export function nativeCellTables(p: PwlCellParams): { dims: Int32Array; sigmoid: Int32Array; tanh: Int32Array } | string {
  const problems = [...intPwlProblems(p.sigmoid).map((m) => `sigmoid table: ${m}`), ...intPwlProblems(p.tanh).map((m) => `tanh table: ${m}`)];
  if (problems.length > 0) return problems.join('; ');
  const dims = Int32Array.from([1, 1, p.hiddenSize, p.inputSize, p.outputMultiplier, p.outputShift,
    pwlShift(p.sigmoid), p.sigmoid.outputMin, p.sigmoid.outputMax, pwlShift(p.tanh), p.tanh.outputMin, p.tanh.outputMax]);
  return { dims, sigmoid: flatTable(p.sigmoid), tanh: flatTable(p.tanh) };
}

/** The integer-only LSTM runtime. */
export class IntLSTM {
  readonly params: IntLSTMParams;

  private packedWeights: { ih: PackedWeights; hh: PackedWeights } | null = null;
  private fastPath: FastPath | null = null;
  /** The native cell's flattened parameters, or why the native cell does not run (cached per addon state). */
  private nativeState: { addon: NativeAddon | null; cell: NativeCell | string } | null = null;

  constructor(params: IntLSTMParams) {
    this.params = params;
  }

  /** The int8 weights packed for the runtime's GEMM kernel (native VNNI when the addon loaded), once. */
  private packed(): { ih: PackedWeights; hh: PackedWeights } {
    const p = this.params;
    this.packedWeights ??= { ih: packInt8Weights(p.weightIh, 4 * p.hiddenSize, p.inputSize), hh: packInt8Weights(p.weightHh, 4 * p.hiddenSize, p.hiddenSize) };
    return this.packedWeights;
  }

  get inputSize(): number {
    return this.params.inputSize;
  }

  get hiddenSize(): number {
    return this.params.hiddenSize;
  }

  /**
   * Bytes of the weights, biases, multipliers and tables: the weights packed at `weightBits` as the
   * file stores them (int8, int4 two per byte, int2 four per byte), the per-row parameters int32.
   */
  get byteLength(): number {
    const p = this.params;
    const rows = 4 * p.hiddenSize;
    const tables = (p.sigmoid.knots.length + p.sigmoid.values.length + p.sigmoid.slopes.length + p.tanh.knots.length + p.tanh.values.length + p.tanh.slopes.length) * 4;
    const ln = p.layerNorm ? [p.layerNorm.ih, p.layerNorm.hh, p.layerNorm.cell].reduce((n, l) => n + (l.gamma.length + l.beta.length) * 4 + 5 * 4, 0) : 0;
    const bits = p.weightBits ?? 8;
    return packedWeightBytes(p.weightIh.length, bits) + packedWeightBytes(p.weightHh.length, bits) + rows * 4 * 5 + tables + 4 * 4 + ln;
  }

  /**
   * x (real, any layout) → int8 codes at the input scale, round half to even, saturated to ±127:
   * values beyond ±127.5·inputScale (±Infinity included) become ±127, as the fake quantization of
   * QuantLSTM clamps them. NaN has no code: it throws a RangeError naming the first NaN's index.
   */
  quantizeInput(x: ArrayLike<number>): Int8Array {
    return quantizeInt8Input('IntLSTM', x, this.params.inputScale);
  }

  /** The native cell for the current addon state, or why there is none. */
  private nativeCell(): NativeCell | string {
    const addon = nativeIntAddon();
    if (this.nativeState && this.nativeState.addon === addon) return this.nativeState.cell;
    let cell: NativeCell | string;
    if (!addon) cell = 'the native addon is not loaded (or the reference kernels are forced)';
    else if (!addon.intLstmSequence || !addon.intLstmPath) cell = 'the native addon predates the integer LSTM kernel';
    else if (this.params.layerNorm) cell = 'the native cell has no layer normalisation';
    else {
      const p = this.params;
      const H = p.hiddenSize;
      const tables = nativeCellTables(p);
      if (typeof tables === 'string') cell = tables;
      else {
        const rows = new Int32Array(5 * 4 * H);
        [p.multiplierIh, p.shiftIh, p.multiplierHh, p.shiftHh, p.bias].forEach((a, j) => rows.set(a, j * 4 * H));
        const { dims, sigmoid, tanh } = tables;
        try {
          cell = { addon, path: addon.intLstmPath(dims, rows, sigmoid, tanh), dims, rows, sigmoid, tanh };
        } catch (error) {
          cell = error instanceof Error ? error.message.replace(/^lowbit_native: intLstmPath: /, '') : String(error);
        }
      }
    }
    this.nativeState = { addon, cell };
    return cell;
  }

  /**
   * Where `run` computes the cell: 'native avx512' | 'native avx2' | 'native avx2-loop' (the int64
   * row loop, for tables the vector kernels cannot hold) | 'native scalar', or
   * 'typescript (<why>)' when the native kernel is missing or refuses the parameters (it needs
   * requantization shifts in [10, 62] and valid PWL tables, as every converted model has, and no
   * layer norms: an LN-LSTM always runs the TypeScript cell, `lnCellUpdate`).
   */
  get cellBackend(): string {
    const cell = this.nativeCell();
    return typeof cell === 'string' ? `typescript (${cell})` : `native ${cell.path}`;
  }

  /**
   * Runs `steps` steps over `batch` sequences: x int8 time-major [L, N, I]. Returns h for every
   * step [L, N, H] (int8, real value q·hiddenScale) and the final state. Integer-only: the
   * products are the runtime's int8 GEMM (src/runtime/kernels: native VNNI/AVX2 or the
   * TypeScript reference, bit-identical), the rest is the native cell (`cellBackend`; see
   * `options.native`) or `cellUpdate`; both equal `intLstmStep` per step.
   */
  run(x: Int8Array, steps: number, batch: number, initial?: IntLSTMState, options: IntLSTMRunOptions = {}): { output: Int8Array; state: IntLSTMState } {
    const { inputSize: I, hiddenSize: H } = this.params;
    if (!Number.isInteger(steps) || steps < 1 || !Number.isInteger(batch) || batch < 1) throw new RangeError(`IntLSTM.run: steps and batch must be positive integers, got ${steps}, ${batch}`);
    if (x.length !== steps * batch * I) throw new RangeError(`IntLSTM.run: x has ${x.length} values, expected L·N·I = ${steps}·${batch}·${I}`);
    if (initial && (initial.h.length !== batch * H || initial.c.length !== batch * H)) throw new RangeError(`IntLSTM.run: the initial state must hold N·H = ${batch * H} values`);
    let state: IntLSTMState = { h: new Int8Array(batch * H), c: new Int16Array(batch * H) };
    let next: IntLSTMState = { h: new Int8Array(batch * H), c: new Int16Array(batch * H) };
    if (initial) {
      state.h.set(initial.h);
      state.c.set(initial.c);
    }
    const rows = 4 * H;
    let { ih, hh } = this.packed();
    const cell = options.native === false ? null : this.nativeCell();
    if (cell && typeof cell !== 'string' && (!ih.panel || !hh.panel)) {
      // Packed while the reference kernels were forced: pack again for the native GEMM.
      this.packedWeights = null;
      ({ ih, hh } = this.packed());
    }
    if (cell && typeof cell !== 'string' && ih.panel && hh.panel) {
      const output = new Int8Array(steps * batch * H);
      const c = initial ? initial.c.slice() : new Int16Array(batch * H);
      const h0 = initial ? initial.h.slice() : new Int8Array(batch * H);
      const dims = cell.dims.slice();
      dims[0] = steps;
      dims[1] = batch;
      cell.addon.intLstmSequence!(dims, cell.rows, cell.sigmoid, cell.tanh, x, ih.panel, ih.rowSums, hh.panel, hh.rowSums, h0, c, output);
      return { output, state: { h: output.slice((steps - 1) * batch * H), c } };
    }
    const p = this.params;
    if (p.layerNorm) {
      const accX = new Int32Array(steps * batch * rows);
      gemmInt8(steps * batch, rows, I, x, 0, ih, accX);
      const accH = new Int32Array(batch * rows);
      const buffers = lnStepBuffers(H, 1);
      const output = new Int8Array(steps * batch * H);
      for (let t = 0; t < steps; t++) {
        gemmInt8(batch, rows, H, state.h, 0, hh, accH);
        for (let n = 0; n < batch; n++) lnCellUpdate(p, accX, (t * batch + n) * rows, accH, n * rows, state.c, n * H, next, buffers, 0, 0);
        output.set(next.h, t * batch * H);
        [state, next] = [next, state];
      }
      return { output, state };
    }
    this.fastPath ??= {
      sigmoid: pwlSegmentIndex(p.sigmoid), tanh: pwlSegmentIndex(p.tanh),
      ih: shiftPowers(p.shiftIh), hh: shiftPowers(p.shiftHh), out: shiftPowers([p.outputShift]),
    };
    const fast = this.fastPath;
    // The input projection of every step at once (it does not depend on h): [L·N, 4H] int32.
    const accX = new Int32Array(steps * batch * rows);
    gemmInt8(steps * batch, rows, I, x, 0, ih, accX);
    const accH = new Int32Array(batch * rows);
    const gates = new Int32Array(rows);
    const output = new Int8Array(steps * batch * H);
    for (let t = 0; t < steps; t++) {
      gemmInt8(batch, rows, H, state.h, 0, hh, accH);
      for (let n = 0; n < batch; n++) cellUpdate(this.params, accX, (t * batch + n) * rows, accH, n * rows, state.c, n * H, next, gates, fast);
      output.set(next.h, t * batch * H);
      [state, next] = [next, state];
    }
    return { output, state };
  }
}

/**
 * The IntLSTM of a trained QuantLSTM: int8 weights at the per-row scales the fake quantization
 * used, multipliers M0·2^−n for s_w·s_x·2^12 and s_w·s_h·2^12 (2^16, the LN input grid, with
 * layer normalisation), the bias rounded to Q3.12, the output multiplier 2^−15/s_h, the model's
 * PWL tables and, for an LN-LSTM, its quantized layer norms.
 */
export function convertQuantLSTM(model: QuantLSTM): IntLSTM {
  if (!model.quantize) throw new Error('convertQuantLSTM: the model runs with quantize=false; only a fake-quant model has integer semantics');
  checkObservedRanges('convertQuantLSTM', model.inputAbsMax, model.hiddenAbsMax);
  const layerNorm = model.layerNorm ? model.quantizedLayerNorm().params : undefined;
  return new IntLSTM(integerLstmParams(model, model.inputScale, model.hiddenScale, layerNorm));
}

/**
 * The integer parameters of a QuantLSTM at given x and h scales (the converter's, and what the
 * LN-LSTM's fake quantization runs at every forward). @internal
 */
export function integerLstmParams(model: QuantLSTM, sx: number, sh: number, layerNorm?: IntLSTMLayerNorm): IntLSTMParams {
  const { inputSize, hiddenSize } = model;
  const rows = 4 * hiddenSize;
  const frac = layerNorm ? LN_INPUT_FRAC : GATE_FRAC;
  const bits = model.weightBits;
  const weights = rowWeightParams(model.weightIh, model.weightHh, bits, sx * 2 ** frac, sh * 2 ** frac);
  const bias = new Int32Array(rows);
  for (let r = 0; r < rows; r++) bias[r] = clamp(roundHalfEven(Math.fround(model.biasIh.data[r]! + model.biasHh.data[r]!) * 2 ** GATE_FRAC), -(2 ** 24), 2 ** 24);
  const out = quantizeMultiplier(2 ** -ACT_FRAC / sh);
  return {
    inputSize, hiddenSize, inputScale: sx, hiddenScale: sh, weightBits: bits,
    ...weights, bias,
    outputMultiplier: out.multiplier, outputShift: out.shift,
    sigmoid: model.tables.sigmoid, tanh: model.tables.tanh,
    ...(layerNorm ? { layerNorm } : {}),
  };
}

/**
 * x (real) → int8 codes at `scale`, round half to even, saturated to ±127 (±Infinity included, as
 * the fake quantization clamps); NaN has no code: a RangeError names `owner` and its index. @internal
 */
export function quantizeInt8Input(owner: string, x: ArrayLike<number>, scale: number): Int8Array {
  const q = new Int8Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (Number.isNaN(v)) throw new RangeError(`${owner}.quantizeInput: x[${i}] is NaN; the int8 input has no code for it`);
    q[i] = clamp(roundHalfEven(v / scale), -Q8_MAX, Q8_MAX);
  }
  return q;
}

/**
 * Throws unless both abs-max observers ([1] buffers) hold a positive range. 0 is also what an
 * observation of all-zero values leaves (zero inputs, or zero weights giving h = 0). @internal
 */
export function checkObservedRanges(owner: string, inputAbsMax: Tensor, hiddenAbsMax: Tensor): void {
  const ranges = [['input', inputAbsMax.data[0]!], ['hidden', hiddenAbsMax.data[0]!]] as const;
  const unset = ranges.filter(([, v]) => !(v > 0)).map(([name]) => name);
  if (unset.length > 0) {
    throw new Error(`${owner}: the ${unset.join(' and ')} range${unset.length > 1 ? 's are' : ' is'} 0: never observed, or only zeros were seen; run the model in training mode on representative data (QAT or a calibration pass) first`);
  }
}

/**
 * The integer weights of a recurrent layer ([rows, I] and [rows, H]): codes at the per-row scales
 * `rowScales(w, bits)` (round half to even, clamped to ±(2^(b−1)−1)) and per-row multipliers for
 * s_w·`ihScale` and s_w·`hhScale` (the accumulators' real scale onto the target grid). @internal
 */
export function rowWeightParams(weightIh: Tensor, weightHh: Tensor, bits: number, ihScale: number, hhScale: number): {
  weightIh: Int8Array; weightHh: Int8Array; multiplierIh: Int32Array; shiftIh: Int32Array; multiplierHh: Int32Array; shiftHh: Int32Array;
} {
  const rows = weightIh.shape[0]!;
  const top = weightMax(bits);
  const quantizeRows = (w: Tensor, scales: Float32Array): Int8Array => {
    const cols = w.shape[1]!;
    const q = new Int8Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) q[r * cols + j] = clamp(roundHalfEven(Math.fround(w.data[r * cols + j]!) / scales[r]!), -top, top);
    return q;
  };
  const scalesIh = rowScales(weightIh, bits);
  const scalesHh = rowScales(weightHh, bits);
  const multiplierIh = new Int32Array(rows);
  const shiftIh = new Int32Array(rows);
  const multiplierHh = new Int32Array(rows);
  const shiftHh = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const a = quantizeMultiplier(scalesIh[r]! * ihScale);
    const b = quantizeMultiplier(scalesHh[r]! * hhScale);
    multiplierIh[r] = a.multiplier;
    shiftIh[r] = a.shift;
    multiplierHh[r] = b.multiplier;
    shiftHh[r] = b.shift;
  }
  return { weightIh: quantizeRows(weightIh, scalesIh), weightHh: quantizeRows(weightHh, scalesHh), multiplierIh, shiftIh, multiplierHh, shiftHh };
}
