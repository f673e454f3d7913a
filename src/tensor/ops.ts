/**
 * The ops users call. Each is a primitive (see backend/primitives.ts) or a composition of them,
 * so autograd needs no rule here: rules live per primitive in autograd/gradients.ts.
 */
import type { DType, PrimitiveAttrs, PrimitiveName, StochasticQuantizeAttrs } from '../backend/primitives.ts';
import { broadcastShapes, sizeOf, typedArrayFor } from '../backend/primitives.ts';
import { runKernel } from '../backend/registry.ts';
import { isGradEnabled } from '../autograd/engine.ts';
import { isDifferentiable } from '../autograd/gradients.ts';
import { autocastFormat, withAutocast } from '../lowp/context.ts';
import type { FloatFormat } from '../lowp/formats.ts';
import { Tensor } from './tensor.ts';
import { globalRng } from './random.ts';

/** Runs a primitive on the current backend and records it on the tape when grad mode is on. */
export function apply<P extends PrimitiveName>(op: P, inputs: readonly Tensor[], attrs: PrimitiveAttrs[P]): Tensor {
  const raw = runKernel(op, inputs, attrs);
  const out = new Tensor(raw.data, raw.shape);
  if (isGradEnabled() && isDifferentiable(op) && inputs.some((t) => t.requiresGrad)) {
    out.requiresGrad = true;
    out.node = { op, inputs, attrs };
  }
  return out;
}

const NONE = {} as Record<string, never>;

type Operand = Tensor | number;

/** A scalar tensor holding `x`. */
function scalar(x: number, dtype: DType): Tensor {
  const data = typedArrayFor(dtype, 1);
  data[0] = x;
  return new Tensor(data, []);
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/**
 * The operands of a binary op or `where` when one of them may be a number (PyTorch's rule for a
 * Python scalar beside a tensor): the number becomes a scalar tensor of the tensor's dtype, so
 * float32 + 2 is float32 and int32 + 2 stays int32. An int32 tensor meets a non-integer number
 * (0.5, NaN, ±Infinity) by promotion: the tensor is cast to float32 and so is the result, as
 * torch.tensor([1], dtype=torch.int32) + 0.5 is float32; `div` always promotes (true division,
 * int32 / 2 = float32, as torch.div). Errors, where PyTorch raises or would silently wrap: an
 * integer outside the int32 range with an int32 tensor, and an int32 tensor to a negative
 * integer power.
 */
function liftPair(op: string, a: Operand, b: Operand): [Tensor, Tensor] {
  if (typeof a !== 'number' && typeof b !== 'number') return [a, b];
  if (typeof a === 'number' && typeof b === 'number') throw new Error(`${op} needs at least one tensor`);
  const numberFirst = typeof a === 'number';
  const t = (numberFirst ? b : a) as Tensor;
  const n = (numberFirst ? a : b) as number;
  if (t.dtype !== 'int32') return numberFirst ? [scalar(n, t.dtype), t] : [t, scalar(n, t.dtype)];
  const integer = Number.isInteger(n);
  if (integer && (n < INT32_MIN || n > INT32_MAX)) throw new Error(`${op}: the number ${n} does not fit the int32 tensor's dtype (cast the tensor to float32 first)`);
  if (op === 'pow' && !numberFirst && integer && n < 0) throw new Error(`pow: an int32 tensor to the negative integer power ${n} (cast it to float32 first)`);
  const promoted = !integer || op === 'div' ? cast(t, 'float32') : t;
  return numberFirst ? [scalar(n, promoted.dtype), promoted] : [promoted, scalar(n, promoted.dtype)];
}

function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= Math.max(rank, 1)) throw new Error(`axis ${axis} out of range for rank ${rank}`);
  return a;
}

function normAxes(axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return [...Array(rank).keys()];
  const list = typeof axes === 'number' ? [axes] : axes;
  return [...new Set(list.map((a) => normAxis(a, rank)))].sort((x, y) => x - y);
}

// ---------------------------------------------------------------- unary
export const neg = (x: Tensor): Tensor => apply('neg', [x], NONE);
export const exp = (x: Tensor): Tensor => apply('exp', [x], NONE);
export const log = (x: Tensor): Tensor => apply('log', [x], NONE);
export const sqrt = (x: Tensor): Tensor => apply('sqrt', [x], NONE);
export const abs = (x: Tensor): Tensor => apply('abs', [x], NONE);
/** sign with sign(0) = 0. */
export const sign = (x: Tensor): Tensor => apply('sign', [x], NONE);
export const relu = (x: Tensor): Tensor => apply('relu', [x], NONE);
export const sigmoid = (x: Tensor): Tensor => apply('sigmoid', [x], NONE);
export const tanh = (x: Tensor): Tensor => apply('tanh', [x], NONE);
export const erf = (x: Tensor): Tensor => apply('erf', [x], NONE);
export const floor = (x: Tensor): Tensor => apply('floor', [x], NONE);
/** Round half to even (zero gradient; use an estimator op for QAT). */
export const round = (x: Tensor): Tensor => apply('round', [x], NONE);

/**
 * x rounded to the 16-bit float `format` ('fp16' or 'bf16', round to nearest even), kept in x's
 * dtype: the value of `x.half().float()` / `x.bfloat16().float()`. Its gradient is the incoming
 * gradient rounded to the same format (mixed-precision training, src/lowp).
 */
export function castFloat(x: Tensor, format: FloatFormat): Tensor {
  if (format !== 'fp16' && format !== 'bf16') throw new Error(`castFloat: format must be 'fp16' or 'bf16', got ${JSON.stringify(format)}`);
  if (x.dtype === 'int32') throw new Error('castFloat: expects a float tensor, got int32');
  return apply('castFloat', [x], { format });
}

/** Options of `quantizeGradient` and `stochasticQuantize` (formulas: StochasticQuantizeAttrs). */
export interface StochasticQuantizeOptions {
  /** Bit width k, an integer in [2, 16]. */
  readonly bits: number;
  /** One max-abs scale for the whole tensor (default) or one per index of axis 0 ('sample'). */
  readonly granularity?: 'tensor' | 'sample';
  /** 'dorefa' (default): 2^k levels ±m/n … ±m, n = 2^k − 1, no zero; 'symmetric': 2^k − 1 levels with zero. */
  readonly grid?: 'dorefa' | 'symmetric';
  /** uint32 seed of the rounding draws (default: one draw from the global generator, see manualSeed). */
  readonly seed?: number;
}

/** Bit widths stochasticQuantize / quantizeGradient accept. */
export const STOCHASTIC_QUANTIZE_BITS = { min: 2, max: 16 } as const;

