/**
 * Convolutions on the wasm backend: conv2d, conv2dFused, conv2dBackwardInput and
 * conv2dBackwardWeight. Stride 1 reads the zero-padded image in place (gemmTapsB, gemmRowsA) and
 * adds the input gradient back with the wasm col2im; other strides build im2col panels (./pack.ts).
 * @internal
 */
import type { Kernel, RawTensor, TypedArray } from '../primitives.ts';
import { sizeOf } from '../primitives.ts';
import { col2imPadded, im2colPanels, packPanels } from './pack.ts';
import { maxPoolWindows } from './pool.ts';
import type { CallSink, WasmRuntime } from './runtime.ts';
import { gemmParallel } from './matmul.ts';
import { allF32, convGeometry, copyOut, f32, partRange, partsFor, weightGradientPartsFor, type ConvGeometry } from './util.ts';

/** @internal Stride-1 convolutions take the padded-image paths and the wasm col2im (tests turn them off to check the im2col paths too). */
let canvasPaths = true;

/** @internal Turns the stride-1 paths on or off; returns the previous setting. */
export function setCanvasPaths(on: boolean): boolean {
  const previous = canvasPaths;
  canvasPaths = on;
  return previous;
}

// ---------------------------------------------------------------- stride-1 convolutions on the padded image

/*
 * With stride 1, output pixel (oy, ox) of a channel is the canvas position q = oy·wp + ox of the
 * zero-padded input plane (hp = H + 2·ph rows of wp = W + 2·pw floats), and tap t = (ci, ky, kx)
 * reads the padded image at q + shift(t), shift(t) = ci·hp·wp + ky·dh·wp + kx·dw: B's row t is
 * contiguous in the padded image, so the GEMM reads it there (gemmTapsB) and no im2col is built.
 * The canvas has wp − OW junk columns per output row, computed and dropped (compact).
 */

/** Byte offsets shift(t)·4 of the taps of one group. */
function tapShifts(geo: ConvGeometry, hp: number, wp: number): Int32Array {
  const { cg, kh, kw, dh, dw } = geo;
  const shifts = new Int32Array(cg * kh * kw);
  let t = 0;
  for (let ci = 0; ci < cg; ci++) {
    for (let ky = 0; ky < kh; ky++) {
      for (let kx = 0; kx < kw; kx++) shifts[t++] = (ci * hp * wp + ky * dh * wp + kx * dw) * 4;
    }
  }
  return shifts;
}

/** Floats of the padded image buffer: every plane, plus what the last panel reads past them. */
function paddedFloats(geo: ConvGeometry, hp: number, wp: number): number {
  return geo.c * hp * wp + (geo.kw - 1) * geo.dw + 16;
}

/**
 * Stride-1 forward: y (N,O,OH,OW) = conv2d(x, w) (+ bias, ReLU), as a Float32Array. Null when it
 * does not fit. Images are split over threads, each with its own padded image and C buffer.
 */
