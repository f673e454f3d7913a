/**
 * Integer-only next-word language model: a trained `nn.NextWordModel` with an LSTM or GRU core
 * (float or QAT) converted to the iRNN runtime (`quant.irnn.IntLSTM` / `IntGRU`, docs/irnn.md),
 * saved as an .irnn file and evaluated from it (`lowbit export RUN --format irnn`, `lowbit eval FILE.irnn`).
 * (The GRU follows every LSTM step below with QuantGRU / convertQuantGRU and its own file, gru-io.ts.)
 *
 * Conversion (post-training, no fine-tune):
 *   - the embedding table, the LSTM's W_ih / W_hh and the head's weight are taken as the run's
 *     forward sees them (through its fake quantizers for a QAT run);
 *   - the LSTM becomes a `QuantLSTM` (PWL sigmoid/tanh, 16 segments; weights at the run's weight
 *     bits, per-row absmax scales) whose int8 x and h ranges are observed on `calibration` train
 *     windows, then `convertQuantLSTM` → IntLSTM;
 *   - the table is stored as int8 codes at the LSTM's input scale (what IntLSTM.quantizeInput
 *     gives), the head as int8 per-row weights (absmax / 127) with float32 row scales and bias.
 * Forward: ids → int8 table rows → IntLSTM over the context (integer only) → int8 h of the last
 * step → int8 × int8 head GEMM with int32 accumulators → one float multiply-add per logit (for the
 * softmax only).
 *
 * File: the IntLSTM's .lowbit file (io.ts, versions 1..3) or the IntGRU's (gru-io.ts) plus the tensors lm.embedding int8 [V, E],
 * lm.head.weight int8 [V, H], lm.head.scale float32 [V], lm.head.bias float32 [V] and
 *   metadata.lm = { format: 'lowbit-irnn-lm', version: 1, context, vocabulary: string[V], source?, quant? }.
 */
import { noGrad } from '../autograd/engine.ts';
import { readLowbit, writeLowbit, type LowbitModel, type LowbitTensor } from '../format/lowbit.ts';
import type { NextWordModel } from '../nn/models/next-word.ts';
import { GRU, LSTM } from '../nn/rnn.ts';
import {
  convertQuantGRU, convertQuantLSTM, IntGRU, intGRUFromLowbit, intGRUToLowbit, intLSTMToLowbit, irnnFromLowbit, IrnnFormatError, isIntGRUFile, QuantGRU, QuantLSTM, type IntLSTM,
} from '../quant/irnn/index.ts';
import { QatLSTM } from '../quant/rnn/qat-lstm.ts';
import { QatGRU } from '../quant/rnn/qat-gru.ts';
import { gemmInt8, nativeIntAddon, packInt8Weights, type PackedWeights } from '../runtime/kernels/index.ts';
import { roundHalfEven } from '../backend/reference/elementwise.ts';
import { Tensor } from '../tensor/index.ts';
import type { Quantizer } from '../quant/quantizers/quantizer.ts';

const LM_FORMAT = 'lowbit-irnn-lm';
const LM_VERSION = 1;
/** Largest vocabulary / context accepted from a file. */
const MAX_VOCAB = 1 << 20;
const MAX_CONTEXT = 1024;

export interface IntLmMeta {
  readonly context: number;
  readonly vocabulary: readonly string[];
  readonly source?: string;
  readonly quant?: string;
  /** The corpus the run was trained on and its `--vocab` setting (to rebuild the test split). */
  readonly dataset?: string;
  readonly corpusVocab?: number;
}

/** An integer-only next-word model (see the file comment). */
export class IntNextWordModel {
  private packedHead: PackedWeights | null = null;

  constructor(
    /** The integer recurrent core: an IntLSTM (lstm-lm runs) or an IntGRU (gru-lm runs). */
    readonly rnn: IntLSTM | IntGRU,
    /** int8 codes at lstm.params.inputScale, [V, E]. */
    readonly table: Int8Array,
    /** int8 per-row weights [V, H]. */
    readonly headWeight: Int8Array,
    readonly headScale: Float32Array,
    readonly headBias: Float32Array,
    readonly meta: IntLmMeta,
  ) {
    const V = meta.vocabulary.length;
    const { inputSize: E, hiddenSize: H } = rnn;
    if (table.length !== V * E || headWeight.length !== V * H || headScale.length !== V || headBias.length !== V) {
      throw new RangeError(`IntNextWordModel: sizes do not fit vocabulary ${V}, embedding ${E}, hidden ${H}`);
    }
  }

