/**
 * A next-word LSTM language model on Moby Dick exported to ONNX and run in onnxruntime-node:
 * test perplexity, argmax agreement and largest logit difference ORT vs lowbit, for the float32
 * model and three QAT variants (weight QDQ), plus the ONNX file sizes and the forward time of
 * ORT vs lowbit on the same test windows (wall clock, one ORT thread, shared machine: indicative).
 *
 *   nice -n 10 node --import tsx bench/onnx-rnn/lm.ts [--vocab 2000] [--embed 64] [--hidden 128]
 *        [--context 8] [--float-batches 300] [--qat-batches 100] [--eval-limit 5000] [--seed 0]
 *
 * Model: context ids [B, C] → Embedding → LSTM (batch first) → h at the last step → Linear →
 * logits. Float: Adam lr 5e-3, batch 128, `--float-batches` batches; each QAT variant starts from the float
 * weights (prepareRnnQat) and trains `--qat-batches` more batches at lr 1e-3. Variants: W8 per row + A8
 * (ONNX LSTM node), W4 per row + A8 (LSTM node), W4 per row + A8 + h A8 (unrolled over C steps),
 * W4 per row weight-only. Each is exported with activation quantizers as QuantizeLinear/
 * DequantizeLinear ('qdq') and as the float64 emulation of lowbit's fakeQuantize ('exact'), and
 * run with onnxruntime's default MatMulNBits accuracy level (4: int8 inputs on the fly) and with 0.
 * Writes bench/results/onnx-rnn-lm.json.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { contextIds, DataLoader, loadMobyDickNextWord, take } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { Embedding, Linear, LSTM, Module } from '../../src/nn/index.ts';
import { exportRnnOnnx, openRnnOnnx, runRnnChain, type RnnOnnxRunner } from '../../src/onnx/index.ts';
import { QuantLinear } from '../../src/quant/qat/index.ts';
import { roundHalfEven } from '../../src/backend/reference/elementwise.ts';
import { prepareRnnQat, type RnnQatConfig } from '../../src/quant/rnn/index.ts';
import { manualSeed, narrow, reshape, Rng, Tensor } from '../../src/tensor/index.ts';
import { trainAdam } from '../train-loop.ts';
import { numberFlag } from '../flags.ts';

const vocabSize = numberFlag('vocab', 2000, { integer: true, min: 2 });
const embedDim = numberFlag('embed', 64, { integer: true, min: 1 });
const hiddenSize = numberFlag('hidden', 128, { integer: true, min: 1 });
const context = numberFlag('context', 8, { integer: true, min: 1 });
const floatBatches = numberFlag('float-batches', 300, { integer: true, min: 1 });
const qatBatches = numberFlag('qat-batches', 100, { integer: true, min: 1 });
const evalLimit = numberFlag('eval-limit', 5000, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });

class WordLstm extends Module {
  readonly embedding: Embedding;
  readonly rnn: LSTM;
  readonly head: Linear;
  constructor(rng: Rng) {
    super();
    this.embedding = this.registerModule('embedding', new Embedding(vocabSize, embedDim, { rng }));
    this.rnn = this.registerModule('rnn', new LSTM(embedDim, hiddenSize, { batchFirst: true, rng }));
    this.head = this.registerModule('head', new Linear(hiddenSize, vocabSize, { rng }));
  }
  /** ids [B, C] int32 (or a next-word batch [B, 1, 1, C]) → logits [B, V]. */
  forward(x: Tensor): Tensor {
    const ids = x.rank === 4 ? contextIds(x) : x;
    const [out] = this.rnn.forward(this.embedding.forward(ids));
    return this.head.forward(reshape(narrow(out, 1, context - 1, 1), [ids.shape[0]!, hiddenSize]));
  }
}

function score(logits: ArrayLike<number>, targets: ArrayLike<number>, from: number, rows: number, acc: { nll: number; predictions: Int32Array }): void {
  for (let i = 0; i < rows; i++) {
    let max = -Infinity;
    let arg = 0;
    for (let c = 0; c < vocabSize; c++) {
      const v = logits[i * vocabSize + c]!;
      if (v > max) {
        max = v;
        arg = c;
      }
    }
    let sum = 0;
    for (let c = 0; c < vocabSize; c++) sum += Math.exp(logits[i * vocabSize + c]! - max);
    acc.nll += Math.log(sum) + max - logits[i * vocabSize + targets[i]!]!;
    acc.predictions[from + i] = arg;
  }
}

