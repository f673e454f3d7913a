/**
 * convert(model) → IntModel: captures the graph of a prepared (fake-quant) model and turns every
 * QuantConv2d / QuantConvBn2d / QuantLinear into an integer layer (a QuantConv1d / QuantConvBn1d,
 * being a QuantConv2d / QuantConvBn2d on height 1, into a conv2d node with `conv.conv1d: true` that
 * takes and gives [N, C, L] activations).
 *
 * Graph capture: the model's forward must apply its leaf modules in registration order, each on
 * the model input or earlier leaves' outputs (a chain for lenet5, mlp, cnn and any Sequential; a
 * DAG with `nn.Add` merges for resnet8); a probe forward records that graph and refuses anything
 * else (./capture.ts, see `convert`). Leaves are walked in `namedModules()` order; a QuantLayer or
 * a QuantAdd counts as one leaf. Supported leaves: the quantized layers, QuantAdd, ReLU, ReLU6, MaxPool2d, AvgPool2d,
 * AdaptiveAvgPool2d, Flatten, Identity, Dropout (no-op at inference) and a BatchNorm1d/2d right
 * after a quantized layer (folded into that layer's output stage: its per-channel scale multiplies
 * the requantization ratio, its shift goes into the int32 bias, so the integer weights stay exactly
 * those of the fake-quant model). Anything else is refused with an error naming the module.
 *
 * Domains: the values between layer L and layer L+1 are integers in L+1's input quantization
 * (the prepared model quantizes each layer's INPUT). Monotone ops (ReLU, ReLU6, max pooling,
 * flatten) commute with that quantization, so they run on integers exactly; ReLU/ReLU6 become the
 * clamp bounds of the preceding requantization when only max pooling / flatten sit between.
 * Average pooling runs on integers: the layer before it requantizes with 8 extra fractional bits
 * into a wide range, the pooling divides with one round-half-even back to the next layer's scale,
 * then clamps to [qmin, qmax] — the order of the float model (average, then quantize).
 * Binary (sign) inputs: the producing layer emits ±1 by an integer threshold on its accumulator.
 *
 * Verification: with `options.sample`, the sample batch runs through the fake-quant model (its
 * float32 forward in eval mode, and the same simulation in float64, see ./simulate.ts) and the
 * IntModel; the report (argmax agreement, logit difference in output LSBs) is stored on
 * `intModel.verification`, and convert throws when a logit is farther from the float32 forward
 * than quantization explains (`AgreementReport.float32ToleranceLsb`) or argmax agreement with it
 * is below `minAgreement` (default 0.99; a sample counts as agreeing too when the forward is the
 * captured chain on it and only float32 rounding changed its argmax, see
 * `AgreementReport.argmaxFloat32RoundingFlips`).
 *
 * Pruned channels (a weight spec's `channelBits` entry 0, see `QuantLayer.prunedChannels`): the
 * graph is first built with them as all-zero channels (verified as above), then compacted
 * (`compactIntModel`: the channels and the next layer's matching inputs are removed); with a
 * sample, the compacted model's logits must equal the uncompacted model's bit for bit. A pruned
 * channel may not sit in the last layer or feed a BatchNorm that is not folded into its layer (its
 * output would be the BN's shift, not 0).
 */
import type { Module } from '../nn/module.ts';
import { ReLU, ReLU6, Identity } from '../nn/activation.ts';
import { AdaptiveAvgPool2d, AvgPool2d, MaxPool2d } from '../nn/pooling.ts';
import { Flatten } from '../nn/flatten.ts';
import { Dropout } from '../nn/dropout.ts';
import { BatchNorm } from '../nn/batchnorm.ts';
import { Tensor } from '../tensor/tensor.ts';
import { rand } from '../tensor/creation.ts';
import { Rng } from '../tensor/random.ts';
import { noGrad } from '../autograd/engine.ts';
import { roundHalfEven } from '../backend/reference/elementwise.ts';
import { QuantConv2d, QuantConvBn2d, QuantLayer, QuantLinear } from '../quant/qat/layers.ts';
import type { ExportedQuant, Quantizer } from '../quant/quantizers/quantizer.ts';
import { quantizeMultiplier } from './requantize.ts';
import { simulateFloat64, type Float64Simulation } from './simulate.ts';
import { compactIntModel } from './compact.ts';
import { captureGraph, ConvertError, type CapturedGraph } from './capture.ts';
import { IntModel, packWeightTensor, type AddNode, type IntGraph, type IntNode, type IntTensor, type LayerInput, type LayerNode, type WeightFormat } from './intmodel.ts';
import { QuantAdd } from '../quant/qat/add.ts';
import { Add } from '../nn/merge.ts';

export interface ConvertOptions {
  /** Shape of one input sample (default: the sample's shape without the batch dim). */
  readonly inputShape?: readonly number[];
  /** A batch to verify the IntModel against the fake-quant model with. */
  readonly sample?: Tensor;
  /**
   * Minimum argmax agreement on `sample` (default 0.99); below it convert throws. A sample counts
   * as agreeing when the IntModel's argmax equals the float32 forward's, or when only the
   * forward's float32 rounding changed it (`AgreementReport.argmaxFloat32RoundingFlips`: the
   * forward is the captured chain on that sample and the IntModel agrees with the float64
   * simulation of the chain; a near-tie, not an IntModel error).
   */
  readonly minAgreement?: number;
  /** Stored in the graph (e.g. dataset, normalisation, source checkpoint). */
  readonly metadata?: Record<string, unknown>;
  /**
   * Remove pruned output channels (0-bit `channelBits` entries) and the next layer's matching
   * inputs from the IntModel (default true; see ./compact.ts). false keeps them as all-zero
   * channels, which compute the same logits.
   */
  readonly compact?: boolean;
}

/** An affine integer domain; `fracBits` > 0: widened for an average pooling (scale s·2^−F, zero point z·2^F). */
type AffineDomain = { kind: 'affine'; scale: number; zeroPoint: number; qmin: number; qmax: number; fracBits?: number };

type Domain =
  | AffineDomain
  | { kind: 'sign'; scale: number }
  | { kind: 'float' };

const INT32_MAX = 2 ** 31 - 1;
/** Extra fractional bits of a layer's output that feeds an average pooling. */
const AVG_FRAC_BITS = 8;
/**
 * The same for an add: its output is one rounding of an exact rational sum, so more fractional bits
 * make the pooled value's double rounding (at 2^−F, then to the output step) rarer: 2^−16 of an
 * LSB (|values| stay far below the 2^30 range: 8-bit sums times 2^16).
 */
const ADD_AVG_FRAC_BITS = 16;

/** The leaves of `model` in registration order (a QuantLayer or a QuantAdd is one leaf). */
export function captureLeaves(model: Module): [string, Module][] {
  const out: [string, Module][] = [];
  const visit = (m: Module, name: string): void => {
    const children = m.namedChildren();
    if (m instanceof QuantLayer || m instanceof QuantAdd || children.length === 0) {
      out.push([name, m]);
      return;
    }
    for (const [cn, c] of children) visit(c, name === '' ? cn : `${name}.${cn}`);
  };
  visit(model, '');
  return out;
}

