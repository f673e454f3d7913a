/**
 * VQ-LSTM: an LSTM whose whole recurrent state is replaced, at every step, by the nearest row of a
 * learned codebook, so the state after any input history is one of K codes (after Shi, Saon, Haws,
 * Watanabe and Kingsbury, "VQ-T: RNN Transducers using Vector-Quantized Prediction Network
 * States", Interspeech 2022; the VQ placement here is this module's own design, see below).
 *
 * Per step, from the quantized state (ĥ_{t−1}, ĉ_{t−1}):
 *   [i, f, g, o] = [σ, σ, tanh, σ](W_ih·x_t + b_ih + W_hh·ĥ_{t−1} + b_hh)
 *   c_t = f⊙ĉ_{t−1} + i⊙g,  h_t = o⊙tanh(c_t)
 *   k_t = argmin_k ‖[h_t; c_t] − E_k‖²,  [ĥ_t; ĉ_t] = E_{k_t}   (E: codebook [K, 2H])
 *   output_t = ĥ_t
 * What is quantized: the concatenation [h; c], with one codebook. Quantizing h alone would leave c
 * continuous, and c carries history, so two histories reaching the same h-code could still differ
 * later. With [h; c] quantized jointly the state after step t *is* E_{k_t}: equal codes mean
 * bit-identical states, hence bit-identical outputs for any equal future inputs (the merge
 * property hypothesis merging needs). The start state is all zeros, code START_CODE (−1).
 *
 * Training: straight-through gradients through every quantization (∂ĥ/∂h = ∂ĉ/∂c = I), plus the
 * quantizer's codebook and commitment terms averaged over steps (`loss` of the result); add it to
 * the task loss. The codebook follows EMA updates by default ('loss': the VQ-VAE codebook loss),
 * with optional dead-code restarts (see VectorQuantizer). Each step runs as the fused lstmSequence primitive of length one, with the
 * same per-step code in `forward` and `step`, so a sequence and its step-by-step decoding agree.
 *
 * Parameters, as one nn.LSTM layer: weight_ih [4H, in], weight_hh [4H, H], bias_ih, bias_hh [4H]
 * (gates i, f, g, o), U(±1/√H); the quantizer's `quantizer.codebook` [K, 2H].
 */
import { add, concat, linear, lstmSequence, mul, reshape, slice, stack, Tensor, zeros, globalRng, type Rng } from '../../tensor/index.ts';
import { Module, shapeText } from '../module.ts';
import { uniform } from '../init.ts';
import type { FloatDType } from '../rnn.ts';
import { VectorQuantizer, type VectorQuantizerOptions } from './quantizer.ts';

/** The code of the all-zero start state. */
export const START_CODE = -1;

export interface VQLSTMOptions extends Omit<VectorQuantizerOptions, 'dtype' | 'rng' | 'matchDims'> {
  /**
   * What the nearest-code search compares: 'state' = [h; c] (default), 'hidden' = h only. Either
   * way the state becomes the whole row [ĥ; ĉ] of the chosen code, so equal codes are equal states.
   */
  match?: 'state' | 'hidden';
  /** Codebook rows K (default 256). */
  codebookSize?: number;
  /**
   * How the codebook learns (default 'ema' here, unlike VectorQuantizer's 'loss': in the Moby Dick
   * LM and digit-string benches EMA updates trained clearly better; see docs/vq-lstm.md).
   */
  update?: 'loss' | 'ema';
  /** Learn the biases (default true). */
  bias?: boolean;
  /** Input [N, L, in] and output [N, L, H] instead of [L, N, ·] (default false). */
  batchFirst?: boolean;
  rng?: Rng;
  dtype?: FloatDType;
}

/** One step's result. */
export interface VQLSTMStep {
  /** ĥ_t [N, H]. */
  readonly output: Tensor;
  /** k_t per sequence. */
  readonly codes: Int32Array;
  /** The quantizer's loss of this step (scalar). */
  readonly loss: Tensor;
}

