/**
 * An integer-only RNN transducer (Graves 2012) built from iRNN LSTMs: `QuantTransducer` is the
 * fake-quant twin (trainable, loads a float `nn.transducer.Transducer`), `IntTransducer` the
 * integer runtime with an integer greedy decoder. Per (frame t, label position u):
 *
 *   enc_t  = IntLSTM_enc(x)                     int8 h at s_e (x int8 at the encoder's s_x)
 *   pred_u = IntLSTM_pred(E[label_{u−1}])       int8 h at s_p; E the int8 embedding table at the predictor's s_x
 *   e      = clamp(rq(W_e·enc_t; M_e[r]) + b_e, ±2^22)         Q3.12 (int8 × int8 → int32, per-row weight scales)
 *   p      = clamp(rq(W_p·pred_u; M_p[r]), ±2^22)              Q3.12
 *   z      = clamp16(e + p)                                    Q3.12
 *   a      = PWL_tanh(z)                                       Q0.15 (the LSTM's integer tanh table)
 *   j      = clamp8(rq(a; M_j))                                int8 at s_j = 1/127
 *   logits = clamp(rq(W_o·j; M_o[r]) + b_o, ±2^24)             int32 on the grid 2^−12 (one grid for all rows)
 *   label  = argmax logits (first maximum)                     no softmax needed
 *
 * The twin's LSTMs are `QuantLSTM` fake quantization (an independent float simulation, within
 * 1 LSB of IntLSTM, see docs/irnn.md); its joint computes the *values* above with these integer
 * kernels on the int8 codes of its fake-quantized inputs and weights, and the *gradient* of the
 * float joint through the same quantized weights (straight-through, formats.ts `integerForward`),
 * as the LN-LSTM and the attention do. So given equal LSTM outputs the twin's logits equal the
 * runtime's bit for bit.
 */
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/linear.ts';
import { Embedding } from '../../nn/embedding.ts';
import type { Transducer } from '../../nn/transducer/model.ts';
import { LstmPredictor, checkPredictorLabels, withStartSymbol, type TransducerPredictor } from '../../nn/transducer/predictor.ts';
import { checkFrames, greedyDecode, type GreedyOptions, type TransducerScorer } from '../../nn/transducer/greedy.ts';
import { transducerLoss, type Lengths, type TransducerLossOptions } from '../../nn/transducer/loss.ts';
import { noGrad } from '../../autograd/index.ts';
import { add, concat, gather, globalRng, linear, reshape, Tensor, type Rng } from '../../tensor/index.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { quantizeMultiplier } from '../../runtime/requantize.ts';
import { gemmInt8, packInt8Weights, type PackedWeights } from '../../runtime/kernels/index.ts';
import { ACT_FRAC, ACT_MAX, GATE_FRAC, INT16_MAX, INT16_MIN, integerForward, packedWeightBytes, Q8_MAX, rowScales, WIDE, fq, weightMax } from './formats.ts';
import { applyPwl, evalIntPwlIndexed, pwlOfInt, pwlSegmentIndex, type IntPwl, type Pwl } from './pwl.ts';
import { lstmPwlTables, QuantLSTM } from './qlstm.ts';
import { convertQuantLSTM, requantizeExact, shiftPowers, type IntLSTM } from './intlstm.ts';

/** Fractional bits of the joint projections, their sum and the logits (Q3.12 grid, as the LSTM gates). */
export const JOINT_FRAC = GATE_FRAC;
const JOINT_UNITS = 2 ** JOINT_FRAC;
/** Clamp of each projection (with its bias): two of them add exactly in float32 and in int32. */
export const PROJECTION_MAX = 2 ** 22;
/** Real value of one step of the int8 joint activation j = tanh(·) (tanh lies in [−1, 1]). */
export const JOINT_SCALE = Math.fround(1 / Q8_MAX);

