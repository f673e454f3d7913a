// The integer-only Transformer API example of docs/lm.md, runnable: node --import tsx bench/irnn/int-transformer-example.ts
import { data, nn, optim, quant, fit, evaluatePerplexity, DataLoader, PerplexityMeter, Rng } from 'lowbit';

const corpus = data.loadLanguageModelCorpus('moby-dick', { context: 8, vocabSize: 2000, limitWords: 30_000 });
const batches = (ds: data.Dataset, shuffle = false) => data.contextIdBatches(new DataLoader(ds, { batchSize: 128, shuffle, seed: 0 }));

// A small W8A8 QAT Transformer LM (every matmul's operands LSQ-quantized), one epoch.
const model = new nn.TransformerLM({ vocabSize: corpus.vocab.size, maxContext: 8, embedDim: 32, numLayers: 2, numHeads: 4, mlpDim: 64, activation: 'gelu-tanh', rng: new Rng(0) });
quant.transformer.prepareTransformerQat(model, quant.transformer.transformerQatConfig('w8a8')!);
fit(model, { trainLoader: batches(corpus.train, true), testLoader: batches(corpus.valid), optimizer: new optim.Adam(model.parameters(), { lr: 5e-3 }), epochs: 1, progress: false });

// Integer-only conversion: the residual stream's int32 scale is set on a few train batches; every
// other step comes from the run's quantizers. Then save / load the .irnn file.
const calibration = [...batches(corpus.train)].slice(0, 8).map((b) => b.x);
const int = quant.irnn.convertTransformerLM(model, calibration);
quant.irnn.saveIntTransformer('/tmp/tiny-transformer.irnn', int);
const loaded = quant.irnn.loadIntTransformer('/tmp/tiny-transformer.irnn');

const meter = new PerplexityMeter();
for (const { x, y } of batches(corpus.test)) meter.add(loaded.logits(x.data, y.size), y.data, corpus.vocab.size);
console.log(`test perplexity: fake-quant ${evaluatePerplexity(model, batches(corpus.test)).perplexity.toFixed(2)}, integer-only ${meter.result().perplexity.toFixed(2)}`);

// Generation with the integer KV cache (nn.generate drives the integer model as it drives a TransformerLM).
const prompt = ['call', 'me', 'ishmael'].map((w) => corpus.vocab.id(w));
const ids = nn.generate(loaded, prompt, { tokens: 12, temperature: 0.8, topK: 40, seed: 0 });
console.log(`call me ishmael ${ids.map((id) => corpus.vocab.words[id]).join(' ')}`);
const cache = loaded.createCache();
loaded.logitsCached(prompt, cache); // the prompt at once
const next = loaded.logitsCached([ids[0]!], cache); // then one position: bit-identical to the full recompute
const full = loaded.logits([...prompt, ids[0]!], 1);
console.log(`cached step == recompute: ${next.every((v, i) => v === full[i])}`);
