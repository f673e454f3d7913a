/**
 * IntTransformerLM ⇄ file. The container is the .lowbit format (src/format/lowbit.ts: safetensors-
 * compatible, header and offsets validated by its reader, written atomically), with its own
 * metadata so that the iRNN LSTM reader refuses it and this reader refuses LSTM files:
 *   metadata.irnn = { format: 'lowbit-irnn-transformer', version: 1 }
 *   graph = [{ op: 'irnn.transformer-lm', vocabSize, embedDim, numHeads, mlpDim, maxContext,
 *              numLayers, residualScale, tokenBits, lnFinal: LnFields, headBits,
 *              blocks: [{ ln1, ln2: LnFields, qkv, proj, fc1, fc2: LinearFields, activation,
 *                         scoreMultiplier, scoreShift, probsMultiplier, probsShift, probsMax,
 *                         contextMultiplier, contextShift, contextMin, contextMax,
 *                         geluMultiplier, geluShift, geluMin, geluMax }] }]
 *   LnFields = { epsCode, multiplier, shift, outMin, outMax }; LinearFields = { weightBits, outMin, outMax }
 *   tensors: token.table [V, E] and every `<linear>.weight` stored as `weightStorage(bits)` (int4
 *   two per byte for 3..4 bits, int2 for 2, I8 for 5..8); token.multiplier, token.shift I32 [V];
 *   positions I32 [maxContext, E]; blocks.<i>.<linear>.bias, .multiplier, .shift I32 [out];
 *   blocks.<i>.<ln>.gamma, .beta and lnFinal.gamma, .beta I32 [E]; head.weight, head.bias I32 [V],
 *   head.scale F32 [V].
 * Any other metadata the caller passes (e.g. the CLI's `lm` record: vocabulary, corpus) is kept.
 * After the container's checks, `intTransformerFromLowbit` validates every field, dtype, shape and
 * value range the runtime relies on and throws `IrnnFormatError` naming the first problem.
 */
import { packLowbitValues, readLowbit, writeLowbit, type LowbitModel, type LowbitTensor } from '../../format/lowbit.ts';
import { MAX_WEIGHT_BITS, MIN_WEIGHT_BITS, WIDE, weightMax, weightStorage } from './formats.ts';
import { checkMultiplier, integerField, IrnnFormatError, isObject, readWeight, tensorOf } from './io.ts';
import { GAMMA_MAX, MAX_EPS_CODE, type IntLayerNormParams } from './layernorm.ts';
import {
  GELU_INPUT_MAX, IntTransformerLM, type IntLinearParams, type IntTransformerBlockParams, type IntTransformerLMParams,
} from './transformer.ts';

const FORMAT = 'lowbit-irnn-transformer';
const VERSION = 1;
const OP = 'irnn.transformer-lm';
/** Largest sizes accepted from a file. */
export const MAX_TRANSFORMER_VOCAB = 1 << 20;
export const MAX_TRANSFORMER_WIDTH = 1 << 14;
export const MAX_TRANSFORMER_CONTEXT = 4096;
export const MAX_TRANSFORMER_LAYERS = 64;

const LN_FIELDS = ['epsCode', 'multiplier', 'shift', 'outMin', 'outMax'] as const;
const LINEARS = ['qkv', 'proj', 'fc1', 'fc2'] as const;
const BLOCK_FIELDS = [
  'scoreMultiplier', 'scoreShift', 'probsMultiplier', 'probsShift', 'probsMax', 'contextMultiplier', 'contextShift', 'contextMin', 'contextMax',
  'geluMultiplier', 'geluShift', 'geluMin', 'geluMax',
] as const;

function lnFields(ln: IntLayerNormParams): Record<string, number> {
  return Object.fromEntries(LN_FIELDS.map((f) => [f, ln[f]]));
}

function weightTensor(data: Int8Array, rows: number, cols: number, bits: number, what: string): LowbitTensor {
  const top = weightMax(bits);
  for (let i = 0; i < data.length; i++) if (Math.abs(data[i]!) > top) throw new RangeError(`intTransformerToLowbit: ${what} code ${data[i]} at ${i} is outside ±${top} (${bits} bits)`);
  const storage = weightStorage(bits);
  return storage === 'int8' ? { dtype: 'int8', shape: [rows, cols], data } : packLowbitValues(storage, [rows, cols], data);
}

