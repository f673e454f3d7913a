/**
 * Native kernels: thin adapters from RawTensors to the addon. Each checks that it handles the
 * inputs (float32, supported layout) and otherwise returns undefined so the reference kernel runs.
 * Outputs are allocated here; the addon writes into them in place.
 */
import type { Conv2dAttrs, Kernel, PrimitiveName, RawTensor, TypedArray } from '../primitives.ts';
import { matmulSizes, paramLayout, scaleInPlace, sizeOf } from '../primitives.ts';
import { registerKernel } from '../registry.ts';
import { noteAllocated, takeRecycled } from '../recycle.ts';
import type { NativeAddon } from './addon.ts';
import { BINARY_OPS, CAST_FLOAT_CODES, UNARY_OPS } from './addon.ts';

function isF32(data: TypedArray): data is Float32Array {
  return data instanceof Float32Array;
}

function allF32(inputs: readonly RawTensor[]): boolean {
  return inputs.every((t) => t.dtype === 'float32' && isF32(t.data));
}

function out(shape: readonly number[]): { data: Float32Array; shape: number[]; dtype: 'float32' } {
  const data = new Float32Array(sizeOf(shape));
  noteAllocated(data);
  return { data, shape: [...shape], dtype: 'float32' };
}

/**
 * An output the kernel overwrites completely: large buffers skip the zero fill (and the fresh,
 * page-faulting pages) of `new Float32Array` -- a buffer autograd has released while it is still
 * in cache (backend/recycle.ts), else uninitialised memory from Node's allocator.
 */
function outUninit(shape: readonly number[]): { data: Float32Array; shape: number[]; dtype: 'float32' } {
  const size = sizeOf(shape);
  if (size < UNINIT_MIN) return out(shape);
  let data = takeRecycled(size);
  if (!data) {
    const bytes = Buffer.allocUnsafeSlow(size * 4);
    data = new Float32Array(bytes.buffer, bytes.byteOffset, size);
  }
  noteAllocated(data);
  return { data, shape: [...shape], dtype: 'float32' };
}

/** Below this many elements a zero-filled allocation costs about the same. */
const UNINIT_MIN = 4096;

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function outSize(n: number, k: number, stride: number, pad: number, dilation: number): number {
  return Math.floor((n + 2 * pad - dilation * (k - 1) - 1) / stride) + 1;
}

/**
 * The (d0, d1, d2) view of a broadcast binary op: dims of the output where a and b are both
 * full, or one is broadcast, merged into at most three groups, with each operand's stride per
 * group (0 = broadcast). Null when more than three groups are needed.
 */
export function binaryLayout(aShape: readonly number[], bShape: readonly number[], shape: readonly number[]): Int32Array | null {
  const rank = shape.length;
  const groups: { size: number; aFull: boolean; bFull: boolean }[] = [];
  for (let d = 0; d < rank; d++) {
    const size = shape[d]!;
    if (size === 1) continue;
    const aFull = (aShape[d - rank + aShape.length] ?? 1) === size;
    const bFull = (bShape[d - rank + bShape.length] ?? 1) === size;
    const last = groups[groups.length - 1];
    if (last && last.aFull === aFull && last.bFull === bFull) last.size *= size;
    else groups.push({ size, aFull, bFull });
  }
  if (groups.length > 3) return null;
  while (groups.length < 3) groups.unshift({ size: 1, aFull: false, bFull: false });
  const layout = new Int32Array(9);
  let aStride = 1;
  let bStride = 1;
  for (let g = 2; g >= 0; g--) {
    const { size, aFull, bFull } = groups[g]!;
    layout[g] = size;
    layout[3 + g] = aFull ? aStride : 0;
    layout[6 + g] = bFull ? bStride : 0;
    if (aFull) aStride *= size;
    if (bFull) bStride *= size;
  }
  return layout;
}

function broadcastShape(a: readonly number[], b: readonly number[]): number[] | null {
  const rank = Math.max(a.length, b.length);
  const shape: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) return null;
    shape.push(da === 1 ? db : da);
  }
  return shape;
}

// ---------------------------------------------------------------- linear algebra

/** a [...batch, M, K] (or [..., K, M]), b [...batch, K, N] (or [..., N, K]); batch dims equal or absent on one side. */
function matmulKernel(addon: NativeAddon): Kernel<'matmul'> {
  return (inputs, { transA, transB }) => {
    const [a, b] = inputs as [RawTensor, RawTensor];
    const sizes = allF32(inputs) ? matmulSizes(a.shape, b.shape, transA, transB) : null;
    if (!sizes) return undefined;
    const { m, k, n, aBatch, bBatch } = sizes;
    let batchShape: readonly number[];
    if (sameShape(aBatch, bBatch)) batchShape = aBatch;
    else if (aBatch.length === 0) batchShape = bBatch;
    else if (bBatch.length === 0) batchShape = aBatch;
    else return undefined;
    const batch = sizeOf(batchShape);
    const y = outUninit([...batchShape, m, n]);
    if (y.data.length === 0) return y;
    addon.sgemm(
      transA, transB, m, n, k,
      a.data as Float32Array, transA ? m : k, b.data as Float32Array, transB ? k : n, 0, y.data, n,
      batch, aBatch.length === 0 ? 0 : m * k, bBatch.length === 0 ? 0 : k * n, m * n,
    );
    return y;
  };
}

/**
 * (x [M, K], w [N, K], bias [N]) -> x·wᵀ + bias [M, N]: the output starts as the bias rows and the
 * GEMM accumulates onto them (beta = 1), so the bias costs no second pass over a fresh buffer.
 */
function linearKernel(addon: NativeAddon): Kernel<'linear'> {
  return (inputs) => {
    const [x, w, bias] = inputs as [RawTensor, RawTensor, RawTensor];
    if (!allF32(inputs) || x.shape.length !== 2 || w.shape.length !== 2 || bias.shape.length !== 1) return undefined;
    const [m, k] = x.shape as [number, number];
    const n = w.shape[0]!;
    if (w.shape[1] !== k || bias.shape[0] !== n) return undefined;
    const y = outUninit([m, n]);
    if (y.data.length === 0) return y;
    const b = bias.data as Float32Array;
    for (let i = 0; i < m; i++) y.data.set(b, i * n);
    if (k > 0) addon.sgemm(false, true, m, n, k, x.data as Float32Array, k, w.data as Float32Array, k, 1, y.data, n, 1, 0, 0, m * n);
    return y;
  };
}

// ---------------------------------------------------------------- conv2d

