import { isGradEnabled } from '../autograd/engine.ts';
import { add, batchNorm, batchNormStats, clamp, div, mean, mul, ones, reshape, sqrt, sub, Tensor, zeros } from '../tensor/index.ts';
import { Module } from './module.ts';

export interface BatchNormOptions {
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
  /**
   * Weight of the new batch in the running averages (default 0.1):
   * running = (1 − momentum)·running + momentum·batch. `null` means a cumulative average.
   */
  momentum?: number | null;
  /** Learn a per-channel scale `weight` and shift `bias` (default true). */
  affine?: boolean;
  /** Keep running mean/var buffers for eval mode (default true). */
  trackRunningStats?: boolean;
}

/**
 * Batch normalisation over the channel dim 1 (shared by BatchNorm1d and BatchNorm2d), PyTorch's
 * semantics: in training, normalise with the batch mean and biased variance, and update the
 * running mean and the running *unbiased* variance; in eval, normalise with the running statistics.
 * Buffers: `runningMean`, `runningVar`, `numBatchesTracked` (int32 scalar).
 */
export abstract class BatchNorm extends Module {
  readonly numFeatures: number;
  readonly eps: number;
  readonly momentum: number | null;
  readonly affine: boolean;
  readonly trackRunningStats: boolean;
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly runningMean: Tensor | null;
  readonly runningVar: Tensor | null;
  readonly numBatchesTracked: Tensor | null;

  constructor(numFeatures: number, options: BatchNormOptions = {}) {
    super();
    this.numFeatures = numFeatures;
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum === undefined ? 0.1 : options.momentum;
    this.affine = options.affine ?? true;
    this.trackRunningStats = options.trackRunningStats ?? true;
    this.weight = this.affine ? this.registerParameter('weight', ones([numFeatures])) : null;
    this.bias = this.affine ? this.registerParameter('bias', zeros([numFeatures])) : null;
    if (this.trackRunningStats) {
      this.runningMean = this.registerBuffer('runningMean', zeros([numFeatures]));
      this.runningVar = this.registerBuffer('runningVar', ones([numFeatures]));
      this.numBatchesTracked = this.registerBuffer('numBatchesTracked', zeros([], 'int32'));
    } else {
      this.runningMean = null;
      this.runningVar = null;
      this.numBatchesTracked = null;
    }
  }

  /** Throws unless `x` has a rank this layer accepts and `numFeatures` channels. */
  protected abstract checkInput(x: Tensor): void;

  /** Running statistics back to mean 0, variance 1, no batches seen. */
  resetRunningStats(): void {
    this.runningMean?.data.fill(0);
    this.runningVar?.data.fill(1);
    this.numBatchesTracked?.data.fill(0);
  }

  forward(x: Tensor): Tensor {
    return this.normalise(x, null);
  }

  /**
   * clamp(forward(x), lo, hi) -- this layer followed by ReLU6 (0, 6) -- as one batchNorm op when it
   * normalises with batch statistics through the primitive (training): no separate clamp output,
   * and clamp's gradient is applied inside batchNorm's backward. Otherwise the two in turn.
   * nn/fusion.ts calls it for a BatchNorm2d → ReLU6 pair.
   */
  forwardClamped(x: Tensor, lo: number, hi: number): Tensor {
    return this.normalise(x, [lo, hi]);
  }

  private normalise(x: Tensor, range: readonly [number, number] | null): Tensor {
    this.checkInput(x);
    const axes = x.shape.map((_, i) => i).filter((i) => i !== 1);
    const view = x.shape.map((d, i) => (i === 1 ? d : 1));
    const useBatchStats = this.training || !this.trackRunningStats;
    const clamped = (y: Tensor): Tensor => (range ? clamp(y, range[0], range[1]) : y);
    if (!useBatchStats) return clamped(this.normaliseWithRunningStats(x, view));

    const count = x.size / this.numFeatures;
    if (count <= 1 && this.training) {
      throw new Error(`${this.constructor.name}: expected more than 1 value per channel in training, got input [${x.shape.join(', ')}]`);
    }
    if (this.weight && this.bias && x.dtype !== 'int32' && this.weight.dtype === x.dtype && this.bias.dtype === x.dtype) {
      // One primitive; the statistics for the running averages are handed to it, so that its
      // kernels do not compute them again (native: one pass over each channel forward, two backward).
      let stats: Tensor | null = null;
      if (this.training && this.trackRunningStats) {
        stats = batchNormStats(x.detach());
        const c = this.numFeatures;
        this.updateRunningStats(stats.data.subarray(0, c), stats.data.subarray(c), count);
      }
      return batchNorm(x, this.weight, this.bias, this.eps, stats, range);
    }
    return clamped(this.normaliseBatchComposed(x, axes, view, count));
  }