function convForwardCanvas(
  rt: WasmRuntime, x: Float32Array, w: TypedArray, geo: ConvGeometry, bias: Float32Array | null, relu: boolean, threads = rt.threads(),
): Float32Array | null {
  const { n, c, h, w: wd, o, g, cg, og, kk, oh, ow, ph, pw, p } = geo;
  const hp = h + 2 * ph;
  const wp = wd + 2 * pw;
  const mb = Math.ceil(og / 4);
  const nb = Math.ceil((oh * wp) / 8);
  const ldc = nb * 8;
  const parts = partsFor(threads, n * o * oh * wp * kk, n);
  const padFloats = paddedFloats(geo, hp, wp);
  const arena = rt.arena;
  arena.reset();
  const xAll = arena.reserve(n * c * h * wd);
  const xpads = Array.from({ length: parts }, () => arena.reserve(padFloats));
  const taps = arena.reserve(kk);
  const ap = arena.reserve(g * mb * 4 * kk);
  const cps = Array.from({ length: parts }, () => arena.reserve(mb * 4 * ldc));
  const yAll = arena.reserve(n * o * p);
  const biasAt = arena.reserve(o);
  if (!arena.fits()) return parts > 1 ? convForwardCanvas(rt, x, w, geo, bias, relu, 1) : null;
  const mem = arena.view();
  mem.set(x, xAll);
  for (const xpad of xpads) mem.fill(0, xpad, xpad + padFloats);
  new Int32Array(mem.buffer, taps * 4, kk).set(tapShifts(geo, hp, wp));
  for (let gi = 0; gi < g; gi++) packPanels(mem, ap + gi * mb * 4 * kk, w, gi * og * kk, og, kk, kk, 1, 4);
  if (bias) mem.set(bias, biasAt);
  else mem.fill(0, biasAt, biasAt + o);
  rt.parallel(parts, (part, call) => {
    const [lo, hi] = partRange(n, parts, part);
    const xpad = xpads[part]!;
    const cp = cps[part]!;
    for (let b = lo; b < hi; b++) {
      call(rt.fn.padImage, (xAll + b * c * h * wd) * 4, xpad * 4, c, h, wd, hp, wp, ph, pw);
      for (let gi = 0; gi < g; gi++) {
        call(rt.fn.gemmTapsB, (ap + gi * mb * 4 * kk) * 4, (xpad + gi * cg * hp * wp) * 4, taps * 4, cp * 4, mb, nb, kk, ldc * 4, 0);
        call(rt.fn.compact, cp * 4, ldc * 4, (yAll + (b * o + gi * og) * p) * 4, og, oh, ow, wp, (biasAt + gi * og) * 4, relu ? 1 : 0);
      }
    }
  });
  return copyOut(mem, yAll, n * o * p);
}

/**
 * Stride-1 backward input: per image and group dcol = W_gᵀ [kk, og] · dy_g [og, P], then col2im in
 * wasm (vector adds along the output rows) into dx. Null when it does not fit. B is read in place in
 * dy (gemmTapsB with row j at j·P: column panel q0 is the 8 floats dy[j, q0 .. q0 + 8); past P
 * they are the next row's, junk columns that col2im never reads), so nothing is packed per image.
 * On several threads images are split over threads (each thread with its own C buffer; an image's
 * dx is written by one thread).
 */
function convBackwardInputCol2im(rt: WasmRuntime, dy: Float32Array, w: TypedArray, geo: ConvGeometry, threads = rt.threads()): Float32Array | null {
  const { n, c, h, w: wd, o, g, cg, og, kk, kh, kw, oh, ow, ph, pw, dh, dw, p } = geo;
  const mb = Math.ceil(kk / 4);
  const nb = Math.ceil(p / 8);
  const ldc = nb * 8;
  const parts = partsFor(threads, n * c * kh * kw * p * og, n);
  const arena = rt.arena;
  arena.reset();
  const ap = arena.reserve(g * mb * 4 * og);
  // dy, then the floats the last column panel of the last row reads past it
  const dyAll = arena.reserve(n * o * p + 8);
  const rows = arena.reserve(og);
  const cps = Array.from({ length: parts }, () => arena.reserve(mb * 4 * ldc));
  const dxAll = arena.reserve(n * c * h * wd);
  if (!arena.fits()) return parts > 1 ? convBackwardInputCol2im(rt, dy, w, geo, 1) : null;
  const mem = arena.view();
  mem.set(dy, dyAll);
  mem.fill(0, dyAll + n * o * p, dyAll + n * o * p + 8);
  mem.fill(0, dxAll, dxAll + n * c * h * wd);
  const rowTable = new Int32Array(mem.buffer, rows * 4, og);
  for (let j = 0; j < og; j++) rowTable[j] = j * p * 4;
  // A(t, j) = Wᵀ: w[(gi·og + j)·kk + t]
  for (let gi = 0; gi < g; gi++) packPanels(mem, ap + gi * mb * 4 * og, w, gi * og * kk, kk, og, 1, kk, 4);
  rt.parallel(parts, (part, call) => {
    const [lo, hi] = partRange(n, parts, part);
    const cp = cps[part]!;
    for (let b = lo; b < hi; b++) {
      for (let gi = 0; gi < g; gi++) {
        call(rt.fn.gemmTapsB, (ap + gi * mb * 4 * og) * 4, (dyAll + (b * o + gi * og) * p) * 4, rows * 4, cp * 4, mb, nb, og, ldc * 4, 0);
        call(rt.fn.col2im, cp * 4, ldc * 4, (dxAll + (b * c + gi * cg) * h * wd) * 4, cg, h, wd, kh, kw, oh, ow, ph, pw, dh, dw);
      }
    }
  });
  return copyOut(mem, dxAll, n * c * h * wd);
}

