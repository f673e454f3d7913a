// The Transformer API example of docs/lm.md, runnable: node --import tsx bench/lm/transformer-example.ts
import { data, nn, onnx, optim, quant, fit, evaluatePerplexity, DataLoader, Rng } from 'lowbit';

const corpus = data.loadLanguageModelCorpus('moby-dick', { context: 8, vocabSize: 2000, limitWords: 60_000 });
const batches = (ds: data.Dataset, shuffle = false) => data.contextIdBatches(new DataLoader(ds, { batchSize: 128, shuffle, seed: 0 }));

// Causal pre-LN Transformer: width 32, 2 blocks of 4 heads, tanh-GELU MLP 64, learned positions; W4A8 LSQ QAT
// on every matmul (Q/K/V and output projections, Q·Kᵀ and A·V operands, MLP, head).
const model = new nn.TransformerLM({ vocabSize: corpus.vocab.size, maxContext: 8, embedDim: 32, numLayers: 2, numHeads: 4, mlpDim: 64, activation: 'gelu-tanh', rng: new Rng(0) });
quant.transformer.prepareTransformerQat(model, quant.transformer.transformerQatConfig('w4a8')!);
const optimizer = new optim.Adam(model.parameters(), { lr: 5e-3 });
fit(model, { trainLoader: batches(corpus.train, true), testLoader: batches(corpus.valid), optimizer, epochs: 2, progress: false });

const test = evaluatePerplexity(model, batches(corpus.test));
console.log(`test perplexity ${test.perplexity.toFixed(1)} over ${test.count} words`);

// ONNX (opset 17): int8 weights + DequantizeLinear, QuantizeLinear/DequantizeLinear at every matmul input.
const exported = onnx.exportTransformerOnnx(model, { sequenceLength: 8 });
console.log(exported.kind, `${exported.quantizedWeights} quantized weights, ${exported.quantizedActivations} activation QDQ pairs, ${exported.bytes.length} bytes`);
