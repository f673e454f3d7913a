/**
 * Depthwise 3×3 convolutions on the wasm backend (groups = C = O, kernel 3×3, stride 1 or 2,
 * padding 1, dilation 1: MobileNet's depthwise layers): conv2d, conv2dBackwardInput and
 * conv2dBackwardWeight through ./depthwise-module.ts instead of the generic grouped GEMM path
 * (one GEMM of 1 × 9 × P per plane). Every plane is a 1-D convolution over its zero-padded wide grid:
 * - forward: the stride-1 output on the wide grid, then compacted (stride 2 keeps every other
 *   row and column: four times the taps of the strided output, but no gather);
 * - backward input: the same convolution with the flipped kernel over g placed on the padded input
 *   grid (at 1 + s·oy, 1 + s·ox, zeros elsewhere), i.e. the transposed convolution;
 * - backward weight: per plane and tap the dot product of g (on the stride-1 wide grid, zeros
 *   elsewhere) with the shifted padded input, four partial sums per tap, added over the batch in
 *   float64 here.
 * Planes are split over the worker pool. Other geometries decline (the generic path runs), and so
 * do non-finite weights (see allFinite). An infinite or NaN pixel of x makes its whole channel of
 * the weight gradient NaN (junk columns multiply it by zero), as on the generic padded-image path.
 * Tolerances as the GEMM path: sums of 9 products (forward / input) or of N·H·W products (weight)
 * in another order than the reference.
 * @internal
 */
import type { Conv2dAttrs, Kernel, RawTensor } from '../primitives.ts';
import type { WasmRuntime } from './runtime.ts';
import { allF32, convGeometry, copyOut, outputF32, partRange, partsFor, type ConvGeometry } from './util.ts';

/** The geometry when it is a depthwise 3×3, stride 1 or 2, padding 1 convolution; else null. */
function depthwise(x: readonly number[], w: readonly number[], a: Conv2dAttrs): ConvGeometry | null {
  const geo = convGeometry(x, w, a);
  if (!geo || geo.g !== geo.c || geo.o !== geo.c || geo.kh !== 3 || geo.kw !== 3) return null;
  if (geo.sh !== geo.sw || (geo.sh !== 1 && geo.sh !== 2) || geo.ph !== 1 || geo.pw !== 1 || geo.dh !== 1 || geo.dw !== 1) return null;
  return geo;
}

/**
 * Whether every weight is finite: the padded grids multiply zeros (padding, junk columns, the
 * zeros between upsampled g) by the weights, which only the reference's skipped taps would make
 * NaN when a weight is infinite; such calls decline.
 */
function allFinite(data: RawTensor['data']): boolean {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) return false;
  return true;
}

/**
 * Arena layout shared by the three kernels: planes of the padded input grid ((h + 5) rows of
 * wp = w + 2: the 3 extra zero rows cover the reads of the last vector past the grid) and planes
 * of the wide stride-1 output (len = h·wp floats, then a row: room for the last vector).
 */
function grids(geo: ConvGeometry): { planes: number; wp: number; xs: number; len: number; ys: number } {
  const wp = geo.w + 2;
  const len = geo.h * wp;
  return { planes: geo.n * geo.c, wp, xs: (geo.h + 5) * wp, len, ys: (geo.h + 1) * wp };
}

/** A part's calls over planes [p0, p1). */
type PlaneCalls = (call: (fn: number, ...args: number[]) => void, p0: number, p1: number) => void;

/** Runs `calls` over every plane, split by planes over the pool when the call is large. */
function overPlanes(rt: WasmRuntime, g: ReturnType<typeof grids>, calls: PlaneCalls): void {
  const parts = partsFor(rt.threads(), 9 * g.planes * g.len, g.planes);
  rt.parallel(parts, (part, call) => {
    const [p0, p1] = partRange(g.planes, parts, part);
    if (p1 > p0) calls(call, p0, p1);
  });
}

/** The call padding planes [p0, p1) of the [h, w] planes at src (floats) into the [rows, wp] grids at dst at (top, left), zeros around. */
function padCall(rt: WasmRuntime, src: number, dst: number, h: number, w: number, rows: number, wp: number, top: number): PlaneCalls {
  return (call, p0, p1) => call(rt.fn.dwPad, src * 4, dst * 4, p0, p1, h, w, rows, wp, top, top);
}

/** The call spreading planes [p0, p1) of the [oh, ow] planes at src (floats) onto the zeroed [rows, wp] grids at dst at (top + 2oy, top + 2ox). */
function spreadCall(rt: WasmRuntime, src: number, dst: number, oh: number, ow: number, rows: number, wp: number, top: number): PlaneCalls {
  return (call, p0, p1) => call(rt.fn.dwSpread, src * 4, dst * 4, p0, p1, oh, ow, rows, wp, top);
}

