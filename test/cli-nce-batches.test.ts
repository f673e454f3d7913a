/** lowbit nce on a BatchNorm model whose --limit leaves a one-sample last batch (audit s11 #10). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './cli-harness.ts';

describe('lowbit nce batches', () => {
  it('--model cnn --limit 65 trains on full batches instead of failing on a batch of one in BatchNorm', async () => {
    const r = await runCli(['nce', '--model', 'cnn', '--steps', '2', '--limit', '65', '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^cost \d+ weights \(budget \d+/m);
  });
});
