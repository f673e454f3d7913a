import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { Conv2d, Dropout, Embedding, GRU, Linear, LSTM, Module, ReLU, Tanh } from '../nn/index.ts';
import { prepareRnnQat, QatLSTM, type RnnQatConfig } from '../quant/rnn/index.ts';
import type { QuantizerSpec } from '../quant/quantizers/quantizer.ts';
import { narrow, randn, reshape, Rng, Tensor } from '../tensor/index.ts';
import { decodeModel, encodeModel, OnnxAttributeType, OnnxDataType, OnnxError, tensorValue, type OnnxModel } from './proto.ts';
import { exportRnnOnnx } from './rnn.ts';
import { argmaxAgreement, maxAbs, maxDiff, runRnnOrt } from './rnn-testing.ts';
import { openRnnOnnx } from './rnn-verify.ts';
import { loadOnnxRuntime } from './verify.ts';

const ortLoad = await loadOnnxRuntime();
const noOrt = ortLoad.ok ? false : `skipped: ${ortLoad.reason}`;

const ort = (bytes: Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> => runRnnOrt(bytes, feeds);

function ids(shape: [number, number], vocab: number, rng: Rng): Tensor {
  return new Tensor(Int32Array.from({ length: shape[0] * shape[1] }, () => Math.floor(rng.uniform() * vocab)), shape);
}

const VOCAB = 11;
const EMBED = 5;
const HIDDEN = 6;

describe('float export of Embedding → LSTM / GRU → Linear chains (onnxruntime-node)', () => {
  it('matches lowbit for every option combination (kind, batchFirst, bidirectional, layers, bias, states)', { skip: noOrt }, async () => {
    const rng = new Rng(7);
    let cases = 0;
    for (const kind of ['LSTM', 'GRU'] as const) {
      for (const batchFirst of [false, true]) {
        for (const bidirectional of [false, true]) {
          for (const numLayers of [1, 2]) {
            for (const bias of [true, false]) {
              const states = (cases & 1) === 0;
              cases++;
              const emb = new Embedding(VOCAB, EMBED, { rng });
              const rnn = kind === 'LSTM' ? new LSTM(EMBED, HIDDEN, { batchFirst, bidirectional, numLayers, bias, rng, dropout: 0.3 }) : new GRU(EMBED, HIDDEN, { batchFirst, bidirectional, numLayers, bias, rng });
              const D = bidirectional ? 2 : 1;
              const head = new Linear(D * HIDDEN, 7, { rng });
              const chain = [emb, rnn, new Dropout(0.5), new Tanh(), head];
              const x = ids(batchFirst ? [3, 4] : [4, 3], VOCAB, rng);
              const h0 = randn([D * numLayers, 3, HIDDEN], { rng });
              const c0 = randn([D * numLayers, 3, HIDDEN], { rng });
              const what = `${kind} batchFirst=${batchFirst} bidirectional=${bidirectional} layers=${numLayers} bias=${bias} states=${states}`;
              const ex = exportRnnOnnx(chain, { states });
              for (const m of chain) m.eval();
              // lowbit's own forward, module by module.
              const { y, finals } = noGrad(() => {
                const e = emb.forward(x);
                if (rnn instanceof LSTM) {
                  const [out, [hN, cN]] = rnn.forward(e, states ? [h0, c0] : undefined);
                  return { y: head.forward(new Tanh().forward(out)), finals: [hN, cN] };
                }
                const [out, hN] = rnn.forward(e, states ? h0 : undefined);
                return { y: head.forward(new Tanh().forward(out)), finals: [hN] };
              });
              const feeds: Record<string, Tensor> = { input: x };
              if (states) {
                feeds['h0'] = h0;
                if (kind === 'LSTM') feeds['c0'] = c0;
              }
              const got = await ort(ex.bytes, feeds);
              assert.equal(ex.kind, 'fp32');
              assert.deepEqual(ex.recurrent, { 1: kind });
              assert.ok(maxDiff(got['logits']!, y) <= 1e-5 * Math.max(1, maxAbs(y)), `${what}: logits differ by ${maxDiff(got['logits']!, y)}`);
              assert.equal(argmaxAgreement(got['logits']!, y), 1, what);
              if (states) {
                assert.ok(maxDiff(got['hN']!, finals[0]!) <= 1e-5, `${what}: hN`);
                if (kind === 'LSTM') assert.ok(maxDiff(got['cN']!, finals[1]!) <= 1e-5, `${what}: cN`);
              } else {
                assert.deepEqual(Object.keys(got), ['logits']);
              }
            }
          }
        }
      }
    }
    assert.equal(cases, 32);
  });

  it('fails when the gate order or the GRU reset formula is wrong (the comparison is sensitive to them)', { skip: noOrt }, async () => {
    const rng = new Rng(11);
    const x = ids([4, 3], VOCAB, rng);
    for (const kind of ['LSTM', 'GRU'] as const) {
      const emb = new Embedding(VOCAB, EMBED, { rng });
      const rnn = kind === 'LSTM' ? new LSTM(EMBED, HIDDEN, { rng }) : new GRU(EMBED, HIDDEN, { rng });
      const chain = [emb, rnn, new Linear(HIDDEN, 7, { rng })];
      const ex = exportRnnOnnx(chain);
      const good = (await ort(ex.bytes, { input: x }))['logits']!;
      // Swap two gate blocks of W (LSTM: ONNX's o and f; GRU: z and r) — what a wrong gate order does.
      const swapped = decodeModel(ex.bytes);
      const w = swapped.graph!.initializer!.find((t) => t.name === '1.l0.W')!;
      const values = Float32Array.from(tensorValue(w).data as Float32Array);
      const block = HIDDEN * EMBED;
      const [a, b] = kind === 'LSTM' ? [1, 2] : [0, 1];
      const tmp = values.slice(a * block, (a + 1) * block);
      values.copyWithin(a * block, b * block, (b + 1) * block);
      values.set(tmp, b * block);
      w.rawData = new Uint8Array(values.buffer);
      const wrong = (await ort(encodeModel(swapped), { input: x }))['logits']!;
      assert.ok(maxDiff(wrong, good) > 1e-3, `${kind}: a swapped gate block changes the output by only ${maxDiff(wrong, good)}`);
      if (kind === 'GRU') {
        const reset: OnnxModel = decodeModel(ex.bytes);
        const node = reset.graph!.node!.find((n) => n.opType === 'GRU')!;
        node.attribute = node.attribute!.map((at) => (at.name === 'linear_before_reset' ? { ...at, i: 0 } : at));
        const other = (await ort(encodeModel(reset), { input: x }))['logits']!;
        assert.ok(maxDiff(other, good) > 1e-4, `GRU: linear_before_reset = 0 changes the output by only ${maxDiff(other, good)}`);
      }
    }
  });

  it('exports a lone LSTM on float features, and a Module with lastStep; refuses a forward that is not the chain', { skip: noOrt }, async () => {
    const rng = new Rng(5);
    const lstm = new LSTM(4, HIDDEN, { batchFirst: true, numLayers: 2, rng });
    const feats = randn([2, 5, 4], { rng });
    const ex = exportRnnOnnx(lstm, { states: true });
    assert.deepEqual(ex.inputs.map((v) => [v.name, v.type, v.dims]), [['input', 'float32', ['N', 'L', 4]], ['h0', 'float32', [2, 'N', HIDDEN]], ['c0', 'float32', [2, 'N', HIDDEN]]]);
    const h0 = randn([2, 2, HIDDEN], { rng });
    const c0 = randn([2, 2, HIDDEN], { rng });
    const [y, [hN, cN]] = noGrad(() => lstm.forward(feats, [h0, c0]));
    const got = await ort(ex.bytes, { input: feats, h0, c0 });
    assert.ok(maxDiff(got['logits']!, y) <= 1e-5);
    assert.ok(maxDiff(got['hN']!, hN) <= 1e-5 && maxDiff(got['cN']!, cN) <= 1e-5);

    class NextWord extends Module {
      readonly embedding = this.registerModule('embedding', new Embedding(VOCAB, EMBED, { rng }));
      readonly rnn = this.registerModule('rnn', new GRU(EMBED, HIDDEN, { batchFirst: true, rng }));
      readonly act = this.registerModule('act', new ReLU());
      readonly head = this.registerModule('head', new Linear(HIDDEN, VOCAB, { rng }));
      forward(x: Tensor): Tensor {
        const [out] = this.rnn.forward(this.embedding.forward(x));
        const last = reshape(narrow(out, 1, x.shape[1]! - 1, 1), [x.shape[0]!, HIDDEN]);
        return this.head.forward(this.act.forward(last));
      }
    }
    const model = new NextWord();
    assert.throws(() => exportRnnOnnx(model), (e: unknown) => e instanceof OnnxError && e.code === 'unsupported-op' && /not the chain/.test(e.message));
    const lm = exportRnnOnnx(model, { lastStep: true });
    assert.deepEqual(lm.outputs[0]!.dims, ['N', VOCAB]);
    const x = ids([3, 6], VOCAB, rng);
    const want = noGrad(() => model.forward(x));
    const out = (await ort(lm.bytes, { input: x }))['logits']!;
    assert.ok(maxDiff(out, want) <= 1e-5 * Math.max(1, maxAbs(want)));
  });

  it('refuses what it cannot export, naming it', () => {
    const rng = new Rng(1);
    const lstm = new LSTM(3, 4, { rng });
    const code = (c: string) => (e: unknown): boolean => e instanceof OnnxError && e.code === c;
    assert.throws(() => exportRnnOnnx(lstm, { opset: 12 }), code('unsupported-opset'));
    assert.throws(() => exportRnnOnnx(lstm, { sequenceLength: 0 }), code('bad-input'));
    assert.throws(() => exportRnnOnnx([new Linear(3, 4, { rng })]), code('bad-input'));
    assert.throws(() => exportRnnOnnx([lstm, new Conv2d(1, 1, 1)]), (e: unknown) => code('unsupported-op')(e) && /Conv2d/.test((e as Error).message));
    assert.throws(() => exportRnnOnnx([lstm, new Embedding(4, 3)]), code('unsupported-op'));
    assert.throws(() => exportRnnOnnx(new LSTM(3, 4, { rng, dtype: 'float64' })), code('unsupported-op'));
    assert.throws(() => exportRnnOnnx(lstm, { inputName: 'x', outputName: 'x' }), code('bad-input'));
  });
});

const int8Row: QuantizerSpec = { kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'channel' };
const int4Row: QuantizerSpec = { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'channel' };
const int4Tensor: QuantizerSpec = { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'tensor' };
const act8: QuantizerSpec = { kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'tensor' };
const act4: QuantizerSpec = { kind: 'ste', bits: 4, signed: true, symmetric: false, granularity: 'tensor' };

/** Embedding → LSTM → Linear over every position, the model `prepareRnnQat` quantizes. */
class TinyLm extends Module {
  readonly embedding: Embedding;
  readonly rnn: LSTM;
  readonly head: Linear;
  constructor(rng: Rng, numLayers: number, batchFirst: boolean) {
    super();
    this.embedding = this.registerModule('embedding', new Embedding(VOCAB, EMBED, { rng }));
    this.rnn = this.registerModule('rnn', new LSTM(EMBED, HIDDEN, { numLayers, batchFirst, rng }));
    this.head = this.registerModule('head', new Linear(HIDDEN, VOCAB, { rng }));
  }
  forward(x: Tensor, hx?: [Tensor, Tensor]): Tensor {
    const [out] = this.rnn.forward(this.embedding.forward(x), hx);
    return this.head.forward(out);
  }
}

/** A TinyLm prepared with `config` and its quantizers initialised by one training-mode forward. */
function preparedLm(config: RnnQatConfig, numLayers: number, batchFirst: boolean, seed: number, x: Tensor): TinyLm {
  const model = new TinyLm(new Rng(seed), numLayers, batchFirst);
  prepareRnnQat(model, { default: config });
  model.train();
  noGrad(() => model.forward(x));
  return model.eval();
}

describe('weight-QDQ export of QatEmbedding → QatLSTM → QuantLinear (onnxruntime-node)', () => {
  it('equals the fake-quant forward (int8 / int4 per row, int4 per tensor; input quantized; h float → ONNX LSTM node)', { skip: noOrt }, async () => {
    const rng = new Rng(21);
    for (const [name, weight, activation] of [['int8 row', int8Row, act8], ['int4 row', int4Row, act8], ['int4 tensor', int4Tensor, act4]] as const) {
      for (const batchFirst of [false, true]) {
        const x = ids(batchFirst ? [4, 6] : [6, 4], VOCAB, rng);
        const model = preparedLm({ weight, activation, hidden: null }, 2, batchFirst, 3, x);
        const ex = exportRnnOnnx(model);
        assert.equal(ex.kind, 'qdq');
        assert.deepEqual(ex.recurrent, { rnn: 'LSTM' });
        assert.equal(ex.weightDeviation, 0, 'ŵ is exactly (q − z)·s in float32');
        // Weights are int8 initializers; the 4-bit ones hold values in [−8, 7].
        const ints = ex.model.graph!.initializer!.filter((t) => t.dataType === OnnxDataType.INT8 && t.name!.endsWith('_int8'));
        assert.equal(ints.length, 1 + 4 + 1, `${name}: table, 2 × (W, R), head`);
        if (weight.bits === 4) {
          for (const t of ints) for (const v of Array.from(tensorValue(t).data as ArrayLike<number>)) assert.ok(v >= -8 && v <= 7, `${t.name}: ${v} is not 4-bit`);
        }
        const want = noGrad(() => model.forward(x));
        const got = (await ort(ex.bytes, { input: x }))['logits']!;
        const what = `${name} batchFirst=${batchFirst}`;
        assert.ok(maxDiff(got, want) <= 1e-4 * maxAbs(want), `${what}: |Δ| ${maxDiff(got, want)} vs max ${maxAbs(want)}`);
        assert.equal(argmaxAgreement(got, want), 1, what);
        // Not vacuous: the float model (quantizers off) is measurably different.
        for (const m of model.modules()) if ('fakeQuantEnabled' in m) m.fakeQuantEnabled = false;
        const float = noGrad(() => model.forward(x));
        assert.ok(maxDiff(float, got) > 1e-3, `${what}: the quantized export is as far from float as ${maxDiff(float, got)}`);
      }
    }
  });

  it('unrolls a QatLSTM that quantizes h_{t−1} (fixed sequenceLength), with initial and final states', { skip: noOrt }, async () => {
    const rng = new Rng(33);
    const L = 5;
    const x = ids([3, L], VOCAB, rng);
    const model = preparedLm({ weight: int4Row, activation: act8, hidden: act8 }, 2, true, 4, x);
    assert.throws(() => exportRnnOnnx(model), (e: unknown) => e instanceof OnnxError && /sequenceLength/.test(e.message));
    const ex = exportRnnOnnx(model, { sequenceLength: L, states: true });
    assert.deepEqual(ex.recurrent, { rnn: 'unrolled' });
    assert.ok(!ex.model.graph!.node!.some((n) => n.opType === 'LSTM'));
    // With initial states every step quantizes h_{t−1}, the first one included.
    const h0 = randn([2, 3, HIDDEN], { rng, std: 0.5 });
    const c0 = randn([2, 3, HIDDEN], { rng, std: 0.5 });
    const want = noGrad(() => model.forward(x, [h0, c0]));
    const [, [hN, cN]] = noGrad(() => model.rnn.forward(model.embedding.forward(x), [h0, c0]));
    const got = await ort(ex.bytes, { input: x, h0, c0 });
    assert.ok(maxDiff(got['logits']!, want) <= 1e-4 * maxAbs(want), `|Δ| ${maxDiff(got['logits']!, want)}`);
    assert.equal(argmaxAgreement(got['logits']!, want), 1);
    assert.ok(maxDiff(got['hN']!, hN) <= 1e-5 && maxDiff(got['cN']!, cN) <= 1e-5);
    // Without states the first step of each layer skips the zero h_{−1}: L − 1 QDQs per layer.
    const plain = exportRnnOnnx(model, { sequenceLength: L });
    const y0 = noGrad(() => model.forward(x));
    const g0 = (await ort(plain.bytes, { input: x }))['logits']!;
    assert.ok(maxDiff(g0, y0) <= 1e-4 * maxAbs(y0));
    assert.equal(argmaxAgreement(g0, y0), 1);
    const qdqOnH = plain.model.graph!.node!.filter((n) => n.opType === 'QuantizeLinear' && /\.t\d+\.h_q/.test(n.output![0]!)).length;
    assert.equal(qdqOnH, 2 * (L - 1));
  });

  it('writes the activation range as a Clip when it is narrower than the int8 container', () => {
    const x = ids([6, 2], VOCAB, new Rng(2));
    const model = preparedLm({ weight: int8Row, activation: act4, hidden: null }, 1, false, 9, x);
    const ex = exportRnnOnnx(model);
    const clips = ex.model.graph!.node!.filter((n) => n.opType === 'Clip');
    assert.equal(clips.length, 2, 'the LSTM input and the head input');
    const bounds = clips.map((n) => n.input!.slice(1).map((name) => tensorValue(ex.model.graph!.initializer!.find((t) => t.name === name)!).data[0]));
    for (const b of bounds) assert.deepEqual(b, [-8, 7]);
    assert.ok(ex.model.graph!.node!.some((n) => n.opType === 'LSTM' && n.attribute!.some((a) => a.name === 'hidden_size' && a.type === OnnxAttributeType.INT && a.i === HIDDEN)));
  });
});

describe('activation rounding and weight-only QDQ in onnxruntime-node', () => {
  it("'exact' activations round x/s in float64 like lowbit, also on inputs crafted to sit at float32 rounding midpoints", { skip: noOrt }, async () => {
    const rng = new Rng(41);
    const lstm = QatLSTM.fromLSTM(new LSTM(4, HIDDEN, { rng }), { weight: int8Row, input: act8, hidden: null });
    const head = new Linear(HIDDEN, 5, { rng });
    const warm = randn([6, 3, 4], { rng });
    lstm.train();
    noGrad(() => lstm.forward(warm));
    lstm.eval();
    const exported = lstm.layerQuantizers(0).input!.exportQuant();
    assert.equal(exported.type, 'affine');
    const s = exported.type === 'affine' ? exported.qparams.scale[0]! : 0;
    // x just below (k + ½)·s for odd k: the float64 quotient rounds to k, the float32 one is k + ½ (→ k + 1).
    const crafted: number[] = [];
    for (let k = 1; crafted.length < 24 && k < 120; k += 2) {
      let x = Math.fround((k + 0.5) * s);
      for (let step = 0; step < 64 && x / s >= k + 0.5; step++) x = Math.fround(x - x * 2 ** -24);
      if (x / s < k + 0.5 && Math.fround(Math.fround(x) / s) === k + 0.5) crafted.push(x, -x);
    }
    assert.ok(crafted.length >= 8, `only ${crafted.length} midpoint inputs found`);
    const x = randn([6, 3, 4], { rng });
    crafted.forEach((v, i) => { x.data[i % x.size] = v; });
    const want = noGrad(() => head.forward(lstm.forward(x)[0]));
    const exact = exportRnnOnnx([lstm, head], { activations: 'exact' });
    assert.ok(!exact.model.graph!.node!.some((n) => n.opType === 'QuantizeLinear'));
    const got = (await ort(exact.bytes, { input: x }))['logits']!;
    assert.ok(maxDiff(got, want) <= 1e-5 * maxAbs(want), `exact: |Δ| ${maxDiff(got, want)}`);
    // The standard QDQ graph is exported too (whether onnxruntime lands on the other integer here is its business).
    const qdq = (await ort(exportRnnOnnx([lstm, head]).bytes, { input: x }))['logits']!;
    assert.equal(argmaxAgreement(qdq, want), 1);
  });

  it('weight-only QDQ (no activation quantizers) equals the fake-quant forward when MatMulNBits keeps float inputs (accuracy level 0)', { skip: noOrt }, async () => {
    const rng = new Rng(43);
    const x = ids([5, 4], VOCAB, rng);
    const model = preparedLm({ weight: int4Row, activation: null, hidden: null }, 1, false, 12, x);
    const ex = exportRnnOnnx(model);
    assert.equal(ex.kind, 'qdq');
    assert.ok(!ex.model.graph!.node!.some((n) => n.opType === 'QuantizeLinear'), 'weight-only: no activation quantizers');
    const want = noGrad(() => model.forward(x));
    const runner = await openRnnOnnx(ex.bytes, { matMulNBitsAccuracyLevel: 0 });
    if ('skipped' in runner) throw new Error(runner.skipped);
    try {
      const got = (await runner.run({ input: x }))['logits']!;
      assert.ok(maxDiff(got, want) <= 1e-5 * maxAbs(want), `|Δ| ${maxDiff(got, want)}`);
      assert.equal(argmaxAgreement(got, want), 1);
    } finally {
      await runner.release();
    }
  });
});