  /** Batch statistics through tensor ops (no affine parameters, or mixed dtypes). */
  private normaliseBatchComposed(x: Tensor, axes: number[], view: number[], count: number): Tensor {
    const batchMean = mean(x, axes, true);
    const centered = sub(x, batchMean);
    const batchVar = mean(mul(centered, centered), axes, true);
    if (this.training && this.trackRunningStats) this.updateRunningStats(batchMean.data, batchVar.data, count);
    const invStd = div(1, sqrt(add(batchVar, this.eps)));
    if (!this.weight || !this.bias) return mul(centered, invStd);
    const scale = mul(reshape(this.weight, view), invStd);
    return add(mul(centered, scale), reshape(this.bias, view));
  }

  /**
   * What eval mode computes, y = x·scale + shift per channel, with scale = w/√(runningVar + eps)
   * and shift = b − runningMean·scale, as tensors of `dtype` [numFeatures]; null when this layer
   * normalises with batch statistics (training, or no running statistics). nn/fusion.ts folds
   * them into a preceding conv's epilogue at inference.
   */
  runningAffine(dtype: Tensor['dtype'] = 'float32'): { scale: Tensor; shift: Tensor } | null {
    if (this.training || !this.trackRunningStats) return null;
    const runningMean = this.runningMean!.data;
    const runningVar = this.runningVar!.data;
    const invStd = zeros([this.numFeatures], dtype);
    const negMean = zeros([this.numFeatures], dtype);
    for (let c = 0; c < this.numFeatures; c++) {
      invStd.data[c] = 1 / Math.sqrt(runningVar[c]! + this.eps);
      negMean.data[c] = -runningMean[c]!;
    }
    if (dtype === 'float32' && !(isGradEnabled() && (this.weight?.requiresGrad || this.bias?.requiresGrad))) {
      // Without a graph to record: the same float32 products and sum as the ops below, in one
      // loop (a product or sum of two float32 values rounded once to float32 is what mul and add
      // return), without 2–3 tiny kernel calls per layer.
      const w = this.weight?.data, b = this.bias?.data;
      const scale = invStd.data, shift = negMean.data;
      for (let c = 0; c < this.numFeatures; c++) {
        if (w) scale[c] = Math.fround(w[c]! * scale[c]!);
        shift[c] = Math.fround(shift[c]! * scale[c]!);
        if (b) shift[c] = Math.fround(shift[c]! + b[c]!);
      }
      return { scale: invStd, shift: negMean };
    }
    const scale = this.weight ? mul(this.weight, invStd) : invStd;
    const shift = mul(negMean, scale);
    return { scale, shift: this.bias ? add(shift, this.bias) : shift };
  }

  private normaliseWithRunningStats(x: Tensor, view: number[]): Tensor {
    const { scale, shift } = this.runningAffine(x.dtype)!;
    return add(mul(x, reshape(scale, view)), reshape(shift, view));
  }

  private updateRunningStats(batchMean: ArrayLike<number>, batchVar: ArrayLike<number>, count: number): void {
    // Plain writes into the buffers' data: no graph is recorded.
    const tracked = this.numBatchesTracked!.data;
    tracked[0] = tracked[0]! + 1;
    const factor = this.momentum ?? 1 / tracked[0]!;
    const unbias = count / (count - 1);
    const runningMean = this.runningMean!.data;
    const runningVar = this.runningVar!.data;
    for (let c = 0; c < this.numFeatures; c++) {
      runningMean[c] = (1 - factor) * runningMean[c]! + factor * batchMean[c]!;
      runningVar[c] = (1 - factor) * runningVar[c]! + factor * batchVar[c]! * unbias;
    }
  }

  override extraRepr(): string {
    return `${this.numFeatures}, eps=${this.eps}, momentum=${this.momentum}, affine=${this.affine}, trackRunningStats=${this.trackRunningStats}`;
  }
}

/** Batch normalisation of [N, C] or [N, C, L] inputs. */
export class BatchNorm1d extends BatchNorm {
  protected checkInput(x: Tensor): void {
    if ((x.rank !== 2 && x.rank !== 3) || x.shape[1] !== this.numFeatures) {
      throw new Error(`BatchNorm1d(${this.numFeatures}): expected input [N, ${this.numFeatures}] or [N, ${this.numFeatures}, L], got [${x.shape.join(', ')}]`);
    }
  }
}

/** Batch normalisation of [N, C, H, W] inputs. */
export class BatchNorm2d extends BatchNorm {
  protected checkInput(x: Tensor): void {
    if (x.rank !== 4 || x.shape[1] !== this.numFeatures) {
      throw new Error(`BatchNorm2d(${this.numFeatures}): expected input [N, ${this.numFeatures}, H, W], got [${x.shape.join(', ')}]`);
    }
  }
}
