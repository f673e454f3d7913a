/**
 * The fp32 kernels of the 'wasm' backend as one WebAssembly SIMD128 module, emitted at run time
 * with src/runtime/wasm/emitter.ts (no toolchain; the module is about 4.4 KB, so the synchronous
 * `new WebAssembly.Module` is fine on a browser's main thread). Its functions: gemm and its two
 * variants gemmTapsB / gemmRowsA (operand rows found through an offset table, for stride-1
 * convolutions on the padded image), biasRelu, compact, padImage, col2im, maxPool, maxPool2x2 and
 * scatterAdd; each is described where it is emitted.
 *
 * gemm(ap, bp, c, mBlocks, nBlocks, k, ldc, accumulate): C (+)= A·B on packed panels, byte addresses.
 * - ap: A packed as [mBlocks][k][4] (4 rows of A side by side for every k);
 * - bp: B packed as [nBlocks][k][8] (8 columns of B side by side for every k);
 * - c:  C as [4·mBlocks rows][ldc bytes], tile (mb, nb) at c + mb·4·ldc + nb·32;
 * - accumulate ≠ 0 adds to C instead of overwriting it. k ≥ 1.
 * Panels past the true M or N may hold anything (their rows / columns of C are discarded by the
 * caller): every output element depends only on its own row of A and column of B.
 *
 * The micro-kernel keeps a 4 × 8 tile of C in 8 f32x4 accumulators; per k it loads two vectors of
 * B, splats the 4 values of A and does 8 multiplies then 8 adds (no relaxed SIMD, so no FMA: each
 * product is rounded to float32 before it is added). Column panels are the outer loop so that one
 * panel of B (k·32 bytes) stays in L1 while the row panels of A stream past it.
 *
 * biasRelu(y, rows, cols, bias, relu): y[r, i] = y[r, i] + bias[r], then max(·, 0) when relu ≠ 0
 * (relu ∈ {0, 1}; f32x4.max: NaN stays NaN, −0 becomes +0 like the reference's `v <= 0 ? 0 : v`);
 * rows of `cols` floats, 4 at a time with a scalar tail.
 * @internal
 */
import { Code, emitModule, ValType, type MemoryImport } from '../../runtime/wasm/emitter.ts';
import { ENV_MEMORY } from './memory-import.ts';

/**
 * `for (i = lo; i < hi; i += step) body` with signed bounds pushed by `lo` and `hi` (hi is
 * re-evaluated after every iteration, so it must not depend on i); no iteration when lo ≥ hi;
 * lo = null keeps i as it is. Shared by the wasm modules' emitters.
 */
