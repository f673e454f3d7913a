import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProgressBar, formatDuration } from './progress.ts';

function fakeStream(isTTY: boolean): { write(s: string): void; isTTY: boolean; output: string[] } {
  const output: string[] = [];
  return { isTTY, output, write: (s: string) => void output.push(s) };
}

test('TTY: redraws one line with \\r, throttled, and clears it at the end', () => {
  let now = 0;
  const stream = fakeStream(true);
  const bar = new ProgressBar({ total: 100, label: 'epoch 1/2', rateUnit: 'samples', stream, now: () => now });
  for (let i = 0; i < 100; i++) {
    now += 10; // 100 ticks over 1 s
    bar.tick(1, { loss: 0.12345, acc: '97.00%' }, 64);
  }
  // throttled to ~10 redraws per second (plus the final one)
  assert.ok(stream.output.length <= 12, `${stream.output.length} writes`);
  assert.ok(stream.output.every((s) => s.startsWith('\r') && !s.includes('\n')));
  const last = stream.output.at(-1)!;
  assert.match(last, /epoch 1\/2/);
  assert.match(last, /100\/100/);
  assert.match(last, /\[#{24}\]/);
  assert.match(last, /loss 0\.1235/);
  assert.match(last, /acc 97\.00%/);
  assert.match(last, /6400 samples\/s/);
  bar.done('summary');
  assert.match(stream.output.at(-2)!, /^\r +\r$/);
  assert.equal(stream.output.at(-1), 'summary\n');
});

test('TTY: shows an ETA while running', () => {
  let now = 0;
  const stream = fakeStream(true);
  const bar = new ProgressBar({ total: 10, stream, now: () => now });
  now = 2000;
  bar.tick(2);
  assert.match(stream.output.at(-1)!, /ETA 0:08/);
});

test('non-TTY: at most one line per ~10 % and only when time has passed', () => {
  let now = 0;
  const stream = fakeStream(false);
  const bar = new ProgressBar({ total: 1000, stream, now: () => now, minLogIntervalMs: 5000 });
  for (let i = 0; i < 1000; i++) {
    now += 100; // 100 s in total
    bar.tick();
  }
  bar.done();
  assert.ok(stream.output.length >= 5 && stream.output.length <= 9, `${stream.output.length} lines`);
  assert.ok(stream.output.every((s) => s.endsWith('\n') && !s.includes('\r')));

  const quick = fakeStream(false);
  const fast = new ProgressBar({ total: 1000, stream: quick, now: () => 0 });
  for (let i = 0; i < 1000; i++) fast.tick();
  fast.done('epoch done');
  assert.deepEqual(quick.output, ['epoch done\n']);
});

test('unknown total: a count without bar or ETA', () => {
  let now = 0;
  const stream = fakeStream(true);
  const bar = new ProgressBar({ total: 0, label: 'calibrate', stream, now: () => now });
  now = 1000;
  bar.tick(5);
  assert.equal(stream.output.at(-1), '\rcalibrate  5  5.00 it/s  0:01');
});

test('formatDuration', () => {
  assert.equal(formatDuration(0), '0:00');
  assert.equal(formatDuration(75), '1:15');
  assert.equal(formatDuration(3725), '1:02:05');
});
