import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { noGrad } from '../../autograd/index.ts';
import { withBackend } from '../../backend/index.ts';
import { LSTM } from '../../nn/rnn.ts';
import { quantizeMultiplier, multiplierValue } from '../../runtime/requantize.ts';
import { concat, randn, reshape, Rng, Tensor } from '../../tensor/index.ts';
import { setIntKernelsReference } from '../../runtime/kernels/index.ts';
import { convertQuantLSTM, IntLSTM, intLstmStep, type IntLSTMParams } from './intlstm.ts';
import { lstmPwlTables, QuantLSTM } from './qlstm.ts';
import { assertLearnsRunningMean, pwlReal, random64, randomInt8, randomRowMultipliers, roundAway } from './testing.ts';

function flat(...ts: Tensor[]): Tensor {
  return concat(ts.map((t) => reshape(t, [t.size])), 0);
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/**
 * The same fixed-point step written in real (float64) units: every value is its real number,
 * each rounding is done on the real value scaled to its grid. Returns h codes and c codes.
 */
function simulateStep(p: IntLSTMParams, x: Int8Array, h: Int8Array, c: Int16Array): { h: number[]; c: number[] } {
  const { inputSize: I, hiddenSize: H } = p;
  const act: number[] = [];
  for (let r = 0; r < 4 * H; r++) {
    let accX = 0;
    let accH = 0;
    for (let j = 0; j < I; j++) accX += p.weightIh[r * I + j]! * x[j]!;
    for (let j = 0; j < H; j++) accH += p.weightHh[r * H + j]! * h[j]!;
    const zx = roundAway(accX * multiplierValue({ multiplier: p.multiplierIh[r]!, shift: p.shiftIh[r]! })) / 4096;
    const zh = roundAway(accH * multiplierValue({ multiplier: p.multiplierHh[r]!, shift: p.shiftHh[r]! })) / 4096;
    const z = clamp(zx + zh + p.bias[r]! / 4096, -8, 32767 / 4096);
    act.push(pwlReal(r >= 2 * H && r < 3 * H ? p.tanh : p.sigmoid, z));
  }
  const hOut: number[] = [];
  const cOut: number[] = [];
  for (let k = 0; k < H; k++) {
    const [i, f, g, o] = [act[k]!, act[H + k]!, act[2 * H + k]!, act[3 * H + k]!];
    const fc = Math.floor(f * (c[k]! / 2048) * 2048 + 0.5) / 2048;
    const ig = Math.floor(i * g * 2048 + 0.5) / 2048;
    const cNew = clamp(fc + ig, -16, 32767 / 2048);
    cOut.push(cNew * 2048);
    const t = pwlReal(p.tanh, cNew);
    const ot = Math.floor(o * t * 32768 + 0.5) / 32768;
    const hv = roundAway(ot * 32768 * multiplierValue({ multiplier: p.outputMultiplier, shift: p.outputShift }));
    hOut.push(clamp(hv, -127, 127) + 0);
  }
  return { h: hOut, c: cOut };
}

function randomParams(rng: Rng, I: number, H: number): IntLSTMParams {
  const rows = 4 * H;
  const int8 = (n: number): Int8Array => randomInt8(rng, n);
  const mult = (lo: number, hi: number): { m: Int32Array; s: Int32Array } => randomRowMultipliers(rng, rows, lo, hi);
  // Ratios s_w·s_x·2^12 of a trained model are ~1e-2 .. 1; these reach saturation of z too.
  const ih = mult(2e-3, 0.5);
  const hh = mult(2e-3, 0.5);
  const out = quantizeMultiplier(2 ** -15 / (0.9 / 127));
  const tables = lstmPwlTables(8);
  return {
    inputSize: I, hiddenSize: H, inputScale: 0.1, hiddenScale: 0.9 / 127,
    weightIh: int8(rows * I), weightHh: int8(rows * H),
    multiplierIh: ih.m, shiftIh: ih.s, multiplierHh: hh.m, shiftHh: hh.s,
    bias: Int32Array.from({ length: rows }, () => Math.round((rng.uniform() * 2 - 1) * 20000)),
    outputMultiplier: out.multiplier, outputShift: out.shift,
    sigmoid: tables.sigmoid, tanh: tables.tanh,
  };
}

describe('IntLSTM step', () => {
  it('equals a float64 simulation of the same fixed-point arithmetic exactly (incl. saturated gates and cells)', () => {
    const rng = new Rng(17);
    const I = 7;
    const H = 6;
    let saturatedCells = 0;
    for (let trial = 0; trial < 40; trial++) {
      const p = randomParams(rng, I, H);
      const x = Int8Array.from({ length: I }, () => Math.floor(rng.uniform() * 255) - 127);
      const h = Int8Array.from({ length: H }, () => Math.floor(rng.uniform() * 255) - 127);
      const c = Int16Array.from({ length: H }, () => Math.floor(rng.uniform() * 65536) - 32768);
      if (trial % 4 === 0) {
        // Gates near 1 and a cell near its top: f·c + i·g passes 2^15 and must clamp.
        p.bias.fill(30000);
        c.fill(32000);
      }
      const out = { h: new Int8Array(H), c: new Int16Array(H) };
      intLstmStep(p, 1, x, { h, c }, out, new Int32Array(4 * H));
      const sim = simulateStep(p, x, h, c);
      assert.deepEqual(Array.from(out.h), sim.h, `trial ${trial} h`);
      assert.deepEqual(Array.from(out.c), sim.c, `trial ${trial} c`);
      saturatedCells += sim.c.filter((v) => v === 32767 || v === -32768).length;
    }
    assert.ok(saturatedCells > 0, 'the cases reach the int16 clamp of the cell');
  });
});

describe('IntLSTM.run', () => {
  it('equals the loop reference intLstmStep step by step, with the native and the reference int8 GEMM', () => {
    const rng = new Rng(23);
    const [L, N, I, H] = [5, 3, 7, 6];
    const p = randomParams(rng, I, H);
    const x = Int8Array.from({ length: L * N * I }, () => Math.floor(rng.uniform() * 255) - 127);
    const initial = { h: Int8Array.from({ length: N * H }, () => Math.floor(rng.uniform() * 255) - 127), c: Int16Array.from({ length: N * H }, () => Math.floor(rng.uniform() * 8000) - 4000) };
    let state = { h: initial.h.slice(), c: initial.c.slice() };
    const expected: number[] = [];
    for (let t = 0; t < L; t++) {
      const next = { h: new Int8Array(N * H), c: new Int16Array(N * H) };
      intLstmStep(p, N, x.subarray(t * N * I, (t + 1) * N * I), state, next, new Int32Array(4 * H));
      expected.push(...next.h);
      state = next;
    }
    for (const reference of [false, true]) {
      setIntKernelsReference(reference);
      try {
        const { output, state: final } = new IntLSTM(p).run(x, L, N, initial);
        assert.deepEqual(Array.from(output), expected);
        assert.deepEqual(final, state);
      } finally {
        setIntKernelsReference(false);
      }
    }
  });
});

describe('QuantLSTM', () => {
  it('quantize=false: gradients of x, h0, c0 and every parameter match float64 finite differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(3);
      const model = new QuantLSTM(3, 2, { quantize: false, dtype: 'float64', rng, segments: 8 });
      const x = random64([3, 2, 3], rng, 2).requiresGrad_();
      const h0 = random64([2, 2], rng).requiresGrad_();
      const c0 = random64([2, 2], rng).requiresGrad_();
      const result = gradcheck(() => {
        const [out, [h, c]] = model.forward(x, [h0, c0]);
        return flat(out, h, c);
      }, [x, h0, c0, ...model.parameters()]);
      assert.equal(result.relativeErrors.length, 7);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });

  it('fromLSTM: the float PWL LSTM tracks nn.LSTM within the PWL error, the fake-quant one within int8 noise', () => {
    const rng = new Rng(8);
    const lstm = new LSTM(4, 8, { rng, batchFirst: true });
    const x = randn([3, 5, 4], { rng });
    const [ref] = noGrad(() => lstm.forward(x));
    const pwl = QuantLSTM.fromLSTM(lstm, { quantize: false });
    const fake = QuantLSTM.fromLSTM(lstm);
    fake.forward(x);
    fake.eval();
    const [a] = noGrad(() => pwl.forward(x));
    const [b] = noGrad(() => fake.forward(x));
    let errA = 0;
    let errB = 0;
    for (let i = 0; i < ref.size; i++) {
      errA = Math.max(errA, Math.abs(a.data[i]! - ref.data[i]!));
      errB = Math.max(errB, Math.abs(b.data[i]! - ref.data[i]!));
    }
    // Measured: 0.0080 (PWL only) and 0.0073 (fake quant); the 16-segment tanh alone is 7.1e-3 off at worst.
    assert.ok(errA < 0.012, `PWL LSTM vs LSTM ${errA}`);
    assert.ok(errB < 0.02, `fake-quant LSTM vs LSTM ${errB}`);
    assert.throws(() => QuantLSTM.fromLSTM(new LSTM(4, 8, { numLayers: 2 })), RangeError);
  });

  it('QAT trains (straight-through gradients): the loss on a tiny sequence task drops by more than half', () => {
    const rng = new Rng(21);
    const model = new QuantLSTM(2, 8, { rng, segments: 8 });
    assertLearnsRunningMean(model, rng);
  });
});

