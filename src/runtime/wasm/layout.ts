/**
 * The second kernel module of ../wasm/gemm.ts's WasmGemm (same memory; each module stays under the
 * 4 KB that older Chromium allows `new WebAssembly.Module` on the main thread): the kernels that
 * move activations between layers inside wasm memory.
 *
 * - `pad_<mode>` / `im2col_<mode>`: the int16 x operand of a direct / strided convolution from a
 *   layer's int32 input (byte-wrapped and centred, or ±1);
 * - `quantize`: the model's input quantizer, float32 → int32;
 * - `maxpool` / `avgpool`: integer pooling of NCHW planes as ../ops.ts `maxPoolInt` / `avgPoolInt`.
 * @internal
 */
import { Code, emitModule, ValType } from './emitter.ts';

export const PAD_MODES: readonly PadMode[] = ['uint8', 'int8', 'sign'];

/** How a pad kernel turns a stored input integer v into its GEMM operand (see `padBody`). */
export type PadMode = 'uint8' | 'int8' | 'sign';

/**
 * pad_<mode>(src, dst, rows, fold, dw, h, w, Wp, ph, pw, S, pad, zx): the padded input of a direct
 * convolution in the GEMM's pair layout, from int32 images src [rows / fold, h, w] (byte address).
 * GEMM row r = c·fold + f holds channel c's padded plane shifted by f·dw: its cell q (q < S) is
 * the padded plane's cell q + f·dw (the image at (y + ph)·Wp + x + pw, `pad` elsewhere) and goes to
 * the int16 at dst + ((r >> 1)·S·2 + 2q + (r & 1))·2 bytes, so x row-pair k holds rows 2k, 2k + 1
 * (the odd partner of a last odd row holds `pad`). The operand of v is (v & 255) − zx (uint8),
 * ((v << 24) >> 24) − zx (int8) or v ≥ 0 ? 1 : −1 (sign): the byte-wrapping and centring of
 * ../ts-kernels/layer.ts's transform16. rows, fold, h, w, S must be positive and
 * S ≥ (h + ph)·Wp.
 */