export function loopRange(c: Code, i: number, lo: (() => void) | null, hi: () => void, step: number, body: () => void): void {
  if (lo) {
    lo();
    c.localSet(i);
  }
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

/** `loopRange` with step 1. */
function forRange(c: Code, i: number, lo: () => void, hi: () => void, body: () => void): void {
  loopRange(c, i, lo, hi, 1, body);
}

/**
 * Where the micro-kernel reads its operands:
 * - 'packed': gemm(ap, bp, c, mBlocks, nBlocks, k, ldc, accumulate), A and B packed (see above);
 * - 'tapsB': gemmTapsB(ap, x, taps, c, mBlocks, nBlocks, k, ldc, accumulate): A packed; row kk of
 *   B's column panel nb is the 8 floats at x + nb·32 + taps[kk] (taps: i32 byte offsets) -- a
 *   stride-1 convolution reading the zero-padded image directly (no im2col);
 * - 'rowsA': gemmRowsA(a, rows, bp, c, mBlocks, nBlocks, k, ldc, accumulate): B packed; row r of A
 *   is the k consecutive floats at a + rows[r] (rows: i32 byte offsets, 4·mBlocks of them).
 */
type GemmVariant = 'packed' | 'tapsB' | 'rowsA';

function gemmBody(variant: GemmVariant): { params: number; locals: ValType[]; body: Code } {
  // parameters: A, B, C, … ('packed'); A, B, taps, C, … ('tapsB'); A, rows, B, C, … ('rowsA')
  const table = variant !== 'packed';
  const shift = table ? 1 : 0;
  const TABLE = variant === 'tapsB' ? 2 : 1;
  const A = 0, B = variant === 'rowsA' ? 2 : 1, C = 2 + shift, MB = 3 + shift, NB = 4 + shift, K = 5 + shift, LDC = 6 + shift, ACCUMULATE = 7 + shift;
  const first = 8 + shift;
  const NI = first, MI = first + 1, KI = first + 2, APTR = first + 3, BPTR = first + 4, CROW = first + 5, BPANEL = first + 6, TILE = first + 7;
  const TP = first + 8, R0 = first + 9; // table pointer; A row pointers R0..R0+3 ('rowsA')
  const ACC = first + 13; // acc[r][j] at ACC + 2r + j
  const B0 = ACC + 8, B1 = ACC + 9, AV = ACC + 10;
  const locals: ValType[] = [...Array<ValType>(13).fill(ValType.i32), ...Array<ValType>(11).fill(ValType.v128)];
  const c = new Code();
  c.i32Const(0).localSet(NI);
  c.loop(); // column panels
  {
    if (variant === 'tapsB') c.localGet(B).localGet(NI).i32Const(32).i32Mul().i32Add().localSet(BPANEL);
    else c.localGet(B).localGet(NI).localGet(K).i32Mul().i32Const(32).i32Mul().i32Add().localSet(BPANEL);
    c.i32Const(0).localSet(MI);
    c.loop(); // row panels
    {
      // TILE = c + mi·4·ldc + ni·32
      c.localGet(C).localGet(MI).i32Const(4).i32Mul().localGet(LDC).i32Mul().i32Add().localGet(NI).i32Const(32).i32Mul().i32Add().localSet(TILE);
      c.localGet(ACCUMULATE).if();
      c.localGet(TILE).localSet(CROW);
      for (let r = 0; r < 4; r++) {
        c.localGet(CROW).v128Load(0).localSet(ACC + 2 * r);
        c.localGet(CROW).v128Load(16).localSet(ACC + 2 * r + 1);
        if (r < 3) c.localGet(CROW).localGet(LDC).i32Add().localSet(CROW);
      }
      c.else();
      for (let i = 0; i < 8; i++) c.v128Const(Array<number>(16).fill(0)).localSet(ACC + i);
      c.end();
      if (variant === 'rowsA') {
        // R_r = a + rows[4·mi + r]
        for (let r = 0; r < 4; r++) {
          c.localGet(A).localGet(TABLE).localGet(MI).i32Const(16).i32Mul().i32Add().i32Load(4 * r).i32Add().localSet(R0 + r);
        }
      } else {
        c.localGet(A).localGet(MI).localGet(K).i32Mul().i32Const(16).i32Mul().i32Add().localSet(APTR);
      }
      if (variant === 'tapsB') c.localGet(TABLE).localSet(TP);
      else c.localGet(BPANEL).localSet(BPTR);
      c.localGet(K).localSet(KI);
      c.loop(); // k
      {
        if (variant === 'tapsB') {
          c.localGet(BPANEL).localGet(TP).i32Load(0).i32Add().localSet(BPTR);
          c.localGet(TP).i32Const(4).i32Add().localSet(TP);
        }
        c.localGet(BPTR).v128Load(0).localSet(B0);
        c.localGet(BPTR).v128Load(16).localSet(B1);
        for (let r = 0; r < 4; r++) {
          if (variant === 'rowsA') {
            c.localGet(R0 + r).v128Load32Splat(0).localSet(AV);
            c.localGet(R0 + r).i32Const(4).i32Add().localSet(R0 + r);
          } else {
            c.localGet(APTR).v128Load32Splat(4 * r).localSet(AV);
          }
          c.localGet(ACC + 2 * r).localGet(AV).localGet(B0).f32x4Mul().f32x4Add().localSet(ACC + 2 * r);
          c.localGet(ACC + 2 * r + 1).localGet(AV).localGet(B1).f32x4Mul().f32x4Add().localSet(ACC + 2 * r + 1);
        }
        if (variant !== 'rowsA') c.localGet(APTR).i32Const(16).i32Add().localSet(APTR);
        if (variant !== 'tapsB') c.localGet(BPTR).i32Const(32).i32Add().localSet(BPTR);
        c.localGet(KI).i32Const(1).i32Sub().localTee(KI).brIf(0);
      }
      c.end();
      c.localGet(TILE).localSet(CROW);
      for (let r = 0; r < 4; r++) {
        c.localGet(CROW).localGet(ACC + 2 * r).v128Store(0);
        c.localGet(CROW).localGet(ACC + 2 * r + 1).v128Store(16);
        if (r < 3) c.localGet(CROW).localGet(LDC).i32Add().localSet(CROW);
      }
      c.localGet(MI).i32Const(1).i32Add().localTee(MI).localGet(MB).i32LtU().brIf(0);
    }
    c.end();
    c.localGet(NI).i32Const(1).i32Add().localTee(NI).localGet(NB).i32LtU().brIf(0);
  }
  c.end();
  return { params: first, locals, body: c };
}

/**
 * compact(c, ldc, y, rows, oh, ow, wp, bias, relu): the output stage of a canvas GEMM. Row r of C
 * holds output row oy of channel r at c + r·ldc + oy·wp·4 (ow valid floats, then junk); it goes to
 * y[(r·oh + oy)·ow + ox] as C + bias[r], then max(·, 0) when relu = 1 (as biasRelu).
 */
function compactBody(): { locals: ValType[]; body: Code } {
  const [CP, LDC, Y, ROWS, OH, OW, WP, BIAS, RELU] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const R = 9, OY = 10, SRC = 11, DST = 12, END = 13, VEC_END = 14;
  const BV = 15, ZERO = 16, V = 17, MASK = 18;
  const locals: ValType[] = [...Array<ValType>(6).fill(ValType.i32), ...Array<ValType>(4).fill(ValType.v128)];
  const c = new Code();
  c.v128Const(Array<number>(16).fill(0)).localSet(ZERO);
  c.i32Const(0).localGet(RELU).i32Sub().i32x4Splat().localSet(MASK);
  c.localGet(Y).localSet(DST);
  forRange(c, R, () => c.i32Const(0), () => c.localGet(ROWS), () => {
    c.localGet(BIAS).localGet(R).i32Const(4).i32Mul().i32Add().v128Load32Splat(0).localSet(BV);
    forRange(c, OY, () => c.i32Const(0), () => c.localGet(OH), () => {
      c.localGet(CP).localGet(R).localGet(LDC).i32Mul().i32Add().localGet(OY).localGet(WP).i32Mul().i32Const(4).i32Mul().i32Add().localSet(SRC);
      c.localGet(DST).localGet(OW).i32Const(4).i32Mul().i32Add().localSet(END);
      c.localGet(DST).localGet(OW).i32Const(-4).i32And().i32Const(4).i32Mul().i32Add().localSet(VEC_END);
      c.block().localGet(DST).localGet(VEC_END).i32GeU().brIf(0);
      c.loop();
      {
        c.localGet(DST).localGet(SRC).v128Load(0).localGet(BV).f32x4Add().localSet(V);
        c.localGet(V).localGet(ZERO).f32x4Max().localGet(V).localGet(MASK).v128Bitselect().v128Store(0);
        c.localGet(SRC).i32Const(16).i32Add().localSet(SRC);
        c.localGet(DST).i32Const(16).i32Add().localTee(DST).localGet(VEC_END).i32LtU().brIf(0);
      }
      c.end().end();
      c.block().localGet(DST).localGet(END).i32GeU().brIf(0);
      c.loop();
      {
        c.localGet(DST).localGet(SRC).v128Load32Splat(0).localGet(BV).f32x4Add().localSet(V);
        c.localGet(V).localGet(ZERO).f32x4Max().localGet(V).localGet(MASK).v128Bitselect().f32x4ExtractLane(0).f32Store(0);
        c.localGet(SRC).i32Const(4).i32Add().localSet(SRC);
        c.localGet(DST).i32Const(4).i32Add().localTee(DST).localGet(END).i32LtU().brIf(0);
      }
      c.end().end();
    });
  });
  return { locals, body: c };
}

/**
 * padImage(src, dst, planes, h, w, hp, wp, ph, pw): copies every (h, w) plane of src into the
 * interior of a (hp, wp) plane of dst at row ph, column pw (memory.copy per row); the border of
 * dst is left as it is (the caller zeroes it once).
 */
function padImageBody(): { locals: ValType[]; body: Code } {
  const [SRC, DST, PLANES, H, W, HP, WP, PH, PW] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const PL = 9, ROW = 10;
  const locals: ValType[] = [ValType.i32, ValType.i32];
  const c = new Code();
  forRange(c, PL, () => c.i32Const(0), () => c.localGet(PLANES), () => {
    forRange(c, ROW, () => c.i32Const(0), () => c.localGet(H), () => {
      // dst + ((pl·hp + row + ph)·wp + pw)·4 <- src + ((pl·h + row)·w)·4, w·4 bytes
      c.localGet(DST).localGet(PL).localGet(HP).i32Mul().localGet(ROW).i32Add().localGet(PH).i32Add().localGet(WP).i32Mul().localGet(PW).i32Add().i32Const(4).i32Mul().i32Add();
      c.localGet(SRC).localGet(PL).localGet(H).i32Mul().localGet(ROW).i32Add().localGet(W).i32Mul().i32Const(4).i32Mul().i32Add();
      c.localGet(W).i32Const(4).i32Mul().memoryCopy();
    });
  });
  return { locals, body: c };
}

/** Byte lanes of i8x16.shuffle taking float lanes `a` of the first operand and `b` of the second (4 + i: lane i of the second). */
function floatLanes(lanes: readonly number[]): number[] {
  return lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]);
}