function inputOf(q: ExportedQuant | null, layerName: string, quantizer: Module | null): LayerInput {
  if (q === null) throw new Error(`convert: layer '${layerName}' has a float input (no input quantizer): the integer runtime needs every layer input quantized`);
  if (q.type === 'affine') {
    const qp = q.qparams;
    if (qp.scale.length !== 1) throw new Error(`convert: layer '${layerName}': per-channel/group input quantization is not supported (needs one scale per tensor)`);
    return { mode: 'affine', scale: qp.scale[0]!, zeroPoint: qp.zeroPoint[0]!, bits: qp.bits, qmin: qp.qmin, qmax: qp.qmax };
  }
  if (q.type === 'binary') {
    if ((quantizer as unknown as { scaled?: boolean } | null)?.scaled === true || q.alpha.length !== 1) {
      throw new Error(`convert: layer '${layerName}': a binary input with a data-dependent α (scaled: true) cannot run in integers; use α = 1`);
    }
    return { mode: 'sign', scale: q.alpha[0]! };
  }
  throw new Error(`convert: layer '${layerName}': ${q.type} input activations are not supported by the integer runtime`);
}

interface IntWeights {
  format: WeightFormat;
  bits: number;
  values: Int32Array;
  /** Per output channel weight scale (per-group weights: the row's largest group scale). */
  scale: Float64Array;
  tensor: IntTensor;
  /** Per-group weights: G and the scales s[c, g] ([O, K/G] row-major). */
  groups?: { size: number; scales: Float64Array };
}

/** Largest R of a per-group layer's relative multipliers r = round(s/s_max·2^R) (see intmodel.ts). */
const MAX_CONVERT_GROUP_SHIFT = 16;

function integerWeights(layerName: string, q: ExportedQuant | null, wfq: Tensor): IntWeights {
  if (q === null) throw new Error(`convert: layer '${layerName}' has a float weight (no weight quantizer)`);
  const O = wfq.shape[0]!;
  const K = wfq.size / O;
  const data = wfq.data;
  const values = new Int32Array(wfq.size);
  const scale = new Float64Array(O);
  const perChannel = (axis: number | null, n: number, what: string): void => {
    if (axis !== null && axis !== 0) throw new Error(`convert: layer '${layerName}': ${what} along axis ${axis} is not supported (only the output channel, axis 0)`);
    if (n !== 1 && n !== O) throw new Error(`convert: layer '${layerName}': ${n} weight scales for ${O} output channels`);
  };
  if (q.type === 'codebook') {
    throw new Error(`convert: layer '${layerName}': codebook (non-uniform, e.g. LQ-Nets/DoReFa) weights are not supported by the integer runtime yet`);
  }
  if (q.type === 'affine') {
    const qp = q.qparams;
    let groups: IntWeights['groups'];
    let scaleOf: (i: number) => number;
    if (qp.groupSize !== null) {
      // one scale per row and per G consecutive inputs: a Linear weight [O, K] grouped along axis 1
      const G = qp.groupSize;
      if (wfq.rank !== 2 || qp.axis !== 1) throw new Error(`convert: layer '${layerName}': per-group weights are supported on Linear layers grouped along their inputs (axis 1), not a weight [${wfq.shape.join(', ')}] grouped along axis ${qp.axis}`);
      if (K % G !== 0 || qp.scale.length !== O * (K / G)) throw new Error(`convert: layer '${layerName}': ${qp.scale.length} group scales for a weight [${O}, ${K}] in groups of ${G}`);
      const per = K / G;
      const scales = Float64Array.from(qp.scale);
      for (let c = 0; c < O; c++) {
        let m = 0;
        for (let g = 0; g < per; g++) m = Math.max(m, scales[c * per + g]!);
        scale[c] = m;
      }
      groups = { size: G, scales };
      scaleOf = (i) => scales[Math.floor(i / K) * per + Math.floor((i % K) / G)]!;
    } else {
      perChannel(qp.axis, qp.scale.length, 'weight quantization');
      for (let c = 0; c < O; c++) scale[c] = qp.scale[qp.scale.length === 1 ? 0 : c]!;
      scaleOf = (i) => scale[Math.floor(i / K)]!;
    }
    for (let c = 0; c < qp.zeroPoint.length; c++) if (qp.zeroPoint[c] !== 0) throw new Error(`convert: layer '${layerName}': asymmetric weights (zero point ${qp.zeroPoint[c]}) are not supported; use a symmetric weight spec`);
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < values.length; i++) {
      const si = scaleOf(i);
      const v = si === 0 ? 0 : roundHalfEven(data[i]! / si);
      if (v < qp.qmin || v > qp.qmax) throw new Error(`convert: layer '${layerName}': weight ${i} quantizes to ${v}, outside [${qp.qmin}, ${qp.qmax}]`);
      values[i] = v;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    const bits = lo >= -2 && hi <= 1 && qp.bits <= 2 ? 2 : lo >= -8 && hi <= 7 && qp.bits <= 4 ? 4 : lo >= -128 && hi <= 127 ? 8 : 0;
    if (bits === 0) throw new Error(`convert: layer '${layerName}': ${qp.bits}-bit weights in [${lo}, ${hi}] do not fit a signed 8-bit container`);
    const format: WeightFormat = bits === 8 ? 'int8' : bits === 4 ? 'int4' : 'int2';
    return { format, bits: qp.bits, values, scale, tensor: packWeightTensor(format, values, [...wfq.shape]), ...(groups ? { groups } : {}) };
  }
  perChannel(q.axis, q.alpha.length, `${q.type} weights`);
  for (let c = 0; c < O; c++) scale[c] = q.alpha[q.alpha.length === 1 ? 0 : c]!;
  if (q.type === 'binary') {
    for (let i = 0; i < values.length; i++) values[i] = data[i]! >= 0 ? 1 : -1;
    return { format: 'binary', bits: 1, values, scale, tensor: packWeightTensor('bits', values, [...wfq.shape]) };
  }
  for (let i = 0; i < values.length; i++) {
    const a = scale[Math.floor(i / K)]!;
    const v = a === 0 ? 0 : roundHalfEven(data[i]! / a);
    if (v < -1 || v > 1) throw new Error(`convert: layer '${layerName}': ternary weight ${i} is ${data[i]} with α = ${a}`);
    values[i] = v;
  }
  return { format: 'ternary', bits: 2, values, scale, tensor: packWeightTensor('int2', values, [...wfq.shape]) };
}

/**
 * R and r[c, g] = round(s[c,g]/s_max[c]·2^R) of a per-group layer (see intmodel.ts): R is
 * MAX_CONVERT_GROUP_SHIFT, lowered until K·max|x − z|·(weight container max)·2^R < 2^52 (the bound
 * validate.ts checks, with k = 0) and every bias B/(s_in·s_max)·2^R stays below 2^30 (int32).
 */
function groupMultipliers(name: string, w: IntWeights, K: number, xMax: number, bias: Float64Array, accScale: Float64Array): { shift: number; multipliers: Int32Array } {
  const { size: G, scales } = w.groups!;
  const per = K / G;
  const O = accScale.length;
  const container = w.format === 'int8' ? 128 : w.format === 'int4' ? 8 : 2;
  let biasRatio = 0;
  for (let c = 0; c < O; c++) if (accScale[c]! > 0) biasRatio = Math.max(biasRatio, Math.abs(bias[c]!) / accScale[c]!);
  let R = MAX_CONVERT_GROUP_SHIFT;
  while (R > 0 && (K * xMax * container * 2 ** R >= 2 ** 52 || biasRatio * 2 ** R >= 2 ** 30)) R--;
  if (R < 8) throw new Error(`convert: layer '${name}': per-group weights need relative multipliers of at least 8 bits, but the accumulator or bias bound leaves ${R}`);
  const multipliers = new Int32Array(O * per);
  for (let c = 0; c < O; c++) {
    const smax = w.scale[c]!;
    for (let g = 0; g < per; g++) multipliers[c * per + g] = smax === 0 ? 0 : Math.round((scales[c * per + g]! / smax) * 2 ** R);
  }
  return { shift: R, multipliers };
}

