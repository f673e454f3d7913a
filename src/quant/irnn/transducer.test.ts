import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/index.ts';
import { Transducer } from '../../nn/transducer/model.ts';
import { Adam } from '../../optim/adam.ts';
import { mul, randn, Rng, sum, Tensor } from '../../tensor/index.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeLowbit, LowbitFormatError, packLowbitValues, type LowbitModel } from '../../format/lowbit.ts';
import { weightMax } from './formats.ts';
import { intLSTMToLowbit, IrnnFormatError } from './io.ts';
import { convertQuantTransducer, IntTransducer, QuantTransducer } from './transducer.ts';
import { intTransducerToLowbit, loadIntTransducer, saveIntTransducer } from './transducer-io.ts';
import { fuzzIrnnBytes } from './testing.ts';

const [F, V] = [6, 3];

/** Random frames [N, T, F], lengths, and labels [N, U] in 0..V−1. */
function batch(seed: number, N = 6, T = 7, U = 3): { features: Tensor; lengths: Int32Array; labels: Tensor; labelLengths: Int32Array } {
  const rng = new Rng(seed);
  const features = randn([N, T, F], { rng });
  const lengths = Int32Array.from({ length: N }, (_, n) => T - (n % 3));
  const labels = new Tensor(Int32Array.from({ length: N * U }, () => Math.floor(rng.uniform() * V)), [N, U]);
  const labelLengths = Int32Array.from({ length: N }, (_, n) => 1 + (n % U));
  return { features, lengths, labels, labelLengths };
}

/**
 * A small twin at `bits` whose ranges were observed on one batch. Random weights would let one
 * label win everywhere: the output weights are scaled up and the output bias centres each logit's
 * mean (blank 0.3 below), so that the decisions vary with the input.
 */
function twin(bits: number, seed = 1): QuantTransducer {
  const model = new QuantTransducer({ inputSize: F, numLabels: V, encoderSize: 8, embeddingSize: 4, predictorSize: 8, jointSize: 8, weightBits: bits, rng: new Rng(seed) });
  const weight = model.joint.output.weight.data;
  for (let i = 0; i < weight.length; i++) weight[i]! *= 4;
  const b = batch(seed + 100);
  const logits = model.forward(b.features, b.labels);
  const bias = model.joint.output.bias!.data;
  for (let k = 0; k <= V; k++) {
    let mean = 0;
    for (let i = k; i < logits.size; i += V + 1) mean += logits.data[i]! / (logits.size / (V + 1));
    bias[k]! -= mean - (k === V ? 0.3 : 0);
  }
  model.eval();
  return model;
}

