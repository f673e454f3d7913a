/**
 * ONNX export of sequence models: a chain of nn.Embedding, nn.LSTM, nn.GRU, nn.Linear,
 * activations and dropout (eval), and their quantization-aware twins QatEmbedding, QatLSTM, QatGRU
 * and QuantLinear (from `prepareRnnQat` / `prepareQat`).
 *
 * The chain: modules applied one after the other, each to the previous one's output; a recurrent
 * layer passes on its output sequence (its final states become extra graph outputs when `states`
 * is set), and with `lastStep` only the last time step of the last recurrent layer's output goes
 * on (the usual next-word model: Embedding → LSTM → h_L → Linear).
 *
 * Mapping (float32):
 * - Embedding → Gather(table, ids) on int32 ids.
 * - LSTM → one ONNX LSTM node per layer (both directions in one node when bidirectional). lowbit
 *   keeps PyTorch's gate blocks [i, f, g, o]; ONNX wants [i, o, f, c], so the rows of W_ih, W_hh
 *   and both biases are permuted; B = [b_ih, b_hh] (ONNX's Wb, Rb). ONNX's default activations
 *   (Sigmoid, Tanh, Tanh) are lowbit's.
 * - GRU → ONNX GRU with `linear_before_reset = 1` (r multiplies W_hn·h + b_hn, as lowbit and
 *   PyTorch); gate blocks [r, z, n] become ONNX's [z, r, h].
 * - ONNX recurrent nodes are time-major ([L, N, ·], layout 0): a batchFirst layer gets a
 *   Transpose before and after (onnxruntime's CPU kernels refuse layout 1); back-to-back
 *   transposes cancel. Y [L, D, N, H] becomes lowbit's [L, N, D·H] by Squeeze (D = 1) or
 *   Transpose + Reshape (D = 2: [forward, reverse] concatenated, as lowbit).
 * - Linear → MatMul + Add; ReLU, Tanh, Sigmoid, LeakyReLU as themselves; Dropout and Identity vanish.
 *
 * Quantized (weight QDQ, the fake-quant model as onnxruntime runs it): every quantized weight is
 * stored as an int8 initializer (4-bit and narrower values too: int8 containers, opset 13, which
 * onnxruntime-node and -web read; no INT4 tensors) followed by DequantizeLinear (per row: axis of
 * the output rows; per tensor: a scalar scale). The integers are read back from the quantizer's
 * own eval output ŵ (q = round(ŵ/s) + z, checked against ŵ), so ORT's (q − z)·s is ŵ in float32.
 * Activation quantizers (a QatLSTM's input x_t, a QuantLinear's input) become QuantizeLinear →
 * (Clip to [qmin, qmax] when narrower than the container) → DequantizeLinear on the tensor
 * (`activations: 'qdq'`, default), or with `activations: 'exact'` the float64 arithmetic of lowbit's
 * fakeQuantize (Cast → Div → Round → Clip → Mul → Cast): onnxruntime's QuantizeLinear divides in
 * float32, so an x/s within ~6e-8 relative of a midpoint can round to the other integer.
 * onnxruntime (optimization level ≥ 'extended') rewrites DequantizeLinear(weight) → MatMul with a
 * float input into MatMulNBits, which by default quantizes that input to int8 on the fly; open the
 * session with `session.qdq_matmulnbits_accuracy_level` 0 (openRnnOnnx's matMulNBitsAccuracyLevel)
 * to run such a weight-only layer as the fake-quant model (docs/onnx-rnn.md).
 * A QatLSTM or QatGRU that also quantizes h_{t−1} cannot use the ONNX LSTM / GRU node (its
 * recurrence is closed): that layer is unrolled over a fixed `sequenceLength` into per-step
 * MatMul / Sigmoid / Tanh nodes with a QDQ on h_{t−1}.
 */
import { noGrad } from '../autograd/engine.ts';
import { writeFileAtomic } from '../format/files.ts';
import { Identity, LeakyReLU, ReLU, Sigmoid, Tanh } from '../nn/activation.ts';
import { Dropout } from '../nn/dropout.ts';
import { Embedding } from '../nn/embedding.ts';
import { Linear } from '../nn/linear.ts';
import { Module, type TensorModule } from '../nn/module.ts';
import { GRU, LSTM, RNNBase } from '../nn/rnn.ts';
import { Sequential } from '../nn/sequential.ts';
import { QuantLinear } from '../quant/qat/layers.ts';
import type { Quantizer } from '../quant/quantizers/quantizer.ts';
import { QatEmbedding } from '../quant/rnn/qat-embedding.ts';
import { QatLSTM } from '../quant/rnn/qat-lstm.ts';
import { QatGRU } from '../quant/rnn/qat-gru.ts';
import { narrow, reshape, Tensor } from '../tensor/index.ts';
import {
  encodeModel, OnnxDataType, OnnxError,
  type OnnxAttribute, type OnnxDimension, type OnnxModel, type OnnxValueInfo,
} from './proto.ts';
import { attrFloat, attrInt, attrInts, attrString, NamedGraph } from './graph.ts';
import { activationQdqParams, emitActivationQdqNodes, quantizeWeight } from './qdq.ts';

/** Lowest and highest opset the sequence exporter writes. */
export const MIN_RNN_EXPORT_OPSET = 13;
export const MAX_RNN_EXPORT_OPSET = 21;

/** Modules a chain may hold. */
export type RnnChainModule = Embedding | QatEmbedding | LSTM | GRU | QatLSTM | QatGRU | Linear | QuantLinear | ReLU | Tanh | Sigmoid | LeakyReLU | Dropout | Identity;

const SUPPORTED = 'Embedding, QatEmbedding, LSTM, GRU, QatLSTM, QatGRU, Linear, QuantLinear, ReLU, Tanh, Sigmoid, LeakyReLU, Dropout, Identity';