interface PendingLayer {
  /** The node template (named after the leaf; its output stage is set per materialization). */
  node: LayerNode;
  /** s_in·s_w per output channel. */
  accScale: Float64Array;
  /** Float bias (or 0). */
  bias: Float64Array;
  /** Folded BatchNorm: y = (acc·S + b)·g + h. */
  g: Float64Array;
  h: Float64Array;
  bnName?: string;
  /** Bound of |acc|: K·max|x − z_x|·max|w|. */
  accBound: number;
  /** Pruned output channels (0-bit), or null. */
  pruned: readonly number[] | null;
}

/** A value of the symbolic graph, by what produces it (inputs are value ids; value 0 is the model input). */
type Symbolic =
  | { kind: 'input' }
  | { kind: 'layer'; layer: PendingLayer; input: number }
  | { kind: 'add'; name: string; inputs: readonly [number, number]; domains: readonly [AffineDomain, AffineDomain] }
  | { kind: 'relu'; name: string; six: boolean; input: number }
  | { kind: 'pool'; name: string; module: MaxPool2d | AvgPool2d | AdaptiveAvgPool2d; input: number }
  | { kind: 'flatten'; name: string; startDim: number; endDim: number; input: number };

/**
 * Converts a prepared fake-quant model to an integer-only IntModel (details in the module comment).
 *
 * What it captures: the graph of the model's leaf module calls (a QuantLayer or QuantAdd is one
 * leaf; see `captureLeaves`). Before building, `model.forward` runs once on a probe batch (the
 * first ≤ 4 rows of `options.sample`, else 2 pseudo-random samples of `inputShape`) with every
 * leaf recorded (`captureGraph` in ./capture.ts): each leaf must be called once, in registration
 * order, each input the model input or an earlier leaf's output, every output used, and forward
 * must return the last leaf's output. Identity / Dropout leaves may go uncalled. A chain becomes a
 * version-1 IntModel as before; a DAG (residual adds, a value read twice) a version-2 one (see
 * `build`).
 *
 * What it refuses (`ConvertError`, reason 'capture', naming what was found): tensor ops or
 * functional calls between or after the modules (`fc2(x).mul(2)`, `relu(x)` instead of a ReLU
 * module, a reshape instead of a Flatten module, a residual sum written as a tensor op instead of
 * an nn.Add), an output nothing uses, a module called twice or never, modules applied out of registration order, in-place
 * edits between modules, and a subclass of a supported module whose forward computes something
 * else; then (plain Error, from the build) any leaf the integer runtime does not support. The
 * probe cannot see data-dependent control flow: pass `sample` to verify on real data.
 *
 * With `options.sample`: throws `ConvertError` 'float32-logits' when any IntModel logit is
 * farther from the model's own float32 forward than `1 + step·Σ_k|w_ck|` output LSBs (one
 * quantization step on every input of the last layer; see `AgreementReport.float32ToleranceLsb`),
 * and 'agreement' when argmax agreement with that forward (a sample whose argmax only the
 * forward's float32 rounding changed counts as agreeing, `argmaxFloat32RoundingFlips`) is below
 * `minAgreement`.
 */
export function convert(model: Module, options: ConvertOptions = {}): IntModel {
  const inputShape = options.inputShape ?? options.sample?.shape.slice(1);
  if (!inputShape) throw new Error('convert: pass options.inputShape (one sample, e.g. [1, 28, 28]) or options.sample');
  const wasTraining = model.training;
  model.eval();
  try {
    const graph = captureGraph(model, captureLeaves(model), probeBatch(inputShape, options.sample));
    const { intModel, pruned } = build(graph, inputShape, options.metadata);
    if (options.sample) {
      const report = compareWithFakeQuant(model, intModel, options.sample);
      intModel.verification = report;
      if (report.float32BeyondTolerance > 0) {
        throw new ConvertError('float32-logits', `convert: the IntModel's logits differ from the fake-quant model's float32 forward by up to ${report.float32MaxLogitLsb.toFixed(2)} LSB, ${report.float32MaxToleranceRatio.toFixed(1)}× what quantization explains (1 + Σ|w| of the last layer's row, one input step each: ${toleranceRange(report.float32ToleranceLsb)} LSB), on ${report.float32BeyondTolerance} logit(s) of the sample; the float64 simulation of the captured chain is ${report.maxLogitLsb.toFixed(2)} LSB away: model.forward computes something the captured module chain does not`);
      }
      const min = options.minAgreement ?? 0.99;
      const agreement = report.argmaxAgreement + report.argmaxFloat32RoundingFlips;
      if (agreement < min) {
        const flips = report.argmaxFloat32RoundingFlips > 0 ? ` (${(agreement * 100).toFixed(2)} % with the ${(report.argmaxFloat32RoundingFlips * 100).toFixed(2)} % whose argmax only the forward's float32 rounding changed)` : '';
        throw new ConvertError('agreement', `convert: the IntModel agrees with the fake-quant model's float32 forward on only ${(report.argmaxAgreement * 100).toFixed(2)} % of the sample${flips} (need ${(min * 100).toFixed(2)} %), with the float64 simulation on ${(report.argmaxAgreementFloat64 * 100).toFixed(2)} %; max logit difference to that forward ${report.float32MaxLogitLsb.toFixed(2)} LSB (tolerance ${toleranceRange(report.float32ToleranceLsb)} LSB), to the float64 simulation ${report.maxLogitLsb.toFixed(2)} LSB`);
      }
    }
    // Compaction narrows each layer's single consumer; a DAG keeps its pruned channels as zeros (same logits).
    if (pruned.size === 0 || options.compact === false || intModel.graph.version !== 1) return intModel;
    const compact = compactIntModel(intModel, pruned);
    if (options.sample) {
      const full = intModel.run(options.sample);
      const small = compact.run(options.sample);
      const i = full.findIndex((v, k) => !Object.is(v, small[k]) && !(v === 0 && small[k] === 0));
      if (i >= 0) throw new Error(`convert: the compacted IntModel differs from the uncompacted one at output ${i} (${small[i]} vs ${full[i]}): a bug in compactIntModel`);
      if (intModel.verification) compact.verification = intModel.verification;
    }
    return compact;
  } finally {
    if (wasTraining) model.train();
  }
}

function toleranceRange(tol: readonly number[]): string {
  const lo = Math.min(...tol);
  const hi = Math.max(...tol);
  return lo === hi ? `${lo}` : `${lo}–${hi}`;
}

/** Seed of the probe batch's own generator (the global one is left untouched). */
const PROBE_SEED = 0x2545f491;

/** Rows of the sample (at most 4) or 2 deterministic pseudo-random samples in [−1, 1) of `inputShape`. */
function probeBatch(inputShape: readonly number[], sample: Tensor | undefined): Tensor {
  if (sample && sample.rank >= 1 && sample.shape[0]! >= 1) {
    const rows = Math.min(4, sample.shape[0]!);
    return new Tensor(sample.data.slice(0, (sample.size / sample.shape[0]!) * rows), [rows, ...sample.shape.slice(1)]);
  }
  return rand([2, ...inputShape], { low: -1, high: 1, rng: new Rng(PROBE_SEED) });
}

/** The IntModel domain of a layer input (what its producer must emit). */
function domainOfInput(input: LayerInput): Domain {
  return input.mode === 'affine' ? { kind: 'affine', scale: input.scale, zeroPoint: input.zeroPoint, qmin: input.qmin, qmax: input.qmax } : { kind: 'sign', scale: input.scale };
}