/**
 * Stride-1 backward weight: dWᵀ_g [kk, og] = Σ_images Σ_q x_pad[q + shift(t)]·dy_canvas[o, q], A's row t
 * read in the padded image (gemmRowsA), dy laid into canvas panels by the wasm canvasLanes (zeros in
 * the junk columns). On one thread each image is padded and laid out right before its GEMM. On
 * several, every image is padded and laid out first (images split over threads), then the row
 * panels (taps) are split over threads, each summing over the images in the same order as one thread.
 */
function convBackwardWeightCanvas(
  rt: WasmRuntime, x: Float32Array, dy: Float32Array, geo: ConvGeometry, weightShape: readonly number[], threads = rt.threads(),
): Float32Array | null {
  const { n, c, h, w: wd, o, g, cg, og, kk, oh, ow, ph, pw } = geo;
  const hp = h + 2 * ph;
  const wp = wd + 2 * pw;
  const canvas = oh * wp;
  const mb = Math.ceil(kk / 4);
  const nb = Math.ceil(og / 8);
  const ldc = nb * 8;
  const padFloats = paddedFloats(geo, hp, wp);
  const panels = nb * 8 * canvas;
  const parts = weightGradientPartsFor(threads, n * o * kk * canvas, n, mb);
  // one padded image and one set of dy panels, or (threads) every image's
  const copies = parts > 1 ? n : 1;
  const arena = rt.arena;
  arena.reset();
  const xAll = arena.reserve(n * c * h * wd);
  const dyAll = arena.reserve(n * o * oh * ow);
  const xpad = arena.reserve(copies * padFloats);
  const rows = arena.reserve(mb * 4);
  const bp = arena.reserve(copies * g * panels);
  const cp = arena.reserve(g * mb * 4 * ldc);
  if (!arena.fits()) return parts > 1 ? convBackwardWeightCanvas(rt, x, dy, geo, weightShape, 1) : null;
  const mem = arena.view();
  mem.set(x, xAll);
  mem.set(dy, dyAll);
  mem.fill(0, xpad, xpad + copies * padFloats);
  mem.fill(0, bp, bp + copies * g * panels);
  const rowTable = new Int32Array(mem.buffer, rows * 4, mb * 4);
  rowTable.fill(0);
  rowTable.set(tapShifts(geo, hp, wp));
  /** Pads image b into copy `at` and lays out its dy panels: B(q, o) = dy[b, gi·og + o, oy, ox] at q = oy·wp + ox, panel layout [o / 8][q][o mod 8]. */
  const prepare = (b: number, at: number, call: CallSink) => {
    call(rt.fn.padImage, (xAll + b * c * h * wd) * 4, (xpad + at * padFloats) * 4, c, h, wd, hp, wp, ph, pw);
    for (let gi = 0; gi < g; gi++) {
      call(rt.fn.canvasLanes, (dyAll + (b * o + gi * og) * oh * ow) * 4, (bp + (at * g + gi) * panels) * 4, og, oh, ow, wp, canvas);
    }
  };
  /** Row panels [lo, hi) of image b (copy `at`), every group. */
  const image = (b: number, at: number, lo: number, hi: number, call: CallSink) => {
    for (let gi = 0; gi < g; gi++) {
      call(rt.fn.gemmRowsA, (xpad + at * padFloats + gi * cg * hp * wp) * 4, (rows + lo * 4) * 4, (bp + (at * g + gi) * panels) * 4,
        (cp + gi * mb * 4 * ldc + lo * 4 * ldc) * 4, hi - lo, nb, canvas, ldc * 4, b > 0 ? 1 : 0);
    }
  };
  if (parts === 1) {
    for (let b = 0; b < n; b++) {
      prepare(b, 0, rt.call);
      image(b, 0, 0, mb, rt.call);
    }
  } else {
    rt.parallel(parts, (part, call) => {
      const [lo, hi] = partRange(n, parts, part);
      for (let b = lo; b < hi; b++) prepare(b, b, call);
    });
    rt.parallel(parts, (part, call) => {
      const [lo, hi] = partRange(mb, parts, part);
      for (let b = 0; b < n; b++) image(b, b, lo, hi, call);
    });
  }
  const dw = new Float32Array(sizeOf(weightShape));
  for (let gi = 0; gi < g; gi++) {
    const base = cp + gi * mb * 4 * ldc;
    for (let ol = 0; ol < og; ol++) {
      const to = (gi * og + ol) * kk;
      for (let t = 0; t < kk; t++) dw[to + t] = mem[base + t * ldc + ol]!;
    }
  }
  return dw;
}

