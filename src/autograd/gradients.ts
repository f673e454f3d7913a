/**
 * One gradient rule per primitive, written with tensor ops so that every backend gets them and
 * double backward works. A rule maps the output gradient `g` to one gradient per input (null
 * where an input gets none). Primitives whose derivative is zero almost everywhere (comparisons,
 * sign, floor, round, argmax) are listed as non-differentiable: their outputs never require grad.
 */
import type { PrimitiveAttrs, PrimitiveName, RecurrentAttrs } from '../backend/primitives.ts';
import { Tensor } from '../tensor/tensor.ts';
import * as o from '../tensor/ops.ts';
import { isGradEnabled } from './engine.ts';
import { gruSequenceBackwardComposed, lstmSequenceBackwardComposed } from './recurrent.ts';
import { attentionBackwardComposed, crossEntropyBackwardComposed, geluDerivativeComposed, layerNormBackwardComposed } from './transformer.ts';

type Rule<P extends PrimitiveName> = (
  g: Tensor,
  inputs: readonly Tensor[],
  out: Tensor,
  attrs: PrimitiveAttrs[P],
) => InputGrad[];

/**
 * A gradient, null for none, or a thunk the engine calls only when that input requires grad
 * (rules of multi-input ops use thunks so that, e.g., conv2d never computes dx for an image).
 */
export type InputGrad = Tensor | null | (() => Tensor | null);

type RuleTable = { [P in PrimitiveName]: Rule<P> | 'nondifferentiable' };

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/** Gradient of a broadcasting binary op's operand: the output gradient summed to its shape. */
const unb = (g: Tensor, x: Tensor): Tensor => o.sumTo(g, x.shape);

/** batchNorm's adjoint as tensor ops: dx = w·rstd·(g − mean(g) − x̂·mean(g·x̂)), dw = Σ g·x̂, db = Σ g. */
function batchNormBackwardComposed(g: Tensor, x: Tensor, weight: Tensor, eps: number): Tensor[] {
  const axes = x.shape.map((_, i) => i).filter((i) => i !== 1);
  const view = x.shape.map((d, i) => (i === 1 ? d : 1));
  const centered = o.sub(x, o.mean(x, axes, true));
  const rstd = o.div(1, o.sqrt(o.add(o.mean(o.mul(centered, centered), axes, true), eps)));
  const xhat = o.mul(centered, rstd);
  const dx = o.mul(o.mul(o.reshape(weight, view), rstd), o.sub(o.sub(g, o.mean(g, axes, true)), o.mul(xhat, o.mean(o.mul(g, xhat), axes, true))));
  return [dx, o.reshape(o.sum(o.mul(g, xhat), axes), weight.shape), o.reshape(o.sum(g, axes), weight.shape)];
}

function inversePerm(perm: readonly number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return inv;
}

/** Restores reduced axes as size-1 dims so a reduced gradient broadcasts back. */
function keepDimsShape(inShape: readonly number[], axes: readonly number[]): number[] {
  return inShape.map((d, i) => (axes.includes(i) ? 1 : d));
}

