import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createModel } from '../nn/index.ts';
import { prepareQat, qatPlanOfRunConfig } from '../quant/qat/index.ts';
import { saveCheckpoint } from '../train/checkpoint.ts';
import { modelOfCheckpoint } from './checkpoint-model.ts';

describe('modelOfCheckpoint', () => {
  let dir = '';
  const file = (name: string) => join(dir, name);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'lowbit-ckmodel-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('rebuilds a QAT run with its plan and the trained weights, and a float32 run unprepared', () => {
    const config = { model: 'mlp', dataset: 'mnist', quant: 'w4a4', estimator: 'lsq' };
    const trained = createModel('mlp', { numClasses: 10 });
    prepareQat(trained, qatPlanOfRunConfig(config)!);
    saveCheckpoint(file('qat.safetensors'), { model: trained.stateDict(), epoch: 1, config });
    const loaded = modelOfCheckpoint(file('qat.safetensors'), 'test');
    assert.equal(loaded.arch, 'mlp');
    assert.equal(loaded.quantized, true);
    assert.equal(loaded.dataset, 'mnist');
    assert.equal(loaded.model.training, false);
    const want = trained.stateDict();
    const got = loaded.model.stateDict();
    assert.ok(want.size > 6, `${want.size} state entries`);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [name, t] of want) assert.deepEqual(Array.from(got.get(name)!.data), Array.from(t.data), name);

    const float = createModel('mlp', { numClasses: 10 });
    saveCheckpoint(file('fp32.safetensors'), { model: float.stateDict(), epoch: 1, config: { model: 'mlp', quant: 'fp32' } });
    const f = modelOfCheckpoint(file('fp32.safetensors'), 'test');
    assert.equal(f.quantized, false);
    assert.equal(f.dataset, undefined);
  });

  it('takes the config from metrics.json when the checkpoint has none, and --arch over both', () => {
    const sub = join(dir, 'run');
    rmSync(sub, { recursive: true, force: true });
    const model = createModel('mlp', { numClasses: 10 });
    mkdirSync(sub);
    saveCheckpoint(join(sub, 'checkpoint.safetensors'), { model: model.stateDict(), epoch: 1 });
    assert.throws(() => modelOfCheckpoint(join(sub, 'checkpoint.safetensors'), 'export'), /^Error: export: --arch is required/);
    assert.equal(modelOfCheckpoint(join(sub, 'checkpoint.safetensors'), 'export', { arch: 'mlp' }).arch, 'mlp');
    writeFileSync(join(sub, 'metrics.json'), JSON.stringify({ config: { model: 'mlp', quant: 'fp32' } }));
    assert.equal(modelOfCheckpoint(join(sub, 'checkpoint.safetensors'), 'export').arch, 'mlp');
    writeFileSync(join(sub, 'metrics.json'), '{not json');
    assert.throws(() => modelOfCheckpoint(join(sub, 'checkpoint.safetensors'), 'eval'), /^Error: eval: .*metrics\.json: not a readable JSON file/);
  });

  it('refuses PTQ states of --plan runs and malformed ones, unknown models and weights that do not fit, naming the command and the file', () => {
    const mlp = createModel('mlp', { numClasses: 10 });
    saveCheckpoint(file('ptq-plan.safetensors'), { model: mlp.stateDict(), epoch: 0, config: { model: 'mlp', scheme: 'w8a8', assignment: { '1': { w: 4, a: 8 } } } });
    assert.throws(() => modelOfCheckpoint(file('ptq-plan.safetensors'), 'attack'), /^Error: attack: '.*ptq-plan\.safetensors' is the post-training-quantization state of a --plan run; use the integer model/);
    // A PTQ state is rebuilt as calibrate prepared it: float weights alone lack the quantizers' scales.
    saveCheckpoint(file('ptq.safetensors'), { model: mlp.stateDict(), epoch: 0, config: { model: 'mlp', scheme: 'w8a8' } });
    assert.throws(() => modelOfCheckpoint(file('ptq.safetensors'), 'attack'), /^Error: attack: '.*ptq\.safetensors' does not fit a mlp prepared for ptq w8a8: /);
    saveCheckpoint(file('ptq-bad.safetensors'), { model: mlp.stateDict(), epoch: 0, config: { model: 'mlp', scheme: 'w8a8', groupSize: -3 } });
    assert.throws(() => modelOfCheckpoint(file('ptq-bad.safetensors'), 'eval'), /^Error: eval: '.*ptq-bad\.safetensors': its groupSize is -3, not a positive integer/);
    saveCheckpoint(file('ptq-bad2.safetensors'), { model: mlp.stateDict(), epoch: 0, config: { model: 'mlp', scheme: 'w8a8', method: 'magic' } });
    assert.throws(() => modelOfCheckpoint(file('ptq-bad2.safetensors'), 'eval'), /its method is "magic" \(known: minmax, ema, percentile, mse, entropy\)/);
    saveCheckpoint(file('alien.safetensors'), { model: mlp.stateDict(), epoch: 0, config: { model: 'resnet9000' } });
    assert.throws(() => modelOfCheckpoint(file('alien.safetensors'), 'eval'), /^Error: eval: '.*alien\.safetensors' names an unknown model 'resnet9000'/);
    saveCheckpoint(file('mismatch.safetensors'), { model: mlp.stateDict(), epoch: 0, config: { model: 'lenet5', quant: 'fp32' } });
    assert.throws(() => modelOfCheckpoint(file('mismatch.safetensors'), 'export'), /^Error: export: '.*mismatch\.safetensors' does not fit a lenet5:/);
  });
});
