/**
 * QuantGRU: a single-layer, unidirectional GRU trained with fake quantization of exactly the
 * fixed-point arithmetic of the integer runtime (`IntGRU`, ./intgru.ts, whose file comment gives
 * the integer formulas), with PWL sigmoid/tanh (./pwl.ts) and b-bit per-row weights (2..8).
 *
 * Float model (quantize=false, for gradient checks and as the QAT gradient): gates r, z, n as
 * nn.GRU with the PWLs in place of σ and tanh,
 *   r, z = PWL_σ(W_i{r,z}·x + W_h{r,z}·h + b_ih + b_hh),  n = PWL_tanh(W_in·x + b_in + r⊙(W_hn·h + b_hn)),
 *   h' = (1 − z)⊙n + z⊙h.
 * Fake quantization (quantize=true): the forward values are the integer runtime's — the step runs
 * on the int8 codes of x (at s_x) and h (at s_h) with the runtime's GEMM and `gruCellUpdate` — and
 * every intermediate (W·x, W·h, pre-activations, gates, W_hn·h + b_hn, h') takes its gradient from
 * the float expression above evaluated on the fake-quantized operands (straight-through:
 * `integerForward`, zero gradient where an integer clamp bit). So the eval-mode output equals
 * `convertQuantGRU(model).run(...)` bit for bit. s_x and s_h come from running absolute-maximum
 * observers (EMA, momentum 0.1) updated in training mode.
 * After iRNN (Nia et al., "iRNN: integer-only recurrent neural network"), which covers the LSTM.
 */
import type { GRU } from '../../nn/rnn.ts';
import { Module, shapeText } from '../../nn/module.ts';
import { uniform } from '../../nn/init.ts';
import type { FloatDType } from '../../nn/rnn.ts';
import { add, globalRng, linear, mul, narrow, reshape, split, stack, sub, zeros, type Rng } from '../../tensor/index.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { noGrad } from '../../autograd/index.ts';
import { absMaxScale, ACT_FRAC, ACT_MAX, GATE_FRAC, INT16_MAX, INT16_MIN, integerForward, observeAbsMax, fq, Q8_MAX, WIDE, weightMax } from './formats.ts';
import { hiddenMaxAfter, observeInput, pwlConfigProblems, pwlConfigTensor, rowQuantizedWeights, timeMajorCodes } from './qrnn.ts';
import { gemmInt8, packInt8Weights } from '../../runtime/kernels/index.ts';
import { applyPwl, pwlOfInt, type IntPwl, type Pwl, type PwlObjective } from './pwl.ts';
import { lstmPwlTables } from './qlstm.ts';
import { gruCellUpdate, gruStepBuffers, integerGruParams } from './intgru.ts';

export interface QuantGRUOptions {
  /** PWL segments of sigmoid and tanh (default 16, at most 256). */
  segments?: number;
  /** PWL fit objective (default 'maxError'). */
  objective?: PwlObjective;
  /** Fake-quantize (default true); false runs the same PWL GRU in float, for gradient checks. */
  quantize?: boolean;
  /** Input and output are [N, L, ·] instead of [L, N, ·] (default false). */
  batchFirst?: boolean;
  /** Parameter dtype (default float32; float64 for gradient checks on the reference backend). */
  dtype?: FloatDType;
  /** Bits of W_ih and W_hh (2..8, default 8): symmetric per output row, codes in ±(2^(b−1)−1). */
  weightBits?: number;
  rng?: Rng;
}

/**
 * Single-layer GRU with fake-quant b-bit weights (per output row, symmetric), int8 x and h, Q3.12
 * pre-activations, Q0.15 PWL gates: see the file comment. Parameters carry nn.GRU's names
 * (weight_ih_l0 [3H, I], weight_hh_l0 [3H, H], bias_ih_l0, bias_hh_l0 [3H]), so a float GRU's state
 * dict loads as is (`fromGRU`). Buffers input_absmax and hidden_absmax hold the observed ranges (0 =
 * not observed yet); pwl_config = [segments, objective code] records the PWL tables' options.
 */
