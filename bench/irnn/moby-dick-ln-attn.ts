/**
 * iRNN's layer normalisation and attention on the Moby Dick next-word LM (the task of
 * moby-dick-lm.ts): float vs QAT fake quant vs the integer-only runtime, for two variants:
 *   ln:        Embedding → LN-LSTM (QuantLSTM { layerNorm: true }) → last h → Linear
 *   attention: Embedding → LSTM → last h, attention of it over the 8 outputs → Linear([h; context])
 *   lstm:      the plain LSTM of moby-dick-lm.ts, trained the same way here (baseline; not in 'both')
 * Float first (ln: QuantLSTM with quantize=false, i.e. float layer norms and the float PWL
 * activations; attention: nn.LSTM + QuantAttention with quantize=false), then the fake-quant
 * modules with the same weights (+ a head with int8 per-row weights) fine-tuned for
 * --qat-batches, the float model fine-tuned exactly as long as the fair baseline, then the
 * integer pipeline: int8 embedding codes → IntLSTM (TypeScript cell for LN) → IntAttention →
 * int8 head (int32 accumulators; logits scaled to float once, for the softmax).
 *
 *   nice -n 10 node --import tsx bench/irnn/moby-dick-ln-attn.ts [--variant ln|attention|both|lstm]
 *        [--float-epochs 1] [--float-batches N] [--qat-batches 300] [--eval-limit N] [--seed 0]
 *
 * Writes bench/results/irnn-ln-attn.json (both), or irnn-ln-attn-<variant>.json (atomically; one row per variant).
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { contextIds, DataLoader, loadMobyDickNextWord, type Dataset } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { Embedding, Linear, LSTM, Module } from '../../src/nn/index.ts';
import { fakeQuantize } from '../../src/quant/core/quantize.ts';
import {
  convertQuantAttention, convertQuantLSTM, QuantAttention, QuantLSTM, rowScales, intLSTMToLowbit, type IntAttention, type IntLSTM,
} from '../../src/quant/irnn/index.ts';
import { encodeLowbit } from '../../src/format/lowbit.ts';
import { roundHalfEven } from '../../src/backend/reference/elementwise.ts';
import { gemmInt8, packInt8Weights, type PackedWeights } from '../../src/runtime/kernels/index.ts';
import { concat, linear, manualSeed, narrow, reshape, Rng, type Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { trainAdam } from '../train-loop.ts';
import { flag, flagOr, numberFlag } from '../flags.ts';
import { gitCommit } from '../lib.ts';
import { scoreLogits } from './scores.ts';

const variantFlag = flagOr('variant', 'both');
if (!['ln', 'attention', 'both', 'lstm'].includes(variantFlag)) throw new Error(`--variant must be ln, attention, both or lstm (the plain LSTM baseline), got '${variantFlag}'`);
const floatEpochs = numberFlag('float-epochs', 1, { integer: true, min: 1 });
const floatBatches = flag('float-batches') === undefined ? Infinity : numberFlag('float-batches', 0, { integer: true, min: 1 });
const qatBatches = numberFlag('qat-batches', 300, { integer: true, min: 1 });
const evalLimit = flag('eval-limit') === undefined ? Infinity : numberFlag('eval-limit', 0, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const vocabSize = 2000;
const embedDim = 64;
const hiddenSize = 128;
const context = 8;
const segments = 16;
const batchSize = 128;

type Variant = 'ln' | 'attention' | 'lstm';

/** Embedding → (LN-)LSTM → last h [→ attention over the outputs] → head. */
class Lm extends Module {
  readonly embedding: Embedding;
  rnn: LSTM | QuantLSTM;
  attention: QuantAttention | null;
  readonly head: Linear;
  quantHead = false;

  constructor(readonly variant: Variant, rng: Rng) {
    super();
    this.embedding = this.registerModule('embedding', new Embedding(vocabSize, embedDim, { rng }));
    this.rnn = this.registerModule('rnn', variant === 'ln'
      ? new QuantLSTM(embedDim, hiddenSize, { batchFirst: true, layerNorm: true, quantize: false, segments, rng })
      : new LSTM(embedDim, hiddenSize, { batchFirst: true, rng }));
    this.attention = variant === 'attention' ? this.registerModule('attention', new QuantAttention(hiddenSize, { quantize: false, rng })) : null;
    this.head = this.registerModule('head', new Linear(variant === 'attention' ? 2 * hiddenSize : hiddenSize, vocabSize, { rng }));
  }

  forward(x: Tensor): Tensor {
    const ids = contextIds(x);
    const batch = ids.shape[0]!;
    const [output] = this.rnn.forward(this.embedding.forward(ids));
    const last = reshape(narrow(output, 1, context - 1, 1), [batch, hiddenSize]);
    let features = last;
    if (this.attention) {
      // In QAT the attention reads h on the LSTM's own int8 grid.
      const inputScale = this.rnn instanceof QuantLSTM && this.rnn.quantize ? this.rnn.hiddenScale : undefined;
      features = concat([last, this.attention.forward(last, output, output, { inputScale })], 1);
    }
    if (!this.quantHead) return this.head.forward(features);
    const w = fakeQuantize(this.head.weight, { scale: rowScales(this.head.weight), zeroPoint: new Int32Array(vocabSize), bits: 8, qmin: -127, qmax: 127, axis: 0, groupSize: null });
    return linear(features, w, this.head.bias);
  }
}

