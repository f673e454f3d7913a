/**
 * LM fusion on a domain shift of the MNIST digit-string task (docs/rnnt-4bit.md, part 3).
 *
 *   nice -n 10 node --import tsx bench/transducer/fusion.ts [--train-steps 600] [--train-minutes 10] [--train 20000]
 *        [--dev 300] [--test 500] [--lm-steps 400] [--lm-qat-steps 150] [--beam 4] [--seed 0]
 *        [--out rnnt-fusion]
 *
 * Domains: digit sequences (2..5 digits) from two Markov chains over 0..9, first digit uniform;
 * source chain A: next = (d + 1) mod 10 with probability 0.7, else uniform over the other nine;
 * target chain B: next = (d + 3) mod 10 with probability 0.7, else uniform. Strips: the chosen
 * MNIST images (train images for training, test images for dev/test) pasted side by side with
 * 0..4 blank columns between and 2..8 around them, read as frames of 2 columns (56 features,
 * MNIST-normalised). The RNN-T (as bench/transducer/digits.ts) trains on domain A only (Adam 2e-3,
 * batch 32, `--train-steps` steps or `--train-minutes`, whichever comes first); LMs
 * (quant.rnn.LstmLanguageModel, E 16, H 64) train on label text of A (source) and B (target);
 * their 4-bit versions are QAT fine-tuned copies (LSQ W4A4 per row, embedding and head at 8 bits).
 * Decoding on domain B: beam search without fusion, shallow fusion (target LM) and density-ratio
 * fusion (target − source) over a small λ grid (shallow also with a label bonus β = λ_t·ln 10);
 * the setting is chosen on the dev strings and reported on test.
 * One seed.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { getBackend } from '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { loadMnist, type Dataset } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { transducer } from '../../src/nn/index.ts';
import { Adam, clipGradNorm } from '../../src/optim/index.ts';
import { manualSeed, Rng, Tensor } from '../../src/tensor/index.ts';
import { fusionScorer, LstmLanguageModel, modelSize, prepareRnnQat, type FusionOptions } from '../../src/quant/rnn/index.ts';
import type { QuantizerSpec } from '../../src/quant/quantizers/quantizer.ts';
import { flag, flagOr, numberFlag } from '../flags.ts';
import { gitCommit } from '../lib.ts';

const trainSteps = numberFlag('train-steps', 600, { integer: true, min: 1 });
const trainMinutes = numberFlag('train-minutes', 10);
const trainCount = numberFlag('train', 20000, { integer: true, min: 1 });
const devCount = numberFlag('dev', 300, { integer: true, min: 1 });
const testCount = numberFlag('test', 500, { integer: true, min: 1 });
const lmSteps = numberFlag('lm-steps', 400, { integer: true, min: 1 });
const lmQatSteps = numberFlag('lm-qat-steps', 150, { integer: true, min: 0 });
const beamSize = numberFlag('beam', 4, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const out = flagOr('out', 'rnnt-fusion');
if (flag('help') !== undefined) process.exit(0);

const seconds = (from: number): number => (performance.now() - from) / 1000;
const log = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

// ------------------------------------------------------------------ domains and strips
type Chain = { readonly name: string; readonly step: number; readonly stay: number };
const SOURCE: Chain = { name: 'A: next = d+1 (p 0.7)', step: 1, stay: 0.7 };
const TARGET: Chain = { name: 'B: next = d+3 (p 0.7)', step: 3, stay: 0.7 };

function sampleDigits(chain: Chain, rng: Rng): number[] {
  const length = 2 + Math.floor(rng.uniform() * 4);
  const digits = [Math.floor(rng.uniform() * 10)];
  while (digits.length < length) {
    const d = digits[digits.length - 1]!;
    const favoured = (d + chain.step) % 10;
    if (rng.uniform() < chain.stay) digits.push(favoured);
    else {
      const other = Math.floor(rng.uniform() * 9);
      digits.push(other >= favoured ? other + 1 : other);
    }
  }
  return digits;
}

interface Strip { readonly digits: number[]; readonly images: number[]; readonly gaps: number[] }

class ChainStrings {
  readonly strips: Strip[] = [];
  private readonly byClass: number[][] = Array.from({ length: 10 }, () => []);
  constructor(readonly source: Dataset, chain: Chain, count: number, stripSeed: number) {
    source.labels.forEach((l, i) => this.byClass[l]!.push(i));
    const rng = new Rng(stripSeed);
    for (let s = 0; s < count; s++) {
      const digits = sampleDigits(chain, rng);
      const images = digits.map((d) => this.byClass[d]![Math.floor(rng.uniform() * this.byClass[d]!.length)]!);
      const gaps = digits.map((_, i) => (i === 0 ? 2 + Math.floor(rng.uniform() * 7) : Math.floor(rng.uniform() * 5)));
      gaps.push(2 + Math.floor(rng.uniform() * 7));
      this.strips.push({ digits, images, gaps });
    }
  }

  /** Frames [B, T, 56] (2 columns per frame, MNIST-normalised), lengths, labels [B, U], label lengths. */
  batch(indices: readonly number[]): { features: Tensor; featureLengths: Int32Array; labels: Tensor; labelLengths: Int32Array } {
    const widths = indices.map((i) => { const s = this.strips[i]!; return s.gaps.reduce((a, b) => a + b, 0) + 28 * s.digits.length; });
    const frames = widths.map((w) => Math.ceil(w / 2));
    const T = Math.max(...frames);
    const U = Math.max(...indices.map((i) => this.strips[i]!.digits.length));
    const background = (0 - 0.1307) / 0.3081;
    const features = new Float32Array(indices.length * T * 56).fill(background);
    const labels = new Int32Array(indices.length * U);
    indices.forEach((index, b) => {
      const s = this.strips[index]!;
      let col = 0;
      s.digits.forEach((d, k) => {
        col += s.gaps[k]!;
        const base = s.images[k]! * 784;
        for (let c = 0; c < 28; c++, col++) {
          const t = col >> 1;
          const half = col & 1;
          for (let r = 0; r < 28; r++) features[(b * T + t) * 56 + half * 28 + r] = (this.source.images[base + r * 28 + c]! - 0.1307) / 0.3081;
        }
        labels[b * U + k] = d;
      });
    });
    return {
      features: new Tensor(features, [indices.length, T, 56]),
      featureLengths: Int32Array.from(frames),
      labels: new Tensor(labels, [indices.length, U]),
      labelLengths: Int32Array.from(indices, (i) => this.strips[i]!.digits.length),
    };
  }
}