function stochasticQuantizeAttrs(where: string, x: Tensor, options: StochasticQuantizeOptions): StochasticQuantizeAttrs {
  const { bits, granularity = 'tensor', grid = 'dorefa' } = options;
  if (!Number.isInteger(bits) || bits < STOCHASTIC_QUANTIZE_BITS.min || bits > STOCHASTIC_QUANTIZE_BITS.max) {
    throw new RangeError(`${where}: bits must be an integer in [${STOCHASTIC_QUANTIZE_BITS.min}, ${STOCHASTIC_QUANTIZE_BITS.max}], got ${String(bits)}`);
  }
  if (granularity !== 'tensor' && granularity !== 'sample') throw new RangeError(`${where}: granularity must be 'tensor' or 'sample', got ${JSON.stringify(granularity)}`);
  if (grid !== 'dorefa' && grid !== 'symmetric') throw new RangeError(`${where}: grid must be 'dorefa' or 'symmetric', got ${JSON.stringify(grid)}`);
  if (granularity === 'sample' && x.rank === 0) throw new RangeError(`${where}: granularity 'sample' needs a tensor of rank >= 1 (axis 0 is the sample axis), got a scalar`);
  if (x.dtype === 'int32') throw new TypeError(`${where}: expects a float tensor, got int32`);
  const seed = options.seed ?? globalRng.nextUint32();
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`${where}: seed must be a uint32 integer, got ${String(seed)}`);
  return { bits, granularity, grid, seed };
}

/**
 * x unchanged; its gradient is stochastically quantized to `bits` bits on the way back (DoReFa-Net's
 * quantized backward pass): what reaches the ops before it is `stochasticQuantize(g)`, unbiased,
 * with the seed fixed at this call. Use a new seed per step (the default draws one).
 */
export function quantizeGradient(x: Tensor, options: StochasticQuantizeOptions): Tensor {
  return apply('quantizeGradient', [x], stochasticQuantizeAttrs('quantizeGradient', x, options));
}

/**
 * x stochastically rounded to `bits` bits with a max-abs scale per tensor or per sample (formulas
 * in StochasticQuantizeAttrs, backend/primitives.ts): E[y] = x, every |y − x| is below one level
 * step (2m/(2^k − 1) for 'dorefa', m/(2^(k−1) − 1) for 'symmetric'). Gradient: identity.
 */
export function stochasticQuantize(x: Tensor, options: StochasticQuantizeOptions): Tensor {
  return apply('stochasticQuantize', [x], stochasticQuantizeAttrs('stochasticQuantize', x, options));
}

/**
 * The format to run a matmul/conv op in: autocast's (src/lowp/context.ts) when it is on and every
 * given operand is float32, else null. Such an op casts its operands, runs in float32 (float32
 * accumulation) with autocast off inside, and casts its result.
 */
function autocastTo(...operands: readonly (Tensor | null | undefined)[]): FloatFormat | null {
  const format = autocastFormat();
  if (format === null || !operands.every((t) => !t || t.dtype === 'float32')) return null;
  return format;
}

/** `run` on the operands rounded to `format`, autocast off inside, its result rounded to `format`. */
function autocastRun(format: FloatFormat, run: (cast: (t: Tensor) => Tensor) => Tensor): Tensor {
  return castFloat(withAutocast(null, () => run((t) => castFloat(t, format))), format);
}

// ---------------------------------------------------------------- binary (broadcasting)
function binary(op: 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum' | 'greater' | 'greaterEqual' | 'equal', a: Operand, b: Operand): Tensor {
  let [ta, tb] = liftPair(op, a, b);
  if (ta.dtype !== tb.dtype) throw new Error(`${op}: dtypes ${ta.dtype} and ${tb.dtype} differ (cast one first)`);
  broadcastShapes(ta.shape, tb.shape);
  // True division, as torch.div: int32 / int32 is float32 (7 / 2 = 3.5), never truncated.
  if (op === 'div' && ta.dtype === 'int32') [ta, tb] = [cast(ta, 'float32'), cast(tb, 'float32')];
  return apply(op, [ta, tb], NONE);
}

/**
 * Elementwise a + b with numpy broadcasting. Both tensors must share a dtype. A number takes the
 * tensor's dtype (int32 + 2 is int32); an int32 tensor with a non-integer number promotes to
 * float32 (int32 + 0.5 is float32), as in PyTorch. The same holds for the other binary ops below.
 */
export const add = (a: Operand, b: Operand): Tensor => binary('add', a, b);
export const sub = (a: Operand, b: Operand): Tensor => binary('sub', a, b);
export const mul = (a: Operand, b: Operand): Tensor => binary('mul', a, b);
/** Elementwise a / b; an int32 tensor with a number divides in float32 (true division, as torch.div). */
export const div = (a: Operand, b: Operand): Tensor => binary('div', a, b);
export const pow = (a: Operand, b: Operand): Tensor => binary('pow', a, b);
export const maximum = (a: Operand, b: Operand): Tensor => binary('maximum', a, b);
export const minimum = (a: Operand, b: Operand): Tensor => binary('minimum', a, b);
/** 1 where a > b else 0, in a's dtype. */
export const greater = (a: Operand, b: Operand): Tensor => binary('greater', a, b);
export const greaterEqual = (a: Operand, b: Operand): Tensor => binary('greaterEqual', a, b);
export const less = (a: Operand, b: Operand): Tensor => binary('greater', b, a);
export const lessEqual = (a: Operand, b: Operand): Tensor => binary('greaterEqual', b, a);
export const equal = (a: Operand, b: Operand): Tensor => binary('equal', a, b);

/**
 * Elementwise `cond ? a : b` (cond nonzero), broadcasting all three. A number takes the other
 * branch's dtype as in the binary ops (int32 with a non-integer number promotes to float32);
 * with two numbers, cond's dtype (float32 for an int32 cond).
 */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  const [ta, tb] =
    typeof a === 'number' && typeof b === 'number'
      ? [scalar(a, cond.dtype === 'int32' ? 'float32' : cond.dtype), scalar(b, cond.dtype === 'int32' ? 'float32' : cond.dtype)]
      : liftPair('where', a, b);
  broadcastShapes(broadcastShapes(cond.shape, ta.shape), tb.shape);
  return apply('where', [cond, ta, tb], NONE);
}

/**
 * min(max(x, min), max) elementwise, as torch.clamp (NaN stays NaN; min > max gives max). The
 * gradient reaches x wherever min <= x <= max, bounds included (so relu6 and hardSigmoid pass it
 * at their corners as PyTorch does), and a tensor bound where it was taken.
 */
export function clamp(x: Tensor, min: Operand, max: Operand): Tensor {
  // Number bounds on a float tensor: the clamp primitive (one pass, one backward pass).
  if (typeof min === 'number' && typeof max === 'number' && x.dtype !== 'int32') return apply('clamp', [x], { min, max });
  const low = where(greater(min, x), min, x);
  return where(greater(low, max), max, low);
}

