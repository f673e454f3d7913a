/**
 * The float Transformer LM against PyTorch fp32 at the `seq-inference` shapes (vocabulary 2000,
 * width 80, 2 blocks, 4 heads, MLP 320, tanh GELU, batch 256 × 8 tokens, same weights and ids on
 * both sides): the forward (forwardAll, logits at every position; PyTorch under inference_mode) and
 * the training step (forwardAll, cross-entropy over every position, zero grad, backward, Adam lr 1e-3).
 *
 * For a machine that other jobs keep busy, where the bench sections' quiet rounds never come: with
 * `--threads 1` both sides run one thread, so PyTorch's OpenMP threads cannot spin-wait for a core
 * another process holds and the load slows both sides alike (time slicing). Rounds alternate the
 * order (lowbit first, then PyTorch first, ...); each round times one repeat per side and workload
 * (forward calls for 0.3 s; `--steps` training steps), with the load of other processes around it
 * (/proc/stat busy time minus this process's and the peer's CPU time). Prints the medians over all
 * rounds of wall ms per call, process-CPU ms per call and the ratio PyTorch / lowbit (> 1 = lowbit
 * faster), and the rounds' loads; writes nothing. The two sides' logits (forward) and first loss
 * (training) are compared first.
 *
 * `--path composed`: lowbit as before the fused primitives (layers as tensor-op compositions,
 * cross-entropy as logSoftmax + nllLoss), for before/after ratios.
 *
 * `--gc default` leaves V8's GC policy as it is (the `seq-inference` section's setting) instead of
 * `preferThroughputGc()`; `--release yes` hands each forward's logits back with `releaseTensor`
 * (as the section does since 2026-11-23).
 *
 *   nice -n 10 node --import tsx bench/transformer-float/vs-torch.ts [--threads 1] [--rounds 7] [--steps 3] [--path fused|composed] [--gc throughput|default] [--release no|yes]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad, releaseTensor } from '../../src/autograd/index.ts';
import { nativeInfo } from '../../src/backend/index.ts';
import { Rng, Tensor } from '../../src/tensor/index.ts';
import { flagOr, numberFlag } from '../flags.ts';
import { pathFlag, useNative } from './common.ts';
import { cpuTimes } from '../machine.ts';
import { TorchRnnPeer } from '../peers/torch-rnn.ts';
import { TorchSeqPeer } from '../peers/torch-seq.ts';
import { lowbitTransformerStepper, TRANSFORMER_STEP } from '../sections/rnn.ts';
import { compareLogits, LAYER_NORM_EPS, peerFiles, SEQ_SHAPES, TRANSFORMER_ACTIVATION, transformerLm } from '../seq-inference/models.ts';

const threads = numberFlag('threads', 1, { integer: true, min: 1 });
const rounds = numberFlag('rounds', 7, { integer: true, min: 1 });
const steps = numberFlag('steps', 3, { integer: true, min: 1 });
const only = flagOr('only', 'both');
const path = pathFlag();
if (!['forward', 'train', 'both'].includes(only)) throw new Error(`--only must be forward, train or both, got '${only}'`);
const gc = flagOr('gc', 'throughput');
if (gc !== 'throughput' && gc !== 'default') throw new Error(`--gc must be throughput or default, got '${gc}'`);
const release = flagOr('release', 'no');
if (release !== 'yes' && release !== 'no') throw new Error(`--release must be yes or no, got '${release}'`);
useNative(threads, gc);

const S = SEQ_SHAPES;
const batch = TRANSFORMER_STEP.batch;
const tokens = batch * S.context;
const dir = mkdtempSync(join(tmpdir(), 'lowbit-tf-vs-torch-'));

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Timed {
  ms: number;
  cpuMs: number;
  /** Share of all cores other processes used during the repeat (null without /proc/stat). */
  background: number | null;
}

/** Times `run` (which reports per-call wall / CPU ms and how many calls, and whether the CPU time is the peer's). */
async function timed(run: () => Promise<{ ms: number; cpuMs: number; calls: number; external: boolean }>): Promise<Timed> {
  const a = cpuTimes();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await run();
  const wall = performance.now() - t0;
  const own = process.cpuUsage(c0);
  const b = cpuTimes();
  let background: number | null = null;
  if (a && b && b.total > a.total) {
    const ownMs = (own.user + own.system) / 1000 + (r.external ? r.cpuMs * r.calls : 0);
    background = Math.max(0, (b.busy - a.busy) / (b.total - a.total) - ownMs / (availableParallelism() * wall));
  }
  return { ms: r.ms, cpuMs: r.cpuMs, background };
}

function inProcess(fn: () => void, minCalls: number, seconds: number): Promise<{ ms: number; cpuMs: number; calls: number; external: boolean }> {
  let calls = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  while (calls < minCalls || performance.now() - t0 < seconds * 1000) {
    fn();
    calls++;
  }
  const ms = (performance.now() - t0) / calls;
  const c = process.cpuUsage(c0);
  return Promise.resolve({ ms, cpuMs: (c.user + c.system) / 1000 / calls, calls, external: false });
}

const results = new Map<string, { lowbit: Timed[]; torch: Timed[] }>();
const record = (key: string, side: 'lowbit' | 'torch', t: Timed): void => {
  const e = results.get(key) ?? { lowbit: [], torch: [] };
  e[side].push(t);
  results.set(key, e);
};

