/**
 * VQ-LSTM as a next-word language model on Moby Dick: test perplexity of nn.LSTM vs VQLSTM with
 * codebooks of K rows (default 64, 256, 1024), same architecture and training.
 *
 *   nice -n 10 node --import tsx bench/vq/moby-dick-lm.ts [--epochs 1] [--sizes 64,256,1024]
 *        [--vocab 2000] [--embed 64] [--hidden 128] [--context 8] [--lr 0.002] [--commitment 0.25]
 *        [--dead 0.01] [--update loss|ema] [--match state|hidden] [--seed 0] [--max-batches N]
 *        [--eval-limit N] [--out bench/results/vq-moby-dick.json]
 *
 * Model: context ids [B, C] → Embedding → one recurrent layer (batch first) → output at the last
 * step → Linear → vocabulary logits; cross-entropy (+ the VQ loss for VQLSTM), Adam, batch 128;
 * the first 90 % of the novel trains, the last 10 % tests (data.loadMobyDickNextWord). With VQLSTM
 * the output at the last step is the quantized ĥ, so the model can predict at most K different
 * next-word distributions: a hard bottleneck the perplexity shows. Reported per model: test
 * perplexity and accuracy, and for VQLSTM the codes in use (EMA usage ≥ 1e-3 rows per step) and
 * how many distinct codes the test set reaches at its last step, the dead-code restarts, and the
 * wall time. Writes bench/results/vq-moby-dick.json (atomically). One seed.
 */
import '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { contextIds, DataLoader, loadMobyDickNextWord, type Dataset } from '../../src/data/index.ts';
import { Embedding, Linear, LSTM, Module } from '../../src/nn/index.ts';
import { VQLSTM } from '../../src/nn/vq/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { add, crossEntropy, manualSeed, narrow, reshape, Rng, type Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { flag, flagOr, numberFlag } from '../flags.ts';
import { choiceFlag } from './flags.ts';
import { gitCommit, writeAtomic } from '../lib.ts';
import { scoreLogits } from '../irnn/scores.ts';

const epochs = numberFlag('epochs', 1, { integer: true, min: 1 });
const sizes = flagOr('sizes', '64,256,1024').split(',').map(Number);
const vocabSize = numberFlag('vocab', 2000, { integer: true, min: 2 });
const embedDim = numberFlag('embed', 64, { integer: true, min: 1 });
const hiddenSize = numberFlag('hidden', 128, { integer: true, min: 1 });
const context = numberFlag('context', 8, { integer: true, min: 1 });
const lr = numberFlag('lr', 2e-3);
const commitment = numberFlag('commitment', 0.25);
const dead = numberFlag('dead', 0.01);
const update = choiceFlag('update', ['loss', 'ema'] as const);
const match = choiceFlag('match', ['state', 'hidden'] as const);
const outPath = flagOr('out', 'bench/results/vq-moby-dick.json');
const seed = numberFlag('seed', 0, { integer: true });
const maxBatches = flag('max-batches') === undefined ? Infinity : numberFlag('max-batches', 0, { integer: true, min: 1 });
const evalLimit = flag('eval-limit') === undefined ? Infinity : numberFlag('eval-limit', 0, { integer: true, min: 1 });
const batchSize = 128;
if (sizes.some((k) => !Number.isInteger(k) || k < 1)) throw new Error(`--sizes needs positive integers, got '${flag('sizes')}'`);

/** Embedding → LSTM or VQLSTM → last output → head; `vqLoss` holds the last forward's VQ loss. */
class WordModel extends Module {
  readonly embedding: Embedding;
  readonly rnn: LSTM | VQLSTM;
  readonly head: Linear;
  vqLoss: Tensor | null = null;
  /** Codes at the last step of the last forward (VQLSTM). */
  lastCodes: Int32Array | null = null;

  constructor(codebookSize: number | null, rng: Rng) {
    super();
    this.embedding = this.registerModule('embedding', new Embedding(vocabSize, embedDim, { rng }));
    this.rnn = this.registerModule('rnn', codebookSize === null
      ? new LSTM(embedDim, hiddenSize, { batchFirst: true, rng })
      : new VQLSTM(embedDim, hiddenSize, { batchFirst: true, rng, codebookSize, commitment, deadCodeThreshold: dead, update, match }));
    this.head = this.registerModule('head', new Linear(hiddenSize, vocabSize, { rng }));
  }