  get vocabSize(): number {
    return this.meta.vocabulary.length;
  }

  /** Bytes of the integer weights, scales, biases and tables (the LSTM's packed at its weight bits). */
  get byteLength(): number {
    return this.table.length + this.rnn.byteLength + this.headWeight.length + 8 * this.vocabSize;
  }

  /** The window the run was trained on (the words the model sees when it generates). */
  get maxContext(): number {
    return this.meta.context;
  }

  /**
   * For nn.generate (a CachedLanguageModel): the 'cache' of a recurrent model is the ids of the
   * window so far, run again from the zero state at each step — the same logits as `nextLogits`
   * on that window (the model was trained on windows that start from a zero state).
   */
  createCache(): IntWindowCache {
    return new IntWindowCache(this.meta.context);
  }

  /** Appends `ids` to `cache` and returns the logits [V] of the word after its window. */
  nextLogitsCached(ids: readonly number[], cache: IntWindowCache): Float32Array {
    cache.append(ids);
    return this.nextLogits(cache.ids);
  }

  /** The logits [V] of the word after `ids` (one sequence). */
  nextLogits(ids: readonly number[]): Float32Array {
    return this.logits(ids, 1);
  }

  /**
   * Logits [N, V] (float32, row-major) of int32 ids [N, C], C = any context length ≥ 1.
   * `options.native === false` runs the TypeScript cell and head loop (the reference the native
   * cell and head equal bit for bit; the int8 GEMMs stay the runtime's).
   */
  logits(ids: ArrayLike<number>, batch: number, options: { native?: boolean } = {}): Float32Array {
    const V = this.vocabSize;
    const { inputSize: E, hiddenSize: H } = this.rnn;
    if (!Number.isInteger(batch) || batch < 1 || ids.length % batch !== 0 || ids.length === 0) {
      throw new RangeError(`IntNextWordModel.logits: ${ids.length} ids do not make ${batch} rows`);
    }
    const steps = ids.length / batch;
    const x = new Int8Array(steps * batch * E);
    for (let n = 0; n < batch; n++) {
      for (let t = 0; t < steps; t++) {
        const id = ids[n * steps + t]!;
        if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`IntNextWordModel.logits: word id ${id} (row ${n}, step ${t}) is outside [0, ${V - 1}]`);
        x.set(this.table.subarray(id * E, (id + 1) * E), (t * batch + n) * E);
      }
    }
    const { state } = this.rnn.run(x, steps, batch, undefined, options.native === false ? { native: false } : {});
    return this.head(state.h, batch, options);
  }

  /**
   * The head on the last step's int8 h [N, H]: logits [N, V] = float32((acc · headScale) ·
   * hiddenScale + headBias), acc the int8 × int8 GEMM's int32 sums. One native call (GEMM and
   * dequantization fused, native/intlmhead.cc) when the addon has it and `options.native` is not
   * false; else the runtime's int8 GEMM and this TypeScript loop, the reference it equals bit for bit.
   */
  head(h: Int8Array, batch: number, options: { native?: boolean } = {}): Float32Array {
    const V = this.vocabSize;
    const H = this.rnn.hiddenSize;
    if (h.length !== batch * H) throw new RangeError(`IntNextWordModel.head: ${h.length} values of h, expected ${batch}·${H}`);
    if (this.packedHead && !this.packedHead.panel && nativeIntAddon()) this.packedHead = null;  // packed while the reference kernels were forced
    this.packedHead ??= packInt8Weights(this.headWeight, V, H);
    const out = new Float32Array(batch * V);
    const hs = this.rnn.params.hiddenScale;
    const addon = options.native === false ? null : nativeIntAddon();
    if (addon?.intLmHead && this.packedHead.panel) {
      addon.intLmHead(batch, V, H, h, this.packedHead.panel, this.packedHead.rowSums, this.headScale, this.headBias, hs, out);
      return out;
    }
    const acc = new Int32Array(batch * V);
    gemmInt8(batch, V, H, h, 0, this.packedHead, acc);
    for (let n = 0; n < batch; n++) for (let r = 0; r < V; r++) out[n * V + r] = acc[n * V + r]! * this.headScale[r]! * hs + this.headBias[r]!;
    return out;
  }
}

