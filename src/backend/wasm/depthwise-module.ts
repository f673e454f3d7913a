/**
 * Depthwise 3×3 functions of the wasm backend (groups = C = O), four output pixels at a time on
 * zero-padded planes (rows of wp floats, 3 extra zero rows at the bottom for the reads of a row's
 * last vector). Output (oy, ox) of the stride-1 convolution reads x at q + ky·wp + kx with
 * q = oy·wp + ox, so a row of outputs is a run of contiguous vectors (the weight gradient runs the
 * same 1-D walk over the whole "wide" plane, junk columns included, with g zero there).
 * Addresses and strides are in bytes; planes run over [p0, p1), so parts over planes write
 * disjoint outputs.
 *
 * - dwConvRows(x, w, y, p0, p1, c, xs, wp, h, wo): stride 1: y[p][oy·wo + ox] = Σ_t w[p mod c][t]·
 *   x[p][q + off_t] with q = oy·wp + ox, taps t = 3·ky + kx in that order, each product rounded then
 *   added (no FMA); plane p of x at x + p·xs, w is [c][9] floats; y compact ([p][h][wo], wo = wp − 2).
 *   Rows run in whole vectors, the last wo mod 4 outputs of a row stored lane by lane (no write
 *   outside the planes, so parts may split anywhere).
 * - dwConvS2(x, w, y, p0, p1, c, xs, wp, oh, ow): stride 2: y[p][oy·ow + ox] = Σ_t w_t·x[p][(2oy)·wp +
 *   2ox + off_t], compact like dwConvRows; per 4 outputs two vectors of stride-1 sums at columns
 *   2ox and 2ox + 4, their even lanes shuffled together (half the taps wasted, no gather).
 * - dwSpread(src, dst, p0, p1, oh, ow, rows, wp, top): plane p of src ([oh, ow]) onto the zeroed
 *   [rows, wp] plane at dst at (top + 2oy, top + 2ox): a stride-2 output grid's values on the
 *   stride-1 grid (the input and weight gradients of a stride-2 conv).
 * - dwPad(src, dst, p0, p1, h, w, rows, wp, top, left): plane p of src ([h, w] at src + p·h·w·4)
 *   into the [rows, wp] plane at dst + p·rows·wp·4 at row top, column left, zeros elsewhere (one
 *   memory.fill and h memory.copy per plane, while the plane is in L1).
 * - dwGrad(g, x, out, p0, p1, gs, xs, wp, len): for each plane the 9 vectors
 *   Σ_q g[p][q]·x[p][q + off_t] (four partial sums per tap) at out + (9p + t)·16; g must hold zeros
 *   on the junk columns and up to 3 floats past len.
 * @internal
 */
import { Code, emitModule, ValType, type MemoryImport } from '../../runtime/wasm/emitter.ts';
import { ENV_MEMORY } from './memory-import.ts';
import { loopRange } from './module.ts';

export const DEPTHWISE_EXPORTS = ['dwConvRows', 'dwConvS2', 'dwGrad', 'dwPad', 'dwSpread'] as const;

const ZERO = Array<number>(16).fill(0);

/** Stores the first REM (1..3) lanes of the vector on the stack at address YA, through the v128 local ACC. */
function storeFirstLanes(c: Code, YA: number, ACC: number, REM: number): void {
  c.localSet(ACC);
  c.localGet(YA).localGet(ACC).f32x4ExtractLane(0).f32Store(0);
  c.localGet(REM).i32Const(1).i32GtS().if();
  c.localGet(YA).localGet(ACC).f32x4ExtractLane(1).f32Store(4);
  c.end();
  c.localGet(REM).i32Const(2).i32GtS().if();
  c.localGet(YA).localGet(ACC).f32x4ExtractLane(2).f32Store(8);
  c.end();
}


/**
 * Pushes the input vector of tap t at XB + row offset (R1 = wp·4, R2 = wp·8 bytes) + kx·4: the
 * column offset is the load's immediate.
 */
function tapLoad(c: Code, XB: number, R1: number, R2: number, t: number): void {
  const ky = Math.floor(t / 3), kx = t % 3;
  c.localGet(XB);
  if (ky > 0) c.localGet(ky === 1 ? R1 : R2).i32Add();
  c.v128Load(4 * kx);
}

