import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { noGrad } from '../../autograd/index.ts';
import { withBackend } from '../../backend/index.ts';
import { setIntKernelsReference } from '../../runtime/kernels/index.ts';
import { concat, randn, reshape, Rng, Tensor } from '../../tensor/index.ts';
import { convertQuantLSTM, intLstmStep, type IntLSTMState } from './intlstm.ts';
import { QuantLSTM } from './qlstm.ts';
import { assertLearnsRunningMean } from './testing.ts';

function random64(shape: number[], rng: Rng, scale = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

/** An LN-LSTM with random (not unit) γ, β, observed on x. */
function lnModel(I: number, H: number, rng: Rng, options: { batchFirst?: boolean; eps?: number } = {}): QuantLSTM {
  const model = new QuantLSTM(I, H, { rng, segments: 8, layerNorm: true, ...options });
  for (const p of [model.lnIhWeight!, model.lnHhWeight!, model.lnCellWeight!]) for (let i = 0; i < p.size; i++) p.data[i] = 0.3 + 1.5 * rng.uniform();
  for (let i = 0; i < model.hiddenSize; i++) model.lnCellBias!.data[i] = rng.uniform() - 0.5;
  return model;
}

describe('LN-LSTM: QuantLSTM({ layerNorm: true }) ↔ IntLSTM', () => {
  it('the fake-quant output, final h and c equal the integer runtime bit for bit (time-major and batch-first, with an initial state)', () => {
    const rng = new Rng(31);
    const [L, N, I, H] = [6, 5, 4, 7];
    for (const batchFirst of [false, true]) {
      const model = lnModel(I, H, rng, { batchFirst });
      const x = randn(batchFirst ? [N, L, I] : [L, N, I], { rng, std: 1.5 });
      const h0 = randn([N, H], { rng, std: 0.5 });
      const c0 = randn([N, H], { rng, std: 2 });
      model.forward(x, [h0, c0]);
      model.forward(x, [h0, c0]);
      model.eval();
      const [out, [hN, cN]] = noGrad(() => model.forward(x, [h0, c0]));
      const runtime = convertQuantLSTM(model);
      assert.match(runtime.cellBackend, /^typescript \(.*(layer normalisation|not loaded|predates)/);
      // The runtime reads time-major x.
      const xt = batchFirst ? new Tensor(new Float32Array(L * N * I), [L, N, I]) : x;
      if (batchFirst) for (let n = 0; n < N; n++) for (let t = 0; t < L; t++) for (let j = 0; j < I; j++) xt.data[(t * N + n) * I + j] = x.data[(n * L + t) * I + j]!;
      const initial: IntLSTMState = {
        h: Int8Array.from(h0.data, (v) => Math.max(-127, Math.min(127, Math.round(v / model.hiddenScale)))),
        c: Int16Array.from(c0.data, (v) => Math.max(-32768, Math.min(32767, Math.round(v * 2048)))),
      };
      const { output, state } = runtime.run(runtime.quantizeInput(xt.data), L, N, initial);
      const sh = model.hiddenScale;
      for (let t = 0; t < L; t++) {
        for (let n = 0; n < N; n++) {
          for (let k = 0; k < H; k++) {
            const fake = out.data[(batchFirst ? n * L + t : t * N + n) * H + k]!;
            assert.equal(fake, Math.fround(output[(t * N + n) * H + k]! * sh), `batchFirst ${batchFirst}: step ${t} sequence ${n} unit ${k}`);
          }
        }
      }
      for (let i = 0; i < N * H; i++) {
        assert.equal(hN.data[i], Math.fround(state.h[i]! * sh));
        assert.equal(cN.data[i], Math.fround(state.c[i]! / 2048));
      }
    }
  });

  it('IntLSTM.run with layer norm equals the loop reference intLstmStep, with the native and the reference int8 GEMM', () => {
    const rng = new Rng(32);
    const [L, N, I, H] = [4, 3, 5, 6];
    const model = lnModel(I, H, rng, { eps: 1e-3 });
    const x = randn([L, N, I], { rng });
    model.forward(x);
    model.eval();
    const runtime = convertQuantLSTM(model);
    assert.ok(runtime.params.layerNorm!.cell.epsCode > 0 && runtime.params.layerNorm!.ih.epsCode > 0);
    const xq = runtime.quantizeInput(x.data);
    let state: IntLSTMState = { h: new Int8Array(N * H), c: new Int16Array(N * H) };
    const expected: number[] = [];
    for (let t = 0; t < L; t++) {
      const next = { h: new Int8Array(N * H), c: new Int16Array(N * H) };
      intLstmStep(runtime.params, N, xq.subarray(t * N * I, (t + 1) * N * I), state, next, new Int32Array(4 * H));
      expected.push(...next.h);
      state = next;
    }
    for (const reference of [false, true]) {
      setIntKernelsReference(reference);
      try {
        const { output, state: final } = runtime.run(xq, L, N);
        assert.deepEqual(Array.from(output), expected);
        assert.deepEqual(final, state);
        assert.deepEqual(runtime.run(xq, L, N, undefined, { native: false }).output, output);
      } finally {
        setIntKernelsReference(false);
      }
    }
  });

  it('the integer LN-LSTM tracks the float LN-LSTM (same weights, quantize=false) within int8 noise', () => {
    const rng = new Rng(33);
    const [L, N, I, H] = [8, 6, 5, 16];
    const fake = lnModel(I, H, rng);
    const float = new QuantLSTM(I, H, { segments: 8, layerNorm: true, quantize: false });
    float.loadStateDict(fake.stateDict());
    const x = randn([L, N, I], { rng });
    fake.forward(x);
    fake.eval();
    const runtime = convertQuantLSTM(fake);
    const { output } = runtime.run(runtime.quantizeInput(x.data), L, N);
    const [ref] = noGrad(() => float.forward(x));
    let worst = 0;
    let first = 0;
    let total = 0;
    for (let i = 0; i < output.length; i++) {
      const err = Math.abs(output[i]! * runtime.params.hiddenScale - ref.data[i]!);
      worst = Math.max(worst, err);
      if (i < N * H) first = Math.max(first, err);
      total += err;
    }
    // Measured (h ∈ (−1, 1), one int8 step of h 0.0075 here): mean 0.0052, step 0 at most 0.011,
    // all steps at most 0.108 — the layer norm of W_hh·h rescales the int8 noise of a small h, and
    // the recurrence carries it on.
    assert.ok(total / output.length < runtime.params.hiddenScale, `mean |h_int − h_float| = ${total / output.length}`);
    assert.ok(first < 0.02, `step 0: ${first}`);
    assert.ok(worst < 0.15, `worst |h_int − h_float| = ${worst}`);
  });
});

describe('LN-LSTM training', () => {
  it('quantize=false: gradients of x, h0, c0 and every parameter (incl. γ, β of the layer norms) match float64 finite differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(34);
      const model = new QuantLSTM(3, 2, { quantize: false, dtype: 'float64', rng, segments: 8, layerNorm: true });
      for (const p of [model.lnIhWeight!, model.lnHhWeight!, model.lnCellWeight!, model.lnCellBias!]) for (let i = 0; i < p.size; i++) p.data[i] = 0.5 + rng.uniform();
      const x = random64([3, 2, 3], rng, 2).requiresGrad_();
      const h0 = random64([2, 2], rng).requiresGrad_();
      const c0 = random64([2, 2], rng).requiresGrad_();
      const result = gradcheck(() => {
        const [out, [h, c]] = model.forward(x, [h0, c0]);
        return concat([out, h, c].map((t) => reshape(t, [t.size])), 0);
      }, [x, h0, c0, ...model.parameters()]);
      assert.equal(result.relativeErrors.length, 11);
      assert.ok(result.maxRelativeError < 1e-5, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });

  it('QAT of the LN-LSTM trains (integer forward, float gradients): the loss on a tiny sequence task drops by more than half', () => {
    const rng = new Rng(35);
    const model = new QuantLSTM(2, 8, { rng, segments: 8, layerNorm: true });
    assertLearnsRunningMean(model, rng);
  });
});
