import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { withBackend } from '../../backend/index.ts';
import { Rng, Tensor } from '../../tensor/index.ts';
import {
  applyPwl, evalIntPwl, evalIntPwlIndexed, evalPwl, pwlSegmentIndex, fitSigmoidPwl, fitTanhPwl, intPwlProblems, pwlError, pwlOfInt, quantizePwl, sigmoidExact, type Pwl,
} from './pwl.ts';

const RANGE = [-8, 8] as const;

/** Interpolating PWL with N uniform segments: the non-adaptive baseline. */
function uniformPwl(fn: (x: number) => number, segments: number): Pwl {
  const knots = Float64Array.from({ length: segments + 1 }, (_, k) => RANGE[0] + ((RANGE[1] - RANGE[0]) * k) / segments);
  const values = Float64Array.from({ length: segments }, (_, k) => fn(knots[k]!));
  const slopes = Float64Array.from({ length: segments }, (_, k) => (fn(knots[k + 1]!) - fn(knots[k]!)) / (knots[k + 1]! - knots[k]!));
  return { knots, values, slopes };
}

describe('PWL fit', () => {
  // Measured here (8193-point grid on [-8, 8]): 16 segments max-error fit: sigmoid 2.12e-3, tanh 7.07e-3;
  // 8 segments: sigmoid 8.88e-3, tanh 2.23e-2. Bounds are those plus ~10 %.
  const sig16 = fitSigmoidPwl({ segments: 16 });
  const tanh16 = fitTanhPwl({ segments: 16 });
  const sig8 = fitSigmoidPwl({ segments: 8 });
  const tanh8 = fitTanhPwl({ segments: 8 });

  it('max error vs exact sigmoid/tanh within the measured bounds, and more segments fit better', () => {
    const e = (p: Pwl, fn: (x: number) => number): number => pwlError(p, fn, RANGE).maxError;
    assert.ok(e(sig16, sigmoidExact) < 2.4e-3, `sigmoid 16: ${e(sig16, sigmoidExact)}`);
    assert.ok(e(tanh16, Math.tanh) < 7.8e-3, `tanh 16: ${e(tanh16, Math.tanh)}`);
    assert.ok(e(sig8, sigmoidExact) < 9.8e-3, `sigmoid 8: ${e(sig8, sigmoidExact)}`);
    assert.ok(e(tanh8, Math.tanh) < 2.5e-2, `tanh 8: ${e(tanh8, Math.tanh)}`);
    assert.ok(e(sig16, sigmoidExact) < e(sig8, sigmoidExact) / 3);
  });

  it('adaptive knots beat uniform interpolation with the same segment count', () => {
    for (const [fit, fn] of [[sig8, sigmoidExact], [tanh8, Math.tanh], [tanh16, Math.tanh]] as const) {
      const adaptive = pwlError(fit, fn, RANGE).maxError;
      const uniform = pwlError(uniformPwl(fn, fit.values.length), fn, RANGE).maxError;
      assert.ok(adaptive < uniform / 2, `adaptive ${adaptive} vs uniform ${uniform}`);
    }
  });

  it('each objective wins on its own measure', () => {
    const mse = fitTanhPwl({ segments: 8, objective: 'mse' });
    const a = pwlError(tanh8, Math.tanh, RANGE);
    const b = pwlError(mse, Math.tanh, RANGE);
    assert.ok(a.maxError < b.maxError, `max: ${a.maxError} vs ${b.maxError}`);
    assert.ok(b.rmse < a.rmse, `rms: ${b.rmse} vs ${a.rmse}`);
  });

  it('is constant outside its knots and refuses bad options', () => {
    assert.equal(evalPwl(tanh8, -100), evalPwl(tanh8, -8));
    assert.equal(evalPwl(tanh8, 100), evalPwl(tanh8, 8));
    assert.throws(() => fitTanhPwl({ segments: 0 }), RangeError);
    assert.throws(() => fitTanhPwl({ range: [1, 1] }), RangeError);
  });

  describe('fixed point', () => {
    const format = { inputFrac: 12, outputFrac: 15, slopeFrac: 15, outputMin: -32767, outputMax: 32767 };
    const tables = [quantizePwl(sig16, format), quantizePwl(tanh16, format)];

    it('the integer PWL equals the snapped float PWL within 1 LSB on every int16 input (measured ≤ 0.5)', () => {
      for (const table of tables) {
        const real = pwlOfInt(table);
        let worst = 0;
        for (let z = -32768; z <= 32767; z++) {
          const exact = Math.min(32767, Math.max(-32767, evalPwl(real, z / 4096) * 32768));
          worst = Math.max(worst, Math.abs(evalIntPwl(table, z) - exact));
        }
        assert.ok(worst <= 0.5, `worst ${worst} LSB`);
      }
    });

    it('the segment lookup table gives the result of evalIntPwl on every int16 input', () => {
      for (const table of tables) {
        const index = pwlSegmentIndex(table);
        for (let z = -32768; z <= 32767; z++) assert.equal(evalIntPwlIndexed(table, index, z), evalIntPwl(table, z));
      }
    });

    it('snapping to fixed point moves the function by less than 2 output LSBs plus the slope rounding', () => {
      for (const [table, fit] of [[tables[0]!, sig16], [tables[1]!, tanh16]] as const) {
        const real = pwlOfInt(table);
        let worst = 0;
        for (let i = 0; i <= 4000; i++) {
          const x = -8 + (16 * i) / 4000;
          worst = Math.max(worst, Math.abs(evalPwl(real, x) - evalPwl(fit, x)));
        }
        assert.ok(worst < 3 * 2 ** -15, `snapped vs fitted ${worst}`);
      }
    });

    it('problems: non-increasing knots, int32 overflow of a segment product', () => {
      const t = tables[1]!;
      const knots = t.knots.slice();
      knots[3] = knots[2]!;
      assert.match(intPwlProblems({ ...t, knots }).join(), /strictly increasing/);
      const slopes = t.slopes.slice();
      slopes[0] = 2 ** 30;
      assert.match(intPwlProblems({ ...t, slopes }).join(), /overflows int32/);
      assert.deepEqual(intPwlProblems(t), []);
    });
  });

  it('applyPwl: forward is the PWL, gradient its slope (float64 finite differences)', () => {
    withBackend('reference', () => {
      const rng = new Rng(5);
      const data = Float64Array.from({ length: 24 }, () => rng.uniform() * 20 - 10);
      const x = new Tensor(data, [3, 8]).requiresGrad_();
      // Two blocks of 4 columns: sigmoid then tanh.
      const y = applyPwl(x, [sig8, tanh8]);
      for (let i = 0; i < 24; i++) {
        const fit = i % 8 < 4 ? sig8 : tanh8;
        assert.ok(Math.abs(y.data[i]! - evalPwl(fit, data[i]!)) < 1e-12);
      }
      const result = gradcheck((t) => applyPwl(t, [sig8, tanh8]), [x]);
      assert.ok(result.maxRelativeError < 1e-8, `relative error ${result.maxRelativeError}`);
    });
  });
});
