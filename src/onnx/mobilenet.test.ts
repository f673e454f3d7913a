/**
 * ONNX round trips of a MobileNetV2-style net (depthwise convs, ReLU6, linear bottlenecks,
 * residual adds): the float32 export runs in onnxruntime-node within 1e-4 of lowbit's forward and
 * imports back to the same logits; the QDQ export of its IntModel gives onnxruntime the IntModel's
 * argmax.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { mobilenet } from '../nn/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor } from '../quant/config/qconfig.ts';
import { calibrate } from '../quant/ptq/calibrate.ts';
import { convert } from '../runtime/index.ts';
import { manualSeed, randn, type Tensor } from '../tensor/index.ts';
import { exportOnnx } from './export.ts';
import { importOnnx } from './import.ts';
import { loadOnnxRuntime } from './verify.ts';
import { argmaxAgreement, maxAbsDiff, runOrt } from './ort-testing.ts';

const ortLoad = await loadOnnxRuntime();
const noOrt = ortLoad.ok ? false : `skipped: ${ortLoad.reason}`;

function floatModel(seed: number, x: Tensor): ReturnType<typeof mobilenet> {
  manualSeed(seed);
  const model = mobilenet({ widthMultiplier: 0.25, expandRatio: 2 });
  model.train();
  noGrad(() => model.forward(x)); // BatchNorm running statistics
  model.eval();
  return model;
}

describe('ONNX export and import of MobileNet', () => {
  it('float32: grouped Conv (group = channels), Clip(0, 6) for ReLU6, 3 Adds; onnxruntime within 1e-4; the import gives the same logits', { skip: noOrt }, async () => {
    const x = randn([8, 1, 28, 28]);
    const model = floatModel(11, x);
    const result = exportOnnx(model, { inputShape: [1, 28, 28] });
    assert.equal(result.kind, 'fp32');
    const nodes = result.model.graph!.node!;
    assert.equal(nodes.filter((n) => n.opType === 'Add').length, 3);
    const clips = nodes.filter((n) => n.opType === 'Clip');
    assert.equal(clips.length, 1 + 1 + 5 * 2 + 1); // stem, block 0 depthwise, 5 × (expand, depthwise), head
    const grouped = nodes.filter((n) => n.opType === 'Conv' && n.attribute!.some((a) => a.name === 'group' && Number(a.i) > 1));
    assert.equal(grouped.length, 6);
    const ref = noGrad(() => model.forward(x)).data;
    const y = await runOrt(result.bytes, x, 'all');
    assert.ok(maxAbsDiff(y, ref) <= 1e-4, `onnxruntime max |diff| ${maxAbsDiff(y, ref)}`);
    const back = importOnnx(result.bytes);
    back.eval();
    const z = noGrad(() => back.forward(x)).data;
    assert.ok(maxAbsDiff(z, ref) <= 1e-5, `import max |diff| ${maxAbsDiff(z, ref)}`);
  });

  for (const kind of ['qat-w8a8', 'qat-w4a4', 'ptq-w8a8'] as const) {
    it(`QDQ export of the ${kind} IntModel: onnxruntime-node gives its argmax`, { skip: noOrt }, async () => {
      const x = randn([32, 1, 28, 28]);
      const model = floatModel(12, x);
      if (kind === 'ptq-w8a8') {
        calibrate(model, [{ x }], { scheme: 'w8a8' });
      } else {
        prepareQat(model, { default: qconfigFor(kind === 'qat-w8a8' ? 'w8a8' : 'w4a4', kind === 'qat-w8a8' ? 'ste' : 'lsq') });
        model.train();
        for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
        model.eval();
      }
      const im = convert(model, { sample: x });
      const ref = im.run(x.data as Float32Array, 32);
      const exact = exportOnnx(im, { bias: 'intmodel' });
      assert.equal(exact.kind, 'qdq');
      assert.equal(argmaxAgreement(await runOrt(exact.bytes, x, 'disabled'), ref, 10), 1);
      assert.equal(argmaxAgreement(await runOrt(exact.bytes, x, 'all'), ref, 10), 1, 'optimized graph');
      assert.ok(argmaxAgreement(await runOrt(exportOnnx(im).bytes, x, 'all'), ref, 10) >= 0.9, 'standard bias');
    });
  }
});