/**
 * canvasLanes(src, dst, rows, oh, ow, wp, canvas): the B panels of a canvas GEMM from `rows`
 * consecutive (oh, ow) planes at src: plane r's pixel (oy, ox) goes to float lane r mod 8 of
 * position q = oy·wp + ox of panel r div 8, at dst + ((r div 8)·canvas·8 + q·8 + r mod 8)·4
 * (panels of `canvas` positions of 8 floats). Junk positions (ox ≥ ow) and the lanes past `rows`
 * are not written. Every full block of 8 planes moves 4 pixels of a row at a time (eight loads,
 * two 4 × 4 transposes, eight stores); the last columns and a partial block go one float at a time.
 */
function canvasLanesBody(): { locals: ValType[]; body: Code } {
  const [SRC, DST, ROWS, OH, OW, WP, CANVAS] = [0, 1, 2, 3, 4, 5, 6];
  const BLK = 7, OY = 8, OX = 9, S = 10, D = 11, PLANE = 12, FULL = 13, R = 14, XVEC = 15, X0 = 16;
  const A = 17; // A..A+7: the eight rows' vectors; then four temporaries
  const T = A + 8;
  const locals: ValType[] = [...Array<ValType>(10).fill(ValType.i32), ...Array<ValType>(12).fill(ValType.v128)];
  const c = new Code();
  // PLANE = oh·ow·4 (bytes between planes); FULL = rows − rows mod 8; XVEC = ow − ow mod 4
  c.localGet(OH).localGet(OW).i32Mul().i32Const(4).i32Mul().localSet(PLANE);
  c.localGet(ROWS).i32Const(-8).i32And().localSet(FULL);
  c.localGet(OW).i32Const(-4).i32And().localSet(XVEC);
  loopRange(c, BLK, () => c.i32Const(0), () => c.localGet(FULL), 8, () => {
    forRange(c, OY, () => c.i32Const(0), () => c.localGet(OH), () => {
      loopRange(c, OX, () => c.i32Const(0), () => c.localGet(XVEC), 4, () => {
        // S = src + (blk·oh·ow + oy·ow + ox)·4; D = dst + ((blk / 8)·canvas·8 + (oy·wp + ox)·8)·4
        c.localGet(SRC).localGet(BLK).localGet(PLANE).i32Mul().i32Add().localGet(OY).localGet(OW).i32Mul().localGet(OX).i32Add().i32Const(4).i32Mul().i32Add().localSet(S);
        c.localGet(DST).localGet(BLK).localGet(CANVAS).i32Mul().localGet(OY).localGet(WP).i32Mul().localGet(OX).i32Add().i32Const(8).i32Mul().i32Add().i32Const(4).i32Mul().i32Add().localSet(D);
        for (let r = 0; r < 8; r++) {
          c.localGet(S).v128Load(0).localSet(A + r);
          if (r < 7) c.localGet(S).localGet(PLANE).i32Add().localSet(S);
        }
        for (const half of [0, 4]) {
          const [a, b, cc, d] = [A + half, A + half + 1, A + half + 2, A + half + 3];
          // T0 = a0 b0 a1 b1, T1 = a2 b2 a3 b3, T2 = c0 d0 c1 d1, T3 = c2 d2 c3 d3
          c.localGet(a).localGet(b).i8x16Shuffle(floatLanes([0, 4, 1, 5])).localSet(T);
          c.localGet(a).localGet(b).i8x16Shuffle(floatLanes([2, 6, 3, 7])).localSet(T + 1);
          c.localGet(cc).localGet(d).i8x16Shuffle(floatLanes([0, 4, 1, 5])).localSet(T + 2);
          c.localGet(cc).localGet(d).i8x16Shuffle(floatLanes([2, 6, 3, 7])).localSet(T + 3);
          // column j of the four rows = lanes of T0 / T1 with T2 / T3, stored at position ox + j
          const cols: [number, number, number[]][] = [[T, T + 2, [0, 1, 4, 5]], [T, T + 2, [2, 3, 6, 7]], [T + 1, T + 3, [0, 1, 4, 5]], [T + 1, T + 3, [2, 3, 6, 7]]];
          cols.forEach(([lo, hi, lanes], j) => {
            c.localGet(D).localGet(lo).localGet(hi).i8x16Shuffle(floatLanes(lanes)).v128Store(j * 32 + half * 4);
          });
        }
      });
    });
  });
  // the rest one float at a time: columns [xvec, ow) of the full blocks, every column of the last rows
  forRange(c, R, () => c.i32Const(0), () => c.localGet(ROWS), () => {
    c.localGet(XVEC).i32Const(0).localGet(R).localGet(FULL).i32LtS().select().localSet(X0);
    forRange(c, OY, () => c.i32Const(0), () => c.localGet(OH), () => {
      forRange(c, OX, () => c.localGet(X0), () => c.localGet(OW), () => {
        // dst + ((r >> 3)·canvas·8 + (oy·wp + ox)·8 + (r & 7))·4 <- src + r·plane + (oy·ow + ox)·4
        c.localGet(DST).localGet(R).i32Const(3).i32ShrS().localGet(CANVAS).i32Mul().localGet(OY).localGet(WP).i32Mul().localGet(OX).i32Add().i32Add().i32Const(8).i32Mul();
        c.localGet(R).i32Const(7).i32And().i32Add().i32Const(4).i32Mul().i32Add();
        c.localGet(SRC).localGet(R).localGet(PLANE).i32Mul().i32Add().localGet(OY).localGet(OW).i32Mul().localGet(OX).i32Add().i32Const(4).i32Mul().i32Add().f32Load(0);
        c.f32Store(0);
      });
    });
  });
  return { locals, body: c };
}

