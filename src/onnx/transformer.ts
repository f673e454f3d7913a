/**
 * ONNX export of `nn.TransformerLM` (float32, or after `quant.transformer.prepareTransformerQat`
 * as weight + activation QDQ): int32 word ids [N, L] (L fixed: the context the graph is built for)
 * → next-word logits [N, V] of the last position, as the model's `forward`.
 *
 * Mapping, per block (opset 17):
 * - token Embedding → Gather(table, ids); a QatEmbedding's table is an int8 initializer →
 *   DequantizeLinear (per row). The learned positions 0..L−1 are a float [L, E] constant added to it.
 * - LayerNorm → LayerNormalization (axis −1, the module's eps).
 * - Linear / QuantLinear → [QuantizeLinear → (Clip) → DequantizeLinear on the input] → MatMul with
 *   Wᵀ (int8 [in, out] → DequantizeLinear along axis 1 when quantized) → Add bias.
 * - Attention: Split of the fused QKV into Q, K, V → Reshape [N, L, heads, d] → Transpose to
 *   [N, heads, L, d] (K to [N, heads, d, L]) → QDQ of each operand when quantized → MatMul → Mul
 *   1/√d → Add the causal mask (a [L, L] constant, −∞ above the diagonal) → Softmax (axis −1) →
 *   QDQ of the weights → MatMul with V → Transpose + Reshape back to [N, L, E].
 * - GELU (erf: Div, Erf, Add, Mul; tanh form: lowbit's own composition) or Relu; residual Adds.
 * - The last position: Gather(index L−1, axis 1), final LayerNormalization, head.
 *
 * Quantized weights: the integers are read back from the quantizer's own eval output ŵ
 * (q = round(ŵ/s) + z), so (q − z)·s is ŵ. 4-bit values sit in int8 containers (no INT4 tensors);
 * activation quantizers are uint8/int8 QuantizeLinear with a Clip to the narrower range. Note that
 * onnxruntime divides x/s in float32 where lowbit divides in float64: a value within ~1e-7
 * (relative) of a rounding midpoint can land on the neighbouring integer.
 */
import { writeFileAtomic } from '../format/files.ts';
import { GELU, ReLU } from '../nn/activation.ts';
import { Embedding } from '../nn/embedding.ts';
import { LayerNorm } from '../nn/layernorm.ts';
import { Linear } from '../nn/linear.ts';
import type { Module } from '../nn/module.ts';
import { CausalSelfAttention, TransformerBlock, type TransformerLM } from '../nn/models/transformer-lm.ts';
import { QuantLinear } from '../quant/qat/layers.ts';
import { Quantizer } from '../quant/quantizers/quantizer.ts';
import { QatEmbedding } from '../quant/rnn/qat-embedding.ts';
import type { Tensor } from '../tensor/index.ts';
import { attrFloat, attrInt, attrInts, NamedGraph } from './graph.ts';
import { activationQdqParams, emitActivationQdqNodes, quantizeWeight } from './qdq.ts';
import { encodeModel, OnnxDataType, OnnxError, type OnnxAttribute, type OnnxModel, type OnnxValueInfo } from './proto.ts';

/** The opset the Transformer exporter writes (LayerNormalization needs 17). */
export const TRANSFORMER_ONNX_OPSET = 17;

export interface TransformerOnnxExportOptions {
  /** Context length L fixed in the graph (default: the model's maxContext). */
  readonly sequenceLength?: number;
  /** Graph input name (default 'input'). */
  readonly inputName?: string;
  /** Graph output name (default 'logits'). */
  readonly outputName?: string;
  /** Stored as the model's metadata_props. */
  readonly metadata?: Readonly<Record<string, string>>;
}

export interface TransformerOnnxExportResult {
  readonly model: OnnxModel;
  readonly bytes: Uint8Array;
  /** 'qdq' when any weight or activation is quantized, else 'fp32'. */
  readonly kind: 'fp32' | 'qdq';
  readonly opset: number;
  readonly sequenceLength: number;
  readonly inputName: string;
  readonly outputName: string;
  /** Quantized weights stored as int8 + DequantizeLinear, and activation QDQ pairs written. */
  readonly quantizedWeights: number;
  readonly quantizedActivations: number;
  /** Largest |(q − z)·s − ŵ| over the quantized weights (float32 rounding; 0 for fp32). */
  readonly weightDeviation: number;
}