function* shuffledBatches(count: number, batchSize: number, rng: Rng): Generator<number[]> {
  for (;;) {
    const order = Array.from({ length: count }, (_, i) => i);
    for (let i = count - 1; i > 0; i--) {
      const j = Math.floor(rng.uniform() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (let i = 0; i + batchSize <= count; i += batchSize) yield order.slice(i, i + batchSize);
  }
}

// ------------------------------------------------------------------ run
manualSeed(seed);
log(`backend ${getBackend()}; loading MNIST`);
const mnistTrain = loadMnist({ split: 'train' });
const mnistTest = loadMnist({ split: 'test' });
const trainA = new ChainStrings(mnistTrain, SOURCE, trainCount, seed + 1);
const testA = new ChainStrings(mnistTest, SOURCE, testCount, seed + 2);
const devB = new ChainStrings(mnistTest, TARGET, devCount, seed + 3);
const testB = new ChainStrings(mnistTest, TARGET, testCount, seed + 4);

// RNN-T on domain A.
const model = new transducer.Transducer({ inputSize: 56, numLabels: 10, encoderSize: 128, embeddingSize: 32, predictorSize: 64, jointSize: 128, rng: new Rng(seed) });
const parameters = model.parameters();
const optimizer = new Adam(parameters, { lr: 0.002 });
model.train();
let steps = 0;
let lossTail: number[] = [];
const trainStart = performance.now();
const batches = shuffledBatches(trainA.strips.length, 32, new Rng(seed + 5));
while (steps < trainSteps && seconds(trainStart) < trainMinutes * 60) {
  const b = trainA.batch(batches.next().value!);
  optimizer.zeroGrad();
  const loss = model.loss(b.features, b.featureLengths, b.labels, b.labelLengths);
  loss.backward();
  clipGradNorm(parameters, 1);
  optimizer.step();
  lossTail = [...lossTail.slice(-49), loss.item()];
  if (++steps % 100 === 0) log(`rnnt step ${steps}: loss ${(lossTail.reduce((a, c) => a + c, 0) / lossTail.length).toFixed(3)}`);
}
const rnntTrain = { steps, seconds: seconds(trainStart), lossLast50: lossTail.reduce((a, c) => a + c, 0) / lossTail.length };
log(`rnnt trained ${steps} steps`);
model.eval();

// LMs on label text.
function textBatch(chain: Chain, rng: Rng, n: number): { labels: Tensor; lengths: Int32Array } {
  const seqs = Array.from({ length: n }, () => sampleDigits(chain, rng));
  const U = Math.max(...seqs.map((s) => s.length));
  const labels = new Int32Array(n * U);
  seqs.forEach((s, b) => labels.set(s, b * U));
  return { labels: new Tensor(labels, [n, U]), lengths: Int32Array.from(seqs, (s) => s.length) };
}
function trainLm(lm: LstmLanguageModel, chain: Chain, count: number, lr: number, rngSeed: number): number {
  const opt = new Adam(lm.parameters(), { lr });
  const rng = new Rng(rngSeed);
  lm.train();
  let last = 0;
  for (let s = 0; s < count; s++) {
    const { labels, lengths } = textBatch(chain, rng, 64);
    opt.zeroGrad();
    const loss = lm.loss(labels, lengths);
    loss.backward();
    opt.step();
    last = 0.9 * last + 0.1 * loss.item();
  }
  lm.eval();
  return last;
}
function lmPerplexity(lm: LstmLanguageModel, chain: Chain): number {
  const { labels, lengths } = textBatch(chain, new Rng(999), 2000);
  return Math.exp(noGrad(() => lm.loss(labels, lengths)).item());
}
const w4: QuantizerSpec = { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'channel' };
const a4: QuantizerSpec = { kind: 'lsq', bits: 4, signed: true, symmetric: true };
const lms: Record<string, { source: LstmLanguageModel; target: LstmLanguageModel }> = {};
const lmInfo: Record<string, unknown> = {};
for (const precision of ['fp32', 'int4']) {
  const pair = {} as { source: LstmLanguageModel; target: LstmLanguageModel };
  for (const [role, chain] of [['source', SOURCE], ['target', TARGET]] as const) {
    const lm = new LstmLanguageModel(10, { rng: new Rng(seed + (role === 'source' ? 11 : 12)) });
    if (precision === 'fp32') trainLm(lm, chain, lmSteps, 0.01, seed + 20);
    else {
      lm.loadStateDict(lms['fp32']![role].stateDict());
      prepareRnnQat(lm, { default: { weight: w4, activation: a4 }, overrides: [{ match: 'body.embedding', config: { weight: { ...w4, bits: 8 } } }, { match: 'head', config: { weight: { ...w4, bits: 8 }, activation: { ...a4, bits: 8 } } }] });
      trainLm(lm, chain, lmQatSteps, 0.002, seed + 21);
    }
    pair[role] = lm;
    const size = precision === 'fp32' ? { bytes: lm.numParameters() * 4, compression: 1 } : modelSize(lm);
    lmInfo[`${precision}/${role}`] = { perplexityOwnDomain: lmPerplexity(lm, chain), perplexityOtherDomain: lmPerplexity(lm, chain === SOURCE ? TARGET : SOURCE), bytes: size.bytes, compression: size.compression };
    log(`LM ${precision} ${role}: ${JSON.stringify(lmInfo[`${precision}/${role}`])}`);
  }
  lms[precision] = pair;
}

// Decoding.
function decode(strings: ChainStrings, fusion: FusionOptions | null): { labelErrorRate: number; seconds: number } {
  const hyps: number[][] = [];
  const refs: number[][] = [];
  const start = performance.now();
  for (let i = 0; i < strings.strips.length; i += 50) {
    const idx = Array.from({ length: Math.min(50, strings.strips.length - i) }, (_, k) => i + k);
    const b = strings.batch(idx);
    const frames = noGrad(() => model.encodeForDecoding(b.features));
    const scorer = fusion ? fusionScorer(model.scorer(), fusion) : model.scorer();
    const nbest = transducer.beamSearch(scorer, frames, b.featureLengths, { beamSize, scores: fusion ? 'logProbs' : 'logits' });
    hyps.push(...nbest.map((n) => n[0]!.labels));
    refs.push(...idx.map((j) => strings.strips[j]!.digits));
  }
  return { labelErrorRate: transducer.labelErrorRate(hyps, refs), seconds: seconds(start) };
}

// Shallow fusion with and without a label bonus β = λ_t·ln 10 (a uniform target LM then adds nothing).
const grid: { kind: string; target: number; source: number; bonus: number }[] = [
  { kind: 'none', target: 0, source: 0, bonus: 0 },
  ...[0.3, 0.6].flatMap((t) => [{ kind: 'shallow', target: t, source: 0, bonus: 0 }, { kind: 'shallow', target: t, source: 0, bonus: t * Math.log(10) }]),
  { kind: 'density-ratio', target: 0.3, source: 0.3, bonus: 0 }, { kind: 'density-ratio', target: 0.6, source: 0.3, bonus: 0 }, { kind: 'density-ratio', target: 0.6, source: 0.6, bonus: 0 },
];
const inDomain = decode(testA, null);
log(`in-domain (A) test, no fusion: LER ${(100 * inDomain.labelErrorRate).toFixed(2)} %`);
const rows: Record<string, unknown>[] = [];
for (const precision of ['fp32', 'int4']) {
  for (const g of grid) {
    if (g.kind === 'none' && precision === 'int4') continue;
    const pair = lms[precision]!;
    const fusion: FusionOptions | null = g.kind === 'none' ? null : { target: { lm: pair.target, weight: g.target }, ...(g.source > 0 ? { source: { lm: pair.source, weight: g.source } } : {}), labelBonus: g.bonus };
    const dev = decode(devB, fusion);
    const test = decode(testB, fusion);
    rows.push({ lm: g.kind === 'none' ? null : precision, ...g, dev, test });
    log(`${precision} ${g.kind} λt=${g.target} λs=${g.source} β=${g.bonus.toFixed(2)}: dev LER ${(100 * dev.labelErrorRate).toFixed(2)} %, test LER ${(100 * test.labelErrorRate).toFixed(2)} % (${test.seconds.toFixed(1)} s)`);
  }
}
// λ chosen on dev per (fusion kind, LM precision).
const chosen: Record<string, unknown> = {};
for (const precision of ['fp32', 'int4']) {
  for (const kind of ['shallow', 'density-ratio']) {
    const candidates = rows.filter((r) => r['lm'] === precision && r['kind'] === kind) as { dev: { labelErrorRate: number }; test: { labelErrorRate: number }; target: number; source: number; bonus: number }[];
    const best = candidates.reduce((a, b) => (b.dev.labelErrorRate < a.dev.labelErrorRate ? b : a));
    chosen[`${precision}/${kind}`] = { target: best.target, source: best.source, bonus: best.bonus, devLer: best.dev.labelErrorRate, testLer: best.test.labelErrorRate };
  }
}
const noFusion = rows.find((r) => r['kind'] === 'none') as { dev: { labelErrorRate: number }; test: { labelErrorRate: number } };
chosen['none'] = { devLer: noFusion.dev.labelErrorRate, testLer: noFusion.test.labelErrorRate };
log(`chosen on dev: ${JSON.stringify(chosen)}`);
const result = {
  benchmark: 'rnnt-fusion', commit: gitCommit(), backend: getBackend(), date: new Date().toISOString(), seed,
  domains: { source: SOURCE, target: TARGET, lengths: [2, 5] },
  data: { train: trainCount, dev: devCount, test: testCount },
  rnnt: { train: rnntTrain, inDomainTestLer: inDomain.labelErrorRate, beamSize },
  lms: lmInfo, lmTraining: { steps: lmSteps, qatSteps: lmQatSteps, batch: 64 },
  grid: rows, chosenOnDev: chosen,
};
const path = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', `${out}.json`);
writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(result, null, 2)}\n`));
log(`wrote ${path}`);
