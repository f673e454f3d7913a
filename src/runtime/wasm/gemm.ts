/**
 * Integer GEMM in WebAssembly SIMD128 for the TypeScript executor, emitted at run time with
 * ./emitter.ts (no toolchain needed; this module and ./layout.ts's are each under 4 KB, so the
 * synchronous `new WebAssembly.Module` is fine on a browser's main thread).
 *
 *   out[o, p] = Σ_k w[o, k]·x[k, p]   (int32, wrapping modulo 2^32 like the reference kernels)
 *
 * Operands are int16. i32x4.dot_i16x8_s multiplies 8 pairs of int16 and adds neighbouring
 * products into 4 int32 lanes; with x laid out as k-pairs of 4 pixels and a weight pair splatted
 * to all lanes, one instruction gives 2 multiply-accumulates for each of 4 pixels of one channel.
 * Every product and pair sum is exact in int32 when |w| ≤ 128 and |x| ≤ 32767 (callers check),
 * and the accumulation wraps modulo 2^32, so the result equals the reference's wrapped int32 sum
 * whatever the order of the additions.
 *
 * Layouts (int16 elements unless stated):
 * - weights [O4, K2, 4, 2]: block of 4 channels, k-pair kp, channel c, k parity
 *   (channels padded to a multiple of 4 and K to a multiple of 2 with zeros);
 * - x [K2, xStride, 2]: k-pair kp, pixel p, parity; Pp (the pixels computed) a multiple of 8,
 *   xStride ≥ Pp (+ the shift of a shifted view). Cells of pixels ≥ P and of the padding k row may
 *   hold anything (padded weights are zero; pixels are independent columns);
 * - out int32 [4·O4, Pp]: channel-major.
 * The kernel keeps 4 channels × 8 pixels in 8 v128 accumulators.
 *
 * The same module exports `requantize` (the output stage of ../ts-kernels/requantize.ts, exact
 * where it marks a value sure; see `requantConstants`) and `add` (the residual add of
 * ../ts-kernels/add.ts, repeating its fast path's IEEE operations) in f64x2, each marking the
 * values the caller must compute exactly, and `compact`. The second module (./layout.ts) builds the
 * x operands, quantizes the model input and pools; `WasmGemm` instantiates both on one memory.
 * @internal
 */
import { wasmApi, type WasmApi, type WasmMemory } from './api.ts';
import { Code, emitModule, ValType } from './emitter.ts';
import { layoutModuleBytes, PAD_MODES, type PadMode } from './layout.ts';

export type { PadMode } from './layout.ts';

const PAGE = 65536;

/** True for an integer in the int32 range. */
function isInt32(v: number): boolean {
  return Number.isInteger(v) && v >= -(2 ** 31) && v <= 2 ** 31 - 1;
}

/**
 * The GEMM kernel as a function body: gemm(w, x, out, oBlocks, K2, Pp, xStride, accumulate) (byte
 * addresses; x rows of xStride pixels; accumulate ≠ 0 adds to `out` instead of overwriting it).
 */
function gemmBody(): { locals: ValType[]; body: Code } {
  // params 0..7: w, x, out, oBlocks, K2, Pp, xStride, accumulate
  const [W, X, OUT, OB, K2, PP, XSTRIDE, ACCUMULATE] = [0, 1, 2, 3, 4, 5, 6, 7];
  // i32 locals
  const CB = 8, P = 9, KP = 10, WP = 11, XP = 12, ROW = 13, WBLOCK = 14, OBASE = 15, XROW = 16;
  // v128 locals
  const ACC = 17; // 8 accumulators: channel c, pixel vector j at ACC + 2c + j
  const X0 = 25, X1 = 26, WV = 27;
  const locals: ValType[] = [...Array<ValType>(9).fill(ValType.i32), ...Array<ValType>(11).fill(ValType.v128)];
  const c = new Code();
  // ROW = Pp·4 bytes per channel row of out, XROW = xStride·4 bytes per k-pair row of x
  c.localGet(PP).i32Const(4).i32Mul().localSet(ROW);
  c.localGet(XSTRIDE).i32Const(4).i32Mul().localSet(XROW);
  c.i32Const(0).localSet(CB);
  c.loop(); // over channel blocks
  {
    // WBLOCK = w + cb·K2·16
    c.localGet(W).localGet(CB).localGet(K2).i32Mul().i32Const(16).i32Mul().i32Add().localSet(WBLOCK);
    // OBASE = out + cb·4·ROW
    c.localGet(OUT).localGet(CB).i32Const(4).i32Mul().localGet(ROW).i32Mul().i32Add().localSet(OBASE);
    c.i32Const(0).localSet(P);
    c.loop(); // over pixel blocks of 8
    {
      c.localGet(ACCUMULATE).if();
      for (let ch = 0; ch < 4; ch++) {
        for (let j = 0; j < 2; j++) {
          c.localGet(OBASE).localGet(ROW).i32Const(ch).i32Mul().i32Add().localGet(P).i32Const(4).i32Mul().i32Add();
          c.v128Load(16 * j).localSet(ACC + 2 * ch + j);
        }
      }
      c.else();
      for (let i = 0; i < 8; i++) c.v128Const(Array<number>(16).fill(0)).localSet(ACC + i);
      c.end();
      c.localGet(WBLOCK).localSet(WP);
      c.localGet(X).localGet(P).i32Const(4).i32Mul().i32Add().localSet(XP);
      c.localGet(K2).localSet(KP);
      c.loop(); // over k pairs
      {
        c.localGet(XP).v128Load(0).localSet(X0);
        c.localGet(XP).v128Load(16).localSet(X1);
        for (let ch = 0; ch < 4; ch++) {
          c.localGet(WP).v128Load32Splat(4 * ch).localSet(WV);
          for (let j = 0; j < 2; j++) {
            c.localGet(ACC + 2 * ch + j).localGet(WV).localGet(j === 0 ? X0 : X1).i32x4DotI16x8S().i32x4Add().localSet(ACC + 2 * ch + j);
          }
        }
        c.localGet(WP).i32Const(16).i32Add().localSet(WP);
        c.localGet(XP).localGet(XROW).i32Add().localSet(XP);
        c.localGet(KP).i32Const(1).i32Sub().localTee(KP).brIf(0);
      }
      c.end();
      // store: channel ch row at OBASE + ch·ROW + P·4, pixel vectors j at +16j
      for (let ch = 0; ch < 4; ch++) {
        for (let j = 0; j < 2; j++) {
          c.localGet(OBASE).localGet(ROW).i32Const(ch).i32Mul().i32Add().localGet(P).i32Const(4).i32Mul().i32Add();
          c.localGet(ACC + 2 * ch + j).v128Store(16 * j);
        }
      }
      c.localGet(P).i32Const(8).i32Add().localTee(P).localGet(PP).i32LtU().brIf(0);
    }
    c.end();
    c.localGet(CB).i32Const(1).i32Add().localTee(CB).localGet(OB).i32LtU().brIf(0);
  }
  c.end();
  return { locals, body: c };
}

