/**
 * QuantLSTM: a single-layer, unidirectional LSTM trained with fake quantization of exactly the
 * fixed-point arithmetic the integer runtime (`IntLSTM`) performs (formats in ./formats.ts), with
 * PWL sigmoid/tanh (./pwl.ts). Per step t, with xq = fq8(x_t, s_x), hq = fq8(h_{t−1}, s_h) and
 * int8 per-row weights Ŵ:
 *   z   = clamp16( fq12(Ŵ_ih·xq) + fq12(Ŵ_hh·hq) + fq12(b_ih + b_hh) )      (Q3.12)
 *   [i, f, g, o] = fq15( PWL[σ, σ, tanh, σ](z) )                             (Q0.15)
 *   c_t = clamp16( fq11(f·c_{t−1}) + fq11(i·g) )                             (Q4.11)
 *   h_t = fq8( fq15(o · fq15(PWL_tanh(c_t))), s_h )
 * where fqN rounds to the grid 2^−N (half to even) and the gradient is straight-through
 * (zero where a clamp bit), the PWL's gradient its segment slope. s_x and s_h come from running
 * absolute-maximum observers (EMA, momentum 0.1) updated in training mode.
 * After iRNN (Nia et al., "iRNN: integer-only recurrent neural network").
 *
 * With `layerNorm: true` (LN-LSTM, Ba et al. 2016): z = LN_ih(W_ih·x) + LN_hh(W_hh·h) + b (each
 * over the 4H gate rows, γ only) and h_t = o·tanh(LN_cell(c_t)) (over H, γ and β); the integer
 * step is intlstm.ts's `lnCellUpdate`. Then the forward values are that integer step's (run on
 * the int8 codes with the runtime's GEMM) and the gradient is the float LN-LSTM's through the
 * same quantized weights, evaluated at the integer values (straight-through, `integerForward`):
 * the fake-quant output equals IntLSTM's bit for bit.
 */
import { LSTM } from '../../nn/rnn.ts';
import { Module, shapeText } from '../../nn/module.ts';
import { uniform } from '../../nn/init.ts';
import type { FloatDType } from '../../nn/rnn.ts';
import { add, globalRng, linear, mul, narrow, ones, reshape, split, stack, zeros, type Rng } from '../../tensor/index.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { noGrad } from '../../autograd/index.ts';
import { ACT_FRAC, ACT_MAX, absMaxScale, CELL_FRAC, GATE_FRAC, INT16_MAX, INT16_MIN, integerForward, LN_INPUT_FRAC, Q8_MAX, WIDE, observeAbsMax, fq, weightMax } from './formats.ts';
import { hiddenMaxAfter, observeInput, pwlConfigProblems, pwlConfigTensor, rowQuantizedWeights, timeMajorCodes } from './qrnn.ts';
import { floatLayerNorm, layerNormParams, quantizeBeta, quantizeGamma, surrogateLayerNorm } from './layernorm.ts';
import { integerLstmParams, lnCellUpdate, lnStepBuffers, type IntLSTMLayerNorm } from './intlstm.ts';
import { gemmInt8, packInt8Weights } from '../../runtime/kernels/index.ts';
import { applyPwl, fitSigmoidPwl, fitTanhPwl, pwlOfInt, quantizePwl, type IntPwl, type Pwl, type PwlObjective } from './pwl.ts';

export interface QuantLSTMOptions {
  /** PWL segments of sigmoid and tanh (default 16). */
  segments?: number;
  /** PWL fit objective (default 'maxError'). */
  objective?: PwlObjective;
  /** Fake-quantize (default true); false runs the same PWL LSTM in float, for gradient checks. */
  quantize?: boolean;
  /** Input and output are [N, L, ·] instead of [L, N, ·] (default false). */
  batchFirst?: boolean;
  /** Parameter dtype (default float32; float64 for gradient checks on the reference backend). */
  dtype?: FloatDType;
  /**
   * Bits of W_ih and W_hh (2..8, default 8): symmetric per output row, codes in ±(2^(b−1)−1) at
   * scale max|row|/(2^(b−1)−1). The runtime holds them as int8 values in that range; the file packs
   * them (4 bits: two per byte, 2 bits: four per byte).
   */
  weightBits?: number;
  /** LN-LSTM: layer norms on W_ih·x, W_hh·h and c_t (default false); see the file comment. */
  layerNorm?: boolean;
  /** Variance floor of the layer norms (default 1e-5). */
  eps?: number;
  rng?: Rng;
}

