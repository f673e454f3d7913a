/**
 * `lowbit search --method spos` on a LeNet-5 trained for one short epoch: its options refused
 * with other methods (and other methods' options refused with it), bad values refused, and a
 * small run writing a within-budget plan.json / front.json / report.html.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPlanFile } from '../src/quant/search/index.ts';
import { runCli, trainSmallFloatRun } from './cli-harness.ts';

const QUICK = ['--search-samples', '200', '--test-limit', '500', '--calib', '64', '--no-progress'];

describe('lowbit search --method spos', () => {
  let dir = '';
  let run = '';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-search-spos-'));
    run = await trainSmallFloatRun(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses options of other methods, its options with other methods, and bad values', async () => {
    const cases: [string[], RegExp][] = [
      [['--method', 'nsga2', '--supernet-steps', '5'], /--supernet-steps applies to --method spos \(got --method nsga2\)/],
      [['--method', 'haq', '--iterations', '3'], /--iterations applies to --method spos \(got --method haq\)/],
      [['--method', 'ilp', '--population', '8'], /--population applies to --method nsga2 or spos \(got --method ilp\)/],
      [['--method', 'spos', '--episodes', '5'], /--episodes applies to --method haq \(got --method spos\)/],
      [['--method', 'spos', '--generations', '5'], /--generations applies to --method nsga2 \(got --method spos\)/],
      [['--method', 'spos', '--supernet-steps', '0'], /supernet-steps/],
      [['--method', 'spos', '--population', '2'], /population/],
      [['--method', 'spos', '--prune', '0.5'], /--prune works with --method ilp/],
    ];
    for (const [args, pattern] of cases) {
      const r = await runCli(['search', '--model', run, '--budget', 'size=23KB', ...args, ...QUICK]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
    }
  });

  it('trains a supernet, searches within the budget and writes the outputs', async () => {
    const out = join(dir, 'spos');
    const r = await runCli(['search', '--model', run, '--budget', 'size=23KB', '--method', 'spos', '--supernet-steps', '8', '--population', '6', '--iterations', '2', '--out', out, ...QUICK]);
    assert.equal(r.code, 0, r.stderr);
    for (const f of ['plan.json', 'front.json', 'report.html']) assert.ok(existsSync(join(out, f)), f);
    const front = JSON.parse(readFileSync(join(out, 'front.json'), 'utf8'));
    const chosen = front.candidates[front.chosen];
    assert.ok(chosen.costs.size <= 23e3 * 8, JSON.stringify(chosen.costs));
    for (const c of front.candidates) if (!c.uniform) assert.ok(c.costs.size <= 23e3 * 8, 'every searched path is within the budget');
    const { assignment } = loadPlanFile(join(out, 'plan.json'));
    assert.ok(Object.values(assignment!).every((c) => [2, 3, 4, 8].includes(c.w) && c.a === 8));
    assert.match(r.stdout, /chosen plan: conv1=W\d/);
  });
});