/** [N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups], or null when not valid. */
function convGeometry(x: readonly number[], w: readonly number[], a: Conv2dAttrs): Int32Array | null {
  if (x.length !== 4 || w.length !== 4) return null;
  const [n, c, h, wd] = x as [number, number, number, number];
  const [o, cg, kh, kw] = w as [number, number, number, number];
  const g = a.groups;
  if (g < 1 || c % g !== 0 || o % g !== 0 || cg !== c / g) return null;
  const oh = outSize(h, kh, a.stride[0], a.padding[0], a.dilation[0]);
  const ow = outSize(wd, kw, a.stride[1], a.padding[1], a.dilation[1]);
  if (oh < 1 || ow < 1 || n < 1) return null;
  return Int32Array.from([
    n, c, h, wd, o, kh, kw, oh, ow, a.stride[0], a.stride[1], a.padding[0], a.padding[1], a.dilation[0], a.dilation[1], g,
  ]);
}

/** x (N,C,H,W), w (O,C/g,KH,KW) -> y (N,O,OH,OW) */
function conv2dKernel(addon: NativeAddon): Kernel<'conv2d'> {
  return (inputs, attrs) => {
    const [x, w] = inputs as [RawTensor, RawTensor];
    const geom = allF32(inputs) ? convGeometry(x.shape, w.shape, attrs) : null;
    if (!geom) return undefined;
    const y = outUninit([geom[0]!, geom[4]!, geom[7]!, geom[8]!]);
    addon.conv2d(x.data as Float32Array, w.data as Float32Array, y.data, geom);
    return y;
  };
}

/** dy (N,O,OH,OW), w (O,C/g,KH,KW) -> dx (inputShape) */
function conv2dBackwardInputKernel(addon: NativeAddon): Kernel<'conv2dBackwardInput'> {
  return (inputs, attrs) => {
    const [dy, w] = inputs as [RawTensor, RawTensor];
    const geom = allF32(inputs) ? convGeometry(attrs.inputShape, w.shape, attrs) : null;
    if (!geom || !sameShape(dy.shape, [geom[0]!, geom[4]!, geom[7]!, geom[8]!])) return undefined;
    const dx = outUninit(attrs.inputShape);
    addon.conv2dBackwardInput(dy.data as Float32Array, w.data as Float32Array, dx.data, geom);
    return dx;
  };
}

/** x (N,C,H,W), dy (N,O,OH,OW) -> dw (weightShape) */
function conv2dBackwardWeightKernel(addon: NativeAddon): Kernel<'conv2dBackwardWeight'> {
  return (inputs, attrs) => {
    const [x, dy] = inputs as [RawTensor, RawTensor];
    const geom = allF32(inputs) ? convGeometry(x.shape, attrs.weightShape, attrs) : null;
    if (!geom || !sameShape(dy.shape, [geom[0]!, geom[4]!, geom[7]!, geom[8]!])) return undefined;
    const dw = out(attrs.weightShape);
    addon.conv2dBackwardWeight(x.data as Float32Array, dy.data as Float32Array, dw.data, geom);
    return dw;
  };
}

/** AdderNet: x (N,C,H,W), w (O,C/g,KH,KW) -> y (N,O,OH,OW) = -Σ|patch - w| (float32 sums; the reference sums in float64). */
function adderConv2dKernel(addon: NativeAddon): Kernel<'adderConv2d'> {
  return (inputs, attrs) => {
    const [x, w] = inputs as [RawTensor, RawTensor];
    const geom = allF32(inputs) && addon.adderConv2d ? convGeometry(x.shape, w.shape, attrs) : null;
    if (!geom) return undefined;
    const y = outUninit([geom[0]!, geom[4]!, geom[7]!, geom[8]!]);
    addon.adderConv2d!(x.data as Float32Array, w.data as Float32Array, y.data, geom);
    return y;
  };
}

/** g (N,O,OH,OW), x, w -> 'input' dx (like x) or 'weight' dw (like w): AdderNet's estimator gradient. */
function adderConv2dGradKernel(addon: NativeAddon): Kernel<'adderConv2dGrad'> {
  return (inputs, attrs) => {
    const [g, x, w] = inputs as [RawTensor, RawTensor, RawTensor];
    const geom = allF32(inputs) && addon.adderConv2dGrad ? convGeometry(x.shape, w.shape, attrs) : null;
    if (!geom || !sameShape(g.shape, [geom[0]!, geom[4]!, geom[7]!, geom[8]!])) return undefined;
    const input = attrs.part === 'input';
    const result = outUninit(input ? x.shape : w.shape);
    addon.adderConv2dGrad!(input ? 0 : 1, g.data as Float32Array, x.data as Float32Array, w.data as Float32Array, result.data, geom);
    return result;
  };
}

/** x (N,C,H,W), w (O,C/g,KH,KW), bias (O)[, scale (O)] -> maxPool(min(relu(conv2d(x, w)·scale + bias), clampMax)) (N,O,PH,PW); pooling without padding */
function conv2dFusedKernel(addon: NativeAddon): Kernel<'conv2dFused'> {
  return (inputs, attrs) => {
    const [x, w, bias, scale] = inputs as [RawTensor, RawTensor, RawTensor, RawTensor | undefined];
    const geom = allF32(inputs) ? convGeometry(x.shape, w.shape, attrs) : null;
    if (!geom || bias.shape.length !== 1 || bias.shape[0] !== geom[4]) return undefined;
    if (scale && (scale.shape.length !== 1 || scale.shape[0] !== geom[4])) return undefined;
    const pool = attrs.pool;
    let ph = geom[7]!;
    let pw = geom[8]!;
    if (pool) {
      if (pool.padding[0] !== 0 || pool.padding[1] !== 0 || pool.kernel[0] > ph || pool.kernel[1] > pw) return undefined;
      ph = outSize(ph, pool.kernel[0], pool.stride[0], 0, 1);
      pw = outSize(pw, pool.kernel[1], pool.stride[1], 0, 1);
    }
    const epilogue = Int32Array.from(pool ? [attrs.relu ? 1 : 0, ...pool.kernel, ...pool.stride] : [attrs.relu ? 1 : 0, 0, 0, 1, 1]);
    const y = outUninit([geom[0]!, geom[4]!, ph, pw]);
    addon.conv2dFused(x.data as Float32Array, w.data as Float32Array, bias.data as Float32Array, y.data, geom, epilogue, attrs.clampMax ?? undefined, scale?.data as Float32Array | undefined);
    return y;
  };
}

// ---------------------------------------------------------------- fused recurrent sequences

type RecurrentOp = 'lstmSequence' | 'lstmSequenceBackward' | 'gruSequence' | 'gruSequenceBackward';

/**
 * The four recurrent primitives: inputs as the primitive lists them, float32;
 * dims [L, N, H, batchFirst, reverse] from the per-step tensor (gates, or out's [·, ·] dims) and
 * weightHh [G·H, H]. The output is `resultShape`, written completely by the addon.
 */