export const square = (x: Tensor): Tensor => mul(x, x);
export const reciprocal = (x: Tensor): Tensor => div(1, x);

// ---------------------------------------------------------------- activations (composed)
export const relu6 = (x: Tensor): Tensor => clamp(x, 0, 6);
export function leakyRelu(x: Tensor, slope = 0.01): Tensor {
  return where(greater(x, 0), x, mul(x, slope));
}
/**
 * GELU as one primitive: 'none' (default) the exact x·Φ(x) = 0.5·x·(1 + erf(x/√2)); 'tanh'
 * 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), PyTorch's `approximate='tanh'`.
 */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  if (approximate !== 'none' && approximate !== 'tanh') throw new Error(`gelu: approximate must be 'none' or 'tanh', got ${JSON.stringify(approximate)}`);
  if (x.dtype === 'int32') throw new Error('gelu: expects a float tensor, got int32');
  return apply('gelu', [x], { approximate });
}
export function hardSigmoid(x: Tensor): Tensor {
  return clamp(add(div(x, 6), 0.5), 0, 1);
}
export function hardSwish(x: Tensor): Tensor {
  return mul(x, hardSigmoid(x));
}

// ---------------------------------------------------------------- reductions
export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return apply('sum', [x], { axes: normAxes(axes, x.rank), keepDims });
}

export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = normAxes(axes, x.rank);
  const n = ax.reduce((p, a) => p * x.shape[a]!, 1);
  return div(sum(x, ax, keepDims), n);
}

export function max(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return apply('max', [x], { axes: normAxes(axes, x.rank), keepDims });
}

export function min(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return neg(max(neg(x), axes, keepDims));
}

/** Biased variance (divides by n), as normalisation layers use. */
export function variance(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = normAxes(axes, x.rank);
  const centered = sub(x, mean(x, ax, true));
  return mean(mul(centered, centered), ax, keepDims);
}

export function argmax(x: Tensor, axis = -1, keepDims = false): Tensor {
  return apply('argmax', [x], { axis: normAxis(axis, x.rank), keepDims });
}

// ---------------------------------------------------------------- shape
/** Reshape; one dimension may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = shape.reduce((p, d) => (d === -1 ? p : p * d), 1);
  const inferred = shape.filter((d) => d === -1).length;
  if (inferred > 1) throw new Error('reshape: at most one dimension can be -1');
  const full = shape.map((d) => (d === -1 ? (known === 0 ? 0 : x.size / known) : d));
  if (sizeOf(full) !== x.size || full.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`reshape: cannot view shape [${x.shape.join(', ')}] as [${shape.join(', ')}]`);
  }
  if (full.length === x.rank && full.every((d, i) => d === x.shape[i])) return x;
  return apply('reshape', [x], { shape: full });
}

export function flatten(x: Tensor, startDim = 1): Tensor {
  const s = normAxis(startDim, x.rank);
  return reshape(x, [...x.shape.slice(0, s), -1]);
}

/** Inserts a dimension of size 1 at `axis`, in [-(rank + 1), rank] (negative counts from the end). */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + x.rank + 1 : axis;
  if (!Number.isInteger(a) || a < 0 || a > x.rank) throw new Error(`unsqueeze: axis ${axis} out of range [${-x.rank - 1}, ${x.rank}] for rank ${x.rank}`);
  const shape = [...x.shape];
  shape.splice(a, 0, 1);
  return reshape(x, shape);
}

