/**
 * Setup shared by the float Transformer benches (profile.ts, vs-torch.ts, fused-linear.ts): the
 * native backend with N pool threads and the training jobs' GC policy (or a skip line and exit 0
 * when the addon is missing), the `--path fused|composed` switch, and the `seq-inference` shapes'
 * model with fixed random ids and targets.
 */
import { nativeInfo, setBackend, setNativeThreads } from '../../src/backend/index.ts';
import { TransformerLM } from '../../src/nn/index.ts';
import { setFusedTransformerLayers } from '../../src/nn/fused-layers.ts';
import { Rng, Tensor } from '../../src/tensor/index.ts';
import { preferThroughputGc } from '../../src/train/gc.ts';
import { flagOr } from '../flags.ts';

/**
 * Native backend on `threads` pool threads with the throughput GC policy (or V8's default with
 * `gc: 'default'`, as the `seq-inference` section runs); exits 0 with a skip line without the addon.
 */
export function useNative(threads: number, gc: 'throughput' | 'default' = 'throughput'): void {
  if (!nativeInfo()) {
    console.log('skip: the native addon is not loaded');
    process.exit(0);
  }
  setBackend('native');
  setNativeThreads(threads);
  if (gc === 'throughput') preferThroughputGc();
}

/** `--path fused` (default: the fused layer primitives) or `composed` (the tensor-op compositions they replaced); applied. */
export function pathFlag(): 'fused' | 'composed' {
  const path = flagOr('path', 'fused');
  if (path !== 'fused' && path !== 'composed') throw new Error(`--path must be fused or composed, got '${path}'`);
  setFusedTransformerLayers(path === 'fused');
  return path;
}

/** The bench model (vocabulary 2000, context 8, width 80, 2 blocks, 4 heads, MLP 320, tanh GELU; seed 0), ids [256, 8] and targets [2048] (seed 1). */
export function benchTransformer(): { model: TransformerLM; ids: Tensor; targets: Tensor; shape: { V: number; C: number; E: number; F: number; N: number } } {
  const [V, C, E, F, N] = [2000, 8, 80, 320, 256];
  const model = new TransformerLM({ vocabSize: V, maxContext: C, embedDim: E, numLayers: 2, numHeads: 4, mlpDim: F, activation: 'gelu-tanh', rng: new Rng(0) });
  const rng = new Rng(1);
  const ids = new Tensor(Int32Array.from({ length: N * C }, () => Math.floor(rng.uniform() * V)), [N, C]);
  const targets = new Tensor(Int32Array.from({ length: N * C }, () => Math.floor(rng.uniform() * V)), [N * C]);
  return { model, ids, targets, shape: { V, C, E, F, N } };
}
