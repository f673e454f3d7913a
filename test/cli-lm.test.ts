/**
 * Language models from the CLI: lowbit train --model lstm-lm|gru-lm → eval → export --verify in a
 * temporary directory (tiny sizes, --limit), the test perplexity of eval against one computed here
 * from the checkpoint's weights, and the refusals of bad arguments (nothing written).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NextWordModel } from '../src/nn/index.ts';
import { nextWordQatPlan, prepareRnnQat } from '../src/quant/rnn/index.ts';
import { Tensor } from '../src/tensor/index.ts';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.ts';
import { runCli, trainSmallFloatRun } from './cli-harness.ts';
import { checkpointPerplexity, printedNumber, TINY_LM_ARGS } from './lm-testing.ts';

/** Perplexity of the checkpoint's lstm-lm / gru-lm on the first `limit` moby-dick test windows (test/lm-testing.ts). */
function directPerplexity(checkpoint: string, quant: 'fp32' | 'w4a8', cell: 'lstm' | 'gru', limit: number): number {
  return checkpointPerplexity(checkpoint, 'moby-dick', limit, (vocabSize) => {
    const model = new NextWordModel({ vocabSize, embeddingDim: 8, hiddenSize: 16, cell });
    const plan = nextWordQatPlan(quant);
    if (plan) prepareRnnQat(model, plan);
    return model;
  });
}

