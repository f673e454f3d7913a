/**
 * Per-group observers: with `groupSize`, an observer keeps one set of statistics per run of
 * groupSize indices along its axis and per position of the other dims (core/qparams.paramIndex),
 * so its parameters must equal, set by set, those of a per-tensor observer of the same method fed
 * exactly that set's values — checked for every method, several batches, a 2-D (Linear) and a 4-D
 * (conv) weight; mismatched granularities and sizes are refused.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../tensor/tensor.ts';
import { Rng } from '../../tensor/random.ts';
import type { QuantSpec } from '../core/qparams.ts';
import { createObserver, OBSERVER_METHODS, type ObserverMethod } from './index.ts';

/** The values of parameter set (`row`, `group`) of a [rows, cols] matrix grouped by `g` along axis 1. */
function groupOf2d(data: Float32Array, cols: number, g: number, row: number, group: number): Float32Array {
  return data.slice(row * cols + group * g, row * cols + (group + 1) * g);
}

function heavyTailed(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => rng.normal() * (i % 7 === 0 ? 4 : 1));
}

const specs: Record<string, QuantSpec> = {
  sym4: { bits: 4, signed: true, symmetric: true, granularity: 'group', axis: 1, groupSize: 8 },
  asym3: { bits: 3, signed: false, symmetric: false, granularity: 'group', axis: 1, groupSize: 8 },
};

describe('quant/observers: per-group statistics', () => {
  for (const method of OBSERVER_METHODS) {
    it(`${method}: each (row, group of 8 inputs) of a [5, 24] weight equals a per-tensor ${method} observer of that group's values (3 batches)`, () => {
      const rng = new Rng(11);
      const rows = 5;
      const cols = 24;
      const g = 8;
      const options = { momentum: 0.3, percentile: 99, bins: 64, grid: 40 };
      const grouped = createObserver(method as ObserverMethod, { ...options, axis: 1, groupSize: g });
      const singles = Array.from({ length: rows * (cols / g) }, () => createObserver(method as ObserverMethod, options));
      for (let batch = 0; batch < 3; batch++) {
        const data = heavyTailed(rng, rows * cols);
        grouped.observe(new Tensor(data, [rows, cols]));
        for (let r = 0; r < rows; r++) {
          for (let k = 0; k < cols / g; k++) singles[r * (cols / g) + k]!.observe(new Tensor(groupOf2d(data, cols, g, r, k), [g]));
        }
      }
      for (const [name, spec] of Object.entries(specs)) {
        const qp = grouped.qparams(spec);
        assert.equal(qp.scale.length, rows * (cols / g), name);
        assert.equal(qp.groupSize, g);
        assert.equal(qp.axis, 1);
        const one: QuantSpec = { ...spec, granularity: 'tensor', axis: undefined, groupSize: undefined };
        singles.forEach((o, p) => {
          const expected = o.qparams(one);
          assert.equal(qp.scale[p], expected.scale[0], `${name} set ${p}: scale`);
          assert.equal(qp.zeroPoint[p], expected.zeroPoint[0], `${name} set ${p}: zero point`);
        });
      }
    });
  }

  it('a 4-D conv weight [O, C, kh, kw] grouped on axis 1: one set per (o, group of C, kh, kw), in paramIndex order', () => {
    const rng = new Rng(3);
    const [O, C, kh, kw, g] = [3, 4, 2, 2, 2];
    const data = heavyTailed(rng, O * C * kh * kw);
    const grouped = createObserver('minmax', { axis: 1, groupSize: g });
    grouped.observe(new Tensor(data, [O, C, kh, kw]));
    const spec: QuantSpec = { bits: 4, signed: true, symmetric: true, granularity: 'group', axis: 1, groupSize: g };
    const qp = grouped.qparams(spec);
    assert.equal(qp.scale.length, O * (C / g) * kh * kw);
    for (let o = 0; o < O; o++) {
      for (let cg = 0; cg < C / g; cg++) {
        for (let p = 0; p < kh * kw; p++) {
          let bound = 0;
          for (let c = cg * g; c < (cg + 1) * g; c++) bound = Math.max(bound, Math.abs(data[(o * C + c) * kh * kw + p]!));
          const index = (o * (C / g) + cg) * kh * kw + p;
          assert.equal(qp.scale[index], Math.fround(bound / 7), `o ${o} group ${cg} tap ${p}`);
        }
      }
    }
  });

  it('refuses a granularity other than the one it was built for, a group size that does not divide the axis, and a group size without an axis', () => {
    const grouped = createObserver('mse', { axis: 1, groupSize: 4 });
    grouped.observe(new Tensor(new Float32Array(16).map((_, i) => i - 8), [2, 8]));
    assert.throws(() => grouped.qparams({ bits: 4, signed: true, symmetric: true, granularity: 'channel', axis: 1 }), /mse observer: built for groups of 4 on axis 1, asked for channel parameters on axis 1/);
    assert.throws(() => grouped.qparams({ bits: 4, signed: true, symmetric: true, granularity: 'group', axis: 1, groupSize: 2 }), /asked for groups of 2 on axis 1/);
    const perChannel = createObserver('minmax', { axis: 0 });
    perChannel.observe(new Tensor(new Float32Array(8).fill(1), [2, 4]));
    assert.throws(() => perChannel.qparams({ bits: 4, signed: true, symmetric: true, granularity: 'group', axis: 0, groupSize: 2 }), /minmax observer: built for axis 0, asked for groups of 2 on axis 0/);
    for (const method of OBSERVER_METHODS) {
      const o = createObserver(method, { axis: 1, groupSize: 3 });
      assert.throws(() => o.observe(new Tensor(new Float32Array(8), [2, 4])), /groupSize 3 does not divide axis 1 of shape \[2, 4\]/, method);
      assert.throws(() => createObserver(method, { groupSize: 4 }), new RegExp(`${method} observer: groupSize must be a positive integer with an axis`), method);
      assert.throws(() => createObserver(method, { axis: 1, groupSize: 0 }), /groupSize must be a positive integer/, method);
    }
  });
});