/** The integer joint network (what `IntTransducer` holds besides the two LSTMs and the embedding). */
export interface IntJointParams {
  readonly encoderSize: number;
  readonly predictorSize: number;
  readonly jointSize: number;
  readonly numOutputs: number;
  /** Bits of the two projections' weights and of the output layer's (2..8); codes are int8 in ±(2^(b−1)−1). */
  readonly weightBits: number;
  readonly outputWeightBits: number;
  /** [J, E] int8, per-row W_e·enc → Q3.12 multipliers, bias Q3.12 [J]. */
  readonly encoderWeight: Int8Array;
  readonly encoderMultiplier: Int32Array;
  readonly encoderShift: Int32Array;
  readonly encoderBias: Int32Array;
  /** [J, P] int8 and per-row multipliers (no bias). */
  readonly predictorWeight: Int8Array;
  readonly predictorMultiplier: Int32Array;
  readonly predictorShift: Int32Array;
  /** tanh table (Q3.12 → Q0.15) and the Q0.15 → int8 multiplier (2^−15 / JOINT_SCALE). */
  readonly tanh: IntPwl;
  readonly jointMultiplier: number;
  readonly jointShift: number;
  /** [V+1, J] int8, per-row multipliers to the logit grid 2^−12, bias on that grid [V+1]. */
  readonly outputWeight: Int8Array;
  readonly outputMultiplier: Int32Array;
  readonly outputShift: Int32Array;
  readonly outputBias: Int32Array;
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/**
 * out[m, r] = clamp(rq(Σ_k W[r, k]·codes[m, k]; M[r]) + bias[r], ±max) for M rows of K int8 codes
 * (W [R, K] packed). int32 out [M, R]. rq is requantize.ts's exact round(acc·M0·2^−n)
 * (`requantizeExact`, equal to `requantizeScalar`).
 */
function projectRows(codes: Int8Array, M: number, K: number, w: PackedWeights, R: number, multiplier: Int32Array, shift: Int32Array, bias: Int32Array | null, max: number): Int32Array {
  const acc = new Int32Array(M * R);
  gemmInt8(M, R, K, codes, 0, w, acc);
  const { unit, half } = shiftPowers(shift);
  const requantize = requantizeExact;
  for (let m = 0; m < M; m++) {
    for (let r = 0; r < R; r++) {
      const i = m * R + r;
      acc[i] = clamp(requantize(acc[i]!, multiplier[r]!, shift[r]!, unit[r]!, half[r]!) + (bias ? bias[r]! : 0), -max, max);
    }
  }
  return acc;
}

const segmentIndexCache = new WeakMap<IntPwl, Uint8Array>();

/** The joint's elementwise integer stage of e + p codes: z (Q3.12), a = PWL_tanh(z) (Q0.15), j (int8). */
function jointActivation(sum: ArrayLike<number>, p: IntJointParams): { z: Int32Array; a: Int32Array; j: Int8Array } {
  const n = sum.length;
  const z = new Int32Array(n);
  const a = new Int32Array(n);
  const j = new Int8Array(n);
  let index = segmentIndexCache.get(p.tanh);
  if (!index) segmentIndexCache.set(p.tanh, (index = pwlSegmentIndex(p.tanh)));
  const { unit, half } = shiftPowers([p.jointShift]);
  const [u, h, m, shift] = [unit[0]!, half[0]!, p.jointMultiplier, p.jointShift];
  // Imported bindings read through accessors in some loaders: local copies for the hot loop.
  const [zMin, zMax, jMax, tanh, pwl, requantize] = [INT16_MIN, INT16_MAX, Q8_MAX, p.tanh, evalIntPwlIndexed, requantizeExact];
  for (let i = 0; i < n; i++) {
    const zi = clamp(sum[i]!, zMin, zMax);
    const ai = pwl(tanh, index, zi);
    z[i] = zi;
    a[i] = ai;
    j[i] = clamp(requantize(ai, m, shift, u, h), -jMax, jMax);
  }
  return { z, a, j };
}

/** A [rows, cols] weight per-row symmetric at `bits`: the fake-quantized weight (value code·scale), its codes and scales. */
function quantizeWeight(w: Tensor, bits: number): { hat: Tensor; codes: Int8Array; scales: Float32Array } {
  const top = weightMax(bits);
  const scales = rowScales(w, bits);
  const hat = fq(w, scales, -top, top);
  const cols = w.shape[1]!;
  // The codes are read back from the fake-quantized values, so twin and runtime use the same integers.
  const codes = Int8Array.from(hat.data, (v, i) => Math.round(v / scales[(i / cols) | 0]!));
  return { hat, codes, scales };
}

/** Options of {@link QuantTransducer} (sizes as `nn.transducer.Transducer`'s defaults). */
export interface QuantTransducerOptions {
  /** Features per frame F. */
  readonly inputSize: number;
  /** Labels V (blank = V). */
  readonly numLabels: number;
  readonly encoderSize?: number;
  readonly embeddingSize?: number;
  readonly predictorSize?: number;
  readonly jointSize?: number;
  /** Bits of every LSTM and joint-projection weight (2..8, default 8). */
  readonly weightBits?: number;
  /** Bits of the joint's output layer (default: weightBits). */
  readonly outputWeightBits?: number;
  /** PWL segments of sigmoid/tanh (default 16). */
  readonly segments?: number;
  readonly rng?: Rng;
}

/** The joint of {@link QuantTransducer}: float parameters, integer values (see the file comment). */
export class QuantTransducerJoint extends Module {
  readonly jointSize: number;
  readonly numOutputs: number;
  readonly weightBits: number;
  readonly outputWeightBits: number;
  readonly encoderProjection: Linear;
  readonly predictorProjection: Linear;
  readonly output: Linear;
  readonly tanhTable: IntPwl;
  private readonly tanhPwl: Pwl;

