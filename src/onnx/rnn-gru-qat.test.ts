import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { GRU, NextWordModel } from '../nn/index.ts';
import { nextWordQatPlan, prepareRnnQat, QatGRU } from '../quant/rnn/index.ts';
import type { QuantizerSpec } from '../quant/quantizers/quantizer.ts';
import { randn, Rng, Tensor } from '../tensor/index.ts';
import { OnnxDataType, OnnxError, tensorValue } from './proto.ts';
import { exportRnnOnnx } from './rnn.ts';
import { argmaxAgreement, maxAbs, maxDiff, runRnnOrt } from './rnn-testing.ts';
import { loadOnnxRuntime } from './verify.ts';

const ortLoad = await loadOnnxRuntime();
const noOrt = ortLoad.ok ? false : `skipped: ${ortLoad.reason}`;

/** Runs the bytes; weight-only layers stay float-input (MatMulNBits accuracy level 0, as `lowbit export --verify`). */
const ort = (bytes: Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> => runRnnOrt(bytes, feeds, { matMulNBitsAccuracyLevel: 0 });

const VOCAB = 13;
const L = 5;

/** A gru NextWordModel prepared with a next-word scheme, its quantizers initialised on `x`, in eval mode. */
function gruLm(scheme: 'w8a8' | 'w4a8' | 'w4', x: Tensor, seed: number): NextWordModel {
  const model = new NextWordModel({ vocabSize: VOCAB, embeddingDim: 5, hiddenSize: 6, cell: 'gru', rng: new Rng(seed) });
  prepareRnnQat(model, nextWordQatPlan(scheme)!);
  assert.ok(model.rnn instanceof QatGRU);
  model.train();
  noGrad(() => model.forward(x));
  model.eval();
  return model;
}

function ids(n: number, rng: Rng): Tensor {
  return new Tensor(Int32Array.from({ length: n * L }, () => Math.floor(rng.uniform() * VOCAB)), [n, L]);
}

describe('weight-QDQ export of a QAT gru-lm (Embedding → QatGRU → last step → Linear) in onnxruntime-node', () => {
  it('w4 (h_{t−1} float): one ONNX GRU node with dequantized 4-bit W and R; logits equal the fake-quant forward', { skip: noOrt }, async () => {
    const rng = new Rng(4);
    const x = ids(6, rng);
    const model = gruLm('w4', x, 3);
    const ex = exportRnnOnnx(model, { lastStep: true });
    assert.equal(ex.kind, 'qdq');
    assert.deepEqual(ex.recurrent, { rnn: 'GRU' });
    assert.equal(ex.weightDeviation, 0);
    const ints = ex.model.graph!.initializer!.filter((t) => t.dataType === OnnxDataType.INT8 && t.name!.endsWith('_int8'));
    assert.equal(ints.length, 4, 'table, W, R, head');
    for (const t of ints) for (const v of Array.from(tensorValue(t).data as ArrayLike<number>)) assert.ok(v >= -7 && v <= 7, `${t.name}: ${v} is not 4-bit`);
    const want = noGrad(() => model.forward(x));
    const got = (await ort(ex.bytes, { input: x }))[ex.outputs[0]!.name]!;
    assert.ok(maxDiff(got, want) <= 1e-5 * Math.max(1, maxAbs(want)), `|Δ| ${maxDiff(got, want)}`);
    assert.equal(argmaxAgreement(got, want), 1);
    for (const m of model.modules()) if ('fakeQuantEnabled' in m) m.fakeQuantEnabled = false;
    const float = noGrad(() => model.forward(x));
    assert.ok(maxDiff(float, got) > 1e-3, `the export is as far from float as ${maxDiff(float, got)}`);
  });

  for (const scheme of ['w8a8', 'w4a8'] as const) {
    it(`${scheme} (h_{t−1} quantized): the GRU is unrolled over the fixed context with a QDQ on h; logits equal the fake-quant forward`, { skip: noOrt }, async () => {
      const rng = new Rng(8);
      const x = ids(7, rng);
      const model = gruLm(scheme, x, 5);
      assert.throws(() => exportRnnOnnx(model, { lastStep: true }), (e: unknown) => e instanceof OnnxError && /ONNX GRU node cannot do; pass sequenceLength/.test(e.message));
      const ex = exportRnnOnnx(model, { lastStep: true, sequenceLength: L });
      assert.deepEqual(ex.recurrent, { rnn: 'unrolled' });
      assert.ok(!ex.model.graph!.node!.some((n) => n.opType === 'GRU'));
      // The first step skips the zero h_{−1}: L − 1 QDQs on h.
      const qdqOnH = ex.model.graph!.node!.filter((n) => n.opType === 'QuantizeLinear' && /\.t\d+\.h_q/.test(n.output![0]!)).length;
      assert.equal(qdqOnH, L - 1);
      const want = noGrad(() => model.forward(x));
      const got = (await ort(ex.bytes, { input: x }))[ex.outputs[0]!.name]!;
      assert.ok(maxDiff(got, want) <= 1e-4 * Math.max(1, maxAbs(want)), `|Δ| ${maxDiff(got, want)}`);
      assert.equal(argmaxAgreement(got, want), 1);
    });
  }

  it('a lone 2-layer QatGRU (time-major, h_{t−1} quantized) with initial and final states', { skip: noOrt }, async () => {
    const rng = new Rng(12);
    const act: QuantizerSpec = { kind: 'lsq', bits: 8, signed: true, symmetric: true };
    const gru = QatGRU.fromGRU(new GRU(3, 4, { numLayers: 2, rng }), { weight: { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'channel' }, input: act, hidden: act });
    const x = randn([L, 2, 3], { rng });
    const h0 = randn([2, 2, 4], { rng, std: 0.5 });
    noGrad(() => gru.forward(x, h0));
    gru.eval();
    const ex = exportRnnOnnx(gru, { sequenceLength: L, states: true });
    assert.deepEqual(ex.inputs.map((v) => v.name), ['input', 'h0']);
    const [want, hN] = noGrad(() => gru.forward(x, h0));
    const got = await ort(ex.bytes, { input: x, h0 });
    const [outName, hName] = ex.outputs.map((v) => v.name) as [string, string];
    assert.ok(maxDiff(got[outName]!, want) <= 1e-5, `output |Δ| ${maxDiff(got[outName]!, want)}`);
    assert.ok(maxDiff(got[hName]!, hN) <= 1e-5, `hN |Δ| ${maxDiff(got[hName]!, hN)}`);
  });
});
