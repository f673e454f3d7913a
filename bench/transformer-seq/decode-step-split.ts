/**
 * Where a batch-1 decoding token's time goes with the one-call step (docs/lm.md "One native call
 * per step"): CPU µs per token of `nn.generate` (64 tokens after an 8-id prompt), of 63
 * `forwardCached` steps alone, and of the native `floatTfDecode` call alone at 40 cached positions
 * (arguments prepared once), on one pool thread; medians of 30 repeats, `process.cpuUsage`; and the
 * JS side of forwardCached alone (the native call stubbed, wall time).
 *
 *   nice -n 10 node --import tsx bench/transformer-seq/decode-step-split.ts
 */
import { loadavg } from 'node:os';
import { noGrad } from '../../src/autograd/engine.ts';
import { setNativeThreads } from '../../src/backend/index.ts';
import { nativeAddon } from '../../src/backend/native/index.ts';
import { generate, TransformerBlock } from '../../src/nn/index.ts';
import { Tensor } from '../../src/tensor/index.ts';
import { median } from '../lib.ts';
import { SEQ_SHAPES, transformerLm } from '../seq-inference/models.ts';

const addon = nativeAddon();
if (!addon?.floatTfDecode) throw new Error('decode-step-split: the native addon with floatTfDecode is not loaded');
const model = transformerLm({ ...SEQ_SHAPES, context: 72 }).eval();
setNativeThreads(1);
const cpuMicros = (): number => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
const prompt = [1, 2, 3, 4, 5, 6, 7, 8];
const whole: number[] = [];
const steps: number[] = [];
for (let r = 0; r < 30; r++) {
  let start = cpuMicros();
  generate(model, prompt, { tokens: 64, temperature: 0 });
  whole.push((cpuMicros() - start) / 64);
  const cache = model.createCache();
  noGrad(() => model.forwardCached(new Tensor(Int32Array.from(prompt), [1, prompt.length]), cache));
  start = cpuMicros();
  for (let i = 0; i < 63; i++) noGrad(() => model.forwardCached(new Tensor(Int32Array.of(i % 100), [1, 1]), cache));
  steps.push((cpuMicros() - start) / 63);
}

const past = 40;
const cache = model.createCache();
noGrad(() => model.forwardCached(new Tensor(Int32Array.from({ length: past }, (_, i) => i), [1, past]), cache));
const blocks = model.blocks.children().map((b, i) => {
  if (!(b instanceof TransformerBlock)) throw new Error('decode-step-split: not a TransformerBlock');
  const f32 = (m: unknown, key: 'weight' | 'bias'): Float32Array => (m as Record<string, Tensor>)[key]!.data as Float32Array;
  const layer = cache.layers[i]!;
  return [f32(b.ln1, 'weight'), f32(b.ln1, 'bias'), f32(b.attn.qkv, 'weight'), f32(b.attn.qkv, 'bias'), f32(b.attn.proj, 'weight'), f32(b.attn.proj, 'bias'),
    f32(b.ln2, 'weight'), f32(b.ln2, 'bias'), f32(b.fc1, 'weight'), f32(b.fc1, 'bias'), f32(b.fc2, 'weight'), f32(b.fc2, 'bias'),
    layer.keys!.data as Float32Array, layer.values!.data as Float32Array];
});
const lnFinal = model.lnFinal as unknown as Record<'weight' | 'bias', Tensor>;
const head = model.head as unknown as Record<'weight' | 'bias', Tensor>;
const tokens = model.tokenEmbedding.weight.data as Float32Array;
const positions = (model.positionEmbedding as unknown as Record<'weight', Tensor>).weight.data as Float32Array;
const { tEmbed: e, tMlp: f, vocab: v, tHeads: heads } = SEQ_SHAPES;
const dims = Int32Array.from([1, 1, past, 72, e, heads, v, 72, blocks.length, f, 1]);
const eps = new Float32Array(2 * blocks.length + 1).fill(1e-5);
const logits = new Float32Array(v);
const final = [lnFinal.weight.data as Float32Array, lnFinal.bias.data as Float32Array, head.weight.data as Float32Array, head.bias.data as Float32Array];
const native: number[] = [];
for (let r = 0; r < 30; r++) {
  const start = cpuMicros();
  for (let i = 0; i < 200; i++) addon.floatTfDecode(dims, eps, Int32Array.of(5), [tokens, positions], blocks, final, logits);
  native.push((cpuMicros() - start) / 200);
}
// The JS side of forwardCached alone: the same 63 steps with the native call replaced by a no-op
// (wall µs: the process CPU clock is too coarse for ~4 µs), then the addon's function put back.
const real = addon.floatTfDecode;
const wrapper: number[] = [];
addon.floatTfDecode = () => undefined;
try {
  for (let r = 0; r < 300; r++) {
    const stubCache = model.createCache();
    noGrad(() => model.forwardCached(new Tensor(Int32Array.from(prompt), [1, prompt.length]), stubCache));
    const start = performance.now();
    for (let i = 0; i < 63; i++) noGrad(() => model.forwardCached(new Tensor(Int32Array.of(i % 100), [1, 1]), stubCache));
    wrapper.push(((performance.now() - start) * 1000) / 63);
  }
} finally {
  addon.floatTfDecode = real;
}
console.log(`CPU µs per token, 1 thread: generate ${median(whole).toFixed(1)}, forwardCached ${median(steps).toFixed(1)}, floatTfDecode alone (past ${past}) ${median(native).toFixed(1)}; ` +
  `forwardCached with the native call stubbed ${median(wrapper).toFixed(2)} wall µs; load average (1 min) ${loadavg()[0]!.toFixed(2)}`);
