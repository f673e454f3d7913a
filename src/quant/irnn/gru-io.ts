/**
 * IntGRU ⇄ file, in the .lowbit container as the LSTM's (./io.ts; safetensors-compatible, header
 * and offsets validated by its reader, written atomically), with its own format name so that the
 * LSTM reader refuses it and this one refuses LSTM files:
 *   metadata.irnn = { format: 'lowbit-irnn-gru', version: 1 }
 *   graph = [{ op: 'irnn.gru', gates: 3, inputSize, hiddenSize, inputScale, hiddenScale,
 *              outputMultiplier, outputShift, weightBits (2..8), sigmoid: PwlFormat, tanh: PwlFormat,
 *              tensors: {role: name} }]
 *   tensors: weight_ih [3H, I], weight_hh [3H, H] (I8 for 5..8 bits, int4 two per byte for 3..4,
 *            int2 four per byte for 2; every code in ±(2^(b−1)−1)), multiplier_ih, shift_ih,
 *            multiplier_hh, shift_hh, bias I32 [3H], bias_hn I32 [H], sigmoid.knots I32 [N+1],
 *            sigmoid.values, sigmoid.slopes I32 [N] (same for tanh).
 * `intGRUFromLowbit` validates every field, dtype, shape and value range the runtime relies on
 * and throws `IrnnFormatError` naming the first problem.
 */
import { readLowbit, writeLowbit, type LowbitModel } from '../../format/lowbit.ts';
import { MAX_WEIGHT_BITS, MIN_WEIGHT_BITS, WIDE } from './formats.ts';
import { IntGRU } from './intgru.ts';
import { addTableTensors, checkMultiplier, integerField, IrnnFormatError, isObject, MAX_IRNN_SIZE, readTable, readWeight, recurrentWeightTensors, scaleField, tableFormat, tensorOf } from './io.ts';

/** The format name of an iRNN GRU file (metadata.irnn.format). */
export const IRNN_GRU_FORMAT = 'lowbit-irnn-gru';
const VERSION = 1;
const OP = 'irnn.gru';
/** Gate blocks of a GRU: r, z, n. */
const GATES = 3;
const ROW_TENSORS = ['multiplier_ih', 'shift_ih', 'multiplier_hh', 'shift_hh', 'bias'] as const;


/** The .lowbit model of an IntGRU (see the file comment). */
export function intGRUToLowbit(model: IntGRU): LowbitModel {
  const p = model.params;
  const rows = GATES * p.hiddenSize;
  const bits = p.weightBits ?? 8;
  const tensors = recurrentWeightTensors('intGRUToLowbit', rows, p);
  tensors.bias_hn = { dtype: 'int32', shape: [p.hiddenSize], data: p.biasHn };
  addTableTensors(tensors, p);
  const node = {
    op: OP, gates: GATES,
    inputSize: p.inputSize, hiddenSize: p.hiddenSize, inputScale: p.inputScale, hiddenScale: p.hiddenScale,
    outputMultiplier: p.outputMultiplier, outputShift: p.outputShift, weightBits: bits,
    sigmoid: tableFormat(p.sigmoid), tanh: tableFormat(p.tanh),
    tensors: Object.fromEntries(Object.keys(tensors).map((k) => [k, k])),
  };
  return { graph: [node], tensors, metadata: { irnn: { format: IRNN_GRU_FORMAT, version: VERSION } } };
}

/** True when a decoded .lowbit model declares itself an iRNN GRU file (metadata.irnn.format). */
export function isIntGRUFile(file: LowbitModel): boolean {
  const header = (file.metadata as Record<string, unknown> | undefined)?.['irnn'];
  return isObject(header) && header['format'] === IRNN_GRU_FORMAT;
}

const fail = (code: 'not-irnn' | 'bad-graph' | 'bad-field' | 'bad-tensor', message: string): never => {
  throw new IrnnFormatError(code, `GRU: ${message}`);
};

