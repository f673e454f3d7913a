/** Gradient clipping by global norm, as PyTorch's `torch.nn.utils.clip_grad_norm_`. */
import type { Tensor } from '../tensor/index.ts';

/**
 * Scales the gradients of `parameters` in place so that their global p-norm (all gradients
 * taken as one vector) is at most `maxNorm`; returns the norm before clipping. Parameters
 * without a gradient are skipped. As PyTorch, the scale is maxNorm / (norm + 1e-6), applied only
 * when it is below 1; `normType` is 2 (default), any p ≥ 1, or Infinity (largest |g|).
 * A non-finite norm (a NaN or infinite gradient) is returned without touching the gradients, or
 * throws with `errorIfNonfinite: true`.
 */
export function clipGradNorm(
  parameters: Iterable<Tensor>, maxNorm: number,
  options: { normType?: number; errorIfNonfinite?: boolean } = {},
): number {
  const p = options.normType ?? 2;
  if (!(maxNorm >= 0) || !Number.isFinite(maxNorm)) throw new RangeError(`clipGradNorm: maxNorm must be a finite number >= 0, got ${maxNorm}`);
  if (!(p >= 1)) throw new RangeError(`clipGradNorm: normType must be >= 1 or Infinity, got ${p}`);
  const grads = [...parameters].flatMap((t) => (t.grad ? [t.grad] : []));
  let norm = 0;
  if (p === Infinity) {
    for (const g of grads) for (const v of g.data) norm = Math.max(norm, Math.abs(v));
    // Math.max drops NaN only when it is the first argument; check explicitly.
    for (const g of grads) for (const v of g.data) if (Number.isNaN(v)) norm = NaN;
  } else {
    let sum = 0;
    for (const g of grads) for (const v of g.data) sum += Math.abs(v) ** p;
    norm = sum ** (1 / p);
  }
  if (!Number.isFinite(norm)) {
    if (options.errorIfNonfinite) throw new RangeError(`clipGradNorm: the total gradient norm is ${norm}`);
    return norm;
  }
  const scale = maxNorm / (norm + 1e-6);
  if (scale < 1) for (const g of grads) for (let i = 0; i < g.data.length; i++) g.data[i] = g.data[i]! * scale;
  return norm;
}