/** An Add input's domain from its quantizer's export (per-tensor affine only). */
function addInputDomain(q: Quantizer | null, name: string, which: string): AffineDomain {
  const ex = q?.exportQuant() ?? null;
  if (ex === null) throw new Error(`convert: '${name}' (QuantAdd) has a float ${which} input (no input quantizer): the integer add needs both inputs quantized`);
  if (ex.type !== 'affine' || ex.qparams.scale.length !== 1) throw new Error(`convert: '${name}' (QuantAdd): its ${which} input quantizer is ${ex.type === 'affine' ? 'per channel' : ex.type}; the integer add needs per-tensor affine inputs`);
  const qp = ex.qparams;
  return { kind: 'affine', scale: qp.scale[0]!, zeroPoint: qp.zeroPoint[0]!, qmin: qp.qmin, qmax: qp.qmax };
}

/** `d` with `fracBits` extra fractional bits and a wide range (the producer of an average pooling). */
function widen(d: AffineDomain, fracBits: number): AffineDomain {
  const up = 2 ** fracBits;
  return { kind: 'affine', scale: d.scale / up, zeroPoint: d.zeroPoint * up, qmin: -(2 ** 30), qmax: 2 ** 30, fracBits };
}

/**
 * Builds the IntModel of the captured graph. Every value of the symbolic graph (a leaf's output) is
 * materialized in the domain each consumer needs — the input domain of a quantized layer, an add
 * input's domain, float for the model output — once per distinct domain: domain-preserving leaves
 * (ReLU, pooling, Flatten) pass the request to their input, a layer or an add requantizes into it
 * (a layer whose output two consumers need in different domains runs twice, sharing its weight
 * tensor), the model input gets one quantize node per domain. A chain comes out as before (graph
 * version 1, no `inputs`); anything else as a version-2 DAG.
 */
