/**
 * IntGRU: the integer-only runtime of a QuantGRU (the GRU twin of IntLSTM, formats in ./formats.ts).
 * Weights are int8 codes (2..8 bits used) with per-row scales folded into fixed-point multipliers
 * M0·2^−n (src/runtime/requantize.ts); the state is int8 h at scale s_h; accumulators are int32;
 * the gates are the integer PWL tables. Per step and sequence, gate rows in PyTorch's order r, z, n
 * (accX = W_ih·x, accH = W_hh·h, int8 × int8 → int32):
 *   gx = clamp(rq(accX; M_ih), ±2^24),  gh = clamp(rq(accH; M_hh), ±2^24)              Q3.12
 *   r, z = PWL_σ(clamp16(gx + gh + b))               (b = b_ih + b_hh, rows r and z)    Q0.15
 *   hn   = clamp16(gh_n + b_hn)                                                        Q3.12
 *   n    = PWL_tanh(clamp16(gx_n + b_in + roundShift(r·hn, 15)))                       Q0.15
 *   h'   = clamp8(rq(roundShift((2^15 − z)·n, 15); M_out) + roundShift(z·h, 15))       int8 at s_h
 * with M_out ≈ 2^−15/s_h. The last line is h' = (1 − z)⊙n + z⊙h: (1 − z)·n is rounded to Q0.15
 * and requantized to h's grid, z·h is already on h's grid (z·h_code·2^−15 codes) and only rounded.
 * Real numbers appear only at the boundary (`quantizeInput`, `hiddenScale`).
 */
import { quantizeMultiplier, requantizeScalar } from '../../runtime/requantize.ts';
import { gemmInt8, nativeIntAddon, packInt8Weights, type PackedWeights } from '../../runtime/kernels/index.ts';
import type { NativeAddon } from '../../backend/native/addon.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { ACT_FRAC, GATE_FRAC, INT16_MAX, INT16_MIN, Q8_MAX, WIDE, packedWeightBytes } from './formats.ts';
import { evalIntPwl, evalIntPwlIndexed, pwlSegmentIndex, roundShift, type IntPwl } from './pwl.ts';
import { checkObservedRanges, nativeCellTables, quantizeInt8Input, requantizeExact, rowWeightParams, shiftPowers, type ShiftPowers } from './intlstm.ts';
import type { QuantGRU } from './qgru.ts';

/** Everything an IntGRU holds (what the file stores). */
export interface IntGRUParams {
  readonly inputSize: number;
  readonly hiddenSize: number;
  /** Real value of one step of x and of h (float32). */
  readonly inputScale: number;
  readonly hiddenScale: number;
  /** [3H, inputSize] and [3H, hiddenSize] int8 codes, gates r, z, n; every code in ±(2^(b−1)−1). */
  readonly weightIh: Int8Array;
  readonly weightHh: Int8Array;
  /** Bit width of the weights (2..8; absent = 8): the file packs them to it. */
  readonly weightBits?: number;
  /** Per row [3H]: W_ih·x accumulator → Q3.12, and W_hh·h → Q3.12. */
  readonly multiplierIh: Int32Array;
  readonly shiftIh: Int32Array;
  readonly multiplierHh: Int32Array;
  readonly shiftHh: Int32Array;
  /** Q3.12 [3H]: b_ih + b_hh on the r and z rows, b_in on the n rows. */
  readonly bias: Int32Array;
  /** Q3.12 [H]: b_hn (added to W_hn·h before r multiplies it). */
  readonly biasHn: Int32Array;
  /** (1 − z)·n in Q0.15 → int8 h (≈ 2^−15 / s_h). */
  readonly outputMultiplier: number;
  readonly outputShift: number;
  readonly sigmoid: IntPwl;
  readonly tanh: IntPwl;
}

/**
 * Integer intermediates of GRU steps for `count` sequences (sequence k at k·3H, k·2H, k·H), kept so
 * that QuantGRU's fake quantization can take the runtime's values. @internal
 */
export interface GruStepBuffers {
  /** Requantized W_ih·x and W_hh·h, Q3.12 [3H]. */
  readonly gx: Int32Array;
  readonly gh: Int32Array;
  /** r and z pre-activations Q3.12 and gates Q0.15 [2H]. */
  readonly rzPre: Int32Array;
  readonly rz: Int32Array;
  /** W_hn·h + b_hn, the n pre-activation (Q3.12) and n (Q0.15) [H]. */
  readonly hn: Int32Array;
  readonly nPre: Int32Array;
  readonly n: Int32Array;
}

