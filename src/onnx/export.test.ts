import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../autograd/engine.ts';
import {
  AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, cnn, Conv2d, Dropout, Flatten, GELU, Identity, LayerNorm, LeakyReLU, lenet5, Linear,
  MaxPool2d, Module, mlp, ReLU, ReLU6, Sequential, Sigmoid, Tanh, type TensorModule,
} from '../nn/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor, type QConfig, type Scheme } from '../quant/config/qconfig.ts';
import { convert, multiplierValue, type IntModel, type LayerNode } from '../runtime/index.ts';
import { saveIntModel } from '../runtime/io.ts';
import { add, manualSeed, randn, Rng, Tensor } from '../tensor/index.ts';
import { saveCheckpoint } from '../train/checkpoint.ts';
import { main } from '../cli/main.ts';
import type { CommandIO } from '../cli/command.ts';
import { buildOnnxModel, exportOnnx } from './export.ts';
import { decodeModel, OnnxDataType, tensorValue, type OnnxModel, type OnnxTensor } from './proto.ts';
import { loadOnnxRuntime, verifyOnnx } from './verify.ts';
import { argmaxAgreement, maxAbsDiff, runOrt } from './ort-testing.ts';

const ortLoad = await loadOnnxRuntime();
const noOrt = ortLoad.ok ? false : `skipped: ${ortLoad.reason}`;

function forward(m: Module, x: Tensor): Float32Array {
  const y = noGrad(() => (m as TensorModule).forward(x));
  return y.data as Float32Array;
}

/** Running statistics and affine parameters away from their defaults, so BN does something. */
function randomizeBatchNorms(model: Module, seed: number, negativeGammas = false): void {
  const rng = new Rng(seed);
  for (const m of model.modules()) {
    if (!(m instanceof BatchNorm1d || m instanceof BatchNorm2d)) continue;
    for (let c = 0; c < m.numFeatures; c++) {
      m.runningMean!.data[c] = rng.uniform() * 0.4 - 0.2;
      m.runningVar!.data[c] = 0.5 + rng.uniform();
      m.weight!.data[c] = (negativeGammas && c % 3 === 1 ? -1 : 1) * (0.5 + rng.uniform());
      m.bias!.data[c] = rng.uniform() * 0.2 - 0.1;
    }
  }
}

/** Prepares `model` with `qconfig`, initialises its quantizers on a few random batches, converts. */
function intModelOf(model: Module, qconfig: QConfig, inputShape: number[], seed = 0): IntModel {
  manualSeed(seed);
  prepareQat(model, { default: qconfig });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => (model as TensorModule).forward(randn([8, ...inputShape])));
  model.eval();
  return convert(model, { inputShape });
}

function scheme(s: Scheme, estimator: string): QConfig {
  return qconfigFor(s, estimator as never);
}

function initializer(model: OnnxModel, name: string): OnnxTensor {
  const t = model.graph!.initializer!.find((i) => i.name === name);
  assert.ok(t, `initializer ${name}`);
  return t;
}

function opTypes(model: OnnxModel): string[] {
  return model.graph!.node!.map((n) => n.opType!);
}

