/**
 * The transformer-lm from the CLI: lowbit train --model transformer-lm → eval (the printed test
 * perplexity against one computed here from the checkpoint's weights) → QAT fine-tune from the
 * float run (--init) → export --verify, at tiny sizes (--limit), in a temporary directory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TransformerLM } from '../src/nn/index.ts';
import { prepareTransformerQat, transformerQatConfig } from '../src/quant/transformer/index.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { runCli } from './cli-harness.ts';
import { checkpointPerplexity, printedNumber, TINY_LM_ARGS } from './lm-testing.ts';

/** Perplexity of the checkpoint's transformer-lm on the first `limit` moby-dick test windows (test/lm-testing.ts). */
function directPerplexity(checkpoint: string, quant: 'fp32' | 'w4a8', limit: number): number {
  return checkpointPerplexity(checkpoint, 'moby-dick', limit, (vocabSize) => {
    const model = new TransformerLM({ vocabSize, maxContext: 4, embedDim: 8, mlpDim: 16, numLayers: 2, numHeads: 4, activation: 'gelu-tanh' });
    const config = transformerQatConfig(quant);
    if (config) prepareTransformerQat(model, config);
    return model;
  });
}

test('transformer-lm: train fp32 → eval = the model\'s perplexity → w4a8 QAT from it (--init) → eval → export --verify (both)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-tlm-'));
  try {
    const float = join(dir, 'fp32');
    const t = await runCli(['train', '--model', 'transformer-lm', '--quant', 'fp32', '--out', float, ...TINY_LM_ARGS]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /transformer-lm: embedding 8, 2 causal pre-LN Transformer blocks \(4 heads, gelu-tanh MLP 16\)/);
    const metrics = JSON.parse(readFileSync(join(float, 'metrics.json'), 'utf8')) as { validPerplexity: number; config: Record<string, unknown> };
    assert.equal(metrics.config['model'], 'transformer-lm');
    assert.ok(metrics.validPerplexity < 300, `a trained model beats the uniform 300-word guess: ${metrics.validPerplexity}`);
    const e = await runCli(['eval', float, '--limit', '500']);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /^transformer-lm fp32, embedding 8, hidden 16/m);
    const evalPpl = printedNumber(e.stdout, /test perplexity +([\d.]+)/);
    const direct = directPerplexity(join(float, 'checkpoint.safetensors'), 'fp32', 500);
    assert.ok(Math.abs(evalPpl - direct) < 0.006, `eval ${evalPpl} vs direct ${direct}`);

    const qat = join(dir, 'w4a8');
    const q = await runCli(['train', '--model', 'transformer-lm', '--quant', 'w4a8', '--init', float, '--out', qat, '--limit', '1000', '--test-limit', '200', '--epochs', '1', '--lr', '1e-3', '--no-progress']);
    assert.equal(q.code, 0, q.stderr);
    assert.match(q.stdout, /activations per tensor at every matmul input incl\. Q, K, V and the attention weights/);
    assert.match(q.stdout, /fp32 baseline: validation perplexity/);
    const stored = loadCheckpoint(join(qat, 'checkpoint.safetensors')).model;
    assert.ok('blocks.1.attn.quant_probs.step' in stored, 'the QAT checkpoint holds the attention-weight quantizer');
    assert.ok('blocks.0.attn.qkv.weightQuantizer.step' in stored);
    const qe = await runCli(['eval', qat, '--limit', '300']);
    assert.equal(qe.code, 0, qe.stderr);
    const qatPpl = printedNumber(qe.stdout, /test perplexity +([\d.]+)/);
    assert.ok(Math.abs(qatPpl - directPerplexity(join(qat, 'checkpoint.safetensors'), 'w4a8', 300)) < 0.006);

    for (const [run, kind] of [[float, 'float32'], [qat, 'QDQ']] as const) {
      const onnx = join(dir, `${kind}.onnx`);
      const x = await runCli(['export', run, '--out', onnx, '--verify', '--samples', '300']);
      assert.equal(x.code, 0, x.stderr);
      assert.ok(existsSync(onnx));
      assert.match(x.stdout, new RegExp(`wrote .*${kind}.*opset 17`));
      if (/verify: skipped/.test(x.stdout)) continue;  // onnxruntime-node not installed
      const ratio = printedNumber(x.stdout, /\(ratio ([\d.]+)\)/);
      assert.ok(Math.abs(ratio - 1) < 1e-4, `${kind}: onnxruntime / lowbit perplexity ${ratio}`);
      assert.ok(printedNumber(x.stdout, /argmax +([\d.]+) %/) >= 99, x.stdout);
    }
    const refused = await runCli(['export', qat, '--out', join(dir, 'x.onnx'), '--activations', 'exact']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /--activations exact is implemented for LSTM\/GRU runs only/);
    // Since 3332435 a w4a8 transformer-lm run converts to the integer runtime (tested in test/cli-int-transformer-lm).
    const irnn = await runCli(['export', qat, '--format', 'irnn', '--out', join(dir, 'x.irnn')]);
    assert.equal(irnn.code, 0, irnn.stderr);
    assert.ok(existsSync(join(dir, 'x.irnn')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('transformer-lm refuses a width its 4 heads do not divide, before writing anything', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-tlm-'));
  try {
    const out = join(dir, 'run');
    const r = await runCli(['train', '--model', 'transformer-lm', '--embed', '6', '--out', out, ...TINY_LM_ARGS.filter((a, i, all) => a !== '--embed' && all[i - 1] !== '--embed')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--embed 6 must be a multiple of its 4 attention heads/);
    assert.equal(existsSync(out), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