manualSeed(seed);
const corpus = loadMobyDickNextWord({ context, maxSize: vocabSize });
const testSet = take(corpus.test, Math.min(evalLimit, corpus.test.length));
const batches = [...new DataLoader(testSet, { batchSize: 256 })].map(({ x, y }) => ({ ids: contextIds(x), y: y.data }));
const count = testSet.length;
console.log(`Moby Dick: vocabulary ${corpus.vocab.size}, ${corpus.train.length} train / ${count} test windows of ${context} words`);

const model = new WordLstm(new Rng(seed));
trainAdam(model, corpus.train, { rounds: 1, lr: 5e-3, label: 'float', batchSize: 128, seed, maxBatches: floatBatches });
model.eval();

interface Row {
  readonly variant: string;
  /** How activation quantizers were written (exportRnnOnnx's `activations`). */
  readonly activations: 'qdq' | 'exact';
  /** onnxruntime's session.qdq_matmulnbits_accuracy_level (4 is its default). */
  readonly matMulNBitsAccuracyLevel: 0 | 4;
  readonly kind: string;
  readonly recurrent: string;
  readonly onnxBytes: number;
  readonly perplexityLowbit: number;
  readonly perplexityOrt: number;
  readonly argmaxAgreement: number;
  readonly maxRelLogitDiff: number;
  /** Windows whose logits differ by more than 1e-4 × that window's largest |logit|. */
  readonly windowsOverTolerance: number;
  /** Max |Δ| of h_L (the head's input), ORT (graph cut before the head) vs lowbit. */
  readonly hiddenMaxAbsDiff: number;
  /** Elements of h_L whose integer code under the head's input quantizer differs ORT vs lowbit (QuantLinear heads). */
  readonly headInputCodeFlips: number;
  /** Best of 3 passes over the test windows (batch 256), wall clock. */
  readonly lowbitSeconds: number;
  readonly ortSeconds: number;
}

async function open(bytes: Uint8Array, accuracyLevel: 0 | 4): Promise<RnnOnnxRunner> {
  const runner = await openRnnOnnx(bytes, { threads: 1, matMulNBitsAccuracyLevel: accuracyLevel });
  if ('skipped' in runner) throw new Error(`onnxruntime-node: ${runner.skipped}`);
  return runner;
}

