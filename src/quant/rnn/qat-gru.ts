/**
 * QatGRU: a GRU whose matrix-multiply operands are fake-quantized, the GRU twin of QatLSTM (same
 * quantizer options, defaults and presets; read qat-lstm.ts for the conventions).
 *
 * Per layer k and step t, with Q_W, Q_x, Q_h the layer's weight, input and hidden quantizers and
 * gate blocks [r, z, n] as nn.GRU (PyTorch's order and `linear_before_reset`):
 *   g_x = Q_W(W_ih)·Q_x(x_t) + b_ih,   g_h = Q_W(W_hh)·Q_h(h_{t−1}) + b_hh
 *   r = σ(g_x[r] + g_h[r]),  z = σ(g_x[z] + g_h[z]),  n = tanh(g_x[n] + r⊙g_h[n])
 *   h_t = (1 − z)⊙n + z⊙h_{t−1}
 * Only the operands of the two matmuls are quantized: the biases, the gates and the h_{t−1} of the
 * update z⊙h_{t−1} stay float (the quantized h_{t−1} feeds W_hh only). Weights per output row
 * (one scale per gate row, axis 0) or per tensor, activations per tensor. Gradients are the
 * quantizers' own (clipped straight-through for the operand, LSQ's for the step). As in QatLSTM, a
 * step counts as one sample for LSQ's gradient scale, the zero initial state skips Q_h, and an
 * unset hidden quantizer first sees the layer's float h sequence (no gradient).
 */
import { noGrad } from '../../autograd/engine.ts';
import { Module, shapeText, type StateDictInput } from '../../nn/module.ts';
import { uniform } from '../../nn/init.ts';
import { invertedDropout } from '../../nn/dropout.ts';
import type { FloatDType, GRU } from '../../nn/rnn.ts';
import {
  add, concat, globalRng, gruSequence, linear, mul, narrow, reshape, sigmoid, slice, split, stack, sub, tanh, zeros,
  type Rng, type Tensor,
} from '../../tensor/index.ts';
import type { Quantizer } from '../quantizers/quantizer.ts';
import {
  awaitsData, buildQuantizer, checkRecurrentSizes, DEFAULT_LSTM_ACTIVATION, DEFAULT_LSTM_WEIGHT, loadFloatRecurrentState, quantized, recurrentRepr, specForLayer,
  type PerLayerSpec, type QatLSTMLayerQuantizers, type QatLSTMOptions,
} from './qat-lstm.ts';

/** Options of QatGRU: those of QatLSTM (layers, bias, layout, dropout, dtype, and the weight / input / hidden specs). */
export type QatGRUOptions = QatLSTMOptions;
/** The quantizers of one QatGRU layer (null where that operand stays float). */
export type QatGRULayerQuantizers = QatLSTMLayerQuantizers;

interface QatGruLayer {
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor | null;
  readonly biasHh: Tensor | null;
  readonly quantizers: QatGRULayerQuantizers;
}

const WHO = 'QatGRU';

/**
 * GRU with fake-quantized matmul operands (formulas in the file comment). Parameters carry
 * nn.GRU's names (`weight_ih_l{k}` [3H, in], `weight_hh_l{k}` [3H, H], `bias_ih_l{k}`,
 * `bias_hh_l{k}`), so a float GRU's weights load by name; the quantizers are child modules
 * `quant_weight_ih_l{k}`, `quant_weight_hh_l{k}`, `quant_input_l{k}`, `quant_hidden_l{k}`.
 * Unidirectional; input [L, N, inputSize] ([N, L, inputSize] with batchFirst).
 */
