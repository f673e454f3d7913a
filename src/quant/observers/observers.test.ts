import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../tensor/tensor.ts';
import { Rng } from '../../tensor/random.ts';
import { dequantizeArray, quantizeArray } from '../core/quantize.ts';
import { qparamsFromRange, type QuantSpec } from '../core/qparams.ts';
import {
  createObserver, EntropyObserver, klThresholdBin, MinMaxObserver, MovingAverageMinMaxObserver, MseObserver, PercentileObserver,
} from './index.ts';

const uint8: QuantSpec = { bits: 8, signed: false, symmetric: false, granularity: 'tensor' };
const int8Sym: QuantSpec = { bits: 8, signed: true, symmetric: true, granularity: 'tensor' };
const int4SymCh: QuantSpec = { bits: 4, signed: true, symmetric: true, granularity: 'channel', axis: 0 };

function gaussian(rng: Rng, n: number, std = 1): Float32Array {
  return Float32Array.from({ length: n }, () => std * rng.normal());
}

/** ReLU'd Gaussian activations with a few large outliers. */
function activationsWithOutliers(rng: Rng, n: number, outlier: number): Float32Array {
  const data = Float32Array.from(gaussian(rng, n), (v) => Math.max(0, v));
  for (let i = 0; i < 5; i++) data[i * 997] = outlier;
  return data;
}

/** Σ (x − x̂)² with the core's quantize / dequantize. */
function bruteError(values: Float32Array, lo: number, hi: number, spec: QuantSpec): number {
  const qp = qparamsFromRange([lo], [hi], { ...spec, granularity: 'tensor', axis: undefined });
  const back = dequantizeArray(quantizeArray(values, [values.length], qp), [values.length], qp);
  let e = 0;
  for (let i = 0; i < values.length; i++) e += (values[i]! - back[i]!) ** 2;
  return e;
}

describe('quant/observers: min-max and moving average', () => {
  it('min-max keeps the all-time extremes (outliers included)', () => {
    const o = new MinMaxObserver();
    o.observe(new Tensor(Float32Array.from([-1, 0.5, 2]), [3]));
    o.observe(new Tensor(Float32Array.from([-3, 100, 1]), [3]));
    const qp = o.qparams(int8Sym);
    assert.equal(qp.scale[0], Math.fround(100 / 127));
    const qpu = o.qparams({ ...int8Sym, symmetric: false });
    assert.equal(qpu.scale[0], Math.fround(103 / 255));
    assert.equal(qpu.zeroPoint[0], Math.round(-128 + 3 / Math.fround(103 / 255)));
  });

  it('per channel along an axis', () => {
    const o = createObserver('minmax', { axis: 0 });
    o.observe(new Tensor(Float32Array.from([1, -2, 3, 0.5, 0.25, -0.125]), [2, 3]));
    const qp = o.qparams({ ...int4SymCh });
    assert.deepEqual(Array.from(qp.scale), [Math.fround(3 / 7), Math.fround(0.5 / 7)]);
    assert.throws(() => o.qparams(int8Sym), /axis/);
  });

  it('moving average follows r ← (1 − m)·r + m·batch', () => {
    const o = new MovingAverageMinMaxObserver({ momentum: 0.25 });
    const batches = [[0, 4], [-2, 8], [1, 2]];
    for (const b of batches) o.observe(new Tensor(Float32Array.from(b), [2]));
    let lo = 0;
    let hi = 4;
    for (const [a, b] of batches.slice(1)) {
      lo = 0.75 * lo + 0.25 * a!;
      hi = 0.75 * hi + 0.25 * b!;
    }
    const r = o.range();
    assert.ok(Math.abs(r.min[0]! - lo) < 1e-12 && Math.abs(r.max[0]! - hi) < 1e-12);
    assert.deepEqual(o.qparams(uint8), qparamsFromRange([lo], [hi], uint8));
  });
});

