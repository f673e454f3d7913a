/**
 * Test helper of the native conv tests (conv3x3-native, conv-direct-native): the probe IntModel
 * quantize → conv2d (requantizing) → optional 2x2 max pool → flatten → dequantizing linear head.
 * The head is the identity (scale 1, bias 0) when the conv output has at most `identityMax` values
 * per sample, so the logits are the conv's integers minus the zero point; else a `projectionRows`-row
 * projection with weights in {-1, 0, 1} (exact float sums).
 * @internal test helper
 */
import { IntModel, packWeightTensor, type IntGraph, type IntNode, type IntTensor } from './intmodel.ts';
import { quantizeMultiplier } from './requantize.ts';

export interface ProbeConv {
  C: number;
  OC: number;
  H: number;
  W: number;
  /** Square kernel size. */
  k: number;
  stride: number;
  pad: number;
  pool: boolean;
  /** Conv groups (default 1); conv.w is then [OC, C / groups, k, k]. */
  groups?: number;
}

type AffineInput = { mode: 'affine'; scale: number; zeroPoint: number; bits: number; qmin: number; qmax: number };

/**
 * Builds the probe model. `tensors` must already hold the conv's conv.w [OC, C / groups, k, k] int8 and its
 * int32 conv.b, conv.m, conv.s (bias shift 4); the head's fc.w, fc.scale, fc.bias are added here,
 * drawing the projection weights with `int(-1, 1)` in row-major order (only when not the identity).
 */
export function convProbeModel(
  g: ProbeConv,
  input: AffineInput,
  output: { zeroPoint: number; lo: number; hi: number },
  tensors: Map<string, IntTensor>,
  head: { identityMax: number; projectionRows: number; int: (lo: number, hi: number) => number },
): { im: IntModel; features: number; identity: boolean } {
  const oh = Math.floor((g.H + 2 * g.pad - g.k) / g.stride) + 1;
  const ow = Math.floor((g.W + 2 * g.pad - g.k) / g.stride) + 1;
  const { zeroPoint: outZ, lo, hi } = output;
  const features = g.pool ? g.OC * Math.floor(oh / 2) * Math.floor(ow / 2) : g.OC * oh * ow;
  const identity = features <= head.identityMax;
  const rows = identity ? features : head.projectionRows;
  const fc = new Int8Array(rows * features);
  if (identity) {
    for (let i = 0; i < features; i++) fc[i * features + i] = 1;
  } else {
    for (let i = 0; i < fc.length; i++) fc[i] = head.int(-1, 1);
  }
  tensors.set('fc.w', packWeightTensor('int8', fc, [rows, features]));
  tensors.set('fc.scale', { dtype: 'float32', shape: [rows], data: new Float32Array(rows).fill(1) });
  tensors.set('fc.bias', { dtype: 'float32', shape: [rows], data: new Float32Array(rows) });
  const nodes: IntNode[] = [
    { op: 'quantize', name: 'q', input },
    {
      op: 'conv2d', name: 'conv', inFeatures: g.C, outFeatures: g.OC, weight: 'conv.w', weightFormat: 'int8', weightBits: 8,
      conv: {
        inChannels: g.C, outChannels: g.OC, kernelSize: [g.k, g.k], stride: [g.stride, g.stride], padding: [g.pad, g.pad],
        dilation: [1, 1], groups: g.groups ?? 1,
      },
      input,
      output: { mode: 'requantize', bias: 'conv.b', multiplier: 'conv.m', shift: 'conv.s', biasShift: 4, scale: 0.1, zeroPoint: outZ, lo, hi },
    },
    ...(g.pool ? [{ op: 'maxpool2d' as const, name: 'pool', kernelSize: [2, 2] as const, stride: [2, 2] as const, padding: [0, 0] as const, zeroPoint: outZ }] : []),
    { op: 'flatten', name: 'flat', startDim: 1, endDim: -1 },
    {
      op: 'linear', name: 'fc', inFeatures: features, outFeatures: rows, weight: 'fc.w', weightFormat: 'int8', weightBits: 8,
      input: { mode: 'affine', scale: 0.1, zeroPoint: outZ, bits: 8, qmin: lo, qmax: hi },
      output: { mode: 'dequantize', scale: 'fc.scale', bias: 'fc.bias' },
    },
  ];
  const graph: IntGraph = { format: 'lowbit-intmodel', version: 1, inputShape: [g.C, g.H, g.W], nodes };
  return { im: new IntModel(graph, tensors), features, identity };
}

