/**
 * Test helper of the native conv tests (conv3x3-native, conv-direct-native): the probe IntModel
 * quantize → conv2d (requantizing) → optional 2x2 max pool → flatten → dequantizing linear head.
 * The head is the identity (scale 1, bias 0) when the conv output has at most `identityMax` values
 * per sample, so the logits are the conv's integers minus the zero point; else a `projectionRows`-row
 * projection with weights in {-1, 0, 1} (exact float sums).
 * @internal test helper
 */
import { IntModel, packWeightTensor, type IntGraph, type IntNode, type IntTensor } from './intmodel.ts';

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
