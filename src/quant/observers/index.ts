/**
 * Calibration observers: each watches tensors (`observe`) and turns them into affine q-parameters
 * (`qparams(spec)`), per tensor or per channel. `createObserver(method, options)` builds one by name.
 */
import { EntropyObserver, type EntropyOptions } from './entropy.ts';
import { MinMaxObserver } from './minmax.ts';
import { MovingAverageMinMaxObserver, type MovingAverageOptions } from './moving-average.ts';
import { MseObserver, type MseOptions } from './mse.ts';
import type { Observer } from './observer.ts';
import { PercentileObserver, type PercentileOptions } from './percentile.ts';

export { type Observer, type ObserverOptions } from './observer.ts';
export { MinMaxObserver, observeMinMax, updateRunningRange, type RangeObserverKind } from './minmax.ts';
export { MovingAverageMinMaxObserver, type MovingAverageOptions } from './moving-average.ts';
export { PercentileObserver, type PercentileOptions } from './percentile.ts';
export { MseObserver, squaredError, type MseOptions } from './mse.ts';
export { EntropyObserver, klThresholdBin, type EntropyOptions } from './entropy.ts';

export const OBSERVER_METHODS = ['minmax', 'ema', 'percentile', 'mse', 'entropy'] as const;
export type ObserverMethod = (typeof OBSERVER_METHODS)[number];

/** Options of every observer (each reads its own). */
export type AnyObserverOptions = MovingAverageOptions & PercentileOptions & MseOptions & EntropyOptions;

/** An observer by method name. */
export function createObserver(method: ObserverMethod, options: AnyObserverOptions = {}): Observer {
  switch (method) {
    case 'minmax':
      return new MinMaxObserver(options);
    case 'ema':
      return new MovingAverageMinMaxObserver(options);
    case 'percentile':
      return new PercentileObserver(options);
    case 'mse':
      return new MseObserver(options);
    case 'entropy':
      return new EntropyObserver(options);
    default:
      throw new Error(`unknown observer method '${String(method)}' (known: ${OBSERVER_METHODS.join(', ')})`);
  }
}