/** @internal */
export function gruStepBuffers(hiddenSize: number, count: number): GruStepBuffers {
  const H = hiddenSize * count;
  return {
    gx: new Int32Array(3 * H), gh: new Int32Array(3 * H), rzPre: new Int32Array(2 * H), rz: new Int32Array(2 * H),
    hn: new Int32Array(H), nPre: new Int32Array(H), n: new Int32Array(H),
  };
}

/** Precomputed lookups of the batched path: PWL segments and powers of two of the shifts. */
interface FastPath {
  readonly sigmoid: Uint8Array;
  readonly tanh: Uint8Array;
  readonly ih: ShiftPowers;
  readonly hh: ShiftPowers;
  readonly out: ShiftPowers;
}

// Module-local copies of the imported constants and hot functions: under the TypeScript loader an
// imported binding is a getter call, which tripled the cell's time (measured with --cpu-prof).
const LO16 = INT16_MIN;
const HI16 = INT16_MAX;
const WIDE_RANGE = WIDE;
const H_MAX = Q8_MAX;
const GATE_SHIFT = ACT_FRAC;
const shiftRound = roundShift;
const pwlIndexed = evalIntPwlIndexed;
const rqExact = requantizeExact;

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** 1 in Q0.15 (the subtrahend of 1 − z). */
const ONE_Q15 = 1 << ACT_FRAC;

/**
 * One GRU cell update of sequence `seq` (formulas in the file comment): accX[xOff..+3H],
 * accH[hAccOff..+3H] int32, h the previous int8 state (at hOff), writes the new h to out (at hOff)
 * and the intermediates to `b`. With `fast`, PWL segments are looked up and the requantization is
 * `requantizeExact` (the same integers). @internal
 */
export function gruCellUpdate(
  p: IntGRUParams, accX: Int32Array, xOff: number, accH: Int32Array, hAccOff: number, h: Int8Array, hOff: number, out: Int8Array,
  b: GruStepBuffers, seq: number, fast: FastPath | null = null,
): void {
  const H = p.hiddenSize;
  const { multiplierIh, shiftIh, multiplierHh, shiftHh, bias, biasHn, sigmoid, tanh } = p;
  const o3 = seq * 3 * H;
  const o2 = seq * 2 * H;
  const o1 = seq * H;
  for (let r = 0; r < 3 * H; r++) {
    const ax = accX[xOff + r]!;
    const ah = accH[hAccOff + r]!;
    b.gx[o3 + r] = clamp(fast ? rqExact(ax, multiplierIh[r]!, shiftIh[r]!, fast.ih.unit[r]!, fast.ih.half[r]!) : requantizeScalar(ax, multiplierIh[r]!, shiftIh[r]!), -WIDE_RANGE, WIDE_RANGE);
    b.gh[o3 + r] = clamp(fast ? rqExact(ah, multiplierHh[r]!, shiftHh[r]!, fast.hh.unit[r]!, fast.hh.half[r]!) : requantizeScalar(ah, multiplierHh[r]!, shiftHh[r]!), -WIDE_RANGE, WIDE_RANGE);
  }
  for (let r = 0; r < 2 * H; r++) {
    const pre = clamp(b.gx[o3 + r]! + b.gh[o3 + r]! + bias[r]!, LO16, HI16);
    b.rzPre[o2 + r] = pre;
    b.rz[o2 + r] = fast ? pwlIndexed(sigmoid, fast.sigmoid, pre) : evalIntPwl(sigmoid, pre);
  }
  for (let k = 0; k < H; k++) {
    const hn = clamp(b.gh[o3 + 2 * H + k]! + biasHn[k]!, LO16, HI16);
    b.hn[o1 + k] = hn;
    // |r·hn| < 2^30: an int32 product.
    const pre = clamp(b.gx[o3 + 2 * H + k]! + bias[2 * H + k]! + shiftRound(b.rz[o2 + k]! * hn, GATE_SHIFT), LO16, HI16);
    b.nPre[o1 + k] = pre;
    const n = fast ? pwlIndexed(tanh, fast.tanh, pre) : evalIntPwl(tanh, pre);
    b.n[o1 + k] = n;
    const z = b.rz[o2 + H + k]!;
    const keep = shiftRound((ONE_Q15 - z) * n, GATE_SHIFT);
    const moved = fast ? rqExact(keep, p.outputMultiplier, p.outputShift, fast.out.unit[0]!, fast.out.half[0]!) : requantizeScalar(keep, p.outputMultiplier, p.outputShift);
    out[hOff + k] = clamp(moved + shiftRound(z * h[hOff + k]!, GATE_SHIFT), -H_MAX, H_MAX);
  }
}