  forward(x: Tensor): Tensor {
    const ids = contextIds(x);
    const embedded = this.embedding.forward(ids);
    let output: Tensor;
    if (this.rnn instanceof VQLSTM) {
      const result = this.rnn.forward(embedded);
      output = result.output;
      this.vqLoss = result.loss;
      this.lastCodes = result.final;
    } else {
      [output] = this.rnn.forward(embedded);
    }
    return this.head.forward(reshape(narrow(output, 1, context - 1, 1), [ids.shape[0]!, hiddenSize]));
  }
}

function train(model: WordModel, ds: Dataset, label: string): number {
  const optimizer = new Adam(model.parameters(), { lr });
  const loader = new DataLoader(ds, { batchSize, shuffle: true, seed });
  model.train();
  let last = Number.NaN;
  for (let epoch = 0; epoch < epochs; epoch++) {
    const bar = new ProgressBar({ total: Math.min(loader.length, maxBatches), label: `${label} epoch ${epoch + 1}/${epochs}` });
    let sum = 0;
    let count = 0;
    for (const { x, y } of loader) {
      if (count >= maxBatches) break;
      optimizer.zeroGrad();
      const task = crossEntropy(model.forward(x), y);
      const loss = model.vqLoss ? add(task, model.vqLoss) : task;
      loss.backward();
      optimizer.step();
      sum += task.item();
      count++;
      bar.tick(1, { ce: sum / count });
    }
    bar.done();
    last = sum / count;
  }
  return last;
}

function evaluate(model: WordModel, ds: Dataset): { perplexity: number; accuracy: number; count: number; distinctFinalCodes: number | null } {
  model.eval();
  const count = Math.min(ds.length, evalLimit);
  const acc = { loss: 0, correct: 0, predictions: new Int32Array(count) };
  let seen = 0;
  const codes = new Set<number>();
  noGrad(() => {
    for (const { x, y } of new DataLoader(ds, { batchSize: 512 })) {
      if (seen >= count) break;
      const rows = Math.min(y.size, count - seen);
      scoreLogits(model.forward(x).data, y.data, rows, seen, acc, vocabSize);
      if (model.lastCodes) for (let i = 0; i < rows; i++) codes.add(model.lastCodes[i]!);
      seen += rows;
    }
  });
  return { perplexity: Math.exp(acc.loss / count), accuracy: acc.correct / count, count, distinctFinalCodes: model.lastCodes ? codes.size : null };
}

const corpus = loadMobyDickNextWord({ context, maxSize: vocabSize });
console.log(`Moby Dick: ${corpus.train.length} train / ${corpus.test.length} test windows, vocabulary ${corpus.vocab.size}`);
const rows: Record<string, unknown>[] = [];
for (const k of [null, ...sizes]) {
  manualSeed(seed);
  const model = new WordModel(k, new Rng(seed));
  const label = k === null ? 'LSTM' : `VQLSTM K=${k}`;
  const started = Date.now();
  const trainLoss = train(model, corpus.train, label);
  const seconds = (Date.now() - started) / 1000;
  const scores = evaluate(model, corpus.test);
  const vq = model.rnn instanceof VQLSTM ? model.rnn.quantizer : null;
  const row = {
    model: label,
    codebookSize: k,
    trainCrossEntropy: trainLoss,
    testPerplexity: scores.perplexity,
    testAccuracy: scores.accuracy,
    testWindows: scores.count,
    activeCodes: vq ? vq.activeCodes() : null,
    distinctFinalCodesOnTest: scores.distinctFinalCodes,
    restarts: vq ? vq.restarts : null,
    trainSeconds: seconds,
  };
  console.log(JSON.stringify(row));
  rows.push(row);
}
const out = {
  bench: 'vq-moby-dick',
  commit: gitCommit(),
  date: new Date().toISOString(),
  settings: { epochs, vocabSize, embedDim, hiddenSize, context, lr, commitment, deadCodeThreshold: dead, update, match, seed, batchSize, maxBatches: Number.isFinite(maxBatches) ? maxBatches : null, evalLimit: Number.isFinite(evalLimit) ? evalLimit : null },
  rows,
};
writeAtomic(outPath, `${JSON.stringify(out, null, 2)}\n`);
console.log(`wrote ${outPath}`);
