/**
 * The fake-quantization functions of the wasm backend's module (./module.ts): the forward pass of
 * fakeQuantize and every part of its gradient, per tensor or per channel, four float32 elements at
 * a time computed in float64 lanes (two f64x2 halves) so that every value is the reference
 * kernel's (src/backend/reference/quant.ts) bit for bit:
 *   u = x / s (f64x2.div, correctly rounded like the reference's double division),
 *   r = nearest(u) + z (f64x2.nearest is round-half-even, as roundHalfEven),
 *   q = min(qmax, max(qmin, r)) (NaN stays NaN, as Math.min / Math.max), inside = (q == r),
 * and each output rounded once to float32 (f32x4.demote_f64x2_zero) from the same double expression.
 *
 * Every function has the parameters
 *   (g, x, y, acc, n, run, s, sMid, sInner, z, zMid, zInner, qmin: f64, qmax: f64, flag)
 * with byte addresses g, x, y (float32), acc (float64), s, z (float32). Element i of x reads
 * s[(i / sInner) % sMid] and z[(i / zInner) % zMid]; the elements are walked in runs of `run`
 * elements (run divides n, sInner and zInner, so the scale and zero point are constant over each
 * run; the caller passes sInner = n for a single scale, zInner = n likewise). Within a run the vectors are whole: the last one may read up to 3 floats past the run
 * (past n: the arena's slack) and write up to 3 past it, which the next run overwrites (the last
 * run's land in the slack past y). n ≥ 1.
 *
 * The modes (one exported function each):
 * - 'forward' (fq): y = (q − z)·s;
 * - 'gradX' (fqGradX): y = inside ? g : +0 (the clipped estimator); flag 1 adds +0 to g (−0 becomes
 *   +0: the reference's reduce sums start from +0), flag 0 keeps g's bits;
 * - 'gradScale' (fqGradScale): y = g·(inside ? r − (u + z) : q − z);
 * - 'gradZeroPoint' (fqGradZeroPoint): y = inside ? +0 : (−g)·s;
 * - 'sumScale' (fqSumScale): acc[scale index] += the gradScale term (rounded to float32), element
 *   by element in order (a scalar float64 chain: the reference's summation order, so the same
 *   sums); flag 1 also writes y = g + 0 (the STE x part), flag 2 y = inside ? g + 0 : +0 (clipped);
 * - 'sumZeroPoint' (fqSumZeroPoint): acc[zero-point index] += the gradZeroPoint term, in order.
 * @internal
 */
import { Code, emitModule, ValType, type MemoryImport } from '../../runtime/wasm/emitter.ts';
import { ENV_MEMORY } from './memory-import.ts';

export type FqMode = 'forward' | 'gradX' | 'gradScale' | 'gradZeroPoint' | 'sumScale' | 'sumZeroPoint';

/** Export name of each mode's function. */
export const FQ_EXPORTS: Readonly<Record<FqMode, string>> = {
  forward: 'fq', gradX: 'fqGradX', gradScale: 'fqGradScale', gradZeroPoint: 'fqGradZeroPoint', sumScale: 'fqSumScale', sumZeroPoint: 'fqSumZeroPoint',
};

/** Parameter types shared by the modes. */
export const FQ_PARAMS: readonly ValType[] = [
  ...Array<ValType>(12).fill(ValType.i32), ValType.f64, ValType.f64, ValType.i32,
];

/** Bytes 8..15 of a vector moved to 0..7 (its float lanes 2, 3 to 0, 1, for f64x2.promote_low). */
const HIGH_HALF = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
/** Two demoted halves [a0 a1 0 0], [b0 b1 0 0] -> [a0 a1 b0 b1]. */
const JOIN = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];
/** Two f64x2 masks -> one f32x4 mask (the low 4 bytes of each 8-byte lane). */
const NARROW = [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27];

