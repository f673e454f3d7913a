/**
 * BatchNorm and clamp functions of the wasm backend, four float32 lanes at a time (the algorithm of
 * native/batchnorm.cc: each [S] row of a channel is summed in float lanes, the rows' sums are added
 * in float64). x is [N, C, S] float32; every address is a byte address; a channel range [c0, c1) is
 * one call, so parts over channels write disjoint outputs.
 *
 * - bnSums(x, n, c, s, c0, c1, m, out): for each channel ch, with m_ch the float at m + 4·ch,
 *   out[ch] = (Σ (x − m_ch), Σ (x − m_ch)²) as two float64 at out + 16·ch.
 * - bnGradSums(g, x, n, c, s, c0, c1, m, out): out[ch] = (Σ g, Σ g·(x − m_ch)) likewise.
 * - bnApply(x, y, n, c, s, c0, c1, p): y = ((x − p0) − p1)·p2 + p3, with p0..p4 the floats at
 *   p + 32·ch: the mean as a float32 pair hi + lo (x − hi is exact for x within a factor 2 of the
 *   mean, so a channel far from zero keeps its precision), scale, bias.
 * - bnBackApply(g, x, y, n, c, s, c0, c1, p): y = (p2·g − p3) − ((x − p0) − p1)·p4 (mean hi, lo, k, a, q).
 * - clamp(x, y, n, p): low = lo > x ? lo : x, then y = low > hi ? hi : low, (lo, hi) the floats at p.
 * - clampBackward(g, x, y, n, p): y = g where neither lo > x nor low > hi, else +0.
 * - bnApplyClamp(x, y, n, c, s, c0, c1, p, cl): bnApply, then clamp's two selects with (lo, hi) the
 *   floats at cl (a clamped BatchNorm, BatchNorm → ReLU6, in one pass).
 * - bnGradSumsClamp(g, x, n, c, s, c0, c1, m, out, p, cl) and bnBackApplyClamp(g, x, y, n, c, s, c0,
 *   c1, p, cl): bnGradSums and bnBackApply of g masked as clampBackward masks it on the forward
 *   output recomputed lane by lane as bnApply computes it, ((x − m) − p1)·p5 + p6 (floats at
 *   p + 32·ch: the mean's lo, the forward scale and bias; the same float32 operations, so the mask
 *   is the one the unfused kernels find).
 *
 * Row tails (s not a multiple of 4) run one float at a time in the BatchNorm functions, so a call
 * touches only its own channels' rows; clamp and clampBackward run whole vectors over [0, n),
 * reading and writing up to 3 floats past n (the arena's slack; a part of a split call starts at
 * a multiple of 4 floats, so its last vector ends where the next part begins).
 * @internal
 */
import { Code, emitModule, ValType, type MemoryImport } from '../../runtime/wasm/emitter.ts';
import { ENV_MEMORY } from './memory-import.ts';
import { loopRange } from './module.ts';

export const NORM_EXPORTS = ['bnSums', 'bnGradSums', 'bnApply', 'bnBackApply', 'clamp', 'clampBackward', 'bnGradSumsClamp', 'bnApplyClamp', 'bnBackApplyClamp'] as const;
export type NormExport = (typeof NORM_EXPORTS)[number];

const ZERO = Array<number>(16).fill(0);
/** Lanes 2, 3 of a vector moved to lanes 0, 1. */
const HIGH_HALF = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];


/**
 * The channel / row walk shared by the four BatchNorm functions: for ch in [c0, c1), `channel()`,
 * then for each of the n rows, ROW = ((i·c + ch)·s)·4 (byte offset of the row), `row()`, then
 * `after()`. Local indices: the caller's parameters N, C, S, C0, C1, and CH, I, ROW.
 */
function channelRows(c: Code, L: { N: number; C: number; S: number; C0: number; C1: number; CH: number; I: number; ROW: number }, channel: () => void, row: () => void, after: () => void): void {
  loopRange(c, L.CH, () => c.localGet(L.C0), () => c.localGet(L.C1), 1, () => {
    channel();
    loopRange(c, L.I, () => c.i32Const(0), () => c.localGet(L.N), 1, () => {
      c.localGet(L.I).localGet(L.C).i32Mul().localGet(L.CH).i32Add().localGet(L.S).i32Mul().i32Const(2).i32Shl().localSet(L.ROW);
      row();
    });
    after();
  });
}

