import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';

describe('lowbit train --grad-bits / --estimator adaste', () => {
  it('trains a w1a1 AdaSTE run with 6-bit gradients, records both, and the steps differ from float gradients', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-gradbits-'));
    try {
      const base = ['train', '--quant', 'w1a1', '--estimator', 'adaste', '--limit', '128', '--test-limit', '64', '--batch-size', '32', '--epochs', '1', '--baseline', 'none', '--no-progress'];
      const quantized = await runCli([...base, '--grad-bits', '6', '--out', join(dir, 'q')]);
      assert.equal(quantized.code, 0, quantized.stderr);
      assert.match(quantized.stdout, /gradients {2}6-bit parameter gradients \(per-tensor max scale, stochastic rounding\)\n/);
      assert.match(quantized.stdout, /conv2 +Conv2d +adaste ±α\/ch/);
      const float = await runCli([...base, '--out', join(dir, 'f')]);
      assert.equal(float.code, 0, float.stderr);
      type Metrics = { config: { gradBits?: number; estimator: string }; history: { stepLosses: number[] } };
      const read = (name: string): Metrics => JSON.parse(readFileSync(join(dir, name, 'metrics.json'), 'utf8')) as Metrics;
      const [q, f] = [read('q'), read('f')];
      assert.equal(q.config.gradBits, 6);
      assert.equal(q.config.estimator, 'adaste');
      assert.equal(f.config.gradBits, undefined);
      // Same seed and data: the first step's loss (before any update) agrees, later ones do not.
      assert.equal(q.history.stepLosses[0], f.history.stepLosses[0]);
      assert.notDeepEqual(q.history.stepLosses, f.history.stepLosses);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad widths and the paths it does not apply to', async () => {
    const low = await runCli(['train', '--grad-bits', '1']);
    assert.equal(low.code, 2);
    assert.match(low.stderr, /--grad-bits/);
    const lm = await runCli(['train', '--model', 'gru-lm', '--grad-bits', '6']);
    assert.equal(lm.code, 2);
    assert.match(lm.stderr, /--grad-bits applies to single-process image-model training \(got --model gru-lm\)/);
    const parallel = await runCli(['train', '--quant', 'fp32', '--optimizer', 'sgd', '--workers', '2', '--grad-bits', '6']);
    assert.equal(parallel.code, 2);
    assert.match(parallel.stderr, /with --workers\/--compress/);
  });
});
