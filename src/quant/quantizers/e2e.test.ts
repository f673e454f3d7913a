import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import './index.ts';
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/linear.ts';
import { noGrad } from '../../autograd/engine.ts';
import { argmax, crossEntropy, linear, relu } from '../../tensor/ops.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { Rng } from '../../tensor/random.ts';
import { Adam } from '../../optim/adam.ts';
import { createQuantizer, type Quantizer, type QuantizerSpec } from './quantizer.ts';

/** A Linear whose weight and (optionally) input go through quantizers. */
class QLinear extends Module {
  readonly layer: Linear;
  readonly weightQuant: Quantizer;
  readonly inputQuant: Quantizer | null;
  constructor(inF: number, outF: number, weight: QuantizerSpec, input: QuantizerSpec | null, rng: Rng) {
    super();
    this.layer = this.registerModule('layer', new Linear(inF, outF, { rng }));
    this.weightQuant = this.registerModule('weightQuant', createQuantizer(weight, { role: 'weight', shape: [outF, inF] }));
    this.inputQuant = input ? this.registerModule('inputQuant', createQuantizer(input, { role: 'activation' })) : null;
  }
  forward(x: Tensor): Tensor {
    const xin = this.inputQuant ? this.inputQuant.forward(x) : x;
    return linear(xin, this.weightQuant.forward(this.layer.weight), this.layer.bias);
  }
}

class Mlp extends Module {
  readonly l1: QLinear;
  readonly l2: QLinear;
  constructor(weight: QuantizerSpec, activation: QuantizerSpec | null, rng: Rng) {
    super();
    this.l1 = this.registerModule('l1', new QLinear(8, 32, weight, null, rng));
    this.l2 = this.registerModule('l2', new QLinear(32, 4, weight, activation, rng));
  }
  forward(x: Tensor): Tensor {
    return this.l2.forward(relu(this.l1.forward(x)));
  }
}

/** Four Gaussian blobs in 8 dimensions, centres ±2 on two axes: linearly separable with margin. */
function blobs(rng: Rng, n: number): { x: Tensor; y: Tensor } {
  const x = new Float32Array(n * 8);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = rng.int(4);
    y[i] = c;
    for (let d = 0; d < 8; d++) x[i * 8 + d] = 0.6 * rng.normal();
    x[i * 8] += c & 1 ? 2 : -2;
    x[i * 8 + 1] += c & 2 ? 2 : -2;
  }
  return { x: new Tensor(x, [n, 8]), y: new Tensor(y, [n]) };
}

function trainAndScore(weight: QuantizerSpec, activation: QuantizerSpec | null): number {
  const rng = new Rng(7);
  const model = new Mlp(weight, activation, rng);
  const train = blobs(rng, 256);
  const test = blobs(rng, 256);
  const opt = new Adam(model.parameters(), { lr: 0.02 });
  const epochs = 60;
  for (let e = 0; e < epochs; e++) {
    for (const m of model.modules()) if ('setProgress' in m) (m as Quantizer).setProgress(e, epochs);
    opt.zeroGrad();
    crossEntropy(model.forward(train.x), train.y).backward();
    opt.step();
  }
  model.eval();
  const pred = noGrad(() => argmax(model.forward(test.x), 1));
  let correct = 0;
  for (let i = 0; i < 256; i++) if (pred.data[i] === test.y.data[i]) correct++;
  return correct / 256;
}

describe('quantizers: end to end (seeded MLP on separable blobs)', () => {
  it('W4A4 LSQ reaches ≥ 95 % test accuracy', () => {
    const acc = trainAndScore({ kind: 'lsq', bits: 4 }, { kind: 'lsq', bits: 4 });
    assert.ok(acc >= 0.95, `accuracy ${acc}`);
  });
  it('binary weights (XNOR-style per-channel α) reach ≥ 95 % test accuracy', () => {
    const acc = trainAndScore({ kind: 'binary', bits: 1 }, null);
    assert.ok(acc >= 0.95, `accuracy ${acc}`);
  });
});
