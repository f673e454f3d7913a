import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';

describe('lowbit train --act-grad-bits', () => {
  it('quantizes the activation gradients of a w4a4 run: printed, recorded, and the steps differ from float gradients', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-actgrad-'));
    try {
      const base = ['train', '--quant', 'w4a4', '--limit', '128', '--test-limit', '64', '--batch-size', '32', '--epochs', '1', '--baseline', 'none', '--no-progress'];
      const quantized = await runCli([...base, '--act-grad-bits', '4', '--out', join(dir, 'q')]);
      assert.equal(quantized.code, 0, quantized.stderr);
      assert.match(quantized.stdout, /act grads {2}4-bit gradients at every quantized layer output \(per-tensor max scale, DoReFa grid, stochastic rounding\)\n/);
      const sample = await runCli([...base, '--act-grad-bits', '6', '--act-grad-scale', 'sample', '--act-grad-grid', 'symmetric', '--grad-bits', '6', '--out', join(dir, 's')]);
      assert.equal(sample.code, 0, sample.stderr);
      assert.match(sample.stdout, /act grads {2}6-bit gradients at every quantized layer output \(per-sample max scale, symmetric grid, stochastic rounding\)\n/);
      const float = await runCli([...base, '--out', join(dir, 'f')]);
      assert.equal(float.code, 0, float.stderr);
      assert.doesNotMatch(float.stdout, /act grads/);
      type Metrics = { config: { actGradBits?: number; actGradScale?: string; actGradGrid?: string; gradBits?: number }; history: { stepLosses: number[] } };
      const read = (name: string): Metrics => JSON.parse(readFileSync(join(dir, name, 'metrics.json'), 'utf8')) as Metrics;
      const [q, s, f] = [read('q'), read('s'), read('f')];
      assert.deepEqual([q.config.actGradBits, q.config.actGradScale, q.config.actGradGrid], [4, 'tensor', 'dorefa']);
      assert.deepEqual([s.config.actGradBits, s.config.actGradScale, s.config.actGradGrid, s.config.gradBits], [6, 'sample', 'symmetric', 6]);
      assert.deepEqual([f.config.actGradBits, f.config.actGradScale, f.config.actGradGrid], [undefined, undefined, undefined]);
      // Same seed and data: the forward pass is unchanged, so the first loss agrees; the updates differ.
      assert.equal(q.history.stepLosses[0], f.history.stepLosses[0]);
      assert.notDeepEqual(q.history.stepLosses, f.history.stepLosses);
      assert.notDeepEqual(s.history.stepLosses, q.history.stepLosses);
      // --resume checks the setting.
      const resumed = await runCli([...base, '--epochs', '2', '--resume', '--act-grad-bits', '6', '--out', join(dir, 'q')]);
      assert.equal(resumed.code, 2);
      assert.match(resumed.stderr, /actGradBits 4 \(now 6\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad widths and the runs it does not apply to', async () => {
    const low = await runCli(['train', '--act-grad-bits', '1']);
    assert.equal(low.code, 2);
    assert.match(low.stderr, /--act-grad-bits/);
    const fp32 = await runCli(['train', '--quant', 'fp32', '--act-grad-bits', '4']);
    assert.equal(fp32.code, 2);
    assert.match(fp32.stderr, /--act-grad-bits quantizes the gradients at quantized layer outputs: it needs a QAT run/);
    const lm = await runCli(['train', '--model', 'gru-lm', '--act-grad-bits', '6']);
    assert.equal(lm.code, 2);
    assert.match(lm.stderr, /--act-grad-bits applies to single-process image-model QAT \(got --model gru-lm\)/);
    const alone = await runCli(['train', '--act-grad-scale', 'sample']);
    assert.equal(alone.code, 2);
    assert.match(alone.stderr, /--act-grad-scale and --act-grad-grid apply with --act-grad-bits K only/);
  });
});
