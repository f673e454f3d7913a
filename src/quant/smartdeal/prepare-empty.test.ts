/** prepareSmartDeal refuses to do nothing: a model with no Conv2d / Linear left (prepared for QAT first) or every layer skipped. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createModel, Linear } from '../../nn/index.ts';
import { prepareQat, qatFromCliOptions } from '../qat/index.ts';
import { compactSize, prepareSmartDeal } from './prepare.ts';

describe('prepareSmartDeal with nothing to convert', () => {
  it('refuses a QAT-prepared model instead of returning it unchanged', () => {
    const model = createModel('mlp', { numClasses: 10 });
    prepareQat(model, qatFromCliOptions({ quant: 'w4a4' })!);
    assert.throws(() => prepareSmartDeal(model), /^Error: prepareSmartDeal: nothing to convert in .*no Conv2d or Linear layer \(already prepared for QAT\?\)/);
  });

  it('refuses a selection that skips every layer, and still converts a normal one', () => {
    const first = createModel('lenet5', { numClasses: 10 }).namedModules().find(([, m]) => m instanceof Linear)![0];
    assert.throws(() => prepareSmartDeal(createModel('lenet5', { numClasses: 10 }), { layers: [first], skip: [first] }), /every selected layer is skipped/);
    assert.throws(() => prepareSmartDeal(createModel('lenet5', { numClasses: 10 }), { layers: [] }), /nothing to convert/);
    const ok = prepareSmartDeal(createModel('lenet5', { numClasses: 10 }), { layers: [first] });
    assert.deepEqual(compactSize(ok).layers.map((l) => l.name), [first]);
  });

  it('refuses an override for a layer that skip leaves dense (it was ignored)', () => {
    const first = createModel('lenet5', { numClasses: 10 }).namedModules().find(([, m]) => m instanceof Linear)![0];
    assert.throws(() => prepareSmartDeal(createModel('lenet5', { numClasses: 10 }), { skip: [first], overrides: { [first]: { sparsity: 0.9 } } }), new RegExp(`override for '${first}', which skip leaves dense`));
  });
});