/** Pushes Σ_t w_t·x[XA + off_t] (the 9 weights in WV..WV+8). */
function taps(c: Code, XA: number, R1: number, R2: number, WV: number): void {
  for (let t = 0; t < 9; t++) {
    tapLoad(c, XA, R1, R2, t);
    c.localGet(WV + t).f32x4Mul();
    if (t > 0) c.f32x4Add();
  }
}

function convRowsBody(): { params: ValType[]; locals: ValType[]; body: Code } {
  const X = 0, W = 1, Y = 2, P0 = 3, P1 = 4, C = 5, XS = 6, WP = 7, H = 8, WO = 9;
  const P = 10, OY = 11, J = 12, XA = 13, YA = 14, R1 = 15, R2 = 16, VEND = 17, REM = 18, WB = 19, XROW = 20, YROW = 21; // i32
  const WV = 22, ACC = 31; // v128: 9 tap weights, the tail's sums
  const c = new Code();
  c.localGet(WP).i32Const(2).i32Shl().localSet(R1);
  c.localGet(WP).i32Const(3).i32Shl().localSet(R2);
  c.localGet(WO).i32Const(3).i32And().localSet(REM);
  c.localGet(WO).i32Const(-4).i32And().i32Const(2).i32Shl().localSet(VEND);
  loopRange(c, P, () => c.localGet(P0), () => c.localGet(P1), 1, () => {
    c.localGet(W).localGet(P).localGet(C).i32RemU().i32Const(36).i32Mul().i32Add().localSet(WB);
    for (let t = 0; t < 9; t++) c.localGet(WB).v128Load32Splat(4 * t).localSet(WV + t);
    loopRange(c, OY, () => c.i32Const(0), () => c.localGet(H), 1, () => {
      // XROW = x + p·xs + oy·wp·4, YROW = y + ((p·h + oy)·wo)·4
      c.localGet(X).localGet(P).localGet(XS).i32Mul().i32Add().localGet(OY).localGet(WP).i32Mul().i32Const(2).i32Shl().i32Add().localSet(XROW);
      c.localGet(Y).localGet(P).localGet(H).i32Mul().localGet(OY).i32Add().localGet(WO).i32Mul().i32Const(2).i32Shl().i32Add().localSet(YROW);
      loopRange(c, J, () => c.i32Const(0), () => c.localGet(VEND), 16, () => {
        c.localGet(XROW).localGet(J).i32Add().localSet(XA);
        c.localGet(YROW).localGet(J).i32Add();
        taps(c, XA, R1, R2, WV);
        c.v128Store(0);
      });
      // the row's last wo mod 4 outputs (J = VEND): lanes stored one by one
      c.localGet(REM).if();
      {
        c.localGet(XROW).localGet(J).i32Add().localSet(XA);
        c.localGet(YROW).localGet(J).i32Add().localSet(YA);
        taps(c, XA, R1, R2, WV);
        storeFirstLanes(c, YA, ACC, REM);
      }
      c.end();
    });
  });
  return { params: Array<ValType>(10).fill(ValType.i32), locals: [...Array<ValType>(12).fill(ValType.i32), ...Array<ValType>(10).fill(ValType.v128)], body: c };
}