function padBody(mode: PadMode): { locals: ValType[]; body: Code } {
  const [SRC, DST, ROWS, FOLD, DW, H, W, WP, PH, PW, S, PAD, ZX] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const R = 13, DC = 14, Q = 15, IY = 16, D = 17, SP = 18, END = 19, CH = 20, X0 = 21, X1 = 22;
  const PADV = 23;
  const locals: ValType[] = [...Array<ValType>(10).fill(ValType.i32), ValType.v128];
  const c = new Code();
  c.localGet(PAD).i16x8Splat().localSet(PADV);
  c.i32Const(0).localSet(R);
  c.loop(); // GEMM rows
  {
    // DC = dst + (r >> 1)·S·4 + (r & 1)·2
    c.localGet(DST).localGet(R).i32Const(1).i32ShrS().localGet(S).i32Mul().i32Const(4).i32Mul().i32Add();
    c.localGet(R).i32Const(1).i32And().i32Const(2).i32Mul().i32Add().localSet(DC);
    // an even row fills its whole row pair with `pad`: 8 cells per v128, then the last few as i32
    // (both halves `pad`)
    c.localGet(R).i32Const(1).i32And().i32Eqz().if();
    c.localGet(DC).localSet(D);
    c.localGet(DC).localGet(S).i32Const(4).i32Mul().i32Add().localSet(END);
    c.block();
    c.loop();
    c.localGet(D).i32Const(16).i32Add().localGet(END).i32GtU().brIf(1);
    c.localGet(D).localGet(PADV).v128Store();
    c.localGet(D).i32Const(16).i32Add().localSet(D);
    c.br(0);
    c.end();
    c.end();
    c.block();
    c.loop();
    c.localGet(D).localGet(END).i32GeU().brIf(1);
    c.localGet(D).localGet(PADV).i32x4ExtractLane(0).i32Store();
    c.localGet(D).i32Const(4).i32Add().localSet(D);
    c.br(0);
    c.end();
    c.end();
    c.end();
    // channel c = r / fold; SP = src + c·h·w·4
    c.localGet(R).localGet(FOLD).i32DivU().localSet(CH);
    c.localGet(SRC).localGet(CH).localGet(H).i32Mul().localGet(W).i32Mul().i32Const(4).i32Mul().i32Add().localSet(SP);
    c.i32Const(0).localSet(IY);
    c.loop();
    {
      // Q = (iy + ph)·Wp + pw − (r − c·fold)·dw: the row's first cell; the columns x with
      // 0 ≤ Q + x < S are [X0, X1) = [max(0, −Q), min(w, S − Q)) (others are shifted out)
      c.localGet(IY).localGet(PH).i32Add().localGet(WP).i32Mul().localGet(PW).i32Add();
      c.localGet(R).localGet(CH).localGet(FOLD).i32Mul().i32Sub().localGet(DW).i32Mul().i32Sub().localSet(Q);
      c.i32Const(0).localGet(Q).i32Sub().i32Const(0).localGet(Q).i32Const(0).i32LtS().select().localSet(X0);
      c.localGet(W).localGet(S).localGet(Q).i32Sub().localGet(W).localGet(S).localGet(Q).i32Sub().i32LtS().select().localSet(X1);
      c.localGet(X0).localGet(X1).i32LtS().if();
      {
        // D = DC + (Q + X0)·4, END = SP + X1·4, SP += X0·4
        c.localGet(DC).localGet(Q).localGet(X0).i32Add().i32Const(4).i32Mul().i32Add().localSet(D);
        c.localGet(SP).localGet(X1).i32Const(4).i32Mul().i32Add().localSet(END);
        c.localGet(SP).localGet(X0).i32Const(4).i32Mul().i32Add().localSet(X0); // X0 reused as the read pointer
        c.loop();
        {
          c.localGet(D);
          c.localGet(X0).i32Load();
          transform(c, mode, ZX);
          c.i32Store16();
          c.localGet(D).i32Const(4).i32Add().localSet(D);
          c.localGet(X0).i32Const(4).i32Add().localTee(X0).localGet(END).i32LtU().brIf(0);
        }
        c.end();
      }
      c.end();
      c.localGet(SP).localGet(W).i32Const(4).i32Mul().i32Add().localSet(SP);
      c.localGet(IY).i32Const(1).i32Add().localTee(IY).localGet(H).i32LtU().brIf(0);
    }
    c.end();
    c.localGet(R).i32Const(1).i32Add().localTee(R).localGet(ROWS).i32LtU().brIf(0);
  }
  c.end();
  return { locals, body: c };
}

/** Appends the operand of the i32 on the stack (see `padBody`): byte-wrapped and centred by local `zx`, or ±1. */
function transform(c: Code, mode: PadMode, zx: number): void {
  if (mode === 'uint8') c.i32Const(255).i32And().localGet(zx).i32Sub();
  else if (mode === 'int8') c.i32Const(24).i32Shl().i32Const(24).i32ShrS().localGet(zx).i32Sub();
  else c.i32Const(31).i32ShrS().i32Const(1).i32Shl().i32Const(1).i32Add(); // (v >> 31)·2 + 1 = ±1
}

/**
 * im2col_<mode>(src, dst, cg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, Pp, pad, zx): the
 * patches of one image and group for the GEMM from int32 images src [cg, h, w] (byte address):
 * patch row k = (c, ky, kx) (OIHW order) at pixel p = oy·ow + ox goes to the int16 at
 * dst + ((k >> 1)·2Pp + 2p + (k & 1))·2 bytes: the operand (see `padBody`) of the input at
 * (oy·sh − ph + ky·dh, ox·sw − pw + kx·dw), `pad` outside the image. Pixels P..Pp − 1 and the odd
 * partner of a last odd row are not written. All sizes must be positive. Per row (c, ky, kx) the
 * columns inside the image, [oxLo, oxHi), are found once; each output row is then a run of pads,
 * a run of values read without bounds checks, and a run of pads.
 */
