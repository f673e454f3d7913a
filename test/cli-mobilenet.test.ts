/**
 * `lowbit train --model mobilenet` end to end on a few hundred MNIST images: a float32 run,
 * `lowbit quantize` per channel and per tensor (--weight-granularity, recorded in ptq.json and read
 * back by `lowbit eval --checkpoint`), `lowbit eval` of the written model.lowbit against the
 * fake-quant accuracy, and a W4A4 QAT fine-tune from the float run.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli as lowbit } from './cli-harness.ts';

const QUICK = ['--calib', '64', '--test-limit', '100'];

describe('lowbit with --model mobilenet', () => {
  let dir = '';
  let run = '';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-mobilenet-cli-'));
    run = join(dir, 'fp32');
    const r = await lowbit(['train', '--model', 'mobilenet', '--quant', 'fp32', '--limit', '512', '--test-limit', '100', '--epochs', '1', '--out', run, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /model +mobilenet, 50,410 parameters/);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const granularity of ['channel', 'tensor'] as const) {
    it(`quantize w8a8 per ${granularity}: ptq.json records it, model.lowbit evaluates near the fake-quant accuracy, --checkpoint rebuilds the same scales`, async () => {
      const out = join(dir, `ptq-${granularity}`);
      const r = await lowbit(['quantize', '--model', run, '--bits', 'w8a8', '--weight-granularity', granularity, '--out', out, ...QUICK]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`weights default per ${granularity}`));
      assert.match(r.stdout, /blocks\.1\.depthwise\.0 +Conv2d\+BN/);
      assert.match(r.stdout, /wrote .*model\.lowbit \([\d,]+ bytes, integer model\)/);
      const summary = JSON.parse(readFileSync(join(out, 'ptq.json'), 'utf8')) as { config: { weightGranularity?: string } };
      assert.equal(summary.config.weightGranularity, granularity === 'tensor' ? 'tensor' : undefined);
      const printed = Number(/^w8a8 test accuracy: +([\d.]+) %/m.exec(r.stdout)?.[1]);
      const e = await lowbit(['eval', out, '--limit', '100']);
      assert.equal(e.code, 0, e.stderr);
      const integer = Number(/^accuracy +([\d.]+) %/m.exec(e.stdout)?.[1]);
      assert.ok(Math.abs(integer - printed) <= 2, `integer ${integer} % vs fake-quant ${printed} % on 100 images`);
      const again = await lowbit(['eval', '--checkpoint', join(out, 'model.safetensors'), '--limit', '100']);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, new RegExp(`accuracy +${printed.toFixed(2).replace('.', '\\.')} %`), 'the rebuilt fake-quant model scores as quantize printed');
    });
  }

  it('train --init the float run --quant w4a4: a QAT fine-tune that converts', async () => {
    const out = join(dir, 'w4a4');
    const r = await lowbit(['train', '--model', 'mobilenet', '--init', run, '--quant', 'w4a4', '--limit', '256', '--test-limit', '100', '--epochs', '1', '--lr', '5e-4', '--out', out, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    const saved = await lowbit(['eval', '--checkpoint', out, '--save', join(out, 'model.lowbit'), '--compare', '--limit', '100']);
    assert.equal(saved.code, 0, saved.stderr);
    const e = await lowbit(['eval', join(out, 'model.lowbit'), '--limit', '100']);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /blocks\.1\.depthwise\.0 +conv2d +w4a4/);
    assert.match(e.stdout, /accuracy +[\d.]+ %/);
  });
});
