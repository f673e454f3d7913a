/**
 * The observer interface: an observer watches tensors during calibration and turns what it saw
 * into affine quantization parameters. Observers hold statistics only (no autograd, no modules),
 * so a quantizer creates one for calibration and drops it once its parameters are frozen.
 *
 * Granularity: an observer is built for one axis (`axis: null` = one set of statistics for the
 * whole tensor, `axis: k` = one per slice along dimension k, e.g. the output channel of a weight)
 * and, optionally, a group size along it (`groupSize: g` = one set per run of g consecutive
 * indices on axis k and per position of every other dimension: a Linear weight [O, I] with axis 1
 * and g = 32 gets O·I/32 sets, one per row and group of 32 inputs, as `core/qparams.paramIndex`
 * numbers them). `qparams(spec)` must be asked for the same granularity.
 */
import type { Tensor } from '../../tensor/tensor.ts';
import { paramIndex, type QParams, type QuantSpec } from '../core/qparams.ts';

export interface Observer {
  /** The method name ('minmax', 'ema', 'percentile', 'mse', 'entropy'). */
  readonly method: string;
  /** Channel axis the statistics are kept per, or null (per tensor). */
  readonly axis: number | null;
  /** Group size along `axis` (per-group statistics), or null (per channel / per tensor). */
  readonly groupSize: number | null;
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
  /** Elements per group along `axis` (per-group statistics; needs an axis), or null (default). */
  readonly groupSize?: number | null;
}

/** @internal The granularity of an observer's options, checked: `{ axis, groupSize }`. */
export function observerSlots(method: string, options: ObserverOptions): { axis: number | null; groupSize: number | null } {
  const axis = options.axis ?? null;
  const groupSize = options.groupSize ?? null;
  if (groupSize !== null && (axis === null || !Number.isInteger(groupSize) || groupSize < 1)) {
    throw new Error(`${method} observer: groupSize must be a positive integer with an axis, got groupSize ${String(groupSize)} on axis ${String(axis)}`);
  }
  return { axis, groupSize };
}

/** @internal Checks a spec against the observer's axis and group size. */
export function checkGranularity(observer: Observer, spec: QuantSpec, channels: number): void {
  const axis = spec.granularity === 'tensor' ? null : spec.axis ?? 0;
  const groupSize = spec.granularity === 'group' ? spec.groupSize ?? null : null;
  if (axis !== observer.axis || groupSize !== observer.groupSize) {
    const built = observer.groupSize === null ? `axis ${String(observer.axis)}` : `groups of ${observer.groupSize} on axis ${String(observer.axis)}`;
    const asked = groupSize === null ? `${spec.granularity} parameters on axis ${String(axis)}` : `groups of ${groupSize} on axis ${String(axis)}`;
    throw new Error(`${observer.method} observer: built for ${built}, asked for ${asked}`);
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
 * @internal The values of `x` split per slice along `axis` (one array when axis is null), or per
 * parameter set of groups of `groupSize` along it (`paramIndex` order), in row-major order within
 * each slice.
 */
export function splitChannels(x: Tensor, axis: number | null, groupSize: number | null = null): Float32Array[] {
  if (axis === null) return [Float32Array.from(x.data)];
  if (!Number.isInteger(axis) || axis < 0 || axis >= x.rank) throw new Error(`observer: axis ${axis} out of range for shape [${x.shape.join(', ')}]`);
  if (groupSize !== null) {
    if (x.shape[axis]! % groupSize !== 0) throw new Error(`observer: groupSize ${groupSize} does not divide axis ${axis} of shape [${x.shape.join(', ')}]`);
    const sets = x.size / groupSize;
    const index = paramIndex(x.shape, { axis, groupSize });
    const parts = Array.from({ length: sets }, () => new Float32Array(groupSize));
    const fill = new Int32Array(sets);
    const data = x.data;
    for (let i = 0; i < data.length; i++) {
      const p = index(i);
      parts[p]![fill[p]!++] = data[i]!;
    }
    return parts;
  }
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
