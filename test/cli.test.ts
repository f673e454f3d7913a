import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint } from '../src/train/checkpoint.ts';

const bin = fileURLToPath(new URL('../bin/lowbit.js', import.meta.url));

function lowbit(args: string[], env: Record<string, string> = {}, cwd?: string): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    env: { ...process.env, LOWBIT_DEBUG: '', ...env },
    timeout: 60_000,
    ...(cwd === undefined ? {} : { cwd }),
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

test('lowbit --help lists the commands; lowbit train --help lists its options', () => {
  const top = lowbit(['--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /usage: lowbit <command>/);
  assert.match(top.stdout, /^ {2}train +/m);
  assert.match(top.stdout, /^ {2}info +/m);
  const train = lowbit(['train', '--help']);
  assert.equal(train.code, 0);
  for (const flag of ['--model', '--dataset', '--epochs', '--batch-size', '--lr', '--optimizer', '--seed', '--out', '--backend', '--limit', '--no-progress']) {
    assert.ok(train.stdout.includes(flag), `help mentions ${flag}`);
  }
  const version = lowbit(['--version']);
  assert.equal(version.code, 0);
  assert.match(version.stdout.trim(), /^\d+\.\d+\.\d+/);
});

test('bad arguments: one line on stderr, exit code 2, no stack trace', () => {
  for (const args of [['train', '--epoch', '3'], ['train', '--lr', '0'], ['train', '--model', 'resnet'], ['train', '--epochs'], ['trian'], ['train', 'extra'], ['train', '--quant', 'w4a4', '--estimator', 'binary'], ['train', '--quant', 'fp32', '--estimator', 'lsq']]) {
    const r = lowbit(args);
    assert.equal(r.code, 2, args.join(' '));
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
    assert.match(lines[0]!, /^lowbit: error: .*\(see 'lowbit( train)? --help'\)$/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.equal(r.stdout, '');
  }
  assert.match(lowbit(['train', '--epoch', '3']).stderr, /did you mean '--epochs'/);
});

test('lowbit info prints versions and backends', () => {
  const r = lowbit(['info']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^node +\d+/m);
  assert.match(r.stdout, /^backends +reference/m);
  const json = JSON.parse(lowbit(['info', '--backend', '--json']).stdout) as { available: string[]; active: string; wasm: { ops?: string[] } };
  assert.ok(json.available.includes('reference'));
  // Node.js 20 has WebAssembly SIMD128: the wasm backend is listed with the ops it runs itself.
  assert.ok(json.available.includes('wasm'));
  assert.ok(json.wasm.ops?.includes('conv2dBackwardWeight'));
  assert.match(lowbit(['info', '--backend']).stdout, /^wasm +WebAssembly SIMD128 kernels for matmul, linear, conv2d/m);
  // the int8 GEMM path follows LOWBIT_ISA: avx2 takes the AVX-VNNI ymm kernel where the CPU has AVX-VNNI
  const features = (JSON.parse(lowbit(['info', '--backend', '--json']).stdout) as { cpuFeatures?: string[] }).cpuFeatures;
  if (features) {
    const int8Of = (isa: string): string | undefined => /^integer kernels +int8 ([\w-]+),/m.exec(lowbit(['info', '--backend'], { LOWBIT_ISA: isa }).stdout)?.[1];
    assert.equal(int8Of('avx2'), features.includes('avxvnni') ? 'avx-vnni' : 'avx2');
    assert.equal(int8Of('avx2-novnni'), 'avx2');
    assert.equal(int8Of('scalar'), 'scalar');
    assert.match(lowbit(['info', '--backend']).stdout, /^integer kernels +int8 (avx512-vnni|avx-vnni|avx2|scalar), binary /m);
  }
});

test('lowbit train --limit 512 --epochs 1 (default: W4A4 QAT) trains, prints test accuracy and the fp32 baseline, writes its outputs', () => {
  const out = mkdtempSync(join(tmpdir(), 'lowbit-cli-'));
  try {
    const r = lowbit(['train', '--limit', '512', '--test-limit', '256', '--epochs', '1', '--out', out, '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /lenet5, 61,7\d\d parameters/);
    assert.match(r.stdout, /quant +w4a4, lsq estimator/);
    assert.match(r.stdout, /^ +conv2 +Conv2d +lsq int4 +lsq uint4/m);
    assert.match(r.stdout, /^fp32 baseline: (\d+\.\d\d %|none stored)/m);
    assert.match(r.stdout, /512 train \/ 256 test samples/);
    assert.match(r.stdout, /^epoch 1\/1 .*test acc/m);
    assert.match(r.stdout, /^test accuracy: \d+\.\d\d %$/m);
    // Only the native-fallback warning may appear (machines without a C++ compiler).
    assert.equal(r.stderr.replace(/^lowbit: warning: .*\n/gm, ''), '', 'no progress output with --no-progress');
    const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as { testAccuracy: number; history: { stepLosses: number[] } };
    assert.ok(metrics.testAccuracy > 0.2, `accuracy ${metrics.testAccuracy}`);
    assert.equal(metrics.history.stepLosses.length, 8);
    const checkpoint = loadCheckpoint(join(out, 'checkpoint.safetensors'));
    assert.equal(checkpoint.epoch, 1);
    assert.ok('conv1.weight' in checkpoint.model);
    assert.ok(!existsSync(join(out, 'metrics.json.tmp')));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('runtime errors: one line and exit code 1; LOWBIT_DEBUG=1 adds the stack', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-cli-'));
  try {
    // --out below a regular file: creating the output directory fails at run time.
    const blocker = join(dir, 'file');
    writeFileSync(blocker, '');
    const args = ['train', '--limit', '64', '--test-limit', '64', '--epochs', '1', '--out', join(blocker, 'sub'), '--no-progress'];
    const r = lowbit(args);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^lowbit: error: /);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    const debug = lowbit(args, { LOWBIT_DEBUG: '1' });
    assert.equal(debug.code, 1);
    assert.match(debug.stderr, /\n\s+at /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('untrusted paths end in one clear error, never a hang: /proc outputs, devices, FIFOs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-cli-'));
  try {
    const cases: [string[], RegExp][] = [];
    // Node's recursive mkdir spins forever under /proc (ENOENT for a child of an existing parent).
    if (existsSync('/proc/self')) cases.push([['train', '--limit', '64', '--test-limit', '64', '--epochs', '1', '--out', '/proc/lowbit-no-such/out', '--no-progress'], /cannot create directory '\/proc\/lowbit-no-such\/out'/]);
    // readFileSync on /dev/zero never ends; opening a FIFO waits for a writer.
    if (existsSync('/dev/zero')) for (const command of ['eval', 'info', 'export']) cases.push([[command, '/dev/zero'], /\/dev\/zero: not a regular file/]);
    const fifo = join(dir, 'model.lowbit');
    if (spawnSync('mkfifo', [fifo]).status === 0) cases.push([['eval', fifo], /not a regular file/]);
    for (const [args, message] of cases) {
      const r = lowbit(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lowbit train --init RUN fine-tunes a float32 run at 4 bits and reports that run as the baseline', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-cli-'));
  try {
    const float = join(dir, 'fp32');
    const quick = ['--limit', '512', '--test-limit', '256', '--epochs', '1', '--no-progress'];
    assert.equal(lowbit(['train', '--quant', 'fp32', '--out', float, ...quick]).code, 0);
    const r = lowbit(['train', '--init', float, '--lr', '5e-4', '--out', join(dir, 'w4a4'), ...quick]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ +init +weights of .*fp32\/checkpoint\.safetensors$/m);
    const floatAccuracy = (JSON.parse(readFileSync(join(float, 'metrics.json'), 'utf8')) as { testAccuracy: number }).testAccuracy;
    assert.match(r.stdout, new RegExp(`^fp32 baseline: ${(floatAccuracy * 100).toFixed(2)} % \\(stored: ${float.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/metrics\\.json`, 'm'));
    // Fine-tuning starts from the trained float weights: its first loss is well below the first
    // loss of the float run, which started from a fresh model.
    const losses = (run: string) => (JSON.parse(readFileSync(join(dir, run, 'metrics.json'), 'utf8')) as { history: { stepLosses: number[] } }).history.stepLosses;
    assert.ok(losses('w4a4')[0]! < losses('fp32')[0]! - 0.2, `first losses: fine-tune ${losses('w4a4')[0]}, fresh ${losses('fp32')[0]}`);
    const mismatch = lowbit(['train', '--init', float, '--model', 'mlp', ...quick]);
    assert.equal(mismatch.code, 2);
    assert.match(mismatch.stderr, /--init: '.*' is a lenet5, not a mlp \(pass --model lenet5\)/);
    // Errors about the --init path name --init.
    const missing = lowbit(['train', '--init', join(dir, 'nonexistent'), ...quick]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^lowbit: error: train: --init: '.*nonexistent' does not exist/);
    const quantized = lowbit(['train', '--init', join(dir, 'w4a4'), ...quick]);
    assert.equal(quantized.code, 2);
    assert.match(quantized.stderr, /^lowbit: error: --init: '.*' was trained with --quant w4a4/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lowbit train --baseline train keeps the baseline inside the run folder; a rerun says it replaces the earlier run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-cli-'));
  try {
    const out = join(dir, 'w2a2');
    const args = ['train', '--quant', 'w2a2', '--baseline', 'train', '--out', out, '--limit', '256', '--test-limit', '64', '--epochs', '1', '--no-progress'];
    // Run from an empty working directory: nothing may appear under its runs/ (the default fp32
    // location that --baseline stored and other commands read).
    const r = lowbit(args, {}, dir);
    assert.equal(r.code, 0, r.stderr);
    const baseline = JSON.parse(readFileSync(join(out, 'baseline-fp32', 'metrics.json'), 'utf8')) as { testAccuracy: number; config: { quant: string } };
    assert.equal(baseline.config.quant, 'fp32');
    assert.match(r.stdout, new RegExp(`^fp32 baseline: ${(baseline.testAccuracy * 100).toFixed(2)} % \\(trained now`, 'm'));
    assert.ok(existsSync(join(out, 'checkpoint.safetensors')));
    assert.equal(existsSync(join(dir, 'runs')), false, 'no default run folder written');
    assert.doesNotMatch(r.stdout, /replacing the earlier run/);
    const again = lowbit(args, {}, dir);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`note +replacing the earlier run in ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} `, 'm'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lowbit train --resume continues a run from its checkpoint: bit-identical to training straight through', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-cli-'));
  try {
    // W4A4 LSQ (quantizer state in the checkpoint), no schedule: the lr does not depend on --epochs.
    const quick = ['--limit', '256', '--test-limit', '64', '--schedule', 'none', '--baseline', 'none', '--no-progress'];
    const straight = join(dir, 'straight');
    const resumed = join(dir, 'resumed');
    assert.equal(lowbit(['train', ...quick, '--epochs', '2', '--out', straight]).code, 0);
    assert.equal(lowbit(['train', ...quick, '--epochs', '1', '--out', resumed]).code, 0);
    const r = lowbit(['train', ...quick, '--epochs', '2', '--out', resumed, '--resume']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ +resume +from epoch 1 of /m);
    assert.doesNotMatch(r.stdout, /^epoch 1\/2/m);
    const a = loadCheckpoint(join(straight, 'checkpoint.safetensors'));
    const b = loadCheckpoint(join(resumed, 'checkpoint.safetensors'));
    assert.equal(b.epoch, 2);
    for (const [name, t] of Object.entries(a.model)) assert.deepEqual(b.model[name]!.toArray(), t.toArray(), name);
    assert.deepEqual((b.history as { stepLosses: number[] }).stepLosses, (a.history as { stepLosses: number[] }).stepLosses);

    const other = lowbit(['train', ...quick, '--epochs', '3', '--out', resumed, '--resume', '--lr', '0.01']);
    assert.equal(other.code, 2);
    assert.match(other.stderr, /--resume: '.*' was trained with other settings: lr 0\.002 \(now 0\.01\)/);
    const done = lowbit(['train', ...quick, '--epochs', '2', '--out', resumed, '--resume']);
    assert.equal(done.code, 2);
    assert.match(done.stderr, /already has 2 epochs; pass --epochs above 2/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
