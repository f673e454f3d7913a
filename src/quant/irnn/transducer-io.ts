/**
 * IntTransducer ⇄ file: one .lowbit container (safetensors-compatible, atomic write) with
 *   metadata.irnn = { format: 'lowbit-irnn-transducer', version: 1 }
 *   graph = [ encoder: an 'irnn.lstm' node as io.ts writes it, plus name 'encoder' and irnnVersion
 *             (the LSTM file version its fields follow: 1, 2 or 3), its tensors prefixed 'encoder.';
 *             predictor: the same with 'predictor.';
 *             { op: 'irnn.transducer-joint', numLabels, encoderSize, predictorSize, jointSize,
 *               weightBits, outputWeightBits, jointMultiplier, jointShift, tanh: PwlFormat } ]
 *   joint tensors: joint.embedding I8 [V+1, E]; joint.encoder_weight, joint.predictor_weight,
 *     joint.output_weight packed at their bit widths as io.ts packs LSTM weights (int4 / int2 / I8);
 *     joint.<encoder|predictor|output>_multiplier, _shift, joint.encoder_bias, joint.output_bias I32;
 *     joint.tanh.knots / values / slopes I32.
 * The reader hands each LSTM, as a one-node view, to io.ts's validated reader, and checks every
 * joint field: sizes matching the LSTMs, Q31 multipliers and shifts in [−8, 62], biases within
 * ±2^22 (encoder projection) and ±2^24 (output), weight codes within ±(2^(b−1)−1), the tanh table
 * with the runtime's format. Errors: `LowbitFormatError` (container), `IrnnFormatError` (content).
 */
import { packLowbitValues, readLowbit, writeLowbit, type LowbitModel, type LowbitNode, type LowbitTensor } from '../../format/lowbit.ts';
import { weightMax, weightStorage, WIDE, MIN_WEIGHT_BITS, MAX_WEIGHT_BITS } from './formats.ts';
import { checkMultiplier, integerField, intLSTMToLowbit, irnnFromLowbit, IrnnFormatError, isObject, MAX_IRNN_SIZE, readTable, readWeight, tensorOf } from './io.ts';
import type { IntLSTM } from './intlstm.ts';
import { IntTransducer, PROJECTION_MAX, type IntJointParams } from './transducer.ts';

const FORMAT = 'lowbit-irnn-transducer';
const VERSION = 1;
const JOINT_OP = 'irnn.transducer-joint';
const PARTS = ['encoder', 'predictor'] as const;

function packedWeight(data: Int8Array, rows: number, cols: number, bits: number, what: string): LowbitTensor {
  const top = weightMax(bits);
  for (let i = 0; i < data.length; i++) {
    if (Math.abs(data[i]!) > top) throw new RangeError(`intTransducerToLowbit: ${what} code ${data[i]} at ${i} is outside ±${top} (${bits} bits)`);
  }
  const storage = weightStorage(bits);
  return storage === 'int8' ? { dtype: 'int8', shape: [rows, cols], data } : packLowbitValues(storage, [rows, cols], data);
}

