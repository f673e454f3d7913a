/**
 * Conv1d in the integer runtime: a prepared Conv1d net converts to an IntModel whose conv2d nodes
 * carry `conv.conv1d` and take [N, C, L]. Checked against the float64 simulation of the fake-quant
 * model (every hidden integer equal, logits ≤ 1 LSB), across executors (native, TypeScript wasm /
 * double / reference: identical logits), through the .lowbit file (round trip and malformed
 * conv1d fields) and through ONNX QDQ export run by onnxruntime-node.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../autograd/engine.ts';
import { BatchNorm1d, Conv1d, Conv2d, Flatten, Linear, ReLU, Sequential } from '../nn/index.ts';
import { randn, Rng, Tensor } from '../tensor/index.ts';
import { prepareQat, quantizedLayers } from '../quant/qat/index.ts';
import { qconfigFor, type Estimator, type Scheme } from '../quant/config/qconfig.ts';
import { calibrate, calibrationReport } from '../quant/ptq/calibrate.ts';
import { decodeLowbit, encodeLowbit } from '../format/lowbit.ts';
import { loadAddon } from '../backend/native/load.ts';
import { exportOnnx } from '../onnx/export.ts';
import { verifyOnnx } from '../onnx/verify.ts';
import { convert, IntModel } from './index.ts';
import { intModelFromLowbit, intModelToLowbit, loadIntModel, saveIntModel } from './io.ts';
import { IntGraphError } from './validate.ts';
import type { IntGraph, LayerNode } from './intmodel.ts';

const addon = loadAddon();
const nativeSkip = addon?.intPlanCreate ? false : 'native addon without the IntModel executor';

/** Conv1d(+BN) → ReLU → strided, dilated, grouped Conv1d → ReLU → Flatten → Linear on [N, 4, 16]. */
function net(rng: Rng, withBn: boolean): Sequential {
  const layers = [
    new Conv1d(4, 8, 3, { padding: 1, rng }),
    ...(withBn ? [new BatchNorm1d(8)] : []),
    new ReLU(),
    new Conv1d(8, 8, 3, { stride: 2, dilation: 2, groups: 2, rng }),
    new ReLU(),
    new Conv1d(8, 6, 1, { rng }),
    new ReLU(),
    new Flatten(),
    new Linear(6 * 6, 5, { rng }),
  ];
  return new Sequential(...layers);
}

/** A QAT-prepared net after a few training forwards (observers and BN statistics set), in eval mode. */
function preparedNet(scheme: Scheme, estimator: Estimator, options: { fuseBatchNorm?: boolean; seed?: number } = {}): { model: Sequential; x: Tensor } {
  const rng = new Rng(options.seed ?? 7);
  const model = net(rng, true);
  prepareQat(model, { default: qconfigFor(scheme, estimator) }, { fuseBatchNorm: options.fuseBatchNorm ?? true });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(randn([16, 4, 16], { rng })));
  model.eval();
  return { model, x: randn([32, 4, 16], { rng }) };
}

function runAll(im: IntModel, x: Tensor): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  const set = (native: boolean, executor: 'fast' | 'reference', kernels: 'wasm' | 'double'): void => {
    im.useNative = native;
    im.tsExecutor = executor;
    im.tsKernels = kernels;
  };
  if (!nativeSkip) {
    set(true, 'fast', 'wasm');
    assert.equal(im.nativeUnavailableReason(), null, 'the native executor runs the conv1d graph');
    out.set('native', im.run(x));
  }
  set(false, 'fast', 'wasm');
  out.set('ts-wasm', im.run(x));
  set(false, 'fast', 'double');
  out.set('ts-double', im.run(x));
  set(false, 'reference', 'double');
  out.set('ts-reference', im.run(x));
  set(true, 'fast', 'wasm');
  return out;
}

function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  const i = a.findIndex((v, k) => !Object.is(v, b[k]));
  assert.equal(i, -1, `${what}: output ${i} differs (${a[i]} vs ${b[i]})`);
}

const CASES: [Scheme, Estimator][] = [['w8a8', 'ste'], ['w4a4', 'lsq'], ['w2a2', 'lsq'], ['w1a1', 'binary']];

