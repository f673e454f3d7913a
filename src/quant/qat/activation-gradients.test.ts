import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { linear, mul, quantizeGradient, relu, stochasticQuantize, sum, Tensor, manualSeed } from '../../tensor/index.ts';
import { Rng } from '../../tensor/random.ts';
import { noGrad } from '../../autograd/engine.ts';
import { BatchNorm2d, Conv2d, Flatten, Linear, ReLU, Sequential, lenet5, type Module } from '../../nn/index.ts';
import { int4PerChannelSym, uint4Lsq, uint8Ema } from '../config/presets.ts';
import { prepareQat, quantizeActivationGradients, QuantConv2d, QuantConvBn2d, QuantLinear, type ActivationGradientOptions } from './index.ts';

/**
 * Independent float64 reference of DoReFa's gradient quantizer (written from the paper's formula,
 * not from the kernel): per group, m = max|g|, n = 2^k − 1,
 * ĝ = 2m·(floor(n·(g/(2m) + 1/2) + u)/n − 1/2), u the group's uniform draws in element order.
 */
function dorefaReference(g: ArrayLike<number>, rows: number, bits: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const n = 2 ** bits - 1;
  const width = g.length / rows;
  const out = new Float64Array(g.length);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let i = r * width; i < (r + 1) * width; i++) m = Math.max(m, Math.abs(g[i]!));
    for (let i = r * width; i < (r + 1) * width; i++) {
      const u = rng.uniform();
      if (m === 0) continue;
      const q = Math.min(n, Math.floor(n * (g[i]! / (2 * m) + 0.5) + u));
      out[i] = 2 * m * (q / n - 0.5);
    }
  }
  return out;
}

function randomTensor(rng: Rng, shape: number[], dtype: 'float32' | 'float64' = 'float64', std = 1): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = dtype === 'float64' ? new Float64Array(size) : new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = std * rng.normal();
  return new Tensor(data, shape);
}

/** x.grad after backward of Σ C ⊙ quantizeGradient(x): the quantized upstream gradient C. */
function quantizedUpstream(upstream: Tensor, options: Parameters<typeof quantizeGradient>[1]): Tensor {
  const x = randomTensor(new Rng(99), [...upstream.shape], upstream.dtype === 'float64' ? 'float64' : 'float32').requiresGrad_();
  sum(mul(quantizeGradient(x, options), upstream)).backward();
  return x.grad!;
}

function maxAbs(values: ArrayLike<number>, start = 0, end = values.length): number {
  let m = 0;
  for (let i = start; i < end; i++) m = Math.max(m, Math.abs(values[i]!));
  return m;
}

