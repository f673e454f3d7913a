/**
 * fakeQuantize and fakeQuantizeGrad on the wasm backend: adapters from RawTensors to the
 * fake-quantization functions of ./quant-module.ts, bit-exact with the reference kernels
 * (src/backend/reference/quant.ts) -- the same float64 expressions per element, the reduced parts
 * summed in the reference's order. Scale and zero point per tensor, per channel or per any
 * contiguous run of x's dims (paramLayout); both estimators ('ste', 'clipped'); every part, with and
 * without `reduce`. Declines (the reference kernel runs) on anything but float32, on a gradient g
 * whose shape is not x's, on parameters laid out otherwise, on empty tensors and when the memory
 * does not fit.
 * @internal
 */
import type { Kernel, RawTensor } from '../primitives.ts';
import { paramLayout, scaleInPlace } from '../primitives.ts';
import type { FqMode } from './quant-module.ts';
import type { WasmRuntime } from './runtime.ts';
import { allF32, copyOut, f32 } from './util.ts';

/** Where a call's operands went in the arena (float indices) and how to walk them. */
interface Placed {
  mem: Float32Array;
  n: number;
  gp: number;
  xp: number;
  yp: number;
  accp: number;
  /** (sMid, sInner, zMid, zInner, run) for the module's functions. */
  walk: [number, number, number, number, number];
  sp: number;
  zp: number;
}

/**
 * Copies g (or none), x, s, z into the arena with room for y (n floats) and `accDoubles` float64
 * sums (zeroed); null when the layout is not one the kernels handle or the memory does not fit.
 */
function place(rt: WasmRuntime, g: RawTensor | null, x: RawTensor, s: RawTensor, z: RawTensor, accDoubles: number): Placed | null {
  const sl = paramLayout(s.shape, x.shape);
  const zl = paramLayout(z.shape, x.shape);
  const n = x.data.length;
  if (!sl || !zl || n === 0 || s.data.length !== sl[0] || z.data.length !== zl[0]) return null;
  // a single value: one run over all of x
  const sInner = sl[0] === 1 ? n : sl[1];
  const zInner = zl[0] === 1 ? n : zl[1];
  const arena = rt.arena;
  arena.reset();
  const xp = arena.reserve(n);
  const gp = g ? arena.reserve(n) : 0;
  const yp = arena.reserve(n);
  const sp = arena.reserve(s.data.length);
  const zp = arena.reserve(z.data.length);
  const accp = arena.reserve(2 * accDoubles);
  if (!arena.fits()) return null;
  const mem = arena.view();
  mem.set(x.data, xp);
  if (g) mem.set(g.data, gp);
  mem.set(s.data, sp);
  mem.set(z.data, zp);
  mem.fill(0, accp, accp + 2 * accDoubles);
  return { mem, n, gp, xp, yp, accp, walk: [sl[0], sInner, zl[0], zInner, Math.min(sInner, zInner)], sp, zp };
}

function call(rt: WasmRuntime, mode: FqMode, p: Placed, qmin: number, qmax: number, flag: number): void {
  const [sMid, sInner, zMid, zInner, run] = p.walk;
  rt.fq[mode](p.gp * 4, p.xp * 4, p.yp * 4, p.accp * 4, p.n, run, p.sp * 4, sMid, sInner, p.zp * 4, zMid, zInner, qmin, qmax, flag);
}

/** The arena's y block as a fresh float32 tensor of `shape`. */
function takeY(p: Placed, shape: readonly number[]): RawTensor {
  return { data: copyOut(p.mem, p.yp, p.n), shape: [...shape], dtype: 'float32' };
}

/** The arena's float64 sums as a float32 tensor of `shape` (each rounded once, as the reference stores them). */
function takeSums(p: Placed, shape: readonly number[], count: number): RawTensor & { data: Float32Array } {
  const y = f32(shape);
  y.data.set(new Float64Array(p.mem.buffer, p.accp * 4, count));
  return y;
}

/** (x, scale, zeroPoint) -> (clamp(round(x/s) + z, qmin, qmax) − z)·s, s and z per tensor or channel. */
export function fakeQuantizeKernel(rt: WasmRuntime): Kernel<'fakeQuantize'> {
  return (inputs, { qmin, qmax }) => {
    const [x, s, z] = inputs as [RawTensor, RawTensor, RawTensor];
    if (inputs.length !== 3 || !allF32(inputs)) return undefined;
    const p = place(rt, null, x, s, z, 0);
    if (!p) return undefined;
    call(rt, 'forward', p, qmin, qmax, 0);
    return takeY(p, x.shape);
  };
}

/**
 * (g, x, scale, zeroPoint) -> one part of fakeQuantize's gradient (see the primitive), g with x's
 * shape: elementwise in one wasm pass, or with `reduce` the scale / zero-point terms summed to
 * their operand in the same pass ('xAndScale': the x part written alongside).
 */
export function fakeQuantizeGradKernel(rt: WasmRuntime): Kernel<'fakeQuantizeGrad'> {
  return (inputs, { qmin, qmax, gradient, part, reduce, scaleGradFactor = 1 }) => {
    const [g, x, s, z] = inputs as [RawTensor, RawTensor, RawTensor, RawTensor];
    if (inputs.length !== 4 || !allF32(inputs)) return undefined;
    if (g.shape.length !== x.shape.length || g.shape.some((d, i) => d !== x.shape[i])) return undefined;
    if (part === 'x' && gradient === 'ste') {
      // g itself; a reduced copy adds +0 (the reference's sums start from +0: −0 becomes +0)
      if (x.data.length === 0 || !paramLayout(s.shape, x.shape) || !paramLayout(z.shape, x.shape)) return undefined;
      const y = f32(x.shape);
      const gd = g.data;
      if (reduce) for (let i = 0; i < gd.length; i++) y.data[i] = gd[i]! + 0;
      else y.data.set(gd);
      return y;
    }
    if (part === 'xAndScale' && !reduce) return undefined;
    const target = part === 'scale' || part === 'xAndScale' ? s : part === 'zeroPoint' ? z : null;
    const sums = reduce && target ? target.data.length : 0;
    const p = place(rt, g, x, s, z, sums);
    if (!p) return undefined;
    if (part === 'x') {
      call(rt, 'gradX', p, qmin, qmax, reduce ? 1 : 0);
      return takeY(p, x.shape);
    }
    if (!reduce) {
      call(rt, part === 'scale' ? 'gradScale' : 'gradZeroPoint', p, qmin, qmax, 0);
      const y = takeY(p, x.shape);
      if (part === 'scale' && scaleGradFactor !== 1) scaleInPlace(y.data, scaleGradFactor);
      return y;
    }
    if (part === 'zeroPoint') {
      call(rt, 'sumZeroPoint', p, qmin, qmax, 0);
      return takeSums(p, z.shape, sums);
    }
    if (part === 'scale') {
      call(rt, 'sumScale', p, qmin, qmax, 0);
      const y = takeSums(p, s.shape, sums);
      if (scaleGradFactor !== 1) scaleInPlace(y.data, scaleGradFactor);
      return y;
    }
    // 'xAndScale': the x part (flag 1: STE, 2: clipped) into y, the scale sums into acc
    call(rt, 'sumScale', p, qmin, qmax, gradient === 'ste' ? 1 : 2);
    const gs = takeSums(p, [sums], sums);
    if (scaleGradFactor !== 1) scaleInPlace(gs.data, scaleGradFactor);
    const out = f32([p.n + sums]);
    out.data.set(p.mem.subarray(p.yp, p.yp + p.n));
    out.data.set(gs.data, p.n);
    return out;
  };
}