  constructor(encoderSize: number, predictorSize: number, jointSize: number, numOutputs: number, options: { weightBits?: number; outputWeightBits?: number; segments?: number; rng?: Rng } = {}) {
    super();
    this.jointSize = jointSize;
    this.numOutputs = numOutputs;
    this.weightBits = options.weightBits ?? 8;
    this.outputWeightBits = options.outputWeightBits ?? this.weightBits;
    weightMax(this.weightBits);
    weightMax(this.outputWeightBits);
    const rng = options.rng ?? globalRng;
    this.encoderProjection = this.registerModule('encoderProjection', new Linear(encoderSize, jointSize, { rng }));
    this.predictorProjection = this.registerModule('predictorProjection', new Linear(predictorSize, jointSize, { bias: false, rng }));
    this.output = this.registerModule('output', new Linear(jointSize, numOutputs, { rng }));
    this.tanhTable = lstmPwlTables(options.segments ?? 16).tanh;
    this.tanhPwl = pwlOfInt(this.tanhTable);
  }

  /** The integer joint at the encoder and predictor h scales (the converter's, and every forward's). */
  intParams(encoderScale: number, predictorScale: number): IntJointParams {
    const e = quantizeWeight(this.encoderProjection.weight, this.weightBits);
    const p = quantizeWeight(this.predictorProjection.weight, this.weightBits);
    const o = quantizeWeight(this.output.weight, this.outputWeightBits);
    const rows = (scales: Float32Array, inputScale: number): { multiplier: Int32Array; shift: Int32Array } => {
      const multiplier = new Int32Array(scales.length);
      const shift = new Int32Array(scales.length);
      scales.forEach((s, r) => {
        const m = quantizeMultiplier(s * inputScale * 2 ** JOINT_FRAC);
        multiplier[r] = m.multiplier;
        shift[r] = m.shift;
      });
      return { multiplier, shift };
    };
    const grid = (b: Tensor, max: number): Int32Array => Int32Array.from(b.data, (v) => clamp(roundHalfEven(Math.fround(v) * 2 ** JOINT_FRAC), -max, max));
    const enc = rows(e.scales, encoderScale);
    const pred = rows(p.scales, predictorScale);
    const out = rows(o.scales, JOINT_SCALE);
    const joint = quantizeMultiplier(2 ** -ACT_FRAC / JOINT_SCALE);
    return {
      encoderSize: this.encoderProjection.inFeatures, predictorSize: this.predictorProjection.inFeatures, jointSize: this.jointSize, numOutputs: this.numOutputs,
      weightBits: this.weightBits, outputWeightBits: this.outputWeightBits,
      encoderWeight: e.codes, encoderMultiplier: enc.multiplier, encoderShift: enc.shift, encoderBias: grid(this.encoderProjection.bias!, PROJECTION_MAX),
      predictorWeight: p.codes, predictorMultiplier: pred.multiplier, predictorShift: pred.shift,
      tanh: this.tanhTable, jointMultiplier: joint.multiplier, jointShift: joint.shift,
      outputWeight: o.codes, outputMultiplier: out.multiplier, outputShift: out.shift, outputBias: grid(this.output.bias!, WIDE),
    };
  }

  /** enc [..., E] on the int8 grid `scale` → e [..., J] on 2^−12 (integer values, float gradient). */
  projectEncoder(encoded: Tensor, scale: number): Tensor {
    const params = this.intParams(scale, 1);
    const hat = quantizeWeight(this.encoderProjection.weight, this.weightBits).hat;
    const bias = fq(this.encoderProjection.bias!, 2 ** -JOINT_FRAC, -PROJECTION_MAX, PROJECTION_MAX);
    const E = encoded.shape[encoded.rank - 1]!;
    const codes = Int8Array.from(encoded.data, (v) => Math.round(v / scale));
    const values = projectRows(codes, codes.length / E, E, packInt8Weights(params.encoderWeight, this.jointSize, E), this.jointSize, params.encoderMultiplier, params.encoderShift, params.encoderBias, PROJECTION_MAX);
    return integerForward(add(linear(encoded, hat), bias), values, 2 ** -JOINT_FRAC, -PROJECTION_MAX, PROJECTION_MAX);
  }

  /** pred [..., P] on the int8 grid `scale` → p [..., J] on 2^−12. */
  projectPredictor(predicted: Tensor, scale: number): Tensor {
    const params = this.intParams(1, scale);
    const hat = quantizeWeight(this.predictorProjection.weight, this.weightBits).hat;
    const P = predicted.shape[predicted.rank - 1]!;
    const codes = Int8Array.from(predicted.data, (v) => Math.round(v / scale));
    const values = projectRows(codes, codes.length / P, P, packInt8Weights(params.predictorWeight, this.jointSize, P), this.jointSize, params.predictorMultiplier, params.predictorShift, null, PROJECTION_MAX);
    return integerForward(linear(predicted, hat), values, 2 ** -JOINT_FRAC, -PROJECTION_MAX, PROJECTION_MAX);
  }

