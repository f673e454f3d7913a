/**
 * examples/ keeps working: every Node.js example runs as a user runs it -- a child process
 * (`node --import tsx examples/X.ts`) importing 'lowbit' through the package's own "exports"
 * (self-reference) -- in its tiny-settings mode (LOWBIT_EXAMPLE_QUICK=1), and its printed outcome
 * is checked, recomputed here where it can be (the quick start's .lowbit file is reloaded and
 * re-evaluated). The browser example is built by its own build script and loaded in headless
 * Chromium; its predictions must equal the same IntModel's on Node.js.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { data, onnx, runtime } from '../src/index.ts';
import { chromiumUnavailable, withChromiumPage } from './chromium.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = mkdtempSync(join(tmpdir(), 'lowbit-examples-'));

/**
 * Per example. The children inherit LOWBIT_BACKEND: on the pure-TS reference backend (the
 * reference test suite) ptq.ts alone took over 2 minutes beside a CI run.
 */
const EXAMPLE_TIMEOUT_MS = process.env['LOWBIT_BACKEND'] === 'reference' ? 900_000 : 120_000;

/** Runs `examples/<file>` with tiny settings; resolves with its stdout, rejects with its stderr on a non-zero exit. */
function runExample(file: string, args: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', join('examples', file), ...args], {
      cwd: root, env: { ...process.env, LOWBIT_EXAMPLE_QUICK: '1' }, timeout: EXAMPLE_TIMEOUT_MS, maxBuffer: 16 << 20,
    }, (error, stdout, stderr) => {
      if (error) reject(new Error(`examples/${file} failed (${error.message}):\n${stderr}\n${stdout}`));
      else resolve(stdout);
    });
  });
}

/** The number after `label` in `text` as a fraction ('93.20 %' → 0.932). */
function percentAfter(text: string, label: string): number {
  const m = new RegExp(`${label}\\s*:?\\s*(\\d+\\.\\d+) %`).exec(text);
  assert.ok(m, `no '${label} NN.NN %' in:\n${text}`);
  return Number(m[1]) / 100;
}

/** Index of the largest of `classes` values in row `i` of `logits`. */
function argmax(logits: Float32Array, i: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
  return best;
}

/**
 * The examples start when this file loads, two at a time (one per core), each lane in order; the
 * tests await their own. `.catch` marks each promise handled so a failure surfaces in its test,
 * not as an unhandled rejection.
 */
function lane(...files: [string, string[]][]): Promise<string>[] {
  let previous: Promise<unknown> = Promise.resolve();
  return files.map(([file, args]) => {
    const run = previous.catch(() => undefined).then(() => runExample(file, args));
    run.catch(() => undefined);
    previous = run;
    return run;
  });
}
const [quickstartRun, searchRun] = lane(['quickstart.ts', [join(out, 'quickstart')]], ['search.ts', ['size=20KB']]);
const [ptqRun, customOpRun] = lane(['ptq.ts', []], ['custom-op.ts', []]);
/** The quick start's output (the browser test needs its .lowbit file). */
const quickstart = (): Promise<string> => quickstartRun!;

