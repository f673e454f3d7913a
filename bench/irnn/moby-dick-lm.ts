/**
 * iRNN on a next-word LSTM language model (Moby Dick): float LSTM vs QAT iRNN (fake quant, PWL
 * activations) vs the integer-only IntLSTM runtime. Reports test perplexity and accuracy of the
 * three, argmax agreement IntLSTM vs fake quant, model bytes (float32 vs int8), and the CPU time
 * of one LSTM step, IntLSTM vs lowbit's float LSTM inference.
 *
 *   nice -n 10 node --import tsx bench/irnn/moby-dick-lm.ts [--epochs 2] [--qat-epochs 1]
 *        [--qat-batches N (per QAT epoch; default all)] [--vocab 2000] [--embed 64] [--hidden 128] [--context 8] [--segments 16] [--seed 0]
 *        [--limit-words N] [--eval-limit N]
 *
 * Model: context ids [B, C] → Embedding [B, C, E] → one-layer LSTM (batch first) → h at the last
 * step → Linear → vocabulary logits, cross-entropy; batch 128, Adam; the first 90 % of the novel
 * trains, the last 10 % tests. Float training first (nn.LSTM, fused native kernel; a copy is
 * fine-tuned in float as long as the QAT run, as the fair baseline), then
 * QuantLSTM.fromLSTM + a fake-quant head (int8 per-row weights) fine-tuned for `--qat-epochs`,
 * then convertQuantLSTM. The integer pipeline: embedding rows stored as int8 at the LSTM's input
 * scale (exactly the fake quantization of x), IntLSTM over the context, int8 head (int32
 * accumulators; the logits are scaled to float once, after the time loop, for the softmax).
 * Timings: process.cpuUsage (user + system) around the LSTM part only, on a machine shared with
 * other jobs. The row is written to bench/results/irnn-moby-dick.json (atomically).
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { contextIds, DataLoader, loadMobyDickNextWord, type Dataset } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { Embedding, Linear, LSTM, Module } from '../../src/nn/index.ts';
import { fakeQuantize } from '../../src/quant/core/quantize.ts';
import { convertQuantLSTM, QuantLSTM, rowScales, saveIntLSTM, type IntLSTM } from '../../src/quant/irnn/index.ts';
import { roundHalfEven } from '../../src/backend/reference/elementwise.ts';
import { gemmInt8, packInt8Weights, type PackedWeights } from '../../src/runtime/kernels/index.ts';
import { linear, manualSeed, narrow, reshape, Rng, Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { trainAdam } from '../train-loop.ts';
import { flag, numberFlag } from '../flags.ts';
import { scoreLogits } from './scores.ts';

const epochs = numberFlag('epochs', 2, { integer: true });
const qatEpochs = numberFlag('qat-epochs', 1, { integer: true });
const qatBatches = flag('qat-batches') === undefined ? Infinity : numberFlag('qat-batches', 0, { integer: true });
const vocabSize = numberFlag('vocab', 2000, { integer: true });
const embedDim = numberFlag('embed', 64, { integer: true });
const hiddenSize = numberFlag('hidden', 128, { integer: true });
const context = numberFlag('context', 8, { integer: true });
const segments = numberFlag('segments', 16, { integer: true });
const seed = numberFlag('seed', 0, { integer: true });
const limitWords = flag('limit-words') === undefined ? undefined : numberFlag('limit-words', 0, { integer: true });
const evalLimit = flag('eval-limit') === undefined ? Infinity : numberFlag('eval-limit', 0, { integer: true });
const batchSize = 128;

/** Embedding → LSTM (float or QuantLSTM) → last h → head. */
class WordLstm extends Module {
  readonly embedding: Embedding;
  rnn: LSTM | QuantLSTM;
  readonly head: Linear;
  /** Fake-quantize the head's weights per row (int8, symmetric). */
  quantHead = false;

  constructor(rng: Rng) {
    super();
    this.embedding = this.registerModule('embedding', new Embedding(vocabSize, embedDim, { rng }));
    this.rnn = this.registerModule('rnn', new LSTM(embedDim, hiddenSize, { batchFirst: true, rng }));
    this.head = this.registerModule('head', new Linear(hiddenSize, vocabSize, { rng }));
  }

  forward(x: Tensor): Tensor {
    const ids = contextIds(x);
    const [output] = this.rnn.forward(this.embedding.forward(ids));
    const last = reshape(narrow(output, 1, context - 1, 1), [ids.shape[0]!, hiddenSize]);
    if (!this.quantHead) return this.head.forward(last);
    const scales = rowScales(this.head.weight);
    const w = fakeQuantize(this.head.weight, { scale: scales, zeroPoint: new Int32Array(vocabSize), bits: 8, qmin: -127, qmax: 127, axis: 0, groupSize: null });
    return linear(last, w, this.head.bias);
  }
}