/** A sequence's result. */
export interface VQLSTMResult {
  /** ĥ_t for every step: [L, N, H] ([N, L, H] with batchFirst). */
  readonly output: Tensor;
  /** k_t, step-major whatever the layout: codes[t·N + n]. */
  readonly codes: Int32Array;
  /** The codes after the last step ([N]): the whole state to carry on from. */
  readonly final: Int32Array;
  /** Mean over steps of the quantizer loss (codebook + β·commitment, or β·commitment with EMA). */
  readonly loss: Tensor;
}

/** One-layer LSTM with a vector-quantized state (see the file comment). */
export class VQLSTM extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly batchFirst: boolean;
  readonly dtype: FloatDType;
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor | null;
  readonly biasHh: Tensor | null;
  readonly quantizer: VectorQuantizer;
  readonly match: 'state' | 'hidden';

  constructor(inputSize: number, hiddenSize: number, options: VQLSTMOptions = {}) {
    super();
    for (const [name, value] of [['inputSize', inputSize], ['hiddenSize', hiddenSize]] as const) {
      if (!Number.isInteger(value) || value < 1) throw new RangeError(`VQLSTM: ${name} must be a positive integer, got ${value}`);
    }
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    this.batchFirst = options.batchFirst ?? false;
    this.dtype = options.dtype ?? 'float32';
    const rng = options.rng ?? globalRng;
    const rows = 4 * hiddenSize;
    this.weightIh = this.registerParameter('weight_ih', zeros([rows, inputSize], this.dtype));
    this.weightHh = this.registerParameter('weight_hh', zeros([rows, hiddenSize], this.dtype));
    const bias = options.bias ?? true;
    this.biasIh = bias ? this.registerParameter('bias_ih', zeros([rows], this.dtype)) : null;
    this.biasHh = bias ? this.registerParameter('bias_hh', zeros([rows], this.dtype)) : null;
    const bound = 1 / Math.sqrt(hiddenSize);
    for (const p of this.parameters()) uniform(p, -bound, bound, rng);
    const { codebookSize = 256, bias: _bias, batchFirst: _batchFirst, match = 'state', update = 'ema', ...quantizerOptions } = options;
    if (match !== 'state' && match !== 'hidden') throw new RangeError(`VQLSTM: match must be 'state' or 'hidden', got ${String(match)}`);
    this.match = match;
    const matchDims = match === 'state' ? 2 * hiddenSize : hiddenSize;
    this.quantizer = this.registerModule('quantizer', new VectorQuantizer(codebookSize, 2 * hiddenSize, { ...quantizerOptions, update, matchDims, rng, dtype: this.dtype }));
  }

  get codebookSize(): number {
    return this.quantizer.codebookSize;
  }

  /** The state of each code: [ĥ, ĉ], each [N, H] (zeros for START_CODE), no gradient. */
  stateOf(codes: Int32Array): [Tensor, Tensor] {
    const h = this.hiddenSize;
    const hidden = zeros([codes.length, h], this.dtype);
    const cell = zeros([codes.length, h], this.dtype);
    const known = codes.filter((k) => k !== START_CODE);
    const rows = this.quantizer.lookup(Int32Array.from(known));
    let j = 0;
    codes.forEach((k, n) => {
      if (k === START_CODE) return;
      hidden.data.set(rows.data.subarray(j * 2 * h, j * 2 * h + h), n * h);
      cell.data.set(rows.data.subarray(j * 2 * h + h, (j + 1) * 2 * h), n * h);
      j++;
    });
    return [hidden, cell];
  }

  /** One step from states given by their codes: x [N, inputSize] → ĥ [N, H] and the next codes. */
  step(x: Tensor, codes: Int32Array): VQLSTMStep {
    this.checkStepInput(x, 'step');
    if (codes.length !== x.shape[0]) throw new Error(`VQLSTM.step: ${codes.length} codes for a batch of ${x.shape[0]}`);
    const [h0, c0] = this.stateOf(codes);
    const { hidden, codes: next, loss } = this.cellStep(x, h0, c0);
    return { output: hidden, codes: next, loss };
  }

  /**
   * Runs the sequence x ([L, N, in], batchFirst [N, L, in]) from the states of `start` (codes per
   * sequence; default all START_CODE). Gradients flow straight through every quantization.
   */
  forward(x: Tensor, start?: Int32Array): VQLSTMResult {
    if (x.rank !== 3 || x.shape[2] !== this.inputSize) {
      const layout = this.batchFirst ? '[N, L, inputSize]' : '[L, N, inputSize]';
      throw new Error(`VQLSTM: expected input ${layout} with inputSize ${this.inputSize}, got ${shapeText(x.shape)}`);
    }
    if (x.dtype !== this.dtype) throw new TypeError(`VQLSTM: input dtype ${x.dtype} differs from the parameters' ${this.dtype}`);
    const steps = x.shape[this.batchFirst ? 1 : 0]!;
    const batch = x.shape[this.batchFirst ? 0 : 1]!;
    if (steps === 0) throw new Error(`VQLSTM: the input sequence is empty (shape ${shapeText(x.shape)})`);
    const startCodes = start ?? new Int32Array(batch).fill(START_CODE);
    if (startCodes.length !== batch) throw new Error(`VQLSTM: ${startCodes.length} start codes for a batch of ${batch}`);
    let [hidden, cell] = this.stateOf(startCodes);
    const outputs: Tensor[] = [];
    const codes = new Int32Array(steps * batch);
    let loss: Tensor | null = null;
    for (let t = 0; t < steps; t++) {
      const xt = this.batchFirst ? slice(x, [0, t, 0], [batch, t + 1, this.inputSize]) : slice(x, [t, 0, 0], [t + 1, batch, this.inputSize]);
      const result = this.cellStep(reshape(xt, [batch, this.inputSize]), hidden, cell);
      hidden = result.hidden;
      cell = result.cell;
      outputs.push(hidden);
      codes.set(result.codes, t * batch);
      loss = loss ? add(loss, result.loss) : result.loss;
    }
    return {
      output: stack(outputs, this.batchFirst ? 1 : 0),
      codes,
      final: codes.slice((steps - 1) * batch),
      loss: mul(loss!, 1 / steps),
    };
  }

  /** The LSTM cell from (ĥ, ĉ), then the quantization of [h; c]. */
  private cellStep(x: Tensor, h0: Tensor, c0: Tensor): { hidden: Tensor; cell: Tensor; codes: Int32Array; loss: Tensor } {
    const batch = x.shape[0]!;
    const hiddenSize = this.hiddenSize;
    const bias = this.biasIh && this.biasHh ? add(this.biasIh, this.biasHh) : zeros([4 * hiddenSize], this.dtype);
    const gates = reshape(linear(x, this.weightIh), [1, batch, 4 * hiddenSize]);
    const parts = lstmSequence(gates, this.weightHh, bias, h0, c0);
    const h = reshape(slice(parts, [0, 0, 0, 0], [1, 1, batch, hiddenSize]), [batch, hiddenSize]);
    const c = reshape(slice(parts, [1, 0, 0, 0], [2, 1, batch, hiddenSize]), [batch, hiddenSize]);
    const q = this.quantizer.forward(concat([h, c], 1));
    return {
      hidden: slice(q.quantized, [0, 0], [batch, hiddenSize]),
      cell: slice(q.quantized, [0, hiddenSize], [batch, 2 * hiddenSize]),
      codes: q.codes,
      loss: q.loss,
    };
  }

  private checkStepInput(x: Tensor, method: string): void {
    if (x.rank !== 2 || x.shape[1] !== this.inputSize) throw new Error(`VQLSTM.${method}: expected x [N, ${this.inputSize}], got ${shapeText(x.shape)}`);
    if (x.dtype !== this.dtype) throw new TypeError(`VQLSTM.${method}: input dtype ${x.dtype} differs from the parameters' ${this.dtype}`);
  }

  override extraRepr(): string {
    return `${this.inputSize}, ${this.hiddenSize}, codebookSize=${this.codebookSize}${this.batchFirst ? ', batchFirst=true' : ''}`;
  }
}