  /** enc [N, T, E] on the int8 grid `encoderScale`, pred [N, U+1, P] on `predictorScale` → logits [N, T, U+1, V+1] on 2^−12. */
  forward(encoded: Tensor, encoderScale: number, predicted: Tensor, predictorScale: number): Tensor {
    if (encoded.rank !== 3 || predicted.rank !== 3 || encoded.shape[0] !== predicted.shape[0]) {
      throw new RangeError(`QuantTransducerJoint: expected encoder [N, T, E] and predictor [N, U+1, P] outputs, got [${encoded.shape.join(', ')}] and [${predicted.shape.join(', ')}]`);
    }
    const [n, t] = encoded.shape as [number, number];
    const u1 = predicted.shape[1]!;
    const J = this.jointSize;
    const e = reshape(this.projectEncoder(encoded, encoderScale), [n, t, 1, J]);
    const p = reshape(this.projectPredictor(predicted, predictorScale), [n, 1, u1, J]);
    return this.combine(e, p);
  }

  /** e and p (broadcasting shapes, last dim J, on 2^−12) → logits [..., V+1] on 2^−12. */
  combine(encoderProjected: Tensor, predictorProjected: Tensor): Tensor {
    const params = this.intParams(1, 1);
    const sum = add(encoderProjected, predictorProjected);
    const sumCodes = new Int32Array(sum.size);
    const values = sum.data;
    for (let i = 0; i < sumCodes.length; i++) sumCodes[i] = Math.round(values[i]! * JOINT_UNITS);
    const { z, a, j } = jointActivation(sumCodes, params);
    const zT = integerForward(sum, z, 2 ** -JOINT_FRAC, INT16_MIN, INT16_MAX);
    const aT = integerForward(applyPwl(zT, this.tanhPwl), a, 2 ** -ACT_FRAC, -ACT_MAX, ACT_MAX);
    const jT = integerForward(aT, j, JOINT_SCALE, -Q8_MAX, Q8_MAX);
    const hat = quantizeWeight(this.output.weight, this.outputWeightBits).hat;
    const bias = fq(this.output.bias!, 2 ** -JOINT_FRAC, -WIDE, WIDE);
    const J = this.jointSize;
    const logits = projectRows(j, j.length / J, J, packInt8Weights(params.outputWeight, this.numOutputs, J), this.numOutputs, params.outputMultiplier, params.outputShift, params.outputBias, WIDE);
    return integerForward(add(linear(jT, hat), bias), logits, 2 ** -JOINT_FRAC, -WIDE, WIDE);
  }
}

/** The state of {@link QuantLstmPredictor}: h and c [B, P] (on the int8 grid s_h and Q4.11). */
export interface QuantPredictorState {
  readonly h: Tensor;
  readonly c: Tensor;
}

/**
 * The prediction network of {@link QuantTransducer}: a float embedding table whose rows the
 * QuantLSTM's input fake quantization rounds to int8 at its s_x (so the runtime's table is int8
 * at that scale), then the QuantLSTM (batchFirst). State names match `LstmPredictor`'s.
 */
export class QuantLstmPredictor extends Module implements TransducerPredictor<QuantPredictorState> {
  readonly numOutputs: number;
  readonly blank: number;
  readonly outputSize: number;
  readonly embedding: Embedding;
  readonly lstm: QuantLSTM;

  constructor(numOutputs: number, options: { embeddingSize?: number; hiddenSize?: number; weightBits?: number; segments?: number; rng?: Rng } = {}) {
    super();
    if (!Number.isInteger(numOutputs) || numOutputs < 2) throw new RangeError(`QuantLstmPredictor: numOutputs must be an integer >= 2, got ${numOutputs}`);
    const embeddingSize = options.embeddingSize ?? 32;
    this.numOutputs = numOutputs;
    this.blank = numOutputs - 1;
    this.outputSize = options.hiddenSize ?? 64;
    this.embedding = this.registerModule('embedding', new Embedding(numOutputs, embeddingSize, { rng: options.rng }));
    this.lstm = this.registerModule('lstm', new QuantLSTM(embeddingSize, this.outputSize, { batchFirst: true, weightBits: options.weightBits, segments: options.segments, rng: options.rng }));
  }

  forward(labels: Tensor): Tensor {
    return this.lstm.forward(this.embedding.forward(withStartSymbol(labels, this.numOutputs, this.blank, 'QuantLstmPredictor')))[0];
  }

