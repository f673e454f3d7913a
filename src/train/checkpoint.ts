/**
 * Training checkpoints: model and optimizer state, epoch, run config and history in one
 * safetensors file (see format/safetensors.ts).
 *
 * Layout: model tensors are stored as `model.<name>`; tensors found anywhere inside the
 * optimizer state as `optimizer.<path>`. Everything that is not a tensor is JSON-encoded in
 * `__metadata__` (`format`, `version`, `epoch`, `config`, `history`, `optimizer`, and `scaler` /
 * `scheduler` when saved), where the
 * optimizer's tensors appear as `{"$tensor": "optimizer.<path>"}` references, Maps as
 * `{"$map": [[key, value], ...]}` and non-finite numbers as `{"$number": "Infinity"}` (the
 * scheduler's state is encoded the same way). Early stopping's best weights (restoreBestWeights)
 * are stored as `best.<name>`, with `bestWeights: "true"` in the metadata.
 */
import { Tensor } from '../tensor/tensor.ts';
import {
  SafetensorsError,
  readSafetensorsFile,
  writeSafetensorsFile,
  type SafetensorsEntry,
  type SafetensorsInput,
} from '../format/safetensors.ts';

export const CHECKPOINT_FORMAT = 'lowbit-checkpoint';
export const CHECKPOINT_VERSION = 1;

/** A model's state: parameter and buffer name → tensor. */
export type StateTensors = Record<string, Tensor> | ReadonlyMap<string, Tensor>;

export interface CheckpointData {
  /** The model's `stateDict()`. */
  model: StateTensors;
  /** The optimizer's `stateDict()`: any JSON-like value whose leaves may be tensors. */
  optimizer?: unknown;
  /** Number of completed epochs. */
  epoch: number;
  /** The run's configuration (JSON-serialisable). */
  config?: unknown;
  /** Training history so far (JSON-serialisable). */
  history?: unknown;
  /** The loss scaler's `stateDict()` (fp16 training, src/lowp), JSON-serialisable; omitted when none. */
  scaler?: unknown;
  /** The LR scheduler's `stateDict()`, JSON-serialisable; omitted when none. */
  scheduler?: unknown;
  /** Early stopping with restoreBestWeights: the best epoch's model state, stored as `best.<name>`. */
  bestWeights?: StateTensors;
}

export interface LoadedCheckpoint {
  model: Record<string, Tensor>;
  optimizer: unknown;
  epoch: number;
  config: unknown;
  history: unknown;
  /** The loss scaler's state, null when the checkpoint holds none. */
  scaler: unknown;
  /** The LR scheduler's state, null when the checkpoint holds none. */
  scheduler: unknown;
  /** The best epoch's weights kept by early stopping (restoreBestWeights), null when none. */
  bestWeights: Record<string, Tensor> | null;
}

/** A checkpoint that cannot be read: missing, malformed, or not a lowbit checkpoint. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

const TENSOR_REF = '$tensor';
const MAP_TAG = '$map';
const NUMBER_TAG = '$number';

/** Replaces tensors inside `value` by references, collecting them under `prefix.<path>`. */
function extractTensors(value: unknown, prefix: string, out: [string, SafetensorsInput][]): unknown {
  if (value instanceof Tensor) {
    out.push([prefix, value]);
    return { [TENSOR_REF]: prefix };
  }
  if (Array.isArray(value)) return value.map((v, i) => extractTensors(v, `${prefix}.${i}`, out));
  if (value instanceof Map) {
    // Maps keep their key types: {"$map": [[key, value], ...]}.
    return { [MAP_TAG]: [...value].map(([k, v]) => [k, extractTensors(v, `${prefix}.${String(k)}`, out)]) };
  }
  if (typeof value === 'object' && value !== null) {
    const obj: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) obj[k] = extractTensors(v, `${prefix}.${k}`, out);
    return obj;
  }
  if (typeof value === 'number' && !Number.isFinite(value)) {
    // JSON has no NaN / Infinity; keep them as tagged strings.
    return { [NUMBER_TAG]: String(value) };
  }
  return value;
}

/** Inverse of `extractTensors`. */
function restoreTensors(value: unknown, tensors: ReadonlyMap<string, Tensor>): unknown {
  if (Array.isArray(value)) return value.map((v) => restoreTensors(v, tensors));
  if (typeof value === 'object' && value !== null) {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj);
    if (keys.length === 1 && typeof obj[TENSOR_REF] === 'string') {
      const t = tensors.get(obj[TENSOR_REF]);
      if (!t) throw new CheckpointError(`optimizer state refers to missing tensor '${obj[TENSOR_REF]}'`);
      return t;
    }
    if (keys.length === 1 && typeof obj[NUMBER_TAG] === 'string') return Number(obj[NUMBER_TAG]);
    if (keys.length === 1 && Array.isArray(obj[MAP_TAG])) {
      const pairs = obj[MAP_TAG] as unknown[];
      if (!pairs.every((p) => Array.isArray(p) && p.length === 2)) throw new CheckpointError(`malformed map in optimizer state`);
      return new Map((pairs as [unknown, unknown][]).map(([k, v]) => [k, restoreTensors(v, tensors)]));
    }
    const out: Record<string, unknown> = {};
    for (const k of keys) out[k] = restoreTensors(obj[k], tensors);
    return out;
  }
  return value;
}