/** The IntGRU of a decoded .lowbit model, every field validated (IrnnFormatError naming the first problem). */
export function intGRUFromLowbit(file: LowbitModel): IntGRU {
  const header = (file.metadata as Record<string, unknown> | undefined)?.['irnn'];
  if (!isObject(header) || header['format'] !== IRNN_GRU_FORMAT || header['version'] !== VERSION) {
    fail('not-irnn', `metadata.irnn is ${JSON.stringify(header)}, expected { format: '${IRNN_GRU_FORMAT}', version: ${VERSION} }`);
  }
  if (file.graph.length !== 1 || file.graph[0]!.op !== OP) fail('bad-graph', `the graph must be one '${OP}' node, got ${file.graph.map((n) => n.op).join(', ') || 'none'}`);
  const node: Record<string, unknown> = file.graph[0]!;
  if (node['gates'] !== GATES) fail('bad-field', `gates is ${JSON.stringify(node['gates'])}: a GRU has ${GATES} gate blocks (r, z, n)`);
  const inputSize = integerField(node, 'inputSize', 1, MAX_IRNN_SIZE);
  const hiddenSize = integerField(node, 'hiddenSize', 1, MAX_IRNN_SIZE);
  const rows = GATES * hiddenSize;
  // A tensor shaped for another gate count (an LSTM's 4H rows, say) gets its own message.
  for (const name of ['weight_ih', 'weight_hh', ...ROW_TENSORS]) {
    const t = file.tensors[name];
    if (!t) fail('bad-tensor', `tensor '${name}' is missing`);
    const first = t!.shape[0];
    if (first !== rows) {
      const gates = typeof first === 'number' && first % hiddenSize === 0 ? ` (${first / hiddenSize} gate blocks of hiddenSize ${hiddenSize})` : '';
      fail('bad-tensor', `tensor '${name}' has ${JSON.stringify(first)} rows${gates}, expected ${GATES}·hiddenSize = ${rows} (gates r, z, n)`);
    }
  }
  const inputScale = scaleField(node, 'inputScale');
  const hiddenScale = scaleField(node, 'hiddenScale');
  const outputMultiplier = integerField(node, 'outputMultiplier', -(2 ** 31), 2 ** 31 - 1);
  const outputShift = integerField(node, 'outputShift', -8, 62);
  checkMultiplier('output', outputMultiplier, outputShift);
  const weightBits = integerField(node, 'weightBits', MIN_WEIGHT_BITS, MAX_WEIGHT_BITS);
  const [multiplierIh, shiftIh, multiplierHh, shiftHh, bias] = ROW_TENSORS.map((n) => tensorOf(file, n, 'int32', [rows])) as [Int32Array, Int32Array, Int32Array, Int32Array, Int32Array];
  for (let r = 0; r < rows; r++) {
    checkMultiplier(`GRU row ${r} (ih)`, multiplierIh[r]!, shiftIh[r]!);
    checkMultiplier(`GRU row ${r} (hh)`, multiplierHh[r]!, shiftHh[r]!);
    if (Math.abs(bias[r]!) > WIDE) fail('bad-field', `bias ${bias[r]} of row ${r} is outside ±2^24`);
  }
  const biasHn = tensorOf(file, 'bias_hn', 'int32', [hiddenSize]);
  for (let k = 0; k < hiddenSize; k++) if (Math.abs(biasHn[k]!) > WIDE) fail('bad-field', `bias_hn ${biasHn[k]} of unit ${k} is outside ±2^24`);
  return new IntGRU({
    inputSize, hiddenSize, inputScale, hiddenScale, weightBits,
    weightIh: readWeight(file, 'weight_ih', rows, inputSize, weightBits),
    weightHh: readWeight(file, 'weight_hh', rows, hiddenSize, weightBits),
    multiplierIh, shiftIh, multiplierHh, shiftHh, bias, biasHn, outputMultiplier, outputShift,
    sigmoid: readTable(file, node, 'sigmoid'),
    tanh: readTable(file, node, 'tanh'),
  });
}

/** Writes an IntGRU atomically through the .lowbit writer; returns the bytes written. */
export function saveIntGRU(path: string, model: IntGRU): number {
  return writeLowbit(path, intGRUToLowbit(model));
}

/** Reads and validates an IntGRU from a file path or bytes (LowbitFormatError for the container, IrnnFormatError for the content). */
export function loadIntGRU(file: string | Uint8Array): IntGRU {
  return intGRUFromLowbit(readLowbit(file));
}
