/**
 * Depthwise 3×3 functions of the wasm backend (groups = C = O), four output pixels at a time on
 * zero-padded planes. A plane is read on its "wide" grid: output q = oy·wp + ox of a plane of row
 * length wp, so tap (ky, kx) of every output is the input at q + ky·wp + kx and a plane is one
 * contiguous 1-D convolution (the wp − ow junk columns of each row are dropped by the caller).
 * Addresses and strides are in bytes; planes run over [p0, p1), so parts over planes write
 * disjoint outputs.
 *
 * - dwConv(x, w, y, p0, p1, c, xs, ys, wp, len): y[p][q] = Σ_t w[p mod c][t]·x[p][q + off_t] for
 *   q in [0, len) in whole vectors (writes up to 3 floats past len: ys must leave room), taps
 *   t = 3·ky + kx in that order, each product rounded then added (no FMA). Plane p of x at x + p·xs,
 *   of y at y + p·ys; w is [c][9] floats.
 * - dwGrad(g, x, out, p0, p1, gs, xs, wp, len): for each plane the 9 vectors
 *   Σ_q g[p][q]·x[p][q + off_t] (four partial sums per tap) at out + (9p + t)·16; g must hold zeros
 *   on the junk columns and up to 3 floats past len.
 * @internal
 */
import { Code, emitModule, ValType, type MemoryImport } from '../../runtime/wasm/emitter.ts';
import { ENV_MEMORY } from './memory-import.ts';

export const DEPTHWISE_EXPORTS = ['dwConv', 'dwGrad'] as const;

const ZERO = Array<number>(16).fill(0);

/** `for (i = lo; i < hi; i += step) body` (signed). */
function loopRange(c: Code, i: number, lo: () => void, hi: () => void, step: number, body: () => void): void {
  lo();
  c.localSet(i);
  c.block().localGet(i);
  hi();
  c.i32GeS().brIf(0);
  c.loop();
  body();
  c.localGet(i).i32Const(step).i32Add().localTee(i);
  hi();
  c.i32LtS().brIf(0);
  c.end().end();
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

function convBody(): { params: ValType[]; locals: ValType[]; body: Code } {
  const X = 0, W = 1, Y = 2, P0 = 3, P1 = 4, C = 5, XS = 6, YS = 7, WP = 8, LEN = 9;
  const P = 10, Q = 11, XB = 12, YB = 13, R1 = 14, R2 = 15, END = 16, WB = 17; // i32
  const WV = 18, ACC = 27; // v128: 9 tap weights, the accumulator
  const c = new Code();
  c.localGet(WP).i32Const(2).i32Shl().localSet(R1);
  c.localGet(WP).i32Const(3).i32Shl().localSet(R2);
  c.localGet(LEN).i32Const(2).i32Shl().localSet(END);
  loopRange(c, P, () => c.localGet(P0), () => c.localGet(P1), 1, () => {
    c.localGet(W).localGet(P).localGet(C).i32RemU().i32Const(36).i32Mul().i32Add().localSet(WB);
    for (let t = 0; t < 9; t++) c.localGet(WB).v128Load32Splat(4 * t).localSet(WV + t);
    c.localGet(X).localGet(P).localGet(XS).i32Mul().i32Add().localSet(XB);
    c.localGet(Y).localGet(P).localGet(YS).i32Mul().i32Add().localSet(YB);
    loopRange(c, Q, () => c.i32Const(0), () => c.localGet(END), 16, () => {
      for (let t = 0; t < 9; t++) {
        tapLoad(c, XB, R1, R2, t);
        c.localGet(WV + t).f32x4Mul();
        if (t > 0) c.localGet(ACC).f32x4Add();
        c.localSet(ACC);
      }
      c.localGet(YB).localGet(ACC).v128Store(0);
      c.localGet(XB).i32Const(16).i32Add().localSet(XB);
      c.localGet(YB).i32Const(16).i32Add().localSet(YB);
    });
  });
  return { params: Array<ValType>(10).fill(ValType.i32), locals: [...Array<ValType>(8).fill(ValType.i32), ...Array<ValType>(10).fill(ValType.v128)], body: c };
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
    { results: [], ...convBody(), exportName: 'dwConv' },
    { results: [], ...gradBody(), exportName: 'dwGrad' },
  ], memory);
}