/** The ids an IntNextWordModel generates from (at most `capacity`, the model's window). */
export class IntWindowCache {
  readonly ids: number[] = [];

  constructor(readonly capacity: number) {}

  get length(): number {
    return this.ids.length;
  }

  append(ids: readonly number[]): void {
    if (this.ids.length + ids.length > this.capacity) throw new RangeError(`IntWindowCache: ${this.ids.length} + ${ids.length} ids exceed the window of ${this.capacity}`);
    this.ids.push(...ids);
  }
}

/** Bits of the LSTM weight quantizer of a QAT model (8 when float or unknown). */
function weightBitsOf(q: Quantizer | null): number {
  const bits = q?.spec.bits;
  return typeof bits === 'number' && Number.isInteger(bits) && bits >= 2 && bits <= 8 ? bits : 8;
}

function effective(weight: Tensor, quantizer: Quantizer | null | undefined): Tensor {
  return quantizer && quantizer.fakeQuantEnabled ? quantizer.forward(weight) : weight;
}

/**
 * Converts `model` (an LSTM or GRU NextWordModel, float or QAT) to an IntNextWordModel. `calibration`:
 * batches of int32 context ids [B, C] on which the int8 ranges of x and h are observed.
 */
export function convertNextWordModel(model: NextWordModel, calibration: Iterable<Tensor>, meta: IntLmMeta, options: { segments?: number } = {}): IntNextWordModel {
  if (meta.vocabulary.length !== model.vocabSize) throw new RangeError(`convertNextWordModel: ${meta.vocabulary.length} vocabulary words for a ${model.vocabSize}-word model`);
  const rnn = model.rnn as unknown;
  const H = model.hiddenSize;
  const V = model.vocabSize;
  return noGrad(() => {
    const wasTraining = model.training;
    model.eval();
    try {
      let wih: Tensor, whh: Tensor, bih: Tensor, bhh: Tensor, bits: number;
      // The QAT LSTM's input quantizer (x_t as its matmul sees it: clamped and rounded); null when float.
      let inputQuantizer: Quantizer | null = null;
      if (rnn instanceof QatLSTM || rnn instanceof QatGRU) {
        if (rnn.numLayers !== 1) throw new RangeError(`convertNextWordModel: one ${model.cell.toUpperCase()} layer only`);
        const q = rnn.layerQuantizers(0);
        const params = new Map(rnn.namedParameters({ recurse: false }));
        const [pih, phh, pbih, pbhh] = ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0'].map((k) => params.get(k));
        if (!pih || !phh || !pbih || !pbhh) throw new RangeError(`convertNextWordModel: the ${model.cell.toUpperCase()} needs both biases`);
        wih = effective(pih, q.weightIh);
        whh = effective(phh, q.weightHh);
        bih = pbih;
        bhh = pbhh;
        bits = weightBitsOf(q.weightIh);
        inputQuantizer = q.input;
        const headInput = (model.head as unknown as { inputQuantizer?: Quantizer | null }).inputQuantizer ?? null;
        for (const [what, quantizer] of [[`the ${model.cell.toUpperCase()} input x_t`, q.input], [`the ${model.cell.toUpperCase()} hidden state h_{t-1}`, q.hidden], ['the head input', headInput]] as const) {
          if (quantizer && quantizer.spec.bits < 8) {
            throw new RangeError(`convertNextWordModel: ${what} was trained at ${quantizer.spec.bits} bits; the integer runtime carries x and h as int8 and the model relies on the clipping of its narrower format (a w4a4 run measured test perplexity 1609 through it instead of 133), so only runs with 8-bit or float activations convert`);
          }
        }
      } else if (rnn instanceof LSTM || rnn instanceof GRU) {
        const sd = rnn.stateDict();
        const get = (k: string): Tensor => {
          const t = sd.get(k);
          if (!t) throw new RangeError(`convertNextWordModel: the ${model.cell.toUpperCase()} has no ${k}`);
          return t;
        };
        [wih, whh, bih, bhh] = [get('weight_ih_l0'), get('weight_hh_l0'), get('bias_ih_l0'), get('bias_hh_l0')];
        bits = 8;
      } else {
        throw new TypeError(`convertNextWordModel: unsupported recurrent core ${(rnn as object).constructor.name}`);
      }
      const E = wih.shape[1]!;
      const coreOptions = { batchFirst: true, weightBits: bits, ...(options.segments === undefined ? {} : { segments: options.segments }) };
      const qlstm = model.cell === 'gru' ? new QuantGRU(E, H, coreOptions) : new QuantLSTM(E, H, coreOptions);
      qlstm.loadStateDict(new Map([['weight_ih_l0', wih], ['weight_hh_l0', whh], ['bias_ih_l0', bih], ['bias_hh_l0', bhh]]), { strict: false });
      // The embedding table as the LSTM's matmul sees it (through the QAT input quantizer): every id once.
      const allIds = new Tensor(Int32Array.from({ length: V }, (_, i) => i), [1, V]);
      const embed = (ids: Tensor): Tensor => {
        const x = model.embedding.forward(ids);
        return inputQuantizer && inputQuantizer.fakeQuantEnabled ? inputQuantizer.forward(x) : x;
      };
      const tableReal = embed(allIds);
      // Calibration: observe the int8 ranges of x and h (training mode updates the absmax buffers).
      qlstm.train();
      let seen = 0;
      for (const ids of calibration) {
        qlstm.forward(embed(ids));
        seen++;
      }
      if (seen === 0) throw new RangeError('convertNextWordModel: no calibration batches');
      qlstm.eval();
      const core = qlstm instanceof QuantGRU ? convertQuantGRU(qlstm) : convertQuantLSTM(qlstm);
      const table = core.quantizeInput(tableReal.data);
      const head = model.head as unknown as { weight: Tensor; bias: Tensor | null; weightQuantizer?: Quantizer | null };
      const hw = effective(head.weight, head.weightQuantizer ?? null).data;
      const headScale = new Float32Array(V);
      const headWeight = new Int8Array(V * H);
      for (let r = 0; r < V; r++) {
        let m = 0;
        for (let j = 0; j < H; j++) m = Math.max(m, Math.abs(hw[r * H + j]!));
        const s = m > 0 ? m / 127 : 1;
        headScale[r] = s;
        for (let j = 0; j < H; j++) headWeight[r * H + j] = Math.max(-127, Math.min(127, roundHalfEven(hw[r * H + j]! / s)));
      }
      const headBias = head.bias ? Float32Array.from(head.bias.data) : new Float32Array(V);
      return new IntNextWordModel(core, table, headWeight, headScale, headBias, meta);
    } finally {
      model.train(wasTraining);
    }
  });
}