function recurrentKernel<P extends RecurrentOp>(addon: NativeAddon, op: P): Kernel<P> {
  const forward = op === 'lstmSequence' || op === 'gruSequence';
  const parts = op.startsWith('lstm') ? 6 : 5;
  return (inputs, { batchFirst, reverse }) => {
    if (!allF32(inputs)) return undefined;
    const [a0, a1, a2] = inputs as [RawTensor, RawTensor, RawTensor];
    const weight = forward ? a1 : a2;
    const [rowsA, rowsB] = forward ? a0.shape : a0.shape.slice(1);
    const hidden = weight.shape[1]!;
    const steps = batchFirst ? rowsB! : rowsA!;
    const batch = batchFirst ? rowsA! : rowsB!;
    const gatesSize = steps * batch * weight.shape[0]!;
    const resultShape = forward ? [parts, rowsA!, rowsB!, hidden]
      : [op === 'lstmSequenceBackward' ? gatesSize + 2 * batch * hidden : 2 * gatesSize + batch * hidden];
    const result = outUninit(resultShape);
    const dims = Int32Array.from([steps, batch, hidden, batchFirst ? 1 : 0, reverse ? 1 : 0]);
    const data = inputs.map((t) => t.data as Float32Array);
    if (forward) addon[op as 'lstmSequence' | 'gruSequence'](data[0]!, data[1]!, data[2]!, data[3]!, data[4]!, result.data, dims);
    else addon[op as 'lstmSequenceBackward' | 'gruSequenceBackward'](data[0]!, data[1]!, data[2]!, data[3]!, result.data, dims);
    return result;
  };
}

// ---------------------------------------------------------------- fused Transformer layers

/** Rows and width of a layerNorm call: x [..., D] with weight (and bias) of D elements; null when they do not fit. */
function layerNormRows(x: RawTensor, weight: RawTensor): [number, number] | null {
  const width = weight.data.length;
  if (width < 1 || x.data.length % width !== 0) return null;
  return [x.data.length / width, width];
}

/** x [..., D], weight [D], bias [D] -> y like x */
function layerNormKernel(addon: NativeAddon): Kernel<'layerNorm'> {
  return (inputs, { eps }) => {
    const [x, w, b] = inputs as [RawTensor, RawTensor, RawTensor];
    const dims = allF32(inputs) && addon.layerNorm && b.data.length === w.data.length ? layerNormRows(x, w) : null;
    if (!dims) return undefined;
    const y = outUninit(x.shape);
    if (y.data.length > 0) addon.layerNorm!(x.data as Float32Array, w.data as Float32Array, b.data as Float32Array, y.data, dims[0], dims[1], eps);
    return y;
  };
}

/** g like x, x [..., D], weight [D] -> flat [dx (x.size), dweight (D), dbias (D)] */
function layerNormBackwardKernel(addon: NativeAddon): Kernel<'layerNormBackward'> {
  return (inputs, { eps }) => {
    const [g, x, w] = inputs as [RawTensor, RawTensor, RawTensor];
    const dims = allF32(inputs) && addon.layerNormBackward && g.data.length === x.data.length ? layerNormRows(x, w) : null;
    if (!dims) return undefined;
    const y = outUninit([x.data.length + 2 * dims[1]]);
    addon.layerNormBackward!(g.data as Float32Array, x.data as Float32Array, w.data as Float32Array, y.data, dims[0], dims[1], eps);
    return y;
  };
}

// ---------------------------------------------------------------- training-mode BatchNorm, clamp

/** [N, C, S] of x [N, C, ...] (N, C >= 1), null when it does not fit the kernels. */
function bnDims(x: RawTensor): [number, number, number] | null {
  if (x.shape.length < 2) return null;
  const n = x.shape[0]!;
  const c = x.shape[1]!;
  if (n < 1 || c < 1) return null;
  return [n, c, x.data.length / (n * c)];
}

/** The optional statistics input [2, C] (batchNormStats's output) as the addon takes it; null when it does not fit. */
function bnStats(stats: RawTensor | undefined, c: number): Float32Array | undefined | null {
  if (!stats) return undefined;
  return stats.data instanceof Float32Array && stats.data.length === 2 * c ? stats.data : null;
}

/** x [N, C, ...], weight [C], bias [C][, stats [2, C]] -> y like x */
function batchNormKernel(addon: NativeAddon): Kernel<'batchNorm'> {
  return (inputs, { eps, clamp }) => {
    const [x, w, b, s] = inputs as [RawTensor, RawTensor, RawTensor, RawTensor | undefined];
    const d = allF32(inputs) && addon.batchNorm ? bnDims(x) : null;
    if (!d || w.data.length !== d[1] || b.data.length !== d[1]) return undefined;
    const stats = bnStats(s, d[1]);
    if (stats === null) return undefined;
    const y = outUninit(x.shape);
    if (y.data.length > 0) addon.batchNorm!(x.data as Float32Array, w.data as Float32Array, b.data as Float32Array, y.data, d[0], d[1], d[2], eps, stats, clamp?.[0], clamp?.[1]);
    return y;
  };
}

/** g like x, x [N, C, ...], weight [C][, stats [2, C]] -> flat [dx (x.size), dweight (C), dbias (C)] */
function batchNormBackwardKernel(addon: NativeAddon): Kernel<'batchNormBackward'> {
  return (inputs, { eps, clamp }) => {
    const [g, x, w, s, bias] = inputs as [RawTensor, RawTensor, RawTensor, RawTensor | undefined, RawTensor | undefined];
    const d = allF32(inputs) && addon.batchNormBackward && g.data.length === x.data.length ? bnDims(x) : null;
    if (!d || w.data.length !== d[1]) return undefined;
    const stats = bnStats(s, d[1]);
    if (stats === null || (clamp && (!bias || bias.data.length !== d[1]))) return undefined;
    const y = outUninit([x.data.length + 2 * d[1]]);
    if (x.data.length === 0) y.data.fill(0);
    else addon.batchNormBackward!(g.data as Float32Array, x.data as Float32Array, w.data as Float32Array, y.data, d[0], d[1], d[2], eps, stats, clamp?.[0], clamp?.[1], bias?.data as Float32Array | undefined);
    return y;
  };
}

/** x [N, C, ...] -> [2, C] mean and biased variance */
function batchNormStatsKernel(addon: NativeAddon): Kernel<'batchNormStats'> {
  return (inputs) => {
    const [x] = inputs as [RawTensor];
    const d = allF32(inputs) && addon.batchNormStats ? bnDims(x) : null;
    if (!d || x.data.length === 0) return undefined;
    const y = outUninit([2, d[1]]);
    addon.batchNormStats!(x.data as Float32Array, y.data, d[0], d[1], d[2]);
    return y;
  };
}

/** g [2, C], x [N, C, ...], stats [2, C] -> dx like x (batchNormStats's adjoint) */
function batchNormStatsBackwardKernel(addon: NativeAddon): Kernel<'batchNormStatsBackward'> {
  return (inputs) => {
    const [g, x, s] = inputs as [RawTensor, RawTensor, RawTensor];
    const d = allF32(inputs) && addon.batchNormStatsBackward ? bnDims(x) : null;
    if (!d || x.data.length === 0 || g.data.length !== 2 * d[1] || s.data.length !== 2 * d[1]) return undefined;
    const dx = outUninit(x.shape);
    addon.batchNormStatsBackward!(g.data as Float32Array, x.data as Float32Array, s.data as Float32Array, dx.data, d[0], d[1], d[2]);
    return dx;
  };
}