export interface RnnOnnxExportOptions {
  /**
   * Time steps L fixed in the graph (default: a symbolic dim 'L'). Required when a QatLSTM
   * quantizes its hidden state (that layer is unrolled step by step).
   */
  readonly sequenceLength?: number;
  /** Keep only the last time step of the last recurrent layer's output (default false). */
  readonly lastStep?: boolean;
  /**
   * Initial states as graph inputs (h0, and c0 for an LSTM, each [D·numLayers, N, H]) and final
   * states as outputs (hN, cN); names prefixed with the layer's name when the chain has several
   * recurrent layers. Default false: zero initial states, logits only.
   */
  readonly states?: boolean;
  /**
   * How an activation quantizer (a QatLSTM's x_t or h_{t−1}, a QuantLinear's input) is written.
   * 'qdq' (default): QuantizeLinear → DequantizeLinear, the standard pattern (onnxruntime divides
   * x/s in float32, lowbit in float64, so a value within ~1e-7 relative of a rounding midpoint can
   * land on the neighbouring integer). 'exact': the same arithmetic in double (Cast → Div → Round
   * → Clip → Mul → Cast), bit-for-bit lowbit's fakeQuantize, but no QuantizeLinear for runtimes
   * to fuse.
   */
  readonly activations?: 'qdq' | 'exact';
  /** Opset of the default domain (default 13). */
  readonly opset?: number;
  /** Graph input name (default 'input'). */
  readonly inputName?: string;
  /** Graph output name (default 'logits'). */
  readonly outputName?: string;
  /** Stored as the model's metadata_props. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** A graph input or output: name, element type, dims ('N' batch, 'L' time when not fixed). */
export interface RnnOnnxValue {
  readonly name: string;
  readonly type: 'float32' | 'int32';
  readonly dims: readonly (number | string)[];
}

/** What `buildRnnOnnxModel` produced. */
export interface RnnOnnxExportResult {
  readonly model: OnnxModel;
  /** 'qdq' when any weight or activation is quantized, else 'fp32'. */
  readonly kind: 'fp32' | 'qdq';
  readonly opset: number;
  /** The graph inputs: the sequence first, then the initial states (with `states`). */
  readonly inputs: readonly RnnOnnxValue[];
  /** The graph outputs: the chain's result first, then the final states (with `states`). */
  readonly outputs: readonly RnnOnnxValue[];
  /** Per recurrent layer, how it was written: 'LSTM' / 'GRU' node or 'unrolled'. */
  readonly recurrent: Readonly<Record<string, 'LSTM' | 'GRU' | 'unrolled'>>;
  /** Largest |(q − z)·s − ŵ| over the exported quantized weights (0 for fp32; float32 rounding otherwise). */
  readonly weightDeviation: number;
  readonly notes: readonly string[];
}

/** The chain of (name, module) pairs `model` stands for: an array as given, a Module's children in order (Sequentials flattened), or a lone supported module. */
export function rnnChain(model: Module | readonly Module[]): [string, Module][] {
  if (Array.isArray(model)) return (model as readonly Module[]).map((m, i) => [String(i), m]);
  const root = model as Module;
  if (isChainModule(root)) return [['', root]];
  const out: [string, Module][] = [];
  const walk = (m: Module, prefix: string): void => {
    for (const [name, child] of m.namedChildren()) {
      const full = prefix === '' ? name : `${prefix}.${name}`;
      if (child instanceof Sequential) walk(child, full);
      else out.push([full, child]);
    }
  };
  walk(root, '');
  return out;
}

function isChainModule(m: Module): m is RnnChainModule {
  return m instanceof Embedding || m instanceof QatEmbedding || m instanceof LSTM || m instanceof GRU || m instanceof QatLSTM || m instanceof QatGRU
    || m instanceof Linear || m instanceof QuantLinear || m instanceof ReLU || m instanceof Tanh || m instanceof Sigmoid
    || m instanceof LeakyReLU || m instanceof Dropout || m instanceof Identity;
}

type Recurrent = LSTM | GRU | QatLSTM | QatGRU;

function isRecurrent(m: Module): m is Recurrent {
  return m instanceof RNNBase || m instanceof QatLSTM || m instanceof QatGRU;
}

/** Initial states per recurrent layer (by chain name): [h0] or [h0, c0]. */
export type RnnChainStates = Readonly<Record<string, readonly Tensor[]>>;

/**
 * lowbit's forward of a chain, the computation the exported graph stands for: each module on the
 * previous output; a recurrent layer's output sequence goes on (from `initial[name]` when given),
 * and with `lastStep` only its last time step after the last recurrent layer. Returns the output
 * and every recurrent layer's final states.
 */
export function runRnnChain(chain: readonly (readonly [string, Module])[], x: Tensor, options: { lastStep?: boolean; initial?: RnnChainStates } = {}): { output: Tensor; states: Record<string, Tensor[]> } {
  let lastRecurrent = -1;
  chain.forEach(([, m], i) => { if (isRecurrent(m)) lastRecurrent = i; });
  let y = x;
  const states: Record<string, Tensor[]> = {};
  chain.forEach(([name, m], i) => {
    if (m instanceof GRU || m instanceof QatGRU) {
      const h0 = options.initial?.[name]?.[0];
      const [out, hN] = m.forward(y, h0);
      y = out;
      states[name] = [hN];
    } else if (m instanceof LSTM || m instanceof QatLSTM) {
      const given = options.initial?.[name];
      const [out, [hN, cN]] = m.forward(y, given ? [given[0]!, given[1]!] : undefined);
      y = out;
      states[name] = [hN, cN];
    } else {
      y = (m as TensorModule).forward(y);
    }
    if (i === lastRecurrent && options.lastStep) {
      const batchFirst = (m as Recurrent).batchFirst;
      const timeAxis = batchFirst ? 1 : 0;
      const steps = y.shape[timeAxis]!;
      const last = narrow(y, timeAxis, steps - 1, 1);
      y = reshape(last, [y.shape[1 - timeAxis]!, y.shape[2]!]);
    }
  });
  return { output: y, states };
}

// ---------------------------------------------------------------------------------------------
// Graph building

/** The sequence exporter's graph: NamedGraph plus int64 constants, multi-output nodes, transposes. @internal */
class RnnGraph extends NamedGraph {
  /** How activation quantizers are written (RnnOnnxExportOptions.activations). */
  readonly activations: 'qdq' | 'exact';
  /** Value → the input of the [1, 0, 2] Transpose that produced it (to cancel back-to-back transposes). */
  private readonly transposedFrom = new Map<string, string>();

  constructor(activations: 'qdq' | 'exact') {
    super();
    this.activations = activations;
  }

  /** A shared int64 constant (a scalar when `dims` is empty). */
  int64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    return this.shared(`i64:${dims.join('x')}:${values.join(',')}`, () => this.tensor(`const_${values.join('_')}`, OnnxDataType.INT64, dims, values));
  }

  /** A shared scalar constant of `dataType`. */
  scalar(value: number, dataType: number): string {
    return this.typedScalar(value, dataType);
  }