const RULES: RuleTable = {
  neg: (g) => [o.neg(g)],
  exp: (g, _i, out) => [o.mul(g, out)],
  log: (g, [x]) => [o.div(g, x!)],
  sqrt: (g, _i, out) => [o.div(g, o.mul(out, 2))],
  abs: (g, [x]) => [o.mul(g, o.sign(x!))],
  sign: 'nondifferentiable',
  relu: (g, [x]) => [o.apply('reluBackward', [g, x!], {})],
  // Linear in g; the mask is piecewise constant in y (zero gradient a.e.).
  reluBackward: (g, [, y]) => [o.apply('reluBackward', [g, y!], {}), null],
  clamp: (g, [x], _out, attrs) => [o.apply('clampBackward', [g, x!], attrs)],
  // Linear in g; the mask is piecewise constant in x.
  clampBackward: (g, [, x], _out, attrs) => [o.apply('clampBackward', [g, x!], attrs), null],
  // Training-mode BatchNorm: one backward primitive (statistics recomputed); recorded (createGraph)
  // the same formulas run as tensor ops, so double backward works.
  // With a clamp, g first goes through clamp's mask on the unclamped output (recomputed from x).
  batchNorm: (g, [x, w, b, stats], _out, { eps, clamp }) => {
    const tail = stats ? [null] : [];
    if (isGradEnabled()) {
      const gy = clamp ? o.apply('clampBackward', [g, o.batchNorm(x!, w!, b!, eps, stats ?? null)], { min: clamp[0], max: clamp[1] }) : g;
      return [...batchNormBackwardComposed(gy, x!, w!, eps), ...tail];
    }
    const flat = clamp
      ? o.apply('batchNormBackward', [g, x!, w!, stats ?? o.batchNormStats(x!.detach()), b!], { eps, clamp })
      : o.apply('batchNormBackward', stats ? [g, x!, w!, stats] : [g, x!, w!], { eps });
    return [...splitFlat(flat, [x!.shape, w!.shape, w!.shape]), ...tail];
  },
  batchNormBackward: 'nondifferentiable',
  // [mean; biased variance] per channel over M values: ∂mean/∂x = 1/M, ∂var/∂x = 2(x − mean)/M.
  // One primitive pass over x; when the backward is recorded (createGraph), the same formula as tensor ops.
  batchNormStats: (g, [x], out) => {
    if (!isGradEnabled()) return [o.apply('batchNormStatsBackward', [g, x!, out], {})];
    const c = out.shape[1]!;
    const count = x!.size / c;
    const view = x!.shape.map((d, i) => (i === 1 ? d : 1));
    const gMean = o.reshape(o.narrow(g, 0, 0, 1), view);
    const gVar = o.reshape(o.narrow(g, 0, 1, 1), view);
    const mean = o.reshape(o.narrow(out, 0, 0, 1), view);
    return [o.add(o.mul(o.sub(x!, mean), o.mul(gVar, 2 / count)), o.mul(gMean, 1 / count))];
  },
  sigmoid: (g, _i, out) => [o.mul(g, o.mul(out, o.sub(1, out)))],
  tanh: (g, _i, out) => [o.mul(g, o.sub(1, o.mul(out, out)))],
  erf: (g, [x]) => [o.mul(g, o.mul(o.exp(o.neg(o.mul(x!, x!))), TWO_OVER_SQRT_PI))],
  floor: 'nondifferentiable',
  round: 'nondifferentiable',

  add: (g, [a, b]) => [() => unb(g, a!), () => unb(g, b!)],
  sub: (g, [a, b]) => [() => unb(g, a!), () => unb(o.neg(g), b!)],
  mul: (g, [a, b]) => [() => unb(o.mul(g, b!), a!), () => unb(o.mul(g, a!), b!)],
  div: (g, [a, b]) => [() => unb(o.div(g, b!), a!), () => unb(o.neg(o.div(o.mul(g, a!), o.mul(b!, b!))), b!)],
  pow: (g, [a, b], out) => [
    () => unb(o.mul(g, o.mul(b!, o.pow(a!, o.sub(b!, 1)))), a!),
    // d/db a^b = a^b·ln a; defined as 0 where a <= 0 (as frameworks do for integer-like exponents).
    () => unb(o.mul(g, o.where(o.greater(a!, 0), o.mul(out, o.log(o.maximum(a!, 1e-30))), 0)), b!),
  ],
  // Ties split the gradient evenly between a and b, as PyTorch's maximum / minimum do.
  maximum: (g, [a, b]) => {
    const takeA = o.mul(o.add(o.greater(a!, b!), o.greaterEqual(a!, b!)), 0.5);
    return [() => unb(o.mul(g, takeA), a!), () => unb(o.mul(g, o.sub(1, takeA)), b!)];
  },
  minimum: (g, [a, b]) => {
    const takeA = o.mul(o.add(o.greater(b!, a!), o.greaterEqual(b!, a!)), 0.5);
    return [() => unb(o.mul(g, takeA), a!), () => unb(o.mul(g, o.sub(1, takeA)), b!)];
  },
  greater: 'nondifferentiable',
  greaterEqual: 'nondifferentiable',
  equal: 'nondifferentiable',
  where: (g, [c, a, b]) => [null, () => unb(o.where(c!, g, 0), a!), () => unb(o.where(c!, 0, g), b!)],

  sum: (g, [x], _out, { axes, keepDims }) => {
    const gk = keepDims ? g : o.reshape(g, keepDimsShape(x!.shape, axes));
    return [o.broadcastTo(gk, x!.shape)];
  },
  max: (g, [x], out, { axes, keepDims }) => {
    const shape = keepDimsShape(x!.shape, axes);
    const gk = keepDims ? g : o.reshape(g, shape);
    const ok = keepDims ? out : o.reshape(out, shape);
    // Ties share the gradient equally, so the rule is the true subgradient average.
    const mask = o.equal(x!, ok);
    const count = o.sum(mask, axes, true);
    return [o.mul(o.div(mask, count), gk)];
  },
  argmax: 'nondifferentiable',

  reshape: (g, [x]) => [o.reshape(g, x!.shape)],
  transpose: (g, _i, _out, { perm }) => [o.transpose(g, inversePerm(perm))],
  broadcastTo: (g, [x]) => [o.sumTo(g, x!.shape)],
  slice: (g, [x], _out, { starts, ends }) => [
    o.pad(g, x!.shape.map((n, d) => [starts[d]!, n - ends[d]!] as [number, number])),
  ],
  pad: (g, [x], _out, { pads }) => [
    o.slice(g, pads.map(([before]) => before), pads.map(([before], d) => before + x!.shape[d]!)),
  ],
  concat: (g, xs, _out, { axis }) => {
    let start = 0;
    return xs.map((x) => {
      const begin = start;
      start += x.shape[axis]!;
      return () => o.narrow(g, axis, begin, x.shape[axis]!);
    });
  },
  gather: (g, [x, idx], _out, { axis }) => [o.scatterAdd(g, idx!, axis, x!.shape), null],
  scatterAdd: (g, [, idx], _out, { axis }) => [o.gather(g, idx!, axis), null],
  cast: (g, [x]) => [x!.dtype === 'int32' ? null : o.cast(g, x!.dtype)],

  matmul: (g, [a, b], _out, { transA, transB }) => {
    const ga = (): Tensor =>
      !transA && !transB ? o.matmul(g, b!, { transB: true })
        : transA && !transB ? o.matmul(b!, g, { transB: true })
          : !transA && transB ? o.matmul(g, b!)
            : o.matmul(b!, g, { transA: true, transB: true });
    const gb = (): Tensor =>
      !transA && !transB ? o.matmul(a!, g, { transA: true })
        : transA && !transB ? o.matmul(a!, g)
          : !transA && transB ? o.matmul(g, a!, { transA: true })
            : o.matmul(g, a!, { transA: true, transB: true });
    return [() => unb(ga(), a!), () => unb(gb(), b!)];  // sums broadcast batch dims
  },
  linear: (g, [x, w]) => [
    () => o.matmul(g, w!),
    () => o.matmul(g, x!, { transA: true }),
    () => o.sum(g, 0),
  ],
  conv2d: (g, [x, w], _out, attrs) => [
    () => o.apply('conv2dBackwardInput', [g, w!], { ...geometry(attrs), inputShape: x!.shape }),
    () => o.apply('conv2dBackwardWeight', [x!, g], { ...geometry(attrs), weightShape: w!.shape }),
  ],
  // conv2dBackwardInput(dy, w) = Cᵀ(w)·dy is bilinear: <G, Cᵀ(w)dy> = <conv2d(G, w), dy>.
  conv2dBackwardInput: (g, [dy, w], _out, attrs) => [
    () => o.apply('conv2d', [g, w!], geometry(attrs)),
    () => o.apply('conv2dBackwardWeight', [g, dy!], { ...geometry(attrs), weightShape: w!.shape }),
  ],
  // conv2dBackwardWeight(x, dy): <G, bw(x, dy)> = <conv2d(x, G), dy>.
  conv2dBackwardWeight: (g, [x, dy], _out, attrs) => [
    () => o.apply('conv2dBackwardInput', [dy!, g], { ...geometry(attrs), inputShape: x!.shape }),
    () => o.apply('conv2d', [x!, g], geometry(attrs)),
  ],
  // y = pool(act(z)), z = conv2d(x, w) + bias: route g back through the pooling (recomputing
  // act(z) for its argmax) and the ReLU mask (z > 0 iff act(z) > 0), then the conv2d and bias rules.
  // Without pooling the output itself is act(z): nothing is recomputed.
  conv2dFused: (g, [x, w, bias, scale], out, attrs) => {
    if ((attrs.clampMax ?? null) !== null || scale) throw new Error('conv2dFused: no gradient with a scale or clampMax (an inference-only fusion)');
    const geo = geometry(attrs);
    let gz = g;
    if (attrs.pool) {
      const z = o.add(o.apply('conv2d', [x!, w!], geo), o.reshape(bias!, [1, bias!.shape[0]!, 1, 1]));
      const act = attrs.relu ? o.relu(z) : z;
      gz = o.apply('maxPool2dBackward', [g, act], attrs.pool);
      if (attrs.relu) gz = o.apply('reluBackward', [gz, act], {});
    } else if (attrs.relu) {
      gz = o.apply('reluBackward', [g, out], {});
    }
    return [
      () => o.apply('conv2dBackwardInput', [gz, w!], { ...geo, inputShape: x!.shape }),
      () => o.apply('conv2dBackwardWeight', [x!, gz], { ...geo, weightShape: w!.shape }),
      () => o.sum(gz, [0, 2, 3]),
    ];
  },

  maxPool2d: (g, [x], _out, attrs) => [o.apply('maxPool2dBackward', [g, x!], attrs)],
  // Linear in dy (x only selects positions, zero gradient a.e.).
  maxPool2dBackward: (g, [, x], _out, attrs) => [o.apply('maxPool2dGather', [g, x!], attrs), null],
  maxPool2dGather: (g, [, x], _out, attrs) => [o.apply('maxPool2dBackward', [g, x!], attrs), null],
  avgPool2d: (g, [x], _out, attrs) => [o.apply('avgPool2dBackward', [g], { ...attrs, inputShape: x!.shape })],
  avgPool2dBackward: (g, _i, _out, { kernel, stride, padding }) => [o.apply('avgPool2d', [g], { kernel, stride, padding })],

  softmax: (g, _i, out, { axis }) => [o.mul(out, o.sub(g, o.sum(o.mul(g, out), axis, true)))],
  logSoftmax: (g, _i, out, { axis }) => [o.sub(g, o.mul(o.exp(out), o.sum(g, axis, true)))],

  // The fused Transformer primitives: one backward primitive each (mean/rstd and the attention
  // weights recomputed, not saved); when the backward pass is recorded (createGraph), the same
  // formulas run as tensor ops (autograd/transformer.ts), so double backward works.
  layerNorm: (g, [x, w], _out, { eps }) => {
    if (isGradEnabled()) return layerNormBackwardComposed(g, x!, w!, eps);
    const flat = o.apply('layerNormBackward', [g, x!, w!], { eps });
    return splitFlat(flat, [x!.shape, w!.shape, w!.shape]);
  },
  layerNormBackward: 'nondifferentiable',
  batchNormStatsBackward: 'nondifferentiable',
  gelu: (g, [x], _out, { approximate }) => [
    isGradEnabled() ? o.mul(g, geluDerivativeComposed(x!, approximate)) : o.apply('geluBackward', [g, x!], { approximate }),
  ],
  geluBackward: 'nondifferentiable',
  attention: (g, [qkv], _out, attrs) => [
    isGradEnabled() ? attentionBackwardComposed(g, qkv!, attrs) : o.apply('attentionBackward', [g, qkv!], attrs),
  ],
  attentionBackward: 'nondifferentiable',
  // Decoding with a KV cache is inference only; CausalSelfAttention.forwardCached composes ops when a tape records.
  decodeAttention: 'nondifferentiable',
  // d/dlogits of Σ g·loss = g·(softmax − onehot); targets get none. Recorded (createGraph): the same as tensor ops.
  crossEntropyLoss: (g, [x, t]) => [
    isGradEnabled() ? crossEntropyBackwardComposed(g, x!, t!) : o.apply('crossEntropyLossBackward', [g, x!, t!], {}),
    null,
  ],
  crossEntropyLossBackward: 'nondifferentiable',

  // Backwards through time in one primitive each (the gradients of inputGates and the initial
  // states; GRU also hiddenGates'), then W_hh's gradient as one product over all steps,
  // Σ_t d(hiddenGates_t)ᵀ·h_{t−1}, and b_hh's as one sum. The backward primitives have no rule of
  // their own: when this pass is recorded (createGraph), the same formulas run as tensor ops.
  lstmSequence: (g, [gates, w, , h0, c0], out, attrs) => {
    if (isGradEnabled()) return lstmSequenceBackwardComposed(g, out, w!, h0!, c0!, attrs);
    const flat = o.apply('lstmSequenceBackward', [g, out, w!, c0!], attrs);
    const [dGates, dh0, dc0] = splitFlat(flat, [gates!.shape, h0!.shape, c0!.shape]);
    return [dGates!, () => hiddenWeightGrad(dGates!, out, h0!, attrs), () => o.sum(dGates!, [0, 1]), dh0!, dc0!];
  },
  lstmSequenceBackward: 'nondifferentiable',
  gruSequence: (g, [gates, w, , , h0], out, attrs) => {
    if (isGradEnabled()) return gruSequenceBackwardComposed(g, out, w!, h0!, attrs);
    const flat = o.apply('gruSequenceBackward', [g, out, w!, h0!], attrs);
    const [dGates, dHidden, dh0] = splitFlat(flat, [gates!.shape, gates!.shape, h0!.shape]);
    return [dGates!, () => hiddenWeightGrad(dHidden!, out, h0!, attrs), () => o.sum(dGates!, [0, 1]), () => o.sum(dHidden!, [0, 1]), dh0!];
  },
  gruSequenceBackward: 'nondifferentiable',

  // AdderNet's estimator (see the primitive): full-precision x − w for w, HardTanh(w − x) for x,
  // then the optional adaptive scaling η·√k·G/‖G‖₂ of the weight gradient. Its gradient primitive
  // has no rule of its own (no second order through an estimator).
  adderConv2d: (g, [x, w], _out, attrs) => {
    const geo = geometry(attrs);
    return [
      () => o.apply('adderConv2dGrad', [g, x!, w!], { ...geo, part: 'input' }),
      () => {
        const gw = o.apply('adderConv2dGrad', [g, x!, w!], { ...geo, part: 'weight' });
        const eta = attrs.adaptiveEta ?? 0;
        if (eta <= 0) return gw;
        const norm = o.maximum(o.sqrt(o.sum(o.mul(gw, gw))), 1e-12);
        return o.mul(gw, o.div(eta * Math.sqrt(w!.size), norm));
      },
    ];
  },
  adderConv2dGrad: 'nondifferentiable',

  // x̂ = (q − z)·s with v = x/s + z, r = round(x/s) + z, q = clamp(r, qmin, qmax). With dq/dv = 1
  // where r is inside [qmin, qmax] (straight-through) and 0 where clamped:
  //   dx̂/dx = inside (clipped) or 1 (ste);  dx̂/ds = r − v inside, q − z outside (LSQ);
  //   dx̂/dz = 0 inside, −s outside.
  // Each part is summed to its operand's shape inside the kernel (`reduce`), so a per-tensor or
  // per-channel scale never materialises a gradient the size of x. When both x and s need theirs
  // (QAT: weights and LSQ steps, activations and their steps), one 'xAndScale' pass computes both.
  // `scaleGradFactor` scales the scale's part (LSQ's g).
  fakeQuantize: (g, [x, s, z], _out, { qmin, qmax, gradient, scaleGradFactor }) => {
    const attrs = { qmin, qmax, gradient, reduce: true, ...(scaleGradFactor === undefined ? {} : { scaleGradFactor }) };
    const part = (which: 'x' | 'scale' | 'zeroPoint'): Tensor => o.apply('fakeQuantizeGrad', [g, x!, s!, z!], { ...attrs, part: which });
    if (!x!.requiresGrad || !s!.requiresGrad) return [() => part('x'), () => part('scale'), () => part('zeroPoint')];
    const both = o.apply('fakeQuantizeGrad', [g, x!, s!, z!], { ...attrs, part: 'xAndScale' });
    const [gx, gs] = splitFlat(both, [x!.shape, s!.shape]);
    return [gx, gs, () => part('zeroPoint')];
  },
  // Linear in g with factors that are piecewise constant in x, s, z: only g gets a gradient
  // (the factors are treated as constants, as estimators are in second-order methods): the
  // per-element terms of the upstream gradient gg (which broadcasts from the reduced shape when
  // `reduce`), summed back to g's shape; for 'xAndScale', the two parts' terms added.
  fakeQuantizeGrad: (gg, [g, x, s, z], _out, attrs) => [
    () => {
      const termsOf = (ggPart: Tensor, part: 'x' | 'scale' | 'zeroPoint'): Tensor =>
        o.sumTo(o.apply('fakeQuantizeGrad', [ggPart, x!, s!, z!], { ...attrs, part, reduce: false }), g!.shape);
      if (attrs.part !== 'xAndScale') return termsOf(gg, attrs.part);
      const [ggx, ggs] = splitFlat(gg, [x!.shape, s!.shape]);
      return o.add(termsOf(ggx, 'x'), termsOf(ggs, 'scale'));
    },
    null,
    null,
    null,
  ],
  roundSte: (g) => [g],
  scaleGrad: (g, _i, _out, { scale }) => [o.mul(g, scale)],
  // Rounding has a zero derivative a.e.; mixed-precision training instead passes the gradient
  // through, rounded to the same format: the backward of a half-precision tensor is half precision.
  castFloat: (g, _i, _out, { format }) => [o.castFloat(g, format)],
  // DoReFa's quantized backward: identity forward, the gradient stochastically quantized (unbiased).
  quantizeGradient: (g, _i, _out, attrs) => [o.apply('stochasticQuantize', [g], attrs)],
  // E[stochasticQuantize(x)] = x, so the rule is the derivative of the expectation: the identity.
  stochasticQuantize: (g) => [g],
  signSte: (g, [x], _out, { gradient, t = 1, k = 1, mu = 0, relaxAlpha = 0.01, cap = 0.5 }) => {
    switch (gradient) {
      case 'adaste':
        return [o.mul(g, adasteSlope(x!, g, mu, relaxAlpha, cap))];
      case 'ste':
        return [g];
      case 'clipped':
        return [o.mul(g, o.greaterEqual(1, o.abs(x!)))];
      case 'approxSign':
        return [o.mul(g, o.maximum(o.sub(2, o.mul(o.abs(x!), 2)), 0))];
      case 'ede': {
        const th = o.tanh(o.mul(x!, t));
        return [o.mul(g, o.mul(o.sub(1, o.mul(th, th)), k * t))];
      }
    }
  },
};

