/** lowbit attack with a temperature list on a model whose input gradient is zero everywhere: NJS cannot be computed, the other rows still run. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createModel } from '../src/nn/index.ts';
import { saveCheckpoint } from '../src/train/checkpoint.ts';
import { runCli } from './cli-harness.ts';

describe('lowbit attack: a temperature rule that cannot be computed', () => {
  let dir = '';
  let ck = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-attack-rules-'));
    const model = createModel('mlp', { numClasses: 10 });
    for (const p of model.parameters()) p.data.fill(0);  // constant logits: no gradient reaches the input
    ck = join(dir, 'checkpoint.safetensors');
    saveCheckpoint(ck, { model: model.stateDict(), epoch: 1, config: { model: 'mlp', dataset: 'mnist', quant: 'fp32' } });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reports NJS as not evaluated and keeps the T = 1 row; NJS alone is an error', async () => {
    const out = join(dir, 'r.json');
    const r = await runCli(['attack', ck, '--temperature', '1,njs', '--limit', '4', '--json', out, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^T 1 +\d/m);
    assert.match(r.stdout, /^njs +not evaluated: njs temperature: the mean Jacobian singular value is 0/m);
    const json = JSON.parse(readFileSync(out, 'utf8')) as { reports: unknown[]; failed: { temperature: string }[] };
    assert.equal(json.reports.length, 1);
    assert.deepEqual(json.failed.map((f) => f.temperature), ['njs']);
    const alone = await runCli(['attack', ck, '--temperature', 'njs', '--limit', '4', '--no-progress']);
    assert.equal(alone.code, 1);
    assert.match(alone.stderr, /mean Jacobian singular value is 0/);
  });

  it('says so when --dataset is not the dataset the model was trained on', async () => {
    const same = await runCli(['attack', ck, '--limit', '2', '--no-progress']);
    assert.equal(same.code, 0, same.stderr);
    assert.doesNotMatch(same.stdout, /trained on/);
    const other = await runCli(['attack', ck, '--dataset', 'fashion-mnist', '--limit', '2', '--no-progress']);
    assert.equal(other.code, 0, other.stderr);
    assert.match(other.stdout, /^ {2}data +fashion-mnist test, 2 images; .* NOTE: the model was trained on mnist \(--dataset fashion-mnist\)$/m);
  });
});
