/**
 * The gradients of the fused Transformer primitives (layerNorm, gelu, attention) composed of
 * differentiable tensor ops: what their rules run when the backward pass is itself recorded
 * (createGraph), so that double backward works. Same formulas as the backward primitives
 * (backend/reference/transformer.ts).
 * @internal
 */
import type { PrimitiveAttrs } from '../backend/primitives.ts';
import { zeros, type Tensor } from '../tensor/tensor.ts';
import * as o from '../tensor/ops.ts';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const GELU_TANH_A = 0.044715;

/** GELU'(x) as tensor ops ('none': Φ(x) + x·φ(x); 'tanh': ½(1 + t) + ½x(1 − t²)·u' with t = tanh(u)). */
export function geluDerivativeComposed(x: Tensor, approximate: 'none' | 'tanh'): Tensor {
  if (approximate === 'tanh') {
    const x2 = o.mul(x, x);
    const t = o.tanh(o.mul(o.add(x, o.mul(o.mul(x2, x), GELU_TANH_A)), SQRT_2_OVER_PI));
    const du = o.mul(o.add(o.mul(x2, 3 * GELU_TANH_A), 1), SQRT_2_OVER_PI);
    return o.add(o.mul(o.add(t, 1), 0.5), o.mul(o.mul(o.mul(x, 0.5), o.sub(1, o.mul(t, t))), du));
  }
  const cdf = o.mul(o.add(o.erf(o.mul(x, Math.SQRT1_2)), 1), 0.5);
  const pdf = o.mul(o.exp(o.mul(o.mul(x, x), -0.5)), INV_SQRT_2PI);
  return o.add(cdf, o.mul(x, pdf));
}

/** layerNorm's gradients [x, weight, bias] of Σ g⊙y, recorded. */
export function layerNormBackwardComposed(g: Tensor, x: Tensor, weight: Tensor, eps: number): Tensor[] {
  const width = weight.size;
  const rows = width === 0 ? 0 : x.size / width;
  const x2 = o.reshape(x, [rows, width]);
  const g2 = o.reshape(g, [rows, width]);
  const w = o.reshape(weight, [width]);
  const centered = o.sub(x2, o.mean(x2, 1, true));
  const rstd = o.div(1, o.sqrt(o.add(o.mean(o.mul(centered, centered), 1, true), eps)));
  const xhat = o.mul(centered, rstd);
  const gh = o.mul(g2, w);
  const dx = o.mul(rstd, o.sub(o.sub(gh, o.mean(gh, 1, true)), o.mul(xhat, o.mean(o.mul(gh, xhat), 1, true))));
  return [o.reshape(dx, x.shape), o.reshape(o.sum(o.mul(g2, xhat), 0), weight.shape), o.reshape(o.sum(g2, 0), weight.shape)];
}

/** qkv [N, L, 3E] split into Q, K, V as [N, heads, L, d]. */
function splitHeads(qkv: Tensor, heads: number): [Tensor, Tensor, Tensor] {
  const [n, l, e3] = qkv.shape as [number, number, number];
  const e = e3 / 3;
  const part = (i: number): Tensor => o.transpose(o.reshape(o.narrow(qkv, 2, i * e, e), [n, l, heads, e / heads]), [0, 2, 1, 3]);
  return [part(0), part(1), part(2)];
}

/**
 * attention(qkv) composed of tensor ops (the specification in ops form; the attention rule
 * differentiates it when the backward pass is recorded). The causal mask is added as 0 / −∞.
 */
export function attentionComposed(qkv: Tensor, { heads, causal }: PrimitiveAttrs['attention']): Tensor {
  const [n, l, e3] = qkv.shape as [number, number, number];
  const [q, k, v] = splitHeads(qkv, heads);
  let scores = o.mul(o.matmul(q, k, { transB: true }), 1 / Math.sqrt(e3 / 3 / heads));
  if (causal) scores = o.add(scores, causalMaskTensor(l, qkv));
  const context = o.matmul(o.softmax(scores, -1), v);
  return o.reshape(o.transpose(context, [0, 2, 1, 3]), [n, l, e3 / 3]);
}

function causalMaskTensor(l: number, like: Tensor): Tensor {
  const mask = zeros([l, l], like.dtype === 'float64' ? 'float64' : 'float32');
  for (let i = 0; i < l; i++) for (let j = i + 1; j < l; j++) mask.data[i * l + j] = -Infinity;
  return mask;
}

/** attention's gradient with respect to qkv of Σ g⊙attention(qkv), recorded: dQ, dK, dV merged back to [N, L, 3E]. */
export function attentionBackwardComposed(g: Tensor, qkv: Tensor, attrs: PrimitiveAttrs['attention']): Tensor {
  const { heads, causal } = attrs;
  const [n, l, e3] = qkv.shape as [number, number, number];
  const e = e3 / 3;
  const d = e / heads;
  const scale = 1 / Math.sqrt(d);
  const [q, k, v] = splitHeads(qkv, heads);
  let scores = o.mul(o.matmul(q, k, { transB: true }), scale);
  if (causal) scores = o.add(scores, causalMaskTensor(l, qkv));
  const a = o.softmax(scores, -1);
  const gh = o.transpose(o.reshape(g, [n, l, heads, d]), [0, 2, 1, 3]);
  const dv = o.matmul(a, gh, { transA: true });
  const da = o.matmul(gh, v, { transB: true });
  const ds = o.mul(a, o.sub(da, o.sum(o.mul(da, a), -1, true)));
  const dq = o.mul(o.matmul(ds, k), scale);
  const dk = o.mul(o.matmul(ds, q, { transA: true }), scale);
  const merge = (t: Tensor): Tensor => o.reshape(o.transpose(t, [0, 2, 1, 3]), [n, l, e]);
  return o.concat([merge(dq), merge(dk), merge(dv)], 2);
}

/** crossEntropyLoss's gradient with respect to the logits [N, C], g[n]·(softmax(row n) − onehot(target n)), recorded. */
export function crossEntropyBackwardComposed(g: Tensor, logits: Tensor, targets: Tensor): Tensor {
  const [rows, classes] = logits.shape as [number, number];
  const onehot = zeros([rows, classes], logits.dtype === 'float64' ? 'float64' : 'float32');
  for (let n = 0; n < rows; n++) onehot.data[n * classes + targets.data[n]!] = 1;
  return o.mul(o.reshape(g, [rows, 1]), o.sub(o.softmax(logits, 1), onehot));
}
