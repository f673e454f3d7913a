/**
 * The 'wasm' backend's kernels: adapters from RawTensors to the SIMD128 GEMM of ./module.ts.
 * Operands are copied into one growable WebAssembly.Memory (packed into the GEMM's panel layouts
 * on the way in: ./pack.ts), the module runs, results are copied out into fresh Float32Arrays.
 * Every kernel declines (returns undefined: the reference kernel runs) on anything but float32
 * and on shapes it does not handle.
 * @internal
 */
import type { Conv2dAttrs, Kernel, MaxPool2dAttrs, PrimitiveName, RawTensor, TypedArray } from '../primitives.ts';
import { broadcastShapes, sizeOf } from '../primitives.ts';
import { broadcastStrides, offsetMap } from '../reference/util.ts';
import { col2imPadded, im2colPanels, packPanels } from './pack.ts';
import type { WasmRuntime } from './runtime.ts';

function allF32(inputs: readonly RawTensor[]): boolean {
  return inputs.every((t) => t.dtype === 'float32' && t.data instanceof Float32Array);
}

function outSize(n: number, k: number, stride: number, pad: number, dilation: number): number {
  return Math.floor((n + 2 * pad - dilation * (k - 1) - 1) / stride) + 1;
}

/** Geometry of one convolution (NCHW / OIHW) and its GEMM sizes per image and group. */
export interface ConvGeometry {
  n: number; c: number; h: number; w: number;
  o: number; kh: number; kw: number; oh: number; ow: number;
  g: number; cg: number; og: number;
  /** Taps per output: cg·kh·kw. */
  kk: number;
  /** Output pixels per image: oh·ow. */
  p: number;
  sh: number; sw: number; ph: number; pw: number; dh: number; dw: number;
}

/** The geometry of x (N,C,H,W) and w (O,C/g,KH,KW), or null when the kernel does not handle it. */
export function convGeometry(x: readonly number[], w: readonly number[], a: Conv2dAttrs): ConvGeometry | null {
  if (x.length !== 4 || w.length !== 4) return null;
  const [n, c, h, wd] = x as [number, number, number, number];
  const [o, cg, kh, kw] = w as [number, number, number, number];
  const g = a.groups;
  if (!Number.isInteger(g) || g < 1 || c % g !== 0 || o % g !== 0 || cg !== c / g) return null;
  if ([a.stride[0], a.stride[1], a.dilation[0], a.dilation[1]].some((v) => !Number.isInteger(v) || v < 1)) return null;
  if (a.padding[0] < 0 || a.padding[1] < 0) return null;
  const oh = outSize(h, kh, a.stride[0], a.padding[0], a.dilation[0]);
  const ow = outSize(wd, kw, a.stride[1], a.padding[1], a.dilation[1]);
  if (oh < 1 || ow < 1 || n < 1 || o < 1 || cg < 1 || kh < 1 || kw < 1) return null;
  return {
    n, c, h, w: wd, o, kh, kw, oh, ow, g, cg, og: o / g, kk: cg * kh * kw, p: oh * ow,
    sh: a.stride[0], sw: a.stride[1], ph: a.padding[0], pw: a.padding[1], dh: a.dilation[0], dw: a.dilation[1],
  };
}

function f32(shape: readonly number[]): RawTensor & { data: Float32Array } {
  return { data: new Float32Array(sizeOf(shape)), shape: [...shape], dtype: 'float32' };
}

/** @internal Stride-1 convolutions take the padded-image paths and the wasm col2im (tests turn them off to check the im2col paths too). */
let canvasPaths = true;

/** @internal Turns the stride-1 paths on or off; returns the previous setting. */
export function setCanvasPaths(on: boolean): boolean {
  const previous = canvasPaths;
  canvasPaths = on;
  return previous;
}

/** @internal 2×2 / stride-2 pooling takes the vector kernel (tests turn it off to check the general one too). */
let pool2x2 = true;

/** @internal Turns the 2×2 pooling kernel on or off; returns the previous setting. */
export function setPool2x2(on: boolean): boolean {
  const previous = pool2x2;
  pool2x2 = on;
  return previous;
}

// ---------------------------------------------------------------- matmul