function convS2Body(): { params: ValType[]; locals: ValType[]; body: Code } {
  const X = 0, W = 1, Y = 2, P0 = 3, P1 = 4, C = 5, XS = 6, WP = 7, OH = 8, OW = 9;
  const P = 10, OY = 11, J = 12, XA = 13, YA = 14, R1 = 15, R2 = 16, VEND = 17, REM = 18, WB = 19, XROW = 20, YROW = 21; // i32
  const WV = 22, ACC = 31, V0 = 32; // v128
  const c = new Code();
  /** Pushes the 4 stride-2 outputs whose first full-resolution column is at XA: even lanes of two vectors. */
  const four = () => {
    taps(c, XA, R1, R2, WV);
    c.localSet(V0);
    c.localGet(XA).i32Const(16).i32Add().localSet(XA);
    c.localGet(V0);
    taps(c, XA, R1, R2, WV);
    c.i8x16Shuffle([0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]);
  };
  c.localGet(WP).i32Const(2).i32Shl().localSet(R1);
  c.localGet(WP).i32Const(3).i32Shl().localSet(R2);
  c.localGet(OW).i32Const(3).i32And().localSet(REM);
  c.localGet(OW).i32Const(-4).i32And().i32Const(2).i32Shl().localSet(VEND);
  loopRange(c, P, () => c.localGet(P0), () => c.localGet(P1), 1, () => {
    c.localGet(W).localGet(P).localGet(C).i32RemU().i32Const(36).i32Mul().i32Add().localSet(WB);
    for (let t = 0; t < 9; t++) c.localGet(WB).v128Load32Splat(4 * t).localSet(WV + t);
    loopRange(c, OY, () => c.i32Const(0), () => c.localGet(OH), 1, () => {
      // XROW = x + p·xs + 2·oy·wp·4, YROW = y + ((p·oh + oy)·ow)·4
      c.localGet(X).localGet(P).localGet(XS).i32Mul().i32Add().localGet(OY).localGet(R2).i32Mul().i32Add().localSet(XROW);
      c.localGet(Y).localGet(P).localGet(OH).i32Mul().localGet(OY).i32Add().localGet(OW).i32Mul().i32Const(2).i32Shl().i32Add().localSet(YROW);
      loopRange(c, J, () => c.i32Const(0), () => c.localGet(VEND), 16, () => {
        // output column J/4 reads full-resolution column 2·J/4: byte offset 2·J
        c.localGet(XROW).localGet(J).i32Const(1).i32Shl().i32Add().localSet(XA);
        c.localGet(YROW).localGet(J).i32Add();
        four();
        c.v128Store(0);
      });
      c.localGet(REM).if();
      {
        c.localGet(XROW).localGet(J).i32Const(1).i32Shl().i32Add().localSet(XA);
        c.localGet(YROW).localGet(J).i32Add().localSet(YA);
        four();
        storeFirstLanes(c, YA, ACC, REM);
      }
      c.end();
    });
  });
  return { params: Array<ValType>(10).fill(ValType.i32), locals: [...Array<ValType>(12).fill(ValType.i32), ...Array<ValType>(11).fill(ValType.v128)], body: c };
}

function spreadBody(): { params: ValType[]; locals: ValType[]; body: Code } {
  const SRC = 0, DST = 1, P0 = 2, P1 = 3, OH = 4, OW = 5, ROWS = 6, WP = 7, TOP = 8;
  const P = 9, OY = 10, OX = 11, D = 12, S = 13, DROW = 14; // i32
  const c = new Code();
  loopRange(c, P, () => c.localGet(P0), () => c.localGet(P1), 1, () => {
    c.localGet(DST).localGet(P).localGet(ROWS).i32Mul().localGet(WP).i32Mul().i32Const(2).i32Shl().i32Add().localTee(D);
    c.i32Const(0).localGet(ROWS).localGet(WP).i32Mul().i32Const(2).i32Shl().memoryFill();
    // S walks src plane p in order
    c.localGet(SRC).localGet(P).localGet(OH).i32Mul().localGet(OW).i32Mul().i32Const(2).i32Shl().i32Add().localSet(S);
    loopRange(c, OY, () => c.i32Const(0), () => c.localGet(OH), 1, () => {
      // DROW = D + ((top + 2oy)·wp + top)·4
      c.localGet(D).localGet(OY).i32Const(1).i32Shl().localGet(TOP).i32Add().localGet(WP).i32Mul().localGet(TOP).i32Add().i32Const(2).i32Shl().i32Add().localSet(DROW);
      loopRange(c, OX, () => c.i32Const(0), () => c.localGet(OW), 1, () => {
        c.localGet(DROW).localGet(OX).i32Const(3).i32Shl().i32Add();
        c.localGet(S).f32Load(0).f32Store(0);
        c.localGet(S).i32Const(4).i32Add().localSet(S);
      });
    });
  });
  return { params: Array<ValType>(9).fill(ValType.i32), locals: Array<ValType>(6).fill(ValType.i32), body: c };
}

