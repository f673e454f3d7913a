/**
 * The inference path of nn.LSTM / nn.GRU (rnn-inference.ts, native lstmInference / gruInference)
 * against (a) the training path's forward (lstmSequence / gruSequence after a separate input
 * projection) and (b) a float64 copy of the layer on the reference backend, at odd sizes: hidden
 * widths below, at and across the 16-unit gate groups, batches that leave a partial 6-row block,
 * one step, both layouts, reverse directions, two layers, no bias, given h0 / c0.
 * Tolerances: the two float32 paths sum in different orders (bias first, input and hidden parts
 * in one loop), so they agree to float32 rounding, |Δ| ≤ 2e-6 on outputs bounded by 1 (c by a few
 * units); against float64, |Δ| ≤ 1e-5 (the exp/tanh approximations are within a few ulp).
 * Tests tagged [every-isa] re-run under LOWBIT_ISA=avx2 and scalar (the AVX-512 tile has
 * intrinsics, the others a portable tile).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/index.ts';
import { nativeInfo, setNativeThreads, withBackend } from '../backend/index.ts';
import { nativeAddon } from '../backend/native/index.ts';
import { runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { crossEntropy, randn, reshape, Rng, Tensor, zeros } from '../tensor/index.ts';
import { GRU, LSTM, type RNNOptions } from './rnn.ts';
import { finalHiddenInference, lastStepLinearInference, recurrentInference, setRecurrentInference } from './rnn-inference.ts';
import { NextWordModel } from './models/next-word.ts';

const info = nativeInfo();
const skip = info ? false : 'native addon unavailable';
const forcedIsa = process.env.LOWBIT_ISA !== undefined;

interface Case {
  readonly kind: 'lstm' | 'gru';
  readonly input: number;
  readonly hidden: number;
  readonly batch: number;
  readonly steps: number;
  readonly options: RNNOptions;
  readonly withState?: boolean;
}

const CASES: Case[] = [];
for (const kind of ['lstm', 'gru'] as const) {
  CASES.push(
    { kind, input: 5, hidden: 7, batch: 3, steps: 4, options: {} },
    { kind, input: 3, hidden: 16, batch: 1, steps: 1, options: { batchFirst: true } },
    { kind, input: 13, hidden: 33, batch: 13, steps: 5, options: { batchFirst: true, bidirectional: true, numLayers: 2 }, withState: true },
    { kind, input: 9, hidden: 20, batch: 7, steps: 3, options: { bias: false, bidirectional: true } },
    { kind, input: 64, hidden: 128, batch: 19, steps: 8, options: { batchFirst: true } },
  );
}
const label = (c: Case): string => `${c.kind} E${c.input} H${c.hidden} N${c.batch} L${c.steps} ${JSON.stringify(c.options)}${c.withState ? ' h0' : ''}`;

/** The layer, its input and initial state (float32 unless `dtype`). */
function build(c: Case, dtype: 'float32' | 'float64' = 'float32'): { module: LSTM | GRU; x: Tensor; state: Tensor[] | undefined } {
  const Cls = c.kind === 'lstm' ? LSTM : GRU;
  const module = new Cls(c.input, c.hidden, { ...c.options, rng: new Rng(7), dtype });
  const rng = new Rng(11);
  const cast = (t: Tensor): Tensor => (dtype === 'float32' ? t : new Tensor(Float64Array.from(t.data), t.shape));
  const x = cast(randn(c.options.batchFirst ? [c.batch, c.steps, c.input] : [c.steps, c.batch, c.input], { rng }));
  const D = c.options.bidirectional ? 2 : 1;
  const stateShape = [D * (c.options.numLayers ?? 1), c.batch, c.hidden];
  const state = c.withState ? Array.from({ length: c.kind === 'lstm' ? 2 : 1 }, () => cast(randn(stateShape, { rng }))) : undefined;
  return { module, x, state };
}

/** output, then the final states, as one flat list of arrays. */
function forward(module: LSTM | GRU, x: Tensor, state: Tensor[] | undefined): Float64Array[] {
  if (module instanceof LSTM) {
    const [out, [h, c]] = module.forward(x, state ? [state[0]!, state[1]!] : undefined);
    return [out, h, c].map((t) => Float64Array.from(t.data));
  }
  const [out, h] = module.forward(x, state?.[0]);
  return [out, h].map((t) => Float64Array.from(t.data));
}

function maxDiff(a: Float64Array[], b: Float64Array[]): number {
  assert.equal(a.length, b.length);
  let d = 0;
  a.forEach((arr, i) => {
    assert.equal(arr.length, b[i]!.length);
    for (let j = 0; j < arr.length; j++) d = Math.max(d, Math.abs(arr[j]! - b[i]![j]!));
  });
  return d;
}

