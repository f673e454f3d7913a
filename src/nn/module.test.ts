import { test } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, ones, randn, tensor, type Tensor } from '../tensor/index.ts';
import { Module, type TensorModule } from './module.ts';
import { Linear } from './linear.ts';
import { BatchNorm1d, BatchNorm2d } from './batchnorm.ts';
import { Dropout } from './dropout.ts';
import { ReLU, Identity } from './activation.ts';
import { Sequential } from './sequential.ts';
import { lenet5, cnn } from './models/index.ts';

test('lenet5: 61,706 parameters with stable dotted names in definition order', () => {
  manualSeed(0);
  const model = lenet5();
  assert.equal(model.numParameters(), 61706);
  assert.deepEqual(model.namedParameters().map(([n, p]) => `${n}:${p.shape.join('x')}`), [
    'conv1.weight:6x1x5x5', 'conv1.bias:6',
    'conv2.weight:16x6x5x5', 'conv2.bias:16',
    'fc1.weight:120x400', 'fc1.bias:120',
    'fc2.weight:84x120', 'fc2.bias:84',
    'fc3.weight:10x84', 'fc3.bias:10',
  ]);
  assert.ok(model.parameters().every((p) => p.requiresGrad));
  assert.deepEqual(model.namedModules().map(([n]) => n).slice(0, 4), ['', 'conv1', 'relu1', 'pool1']);
  assert.equal(model.children().length, 12);
  const y = model.forward(randn([2, 1, 28, 28]));
  assert.deepEqual(y.shape, [2, 10]);
});

test('cnn: nested names and buffers', () => {
  const model = cnn();
  const names = model.namedParameters().map(([n]) => n);
  assert.equal(names[0], 'features.0.weight');
  assert.equal(names[1], 'features.1.weight');
  assert.ok(names.includes('classifier.1.weight'));
  assert.ok(names.includes('classifier.5.bias'));
  const buffers = model.namedBuffers().map(([n]) => n);
  assert.deepEqual(buffers.slice(0, 3), ['features.1.runningMean', 'features.1.runningVar', 'features.1.numBatchesTracked']);
  assert.ok(model.stateDict().has('classifier.2.runningVar'));
});

test('stateDict is a copy; loadStateDict restores in place, keeping tensor identity', () => {
  manualSeed(1);
  const a = lenet5();
  manualSeed(2);
  const b = lenet5();
  const sd = a.stateDict();
  const weightA = a.getSubmodule('fc1');
  assert.ok(weightA instanceof Linear);
  // the dict holds copies
  sd.get('fc1.weight')!.data[0] = 123;
  assert.notEqual(weightA.weight.data[0], 123);
  const before = b.parameters();
  b.loadStateDict(a.stateDict());
  const after = b.parameters();
  before.forEach((p, i) => assert.equal(p, after[i]));
  for (const [name, p] of a.namedParameters()) {
    assert.deepEqual(Array.from(b.stateDict().get(name)!.data), Array.from(p.data), name);
  }
  const x = randn([3, 1, 28, 28]);
  assert.deepEqual(Array.from(a.forward(x).data), Array.from(b.forward(x).data));
});

test('stateDict includes BN buffers; a record input loads too', () => {
  const bn = new BatchNorm2d(3);
  bn.forward(randn([4, 3, 2, 2]));
  const sd = bn.stateDict();
  assert.deepEqual([...sd.keys()], ['weight', 'bias', 'runningMean', 'runningVar', 'numBatchesTracked']);
  assert.equal(sd.get('numBatchesTracked')!.item(), 1);
  const fresh = new BatchNorm2d(3);
  fresh.loadStateDict(Object.fromEntries(sd));
  assert.deepEqual(Array.from(fresh.runningMean!.data), Array.from(bn.runningMean!.data));
  assert.equal(fresh.numBatchesTracked!.item(), 1);
});

test('strict loadStateDict names missing and unexpected keys and shape mismatches', () => {
  const model = new Sequential(new Linear(3, 4), new ReLU(), new Linear(4, 2));
  const sd = model.stateDict();
  sd.delete('2.bias');
  sd.set('9.weight', ones([1]));
  assert.throws(() => model.loadStateDict(sd), (e: Error) => /missing keys: 2\.bias/.test(e.message) && /unexpected keys: 9\.weight/.test(e.message));
  const result = model.loadStateDict(sd, { strict: false });
  assert.deepEqual(result, { missingKeys: ['2.bias'], unexpectedKeys: ['9.weight'] });
  const bad = model.stateDict();
  bad.set('0.weight', ones([3, 4]));
  assert.throws(() => model.loadStateDict(bad, { strict: false }), /shape mismatch for '0\.weight': checkpoint \[3, 4\], model \[4, 3\]/);
});