/** clamp's selects, lane by lane: sets LOW = lo > v ? lo : v, then pushes low > hi ? hi : low. */
function clampSelects(c: Code, lo: number, hi: number, v: number, low: number): void {
  c.localGet(lo).localGet(v).localGet(lo).localGet(v).f32x4Gt().v128Bitselect().localSet(low);
  c.localGet(hi).localGet(low).localGet(low).localGet(hi).f32x4Gt().v128Bitselect();
}

/** Pushes g & ~((lo > v) | (low > hi)) (clampBackward's mask) for the g on the stack, with LOW = lo > v ? lo : v set. */
function clampMask(c: Code, lo: number, hi: number, v: number, low: number): void {
  c.localGet(lo).localGet(v).localGet(lo).localGet(v).f32x4Gt().v128Bitselect().localSet(low);
  c.localGet(lo).localGet(v).f32x4Gt().localGet(low).localGet(hi).f32x4Gt().v128Or().v128AndNot();
}

/**
 * Replaces the g in local W by its clampBackward mask on y = (V − P1)·PS + PB, the forward output
 * recomputed from V = x − mean hi as bnApply computes it. T is a v128 scratch local.
 */
function maskGradient(c: Code, L: { V: number; W: number; P1: number; PS: number; PB: number; LO: number; HI: number; T: number; Y: number }): void {
  c.localGet(L.V).localGet(L.P1).f32x4Sub().localGet(L.PS).f32x4Mul().localGet(L.PB).f32x4Add().localSet(L.Y);
  c.localGet(L.W);
  clampMask(c, L.LO, L.HI, L.Y, L.T);
  c.localSet(L.W);
}

/** bnSums (grad = false) or bnGradSums (grad = true). */
function sumsBody(grad: boolean, clamp = false): { params: ValType[]; locals: ValType[]; body: Code } {
  const sh = grad ? 1 : 0;
  const G = 0, X = sh, N = 1 + sh, C = 2 + sh, S = 3 + sh, C0 = 4 + sh, C1 = 5 + sh, M = 6 + sh, OUT = 7 + sh;
  // bnGradSumsClamp: the backward parameters and the clamp bounds
  const PAR = 8 + sh, CL = 9 + sh;
  const P = 8 + sh + (clamp ? 2 : 0);
  const CH = P, I = P + 1, ROW = P + 2, J = P + 3, VEND = P + 4, SEND = P + 5; // i32
  const MS = P + 6; // f32
  const S1 = P + 7, S2 = P + 8, D = P + 9, GD = P + 10; // f64
  const MV = P + 11, A1 = P + 12, A2 = P + 13, T1 = P + 14, T2 = P + 15, V = P + 16, W = P + 17; // v128
  const P1 = P + 18, PS = P + 19, PB = P + 20, LO = P + 21, HI = P + 22, T = P + 23, Y = P + 24; // v128 (clamp)
  const mask = { V, W, P1, PS, PB, LO, HI, T, Y };
  const c = new Code();
  const at = (base: number) => c.localGet(base).localGet(ROW).i32Add().localGet(J).i32Add();
  if (clamp) {
    c.localGet(CL).v128Load32Splat(0).localSet(LO);
    c.localGet(CL).v128Load32Splat(4).localSet(HI);
  }
  const fold = (acc: number, total: number) => {
    // total += f64(acc lanes 0, 1) + f64(acc lanes 2, 3)
    c.localGet(total).localGet(acc).f64x2PromoteLowF32x4().localGet(acc).localGet(acc).i8x16Shuffle(HIGH_HALF).f64x2PromoteLowF32x4().f64x2Add().f64x2Add().localSet(total);
  };
  channelRows(c, { N, C, S, C0, C1, CH, I, ROW }, () => {
    c.localGet(M).localGet(CH).i32Const(2).i32Shl().i32Add().f32Load(0).localTee(MS).f32x4Splat().localSet(MV);
    c.v128Const(ZERO).localTee(T1).localSet(T2);
    c.f64Const(0).localTee(S1).localSet(S2);
    c.localGet(S).i32Const(-4).i32And().i32Const(2).i32Shl().localSet(VEND);
    c.localGet(S).i32Const(2).i32Shl().localSet(SEND);
    if (clamp) {
      const par = (k: number, local: number) => c.localGet(PAR).localGet(CH).i32Const(5).i32Shl().i32Add().v128Load32Splat(4 * k).localSet(local);
      par(1, P1);
      par(5, PS);
      par(6, PB);
    }
  }, () => {
    c.v128Const(ZERO).localTee(A1).localSet(A2);
    loopRange(c, J, () => c.i32Const(0), () => c.localGet(VEND), 16, () => {
      at(X).v128Load(0).localGet(MV).f32x4Sub().localSet(V);
      if (grad) {
        at(G).v128Load(0).localSet(W);
        if (clamp) maskGradient(c, mask);
        c.localGet(A1).localGet(W).f32x4Add().localSet(A1);
        c.localGet(A2).localGet(W).localGet(V).f32x4Mul().f32x4Add().localSet(A2);
      } else {
        c.localGet(A1).localGet(V).f32x4Add().localSet(A1);
        c.localGet(A2).localGet(V).localGet(V).f32x4Mul().f32x4Add().localSet(A2);
      }
    });
    // the row's tail, one float at a time in float64 (J is where the vectors stopped)
    loopRange(c, J, null, () => c.localGet(SEND), 4, () => {
      at(X).f32Load(0).localGet(MS).f32Sub().f64PromoteF32().localSet(D);
      if (grad) {
        if (clamp) {
          // the masked g of this float: the vector expression on splats, lane 0
          at(X).v128Load32Splat(0).localGet(MV).f32x4Sub().localSet(V);
          at(G).v128Load32Splat(0).localSet(W);
          maskGradient(c, mask);
          c.localGet(W).f32x4ExtractLane(0).f64PromoteF32().localSet(GD);
        } else {
          at(G).f32Load(0).f64PromoteF32().localSet(GD);
        }
        c.localGet(S1).localGet(GD).f64Add().localSet(S1);
        c.localGet(S2).localGet(GD).localGet(D).f64Mul().f64Add().localSet(S2);
      } else {
        c.localGet(S1).localGet(D).f64Add().localSet(S1);
        c.localGet(S2).localGet(D).localGet(D).f64Mul().f64Add().localSet(S2);
      }
    });
    fold(A1, T1);
    fold(A2, T2);
  }, () => {
    const out = () => c.localGet(OUT).localGet(CH).i32Const(4).i32Shl().i32Add();
    out();
    c.localGet(T1).f64x2ExtractLane(0).localGet(T1).f64x2ExtractLane(1).f64Add().localGet(S1).f64Add().f64Store(0);
    out();
    c.localGet(T2).f64x2ExtractLane(0).localGet(T2).f64x2ExtractLane(1).f64Add().localGet(S2).f64Add().f64Store(8);
  });
  return {
    params: Array<ValType>(8 + sh + (clamp ? 2 : 0)).fill(ValType.i32),
    locals: [...Array<ValType>(6).fill(ValType.i32), ValType.f32, ...Array<ValType>(4).fill(ValType.f64), ...Array<ValType>(clamp ? 14 : 7).fill(ValType.v128)],
    body: c,
  };
}