/**
 * One time step for a batch with plain loops (the reference `IntGRU.run` is tested against):
 * x [N·I] int8, h [N·H] int8 in, out [N·H] int8 (must not alias h).
 */
export function intGruStep(p: IntGRUParams, batch: number, x: Int8Array, h: Int8Array, out: Int8Array): void {
  const I = p.inputSize;
  const H = p.hiddenSize;
  const rows = 3 * H;
  const accX = new Int32Array(rows);
  const accH = new Int32Array(rows);
  const b = gruStepBuffers(H, 1);
  for (let n = 0; n < batch; n++) {
    for (let r = 0; r < rows; r++) {
      let sx = 0;
      for (let j = 0; j < I; j++) sx += p.weightIh[r * I + j]! * x[n * I + j]!;
      let sh = 0;
      for (let j = 0; j < H; j++) sh += p.weightHh[r * H + j]! * h[n * H + j]!;
      accX[r] = sx;
      accH[r] = sh;
    }
    gruCellUpdate(p, accX, 0, accH, 0, h, n * H, out, b, 0, null);
  }
}

/** Options of `IntGRU.run`. */
export interface IntGRURunOptions {
  /**
   * Run the cell (requantization, PWL gates, h update, and the W_hh product) in the native kernel
   * (native/intgru.cc) when the addon has it and accepts the parameters (default true); false runs the
   * TypeScript cell `gruCellUpdate`, the reference the native one equals bit for bit.
   */
  native?: boolean;
  /**
   * For benchmarks and tests: run this native cell path instead of the best one (`cellBackend`):
   * 'avx512', 'avx2' (8 units per vector), 'avx2-loop' (the int64 row loop) or 'scalar'. Every path
   * gives the same integers. Throws when the native cell does not run or the path cannot run here (a
   * path above the active ISA, or a vector path with tables the vector PWL cannot hold).
   */
  cellPath?: IntGRUCellPath;
}

/** The native GRU cell's builds (native/intgru.h). */
export type IntGRUCellPath = 'avx512' | 'avx2' | 'avx2-loop' | 'scalar';

/** What the native cell needs besides the weights: the parameters flattened as native/intgru.h reads them. */
interface NativeGruCell {
  readonly addon: NativeAddon;
  readonly path: string;
  /** [steps, batch, hidden, input, outMult, outShift, sigmoid shift, min, max, tanh shift, min, max]; steps and batch set per run. */
  readonly dims: Int32Array;
  /** multIh | shiftIh | multHh | shiftHh | bias (3H each) | biasHn (H). */
  readonly rows: Int32Array;
  readonly sigmoid: Int32Array;
  readonly tanh: Int32Array;
}

/** The integer-only GRU runtime. */
export class IntGRU {
  readonly params: IntGRUParams;
  private packedWeights: { ih: PackedWeights; hh: PackedWeights } | null = null;
  private fastPath: FastPath | null = null;
  /** The native cell's flattened parameters, or why the native cell does not run (cached per addon state). */
  private nativeState: { addon: NativeAddon | null; cell: NativeGruCell | string } | null = null;

  constructor(params: IntGRUParams) {
    const { inputSize: I, hiddenSize: H } = params;
    const rows = 3 * H;
    const sizes: [string, number, number][] = [
      ['weightIh', params.weightIh.length, rows * I], ['weightHh', params.weightHh.length, rows * H],
      ['multiplierIh', params.multiplierIh.length, rows], ['shiftIh', params.shiftIh.length, rows],
      ['multiplierHh', params.multiplierHh.length, rows], ['shiftHh', params.shiftHh.length, rows],
      ['bias', params.bias.length, rows], ['biasHn', params.biasHn.length, H],
    ];
    for (const [name, got, want] of sizes) if (got !== want) throw new RangeError(`IntGRU: ${name} has ${got} values, expected ${want} (inputSize ${I}, hiddenSize ${H}, 3 gates)`);
    this.params = params;
  }

  get inputSize(): number {
    return this.params.inputSize;
  }

  get hiddenSize(): number {
    return this.params.hiddenSize;
  }

  /** Bytes of the weights (packed at `weightBits` as the file stores them), per-row int32 parameters, biases and tables. */
  get byteLength(): number {
    const p = this.params;
    const rows = 3 * p.hiddenSize;
    const table = (t: IntPwl): number => (t.knots.length + t.values.length + t.slopes.length) * 4;
    const bits = p.weightBits ?? 8;
    return packedWeightBytes(p.weightIh.length, bits) + packedWeightBytes(p.weightHh.length, bits) + rows * 4 * 5 + p.hiddenSize * 4 + table(p.sigmoid) + table(p.tanh) + 4 * 4;
  }

