/**
 * The observer interface: an observer watches tensors during calibration and turns what it saw
 * into affine quantization parameters. Observers hold statistics only (no autograd, no modules),
 * so a quantizer creates one for calibration and drops it once its parameters are frozen.
 *
 * Granularity: an observer is built for one axis (`axis: null` = one set of statistics for the
 * whole tensor, `axis: k` = one per slice along dimension k, e.g. the output channel of a weight).
 * `qparams(spec)` must be asked for the same granularity.
 */
import type { Tensor } from '../../tensor/tensor.ts';
import type { QParams, QuantSpec } from '../core/qparams.ts';

export interface Observer {
  /** The method name ('minmax', 'ema', 'percentile', 'mse', 'entropy'). */
  readonly method: string;
  /** Channel axis the statistics are kept per, or null (per tensor). */
  readonly axis: number | null;
  /** True once at least one tensor was observed. */
  readonly observed: boolean;
  /** Adds the values of `x` to the statistics; throws on NaN or ±Infinity (nothing is added). */
  observe(x: Tensor): void;
  /** Scale and zero point for `spec` (granularity must match the observer's axis). */
  qparams(spec: QuantSpec): QParams;
}

export interface ObserverOptions {
  /** Channel axis (per-channel statistics) or null for per-tensor (default null). */
  readonly axis?: number | null;
}

/** @internal Checks a spec against the observer's axis; returns the number of parameter sets. */
export function checkGranularity(observer: Observer, spec: QuantSpec, channels: number): void {
  if (spec.granularity === 'group') throw new Error(`${observer.method} observer: per-group parameters are not supported (use 'tensor' or 'channel')`);
  const axis = spec.granularity === 'tensor' ? null : spec.axis ?? 0;
  if (axis !== observer.axis) {
    throw new Error(`${observer.method} observer: built for axis ${String(observer.axis)}, asked for ${spec.granularity} parameters on axis ${String(axis)}`);
  }
  if (!observer.observed) throw new Error(`${observer.method} observer: nothing observed yet (run calibration batches first)`);
  if (channels < 1) throw new Error(`${observer.method} observer: no channels`);
}

/**
 * @internal Throws when `x` holds NaN or ±Infinity, naming the observer: a range built without
 * them (or from them) would give parameters that do not describe the data, silently.
 */
export function checkFinite(method: string, x: Tensor): void {
  const data = x.data;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!Number.isFinite(v)) {
      throw new Error(`${method} observer: observed a non-finite value (${v} at flat index ${i} of a [${x.shape.join(', ')}] tensor); observers need finite calibration data and activations`);
    }
  }
}

/**
 * @internal The values of `x` split per slice along `axis` (one array when axis is null), in
 * row-major order within each slice.
 */
export function splitChannels(x: Tensor, axis: number | null): Float32Array[] {
  if (axis === null) return [Float32Array.from(x.data)];
  if (!Number.isInteger(axis) || axis < 0 || axis >= x.rank) throw new Error(`observer: axis ${axis} out of range for shape [${x.shape.join(', ')}]`);
  const channels = x.shape[axis]!;
  const inner = x.shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const outer = x.shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const per = outer * inner;
  const out = Array.from({ length: channels }, () => new Float32Array(per));
  const data = x.data;
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      const src = (o * channels + c) * inner;
      out[c]!.set(data.subarray(src, src + inner), o * inner);
    }
  }
  return out;
}

/** @internal Min and max of an array (Infinity / −Infinity when empty), skipping non-finite values. */
export function extremes(values: ArrayLike<number>): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}
