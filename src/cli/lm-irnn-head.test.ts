/**
 * The integer next-word LM's head (IntNextWordModel.head): the native fused int8 GEMM +
 * dequantization (native/intlmhead.cc) against the closed form in float64 —
 * float32((Σ_j h[n, j] W[r, j]) · scale[r] · hiddenScale + bias[r]) — and against the TypeScript
 * loop (`native: false`), at shapes with row, column and K tails; `[every-isa]` tests also run under
 * LOWBIT_ISA=avx2 and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../backend/native/index.ts';
import { runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { noGrad } from '../autograd/index.ts';
import { LSTM } from '../nn/index.ts';
import { convertQuantLSTM, QuantLSTM } from '../quant/irnn/index.ts';
import { nativeIntAddon } from '../runtime/kernels/index.ts';
import { randn, Rng } from '../tensor/index.ts';
import { IntNextWordModel } from './lm-irnn.ts';

const loaded = loadNative();
const skip = loaded.ok ? false : `native addon not loaded: ${loaded.reason}`;
const forcedIsa = process.env.LOWBIT_ISA;

function model(rng: Rng, V: number, E: number, H: number): IntNextWordModel {
  const lstm = new LSTM(E, H, { rng });
  const q = QuantLSTM.fromLSTM(lstm);
  for (let i = 0; i < 2; i++) noGrad(() => q.forward(randn([3, 4, E], { rng, std: 0.5 })));
  q.eval();
  const rnn = convertQuantLSTM(q);
  const int8 = (n: number): Int8Array => Int8Array.from({ length: n }, () => Math.floor(rng.uniform() * 256) - 128);
  const headWeight = int8(V * H);
  // Extremes in the weights and a row of -128 / 127, so the int32 sums reach their widest.
  headWeight.fill(-128, 0, H);
  headWeight.fill(127, H, 2 * H);
  const headScale = Float32Array.from({ length: V }, () => Math.fround((0.5 + rng.uniform()) / 127));
  const headBias = Float32Array.from({ length: V }, () => Math.fround(rng.uniform() * 4 - 2));
  return new IntNextWordModel(rnn, int8(V * E), headWeight, headScale, headBias, { context: 4, vocabulary: Array.from({ length: V }, (_, i) => `w${i}`) });
}

function closedForm(m: IntNextWordModel, h: Int8Array, batch: number): Float32Array {
  const V = m.vocabSize, H = m.rnn.hiddenSize, hs = m.rnn.params.hiddenScale;
  const out = new Float32Array(batch * V);
  for (let n = 0; n < batch; n++) {
    for (let r = 0; r < V; r++) {
      let acc = 0;
      for (let j = 0; j < H; j++) acc += h[n * H + j]! * m.headWeight[r * H + j]!;
      out[n * V + r] = acc * m.headScale[r]! * hs + m.headBias[r]!;
    }
  }
  return out;
}

describe('IntNextWordModel head (native fused int8 GEMM + dequantization)', { skip }, () => {
  const shapes: [number, number, number, number][] = [[1, 1, 3, 1], [13, 70, 5, 37], [33, 2000, 64, 128], [256, 130, 8, 16]];
  for (const [batch, V, E, H] of shapes) {
    it(`[every-isa] equals the float64 closed form bit for bit (batch ${batch}, vocabulary ${V}, hidden ${H})`, () => {
      assert.ok(nativeIntAddon()?.intLmHead, 'the addon has intLmHead');
      const rng = new Rng(batch * 7 + V);
      const m = model(rng, V, E, H);
      const h = Int8Array.from({ length: batch * H }, () => Math.floor(rng.uniform() * 256) - 128);
      h.fill(-128, 0, H);
      if (batch > 1) h.fill(127, H, 2 * H);
      const want = closedForm(m, h, batch);
      const got = m.head(h, batch);
      assert.deepEqual(got, want);
      assert.deepEqual(m.head(h, batch, { native: false }), want);
    });
  }

  it('[every-isa] logits: native and TypeScript paths give the same floats', () => {
    const rng = new Rng(5);
    const m = model(rng, 300, 16, 24);
    const ids = Int32Array.from({ length: 37 * 4 }, () => Math.floor(rng.uniform() * 300));
    const got = m.logits(ids, 37);
    assert.deepEqual(got, m.logits(ids, 37, { native: false }));
    assert.ok(got.some((v) => v !== got[0]), 'not a constant output');
  });

  it('refuses an h of the wrong size, and the addon refuses mismatched buffers', () => {
    const m = model(new Rng(1), 10, 4, 8);
    assert.throws(() => m.head(new Int8Array(15), 2), RangeError);
    const addon = nativeIntAddon()!;
    assert.throws(() => addon.intLmHead!(2, 10, 8, new Int8Array(16), new Int8Array(4), new Int32Array(10), new Float32Array(10), new Float32Array(10), 1, new Float32Array(20)), /intLmHead/);
    assert.throws(() => addon.intLmHead!(2, 10, 8, new Int8Array(16), new Int8Array(4096), new Int32Array(10), new Float32Array(10), new Float32Array(10), 1, new Float32Array(19)), /intLmHead/);
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : false }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.equal(passed, 5, `expected the 5 tagged tests to pass:\n${output}`);
    });
  }
});
