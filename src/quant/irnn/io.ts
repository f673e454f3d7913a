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
 * Version 2 (written only when the model has layer norms or an attention; version 1 files load
 * as before): the lstm node may carry
 *   layerNorm = { ih: LnFields, hh: LnFields, cell: LnFields }, LnFields = { epsCode, multiplier,
 *               shift, outMin, outMax }, tensors ln_<ih|hh|cell>.gamma, .beta I32 [4H, 4H, H]
 * and a second node may follow:
 *   { op: 'irnn.attention', size (= hiddenSize), inputScale (= hiddenScale), outputScale,
 *     scoreMultiplier, scoreShift, outputMultiplier, outputShift }, tensors attention.weight I8
 *     [D, D], attention.multiplier, attention.shift I32 [D].
 * Version 3 (written only when the weights have fewer than 8 bits; versions 1 and 2 load as before):
 * everything version 2 may hold, plus `weightBits` (2..8) on the lstm node, and weight_ih /
 * weight_hh stored packed as `weightStorage(weightBits)`: int4 (two per byte, low nibble first)
 * for 3..4 bits, int2 (four per byte) for 2 bits, I8 for 5..7 bits; every code must lie in
 * ±(2^(b−1)−1).
 * After the container's checks, `irnnFromLowbit` validates every field, dtype, shape and value
 * range the runtime relies on and throws `IrnnFormatError` naming the first problem.
 */
import { packedByteLength, packLowbitValues, readLowbit, unpackLowbitValues, writeLowbit, type LowbitModel, type LowbitNode, type LowbitTensor } from '../../format/lowbit.ts';
import { IntAttention } from './attention.ts';
import { ACT_FRAC, GATE_FRAC, INT16_MAX, INT16_MIN, MAX_WEIGHT_BITS, MIN_WEIGHT_BITS, WIDE, weightMax, weightStorage } from './formats.ts';
import { IntLSTM, type IntLSTMLayerNorm, type IntLSTMParams } from './intlstm.ts';
import { GAMMA_MAX, MAX_EPS_CODE, type IntLayerNormParams } from './layernorm.ts';
import { intPwlProblems, type IntPwl } from './pwl.ts';

const FORMAT = 'lowbit-irnn-lstm';
/** Version 1: the plain LSTM; 2: with layer norms and/or an attention node. */
const VERSION = 1;
const VERSION_LN_ATTENTION = 2;
/** Version 3: weights of fewer than 8 bits, packed. */
const VERSION_PACKED = 3;
const VERSIONS: readonly number[] = [VERSION, VERSION_LN_ATTENTION, VERSION_PACKED];
const OP = 'irnn.lstm';
const ATTENTION_OP = 'irnn.attention';
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

/** The format fields of a PWL table as the graph node records them. @internal */
export function tableFormat(t: IntPwl): Record<string, number> {
  return Object.fromEntries(TABLE_FIELDS.map((f) => [f, t[f]]));
}

/**
 * The tensors of an integer recurrent layer's weights ([rows, I], [rows, H]; int8, or packed int4 /
 * int2 below 5 bits) and per-row int32 parameters, in file order. A weight code outside
 * ±(2^(b−1)−1) throws a RangeError naming `owner`. @internal
 */
export function recurrentWeightTensors(owner: string, rows: number, p: Pick<IntLSTMParams, 'inputSize' | 'hiddenSize' | 'weightBits' | 'weightIh' | 'weightHh' | 'multiplierIh' | 'shiftIh' | 'multiplierHh' | 'shiftHh' | 'bias'>): Record<string, LowbitTensor> {
  const bits = p.weightBits ?? 8;
  const storage = weightStorage(bits);
  const top = weightMax(bits);
  const weight = (data: Int8Array, cols: number): LowbitTensor => {
    for (let i = 0; i < data.length; i++) {
      if (Math.abs(data[i]!) > top) throw new RangeError(`${owner}: weight code ${data[i]} at ${i} is outside ±${top} (weightBits ${bits})`);
    }
    return storage === 'int8' ? { dtype: 'int8', shape: [rows, cols], data } : packLowbitValues(storage, [rows, cols], data);
  };
  return {
    weight_ih: weight(p.weightIh, p.inputSize),
    weight_hh: weight(p.weightHh, p.hiddenSize),
    multiplier_ih: { dtype: 'int32', shape: [rows], data: p.multiplierIh },
    shift_ih: { dtype: 'int32', shape: [rows], data: p.shiftIh },
    multiplier_hh: { dtype: 'int32', shape: [rows], data: p.multiplierHh },
    shift_hh: { dtype: 'int32', shape: [rows], data: p.shiftHh },
    bias: { dtype: 'int32', shape: [rows], data: p.bias },
  };
}