/** x -> clamp(x, min, max) */
function clampKernel(addon: NativeAddon): Kernel<'clamp'> {
  return (inputs, { min, max }) => {
    const [x] = inputs as [RawTensor];
    if (!allF32(inputs) || !addon.clamp) return undefined;
    const y = outUninit(x.shape);
    if (y.data.length > 0) addon.clamp(x.data as Float32Array, y.data, y.data.length, min, max);
    return y;
  };
}

/** (g, x) -> g where x was not clamped, else 0 */
function clampBackwardKernel(addon: NativeAddon): Kernel<'clampBackward'> {
  return (inputs, { min, max }) => {
    const [g, x] = inputs as [RawTensor, RawTensor];
    if (!allF32(inputs) || !addon.clampBackward || g.data.length !== x.data.length) return undefined;
    const y = outUninit(g.shape);
    if (y.data.length > 0) addon.clampBackward(g.data as Float32Array, x.data as Float32Array, y.data, y.data.length, min, max);
    return y;
  };
}

/** x -> GELU(x) (either form) */
function geluKernel(addon: NativeAddon): Kernel<'gelu'> {
  return (inputs, { approximate }) => {
    const [x] = inputs as [RawTensor];
    if (!allF32(inputs) || !addon.gelu) return undefined;
    const y = outUninit(x.shape);
    if (y.data.length > 0) addon.gelu!(x.data as Float32Array, y.data, y.data.length, approximate === 'tanh');
    return y;
  };
}

/** (g, x) -> g·GELU'(x), same shapes */
function geluBackwardKernel(addon: NativeAddon): Kernel<'geluBackward'> {
  return (inputs, { approximate }) => {
    const [g, x] = inputs as [RawTensor, RawTensor];
    if (!allF32(inputs) || !addon.geluBackward || !sameShape(g.shape, x.shape)) return undefined;
    const y = outUninit(x.shape);
    if (y.data.length > 0) addon.geluBackward!(g.data as Float32Array, x.data as Float32Array, y.data, y.data.length, approximate === 'tanh');
    return y;
  };
}

/** [N, L, E] of qkv [N, L, 3E] when heads divides E, else null. */
function attentionShape(qkv: RawTensor, heads: number): [number, number, number] | null {
  if (qkv.shape.length !== 3) return null;
  const [n, l, e3] = qkv.shape as [number, number, number];
  const e = e3 / 3;
  if (!Number.isInteger(e) || e < 1 || l < 1 || !Number.isInteger(heads) || heads < 1 || e % heads !== 0) return null;
  return [n, l, e];
}

/** qkv [N, L, 3E] -> [N, L, E] */
function attentionKernel(addon: NativeAddon): Kernel<'attention'> {
  return (inputs, { heads, causal }) => {
    const [qkv] = inputs as [RawTensor];
    const dims = allF32(inputs) && addon.attention ? attentionShape(qkv, heads) : null;
    if (!dims) return undefined;
    const y = outUninit(dims);
    if (y.data.length > 0) addon.attention!(qkv.data as Float32Array, y.data, dims[0], dims[1], dims[2], heads, causal);
    return y;
  };
}

/** (g [N, L, E], qkv [N, L, 3E]) -> dqkv [N, L, 3E] */
function attentionBackwardKernel(addon: NativeAddon): Kernel<'attentionBackward'> {
  return (inputs, { heads, causal }) => {
    const [g, qkv] = inputs as [RawTensor, RawTensor];
    const dims = allF32(inputs) && addon.attentionBackward ? attentionShape(qkv, heads) : null;
    if (!dims || !sameShape(g.shape, dims)) return undefined;
    const y = outUninit(qkv.shape);
    if (y.data.length > 0) addon.attentionBackward!(g.data as Float32Array, qkv.data as Float32Array, y.data, dims[0], dims[1], dims[2], heads, causal);
    return y;
  };
}

/** (qkv [N, S, 3E], keys [N, C, E], values [N, C, E]) -> [N, S, E] */
function decodeAttentionKernel(addon: NativeAddon): Kernel<'decodeAttention'> {
  return (inputs, { heads, past }) => {
    const [qkv, keys, values] = inputs as [RawTensor, RawTensor, RawTensor];
    if (!allF32(inputs) || !addon.decodeAttention) return undefined;
    const dims = attentionShape(qkv, heads);
    if (!dims || keys.shape.length !== 3 || !sameShape(keys.shape, values.shape) || keys.shape[0] !== dims[0] || keys.shape[2] !== dims[2]) return undefined;
    const capacity = keys.shape[1]!;
    if (past + dims[1] > capacity) return undefined;
    const y = outUninit(dims);
    if (y.data.length > 0) addon.decodeAttention(qkv.data as Float32Array, keys.data as Float32Array, values.data as Float32Array, y.data, dims[0], dims[1], capacity, dims[2], heads, past);
    return y;
  };
}

/** (logits [N, C], targets:int32 [N]) -> [N] */
function crossEntropyLossKernel(addon: NativeAddon): Kernel<'crossEntropyLoss'> {
  return ([x, t]) => {
    if (!x || !t || !allF32([x]) || !addon.crossEntropyLoss || x.shape.length !== 2 || !(t.data instanceof Int32Array) || t.data.length !== x.shape[0]) return undefined;
    const [rows, classes] = x.shape as [number, number];
    const y = out([rows]);
    if (rows > 0 && (classes < 1 || !addon.crossEntropyLoss(x.data as Float32Array, t.data, y.data, rows, classes))) return undefined;
    return y;
  };
}

/** (g [N], logits [N, C], targets:int32 [N]) -> [N, C] */
function crossEntropyLossBackwardKernel(addon: NativeAddon): Kernel<'crossEntropyLossBackward'> {
  return ([g, x, t]) => {
    if (!g || !x || !t || !allF32([g, x]) || !addon.crossEntropyLossBackward || x.shape.length !== 2 || !(t.data instanceof Int32Array)) return undefined;
    const [rows, classes] = x.shape as [number, number];
    if (t.data.length !== rows || g.data.length !== rows) return undefined;
    const y = outUninit([rows, classes]);
    if (rows > 0 && (classes < 1 || !addon.crossEntropyLossBackward(g.data as Float32Array, x.data as Float32Array, t.data, y.data, rows, classes))) return undefined;
    return y;
  };
}

// ---------------------------------------------------------------- pooling

interface PoolAttrs {
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly relu?: boolean;
}

