/**
 * The PyTorch residual-net fixture (test/fixtures/onnx/resnet-torch.*, made by
 * `bench/peers/torch_lenet_onnx.py --model resnet --epochs 1`: two basic blocks with identity
 * shortcuts, BatchNorm folded into the convs by torch.onnx, the sums as ONNX Add nodes) imported:
 * the same predictions as PyTorch on the MNIST test set, its residual sums as nn.Add leaves, and
 * W8A8 PTQ → convert to an IntModel with integer add nodes that keeps the accuracy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { noGrad } from '../autograd/engine.ts';
import { loadMnist } from '../data/mnist.ts';
import { DataLoader } from '../data/loader.ts';
import { take } from '../data/dataset.ts';
import { Add } from '../nn/merge.ts';
import { calibrate } from '../quant/ptq/calibrate.ts';
import { convert } from '../runtime/convert.ts';
import { Tensor } from '../tensor/index.ts';
import { importOnnx } from './import.ts';

const fixture = (name: string): URL => new URL(`../../test/fixtures/onnx/${name}`, import.meta.url);

function argmaxRows(logits: ArrayLike<number>, n: number, classes: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let r = 0; r < n; r++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[r * classes + c]! > logits[r * classes + best]!) best = c;
    out[r] = best;
  }
  return out;
}

test('PyTorch residual net ONNX: PyTorch\'s predictions; W8A8 PTQ converts to an IntModel with integer adds', () => {
  const meta = JSON.parse(readFileSync(fixture('resnet-torch.json'), 'utf8')) as { test_accuracy: number };
  const torchPred = new Uint8Array(readFileSync(fixture('resnet-torch.pred')));
  const torchLogits = new Float32Array(new Uint8Array(readFileSync(fixture('resnet-torch.logits'))).buffer);
  const model = importOnnx(fixture('resnet-torch.onnx').pathname);
  const adds = model.namedModules().filter(([, m]) => m instanceof Add).map(([n]) => n);
  assert.equal(adds.length, 2, `nn.Add leaves: ${adds.join(', ')}`);

  const testSet = loadMnist({ split: 'test' });
  const first = noGrad(() => model.forward(new DataLoader(testSet, { batchSize: 64 })[Symbol.iterator]().next().value!.x));
  let maxDiff = 0;
  for (let k = 0; k < torchLogits.length; k++) maxDiff = Math.max(maxDiff, Math.abs(first.data[k]! - torchLogits[k]!));
  assert.ok(maxDiff < 1e-4, `logits differ by ${maxDiff}`);
  const limit = 2000;
  let same = 0;
  let i = 0;
  for (const batch of new DataLoader(take(testSet, limit), { batchSize: 500 })) {
    const n = batch.x.shape[0]!;
    const pred = argmaxRows(noGrad(() => model.forward(batch.x)).data, n, 10);
    for (let r = 0; r < n; r++, i++) if (pred[r] === torchPred[i]) same++;
  }
  assert.equal(same, limit, `same prediction as PyTorch on ${same} / ${limit}`);
  assert.ok(meta.test_accuracy > 0.95);

  // W8A8 PTQ of the imported graph (its Conv+BN pairs were folded by torch), then convert: the
  // IntModel has one integer add node per residual sum and agrees with the fake-quant model.
  const calib = new DataLoader(take(loadMnist({ split: 'train' }), 512), { batchSize: 128 });
  const q = calibrate(importOnnx(fixture('resnet-torch.onnx').pathname), calib, { scheme: 'w8a8' });
  const sample = take(testSet, 500);
  const x = new Tensor(new Float32Array(sample.images), [500, 1, 28, 28]);
  const int = convert(q, { sample: x });
  assert.equal(int.nodes.filter((n) => n.op === 'add').length, 2);
  const fake = argmaxRows(noGrad(() => q.forward(x)).data, 500, 10);
  const integer = argmaxRows(int.run(new Float32Array(sample.images), 500), 500, 10);
  let agree = 0;
  let correct = 0;
  for (let r = 0; r < 500; r++) {
    if (fake[r] === integer[r]) agree++;
    if (integer[r] === sample.labels[r]) correct++;
  }
  assert.ok(agree >= 495, `integer vs fake-quant argmax agreement ${agree} / 500`);
  assert.ok(correct / 500 > meta.test_accuracy - 0.03, `integer accuracy ${correct / 500}`);
});