function im2colBody(mode: PadMode): { locals: ValType[]; body: Code } {
  const [SRC, DST, CG, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, PP, PAD, ZX] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];
  const C = 18, KY = 19, KX = 20, K = 21, D = 22, OY = 23, IY = 24, IX0 = 25, CB = 26, LO = 27, HI = 28, SPTR = 29, E = 30, DE = 31, SW4 = 32;
  const locals: ValType[] = Array<ValType>(15).fill(ValType.i32);
  const c = new Code();
  /** while (D < end) { store16(D, pad); D += 4 } */
  const padRun = (end: number): void => {
    c.block();
    c.loop();
    c.localGet(D).localGet(end).i32GeU().brIf(1);
    c.localGet(D).localGet(PAD).i32Store16();
    c.localGet(D).i32Const(4).i32Add().localSet(D);
    c.br(0);
    c.end();
    c.end();
  };
  c.localGet(SW).i32Const(4).i32Mul().localSet(SW4);
  c.i32Const(0).localSet(K);
  c.i32Const(0).localSet(C);
  c.loop(); // channels
  {
    c.localGet(SRC).localGet(C).localGet(H).i32Mul().localGet(W).i32Mul().i32Const(4).i32Mul().i32Add().localSet(CB);
    c.i32Const(0).localSet(KY);
    c.loop();
    {
      c.i32Const(0).localSet(KX);
      c.loop();
      {
        // D = dst + ((k >> 1)·2Pp + (k & 1))·2
        c.localGet(DST).localGet(K).i32Const(1).i32ShrS().localGet(PP).i32Mul().i32Const(4).i32Mul().i32Add();
        c.localGet(K).i32Const(1).i32And().i32Const(2).i32Mul().i32Add().localSet(D);
        // IX0 = kx·dw − pw; LO = first ox with ox·sw + IX0 ≥ 0; HI = one past the last with < w
        c.localGet(KX).localGet(DW).i32Mul().localGet(PW).i32Sub().localSet(IX0);
        c.i32Const(0).localSet(LO);
        c.block();
        c.loop();
        c.localGet(LO).localGet(OW).i32GeS().brIf(1);
        c.localGet(LO).localGet(SW).i32Mul().localGet(IX0).i32Add().i32Const(0).i32GeS().brIf(1);
        c.localGet(LO).i32Const(1).i32Add().localSet(LO);
        c.br(0);
        c.end();
        c.end();
        c.localGet(OW).localSet(HI);
        c.block();
        c.loop();
        c.localGet(HI).localGet(LO).i32LeS().brIf(1);
        c.localGet(HI).i32Const(1).i32Sub().localGet(SW).i32Mul().localGet(IX0).i32Add().localGet(W).i32LtS().brIf(1);
        c.localGet(HI).i32Const(1).i32Sub().localSet(HI);
        c.br(0);
        c.end();
        c.end();
        c.i32Const(0).localSet(OY);
        c.loop();
        {
          // IY = oy·sh − ph + ky·dh; DE = the end of this output row
          c.localGet(OY).localGet(SH).i32Mul().localGet(PH).i32Sub().localGet(KY).localGet(DH).i32Mul().i32Add().localSet(IY);
          c.localGet(D).localGet(OW).i32Const(4).i32Mul().i32Add().localSet(DE);
          c.localGet(IY).localGet(H).i32LtU().localGet(LO).localGet(HI).i32LtS().i32And().if();
          {
            c.localGet(D).localGet(LO).i32Const(4).i32Mul().i32Add().localSet(E);
            padRun(E);
            // SPTR = CB + (IY·w + LO·sw + IX0)·4; values for ox in [LO, HI)
            c.localGet(CB).localGet(IY).localGet(W).i32Mul().localGet(LO).localGet(SW).i32Mul().i32Add().localGet(IX0).i32Add().i32Const(4).i32Mul().i32Add().localSet(SPTR);
            c.localGet(D).localGet(HI).localGet(LO).i32Sub().i32Const(4).i32Mul().i32Add().localSet(E);
            c.loop();
            {
              c.localGet(D);
              c.localGet(SPTR).i32Load();
              transform(c, mode, ZX);
              c.i32Store16();
              c.localGet(SPTR).localGet(SW4).i32Add().localSet(SPTR);
              c.localGet(D).i32Const(4).i32Add().localTee(D).localGet(E).i32LtU().brIf(0);
            }
            c.end();
          }
          c.end();
          padRun(DE);
          c.localGet(OY).i32Const(1).i32Add().localTee(OY).localGet(OH).i32LtU().brIf(0);
        }
        c.end();
        c.localGet(K).i32Const(1).i32Add().localSet(K);
        c.localGet(KX).i32Const(1).i32Add().localTee(KX).localGet(KW).i32LtU().brIf(0);
      }
      c.end();
      c.localGet(KY).i32Const(1).i32Add().localTee(KY).localGet(KH).i32LtU().brIf(0);
    }
    c.end();
    c.localGet(C).i32Const(1).i32Add().localTee(C).localGet(CG).i32LtU().brIf(0);
  }
  c.end();
  return { locals, body: c };
}