function build(graph: CapturedGraph, inputShape: readonly number[], metadata: Record<string, unknown> | undefined): { intModel: IntModel; pruned: Map<string, readonly number[]> } {
  const tensors = new Map<string, IntTensor>();
  const syms: Symbolic[] = [{ kind: 'input' }];
  /** Captured node index → value id (−1 for the model input, poisoned −2 for a layer whose BN was folded). */
  const valueOf: number[] = [];
  const uses: number[] = [0];
  const layers: PendingLayer[] = [];
  const layerNodeOf = new Map<number, string>();
  for (const [k, cn] of graph.nodes.entries()) {
    const { name, module: m } = cn;
    const ins = cn.inputs.map((i) => {
      const v = i < 0 ? 0 : valueOf[i]!;
      if (v === -2) throw new Error(`convert: '${name}' takes the output of '${layerNodeOf.get(i)}' before the BatchNorm folded into it: a folded BatchNorm must be the only consumer of its layer`);
      return v;
    });
    const value = (sym: Symbolic): void => {
      for (const v of ins) uses[v]!++;
      syms.push(sym);
      uses.push(0);
      valueOf[k] = syms.length - 1;
    };
    if (m instanceof QuantLinear || m instanceof QuantConv2d || m instanceof QuantConvBn2d) {
      const ex = m.exportLayer();
      const input = inputOf(ex.activationQuant, name, m.inputQuantizer);
      const w = integerWeights(name, ex.weightQuant, ex.weightFakeQuant);
      const O = ex.weightFakeQuant.shape[0]!;
      const weightName = `${name}.weight`;
      tensors.set(weightName, w.tensor);
      const geo = ex.geometry;
      const node: LayerNode = geo.type === 'linear'
        ? { op: 'linear', name, inFeatures: geo.inFeatures, outFeatures: geo.outFeatures, weight: weightName, weightFormat: w.format, weightBits: w.bits, input, output: { mode: 'dequantize', scale: '', bias: '' } }
        : {
          op: 'conv2d', name, inFeatures: geo.inChannels, outFeatures: geo.outChannels, weight: weightName, weightFormat: w.format, weightBits: w.bits, input,
          conv: {
            inChannels: geo.inChannels, outChannels: geo.outChannels, kernelSize: [...geo.kernelSize], stride: [...geo.stride], padding: [...geo.padding], dilation: [...geo.dilation], groups: geo.groups,
            ...(geo.conv1d === true ? { conv1d: true } : {}),
          },
          output: { mode: 'dequantize', scale: '', bias: '' },
        };
      const sIn = input.scale;
      const bias = new Float64Array(O);
      if (ex.bias) for (let c = 0; c < O; c++) bias[c] = ex.bias.data[c]!;
      const K = ex.weightFakeQuant.size / O;
      let wMax = 0;
      for (const v of w.values) wMax = Math.max(wMax, Math.abs(v));
      const xMax = input.mode === 'sign' ? 1 : Math.max(Math.abs(input.qmin - input.zeroPoint), Math.abs(input.qmax - input.zeroPoint));
      let accBound = K * xMax * wMax;
      if (accBound > INT32_MAX) throw new Error(`convert: layer '${name}': the int32 accumulator may overflow (bound ${accBound})`);
      let accScale = Float64Array.from(w.scale, (sw) => sw * sIn);
      if (w.groups) {
        const g = groupMultipliers(name, w, K, xMax, bias, accScale);
        tensors.set(`${name}.groupMultipliers`, { dtype: 'int32', shape: [O, K / w.groups.size], data: g.multipliers });
        Object.assign(node, { weightGroupSize: w.groups.size, groupMultipliers: `${name}.groupMultipliers`, groupShift: g.shift });
        // the accumulator A = Σ_g r·acc_g is in units of s_in·s_max·2^−R
        accScale = Float64Array.from(accScale, (a) => a * 2 ** -g.shift);
        accBound *= 2 ** g.shift;
      }
      const pending: PendingLayer = { node, accScale, bias, g: new Float64Array(O).fill(1), h: new Float64Array(O), accBound, pruned: m.prunedChannels };
      layers.push(pending);
      layerNodeOf.set(k, name);
      value({ kind: 'layer', layer: pending, input: ins[0]! });
      continue;
    }
    if (m instanceof Identity || m instanceof Dropout) {
      valueOf[k] = ins[0]!;
      continue;
    }
    if (m instanceof BatchNorm) {
      const src = syms[ins[0]!]!;
      if (src.kind !== 'layer') throw new Error(`convert: '${name}' (${m.constructor.name}) does not directly follow a quantized layer, so it cannot be folded`);
      const L = src.layer;
      if (L.bnName) throw new Error(`convert: '${name}': a second BatchNorm after '${L.node.name}'`);
      if (uses[ins[0]!]! > 0) throw new Error(`convert: '${name}' (${m.constructor.name}) cannot be folded into '${L.node.name}', whose output another module takes too`);
      if (!m.runningMean || !m.runningVar) throw new Error(`convert: '${name}' tracks no running statistics, so it cannot be folded`);
      const O = L.node.outFeatures;
      if (m.numFeatures !== O) throw new Error(`convert: '${name}' has ${m.numFeatures} features, '${L.node.name}' ${O} outputs`);
      if (L.pruned) throw new Error(`convert: '${L.node.name}' has pruned (0-bit) channels but feeds '${name}' (${m.constructor.name}), which is not folded into it: a pruned channel would output the BatchNorm's shift, not 0`);
      for (let c = 0; c < O; c++) {
        const gamma = m.weight ? m.weight.data[c]! : 1;
        const beta = m.bias ? m.bias.data[c]! : 0;
        const kk = gamma / Math.sqrt(m.runningVar.data[c]! + m.eps);
        L.g[c] = kk;
        L.h[c] = beta - m.runningMean.data[c]! * kk;
      }
      L.bnName = name;
      valueOf[k] = ins[0]!;
      const producer = cn.inputs[0]!;
      layerNodeOf.set(producer, L.node.name);
      valueOf[producer] = -2;
      continue;
    }
    if (m instanceof QuantAdd) value({ kind: 'add', name, inputs: [ins[0]!, ins[1]!], domains: [addInputDomain(m.inputQuantizerA, name, 'first'), addInputDomain(m.inputQuantizerB, name, 'second')] });
    else if (m instanceof Add) throw new Error(`convert: '${name}' is a float nn.Add (no input quantizers): prepareQat swaps it for a QuantAdd, which the integer runtime converts`);
    else if (m instanceof ReLU || m instanceof ReLU6) value({ kind: 'relu', name, six: m instanceof ReLU6, input: ins[0]! });
    else if (m instanceof MaxPool2d || m instanceof AvgPool2d || m instanceof AdaptiveAvgPool2d) value({ kind: 'pool', name, module: m, input: ins[0]! });
    else if (m instanceof Flatten) value({ kind: 'flatten', name, startDim: m.startDim, endDim: m.endDim, input: ins[0]! });
    else {
      throw new Error(`convert: module '${name || '<root>'}' (${m.constructor.name}) is not supported by the integer runtime (supported: quantized Conv2d/Linear, QuantAdd, ReLU, ReLU6, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Identity, Dropout, BatchNorm after a quantized layer)`);
    }
  }
  if (layers.length === 0) throw new Error('convert: the model has no quantized layers (run prepareQat first)');
  const last = graph.nodes.length - 1;
  const output = valueOf[last]!;
  const outSym = syms[output]!;
  if (outSym.kind === 'layer' && outSym.layer.pruned) throw new Error(`convert: '${outSym.layer.node.name}' is the last layer (its outputs are the logits) and may not have pruned (0-bit) channels`);

  const nodes: IntNode[] = [];
  const memo = new Map<string, string>();
  const names = new Set<string>();
  const unique = (base: string): string => {
    let n = base;
    for (let k = 2; names.has(n); k++) n = `${base}@${k}`;
    names.add(n);
    return n;
  };
  const push = (node: IntNode): string => {
    nodes.push(node);
    return node.name;
  };
  /** Extra fractional bits value `v` can be produced with (a layer or an add, through ReLU / max pooling / Flatten), else 0. */
  const widenable = (v: number): number => {
    const sym = syms[v]!;
    if (sym.kind === 'layer') return AVG_FRAC_BITS;
    if (sym.kind === 'add') return ADD_AVG_FRAC_BITS;
    if (sym.kind === 'relu' || sym.kind === 'flatten' || (sym.kind === 'pool' && sym.module instanceof MaxPool2d)) return widenable(sym.input);
    return 0;
  };
  const emit = (v: number, d: Domain): string => {
    const key = `${v} ${JSON.stringify(d)}`;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    const sym = syms[v]!;
    let name: string;
    switch (sym.kind) {
      case 'input':
        if (d.kind === 'float') throw new Error('convert: the model input reaches the output without passing a quantized layer');
        name = push({ op: 'quantize', name: unique('input'), inputs: [], input: d.kind === 'sign' ? { mode: 'sign', scale: d.scale } : { mode: 'affine', scale: d.scale, zeroPoint: d.zeroPoint, bits: Math.ceil(Math.log2(d.qmax - d.qmin + 1)), qmin: d.qmin, qmax: d.qmax } });
        break;
      case 'layer': {
        const L = sym.layer;
        const src = emit(sym.input, domainOfInput(L.node.input));
        const node: LayerNode = { ...L.node, name: unique(L.node.name), inputs: [src] };
        finishLayer(L, node, d, tensors);
        name = push(node);
        break;
      }
      case 'add': {
        if (d.kind === 'float') throw new Error(`convert: '${sym.name}' (QuantAdd) feeds the model output: the integer add produces integers only (end the model with a quantized layer after it)`);
        const a = emit(sym.inputs[0], sym.domains[0]);
        const b = emit(sym.inputs[1], sym.domains[1]);
        name = push(d.kind === 'sign' ? addSignNode(unique(sym.name), [a, b], sym.domains) : addNode(unique(sym.name), [a, b], sym.domains, d));
        break;
      }
      case 'relu': {
        const src = emit(sym.input, d);
        name = push({ ...reluClamp(unique(sym.name), sym.six, d), inputs: [src] });
        break;
      }
      case 'flatten': {
        const src = emit(sym.input, d);
        name = push({ op: 'flatten', name: unique(sym.name), inputs: [src], startDim: sym.startDim, endDim: sym.endDim });
        break;
      }
      case 'pool': {
        const m = sym.module;
        if (d.kind === 'float') throw new Error(`convert: '${sym.name}' after the last quantized layer is not supported (only Flatten, ReLU, ReLU6 may follow it)`);
        if (m instanceof MaxPool2d) {
          const src = emit(sym.input, d);
          name = push({ op: 'maxpool2d', name: unique(sym.name), inputs: [src], kernelSize: [...m.kernelSize], stride: [...m.stride], padding: [...m.padding], zeroPoint: d.kind === 'affine' ? d.zeroPoint : 0, fracBits: 0 });
          break;
        }
        if (d.kind !== 'affine') throw new Error(`convert: '${sym.name}' (${m.constructor.name}) on ${d.kind} values is not supported`);
        // Average pooling in an affine domain: the producer (a layer or an add, through ReLU / max
        // pooling / Flatten) requantizes with F extra fractional bits (AVG_FRAC_BITS for a layer,
        // ADD_AVG_FRAC_BITS for an add; scale s·2^−F,
        // zero point z·2^F, a wide range) and the pooling rounds once, back to s, then clamps to
        // [qmin, qmax] — as the float model averages unrounded, unclamped values and quantizes
        // once. Without such a producer it pools plain integers.
        const fracBits = d.fracBits === undefined ? widenable(sym.input) : 0;
        const src = emit(sym.input, fracBits > 0 ? widen(d, fracBits) : d);
        const poolName = unique(sym.name);
        if (m instanceof AdaptiveAvgPool2d) push({ op: 'adaptiveavgpool2d', name: poolName, inputs: [src], outputSize: [...m.outputSize], zeroPoint: d.zeroPoint, fracBits });
        else push({ op: 'avgpool2d', name: poolName, inputs: [src], kernelSize: [...m.kernelSize], stride: [...m.stride], padding: [...m.padding], zeroPoint: d.zeroPoint, fracBits });
        name = push({ op: 'clamp', name: unique(`${sym.name}.range`), inputs: [poolName], lo: d.qmin, hi: d.qmax });
        break;
      }
    }
    memo.set(key, name);
    return name;
  };
  emit(output, { kind: 'float' });
  const fused = fuseClamps(nodes);
  // per-group weights need graph version 3 (a DAG as version 2), so older readers refuse the file
  const grouped = fused.some((n) => (n.op === 'linear' || n.op === 'conv2d') && n.weightGroupSize !== undefined);
  const chain = !grouped && fused.every((n, i) => (i === 0 ? n.op === 'quantize' : n.op !== 'quantize' && n.op !== 'add' && n.inputs?.length === 1 && n.inputs[0] === fused[i - 1]!.name));
  const finalNodes = chain ? fused.map(({ inputs: _inputs, ...rest }) => rest as IntNode) : fused;
  const intGraph: IntGraph = { format: 'lowbit-intmodel', version: chain ? 1 : grouped ? 3 : 2, inputShape: [...inputShape], nodes: finalNodes, ...(metadata ? { metadata } : {}) };
  const pruned = new Map(layers.flatMap((l) => (l.pruned ? [[l.node.name, l.pruned] as const] : [])));
  return { intModel: new IntModel(intGraph, tensors), pruned };
}

/**
 * The integer add of inputs in `domains` into `out`: M_a, M_b = s_a/s, s_b/s as int32 with one
 * shared shift n (the larger in [2^30, 2^31), see `AddNode`).
 */