export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined) return reshape(x, x.shape.filter((d) => d !== 1));
  const a = normAxis(axis, x.rank);
  if (x.shape[a] !== 1) throw new Error(`squeeze: dim ${axis} has size ${x.shape[a]}, not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== a));
}

/** Permutes dimensions (default: reverse them). */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const p = perm ? perm.map((a) => normAxis(a, x.rank)) : [...Array(x.rank).keys()].reverse();
  if (p.length !== x.rank || new Set(p).size !== p.length) throw new Error(`transpose: bad permutation [${perm?.join(', ')}] for rank ${x.rank}`);
  if (p.every((a, i) => a === i)) return x;
  return apply('transpose', [x], { perm: p });
}

/** Swaps two dimensions. */
export function swapAxes(x: Tensor, a: number, b: number): Tensor {
  const p = [...Array(x.rank).keys()];
  const i = normAxis(a, x.rank);
  const j = normAxis(b, x.rank);
  [p[i], p[j]] = [p[j]!, p[i]!];
  return transpose(x, p);
}

export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  const target = broadcastShapes(x.shape, shape);
  if (target.length !== shape.length || target.some((d, i) => d !== shape[i])) {
    throw new Error(`broadcastTo: cannot broadcast [${x.shape.join(', ')}] to [${shape.join(', ')}]`);
  }
  if (target.length === x.rank && target.every((d, i) => d === x.shape[i])) return x;
  return apply('broadcastTo', [x], { shape: target });
}

/** Sums `x` down to `shape` (the adjoint of broadcasting); used by gradient rules. */
export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  if (x.rank === shape.length && x.shape.every((d, i) => d === shape[i])) return x;
  const lead = x.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < x.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && x.shape[i] !== 1)) axes.push(i);
  }
  const s = axes.length > 0 ? sum(x, axes, true) : x;
  return reshape(s, shape);
}

/** x[starts[0]:ends[0], ...]; negative indices count from the end; missing dims are taken whole. */
export function slice(x: Tensor, starts: readonly number[], ends: readonly number[]): Tensor {
  const s: number[] = [];
  const e: number[] = [];
  for (let d = 0; d < x.rank; d++) {
    const n = x.shape[d]!;
    const clampIdx = (v: number): number => Math.min(n, Math.max(0, v < 0 ? v + n : v));
    s.push(d < starts.length ? clampIdx(starts[d]!) : 0);
    e.push(d < ends.length ? clampIdx(ends[d]!) : n);
    if (e[d]! < s[d]!) e[d] = s[d]!;
  }
  if (s.every((v) => v === 0) && e.every((v, d) => v === x.shape[d])) return x;
  return apply('slice', [x], { starts: s, ends: e });
}

/**
 * `length` entries of dimension `axis` starting at `start` (negative: counted from the end).
 * Throws, as PyTorch does, when the range does not lie inside the dimension.
 */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const a = normAxis(axis, x.rank);
  const n = x.shape[a]!;
  if (!Number.isInteger(start) || start < -n || start > n) throw new Error(`narrow: start ${start} out of range [${-n}, ${n}] for dimension ${axis} of size ${n}`);
  const first = start < 0 ? start + n : start;
  if (!Number.isInteger(length) || length < 0 || first + length > n) {
    throw new Error(`narrow: start ${first} + length ${length} exceeds dimension ${axis} of size ${n}`);
  }
  const starts = x.shape.map((_, d) => (d === a ? first : 0));
  const ends = x.shape.map((size, d) => (d === a ? first + length : size));
  return slice(x, starts, ends);
}

/** Splits `axis` into pieces of the given sizes (non-negative integers summing to the dimension's size). */
export function split(x: Tensor, sizes: readonly number[], axis = 0): Tensor[] {
  const n = x.shape[normAxis(axis, x.rank)]!;
  if (sizes.some((len) => !Number.isInteger(len) || len < 0)) throw new Error(`split: sizes must be non-negative integers, got [${sizes.join(', ')}]`);
  const total = sizes.reduce((p, len) => p + len, 0);
  if (total !== n) throw new Error(`split: sizes [${sizes.join(', ')}] sum to ${total}, not to the size ${n} of dimension ${axis}`);
  let start = 0;
  return sizes.map((len) => {
    const piece = narrow(x, axis, start, len);
    start += len;
    return piece;
  });
}

export function pad(x: Tensor, pads: readonly (readonly [number, number])[], value = 0): Tensor {
  if (pads.length !== x.rank) throw new Error(`pad: need ${x.rank} [before, after] pairs, got ${pads.length}`);
  if (pads.every(([b, a]) => b === 0 && a === 0)) return x;
  return apply('pad', [x], { pads, value });
}

export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors');
  const a = normAxis(axis, xs[0]!.rank);
  for (const t of xs) {
    if (t.rank !== xs[0]!.rank || t.shape.some((d, i) => i !== a && d !== xs[0]!.shape[i])) {
      throw new Error(`concat: shapes ${xs.map((u) => `[${u.shape.join(', ')}]`).join(' ')} differ off axis ${axis}`);
    }
  }
  if (xs.length === 1) return xs[0]!;
  return apply('concat', xs, { axis: a });
}

export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  return concat(xs.map((t) => unsqueeze(t, axis)), axis);
}

/** Takes entries of `x` along `axis` at int32 `indices` (embedding lookup, label picking). */
export function gather(x: Tensor, indices: Tensor, axis = 0): Tensor {
  if (indices.dtype !== 'int32') throw new Error('gather: indices must be int32');
  const a = normAxis(axis, x.rank);
  const n = x.shape[a]!;
  for (const i of indices.data) if (i < 0 || i >= n) throw new Error(`gather: index ${i} out of range [0, ${n})`);
  return apply('gather', [x, indices], { axis: a });
}

export function scatterAdd(updates: Tensor, indices: Tensor, axis: number, shape: readonly number[]): Tensor {
  return apply('scatterAdd', [updates, indices], { axis, shape });
}

export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  return apply('cast', [x], { dtype });
}

export function onesLike(x: Tensor): Tensor {
  return new Tensor(typedArrayFor(x.dtype, x.size).fill(1), x.shape);
}

export function zerosLike(x: Tensor): Tensor {
  return new Tensor(typedArrayFor(x.dtype, x.size), x.shape);
}

// ---------------------------------------------------------------- linear algebra
/**
 * Batched matrix product of a [...batch, M, K] and b [...batch, K, N] (batch dims broadcast).
 * `transA` / `transB` read a or b transposed in their last two dims, without a copy.
 */
export function matmul(a: Tensor, b: Tensor, options: { transA?: boolean; transB?: boolean } = {}): Tensor {
  const format = autocastTo(a, b);
  if (format) return autocastRun(format, (c) => matmul(c(a), c(b), options));
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  if (a.rank < 2 || b.rank < 2) throw new Error(`matmul needs rank >= 2 operands, got [${a.shape.join(', ')}] and [${b.shape.join(', ')}]`);
  const ka = a.shape[a.rank - (transA ? 2 : 1)];
  const kb = b.shape[b.rank - (transB ? 1 : 2)];
  if (ka !== kb) throw new Error(`matmul: inner dimensions differ: [${a.shape.join(', ')}]${transA ? 'ᵀ' : ''} · [${b.shape.join(', ')}]${transB ? 'ᵀ' : ''}`);
  broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  if (a.dtype !== b.dtype) throw new Error(`matmul: dtypes ${a.dtype} and ${b.dtype} differ`);
  return apply('matmul', [a, b], { transA, transB });
}

let fusedLinear = true;

/**
 * @internal Whether `linear` with a bias runs as the one `linear` primitive (the default) or as
 * matmul then add (the path before it; tests and benchmarks compare the two). Returns the previous setting.
 */
export function setFusedLinear(enabled: boolean): boolean {
  const previous = fusedLinear;
  fusedLinear = enabled;
  return previous;
}

/** y = x·wᵀ + b with w [out, in] (PyTorch's layout); with a bias, one `linear` primitive (bias in the GEMM's output). */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  const format = autocastTo(x, weight, bias);
  if (format) return autocastRun(format, (c) => linear(c(x), c(weight), bias ? c(bias) : bias));
  const flat = x.rank === 2 ? x : reshape(x, [-1, x.shape[x.rank - 1]!]);
  let y: Tensor;
  if (bias && fusedLinear && weight.rank === 2 && bias.rank === 1 && flat.dtype === weight.dtype && bias.dtype === weight.dtype
    && flat.shape[1] === weight.shape[1] && bias.shape[0] === weight.shape[0]) {
    y = apply('linear', [flat, weight, bias], {});
  } else {
    y = matmul(flat, weight, { transB: true });
    if (bias) y = add(y, bias);
  }
  return x.rank === 2 ? y : reshape(y, [...x.shape.slice(0, -1), weight.shape[0]!]);
}

/** Options of the fused recurrent sequences (see RecurrentAttrs): defaults time-major, forward. */
export interface RecurrentOptions {
  batchFirst?: boolean;
  reverse?: boolean;
}

/** Checks the shapes of a fused recurrent sequence's operands; returns its attributes. */
function recurrentAttrs(op: string, gateCount: number, inputGates: Tensor, weightHh: Tensor, states: readonly Tensor[], options: RecurrentOptions): PrimitiveAttrs['lstmSequence'] {
  const batchFirst = options.batchFirst ?? false;
  const text = (t: Tensor): string => `[${t.shape.join(', ')}]`;
  const hidden = weightHh.shape[1] ?? 0;
  if (weightHh.rank !== 2 || hidden < 1 || weightHh.shape[0] !== gateCount * hidden) {
    throw new Error(`${op}: weightHh must be [${gateCount}·H, H], got ${text(weightHh)}`);
  }
  const layout = batchFirst ? '[N, L, ' : '[L, N, ';
  if (inputGates.rank !== 3 || inputGates.shape[2] !== gateCount * hidden || inputGates.shape[0] === 0 || inputGates.shape[1] === 0) {
    throw new Error(`${op}: inputGates must be ${layout}${gateCount * hidden}] (non-empty), got ${text(inputGates)}`);
  }
  const batch = inputGates.shape[batchFirst ? 0 : 1]!;
  for (const state of states) {
    if (state.rank !== 2 || state.shape[0] !== batch || state.shape[1] !== hidden) throw new Error(`${op}: states must be [${batch}, ${hidden}], got ${text(state)}`);
  }
  for (const t of [weightHh, ...states]) {
    if (t.dtype !== inputGates.dtype) throw new Error(`${op}: dtypes ${inputGates.dtype} and ${t.dtype} differ`);
  }
  return { batchFirst, reverse: options.reverse ?? false };
}

/**
 * A whole LSTM layer-direction after its input projection, as one primitive (`lstmSequence`):
 * `inputGates` = W_ih·x_t, [L, N, 4H] ([N, L, 4H] with batchFirst), gates in PyTorch's order
 * i, f, g, o, and `bias` = b_ih + b_hh [4H]; returns [6, L, N, H] (batchFirst: [6, N, L, H])
 * holding per step h_t, c_t, i, f, g, o, with [i, f, g, o] = [σ, σ, tanh, σ](inputGates_t + bias +
 * W_hh·h_{t−1}), c_t = f⊙c_{t−1} + i⊙g and h_t = o⊙tanh(c_t). `reverse` runs from the last step to
 * the first.
 */
export function lstmSequence(inputGates: Tensor, weightHh: Tensor, bias: Tensor, h0: Tensor, c0: Tensor, options: RecurrentOptions = {}): Tensor {
  const attrs = recurrentAttrs('lstmSequence', 4, inputGates, weightHh, [h0, c0], options);
  checkRecurrentBias('lstmSequence', bias, inputGates, weightHh);
  return apply('lstmSequence', [inputGates, weightHh, bias, h0, c0], attrs);
}

function checkRecurrentBias(op: string, bias: Tensor, inputGates: Tensor, weightHh: Tensor): void {
  if (bias.rank !== 1 || bias.shape[0] !== weightHh.shape[0]) throw new Error(`${op}: bias must be [${weightHh.shape[0]}], got [${bias.shape.join(', ')}]`);
  if (bias.dtype !== inputGates.dtype) throw new Error(`${op}: dtypes ${inputGates.dtype} and ${bias.dtype} differ`);
}

/**
 * A whole GRU layer-direction after its input projection, as one primitive (`gruSequence`):
 * `inputGates` = W_ih·x_t, [L, N, 3H] ([N, L, 3H] with batchFirst), gates r, z, n, with the biases
 * b_ih and b_hh [3H]; returns [5, L, N, H] holding per step h_t, r, z, n and hn = W_hn·h_{t−1} + b_hn,
 * with [r, z] = σ(inputGates + b_ih + W_hh·h_{t−1} + b_hh)[r, z], n = tanh(inputGates_n + b_in + r⊙hn)
 * and h_t = n + z⊙(h_{t−1} − n).
 */
export function gruSequence(inputGates: Tensor, weightHh: Tensor, biasIh: Tensor, biasHh: Tensor, h0: Tensor, options: RecurrentOptions = {}): Tensor {
  const attrs = recurrentAttrs('gruSequence', 3, inputGates, weightHh, [h0], options);
  checkRecurrentBias('gruSequence', biasIh, inputGates, weightHh);
  checkRecurrentBias('gruSequence', biasHh, inputGates, weightHh);
  return apply('gruSequence', [inputGates, weightHh, biasIh, biasHh, h0], attrs);
}

export interface Conv2dOptions {
  stride?: number | readonly [number, number];
  padding?: number | readonly [number, number];
  dilation?: number | readonly [number, number];
  groups?: number;
}

function pair(v: number | readonly [number, number] | undefined, fallback: number): [number, number] {
  if (v === undefined) return [fallback, fallback];
  return typeof v === 'number' ? [v, v] : [v[0], v[1]];
}

/** Throws unless both entries of a [h, w] geometry pair are integers >= min (min 0 or 1). */
function checkPair(op: string, name: string, value: readonly number[], min: number): void {
  if (value.length !== 2 || !value.every((d) => Number.isInteger(d) && d >= min)) {
    throw new Error(`${op}: ${name} must be ${min === 0 ? 'non-negative' : 'positive'} integers, got ${value.join('x')}`);
  }
}

/**
 * The conv2d attributes of `options` (defaults stride 1, padding 0, dilation 1, groups 1),
 * validated once for every backend and for nn.Conv2d: stride and dilation positive integers,
 * padding non-negative integers, groups a positive integer. `op` names the caller in errors.
 */
export function conv2dAttrs(options: Conv2dOptions = {}, op = 'conv2d'): PrimitiveAttrs['conv2d'] {
  const attrs = {
    stride: pair(options.stride, 1),
    padding: pair(options.padding, 0),
    dilation: pair(options.dilation, 1),
    groups: options.groups ?? 1,
  };
  checkPair(op, 'stride', attrs.stride, 1);
  checkPair(op, 'padding', attrs.padding, 0);
  checkPair(op, 'dilation', attrs.dilation, 1);
  if (!(Number.isInteger(attrs.groups) && attrs.groups >= 1)) throw new Error(`${op}: groups must be a positive integer, got ${attrs.groups}`);
  return attrs;
}

/** 2-D convolution, x [N, C, H, W], weight [O, C/groups, kh, kw], optional bias [O]. */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, options: Conv2dOptions = {}): Tensor {
  const format = autocastTo(x, weight, bias);
  if (format) return autocastRun(format, (c) => conv2d(c(x), c(weight), bias ? c(bias) : bias, options));
  const attrs = conv2dAttrs(options);
  if (x.rank !== 4 || weight.rank !== 4) throw new Error(`conv2d: expected x [N,C,H,W] and weight [O,C/g,kh,kw], got [${x.shape.join(', ')}] and [${weight.shape.join(', ')}]`);
  const [, c, h, w] = x.shape as [number, number, number, number];
  const [o, cg, kh, kw] = weight.shape as [number, number, number, number];
  const g = attrs.groups;
  if (c !== cg * g || o % g !== 0) throw new Error(`conv2d: ${c} input channels do not match weight [${weight.shape.join(', ')}] with groups=${g}`);
  const oh = Math.floor((h + 2 * attrs.padding[0] - attrs.dilation[0] * (kh - 1) - 1) / attrs.stride[0]) + 1;
  const ow = Math.floor((w + 2 * attrs.padding[1] - attrs.dilation[1] * (kw - 1) - 1) / attrs.stride[1]) + 1;
  if (oh <= 0 || ow <= 0) throw new Error(`conv2d: kernel ${kh}x${kw} does not fit input ${h}x${w} with padding ${attrs.padding.join('x')}`);
  if (!bias) return apply('conv2d', [x, weight], attrs);
  // With a bias [O], the conv and the bias add as one conv2dFused (the same float32 arithmetic per
  // element: the conv's value rounded, then the bias added), so the output is written once; its
  // gradient is conv2d's plus the bias's sum over N, H, W. Another shape of bias broadcasts as an add.
  if (bias.rank === 1 && bias.shape[0] === o && bias.dtype === x.dtype && weight.dtype === x.dtype) return apply('conv2dFused', [x, weight, bias], { ...attrs, relu: false, clampMax: null, pool: null });
  return add(apply('conv2d', [x, weight], attrs), reshape(bias, [1, o, 1, 1]));
}

export interface Conv2dFusedOptions extends Conv2dOptions {
  /** Apply max(·, 0) after the bias (default false). */
  relu?: boolean;
  /**
   * Apply min(·, clampMax) after the ReLU (default none; with `relu`, 6 makes ReLU6). Inference
   * only: the op throws when a gradient would be recorded.
   */
  clampMax?: number | null;
  /**
   * Per-output-channel factor [O] applied to the convolution before the bias (an eval-mode
   * BatchNorm: scale = γ/√(var + eps), bias = β − mean·scale). Inference only, as clampMax.
   */
  scale?: Tensor | null;
  /** Max pooling after the activation: window, stride (default: the window), no padding. */
  pool?: { kernel: number | readonly [number, number]; stride?: number | readonly [number, number] } | null;
}

/**
 * maxPool(min(relu(conv2d(x, weight)·scale + bias), clampMax)) as one primitive (`conv2dFused`):
 * equal to the ops run one after the other (same float32 arithmetic per element; pooling, ReLU
 * and the clamp commute with the bias exactly), in one pass without intermediate tensors on the
 * native backend.
 * x [N, C, H, W], weight [O, C/groups, kh, kw], bias [O] or null (zeros).
 */
export function conv2dFused(x: Tensor, weight: Tensor, bias: Tensor | null, options: Conv2dFusedOptions = {}): Tensor {
  // Under autocast the result is rounded after the ReLU and pooling: both commute with a monotone rounding.
  const format = autocastTo(x, weight, bias);
  if (format) return autocastRun(format, (c) => conv2dFused(c(x), c(weight), bias ? c(bias) : null, options));
  const attrs = conv2dAttrs(options, 'conv2dFused');
  if (x.rank !== 4 || weight.rank !== 4) throw new Error(`conv2dFused: expected x [N,C,H,W] and weight [O,C/g,kh,kw], got [${x.shape.join(', ')}] and [${weight.shape.join(', ')}]`);
  const o = weight.shape[0]!;
  if (x.shape[1] !== weight.shape[1]! * attrs.groups || o % attrs.groups !== 0) throw new Error(`conv2dFused: ${x.shape[1]} input channels do not match weight [${weight.shape.join(', ')}] with groups=${attrs.groups}`);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== o)) throw new Error(`conv2dFused: bias must be [${o}], got [${bias.shape.join(', ')}]`);
  const oh = Math.floor((x.shape[2]! + 2 * attrs.padding[0] - attrs.dilation[0] * (weight.shape[2]! - 1) - 1) / attrs.stride[0]) + 1;
  const ow = Math.floor((x.shape[3]! + 2 * attrs.padding[1] - attrs.dilation[1] * (weight.shape[3]! - 1) - 1) / attrs.stride[1]) + 1;
  if (oh <= 0 || ow <= 0) throw new Error(`conv2dFused: kernel ${weight.shape[2]}x${weight.shape[3]} does not fit input ${x.shape[2]}x${x.shape[3]}`);
  let pool: PrimitiveAttrs['maxPool2d'] | null = null;
  if (options.pool) {
    pool = pool2dAttrs(options.pool.kernel, { stride: options.pool.stride ?? options.pool.kernel }, 'conv2dFused pool');
    const kernel = pool.kernel;
    if (kernel[0] > oh || kernel[1] > ow) throw new Error(`conv2dFused: pooling window ${kernel.join('x')} larger than the conv output ${oh}x${ow}`);
  }
  const clampMax = options.clampMax ?? null;
  const scale = options.scale ?? null;
  if (clampMax !== null && (typeof clampMax !== 'number' || Number.isNaN(clampMax))) throw new Error(`conv2dFused: clampMax must be a number, got ${String(clampMax)}`);
  if (scale && (scale.rank !== 1 || scale.shape[0] !== o)) throw new Error(`conv2dFused: scale must be [${o}], got [${scale.shape.join(', ')}]`);
  if ((clampMax !== null || scale) && isGradEnabled() && [x, weight, bias, scale].some((t) => t?.requiresGrad)) {
    throw new Error('conv2dFused: scale and clampMax are for inference (no gradient); run the ops one by one when training, or call it under noGrad()');
  }
  const b = bias ?? new Tensor(typedArrayFor(x.dtype === 'int32' ? 'float32' : x.dtype, o), [o]);
  return apply('conv2dFused', scale ? [x, weight, b, scale] : [x, weight, b], { ...attrs, relu: options.relu ?? false, clampMax, pool });
}

export interface Pool2dOptions {
  stride?: number | readonly [number, number];
  padding?: number | readonly [number, number];
}

/**
 * Pooling attributes (stride defaults to the kernel, padding to 0), validated once for every
 * backend and for the nn pooling layers: kernel and stride positive integers, padding
 * non-negative integers of at most half the kernel. `op` names the caller in errors.
 */
export function pool2dAttrs(kernel: number | readonly [number, number], options: Pool2dOptions = {}, op = 'pooling'): PrimitiveAttrs['avgPool2d'] {
  const k = pair(kernel, 1);
  const attrs = { kernel: k, stride: pair(options.stride ?? k, 1), padding: pair(options.padding, 0) };
  checkPair(op, 'kernel', attrs.kernel, 1);
  checkPair(op, 'stride', attrs.stride, 1);
  checkPair(op, 'padding', attrs.padding, 0);
  if (attrs.padding[0] * 2 > k[0] || attrs.padding[1] * 2 > k[1]) throw new Error(`${op}: padding must be at most half the kernel, got padding ${attrs.padding.join('x')} for kernel ${k.join('x')}`);
  return attrs;
}

function poolAttrs(x: Tensor, kernel: number | readonly [number, number], options: Pool2dOptions, op: string): PrimitiveAttrs['maxPool2d'] {
  if (x.rank !== 4) throw new Error(`${op} expects [N, C, H, W], got [${x.shape.join(', ')}]`);
  const attrs = pool2dAttrs(kernel, options, op);
  const k = attrs.kernel;
  if (x.shape[2]! + 2 * attrs.padding[0] < k[0] || x.shape[3]! + 2 * attrs.padding[1] < k[1]) {
    throw new Error(`${op}: kernel ${k.join('x')} larger than input ${x.shape[2]}x${x.shape[3]}`);
  }
  return attrs;
}

export interface MaxPool2dOptions extends Pool2dOptions {
  /**
   * Pool the ReLU of x: max(window max, 0), with gradients routed only through positive maxima --
   * maxPool2d(relu(x)) as one op that never materialises relu(x) (equal for finite inputs).
   */
  relu?: boolean;
}

export function maxPool2d(x: Tensor, kernel: number | readonly [number, number], options: MaxPool2dOptions = {}): Tensor {
  const attrs = poolAttrs(x, kernel, options, 'maxPool2d');
  return apply('maxPool2d', [x], options.relu ? { ...attrs, relu: true } : attrs);
}

export function avgPool2d(x: Tensor, kernel: number | readonly [number, number], options: Pool2dOptions = {}): Tensor {
  return apply('avgPool2d', [x], poolAttrs(x, kernel, options, 'avgPool2d'));
}

/** Average pooling to a fixed output size; input sizes must be multiples of the output size. */
export function adaptiveAvgPool2d(x: Tensor, outputSize: number | readonly [number, number]): Tensor {
  const [oh, ow] = pair(outputSize, 1);
  const h = x.shape[2]!;
  const w = x.shape[3]!;
  if (oh === 1 && ow === 1) return mean(x, [2, 3], true);
  if (h % oh !== 0 || w % ow !== 0) throw new Error(`adaptiveAvgPool2d: input ${h}x${w} is not a multiple of ${oh}x${ow}`);
  return avgPool2d(x, [h / oh, w / ow]);
}

// ---------------------------------------------------------------- batch normalisation (training mode)
/**
 * Training-mode batch normalisation as one primitive: x [N, C, ...] normalised with each channel's
 * mean and biased variance over every other dim, y = (x − mean)/√(var + eps)·weight + bias.
 * `stats`: batchNormStats(x.detach()) when the caller computed it anyway (BatchNorm's running
 * statistics); the kernels then skip computing the statistics again, forward and backward.
 * `clamp` [min, max]: clamp(y, min, max) in the same op (BatchNorm → ReLU6 in training: the
 * gradient is clamp's, applied inside batchNorm's backward, and no separate clamp output is kept).
 */
export function batchNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5, stats: Tensor | null = null, clamp: readonly [number, number] | null = null): Tensor {
  const text = (t: Tensor): string => `[${t.shape.join(', ')}]`;
  if (x.rank < 2 || weight.rank !== 1 || weight.size !== x.shape[1] || bias.rank !== 1 || bias.size !== x.shape[1]) {
    throw new Error(`batchNorm: input ${text(x)} needs weight and bias of its ${x.shape[1]} channels, got ${text(weight)} and ${text(bias)}`);
  }
  if (x.dtype === 'int32' || weight.dtype !== x.dtype || bias.dtype !== x.dtype) throw new Error(`batchNorm: dtypes ${x.dtype}, ${weight.dtype}, ${bias.dtype} must be one float dtype`);
  if (!(eps >= 0)) throw new Error(`batchNorm: eps must be >= 0, got ${eps}`);
  if (clamp && !(clamp.length === 2 && clamp.every((v) => typeof v === 'number' && !Number.isNaN(v)))) throw new Error(`batchNorm: clamp must be [min, max] numbers, got ${String(clamp)}`);
  const attrs = clamp ? { eps, clamp: [clamp[0], clamp[1]] as const } : { eps };
  if (!stats) return apply('batchNorm', [x, weight, bias], attrs);
  if (stats.rank !== 2 || stats.shape[0] !== 2 || stats.shape[1] !== x.shape[1] || stats.dtype !== x.dtype || stats.requiresGrad) {
    throw new Error(`batchNorm: stats must be batchNormStats(x) detached, [2, ${x.shape[1]}] ${x.dtype}; got ${stats.dtype} ${text(stats)}`);
  }
  return apply('batchNorm', [x, weight, bias, stats], attrs);
}

/**
 * x [N, C, ...] -> [2, C]: each channel's batch mean and biased variance, in one primitive (native:
 * one pass over x); differentiable (∂mean/∂x = 1/M, ∂var/∂x = 2(x − mean)/M over M values).
 */
export function batchNormStats(x: Tensor): Tensor {
  if (x.rank < 2 || x.dtype === 'int32') throw new Error(`batchNormStats: expected a float input [N, C, ...], got ${x.dtype} [${x.shape.join(', ')}]`);
  return apply('batchNormStats', [x], {});
}

// ---------------------------------------------------------------- fused Transformer layers

/**
 * LayerNorm over the trailing dims that `weight` and `bias` (same shape) cover, as one primitive:
 * y = (x − mean)/√(var + eps)·weight + bias per row (biased variance).
 */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  const k = weight.rank;
  const text = (t: Tensor): string => `[${t.shape.join(', ')}]`;
  if (bias.rank !== k || bias.shape.some((d, i) => d !== weight.shape[i])) throw new Error(`layerNorm: weight ${text(weight)} and bias ${text(bias)} differ in shape`);
  if (x.rank < k || weight.shape.some((d, i) => d !== x.shape[x.rank - k + i])) throw new Error(`layerNorm: input ${text(x)} does not end with the normalized shape ${text(weight)}`);
  if (x.dtype === 'int32' || weight.dtype !== x.dtype || bias.dtype !== x.dtype) throw new Error(`layerNorm: dtypes ${x.dtype}, ${weight.dtype}, ${bias.dtype} must be one float dtype`);
  if (!(eps >= 0)) throw new Error(`layerNorm: eps must be >= 0, got ${eps}`);
  return apply('layerNorm', [x, weight, bias], { eps });
}

/**
 * Multi-head scaled dot-product self-attention on a fused Q/K/V projection, as one primitive:
 * qkv [N, L, 3E] (Q, K, V side by side, head h at columns h·d.. of each, d = E / heads) →
 * [N, L, E] with the heads merged, softmax(Q_h·K_hᵀ/√d + causal mask)·V_h per head.
 */
export function attention(qkv: Tensor, options: { heads: number; causal?: boolean }): Tensor {
  const { heads } = options;
  if (qkv.rank !== 3 || qkv.shape[2]! % 3 !== 0 || qkv.shape[1]! < 1) throw new Error(`attention: qkv must be [N, L, 3E] with L >= 1, got [${qkv.shape.join(', ')}]`);
  const e = qkv.shape[2]! / 3;
  if (!Number.isInteger(heads) || heads < 1 || e % heads !== 0) throw new Error(`attention: heads ${heads} must be a positive integer dividing E = ${e}`);
  if (qkv.dtype === 'int32') throw new Error('attention: expects a float tensor, got int32');
  return apply('attention', [qkv], { heads, causal: options.causal ?? false });
}

/**
 * Causal attention of S new positions over a KV cache (one decoding step when S = 1), as one
 * primitive: qkv [N, S, 3E] holds the new positions' fused projection (only its Q third is read);
 * keys and values [N, C, E] hold positions 0..past+S−1 in rows (heads side by side, as the K and V
 * thirds of qkv), the new ones already written at rows past..; C is the cache's capacity. Returns
 * [N, S, E]: position past + s attends to positions 0..past+s -- the rows of
 * `attention(qkvAll, {heads, causal: true})` at those positions. Inference only: not differentiable.
 */
export function decodeAttention(qkv: Tensor, keys: Tensor, values: Tensor, options: { heads: number; past: number }): Tensor {
  const { heads, past } = options;
  if (qkv.rank !== 3 || qkv.shape[2]! % 3 !== 0 || qkv.shape[1]! < 1) throw new Error(`decodeAttention: qkv must be [N, S, 3E] with S >= 1, got [${qkv.shape.join(', ')}]`);
  const [n, steps, e3] = qkv.shape as [number, number, number];
  const e = e3 / 3;
  if (!Number.isInteger(heads) || heads < 1 || e % heads !== 0) throw new Error(`decodeAttention: heads ${heads} must be a positive integer dividing E = ${e}`);
  for (const [name, t] of [['keys', keys], ['values', values]] as const) {
    if (t.rank !== 3 || t.shape[0] !== n || t.shape[2] !== e) throw new Error(`decodeAttention: ${name} must be [${n}, C, ${e}], got [${t.shape.join(', ')}]`);
    if (t.dtype !== qkv.dtype) throw new Error(`decodeAttention: ${name} dtype ${t.dtype} differs from qkv's ${qkv.dtype}`);
  }
  if (keys.shape[1] !== values.shape[1]) throw new Error(`decodeAttention: keys [${keys.shape.join(', ')}] and values [${values.shape.join(', ')}] differ in capacity`);
  if (!Number.isInteger(past) || past < 0 || past + steps > keys.shape[1]!) throw new Error(`decodeAttention: positions ${past}..${past + steps - 1} do not fit the cache capacity ${keys.shape[1]}`);
  if (qkv.dtype === 'int32') throw new Error('decodeAttention: expects a float tensor, got int32');
  return apply('decodeAttention', [qkv, keys, values], { heads, past });
}