export class QuantGRU extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly batchFirst: boolean;
  readonly quantize: boolean;
  readonly dtype: FloatDType;
  readonly segments: number;
  readonly objective: PwlObjective;
  /** Bits of W_ih and W_hh (2..8). */
  readonly weightBits: number;
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor;
  readonly biasHh: Tensor;
  readonly inputAbsMax: Tensor;
  readonly hiddenAbsMax: Tensor;
  readonly pwlConfig: Tensor;
  /** Fixed-point PWL tables the runtime uses (the same as QuantLSTM's for these options). */
  readonly tables: { sigmoid: IntPwl; tanh: IntPwl };
  private readonly sigmoidPwl: Pwl;
  private readonly tanhPwl: Pwl;

  constructor(inputSize: number, hiddenSize: number, options: QuantGRUOptions = {}) {
    super();
    for (const [name, v] of [['inputSize', inputSize], ['hiddenSize', hiddenSize]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`QuantGRU: ${name} must be a positive integer, got ${v}`);
    }
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    this.batchFirst = options.batchFirst ?? false;
    this.quantize = options.quantize ?? true;
    this.dtype = options.dtype ?? 'float32';
    this.segments = options.segments ?? 16;
    this.objective = options.objective ?? 'maxError';
    this.weightBits = options.weightBits ?? 8;
    weightMax(this.weightBits);
    const pwlConfig = pwlConfigTensor('QuantGRU', this.segments, this.objective);
    const rows = 3 * hiddenSize;
    this.weightIh = this.registerParameter('weight_ih_l0', zeros([rows, inputSize], this.dtype));
    this.weightHh = this.registerParameter('weight_hh_l0', zeros([rows, hiddenSize], this.dtype));
    this.biasIh = this.registerParameter('bias_ih_l0', zeros([rows], this.dtype));
    this.biasHh = this.registerParameter('bias_hh_l0', zeros([rows], this.dtype));
    this.inputAbsMax = this.registerBuffer('input_absmax', zeros([1]));
    this.hiddenAbsMax = this.registerBuffer('hidden_absmax', zeros([1]));
    this.pwlConfig = this.registerBuffer('pwl_config', pwlConfig);
    const bound = 1 / Math.sqrt(hiddenSize);
    for (const p of this.parameters()) uniform(p, -bound, bound, options.rng ?? globalRng);
    this.tables = lstmPwlTables(this.segments, this.objective);
    this.sigmoidPwl = pwlOfInt(this.tables.sigmoid);
    this.tanhPwl = pwlOfInt(this.tables.tanh);
  }

  /** A QuantGRU holding a float nn.GRU's weights (one layer, one direction, with biases). */
  static fromGRU(gru: GRU, options: Omit<QuantGRUOptions, 'batchFirst' | 'dtype'> = {}): QuantGRU {
    if (gru.numLayers !== 1 || gru.bidirectional || !gru.bias) {
      throw new RangeError(`QuantGRU.fromGRU: needs a one-layer, unidirectional GRU with biases, got ${gru.toString()}`);
    }
    const q = new QuantGRU(gru.inputSize, gru.hiddenSize, { ...options, batchFirst: gru.batchFirst, dtype: gru.dtype });
    q.loadStateDict(gru.stateDict(), { strict: false });
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

  /** W_ih and W_hh fake-quantized at `weightBits` per row (differentiable, straight-through). */
  quantizedWeights(): [Tensor, Tensor] {
    return rowQuantizedWeights(this.weightIh, this.weightHh, this.weightBits);
  }

  /**
   * Runs the sequence: x [L, N, inputSize] ([N, L, inputSize] with batchFirst), optional h0
   * [N, hiddenSize] (zeros by default). Returns [output (x's layout, width hiddenSize), hN].
   */
  forward(x: Tensor, h0?: Tensor): [Tensor, Tensor] {
    if (x.rank !== 3 || x.shape[2] !== this.inputSize) {
      throw new Error(`QuantGRU: expected input ${this.batchFirst ? '[N, L' : '[L, N'}, ${this.inputSize}], got ${shapeText(x.shape)}`);
    }
    if (x.dtype !== this.dtype) throw new TypeError(`QuantGRU: input dtype ${x.dtype} differs from the parameters' ${this.dtype}`);
    const timeAxis = this.batchFirst ? 1 : 0;
    const steps = x.shape[timeAxis]!;
    const batch = x.shape[1 - timeAxis]!;
    const H = this.hiddenSize;
    if (steps === 0) throw new Error(`QuantGRU: the input sequence is empty (shape ${shapeText(x.shape)})`);
    if (h0 && (h0.rank !== 2 || h0.shape[0] !== batch || h0.shape[1] !== H)) throw new Error(`QuantGRU: h0 has shape ${shapeText(h0.shape)}, expected [${batch}, ${H}]`);
    if (h0 && h0.dtype !== this.dtype) throw new TypeError(`QuantGRU: h0 dtype ${h0.dtype} differs from the parameters' ${this.dtype}`);
    return this.quantize ? this.forwardQuantized(x, steps, batch, timeAxis, h0) : this.forwardFloat(x, steps, batch, timeAxis, h0);
  }

  /** Splits the biases: [b_ir + b_hr, b_iz + b_hz] [2H], b_in [H], b_hn [H]. */
  private biasParts(): [Tensor, Tensor, Tensor] {
    const H = this.hiddenSize;
    return [add(narrow(this.biasIh, 0, 0, 2 * H), narrow(this.biasHh, 0, 0, 2 * H)), narrow(this.biasIh, 0, 2 * H, H), narrow(this.biasHh, 0, 2 * H, H)];
  }

  /** The float PWL GRU (see the file comment). */
  private forwardFloat(x: Tensor, steps: number, batch: number, timeAxis: number, h0?: Tensor): [Tensor, Tensor] {
    const H = this.hiddenSize;
    const [bRz, bIn, bHn] = this.biasParts();
    const gx = linear(x, this.weightIh);
    let h = h0 ?? zeros([batch, H], this.dtype);
    const outputs: Tensor[] = [];
    for (let t = 0; t < steps; t++) {
      const [gxRz, gxN] = split(reshape(narrow(gx, timeAxis, t, 1), [batch, 3 * H]), [2 * H, H], 1) as [Tensor, Tensor];
      const [ghRz, ghN] = split(linear(h, this.weightHh), [2 * H, H], 1) as [Tensor, Tensor];
      const [r, z] = split(applyPwl(add(add(gxRz, ghRz), bRz), this.sigmoidPwl), [H, H], 1) as [Tensor, Tensor];
      const n = applyPwl(add(add(gxN, bIn), mul(r, add(ghN, bHn))), this.tanhPwl);
      h = add(mul(sub(1, z), n), mul(z, h));
      outputs.push(h);
    }
    return [stack(outputs, timeAxis), h];
  }

  /** The fake-quant forward: the integer step's values with the float step's gradients. */
  private forwardQuantized(x: Tensor, steps: number, batch: number, timeAxis: number, h0?: Tensor): [Tensor, Tensor] {
    const H = this.hiddenSize;
    const I = this.inputSize;
    const rows = 3 * H;
    if (this.training) observeInput('QuantGRU', this.inputAbsMax, x);
    const sx = this.inputScale;
    const sh = this.hiddenScale;
    const p = integerGruParams(this, sx, sh);
    const xq = fq(x, sx, -Q8_MAX, Q8_MAX);
    const [wih, whh] = this.quantizedWeights();
    const [bRz, bIn, bHn] = this.biasParts();
    // Integer side: x codes time-major [L, N, I], the runtime's GEMM for both products.
    const xCodes = timeMajorCodes(xq, steps, batch, I, this.batchFirst, sx);
    const accX = new Int32Array(steps * batch * rows);
    gemmInt8(steps * batch, rows, I, xCodes, 0, packInt8Weights(p.weightIh, rows, I), accX);
    const packedHh = packInt8Weights(p.weightHh, rows, H);
    const accH = new Int32Array(batch * rows);
    let h = h0 ? fq(h0, sh, -Q8_MAX, Q8_MAX) : zeros([batch, H], this.dtype);
    let hCodes = h0 ? Int8Array.from(h.data, (v) => Math.round(v / sh)) : new Int8Array(batch * H);
    const gx = linear(xq, wih);
    const gate = 2 ** -GATE_FRAC;
    const act = 2 ** -ACT_FRAC;
    const outputs: Tensor[] = [];
    let hiddenMax = 0;
    for (let t = 0; t < steps; t++) {
      gemmInt8(batch, rows, H, hCodes, 0, packedHh, accH);
      const b = gruStepBuffers(H, batch);
      const next = new Int8Array(batch * H);
      for (let n = 0; n < batch; n++) gruCellUpdate(p, accX, (t * batch + n) * rows, accH, n * rows, hCodes, n * H, next, b, n);
      const gxT = integerForward(reshape(narrow(gx, timeAxis, t, 1), [batch, rows]), b.gx, gate, -WIDE, WIDE);
      const ghT = integerForward(linear(h, whh), b.gh, gate, -WIDE, WIDE);
      const [gxRz, gxN] = split(gxT, [2 * H, H], 1) as [Tensor, Tensor];
      const [ghRz, ghN] = split(ghT, [2 * H, H], 1) as [Tensor, Tensor];
      const rzPre = integerForward(add(add(gxRz, ghRz), bRz), b.rzPre, gate, INT16_MIN, INT16_MAX);
      const rz = integerForward(applyPwl(rzPre, this.sigmoidPwl), b.rz, act, -ACT_MAX, ACT_MAX);
      const [r, z] = split(rz, [H, H], 1) as [Tensor, Tensor];
      const hn = integerForward(add(ghN, bHn), b.hn, gate, INT16_MIN, INT16_MAX);
      const nPre = integerForward(add(add(gxN, bIn), mul(r, hn)), b.nPre, gate, INT16_MIN, INT16_MAX);
      const n = integerForward(applyPwl(nPre, this.tanhPwl), b.n, act, -ACT_MAX, ACT_MAX);
      const hReal = add(mul(sub(1, z), n), mul(z, h));
      if (this.training) hiddenMax = hiddenMaxAfter('QuantGRU', hiddenMax, hReal, t, ' (non-finite weights or initial state?)');
      h = integerForward(hReal, next, sh, -Q8_MAX, Q8_MAX);
      hCodes = next;
      outputs.push(h);
    }
    if (this.training) noGrad(() => observeAbsMax(this.hiddenAbsMax, hiddenMax));
    return [stack(outputs, timeAxis), h];
  }

  /** Refuses a state dict whose pwl_config differs from this model's PWL options. */
  protected override checkLoadedState(incoming: ReadonlyMap<string, Tensor>): string[] {
    return pwlConfigProblems('QuantGRU', incoming, this.segments, this.objective);
  }

  override extraRepr(): string {
    return `${this.inputSize}, ${this.hiddenSize}, segments=${this.segments}${this.weightBits === 8 ? '' : `, weightBits=${this.weightBits}`}${this.quantize ? '' : ', quantize=false'}${this.batchFirst ? ', batchFirst=true' : ''}`;
  }
}