function entries(state: StateTensors): [string, Tensor][] {
  return state instanceof Map ? [...state.entries()] : Object.entries(state as Record<string, Tensor>);
}

/** Writes a checkpoint atomically (temporary file, then rename). */
export function saveCheckpoint(path: string, data: CheckpointData): void {
  const tensors: [string, SafetensorsInput][] = entries(data.model).map(([name, t]) => [`model.${name}`, t]);
  if (data.bestWeights !== undefined) for (const [name, t] of entries(data.bestWeights)) tensors.push([`best.${name}`, t]);
  const optimizer = extractTensors(data.optimizer ?? null, 'optimizer', tensors);
  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    version: String(CHECKPOINT_VERSION),
    epoch: String(data.epoch),
    config: JSON.stringify(data.config ?? null),
    history: JSON.stringify(data.history ?? null),
    optimizer: JSON.stringify(optimizer),
    ...(data.scaler === undefined ? {} : { scaler: JSON.stringify(data.scaler) }),
    ...(data.scheduler === undefined ? {} : { scheduler: JSON.stringify(extractTensors(data.scheduler, 'scheduler', tensors)) }),
    ...(data.bestWeights === undefined ? {} : { bestWeights: 'true' }),
  };
  writeSafetensorsFile(path, tensors, metadata);
}

function toTensor(name: string, entry: SafetensorsEntry): Tensor {
  if (entry.data instanceof Uint8Array || entry.data instanceof Int8Array) {
    throw new CheckpointError(`tensor '${name}' has dtype ${entry.dtype}, which checkpoints do not use`);
  }
  return new Tensor(entry.data, entry.shape);
}

function parseJson(key: string, text: string | undefined): unknown {
  if (text === undefined) throw new CheckpointError(`metadata '${key}' is missing`);
  try {
    return JSON.parse(text);
  } catch {
    throw new CheckpointError(`metadata '${key}' is not valid JSON`);
  }
}

/** Reads and validates a checkpoint written by `saveCheckpoint`. */
export function loadCheckpoint(path: string): LoadedCheckpoint {
  let contents;
  try {
    contents = readSafetensorsFile(path);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new CheckpointError(`${path}: ${e.message}`);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CheckpointError(`${path}: no such file`);
    throw new CheckpointError(`${path}: cannot read (${(e as Error).message})`);
  }
  const { metadata } = contents;
  try {
    if (metadata.format !== CHECKPOINT_FORMAT) throw new CheckpointError(`not a lowbit checkpoint (metadata format is ${JSON.stringify(metadata.format)})`);
    if (Number(metadata.version) !== CHECKPOINT_VERSION) throw new CheckpointError(`unsupported checkpoint version ${JSON.stringify(metadata.version)} (expected ${CHECKPOINT_VERSION})`);
    const epoch = Number(metadata.epoch);
    if (!Number.isInteger(epoch) || epoch < 0) throw new CheckpointError(`metadata 'epoch' must be a non-negative integer, got ${JSON.stringify(metadata.epoch)}`);
    const model: Record<string, Tensor> = {};
    const best: Record<string, Tensor> = {};
    const others = new Map<string, Tensor>();
    for (const [name, entry] of contents.tensors) {
      if (name.startsWith('model.')) model[name.slice('model.'.length)] = toTensor(name, entry);
      else if (name.startsWith('best.') && metadata.bestWeights === 'true') best[name.slice('best.'.length)] = toTensor(name, entry);
      else if (name.startsWith('optimizer') || name.startsWith('scheduler')) others.set(name, toTensor(name, entry));
      else throw new CheckpointError(`unexpected tensor '${name}'`);
    }
    return {
      model,
      optimizer: restoreTensors(parseJson('optimizer', metadata.optimizer), others),
      epoch,
      config: parseJson('config', metadata.config),
      history: parseJson('history', metadata.history),
      scaler: metadata.scaler === undefined ? null : parseJson('scaler', metadata.scaler),
      scheduler: metadata.scheduler === undefined ? null : restoreTensors(parseJson('scheduler', metadata.scheduler), others),
      bestWeights: metadata.bestWeights === 'true' ? best : null,
    };
  } catch (e) {
    if (e instanceof CheckpointError && !e.message.startsWith(path)) throw new CheckpointError(`${path}: ${e.message}`);
    throw e;
  }
}
