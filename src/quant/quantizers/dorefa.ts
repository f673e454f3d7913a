import { noGrad } from '../../autograd/engine.ts';
import { abs, add, apply, clamp, div, max, mul, sub, tanh } from '../../tensor/ops.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { roundSte } from '../core/quantize.ts';
import type { QParams } from '../core/qparams.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { BaseQuantizer, constant, reduceAxes, resolveFormat, straightThrough } from './common.ts';

/**
 * DoReFa-Net quantizers (Zhou et al., "DoReFa-Net: Training Low Bitwidth Convolutional Neural
 * Networks with Low Bitwidth Gradients", 2016), with Q_k(r) = round((2^k − 1)·r)/(2^k − 1) on [0, 1].
 *
 * Weights: w_q = 2·Q_k( tanh(w) / (2·max|tanh(w)|) + 1/2 ) − 1, the max taken per output channel
 * (granularity 'channel', default) or over the tensor ('tensor', as in the paper). Values lie on
 * the 2^k-level grid {2i/(2^k − 1) − 1} ⊂ [−1, 1] (no zero level for k ≥ 1).
 * Gradient: round by `roundSte` (identity), the rest exact, i.e. through tanh and through the
 * max (the paper's graph): with t = tanh(w), m = max|t|, u = t/(2m) + 1/2,
 *   ∂L/∂w_i = (1 − t_i²)·[ g_i/m − 1{i = argmax}·sign(t_i)·Σ_j g_j·t_j / m² ],  g = ∂L/∂w_q.
 * Activations: y = Q_k(clamp(x, 0, 1)); gradient 1 on 0 ≤ x ≤ 1, else 0 (the forward is the
 * affine quantizer s = 1/(2^k − 1), z = 0, so export matches it bit for bit).
 *
 * Export: weights as a 'codebook' of the 2^k levels (the grid has no integer zero point; 'binary'
 * with α = 1 at k = 1); activations 'affine'. Convert encodes the eval output of `forward(w)`.
 */
export class DorefaQuantizer extends BaseQuantizer {
  readonly n: number;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { minBits: 1 });
    super(spec, format);
    this.n = 2 ** format.bits - 1;
  }

  protected quantize(x: Tensor): Tensor {
    return this.role === 'weight' ? this.quantizeWeight(x) : this.quantizeActivation(x);
  }

  private quantizeWeight(w: Tensor): Tensor {
    const t = tanh(w);
    const m = max(abs(t), reduceAxes(w.rank, this.format.axis), true);
    const u = add(div(t, mul(m, 2)), 0.5);
    const qu = div(roundSte(mul(u, this.n)), this.n);
    return sub(mul(qu, 2), 1);
  }

  private quantizeActivation(x: Tensor): Tensor {
    const clipped = clamp(x, 0, 1);
    const value = noGrad(() => {
      const qp = this.activationQParams();
      return apply('fakeQuantize', [x.detach(), constant(qp.scale, [], x.dtype), constant([0], [], x.dtype)], { qmin: 0, qmax: this.n, gradient: 'clipped' });
    });
    return straightThrough(value, clipped);
  }

  private activationQParams(): QParams {
    return { scale: Float32Array.of(1 / this.n), zeroPoint: new Int32Array(1), bits: this.format.bits, qmin: 0, qmax: this.n, axis: null, groupSize: null };
  }

  /** The weight levels, ascending, computed with the forward's float32 operations. */
  weightLevels(): Float32Array {
    const levels = new Float32Array(this.n + 1);
    for (let i = 0; i <= this.n; i++) levels[i] = Math.fround(Math.fround(2 * Math.fround(i / this.n)) - 1);
    return levels;
  }

  exportQuant(): ExportedQuant {
    if (this.role === 'activation') return { type: 'affine', qparams: this.activationQParams() };
    if (this.format.bits === 1) return { type: 'binary', alpha: Float32Array.of(1), axis: null };
    return { type: 'codebook', levels: this.weightLevels(), axis: null };
  }
}

export function createDorefaQuantizer(spec: QuantizerSpec, context: QuantizerContext): DorefaQuantizer {
  return new DorefaQuantizer(spec, context);
}
