/** lowbit search --help says which methods search activation widths (spos and haq do; audit s11 #9). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './cli-harness.ts';

describe('lowbit search --abits help', () => {
  it('names every method that searches activation widths per layer', async () => {
    const r = await runCli(['search', '--help']);
    assert.equal(r.code, 0, r.stderr);
    const line = r.stdout.split('\n').find((l) => l.trimStart().startsWith('--abits'));
    assert.ok(line, r.stdout);
    assert.match(line, /nsga2, ilp, haq and spos search them per layer; sdq uses the widest/);
  });
});