// ---------------------------------------------------------------- softmax and losses
export function softmax(x: Tensor, axis = -1): Tensor {
  return apply('softmax', [x], { axis: normAxis(axis, x.rank) });
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return apply('logSoftmax', [x], { axis: normAxis(axis, x.rank) });
}

export type Reduction = 'mean' | 'sum' | 'none';

function reduce(x: Tensor, reduction: Reduction): Tensor {
  return reduction === 'mean' ? mean(x) : reduction === 'sum' ? sum(x) : x;
}

/**
 * Negative log-likelihood of int32 class indices `targets` [N] under log-probabilities [N, C].
 * Float targets are refused (as PyTorch refuses non-integer class indices) rather than truncated.
 */
export function nllLoss(logProbs: Tensor, targets: Tensor, reduction: Reduction = 'mean'): Tensor {
  if (logProbs.rank !== 2 || targets.rank !== 1 || targets.shape[0] !== logProbs.shape[0]) {
    throw new Error(`nllLoss: expected [N, C] and [N], got [${logProbs.shape.join(', ')}] and [${targets.shape.join(', ')}]`);
  }
  if (targets.dtype !== 'int32') throw new Error(`nllLoss: targets must be int32 class indices, got ${targets.dtype} (cast(targets, 'int32') truncates)`);
  const n = logProbs.shape[0]!;
  const c = logProbs.shape[1]!;
  // Pick logProbs[i, targets[i]] by gathering rows of the flattened matrix.
  const flatIndex = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const t = targets.data[i]!;
    if (t < 0 || t >= c) throw new Error(`nllLoss: target ${t} out of range [0, ${c})`);
    flatIndex[i] = i * c + t;
  }
  const picked = gather(reshape(logProbs, [n * c]), new Tensor(flatIndex, [n]), 0);
  return reduce(neg(picked), reduction);
}

