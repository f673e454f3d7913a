/**
 * A short look inside VQLSTM training on the Moby Dick LM of moby-dick-lm.ts (same model and data):
 * every 50 batches, the mean cross-entropy of those batches, the VQ loss of the last batch, the
 * codebook's RMS value, codes with EMA usage ≥ 0.01 and the dead-code restarts so far. For
 * comparing codebook rules over the first few hundred batches, not for final numbers.
 *
 *   nice -n 10 node --import tsx bench/vq/lm-probe.ts [--codebook 256] [--update loss|ema]
 *        [--match state|hidden] [--dead 0.01] [--commitment 0.25] [--batches 400] [--seed 0]
 *
 * Writes bench/results/vq-lm-probe-<update>-<match>-k<K>-dead<dead>.json (atomically).
 */
import '../../src/backend/index.ts';
import { contextIds, DataLoader, loadMobyDickNextWord } from '../../src/data/index.ts';
import { Embedding, Linear, Module } from '../../src/nn/index.ts';
import { VQLSTM } from '../../src/nn/vq/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { add, crossEntropy, mean, narrow, reshape, Rng, square, type Tensor } from '../../src/tensor/index.ts';
import { numberFlag } from '../flags.ts';
import { gitCommit, writeAtomic } from '../lib.ts';
import { choiceFlag } from './flags.ts';

const codebookSize = numberFlag('codebook', 256, { integer: true, min: 1 });
const update = choiceFlag('update', ['loss', 'ema'] as const);
const match = choiceFlag('match', ['state', 'hidden'] as const);
const dead = numberFlag('dead', 0.01);
const commitment = numberFlag('commitment', 0.25);
const batches = numberFlag('batches', 400, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const context = 8;
const hidden = 128;

class Probe extends Module {
  readonly embedding: Embedding;
  readonly rnn: VQLSTM;
  readonly head: Linear;
  vqLoss: Tensor | null = null;

  constructor(rng: Rng) {
    super();
    this.embedding = this.registerModule('embedding', new Embedding(2000, 64, { rng }));
    this.rnn = this.registerModule('rnn', new VQLSTM(64, hidden, { batchFirst: true, rng, codebookSize, commitment, deadCodeThreshold: dead, update, match }));
    this.head = this.registerModule('head', new Linear(hidden, 2000, { rng }));
  }

  forward(x: Tensor): Tensor {
    const ids = contextIds(x);
    const result = this.rnn.forward(this.embedding.forward(ids));
    this.vqLoss = result.loss;
    return this.head.forward(reshape(narrow(result.output, 1, context - 1, 1), [ids.shape[0]!, hidden]));
  }
}

const corpus = loadMobyDickNextWord({ context, maxSize: 2000 });
const model = new Probe(new Rng(seed));
const optimizer = new Adam(model.parameters(), { lr: 2e-3 });
model.train();
const rows: Record<string, number>[] = [];
let done = 0;
let sum = 0;
for (const { x, y } of new DataLoader(corpus.train, { batchSize: 128, shuffle: true, seed })) {
  optimizer.zeroGrad();
  const task = crossEntropy(model.forward(x), y);
  add(task, model.vqLoss!).backward();
  optimizer.step();
  sum += task.item();
  done++;
  if (done % 50 === 0) {
    const q = model.rnn.quantizer;
    const row = { batch: done, crossEntropy: sum / 50, vqLoss: model.vqLoss!.item(), codebookRms: Math.sqrt(mean(square(q.codebook)).item()), activeCodes: q.activeCodes(0.01), restarts: q.restarts };
    console.log(JSON.stringify(row));
    rows.push(row);
    sum = 0;
  }
  if (done >= batches) break;
}
const path = `bench/results/vq-lm-probe-${update}-${match}-k${codebookSize}-dead${dead}.json`;
writeAtomic(path, `${JSON.stringify({ bench: 'vq-lm-probe', commit: gitCommit(), date: new Date().toISOString(), settings: { codebookSize, update, match, dead, commitment, batches, seed }, rows }, null, 2)}\n`);
console.log(`wrote ${path}`);
