import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crossEntropy, manualSeed, randint, randn } from '../../tensor/index.ts';
import { BatchNorm1d } from '../batchnorm.ts';
import { Dropout } from '../dropout.ts';
import { Flatten } from '../flatten.ts';
import { Linear } from '../linear.ts';
import { Sequential } from '../sequential.ts';
import { Cnn, LeNet5, MODEL_NAMES, createModel, isModelName, mlp } from './index.ts';

test('registry: names, instances, options and unknown names', () => {
  assert.deepEqual(MODEL_NAMES, ['lenet5', 'mlp', 'cnn']);
  assert.ok(createModel('lenet5') instanceof LeNet5);
  assert.ok(createModel('cnn') instanceof Cnn);
  assert.ok(createModel('mlp', { hidden: [8] }) instanceof Sequential);
  assert.ok(isModelName('mlp') && !isModelName('resnet'));
  assert.equal(createModel('lenet5', { numClasses: 3 }).forward(randn([1, 1, 28, 28])).shape[1], 3);
  const unknown: string = 'resnet';
  assert.throws(() => createModel(unknown as 'mlp'), /unknown model 'resnet' \(known: lenet5, mlp, cnn\)/);
});

test('mlp: layer sequence and parameter count', () => {
  const plain = mlp();
  assert.deepEqual([...plain].map((m) => m.constructor.name), ['Flatten', 'Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']);
  assert.equal(plain.numParameters(), 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10);
  const full = mlp({ inputSize: 12, hidden: [6], numClasses: 3, dropout: 0.2, batchNorm: true });
  assert.deepEqual([...full].map((m) => m.constructor.name), ['Flatten', 'Linear', 'BatchNorm1d', 'ReLU', 'Dropout', 'Linear']);
  assert.ok(full.at(0) instanceof Flatten);
  const hidden = full.at(1);
  assert.ok(hidden instanceof Linear && hidden.bias === null);
  assert.ok(full.at(2) instanceof BatchNorm1d);
  assert.ok(full.at(4) instanceof Dropout);
  assert.deepEqual(full.forward(randn([4, 3, 2, 2])).shape, [4, 3]);
});

test('cnn: parameter count, output shape and a gradient for every parameter', () => {
  manualSeed(0);
  const model = createModel('cnn');
  const expected =
    (16 * 9 + 32) + (16 * 16 * 9 + 32) + (32 * 16 * 9 + 64) + (32 * 32 * 9 + 64) +
    (32 * 7 * 7 * 128 + 256) + (128 * 10 + 10);
  assert.equal(model.numParameters(), expected);
  const loss = crossEntropy(model.forward(randn([4, 1, 28, 28])), randint(10, [4]));
  loss.backward();
  for (const [name, p] of model.namedParameters()) assert.ok(p.grad && p.grad.toArray().some((v) => v !== 0), name);
});

test('lenet5 backward reaches every parameter', () => {
  manualSeed(1);
  const model = createModel('lenet5');
  crossEntropy(model.forward(randn([3, 1, 28, 28])), randint(10, [3])).backward();
  for (const [name, p] of model.namedParameters()) {
    assert.deepEqual(p.grad?.shape, p.shape, name);
  }
});
