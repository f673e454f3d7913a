/**
 * Per-stage profile of the float next-word LM forward (NextWordModel.forward under noGrad, native
 * backend) at the seq-inference shape (Embedding 64 → LSTM/GRU 128 → Linear 2000, batch 256 × 8
 * words): the training path's stages (the forward lowbit ran before the inference path: input
 * projection GEMM, lstmSequence / gruSequence with its saved gate activations, last-step slice, head
 * matmul, bias add) and the inference path's (rnn-inference.ts: one native call for projection +
 * recurrence returning h_N only, head SGEMM from the bias), interleaved, with each stage's FLOP rate
 * against the measured FMA peak of the same thread count.
 *
 *   nice -n 10 node --import tsx bench/seq-inference/float-profile.ts [--rounds 9] [--calls 30] [--threads N (default: the pool's)]
 */
import { loadavg } from 'node:os';
import { noGrad } from '../../src/autograd/index.ts';
import { fmaPeakGflops, nativeInfo, setNativeThreads } from '../../src/backend/index.ts';
import { finalHiddenInference, lastStepLinearInference, setRecurrentInference } from '../../src/nn/rnn-inference.ts';
import { add, gruSequence, linear, lstmSequence, matmul, narrow, randint, reshape, Rng, zeros } from '../../src/tensor/index.ts';
import { numberFlag } from '../flags.ts';
import { withBackend } from '../workloads.ts';
import { rnnLm, SEQ_SHAPES } from './models.ts';

const rounds = numberFlag('rounds', 9, { integer: true, min: 1 });
const calls = numberFlag('calls', 30, { integer: true, min: 1 });
const threads = numberFlag('threads', 0, { integer: true, min: 0 });
const BATCH = 256;
const S = SEQ_SHAPES;
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

await withBackend('native', async () => {
  if (threads > 0) setNativeThreads(threads);
  const pool = nativeInfo()!.threads;
  const ids = randint(S.vocab, [BATCH, S.context], { rng: new Rng(1) });
  const L = S.context, E = S.embed, H = S.hidden, V = S.vocab;
  const peak = Math.max(...[0, 1, 2].map(() => fmaPeakGflops(pool, 0.1)));
  console.log(`native ${JSON.stringify({ ...nativeInfo(), features: undefined })}, FMA peak ${peak.toFixed(0)} GFLOP/s on ${pool} thread(s), load ${loadavg()[0]!.toFixed(2)}`);
  for (const cell of ['lstm', 'gru'] as const) {
    const G = cell === 'lstm' ? 4 : 3;
    const model = rnnLm(cell, S);
    model.eval();
    const [wIh, wHh, bIh, bHh] = model.rnn.parameters();
    const weights = { weightIh: wIh!, weightHh: wHh!, biasIh: bIh!, biasHh: bHh! };
    const head = model.head.parameters();
    noGrad(() => {
      const x = model.embedding.forward(ids);
      const gates = linear(x, wIh!);
      const h0 = zeros([BATCH, H]);
      const bias = add(bIh!, bHh!);
      const seq = (): ReturnType<typeof lstmSequence> => (cell === 'lstm' ? lstmSequence(gates, wHh!, bias, h0, h0, { batchFirst: true }) : gruSequence(gates, wHh!, bIh!, bHh!, h0, { batchFirst: true }));
      const out = reshape(narrow(seq(), 0, 0, 1), [BATCH, L, H]);
      const last = reshape(narrow(out, 1, L - 1, 1), [BATCH, H]);
      const logits = matmul(last, head[0]!, { transB: true });
      const hN = finalHiddenInference(cell, x, weights, cell === 'lstm' ? [h0, h0] : [h0], { batchFirst: true })!;
      const projection = 2 * BATCH * L * E * G * H, recurrent = 2 * BATCH * L * H * G * H, headFlops = 2 * BATCH * H * V;
      const stages: [string, () => unknown, number][] = [
        ['training path: forward in all', () => { setRecurrentInference(false); model.forward(ids); setRecurrentInference(true); }, projection + recurrent + headFlops],
        ['  embedding gather', () => model.embedding.forward(ids), 0],
        ['  input projection GEMM', () => linear(x, wIh!), projection],
        [`  ${cell}Sequence (saves gates)`, seq, recurrent],
        ['  last-step slice', () => reshape(narrow(out, 1, L - 1, 1), [BATCH, H]), 0],
        ['  head matmul 256x2000x128', () => matmul(last, head[0]!, { transB: true }), headFlops],
        ['  head bias add', () => add(logits, head[1]!), 0],
        ['inference path: forward in all', () => model.forward(ids), projection + recurrent + headFlops],
        ['  projection + recurrence (h_N only)', () => finalHiddenInference(cell, x, weights, cell === 'lstm' ? [h0, h0] : [h0], { batchFirst: true }), projection + recurrent],
        ['  head SGEMM from the bias', () => lastStepLinearInference(hN, head[0]!, head[1]!), headFlops],
      ];
      const res = new Map<string, number[]>();
      for (let r = 0; r < rounds; r++) {
        for (const [name, fn] of r % 2 ? [...stages].reverse() : stages) {
          fn();
          const t0 = performance.now();
          for (let i = 0; i < calls; i++) fn();
          const ms = (performance.now() - t0) / calls;
          (res.get(name) ?? res.set(name, []).get(name)!).push(ms);
        }
      }
      console.log(`${cell.toUpperCase()} LM, ms per call (median of ${rounds} rounds x ${calls} calls), load ${loadavg()[0]!.toFixed(2)}`);
      for (const [name, , flops] of stages) {
        const ms = median(res.get(name)!);
        const rate = flops > 0 ? `  ${(flops / ms / 1e6).toFixed(0)} GFLOP/s = ${((100 * flops) / ms / 1e6 / peak).toFixed(0)} % of peak` : '';
        const words = name.includes('in all') ? `  ${Math.round((BATCH / ms) * 1000).toLocaleString('en-US')} words/s` : '';
        console.log(`  ${name.padEnd(38)} ${ms.toFixed(3)} ms${rate}${words}`);
      }
    });
  }
});