async function measure(variant: string, m: WordLstm, sequenceLength: number, activations: 'qdq' | 'exact', accuracyLevel: 0 | 4): Promise<Row> {
  const ex = exportRnnOnnx(m, { lastStep: true, sequenceLength, activations });
  // The same model cut before the head, to compare h_L itself.
  const cut = exportRnnOnnx([m.embedding, m.rnn], { lastStep: true, sequenceLength, activations });
  const runner = await open(ex.bytes, accuracyLevel);
  const hidden = await open(cut.bytes, accuracyLevel);
  const headQuant = m.head instanceof QuantLinear ? m.head.inputQuantizer?.exportQuant() : undefined;
  const headScale = headQuant?.type === 'affine' ? headQuant.qparams : null;
  const mine = { nll: 0, predictions: new Int32Array(count) };
  const theirs = { nll: 0, predictions: new Int32Array(count) };
  let maxDiff = 0;
  let maxRef = 0;
  let over = 0;
  let hiddenMax = 0;
  let flips = 0;
  let from = 0;
  const code = (v: number): number => Math.min(headScale!.qmax, Math.max(headScale!.qmin, roundHalfEven(v / headScale!.scale[0]!) + headScale!.zeroPoint[0]!));
  try {
    for (const { ids, y } of batches) {
      const ref = noGrad(() => m.forward(ids)).data;
      const out = (await runner.run({ input: ids }))['logits']!.data;
      for (let w = 0; w < y.length; w++) {
        let rowDiff = 0;
        let rowRef = 0;
        for (let i = w * vocabSize; i < (w + 1) * vocabSize; i++) {
          rowDiff = Math.max(rowDiff, Math.abs(out[i]! - ref[i]!));
          rowRef = Math.max(rowRef, Math.abs(ref[i]!));
        }
        if (rowDiff > 1e-4 * rowRef) over++;
        maxDiff = Math.max(maxDiff, rowDiff);
        maxRef = Math.max(maxRef, rowRef);
      }
      const hRef = noGrad(() => runRnnChain([['embedding', m.embedding], ['rnn', m.rnn]], ids, { lastStep: true }).output).data;
      const hOrt = (await hidden.run({ input: ids }))['logits']!.data;
      for (let i = 0; i < hRef.length; i++) {
        hiddenMax = Math.max(hiddenMax, Math.abs(hRef[i]! - hOrt[i]!));
        if (headScale && code(hRef[i]!) !== code(hOrt[i]!)) flips++;
      }
      score(ref, y, from, y.length, mine);
      score(out, y, from, y.length, theirs);
      from += y.length;
    }
    // Timing: best of 3 passes each.
    let lowbitSeconds = Infinity;
    let ortSeconds = Infinity;
    for (let pass = 0; pass < 3; pass++) {
      let t0 = performance.now();
      for (const { ids } of batches) noGrad(() => m.forward(ids));
      lowbitSeconds = Math.min(lowbitSeconds, (performance.now() - t0) / 1000);
      t0 = performance.now();
      for (const { ids } of batches) await runner.run({ input: ids });
      ortSeconds = Math.min(ortSeconds, (performance.now() - t0) / 1000);
    }
    let agree = 0;
    for (let i = 0; i < count; i++) if (mine.predictions[i] === theirs.predictions[i]) agree++;
    const row: Row = {
      variant, activations, matMulNBitsAccuracyLevel: accuracyLevel, kind: ex.kind, recurrent: Object.values(ex.recurrent).join(','), onnxBytes: ex.bytes.length,
      perplexityLowbit: Math.exp(mine.nll / count), perplexityOrt: Math.exp(theirs.nll / count), argmaxAgreement: agree / count,
      maxRelLogitDiff: maxDiff / maxRef, windowsOverTolerance: over, hiddenMaxAbsDiff: hiddenMax, headInputCodeFlips: flips, lowbitSeconds, ortSeconds,
    };
    console.log(JSON.stringify(row));
    return row;
  } finally {
    await runner.release();
    await hidden.release();
  }
}

const rows: Row[] = [await measure('float32', model, context, 'qdq', 4)];
const act8 = { kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'tensor' };
const w8 = { kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'channel' };
const w4 = { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'channel' };
const variants: [string, RnnQatConfig][] = [
  ['W8 per row, A8 (x_t and head input)', { weight: w8, activation: act8, hidden: null }],
  ['W4 per row, A8', { weight: w4, activation: act8, hidden: null }],
  ['W4 per row, A8, h_{t-1} A8', { weight: w4, activation: act8, hidden: act8 }],
  ['W4 per row, weight-only', { weight: w4, activation: null, hidden: null }],
];
for (const [name, config] of variants) {
  const copy = new WordLstm(new Rng(seed));
  copy.loadStateDict(model.stateDict());
  prepareRnnQat(copy, { default: config });
  trainAdam(copy, corpus.train, { rounds: 1, lr: 1e-3, label: name, batchSize: 128, seed: seed + 1, maxBatches: qatBatches });
  copy.eval();
  rows.push(await measure(name, copy, context, 'qdq', 4));
  if (config.activation) rows.push(await measure(name, copy, context, 'qdq', 0));
  rows.push(await measure(name, copy, context, 'exact', 0));
}

const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'onnx-rnn-lm.json');
writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify({
  bench: 'onnx-rnn/lm', date: new Date().toISOString(), seed,
  model: { vocab: corpus.vocab.size, embed: embedDim, hidden: hiddenSize, context, floatBatches, qatBatches, testWindows: count },
  rows,
}, null, 2)}\n`));
console.log(`wrote ${out}`);