describe('ONNX export: float32', () => {
  it('LeNet-5 and the Fashion-MNIST CNN run in onnxruntime-node within 1e-5 of lowbit', { skip: noOrt }, async () => {
    for (const [name, model] of [['lenet5', lenet5()], ['cnn', cnn()]] as const) {
      manualSeed(1);
      randomizeBatchNorms(model, 2);
      model.eval();
      const { bytes, kind, opset } = exportOnnx(model, { inputShape: [1, 28, 28] });
      assert.equal(kind, 'fp32');
      assert.equal(opset, 13);
      const x = randn([6, 1, 28, 28]);
      const d = maxAbsDiff(await runOrt(bytes, x), forward(model, x));
      assert.ok(d <= 1e-5, `${name}: max |diff| ${d}`);
    }
  });

  it('every supported layer (BN, grouped/dilated conv, pools, activations, GELU, rank-3 Linear, Reshape) round-trips', { skip: noOrt }, async () => {
    manualSeed(3);
    const model = new Sequential(
      new Conv2d(2, 4, 3, { stride: 2, padding: 1 }), new BatchNorm2d(4), new LeakyReLU(0.1),
      new Conv2d(4, 4, 3, { padding: 2, dilation: 2, groups: 2 }), new ReLU6(), new AvgPool2d(3, { stride: 1, padding: 1 }),
      new MaxPool2d(3, { stride: 1, padding: 1 }), new Sigmoid(), new AdaptiveAvgPool2d(2), new Flatten(2), new Linear(4, 5), new Tanh(), new Flatten(),
      new Linear(20, 8), new BatchNorm1d(8), new GELU(), new Dropout(0.5), new Identity(), new Linear(8, 6), new GELU({ approximate: 'tanh' }), new ReLU(),
    );
    randomizeBatchNorms(model, 4);
    model.eval();
    const result = exportOnnx(model, { inputShape: [2, 12, 12] });
    const ops = new Set(opTypes(result.model));
    for (const op of ['Conv', 'BatchNormalization', 'LeakyRelu', 'Clip', 'AveragePool', 'MaxPool', 'Sigmoid', 'Reshape', 'MatMul', 'Tanh', 'Flatten', 'Gemm', 'Erf', 'Relu']) {
      assert.ok(ops.has(op), `uses ${op}`);
    }
    const x = randn([5, 2, 12, 12]);
    const d = maxAbsDiff(await runOrt(result.bytes, x), forward(model, x));
    assert.ok(d <= 1e-5, `max |diff| ${d}`);
    // Opset 20 writes the Gelu op instead of the Erf composition.
    const gelu = exportOnnx(new Sequential(new Linear(3, 3), new GELU()), { inputShape: [3], opset: 20 });
    assert.ok(opTypes(gelu.model).includes('Gelu'));
    const web = exportOnnx(new Sequential(new Linear(3, 3), new GELU()), { inputShape: [3], profile: 'web' });
    assert.ok(!opTypes(web.model).includes('Gelu') && opTypes(web.model).includes('Erf'));
  });

  it('refuses unsupported modules, non-sequential forwards and bad options with clear errors', () => {
    assert.throws(() => buildOnnxModel(new Sequential(new Linear(4, 4), new LayerNorm(4)), { inputShape: [4] }), /module '1' \(LayerNorm\) is not supported/);
    assert.throws(() => buildOnnxModel(new Residual(), { inputShape: [4] }), /Residual\.forward is not the chain of its leaf modules/);
    assert.throws(() => buildOnnxModel(lenet5()), /pass inputShape/);
    assert.throws(() => buildOnnxModel(lenet5(), { inputShape: [1, 28, 28], opset: 12 }), /opset 12 is not supported/);
    assert.throws(() => buildOnnxModel(lenet5(), { inputShape: [1, 28, 28], profile: 'web', opset: 21 }), /web profile writes opset 13/);
    assert.throws(() => buildOnnxModel(lenet5(), { inputShape: [1, 28, 28], profile: 'phone' as 'web' }), /unknown profile 'phone'/);
    assert.throws(() => buildOnnxModel(lenet5(), { inputShape: [0, 28] }), /inputShape must be positive integers/);
  });
});

/** y = x + fc(x): not a chain of its leaves. */
class Residual extends Module {
  readonly fc = this.registerModule('fc', new Linear(4, 4));
  forward(x: Tensor): Tensor {
    return add(x, this.fc.forward(x));
  }
}

