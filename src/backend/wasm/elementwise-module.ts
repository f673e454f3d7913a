/**
 * Elementwise functions of the wasm backend's module (./module.ts), four float32 lanes at a time:
 * binary ops and `where` over a broadcast collapsed to rows, and the exact unary ops. Each lane
 * computes what the reference kernel (src/backend/reference/elementwise.ts) stores: for + − × ÷
 * and √ the float32 operation is the double one rounded to float32 (double rounding is innocuous
 * for these when 53 ≥ 2·24 + 2); maximum / minimum / comparisons / where / sign / abs / neg / floor /
 * round / signSte select, round or flip bits as the reference's JS expressions do (NaN and ±0
 * included); copy is broadcastTo.
 *
 * Binary (and `where`, with three operands): f(p, rp0, rp1, q, rq0, rq1, [r, rr0, rr1,] y, d0, d1, d2):
 * the output is d0·d1 rows of d2 floats at y (byte address); row (i0, i1) of operand p is the d2
 * floats at p + (i0·rp0 + i1·rp1)·d2·4 (row strides 0 where it broadcasts). Rows are written in
 * whole vectors: up to 3 floats past a row (the next row overwrites them, the last row's land in
 * the arena's slack), and read up to 3 past each operand row. d0, d1, d2 ≥ 1.
 * Unary: f(x, y, n), n ≥ 1, whole vectors likewise.
 * @internal
 */
import { Code, emitModule, ValType, type MemoryImport } from '../../runtime/wasm/emitter.ts';
import { ENV_MEMORY } from './memory-import.ts';

/** Broadcast functions: the binary primitives, where (3 operands) and copy (1 operand: broadcastTo). */
export const EW_BINARY = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'greater', 'greaterEqual', 'equal', 'where', 'copy'] as const;
export type EwBinary = (typeof EW_BINARY)[number];
export const EW_UNARY = ['neg', 'abs', 'sign', 'floor', 'sqrt', 'round', 'roundSte', 'signSte'] as const;
export type EwUnary = (typeof EW_UNARY)[number];

const ONE = [0, 0, 0x80, 0x3f, 0, 0, 0x80, 0x3f, 0, 0, 0x80, 0x3f, 0, 0, 0x80, 0x3f];
const MINUS_ONE = [0, 0, 0x80, 0xbf, 0, 0, 0x80, 0xbf, 0, 0, 0x80, 0xbf, 0, 0, 0x80, 0xbf];
const ZERO = Array<number>(16).fill(0);

/** Export name of an elementwise function. */
export function ewExport(op: EwBinary | EwUnary): string {
  return `ew_${op}`;
}

/** Pushes op(A, B) (or where(C, A, B)) from the v128 locals given. */
function binaryExpr(c: Code, op: EwBinary, A: number, B: number, C: number): void {
  const ab = () => c.localGet(A).localGet(B);
  switch (op) {
    case 'add': ab().f32x4Add(); return;
    case 'sub': ab().f32x4Sub(); return;
    case 'mul': ab().f32x4Mul(); return;
    case 'div': ab().f32x4Div(); return;
    // a >= b || isNaN(a) ? a : b   (so maximum(−0, +0) = −0 and a NaN b gives b)
    case 'maximum': ab(); ab().f32x4Ge().localGet(A).localGet(A).f32x4Ne().v128Or().v128Bitselect(); return;
    case 'minimum': ab(); ab().f32x4Le().localGet(A).localGet(A).f32x4Ne().v128Or().v128Bitselect(); return;
    case 'greater': ab().f32x4Gt().v128Const(ONE).v128And(); return;
    case 'greaterEqual': ab().f32x4Ge().v128Const(ONE).v128And(); return;
    case 'equal': ab().f32x4Eq().v128Const(ONE).v128And(); return;
    // cond !== 0 ? a : b (NaN counts as nonzero, −0 as zero)
    case 'where': ab().localGet(C).v128Const(ZERO).f32x4Ne().v128Bitselect(); return;
    case 'copy': c.localGet(A); return;
  }
}