/**
 * y (N,O,OH,OW) = conv2d(x, w), then + bias[o] and ReLU when given (before any pooling): the
 * stride-1 canvas path, else im2col.
 * Per image and group: Y_g [og, P] = W_g [og, kk] · col_g [kk, P], col packed straight into the
 * GEMM's B panels.
 */
function convForward(rt: WasmRuntime, x: RawTensor, w: RawTensor, geo: ConvGeometry, bias: Float32Array | null, relu: boolean): RawTensor | undefined {
  const { n, c, h, w: wd, o, g, cg, og, kk, p } = geo;
  if (geo.sh === 1 && geo.sw === 1 && canvasPaths) {
    const data = convForwardCanvas(rt, x.data as Float32Array, w.data, geo, bias, relu);
    if (data) return { data, shape: [n, o, geo.oh, geo.ow], dtype: 'float32' };
  }
  const mb = Math.ceil(og / 4);
  const nb = Math.ceil(p / 8);
  const ldc = nb * 8;
  const arena = rt.arena;
  arena.reset();
  const ap = arena.reserve(g * mb * 4 * kk);
  const bp = arena.reserve(nb * 8 * kk);
  const cp = arena.reserve(mb * 4 * ldc);
  const biasAt = arena.reserve(o);
  if (!arena.fits()) return undefined;
  const mem = arena.view();
  for (let gi = 0; gi < g; gi++) packPanels(mem, ap + gi * mb * 4 * kk, w.data, gi * og * kk, og, kk, kk, 1, 4);
  if (bias) mem.set(bias, biasAt);
  else mem.fill(0, biasAt, biasAt + o);
  const y = f32([n, o, geo.oh, geo.ow]);
  // B panel element (tap t, pixel q) at (q >> 3)·kk·8 + t·8 + (q & 7)
  const rowTerm = new Int32Array(kk).map((_, t) => t * 8);
  const colTerm = new Int32Array(p).map((_, q) => (q >> 3) * kk * 8 + (q & 7));
  for (let b = 0; b < n; b++) {
    for (let gi = 0; gi < g; gi++) {
      im2colPanels(mem, bp, x.data, (b * c + gi * cg) * h * wd, geo, rowTerm, colTerm);
      gemmParallel(rt, ap + gi * mb * 4 * kk, bp, cp, mb, nb, kk, ldc);
      if (bias || relu) rt.biasRelu(cp * 4, og, ldc, (biasAt + gi * og) * 4, relu ? 1 : 0);
      const base = (b * o + gi * og) * p;
      for (let r = 0; r < og; r++) y.data.set(mem.subarray(cp + r * ldc, cp + r * ldc + p), base + r * p);
    }
  }
  return y;
}

export function conv2dKernel(rt: WasmRuntime): Kernel<'conv2d'> {
  return (inputs, attrs) => {
    const [x, w] = inputs as [RawTensor, RawTensor];
    const geo = allF32(inputs) ? convGeometry(x.shape, w.shape, attrs) : null;
    return geo ? convForward(rt, x, w, geo, null, false) : undefined;
  };
}

