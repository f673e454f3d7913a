/**
 * `lowbit train --resume` for language-model runs: a run trained 1 epoch and resumed to 2 ends with
 * exactly the weights, optimizer-driven step losses and history of a run trained 2 epochs straight
 * through (QAT lstm-lm: LSQ steps in the state; transformer-lm: the every-position objective's
 * wrapper module), and changed settings or a finished run are refused with exit code 2; `lowbit info`
 * prints the resumed run's layer table.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { runCli } from './cli-harness.ts';
import { TINY_LM_ARGS } from './lm-testing.ts';

/** TINY_LM_ARGS without its --epochs, a smaller train set, and no schedule (with cosine the lr of epoch 1 depends on --epochs). */
const QUICK = [...TINY_LM_ARGS.filter((a, i, all) => a !== '--epochs' && all[i - 1] !== '--epochs' && a !== '--limit' && all[i - 1] !== '--limit'), '--limit', '1200', '--schedule', 'none', '--baseline', 'none'];

async function straightVsResumed(model: string, quant: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-lm-resume-'));
  try {
    const base = ['train', '--model', model, '--quant', quant, ...QUICK];
    const straight = join(dir, 'straight');
    const resumed = join(dir, 'resumed');
    const a0 = await runCli([...base, '--epochs', '2', '--out', straight]);
    assert.equal(a0.code, 0, a0.stderr);
    const b0 = await runCli([...base, '--epochs', '1', '--out', resumed]);
    assert.equal(b0.code, 0, b0.stderr);
    const r = await runCli([...base, '--epochs', '2', '--out', resumed, '--resume']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ +resume +from epoch 1 of /m);
    assert.doesNotMatch(r.stdout, /^epoch 1\/2/m);
    assert.match(r.stdout, /^epoch 2\/2 /m);
    assert.doesNotMatch(r.stdout, /replacing the earlier run/);

    const a = loadCheckpoint(join(straight, 'checkpoint.safetensors'));
    const b = loadCheckpoint(join(resumed, 'checkpoint.safetensors'));
    assert.equal(b.epoch, 2);
    assert.deepEqual(Object.keys(b.model).sort(), Object.keys(a.model).sort());
    for (const [name, t] of Object.entries(a.model)) assert.deepEqual(b.model[name]!.toArray(), t.toArray(), name);
    const losses = (h: unknown): number[] => (h as { stepLosses: number[] }).stepLosses;
    assert.ok(losses(a.history).length >= 4, `${losses(a.history).length} steps`);
    assert.deepEqual(losses(b.history), losses(a.history));
    const epochLosses = (h: unknown): number[] => (h as { epochs: { testLoss: number }[] }).epochs.map((e) => e.testLoss);
    assert.deepEqual(epochLosses(b.history), epochLosses(a.history));

    // lowbit info RUN: the layer table of the LM run, one window of token ids as the input.
    const info = await runCli(['info', resumed]);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, new RegExp(`^model +${model} \\(${quant}\\)`, 'm'));
    assert.match(info.stdout, /^input +one window of 4 token ids/m);
    assert.match(info.stdout, model === 'lstm-lm' ? /rnn +QatLSTM .* w4a8/ : /head +Linear +\[1, 300\]/);

    const other = await runCli([...base, '--epochs', '3', '--out', resumed, '--resume', '--lr', '0.5']);
    assert.equal(other.code, 2, other.stdout);
    assert.match(other.stderr, /--resume: '.*' was trained with other settings: lr [\d.e-]+ \(now 0\.5\)/);
    const sizes = await runCli([...base.filter((x, i, all) => x !== '--hidden' && all[i - 1] !== '--hidden'), '--hidden', '12', '--epochs', '3', '--out', resumed, '--resume']);
    assert.equal(sizes.code, 2, sizes.stdout);
    assert.match(sizes.stderr, /hidden 16 \(now 12\)/);
    const done = await runCli([...base, '--epochs', '2', '--out', resumed, '--resume']);
    assert.equal(done.code, 2);
    assert.match(done.stderr, /already has 2 epochs; pass --epochs above 2/);
    const none = await runCli([...base, '--epochs', '2', '--out', join(dir, 'missing'), '--resume']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /--resume: no checkpoint at /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('lstm-lm w4a8 --resume: 1 + 1 epochs = 2 epochs straight, bit for bit; other settings refused', async () => {
  await straightVsResumed('lstm-lm', 'w4a8');
});

test('transformer-lm fp32 (every-position objective) --resume: 1 + 1 epochs = 2 epochs straight, bit for bit', async () => {
  await straightVsResumed('transformer-lm', 'fp32');
});