function addNode(name: string, inputs: readonly [string, string], domains: readonly [AffineDomain, AffineDomain], out: AffineDomain): AddNode {
  const ra = domains[0].scale / out.scale;
  const rb = domains[1].scale / out.scale;
  const shift = quantizeMultiplier(Math.max(ra, rb)).shift;
  if (shift < 0 || shift > 62) throw new Error(`convert: '${name}': input/output scale ratios ${ra} and ${rb} are out of the integer add's range`);
  const ma = Math.round(ra * 2 ** shift);
  const mb = Math.round(rb * 2 ** shift);
  if (Math.max(ma, mb) > INT32_MAX) throw new Error(`convert: '${name}': multiplier overflow`);
  return {
    op: 'add', name, inputs: [...inputs], inputZeroPoints: [domains[0].zeroPoint, domains[1].zeroPoint], inputScales: [domains[0].scale, domains[1].scale],
    multipliers: [ma, mb], shift, scale: out.fracBits ? out.scale * 2 ** out.fracBits : out.scale, zeroPoint: out.zeroPoint, lo: out.qmin, hi: out.qmax,
  };
}

/** m, e with x = m·2^e, m an odd integer (x > 0 finite; m < 2^53). */
function mantissaExponent(x: number): { m: number; e: number } {
  let e = Math.floor(Math.log2(x)) - 52;
  let m = x / 2 ** e;
  while (!Number.isInteger(m)) { e--; m = x / 2 ** e; }
  while (m % 2 === 0) { m /= 2; e++; }
  return { m, e };
}

/**
 * @internal M_a, M_b (int32, > 0) for the sign of (a − z_a)·s_a + (b − z_b)·s_b: s_a and s_b as
 * integer multiples of one power of two when both fit int32 (exact), else both ratios rounded to
 * 31 bits (see `addSignNode`).
 */
export function signAddMultipliers(sa: number, sb: number): [number, number] {
  if (!(sa > 0) || !(sb > 0) || !Number.isFinite(sa) || !Number.isFinite(sb)) throw new Error(`input scales ${sa} and ${sb} must be finite and > 0`);
  const fa = mantissaExponent(sa);
  const fb = mantissaExponent(sb);
  const e0 = Math.min(fa.e, fb.e);
  const ma = fa.m * 2 ** (fa.e - e0);
  const mb = fb.m * 2 ** (fb.e - e0);
  if (Math.max(ma, mb) <= INT32_MAX) return [ma, mb];
  const shift = quantizeMultiplier(Math.max(sa, sb) / Math.min(sa, sb)).shift;
  const scale = 2 ** shift / Math.min(sa, sb);
  const ra = Math.round(sa * scale);
  const rb = Math.round(sb * scale);
  if (Math.max(ra, rb) > INT32_MAX || Math.min(ra, rb) < 1) throw new Error(`input scales ${sa} and ${sb} are too far apart for the integer sign of their sum`);
  return [ra, rb];
}

/**
 * The add whose sum feeds a sign (binary) input: +1 where (a − z_a)·M_a + (b − z_b)·M_b ≥ 0
 * (`AddNode.output` 'sign'). The fake-quant model computes sign(x̂_a + x̂_b) with x̂ = (q − z)·s;
 * the sign only needs the ratio s_a : s_b, so M_a, M_b are s_a, s_b written as integer multiples of
 * one power of two, 2^e0 with e0 the smaller exponent: M = m·2^(e − e0) for s = m·2^e, m odd. When
 * both fit int32 (float32 scales: 24-bit m, exponents less than 8 apart) the comparison is the
 * exact sign of the real sum of the dequantized inputs; otherwise both ratios are rounded to 31 bits
 * (the smaller scale becomes exactly 2^n, the larger its ratio to it times 2^n rounded into
 * [2^30, 2^31)), and a sign can differ only where |x̂_a + x̂_b| ≤ 2^−31·|x̂_large|.
 * Against the fake-quant model's float32 sum (each x̂ rounded once to float32, then the sum once:
 * sign-preserving roundings, and x̂_a = −x̂_b gives exactly 0 in both) the exact sign can differ
 * only where |x̂_a + x̂_b| ≤ 2^−24·(|x̂_a| + |x̂_b|), a near-cancellation of the two inputs.
 */
function addSignNode(name: string, inputs: readonly [string, string], domains: readonly [AffineDomain, AffineDomain]): AddNode {
  const [sa, sb] = [domains[0].scale, domains[1].scale];
  let ma: number;
  let mb: number;
  try {
    [ma, mb] = signAddMultipliers(sa, sb);
  } catch (e) {
    throw new Error(`convert: '${name}' (QuantAdd): ${(e as Error).message}`);
  }
  return {
    op: 'add', name, inputs: [...inputs], inputZeroPoints: [domains[0].zeroPoint, domains[1].zeroPoint], inputScales: [sa, sb],
    multipliers: [ma, mb], shift: 0, scale: 1, zeroPoint: 0, lo: -1, hi: 1, output: 'sign',
  };
}

function reluClamp(name: string, six: boolean, domain: Domain): IntNode {
  if (domain.kind === 'sign') return { op: 'clamp', name, lo: 1, hi: 1 }; // sign(relu(y)) = +1
  if (domain.kind === 'float') return { op: 'clamp', name, lo: 0, hi: six ? 6 : null };
  // Not clipped to [qmin, qmax]: values may sit in a wider range before an average pooling.
  const { scale, zeroPoint: z } = domain;
  return { op: 'clamp', name, lo: z, hi: six ? roundHalfEven(6 / scale) + z : null };
}

/**
 * Fuses each clamp node into the output bounds of the requantizing layer or the add before it
 * (through max pooling / Flatten), when every node on that way has the clamp as its only consumer;
 * the clamp's consumers then take its input.
 */
function fuseClamps(nodes: readonly IntNode[]): IntNode[] {
  const consumers = new Map<string, number>();
  for (const n of nodes) for (const i of n.inputs ?? []) consumers.set(i, (consumers.get(i) ?? 0) + 1);
  const renamed = new Map<string, string>();
  const kept = new Map<string, IntNode>();
  const out: IntNode[] = [];
  for (const original of nodes) {
    const node = { ...original, ...(original.inputs ? { inputs: original.inputs.map((i) => renamed.get(i) ?? i) } : {}) } as IntNode;
    if (node.op === 'clamp' && node.inputs?.length === 1) {
      const src = node.inputs[0]!;
      let p = kept.get(src);
      while (p && (p.op === 'maxpool2d' || p.op === 'flatten') && consumers.get(p.name) === 1) p = kept.get(p.inputs![0]!);
      if (p && consumers.get(p.name) === 1) {
        if ((p.op === 'conv2d' || p.op === 'linear') && p.output.mode === 'requantize') {
          const o = p.output;
          p.output = { ...o, lo: Math.max(o.lo, node.lo ?? o.lo), hi: Math.min(o.hi, node.hi ?? o.hi) };
        } else if (p.op === 'add' && p.output !== 'sign') {
          p.lo = Math.max(p.lo, node.lo ?? p.lo);
          p.hi = Math.min(p.hi, node.hi ?? p.hi);
        } else p = undefined;
        if (p) {
          renamed.set(node.name, src);
          consumers.set(src, (consumers.get(src) ?? 0) - 1 + (consumers.get(node.name) ?? 0));
          continue;
        }
      }
    }
    out.push(node);
    kept.set(node.name, node);
  }
  return out;
}