/** The .lowbit model of an IntNextWordModel (see the file comment). */
export function intNextWordToLowbit(model: IntNextWordModel): LowbitModel {
  const base = model.rnn instanceof IntGRU ? intGRUToLowbit(model.rnn) : intLSTMToLowbit(model.rnn);
  const V = model.vocabSize;
  const tensors: Record<string, LowbitTensor> = {
    ...base.tensors,
    'lm.embedding': { dtype: 'int8', shape: [V, model.rnn.inputSize], data: model.table },
    'lm.head.weight': { dtype: 'int8', shape: [V, model.rnn.hiddenSize], data: model.headWeight },
    'lm.head.scale': { dtype: 'float32', shape: [V], data: model.headScale },
    'lm.head.bias': { dtype: 'float32', shape: [V], data: model.headBias },
  };
  const { context, vocabulary, ...rest } = model.meta;
  const lm = { format: LM_FORMAT, version: LM_VERSION, context, vocabulary: [...vocabulary], ...rest };
  return { graph: base.graph, tensors, metadata: { ...base.metadata, lm } };
}

/** Writes the .irnn file atomically; returns its byte length. */
export function saveIntNextWord(path: string, model: IntNextWordModel): number {
  return writeLowbit(path, intNextWordToLowbit(model));
}

function bad(message: string): never {
  throw new IrnnFormatError('bad-field', `language model: ${message}`);
}

function lmTensor<T extends Int8Array | Float32Array>(file: LowbitModel, name: string, dtype: 'int8' | 'float32', shape: readonly number[]): T {
  const t = file.tensors[name];
  if (!t) throw new IrnnFormatError('bad-tensor', `language model: tensor ${name} is missing`);
  if (t.dtype !== dtype || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new IrnnFormatError('bad-tensor', `language model: tensor ${name} is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} [${shape.join(', ')}]`);
  }
  const data = dtype === 'int8' ? (t.data instanceof Int8Array ? t.data : new Int8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)) : t.data;
  if (dtype === 'float32') {
    for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) throw new IrnnFormatError('bad-tensor', `language model: ${name}[${i}] is not finite`);
  }
  return data as T;
}

