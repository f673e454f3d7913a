/**
 * ONNX op handlers: one map, op type -> handler (`ONNX_OPS`).
 *
 * A handler's `run` computes a node's outputs from its input values with lowbit tensor ops, so
 * autograd, training and the backends work on imported graphs. Float data flows as float32
 * `Tensor`s, integer data (shapes, axes, indices) as exact `IntValue`s. The same `run` folds
 * constant subgraphs at import. A handler may also `build` a real lowbit layer (Conv2d, Linear,
 * BatchNorm, pooling, activations...) for a node whose weights are initializers, which is what
 * lets prepareQat / calibrate / convert find the layers of an imported model.
 *
 * Opset differences (11..21) are handled per op: attributes that became inputs (Squeeze,
 * Unsqueeze, ReduceMean axes; Clip min/max; Pad pads/value/axes; Resize scales/sizes), Softmax's
 * 2-D coercion before opset 13, Reshape's allowzero, Shape's start/end.
 */
import {
  Tensor,
  add,
  avgPool2d,
  clamp,
  concat,
  conv2d,
  div,
  erf,
  gather,
  gelu,
  hardSwish,
  leakyRelu,
  matmul,
  maxPool2d,
  mean,
  mul,
  pad as padOp,
  relu,
  reshape,
  sigmoid,
  slice as sliceOp,
  softmax,
  sqrt,
  sub,
  tanh,
  transpose,
  apply,
  Rng,
} from '../tensor/index.ts';
import { broadcastShapes } from '../backend/primitives.ts';
import { Module } from '../nn/module.ts';
import { Conv2d } from '../nn/conv.ts';
import { Linear } from '../nn/linear.ts';
import { BatchNorm2d } from '../nn/batchnorm.ts';
import { LayerNorm } from '../nn/layernorm.ts';
import { GELU, Identity, LeakyReLU, ReLU, ReLU6, Sigmoid, Tanh } from '../nn/activation.ts';
import { AdaptiveAvgPool2d, AvgPool2d, MaxPool2d } from '../nn/pooling.ts';
import { Flatten } from '../nn/flatten.ts';
import { Dropout } from '../nn/dropout.ts';
import { OnnxDataType, OnnxError } from './proto.ts';
import { Attributes, IntValue, checkElements, isFloatType, isIntType, numbersOf, valueFromTensor, type OnnxValue } from './values.ts';
import { gruHandler, lstmHandler } from './rnn-ops.ts';

// ---------------------------------------------------------------------------------------------
// Handler interface

/** What a handler knows about the node it runs. */
export interface NodeContext {
  /** `node 'name' (OpType)`, for messages. */
  readonly where: string;
  readonly opType: string;
  /** The model's default-domain opset version. */
  readonly opset: number;
  readonly attrs: Attributes;
  /** Most elements a value created by this node may have (smaller while folding constants). */
  readonly maxElements: number;
}

/** Import-time view of a node: constant inputs and initializers a layer may own. */
export interface BuildContext extends NodeContext {
  /** Number of input slots (absent optional inputs are `''`). */
  readonly inputCount: number;
  /** True when input `i` is given. */
  hasInput(i: number): boolean;
  /** The value of input `i` when it is known at import (initializer, Constant, folded), else undefined. */
  constant(i: number): OnnxValue | undefined;
  /** Input `i` as a float initializer this node alone uses (so a layer may own it), else undefined. */
  ownable(i: number): Tensor | undefined;
  /** True when output `i` is used by another node or is a graph output. */
  outputUsed(i: number): boolean;
}

/** A node mapped to a lowbit layer: `module.forward(inputs[input])` gives output 0. */
export interface LayerPlan {
  readonly module: Module & { forward(x: Tensor): Tensor };
  /** Index of the node input fed to the module. */
  readonly input: number;
  /** Initializer inputs the module now owns (copied into its parameters / buffers). */
  readonly owns: readonly number[];
}

/** Computes one ONNX op. */
export interface OpHandler {
  /** First default-domain opset that has this op (default 1). */
  readonly since?: number;
  /** Optionally maps the node to a lowbit layer (undefined: run it with `run`). */
  build?(ctx: BuildContext): LayerPlan | undefined;
  /** Outputs from inputs (absent optional inputs are undefined). */
  run(inputs: readonly (OnnxValue | undefined)[], ctx: NodeContext): OnnxValue[];
}

// ---------------------------------------------------------------------------------------------
// Input helpers

function fail(ctx: NodeContext, message: string): never {
  throw new OnnxError('bad-graph', `${ctx.where}: ${message}`);
}

function input(inputs: readonly (OnnxValue | undefined)[], i: number, ctx: NodeContext): OnnxValue {
  const v = inputs[i];
  if (v === undefined) fail(ctx, `input ${i} is required`);
  return v;
}

function floatIn(inputs: readonly (OnnxValue | undefined)[], i: number, ctx: NodeContext): Tensor {
  const v = input(inputs, i, ctx);
  if (!(v instanceof Tensor)) fail(ctx, `input ${i} must be a float tensor, got integers`);
  return v;
}

function intsIn(inputs: readonly (OnnxValue | undefined)[], i: number, ctx: NodeContext): number[] | undefined {
  const v = inputs[i];
  if (v === undefined) return undefined;
  if (!(v instanceof IntValue)) fail(ctx, `input ${i} must hold integers`);
  if (v.rank > 1) fail(ctx, `input ${i} must be 1-D, has shape [${v.shape.join(', ')}]`);
  return [...v.data];
}

function scalarIn(inputs: readonly (OnnxValue | undefined)[], i: number, ctx: NodeContext): number | undefined {
  const v = inputs[i];
  if (v === undefined) return undefined;
  if (v.size !== 1) fail(ctx, `input ${i} must hold one value, has shape [${v.shape.join(', ')}]`);
  return numbersOf(v)[0]!;
}

function normAxis(axis: number, rank: number, ctx: NodeContext): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) fail(ctx, `axis ${axis} out of range for rank ${rank}`);
  return axis < 0 ? axis + rank : axis;
}

function normAxes(axes: readonly number[], rank: number, ctx: NodeContext): number[] {
  const out = axes.map((a) => normAxis(a, rank, ctx));
  if (new Set(out).size !== out.length) fail(ctx, `repeated axis in [${axes.join(', ')}]`);
  return out;
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1]! * shape[d + 1]!;
  return s;
}