describe('IntLSTM vs the fake-quant QuantLSTM', () => {
  it('h codes agree within 1 LSB on a random tiny sequence (measured: 256 of 256 equal), final c within 1 LSB', () => {
    const rng = new Rng(3);
    const [L, N, I, H] = [8, 4, 5, 8];
    const model = new QuantLSTM(I, H, { rng });
    const x = randn([L, N, I], { rng });
    model.forward(x);
    model.eval();
    const [out, [, cN]] = noGrad(() => model.forward(x));
    const runtime = convertQuantLSTM(model);
    const { output, state } = runtime.run(runtime.quantizeInput(x.data), L, N);
    let worst = 0;
    let equal = 0;
    for (let i = 0; i < output.length; i++) {
      const d = Math.abs(output[i]! - Math.round(out.data[i]! / model.hiddenScale));
      worst = Math.max(worst, d);
      if (d === 0) equal++;
    }
    assert.ok(worst <= 1, `worst ${worst} LSB`);
    assert.ok(equal >= 0.95 * output.length, `${equal} of ${output.length} equal`);
    for (let i = 0; i < state.c.length; i++) assert.ok(Math.abs(state.c[i]! - Math.round(cN.data[i]! * 2048)) <= 1);
    assert.throws(() => convertQuantLSTM(new QuantLSTM(2, 2, { quantize: false, segments: 8 })), /quantize=false/);
    assert.throws(() => convertQuantLSTM(new QuantLSTM(2, 2, { segments: 8 })), /never observed/);
    assert.throws(() => runtime.run(new Int8Array(3), 1, 1), RangeError);
  });
});