  initialState(batch: number): QuantPredictorState {
    if (!Number.isInteger(batch) || batch < 1) throw new RangeError(`QuantLstmPredictor: batch must be a positive integer, got ${batch}`);
    const zero = (): Tensor => new Tensor(new Float32Array(batch * this.outputSize), [batch, this.outputSize]);
    return { h: zero(), c: zero() };
  }

  step(prevLabels: Int32Array, state: QuantPredictorState): { output: Tensor; state: QuantPredictorState } {
    const batch = prevLabels.length;
    checkPredictorLabels(prevLabels, this.numOutputs, 'QuantLstmPredictor', 'prevLabels');
    const embedded = this.embedding.forward(new Tensor(Int32Array.from(prevLabels), [batch, 1]));
    const [output, [h, c]] = this.lstm.forward(embedded, [state.h, state.c]);
    return { output: reshape(output, [batch, this.outputSize]), state: { h, c } };
  }

  selectState(state: QuantPredictorState, indices: readonly number[]): QuantPredictorState {
    const index = new Tensor(Int32Array.from(indices), [indices.length]);
    return { h: gather(state.h, index, 0), c: gather(state.c, index, 0) };
  }

  joinStates(states: readonly QuantPredictorState[]): QuantPredictorState {
    if (states.length === 1) return states[0]!;
    return { h: concat(states.map((s) => s.h), 0), c: concat(states.map((s) => s.c), 0) };
  }
}

/**
 * The fake-quant twin of an integer RNN transducer: encoder QuantLSTM over the frames (batchFirst),
 * predictor {@link QuantLstmPredictor}, joint {@link QuantTransducerJoint}. Train it like
 * `nn.transducer.Transducer` (`loss`), decode with `greedyDecode`, convert with
 * `convertQuantTransducer`. Blank is the last output index, V.
 */
export class QuantTransducer extends Module {
  readonly inputSize: number;
  readonly numLabels: number;
  readonly blank: number;
  readonly weightBits: number;
  readonly encoder: QuantLSTM;
  readonly predictor: QuantLstmPredictor;
  readonly joint: QuantTransducerJoint;

  constructor(options: QuantTransducerOptions) {
    super();
    const { inputSize, numLabels } = options;
    if (!Number.isInteger(inputSize) || inputSize < 1) throw new RangeError(`QuantTransducer: inputSize must be a positive integer, got ${inputSize}`);
    if (!Number.isInteger(numLabels) || numLabels < 1) throw new RangeError(`QuantTransducer: numLabels must be a positive integer, got ${numLabels}`);
    this.inputSize = inputSize;
    this.numLabels = numLabels;
    this.blank = numLabels;
    this.weightBits = options.weightBits ?? 8;
    const encoderSize = options.encoderSize ?? 128;
    const lstmOptions = { weightBits: this.weightBits, segments: options.segments, rng: options.rng };
    this.encoder = this.registerModule('encoder', new QuantLSTM(inputSize, encoderSize, { ...lstmOptions, batchFirst: true }));
    this.predictor = this.registerModule('predictor', new QuantLstmPredictor(numLabels + 1, { ...lstmOptions, embeddingSize: options.embeddingSize, hiddenSize: options.predictorSize }));
    this.joint = this.registerModule('joint', new QuantTransducerJoint(encoderSize, this.predictor.outputSize, options.jointSize ?? 128, numLabels + 1, {
      ...lstmOptions, outputWeightBits: options.outputWeightBits,
    }));
  }

  /**
   * The twin of a trained float Transducer (same weights): its encoder must be one unidirectional
   * LSTM layer and its predictor a one-layer `LstmPredictor`. Fine-tune it in training mode (which
   * also records the int8 ranges of x and h) before converting.
   */
  static fromTransducer(model: Transducer, options: Pick<QuantTransducerOptions, 'weightBits' | 'outputWeightBits' | 'segments'> = {}): QuantTransducer {
    const predictor = model.predictor;
    if (model.encoder.numLayers !== 1 || model.encoder.bidirectional) throw new RangeError(`QuantTransducer.fromTransducer: needs a one-layer unidirectional encoder, got ${model.encoder.toString()}`);
    if (!(predictor instanceof LstmPredictor) || predictor.lstm.numLayers !== 1) throw new RangeError('QuantTransducer.fromTransducer: needs a one-layer LstmPredictor');
    const twin = new QuantTransducer({
      ...options, inputSize: model.inputSize, numLabels: model.numLabels, encoderSize: model.encoder.hiddenSize,
      embeddingSize: predictor.embedding.weight.shape[1], predictorSize: predictor.outputSize, jointSize: model.joint.jointSize,
    });
    twin.loadStateDict(model.stateDict(), { strict: false });
    return twin;
  }

  /** features [N, T, F] → encoder h [N, T, E] and the h scale it is on (read before the forward's observer update). */
  encode(features: Tensor): { output: Tensor; scale: number } {
    if (features.rank !== 3 || features.shape[2] !== this.inputSize) throw new RangeError(`QuantTransducer: features must be [N, T, ${this.inputSize}], got [${features.shape.join(', ')}]`);
    const scale = this.encoder.hiddenScale;
    return { output: this.encoder.forward(features)[0], scale };
  }