/** The .lowbit model of an IntTransducer. */
export function intTransducerToLowbit(model: IntTransducer): LowbitModel {
  const tensors: Record<string, LowbitTensor> = {};
  const graph: LowbitNode[] = [];
  for (const part of PARTS) {
    const lstm = intLSTMToLowbit(model[part]);
    const node = lstm.graph[0]!;
    for (const [name, tensor] of Object.entries(lstm.tensors)) tensors[`${part}.${name}`] = tensor;
    const roles = node.tensors as Record<string, string>;
    graph.push({
      ...node, name: part, irnnVersion: (lstm.metadata!.irnn as { version: number }).version,
      tensors: Object.fromEntries(Object.entries(roles).map(([role, name]) => [role, `${part}.${name}`])),
    });
  }
  const j = model.joint;
  const V1 = j.numOutputs;
  const J = j.jointSize;
  const int32 = (data: Int32Array): LowbitTensor => ({ dtype: 'int32', shape: [data.length], data });
  const jointTensors: Record<string, LowbitTensor> = {
    embedding: { dtype: 'int8', shape: [V1, model.predictor.inputSize], data: model.embedding },
    encoder_weight: packedWeight(j.encoderWeight, J, j.encoderSize, j.weightBits, 'encoder projection'),
    encoder_multiplier: int32(j.encoderMultiplier), encoder_shift: int32(j.encoderShift), encoder_bias: int32(j.encoderBias),
    predictor_weight: packedWeight(j.predictorWeight, J, j.predictorSize, j.weightBits, 'predictor projection'),
    predictor_multiplier: int32(j.predictorMultiplier), predictor_shift: int32(j.predictorShift),
    output_weight: packedWeight(j.outputWeight, V1, J, j.outputWeightBits, 'output'),
    output_multiplier: int32(j.outputMultiplier), output_shift: int32(j.outputShift), output_bias: int32(j.outputBias),
    'tanh.knots': int32(j.tanh.knots), 'tanh.values': int32(j.tanh.values), 'tanh.slopes': int32(j.tanh.slopes),
  };
  for (const [name, tensor] of Object.entries(jointTensors)) tensors[`joint.${name}`] = tensor;
  graph.push({
    op: JOINT_OP, numLabels: model.numLabels, encoderSize: j.encoderSize, predictorSize: j.predictorSize, jointSize: J,
    weightBits: j.weightBits, outputWeightBits: j.outputWeightBits, jointMultiplier: j.jointMultiplier, jointShift: j.jointShift,
    tanh: { inputFrac: j.tanh.inputFrac, outputFrac: j.tanh.outputFrac, slopeFrac: j.tanh.slopeFrac, outputMin: j.tanh.outputMin, outputMax: j.tanh.outputMax },
    tensors: Object.fromEntries(Object.keys(jointTensors).map((name) => [name, `joint.${name}`])),
  });
  return { graph, tensors, metadata: { irnn: { format: FORMAT, version: VERSION } } };
}

/** The tensors under `prefix.`, names stripped of it. */
function tensorsUnder(file: LowbitModel, prefix: string): Record<string, LowbitTensor> {
  const out: Record<string, LowbitTensor> = {};
  for (const [name, tensor] of Object.entries(file.tensors)) if (name.startsWith(`${prefix}.`)) out[name.slice(prefix.length + 1)] = tensor;
  return out;
}

/** One LSTM part, read by io.ts's reader from a one-node view of the file. */
function readPart(file: LowbitModel, index: number, part: typeof PARTS[number]): IntLSTM {
  const node = file.graph[index];
  if (!node || node.op !== 'irnn.lstm' || node.name !== part) throw new IrnnFormatError('bad-graph', `graph[${index}] must be the ${part} 'irnn.lstm' node`);
  const version = node.irnnVersion;
  const { name: _name, irnnVersion: _version, ...fields } = node;
  const view: LowbitModel = { graph: [{ ...fields, op: 'irnn.lstm' }], tensors: tensorsUnder(file, part), metadata: { irnn: { format: 'lowbit-irnn-lstm', version } } };
  try {
    return irnnFromLowbit(view).lstm;
  } catch (e) {
    if (e instanceof IrnnFormatError) throw new IrnnFormatError(e.code, `${part}: ${e.message.replace(/^iRNN LSTM file: /, '')}`);
    throw e;
  }
}

function rowParams(file: LowbitModel, prefix: string, rows: number, biasMax: number | null): { multiplier: Int32Array; shift: Int32Array; bias: Int32Array | null } {
  const multiplier = tensorOf(file, `${prefix}_multiplier`, 'int32', [rows]);
  const shift = tensorOf(file, `${prefix}_shift`, 'int32', [rows]);
  for (let r = 0; r < rows; r++) checkMultiplier(`joint ${prefix} row ${r}`, multiplier[r]!, shift[r]!);
  if (biasMax === null) return { multiplier, shift, bias: null };
  const bias = tensorOf(file, `${prefix}_bias`, 'int32', [rows]);
  for (let r = 0; r < rows; r++) {
    if (Math.abs(bias[r]!) > biasMax) throw new IrnnFormatError('bad-field', `joint ${prefix}_bias[${r}] = ${bias[r]} is outside ±${biasMax}`);
  }
  return { multiplier, shift, bias };
}