/** Sets the output stage of `node` (a materialization of layer L) for the domain its output flows into. */
function finishLayer(L: PendingLayer, node: LayerNode, domain: Domain, tensors: Map<string, IntTensor>): void {
  const O = L.node.outFeatures;
  const name = node.name;
  const A = new Float64Array(O); // y = A·acc + B
  const B = new Float64Array(O);
  for (let c = 0; c < O; c++) {
    A[c] = L.accScale[c]! * L.g[c]!;
    B[c] = L.bias[c]! * L.g[c]! + L.h[c]!;
  }
  if (domain.kind === 'float') {
    tensors.set(`${name}.outScale`, { dtype: 'float32', shape: [O], data: Float32Array.from(A) });
    tensors.set(`${name}.outBias`, { dtype: 'float32', shape: [O], data: Float32Array.from(B) });
    node.output = { mode: 'dequantize', scale: `${name}.outScale`, bias: `${name}.outBias` };
    return;
  }
  if (domain.kind === 'sign') {
    if (node.weightGroupSize !== undefined) throw new Error(`convert: layer '${name}' has per-group weights and feeds a sign (binary) input, which the integer runtime does not support`);
    const t = new Int32Array(O);
    const d = new Int32Array(O);
    for (let c = 0; c < O; c++) {
      if (A[c] === 0) { d[c] = 0; t[c] = B[c]! >= 0 ? 0 : 1; continue; }
      d[c] = A[c]! > 0 ? 1 : -1;
      t[c] = Math.max(-INT32_MAX, Math.min(INT32_MAX, Math.ceil(-B[c]! / Math.abs(A[c]!))));
    }
    tensors.set(`${name}.threshold`, { dtype: 'int32', shape: [O], data: t });
    tensors.set(`${name}.direction`, { dtype: 'int32', shape: [O], data: d });
    node.output = { mode: 'sign', threshold: `${name}.threshold`, direction: `${name}.direction` };
    return;
  }
  const bias = new Int32Array(O);
  const mult = new Int32Array(O);
  const shift = new Int32Array(O);
  // k: extra fractional bits of the bias (see LayerOutput.biasShift), bounded so that
  // |acc·2^k + bias| < 2^37 and every bias fits int32.
  let biasFloat = 0;
  for (let c = 0; c < O; c++) if (A[c] !== 0) biasFloat = Math.max(biasFloat, Math.abs(B[c]! / A[c]!));
  const bound = L.accBound + biasFloat + 1;
  let k = Math.max(0, Math.min(16, Math.floor(Math.log2(2 ** 36 / bound))));
  while (k > 0 && biasFloat * 2 ** k > INT32_MAX) k--;
  for (let c = 0; c < O; c++) {
    const b = A[c] === 0 ? 0 : roundHalfEven((B[c]! / A[c]!) * 2 ** k);
    if (Math.abs(b) > INT32_MAX) throw new Error(`convert: layer '${name}': int32 bias of channel ${c} overflows (${b})`);
    bias[c] = b;
    const fm = quantizeMultiplier(A[c]! / domain.scale);
    mult[c] = fm.multiplier;
    shift[c] = fm.multiplier === 0 ? 0 : fm.shift + k;
  }
  tensors.set(`${name}.bias`, { dtype: 'int32', shape: [O], data: bias });
  tensors.set(`${name}.multiplier`, { dtype: 'int32', shape: [O], data: mult });
  tensors.set(`${name}.shift`, { dtype: 'int32', shape: [O], data: shift });
  node.output = {
    mode: 'requantize', bias: `${name}.bias`, multiplier: `${name}.multiplier`, shift: `${name}.shift`, biasShift: k,
    scale: domain.fracBits ? domain.scale * 2 ** domain.fracBits : domain.scale, zeroPoint: domain.zeroPoint, lo: domain.qmin, hi: domain.qmax,
  };
}

// ---------------------------------------------------------------------------------------------
// Agreement with the fake-quant simulation

export interface AgreementReport {
  readonly count: number;
  /** Fraction of samples with the same argmax as the model's own (float32) forward. */
  readonly argmaxAgreement: number;
  /** Fraction of samples with the same argmax as the float64 simulation (`simulateFloat64`). */
  readonly argmaxAgreementFloat64: number;
  /**
   * Fraction of samples whose argmax differs from the float32 forward's only through float32
   * rounding: the forward's logits of the sample equal, bit for bit, those of the captured leaf
   * chain run one leaf after another in float32, and the IntModel's argmax equals the float64
   * simulation's of that chain. The same chain in float32 and in float64 chose differently: the
   * float32 rounding flipped hidden integers (each moves a logit by |w| LSB, see
   * `float32MaxLogitLsb`) on a sample whose top logits lie that close. `convert` counts these
   * samples as agreeing; a forward that is not the chain on the sample never gets here.
   */
  readonly argmaxFloat32RoundingFlips: number;
  /**
   * Max / mean |Δlogit| against the float64 simulation, in units of the last layer's accumulator
   * scale (s_in·s_w per class): the "at most 1 output LSB apart" measure.
   */
  readonly maxLogitLsb: number;
  readonly meanLogitLsb: number;
  /** Fraction of logits at most 1 LSB from the float64 simulation. */
  readonly logitWithin1Lsb: number;
  /**
   * The same against the model's float32 forward: its rounding error flips hidden integers that
   * sit within ≈ 2^−24 of a rounding boundary, and each flip moves logits by |w| LSB.
   */
  readonly float32MaxLogitLsb: number;
  readonly float32LogitWithin1Lsb: number;
  /**
   * Per output channel of the last layer: how far (in LSB) a logit may sit from the float32
   * forward when the IntModel computes what the forward computes, `1 + step·Σ_k|w_ck|` (w the
   * channel's integer weights, step 1 for affine inputs, 2 for ±1 sign inputs): the 1-LSB bound of
   * the float64 simulation plus every input of the last layer one quantization step off, which
   * covers the float32 rounding flips above (each moves a logit by one |w_ck|). `convert` refuses
   * a model with any logit beyond it: its forward is not the captured chain.
   */
  readonly float32ToleranceLsb: readonly number[];
  /** Number of logits farther from the float32 forward than their channel's tolerance. */
  readonly float32BeyondTolerance: number;
  /** Max over logits of |Δlogit to the float32 forward| / tolerance (≤ 1: explained by quantization). */
  readonly float32MaxToleranceRatio: number;
  /** Per layer: max |Δq| between the integer input of the layer and the float64 simulation's. */
  readonly layerMaxDiff: Record<string, number>;
  /** Per layer: fraction of input integers that differ at all. */
  readonly layerMismatch: Record<string, number>;
  /**
   * Each layer's own error: the layer (and the pooling/flatten after it) runs on the float64
   * simulation's integer input, and its output is compared with the simulation's input of the
   * next layer (max |Δq|), or, for the last layer, with the simulation's logits (max |Δ| in LSB).
   */
  readonly layerLocalMaxDiff: Record<string, number>;
}

interface LogitStats { agree: number; max: number; sum: number; within: number; beyond: number; ratio: number }

/** Whether sample `i`'s `classes` values are the same numbers in `a` and `b` (±0 alike). */
function sameRow(a: ArrayLike<number>, b: ArrayLike<number>, i: number, classes: number): boolean {
  for (let c = i * classes; c < (i + 1) * classes; c++) if (a[c] !== b[c]) return false;
  return true;
}

/** Index of the largest of sample `i`'s `classes` logits (the first on ties). */
function argmaxRow(logits: ArrayLike<number>, i: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
  return best;
}

/**
 * Argmax agreement and per-logit distances in LSB of the logit's output channel. A sample's
 * `classes` logits hold `lsb.length` channels, channel-major (a Linear: one logit each; a conv's
 * [O, H, W], flattened or not: H·W each).
 */