  /** Appends a node with `outputs` outputs (or the given names); returns the output names. */
  node(opType: string, inputs: readonly string[], attributes: OnnxAttribute[], base: string, outputs: number | readonly string[] = 1): string[] {
    const names = typeof outputs === 'number' ? Array.from({ length: outputs }, (_, i) => this.name(outputs === 1 ? base : `${base}_${i}`)) : [...outputs];
    this.nodes.push({ name: this.name(`${opType}_${this.nodes.length}`), opType, input: [...inputs], output: names, attribute: attributes });
    return names;
  }

  one(opType: string, inputs: readonly string[], base: string, attributes: OnnxAttribute[] = []): string {
    return this.node(opType, inputs, attributes, base)[0]!;
  }

  /** Swaps the first two axes of a rank-3 value (cancels against the transpose that made it). */
  swap01(x: string, base: string): string {
    const back = this.transposedFrom.get(x);
    if (back !== undefined) return back;
    const y = this.one('Transpose', [x], base, [attrInts('perm', [1, 0, 2])]);
    this.transposedFrom.set(y, x);
    return y;
  }
}

function valueInfo(v: RnnOnnxValue): OnnxValueInfo {
  const dim: OnnxDimension[] = v.dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d }));
  return { name: v.name, type: { tensorType: { elemType: v.type === 'int32' ? OnnxDataType.INT32 : OnnxDataType.FLOAT, shape: { dim } } } };
}

// ---------------------------------------------------------------------------------------------
// Quantized tensors

/** The active quantizer (null when absent or switched off). */
function active(q: Quantizer | null): Quantizer | null {
  return q && q.fakeQuantEnabled ? q : null;
}

/** QuantizeLinear → (Clip) → DequantizeLinear of `x` under a per-tensor activation quantizer. */
function emitActivationQdq(b: RnnGraph, x: string, q: Quantizer, label: string): string {
  const p = activationQdqParams(q, label);
  if (b.activations === 'exact') {
    // lowbit's fakeQuantize: q = clamp(roundHalfEven(x/s) + z, qmin, qmax) in float64, (q − z)·s rounded to float32.
    const sd = b.scalar(p.scale, OnnxDataType.DOUBLE);
    const xd = b.one('Cast', [x], `${label}_f64`, [attrInt('to', OnnxDataType.DOUBLE)]);
    let q = b.one('Round', [b.one('Div', [xd, sd], `${label}_quotient`)], `${label}_round`);
    const z = p.zeroPoint;
    q = b.one('Clip', [q, b.scalar(p.qmin - z, OnnxDataType.DOUBLE), b.scalar(p.qmax - z, OnnxDataType.DOUBLE)], `${label}_clip`);
    return b.one('Cast', [b.one('Mul', [q, sd], `${label}_dequant`)], `${label}_fq`, [attrInt('to', OnnxDataType.FLOAT)]);
  }
  return emitActivationQdqNodes(b, x, p, label);
}

/** An int8 initializer with its DequantizeLinear (per-row scales along `axis`). */
function emitDequantized(b: RnnGraph, label: string, dims: readonly number[], values: ArrayLike<number>, scale: Float32Array, zeroPoint: Int32Array, axis: number): string {
  const w = b.tensor(`${label}_int8`, OnnxDataType.INT8, dims, values);
  const perAxis = scale.length > 1 || dims.length === 0;
  const s = b.float(`${label}_scale`, perAxis ? [scale.length] : [], scale);
  const z = b.tensor(`${label}_zero_point`, OnnxDataType.INT8, perAxis ? [zeroPoint.length] : [], zeroPoint);
  return b.one('DequantizeLinear', [w, s, z], label, perAxis ? [attrInt('axis', axis)] : []);
}

/** Rows of a [rows, cols] matrix as [cols, rows]. */
function transpose2(values: ArrayLike<number>, rows: number, cols: number, into: Int32Array | Float32Array): void {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) into[c * rows + r] = values[r * cols + c]!;
}

// ---------------------------------------------------------------------------------------------
// Export

interface ChainState {
  /** The current value and its dims. */
  name: string;
  dims: (number | string)[];
  quantized: boolean;
  deviation: number;
}

/**
 * Builds the ONNX model of a sequence chain (see the file comment). `model` is an array of
 * modules, a Module whose children (in registration order) form the chain (its forward must
 * compute the chain: checked on a probe input), or a lone LSTM / GRU / QatLSTM / QatGRU. Throws
 * OnnxError naming what cannot be exported.
 */