function biasReluBody(): { locals: ValType[]; body: Code } {
  const [Y, ROWS, COLS, BIAS, RELU] = [0, 1, 2, 3, 4];
  const R = 5, I = 6, END = 7, VEC_END = 8;
  const BV = 9, ZERO = 10, V = 11, MASK = 12;
  const locals: ValType[] = [...Array<ValType>(4).fill(ValType.i32), ...Array<ValType>(4).fill(ValType.v128)];
  const c = new Code();
  c.v128Const(Array<number>(16).fill(0)).localSet(ZERO);
  // MASK: all ones when relu = 1 (take the max), all zeros when 0 (keep the sum)
  c.i32Const(0).localGet(RELU).i32Sub().i32x4Splat().localSet(MASK);
  c.i32Const(0).localSet(R);
  c.block().localGet(ROWS).i32Eqz().brIf(0).localGet(COLS).i32Eqz().brIf(0);
  c.loop(); // rows
  {
    c.localGet(BIAS).localGet(R).i32Const(4).i32Mul().i32Add().v128Load32Splat(0).localSet(BV);
    // I = y + r·cols·4; END = I + cols·4; VEC_END = I + (cols & ~3)·4
    c.localGet(Y).localGet(R).localGet(COLS).i32Mul().i32Const(4).i32Mul().i32Add().localSet(I);
    c.localGet(I).localGet(COLS).i32Const(4).i32Mul().i32Add().localSet(END);
    c.localGet(I).localGet(COLS).i32Const(-4).i32And().i32Const(4).i32Mul().i32Add().localSet(VEC_END);
    c.block().localGet(I).localGet(VEC_END).i32GeU().brIf(0);
    c.loop();
    {
      c.localGet(I).localGet(I).v128Load(0).localGet(BV).f32x4Add().localSet(V);
      c.localGet(V).localGet(ZERO).f32x4Max().localGet(V).localGet(MASK).v128Bitselect();
      c.v128Store(0);
      c.localGet(I).i32Const(16).i32Add().localTee(I).localGet(VEC_END).i32LtU().brIf(0);
    }
    c.end().end();
    c.block().localGet(I).localGet(END).i32GeU().brIf(0);
    c.loop();
    {
      c.localGet(I).localGet(I).v128Load32Splat(0).localGet(BV).f32x4Add().localSet(V);
      c.localGet(V).localGet(ZERO).f32x4Max().localGet(V).localGet(MASK).v128Bitselect();
      c.f32x4ExtractLane(0).f32Store(0);
      c.localGet(I).i32Const(4).i32Add().localTee(I).localGet(END).i32LtU().brIf(0);
    }
    c.end().end();
    c.localGet(R).i32Const(1).i32Add().localTee(R).localGet(ROWS).i32LtU().brIf(0);
  }
  c.end();
  c.end();
  return { locals, body: c };
}

