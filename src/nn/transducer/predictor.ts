/**
 * The prediction network of an RNN transducer: a language-model-like recurrence over the labels
 * emitted so far. {@link TransducerPredictor} is the contract the model and the decoders use, so
 * another predictor (e.g. a vector-quantized LSTM whose states can be merged) plugs in.
 */
import { concat, gather, reshape, Tensor, zeros, type Rng } from '../../tensor/index.ts';
import { Module } from '../module.ts';
import { Embedding } from '../embedding.ts';
import { LSTM } from '../rnn.ts';

/**
 * A prediction network. Labels live in the joint output's index space [0, V] (V + 1 entries with
 * blank); the start symbol fed before the first label is the blank index.
 *
 * State `S` is opaque to the decoders: they only create it, step it, select and join its rows.
 */
export interface TransducerPredictor<S = unknown> {
  /** Width P of the outputs. */
  readonly outputSize: number;
  /** Teacher-forced: labels [N, U] int32 -> outputs [N, U + 1, P] (the start symbol's output first). */
  forward(labels: Tensor): Tensor;
  /** The state before the start symbol, for `batch` hypotheses. */
  initialState(batch: number): S;
  /** One step for a batch of B hypotheses: feeds `prevLabels` [B] and returns outputs [B, P] and the new state. */
  step(prevLabels: Int32Array, state: S): { output: Tensor; state: S };
  /**
   * Optional: a key such that equal keys mean identical future outputs (e.g. vector-quantized
   * states); beam search with `merge: 'state'` merges hypotheses by it.
   */
  stateKey?(state: S, index: number): string;
  /** Rows `indices` of a batched state, in that order (repeats allowed): beam search's reorder. */
  selectState(state: S, indices: readonly number[]): S;
  /** The states' rows one after the other (batch concatenation). */
  joinStates(states: readonly S[]): S;
}

/** A predictor that is also a Module (so its parameters train with the model). */
export type PredictorModule<S = unknown> = Module & TransducerPredictor<S>;

/** The state of {@link LstmPredictor}: h and c, each [numLayers, B, hiddenSize]. */
export interface LstmPredictorState {
  readonly h: Tensor;
  readonly c: Tensor;
}

/** Options of {@link LstmPredictor}. */
export interface LstmPredictorOptions {
  /** Embedding width (default 32). */
  readonly embeddingSize?: number;
  /** LSTM hidden size = output width (default 64). */
  readonly hiddenSize?: number;
  /** Stacked LSTM layers (default 1). */
  readonly numLayers?: number;
  /** Index of blank, also the start symbol (default: numOutputs − 1). */
  readonly blank?: number;
  readonly rng?: Rng;
}

/** @internal Refuses a label outside [0, numOutputs) (`who` names the predictor, `name` the argument). */
export function checkPredictorLabels(values: ArrayLike<number>, numOutputs: number, who: string, name: string): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= numOutputs) throw new RangeError(`${who}: ${name}[${i}] = ${v} is outside [0, ${numOutputs - 1}]`);
  }
}

/** @internal Teacher-forcing input of a predictor: checked int32 labels [N, U] → [N, U + 1] with the start symbol (blank) first. */
export function withStartSymbol(labels: Tensor, numOutputs: number, blank: number, who: string): Tensor {
  if (labels.dtype !== 'int32' || labels.rank !== 2) throw new TypeError(`${who}: labels must be int32 [N, U], got ${labels.dtype} [${labels.shape.join(', ')}]`);
  checkPredictorLabels(labels.data, numOutputs, who, 'labels');
  const [n, u] = labels.shape as [number, number];
  const input = new Int32Array(n * (u + 1));
  for (let b = 0; b < n; b++) {
    input[b * (u + 1)] = blank;
    input.set(labels.data.subarray(b * u, (b + 1) * u), b * (u + 1) + 1);
  }
  return new Tensor(input, [n, u + 1]);
}

/**
 * The usual RNN-T prediction network: Embedding(V + 1, E) of the previous label (blank = start
 * symbol) -> LSTM(E, H) (batchFirst). Outputs are the LSTM's hidden states.
 */
export class LstmPredictor extends Module implements TransducerPredictor<LstmPredictorState> {
  readonly numOutputs: number;
  readonly blank: number;
  readonly outputSize: number;
  readonly embedding: Embedding;
  readonly lstm: LSTM;

  /** `numOutputs` = V + 1, the joint output size (labels and blank). */
  constructor(numOutputs: number, options: LstmPredictorOptions = {}) {
    super();
    if (!Number.isInteger(numOutputs) || numOutputs < 2) throw new RangeError(`LstmPredictor: numOutputs must be an integer >= 2, got ${numOutputs}`);
    const blank = options.blank ?? numOutputs - 1;
    if (!Number.isInteger(blank) || blank < 0 || blank >= numOutputs) throw new RangeError(`LstmPredictor: blank must be an integer in [0, ${numOutputs - 1}], got ${blank}`);
    const embeddingSize = options.embeddingSize ?? 32;
    const hiddenSize = options.hiddenSize ?? 64;
    this.numOutputs = numOutputs;
    this.blank = blank;
    this.outputSize = hiddenSize;
    this.embedding = this.registerModule('embedding', new Embedding(numOutputs, embeddingSize, { rng: options.rng }));
    this.lstm = this.registerModule('lstm', new LSTM(embeddingSize, hiddenSize, { numLayers: options.numLayers ?? 1, batchFirst: true, rng: options.rng }));
  }

  forward(labels: Tensor): Tensor {
    const [output] = this.lstm.forward(this.embedding.forward(withStartSymbol(labels, this.numOutputs, this.blank, 'LstmPredictor')));
    return output;
  }

  initialState(batch: number): LstmPredictorState {
    if (!Number.isInteger(batch) || batch < 1) throw new RangeError(`LstmPredictor: batch must be a positive integer, got ${batch}`);
    const shape = [this.lstm.numLayers, batch, this.outputSize];
    return { h: zeros(shape), c: zeros(shape) };
  }

  step(prevLabels: Int32Array, state: LstmPredictorState): { output: Tensor; state: LstmPredictorState } {
    const batch = prevLabels.length;
    if (state.h.shape[1] !== batch) throw new RangeError(`LstmPredictor.step: ${batch} labels for a state of ${state.h.shape[1]} hypotheses`);
    checkPredictorLabels(prevLabels, this.numOutputs, 'LstmPredictor', 'prevLabels');
    const embedded = this.embedding.forward(new Tensor(Int32Array.from(prevLabels), [batch, 1]));
    const [output, [h, c]] = this.lstm.forward(embedded, [state.h, state.c]);
    return { output: reshape(output, [batch, this.outputSize]), state: { h, c } };
  }

  selectState(state: LstmPredictorState, indices: readonly number[]): LstmPredictorState {
    const index = new Tensor(Int32Array.from(indices), [indices.length]);
    return { h: gather(state.h, index, 1), c: gather(state.c, index, 1) };
  }

  joinStates(states: readonly LstmPredictorState[]): LstmPredictorState {
    if (states.length === 1) return states[0]!;
    return { h: concat(states.map((s) => s.h), 1), c: concat(states.map((s) => s.c), 1) };
  }
}
