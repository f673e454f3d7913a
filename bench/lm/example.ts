// The API example of docs/lm.md, runnable: node --import tsx bench/lm/example.ts
import { data, nn, onnx, optim, quant, fit, evaluatePerplexity, DataLoader, Rng } from 'lowbit';

// Moby Dick, word level: 80 / 10 / 10 % of the words for train / validation / test, 8 words of context.
const corpus = data.loadLanguageModelCorpus('moby-dick', { context: 8, vocabSize: 2000, limitWords: 60_000 });
const batches = (ds: data.Dataset, shuffle = false) => data.contextIdBatches(new DataLoader(ds, { batchSize: 128, shuffle, seed: 0 }));

// Embedding 32 → LSTM 64 → last step → Linear over the vocabulary, 4-bit weights and 8-bit activations (LSQ QAT).
const model = new nn.NextWordModel({ vocabSize: corpus.vocab.size, embeddingDim: 32, hiddenSize: 64, rng: new Rng(0) });
quant.rnn.prepareRnnQat(model, quant.rnn.nextWordQatPlan('w4a8')!);
const optimizer = new optim.Adam(model.parameters(), { lr: 5e-3 });
fit(model, { trainLoader: batches(corpus.train, true), testLoader: batches(corpus.valid), optimizer, epochs: 2, progress: false });

const test = evaluatePerplexity(model, batches(corpus.test));
console.log(`test perplexity ${test.perplexity.toFixed(1)} over ${test.count} words`);

// ONNX: h_{t-1} is quantized, so the LSTM is unrolled over the 8 context steps.
const exported = onnx.exportRnnOnnx(model, { lastStep: true, sequenceLength: 8 });
console.log(exported.kind, exported.recurrent, `${exported.bytes.length} bytes`);
