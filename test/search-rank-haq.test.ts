/** lowbit search --rank applies to HAQ's plans too (it always did); the help and the sdq refusal say so. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './cli-harness.ts';

describe('lowbit search --rank and --method haq', () => {
  it('the help of --rank and the sdq refusal name haq', async () => {
    const help = await runCli(['search', '--help']);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /--rank .*nsga2 \/ ilp \/ haq: retrain the N most accurate plans/);
    const bad = await runCli(['search', '--model', 'nonexistent-run', '--budget', 'size=16KB', '--method', 'sdq', '--rank', '2']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--rank works with --method nsga2 or ilp or haq \(sdq learns one plan\)/);
  });
});