/** Below this the add kernel's rounded sums stay (../ts-kernels/add.ts). */
const SMALL = 2 ** 29;
/** `requantize` rounds e = acc·F + C itself only where |e| < RANGE. */
const RANGE = 2 ** 27;
/** Per-channel constants C = bias·ratio + ½ are only used below this; larger ones mark the channel unsure. */
const CONST_RANGE = 2 ** 26;
/**
 * |frac(e) − ½| below this: e is not within 2^−20 of an integer (see `requantConstants` for why
 * that makes ⌊e⌋ exact).
 */
const NEAR = 0.5 - 2 ** -20;
/** What `requantize` writes for a value it leaves to the scalar path (below every clamp range it accepts). */
export const REQUANT_UNSURE = -(2 ** 31);
/** Bytes of one channel's constants for `requantize`: F, C (doubles), the bounded flag (int32), padding. */
export const REQUANT_CONST_BYTES = 32;

/**
 * The per-channel constants of `requantize` for the output stage q = round((acc·up + bias)·ratio)
 * (ratio = M0·2^−n exactly, up = 2^k; the reference rounds the exact product once): F = up·ratio
 * (exact), C = bias·ratio + ½ (two roundings) and a flag "bounded" (2^31·|F| + |C| < 2^26: every
 * int32 accumulator gives |e| < 2^27). The kernel computes e = acc·F + C (two more roundings) and
 * t = ⌊e⌋. Where |e| < 2^27 (and |C| < 2^26), every intermediate is below 2^28, so each rounding
 * errs by at most 2^−25 and e is within 2^−23 of the exact (acc·up + bias)·ratio + ½; when e is
 * more than 2^−20 from an integer, so is the exact value, which then lies strictly between t and
 * t + 1: t is the exact product's nearest integer, and it is no tie. Channels whose F is not exact
 * (under- or overflow) or whose |C| ≥ 2^26 get F = NaN: every value unsure (the scalar path).
 */
export function requantConstants(bias: ArrayLike<number>, ratio: ArrayLike<number>, up: number): Float64Array {
  const channels = bias.length;
  const buffer = new ArrayBuffer(REQUANT_CONST_BYTES * channels);
  const f64 = new Float64Array(buffer), i32 = new Int32Array(buffer);
  for (let c = 0; c < channels; c++) {
    const r = ratio[c]!;
    let F = up * r;
    const C = bias[c]! * r + 0.5;
    const exact = Number.isFinite(F) && (F === 0 || Math.abs(F) >= 2 ** -1000) && F / up === r;
    if (!(exact && Math.abs(C) < CONST_RANGE)) F = NaN;
    const at = (REQUANT_CONST_BYTES / 8) * c;
    f64[at] = F;
    f64[at + 1] = C;
    i32[2 * at + 4] = 2 ** 31 * Math.abs(F) + Math.abs(C) < CONST_RANGE ? 1 : 0; // (false for NaN)
  }
  return f64;
}

/**
 * requantize(src, dst, rows, oh, ow, Wp, Pp, consts, loT, hiT, z, list) → the number of values left
 * to the caller: the output stage of GEMM rows straight to their compact layout. Row o's values
 * src[o·Pp + oy·Wp + ox] (int32, byte addresses; oy < oh, ox < ow) go to dst[(o·oh + oy)·ow + ox]
 * as clamp(⌊e⌋, loT, hiT) + z with e = acc·F + C in f64x2 (F, C, bounded: the constants of row o
 * at consts + 32·o, see `requantConstants`) where |frac(e) − ½| < NEAR (and |e| < 2^27 unless the
 * row is bounded), else as REQUANT_UNSURE, its source offset o·Pp + oy·Wp + ox appended to the
 * int32 array at `list` (the caller recomputes those values exactly). Works 4 values at a time:
 * each output row may write up to 3 values past its end (the next row overwrites them; the last
 * row's land past dst's rows·oh·ow values) and read up to 3 past its source; the lanes past a row's
 * end are never listed. src and dst must not overlap. All sizes positive.
 */
