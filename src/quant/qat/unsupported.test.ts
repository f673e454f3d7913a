import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Conv1d, Flatten, Linear, ReLU, Sequential } from '../../nn/index.ts';
import { prepareQat } from './prepare.ts';
import { qatFromCliOptions } from './cli.ts';
import { resolvePlan } from '../config/plan.ts';

describe('prepareQat refuses Conv1d (not supported by the fake-quant layers yet)', () => {
  const model = (): Sequential => new Sequential(new Conv1d(2, 3, 3), new ReLU(), new Flatten(), new Linear(3 * 6, 2));

  it('throws naming the layer, and leaves the model untouched', () => {
    const m = model();
    const plan = qatFromCliOptions({ quant: 'w4a4' })!;
    assert.throws(() => prepareQat(m, plan), /quantization does not support Conv1d yet \('0'\)/);
    assert.ok(m.getSubmodule('0') instanceof Conv1d && m.getSubmodule('3') instanceof Linear);
    assert.throws(() => resolvePlan(m, plan), /does not support Conv1d/);
    // A resolved table that lists only the Linear is refused too: the Conv1d would stay float silently.
    assert.throws(() => prepareQat(m, [{ name: '3', type: 'Linear', weightSpec: null, activationSpec: null, fusedBatchNorm: null }]), /does not support Conv1d/);
  });
});
