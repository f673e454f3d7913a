/**
 * The PyTorch LeNet-5 fixture (test/fixtures/onnx, made by bench/peers/torch_lenet_onnx.py: trained
 * 2 epochs on MNIST, exported by torch.onnx at opset 13) imported, evaluated on the whole MNIST
 * test set against PyTorch's own predictions, then post-training quantized to W8A8 and converted
 * to an integer model. ONNX_LENET_REPORT=1 prints the measured figures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Tensor } from '../tensor/index.ts';
import { noGrad } from '../autograd/engine.ts';
import { loadMnist } from '../data/mnist.ts';
import { DataLoader } from '../data/loader.ts';
import { take } from '../data/dataset.ts';
import { calibrate } from '../quant/ptq/calibrate.ts';
import { convert } from '../runtime/convert.ts';
import { Conv2d } from '../nn/conv.ts';
import { Linear } from '../nn/linear.ts';
import { importOnnx } from './import.ts';

const fixture = (name: string): URL => new URL(`../../test/fixtures/onnx/${name}`, import.meta.url);

test('PyTorch LeNet-5 ONNX: same predictions as PyTorch on the MNIST test set; W8A8 PTQ and convert keep the accuracy', () => {
  const meta = JSON.parse(readFileSync(fixture('lenet5-torch.json'), 'utf8')) as { test_accuracy: number };
  const torchPred = new Uint8Array(readFileSync(fixture('lenet5-torch.pred')));
  const torchLogits = new Float32Array(new Uint8Array(readFileSync(fixture('lenet5-torch.logits'))).buffer);
  const model = importOnnx(fixture('lenet5-torch.onnx').pathname);
  // The nodes became real layers: 2 Conv2d and 3 Linear, named after the ONNX nodes.
  const layers = model.namedModules().filter(([, m]) => m instanceof Conv2d || m instanceof Linear).map(([n]) => n);
  assert.deepEqual(layers, ['_0_Conv', '_3_Conv', '_7_Gemm', '_9_Gemm', '_11_Gemm']);
  assert.equal(model.parameters().reduce((n, p) => n + p.size, 0), 61706);

  const testSet = loadMnist({ split: 'test' });
  const labels = testSet.labels;
  const predict = (forward: (x: Tensor) => Float32Array | Tensor, limit = testSet.length): { pred: Uint8Array; correct: number } => {
    const pred = new Uint8Array(limit);
    let correct = 0;
    let i = 0;
    for (const batch of new DataLoader(take(testSet, limit), { batchSize: 500 })) {
      const out = forward(batch.x);
      const logits = out instanceof Tensor ? out.data : out;
      const n = batch.x.shape[0]!;
      for (let r = 0; r < n; r++, i++) {
        let best = 0;
        for (let c = 1; c < 10; c++) if (logits[r * 10 + c]! > logits[r * 10 + best]!) best = c;
        pred[i] = best;
        if (best === labels[i]) correct++;
      }
    }
    return { pred, correct };
  };

  // 1. fp32: logits of the first 64 images within float32 rounding, predictions on all 10,000.
  const first = noGrad(() => model.forward(new DataLoader(testSet, { batchSize: 64 })[Symbol.iterator]().next().value!.x));
  let maxDiff = 0;
  for (let k = 0; k < torchLogits.length; k++) maxDiff = Math.max(maxDiff, Math.abs(first.data[k]! - torchLogits[k]!));
  assert.ok(maxDiff < 1e-4, `logits differ by ${maxDiff}`);
  const fp32 = noGrad(() => predict((x) => model.forward(x)));
  let same = 0;
  for (let k = 0; k < testSet.length; k++) if (fp32.pred[k] === torchPred[k]) same++;
  const agreement = same / testSet.length;
  const accuracy = fp32.correct / testSet.length;
  assert.ok(agreement >= 0.9995, `agreement ${agreement}`);
  assert.ok(Math.abs(accuracy - meta.test_accuracy) <= 0.0005 + 1e-9, `accuracy ${accuracy} vs PyTorch ${meta.test_accuracy}`);

  // 2. PTQ W8A8 (1000 calibration samples of the train split), then the integer model.
  const trainSet = loadMnist({ split: 'train', limit: 2000 });
  calibrate(model, new DataLoader(trainSet, { batchSize: 100, shuffle: true, seed: 0 }), { scheme: 'w8a8', samples: 1000 });
  const ptq = noGrad(() => predict((x) => model.forward(x)));
  const ptqAccuracy = ptq.correct / testSet.length;
  assert.ok(accuracy - ptqAccuracy <= 0.001, `W8A8 loses ${((accuracy - ptqAccuracy) * 100).toFixed(2)} pt`);
  // The integer runtime is slow on 10,000 images (~13 s of CPU): the test checks the first
  // 1,000 against the fake-quant predictions; ONNX_LENET_FULL=1 runs all of them.
  const sample = new DataLoader(testSet, { batchSize: 256 })[Symbol.iterator]().next().value!.x;
  const intModel = convert(model, { sample });
  const intCount = process.env.ONNX_LENET_FULL ? testSet.length : 1000;
  const int = predict((x) => intModel.run(x, x.shape[0]), intCount);
  let intSame = 0;
  for (let k = 0; k < intCount; k++) if (int.pred[k] === ptq.pred[k]) intSame++;
  assert.ok(intSame / intCount >= 0.995, `IntModel agrees with the fake-quant model on ${intSame}/${intCount}`);
  const intAccuracy = int.correct / intCount;

  if (process.env.ONNX_LENET_REPORT) {
    console.log(`lenet5-torch.onnx: max |Δlogit| (64 images) ${maxDiff.toExponential(2)}; predictions equal to PyTorch on ${same}/10000 (${(agreement * 100).toFixed(2)} %)\n` +
      `accuracy: PyTorch ${(meta.test_accuracy * 100).toFixed(2)} %, imported fp32 ${(accuracy * 100).toFixed(2)} %, W8A8 PTQ (fake-quant) ${(ptqAccuracy * 100).toFixed(2)} % ` +
      `(${((ptqAccuracy - accuracy) * 100).toFixed(2)} pt), IntModel ${(intAccuracy * 100).toFixed(2)} % on the first ${intCount} images (same prediction as fake-quant on ${intSame})`);
  }
});
