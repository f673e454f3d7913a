import type { Tensor } from '../tensor/tensor.ts';
import { releaseOutput } from '../backend/recycle.ts';
import { isGradEnabled } from './engine.ts';

/**
 * Hands the buffer of `t` back for reuse by later kernel outputs of the same size (native
 * backend), while it is still in cache and before the garbage collector has to find it: for
 * no-grad inference loops that drop each result, such as the logits of a batch once they are
 * scored. The caller promises not to read `t`, or any view of it, again.
 *
 * Declines (returns false, nothing changes) a tensor that requires grad or was recorded in a
 * graph, a view or part of a larger buffer, a buffer under 4096 elements or not made by a kernel,
 * and one already handed back.
 */
export function releaseTensor(t: Tensor): boolean {
  if (t.requiresGrad || t.node !== null) return false;
  return releaseOutput(t.data);
}

let intermediates = true;

/** Internal (tests, before/after benches): turns `releaseIntermediates` on (default) or off; returns the previous setting. */
export function setReleaseIntermediates(on: boolean): boolean {
  const previous = intermediates;
  intermediates = on;
  return previous;
}

/**
 * Internal: runs `fn` with `releaseIntermediates` off (then restores the setting): for passes that
 * keep references to the tensors a forward makes (graph capture, layer-input capture).
 */
export function keepingIntermediates<T>(fn: () => T): T {
  const previous = setReleaseIntermediates(false);
  try {
    return fn();
  } finally {
    setReleaseIntermediates(previous);
  }
}

/**
 * Internal (layers' no-grad forward): `releaseTensor` for intermediates a layer made and no longer
 * needs, only while grad mode is off, skipping any that shares its buffer with a tensor in `keep`
 * (the layer's input and result).
 */
export function releaseIntermediates(tensors: readonly Tensor[], keep: readonly Tensor[]): void {
  if (!intermediates || isGradEnabled()) return;
  for (const t of tensors) {
    if (keep.some((k) => k.data.buffer === t.data.buffer)) continue;
    releaseTensor(t);
  }
}

/**
 * Internal (models' forward): `x` through `layers` one after the other (what a Sequential does),
 * handing each layer's input -- `x` included -- back to the pool once the next layer has made its
 * output (`releaseIntermediates`: under no-grad only). `x` must be the caller's own intermediate.
 */
export function chainReleasing(layers: Iterable<{ forward(t: Tensor): Tensor }>, x: Tensor): Tensor {
  let y = x;
  for (const layer of layers) {
    const next = layer.forward(y);
    releaseIntermediates([y], [next]);
    y = next;
  }
  return y;
}