/** bnApply (back = false) or bnBackApply (back = true). */
function applyBody(back: boolean, clamp = false): { params: ValType[]; locals: ValType[]; body: Code } {
  const sh = back ? 1 : 0;
  const G = 0, X = sh, Y = 1 + sh, N = 2 + sh, C = 3 + sh, S = 4 + sh, C0 = 5 + sh, C1 = 6 + sh, PAR = 7 + sh, CL = 8 + sh;
  const P = 8 + sh + (clamp ? 1 : 0);
  const CH = P, I = P + 1, ROW = P + 2, J = P + 3, VEND = P + 4, SEND = P + 5; // i32
  const P0 = P + 6, P1 = P + 7, P2 = P + 8, P3 = P + 9, P4 = P + 10, V = P + 11, W = P + 12; // v128
  const PS = P + 13, PB = P + 14, LO = P + 15, HI = P + 16, T = P + 17, YV = P + 18, XM = P + 19; // v128 (clamp)
  const c = new Code();
  const at = (base: number) => c.localGet(base).localGet(ROW).i32Add().localGet(J).i32Add();
  if (clamp) {
    c.localGet(CL).v128Load32Splat(0).localSet(LO);
    c.localGet(CL).v128Load32Splat(4).localSet(HI);
  }
  /** Pushes the result from the x in V (and g in W). */
  const expr = () => {
    if (back) {
      if (clamp) {
        c.localGet(V).localGet(P0).f32x4Sub().localSet(XM);
        maskGradient(c, { V: XM, W, P1, PS, PB, LO, HI, T, Y: YV });
      }
      c.localGet(P2).localGet(W).f32x4Mul().localGet(P3).f32x4Sub().localGet(V).localGet(P0).f32x4Sub().localGet(P1).f32x4Sub().localGet(P4).f32x4Mul().f32x4Sub();
    } else {
      c.localGet(V).localGet(P0).f32x4Sub().localGet(P1).f32x4Sub().localGet(P2).f32x4Mul().localGet(P3).f32x4Add();
      if (clamp) {
        c.localSet(YV);
        clampSelects(c, LO, HI, YV, T);
      }
    }
  };
  channelRows(c, { N, C, S, C0, C1, CH, I, ROW }, () => {
    const par = (k: number, local: number) => c.localGet(PAR).localGet(CH).i32Const(5).i32Shl().i32Add().v128Load32Splat(4 * k).localSet(local);
    par(0, P0);
    par(1, P1);
    par(2, P2);
    par(3, P3);
    if (back) par(4, P4);
    if (back && clamp) {
      par(5, PS);
      par(6, PB);
    }
    c.localGet(S).i32Const(-4).i32And().i32Const(2).i32Shl().localSet(VEND);
    c.localGet(S).i32Const(2).i32Shl().localSet(SEND);
  }, () => {
    loopRange(c, J, () => c.i32Const(0), () => c.localGet(VEND), 16, () => {
      at(X).v128Load(0).localSet(V);
      if (back) at(G).v128Load(0).localSet(W);
      at(Y);
      expr();
      c.v128Store(0);
    });
    // the tail: the same vector expression on splatted floats, lane 0 stored
    loopRange(c, J, null, () => c.localGet(SEND), 4, () => {
      at(X).v128Load32Splat(0).localSet(V);
      if (back) at(G).v128Load32Splat(0).localSet(W);
      at(Y);
      expr();
      c.f32x4ExtractLane(0).f32Store(0);
    });
  }, () => {});
  return {
    params: Array<ValType>(8 + sh + (clamp ? 1 : 0)).fill(ValType.i32),
    locals: [...Array<ValType>(6).fill(ValType.i32), ...Array<ValType>(clamp ? 14 : 7).fill(ValType.v128)],
    body: c,
  };
}

