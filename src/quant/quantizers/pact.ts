import { noGrad } from '../../autograd/engine.ts';
import { apply, greaterEqual, lessEqual, maximum, mul, neg, reshape, sum, where, cast } from '../../tensor/ops.ts';
import { full } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import type { QParams } from '../core/qparams.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, constant, numberOption, resolveFormat, straightThrough } from './common.ts';

/**
 * PACT — parameterized clipping activation (Choi et al., "PACT: Parameterized Clipping
 * Activation for Quantized Neural Networks", 2018). Activations only.
 *
 * Forward: y = clamp(x, 0, α) (signed: clamp(x, −α, α)) with α a learned parameter (init `alpha`,
 * default 10), then k-bit uniform quantization y_q = round(y/s)·s with s = α/(2^k − 1)
 * (signed: s = α/(2^(k−1) − 1)). This equals the affine quantizer (s, z = 0) on x.
 * Gradient (the paper's eq. 3, straight-through for the rounding):
 *   ∂y_q/∂x = 1 on 0 ≤ x < α (signed: −α < x < α), else 0;
 *   ∂y_q/∂α = 1 where x ≥ α (signed: −1 where x ≤ −α), else 0.
 * `regularization()` returns the L2 penalty λ·α² (λ = `alphaL2`, default 0) to add to the loss.
 *
 * Spec options: bits (≥ 1; ≥ 2 signed), signed, alpha, alphaL2.
 */
export class PactQuantizer extends BaseQuantizer {
  readonly alpha: Tensor;
  readonly alphaL2: number;
  /** Largest integer level n: s = α/n. */
  readonly levels: number;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    if (context.role !== 'activation') throw new Error("quantizer 'pact' clips activations; use 'dorefa', 'lsq' or 'ste' for weights");
    const format = resolveFormat(spec, context, { minBits: 1 });
    super(spec, format);
    this.levels = format.signed ? 2 ** (format.bits - 1) - 1 : 2 ** format.bits - 1;
    if (this.levels < 1) throw new Error("quantizer 'pact': signed PACT needs at least 2 bits");
    const init = numberOption(spec, 'alpha', 10);
    if (!(init > 0)) throw new Error(`quantizer 'pact': alpha must be positive, got ${init}`);
    this.alpha = this.registerParameter('alpha', full([1], init));
    this.alphaL2 = numberOption(spec, 'alphaL2', 0);
  }

  protected quantize(x: Tensor): Tensor {
    const a = reshape(cast(this.alpha, x.dtype), []);
    let clipped = where(greaterEqual(x, a), a, this.format.signed ? maximum(x, neg(a)) : maximum(x, 0));
    if (this.format.signed) clipped = where(lessEqual(x, neg(a)), neg(a), clipped);
    const value = noGrad(() => {
      const qp = this.qparams();
      const s = constant([qp.scale[0]!], [], x.dtype);
      const z = constant([0], [], x.dtype);
      return apply('fakeQuantize', [x.detach(), s, z], { qmin: qp.qmin, qmax: qp.qmax, gradient: 'clipped' });
    });
    return straightThrough(value, clipped);
  }

  /** λ·α², a scalar to add to the training loss (zero when `alphaL2` is 0). */
  regularization(): Tensor {
    return mul(sum(mul(this.alpha, this.alpha)), this.alphaL2);
  }

  /** s = α/n, z = 0, range [0, n] (signed [−n, n]). */
  qparams(): QParams {
    const alpha = Math.abs(this.alpha.data[0]!);
    const n = this.levels;
    return {
      scale: Float32Array.of(Math.max(alpha / n, 1e-12)), zeroPoint: new Int32Array(1),
      bits: this.format.bits, qmin: this.format.signed ? -n : 0, qmax: n, axis: null, groupSize: null,
    };
  }

  exportQuant(): ExportedQuant {
    return { type: 'affine', qparams: this.qparams() };
  }
}

export function createPactQuantizer(spec: QuantizerSpec, context: QuantizerContext): PactQuantizer {
  return new PactQuantizer(spec, context);
}
