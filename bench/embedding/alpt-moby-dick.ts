/**
 * Next-word prediction on Moby Dick with a float32 embedding table vs ALPT low-precision tables
 * (src/quant/embedding): test accuracy, test perplexity and table bytes.
 *
 *   nice -n 10 node --import tsx bench/embedding/alpt-moby-dick.ts [--epochs 2] [--only fp32-sgd,alpt-4-sr]
 *        [--vocab 2000] [--dim 32] [--context 4] [--lr 2] [--step-lr 0.001] [--seed 0] [--limit-words N]
 *
 * Model: context ids [B, C] → embedding [B, C, dim] → concat [B, C·dim] → Linear → vocab logits,
 * cross-entropy; batch 128, the first 90 % of the novel's words train, the last 10 % test.
 * The Linear always trains with Adam (lr 2e-3). The embedding rows train with plain SGD at `--lr`:
 * a float32 table (`fp32-sgd`, nn.Embedding + optim.SGD), or codes of b bits written back with
 * stochastic (`alpt-<b>-sr`) or nearest (`alpt-<b>-nearest`) rounding, Δ per table with Adam at
 * `--step-lr` (`alpt-<b>-sr-row`: one Δ per row). `fp32-adam` trains the float32 table with Adam too (a stronger reference).
 * Every run starts from the same seed; rows are merged by name into
 * bench/results/alpt-embedding.json (written atomically). Seconds are wall time under whatever load.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { contextIds, DataLoader, loadMobyDickNextWord, type Dataset } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { Embedding, Linear, Module } from '../../src/nn/index.ts';
import { Adam, SGD } from '../../src/optim/index.ts';
import { AlptOptimizer, QuantEmbedding, type RoundingMode } from '../../src/quant/embedding/index.ts';
import { crossEntropy, manualSeed, reshape, Rng, type Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { flag, numberFlag } from '../flags.ts';

const DEFAULT_RUNS = ['fp32-adam', 'fp32-sgd', 'alpt-8-sr', 'alpt-8-nearest', 'alpt-4-sr', 'alpt-4-nearest', 'alpt-2-sr', 'alpt-2-nearest'];

const epochs = numberFlag('epochs', 2);
const seed = numberFlag('seed', 0);
const vocabSize = numberFlag('vocab', 2000);
const dim = numberFlag('dim', 32);
const context = numberFlag('context', 4);
const rowLr = numberFlag('lr', 2);
const stepLr = numberFlag('step-lr', 1e-3);
const limitWords = flag('limit-words') === undefined ? undefined : numberFlag('limit-words', 0);
const runs = flag('only')?.split(',') ?? DEFAULT_RUNS;
const batchSize = 128;

/** Embedding (float or ALPT) → concat → Linear. */
class NextWordModel extends Module {
  readonly embedding: Embedding | QuantEmbedding;
  readonly head: Linear;

  constructor(embedding: Embedding | QuantEmbedding, rng: Rng) {
    super();
    this.embedding = this.registerModule('embedding', embedding);
    this.head = this.registerModule('head', new Linear(context * dim, vocabSize, { rng }));
  }

  forward(x: Tensor): Tensor {
    const ids = contextIds(x);
    return this.head.forward(reshape(this.embedding.forward(ids), [ids.shape[0]!, context * dim]));
  }
}

interface Run {
  model: NextWordModel;
  optimizer: { step(): void; zeroGrad(): void };
  text: string;
  tableBytes: number;
  packedBytes: number;
}

function makeRun(name: string): Run {
  manualSeed(seed);
  const rng = new Rng(seed);
  const fp32 = /^fp32-(sgd|adam)$/.exec(name);
  if (fp32) {
    const model = new NextWordModel(new Embedding(vocabSize, dim, { rng }), rng);
    const table = model.embedding as Embedding;
    const head = new Adam(model.head.parameters(), { lr: 2e-3 });
    const rows = fp32[1] === 'sgd' ? new SGD([table.weight], { lr: rowLr }) : new Adam([table.weight], { lr: 2e-3 });
    const optimizer = { step: () => (head.step(), rows.step()), zeroGrad: () => (head.zeroGrad(), rows.zeroGrad()) };
    const bytes = table.weight.size * 4;
    return { model, optimizer, text: `float32 table, ${fp32[1] === 'sgd' ? `SGD lr ${rowLr}` : 'Adam lr 0.002'}`, tableBytes: bytes, packedBytes: bytes };
  }
  const alpt = /^alpt-(\d)-(sr|nearest)(-row)?$/.exec(name);
  if (!alpt) throw new Error(`unknown run '${name}' (fp32-sgd, fp32-adam, alpt-<bits>-sr, alpt-<bits>-nearest, + '-row' for a Δ per row)`);
  const bits = Number(alpt[1]);
  const rounding: RoundingMode = alpt[2] === 'sr' ? 'stochastic' : 'nearest';
  const granularity = alpt[3] ? 'row' : 'table';
  const embedding = new QuantEmbedding(vocabSize, dim, { bits, granularity, rng });
  const model = new NextWordModel(embedding, rng);
  const optimizer = new AlptOptimizer(model, { lr: rowLr, stepLr, rounding, seed, dense: (params) => new Adam(params, { lr: 2e-3 }) });
  const { training, packed } = embedding.tableBytes();
  return { model, optimizer, text: `ALPT ${bits}-bit codes, Δ per ${granularity}, ${rounding} rounding, SGD lr ${rowLr}, Δ Adam lr ${stepLr}`, tableBytes: training, packedBytes: packed };
}