function requantBody(): { locals: ValType[]; body: Code } {
  const [SRC, DST, ROWS, OH, OW, WP, PP, CONSTS, LOT, HIT, Z, LIST] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const O = 12, OY = 13, S = 14, E = 15, D = 16, N = 17, CB = 18;
  const FV = 19, CV = 20, HALF = 21, NEARP = 22, RANGEV = 23;
  const LOV = 24, HIV = 25, ZV = 26, SENT = 27, A = 28, EV = 29, NR = 30, T0 = 31, T1 = 32, M0 = 33, M1 = 34, T = 35, MASK = 36;
  const locals: ValType[] = [...Array<ValType>(7).fill(ValType.i32), ...Array<ValType>(18).fill(ValType.v128)];
  const c = new Code();
  c.f64Const(0.5).f64x2Splat().localSet(HALF);
  c.f64Const(NEAR).f64x2Splat().localSet(NEARP);
  c.f64Const(RANGE).f64x2Splat().localSet(RANGEV);
  c.localGet(LOT).i32x4Splat().localSet(LOV);
  c.localGet(HIT).i32x4Splat().localSet(HIV);
  c.localGet(Z).i32x4Splat().localSet(ZV);
  c.i32Const(REQUANT_UNSURE).i32x4Splat().localSet(SENT);
  c.i32Const(0).localSet(N);
  c.localGet(DST).localSet(D);
  c.localGet(CONSTS).localSet(CB);
  /** One output row's values from S to E (the range check only when `checkRange`). */
  const rowLoop = (checkRange: boolean): void => {
    c.loop();
    c.localGet(S).v128Load().localSet(A);
    for (const half of [0, 1]) {
      c.localGet(A);
      if (half === 1) c.localGet(A).i8x16Shuffle([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]);
      // e = acc·F + C; t = floor(e); ok = |e − t − ½| < NEAR (& |e| < RANGE); false for NaN
      c.f64x2ConvertLowI32x4S().localGet(FV).f64x2Mul().localGet(CV).f64x2Add().localSet(EV);
      c.localGet(EV).f64x2Floor().localSet(NR);
      c.localGet(EV).localGet(NR).f64x2Sub().localGet(HALF).f64x2Sub().f64x2Abs().localGet(NEARP).f64x2Lt();
      if (checkRange) c.localGet(EV).f64x2Abs().localGet(RANGEV).f64x2Lt().v128And();
      c.localSet(half === 0 ? M0 : M1);
      c.localGet(NR).i32x4TruncSatF64x2SZero().localSet(half === 0 ? T0 : T1);
    }
    // the four int32 results and lane masks
    c.localGet(T0).localGet(T1).i8x16Shuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]).localSet(T);
    c.localGet(M0).localGet(M1).i8x16Shuffle([0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]).localSet(MASK);
    // unsure lanes inside the row: their source offsets to the list
    c.localGet(MASK).i32x4AllTrue().i32Eqz().if();
    for (let lane = 0; lane < 4; lane++) {
      c.localGet(MASK).i32x4ExtractLane(lane).i32Eqz().localGet(S).i32Const(4 * lane).i32Add().localGet(E).i32LtU().i32And().if();
      c.localGet(LIST).localGet(N).i32Const(4).i32Mul().i32Add();
      c.localGet(S).localGet(SRC).i32Sub().i32Const(2).i32ShrS().i32Const(lane).i32Add().i32Store();
      c.localGet(N).i32Const(1).i32Add().localSet(N);
      c.end();
    }
    c.end();
    c.localGet(D);
    c.localGet(T).localGet(LOV).i32x4MaxS().localGet(HIV).i32x4MinS().localGet(ZV).i32x4Add();
    c.localGet(SENT).localGet(MASK).v128Bitselect().v128Store();
    c.localGet(D).i32Const(16).i32Add().localSet(D);
    c.localGet(S).i32Const(16).i32Add().localTee(S).localGet(E).i32LtU().brIf(0);
    c.end();
  };
  c.i32Const(0).localSet(O);
  c.loop(); // rows
  {
    c.localGet(CB).v128Load64Splat().localSet(FV);
    c.localGet(CB).v128Load64Splat(8).localSet(CV);
    c.i32Const(0).localSet(OY);
    c.loop(); // output rows oy
    {
      // S = src + (o·Pp + oy·Wp)·4, E = S + ow·4
      c.localGet(SRC).localGet(O).localGet(PP).i32Mul().localGet(OY).localGet(WP).i32Mul().i32Add().i32Const(4).i32Mul().i32Add().localSet(S);
      c.localGet(S).localGet(OW).i32Const(4).i32Mul().i32Add().localSet(E);
      c.localGet(CB).i32Load(16).if();
      rowLoop(false);
      c.else();
      rowLoop(true);
      c.end();
      // D −= the overshoot (S − E)
      c.localGet(D).localGet(S).localGet(E).i32Sub().i32Sub().localSet(D);
      c.localGet(OY).i32Const(1).i32Add().localTee(OY).localGet(OH).i32LtU().brIf(0);
    }
    c.end();
    c.localGet(CB).i32Const(REQUANT_CONST_BYTES).i32Add().localSet(CB);
    c.localGet(O).i32Const(1).i32Add().localTee(O).localGet(ROWS).i32LtU().brIf(0);
  }
  c.end();
  c.localGet(N);
  return { locals, body: c };
}

/** |a − z_a| and |b − z_b| below this take the double path of ../ts-kernels/add.ts. */
const ADD_LIMIT = 2 ** 21;

/**
 * add(a, b, out, count, za, zb, ma, mb, half, inv, loT, hiT, z) → 1 when every value was done
 * here: the double path of ../ts-kernels/add.ts (addInts) in f64x2 with the same IEEE operations
 * in the same order: t = (a − za)·ma + (b − zb)·mb, m = ⌊(|t| + half)·inv⌋, r = ±m with t's sign,
 * out = clamp(r, loT, hiT) + z where |a − za|, |b − zb| < 2^21 and m < 2^29, else REQUANT_UNSURE
 * (the caller recomputes those values with addInts). count: a positive multiple of 4.
 */