class Graph extends NamedGraph {
  quantizedWeights = 0;
  quantizedActivations = 0;
  weightDeviation = 0;

  one(opType: string, inputs: readonly string[], base: string, attributes: OnnxAttribute[] = [], outputs = 1): string[] {
    const names = Array.from({ length: outputs }, (_, i) => this.name(outputs === 1 ? base : `${base}_${i}`));
    this.nodes.push({ name: this.name(`${opType}_${this.nodes.length}`), opType, input: [...inputs], output: names, attribute: attributes });
    return names;
  }

  op(opType: string, inputs: readonly string[], base: string, attributes: OnnxAttribute[] = []): string {
    return this.singleOutput(opType, inputs, base, attributes);
  }

  int64(values: readonly number[]): string {
    return this.shared(`i64:${values.join(',')}`, () => this.tensor(`const_${values.join('_')}`, OnnxDataType.INT64, [values.length], values));
  }

  scalar(value: number, dataType: number = OnnxDataType.FLOAT): string {
    return this.typedScalar(value, dataType);
  }

  /** QuantizeLinear → (Clip) → DequantizeLinear of `x` under an active per-tensor affine quantizer; `x` itself otherwise. */
  activation(x: string, q: Module | null | undefined, label: string): string {
    if (!q) return x;
    if (!(q instanceof Quantizer)) throw new OnnxError('unsupported-op', `ONNX export: ${label} goes through a ${q.constructor.name}, not a quantizer`);
    if (!q.fakeQuantEnabled) return x;
    const y = emitActivationQdqNodes(this, x, activationQdqParams(q, label), label);
    this.quantizedActivations++;
    return y;
  }