/** Mean cross-entropy (nats) and top-1 accuracy over a dataset. */
function evaluate(model: NextWordModel, ds: Dataset): { loss: number; accuracy: number } {
  let loss = 0;
  let correct = 0;
  noGrad(() => {
    for (const { x, y } of new DataLoader(ds, { batchSize: 1024 })) {
      const logits = model.forward(x);
      loss += crossEntropy(logits, y).item() * y.size;
      const [n, v] = logits.shape as [number, number];
      for (let i = 0; i < n; i++) {
        let best = 0;
        for (let j = 1; j < v; j++) if (logits.data[i * v + j]! > logits.data[i * v + best]!) best = j;
        if (best === y.data[i]) correct++;
      }
    }
  });
  return { loss: loss / ds.length, accuracy: correct / ds.length };
}

interface Row {
  name: string;
  setup: string;
  epochs: number;
  seed: number;
  vocab: number;
  dim: number;
  context: number;
  rowLr: number;
  stepLr: number;
  trainSamples: number;
  testSamples: number;
  testAccuracy: number;
  testPerplexity: number;
  finalTrainLoss: number;
  tableBytes: number;
  packedTableBytes: number;
  /** ALPT runs: the final Δ (mean over rows when per row) and the share of codes at ±qmax. */
  step?: number;
  saturated?: number;
  seconds: number;
}

const corpus = loadMobyDickNextWord({ context, maxSize: vocabSize, minCount: 1, limitWords });
console.log(`Moby Dick: ${corpus.trainWords} train / ${corpus.testWords} test words, vocabulary ${corpus.vocab.size} (<unk> ${((corpus.vocab.counts[0]! / corpus.trainWords) * 100).toFixed(1)} % of train words)`);

const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'alpt-embedding.json');
const rows: Row[] = existsSync(resultsPath) ? (JSON.parse(readFileSync(resultsPath, 'utf8')) as { rows: Row[] }).rows : [];

for (const name of runs) {
  const { model, optimizer, text, tableBytes, packedBytes } = makeRun(name);
  const loader = new DataLoader(corpus.train, { batchSize, shuffle: true, seed });
  const start = performance.now();
  let lastLoss = Number.NaN;
  for (let epoch = 0; epoch < epochs; epoch++) {
    const bar = new ProgressBar({ total: loader.length, label: `${name} epoch ${epoch + 1}/${epochs}` });
    let sum = 0;
    let count = 0;
    for (const { x, y } of loader) {
      optimizer.zeroGrad();
      const loss = crossEntropy(model.forward(x), y);
      loss.backward();
      optimizer.step();
      sum += loss.item();
      count++;
      bar.tick(1, { loss: sum / count });
    }
    bar.done();
    lastLoss = sum / count;
  }
  const seconds = (performance.now() - start) / 1000;
  const test = evaluate(model, corpus.test);
  const row: Row = {
    name, setup: text, epochs, seed, vocab: vocabSize, dim, context, rowLr, stepLr,
    trainSamples: corpus.train.length, testSamples: corpus.test.length,
    testAccuracy: test.accuracy, testPerplexity: Math.exp(test.loss), finalTrainLoss: lastLoss,
    tableBytes, packedTableBytes: packedBytes, seconds,
  };
  const emb = model.embedding;
  if (emb instanceof QuantEmbedding) {
    let stepSum = 0;
    for (const s of emb.step.data) stepSum += s;
    row.step = stepSum / emb.step.size;
    row.saturated = emb.codes.reduce((n, q) => n + (q === emb.qmax || q === emb.qmin ? 1 : 0), 0) / emb.codes.length;
  }
  console.log(
    `${name.padEnd(16)} test acc ${(row.testAccuracy * 100).toFixed(2)} %  ppl ${row.testPerplexity.toFixed(1)}  train loss ${lastLoss.toFixed(3)}  ` +
      `table ${tableBytes} B (packed ${packedBytes} B)${row.step === undefined ? '' : `  Δ ${row.step.toPrecision(3)}  saturated ${(row.saturated! * 100).toFixed(2)} %`}  ${seconds.toFixed(0)} s`,
  );
  const index = rows.findIndex((r) => r.name === name && r.epochs === epochs && r.seed === seed && r.vocab === vocabSize && r.dim === dim && r.context === context && r.rowLr === rowLr && r.stepLr === stepLr && r.trainSamples === row.trainSamples);
  if (index >= 0) rows[index] = row;
  else rows.push(row);
  writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify({ benchmark: 'alpt-embedding', rows }, null, 2)}\n`));
}
