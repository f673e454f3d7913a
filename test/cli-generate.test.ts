/**
 * `lowbit train --model transformer-lm --objective all|last` and `lowbit generate RUN`: a tiny run
 * trained with the every-position objective, its generated text against nn.generate on the
 * checkpoint's model computed here, determinism, the KV cache against --no-cache, and the errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadLanguageModelCorpus, tokenizeWords } from '../src/data/index.ts';
import { generate, TransformerLM } from '../src/nn/index.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { runCli } from './cli-harness.ts';
import { TINY_LM_ARGS } from './lm-testing.ts';

/** The generated words of `lowbit generate` (the line that starts with the prompt). */
function generatedLine(stdout: string, prompt: string): string {
  const line = stdout.split('\n').find((l) => l.startsWith(`${prompt} `));
  assert.ok(line, `no generated line in:\n${stdout}`);
  return line.slice(prompt.length + 1);
}

test('transformer-lm --objective all → generate: the printed text is nn.generate on the checkpoint; greedy and seeded runs repeat; cache = no cache', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-gen-'));
  try {
    const run = join(dir, 'fp32');
    const t = await runCli(['train', '--model', 'transformer-lm', '--quant', 'fp32', '--objective', 'all', '--window-stride', '1', '--out', run, ...TINY_LM_ARGS]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /objective +all: every position predicts its next word \(4 per window/);
    assert.match(t.stdout, /train \(all positions\) loss/);
    const config = (JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as { config: Record<string, unknown> }).config;
    assert.equal(config['objective'], 'all');

    // The same text computed here: the run's vocabulary and weights, nn.generate with the same options.
    const corpus = loadLanguageModelCorpus('moby-dick', { context: 4, vocabSize: 300 });
    const model = new TransformerLM({ vocabSize: corpus.vocab.size, maxContext: 4, embedDim: 8, mlpDim: 16, numLayers: 2, numHeads: 4, activation: 'gelu-tanh' });
    model.loadStateDict(loadCheckpoint(join(run, 'checkpoint.safetensors')).model);
    const prompt = 'call me ishmael';
    const ids = tokenizeWords(prompt).map((w) => corpus.vocab.id(w));
    for (const sampling of [['--temperature', '0'], ['--temperature', '0.8', '--top-k', '5', '--seed', '3']]) {
      const g = await runCli(['generate', run, '--prompt', 'Call me Ishmael.', '--tokens', '12', ...sampling]);
      assert.equal(g.code, 0, g.stderr);
      assert.match(g.stdout, /context 4 words, KV cache/);
      const text = generatedLine(g.stdout, prompt);
      const temperature = Number(sampling[1]);
      const expected = generate(model, ids, { tokens: 12, temperature, topK: sampling[3] === undefined ? undefined : Number(sampling[3]), seed: Number(sampling[5] ?? 0) });
      assert.equal(text, expected.map((id) => corpus.vocab.words[id]).join(' '), `sampling ${sampling.join(' ')}`);
      const again = await runCli(['generate', run, '--prompt', 'Call me Ishmael.', '--tokens', '12', ...sampling, '--no-cache']);
      assert.match(again.stdout, /recomputed every step/);
      assert.equal(generatedLine(again.stdout, prompt), text, 'the KV cache and the recompute give the same text');
    }

    const noUnk = await runCli(['generate', run, '--prompt', 'the', '--tokens', '40', '--no-unk', '--seed', '1']);
    assert.equal(noUnk.code, 0, noUnk.stderr);
    assert.match(noUnk.stdout, /no <unk>;/);
    assert.ok(!generatedLine(noUnk.stdout, 'the').split(' ').includes('<unk>'), noUnk.stdout);
    // Not vacuous: with <unk> allowed, the same run draws it (the most frequent id of a 300-word vocabulary).
    const withUnk = await runCli(['generate', run, '--prompt', 'the', '--tokens', '40', '--seed', '1']);
    assert.ok(generatedLine(withUnk.stdout, 'the').split(' ').includes('<unk>'), withUnk.stdout);
    const unknown = await runCli(['generate', run, '--prompt', 'zzyzx whale', '--tokens', '3']);
    assert.equal(unknown.code, 0, unknown.stderr);
    assert.match(unknown.stdout, /not in the vocabulary, read as <unk>: zzyzx/);

    const noPrompt = await runCli(['generate', run]);
    assert.notEqual(noPrompt.code, 0);
    assert.match(noPrompt.stderr, /--prompt TEXT is required/);
    const noWords = await runCli(['generate', run, '--prompt', '!!!']);
    assert.notEqual(noWords.code, 0);
    assert.match(noWords.stderr, /--prompt "!!!" has no words/);
    const badTemperature = await runCli(['generate', run, '--prompt', 'the', '--temperature', '-1']);
    assert.notEqual(badTemperature.code, 0);
    assert.match(badTemperature.stderr, /--temperature/);
    const missing = await runCli(['generate', join(dir, 'nothing'), '--prompt', 'the']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /does not exist/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train --objective: all is refused for the recurrent and image models; transformer-lm defaults to all (5 epochs, non-overlapping windows), last is stored; --window-stride', async () => {
  const lstm = await runCli(['train', '--model', 'lstm-lm', '--objective', 'all', ...TINY_LM_ARGS]);
  assert.notEqual(lstm.code, 0);
  assert.match(lstm.stderr, /--objective all needs a model that predicts at every position \(--model transformer-lm\)/);
  const image = await runCli(['train', '--model', 'mlp', '--objective', 'last', '--limit', '10']);
  assert.notEqual(image.code, 0);
  assert.match(image.stderr, /--objective apply to language models/);
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-gen-'));
  try {
    // transformer-lm's default objective is all, with 5 epochs over non-overlapping windows (stride = --seq-len 4).
    const d = await runCli(['train', '--model', 'transformer-lm', '--quant', 'fp32', '--out', join(dir, 'all'), ...TINY_LM_ARGS.filter((a, i, all) => a !== '--epochs' && all[i - 1] !== '--epochs'), '--limit', '200']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /objective +all: every position predicts its next word/);
    assert.match(d.stdout, /4-word context: 50 train \(every 4th\)/);
    assert.match(d.stdout, /5 epochs/);
    // --objective last: 3 epochs over every window unless given; --window-stride 4 keeps windows 0, 4, 8, ... of the first 500.
    const t = await runCli(['train', '--model', 'transformer-lm', '--quant', 'fp32', '--objective', 'last', '--window-stride', '4', '--out', dir, ...TINY_LM_ARGS, '--limit', '500']);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /objective +last: one prediction per window/);
    assert.match(t.stdout, /4-word context: 125 train \(every 4th\) \/ 400 validation windows/);
    const config = (JSON.parse(readFileSync(join(dir, 'metrics.json'), 'utf8')) as { config: Record<string, unknown> }).config;
    assert.equal(config['objective'], 'last');
    assert.equal(config['windowStride'], 4);
    // A recurrent run generates too, recomputing its window at every step.
    const lstm = join(dir, 'lstm');
    assert.equal((await runCli(['train', '--model', 'lstm-lm', '--quant', 'fp32', '--out', lstm, ...TINY_LM_ARGS, '--limit', '500'])).code, 0);
    const g = await runCli(['generate', lstm, '--prompt', 'the whale', '--tokens', '5', '--temperature', '0']);
    assert.equal(g.code, 0, g.stderr);
    assert.match(g.stdout, /greedy \(temperature 0\); context 4 words, recomputed every step/);
    assert.equal(generatedLine(g.stdout, 'the whale').split(' ').length, 5);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
