import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { apply, reshape } from '../../tensor/ops.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { QParams } from './qparams.ts';
import { paramIndex } from './qparams.ts';

/** Integers of `data` (row-major, `shape`) under `qp`: clamp(roundHalfEven(x/s) + z, qmin, qmax). */
export function quantizeArray(data: ArrayLike<number>, shape: readonly number[], qp: QParams): Int32Array {
  const idx = paramIndex(shape, qp);
  const q = new Int32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const p = idx(i);
    const v = roundHalfEven(data[i]! / qp.scale[p]!) + qp.zeroPoint[p]!;
    q[i] = v < qp.qmin ? qp.qmin : v > qp.qmax ? qp.qmax : v;
  }
  return q;
}

/** Real values of integers `q`: (q − z)·s. */
export function dequantizeArray(q: ArrayLike<number>, shape: readonly number[], qp: QParams): Float32Array {
  const idx = paramIndex(shape, qp);
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) {
    const p = idx(i);
    out[i] = (q[i]! - qp.zeroPoint[p]!) * qp.scale[p]!;
  }
  return out;
}

/**
 * Shape that makes a parameter vector broadcast against a tensor of `shape` under `qp`'s granularity.
 * Per-group parameters need the tensor viewed as [..., len/g, g, ...]: see `groupView`.
 */
export function paramShape(shape: readonly number[], qp: Pick<QParams, 'axis' | 'groupSize'>): number[] {
  if (qp.axis === null) return [];
  if (qp.groupSize === null) return shape.map((d, i) => (i === qp.axis ? d : 1));
  return groupView(shape, qp.axis, qp.groupSize).map((d, i) => (i === qp.axis! + 1 ? 1 : d));
}

/** [..., len, ...] viewed as [..., len/g, g, ...] (groups along `axis`). */
export function groupView(shape: readonly number[], axis: number, groupSize: number): number[] {
  const len = shape[axis]!;
  if (len % groupSize !== 0) throw new Error(`axis ${axis} of size ${len} is not a multiple of groupSize ${groupSize}`);
  return [...shape.slice(0, axis), len / groupSize, groupSize, ...shape.slice(axis + 1)];
}

export interface FakeQuantizeOptions {
  /** Gradient for x: 'clipped' (default) zeroes it where values were clamped; 'ste' passes it through. */
  gradient?: 'ste' | 'clipped';
  /** Factor on the scale's gradient (LSQ's g = 1/√(N·qmax)); default 1. */
  scaleGradFactor?: number;
}

/**
 * Differentiable fake quantization of a tensor: forward exactly the affine round trip; backward
 * the straight-through estimator for x and the LSQ gradient for `scale` when it requires grad.
 * `scale` and `zeroPoint` are tensors shaped to broadcast against x (see `paramShape`), or a QParams.
 */
export function fakeQuantize(
  x: Tensor,
  params: QParams | { scale: Tensor; zeroPoint: Tensor; qmin: number; qmax: number; groupSize?: number | null; axis?: number | null },
  options: FakeQuantizeOptions = {},
): Tensor {
  const gradient = options.gradient ?? 'clipped';
  let scale: Tensor;
  let zeroPoint: Tensor;
  if (params.scale instanceof Float32Array) {
    const qp = params as QParams;
    const pshape = paramShape(x.shape, qp);
    scale = castLike(new Tensor(qp.scale.slice(), pshape), x);
    zeroPoint = castLike(new Tensor(Float32Array.from(qp.zeroPoint), pshape), x);
  } else {
    scale = params.scale as Tensor;
    zeroPoint = params.zeroPoint as Tensor;
  }
  const group = params.groupSize ?? null;
  const view = group !== null && params.axis !== null && params.axis !== undefined ? groupView(x.shape, params.axis, group) : null;
  const xin = view ? reshape(x, view) : x;
  const factor = options.scaleGradFactor;
  const attrs = { qmin: params.qmin, qmax: params.qmax, gradient, ...(factor === undefined || factor === 1 ? {} : { scaleGradFactor: factor }) };
  const y = apply('fakeQuantize', [xin, scale, zeroPoint], attrs);
  return view ? reshape(y, x.shape) : y;
}

function castLike(t: Tensor, like: Tensor): Tensor {
  if (like.dtype === 'float64') return new Tensor(Float64Array.from(t.data), t.shape);
  return t;
}

/** Straight-through round half to even: forward rounds, backward passes the gradient unchanged. */
export function roundSte(x: Tensor): Tensor {
  return apply('roundSte', [x], {});
}

/** Identity forward, gradient multiplied by `scale` (LSQ's g = 1/√(N·qmax)). */
export function scaleGrad(x: Tensor, scale: number): Tensor {
  return apply('scaleGrad', [x], { scale });
}

/** sign with sign(0) = +1 and a chosen gradient estimator (see the `signSte` primitive). */
export function signSte(x: Tensor, gradient: 'ste' | 'clipped' | 'approxSign' | 'ede' = 'clipped', t = 1, k = 1): Tensor {
  return apply('signSte', [x], { gradient, t, k });
}

/**
 * sign with sign(0) = +1 and AdaSTE's adaptive backward (Le et al., CVPR 2022): relaxation weight
 * `mu` (annealed upward), margin `relaxAlpha`, boost cap `cap`; see src/quant/quantizers/adaste.ts.
 */
export function adasteSign(x: Tensor, mu: number, relaxAlpha: number, cap: number): Tensor {
  return apply('signSte', [x], { gradient: 'adaste', mu, relaxAlpha, cap });
}