/** [N, C, H, W, OH, OW, KH, KW, sh, sw, ph, pw, relu] for an input shape, or null. */
function poolGeometry(x: readonly number[], a: PoolAttrs): Int32Array | null {
  if (x.length !== 4) return null;
  const [n, c, h, w] = x as [number, number, number, number];
  const oh = outSize(h, a.kernel[0], a.stride[0], a.padding[0], 1);
  const ow = outSize(w, a.kernel[1], a.stride[1], a.padding[1], 1);
  // Windows entirely inside the padding have no defined maximum: leave them to the reference.
  if (oh < 1 || ow < 1 || a.padding[0] >= a.kernel[0] || a.padding[1] >= a.kernel[1]) return null;
  return Int32Array.from([n, c, h, w, oh, ow, a.kernel[0], a.kernel[1], a.stride[0], a.stride[1], a.padding[0], a.padding[1], a.relu ? 1 : 0]);
}

function pooledShape(geom: Int32Array): number[] {
  return [geom[0]!, geom[1]!, geom[4]!, geom[5]!];
}

/** x (N,C,H,W) -> y (N,C,OH,OW) */
function maxPool2dKernel(addon: NativeAddon): Kernel<'maxPool2d'> {
  return (inputs, attrs) => {
    const [x] = inputs as [RawTensor];
    const geom = allF32(inputs) ? poolGeometry(x.shape, attrs) : null;
    if (!geom) return undefined;
    const y = outUninit(pooledShape(geom));
    addon.maxPool2d(x.data as Float32Array, y.data, geom);
    return y;
  };
}

/** dy (N,C,OH,OW), x (N,C,H,W) -> dx (N,C,H,W) */
function maxPool2dBackwardKernel(addon: NativeAddon): Kernel<'maxPool2dBackward'> {
  return (inputs, attrs) => {
    const [dy, x] = inputs as [RawTensor, RawTensor];
    const geom = allF32(inputs) ? poolGeometry(x.shape, attrs) : null;
    if (!geom || !sameShape(dy.shape, pooledShape(geom))) return undefined;
    const dx = outUninit(x.shape);
    addon.maxPool2dBackward(dy.data as Float32Array, x.data as Float32Array, dx.data, geom);
    return dx;
  };
}

/** g (N,C,H,W), x (N,C,H,W) -> y (N,C,OH,OW) */
function maxPool2dGatherKernel(addon: NativeAddon): Kernel<'maxPool2dGather'> {
  return (inputs, attrs) => {
    const [g, x] = inputs as [RawTensor, RawTensor];
    const geom = allF32(inputs) ? poolGeometry(x.shape, attrs) : null;
    if (!geom || !sameShape(g.shape, x.shape)) return undefined;
    const y = out(pooledShape(geom));
    addon.maxPool2dGather(g.data as Float32Array, x.data as Float32Array, y.data, geom);
    return y;
  };
}

/** x (N,C,H,W) -> y (N,C,OH,OW) */
function avgPool2dKernel(addon: NativeAddon): Kernel<'avgPool2d'> {
  return (inputs, attrs) => {
    const [x] = inputs as [RawTensor];
    const geom = allF32(inputs) ? poolGeometry(x.shape, attrs) : null;
    if (!geom) return undefined;
    const y = out(pooledShape(geom));
    addon.avgPool2d(x.data as Float32Array, y.data, geom);
    return y;
  };
}

/** dy (N,C,OH,OW) -> dx (inputShape) */
function avgPool2dBackwardKernel(addon: NativeAddon): Kernel<'avgPool2dBackward'> {
  return (inputs, attrs) => {
    const [dy] = inputs as [RawTensor];
    const geom = allF32(inputs) ? poolGeometry(attrs.inputShape, attrs) : null;
    if (!geom || !sameShape(dy.shape, pooledShape(geom))) return undefined;
    const dx = out(attrs.inputShape);
    addon.avgPool2dBackward(dy.data as Float32Array, dx.data, geom);
    return dx;
  };
}

// ---------------------------------------------------------------- elementwise

/** x -> op(x), any shape */
function unaryKernel(addon: NativeAddon, code: number): Kernel {
  return (inputs) => {
    const [x] = inputs as [RawTensor];
    if (!allF32(inputs)) return undefined;
    const y = outUninit(x.shape);
    addon.unary(code, x.data as Float32Array, y.data);
    return y;
  };
}

/** castFloat: float32 x rounded to fp16 / bf16 (float64 goes to the reference kernel) */
function castFloatKernel(addon: NativeAddon): Kernel<'castFloat'> {
  return (inputs, { format }) => {
    const [x] = inputs as [RawTensor];
    if (!allF32(inputs)) return undefined;
    const y = outUninit(x.shape);
    addon.unary(CAST_FLOAT_CODES[format], x.data as Float32Array, y.data);
    return y;
  };
}

/** (a, b) -> op(a, b) with numpy broadcasting, when the broadcast fits a 3-group layout */
function binaryKernel(addon: NativeAddon, code: number): Kernel {
  return (inputs) => {
    const [a, b] = inputs as [RawTensor, RawTensor];
    if (!allF32(inputs)) return undefined;
    const shape = broadcastShape(a.shape, b.shape);
    if (!shape || sizeOf(shape) === 0) return undefined;
    const layout = binaryLayout(a.shape, b.shape, shape);
    if (!layout) return undefined;
    const y = outUninit(shape);
    addon.binary(code, a.data as Float32Array, b.data as Float32Array, y.data, layout);
    return y;
  };
}

/**
 * (cond, a, b) -> cond != 0 ? a : b; cond float32 or int32 of the output's shape, each branch of
 * that shape or a single value (a number branch: relu6 / clamp bounds, the zero of where's
 * gradient), which is spread to the full shape here; other broadcasts go to the reference kernel.
 */
function whereKernel(addon: NativeAddon): Kernel<'where'> {
  return ([cond, a, b]) => {
    if (!cond || !a || !b || !allF32([a, b])) return undefined;
    if (!(cond.data instanceof Float32Array || cond.data instanceof Int32Array)) return undefined;
    const n = cond.data.length;
    const full = (t: RawTensor): Float32Array | undefined =>
      sameShape(t.shape, cond.shape) ? (t.data as Float32Array) : t.data.length === 1 && t.shape.length <= cond.shape.length ? new Float32Array(n).fill(t.data[0]!) : undefined;
    const ad = full(a), bd = full(b);
    if (!ad || !bd || n <= 1) return undefined;
    const y = out(cond.shape);
    addon.where(cond.data, ad, bd, y.data);
    return y;
  };
}

// ---------------------------------------------------------------- reductions, softmax

/** x -> softmax / logSoftmax along the last axis (`axis` is non-negative, as in the reference) */
function softmaxKernel<P extends 'softmax' | 'logSoftmax'>(addon: NativeAddon, log: boolean): Kernel<P> {
  return (inputs, { axis }) => {
    const [x] = inputs as [RawTensor];
    const rank = x.shape.length;
    if (!allF32(inputs) || rank === 0 || axis !== rank - 1) return undefined;
    const cols = x.shape[rank - 1]!;
    const y = out(x.shape);
    if (cols === 0) return y;
    addon.softmax(x.data as Float32Array, y.data, y.data.length / cols, cols, log);
    return y;
  };
}