/** The body of a binary op's function (three operands for `where`). */
export function binaryBody(op: EwBinary): { params: ValType[]; locals: ValType[]; body: Code } {
  const arity = op === 'where' ? 3 : op === 'copy' ? 1 : 2;
  // operands k = 0..arity−1 at params 3k (base), 3k+1 (rows per i0), 3k+2 (rows per i1)
  const Y = 3 * arity, D0 = Y + 1, D1 = Y + 2, D2 = Y + 3;
  const I0 = D2 + 1, I1 = I0 + 1, J = I0 + 2, OUT = I0 + 3, ROW = I0 + 4; // ROW.. : row addresses per operand
  const V = ROW + arity; // v128 locals per operand
  const c = new Code();
  c.i32Const(0).localSet(I0);
  c.loop();
  {
    c.i32Const(0).localSet(I1);
    c.loop();
    {
      // OUT = y + (i0·d1 + i1)·d2·4; ROW_k = p_k + (i0·r0 + i1·r1)·d2·4
      c.localGet(Y).localGet(I0).localGet(D1).i32Mul().localGet(I1).i32Add().localGet(D2).i32Mul().i32Const(2).i32Shl().i32Add().localSet(OUT);
      for (let k = 0; k < arity; k++) {
        c.localGet(3 * k).localGet(I0).localGet(3 * k + 1).i32Mul().localGet(I1).localGet(3 * k + 2).i32Mul().i32Add();
        c.localGet(D2).i32Mul().i32Const(2).i32Shl().i32Add().localSet(ROW + k);
      }
      c.i32Const(0).localSet(J);
      c.loop();
      {
        for (let k = 0; k < arity; k++) c.localGet(ROW + k).localGet(J).i32Const(2).i32Shl().i32Add().v128Load(0).localSet(V + k);
        c.localGet(OUT).localGet(J).i32Const(2).i32Shl().i32Add();
        // operands in the primitive's order: (a, b) or (cond, a, b)
        if (arity === 3) binaryExpr(c, op, V + 1, V + 2, V);
        else binaryExpr(c, op, V, V + 1, -1); // (copy reads only V)
        c.v128Store(0);
        c.localGet(J).i32Const(4).i32Add().localTee(J).localGet(D2).i32LtS().brIf(0);
      }
      c.end();
      c.localGet(I1).i32Const(1).i32Add().localTee(I1).localGet(D1).i32LtS().brIf(0);
    }
    c.end();
    c.localGet(I0).i32Const(1).i32Add().localTee(I0).localGet(D0).i32LtS().brIf(0);
  }
  c.end();
  return {
    params: Array<ValType>(3 * arity + 4).fill(ValType.i32),
    locals: [...Array<ValType>(4 + arity).fill(ValType.i32), ...Array<ValType>(arity).fill(ValType.v128)],
    body: c,
  };
}

/** The body of a unary op's function f(x, y, n). */
export function unaryBody(op: EwUnary): { params: ValType[]; locals: ValType[]; body: Code } {
  const X = 0, Y = 1, N = 2, J = 3, V = 4;
  const c = new Code();
  c.i32Const(0).localSet(J);
  c.loop();
  {
    c.localGet(Y).localGet(J).i32Const(2).i32Shl().i32Add();
    c.localGet(X).localGet(J).i32Const(2).i32Shl().i32Add().v128Load(0).localSet(V);
    switch (op) {
      case 'neg': c.localGet(V).f32x4Neg(); break;
      case 'abs': c.localGet(V).f32x4Abs(); break;
      case 'floor': c.localGet(V).f32x4Floor(); break;
      case 'sqrt': c.localGet(V).f32x4Sqrt(); break;
      // x > 0 ? 1 : x < 0 ? −1 : 0 (NaN and −0 give +0)
      case 'sign':
        c.localGet(V).v128Const(ZERO).f32x4Gt().v128Const(ONE).v128And();
        c.localGet(V).v128Const(ZERO).f32x4Lt().v128Const(MINUS_ONE).v128And().v128Or();
        break;
      // roundHalfEven: nearest, with every zero result +0 except for x = −0 itself (the reference's
      // floor-based rounding gives +0 for x in [−0.5, 0) and keeps −0)
      case 'round':
      case 'roundSte':
        c.localGet(V).localGet(V).f32x4Nearest().v128Const(ZERO).f32x4Add().localGet(V).v128Const(ZERO).f32x4Eq().v128Bitselect();
        break;
      // x >= 0 ? 1 : −1 (NaN gives −1, −0 gives 1)
      case 'signSte':
        c.v128Const(ONE).v128Const(MINUS_ONE).localGet(V).v128Const(ZERO).f32x4Ge().v128Bitselect();
        break;
    }
    c.v128Store(0);
    c.localGet(J).i32Const(4).i32Add().localTee(J).localGet(N).i32LtS().brIf(0);
  }
  c.end();
  return { params: [ValType.i32, ValType.i32, ValType.i32], locals: [ValType.i32, ValType.v128], body: c };
}

/** The elementwise functions as one module importing env.memory (under 4 KB, see ./quant-module.ts). */
export function elementwiseModuleBytes(memory: MemoryImport = ENV_MEMORY): Uint8Array {
  return emitModule([
    ...EW_BINARY.map((op) => ({ results: [], ...binaryBody(op), exportName: ewExport(op) })),
    ...EW_UNARY.map((op) => ({ results: [], ...unaryBody(op), exportName: ewExport(op) })),
  ], memory);
}
