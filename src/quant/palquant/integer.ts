/**
 * The integer form of a PalQuant layer: each parallel group is one low-bit integer conv run by the
 * runtime's GEMM kernels (gemmInt2 / gemmInt4 / gemmInt8 of src/runtime/kernels, on im2col rows),
 * with int32 accumulators. For group g and output channel o of that group:
 *
 *   acc[n, o, p] = Σ_k (qa_g[n, k, p] − za_g)·qw[o, k]          (int32)
 *   y[n, o, p]   = sa_g · sw[o] · acc[n, o, p] + b[o]
 *
 * qa_g = clamp(roundHalfEven(x/sa_g) + za_g, qmin, qmax) are the activation codes of group g (its
 * own quantizer), qw the weight codes (per output channel scale sw, zero point 0). This is the same
 * computation as the fake-quant forward, reordered: the tests check that they agree exactly.
 */
import { noGrad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Tensor } from '../../tensor/index.ts';
import { packBits } from '../core/packing.ts';
import { gemmInt2, gemmInt4, gemmInt8 } from '../../runtime/kernels/index.ts';
import type { PalQuantGeometry, PalQuantLayer } from './layers.ts';

/** Activation quantization of one parallel group. */
export interface PalQuantIntInput {
  readonly scale: number;
  readonly zeroPoint: number;
  readonly qmin: number;
  readonly qmax: number;
}

/** A lowered PalQuant layer. */
export interface PalQuantIntLayer {
  readonly kind: 'conv2d' | 'linear';
  readonly geometry: PalQuantGeometry;
  /** Container width of the weight codes, which picks the kernel: 2 (gemmInt2), 4 (gemmInt4) or 8 (gemmInt8). */
  readonly weightBits: 2 | 4 | 8;
  /** Weight codes, [G·Cout, K] row-major with K = (Cin/innerGroups)·kh·kw (OIHW order). */
  readonly weightCodes: Int8Array;
  /** Per output channel weight scale, [G·Cout]. */
  readonly weightScale: Float64Array;
  /** One entry per parallel group. */
  readonly inputs: readonly PalQuantIntInput[];
  /** [G·Cout] or null. */
  readonly bias: Float64Array | null;
}

/**
 * Lowers a trained PalQuant layer (call in eval mode, after at least one forward so that LSQ is
 * initialised). Weight codes are read back from the weight quantizer's output: code = ŵ/sw, which
 * must be an integer in range (else the quantizer is not an affine zero-point-0 one and this throws).
 */
export function lowerPalQuantLayer(layer: PalQuantLayer): PalQuantIntLayer {
  const geometry = layer.geometry();
  const G = layer.groups;
  const wq = layer.weightQuantizer.exportQuant();
  if (wq.type !== 'affine') throw new Error(`lowerPalQuantLayer: the weight quantizer exports '${wq.type}', only affine is supported`);
  const wp = wq.qparams;
  if (wp.groupSize !== null) throw new Error('lowerPalQuantLayer: group-wise weight scales are not supported');
  if (wp.zeroPoint.some((z) => z !== 0)) throw new Error('lowerPalQuantLayer: weight zero points must be 0');
  const weightBits: 2 | 4 | 8 = wp.qmin >= -2 && wp.qmax <= 1 ? 2 : wp.qmin >= -8 && wp.qmax <= 7 ? 4 : 8;
  if (wp.qmin < -128 || wp.qmax > 127) throw new Error(`lowerPalQuantLayer: weight range [${wp.qmin}, ${wp.qmax}] exceeds int8`);
  const rows = layer.weight.shape[0]!;
  const K = layer.weight.size / rows;
  const fake = noGrad(() => layer.weightQuantizer.forward(layer.weight));
  const weightScale = new Float64Array(rows);
  const weightCodes = new Int8Array(rows * K);
  for (let o = 0; o < rows; o++) {
    const s = wp.axis === null ? wp.scale[0]! : wp.scale[o]!;
    weightScale[o] = s;
    for (let k = 0; k < K; k++) {
      const v = fake.data[o * K + k]! / s;
      const q = Math.round(v);
      if (Math.abs(v - q) > 1e-3 || q < wp.qmin || q > wp.qmax) throw new Error(`lowerPalQuantLayer: weight [${o}, ${k}] / scale = ${v} is not a code in [${wp.qmin}, ${wp.qmax}]`);
      weightCodes[o * K + k] = q;
    }
  }
  const inputs = layer.inputQuantizers.map((q, g) => {
    const e = q.exportQuant();
    if (e.type !== 'affine' || e.qparams.axis !== null || e.qparams.scale.length !== 1) throw new Error(`lowerPalQuantLayer: the input quantizer of group ${g} must be affine per tensor`);
    const p = e.qparams;
    if (p.qmin < -128 || p.qmax > 255 || (p.qmin < 0 && p.qmax > 127)) throw new Error(`lowerPalQuantLayer: input range [${p.qmin}, ${p.qmax}] of group ${g} fits neither int8 nor uint8`);
    return { scale: p.scale[0]!, zeroPoint: p.zeroPoint[0]!, qmin: p.qmin, qmax: p.qmax };
  });
  if (inputs.length !== G) throw new Error(`lowerPalQuantLayer: ${inputs.length} input quantizers for ${G} groups`);
  const bias = layer.bias ? Float64Array.from(layer.bias.data) : null;
  return { kind: layer.kind, geometry, weightBits, weightCodes, weightScale, inputs, bias };
}