  /** features [N, T, F], labels [N, U] int32 → logits [N, T, U+1, V+1] (on the grid 2^−12). */
  forward(features: Tensor, labels: Tensor): Tensor {
    const enc = this.encode(features);
    const predictorScale = this.predictor.lstm.hiddenScale;
    return this.joint.forward(enc.output, enc.scale, this.predictor.forward(labels), predictorScale);
  }

  /** The transducer loss of `forward` (blank = V; default reduction: batch mean). */
  loss(features: Tensor, featureLengths: Lengths, labels: Tensor, labelLengths: Lengths, options: Omit<TransducerLossOptions, 'blank'> = {}): Tensor {
    return transducerLoss(this.forward(features, labels), labels, featureLengths, labelLengths, { ...options, blank: this.blank });
  }

  /** The decoders' view (call `eval()` first: the h scales must not move while decoding). */
  scorer(): TransducerScorer<QuantPredictorState> {
    return {
      predictor: this.predictor,
      blank: this.blank,
      joint: (frames, predictorOutputs) => this.joint.combine(frames, this.joint.projectPredictor(predictorOutputs, this.predictor.lstm.hiddenScale)),
    };
  }

  /** Encoder outputs projected into the joint space [N, T, J] (Q3.12 values). */
  encodeForDecoding(features: Tensor): Tensor {
    const { output, scale } = this.encode(features);
    return this.joint.projectEncoder(output, scale);
  }

  /** Fake-quant greedy decoding (`nn.transducer`'s greedyDecode on this model); call `eval()` first. */
  greedyDecode(features: Tensor, featureLengths: Lengths, options: GreedyOptions = {}): number[][] {
    return greedyDecode(this.scorer(), noGrad(() => this.encodeForDecoding(features)), featureLengths, options);
  }
}

/** The parts of an integer transducer. */
export interface IntTransducerParts {
  readonly numLabels: number;
  readonly encoder: IntLSTM;
  readonly predictor: IntLSTM;
  /** [V+1, embeddingSize] int8 codes at the predictor's input scale (row V = blank, the start symbol). */
  readonly embedding: Int8Array;
  readonly joint: IntJointParams;
}

/**
 * The integer runtime of a {@link QuantTransducer}: integer-only from the int8 frames to the
 * argmax of the int32 logits (formulas in the file comment). Real numbers appear only in
 * `quantizeFeatures`.
 */
export class IntTransducer {
  readonly numLabels: number;
  readonly blank: number;
  readonly encoder: IntLSTM;
  readonly predictor: IntLSTM;
  readonly embedding: Int8Array;
  readonly joint: IntJointParams;
  private readonly packed: { encoder: PackedWeights; predictor: PackedWeights; output: PackedWeights };

  constructor(parts: IntTransducerParts) {
    const { encoder, predictor, embedding, joint, numLabels } = parts;
    const V1 = numLabels + 1;
    const problems: string[] = [];
    if (joint.numOutputs !== V1) problems.push(`joint.numOutputs ${joint.numOutputs} ≠ numLabels + 1 = ${V1}`);
    if (joint.encoderSize !== encoder.hiddenSize) problems.push(`joint.encoderSize ${joint.encoderSize} ≠ encoder hidden size ${encoder.hiddenSize}`);
    if (joint.predictorSize !== predictor.hiddenSize) problems.push(`joint.predictorSize ${joint.predictorSize} ≠ predictor hidden size ${predictor.hiddenSize}`);
    if (embedding.length !== V1 * predictor.inputSize) problems.push(`embedding holds ${embedding.length} codes, expected (V+1)·inputSize = ${V1 * predictor.inputSize}`);
    const J = joint.jointSize;
    const lengths: [string, number, number][] = [
      ['encoderWeight', joint.encoderWeight.length, J * joint.encoderSize], ['predictorWeight', joint.predictorWeight.length, J * joint.predictorSize],
      ['outputWeight', joint.outputWeight.length, V1 * J], ['encoderMultiplier', joint.encoderMultiplier.length, J], ['encoderShift', joint.encoderShift.length, J],
      ['encoderBias', joint.encoderBias.length, J], ['predictorMultiplier', joint.predictorMultiplier.length, J], ['predictorShift', joint.predictorShift.length, J],
      ['outputMultiplier', joint.outputMultiplier.length, V1], ['outputShift', joint.outputShift.length, V1], ['outputBias', joint.outputBias.length, V1],
    ];
    for (const [name, got, want] of lengths) if (got !== want) problems.push(`joint.${name} holds ${got} values, expected ${want}`);
    if (problems.length > 0) throw new RangeError(`IntTransducer: ${problems.join('; ')}`);
    this.numLabels = numLabels;
    this.blank = numLabels;
    this.encoder = encoder;
    this.predictor = predictor;
    this.embedding = embedding;
    this.joint = joint;
    this.packed = {
      encoder: packInt8Weights(joint.encoderWeight, J, joint.encoderSize),
      predictor: packInt8Weights(joint.predictorWeight, J, joint.predictorSize),
      output: packInt8Weights(joint.outputWeight, V1, J),
    };
  }

