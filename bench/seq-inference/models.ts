/**
 * The models of the `seq-inference` bench section, built in-process: lowbit's Moby Dick next-word
 * LMs at the CLI's default shapes (docs/lm.md), their integer `.irnn` conversions, their ONNX
 * exports, and the hand-off of their weights and input ids to the PyTorch peer
 * (bench/peers/torch_seq.py). Kept apart from the timing so that the test of the hand-off
 * (test/bench-seq-peers.test.ts) builds the same things at small sizes.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { noGrad } from '../../src/autograd/index.ts';
import { convertNextWordModel, loadIntNextWord, saveIntNextWord, type IntNextWordModel } from '../../src/cli/lm-irnn.ts';
import { contextIdBatches, DataLoader, loadLanguageModelCorpus, type LanguageModelCorpus } from '../../src/data/index.ts';
import { writeSafetensorsFile } from '../../src/format/safetensors.ts';
import { compareLogits } from '../../src/onnx/compare.ts';
import { NextWordModel, TransformerLM } from '../../src/nn/index.ts';
import type { Module } from '../../src/nn/module.ts';
import { Adam } from '../../src/optim/index.ts';
import { convertTransformerLM, loadIntTransformer, saveIntTransformer, type IntTransformerLM } from '../../src/quant/irnn/index.ts';
import { nextWordQatPlan, prepareRnnQat } from '../../src/quant/rnn/index.ts';
import { prepareTransformerQat, transformerQatConfig } from '../../src/quant/transformer/index.ts';
import { crossEntropy, Rng, type Tensor } from '../../src/tensor/index.ts';

/** Shapes of the CLI's lstm-lm / gru-lm and transformer-lm defaults (docs/lm.md). */
export interface SeqShapes {
  readonly vocab: number;
  readonly context: number;
  /** LSTM / GRU LM: embedding E and hidden H. */
  readonly embed: number;
  readonly hidden: number;
  /** Transformer LM: width, MLP width, blocks, heads. */
  readonly tEmbed: number;
  readonly tMlp: number;
  readonly tLayers: number;
  readonly tHeads: number;
}

export const SEQ_SHAPES: SeqShapes = { vocab: 2000, context: 8, embed: 64, hidden: 128, tEmbed: 80, tMlp: 320, tLayers: 2, tHeads: 4 };

/** The transformer-lm's MLP nonlinearity in the CLI (tanh GELU) and LayerNorm eps. */
export const TRANSFORMER_ACTIVATION = 'gelu-tanh';
export const LAYER_NORM_EPS = 1e-5;

/** Real Moby Dick windows: the first test batch (the timed input), and train batches for training and calibration. */
export interface SeqData {
  readonly corpus: LanguageModelCorpus;
  /** int32 ids [batch, context] of the first `batch` test windows. */
  readonly ids: Tensor;
  readonly train: Tensor[];
  readonly trainLabels: Tensor[];
}

export function seqData(shapes: SeqShapes, batch: number, trainBatches: number, limitWords?: number): SeqData {
  const corpus = loadLanguageModelCorpus('moby-dick', { context: shapes.context, vocabSize: shapes.vocab, ...(limitWords ? { limitWords } : {}) });
  if (corpus.vocab.size !== shapes.vocab) throw new Error(`seq-inference: the corpus gave a ${corpus.vocab.size}-word vocabulary, not ${shapes.vocab}`);
  const first = contextIdBatches(new DataLoader(corpus.test, { batchSize: batch }))[Symbol.iterator]().next();
  if (first.done || first.value.x.shape[0] !== batch) throw new Error(`seq-inference: fewer than ${batch} test windows`);
  const train: Tensor[] = [];
  const trainLabels: Tensor[] = [];
  for (const { x, y } of contextIdBatches(new DataLoader(corpus.train, { batchSize: 128, shuffle: true, seed: 0 }))) {
    if (train.length >= trainBatches) break;
    train.push(x);
    trainLabels.push(y);
  }
  return { corpus, ids: first.value.x, train, trainLabels };
}