function train(model: WordLstm, ds: Dataset, rounds: number, lr: number, label: string, maxBatches = Infinity): number {
  return trainAdam(model, ds, { rounds, lr, label, batchSize, seed, maxBatches });
}

interface Scores {
  perplexity: number;
  accuracy: number;
  /** argmax per sample (for agreement). */
  predictions: Int32Array;
}

function evaluateModel(model: WordLstm, ds: Dataset, count: number): Scores {
  const acc = { loss: 0, correct: 0, predictions: new Int32Array(count) };
  let seen = 0;
  noGrad(() => {
    for (const { x, y } of new DataLoader(ds, { batchSize: 512 })) {
      if (seen >= count) break;
      const rows = Math.min(y.size, count - seen);
      const logits = model.forward(x);
      scoreLogits(logits.data, y.data, rows, seen, acc, vocabSize);
      seen += rows;
    }
  });
  return { perplexity: Math.exp(acc.loss / count), accuracy: acc.correct / count, predictions: acc.predictions };
}

/** The integer pipeline: int8 embedding codes → IntLSTM → int8 head with int32 accumulators. */
class IntegerLm {
  readonly table: Int8Array;
  readonly headWeight: Int8Array;
  readonly headScale: Float32Array;
  readonly headBias: Float32Array;
  readonly headPacked: PackedWeights;
  lstmCpuMs = 0;
  lstmSteps = 0;

  constructor(model: WordLstm, readonly lstm: IntLSTM) {
    this.table = lstm.quantizeInput(model.embedding.weight.data);
    this.headScale = rowScales(model.head.weight);
    const w = model.head.weight.data;
    this.headWeight = new Int8Array(w.length);
    for (let i = 0; i < w.length; i++) this.headWeight[i] = Math.max(-127, Math.min(127, roundHalfEven(w[i]! / this.headScale[Math.floor(i / hiddenSize)]!)));
    this.headBias = Float32Array.from(model.head.bias!.data);
    this.headPacked = packInt8Weights(this.headWeight, vocabSize, hiddenSize);
  }

  get byteLength(): number {
    return this.table.length + this.lstm.byteLength + this.headWeight.length + this.headScale.length * 4 + this.headBias.length * 4;
  }

  /** Logits [N, V] of a batch of context ids [N, C] (int32). */
  logits(ids: Int32Array, batch: number): Float32Array {
    const E = embedDim;
    const x = new Int8Array(context * batch * E);
    for (let n = 0; n < batch; n++) for (let t = 0; t < context; t++) x.set(this.table.subarray(ids[n * context + t]! * E, (ids[n * context + t]! + 1) * E), (t * batch + n) * E);
    const start = process.cpuUsage();
    const { state } = this.lstm.run(x, context, batch);
    const used = process.cpuUsage(start);
    this.lstmCpuMs += (used.user + used.system) / 1000;
    this.lstmSteps += context;
    // Head: int8 × int8 → int32 with the runtime's GEMM, then one float scale per logit for the softmax.
    const acc = new Int32Array(batch * vocabSize);
    gemmInt8(batch, vocabSize, hiddenSize, state.h, 0, this.headPacked, acc);
    const out = new Float32Array(batch * vocabSize);
    const hs = this.lstm.params.hiddenScale;
    for (let n = 0; n < batch; n++) {
      for (let r = 0; r < vocabSize; r++) out[n * vocabSize + r] = acc[n * vocabSize + r]! * this.headScale[r]! * hs + this.headBias[r]!;
    }
    return out;
  }
}

function evaluateInteger(lm: IntegerLm, ds: Dataset, count: number): Scores {
  const acc = { loss: 0, correct: 0, predictions: new Int32Array(count) };
  let seen = 0;
  const bar = new ProgressBar({ total: count, label: 'IntLSTM test (samples)' });
  for (const { x, y } of new DataLoader(ds, { batchSize: 512 })) {
    if (seen >= count) break;
    const rows = Math.min(y.size, count - seen);
    const ids = contextIds(x).data as Int32Array;
    scoreLogits(lm.logits(ids, y.size), y.data, rows, seen, acc, vocabSize);
    seen += rows;
    bar.tick(rows);
  }
  bar.done();
  return { perplexity: Math.exp(acc.loss / count), accuracy: acc.correct / count, predictions: acc.predictions };
}