/**
 * maxPool(x, y, idx, planes, h, w, oh, ow, kh, kw, sh, sw, ph, pw, relu): for every window of
 * every (h, w) plane of x (f32, byte address), the index (in floats from x) of its first maximum,
 * or of its last NaN (a NaN anywhere wins), written to idx (i32) with the maximum itself to y
 * (f32); padding is outside every window. With relu = 1, a window whose maximum is ≤ 0 gets
 * index −1 and value 0 (the ReLU in front of the pooling zeroes it; NaN stays). The reference's
 * argmaxWindows, window by window in the same order.
 */
function maxPoolBody(): { locals: ValType[]; body: Code } {
  const [X, Y, IDX, PLANES, H, W, OH, OW, KH, KW, SH, SW, PH, PW, RELU] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
  const PL = 15, OY = 16, OX = 17, Y0 = 18, X0 = 19, KY = 20, KX = 21, KYLO = 22, KYHI = 23, KXLO = 24, KXHI = 25;
  const BEST = 26, ADDR = 27, OUTB = 28, PLANEBASE = 29;
  const BESTV = 30, V = 31;
  const locals: ValType[] = [...Array<ValType>(15).fill(ValType.i32), ValType.f32, ValType.f32];
  const c = new Code();
  /** local `dst` = max(0, −start), `dstHi` = min(k, n − start): the window cells inside the plane. */
  const clip = (start: number, k: number, n: number, lo: number, hi: number) => {
    c.i32Const(0).localGet(start).i32Sub().i32Const(0);
    c.i32Const(0).localGet(start).i32Sub().i32Const(0).i32GtS().select().localSet(lo);
    c.localGet(k).localGet(n).localGet(start).i32Sub();
    c.localGet(k).localGet(n).localGet(start).i32Sub().i32LtS().select().localSet(hi);
  };
  c.i32Const(0).localSet(OUTB);
  forRange(c, PL, () => c.i32Const(0), () => c.localGet(PLANES), () => {
    c.localGet(PL).localGet(H).i32Mul().localGet(W).i32Mul().localSet(PLANEBASE);
    forRange(c, OY, () => c.i32Const(0), () => c.localGet(OH), () => {
      c.localGet(OY).localGet(SH).i32Mul().localGet(PH).i32Sub().localSet(Y0);
      clip(Y0, KH, H, KYLO, KYHI);
      forRange(c, OX, () => c.i32Const(0), () => c.localGet(OW), () => {
        c.localGet(OX).localGet(SW).i32Mul().localGet(PW).i32Sub().localSet(X0);
        clip(X0, KW, W, KXLO, KXHI);
        c.i32Const(-1).localSet(BEST);
        c.f32Const(-Infinity).localSet(BESTV);
        forRange(c, KY, () => c.localGet(KYLO), () => c.localGet(KYHI), () => {
          forRange(c, KX, () => c.localGet(KXLO), () => c.localGet(KXHI), () => {
            // ADDR = planeBase + (y0 + ky)·w + x0 + kx
            c.localGet(PLANEBASE).localGet(Y0).localGet(KY).i32Add().localGet(W).i32Mul().i32Add().localGet(X0).i32Add().localGet(KX).i32Add().localSet(ADDR);
            c.localGet(X).localGet(ADDR).i32Const(4).i32Mul().i32Add().f32Load(0).localSet(V);
            c.localGet(BEST).i32Const(0).i32LtS().localGet(V).localGet(BESTV).f32Gt().i32Or().localGet(V).localGet(V).f32Ne().i32Or();
            c.if().localGet(ADDR).localSet(BEST).localGet(V).localSet(BESTV).end();
          });
        });
        c.localGet(RELU).localGet(BESTV).f32Const(0).f32Le().i32And().if().i32Const(-1).localSet(BEST).end();
        c.localGet(Y).localGet(OUTB).i32Add();
        c.f32Const(0).localGet(BESTV).localGet(BEST).i32Const(0).i32LtS().select().f32Store(0);
        c.localGet(IDX).localGet(OUTB).i32Add().localGet(BEST).i32Store(0);
        c.localGet(OUTB).i32Const(4).i32Add().localSet(OUTB);
      });
    });
  });
  return { locals, body: c };
}

