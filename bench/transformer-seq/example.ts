/**
 * The API example of docs/lm.md "Every-position training and text generation": a small
 * TransformerLM trained with the every-position objective on 60k words of Moby Dick (non-overlapping
 * windows, 5 epochs), its test
 * perplexity (last position of each test window), then 20 generated words with the KV cache.
 *
 *   node --import tsx bench/transformer-seq/example.ts
 */
import { data, nn, optim, fit, evaluatePerplexity, everyPositionBatches, EveryPositionObjective, DataLoader, Rng } from '../../src/index.ts';

const corpus = data.loadLanguageModelCorpus('moby-dick', { context: 8, vocabSize: 2000, limitWords: 60_000 });
const batches = (ds: data.Dataset, shuffle = false) => data.contextIdBatches(new DataLoader(ds, { batchSize: 128, shuffle, seed: 0 }));

const model = new nn.TransformerLM({ vocabSize: corpus.vocab.size, maxContext: 8, embedDim: 32, numLayers: 2, numHeads: 4, mlpDim: 64, activation: 'gelu-tanh', rng: new Rng(0) });
// Every position predicts its next word (targets: each window shifted by one), on non-overlapping
// windows (every 8th: window i starts at word i), so each word is a target once per epoch.
const nonOverlapping = data.select(corpus.train, Int32Array.from({ length: Math.ceil(corpus.train.length / 8) }, (_, i) => 8 * i));
fit(new EveryPositionObjective(model), {
  trainLoader: everyPositionBatches(batches(nonOverlapping, true)), testLoader: batches(corpus.valid),
  optimizer: new optim.Adam(model.parameters(), { lr: 5e-3 }), epochs: 5, progress: false,
});

const test = evaluatePerplexity(model, batches(corpus.test));
console.log(`test perplexity ${test.perplexity.toFixed(1)} over ${test.count} words`);

const prompt = data.tokenizeWords('Call me Ishmael.').map((w) => corpus.vocab.id(w));
const ids = nn.generate(model, prompt, { tokens: 20, temperature: 0.8, topK: 40, seed: 0 });
console.log(['call me ishmael', ...ids.map((id) => corpus.vocab.words[id])].join(' '));