/** Runs a tensor op, turning its plain Error into an OnnxError naming the node. */
function guard<T>(ctx: NodeContext, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof OnnxError) throw e;
    throw new OnnxError('shape', `${ctx.where}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** A private generator for layer constructors (their random init is overwritten; the global one stays untouched). */
function initRng(): Rng {
  return new Rng(0);
}

function index32(indices: readonly number[]): Tensor {
  return new Tensor(Int32Array.from(indices), [indices.length]);
}

/** Reshape for both value kinds. */
function reshapeValue(v: OnnxValue, shape: readonly number[], ctx: NodeContext): OnnxValue {
  if (sizeOf(shape) !== v.size) fail(ctx, `cannot reshape [${v.shape.join(', ')}] to [${shape.join(', ')}]`);
  return v instanceof IntValue ? new IntValue(shape, v.data) : guard(ctx, () => reshape(v, shape));
}

/** Takes entries of an IntValue: out[multi] = v[source(multi)]. */
function remapInts(v: IntValue, outShape: readonly number[], source: (multi: number[]) => number): IntValue {
  const n = sizeOf(outShape);
  const out = new Array<number>(n);
  const multi = new Array<number>(outShape.length).fill(0);
  for (let i = 0; i < n; i++) {
    out[i] = v.data[source(multi)]!;
    for (let d = outShape.length - 1; d >= 0; d--) {
      if (++multi[d]! < outShape[d]!) break;
      multi[d] = 0;
    }
  }
  return new IntValue(outShape, out);
}

/** Along `axis`, picks source positions `positions` (any value kind, differentiable for Tensors). */
function pickAlong(v: OnnxValue, axis: number, positions: readonly number[], ctx: NodeContext): OnnxValue {
  const outShape = v.shape.map((d, i) => (i === axis ? positions.length : d));
  checkElements(outShape, ctx.maxElements, ctx.where);
  if (v instanceof IntValue) {
    const st = stridesOf(v.shape);
    return remapInts(v, outShape, (m) => m.reduce((acc, x, d) => acc + (d === axis ? positions[x]! : x) * st[d]!, 0));
  }
  if (positions.length === v.shape[axis] && positions.every((p, i) => p === i)) return v;
  return guard(ctx, () => gather(v, index32(positions), axis));
}

// ---------------------------------------------------------------------------------------------
// Elementwise

function unary(fn: (x: Tensor, ctx: NodeContext) => Tensor, module?: (ctx: BuildContext) => Module & { forward(x: Tensor): Tensor }, since = 1): OpHandler {
  return {
    since,
    ...(module ? { build: (ctx: BuildContext): LayerPlan => ({ module: module(ctx), input: 0, owns: [] }) } : {}),
    run: (inputs, ctx) => [guard(ctx, () => fn(floatIn(inputs, 0, ctx), ctx))],
  };
}

function intBinary(a: IntValue, b: IntValue, op: (x: number, y: number) => number, ctx: NodeContext): IntValue {
  const shape = guard(ctx, () => broadcastShapes(a.shape, b.shape));
  checkElements(shape, ctx.maxElements, ctx.where);
  const sa = stridesOf(a.shape);
  const sb = stridesOf(b.shape);
  const offA = shape.length - a.rank;
  const offB = shape.length - b.rank;
  const n = sizeOf(shape);
  const out = new Array<number>(n);
  const multi = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < shape.length; d++) {
      const m = multi[d]!;
      if (d >= offA && a.shape[d - offA] !== 1) ia += m * sa[d - offA]!;
      if (d >= offB && b.shape[d - offB] !== 1) ib += m * sb[d - offB]!;
    }
    out[i] = op(a.data[ia]!, b.data[ib]!);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++multi[d]! < shape[d]!) break;
      multi[d] = 0;
    }
  }
  return new IntValue(shape, out);
}

function binary(floatOp: (a: Tensor, b: Tensor) => Tensor, intOp: (x: number, y: number) => number): OpHandler {
  return {
    run: (inputs, ctx) => {
      const a = input(inputs, 0, ctx);
      const b = input(inputs, 1, ctx);
      if (a instanceof IntValue && b instanceof IntValue) return [intBinary(a, b, intOp, ctx)];
      if (a instanceof Tensor && b instanceof Tensor) {
        checkElements(guard(ctx, () => broadcastShapes(a.shape, b.shape)), ctx.maxElements, ctx.where);
        return [guard(ctx, () => floatOp(a, b))];
      }
      return fail(ctx, 'inputs mix float and integer data');
    },
  };
}

function truncDiv(x: number, y: number): number {
  if (y === 0) throw new OnnxError('bad-graph', 'integer division by zero');
  return Math.trunc(x / y);
}

/** Clip bounds as numbers when both are constants (or absent), for the ReLU/ReLU6 mapping. */
function clipBounds(ctx: BuildContext): { min: number; max: number } | undefined {
  if (ctx.opset < 11) return undefined;
  const bound = (i: number, fallback: number): number | undefined => {
    if (!ctx.hasInput(i)) return fallback;
    const c = ctx.constant(i);
    return c && c.size === 1 ? numbersOf(c)[0] : undefined;
  };
  const min = bound(1, -Infinity);
  const max = bound(2, Infinity);
  return min === undefined || max === undefined ? undefined : { min, max };
}

const clipHandler: OpHandler = {
  build: (ctx) => {
    const b = clipBounds(ctx);
    if (b?.min === 0 && b.max === Infinity) return { module: new ReLU(), input: 0, owns: [] };
    if (b?.min === 0 && b.max === 6) return { module: new ReLU6(), input: 0, owns: [] };
    return undefined;
  },
  run: (inputs, ctx) => {
    const x = floatIn(inputs, 0, ctx);
    const lo = scalarIn(inputs, 1, ctx) ?? -Infinity;
    const hi = scalarIn(inputs, 2, ctx) ?? Infinity;
    return [guard(ctx, () => (lo === -Infinity && hi === Infinity ? x : clamp(x, lo, hi)))];
  },
};

// ---------------------------------------------------------------------------------------------
// Linear algebra

function gemm(a: Tensor, b: Tensor, c: Tensor | undefined, ctx: NodeContext): Tensor {
  const transA = ctx.attrs.int('transA', 0) !== 0;
  const transB = ctx.attrs.int('transB', 0) !== 0;
  const alpha = ctx.attrs.float('alpha', 1);
  const beta = ctx.attrs.float('beta', 1);
  if (a.rank !== 2 || b.rank !== 2) fail(ctx, `Gemm needs 2-D A and B, got [${a.shape.join(', ')}] and [${b.shape.join(', ')}]`);
  checkElements([a.shape[transA ? 1 : 0]!, b.shape[transB ? 0 : 1]!], ctx.maxElements, ctx.where);
  return guard(ctx, () => {
    let y = matmul(a, b, { transA, transB });
    if (alpha !== 1) y = mul(y, alpha);
    if (c) y = add(y, beta === 1 ? c : mul(c, beta));
    return y;
  });
}

const gemmHandler: OpHandler = {
  build: (ctx) => {
    for (const i of [0, 1]) {
      const known = ctx.constant(i);
      if (known && known.rank !== 2) fail(ctx, `Gemm needs 2-D A and B, input ${i} is [${known.shape.join(', ')}]`);
    }
    if (ctx.attrs.int('transA', 0) !== 0 || ctx.attrs.float('alpha', 1) !== 1 || (ctx.hasInput(2) && ctx.attrs.float('beta', 1) !== 1)) return undefined;
    const w = ctx.ownable(1);
    if (!w || w.rank !== 2) return undefined;
    const transB = ctx.attrs.int('transB', 0) !== 0;
    const [outF, inF] = transB ? [w.shape[0]!, w.shape[1]!] : [w.shape[1]!, w.shape[0]!];
    let bias: Tensor | undefined;
    if (ctx.hasInput(2)) {
      bias = ctx.ownable(2);
      if (!bias || bias.size !== outF || (bias.rank === 2 && bias.shape[0] !== 1) || bias.rank > 2) return undefined;
    }
    const layer = new Linear(inF, outF, { bias: bias !== undefined, rng: initRng() });
    layer.weight.data.set(transB ? w.data : transpose(w).data);
    if (bias) layer.bias!.data.set(bias.data);
    return { module: layer, input: 0, owns: bias ? [1, 2] : [1] };
  },
  run: (inputs, ctx) => {
    const c = inputs[2];
    if (c !== undefined && !(c instanceof Tensor)) fail(ctx, 'C must be a float tensor');
    return [gemm(floatIn(inputs, 0, ctx), floatIn(inputs, 1, ctx), c, ctx)];
  },
};

/** numpy matmul semantics (1-D operands promoted and the added dim removed). */
function matmulNumpy(a: Tensor, b: Tensor, ctx: NodeContext): Tensor {
  if (a.rank === 0 || b.rank === 0) fail(ctx, 'MatMul operands must have rank >= 1');
  const a2 = a.rank === 1 ? guard(ctx, () => reshape(a, [1, a.shape[0]!])) : a;
  const b2 = b.rank === 1 ? guard(ctx, () => reshape(b, [b.shape[0]!, 1])) : b;
  const batch = guard(ctx, () => broadcastShapes(a2.shape.slice(0, -2), b2.shape.slice(0, -2)));
  const outShape = [...batch, a2.shape[a2.rank - 2]!, b2.shape[b2.rank - 1]!];
  checkElements(outShape, ctx.maxElements, ctx.where);
  let y = guard(ctx, () => matmul(a2, b2));
  if (a.rank === 1 || b.rank === 1) {
    const shape = [...batch];
    if (a.rank !== 1) shape.push(a2.shape[a2.rank - 2]!);
    if (b.rank !== 1) shape.push(b2.shape[b2.rank - 1]!);
    y = guard(ctx, () => reshape(y, shape));
  }
  return y;
}

const matmulHandler: OpHandler = {
  build: (ctx) => {
    const w = ctx.ownable(1);
    if (!w || w.rank !== 2 || ctx.constant(0) !== undefined) return undefined;
    const layer = new Linear(w.shape[0]!, w.shape[1]!, { bias: false, rng: initRng() });
    layer.weight.data.set(transpose(w).data);
    return { module: layer, input: 0, owns: [1] };
  },
  run: (inputs, ctx) => [matmulNumpy(floatIn(inputs, 0, ctx), floatIn(inputs, 1, ctx), ctx)],
};

// ---------------------------------------------------------------------------------------------
// Convolution and pooling geometry

interface Geometry {
  kernel: number[];
  strides: number[];
  dilations: number[];
  /** Per spatial axis [begin, end]. */
  pads: [number, number][];
}

function spatialGeometry(ctx: NodeContext, inputSpatial: readonly number[] | undefined, kernel: number[], defaults: { stridesDefault: number }): Geometry {
  const k = kernel.length;
  const strides = ctx.attrs.ints('strides') ?? new Array<number>(k).fill(defaults.stridesDefault);
  const dilations = ctx.attrs.ints('dilations') ?? new Array<number>(k).fill(1);
  const padsAttr = ctx.attrs.ints('pads') ?? new Array<number>(2 * k).fill(0);
  if (strides.length !== k || dilations.length !== k || padsAttr.length !== 2 * k) fail(ctx, `strides/dilations/pads do not match ${k} spatial dims`);
  for (const v of [...kernel, ...strides, ...dilations]) if (!(v >= 1 && v <= 65536)) fail(ctx, `kernel/stride/dilation ${v} out of range`);
  for (const v of padsAttr) if (!(v >= 0 && v <= 65536)) fail(ctx, `pad ${v} out of range`);
  const autoPad = ctx.attrs.string('auto_pad', 'NOTSET');
  let pads: [number, number][] = kernel.map((_, i) => [padsAttr[i]!, padsAttr[i + k]!]);
  if (autoPad === 'VALID') pads = kernel.map(() => [0, 0]);
  else if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    if (!inputSpatial) return { kernel, strides, dilations, pads: [] };
    pads = kernel.map((kk, i) => {
      const n = inputSpatial[i]!;
      const out = Math.ceil(n / strides[i]!);
      const total = Math.max(0, (out - 1) * strides[i]! + (kk - 1) * dilations[i]! + 1 - n);
      const small = Math.floor(total / 2);
      return autoPad === 'SAME_UPPER' ? [small, total - small] : [total - small, small];
    });
  } else if (autoPad !== 'NOTSET') fail(ctx, `auto_pad '${autoPad}' is not valid`);
  return { kernel, strides, dilations, pads };
}

function isSymmetric(g: Geometry): boolean {
  return g.pads.length > 0 && g.pads.every(([b, e]) => b === e);
}

/** [N, C, L] -> [N, C, 1, L] views for 1-D conv/pool on the 2-D kernels. */
function as2d(g: Geometry): Geometry {
  if (g.kernel.length === 2) return g;
  return { kernel: [1, g.kernel[0]!], strides: [1, g.strides[0]!], dilations: [1, g.dilations[0]!], pads: [[0, 0], g.pads[0]!] };
}

function runConv(x: Tensor, w: Tensor, b: Tensor | undefined, ctx: NodeContext): Tensor {
  if (x.rank !== 3 && x.rank !== 4) fail(ctx, `Conv supports 1-D and 2-D inputs, got [${x.shape.join(', ')}]`);
  if (w.rank !== x.rank) fail(ctx, `weight [${w.shape.join(', ')}] does not match input rank ${x.rank}`);
  const kernel = w.shape.slice(2);
  const ks = ctx.attrs.ints('kernel_shape');
  if (ks && (ks.length !== kernel.length || ks.some((v, i) => v !== kernel[i]))) fail(ctx, `kernel_shape [${ks.join(', ')}] differs from the weight [${w.shape.join(', ')}]`);
  const group = ctx.attrs.int('group', 1);
  const g = as2d(spatialGeometry(ctx, x.shape.slice(2), kernel, { stridesDefault: 1 }));
  const spatial = x.rank === 3 ? [1, x.shape[2]!] : [x.shape[2]!, x.shape[3]!];
  const kernel2 = w.rank === 3 ? [1, w.shape[2]!] : [w.shape[2]!, w.shape[3]!];
  const outSpatial = spatial.map((n, i) => Math.floor((n + g.pads[i]![0] + g.pads[i]![1] - g.dilations[i]! * (kernel2[i]! - 1) - 1) / g.strides[i]!) + 1);
  if (outSpatial.some((d) => d <= 0)) fail(ctx, `kernel [${kernel.join(', ')}] does not fit input [${x.shape.join(', ')}]`);
  checkElements([x.shape[0]!, x.shape[1]!, spatial[0]! + g.pads[0]![0] + g.pads[0]![1], spatial[1]! + g.pads[1]![0] + g.pads[1]![1]], ctx.maxElements, ctx.where);
  checkElements([x.shape[0]!, w.shape[0]!, ...outSpatial], ctx.maxElements, ctx.where);
  return guard(ctx, () => {
    const x4 = x.rank === 3 ? reshape(x, [x.shape[0]!, x.shape[1]!, 1, x.shape[2]!]) : x;
    const w4 = w.rank === 3 ? reshape(w, [w.shape[0]!, w.shape[1]!, 1, w.shape[2]!]) : w;
    const symmetric = isSymmetric(g);
    const input = symmetric ? x4 : padOp(x4, [[0, 0], [0, 0], g.pads[0]!, g.pads[1]!]);
    const padding: [number, number] = symmetric ? [g.pads[0]![0], g.pads[1]![0]] : [0, 0];
    let y = conv2d(input, w4, null, { stride: [g.strides[0]!, g.strides[1]!], padding, dilation: [g.dilations[0]!, g.dilations[1]!], groups: group });
    if (b) y = add(y, reshape(b, [1, b.size, 1, 1]));
    return x.rank === 3 ? reshape(y, [y.shape[0]!, y.shape[1]!, y.shape[3]!]) : y;
  });
}

const convHandler: OpHandler = {
  build: (ctx) => {
    const known = ctx.constant(1);
    const ks0 = ctx.attrs.ints('kernel_shape');
    if (known && ks0 && (known.rank !== ks0.length + 2 || ks0.some((v, i) => v !== known.shape[i + 2]))) {
      fail(ctx, `kernel_shape [${ks0.join(', ')}] differs from the weight [${known.shape.join(', ')}]`);
    }
    const w = ctx.ownable(1);
    if (!w || w.rank !== 4) return undefined;
    const autoPad = ctx.attrs.string('auto_pad', 'NOTSET');
    if (autoPad !== 'NOTSET' && autoPad !== 'VALID') return undefined;
    const ks = ctx.attrs.ints('kernel_shape');
    if (ks && (ks.length !== 2 || ks[0] !== w.shape[2] || ks[1] !== w.shape[3])) return undefined;
    const g = spatialGeometry(ctx, undefined, w.shape.slice(2), { stridesDefault: 1 });
    if (!isSymmetric(g)) return undefined;
    const group = ctx.attrs.int('group', 1);
    const [o, cg, kh, kw] = w.shape as [number, number, number, number];
    if (group < 1 || o % group !== 0) return undefined;
    let bias: Tensor | undefined;
    if (ctx.hasInput(2)) {
      bias = ctx.ownable(2);
      if (!bias || bias.rank !== 1 || bias.size !== o) return undefined;
    }
    const conv = new Conv2d(cg * group, o, [kh, kw], {
      stride: [g.strides[0]!, g.strides[1]!], padding: [g.pads[0]![0], g.pads[1]![0]], dilation: [g.dilations[0]!, g.dilations[1]!], groups: group, bias: bias !== undefined, rng: initRng(),
    });
    conv.weight.data.set(w.data);
    if (bias) conv.bias!.data.set(bias.data);
    return { module: conv, input: 0, owns: bias ? [1, 2] : [1] };
  },
  run: (inputs, ctx) => {
    const b = inputs[2];
    if (b !== undefined && (!(b instanceof Tensor) || b.rank !== 1)) fail(ctx, 'bias must be a 1-D float tensor');
    return [runConv(floatIn(inputs, 0, ctx), floatIn(inputs, 1, ctx), b, ctx)];
  },
};

const convTransposeHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = floatIn(inputs, 0, ctx);
    const w = floatIn(inputs, 1, ctx);
    const b = inputs[2];
    if (b !== undefined && (!(b instanceof Tensor) || b.rank !== 1)) fail(ctx, 'bias must be a 1-D float tensor');
    if ((x.rank !== 3 && x.rank !== 4) || w.rank !== x.rank) fail(ctx, `ConvTranspose supports 1-D and 2-D inputs, got [${x.shape.join(', ')}] with weight [${w.shape.join(', ')}]`);
    const group = ctx.attrs.int('group', 1);
    const k = x.rank - 2;
    const kernel = w.shape.slice(2);
    const strides = ctx.attrs.ints('strides') ?? new Array<number>(k).fill(1);
    const dilations = ctx.attrs.ints('dilations') ?? new Array<number>(k).fill(1);
    const outputPadding = ctx.attrs.ints('output_padding') ?? new Array<number>(k).fill(0);
    const outputShape = ctx.attrs.ints('output_shape');
    const autoPad = ctx.attrs.string('auto_pad', 'NOTSET');
    let padsFlat = ctx.attrs.ints('pads') ?? new Array<number>(2 * k).fill(0);
    if (strides.length !== k || dilations.length !== k || outputPadding.length !== k || padsFlat.length !== 2 * k) fail(ctx, 'strides/dilations/output_padding/pads do not match the spatial rank');
    for (let i = 0; i < k; i++) {
      if (!(strides[i]! >= 1 && dilations[i]! >= 1 && outputPadding[i]! >= 0 && outputPadding[i]! < Math.max(strides[i]!, dilations[i]!))) fail(ctx, 'invalid strides/dilations/output_padding');
    }
    const inSpatial = x.shape.slice(2);
    // Full (unpadded) output length per axis, then the crop [begin, full - end).
    const full = inSpatial.map((n, i) => strides[i]! * (n - 1) + outputPadding[i]! + (kernel[i]! - 1) * dilations[i]! + 1);
    if (outputShape || autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      const target = outputShape ? outputShape.slice(-k) : inSpatial.map((n, i) => n * strides[i]!);
      if (target.length !== k) fail(ctx, 'output_shape does not match the spatial rank');
      padsFlat = new Array<number>(2 * k);
      for (let i = 0; i < k; i++) {
        const total = full[i]! - target[i]!;
        if (total < 0) fail(ctx, `output_shape ${target[i]} larger than the full output ${full[i]}`);
        const half = Math.floor(total / 2);
        const [begin, end] = autoPad === 'SAME_UPPER' ? [half, total - half] : [total - half, half];
        padsFlat[i] = begin;
        padsFlat[i + k] = end;
      }
    } else if (autoPad === 'VALID') padsFlat = new Array<number>(2 * k).fill(0);
    if (padsFlat.some((p) => p < 0)) fail(ctx, 'negative pads');
    const c = w.shape[0]!;
    if (x.shape[1] !== c || c % group !== 0) fail(ctx, `input channels ${x.shape[1]} do not match weight [${w.shape.join(', ')}] with group ${group}`);
    const outChannels = w.shape[1]! * group;
    const fullShape = [x.shape[0]!, outChannels, ...full];
    checkElements(fullShape, ctx.maxElements, ctx.where);
    return [guard(ctx, () => {
      const two = k === 1;
      const x4 = two ? reshape(x, [x.shape[0]!, c, 1, x.shape[2]!]) : x;
      const w4 = two ? reshape(w, [c, w.shape[1]!, 1, w.shape[2]!]) : w;
      const full4 = two ? [fullShape[0]!, outChannels, 1, full[0]!] : fullShape;
      const attrs = {
        stride: (two ? [1, strides[0]!] : [strides[0]!, strides[1]!]) as [number, number],
        padding: [0, 0] as [number, number],
        dilation: (two ? [1, dilations[0]!] : [dilations[0]!, dilations[1]!]) as [number, number],
        groups: group,
        inputShape: full4,
      };
      let y = apply('conv2dBackwardInput', [x4, w4], attrs);
      const starts = [0, 0, ...(two ? [0, padsFlat[0]!] : [padsFlat[0]!, padsFlat[1]!])];
      const ends = [full4[0]!, outChannels, ...(two ? [1, full[0]! - padsFlat[1]!] : [full[0]! - padsFlat[2]!, full[1]! - padsFlat[3]!])];
      if (ends.some((e, i) => e < starts[i]!)) fail(ctx, 'pads larger than the output');
      y = sliceOp(y, starts, ends);
      if (b) y = add(y, reshape(b, [1, b.size, 1, 1]));
      return two ? reshape(y, [y.shape[0]!, y.shape[1]!, y.shape[3]!]) : y;
    })];
  },
};

function poolGeometry(ctx: NodeContext, x: Tensor | undefined): { g: Geometry; ceil: boolean } {
  const kernel = ctx.attrs.ints('kernel_shape');
  if (!kernel || (kernel.length !== 1 && kernel.length !== 2)) fail(ctx, 'pooling needs a 1-D or 2-D kernel_shape');
  if (x && x.rank !== kernel.length + 2) fail(ctx, `input [${x.shape.join(', ')}] does not match kernel_shape [${kernel.join(', ')}]`);
  const g = spatialGeometry(ctx, x?.shape.slice(2), kernel, { stridesDefault: 1 });
  if (g.dilations.some((d) => d !== 1)) fail(ctx, 'pooling dilations other than 1 are not supported');
  if (g.pads.some(([b, e], i) => b >= g.kernel[i]! || e >= g.kernel[i]!)) fail(ctx, 'pads must be smaller than the kernel');
  return { g, ceil: ctx.attrs.int('ceil_mode', 0) !== 0 };
}

function runPool(kind: 'max' | 'avg', x: Tensor, ctx: NodeContext): Tensor {
  const { g: g0, ceil } = poolGeometry(ctx, x);
  const g = as2d(g0);
  const spatial = x.rank === 3 ? [1, x.shape[2]!] : [x.shape[2]!, x.shape[3]!];
  // Extra end padding that ceil_mode adds (windows must start inside input + begin pad).
  const pads = g.pads.map(([b, e], i) => {
    const n = spatial[i]!;
    const span = n + b + e - g.kernel[i]!;
    if (span < 0) fail(ctx, `kernel ${g.kernel[i]} larger than the padded input ${n + b + e}`);
    let out = Math.floor(span / g.strides[i]!) + 1;
    if (ceil) {
      out = Math.ceil(span / g.strides[i]!) + 1;
      if ((out - 1) * g.strides[i]! >= n + b) out--;
    }
    return [b, e, Math.max(0, (out - 1) * g.strides[i]! + g.kernel[i]! - (n + b + e))] as const;
  });
  checkElements([x.shape[0]!, x.shape[1]!, ...pads.map(([b, e, extra], i) => spatial[i]! + b + e + extra)], ctx.maxElements, ctx.where);
  const countIncludePad = ctx.attrs.int('count_include_pad', 0) !== 0;
  const simple = pads.every(([b, e, extra], i) => b === e && extra === 0 && 2 * b <= g.kernel[i]!) && (kind === 'max' || countIncludePad || pads.every(([b]) => b === 0));
  return guard(ctx, () => {
    const x4 = x.rank === 3 ? reshape(x, [x.shape[0]!, x.shape[1]!, 1, x.shape[2]!]) : x;
    const kernel: [number, number] = [g.kernel[0]!, g.kernel[1]!];
    const stride: [number, number] = [g.strides[0]!, g.strides[1]!];
    let y: Tensor;
    if (simple) {
      const options = { stride, padding: [pads[0]![0], pads[1]![0]] as [number, number] };
      y = kind === 'max' ? maxPool2d(x4, kernel, options) : avgPool2d(x4, kernel, options);
    } else {
      const padPairs: [number, number][] = [[0, 0], [0, 0], [pads[0]![0], pads[0]![1] + pads[0]![2]], [pads[1]![0], pads[1]![1] + pads[1]![2]]];
      if (kind === 'max') {
        y = maxPool2d(padOp(x4, padPairs, -Infinity), kernel, { stride });
      } else {
        // Average over the counted cells only: sum / count, count from a 0/1 mask.
        const ph = spatial[0]! + padPairs[2][0] + padPairs[2][1];
        const pw = spatial[1]! + padPairs[3][0] + padPairs[3][1];
        const maskData = new Float32Array(ph * pw);
        for (let i = 0; i < ph; i++) {
          for (let j = 0; j < pw; j++) {
            const inside = i >= padPairs[2][0] && i < padPairs[2][0] + spatial[0]! && j >= padPairs[3][0] && j < padPairs[3][0] + spatial[1]!;
            const inPads = i < ph - pads[0]![2] && j < pw - pads[1]![2];
            maskData[i * pw + j] = inside || (countIncludePad && inPads) ? 1 : 0;
          }
        }
        const mask = new Tensor(maskData, [1, 1, ph, pw]);
        y = div(avgPool2d(padOp(x4, padPairs, 0), kernel, { stride }), avgPool2d(mask, kernel, { stride }));
      }
    }
    return x.rank === 3 ? reshape(y, [y.shape[0]!, y.shape[1]!, y.shape[3]!]) : y;
  });
}

function poolHandler(kind: 'max' | 'avg'): OpHandler {
  return {
    build: (ctx) => {
      if (ctx.outputUsed(1)) fail(ctx, 'the Indices output of MaxPool is not supported');
      const { g, ceil } = poolGeometry(ctx, undefined);
      const autoPad = ctx.attrs.string('auto_pad', 'NOTSET');
      if (ceil || g.kernel.length !== 2 || (autoPad !== 'NOTSET' && autoPad !== 'VALID')) return undefined;
      if (!g.pads.every(([b, e], i) => b === e && 2 * b <= g.kernel[i]!)) return undefined;
      if (kind === 'avg' && ctx.attrs.int('count_include_pad', 0) === 0 && g.pads.some(([b]) => b !== 0)) return undefined;
      const options = { stride: [g.strides[0]!, g.strides[1]!] as [number, number], padding: [g.pads[0]![0], g.pads[1]![0]] as [number, number] };
      const kernel: [number, number] = [g.kernel[0]!, g.kernel[1]!];
      return { module: kind === 'max' ? new MaxPool2d(kernel, options) : new AvgPool2d(kernel, options), input: 0, owns: [] };
    },
    run: (inputs, ctx) => [runPool(kind, floatIn(inputs, 0, ctx), ctx)],
  };
}

/** Global average pooling over every spatial dim (rank >= 3); an AdaptiveAvgPool2d(1) for convert. */
export class OnnxGlobalAveragePool extends AdaptiveAvgPool2d {
  constructor() {
    super(1);
  }

  override forward(x: Tensor): Tensor {
    if (x.rank < 3) throw new OnnxError('shape', `GlobalAveragePool needs rank >= 3, got [${x.shape.join(', ')}]`);
    return mean(x, x.shape.map((_, i) => i).slice(2), true);
  }
}

/** ONNX Flatten(axis = 1): [d0, d1·d2·…] for any rank >= 1; a Flatten(1, -1) for convert. */
export class OnnxFlatten extends Flatten {
  constructor() {
    super(1, -1);
  }

  override forward(x: Tensor): Tensor {
    if (x.rank === 0) throw new OnnxError('shape', 'Flatten of a scalar');
    return reshape(x, [x.shape[0]!, x.shape.slice(1).reduce((a, b) => a * b, 1)]);
  }
}

/** BatchNormalization of any input of rank >= 2 (channels on dim 1) with running statistics. */
export class OnnxBatchNorm extends BatchNorm2d {
  protected override checkInput(x: Tensor): void {
    if (x.rank < 2 || x.shape[1] !== this.numFeatures) {
      throw new OnnxError('shape', `BatchNormalization(${this.numFeatures}): expected [N, ${this.numFeatures}, ...], got [${x.shape.join(', ')}]`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Normalisation

const batchNormHandler: OpHandler = {
  build: (ctx) => {
    if (ctx.attrs.int('training_mode', 0) !== 0) fail(ctx, 'training_mode = 1 is not supported (import an inference graph)');
    for (let i = 1; i < 5; i++) if (!ctx.hasInput(i)) fail(ctx, `input ${i} is required`);
    if ([1, 2, 3].some((i) => ctx.outputUsed(i))) fail(ctx, 'the running-statistics outputs are not supported');
    const known = [1, 2, 3, 4].map((i) => ctx.constant(i));
    if (known.every((k) => k !== undefined) && known.some((k) => k!.rank !== 1 || k!.size !== known[0]!.size)) {
      fail(ctx, `scale, B, mean and var must be 1-D of one size, got ${known.map((k) => `[${k!.shape.join(', ')}]`).join(' ')}`);
    }
    const parts = [1, 2, 3, 4].map((i) => ctx.ownable(i));
    if (parts.some((p) => !p || p.rank !== 1 || p.size !== parts[0]!.size)) return undefined;
    const [scale, bias, runMean, runVar] = parts as Tensor[];
    const momentum = ctx.attrs.float('momentum', 0.9);
    const bn = new OnnxBatchNorm(scale!.size, { eps: ctx.attrs.float('epsilon', 1e-5), momentum: momentum >= 0 && momentum <= 1 ? 1 - momentum : 0.1 });
    bn.weight!.data.set(scale!.data);
    bn.bias!.data.set(bias!.data);
    bn.runningMean!.data.set(runMean!.data);
    bn.runningVar!.data.set(runVar!.data);
    return { module: bn, input: 0, owns: [1, 2, 3, 4] };
  },
  run: (inputs, ctx) => {
    const x = floatIn(inputs, 0, ctx);
    const [scale, bias, m, v] = [1, 2, 3, 4].map((i) => floatIn(inputs, i, ctx));
    const c = x.shape[1];
    if (x.rank < 2 || [scale, bias, m, v].some((t) => t!.size !== c)) fail(ctx, `parameters do not match input [${x.shape.join(', ')}]`);
    const eps = ctx.attrs.float('epsilon', 1e-5);
    const view = x.shape.map((d, i) => (i === 1 ? d : 1));
    return [guard(ctx, () => {
      const k = div(scale!, sqrt(add(v!, eps)));
      return add(mul(sub(x, reshape(m!, view)), reshape(k, view)), reshape(bias!, view));
    })];
  },
};

const layerNormHandler: OpHandler = {
  since: 17,
  build: (ctx) => {
    if (ctx.outputUsed(1) || ctx.outputUsed(2)) fail(ctx, 'the Mean / InvStdDev outputs are not supported');
    const axis = ctx.attrs.int('axis', -1);
    const scale = ctx.ownable(1);
    if (!scale || axis >= 0 || scale.rank !== -axis) return undefined;
    let bias: Tensor | undefined;
    if (ctx.hasInput(2)) {
      bias = ctx.ownable(2);
      if (!bias || bias.rank !== scale.rank || bias.shape.some((d, i) => d !== scale.shape[i])) return undefined;
    }
    const ln = new LayerNorm(scale.shape, { eps: ctx.attrs.float('epsilon', 1e-5), bias: bias !== undefined });
    ln.weight!.data.set(scale.data);
    if (bias) ln.bias!.data.set(bias.data);
    return { module: ln, input: 0, owns: bias ? [1, 2] : [1] };
  },
  run: (inputs, ctx) => {
    const x = floatIn(inputs, 0, ctx);
    const scale = floatIn(inputs, 1, ctx);
    const bias = inputs[2];
    if (bias !== undefined && !(bias instanceof Tensor)) fail(ctx, 'B must be a float tensor');
    const axis = normAxis(ctx.attrs.int('axis', -1), x.rank, ctx);
    const eps = ctx.attrs.float('epsilon', 1e-5);
    const axes = x.shape.map((_, i) => i).slice(axis);
    return [guard(ctx, () => {
      const centered = sub(x, mean(x, axes, true));
      const variance = mean(mul(centered, centered), axes, true);
      let y = mul(div(centered, sqrt(add(variance, eps))), scale);
      if (bias) y = add(y, bias);
      return y;
    })];
  },
};

function softmaxRun(inputs: readonly (OnnxValue | undefined)[], ctx: NodeContext): OnnxValue[] {
  const x = floatIn(inputs, 0, ctx);
  if (ctx.opset >= 13) return [guard(ctx, () => softmax(x, normAxis(ctx.attrs.int('axis', -1), x.rank, ctx)))];
  // Before opset 13: coerce to 2-D at `axis` (default 1), softmax over the second dim.
  const axis = x.rank === 0 ? 0 : normAxis(ctx.attrs.int('axis', 1), x.rank, ctx);
  const outer = sizeOf(x.shape.slice(0, axis));
  return [guard(ctx, () => reshape(softmax(reshape(x, [outer, x.size / Math.max(outer, 1) || 0]), 1), x.shape))];
}

// ---------------------------------------------------------------------------------------------
// Shape ops

function axesFrom(inputs: readonly (OnnxValue | undefined)[], index: number, ctx: NodeContext, inputSince: number): number[] | undefined {
  return ctx.opset >= inputSince ? intsIn(inputs, index, ctx) : ctx.attrs.ints('axes');
}

const reshapeHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = input(inputs, 0, ctx);
    const target = intsIn(inputs, 1, ctx);
    if (!target) fail(ctx, 'shape input is required');
    const allowZero = ctx.opset >= 14 && ctx.attrs.int('allowzero', 0) !== 0;
    if (allowZero && target.includes(0) && target.includes(-1)) fail(ctx, 'allowzero with both 0 and -1');
    const shape = target.map((d, i) => {
      if (d === 0 && !allowZero) {
        if (i >= x.rank) fail(ctx, `shape [${target.join(', ')}] copies dim ${i} of rank-${x.rank} input`);
        return x.shape[i]!;
      }
      return d;
    });
    if (shape.filter((d) => d === -1).length > 1 || shape.some((d) => d < -1)) fail(ctx, `invalid shape [${target.join(', ')}]`);
    const known = shape.reduce((p, d) => (d === -1 ? p : p * d), 1);
    const full = shape.map((d) => (d === -1 ? (known === 0 ? 0 : x.size / known) : d));
    if (full.some((d) => !Number.isInteger(d)) || sizeOf(full) !== x.size) fail(ctx, `cannot reshape [${x.shape.join(', ')}] to [${target.join(', ')}]`);
    return [reshapeValue(x, full, ctx)];
  },
};

const flattenHandler: OpHandler = {
  build: (ctx) => (ctx.attrs.int('axis', 1) === 1 ? { module: new OnnxFlatten(), input: 0, owns: [] } : undefined),
  run: (inputs, ctx) => {
    const x = input(inputs, 0, ctx);
    const axisAttr = ctx.attrs.int('axis', 1);
    if (axisAttr < -x.rank || axisAttr > x.rank) fail(ctx, `axis ${axisAttr} out of range for rank ${x.rank}`);
    const axis = axisAttr < 0 ? axisAttr + x.rank : axisAttr;
    const outer = sizeOf(x.shape.slice(0, axis));
    return [reshapeValue(x, [outer, sizeOf(x.shape.slice(axis))], ctx)];
  },
};

const transposeHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = input(inputs, 0, ctx);
    const perm = ctx.attrs.ints('perm') ?? x.shape.map((_, i) => x.rank - 1 - i);
    if (perm.length !== x.rank) fail(ctx, `perm [${perm.join(', ')}] for rank ${x.rank}`);
    const p = normAxes(perm, x.rank, ctx);
    if (x instanceof Tensor) return [guard(ctx, () => transpose(x, p))];
    const st = stridesOf(x.shape);
    return [remapInts(x, p.map((a) => x.shape[a]!), (m) => m.reduce((acc, v, d) => acc + v * st[p[d]!]!, 0))];
  },
};

const squeezeHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = input(inputs, 0, ctx);
    const axesIn = axesFrom(inputs, 1, ctx, 13);
    const axes = axesIn === undefined ? x.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0) : normAxes(axesIn, x.rank, ctx);
    for (const a of axes) if (x.shape[a] !== 1) fail(ctx, `cannot squeeze dim ${a} of size ${x.shape[a]}`);
    return [reshapeValue(x, x.shape.filter((_, i) => !axes.includes(i)), ctx)];
  },
};

const unsqueezeHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = input(inputs, 0, ctx);
    const axesIn = axesFrom(inputs, 1, ctx, 13);
    if (!axesIn) fail(ctx, 'axes are required');
    const rank = x.rank + axesIn.length;
    const axes = normAxes(axesIn, rank, ctx);
    const shape: number[] = [];
    let k = 0;
    for (let i = 0; i < rank; i++) shape.push(axes.includes(i) ? 1 : x.shape[k++]!);
    return [reshapeValue(x, shape, ctx)];
  },
};

const concatHandler: OpHandler = {
  run: (inputs, ctx) => {
    const xs = inputs.filter((v): v is OnnxValue => v !== undefined);
    if (xs.length === 0) fail(ctx, 'no inputs');
    const first = xs[0]!;
    const axis = normAxis(ctx.attrs.int('axis', first.rank === 0 ? 0 : Number.NaN), Math.max(first.rank, 1), ctx);
    for (const v of xs) {
      if (v.rank !== first.rank || v.shape.some((d, i) => i !== axis && d !== first.shape[i])) fail(ctx, `shapes ${xs.map((u) => `[${u.shape.join(', ')}]`).join(' ')} differ off axis ${axis}`);
      if ((v instanceof IntValue) !== (first instanceof IntValue)) fail(ctx, 'inputs mix float and integer data');
    }
    const outShape = first.shape.map((d, i) => (i === axis ? xs.reduce((s, v) => s + v.shape[axis]!, 0) : d));
    checkElements(outShape, ctx.maxElements, ctx.where);
    if (first instanceof Tensor) {
      const nonEmpty = (xs as Tensor[]).filter((t) => t.size > 0);
      if (nonEmpty.length === 0) return [new Tensor(new Float32Array(0), outShape)];
      return [guard(ctx, () => concat(nonEmpty, axis))];
    }
    const outer = sizeOf(outShape.slice(0, axis));
    const data = new Array<number>(sizeOf(outShape));
    let k = 0;
    for (let o = 0; o < outer; o++) {
      for (const v of xs as IntValue[]) {
        const chunk = sizeOf(v.shape.slice(axis));
        for (let j = 0; j < chunk; j++) data[k++] = v.data[o * chunk + j]!;
      }
    }
    return [new IntValue(outShape, data)];
  },
};

/** Source positions of Slice along one axis (ONNX clamping rules, any non-zero step). */
function slicePositions(dim: number, start: number, end: number, step: number): number[] {
  const s = start < 0 ? start + dim : start;
  const e = end < 0 ? end + dim : end;
  const out: number[] = [];
  if (step > 0) {
    const lo = Math.min(Math.max(s, 0), dim);
    const hi = Math.min(Math.max(e, 0), dim);
    for (let i = lo; i < hi; i += step) out.push(i);
  } else {
    const lo = Math.min(Math.max(s, 0), dim - 1);
    const hi = Math.min(Math.max(e, -1), dim - 1);
    for (let i = lo; i > hi; i += step) out.push(i);
  }
  return out;
}

const sliceHandler: OpHandler = {
  run: (inputs, ctx) => {
    let x = input(inputs, 0, ctx);
    const starts = intsIn(inputs, 1, ctx);
    const ends = intsIn(inputs, 2, ctx);
    if (!starts || !ends || starts.length !== ends.length) fail(ctx, 'starts and ends must be given with equal lengths');
    const axes = normAxes(intsIn(inputs, 3, ctx) ?? starts.map((_, i) => i), x.rank, ctx);
    const steps = intsIn(inputs, 4, ctx) ?? starts.map(() => 1);
    if (axes.length !== starts.length || steps.length !== starts.length) fail(ctx, 'axes/steps lengths differ from starts');
    if (steps.some((s) => s === 0)) fail(ctx, 'step 0');
    if (x instanceof Tensor && steps.every((s) => s === 1)) {
      const s = x.shape.map(() => 0);
      const e = [...x.shape];
      axes.forEach((a, i) => {
        const pos = slicePositions(x.shape[a]!, starts[i]!, ends[i]!, 1);
        s[a] = pos[0] ?? 0;
        e[a] = pos.length === 0 ? s[a]! : pos[pos.length - 1]! + 1;
      });
      const t = x;
      return [guard(ctx, () => sliceOp(t, s, e))];
    }
    for (let i = 0; i < axes.length; i++) {
      x = pickAlong(x, axes[i]!, slicePositions(x.shape[axes[i]!]!, starts[i]!, ends[i]!, steps[i]!), ctx);
    }
    return [x];
  },
};

const gatherHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = input(inputs, 0, ctx);
    const idx = input(inputs, 1, ctx);
    if (!(idx instanceof IntValue)) fail(ctx, 'indices must be integers');
    if (x.rank === 0) fail(ctx, 'cannot gather from a scalar');
    const axis = normAxis(ctx.attrs.int('axis', 0), x.rank, ctx);
    const n = x.shape[axis]!;
    const positions = idx.data.map((i) => {
      if (i < -n || i >= n) fail(ctx, `index ${i} out of range for dim of size ${n}`);
      return i < 0 ? i + n : i;
    });
    const outShape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
    checkElements(outShape, ctx.maxElements, ctx.where);
    const picked = pickAlong(x, axis, positions, ctx);
    return [reshapeValue(picked, outShape, ctx)];
  },
};

/** Shape's output for an input of shape `shape` (start/end from opset 15). */
export function shapeOutput(shape: readonly number[], ctx: NodeContext): IntValue {
  let dims = [...shape];
  if (ctx.opset >= 15) {
    const r = shape.length;
    const clampEnd = (v: number): number => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
    dims = dims.slice(clampEnd(ctx.attrs.int('start', 0)), clampEnd(ctx.attrs.int('end', r)));
  }
  return new IntValue([dims.length], dims);
}

const shapeHandler: OpHandler = {
  run: (inputs, ctx) => [shapeOutput(input(inputs, 0, ctx).shape, ctx)],
};

const constantHandler: OpHandler = {
  run: (_inputs, ctx) => {
    const a = ctx.attrs;
    const set = a.names().filter((n) => ['value', 'value_float', 'value_floats', 'value_int', 'value_ints', 'value_string', 'value_strings', 'sparse_value'].includes(n));
    if (set.length !== 1) fail(ctx, `needs exactly one value attribute, has ${set.length}`);
    switch (set[0]) {
      case 'value': return [guard(ctx, () => valueFromTensor(a.tensor('value')!))];
      case 'value_float': return [new Tensor(Float32Array.of(a.float('value_float', 0)), [])];
      case 'value_floats': { const f = a.floats('value_floats')!; return [new Tensor(Float32Array.from(f), [f.length])]; }
      case 'value_int': return [new IntValue([], [a.int('value_int', 0)])];
      case 'value_ints': { const v = a.ints('value_ints')!; return [new IntValue([v.length], v)]; }
      default: return fail(ctx, `attribute '${set[0]}' is not supported`);
    }
  },
};

const castHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = input(inputs, 0, ctx);
    const to = ctx.attrs.int('to', 0);
    if (isFloatType(to)) return [x instanceof Tensor ? x : new Tensor(Float32Array.from(x.data), x.shape)];
    if (!isIntType(to)) fail(ctx, `cast to data type ${to} is not supported`);
    const values = numbersOf(x).map((v) => {
      if (to === OnnxDataType.BOOL) return v !== 0 ? 1 : 0;
      if (!Number.isFinite(v)) fail(ctx, `cannot cast ${v} to an integer`);
      return Math.trunc(v);
    });
    return [new IntValue(x.shape, values)];
  },
};

// ---------------------------------------------------------------------------------------------
// Pad, Resize, ReduceMean

function padPositions(n: number, before: number, after: number, mode: string, ctx: NodeContext): number[] {
  const out: number[] = [];
  for (let i = -before; i < n + after; i++) {
    let j = i;
    if (mode === 'edge') j = Math.min(Math.max(i, 0), n - 1);
    else if (mode === 'reflect') {
      if (n === 1) j = 0;
      else {
        const period = 2 * (n - 1);
        j = ((i % period) + period) % period;
        if (j >= n) j = period - j;
      }
    } else if (mode === 'wrap') j = ((i % n) + n) % n;
    if (j < 0 || j >= n) fail(ctx, `cannot ${mode}-pad a dim of size ${n}`);
    out.push(j);
  }
  return out;
}

const padHandler: OpHandler = {
  run: (inputs, ctx) => {
    let x = input(inputs, 0, ctx);
    const mode = ctx.attrs.string('mode', 'constant');
    if (!['constant', 'reflect', 'edge'].includes(mode) && !(mode === 'wrap' && ctx.opset >= 19)) fail(ctx, `mode '${mode}' is not supported`);
    const pads = intsIn(inputs, 1, ctx);
    if (!pads) fail(ctx, 'pads input is required');
    const value = scalarIn(inputs, 2, ctx) ?? 0;
    const axes = ctx.opset >= 18 && inputs[3] !== undefined ? normAxes(intsIn(inputs, 3, ctx)!, x.rank, ctx) : x.shape.map((_, i) => i);
    if (pads.length !== 2 * axes.length) fail(ctx, `${pads.length} pads for ${axes.length} axes`);
    const before = x.shape.map(() => 0);
    const after = x.shape.map(() => 0);
    axes.forEach((a, i) => {
      before[a] = pads[i]!;
      after[a] = pads[i + axes.length]!;
    });
    const outShape = x.shape.map((d, i) => d + before[i]! + after[i]!);
    if (outShape.some((d) => d < 0)) fail(ctx, 'pads crop more than the input');
    checkElements(outShape, ctx.maxElements, ctx.where);
    if (mode === 'constant' && x instanceof Tensor) {
      const t = x;
      return [guard(ctx, () => {
        const grown = padOp(t, t.shape.map((_, i) => [Math.max(0, before[i]!), Math.max(0, after[i]!)] as [number, number]), value);
        const starts = t.shape.map((_, i) => Math.max(0, -before[i]!));
        const ends = grown.shape.map((d, i) => d - Math.max(0, -after[i]!));
        return sliceOp(grown, starts, ends);
      })];
    }
    for (let a = 0; a < x.rank; a++) {
      if (before[a] === 0 && after[a] === 0) continue;
      const n = x.shape[a]!;
      if (mode === 'constant') {
        // Integer constant padding: -1 marks a filled cell.
        const v = x as IntValue;
        const positions = Array.from({ length: n + before[a]! + after[a]! }, (_, i) => i - before[a]!);
        const st = stridesOf(v.shape);
        const outShp = v.shape.map((d, i) => (i === a ? positions.length : d));
        const data: number[] = [];
        const multi = new Array<number>(outShp.length).fill(0);
        for (let k = 0; k < sizeOf(outShp); k++) {
          const p = positions[multi[a]!]!;
          data.push(p < 0 || p >= n ? value : v.data[multi.reduce((acc, m, d) => acc + (d === a ? p : m) * st[d]!, 0)]!);
          for (let d = outShp.length - 1; d >= 0; d--) {
            if (++multi[d]! < outShp[d]!) break;
            multi[d] = 0;
          }
        }
        x = new IntValue(outShp, data);
      } else x = pickAlong(x, a, padPositions(n, before[a]!, after[a]!, mode, ctx), ctx);
    }
    return [x];
  },
};

/** Source coordinate of output index `i` along one axis. */
function sourceCoordinate(i: number, scale: number, inLen: number, outLen: number, mode: string, ctx: NodeContext): number {
  switch (mode) {
    case 'half_pixel': return (i + 0.5) / scale - 0.5;
    case 'pytorch_half_pixel': return outLen > 1 ? (i + 0.5) / scale - 0.5 : 0;
    case 'align_corners': return outLen === 1 ? 0 : (i * (inLen - 1)) / (outLen - 1);
    case 'asymmetric': return i / scale;
    default: return fail(ctx, `coordinate_transformation_mode '${mode}' is not supported`);
  }
}

function nearestIndex(x: number, mode: string, ctx: NodeContext): number {
  switch (mode) {
    case 'round_prefer_floor': return x - Math.floor(x) === 0.5 ? Math.floor(x) : Math.round(x);
    case 'round_prefer_ceil': return Math.round(x);
    case 'floor': return Math.floor(x);
    case 'ceil': return Math.ceil(x);
    default: return fail(ctx, `nearest_mode '${mode}' is not supported`);
  }
}

const resizeHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = floatIn(inputs, 0, ctx);
    const mode = ctx.attrs.string('mode', 'nearest');
    if (mode !== 'nearest' && mode !== 'linear') fail(ctx, `mode '${mode}' is not supported (nearest, linear)`);
    if (ctx.attrs.int('antialias', 0) !== 0) fail(ctx, 'antialias is not supported');
    if (ctx.attrs.has('axes')) fail(ctx, 'the axes attribute is not supported');
    const policy = ctx.attrs.string('keep_aspect_ratio_policy', 'stretch');
    if (policy !== 'stretch') fail(ctx, `keep_aspect_ratio_policy '${policy}' is not supported`);
    const coordMode = ctx.attrs.string('coordinate_transformation_mode', 'half_pixel');
    const nearestMode = ctx.attrs.string('nearest_mode', 'round_prefer_floor');
    const scalesIn = inputs[2];
    const sizesIn = inputs[3];
    const scalesGiven = scalesIn !== undefined && scalesIn.size > 0;
    const sizesGiven = sizesIn !== undefined && sizesIn.size > 0;
    if (scalesGiven === sizesGiven) fail(ctx, 'exactly one of scales and sizes must be given');
    let scales: number[];
    let outShape: number[];
    if (scalesGiven) {
      if (!(scalesIn instanceof Tensor)) fail(ctx, 'scales must be float');
      scales = numbersOf(scalesIn);
      if (scales.length !== x.rank || scales.some((s) => !(s > 0) || !Number.isFinite(s))) fail(ctx, `scales [${scales.join(', ')}] for rank ${x.rank}`);
      outShape = x.shape.map((d, i) => Math.floor(d * scales[i]!));
    } else {
      if (!(sizesIn instanceof IntValue)) fail(ctx, 'sizes must be integers');
      outShape = [...sizesIn.data];
      if (outShape.length !== x.rank || outShape.some((d) => d < 0)) fail(ctx, `sizes [${outShape.join(', ')}] for rank ${x.rank}`);
      scales = outShape.map((d, i) => (x.shape[i] === 0 ? 1 : d / x.shape[i]!));
    }
    checkElements(outShape, ctx.maxElements, ctx.where);
    return [guard(ctx, () => {
      let y: Tensor = x;
      for (let a = 0; a < x.rank; a++) {
        const inLen = x.shape[a]!;
        const outLen = outShape[a]!;
        if (inLen === outLen && scales[a] === 1) continue;
        if (inLen === 0) fail(ctx, 'cannot resize an empty dim');
        const coords = Array.from({ length: outLen }, (_, i) => sourceCoordinate(i, scales[a]!, inLen, outLen, coordMode, ctx));
        if (mode === 'nearest') {
          const idx = coords.map((c) => Math.min(Math.max(nearestIndex(c, nearestMode, ctx), 0), inLen - 1));
          y = gather(y, index32(idx), a);
        } else {
          const c = coords.map((v) => Math.min(Math.max(v, 0), inLen - 1));
          const i0 = c.map((v) => Math.floor(v));
          const i1 = i0.map((v) => Math.min(v + 1, inLen - 1));
          const wShape = y.shape.map((_, d) => (d === a ? outLen : 1));
          const w1 = new Tensor(Float32Array.from(c, (v, k) => v - i0[k]!), wShape);
          const w0 = new Tensor(Float32Array.from(c, (v, k) => 1 - (v - i0[k]!)), wShape);
          y = add(mul(gather(y, index32(i0), a), w0), mul(gather(y, index32(i1), a), w1));
        }
      }
      return y;
    })];
  },
};

const reduceMeanHandler: OpHandler = {
  run: (inputs, ctx) => {
    const x = floatIn(inputs, 0, ctx);
    const keep = ctx.attrs.int('keepdims', 1) !== 0;
    const axesIn = axesFrom(inputs, 1, ctx, 18);
    if (axesIn === undefined || axesIn.length === 0) {
      if (ctx.opset >= 18 && ctx.attrs.int('noop_with_empty_axes', 0) !== 0) return [x];
      return [guard(ctx, () => mean(x, x.shape.map((_, i) => i), keep))];
    }
    const axes = normAxes(axesIn, x.rank, ctx);
    return [guard(ctx, () => mean(x, axes, keep))];
  },
};

// ---------------------------------------------------------------------------------------------
// The map

const identity: OpHandler = {
  build: () => ({ module: new Identity(), input: 0, owns: [] }),
  run: (inputs, ctx) => [input(inputs, 0, ctx)],
};

const dropout: OpHandler = {
  build: (ctx) => {
    if (ctx.outputUsed(1)) fail(ctx, 'the mask output of Dropout is not supported');
    const ratio = ctx.opset >= 12 ? (ctx.hasInput(1) ? ctx.constant(1) : undefined) : undefined;
    const p = ratio && ratio.size === 1 ? numbersOf(ratio)[0]! : ctx.opset >= 12 && ctx.hasInput(1) ? undefined : ctx.attrs.float('ratio', 0.5);
    return p !== undefined && p >= 0 && p < 1 ? { module: new Dropout(p), input: 0, owns: [] } : undefined;
  },
  run: (inputs, ctx) => [input(inputs, 0, ctx)],
};

/** Every supported default-domain op type, with its handler. */
export const ONNX_OPS: ReadonlyMap<string, OpHandler> = new Map<string, OpHandler>([
  ['Conv', convHandler],
  ['ConvTranspose', convTransposeHandler],
  ['Gemm', gemmHandler],
  ['MatMul', matmulHandler],
  ['Add', binary(add, (a, b) => a + b)],
  ['Sub', binary(sub, (a, b) => a - b)],
  ['Mul', binary(mul, (a, b) => a * b)],
  ['Div', binary(div, truncDiv)],
  ['Relu', unary(relu, () => new ReLU())],
  ['LeakyRelu', unary((x, ctx) => leakyRelu(x, ctx.attrs.float('alpha', 0.01)), (ctx) => new LeakyReLU(ctx.attrs.float('alpha', 0.01)))],
  ['Clip', clipHandler],
  ['Sigmoid', unary(sigmoid, () => new Sigmoid())],
  ['Tanh', unary(tanh, () => new Tanh())],
  ['Erf', unary(erf)],
  ['Gelu', unary((x, ctx) => geluOf(x, ctx), (ctx) => new GELU({ approximate: geluMode(ctx) }), 20)],
  ['HardSwish', unary(hardSwish, undefined, 14)],
  ['Softmax', { run: softmaxRun }],
  ['MaxPool', poolHandler('max')],
  ['AveragePool', poolHandler('avg')],
  ['GlobalAveragePool', { build: () => ({ module: new OnnxGlobalAveragePool(), input: 0, owns: [] }), run: (inputs, ctx) => [guard(ctx, () => new OnnxGlobalAveragePool().forward(floatIn(inputs, 0, ctx)))] }],
  ['BatchNormalization', batchNormHandler],
  ['LayerNormalization', layerNormHandler],
  ['Flatten', flattenHandler],
  ['Reshape', reshapeHandler],
  ['Transpose', transposeHandler],
  ['Squeeze', squeezeHandler],
  ['Unsqueeze', unsqueezeHandler],
  ['Concat', concatHandler],
  ['Slice', sliceHandler],
  ['Gather', gatherHandler],
  ['Shape', shapeHandler],
  ['Constant', constantHandler],
  ['Pad', padHandler],
  ['Resize', resizeHandler],
  ['ReduceMean', reduceMeanHandler],
  ['Identity', identity],
  ['Dropout', dropout],
  ['Cast', castHandler],
  ['LSTM', lstmHandler],
  ['GRU', gruHandler],
]);

function geluMode(ctx: NodeContext): 'none' | 'tanh' {
  const mode = ctx.attrs.string('approximate', 'none');
  if (mode !== 'none' && mode !== 'tanh') fail(ctx, `approximate '${mode}' is not valid`);
  return mode;
}

function geluOf(x: Tensor, ctx: NodeContext): Tensor {
  return geluMode(ctx) === 'none' ? gelu(x) : new GELU({ approximate: 'tanh' }).forward(x);
}
