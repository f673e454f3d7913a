import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../autograd/engine.ts';
import { AvgPool2d, Conv2d, Flatten, Linear, lenet5, mlp, cnn, ReLU, ReLU6, Sequential, Sigmoid, type Module } from '../nn/index.ts';
import { manualSeed, randn, Rng, Tensor } from '../tensor/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor, type Scheme } from '../quant/config/qconfig.ts';
import type { QConfig } from '../quant/config/qconfig.ts';
import { compareWithFakeQuant, convert, IntModel, multiplierValue, quantizeMultiplier, requantizeScalar } from './index.ts';
import { loadIntModel, saveIntModel } from './io.ts';
import { IntGraphError } from './validate.ts';
import type { LayerNode } from './intmodel.ts';

/** Prepares `model` with `qconfig`, initialises the quantizers with a few train-mode forwards, then eval. */
function prepared<M extends Module>(model: M, qconfig: QConfig, seed = 0): M {
  manualSeed(seed);
  prepareQat(model, { default: qconfig });
  model.train();
  const forward = (x: Tensor): Tensor => (model as unknown as { forward(t: Tensor): Tensor }).forward(x);
  for (let i = 0; i < 3; i++) noGrad(() => forward(randn([8, 1, 28, 28])));
  model.eval();
  return model;
}

function scheme(s: Scheme, estimator?: string, options?: { signActivations?: boolean }): QConfig {
  return qconfigFor(s, (estimator ?? { w8a8: 'ste', w4a4: 'lsq', w2a2: 'lsq', w1a1: 'binary', ternary: 'ternary' }[s]) as never, options);
}

function assertAgrees(model: Module, im: IntModel, x: Tensor, label: string): void {
  const r = compareWithFakeQuant(model, im, x);
  assert.equal(r.argmaxAgreement, 1, `${label}: argmax agreement ${r.argmaxAgreement}`);
  assert.ok(r.maxLogitLsb <= 1, `${label}: logits ${r.maxLogitLsb} LSB apart`);
  for (const [layer, d] of Object.entries(r.layerMaxDiff)) assert.ok(d <= 1, `${label}: layer ${layer} input differs by ${d}`);
  for (const [layer, d] of Object.entries(r.layerLocalMaxDiff)) assert.ok(d <= 1, `${label}: layer ${layer} own error ${d}`);
  assert.equal(Object.keys(r.layerLocalMaxDiff).length, Object.keys(r.layerMaxDiff).length);
  assert.ok(Object.keys(r.layerMaxDiff).length > 0);
}

describe('requantization', () => {
  it('M0·2^−n reproduces the real ratio to < 2^−30 relative', () => {
    const rng = new Rng(3);
    for (let i = 0; i < 2000; i++) {
      const real = (rng.uniform() < 0.5 ? -1 : 1) * 2 ** (rng.uniform() * 40 - 30);
      const m = quantizeMultiplier(real);
      assert.ok(Math.abs(m.multiplier) >= 2 ** 30 && Math.abs(m.multiplier) < 2 ** 31, `M0 ${m.multiplier}`);
      assert.ok(Math.abs(multiplierValue(m) - real) / Math.abs(real) < 2 ** -30, `ratio ${real}`);
    }
    assert.deepEqual(quantizeMultiplier(0), { multiplier: 0, shift: 0 });
    assert.equal(multiplierValue(quantizeMultiplier(0.5)), 0.5);
  });

  it('rounds the exact product once, half away from zero (vs BigInt)', () => {
    const rng = new Rng(4);
    const ref = (acc: number, m: number, n: number): number => {
      const p = BigInt(Math.abs(acc)) * BigInt(Math.abs(m));
      const q = n <= 0 ? p << BigInt(-n) : (p + (1n << BigInt(n - 1))) >> BigInt(n);
      return (acc < 0) !== (m < 0) && q !== 0n ? -Number(q) : Number(q);
    };
    for (let i = 0; i < 5000; i++) {
      const acc = Math.round((rng.uniform() * 2 - 1) * 2 ** (rng.uniform() * 37));
      const { multiplier, shift } = quantizeMultiplier((rng.uniform() < 0.5 ? -1 : 1) * 2 ** (rng.uniform() * 30 - 24));
      assert.equal(requantizeScalar(acc, multiplier, shift), ref(acc, multiplier, shift), `${acc} ${multiplier} ${shift}`);
    }
    // ties: 3·2^30 / 2^31 = 1.5 -> 2, −1.5 -> −2, 2.5 -> 3
    assert.equal(requantizeScalar(3, 2 ** 30, 31), 2);
    assert.equal(requantizeScalar(-3, 2 ** 30, 31), -2);
    assert.equal(requantizeScalar(5, 2 ** 30, 31), 3);
    assert.equal(requantizeScalar(7, 1 << 30, 60), 0);
  });
});