/** The .lowbit model of an IntTransformerLM; `metadata` is merged beside `irnn` (it must not hold `irnn`). */
export function intTransformerToLowbit(model: IntTransformerLM, metadata: Record<string, unknown> = {}): LowbitModel {
  if ('irnn' in metadata) throw new RangeError('intTransformerToLowbit: metadata.irnn is the format header and cannot be given');
  const p = model.params;
  const E = p.embedDim;
  const V = p.vocabSize;
  const tensors: Record<string, LowbitTensor> = {
    'token.table': weightTensor(p.tokenTable, V, E, p.tokenBits, 'token table'),
    'token.multiplier': { dtype: 'int32', shape: [V], data: p.tokenMultiplier },
    'token.shift': { dtype: 'int32', shape: [V], data: p.tokenShift },
    positions: { dtype: 'int32', shape: [p.maxContext, E], data: p.positions },
  };
  const addLn = (name: string, ln: IntLayerNormParams): Record<string, number> => {
    tensors[`${name}.gamma`] = { dtype: 'int32', shape: [ln.size], data: ln.gamma };
    tensors[`${name}.beta`] = { dtype: 'int32', shape: [ln.size], data: ln.beta };
    return lnFields(ln);
  };
  const addLinear = (name: string, l: IntLinearParams): Record<string, number> => {
    tensors[`${name}.weight`] = weightTensor(l.weight, l.outFeatures, l.inFeatures, l.weightBits, name);
    tensors[`${name}.bias`] = { dtype: 'int32', shape: [l.outFeatures], data: l.bias };
    tensors[`${name}.multiplier`] = { dtype: 'int32', shape: [l.outFeatures], data: l.multiplier };
    tensors[`${name}.shift`] = { dtype: 'int32', shape: [l.outFeatures], data: l.shift };
    return { weightBits: l.weightBits, outMin: l.outMin, outMax: l.outMax };
  };
  const blocks = p.blocks.map((b, i) => {
    const name = `blocks.${i}`;
    return {
      ln1: addLn(`${name}.ln1`, b.ln1), ln2: addLn(`${name}.ln2`, b.ln2),
      ...Object.fromEntries(LINEARS.map((l) => [l, addLinear(`${name}.${l}`, b[l])])),
      activation: b.activation,
      ...Object.fromEntries(BLOCK_FIELDS.map((f) => [f, b[f]])),
    };
  });
  const lnFinal = addLn('lnFinal', p.lnFinal);
  tensors['head.weight'] = weightTensor(p.head.weight, V, E, p.head.weightBits, 'head');
  tensors['head.bias'] = { dtype: 'int32', shape: [V], data: p.head.bias };
  tensors['head.scale'] = { dtype: 'float32', shape: [V], data: p.head.scale };
  const node = {
    op: OP, vocabSize: V, embedDim: E, numHeads: p.numHeads, mlpDim: p.mlpDim, maxContext: p.maxContext, numLayers: p.blocks.length,
    residualScale: p.residualScale, tokenBits: p.tokenBits, headBits: p.head.weightBits, lnFinal, blocks,
    tensors: Object.keys(tensors),
  };
  return { graph: [node], tensors, metadata: { ...metadata, irnn: { format: FORMAT, version: VERSION } } };
}

function bad(message: string): never {
  throw new IrnnFormatError('bad-field', `transformer: ${message}`);
}

function object(v: unknown, what: string): Record<string, unknown> {
  if (!isObject(v)) bad(`${what} must be an object`);
  return v;
}

function readLn(file: LowbitModel, fields: unknown, name: string, size: number, outLo: number, outHi: number): IntLayerNormParams {
  const f = object(fields, name);
  const ln = {
    size,
    epsCode: integerField(f, 'epsCode', 0, MAX_EPS_CODE),
    multiplier: integerField(f, 'multiplier', -(2 ** 31), 2 ** 31 - 1),
    shift: integerField(f, 'shift', -8, 62),
    outMin: integerField(f, 'outMin', outLo, outHi),
    outMax: integerField(f, 'outMax', outLo, outHi),
    gamma: tensorOf(file, `${name}.gamma`, 'int32', [size]),
    beta: tensorOf(file, `${name}.beta`, 'int32', [size]),
  };
  if (ln.outMin > ln.outMax) bad(`${name}: outMin ${ln.outMin} > outMax ${ln.outMax}`);
  checkMultiplier(name, ln.multiplier, ln.shift);
  for (let i = 0; i < size; i++) if (Math.abs(ln.gamma[i]!) > GAMMA_MAX) bad(`${name}.gamma[${i}] = ${ln.gamma[i]} is outside ±${GAMMA_MAX}`);
  return ln;
}