interface Scores {
  perplexity: number;
  accuracy: number;
  predictions: Int32Array;
}

function evaluate(label: string, count: number, ds: Dataset, logitsOf: (x: Tensor, rows: number) => ArrayLike<number>): Scores {
  const acc = { loss: 0, correct: 0, predictions: new Int32Array(count) };
  let seen = 0;
  const bar = new ProgressBar({ total: count, label: `${label} test (samples)` });
  for (const { x, y } of new DataLoader(ds, { batchSize: 512 })) {
    if (seen >= count) break;
    const rows = Math.min(y.size, count - seen);
    scoreLogits(logitsOf(x, y.size), y.data, rows, seen, acc, vocabSize);
    seen += rows;
    bar.tick(rows);
  }
  bar.done();
  return { perplexity: Math.exp(acc.loss / count), accuracy: acc.correct / count, predictions: acc.predictions };
}

function evaluateModel(label: string, model: Lm, ds: Dataset, count: number): Scores {
  model.eval();
  return noGrad(() => evaluate(label, count, ds, (x) => model.forward(x).data));
}

/** int8 embedding codes → IntLSTM → [IntAttention] → int8 head, int32 accumulators. */
class IntegerLm {
  readonly table: Int8Array;
  readonly headScale: Float32Array;
  readonly headBias: Float32Array;
  /** The head's int8 columns acting on h, and on the attention output. */
  readonly headH: PackedWeights;
  readonly headContext: PackedWeights | null;
  readonly headBytes: number;

  constructor(model: Lm, readonly lstm: IntLSTM, readonly attention: IntAttention | null) {
    this.table = lstm.quantizeInput(model.embedding.weight.data);
    this.headScale = rowScales(model.head.weight);
    const F = model.head.weight.shape[1]!;
    const w = model.head.weight.data;
    const codes = (from: number): Int8Array => {
      const out = new Int8Array(vocabSize * hiddenSize);
      for (let r = 0; r < vocabSize; r++) for (let j = 0; j < hiddenSize; j++) out[r * hiddenSize + j] = Math.max(-127, Math.min(127, roundHalfEven(w[r * F + from + j]! / this.headScale[r]!)));
      return out;
    };
    this.headH = packInt8Weights(codes(0), vocabSize, hiddenSize);
    this.headContext = attention ? packInt8Weights(codes(hiddenSize), vocabSize, hiddenSize) : null;
    this.headBias = Float32Array.from(model.head.bias!.data);
    this.headBytes = vocabSize * F + vocabSize * 8;
  }

  logits(ids: Int32Array, batch: number): Float32Array {
    const E = embedDim;
    const H = hiddenSize;
    const x = new Int8Array(context * batch * E);
    for (let n = 0; n < batch; n++) for (let t = 0; t < context; t++) x.set(this.table.subarray(ids[n * context + t]! * E, (ids[n * context + t]! + 1) * E), (t * batch + n) * E);
    const { output, state } = this.lstm.run(x, context, batch);
    const accH = new Int32Array(batch * vocabSize);
    gemmInt8(batch, vocabSize, H, state.h, 0, this.headH, accH);
    let accC: Int32Array | null = null;
    if (this.attention && this.headContext) {
      const keys = new Int8Array(batch * context * H);
      for (let n = 0; n < batch; n++) for (let t = 0; t < context; t++) keys.set(output.subarray((t * batch + n) * H, (t * batch + n + 1) * H), (n * context + t) * H);
      const ctx = this.attention.run(state.h, keys, keys, batch, context);
      accC = new Int32Array(batch * vocabSize);
      gemmInt8(batch, vocabSize, H, ctx, 0, this.headContext, accC);
    }
    const sh = this.lstm.params.hiddenScale;
    const sc = this.attention?.params.outputScale ?? 0;
    const out = new Float32Array(batch * vocabSize);
    for (let n = 0; n < batch; n++) {
      for (let r = 0; r < vocabSize; r++) {
        const i = n * vocabSize + r;
        out[i] = this.headScale[r]! * (accH[i]! * sh + (accC ? accC[i]! * sc : 0)) + this.headBias[r]!;
      }
    }
    return out;
  }
}

