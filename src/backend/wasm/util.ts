/**
 * Helpers shared by the wasm backend's kernels: the float32 check, output allocation and the
 * convolution geometry.
 * @internal
 */
import type { Conv2dAttrs, RawTensor } from '../primitives.ts';
import { sizeOf } from '../primitives.ts';
import { noteAllocated, takeRecycled } from '../recycle.ts';

export function allF32(inputs: readonly RawTensor[]): boolean {
  return inputs.every((t) => t.dtype === 'float32' && t.data instanceof Float32Array);
}

export function outSize(n: number, k: number, stride: number, pad: number, dilation: number): number {
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

/** Below this many floats a zero-filled allocation costs about the same (as the native backend's). */
const UNINIT_MIN = 4096;

/** Node's Buffer when there is one (uninitialised allocation); undefined in a browser. */
const nodeBuffer = (globalThis as { Buffer?: { allocUnsafeSlow(bytes: number): Uint8Array } }).Buffer;

/**
 * A float32 output of `size` elements that the caller overwrites completely: a buffer autograd
 * released while still in cache (../recycle.ts), else uninitialised memory on Node.js, else a
 * fresh Float32Array; noted as a kernel output so autograd may recycle it in turn (as the native
 * backend's outputs). The zero fill and first-touch page faults of `new Float32Array` cost more
 * than the copy out of wasm memory at MobileNet's activation sizes.
 */
export function outputF32(size: number): Float32Array {
  if (size < UNINIT_MIN) return new Float32Array(size);
  let data = takeRecycled(size);
  if (!data) {
    if (nodeBuffer) {
      const bytes = nodeBuffer.allocUnsafeSlow(size * 4);
      data = new Float32Array(bytes.buffer, bytes.byteOffset, size);
    } else data = new Float32Array(size);
  }
  noteAllocated(data);
  return data;
}

/** A copy of mem[at, at + size) in an output buffer (outputF32). */
export function copyOut(mem: Float32Array, at: number, size: number): Float32Array {
  const data = outputF32(size);
  data.set(mem.subarray(at, at + size));
  return data;
}

export function f32(shape: readonly number[]): RawTensor & { data: Float32Array } {
  return { data: new Float32Array(sizeOf(shape)), shape: [...shape], dtype: 'float32' };
}

/**
 * Multiply-adds below which a kernel call stays on the calling thread: waking a worker and waiting
 * for it costs about 13–25 µs, about 3·10^5 multiply-adds of the SIMD GEMM on one thread
 * (bench/wasm-threads-threshold.ts; docs/runtime.md).
 */
export const PARALLEL_MIN_MACS = 1 << 20;

let parallelMinMacs = PARALLEL_MIN_MACS;

/** @internal Sets the threshold (tests use 0 to split every call); returns the previous one. */
export function setParallelMinMacs(macs: number): number {
  const previous = parallelMinMacs;
  parallelMinMacs = macs;
  return previous;
}

/** How many parts to split `units` independent pieces of `macs` multiply-adds into (1: stay on the caller). */
export function partsFor(threads: number, macs: number, units: number): number {
  return macs < parallelMinMacs ? 1 : Math.max(1, Math.min(threads, units));
}

/**
 * `partsFor` for the weight gradient of a stride-1 convolution on the padded image, whose split
 * first pads and lays out every image (images over threads), then splits the tap rows and sums
 * every image in each part: it splits only when an image's share is at least a quarter of the
 * threshold too. Below that the all-images layout falls out of cache and costs more than the split
 * saves: MobileNet's 1×1 convs (at most 2·10^5 multiply-adds per image) trained about 10 % slower
 * on two threads with these splits, while LeNet-5's conv2 (3.4·10^5 per image) gains from its
 * split (bench/wasm-mobilenet.ts; docs/runtime.md).
 */
export function weightGradientPartsFor(threads: number, macs: number, n: number, units: number): number {
  return macs * 4 < n * parallelMinMacs ? 1 : partsFor(threads, macs, units);
}

/** Part `part` of `parts` near-equal contiguous ranges of [0, total): [lo, hi). */
export function partRange(total: number, parts: number, part: number): [number, number] {
  return [Math.floor((total * part) / parts), Math.floor((total * (part + 1)) / parts)];
}