describe('ONNX export: QDQ from an IntModel', () => {
  it('LeNet-5 w8a8: int8 weights equal the IntModel integers, scales reproduce its multipliers, uint8 activations', () => {
    const im = intModelOf(lenet5(), scheme('w8a8', 'ste'), [1, 28, 28]);
    const { model, opset, weightTypes, kind } = buildOnnxModel(im);
    assert.equal(kind, 'qdq');
    assert.equal(opset, 13);
    assert.equal(model.opsetImport![0]!.version, 13);
    assert.deepEqual(Object.values(weightTypes), ['int8', 'int8', 'int8', 'int8', 'int8']);
    const layers = im.nodes.filter((n): n is LayerNode => n.op === 'conv2d' || n.op === 'linear');
    for (const L of layers) {
      const wq = initializer(model, `${L.name}.weight_quantized`);
      assert.equal(wq.dataType, OnnxDataType.INT8);
      const w = tensorValue(wq).data;
      const ints = im.weightValues(L);
      const O = L.outFeatures;
      const K = ints.length / O;
      const scale = tensorValue(initializer(model, `${L.name}.weight_scale`)).data;
      assert.equal(scale.length, O);
      const inScale = L.input.mode === 'affine' ? L.input.scale : NaN;
      for (let c = 0; c < O; c++) {
        // A = s_in·s_w: from the requantization multiplier (M0·2^−(n−k)·s_out) or the dequantization scale.
        let A: number;
        const out = L.output;
        if (out.mode === 'requantize') {
          const M = im.tensor(out.multiplier).data[c]!;
          const n = im.tensor(out.shift).data[c]!;
          A = multiplierValue({ multiplier: M, shift: n - out.biasShift }) * out.scale;
        } else if (out.mode === 'dequantize') A = im.tensor(out.scale).data[c]!;
        else throw new Error('unexpected output mode');
        const sign = A < 0 ? -1 : 1;
        assert.ok(Math.abs(scale[c]! * inScale - Math.abs(A)) <= 1e-6 * Math.abs(A), `${L.name}[${c}] scale`);
        for (let k = 0; k < K; k++) assert.equal(w[c * K + k], sign * ints[c * K + k]! || 0);
      }
      const bias = initializer(model, `${L.name}.bias_quantized`);
      assert.equal(bias.dataType, OnnxDataType.INT32);
    }
    // Activations: int8 for the (signed) normalised image, uint8 after every ReLU layer.
    const zeroPointType = (i: number): number | undefined => {
      const q = model.graph!.node!.filter((n) => n.opType === 'QuantizeLinear')[i]!;
      return initializer(model, q.input![2]!).dataType;
    };
    const first = layers[0]!.input;
    assert.equal(zeroPointType(0), first.mode === 'affine' && first.qmin < 0 ? OnnxDataType.INT8 : OnnxDataType.UINT8);
    assert.equal(zeroPointType(1), OnnxDataType.UINT8);
    // One QuantizeLinear for the input, one per requantizing layer, one after each max pool.
    assert.equal(opTypes(model).filter((o) => o === 'QuantizeLinear').length, 1 + (layers.length - 1) + 2);
  });

  it('runs in onnxruntime-node with the IntModel\'s argmax (int8 and int4 weights, both bias scales)', { skip: noOrt }, async () => {
    manualSeed(5);
    const x = randn([48, 1, 28, 28]);
    for (const [label, qc, expectInt4] of [['w8a8', scheme('w8a8', 'ste'), false], ['w4a4', scheme('w4a4', 'lsq'), true]] as const) {
      const im = intModelOf(lenet5(), qc, [1, 28, 28], 1);
      const ref = im.run(x);
      const exact = exportOnnx(im, { bias: 'intmodel' });
      assert.equal(exact.opset, expectInt4 ? 21 : 13);
      assert.equal(Object.values(exact.weightTypes).includes('int4'), expectInt4);
      if (expectInt4) assert.equal(initializer(exact.model, 'fc1.weight_quantized').dataType, OnnxDataType.INT4);
      // With the IntModel's bias the float graph (no graph rewrites) follows the integer model.
      const y = await runOrt(exact.bytes, x, 'disabled');
      let same = 0;
      for (let i = 0; i < y.length; i++) if (Math.abs(y[i]! - ref[i]!) <= 1e-5) same++;
      // Equal up to requantization ties that the float32 accumulation lands on the other side of.
      assert.ok(same / y.length >= 0.9, `${label}: intmodel bias, float graph: ${same} of ${y.length} logits equal`);
      assert.equal(argmaxAgreement(await runOrt(exact.bytes, x), ref, 10), 1, `${label}: intmodel bias`);
      // The textbook bias (s_in·s_w, fused to integer kernels) rounds the bias: nearly always the same argmax.
      const standard = exportOnnx(im);
      assert.ok(argmaxAgreement(await runOrt(standard.bytes, x), ref, 10) >= 0.95, `${label}: standard bias`);
      // int8 containers for the same 4-bit values: identical results.
      if (expectInt4) {
        const int8 = exportOnnx(im, { bias: 'intmodel', weightBits: 8 });
        assert.equal(int8.opset, 13);
        assert.ok(maxAbsDiff(await runOrt(int8.bytes, x, 'disabled'), ref) <= 1e-4);
      }
    }
  });

  it('default bias: the IntModel\'s exact bias for int4-weight layers, the standard bias for int8-weight layers', () => {
    const im = intModelOf(lenet5(), scheme('w4a4', 'lsq'), [1, 28, 28], 2);
    const [byDefault, standard, exact] = [exportOnnx(im), exportOnnx(im, { bias: 'standard' }), exportOnnx(im, { bias: 'intmodel' })];
    const kinds = new Set(Object.values(byDefault.weightTypes));
    assert.ok(kinds.has('int4') && kinds.has('int8'), `both containers in the default export: ${[...kinds].join(', ')}`);
    for (const [layer, type] of Object.entries(byDefault.weightTypes)) {
      const expected = type === 'int4' ? exact : standard;
      const other = type === 'int4' ? standard : exact;
      for (const part of ['bias_quantized', 'bias_scale']) {
        const got = Array.from(tensorValue(initializer(byDefault.model, `${layer}.${part}`)).data);
        assert.deepEqual(got, Array.from(tensorValue(initializer(expected.model, `${layer}.${part}`)).data), `${layer} (${type}) ${part}`);
        if (part === 'bias_scale') assert.notDeepEqual(got, Array.from(tensorValue(initializer(other.model, `${layer}.${part}`)).data), `${layer}: the two biases differ`);
      }
    }
  });

  it('folded BatchNorm with negative γ (negated channels keep every scale positive), CNN w8a8', { skip: noOrt }, async () => {
    const model = cnn({ channels: [4, 8], hidden: 16 });
    randomizeBatchNorms(model, 6, true);
    const im = intModelOf(model, scheme('w8a8', 'ste'), [1, 28, 28], 2);
    const result = exportOnnx(im, { bias: 'intmodel' });
    for (const t of result.model.graph!.initializer!) {
      if (t.name!.endsWith('.weight_scale')) assert.ok(tensorValue(t).data.every((v) => v > 0), `${t.name} > 0`);
    }
    manualSeed(7);
    const x = randn([24, 1, 28, 28]);
    const ref = im.run(x);
    assert.ok(maxAbsDiff(await runOrt(result.bytes, x, 'disabled'), ref) <= 1e-4);
  });

  it('average pooling, 1-bit activations with binary weights, web profile', { skip: noOrt }, async () => {
    manualSeed(8);
    const pooled = new Sequential(new Conv2d(1, 4, 3), new ReLU(), new AvgPool2d(2), new Conv2d(4, 4, 3), new ReLU(), new AdaptiveAvgPool2d(1), new Flatten(), new Linear(4, 3));
    const im = intModelOf(pooled, scheme('w8a8', 'ste'), [1, 10, 10], 3);
    const x = randn([32, 1, 10, 10]);
    const ref = im.run(x);
    const r = exportOnnx(im, { bias: 'intmodel' });
    assert.ok(opTypes(r.model).includes('AveragePool') && opTypes(r.model).includes('GlobalAveragePool'));
    // The IntModel rounds the pooled layer output to s/256 first: equal up to rare rounding ties.
    assert.ok(argmaxAgreement(await runOrt(r.bytes, x), ref, 3) >= 0.9);
    // W1A1 MLP: binary ±1 weights, activations {0, 1} (uint8 container clipped to [0, 1]).
    const binary = intModelOf(mlp({ inputSize: 16, hidden: [12, 12], numClasses: 4 }), scheme('w1a1', 'binary'), [16], 4);
    assert.ok(binary.nodes.some((n) => n.op === 'linear' && n.weightFormat === 'binary' && n.input.mode === 'affine' && n.input.qmax === 1));
    const xb = randn([32, 16]);
    const rb = exportOnnx(binary, { bias: 'intmodel' });
    // The 1-bit range is an integer Clip of the uint8 QuantizeLinear output to [0, 1].
    const clip = rb.model.graph!.node!.find((n) => n.opType === 'Clip')!;
    assert.equal(rb.model.graph!.node!.find((n) => n.output![0] === clip.input![0])!.opType, 'QuantizeLinear');
    const clipMax = initializer(rb.model, clip.input![2]!);
    assert.equal(clipMax.dataType, OnnxDataType.UINT8);
    assert.deepEqual(Array.from(tensorValue(clipMax).data), [1]);
    assert.ok(maxAbsDiff(await runOrt(rb.bytes, xb, 'disabled'), binary.run(xb)) <= 1e-4);
    // Web profile: opset 13 and int8 containers even for 4-bit weights.
    const w4 = intModelOf(lenet5(), scheme('w4a4', 'lsq'), [1, 28, 28], 5);
    const web = exportOnnx(w4, { profile: 'web' });
    assert.equal(web.opset, 13);
    assert.ok(Object.values(web.weightTypes).every((t) => t === 'int8'));
    assert.match(web.notes.join('\n'), /int8 containers/);
    assert.ok(!web.model.graph!.initializer!.some((t) => t.dataType === OnnxDataType.INT4 || t.dataType === OnnxDataType.INT64));
    assert.throws(() => buildOnnxModel(w4, { profile: 'web', weightBits: 4 }), /web profile does not write int4/);
    assert.throws(() => buildOnnxModel(im, { weightBits: 4 }), /do not fit int4/);
    const opset13 = buildOnnxModel(w4, { opset: 13 });
    assert.ok(Object.values(opset13.weightTypes).every((t) => t === 'int8'));
    assert.match(opset13.notes.join('\n'), /int4 needs opset 21/);
  });

  it('a prepared fake-quant Module exports as the QDQ graph of its converted IntModel', () => {
    const model = lenet5();
    const im = intModelOf(model, scheme('w8a8', 'ste'), [1, 28, 28], 9);
    const direct = exportOnnx(model, { inputShape: [1, 28, 28] });
    assert.equal(direct.kind, 'qdq');
    assert.deepEqual(direct.bytes, exportOnnx(im).bytes);
    assert.throws(() => buildOnnxModel(model), /pass inputShape .* fake-quant model/);
  });

  it('exports sign (binary) activations: each sign output as GreaterOrEqual → Where → int8 ±1 (src/onnx/bireal.test.ts runs them)', () => {
    const im = intModelOf(mlp({ inputSize: 8, hidden: [8, 8], numClasses: 2 }), qconfigFor('w1a1', 'binary' as never, { signActivations: true }), [8], 6);
    const signs = im.nodes.filter((n) => (n.op === 'linear' || n.op === 'conv2d') && n.output.mode === 'sign').length;
    assert.ok(signs >= 1);
    const ops = buildOnnxModel(im).model.graph!.node!.map((n) => n.opType);
    assert.equal(ops.filter((o) => o === 'GreaterOrEqual').length, signs);
    assert.equal(ops.filter((o) => o === 'Where').length, signs);
  });

  it('verifyOnnx reports max |diff| and argmax agreement against a reference, or skips', { skip: noOrt }, async () => {
    const model = new Sequential(new Linear(6, 3));
    const { bytes } = exportOnnx(model, { inputShape: [6] });
    manualSeed(9);
    const x = randn([10, 6]);
    const same = await verifyOnnx(bytes, (b, n) => forward(model, rows(b, n)), { data: x.data as Float32Array, shape: [6], count: 10 }, { batchSize: 4 });
    assert.equal(same.status, 'ok');
    if (same.status !== 'ok') return;
    assert.equal(same.samples, 10);
    assert.equal(same.outputs, 3);
    assert.ok(same.maxAbsDiff <= 1e-6);
    assert.equal(same.argmaxAgreement, 1);
    // A reference that negates the logits: the difference is 2·|y|, and the argmax agrees only where it does not move.
    const neg = await verifyOnnx(bytes, (b, n) => forward(model, rows(b, n)).map((v) => -v), { data: x.data as Float32Array, shape: [6], count: 10 });
    if (neg.status !== 'ok') throw new Error('expected ok');
    const y = forward(model, x);
    let expectMax = 0;
    for (const v of y) expectMax = Math.max(expectMax, 2 * Math.abs(v));
    assert.ok(Math.abs(neg.maxAbsDiff - expectMax) <= 1e-5);
    assert.ok(neg.argmaxAgreement < 1);
    await assert.rejects(verifyOnnx(bytes, (b) => b, { data: new Float32Array(5), shape: [6], count: 1 }), /not 1 samples/);
  });
});

