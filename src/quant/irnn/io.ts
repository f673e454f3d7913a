/**
 * IntLSTM ⇄ file. The container is the .lowbit format (src/format/lowbit.ts: safetensors-compatible,
 * header and offsets validated by its reader, written atomically), with its own graph and
 * metadata so that the IntModel reader refuses it and this reader refuses IntModel files:
 *   metadata.irnn = { format: 'lowbit-irnn-lstm', version: 1 }
 *   graph = [{ op: 'irnn.lstm', inputSize, hiddenSize, inputScale, hiddenScale, outputMultiplier,
 *              outputShift, sigmoid: PwlFormat, tanh: PwlFormat, tensors: {role: name} }]
 *   tensors: weight_ih I8 [4H, I], weight_hh I8 [4H, H], multiplier_ih, shift_ih, multiplier_hh,
 *            shift_hh, bias I32 [4H], sigmoid.knots I32 [N+1], sigmoid.values, sigmoid.slopes I32 [N]
 *            (same for tanh).
 * After the container's checks, `intLSTMFromLowbit` validates every field, dtype, shape and value
 * range the runtime relies on and throws `IrnnFormatError` naming the first problem.
 */
import { readLowbit, writeLowbit, type LowbitModel, type LowbitTensor } from '../../format/lowbit.ts';
import { ACT_FRAC, GATE_FRAC, WIDE } from './formats.ts';
import { IntLSTM, type IntLSTMParams } from './intlstm.ts';
import { intPwlProblems, type IntPwl } from './pwl.ts';

const FORMAT = 'lowbit-irnn-lstm';
const VERSION = 1;
const OP = 'irnn.lstm';
/** Largest inputSize / hiddenSize accepted from a file. */
export const MAX_IRNN_SIZE = 1 << 16;
/** Largest PWL segment count accepted from a file. */
export const MAX_PWL_SEGMENTS = 256;

export type IrnnFormatErrorCode = 'not-irnn' | 'bad-graph' | 'bad-field' | 'bad-tensor' | 'bad-table';

/** A structurally valid .lowbit file whose iRNN content is malformed. */
export class IrnnFormatError extends Error {
  override name = 'IrnnFormatError';
  readonly code: IrnnFormatErrorCode;
  constructor(code: IrnnFormatErrorCode, message: string) {
    super(`iRNN LSTM file: ${message}`);
    this.code = code;
  }
}

const ROW_TENSORS = ['multiplier_ih', 'shift_ih', 'multiplier_hh', 'shift_hh', 'bias'] as const;
const TABLE_FIELDS = ['inputFrac', 'outputFrac', 'slopeFrac', 'outputMin', 'outputMax'] as const;

function tableFormat(t: IntPwl): Record<string, number> {
  return Object.fromEntries(TABLE_FIELDS.map((f) => [f, t[f]]));
}