/** clamp (back = false) or clampBackward (back = true): whole vectors over [0, n). */
function clampBody(back: boolean): { params: ValType[]; locals: ValType[]; body: Code } {
  const sh = back ? 1 : 0;
  const G = 0, X = sh, Y = 1 + sh, N = 2 + sh, PAR = 3 + sh;
  const P = 4 + sh;
  const J = P, END = P + 1; // i32
  const LO = P + 2, HI = P + 3, V = P + 4, LOW = P + 5; // v128
  const c = new Code();
  c.localGet(PAR).v128Load32Splat(0).localSet(LO);
  c.localGet(PAR).v128Load32Splat(4).localSet(HI);
  c.localGet(N).i32Const(2).i32Shl().localSet(END);
  loopRange(c, J, () => c.i32Const(0), () => c.localGet(END), 16, () => {
    c.localGet(Y).localGet(J).i32Add();
    c.localGet(X).localGet(J).i32Add().v128Load(0).localSet(V);
    if (back) {
      c.localGet(G).localGet(J).i32Add().v128Load(0);
      clampMask(c, LO, HI, V, LOW);
    } else {
      clampSelects(c, LO, HI, V, LOW);
    }
    c.v128Store(0);
  });
  return {
    params: Array<ValType>(4 + sh).fill(ValType.i32),
    locals: [ValType.i32, ValType.i32, ...Array<ValType>(4).fill(ValType.v128)],
    body: c,
  };
}

function body(name: NormExport): { params: ValType[]; locals: ValType[]; body: Code } {
  switch (name) {
    case 'bnSums': return sumsBody(false);
    case 'bnGradSums': return sumsBody(true);
    case 'bnApply': return applyBody(false);
    case 'bnBackApply': return applyBody(true);
    case 'clamp': return clampBody(false);
    case 'clampBackward': return clampBody(true);
    case 'bnGradSumsClamp': return sumsBody(true, true);
    case 'bnApplyClamp': return applyBody(false, true);
    case 'bnBackApplyClamp': return applyBody(true, true);
  }
}

/** The BatchNorm and clamp functions as one module importing env.memory. */
export function normModuleBytes(memory: MemoryImport = ENV_MEMORY): Uint8Array {
  return emitModule(NORM_EXPORTS.map((name) => ({ results: [], ...body(name), exportName: name })), memory);
}