function rows(b: Float32Array, n: number): Tensor {
  return new Tensor(b, [n, b.length / n]);
}

describe('lowbit export', () => {
  function capture(): { io: CommandIO; out: () => string; err: () => string } {
    let out = '';
    let err = '';
    const io: CommandIO = {
      stdout: { write: (s: string) => { out += s; return true; } } as unknown as CommandIO['stdout'],
      stderr: { write: (s: string) => { err += s; return true; } } as unknown as CommandIO['stderr'],
      print: (line = '') => { out += `${line}\n`; },
    };
    return { io, out: () => out, err: () => err };
  }

  it('exports a .lowbit file to QDQ ONNX and a float32 checkpoint, verifies them, and rejects bad arguments', { skip: noOrt }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-export-'));
    try {
      const im = intModelOf(lenet5(), scheme('w8a8', 'ste'), [1, 28, 28], 7);
      const lowbit = join(dir, 'tiny.lowbit');
      saveIntModel(lowbit, im);
      const c1 = capture();
      assert.equal(await main(['export', lowbit, '--verify', '--samples', '20'], c1.io), 0, c1.err());
      const onnx = join(dir, 'tiny.onnx');
      assert.ok(existsSync(onnx));
      const decoded = decodeModel(readFileSync(onnx));
      assert.ok(opTypes(decoded).includes('QuantizeLinear'));
      assert.match(c1.out(), /QDQ, weights int8 x5, opset 13/);
      assert.match(c1.out(), /verify: onnxruntime-node [\d.]+, 20 samples: argmax agreement \d+\.\d\d %/);

      manualSeed(3);
      const fp32 = lenet5();
      const ckDir = join(dir, 'run');
      mkdirSync(ckDir);
      saveCheckpoint(join(ckDir, 'checkpoint.safetensors'), { model: fp32.stateDict(), epoch: 1, config: { model: 'lenet5', dataset: 'mnist', quant: 'fp32' } });
      const c2 = capture();
      const web = join(dir, 'fp32.onnx');
      assert.equal(await main(['export', ckDir, '--out', web, '--profile', 'web', '--verify', '--samples', '8'], c2.io), 0, c2.err());
      assert.match(c2.out(), /float32, opset 13, web profile/);
      const m = /max \|diff\| ([\d.e+-]+)/.exec(c2.out());
      assert.ok(m && Number(m[1]) <= 1e-5, c2.out());

      const bad = async (args: string[], code: number, pattern: RegExp): Promise<void> => {
        const c = capture();
        assert.equal(await main(['export', ...args], c.io), code, args.join(' '));
        assert.match(c.err(), pattern);
      };
      await bad([join(dir, 'missing.lowbit')], 1, /'.*missing\.lowbit' does not exist/);
      await bad([lowbit, '--format', 'tflite'], 2, /--format/);
      await bad([lowbit, '--profile', 'web', '--weight-bits', '4'], 2, /writes no int4 tensors/);
      await bad([lowbit, '--weight-bits', '4', '--out', join(dir, 'x.onnx')], 1, /do not fit int4/);
      await bad([lowbit, '--opset', '22', '--out', join(dir, 'x.onnx')], 2, /'--opset' must be <= 21/);
      await bad([], 2, /give the model to export/);
      assert.ok(!existsSync(join(dir, 'x.onnx')));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
