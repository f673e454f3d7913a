/**
 * Recurrent layers with PyTorch 1.13's names, defaults, parameter names, gate order and init:
 * LSTM (gates i, f, g, o) and GRU (gates r, z, n). Per layer and direction, the input projection
 * of every time step is one matmul, then one fused primitive (lstmSequence / gruSequence) runs the
 * whole recurrence, forward and backward.
 */
import type { DType } from '../backend/primitives.ts';
import {
  add, concat, globalRng, gruSequence, linear, lstmSequence, reshape, slice, split, squeeze, stack, unsqueeze, zeros,
  type RecurrentOptions, type Rng, type Tensor,
} from '../tensor/index.ts';
import { Module, shapeText } from './module.ts';
import { invertedDropout } from './dropout.ts';
import { uniform } from './init.ts';
import { finalHiddenInference, recurrentInference } from './rnn-inference.ts';

/** Floating-point dtypes a layer's parameters can have. */
export type FloatDType = Exclude<DType, 'int32'>;

export interface RNNOptions {
  /** Stacked recurrent layers; layer k > 0 reads layer k − 1's output (default 1). */
  numLayers?: number;
  /** Learn the biases b_ih and b_hh (default true). */
  bias?: boolean;
  /** Input and output are [N, L, ·] instead of [L, N, ·] (default false; states stay [D·layers, N, H]). */
  batchFirst?: boolean;
  /** Dropout probability on each layer's output except the last, in training mode (default 0). */
  dropout?: number;
  /** Add a layer running backwards in time; outputs are concatenated [forward, reverse] (default false). */
  bidirectional?: boolean;
  /** Generator for the initial weights and for dropout (default: the global one). */
  rng?: Rng;
  /** Parameter dtype (default float32; float64 runs on the reference backend, for gradient checks). */
  dtype?: FloatDType;
}

/** One layer-direction's weights: W_ih [G·H, in], W_hh [G·H, H], b_ih, b_hh [G·H]. */
interface CellWeights {
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor | null;
  readonly biasHh: Tensor | null;
}

/** The state a cell carries between time steps: [h] for GRU, [h, c] for LSTM, each [N, H]. */
type CellState = readonly Tensor[];

/**
 * One layer-direction over the whole sequence: `input` [L, N, F] ([N, L, F] with batchFirst) and
 * the starting state; returns h_t for every step (input's layout, width H) and the final state.
 */
type LayerRun = (input: Tensor, cell: CellWeights, start: CellState, options: RecurrentOptions) => { output: Tensor; final: CellState };

