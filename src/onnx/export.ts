/**
 * ONNX export: a float32 model (an nn `Module`) as a plain float graph, or an integer model
 * (`IntModel`, or a prepared fake-quant `Module`, converted first) as a QDQ graph
 * (QuantizeLinear/DequantizeLinear around float ops), the format onnxruntime turns into integer
 * kernels.
 *
 * Float32 (`Module`): the forward must apply its leaf modules in registration order (lenet5, mlp,
 * cnn, any Sequential), as for `convert`; the exporter runs the model once on a random sample and
 * checks that the chain of leaves gives the same output, and refuses the model otherwise. Leaves:
 * Linear → Gemm (MatMul + Add on rank > 2), Conv2d → Conv, Conv1d → Conv (1-D attributes), BatchNorm1d/2d → BatchNormalization,
 * ReLU → Relu, ReLU6 → Clip, LeakyReLU, Sigmoid, Tanh, GELU (Erf or Tanh composition; Gelu at
 * opset ≥ 20 in the default profile), MaxPool2d → MaxPool, AvgPool2d → AveragePool
 * (count_include_pad), AdaptiveAvgPool2d → GlobalAveragePool / AveragePool, Flatten → Flatten
 * (Reshape when it does not keep the batch dim alone), Dropout / Identity → nothing. Anything
 * else is refused with an error naming the module.
 *
 * QDQ (`IntModel`): every value the IntModel keeps as integers becomes a quantized tensor
 * (uint8 when the domain's range [qmin, qmax] fits [0, 255], else int8) made by QuantizeLinear
 * with that domain's scale and zero point; a layer reads it through DequantizeLinear, its weights
 * are int8 (or int4, opset 21) initializers with a per-output-channel DequantizeLinear (axis 0,
 * zero point 0) and its bias an int32 initializer with scale s_in·s_w. The IntModel stores
 * s_in·s_w (times a folded BatchNorm's scale) only inside its fixed-point multiplier, so the
 * effective weight scale is recovered as A = M0·2^−(n−k)·s_out / s_in (relative error ≤ 2^−31),
 * and the float bias as bias·A/2^k. Channels with A < 0 (a BatchNorm with γ < 0) get their
 * integer weights negated so every scale is positive. ReLU / ReLU6 and narrower-than-8-bit ranges
 * are the requantization bounds [lo, hi] of the IntModel; here a bound lo = z is a float Relu
 * before QuantizeLinear (which rounds half to even and saturates to the container, like the
 * IntModel), other bounds an integer Clip after it — so onnxruntime still fuses Conv + Quantize-
 * Linear into an integer kernel. Max pooling runs between a DequantizeLinear and a QuantizeLinear of the same
 * parameters (exact), Flatten on the quantized tensor, average pooling in float followed by the
 * next layer's QuantizeLinear (the IntModel keeps 8 extra fractional bits there instead).
 * A float model with `nn.Add` merges is written from its captured graph of leaf calls (Add → Add).
 * A residual IntModel (graph version 2, a DAG): every node reads the values its `inputs` name; an
 * integer add becomes DequantizeLinear ×2 → Add → QuantizeLinear in the add's output domain (a
 * fused ReLU as the Relu / Clip above), or stays float when an average pooling follows (where the
 * IntModel keeps 8 extra fractional bits); a layer the IntModel runs twice (its output needed in
 * two domains) is written twice.
 * Binary (sign) activations (Bi-Real ResNets, w1a1 MLPs) travel as int8 ±1 (scale 1, zero point 0),
 * so a binary layer reads them through the same DequantizeLinear. A layer's sign output
 * (d·acc ≥ t) runs its Conv / Gemm on the integers themselves (input and weights dequantized with
 * scale 1, so the float32 accumulator is exact while every partial sum stays below 2^24; larger
 * layers are refused) and compares it with the per-channel thresholds: Mul → GreaterOrEqual →
 * Where → QuantizeLinear. A sign add ((a − z_a)·M_a + (b − z_b)·M_b ≥ 0) is exact int64
 * arithmetic: Cast → Sub → Mul → Add → GreaterOrEqual → Where → QuantizeLinear. Both give the
 * IntModel's ±1 exactly; a requantizing binary conv is a QDQ float Conv like any other layer.
 * Where the two differ: the QDQ graph accumulates in float32 (onnxruntime may fuse it back to
 * integers) and rounds the bias to s_in·s_w, the IntModel rounds once in fixed point; results
 * agree except at rounding ties (see docs/onnx.md for measured agreement).
 *
 * Per-group weights (graph version 3, a Linear with `weightGroupSize` G): the weight's
 * DequantizeLinear is blocked (opset 21: axis 1, block_size G, scales [O, K/G] = the IntModel's
 * s_max·r·2^−R per row and group), the bias in units of s_in·s_max; the web profile (opset 13)
 * and an explicit opset below 21 refuse such a model.
 *
 * Profiles: `web` targets onnxruntime-web (see docs/onnx.md for the list): opset 13, no int4
 * tensors (4-bit weights are stored in int8 containers: same values, same arithmetic), no Gelu
 * op (Erf composition), Flatten instead of Reshape where possible.
 */
import { noGrad } from '../autograd/engine.ts';
import { roundHalfEven } from '../backend/reference/elementwise.ts';
import { writeFileAtomic } from '../format/files.ts';
import { GELU, Identity, LeakyReLU, ReLU, ReLU6, Sigmoid, Tanh } from '../nn/activation.ts';
import { BatchNorm } from '../nn/batchnorm.ts';
import { Conv2d } from '../nn/conv.ts';
import { Conv1d } from '../nn/conv1d.ts';
import { Dropout } from '../nn/dropout.ts';
import { Flatten } from '../nn/flatten.ts';
import { Linear } from '../nn/linear.ts';
import type { Module, TensorModule } from '../nn/module.ts';
import { AdaptiveAvgPool2d, AvgPool2d, MaxPool2d } from '../nn/pooling.ts';
import { Sequential } from '../nn/sequential.ts';
import { Add } from '../nn/merge.ts';
import { QuantLayer } from '../quant/qat/layers.ts';
import { captureLeaves, convert } from '../runtime/convert.ts';
import { captureGraph, ConvertError, type CapturedGraph } from '../runtime/capture.ts';
import { IntModel, type AddNode, type IntNode, type LayerInput, type LayerNode } from '../runtime/intmodel.ts';
import { convOutputSize } from '../runtime/ops.ts';
import { Tensor } from '../tensor/tensor.ts';
import {
  encodeModel, OnnxAttributeType, OnnxDataType, OnnxError,
  type OnnxAttribute, type OnnxDimension, type OnnxModel, type OnnxNode, type OnnxValueInfo,
} from './proto.ts';
import { attrFloat, attrInt, attrInts, NamedGraph } from './graph.ts';

/** `default`: onnxruntime (CPU); `web`: what onnxruntime-web accepts (docs/onnx.md). */
export type OnnxProfile = 'default' | 'web';
export const ONNX_PROFILES = ['default', 'web'] as const;

/** Lowest and highest opset the exporter writes. */
export const MIN_EXPORT_OPSET = 13;
export const MAX_EXPORT_OPSET = 21;

