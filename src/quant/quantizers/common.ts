/**
 * @internal Helpers shared by the quantizer kinds: reading spec options, resolving the number
 * format from the role (weights: signed, symmetric, per output channel; activations: unsigned,
 * per tensor), shaping per-channel parameters, and the straight-through composition.
 */
import { cast, reshape, sub, add } from '../../tensor/ops.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { typedArrayFor } from '../../backend/primitives.ts';
import { paramCount, paramIndex, type QParams, type QuantSpec } from '../core/qparams.ts';
import { Quantizer, type QuantizerContext, type QuantizerSpec } from './quantizer.ts';

/** Weight or activation. */
export type Role = QuantizerContext['role'];

/** Number format of a quantizer after role defaults are applied. */
export interface ResolvedFormat {
  readonly role: Role;
  readonly bits: number;
  readonly signed: boolean;
  readonly symmetric: boolean;
  readonly granularity: 'tensor' | 'channel' | 'group';
  /** Channel axis, null per tensor. */
  readonly axis: number | null;
  readonly groupSize: number | null;
  /** Number of parameter sets (1 per tensor, channels per channel, groups per group). */
  readonly count: number;
}

function option(spec: QuantizerSpec, name: string): unknown {
  return spec[name];
}

/** A numeric option, or `fallback` when absent; throws on a wrong type. */
export function numberOption(spec: QuantizerSpec, name: string, fallback: number): number {
  const v = option(spec, name);
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`quantizer '${spec.kind}': option '${name}' must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

export function booleanOption(spec: QuantizerSpec, name: string, fallback: boolean): boolean {
  const v = option(spec, name);
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw new Error(`quantizer '${spec.kind}': option '${name}' must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

export function choiceOption<T extends string>(spec: QuantizerSpec, name: string, allowed: readonly T[], fallback: T): T {
  const v = option(spec, name);
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new Error(`quantizer '${spec.kind}': option '${name}' must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

/**
 * Applies the role defaults: weights are signed, symmetric and per channel on the context's
 * channel axis (0); activations are unsigned, asymmetric and per tensor. Per-channel and
 * per-group formats need the weight's shape in the context (parameters are created eagerly so
 * that optimizers built after `prepareQat` see them).
 */
export function resolveFormat(
  spec: QuantizerSpec,
  context: QuantizerContext,
  allow: { group?: boolean; channelActivations?: boolean; minBits?: number; maxBits?: number } = {},
): ResolvedFormat {
  const { bits } = spec;
  const minBits = allow.minBits ?? 1;
  const maxBits = allow.maxBits ?? 16;
  if (!Number.isInteger(bits) || bits < minBits || bits > maxBits) {
    throw new Error(`quantizer '${spec.kind}': bits must be an integer in [${minBits}, ${maxBits}], got ${bits}`);
  }
  const isWeight = context.role === 'weight';
  const signed = booleanOption(spec, 'signed', isWeight);
  const symmetric = booleanOption(spec, 'symmetric', isWeight);
  const granularities = allow.group ? (['tensor', 'channel', 'group'] as const) : (['tensor', 'channel'] as const);
  const granularity = choiceOption<'tensor' | 'channel' | 'group'>(spec, 'granularity', granularities, isWeight ? 'channel' : 'tensor');
  if (!isWeight && granularity !== 'tensor' && !allow.channelActivations) {
    throw new Error(`quantizer '${spec.kind}': activations are quantized per tensor (got granularity '${granularity}')`);
  }
  if (granularity === 'tensor') {
    return { role: context.role, bits, signed, symmetric, granularity, axis: null, groupSize: null, count: 1 };
  }
  const axis = numberOption(spec, 'axis', context.channelAxis ?? 0);
  const shape = context.shape;
  if (!shape) throw new Error(`quantizer '${spec.kind}': granularity '${granularity}' needs the weight's shape in the QuantizerContext`);
  if (!Number.isInteger(axis) || axis < 0 || axis >= shape.length) throw new Error(`quantizer '${spec.kind}': channel axis ${axis} out of range for shape [${shape.join(', ')}]`);
  const groupSize = granularity === 'group' ? numberOption(spec, 'groupSize', 0) : null;
  if (groupSize !== null && (!Number.isInteger(groupSize) || groupSize < 1)) throw new Error(`quantizer '${spec.kind}': granularity 'group' needs a positive integer groupSize`);
  if (groupSize !== null && shape[axis]! % groupSize !== 0) {
    throw new Error(`quantizer '${spec.kind}': groupSize ${groupSize} does not divide axis ${axis} of the weight [${shape.join(', ')}] (size ${shape[axis]}); choose a divisor of ${shape[axis]}`);
  }
  const quantSpec: QuantSpec = { bits: Math.max(bits, 2), signed, symmetric, granularity, axis, groupSize: groupSize ?? undefined };
  return { role: context.role, bits, signed, symmetric, granularity, axis, groupSize, count: paramCount(shape, quantSpec) };
}

/** The format as the core's QuantSpec (for `qRange`, `qparamsFromRange`, `rangesOf`). */
export function toQuantSpec(f: ResolvedFormat): QuantSpec {
  return {
    bits: f.bits, signed: f.signed, symmetric: f.symmetric, granularity: f.granularity,
    axis: f.axis ?? undefined, groupSize: f.groupSize ?? undefined,
  };
}

/** Shape that makes a [count] parameter vector broadcast against `shape` along `axis` (rank-preserving). */
export function broadcastParamShape(shape: readonly number[], axis: number | null): number[] {
  if (axis === null) return shape.map(() => 1);
  return shape.map((d, i) => (i === axis ? d : 1));
}

/**
 * A [count] parameter (float32, possibly requiring grad) viewed to broadcast against `x`
 * along `axis`, in x's dtype; differentiable (reshape and cast have rules).
 */
export function paramFor(p: Tensor, x: Tensor, axis: number | null): Tensor {
  const q = cast(p, x.dtype);
  // A per-tensor [1] parameter already broadcasts against any x of rank >= 1 (no reshape op).
  if (axis === null && x.rank >= 1 && q.rank === 1 && q.size === 1) return q;
  return reshape(q, broadcastParamShape(x.shape, axis));
}

/** Axes reduced for a per-channel statistic (all but `axis`; all when per tensor). */
export function reduceAxes(rank: number, axis: number | null): number[] {
  return [...Array(rank).keys()].filter((a) => a !== axis);
}

/**
 * Straight-through composition: forward exactly `value` (bit for bit: `value + (p − p)` with
 * `p − p = 0`), gradient that of `surrogate`. Used where the forward value is computed outside
 * the graph (nearest-level encoding, noise) and the estimator is a differentiable surrogate.
 */
export function straightThrough(value: Tensor, surrogate: Tensor): Tensor {
  if (!surrogate.requiresGrad) return value.detach();
  return add(value.detach(), sub(surrogate, surrogate.detach()));
}

/** Per-element parameter index for per-tensor (axis null) or per-channel statistics. */
export function channelIndexOf(shape: readonly number[], axis: number | null): (i: number) => number {
  return paramIndex(shape, { axis, groupSize: null });
}

/** Per-channel mean of |x| (float64). */
export function meanAbsPerChannel(x: Tensor, axis: number | null): Float64Array {
  const count = axis === null ? 1 : x.shape[axis]!;
  const idx = channelIndexOf(x.shape, axis);
  const sums = new Float64Array(count);
  for (let i = 0; i < x.size; i++) sums[idx(i)]! += Math.abs(x.data[i]!);
  const per = x.size / count;
  for (let c = 0; c < count; c++) sums[c] = per > 0 ? sums[c]! / per : 0;
  return sums;
}

/** A tensor of `shape` and `dtype` filled from `values` (no graph). */
export function constant(values: ArrayLike<number>, shape: readonly number[], dtype: Tensor['dtype']): Tensor {
  const data = typedArrayFor(dtype, values.length);
  for (let i = 0; i < values.length; i++) data[i] = values[i]!;
  return new Tensor(data, shape);
}

/** Checks that `x` has the channel count the quantizer was built for. */
export function checkChannels(kind: string, x: Tensor, format: ResolvedFormat): void {
  if (format.axis === null || format.granularity !== 'channel') return;
  if (x.shape[format.axis] !== format.count) {
    throw new Error(`quantizer '${kind}': built for ${format.count} channels on axis ${format.axis}, got shape [${x.shape.join(', ')}]`);
  }
}

/**
 * Base of the kinds here: holds the spec and the resolved format; `forward` returns x unchanged
 * when `fakeQuantEnabled` is false and otherwise calls `quantize`.
 */
export abstract class BaseQuantizer extends Quantizer {
  readonly spec: QuantizerSpec;
  readonly format: ResolvedFormat;

  constructor(spec: QuantizerSpec, format: ResolvedFormat) {
    super();
    this.spec = spec;
    this.format = format;
  }

  get role(): Role {
    return this.format.role;
  }

  forward(x: Tensor): Tensor {
    if (!this.fakeQuantEnabled) return x;
    checkChannels(this.spec.kind, x, this.format);
    return this.quantize(x);
  }

  /** The fake-quantized tensor with this estimator's gradient. */
  protected abstract quantize(x: Tensor): Tensor;

  override extraRepr(): string {
    const f = this.format;
    return `kind=${this.spec.kind}, role=${f.role}, bits=${f.bits}, signed=${f.signed}, granularity=${f.granularity}${f.axis === null ? '' : `, axis=${f.axis}`}`;
  }
}

/** Fraction of training done, clamped to [0, 1] (for `setProgress`). */
export function progressOf(epoch: number, totalEpochs: number): number {
  if (!(totalEpochs > 0)) throw new Error(`setProgress: totalEpochs must be positive, got ${totalEpochs}`);
  return Math.min(1, Math.max(0, epoch / totalEpochs));
}

/** @internal QParams of a quantizer whose scale and zero point live in float tensors (copied). */
export function affineQParams(format: ResolvedFormat, scale: Tensor, zeroPoint: Tensor, qmin: number, qmax: number): QParams {
  return {
    scale: Float32Array.from(scale.data),
    zeroPoint: Int32Array.from(zeroPoint.data),
    bits: format.bits,
    qmin,
    qmax,
    axis: format.axis,
    groupSize: format.groupSize,
  };
}
