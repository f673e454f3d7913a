/**
 * Where the float Transformer LM's time goes on the native backend, at the `seq-inference` bench
 * shapes (vocabulary 2000, width 80, 2 blocks, 4 heads, MLP 320, tanh GELU, batch 256 × 8 tokens):
 *
 *   forward   `noGrad(() => model.forwardAll(ids))`, the bench's timed call;
 *   train     one training step as `lowbit train --model transformer-lm` (objective 'all') takes it:
 *             forwardAll, cross-entropy over every position, zero grad, backward, Adam (lr 1e-3).
 *
 * Every kernel call is timed with `profileOps` (per primitive, per backend that ran it); the rest of
 * the wall time ("outside kernels") is the TypeScript around them (tape, shape checks, allocation,
 * the Adam update when it is not a kernel). The training step's phases (forward + loss, backward,
 * optimizer) are timed separately too. Prints the median ms per call over `--iters` calls after
 * `--warmup` untimed ones; writes nothing.
 *
 * `--path composed` runs the model as before the fused primitives (`setFusedTransformerLayers(false)`:
 * LayerNorm, GELU and attention as tensor-op compositions; cross-entropy as logSoftmax + nllLoss);
 * the default `fused` is the current path (fused layers; the every-position objective's fused
 * cross-entropy).
 *
 *   nice -n 10 node --import tsx bench/transformer-float/profile.ts [--iters 20] [--threads 2] [--mode forward|train|both] [--path fused|composed]
 */
import { noGrad } from '../../src/autograd/index.ts';
import { nativeInfo } from '../../src/backend/index.ts';
import { profileOps, type OpProfile } from '../../src/backend/registry.ts';
import { setFusedTransformerLayers } from '../../src/nn/fused-layers.ts';
import { Adam } from '../../src/optim/index.ts';
import { crossEntropy, reshape } from '../../src/tensor/index.ts';
import { flagOr, numberFlag } from '../flags.ts';
import { benchTransformer, pathFlag, useNative } from './common.ts';

const iters = numberFlag('iters', 20, { integer: true, min: 1 });
const warmup = numberFlag('warmup', 3, { integer: true, min: 0 });
const threads = numberFlag('threads', 2, { integer: true, min: 1 });
const mode = flagOr('mode', 'both');
const path = pathFlag();
if (!['forward', 'train', 'both'].includes(mode)) throw new Error(`--mode must be forward, train or both, got '${mode}'`);
useNative(threads);

const { model, ids, targets, shape: { V, C, E, F, N } } = benchTransformer();

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Runs `call` warmup + iters times; returns the median wall ms and the median ms / calls per kernel key. */
function profiled(call: () => Record<string, number>): { wall: number; phases: Map<string, number>; ops: Map<string, { ms: number; calls: number }> } {
  for (let i = 0; i < warmup; i++) call();
  const walls: number[] = [];
  const phases = new Map<string, number[]>();
  const ops = new Map<string, { ms: number[]; calls: number }>();
  for (let i = 0; i < iters; i++) {
    let t = 0;
    let phase: Record<string, number> = {};
    const profile: OpProfile = profileOps(() => {
      const t0 = performance.now();
      phase = call();
      t = performance.now() - t0;
    });
    walls.push(t);
    for (const [k, v] of Object.entries(phase)) phases.set(k, [...(phases.get(k) ?? []), v]);
    for (const [k, v] of profile) {
      const e = ops.get(k) ?? { ms: new Array<number>(i).fill(0), calls: v.calls };
      e.ms.push(v.ms);
      ops.set(k, e);
    }
    for (const e of ops.values()) while (e.ms.length < i + 1) e.ms.push(0);
  }
  return {
    wall: median(walls),
    phases: new Map([...phases].map(([k, v]) => [k, median(v)])),
    ops: new Map([...ops].map(([k, v]) => [k, { ms: median(v.ms), calls: v.calls }])),
  };
}

function report(title: string, tokens: number, r: ReturnType<typeof profiled>): void {
  console.log(`\n## ${title}: ${r.wall.toFixed(2)} ms per call (median of ${iters}), ${Math.round((tokens * 1000) / r.wall).toLocaleString('en-US')} tokens/s`);
  for (const [k, v] of r.phases) console.log(`   phase ${k.padEnd(12)} ${v.toFixed(2)} ms`);
  const rows = [...r.ops].sort((a, b) => b[1].ms - a[1].ms);
  const inKernels = rows.reduce((p, [, v]) => p + v.ms, 0);
  console.log('| kernel | calls | ms | share of wall |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const [k, v] of rows) if (v.ms >= 0.005 * r.wall) console.log(`| ${k} | ${v.calls} | ${v.ms.toFixed(2)} | ${((100 * v.ms) / r.wall).toFixed(1)} % |`);
  const small = rows.filter(([, v]) => v.ms < 0.005 * r.wall);
  if (small.length) console.log(`| ${small.length} others | ${small.reduce((p, [, v]) => p + v.calls, 0)} | ${small.reduce((p, [, v]) => p + v.ms, 0).toFixed(2)} | |`);
  console.log(`| outside kernels | | ${(r.wall - inKernels).toFixed(2)} | ${((100 * (r.wall - inKernels)) / r.wall).toFixed(1)} % |`);
}

console.log(`${path} path, native backend, ${threads} threads, ${nativeInfo()?.isa ?? '?'}; batch ${N} × ${C} tokens, V ${V}, E ${E}, MLP ${F}, 2 blocks, 4 heads, tanh GELU`);
if (mode !== 'train') {
  model.eval();
  report('forward (noGrad forwardAll)', N * C, profiled(() => {
    noGrad(() => model.forwardAll(ids));
    return {};
  }));
}
if (mode !== 'forward') {
  model.train();
  const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
  report('training step (forwardAll + cross-entropy over every position + backward + Adam)', N * C, profiled(() => {
    const t0 = performance.now();
    const logits = model.forwardAll(ids);
    const loss = crossEntropy(reshape(logits, [N * C, V]), targets, 'mean', { fused: path === 'fused' });
    const t1 = performance.now();
    optimizer.zeroGrad();
    loss.backward();
    const t2 = performance.now();
    optimizer.step();
    const t3 = performance.now();
    return { forward: t1 - t0, backward: t2 - t1, optimizer: t3 - t2 };
  }));
}
