import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';

describe('lowbit train --patience (early stopping)', () => {
  it('stops, restores the best epoch, reports it, and --resume continues the counters', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-patience-'));
    try {
      const out = join(dir, 'run');
      // lr 1e-9: the test loss cannot move by the 0.01 min delta, so epoch 2 is the first without improvement.
      const args = ['train', '--quant', 'fp32', '--limit', '128', '--test-limit', '64', '--batch-size', '32', '--lr', '1e-9', '--patience', '1', '--min-delta', '0.01', '--restore-best', '--no-progress', '--out', out];
      const first = await runCli([...args, '--epochs', '4']);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, /stopping {3}early stopping on the test loss, patience 1, min delta 0.01, best weights restored at the end/);
      assert.match(first.stdout, /early stopping: val_loss did not improve for 1 epoch \(best [\d.]+ at epoch 1, patience 1\); stopped after epoch 2; restored the weights of epoch 1/);
      type Metrics = { testAccuracy: number; reportedEpoch: number; earlyStopping: { stoppedEpoch: number; restoredEpoch: number; wait: number }; history: { epochs: { epoch: number; testAccuracy: number }[] } };
      const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as Metrics;
      assert.deepEqual(metrics.history.epochs.map((e) => e.epoch), [1, 2]);
      assert.equal(metrics.earlyStopping.stoppedEpoch, 2);
      assert.equal(metrics.reportedEpoch, 1);
      assert.equal(metrics.testAccuracy, metrics.history.epochs[0]!.testAccuracy);
      const ck = loadCheckpoint(join(out, 'checkpoint.safetensors'));
      assert.equal(ck.epoch, 2);
      assert.deepEqual(ck.model['conv1.weight']!.data, ck.bestWeights!['conv1.weight']!.data);

      const resumed = await runCli([...args, '--epochs', '5', '--resume']);
      assert.equal(resumed.code, 0, resumed.stderr);
      assert.match(resumed.stdout, /the run had stopped early after epoch 2; it continues with the same early-stopping counters/);
      assert.match(resumed.stdout, /did not improve for 2 epochs .*stopped after epoch 3; restored the weights of epoch 1/);
      const changed = await runCli([...args, '--epochs', '5', '--resume', '--patience', '2']);
      assert.equal(changed.code, 2);
      assert.match(changed.stderr, /other settings: patience 1 \(now 2\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--schedule plateau: x0.1 after two epochs without a lower test loss; --resume restores its counters', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-plateau-'));
    try {
      const out = join(dir, 'run');
      // SGD at lr 1e-6: the test loss moves by far less than ReduceLROnPlateau's relative threshold
      // (1e-4), so epochs 2 and 3 are bad; the lr steps stay above its eps (1e-8), so they are taken.
      const args = ['train', '--quant', 'fp32', '--limit', '64', '--test-limit', '32', '--batch-size', '32', '--optimizer', 'sgd', '--lr', '1e-6', '--schedule', 'plateau', '--no-progress', '--out', out];
      const first = await runCli([...args, '--epochs', '3']);
      assert.equal(first.code, 0, first.stderr);
      const resumed = await runCli([...args, '--epochs', '6', '--resume']);
      assert.equal(resumed.code, 0, resumed.stderr);
      type Metrics = { history: { epochs: { lr: number }[] } };
      const lrs = (JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as Metrics).history.epochs.map((e) => e.lr);
      // Epochs 2, 3 bad -> epoch 4 at 1e-7; epochs 4, 5 bad -> epoch 6 at 1e-8 (counters carried over the resume).
      const expected = [1e-6, 1e-6, 1e-6, 1e-7, 1e-7, 1e-8];
      assert.equal(lrs.length, 6);
      lrs.forEach((lr, i) => assert.ok(Math.abs(lr - expected[i]!) <= 1e-6 * expected[i]!, `epoch ${i + 1}: lr ${lr}, expected ${expected[i]}`));
      const state = loadCheckpoint(join(out, 'checkpoint.safetensors')).scheduler as { lastStep: number; numBadSteps: number };
      assert.equal(state.lastStep, 6);
      assert.equal(state.numBadSteps, 1);
      const lm = await runCli(['train', '--model', 'gru-lm', '--schedule', 'plateau']);
      assert.equal(lm.code, 2);
      assert.match(lm.stderr, /--schedule plateau applies to single-process image-model training \(got --model gru-lm\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses what it does not apply to', async () => {
    const lonely = await runCli(['train', '--min-delta', '0.1']);
    assert.equal(lonely.code, 2);
    assert.match(lonely.stderr, /--min-delta and --restore-best set up early stopping: pass --patience N too/);
    const lm = await runCli(['train', '--model', 'gru-lm', '--patience', '2']);
    assert.equal(lm.code, 2);
    assert.match(lm.stderr, /--patience \(early stopping\) applies to single-process image-model training \(got --model gru-lm\)/);
    const negative = await runCli(['train', '--patience', '-1']);
    assert.equal(negative.code, 2);
  });
});
