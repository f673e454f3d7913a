/**
 * DeltaLSTM (Spartus: Gao, Delbruck and Liu, 2021; the LSTM form of DeltaGRU, Gao et al. 2018 and
 * Neil et al. 2017's delta networks). Each layer keeps the last *transmitted* input x̂ and hidden
 * state ĥ per unit; a unit transmits only when it moved by more than a threshold Θ since it last
 * did, and only transmitted changes multiply weight columns:
 *
 *   Δx_t = (x_t − x̂_{t−1})·[|x_t − x̂_{t−1}| > Θx],  x̂_t = x̂_{t−1} + Δx_t   (same for h with Θh)
 *   M_t  = M_{t−1} + W_ih·Δx_t + W_hh·Δh_{t−1},  M_0 = b_ih + b_hh
 *   [i, f, g, o] = [σ, σ, tanh, σ](M_t),  c_t = f⊙c_{t−1} + i⊙g,  h_t = o⊙tanh(c_t)
 *
 * Since M_t = W_ih·x̂_t + W_hh·ĥ_{t−1} + b, training evaluates that closed form (one matmul for the
 * input projection of all steps, one per step for the recurrence); with Θ = 0 x̂ = x and ĥ = h, so
 * the layer is exactly nn.LSTM. The sparse, operation-counting inference path is engine.ts.
 *
 * Gradients: the transmit decision [|x − x̂| > Θ] is piecewise constant, so it is treated as a
 * constant mask and the gradient is the exact derivative of the computed function almost
 * everywhere: a transmitted unit passes the gradient to x_t, a held one to the x that was last
 * transmitted (x̂_t = where(sent, x_t, x̂_{t−1})). This is what training a delta network with the
 * threshold in the forward pass gives under backpropagation through time (DeltaGRU, Spartus);
 * unlike a straight-through estimator (∂x̂/∂x := 1) it is the true gradient of the loss the
 * network actually computes, and it can be checked against finite differences.
 */
import { add, linear, mul, reshape, sigmoid, slice, split, stack, tanh, Tensor, where, zeros, type RecurrentOptions } from '../../tensor/index.ts';
import { RNNBase, type RNNOptions } from '../rnn.ts';

/** Maps a weight matrix to the one the forward pass uses (e.g. CBTD's masked weight). */
export type WeightTransform = (weight: Tensor, training: boolean) => Tensor;

export interface DeltaLSTMOptions extends RNNOptions {
  /** Delta threshold Θx on each layer's input (default 0: every change is transmitted). */
  thresholdX?: number;
  /** Delta threshold Θh on the hidden state (default: thresholdX). */
  thresholdH?: number;
}

/** Transmitted / considered units of the last forward pass, summed over layers, steps and batch. */
export interface DeltaCounts {
  inputSent: number;
  inputTotal: number;
  hiddenSent: number;
  hiddenTotal: number;
}

/** Mutable settings the layer function reads; created before the module exists. */
interface DeltaSettings {
  thresholdX: number;
  thresholdH: number;
  weightTransform: WeightTransform | null;
  training: boolean;
  counts: DeltaCounts;
}

function checkThreshold(name: string, value: number): number {
  if (!(Number.isFinite(value) && value >= 0)) throw new RangeError(`DeltaLSTM: ${name} must be a finite number ≥ 0, got ${value}`);
  return value;
}

/**
 * The transmit mask [|current − held| > Θ] as a constant 0/1 tensor shaped like `current`; also
 * returns how many units were sent. A NaN change counts as sent, so a NaN input reaches the output
 * as in nn.LSTM instead of being held back as "unchanged".
 */
function transmitMask(current: Tensor, held: Tensor, threshold: number): { mask: Tensor; sent: number } {
  const out = current.dtype === 'float64' ? new Float64Array(current.size) : new Float32Array(current.size);
  let sent = 0;
  for (let i = 0; i < out.length; i++) {
    if (!(Math.abs(current.data[i]! - held.data[i]!) <= threshold)) {
      out[i] = 1;
      sent++;
    }
  }
  return { mask: new Tensor(out, [...current.shape]), sent };
}

/** The weights a layer-direction gets from RNNBase. */
interface Cell {
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor | null;
  readonly biasHh: Tensor | null;
}

type DeltaLayerRun = (input: Tensor, cell: Cell, start: readonly Tensor[], options: RecurrentOptions) => { output: Tensor; final: Tensor[] };