/**
 * quantize(src, dst, count, scale, z, qmin, qmax): dst[i] = clamp(nearest(src[i] / scale) + z,
 * qmin, qmax) for float32 src and int32 dst (byte addresses, count a positive multiple of 4), in
 * f64x2: the reference quantize step's IEEE operations in its order (the float32 value widened to a
 * double, one division, round half to even — `f64x2.nearest` is IEEE roundTiesToEven like
 * `roundHalfEven` — then + z and the clamp in doubles), so the same integers; NaN gives 0 (the
 * reference stores NaN into an Int32Array), ±Infinity qmax / qmin.
 */
function quantizeBody(): { locals: ValType[]; body: Code } {
  const [SRC, DST, COUNT, SCALE, Z, QMIN, QMAX] = [0, 1, 2, 3, 4, 5, 6];
  const END = 7, SV = 8, ZV = 9, LO = 10, HI = 11, V = 12, T0 = 13;
  const locals: ValType[] = [ValType.i32, ...Array<ValType>(6).fill(ValType.v128)];
  const c = new Code();
  c.localGet(SRC).localGet(COUNT).i32Const(4).i32Mul().i32Add().localSet(END);
  c.localGet(SCALE).f64x2Splat().localSet(SV);
  c.localGet(Z).f64x2Splat().localSet(ZV);
  c.localGet(QMIN).f64x2Splat().localSet(LO);
  c.localGet(QMAX).f64x2Splat().localSet(HI);
  c.loop();
  {
    c.localGet(SRC).v128Load().localSet(V);
    for (const half of [0, 1]) {
      c.localGet(V);
      if (half === 1) c.localGet(V).i8x16Shuffle([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]);
      c.f64x2PromoteLowF32x4().localGet(SV).f64x2Div().f64x2Nearest().localGet(ZV).f64x2Add();
      c.localGet(LO).f64x2Max().localGet(HI).f64x2Min().i32x4TruncSatF64x2SZero();
      if (half === 0) c.localSet(T0);
    }
    // the second half's two int32 to lanes 2, 3
    c.localSet(V);
    c.localGet(DST);
    c.localGet(T0).localGet(V).i8x16Shuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]).v128Store();
    c.localGet(DST).i32Const(16).i32Add().localSet(DST);
    c.localGet(SRC).i32Const(16).i32Add().localTee(SRC).localGet(END).i32LtU().brIf(0);
  }
  c.end();
  return { locals, body: c };
}

/**
 * The loops shared by `maxpool` and `avgpool` over int32 planes src [planes, h, w] to dst [planes,
 * oh, ow] (byte addresses; params src, dst, planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow): for each
 * output, the window clipped to the image, [Y0, Y1) × [X0, X1), then `window` leaves the output i32
 * on the stack.
 */