  /**
   * Bytes of the integer model: both LSTMs (`IntLSTM.byteLength`, weights packed), the int8
   * embedding, the joint's weights packed at their bit widths and its int32 per-row parameters.
   */
  get byteLength(): number {
    const j = this.joint;
    const weights = packedWeightBytes(j.encoderWeight.length, j.weightBits) + packedWeightBytes(j.predictorWeight.length, j.weightBits) + packedWeightBytes(j.outputWeight.length, j.outputWeightBits);
    const rows = (3 * j.jointSize + 3 * j.numOutputs) * 4 + 2 * j.jointSize * 4;
    const tanh = (j.tanh.knots.length + j.tanh.values.length + j.tanh.slopes.length) * 4;
    return this.encoder.byteLength + this.predictor.byteLength + this.embedding.length + weights + rows + tanh + 8;
  }

  /** Float frames [N, T, F] (batch-major) → int8 codes time-major [T, N, F] at the encoder's input scale (`IntLSTM.quantizeInput`). */
  quantizeFeatures(features: Tensor): Int8Array {
    const [N, T, F] = features.shape as [number, number, number];
    if (features.rank !== 3 || F !== this.encoder.inputSize) throw new RangeError(`IntTransducer: features must be [N, T, ${this.encoder.inputSize}], got [${features.shape.join(', ')}]`);
    const codes = this.encoder.quantizeInput(features.data);
    const out = new Int8Array(codes.length);
    for (let n = 0; n < N; n++) for (let t = 0; t < T; t++) out.set(codes.subarray((n * T + t) * F, (n * T + t + 1) * F), (t * N + n) * F);
    return out;
  }

  /** Encoder over int8 frames [T, N, F] → e = the projected encoder [T, N, J] (Q3.12 int32). */
  encodeCodes(x: Int8Array, steps: number, batch: number): Int32Array {
    const { output } = this.encoder.run(x, steps, batch);
    const j = this.joint;
    return projectRows(output, steps * batch, j.encoderSize, this.packed.encoder, j.jointSize, j.encoderMultiplier, j.encoderShift, j.encoderBias, PROJECTION_MAX);
  }

  /** One predictor step for `labels` from `state` (h int8, c int16, each [B·P]): new state and p = the projected output [B, J]. */
  predictorStep(labels: ArrayLike<number>, state?: { h: Int8Array; c: Int16Array }): { h: Int8Array; c: Int16Array; projected: Int32Array } {
    const B = labels.length;
    const E = this.predictor.inputSize;
    checkPredictorLabels(labels, this.numLabels + 1, 'IntTransducer', 'labels');
    const x = new Int8Array(B * E);
    for (let b = 0; b < B; b++) x.set(this.embedding.subarray(labels[b]! * E, (labels[b]! + 1) * E), b * E);
    const { state: next } = this.predictor.run(x, 1, B, state);
    const j = this.joint;
    const projected = projectRows(next.h, B, j.predictorSize, this.packed.predictor, j.jointSize, j.predictorMultiplier, j.predictorShift, null, PROJECTION_MAX);
    return { h: next.h, c: next.c, projected };
  }

  /** Logits [B, V+1] (int32 on 2^−12) of B rows of e [B·J] and p [B·J] codes. */
  logitsOf(e: ArrayLike<number>, p: ArrayLike<number>): Int32Array {
    const J = this.joint.jointSize;
    const sum = new Int32Array(e.length);
    for (let i = 0; i < sum.length; i++) sum[i] = e[i]! + p[i]!;
    const { j } = jointActivation(sum, this.joint);
    return projectRows(j, sum.length / J, J, this.packed.output, this.joint.numOutputs, this.joint.outputMultiplier, this.joint.outputShift, this.joint.outputBias, WIDE);
  }

