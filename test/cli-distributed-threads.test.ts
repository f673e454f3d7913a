import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';

test('lowbit train --workers 2 --threads: the same weights and traffic as the in-process run; --threads alone refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-dpt-'));
  try {
    const args = ['train', '--quant', 'fp32', '--optimizer', 'sgd', '--workers', '2', '--compress', 'dgc', '--sparsity', '0.99', '--limit', '256', '--test-limit', '64', '--epochs', '1', '--batch-size', '64', '--no-progress', '--backend', 'reference'];
    const inProcess = await runCli([...args, '--out', join(dir, 'a')]);
    assert.equal(inProcess.code, 0, inProcess.stderr);
    const threads = await runCli([...args, '--threads', '--out', join(dir, 'b')]);
    assert.equal(threads.code, 0, threads.stderr);
    assert.match(threads.stdout, /workers {4}2 \(worker threads x 1 kernel thread, synchronous SGD\)/);
    const metrics = (run: string) => JSON.parse(readFileSync(join(dir, run, 'metrics.json'), 'utf8')) as { traffic: unknown; maxReplicaDifference: number };
    assert.deepEqual(metrics('b').traffic, metrics('a').traffic);
    assert.equal(metrics('b').maxReplicaDifference, 0);
    // Same weights, bit for bit, and the same step losses.
    const a = loadCheckpoint(join(dir, 'a', 'checkpoint.safetensors'));
    const b = loadCheckpoint(join(dir, 'b', 'checkpoint.safetensors'));
    const names = Object.keys(a.model);
    assert.ok(names.length >= 10);
    assert.deepEqual(Object.keys(b.model), names);
    for (const name of names) assert.deepEqual(b.model[name]!.data, a.model[name]!.data, name);
    const losses = (h: unknown) => (h as { stepLosses: number[] }).stepLosses;
    assert.equal(losses(a.history).length, 4);
    assert.deepEqual(losses(b.history), losses(a.history));

    const alone = await runCli(['train', '--quant', 'fp32', '--optimizer', 'sgd', '--threads', '--limit', '64']);
    assert.equal(alone.code, 2);
    assert.match(alone.stderr, /--threads runs data-parallel workers/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
