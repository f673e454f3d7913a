/**
 * ONNX export of per-group Linear weights (graph version 3): a blocked DequantizeLinear (opset 21,
 * axis 1, block_size G) whose scales are the IntModel's s_max·r·2^−R, run by onnxruntime-node on
 * MNIST test images and compared with the integer model (argmax agreement, logit difference); the
 * web profile and an opset below 21 refuse such a model. Model: the trained PyTorch LeNet-5
 * fixture (test/fixtures/onnx), W4A8 PTQ with its fc1 (400 inputs) and fc2 (120) in groups of 8.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadMnist } from '../data/mnist.ts';
import { DataLoader } from '../data/loader.ts';
import { take } from '../data/dataset.ts';
import { calibrate } from '../quant/ptq/calibrate.ts';
import { convert } from '../runtime/convert.ts';
import type { LayerNode } from '../runtime/intmodel.ts';
import { importOnnx } from './import.ts';
import { exportOnnx } from './export.ts';
import { openOnnx } from './verify.ts';
import { OnnxError } from './proto.ts';

const fixture = (name: string): URL => new URL(`../../test/fixtures/onnx/${name}`, import.meta.url);

function argmax(v: Float32Array, row: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (v[row * classes + c]! > v[row * classes + best]!) best = c;
  return best;
}

test('ONNX: per-group Linear weights as a blocked DequantizeLinear (opset 21); onnxruntime-node agrees with the integer model on MNIST', async (t) => {
  const model = importOnnx(fixture('lenet5-torch.onnx').pathname);
  const train = loadMnist({ split: 'train', limit: 1000 });
  calibrate(model, new DataLoader(train, { batchSize: 100 }), { scheme: 'w4a8', samples: 1000, weightGroupSize: 8 });
  const testSet = take(loadMnist({ split: 'test' }), 1000);
  const batch = new DataLoader(testSet, { batchSize: testSet.length })[Symbol.iterator]().next().value!.x;
  const im = convert(model, { sample: batch });
  const grouped = im.nodes.filter((n): n is LayerNode => n.op === 'linear' && n.weightGroupSize !== undefined).map((n) => n.name);
  assert.deepEqual(grouped, ['_7_Gemm', '_9_Gemm']);

  const exported = exportOnnx(im);
  assert.equal(exported.opset, 21);
  const blocked = (exported.model.graph?.node ?? []).filter((n) => n.opType === 'DequantizeLinear' && (n.attribute ?? []).some((a) => a.name === 'block_size'));
  assert.equal(blocked.length, 2);
  for (const n of blocked) assert.equal(Number(n.attribute!.find((a) => a.name === 'block_size')!.i), 8);
  assert.throws(() => exportOnnx(im, { profile: 'web' }), (e: unknown) => e instanceof OnnxError && /web profile \(opset 13\) cannot write per-group weights \(_7_Gemm, _9_Gemm\)/.test(e.message));
  assert.throws(() => exportOnnx(im, { opset: 13 }), (e: unknown) => e instanceof OnnxError && /need opset 21/.test(e.message));

  const runner = await openOnnx(exported.bytes, im.graph.inputShape);
  if ('skipped' in runner) {
    t.skip(`onnxruntime-node: ${runner.skipped}`);
    return;
  }
  try {
    const n = testSet.length;
    const ort = await runner.run(batch.data as Float32Array, n);
    const mine = im.run(batch);
    let same = 0;
    let maxDiff = 0;
    let maxLogit = 0;
    for (let i = 0; i < n; i++) if (argmax(ort, i, 10) === argmax(mine, i, 10)) same++;
    for (let k = 0; k < mine.length; k++) {
      maxDiff = Math.max(maxDiff, Math.abs(ort[k]! - mine[k]!));
      maxLogit = Math.max(maxLogit, Math.abs(mine[k]!));
    }
    if (process.env.ONNX_GROUP_REPORT) console.log(`onnxruntime-node ${runner.version}: argmax agreement ${same}/${n}, max |Δlogit| ${maxDiff.toExponential(3)} (max |logit| ${maxLogit.toFixed(2)})`);
    assert.ok(same / n >= 0.995, `argmax agreement ${same}/${n}`);
    assert.ok(maxDiff < 0.05 * maxLogit, `max |Δlogit| ${maxDiff} vs max |logit| ${maxLogit}`);
  } finally {
    await runner.release();
  }
});
