/**
 * What the language-model CLI tests (cli-lm, cli-lm-gru-sotu, cli-transformer-lm) share: the tiny
 * run flags, reading a number off the printed output, and a checkpoint's test perplexity computed
 * here with a float64 log-softmax written out.
 */
import assert from 'node:assert/strict';
import { noGrad } from '../src/autograd/engine.ts';
import { contextIds, loadLanguageModelCorpus, type LmDatasetName } from '../src/data/index.ts';
import type { TensorModule } from '../src/nn/module.ts';
import { Tensor } from '../src/tensor/index.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';

/** Flags of a tiny language-model run: context 4, hidden 16, embedding 8, 300 words, 3000 train windows, one epoch. */
export const TINY_LM_ARGS: readonly string[] = ['--seq-len', '4', '--hidden', '16', '--embed', '8', '--vocab', '300', '--limit', '3000', '--test-limit', '400', '--epochs', '1', '--no-progress'];

/** The number captured by `pattern`'s first group in `text` (fails the test, showing `text`, when absent). */
export function printedNumber(text: string, pattern: RegExp): number {
  const m = pattern.exec(text);
  assert.ok(m, `${pattern} in:\n${text}`);
  return Number(m[1]);
}

/**
 * Perplexity on the first `limit` test windows of `dataset` (context 4, 300 words, as
 * TINY_LM_ARGS) of the model `build(vocabSize)` makes, with the checkpoint's weights loaded;
 * float64 log-softmax written out here.
 */
export function checkpointPerplexity(checkpoint: string, dataset: LmDatasetName, limit: number, build: (vocabSize: number) => TensorModule): number {
  const corpus = loadLanguageModelCorpus(dataset, { context: 4, vocabSize: 300 });
  const model = build(corpus.vocab.size);
  model.loadStateDict(loadCheckpoint(checkpoint).model);
  model.eval();
  const n = Math.min(limit, corpus.test.length);
  const x = new Tensor(corpus.test.images.slice(0, n * 4), [n, 1, 1, 4]);
  const logits = noGrad(() => model.forward(contextIds(x))).data;
  const V = corpus.vocab.size;
  let nll = 0;
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[i * V + v]!);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(logits[i * V + v]! - max);
    nll -= logits[i * V + corpus.test.labels[i]!]! - max - Math.log(sum);
  }
  return Math.exp(nll / n);
}