export class QatGRU extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly bias: boolean;
  readonly batchFirst: boolean;
  readonly dropout: number;
  readonly dtype: FloatDType;
  private readonly layers: QatGruLayer[] = [];
  private readonly rng: Rng;

  constructor(inputSize: number, hiddenSize: number, options: QatGRUOptions = {}) {
    super();
    checkRecurrentSizes(inputSize, hiddenSize, options, WHO);
    const dropout = options.dropout ?? 0;
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    this.numLayers = options.numLayers ?? 1;
    this.bias = options.bias ?? true;
    this.batchFirst = options.batchFirst ?? false;
    this.dropout = dropout;
    this.dtype = options.dtype ?? 'float32';
    this.rng = options.rng ?? globalRng;
    const rows = 3 * hiddenSize;
    const spec = (option: PerLayerSpec | undefined, fallback: typeof DEFAULT_LSTM_WEIGHT, k: number, operand: 'weight' | 'input' | 'hidden') => specForLayer(option, fallback, k, this.numLayers, operand, WHO);
    // Every quantizer is built (and its spec checked) before anything is registered.
    const built = Array.from({ length: this.numLayers }, (_, k): QatGRULayerQuantizers => {
      const layerInput = k === 0 ? inputSize : hiddenSize;
      const weight = spec(options.weight, DEFAULT_LSTM_WEIGHT, k, 'weight');
      return {
        weightIh: buildQuantizer(weight, 'weight', [rows, layerInput], `weight_ih_l${k}`, WHO),
        weightHh: buildQuantizer(weight, 'weight', [rows, hiddenSize], `weight_hh_l${k}`, WHO),
        input: buildQuantizer(spec(options.input, DEFAULT_LSTM_ACTIVATION, k, 'input'), 'input', undefined, `the input of layer ${k}`, WHO),
        hidden: buildQuantizer(spec(options.hidden, DEFAULT_LSTM_ACTIVATION, k, 'hidden'), 'hidden', undefined, `the hidden state of layer ${k}`, WHO),
      };
    });
    const weights = Array.from({ length: this.numLayers }, (_, k) => {
      const layerInput = k === 0 ? inputSize : hiddenSize;
      return {
        weightIh: this.registerParameter(`weight_ih_l${k}`, zeros([rows, layerInput], this.dtype)),
        weightHh: this.registerParameter(`weight_hh_l${k}`, zeros([rows, hiddenSize], this.dtype)),
        biasIh: this.bias ? this.registerParameter(`bias_ih_l${k}`, zeros([rows], this.dtype)) : null,
        biasHh: this.bias ? this.registerParameter(`bias_hh_l${k}`, zeros([rows], this.dtype)) : null,
      };
    });
    // Quantizers are registered after the weights so that parameters() lists the GRU's first.
    for (let k = 0; k < this.numLayers; k++) {
      const q = built[k]!;
      const register = (name: string, quantizer: Quantizer | null): Quantizer | null => (quantizer ? this.registerModule(`${name}_l${k}`, quantizer) : null);
      this.layers.push({
        ...weights[k]!,
        quantizers: {
          weightIh: register('quant_weight_ih', q.weightIh),
          weightHh: register('quant_weight_hh', q.weightHh),
          input: register('quant_input', q.input),
          hidden: register('quant_hidden', q.hidden),
        },
      });
    }
    const bound = 1 / Math.sqrt(hiddenSize);
    for (const layer of this.layers) {
      for (const p of [layer.weightIh, layer.weightHh, layer.biasIh, layer.biasHh]) if (p) uniform(p, -bound, bound, this.rng);
    }
  }

  /** A QatGRU with a float nn.GRU's settings and a copy of its weights (unidirectional). Quantizer options as the constructor's. */
  static fromGRU(gru: GRU, options: Pick<QatGRUOptions, 'weight' | 'input' | 'hidden' | 'rng'> = {}): QatGRU {
    if (gru.bidirectional) throw new RangeError(`QatGRU.fromGRU: bidirectional GRUs are not supported, got ${gru.toString()}`);
    const q = new QatGRU(gru.inputSize, gru.hiddenSize, {
      ...options, numLayers: gru.numLayers, bias: gru.bias, batchFirst: gru.batchFirst, dropout: gru.dropout, dtype: gru.dtype,
    });
    q.loadFloatStateDict(gru.stateDict());
    q.training = gru.training;
    return q;
  }

  /** Loads a float nn.GRU state dict (same names): every GRU parameter must be present and nothing else; quantizer state is kept. */
  loadFloatStateDict(stateDict: StateDictInput): void {
    loadFloatRecurrentState(this, stateDict, WHO, 'nn.GRU');
  }

  /** The quantizers of layer `k` (null where that operand stays float). */
  layerQuantizers(k: number): QatGRULayerQuantizers {
    const layer = this.layers[k];
    if (!layer) throw new RangeError(`${WHO}: layer ${k} out of range [0, ${this.numLayers - 1}]`);
    return layer.quantizers;
  }

  /**
   * Runs the sequence. x [L, N, inputSize] ([N, L, inputSize] with batchFirst); `h0`
   * [numLayers, N, hiddenSize] (zeros when omitted). Returns [output (x's layout, width
   * hiddenSize), hN [numLayers, N, hiddenSize]] as nn.GRU.
   */
  forward(x: Tensor, h0?: Tensor): [Tensor, Tensor] {
    const who = `${WHO}(${this.inputSize}, ${this.hiddenSize})`;
    if (x.rank !== 3 || x.shape[2] !== this.inputSize) {
      throw new Error(`${who}: expected input ${this.batchFirst ? '[N, L' : '[L, N'}, ${this.inputSize}], got ${shapeText(x.shape)}`);
    }
    if (x.dtype !== this.dtype) throw new TypeError(`${who}: input dtype ${x.dtype} differs from the parameters' ${this.dtype}`);
    const timeAxis = this.batchFirst ? 1 : 0;
    const steps = x.shape[timeAxis]!;
    const batch = x.shape[1 - timeAxis]!;
    if (steps === 0 || batch === 0) throw new Error(`${who}: the input is empty (shape ${shapeText(x.shape)})`);
    const H = this.hiddenSize;
    const stateShape = [this.numLayers, batch, H];
    if (h0 !== undefined) {
      if (h0.rank !== 3 || h0.shape.some((d, i) => d !== stateShape[i])) throw new Error(`${who}: initial state h0 has shape ${shapeText(h0.shape)}, expected ${shapeText(stateShape)}`);
      if (h0.dtype !== this.dtype) throw new TypeError(`${who}: initial state dtype ${h0.dtype} differs from the parameters' ${this.dtype}`);
    }
    let layerInput = x;
    const finals: Tensor[] = [];
    for (let k = 0; k < this.numLayers; k++) {
      const start = h0 ? reshape(narrow(h0, 0, k, 1), [batch, H]) : null;
      const { output, h } = this.runLayer(this.layers[k]!, layerInput, start, timeAxis, steps, batch);
      finals.push(h);
      layerInput = k < this.numLayers - 1 && this.training && this.dropout > 0 ? invertedDropout(output, this.dropout, this.rng) : output;
    }
    return [layerInput, stack(finals, 0)];
  }

  private runLayer(layer: QatGruLayer, input: Tensor, start: Tensor | null, timeAxis: number, steps: number, batch: number): { output: Tensor; h: Tensor } {
    const H = this.hiddenSize;
    const q = layer.quantizers;
    const features = input.shape[2]!;
    const xq = reshape(quantized(q.input, reshape(input, [steps * batch, features])), input.shape);
    const wih = quantized(q.weightIh, layer.weightIh);
    const whh = quantized(q.weightHh, layer.weightHh);
    const biasIh = layer.biasIh ?? zeros([3 * H], this.dtype);
    const biasHh = layer.biasHh ?? zeros([3 * H], this.dtype);
    const inputGates = linear(xq, wih);
    const h0 = start ?? zeros([batch, H], this.dtype);
    const hq = q.hidden;
    if (!hq || !hq.fakeQuantEnabled) return this.fused(inputGates, whh, biasIh, biasHh, h0, timeAxis, steps, batch);
    if (awaitsData(hq) && (steps > 1 || start)) {
      // Show the quantizer the h_{t−1} this layer would feed it, computed with Q_h off.
      noGrad(() => {
        const { output } = this.fused(inputGates, whh, biasIh, biasHh, h0, timeAxis, steps, batch);
        const previous = steps > 1 ? [reshape(narrow(output, timeAxis, 0, steps - 1), [(steps - 1) * batch, H])] : [];
        const seen = start ? [h0, ...previous] : previous;
        hq.forward(seen.length === 1 ? seen[0]! : concat(seen, 0));
      });
    }
    const gatesX = add(inputGates, biasIh);
    let h = h0;
    const outputs: Tensor[] = [];
    for (let t = 0; t < steps; t++) {
      const [xr, xz, xn] = split(reshape(narrow(gatesX, timeAxis, t, 1), [batch, 3 * H]), [H, H, H], 1) as [Tensor, Tensor, Tensor];
      // The zero starting state needs no quantizer: 0 is exact in every format with 0 in range.
      const hIn = t === 0 && !start ? h : hq.forward(h);
      const [hr, hz, hn] = split(linear(hIn, whh, biasHh), [H, H, H], 1) as [Tensor, Tensor, Tensor];
      const r = sigmoid(add(xr, hr));
      const z = sigmoid(add(xz, hz));
      const n = tanh(add(xn, mul(r, hn)));
      h = add(n, mul(z, sub(h, n)));
      outputs.push(h);
    }
    return { output: stack(outputs, timeAxis), h };
  }

  /** The float recurrence as one fused op (used when h_{t−1} is not quantized). */
  private fused(inputGates: Tensor, whh: Tensor, biasIh: Tensor, biasHh: Tensor, h0: Tensor, timeAxis: number, steps: number, batch: number): { output: Tensor; h: Tensor } {
    const H = this.hiddenSize;
    const batchFirst = timeAxis === 1;
    const parts = gruSequence(inputGates, whh, biasIh, biasHh, h0, { batchFirst });
    const [, a, b] = parts.shape as [number, number, number, number];
    const output = reshape(slice(parts, [0], [1]), [a, b, H]);
    const last = steps - 1;
    const h = reshape(batchFirst ? slice(parts, [0, 0, last], [1, a, last + 1]) : slice(parts, [0, last], [1, last + 1]), [batch, H]);
    return { output, h };
  }

  override extraRepr(): string {
    return recurrentRepr(this);
  }
}