try {
  console.log(`lowbit native (${nativeInfo()!.isa}, ${path} path, ${gc} GC policy, logits ${release === "yes" ? "released" : "dropped"}) vs PyTorch fp32, ${threads} thread(s) each; ${rounds} rounds; batch ${batch} × ${S.context} tokens`);
  const seqPeer = only !== 'train' ? await TorchSeqPeer.start(threads) : null;
  const rnnPeer = only !== 'forward' ? await TorchRnnPeer.start(threads) : null;
  if (typeof seqPeer === 'string' || typeof rnnPeer === 'string') {
    console.log(`skip: PyTorch peer missing: ${typeof seqPeer === 'string' ? seqPeer : rnnPeer}`);
    process.exit(0);
  }
  // Forward: the seq-inference model (default init, seed 0; speed does not depend on the weights).
  const model = transformerLm(S, 0);
  model.eval();
  const rng = new Rng(1);
  const ids = new Tensor(Int32Array.from({ length: tokens }, () => Math.floor(rng.uniform() * S.vocab)), [batch, S.context]);
  const reference = Float32Array.from(noGrad(() => model.forwardAll(ids)).data);
  if (seqPeer) {
    await seqPeer.init('fwd', { kind: 'transformer', ...peerFiles(dir, 'fwd', model, ids), batch, seq: S.context, int8: false, warmup: 3, heads: S.tHeads, activation: TRANSFORMER_ACTIVATION, eps: LAYER_NORM_EPS });
    const got = await seqPeer.logits('fwd', join(dir, 'logits.f32'));
    const a = compareLogits(got.data, reference, S.vocab);
    console.log(`forward logits: max |Δ| ${a.maxAbsDiff.toExponential(1)} (max |logit| ${a.maxAbsRef.toFixed(2)}), argmax agreement ${(a.argmaxAgreement * 100).toFixed(1)} %`);
  }
  // Training step: the rnn section's stepper (same weights and data in the peer).
  const stepper = only !== 'forward' ? lowbitTransformerStepper(dir, path === 'fused') : null;
  if (stepper && rnnPeer) {
    const torchLoss = await rnnPeer.init('train', {
      kind: 'transformer', ...stepper.files, batch, seq: S.context, heads: S.tHeads, activation: TRANSFORMER_ACTIVATION, eps: LAYER_NORM_EPS, lr: TRANSFORMER_STEP.lr, warmup: TRANSFORMER_STEP.warmup,
    });
    console.log(`training: first loss lowbit ${stepper.firstLoss.toFixed(6)}, PyTorch ${torchLoss?.toFixed(6)}`);
    for (let i = 0; i < TRANSFORMER_STEP.warmup; i++) stepper.step();
  }
  for (let i = 0; i < 3; i++) noGrad(() => model.forwardAll(ids));

  for (let r = 0; r < rounds; r++) {
    const sides = r % 2 === 0 ? (['lowbit', 'torch'] as const) : (['torch', 'lowbit'] as const);
    for (const side of sides) {
      if (seqPeer) {
        const p = seqPeer;
        record('forward', side, side === 'lowbit'
          ? await timed(() => inProcess(() => { const logits = noGrad(() => model.forwardAll(ids)); if (release === 'yes') releaseTensor(logits); }, 1, 0.3))
          : await timed(async () => ({ ...(await p.repeat('fwd', 0.3)), external: true })));
      }
      if (stepper && rnnPeer) {
        const p = rnnPeer;
        record('train', side, side === 'lowbit'
          ? await timed(() => inProcess(stepper.step, steps, 0))
          : await timed(async () => ({ ...(await p.repeat('train', steps)), calls: steps, external: true })));
      }
    }
    const loads = [...results.values()].flatMap((e) => [e.lowbit.at(-1), e.torch.at(-1)]).map((t) => t?.background).filter((v): v is number => v !== null && v !== undefined);
    console.log(`round ${r + 1}: others used ${loads.length ? `${(median(loads) * 100).toFixed(0)} % median` : '?'} of the cores`);
  }
  console.log(`\n| workload | lowbit ms | PyTorch ms | PyTorch / lowbit (wall) | lowbit CPU ms | PyTorch CPU ms | PyTorch / lowbit (CPU) | lowbit tokens/s | PyTorch tokens/s |`);
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const [key, e] of results) {
    const lw = median(e.lowbit.map((t) => t.ms));
    const tw = median(e.torch.map((t) => t.ms));
    const lc = median(e.lowbit.map((t) => t.cpuMs));
    const tc = median(e.torch.map((t) => t.cpuMs));
    const perRound = e.lowbit.map((t, i) => e.torch[i]!.ms / t.ms);
    console.log(`| ${key} | ${lw.toFixed(2)} | ${tw.toFixed(2)} | ${(tw / lw).toFixed(2)} (per round: median ${median(perRound).toFixed(2)}, ${Math.min(...perRound).toFixed(2)}–${Math.max(...perRound).toFixed(2)}) | ${lc.toFixed(2)} | ${tc.toFixed(2)} | ${(tc / lc).toFixed(2)} | ${Math.round((tokens * 1000) / lw).toLocaleString('en-US')} | ${Math.round((tokens * 1000) / tw).toLocaleString('en-US')} |`);
  }
  await seqPeer?.close();
  await rnnPeer?.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