describe('quant/observers: percentile', () => {
  it('the bound is the p-th percentile of |x| within one bin width, and clips outliers', () => {
    const rng = new Rng(1);
    const data = activationsWithOutliers(rng, 200_000, 50);
    const o = new PercentileObserver({ percentile: 99.9 });
    o.observe(new Tensor(data.subarray(0, 100_000), [100_000]));
    o.observe(new Tensor(data.subarray(100_000), [100_000]));
    const sorted = Float64Array.from(data).sort();
    const exact = sorted[Math.ceil(0.999 * sorted.length) - 1]!;
    const { max } = o.ranges(true);
    const binWidth = 64 / 2048; // range doubled from the first batch's 50 to at most 64? at least one bin
    assert.ok(Math.abs(max[0]! - exact) <= binWidth, `percentile ${max[0]} vs exact ${exact}`);
    assert.ok(max[0]! < 4, 'the outliers at 50 are clipped');
    const qp = o.qparams(uint8);
    assert.ok(Math.abs(qp.scale[0]! - max[0]! / 255) < 1e-6);
  });

  it('asymmetric specs clip both tails', () => {
    const rng = new Rng(2);
    const data = gaussian(rng, 100_000);
    data[0] = -40;
    data[1] = 40;
    const o = new PercentileObserver({ percentile: 99 });
    o.observe(new Tensor(data, [data.length]));
    const { min, max } = o.ranges(false);
    const sorted = Float64Array.from(data).sort();
    const hi = sorted[Math.ceil(0.99 * sorted.length) - 1]!;
    const lo = sorted[Math.floor(0.01 * sorted.length)]!;
    const w = 40 / 2048;
    assert.ok(Math.abs(max[0]! - hi) <= 2 * w, `${max[0]} vs ${hi}`);
    assert.ok(Math.abs(min[0]! - lo) <= 2 * w, `${min[0]} vs ${lo}`);
  });
});

describe('quant/observers: MSE', () => {
  it("the chosen clip is the brute-force minimum of ‖x − Q(x)‖² over the ratio grid", () => {
    const rng = new Rng(3);
    const data = activationsWithOutliers(rng, 20_000, 8);
    const uint4: QuantSpec = { ...uint8, bits: 4 };
    const o = new MseObserver({ grid: 50 });
    o.observe(new Tensor(data, [data.length]));
    let best = Infinity;
    let bestRatio = 0;
    const max = Math.max(...data);
    for (let k = 1; k <= 50; k++) {
      const e = bruteError(data, 0, (max * k) / 50, uint4);
      if (e < best) {
        best = e;
        bestRatio = k / 50;
      }
    }
    assert.equal(o.ratios(uint4)[0], bestRatio);
    assert.ok(bestRatio < 0.6, `outliers clipped (ratio ${bestRatio})`);
    const curve = o.errorCurve(uint4);
    assert.ok(Math.abs(curve[Math.round(bestRatio * 50) - 1]! - best) <= 1e-9 * best);
    const qp = o.qparams(uint4);
    assert.deepEqual(qp, qparamsFromRange([0], [max * bestRatio], uint4));
  });

  it('per channel: only the channel with an outlier is clipped', () => {
    const rng = new Rng(4);
    const w = gaussian(rng, 2 * 400, 0.1);
    w[400] = 1; // channel 1 gets an outlier
    const o = new MseObserver({ axis: 0 });
    o.observe(new Tensor(w, [2, 400]));
    const r = o.ratios(int4SymCh);
    assert.ok(r[1]! < 0.75 && r[0]! > r[1]!, `ratios ${Array.from(r)}`);
    for (let c = 0; c < 2; c++) {
      const values = w.subarray(c * 400, (c + 1) * 400);
      const bound = Math.max(...Array.from(values, Math.abs));
      let best = Infinity;
      let arg = 0;
      for (let k = 1; k <= 100; k++) {
        const e = bruteError(values, -bound * k / 100, bound * k / 100, int4SymCh);
        if (e < best) [best, arg] = [e, k / 100];
      }
      assert.equal(r[c], arg, `channel ${c}`);
    }
  });
});