/** The inference path's results: inside noGrad, asserting that the native call ran for a one-layer case. */
function inference(module: LSTM | GRU, x: Tensor, state: Tensor[] | undefined): Float64Array[] {
  return withBackend('native', () => noGrad(() => forward(module, x, state)));
}

/** The training path's forward (inference path switched off) on the native backend. */
function training(module: LSTM | GRU, x: Tensor, state: Tensor[] | undefined): Float64Array[] {
  const previous = setRecurrentInference(false);
  try {
    return withBackend('native', () => noGrad(() => forward(module, x, state)));
  } finally {
    setRecurrentInference(previous);
  }
}

describe('LSTM / GRU inference path (native lstmInference / gruInference)', { skip }, () => {
  it('[every-isa] runs when no gradient is wanted, and only then', () => {
    const module = new LSTM(4, 6, { rng: new Rng(1) });
    const x = randn([3, 2, 4], { rng: new Rng(2) });
    const cell = { weightIh: module.parameters()[0]!, weightHh: module.parameters()[1]!, biasIh: module.parameters()[2]!, biasHh: module.parameters()[3]! };
    const h0 = zeros([2, 6]);
    withBackend('native', () => {
      assert.ok(noGrad(() => recurrentInference('lstm', x, cell, [h0, h0], {})) !== null, 'inside noGrad');
      assert.equal(recurrentInference('lstm', x, cell, [h0, h0], {}), null, 'parameters require grad, grad enabled');
      const [out] = module.forward(x);
      assert.ok(out.requiresGrad, 'training forward keeps the tape');
    });
    withBackend('reference', () => assert.equal(noGrad(() => recurrentInference('lstm', x, cell, [h0, h0], {})), null, 'reference backend'));
  });

  for (const c of CASES) {
    it(`[every-isa] ${label(c)}: equals the training path's forward to float32 rounding`, () => {
      const { module, x, state } = build(c);
      const got = inference(module, x, state);
      const want = training(module, x, state);
      const d = maxDiff(got, want);
      assert.ok(d <= 2e-6, `max |Δ| ${d}`);
    });
    it(`[every-isa] ${label(c)}: equals a float64 copy on the reference backend`, () => {
      const { module, x, state } = build(c);
      const copy = build(c, 'float64');
      copy.module.loadStateDict(new Map([...module.stateDict()].map(([k, t]) => [k, new Tensor(Float64Array.from(t.data), t.shape)])));
      const want = withBackend('reference', () => noGrad(() => forward(copy.module, copy.x, copy.state)));
      const got = inference(module, x, state);
      const d = maxDiff(got, want);
      assert.ok(d <= 1e-5, `max |Δ| ${d}`);
    });
  }

  for (const cell of ['lstm', 'gru'] as const) {
    it(`[every-isa] NextWordModel (${cell}): the inference forward (recurrence + last-step head SGEMM with the bias) equals the training path's logits`, () => {
      const model = new NextWordModel({ vocabSize: 37, embeddingDim: 6, hiddenSize: 21, cell, rng: new Rng(5) });
      const ids = new Tensor(Int32Array.from({ length: 11 * 4 }, (_, i) => (i * 7) % 37), [11, 4]);
      const got = withBackend('native', () => noGrad(() => Float64Array.from(model.forward(ids).data)));
      const previous = setRecurrentInference(false);
      let want: Float64Array;
      try {
        want = withBackend('native', () => noGrad(() => Float64Array.from(model.forward(ids).data)));
      } finally {
        setRecurrentInference(previous);
      }
      assert.equal(got.length, 11 * 37);
      const d = maxDiff([got], [want]);
      assert.ok(d <= 2e-6, `max |Δ| ${d}`);
    });
  }

  it('the last-step head reads step L − 1 of each row and adds the bias (closed form at a small size)', () => {
    // out [2, 3, 2]: row n, step t, unit u = 100 n + 10 t + u; W [3, 2]; b [3].
    const out = new Tensor(Float32Array.from({ length: 12 }, (_, i) => 100 * Math.floor(i / 6) + 10 * Math.floor((i % 6) / 2) + (i % 2)), [2, 3, 2]);
    const w = new Tensor(Float32Array.from([1, 0, 0, 1, 1, 1]), [3, 2]);
    const b = new Tensor(Float32Array.from([0.5, -1, 2]), [3]);
    const logits = withBackend('native', () => noGrad(() => lastStepLinearInference(out, w, b)));
    assert.ok(logits);
    assert.deepEqual(Array.from(logits.data), [20.5, 20, 43, 120.5, 120, 243]);
    assert.equal(lastStepLinearInference(out, w.requiresGrad_(), b), null, 'a weight that requires grad, grad enabled');
  });

  it('[every-isa] h_N alone (per-step outputs in scratch) equals the full call\'s h_N bit for bit, both cells, both directions', () => {
    for (const kind of ['lstm', 'gru'] as const) {
      for (const reverse of [false, true]) {
        const G = kind === 'lstm' ? 4 : 3;
        const rng = new Rng(9);
        const cell = { weightIh: randn([G * 19, 5], { rng }), weightHh: randn([G * 19, 19], { rng }), biasIh: randn([G * 19], { rng }), biasHh: randn([G * 19], { rng }) };
        const x = randn([8, 6, 5], { rng });
        const start = Array.from({ length: kind === 'lstm' ? 2 : 1 }, () => randn([8, 19], { rng }));
        withBackend('native', () => noGrad(() => {
          const full = recurrentInference(kind, x, cell, start, { batchFirst: true, reverse });
          const last = finalHiddenInference(kind, x, cell, start, { batchFirst: true, reverse });
          assert.ok(full && last);
          assert.deepEqual(Array.from(last.data), Array.from(full.final[0]!.data));
          // and h_N is the output row of the step the recurrence ended on
          const t = reverse ? 0 : 5;
          for (let n = 0; n < 8; n++) assert.deepEqual(Array.from(full.output.data.subarray((n * 6 + t) * 19, (n * 6 + t + 1) * 19)), Array.from(last.data.subarray(n * 19, (n + 1) * 19)));
        }));
      }
    }
  });

  it('[every-isa] 1 and 2 pool threads give identical results (rows are independent)', () => {
    const threads = info ? info.threads : 1;
    try {
      for (const c of CASES.filter((k) => k.batch >= 13)) {
        const { module, x, state } = build(c);
        setNativeThreads(1);
        const one = inference(module, x, state);
        setNativeThreads(2);
        const two = inference(module, x, state);
        assert.equal(maxDiff(one, two), 0, label(c));
      }
    } finally {
      setNativeThreads(threads);
    }
  });

  it('training is unchanged: inference calls leave the weights, and the gradients of the next training step, as they were', () => {
    const grads = (inferenceCalls: number): Float64Array[] => withBackend('native', () => {
      const module = new GRU(6, 10, { batchFirst: true, rng: new Rng(3) });
      const x = randn([5, 4, 6], { rng: new Rng(4) });
      for (let i = 0; i < inferenceCalls; i++) noGrad(() => module.forward(x));
      const [out] = module.forward(x);
      crossEntropy(reshape(out, [20, 10]), new Tensor(Int32Array.from({ length: 20 }, (_, i) => i % 10), [20])).backward();
      return module.parameters().flatMap((p) => [Float64Array.from(p.data), Float64Array.from(p.grad!.data)]);
    });
    assert.equal(maxDiff(grads(3), grads(0)), 0);
  });

  it('the addon rejects operands of the wrong size with a message naming the argument', () => {
    const addon = nativeAddon()!;
    const dims = Int32Array.from([2, 3, 4, 0, 0, 5, 0]);
    const f = (n: number): Float32Array => new Float32Array(n);
    // x (2·3·5), wIh (16·5), wHh (16·4), bias 16, h0, c0 (3·4), out (2·3·4 + 2·3·4)
    assert.doesNotThrow(() => addon.lstmInference(f(30), f(80), f(64), f(16), f(12), f(12), f(48), dims));
    assert.throws(() => addon.lstmInference(f(30), f(80), f(63), f(16), f(12), f(12), f(48), dims), /lstmInference: argument 2 has 63 elements, expected 64/);
    assert.throws(() => addon.gruInference(f(30), f(60), f(48), f(12), f(12), f(12), f(48), dims), /gruInference: argument 6 has 48 elements, expected 36/);
    assert.throws(() => addon.lstmInference(f(30), f(80), f(64), f(16), f(12), f(12), f(48), Int32Array.from([2, 3, 4, 0, 0, 0, 0])), /lstmInference: bad dims/);
    // finalOnly: out = [h_N | c_N]
    assert.doesNotThrow(() => addon.lstmInference(f(30), f(80), f(64), f(16), f(12), f(12), f(24), Int32Array.from([2, 3, 4, 0, 0, 5, 1])));
    assert.throws(() => addon.lstmInference(f(30), f(80), f(64), f(16), f(12), f(12), f(48), Int32Array.from([2, 3, 4, 0, 0, 5, 1])), /argument 6 has 48 elements, expected 24/);
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 2 * CASES.length + 5, `expected the ${2 * CASES.length + 5} tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
