import { zeros } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, channelIndexOf, constant, meanAbsPerChannel, numberOption, resolveFormat, straightThrough } from './common.ts';

/**
 * Ternary weight networks — TWN (Li & Liu, "Ternary Weight Networks", 2016).
 *
 * Per output channel (or tensor): threshold Δ = f·mean|w| (f = `thresholdFactor`, 0.7 as the
 * paper's approximation of the optimal threshold), α = mean of |w_i| over {i : |w_i| > Δ}, and
 *   y_i = α·sign(w_i) if |w_i| > Δ, else 0       (values {−α, 0, +α}).
 * Gradient: straight-through, ∂y/∂w = 1 (Δ and α are constants of the step).
 * Export: 'ternary' with α and Δ per channel. Spec options: bits = 2, granularity, thresholdFactor.
 */
export class TernaryQuantizer extends BaseQuantizer {
  readonly thresholdFactor: number;
  readonly alpha: Tensor;
  readonly threshold: Tensor;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { minBits: 2, maxBits: 2 });
    super(spec, format);
    this.thresholdFactor = numberOption(spec, 'thresholdFactor', 0.7);
    this.alpha = this.registerBuffer('alpha', zeros([format.count]));
    this.threshold = this.registerBuffer('threshold', zeros([format.count]));
  }

  protected quantize(x: Tensor): Tensor {
    const axis = this.format.axis;
    const count = this.format.count;
    const idx = channelIndexOf(x.shape, axis);
    const delta = meanAbsPerChannel(x, axis).map((m) => this.thresholdFactor * m);
    const sums = new Float64Array(count);
    const counts = new Float64Array(count);
    for (let i = 0; i < x.size; i++) {
      const a = Math.abs(x.data[i]!);
      if (a > delta[idx(i)]!) {
        sums[idx(i)]! += a;
        counts[idx(i)]! += 1;
      }
    }
    const alpha = sums.map((s, c) => (counts[c]! > 0 ? s / counts[c]! : 0));
    this.alpha.data.set(alpha);
    this.threshold.data.set(delta);
    const alpha32 = Float32Array.from(this.alpha.data);
    const out = new Float64Array(x.size);
    for (let i = 0; i < x.size; i++) {
      const v = x.data[i]!;
      const c = idx(i);
      out[i] = Math.abs(v) > delta[c]! ? (v > 0 ? alpha32[c]! : -alpha32[c]!) : 0;
    }
    return straightThrough(constant(out, x.shape, x.dtype), x);
  }

  exportQuant(): ExportedQuant {
    return { type: 'ternary', alpha: Float32Array.from(this.alpha.data), threshold: Float32Array.from(this.threshold.data), axis: this.format.axis };
  }
}

export function createTernaryQuantizer(spec: QuantizerSpec, context: QuantizerContext): TernaryQuantizer {
  return new TernaryQuantizer(spec, context);
}