const fitCache = new Map<string, { sigmoid: IntPwl; tanh: IntPwl }>();

/** The fixed-point sigmoid and tanh PWL tables for a segment count and objective (fitted once per process). */
export function lstmPwlTables(segments = 16, objective: PwlObjective = 'maxError'): { sigmoid: IntPwl; tanh: IntPwl } {
  const key = `${segments}/${objective}`;
  let tables = fitCache.get(key);
  if (!tables) {
    const format = { inputFrac: GATE_FRAC, outputFrac: ACT_FRAC, slopeFrac: 15, outputMin: -ACT_MAX, outputMax: ACT_MAX };
    tables = {
      sigmoid: quantizePwl(fitSigmoidPwl({ segments, objective }), format),
      tanh: quantizePwl(fitTanhPwl({ segments, objective }), format),
    };
    fitCache.set(key, tables);
  }
  return tables;
}

/**
 * Single-layer LSTM with fake-quant int8 weights (per output row, symmetric), int8 x and h,
 * Q3.12 gate inputs, Q0.15 PWL gates, Q4.11 cell state: see the file comment for the formulas.
 * Parameters carry nn.LSTM's names (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0), so a
 * float LSTM's state dict loads as is (`fromLSTM`). Buffers input_absmax and hidden_absmax hold
 * the observed ranges (0 = not observed yet).
 */
