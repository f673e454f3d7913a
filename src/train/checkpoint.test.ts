import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tensor } from '../tensor/tensor.ts';
import { encodeSafetensors } from '../format/safetensors.ts';
import { CheckpointError, loadCheckpoint, saveCheckpoint } from './checkpoint.ts';

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-ckpt-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('save / load round trip of model, optimizer state, epoch, config and history', () => {
  withDir((dir) => {
    const path = join(dir, 'checkpoint.safetensors');
    const model = new Map([
      ['fc.weight', tensor([[1, 2], [3, 4]])],
      ['fc.bias', tensor([0.5, -0.5])],
      ['bn.numBatchesTracked', tensor([7], undefined, 'int32')],
    ]);
    const optimizer = {
      state: new Map([[0, { step: 3, expAvg: tensor([0.1, 0.2]) }], [1, { step: 3, expAvg: tensor([[1, 1], [1, 1]]) }]]),
      paramGroups: [{ lr: 0.001, betas: [0.9, 0.999], eps: Infinity }],
    };
    const history = { epochs: [{ epoch: 1, trainLoss: 0.3 }], stepLosses: [1, 0.5] };
    saveCheckpoint(path, { model, optimizer, epoch: 2, config: { model: 'mlp', lr: 0.001 }, history });
    assert.deepEqual(readdirSync(dir), ['checkpoint.safetensors']);

    const loaded = loadCheckpoint(path);
    assert.equal(loaded.epoch, 2);
    assert.deepEqual(loaded.config, { model: 'mlp', lr: 0.001 });
    assert.deepEqual(loaded.history, history);
    assert.deepEqual(Object.keys(loaded.model), ['fc.weight', 'fc.bias', 'bn.numBatchesTracked']);
    assert.deepEqual(loaded.model['fc.weight']!.shape, [2, 2]);
    assert.deepEqual(loaded.model['fc.weight']!.toArray(), [1, 2, 3, 4]);
    assert.equal(loaded.model['bn.numBatchesTracked']!.dtype, 'int32');
    const opt = loaded.optimizer as typeof optimizer;
    assert.ok(opt.state instanceof Map);
    assert.deepEqual([...opt.state.keys()], [0, 1]);
    assert.equal(opt.state.get(0)!.step, 3);
    assert.deepEqual(Array.from(opt.state.get(0)!.expAvg.data), Array.from(Float32Array.from([0.1, 0.2])));
    assert.deepEqual(opt.state.get(1)!.expAvg.shape, [2, 2]);
    assert.deepEqual(opt.paramGroups, [{ lr: 0.001, betas: [0.9, 0.999], eps: Infinity }]);
  });
});

test('a plain-record state dict and a missing optimizer are accepted', () => {
  withDir((dir) => {
    const path = join(dir, 'c.safetensors');
    saveCheckpoint(path, { model: { w: tensor([1]) }, epoch: 0 });
    const loaded = loadCheckpoint(path);
    assert.equal(loaded.optimizer, null);
    assert.equal(loaded.config, null);
    assert.deepEqual(loaded.model.w!.toArray(), [1]);
  });
});

test('bad files raise CheckpointError with the path and the reason', () => {
  withDir((dir) => {
    const expectError = (path: string, pattern: RegExp): void => {
      assert.throws(() => loadCheckpoint(path), (e: unknown) => e instanceof CheckpointError && e.message.startsWith(path) && pattern.test(e.message));
    };
    expectError(join(dir, 'missing.safetensors'), /no such file/);

    const truncated = join(dir, 'truncated.safetensors');
    saveCheckpoint(truncated, { model: { w: tensor([1, 2, 3]) }, epoch: 1 });
    const bytes = readFileSync(truncated);
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 4));
    expectError(truncated, /out of range/);

    const foreign = join(dir, 'foreign.safetensors');
    writeFileSync(foreign, encodeSafetensors([['w', tensor([1])]], { format: 'pt' }));
    expectError(foreign, /not a lowbit checkpoint/);

    const garbage = join(dir, 'garbage.safetensors');
    writeFileSync(garbage, 'hello world, this is not a checkpoint');
    expectError(garbage, /header length/);

    const packed = join(dir, 'packed.safetensors');
    writeFileSync(packed, encodeSafetensors([['model.w', { shape: [1], data: new Uint8Array(1) }]], {
      format: 'lowbit-checkpoint', version: '1', epoch: '1', config: 'null', history: 'null', optimizer: 'null',
    }));
    expectError(packed, /dtype U8/);

    const badJson = join(dir, 'bad-json.safetensors');
    writeFileSync(badJson, encodeSafetensors([], {
      format: 'lowbit-checkpoint', version: '1', epoch: '1', config: '{', history: 'null', optimizer: 'null',
    }));
    expectError(badJson, /'config' is not valid JSON/);
  });
});
