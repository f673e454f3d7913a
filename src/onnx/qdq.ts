/**
 * Quantizer → ONNX integers shared by the sequence exporters (rnn.ts, transformer.ts): the int8
 * integers of a quantized weight, and the QuantizeLinear → (Clip) → DequantizeLinear pair of a
 * per-tensor activation quantizer.
 * @internal
 */
import { noGrad } from '../autograd/engine.ts';
import { roundHalfEven } from '../backend/reference/elementwise.ts';
import type { Quantizer } from '../quant/quantizers/quantizer.ts';
import type { Tensor } from '../tensor/index.ts';
import type { NamedGraph } from './graph.ts';
import { OnnxDataType, OnnxError } from './proto.ts';

/** Integers of a quantized weight as the quantizer's eval output gives them. @internal */
export interface QuantizedWeight {
  /** Row-major, same shape as the float weight. */
  readonly values: Int32Array;
  /** One per row (axis 0) or one for the tensor. */
  readonly scale: Float32Array;
  readonly zeroPoint: Int32Array;
  readonly perRow: boolean;
  readonly bits: number;
  /** max |(q − z)·s − ŵ| in float32. */
  readonly deviation: number;
}

/**
 * Reads the integers of `weight` [rows, cols] under `q`: ŵ = q.forward(w) in eval mode, then
 * q = round(ŵ/s) + z with the exported scale and zero point; refuses non-affine or per-group
 * formats and values outside int8. @internal
 */
export function quantizeWeight(q: Quantizer, weight: Tensor, what: string): QuantizedWeight {
  const exported = q.exportQuant();
  if (exported.type !== 'affine') throw new OnnxError('unsupported-op', `ONNX export: ${what} uses a ${exported.type} quantizer ('${q.spec.kind}'); only affine (uniform) weight formats are exported`);
  const qp = exported.qparams;
  if (qp.groupSize !== null) throw new OnnxError('unsupported-op', `ONNX export: ${what} is quantized per group (groupSize ${qp.groupSize}); only per-row or per-tensor weights are exported`);
  if (qp.axis !== null && qp.axis !== 0) throw new OnnxError('unsupported-op', `ONNX export: ${what} is quantized along axis ${qp.axis}; only per-row (axis 0) or per-tensor weights are exported`);
  if (qp.qmin < -128 || qp.qmax > 127) throw new OnnxError('unsupported-op', `ONNX export: ${what} has integer range [${qp.qmin}, ${qp.qmax}], wider than int8`);
  const [rows, cols] = weight.shape as [number, number];
  const hat = noGrad(() => q.forward(weight)).data;
  const perRow = qp.axis === 0;
  if (perRow && qp.scale.length !== rows) throw new OnnxError('bad-input', `ONNX export: ${what} has ${qp.scale.length} scales for ${rows} rows`);
  const values = new Int32Array(rows * cols);
  let deviation = 0;
  for (let r = 0; r < rows; r++) {
    const s = qp.scale[perRow ? r : 0]!;
    const z = qp.zeroPoint[perRow ? r : 0]!;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const v = Math.min(qp.qmax, Math.max(qp.qmin, roundHalfEven(hat[i]! / s) + z));
      values[i] = v;
      deviation = Math.max(deviation, Math.abs(Math.fround((v - z) * s) - hat[i]!));
    }
  }
  const scale = perRow ? Float32Array.from(qp.scale) : Float32Array.of(qp.scale[0]!);
  const zeroPoint = perRow ? Int32Array.from(qp.zeroPoint) : Int32Array.of(qp.zeroPoint[0]!);
  return { values, scale, zeroPoint, perRow, bits: qp.bits, deviation };
}

/** The parameters of a per-tensor affine activation quantizer, checked to fit int8 / uint8. @internal */
export interface ActivationQdqParams {
  readonly scale: number;
  readonly zeroPoint: number;
  readonly qmin: number;
  readonly qmax: number;
  /** INT8 when qmin < 0, else UINT8. */
  readonly dataType: number;
  /** Whether [qmin, qmax] is narrower than the container's range (a Clip is needed). */
  readonly narrower: boolean;
}

/** Reads and checks `q`'s exported parameters; throws an OnnxError naming `label` otherwise. @internal */
export function activationQdqParams(q: Quantizer, label: string): ActivationQdqParams {
  const exported = q.exportQuant();
  if (exported.type !== 'affine' || exported.qparams.axis !== null || exported.qparams.groupSize !== null) {
    throw new OnnxError('unsupported-op', `ONNX export: ${label} uses quantizer '${q.spec.kind}' that is not affine per tensor`);
  }
  const { scale, zeroPoint, qmin, qmax } = exported.qparams;
  const signed = qmin < 0;
  const [lo, hi] = signed ? [-128, 127] : [0, 255];
  if (qmin < lo || qmax > hi) throw new OnnxError('unsupported-op', `ONNX export: ${label} has integer range [${qmin}, ${qmax}], wider than ${signed ? 'int8' : 'uint8'}`);
  return { scale: scale[0]!, zeroPoint: zeroPoint[0]!, qmin, qmax, dataType: signed ? OnnxDataType.INT8 : OnnxDataType.UINT8, narrower: qmin !== lo || qmax !== hi };
}

/** QuantizeLinear → (Clip) → DequantizeLinear of `x` with `p`; returns the dequantized value. @internal */
export function emitActivationQdqNodes(g: NamedGraph, x: string, p: ActivationQdqParams, label: string): string {
  const s = g.typedScalar(p.scale, OnnxDataType.FLOAT);
  const z = g.typedScalar(p.zeroPoint, p.dataType);
  let v = g.singleOutput('QuantizeLinear', [x, s, z], `${label}_q`);
  if (p.narrower) v = g.singleOutput('Clip', [v, g.typedScalar(p.qmin, p.dataType), g.typedScalar(p.qmax, p.dataType)], `${label}_clip`);
  return g.singleOutput('DequantizeLinear', [v, s, z], `${label}_dq`);
}