test('lowbit train --help lists the language models and their options', async () => {
  const r = await runCli(['train', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /lstm-lm/);
  assert.match(r.stdout, /gru-lm/);
  assert.match(r.stdout, /moby-dick/);
  for (const flag of ['--seq-len', '--hidden', '--embed', '--vocab']) assert.ok(r.stdout.includes(flag), flag);
});

test('lstm-lm w4a8: train 1 epoch → eval (test perplexity = the model\'s, computed here) → export --verify (onnxruntime agrees) → export --format irnn → eval (integer within 1 %)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-lm-'));
  try {
    const run = join(dir, 'run');
    const t = await runCli(['train', '--model', 'lstm-lm', '--quant', 'w4a8', '--out', run, ...TINY_LM_ARGS]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /quant +w4a8, lsq estimator/);
    assert.match(t.stdout, /3000 train \/ 400 validation windows/);
    const validPpl = printedNumber(t.stdout, /^epoch 1\/1 .*valid ppl ([\d.]+)/m);
    const metrics = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as { validPerplexity: number; config: Record<string, unknown>; history: { epochs: { testLoss: number }[]; stepLosses: number[] } };
    assert.ok(Math.abs(metrics.validPerplexity - Math.exp(metrics.history.epochs[0]!.testLoss)) < 1e-9);
    assert.ok(Math.abs(metrics.validPerplexity - validPpl) < 0.006);
    assert.ok(metrics.validPerplexity < 300, `a trained model beats the uniform 300-word guess: ${metrics.validPerplexity}`);
    assert.equal(metrics.history.stepLosses.length, Math.ceil(3000 / 128));
    assert.equal(metrics.config['task'], 'next-word');
    assert.equal(loadCheckpoint(join(run, 'checkpoint.safetensors')).epoch, 1);

    const e = await runCli(['eval', run, '--limit', '500']);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /500 windows of 4 words/);
    assert.match(e.stdout, /predicted words\/s/);
    const evalPpl = printedNumber(e.stdout, /test perplexity +([\d.]+)/);
    const direct = directPerplexity(join(run, 'checkpoint.safetensors'), 'w4a8', 'lstm', 500);
    assert.ok(Math.abs(evalPpl - direct) <= 0.005 + 1e-9, `eval ${evalPpl} vs direct ${direct}`);
    // --checkpoint names the same run.
    assert.equal(printedNumber((await runCli(['eval', '--checkpoint', run, '--limit', '500'])).stdout, /test perplexity +([\d.]+)/), evalPpl);

    const onnx = join(dir, 'lm.onnx');
    const x = await runCli(['export', run, '--out', onnx, '--verify', '--samples', '300']);
    assert.equal(x.code, 0, x.stderr);
    assert.ok(existsSync(onnx));
    assert.match(x.stdout, /weight QDQ/);
    assert.match(x.stdout, /int32 word ids \[N, 4\]/);
    if (!/verify: skipped/.test(x.stdout)) {
      const ort = printedNumber(x.stdout, /onnxruntime ([\d.]+), lowbit/);
      const lowbit = printedNumber(x.stdout, /, lowbit ([\d.]+) \(ratio/);
      assert.ok(Math.abs(ort / lowbit - 1) < 1e-3, `perplexity ${ort} vs ${lowbit}`);
      assert.ok(printedNumber(x.stdout, /argmax +([\d.]+) %/) >= 99, x.stdout);
      assert.ok(Math.abs(lowbit - directPerplexity(join(run, 'checkpoint.safetensors'), 'w4a8', 'lstm', 300)) < 1e-3);
    }

    // The integer-only LSTM file (--format irnn): its perplexity on the same 500 windows stays
    // within 1 % of the fake-quant model's, and --verify reports the next-word agreement.
    const irnn = join(dir, 'lm.irnn');
    const xi = await runCli(['export', run, '--format', 'irnn', '--out', irnn, '--verify', '--samples', '300']);
    assert.equal(xi.code, 0, xi.stderr);
    assert.ok(existsSync(irnn));
    assert.match(xi.stdout, /4-bit weights/);
    assert.ok(printedNumber(xi.stdout, /argmax +([\d.]+) %/) >= 95, xi.stdout);
    const ei = await runCli(['eval', irnn, '--limit', '500']);
    assert.equal(ei.code, 0, ei.stderr);
    const intPpl = printedNumber(ei.stdout, /test perplexity +([\d.]+)/);
    assert.ok(Math.abs(intPpl / evalPpl - 1) < 0.01, `integer ${intPpl} vs fake quant ${evalPpl}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('gru-lm trains float32 by default; export --verify matches onnxruntime to float rounding', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-lm-'));
  try {
    const run = join(dir, 'gru');
    const t = await runCli(['train', '--model', 'gru-lm', '--out', run, ...TINY_LM_ARGS]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /quant +fp32 \(none\)/);
    const e = await runCli(['eval', run, '--limit', '300']);
    const evalPpl = printedNumber(e.stdout, /test perplexity +([\d.]+)/);
    assert.ok(Math.abs(evalPpl - directPerplexity(join(run, 'checkpoint.safetensors'), 'fp32', 'gru', 300)) <= 0.005 + 1e-9);
    const x = await runCli(['export', run, '--verify', '--samples', '300']);
    assert.equal(x.code, 0, x.stderr);
    assert.ok(existsSync(join(run, 'model.onnx')), 'default output: model.onnx in the run directory');
    assert.match(x.stdout, /float32, opset 13; rnn: GRU/);
    if (!/verify: skipped/.test(x.stdout)) {
      assert.match(x.stdout, /argmax +100\.00 %/);
      assert.ok(printedNumber(x.stdout, /max \|diff\| \S+ \(([\d.e+-]+) of the largest/) < 1e-5);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad arguments: usage errors (exit 2, one line), nothing written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-lm-'));
  try {
    const out = join(dir, 'never');
    const cases: [string[], RegExp][] = [
      [['--model', 'lstm-lm', '--dataset', 'mnist'], /--model lstm-lm trains on a text corpus \(--dataset moby-dick\|sotu\), got --dataset mnist/],
      [['--model', 'lenet5', '--dataset', 'moby-dick'], /--dataset moby-dick is a text corpus/],
      [['--model', 'mlp', '--hidden', '8'], /--hidden apply to language models/],
      [['--model', 'lstm-lm', '--quant', 'w2a2'], /--quant w2a2 is an image-model scheme; --model lstm-lm takes --quant fp32\|w8a8\|w4a8\|w4a4\|w4/],
      [['--model', 'lenet5', '--quant', 'w4a8'], /--quant w4a8 is a language-model scheme/],
      [['--model', 'lstm-lm', '--estimator', 'pact'], /lsq only/],
      [['--model', 'lstm-lm', '--plan', 'plan.json'], /--plan needs --init RUN/],
      [['--model', 'lstm-lm', '--workers', '2'], /not supported for --model lstm-lm/],
      [['--model', 'lstm-lm', '--sparsity', '0.5'], /--sparsity applies to --compress dgc only/],
      [['--model', 'lstm-lm', '--seq-len', '0'], /'--seq-len' must be > 0/],
      [['--model', 'lstm-lm', '--vocab', '1'], /'--vocab' must be >= 2/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(['train', ...args, '--out', out, '--no-progress']);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.ok(!existsSync(out), `${args.join(' ')} wrote ${out}`);
    }

    // A missing path is exit 1, as for eval / export.
    const missing = await runCli(['train', '--model', 'lstm-lm', '--quant', 'w4a8', '--init', join(dir, 'no-such-run'), '--out', out, '--no-progress']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /--init: '.*no-such-run' does not exist/);
    assert.ok(!existsSync(out));

    // An image run where a language-model run is expected, and the other way round.
    const image = await trainSmallFloatRun(dir);
    const init = await runCli(['train', '--model', 'lstm-lm', '--init', image, '--out', out, '--no-progress']);
    assert.equal(init.code, 2, init.stderr);
    assert.match(init.stderr, /--init: '.*' is an image-model run, not a language model/);
    assert.ok(!existsSync(out));

    const lm = join(dir, 'lm');
    assert.equal((await runCli(['train', '--model', 'lstm-lm', '--quant', 'fp32', '--out', lm, ...TINY_LM_ARGS])).code, 0);
    const before = readdirSync(lm).sort();
    const refusals: [string[], RegExp][] = [
      [['eval', lm, '--dataset', 'mnist'], /--dataset mnist does not fit .* trained on moby-dick/],
      [['eval', '--checkpoint', lm, '--compare'], /--save and --compare convert to an integer model/],
      [['eval', '--checkpoint', image, '--dataset', 'moby-dick'], /--dataset moby-dick is a text corpus/],
      [['export', lm, '--weight-bits', '4'], /int8 containers/],
      [['export', lm, '--profile', 'web'], /--profile web is for image models/],
      [['export', image, '--activations', 'exact'], /--activations applies to language-model runs/],
      [['train', '--model', 'lstm-lm', '--init', lm, '--hidden', '32', '--out', out, '--no-progress'], /--init: .* has --hidden 16; this run asks for --hidden 32/],
      [['train', '--model', 'gru-lm', '--quant', 'fp32', '--init', lm, '--out', out, '--no-progress'], /--init: .* is a lstm-lm, not a gru-lm/],
    ];
    for (const [args, message] of refusals) {
      const r = await runCli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    assert.deepEqual(readdirSync(lm).sort(), before, 'the refusals wrote nothing into the run');
    assert.ok(!existsSync(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a language-model checkpoint with a malformed config is refused with a clear error (exit 1)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-lm-'));
  try {
    const bad = join(dir, 'bad.safetensors');
    const config = { task: 'next-word', model: 'lstm-lm', dataset: 'moby-dick', quant: 'fp32', seqLen: 4, hidden: -3, embed: 8, vocab: 300, vocabSize: 300 };
    saveCheckpoint(bad, { model: {}, epoch: 1, config });
    for (const command of ['eval', 'export']) {
      const r = await runCli([command, '--checkpoint', bad].filter((a) => command === 'eval' || a !== '--checkpoint'));
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /not a usable language-model run: hidden -3 is not an integer in \[1, 4096\]/);
    }
    saveCheckpoint(bad, { model: {}, epoch: 1, config: { ...config, hidden: 16, vocabSize: 299 } });
    assert.match((await runCli(['eval', bad])).stderr, /trained on a 299-word vocabulary/);
    saveCheckpoint(bad, { model: { 'head.weight': new Tensor(new Float32Array(4), [2, 2]) }, epoch: 1, config: { ...config, hidden: 16 } });
    assert.match((await runCli(['eval', bad])).stderr, /does not fit a lstm-lm \(fp32, embed 8, hidden 16, vocabulary 300\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