describe('QuantTransducer and IntTransducer', () => {
  for (const bits of [8, 4, 2]) {
    it(`W${bits}: teacher-forced logits of the integer runtime equal the fake quantization bit for bit (encoder h codes equal)`, () => {
      const model = twin(bits);
      const runtime = convertQuantTransducer(model);
      const top = weightMax(bits);
      for (const w of [runtime.encoder.params.weightIh, runtime.predictor.params.weightHh, runtime.joint.encoderWeight, runtime.joint.outputWeight]) assert.ok(w.every((v) => Math.abs(v) <= top));
      const { features, labels } = batch(7);
      const fake = noGrad(() => model.forward(features, labels));
      const ints = runtime.logits(features, labels);
      assert.deepEqual(fake.shape, [6, 7, 4, V + 1]);
      // Precondition: the encoders agree (QuantLSTM is within 1 LSB of IntLSTM; here every code is equal).
      const enc = noGrad(() => model.encode(features));
      const encInt = runtime.encoder.run(runtime.quantizeFeatures(features), 7, 6).output;
      for (let n = 0; n < 6; n++) for (let t = 0; t < 7; t++) for (let k = 0; k < 8; k++) assert.equal(encInt[(t * 6 + n) * 8 + k], Math.round(enc.output.data[(n * 7 + t) * 8 + k]! / enc.scale));
      const distinct = new Set<number>();
      for (let i = 0; i < ints.length; i++) {
        assert.equal(fake.data[i], ints[i]! / 4096, `logit ${i}`);
        distinct.add(ints[i]!);
      }
      assert.ok(distinct.size > 50, 'the logits are not degenerate');
    });

    it(`W${bits}: the integer greedy decoder emits the same label sequences as the fake-quant greedy decoder`, () => {
      const model = twin(bits);
      const runtime = convertQuantTransducer(model);
      const counts = new Array(V).fill(0);
      const lengths = new Set<number>();
      for (const seed of [11, 12, 13]) {
        const { features, lengths: frames } = batch(seed, 8, 9);
        const fake = model.greedyDecode(features, frames, { maxSymbolsPerFrame: 2 });
        const ints = runtime.greedyDecode(features, frames, { maxSymbolsPerFrame: 2 });
        assert.deepEqual(ints, fake, `seed ${seed}`);
        for (const h of ints) {
          lengths.add(h.length);
          for (const k of h) counts[k]++;
        }
      }
      // Not vacuous: every label is emitted, and the 24 sequences have varied lengths (measured: 5 to 9 distinct lengths).
      assert.ok(counts.every((c) => c >= 3) && lengths.size >= 5, `labels ${counts.join(', ')}, lengths ${[...lengths].join(', ')}`);
    });
  }

  it('gradients: d Σ(logits·w) / d output bias is Σ w over the rows (straight-through), and QAT lowers the loss of a tiny task', () => {
    const model = new QuantTransducer({ inputSize: F, numLabels: V, encoderSize: 8, embeddingSize: 4, predictorSize: 8, jointSize: 8, weightBits: 4, rng: new Rng(3) });
    const b = batch(21, 4, 6, 2);
    const logits = model.forward(b.features, b.labels);
    const weights = randn(logits.shape, { rng: new Rng(5) });
    sum(mul(logits, weights)).backward();
    const rows = logits.size / (V + 1);
    for (let k = 0; k <= V; k++) {
      let expected = 0;
      for (let r = 0; r < rows; r++) expected += weights.data[r * (V + 1) + k]!;
      assert.ok(Math.abs(model.joint.output.bias!.grad!.data[k]! - expected) < 1e-4, `bias ${k}`);
    }
    assert.ok(model.encoder.weightIh.grad!.data.some((g) => g !== 0), 'the gradient reaches the encoder');
    assert.ok(model.predictor.embedding.weight.grad!.data.some((g) => g !== 0), 'and the embedding');
    model.zeroGrad();
    const optimizer = new Adam(model.parameters(), { lr: 0.02 });
    const losses: number[] = [];
    for (let step = 0; step < 25; step++) {
      optimizer.zeroGrad();
      const loss = model.loss(b.features, b.lengths.subarray(0, 4), b.labels, b.labelLengths.subarray(0, 4));
      loss.backward();
      optimizer.step();
      losses.push(loss.item());
    }
    assert.ok(losses.every(Number.isFinite));
    assert.ok(losses.at(-1)! < 0.7 * losses[0]!, `loss ${losses[0]} -> ${losses.at(-1)}`);
  });

  it('fromTransducer: same weights; the W8 twin tracks the float model within int8 noise; refuses a bidirectional encoder', () => {
    const float = new Transducer({ inputSize: F, numLabels: V, encoderSize: 8, embeddingSize: 4, predictorSize: 8, jointSize: 8, rng: new Rng(4) });
    const model = QuantTransducer.fromTransducer(float, { weightBits: 8 });
    assert.deepEqual(model.joint.output.weight.data, float.joint.output.weight.data);
    assert.deepEqual(model.predictor.embedding.weight.data, (float.predictor as unknown as { embedding: { weight: Tensor } }).embedding.weight.data);
    const { features, labels } = batch(8);
    model.forward(features, labels);
    model.eval();
    float.eval();
    const a = noGrad(() => model.forward(features, labels));
    const f = noGrad(() => float.forward(features, labels));
    let worst = 0;
    let range = 0;
    for (let i = 0; i < a.size; i++) {
      worst = Math.max(worst, Math.abs(a.data[i]! - f.data[i]!));
      range = Math.max(range, Math.abs(f.data[i]!));
    }
    assert.ok(worst < 0.05 * range + 0.02, `worst |Δlogit| ${worst} for logits up to ${range}`);
    assert.throws(() => QuantTransducer.fromTransducer(new Transducer({ inputSize: F, numLabels: V, encoderSize: 4, bidirectional: true })), /one-layer unidirectional/);
  });

  it('IntTransducer checks its parts and its inputs', () => {
    const runtime = convertQuantTransducer(twin(8));
    assert.throws(() => new IntTransducer({ ...runtime, embedding: new Int8Array(3) }), /embedding holds 3 codes/);
    assert.throws(() => new IntTransducer({ ...runtime, numLabels: 5 }), /numOutputs 4 ≠ numLabels \+ 1 = 6/);
    assert.throws(() => new IntTransducer({ ...runtime, joint: { ...runtime.joint, outputBias: new Int32Array(2) } }), /joint\.outputBias holds 2 values, expected 4/);
    assert.throws(() => runtime.greedyDecode(randn([2, 3, F + 1]), [3, 3]), /features must be/);
    assert.throws(() => runtime.predictorStep([V + 1]), /labels\[0\] = 4/);
    assert.throws(() => convertQuantTransducer(new QuantTransducer({ inputSize: F, numLabels: V, encoderSize: 4, predictorSize: 4, jointSize: 4 })), /never observed/);
    assert.ok(runtime.byteLength > 0);
  });
});

