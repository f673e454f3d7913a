import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import '../backend/index.ts';
import { contextIdBatches, DataLoader, textLanguageModel, type Dataset } from '../data/index.ts';
import { encodeLowbit, readLowbit, type LowbitModel } from '../format/lowbit.ts';
import { NextWordModel } from '../nn/models/next-word.ts';
import { Adam } from '../optim/index.ts';
import { IrnnFormatError } from '../quant/irnn/index.ts';
import { nextWordQatPlan, prepareRnnQat, type QatLSTM } from '../quant/rnn/index.ts';
import { Rng, Tensor } from '../tensor/index.ts';
import { noGrad } from '../autograd/engine.ts';
import { evaluatePerplexity, fit, PerplexityMeter } from '../train/index.ts';
import { convertNextWordModel, intNextWordFromLowbit, intNextWordToLowbit, loadIntNextWord, saveIntNextWord, type IntNextWordModel } from './lm-irnn.ts';
import { evalIntLanguageModel } from './commands/eval-lm.ts';

const CONTEXT = 4;

/** A small text with structure an LSTM can learn: sentences from a fixed grammar, words picked by an LCG. */
function grammarText(sentences: number): string {
  const subjects = ['the cat', 'a dog', 'the old man', 'my friend', 'the bird'];
  const verbs = ['sees', 'likes', 'finds', 'chases'];
  const objects = ['the ball', 'a fish', 'the red box', 'some bread', 'the moon'];
  const ends = ['today', 'again', 'at night', 'slowly'];
  let s = 12345;
  const pick = <T>(list: readonly T[]): T => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return list[Math.floor((s / 2147483648) * list.length)]!;
  };
  const out: string[] = [];
  for (let i = 0; i < sentences; i++) out.push(`${pick(subjects)} ${pick(verbs)} ${pick(objects)} ${pick(ends)} .`);
  return out.join(' ');
}

const corpus = textLanguageModel(grammarText(700), { context: CONTEXT, vocabSize: 64, minCount: 1 }, 'grammar');
const batches = (ds: Dataset, batchSize = 64, shuffle = false): ReturnType<typeof contextIdBatches> => contextIdBatches(new DataLoader(ds, { batchSize, shuffle, seed: 0 }));

/** Float training, then a short W4A8 QAT fine-tune (QAT from scratch learns slowly at this size). */
function trainedModel(): NextWordModel {
  const model = new NextWordModel({ vocabSize: corpus.vocab.size, embeddingDim: 12, hiddenSize: 16, rng: new Rng(1) });
  fit(model, { trainLoader: batches(corpus.train, 64, true), optimizer: new Adam(model.parameters(), { lr: 1e-2 }), epochs: 3, progress: false });
  prepareRnnQat(model, nextWordQatPlan('w4a8')!);
  fit(model, { trainLoader: batches(corpus.train, 64, true), optimizer: new Adam(model.parameters(), { lr: 2e-3 }), epochs: 1, progress: false });
  model.eval();
  return model;
}

function convert(model: NextWordModel): IntNextWordModel {
  return convertNextWordModel(model, [...batches(corpus.train, 128)].map((b) => b.x), {
    context: CONTEXT, vocabulary: corpus.vocab.words, source: 'test', quant: 'w4a8',
  });
}

function intPerplexity(model: IntNextWordModel, ds: Dataset): { perplexity: number; argmax: Int32Array } {
  const meter = new PerplexityMeter();
  const argmax: number[] = [];
  for (const { x, y } of batches(ds)) argmax.push(...meter.add(model.logits(x.data, y.size), y.data, model.vocabSize));
  return { perplexity: meter.result().perplexity, argmax: Int32Array.from(argmax) };
}

const qat = trainedModel();
const intModel = convert(qat);