/** Adds the sigmoid and tanh tables' knots, values and slopes (int32) to `tensors`. @internal */
export function addTableTensors(tensors: Record<string, LowbitTensor>, tables: { sigmoid: IntPwl; tanh: IntPwl }): void {
  for (const name of ['sigmoid', 'tanh'] as const) {
    const t = tables[name];
    tensors[`${name}.knots`] = { dtype: 'int32', shape: [t.knots.length], data: t.knots };
    tensors[`${name}.values`] = { dtype: 'int32', shape: [t.values.length], data: t.values };
    tensors[`${name}.slopes`] = { dtype: 'int32', shape: [t.slopes.length], data: t.slopes };
  }
}

const LN_FIELDS = ['epsCode', 'multiplier', 'shift', 'outMin', 'outMax'] as const;
const LN_NAMES = ['ih', 'hh', 'cell'] as const;

/** The .lowbit model of an IntLSTM, and of the attention over its outputs when given (version 2 then, or with layer norms). */
export function intLSTMToLowbit(model: IntLSTM, attention?: IntAttention): LowbitModel {
  const p = model.params;
  const rows = 4 * p.hiddenSize;
  const bits = p.weightBits ?? 8;
  const tensors = recurrentWeightTensors('intLSTMToLowbit', rows, p);
  addTableTensors(tensors, p);
  const lstmTensors = Object.keys(tensors);
  let layerNorm: Record<string, Record<string, number>> | undefined;
  if (p.layerNorm) {
    layerNorm = {};
    for (const name of LN_NAMES) {
      const ln = p.layerNorm[name];
      layerNorm[name] = Object.fromEntries(LN_FIELDS.map((f) => [f, ln[f]]));
      tensors[`ln_${name}.gamma`] = { dtype: 'int32', shape: [ln.size], data: ln.gamma };
      tensors[`ln_${name}.beta`] = { dtype: 'int32', shape: [ln.size], data: ln.beta };
      lstmTensors.push(`ln_${name}.gamma`, `ln_${name}.beta`);
    }
  }
  const node = {
    op: OP,
    inputSize: p.inputSize, hiddenSize: p.hiddenSize, inputScale: p.inputScale, hiddenScale: p.hiddenScale,
    outputMultiplier: p.outputMultiplier, outputShift: p.outputShift,
    ...(bits < 8 ? { weightBits: bits } : {}),
    sigmoid: tableFormat(p.sigmoid), tanh: tableFormat(p.tanh),
    ...(layerNorm ? { layerNorm } : {}),
    tensors: Object.fromEntries(lstmTensors.map((k) => [k, k])),
  };
  const graph: LowbitNode[] = [node];
  if (attention) {
    const a = attention.params;
    if (a.size !== p.hiddenSize || a.inputScale !== p.hiddenScale) {
      throw new RangeError(`intLSTMToLowbit: the attention must read the LSTM's h (size ${p.hiddenSize}, scale ${p.hiddenScale}), got size ${a.size}, input scale ${a.inputScale}`);
    }
    tensors['attention.weight'] = { dtype: 'int8', shape: [a.size, a.size], data: a.weight };
    tensors['attention.multiplier'] = { dtype: 'int32', shape: [a.size], data: a.multiplier };
    tensors['attention.shift'] = { dtype: 'int32', shape: [a.size], data: a.shift };
    graph.push({
      op: ATTENTION_OP, size: a.size, inputScale: a.inputScale, outputScale: a.outputScale,
      scoreMultiplier: a.scoreMultiplier, scoreShift: a.scoreShift, outputMultiplier: a.outputMultiplier, outputShift: a.outputShift,
      tensors: { weight: 'attention.weight', multiplier: 'attention.multiplier', shift: 'attention.shift' },
    });
  }
  const version = bits < 8 ? VERSION_PACKED : p.layerNorm || attention ? VERSION_LN_ATTENTION : VERSION;
  return { graph, tensors, metadata: { irnn: { format: FORMAT, version } } };
}