/** Activation codes of x [N, G·Cin, H, W] (or [N, G·in]), group by group, as the fake-quant forward rounds. */
export function quantizePalQuantInput(int: PalQuantIntLayer, x: Tensor): Int32Array {
  const G = int.geometry.groups;
  const perGroup = x.size / x.shape[0]! / G;
  const codes = new Int32Array(x.size);
  for (let i = 0; i < x.size; i++) {
    const g = Math.floor(i / perGroup) % G;
    const p = int.inputs[g]!;
    codes[i] = Math.min(p.qmax, Math.max(p.qmin, roundHalfEven(x.data[i]! / p.scale) + p.zeroPoint));
  }
  return codes;
}

/** Packs rows of signed codes for gemmInt2 / gemmInt4 (each row ceil(K·bits/8) bytes, first element lowest). */
function packRows(codes: Int8Array, rows: number, K: number, bits: 2 | 4): Uint8Array {
  const rowBytes = Math.ceil((K * bits) / 8);
  const out = new Uint8Array(rows * rowBytes);
  for (let r = 0; r < rows; r++) out.set(packBits(codes.subarray(r * K, (r + 1) * K), bits, true), r * rowBytes);
  return out;
}

/**
 * The int32 accumulators of the layer on activation codes of shape `inShape` ([N, G·Cin, H, W],
 * or [N, G·in] for linear), one GEMM per conv group on im2col rows; returns acc [N, G·Cout, OH, OW]
 * (row-major) and its shape.
 */
export function palQuantAccumulators(int: PalQuantIntLayer, codes: Int32Array, inShape: readonly number[]): { acc: Int32Array; shape: number[] } {
  const geo = int.geometry;
  const [N] = inShape as [number];
  const H = inShape.length === 4 ? inShape[2]! : 1;
  const W = inShape.length === 4 ? inShape[3]! : 1;
  const G = geo.groups;
  const convGroups = G * geo.innerGroups;
  const cin = (geo.inChannels * G) / convGroups;
  const cout = (geo.outChannels * G) / convGroups;
  const [kh, kw] = geo.kernelSize;
  const [sh, sw] = geo.stride;
  const [ph, pw] = geo.padding;
  const [dh, dw] = geo.dilation;
  const OH = Math.floor((H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const OW = Math.floor((W + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  if (inShape[1] !== geo.inChannels * G || OH < 1 || OW < 1) throw new Error(`palQuantAccumulators: input [${inShape.join(', ')}] does not fit the layer`);
  const K = cin * kh * kw;
  const M = N * OH * OW;
  const Ctot = geo.inChannels * G;
  const Otot = geo.outChannels * G;
  const acc = new Int32Array(N * Otot * OH * OW);
  for (let cg = 0; cg < convGroups; cg++) {
    const input = int.inputs[Math.floor(cg / geo.innerGroups)]!;
    const signed = input.qmin < 0;
    const rowsA = signed ? new Int8Array(M * K) : new Uint8Array(M * K);
    for (let n = 0; n < N; n++) {
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++) {
          const m = (n * OH + oy) * OW + ox;
          for (let ci = 0; ci < cin; ci++) {
            const c = cg * cin + ci;
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * sh - ph + ky * dh;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * sw - pw + kx * dw;
                const inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                // Padding is real 0, i.e. the zero point's code.
                rowsA[m * K + (ci * kh + ky) * kw + kx] = inside ? codes[((n * Ctot + c) * H + iy) * W + ix]! : input.zeroPoint;
              }
            }
          }
        }
      }
    }
    const w = int.weightCodes.subarray(cg * cout * K, (cg + 1) * cout * K);
    const c = new Int32Array(M * cout);
    if (int.weightBits === 2) gemmInt2(M, cout, K, rowsA, input.zeroPoint, packRows(w, cout, K, 2), c);
    else if (int.weightBits === 4) gemmInt4(M, cout, K, rowsA, input.zeroPoint, packRows(w, cout, K, 4), c);
    else gemmInt8(M, cout, K, rowsA, input.zeroPoint, Int8Array.from(w), c);
    for (let m = 0; m < M; m++) {
      const n = Math.floor(m / (OH * OW));
      const p = m % (OH * OW);
      for (let o = 0; o < cout; o++) acc[(n * Otot + cg * cout + o) * OH * OW + p] = c[m * cout + o]!;
    }
  }
  const shape = inShape.length === 4 ? [N, Otot, OH, OW] : [N, Otot];
  return { acc, shape };
}

/**
 * The layer computed in integers: x -> codes -> int32 accumulators (runtime GEMM kernels) ->
 * y = sa_g·sw[o]·acc + b[o], returned as a float64 tensor with the layer's output shape.
 */
export function runPalQuantInteger(int: PalQuantIntLayer, x: Tensor): Tensor {
  const codes = quantizePalQuantInput(int, x);
  const { acc, shape } = palQuantAccumulators(int, codes, x.shape);
  const geo = int.geometry;
  const Otot = geo.outChannels * geo.groups;
  const spatial = shape.length === 4 ? shape[2]! * shape[3]! : 1;
  const out = new Float64Array(acc.length);
  for (let i = 0; i < acc.length; i++) {
    const o = Math.floor(i / spatial) % Otot;
    const g = Math.floor(o / geo.outChannels);
    out[i] = int.inputs[g]!.scale * int.weightScale[o]! * acc[i]! + (int.bias ? int.bias[o]! : 0);
  }
  return new Tensor(out, shape);
}
