/**
 * A tiny next-word LSTM language model on Moby Dick (8-word context → next word), trained a few
 * dozen steps, exported to ONNX in float32 and after a short QAT (int8 / int4 weights, QDQ), and
 * run in onnxruntime-node: its test perplexity and predictions must be lowbit's.
 * RNN_LM_REPORT=1 prints the measured figures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { contextIds, DataLoader, loadMobyDickNextWord, take, type Dataset } from '../data/index.ts';
import { Embedding, Linear, LSTM, Module } from '../nn/index.ts';
import { Adam } from '../optim/index.ts';
import { prepareRnnQat, type RnnQatConfig } from '../quant/rnn/index.ts';
import { crossEntropy, narrow, reshape, Rng, Tensor } from '../tensor/index.ts';
import { exportRnnOnnx } from './rnn.ts';
import { openRnnOnnx } from './rnn-verify.ts';
import { loadOnnxRuntime } from './verify.ts';

const ortLoad = await loadOnnxRuntime();
const noOrt = ortLoad.ok ? false : `skipped: ${ortLoad.reason}`;
const CONTEXT = 8;

class WordLstm extends Module {
  readonly embedding: Embedding;
  readonly rnn: LSTM;
  readonly head: Linear;
  constructor(vocab: number, rng: Rng) {
    super();
    this.embedding = this.registerModule('embedding', new Embedding(vocab, 16, { rng }));
    this.rnn = this.registerModule('rnn', new LSTM(16, 32, { batchFirst: true, rng }));
    this.head = this.registerModule('head', new Linear(32, vocab, { rng }));
  }
  /** ids [N, CONTEXT] → next-word logits [N, V] from h at the last step. */
  forward(ids: Tensor): Tensor {
    const [out] = this.rnn.forward(this.embedding.forward(ids));
    return this.head.forward(reshape(narrow(out, 1, CONTEXT - 1, 1), [ids.shape[0]!, 32]));
  }
}

function trainSteps(model: Module & { forward(ids: Tensor): Tensor }, ds: Dataset, steps: number, lr: number): void {
  const optimizer = new Adam(model.parameters(), { lr });
  model.train();
  let step = 0;
  for (const { x, y } of new DataLoader(ds, { batchSize: 64, shuffle: true, seed: 1 })) {
    if (step++ >= steps) break;
    optimizer.zeroGrad();
    crossEntropy(model.forward(contextIds(x)), y).backward();
    optimizer.step();
  }
  model.eval();
}

/** Perplexity (exp of the mean NLL) and argmax of logits [N, V] against `targets`. */
function score(logits: Float32Array, targets: ArrayLike<number>, vocab: number): { perplexity: number; predictions: Int32Array } {
  const n = targets.length;
  let nll = 0;
  const predictions = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let c = 0; c < vocab; c++) {
      const v = logits[i * vocab + c]!;
      if (v > max) {
        max = v;
        predictions[i] = c;
      }
    }
    let sum = 0;
    for (let c = 0; c < vocab; c++) sum += Math.exp(logits[i * vocab + c]! - max);
    nll += Math.log(sum) + max - logits[i * vocab + targets[i]!]!;
  }
  return { perplexity: Math.exp(nll / n), predictions };
}

test('Moby Dick next-word LSTM: ORT perplexity and predictions equal lowbit (float32 and weight-QDQ int8 / int4)', { skip: noOrt }, async () => {
  const corpus = loadMobyDickNextWord({ context: CONTEXT, maxSize: 300, limitWords: 30000 });
  const V = corpus.vocab.size;
  const evalSet = take(corpus.test, 400);
  const batch = [...new DataLoader(evalSet, { batchSize: 400 })][0]!;
  const ids = contextIds(batch.x);
  const targets = batch.y.data;
  const model = new WordLstm(V, new Rng(0));
  trainSteps(model, corpus.train, 60, 1e-2);

  const runner = async (bytes: Uint8Array): Promise<Float32Array> => {
    const r = await openRnnOnnx(bytes);
    if ('skipped' in r) throw new Error(r.skipped);
    try {
      return (await r.run({ input: ids }))['logits']!.data as Float32Array;
    } finally {
      await r.release();
    }
  };
  const rows: string[] = [];
  const check = async (label: string, m: WordLstm, options: { sequenceLength?: number }, tolerance: number): Promise<void> => {
    const ex = exportRnnOnnx(m, { lastStep: true, ...options });
    const mine = score(noGrad(() => m.forward(ids)).data as Float32Array, targets, V);
    const theirs = score(await runner(ex.bytes), targets, V);
    let agree = 0;
    for (let i = 0; i < targets.length; i++) if (mine.predictions[i] === theirs.predictions[i]) agree++;
    rows.push(`${label}: ${ex.kind} ${JSON.stringify(ex.recurrent)} perplexity lowbit ${mine.perplexity.toFixed(4)} ORT ${theirs.perplexity.toFixed(4)} argmax agreement ${agree}/${targets.length}`);
    assert.ok(Math.abs(theirs.perplexity - mine.perplexity) <= tolerance * mine.perplexity, `${label}: perplexity ORT ${theirs.perplexity} vs lowbit ${mine.perplexity}`);
    assert.equal(agree, targets.length, `${label}: argmax agreement`);
  };
  await check('float32', model, { sequenceLength: CONTEXT }, 1e-5);
  // Trained, so the comparison is on a model that predicts something: better than uniform.
  assert.ok(score(noGrad(() => model.forward(ids)).data as Float32Array, targets, V).perplexity < V / 2);

  const qat = (config: RnnQatConfig): WordLstm => {
    const copy = new WordLstm(V, new Rng(0));
    copy.loadStateDict(model.stateDict());
    prepareRnnQat(copy, { default: config });
    trainSteps(copy, corpus.train, 15, 2e-3);
    return copy;
  };
  const act8 = { kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'tensor' };
  await check('W8 per row, A8 (LSTM node)', qat({ weight: { kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'channel' }, activation: act8, hidden: null }), { sequenceLength: CONTEXT }, 1e-4);
  await check('W4 per row, A8, h A8 (unrolled)', qat({ weight: { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'channel' }, activation: act8, hidden: act8 }), { sequenceLength: CONTEXT }, 1e-4);
  if (process.env['RNN_LM_REPORT']) console.log(rows.join('\n'));
});