function checkPositiveInteger(owner: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${owner}: ${name} must be a positive integer, got ${value}`);
}

/**
 * Checks a recurrent layer's input x ([L, N, inputSize], [N, L, inputSize] with batchFirst, or
 * unbatched [L, inputSize], run as a batch of one as in PyTorch) and gives its time axis, step and
 * batch counts and the shape of its states ([stateCount, N, H], unbatched [stateCount, H]).
 * @internal shared by the RNN layers (nn.LSTM, nn.GRU, nn.SRU).
 */
export function sequenceInput(who: string, x: Tensor, inputSize: number, batchFirst: boolean, stateCount: number, hiddenSize: number): {
  batched: boolean; timeAxis: number; input: Tensor; steps: number; batch: number; stateShape: number[];
} {
  if (x.rank !== 2 && x.rank !== 3) {
    const layout = batchFirst ? '[N, L, inputSize]' : '[L, N, inputSize]';
    throw new Error(`${who}: expected input ${layout} or unbatched [L, inputSize], got ${shapeText(x.shape)}`);
  }
  if (x.shape[x.rank - 1] !== inputSize) {
    throw new Error(`${who}: input has shape ${shapeText(x.shape)}, last dim should be ${inputSize}`);
  }
  const batched = x.rank === 3;
  // Unbatched input is [L, H_in] whatever batchFirst says (as PyTorch); run it as a batch of one.
  const timeAxis = batched && batchFirst ? 1 : 0;
  const input = batched ? x : unsqueeze(x, 1);
  const steps = input.shape[timeAxis]!;
  const batch = input.shape[1 - timeAxis]!;
  if (steps === 0) throw new Error(`${who}: the input sequence is empty (shape ${shapeText(x.shape)})`);
  const stateShape = batched ? [stateCount, batch, hiddenSize] : [stateCount, hiddenSize];
  return { batched, timeAxis, input, steps, batch, stateShape };
}

/**
 * Shared machinery of LSTM and GRU (PyTorch's RNNBase): parameters `weight_ih_l{k}`,
 * `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` (suffix `_reverse` for the backward direction),
 * registered per layer, forward direction first, each drawn from U(±1/√hiddenSize).
 */
export abstract class RNNBase extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly bias: boolean;
  readonly batchFirst: boolean;
  readonly dropout: number;
  readonly bidirectional: boolean;
  readonly dtype: FloatDType;
  /** Weights of layer k, direction d at index k·D + d (D = 2 when bidirectional). */
  private readonly cells: CellWeights[] = [];
  private readonly rng: Rng;
  private readonly runLayer: LayerRun;

  protected constructor(kind: string, gateCount: number, runLayer: LayerRun, inputSize: number, hiddenSize: number, options: RNNOptions) {
    super();
    checkPositiveInteger(kind, 'inputSize', inputSize);
    checkPositiveInteger(kind, 'hiddenSize', hiddenSize);
    const numLayers = options.numLayers ?? 1;
    checkPositiveInteger(kind, 'numLayers', numLayers);
    const dropout = options.dropout ?? 0;
    if (!(dropout >= 0 && dropout <= 1)) throw new RangeError(`${kind}: dropout must be in [0, 1], got ${dropout}`);
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    this.numLayers = numLayers;
    this.bias = options.bias ?? true;
    this.batchFirst = options.batchFirst ?? false;
    this.dropout = dropout;
    this.bidirectional = options.bidirectional ?? false;
    this.dtype = options.dtype ?? 'float32';
    this.rng = options.rng ?? globalRng;
    this.runLayer = runLayer;
    const directions = this.bidirectional ? 2 : 1;
    const rows = gateCount * hiddenSize;
    for (let layer = 0; layer < numLayers; layer++) {
      const layerInput = layer === 0 ? inputSize : hiddenSize * directions;
      for (let d = 0; d < directions; d++) {
        const suffix = `_l${layer}${d === 1 ? '_reverse' : ''}`;
        const weightIh = this.registerParameter(`weight_ih${suffix}`, zeros([rows, layerInput], this.dtype));
        const weightHh = this.registerParameter(`weight_hh${suffix}`, zeros([rows, hiddenSize], this.dtype));
        const biasIh = this.bias ? this.registerParameter(`bias_ih${suffix}`, zeros([rows], this.dtype)) : null;
        const biasHh = this.bias ? this.registerParameter(`bias_hh${suffix}`, zeros([rows], this.dtype)) : null;
        this.cells.push({ weightIh, weightHh, biasIh, biasHh });
      }
    }
    this.resetParameters(options.rng);
  }

  /** Re-draws every weight and bias from U(−1/√hiddenSize, 1/√hiddenSize), as PyTorch. */
  resetParameters(rng?: Rng): void {
    const bound = 1 / Math.sqrt(this.hiddenSize);
    for (const p of this.parameters()) uniform(p, -bound, bound, rng ?? this.rng);
  }

  /** 2 when bidirectional, else 1. */
  get numDirections(): number {
    return this.bidirectional ? 2 : 1;
  }

  private describe(): string {
    return `${this.constructor.name}(${this.inputSize}, ${this.hiddenSize})`;
  }

  /**
   * Runs every layer and direction over `x`, starting from `initial` (one tensor per state part,
   * each [D·numLayers, N, H], or [D·numLayers, H] for unbatched input; zeros when omitted).
   * Returns the output and the final state parts, shaped as `initial`.
   * @internal LSTM and GRU wrap this with their own signatures.
   */
  protected run(x: Tensor, initial: readonly Tensor[] | undefined, stateParts: number): { output: Tensor; final: Tensor[] } {
    const who = this.describe();
    if (x.dtype !== this.dtype) throw new TypeError(`${who}: input dtype ${x.dtype} differs from the parameters' ${this.dtype}`);
    const stateCount = this.numLayers * this.numDirections;
    const { batched, timeAxis, input, steps, batch, stateShape } = sequenceInput(who, x, this.inputSize, this.batchFirst, stateCount, this.hiddenSize);
    const starts: Tensor[][] = [];
    for (let part = 0; part < stateParts; part++) {
      const given = initial?.[part];
      if (given && given.dtype !== this.dtype) throw new TypeError(`${who}: initial state dtype ${given.dtype} differs from the parameters' ${this.dtype}`);
      if (given && (given.rank !== stateShape.length || given.shape.some((d, i) => d !== stateShape[i]))) {
        throw new Error(`${who}: initial state ${part === 0 ? 'h0' : 'c0'} has shape ${shapeText(given.shape)}, expected ${shapeText(stateShape)}`);
      }
      const full = given ? (batched ? given : unsqueeze(given, 1)) : zeros([stateCount, batch, this.hiddenSize], this.dtype);
      const pieces = stateCount === 1 ? [full] : split(full, new Array<number>(stateCount).fill(1), 0);
      starts.push(pieces.map((p) => reshape(p, [batch, this.hiddenSize])));
    }

    const finals: Tensor[][] = Array.from({ length: stateParts }, () => []);
    let layerInput = input;
    for (let layer = 0; layer < this.numLayers; layer++) {
      const outputs: Tensor[] = [];
      for (let d = 0; d < this.numDirections; d++) {
        const index = layer * this.numDirections + d;
        const { output, final } = this.runLayer(layerInput, this.cells[index]!, starts.map((parts) => parts[index]!), { batchFirst: timeAxis === 1, reverse: d === 1 });
        outputs.push(output);
        final.forEach((s, part) => finals[part]!.push(s));
      }
      layerInput = outputs.length === 1 ? outputs[0]! : concat(outputs, 2);
      // Inverted dropout between layers, in training mode only.
      if (layer < this.numLayers - 1 && this.training && this.dropout > 0) layerInput = invertedDropout(layerInput, this.dropout, this.rng);
    }
    const output = batched ? layerInput : squeeze(layerInput, 1);
    const final = finals.map((parts) => {
      const full = stack(parts, 0);
      return batched ? full : squeeze(full, 1);
    });
    return { output, final };
  }

  /**
   * h_N [N, H] of a one-layer, one-direction, batch-first layer over `x` [N, L, inputSize] from zero
   * states, through the inference path (rnn-inference.ts), without the per-step outputs; null when
   * that path does not apply (a gradient is wanted, another backend, another configuration).
   * @internal for NextWordModel's forward, which only reads the last step.
   */
  finalHiddenForInference(x: Tensor): Tensor | null {
    if (this.numLayers !== 1 || this.bidirectional || !this.batchFirst || x.rank !== 3 || x.shape[2] !== this.inputSize || x.shape[1] === 0) return null;
    const kind = this.cells[0]!.weightIh.shape[0] === 4 * this.hiddenSize ? 'lstm' : 'gru';
    const zero = zeros([x.shape[0]!, this.hiddenSize], this.dtype);
    return finalHiddenInference(kind, x, this.cells[0]!, kind === 'lstm' ? [zero, zero] : [zero], { batchFirst: true });
  }

  override extraRepr(): string {
    const parts = [`${this.inputSize}, ${this.hiddenSize}`];
    if (this.numLayers !== 1) parts.push(`numLayers=${this.numLayers}`);
    if (!this.bias) parts.push('bias=false');
    if (this.batchFirst) parts.push('batchFirst=true');
    if (this.dropout !== 0) parts.push(`dropout=${this.dropout}`);
    if (this.bidirectional) parts.push('bidirectional=true');
    if (this.dtype !== 'float32') parts.push(`dtype=${this.dtype}`);
    return parts.join(', ');
  }
}