/** The body of one mode's function (see the file comment). */
export function fqBody(mode: FqMode): { locals: ValType[]; body: Code } {
  const [G, X, Y, ACC, N, RUN, S, SMID, SINNER, Z, ZMID, ZINNER, QMIN, QMAX, FLAG] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
  const I = 15, J = 16, END = 17, T = 18, LANES = 19;
  const ACCL = 20;
  const SV = 21, ZV = 22, QMINV = 23, QMAXV = 24, PZ = 25, XV = 26, GV = 27, MASK = 28, OUT = 29;
  const U = [30, 31], R = [32, 33], Q = [34, 35], IN = [36, 37], H = [38, 39], KEEP = 40;
  const locals: ValType[] = [...Array<ValType>(5).fill(ValType.i32), ValType.f64, ...Array<ValType>(20).fill(ValType.v128)];
  const sum = mode === 'sumScale' || mode === 'sumZeroPoint';
  const needsG = mode !== 'forward';
  const c = new Code();
  const at = (base: number, index: number, shift: number) => c.localGet(base).localGet(index).i32Const(shift).i32Shl().i32Add();
  /** Pushes f64x2 of float lanes 0, 1 (h = 0) or 2, 3 (h = 1) of local v. */
  const promote = (v: number, h: number) => {
    c.localGet(v);
    if (h === 1) c.localGet(v).i8x16Shuffle(HIGH_HALF);
    c.f64x2PromoteLowF32x4();
  };
  /** f32x4 from two f64x2 values computed by `half(0)`, `half(1)`. */
  const demoteJoin = (half: (h: number) => void) => {
    half(0);
    c.f32x4DemoteF64x2Zero();
    half(1);
    c.f32x4DemoteF64x2Zero();
    c.i8x16Shuffle(JOIN);
  };
  /** One vector of 4 elements at J; `lanes` null: all 4 lanes count, else the local holding how many do. */
  const vector = (lanes: number | null) => {
    at(X, J, 2).v128Load(0).localSet(XV);
    if (needsG) at(G, J, 2).v128Load(0).localSet(GV);
    for (let h = 0; h < 2; h++) {
      promote(XV, h);
      c.localGet(SV).f64x2Div().localTee(U[h]!);
      c.f64x2Nearest().localGet(ZV).f64x2Add().localTee(R[h]!);
      c.localGet(QMINV).f64x2Max().localGet(QMAXV).f64x2Min().localSet(Q[h]!);
      if (mode !== 'forward') c.localGet(Q[h]!).localGet(R[h]!).f64x2Eq().localSet(IN[h]!);
    }
    if (mode !== 'forward' && mode !== 'gradScale' && mode !== 'sumScale') {
      c.localGet(IN[0]!).localGet(IN[1]!).i8x16Shuffle(NARROW).localSet(MASK);
    }
    const scaleTerm = () =>
      demoteJoin((h) => {
        // g·(inside ? r − (u + z) : q − z)
        promote(GV, h);
        c.localGet(R[h]!).localGet(U[h]!).localGet(ZV).f64x2Add().f64x2Sub();
        c.localGet(Q[h]!).localGet(ZV).f64x2Sub();
        c.localGet(IN[h]!).v128Bitselect();
        c.f64x2Mul();
      });
    const zeroPointTerm = () => {
      // inside ? +0 : (−g)·s
      demoteJoin((h) => {
        promote(GV, h);
        c.f64x2Neg().localGet(SV).f64x2Mul();
      });
      c.localGet(MASK).v128AndNot();
    };
    switch (mode) {
      case 'forward':
        c.localGet(Y).localGet(J).i32Const(2).i32Shl().i32Add();
        demoteJoin((h) => c.localGet(Q[h]!).localGet(ZV).f64x2Sub().localGet(SV).f64x2Mul());
        c.v128Store(0);
        return;
      case 'gradX':
        c.localGet(Y).localGet(J).i32Const(2).i32Shl().i32Add();
        c.localGet(GV).localGet(PZ).f32x4Add().localGet(MASK).v128And().v128Store(0);
        return;
      case 'gradScale':
        c.localGet(Y).localGet(J).i32Const(2).i32Shl().i32Add();
        scaleTerm();
        c.v128Store(0);
        return;
      case 'gradZeroPoint':
        c.localGet(Y).localGet(J).i32Const(2).i32Shl().i32Add();
        zeroPointTerm();
        c.v128Store(0);
        return;
      case 'sumScale':
      case 'sumZeroPoint': {
        if (mode === 'sumScale') {
          scaleTerm();
          c.localSet(OUT);
          // the x part: flag 1 g + 0, flag 2 inside ? g + 0 : +0
          c.localGet(FLAG).if();
          c.localGet(Y).localGet(J).i32Const(2).i32Shl().i32Add();
          c.localGet(GV).localGet(PZ).f32x4Add();
          c.localGet(IN[0]!).localGet(IN[1]!).i8x16Shuffle(NARROW).localGet(KEEP).v128Or().v128And();
          c.v128Store(0);
          c.end();
        } else {
          zeroPointTerm();
          c.localSet(OUT);
        }
        // ACCL += the lanes in order (float64, exact promotions of the float32 terms)
        for (let h = 0; h < 2; h++) {
          promote(OUT, h);
          c.localSet(H[h]!);
        }
        for (let lane = 0; lane < 4; lane++) {
          const add = () => c.localGet(ACCL).localGet(H[lane >> 1]!).f64x2ExtractLane(lane & 1).f64Add().localSet(ACCL);
          if (lanes === null || lane === 0) add();
          else {
            c.localGet(LANES).i32Const(lane).i32GtU().if();
            add();
            c.end();
          }
        }
        return;
      }
    }
  };
  c.localGet(QMIN).f64x2Splat().localSet(QMINV);
  c.localGet(QMAX).f64x2Splat().localSet(QMAXV);
  // PZ: +0 lanes when flag ≠ 0 (g + 0 turns −0 into +0), else −0 lanes (g + −0 = g, bit for bit)
  c.v128Const(Array<number>(16).fill(0)).v128Const([0, 0, 0, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0x80]);
  c.i32Const(0).localGet(FLAG).i32Const(0).i32Ne().i32Sub().i32x4Splat().v128Bitselect().localSet(PZ);
  // KEEP: all ones unless flag = 2 (the x part of 'sumScale' is then masked by `inside`)
  c.i32Const(0).localGet(FLAG).i32Const(2).i32Ne().i32Sub().i32x4Splat().localSet(KEEP);
  c.i32Const(0).localSet(I);
  c.block().loop();
  {
    c.localGet(I).localGet(N).i32GeU().brIf(1);
    c.localGet(I).localGet(RUN).i32Add().localSet(END);
    // scale and zero point of this run
    c.localGet(S).localGet(I).localGet(SINNER).i32DivU().localGet(SMID).i32RemU().i32Const(2).i32Shl().i32Add();
    c.f32Load(0).f64PromoteF32().f64x2Splat().localSet(SV);
    c.localGet(Z).localGet(I).localGet(ZINNER).i32DivU().localGet(ZMID).i32RemU().i32Const(2).i32Shl().i32Add();
    c.f32Load(0).f64PromoteF32().f64x2Splat().localSet(ZV);
    if (sum) {
      if (mode === 'sumScale') c.localGet(I).localGet(SINNER).i32DivU().localGet(SMID).i32RemU().localSet(T);
      else c.localGet(I).localGet(ZINNER).i32DivU().localGet(ZMID).i32RemU().localSet(T);
      at(ACC, T, 3).f64Load(0).localSet(ACCL);
    }
    c.localGet(I).localSet(J);
    // whole vectors
    c.block().loop();
    {
      c.localGet(J).i32Const(4).i32Add().localGet(END).i32GtU().brIf(1);
      vector(null);
      c.localGet(J).i32Const(4).i32Add().localSet(J);
      c.br(0);
    }
    c.end().end();
    // the last, partial vector of the run
    c.localGet(J).localGet(END).i32LtU().if();
    c.localGet(END).localGet(J).i32Sub().localSet(LANES);
    vector(LANES);
    c.end();
    if (sum) {
      at(ACC, T, 3).localGet(ACCL).f64Store(0);
    }
    c.localGet(END).localSet(I);
    c.br(0);
  }
  c.end().end();
  return { locals, body: c };
}

/**
 * The fake-quantization functions as two modules importing env.memory, each under the 4 KB that
 * older Chromium compiles synchronously on the main thread: the elementwise modes, and the sums.
 */
export function quantModulesBytes(memory: MemoryImport = ENV_MEMORY): Uint8Array[] {
  const groups: FqMode[][] = [['forward', 'gradX', 'gradScale', 'gradZeroPoint'], ['sumScale', 'sumZeroPoint']];
  return groups.map((modes) =>
    emitModule(modes.map((mode) => ({ params: FQ_PARAMS, results: [], ...fqBody(mode), exportName: FQ_EXPORTS[mode] })), memory),
  );
}
