/**
 * Min-max range observers: the batch range of a tensor (per tensor, channel or group) and the
 * running range kept across batches, either the all-time extremes ('minMax') or an exponential
 * moving average of batch extremes ('movingAverage': r ← (1 − m)·r + m·batch, PyTorch's
 * MovingAverageMinMaxObserver with averaging constant m).
 */
import type { Tensor } from '../../tensor/tensor.ts';
import { rangesOf, type QuantSpec } from '../core/qparams.ts';

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
