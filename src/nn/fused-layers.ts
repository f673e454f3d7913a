/**
 * Whether LayerNorm, GELU, CausalSelfAttention and (self-attention) MultiheadAttention run as their fused primitives (`layerNorm`,
 * `gelu`, `attention`; the default) or as the tensor-op compositions they replaced. The compositions
 * compute the same functions; the switch exists so that tests and benchmarks can compare the two.
 * @internal
 */
let fused = true;

/** @internal Turns the fused Transformer layer primitives on or off (process-wide); returns the previous setting. */
export function setFusedTransformerLayers(enabled: boolean): boolean {
  const previous = fused;
  fused = enabled;
  return previous;
}

/** @internal Whether the fused Transformer layer primitives are on. */
export function fusedTransformerLayers(): boolean {
  return fused;
}

/** @internal `fn()` with the fused Transformer layer primitives on or off; the previous setting is put back afterwards. */
export function withFusedTransformerLayers<T>(enabled: boolean, fn: () => T): T {
  const previous = setFusedTransformerLayers(enabled);
  try {
    return fn();
  } finally {
    setFusedTransformerLayers(previous);
  }
}
