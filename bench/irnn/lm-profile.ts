/**
 * Per-stage profile of the integer next-word LM forward (IntNextWordModel.logits) at the
 * seq-inference shape (Embedding 64 → LSTM/GRU 128 → Linear 2000, batch 256 × 8 words).
 *
 *   nice -n 10 node --import tsx bench/irnn/lm-profile.ts [--rounds 7] [--calls 50] [--threads N (default: the pool's)]
 */
import { mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeInfo, setNativeThreads } from '../../src/backend/index.ts';
import { withBackend } from '../workloads.ts';
import { gemmInt8, packInt8Weights } from '../../src/runtime/kernels/index.ts';
import { intRnnLm, rnnLm, rnnQatCopy, SEQ_SHAPES, seqData } from '../seq-inference/models.ts';
import { numberFlag } from '../flags.ts';

const rounds = numberFlag('rounds', 7, { integer: true, min: 1 });
const calls = numberFlag('calls', 50, { integer: true, min: 1 });
const threads = numberFlag('threads', 0, { integer: true, min: 0 });
const BATCH = 256;
const S = SEQ_SHAPES;
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const dir = mkdtempSync(join(tmpdir(), 'lm-profile-'));

await withBackend('native', async () => {
  if (threads > 0) setNativeThreads(threads);
  console.log(`native ${JSON.stringify(nativeInfo())}`);
  const data = seqData(S, BATCH, 4);
  const ids = Int32Array.from(data.ids.data);
  const vocabulary = data.corpus.vocab.words;
  for (const cell of ['lstm', 'gru'] as const) {
    const model = rnnLm(cell, S);
    const q8 = rnnQatCopy(model, S, 'w8a8', data.train);
    const int = intRnnLm(q8, data.train, vocabulary, S.context, join(dir, `${cell}.irnn`));
    const V = int.vocabSize, E = int.rnn.inputSize, H = int.rnn.hiddenSize, steps = S.context;
    const x = new Int8Array(steps * BATCH * E);
    const gather = (): void => {
      for (let n = 0; n < BATCH; n++) for (let t = 0; t < steps; t++) { const id = ids[n * steps + t]!; x.set(int.table.subarray(id * E, (id + 1) * E), (t * BATCH + n) * E); }
    };
    gather();
    const { state } = int.rnn.run(x, steps, BATCH);
    const packed = packInt8Weights(int.headWeight, V, H);
    const acc = new Int32Array(BATCH * V);
    const out = new Float32Array(BATCH * V);
    const hs = int.rnn.params.hiddenScale;
    const deq = (): void => { for (let n = 0; n < BATCH; n++) for (let r = 0; r < V; r++) out[n * V + r] = acc[n * V + r]! * int.headScale[r]! * hs + int.headBias[r]!; };
    const stages: [string, () => void][] = [
      ['total logits()', () => int.logits(ids, BATCH)],
      ['embedding gather (JS)', gather],
      ['rnn.run (native seq)', () => int.rnn.run(x, steps, BATCH)],
      ['head gemmInt8 256x2000x128', () => gemmInt8(BATCH, V, H, state.h, 0, packed, acc)],
      ['head dequant (JS loop)', deq],
      // (IntNextWordModel.head exists from the fused native head on; skipped on older checkouts.)
      ...(typeof int.head === 'function' ? [
        ['head() native fused', () => int.head(state.h, BATCH)],
        ['head() TS (gemm + loop)', () => int.head(state.h, BATCH, { native: false })],
      ] as [string, () => void][] : []),
      ['alloc Float32Array+Int32Array', () => { new Int32Array(BATCH * V); new Float32Array(BATCH * V); }],
    ];
    const res = new Map<string, number[]>();
    for (let r = 0; r < rounds; r++) {
      for (const [name, fn] of stages) {
        fn();
        const t0 = performance.now();
        for (let i = 0; i < calls; i++) fn();
        const ms = (performance.now() - t0) / calls;
        (res.get(name) ?? res.set(name, []).get(name)!).push(ms);
      }
    }
    console.log(`${cell} (${int.rnn.cellBackend}), load ${loadavg()[0]!.toFixed(2)}`);
    for (const [name] of stages) console.log(`  ${name.padEnd(32)} ${median(res.get(name)!).toFixed(3)} ms`);
    console.log(`  words/s (total) ${(BATCH / median(res.get('total logits()')!) * 1000).toFixed(0)}`);
  }
});