/**
 * Softmax cross-entropy of logits [N, C] against int32 class indices [N] (float targets throw):
 * nllLoss(logSoftmax(logits, 1), targets). With `fused`, one `crossEntropyLoss` primitive instead
 * (per-row logsumexp − target logit; its backward, softmax − onehot, in one pass: a native kernel
 * several times faster on large vocabularies), the same function with other roundings (float64 sums
 * in the reference, a polynomial exp in the native kernel), so it is opt-in: the Transformer LM's
 * every-position objective uses it.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, reduction: Reduction = 'mean', options: { fused?: boolean } = {}): Tensor {
  if (!options.fused) return nllLoss(logSoftmax(logits, 1), targets, reduction);
  if (logits.rank !== 2 || targets.rank !== 1 || targets.shape[0] !== logits.shape[0]) {
    throw new Error(`crossEntropy: expected [N, C] and [N], got [${logits.shape.join(', ')}] and [${targets.shape.join(', ')}]`);
  }
  if (targets.dtype !== 'int32') throw new Error(`crossEntropy: targets must be int32 class indices, got ${targets.dtype} (cast(targets, 'int32') truncates)`);
  if (logits.dtype === 'int32') throw new Error('crossEntropy: logits must be float');
  const c = logits.shape[1]!;
  for (let i = 0; i < targets.size; i++) {
    const t = targets.data[i]!;
    if (t < 0 || t >= c) throw new Error(`crossEntropy: target ${t} out of range [0, ${c})`);
  }
  return reduce(apply('crossEntropyLoss', [logits, targets], NONE), reduction);
}

/**
 * Mean squared error. prediction and target must have the same shape: PyTorch broadcasts
 * mismatched shapes with a warning ([2, 1] against [2] becomes [2, 2]), which is almost always a
 * bug, so lowbit refuses them.
 */
export function mseLoss(prediction: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor {
  if (prediction.shape.length !== target.shape.length || prediction.shape.some((d, i) => d !== target.shape[i])) {
    throw new Error(`mseLoss: prediction shape [${prediction.shape.join(', ')}] and target shape [${target.shape.join(', ')}] differ (reshape the target; PyTorch would broadcast them)`);
  }
  const d = sub(prediction, target);
  return reduce(mul(d, d), reduction);
}
