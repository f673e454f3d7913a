/**
 * IntModel ⇄ .lowbit file (src/format/lowbit.ts). The file's graph is the IntModel's node list,
 * each layer node carrying `tensors: {role: name}` so the format can check references; the
 * IntModel header (input shape, graph format/version: 1 a chain, 2 a DAG with node `inputs` and
 * add nodes, 3 as 2 with per-group linear weights, see ./intmodel.ts) and user metadata go in `metadata`.
 * Weights keep their packed bytes (int4/int2 two/four per byte, `bits` rows padded to 64 bits,
 * ternary as int2); int8 is stored as I8, biases/multipliers/shifts as int32, dequantization
 * scales as float32.
 */
import { readLowbit, writeLowbit, type LowbitModel, type LowbitNode, type LowbitTensor } from '../format/lowbit.ts';
import { IntModel, type IntGraph, type IntNode, type IntTensor } from './intmodel.ts';

const GRAPH_FORMAT = 'lowbit-intmodel';

function nodeTensors(node: IntNode): Record<string, string> | undefined {
  if (node.op !== 'conv2d' && node.op !== 'linear') return undefined;
  const refs: Record<string, string> = { weight: node.weight };
  for (const [role, value] of Object.entries(node.output)) if (role !== 'mode' && typeof value === 'string') refs[role] = value;
  if (node.groupMultipliers !== undefined) refs.groupMultipliers = node.groupMultipliers;
  return refs;
}

/** The .lowbit model (graph, tensors, metadata) of an IntModel. */
export function intModelToLowbit(model: IntModel): LowbitModel {
  const tensors: Record<string, LowbitTensor> = {};
  for (const [name, t] of model.tensors) {
    const d = t.data;
    const data = t.dtype === 'int8' ? new Int8Array(d.buffer, d.byteOffset, d.byteLength) : d;
    tensors[name] = { dtype: t.dtype, shape: [...t.shape], data };
  }
  const graph: LowbitNode[] = model.graph.nodes.map((n) => {
    const refs = nodeTensors(n);
    return (refs ? { ...n, tensors: refs } : { ...n }) as LowbitNode;
  });
  const { format, version, inputShape } = model.graph;
  return { graph, tensors, metadata: { ...(model.graph.metadata ?? {}), intModel: { format, version, inputShape } } };
}

/** The IntModel of a decoded .lowbit model. */
export function intModelFromLowbit(file: LowbitModel): IntModel {
  const meta = (file.metadata ?? {}) as Record<string, unknown>;
  const header = meta.intModel as { format?: unknown; version?: unknown; inputShape?: unknown } | undefined;
  if (!header || header.format !== GRAPH_FORMAT || (header.version !== 1 && header.version !== 2 && header.version !== 3)) {
    throw new Error(`not an IntModel .lowbit file: metadata.intModel is ${JSON.stringify(header)} (expected format '${GRAPH_FORMAT}', version 1, 2 or 3)`);
  }
  if (!Array.isArray(header.inputShape) || !header.inputShape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`IntModel .lowbit: bad inputShape ${JSON.stringify(header.inputShape)}`);
  }
  const tensors = new Map<string, IntTensor>();
  for (const [name, t] of Object.entries(file.tensors)) {
    const d = t.data;
    let data: IntTensor['data'];
    switch (t.dtype) {
      case 'int8':
      case 'int4':
      case 'int2':
      case 'bits':
        data = new Uint8Array(d.buffer, d.byteOffset, d.byteLength).slice();
        break;
      case 'int32':
        if (!(d instanceof Int32Array)) throw new Error(`IntModel .lowbit: tensor '${name}' should be int32`);
        data = d;
        break;
      case 'float32':
        if (!(d instanceof Float32Array)) throw new Error(`IntModel .lowbit: tensor '${name}' should be float32`);
        data = d;
        break;
      default:
        throw new Error(`IntModel .lowbit: tensor '${name}' has dtype ${t.dtype}, which the integer runtime does not use`);
    }
    tensors.set(name, { dtype: t.dtype, shape: [...t.shape], data });
  }
  const nodes = file.graph.map((n) => {
    const { tensors: _refs, ...rest } = n as LowbitNode & Record<string, unknown>;
    void _refs;
    return rest as unknown as IntNode;
  });
  const { intModel: _h, ...userMeta } = meta;
  void _h;
  const graph: IntGraph = {
    format: GRAPH_FORMAT, version: header.version, inputShape: header.inputShape as number[], nodes,
    ...(Object.keys(userMeta).length > 0 ? { metadata: userMeta } : {}),
  };
  return new IntModel(graph, tensors);
}

/** Writes `model` to a .lowbit file; returns the bytes written. */
export function saveIntModel(path: string, model: IntModel): number {
  return writeLowbit(path, intModelToLowbit(model));
}

/** Reads an IntModel from a .lowbit file (validated by the format reader first). */
export function loadIntModel(path: string): IntModel {
  return intModelFromLowbit(readLowbit(path));
}