describe('quant/observers: entropy (KL)', () => {
  it('clips the tail of a heavy-tailed distribution, keeps a uniform one', () => {
    const rng = new Rng(5);
    const heavy = activationsWithOutliers(rng, 100_000, 40);
    const o = new EntropyObserver();
    o.observe(new Tensor(heavy, [heavy.length]));
    const t = o.thresholds(256, true)[0]!;
    assert.ok(t > 2 && t < 10, `threshold ${t}`);
    const qp = o.qparams(uint8);
    assert.ok(Math.abs(qp.scale[0]! - t / 255) < 1e-6);

    const uniform = Float32Array.from({ length: 100_000 }, () => rng.uniform());
    const u = new EntropyObserver();
    u.observe(new Tensor(uniform, [uniform.length]));
    assert.ok(u.thresholds(256, true)[0]! > 0.95, 'a uniform distribution is not clipped');
  });

  it('a ReLU output (half exact zeros, half |N(0, 1)|) is clipped in its tail, not at the zero spike', () => {
    // With the zeros counted in bin 0, spreading that spike over a level of several bins cost so much
    // KL that every threshold above 2·256 bins lost: T fell below a quarter of the range (~1.1 here).
    const rng = new Rng(8);
    const relu = Float32Array.from({ length: 100_000 }, (_, i) => (i % 2 === 0 ? 0 : Math.abs(rng.normal())));
    const o = new EntropyObserver();
    o.observe(new Tensor(relu, [relu.length]));
    const t = o.thresholds(256, true)[0]!;
    const max = Math.max(...relu);
    assert.ok(t > 2.5 && t <= max + 1e-6, `threshold ${t} of max ${max}`);
    // Zeros only: nothing to clip.
    const z = new EntropyObserver();
    z.observe(new Tensor(new Float32Array(64), [64]));
    assert.equal(z.thresholds(256, true)[0], 0);
  });

  it('levels span ⌊i/L⌋ or ⌈i/L⌉ bins: a histogram that is flat per level pair is matched exactly at i = 6, L = 4', () => {
    // Bins 0..5 map to levels 0,0,1,2,2,3 (⌊j·4/6⌋): Q equals P when paired bins hold equal counts.
    const hist = new Float64Array(16);
    hist.set([3, 3, 7, 2, 2, 5]);
    assert.equal(klThresholdBin(hist, 4), 6);
  });

  it('KL is zero where Q represents P exactly: the first such candidate wins', () => {
    // 16 bins, 4 levels: mass only in bins 0..3, so i = 4 reproduces P exactly (KL = 0).
    const hist = new Float64Array(16);
    hist.set([5, 3, 2, 1]);
    assert.equal(klThresholdBin(hist, 4), 4);
    // Mass spread over all 16 bins with an outlier bin at 15: a threshold below 16 bins.
    const spread = Float64Array.from({ length: 16 }, (_, i) => (i < 8 ? 1000 / (i + 1) : 1));
    assert.ok(klThresholdBin(spread, 4) < 16);
  });
});

describe('quant/observers: factory', () => {
  it('builds every method and rejects unknown ones', () => {
    for (const m of ['minmax', 'ema', 'percentile', 'mse', 'entropy'] as const) {
      const o = createObserver(m);
      assert.equal(o.method, m);
      assert.throws(() => o.qparams(uint8), /nothing observed/);
    }
    assert.throws(() => createObserver('median' as 'minmax'), /unknown observer/);
  });
});

describe('quant/observers: non-finite values', () => {
  it('every observer throws on +Inf, -Inf or NaN, naming itself, and keeps its earlier statistics', () => {
    for (const method of ['minmax', 'ema', 'percentile', 'mse', 'entropy'] as const) {
      for (const bad of [Infinity, -Infinity, NaN]) {
        const o = createObserver(method);
        assert.throws(
          () => o.observe(new Tensor(Float32Array.from([bad, 1, 2]), [3])),
          new RegExp(`^Error: ${method} observer: observed a non-finite value \\(${bad} at flat index 0 of a \\[3\\] tensor\\)`),
        );
        assert.equal(o.observed, false, `${method}: nothing was added`);
      }
      const o = createObserver(method, { axis: 0 });
      o.observe(new Tensor(Float32Array.from([-1, 1, -2, 2]), [2, 2]));
      const before = o.qparams({ ...int8Sym, granularity: 'channel', axis: 0 });
      assert.throws(() => o.observe(new Tensor(Float32Array.from([1, 1, 50, Infinity]), [2, 2])), /at flat index 3 of a \[2, 2\] tensor/);
      assert.deepEqual(o.qparams({ ...int8Sym, granularity: 'channel', axis: 0 }), before, `${method}: the failed batch left no trace`);
    }
  });
});
