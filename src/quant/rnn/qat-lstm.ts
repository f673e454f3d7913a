/**
 * QatLSTM: an LSTM whose matrix-multiply operands are fake-quantized with configurable number
 * formats, for quantization-aware training of recurrent models at 4 bits and below (Fasoli et al.,
 * "4-bit Quantization of LSTM-based Speech Recognition Models", Interspeech 2021).
 *
 * Per layer k and step t, with Q_W, Q_x, Q_h the layer's weight, input and hidden quantizers:
 *   z_t = Q_W(W_ih)·Q_x(x_t) + b_ih + Q_W(W_hh)·Q_h(h_{t−1}) + b_hh
 *   [i, f, g, o] = [σ, σ, tanh, σ](z_t),  c_t = f⊙c_{t−1} + i⊙g,  h_t = o⊙tanh(c_t)
 * Only the operands of the two matmuls are quantized; the biases, the gate pre-activations, the
 * nonlinearities and the cell state c_t stay float (the integer datapath of those is the iRNN
 * `QuantLSTM`'s business, at 8 bits). Layer k > 0 reads layer k − 1's float h_t through its own Q_x.
 *
 * Quantizers are the library's (`createQuantizer`): any registered kind, e.g. LSQ with learned
 * steps ('lsq'), or range-based ones ('ste' / 'clippedSte' with a min-max or moving-average
 * observer). Weights are quantized per output row (granularity 'channel', axis 0: one scale per
 * gate row) or per tensor; activations per tensor, signed or unsigned, symmetric or not.
 * Gradients are the quantizers' own (clipped straight-through for the operand, LSQ's for the step).
 *
 * A time step counts as one sample for LSQ's gradient scale: Q_x sees x as [L·N, F] and Q_h sees
 * h_{t−1} as [N, H] once per step. The zero initial state (no `hx` given) is exactly representable
 * in every affine format with 0 in range, so it is not passed through Q_h. A quantizer that has
 * not seen data yet (uninitialised LSQ step, unobserved range) is first shown the layer's whole h
 * sequence computed with Q_h off (no gradient), so its step or range starts from the real
 * distribution of h rather than from the first step's.
 */
import { noGrad } from '../../autograd/engine.ts';
import { Module, shapeText, type StateDictInput } from '../../nn/module.ts';
import { uniform } from '../../nn/init.ts';
import { invertedDropout } from '../../nn/dropout.ts';
import type { FloatDType, LSTM } from '../../nn/rnn.ts';
import {
  add, concat, globalRng, linear, lstmSequence, mul, narrow, reshape, sigmoid, slice, split, stack, tanh, zeros,
  type Rng, type Tensor,
} from '../../tensor/index.ts';
import { createQuantizer, Quantizer, type QuantizerSpec } from '../quantizers/quantizer.ts';
import '../quantizers/index.ts';
import { LsqQuantizer } from '../quantizers/lsq.ts';
import { SteQuantizer } from '../quantizers/ste.ts';

/** A spec for every layer, or one per layer (length numLayers); null keeps that operand float. */
export type PerLayerSpec = QuantizerSpec | null | readonly (QuantizerSpec | null)[];

export interface QatLSTMOptions {
  /** Stacked layers (default 1). */
  numLayers?: number;
  /** Learn b_ih and b_hh (default true). */
  bias?: boolean;
  /** Input and output [N, L, ·] instead of [L, N, ·] (default false). */
  batchFirst?: boolean;
  /** Dropout on every layer's output but the last, in training mode (default 0). */
  dropout?: number;
  /** Generator of the initial weights and of dropout (default the global one). */
  rng?: Rng;
  /** Parameter dtype (default float32; float64 for gradient checks on the reference backend). */
  dtype?: FloatDType;
  /** Quantizer of W_ih and W_hh (each gets its own). Default {@link DEFAULT_LSTM_WEIGHT}: LSQ int8 per row. */
  weight?: PerLayerSpec;
  /** Quantizer of the layer input x_t. Default {@link DEFAULT_LSTM_ACTIVATION}: LSQ signed int8 per tensor. */
  input?: PerLayerSpec;
  /** Quantizer of the recurrent input h_{t−1}. Default {@link DEFAULT_LSTM_ACTIVATION}. */
  hidden?: PerLayerSpec;
}

/** Default weight format: signed int8, one learned (LSQ) step per output row. */
export const DEFAULT_LSTM_WEIGHT: QuantizerSpec = Object.freeze({ kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'channel' });
/** Default activation format (x_t and h_{t−1} may be negative): signed int8 per tensor, LSQ step. */
export const DEFAULT_LSTM_ACTIVATION: QuantizerSpec = Object.freeze({ kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'tensor' });

