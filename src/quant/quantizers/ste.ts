import { noGrad } from '../../autograd/engine.ts';
import { full, zeros } from '../../tensor/tensor.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { fakeQuantize } from '../core/quantize.ts';
import { qparamsFromRange, qRange, type QParams } from '../core/qparams.ts';
import { observeMinMax, updateRunningRange, type RangeObserverKind } from '../observers/minmax.ts';
import type { ExportedQuant, QuantizerContext, QuantizerSpec } from './quantizer.ts';
import { affineQParams, BaseQuantizer, choiceOption, numberOption, resolveFormat, toQuantSpec } from './common.ts';

/**
 * Min-max uniform fake quantization with a straight-through estimator (Bengio et al. 2013;
 * Courbariaux/Hubara et al., BinaryConnect and QNN, 2015–2016; Jacob et al. 2018 for the affine
 * min-max recipe).
 *
 * Forward: q = clamp(roundHalfEven(x/s) + z, qmin, qmax), y = (q − z)·s, with (s, z) from a range
 * [min, max] widened to contain 0 (`qparamsFromRange`):
 *   - weights: the current range of w, per output channel (or tensor / group), every step;
 *   - activations: a running range in buffers: EMA of batch min/max, r ← (1 − m)·r + m·batch
 *     (`observer: 'movingAverage'`, m = `momentum`, default 0.1) or all-time extremes
 *     (`observer: 'minMax'`), updated in training mode only.
 * Gradient: kind 'ste': ∂y/∂x = 1 everywhere; kind 'clippedSte': ∂y/∂x = 1 where x/s + z rounds
 * inside [qmin, qmax], else 0. The range is not learned (no gradient to s, z).
 *
 * Spec options: bits (≥ 2 signed, ≥ 1 unsigned), signed, symmetric, granularity
 * ('tensor' | 'channel' | 'group' + groupSize, weights), observer, momentum, gradient (overrides the kind).
 */
export class SteQuantizer extends BaseQuantizer {
  readonly gradient: 'ste' | 'clipped';
  readonly observer: RangeObserverKind;
  readonly momentum: number;
  readonly qmin: number;
  readonly qmax: number;
  /** Current scale and zero point, one per parameter set (what `exportQuant` returns). */
  readonly scale: Tensor;
  readonly zeroPoint: Tensor;
  /** Running activation range (activations only). */
  readonly runningMin: Tensor;
  readonly runningMax: Tensor;
  /** 1 once a range has been observed. */
  readonly observed: Tensor;

  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    const format = resolveFormat(spec, context, { group: true });
    super(spec, format);
    [this.qmin, this.qmax] = qRange(format);
    this.gradient = choiceOption(spec, 'gradient', ['ste', 'clipped'] as const, spec.kind === 'ste' ? 'ste' : 'clipped');
    this.observer = choiceOption(spec, 'observer', ['minMax', 'movingAverage'] as const, 'movingAverage');
    this.momentum = numberOption(spec, 'momentum', 0.1);
    if (!(this.momentum > 0 && this.momentum <= 1)) throw new Error(`quantizer '${spec.kind}': momentum must be in (0, 1], got ${this.momentum}`);
    this.scale = this.registerBuffer('scale', full([format.count], 1));
    this.zeroPoint = this.registerBuffer('zeroPoint', zeros([format.count]));
    this.runningMin = this.registerBuffer('runningMin', zeros([format.count]));
    this.runningMax = this.registerBuffer('runningMax', zeros([format.count]));
    this.observed = this.registerBuffer('observed', zeros([1]));
  }

  protected quantize(x: Tensor): Tensor {
    noGrad(() => this.observe(x));
    return fakeQuantize(x, this.qparams(), { gradient: this.gradient });
  }

  /** Updates the range from `x` (weights: always; activations: in training mode or before the first range) and the qparams. */
  private observe(x: Tensor): void {
    const spec = toQuantSpec(this.format);
    const isWeight = this.role === 'weight';
    let range: { min: ArrayLike<number>; max: ArrayLike<number> } = { min: this.runningMin.data, max: this.runningMax.data };
    if (isWeight || this.training || this.observed.data[0] === 0) {
      const batch = observeMinMax(x, spec);
      if (isWeight) {
        // The weight's own float64 range (the buffers keep a float32 copy for inspection).
        this.runningMin.data.set(batch.min);
        this.runningMax.data.set(batch.max);
        range = batch;
      } else {
        updateRunningRange(this.runningMin.data as Float32Array, this.runningMax.data as Float32Array, batch, this.observer, this.momentum, this.observed.data[0] === 0);
      }
      this.observed.data[0] = 1;
    }
    const qp = qparamsFromRange(range.min, range.max, spec);
    this.scale.data.set(qp.scale);
    this.zeroPoint.data.set(qp.zeroPoint);
  }

  /** The current affine parameters. */
  qparams(): QParams {
    return affineQParams(this.format, this.scale, this.zeroPoint, this.qmin, this.qmax);
  }

  exportQuant(): ExportedQuant {
    if (this.observed.data[0] === 0) throw new Error(`quantizer '${this.spec.kind}' has not observed any data yet: run a forward pass (calibration) before exporting`);
    return { type: 'affine', qparams: this.qparams() };
  }
}

export function createSteQuantizer(spec: QuantizerSpec, context: QuantizerContext): SteQuantizer {
  return new SteQuantizer(spec, context);
}