export function depthwiseConv2dKernel(rt: WasmRuntime): Kernel<'conv2d'> {
  return (inputs, attrs) => {
    const [x, w] = inputs as [RawTensor, RawTensor];
    const geo = allF32(inputs) && inputs.length === 2 ? depthwise(x.shape, w.shape, attrs) : null;
    if (!geo || !allFinite(w.data)) return undefined;
    const g = grids(geo);
    const stride1 = geo.sh === 1;
    const arena = rt.arena;
    arena.reset();
    const xp = arena.reserve(g.planes * g.xs);
    const wp = arena.reserve(9 * geo.c);
    const staged = arena.reserve(x.data.length);
    const yp = arena.reserve(g.planes * geo.oh * geo.ow);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    mem.set(x.data, staged);
    mem.set(w.data, wp);
    const pad = padCall(rt, staged, xp, geo.h, geo.w, geo.h + 5, g.wp, 1);
    overPlanes(rt, g, (call, p0, p1) => {
      pad(call, p0, p1);
      if (stride1) call(rt.fn.dwConvRows, xp * 4, wp * 4, yp * 4, p0, p1, geo.c, g.xs * 4, g.wp, geo.h, geo.w);
      else call(rt.fn.dwConvS2, xp * 4, wp * 4, yp * 4, p0, p1, geo.c, g.xs * 4, g.wp, geo.oh, geo.ow);
    });
    const y = copyOut(mem, yp, g.planes * geo.oh * geo.ow);
    return { data: y, shape: [geo.n, geo.o, geo.oh, geo.ow], dtype: 'float32' };
  };
}

export function depthwiseConv2dBackwardInputKernel(rt: WasmRuntime): Kernel<'conv2dBackwardInput'> {
  return (inputs, attrs) => {
    const [dy, w] = inputs as [RawTensor, RawTensor];
    const geo = allF32(inputs) && inputs.length === 2 ? depthwise(attrs.inputShape, w.shape, attrs) : null;
    if (!geo || dy.shape.length !== 4 || dy.shape[0] !== geo.n || dy.shape[1] !== geo.o || dy.shape[2] !== geo.oh || dy.shape[3] !== geo.ow || !allFinite(w.data)) return undefined;
    const g = grids(geo);
    const { oh, ow, sh: s } = geo;
    const arena = rt.arena;
    arena.reset();
    const up = arena.reserve(g.planes * g.xs);
    const wf = arena.reserve(9 * geo.c);
    const staged = arena.reserve(dy.data.length);
    const yp = arena.reserve(g.planes * geo.h * geo.w);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    mem.set(dy.data, staged); // padded (stride 1) or spread (stride 2: at 1 + 2·oy, 1 + 2·ox) by the parts
    const wd = w.data;
    for (let ch = 0; ch < geo.c; ch++) for (let t = 0; t < 9; t++) mem[wf + 9 * ch + t] = wd[9 * ch + 8 - t]!;
    const place = s === 1 ? padCall(rt, staged, up, oh, ow, geo.h + 5, g.wp, 1) : spreadCall(rt, staged, up, oh, ow, geo.h + 5, g.wp, 1);
    overPlanes(rt, g, (call, p0, p1) => {
      place(call, p0, p1);
      call(rt.fn.dwConvRows, up * 4, wf * 4, yp * 4, p0, p1, geo.c, g.xs * 4, g.wp, geo.h, geo.w);
    });
    return { data: copyOut(mem, yp, g.planes * geo.h * geo.w), shape: [...attrs.inputShape], dtype: 'float32' };
  };
}

export function depthwiseConv2dBackwardWeightKernel(rt: WasmRuntime): Kernel<'conv2dBackwardWeight'> {
  return (inputs, attrs) => {
    const [x, dy] = inputs as [RawTensor, RawTensor];
    const geo = allF32(inputs) && inputs.length === 2 ? depthwise(x.shape, attrs.weightShape, attrs) : null;
    if (!geo || dy.shape.length !== 4 || dy.shape[0] !== geo.n || dy.shape[1] !== geo.o || dy.shape[2] !== geo.oh || dy.shape[3] !== geo.ow) return undefined;
    const g = grids(geo);
    const { oh, ow, sh: s } = geo;
    const arena = rt.arena;
    arena.reset();
    const xp = arena.reserve(g.planes * g.xs);
    const gw = arena.reserve(g.planes * g.ys);
    const out = arena.reserve(36 * g.planes);
    const xStaged = arena.reserve(x.data.length);
    const gStaged = arena.reserve(dy.data.length);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    mem.set(x.data, xStaged);
    // g on the wide grid (zero junk columns, a zero row after each plane; stride 2 at 2·oy, 2·ox): placed by the parts
    mem.set(dy.data, gStaged);
    const padX = padCall(rt, xStaged, xp, geo.h, geo.w, geo.h + 5, g.wp, 1);
    const placeG = s === 1 ? padCall(rt, gStaged, gw, oh, ow, geo.h + 1, g.wp, 0) : spreadCall(rt, gStaged, gw, oh, ow, geo.h + 1, g.wp, 0);
    overPlanes(rt, g, (call, p0, p1) => {
      padX(call, p0, p1);
      placeG(call, p0, p1);
      call(rt.fn.dwGrad, gw * 4, xp * 4, out * 4, p0, p1, g.ys * 4, g.xs * 4, g.wp, g.len);
    });
    const acc = new Float64Array(9 * geo.c);
    for (let p = 0; p < g.planes; p++) {
      const ch = p % geo.c;
      for (let t = 0; t < 9; t++) {
        const at = out + 36 * p + 4 * t;
        acc[9 * ch + t]! += mem[at]! + mem[at + 1]! + mem[at + 2]! + mem[at + 3]!;
      }
    }
    // (a non-finite x times the zero g of a junk column makes its channel NaN where the reference
    // skips that product: as the generic path's padded-image weight gradient does)
    return { data: Float32Array.from(acc), shape: [...attrs.weightShape], dtype: 'float32' };
  };
}