/**
 * maxPool2x2(x, y, idx, planes, h, w, oh, ow, relu): maxPool with 2×2 windows, stride 2, no padding
 * (same results as maxPool), four windows at a time: the two input rows are loaded as vectors,
 * split into even and odd columns, and the four candidates of each window taken in window order
 * with the rule "replace when greater or NaN". Each output row is written in whole vectors: up to
 * 3 values (and indices) past its end, which the next row overwrites (the last row's land in the
 * slack past y and idx), reading up to 6 floats past its input rows.
 */
function maxPool2x2Body(): { locals: ValType[]; body: Code } {
  const [X, Y, IDX, PLANES, H, W, OH, OW, RELU] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const PL = 9, OY = 10, OX = 11, ROW0 = 12, OUTB = 13, BASE = 14;
  const E0 = 15, O0 = 16, E1 = 17, O1 = 18, BEST = 19, BI = 20, M = 21, BASEV = 22, WV = 23, ZERO = 24, MINUS1 = 25, RELUV = 26, LANES = 27;
  const locals: ValType[] = [...Array<ValType>(6).fill(ValType.i32), ...Array<ValType>(13).fill(ValType.v128)];
  const even = [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27];
  const odd = even.map((b) => b + 4);
  const c = new Code();
  c.v128Const(Array<number>(16).fill(0)).localSet(ZERO);
  c.v128Const(Array<number>(16).fill(255)).localSet(MINUS1);
  c.i32Const(0).localGet(RELU).i32Sub().i32x4Splat().localSet(RELUV);
  c.localGet(W).i32x4Splat().localSet(WV);
  // lane offsets 0, 2, 4, 6 (i32 little-endian)
  c.v128Const([0, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 6, 0, 0, 0]).localSet(LANES);
  c.i32Const(0).localSet(OUTB);
  forRange(c, PL, () => c.i32Const(0), () => c.localGet(PLANES), () => {
    forRange(c, OY, () => c.i32Const(0), () => c.localGet(OH), () => {
      // BASE = (pl·h + 2·oy)·w: index of the window row's first float; ROW0 its address
      c.localGet(PL).localGet(H).i32Mul().localGet(OY).i32Const(2).i32Mul().i32Add().localGet(W).i32Mul().localSet(BASE);
      c.localGet(X).localGet(BASE).i32Const(4).i32Mul().i32Add().localSet(ROW0);
      c.i32Const(0).localSet(OX);
      c.loop();
      {
        const load = (row: number, offset: number) => {
          c.localGet(ROW0).localGet(OX).i32Const(8).i32Mul().i32Add();
          if (row === 1) c.localGet(W).i32Const(4).i32Mul().i32Add();
          c.v128Load(offset);
        };
        load(0, 0); load(0, 16); c.i8x16Shuffle(even).localSet(E0);
        load(0, 0); load(0, 16); c.i8x16Shuffle(odd).localSet(O0);
        load(1, 0); load(1, 16); c.i8x16Shuffle(even).localSet(E1);
        load(1, 0); load(1, 16); c.i8x16Shuffle(odd).localSet(O1);
        // BASEV = base + 2·ox + [0, 2, 4, 6]
        c.localGet(BASE).localGet(OX).i32Const(2).i32Mul().i32Add().i32x4Splat().localGet(LANES).i32x4Add().localSet(BASEV);
        c.localGet(E0).localSet(BEST);
        c.localGet(BASEV).localSet(BI);
        const candidates: [number, () => void][] = [
          [O0, () => c.localGet(BASEV).i32Const(1).i32x4Splat().i32x4Add()],
          [E1, () => c.localGet(BASEV).localGet(WV).i32x4Add()],
          [O1, () => c.localGet(BASEV).localGet(WV).i32x4Add().i32Const(1).i32x4Splat().i32x4Add()],
        ];
        for (const [cand, index] of candidates) {
          c.localGet(cand).localGet(BEST).f32x4Gt().localGet(cand).localGet(cand).f32x4Ne().v128Or().localSet(M);
          c.localGet(cand).localGet(BEST).localGet(M).v128Bitselect().localSet(BEST);
          index();
          c.localGet(BI).localGet(M).v128Bitselect().localSet(BI);
        }
        // relu: a maximum <= 0 (not NaN) drops the window: value 0, index -1
        c.localGet(BEST).localGet(ZERO).f32x4Le().localGet(RELUV).v128And().localSet(M);
        c.localGet(Y).localGet(OUTB).i32Add().localGet(ZERO).localGet(BEST).localGet(M).v128Bitselect().v128Store(0);
        c.localGet(IDX).localGet(OUTB).i32Add().localGet(MINUS1).localGet(BI).localGet(M).v128Bitselect().v128Store(0);
        c.localGet(OUTB).i32Const(16).i32Add().localSet(OUTB);
        c.localGet(OX).i32Const(4).i32Add().localTee(OX).localGet(OW).i32LtS().brIf(0);
      }
      c.end();
      // rewind OUTB to the end of this output row: OUTB −= (ox − ow)·4
      c.localGet(OUTB).localGet(OX).localGet(OW).i32Sub().i32Const(4).i32Mul().i32Sub().localSet(OUTB);
    });
  });
  return { locals, body: c };
}