/** One DeltaLSTM layer-direction over `input` [L, N, F] ([N, L, F] when batchFirst), reading `settings` at call time. */
function deltaLayer(settings: DeltaSettings): DeltaLayerRun {
  return (input: Tensor, cell: Cell, [h0, c0]: readonly Tensor[], { batchFirst, reverse }: RecurrentOptions): { output: Tensor; final: Tensor[] } => {
    const timeAxis = batchFirst ? 1 : 0;
    const [a, b, features] = input.shape as [number, number, number];
    const steps = batchFirst ? b : a;
    const batch = batchFirst ? a : b;
    const hidden = cell.weightHh.shape[1]!;
    const dtype = input.dtype;
    const transform = (w: Tensor): Tensor => (settings.weightTransform ? settings.weightTransform(w, settings.training) : w);
    const weightIh = transform(cell.weightIh);
    const weightHh = transform(cell.weightHh);
    const bias = cell.biasIh && cell.biasHh ? add(cell.biasIh, cell.biasHh) : zeros([4 * hidden], dtype);
    const order = Array.from({ length: steps }, (_, k) => (reverse ? steps - 1 - k : k));
    const stepOf = (t: Tensor, step: number, width: number): Tensor => {
      const piece = batchFirst ? slice(t, [0, step], [batch, step + 1]) : slice(t, [step], [step + 1]);
      return reshape(piece, [batch, width]);
    };

    // x̂_t: the held input, updated where the change exceeds Θx.
    const held: Tensor[] = new Array<Tensor>(steps);
    let xHat = zeros([batch, features], dtype);
    for (const step of order) {
      const x = stepOf(input, step, features);
      const { mask, sent } = transmitMask(x, xHat, settings.thresholdX);
      xHat = where(mask, x, xHat);
      held[step] = xHat;
      settings.counts.inputSent += sent;
      settings.counts.inputTotal += x.size;
    }
    const inputProjection = linear(stack(held, timeAxis), weightIh);

    let h = h0!;
    let c = c0!;
    let hHat = zeros([batch, hidden], dtype);
    const outputs: Tensor[] = new Array<Tensor>(steps);
    for (const step of order) {
      const { mask, sent } = transmitMask(h, hHat, settings.thresholdH);
      hHat = where(mask, h, hHat);
      settings.counts.hiddenSent += sent;
      settings.counts.hiddenTotal += h.size;
      const memory = add(add(stepOf(inputProjection, step, 4 * hidden), linear(hHat, weightHh)), bias);
      const [i, f, g, o] = split(memory, [hidden, hidden, hidden, hidden], 1) as [Tensor, Tensor, Tensor, Tensor];
      c = add(mul(sigmoid(f), c), mul(sigmoid(i), tanh(g)));
      h = mul(sigmoid(o), tanh(c));
      outputs[step] = h;
    }
    return { output: stack(outputs, timeAxis), final: [h, c] };
  };
}

/**
 * LSTM with delta-thresholded inputs and hidden states (see the file comment for the formulas).
 * Same constructor options, parameter names (`weight_ih_l0`, ...), init, shapes and forward
 * signature as {@link LSTM}, so an LSTM's state dict loads into it unchanged; with both thresholds
 * 0 it computes the LSTM. `weightTransform` (e.g. CBTD) is applied to W_ih and W_hh of every
 * layer in each forward pass. `lastCounts` reports the temporal sparsity of the last forward.
 */
export class DeltaLSTM extends RNNBase {
  private readonly settings: DeltaSettings;

  constructor(inputSize: number, hiddenSize: number, options: DeltaLSTMOptions = {}) {
    const thresholdX = checkThreshold('thresholdX', options.thresholdX ?? 0);
    const settings: DeltaSettings = {
      thresholdX,
      thresholdH: checkThreshold('thresholdH', options.thresholdH ?? thresholdX),
      weightTransform: null,
      training: true,
      counts: { inputSent: 0, inputTotal: 0, hiddenSent: 0, hiddenTotal: 0 },
    };
    super('DeltaLSTM', 4, deltaLayer(settings), inputSize, hiddenSize, options);
    this.settings = settings;
  }

  /** Θx, the input delta threshold. */
  get thresholdX(): number {
    return this.settings.thresholdX;
  }

  set thresholdX(value: number) {
    this.settings.thresholdX = checkThreshold('thresholdX', value);
  }

  /** Θh, the hidden-state delta threshold. */
  get thresholdH(): number {
    return this.settings.thresholdH;
  }

  set thresholdH(value: number) {
    this.settings.thresholdH = checkThreshold('thresholdH', value);
  }

  /** Sets Θx = Θh = `value`. */
  setThreshold(value: number): void {
    this.thresholdX = value;
    this.thresholdH = value;
  }

  /** Applied to W_ih and W_hh in every forward pass (null: the weights as they are). */
  get weightTransform(): WeightTransform | null {
    return this.settings.weightTransform;
  }

  set weightTransform(transform: WeightTransform | null) {
    this.settings.weightTransform = transform;
  }

  /** Transmitted / considered units of the last forward pass. */
  get lastCounts(): DeltaCounts {
    return { ...this.settings.counts };
  }

  /** The weight the forward pass uses for `weight` in evaluation (after weightTransform). */
  effectiveWeight(weight: Tensor): Tensor {
    return this.settings.weightTransform ? this.settings.weightTransform(weight, false) : weight;
  }

  /** Returns [output, [hN, cN]]; `hx` = [h0, c0] defaults to zeros. As LSTM.forward. */
  forward(x: Tensor, hx?: readonly [Tensor, Tensor]): [Tensor, [Tensor, Tensor]] {
    this.settings.training = this.training;
    this.settings.counts = { inputSent: 0, inputTotal: 0, hiddenSent: 0, hiddenTotal: 0 };
    const { output, final } = this.run(x, hx, 2);
    return [output, [final[0]!, final[1]!]];
  }

  override extraRepr(): string {
    return `${super.extraRepr()}, thresholdX=${this.thresholdX}, thresholdH=${this.thresholdH}`;
  }
}