/** The three operands a layer quantizes. */
export type LstmOperand = 'weight' | 'input' | 'hidden';

/** One layer's weights and quantizers. */
interface QatLayer {
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor | null;
  readonly biasHh: Tensor | null;
  readonly weightIhQuantizer: Quantizer | null;
  readonly weightHhQuantizer: Quantizer | null;
  readonly inputQuantizer: Quantizer | null;
  readonly hiddenQuantizer: Quantizer | null;
}

/** The quantizers of one layer, as `QatLSTM.layerQuantizers` returns them. */
export interface QatLSTMLayerQuantizers {
  readonly weightIh: Quantizer | null;
  readonly weightHh: Quantizer | null;
  readonly input: Quantizer | null;
  readonly hidden: Quantizer | null;
}

/** Checks a spec's bits and granularity for `operand` and names the option when it is wrong. */
export function checkLstmSpec(operand: LstmOperand, spec: QuantizerSpec, where = 'QatLSTM'): void {
  if (typeof spec !== 'object' || spec === null || typeof spec.kind !== 'string') {
    throw new TypeError(`${where}: ${operand} must be a quantizer spec { kind, bits, ... } or null, got ${JSON.stringify(spec)}`);
  }
  if (!Number.isInteger(spec.bits) || spec.bits < 1 || spec.bits > 16) {
    throw new RangeError(`${where}: ${operand} bits must be an integer in [1, 16], got ${JSON.stringify(spec.bits)}`);
  }
  const granularity = spec['granularity'];
  if (operand === 'weight') {
    if (granularity !== undefined && granularity !== 'channel' && granularity !== 'tensor') {
      throw new RangeError(`${where}: weight granularity must be 'channel' (one scale per output row) or 'tensor', got ${JSON.stringify(granularity)}`);
    }
    const axis = spec['axis'];
    if (granularity !== 'tensor' && axis !== undefined && axis !== 0) {
      throw new RangeError(`${where}: per-row weight quantization uses axis 0 (one scale per gate row), got axis ${JSON.stringify(axis)}`);
    }
  } else if (granularity !== undefined && granularity !== 'tensor') {
    throw new RangeError(`${where}: ${operand} activations are quantized per tensor, got granularity ${JSON.stringify(granularity)}`);
  }
}

/** @internal The spec of `operand` for layer `layer` (shared with QatGRU). */
export function specForLayer(option: PerLayerSpec | undefined, fallback: QuantizerSpec, layer: number, numLayers: number, operand: LstmOperand, where = 'QatLSTM'): QuantizerSpec | null {
  if (option === undefined) return fallback;
  if (Array.isArray(option)) {
    const list = option as readonly (QuantizerSpec | null)[];
    if (list.length !== numLayers) throw new RangeError(`${where}: ${operand} lists ${list.length} specs for ${numLayers} layers`);
    return list[layer] ?? null;
  }
  return option as QuantizerSpec | null;
}

/** @internal A checked quantizer of `operand` (weights per row on axis 0), or null (shared with QatGRU). */
export function buildQuantizer(spec: QuantizerSpec | null, operand: LstmOperand, shape: readonly number[] | undefined, label: string, where = 'QatLSTM'): Quantizer | null {
  if (spec === null) return null;
  checkLstmSpec(operand, spec, where);
  try {
    return operand === 'weight' ? createQuantizer(spec, { role: 'weight', shape, channelAxis: 0 }) : createQuantizer(spec, { role: 'activation' });
  } catch (error) {
    throw new RangeError(`${where}: cannot build the quantizer of ${label} from ${JSON.stringify(spec)}: ${(error as Error).message}`);
  }
}

/** @internal The operand through its quantizer (identity when there is none or it is switched off). */
export function quantized(q: Quantizer | null, x: Tensor): Tensor {
  return q && q.fakeQuantEnabled ? q.forward(x) : x;
}

/** @internal True for a quantizer whose step or range has not been set from data yet. */
export function awaitsData(q: Quantizer): boolean {
  if (q instanceof LsqQuantizer) return q.initialized.data[0] === 0;
  if (q instanceof SteQuantizer) return q.observed.data[0] === 0;
  return false;
}