function addBody(): { locals: ValType[]; body: Code } {
  const [A, B, OUT, COUNT, ZA, ZB, MA, MB, HALF, INV, LOT, HIT, Z] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const END = 13;
  const ZAV = 14, ZBV = 15, MAV = 16, MBV = 17, HALFV = 18, INVV = 19, LIMIT = 20, SMALLV = 21, ZERO = 22;
  const LOV = 23, HIV = 24, ZV = 25, SENT = 26, OKALL = 27, AV = 28, BV = 29, DA = 30, DB = 31, T = 32, M = 33;
  const R0 = 34, R1 = 35, M0 = 36, M1 = 37, MASK = 38;
  const locals: ValType[] = [ValType.i32, ...Array<ValType>(25).fill(ValType.v128)];
  const c = new Code();
  c.localGet(A).localGet(COUNT).i32Const(4).i32Mul().i32Add().localSet(END);
  for (const [from, to] of [[ZA, ZAV], [ZB, ZBV], [MA, MAV], [MB, MBV], [HALF, HALFV], [INV, INVV]] as const) c.localGet(from).f64x2Splat().localSet(to);
  c.f64Const(ADD_LIMIT).f64x2Splat().localSet(LIMIT);
  c.f64Const(SMALL).f64x2Splat().localSet(SMALLV);
  c.v128Const(Array<number>(16).fill(0)).localSet(ZERO);
  c.localGet(LOT).i32x4Splat().localSet(LOV);
  c.localGet(HIT).i32x4Splat().localSet(HIV);
  c.localGet(Z).i32x4Splat().localSet(ZV);
  c.i32Const(REQUANT_UNSURE).i32x4Splat().localSet(SENT);
  c.v128Const(Array<number>(16).fill(255)).localSet(OKALL);
  const high = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
  c.loop();
  {
    c.localGet(A).v128Load().localSet(AV);
    c.localGet(B).v128Load().localSet(BV);
    for (const half of [0, 1]) {
      c.localGet(AV);
      if (half === 1) c.localGet(AV).i8x16Shuffle(high);
      c.f64x2ConvertLowI32x4S().localGet(ZAV).f64x2Sub().localSet(DA);
      c.localGet(BV);
      if (half === 1) c.localGet(BV).i8x16Shuffle(high);
      c.f64x2ConvertLowI32x4S().localGet(ZBV).f64x2Sub().localSet(DB);
      // t = da·ma + db·mb; m = floor((|t| + half)·inv)
      c.localGet(DA).localGet(MAV).f64x2Mul().localGet(DB).localGet(MBV).f64x2Mul().f64x2Add().localSet(T);
      c.localGet(T).f64x2Abs().localGet(HALFV).f64x2Add().localGet(INVV).f64x2Mul().f64x2Floor().localSet(M);
      // ok = |da| < LIMIT & |db| < LIMIT & m < SMALL
      c.localGet(DA).f64x2Abs().localGet(LIMIT).f64x2Lt();
      c.localGet(DB).f64x2Abs().localGet(LIMIT).f64x2Lt().v128And();
      c.localGet(M).localGet(SMALLV).f64x2Lt().v128And().localSet(half === 0 ? M0 : M1);
      // r = t < 0 ? −m : m
      c.localGet(M).f64x2Neg().localGet(M).localGet(T).localGet(ZERO).f64x2Lt().v128Bitselect();
      c.i32x4TruncSatF64x2SZero().localSet(half === 0 ? R0 : R1);
    }
    c.localGet(M0).localGet(M1).i8x16Shuffle([0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]).localSet(MASK);
    c.localGet(OKALL).localGet(MASK).v128And().localSet(OKALL);
    c.localGet(OUT);
    c.localGet(R0).localGet(R1).i8x16Shuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]);
    c.localGet(LOV).i32x4MaxS().localGet(HIV).i32x4MinS().localGet(ZV).i32x4Add();
    c.localGet(SENT).localGet(MASK).v128Bitselect().v128Store();
    c.localGet(OUT).i32Const(16).i32Add().localSet(OUT);
    c.localGet(B).i32Const(16).i32Add().localSet(B);
    c.localGet(A).i32Const(16).i32Add().localTee(A).localGet(END).i32LtU().brIf(0);
  }
  c.end();
  c.localGet(OKALL).i32x4AllTrue();
  return { locals, body: c };
}

/**
 * compact(src, dst, rows, oh, ow, Wp, Pp): the valid outputs of a direct convolution, row o's
 * values src[o·Pp + oy·Wp + ox] (int32, byte addresses) for oy < oh, ox < ow, to dst contiguously
 * ([rows, oh, ow]). Copies 4 values per v128: each output row may write up to 3 values past its
 * end (overwritten by the next row) and read up to 3 past its source; the last row's may land up
 * to 12 bytes past dst's rows·oh·ow values. src and dst must not overlap. All sizes positive.
 */
function compactBody(): { locals: ValType[]; body: Code } {
  const [SRC, DST, ROWS, OH, OW, WP, PP] = [0, 1, 2, 3, 4, 5, 6];
  const O = 7, OY = 8, S = 9, E = 10, D = 11;
  const locals: ValType[] = Array<ValType>(5).fill(ValType.i32);
  const c = new Code();
  c.localGet(DST).localSet(D);
  c.i32Const(0).localSet(O);
  c.loop();
  {
    c.i32Const(0).localSet(OY);
    c.loop();
    {
      // S = src + (o·Pp + oy·Wp)·4, E = S + ow·4
      c.localGet(SRC).localGet(O).localGet(PP).i32Mul().localGet(OY).localGet(WP).i32Mul().i32Add().i32Const(4).i32Mul().i32Add().localSet(S);
      c.localGet(S).localGet(OW).i32Const(4).i32Mul().i32Add().localSet(E);
      c.loop();
      c.localGet(D).localGet(S).v128Load().v128Store();
      c.localGet(D).i32Const(16).i32Add().localSet(D);
      c.localGet(S).i32Const(16).i32Add().localTee(S).localGet(E).i32LtU().brIf(0);
      c.end();
      // D −= the overshoot (S − E)
      c.localGet(D).localGet(S).localGet(E).i32Sub().i32Sub().localSet(D);
      c.localGet(OY).i32Const(1).i32Add().localTee(OY).localGet(OH).i32LtU().brIf(0);
    }
    c.end();
    c.localGet(O).i32Const(1).i32Add().localTee(O).localGet(ROWS).i32LtU().brIf(0);
  }
  c.end();
  return { locals, body: c };
}

