/**
 * `lowbit ... | head`: when the reader closes the pipe, the command ends with its exit code and no
 * unhandled EPIPE error (the real process, as a shell pipeline runs it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

test('a closed stdout pipe ends lowbit quietly (exit 0, no EPIPE trace)', async () => {
  const bin = new URL('../bin/lowbit.js', import.meta.url).pathname;
  const fixture = new URL('./fixtures/onnx/lenet5-torch.onnx', import.meta.url).pathname;
  // info prints ~25 lines; the reader takes the first chunk and closes its end at once.
  const child = spawn(process.execPath, [bin, 'info', fixture], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += String(d)));
  const first = await new Promise<string>((resolve) => child.stdout.once('data', (d) => resolve(String(d))));
  child.stdout.destroy();
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  assert.match(first, /^file /);
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /EPIPE|Unhandled/);
});
