/**
 * Test helper: re-runs the tests tagged `[every-isa]` of one test file in a child process with the
 * native addon forced to an instruction set (LOWBIT_ISA), so one suite checks every kernel path the
 * machine can run (`avx2-novnni`: AVX2 without AVX-VNNI, for kernels with an AVX-VNNI variant); and the integer value types the native kernel tests draw inputs from.
 * Node-only; used by test files, not by the library.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Runs the `[every-isa]` tests of the test file at `fileUrl` (pass `import.meta.url`) under
 * `LOWBIT_ISA=isa`; asserts that the child exits 0 and returns how many tests passed.
 */
export function runEveryIsaTests(fileUrl: string, isa: 'avx2' | 'avx2-novnni' | 'scalar'): { passed: number; output: string } {
  const file = fileURLToPath(fileUrl);
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', '--test-name-pattern=\\[every-isa\\]', file], {
    env: { ...process.env, LOWBIT_ISA: isa, NODE_TEST_CONTEXT: undefined }, encoding: 'utf8', timeout: 120_000,
  });
  assert.equal(run.status, 0, `${run.stdout.slice(-3000)}\n${run.stderr}`);
  return { passed: Number(/^# pass (\d+)/m.exec(run.stdout)?.[1] ?? 0), output: run.stdout.slice(-2000) };
}

export const INT32_MIN = -(2 ** 31);
export const INT32_MAX = 2 ** 31 - 1;

export type IntArray = Uint8Array | Int8Array | Int32Array;
/** The value types the native IntModel kernels read (uint8, int8, int32), with their ranges. */
export const INT_VALUE_TYPES = [
  { name: 'u8', lo: 0, hi: 255, make: (n: number): IntArray => new Uint8Array(n) },
  { name: 's8', lo: -128, hi: 127, make: (n: number): IntArray => new Int8Array(n) },
  { name: 'i32', lo: INT32_MIN, hi: INT32_MAX, make: (n: number): IntArray => new Int32Array(n) },
] as const;