export function buildRnnOnnxModel(model: Module | readonly Module[], options: RnnOnnxExportOptions = {}): RnnOnnxExportResult {
  const opset = options.opset ?? 13;
  if (!Number.isInteger(opset) || opset < MIN_RNN_EXPORT_OPSET || opset > MAX_RNN_EXPORT_OPSET) {
    throw new OnnxError('unsupported-opset', `ONNX export: opset ${String(options.opset)} is not supported (use ${MIN_RNN_EXPORT_OPSET}..${MAX_RNN_EXPORT_OPSET})`);
  }
  const L = options.sequenceLength;
  if (L !== undefined && (!Number.isInteger(L) || L < 1)) throw new OnnxError('bad-input', `ONNX export: sequenceLength must be a positive integer, got ${String(L)}`);
  const activations = options.activations ?? 'qdq';
  if (activations !== 'qdq' && activations !== 'exact') throw new OnnxError('bad-input', `ONNX export: activations must be 'qdq' or 'exact', got ${JSON.stringify(options.activations)}`);
  const inputName = options.inputName ?? 'input';
  const outputName = options.outputName ?? 'logits';
  if (inputName === outputName) throw new OnnxError('bad-input', `ONNX export: input and output names are both '${inputName}'`);
  const chain = rnnChain(model);
  if (chain.length === 0) throw new OnnxError('bad-input', 'ONNX export: the chain is empty');
  for (const [name, m] of chain) {
    if (!isChainModule(m)) throw new OnnxError('unsupported-op', `ONNX export: ${name || 'the model'} is a ${m.constructor.name}; a sequence chain holds ${SUPPORTED}`);
    const dtype = (m as { dtype?: string }).dtype;
    if (dtype !== undefined && dtype !== 'float32') throw new OnnxError('unsupported-op', `ONNX export: ${name || 'the model'} has ${dtype} parameters; only float32 is exported`);
    if (m instanceof QuantLinear && m.prunedChannels) throw new OnnxError('unsupported-op', `ONNX export: ${name} has pruned channels; not supported by the sequence exporter`);
  }
  const recurrentLayers = chain.filter(([, m]) => isRecurrent(m)) as [string, Recurrent][];
  if (recurrentLayers.length === 0) throw new OnnxError('bad-input', 'ONNX export: the chain has no LSTM, GRU, QatLSTM or QatGRU; use exportOnnx for feed-forward models');
  const embeddingFirst = chain[0]![1] instanceof Embedding || chain[0]![1] instanceof QatEmbedding;
  chain.forEach(([name, m], i) => {
    if (i > 0 && (m instanceof Embedding || m instanceof QatEmbedding)) throw new OnnxError('unsupported-op', `ONNX export: the embedding ${name} must come first in the chain`);
  });
  const firstRecurrent = recurrentLayers[0]![1];
  const batchFirst = firstRecurrent.batchFirst;
  const timeDim: number | string = L ?? 'L';
  const leading = batchFirst ? ['N', timeDim] : [timeDim, 'N'];

  const wasTraining = (model instanceof Module ? [model] : chain.map(([, m]) => m)).map((m) => [m, m.training] as const);
  for (const [m] of wasTraining) m.eval();
  try {
    return noGrad(() => {
      if (!Array.isArray(model)) checkChainForward(model as Module, chain, options, embeddingFirst, batchFirst);
      const b = new RnnGraph(activations);
      const notes: string[] = [];
      const recurrent: Record<string, 'LSTM' | 'GRU' | 'unrolled'> = {};
      const input: RnnOnnxValue = embeddingFirst
        ? { name: b.reserve(inputName), type: 'int32', dims: leading }
        : { name: b.reserve(inputName), type: 'float32', dims: [...leading, firstInputSize(chain[0]![1])] };
      const inputs: RnnOnnxValue[] = [input];
      const outputs: RnnOnnxValue[] = [];
      const prefixed = recurrentLayers.length > 1;
      const state: ChainState = { name: input.name, dims: [...input.dims], quantized: false, deviation: 0 };
      const lastIndex = chain.findIndex(([, m]) => m === recurrentLayers[recurrentLayers.length - 1]![1]);
      const finals: { layers: string[][]; values: RnnOnnxValue[] }[] = [];
      chain.forEach(([name, m], i) => {
        const label = name === '' ? 'rnn' : name;
        if (isRecurrent(m)) {
          const H = m.hiddenSize;
          const D = m instanceof RNNBase ? m.numDirections : 1;
          const parts = m instanceof GRU || m instanceof QatGRU ? ['h'] : ['h', 'c'];
          const stateDims = [D * m.numLayers, 'N', H];
          const starts: string[] = [];
          const ends: RnnOnnxValue[] = [];
          if (options.states) {
            for (const p of parts) {
              const v: RnnOnnxValue = { name: b.reserve(prefixed ? `${label}.${p}0` : `${p}0`), type: 'float32', dims: stateDims };
              inputs.push(v);
              starts.push(v.name);
              ends.push({ name: b.reserve(prefixed ? `${label}.${p}N` : `${p}N`), type: 'float32', dims: stateDims });
            }
          }
          const x = m.batchFirst ? b.swap01(state.name, `${label}_time_major`) : state.name;
          const run = m instanceof QatLSTM
            ? emitQatLstm(b, m, label, x, starts, L, notes)
            : m instanceof QatGRU ? emitQatGru(b, m, label, x, starts, L, notes) : emitRecurrentNode(b, m, label, x, starts);
          recurrent[label] = run.how;
          state.quantized ||= run.quantized;
          state.deviation = Math.max(state.deviation, run.deviation);
          state.name = m.batchFirst ? b.swap01(run.output, `${label}_batch_first`) : run.output;
          state.dims = [state.dims[0]!, state.dims[1]!, D * H];
          if (options.states) finals.push({ layers: run.finals, values: ends });
          if (i === lastIndex && options.lastStep) {
            state.name = b.one('Gather', [state.name, b.int64([-1], [])], `${label}_last_step`, [attrInt('axis', m.batchFirst ? 1 : 0)]);
            state.dims = ['N', D * H];
          }
          return;
        }
        emitPlainLayer(b, m, label, state);
      });
      // The chain's result under the output name.
      b.node('Identity', [state.name], [], 'output', [b.reserve(outputName)]);
      outputs.push({ name: outputName, type: 'float32', dims: state.dims });
      for (const f of finals) {
        f.values.forEach((v, p) => {
          const pieces = f.layers.map((parts) => parts[p]!);
          b.node(pieces.length === 1 ? 'Identity' : 'Concat', pieces, pieces.length === 1 ? [] : [attrInt('axis', 0)], v.name, [v.name]);
          outputs.push(v);
        });
      }
      if (state.quantized) notes.push('quantized weights stored as int8 initializers + DequantizeLinear (4-bit and narrower values in int8 containers)');
      const metadataProps = Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value }));
      const onnx: OnnxModel = {
        irVersion: opset >= 21 ? 10 : opset >= 19 ? 9 : opset >= 15 ? 8 : 7,
        opsetImport: [{ domain: '', version: opset }],
        producerName: 'lowbit',
        producerVersion: '0.1.0',
        docString: state.quantized ? 'lowbit sequence model (weight QDQ)' : 'lowbit sequence model (float32)',
        graph: {
          name: state.quantized ? 'lowbit_rnn_qdq' : 'lowbit_rnn_fp32',
          node: b.nodes,
          initializer: b.initializers,
          input: inputs.map(valueInfo),
          output: outputs.map(valueInfo),
        },
        ...(metadataProps.length > 0 ? { metadataProps } : {}),
      };
      return { model: onnx, kind: state.quantized ? 'qdq' : 'fp32', opset, inputs, outputs, recurrent, weightDeviation: state.deviation, notes };
    });
  } finally {
    for (const [m, training] of wasTraining) m.train(training);
  }
}

/** `buildRnnOnnxModel` encoded as the bytes of a .onnx file. */
export function exportRnnOnnx(model: Module | readonly Module[], options: RnnOnnxExportOptions = {}): RnnOnnxExportResult & { readonly bytes: Uint8Array } {
  const result = buildRnnOnnxModel(model, options);
  return { ...result, bytes: encodeModel(result.model) };
}

/** Exports `model` and writes it to `path` atomically (temporary file + rename). */
export function saveRnnOnnx(path: string, model: Module | readonly Module[], options: RnnOnnxExportOptions = {}): RnnOnnxExportResult & { readonly bytes: Uint8Array } {
  const result = exportRnnOnnx(model, options);
  writeFileAtomic(path, result.bytes);
  return result;
}

function firstInputSize(m: Module): number {
  if (isRecurrent(m)) return m.inputSize;
  if (m instanceof Linear || m instanceof QuantLinear) return m.inFeatures;
  throw new OnnxError('bad-input', `ONNX export: the chain starts with a ${m.constructor.name}; start with an embedding, a recurrent layer or a Linear so the input width is known`);
}