  /**
   * A weight [rows, cols] as a graph value, stored transposed ([cols, rows]) when `transposed`:
   * float32, or through an active quantizer as int8 + DequantizeLinear (per row or per tensor).
   */
  weight(w: Tensor, q: Quantizer | null, label: string, transposed: boolean): string {
    const [rows, cols] = w.shape as [number, number];
    const dims = transposed ? [cols, rows] : [rows, cols];
    const layout = (source: ArrayLike<number>, into: Float32Array | Int32Array): Float32Array | Int32Array => {
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) into[transposed ? c * rows + r : r * cols + c] = source[r * cols + c]!;
      return into;
    };
    if (!q || !q.fakeQuantEnabled) return this.float(label, dims, layout(w.data, new Float32Array(rows * cols)));
    const qw = quantizeWeight(q, w, label);
    this.weightDeviation = Math.max(this.weightDeviation, qw.deviation);
    const stored = this.tensor(`${label}_int8`, OnnxDataType.INT8, dims, layout(qw.values, new Int32Array(rows * cols)));
    const s = this.float(`${label}_scale`, qw.perRow ? [rows] : [], qw.scale);
    const z = this.tensor(`${label}_zero_point`, OnnxDataType.INT8, qw.perRow ? [rows] : [], qw.zeroPoint);
    this.quantizedWeights++;
    return this.op('DequantizeLinear', [stored, s, z], label, qw.perRow ? [attrInt('axis', transposed ? 1 : 0)] : []);
  }

  linear(x: string, m: Module, label: string): string {
    if (!(m instanceof Linear) && !(m instanceof QuantLinear)) throw new OnnxError('unsupported-op', `ONNX export: ${label} is a ${m.constructor.name}, expected Linear or QuantLinear`);
    const input = m instanceof QuantLinear ? this.activation(x, m.inputQuantizer, `${label}.input`) : x;
    const w = this.weight(m.weight, m instanceof QuantLinear ? m.weightQuantizer : null, `${label}.weight_t`, true);
    const y = this.op('MatMul', [input, w], `${label}_matmul`);
    return m.bias ? this.op('Add', [y, this.float(`${label}.bias`, [m.outFeatures], m.bias.data)], label) : y;
  }

  layerNorm(x: string, m: Module, label: string): string {
    if (!(m instanceof LayerNorm) || m.normalizedShape.length !== 1) throw new OnnxError('unsupported-op', `ONNX export: ${label} must be a LayerNorm over the last axis`);
    const e = m.normalizedShape[0]!;
    const scale = m.weight ? this.float(`${label}.weight`, [e], m.weight.data) : this.float(`${label}.weight`, [e], new Float32Array(e).fill(1));
    const inputs = m.bias ? [x, scale, this.float(`${label}.bias`, [e], m.bias.data)] : [x, scale];
    return this.op('LayerNormalization', inputs, label, [attrInt('axis', -1), attrFloat('epsilon', m.eps)]);
  }

  activationFunction(x: string, m: Module, label: string): string {
    if (m instanceof ReLU) return this.op('Relu', [x], label);
    if (!(m instanceof GELU)) throw new OnnxError('unsupported-op', `ONNX export: ${label} is a ${m.constructor.name}, expected GELU or ReLU`);
    if (m.approximate === 'none') {
      // ½x(1 + erf(x/√2))
      const erf = this.op('Erf', [this.op('Div', [x, this.scalar(Math.SQRT2)], `${label}_scaled`)], `${label}_erf`);
      return this.op('Mul', [this.op('Mul', [x, this.scalar(0.5)], `${label}_half`), this.op('Add', [erf, this.scalar(1)], `${label}_erf1`)], label);
    }
    // lowbit's composition: inner = (x + x·x·x·0.044715)·√(2/π); y = (x·0.5)·(tanh(inner) + 1)
    const cube = this.op('Mul', [this.op('Mul', [x, x], `${label}_sq`), x], `${label}_cube`);
    const inner = this.op('Mul', [this.op('Add', [x, this.op('Mul', [cube, this.scalar(0.044715)], `${label}_c`)], `${label}_sum`), this.scalar(Math.sqrt(2 / Math.PI))], `${label}_inner`);
    return this.op('Mul', [this.op('Mul', [x, this.scalar(0.5)], `${label}_half`), this.op('Add', [this.op('Tanh', [inner], `${label}_tanh`), this.scalar(1)], `${label}_t1`)], label);
  }

  attention(x: string, m: CausalSelfAttention, steps: number, mask: string, label: string): string {
    const [e, heads, d] = [m.embedDim, m.numHeads, m.headDim];
    const fused = this.linear(x, m.qkv, `${label}.qkv`);
    const [q, k, v] = this.one('Split', [fused, this.int64([e, e, e])], `${label}_split`, [attrInt('axis', 2)], 3) as [string, string, string];
    const split = (t: string, perm: number[], name: string): string =>
      this.op('Transpose', [this.op('Reshape', [t, this.int64([0, steps, heads, d])], `${label}_${name}_heads`)], `${label}_${name}_t`, [attrInts('perm', perm)]);
    const ops = m.operandQuantizers();
    const qh = this.activation(split(q, [0, 2, 1, 3], 'query'), ops.query, `${label}.query`); // [N, heads, L, d]
    const kh = this.activation(split(k, [0, 2, 3, 1], 'key'), ops.key, `${label}.key`); // [N, heads, d, L]
    const vh = this.activation(split(v, [0, 2, 1, 3], 'value'), ops.value, `${label}.value`); // [N, heads, L, d]
    const scores = this.op('Add', [this.op('Mul', [this.op('MatMul', [qh, kh], `${label}_qk`), this.scalar(1 / Math.sqrt(d))], `${label}_scaled`), mask], `${label}_scores`);
    const probs = this.activation(this.op('Softmax', [scores], `${label}_softmax`, [attrInt('axis', -1)]), ops.probs, `${label}.probs`);
    const context = this.op('MatMul', [probs, vh], `${label}_context`); // [N, heads, L, d]
    const merged = this.op('Reshape', [this.op('Transpose', [context], `${label}_merge_t`, [attrInts('perm', [0, 2, 1, 3])]), this.int64([0, steps, e])], `${label}_merged`);
    return this.linear(merged, m.proj, `${label}.proj`);
  }
}

function valueInfo(name: string, elemType: number, dims: readonly (number | string)[]): OnnxValueInfo {
  return { name, type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) } } } };
}

/**
 * Builds the ONNX model of `model` (see the file comment) for contexts of `sequenceLength` words.
 * Throws OnnxError naming what cannot be exported (tied weights, a non-affine quantizer, ...).
 */
export function exportTransformerOnnx(model: TransformerLM, options: TransformerOnnxExportOptions = {}): TransformerOnnxExportResult {
  const training = model.training;
  model.eval();  // quantizers and dropout as at inference
  try {
    return build(model, options);
  } finally {
    model.train(training);
  }
}

