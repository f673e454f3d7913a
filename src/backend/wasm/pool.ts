/**
 * Max pooling on the wasm backend: the window scan (argmax and value of every window) in wasm,
 * the 2×2 / stride-2 case four windows at a time; the backward pass and the gather read the
 * indices. @internal
 */
import type { Kernel, MaxPool2dAttrs, RawTensor } from '../primitives.ts';
import type { WasmRuntime } from './runtime.ts';
import { allF32, copyOut, f32, outSize } from './util.ts';

/** @internal 2×2 / stride-2 pooling takes the vector kernel (tests turn it off to check the general one too). */
let pool2x2 = true;

/** @internal Turns the 2×2 pooling kernel on or off; returns the previous setting. */
export function setPool2x2(on: boolean): boolean {
  const previous = pool2x2;
  pool2x2 = on;
  return previous;
}

/** Where a window scan left its results in the arena (float indices) and how many windows. */
interface Scan {
  mem: Float32Array;
  yp: number;
  ip: number;
  size: number;
  /** Float indices of the `extra` blocks reserved after the scan's own. */
  extra: number[];
}

/**
 * Runs the wasm window scan of x (N,C,H,W): each window's maximum (f32, at yp) and argmax index
 * (i32 at ip; −1 where the fused ReLU drops the window), `extra` more blocks reserved for the
 * caller. Null when the geometry is not one the kernel handles or the memory does not fit.
 */
function scanWindows(rt: WasmRuntime, x: RawTensor, a: MaxPool2dAttrs, extra: readonly number[] = []): Scan | null {
  const geo = poolGeometry(x.shape, a);
  if (!geo) return null;
  const [n, c, h, w, oh, ow] = geo as [number, number, number, number, number, number];
  const size = n * c * oh * ow;
  const arena = rt.arena;
  arena.reset();
  const xp = arena.reserve(x.data.length);
  const yp = arena.reserve(size);
  const ip = arena.reserve(size);
  const blocks = extra.map((floats) => arena.reserve(floats));
  if (!arena.fits()) return null;
  const mem = arena.view();
  mem.set(x.data, xp);
  const relu = a.relu ? 1 : 0;
  if (a.kernel[0] === 2 && a.kernel[1] === 2 && a.stride[0] === 2 && a.stride[1] === 2 && a.padding[0] === 0 && a.padding[1] === 0 && pool2x2) {
    rt.maxPool2x2(xp * 4, yp * 4, ip * 4, n * c, h, w, oh, ow, relu);
  } else {
    rt.maxPool(xp * 4, yp * 4, ip * 4, n * c, h, w, oh, ow, a.kernel[0], a.kernel[1], a.stride[0], a.stride[1], a.padding[0], a.padding[1], relu);
  }
  return { mem, yp, ip, size, extra: blocks };
}

/** The pooled values of x (N,C,OH,OW), or null (see scanWindows). */
export function maxPoolWindows(rt: WasmRuntime, x: RawTensor, a: MaxPool2dAttrs): RawTensor | null {
  const scan = scanWindows(rt, x, a);
  if (!scan) return null;
  const [n, c] = x.shape as [number, number];
  const geo = poolGeometry(x.shape, a)!;
  return { data: copyOut(scan.mem, scan.yp, scan.size), shape: [n, c, geo[4]!, geo[5]!], dtype: 'float32' };
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
  return (inputs, attrs) => (allF32(inputs) ? maxPoolWindows(rt, inputs[0]!, attrs) ?? undefined : undefined);
}

/** dy (N,C,OH,OW), x (N,C,H,W) -> dx: dy added at each window's first maximum, in window order (float32 sums as the reference). */
export function maxPool2dBackwardKernel(rt: WasmRuntime): Kernel<'maxPool2dBackward'> {
  return (inputs, attrs) => {
    const [dy, x] = inputs as [RawTensor, RawTensor];
    if (!allF32(inputs)) return undefined;
    const geo = poolGeometry(x.shape, attrs);
    if (!geo || dy.shape.length !== 4 || dy.shape[0] !== geo[0] || dy.shape[1] !== geo[1] || dy.shape[2] !== geo[4] || dy.shape[3] !== geo[5]) return undefined;
    const scan = scanWindows(rt, x, attrs, [dy.data.length, x.data.length]);
    if (!scan) return undefined;
    const [gp, dxp] = scan.extra as [number, number];
    const { mem } = scan;
    mem.set(dy.data, gp);
    mem.fill(0, dxp, dxp + x.data.length);
    rt.scatterAdd(scan.ip * 4, gp * 4, dxp * 4, scan.size);
    return { data: copyOut(mem, dxp, x.data.length), shape: [...x.shape], dtype: 'float32' };
  };
}

/** g (N,C,H,W), x (N,C,H,W) -> g read at each window's first maximum of x (0 where the fused ReLU drops it). */
export function maxPool2dGatherKernel(rt: WasmRuntime): Kernel<'maxPool2dGather'> {
  return (inputs, attrs) => {
    const [g, x] = inputs as [RawTensor, RawTensor];
    if (!allF32(inputs) || g.shape.length !== 4 || g.shape.some((d, i) => d !== x.shape[i])) return undefined;
    const geo = poolGeometry(x.shape, attrs);
    if (!geo) return undefined;
    const scan = scanWindows(rt, x, attrs);
    if (!scan) return undefined;
    const idx = new Int32Array(scan.mem.buffer, scan.ip * 4, scan.size);
    const y = f32([geo[0]!, geo[1]!, geo[4]!, geo[5]!]);
    const gd = g.data;
    for (let i = 0; i < idx.length; i++) y.data[i] = idx[i]! < 0 ? 0 : gd[idx[i]!]!;
    return y;
  };
}
