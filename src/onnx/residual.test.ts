/**
 * QDQ export of a residual IntModel (graph version 2): each integer add becomes
 * DequantizeLinear ×2 → Add → (Relu) → QuantizeLinear, and onnxruntime-node gives the IntModel's
 * logits and argmax.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { Add, Linear, Module, resnet8 } from '../nn/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor } from '../quant/config/qconfig.ts';
import { convert, type IntModel } from '../runtime/index.ts';
import { manualSeed, randn, type Tensor } from '../tensor/index.ts';
import { OnnxError } from './proto.ts';
import { exportOnnx } from './export.ts';
import { loadOnnxRuntime } from './verify.ts';
import { argmaxAgreement, runOrt } from './ort-testing.ts';

const ortLoad = await loadOnnxRuntime();
const noOrt = ortLoad.ok ? false : `skipped: ${ortLoad.reason}`;

function residualIntModel(scheme: 'w8a8' | 'w4a4', seed: number): { im: IntModel; x: Tensor } {
  manualSeed(seed);
  const model = resnet8({ channels: [4, 8, 8] });
  const x = randn([32, 1, 28, 28]);
  prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
  model.eval();
  return { im: convert(model, { sample: x }), x };
}

describe('ONNX QDQ export of residual networks', () => {
  it('each add is DequantizeLinear ×2 → Add → QuantizeLinear (the last one stays float before the average pooling)', () => {
    const { im } = residualIntModel('w8a8', 1);
    const { model } = exportOnnx(im);
    const nodes = model.graph!.node!;
    const producer = new Map(nodes.map((n) => [n.output![0]!, n]));
    const adds = nodes.filter((n) => n.opType === 'Add');
    assert.equal(adds.length, 3);
    for (const a of adds) assert.deepEqual(a.input!.map((i) => producer.get(i)?.opType), ['DequantizeLinear', 'DequantizeLinear']);
    const consumersOf = (name: string): string[] => nodes.filter((n) => n.input!.includes(name)).map((n) => n.opType!);
    /** The ops reading `name`, through a Relu (the block's ReLU; QuantizeLinear saturating at a zero point of 0 needs none). */
    const after = (name: string): string[] => {
      const direct = consumersOf(name);
      const relu = nodes.find((n) => n.opType === 'Relu' && n.input![0] === name);
      return direct.length === 1 && relu ? consumersOf(relu.output![0]!) : direct;
    };
    for (const a of adds.slice(0, 2)) assert.deepEqual(after(a.output![0]!), ['QuantizeLinear']);
    // The last add feeds the global average pooling in float (the IntModel keeps 8 extra fractional bits there).
    assert.deepEqual(after(adds[2]!.output![0]!), ['GlobalAveragePool']);
  });

  it('float32 export of a float ResNet-8: Add per block, onnxruntime within 1e-4 of lowbit\'s forward', { skip: noOrt }, async () => {
    manualSeed(4);
    const model = resnet8({ channels: [4, 8, 8] });
    const x = randn([8, 1, 28, 28]);
    model.train();
    noGrad(() => model.forward(x)); // BatchNorm running statistics
    model.eval();
    const result = exportOnnx(model, { inputShape: [1, 28, 28] });
    assert.equal(result.kind, 'fp32');
    const ops = result.model.graph!.node!.map((n) => n.opType);
    assert.equal(ops.filter((o) => o === 'Add').length, 3);
    const ref = noGrad(() => model.forward(x)).data as Float32Array;
    const y = await runOrt(result.bytes, x, 'all');
    let diff = 0;
    for (let i = 0; i < y.length; i++) diff = Math.max(diff, Math.abs(y[i]! - ref[i]!));
    assert.ok(diff <= 1e-4, `max |diff| ${diff}`);
  });

  it('the float32 export refuses a residual sum written as a tensor op', () => {
    class TensorOpResidual extends Module {
      readonly fc1 = this.registerModule('fc1', new Linear(6, 6));
      readonly add = this.registerModule('add', new Add());
      readonly fc2 = this.registerModule('fc2', new Linear(6, 3));
      forward(t: Tensor): Tensor {
        const h = this.fc1.forward(t);
        return this.fc2.forward(this.add.forward(h, t).add(t));
      }
    }
    assert.throws(() => exportOnnx(new TensorOpResidual(), { inputShape: [6] }), (e: unknown) => e instanceof OnnxError && e.code === 'unsupported-op' && /outside its modules between 'add' and 'fc2'/.test(e.message));
  });

  for (const scheme of ['w8a8', 'w4a4'] as const) {
    it(`${scheme}: onnxruntime-node gives the IntModel's argmax; with its exact bias nearly every logit equal`, { skip: noOrt }, async () => {
      const { im, x } = residualIntModel(scheme, 2);
      const ref = im.run(x);
      const exact = exportOnnx(im, { bias: 'intmodel' });
      const y = await runOrt(exact.bytes, x, 'disabled');
      let same = 0;
      for (let i = 0; i < y.length; i++) if (Math.abs(y[i]! - ref[i]!) <= 1e-5 * Math.max(1, Math.abs(ref[i]!))) same++;
      assert.ok(same / y.length >= 0.9, `${scheme}: ${same} of ${y.length} logits equal`);
      assert.equal(argmaxAgreement(y, ref, 10), 1);
      assert.equal(argmaxAgreement(await runOrt(exact.bytes, x, 'all'), ref, 10), 1, 'optimized graph');
      assert.ok(argmaxAgreement(await runOrt(exportOnnx(im).bytes, x, 'all'), ref, 10) >= 0.95, 'standard bias');
    });
  }
});