export class QuantLSTM extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly batchFirst: boolean;
  readonly quantize: boolean;
  readonly dtype: FloatDType;
  readonly segments: number;
  readonly objective: PwlObjective;
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor;
  readonly biasHh: Tensor;
  readonly inputAbsMax: Tensor;
  readonly hiddenAbsMax: Tensor;
  readonly layerNorm: boolean;
  readonly eps: number;
  /** Bits of W_ih and W_hh (2..8). */
  readonly weightBits: number;
  /** LN-LSTM γ of the gate layer norms [4H] and γ, β of the cell layer norm [H] (null without layerNorm). */
  readonly lnIhWeight: Tensor | null;
  readonly lnHhWeight: Tensor | null;
  readonly lnCellWeight: Tensor | null;
  readonly lnCellBias: Tensor | null;
  /**
   * Buffer pwl_config = [segments, objective] (objective 0 = 'maxError', 1 = 'mse'): the PWL tables
   * are fitted from the constructor options, so the state dict records them and `loadStateDict`
   * refuses one saved with other tables (the weights were trained through those).
   */
  readonly pwlConfig: Tensor;
  /** Fixed-point PWL tables the runtime uses. */
  readonly tables: { sigmoid: IntPwl; tanh: IntPwl };
  private readonly sigmoidPwl: Pwl;
  private readonly tanhPwl: Pwl;

  constructor(inputSize: number, hiddenSize: number, options: QuantLSTMOptions = {}) {
    super();
    for (const [name, v] of [['inputSize', inputSize], ['hiddenSize', hiddenSize]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`QuantLSTM: ${name} must be a positive integer, got ${v}`);
    }
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    this.batchFirst = options.batchFirst ?? false;
    this.quantize = options.quantize ?? true;
    this.dtype = options.dtype ?? 'float32';
    this.segments = options.segments ?? 16;
    this.weightBits = options.weightBits ?? 8;
    weightMax(this.weightBits);
    this.objective = options.objective ?? 'maxError';
    const rows = 4 * hiddenSize;
    this.weightIh = this.registerParameter('weight_ih_l0', zeros([rows, inputSize], this.dtype));
    this.weightHh = this.registerParameter('weight_hh_l0', zeros([rows, hiddenSize], this.dtype));
    this.biasIh = this.registerParameter('bias_ih_l0', zeros([rows], this.dtype));
    this.biasHh = this.registerParameter('bias_hh_l0', zeros([rows], this.dtype));
    this.inputAbsMax = this.registerBuffer('input_absmax', zeros([1]));
    this.hiddenAbsMax = this.registerBuffer('hidden_absmax', zeros([1]));
    this.pwlConfig = this.registerBuffer('pwl_config', pwlConfigTensor('QuantLSTM', this.segments, this.objective));
    const bound = 1 / Math.sqrt(hiddenSize);
    for (const p of this.parameters()) uniform(p, -bound, bound, options.rng ?? globalRng);
    this.layerNorm = options.layerNorm ?? false;
    this.eps = options.eps ?? 1e-5;
    if (!(this.eps >= 0) || !Number.isFinite(this.eps)) throw new RangeError(`QuantLSTM: eps must be a finite number ≥ 0, got ${this.eps}`);
    this.lnIhWeight = this.layerNorm ? this.registerParameter('ln_ih_weight', ones([rows], this.dtype)) : null;
    this.lnHhWeight = this.layerNorm ? this.registerParameter('ln_hh_weight', ones([rows], this.dtype)) : null;
    this.lnCellWeight = this.layerNorm ? this.registerParameter('ln_cell_weight', ones([hiddenSize], this.dtype)) : null;
    this.lnCellBias = this.layerNorm ? this.registerParameter('ln_cell_bias', zeros([hiddenSize], this.dtype)) : null;
    this.tables = lstmPwlTables(this.segments, this.objective);
    this.sigmoidPwl = pwlOfInt(this.tables.sigmoid);
    this.tanhPwl = pwlOfInt(this.tables.tanh);
  }

  /**
   * A QuantLSTM holding a float nn.LSTM's weights (one layer, one direction, with biases); with
   * `layerNorm`, the layer norms start at γ = 1, β = 0 (so the function changes: fine-tune it).
   */
  static fromLSTM(lstm: LSTM, options: Omit<QuantLSTMOptions, 'batchFirst' | 'dtype'> = {}): QuantLSTM {
    if (lstm.numLayers !== 1 || lstm.bidirectional || !lstm.bias) {
      throw new RangeError(`QuantLSTM.fromLSTM: needs a one-layer, unidirectional LSTM with biases, got ${lstm.toString()}`);
    }
    const q = new QuantLSTM(lstm.inputSize, lstm.hiddenSize, { ...options, batchFirst: lstm.batchFirst, dtype: lstm.dtype });
    q.loadStateDict(lstm.stateDict(), { strict: false });
    return q;
  }

  /** The int8 scale of x (from the observer). */
  get inputScale(): number {
    return absMaxScale(this.inputAbsMax.data[0]!);
  }

  /** The int8 scale of h (from the observer). */
  get hiddenScale(): number {
    return absMaxScale(this.hiddenAbsMax.data[0]!);
  }


  /**
   * Runs the sequence: x [L, N, inputSize] ([N, L, inputSize] with batchFirst), optional [h0, c0]
   * each [N, hiddenSize] (zeros by default). Returns [output (x's layout, width hiddenSize), [hN, cN]].
   */
  forward(x: Tensor, hx?: readonly [Tensor, Tensor]): [Tensor, [Tensor, Tensor]] {
    if (x.rank !== 3 || x.shape[2] !== this.inputSize) {
      throw new Error(`QuantLSTM: expected input ${this.batchFirst ? '[N, L' : '[L, N'}, ${this.inputSize}], got ${shapeText(x.shape)}`);
    }
    if (x.dtype !== this.dtype) throw new TypeError(`QuantLSTM: input dtype ${x.dtype} differs from the parameters' ${this.dtype}`);
    const timeAxis = this.batchFirst ? 1 : 0;
    const steps = x.shape[timeAxis]!;
    const batch = x.shape[1 - timeAxis]!;
    const H = this.hiddenSize;
    if (steps === 0) throw new Error(`QuantLSTM: the input sequence is empty (shape ${shapeText(x.shape)})`);
    for (const s of hx ?? []) {
      if (s.rank !== 2 || s.shape[0] !== batch || s.shape[1] !== H) throw new Error(`QuantLSTM: initial state has shape ${shapeText(s.shape)}, expected [${batch}, ${H}]`);
    }
    if (this.layerNorm) return this.forwardLayerNorm(x, steps, batch, timeAxis, hx);
    const q = this.quantize;
    if (q && this.training) observeInput('QuantLSTM', this.inputAbsMax, x);
    const sx = this.inputScale;
    const sh = this.hiddenScale;
    const xq = q ? fq(x, sx, -Q8_MAX, Q8_MAX) : x;
    const [wih, whh] = q ? this.quantizedWeights() : [this.weightIh, this.weightHh];
    const biasSum = add(this.biasIh, this.biasHh);
    const bias = q ? fq(biasSum, 2 ** -GATE_FRAC, -WIDE, WIDE) : biasSum;
    const inputGates = linear(xq, wih);
    const zx = q ? fq(inputGates, 2 ** -GATE_FRAC, -WIDE, WIDE) : inputGates;
    let h = hx ? (q ? fq(hx[0], sh, -Q8_MAX, Q8_MAX) : hx[0]) : zeros([batch, H], this.dtype);
    let c = hx ? (q ? fq(hx[1], 2 ** -CELL_FRAC, INT16_MIN, INT16_MAX) : hx[1]) : zeros([batch, H], this.dtype);
    const outputs: Tensor[] = [];
    let hiddenMax = 0;
    const gatePwls = [this.sigmoidPwl, this.sigmoidPwl, this.tanhPwl, this.sigmoidPwl];
    for (let t = 0; t < steps; t++) {
      const zxT = reshape(narrow(zx, timeAxis, t, 1), [batch, 4 * H]);
      const hiddenGates = linear(h, whh);
      const zh = q ? fq(hiddenGates, 2 ** -GATE_FRAC, -WIDE, WIDE) : hiddenGates;
      const sum = add(add(zxT, zh), bias);
      const z = q ? fq(sum, 2 ** -GATE_FRAC, INT16_MIN, INT16_MAX) : sum;
      const act = applyPwl(z, gatePwls);
      const [i, f, g, o] = split(q ? fq(act, 2 ** -ACT_FRAC, -ACT_MAX, ACT_MAX) : act, [H, H, H, H], 1) as [Tensor, Tensor, Tensor, Tensor];
      const fc = mul(f, c);
      const ig = mul(i, g);
      const cellSum = q ? add(fq(fc, 2 ** -CELL_FRAC, -WIDE, WIDE), fq(ig, 2 ** -CELL_FRAC, -WIDE, WIDE)) : add(fc, ig);
      c = q ? fq(cellSum, 2 ** -CELL_FRAC, INT16_MIN, INT16_MAX) : cellSum;
      const tc = applyPwl(c, this.tanhPwl);
      const hProduct = mul(o, q ? fq(tc, 2 ** -ACT_FRAC, -ACT_MAX, ACT_MAX) : tc);
      const hReal = q ? fq(hProduct, 2 ** -ACT_FRAC, -WIDE, WIDE) : hProduct;
      if (q && this.training) hiddenMax = hiddenMaxAfter('QuantLSTM', hiddenMax, hReal, t, ' (non-finite weights or initial state?)');
      h = q ? fq(hReal, sh, -Q8_MAX, Q8_MAX) : hReal;
      outputs.push(h);
    }
    if (q && this.training) noGrad(() => observeAbsMax(this.hiddenAbsMax, hiddenMax));
    return [stack(outputs, timeAxis), [h, c]];
  }

  /** W_ih and W_hh fake-quantized at `weightBits` per row (differentiable, straight-through). */
  quantizedWeights(): [Tensor, Tensor] {
    return rowQuantizedWeights(this.weightIh, this.weightHh, this.weightBits);
  }

  /**
   * The layer norms' integer parameters (γ int16 per tensor; the cell's β on the grid 2^−20) and
   * their fake-quantized γ, β (differentiable). @internal
   */
  quantizedLayerNorm(): { params: IntLSTMLayerNorm; ih: Tensor; hh: Tensor; cell: Tensor; cellBias: Tensor } {
    if (!this.lnIhWeight || !this.lnHhWeight || !this.lnCellWeight || !this.lnCellBias) throw new Error('QuantLSTM: this model has no layer normalisation');
    const rows = 4 * this.hiddenSize;
    const ih = quantizeGamma(this.lnIhWeight);
    const hh = quantizeGamma(this.lnHhWeight);
    const cell = quantizeGamma(this.lnCellWeight);
    const gate = 2 ** -GATE_FRAC;
    const cellBias = quantizeBeta(this.lnCellBias, gate);
    const lnInput = 2 ** -LN_INPUT_FRAC;
    return {
      params: {
        ih: layerNormParams(ih.codes, ih.scale, new Int32Array(rows), this.eps, lnInput, gate, -WIDE, WIDE),
        hh: layerNormParams(hh.codes, hh.scale, new Int32Array(rows), this.eps, lnInput, gate, -WIDE, WIDE),
        cell: layerNormParams(cell.codes, cell.scale, cellBias.codes, this.eps, 2 ** -CELL_FRAC, gate, INT16_MIN, INT16_MAX),
      },
      ih: ih.hat, hh: hh.hat, cell: cell.hat, cellBias: cellBias.hat,
    };
  }

  /** The LN-LSTM forward: the float one (quantize=false) or the integer one with float gradients. */
  private forwardLayerNorm(x: Tensor, steps: number, batch: number, timeAxis: number, hx?: readonly [Tensor, Tensor]): [Tensor, [Tensor, Tensor]] {
    const H = this.hiddenSize;
    const rows = 4 * H;
    const gatePwls = [this.sigmoidPwl, this.sigmoidPwl, this.tanhPwl, this.sigmoidPwl];
    const biasSum = add(this.biasIh, this.biasHh);
    if (!this.quantize) {
      const gx = linear(x, this.weightIh);
      let h = hx ? hx[0] : zeros([batch, H], this.dtype);
      let c = hx ? hx[1] : zeros([batch, H], this.dtype);
      const outputs: Tensor[] = [];
      for (let t = 0; t < steps; t++) {
        const gxT = reshape(narrow(gx, timeAxis, t, 1), [batch, rows]);
        const z = add(add(mul(floatLayerNorm(gxT, this.eps), this.lnIhWeight!), mul(floatLayerNorm(linear(h, this.weightHh), this.eps), this.lnHhWeight!)), biasSum);
        const [i, f, g, o] = split(applyPwl(z, gatePwls), [H, H, H, H], 1) as [Tensor, Tensor, Tensor, Tensor];
        c = add(mul(f, c), mul(i, g));
        h = mul(o, applyPwl(add(mul(floatLayerNorm(c, this.eps), this.lnCellWeight!), this.lnCellBias!), this.tanhPwl));
        outputs.push(h);
      }
      return [stack(outputs, timeAxis), [h, c]];
    }
    if (this.training) observeInput('QuantLSTM', this.inputAbsMax, x);
    const sx = this.inputScale;
    const sh = this.hiddenScale;
    const ln = this.quantizedLayerNorm();
    const p = integerLstmParams(this, sx, sh, ln.params);
    const xq = fq(x, sx, -Q8_MAX, Q8_MAX);
    const [wih, whh] = this.quantizedWeights();
    const bias = fq(biasSum, 2 ** -GATE_FRAC, -WIDE, WIDE);
    // Integer side: x codes time-major [L, N, I], the runtime's GEMM for both products.
    const I = this.inputSize;
    const xCodes = timeMajorCodes(xq, steps, batch, I, this.batchFirst, sx);
    const accX = new Int32Array(steps * batch * rows);
    gemmInt8(steps * batch, rows, I, xCodes, 0, packInt8Weights(p.weightIh, rows, I), accX);
    const packedHh = packInt8Weights(p.weightHh, rows, H);
    const accH = new Int32Array(batch * rows);
    let state = { h: new Int8Array(batch * H), c: new Int16Array(batch * H) };
    let h = zeros([batch, H], this.dtype);
    let c = zeros([batch, H], this.dtype);
    if (hx) {
      h = fq(hx[0], sh, -Q8_MAX, Q8_MAX);
      c = fq(hx[1], 2 ** -CELL_FRAC, INT16_MIN, INT16_MAX);
      state = { h: Int8Array.from(h.data, (v) => Math.round(v / sh)), c: Int16Array.from(c.data, (v) => Math.round(v * 2 ** CELL_FRAC)) };
    }
    const gx = linear(xq, wih);
    const lnGrid = 2 ** -LN_INPUT_FRAC;
    const gate = 2 ** -GATE_FRAC;
    const act = 2 ** -ACT_FRAC;
    const outputs: Tensor[] = [];
    let hiddenMax = 0;
    for (let t = 0; t < steps; t++) {
      gemmInt8(batch, rows, H, state.h, 0, packedHh, accH);
      const next = { h: new Int8Array(batch * H), c: new Int16Array(batch * H) };
      const b = lnStepBuffers(H, batch);
      for (let n = 0; n < batch; n++) lnCellUpdate(p, accX, (t * batch + n) * rows, accH, n * rows, state.c, n * H, next, b, n * rows, n * H);
      const gxT = integerForward(reshape(narrow(gx, timeAxis, t, 1), [batch, rows]), b.gx, lnGrid, -WIDE, WIDE);
      const ghT = integerForward(linear(h, whh), b.gh, lnGrid, -WIDE, WIDE);
      const lnx = integerForward(mul(surrogateLayerNorm(gxT, p.layerNorm!.ih.epsCode, lnGrid), ln.ih), b.lnx, gate, -WIDE, WIDE);
      const lnh = integerForward(mul(surrogateLayerNorm(ghT, p.layerNorm!.hh.epsCode, lnGrid), ln.hh), b.lnh, gate, -WIDE, WIDE);
      const z = integerForward(add(add(lnx, lnh), bias), b.z, gate, INT16_MIN, INT16_MAX);
      const gates = integerForward(applyPwl(z, gatePwls), b.gates, act, -ACT_MAX, ACT_MAX);
      const [i, f, g, o] = split(gates, [H, H, H, H], 1) as [Tensor, Tensor, Tensor, Tensor];
      c = integerForward(add(mul(f, c), mul(i, g)), next.c, 2 ** -CELL_FRAC, INT16_MIN, INT16_MAX);
      const lc = integerForward(add(mul(surrogateLayerNorm(c, p.layerNorm!.cell.epsCode, 2 ** -CELL_FRAC), ln.cell), ln.cellBias), b.lc, gate, INT16_MIN, INT16_MAX);
      const tc = integerForward(applyPwl(lc, this.tanhPwl), b.t, act, -ACT_MAX, ACT_MAX);
      const hReal = mul(o, tc);
      if (this.training) hiddenMax = hiddenMaxAfter('QuantLSTM', hiddenMax, hReal, t);
      h = integerForward(hReal, next.h, sh, -Q8_MAX, Q8_MAX);
      outputs.push(h);
      state = next;
    }
    if (this.training) noGrad(() => observeAbsMax(this.hiddenAbsMax, hiddenMax));
    return [stack(outputs, timeAxis), [h, c]];
  }

  /** Refuses a state dict whose pwl_config differs from this model's PWL options (a clear error instead of other outputs). */
  protected override checkLoadedState(incoming: ReadonlyMap<string, Tensor>): string[] {
    return pwlConfigProblems('QuantLSTM', incoming, this.segments, this.objective);
  }

  override extraRepr(): string {
    return `${this.inputSize}, ${this.hiddenSize}, segments=${this.segments}${this.weightBits === 8 ? '' : `, weightBits=${this.weightBits}`}${this.layerNorm ? ', layerNorm=true' : ''}${this.quantize ? '' : ', quantize=false'}${this.batchFirst ? ', batchFirst=true' : ''}`;
  }
}