describe('IntTransducer file', () => {
  const model4 = twin(4);
  const runtime = convertQuantTransducer(model4);
  const frames = batch(31, 5, 8);
  const copy = (file: LowbitModel): { graph: Record<string, unknown>[]; tensors: Record<string, unknown>; metadata: Record<string, unknown> } => ({
    graph: file.graph.map((n) => structuredClone({ ...n })) as Record<string, unknown>[],
    tensors: { ...file.tensors } as Record<string, unknown>,
    metadata: structuredClone({ ...file.metadata }) as Record<string, unknown>,
  });

  it('round trip at W4 (and W2 with an 8-bit output layer): same parameters, same greedy labels; weights stored packed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-irnn-rnnt-'));
    try {
      const path = join(dir, 'rnnt.lowbit');
      const bytes = saveIntTransducer(path, runtime);
      assert.equal(bytes, readFileSync(path).length);
      const loaded = loadIntTransducer(path);
      assert.deepEqual(loaded.joint, runtime.joint);
      assert.deepEqual(loaded.encoder.params, runtime.encoder.params);
      assert.deepEqual(loaded.predictor.params, runtime.predictor.params);
      assert.deepEqual(loaded.embedding, runtime.embedding);
      assert.deepEqual(loaded.greedyDecode(frames.features, frames.lengths), runtime.greedyDecode(frames.features, frames.lengths));
      const file = intTransducerToLowbit(runtime);
      assert.equal(file.tensors['joint.encoder_weight']!.dtype, 'int4');
      assert.equal(file.tensors['encoder.weight_hh']!.dtype, 'int4');
      const w2 = new QuantTransducer({ inputSize: F, numLabels: V, encoderSize: 8, embeddingSize: 4, predictorSize: 8, jointSize: 8, weightBits: 2, outputWeightBits: 8, rng: new Rng(2) });
      const b = batch(5);
      w2.forward(b.features, b.labels);
      w2.eval();
      const r2 = convertQuantTransducer(w2);
      const f2 = intTransducerToLowbit(r2);
      assert.deepEqual([f2.tensors['joint.predictor_weight']!.dtype, f2.tensors['joint.output_weight']!.dtype, f2.tensors['predictor.weight_ih']!.dtype], ['int2', 'int8', 'int2']);
      assert.deepEqual(loadIntTransducer(encodeLowbit(f2)).joint, r2.joint);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses malformed content with a typed error naming the problem', () => {
    const change = (f: (m: ReturnType<typeof copy>) => void): LowbitModel => {
      const m = copy(intTransducerToLowbit(runtime));
      f(m);
      return m as unknown as LowbitModel;
    };
    const int32 = (v: number[]): { dtype: string; shape: number[]; data: Int32Array } => ({ dtype: 'int32', shape: [v.length], data: Int32Array.from(v) });
    const joint = (m: ReturnType<typeof copy>): Record<string, unknown> => m.graph[2]!;
    const cases: [string, LowbitModel, RegExp][] = [
      ['an LSTM file', intLSTMToLowbit(runtime.encoder), /metadata\.irnn/],
      ['two nodes', change((m) => { m.graph.pop(); }), /the graph must be/],
      ['parts swapped', change((m) => { m.graph.reverse(); }), /the graph must be|graph\[0\]/],
      ['encoder version 1 with 4-bit weights', change((m) => { m.graph[0]!.irnnVersion = 1; }), /encoder: weightBits needs version 3/],
      ['predictor hidden size', change((m) => { m.graph[1]!.hiddenSize = 9; }), /predictor: .*shape/],
      ['joint encoder size', change((m) => { joint(m).encoderSize = 7; }), /encoderSize/],
      ['numLabels', change((m) => { joint(m).numLabels = 4; }), /shape/],
      ['weightBits 9', change((m) => { joint(m).weightBits = 9; }), /weightBits/],
      ['joint multiplier', change((m) => { joint(m).jointMultiplier = 3; }), /joint activation: multiplier 3/],
      ['row shift', change((m) => { m.tensors['joint.output_shift'] = int32([99, 0, 0, 0]); }), /joint output row 0/],
      ['encoder bias beyond 2^22', change((m) => { m.tensors['joint.encoder_bias'] = int32(new Array(8).fill(2 ** 23)); }), /encoder_bias\[0\]/],
      ['output bias missing', change((m) => { delete m.tensors['joint.output_bias']; delete (joint(m).tensors as Record<string, string>).output_bias; }), /'output_bias' is missing/],
      ['4-bit code 8 in the output layer', change((m) => { m.tensors['joint.output_weight'] = packLowbitValues('int4', [4, 8], Int32Array.from({ length: 32 }, (_, i) => (i === 5 ? -8 : 0))); }), /code -8 at 5 is outside ±7/],
      ['int8 joint weights in a 4-bit joint', change((m) => { m.tensors['joint.encoder_weight'] = { dtype: 'int8', shape: [8, 8], data: new Int8Array(64) }; }), /dtype int8, expected int4/],
      ['embedding shape', change((m) => { m.tensors['joint.embedding'] = { dtype: 'int8', shape: [4, 5], data: new Int8Array(20) }; }), /embedding' has shape \[4, 5\]/],
      ['embedding −128', change((m) => { m.tensors['joint.embedding'] = { dtype: 'int8', shape: [4, 4], data: Int8Array.from({ length: 16 }, (_, i) => (i === 2 ? -128 : 0)) }; }), /embedding code -128/],
      ['tanh knots', change((m) => { const k = Int32Array.from(runtime.joint.tanh.knots); k[3] = k[2]!; m.tensors['joint.tanh.knots'] = { dtype: 'int32', shape: [k.length], data: k }; }), /tanh: .*strictly increasing/],
    ];
    for (const [what, file, pattern] of cases) {
      assert.throws(() => loadIntTransducer(encodeLowbit(file)), (e: unknown) => e instanceof IrnnFormatError && pattern.test(e.message), what);
    }
  });

  it('fuzz: truncations and random byte flips load and decode, or fail with a typed error', () => {
    const good = encodeLowbit(intTransducerToLowbit(runtime));
    const rng = new Rng(80);
    const small = batch(41, 2, 4);
    const { loaded, refused } = fuzzIrnnBytes(good, rng, 200, (bytes) => {
      const m = loadIntTransducer(bytes);
      assert.equal(m.greedyDecode(small.features, small.lengths).length, 2);
    });
    assert.ok(refused >= 5, `${refused} refused`);
    assert.ok(loaded > 0, 'some flips land in weight bytes and still load');
  });
});