describe('convert', () => {
  const x = (): Tensor => { manualSeed(11); return randn([12, 1, 28, 28]); };

  for (const [name, qc] of [
    ['w8a8', scheme('w8a8')], ['w4a4', scheme('w4a4')], ['w2a2', scheme('w2a2')], ['ternary', scheme('ternary')],
  ] as const) {
    it(`LeNet-5 ${name}: every layer input within 1 LSB, same argmax, logits within 1 LSB`, () => {
      const model = prepared(lenet5(), qc);
      const im = convert(model, { sample: x() });
      assertAgrees(model, im, x(), `lenet5 ${name}`);
      const kinds = im.nodes.filter((n): n is LayerNode => n.op === 'linear' || n.op === 'conv2d').map((n) => n.weightFormat);
      if (name === 'w4a4') assert.deepEqual(kinds, ['int8', 'int4', 'int4', 'int4', 'int8']);
      if (name === 'ternary') assert.ok(kinds.includes('ternary'));
      // ReLU fused into the requantization clamps: no clamp nodes remain
      assert.ok(!im.nodes.some((n) => n.op === 'clamp'));
    });
  }

  it('binary MLP with BatchNorm1d (1-bit affine activations) and with sign activations (XNOR)', () => {
    for (const sign of [false, true]) {
      const model = prepared(mlp({ hidden: [64, 32], batchNorm: true }), scheme('w1a1', 'binary', { signActivations: sign }));
      const im = convert(model, { sample: x() });
      assertAgrees(model, im, x(), `mlp w1a1 sign=${sign}`);
      const layers = im.layers().filter((l) => l.op === 'linear');
      assert.ok(layers.some((l) => l.bits.startsWith('w1')), JSON.stringify(layers));
      if (sign) assert.ok(layers.some((l) => l.bits.includes('xnor')), JSON.stringify(layers));
    }
  });

  it('CNN with folded BatchNorm2d/1d, dropout, int4', () => {
    const model = prepared(cnn({ channels: [4, 8], hidden: 16 }), scheme('w4a4'));
    assertAgrees(model, convert(model, { inputShape: [1, 28, 28] }), x(), 'cnn w4a4');
  });

  it('average pooling and ReLU6 run on integers (inputs within 1 LSB)', () => {
    const model = prepared(new Sequential(new Conv2d(1, 4, 3, { padding: 1 }), new ReLU6(), new AvgPool2d(2), new Conv2d(4, 4, 3), new ReLU(), new Flatten(), new Linear(4 * 12 * 12, 10)), scheme('w8a8'));
    const im = convert(model, { inputShape: [1, 28, 28] });
    const r = compareWithFakeQuant(model, im, x());
    // pooling averages values with 8 extra fractional bits and rounds once, like the float model
    for (const d of Object.values(r.layerMaxDiff)) assert.ok(d <= 1, JSON.stringify(r));
    for (const d of Object.values(r.layerLocalMaxDiff)) assert.ok(d <= 1, JSON.stringify(r));
    assert.ok(r.layerMismatch['3']! < 0.01, JSON.stringify(r));
    assert.ok(r.argmaxAgreement >= 0.9, JSON.stringify(r));
  });

  it('refuses unsupported modules and codebook weights, naming them', () => {
    const model = prepared(new Sequential(new Flatten(), new Linear(784, 16), new Sigmoid(), new Linear(16, 10)), scheme('w8a8'));
    assert.throws(() => convert(model, { inputShape: [1, 28, 28] }), /'2' \(Sigmoid\) is not supported/);
    const lq = prepared(new Sequential(new Flatten(), new Linear(784, 16), new ReLU(), new Linear(16, 16), new ReLU(), new Linear(16, 10)), scheme('w4a4', 'lqnet'));
    assert.throws(() => convert(lq, { inputShape: [1, 28, 28] }), /codebook/);
    assert.throws(() => convert(new Sequential(new Flatten(), new Linear(784, 10)), { inputShape: [1, 28, 28] }), /not supported|float|no quantized/);
  });
});