// ---------------------------------------------------------------- transpose

/** x (rank 2..4) -> x permuted by `perm` */
function transposeKernel(addon: NativeAddon): Kernel<'transpose'> {
  return (inputs, { perm }) => {
    const [x] = inputs as [RawTensor];
    const rank = x.shape.length;
    if (!allF32(inputs) || rank < 2 || rank > 4 || perm.length !== rank || sizeOf(x.shape) === 0) return undefined;
    if (!perm.every((p, i) => perm.indexOf(p) === i && p >= 0 && p < rank)) return undefined;
    const pad = 4 - rank;
    const spec = new Int32Array(8);
    for (let d = 0; d < 4; d++) {
      spec[d] = d < pad ? 1 : x.shape[d - pad]!;
      spec[4 + d] = d < pad ? d : perm[d - pad]! + pad;
    }
    const y = out(perm.map((p) => x.shape[p]!));
    addon.transpose(x.data as Float32Array, y.data, spec);
    return y;
  };
}

// ---------------------------------------------------------------- general reductions

/** Dims of `shape` merged into alternating kept / reduced groups (size-1 dims dropped). */
function reductionGroups(shape: readonly number[], axes: readonly number[]): [Int32Array, Int32Array] | null {
  const sizes: number[] = [];
  const flags: number[] = [];
  shape.forEach((d, i) => {
    if (d === 1) return;
    const flag = axes.includes(i) ? 1 : 0;
    if (flags.length > 0 && flags[flags.length - 1] === flag) sizes[sizes.length - 1]! *= d;
    else {
      sizes.push(d);
      flags.push(flag);
    }
  });
  if (sizes.length > 16) return null;
  return [Int32Array.from(sizes), Int32Array.from(flags)];
}

/** x -> sum / max over any set of axes */
function reduceKernel<P extends 'sum' | 'max'>(addon: NativeAddon, op: 0 | 1): Kernel<P> {
  return (inputs, { axes, keepDims }) => {
    const [x] = inputs as [RawTensor];
    if (!allF32(inputs) || sizeOf(x.shape) === 0) return undefined;
    if (!axes.every((a) => Number.isInteger(a) && a >= 0 && a < x.shape.length)) return undefined;
    const groups = reductionGroups(x.shape, axes);
    if (!groups) return undefined;
    const y = out(x.shape.flatMap((d, i) => (axes.includes(i) ? (keepDims ? [1] : []) : [d])));
    addon.reduce(op, x.data as Float32Array, y.data, groups[0], groups[1]);
    return y;
  };
}

/** x -> int32 index of the first maximum along `axis` */
function argmaxKernel(addon: NativeAddon): Kernel<'argmax'> {
  return (inputs, { axis, keepDims }) => {
    const [x] = inputs as [RawTensor];
    if (!allF32(inputs) || !(axis >= 0 && axis < x.shape.length) || sizeOf(x.shape) === 0) return undefined;
    const [outer, len, inner] = aroundAxis(x.shape, axis);
    const shape = x.shape.flatMap((d, i) => (i === axis ? (keepDims ? [1] : []) : [d]));
    const y = new Int32Array(outer * inner);
    addon.argmax(x.data as Float32Array, y, outer, len, inner);
    return { data: y, shape, dtype: 'int32' };
  };
}

function aroundAxis(shape: readonly number[], axis: number): [number, number, number] {
  return [sizeOf(shape.slice(0, axis)), shape[axis]!, sizeOf(shape.slice(axis + 1))];
}

// ---------------------------------------------------------------- indexing and data movement

type Words = Float32Array | Int32Array;

/** float32 or int32 data (4-byte words that the copy kernels move). */
function words(t: RawTensor): Words | null {
  if (t.dtype === 'float32' && t.data instanceof Float32Array) return t.data;
  if (t.dtype === 'int32' && t.data instanceof Int32Array) return t.data;
  return null;
}

function wordsLike(t: RawTensor, length: number): Words {
  return t.dtype === 'int32' ? new Int32Array(length) : new Float32Array(length);
}

/** (x, indices:int32) -> x taken at indices along axis */
function gatherKernel(addon: NativeAddon): Kernel<'gather'> {
  return ([x, idx], { axis }) => {
    const data = x && words(x);
    if (!x || !idx || !data || !(idx.data instanceof Int32Array) || !(axis >= 0 && axis < x.shape.length)) return undefined;
    const [outer, len, inner] = aroundAxis(x.shape, axis);
    const shape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
    const y = wordsLike(x, sizeOf(shape));
    if (y.length > 0 && !addon.gather(data, idx.data, y, outer, len, inner)) return undefined;
    return { data: y, shape, dtype: x.dtype };
  };
}

/** (updates, indices:int32) -> zeros(shape) with updates added at indices along axis */
function scatterAddKernel(addon: NativeAddon): Kernel<'scatterAdd'> {
  return ([u, idx], { axis, shape }) => {
    if (!u || !idx || !allF32([u]) || !(idx.data instanceof Int32Array) || !(axis >= 0 && axis < shape.length)) return undefined;
    const [outer, len, inner] = aroundAxis(shape, axis);
    if (u.data.length !== outer * idx.data.length * inner) return undefined;
    const y = out(shape);
    if (y.data.length > 0 && u.data.length > 0 && !addon.scatterAdd(u.data as Float32Array, idx.data, y.data, outer, len, inner)) {
      return undefined;
    }
    return y;
  };
}

/**
 * The copy spec [shape, srcStrides, dstStrides] with size-1 dims dropped and mergeable
 * neighbours merged; null when more than 8 dims remain.
 */
function copySpec(shape: readonly number[], src: readonly number[], dst: readonly number[]): Int32Array | null {
  const s: number[] = [];
  const a: number[] = [];
  const b: number[] = [];
  for (let d = 0; d < shape.length; d++) {
    const n = shape[d]!;
    if (n === 1) continue;
    const last = s.length - 1;
    if (last >= 0 && a[last] === src[d]! * n && b[last] === dst[d]! * n) {
      s[last]! *= n;
      a[last] = src[d]!;
      b[last] = dst[d]!;
    } else {
      s.push(n);
      a.push(src[d]!);
      b.push(dst[d]!);
    }
  }
  if (s.length > 8) return null;
  return Int32Array.from([...s, ...a, ...b]);
}

function denseStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

/** (x) -> x repeated along broadcast dims */
function broadcastToKernel(addon: NativeAddon): Kernel<'broadcastTo'> {
  return ([x], { shape }) => {
    const data = x && words(x);
    if (!x || !data || shape.length < x.shape.length) return undefined;
    const lead = shape.length - x.shape.length;
    const inStrides = denseStrides(x.shape);
    const src: number[] = [];
    for (let d = 0; d < shape.length; d++) {
      const k = d - lead;
      const n = k < 0 ? 1 : x.shape[k]!;
      if (n !== 1 && n !== shape[d]) return undefined;
      src.push(k < 0 || n === 1 ? 0 : inStrides[k]!);
    }
    const y = wordsLike(x, sizeOf(shape));
    const spec = copySpec(shape, src, denseStrides(shape));
    if (!spec) return undefined;
    if (y.length > 0) addon.copyStrided(data, 0, y, 0, spec);
    return { data: y, shape: [...shape], dtype: x.dtype };
  };
}