function padBody(): { params: ValType[]; locals: ValType[]; body: Code } {
  const SRC = 0, DST = 1, P0 = 2, P1 = 3, H = 4, W = 5, ROWS = 6, WP = 7, TOP = 8, LEFT = 9;
  const P = 10, R = 11, D = 12; // i32
  const c = new Code();
  loopRange(c, P, () => c.localGet(P0), () => c.localGet(P1), 1, () => {
    // D = dst + p·rows·wp·4; zero the plane
    c.localGet(DST).localGet(P).localGet(ROWS).i32Mul().localGet(WP).i32Mul().i32Const(2).i32Shl().i32Add().localTee(D);
    c.i32Const(0).localGet(ROWS).localGet(WP).i32Mul().i32Const(2).i32Shl().memoryFill();
    loopRange(c, R, () => c.i32Const(0), () => c.localGet(H), 1, () => {
      // D + ((r + top)·wp + left)·4 <- src + ((p·h + r)·w)·4, w·4 bytes
      c.localGet(D).localGet(R).localGet(TOP).i32Add().localGet(WP).i32Mul().localGet(LEFT).i32Add().i32Const(2).i32Shl().i32Add();
      c.localGet(SRC).localGet(P).localGet(H).i32Mul().localGet(R).i32Add().localGet(W).i32Mul().i32Const(2).i32Shl().i32Add();
      c.localGet(W).i32Const(2).i32Shl().memoryCopy();
    });
  });
  return { params: Array<ValType>(10).fill(ValType.i32), locals: [ValType.i32, ValType.i32, ValType.i32], body: c };
}

function gradBody(): { params: ValType[]; locals: ValType[]; body: Code } {
  const G = 0, X = 1, OUT = 2, P0 = 3, P1 = 4, GS = 5, XS = 6, WP = 7, LEN = 8;
  const P = 9, Q = 10, XB = 11, GB = 12, R1 = 13, R2 = 14, END = 15, OB = 16; // i32
  const ACC = 17, GV = 26; // v128: 9 accumulators, the g vector
  const c = new Code();
  c.localGet(WP).i32Const(2).i32Shl().localSet(R1);
  c.localGet(WP).i32Const(3).i32Shl().localSet(R2);
  c.localGet(LEN).i32Const(2).i32Shl().localSet(END);
  loopRange(c, P, () => c.localGet(P0), () => c.localGet(P1), 1, () => {
    for (let t = 0; t < 9; t++) c.v128Const(ZERO).localSet(ACC + t);
    c.localGet(X).localGet(P).localGet(XS).i32Mul().i32Add().localSet(XB);
    c.localGet(G).localGet(P).localGet(GS).i32Mul().i32Add().localSet(GB);
    loopRange(c, Q, () => c.i32Const(0), () => c.localGet(END), 16, () => {
      c.localGet(GB).v128Load(0).localSet(GV);
      for (let t = 0; t < 9; t++) {
        c.localGet(ACC + t);
        tapLoad(c, XB, R1, R2, t);
        c.localGet(GV).f32x4Mul().f32x4Add().localSet(ACC + t);
      }
      c.localGet(XB).i32Const(16).i32Add().localSet(XB);
      c.localGet(GB).i32Const(16).i32Add().localSet(GB);
    });
    c.localGet(OUT).localGet(P).i32Const(144).i32Mul().i32Add().localSet(OB);
    for (let t = 0; t < 9; t++) c.localGet(OB).localGet(ACC + t).v128Store(16 * t);
  });
  return { params: Array<ValType>(9).fill(ValType.i32), locals: [...Array<ValType>(8).fill(ValType.i32), ...Array<ValType>(10).fill(ValType.v128)], body: c };
}

/** The depthwise functions as one module importing env.memory. */
export function depthwiseModuleBytes(memory: MemoryImport = ENV_MEMORY): Uint8Array {
  return emitModule([
    { results: [], ...convRowsBody(), exportName: 'dwConvRows' },
    { results: [], ...gradBody(), exportName: 'dwGrad' },
    { results: [], ...convS2Body(), exportName: 'dwConvS2' },
    { results: [], ...padBody(), exportName: 'dwPad' },
    { results: [], ...spreadBody(), exportName: 'dwSpread' },
  ], memory);
}
