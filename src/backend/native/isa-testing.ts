/**
 * Test helper: re-runs the tests tagged `[every-isa]` of one test file in a child process with the
 * native addon forced to an instruction set (LOWBIT_ISA), so one suite checks every kernel path the
 * machine can run. Node-only; used by test files, not by the library.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Runs the `[every-isa]` tests of the test file at `fileUrl` (pass `import.meta.url`) under
 * `LOWBIT_ISA=isa`; asserts that the child exits 0 and returns how many tests passed.
 */
export function runEveryIsaTests(fileUrl: string, isa: 'avx2' | 'scalar'): { passed: number; output: string } {
  const file = fileURLToPath(fileUrl);
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', '--test-name-pattern=\\[every-isa\\]', file], {
    env: { ...process.env, LOWBIT_ISA: isa, NODE_TEST_CONTEXT: undefined }, encoding: 'utf8', timeout: 120_000,
  });
  assert.equal(run.status, 0, `${run.stdout.slice(-3000)}\n${run.stderr}`);
  return { passed: Number(/^# pass (\d+)/m.exec(run.stdout)?.[1] ?? 0), output: run.stdout.slice(-2000) };
}
