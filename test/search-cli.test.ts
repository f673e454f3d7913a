/**
 * `lowbit search` end to end on a LeNet-5 trained for one short epoch: usage errors, the three
 * methods writing plan.json / front.json / report.html, the plan accepted by calibrate, and
 * SIGINT / --max-time stopping early with the best plan so far. Commands run in this process
 * through \`main\`; the SIGINT test spawns bin/lowbit.js to send it a real signal.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createModel } from '../src/nn/index.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { DATASET_STATS, DataLoader, loadDataset, take } from '../src/data/index.ts';
import { calibrate } from '../src/quant/ptq/index.ts';
import { assignmentFromPlan, loadPlanFile } from '../src/quant/search/index.ts';
import { evaluate } from '../src/train/index.ts';
import { Tensor } from '../src/tensor/tensor.ts';
import { convert } from '../src/runtime/convert.ts';
import { loadIntModel } from '../src/runtime/io.ts';
import { runCli, trainSmallFloatRun } from './cli-harness.ts';

const bin = fileURLToPath(new URL('../bin/lowbit.js', import.meta.url));

const lowbit = runCli;

const QUICK = ['--search-samples', '200', '--test-limit', '500', '--calib', '64', '--no-progress'];
/** QUICK plus a small NSGA-II (the default method); its options are refused with the other methods. */
const NSGA = [...QUICK, '--population', '4', '--generations', '1'];

