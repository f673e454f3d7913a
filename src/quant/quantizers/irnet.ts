import { noGrad } from '../../autograd/engine.ts';
import { div, maximum, mean, mul, sqrt, sub, variance } from '../../tensor/ops.ts';
import { full, zeros } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { signSte } from '../core/quantize.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, constant, meanAbsPerChannel, numberOption, progressOf, reduceAxes, resolveFormat, broadcastParamShape } from './common.ts';

/**
 * IR-Net / DIR-Net binarization (Qin et al., "Forward and Backward Information Retention for
 * Accurate Binary Neural Networks", CVPR 2020; "Distribution-sensitive Information Retention",
 * IJCV 2023): libra parameter binarization with the error decay estimator (EDE).
 *
 * Weights, per output channel (or tensor): balance and standardize
 *   ŵ = (w − mean(w)) / std(w)   (std unbiased, n − 1, as torch's default),
 * then y = sign(ŵ)·2^round(log2(mean|ŵ|)) — a power-of-two scale (a bit shift at inference),
 * computed without gradient. Activations: y = sign(x).
 * Gradient (EDE): ∂sign(z)/∂z ≈ k·t·(1 − tanh²(t·z)), then exactly through the standardization:
 *   ∂L/∂w = (1/σ)·(h − mean(h) − ŵ·⟨ŵ, h⟩/(n − 1)),   h = ∂L/∂ŵ = 2^(·)·k·t·(1 − tanh²(t·ŵ))·g.
 * Annealing by progress p = epoch/E (`setProgress`): t = T_min·10^(p·log10(T_max/T_min)),
 * k = max(1/t, 1), with T_min = `tMin` (0.1) and T_max = `tMax` (10).
 * Export: 'binary' with α = the power-of-two scale per channel; convert encodes sign(forward(w)).
 * Spec options: bits = 1, granularity, tMin, tMax.
 */
export class IrNetQuantizer extends BaseQuantizer {
  readonly tMin: number;
  readonly tMax: number;
  readonly progress: Tensor;
  readonly alpha: Tensor;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { minBits: 1, maxBits: 1 });
    super(spec, format);
    this.tMin = numberOption(spec, 'tMin', 0.1);
    this.tMax = numberOption(spec, 'tMax', 10);
    if (!(this.tMin > 0 && this.tMax >= this.tMin)) throw new Error(`quantizer 'irnet': need 0 < tMin <= tMax, got ${this.tMin}, ${this.tMax}`);
    this.progress = this.registerBuffer('progress', zeros([1]));
    this.alpha = this.registerBuffer('alpha', full([format.count], 1));
  }

  override setProgress(epoch: number, totalEpochs: number): void {
    this.progress.data[0] = progressOf(epoch, totalEpochs);
  }

  /** The EDE parameters (t, k) at the current progress. */
  edeParameters(): { t: number; k: number } {
    const p = this.progress.data[0]!;
    const t = this.tMin * 10 ** (p * Math.log10(this.tMax / this.tMin));
    return { t, k: Math.max(1 / t, 1) };
  }

  protected quantize(x: Tensor): Tensor {
    const { t, k } = this.edeParameters();
    if (this.role === 'activation') return signSte(x, 'ede', t, k);
    const axes = reduceAxes(x.rank, this.format.axis);
    const n = axes.reduce((p, a) => p * x.shape[a]!, 1);
    const centered = sub(x, mean(x, axes, true));
    const unbiased = n > 1 ? mul(variance(x, axes, true), n / (n - 1)) : variance(x, axes, true);
    const standardized = div(centered, maximum(sqrt(unbiased), 1e-12));
    const scale = noGrad(() => {
      const m = meanAbsPerChannel(standardized, this.format.axis);
      const s = Array.from(m, (v) => (v > 0 ? 2 ** Math.round(Math.log2(v)) : 1));
      this.alpha.data.set(s);
      return constant(s, broadcastParamShape(x.shape, this.format.axis), x.dtype);
    });
    return mul(signSte(standardized, 'ede', t, k), scale);
  }

  exportQuant(): ExportedQuant {
    return { type: 'binary', alpha: Float32Array.from(this.alpha.data), axis: this.role === 'weight' ? this.format.axis : null };
  }
}

export function createIrNetQuantizer(spec: QuantizerSpec, context: QuantizerContext): IrNetQuantizer {
  return new IrNetQuantizer(spec, context);
}
