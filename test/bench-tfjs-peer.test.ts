/**
 * The TensorFlow.js peer of the bench (bench/peers/tfjs-model.ts) computes the same function as
 * lowbit's models: with lowbit's weights moved into its variables (convolution kernels to
 * [KH, KW, C, O], dense weights transposed, and LeNet-5's first dense rows reordered from NCHW to
 * NHWC flattening), its logits and softmax cross-entropy equal lowbit's forward within float32
 * rounding. TF.js runs in-process here on its JavaScript (cpu) backend, whose CommonJS build loads
 * in Node without a bundler (the forward pass needs no gradient registrations). Skipped with a
 * message when the TF.js packages are not installed.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type * as tfCore from '@tensorflow/tfjs-core';
import { noGrad } from '../src/autograd/index.ts';
import { Rng, Tensor, crossEntropy } from '../src/tensor/index.ts';
import { lenet5 } from '../src/nn/models/lenet5.ts';
import { mlp } from '../src/nn/models/mlp.ts';
import { manualSeed } from '../src/tensor/random.ts';
import type { TensorModule } from '../src/nn/module.ts';
import { buildNet, type TfjsModel } from '../bench/peers/tfjs-model.ts';

let tf: typeof tfCore | null = null;
let missing = '';

before(async () => {
  try {
    const require = createRequire(import.meta.url);
    tf = require('@tensorflow/tfjs-core') as typeof tfCore;
    require('@tensorflow/tfjs-backend-cpu');
    tf.env().set('PROD', true);
    await tf.setBackend('cpu');
  } catch (e) {
    missing = `TensorFlow.js is not installed: ${e instanceof Error ? e.message.split('\n')[0]! : String(e)}`;
  }
});

/** lowbit's parameter `name` of `model` as a Float32Array with its shape. */
function param(model: TensorModule, name: string): { data: Float32Array; shape: readonly number[] } {
  for (const [k, v] of model.namedParameters()) if (k === name) return { data: v.data as Float32Array, shape: v.shape };
  throw new Error(`no parameter ${name}`);
}

/** [O, C, KH, KW] (lowbit) -> [KH, KW, C, O] (TF.js). */
function convKernel(w: { data: Float32Array; shape: readonly number[] }): Float32Array {
  const [O, C, KH, KW] = w.shape as [number, number, number, number];
  const out = new Float32Array(w.data.length);
  for (let o = 0; o < O; o++) for (let c = 0; c < C; c++) for (let i = 0; i < KH; i++) for (let j = 0; j < KW; j++) out[((i * KW + j) * C + c) * O + o] = w.data[((o * C + c) * KH + i) * KW + j]!;
  return out;
}

/** [out, in] (lowbit) -> [in', out] (TF.js), where `row(k)` is TF.js's input row of lowbit's input k. */
function denseKernel(w: { data: Float32Array; shape: readonly number[] }, row: (k: number) => number = (k) => k): Float32Array {
  const [O, K] = w.shape as [number, number];
  const out = new Float32Array(w.data.length);
  for (let o = 0; o < O; o++) for (let k = 0; k < K; k++) out[row(k) * O + o] = w.data[o * K + k]!;
  return out;
}

function checkSameFunction(name: TfjsModel, build: () => TensorModule, inputShape: number[]): void {
  test(`TF.js peer ${name}: lowbit's weights give lowbit's logits and loss`, (t) => {
    if (!tf) return t.skip(missing);
    manualSeed(11);
    const model = build();
    model.eval();
    const N = 5;
    const rng = new Rng(5);
    const count = N * inputShape.reduce((a, b) => a * b, 1);
    const x = new Tensor(Float32Array.from({ length: count }, () => rng.normal()), [N, ...inputShape]);
    const labels = Int32Array.from({ length: N }, () => rng.int(10));
    const { logits, loss } = noGrad(() => {
      const l = model.forward(x);
      return { logits: l.data as Float32Array, loss: crossEntropy(l, new Tensor(labels, [N])).item() };
    });

    const net = buildNet(tf, name);
    // the variables in buildNet's order: lenet5 k1 b1 k2 b2 then (w, b) per dense layer; mlp (w, b) per layer
    const values: Float32Array[] = [];
    if (name === 'lenet5') {
      values.push(convKernel(param(model, 'conv1.weight')), param(model, 'conv1.bias').data, convKernel(param(model, 'conv2.weight')), param(model, 'conv2.bias').data);
      // lowbit flattens [16, 5, 5] as c·25 + h·5 + w; TF.js flattens [5, 5, 16] as (h·5 + w)·16 + c
      values.push(denseKernel(param(model, 'fc1.weight'), (k) => (k % 25) * 16 + Math.floor(k / 25)), param(model, 'fc1.bias').data);
      for (const l of ['fc2', 'fc3']) values.push(denseKernel(param(model, `${l}.weight`)), param(model, `${l}.bias`).data);
    } else {
      const linears = [...model.namedParameters()].map(([k]) => k).filter((k) => k.endsWith('.weight'));
      for (const w of linears) values.push(denseKernel(param(model, w)), param(model, w.replace(/weight$/, 'bias')).data);
    }
    assert.equal(net.vars.length, values.length);
    net.vars.forEach((v, i) => {
      assert.equal(v.size, values[i]!.length, `variable ${i} size`);
      v.assign(tf!.tensor(values[i]!, v.shape));
    });
    // NCHW with one channel has the memory layout of NHWC
    const tx = tf.tensor(x.data as Float32Array, [N, ...net.inputShape]);
    const tl = net.forward(tx);
    const theirs = tl.dataSync() as Float32Array;
    const theirLoss = tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d(labels, 'int32'), 10), tl).dataSync()[0]!;
    const scale = Math.max(...Array.from(logits, Math.abs));
    let maxDiff = 0;
    for (let i = 0; i < logits.length; i++) maxDiff = Math.max(maxDiff, Math.abs(logits[i]! - theirs[i]!));
    assert.ok(scale > 0.01, 'logits are not all ~0');
    assert.ok(maxDiff <= 1e-5 * Math.max(1, scale), `max |Δ logit| ${maxDiff} (max |logit| ${scale})`);
    assert.ok(Math.abs(theirLoss - loss) <= 1e-5 * Math.max(1, loss), `loss lowbit ${loss} TF.js ${theirLoss}`);
  });
}

checkSameFunction('lenet5', () => lenet5(), [1, 28, 28]);
checkSameFunction('mlp', () => mlp(), [784]);