/**
 * AdaSTE's backward slope s (the gradient is g·s), elementwise from x = θ and the incoming g
 * (src/quant/quantizers/adaste.ts has the derivation). With the relaxed inner solution
 * w*(θ) = clamp((θ + μ(1+ρ)·sign θ)/(1+μ), −1, 1):
 *   s_lin = 1/(1+μ) on |θ| < 1 − μρ, else 0 (the derivative of w*);
 *   g·θ ≤ 0 (the step moves θ away from 0): s = s_lin;
 *   g·θ > 0 (the step moves θ toward the flip): s = max(s_lin, min(cap, (|w*(θ)| + |w*(0⁻)|)/|θ|)),
 * the finite difference (w*(θ) − w*(θ − βg))/(βg) at the adaptive β = θ/g that just reaches 0.
 */
function adasteSlope(x: Tensor, g: Tensor, mu: number, relaxAlpha: number, cap: number): Tensor {
  const a = o.abs(x);
  const shift = (mu * (1 + relaxAlpha)) / (1 + mu);
  const linear = o.mul(o.less(a, 1 - mu * relaxAlpha), 1 / (1 + mu));
  const inner = o.minimum(o.add(o.mul(a, 1 / (1 + mu)), shift), 1);
  const finiteDifference = o.div(o.add(inner, Math.min(1, shift)), o.maximum(a, 1e-30));
  const boosted = o.maximum(linear, o.minimum(finiteDifference, cap));
  return o.where(o.greater(o.mul(g, x), 0), boosted, linear);
}

