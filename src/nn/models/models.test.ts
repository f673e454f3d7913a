import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crossEntropy, manualSeed, randint, randn } from '../../tensor/index.ts';
import { BatchNorm1d } from '../batchnorm.ts';
import { Dropout } from '../dropout.ts';
import { Flatten } from '../flatten.ts';
import { Linear } from '../linear.ts';
import { Sequential } from '../sequential.ts';
import { BasicBlock, Cnn, LeNet5, MODEL_NAMES, ResNet, createModel, isModelName, mlp, resnet8 } from './index.ts';
import { Add } from '../merge.ts';
import { BatchNorm2d } from '../batchnorm.ts';

test('registry: names, instances, options and unknown names', () => {
  assert.deepEqual(MODEL_NAMES, ['lenet5', 'mlp', 'cnn', 'resnet8', 'mobilenet']);
  assert.ok(createModel('resnet8') instanceof ResNet);
  assert.ok(createModel('lenet5') instanceof LeNet5);
  assert.ok(createModel('cnn') instanceof Cnn);
  assert.ok(createModel('mlp', { hidden: [8] }) instanceof Sequential);
  assert.ok(isModelName('mlp') && !isModelName('resnet'));
  assert.equal(createModel('lenet5', { numClasses: 3 }).forward(randn([1, 1, 28, 28])).shape[1], 3);
  const unknown: string = 'resnet';
  assert.throws(() => createModel(unknown as 'mlp'), /unknown model 'resnet' \(known: lenet5, mlp, cnn, resnet8, mobilenet\)/);
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

test('nn.Add: a + b elementwise, no broadcasting', () => {
  manualSeed(4);
  const a = randn([2, 3]);
  const b = randn([2, 3]);
  const y = new Add().forward(a, b);
  assert.deepEqual(Array.from(y.data), Array.from(a.data, (v, i) => Math.fround(v + b.data[i]!)));
  assert.throws(() => new Add().forward(a, randn([3])), /Add: input shapes \[2, 3\] and \[3\] differ/);
});

test('resnet8: parameter count, shapes, the residual wiring and a gradient for every parameter', () => {
  manualSeed(2);
  const model = resnet8();
  const bn = (c: number): number => 2 * c;
  const block = (i: number, o: number, proj: boolean): number => i * o * 9 + bn(o) + o * o * 9 + bn(o) + (proj ? i * o + bn(o) : 0);
  const expected = 16 * 9 + bn(16) + block(16, 16, false) + block(16, 32, true) + block(32, 64, true) + 64 * 10 + 10;
  assert.equal(model.numParameters(), expected);
  assert.equal(expected, 77754);
  assert.deepEqual(model.forward(randn([2, 1, 28, 28])).shape, [2, 10]);
  assert.ok(model.stages.at(0) instanceof BasicBlock && (model.stages.at(0) as BasicBlock).shortcut === null);
  assert.ok((model.stages.at(1) as BasicBlock).shortcut !== null);
  // With the last BatchNorm of the main path zeroed (γ = β = 0, eval), an identity block is relu(x).
  const b = new BasicBlock(3, 3);
  const last = b.main2.at(1) as BatchNorm2d;
  last.weight!.data.fill(0);
  last.bias!.data.fill(0);
  b.eval();
  const x = randn([2, 3, 5, 5]);
  assert.deepEqual(Array.from(b.forward(x).data), Array.from(x.data, (v) => Math.max(v, 0)));
  const loss = crossEntropy(model.forward(randn([3, 1, 28, 28])), randint(10, [3]));
  loss.backward();
  for (const [name, p] of model.namedParameters()) assert.ok(p.grad && p.grad.toArray().some((v) => v !== 0), name);
});