/** The GEMM module's bytes (gemm, requantize, add, compact; memory imported as env.memory). */
export function gemmModuleBytes(): Uint8Array {
  const gemm = gemmBody();
  const requant = requantBody();
  const add = addBody();
  const i32 = ValType.i32, f64 = ValType.f64;
  return emitModule([
    { params: [i32, i32, i32, i32, i32, i32, i32, i32], results: [], locals: gemm.locals, body: gemm.body, exportName: 'gemm' },
    { params: Array<ValType>(12).fill(i32), results: [i32], locals: requant.locals, body: requant.body, exportName: 'requantize' },
    { params: [i32, i32, i32, i32, f64, f64, f64, f64, f64, f64, i32, i32, i32], results: [i32], locals: add.locals, body: add.body, exportName: 'add' },
    { params: Array<ValType>(7).fill(i32), results: [], ...compactBody(), exportName: 'compact' },
  ], { module: 'env', field: 'memory', minPages: 1 });
}

let compiled: object[] | null | undefined;

/** The compiled kernel modules (GEMM, layout), or null when this engine has no WebAssembly SIMD128. */
function kernelModules(): object[] | null {
  if (compiled !== undefined) return compiled;
  const api = wasmApi();
  compiled = null;
  if (api) {
    try {
      const all = [gemmModuleBytes(), layoutModuleBytes()];
      if (all.every((bytes) => api.validate(bytes))) compiled = all.map((bytes) => new api.Module(bytes));
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

/** True when the engine validates and compiles the SIMD128 kernel modules. */
export function wasmSimdAvailable(): boolean {
  return kernelModules() !== null;
}

/** int16 weights packed for `WasmGemm.gemm` (see the module comment), with their channel count and K. */
export interface Int16Weights {
  readonly channels: number;
  readonly K: number;
  /** Channel blocks of 4. */
  readonly blocks: number;
  /** K rounded up to even. */
  readonly K2: number;
  readonly data: Int16Array;
}

/**
 * Packs int8 weights w[offset + o·rowStride + k·kStride] (o < channels, k < K) as [O4, K2, 4, 2].
 */
export function packInt16Weights(w: Int8Array, offset: number, channels: number, K: number, rowStride = K, kStride = 1): Int16Weights {
  const blocks = Math.ceil(channels / 4);
  const K2 = Math.ceil(K / 2);
  const data = new Int16Array(blocks * K2 * 8);
  for (let o = 0; o < channels; o++) {
    const base = (o >> 2) * K2 * 8 + (o & 3) * 2;
    const src = offset + o * rowStride;
    for (let k = 0; k < K; k++) data[base + (k >> 1) * 8 + (k & 1)] = w[src + k * kStride]!;
  }
  return { channels, K, blocks, K2, data };
}

type Kernel = (...args: number[]) => number;

/**
 * One instance of the kernels with their own memory, laid out as
 *   [weights | arena | scratch]:
 * weights are copied in once (`upload`) and stay; the arena (`arena`) holds a model run's
 * activations at offsets its caller plans; the scratch above it holds the operands of the current
 * kernel (`operands`, `addOperands`, `scratch`), grown on demand. Uploading weights drops the arena
 * (its contents live for one run only; reserve it after the uploads).
 */
export class WasmGemm {
  private readonly memory: WasmMemory;
  private readonly kernels: Record<string, Kernel> = {};
  /** End of the uploaded weights (bytes, 16-aligned). */
  private top = 0;
  /** Start of the scratch space (bytes, 16-aligned): `top` + the arena. */
  private base = 0;
  private buffer: ArrayBuffer | null = null;
  private i16 = new Int16Array(0);
  private i32 = new Int32Array(0);
  private f32 = new Float32Array(0);

  private constructor(api: WasmApi, modules: object[]) {
    this.memory = new api.Memory({ initial: 1 });
    for (const module of modules) {
      const instance = new api.Instance(module, { env: { memory: this.memory } });
      for (const [name, f] of Object.entries(instance.exports)) if (typeof f === 'function') this.kernels[name] = f as Kernel;
    }
    for (const name of ['gemm', 'requantize', 'add', 'compact', 'quantize', 'maxpool', 'avgpool', ...PAD_MODES.flatMap((m) => [`pad_${m}`, `im2col_${m}`])]) {
      if (!this.kernels[name]) throw new Error(`WasmGemm: the kernel modules export no ${name} function`);
    }
  }

  /** A new instance, or null without WebAssembly SIMD128. */
  static create(): WasmGemm | null {
    const api = wasmApi();
    const modules = kernelModules();
    return api && modules ? new WasmGemm(api, modules) : null;
  }

  private ensure(bytes: number): void {
    const have = this.memory.buffer.byteLength;
    if (bytes > have) this.memory.grow(Math.ceil((bytes - have) / PAGE));
    if (this.buffer !== this.memory.buffer) {
      this.buffer = this.memory.buffer;
      this.i16 = new Int16Array(this.buffer);
      this.i32 = new Int32Array(this.buffer);
      this.f32 = new Float32Array(this.buffer);
    }
  }

  /** The whole memory as int32 (the view changes when memory grows: take it after reserving). */
  int32View(): Int32Array {
    this.ensure(0);
    return this.i32;
  }

  /** The whole memory as float32 (see `int32View`). */
  float32View(): Float32Array {
    this.ensure(0);
    return this.f32;
  }

  /** Copies packed weights into memory for good; returns their byte address. Drops the arena. */
  upload(w: Int16Weights): number {
    const at = this.top;
    this.top = at + Math.ceil((w.data.length * 2) / 16) * 16;
    this.base = this.top;
    this.ensure(this.top);
    this.i16.set(w.data, at / 2);
    return at;
  }

  /** Copies doubles into memory for good (e.g. per-channel constants); returns their byte address. Drops the arena. */
  uploadF64(data: Float64Array): number {
    const at = this.top;
    this.top = at + Math.ceil((data.length * 8) / 16) * 16;
    this.base = this.top;
    this.ensure(this.top);
    new Float64Array(this.memory.buffer, at, data.length).set(data);
    return at;
  }

  /**
   * Reserves `int32s` int32 values above the weights for activations (the previous arena's contents
   * are not kept) and returns the int32 element index of its first value; scratch space moves above it.
   */
  arena(int32s: number): number {
    if (!(Number.isInteger(int32s) && int32s >= 0)) throw new RangeError(`WasmGemm.arena: size must be a non-negative integer, got ${int32s}`);
    this.base = this.top + Math.ceil((4 * int32s) / 16) * 16;
    this.ensure(this.base);
    return this.top / 4;
  }

  /** The arena's size in int32 values (0 after an upload). */
  arenaSize(): number {
    return (this.base - this.top) / 4;
  }

  /** Scratch space of `bytes` at the bottom of the scratch region; its byte address (16-aligned). */
  scratch(bytes: number): number {
    this.ensure(this.base + bytes);
    return this.base;
  }

  /**
   * Space for x [K2, Pp, 2] int16 and out [4·blocks, Pp] int32 in the scratch region: the int16 view
   * with x's element index and the int32 view with out's element index (views change when memory
   * grows, so take them after this call). Then room for a second output (q) and for the `list`
   * of `requantize` (4·blocks·Pp int32).
   */
  operands(K2: number, Pp: number, blocks: number, xStride = Pp): { i16: Int16Array; x: number; i32: Int32Array; out: number; q: number; list: number } {
    const xBytes = Math.ceil((K2 * xStride * 4) / 16) * 16;
    const outAt = this.base + xBytes;
    const qAt = outAt + blocks * 4 * Pp * 4;
    const listAt = qAt + blocks * 4 * Pp * 4;
    this.ensure(listAt + blocks * 4 * Pp * 4);
    return { i16: this.i16, x: this.base / 2, i32: this.i32, out: outAt / 4, q: qAt / 4, list: listAt / 4 };
  }

  /** Throws unless int32 values [at, at + count) lie in memory and outside the bytes [from, to). */
  private outside(what: string, at: number, count: number, from: number, to: number): void {
    if (!(Number.isInteger(at) && at >= 0 && 4 * (at + count) <= this.memory.buffer.byteLength)) throw new RangeError(`WasmGemm.${what}: values outside memory`);
    if (4 * at < to && 4 * (at + count) > from) throw new RangeError(`WasmGemm.${what}: source overlapping x`);
  }

  /**
   * The padded input of a direct convolution written to the x operand (see `padBody` in
   * ./layout.ts): from int32 images [channels, h, w] at int32 element index `src` (in the arena, or
   * anywhere not overlapping x), GEMM row r = c·fold + f = channel c's padded plane (the image at
   * (y + ph)·Wp + x + pw, `pad` elsewhere) shifted by f·dw, S cells, rows 2k and 2k + 1
   * interleaved in x row-pair k (x stride S).
   */
  pad(mode: PadMode, src: number, channels: number, fold: number, dw: number, h: number, w: number, Wp: number, ph: number, pw: number, S: number, pad: number, zx: number): void {
    if (!(channels > 0 && fold > 0 && dw >= 0 && h > 0 && w > 0 && Wp >= w + pw && ph >= 0 && pw >= 0 && S >= (h + ph) * Wp)) {
      throw new RangeError(`WasmGemm.pad: bad geometry (channels ${channels}, fold ${fold}, dw ${dw}, h ${h}, w ${w}, Wp ${Wp}, ph ${ph}, pw ${pw}, S ${S})`);
    }
    const rows = channels * fold;
    const xEnd = this.base + Math.ceil(rows / 2) * S * 4;
    if (xEnd > this.memory.buffer.byteLength) throw new RangeError('WasmGemm.pad: x not reserved (call operands() first)');
    this.outside('pad', src, channels * h * w, this.base, xEnd);
    this.kernels[`pad_${mode}`]!(4 * src, this.base, rows, fold, dw, h, w, Wp, ph, pw, S, pad, zx);
  }

  /**
   * The patches of one image and group written to the x operand [K2, Pp, 2] (see `im2colBody` in
   * ./layout.ts) from int32 images [cg, h, w] at int32 element index `src` (not overlapping x): row
   * k = (c, ky, kx), pixel p = oy·ow + ox, `pad` outside the image.
   */
  im2col(mode: PadMode, src: number, cg: number, h: number, w: number, kernel: readonly [number, number], stride: readonly [number, number], padding: readonly [number, number], dilation: readonly [number, number], oh: number, ow: number, Pp: number, pad: number, zx: number): void {
    const [kh, kw] = kernel, [sh, sw] = stride, [ph, pw] = padding, [dh, dw] = dilation;
    if (!([cg, h, w, kh, kw, sh, sw, dh, dw, oh, ow].every((v) => v > 0) && ph >= 0 && pw >= 0 && Pp >= oh * ow)) {
      throw new RangeError(`WasmGemm.im2col: bad geometry (cg ${cg}, h ${h}, w ${w}, kernel ${kh}x${kw}, stride ${sh}x${sw}, oh ${oh}, ow ${ow}, Pp ${Pp})`);
    }
    const xEnd = this.base + Math.ceil((cg * kh * kw) / 2) * Pp * 4;
    if (xEnd > this.memory.buffer.byteLength) throw new RangeError('WasmGemm.im2col: x not reserved (call operands() first)');
    this.outside('im2col', src, cg * h * w, this.base, xEnd);
    this.kernels[`im2col_${mode}`]!(4 * src, this.base, cg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, Pp, pad, zx);
  }

  /**
   * The values src[o·Pp + oy·Wp + ox] (int32 element indices), o < rows, oy < oh, ox < ow, to
   * dst[(o·oh + oy)·ow + ox]; writes up to 3 values past them, reads up to 3 past the last source
   * row. The two ranges must not overlap; the overshoot may reach the other one's first 3 values,
   * which is harmless: writes there hit source values read at the very start, reads there fill
   * lanes that are dropped.
   */
  compact(src: number, dst: number, rows: number, oh: number, ow: number, Wp: number, Pp: number): void {
    if (!(rows > 0 && oh > 0 && ow > 0 && Wp >= ow && Pp >= (oh - 1) * Wp + ow)) throw new RangeError(`WasmGemm.compact: bad geometry (rows ${rows}, oh ${oh}, ow ${ow}, Wp ${Wp}, Pp ${Pp})`);
    const srcEnd = src + (rows - 1) * Pp + (oh - 1) * Wp + ow + 3, dstEnd = dst + rows * oh * ow + 3;
    if (!(src >= 0 && dst >= 0 && 4 * Math.max(srcEnd, dstEnd) <= this.memory.buffer.byteLength)) throw new RangeError('WasmGemm.compact: outside memory');
    // the values themselves must not overlap (the overshoot lanes may: they are junk either way)
    if (dst < srcEnd - 3 && src < dstEnd - 3) throw new RangeError('WasmGemm.compact: source and destination overlap');
    this.kernels['compact']!(4 * src, 4 * dst, rows, oh, ow, Wp, Pp);
  }

  /** Space for the add kernel: three int32 arrays of `count` (a multiple of 4) in the scratch region. */
  addOperands(count: number): { i32: Int32Array; a: number; b: number; out: number } {
    this.ensure(this.base + 12 * count);
    const a = this.base / 4;
    return { i32: this.i32, a, b: a + count, out: a + 2 * count };
  }

  /**
   * The add kernel (see `addBody`) on int32 arrays at element indices a, b (default: the ones
   * `addOperands(count)` placed) to out: out[i], or REQUANT_UNSURE where addInts must be used; true
   * when there is none. count: a positive multiple of 4; out may not overlap a or b. loT, hiT:
   * int32 (the sums the kernel keeps are below 2^29, so clamp(r, loT, hiT) + z is exact in int32)
   * and lo = loT + z above REQUANT_UNSURE.
   */
  add(count: number, za: number, zb: number, ma: number, mb: number, half: number, inv: number, loT: number, hiT: number, z: number, at?: { a: number; b: number; out: number }): boolean {
    if (!(count > 0 && count % 4 === 0)) throw new RangeError(`WasmGemm.add: count must be a positive multiple of 4, got ${count}`);
    if (!(isInt32(loT) && isInt32(hiT) && loT <= hiT)) throw new RangeError(`WasmGemm.add: clamp offsets [${loT}, ${hiT}] are not an int32 range`);
    const a = at?.a ?? this.base / 4, b = at?.b ?? a + count, out = at?.out ?? a + 2 * count;
    for (const v of [a, b, out]) if (!(Number.isInteger(v) && v >= 0 && 4 * (v + count) <= this.memory.buffer.byteLength)) throw new RangeError('WasmGemm.add: operands outside memory');
    if ((out < a + count && a < out + count) || (out < b + count && b < out + count)) throw new RangeError('WasmGemm.add: out overlaps an input');
    return this.kernels['add']!(4 * a, 4 * b, 4 * out, count, za, zb, ma, mb, half, inv, loT, hiT, z) === 1;
  }

  /**
   * The output stage of GEMM rows to their compact layout (see `requantBody`; int32 element
   * indices): row o's values src[o·Pp + oy·Wp + ox] (oy < oh, ox < ow) requantized to
   * dst[(o·oh + oy)·ow + ox] with the constants of row o at byte address consts + 32·o
   * (`requantConstants`, uploaded with `uploadF64`), REQUANT_UNSURE where the caller must use the
   * exact scalar path; those values' source offsets o·Pp + oy·Wp + ox are written to the int32
   * elements list, list + 1, … (room for rows·oh·ow values). Returns how many there are. Writes
   * up to 3 values past dst's rows·oh·ow, reads up to 3 past the last source row. Needs loT, hiT
   * int32 and lo = loT + z above REQUANT_UNSURE.
   */
  requantize(src: number, dst: number, rows: number, oh: number, ow: number, Wp: number, Pp: number, consts: number, loT: number, hiT: number, z: number, list: number): number {
    if (!(rows > 0 && oh > 0 && ow > 0 && Wp >= ow && Pp >= (oh - 1) * Wp + ow)) throw new RangeError(`WasmGemm.requantize: bad geometry (rows ${rows}, oh ${oh}, ow ${ow}, Wp ${Wp}, Pp ${Pp})`);
    if (!(isInt32(loT) && isInt32(hiT) && loT <= hiT)) throw new RangeError(`WasmGemm.requantize: clamp offsets [${loT}, ${hiT}] are not an int32 range`);
    const srcEnd = src + (rows - 1) * Pp + (oh - 1) * Wp + ow + 3, dstEnd = dst + rows * oh * ow + 3;
    const bytes = this.memory.buffer.byteLength;
    if (!(src >= 0 && dst >= 0 && list >= 0 && consts >= 0 && 4 * Math.max(srcEnd, dstEnd, list + rows * oh * ow) <= bytes && consts + REQUANT_CONST_BYTES * rows <= bytes)) throw new RangeError('WasmGemm.requantize: operands outside memory');
    if (dst < srcEnd - 3 && src < dstEnd - 3) throw new RangeError('WasmGemm.requantize: source and destination overlap');
    return this.kernels['requantize']!(4 * src, 4 * dst, rows, oh, ow, Wp, Pp, consts, loT, hiT, z, 4 * list);
  }

  /**
   * dst[i] = clamp(roundHalfEven(src[i] / scale) + z, qmin, qmax) for float32 src and int32 dst
   * (element indices of the float32 / int32 views; see `quantizeBody` in ./layout.ts), i < count
   * rounded up to a multiple of 4 (the values past count are junk; the ranges must hold them).
   */
  quantize(src: number, dst: number, count: number, scale: number, z: number, qmin: number, qmax: number): void {
    const n = Math.ceil(count / 4) * 4;
    if (!(count > 0 && Number.isInteger(src) && Number.isInteger(dst) && src >= 0 && dst >= 0 && 4 * (Math.max(src, dst) + n) <= this.memory.buffer.byteLength)) throw new RangeError(`WasmGemm.quantize: ${count} values at ${src} / ${dst} outside memory`);
    if (src < dst + n && dst < src + n && src !== dst) throw new RangeError('WasmGemm.quantize: source and destination overlap');
    if (!(isInt32(qmin) && isInt32(qmax) && qmin <= qmax)) throw new RangeError(`WasmGemm.quantize: range [${qmin}, ${qmax}] is not an int32 range`);
    this.kernels['quantize']!(4 * src, 4 * dst, n, scale, z, qmin, qmax);
  }

  /**
   * Max (`avg` undefined) or average pooling of int32 planes [planes, h, w] at element index src to
   * [planes, oh, ow] at dst (see `maxPoolBody` / `avgPoolBody` in ./layout.ts); `avg`: the output
   * zero point, the input's zero point (zero·2^F) and the divisor (kh·kw·2^F) — the caller checks
   * |inZero| < 2^31, divisor < 2^31 and kh·kw < 2^21.
   */
  pool(src: number, dst: number, planes: number, h: number, w: number, k: readonly [number, number], s: readonly [number, number], p: readonly [number, number], oh: number, ow: number, avg?: { zero: number; inZero: number; divisor: number }): void {
    if (![planes, h, w, k[0], k[1], s[0], s[1], oh, ow].every((v) => Number.isInteger(v) && v > 0) || !(p[0] >= 0 && p[1] >= 0)) throw new RangeError(`WasmGemm.pool: bad geometry (planes ${planes}, ${h}x${w}, kernel ${k[0]}x${k[1]}, stride ${s[0]}x${s[1]}, padding ${p[0]}x${p[1]}, out ${oh}x${ow})`);
    const inCount = planes * h * w, outCount = planes * oh * ow;
    for (const [at, n] of [[src, inCount], [dst, outCount]] as const) if (!(Number.isInteger(at) && at >= 0 && 4 * (at + n) <= this.memory.buffer.byteLength)) throw new RangeError('WasmGemm.pool: values outside memory');
    if (src < dst + outCount && dst < src + inCount) throw new RangeError('WasmGemm.pool: source and destination overlap');
    const args = [4 * src, 4 * dst, planes, h, w, k[0], k[1], s[0], s[1], p[0], p[1], oh, ow];
    if (!avg) {
      this.kernels['maxpool']!(...args);
      return;
    }
    const { zero, inZero, divisor } = avg;
    if (!(isInt32(zero) && Math.abs(inZero) < 2 ** 31 && Number.isInteger(inZero) && Number.isInteger(divisor) && divisor > 0 && divisor < 2 ** 31 && k[0] * k[1] < 2 ** 21)) {
      throw new RangeError(`WasmGemm.pool: average pooling constants out of range (zero ${zero}, inZero ${inZero}, divisor ${divisor}, window ${k[0]}x${k[1]})`);
    }
    this.kernels['avgpool']!(...args, zero, inZero, divisor);
  }

  /**
   * Runs the kernel on weights at byte address `wAt` (from `upload`) and the operands placed by
   * `operands(K2, Pp, w.blocks, xStride)` (K2 ≥ w.K2: the x rows reserved); Pp must be a positive
   * multiple of 8 and xStride ≥ Pp. `xShift` pixels are skipped at the start of every x row (a
   * shifted view of the same rows: the taps of a direct convolution); `accumulate` adds to out.
   */
  gemm(w: Int16Weights, wAt: number, Pp: number, options: { xStride?: number; xShift?: number; accumulate?: boolean; K2?: number } = {}): void {
    const xStride = options.xStride ?? Pp;
    const xShift = options.xShift ?? 0;
    const K2 = options.K2 ?? w.K2;
    if (!(Pp > 0 && Pp % 8 === 0)) throw new RangeError(`WasmGemm.gemm: Pp must be a positive multiple of 8, got ${Pp}`);
    if (!(xStride >= Pp + xShift && xShift >= 0 && K2 >= w.K2)) throw new RangeError(`WasmGemm.gemm: bad x geometry (xStride ${xStride}, xShift ${xShift}, Pp ${Pp}, K2 ${K2} < ${w.K2})`);
    const xAt = this.base + 4 * xShift;
    const outAt = this.base + Math.ceil((K2 * xStride * 4) / 16) * 16;
    if (outAt + w.blocks * 16 * Pp > this.memory.buffer.byteLength) throw new RangeError('WasmGemm.gemm: operands not reserved (call operands() first)');
    if (w.blocks === 0) return;
    if (w.K2 === 0) {
      if (!options.accumulate) this.i32.fill(0, outAt / 4, outAt / 4 + w.blocks * 4 * Pp);
      return;
    }
    this.kernels['gemm']!(wAt, xAt, outAt, w.blocks, w.K2, Pp, xStride, options.accumulate ? 1 : 0);
  }
}