  /**
   * x (real) → int8 codes at the input scale, round half to even, saturated to ±127 (as QuantGRU's
   * fake quantization). NaN throws a RangeError naming its index.
   */
  quantizeInput(x: ArrayLike<number>): Int8Array {
    return quantizeInt8Input('IntGRU', x, this.params.inputScale);
  }

  private packed(): { ih: PackedWeights; hh: PackedWeights } {
    const p = this.params;
    this.packedWeights ??= { ih: packInt8Weights(p.weightIh, 3 * p.hiddenSize, p.inputSize), hh: packInt8Weights(p.weightHh, 3 * p.hiddenSize, p.hiddenSize) };
    return this.packedWeights;
  }

  /** The native cell for the current addon state, or why there is none. */
  private nativeCell(): NativeGruCell | string {
    const addon = nativeIntAddon();
    if (this.nativeState && this.nativeState.addon === addon) return this.nativeState.cell;
    let cell: NativeGruCell | string;
    if (!addon) cell = 'the native addon is not loaded (or the reference kernels are forced)';
    else if (!addon.intGruSequence || !addon.intGruPath) cell = 'the native addon predates the integer GRU kernel';
    else {
      const p = this.params;
      const H = p.hiddenSize;
      const tables = nativeCellTables(p);
      if (typeof tables === 'string') cell = tables;
      else {
        const rows = new Int32Array(16 * H);
        [p.multiplierIh, p.shiftIh, p.multiplierHh, p.shiftHh, p.bias].forEach((a, j) => rows.set(a, j * 3 * H));
        rows.set(p.biasHn, 15 * H);
        const { dims, sigmoid, tanh } = tables;
        try {
          cell = { addon, path: addon.intGruPath(dims, rows, sigmoid, tanh), dims, rows, sigmoid, tanh };
        } catch (error) {
          cell = error instanceof Error ? error.message.replace(/^lowbit_native: intGruPath: /, '') : String(error);
        }
      }
    }
    this.nativeState = { addon, cell };
    return cell;
  }

  /**
   * Where `run` computes the cell: 'native avx512' | 'native avx2' (8 units per AVX2 vector) |
   * 'native avx2-loop' (the int64 row loop, for tables the vector kernel cannot hold) | 'native scalar',
   * or 'typescript (<why>)' when the native kernel is missing or refuses the parameters (it needs
   * requantization shifts in [10, 62] and valid PWL tables, as every converted model has).
   */
  get cellBackend(): string {
    const cell = this.nativeCell();
    return typeof cell === 'string' ? `typescript (${cell})` : `native ${cell.path}`;
  }

