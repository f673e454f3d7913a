import { test } from 'node:test';
import assert from 'node:assert/strict';
import { argmax, crossEntropy, manualSeed, randn, Tensor, tensor, Rng } from '../tensor/index.ts';
import { noGrad } from '../autograd/index.ts';
import { Sequential } from './sequential.ts';
import { Linear } from './linear.ts';
import { Tanh } from './activation.ts';
import { mlp } from './models/mlp.ts';
import { Adam } from '../optim/adam.ts';
import { SGD } from '../optim/sgd.ts';
import { CosineAnnealingLR } from '../optim/schedules.ts';
import type { TensorModule } from './module.ts';

function accuracy(model: TensorModule, x: Tensor, y: Tensor): number {
  const predicted = noGrad(() => argmax(model.forward(x), 1));
  let hits = 0;
  for (let i = 0; i < y.size; i++) if (predicted.data[i] === y.data[i]) hits++;
  return hits / y.size;
}

test('an MLP learns XOR to 100% with Adam (seeded)', () => {
  manualSeed(42);
  const model = new Sequential(new Linear(2, 8), new Tanh(), new Linear(8, 2));
  const x = tensor([[0, 0], [0, 1], [1, 0], [1, 1]]);
  const y = new Tensor(Int32Array.from([0, 1, 1, 0]), [4]);
  const opt = new Adam(model.parameters(), { lr: 0.05 });
  let loss = Infinity;
  for (let step = 0; step < 300; step++) {
    const l = crossEntropy(model.forward(x), y);
    l.backward();
    opt.step();
    opt.zeroGrad();
    loss = l.item();
  }
  assert.ok(loss < 0.05, `final loss ${loss}`);
  assert.equal(accuracy(model, x, y), 1);
});

test('an MLP with BatchNorm and Dropout separates two Gaussian blobs with SGD + cosine LR', () => {
  manualSeed(7);
  const rng = new Rng(7);
  const n = 128;
  const points = randn([n, 4], { rng });
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % 2;
    const shift = labels[i] === 1 ? 1.5 : -1.5;
    for (let d = 0; d < 4; d++) points.data[i * 4 + d] = points.data[i * 4 + d]! + shift;
  }
  const y = new Tensor(labels, [n]);
  const model = mlp({ inputSize: 4, hidden: [16], numClasses: 2, batchNorm: true, dropout: 0.1 });
  const opt = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 });
  const schedule = new CosineAnnealingLR(opt, { tMax: 200 });
  model.train();
  for (let step = 0; step < 200; step++) {
    crossEntropy(model.forward(points), y).backward();
    opt.step();
    opt.zeroGrad();
    schedule.step();
  }
  model.eval();
  assert.equal(accuracy(model, points, y), 1);
});
