/**
 * Checks an IntModel graph before anything runs: a .lowbit file is untrusted input, and a graph
 * whose conv padding, stride or input shape is absurd would otherwise make the executor allocate
 * gigabytes or compute for hours (or fail deep inside with "Invalid typed array length"). The walk
 * follows one sample's shape through the nodes as the executors do, and checks every geometry
 * field, every tensor a node refers to, and the size of every activation.
 */
import type { AddNode, IntGraph, IntNode, IntTensor, LayerNode } from './intmodel.ts';
import { convOutputSize } from './ops.ts';

/** Largest activation of one sample (elements) a graph may produce. */
export const MAX_SAMPLE_ELEMENTS = 2 ** 24;
/** Most multiply-accumulates per sample a graph may need (about ResNet-50 at 224×224). */
export const MAX_SAMPLE_MACS = 2 ** 32;
/** Largest kernel extent, stride, padding and pooling window (per axis). */
const MAX_WINDOW = 4096;

export class IntGraphError extends Error {
  override name = 'IntGraphError';
}

function fail(where: string, message: string): never {
  throw new IntGraphError(`IntModel: ${where}: ${message}`);
}

function isInt(v: unknown, lo: number, hi: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}

function pair(v: unknown, lo: number, hi: number, where: string, field: string): [number, number] {
  if (!Array.isArray(v) || v.length !== 2 || !isInt(v[0], lo, hi) || !isInt(v[1], lo, hi)) fail(where, `${field} must be two integers in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  return [v[0], v[1]];
}

function elements(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

function checkSize(shape: readonly number[], where: string): void {
  if (shape.some((d) => d < 1)) fail(where, `produces an empty activation [${shape.join(', ')}]`);
  if (elements(shape) > MAX_SAMPLE_ELEMENTS) fail(where, `activation [${shape.join(', ')}] exceeds ${MAX_SAMPLE_ELEMENTS} elements per sample`);
}

/** A tensor the node refers to: present, of one of `dtypes`, with `count` elements when given. */
function tensorRef(tensors: ReadonlyMap<string, IntTensor>, name: unknown, where: string, dtypes: readonly string[], count?: number): IntTensor {
  if (typeof name !== 'string') fail(where, `tensor reference ${JSON.stringify(name)} is not a name`);
  const t = tensors.get(name);
  if (!t) fail(where, `missing tensor '${name}'`);
  if (!dtypes.includes(t.dtype)) fail(where, `tensor '${name}' is ${t.dtype}, expected ${dtypes.join(' or ')}`);
  if (count !== undefined && elements(t.shape) !== count) fail(where, `tensor '${name}' has shape [${t.shape.join(', ')}], expected ${count} elements`);
  return t;
}

function checkInputQuantizer(node: { input: LayerNode['input'] }, where: string): void {
  const q = node.input as Record<string, unknown> | undefined;
  if (!q || typeof q !== 'object') fail(where, 'has no input quantizer');
  if (q.mode === 'sign') return;
  if (q.mode !== 'affine') fail(where, `input mode ${JSON.stringify(q.mode)} is not 'affine' or 'sign'`);
  if (typeof q.scale !== 'number' || !(q.scale > 0) || !Number.isFinite(q.scale)) fail(where, `input scale ${JSON.stringify(q.scale)} must be a finite number > 0`);
  if (!isInt(q.qmin, -(2 ** 31), 2 ** 31 - 1) || !isInt(q.qmax, q.qmin as number, 2 ** 31 - 1)) fail(where, `input range [${String(q.qmin)}, ${String(q.qmax)}] is not an integer range`);
  if (!isInt(q.zeroPoint, -(2 ** 31), 2 ** 31 - 1)) fail(where, `input zero point ${JSON.stringify(q.zeroPoint)} is not an integer`);
}

/** Largest R (`groupShift`) a per-group layer may use. */
export const MAX_GROUP_SHIFT = 24;

/**
 * The per-group fields of a linear node (graph version 3; see intmodel.ts): G divides K, the
 * multiplier tensor is int32 [O, K/G] with every r in [0, 2^R], R in [0, MAX_GROUP_SHIFT], the
 * output stage requantizes or dequantizes, and |A·2^k + bias| stays below 2^53.
 */
function checkGroups(node: LayerNode, K: number, version: number, tensors: ReadonlyMap<string, IntTensor>, where: string): void {
  const n = node as unknown as Record<string, unknown>;
  const fields = ['weightGroupSize', 'groupMultipliers', 'groupShift'].filter((f) => n[f] !== undefined);
  if (fields.length === 0) return;
  if (version !== 3) fail(where, `has per-group weights (${fields.join(', ')}), which need graph version 3 (this graph is version ${version})`);
  if (fields.length !== 3) fail(where, 'per-group weights need weightGroupSize, groupMultipliers and groupShift together');
  if (node.op !== 'linear') fail(where, 'per-group weights are defined for linear nodes only');
  const G = n.weightGroupSize;
  if (!isInt(G, 1, K) || K % G !== 0) fail(where, `weightGroupSize ${JSON.stringify(G)} must be a positive integer dividing inFeatures ${K}`);
  const R = n.groupShift;
  if (!isInt(R, 0, MAX_GROUP_SHIFT)) fail(where, `groupShift ${JSON.stringify(R)} must be an integer in [0, ${MAX_GROUP_SHIFT}]`);
  const O = node.outFeatures;
  const t = tensorRef(tensors, n.groupMultipliers, where, ['int32'], O * (K / G));
  if (t.shape.length !== 2 || t.shape[0] !== O || t.shape[1] !== K / G) fail(where, `tensor '${String(n.groupMultipliers)}' has shape [${t.shape.join(', ')}], expected [${O}, ${K / G}]`);
  const top = 2 ** R;
  const r = t.data as Int32Array;
  for (let i = 0; i < r.length; i++) if (r[i]! < 0 || r[i]! > top) fail(where, `group multiplier ${i} is ${r[i]}, outside [0, 2^${R}]`);
  const o = node.output as unknown as Record<string, unknown>;
  if (o.mode !== 'requantize' && o.mode !== 'dequantize') fail(where, `a per-group layer needs a requantize or dequantize output, not ${JSON.stringify(o.mode)}`);
  const inp = node.input;
  const maxX = inp.mode === 'sign' ? 1 : Math.max(Math.abs(inp.qmin - inp.zeroPoint), Math.abs(inp.qmax - inp.zeroPoint));
  const maxW = node.weightFormat === 'int8' ? 128 : node.weightFormat === 'int4' ? 8 : 2;
  const k = o.mode === 'requantize' ? (o.biasShift as number) : 0;
  const bound = K * maxX * maxW * 2 ** (R + k) + 2 ** 31;
  if (!(bound < 2 ** 53)) fail(where, `the per-group sum may reach ${bound} (K ${K}, inputs up to ${maxX}, weights up to ${maxW}, 2^(groupShift + biasShift) = 2^${R + k}), beyond 2^53`);
}

function checkLayer(node: LayerNode, shape: number[], tensors: ReadonlyMap<string, IntTensor>, version: number): { out: number[]; macs: number } {
  const where = `${node.op} '${node.name}'`;
  checkInputQuantizer(node, where);
  if (!isInt(node.outFeatures, 1, MAX_SAMPLE_ELEMENTS) || !isInt(node.inFeatures, 1, MAX_SAMPLE_ELEMENTS)) fail(where, `inFeatures ${node.inFeatures} / outFeatures ${node.outFeatures} must be positive integers`);
  if (!isInt(node.weightBits, 1, 8)) fail(where, `weightBits ${JSON.stringify(node.weightBits)} must be an integer in [1, 8]`);
  const O = node.outFeatures;
  let K: number;
  let out: number[];
  if (node.op === 'linear') {
    if (shape.length !== 1 || shape[0] !== node.inFeatures) fail(where, `expects ${node.inFeatures} features per sample, gets [${shape.join(', ')}]`);
    K = node.inFeatures;
    out = [O];
  } else {
    const g = node.conv as unknown as Record<string, unknown> | undefined;
    if (!g || typeof g !== 'object') fail(where, 'has no geometry');
    const k = pair(g.kernelSize, 1, MAX_WINDOW, where, 'kernelSize');
    const s = pair(g.stride, 1, MAX_WINDOW, where, 'stride');
    const p = pair(g.padding, 0, MAX_WINDOW, where, 'padding');
    const d = pair(g.dilation, 1, MAX_WINDOW, where, 'dilation');
    if (!isInt(g.groups, 1, MAX_SAMPLE_ELEMENTS) || !isInt(g.inChannels, 1, MAX_SAMPLE_ELEMENTS) || g.outChannels !== O) fail(where, `channels ${String(g.inChannels)} -> ${String(g.outChannels)} (groups ${String(g.groups)}) do not match outFeatures ${O}`);
    const groups = g.groups;
    if (g.inChannels % groups !== 0 || O % groups !== 0) fail(where, `groups ${groups} must divide ${g.inChannels} input and ${O} output channels`);
    if (g.conv1d !== undefined && typeof g.conv1d !== 'boolean') fail(where, `conv1d ${JSON.stringify(g.conv1d)} must be a boolean`);
    const conv1d = g.conv1d === true;
    if (conv1d) {
      // a Conv1d: [C, L] per sample, the conv2d geometry of height 1
      if (k[0] !== 1 || s[0] !== 1 || p[0] !== 0 || d[0] !== 1) fail(where, `is a conv1d, so kernelSize, stride, padding and dilation must be [1, ·], [1, ·], [0, ·], [1, ·], got ${JSON.stringify([k, s, p, d])}`);
      if (shape.length !== 2 || shape[0] !== g.inChannels) fail(where, `expects [${g.inChannels}, L] per sample, gets [${shape.join(', ')}]`);
    } else if (shape.length !== 3 || shape[0] !== g.inChannels) fail(where, `expects [${g.inChannels}, H, W] per sample, gets [${shape.join(', ')}]`);
    const [oh, ow] = conv1d ? convOutputSize(1, shape[1]!, { kernelSize: k, stride: s, padding: p, dilation: d }) : convOutputSize(shape[1]!, shape[2]!, { kernelSize: k, stride: s, padding: p, dilation: d });
    if (node.inFeatures !== g.inChannels) fail(where, `inFeatures ${node.inFeatures} is not inChannels ${g.inChannels}`);
    K = (g.inChannels / groups) * k[0] * k[1];
    out = conv1d ? [O, ow] : [O, oh, ow];
  }
  checkSize(out, where);
  const weightDtype = ({ int8: 'int8', int4: 'int4', int2: 'int2', ternary: 'int2', binary: 'bits' } as Record<string, string>)[node.weightFormat];
  if (weightDtype === undefined) fail(where, `weightFormat ${JSON.stringify(node.weightFormat)} is not int8, int4, int2, ternary or binary`);
  tensorRef(tensors, node.weight, where, [weightDtype], O * K);
  const o = node.output as unknown as Record<string, unknown> | undefined;
  if (!o || typeof o !== 'object') fail(where, 'has no output stage');
  if (o.mode === 'requantize') {
    if (!isInt(o.biasShift, 0, 31)) fail(where, `biasShift ${JSON.stringify(o.biasShift)} must be an integer in [0, 31]`);
    if (!isInt(o.lo, -(2 ** 31), 2 ** 31 - 1) || !isInt(o.hi, o.lo as number, 2 ** 31 - 1)) fail(where, `output range [${String(o.lo)}, ${String(o.hi)}] is not an integer range`);
    for (const key of ['bias', 'multiplier', 'shift']) tensorRef(tensors, o[key], where, ['int32'], O);
  } else if (o.mode === 'dequantize') {
    for (const key of ['scale', 'bias']) tensorRef(tensors, o[key], where, ['float32'], O);
  } else if (o.mode === 'sign') {
    for (const key of ['threshold', 'direction']) tensorRef(tensors, o[key], where, ['int32'], O);
  } else fail(where, `output mode ${JSON.stringify(o.mode)} is not requantize, dequantize or sign`);
  checkGroups(node, K, version, tensors, where);
  return { out, macs: elements(out) * K };
}

function checkPool(node: Extract<IntNode, { op: 'maxpool2d' | 'avgpool2d' | 'adaptiveavgpool2d' }>, shape: number[]): number[] {
  const where = `${node.op} '${node.name}'`;
  if (shape.length !== 3) fail(where, `expects [C, H, W] per sample, gets [${shape.join(', ')}]`);
  const [c, h, w] = shape as [number, number, number];
  let out: number[];
  if (node.op === 'adaptiveavgpool2d') {
    const [oh, ow] = pair(node.outputSize, 1, MAX_WINDOW, where, 'outputSize');
    if (h % oh !== 0 || w % ow !== 0) fail(where, `input ${h}x${w} is not a multiple of ${oh}x${ow}`);
    out = [c, oh, ow];
  } else {
    const k = pair(node.kernelSize, 1, MAX_WINDOW, where, 'kernelSize');
    const s = pair(node.stride, 1, MAX_WINDOW, where, 'stride');
    const p = pair(node.padding, 0, MAX_WINDOW, where, 'padding');
    if (2 * p[0] > k[0] || 2 * p[1] > k[1]) fail(where, `padding [${p.join(', ')}] exceeds half the window [${k.join(', ')}]`);
    out = [c, Math.floor((h + 2 * p[0] - k[0]) / s[0]) + 1, Math.floor((w + 2 * p[1] - k[1]) / s[1]) + 1];
  }
  if (!isInt(node.zeroPoint, -(2 ** 31), 2 ** 31 - 1)) fail(where, `zero point ${JSON.stringify(node.zeroPoint)} is not an int32`);
  if (node.op !== 'maxpool2d' && node.fracBits !== undefined && !isInt(node.fracBits, 0, 24)) fail(where, `fracBits ${JSON.stringify(node.fracBits)} must be an integer in [0, 24]`);
  checkSize(out, where);
  return out;
}

/** What a valid graph needs per sample. */
export interface IntGraphSize {
  /** The largest activation (elements). */
  readonly maxElements: number;
  /** Multiply-accumulates of all layers. */
  readonly macs: number;
  /**
   * Per node, the indices of the nodes whose outputs it takes (−1: the model input): version 1,
   * the previous node; version 2, its `inputs` resolved.
   */
  readonly inputRefs: readonly (readonly number[])[];
  /** Per node, the shape of its output for one sample (no batch dimension). */
  readonly shapes: readonly (readonly number[])[];
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/**
 * The input references of every node (see `IntGraphSize.inputRefs`), checked: version 2 needs
 * unique node names, `inputs` on every node naming earlier nodes (none for quantize, two for add,
 * one otherwise), and every node's output used by a later one except the last's; version 1 allows
 * no `inputs` and no add.
 */
function inputRefs(graph: IntGraph): number[][] {
  const nodes = graph.nodes;
  if (graph.version === 1) {
    return nodes.map((node, i) => {
      const where = `node ${i} (${String(node?.op)})`;
      if (node && typeof node === 'object' && 'inputs' in node) fail(where, "has 'inputs', which need graph version 2");
      if (node?.op === 'add') fail(where, 'an add node needs graph version 2');
      return [i - 1];
    });
  }
  if (graph.version !== 2 && graph.version !== 3) fail('graph', `version ${JSON.stringify(graph.version)} is not 1, 2 or 3`);
  const index = new Map<string, number>();
  const used = new Uint8Array(nodes.length);
  const refs = nodes.map((node, i) => {
    const where = `node ${i} (${String(node?.op)})`;
    if (!node || typeof node !== 'object') fail(where, 'is not an object');
    if (typeof node.name !== 'string' || node.name === '') fail(where, `name ${JSON.stringify(node.name)} must be a non-empty string`);
    if (index.has(node.name)) fail(where, `name '${node.name}' is used by node ${index.get(node.name)} too (version ${graph.version} names must be unique)`);
    const inputs: unknown = node.inputs;
    const arity = node.op === 'quantize' ? 0 : node.op === 'add' ? 2 : 1;
    if (!Array.isArray(inputs) || inputs.length !== arity) fail(where, `inputs ${JSON.stringify(inputs)} must list ${arity} node name(s)`);
    const r = inputs.map((name: unknown) => {
      const k = typeof name === 'string' ? index.get(name) : undefined;
      if (k === undefined) fail(where, `input ${JSON.stringify(name)} does not name an earlier node`);
      used[k] = 1;
      return k;
    });
    index.set(node.name, i);
    return node.op === 'quantize' ? [-1] : r;
  });
  for (let i = 0; i < nodes.length - 1; i++) if (!used[i]) fail(`node ${i} (${nodes[i]!.op} '${nodes[i]!.name}')`, 'its output is never used (only the last node may be unconsumed)');
  return refs;
}

function checkAdd(node: AddNode, a: readonly number[], b: readonly number[]): void {
  const where = `add '${node.name}'`;
  if (a.length !== b.length || a.some((d, i) => d !== b[i])) fail(where, `adds [${a.join(', ')}] and [${b.join(', ')}]: the shapes must be equal`);
  const pairOf = (v: unknown, lo: number, hi: number, field: string): void => {
    if (!Array.isArray(v) || v.length !== 2 || !isInt(v[0], lo, hi) || !isInt(v[1], lo, hi)) fail(where, `${field} must be two integers in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  };
  pairOf(node.inputZeroPoints, INT32_MIN, INT32_MAX, 'inputZeroPoints');
  pairOf(node.multipliers, -INT32_MAX, INT32_MAX, 'multipliers');
  const scales: unknown = node.inputScales;
  for (const s of [node.scale, ...(Array.isArray(scales) && scales.length === 2 ? scales : [NaN])]) {
    if (typeof s !== 'number' || !(s > 0) || !Number.isFinite(s)) fail(where, `scales ${JSON.stringify({ scale: node.scale, inputScales: scales })} must be finite numbers > 0`);
  }
  const output: unknown = node.output;
  if (output !== undefined && output !== 'sign') fail(where, `output ${JSON.stringify(output)} must be 'sign' or absent`);
  if (!isInt(node.shift, 0, 62)) fail(where, `shift ${JSON.stringify(node.shift)} must be an integer in [0, 62]`);
  if (!isInt(node.zeroPoint, INT32_MIN, INT32_MAX)) fail(where, `zero point ${JSON.stringify(node.zeroPoint)} is not an int32`);
  if (!isInt(node.lo, INT32_MIN, INT32_MAX) || !isInt(node.hi, node.lo, INT32_MAX)) fail(where, `output range [${String(node.lo)}, ${String(node.hi)}] is not an int32 range`);
}

