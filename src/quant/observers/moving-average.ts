/**
 * Moving-average min-max observer (PyTorch's MovingAverageMinMaxObserver): the first batch sets
 * the range, every later batch moves it by an exponential moving average of batch extremes,
 *   min ← (1 − m)·min + m·min(x),   max ← (1 − m)·max + m·max(x),
 * with averaging constant m = `momentum` (default 0.1). Outliers of single batches are damped,
 * so it clips values a min-max observer would keep. Q-parameters as in `MinMaxObserver`.
 */
import { updateRunningRange, MinMaxObserver } from './minmax.ts';
import type { ObserverOptions } from './observer.ts';

export interface MovingAverageOptions extends ObserverOptions {
  /** Averaging constant m in (0, 1] (default 0.1). */
  readonly momentum?: number;
}

export class MovingAverageMinMaxObserver extends MinMaxObserver {
  override readonly method: string = 'ema';
  readonly momentum: number;

  constructor(options: MovingAverageOptions = {}) {
    super(options, 'ema');
    this.momentum = options.momentum ?? 0.1;
    if (!(this.momentum > 0 && this.momentum <= 1)) throw new Error(`ema observer: momentum must be in (0, 1], got ${this.momentum}`);
  }

  protected override fold(batch: { min: Float64Array; max: Float64Array }, first: boolean): void {
    updateRunningRange(this.min, this.max, batch, 'movingAverage', this.momentum, first);
  }
}