/**
 * col2im(c, ldc, dx, cg, h, w, kh, kw, oh, ow, ph, pw, dh, dw): the adjoint of a stride-1 im2col,
 * added into dx: row t = (ci, ky, kx) of C (at c + t·ldc, oh·ow floats) adds, for each output row
 * oy with iy = oy − ph + ky·dh inside the image, its run of ox with ix = ox − pw + kx·dw inside
 * the image to dx[(ci·h + iy)·w + ix], four floats at a time. Rows, then oy, then ox in order, as
 * the reference's col2im: every dx element receives its terms in the same order.
 */
function col2imBody(): { locals: ValType[]; body: Code } {
  const [CP, LDC, DX, CG, H, W, KH, KW, OH, OW, PH, PW, DH, DW] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
  const CI = 14, KY = 15, KX = 16, T = 17, OY = 18, IY = 19, SHIFT = 20, LO = 21, HI = 22, SRC = 23, DST = 24, END = 25, VEC_END = 26;
  const locals: ValType[] = Array<ValType>(13).fill(ValType.i32);
  const c = new Code();
  c.i32Const(0).localSet(T);
  forRange(c, CI, () => c.i32Const(0), () => c.localGet(CG), () => {
    forRange(c, KY, () => c.i32Const(0), () => c.localGet(KH), () => {
      forRange(c, KX, () => c.i32Const(0), () => c.localGet(KW), () => {
        // SHIFT = kx·dw − pw; LO = max(0, −shift); HI = min(ow, w − shift)
        c.localGet(KX).localGet(DW).i32Mul().localGet(PW).i32Sub().localSet(SHIFT);
        c.i32Const(0).localGet(SHIFT).i32Sub().i32Const(0).i32Const(0).localGet(SHIFT).i32Sub().i32Const(0).i32GtS().select().localSet(LO);
        c.localGet(OW).localGet(W).localGet(SHIFT).i32Sub().localGet(OW).localGet(W).localGet(SHIFT).i32Sub().i32LtS().select().localSet(HI);
        forRange(c, OY, () => c.i32Const(0), () => c.localGet(OH), () => {
          c.localGet(OY).localGet(PH).i32Sub().localGet(KY).localGet(DH).i32Mul().i32Add().localSet(IY);
          c.localGet(IY).i32Const(0).i32GeS().localGet(IY).localGet(H).i32LtS().i32And().localGet(LO).localGet(HI).i32LtS().i32And();
          c.if();
          // DST = dx + ((ci·h + iy)·w + lo + shift)·4; SRC = c + t·ldc + (oy·ow + lo)·4
          c.localGet(DX).localGet(CI).localGet(H).i32Mul().localGet(IY).i32Add().localGet(W).i32Mul().localGet(LO).i32Add().localGet(SHIFT).i32Add().i32Const(4).i32Mul().i32Add().localSet(DST);
          c.localGet(CP).localGet(T).localGet(LDC).i32Mul().i32Add().localGet(OY).localGet(OW).i32Mul().localGet(LO).i32Add().i32Const(4).i32Mul().i32Add().localSet(SRC);
          c.localGet(DST).localGet(HI).localGet(LO).i32Sub().i32Const(4).i32Mul().i32Add().localSet(END);
          c.localGet(DST).localGet(HI).localGet(LO).i32Sub().i32Const(-4).i32And().i32Const(4).i32Mul().i32Add().localSet(VEC_END);
          c.block().localGet(DST).localGet(VEC_END).i32GeU().brIf(0);
          c.loop();
          c.localGet(DST).localGet(DST).v128Load(0).localGet(SRC).v128Load(0).f32x4Add().v128Store(0);
          c.localGet(SRC).i32Const(16).i32Add().localSet(SRC);
          c.localGet(DST).i32Const(16).i32Add().localTee(DST).localGet(VEC_END).i32LtU().brIf(0);
          c.end().end();
          c.block().localGet(DST).localGet(END).i32GeU().brIf(0);
          c.loop();
          c.localGet(DST).localGet(DST).f32Load(0).localGet(SRC).f32Load(0).f32Add().f32Store(0);
          c.localGet(SRC).i32Const(4).i32Add().localSet(SRC);
          c.localGet(DST).i32Const(4).i32Add().localTee(DST).localGet(END).i32LtU().brIf(0);
          c.end().end();
          c.end();
        });
        c.localGet(T).i32Const(1).i32Add().localSet(T);
      });
    });
  });
  return { locals, body: c };
}

