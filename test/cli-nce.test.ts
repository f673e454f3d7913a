/** lowbit nce: a short search on a few MNIST images prints widths within budget and writes them as JSON. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';

describe('lowbit nce', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-nce-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('searches LeNet-5 widths within the params budget and writes them', async () => {
    const out = join(dir, 'widths.json');
    const r = await runCli(['nce', '--model', 'lenet5', '--steps', '4', '--limit', '256', '--budget-ratio', '0.8', '--json', out, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^conv1 +6 +\d+ +3, 5, 6, 9, 12$/m);
    const json = JSON.parse(readFileSync(out, 'utf8')) as { widths: Record<string, number>; cost: number; budget: number; baseCost: number };
    assert.deepEqual(Object.keys(json.widths), ['conv1', 'conv2', 'fc1', 'fc2']);
    assert.equal(json.baseCost, 61470);
    assert.ok(Math.abs(json.budget - 0.8 * 61470) < 1e-6);
    assert.ok(json.cost <= json.budget, `cost ${json.cost} > budget ${json.budget}`);
  });

  it('refuses a bad budget metric', async () => {
    const r = await runCli(['nce', '--budget', 'energy', '--steps', '2']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /budget/);
  });
});