/** `steps` Adam steps (lr 5e-3, the LM default) of next-word cross-entropy on the train batches, cycling. */
export function quickTrain(model: Module & { forward(x: Tensor): Tensor }, data: SeqData, steps: number): void {
  if (steps <= 0) return;
  const optimizer = new Adam(model.parameters(), { lr: 5e-3 });
  model.train();
  for (let i = 0; i < steps; i++) {
    const b = i % data.train.length;
    optimizer.zeroGrad();
    crossEntropy(model.forward(data.train[b]!), data.trainLabels[b]!).backward();
    optimizer.step();
  }
  model.eval();
}

export function rnnLm(cell: 'lstm' | 'gru', shapes: SeqShapes, seed = 0): NextWordModel {
  return new NextWordModel({ vocabSize: shapes.vocab, embeddingDim: shapes.embed, hiddenSize: shapes.hidden, cell, rng: new Rng(seed) });
}

export function transformerLm(shapes: SeqShapes, seed = 0): TransformerLM {
  return new TransformerLM({
    vocabSize: shapes.vocab, maxContext: shapes.context, embedDim: shapes.tEmbed, numLayers: shapes.tLayers, numHeads: shapes.tHeads,
    mlpDim: shapes.tMlp, activation: TRANSFORMER_ACTIVATION, rng: new Rng(seed),
  });
}

/**
 * A QAT copy of a float next-word LM ('w8a8' or 'w4a8', the CLI's LSQ plans) with its LSQ steps
 * initialised by train-mode forwards on the calibration batches (no fine-tune), in eval mode.
 */
export function rnnQatCopy(model: NextWordModel, shapes: SeqShapes, quant: 'w8a8' | 'w4a8', calibration: readonly Tensor[]): NextWordModel {
  const copy = rnnLm(model.cell === 'gru' ? 'gru' : 'lstm', shapes);
  copy.loadStateDict(model.stateDict());
  prepareRnnQat(copy, nextWordQatPlan(quant)!);
  copy.train();
  noGrad(() => calibration.forEach((x) => copy.forward(x)));
  copy.eval();
  return copy;
}

/** The same for the Transformer LM (quant.transformer.prepareTransformerQat). */
export function transformerQatCopy(model: TransformerLM, shapes: SeqShapes, quant: 'w8a8' | 'w4a8', calibration: readonly Tensor[]): TransformerLM {
  const copy = transformerLm(shapes);
  copy.loadStateDict(model.stateDict());
  prepareTransformerQat(copy, transformerQatConfig(quant)!);
  copy.train();
  noGrad(() => calibration.forEach((x) => copy.forward(x)));
  copy.eval();
  return copy;
}

/**
 * The integer next-word LM of `model` as `lowbit export RUN --format irnn` makes it
 * (convertNextWordModel: x and h ranges observed on `calibration`), written to `dir/name.irnn` and
 * loaded back: the model measured is the one read from the file.
 */
export function intRnnLm(model: NextWordModel, calibration: readonly Tensor[], vocabulary: readonly string[], context: number, path: string): IntNextWordModel {
  const converted = convertNextWordModel(model, calibration, { context, vocabulary });
  saveIntNextWord(path, converted);
  return loadIntNextWord(path);
}

/** The integer Transformer LM of a QAT `model` (convertTransformerLM), through its .irnn file. */
export function intTransformerLm(model: TransformerLM, calibration: readonly Tensor[], path: string): IntTransformerLM {
  saveIntTransformer(path, convertTransformerLM(model, calibration));
  return loadIntTransformer(path);
}

/** Writes `model`'s state dict (float32, lowbit's names) and the ids for the PyTorch peer; returns both paths. */
export function peerFiles(dir: string, name: string, model: Module, ids: Tensor): { weights: string; ids: string } {
  const weights = join(dir, `${name}.safetensors`);
  writeSafetensorsFile(weights, [...model.stateDict()].map(([k, t]) => [k, { shape: t.shape, data: Float32Array.from(t.data) }] as const));
  const idsPath = join(dir, `${name}.ids.i32`);
  const data = Int32Array.from(ids.data);
  writeFileSync(idsPath, new Uint8Array(data.buffer));
  return { weights, ids: idsPath };
}

export { compareLogits };