/** True when a .lowbit model carries an integer language model (metadata.lm). */
export function isIntNextWordFile(file: LowbitModel): boolean {
  const lm = (file.metadata as Record<string, unknown> | undefined)?.['lm'];
  return typeof lm === 'object' && lm !== null && (lm as Record<string, unknown>)['format'] === LM_FORMAT;
}

/** Validates and rebuilds an IntNextWordModel from its .lowbit model; throws IrnnFormatError naming the first problem. */
export function intNextWordFromLowbit(file: LowbitModel): IntNextWordModel {
  const lm = (file.metadata as Record<string, unknown> | undefined)?.['lm'];
  if (typeof lm !== 'object' || lm === null || Array.isArray(lm)) throw new IrnnFormatError('not-irnn', `language model: metadata.lm is ${JSON.stringify(lm)}, expected { format: '${LM_FORMAT}', version: ${LM_VERSION}, ... }`);
  const meta = lm as Record<string, unknown>;
  if (meta['format'] !== LM_FORMAT || meta['version'] !== LM_VERSION) bad(`metadata.lm format/version is ${JSON.stringify(meta['format'])}/${JSON.stringify(meta['version'])}, expected '${LM_FORMAT}'/${LM_VERSION}`);
  const context = meta['context'];
  if (typeof context !== 'number' || !Number.isInteger(context) || context < 1 || context > MAX_CONTEXT) bad(`context ${JSON.stringify(context)} is not an integer in [1, ${MAX_CONTEXT}]`);
  const vocabulary = meta['vocabulary'];
  if (!Array.isArray(vocabulary) || vocabulary.length < 2 || vocabulary.length > MAX_VOCAB || vocabulary.some((w) => typeof w !== 'string')) bad(`vocabulary must be a list of 2..${MAX_VOCAB} strings`);
  for (const key of ['source', 'quant', 'dataset'] as const) if (meta[key] !== undefined && typeof meta[key] !== 'string') bad(`${key} must be a string`);
  const corpusVocab = meta['corpusVocab'];
  if (corpusVocab !== undefined && (typeof corpusVocab !== 'number' || !Number.isInteger(corpusVocab) || corpusVocab < 2 || corpusVocab > MAX_VOCAB)) bad(`corpusVocab ${JSON.stringify(corpusVocab)} is not an integer in [2, ${MAX_VOCAB}]`);
  let rnn: IntLSTM | IntGRU;
  if (isIntGRUFile(file)) rnn = intGRUFromLowbit(file);
  else {
    rnn = irnnFromLowbit(file).lstm;
    if (file.graph.length !== 1) bad('the LSTM must be the only graph node (no attention)');
    if (rnn.params.layerNorm) bad('layer-normalised LSTMs are not used by language models');
  }
  const V = (vocabulary as string[]).length;
  const E = rnn.inputSize;
  const H = rnn.hiddenSize;
  const table = lmTensor<Int8Array>(file, 'lm.embedding', 'int8', [V, E]);
  const headWeight = lmTensor<Int8Array>(file, 'lm.head.weight', 'int8', [V, H]);
  for (let i = 0; i < headWeight.length; i++) if (headWeight[i] === -128) throw new IrnnFormatError('bad-tensor', `language model: lm.head.weight[${i}] is -128, outside ±127`);
  const headScale = lmTensor<Float32Array>(file, 'lm.head.scale', 'float32', [V]);
  for (let i = 0; i < V; i++) if (!(headScale[i]! > 0)) throw new IrnnFormatError('bad-tensor', `language model: lm.head.scale[${i}] = ${headScale[i]} is not positive`);
  const headBias = lmTensor<Float32Array>(file, 'lm.head.bias', 'float32', [V]);
  return new IntNextWordModel(rnn, table, headWeight, headScale, headBias, {
    context: context as number, vocabulary: vocabulary as string[],
    ...(typeof meta['source'] === 'string' ? { source: meta['source'] } : {}), ...(typeof meta['quant'] === 'string' ? { quant: meta['quant'] } : {}),
    ...(typeof meta['dataset'] === 'string' ? { dataset: meta['dataset'] } : {}), ...(typeof corpusVocab === 'number' ? { corpusVocab } : {}),
  });
}

/** Reads an .irnn language-model file (container and content validated). */
export function loadIntNextWord(file: string | Uint8Array): IntNextWordModel {
  return intNextWordFromLowbit(readLowbit(file));
}
