/**
 * lowbit search on a language-model run: a tiny float transformer-lm → search --method ilp under a
 * size budget (plan.json within the budget, front.json, report.html with perplexity) → train
 * --plan --init (each layer's LSQ quantizers at the planned widths) → info shows the plan; the
 * image-only methods and options are refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readLmCheckpoint } from '../src/cli/lm-run.ts';
import { StaticQuantizer } from '../src/quant/ptq/static.ts';
import { LsqQuantizer } from '../src/quant/quantizers/lsq.ts';
import type { BitAssignment } from '../src/quant/search/types.ts';
import { runCli } from './cli-harness.ts';
import { TINY_LM_ARGS } from './lm-testing.ts';

test('search a transformer-lm run (ilp, nsga2) → plan.json within the budget → train --plan → info', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-lm-search-'));
  try {
    const float = join(dir, 'fp32');
    const t = await runCli(['train', '--model', 'transformer-lm', '--quant', 'fp32', '--out', float, ...TINY_LM_ARGS]);
    assert.equal(t.code, 0, t.stderr);
    // Weights: table 300·8, per block qkv 8·24 + proj 8·8 + fc1 8·16 + fc2 16·8, head 8·300 (hand-counted).
    const weights = 300 * 8 * 2 + 2 * (8 * 24 + 8 * 8 + 8 * 16 + 16 * 8);
    const budgetBytes = (weights * 3) / 8;  // the size of uniform 3-bit weights
    const out = join(dir, 'search');
    const s = await runCli(['search', '--model', float, '--budget', `size=${budgetBytes}B`, '--method', 'ilp', '--calib', '256', '--search-samples', '300', '--test-limit', '500', '--out', out, '--no-progress']);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /transformer-lm \(language model\).*10 searchable layers/);
    assert.match(s.stdout, /float32 perplexity \(search windows\): [\d.]+/);
    for (const f of ['plan.json', 'front.json', 'report.html']) assert.ok(existsSync(join(out, f)), f);
    const planFile = JSON.parse(readFileSync(join(out, 'plan.json'), 'utf8')) as { format: string; assignment: BitAssignment; search: { perplexity: number; costs: { size: number } } };
    assert.equal(planFile.format, 'lowbit-plan');
    const front = JSON.parse(readFileSync(join(out, 'front.json'), 'utf8')) as { layers: { name: string; weightCount: number }[]; metric: string };
    assert.equal(front.metric, 'perplexity');
    assert.equal(front.layers.reduce((n, l) => n + l.weightCount, 0), weights);
    const bits = front.layers.reduce((n, l) => n + l.weightCount * planFile.assignment[l.name]!.w, 0);
    assert.equal(bits, planFile.search.costs.size);
    assert.ok(bits <= budgetBytes * 8, `plan ${bits} bits within ${budgetBytes * 8}`);
    assert.ok(planFile.search.perplexity > 1 && planFile.search.perplexity < 300);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(html, /Perplexity vs model size/);
    assert.match(html, /<th>perplexity<\/th>/);
    assert.doesNotMatch(html, /accuracy \(%\)/);

    const n = await runCli(['search', '--model', float, '--budget', `size=${budgetBytes}B`, '--method', 'nsga2', '--population', '6', '--generations', '1', '--calib', '128', '--search-samples', '200', '--test-limit', '300', '--out', join(dir, 'nsga2'), '--no-progress']);
    assert.equal(n.code, 0, n.stderr);
    assert.ok(existsSync(join(dir, 'nsga2', 'plan.json')));

    const qat = join(dir, 'plan-qat');
    const q = await runCli(['train', '--model', 'transformer-lm', '--init', float, '--plan', join(out, 'plan.json'), '--out', qat, '--limit', '500', '--test-limit', '200', '--epochs', '1', '--no-progress']);
    assert.equal(q.code, 0, q.stderr);
    assert.match(q.stdout, /quant +plan \(tokenEmbedding w\d+a8/);
    const run = readLmCheckpoint(join(qat, 'checkpoint.safetensors'), 'test')!;
    assert.deepEqual(run.assignment, planFile.assignment);
    const modules = new Map(run.model.namedModules());
    for (const [name, c] of Object.entries(planFile.assignment)) {
      const wq = modules.get(`${name}.weightQuantizer`);
      assert.ok(wq instanceof LsqQuantizer, `${name} has an LSQ weight quantizer`);
      assert.equal(wq.spec.bits, c.w, name);
      if (name !== 'tokenEmbedding') assert.equal((modules.get(`${name}.inputQuantizer`) as LsqQuantizer).spec.bits, c.a, name);
    }
    assert.ok(!run.model.modules().some((m) => m instanceof StaticQuantizer));
    const info = await runCli(['info', qat]);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /transformer-lm \(plan \(tokenEmbedding=W\d+A8 blocks\.0\.attn\.qkv=W\d+A8/);
    const ev = await runCli(['eval', qat, '--limit', '100']);
    assert.equal(ev.code, 0, ev.stderr);
    assert.match(ev.stdout, /transformer-lm plan \(tokenEmbedding w\d+a8/);
    // ONNX export reads the per-layer quantizers: onnxruntime gives the run's own logits.
    const ex = await runCli(['export', qat, '--out', join(dir, 'x.onnx'), '--verify', '--samples', '50']);
    assert.equal(ex.code, 0, ex.stderr);
    assert.ok(existsSync(join(dir, 'x.onnx')));
    if (!/verify: skipped/.test(ex.stdout)) {
      assert.match(ex.stdout, /vs lowbit \(transformer-lm plan \(tokenEmbedding w\d+a8/);
      assert.match(ex.stdout, /argmax +100\.00 % same next word/);
      const ratio = Number(/\(ratio ([\d.]+)\)/.exec(ex.stdout)![1]);
      assert.ok(Math.abs(ratio - 1) < 1e-4, `perplexity ratio ${ratio}`);
    }
    const irnn = await runCli(['export', qat, '--format', 'irnn', '--out', join(dir, 'x.irnn')]);
    assert.equal(irnn.code, 2);
    assert.match(irnn.stderr, /--plan language-model run .* export it to ONNX/);

    // Refusals: image-only methods and options, QAT runs, --plan without --init or with --quant.
    const sdq = await runCli(['search', '--model', float, '--budget', 'size=1KB', '--method', 'sdq']);
    assert.equal(sdq.code, 2);
    assert.match(sdq.stderr, /--method sdq needs image data.*--method ilp or nsga2/);
    const prune = await runCli(['search', '--model', float, '--budget', 'size=1KB', '--method', 'ilp', '--prune', '1,0.5']);
    assert.equal(prune.code, 2);
    assert.match(prune.stderr, /--prune applies to image models/);
    const fromQat = await runCli(['search', '--model', qat, '--budget', 'size=1KB', '--method', 'ilp']);
    assert.equal(fromQat.code, 2);
    assert.match(fromQat.stderr, /starts from a float32 run/);
    const noInit = await runCli(['train', '--model', 'transformer-lm', '--plan', join(out, 'plan.json'), '--out', join(dir, 'x')]);
    assert.equal(noInit.code, 2);
    assert.match(noInit.stderr, /--plan needs --init RUN/);
    const withQuant = await runCli(['train', '--model', 'transformer-lm', '--plan', join(out, 'plan.json'), '--init', float, '--quant', 'w4a8', '--out', join(dir, 'x')]);
    assert.equal(withQuant.code, 2);
    assert.match(withQuant.stderr, /--plan replaces --quant/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