/** The .lowbit model of an IntLSTM. */
export function intLSTMToLowbit(model: IntLSTM): LowbitModel {
  const p = model.params;
  const rows = 4 * p.hiddenSize;
  const tensors: Record<string, LowbitTensor> = {
    weight_ih: { dtype: 'int8', shape: [rows, p.inputSize], data: p.weightIh },
    weight_hh: { dtype: 'int8', shape: [rows, p.hiddenSize], data: p.weightHh },
    multiplier_ih: { dtype: 'int32', shape: [rows], data: p.multiplierIh },
    shift_ih: { dtype: 'int32', shape: [rows], data: p.shiftIh },
    multiplier_hh: { dtype: 'int32', shape: [rows], data: p.multiplierHh },
    shift_hh: { dtype: 'int32', shape: [rows], data: p.shiftHh },
    bias: { dtype: 'int32', shape: [rows], data: p.bias },
  };
  for (const name of ['sigmoid', 'tanh'] as const) {
    const t = p[name];
    tensors[`${name}.knots`] = { dtype: 'int32', shape: [t.knots.length], data: t.knots };
    tensors[`${name}.values`] = { dtype: 'int32', shape: [t.values.length], data: t.values };
    tensors[`${name}.slopes`] = { dtype: 'int32', shape: [t.slopes.length], data: t.slopes };
  }
  const node = {
    op: OP,
    inputSize: p.inputSize, hiddenSize: p.hiddenSize, inputScale: p.inputScale, hiddenScale: p.hiddenScale,
    outputMultiplier: p.outputMultiplier, outputShift: p.outputShift,
    sigmoid: tableFormat(p.sigmoid), tanh: tableFormat(p.tanh),
    tensors: Object.fromEntries(Object.keys(tensors).map((k) => [k, k])),
  };
  return { graph: [node], tensors, metadata: { irnn: { format: FORMAT, version: VERSION } } };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function integerField(node: Record<string, unknown>, name: string, lo: number, hi: number): number {
  const v = node[name];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new IrnnFormatError('bad-field', `${name} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  return v;
}

function scaleField(node: Record<string, unknown>, name: string): number {
  const v = node[name];
  if (typeof v !== 'number' || !Number.isFinite(v) || !(v > 0) || v > 1e6 || v < 1e-30) throw new IrnnFormatError('bad-field', `${name} must be a positive finite scale, got ${JSON.stringify(v)}`);
  return v;
}

function checkMultiplier(what: string, multiplier: number, shift: number): void {
  const m = Math.abs(multiplier);
  if (!(multiplier === 0 || (m >= 2 ** 30 && m < 2 ** 31))) throw new IrnnFormatError('bad-field', `${what}: multiplier ${multiplier} is not 0 or a Q31 mantissa (2^30 ≤ |M0| < 2^31)`);
  if (!Number.isInteger(shift) || shift < -8 || shift > 62) throw new IrnnFormatError('bad-field', `${what}: shift ${shift} is outside [−8, 62]`);
}

function tensorOf<D extends 'int8' | 'int32'>(file: LowbitModel, name: string, dtype: D, shape: readonly number[]): D extends 'int8' ? Int8Array : Int32Array {
  const t = file.tensors[name];
  if (!t) throw new IrnnFormatError('bad-tensor', `tensor '${name}' is missing`);
  if (t.dtype !== dtype) throw new IrnnFormatError('bad-tensor', `tensor '${name}' has dtype ${t.dtype}, expected ${dtype}`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new IrnnFormatError('bad-tensor', `tensor '${name}' has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
  const ok = dtype === 'int8' ? t.data instanceof Int8Array : t.data instanceof Int32Array;
  if (!ok) throw new IrnnFormatError('bad-tensor', `tensor '${name}' is not stored as ${dtype === 'int8' ? 'I8' : 'I32'}`);
  return t.data as D extends 'int8' ? Int8Array : Int32Array;
}

function readTable(file: LowbitModel, node: Record<string, unknown>, name: 'sigmoid' | 'tanh'): IntPwl {
  const format = node[name];
  if (!isObject(format)) throw new IrnnFormatError('bad-field', `${name} must be an object with the table's fixed-point format`);
  const knotsMeta = file.tensors[`${name}.knots`];
  const segments = knotsMeta ? (knotsMeta.shape[0] ?? 0) - 1 : 0;
  if (!knotsMeta || knotsMeta.shape.length !== 1 || segments < 1 || segments > MAX_PWL_SEGMENTS) {
    throw new IrnnFormatError('bad-table', `${name}.knots must be a 1-D tensor of 2 to ${MAX_PWL_SEGMENTS + 1} knots`);
  }
  const table: IntPwl = {
    inputFrac: integerField(format, 'inputFrac', GATE_FRAC, GATE_FRAC),
    outputFrac: integerField(format, 'outputFrac', ACT_FRAC, ACT_FRAC),
    slopeFrac: integerField(format, 'slopeFrac', 0, 24),
    outputMin: integerField(format, 'outputMin', -32767, 32767),
    outputMax: integerField(format, 'outputMax', -32767, 32767),
    knots: tensorOf(file, `${name}.knots`, 'int32', [segments + 1]),
    values: tensorOf(file, `${name}.values`, 'int32', [segments]),
    slopes: tensorOf(file, `${name}.slopes`, 'int32', [segments]),
  };
  const problems = intPwlProblems(table);
  if (problems.length > 0) throw new IrnnFormatError('bad-table', `${name}: ${problems[0]}`);
  return table;
}

/** The IntLSTM of a decoded .lowbit model, every field validated (IrnnFormatError). */
export function intLSTMFromLowbit(file: LowbitModel): IntLSTM {
  const meta = file.metadata as Record<string, unknown> | undefined;
  const header = meta?.irnn;
  if (!isObject(header) || header.format !== FORMAT || header.version !== VERSION) {
    throw new IrnnFormatError('not-irnn', `metadata.irnn is ${JSON.stringify(header)}, expected { format: '${FORMAT}', version: ${VERSION} }`);
  }
  if (file.graph.length !== 1 || file.graph[0]!.op !== OP) throw new IrnnFormatError('bad-graph', `the graph must be one '${OP}' node, got ${file.graph.length} node(s)`);
  const node = file.graph[0] as unknown as Record<string, unknown>;
  const inputSize = integerField(node, 'inputSize', 1, MAX_IRNN_SIZE);
  const hiddenSize = integerField(node, 'hiddenSize', 1, MAX_IRNN_SIZE);
  const rows = 4 * hiddenSize;
  const inputScale = scaleField(node, 'inputScale');
  const hiddenScale = scaleField(node, 'hiddenScale');
  const outputMultiplier = integerField(node, 'outputMultiplier', -(2 ** 31), 2 ** 31 - 1);
  const outputShift = integerField(node, 'outputShift', -8, 62);
  checkMultiplier('output', outputMultiplier, outputShift);
  const [multiplierIh, shiftIh, multiplierHh, shiftHh, bias] = ROW_TENSORS.map((n) => tensorOf(file, n, 'int32', [rows])) as [Int32Array, Int32Array, Int32Array, Int32Array, Int32Array];
  for (let r = 0; r < rows; r++) {
    checkMultiplier(`row ${r} (ih)`, multiplierIh[r]!, shiftIh[r]!);
    checkMultiplier(`row ${r} (hh)`, multiplierHh[r]!, shiftHh[r]!);
    if (Math.abs(bias[r]!) > WIDE) throw new IrnnFormatError('bad-field', `bias ${bias[r]} of row ${r} is outside ±2^24`);
  }
  const params: IntLSTMParams = {
    inputSize, hiddenSize, inputScale, hiddenScale,
    weightIh: tensorOf(file, 'weight_ih', 'int8', [rows, inputSize]),
    weightHh: tensorOf(file, 'weight_hh', 'int8', [rows, hiddenSize]),
    multiplierIh, shiftIh, multiplierHh, shiftHh, bias, outputMultiplier, outputShift,
    sigmoid: readTable(file, node, 'sigmoid'),
    tanh: readTable(file, node, 'tanh'),
  };
  return new IntLSTM(params);
}

/** Writes an IntLSTM (atomically, through the .lowbit writer); returns the bytes written. */
export function saveIntLSTM(path: string, model: IntLSTM): number {
  return writeLowbit(path, intLSTMToLowbit(model));
}

/** Reads and validates an IntLSTM from a file path or bytes (LowbitFormatError for the container, IrnnFormatError for the content). */
export function loadIntLSTM(file: string | Uint8Array): IntLSTM {
  return intLSTMFromLowbit(readLowbit(file));
}