  /**
   * Runs `steps` steps over `batch` sequences: x int8 time-major [L, N, I], optional initial h
   * [N, H] int8 (zeros by default). Returns h of every step [L, N, H] (real value q·hiddenScale)
   * and the final state { h } (shaped as IntLSTM.run's, without c). The products are the runtime's
   * int8 GEMM (src/runtime/kernels: native VNNI/AVX2 or the TypeScript reference, bit-identical); the
   * cell is the native one (`cellBackend`; see `options.native`) or `gruCellUpdate`, the same integers.
   */
  run(x: Int8Array, steps: number, batch: number, initial?: Int8Array, options: IntGRURunOptions = {}): { output: Int8Array; state: { h: Int8Array } } {
    const { inputSize: I, hiddenSize: H } = this.params;
    if (!Number.isInteger(steps) || steps < 1 || !Number.isInteger(batch) || batch < 1) throw new RangeError(`IntGRU.run: steps and batch must be positive integers, got ${steps}, ${batch}`);
    if (x.length !== steps * batch * I) throw new RangeError(`IntGRU.run: x has ${x.length} values, expected L·N·I = ${steps}·${batch}·${I}`);
    if (initial && initial.length !== batch * H) throw new RangeError(`IntGRU.run: the initial h must hold N·H = ${batch * H} values, got ${initial.length}`);
    if (options.cellPath !== undefined && options.native === false) throw new RangeError('IntGRU.run: options.cellPath names a native cell path, but options.native is false');
    const cell = options.native === false ? null : this.nativeCell();
    if (options.cellPath !== undefined && typeof cell === 'string') throw new Error(`IntGRU.run: the ${options.cellPath} cell path was asked for, but the native cell does not run (${cell})`);
    if (cell && typeof cell !== 'string') {
      let { ih, hh } = this.packed();
      if (!ih.panel || !hh.panel) {
        // Packed while the reference kernels were forced: pack again for the native GEMM.
        this.packedWeights = null;
        ({ ih, hh } = this.packed());
      }
      if (ih.panel && hh.panel) {
        const output = new Int8Array(steps * batch * H);
        const h0 = initial ? initial.slice() : new Int8Array(batch * H);
        const dims = cell.dims.slice();
        dims[0] = steps;
        dims[1] = batch;
        cell.addon.intGruSequence!(dims, cell.rows, cell.sigmoid, cell.tanh, x, ih.panel, ih.rowSums, hh.panel, hh.rowSums, h0, output, options.cellPath);
        return { output, state: { h: output.slice((steps - 1) * batch * H) } };
      }
      if (options.cellPath !== undefined) throw new Error(`IntGRU.run: the ${options.cellPath} cell path was asked for, but the native int8 GEMM is not available`);
    }
    const p = this.params;
    this.fastPath ??= {
      sigmoid: pwlSegmentIndex(p.sigmoid), tanh: pwlSegmentIndex(p.tanh),
      ih: shiftPowers(p.shiftIh), hh: shiftPowers(p.shiftHh), out: shiftPowers([p.outputShift]),
    };
    const rows = 3 * H;
    const { ih, hh } = this.packed();
    // The input projection of every step at once (it does not depend on h): [L·N, 3H] int32.
    const accX = new Int32Array(steps * batch * rows);
    gemmInt8(steps * batch, rows, I, x, 0, ih, accX);
    const accH = new Int32Array(batch * rows);
    const buffers = gruStepBuffers(H, batch);
    const output = new Int8Array(steps * batch * H);
    let h = initial ? initial.slice() : new Int8Array(batch * H);
    for (let t = 0; t < steps; t++) {
      gemmInt8(batch, rows, H, h, 0, hh, accH);
      const next = output.subarray(t * batch * H, (t + 1) * batch * H);
      for (let n = 0; n < batch; n++) gruCellUpdate(p, accX, (t * batch + n) * rows, accH, n * rows, h, n * H, next, buffers, n, this.fastPath);
      h = next;
    }
    return { output, state: { h: h.slice() } };
  }
}

/**
 * The integer parameters of a QuantGRU at given x and h scales (the converter's, and what the
 * fake quantization runs at every forward): weight codes at the per-row scales `rowScales`,
 * multipliers for s_w·s_x·2^12 and s_w·s_h·2^12, biases rounded to Q3.12, M_out for 2^−15/s_h. @internal
 */
export function integerGruParams(model: QuantGRU, sx: number, sh: number): IntGRUParams {
  const { inputSize, hiddenSize: H } = model;
  const rows = 3 * H;
  const bits = model.weightBits;
  const weights = rowWeightParams(model.weightIh, model.weightHh, bits, sx * 2 ** GATE_FRAC, sh * 2 ** GATE_FRAC);
  const bias = new Int32Array(rows);
  const biasHn = new Int32Array(H);
  const q12 = (v: number): number => clamp(roundHalfEven(Math.fround(v) * 2 ** GATE_FRAC), -WIDE, WIDE);
  const bih = model.biasIh.data;
  const bhh = model.biasHh.data;
  for (let r = 0; r < rows; r++) bias[r] = r < 2 * H ? q12(bih[r]! + bhh[r]!) : q12(bih[r]!);
  for (let k = 0; k < H; k++) biasHn[k] = q12(bhh[2 * H + k]!);
  const out = quantizeMultiplier(2 ** -ACT_FRAC / sh);
  return {
    inputSize, hiddenSize: H, inputScale: sx, hiddenScale: sh, weightBits: bits,
    ...weights, bias, biasHn,
    outputMultiplier: out.multiplier, outputShift: out.shift,
    sigmoid: model.tables.sigmoid, tanh: model.tables.tanh,
  };
}

/**
 * The IntGRU of a trained QuantGRU (its observed x and h scales, weights, biases and PWL tables).
 * Its `run` equals the QuantGRU's eval-mode forward bit for bit.
 */
export function convertQuantGRU(model: QuantGRU): IntGRU {
  if (!model.quantize) throw new Error('convertQuantGRU: the model runs with quantize=false; only a fake-quant model has integer semantics');
  checkObservedRanges('convertQuantGRU', model.inputAbsMax, model.hiddenAbsMax);
  return new IntGRU(integerGruParams(model, model.inputScale, model.hiddenScale));
}
