/**
 * The inference path of {@link TransformerLM.forwardCached}: when no tape is recorded, the native
 * backend is active, every weight is float32 and the model is the plain pre-LN TransformerLM (no
 * quantized or hooked layer, no operand quantizers, no dropout in training mode, no autocast), one
 * native call (native/decode-step.cc floatTfDecode) runs the whole step — embedding, every block
 * (LayerNorm, fused Q/K/V, the new keys and values into the cache buffers, decode attention, output
 * projection, residual, LayerNorm, MLP, residual), lnFinal and the head — with the intermediates in
 * native scratch instead of ~20 primitive calls and tensors per block. Anything else returns null
 * and the composed path runs (it stays the specification; transformer-decode.test.ts compares them).
 *
 * Why each case falls back: a layer replaced by QAT / PTQ (a subclass of Linear, or a patched
 * forward) computes something else than x·Wᵀ + b; operand quantizers act between the attention
 * matmuls; training-mode dropout draws random masks; a tape needs the intermediates; float64 and the
 * wasm / reference backends have no such kernel (wasm: composed path).
 * @internal used by nn/models/transformer-lm.ts only.
 */
import { isGradEnabled } from '../../autograd/engine.ts';
import { nativeAddon } from '../../backend/native/index.ts';
import { getBackend } from '../../backend/registry.ts';
import { autocastFormat } from '../../lowp/context.ts';
import { Tensor, zeros } from '../../tensor/index.ts';
import { GELU, ReLU } from '../activation.ts';
import { Embedding } from '../embedding.ts';
import { fusedTransformerLayers } from '../fused-layers.ts';
import { plain } from '../fusion.ts';
import { LayerNorm } from '../layernorm.ts';
import { Linear } from '../linear.ts';
import type { Module, TensorModule } from '../module.ts';
import type { AttentionCache } from './transformer-lm.ts';

let enabled = true;

/**
 * Turns the one-call decoding step off (false) or back on; returns the previous setting.
 * @internal for benchmarks and tests that compare it with the composed path.
 */
export function setFusedDecodeStep(on: boolean): boolean {
  const previous = enabled;
  enabled = on;
  return previous;
}

/** The layers of one pre-LN block, as TransformerBlock holds them. */
export interface DecodeBlockLayers {
  readonly ln1: Module & TensorModule;
  readonly qkv: Module & TensorModule;
  readonly proj: Module & TensorModule;
  readonly ln2: Module & TensorModule;
  readonly fc1: Module & TensorModule;
  readonly act: Module & TensorModule;
  readonly fc2: Module & TensorModule;
  /** The attention layer has operand quantizers (then the step is not fused). */
  readonly operandQuantized: boolean;
}

/** What the step reads of a TransformerLM. */
export interface DecodeModel {
  readonly embedDim: number;
  readonly numHeads: number;
  readonly vocabSize: number;
  readonly maxContext: number;
  readonly tokenEmbedding: Module & TensorModule;
  readonly positionEmbedding: Module & TensorModule;
  readonly lnFinal: Module & TensorModule;
  readonly head: (Module & TensorModule) | null;
}

const ACTIVATION_CODES = { gelu: 0, 'gelu-tanh': 1, relu: 2 } as const;

function f32(t: Tensor | null): Float32Array | null {
  return t !== null && t.data instanceof Float32Array ? t.data : null;
}

/** A plain affine LayerNorm over [E] in float32: [weight, bias, eps], else null. */
function layerNormOf(m: Module & TensorModule, e: number): [Float32Array, Float32Array, number] | null {
  if (!plain(m, LayerNorm) || m.normalizedShape.length !== 1 || m.normalizedShape[0] !== e) return null;
  const w = f32(m.weight);
  const b = f32(m.bias);
  return w && b ? [w, b, m.eps] : null;
}

/** A plain Linear(inFeatures → out) in float32: [weight, bias | null], else null. */
function linearOf(m: Module & TensorModule, inFeatures: number, out: number): [Float32Array, Float32Array | null] | null {
  if (!plain(m, Linear) || m.inFeatures !== inFeatures || m.outFeatures !== out) return null;
  const w = f32(m.weight);
  const b = m.bias === null ? null : f32(m.bias);
  if (!w || (m.bias !== null && !b)) return null;
  return [w, b];
}

function activationOf(m: Module & TensorModule): number | null {
  if (plain(m, GELU)) return m.approximate === 'tanh' ? ACTIVATION_CODES['gelu-tanh'] : ACTIVATION_CODES.gelu;
  return plain(m, ReLU) ? ACTIVATION_CODES.relu : null;
}