describe('integer-only next-word LM (lowbit export --format irnn)', () => {
  it('keeps the QAT model\'s test perplexity within 1 % and its next word on >= 95 % of windows', () => {
    const ref = evaluatePerplexity(qat, batches(corpus.test));
    const got = intPerplexity(intModel, corpus.test);
    // The model learned something (uniform guessing would be the vocabulary size).
    assert.ok(ref.perplexity < corpus.vocab.size / 3, `fake-quant perplexity ${ref.perplexity} vs vocabulary ${corpus.vocab.size}`);
    assert.ok(Math.abs(got.perplexity / ref.perplexity - 1) < 0.01, `integer ${got.perplexity} vs fake-quant ${ref.perplexity}`);
    const refArgmax = new PerplexityMeter();
    let agree = 0;
    let seen = 0;
    for (const { x, y } of batches(corpus.test)) {
      const a = refArgmax.add(qat.forward(x).data, y.data, corpus.vocab.size);
      for (let i = 0; i < a.length; i++) if (a[i] === got.argmax[seen + i]) agree++;
      seen += a.length;
    }
    assert.ok(agree / seen >= 0.95, `argmax agreement ${agree}/${seen}`);
    assert.equal(intModel.rnn.params.weightBits, 4, 'a w4a8 run keeps 4-bit LSTM weights');
  });

  it('computes the head exactly: int32 dot products of int8 h and int8 weights, scaled per row', () => {
    const { x } = [...batches(corpus.test, 5)][0]!;
    const logits = intModel.logits(x.data, 5);
    const V = intModel.vocabSize;
    const { inputSize: E, hiddenSize: H } = intModel.rnn;
    const codes = new Int8Array(CONTEXT * 5 * E);
    for (let n = 0; n < 5; n++) for (let t = 0; t < CONTEXT; t++) codes.set(intModel.table.subarray(x.data[n * CONTEXT + t]! * E, (x.data[n * CONTEXT + t]! + 1) * E), (t * 5 + n) * E);
    const h = intModel.rnn.run(codes, CONTEXT, 5).state.h;
    const hs = intModel.rnn.params.hiddenScale;
    for (let n = 0; n < 5; n++) {
      for (let r = 0; r < V; r++) {
        let acc = 0;
        for (let j = 0; j < H; j++) acc += h[n * H + j]! * intModel.headWeight[r * H + j]!;
        assert.equal(logits[n * V + r], Math.fround(acc * intModel.headScale[r]! * hs + intModel.headBias[r]!), `logit [${n}, ${r}]`);
      }
    }
    // The stored table is the LSTM input as the QAT model's matmul sees it (Q_x of the embedding), requantized at the LSTM's input scale.
    const qx = (qat.rnn as unknown as QatLSTM).layerQuantizers(0).input!;
    const table = noGrad(() => qx.forward(qat.embedding.forward(new Tensor(Int32Array.of(3), [1, 1])))).data;
    const s = intModel.rnn.params.inputScale;
    for (let k = 0; k < E; k++) assert.ok(Math.abs(intModel.table[3 * E + k]! * s - table[k]!) <= s / 2 + 1e-7, `table [3, ${k}]: ${intModel.table[3 * E + k]} * ${s} vs ${table[k]}`);
  });

  it('round-trips through the file bit-exactly, metadata included', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lm-irnn-'));
    try {
      const path = join(dir, 'm.irnn');
      saveIntNextWord(path, intModel);
      const back = loadIntNextWord(path);
      assert.deepEqual(back.meta, intModel.meta);
      assert.equal(back.rnn.params.weightBits, 4);
      const { x, y } = [...batches(corpus.test)][0]!;
      assert.deepEqual(back.logits(x.data, y.size), intModel.logits(x.data, y.size));
      assert.ok(back.byteLength > 0 && back.byteLength === intModel.byteLength);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses malformed files with an IrnnFormatError naming the problem', () => {
    const good = intNextWordToLowbit(intModel);
    const decoded = (m: LowbitModel): LowbitModel => readLowbit(encodeLowbit(m));
    const withTensors = (patch: Record<string, LowbitModel['tensors'][string] | undefined>): LowbitModel => {
      const tensors = { ...good.tensors, ...patch };
      for (const k of Object.keys(patch)) if (patch[k] === undefined) delete tensors[k];
      return { ...good, tensors: tensors as LowbitModel['tensors'] };
    };
    const withLm = (patch: Record<string, unknown>): LowbitModel => ({ ...good, metadata: { ...good.metadata, lm: { ...(good.metadata!['lm'] as object), ...patch } } });
    const V = intModel.vocabSize;
    const H = intModel.rnn.hiddenSize;
    const cases: [string, LowbitModel, RegExp][] = [
      ['no lm metadata', { ...good, metadata: { ...good.metadata, lm: undefined } }, /metadata\.lm/],
      ['wrong version', withLm({ version: 2 }), /version/],
      ['context 0', withLm({ context: 0 }), /context/],
      ['vocabulary not strings', withLm({ vocabulary: [1, 2, 3] }), /vocabulary/],
      ['vocabulary of another size', withLm({ vocabulary: corpus.vocab.words.slice(1) }), /lm\.embedding/],
      ['missing embedding', withTensors({ 'lm.embedding': undefined }), /lm\.embedding is missing/],
      ['head of the wrong shape', withTensors({ 'lm.head.weight': { dtype: 'int8', shape: [V, H - 1], data: new Int8Array(V * (H - 1)) } }), /lm\.head\.weight/],
      ['head code -128', withTensors({ 'lm.head.weight': { dtype: 'int8', shape: [V, H], data: Int8Array.from(intModel.headWeight, (v, i) => (i === 7 ? -128 : v)) } }), /-128/],
      ['zero scale', withTensors({ 'lm.head.scale': { dtype: 'float32', shape: [V], data: new Float32Array(V) } }), /scale\[0\]/],
      ['NaN bias', withTensors({ 'lm.head.bias': { dtype: 'float32', shape: [V], data: new Float32Array(V).fill(Number.NaN) } }), /not finite/],
      ['bad LSTM field', { ...good, graph: [{ ...good.graph[0]!, hiddenSize: 0 }] }, /hiddenSize/],
    ];
    for (const [label, model, message] of cases) {
      assert.throws(() => intNextWordFromLowbit(decoded(model)), (e: unknown) => e instanceof IrnnFormatError && message.test(e.message), label);
    }
    // The container's own checks: a truncated file is refused by the .lowbit reader.
    const bytes = encodeLowbit(good);
    assert.throws(() => loadIntNextWord(bytes.subarray(0, bytes.length - 10)), /truncated|expected|bytes/i);
  });

  it('refuses a run with activations narrower than 8 bits (w4a4)', () => {
    const w4a4 = new NextWordModel({ vocabSize: corpus.vocab.size, embeddingDim: 4, hiddenSize: 4, rng: new Rng(0) });
    prepareRnnQat(w4a4, nextWordQatPlan('w4a4')!);
    assert.throws(() => convertNextWordModel(w4a4, [], { context: CONTEXT, vocabulary: corpus.vocab.words }), /LSTM input x_t was trained at 4 bits/);
  });

  it('needs calibration batches, and lowbit eval refuses a file that does not name its corpus (GRU cores: lm-irnn-gru.test.ts)', () => {
    const gru = new NextWordModel({ vocabSize: corpus.vocab.size, embeddingDim: 4, hiddenSize: 4, cell: 'gru', rng: new Rng(0) });
    assert.throws(() => convertNextWordModel(gru, [], { context: CONTEXT, vocabulary: corpus.vocab.words }), /no calibration batches/);
    const dir = mkdtempSync(join(tmpdir(), 'lm-irnn-'));
    try {
      const path = join(dir, 'm.irnn');
      saveIntNextWord(path, intModel);
      assert.throws(() => evalIntLanguageModel(path, { batchSize: 64 }, { print: () => {} } as never), /does not name its corpus/);
      writeFileSync(join(dir, 'junk.irnn'), readFileSync(path).subarray(0, 100));
      assert.throws(() => evalIntLanguageModel(join(dir, 'junk.irnn'), { batchSize: 64 }, { print: () => {} } as never), /not a valid integer language-model file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
