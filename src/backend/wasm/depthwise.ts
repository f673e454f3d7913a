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

/**
 * dwConv over every plane (x planes at xp, weights at w, wide outputs at yw), split by planes over
 * the pool when large; each part first runs `before` (padding its planes) and then `after`
 * (compacting them), so those copies run on the part's thread too.
 */
function runConv(rt: WasmRuntime, xp: number, w: number, yw: number, c: number, g: ReturnType<typeof grids>, before: PlaneCalls, after: PlaneCalls): void {
  const parts = partsFor(rt.threads(), 9 * g.planes * g.len, g.planes);
  rt.parallel(parts, (part, call) => {
    const [p0, p1] = partRange(g.planes, parts, part);
    if (p1 <= p0) return;
    before(call, p0, p1);
    call(rt.fn.dwConv, xp * 4, w * 4, yw * 4, p0, p1, c, g.xs * 4, g.ys * 4, g.wp, g.len);
    after(call, p0, p1);
  });
}

/** `before` of runConv: pads planes [p0, p1) of the (h, w) planes at src into the grids at dst (rows ph.., columns pw..). */
function padPlanes(rt: WasmRuntime, src: number, dst: number, h: number, w: number, g: ReturnType<typeof grids>, hp: number, stride: number, pad: number): PlaneCalls {
  return (call, p0, p1) => call(rt.fn.padImage, (src + p0 * h * w) * 4, (dst + p0 * stride) * 4, p1 - p0, h, w, hp, g.wp, pad, pad);
}

/** `after` of runConv for stride 1: compacts planes [p0, p1) of the wide outputs at yw into yc (oh = h, ow = w rows), adding the zero bias at `zeros`. */
function compactPlanes(rt: WasmRuntime, yw: number, yc: number, zeros: number, g: ReturnType<typeof grids>, h: number, w: number): PlaneCalls {
  return (call, p0, p1) => call(rt.fn.compact, (yw + p0 * g.ys) * 4, g.ys * 4, (yc + p0 * h * w) * 4, p1 - p0, h, w, g.wp, zeros * 4, 0);
}

const nothing: PlaneCalls = () => {};

/** The stride-2 forward output: rows and columns 0, 2, 4, … of the wide stride-1 result at yw. */
function gatherStride2(mem: Float32Array, yw: number, g: ReturnType<typeof grids>, oh: number, ow: number): Float32Array {
  const y = outputF32(g.planes * oh * ow);
  let k = 0;
  for (let p = 0; p < g.planes; p++) {
    const base = yw + p * g.ys;
    for (let oy = 0; oy < oh; oy++) {
      const row = base + 2 * oy * g.wp;
      for (let ox = 0; ox < ow; ox++) y[k++] = mem[row + 2 * ox]!;
    }
  }
  return y;
}

export function depthwiseConv2dKernel(rt: WasmRuntime): Kernel<'conv2d'> {
  return (inputs, attrs) => {
    const [x, w] = inputs as [RawTensor, RawTensor];
    const geo = allF32(inputs) && inputs.length === 2 ? depthwise(x.shape, w.shape, attrs) : null;
    if (!geo || !allFinite(w.data)) return undefined;
    const g = grids(geo);
    const arena = rt.arena;
    arena.reset();
    const xp = arena.reserve(g.planes * g.xs);
    const wp = arena.reserve(9 * geo.c);
    const yw = arena.reserve(g.planes * g.ys);
    const staged = arena.reserve(x.data.length);
    const yc = arena.reserve(g.planes * geo.oh * geo.ow);
    const zeros = arena.reserve(g.planes);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    mem.fill(0, xp, xp + g.planes * g.xs);
    mem.fill(0, zeros, zeros + g.planes);
    mem.set(x.data, staged);
    mem.set(w.data, wp);
    const stride1 = geo.sh === 1;
    runConv(rt, xp, wp, yw, geo.c, g, padPlanes(rt, staged, xp, geo.h, geo.w, g, geo.h + 5, g.xs, 1), stride1 ? compactPlanes(rt, yw, yc, zeros, g, geo.h, geo.w) : nothing);
    const y = stride1 ? copyOut(mem, yc, g.planes * geo.oh * geo.ow) : gatherStride2(mem, yw, g, geo.oh, geo.ow);
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
    const yw = arena.reserve(g.planes * g.ys);
    const staged = arena.reserve(s === 1 ? dy.data.length : 0);
    const yc = arena.reserve(g.planes * geo.h * geo.w);
    const zeros = arena.reserve(g.planes);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    mem.fill(0, up, up + g.planes * g.xs);
    mem.fill(0, zeros, zeros + g.planes);
    const gd = dy.data;
    if (s === 1) mem.set(gd, staged); // padded by the parts
    else {
      // g at (1 + 2·oy, 1 + 2·ox) of the padded grid
      let k = 0;
      for (let p = 0; p < g.planes; p++) {
        for (let oy = 0; oy < oh; oy++) {
          const row = up + p * g.xs + (1 + 2 * oy) * g.wp + 1;
          for (let ox = 0; ox < ow; ox++) mem[row + 2 * ox] = gd[k++]!;
        }
      }
    }
    const wd = w.data;
    for (let ch = 0; ch < geo.c; ch++) for (let t = 0; t < 9; t++) mem[wf + 9 * ch + t] = wd[9 * ch + 8 - t]!;
    runConv(rt, up, wf, yw, geo.c, g, s === 1 ? padPlanes(rt, staged, up, oh, ow, g, geo.h + 5, g.xs, 1) : nothing, compactPlanes(rt, yw, yc, zeros, g, geo.h, geo.w));
    const dx = copyOut(mem, yc, g.planes * geo.h * geo.w);
    return { data: dx, shape: [...attrs.inputShape], dtype: 'float32' };
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
    const gStaged = arena.reserve(s === 1 ? dy.data.length : 0);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    mem.fill(0, xp, xp + g.planes * g.xs);
    mem.fill(0, gw, gw + g.planes * g.ys);
    mem.set(x.data, xStaged);
    const gd = dy.data;
    if (s === 1) mem.set(gd, gStaged); // g on the wide grid (zero junk columns, a zero row after each plane): padded by the parts
    else {
      let k = 0;
      for (let p = 0; p < g.planes; p++) {
        for (let oy = 0; oy < oh; oy++) {
          const row = gw + p * g.ys + 2 * oy * g.wp;
          for (let ox = 0; ox < ow; ox++) mem[row + 2 * ox] = gd[k++]!;
        }
      }
    }
    const padX = padPlanes(rt, xStaged, xp, geo.h, geo.w, g, geo.h + 5, g.xs, 1);
    const padG = padPlanes(rt, gStaged, gw, oh, ow, g, geo.h + 1, g.ys, 0);
    const parts = partsFor(rt.threads(), 9 * g.planes * g.len, g.planes);
    rt.parallel(parts, (part, call) => {
      const [p0, p1] = partRange(g.planes, parts, part);
      if (p1 <= p0) return;
      padX(call, p0, p1);
      if (s === 1) padG(call, p0, p1);
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
