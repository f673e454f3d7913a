/** Shared helpers of the end-to-end CLI tests that run `lowbit` inside the test process. */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { main } from '../src/cli/main.ts';

/** Runs the CLI in this process (no startup cost), capturing stdout and stderr. */
export async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const sink = (append: (s: string) => void) => new Writable({ write(chunk, _enc, done) { append(String(chunk)); done(); } });
  const io = {
    stdout: sink((s) => (stdout += s)),
    stderr: sink((s) => (stderr += s)),
    print: (line = '') => void (stdout += `${line}\n`),
  };
  const code = await main(args, io);
  return { code, stdout, stderr };
}

/** Trains the small float32 LeNet-5 run the CLI tests share (2048 samples, one epoch) into dir/run; returns its path. */
export async function trainSmallFloatRun(dir: string): Promise<string> {
  const run = join(dir, 'run');
  const r = await runCli(['train', '--model', 'lenet5', '--quant', 'fp32', '--limit', '2048', '--test-limit', '256', '--epochs', '1', '--out', run, '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  return run;
}
