// `lowbit info --file model.lowbit`, run in-process through the CLI's main().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { main } from '../cli/main.ts';
import { encodeLowbit, packLowbitValues, writeLowbit } from './lowbit.ts';

async function lowbit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  let err = '';
  const stderr = new PassThrough();
  stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const code = await main(args, { stdout: new PassThrough(), stderr, print: (line = '') => void out.push(line) });
  return { code, stdout: out.join('\n'), stderr: err };
}

const model = {
  graph: [
    { op: 'conv2d', name: 'conv1', bits: { weight: 4, activation: 8 }, tensors: { weight: 'conv1.weight', bias: 'conv1.bias' } },
    { op: 'relu' },
    { op: 'linear', name: 'fc', bits: 1, tensors: ['fc.weight'] },
  ],
  tensors: {
    'conv1.weight': packLowbitValues('int4', [6, 1, 5, 5], new Array(150).fill(-3)),
    'conv1.bias': packLowbitValues('int32', [6], [1, 2, 3, 4, 5, 6]),
    'fc.weight': packLowbitValues('bits', [10, 96], new Array(960).fill(1)),
  },
  metadata: { model: 'tiny', dataset: 'mnist' },
};

test('lowbit info --file prints version, nodes, tensors and sizes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-info-'));
  try {
    const path = join(dir, 'm.lowbit');
    const size = writeLowbit(path, model);
    const r = await lowbit(['info', '--file', path]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^format +lowbit version 1$/m);
    assert.match(r.stdout, /^model +tiny$/m);
    assert.match(r.stdout, /^nodes \(3\)$/m);
    assert.match(r.stdout, /^ +0 +conv2d +conv1 +w4a8$/m);
    assert.match(r.stdout, /^ +2 +linear +fc +1$/m);
    assert.match(r.stdout, /^ +conv1\.weight +int4 +\[6, 1, 5, 5\] +75$/m);
    assert.match(r.stdout, /^ +fc\.weight +bits +\[10, 96\] +160$/m);
    assert.match(r.stdout, /^fp32 size +4\.4 KiB/m);
    const json = JSON.parse((await lowbit(['info', '--file', path, '--json'])).stdout) as { version: number; fileBytes: number; fp32Bytes: number; nodes: unknown[] };
    assert.equal(json.version, 1);
    assert.equal(json.fileBytes, size);
    assert.equal(json.fp32Bytes, (150 + 6 + 960) * 4);
    assert.equal(json.nodes.length, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lowbit info --file on a malformed or missing file: one line, exit 1', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-info-'));
  try {
    const bytes = encodeLowbit(model);
    const cases: [string, Uint8Array][] = [['truncated', bytes.subarray(0, 100)], ['garbage', new TextEncoder().encode('hello, not a model\n')], ['data cut', bytes.subarray(0, bytes.length - 1)]];
    for (const [name, content] of cases) {
      const path = join(dir, `${name}.lowbit`);
      writeFileSync(path, content);
      const r = await lowbit(['info', '--file', path]);
      assert.equal(r.code, 1, name);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `${name}: ${r.stderr}`);
      assert.match(r.stderr, /^lowbit: error: .* is not a valid \.lowbit file: .*\[[a-z-]+\]\n$/);
    }
    const missing = await lowbit(['info', '--file', join(dir, 'missing.lowbit')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^lowbit: error: info: '.*missing\.lowbit' does not exist\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
