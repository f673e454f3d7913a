/**
 * End-to-end tests of `lowbit quantize`'s checks and output folders: a checkpoint that does not
 * match --arch, --calib beyond the training split, --out created only when results are written,
 * one default folder per --plan, and --dataset against the dataset the run was trained on. One
 * small float32 LeNet-5 run (2048 samples, one epoch) is shared by the whole file; every quantize
 * run calibrates on 64 samples and scores 100.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, trainSmallFloatRun } from './cli-harness.ts';
import { UsageError } from '../src/cli/args.ts';
import { checkCheckpointFits, checkDatasetChoice, compareDatasets, stateMismatch } from '../src/cli/run-checks.ts';
import { checkDirCreatable as checkOutDir } from '../src/format/files.ts';
import { planFromAssignment, savePlanFile } from '../src/quant/search/plan.ts';
import type { BitAssignment } from '../src/quant/search/types.ts';
import { createModel } from '../src/nn/index.ts';
import { Tensor } from '../src/tensor/tensor.ts';

const lowbit = runCli;

const QUICK = ['--calib', '64', '--test-limit', '100'];

describe('lowbit quantize', () => {
  let dir = '';
  let run = '';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-quantize-cli-'));
    run = await trainSmallFloatRun(dir);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('--arch that does not match the checkpoint: one line naming missing and unexpected tensors, no --out left', async () => {
    const out = join(dir, 'arch-mismatch', 'ptq');
    const r = await lowbit(['quantize', '--model', run, '--arch', 'mlp', '--out', out, ...QUICK]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    // mlp = Sequential(flatten, linear 784→…, relu, linear, relu, linear): 6 tensors named 1.*, 3.*, 5.*; LeNet-5 has 10 (conv1..fc3).
    assert.match(r.stderr, /does not match --arch mlp: missing 1\.weight, 1\.bias, 3\.weight \(3 more\); unexpected conv1\.weight, conv1\.bias, conv2\.weight \(7 more\)/);
    assert.doesNotMatch(r.stderr, /loadStateDict/);
    assert.ok(!existsSync(join(dir, 'arch-mismatch')), '--out and its missing parent are not created');
    assert.equal(r.stdout, '', 'fails before the banner');
  });

  it('--group-size: Linear weights per row and group (fc1: 400 inputs), the rest named; model.lowbit holds per-group integer weights; eval and info read it', async () => {
    const out = join(dir, 'grouped', 'ptq-w3a8-minmax-g16');
    const r = await lowbit(['quantize', '--model', run, '--bits', 'w3a8', '--group-size', '16', '--out', out, ...QUICK]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Linear weights in groups of 16 inputs/);
    assert.match(r.stdout, /fc2: 120 inputs are not a multiple of weightGroupSize 16: weights stay per output channel/);
    assert.match(r.stdout, /weights of 1 Linear layer in groups of 16 inputs/);
    assert.match(r.stdout, /wrote .*model\.lowbit \([\d,]+ bytes, integer model\)/);
    assert.deepEqual(readdirSync(out).sort(), ['model.lowbit', 'model.safetensors', 'ptq.json']);
    const summary = JSON.parse(readFileSync(join(out, 'ptq.json'), 'utf8')) as { config: { groupSize: number; scheme: string } };
    assert.equal(summary.config.groupSize, 16);
    assert.equal(summary.config.scheme, 'w3a8');
    // lowbit eval on the folder runs the integer model (fc1 per group); --checkpoint on its state converts it again
    const e = await lowbit(['eval', out, '--limit', '100']);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /fc1 +linear +w3a8 g16/);
    const integerAccuracy = /^accuracy +([\d.]+) %/m.exec(e.stdout)?.[1];
    assert.ok(integerAccuracy !== undefined, e.stdout);
    const printed = Number(/^w3a8 test accuracy: +([\d.]+) %/m.exec(r.stdout)?.[1]);
    assert.ok(Math.abs(Number(integerAccuracy) - printed) <= 2, `integer ${integerAccuracy} % vs fake-quant ${printed} % on 100 images`);
    const saved = await lowbit(['eval', '--checkpoint', join(out, 'model.safetensors'), '--save', join(dir, 'g.lowbit'), '--compare', '--limit', '100']);
    assert.equal(saved.code, 0, saved.stderr);
    const info = await lowbit(['info', join(dir, 'g.lowbit')]);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /linear +fc1 +w3a8 g16/);
  });

  it('--weight-granularity tensor --equalize: cross-layer equalized before calibration, recorded in ptq.json; eval --checkpoint rebuilds the equalized structure', async () => {
    const out = join(dir, 'cle', 'ptq-w4a8-minmax-pt-cle');
    const r = await lowbit(['quantize', '--model', run, '--bits', 'w4a8', '--weight-granularity', 'tensor', '--equalize', '--out', out, ...QUICK]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /weights default per tensor, cross-layer equalization/);
    // LeNet-5: conv1 → relu → pool → conv2, fc1 → relu → fc2, fc2 → relu → fc3 (conv2 → flatten → fc1 is not a pair)
    assert.match(r.stdout, /cross-layer equalization: 0 BatchNorms folded, 3 pairs in \d+ sweeps/);
    const summary = JSON.parse(readFileSync(join(out, 'ptq.json'), 'utf8')) as {
      config: { equalize: unknown; weightGranularity: string };
      equalize: { pairs: { first: string; second: string }[]; rangeRatio: Record<string, { before: number; after: number }> };
    };
    assert.deepEqual(summary.config.equalize, { folded: [], replacedRelu6: [] });
    assert.equal(summary.config.weightGranularity, 'tensor');
    assert.deepEqual(summary.equalize.pairs.map((p) => `${p.first}>${p.second}`), ['conv1>conv2', 'fc1>fc2', 'fc2>fc3']);
    const printed = Number(/^w4a8 test accuracy: +([\d.]+) %/m.exec(r.stdout)?.[1]);
    const e = await lowbit(['eval', '--checkpoint', join(out, 'model.safetensors'), '--limit', '100']);
    assert.equal(e.code, 0, e.stderr);
    const reloaded = Number(/^accuracy +([\d.]+) %/m.exec(e.stdout)?.[1]);
    assert.ok(Math.abs(reloaded - printed) <= 2, `reloaded ${reloaded} % vs quantize's ${printed} % on 100 images`);
  });

  it('a truncated checkpoint fails without creating --out; an --out under a file fails before the work', async () => {
    // A run folder whose metrics.json is fine and whose checkpoint was cut: the checkpoint is read after the data are loaded.
    const cut = join(dir, 'cut-run');
    mkdirSync(cut);
    writeFileSync(join(cut, 'metrics.json'), readFileSync(join(run, 'metrics.json')));
    writeFileSync(join(cut, 'checkpoint.safetensors'), readFileSync(join(run, 'checkpoint.safetensors')).subarray(0, 5000));
    const out = join(dir, 'truncated-out');
    const r = await lowbit(['quantize', '--model', cut, '--out', out, ...QUICK]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cut-run\/checkpoint\.safetensors/);
    assert.ok(!existsSync(out));

    const blocker = join(dir, 'a-file');
    writeFileSync(blocker, 'x');
    const blocked = await lowbit(['quantize', '--model', run, '--out', join(blocker, 'sub'), ...QUICK]);
    assert.equal(blocked.code, 1);
    assert.match(blocked.stderr, /cannot create directory '.*a-file\/sub': '.*a-file' exists and is not a directory/);
    assert.equal(blocked.stdout, '', 'refused before calibrating');
  });

  it('--calib beyond the training split is a usage error, not a banner promising samples that are not used', async () => {
    const out = join(dir, 'calib');
    const r = await lowbit(['quantize', '--model', run, '--calib', '99999999', '--test-limit', '100', '--out', out]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--calib 99999999: the mnist training split has 60,000 samples/);
    assert.ok(!existsSync(out));
  });

  it('--plan without --out: a folder per plan (file or folder name + plan hash), so plans do not overwrite each other', async () => {
    const layers = ['conv1', 'conv2', 'fc1', 'fc2', 'fc3'];
    const all8: BitAssignment = Object.fromEntries(layers.map((l) => [l, { w: 8, a: 8 }]));
    const narrow: BitAssignment = { ...all8, conv2: { w: 4, a: 8 }, fc1: { w: 4, a: 8 } };
    mkdirSync(join(dir, 'plans', 'search-a'), { recursive: true });
    const planA = join(dir, 'plans', 'search-a', 'plan.json');
    const planB = join(dir, 'plans', 'b.json');
    savePlanFile(planA, planFromAssignment(all8, { firstLayer: 'conv1' }), all8);
    savePlanFile(planB, planFromAssignment(narrow, { firstLayer: 'conv1' }), narrow);
    for (const plan of [planA, planB]) {
      const r = await lowbit(['quantize', '--model', run, '--plan', plan, ...QUICK]);
      assert.equal(r.code, 0, r.stderr);
    }
    const folders = readdirSync(run).filter((f) => f.startsWith('ptq-')).sort();
    assert.equal(folders.length, 2, folders.join(', '));
    assert.match(folders[0]!, /^ptq-plan-b-[0-9a-f]{8}-minmax$/);
    assert.match(folders[1]!, /^ptq-plan-search-a-[0-9a-f]{8}-minmax$/);
    const assignmentIn = (folder: string) => (JSON.parse(readFileSync(join(run, folder, 'ptq.json'), 'utf8')) as { config: { assignment: BitAssignment } }).config.assignment;
    assert.deepEqual(assignmentIn(folders[0]!), narrow);
    assert.deepEqual(assignmentIn(folders[1]!), all8);
    // The same plan saved under another name keeps its hash: only the label differs.
    const copy = join(dir, 'plans', 'b-copy.json');
    writeFileSync(copy, readFileSync(planB));
    const again = await lowbit(['quantize', '--model', run, '--plan', copy, ...QUICK]);
    assert.equal(again.code, 0, again.stderr);
    const hashOf = (folder: string) => folder.match(/-([0-9a-f]{8})-minmax$/)![1];
    const copyFolder = readdirSync(run).find((f) => f.startsWith('ptq-plan-b-copy-'))!;
    assert.equal(hashOf(copyFolder), hashOf(folders[0]!));
    assert.notEqual(hashOf(folders[0]!), hashOf(folders[1]!));
  });

  it('--dataset other than the training one: a warning on stderr (same shape), none for the same dataset', async () => {
    const other = await lowbit(['quantize', '--model', run, '--dataset', 'fashion-mnist', '--out', join(dir, 'fashion'), ...QUICK]);
    assert.equal(other.code, 0, other.stderr);
    assert.match(other.stderr, /^lowbit quantize: warning: --dataset fashion-mnist, but the model was trained on mnist \(same input shape and classes, so it runs\)/m);
    assert.equal((JSON.parse(readFileSync(join(dir, 'fashion', 'ptq.json'), 'utf8')) as { config: { dataset: string } }).config.dataset, 'fashion-mnist');
    const same = await lowbit(['quantize', '--model', run, '--dataset', 'mnist', '--out', join(dir, 'same'), ...QUICK]);
    assert.equal(same.code, 0, same.stderr);
    assert.doesNotMatch(same.stderr, /warning/);
  });
});

describe('quantize / search run checks', () => {
  it('stateMismatch names missing, unexpected and reshaped tensors, a few of each', () => {
    const t = (...shape: number[]) => new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    const expected = new Map([['a', t(2, 3)], ['b', t(3)], ['c', t(1)], ['d', t(1)], ['e', t(1)], ['f', t(4)]]);
    assert.equal(stateMismatch(expected, Object.fromEntries(expected)), null);
    const found = { a: t(3, 2), f: t(4), x: t(1), y: t(1) };
    assert.equal(stateMismatch(expected, found), 'missing b, c, d (1 more); unexpected x, y; shape of a [3, 2] (model [2, 3])');
    assert.equal(stateMismatch(new Map([['w', t(10, 84)]]), new Map([['w', t(5, 84)]])), 'shape of w [5, 84] (model [10, 84])');
  });

  it('checkCheckpointFits: a UsageError naming --arch when the flag chose it, a plain Error naming the run otherwise', () => {
    const lenet = createModel('lenet5').stateDict();
    const run = { checkpoint: 'ck.safetensors', arch: 'mlp' as const, weights: () => lenet };
    const expected = createModel('mlp').stateDict();
    assert.throws(() => checkCheckpointFits(run, expected, true, 'quantize'), (e: Error) => e instanceof UsageError && /'ck\.safetensors' does not match --arch mlp: missing/.test(e.message));
    assert.throws(() => checkCheckpointFits(run, expected, false, 'quantize'), (e: Error) => !(e instanceof UsageError) && /does not match the architecture its run names \(mlp\)/.test(e.message));
    checkCheckpointFits({ ...run, arch: 'lenet5' }, createModel('lenet5').stateDict(), true, 'quantize');
  });

  it('compareDatasets / checkDatasetChoice: an error when the input shape or the class count differ, a warning otherwise', () => {
    const mnistLike = { sampleShape: [1, 28, 28] as const, numClasses: 10 };
    assert.equal(compareDatasets({ name: 'mnist', shape: mnistLike }, { name: 'mnist', shape: mnistLike }), null);
    assert.equal(compareDatasets({ name: 'mnist', shape: mnistLike }, { name: 'fashion-mnist', shape: mnistLike })?.level, 'warning');
    const cifar = { sampleShape: [3, 32, 32] as const, numClasses: 100 };
    assert.deepEqual(compareDatasets({ name: 'mnist', shape: mnistLike }, { name: 'cifar100', shape: cifar }), {
      level: 'error', message: '--dataset cifar100 does not fit a model trained on mnist: input 3x32x32 (trained on 1x28x28), 100 classes (trained on 10)',
    });
    assert.equal(compareDatasets({ name: 'mnist', shape: mnistLike }, { name: 'five', shape: { ...mnistLike, numClasses: 5 } })?.level, 'error');
    // An unknown recorded dataset: compared by name only.
    assert.equal(compareDatasets({ name: 'someday' }, { name: 'mnist', shape: mnistLike })?.level, 'warning');

    let stderr = '';
    const io = { stderr: new Writable({ write(chunk, _enc, done) { stderr += String(chunk); done(); } }) };
    // The recorded dataset's shape is read from its files: a 3x32x32 split is refused against MNIST's 1x28x28.
    assert.throws(() => checkDatasetChoice({ dataset: 'mnist' }, 'fashion-mnist', cifar, 'quantize', io), (e: Error) => e instanceof UsageError && /input 3x32x32 \(trained on 1x28x28\)/.test(e.message));
    checkDatasetChoice({ dataset: 'mnist' }, undefined, cifar, 'quantize', io);  // no --dataset: the run's own
    checkDatasetChoice({}, 'fashion-mnist', mnistLike, 'quantize', io);  // the run records none
    assert.equal(stderr, '');
    checkDatasetChoice({ dataset: 'mnist' }, 'fashion-mnist', mnistLike, 'search', io);
    assert.match(stderr, /^lowbit search: warning: --dataset fashion-mnist, but the model was trained on mnist/);
  });

  it('checkOutDir accepts a creatable or writable folder, refuses one under a file, and creates nothing', () => {
    const root = mkdtempSync(join(tmpdir(), 'lowbit-outdir-'));
    try {
      checkOutDir(join(root, 'a', 'b', 'c'));
      checkOutDir(root);
      assert.deepEqual(readdirSync(root), []);
      writeFileSync(join(root, 'f'), '');
      assert.throws(() => checkOutDir(join(root, 'f', 'x')), /cannot create directory '.*f\/x': '.*f' exists and is not a directory/);
      assert.throws(() => checkOutDir(join(root, 'f')), /exists and is not a directory/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
