/**
 * End to end: float32 ONNX image classifiers in the CLI — `lowbit info|eval FILE.onnx` and
 * `lowbit quantize --model FILE.onnx` — on the PyTorch LeNet-5 fixture (test/fixtures/onnx, made by
 * bench/peers/torch_lenet_onnx.py, trained on pixels in [0, 1]) and on small graphs lowbit exports
 * itself (for a wrong class count and the lowbit.normalize metadata).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './cli-harness.ts';
import { DataLoader, DATASET_STATS, loadDataset, take } from '../src/data/index.ts';
import { evaluate } from '../src/train/index.ts';
import { importOnnx } from '../src/onnx/import.ts';
import { exportOnnx } from '../src/onnx/export.ts';
import { createModel } from '../src/nn/index.ts';
import { loadIntModel } from '../src/runtime/io.ts';

const FIXTURE = new URL('./fixtures/onnx/lenet5-torch.onnx', import.meta.url).pathname;
const LIMIT = 500;

/** The percentage a line `label  97.65 % (...)` prints, as a fraction. */
function percentAfter(text: string, label: string): number {
  const m = new RegExp(`${label}\\s+([0-9.]+) %`).exec(text);
  assert.ok(m, `no '${label} ... %' in:\n${text}`);
  return Number(m[1]) / 100;
}