/**
 * W_hh's gradient of a fused recurrent sequence: d(hiddenGates) [·, ·, G·H] (rows as the
 * sequence's layout) against the hidden state each step read, h_{t−1} (h0 at the first step).
 */
function hiddenWeightGrad(dHidden: Tensor, out: Tensor, h0: Tensor, { batchFirst, reverse }: RecurrentAttrs): Tensor {
  const [a, b, width] = dHidden.shape as [number, number, number];
  const hidden = h0.shape[1]!;
  const timeAxis = batchFirst ? 1 : 0;
  const steps = dHidden.shape[timeAxis]!;
  const states = new Tensor(out.data.subarray(0, a * b * hidden), [a, b, hidden]);
  const first = o.reshape(h0, batchFirst ? [a, 1, hidden] : [1, b, hidden]);
  const previous = steps === 1 ? first
    : reverse ? o.concat([o.narrow(states, timeAxis, 1, steps - 1), first], timeAxis)
      : o.concat([first, o.narrow(states, timeAxis, 0, steps - 1)], timeAxis);
  return o.matmul(o.reshape(dHidden, [a * b, width]), o.reshape(previous, [a * b, hidden]), { transA: true });
}

function geometry(attrs: PrimitiveAttrs['conv2d']): PrimitiveAttrs['conv2d'] {
  return { stride: attrs.stride, padding: attrs.padding, dilation: attrs.dilation, groups: attrs.groups };
}

/** The rule of a differentiable primitive; throws for non-differentiable ones. */
export function gradientRule(op: PrimitiveName): Rule<PrimitiveName> {
  const rule = RULES[op];
  if (rule === 'nondifferentiable') throw new Error(`primitive '${op}' has no gradient`);
  return rule as Rule<PrimitiveName>;
}

export function isDifferentiable(op: PrimitiveName): boolean {
  return RULES[op] !== 'nondifferentiable';
}

/**
 * A flat tensor cut into consecutive pieces of the given shapes: views of its data (no copy) when
 * it records no graph, else differentiable slices.
 */
function splitFlat(flat: Tensor, shapes: readonly (readonly number[])[]): Tensor[] {
  let offset = 0;
  return shapes.map((shape) => {
    const size = shape.reduce((p, d) => p * d, 1);
    const start = offset;
    offset += size;
    if (!flat.requiresGrad) return new Tensor(flat.data.subarray(start, start + size), shape);
    return o.reshape(o.slice(flat, [start], [start + size]), shape);
  });
}