/**
 * Logits [N, S, V] of ids [N, S] at positions `past`.. after the ones in `layers` (the caches of
 * the blocks, each holding `past` positions; their buffers are allocated here when still null),
 * in one native call; null when the composed path has to run (see the module comment). The
 * caller checked ids (int32 [N, S]), the positions against maxContext and the layer count, and
 * updates the cache lengths on success. `training` and `dropout` are the model's.
 */
export function fusedDecodeStep(model: DecodeModel, blocks: readonly DecodeBlockLayers[], ids: Tensor, layers: readonly AttentionCache[], past: number, dropoutActive: boolean): Tensor | null {
  if (!enabled || dropoutActive || !fusedTransformerLayers() || isGradEnabled() || getBackend() !== 'native' || autocastFormat() !== null) return null;
  const addon = nativeAddon();
  if (!addon?.floatTfDecode) return null;
  const { embedDim: e, vocabSize: v, maxContext, numHeads } = model;
  const [batch, steps] = ids.shape as [number, number];
  if (batch < 1 || steps < 1 || !(ids.data instanceof Int32Array)) return null;
  const tok = model.tokenEmbedding;
  const pos = model.positionEmbedding;
  if (!plain(tok, Embedding) || !plain(pos, Embedding)) return null;
  const tokens = f32(tok.weight);
  const positions = f32(pos.weight);
  if (!tokens || !positions || tokens.length !== v * e || positions.length !== maxContext * e) return null;
  const final = layerNormOf(model.lnFinal, e);
  const head = model.head === null ? [tokens, null] as const : linearOf(model.head, e, v);
  if (!final || !head) return null;
  if (blocks.length !== layers.length || blocks.length === 0) return null;
  const capacity = layers[0]!.capacity;
  if (capacity > maxContext || past + steps > capacity) return null;
  let mlpDim = 0;
  let activation: number | null = null;
  const eps = new Float32Array(2 * blocks.length + 1);
  const args: (Float32Array | null)[][] = [];
  for (const [i, block] of blocks.entries()) {
    const cache = layers[i]!;
    if (block.operandQuantized || cache.capacity !== capacity || cache.length !== past) return null;
    const fc1 = block.fc1 as Module & TensorModule & { outFeatures?: number };
    const width = typeof fc1.outFeatures === 'number' ? fc1.outFeatures : 0;
    if (i === 0) mlpDim = width;
    const act = activationOf(block.act);
    if (i === 0) activation = act;
    const ln1 = layerNormOf(block.ln1, e);
    const ln2 = layerNormOf(block.ln2, e);
    const qkv = linearOf(block.qkv, e, 3 * e);
    const proj = linearOf(block.proj, e, e);
    const up = linearOf(block.fc1, e, mlpDim);
    const down = linearOf(block.fc2, mlpDim, e);
    if (!ln1 || !ln2 || !qkv || !proj || !up || !down || width !== mlpDim || act === null || act !== activation) return null;
    for (const buffer of [cache.keys, cache.values]) {
      if (buffer && (!(buffer.data instanceof Float32Array) || buffer.shape[0] !== batch || buffer.shape[1] !== capacity || buffer.shape[2] !== e)) return null;
    }
    eps[2 * i] = ln1[2];
    eps[2 * i + 1] = ln2[2];
    args.push([ln1[0], ln1[1], qkv[0], qkv[1], proj[0], proj[1], ln2[0], ln2[1], up[0], up[1], down[0], down[1]]);
  }
  eps[2 * blocks.length] = final[2];
  // Every check passed: allocate the cache buffers still missing (as the composed path does).
  for (const [i, cache] of layers.entries()) {
    cache.keys ??= zeros([batch, capacity, e], 'float32');
    cache.values ??= zeros([batch, capacity, e], 'float32');
    args[i]!.push(cache.keys.data as Float32Array, cache.values.data as Float32Array);
  }
  const dims = Int32Array.from([batch, steps, past, capacity, e, numHeads, v, maxContext, blocks.length, mlpDim, activation!]);
  const logits = new Float32Array(batch * steps * v);
  addon.floatTfDecode(dims, eps, ids.data, [tokens, positions], args, [final[0], final[1], head[0], head[1]], logits);
  for (const cache of layers) cache.length = past + steps;
  return new Tensor(logits, [batch, steps, v]);
}