describe('quantizeGradient / stochasticQuantize (DoReFa gradient quantizer)', () => {
  it('forward is the identity, bit for bit (float32 and float64)', () => {
    const rng = new Rng(1);
    for (const dtype of ['float32', 'float64'] as const) {
      const x = randomTensor(rng, [3, 4, 5], dtype).requiresGrad_();
      const y = quantizeGradient(x, { bits: 4, seed: 3 });
      assert.deepEqual(y.data, x.data);
      assert.notEqual(y.data, x.data);
      assert.equal(y.dtype, dtype);
    }
  });

  it('backward: every value lies on the k-bit grid (2q − n)·m/n (dorefa) or q·m/n (symmetric), per tensor or per sample', () => {
    const rng = new Rng(2);
    for (const bits of [2, 3, 4, 6]) {
      for (const granularity of ['tensor', 'sample'] as const) {
        for (const grid of ['dorefa', 'symmetric'] as const) {
          const upstream = randomTensor(rng, [4, 3, 6, 6]);
          // Row 2 is scaled down: with per-sample scales its grid is finer than the others'.
          for (let i = 2 * 108; i < 3 * 108; i++) upstream.data[i] = upstream.data[i]! * 0.01;
          const g = quantizedUpstream(upstream, { bits, granularity, grid, seed: 5 + bits });
          const rows = granularity === 'sample' ? 4 : 1;
          const width = g.size / rows;
          const n = grid === 'dorefa' ? 2 ** bits - 1 : 2 ** (bits - 1) - 1;
          for (let r = 0; r < rows; r++) {
            const m = maxAbs(upstream.data, r * width, (r + 1) * width);
            const levels = new Set<number>();
            for (let i = r * width; i < (r + 1) * width; i++) {
              const level = g.data[i]! / (m / n);
              const j = Math.round(level);
              assert.ok(Math.abs(level - j) < 1e-9, `${bits} bits ${granularity} ${grid}: ${g.data[i]} is not on the grid of step ${m / n}`);
              assert.ok(Math.abs(j) <= n, `level ${j} outside ±${n}`);
              if (grid === 'dorefa') assert.equal(Math.abs(j) % 2, 1, `dorefa level ${j} should be odd`);
              // Stochastic rounding moves a value to one of its two neighbouring levels.
              const spacing = grid === 'dorefa' ? 2 * m / n : m / n;
              assert.ok(Math.abs(g.data[i]! - upstream.data[i]!) < spacing * (1 + 1e-12));
              levels.add(j);
            }
            if (bits === 2) assert.equal(levels.size, grid === 'dorefa' ? 4 : 3, `${granularity} ${grid}: 2 bits should reach every level`);
          }
        }
      }
    }
  });

  it('matches an independent float64 reference of the paper\'s formula, and the backward is stochasticQuantize with the same seed', () => {
    const rng = new Rng(3);
    const upstream = randomTensor(rng, [5, 17]);
    for (const granularity of ['tensor', 'sample'] as const) {
      const expected = dorefaReference(upstream.data, granularity === 'sample' ? 5 : 1, 4, 1234);
      const direct = stochasticQuantize(upstream, { bits: 4, granularity, seed: 1234 });
      for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(direct.data[i]! - expected[i]!) < 1e-12, `${granularity} element ${i}: ${direct.data[i]} vs ${expected[i]}`);
      assert.deepEqual(quantizedUpstream(upstream, { bits: 4, granularity, seed: 1234 }).data, direct.data);
    }
  });

  it('unbiased: the mean of 4,000 6-bit draws is within 5·Δ/(2√N) of g for each of 40 entries (Δ the level spacing)', () => {
    const rng = new Rng(4);
    const entries = 40;
    const draws = 4000;
    const g = randomTensor(rng, [entries]);
    // N identical rows quantized per sample: the same scale m, independent draws per row.
    const rows = new Float64Array(draws * entries);
    for (let r = 0; r < draws; r++) rows.set(g.data, r * entries);
    for (const grid of ['dorefa', 'symmetric'] as const) {
      const q = stochasticQuantize(new Tensor(rows, [draws, entries]), { bits: 6, granularity: 'sample', grid, seed: 77 });
      const m = maxAbs(g.data);
      // A value between two levels Δ apart is a two-point draw with variance ≤ Δ²/4: the mean of N
      // has standard deviation ≤ Δ/(2√N); 5 of those bound the error (per entry, p ≈ 6e-7).
      const spacing = grid === 'dorefa' ? 2 * m / 63 : m / 31;
      const tolerance = 5 * spacing / (2 * Math.sqrt(draws));
      let worstBiased = 0;
      for (let i = 0; i < entries; i++) {
        let total = 0;
        for (let r = 0; r < draws; r++) total += q.data[r * entries + i]!;
        const mean = total / draws;
        assert.ok(Math.abs(mean - g.data[i]!) < tolerance, `${grid} entry ${i}: mean ${mean} vs ${g.data[i]} (tolerance ${tolerance})`);
        // What a biased rounding (to the nearest level) would be off by: far above the tolerance.
        const nearest = grid === 'dorefa' ? (2 * Math.round((g.data[i]! / (m / 63) + 63) / 2) - 63) * (m / 63) : Math.round(g.data[i]! / spacing) * spacing;
        worstBiased = Math.max(worstBiased, Math.abs(nearest - g.data[i]!));
      }
      assert.ok(worstBiased > 4 * tolerance, 'the test would catch round-to-nearest');
    }
  });

  it('16 bits: within max|g|/(2^15 − 1) of float', () => {
    const rng = new Rng(5);
    const upstream = randomTensor(rng, [8, 50]);
    const m = maxAbs(upstream.data);
    for (const grid of ['dorefa', 'symmetric'] as const) {
      const g = quantizedUpstream(upstream, { bits: 16, grid, seed: 9 });
      let worst = 0;
      for (let i = 0; i < g.size; i++) worst = Math.max(worst, Math.abs(g.data[i]! - upstream.data[i]!));
      assert.ok(worst < m / 32767, `${grid}: error ${worst} vs bound ${m / 32767}`);
      assert.ok(worst > 0);
    }
  });

  it('deterministic with a seed, different across seeds; zero gradients stay zero, NaN propagates', () => {
    const upstream = randomTensor(new Rng(6), [3, 20]);
    const a = stochasticQuantize(upstream, { bits: 3, seed: 42 });
    const b = stochasticQuantize(upstream, { bits: 3, seed: 42 });
    const c = stochasticQuantize(upstream, { bits: 3, seed: 43 });
    assert.deepEqual(a.data, b.data);
    assert.notDeepEqual(a.data, c.data);
    const zeros = stochasticQuantize(new Tensor(new Float64Array(6), [2, 3]), { bits: 4, seed: 1 });
    assert.deepEqual([...zeros.data], [0, 0, 0, 0, 0, 0]);
    const withNan = stochasticQuantize(new Tensor(Float64Array.from([1, Number.NaN, 2, 3, 4, 5]), [2, 3]), { bits: 4, granularity: 'sample', seed: 1 });
    assert.ok([...withNan.data.subarray(0, 3)].every(Number.isNaN));
    assert.ok([...withNan.data.subarray(3)].every(Number.isFinite));
    const nanAmongZeros = stochasticQuantize(new Tensor(Float64Array.from([0, Number.NaN, 0, 0]), [4]), { bits: 4, seed: 1 });
    assert.ok([...nanAmongZeros.data].every(Number.isNaN));
    // The default seed is drawn from the global generator: reproducible after manualSeed.
    manualSeed(11);
    const first = quantizedUpstream(upstream, { bits: 3 });
    manualSeed(11);
    assert.deepEqual(quantizedUpstream(upstream, { bits: 3 }).data, first.data);
  });

  it('refuses bad options, naming the argument', () => {
    const x = randomTensor(new Rng(7), [2, 2]);
    assert.throws(() => quantizeGradient(x, { bits: 1 }), /quantizeGradient: bits must be an integer in \[2, 16\], got 1/);
    assert.throws(() => quantizeGradient(x, { bits: 17 }), /got 17/);
    assert.throws(() => quantizeGradient(x, { bits: 4.5 }), /got 4.5/);
    assert.throws(() => stochasticQuantize(x, { bits: 4, seed: -1 }), /stochasticQuantize: seed must be a uint32 integer, got -1/);
    assert.throws(() => stochasticQuantize(x, { bits: 4, granularity: 'channel' as 'tensor' }), /granularity must be 'tensor' or 'sample', got "channel"/);
    assert.throws(() => stochasticQuantize(x, { bits: 4, grid: 'nearest' as 'dorefa' }), /grid must be 'dorefa' or 'symmetric'/);
  });
});

