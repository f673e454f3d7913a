/**
 * The integer-only transformer-lm from the CLI: lowbit train --model transformer-lm --quant w8a8
 * (tiny) → export --format irnn --verify → eval FILE.irnn (the same perplexity as the export's
 * integer figure on the same windows) → generate FILE.irnn (the text nn.generate gives with the
 * file's model and vocabulary, KV cache = recompute); refusals for a float run and a truncated file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tokenizeWords } from '../src/data/index.ts';
import { loadIntTransformerLm } from '../src/cli/lm-int-transformer.ts';
import { generate } from '../src/nn/index.ts';
import { runCli } from './cli-harness.ts';
import { printedNumber, TINY_LM_ARGS } from './lm-testing.ts';

test('transformer-lm w8a8: export --format irnn --verify → eval FILE.irnn; float runs and truncated files refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-int-tlm-'));
  try {
    const run = join(dir, 'w8a8');
    const t = await runCli(['train', '--model', 'transformer-lm', '--quant', 'w8a8', '--out', run, ...TINY_LM_ARGS]);
    assert.equal(t.code, 0, t.stderr);
    const file = join(dir, 'tlm.irnn');
    const x = await runCli(['export', run, '--format', 'irnn', '--out', file, '--verify', '--samples', '300']);
    assert.equal(x.code, 0, x.stderr);
    assert.match(x.stdout, /integer-only transformer: 8-bit weights, int8 activations, int32 residual stream/);
    const integer = printedNumber(x.stdout, /perplexity +integer ([\d.]+)/);
    const fakeQuant = printedNumber(x.stdout, /perplexity +integer [\d.]+, lowbit ([\d.]+)/);
    const agreement = printedNumber(x.stdout, /argmax +([\d.]+) %/);
    // Stated bound for this tiny run: within 3 % of the fake-quant perplexity, ≥ 90 % same argmax.
    assert.ok(Math.abs(integer / fakeQuant - 1) < 0.03, `integer ${integer} vs fake-quant ${fakeQuant}`);
    assert.ok(agreement >= 90, `argmax agreement ${agreement} %`);
    const e = await runCli(['eval', file, '--limit', '300']);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /^integer-only transformer language model \(w8a8 run checkpoint\.safetensors; 2 blocks, 4 heads, width 8, MLP 16, vocabulary \d+\)/m);
    assert.ok(Math.abs(printedNumber(e.stdout, /test perplexity +([\d.]+)/) - integer) < 0.006, `eval vs export's integer ${integer}:\n${e.stdout}`);

    // generate FILE.irnn: the file's vocabulary and model through nn.generate, computed here.
    const { model, meta } = loadIntTransformerLm(file);
    const prompt = 'call me ishmael';
    const ids = tokenizeWords(prompt).map((w) => Math.max(0, meta.vocabulary.indexOf(w)));
    for (const [sampling, options] of [[['--temperature', '0'], { temperature: 0 }], [['--temperature', '0.8', '--top-k', '5', '--seed', '3'], { temperature: 0.8, topK: 5, seed: 3 }]] as const) {
      const g = await runCli(['generate', file, '--prompt', 'Call me Ishmael.', '--tokens', '10', ...sampling]);
      assert.equal(g.code, 0, g.stderr);
      assert.match(g.stdout, /^integer-only transformer language model \(w8a8 run checkpoint\.safetensors; 2 blocks, 4 heads, width 8, vocabulary \d+\)/m);
      assert.match(g.stdout, /context 4 words, KV cache/);
      const line = g.stdout.split('\n').find((l) => l.startsWith(`${prompt} `));
      assert.ok(line, g.stdout);
      const expected = generate(model, ids, { tokens: 10, context: 4, ...options });
      assert.equal(line.slice(prompt.length + 1), expected.map((id) => meta.vocabulary[id]).join(' '), sampling.join(' '));
      const again = await runCli(['generate', file, '--prompt', 'Call me Ishmael.', '--tokens', '10', ...sampling, '--no-cache']);
      assert.match(again.stdout, /recomputed every step/);
      assert.ok(again.stdout.includes(line), 'the integer KV cache and the recompute give the same text');
    }

    const bytes = readFileSync(file);
    const cut = join(dir, 'cut.irnn');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    const c = await runCli(['eval', cut]);
    assert.notEqual(c.code, 0);
    assert.match(c.stderr, /is not a valid integer language-model file/);
    const cg = await runCli(['generate', cut, '--prompt', 'the']);
    assert.notEqual(cg.code, 0);
    assert.match(cg.stderr, /generate: .* is not a valid integer language-model file/);

    const float = join(dir, 'fp32');
    const f = await runCli(['train', '--model', 'transformer-lm', '--quant', 'fp32', '--out', float, ...TINY_LM_ARGS, '--limit', '500']);
    assert.equal(f.code, 0, f.stderr);
    const r = await runCli(['export', float, '--format', 'irnn', '--out', join(dir, 'f.irnn')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--format irnn: the integer transformer runtime converts QAT runs with 8-bit activations/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
