/**
 * The QAT gru-lm and the State of the Union corpus from the CLI: lowbit train --model gru-lm
 * --quant w4a8 → eval (= the model's own perplexity) → export --verify (onnxruntime agrees) → export
 * --format irnn → eval (the integer-only GRU within 1 %), and a
 * tiny lstm-lm run on --dataset sotu → eval; tiny sizes, --limit, a temporary directory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadLanguageModelCorpus, tokenizeWords, type LmDatasetName } from '../src/data/index.ts';
import { generate, NextWordModel } from '../src/nn/index.ts';
import { loadIntNextWord } from '../src/cli/lm-irnn.ts';
import { nextWordQatPlan, prepareRnnQat, QatGRU, type NextWordQuantChoice } from '../src/quant/rnn/index.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { runCli } from './cli-harness.ts';
import { checkpointPerplexity, printedNumber, TINY_LM_ARGS } from './lm-testing.ts';

/** Perplexity of the checkpoint's lstm-lm / gru-lm on the first `limit` test windows of `dataset` (test/lm-testing.ts). */
function directPerplexity(checkpoint: string, dataset: LmDatasetName, quant: NextWordQuantChoice, cell: 'lstm' | 'gru', limit: number): number {
  return checkpointPerplexity(checkpoint, dataset, limit, (vocabSize) => {
    const model = new NextWordModel({ vocabSize, embeddingDim: 8, hiddenSize: 16, cell });
    const plan = nextWordQatPlan(quant);
    if (plan) prepareRnnQat(model, plan);
    if (quant !== 'fp32') assert.ok(model.rnn instanceof QatGRU || cell === 'lstm');
    return model;
  });
}