describe('quantized activation gradients in QAT layers', () => {
  /** fc1 (3 → 4) → ReLU → fc2 (4 → 2), int4 per-channel weights (STE), uint8 EMA inputs (STE). */
  function toy(activationGradients?: ActivationGradientOptions): Sequential {
    manualSeed(21);
    const model = new Sequential(new Linear(3, 4), new ReLU(), new Linear(4, 2));
    return prepareQat(model, { weight: int4PerChannelSym, activation: uint8Ema }, activationGradients ? { activationGradients } : {});
  }

  it('2-layer toy: same forward; parameter gradients equal the closed form with ĝ2 = Q(C), ĝ1 = Q((ĝ2·Wq2) ⊙ [h > 0])', () => {
    const rng = new Rng(8);
    const x = randomTensor(rng, [5, 3], 'float32');
    const upstream = randomTensor(rng, [5, 2], 'float32');
    const bits = 3;
    const seed = 17;
    const run = (options?: ActivationGradientOptions): { model: Sequential; out: Tensor } => {
      const model = toy(options);
      const out = model.forward(x);
      sum(mul(out, upstream)).backward();
      return { model, out };
    };
    const plain = run();
    const quantized = run({ bits, seed });
    assert.deepEqual(quantized.out.data, plain.out.data, 'the forward pass does not change');

    // Closed form, in float64 from the model's fake-quant values (taken in eval mode: same ranges).
    const model = quantized.model;
    model.eval();
    const [fc1, , fc2] = [...model] as [QuantLinear, ReLU, QuantLinear];
    const values = noGrad(() => {
      const wq1 = fc1.weightQuantizer!.forward(fc1.weight);
      const wq2 = fc2.weightQuantizer!.forward(fc2.weight);
      const a0 = fc1.inputQuantizer!.forward(x);
      const h = linear(a0, wq1, fc1.bias);
      const a1 = fc2.inputQuantizer!.forward(relu(h));
      return { wq2: Float64Array.from(wq2.data), a0: Float64Array.from(a0.data), h: Float64Array.from(h.data), a1: Float64Array.from(a1.data) };
    });
    const draws = new Rng(seed);
    const seed1 = draws.nextUint32();  // fc1 runs first in the forward pass
    const seed2 = draws.nextUint32();
    const g2 = dorefaReference(upstream.data, 1, bits, seed2);
    const g1raw = new Float64Array(5 * 4);
    for (let r = 0; r < 5; r++) {
      for (let j = 0; j < 4; j++) {
        let s = 0;
        for (let k = 0; k < 2; k++) s += g2[r * 2 + k]! * values.wq2[k * 4 + j]!;
        g1raw[r * 4 + j] = values.h[r * 4 + j]! > 0 ? s : 0;
      }
    }
    const g1 = dorefaReference(g1raw, 1, bits, seed1);
    const outer = (g: Float64Array, a: Float64Array, outF: number, inF: number): Float64Array => {
      const w = new Float64Array(outF * inF);
      for (let r = 0; r < 5; r++) for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) w[o * inF + i] += g[r * outF + o]! * a[r * inF + i]!;
      return w;
    };
    const colSum = (g: Float64Array, outF: number): Float64Array => {
      const b = new Float64Array(outF);
      for (let r = 0; r < 5; r++) for (let o = 0; o < outF; o++) b[o] += g[r * outF + o]!;
      return b;
    };
    const close = (actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void => {
      assert.equal(actual.length, expected.length);
      for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(actual[i]! - expected[i]!) < 1e-5 * (1 + Math.abs(expected[i]!)), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
    };
    close(fc2.weight.grad!.data, outer(g2, values.a1, 2, 4), 'fc2.weight.grad');
    close(fc2.bias!.grad!.data, colSum(g2, 2), 'fc2.bias.grad');
    close(fc1.weight.grad!.data, outer(g1, values.a0, 4, 3), 'fc1.weight.grad');
    close(fc1.bias!.grad!.data, colSum(g1, 4), 'fc1.bias.grad');
    // And the float-gradient model's differ (the activation-gradient path is the only change).
    const [pfc1] = [...plain.model] as [QuantLinear];
    assert.notDeepEqual(pfc1.weight.grad!.data, fc1.weight.grad!.data);
  });

  it('only the chosen layers, only in training; null turns it off; bad options leave the model unprepared', () => {
    const model = toy({ bits: 4, layers: ['2'] });
    const [fc1, , fc2] = [...model] as [QuantLinear, ReLU, QuantLinear];
    assert.equal(fc1.activationGradientQuantizer, null);
    assert.equal(fc2.activationGradientQuantizer?.bits, 4);
    const x = randomTensor(new Rng(9), [3, 3], 'float32').requiresGrad_();
    assert.equal(fc2.forward(fc1.forward(x)).node?.op, 'quantizeGradient');
    model.eval();
    assert.notEqual(fc2.forward(fc1.forward(x)).node?.op, 'quantizeGradient');
    model.train();
    assert.deepEqual(quantizeActivationGradients(model, { bits: 8, granularity: 'sample' }), ['0', '2']);
    const [again1, , again2] = [...model] as [QuantLinear, ReLU, QuantLinear];
    assert.equal(again1.activationGradientQuantizer, again2.activationGradientQuantizer);
    assert.equal(again1.activationGradientQuantizer?.describe(), '8-bit activation gradients (per-sample max scale, DoReFa grid, stochastic rounding)');
    quantizeActivationGradients(model, null);
    assert.equal(fc2.activationGradientQuantizer, null);

    const fresh = new Sequential(new Linear(3, 4), new ReLU(), new Linear(4, 2));
    assert.throws(() => prepareQat(fresh, { weight: int4PerChannelSym, activation: uint8Ema }, { activationGradients: { bits: 1 } }), /activation gradients: bits must be an integer in \[2, 16\], got 1/);
    assert.throws(() => prepareQat(fresh, { weight: int4PerChannelSym, activation: uint8Ema }, { activationGradients: { bits: 4, layers: ['fc9'] } }), /prepareQat: activation-gradient layers \["fc9"\] are not quantized layers of the model \(those are \["0","2"\]\)/);
    assert.ok(fresh.modules().every((m) => !(m instanceof QuantLinear)), 'a refused option leaves the model float');
    assert.throws(() => quantizeActivationGradients(fresh, { bits: 4 }), /no quantized layers \(call prepareQat first\)/);
  });

  it('LeNet-5: the fused conv → ReLU → pool path gives the same forward and quantizes every layer output gradient', () => {
    const build = (activationGradients?: ActivationGradientOptions): Module & { forward(x: Tensor): Tensor } => {
      manualSeed(3);
      return prepareQat(lenet5(), { weight: int4PerChannelSym, activation: uint4Lsq }, activationGradients ? { activationGradients } : {});
    };
    const x = randomTensor(new Rng(10), [2, 1, 28, 28], 'float32');
    const plain = build();
    const quantized = build({ bits: 2, granularity: 'sample' });
    const outPlain = plain.forward(x);
    const outQuantized = quantized.forward(x);
    assert.deepEqual(outQuantized.data, outPlain.data);
    sum(outQuantized).backward();
    sum(outPlain).backward();
    const conv1 = quantized.modules().find((m) => m instanceof QuantConv2d)!;
    const conv1Plain = plain.modules().find((m) => m instanceof QuantConv2d)!;
    assert.ok(conv1.weight.grad && conv1Plain.weight.grad);
    assert.notDeepEqual(conv1.weight.grad.data, conv1Plain.weight.grad.data);
  });

  it('QuantConvBn2d (BatchNorm folded): same forward, the folded output gradient is quantized', () => {
    const build = (activationGradients?: ActivationGradientOptions): Sequential => {
      manualSeed(4);
      const model = new Sequential(new Conv2d(2, 3, 3, { padding: 1 }), new BatchNorm2d(3), new ReLU(), new Flatten(), new Linear(3 * 5 * 5, 2));
      return prepareQat(model, { weight: int4PerChannelSym, activation: uint8Ema }, activationGradients ? { activationGradients } : {});
    };
    const x = randomTensor(new Rng(12), [4, 2, 5, 5], 'float32');
    const plain = build();
    const quantized = build({ bits: 2 });
    assert.ok(quantized.modules().some((m) => m instanceof QuantConvBn2d));
    const outPlain = plain.forward(x);
    const outQuantized = quantized.forward(x);
    assert.deepEqual(outQuantized.data, outPlain.data);
    sum(outQuantized).backward();
    sum(outPlain).backward();
    const conv = quantized.modules().find((m) => m instanceof QuantConvBn2d)!;
    const convPlain = plain.modules().find((m) => m instanceof QuantConvBn2d)!;
    assert.notDeepEqual(conv.weight.grad!.data, convPlain.weight.grad!.data);
  });
});