/** A deterministic probe: int32 ids or float32 features in [−1, 1), batch 2. */
function probeInput(chain: readonly [string, Module][], embeddingFirst: boolean, batchFirst: boolean, steps: number): Tensor {
  const first = chain[0]![1];
  const shape = batchFirst ? [2, steps] : [steps, 2];
  let s = 0x9e3779b9;
  const next = (): number => {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  if (embeddingFirst) {
    const V = (first as Embedding | QatEmbedding).numEmbeddings;
    return new Tensor(Int32Array.from({ length: 2 * steps }, () => Math.floor(next() * V)), shape);
  }
  const F = firstInputSize(first);
  return new Tensor(Float32Array.from({ length: 2 * steps * F }, () => next() * 2 - 1), [...shape, F]);
}

/** Refuses a Module whose forward is not the chain of its children (compared on a probe input). */
function checkChainForward(model: Module, chain: readonly [string, Module][], options: RnnOnnxExportOptions, embeddingFirst: boolean, batchFirst: boolean): void {
  if (chain.length === 1 && chain[0]![0] === '') return;
  const probe = probeInput(chain, embeddingFirst, batchFirst, options.sequenceLength ?? 3);
  const expected = runRnnChain(chain, probe, { lastStep: options.lastStep }).output;
  // A model's forward may return anything (a recurrent layer's tuple, say): only a Tensor compares.
  let got: unknown;
  try {
    got = (model as TensorModule).forward(probe);
  } catch (error) {
    const hint = options.sequenceLength === undefined ? '; if the model needs a fixed number of steps, pass sequenceLength' : '';
    throw new OnnxError('unsupported-op', `ONNX export: ${model.constructor.name}.forward failed on a probe input of shape [${probe.shape.join(', ')}] (${(error as Error).message})${hint}`, { cause: error });
  }
  let diff = Infinity;
  if (got instanceof Tensor && got.rank === expected.rank && got.shape.every((d, i) => d === expected.shape[i])) {
    diff = 0;
    for (let i = 0; i < got.size; i++) diff = Math.max(diff, Math.abs(got.data[i]! - expected.data[i]!));
  }
  let scale = 1;
  for (let i = 0; i < expected.size; i++) scale = Math.max(scale, Math.abs(expected.data[i]!));
  if (!(diff <= 1e-6 * scale)) {
    throw new OnnxError('unsupported-op', `ONNX export: ${model.constructor.name}.forward is not the chain of its children in registration order${options.lastStep ? ' (with lastStep)' : ''} (max |diff| ${diff} on a probe input); pass the modules as an array, or set lastStep to match`);
  }
}

/** Linear / QuantLinear / activation / dropout on the current value. */
function emitPlainLayer(b: RnnGraph, m: Module, label: string, state: ChainState): void {
  if (m instanceof Dropout || m instanceof Identity) return;
  if (m instanceof ReLU) state.name = b.one('Relu', [state.name], label);
  else if (m instanceof Tanh) state.name = b.one('Tanh', [state.name], label);
  else if (m instanceof Sigmoid) state.name = b.one('Sigmoid', [state.name], label);
  else if (m instanceof LeakyReLU) state.name = b.one('LeakyRelu', [state.name], label, [attrFloat('alpha', m.negativeSlope)]);
  else if (m instanceof Embedding || m instanceof QatEmbedding) {
    const wq = m instanceof QatEmbedding ? active(m.weightQuantizer) : null;
    let table: string;
    if (wq) {
      const q = quantizeWeight(wq, m.weight, `${label}.weight`);
      table = emitDequantized(b, `${label}.weight`, m.weight.shape, q.values, q.scale, q.zeroPoint, 0);
      state.quantized = true;
      state.deviation = Math.max(state.deviation, q.deviation);
    } else {
      table = b.float(`${label}.weight`, m.weight.shape, m.weight.data);
    }
    state.name = b.one('Gather', [table, state.name], label, [attrInt('axis', 0)]);
    state.dims = [...state.dims, m.embeddingDim];
  } else if (m instanceof Linear || m instanceof QuantLinear) {
    const [out, inF] = [m.outFeatures, m.inFeatures];
    let x = state.name;
    let w: string;
    const wq = m instanceof QuantLinear ? active(m.weightQuantizer) : null;
    const iq = m instanceof QuantLinear ? active(m.inputQuantizer) : null;
    if (iq) {
      x = emitActivationQdq(b, x, iq, `${label}.input`);
      state.quantized = true;
    }
    if (wq) {
      const q = quantizeWeight(wq, m.weight, `${label}.weight`);
      const t = new Int32Array(out * inF);
      transpose2(q.values, out, inF, t);
      w = emitDequantized(b, `${label}.weight_t`, [inF, out], t, q.scale, q.zeroPoint, 1);
      state.quantized = true;
      state.deviation = Math.max(state.deviation, q.deviation);
    } else {
      const t = new Float32Array(out * inF);
      transpose2(m.weight.data, out, inF, t);
      w = b.float(`${label}.weight_t`, [inF, out], t);
    }
    let y = b.one('MatMul', [x, w], `${label}_matmul`);
    if (m.bias) y = b.one('Add', [y, b.float(`${label}.bias`, [out], m.bias.data)], label);
    state.name = y;
    state.dims = [...state.dims.slice(0, -1), out];
  } else {
    throw new OnnxError('unsupported-op', `ONNX export: ${label} is a ${m.constructor.name}; a sequence chain holds ${SUPPORTED}`);
  }
}

/** What a recurrent layer's emission gives: time-major output [L, N, D·H], final states per layer ('h|c'). */
interface RecurrentRun {
  readonly output: string;
  /** Per layer: the final state names ([h] or [h, c]), each [D, N, H]. */
  readonly finals: string[][];
  readonly how: 'LSTM' | 'GRU' | 'unrolled';
  readonly quantized: boolean;
  readonly deviation: number;
}

/** lowbit gate blocks → ONNX gate blocks: LSTM [i, f, g, o] → [i, o, f, c]; GRU [r, z, n] → [z, r, h]. */
const LSTM_GATES = [0, 3, 1, 2];
const GRU_GATES = [1, 0, 2];

/** Rows of `source` [G·H, cols] in ONNX gate order, written at `into[offset..]`. */
function reorderGates(source: ArrayLike<number>, order: readonly number[], H: number, cols: number, into: Float32Array | Int32Array, offset: number): void {
  order.forEach((block, slot) => {
    for (let r = 0; r < H; r++) {
      const from = (block * H + r) * cols;
      const to = offset + (slot * H + r) * cols;
      for (let c = 0; c < cols; c++) into[to + c] = source[from + c]!;
    }
  });
}

/** Slice [k·D, (k+1)·D) of a [D·layers, N, H] state input. */
function stateSlice(b: RnnGraph, state: string, k: number, D: number, label: string): string {
  return b.one('Slice', [state, b.int64([k * D]), b.int64([(k + 1) * D]), b.int64([0])], label);
}

/** Y [L, D, N, H] → [L, N, D·H]. */
function mergeDirections(b: RnnGraph, y: string, D: number, label: string): string {
  if (D === 1) return b.one('Squeeze', [y, b.int64([1])], label);
  const t = b.one('Transpose', [y], `${label}_t`, [attrInts('perm', [0, 2, 1, 3])]);
  return b.one('Reshape', [t, b.int64([0, 0, -1])], label);
}

/** An nn.LSTM / nn.GRU (or a QatLSTM without hidden quantizer) as one ONNX LSTM / GRU node per layer. */
function emitRecurrentNode(b: RnnGraph, m: LSTM | GRU, label: string, x: string, starts: readonly string[]): RecurrentRun {
  const isLstm = m instanceof LSTM;
  const G = isLstm ? 4 : 3;
  const order = isLstm ? LSTM_GATES : GRU_GATES;
  const H = m.hiddenSize;
  const D = m.numDirections;
  const params = new Map(m.namedParameters({ recurse: false }));
  let cur = x;
  const finals: string[][] = [];
  for (let k = 0; k < m.numLayers; k++) {
    const inF = k === 0 ? m.inputSize : D * H;
    const W = new Float32Array(D * G * H * inF);
    const R = new Float32Array(D * G * H * H);
    const B = new Float32Array(D * 2 * G * H);
    for (let d = 0; d < D; d++) {
      const suffix = `_l${k}${d === 1 ? '_reverse' : ''}`;
      reorderGates(params.get(`weight_ih${suffix}`)!.data, order, H, inF, W, d * G * H * inF);
      reorderGates(params.get(`weight_hh${suffix}`)!.data, order, H, H, R, d * G * H * H);
      if (m.bias) {
        reorderGates(params.get(`bias_ih${suffix}`)!.data, order, H, 1, B, d * 2 * G * H);
        reorderGates(params.get(`bias_hh${suffix}`)!.data, order, H, 1, B, d * 2 * G * H + G * H);
      }
    }
    const layer = `${label}.l${k}`;
    const w = b.float(`${layer}.W`, [D, G * H, inF], W);
    const r = b.float(`${layer}.R`, [D, G * H, H], R);
    const bias = m.bias ? b.float(`${layer}.B`, [D, 2 * G * H], B) : '';
    const initial = starts.map((s, p) => stateSlice(b, s, k, D, `${layer}.${p === 0 ? 'h0' : 'c0'}`));
    const ins = isLstm ? [cur, w, r, bias, '', initial[0] ?? '', initial[1] ?? ''] : [cur, w, r, bias, '', initial[0] ?? ''];
    while (ins[ins.length - 1] === '') ins.pop();
    const attributes = [attrString('direction', D === 2 ? 'bidirectional' : 'forward'), attrInt('hidden_size', H)];
    if (!isLstm) attributes.push(attrInt('linear_before_reset', 1));
    const outs = b.node(isLstm ? 'LSTM' : 'GRU', ins, attributes, layer, isLstm ? 3 : 2);
    cur = mergeDirections(b, outs[0]!, D, `${layer}.y`);
    finals.push(outs.slice(1));
  }
  return { output: cur, finals, how: isLstm ? 'LSTM' : 'GRU', quantized: false, deviation: 0 };
}

/**
 * A QAT recurrent weight [G·H, cols] (lowbit gate order) as the ONNX node's [1, G·H, cols] in
 * `order`: float32, or int8 + DequantizeLinear with the per-row scales reordered alongside.
 * `deviation` is null when the weight is not quantized.
 */
function emitGateWeight(b: RnnGraph, name: string, weight: Tensor, wq: Quantizer | null, what: string, order: readonly number[], H: number, cols: number): { value: string; deviation: number | null } {
  const rows = order.length * H;
  if (!wq) {
    const out = new Float32Array(rows * cols);
    reorderGates(weight.data, order, H, cols, out, 0);
    return { value: b.float(name, [1, rows, cols], out), deviation: null };
  }
  const qw = quantizeWeight(wq, weight, what);
  const values = new Int32Array(rows * cols);
  reorderGates(qw.values, order, H, cols, values, 0);
  const [scale, zeroPoint] = qw.perRow ? [new Float32Array(rows), new Int32Array(rows)] : [qw.scale, qw.zeroPoint];
  if (qw.perRow) {
    reorderGates(qw.scale, order, H, 1, scale, 0);
    reorderGates(qw.zeroPoint, order, H, 1, zeroPoint, 0);
  }
  return { value: emitDequantized(b, name, [1, rows, cols], values, scale, zeroPoint, 1), deviation: qw.deviation };
}

/**
 * W, R and B of a one-direction ONNX LSTM / GRU node for a QAT layer: both weights through
 * emitGateWeight, and b_ih, b_hh reordered into B ('' without biases). `deviation` is the larger
 * of the two weights' (null when neither is quantized).
 */
function emitNodeOperands(
  b: RnnGraph, layer: string, weights: readonly (readonly [Tensor, Quantizer | null, number, 'W' | 'R'])[], bih: Tensor | undefined, bhh: Tensor | undefined, order: readonly number[], H: number,
): { w: string; r: string; bias: string; deviation: number | null } {
  let deviation: number | null = null;
  const [w, r] = weights.map(([weight, wq, cols, tag]) => {
    const out = emitGateWeight(b, `${layer}.${tag}`, weight, wq, `${layer}.${tag === 'W' ? 'weight_ih' : 'weight_hh'}`, order, H, cols);
    if (out.deviation !== null) deviation = Math.max(deviation ?? 0, out.deviation);
    return out.value;
  }) as [string, string];
  const G = order.length;
  let bias = '';
  if (bih && bhh) {
    const B = new Float32Array(2 * G * H);
    reorderGates(bih.data, order, H, 1, B, 0);
    reorderGates(bhh.data, order, H, 1, B, G * H);
    bias = b.float(`${layer}.B`, [1, 2 * G * H], B);
  }
  return { w, r, bias, deviation };
}

/**
 * A QAT recurrent weight [rows, cols] transposed for MatMul ([cols, rows], lowbit gate order):
 * float32, or int8 + DequantizeLinear with per-row scales on axis 1. `deviation` is null when the
 * weight is not quantized.
 */
function emitTransposedWeight(b: RnnGraph, name: string, weight: Tensor, wq: Quantizer | null, what: string, rows: number, cols: number): { value: string; deviation: number | null } {
  if (!wq) {
    const t = new Float32Array(rows * cols);
    transpose2(weight.data, rows, cols, t);
    return { value: b.float(name, [cols, rows], t), deviation: null };
  }
  const qw = quantizeWeight(wq, weight, what);
  const t = new Int32Array(rows * cols);
  transpose2(qw.values, rows, cols, t);
  return { value: emitDequantized(b, name, [cols, rows], t, qw.scale, qw.zeroPoint, 1), deviation: qw.deviation };
}

/**
 * A QatLSTM: per layer, the input x_t through its quantizer (QDQ), then either one ONNX LSTM node
 * with dequantized W and R (no hidden quantizer) or, with a hidden quantizer, the recurrence
 * unrolled over `steps` with a QDQ on h_{t−1}.
 */
function emitQatLstm(b: RnnGraph, m: QatLSTM, label: string, x: string, starts: readonly string[], steps: number | undefined, notes: string[]): RecurrentRun {
  const H = m.hiddenSize;
  const params = new Map(m.namedParameters({ recurse: false }));
  let cur = x;
  const finals: string[][] = [];
  let deviation = 0;
  let quantized = false;
  let unrolled = false;
  for (let k = 0; k < m.numLayers; k++) {
    const layer = `${label}.l${k}`;
    const q = m.layerQuantizers(k);
    const inF = k === 0 ? m.inputSize : H;
    const wih = params.get(`weight_ih_l${k}`)!;
    const whh = params.get(`weight_hh_l${k}`)!;
    const bih = params.get(`bias_ih_l${k}`);
    const bhh = params.get(`bias_hh_l${k}`);
    const iq = active(q.input);
    const hq = active(q.hidden);
    if (iq) {
      cur = emitActivationQdq(b, cur, iq, `${layer}.input`);
      quantized = true;
    }
    const weights = [[wih, active(q.weightIh), inF, 'W'], [whh, active(q.weightHh), H, 'R']] as const;
    const initial = starts.map((s, p) => stateSlice(b, s, k, 1, `${layer}.${p === 0 ? 'h0' : 'c0'}`));
    if (!hq) {
      const { w, r, bias, deviation: weightDeviation } = emitNodeOperands(b, layer, weights, bih, bhh, LSTM_GATES, H);
      if (weightDeviation !== null) {
        deviation = Math.max(deviation, weightDeviation);
        quantized = true;
      }
      const ins = [cur, w, r, bias, '', initial[0] ?? '', initial[1] ?? ''];
      while (ins[ins.length - 1] === '') ins.pop();
      const outs = b.node('LSTM', ins, [attrString('direction', 'forward'), attrInt('hidden_size', H)], layer, 3);
      cur = mergeDirections(b, outs[0]!, 1, `${layer}.y`);
      finals.push(outs.slice(1));
      continue;
    }
    if (steps === undefined) {
      throw new OnnxError('bad-input', `ONNX export: ${label} quantizes its hidden state h_{t−1} (layer ${k}), which the ONNX LSTM node cannot do; pass sequenceLength so that the layer is unrolled over a fixed number of steps`);
    }
    unrolled = true;
    quantized = true;
    // Weights transposed for MatMul ([cols, 4H], lowbit gate order, per-row scales on axis 1).
    const [wT, rT] = weights.map(([weight, wq, cols, tag]) => {
      const out = emitTransposedWeight(b, `${layer}.${tag}_t`, weight, wq, `${layer}.${tag === 'W' ? 'weight_ih' : 'weight_hh'}`, 4 * H, cols);
      if (out.deviation !== null) deviation = Math.max(deviation, out.deviation);
      return out.value;
    }) as [string, string];
    // lowbit adds b_ih + b_hh (summed in float32) after the two products.
    const bias = new Float32Array(4 * H);
    if (bih && bhh) for (let i = 0; i < 4 * H; i++) bias[i] = bih.data[i]! + bhh.data[i]!;
    const biasName = b.float(`${layer}.bias`, [4 * H], bias);
    const gates = b.one('MatMul', [cur, wT], `${layer}.input_gates`);
    const splits = b.int64([H, H, H, H]);
    let h = initial[0] ? b.one('Squeeze', [initial[0], b.int64([0])], `${layer}.h_start`) : '';
    let c = initial[1] ? b.one('Squeeze', [initial[1], b.int64([0])], `${layer}.c_start`) : '';
    const hs: string[] = [];
    for (let t = 0; t < steps; t++) {
      const step = `${layer}.t${t}`;
      const zx = b.one('Gather', [gates, b.int64([t], [])], `${step}.zx`, [attrInt('axis', 0)]);
      // With no initial state, h_{−1} = c_{−1} = 0: the recurrent product and f⊙c vanish exactly.
      let z = zx;
      if (h !== '') {
        const hIn = emitActivationQdq(b, h, hq, `${step}.h`);
        z = b.one('Add', [zx, b.one('MatMul', [hIn, rT], `${step}.zh`)], `${step}.zsum`);
      }
      z = b.one('Add', [z, biasName], `${step}.z`);
      const [zi, zf, zg, zo] = b.node('Split', [z, splits], [attrInt('axis', 1)], `${step}.gate`, 4) as [string, string, string, string];
      const ig = b.one('Mul', [b.one('Sigmoid', [zi], `${step}.i`), b.one('Tanh', [zg], `${step}.g`)], `${step}.ig`);
      c = c === '' ? ig : b.one('Add', [b.one('Mul', [b.one('Sigmoid', [zf], `${step}.f`), c], `${step}.fc`), ig], `${step}.c`);
      h = b.one('Mul', [b.one('Sigmoid', [zo], `${step}.o`), b.one('Tanh', [c], `${step}.tanh_c`)], `${step}.h_out`);
      hs.push(b.one('Unsqueeze', [h, b.int64([0])], `${step}.y`));
    }
    cur = hs.length === 1 ? hs[0]! : b.one('Concat', hs, `${layer}.y`, [attrInt('axis', 0)]);
    finals.push([hs[hs.length - 1]!, b.one('Unsqueeze', [c, b.int64([0])], `${layer}.c_final`)]);
  }
  if (unrolled) notes.push(`${label}: hidden-state quantizer → recurrence unrolled over ${steps} steps (fixed sequence length)`);
  return { output: cur, finals, how: unrolled ? 'unrolled' : 'LSTM', quantized, deviation };
}

/**
 * A QatGRU: per layer, the input x_t through its quantizer (QDQ), then either one ONNX GRU node
 * (`linear_before_reset` 1) with dequantized W and R (no hidden quantizer) or, with a hidden
 * quantizer, the recurrence unrolled over `steps`: per step
 * g_h = Q(h_{t−1})·R̂ᵀ + b_hh, r = σ(g_x[r] + g_h[r]), z = σ(g_x[z] + g_h[z]),
 * n = tanh(g_x[n] + r⊙g_h[n]), h_t = n + z⊙(h_{t−1} − n), as QatGRU computes it.
 */
function emitQatGru(b: RnnGraph, m: QatGRU, label: string, x: string, starts: readonly string[], steps: number | undefined, notes: string[]): RecurrentRun {
  const H = m.hiddenSize;
  const params = new Map(m.namedParameters({ recurse: false }));
  let cur = x;
  const finals: string[][] = [];
  let deviation = 0;
  let quantized = false;
  let unrolled = false;
  for (let k = 0; k < m.numLayers; k++) {
    const layer = `${label}.l${k}`;
    const q = m.layerQuantizers(k);
    const inF = k === 0 ? m.inputSize : H;
    const bih = params.get(`bias_ih_l${k}`);
    const bhh = params.get(`bias_hh_l${k}`);
    const iq = active(q.input);
    const hq = active(q.hidden);
    if (iq) {
      cur = emitActivationQdq(b, cur, iq, `${layer}.input`);
      quantized = true;
    }
    const weights = [[params.get(`weight_ih_l${k}`)!, active(q.weightIh), inF, 'W'], [params.get(`weight_hh_l${k}`)!, active(q.weightHh), H, 'R']] as const;
    const initial = starts.map((s) => stateSlice(b, s, k, 1, `${layer}.h0`));
    if (!hq) {
      const { w, r, bias, deviation: weightDeviation } = emitNodeOperands(b, layer, weights, bih, bhh, GRU_GATES, H);
      if (weightDeviation !== null) {
        deviation = Math.max(deviation, weightDeviation);
        quantized = true;
      }
      const ins = [cur, w, r, bias, '', initial[0] ?? ''];
      while (ins[ins.length - 1] === '') ins.pop();
      const outs = b.node('GRU', ins, [attrString('direction', 'forward'), attrInt('hidden_size', H), attrInt('linear_before_reset', 1)], layer, 2);
      cur = mergeDirections(b, outs[0]!, 1, `${layer}.y`);
      finals.push(outs.slice(1));
      continue;
    }
    if (steps === undefined) {
      throw new OnnxError('bad-input', `ONNX export: ${label} quantizes its hidden state h_{t−1} (layer ${k}), which the ONNX GRU node cannot do; pass sequenceLength so that the layer is unrolled over a fixed number of steps`);
    }
    unrolled = true;
    quantized = true;
    // Weights transposed for MatMul ([cols, 3H], lowbit gate order r, z, n; per-row scales on axis 1).
    const [wT, rT] = weights.map(([weight, wq, cols, tag]) => {
      const out = emitTransposedWeight(b, `${layer}.${tag}_t`, weight, wq, `${layer}.${tag === 'W' ? 'weight_ih' : 'weight_hh'}`, 3 * H, cols);
      if (out.deviation !== null) deviation = Math.max(deviation, out.deviation);
      return out.value;
    }) as [string, string];
    const biasIh = b.float(`${layer}.bias_ih`, [3 * H], bih ? bih.data : new Float32Array(3 * H));
    const biasHhData = bhh ? Float32Array.from(bhh.data) : new Float32Array(3 * H);
    const biasHh = b.float(`${layer}.bias_hh`, [3 * H], biasHhData);
    // With no initial state, h_{−1} = 0: g_h is b_hh alone (its three gate parts as constants).
    const startParts = initial[0] ? [] : [0, 1, 2].map((g) => b.float(`${layer}.bias_hh_${'rzn'[g]}`, [H], biasHhData.subarray(g * H, (g + 1) * H)));
    const gates = b.one('Add', [b.one('MatMul', [cur, wT], `${layer}.input_matmul`), biasIh], `${layer}.input_gates`);
    const splits = b.int64([H, H, H]);
    let h = initial[0] ? b.one('Squeeze', [initial[0], b.int64([0])], `${layer}.h_start`) : '';
    const hs: string[] = [];
    for (let t = 0; t < steps; t++) {
      const step = `${layer}.t${t}`;
      const gx = b.one('Gather', [gates, b.int64([t], [])], `${step}.gx`, [attrInt('axis', 0)]);
      const [xr, xz, xn] = b.node('Split', [gx, splits], [attrInt('axis', 1)], `${step}.gx_part`, 3) as [string, string, string];
      let hr: string, hz: string, hn: string;
      if (h === '') {
        [hr, hz, hn] = startParts as [string, string, string];
      } else {
        const hIn = emitActivationQdq(b, h, hq, `${step}.h`);
        const gh = b.one('Add', [b.one('MatMul', [hIn, rT], `${step}.h_matmul`), biasHh], `${step}.gh`);
        [hr, hz, hn] = b.node('Split', [gh, splits], [attrInt('axis', 1)], `${step}.gh_part`, 3) as [string, string, string];
      }
      const r = b.one('Sigmoid', [b.one('Add', [xr, hr], `${step}.r_in`)], `${step}.r`);
      const z = b.one('Sigmoid', [b.one('Add', [xz, hz], `${step}.z_in`)], `${step}.z`);
      const n = b.one('Tanh', [b.one('Add', [xn, b.one('Mul', [r, hn], `${step}.r_hn`)], `${step}.n_in`)], `${step}.n`);
      h = h === ''
        ? b.one('Sub', [n, b.one('Mul', [z, n], `${step}.z_n`)], `${step}.h_out`)
        : b.one('Add', [n, b.one('Mul', [z, b.one('Sub', [h, n], `${step}.h_minus_n`)], `${step}.z_diff`)], `${step}.h_out`);
      hs.push(b.one('Unsqueeze', [h, b.int64([0])], `${step}.y`));
    }
    cur = hs.length === 1 ? hs[0]! : b.one('Concat', hs, `${layer}.y`, [attrInt('axis', 0)]);
    finals.push([hs[hs.length - 1]!]);
  }
  if (unrolled) notes.push(`${label}: hidden-state quantizer → recurrence unrolled over ${steps} steps (fixed sequence length)`);
  return { output: cur, finals, how: unrolled ? 'unrolled' : 'GRU', quantized, deviation };
}
