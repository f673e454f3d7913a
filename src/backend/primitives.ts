/**
 * The closed set of primitive ops. Every kernel (per backend) and every gradient rule is keyed
 * by one of these names; user-facing ops in `tensor/ops.ts` are compositions of them.
 *
 * Layout conventions: tensors are dense, row-major (C order). Images are NCHW, conv weights are
 * OIHW (`[outChannels, inChannels / groups, kh, kw]`).
 */

/** Element types a Tensor can hold. float64 exists for gradient checks on the reference backend. */
export type DType = 'float32' | 'float64' | 'int32';

export type TypedArray = Float32Array | Float64Array | Int32Array;

/** A tensor as kernels see it: a dense row-major buffer, its shape and element type. */
export interface RawTensor {
  readonly data: TypedArray;
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** Geometry shared by conv2d and its two backward primitives. */
export interface Conv2dAttrs {
  /** [strideH, strideW] */
  readonly stride: readonly [number, number];
  /** Zero padding [padH, padW], applied on both sides. */
  readonly padding: readonly [number, number];
  /** [dilationH, dilationW] */
  readonly dilation: readonly [number, number];
  readonly groups: number;
}

/** Geometry of max / average pooling windows (NCHW). */
export interface Pool2dAttrs {
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
}

/**
 * Max pooling windows, optionally with a ReLU fused in front: with `relu`, each window's maximum
 * goes through max(·, 0) (= pooling the ReLU of the input; NaN stays NaN), and the backward
 * passes route a window's gradient only when its maximum is positive or NaN -- what ReLU → MaxPool2d
 * computes in two ops, in one pass and without the ReLU's output (nn/fusion.ts uses it in training).
 */
export interface MaxPool2dAttrs extends Pool2dAttrs {
  readonly relu?: boolean;
}

type NoAttrs = Record<string, never>;

/** Number bounds of clamp / clampBackward. */
export interface ClampAttrs {
  readonly min: number;
  readonly max: number;
}

/**
 * Layout and direction of a fused recurrent sequence (lstmSequence, gruSequence and their
 * backward primitives). With L steps, N sequences and hidden size H, a per-step tensor of width W
 * is [L, N, W], or [N, L, W] with `batchFirst`; outputs are [parts, L, N, H] (or [parts, N, L, H]).
 */
export interface RecurrentAttrs {
  /** Per-step tensors are [N, L, ·] instead of [L, N, ·]. */
  readonly batchFirst: boolean;
  /** The recurrence runs from step L − 1 down to 0 (a bidirectional layer's backward direction). */
  readonly reverse: boolean;
}

/**
 * Every primitive with its attribute type. Inputs are listed in the comment:
 * kernels receive them in this order.
 */
export interface PrimitiveAttrs {
  // ---- unary elementwise: (x) -> same shape
  neg: NoAttrs;
  exp: NoAttrs;
  log: NoAttrs;
  sqrt: NoAttrs;
  abs: NoAttrs;
  /** sign(0) = 0 here; binarizers define their own sign with sign(0) = +1. */
  sign: NoAttrs;
  relu: NoAttrs;
  sigmoid: NoAttrs;
  tanh: NoAttrs;
  erf: NoAttrs;
  floor: NoAttrs;
  /** Round half to even, as the quantization convention requires. Gradient is zero. */
  round: NoAttrs;
  // ---- binary elementwise with numpy broadcasting: (a, b) -> broadcast shape
  add: NoAttrs;
  sub: NoAttrs;
  mul: NoAttrs;
  div: NoAttrs;
  pow: NoAttrs;
  maximum: NoAttrs;
  minimum: NoAttrs;
  /** (g, y) -> g where y > 0, else 0: a gradient routed back through a ReLU (y its input or output). */
  reluBackward: NoAttrs;
  /**
   * (x) -> x clamped to number bounds: low = min > x ? min : x, then max < low ? max : low (the two
   * `where`s of ops.clamp in one pass; NaN stays NaN; min > max gives max). ReLU6 is clamp(0, 6).
   */
  clamp: ClampAttrs;
  /** (g, x) -> g where x was not clamped (min > x and max < low both false, NaN passes), else 0. */
  clampBackward: ClampAttrs;
  // ---- comparisons (a, b) -> 0/1 in a's dtype, broadcast; no gradient
  greater: NoAttrs;
  greaterEqual: NoAttrs;
  equal: NoAttrs;
  // ---- (cond, a, b) -> broadcast shape; cond is nonzero = take a
  where: NoAttrs;
  // ---- batch normalisation with batch statistics over every dim but 1 (x [N, C, ...])
  /**
   * (x, weight [C], bias [C][, stats [2, C]]) -> (x − mean_c)·(weight_c / √(var_c + eps)) + bias_c,
   * mean and biased variance of channel c over the batch and spatial dims (BatchNorm in training
   * mode, one pass). `stats`, when given, must be batchNormStats(x) (detached): a cache of those
   * statistics that kernels use instead of computing them again. With `clamp` [min, max] the
   * output is clamp(y, min, max) as the clamp primitive computes it on y rounded to x's dtype (a
   * BatchNorm → ReLU6 pair in training as one op: no separate clamp output).
   */
  batchNorm: { readonly eps: number; readonly clamp?: readonly [number, number] | null };
  /**
   * (g like x, x, weight [C][, stats [2, C]]) -> flat [dx (x.size), dweight (C), dbias (C)]:
   * batchNorm's adjoint, statistics recomputed (or taken from `stats`, as batchNorm's). With
   * `clamp`, the adjoint of the clamped batchNorm: inputs (g, x, weight, stats, bias) -- g passes
   * where min <= y <= max (clampBackward's mask, y recomputed from x, stats and bias).
   */
  batchNormBackward: { readonly eps: number; readonly clamp?: readonly [number, number] | null };
  /**
   * (x [N, C, ...]) -> [2, C]: each channel's mean, then its biased variance (running statistics;
   * QAT's BatchNorm folding differentiates through it: ∂mean/∂x = 1/M, ∂var/∂x = 2(x − mean)/M).
   */
  batchNormStats: NoAttrs;
  /**
   * (g [2, C], x [N, C, ...], stats [2, C]) -> dx like x: batchNormStats's adjoint, one pass over x:
   * dx = (x − mean_c)·2·g[1, c]/M + g[0, c]/M (M = the values per channel; stats = batchNormStats(x)).
   */
  batchNormStatsBackward: NoAttrs;
  // ---- reductions over `axes` (sorted, unique, non-negative)
  sum: { readonly axes: readonly number[]; readonly keepDims: boolean };
  max: { readonly axes: readonly number[]; readonly keepDims: boolean };
  /** (x) -> int32 indices of the first maximum along `axis`. No gradient. */
  argmax: { readonly axis: number; readonly keepDims: boolean };
  // ---- shape and data movement
  reshape: { readonly shape: readonly number[] };
  transpose: { readonly perm: readonly number[] };
  broadcastTo: { readonly shape: readonly number[] };
  /** Contiguous slice: [starts[d], ends[d]) on every dim. */
  slice: { readonly starts: readonly number[]; readonly ends: readonly number[] };
  /** Constant padding: pads[d] = [before, after], both >= 0. */
  pad: { readonly pads: readonly (readonly [number, number])[]; readonly value: number };
  /** (...xs) -> concatenation along axis. */
  concat: { readonly axis: number };
  /**
   * (x, indices:int32) -> x taken at `indices` along `axis`;
   * output shape = x.shape[:axis] + indices.shape + x.shape[axis+1:].
   */
  gather: { readonly axis: number };
  /** (updates, indices:int32) -> zeros(shape) with updates added at indices along axis (gather's adjoint). */
  scatterAdd: { readonly axis: number; readonly shape: readonly number[] };
  cast: { readonly dtype: DType };
  // ---- linear algebra
  /** (a [...batch, M, K] or its transpose, b [...batch, K, N] or its transpose) -> [...batch, M, N]. */
  matmul: { readonly transA: boolean; readonly transB: boolean };
  /**
   * (x [M, K], w [N, K], bias [N]) -> x·wᵀ + bias [M, N] (PyTorch's Linear layout): matmul with
   * transB then the bias broadcast over rows, as one call so that the bias goes into the GEMM's
   * output (no second M×N buffer). Same values as matmul + add within fp32 rounding.
   */
  linear: NoAttrs;
  /** (x [N, C, H, W], w [O, C/groups, kh, kw]) -> y [N, O, OH, OW]. */
  conv2d: Conv2dAttrs;
  /** (dy [N, O, OH, OW], w) -> dx with shape inputShape: the adjoint of conv2d in x. */
  conv2dBackwardInput: Conv2dAttrs & { readonly inputShape: readonly number[] };
  /** (x, dy) -> dw with shape weightShape: the adjoint of conv2d in w. */
  conv2dBackwardWeight: Conv2dAttrs & { readonly weightShape: readonly number[] };
  /**
   * (x [N, C, H, W], w [O, C/groups, kh, kw], bias [O][, scale [O]]) ->
   * maxPool(min(relu(conv2d(x, w)·scale + bias), clampMax)): a convolution, times a per-channel
   * scale when there is a fourth input (rounded to float32 before the bias is added: an eval-mode
   * BatchNorm as its own mul and add compute it), plus its bias, then optionally ReLU (`relu`), an
   * upper clamp (`clampMax`, null for none; NaN stays NaN) and max pooling (`pool`, null for none)
   * in one pass -- the inference path of conv–[BN]–ReLU/ReLU6–pool blocks (nn/fusion.ts). No
   * gradient with a scale or a clampMax.
   */
  conv2dFused: Conv2dAttrs & { readonly relu: boolean; readonly clampMax: number | null; readonly pool: Pool2dAttrs | null };
  // ---- fused recurrent sequences (layouts: RecurrentAttrs); gates in PyTorch's order
  /**
   * (inputGates [L, N, 4H] = W_ih·x_t, weightHh [4H, H], bias [4H] = b_ih + b_hh, h0 [N, H], c0 [N, H])
   * -> [6, L, N, H]: per step h_t, c_t and the gate activations i, f, g, o, where
   * [i, f, g, o] = [σ, σ, tanh, σ](inputGates_t + bias + h_{t−1}·W_hhᵀ), c_t = f⊙c_{t−1} + i⊙g,
   * h_t = o⊙tanh(c_t). The activations are outputs so that the backward pass reads them.
   */
  lstmSequence: RecurrentAttrs;
  /**
   * (g [6, L, N, H], out [6, L, N, H] = lstmSequence's output, weightHh [4H, H], c0 [N, H]) -> flat
   * [L·N·4H + 2·N·H]: the gradient of Σ g⊙out with respect to inputGates (its layout), h0 and c0.
   */
  lstmSequenceBackward: RecurrentAttrs;
  /**
   * (inputGates [L, N, 3H] = W_ih·x_t, weightHh [3H, H], biasIh [3H], biasHh [3H], h0 [N, H]) ->
   * [5, L, N, H]: per step h_t, r, z, n and hn = W_hn·h_{t−1} + b_hn, where with
   * inputPre = inputGates_t + b_ih and hiddenGates = h_{t−1}·W_hhᵀ + b_hh:
   * [r, z] = σ(inputPre + hiddenGates)[r, z], n = tanh(inputPre[n] + r⊙hn), h_t = n + z⊙(h_{t−1} − n).
   */
  gruSequence: RecurrentAttrs;
  /**
   * (g [5, L, N, H], out [5, L, N, H] = gruSequence's output, weightHh [3H, H], h0 [N, H]) -> flat
   * [2·L·N·3H + N·H]: the gradients of Σ g⊙out with respect to inputGates and to hiddenGates (both
   * in inputGates' layout; they differ in the n block: hn's gradient is r times the input one),
   * then h0's.
   */
  gruSequenceBackward: RecurrentAttrs;
  // ---- multiplication-free layers (src/nn/mulfree)
  /**
   * AdderNet (Chen et al., CVPR 2020): (x [N, C, H, W], w [O, C/groups, kh, kw]) -> [N, O, OH, OW],
   * y = −Σ |x_patch − w| over each receptive field (conv2d's geometry; zero padding counts as x = 0).
   * Its gradient is the paper's estimator, not the true one: dy/dw = x − w, dy/dx = HardTanh(w − x);
   * with `adaptiveEta` > 0 the layer's weight gradient G is replaced by η·√k·G/‖G‖₂ (k = w.size).
   */
  adderConv2d: Conv2dAttrs & { readonly adaptiveEta?: number };
  /**
   * (g [N, O, OH, OW], x, w) -> adderConv2d's estimator gradient: part 'input' Σ g·HardTanh(w − x)
   * (shape of x), part 'weight' Σ g·(x − w) (shape of w).
   */
  adderConv2dGrad: Conv2dAttrs & { readonly part: 'input' | 'weight' };
  // ---- pooling (NCHW)
  /**
   * (x) -> max over each window; padding counts as -infinity; a NaN anywhere in a window makes it
   * NaN (torch's max_pool2d); with `relu`, max(that, 0) keeping NaN.
   */
  maxPool2d: MaxPool2dAttrs;
  /** (dy, x) -> dx: dy routed to the first maximum (or the last NaN) of each window (with `relu`: if it is > 0 or NaN). */
  maxPool2dBackward: MaxPool2dAttrs;
  /** (g, x) -> g read at the first maximum of each window (with `relu`: if it is > 0, else 0); adjoint of maxPool2dBackward in dy. */
  maxPool2dGather: MaxPool2dAttrs;
  /** (x) -> mean over each window; padded cells count in the divisor (count_include_pad). */
  avgPool2d: Pool2dAttrs;
  /** (dy) -> dx with shape inputShape (adjoint of avgPool2d). */
  avgPool2dBackward: Pool2dAttrs & { readonly inputShape: readonly number[] };
  // ---- fused Transformer layers (src/nn/layernorm.ts, activation.ts, models/transformer-lm.ts)
  /**
   * (x [..., D], weight [D], bias [D]) -> y like x: per row of D = weight.size trailing elements,
   * y = (x − mean)·rstd·weight + bias with mean and the biased variance of the row and
   * rstd = 1/√(var + eps) (LayerNorm over the trailing dims; weight and bias flattened row-major).
   */
  layerNorm: { readonly eps: number };
  /**
   * (g like x, x [..., D], weight [D]) -> flat [x.size + 2·D]: layerNorm's gradients of Σ g⊙y with
   * respect to x, weight and bias (mean and rstd recomputed from x): with x̂ = (x − mean)·rstd and
   * ĝ = g⊙weight, dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)) per row, dweight = Σ_rows g⊙x̂, dbias = Σ_rows g.
   */
  layerNormBackward: { readonly eps: number };
  /**
   * (x) -> GELU(x): 'none' the exact x·Φ(x) = ½x(1 + erf(x/√2)); 'tanh' ½x(1 + tanh(u)) with
   * u = √(2/π)(x + 0.044715x³) (= x·σ(2u)).
   */
  gelu: { readonly approximate: 'none' | 'tanh' };
  /** (g, x) -> g·GELU'(x) (the same `approximate`). */
  geluBackward: { readonly approximate: 'none' | 'tanh' };
  /**
   * (qkv [N, L, 3E]) -> [N, L, E]: multi-head scaled dot-product self-attention on a fused Q/K/V
   * projection. Per batch row n and head h (d = E / heads, columns h·d.. of each third):
   * A = softmax(Q_h·K_hᵀ/√d + mask) with the causal mask (−∞ above the diagonal) when `causal`,
   * out[n, :, h·d..(h+1)·d] = A·V_h -- the heads merged back, as `CausalSelfAttention` computes them.
   */
  attention: { readonly heads: number; readonly causal: boolean };
  /** (g [N, L, E], qkv [N, L, 3E]) -> the gradient of Σ g⊙attention(qkv) with respect to qkv, [N, L, 3E] (the weights A recomputed). */
  attentionBackward: { readonly heads: number; readonly causal: boolean };
  /**
   * (qkv [N, S, 3E], keys [N, C, E], values [N, C, E]) -> [N, S, E]: causal attention of S new
   * positions past..past+S−1 over a KV cache of capacity C (past + S ≤ C). Query row s is the Q third
   * of qkv[n, s]; it sees cache rows j = 0..past+s (the caller writes the new positions' K and V
   * there first; qkv's K and V thirds are not read, rows past+S.. are never read). Per head h
   * (columns h·d.. , d = E / heads): out[n, s, h·d..] = softmax(Q_h·K_hᵀ/√d)·V_h -- the rows of
   * `attention(qkv_all, {causal: true})` at those positions. Inference only (no gradient).
   */
  decodeAttention: { readonly heads: number; readonly past: number };
  /**
   * (logits [N, C], targets:int32 [N]) -> [N]: softmax cross-entropy per row,
   * logsumexp(logits[n]) − logits[n, targets[n]] (targets in [0, C)).
   */
  crossEntropyLoss: NoAttrs;
  /** (g [N], logits [N, C], targets:int32 [N]) -> [N, C]: g[n]·(softmax(logits[n]) − onehot(targets[n])). */
  crossEntropyLossBackward: NoAttrs;
  // ---- normalised exponentials along one axis
  softmax: { readonly axis: number };
  logSoftmax: { readonly axis: number };
  // ---- quantization estimators: forward is exact, the gradient is the estimator's (see rules)
  /**
   * (x, scale, zeroPoint) -> (clamp(roundHalfEven(x / scale) + zeroPoint, qmin, qmax) - zeroPoint) * scale.
   * scale and zeroPoint broadcast against x (per tensor, channel or group). `gradient` picks the
   * estimator for x: 'ste' passes g everywhere, 'clipped' only where the value was not clamped.
   * scale gets the LSQ gradient, zeroPoint the affine one; `scaleGradFactor` (default 1) multiplies
   * the scale's gradient (LSQ's g = 1/√(N·qmax), applied here instead of by a scaleGrad op).
   */
  fakeQuantize: { readonly qmin: number; readonly qmax: number; readonly gradient: 'ste' | 'clipped'; readonly scaleGradFactor?: number };
  /**
   * (g, x, scale, zeroPoint) -> one part of fakeQuantize's gradient in a single pass:
   * per element 'x' = g·inside (or g for 'ste'), 'scale' = g·(inside ? r − v : q − z),
   * 'zeroPoint' = g·(inside ? 0 : −s) (see the fakeQuantize rule), over the broadcast shape; with
   * `reduce` those terms (each rounded to the dtype) are summed, in float64, to the shape of the
   * operand the part belongs to (x, scale or zeroPoint), the form the fakeQuantize rule uses.
   * The scale part is multiplied by `scaleGradFactor` (default 1) after that (rounded to the dtype,
   * then the product rounded: what a following `mul` by the factor would give).
   * 'xAndScale' (only with `reduce`) is the 'x' and the 'scale' parts computed in one pass and
   * returned as one flat tensor [x.size + scale.size]: the x part in x's order, then the scale part.
   */
  fakeQuantizeGrad: {
    readonly qmin: number;
    readonly qmax: number;
    readonly gradient: 'ste' | 'clipped';
    readonly part: 'x' | 'scale' | 'zeroPoint' | 'xAndScale';
    readonly reduce: boolean;
    readonly scaleGradFactor?: number;
  };
  /** (x) -> roundHalfEven(x), with the straight-through (identity) gradient. */
  roundSte: NoAttrs;
  /** (x) -> x, gradient multiplied by `scale` (LSQ's gradient scaling). */
  scaleGrad: { readonly scale: number };
  /**
   * (x) -> +1 where x >= 0 else -1 (sign(0) = +1). Gradient: 'ste' identity; 'clipped' 1 on
   * |x| <= 1 (BinaryConnect/XNOR); 'approxSign' 2 - 2|x| on |x| <= 1 (Bi-Real); 'ede'
   * k·t·(1 - tanh²(t·x)) (IR-Net's error decay estimator); 'adaste' AdaSTE's adaptive estimator
   * with relaxation weight `mu`, margin `relaxAlpha` and cap `cap` (src/quant/quantizers/adaste.ts).
   */
  signSte: {
    readonly gradient: 'ste' | 'clipped' | 'approxSign' | 'ede' | 'adaste';
    readonly t?: number;
    readonly k?: number;
    readonly mu?: number;
    readonly relaxAlpha?: number;
    readonly cap?: number;
  };
  // ---- low-precision training (src/lowp)
  /**
   * (x) -> x rounded to the 16-bit float `format` (round to nearest even; fp16 keeps subnormals and
   * overflows to ±Inf at |x| >= 65520), stored in x's dtype (float64 is taken as float32 first).
   * Gradient: the incoming gradient rounded to the same format (a half-precision backward).
   */
  castFloat: { readonly format: 'fp16' | 'bf16' };
  // ---- quantized backward pass (DoReFa-Net's gradient quantizer; src/quant/qat/activation-gradients.ts)
  /**
   * (x) -> x. Gradient: the incoming gradient through `stochasticQuantize` with the same
   * attributes (a k-bit backward pass: the layer behind it sees only quantized gradients).
   */
  quantizeGradient: StochasticQuantizeAttrs;
  /**
   * (x) -> x stochastically rounded to `bits` bits with a max-abs scale (StochasticQuantizeAttrs
   * gives the formula); E[y] = x. Gradient: identity (the derivative of that expectation).
   */
  stochasticQuantize: StochasticQuantizeAttrs;
}

/**
 * Unbiased k-bit stochastic quantization, DoReFa-Net's gradient quantizer (Zhou et al. 2016,
 * "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth Gradients").
 * Per group (the whole tensor, or each index of axis 0 for 'sample'): m = max|x| over the group;
 * 'dorefa': n = 2^bits − 1, t = n·(x/(2m) + 1/2) ∈ [0, n], q = floor(t + u), y = 2m·(q/n − 1/2)
 * (2^bits levels ±m/n, ±3m/n, …, ±m; zero is not one of them);
 * 'symmetric': n = 2^(bits−1) − 1, t = n·x/m ∈ [−n, n], q = floor(t + u), y = q·m/n (2^bits − 1
 * levels with zero, the grid of optim.withQuantizedGradients).
 * u ~ U[0, 1) is drawn from `new Rng(seed)`, one draw per element in row-major order, so the
 * result is a function of x and the attributes. q is clamped to its range (only reached through
 * float rounding). A group with m = 0 stays 0; a group holding NaN or ±Inf becomes NaN.
 */
export interface StochasticQuantizeAttrs {
  /** Bit width k, an integer in [2, 16]. */
  readonly bits: number;
  readonly granularity: 'tensor' | 'sample';
  readonly grid: 'dorefa' | 'symmetric';
  /** uint32 seed of the rounding draws. */
  readonly seed: number;
}

export type PrimitiveName = keyof PrimitiveAttrs;

/** All primitive names, for iteration (tests check that each has a kernel and a rule). */
export const PRIMITIVES: readonly PrimitiveName[] = [
  'neg', 'exp', 'log', 'sqrt', 'abs', 'sign', 'relu', 'sigmoid', 'tanh', 'erf', 'floor', 'round',
  'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'reluBackward', 'clamp', 'clampBackward',
  'batchNorm', 'batchNormBackward', 'batchNormStats', 'batchNormStatsBackward',
  'greater', 'greaterEqual', 'equal', 'where',
  'sum', 'max', 'argmax',
  'reshape', 'transpose', 'broadcastTo', 'slice', 'pad', 'concat', 'gather', 'scatterAdd', 'cast',
  'matmul', 'linear', 'conv2d', 'conv2dBackwardInput', 'conv2dBackwardWeight', 'conv2dFused',
  'maxPool2d', 'maxPool2dBackward', 'maxPool2dGather', 'avgPool2d', 'avgPool2dBackward',
  'softmax', 'logSoftmax',
  'layerNorm', 'layerNormBackward', 'gelu', 'geluBackward', 'attention', 'attentionBackward', 'decodeAttention',
  'crossEntropyLoss', 'crossEntropyLossBackward',
  'lstmSequence', 'lstmSequenceBackward', 'gruSequence', 'gruSequenceBackward',
  'adderConv2d', 'adderConv2dGrad',
  'fakeQuantize', 'fakeQuantizeGrad', 'roundSte', 'scaleGrad', 'signSte',
  'castFloat',
  'quantizeGradient', 'stochasticQuantize',
];

/** Primitives whose gradient is an estimator by design: checked against their closed forms, not finite differences. */
export const ESTIMATOR_PRIMITIVES: readonly PrimitiveName[] = ['fakeQuantize', 'fakeQuantizeGrad', 'roundSte', 'signSte', 'castFloat', 'adderConv2d', 'adderConv2dGrad', 'quantizeGradient', 'stochasticQuantize'];

export const UNARY_PRIMITIVES = [
  'neg', 'exp', 'log', 'sqrt', 'abs', 'sign', 'relu', 'sigmoid', 'tanh', 'erf', 'floor', 'round',
] as const satisfies readonly PrimitiveName[];
export type UnaryPrimitive = (typeof UNARY_PRIMITIVES)[number];

export const BINARY_PRIMITIVES = [
  'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'greater', 'greaterEqual', 'equal', 'reluBackward',
] as const satisfies readonly PrimitiveName[];
export type BinaryPrimitive = (typeof BINARY_PRIMITIVES)[number];

/** A kernel computes one primitive. Returning undefined declines (the reference kernel runs). */
export type Kernel<P extends PrimitiveName = PrimitiveName> = (
  inputs: readonly RawTensor[],
  attrs: PrimitiveAttrs[P],
) => RawTensor | undefined;

/**
 * data[i] = data[i]·factor with the factor and each product rounded to the array's type: what a
 * `mul` by a scalar of that dtype computes (used where a kernel folds in LSQ's gradient scale).
 */
export function scaleInPlace(data: TypedArray, factor: number): void {
  const f = data instanceof Float32Array ? Math.fround(factor) : factor;
  for (let i = 0; i < data.length; i++) data[i] = data[i]! * f;
}

export function typedArrayFor(dtype: DType, length: number): TypedArray {
  switch (dtype) {
    case 'float32':
      return new Float32Array(length);
    case 'float64':
      return new Float64Array(length);
    case 'int32':
      return new Int32Array(length);
  }
}

export function dtypeOf(data: TypedArray): DType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  return 'int32';
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides of a dense shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

/** The GEMM sizes of a matmul kernel's operands. */
export interface MatmulSizes {
  readonly m: number;
  readonly k: number;
  readonly n: number;
  /** The leading (batch) dimensions of a and of b. */
  readonly aBatch: number[];
  readonly bBatch: number[];
}

/**
 * M, K, N and the batch dimensions of matmul(a, b): a [...batch, M, K] (or [..., K, M] when transA),
 * b [...batch, K, N] (or [..., N, K] when transB); null when either has rank < 2 or the K sizes
 * differ (the backends' kernels then decline). Shared by the native and wasm matmul kernels.
 */
export function matmulSizes(a: readonly number[], b: readonly number[], transA: boolean, transB: boolean): MatmulSizes | null {
  const ra = a.length;
  const rb = b.length;
  if (ra < 2 || rb < 2) return null;
  const m = a[ra - (transA ? 1 : 2)]!;
  const k = a[ra - (transA ? 2 : 1)]!;
  const kb = b[rb - (transB ? 1 : 2)]!;
  const n = b[rb - (transB ? 2 : 1)]!;
  if (k !== kb) return null;
  return { m, k, n, aBatch: a.slice(0, -2), bBatch: b.slice(0, -2) };
}

/** numpy broadcasting of two shapes; throws with both shapes named when they do not broadcast. */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`shapes [${a.join(', ')}] and [${b.join(', ')}] do not broadcast`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/**
 * How a scale / zero-point tensor t broadcast against x (right-aligned) is indexed: [mid, inner]
 * with element i of x reading t[(i / inner) % mid] (mid = t's size); [1, 1] for a single value;
 * null when t's non-1 dims are not one contiguous run of x's dims (or t has more dims than x).
 * Shared by the native and wasm fakeQuantize kernels.
 */
export function paramLayout(t: readonly number[], x: readonly number[]): [number, number] | null {
  if (t.length > x.length) return null;
  const lead = x.length - t.length;
  let first = -1;
  let last = -1;
  for (let d = 0; d < x.length; d++) {
    const n = d < lead ? 1 : t[d - lead]!;
    if (n !== 1 && n !== x[d]) return null;
    if (n !== 1) {
      if (first < 0) first = d;
      last = d;
    }
  }
  if (first < 0) return [1, 1];
  for (let d = first; d <= last; d++) {
    const n = d < lead ? 1 : t[d - lead]!;
    if (n !== x[d]) return null;
  }
  return [sizeOf(x.slice(first, last + 1)), sizeOf(x.slice(last + 1))];
}
