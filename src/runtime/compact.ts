/**
 * Physical removal of pruned output channels from an IntModel (0-bit channels of a mixed-precision
 * plan). A pruned channel of layer L has all-zero weights and a zero bias, so its requantized
 * output is the zero point of the next layer's input domain: the real value 0, which ReLU, max
 * pooling (of one channel's zeros) and average pooling keep at 0. The next layer computes
 * Σ_k (x_k − z_x)·w[c, k], to which such an input contributes exactly 0, so removing
 *   - the channel's weight row and per-channel output tensors from L, and
 *   - the matching input channel (conv: its kh·kw columns; Linear after an NCHW flatten: the
 *     H·W features [c·H·W, (c+1)·H·W)) from the next layer's weights
 * changes no integer of any kept channel: the compacted model's logits equal the uncompacted
 * model's bit for bit (convert checks this on its sample).
 */
import { IntModel, packWeightTensor, type IntNode, type IntTensor, type LayerNode } from './intmodel.ts';

/** Layer name → pruned output channel indices. */
export type PrunedChannels = ReadonlyMap<string, readonly number[]>;

/** The rows `keepRows` and columns `keepCols` of a row-major [rows, cols] matrix. */
function select(values: Int8Array, cols: number, keepRows: readonly number[], keepCols: readonly number[] | null): Int8Array {
  const width = keepCols ? keepCols.length : cols;
  const out = new Int8Array(keepRows.length * width);
  keepRows.forEach((r, i) => {
    if (keepCols) keepCols.forEach((c, j) => (out[i * width + j] = values[r * cols + c]!));
    else out.set(values.subarray(r * cols, (r + 1) * cols), i * width);
  });
  return out;
}

/** Entries `keep` of a per-channel tensor (int32 or float32, shape [O]). */
function sliceChannels(t: IntTensor, keep: readonly number[]): IntTensor {
  const data = t.data instanceof Int32Array ? Int32Array.from(keep, (c) => (t.data as Int32Array)[c]!) : t.data instanceof Float32Array ? Float32Array.from(keep, (c) => (t.data as Float32Array)[c]!) : null;
  if (!data) throw new Error(`compactIntModel: a per-channel output tensor of dtype ${t.dtype}`);
  return { dtype: t.dtype, shape: [keep.length], data };
}

/**
 * The IntModel without the pruned output channels of `pruned` (layer name → channel indices) and
 * without the next layer's matching inputs (see the module comment). Refused with an error: a
 * pruned channel in the last layer, in a layer whose output is binarized for the next layer (sign
 * of 0 is +1, not 0), a grouped conv consuming pruned channels, a flatten other than NCHW from
 * dim 1, or every channel of a layer pruned. The graph's metadata records `prunedChannels`.
 */
export function compactIntModel(model: IntModel, pruned: PrunedChannels): IntModel {
  const layerNodes = model.nodes.filter((n): n is LayerNode => n.op === 'conv2d' || n.op === 'linear');
  for (const name of pruned.keys()) if (!layerNodes.some((n) => n.name === name)) throw new Error(`compactIntModel: no layer '${name}'`);
  const tensors = new Map(model.tensors);
  const nodes: IntNode[] = [];
  /** Channels of the value flowing between layers that survive, and how many there were. */
  let flowing: { kept: number[]; channels: number } | null = null;
  const record: Record<string, number[]> = {};
  for (const node of model.nodes) {
    if (node.op === 'flatten') {
      if (flowing && node.startDim !== 1) throw new Error(`compactIntModel: '${node.name}' flattens from dim ${node.startDim}; pruned channels need an NCHW flatten from dim 1`);
      nodes.push(node);
      continue;
    }
    if (node.op !== 'conv2d' && node.op !== 'linear') {
      nodes.push(node); // quantize, pooling, clamp: channel-wise
      continue;
    }
    const weight = model.tensor(node.weight);
    const rows = node.outFeatures;
    let values = model.weightValues(node);
    let cols = values.length / rows;
    let next: LayerNode = { ...node };
    let shape = [...weight.shape];
    if (flowing) {
      const from = flowing;
      let per: number;
      if (node.op === 'conv2d') {
        const g = node.conv!;
        if (g.groups !== 1) throw new Error(`compactIntModel: '${node.name}' is a grouped conv (groups ${g.groups}); its input channels cannot be pruned`);
        if (g.inChannels !== from.channels) throw new Error(`compactIntModel: '${node.name}' has ${g.inChannels} input channels, the value reaching it ${from.channels}`);
        per = g.kernelSize[0] * g.kernelSize[1];
        next = { ...next, inFeatures: from.kept.length, conv: { ...g, inChannels: from.kept.length } };
        shape = [shape[0]!, from.kept.length, ...shape.slice(2)];
      } else {
        if (node.inFeatures % from.channels !== 0) throw new Error(`compactIntModel: '${node.name}' has ${node.inFeatures} input features, not a multiple of the ${from.channels} channels reaching it`);
        per = node.inFeatures / from.channels;
        next = { ...next, inFeatures: from.kept.length * per };
        shape = [shape[0]!, from.kept.length * per];
      }
      const keepCols = from.kept.flatMap((c) => Array.from({ length: per }, (_, k) => c * per + k));
      values = select(values, cols, [...Array(rows).keys()], keepCols);
      cols = keepCols.length;
    }
    const drop = pruned.get(node.name) ?? [];
    flowing = null;
    if (drop.length > 0) {
      const dropped = new Set(drop);
      for (const c of dropped) if (!Number.isInteger(c) || c < 0 || c >= rows) throw new Error(`compactIntModel: '${node.name}': channel ${c} out of [0, ${rows})`);
      if (node === layerNodes[layerNodes.length - 1]) throw new Error(`compactIntModel: '${node.name}' is the last layer (its outputs are the logits) and may not be pruned`);
      if (node.output.mode === 'sign') throw new Error(`compactIntModel: '${node.name}' feeds a binary (sign) input, where a pruned channel reads +1, not 0`);
      const keep = [...Array(rows).keys()].filter((c) => !dropped.has(c));
      if (keep.length === 0) throw new Error(`compactIntModel: every channel of '${node.name}' is pruned`);
      values = select(values, cols, keep, null);
      next = node.op === 'conv2d' ? { ...next, outFeatures: keep.length, conv: { ...next.conv!, outChannels: keep.length } } : { ...next, outFeatures: keep.length };
      shape = [keep.length, ...shape.slice(1)];
      const o = node.output;
      const perChannel = o.mode === 'requantize' ? [o.bias, o.multiplier, o.shift] : o.mode === 'dequantize' ? [o.scale, o.bias] : [];
      for (const key of perChannel) tensors.set(key, sliceChannels(model.tensor(key), keep));
      flowing = { kept: keep, channels: rows };
      record[node.name] = [...dropped].sort((a, b) => a - b);
    }
    tensors.set(node.weight, packWeightTensor(weight.dtype, values, shape));
    nodes.push(next);
  }
  const metadata = { ...(model.graph.metadata ?? {}), prunedChannels: record };
  return new IntModel({ ...model.graph, nodes, metadata }, tensors);
}