/** A Linear's tensors and fields; `out` = the exact output clamp the runtime expects, or the int8 bounds it must lie in. */
function readLinear(file: LowbitModel, fields: unknown, name: string, inF: number, outF: number, out: { exact: readonly [number, number] } | { within: readonly [number, number] }): IntLinearParams {
  const f = object(fields, name);
  const weightBits = integerField(f, 'weightBits', MIN_WEIGHT_BITS, MAX_WEIGHT_BITS);
  const [lo, hi] = 'exact' in out ? out.exact : out.within;
  const outMin = 'exact' in out ? integerField(f, 'outMin', lo, lo) : integerField(f, 'outMin', lo, hi);
  const outMax = 'exact' in out ? integerField(f, 'outMax', hi, hi) : integerField(f, 'outMax', lo, hi);
  if (outMin > outMax) bad(`${name}: outMin ${outMin} > outMax ${outMax}`);
  const multiplier = tensorOf(file, `${name}.multiplier`, 'int32', [outF]);
  const shift = tensorOf(file, `${name}.shift`, 'int32', [outF]);
  for (let r = 0; r < outF; r++) checkMultiplier(`${name} row ${r}`, multiplier[r]!, shift[r]!);
  return {
    inFeatures: inF, outFeatures: outF, weightBits, outMin, outMax, multiplier, shift,
    weight: readWeight(file, `${name}.weight`, outF, inF, weightBits),
    bias: tensorOf(file, `${name}.bias`, 'int32', [outF]),
  };
}

const INT8: readonly [number, number] = [-128, 127];
const RESIDUAL: readonly [number, number] = [-WIDE, WIDE];

function readBlock(file: LowbitModel, fields: unknown, i: number, E: number, mlp: number): IntTransformerBlockParams {
  const name = `blocks.${i}`;
  const f = object(fields, name);
  const activation = f.activation;
  if (activation !== 'gelu' && activation !== 'relu') bad(`${name}.activation must be 'gelu' or 'relu', got ${JSON.stringify(activation)}`);
  const mult = (m: string, s: string): [number, number] => {
    const v: [number, number] = [integerField(f, m, -(2 ** 31), 2 ** 31 - 1), integerField(f, s, -8, 62)];
    checkMultiplier(`${name}.${m}`, v[0], v[1]);
    return v;
  };
  const [scoreMultiplier, scoreShift] = mult('scoreMultiplier', 'scoreShift');
  const [probsMultiplier, probsShift] = mult('probsMultiplier', 'probsShift');
  const [contextMultiplier, contextShift] = mult('contextMultiplier', 'contextShift');
  const [geluMultiplier, geluShift] = mult('geluMultiplier', 'geluShift');
  const contextMin = integerField(f, 'contextMin', -128, 127);
  const contextMax = integerField(f, 'contextMax', contextMin, 127);
  const geluMin = integerField(f, 'geluMin', -128, 127);
  const geluMax = integerField(f, 'geluMax', geluMin, 127);
  return {
    ln1: readLn(file, f.ln1, `${name}.ln1`, E, ...INT8),
    qkv: readLinear(file, f.qkv, `${name}.qkv`, E, 3 * E, { within: INT8 }),
    scoreMultiplier, scoreShift, probsMultiplier, probsShift,
    probsMax: integerField(f, 'probsMax', 1, 255),
    contextMultiplier, contextShift, contextMin, contextMax,
    proj: readLinear(file, f.proj, `${name}.proj`, E, E, { exact: RESIDUAL }),
    ln2: readLn(file, f.ln2, `${name}.ln2`, E, ...INT8),
    fc1: readLinear(file, f.fc1, `${name}.fc1`, E, mlp, activation === 'gelu' ? { exact: [-GELU_INPUT_MAX, GELU_INPUT_MAX] } : { within: [0, 127] }),
    activation, geluMultiplier, geluShift, geluMin, geluMax,
    fc2: readLinear(file, f.fc2, `${name}.fc2`, mlp, E, { exact: RESIDUAL }),
  };
}

/** True when a decoded .lowbit model is an IntTransformerLM file (metadata.irnn names this format). */
export function isIntTransformerFile(file: LowbitModel): boolean {
  const header = (file.metadata as Record<string, unknown> | undefined)?.irnn;
  return isObject(header) && header.format === FORMAT;
}