/**
 * x, w, bias[, scale] -> maxPool(min(relu(conv2d(x, w)·scale + bias), clampMax)). `depthwise`: the
 * depthwise conv kernel, tried first when there is no pooling (its output then gets the epilogue in JS).
 */
export function conv2dFusedKernel(rt: WasmRuntime, depthwise?: Kernel<'conv2d'>): Kernel<'conv2dFused'> {
  return (inputs, attrs) => {
    const [x, w, bias, scale] = inputs as [RawTensor, RawTensor, RawTensor, RawTensor | undefined];
    const geo = allF32(inputs) ? convGeometry(x.shape, w.shape, attrs) : null;
    if (!geo || bias.shape.length !== 1 || bias.shape[0] !== geo.o) return undefined;
    if (scale && attrs.pool) return undefined; // a negative scale does not commute with the max: the reference runs it
    const dw = attrs.pool ? undefined : depthwise?.([x, w], { stride: attrs.stride, padding: attrs.padding, dilation: attrs.dilation, groups: attrs.groups });
    if (dw) {
      epilogueInJs(dw.data as Float32Array, geo.o, geo.oh * geo.ow, { scale: (scale?.data as Float32Array | undefined) ?? null, bias: bias.data as Float32Array, relu: attrs.relu }, attrs.clampMax ?? null);
      return dw;
    }
    // Without a scale the bias and ReLU run in the conv kernel; with one, the epilogue below does.
    const y = convForward(rt, x, w, geo, scale ? null : (bias.data as Float32Array), scale ? false : attrs.relu);
    if (y && (scale || (attrs.clampMax ?? null) !== null)) epilogueInJs(y.data as Float32Array, geo.o, geo.oh * geo.ow, scale ? { scale: scale.data as Float32Array, bias: bias.data as Float32Array, relu: attrs.relu } : null, attrs.clampMax ?? null);
    if (!y || !attrs.pool) return y;
    return maxPoolWindows(rt, y, attrs.pool) ?? undefined;
  };
}

/**
 * The parts of conv2dFused's epilogue the wasm conv kernel did not run, in place on y (N, O, P):
 * v·scale[o] (rounded to float32; when there is a scale) + bias[o] and ReLU when `affine` is given,
 * then min(v, clampMax) (NaN stays NaN: a comparison with NaN is false).
 */
function epilogueInJs(y: Float32Array, o: number, plane: number, affine: { scale: Float32Array | null; bias: Float32Array; relu: boolean } | null, clampMax: number | null): void {
  const hi = clampMax ?? Infinity;
  for (let base = 0, c = 0; base < y.length; base += plane, c = (c + 1) % o) {
    const s = affine?.scale ? affine.scale[c]! : 1;
    const b = affine ? affine.bias[c]! : 0;
    for (let i = base; i < base + plane; i++) {
      let v = affine ? (affine.scale ? Math.fround(y[i]! * s) : y[i]!) + b : y[i]!;
      if (affine?.relu && v <= 0) v = 0;
      y[i] = v > hi ? hi : v;
    }
  }
}

