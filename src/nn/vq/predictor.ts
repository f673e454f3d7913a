/**
 * The VQ-LSTM prediction network of an RNN transducer (VQ-T, Shi et al. 2022): Embedding(V + 1, E)
 * of the previous label (blank = start symbol) → VQLSTM(E, H, K). Its state is the code of the
 * quantized LSTM state, and its output ĥ is a row of the codebook, so hypotheses with equal codes
 * have identical futures and beam search can merge them (`stateKey` = the code).
 */
import { Tensor } from '../../tensor/index.ts';
import { Module } from '../module.ts';
import { Embedding } from '../embedding.ts';
import { checkPredictorLabels, withStartSymbol, type TransducerPredictor } from '../transducer/predictor.ts';
import { START_CODE, VQLSTM, type VQLSTMOptions } from './vq-lstm.ts';

/** The state of {@link VqLstmPredictor}: one code per hypothesis (START_CODE before any step). */
export interface VqPredictorState {
  readonly codes: Int32Array;
}

/** Options of {@link VqLstmPredictor}: the VQLSTM's options plus the embedding and blank. */
export interface VqLstmPredictorOptions extends Omit<VQLSTMOptions, 'batchFirst' | 'dtype'> {
  /** Embedding width (default 32). */
  readonly embeddingSize?: number;
  /** VQLSTM hidden size = output width (default 64). */
  readonly hiddenSize?: number;
  /** Index of blank, also the start symbol (default: numOutputs − 1). */
  readonly blank?: number;
}

/**
 * A TransducerPredictor whose recurrent state is vector-quantized. `forward` (teacher forcing)
 * also leaves the VQ loss of that pass in `vqLoss`: add it to the transducer loss when training.
 */
export class VqLstmPredictor extends Module implements TransducerPredictor<VqPredictorState> {
  readonly numOutputs: number;
  readonly blank: number;
  readonly outputSize: number;
  readonly embedding: Embedding;
  readonly lstm: VQLSTM;
  /** The codebook + commitment loss of the last `forward` (null before the first). */
  vqLoss: Tensor | null = null;

  /** `numOutputs` = V + 1, the joint output size (labels and blank). */
  constructor(numOutputs: number, options: VqLstmPredictorOptions = {}) {
    super();
    if (!Number.isInteger(numOutputs) || numOutputs < 2) throw new RangeError(`VqLstmPredictor: numOutputs must be an integer >= 2, got ${numOutputs}`);
    const blank = options.blank ?? numOutputs - 1;
    if (!Number.isInteger(blank) || blank < 0 || blank >= numOutputs) throw new RangeError(`VqLstmPredictor: blank must be an integer in [0, ${numOutputs - 1}], got ${blank}`);
    const { embeddingSize = 32, hiddenSize = 64, blank: _blank, ...vqOptions } = options;
    this.numOutputs = numOutputs;
    this.blank = blank;
    this.outputSize = hiddenSize;
    this.embedding = this.registerModule('embedding', new Embedding(numOutputs, embeddingSize, { rng: options.rng }));
    this.lstm = this.registerModule('lstm', new VQLSTM(embeddingSize, hiddenSize, { ...vqOptions, batchFirst: true }));
  }

  /** labels [N, U] int32 → outputs [N, U + 1, H] (the start symbol's first); sets `vqLoss`. */
  forward(labels: Tensor): Tensor {
    const result = this.lstm.forward(this.embedding.forward(withStartSymbol(labels, this.numOutputs, this.blank, 'VqLstmPredictor')));
    this.vqLoss = result.loss;
    return result.output;
  }

  initialState(batch: number): VqPredictorState {
    if (!Number.isInteger(batch) || batch < 1) throw new RangeError(`VqLstmPredictor: batch must be a positive integer, got ${batch}`);
    return { codes: new Int32Array(batch).fill(START_CODE) };
  }

  step(prevLabels: Int32Array, state: VqPredictorState): { output: Tensor; state: VqPredictorState } {
    const batch = prevLabels.length;
    if (state.codes.length !== batch) throw new RangeError(`VqLstmPredictor.step: ${batch} labels for a state of ${state.codes.length} hypotheses`);
    checkPredictorLabels(prevLabels, this.numOutputs, 'VqLstmPredictor', 'prevLabels');
    const embedded = this.embedding.forward(new Tensor(Int32Array.from(prevLabels), [batch]));
    const { output, codes } = this.lstm.step(embedded, state.codes);
    return { output, state: { codes } };
  }

  /** The code of hypothesis `index`: equal keys, identical future outputs. */
  stateKey(state: VqPredictorState, index: number): string {
    const code = state.codes[index];
    if (code === undefined) throw new RangeError(`VqLstmPredictor.stateKey: index ${index} is outside [0, ${state.codes.length})`);
    return String(code);
  }

  selectState(state: VqPredictorState, indices: readonly number[]): VqPredictorState {
    return {
      codes: Int32Array.from(indices, (i) => {
        const code = state.codes[i];
        if (code === undefined) throw new RangeError(`VqLstmPredictor.selectState: index ${i} is outside [0, ${state.codes.length})`);
        return code;
      }),
    };
  }

  joinStates(states: readonly VqPredictorState[]): VqPredictorState {
    const codes = new Int32Array(states.reduce((n, s) => n + s.codes.length, 0));
    let offset = 0;
    for (const s of states) {
      codes.set(s.codes, offset);
      offset += s.codes.length;
    }
    return { codes };
  }
}