export interface OnnxExportOptions {
  /** Shape of one input sample, e.g. [1, 28, 28]. Required for a Module; an IntModel knows its own. */
  readonly inputShape?: readonly number[];
  /** Opset of the default domain (default 13, or 21 when int4 weights are written). */
  readonly opset?: number;
  /** Target runtime (default 'default'). */
  readonly profile?: OnnxProfile;
  /**
   * Container of quantized weights: 8 = int8 everywhere; 4 = int4 everywhere (every layer's
   * weights must lie in [−8, 7]; opset 21). Default: int4 for layers whose weights are at most
   * 4-bit (int4/int2/ternary/binary formats), int8 for the rest; int8 everywhere in the web profile.
   */
  readonly weightBits?: 8 | 4;
  /**
   * Scale of the int32 biases of a QDQ export. 'standard': s_in·s_w, the textbook QDQ bias that
   * onnxruntime fuses with the convolution into an integer kernel (QLinearConv); the bias is
   * rounded to one accumulator step. 'intmodel': s_in·s_w·2^−k with the IntModel's own k
   * fractional bits (its `biasShift`), which reproduces the IntModel's bias exactly; onnxruntime
   * then keeps those layers in float (DequantizeLinear + Conv/Gemm).
   * Default: per layer, 'standard' for int8 weights and 'intmodel' for int4 weights — onnxruntime
   * runs int4 layers in float whatever the bias, so there the exact bias costs no speed
   * (docs/onnx.md, "Measured: the bias scale at 4 bits").
   */
  readonly bias?: 'standard' | 'intmodel';
  /** Graph input name (default 'input'). */
  readonly inputName?: string;
  /** Graph output name (default 'logits'). */
  readonly outputName?: string;
  /** Stored as the model's metadata_props. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** The smallest and largest integer weight of a conv / linear layer (0 included): whether it fits int4. */
export function weightRange(im: IntModel, layer: LayerNode): [number, number] {
  let lo = 0;
  let hi = 0;
  for (const v of im.weightValues(layer)) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** What `buildOnnxModel` produced. */
export interface OnnxExportResult {
  /** The ModelProto as a plain object (encode with `encodeModel`). */
  readonly model: OnnxModel;
  readonly kind: 'fp32' | 'qdq';
  readonly opset: number;
  readonly profile: OnnxProfile;
  /** Per quantized layer: the weight container written ('int8' | 'int4'); empty for fp32. */
  readonly weightTypes: Readonly<Record<string, 'int8' | 'int4'>>;
  /** Decisions worth telling the user (e.g. 4-bit weights stored as int8 for the web profile). */
  readonly notes: readonly string[];
}

const INT32_MAX = 2 ** 31 - 1;

/**
 * Builds the ONNX model of `model`: a float graph for a float32 Module, a QDQ graph for an
 * IntModel or a prepared fake-quant Module (converted with `convert` first). Throws OnnxError
 * ('unsupported-op', 'unsupported-opset', 'bad-input') naming what cannot be exported.
 */
export function buildOnnxModel(model: Module | IntModel, options: OnnxExportOptions = {}): OnnxExportResult {
  const profile = options.profile ?? 'default';
  if (!ONNX_PROFILES.includes(profile)) throw new OnnxError('bad-input', `ONNX export: unknown profile '${String(profile)}' (known: ${ONNX_PROFILES.join(', ')})`);
  if (options.weightBits !== undefined && options.weightBits !== 8 && options.weightBits !== 4) {
    throw new OnnxError('bad-input', `ONNX export: weightBits must be 8 or 4, got ${String(options.weightBits)}`);
  }
  if (options.bias !== undefined && options.bias !== 'standard' && options.bias !== 'intmodel') {
    throw new OnnxError('bad-input', `ONNX export: bias must be 'standard' or 'intmodel', got ${String(options.bias)}`);
  }
  if (options.opset !== undefined && (!Number.isInteger(options.opset) || options.opset < MIN_EXPORT_OPSET || options.opset > MAX_EXPORT_OPSET)) {
    throw new OnnxError('unsupported-opset', `ONNX export: opset ${String(options.opset)} is not supported (use ${MIN_EXPORT_OPSET}..${MAX_EXPORT_OPSET})`);
  }
  if (profile === 'web' && options.opset !== undefined && options.opset !== 13) {
    throw new OnnxError('unsupported-opset', `ONNX export: the web profile writes opset 13 (got --opset ${options.opset})`);
  }
  if (profile === 'web' && options.weightBits === 4) {
    throw new OnnxError('bad-input', 'ONNX export: the web profile does not write int4 tensors (onnxruntime-web); 4-bit weights are stored in int8 containers, drop weightBits: 4');
  }
  const inputName = options.inputName ?? 'input';
  const outputName = options.outputName ?? 'logits';
  if (inputName === outputName) throw new OnnxError('bad-input', `ONNX export: input and output names are both '${inputName}'`);
  const notes: string[] = [];
  const qdqOptions = { ...options, profile, inputName, outputName };
  if (model instanceof IntModel) return exportQdq(model, qdqOptions, notes);
  if (model.modules().some((m) => m instanceof QuantLayer)) {
    if (!options.inputShape) throw new OnnxError('bad-input', 'ONNX export: pass inputShape (one sample, e.g. [1, 28, 28]) to export a fake-quant model');
    notes.push('fake-quant model converted to an IntModel (convert) before the QDQ export');
    return exportQdq(convert(model, { inputShape: options.inputShape }), qdqOptions, notes);
  }
  const inputShape = options.inputShape;
  if (!inputShape) throw new OnnxError('bad-input', 'ONNX export: pass inputShape (one sample, e.g. [1, 28, 28]) to export a Module');
  checkShape(inputShape);
  if (options.weightBits !== undefined || options.bias !== undefined) notes.push('weightBits / bias have no effect on a float32 export');
  const opset = options.opset ?? 13;
  const b = new GraphBuilder(opset);
  const out = exportFloat(model, inputShape, b, profile, inputName);
  return finish(b, { inputName, outputName, inputShape, output: out, kind: 'fp32', opset, profile, metadata: options.metadata, notes, weightTypes: {} });
}

/** `buildOnnxModel` encoded as the bytes of a .onnx file. */
export function exportOnnx(model: Module | IntModel, options: OnnxExportOptions = {}): OnnxExportResult & { readonly bytes: Uint8Array } {
  const result = buildOnnxModel(model, options);
  return { ...result, bytes: encodeModel(result.model) };
}

/** Exports `model` and writes it to `path` atomically (temporary file + rename). */
export function saveOnnx(path: string, model: Module | IntModel, options: OnnxExportOptions = {}): OnnxExportResult & { readonly bytes: Uint8Array } {
  const result = exportOnnx(model, options);
  writeFileAtomic(path, result.bytes);
  return result;
}

function checkShape(shape: readonly number[]): void {
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new OnnxError('bad-input', `ONNX export: inputShape must be positive integers, got ${JSON.stringify(shape)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Graph building

/** The image exporter's graph: NamedGraph plus quantization parameters and single-output nodes. @internal */
class GraphBuilder extends NamedGraph {
  readonly opset: number;

  constructor(opset: number) {
    super();
    this.opset = opset;
  }

  /** A shared scalar float32 constant. */
  scalar(value: number): string {
    return this.shared(`f:${Math.fround(value)}`, () => this.float(`const_${Math.fround(value)}`, [], [value]));
  }

  /** A shared (scale, zero point) pair of scalars for a quantized domain. */
  qparams(scale: number, zeroPoint: number, type: QType): [string, string] {
    const pair = this.shared(`q:${Math.fround(scale)}:${zeroPoint}:${type}`, () => {
      const s = this.float('scale', [], [scale]);
      const z = this.tensor('zero_point', type === 'uint8' ? OnnxDataType.UINT8 : OnnxDataType.INT8, [], [zeroPoint]);
      return JSON.stringify([s, z]);
    });
    return JSON.parse(pair) as [string, string];
  }

  /** Appends a node; returns its (first) output name. */
  node(opType: string, inputs: readonly string[], attributes: OnnxAttribute[] = [], outputBase?: string, output?: string): string {
    const out = output ?? this.name(outputBase ?? opType.toLowerCase());
    this.nodes.push({ name: this.name(`${opType}_${this.nodes.length}`), opType, input: [...inputs], output: [out], attribute: attributes });
    return out;
  }
}

function valueInfo(name: string, dims: readonly (number | string)[]): OnnxValueInfo {
  const dim: OnnxDimension[] = dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d }));
  return { name, type: { tensorType: { elemType: OnnxDataType.FLOAT, shape: { dim } } } };
}

function irVersionFor(opset: number): number {
  return opset >= 21 ? 10 : opset >= 19 ? 9 : opset >= 15 ? 8 : 7;
}

interface FinishArgs {
  inputName: string;
  outputName: string;
  inputShape: readonly number[];
  /** Name and per-sample shape of the graph's result. */
  output: { name: string; shape: readonly number[] };
  kind: 'fp32' | 'qdq';
  opset: number;
  profile: OnnxProfile;
  metadata: Readonly<Record<string, string>> | undefined;
  notes: string[];
  weightTypes: Record<string, 'int8' | 'int4'>;
}

function finish(b: GraphBuilder, a: FinishArgs): OnnxExportResult {
  // The last node writes the graph output directly (an Identity when the graph is empty or its
  // result is an initializer or the input).
  let producer: OnnxNode | undefined;
  let consumed = false;
  for (const n of b.nodes) {
    if (n.output?.[0] === a.output.name) producer = n;
    if (n.input?.includes(a.output.name)) consumed = true;
  }
  if (producer && !consumed) producer.output = [a.outputName];
  else b.node('Identity', [a.output.name], [], undefined, a.outputName);
  const metadataProps = Object.entries(a.metadata ?? {}).map(([key, value]) => ({ key, value }));
  const model: OnnxModel = {
    irVersion: irVersionFor(a.opset),
    opsetImport: [{ domain: '', version: a.opset }],
    producerName: 'lowbit',
    producerVersion: '0.1.0',
    docString: a.kind === 'fp32' ? 'lowbit float32 export' : `lowbit QDQ export (${a.profile} profile)`,
    graph: {
      name: a.kind === 'fp32' ? 'lowbit_fp32' : 'lowbit_qdq',
      node: b.nodes,
      initializer: b.initializers,
      input: [valueInfo(a.inputName, ['N', ...a.inputShape])],
      output: [valueInfo(a.outputName, ['N', ...a.output.shape])],
    },
    ...(metadataProps.length > 0 ? { metadataProps } : {}),
  };
  return { model, kind: a.kind, opset: a.opset, profile: a.profile, weightTypes: a.weightTypes, notes: a.notes };
}

// ---------------------------------------------------------------------------------------------
// Float32 export

const FLOAT_SUPPORTED = 'Linear, Conv2d, Conv1d, BatchNorm1d/2d, ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, GELU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, Identity';

function runLeaf(m: Module, x: Tensor): Tensor {
  return (m as TensorModule).forward(x);
}

/** A deterministic pseudo-random sample in [−1, 1) (no global RNG state touched). */
function probeInput(shape: readonly number[]): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(n);
  let s = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    data[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  return new Tensor(data, [...shape]);
}

function exportFloat(model: Module, inputShape: readonly number[], b: GraphBuilder, profile: OnnxProfile, inputName: string): { name: string; shape: number[] } {
  const leaves = captureLeaves(model).filter(([, m]) => !(m instanceof Sequential));
  if (leaves.some(([, m]) => m instanceof Add)) return exportFloatGraph(model, inputShape, b, profile, inputName);
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(() => {
      const probe = probeInput([2, ...inputShape]);
      let x = probe;
      let cur = b.reserve(inputName);
      for (const [name, m] of leaves) {
        const y = runLeaf(m, x);
        cur = emitFloatLeaf(b, name, m, cur, x.shape, y.shape, profile);
        x = y;
      }
      const whole = runLeaf(model, probe);
      let diff = whole.shape.length === x.shape.length && whole.shape.every((d, i) => d === x.shape[i]) ? 0 : Infinity;
      for (let i = 0; diff !== Infinity && i < whole.size; i++) diff = Math.max(diff, Math.abs(whole.data[i]! - x.data[i]!));
      if (!(diff <= 1e-6 * Math.max(1, maxAbs(whole.data)))) {
        throw new OnnxError('unsupported-op', `ONNX export: ${model.constructor.name}.forward is not the chain of its leaf modules in registration order (max |diff| ${diff} on a probe input); the exporter supports sequential models such as lenet5, mlp, cnn and Sequential`);
      }
      return { name: cur, shape: x.shape.slice(1) };
    });
  } finally {
    if (wasTraining) model.train();
  }
}

/**
 * A float model with `nn.Add` merges (a residual network): its leaf calls as `captureGraph` records
 * them (each input the model input or an earlier leaf's output), every leaf emitted on its
 * inputs' ONNX values, an Add as ONNX Add; the graph run leaf by leaf must give the model's output.
 */
function exportFloatGraph(model: Module, inputShape: readonly number[], b: GraphBuilder, profile: OnnxProfile, inputName: string): { name: string; shape: number[] } {
  const wasTraining = model.training;
  const probe = probeInput([2, ...inputShape]);
  let graph: CapturedGraph;
  try {
    graph = captureGraph(model, captureLeaves(model), probe);
  } catch (error) {
    if (error instanceof ConvertError) throw new OnnxError('unsupported-op', `ONNX export: ${error.message.replace(/^convert: /, '')}`);
    throw error;
  }
  model.eval();
  try {
    return noGrad(() => {
      const input = b.reserve(inputName);
      const names: string[] = [];
      const outputs: Tensor[] = [];
      for (const node of graph.nodes) {
        const xs = node.inputs.map((k) => (k < 0 ? probe : outputs[k]!));
        const ins = node.inputs.map((k) => (k < 0 ? input : names[k]!));
        const forward = node.module.forward as (...t: Tensor[]) => Tensor;
        const y = forward.call(node.module, ...xs);
        names.push(node.module instanceof Add ? b.node('Add', ins, [], node.name) : emitFloatLeaf(b, node.name, node.module, ins[0]!, xs[0]!.shape, y.shape, profile));
        outputs.push(y);
      }
      const last = outputs[outputs.length - 1] ?? probe;
      const whole = runLeaf(model, probe);
      let diff = whole.shape.length === last.shape.length && whole.shape.every((d, i) => d === last.shape[i]) ? 0 : Infinity;
      for (let i = 0; diff !== Infinity && i < whole.size; i++) diff = Math.max(diff, Math.abs(whole.data[i]! - last.data[i]!));
      if (!(diff <= 1e-6 * Math.max(1, maxAbs(whole.data)))) {
        throw new OnnxError('unsupported-op', `ONNX export: ${model.constructor.name}.forward is not the graph of its leaf modules (max |diff| ${diff} on a probe input)`);
      }
      return { name: names[names.length - 1] ?? input, shape: last.shape.slice(1) };
    });
  } finally {
    if (wasTraining) model.train();
  }
}

function maxAbs(d: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < d.length; i++) m = Math.max(m, Math.abs(d[i]!));
  return m;
}

function f32(t: Tensor): Float32Array {
  return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>);
}

/** Emits the ONNX nodes of one float leaf module; returns the name of its output. */
function emitFloatLeaf(b: GraphBuilder, name: string, m: Module, x: string, inShape: readonly number[], outShape: readonly number[], profile: OnnxProfile): string {
  const label = name || 'model';
  if (m instanceof Dropout || m instanceof Identity) return x;
  if (m instanceof Linear) {
    const B = m.bias ? b.float(`${label}.bias`, m.bias.shape, f32(m.bias)) : null;
    if (inShape.length === 2) {
      const W = b.float(`${label}.weight`, m.weight.shape, f32(m.weight));
      return b.node('Gemm', B ? [x, W, B] : [x, W], [attrInt('transB', 1)], label);
    }
    // Rank > 2: MatMul with Wᵀ [K, O], then the bias.
    const [O, K] = m.weight.shape as [number, number];
    const wt = new Float32Array(K * O);
    const w = f32(m.weight);
    for (let o = 0; o < O; o++) for (let k = 0; k < K; k++) wt[k * O + o] = w[o * K + k]!;
    const y = b.node('MatMul', [x, b.float(`${label}.weight_t`, [K, O], wt)], [], label);
    return B ? b.node('Add', [y, B], [], label) : y;
  }
  if (m instanceof Conv1d) {
    const W = b.float(`${label}.weight`, m.weight.shape, f32(m.weight));
    const B = m.bias ? b.float(`${label}.bias`, m.bias.shape, f32(m.bias)) : null;
    return b.node('Conv', B ? [x, W, B] : [x, W], [
      attrInts('kernel_shape', [m.kernelSize]), attrInts('strides', [m.stride]), attrInts('pads', [m.padding, m.padding]),
      attrInts('dilations', [m.dilation]), attrInt('group', m.groups),
    ], label);
  }
  if (m instanceof Conv2d) {
    const W = b.float(`${label}.weight`, m.weight.shape, f32(m.weight));
    const B = m.bias ? b.float(`${label}.bias`, m.bias.shape, f32(m.bias)) : null;
    return b.node('Conv', B ? [x, W, B] : [x, W], [
      attrInts('kernel_shape', m.kernelSize), attrInts('strides', m.stride),
      attrInts('pads', [m.padding[0], m.padding[1], m.padding[0], m.padding[1]]),
      attrInts('dilations', m.dilation), attrInt('group', m.groups),
    ], label);
  }
  if (m instanceof BatchNorm) {
    if (!m.runningMean || !m.runningVar) throw new OnnxError('unsupported-op', `ONNX export: '${label}' (${m.constructor.name}) tracks no running statistics, so its eval output depends on the batch`);
    const C = m.numFeatures;
    const scale = b.float(`${label}.weight`, [C], m.weight ? f32(m.weight) : new Float32Array(C).fill(1));
    const bias = b.float(`${label}.bias`, [C], m.bias ? f32(m.bias) : new Float32Array(C));
    const mean = b.float(`${label}.running_mean`, [C], f32(m.runningMean));
    const variance = b.float(`${label}.running_var`, [C], f32(m.runningVar));
    return b.node('BatchNormalization', [x, scale, bias, mean, variance], [attrFloat('epsilon', m.eps)], label);
  }
  if (m instanceof ReLU) return b.node('Relu', [x], [], label);
  if (m instanceof ReLU6) return b.node('Clip', [x, b.scalar(0), b.scalar(6)], [], label);
  if (m instanceof LeakyReLU) return b.node('LeakyRelu', [x], [attrFloat('alpha', m.negativeSlope)], label);
  if (m instanceof Sigmoid) return b.node('Sigmoid', [x], [], label);
  if (m instanceof Tanh) return b.node('Tanh', [x], [], label);
  if (m instanceof GELU) {
    if (profile === 'default' && b.opset >= 20) {
      return b.node('Gelu', [x], m.approximate === 'tanh' ? [{ name: 'approximate', type: OnnxAttributeType.STRING, s: new TextEncoder().encode('tanh') }] : [], label);
    }
    // Same order as the tensor ops: 0.5x · (1 + erf(x/√2)), or 0.5x · (1 + tanh(√(2/π)(x + 0.044715x³))).
    const half = b.node('Mul', [x, b.scalar(0.5)], [], label);
    let inner: string;
    if (m.approximate === 'none') inner = b.node('Erf', [b.node('Mul', [x, b.scalar(Math.SQRT1_2)], [], label)], [], label);
    else {
      const cube = b.node('Mul', [b.node('Mul', [x, x], [], label), x], [], label);
      const poly = b.node('Add', [x, b.node('Mul', [cube, b.scalar(0.044715)], [], label)], [], label);
      inner = b.node('Tanh', [b.node('Mul', [poly, b.scalar(Math.sqrt(2 / Math.PI))], [], label)], [], label);
    }
    return b.node('Mul', [half, b.node('Add', [inner, b.scalar(1)], [], label)], [], label);
  }
  if (m instanceof MaxPool2d || m instanceof AvgPool2d) {
    const attrs = [attrInts('kernel_shape', m.kernelSize), attrInts('strides', m.stride), attrInts('pads', [m.padding[0], m.padding[1], m.padding[0], m.padding[1]])];
    if (m instanceof MaxPool2d) return b.node('MaxPool', [x], attrs, label);
    return b.node('AveragePool', [x], [...attrs, attrInt('count_include_pad', 1)], label);
  }
  if (m instanceof AdaptiveAvgPool2d) {
    const [oh, ow] = m.outputSize;
    if (oh === 1 && ow === 1) return b.node('GlobalAveragePool', [x], [], label);
    const k = [inShape[2]! / oh, inShape[3]! / ow];
    return b.node('AveragePool', [x], [attrInts('kernel_shape', k), attrInts('strides', k)], label);
  }
  if (m instanceof Flatten) return emitFlatten(b, label, x, inShape.length, m.startDim, m.endDim, outShape);
  throw new OnnxError('unsupported-op', `ONNX export: module '${label}' (${m.constructor.name}) is not supported (supported: ${FLOAT_SUPPORTED})`);
}

/** Flatten(axis=1) when it merges everything after the batch dim, else Reshape. */
function emitFlatten(b: GraphBuilder, label: string, x: string, rank: number, startDim: number, endDim: number, outShape: readonly number[]): string {
  const start = startDim < 0 ? startDim + rank : startDim;
  const end = endDim < 0 ? endDim + rank : endDim;
  if (start === 1 && end === rank - 1) return b.node('Flatten', [x], [attrInt('axis', 1)], label);
  // Reshape to the static shape, the batch dim copied (0) or, when merged, inferred (−1).
  const target = outShape.map((d, i) => (i === 0 ? (start === 0 ? -1 : 0) : d));
  const shape = b.tensor(`${label}.shape`, OnnxDataType.INT64, [target.length], target);
  return b.node('Reshape', [x, shape], [], label);
}

// ---------------------------------------------------------------------------------------------
// QDQ export of an IntModel

type QType = 'uint8' | 'int8';

/** A quantized value: integers in [lo, hi] with scale/zero point, stored as `type`. */
interface QValue {
  readonly name: string;
  readonly scale: number;
  readonly zeroPoint: number;
  readonly type: QType;
  readonly lo: number;
  readonly hi: number;
}

/** A float value; `domain` interprets IntModel clamp bounds on it (x = (q − z)·s). */
interface FValue {
  readonly name: string;
  readonly domain: { scale: number; zeroPoint: number } | null;
}

type Value = { q: QValue; f?: never } | { f: FValue; q?: never };

function containerFor(lo: number, hi: number, zeroPoint: number, where: string): QType {
  if (lo >= 0 && hi <= 255 && zeroPoint >= 0 && zeroPoint <= 255) return 'uint8';
  if (lo >= -128 && hi <= 127 && zeroPoint >= -128 && zeroPoint <= 127) return 'int8';
  throw new OnnxError('unsupported-op', `ONNX export: ${where}: integer range [${lo}, ${hi}] (zero point ${zeroPoint}) does not fit an 8-bit container`);
}

function typeRange(t: QType): [number, number] {
  return t === 'uint8' ? [0, 255] : [-128, 127];
}

interface QdqOptions extends OnnxExportOptions {
  readonly profile: OnnxProfile;
  readonly inputName: string;
  readonly outputName: string;
}

function exportQdq(im: IntModel, options: QdqOptions, notes: string[]): OnnxExportResult {
  const inputShape = options.inputShape ?? im.graph.inputShape;
  checkShape(inputShape);
  const given = options.inputShape;
  if (given && (given.length !== im.graph.inputShape.length || given.some((d, i) => d !== im.graph.inputShape[i]))) {
    throw new OnnxError('bad-input', `ONNX export: inputShape [${given.join(', ')}] differs from the IntModel's [${im.graph.inputShape.join(', ')}]`);
  }
  const nodes = im.nodes;
  const layers = nodes.filter((n): n is LayerNode => n.op === 'conv2d' || n.op === 'linear');
  // Weight containers.
  const weightTypes: Record<string, 'int8' | 'int4'> = {};
  let narrowToInt8 = 0;
  for (const L of layers) {
    const [lo, hi] = weightRange(im, L);
    const fits4 = lo >= -8 && hi <= 7;
    const low = L.weightFormat !== 'int8';
    if (options.weightBits === 4 && !fits4) throw new OnnxError('bad-input', `ONNX export: layer '${L.name}' has weights in [${lo}, ${hi}], which do not fit int4 (weightBits: 4); use weightBits 8`);
    let type: 'int8' | 'int4' = options.weightBits === 4 ? 'int4' : options.weightBits === 8 ? 'int8' : low && fits4 ? 'int4' : 'int8';
    if (type === 'int4' && options.profile === 'web') { type = 'int8'; narrowToInt8++; }
    weightTypes[L.name] = type;
  }
  if (narrowToInt8 > 0) notes.push(`web profile: ${narrowToInt8} layer(s) of <= 4-bit weights stored in int8 containers (no int4 in onnxruntime-web); same values and arithmetic`);
  const usesInt4 = Object.values(weightTypes).includes('int4');
  // per-group weights (graph version 3): a blocked DequantizeLinear (axis 1, block_size G), opset 21
  const grouped = layers.filter((L) => L.weightGroupSize !== undefined).map((L) => L.name);
  if (grouped.length > 0 && options.profile === 'web') {
    throw new OnnxError('unsupported-opset', `ONNX export: the web profile (opset 13) cannot write per-group weights (${grouped.join(', ')}): a blocked DequantizeLinear needs opset 21; use the default profile`);
  }
  if (grouped.length > 0 && options.opset !== undefined && options.opset < 21) {
    throw new OnnxError('unsupported-opset', `ONNX export: per-group weights (${grouped.join(', ')}) need opset 21 (a blocked DequantizeLinear), got opset ${options.opset}`);
  }
  const opset = options.opset ?? (usesInt4 || grouped.length > 0 ? 21 : 13);
  if (usesInt4 && opset < 21) {
    if (options.weightBits === 4) throw new OnnxError('unsupported-opset', `ONNX export: int4 weights need opset 21 (got ${opset})`);
    for (const k of Object.keys(weightTypes)) weightTypes[k] = 'int8';
    notes.push(`opset ${opset}: <= 4-bit weights stored in int8 containers (int4 needs opset 21)`);
  }
  const b = new GraphBuilder(opset);
  const graphInput: Value = { f: { name: b.reserve(options.inputName), domain: null } };
  // Per node: its ONNX value and shape (a chain reads the previous node's, a DAG its `inputs`).
  const refs = im.size.inputRefs;
  const values: Value[] = [];
  const shapes: number[][] = [];
  const dag = im.graph.version !== 1;
  const consumers: number[][] = nodes.map(() => []);
  refs.forEach((r, j) => r.forEach((k) => { if (k >= 0) consumers[k]!.push(j); }));
  const dqCache = new Map<string, string>();

  const dequantize = (val: Value): string => {
    if (val.f !== undefined) return val.f.name;
    const q = val.q;
    let out = dqCache.get(q.name);
    if (!out) {
      const [s, z] = b.qparams(q.scale, q.zeroPoint, q.type);
      out = b.node('DequantizeLinear', [q.name, s, z], [], `${q.name}_dq`);
      dqCache.set(q.name, out);
    }
    return out;
  };

  /**
   * Quantizes float `x` (in units of `scale` around `zeroPoint`) to integers clamped to [lo, hi],
   * as the IntModel's requantization does: a ReLU bound (lo = zero point) as a float Relu before
   * QuantizeLinear (onnxruntime folds it into the quantized op), QuantizeLinear saturating to the
   * container, then an integer Clip for bounds narrower than the container (e.g. 4-bit ranges).
   * `inRange`: the values are known to lie in [lo, hi] already (max pooling of such values).
   */
  const quantize = (x: string, scale: number, zeroPoint: number, lo: number, hi: number, type: QType, label: string, inRange = false): Value => {
    if (!(scale > 0) || !Number.isFinite(scale)) throw new OnnxError('bad-model', `ONNX export: ${label}: activation scale ${scale} is not a positive number`);
    const [tmin, tmax] = typeRange(type);
    const L = Math.max(lo, tmin);
    const H = Math.min(hi, tmax);
    const relu = !inRange && L === zeroPoint && L > tmin;
    const [s, z] = b.qparams(scale, zeroPoint, type);
    let name = b.node('QuantizeLinear', [relu ? b.node('Relu', [x], [], label) : x, s, z], [], `${label}_q`);
    name = clampInt(name, type, !inRange && !relu && L > tmin ? L : null, !inRange && H < tmax ? H : null, label);
    return { q: { name, scale, zeroPoint, type, lo: L, hi: H } };
  };

  /** An integer Clip of a quantized tensor (nothing when both bounds are null). */
  const clampInt = (x: string, type: QType, lo: number | null, hi: number | null, label: string): string => {
    if (lo === null && hi === null) return x;
    const dataType = type === 'uint8' ? OnnxDataType.UINT8 : OnnxDataType.INT8;
    return b.node('Clip', [x, lo === null ? '' : b.typedScalar(lo, dataType), hi === null ? '' : b.typedScalar(hi, dataType)], [], `${label}_clip`);
  };

  /**
   * The domain the output of node `i` is read in. A chain: the next layer's input. A DAG: the
   * first consumer (through max pooling, Flatten and clamps) that is a layer, or an add (its
   * input's scale and zero point; the range from a clamp on the way, else the 8-bit container).
   */
  const targetDomain = (i: number, bounds: [number, number] | null = null): { scale: number; zeroPoint: number; qmin: number; qmax: number } | null => {
    if (!dag) {
      for (let j = i + 1; j < nodes.length; j++) {
        const n = nodes[j]!;
        if (n.op === 'conv2d' || n.op === 'linear') return affineInput(n.input, `the layer after '${nodes[i]!.name}'`);
      }
      return null;
    }
    for (const c of consumers[i]!) {
      const n = nodes[c]!;
      if (n.op === 'conv2d' || n.op === 'linear') return affineInput(n.input, `the layer after '${nodes[i]!.name}'`);
      if (n.op === 'add') {
        const k = refs[c]!.indexOf(i);
        const z = n.inputZeroPoints[k]!;
        const [qmin, qmax] = bounds ?? (z >= -128 && z <= 127 ? [-128, 127] : [0, 255]);
        return { scale: n.inputScales[k]!, zeroPoint: z, qmin, qmax };
      }
      if (n.op === 'maxpool2d' || n.op === 'flatten' || n.op === 'clamp') {
        const t = targetDomain(c, n.op === 'clamp' && n.lo !== null && n.hi !== null ? [n.lo, n.hi] : bounds);
        if (t) return t;
      }
    }
    return null;
  };

  /** F: extra fractional bits node `i` keeps for an average pooling after it (0 if none). */
  const fracBitsOf = (i: number): number => {
    if (!dag) return fracBitsAhead(nodes, i);
    for (const c of consumers[i]!) {
      const n = nodes[c]!;
      if (n.op === 'avgpool2d' || n.op === 'adaptiveavgpool2d') return n.fracBits ?? 0;
      if (n.op === 'maxpool2d' || n.op === 'flatten' || n.op === 'clamp') {
        const f = fracBitsOf(c);
        if (f > 0) return f;
      }
    }
    return 0;
  };

  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    const src = refs[i]![0] ?? -1;
    let v: Value = src < 0 ? graphInput : values[src]!;
    let shape = src < 0 ? [1, ...inputShape] : shapes[src]!;
    switch (node.op) {
      case 'quantize': {
        const inp = affineInput(node.input, node.name);
        if (v.q !== undefined) throw new OnnxError('bad-model', `ONNX export: '${node.name}': quantize of an integer value`);
        const type = containerFor(inp.qmin, inp.qmax, inp.zeroPoint, `input '${node.name}'`);
        v = quantize(v.f.name, inp.scale, inp.zeroPoint, inp.qmin, inp.qmax, type, node.name);
        break;
      }
      case 'conv2d':
      case 'linear': {
        const weightType = weightTypes[node.name] ?? weightTypes[node.weight]!;
        const r = emitLayer(b, im, node, v, dequantize, shape, weightType, fracBitsOf(i), options.bias ?? (weightType === 'int4' ? 'intmodel' : 'standard'));
        shape = r.shape;
        if (r.output.kind === 'sign') v = signValue(b, b.node('GreaterOrEqual', [b.node('Mul', [r.y, r.output.direction], [], `${node.name}_directed`), r.output.threshold], [], `${node.name}_ge`), node.name);
        else if (r.output.kind === 'float') v = clampFloat(b, { name: r.y, domain: r.output.domain }, r.output.lo, r.output.hi, node.name);
        else {
          const t = targetDomain(i);
          if (!t) throw new OnnxError('bad-model', `ONNX export: layer '${node.name}' requantizes but no layer or add follows`);
          const o = r.output;
          const type = dag ? containerFor(o.lo, o.hi, o.zeroPoint, `output of '${node.name}'`) : containerFor(t.qmin, t.qmax, o.zeroPoint, `output of '${node.name}'`);
          v = quantize(r.y, o.scale, o.zeroPoint, o.lo, o.hi, type, node.name);
        }
        break;
      }
      case 'maxpool2d': {
        const x = dequantize(v);
        const y = b.node('MaxPool', [x], poolAttrs(node.kernelSize, node.stride, node.padding), node.name);
        shape = poolShape(shape, node.kernelSize, node.stride, node.padding);
        const cur = v as Value;
        v = cur.q !== undefined ? quantize(y, cur.q.scale, cur.q.zeroPoint, cur.q.lo, cur.q.hi, cur.q.type, node.name, true) : { f: { name: y, domain: cur.f.domain } };
        break;
      }
      case 'avgpool2d':
      case 'adaptiveavgpool2d': {
        const x = dequantize(v);
        let y: string;
        if (node.op === 'adaptiveavgpool2d') {
          const [oh, ow] = node.outputSize;
          const [, , h, w] = shape as [number, number, number, number];
          if (h % oh !== 0 || w % ow !== 0) throw new OnnxError('shape', `ONNX export: '${node.name}' needs input ${h}x${w} to be a multiple of ${oh}x${ow}`);
          y = oh === 1 && ow === 1 ? b.node('GlobalAveragePool', [x], [], node.name) : b.node('AveragePool', [x], poolAttrs([h / oh, w / ow], [h / oh, w / ow], [0, 0]), node.name);
          shape = [shape[0]!, shape[1]!, oh, ow];
        } else {
          y = b.node('AveragePool', [x], [...poolAttrs(node.kernelSize, node.stride, node.padding), attrInt('count_include_pad', 1)], node.name);
          shape = poolShape(shape, node.kernelSize, node.stride, node.padding);
        }
        // The IntModel rounds the average into the next layer's input domain.
        const t = targetDomain(i);
        if (!t) { v = { f: { name: y, domain: null } }; break; }
        const type = containerFor(t.qmin, t.qmax, t.zeroPoint, `output of '${node.name}'`);
        v = quantize(y, t.scale, t.zeroPoint, t.qmin, t.qmax, type, node.name);
        break;
      }
      case 'add': {
        if (node.output === 'sign') {
          v = emitSignAdd(b, node, refs[i]!.map((k) => values[k]!));
          break;
        }
        // DequantizeLinear ×2 → Add → QuantizeLinear (Relu before it for a fused ReLU); before an
        // average pooling (F extra fractional bits in the IntModel) the sum stays float.
        const operands = refs[i]!.map((k, pos) => {
          const val = values[k]!;
          if (val.q === undefined) throw new OnnxError('bad-model', `ONNX export: add '${node.name}': input ${pos + 1} is a float value`);
          if (Math.fround(val.q.scale) !== Math.fround(node.inputScales[pos]!) || val.q.zeroPoint !== node.inputZeroPoints[pos]) {
            throw new OnnxError('bad-model', `ONNX export: add '${node.name}' expects input ${pos + 1} with scale ${node.inputScales[pos]} / zero point ${node.inputZeroPoints[pos]}, the graph gives ${val.q.scale} / ${val.q.zeroPoint}`);
          }
          return dequantize(val);
        });
        const y = b.node('Add', operands, [], node.name);
        const F = fracBitsOf(i);
        if (F > 0) {
          const wide = (bound: number): number | null => (Math.abs(bound) >= 2 ** 30 ? null : bound);
          v = clampFloat(b, { name: y, domain: { scale: node.scale / 2 ** F, zeroPoint: node.zeroPoint } }, wide(node.lo), wide(node.hi), node.name);
        } else {
          v = quantize(y, node.scale, node.zeroPoint, node.lo, node.hi, containerFor(node.lo, node.hi, node.zeroPoint, `output of '${node.name}'`), node.name);
        }
        break;
      }
      case 'clamp': {
        const lo = node.lo ?? -Infinity;
        const hi = node.hi ?? Infinity;
        if (v.q !== undefined) {
          const q: QValue = v.q;
          if (lo <= q.lo && hi >= q.hi) break; // already within [lo, hi]
          const nlo = Math.max(lo, q.lo);
          const nhi = Math.min(hi, q.hi);
          const name = clampInt(q.name, q.type, nlo > q.lo ? nlo : null, nhi < q.hi ? nhi : null, node.name);
          v = { q: { ...q, name, lo: nlo, hi: nhi } };
          break;
        }
        v = clampFloat(b, v.f, node.lo, node.hi, node.name);
        break;
      }
      case 'flatten': {
        const rank = shape.length;
        const start = node.startDim < 0 ? node.startDim + rank : node.startDim;
        const end = node.endDim < 0 ? node.endDim + rank : node.endDim;
        let merged = 1;
        for (let d = start; d <= end; d++) merged *= shape[d]!;
        const outShape = [...shape.slice(0, start), merged, ...shape.slice(end + 1)];
        // Flatten / Reshape accept every type: the quantized tensor is flattened as is.
        const cur = v as Value;
        const x = cur.q !== undefined ? cur.q.name : cur.f.name;
        const y = emitFlatten(b, node.name, x, rank, node.startDim, node.endDim, outShape);
        shape = outShape;
        v = cur.q !== undefined ? { q: { ...cur.q, name: y } } : { f: { name: y, domain: cur.f.domain } };
        break;
      }
    }
    values.push(v);
    shapes.push(shape);
  }
  const v = values[values.length - 1]!;
  const shape = shapes[shapes.length - 1]!;
  if (v.q !== undefined) throw new OnnxError('bad-model', 'ONNX export: the IntModel does not end in a dequantizing layer');
  return finish(b, { inputName: options.inputName, outputName: options.outputName, inputShape, output: { name: v.f.name, shape: shape.slice(1) }, kind: 'qdq', opset, profile: options.profile, metadata: options.metadata, notes, weightTypes });
}

/** An IntModel clamp [lo, hi] (integers of `v.domain`) on a float value: Relu, Clip or nothing. */
function clampFloat(b: GraphBuilder, v: FValue, lo: number | null, hi: number | null, label: string): Value {
  if (lo === null && hi === null) return { f: v };
  const d = v.domain;
  if (!d) throw new OnnxError('bad-model', `ONNX export: clamp '${label}' on a float value of unknown scale`);
  const fl = lo === null ? null : (lo - d.zeroPoint) * d.scale;
  const fh = hi === null ? null : (hi - d.zeroPoint) * d.scale;
  const y = fl === 0 && fh === null
    ? b.node('Relu', [v.name], [], label)
    : b.node('Clip', [v.name, fl === null ? '' : b.scalar(fl), fh === null ? '' : b.scalar(fh)], [], label);
  return { f: { name: y, domain: d } };
}

/** A sign (±1) activation as the exporter carries it: int8 ±1, scale 1, zero point 0. */
const SIGN_DOMAIN: Extract<LayerInput, { mode: 'affine' }> = { mode: 'affine', scale: 1, zeroPoint: 0, bits: 8, qmin: -1, qmax: 1 };

/** int8 ±1 from a boolean tensor: Where(cond, 1, −1) → QuantizeLinear (scale 1, zero point 0; exact). */
function signValue(b: GraphBuilder, cond: string, label: string): Value {
  const y = b.node('Where', [cond, b.scalar(1), b.scalar(-1)], [], `${label}_sign`);
  const [s, z] = b.qparams(1, 0, 'int8');
  return { q: { name: b.node('QuantizeLinear', [y, s, z], [], `${label}_q`), scale: 1, zeroPoint: 0, type: 'int8', lo: -1, hi: 1 } };
}

/**
 * The sign add (AddNode.output 'sign') in exact integer arithmetic: +1 where
 * (a − z_a)·M_a + (b − z_b)·M_b ≥ 0 (int64: |q − z| ≤ 2^9, |M| < 2^31), else −1 — the IntModel's
 * integers exactly, no float rounding near a zero sum.
 */
function emitSignAdd(b: GraphBuilder, node: AddNode, operands: readonly Value[]): Value {
  const terms = operands.map((val, pos) => {
    if (val.q === undefined) throw new OnnxError('bad-model', `ONNX export: add '${node.name}': input ${pos + 1} is a float value`);
    if (Math.fround(val.q.scale) !== Math.fround(node.inputScales[pos]!) || val.q.zeroPoint !== node.inputZeroPoints[pos]) {
      throw new OnnxError('bad-model', `ONNX export: add '${node.name}' expects input ${pos + 1} with scale ${node.inputScales[pos]} / zero point ${node.inputZeroPoints[pos]}, the graph gives ${val.q.scale} / ${val.q.zeroPoint}`);
    }
    const wide = b.node('Cast', [val.q.name], [attrInt('to', OnnxDataType.INT64)], `${node.name}_in${pos + 1}_i64`);
    const centred = b.node('Sub', [wide, b.typedScalar(node.inputZeroPoints[pos]!, OnnxDataType.INT64)], [], `${node.name}_in${pos + 1}_centred`);
    return b.node('Mul', [centred, b.typedScalar(node.multipliers[pos]!, OnnxDataType.INT64)], [], `${node.name}_in${pos + 1}_scaled`);
  });
  const sum = b.node('Add', terms, [], `${node.name}_sum`);
  return signValue(b, b.node('GreaterOrEqual', [sum, b.typedScalar(0, OnnxDataType.INT64)], [], `${node.name}_ge`), node.name);
}

function affineInput(inp: LayerInput, where: string): Extract<LayerInput, { mode: 'affine' }> {
  if (inp.mode !== 'affine') throw new OnnxError('unsupported-op', `ONNX export: ${where}: binary (sign) activations cannot be expressed with QuantizeLinear/DequantizeLinear`);
  return inp;
}

function poolAttrs(k: readonly number[], s: readonly number[], p: readonly number[]): OnnxAttribute[] {
  return [attrInts('kernel_shape', k), attrInts('strides', s), attrInts('pads', [p[0]!, p[1]!, p[0]!, p[1]!])];
}

function poolShape(shape: readonly number[], k: readonly number[], s: readonly number[], p: readonly number[]): number[] {
  const [n, c, h, w] = shape as [number, number, number, number];
  return [n, c, Math.floor((h + 2 * p[0]! - k[0]!) / s[0]!) + 1, Math.floor((w + 2 * p[1]! - k[1]!) / s[1]!) + 1];
}

/** F: extra fractional bits the layer at `i` keeps for an average pooling after it (0 if none). */
function fracBitsAhead(nodes: readonly IntNode[], i: number): number {
  for (let j = i + 1; j < nodes.length; j++) {
    const n = nodes[j]!;
    if (n.op === 'maxpool2d' || n.op === 'flatten' || n.op === 'clamp') continue;
    if (n.op === 'avgpool2d' || n.op === 'adaptiveavgpool2d') return n.fracBits ?? 0;
    return 0;
  }
  return 0;
}

type LayerOut =
  | { kind: 'float'; domain: { scale: number; zeroPoint: number } | null; lo: number | null; hi: number | null }
  /** `y` is the accumulator itself (integer-valued floats); the bit is direction·y ≥ threshold (per-channel constants). */
  | { kind: 'sign'; direction: string; threshold: string }
  | { kind: 'quantized'; scale: number; zeroPoint: number; lo: number; hi: number };

function int32Of(im: IntModel, name: string): Int32Array {
  const d = im.tensor(name).data;
  if (!(d instanceof Int32Array)) throw new OnnxError('bad-model', `ONNX export: IntModel tensor '${name}' should be int32`);
  return d;
}

function float32Of(im: IntModel, name: string): Float32Array {
  const d = im.tensor(name).data;
  if (!(d instanceof Float32Array)) throw new OnnxError('bad-model', `ONNX export: IntModel tensor '${name}' should be float32`);
  return d;
}

/**
 * One conv2d / linear layer: DequantizeLinear of its input, weights and bias, then Conv / Gemm.
 * Returns the float result `y` (before the output stage's Relu/Clip/QuantizeLinear) and how the
 * IntModel maps it to its output.
 */
function emitLayer(
  b: GraphBuilder, im: IntModel, node: LayerNode, v: Value, dequantize: (v: Value) => string,
  shape: number[], weightType: 'int8' | 'int4', fracBits: number, biasMode: 'standard' | 'intmodel',
): { y: string; shape: number[]; output: LayerOut } {
  // a sign (binary) input travels as int8 ±1 (scale 1, zero point 0; see signValue)
  const inp = node.input.mode === 'sign' ? SIGN_DOMAIN : affineInput(node.input, `layer '${node.name}'`);
  if (!(v.q !== undefined)) throw new OnnxError('bad-model', `ONNX export: layer '${node.name}' has a float input`);
  if (Math.fround(v.q.scale) !== Math.fround(inp.scale) || v.q.zeroPoint !== inp.zeroPoint) {
    throw new OnnxError('bad-model', `ONNX export: layer '${node.name}' expects input scale ${inp.scale} / zero point ${inp.zeroPoint}, the graph gives ${v.q.scale} / ${v.q.zeroPoint}`);
  }
  const O = node.outFeatures;
  const out = node.output;
  // A sign output compares the accumulator itself with integer thresholds: the input is dequantized
  // with scale 1 (integers q − z) and the weights with scale 1, so y = acc exactly in float32
  // (every partial sum is an integer below 2^24, checked below).
  const unitScale = out.mode === 'sign';
  const sIn = unitScale ? 1 : inp.scale;
  let x: string;
  if (unitScale) {
    const [s1, z] = b.qparams(1, v.q.zeroPoint, v.q.type);
    x = b.node('DequantizeLinear', [v.q.name, s1, z], [], `${v.q.name}_int`);
  } else x = dequantize(v);
  // y = A·acc + B per output channel.
  const A = new Float64Array(O);
  const B = new Float64Array(O);
  let output: LayerOut;
  // Fractional bits of the bias below one accumulator step (see OnnxExportOptions.bias).
  let biasShift = 0;
  if (out.mode === 'sign') {
    const w = im.weightValues(node);
    const K = w.length / O;
    const xMax = Math.max(Math.abs(v.q.lo - v.q.zeroPoint), Math.abs(v.q.hi - v.q.zeroPoint));
    let wMax = 0;
    for (let j = 0; j < w.length; j++) wMax = Math.max(wMax, Math.abs(w[j]!));
    if (K * xMax * wMax >= 2 ** 24) {
      throw new OnnxError('unsupported-op', `ONNX export: layer '${node.name}' binarizes its output (sign) and its accumulator can reach ${K * xMax * wMax} ≥ 2^24, which float32 Conv/Gemm do not sum exactly`);
    }
    for (let c = 0; c < O; c++) A[c] = 1;
    const d = int32Of(im, out.direction);
    const t = int32Of(im, out.threshold);
    const dims = node.op === 'conv2d' ? (node.conv!.conv1d === true ? [1, O, 1] : [1, O, 1, 1]) : [1, O];
    output = { kind: 'sign', direction: b.float(`${node.name}.direction`, dims, d), threshold: b.float(`${node.name}.threshold`, dims, Float32Array.from(t)) };
  } else if (out.mode === 'dequantize') {
    const S = float32Of(im, out.scale);
    const Bf = float32Of(im, out.bias);
    for (let c = 0; c < O; c++) { A[c] = S[c]!; B[c] = Bf[c]!; }
    // The IntModel adds this float bias unrounded: keep 16 fractional bits (fewer if int32 overflows).
    if (biasMode === 'intmodel') {
      let ratio = 0;
      for (let c = 0; c < O; c++) if (A[c] !== 0) ratio = Math.max(ratio, Math.abs(B[c]! / A[c]!));
      biasShift = 16;
      while (biasShift > 0 && ratio * 2 ** biasShift > INT32_MAX / 2) biasShift--;
    }
    output = { kind: 'float', domain: { scale: 1, zeroPoint: 0 }, lo: null, hi: null };
  } else {
    const M = int32Of(im, out.multiplier);
    const sh = int32Of(im, out.shift);
    const bias = int32Of(im, out.bias);
    const k = out.biasShift;
    if (biasMode === 'intmodel') biasShift = k;
    const sOut = out.scale / 2 ** fracBits;
    for (let c = 0; c < O; c++) {
      A[c] = M[c]! * 2 ** -(sh[c]! - k) * sOut;
      B[c] = (bias[c]! * A[c]!) / 2 ** k;
    }
    // With F > 0 the bounds are ±2^30 (none) or a fused ReLU / ReLU6 in the widened domain.
    const wide = (bound: number): number | null => (Math.abs(bound) >= 2 ** 30 ? null : bound);
    output = fracBits > 0
      ? { kind: 'float', domain: { scale: sOut, zeroPoint: out.zeroPoint }, lo: wide(out.lo), hi: wide(out.hi) }
      : { kind: 'quantized', scale: out.scale, zeroPoint: out.zeroPoint, lo: out.lo, hi: out.hi };
  }
  // Weights: integers [O, K], one positive scale per output channel (negated channels if A < 0).
  const w = im.weightValues(node);
  const K = w.length / O;
  const values = new Int32Array(w.length);
  const wScale = new Float32Array(O);
  const [wmin, wmax] = weightType === 'int4' ? [-8, 7] : [-128, 127];
  const sx = Math.fround(sIn);
  for (let c = 0; c < O; c++) {
    let sign = A[c]! < 0 ? -1 : 1;
    if (sign < 0) {
      for (let j = 0; j < K; j++) if (-w[c * K + j]! < wmin || -w[c * K + j]! > wmax) { sign = 1; break; }
    }
    for (let j = 0; j < K; j++) values[c * K + j] = sign * w[c * K + j]! || 0;
    wScale[c] = (sign * A[c]!) / sIn;
  }
  const conv = node.conv;
  // a Conv1d (conv.conv1d) keeps its 3-D weight [O, C/g, k]: the ONNX Conv is then 1-D
  const wDims = node.op !== 'conv2d' ? [O, K] : conv!.conv1d === true ? [O, conv!.inChannels / conv!.groups, conv!.kernelSize[1]] : [O, conv!.inChannels / conv!.groups, conv!.kernelSize[0], conv!.kernelSize[1]];
  const wq = b.tensor(`${node.name}.weight_quantized`, weightType === 'int4' ? OnnxDataType.INT4 : OnnxDataType.INT8, wDims, values);
  let wf: string;
  // a per-group layer's accumulator is in units of s_in·s_max·2^−R: the bias below uses s_in·s_max
  let biasUnit = 1;
  if (node.weightGroupSize !== undefined) {
    // blocked DequantizeLinear: scale[c, g] = s_max[c]·r[c, g]·2^−R (= wScale[c]·r[c, g], the
    // IntModel's effective group scale), blocks of G along the input axis
    const G = node.weightGroupSize;
    const per = K / G;
    const r = int32Of(im, node.groupMultipliers!);
    const gScale = new Float32Array(O * per);
    for (let c = 0; c < O; c++) for (let g = 0; g < per; g++) gScale[c * per + g] = wScale[c]! * r[c * per + g]!;
    const gs = b.float(`${node.name}.weight_scale`, [O, per], gScale);
    wf = b.node('DequantizeLinear', [wq, gs], [attrInt('axis', 1), attrInt('block_size', G)], `${node.name}.weight`);
    biasUnit = 2 ** node.groupShift!;
  } else {
    const ws = b.float(`${node.name}.weight_scale`, [O], wScale);
    wf = b.node('DequantizeLinear', [wq, ws], [attrInt('axis', 0)], `${node.name}.weight`);
  }
  // Bias: int32 in units of s_in·s_w (float32 product, as onnxruntime computes it).
  const biasScale = new Float32Array(O);
  const biasInt = new Int32Array(O);
  let biasFits = true;
  let hasBias = false;
  for (let c = 0; c < O; c++) {
    biasScale[c] = Math.fround((sx * wScale[c]! * biasUnit) / 2 ** biasShift);
    const bq = biasScale[c] === 0 ? 0 : roundHalfEven(B[c]! / biasScale[c]!);
    if (Math.abs(bq) > INT32_MAX) biasFits = false;
    else biasInt[c] = bq;
    if (B[c] !== 0) hasBias = true;
  }
  const inputs = [x, wf];
  if (hasBias) {
    if (biasFits) {
      const bq = b.tensor(`${node.name}.bias_quantized`, OnnxDataType.INT32, [O], biasInt);
      const bs = b.float(`${node.name}.bias_scale`, [O], biasScale);
      inputs.push(b.node('DequantizeLinear', [bq, bs], [attrInt('axis', 0)], `${node.name}.bias`));
    } else {
      // |B / (s_in·s_w)| beyond int32: a float bias (onnxruntime then keeps this layer in float).
      inputs.push(b.float(`${node.name}.bias`, [O], B));
    }
  }
  let y: string;
  let outShape: number[];
  if (node.op === 'conv2d' && node.conv!.conv1d === true) {
    const g = node.conv!;
    if (shape.length !== 3 || shape[1] !== g.inChannels) throw new OnnxError('shape', `ONNX export: '${node.name}' (conv1d) expects [N, ${g.inChannels}, L], the graph gives [${shape.join(', ')}]`);
    y = b.node('Conv', inputs, [
      attrInts('kernel_shape', [g.kernelSize[1]]), attrInts('strides', [g.stride[1]]), attrInts('pads', [g.padding[1], g.padding[1]]),
      attrInts('dilations', [g.dilation[1]]), attrInt('group', g.groups),
    ], node.name);
    const [, ow] = convOutputSize(1, shape[2]!, g);
    outShape = [shape[0]!, O, ow];
  } else if (node.op === 'conv2d') {
    const g = node.conv!;
    if (shape.length !== 4 || shape[1] !== g.inChannels) throw new OnnxError('shape', `ONNX export: '${node.name}' expects [N, ${g.inChannels}, H, W], the graph gives [${shape.join(', ')}]`);
    y = b.node('Conv', inputs, [
      attrInts('kernel_shape', g.kernelSize), attrInts('strides', g.stride),
      attrInts('pads', [g.padding[0], g.padding[1], g.padding[0], g.padding[1]]),
      attrInts('dilations', g.dilation), attrInt('group', g.groups),
    ], node.name);
    const [oh, ow] = convOutputSize(shape[2]!, shape[3]!, g);
    outShape = [shape[0]!, O, oh, ow];
  } else {
    if (shape.length !== 2 || shape[1] !== K) throw new OnnxError('shape', `ONNX export: '${node.name}' expects [N, ${K}], the graph gives [${shape.join(', ')}]`);
    y = b.node('Gemm', inputs, [attrInt('transB', 1)], node.name);
    outShape = [shape[0]!, O];
  }
  return { y, shape: outShape, output };
}