/** dy (N,O,OH,OW), w (O,C/g,KH,KW) -> dx (inputShape): per image and group dcol = W_gᵀ · dy_g, then col2im. */
export function conv2dBackwardInputKernel(rt: WasmRuntime): Kernel<'conv2dBackwardInput'> {
  return (inputs, attrs) => {
    const [dy, w] = inputs as [RawTensor, RawTensor];
    const geo = allF32(inputs) ? convGeometry(attrs.inputShape, w.shape, attrs) : null;
    if (!geo || dy.shape.length !== 4 || dy.shape[0] !== geo.n || dy.shape[1] !== geo.o || dy.shape[2] !== geo.oh || dy.shape[3] !== geo.ow) return undefined;
    const { n, c, h, w: wd, o, g, cg, og, kk, p } = geo;
    if (geo.sh === 1 && geo.sw === 1 && canvasPaths) {
      const data = convBackwardInputCol2im(rt, dy.data as Float32Array, w.data, geo);
      if (data) return { data, shape: [...attrs.inputShape], dtype: 'float32' };
    }
    const mb = Math.ceil(kk / 4);
    const nb = Math.ceil(p / 8);
    const ldc = nb * 8;
    const arena = rt.arena;
    arena.reset();
    const ap = arena.reserve(g * mb * 4 * og);
    const bp = arena.reserve(nb * 8 * og);
    const cp = arena.reserve(mb * 4 * ldc);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    // A(t, j) = Wᵀ: w[(gi·og + j)·kk + t]
    for (let gi = 0; gi < g; gi++) packPanels(mem, ap + gi * mb * 4 * og, w.data, gi * og * kk, kk, og, 1, kk, 4);
    const dx = f32(attrs.inputShape);
    for (let b = 0; b < n; b++) {
      for (let gi = 0; gi < g; gi++) {
        // B(j, q) = dy[b, gi·og + j, q]
        packPanels(mem, bp, dy.data, (b * o + gi * og) * p, p, og, 1, p, 8);
        gemmParallel(rt, ap + gi * mb * 4 * og, bp, cp, mb, nb, og, ldc);
        col2imPadded(mem, cp, ldc, dx.data, (b * c + gi * cg) * h * wd, geo);
      }
    }
    return dx;
  };
}

/** x (N,C,H,W), dy (N,O,OH,OW) -> dw (weightShape): dW_g [og, kk] = Σ_images dy_g [og, P] · col_gᵀ [P, kk]. */
export function conv2dBackwardWeightKernel(rt: WasmRuntime): Kernel<'conv2dBackwardWeight'> {
  return (inputs, attrs) => {
    const [x, dy] = inputs as [RawTensor, RawTensor];
    const geo = allF32(inputs) ? convGeometry(x.shape, attrs.weightShape, attrs) : null;
    if (!geo || dy.shape.length !== 4 || dy.shape[0] !== geo.n || dy.shape[1] !== geo.o || dy.shape[2] !== geo.oh || dy.shape[3] !== geo.ow) return undefined;
    const { n, c, h, w: wd, o, g, cg, og, kk, p } = geo;
    if (geo.sh === 1 && geo.sw === 1 && canvasPaths) {
      const data = convBackwardWeightCanvas(rt, x.data as Float32Array, dy.data as Float32Array, geo, attrs.weightShape);
      if (data) return { data, shape: [...attrs.weightShape], dtype: 'float32' };
    }
    const mb = Math.ceil(og / 4);
    const nb = Math.ceil(kk / 8);
    const ldc = nb * 8;
    const arena = rt.arena;
    arena.reset();
    const ap = arena.reserve(mb * 4 * p);
    const bp = arena.reserve(nb * 8 * p);
    const cp = arena.reserve(g * mb * 4 * ldc);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    // B panel element (tap t, pixel q) at (t >> 3)·P·8 + q·8 + (t & 7)
    const rowTerm = new Int32Array(kk).map((_, t) => (t >> 3) * p * 8 + (t & 7));
    const colTerm = new Int32Array(p).map((_, q) => q * 8);
    for (let b = 0; b < n; b++) {
      for (let gi = 0; gi < g; gi++) {
        // A(j, q) = dy[b, gi·og + j, q]
        packPanels(mem, ap, dy.data, (b * o + gi * og) * p, og, p, p, 1, 4);
        im2colPanels(mem, bp, x.data, (b * c + gi * cg) * h * wd, geo, rowTerm, colTerm);
        gemmParallel(rt, ap, bp, cp + gi * mb * 4 * ldc, mb, nb, p, ldc, b > 0 ? 1 : 0);
      }
    }
    const dw = f32(attrs.weightShape);
    for (let gi = 0; gi < g; gi++) {
      for (let r = 0; r < og; r++) {
        const from = cp + gi * mb * 4 * ldc + r * ldc;
        dw.data.set(mem.subarray(from, from + kk), (gi * og + r) * kk);
      }
    }
    return dw;
  };
}
