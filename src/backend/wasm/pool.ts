/**
 * Max pooling on the wasm backend: the window scan (argmax and value of every window) in wasm,
 * the 2×2 / stride-2 case four windows at a time; the backward pass and the gather read the
 * indices. @internal
 */
import type { Kernel, MaxPool2dAttrs, RawTensor } from '../primitives.ts';
import type { WasmRuntime } from './runtime.ts';
import { allF32, f32, outSize } from './util.ts';

/** @internal 2×2 / stride-2 pooling takes the vector kernel (tests turn it off to check the general one too). */
let pool2x2 = true;

/** @internal Turns the 2×2 pooling kernel on or off; returns the previous setting. */
export function setPool2x2(on: boolean): boolean {
  const previous = pool2x2;
  pool2x2 = on;
  return previous;
}

/**
 * Runs the wasm window scan of x (N,C,H,W): the pooled values y (N,C,OH,OW) and, when `keepIdx` is
 * given, copies each window's argmax index (−1: dropped by the fused ReLU) into it. Null when the
 * geometry is not one the kernel handles.
 */
export function maxPoolWindows(rt: WasmRuntime, x: RawTensor, a: MaxPool2dAttrs, keepIdx: Int32Array | null): { y: RawTensor; idx: Int32Array | null } | null {
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
