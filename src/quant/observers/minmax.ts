/**
 * Min-max range observers: the batch range of a tensor (per tensor, channel or group) and the
 * running range kept across batches, either the all-time extremes ('minMax') or an exponential
 * moving average of batch extremes ('movingAverage': r ← (1 − m)·r + m·batch, PyTorch's
 * MovingAverageMinMaxObserver with averaging constant m).
 */
import type { Tensor } from '../../tensor/tensor.ts';
import { qparamsFromRange, rangesOf, type QParams, type QuantSpec } from '../core/qparams.ts';
import { checkFinite, checkGranularity, observerSlots, type Observer, type ObserverOptions } from './observer.ts';

export type RangeObserverKind = 'minMax' | 'movingAverage';

/** The batch min and max of `x` under `spec`'s granularity (float64, one entry per parameter set). */
export function observeMinMax(x: Tensor, spec: QuantSpec): { min: Float64Array; max: Float64Array } {
  return rangesOf(x.data, x.shape, spec);
}

/**
 * Folds a batch range into running ranges in place. `first` = no range seen yet: the batch
 * range is taken as is. Non-finite batch values are skipped so one bad batch cannot poison the range.
 */
export function updateRunningRange(
  runningMin: Float32Array | Float64Array,
  runningMax: Float32Array | Float64Array,
  batch: { min: ArrayLike<number>; max: ArrayLike<number> },
  kind: RangeObserverKind,
  momentum: number,
  first: boolean,
): void {
  for (let i = 0; i < runningMin.length; i++) {
    const lo = batch.min[i]!;
    const hi = batch.max[i]!;
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) continue;
    if (first) {
      runningMin[i] = lo;
      runningMax[i] = hi;
    } else if (kind === 'minMax') {
      runningMin[i] = Math.min(runningMin[i]!, lo);
      runningMax[i] = Math.max(runningMax[i]!, hi);
    } else {
      runningMin[i] = runningMin[i]! + momentum * (lo - runningMin[i]!);
      runningMax[i] = runningMax[i]! + momentum * (hi - runningMax[i]!);
    }
  }
}

/**
 * Min-max observer: q-parameters from the all-time extremes of every observed value,
 *   min = min over batches of min(x),  max = max over batches of max(x)   (per tensor or channel),
 * widened to contain 0; symmetric specs use s = max(−min, max)/qmax, asymmetric
 * s = (max − min)/(qmax − qmin), z = round(qmin − min/s) (`qparamsFromRange`). No value is clipped.
 */
export class MinMaxObserver implements Observer {
  readonly method: string = 'minmax';
  readonly axis: number | null;
  readonly groupSize: number | null;
  protected min: Float64Array = new Float64Array(0);
  protected max: Float64Array = new Float64Array(0);
  private seen = false;

  /** `method` names the observer in errors (subclasses' own `method` field is set after this constructor). */
  constructor(options: ObserverOptions = {}, method = 'minmax') {
    ({ axis: this.axis, groupSize: this.groupSize } = observerSlots(method, options));
  }

  get observed(): boolean {
    return this.seen;
  }

  observe(x: Tensor): void {
    checkFinite(this.method, x);
    const batch = batchRange(x, this.axis, this.groupSize);
    if (!this.seen) {
      this.min = new Float64Array(batch.min.length).fill(Infinity);
      this.max = new Float64Array(batch.max.length).fill(-Infinity);
    } else if (batch.min.length !== this.min.length) {
      throw new Error(`${this.method} observer: ${batch.min.length} channels, earlier batches had ${this.min.length}`);
    }
    this.fold(batch, !this.seen);
    this.seen = true;
  }

  /** Folds a batch range into the running one (all-time extremes here). */
  protected fold(batch: { min: Float64Array; max: Float64Array }, _first: boolean): void {
    updateRunningRange(this.min, this.max, batch, 'minMax', 1, false);
  }

  /** The running range (float64 copies). */
  range(): { min: Float64Array; max: Float64Array } {
    return { min: this.min.slice(), max: this.max.slice() };
  }

  qparams(spec: QuantSpec): QParams {
    checkGranularity(this, spec, this.min.length);
    const lo = Array.from(this.min, (v) => (Number.isFinite(v) ? v : 0));
    const hi = Array.from(this.max, (v) => (Number.isFinite(v) ? v : 0));
    return qparamsFromRange(lo, hi, spec);
  }
}

/** @internal Per-tensor, per-channel or per-group batch range of x. */
export function batchRange(x: Tensor, axis: number | null, groupSize: number | null = null): { min: Float64Array; max: Float64Array } {
  const spec: QuantSpec = axis === null
    ? { bits: 8, signed: true, symmetric: false, granularity: 'tensor' }
    : groupSize === null
      ? { bits: 8, signed: true, symmetric: false, granularity: 'channel', axis }
      : { bits: 8, signed: true, symmetric: false, granularity: 'group', axis, groupSize };
  if (groupSize !== null && x.shape[axis!]! % groupSize !== 0) throw new Error(`observer: groupSize ${groupSize} does not divide axis ${axis} of shape [${x.shape.join(', ')}]`);
  return rangesOf(x.data, x.shape, spec);
}