/** The IntTransducer of a decoded .lowbit model, every field validated (IrnnFormatError). */
export function intTransducerFromLowbit(file: LowbitModel): IntTransducer {
  const header = (file.metadata as Record<string, unknown> | undefined)?.irnn;
  if (!isObject(header) || header.format !== FORMAT || header.version !== VERSION) {
    throw new IrnnFormatError('not-irnn', `metadata.irnn is ${JSON.stringify(header)}, expected { format: '${FORMAT}', version: ${VERSION} }`);
  }
  if (file.graph.length !== 3 || file.graph[2]!.op !== JOINT_OP) throw new IrnnFormatError('bad-graph', `the graph must be the encoder and predictor 'irnn.lstm' nodes and one '${JOINT_OP}' node`);
  const encoder = readPart(file, 0, 'encoder');
  const predictor = readPart(file, 1, 'predictor');
  const node: Record<string, unknown> = file.graph[2]!;
  const view: LowbitModel = { graph: [], tensors: tensorsUnder(file, 'joint') };
  const numLabels = integerField(node, 'numLabels', 1, MAX_IRNN_SIZE - 1);
  const V1 = numLabels + 1;
  const encoderSize = integerField(node, 'encoderSize', encoder.hiddenSize, encoder.hiddenSize);
  const predictorSize = integerField(node, 'predictorSize', predictor.hiddenSize, predictor.hiddenSize);
  const J = integerField(node, 'jointSize', 1, MAX_IRNN_SIZE);
  const weightBits = integerField(node, 'weightBits', MIN_WEIGHT_BITS, MAX_WEIGHT_BITS);
  const outputWeightBits = integerField(node, 'outputWeightBits', MIN_WEIGHT_BITS, MAX_WEIGHT_BITS);
  const jointMultiplier = integerField(node, 'jointMultiplier', -(2 ** 31), 2 ** 31 - 1);
  const jointShift = integerField(node, 'jointShift', -8, 62);
  checkMultiplier('joint activation', jointMultiplier, jointShift);
  const enc = rowParams(view, 'encoder', J, PROJECTION_MAX);
  const pred = rowParams(view, 'predictor', J, null);
  const out = rowParams(view, 'output', V1, WIDE);
  const joint: IntJointParams = {
    encoderSize, predictorSize, jointSize: J, numOutputs: V1, weightBits, outputWeightBits,
    encoderWeight: readWeight(view, 'encoder_weight', J, encoderSize, weightBits),
    encoderMultiplier: enc.multiplier, encoderShift: enc.shift, encoderBias: enc.bias!,
    predictorWeight: readWeight(view, 'predictor_weight', J, predictorSize, weightBits),
    predictorMultiplier: pred.multiplier, predictorShift: pred.shift,
    tanh: readTable(view, node, 'tanh'),
    jointMultiplier, jointShift,
    outputWeight: readWeight(view, 'output_weight', V1, J, outputWeightBits),
    outputMultiplier: out.multiplier, outputShift: out.shift, outputBias: out.bias!,
  };
  const embedding = tensorOf(view, 'embedding', 'int8', [V1, predictor.inputSize]);
  for (let i = 0; i < embedding.length; i++) {
    if (embedding[i] === -128) throw new IrnnFormatError('bad-tensor', `joint.embedding code -128 at ${i} is outside ±127`);
  }
  return new IntTransducer({ numLabels, encoder, predictor, embedding, joint });
}

/** Writes an IntTransducer atomically through the .lowbit writer; returns the bytes written. */
export function saveIntTransducer(path: string, model: IntTransducer): number {
  return writeLowbit(path, intTransducerToLowbit(model));
}

/** Reads and validates an IntTransducer from a file path or bytes (LowbitFormatError for the container, IrnnFormatError for the content). */
export function loadIntTransducer(file: string | Uint8Array): IntTransducer {
  return intTransducerFromLowbit(readLowbit(file));
}