/**
 * The check both native conv tests run per batch size: `n` samples of inputs past both ends of the
 * input quantizer's range (every byte value occurs, both ends clamp) through the TypeScript
 * executor and three native plans — `fast` (the kernel under test), `im2col` (im2col + GEMM) and
 * `doubles` (the kernel with the double requantization) — asserting with an identity head that the
 * native outputs are the TS conv integers minus the output zero point, then fast = TS,
 * fast = im2col and doubles = im2col, bit for bit. `what` names the kernel in messages.
 */
export function assertPlansAgree<P>(
  im: IntModel, run: (plan: P, x: Float32Array, n: number, out: Float32Array) => void, plans: { fast: P; im2col: P; doubles: P },
  probe: { features: number; outZ: number; identity: boolean }, shape: { inputSize: number; outputSize: number },
  n: number, uniform: () => number, what: string, fail: (message: string) => never,
): { a: Float32Array; ts: Float32Array; b: Float32Array; d: Float32Array } {
  const x = Float32Array.from({ length: n * shape.inputSize }, () => (uniform() * 2 - 1) * 10);
  im.useNative = false;
  const trace = new Map<string, { shape: number[]; data: Int32Array }>();
  const ts = im.run(x, n, { trace });
  const size = n * shape.outputSize;
  const a = new Float32Array(size), b = new Float32Array(size), d = new Float32Array(size);
  run(plans.fast, x, n, a);
  run(plans.im2col, x, n, b);
  run(plans.doubles, x, n, d);
  if (probe.identity) {
    const ints = trace.get('fc')!.data;  // the conv's (pooled) integers, TS flatten order
    if (ints.length !== n * probe.features) fail(`batch ${n}: ${ints.length} traced integers, expected ${n * probe.features}`);
    for (let i = 0; i < n * probe.features; i++) {
      if (a[i] !== ints[i]! - probe.outZ) fail(`batch ${n}: output ${i}: native ${a[i]! + probe.outZ}, TS ${ints[i]}`);
    }
  }
  const same = (p: Float32Array, q: Float32Array, label: string): void => {
    for (let i = 0; i < size; i++) if (p[i] !== q[i]) fail(`batch ${n}: ${label}: output ${i}: ${p[i]} vs ${q[i]}`);
  };
  same(a, ts, `${what} vs TS executor`);
  same(a, b, `${what} vs im2col + GEMM`);
  same(d, b, `${what} with the double requantization vs im2col + GEMM`);
  return { a, ts, b, d };
}

/**
 * The conv's int32 requantization tensors conv.b, conv.m, conv.s for `O` output channels of
 * `taps` taps each (|acc| reaches ~taps·255·128): ratios 2^−(log2 taps + 2..8) spread the outputs
 * over the byte range (some clamp); every fifth channel rounds ties (a power-of-two ratio, a bias
 * with its 4 low bits zero: the bml = 0 rule); one channel in ten has M0 < 0 (a fused max pooling
 * then takes the min); with `lowShift`, channel 0 has a ratio of 1/2 (final shift n' < 32, the AVX2
 * int64 shift).
 */
export function setProbeRequantization(tensors: Map<string, IntTensor>, O: number, taps: number, int: (lo: number, hi: number) => number, uniform: () => number, lowShift: boolean): void {
  const mult = new Int32Array(O), shift = new Int32Array(O), bias = new Int32Array(O);
  const spread = Math.log2(taps);
  for (let o = 0; o < O; o++) {
    const ties = o % 5 === 4;
    const ratio = o === 0 && lowShift ? 0.5 : ties ? 2 ** -Math.round(spread + int(0, 3)) : 2 ** -(spread + 2 + uniform() * 6);
    const m = quantizeMultiplier(ratio);
    mult[o] = uniform() < 0.1 ? -m.multiplier : m.multiplier;
    shift[o] = m.shift + 4;
    bias[o] = ties ? 16 * int(-2000, 2000) : int(-100000, 100000);
  }
  tensors.set('conv.b', { dtype: 'int32', shape: [O], data: bias });
  tensors.set('conv.m', { dtype: 'int32', shape: [O], data: mult });
  tensors.set('conv.s', { dtype: 'int32', shape: [O], data: shift });
}