/** a [...batch, M, K] (or [..., K, M]), b [...batch, K, N] (or [..., N, K]) -> [...batch, M, N]; batch dims broadcast. */
export function matmulKernel(rt: WasmRuntime): Kernel<'matmul'> {
  return (inputs, { transA, transB }) => {
    const [a, b] = inputs as [RawTensor, RawTensor];
    if (!allF32(inputs) || a.shape.length < 2 || b.shape.length < 2) return undefined;
    const ra = a.shape.length;
    const rb = b.shape.length;
    const m = a.shape[ra - (transA ? 1 : 2)]!;
    const k = a.shape[ra - (transA ? 2 : 1)]!;
    const kb = b.shape[rb - (transB ? 1 : 2)]!;
    const n = b.shape[rb - (transB ? 2 : 1)]!;
    if (k !== kb) return undefined;
    const aBatch = a.shape.slice(0, -2);
    const bBatch = b.shape.slice(0, -2);
    let batch: number[];
    try {
      batch = broadcastShapes(aBatch, bBatch);
    } catch {
      return undefined;
    }
    const y = f32([...batch, m, n]);
    if (y.data.length === 0 || k === 0) return y;
    const mb = Math.ceil(m / 4);
    const nb = Math.ceil(n / 8);
    const ldc = nb * 8;
    const arena = rt.arena;
    arena.reset();
    const ap = arena.reserve(mb * 4 * k);
    const bp = arena.reserve(nb * 8 * k);
    const cp = arena.reserve(mb * 4 * ldc);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    const aOffsets = offsetMap(batch, broadcastStrides(aBatch, batch).map((s) => s * m * k));
    const bOffsets = offsetMap(batch, broadcastStrides(bBatch, batch).map((s) => s * k * n));
    let aPacked = -1;
    let bPacked = -1;
    for (let i = 0; i < aOffsets.length; i++) {
      const aOff = aOffsets[i]!;
      const bOff = bOffsets[i]!;
      // A(m, k) = a[m·K + k], or a[k·M + m] when transA; B(k, n) = b[k·N + n], or b[n·K + k] when transB.
      if (aOff !== aPacked) packPanels(mem, ap, a.data, aOff, m, k, transA ? 1 : k, transA ? m : 1, 4);
      if (bOff !== bPacked) packPanels(mem, bp, b.data, bOff, n, k, transB ? k : 1, transB ? 1 : n, 8);
      aPacked = aOff;
      bPacked = bOff;
      rt.gemm(ap * 4, bp * 4, cp * 4, mb, nb, k, ldc * 4, 0);
      const out = y.data;
      const base = i * m * n;
      for (let r = 0; r < m; r++) out.set(mem.subarray(cp + r * ldc, cp + r * ldc + n), base + r * n);
    }
    return y;
  };
}

// ---------------------------------------------------------------- conv2d


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

/** Stride-1 forward: y (N,O,OH,OW) = conv2d(x, w) (+ bias, ReLU), as a Float32Array. Null when it does not fit. */
function convForwardCanvas(rt: WasmRuntime, x: Float32Array, w: TypedArray, geo: ConvGeometry, bias: Float32Array | null, relu: boolean): Float32Array | null {
  const { n, c, h, w: wd, o, g, cg, og, kk, oh, ow, ph, pw, p } = geo;
  const hp = h + 2 * ph;
  const wp = wd + 2 * pw;
  const mb = Math.ceil(og / 4);
  const nb = Math.ceil((oh * wp) / 8);
  const ldc = nb * 8;
  const arena = rt.arena;
  arena.reset();
  const xAll = arena.reserve(n * c * h * wd);
  const xpad = arena.reserve(paddedFloats(geo, hp, wp));
  const taps = arena.reserve(kk);
  const ap = arena.reserve(g * mb * 4 * kk);
  const cp = arena.reserve(mb * 4 * ldc);
  const yAll = arena.reserve(n * o * p);
  const biasAt = arena.reserve(o);
  if (!arena.fits()) return null;
  const mem = arena.view();
  mem.set(x, xAll);
  mem.fill(0, xpad, xpad + paddedFloats(geo, hp, wp));
  new Int32Array(mem.buffer, taps * 4, kk).set(tapShifts(geo, hp, wp));
  for (let gi = 0; gi < g; gi++) packPanels(mem, ap + gi * mb * 4 * kk, w, gi * og * kk, og, kk, kk, 1, 4);
  if (bias) mem.set(bias, biasAt);
  else mem.fill(0, biasAt, biasAt + o);
  for (let b = 0; b < n; b++) {
    rt.padImage((xAll + b * c * h * wd) * 4, xpad * 4, c, h, wd, hp, wp, ph, pw);
    for (let gi = 0; gi < g; gi++) {
      rt.gemmTapsB((ap + gi * mb * 4 * kk) * 4, (xpad + gi * cg * hp * wp) * 4, taps * 4, cp * 4, mb, nb, kk, ldc * 4, 0);
      rt.compact(cp * 4, ldc * 4, (yAll + (b * o + gi * og) * p) * 4, og, oh, ow, wp, (biasAt + gi * og) * 4, relu ? 1 : 0);
    }
  }
  return mem.slice(yAll, yAll + n * o * p);
}