/** @internal The size and dropout checks of a QAT recurrent layer's constructor (shared with QatGRU). */
export function checkRecurrentSizes(inputSize: number, hiddenSize: number, options: Pick<QatLSTMOptions, 'numLayers' | 'dropout'>, where: string): void {
  for (const [name, v] of [['inputSize', inputSize], ['hiddenSize', hiddenSize], ['numLayers', options.numLayers ?? 1]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${where}: ${name} must be a positive integer, got ${v}`);
  }
  const dropout = options.dropout ?? 0;
  if (!(dropout >= 0 && dropout <= 1)) throw new RangeError(`${where}: dropout must be in [0, 1], got ${dropout}`);
}

/**
 * @internal Loads a float recurrent state dict (nn.LSTM / nn.GRU names) into `module`'s own
 * parameters: every one must be present and nothing else may be; child modules (the quantizers)
 * are left as they are (shared with QatGRU).
 */
export function loadFloatRecurrentState(module: Module, stateDict: StateDictInput, where: string, floatName: string): void {
  const source: ReadonlyMap<string, Tensor> = stateDict instanceof Map ? stateDict : new Map(Object.entries(stateDict));
  const own = new Set(module.namedParameters({ recurse: false }).map(([name]) => name));
  const unexpected = [...source.keys()].filter((name) => !own.has(name));
  if (unexpected.length > 0) throw new Error(`${where}.loadFloatStateDict: unexpected keys ${unexpected.join(', ')} (expected only ${floatName} parameters ${[...own].join(', ')})`);
  const result = module.loadStateDict(source, { strict: false });
  const missing = result.missingKeys.filter((name) => own.has(name));
  if (missing.length > 0) throw new Error(`${where}.loadFloatStateDict: missing keys ${missing.join(', ')}`);
}

/** @internal The settings a QAT recurrent layer prints after its sizes (shared with QatGRU). */
export function recurrentRepr(m: Pick<QatLSTM, 'inputSize' | 'hiddenSize' | 'numLayers' | 'bias' | 'batchFirst' | 'dropout' | 'dtype'>): string {
  const parts = [`${m.inputSize}, ${m.hiddenSize}`];
  if (m.numLayers !== 1) parts.push(`numLayers=${m.numLayers}`);
  if (!m.bias) parts.push('bias=false');
  if (m.batchFirst) parts.push('batchFirst=true');
  if (m.dropout !== 0) parts.push(`dropout=${m.dropout}`);
  if (m.dtype !== 'float32') parts.push(`dtype=${m.dtype}`);
  return parts.join(', ');
}

/**
 * LSTM with fake-quantized matmul operands (see the file comment for the formulas). Parameters
 * carry nn.LSTM's names (`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`), so a
 * float LSTM's weights load by name (`fromLSTM`, `loadFloatStateDict`); the quantizers are child
 * modules `quant_weight_ih_l{k}`, `quant_weight_hh_l{k}`, `quant_input_l{k}`, `quant_hidden_l{k}`.
 * Unidirectional only; input [L, N, inputSize] ([N, L, inputSize] with batchFirst).
 */
export class QatLSTM extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly bias: boolean;
  readonly batchFirst: boolean;
  readonly dropout: number;
  readonly dtype: FloatDType;
  private readonly layers: QatLayer[] = [];
  private readonly rng: Rng;

  constructor(inputSize: number, hiddenSize: number, options: QatLSTMOptions = {}) {
    super();
    checkRecurrentSizes(inputSize, hiddenSize, options, 'QatLSTM');
    const dropout = options.dropout ?? 0;
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    this.numLayers = options.numLayers ?? 1;
    this.bias = options.bias ?? true;
    this.batchFirst = options.batchFirst ?? false;
    this.dropout = dropout;
    this.dtype = options.dtype ?? 'float32';
    this.rng = options.rng ?? globalRng;
    const rows = 4 * hiddenSize;
    // Every spec is checked (and every quantizer built) before anything is registered.
    const specs = Array.from({ length: this.numLayers }, (_, k) => ({
      weight: specForLayer(options.weight, DEFAULT_LSTM_WEIGHT, k, this.numLayers, 'weight'),
      input: specForLayer(options.input, DEFAULT_LSTM_ACTIVATION, k, this.numLayers, 'input'),
      hidden: specForLayer(options.hidden, DEFAULT_LSTM_ACTIVATION, k, this.numLayers, 'hidden'),
    }));
    const built = specs.map((s, k) => {
      const layerInput = k === 0 ? inputSize : hiddenSize;
      return {
        weightIh: buildQuantizer(s.weight, 'weight', [rows, layerInput], `weight_ih_l${k}`),
        weightHh: buildQuantizer(s.weight, 'weight', [rows, hiddenSize], `weight_hh_l${k}`),
        input: buildQuantizer(s.input, 'input', undefined, `the input of layer ${k}`),
        hidden: buildQuantizer(s.hidden, 'hidden', undefined, `the hidden state of layer ${k}`),
      };
    });
    for (let k = 0; k < this.numLayers; k++) {
      const layerInput = k === 0 ? inputSize : hiddenSize;
      const weightIh = this.registerParameter(`weight_ih_l${k}`, zeros([rows, layerInput], this.dtype));
      const weightHh = this.registerParameter(`weight_hh_l${k}`, zeros([rows, hiddenSize], this.dtype));
      const biasIh = this.bias ? this.registerParameter(`bias_ih_l${k}`, zeros([rows], this.dtype)) : null;
      const biasHh = this.bias ? this.registerParameter(`bias_hh_l${k}`, zeros([rows], this.dtype)) : null;
      this.layers.push({ weightIh, weightHh, biasIh, biasHh, weightIhQuantizer: null, weightHhQuantizer: null, inputQuantizer: null, hiddenQuantizer: null });
    }
    // Quantizers are registered after the weights so that parameters() lists the LSTM's first.
    for (let k = 0; k < this.numLayers; k++) {
      const q = built[k]!;
      const register = (name: string, quantizer: Quantizer | null): Quantizer | null => (quantizer ? this.registerModule(`${name}_l${k}`, quantizer) : null);
      this.layers[k] = {
        ...this.layers[k]!,
        weightIhQuantizer: register('quant_weight_ih', q.weightIh),
        weightHhQuantizer: register('quant_weight_hh', q.weightHh),
        inputQuantizer: register('quant_input', q.input),
        hiddenQuantizer: register('quant_hidden', q.hidden),
      };
    }
    const bound = 1 / Math.sqrt(hiddenSize);
    for (const layer of this.layers) {
      for (const p of [layer.weightIh, layer.weightHh, layer.biasIh, layer.biasHh]) if (p) uniform(p, -bound, bound, this.rng);
    }
  }

  /**
   * A QatLSTM with a float nn.LSTM's settings and a copy of its weights (unidirectional; any
   * number of layers). Quantizer options as the constructor's.
   */
  static fromLSTM(lstm: LSTM, options: Pick<QatLSTMOptions, 'weight' | 'input' | 'hidden' | 'rng'> = {}): QatLSTM {
    if (lstm.bidirectional) throw new RangeError(`QatLSTM.fromLSTM: bidirectional LSTMs are not supported, got ${lstm.toString()}`);
    const q = new QatLSTM(lstm.inputSize, lstm.hiddenSize, {
      ...options, numLayers: lstm.numLayers, bias: lstm.bias, batchFirst: lstm.batchFirst, dropout: lstm.dropout, dtype: lstm.dtype,
    });
    q.loadFloatStateDict(lstm.stateDict());
    q.training = lstm.training;
    return q;
  }

  /**
   * Loads a float nn.LSTM state dict (same parameter names): every LSTM parameter must be present
   * with its shape and nothing else may be; the quantizers' state is left as it is.
   */
  loadFloatStateDict(stateDict: StateDictInput): void {
    loadFloatRecurrentState(this, stateDict, 'QatLSTM', 'nn.LSTM');
  }

  /** The quantizers of layer `k` (null where that operand stays float). */
  layerQuantizers(k: number): QatLSTMLayerQuantizers {
    const layer = this.layers[k];
    if (!layer) throw new RangeError(`QatLSTM: layer ${k} out of range [0, ${this.numLayers - 1}]`);
    return { weightIh: layer.weightIhQuantizer, weightHh: layer.weightHhQuantizer, input: layer.inputQuantizer, hidden: layer.hiddenQuantizer };
  }

  /**
   * Runs the sequence. x [L, N, inputSize] ([N, L, inputSize] with batchFirst); `hx` = [h0, c0],
   * each [numLayers, N, hiddenSize] (zeros when omitted). Returns [output (x's layout, width
   * hiddenSize), [hN, cN]] as nn.LSTM.
   */
  forward(x: Tensor, hx?: readonly [Tensor, Tensor]): [Tensor, [Tensor, Tensor]] {
    const who = `QatLSTM(${this.inputSize}, ${this.hiddenSize})`;
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
    for (const [part, s] of (hx ?? []).entries()) {
      if (s.rank !== 3 || s.shape.some((d, i) => d !== stateShape[i])) throw new Error(`${who}: initial state ${part === 0 ? 'h0' : 'c0'} has shape ${shapeText(s.shape)}, expected ${shapeText(stateShape)}`);
      if (s.dtype !== this.dtype) throw new TypeError(`${who}: initial state dtype ${s.dtype} differs from the parameters' ${this.dtype}`);
    }
    let layerInput = x;
    const finalH: Tensor[] = [];
    const finalC: Tensor[] = [];
    for (let k = 0; k < this.numLayers; k++) {
      const start = hx ? { h: reshape(narrow(hx[0], 0, k, 1), [batch, H]), c: reshape(narrow(hx[1], 0, k, 1), [batch, H]) } : null;
      const { output, h, c } = this.runLayer(this.layers[k]!, layerInput, start, timeAxis, steps, batch);
      finalH.push(h);
      finalC.push(c);
      layerInput = k < this.numLayers - 1 && this.training && this.dropout > 0 ? invertedDropout(output, this.dropout, this.rng) : output;
    }
    return [layerInput, [stack(finalH, 0), stack(finalC, 0)]];
  }

  private runLayer(layer: QatLayer, input: Tensor, start: { h: Tensor; c: Tensor } | null, timeAxis: number, steps: number, batch: number): { output: Tensor; h: Tensor; c: Tensor } {
    const H = this.hiddenSize;
    const features = input.shape[2]!;
    const xq = reshape(quantized(layer.inputQuantizer, reshape(input, [steps * batch, features])), input.shape);
    const wih = quantized(layer.weightIhQuantizer, layer.weightIh);
    const whh = quantized(layer.weightHhQuantizer, layer.weightHh);
    const bias = layer.biasIh && layer.biasHh ? add(layer.biasIh, layer.biasHh) : zeros([4 * H], this.dtype);
    const inputGates = linear(xq, wih);
    const h0 = start?.h ?? zeros([batch, H], this.dtype);
    const c0 = start?.c ?? zeros([batch, H], this.dtype);
    const hq = layer.hiddenQuantizer;
    if (!hq || !hq.fakeQuantEnabled) return this.fused(inputGates, whh, bias, h0, c0, timeAxis, steps, batch);
    if (awaitsData(hq) && (steps > 1 || start)) {
      // Show the quantizer the h_{t−1} this layer would feed it, computed with Q_h off.
      noGrad(() => {
        const { output } = this.fused(inputGates, whh, bias, h0, c0, timeAxis, steps, batch);
        const previous = steps > 1 ? [reshape(narrow(output, timeAxis, 0, steps - 1), [(steps - 1) * batch, H])] : [];
        const seen = start ? [h0, ...previous] : previous;
        hq.forward(seen.length === 1 ? seen[0]! : concat(seen, 0));
      });
    }
    let h = h0;
    let c = c0;
    const outputs: Tensor[] = [];
    for (let t = 0; t < steps; t++) {
      const zx = reshape(narrow(inputGates, timeAxis, t, 1), [batch, 4 * H]);
      // The zero starting state needs no quantizer: 0 is exact in every format with 0 in range.
      const hIn = t === 0 && !start ? h : hq.forward(h);
      const z = add(add(zx, linear(hIn, whh)), bias);
      const [zi, zf, zg, zo] = split(z, [H, H, H, H], 1) as [Tensor, Tensor, Tensor, Tensor];
      c = add(mul(sigmoid(zf), c), mul(sigmoid(zi), tanh(zg)));
      h = mul(sigmoid(zo), tanh(c));
      outputs.push(h);
    }
    return { output: stack(outputs, timeAxis), h, c };
  }

  /** The float recurrence as one fused op (used when h_{t−1} is not quantized). */
  private fused(inputGates: Tensor, whh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor, timeAxis: number, steps: number, batch: number): { output: Tensor; h: Tensor; c: Tensor } {
    const H = this.hiddenSize;
    const batchFirst = timeAxis === 1;
    const parts = lstmSequence(inputGates, whh, bias, h0, c0, { batchFirst });
    const [, a, b] = parts.shape as [number, number, number, number];
    const output = reshape(slice(parts, [0], [1]), [a, b, H]);
    const last = steps - 1;
    const at = (p: number): Tensor => reshape(batchFirst ? slice(parts, [p, 0, last], [p + 1, a, last + 1]) : slice(parts, [p, last], [p + 1, last + 1]), [batch, H]);
    return { output, h: at(0), c: at(1) };
  }

  override extraRepr(): string {
    return recurrentRepr(this);
  }
}