describe('ONNX models in the CLI', () => {
  let dir = '';
  let onnx = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-cli-onnx-'));
    onnx = join(dir, 'lenet5.onnx');
    copyFileSync(FIXTURE, onnx);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('info: opset, producer, op types and the layer table of the imported graph', async () => {
    const r = await runCli(['info', onnx]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /format\s+ONNX, opset 13 \(pytorch 1\.13\.0\)/);
    assert.match(r.stdout, /input\s+'input' \[N, 1, 28, 28\] float32/);
    assert.match(r.stdout, /ops\s+Conv 2, Relu 4, MaxPool 2, Flatten 1, Gemm 3/);
    assert.match(r.stdout, /_7_Gemm\s+Linear\s+\[1, 120\]\s+48,120/);
    assert.match(r.stdout, /total params:\s+61,706/);
    const j = await runCli(['info', onnx, '--json']);
    const info = JSON.parse(j.stdout) as { ops: Record<string, number>; summary: { totalParams: number } };
    assert.deepEqual(info.ops, { Conv: 2, Relu: 4, MaxPool: 2, Flatten: 1, Gemm: 3 });
    assert.equal(info.summary.totalParams, 61706);
  });

  it('eval: the accuracy of the imported graph on pixels in [0, 1]; --verify agrees with onnxruntime-node', async () => {
    const r = await runCli(['eval', onnx, '--limit', String(LIMIT), '--verify']);
    assert.equal(r.code, 0, r.stderr);
    // The same figure computed here through the API.
    const test = take(loadDataset('mnist', 'test'), LIMIT);
    const expected = evaluate(importOnnx(onnx), new DataLoader(test, { batchSize: 100 })).accuracy;
    assert.equal(percentAfter(r.stdout, 'accuracy'), Math.round(expected * 10000) / 10000);
    assert.ok(expected > 0.95, `fixture accuracy ${expected}`);
    assert.match(r.stdout, /input scaling none: pixels in \[0, 1\]/);
    if (/verify: skipped/.test(r.stdout)) return;  // onnxruntime-node not installed
    assert.match(r.stdout, /verify: onnxruntime-node [0-9.]+, 500 samples: argmax agreement 100\.00 %/);
    const maxDiff = Number(/max \|diff\| ([0-9.e+-]+)/.exec(r.stdout)![1]);
    assert.ok(maxDiff < 1e-4, `max |diff| ${maxDiff}`);
  });

  it('eval --normalize dataset scales the pixels as lowbit train does (this model, trained on [0, 1], loses loss)', async () => {
    const r = await runCli(['eval', onnx, '--limit', String(LIMIT), '--normalize', 'dataset']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /input scaling \(x - 0\.1307\) \/ 0\.3081 \(mnist\)/);
    const test = take(loadDataset('mnist', 'test'), LIMIT);
    const scaled = evaluate(importOnnx(onnx), new DataLoader(test, { batchSize: 100, normalize: DATASET_STATS.mnist }));
    assert.equal(percentAfter(r.stdout, 'accuracy'), Math.round(scaled.accuracy * 10000) / 10000);
    const raw = evaluate(importOnnx(onnx), new DataLoader(test, { batchSize: 100 }));
    assert.ok(scaled.loss > raw.loss, `loss with the dataset scaling ${scaled.loss}, on [0, 1] ${raw.loss}`);
    assert.match(r.stdout, new RegExp(`loss ${scaled.loss.toFixed(4)}`));
  });

  it('quantize --model FILE.onnx: ptq.json and an integer model.lowbit that records the input scaling; eval and export run it', async () => {
    const r = await runCli(['quantize', '--model', onnx, '--bits', 'w8a8', '--calib', '256', '--test-limit', String(LIMIT)]);
    assert.equal(r.code, 0, r.stderr);
    const out = join(dir, 'lenet5-ptq-w8a8-minmax');
    assert.ok(existsSync(join(out, 'model.lowbit')) && existsSync(join(out, 'ptq.json')));
    assert.ok(!existsSync(join(out, 'model.safetensors')), 'no fake-quant state without a lowbit architecture to load it into');
    const ptq = JSON.parse(readFileSync(join(out, 'ptq.json'), 'utf8')) as { fp32Accuracy: number; quantizedAccuracy: number; config: { source: string } };
    assert.equal(ptq.config.source, onnx);
    assert.ok(Math.abs(ptq.quantizedAccuracy - ptq.fp32Accuracy) <= 0.01, `w8a8 ${ptq.quantizedAccuracy} vs fp32 ${ptq.fp32Accuracy}`);
    // The integer model on raw pixels: no scaling recorded as mean 0, std 1.
    const int = loadIntModel(join(out, 'model.lowbit'));
    assert.deepEqual(int.graph.metadata?.normalize, { mean: 0, std: 1 });
    const test = take(loadDataset('mnist', 'test'), LIMIT);
    const logits = int.run(new Float32Array(test.images), LIMIT);
    let correct = 0;
    for (let i = 0; i < LIMIT; i++) {
      let best = 0;
      for (let c = 1; c < 10; c++) if (logits[i * 10 + c]! > logits[i * 10 + best]!) best = c;
      if (best === test.labels[i]) correct++;
    }
    assert.ok(Math.abs(correct / LIMIT - ptq.quantizedAccuracy) <= 0.006, `integer ${correct / LIMIT} vs fake-quant ${ptq.quantizedAccuracy}`);
    const e = await runCli(['eval', join(out, 'model.lowbit'), '--limit', String(LIMIT)]);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(percentAfter(e.stdout, 'accuracy'), correct / LIMIT);
  });

  it('train --init FILE.onnx: QAT of the imported graph, the ONNX accuracy as baseline; eval, info and resume read the run', async () => {
    const out = join(dir, 'qat');
    const r = await runCli(['train', '--init', onnx, '--quant', 'w4a4', '--epochs', '1', '--lr', '5e-4', '--limit', '2048', '--test-limit', String(LIMIT), '--out', out, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as { testAccuracy: number; config: { model: string; onnx: string; normalize: unknown } };
    assert.equal(metrics.config.model, 'onnx');
    assert.equal(metrics.config.onnx, onnx);
    assert.deepEqual(metrics.config.normalize, { mean: 0, std: 1 });
    // The baseline line is the imported graph's accuracy on the same test images.
    const test = take(loadDataset('mnist', 'test'), LIMIT);
    const fp32 = evaluate(importOnnx(onnx), new DataLoader(test, { batchSize: 100 })).accuracy;
    assert.equal(percentAfter(r.stdout, 'fp32 baseline:'), Math.round(fp32 * 10000) / 10000);
    assert.ok(metrics.testAccuracy > 0.9, `W4A4 fine-tune ${metrics.testAccuracy}`);
    // eval --checkpoint rebuilds the graph from the file, with the run's input scaling: the integer
    // model it converts gives the run's accuracy on the same images and agrees with the fake-quant one.
    const e = await runCli(['eval', '--checkpoint', out, '--limit', String(LIMIT), '--compare']);
    assert.equal(e.code, 0, e.stderr);
    assert.ok(Math.abs(percentAfter(e.stdout, 'accuracy') - metrics.testAccuracy) <= 0.004, e.stdout);
    assert.ok(percentAfter(e.stdout, 'agreement') >= 0.99, e.stdout);
    const i = await runCli(['info', out]);
    assert.equal(i.code, 0, i.stderr);
    assert.match(i.stdout, /model\s+onnx \(w4a4/);
    const resumed = await runCli(['train', '--init', onnx, '--quant', 'w4a4', '--epochs', '2', '--lr', '5e-4', '--limit', '2048', '--test-limit', String(LIMIT), '--out', out, '--no-progress', '--resume']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, /resume\s+from epoch 1 of/);
    assert.match(resumed.stdout, /epoch 2\/2/);
    // PTQ reads .onnx files and lowbit runs: a QAT run is refused as for any run, and so is a float
    // fine-tune of an ONNX model (its graph is the file's); a moved file is named.
    const q = await runCli(['quantize', '--model', out]);
    assert.equal(q.code, 2);
    assert.match(q.stderr, /trained with --quant w4a4/);
    const floatRun = join(dir, 'float-ft');
    assert.equal((await runCli(['train', '--init', onnx, '--quant', 'fp32', '--epochs', '1', '--limit', '256', '--test-limit', '64', '--out', floatRun, '--no-progress'])).code, 0);
    const qf = await runCli(['quantize', '--model', floatRun]);
    assert.equal(qf.code, 2);
    assert.match(qf.stderr, /is a float run fine-tuned from an ONNX model \(.*lenet5\.onnx\); post-training quantization reads lowbit architectures' runs or \.onnx files/);
    const m = await runCli(['train', '--init', onnx, '--model', 'mlp']);
    assert.equal(m.code, 2);
    assert.match(m.stderr, /--model names a lowbit architecture; --init .* brings its own graph/);
    const moved = join(dir, 'moved.onnx');
    copyFileSync(onnx, moved);
    const out2 = join(dir, 'qat-moved');
    assert.equal((await runCli(['train', '--init', moved, '--quant', 'w8a8', '--epochs', '1', '--limit', '256', '--test-limit', '64', '--out', out2, '--no-progress'])).code, 0);
    rmSync(moved);
    const gone = await runCli(['eval', '--checkpoint', out2, '--limit', '10']);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /was fine-tuned from '.*moved\.onnx', which is gone/);
  });

  it('search --model FILE.onnx: an ilp plan within the budget; quantize --plan takes it to an integer model', async () => {
    const out = join(dir, 'search');
    const r = await runCli(['search', '--model', onnx, '--budget', 'size=30KB', '--method', 'ilp', '--calib', '64', '--test-limit', '400', '--search-samples', '200', '--out', out, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /model\s+ONNX graph \(opset 13, pytorch 1\.13\.0\)/);
    const plan = JSON.parse(readFileSync(join(out, 'plan.json'), 'utf8')) as { assignment: Record<string, { w: number }>; search: { costs: { size: number }; budget: { value: number } } };
    assert.deepEqual(Object.keys(plan.assignment), ['_0_Conv', '_3_Conv', '_7_Gemm', '_9_Gemm', '_11_Gemm']);
    // Sizes in bits: 30 kB = 240,000.
    assert.equal(plan.search.budget.value, 240_000);
    assert.ok(plan.search.costs.size <= 240_000, `size ${plan.search.costs.size}`);
    assert.ok(Object.values(plan.assignment).some((c) => c.w < 8), 'the budget is below uniform 8 bits');
    const q = await runCli(['quantize', '--model', onnx, '--plan', join(out, 'plan.json'), '--calib', '64', '--test-limit', '200', '--out', join(dir, 'plan-ptq')]);
    assert.equal(q.code, 0, q.stderr);
    const int = loadIntModel(join(dir, 'plan-ptq', 'model.lowbit'));
    const bits = int.nodes.filter((n) => n.op === 'linear' || n.op === 'conv2d').map((n) => (n as { weightBits: number }).weightBits);
    assert.deepEqual(bits, Object.values(plan.assignment).map((c) => c.w));
  });

  it('refuses what it cannot run with one line: a truncated file, a QDQ file, a wrong class count, --arch, --normalize without ONNX', async () => {
    const truncated = join(dir, 'truncated.onnx');
    writeFileSync(truncated, readFileSync(onnx).subarray(0, 3000));
    const t = await runCli(['eval', truncated]);
    assert.equal(t.code, 1);
    assert.match(t.stderr, /truncated\.onnx: cannot import the ONNX model: .*\[/);
    assert.equal(t.stderr.trim().split('\n').length, 1, t.stderr);

    // A 5-class MLP exported by lowbit: mnist has 10 classes. Its lowbit.normalize is read by 'auto'.
    const five = join(dir, 'five.onnx');
    const mlp = createModel('mlp', { numClasses: 5 });
    writeFileSync(five, exportOnnx(mlp, { inputShape: [1, 28, 28], metadata: { 'lowbit.normalize': JSON.stringify(DATASET_STATS.mnist) } }).bytes);
    const c = await runCli(['eval', five, '--limit', '10']);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /five\.onnx: output '.*' has 5 scores per sample, mnist has 10 classes/);

    const ten = join(dir, 'ten.onnx');
    writeFileSync(ten, exportOnnx(createModel('mlp'), { inputShape: [1, 28, 28], metadata: { 'lowbit.normalize': JSON.stringify(DATASET_STATS.mnist) } }).bytes);
    const auto = await runCli(['eval', ten, '--limit', '10']);
    assert.equal(auto.code, 0, auto.stderr);
    assert.match(auto.stdout, /input scaling \(x - 0\.1307\) \/ 0\.3081 \(the file's lowbit\.normalize\)/);

    const q = await runCli(['quantize', '--model', join(dir, 'lenet5-ptq-w8a8-minmax', 'model.lowbit'), '--bits', 'w8a8']);
    assert.notEqual(q.code, 0);
    const qdq = join(dir, 'qdq.onnx');
    writeFileSync(qdq, exportOnnx(loadIntModel(join(dir, 'lenet5-ptq-w8a8-minmax', 'model.lowbit'))).bytes);
    const d = await runCli(['info', qdq]);
    assert.equal(d.code, 1);
    assert.match(d.stderr, /QuantizeLinear.*a QDQ file is already quantized/);

    const a = await runCli(['quantize', '--model', onnx, '--arch', 'lenet5']);
    assert.equal(a.code, 2);
    assert.match(a.stderr, /--arch names a lowbit architecture/);
    const n = await runCli(['eval', join(dir, 'lenet5-ptq-w8a8-minmax', 'model.lowbit'), '--normalize', 'none']);
    assert.equal(n.code, 2);
    assert.match(n.stderr, /--normalize and --verify apply to \.onnx models/);
  });
});
