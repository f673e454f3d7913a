import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';

describe('lowbit attack', () => {
  let dir = '';
  let run = '';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-attack-'));
    run = join(dir, 'w2a2');
    const r = await runCli(['train', '--quant', 'w2a2', '--limit', '512', '--test-limit', '64', '--epochs', '1', '--baseline', 'none', '--out', run, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('attacks a QAT run with PGD at T = 1, NJS and HNS and writes the JSON', async () => {
    const out = join(dir, 'robustness.json');
    const r = await runCli(['attack', run, '--attack', 'pgd', '--steps', '2', '--eps', '0.05,0.3', '--temperature', '1,njs,hns', '--limit', '20', '--json', out, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /lenet5, w2a2/);
    assert.match(r.stdout, /njs \(T [0-9.e+-]+\)/);
    const json = JSON.parse(readFileSync(out, 'utf8')) as { quant: string; samples: number; reports: { temperature: unknown; cleanAccuracy: number; results: { eps: number; robustAccuracy: number }[] }[] };
    assert.equal(json.samples, 20);
    assert.deepEqual(json.reports.map((rep) => rep.temperature), [1, 'njs', 'hns']);
    // The same model and images under every temperature: the same clean accuracy; eps 0.3 hurts at least as much as 0.05.
    assert.equal(new Set(json.reports.map((rep) => rep.cleanAccuracy)).size, 1);
    for (const rep of json.reports) assert.ok(rep.results[1]!.robustAccuracy <= rep.results[0]!.robustAccuracy);
  });

  it('refuses bad arguments and files with one clear line', async () => {
    const cases: [string[], RegExp, number][] = [
      [['attack'], /give the checkpoint to attack/, 2],
      [['attack', run, '--eps', '0.1,abc'], /--eps: 'abc' must be a number in \(0, 1\]/, 2],
      [['attack', run, '--eps', '2'], /must be a number in \(0, 1\]/, 2],
      [['attack', run, '--temperature', 'hot'], /--temperature: 'hot' must be a positive number, njs or hns/, 2],
      [['attack', run, '--temperature', '-1'], /must be a positive number/, 2],
      [['attack', run, '--step-size', '0.01'], /--step-size applies to --attack pgd/, 2],
      [['attack', join(dir, 'missing')], /does not exist/, 1],
      [['attack', run, '--json', join(dir, 'no-such-dir', 'x.json')], /directory .* does not exist/, 1],
    ];
    const notCheckpoint = join(dir, 'bad.safetensors');
    writeFileSync(notCheckpoint, 'not a checkpoint');
    cases.push([['attack', notCheckpoint], /bad\.safetensors/, 1]);
    for (const [args, message, code] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
  });
});