describe('lowbit search', () => {
  let dir = '';
  let run = '';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-search-cli-'));
    run = await trainSmallFloatRun(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('rejects bad usage with one line and exit code 2', async () => {
    const cases: [string[], RegExp][] = [
      [['search', '--model', 'nowhere'], /--budget is required/],
      [['search', '--model', 'x', '--budget', 'size=40'], /needs a unit: size=40KB/],
      [['search', '--model', 'x', '--budget', 'size=40KB', '--wbits', '1,2'], /--wbits takes a comma-separated list of integers in \[2, 16\]/],
      [['search', '--model', 'x', '--budget', 'size=40KB', '--objectives', 'speed'], /--objectives: unknown cost 'speed'/],
      [['search', '--model', 'x', '--budget', 'size=40KB', '--prune', '0.5'], /--prune works with --method ilp/],
      [['search', '--model', 'x', '--budget', 'size=40KB', '--method', 'ilp', '--prune', '0.5,2'], /--prune takes keep ratios in \(0, 1\]/],
    ];
    for (const [args, pattern] of cases) {
      const r = await lowbit(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
    // A missing model is a file error, not a usage error: exit 1, as in eval / export / info.
    const missing = await lowbit(['search', '--model', join(dir, 'missing'), '--budget', 'size=40KB']);
    assert.equal(missing.code, 1, missing.stderr);
    assert.match(missing.stderr, /^lowbit: error: search: --model: '.*missing' does not exist/);
    assert.equal(missing.stderr.trim().split('\n').length, 1, 'one line');
  });

  it('nsga2 writes a plan that calibrate accepts, the front and the report', async () => {
    const out = join(dir, 'nsga2');
    const r = await lowbit(['search', '--model', run, '--budget', 'size=20KB', '--method', 'nsga2', '--beacons', '1', '--beacon-steps', '5', '--objectives', 'bitops', '--out', out, ...NSGA]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /chosen plan: conv1=W\dA8 conv2=W\dA8 fc1=W\dA8 fc2=W\dA8 fc3=W\dA8/);
    const front = JSON.parse(readFileSync(join(out, 'front.json'), 'utf8'));
    assert.equal(front.format, 'lowbit-search');
    assert.deepEqual(front.costs.map((c: { name: string }) => c.name), ['size', 'bitops']);
    assert.ok(front.candidates.length >= 4);
    const uniform = front.candidates.filter((c: { uniform?: string }) => c.uniform).map((c: { uniform: string }) => c.uniform).sort();
    assert.deepEqual(uniform, ['W2A8', 'W3A8', 'W4A8', 'W8A8']);
    const chosen = front.candidates[front.chosen];
    assert.ok(chosen.costs.size <= 20_000 * 8);
    // The plan file: a QuantPlan that calibrate runs, reproducing the chosen bit widths.
    const { plan, assignment } = loadPlanFile(join(out, 'plan.json'));
    assert.deepEqual(assignment, chosen.assignment);
    const model = createModel('lenet5');
    model.loadStateDict(loadCheckpoint(join(run, 'checkpoint.safetensors')).model);
    assert.deepEqual(assignmentFromPlan(model, plan), chosen.assignment);
    const normalize = DATASET_STATS.mnist;
    calibrate(model, new DataLoader(take(loadDataset('mnist', 'train'), 128), { batchSize: 64, normalize }), { plan });
    const acc = evaluate(model, new DataLoader(take(loadDataset('mnist', 'test'), 256), { batchSize: 128, normalize })).accuracy;
    assert.ok(acc > 0.5, `accuracy of the calibrated plan ${acc}`);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.equal((html.match(/<svg /g) ?? []).length, 2);
    assert.ok(html.includes('id="layers"'));
  });

  it('ilp --prune: 0-bit channels under a size budget; the plan converts to a compacted IntModel', async () => {
    const out = join(dir, 'prune');
    const r = await lowbit(['search', '--model', run, '--budget', 'size=40KB', '--method', 'ilp', '--wbits', '8', '--prune', '1,0.5,0.25', '--out', out, ...QUICK]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /channels\)/);
    const { plan, assignment } = loadPlanFile(join(out, 'plan.json'));
    const pruned = Object.entries(assignment!).filter(([, c]) => c.wPerChannel?.includes(0));
    assert.ok(pruned.length > 0, 'some layer keeps fewer channels');
    assert.ok(!assignment!['fc3']!.wPerChannel, 'the logits layer keeps every channel');
    const kept = Object.fromEntries(Object.entries(assignment!).map(([n, c]) => [n, c.wPerChannel ? c.wPerChannel.filter((b) => b !== 0).length : undefined]));
    const model = createModel('lenet5');
    const x = new Tensor(new Float32Array(16 * 784).map((_, i) => Math.sin(i)), [16, 1, 28, 28]);
    calibrate(model, [{ x }], { plan });
    const im = convert(model, { sample: x, minAgreement: 0 });
    for (const node of im.nodes) if ((node.op === 'conv2d' || node.op === 'linear') && kept[node.name] !== undefined) assert.equal(node.outFeatures, kept[node.name], node.name);
  });

  it('ilp under a size AND a BitOps budget allocates weight and activation bits', async () => {
    // No --out: the default folder names both budgets.
    const out = join(run, 'search-ilp-size-23KB-bitops-3.7M');
    // Uniform W3A3 LeNet-5 is 184,410 bits and 3.75 MBitOps: 8-bit activations cannot fit 3.7M anywhere near every layer.
    const r = await lowbit(['search', '--model', run, '--budget', 'size=23KB,bitops=3.7M', '--method', 'ilp', '--wbits', '2,3,4,8', '--abits', '2,3,4,8', ...QUICK]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(`wrote ${join(out, 'plan.json')}, `), r.stdout);
    // Each budget once, in its unit (not 'and bitops=3.7M, also bitops'); the chosen plan's line shows every budgeted cost.
    assert.match(r.stdout, /^ {2}budget {5}size=23KB = 23\.0 kB \(size\) and bitops=3\.7M = 3\.70 Mbitops \(bitops\)$/m);
    assert.match(r.stdout, /^ {2}size \d+\.\d kB \(budget 23\.0 kB\), bitops \d\.\d\d Mbitops \(budget 3\.70 Mbitops\), search accuracy /m);
    const front = JSON.parse(readFileSync(join(out, 'front.json'), 'utf8'));
    const chosen = front.candidates[front.chosen];
    assert.ok(chosen.costs.size <= 23e3 * 8 && chosen.costs.bitops <= 3.7e6, JSON.stringify(chosen.costs));
    const { assignment } = loadPlanFile(join(out, 'plan.json'));
    const widths = Object.values(assignment!).map((c) => c.a);
    assert.ok(widths.some((a) => a < 8) && new Set(widths).size > 1, `activation widths ${widths}`);
    const bad = await lowbit(['search', '--model', run, '--budget', 'size=23KB,bitops=3.7M', '--method', 'nsga2', ...NSGA]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /several budgets .* work with --method ilp/);
    // Another method's options would be ignored: refused, naming the method they belong to.
    for (const [args, message] of [
      [['--method', 'ilp', '--generations', '3'], /--generations applies to --method nsga2 \(got --method ilp\)/],
      [['--method', 'haq', '--steps', '5'], /--steps applies to --method sdq \(got --method haq\)/],
      [['--beacon-steps', '5', '--episodes', '5'], /--episodes applies to --method haq \(got --method nsga2\)/],
    ] as const) {
      const wrong = await lowbit(['search', '--model', run, '--budget', 'size=23KB', ...args, ...QUICK]);
      assert.equal(wrong.code, 2, wrong.stderr);
      assert.match(wrong.stderr, message);
    }

    // The plan deploys from the CLI: lowbit quantize --plan calibrates those widths and writes the integer model.
    const ptq = await lowbit(['quantize', '--model', run, '--plan', join(out, 'plan.json'), '--calib', '200', '--test-limit', '200', '--out', join(dir, 'ptq-plan')]);
    assert.equal(ptq.code, 0, ptq.stderr);
    for (const [layer, c] of Object.entries(assignment!)) assert.match(ptq.stdout, new RegExp(`\\b${layer} w${c.w}a${c.a}\\b`));
    const summary = JSON.parse(readFileSync(join(dir, 'ptq-plan', 'ptq.json'), 'utf8')) as { config: { assignment: unknown } };
    assert.deepEqual(summary.config.assignment, assignment);
    const intModel = loadIntModel(join(dir, 'ptq-plan', 'model.lowbit'));
    const layerBits = Object.fromEntries(intModel.layers().map((l) => [l.name, l.bits]));
    for (const [layer, c] of Object.entries(assignment!)) assert.equal(layerBits[layer], `w${c.w}a${c.a}`, layer);

    // ... and fine-tunes from the CLI: train --init --plan, then the checkpoint converts with those widths.
    const ft = join(dir, 'ft-plan');
    const train = await lowbit(['train', '--init', run, '--plan', join(out, 'plan.json'), '--limit', '512', '--test-limit', '200', '--epochs', '1', '--lr', '5e-4', '--out', ft, '--no-progress']);
    assert.equal(train.code, 0, train.stderr);
    assert.match(train.stdout, /^ +quant +plan .*plan\.json: /m);
    assert.match(train.stdout, /plan - fp32 = /);
    const saved = join(ft, 'model.lowbit');
    const evalRun = await lowbit(['eval', '--checkpoint', join(ft, 'checkpoint.safetensors'), '--save', saved, '--limit', '200']);
    assert.equal(evalRun.code, 0, evalRun.stderr);
    const tuned = Object.fromEntries(loadIntModel(saved).layers().map((l) => [l.name, l.bits]));
    for (const [layer, c] of Object.entries(assignment!)) assert.equal(tuned[layer], `w${c.w}a${c.a}`, layer);
    const noInit = await lowbit(['train', '--plan', join(out, 'plan.json'), '--limit', '64', '--epochs', '1', '--no-progress']);
    assert.equal(noInit.code, 2);
    assert.match(noInit.stderr, /--plan needs --init RUN/);
  });

  it('--rank retrains the most accurate plans within the budget and keeps the best after retraining', async () => {
    const out = join(dir, 'ilp-rank');
    const r = await lowbit(['search', '--model', run, '--budget', 'size=23KB,bitops=3.7M', '--method', 'ilp', '--wbits', '2,3,4,8', '--abits', '2,3,4,8', '--rank', '3', '--rank-steps', '4', '--out', out, ...QUICK]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('  retrained '));
    assert.equal(lines.length, 3, r.stdout);
    const front = JSON.parse(readFileSync(join(out, 'front.json'), 'utf8'));
    const ranking = front.details.ranking as { assignment: unknown; ptqAccuracy: number; retrainedAccuracy: number }[];
    assert.equal(ranking.length, 3);
    // the three most accurate in-budget plans by PTQ, best first after retraining
    const inBudget = (front.candidates as { accuracy: number; costs: { size: number; bitops: number } }[])
      .filter((c) => c.costs.size <= 23e3 * 8 && c.costs.bitops <= 3.7e6).map((c) => c.accuracy).sort((x, y) => y - x);
    assert.deepEqual(ranking.map((c) => c.ptqAccuracy).sort((x, y) => y - x), inBudget.slice(0, 3));
    for (let i = 1; i < ranking.length; i++) assert.ok(ranking[i - 1]!.retrainedAccuracy >= ranking[i]!.retrainedAccuracy);
    assert.ok(front.chosen !== null);
    assert.deepEqual(front.candidates[front.chosen].assignment, ranking[0]!.assignment);
    assert.deepEqual(loadPlanFile(join(out, 'plan.json')).assignment, ranking[0]!.assignment);
    assert.match(r.stdout, new RegExp(`\\(after QAT ${(ranking[0]!.retrainedAccuracy * 100).toFixed(2)}%\\)`));
    const bad = await lowbit(['search', '--model', run, '--budget', 'size=16KB', '--method', 'sdq', '--rank', '2', ...QUICK]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--rank works with --method nsga2 or ilp/);
  });

  it('a search that finds no plan removes the plan.json of an earlier search in the same folder and says so', async () => {
    const out = join(dir, 'refit');
    const args = ['search', '--model', run, '--beacons', '0', '--out', out, ...NSGA, '--generations', '0'];
    const fits = await lowbit([...args, '--budget', 'size=20KB']);
    assert.equal(fits.code, 0, fits.stderr);
    assert.ok(existsSync(join(out, 'plan.json')));
    const none = await lowbit([...args, '--budget', 'size=1KB']);
    assert.equal(none.code, 1, none.stdout);
    assert.match(none.stdout, /no evaluated plan fits size=1KB/);
    assert.match(none.stdout, /^wrote .*front\.json, .*report\.html$/m);
    assert.ok(none.stdout.includes(`no plan written (removed ${join(out, 'plan.json')}, left by an earlier run)`), none.stdout);
    assert.ok(!existsSync(join(out, 'plan.json')), 'the earlier plan is gone');
    assert.equal(JSON.parse(readFileSync(join(out, 'front.json'), 'utf8')).chosen, null);
    // Again: nothing to remove any more.
    const again = await lowbit([...args, '--budget', 'size=1KB']);
    assert.equal(again.code, 1);
    assert.match(again.stdout, /^no plan written$/m);
  });

  it('refuses, before any work or folder, what it cannot honour: too many search or calibration samples, a checkpoint of another --arch, an infeasible ilp budget', async () => {
    const out = join(dir, 'refused', 'out');
    const cases: [string[], number, RegExp][] = [
      [['--budget', 'size=20KB', '--search-samples', '20000'], 2, /--search-samples 20000: the mnist test set has 10,000 samples; at most 9,999 can score candidates/],
      [['--budget', 'size=20KB', '--test-limit', '500', '--search-samples', '500'], 2, /--search-samples 500: the mnist test set \(with --test-limit\) has 500 samples; at most 499/],
      [['--budget', 'size=20KB', '--calib', '60001'], 2, /--calib 60001: the mnist training split has 60,000 samples/],
      [['--budget', 'size=20KB', '--arch', 'cnn'], 2, /does not match --arch cnn: missing features\.0\.weight, .* \(29 more\); unexpected conv1\.weight, conv1\.bias, conv2\.weight \(7 more\)/],
      [['--budget', 'size=1KB', '--method', 'ilp', '--search-samples', '200', '--test-limit', '500', '--calib', '64'], 1, /no plan fits size=1KB: the cheapest plan .* costs size/],
    ];
    for (const [extra, code, pattern] of cases) {
      const r = await lowbit(['search', '--model', run, '--out', out, '--no-progress', ...extra]);
      assert.equal(r.code, code, `${extra.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(!existsSync(join(dir, 'refused')), `${extra.join(' ')}: no folder left behind`);
    }
    // The default of 2000 search samples still shrinks to a small --test-limit (all but one).
    // (and another dataset of the same shape is run, with a warning)
    const small = await lowbit(['search', '--model', run, '--budget', 'size=100KB', '--method', 'ilp', '--wbits', '8', '--test-limit', '300', '--calib', '64', '--dataset', 'fashion-mnist', '--no-progress', '--out', join(dir, 'small')]);
    assert.equal(small.code, 0, small.stderr);
    assert.match(small.stdout, /fashion-mnist: 64 calibration samples, scored on the last 299 test samples, 1 held out/);
    assert.match(small.stderr, /^lowbit search: warning: --dataset fashion-mnist, but the model was trained on mnist/m);
  });

  it('ilp and sdq write their outputs too', async () => {
    const ilp = await lowbit(['search', '--model', run, '--budget', 'bitops=60M', '--method', 'ilp', '--wbits', '2,4,8', '--out', join(dir, 'ilp'), ...QUICK]);
    assert.equal(ilp.code, 0, ilp.stderr);
    const ilpFront = JSON.parse(readFileSync(join(dir, 'ilp', 'front.json'), 'utf8'));
    assert.ok(ilpFront.candidates[ilpFront.chosen].costs.bitops <= 60e6);
    assert.ok(Object.keys(ilpFront.details.deltaLoss).length === 5);
    const sdq = await lowbit(['search', '--model', run, '--budget', 'size=16KB', '--method', 'sdq', '--steps', '6', '--wbits', '2,4,8', '--out', join(dir, 'sdq'), ...QUICK]);
    assert.equal(sdq.code, 0, sdq.stderr);
    const plan = loadPlanFile(join(dir, 'sdq', 'plan.json'));
    assert.equal(Object.keys(plan.assignment!).length, 5);
    assert.ok(existsSync(join(dir, 'sdq', 'report.html')));
  });

  it('haq writes its outputs within every budget, and --max-time stops it early', async () => {
    const out = join(dir, 'haq');
    const r = await lowbit(['search', '--model', run, '--budget', 'size=23KB,bitops=3.7M', '--method', 'haq', '--episodes', '6', '--wbits', '2,3,4,8', '--abits', '4,8', '--out', out, ...QUICK]);
    assert.equal(r.code, 0, r.stderr);
    const front = JSON.parse(readFileSync(join(out, 'front.json'), 'utf8'));
    assert.ok(front.candidates[front.chosen].costs.size <= 23e3 * 8 && front.candidates[front.chosen].costs.bitops <= 3.7e6);
    assert.equal(front.details.history.length, 6);
    assert.equal(Object.keys(loadPlanFile(join(out, 'plan.json')).assignment!).length, 5);
    const tooSmall = await lowbit(['search', '--model', run, '--budget', 'size=1KB', '--method', 'haq', '--out', join(dir, 'haq-small'), ...QUICK]);
    assert.equal(tooSmall.code, 1);
    assert.match(tooSmall.stderr, /no plan fits size=1KB: every layer at its narrowest widths costs size/);
    const stop = await lowbit(['search', '--model', run, '--budget', 'size=100KB', '--method', 'haq', '--episodes', '500', '--max-time', '0.5', '--out', join(dir, 'haq-stop'), ...QUICK]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(stop.stdout, /stopped early after \d+ s/);
    const stopped = JSON.parse(readFileSync(join(dir, 'haq-stop', 'front.json'), 'utf8'));
    assert.equal(stopped.stopped, true);
    assert.ok(stopped.details.history.length >= 1 && stopped.details.history.length < 500);
  });

  it('--max-time stops early and keeps the best plan so far', async () => {
    const out = join(dir, 'maxtime');
    // A budget every candidate fits (uniform W8 is 61 kB): on a slow backend or a loaded machine the
    // stop may come after only the first seeds were scored, and those must still yield a plan.
    const r = await lowbit(['search', '--model', run, '--budget', 'size=100KB', '--beacons', '0', '--max-time', '0.5', '--out', out, ...NSGA, '--generations', '50']);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    assert.match(r.stdout, /stopped early after \d+ s/);
    const front = JSON.parse(readFileSync(join(out, 'front.json'), 'utf8'));
    assert.equal(front.stopped, true);
    assert.ok(front.candidates.length < 4 * 51);
    assert.ok(existsSync(join(out, 'plan.json')) && existsSync(join(out, 'report.html')));
  });

  it('SIGINT stops after the current evaluation and writes the outputs', async () => {
    const out = join(dir, 'sigint');
    const child = spawn(process.execPath, [bin, 'search', '--model', run, '--budget', 'size=30KB', '--beacons', '0', '--out', out, ...NSGA, '--generations', '200'], {
      env: { ...process.env, LOWBIT_DEBUG: '' },
    });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (!sent && stdout.includes('float32 accuracy')) {
        sent = true;
        setTimeout(() => child.kill('SIGINT'), 300);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 0, stderr);
    assert.match(stderr, /stopping after the current step/);
    assert.match(stdout, /stopped early/);
    const front = JSON.parse(readFileSync(join(out, 'front.json'), 'utf8'));
    assert.equal(front.stopped, true);
    assert.ok(front.candidates.length >= 1 && front.candidates.length < 4 * 201);
  });
});
