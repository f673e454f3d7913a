/** What a checkpoint's model was trained as, for the commands' headers: a --plan run names its plan, not the CLI's default --quant. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createModel } from '../nn/index.ts';
import { prepareQat, qatPlanOfRunConfig } from '../quant/qat/index.ts';
import { saveCheckpoint } from '../train/checkpoint.ts';
import { modelOfCheckpoint, quantLabelOfRunConfig } from './checkpoint-model.ts';

describe('checkpoint quant label', () => {
  let dir = '';
  before(() => { dir = mkdtempSync(join(tmpdir(), 'lowbit-cklabel-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a --plan run (whose config also carries the default quant w4a4) is labelled by its assignment', () => {
    const plan = qatPlanOfRunConfig({ quant: 'w8a8' })!;
    const config = { model: 'mlp', quant: 'w4a4', plan, assignment: { fc1: { w: 3, a: 8 }, fc2: { w: 8, a: 8 } } };
    const trained = createModel('mlp', { numClasses: 10 });
    prepareQat(trained, plan);
    const file = join(dir, 'plan.safetensors');
    saveCheckpoint(file, { model: trained.stateDict(), epoch: 1, config });
    assert.equal(modelOfCheckpoint(file, 'attack').quantLabel, 'plan (fc1=W3A8 fc2=W8A8)');
  });

  it('labels --quant runs by scheme and estimator, float runs fp32', () => {
    assert.equal(quantLabelOfRunConfig({ quant: 'w4a4', estimator: 'lsq' }, true), 'w4a4 lsq');
    assert.equal(quantLabelOfRunConfig({ quant: 'w2a2' }, true), 'w2a2');
    assert.equal(quantLabelOfRunConfig({ quant: 'fp32' }, false), 'fp32');
    assert.equal(quantLabelOfRunConfig({ quant: 'w4a4', plan: {} }, true), 'plan');
    // A pruned layer (0-bit channels) says how many channels it keeps, as lowbit search prints it.
    assert.equal(quantLabelOfRunConfig({ quant: 'w4a4', plan: {}, assignment: { fc1: { w: 4, a: 8, wPerChannel: [4, 0, 4, 0, 0] } } }, true), 'plan (fc1=W4A8 (2/5 channels))');
  });
});