function build(model: TransformerLM, options: TransformerOnnxExportOptions): TransformerOnnxExportResult {
  const steps = options.sequenceLength ?? model.maxContext;
  if (!Number.isInteger(steps) || steps < 1 || steps > model.maxContext) throw new OnnxError('bad-input', `ONNX export: sequenceLength ${String(options.sequenceLength)} is outside [1, ${model.maxContext}] (the model's maxContext)`);
  if (!model.head) throw new OnnxError('unsupported-op', 'ONNX export: TransformerLM with tieWeights is not supported (export an untied model)');
  const inputName = options.inputName ?? 'input';
  const outputName = options.outputName ?? 'logits';
  const b = new Graph();
  const ids = b.reserve(inputName);
  const e = model.embedDim;

  const tokens = model.tokenEmbedding;
  if (!(tokens instanceof Embedding) && !(tokens instanceof QatEmbedding)) throw new OnnxError('unsupported-op', `ONNX export: tokenEmbedding is a ${tokens.constructor.name}`);
  const table = b.weight(tokens.weight, tokens instanceof QatEmbedding ? tokens.weightQuantizer : null, 'tokenEmbedding.weight', false);
  const positions = model.positionEmbedding;
  if (!(positions instanceof Embedding)) throw new OnnxError('unsupported-op', `ONNX export: positionEmbedding must stay a float Embedding, got ${positions.constructor.name}`);
  const pos = b.float('positionEmbedding.rows', [steps, e], positions.weight.data.subarray(0, steps * e));
  let x = b.op('Add', [b.op('Gather', [table, ids], 'tokens', [attrInt('axis', 0)]), pos], 'embedded');

  const maskValues = new Float32Array(steps * steps);
  for (let i = 0; i < steps; i++) for (let j = i + 1; j < steps; j++) maskValues[i * steps + j] = -Infinity;
  const mask = b.float('causal_mask', [steps, steps], maskValues);
  let index = 0;
  for (const block of model.blocks) {
    if (!(block instanceof TransformerBlock)) throw new OnnxError('unsupported-op', `ONNX export: blocks.${index} is not a TransformerBlock`);
    const label = `blocks.${index++}`;
    const attended = b.attention(b.layerNorm(x, block.ln1, `${label}.ln1`), block.attn, steps, mask, `${label}.attn`);
    x = b.op('Add', [x, attended], `${label}_residual1`);
    const hidden = b.activationFunction(b.linear(b.layerNorm(x, block.ln2, `${label}.ln2`), block.fc1, `${label}.fc1`), block.act, `${label}.act`);
    x = b.op('Add', [x, b.linear(hidden, block.fc2, `${label}.fc2`)], `${label}_residual2`);
  }
  const last = b.op('Gather', [x, b.tensor('last_position', OnnxDataType.INT64, [], [steps - 1])], 'last_position_hidden', [attrInt('axis', 1)]);
  const logits = b.linear(b.layerNorm(last, model.lnFinal, 'lnFinal'), model.head, 'head');
  b.nodes.push({ name: b.name('Identity_output'), opType: 'Identity', input: [logits], output: [b.reserve(outputName)], attribute: [] });

  const quantized = b.quantizedWeights + b.quantizedActivations > 0;
  const metadataProps = Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value }));
  const onnx: OnnxModel = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: TRANSFORMER_ONNX_OPSET }],
    producerName: 'lowbit',
    producerVersion: '0.1.0',
    docString: quantized ? 'lowbit Transformer language model (QDQ)' : 'lowbit Transformer language model (float32)',
    graph: {
      name: quantized ? 'lowbit_transformer_lm_qdq' : 'lowbit_transformer_lm_fp32',
      node: b.nodes,
      initializer: b.initializers,
      input: [valueInfo(inputName, OnnxDataType.INT32, ['N', steps])],
      output: [valueInfo(outputName, OnnxDataType.FLOAT, ['N', model.vocabSize])],
    },
    ...(metadataProps.length > 0 ? { metadataProps } : {}),
  };
  return {
    model: onnx, bytes: encodeModel(onnx), kind: quantized ? 'qdq' : 'fp32', opset: TRANSFORMER_ONNX_OPSET, sequenceLength: steps, inputName, outputName,
    quantizedWeights: b.quantizedWeights, quantizedActivations: b.quantizedActivations, weightDeviation: b.weightDeviation,
  };
}

/** `exportTransformerOnnx`, written to `path` atomically (temporary file + rename). */
export function saveTransformerOnnx(path: string, model: TransformerLM, options: TransformerOnnxExportOptions = {}): TransformerOnnxExportResult {
  const result = exportTransformerOnnx(model, options);
  writeFileAtomic(path, result.bytes);
  return result;
}
