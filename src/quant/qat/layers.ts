/**
 * Fake-quantized layers that `prepareQat` swaps in for Conv2d, Conv1d and Linear. Each holds the original
 * layer's weight and bias tensors (the same objects, so optimizers and state dicts keep working),
 * a weight quantizer and a quantizer of its INPUT activation, both child modules so that their
 * learned parameters and calibration buffers are in `parameters()` and `stateDict()`.
 */
import { Module } from '../../nn/module.ts';
import type { Conv2d } from '../../nn/conv.ts';
import { Conv1d } from '../../nn/conv1d.ts';
import type { Linear } from '../../nn/linear.ts';
import type { BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import type { FusedPool } from '../../nn/fusion.ts';
import { add, batchNormStats, conv2d, conv2dFused, div, linear, maxPool2d, mul, narrow, relu, reshape, sqrt, sub, Tensor, zeros } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import type { ExportedQuant, Quantizer, QuantizerSpec } from '../quantizers/quantizer.ts';
import type { ActivationGradientQuantizer } from './activation-gradients.ts';

/** Geometry of an exported layer, enough to rebuild its computation. */
export type LayerGeometry =
  | {
    readonly type: 'conv2d';
    readonly inChannels: number;
    readonly outChannels: number;
    readonly kernelSize: readonly [number, number];
    readonly stride: readonly [number, number];
    readonly padding: readonly [number, number];
    readonly dilation: readonly [number, number];
    readonly groups: number;
    /**
     * true for a Conv1d: input [N, C, L] and weight [O, C/groups, k] are the height-1 map
     * [N, C, 1, L] and kernel [O, C/groups, 1, k] of this conv2d (kernelSize [1, k], stride [1, s],
     * padding [0, p], dilation [1, d]); its output is [N, O, L'].
     */
    readonly conv1d?: boolean;
  }
  | { readonly type: 'linear'; readonly inFeatures: number; readonly outFeatures: number };

/** What `convert()` needs of one trained layer. */
export interface ExportedLayer {
  readonly geometry: LayerGeometry;
  /** Float weight, with the BatchNorm folded in (running statistics) for QuantConvBn2d. */
  readonly weightFloat: Tensor;
  /** Float bias, BN-folded for QuantConvBn2d (never null there); 0 in pruned channels. */
  readonly bias: Tensor | null;
  /** The weight the fake-quant model computes with: weightQuantizer(weightFloat), or weightFloat; 0 in pruned channels. */
  readonly weightFakeQuant: Tensor;
  /** null when the weight stays float. */
  readonly weightQuant: ExportedQuant | null;
  /** Quantization of the layer input; null when it stays float. */
  readonly activationQuant: ExportedQuant | null;
}

/** Common part of QuantLinear, QuantConv2d and QuantConvBn2d. */
export abstract class QuantLayer extends Module {
  /** Type of the float layer this replaced. */
  abstract readonly layerType: 'Conv2d' | 'Conv1d' | 'Linear';
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly weightQuantizer: Quantizer | null;
  readonly inputQuantizer: Quantizer | null;
  /**
   * Output channels pruned by the weight spec (its `channelBits` entries equal to 0), ascending, or
   * null. A pruned channel's weights and bias (BN-folded shift for QuantConvBn2d) are multiplied
   * by 0 in every forward and in `exportLayer`, so its output is exactly 0 — in calibration too,
   * where the weight quantizer passes the float weight through.
   */
  readonly prunedChannels: readonly number[] | null;
  /** 1 for kept, 0 for pruned output channels (null when none is pruned). */
  private readonly channelMask: Float64Array | null;
  /**
   * Quantizes the gradient entering this layer's output in training (DoReFa's quantized backward);
   * null keeps it float. Set by quantizeActivationGradients (or prepareQat's `activationGradients`).
   */
  activationGradientQuantizer: ActivationGradientQuantizer | null = null;

  constructor(weight: Tensor, bias: Tensor | null, weightQuantizer: Quantizer | null, inputQuantizer: Quantizer | null) {
    super();
    this.weight = registerKeepingFlag(this, 'weight', weight);
    this.bias = bias ? registerKeepingFlag(this, 'bias', bias) : null;
    this.weightQuantizer = weightQuantizer ? this.registerModule('weightQuantizer', weightQuantizer) : null;
    this.inputQuantizer = inputQuantizer ? this.registerModule('inputQuantizer', inputQuantizer) : null;
    const bits = weightQuantizer?.spec['channelBits'];
    const pruned = Array.isArray(bits) ? bits.flatMap((b, c) => (b === 0 ? [c] : [])) : [];
    if (pruned.length > 0 && (bits as unknown[]).length !== weight.shape[0]) throw new Error(`channelBits lists ${(bits as unknown[]).length} channels for a weight of ${weight.shape[0]} output channels`);
    this.prunedChannels = pruned.length > 0 ? pruned : null;
    this.channelMask = pruned.length > 0 ? Float64Array.from(bits as number[], (b) => (b === 0 ? 0 : 1)) : null;
  }

  /** `w` [O, ...] with the pruned output channels' rows multiplied by 0. */
  protected maskWeight(w: Tensor): Tensor {
    const m = this.channelMask;
    if (!m) return w;
    const data = w.dtype === 'float64' ? Float64Array.from(m) : Float32Array.from(m);
    return mul(w, new Tensor(data, [m.length, ...w.shape.slice(1).map(() => 1)]));
  }

  /** A bias [O] with the pruned channels multiplied by 0. */
  protected maskBias(b: Tensor | null): Tensor | null {
    const m = this.channelMask;
    if (!m || !b) return b;
    return mul(b, new Tensor(b.dtype === 'float64' ? Float64Array.from(m) : Float32Array.from(m), [m.length]));
  }

  get weightSpec(): QuantizerSpec | null {
    return this.weightQuantizer?.spec ?? null;
  }

  get activationSpec(): QuantizerSpec | null {
    return this.inputQuantizer?.spec ?? null;
  }

  /** The input fake-quantized (identity when there is no input quantizer or it is disabled). */
  protected quantizeInput(x: Tensor): Tensor {
    const q = this.inputQuantizer;
    return q && q.fakeQuantEnabled ? q.forward(x) : x;
  }

  /** The layer output, with its gradient quantized in training when activationGradientQuantizer is set. */
  protected quantizeOutputGradient(y: Tensor): Tensor {
    const q = this.activationGradientQuantizer;
    return q && this.training ? q.apply(y) : y;
  }

  /** A weight fake-quantized (identity when float or disabled). */
  protected quantizeWeight(w: Tensor): Tensor {
    const q = this.weightQuantizer;
    return q && q.fakeQuantEnabled ? q.forward(w) : w;
  }

  /** Float weight and bias as the integer model sees them (BN-folded where there is a BN). */
  protected abstract exportedWeightAndBias(): { weight: Tensor; bias: Tensor | null };

  protected abstract geometry(): LayerGeometry;

  /**
   * Weight, bias and quantization parameters for conversion to an integer model. Call it in eval
   * mode: the weight quantizer is run once on the exported weight (without gradient) so that
   * range-based quantizers describe exactly that weight.
   */
  exportLayer(): ExportedLayer {
    return noGrad(() => {
      const { weight, bias } = this.exportedWeightAndBias();
      const weightFakeQuant = this.maskWeight(this.weightQuantizer ? this.weightQuantizer.forward(weight) : weight);
      return {
        geometry: this.geometry(),
        weightFloat: weight,
        bias: this.maskBias(bias),
        weightFakeQuant,
        weightQuant: this.weightQuantizer?.exportQuant() ?? null,
        activationQuant: this.inputQuantizer?.exportQuant() ?? null,
      };
    });
  }
}

/** Registers an existing parameter without changing whether it is trainable. */
function registerKeepingFlag(module: Module, name: string, tensor: Tensor): Tensor {
  const flag = tensor.requiresGrad;
  module.registerParameter(name, tensor);
  tensor.requiresGrad_(flag);
  return tensor;
}

/** Linear with fake-quantized input and weight: y = q_a(x)·q_w(W)ᵀ + b. */
export class QuantLinear extends QuantLayer {
  readonly layerType = 'Linear';
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(layer: Linear, weightQuantizer: Quantizer | null, inputQuantizer: Quantizer | null) {
    super(layer.weight, layer.bias, weightQuantizer, inputQuantizer);
    this.inFeatures = layer.inFeatures;
    this.outFeatures = layer.outFeatures;
    this.training = layer.training;
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new Error(`QuantLinear(${this.inFeatures}, ${this.outFeatures}): input has shape [${x.shape.join(', ')}], last dim should be ${this.inFeatures}`);
    }
    return this.quantizeOutputGradient(linear(this.quantizeInput(x), this.maskWeight(this.quantizeWeight(this.weight)), this.maskBias(this.bias)));
  }

  protected exportedWeightAndBias(): { weight: Tensor; bias: Tensor | null } {
    return { weight: this.weight.detach(), bias: this.bias?.detach() ?? null };
  }

  protected geometry(): LayerGeometry {
    return { type: 'linear', inFeatures: this.inFeatures, outFeatures: this.outFeatures };
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}

/**
 * Conv2d's geometry, copied so the quantized layers compute exactly what the float one did. A
 * Conv1d's is held as that of a conv2d on height 1 (kernelSize [1, k], stride [1, s], padding
 * [0, p], dilation [1, d]), which is how Conv1d computes: its weight stays the [O, C/g, k] tensor
 * (quantized as it is, per output channel along axis 0) and `conv` views input and weight as 4-D.
 */
abstract class QuantConvBase extends QuantLayer {
  readonly layerType: 'Conv2d' | 'Conv1d';
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  /** 1 for a Conv1d (input [N, C, L]), 2 for a Conv2d (input [N, C, H, W]). */
  readonly spatialDims: 1 | 2;

  constructor(conv: Conv2d | Conv1d, weightQuantizer: Quantizer | null, inputQuantizer: Quantizer | null) {
    super(conv.weight, conv.bias, weightQuantizer, inputQuantizer);
    this.inChannels = conv.inChannels;
    this.outChannels = conv.outChannels;
    if (conv instanceof Conv1d) {
      this.layerType = 'Conv1d';
      this.spatialDims = 1;
      this.kernelSize = [1, conv.kernelSize];
      this.stride = [1, conv.stride];
      this.padding = [0, conv.padding];
      this.dilation = [1, conv.dilation];
    } else {
      this.layerType = 'Conv2d';
      this.spatialDims = 2;
      this.kernelSize = [...conv.kernelSize];
      this.stride = [...conv.stride];
      this.padding = [...conv.padding];
      this.dilation = [...conv.dilation];
    }
    this.groups = conv.groups;
    this.training = conv.training;
  }

  protected checkInput(x: Tensor): void {
    const rank = this.spatialDims + 2;
    if (x.rank !== rank || x.shape[1] !== this.inChannels) {
      const dims = this.spatialDims === 1 ? 'L' : 'H, W';
      throw new Error(`${this.constructor.name}(${this.inChannels}, ${this.outChannels}): expected input [N, ${this.inChannels}, ${dims}], got [${x.shape.join(', ')}]`);
    }
  }

  /** Shape [O, 1, …] that broadcasts a per-output-channel vector over the weight. */
  protected channelShape(): number[] {
    return [this.outChannels, ...new Array<number>(this.spatialDims + 1).fill(1)];
  }

  protected conv(x: Tensor, weight: Tensor, bias: Tensor | null): Tensor {
    const attrs = { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups };
    if (this.spatialDims === 2) return conv2d(x, weight, bias, attrs);
    const [n, c, length] = x.shape as [number, number, number];
    const w = reshape(weight, [weight.shape[0]!, weight.shape[1]!, 1, weight.shape[2]!]);
    const y = conv2d(reshape(x, [n, c, 1, length]), w, bias, attrs);
    return reshape(y, [n, this.outChannels, y.shape[3]!]);
  }

  protected geometry(): LayerGeometry {
    return {
      type: 'conv2d', inChannels: this.inChannels, outChannels: this.outChannels, kernelSize: this.kernelSize,
      stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups,
      ...(this.spatialDims === 1 ? { conv1d: true } : {}),
    };
  }

  override extraRepr(): string {
    if (this.spatialDims === 1) return `${this.inChannels}, ${this.outChannels}, kernelSize=${this.kernelSize[1]}, stride=${this.stride[1]}, padding=${this.padding[1]}, dilation=${this.dilation[1]}, groups=${this.groups}`;
    return `${this.inChannels}, ${this.outChannels}, kernelSize=${this.kernelSize.join('x')}, stride=${this.stride.join('x')}, padding=${this.padding.join('x')}`;
  }
}

/** Conv2d with fake-quantized input and weight: y = conv(q_a(x), q_w(W)) + b (base of QuantConv1d). */
export class QuantConv2d extends QuantConvBase {
  constructor(conv: Conv2d | Conv1d, weightQuantizer: Quantizer | null, inputQuantizer: Quantizer | null) {
    super(conv, weightQuantizer, inputQuantizer);
  }

  forward(x: Tensor): Tensor {
    this.checkInput(x);
    return this.quantizeOutputGradient(this.conv(this.quantizeInput(x), this.maskWeight(this.quantizeWeight(this.weight)), this.maskBias(this.bias)));
  }

  /**
   * pool(relu(conv(q_a(x), q_w(W)) + b)) with the conv, bias, ReLU (and pooling) as one
   * `conv2dFused` op, as `forwardChain` runs a float Conv2d → ReLU → MaxPool2d chain; equal to
   * `forward` followed by the ReLU and pooling layers. With quantized activation gradients in
   * training, the conv's output gradient must be reachable, so the three run as separate ops.
   */
  forwardFused(x: Tensor, options: { relu: boolean; pool: FusedPool | null }): Tensor {
    this.checkInput(x);
    if (this.activationGradientQuantizer && this.training) {
      const y = this.forward(x);
      const pool = options.pool;
      if (pool) return maxPool2d(y, pool.kernel, { stride: pool.stride, relu: options.relu });
      return options.relu ? relu(y) : y;
    }
    return conv2dFused(this.quantizeInput(x), this.maskWeight(this.quantizeWeight(this.weight)), this.maskBias(this.bias), {
      stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups, relu: options.relu, pool: options.pool,
    });
  }

  protected exportedWeightAndBias(): { weight: Tensor; bias: Tensor | null } {
    return { weight: this.weight.detach(), bias: this.bias?.detach() ?? null };
  }
}

/**
 * Conv2d followed by BatchNorm2d, with the BN folded into the conv during QAT (Jacob et al. 2018,
 * "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
 * §3.2 and appendix; torch.ao's ConvBn2d keeps the same state).
 *
 * Training (batch statistics): y₀ = conv(x̂, W) gives the batch mean μ and biased variance σ²
 * per channel (gradients flow through them); the weight is folded before quantization,
 *   W_fold = W·γ/√(σ² + ε),   b_fold = β − γ·μ/√(σ² + ε)   (a conv bias b cancels against μ),
 *   y = conv(x̂, q_w(W_fold)) + b_fold,
 * and the running statistics are updated from μ + b and the unbiased σ² as BatchNorm does.
 * Eval (or `freezeBatchNormStats`): the running statistics fold instead,
 *   W_fold = W·γ/√(σ²_run + ε),   b_fold = β + (b − μ_run)·γ/√(σ²_run + ε).
 * With fake quantization off this equals conv → BN in both modes up to rounding.
 *
 * The BatchNorm2d module is kept as the child `bn` (its γ, β and running buffers are the same
 * tensors); prepareQat replaces the BN's old place with Identity.
 */
export class QuantConvBn2d extends QuantConvBase {
  readonly bn: BatchNorm2d | BatchNorm1d;
  /** Use (and stop updating) the running statistics in training too (Jacob et al.'s BN freezing). */
  freezeBatchNormStats = false;

  constructor(conv: Conv2d | Conv1d, bn: BatchNorm2d | BatchNorm1d, weightQuantizer: Quantizer | null, inputQuantizer: Quantizer | null) {
    super(conv, weightQuantizer, inputQuantizer);
    if (bn.numFeatures !== conv.outChannels) throw new Error(`${this.constructor.name}: ${bn.constructor.name}(${bn.numFeatures}) does not match ${conv.constructor.name} with ${conv.outChannels} output channels`);
    this.bn = this.registerModule('bn', bn);
  }

  forward(x: Tensor): Tensor {
    this.checkInput(x);
    const xq = this.quantizeInput(x);
    const bn = this.bn;
    const useBatchStats = (this.training && !this.freezeBatchNormStats) || !bn.trackRunningStats;
    let scale: Tensor;
    let shift: Tensor;
    if (useBatchStats) {
      const y0 = this.conv(xq, this.weight, null);
      const count = y0.size / this.outChannels;
      if (count <= 1 && this.training) throw new Error(`${this.constructor.name}: expected more than 1 value per channel in training, got conv output [${y0.shape.join(', ')}]`);
      // Mean and biased variance per channel as one differentiable primitive (one pass over y0;
      // its backward one elementwise expression) instead of mean / sub / mul / mean over y0.
      const stats = batchNormStats(y0);
      const batchMean = reshape(narrow(stats, 0, 0, 1), [this.outChannels]);
      const batchVar = reshape(narrow(stats, 0, 1, 1), [this.outChannels]);
      if (this.training && bn.trackRunningStats) this.updateRunningStats(batchMean, batchVar, count);
      scale = div(this.gamma(), sqrt(add(batchVar, bn.eps)));
      shift = sub(this.beta(), mul(batchMean, scale));
    } else {
      ({ scale, shift } = this.runningFold());
    }
    const folded = mul(this.weight, reshape(scale, this.channelShape()));
    return this.quantizeOutputGradient(this.conv(xq, this.maskWeight(this.quantizeWeight(folded)), this.maskBias(shift)));
  }

  /** γ/√(σ²_run + ε) and β + (b − μ_run)·γ/√(σ²_run + ε) (γ, β as tensors, so gradients reach them). */
  private runningFold(): { scale: Tensor; shift: Tensor } {
    const bn = this.bn;
    if (!bn.runningMean || !bn.runningVar) throw new Error(`${this.constructor.name}: the ${bn.constructor.name} tracks no running statistics, so it cannot be folded for inference`);
    const n = this.outChannels;
    const dtype = this.weight.dtype === 'float64' ? 'float64' : 'float32';
    const invStd = zeros([n], dtype);
    const biasMinusMean = zeros([n], dtype);
    for (let c = 0; c < n; c++) {
      invStd.data[c] = 1 / Math.sqrt(bn.runningVar.data[c]! + bn.eps);
      biasMinusMean.data[c] = -bn.runningMean.data[c]!;
    }
    const scale = mul(this.gamma(), invStd);
    const centredBias = this.bias ? add(biasMinusMean, this.bias) : biasMinusMean;
    return { scale, shift: add(this.beta(), mul(centredBias, scale)) };
  }

  private gamma(): Tensor {
    return this.bn.weight ?? new Tensor(new Float32Array(this.outChannels).fill(1), [this.outChannels]);
  }

  private beta(): Tensor {
    return this.bn.bias ?? zeros([this.outChannels]);
  }

  /** running = (1 − m)·running + m·batch, on μ + b and the unbiased variance (BatchNorm's rule). */
  private updateRunningStats(batchMean: Tensor, batchVar: Tensor, count: number): void {
    const bn = this.bn;
    const tracked = bn.numBatchesTracked!.data;
    tracked[0] = tracked[0]! + 1;
    const factor = bn.momentum ?? 1 / tracked[0]!;
    const unbias = count / (count - 1);
    const runningMean = bn.runningMean!.data;
    const runningVar = bn.runningVar!.data;
    for (let c = 0; c < this.outChannels; c++) {
      const mu = batchMean.data[c]! + (this.bias ? this.bias.data[c]! : 0);
      runningMean[c] = (1 - factor) * runningMean[c]! + factor * mu;
      runningVar[c] = (1 - factor) * runningVar[c]! + factor * batchVar.data[c]! * unbias;
    }
  }

  protected exportedWeightAndBias(): { weight: Tensor; bias: Tensor | null } {
    const { scale, shift } = this.runningFold();
    const weight = mul(this.weight, reshape(scale, this.channelShape()));
    return { weight: weight.detach(), bias: shift.detach() };
  }

  override extraRepr(): string {
    return `${super.extraRepr()}, foldedBatchNorm=true${this.freezeBatchNormStats ? ', frozenStats=true' : ''}`;
  }
}

/**
 * Conv1d with fake-quantized input and weight: y = conv1d(q_a(x), q_w(W)) + b, x [N, C, L], W
 * [O, C/g, k] quantized per tensor or per output channel (axis 0). It is a QuantConv2d on height 1
 * (the conv runs as conv2d on [N, C, 1, L] with kernel [1, k]), so everything that handles a
 * QuantConv2d (convert, the float64 simulation, calibration, export) handles it; its exported
 * geometry says `conv1d: true`.
 */
export class QuantConv1d extends QuantConv2d {
  constructor(conv: Conv1d, weightQuantizer: Quantizer | null, inputQuantizer: Quantizer | null) {
    super(conv, weightQuantizer, inputQuantizer);
  }
}

/**
 * Conv1d followed by BatchNorm1d with the BN folded in during QAT: QuantConvBn2d's formulas with
 * the statistics taken over [N, L] instead of [N, H, W] (see QuantConvBn2d).
 */
export class QuantConvBn1d extends QuantConvBn2d {
  constructor(conv: Conv1d, bn: BatchNorm1d, weightQuantizer: Quantizer | null, inputQuantizer: Quantizer | null) {
    super(conv, bn, weightQuantizer, inputQuantizer);
  }
}