describe('IntModel', () => {
  it('packing round-trips: stored weights unpack to the fake-quant integers', () => {
    for (const s of ['w8a8', 'w4a4', 'w2a2', 'ternary'] as const) {
      const model = prepared(lenet5(), scheme(s));
      const im = convert(model, { inputShape: [1, 28, 28] });
      for (const node of im.nodes) {
        if (node.op !== 'conv2d' && node.op !== 'linear') continue;
        const layer = (model as unknown as Record<string, { exportLayer(): { weightFakeQuant: Tensor; weightQuant: unknown } }>)[node.name]!;
        const ex = layer.exportLayer();
        const w = im.weightValues(node);
        const wfq = ex.weightFakeQuant.data;
        const O = node.outFeatures;
        const K = wfq.length / O;
        for (let i = 0; i < wfq.length; i++) {
          const c = Math.floor(i / K);
          const q = ex.weightQuant as { type: string; qparams?: { scale: Float32Array }; alpha?: Float32Array };
          const sc = q.type === 'affine' ? q.qparams!.scale[q.qparams!.scale.length === 1 ? 0 : c]! : q.alpha![q.alpha!.length === 1 ? 0 : c]!;
          assert.ok(Math.abs(w[i]! * sc - wfq[i]!) <= 1e-6 * Math.abs(wfq[i]!) + 1e-12, `${s} ${node.name}[${i}]: ${w[i]}·${sc} vs ${wfq[i]}`);
        }
      }
    }
  });

  it('save/load (.lowbit) and JSON round-trips give identical logits', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-runtime-'));
    try {
      for (const [model, qc] of [[lenet5(), scheme('w4a4')], [mlp({ hidden: [32], batchNorm: true }), scheme('w1a1', 'binary', { signActivations: true })]] as const) {
        const p = prepared(model as Module, qc);
        const im = convert(p, { inputShape: [1, 28, 28], metadata: { note: 'test' } });
        manualSeed(5);
        const input = randn([3, 1, 28, 28]);
        const a = im.run(input);
        const path = join(dir, 'm.lowbit');
        saveIntModel(path, im);
        const loaded = loadIntModel(path);
        assert.deepEqual(loaded.run(input), a);
        assert.deepEqual(loaded.graph.metadata, { note: 'test' });
        assert.deepEqual(loaded.layers(), im.layers());
        assert.deepEqual(IntModel.fromJSON(JSON.parse(JSON.stringify(im))).run(input), a);
        // the plain int32 loops and the GEMM kernels give identical results
        im.useKernels = false;
        assert.deepEqual(im.run(input), a);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('run() checks its input size, and a Tensor\'s shape (not only its element count)', () => {
    const im = convert(prepared(lenet5(), scheme('w8a8')), { inputShape: [1, 28, 28] });
    assert.throws(() => im.run(new Float32Array(100), 1), /not 1 samples/);
    // Same element count as 2 samples of [1, 28, 28], other layouts: refused.
    for (const shape of [[2, 28, 28, 1], [1, 2, 28, 28], [2, 784], [4, 1, 14, 28]]) {
      assert.throws(() => im.run(new Tensor(new Float32Array(2 * 784), shape)), /IntModel\.run: input of shape \[.*\] is not \[/, shape.join('x'));
    }
    assert.throws(() => im.run(new Tensor(new Float32Array(2 * 784), [2, 1, 28, 28]), 3), /is not \[3, 1, 28, 28\]/);
    assert.equal(im.run(new Tensor(new Float32Array(2 * 784), [2, 1, 28, 28])).length, 20);
  });

  it('refuses a malformed graph before running it (geometry, sizes, tensors, ranges), and oversized batches', () => {
    const im = convert(prepared(lenet5(), scheme('w4a4')), { inputShape: [1, 28, 28] });
    // LeNet-5's largest activation is conv1's output, 6·28·28 (padding 2).
    assert.equal(im.size.maxElements, 6 * 28 * 28);
    assert.equal(im.size.macs, 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 84 * 120 + 10 * 84);
    const json = JSON.stringify(im);
    const mutated = (edit: (g: { inputShape: number[]; nodes: Record<string, any>[] }, t: Record<string, { shape: number[] }>) => void): IntModel => {
      const copy = JSON.parse(json);
      edit(copy.graph, copy.tensors);
      return IntModel.fromJSON(copy);
    };
    const conv1 = (g: { nodes: Record<string, any>[] }) => g.nodes.find((n) => n.name === 'conv1')!;
    const fc1 = (g: { nodes: Record<string, any>[] }) => g.nodes.find((n) => n.name === 'fc1')!;
    const cases: [string, Parameters<typeof mutated>[0], RegExp][] = [
      ['huge padding', (g) => { conv1(g).conv.padding = [100000, 100000]; }, /conv2d 'conv1': padding must be two integers in \[0, 4096\]/],
      ['padding that blows up the activation', (g) => { conv1(g).conv.padding = [1500, 1500]; }, /conv2d 'conv1': activation \[6, 3024, 3024\] exceeds/],
      ['zero stride', (g) => { conv1(g).conv.stride = [0, 1]; }, /stride must be two integers in \[1, 4096\]/],
      ['fractional dilation', (g) => { conv1(g).conv.dilation = [1.5, 1]; }, /dilation must be/],
      ['kernel larger than the padded input', (g) => { conv1(g).conv.kernelSize = [40, 5]; }, /produces an empty activation/],
      ['channels that do not match the input', (g) => { conv1(g).conv.inChannels = 3; conv1(g).inFeatures = 3; }, /expects \[3, H, W\] per sample/],
      ['inputShape too large', (g) => { g.inputShape = [1, 60000, 60000]; }, /inputShape: activation \[1, 60000, 60000\] exceeds/],
      ['inputShape of rank 4', (g) => { g.inputShape = [1, 1, 28, 28]; }, /inputShape: must be 1 to 3 positive integers/],
      ['weightBits 64', (g) => { conv1(g).weightBits = 64; }, /weightBits 64 must be an integer in \[1, 8\]/],
      ['biasShift 1000', (g) => { conv1(g).output.biasShift = 1000; }, /biasShift 1000 must be an integer in \[0, 31\]/],
      ['a missing tensor', (g) => { conv1(g).output.multiplier = 'nowhere'; }, /missing tensor 'nowhere'/],
      ['a weight tensor of the wrong size', (_g, t) => { t['fc1.weight']!.shape = [120, 399]; }, /tensor 'fc1.weight' has shape \[120, 399\], expected 48000 elements/],
      ['a linear layer fed the wrong size', (g) => { fc1(g).inFeatures = 401; }, /linear 'fc1': expects 401 features per sample, gets \[400\]/],
      ['flatten over the batch dimension', (g) => { g.nodes.find((n) => n.op === 'flatten')!.startDim = 0; }, /flatten.*must lie within the sample dims/],
      ['zero input scale', (g) => { g.nodes[0]!.input.scale = 0; }, /input scale 0 must be a finite number > 0/],
      ['an unknown op', (g) => { g.nodes[2]!.op = 'softmax'; }, /unknown node op 'softmax'/],
      ['pool padding over half the window', (g) => { g.nodes.find((n) => n.op === 'maxpool2d' || n.op === 'avgpool2d')!.padding = [2, 2]; }, /padding \[2, 2\] exceeds half the window/],
      ['a pool zero point that is not an integer', (g) => { g.nodes.find((n) => n.op === 'maxpool2d' || n.op === 'avgpool2d')!.zeroPoint = null; }, /pool2d '.*': zero point null is not an int32/],
    ];
    for (const [what, edit, message] of cases) assert.throws(() => mutated(edit), (e: unknown) => e instanceof IntGraphError && message.test(e.message), what);
    // The unmutated JSON still builds, and a batch whose activations would pass 2^28 elements is refused.
    const ok = mutated(() => {});
    assert.throws(() => ok.run(new Float32Array(60_000 * 784), 60_000), /run fewer samples at a time/);
  });
});