/** CPU ms per time step of lowbit's float LSTM forward (noGrad) on the same batches of embeddings. */
function floatLstmStepMs(model: WordLstm, lstm: LSTM, ds: Dataset, batches: number): number {
  let ms = 0;
  let steps = 0;
  noGrad(() => {
    let b = 0;
    for (const { x } of new DataLoader(ds, { batchSize: 512 })) {
      if (b++ >= batches) break;
      const emb = model.embedding.forward(contextIds(x));
      const start = process.cpuUsage();
      lstm.forward(emb);
      const used = process.cpuUsage(start);
      ms += (used.user + used.system) / 1000;
      steps += context;
    }
  });
  return ms / steps;
}

manualSeed(seed);
const rng = new Rng(seed);
const corpus = loadMobyDickNextWord({ context, maxSize: vocabSize, minCount: 1, limitWords });
const evalCount = Math.min(corpus.test.length, evalLimit);
console.log(`Moby Dick: ${corpus.trainWords} train / ${corpus.testWords} test words, vocabulary ${corpus.vocab.size}; ${corpus.train.length} train windows, evaluating ${evalCount} test windows`);

const model = new WordLstm(rng);
const wall0 = performance.now();
const floatLoss = train(model, corpus.train, epochs, 2e-3, 'float');
const floatSeconds = (performance.now() - wall0) / 1000;
const floatScores = evaluateModel(model, corpus.test, evalCount);
console.log(`float LSTM     ppl ${floatScores.perplexity.toFixed(1)}  acc ${(floatScores.accuracy * 100).toFixed(2)} %`);
const floatLstm = model.rnn as LSTM;
const trained = model.stateDict();

// The float model fine-tuned exactly as long as the QAT model will be (same lr, batches and
// shuffling), so the QAT comparison is not flattered by the extra steps.
const tuned = new WordLstm(new Rng(seed));
tuned.loadStateDict(trained);
const tunedLoss = qatEpochs > 0 ? train(tuned, corpus.train, qatEpochs, 5e-4, 'float fine-tune', qatBatches) : Number.NaN;
tuned.eval();
const tunedScores = evaluateModel(tuned, corpus.test, evalCount);
console.log(`float LSTM + same fine-tune  ppl ${tunedScores.perplexity.toFixed(1)}  acc ${(tunedScores.accuracy * 100).toFixed(2)} %`);

// PWL activations alone (no quantization), straight from the float weights.
model.rnn = QuantLSTM.fromLSTM(floatLstm, { quantize: false, segments });
const pwlScores = evaluateModel(model, corpus.test, evalCount);
console.log(`PWL LSTM       ppl ${pwlScores.perplexity.toFixed(1)}  acc ${(pwlScores.accuracy * 100).toFixed(2)} %  (float, no fine-tuning)`);

// QAT: QuantLSTM from the float weights + int8 head, fine-tuned.
const quant = QuantLSTM.fromLSTM(floatLstm, { segments });
model.setSubmodule('rnn', quant);
model.rnn = quant;
model.quantHead = true;
model.train();
const wall1 = performance.now();
const qatLoss = qatEpochs > 0 ? train(model, corpus.train, qatEpochs, 5e-4, 'QAT', qatBatches) : Number.NaN;
const qatSeconds = (performance.now() - wall1) / 1000;
if (qatEpochs === 0) noGrad(() => { for (const { x } of new DataLoader(corpus.train, { batchSize: 512 })) { model.forward(x); break; } });
model.eval();
const fakeScores = evaluateModel(model, corpus.test, evalCount);
console.log(`QAT iRNN (fake quant) ppl ${fakeScores.perplexity.toFixed(1)}  acc ${(fakeScores.accuracy * 100).toFixed(2)} %`);

const runtime = convertQuantLSTM(quant);
const integer = new IntegerLm(model, runtime);
const intScores = evaluateInteger(integer, corpus.test, evalCount);
let agree = 0;
for (let i = 0; i < evalCount; i++) if (intScores.predictions[i] === fakeScores.predictions[i]) agree++;
console.log(`IntLSTM runtime ppl ${intScores.perplexity.toFixed(1)}  acc ${(intScores.accuracy * 100).toFixed(2)} %  argmax agreement with fake quant ${((agree / evalCount) * 100).toFixed(2)} %`);