/**
 * Stride-1 backward input: per image and group dcol = W_gᵀ [kk, og] · dy_g [og, P] (packed GEMM),
 * then col2im in wasm (vector adds along the output rows) into dx. Null when it does not fit.
 */
function convBackwardInputCol2im(rt: WasmRuntime, dy: Float32Array, w: TypedArray, geo: ConvGeometry): Float32Array | null {
  const { n, c, h, w: wd, o, g, cg, og, kk, kh, kw, oh, ow, ph, pw, dh, dw, p } = geo;
  const mb = Math.ceil(kk / 4);
  const nb = Math.ceil(p / 8);
  const ldc = nb * 8;
  const arena = rt.arena;
  arena.reset();
  const ap = arena.reserve(g * mb * 4 * og);
  const bp = arena.reserve(nb * 8 * og);
  const cp = arena.reserve(mb * 4 * ldc);
  const dxAll = arena.reserve(n * c * h * wd);
  if (!arena.fits()) return null;
  const mem = arena.view();
  mem.fill(0, dxAll, dxAll + n * c * h * wd);
  // A(t, j) = Wᵀ: w[(gi·og + j)·kk + t]
  for (let gi = 0; gi < g; gi++) packPanels(mem, ap + gi * mb * 4 * og, w, gi * og * kk, kk, og, 1, kk, 4);
  for (let b = 0; b < n; b++) {
    for (let gi = 0; gi < g; gi++) {
      packPanels(mem, bp, dy, (b * o + gi * og) * p, p, og, 1, p, 8); // B(j, q) = dy[b, gi·og + j, q]
      rt.gemm((ap + gi * mb * 4 * og) * 4, bp * 4, cp * 4, mb, nb, og, ldc * 4, 0);
      rt.col2im(cp * 4, ldc * 4, (dxAll + (b * c + gi * cg) * h * wd) * 4, cg, h, wd, kh, kw, oh, ow, ph, pw, dh, dw);
    }
  }
  return mem.slice(dxAll, dxAll + n * c * h * wd);
}

/**
 * Stride-1 backward weight: dWᵀ_g [kk, og] = Σ_images Σ_q x_pad[q + shift(t)]·dy_canvas[o, q], A's row t
 * read in the padded image (gemmRowsA), dy packed into canvas panels with zeros in the junk columns.
 */