/**
 * scatterAdd(idx, g, dx, count): dx[idx[i]] += g[i] for i < count in order, skipping idx[i] < 0
 * (the backward pass of max pooling from the window indices; f32 adds, each rounded once as the
 * reference's float32 store of a double sum).
 */
function scatterAddBody(): { locals: ValType[]; body: Code } {
  const [IDX, G, DX, COUNT] = [0, 1, 2, 3];
  const I = 4, AT = 5;
  const c = new Code();
  forRange(c, I, () => c.i32Const(0), () => c.localGet(COUNT), () => {
    c.localGet(IDX).localGet(I).i32Const(4).i32Mul().i32Add().i32Load(0).localTee(AT).i32Const(0).i32GeS();
    c.if();
    c.localGet(DX).localGet(AT).i32Const(4).i32Mul().i32Add().localTee(AT);
    c.localGet(AT).f32Load(0).localGet(G).localGet(I).i32Const(4).i32Mul().i32Add().f32Load(0).f32Add().f32Store(0);
    c.end();
  });
  return { locals: [ValType.i32, ValType.i32], body: c };
}

/**
 * The module's bytes: exports gemm, gemmTapsB, gemmRowsA, biasRelu, compact, padImage, maxPool,
 * maxPool2x2, col2im and scatterAdd; imports env.memory. (The fake-quantization and elementwise
 * functions are modules of their own, ./quant-module.ts and ./elementwise-module.ts, sharing the memory.)
 */
export function fp32ModuleBytes(memory: MemoryImport = ENV_MEMORY): Uint8Array {
  const i32 = ValType.i32;
  const bias = biasReluBody();
  const gemm = (variant: GemmVariant, exportName: string) => {
    const { params, locals, body } = gemmBody(variant);
    return { params: Array<ValType>(params).fill(i32), results: [], locals, body, exportName };
  };
  return emitModule([
    gemm('packed', 'gemm'),
    gemm('tapsB', 'gemmTapsB'),
    gemm('rowsA', 'gemmRowsA'),
    { params: Array<ValType>(9).fill(i32), results: [], ...compactBody(), exportName: 'compact' },
    { params: Array<ValType>(9).fill(i32), results: [], ...padImageBody(), exportName: 'padImage' },
    { params: Array<ValType>(7).fill(i32), results: [], ...canvasLanesBody(), exportName: 'canvasLanes' },
    { params: Array<ValType>(5).fill(i32), results: [], ...bias, exportName: 'biasRelu' },
    { params: Array<ValType>(15).fill(i32), results: [], ...maxPoolBody(), exportName: 'maxPool' },
    { params: Array<ValType>(9).fill(i32), results: [], ...maxPool2x2Body(), exportName: 'maxPool2x2' },
    { params: Array<ValType>(14).fill(i32), results: [], ...col2imBody(), exportName: 'col2im' },
    { params: Array<ValType>(4).fill(i32), results: [], ...scatterAddBody(), exportName: 'scatterAdd' },
  ], memory);
}