test('gru-lm w4a8: train 1 epoch (QAT GRU) → eval (= the model\'s perplexity) → export --verify (unrolled, onnxruntime agrees) → export --format irnn → eval (integer within 1 %)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-gru-'));
  try {
    const run = join(dir, 'run');
    const t = await runCli(['train', '--model', 'gru-lm', '--quant', 'w4a8', '--out', run, ...TINY_LM_ARGS]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /GRU 16/);
    assert.match(t.stdout, /quant +w4a8, lsq estimator/);
    const metrics = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as { validPerplexity: number; config: Record<string, unknown> };
    assert.equal(metrics.config['quant'], 'w4a8');
    assert.ok(metrics.validPerplexity < 300, `a trained model beats the uniform 300-word guess: ${metrics.validPerplexity}`);
    // The checkpoint holds the QatGRU's quantizer state (LSQ steps of W, x and h).
    const keys = Object.keys(loadCheckpoint(join(run, 'checkpoint.safetensors')).model);
    for (const k of ['rnn.quant_weight_ih_l0.step', 'rnn.quant_hidden_l0.step', 'rnn.quant_input_l0.step']) assert.ok(keys.includes(k), `${k} in ${keys.join(', ')}`);

    const e = await runCli(['eval', run, '--limit', '500']);
    assert.equal(e.code, 0, e.stderr);
    const evalPpl = printedNumber(e.stdout, /test perplexity +([\d.]+)/);
    const direct = directPerplexity(join(run, 'checkpoint.safetensors'), 'moby-dick', 'w4a8', 'gru', 500);
    assert.ok(Math.abs(evalPpl - direct) <= 0.005 + 1e-9, `eval ${evalPpl} vs direct ${direct}`);

    const onnx = join(dir, 'lm.onnx');
    const x = await runCli(['export', run, '--out', onnx, '--verify', '--samples', '300']);
    assert.equal(x.code, 0, x.stderr);
    assert.ok(existsSync(onnx));
    assert.match(x.stdout, /weight QDQ/);
    assert.match(x.stdout, /rnn: unrolled/);
    if (!/verify: skipped/.test(x.stdout)) {
      const ort = printedNumber(x.stdout, /onnxruntime ([\d.]+), lowbit/);
      const lowbit = printedNumber(x.stdout, /, lowbit ([\d.]+) \(ratio/);
      assert.ok(Math.abs(ort / lowbit - 1) < 1e-3, `perplexity ${ort} vs ${lowbit}`);
      assert.ok(printedNumber(x.stdout, /argmax +([\d.]+) %/) >= 99, x.stdout);
    }
    // The integer-only GRU file (--format irnn): its perplexity on the same 500 windows stays
    // within 1 % of the fake-quant model's, and --verify reports the next-word agreement.
    const irnn = join(dir, 'lm.irnn');
    const xi = await runCli(['export', run, '--format', 'irnn', '--out', irnn, '--verify', '--samples', '300']);
    assert.equal(xi.code, 0, xi.stderr);
    assert.match(xi.stdout, /integer-only GRU with 4-bit weights/);
    assert.ok(printedNumber(xi.stdout, /argmax +([\d.]+) %/) >= 95, xi.stdout);
    const ei = await runCli(['eval', irnn, '--limit', '500']);
    assert.equal(ei.code, 0, ei.stderr);
    assert.match(ei.stdout, /integer-only GRU language model/);
    const intPpl = printedNumber(ei.stdout, /test perplexity +([\d.]+)/);
    assert.ok(Math.abs(intPpl / evalPpl - 1) < 0.01, `integer ${intPpl} vs fake quant ${evalPpl}`);
    // generate from the integer file: the printed text is nn.generate on the loaded IntNextWordModel
    // (window recomputed each step), past the 4-word window; --no-cache gives the same text.
    const intModel = loadIntNextWord(irnn);
    const ids = tokenizeWords('the whale').map((w) => intModel.meta.vocabulary.indexOf(w));
    assert.ok(ids.every((id) => id >= 0), 'the prompt words are in the tiny vocabulary');
    const expected = generate(intModel, ids, { tokens: 10, temperature: 0.8, topK: 5, seed: 2 });
    for (const extra of [[], ['--no-cache']]) {
      const g = await runCli(['generate', irnn, '--prompt', 'the whale', '--tokens', '10', '--temperature', '0.8', '--top-k', '5', '--seed', '2', ...extra]);
      assert.equal(g.code, 0, g.stderr);
      assert.match(g.stdout, /integer-only GRU language model .*context 4 words, recomputed every step/s);
      assert.ok(g.stdout.includes(`the whale ${expected.map((id) => intModel.meta.vocabulary[id]).join(' ')}\n`), g.stdout);
    }
    // The window cache equals the recompute on the same window at every length.
    const cache = intModel.createCache();
    const seq = [ids[0]!, ids[1]!, 3, 7];
    for (let t = 0; t < seq.length; t++) assert.deepEqual(intModel.nextLogitsCached([seq[t]!], cache), intModel.nextLogits(seq.slice(0, t + 1)));
    assert.throws(() => intModel.nextLogitsCached([1], cache), /exceed the window of 4/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lstm-lm on --dataset sotu: train → eval on the 2011–2021 addresses; an unknown corpus lists the choices', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-sotu-'));
  try {
    const run = join(dir, 'run');
    const t = await runCli(['train', '--model', 'lstm-lm', '--dataset', 'sotu', '--quant', 'fp32', '--out', run, ...TINY_LM_ARGS]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /data +sotu, words, 4-word context: 3000 train \/ 400 validation windows/);
    const metrics = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as { validPerplexity: number; config: Record<string, unknown>; testSamples: number };
    assert.equal(metrics.config['dataset'], 'sotu');
    assert.equal(metrics.testSamples, loadLanguageModelCorpus('sotu', { context: 4, vocabSize: 300 }).test.length);
    assert.ok(metrics.validPerplexity < 300, `a trained model beats the uniform 300-word guess: ${metrics.validPerplexity}`);
    const e = await runCli(['eval', run, '--limit', '500']);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /sotu test split: 500 windows of 4 words/);
    const evalPpl = printedNumber(e.stdout, /test perplexity +([\d.]+)/);
    const direct = directPerplexity(join(run, 'checkpoint.safetensors'), 'sotu', 'fp32', 'lstm', 500);
    assert.ok(Math.abs(evalPpl - direct) <= 0.005 + 1e-9, `eval ${evalPpl} vs direct ${direct}`);
    const bad = await runCli(['train', '--model', 'lstm-lm', '--dataset', 'wikitext', '--out', join(dir, 'never')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /'--dataset' must be one of .*moby-dick, sotu; got 'wikitext'/);
    assert.ok(!existsSync(join(dir, 'never')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