  /** Teacher-forced logits (for checks): features [N, T, F], labels [N, U] int32 → int32 [N, T, U+1, V+1] on 2^−12. */
  logits(features: Tensor, labels: Tensor): Int32Array {
    const [N, T] = features.shape as [number, number, number];
    const input = withStartSymbol(labels, this.numLabels + 1, this.blank, 'IntTransducer');
    const U1 = input.shape[1]!;
    if (input.shape[0] !== N) throw new RangeError(`IntTransducer: ${input.shape[0]} label rows for ${N} feature rows`);
    const e = this.encodeCodes(this.quantizeFeatures(features), T, N);
    const J = this.joint.jointSize;
    const V1 = this.numLabels + 1;
    const p = new Int32Array(N * U1 * J);
    let state: { h: Int8Array; c: Int16Array } | undefined;
    for (let u = 0; u < U1; u++) {
      const step = this.predictorStep(Array.from({ length: N }, (_, n) => input.data[n * U1 + u]!), state);
      state = step;
      for (let n = 0; n < N; n++) p.set(step.projected.subarray(n * J, (n + 1) * J), (n * U1 + u) * J);
    }
    const out = new Int32Array(N * T * U1 * V1);
    const eRows = new Int32Array(U1 * J);
    for (let n = 0; n < N; n++) {
      for (let t = 0; t < T; t++) {
        for (let u = 0; u < U1; u++) eRows.set(e.subarray((t * N + n) * J, (t * N + n + 1) * J), u * J);
        out.set(this.logitsOf(eRows, p.subarray(n * U1 * J, (n + 1) * U1 * J)), (n * T + t) * U1 * V1);
      }
    }
    return out;
  }

  /**
   * Integer greedy decoding, the same procedure as `nn.transducer.greedyDecode`: per frame, the
   * argmax of the int32 logits (first maximum); a label is emitted, fed to the predictor and the
   * frame scored again, until blank or `maxSymbolsPerFrame` labels. features [N, T, F] float
   * (quantized once by `quantizeFeatures`), lengths [N].
   */
  greedyDecode(features: Tensor, lengths: Lengths, options: GreedyOptions = {}): number[][] {
    const lens = checkFrames(features, lengths, 'IntTransducer.greedyDecode');
    const maxSymbols = options.maxSymbolsPerFrame ?? 5;
    if (!Number.isInteger(maxSymbols) || maxSymbols < 1) throw new RangeError(`IntTransducer.greedyDecode: maxSymbolsPerFrame must be a positive integer, got ${maxSymbols}`);
    const [N, T] = features.shape as [number, number, number];
    const maxT = Math.max(...lens);
    const e = this.encodeCodes(this.quantizeFeatures(features), T, N);
    const J = this.joint.jointSize;
    const P = this.predictor.hiddenSize;
    const V1 = this.numLabels + 1;
    let pred = this.predictorStep(new Int32Array(N).fill(this.blank));
    const hyps: number[][] = Array.from({ length: N }, () => []);
    const emitted = new Int32Array(N);
    for (let t = 0; t < maxT; t++) {
      const frame = e.subarray(t * N * J, (t + 1) * N * J);
      for (let s = 0; s < maxSymbols; s++) {
        const logits = this.logitsOf(frame, pred.projected);
        const rows: number[] = [];
        for (let b = 0; b < N; b++) {
          let best = 0;
          for (let k = 1; k < V1; k++) if (logits[b * V1 + k]! > logits[b * V1 + best]!) best = k;
          emitted[b] = t < lens[b]! && best !== this.blank ? best : this.blank;
          if (emitted[b] !== this.blank) rows.push(b);
        }
        if (rows.length === 0) break;
        const h = new Int8Array(rows.length * P);
        const c = new Int16Array(rows.length * P);
        rows.forEach((b, i) => {
          h.set(pred.h.subarray(b * P, (b + 1) * P), i * P);
          c.set(pred.c.subarray(b * P, (b + 1) * P), i * P);
          hyps[b]!.push(emitted[b]!);
        });
        const stepped = this.predictorStep(rows.map((b) => emitted[b]!), { h, c });
        rows.forEach((b, i) => {
          pred.h.set(stepped.h.subarray(i * P, (i + 1) * P), b * P);
          pred.c.set(stepped.c.subarray(i * P, (i + 1) * P), b * P);
          pred.projected.set(stepped.projected.subarray(i * J, (i + 1) * J), b * J);
        });
      }
    }
    return hyps;
  }
}

/**
 * The IntTransducer of a trained QuantTransducer: both LSTMs by `convertQuantLSTM`, the
 * embedding table rounded to int8 at the predictor's input scale (as its fake quantization does),
 * and the joint's integer parameters at the two h scales.
 */
export function convertQuantTransducer(model: QuantTransducer): IntTransducer {
  const encoder = convertQuantLSTM(model.encoder);
  const predictor = convertQuantLSTM(model.predictor.lstm);
  const s = predictor.params.inputScale;
  const table = noGrad(() => fq(model.predictor.embedding.weight, s, -Q8_MAX, Q8_MAX));
  const embedding = Int8Array.from(table.data, (v) => Math.round(v / s));
  return new IntTransducer({
    numLabels: model.numLabels, encoder, predictor, embedding,
    joint: model.joint.intParams(encoder.params.hiddenScale, predictor.params.hiddenScale),
  });
}