describe('examples', () => {
  after(() => rmSync(out, { recursive: true, force: true }));

  it('quickstart: float -> W4A8 QAT -> IntModel -> .lowbit -> ONNX', async () => {
    const stdout = await quickstart();
    const floatAccuracy = percentAfter(stdout, 'float32 accuracy');
    const qatAccuracy = percentAfter(stdout, 'W4A8 fake-quant accuracy');
    const intAccuracy = percentAfter(stdout, 'integer runtime accuracy');
    // 6,000 training images, one epoch each: LeNet-5 reaches ~91-93 % on the first 1,000 test images.
    assert.ok(floatAccuracy > 0.85, `float32 ${floatAccuracy}`);
    assert.ok(qatAccuracy > 0.85, `W4A8 ${qatAccuracy}`);
    // convert() promises >= 99 % argmax agreement with the fake-quant model.
    assert.ok(Math.abs(intAccuracy - qatAccuracy) <= 0.01, `integer ${intAccuracy} vs fake-quant ${qatAccuracy}`);
    assert.match(stdout, /loaded back: identical logits/);

    // The file loads here too, has 4-bit layers, and computes the accuracy the example printed.
    const lowbitPath = join(out, 'quickstart', 'lenet5-w4a8.lowbit');
    const model = runtime.loadIntModel(lowbitPath);
    assert.deepEqual(model.layers().filter((l) => l.bits !== '-').map((l) => l.bits), ['w8a8', 'w4a8', 'w4a8', 'w4a8', 'w8a8']);
    const test = data.normalize(data.take(data.loadDataset('mnist', 'test'), 1000), data.DATASET_STATS.mnist);
    const logits = model.run(test.images, test.length);
    let correct = 0;
    for (let i = 0; i < test.length; i++) if (argmax(logits, i, 10) === test.labels[i]) correct++;
    assert.equal((correct / test.length).toFixed(4), intAccuracy.toFixed(4));

    // The ONNX file decodes and is a QDQ graph; onnxruntime (when installed) agrees with the IntModel.
    const graph = onnx.decodeModel(readFileSync(join(out, 'quickstart', 'lenet5-w4a8.onnx'))).graph!;
    const ops = new Set(graph.node!.map((n) => n.opType));
    for (const op of ['QuantizeLinear', 'DequantizeLinear', 'Conv', 'Gemm']) assert.ok(ops.has(op) || (op === 'Gemm' && ops.has('MatMul')), `no ${op} in ${[...ops].join(', ')}`);
    // (The int8 layers' textbook bias scale may flip a near-tie: docs/onnx.md.)
    if (!stdout.includes('onnxruntime check skipped')) assert.ok(percentAfter(stdout, 'same argmax as the IntModel on') >= 0.99, stdout);
  });

  it('ptq: observers, per-channel weights, BN folding, integer runtime', async () => {
    const stdout = await ptqRun!;
    const floatAccuracy = percentAfter(stdout, 'float32 accuracy');
    assert.ok(floatAccuracy > 0.85, `float32 ${floatAccuracy}`);
    // W8A8 min-max PTQ costs at most a point; 4-bit per-channel weights at most three.
    assert.ok(percentAfter(stdout, 'W8A8 minmax, weights per channel') >= floatAccuracy - 0.01);
    assert.ok(percentAfter(stdout, 'W4A8 minmax, weights per channel') >= floatAccuracy - 0.03);
    // The four Conv2d–BatchNorm2d pairs of nn.cnn are folded; first and last layers stay at 8 bits.
    assert.equal(stdout.match(/Conv2d\+BN/g)?.length, 4, stdout);
    assert.match(stdout, /features\.0\s+Conv2d\+BN\s+static int8\/ch/);
    assert.match(stdout, /features\.3\s+Conv2d\+BN\s+static int4\/ch/);
    const best = /best W4A8: .*: (\d+\.\d+) %/.exec(stdout);
    assert.ok(best, stdout);
    // convert() promises >= 99 % argmax agreement with the fake-quant model it came from.
    assert.ok(Math.abs(percentAfter(stdout, 'integer runtime accuracy') - Number(best[1]) / 100) <= 0.01, stdout);
  });

  it('search: a plan within the size budget, evaluated and converted', async () => {
    const stdout = await searchRun!;
    const chosen = /chosen (\d+\.\d+) KB/.exec(stdout);
    assert.ok(chosen && Number(chosen[1]) <= 20, stdout);
    // The printed plan adds up to the chosen size and uses only the offered widths.
    const rows = [...stdout.matchAll(/^(conv1|conv2|fc1|fc2|fc3)\s+(\d+)\s+(\d+)\s+8\s/gm)];
    assert.equal(rows.length, 5, stdout);
    let bits = 0;
    for (const [, , weights, w] of rows) {
      assert.ok([2, 3, 4, 6, 8].includes(Number(w)), `width ${w}`);
      bits += Number(weights) * Number(w);
    }
    assert.equal((bits / 8000).toFixed(2), chosen[1]);
    assert.ok(percentAfter(stdout, 'searched plan') > 0.8, stdout);
    assert.match(stdout, /uniform W2A8: .* at 15\.37 KB\n/);
    assert.match(stdout, /uniform W4A8: .* \(over budget\)/);
    assert.match(stdout, /integer model: \d+ bytes of packed layer tensors/);
  });

  it('custom-op: composed op, gradcheck, module, straight-through rounding', async () => {
    const stdout = await customOpRun!;
    const forward = /max \|error\| (\S+)/.exec(stdout);
    assert.ok(forward && Number(forward[1]) <= 1e-12, stdout);
    const check = /max relative error (\S+)/.exec(stdout);
    assert.ok(check && Number(check[1]) < 1e-6, stdout);
    assert.match(stdout, /roundSte\(\[0\.26, -0\.74, 1\.1\], 0\.5\) = \[0\.5, -0\.5, 1\], gradient \[1, 2, 3\]/);
    assert.match(stdout, /state dict keys: .*2\.beta/);
    assert.ok(percentAfter(stdout, 'test accuracy') > 0.7, stdout);
  });

  it('browser: the page classifies digits in Chromium like Node.js does', async (t) => {
    const why = await chromiumUnavailable();
    if (why) return t.skip(why);
    await quickstart();
    const modelPath = join(out, 'quickstart', 'lenet5-w4a8.lowbit');
    const site = join(out, 'site');
    await runExample(join('browser', 'build.ts'), [modelPath, site, '16']);
    for (const file of ['index.html', 'main.js', 'model.lowbit', 'digits.json']) assert.ok(existsSync(join(site, file)), `${file} was not built`);
    assert.doesNotMatch(readFileSync(join(site, 'main.js'), 'utf8'), /from\s*["']node:|require\(["']node:/, 'the bundle imports a Node.js module');

    const { value: status, problems } = await withChromiumPage(site, 'index.html', async (page) => {
      // A string is evaluated in the page (this file is type-checked without the DOM library).
      await page.waitForFunction("/^(classified|error)/.test(document.getElementById('status')?.textContent ?? '')", undefined, { timeout: 60_000 });
      return (await page.textContent('#status')) ?? '';
    });
    assert.deepEqual(problems.errors, []);
    assert.deepEqual(problems.failedRequests, []);
    const m = /^classified 16 digits: (\d+) correct \(.* ms\); predictions ((?:\d ?){16})$/.exec(status);
    assert.ok(m, status);

    // The same model and digits on Node.js (native or TypeScript executor: identical integers).
    const digits = JSON.parse(readFileSync(join(site, 'digits.json'), 'utf8')) as { count: number; labels: number[]; pixels: number[] };
    const model = runtime.loadIntModel(modelPath);
    const x = new Float32Array(digits.pixels.map((v) => v / 255));
    const nodeLogits = model.run(data.normalize({ ...data.take(data.loadDataset('mnist', 'test'), 16), images: x }, data.DATASET_STATS.mnist).images, 16);
    const nodePredictions = Array.from({ length: 16 }, (_, i) => argmax(nodeLogits, i, 10));
    assert.deepEqual(m[2]!.trim().split(' ').map(Number), nodePredictions);
    const correct = nodePredictions.filter((p, i) => p === digits.labels[i]).length;
    assert.equal(Number(m[1]), correct);
    assert.ok(correct >= 12, `${correct} of 16 digits right`);
  });
});