/**
 * The per-step outputs h_t (part 0 of a fused sequence's [parts, ·, ·, H] output) and the first
 * `stateParts` parts at the step the recurrence ended on (the last, or the first when reverse).
 */
function sequenceStates(parts: Tensor, stateParts: number, { batchFirst, reverse }: RecurrentOptions): { output: Tensor; final: Tensor[] } {
  const [, a, b, hidden] = parts.shape as [number, number, number, number];
  const output = reshape(slice(parts, [0], [1]), [a, b, hidden]);
  const steps = batchFirst ? b : a;
  const last = reverse ? 0 : steps - 1;
  const final = Array.from({ length: stateParts }, (_, p) => {
    const piece = batchFirst ? slice(parts, [p, 0, last], [p + 1, a, last + 1]) : slice(parts, [p, last], [p + 1, last + 1]);
    return reshape(piece, [batchFirst ? a : b, hidden]);
  });
  return { output, final };
}

/**
 * LSTM layer-direction: the input projection W_ih·x_t, then lstmSequence with b_ih + b_hh added
 * inside; when no gradient is wanted on the native backend, the inference path (rnn-inference.ts).
 */
const lstmLayer: LayerRun = (input, cell, [h0, c0], options) => {
  const fast = recurrentInference('lstm', input, cell, [h0!, c0!], options);
  if (fast) return fast;
  const bias = cell.biasIh && cell.biasHh ? add(cell.biasIh, cell.biasHh) : zeros([cell.weightHh.shape[0]!], cell.weightHh.dtype);
  const gates = linear(input, cell.weightIh);
  return sequenceStates(lstmSequence(gates, cell.weightHh, bias, h0!, c0!, options), 2, options);
};