test('train/eval switch Dropout and BatchNorm behaviour recursively', () => {
  manualSeed(3);
  const model = new Sequential(new Linear(4, 8), new BatchNorm1d(8), new Dropout(0.5));
  const x = randn([16, 4]);
  assert.ok(model.modules().every((m) => m.training));
  const trainOut = model.forward(x);
  assert.ok(trainOut.toArray().some((v) => v === 0), 'dropout zeroes some entries in training');
  const bn = model.at(1);
  assert.ok(bn instanceof BatchNorm1d);
  assert.equal(bn.numBatchesTracked!.item(), 1);
  model.eval();
  assert.ok(model.modules().every((m) => !m.training));
  const e1 = model.forward(x);
  const e2 = model.forward(x);
  assert.deepEqual(e1.toArray(), e2.toArray(), 'eval is deterministic');
  assert.equal(bn.numBatchesTracked!.item(), 1, 'eval does not update running stats');
  model.train();
  assert.ok(model.modules().every((m) => m.training));
});

class Doubler extends Module {
  forward(x: Tensor): Tensor {
    return x.mul(2);
  }
}

test('setSubmodule swaps a layer so forward uses it; getSubmodule errors name the path', () => {
  const model = lenet5();
  const x = randn([1, 1, 28, 28]);
  model.setSubmodule('relu3', new Identity());
  assert.ok(model.relu3 instanceof Identity);
  assert.ok(model.getSubmodule('relu3') instanceof Identity);
  // fc3 replaced by a module with no parameters: the output is fc2's activations doubled
  model.setSubmodule('fc3', new Doubler());
  assert.deepEqual(model.forward(x).shape, [1, 84]);
  assert.equal(model.namedParameters().some(([n]) => n.startsWith('fc3')), false);
  assert.throws(() => model.getSubmodule('fc9.weight'), /no submodule 'fc9'/);
  assert.throws(() => model.setSubmodule('nope', new ReLU()), /no submodule 'nope'/);

  const net = cnn();
  net.setSubmodule('classifier.4', new Identity());
  assert.ok(net.classifier.at(4) instanceof Identity);
  assert.ok(net.getSubmodule('classifier.4') instanceof Identity);
  net.eval();
  assert.deepEqual(net.forward(randn([2, 1, 28, 28])).shape, [2, 10]);
});

test('registration rules: no dots, no kind clashes, shared parameters counted once', () => {
  class Tied extends Module {
    readonly a: Linear;
    constructor() {
      super();
      this.a = this.registerModule('a', new Linear(2, 2));
      this.registerModule('b', this.a);
    }
    forward(x: Tensor): Tensor {
      return this.a.forward(x);
    }
  }
  const tied = new Tied();
  assert.equal(tied.parameters().length, 2);
  assert.equal(tied.numParameters(), 6);
  assert.throws(() => tied.registerParameter('x.y', ones([1])), /invalid name/);
  assert.throws(() => tied.registerBuffer('a', ones([1])), /already registered/);
});

test('apply visits children before parents; zeroGrad and requiresGrad_', () => {
  const model: TensorModule = new Sequential(new Linear(2, 3), new Sequential(new ReLU(), new Linear(3, 1)));
  const visited: string[] = [];
  model.apply((m) => visited.push(m.constructor.name));
  assert.deepEqual(visited, ['Linear', 'ReLU', 'Linear', 'Sequential', 'Sequential']);
  model.forward(tensor([[1, 2]])).sum().backward();
  assert.ok(model.parameters().every((p) => p.grad !== null));
  model.zeroGrad();
  assert.ok(model.parameters().every((p) => p.grad === null));
  model.requiresGrad_(false);
  assert.equal(model.numParameters({ trainableOnly: true }), 0);
  assert.equal(model.numParameters(), 13);
});

test('Sequential indexing, iteration, append and toString', () => {
  const seq = new Sequential(new Linear(2, 3), new ReLU());
  seq.append(new Linear(3, 1));
  assert.equal(seq.length, 3);
  assert.ok(seq.at(-1) instanceof Linear);
  assert.ok(seq.at(1) instanceof ReLU);
  assert.throws(() => seq.at(3), /out of range/);
  assert.deepEqual([...seq].map((m) => m.constructor.name), ['Linear', 'ReLU', 'Linear']);
  assert.deepEqual(seq.forward(randn([5, 2])).shape, [5, 1]);
  const text = seq.toString();
  assert.match(text, /\(0\): Linear\(inFeatures=2, outFeatures=3, bias=true\)/);
  assert.match(text, /\(1\): ReLU\(\)/);
});