function poolLoops(c: Code, locals: { Y0: number; Y1: number; X0: number; X1: number; PL: number; OY: number; OX: number; BASE: number; D: number }, window: () => void): void {
  const [SRC, DST, PLANES, H, W, KH, KW, SH, SW, PH, PW, OH, OW] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const { Y0, Y1, X0, X1, PL, OY, OX, BASE, D } = locals;
  /** max(a, b) and min(a, b) of the two i32 on the stack, through `select`, into `to`. */
  const clipped = (from: () => void, bound: () => void, to: number, max: boolean): void => {
    from();
    bound();
    from();
    bound();
    if (max) c.i32GtS();
    else c.i32LtS();
    c.select().localSet(to);
  };
  c.localGet(DST).localSet(D);
  c.i32Const(0).localSet(PL);
  c.loop();
  {
    c.localGet(SRC).localGet(PL).localGet(H).i32Mul().localGet(W).i32Mul().i32Const(4).i32Mul().i32Add().localSet(BASE);
    c.i32Const(0).localSet(OY);
    c.loop();
    {
      // Y0 = max(oy·sh − ph, 0), Y1 = min(oy·sh − ph + kh, h)
      clipped(() => c.localGet(OY).localGet(SH).i32Mul().localGet(PH).i32Sub(), () => c.i32Const(0), Y0, true);
      clipped(() => c.localGet(OY).localGet(SH).i32Mul().localGet(PH).i32Sub().localGet(KH).i32Add(), () => c.localGet(H), Y1, false);
      c.i32Const(0).localSet(OX);
      c.loop();
      {
        clipped(() => c.localGet(OX).localGet(SW).i32Mul().localGet(PW).i32Sub(), () => c.i32Const(0), X0, true);
        clipped(() => c.localGet(OX).localGet(SW).i32Mul().localGet(PW).i32Sub().localGet(KW).i32Add(), () => c.localGet(W), X1, false);
        c.localGet(D);
        window();
        c.i32Store();
        c.localGet(D).i32Const(4).i32Add().localSet(D);
        c.localGet(OX).i32Const(1).i32Add().localTee(OX).localGet(OW).i32LtU().brIf(0);
      }
      c.end();
      c.localGet(OY).i32Const(1).i32Add().localTee(OY).localGet(OH).i32LtU().brIf(0);
    }
    c.end();
    c.localGet(PL).i32Const(1).i32Add().localTee(PL).localGet(PLANES).i32LtU().brIf(0);
  }
  c.end();
}

/**
 * Visits the window's cells: for iy in [Y0, Y1), ix in [X0, X1) runs `cell` with the cell's i32
 * on the stack (BASE = the plane's byte address). Both ranges must be non-empty.
 */
function windowCells(c: Code, l: { Y0: number; Y1: number; X0: number; X1: number; BASE: number; IY: number; P: number; E: number }, W: number, cell: () => void): void {
  c.localGet(l.Y0).localSet(l.IY);
  c.loop();
  {
    // P = BASE + (iy·w + X0)·4, E = BASE + (iy·w + X1)·4
    c.localGet(l.BASE).localGet(l.IY).localGet(W).i32Mul().localGet(l.X0).i32Add().i32Const(4).i32Mul().i32Add().localSet(l.P);
    c.localGet(l.BASE).localGet(l.IY).localGet(W).i32Mul().localGet(l.X1).i32Add().i32Const(4).i32Mul().i32Add().localSet(l.E);
    c.loop();
    c.localGet(l.P).i32Load();
    cell();
    c.localGet(l.P).i32Const(4).i32Add().localTee(l.P).localGet(l.E).i32LtU().brIf(0);
    c.end();
    c.localGet(l.IY).i32Const(1).i32Add().localTee(l.IY).localGet(l.Y1).i32LtS().brIf(0);
  }
  c.end();
}

/**
 * maxpool(src, dst, planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow): the largest int32 of each window
 * clipped to the image (padded cells never win), 0 for a window of padding only — `maxPoolInt`
 * stores −Infinity there, which an Int32Array keeps as 0. Exact for any int32 values.
 */