/** (x) -> x[starts:ends] */
function sliceKernel(addon: NativeAddon): Kernel<'slice'> {
  return ([x], { starts, ends }) => {
    const data = x && words(x);
    if (!x || !data || starts.length !== x.shape.length || ends.length !== x.shape.length) return undefined;
    const shape = starts.map((s, d) => ends[d]! - s);
    if (!starts.every((s, d) => s >= 0 && ends[d]! <= x.shape[d]! && shape[d]! >= 0)) return undefined;
    const inStrides = denseStrides(x.shape);
    const base = starts.reduce((p, s, d) => p + s * inStrides[d]!, 0);
    const spec = copySpec(shape, inStrides, denseStrides(shape));
    if (!spec) return undefined;
    const y = wordsLike(x, sizeOf(shape));
    if (y.length > 0) addon.copyStrided(data, base, y, 0, spec);
    return { data: y, shape, dtype: x.dtype };
  };
}

/** (x) -> x surrounded by a constant */
function padKernel(addon: NativeAddon): Kernel<'pad'> {
  return ([x], { pads, value }) => {
    const data = x && words(x);
    if (!x || !data || pads.length !== x.shape.length || !pads.every(([b, a]) => b >= 0 && a >= 0)) return undefined;
    const shape = x.shape.map((n, d) => pads[d]![0] + n + pads[d]![1]);
    const outStrides = denseStrides(shape);
    const base = pads.reduce((p, [before], d) => p + before * outStrides[d]!, 0);
    const spec = copySpec(x.shape, denseStrides(x.shape), outStrides);
    if (!spec) return undefined;
    const y = wordsLike(x, sizeOf(shape));
    if (value !== 0) y.fill(value);
    if (data.length > 0) addon.copyStrided(data, 0, y, base, spec);
    return { data: y, shape, dtype: x.dtype };
  };
}

/** (...xs) -> concatenation along axis */
function concatKernel(addon: NativeAddon): Kernel<'concat'> {
  return (xs, { axis }) => {
    const first = xs[0];
    if (!first || !(axis >= 0 && axis < first.shape.length)) return undefined;
    const datas: Words[] = [];
    for (const t of xs) {
      const d = words(t);
      if (!d || t.dtype !== first.dtype || t.shape.length !== first.shape.length) return undefined;
      if (!t.shape.every((n, i) => i === axis || n === first.shape[i])) return undefined;
      datas.push(d);
    }
    const shape = [...first.shape];
    shape[axis] = xs.reduce((p, t) => p + t.shape[axis]!, 0);
    const y = wordsLike(first, sizeOf(shape));
    const [outer, total, inner] = aroundAxis(shape, axis);
    let offset = 0;
    xs.forEach((t, i) => {
      const block = t.shape[axis]! * inner;
      if (block > 0 && outer > 0) {
        addon.copyStrided(datas[i]!, 0, y, offset * inner, Int32Array.from([outer, block, block, 1, total * inner, 1]));
      }
      offset += t.shape[axis]!;
    });
    return { data: y, shape, dtype: first.dtype };
  };
}

/** float32 <-> int32 */
function castKernel(addon: NativeAddon): Kernel<'cast'> {
  return ([x], { dtype }) => {
    const data = x && words(x);
    if (!x || !data || (dtype !== 'float32' && dtype !== 'int32')) return undefined;
    if (dtype === x.dtype) return { data: data.slice(), shape: x.shape, dtype };
    const y = dtype === 'int32' ? new Int32Array(data.length) : new Float32Array(data.length);
    if (y.length > 0) addon.cast(data, y);
    return { data: y, shape: x.shape, dtype };
  };
}

// ---------------------------------------------------------------- quantization estimators

/** (x, scale, zeroPoint) -> fake-quantized x, scale / zeroPoint per tensor or per channel group */
function fakeQuantizeKernel(addon: NativeAddon): Kernel<'fakeQuantize'> {
  return (inputs, { qmin, qmax }) => {
    const [x, s, z] = inputs as [RawTensor, RawTensor, RawTensor];
    if (inputs.length !== 3 || !allF32(inputs)) return undefined;
    const sl = paramLayout(s.shape, x.shape);
    const zl = paramLayout(z.shape, x.shape);
    if (!sl || !zl || s.data.length < sl[0] || z.data.length < zl[0]) return undefined;
    const y = outUninit(x.shape);
    if (y.data.length > 0) {
      addon.fakeQuantize(x.data as Float32Array, s.data as Float32Array, z.data as Float32Array, y.data, sl[0], sl[1], zl[0], zl[1], qmin, qmax);
    }
    return y;
  };
}

/**
 * (g, x, scale, zeroPoint) -> one part of fakeQuantize's gradient; g must have x's shape. With
 * `reduce`, the scale / zero-point part comes out summed to that operand's shape in one pass, and
 * 'xAndScale' gives the x part and the summed scale part of one pass, concatenated.
 */
function fakeQuantizeGradKernel(addon: NativeAddon): Kernel<'fakeQuantizeGrad'> {
  return (inputs, { qmin, qmax, gradient, part, reduce, scaleGradFactor = 1 }) => {
    const [g, x, s, z] = inputs as [RawTensor, RawTensor, RawTensor, RawTensor];
    if (inputs.length !== 4 || !allF32(inputs)) return undefined;
    if (g.shape.length !== x.shape.length || g.shape.some((d, i) => d !== x.shape[i])) return undefined;
    const sl = paramLayout(s.shape, x.shape);
    const zl = paramLayout(z.shape, x.shape);
    if (!sl || !zl || s.data.length < sl[0] || z.data.length < zl[0]) return undefined;
    const [gd, xd, sd, zd] = [g.data, x.data, s.data, z.data] as Float32Array[] as [Float32Array, Float32Array, Float32Array, Float32Array];
    const xPart = gradient === 'ste' ? 0 : 1;
    if (part === 'xAndScale') {
      if (!reduce || !addon.fakeQuantizeGradXScale) return undefined;
      const n = x.data.length;
      const y = outUninit([n + s.data.length]);
      const gx = y.data.subarray(0, n);
      const gs = y.data.subarray(n);
      if (n > 0) addon.fakeQuantizeGradXScale(gd, xd, sd, zd, gx, gs, sl[0], sl[1], zl[0], zl[1], qmin, qmax, xPart);
      else gs.fill(0);
      if (scaleGradFactor !== 1) scaleInPlace(gs, scaleGradFactor);
      return y;
    }
    const code = part === 'x' ? xPart : part === 'scale' ? 2 : 3;
    if (reduce && code >= 2) {
      // paramLayout's mid is the operand's size: the sums land in its row-major order.
      const y = out(code === 2 ? s.shape : z.shape);
      if (x.data.length > 0) addon.fakeQuantizeGradSum(gd, xd, sd, zd, y.data, sl[0], sl[1], zl[0], zl[1], qmin, qmax, code as 2 | 3);
      if (code === 2 && scaleGradFactor !== 1) scaleInPlace(y.data, scaleGradFactor);
      return y;
    }
    const y = outUninit(x.shape);
    if (y.data.length > 0) addon.fakeQuantizeGrad(gd, xd, sd, zd, y.data, sl[0], sl[1], zl[0], zl[1], qmin, qmax, code);
    if (code === 2 && scaleGradFactor !== 1) scaleInPlace(y.data, scaleGradFactor);
    return y;
  };
}