function runVariant(variant: Variant, corpus: ReturnType<typeof loadMobyDickNextWord>, evalCount: number): Record<string, unknown> {
  console.log(`\n== variant ${variant} ==`);
  manualSeed(seed);
  const model = new Lm(variant, new Rng(seed));
  const t0 = performance.now();
  const floatLoss = trainAdam(model, corpus.train, { rounds: floatEpochs, lr: 2e-3, label: `${variant} float`, batchSize, seed, maxBatches: floatBatches });
  const floatSeconds = (performance.now() - t0) / 1000;
  const floatScores = evaluateModel(`${variant} float`, model, corpus.test, evalCount);
  console.log(`float            ppl ${floatScores.perplexity.toFixed(2)}  acc ${(floatScores.accuracy * 100).toFixed(2)} %`);
  const trained = model.stateDict();

  const tuned = new Lm(variant, new Rng(seed));
  tuned.loadStateDict(trained);
  const t1 = performance.now();
  const tunedLoss = trainAdam(tuned, corpus.train, { rounds: 1, lr: 5e-4, label: `${variant} float fine-tune`, batchSize, seed, maxBatches: qatBatches });
  const tunedSeconds = (performance.now() - t1) / 1000;
  const tunedScores = evaluateModel(`${variant} float + fine-tune`, tuned, corpus.test, evalCount);
  console.log(`float + same fine-tune  ppl ${tunedScores.perplexity.toFixed(2)}  acc ${(tunedScores.accuracy * 100).toFixed(2)} %`);

  // QAT: the fake-quant modules with the float weights.
  const quantRnn = variant === 'ln'
    ? new QuantLSTM(embedDim, hiddenSize, { batchFirst: true, layerNorm: true, segments })
    : QuantLSTM.fromLSTM(model.rnn as LSTM, { segments });
  if (variant === 'ln') quantRnn.loadStateDict((model.rnn as QuantLSTM).stateDict());
  model.setSubmodule('rnn', quantRnn);
  model.rnn = quantRnn;
  if (model.attention) {
    const quantAttention = new QuantAttention(hiddenSize);
    quantAttention.loadStateDict(model.attention.stateDict());
    model.setSubmodule('attention', quantAttention);
    model.attention = quantAttention;
  }
  model.quantHead = true;
  const t2 = performance.now();
  const qatLoss = trainAdam(model, corpus.train, { rounds: 1, lr: 5e-4, label: `${variant} QAT`, batchSize, seed, maxBatches: qatBatches });
  const qatSeconds = (performance.now() - t2) / 1000;
  const fakeScores = evaluateModel(`${variant} fake quant`, model, corpus.test, evalCount);
  console.log(`QAT fake quant   ppl ${fakeScores.perplexity.toFixed(2)}  acc ${(fakeScores.accuracy * 100).toFixed(2)} %`);

  const lstm = convertQuantLSTM(quantRnn);
  const attention = model.attention ? convertQuantAttention(model.attention) : null;
  const integer = new IntegerLm(model, lstm, attention);
  const t3 = performance.now();
  const intScores = evaluate(`${variant} integer`, evalCount, corpus.test, (x, rows) => integer.logits(contextIds(x).data as Int32Array, rows));
  const intSeconds = (performance.now() - t3) / 1000;
  let agree = 0;
  for (let i = 0; i < evalCount; i++) if (intScores.predictions[i] === fakeScores.predictions[i]) agree++;
  console.log(`integer runtime  ppl ${intScores.perplexity.toFixed(2)}  acc ${(intScores.accuracy * 100).toFixed(2)} %  argmax agreement with fake quant ${((agree / evalCount) * 100).toFixed(2)} % (${agree} / ${evalCount})`);
  const fileBytes = encodeLowbit(intLSTMToLowbit(lstm, attention ?? undefined)).length;
  return {
    variant,
    cellBackend: lstm.cellBackend,
    float: { perplexity: floatScores.perplexity, accuracy: floatScores.accuracy, finalTrainLoss: floatLoss, seconds: floatSeconds },
    floatSameFinetune: { perplexity: tunedScores.perplexity, accuracy: tunedScores.accuracy, finalTrainLoss: tunedLoss, seconds: tunedSeconds },
    qatFakeQuant: { perplexity: fakeScores.perplexity, accuracy: fakeScores.accuracy, finalTrainLoss: qatLoss, seconds: qatSeconds },
    integer: { perplexity: intScores.perplexity, accuracy: intScores.accuracy, argmaxAgreementWithFakeQuant: agree / evalCount, agree, seconds: intSeconds },
    fileBytes,
  };
}

manualSeed(seed);
const corpus = loadMobyDickNextWord({ context, maxSize: vocabSize, minCount: 1 });
const evalCount = Math.min(corpus.test.length, evalLimit);
console.log(`Moby Dick: ${corpus.train.length} train windows, evaluating ${evalCount} test windows`);
const variants: Variant[] = variantFlag === 'both' ? ['ln', 'attention'] : [variantFlag as Variant];
const rows = variants.map((v) => runVariant(v, corpus, evalCount));
const setup = { floatEpochs, floatBatchesPerEpoch: Number.isFinite(floatBatches) ? floatBatches : 'all', qatBatches, vocab: vocabSize, embedDim, hiddenSize, context, segments, seed, batchSize, testWindows: evalCount };
const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', `irnn-ln-attn${variants.length === 1 ? `-${variants[0]}` : ''}.json`);
writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify({ benchmark: 'irnn-ln-attn', setup, rows, commit: gitCommit(), date: new Date().toISOString() }, null, 2)}\n`));
console.log(`wrote ${resultsPath}`);