function maxPoolBody(): { locals: ValType[]; body: Code } {
  const W = 4;
  const l = { Y0: 13, Y1: 14, X0: 15, X1: 16, PL: 17, OY: 18, OX: 19, BASE: 20, D: 21, IY: 22, P: 23, E: 24, BEST: 25, V: 26 };
  const locals: ValType[] = Array<ValType>(14).fill(ValType.i32);
  const c = new Code();
  poolLoops(c, l, () => {
    c.localGet(l.Y0).localGet(l.Y1).i32LtS().localGet(l.X0).localGet(l.X1).i32LtS().i32And().if();
    c.i32Const(-(2 ** 31)).localSet(l.BEST);
    windowCells(c, l, W, () => {
      c.localSet(l.V);
      c.localGet(l.V).localGet(l.BEST).localGet(l.V).localGet(l.BEST).i32GtS().select().localSet(l.BEST);
    });
    c.else();
    c.i32Const(0).localSet(l.BEST);
    c.end();
    c.localGet(l.BEST);
  });
  return { locals, body: c };
}

/**
 * avgpool(src, dst, planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow, zero, inZero, divisor): `avgPoolInt`
 * — out = zero + round(Σ (x − inZero) / divisor), half to even, over the window's cells inside the
 * image (padded cells add 0 but count in the divisor), wrapped to int32 — with an exact int64 sum and
 * division. Equals the reference (whose double sum and division are exact) when every |Σ| < 2^53:
 * kh·kw < 2^21 with |inZero| < 2^31 (the caller checks). divisor > 0.
 */
function avgPoolBody(): { locals: ValType[]; body: Code } {
  const [W, ZERO, INZERO, DIVISOR] = [4, 13, 14, 15];
  const l = { Y0: 16, Y1: 17, X0: 18, X1: 19, PL: 20, OY: 21, OX: 22, BASE: 23, D: 24, IY: 25, P: 26, E: 27 };
  const SUM = 28, Q = 29, R = 30, B = 31;
  const locals: ValType[] = [...Array<ValType>(12).fill(ValType.i32), ...Array<ValType>(4).fill(ValType.i64)];
  const c = new Code();
  c.localGet(DIVISOR).i64ExtendI32S().localSet(B);
  poolLoops(c, l, () => {
    c.i64Const(0).localSet(SUM);
    c.localGet(l.Y0).localGet(l.Y1).i32LtS().localGet(l.X0).localGet(l.X1).i32LtS().i32And().if();
    windowCells(c, l, W, () => {
      c.i64ExtendI32S().localGet(INZERO).i64ExtendI32S().i64Sub().localGet(SUM).i64Add().localSet(SUM);
    });
    c.end();
    // q = floor(sum / b), r = sum − q·b in [0, b)
    c.localGet(SUM).localGet(B).i64DivS().localSet(Q);
    c.localGet(SUM).localGet(Q).localGet(B).i64Mul().i64Sub().localSet(R);
    c.localGet(Q).i64Const(-1).i64Add().localGet(Q).localGet(R).i64Const(0).i64LtS().select().localSet(Q);
    c.localGet(R).localGet(B).i64Add().localGet(R).localGet(R).i64Const(0).i64LtS().select().localSet(R);
    // + 1 when 2r > b, or 2r = b and q is odd: q + (2r + (q & 1) > b)
    c.localGet(ZERO).localGet(Q).i32WrapI64().i32Add();
    c.localGet(R).localGet(R).i64Add().localGet(Q).i64Const(1).i64And().i64Add().localGet(B).i64GtS().i32Add();
  });
  return { locals, body: c };
}

/** The layout module's bytes (memory imported as env.memory). */
export function layoutModuleBytes(): Uint8Array {
  const i32 = ValType.i32, f64 = ValType.f64;
  return emitModule([
    ...PAD_MODES.map((mode) => ({ params: Array<ValType>(13).fill(i32), results: [], ...padBody(mode), exportName: `pad_${mode}` })),
    ...PAD_MODES.map((mode) => ({ params: Array<ValType>(18).fill(i32), results: [], ...im2colBody(mode), exportName: `im2col_${mode}` })),
    { params: [i32, i32, i32, f64, f64, f64, f64], results: [], ...quantizeBody(), exportName: 'quantize' },
    { params: Array<ValType>(13).fill(i32), results: [], ...maxPoolBody(), exportName: 'maxpool' },
    { params: Array<ValType>(16).fill(i32), results: [], ...avgPoolBody(), exportName: 'avgpool' },
  ], { module: 'env', field: 'memory', minPages: 1 });
}
