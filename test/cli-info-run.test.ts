import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';

describe('lowbit info RUN (nn.summary of a training run)', () => {
  it('prints the layer table of a QAT run with its bits and sizes; --json carries the same numbers', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-info-run-'));
    try {
      const out = join(dir, 'run');
      const train = await runCli(['train', '--limit', '64', '--test-limit', '32', '--batch-size', '32', '--epochs', '1', '--baseline', 'none', '--no-progress', '--out', out]);
      assert.equal(train.code, 0, train.stderr);
      const text = await runCli(['info', out]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /model {4}lenet5 \(w4a4\)/);
      assert.match(text.stdout, /conv2 +QuantConv2d +\[1, 16, 10, 10\] +[\d,]+ +w4a4/);
      assert.match(text.stdout, /fc3 +QuantLinear +\[1, 10\] +[\d,]+ +w8a8/);
      assert.match(text.stdout, /size \(quantized\): +[\d.]+ KiB \(5 fake-quant layers/);
      const json = await runCli(['info', join(out, 'checkpoint.safetensors'), '--json']);
      assert.equal(json.code, 0, json.stderr);
      const parsed = JSON.parse(json.stdout) as { epoch: number; summary: { totalParams: number; fp32Bytes: number; quantizedBytes: number; rows: { name: string; weightBits: number | null; trainableParams: number; nonTrainableParams: number }[] } };
      assert.equal(parsed.epoch, 1);
      assert.equal(parsed.summary.rows.find((r) => r.name === 'fc1')!.weightBits, 4);
      // LeNet-5's 61,706 weights and biases plus the LSQ steps, each counted in its layer's row.
      assert.ok(parsed.summary.totalParams > 61706, String(parsed.summary.totalParams));
      assert.equal(parsed.summary.rows.reduce((n, r) => n + r.trainableParams + r.nonTrainableParams, 0), parsed.summary.totalParams);
      assert.ok(parsed.summary.quantizedBytes < parsed.summary.fp32Bytes / 5);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
