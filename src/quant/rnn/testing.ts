/**
 * What the QatLSTM and QatGRU tests share: random float64 tensors, the closed-form affine fake
 * quantizer (value, in-range flag and LSQ's ∂y/∂s) read from a quantizer's exported parameters,
 * nested-array views of tensors, and the mixed quantizer specs of the forward checks.
 * @internal test helper
 */
import assert from 'node:assert/strict';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Tensor, type Rng } from '../../tensor/index.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';

export const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** A float64 tensor of `shape` with values uniform in [−scale, scale). */
export function random64(shape: number[], rng: Rng, scale = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

/** One value through an affine fake quantizer: y, whether it fell inside the range, and ∂y/∂s (LSQ's). */
export type Piece = { y: number; inside: boolean; dyds: number };

/** Affine fake quantization of `v` with scale `s`, zero point `z` and range [qmin, qmax], in float64. */
export function fq(v: number, s: number, z: number, qmin: number, qmax: number): Piece {
  const u = v / s;
  const r = roundHalfEven(u) + z;
  const q = Math.min(qmax, Math.max(qmin, r));
  return { y: (q - z) * s, inside: q === r, dyds: q === r ? r - (u + z) : q - z };
}

/** A closed-form fake quantizer taking the value and its row (null: the operand stays float). */
export type Fq = ((v: number, row: number) => Piece) | null;

/** The closed-form fake quantizer of an affine quantizer's exported parameters (per row or per tensor). */
export function affineOf(quantizer: { exportQuant(): unknown } | null): Fq {
  if (!quantizer) return null;
  const e = quantizer.exportQuant() as { type: string; qparams: { scale: Float32Array; zeroPoint: Int32Array; qmin: number; qmax: number } };
  assert.equal(e.type, 'affine');
  const { scale, zeroPoint, qmin, qmax } = e.qparams;
  return (v, row) => {
    const c = scale.length === 1 ? 0 : row;
    return fq(v, scale[c]!, zeroPoint[c]!, qmin, qmax);
  };
}

/** A [rows, cols] tensor as nested arrays. */
export function rows2(t: Tensor): number[][] {
  const [r, c] = t.shape as [number, number];
  return Array.from({ length: r }, (_, i) => Array.from({ length: c }, (_, j) => t.data[i * c + j]!));
}

/** x (either layout) as time-major nested arrays. */
export function timeMajor(x: Tensor, batchFirst: boolean): number[][][] {
  const [a, b, f] = x.shape as [number, number, number];
  const [L, N] = batchFirst ? [b, a] : [a, b];
  return Array.from({ length: L }, (_, t) => Array.from({ length: N }, (_, n) => Array.from({ length: f }, (_, k) => x.data[(batchFirst ? n * b + t : t * b + n) * f + k]!)));
}

/** 4-bit LSQ weights, one scale per row. */
export const int4Row: QuantizerSpec = { kind: 'lsq', bits: 4, granularity: 'channel' };
/** 4-bit signed symmetric LSQ activations. */
export const int4Signed: QuantizerSpec = { kind: 'lsq', bits: 4, signed: true, symmetric: true };

/** Per-layer specs of the two-layer forward checks: LSQ, STE min-max and LSQ+ mixed across operands and layers. */
export const mixedTwoLayerSpecs: { readonly weight: QuantizerSpec[]; readonly input: QuantizerSpec[]; readonly hidden: QuantizerSpec[] } = {
  weight: [int4Row, { kind: 'ste', bits: 3, granularity: 'tensor' }],
  input: [{ kind: 'ste', bits: 4, signed: true, symmetric: false, observer: 'minMax' }, int4Signed],
  hidden: [int4Signed, { kind: 'lsqPlus', bits: 4, signed: true, symmetric: false }],
};