/** @internal */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** @internal */
export function integerField(node: Record<string, unknown>, name: string, lo: number, hi: number): number {
  const v = node[name];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new IrnnFormatError('bad-field', `${name} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  return v;
}

/** @internal */
export function scaleField(node: Record<string, unknown>, name: string): number {
  const v = node[name];
  if (typeof v !== 'number' || !Number.isFinite(v) || !(v > 0) || v > 1e6 || v < 1e-30) throw new IrnnFormatError('bad-field', `${name} must be a positive finite scale, got ${JSON.stringify(v)}`);
  return v;
}

/** @internal */
export function checkMultiplier(what: string, multiplier: number, shift: number): void {
  const m = Math.abs(multiplier);
  if (!(multiplier === 0 || (m >= 2 ** 30 && m < 2 ** 31))) throw new IrnnFormatError('bad-field', `${what}: multiplier ${multiplier} is not 0 or a Q31 mantissa (2^30 ≤ |M0| < 2^31)`);
  if (!Number.isInteger(shift) || shift < -8 || shift > 62) throw new IrnnFormatError('bad-field', `${what}: shift ${shift} is outside [−8, 62]`);
}

/** @internal */
export function tensorOf<D extends 'int8' | 'int32'>(file: LowbitModel, name: string, dtype: D, shape: readonly number[]): D extends 'int8' ? Int8Array : Int32Array {
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

/** A weight tensor [rows, cols] stored as `weightStorage(bits)`, unpacked to int8 codes, each checked to lie in ±(2^(b−1)−1). */
/** @internal */
export function readWeight(file: LowbitModel, name: string, rows: number, cols: number, bits: number): Int8Array {
  const storage = weightStorage(bits);
  const top = weightMax(bits);
  let codes: ArrayLike<number>;
  if (storage === 'int8') codes = tensorOf(file, name, 'int8', [rows, cols]);
  else {
    const t = file.tensors[name];
    if (!t) throw new IrnnFormatError('bad-tensor', `tensor '${name}' is missing`);
    if (t.dtype !== storage) throw new IrnnFormatError('bad-tensor', `tensor '${name}' has dtype ${t.dtype}, expected ${storage} (weightBits ${bits})`);
    if (t.shape.length !== 2 || t.shape[0] !== rows || t.shape[1] !== cols) {
      throw new IrnnFormatError('bad-tensor', `tensor '${name}' has shape [${t.shape.join(', ')}], expected [${rows}, ${cols}]`);
    }
    const bytes = packedByteLength(storage, [rows, cols]);
    if (!(t.data instanceof Uint8Array) || t.data.length !== bytes) throw new IrnnFormatError('bad-tensor', `tensor '${name}' must hold ${bytes} packed bytes, got ${t.data.length}`);
    codes = unpackLowbitValues(t);
  }
  const out = new Int8Array(rows * cols);
  for (let i = 0; i < out.length; i++) {
    const v = codes[i]!;
    if (v > top || v < -top) throw new IrnnFormatError('bad-tensor', `tensor '${name}': code ${v} at ${i} is outside ±${top} (weightBits ${bits})`);
    out[i] = v;
  }
  return out;
}

/** @internal */
export function readTable(file: LowbitModel, node: Record<string, unknown>, name: 'sigmoid' | 'tanh'): IntPwl {
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

function readLayerNorm(file: LowbitModel, fields: unknown, name: typeof LN_NAMES[number], size: number): IntLayerNormParams {
  if (!isObject(fields)) throw new IrnnFormatError('bad-field', `layerNorm.${name} must be an object with the layer norm's integer fields`);
  const [lo, hi] = name === 'cell' ? [INT16_MIN, INT16_MAX] : [-WIDE, WIDE];
  const ln = {
    size,
    epsCode: integerField(fields, 'epsCode', 0, MAX_EPS_CODE),
    multiplier: integerField(fields, 'multiplier', -(2 ** 31), 2 ** 31 - 1),
    shift: integerField(fields, 'shift', -8, 62),
    outMin: integerField(fields, 'outMin', lo, lo),
    outMax: integerField(fields, 'outMax', hi, hi),
    gamma: tensorOf(file, `ln_${name}.gamma`, 'int32', [size]),
    beta: tensorOf(file, `ln_${name}.beta`, 'int32', [size]),
  };
  checkMultiplier(`layerNorm.${name}`, ln.multiplier, ln.shift);
  for (let i = 0; i < size; i++) {
    if (Math.abs(ln.gamma[i]!) > GAMMA_MAX) throw new IrnnFormatError('bad-field', `ln_${name}.gamma[${i}] = ${ln.gamma[i]} is outside ±${GAMMA_MAX}`);
  }
  return ln;
}

function readAttention(file: LowbitModel, node: Record<string, unknown>, hiddenSize: number, hiddenScale: number): IntAttention {
  const size = integerField(node, 'size', hiddenSize, hiddenSize);
  const inputScale = scaleField(node, 'inputScale');
  if (inputScale !== hiddenScale) throw new IrnnFormatError('bad-field', `attention inputScale ${inputScale} differs from the LSTM's hiddenScale ${hiddenScale} (the attention reads h)`);
  const multiplier = tensorOf(file, 'attention.multiplier', 'int32', [size]);
  const shift = tensorOf(file, 'attention.shift', 'int32', [size]);
  for (let r = 0; r < size; r++) checkMultiplier(`attention row ${r}`, multiplier[r]!, shift[r]!);
  const params = {
    size, inputScale, outputScale: scaleField(node, 'outputScale'),
    weight: tensorOf(file, 'attention.weight', 'int8', [size, size]), multiplier, shift,
    scoreMultiplier: integerField(node, 'scoreMultiplier', -(2 ** 31), 2 ** 31 - 1),
    scoreShift: integerField(node, 'scoreShift', -8, 62),
    outputMultiplier: integerField(node, 'outputMultiplier', -(2 ** 31), 2 ** 31 - 1),
    outputShift: integerField(node, 'outputShift', -8, 62),
  };
  checkMultiplier('attention score', params.scoreMultiplier, params.scoreShift);
  checkMultiplier('attention output', params.outputMultiplier, params.outputShift);
  return new IntAttention(params);
}

/** What an iRNN file holds: the LSTM and, from version 2, an optional attention over its outputs. */
export interface IrnnModel {
  readonly lstm: IntLSTM;
  readonly attention: IntAttention | null;
}

/** The iRNN model of a decoded .lowbit model, every field validated (IrnnFormatError). */
export function irnnFromLowbit(file: LowbitModel): IrnnModel {
  const meta = file.metadata as Record<string, unknown> | undefined;
  const header = meta?.irnn;
  if (!isObject(header) || header.format !== FORMAT || !VERSIONS.includes(header.version as number)) {
    throw new IrnnFormatError('not-irnn', `metadata.irnn is ${JSON.stringify(header)}, expected { format: '${FORMAT}', version: ${VERSIONS.join(', ')} }`);
  }
  const v2 = header.version === VERSION_LN_ATTENTION || header.version === VERSION_PACKED;
  const nodes = file.graph.length;
  if (file.graph[0]?.op !== OP || nodes > (v2 ? 2 : 1) || (nodes === 2 && file.graph[1]!.op !== ATTENTION_OP)) {
    throw new IrnnFormatError('bad-graph', v2 ? `the graph must be one '${OP}' node, optionally followed by one '${ATTENTION_OP}' node` : `the graph must be one '${OP}' node, got ${nodes} node(s)`);
  }
  const node: Record<string, unknown> = file.graph[0]!;
  const inputSize = integerField(node, 'inputSize', 1, MAX_IRNN_SIZE);
  const hiddenSize = integerField(node, 'hiddenSize', 1, MAX_IRNN_SIZE);
  const rows = 4 * hiddenSize;
  const inputScale = scaleField(node, 'inputScale');
  const hiddenScale = scaleField(node, 'hiddenScale');
  const outputMultiplier = integerField(node, 'outputMultiplier', -(2 ** 31), 2 ** 31 - 1);
  const outputShift = integerField(node, 'outputShift', -8, 62);
  checkMultiplier('output', outputMultiplier, outputShift);
  let weightBits = 8;
  if (header.version === VERSION_PACKED) weightBits = integerField(node, 'weightBits', MIN_WEIGHT_BITS, MAX_WEIGHT_BITS);
  else if (node.weightBits !== undefined) throw new IrnnFormatError('bad-field', 'weightBits needs version 3');
  const [multiplierIh, shiftIh, multiplierHh, shiftHh, bias] = ROW_TENSORS.map((n) => tensorOf(file, n, 'int32', [rows])) as [Int32Array, Int32Array, Int32Array, Int32Array, Int32Array];
  for (let r = 0; r < rows; r++) {
    checkMultiplier(`row ${r} (ih)`, multiplierIh[r]!, shiftIh[r]!);
    checkMultiplier(`row ${r} (hh)`, multiplierHh[r]!, shiftHh[r]!);
    if (Math.abs(bias[r]!) > WIDE) throw new IrnnFormatError('bad-field', `bias ${bias[r]} of row ${r} is outside ±2^24`);
  }
  let layerNorm: IntLSTMLayerNorm | undefined;
  if (node.layerNorm !== undefined) {
    if (!v2) throw new IrnnFormatError('bad-field', 'layerNorm needs version 2');
    const fields = node.layerNorm;
    if (!isObject(fields)) throw new IrnnFormatError('bad-field', 'layerNorm must be an object { ih, hh, cell }');
    layerNorm = {
      ih: readLayerNorm(file, fields.ih, 'ih', rows),
      hh: readLayerNorm(file, fields.hh, 'hh', rows),
      cell: readLayerNorm(file, fields.cell, 'cell', hiddenSize),
    };
  }
  const params: IntLSTMParams = {
    inputSize, hiddenSize, inputScale, hiddenScale, weightBits,
    weightIh: weightBits === 8 ? tensorOf(file, 'weight_ih', 'int8', [rows, inputSize]) : readWeight(file, 'weight_ih', rows, inputSize, weightBits),
    weightHh: weightBits === 8 ? tensorOf(file, 'weight_hh', 'int8', [rows, hiddenSize]) : readWeight(file, 'weight_hh', rows, hiddenSize, weightBits),
    multiplierIh, shiftIh, multiplierHh, shiftHh, bias, outputMultiplier, outputShift,
    sigmoid: readTable(file, node, 'sigmoid'),
    tanh: readTable(file, node, 'tanh'),
    ...(layerNorm ? { layerNorm } : {}),
  };
  const attention = nodes === 2 ? readAttention(file, file.graph[1]!, hiddenSize, hiddenScale) : null;
  return { lstm: new IntLSTM(params), attention };
}

/** The IntLSTM of a decoded .lowbit model, every field validated (IrnnFormatError); an attention node is validated and left out. */
export function intLSTMFromLowbit(file: LowbitModel): IntLSTM {
  return irnnFromLowbit(file).lstm;
}

/** Writes an IntLSTM (and the attention over its outputs) atomically, through the .lowbit writer; returns the bytes written. */
export function saveIntLSTM(path: string, model: IntLSTM, attention?: IntAttention): number {
  return writeLowbit(path, intLSTMToLowbit(model, attention));
}

/** Reads and validates an IntLSTM from a file path or bytes (LowbitFormatError for the container, IrnnFormatError for the content). */
export function loadIntLSTM(file: string | Uint8Array): IntLSTM {
  return intLSTMFromLowbit(readLowbit(file));
}

/** Reads and validates an iRNN file with its optional attention (errors as `loadIntLSTM`). */
export function loadIrnnModel(file: string | Uint8Array): IrnnModel {
  return irnnFromLowbit(readLowbit(file));
}
