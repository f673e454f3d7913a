/** lowbit train --init refuses a float run trained on another dataset (it trained on the default mnist and compared with the other dataset's accuracy). */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';

describe('lowbit train --init and --dataset', () => {
  let dir = '';
  before(() => { dir = mkdtempSync(join(tmpdir(), 'lowbit-init-ds-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses --init of a fashion-mnist run without --dataset fashion-mnist, accepts it with', async () => {
    const run = join(dir, 'fashion');
    const quick = ['--limit', '128', '--test-limit', '32', '--epochs', '1', '--no-progress'];
    const fp32 = await runCli(['train', '--model', 'mlp', '--quant', 'fp32', '--dataset', 'fashion-mnist', '--out', run, ...quick]);
    assert.equal(fp32.code, 0, fp32.stderr);
    const wrong = await runCli(['train', '--model', 'mlp', '--init', run, '--out', join(dir, 'w4'), ...quick]);
    assert.equal(wrong.code, 2, wrong.stdout);
    assert.match(wrong.stderr, /--init: '.*' was trained on fashion-mnist, this run would train on mnist \(pass --dataset fashion-mnist\)/);
    const right = await runCli(['train', '--model', 'mlp', '--init', run, '--dataset', 'fashion-mnist', '--out', join(dir, 'w4'), ...quick]);
    assert.equal(right.code, 0, right.stderr);
    assert.match(right.stdout, /fp32 baseline: .*stored: .*fashion/);
  });
});