/**
 * GRU layer-direction: the input projection W_ih·x_t, then gruSequence with both biases (r
 * multiplies W_hn·h + b_hn); when no gradient is wanted on the native backend, the inference path.
 */
const gruLayer: LayerRun = (input, cell, [h0], options) => {
  const fast = recurrentInference('gru', input, cell, [h0!], options);
  if (fast) return fast;
  const noBias = (): Tensor => zeros([cell.weightHh.shape[0]!], cell.weightHh.dtype);
  const gates = linear(input, cell.weightIh);
  return sequenceStates(gruSequence(gates, cell.weightHh, cell.biasIh ?? noBias(), cell.biasHh ?? noBias(), h0!, options), 1, options);
};

/**
 * Long short-term memory over a sequence, as `torch.nn.LSTM` (without projections):
 * per layer and step, [i, f, g, o] = [σ, σ, tanh, σ](W_ih·x_t + b_ih + W_hh·h + b_hh),
 * c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh(c_t).
 *
 * Shapes (D = 2 if bidirectional, else 1): input [L, N, inputSize] ([N, L, inputSize] with
 * batchFirst, or unbatched [L, inputSize]); h0, c0 [D·numLayers, N, hiddenSize] (unbatched
 * [D·numLayers, hiddenSize]); output [L, N, D·hiddenSize] (batchFirst: [N, L, D·hiddenSize]).
 */
export class LSTM extends RNNBase {
  constructor(inputSize: number, hiddenSize: number, options: RNNOptions = {}) {
    super('LSTM', 4, lstmLayer, inputSize, hiddenSize, options);
  }

  /** Returns [output, [hN, cN]]; `hx` = [h0, c0] defaults to zeros. */
  forward(x: Tensor, hx?: readonly [Tensor, Tensor]): [Tensor, [Tensor, Tensor]] {
    const { output, final } = this.run(x, hx, 2);
    return [output, [final[0]!, final[1]!]];
  }
}

/**
 * Gated recurrent unit over a sequence, as `torch.nn.GRU`: per layer and step,
 * r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
 * n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn)), h_t = (1 − z)⊙n + z⊙h_{t−1}.
 * Shapes as LSTM, with one state h0 / hN.
 */
export class GRU extends RNNBase {
  constructor(inputSize: number, hiddenSize: number, options: RNNOptions = {}) {
    super('GRU', 3, gruLayer, inputSize, hiddenSize, options);
  }

  /** Returns [output, hN]; `h0` defaults to zeros. */
  forward(x: Tensor, h0?: Tensor): [Tensor, Tensor] {
    const { output, final } = this.run(x, h0 === undefined ? undefined : [h0], 1);
    return [output, final[0]!];
  }
}