/** The IntTransformerLM of a decoded .lowbit model, every field validated (IrnnFormatError). */
export function intTransformerFromLowbit(file: LowbitModel): IntTransformerLM {
  const header = (file.metadata as Record<string, unknown> | undefined)?.irnn;
  if (!isObject(header) || header.format !== FORMAT || header.version !== VERSION) {
    throw new IrnnFormatError('not-irnn', `transformer: metadata.irnn is ${JSON.stringify(header)}, expected { format: '${FORMAT}', version: ${VERSION} }`);
  }
  if (file.graph.length !== 1 || file.graph[0]!.op !== OP) throw new IrnnFormatError('bad-graph', `transformer: the graph must be one '${OP}' node`);
  const node: Record<string, unknown> = file.graph[0]!;
  const V = integerField(node, 'vocabSize', 2, MAX_TRANSFORMER_VOCAB);
  const E = integerField(node, 'embedDim', 1, MAX_TRANSFORMER_WIDTH);
  const numHeads = integerField(node, 'numHeads', 1, E);
  if (E % numHeads !== 0) bad(`embedDim ${E} is not divisible by numHeads ${numHeads}`);
  const mlpDim = integerField(node, 'mlpDim', 1, 4 * MAX_TRANSFORMER_WIDTH);
  const maxContext = integerField(node, 'maxContext', 1, MAX_TRANSFORMER_CONTEXT);
  const numLayers = integerField(node, 'numLayers', 1, MAX_TRANSFORMER_LAYERS);
  const residualScale = node.residualScale;
  if (typeof residualScale !== 'number' || !Number.isFinite(residualScale) || !(residualScale > 1e-30) || residualScale > 1e6) bad(`residualScale must be a positive finite scale, got ${JSON.stringify(residualScale)}`);
  const tokenBits = integerField(node, 'tokenBits', MIN_WEIGHT_BITS, MAX_WEIGHT_BITS);
  const headBits = integerField(node, 'headBits', MIN_WEIGHT_BITS, MAX_WEIGHT_BITS);
  const blockFields = node.blocks;
  if (!Array.isArray(blockFields) || blockFields.length !== numLayers) bad(`blocks must be a list of numLayers = ${numLayers} objects`);
  const tokenMultiplier = tensorOf(file, 'token.multiplier', 'int32', [V]);
  const tokenShift = tensorOf(file, 'token.shift', 'int32', [V]);
  for (let r = 0; r < V; r++) checkMultiplier(`token row ${r}`, tokenMultiplier[r]!, tokenShift[r]!);
  const positions = tensorOf(file, 'positions', 'int32', [maxContext, E]);
  for (let i = 0; i < positions.length; i++) if (Math.abs(positions[i]!) > WIDE) bad(`positions[${i}] = ${positions[i]} is outside ±2^24`);
  const headScale = file.tensors['head.scale'];
  if (!headScale || headScale.dtype !== 'float32' || headScale.shape.length !== 1 || headScale.shape[0] !== V || !(headScale.data instanceof Float32Array)) {
    throw new IrnnFormatError('bad-tensor', `transformer: tensor 'head.scale' must be float32 [${V}]`);
  }
  for (let r = 0; r < V; r++) if (!(headScale.data[r]! > 0) || !Number.isFinite(headScale.data[r]!)) throw new IrnnFormatError('bad-tensor', `transformer: head.scale[${r}] = ${headScale.data[r]} is not a positive finite number`);
  const params: IntTransformerLMParams = {
    vocabSize: V, embedDim: E, numHeads, mlpDim, maxContext, residualScale, tokenBits,
    tokenTable: readWeight(file, 'token.table', V, E, tokenBits), tokenMultiplier, tokenShift, positions,
    blocks: (blockFields as unknown[]).map((b, i) => readBlock(file, b, i, E, mlpDim)),
    lnFinal: readLn(file, node.lnFinal, 'lnFinal', E, ...INT8),
    head: {
      inFeatures: E, outFeatures: V, weightBits: headBits,
      weight: readWeight(file, 'head.weight', V, E, headBits),
      bias: tensorOf(file, 'head.bias', 'int32', [V]),
      scale: headScale.data,
    },
  };
  return new IntTransformerLM(params);
}

/** Writes an IntTransformerLM atomically through the .lowbit writer (extra `metadata` kept); returns the bytes written. */
export function saveIntTransformer(path: string, model: IntTransformerLM, metadata: Record<string, unknown> = {}): number {
  return writeLowbit(path, intTransformerToLowbit(model, metadata));
}

/** Reads and validates an IntTransformerLM from a file path or bytes (LowbitFormatError for the container, IrnnFormatError for the content). */
export function loadIntTransformer(file: string | Uint8Array): IntTransformerLM {
  return intTransformerFromLowbit(readLowbit(file));
}