/** roundSte (op 0) / signSte (op 1) forwards */
function estimatorKernel<P extends 'roundSte' | 'signSte'>(addon: NativeAddon, op: 0 | 1): Kernel<P> {
  return (inputs) => {
    const [x] = inputs as [RawTensor];
    if (!allF32(inputs)) return undefined;
    const y = out(x.shape);
    if (y.data.length > 0) addon.estimator(op, x.data as Float32Array, y.data);
    return y;
  };
}

/** scaleGrad forward: a copy */
const scaleGradKernel: Kernel<'scaleGrad'> = (inputs) => {
  const [x] = inputs as [RawTensor];
  if (!allF32(inputs)) return undefined;
  return { data: (x.data as Float32Array).slice(), shape: [...x.shape], dtype: 'float32' };
};

/** Every primitive the native backend implements. */
export const NATIVE_OPS: readonly PrimitiveName[] = [
  ...UNARY_OPS, ...BINARY_OPS, 'where', 'sum', 'max', 'argmax', 'softmax', 'logSoftmax', 'matmul', 'linear', 'transpose',
  'gather', 'scatterAdd', 'broadcastTo', 'slice', 'pad', 'concat', 'cast',
  'fakeQuantize', 'fakeQuantizeGrad', 'roundSte', 'signSte', 'scaleGrad', 'castFloat',
  'conv2d', 'conv2dBackwardInput', 'conv2dBackwardWeight', 'conv2dFused', 'adderConv2d', 'adderConv2dGrad',
  'lstmSequence', 'lstmSequenceBackward', 'gruSequence', 'gruSequenceBackward',
  'batchNorm', 'batchNormBackward', 'batchNormStats', 'batchNormStatsBackward', 'clamp', 'clampBackward',
  'layerNorm', 'layerNormBackward', 'gelu', 'geluBackward', 'attention', 'attentionBackward', 'decodeAttention', 'crossEntropyLoss', 'crossEntropyLossBackward',
  'maxPool2d', 'maxPool2dBackward', 'maxPool2dGather', 'avgPool2d', 'avgPool2dBackward',
];

const registered = new Map<PrimitiveName, Kernel>();

/** @internal The native kernel of `op` (for tests that must tell a decline from a result). */
export function nativeKernel(op: PrimitiveName): Kernel | undefined {
  return registered.get(op);
}

function register<P extends PrimitiveName>(op: P, kernel: Kernel<P>): void {
  registerKernel('native', op, kernel);
  registered.set(op, kernel as Kernel);
}

/** @internal Registers the native kernels of every op in NATIVE_OPS. */
export function registerNativeKernels(addon: NativeAddon): void {
  UNARY_OPS.forEach((op, code) => register(op, unaryKernel(addon, code)));
  BINARY_OPS.forEach((op, code) => register(op, binaryKernel(addon, code)));
  register('castFloat', castFloatKernel(addon));
  register('where', whereKernel(addon));
  register('sum', reduceKernel<'sum'>(addon, 0));
  register('max', reduceKernel<'max'>(addon, 1));
  register('argmax', argmaxKernel(addon));
  register('gather', gatherKernel(addon));
  register('scatterAdd', scatterAddKernel(addon));
  register('broadcastTo', broadcastToKernel(addon));
  register('slice', sliceKernel(addon));
  register('pad', padKernel(addon));
  register('concat', concatKernel(addon));
  register('cast', castKernel(addon));
  register('fakeQuantize', fakeQuantizeKernel(addon));
  register('fakeQuantizeGrad', fakeQuantizeGradKernel(addon));
  register('roundSte', estimatorKernel<'roundSte'>(addon, 0));
  register('signSte', estimatorKernel<'signSte'>(addon, 1));
  register('scaleGrad', scaleGradKernel);
  register('softmax', softmaxKernel<'softmax'>(addon, false));
  register('logSoftmax', softmaxKernel<'logSoftmax'>(addon, true));
  register('matmul', matmulKernel(addon));
  register('linear', linearKernel(addon));
  register('transpose', transposeKernel(addon));
  register('conv2d', conv2dKernel(addon));
  register('conv2dBackwardInput', conv2dBackwardInputKernel(addon));
  register('conv2dBackwardWeight', conv2dBackwardWeightKernel(addon));
  register('conv2dFused', conv2dFusedKernel(addon));
  register('adderConv2d', adderConv2dKernel(addon));
  register('adderConv2dGrad', adderConv2dGradKernel(addon));
  register('lstmSequence', recurrentKernel(addon, 'lstmSequence'));
  register('lstmSequenceBackward', recurrentKernel(addon, 'lstmSequenceBackward'));
  register('gruSequence', recurrentKernel(addon, 'gruSequence'));
  register('gruSequenceBackward', recurrentKernel(addon, 'gruSequenceBackward'));
  register('layerNorm', layerNormKernel(addon));
  register('layerNormBackward', layerNormBackwardKernel(addon));
  register('batchNorm', batchNormKernel(addon));
  register('batchNormBackward', batchNormBackwardKernel(addon));
  register('batchNormStats', batchNormStatsKernel(addon));
  register('batchNormStatsBackward', batchNormStatsBackwardKernel(addon));
  register('clamp', clampKernel(addon));
  register('clampBackward', clampBackwardKernel(addon));
  register('gelu', geluKernel(addon));
  register('geluBackward', geluBackwardKernel(addon));
  register('attention', attentionKernel(addon));
  register('attentionBackward', attentionBackwardKernel(addon));
  register('decodeAttention', decodeAttentionKernel(addon));
  register('crossEntropyLoss', crossEntropyLossKernel(addon));
  register('crossEntropyLossBackward', crossEntropyLossBackwardKernel(addon));
  register('maxPool2d', maxPool2dKernel(addon));
  register('maxPool2dBackward', maxPool2dBackwardKernel(addon));
  register('maxPool2dGather', maxPool2dGatherKernel(addon));
  register('avgPool2d', avgPool2dKernel(addon));
  register('avgPool2dBackward', avgPool2dBackwardKernel(addon));
}