function convBackwardWeightCanvas(rt: WasmRuntime, x: Float32Array, dy: Float32Array, geo: ConvGeometry, weightShape: readonly number[]): Float32Array | null {
  const { n, c, h, w: wd, o, g, cg, og, kk, oh, ow, ph, pw } = geo;
  const hp = h + 2 * ph;
  const wp = wd + 2 * pw;
  const canvas = oh * wp;
  const mb = Math.ceil(kk / 4);
  const nb = Math.ceil(og / 8);
  const ldc = nb * 8;
  const arena = rt.arena;
  arena.reset();
  const xAll = arena.reserve(n * c * h * wd);
  const xpad = arena.reserve(paddedFloats(geo, hp, wp));
  const rows = arena.reserve(mb * 4);
  const bp = arena.reserve(nb * 8 * canvas);
  const cp = arena.reserve(g * mb * 4 * ldc);
  if (!arena.fits()) return null;
  const mem = arena.view();
  mem.set(x, xAll);
  mem.fill(0, xpad, xpad + paddedFloats(geo, hp, wp));
  mem.fill(0, bp, bp + nb * 8 * canvas);
  const rowTable = new Int32Array(mem.buffer, rows * 4, mb * 4);
  rowTable.fill(0);
  rowTable.set(tapShifts(geo, hp, wp));
  for (let b = 0; b < n; b++) {
    rt.padImage((xAll + b * c * h * wd) * 4, xpad * 4, c, h, wd, hp, wp, ph, pw);
    for (let gi = 0; gi < g; gi++) {
      // B(q, o) = dy[b, gi·og + o, oy, ox] at q = oy·wp + ox, panel layout [o / 8][q][o mod 8]
      for (let ol = 0; ol < og; ol++) {
        const lane = bp + (ol >> 3) * canvas * 8 + (ol & 7);
        const src = ((b * o + gi * og + ol) * oh) * ow;
        for (let oy = 0; oy < oh; oy++) {
          const to = lane + oy * wp * 8;
          const from = src + oy * ow;
          for (let ox = 0; ox < ow; ox++) mem[to + ox * 8] = dy[from + ox]!;
        }
      }
      rt.gemmRowsA((xpad + gi * cg * hp * wp) * 4, rows * 4, bp * 4, (cp + gi * mb * 4 * ldc) * 4, mb, nb, canvas, ldc * 4, b > 0 ? 1 : 0);
    }
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
      rt.gemm((ap + gi * mb * 4 * kk) * 4, bp * 4, cp * 4, mb, nb, kk, ldc * 4, 0);
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

/** x, w, bias -> maxPool(relu(conv2d(x, w) + bias)). */
export function conv2dFusedKernel(rt: WasmRuntime): Kernel<'conv2dFused'> {
  return (inputs, attrs) => {
    const [x, w, bias] = inputs as [RawTensor, RawTensor, RawTensor];
    const geo = allF32(inputs) ? convGeometry(x.shape, w.shape, attrs) : null;
    if (!geo || bias.shape.length !== 1 || bias.shape[0] !== geo.o) return undefined;
    const y = convForward(rt, x, w, geo, bias.data as Float32Array, attrs.relu);
    if (!y || !attrs.pool) return y;
    return maxPoolWindows(rt, y, attrs.pool, null)?.y;
  };
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
        rt.gemm((ap + gi * mb * 4 * og) * 4, bp * 4, cp * 4, mb, nb, og, ldc * 4, 0);
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
        rt.gemm(ap * 4, bp * 4, (cp + gi * mb * 4 * ldc) * 4, mb, nb, p, ldc * 4, b > 0 ? 1 : 0);
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

// ---------------------------------------------------------------- pooling

/**
 * Runs the wasm window scan of x (N,C,H,W): the pooled values y (N,C,OH,OW) and, when `keepIdx` is
 * given, copies each window's argmax index (−1: dropped by the fused ReLU) into it. Null when the
 * geometry is not one the kernel handles.
 */
function maxPoolWindows(rt: WasmRuntime, x: RawTensor, a: MaxPool2dAttrs, keepIdx: Int32Array | null): { y: RawTensor; idx: Int32Array | null } | null {
  const geo = poolGeometry(x.shape, a);
  if (!geo) return null;
  const [n, c, h, w, oh, ow] = geo;
  const size = n * c * oh * ow;
  const arena = rt.arena;
  arena.reset();
  const xp = arena.reserve(x.data.length);
  const yp = arena.reserve(size);
  const ip = arena.reserve(size);
  if (!arena.fits()) return null;
  const mem = arena.view();
  mem.set(x.data, xp);
  const relu = a.relu ? 1 : 0;
  if (a.kernel[0] === 2 && a.kernel[1] === 2 && a.stride[0] === 2 && a.stride[1] === 2 && a.padding[0] === 0 && a.padding[1] === 0 && pool2x2) {
    rt.maxPool2x2(xp * 4, yp * 4, ip * 4, n * c, h, w, oh, ow, relu);
  } else {
    rt.maxPool(xp * 4, yp * 4, ip * 4, n * c, h, w, oh, ow, a.kernel[0], a.kernel[1], a.stride[0], a.stride[1], a.padding[0], a.padding[1], relu);
  }
  const y = f32([n, c, oh, ow]);
  y.data.set(mem.subarray(yp, yp + size));
  let idx: Int32Array | null = null;
  if (keepIdx) {
    idx = keepIdx;
    idx.set(new Int32Array(mem.buffer, ip * 4, size));
  }
  return { y, idx };
}

/** [N, C, H, W, OH, OW] of a pooling, or null (not rank 4, empty, or a window that can lie wholly in the padding). */
function poolGeometry(shape: readonly number[], a: MaxPool2dAttrs): number[] | null {
  if (shape.length !== 4) return null;
  const [n, c, h, w] = shape as [number, number, number, number];
  const [kh, kw] = a.kernel;
  const [sh, sw] = a.stride;
  const [ph, pw] = a.padding;
  if (![kh, kw, sh, sw].every((v) => Number.isInteger(v) && v >= 1) || !(ph >= 0 && pw >= 0)) return null;
  const oh = outSize(h, kh, sh, ph, 1);
  const ow = outSize(w, kw, sw, pw, 1);
  if (n * c === 0 || oh < 1 || ow < 1) return null;
  return [n, c, h, w, oh, ow];
}

export function maxPool2dKernel(rt: WasmRuntime): Kernel<'maxPool2d'> {
  return (inputs, attrs) => (allF32(inputs) ? maxPoolWindows(rt, inputs[0]!, attrs, null)?.y : undefined);
}

/** dy (N,C,OH,OW), x (N,C,H,W) -> dx: dy added at each window's first maximum, in window order (float32 sums as the reference). */
export function maxPool2dBackwardKernel(rt: WasmRuntime): Kernel<'maxPool2dBackward'> {
  return (inputs, attrs) => {
    const [dy, x] = inputs as [RawTensor, RawTensor];
    if (!allF32(inputs)) return undefined;
    const geo = poolGeometry(x.shape, attrs);
    if (!geo || dy.shape.length !== 4 || dy.shape[0] !== geo[0] || dy.shape[1] !== geo[1] || dy.shape[2] !== geo[4] || dy.shape[3] !== geo[5]) return undefined;
    const idx = new Int32Array(dy.data.length);
    if (!maxPoolWindows(rt, x, attrs, idx)) return undefined;
    const dx = f32(x.shape);
    const g = dy.data;
    for (let i = 0; i < idx.length; i++) {
      const at = idx[i]!;
      if (at >= 0) dx.data[at] += g[i]!;
    }
    return dx;
  };
}

/** g (N,C,H,W), x (N,C,H,W) -> g read at each window's first maximum of x (0 where the fused ReLU drops it). */
export function maxPool2dGatherKernel(rt: WasmRuntime): Kernel<'maxPool2dGather'> {
  return (inputs, attrs) => {
    const [g, x] = inputs as [RawTensor, RawTensor];
    if (!allF32(inputs) || g.shape.length !== 4 || g.shape.some((d, i) => d !== x.shape[i])) return undefined;
    const geo = poolGeometry(x.shape, attrs);
    if (!geo) return undefined;
    const idx = new Int32Array(geo[0]! * geo[1]! * geo[4]! * geo[5]!);
    const pooled = maxPoolWindows(rt, x, attrs, idx);
    if (!pooled) return undefined;
    const y = pooled.y;
    for (let i = 0; i < idx.length; i++) y.data[i] = idx[i]! < 0 ? 0 : g.data[idx[i]!]!;
    return y;
  };
}

// ---------------------------------------------------------------- sum

/**
 * sum over `axes` when they make the input (R1, K, R2) -- reduced, kept, reduced dims, each group
 * contiguous (a bias gradient: [N, C, H, W] over [0, 2, 3], [N, F] over [0]). A TypeScript loop
 * without the reference's index map: each output accumulates in float64 in input order, as the
 * reference does, so the result is the reference's bit for bit. Other axis sets decline.
 */
export const sumKernel: Kernel<'sum'> = (inputs, { axes, keepDims }) => {
  const [x] = inputs as [RawTensor];
  if (!allF32(inputs)) return undefined;
  const rank = x.shape.length;
  const reduced = (d: number) => axes.includes(d);
  let first = 0;
  while (first < rank && reduced(first)) first++;
  let last = first;
  while (last < rank && !reduced(last)) last++;
  for (let d = last; d < rank; d++) if (!reduced(d)) return undefined;
  const r1 = sizeOf(x.shape.slice(0, first));
  const k = sizeOf(x.shape.slice(first, last));
  const r2 = sizeOf(x.shape.slice(last));
  const shape = x.shape.flatMap((d, i) => (reduced(i) ? (keepDims ? [1] : []) : [d]));
  const acc = new Float64Array(k);
  const src = x.data;
  if (r2 === 1) {
    for (let a = 0; a < r1; a++) {
      const base = a * k;
      for (let j = 0; j < k; j++) acc[j] += src[base + j]!;
    }
  } else {
    // four outputs at a time: four independent addition chains, each in input order
    for (let a = 0; a < r1; a++) {
      let j = 0;
      for (; j + 4 <= k; j += 4) {
        let s0 = acc[j]!, s1 = acc[j + 1]!, s2 = acc[j + 2]!, s3 = acc[j + 3]!;
        const b0 = (a * k + j) * r2;
        for (let b = 0; b < r2; b++) {
          s0 += src[b0 + b]!;
          s1 += src[b0 + r2 + b]!;
          s2 += src[b0 + 2 * r2 + b]!;
          s3 += src[b0 + 3 * r2 + b]!;
        }
        acc[j] = s0;
        acc[j + 1] = s1;
        acc[j + 2] = s2;
        acc[j + 3] = s3;
      }
      for (; j < k; j++) {
        let s = acc[j]!;
        const base = (a * k + j) * r2;
        for (let b = 0; b < r2; b++) s += src[base + b]!;
        acc[j] = s;
      }
    }
  }
  const y = f32(shape);
  y.data.set(acc);
  return y;
};

// ---------------------------------------------------------------- elementwise (TypeScript, monomorphic)

/*
 * The small elementwise ops of a training step (a Linear layer's bias add, ReLU and its backward)
 * as float32-only loops: the reference kernels compute the same JS expressions per element, but
 * through one shared, polymorphic loop per op. Results equal the reference's bit for bit (each
 * value is the same double expression rounded to float32 once).
 */

/** (x) -> x <= 0 ? 0 : x (NaN stays). */
export const reluKernel: Kernel<'relu'> = (inputs) => {
  const [x] = inputs as [RawTensor];
  if (!allF32(inputs)) return undefined;
  const src = x.data as Float32Array;
  const y = f32(x.shape);
  const out = y.data;
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    out[i] = v <= 0 ? 0 : v;
  }
  return y;
};

/** (g, y) -> y <= 0 ? 0 : g, same shapes only. */
export const reluBackwardKernel: Kernel<'reluBackward'> = (inputs) => {
  const [g, y] = inputs as [RawTensor, RawTensor];
  if (!allF32(inputs) || g.shape.length !== y.shape.length || g.shape.some((d, i) => d !== y.shape[i])) return undefined;
  const gd = g.data as Float32Array;
  const yd = y.data as Float32Array;
  const r = f32(g.shape);
  const out = r.data;
  for (let i = 0; i < gd.length; i++) out[i] = yd[i]! <= 0 ? 0 : gd[i]!;
  return r;
};

/** (a, b) -> a + b when the shapes are equal or b is a row [F] (or [1, …, F]) added to every row of a. */
export const addKernel: Kernel<'add'> = (inputs) => {
  const [a, b] = inputs as [RawTensor, RawTensor];
  if (!allF32(inputs) || a.shape.length === 0) return undefined;
  const ad = a.data as Float32Array;
  const bd = b.data as Float32Array;
  const same = a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
  const cols = a.shape[a.shape.length - 1]!;
  const row = !same && b.shape.length <= a.shape.length && b.shape[b.shape.length - 1] === cols && sizeOf(b.shape) === cols;
  if (!same && !row) return undefined;
  const y = f32(a.shape);
  const out = y.data;
  if (same) {
    for (let i = 0; i < ad.length; i++) out[i] = ad[i]! + bd[i]!;
  } else {
    for (let base = 0; base < ad.length; base += cols) {
      for (let j = 0; j < cols; j++) out[base + j] = ad[base + j]! + bd[j]!;
    }
  }
  return y;
};

/** Ops the wasm backend has a kernel for (the rest run on the reference backend). */
export const WASM_OPS: readonly PrimitiveName[] = [
  'matmul', 'conv2d', 'conv2dFused', 'conv2dBackwardInput', 'conv2dBackwardWeight', 'maxPool2d', 'maxPool2dBackward', 'maxPool2dGather', 'sum',
  'add', 'relu', 'reluBackward',
];