function logitStats(mine: Float32Array, ref: ArrayLike<number>, n: number, classes: number, lsb: Float32Array, tolerance: readonly number[] | null = null): LogitStats {
  const st: LogitStats = { agree: 0, max: 0, sum: 0, within: 0, beyond: 0, ratio: 0 };
  const per = classes % lsb.length === 0 ? classes / lsb.length : 0;
  const channelOf = (c: number): number => (per > 0 ? Math.floor(c / per) : c % lsb.length);
  for (let i = 0; i < n; i++) {
    if (argmaxRow(mine, i, classes) === argmaxRow(ref, i, classes)) st.agree++;
    for (let c = 0; c < classes; c++) {
      const ch = channelOf(c);
      const d = Math.abs(mine[i * classes + c]! - ref[i * classes + c]!) / (Math.abs(lsb[ch]!) || 1);
      st.max = Math.max(st.max, d);
      st.sum += d;
      if (d <= 1) st.within++;
      if (tolerance) {
        const r = d / tolerance[ch]!;
        if (!(r <= 1)) st.beyond++;
        st.ratio = Math.max(st.ratio, Number.isNaN(r) ? Infinity : r);
      }
    }
  }
  return st;
}

/**
 * Runs `x` through the fake-quant model (its float32 forward, eval, no grad), through the same
 * simulation in float64 (`simulateFloat64`) and through the IntModel, and compares logits (argmax
 * against both, LSB distance against both) and the integer input of every layer (against the
 * float64 simulation, whose integers the IntModel reproduces exactly when its arithmetic is right).
 * For a compacted IntModel (pruned channels removed) the per-layer comparisons of layers whose
 * input was narrowed are left out; compare the uncompacted one (`convert(..., { compact: false })`).
 */
export function compareWithFakeQuant(model: Module, intModel: IntModel, x: Tensor): AgreementReport {
  const layerNodes = intModel.nodes.filter((n): n is LayerNode => n.op === 'conv2d' || n.op === 'linear');
  const wasTraining = model.training;
  /** `fn` with the model in eval mode, its mode restored after. */
  const inEval = <T>(fn: () => T): T => {
    model.eval();
    try {
      return fn();
    } finally {
      if (wasTraining) model.train();
    }
  };
  const graph = captureGraph(model, captureLeaves(model), probeBatch(x.shape.slice(1), x));
  const [ref32, sim] = inEval((): [Tensor, Float64Simulation] => [
    noGrad(() => (model as unknown as { forward(t: Tensor): Tensor }).forward(x)),
    simulateFloat64(model, x, graph),
  ]);
  // The captured leaf calls run one after another in float32: only needed when an argmax differs from the forward's.
  let chain32: Tensor | undefined;
  const chain = (): Tensor => (chain32 ??= inEval(() => noGrad(() => runCaptured(graph, x))));
  const trace = new Map<string, { shape: number[]; data: Int32Array }>();
  const logits = intModel.run(x, x.shape[0], { trace });
  const n = x.shape[0]!;
  const classes = logits.length / n;
  const last = layerNodes[layerNodes.length - 1]!;
  // a logit LSB is s_in·s_w; a per-group layer's dequantize scale is s_in·s_max·2^−R, so its LSB is that times 2^R
  const lsbScale = last.groupShift !== undefined ? 2 ** last.groupShift : 1;
  const lsb = last.output.mode === 'dequantize' ? Float32Array.from(intModel.tensor(last.output.scale).data as Float32Array, (v) => v * lsbScale) : new Float32Array(classes).fill(1);
  const tolerance = float32Tolerance(intModel, last);
  const s64 = logitStats(logits, sim.output, n, classes, lsb);
  if (ref32.size !== logits.length) throw new ConvertError('float32-logits', `compareWithFakeQuant: model.forward gives ${ref32.size / n} outputs per sample, the IntModel ${classes}`);
  const s32 = logitStats(logits, ref32.data, n, classes, lsb, tolerance);
  let roundingFlips = 0;
  for (let i = 0; i < n; i++) {
    const mine = argmaxRow(logits, i, classes);
    if (mine === argmaxRow(ref32.data, i, classes) || mine !== argmaxRow(sim.output, i, classes)) continue;
    if (chain().size === ref32.size && sameRow(ref32.data, chain().data, i, classes)) roundingFlips++;
  }
  const layerMaxDiff: Record<string, number> = {};
  const layerMismatch: Record<string, number> = {};
  const layerLocalMaxDiff: Record<string, number> = {};
  for (let li = 0; li < layerNodes.length; li++) {
    const node = layerNodes[li]!;
    const expect = sim.layerInputs.get(node.name);
    const mine = trace.get(node.name);
    // A compacted IntModel (pruned channels removed) has narrower layer inputs than the simulation: logits only.
    if (!expect || !mine || expect.length !== mine.data.length) continue;
    const half = node.input.mode === 'sign' ? 2 : 1; // ±1 differ by 2
    let max = 0;
    let diff = 0;
    for (let i = 0; i < expect.length; i++) {
      const d = Math.abs(expect[i]! - mine.data[i]!);
      if (d > max) max = d;
      if (d !== 0) diff++;
    }
    layerMaxDiff[node.name] = max / half;
    layerMismatch[node.name] = diff / expect.length;
    if (intModel.graph.version !== 1) continue; // a layer's own error is measured on chains only
    const out = intModel.runSegment(node.name, expect, mine.shape);
    let local = 0;
    const next = layerNodes[li + 1];
    if (next) {
      const nextExpect = sim.layerInputs.get(next.name);
      if (!nextExpect || !out.ints || out.ints.length !== nextExpect.length) continue;
      for (let i = 0; i < nextExpect.length; i++) local = Math.max(local, Math.abs(nextExpect[i]! - out.ints[i]!));
      layerLocalMaxDiff[node.name] = next.input.mode === 'sign' ? local / 2 : local;
    } else if (out.floats) {
      layerLocalMaxDiff[node.name] = logitStats(out.floats, sim.output, n, classes, lsb).max;
    }
  }
  const total = n * classes;
  return {
    count: n, argmaxAgreement: s32.agree / n, argmaxAgreementFloat64: s64.agree / n, argmaxFloat32RoundingFlips: roundingFlips / n,
    maxLogitLsb: s64.max, meanLogitLsb: s64.sum / total, logitWithin1Lsb: s64.within / total,
    float32MaxLogitLsb: s32.max, float32LogitWithin1Lsb: s32.within / total,
    float32ToleranceLsb: tolerance, float32BeyondTolerance: s32.beyond, float32MaxToleranceRatio: s32.ratio,
    layerMaxDiff, layerMismatch, layerLocalMaxDiff,
  };
}

/** The captured leaf calls of `graph` run on `x` (float32, as the model's modules compute). */
function runCaptured(graph: CapturedGraph, x: Tensor): Tensor {
  const values: Tensor[] = [];
  for (const node of graph.nodes) {
    const ins = node.inputs.map((k) => (k < 0 ? x : values[k]!));
    const forward = node.module.forward as (...t: Tensor[]) => Tensor;
    values.push(forward.call(node.module, ...ins));
  }
  return values[values.length - 1] ?? x;
}

/** Per output channel of the last layer: 1 + step·Σ_k|w_ck| (see `AgreementReport.float32ToleranceLsb`). */
function float32Tolerance(intModel: IntModel, last: LayerNode): number[] {
  const w = intModel.weightValues(last);
  const O = last.outFeatures;
  const K = w.length / O;
  const step = last.input.mode === 'sign' ? 2 : 1;
  const out: number[] = [];
  for (let c = 0; c < O; c++) {
    let sum = 0;
    for (let k = 0; k < K; k++) sum += Math.abs(w[c * K + k]!);
    out.push(1 + step * sum);
  }
  return out;
}