/**
 * Throws IntGraphError unless every node of `graph` is well-formed for one sample of
 * `graph.inputShape`, every activation stays within MAX_SAMPLE_ELEMENTS and the layers within
 * MAX_SAMPLE_MACS; returns those per-sample sizes.
 */
export function validateIntGraph(graph: IntGraph, tensors: ReadonlyMap<string, IntTensor>): IntGraphSize {
  const input = graph.inputShape;
  if (!Array.isArray(input) || input.length < 1 || input.length > 3 || !input.every((d) => isInt(d, 1, MAX_SAMPLE_ELEMENTS))) fail('inputShape', `must be 1 to 3 positive integers, got ${JSON.stringify(input)}`);
  checkSize(input, 'inputShape');
  if (!Array.isArray(graph.nodes) || graph.nodes.length === 0 || graph.nodes[0]!.op !== 'quantize') fail('graph', 'must start with a quantize node');
  const refs = inputRefs(graph);
  const shapes: number[][] = [];
  let maxElements = elements(input);
  let macs = 0;
  for (const [i, node] of graph.nodes.entries()) {
    const where = `node ${i} (${String(node?.op)})`;
    if (!node || typeof node !== 'object') fail(where, 'is not an object');
    const inShapes = refs[i]!.map((k) => (k < 0 ? [...input] : shapes[k]!));
    let shape = inShapes[0]!;
    switch (node.op) {
      case 'quantize':
        checkInputQuantizer(node, where);
        break;
      case 'conv2d':
      case 'linear': {
        const layer = checkLayer(node, shape, tensors, graph.version);
        shape = layer.out;
        macs += layer.macs;
        if (macs > MAX_SAMPLE_MACS) fail(`${node.op} '${node.name}'`, `the layers so far need ${macs} multiply-accumulates per sample, over the limit of ${MAX_SAMPLE_MACS}`);
        break;
      }
      case 'add':
        checkAdd(node, inShapes[0]!, inShapes[1]!);
        break;
      case 'maxpool2d':
      case 'avgpool2d':
      case 'adaptiveavgpool2d':
        shape = checkPool(node, shape);
        break;
      case 'clamp':
        for (const bound of [node.lo, node.hi]) if (bound !== null && (typeof bound !== 'number' || Number.isNaN(bound))) fail(where, `bound ${JSON.stringify(bound)} must be a number or null`);
        break;
      case 'flatten': {
        // Node dims count the batch dimension (dim 0), as in torch.flatten.
        const rank = shape.length + 1;
        const start = isInt(node.startDim, -rank, rank - 1) ? (node.startDim < 0 ? node.startDim + rank : node.startDim) : -1;
        const end = isInt(node.endDim, -rank, rank - 1) ? (node.endDim < 0 ? node.endDim + rank : node.endDim) : -1;
        if (start < 1 || end < start) fail(where, `dims ${JSON.stringify(node.startDim)}..${JSON.stringify(node.endDim)} must lie within the sample dims 1..${rank - 1}`);
        shape = [...shape.slice(0, start - 1), elements(shape.slice(start - 1, end)), ...shape.slice(end)];
        break;
      }
      default:
        fail(where, `unknown node op '${String((node as { op: unknown }).op)}'`);
    }
    shapes.push(shape);
    maxElements = Math.max(maxElements, elements(shape));
  }
  return { maxElements, macs, inputRefs: refs, shapes };
}