describe('IntModel: Conv1d', () => {
  for (const [scheme, estimator] of CASES) {
    it(`${scheme}/${estimator}: convert gives the simulated integers, every executor the same logits`, () => {
      const { model, x } = preparedNet(scheme, estimator);
      assert.deepEqual(quantizedLayers(model).map((l) => l.type), ['Conv1d', 'Conv1d', 'Conv1d', 'Linear']);
      const im = convert(model, { sample: x });
      const convs = im.nodes.filter((n): n is LayerNode => n.op === 'conv2d');
      assert.equal(convs.length, 3);
      for (const c of convs) assert.equal(c.conv!.conv1d, true);
      assert.deepEqual(convs[1]!.conv!.kernelSize, [1, 3]);
      assert.deepEqual(convs[1]!.conv!.stride, [1, 2]);
      assert.deepEqual(convs[1]!.conv!.dilation, [1, 2]);
      assert.equal(convs[1]!.conv!.groups, 2);
      assert.deepEqual(im.graph.inputShape, [4, 16]);
      assert.deepEqual(im.layers().map((l) => l.op), ['quantize', 'conv1d', 'conv1d', 'conv1d', 'flatten', 'linear']);
      const r = im.verification!;
      for (const [layer, d] of Object.entries(r.layerMaxDiff)) assert.equal(d, 0, `${scheme}: layer ${layer} input differs from the float64 simulation by ${d}`);
      assert.equal(r.argmaxAgreementFloat64, 1);
      assert.ok(r.maxLogitLsb <= 1, `${scheme}: logits ${r.maxLogitLsb} LSB from the float64 simulation`);
      const outs = runAll(im, x);
      const base = outs.get('ts-reference')!;
      for (const [name, y] of outs) assertSameBits(y, base, `${scheme}: ${name} vs ts-reference`);
    });
  }

  it('a BatchNorm1d left unfolded in QAT is folded into the integer output stage', () => {
    const { model, x } = preparedNet('w8a8', 'ste', { fuseBatchNorm: false, seed: 3 });
    assert.ok(model.at(1) instanceof BatchNorm1d);
    const im = convert(model, { sample: x });
    // no node of its own: its scale and shift are in the first conv's requantization
    assert.deepEqual(im.nodes.map((n) => n.op), ['quantize', 'conv2d', 'conv2d', 'conv2d', 'flatten', 'linear']);
    assert.equal(im.verification!.argmaxAgreementFloat64, 1);
    assert.ok(im.verification!.maxLogitLsb <= 1);
  });

  for (const [scheme, extra] of [['w8a8', {}], ['w4a8', { adaround: { iterations: 20 }, biasCorrection: true }]] as const) {
    it(`PTQ-calibrated Conv1d net converts (${scheme}${'adaround' in extra ? ', AdaRound + bias correction' : ''})`, () => {
      const rng = new Rng(4);
      const model = net(rng, true);
      const x = randn([32, 4, 16], { rng });
      calibrate(model, [{ x }], { scheme, ...extra });
      assert.deepEqual(quantizedLayers(model).map((l) => l.type), ['Conv1d', 'Conv1d', 'Conv1d', 'Linear']);
      if ('adaround' in extra) {
        // the 4-bit Conv1d layers (the first and last layer stay 8-bit) are rounded by AdaRound and bias-corrected
        const report = calibrationReport(model)!;
        assert.deepEqual(report.adaround.map((r) => r.layer), ['3', '5']);
        for (const r of report.adaround) assert.ok(r.adaroundError <= r.nearestError, `${r.layer}: AdaRound ${r.adaroundError} vs nearest ${r.nearestError}`);
        assert.equal(report.biasCorrection.length, 4);
      }
      const im = convert(model, { sample: x });
      assert.equal(im.verification!.argmaxAgreementFloat64, 1);
      for (const d of Object.values(im.verification!.layerMaxDiff)) assert.equal(d, 0);
    });
  }

  it('pruned (0-bit) Conv1d channels are removed by compaction with the logits unchanged', () => {
    const rng = new Rng(6);
    const model = new Sequential(new Conv1d(4, 6, 3, { padding: 1, rng }), new ReLU(), new Conv1d(6, 5, 3, { rng }), new ReLU(), new Flatten(), new Linear(5 * 14, 3, { rng }));
    const w8 = qconfigFor('w8a8', 'ste');
    prepareQat(model, [
      { name: '0', type: 'Conv1d', weightSpec: { ...w8.weight!, channelBits: [8, 0, 8, 8, 0, 8] }, activationSpec: w8.activation, fusedBatchNorm: null },
      { name: '2', type: 'Conv1d', weightSpec: w8.weight, activationSpec: w8.activation, fusedBatchNorm: null },
      { name: '5', type: 'Linear', weightSpec: w8.weight, activationSpec: w8.activation, fusedBatchNorm: null },
    ]);
    const x = randn([8, 4, 16], { rng });
    model.train();
    noGrad(() => model.forward(x));
    model.eval();
    const full = convert(model, { sample: x, compact: false });
    const small = convert(model, { sample: x });
    assert.deepEqual(small.tensor('0.weight').shape, [4, 4, 3]);
    assert.deepEqual(small.tensor('2.weight').shape, [5, 4, 3]);
    assertSameBits(small.run(x), full.run(x), 'compacted vs full');
  });

  it('the .lowbit file round-trips a conv1d IntModel bit for bit (bytes and path)', () => {
    const { model, x } = preparedNet('w4a4', 'lsq');
    const im = convert(model, { sample: x });
    const before = im.run(x);
    const bytes = encodeLowbit(intModelToLowbit(im));
    const back = intModelFromLowbit(decodeLowbit(bytes));
    assert.deepEqual(back.graph, JSON.parse(JSON.stringify(im.graph)));
    assertSameBits(back.run(x), before, 'decoded');
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-conv1d-'));
    try {
      saveIntModel(join(dir, 'm.lowbit'), im);
      assertSameBits(loadIntModel(join(dir, 'm.lowbit')).run(x), before, 'loaded');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('malformed conv1d fields in a file are refused with a typed error naming the node', () => {
    const { model, x } = preparedNet('w8a8', 'ste');
    const im = convert(model, { sample: x });
    const json = JSON.parse(JSON.stringify(im.toJSON())) as ReturnType<IntModel['toJSON']>;
    const edit = (f: (graph: { inputShape: number[]; nodes: Record<string, unknown>[] }) => void): Uint8Array => {
      const file = intModelToLowbit(IntModel.fromJSON(json));
      const g = JSON.parse(JSON.stringify({ inputShape: [4, 16], nodes: file.graph })) as { inputShape: number[]; nodes: Record<string, unknown>[] };
      f(g);
      const meta = { ...(file.metadata as Record<string, unknown>) };
      meta.intModel = { ...(meta.intModel as object), inputShape: g.inputShape };
      return encodeLowbit({ ...file, graph: g.nodes, metadata: meta });
    };
    const conv = (g: { nodes: Record<string, unknown>[] }): Record<string, unknown> => (g.nodes.find((n) => n.op === 'conv2d')!.conv as Record<string, unknown>);
    const load = (bytes: Uint8Array): IntModel => intModelFromLowbit(decodeLowbit(bytes));
    assert.throws(() => load(edit((g) => { conv(g).conv1d = 'yes'; })), (e: Error) => e instanceof IntGraphError && /conv1d "yes" must be a boolean/.test(e.message));
    assert.throws(() => load(edit((g) => { conv(g).kernelSize = [2, 3]; })), (e: Error) => e instanceof IntGraphError && /is a conv1d, so kernelSize, stride, padding and dilation must be \[1, ·\]/.test(e.message));
    assert.throws(() => load(edit((g) => { conv(g).padding = [1, 1]; })), (e: Error) => e instanceof IntGraphError && /is a conv1d/.test(e.message));
    // a conv1d node fed a [C, H, W] sample, and a 2-D conv node fed a [C, L] one
    assert.throws(() => load(edit((g) => { g.inputShape = [4, 1, 16]; })), (e: Error) => e instanceof IntGraphError && /conv2d '0': expects \[4, L\] per sample, gets \[4, 1, 16\]/.test(e.message));
    assert.throws(() => load(edit((g) => { delete conv(g).conv1d; })), (e: Error) => e instanceof IntGraphError && /expects \[4, H, W\] per sample, gets \[4, 16\]/.test(e.message));
    // the unedited file loads
    assertSameBits(load(edit(() => {})).run(x), im.run(x), 'unedited');
  });

  it('a Conv2d IntModel carries no conv1d field (files of earlier versions read the same)', () => {
    const rng = new Rng(1);
    const model = prepareQat(new Sequential(new Conv2d(1, 2, 3, { rng }), new ReLU(), new Flatten(), new Linear(2 * 3 * 3, 2, { rng })), { default: qconfigFor('w8a8', 'ste') });
    model.train();
    noGrad(() => model.forward(randn([4, 1, 5, 5], { rng })));
    model.eval();
    const g: IntGraph = convert(model, { inputShape: [1, 5, 5] }).graph;
    assert.ok(g.nodes.some((n) => n.op === 'conv2d'));
    assert.ok(!JSON.stringify(g).includes('conv1d'));
  });

  it('ONNX QDQ export writes 1-D Convs that onnxruntime-node runs, agreeing with the IntModel', async () => {
    const { model, x } = preparedNet('w8a8', 'ste');
    const im = convert(model, { sample: x });
    const r = exportOnnx(im);
    const text = new TextDecoder('latin1').decode(r.bytes);
    assert.ok(text.includes('kernel_shape'), 'a Conv with kernel_shape');
    const rep = await verifyOnnx(r.bytes, (xs, n) => im.run(xs, n), { data: x.data as Float32Array, count: 32, shape: [4, 16] });
    if (rep.status === 'skipped') {
      console.log(`# onnxruntime-node skipped: ${rep.reason}`);
      return;
    }
    assert.equal(rep.argmaxAgreement, 1);
    let range = 0;
    for (const v of im.run(x)) range = Math.max(range, Math.abs(v));
    assert.ok(rep.maxAbsDiff <= 0.01 * range, `onnxruntime vs IntModel: max |Δ| ${rep.maxAbsDiff} (logit range ${range})`);
  });

  it('a float Conv1d net exports as a 1-D ONNX Conv that onnxruntime-node runs exactly', async () => {
    const rng = new Rng(8);
    const model = net(rng, true);
    model.eval();
    const x = randn([8, 4, 16], { rng });
    const r = exportOnnx(model, { inputShape: [4, 16] });
    const rep = await verifyOnnx(r.bytes, (xs, n) => noGrad(() => model.forward(new Tensor(xs, [n, 4, 16]))).data as Float32Array, { data: x.data as Float32Array, count: 8, shape: [4, 16] });
    if (rep.status === 'skipped') return;
    assert.equal(rep.argmaxAgreement, 1);
    assert.ok(rep.maxAbsDiff < 1e-5, `max |Δ| ${rep.maxAbsDiff}`);
  });
});