const dir = mkdtempSync(join(tmpdir(), 'lowbit-irnn-bench-'));
let lstmFileBytes: number;
try {
  saveIntLSTM(join(dir, 'lstm.lowbit'), runtime);
  lstmFileBytes = statSync(join(dir, 'lstm.lowbit')).size;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const floatLstmBytes = floatLstm.parameters().reduce((n, p) => n + p.size * 4, 0);
const floatBytes = model.embedding.weight.size * 4 + floatLstmBytes + (model.head.weight.size + model.head.bias!.size) * 4;
const intStepMs = integer.lstmCpuMs / integer.lstmSteps;

/** Batch 1 (one sequence at a time, the on-device case): CPU ms per step over `sequences` test contexts, both runtimes alternating. */
function batchOneStepMs(sequences: number): { int: number; float: number } {
  const first = new DataLoader(corpus.test, { batchSize: sequences })[Symbol.iterator]().next().value as { x: Tensor };
  const ids = contextIds(first.x).data as Int32Array;
  let intMs = 0;
  let floatMs = 0;
  noGrad(() => {
    for (let round = 0; round < 3; round++) {
      for (let n = 0; n < sequences; n++) {
        const one = ids.subarray(n * context, (n + 1) * context);
        const x = new Int8Array(context * embedDim);
        for (let t = 0; t < context; t++) x.set(integer.table.subarray(one[t]! * embedDim, (one[t]! + 1) * embedDim), t * embedDim);
        let start = process.cpuUsage();
        runtime.run(x, context, 1);
        let used = process.cpuUsage(start);
        intMs += (used.user + used.system) / 1000;
        const emb = model.embedding.forward(new Tensor(Int32Array.from(one), [1, context]));
        start = process.cpuUsage();
        floatLstm.forward(emb);
        used = process.cpuUsage(start);
        floatMs += (used.user + used.system) / 1000;
      }
    }
  });
  return { int: intMs / (3 * sequences * context), float: floatMs / (3 * sequences * context) };
}
const single = batchOneStepMs(256);
const floatStepMs = floatLstmStepMs(model, floatLstm, corpus.test, Math.max(1, Math.ceil(Math.min(evalCount, 4096) / 512)));

const row = {
  setup: { epochs, qatEpochs, qatBatchesPerEpoch: Number.isFinite(qatBatches) ? qatBatches : 'all', vocab: corpus.vocab.size, embedDim, hiddenSize, context, segments, seed, batchSize, trainWindows: corpus.train.length, testWindows: evalCount },
  float: { perplexity: floatScores.perplexity, accuracy: floatScores.accuracy, finalTrainLoss: floatLoss, seconds: floatSeconds },
  floatSameFinetune: { perplexity: tunedScores.perplexity, accuracy: tunedScores.accuracy, finalTrainLoss: tunedLoss },
  pwlNoFinetune: { perplexity: pwlScores.perplexity, accuracy: pwlScores.accuracy },
  qatFakeQuant: { perplexity: fakeScores.perplexity, accuracy: fakeScores.accuracy, finalTrainLoss: qatLoss, seconds: qatSeconds },
  intLstm: { perplexity: intScores.perplexity, accuracy: intScores.accuracy, argmaxAgreementWithFakeQuant: agree / evalCount },
  bytes: {
    floatModel: floatBytes, int8Model: integer.byteLength, ratio: floatBytes / integer.byteLength,
    floatLstm: floatLstmBytes, intLstm: runtime.byteLength, intLstmFile: lstmFileBytes,
  },
  stepCpuMs: {
    batch: 512, intLstm: intStepMs, floatLstmNative: floatStepMs,
    batchOne: { intLstm: single.int, floatLstmNative: single.float },
    note: 'process.cpuUsage (user+system) of the LSTM part per time step of a 512-sequence batch, machine shared with other jobs',
  },
  date: new Date().toISOString(),
};
console.log(`bytes: float ${floatBytes} vs int8 ${integer.byteLength} (${row.bytes.ratio.toFixed(2)}x); LSTM alone ${floatLstmBytes} vs ${runtime.byteLength} (file ${lstmFileBytes})`);
console.log(`LSTM step CPU time, batch 512: IntLSTM ${intStepMs.toFixed(2)} ms vs float LSTM (native) ${floatStepMs.toFixed(3)} ms`);
console.log(`LSTM step CPU time, batch 1: IntLSTM ${(single.int * 1000).toFixed(1)} µs vs float LSTM (native) ${(single.float * 1000).toFixed(1)} µs`);
const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'irnn-moby-dick.json');
writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify({ benchmark: 'irnn-moby-dick', row }, null, 2)}\n`));
console.log(`wrote ${resultsPath}`);
