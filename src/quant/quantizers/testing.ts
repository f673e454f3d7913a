/**
 * @internal Helpers for the quantizer tests: float64 random tensors, closeness checks, level
 * counting and the export-consistency check.
 */
import assert from 'node:assert/strict';
import { Tensor } from '../../tensor/tensor.ts';
import { Rng } from '../../tensor/random.ts';
import { dequantizeArray, quantizeArray } from '../core/quantize.ts';
import { paramIndex } from '../core/qparams.ts';
import type { ExportedQuant } from './quantizer.ts';

export function randomTensor(rng: Rng, shape: readonly number[], options: { dtype?: 'float32' | 'float64'; std?: number; mean?: number } = {}): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const data = options.dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = (options.mean ?? 0) + (options.std ?? 1) * rng.normal();
  return new Tensor(data, shape);
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-9, what = 'values'): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.ok(Math.abs(a - e) <= tol * Math.max(1, Math.abs(e)), `${what}[${i}]: ${a} vs ${e}`);
  }
}

/** Number of distinct values per slice along `axis` (null: whole tensor); returns the maximum. */
export function maxDistinctPerChannel(t: Tensor, axis: number | null): number {
  const idx = paramIndex(t.shape, { axis, groupSize: null });
  const sets = new Map<number, Set<number>>();
  for (let i = 0; i < t.size; i++) {
    const c = idx(i);
    if (!sets.has(c)) sets.set(c, new Set());
    sets.get(c)!.add(t.data[i]!);
  }
  return Math.max(...[...sets.values()].map((s) => s.size));
}

/**
 * Checks that the exported quantization reproduces `y` (the eval forward of `x`): affine —
 * integers of `source` (x for activations, y for weights) dequantize to y; binary — |y| = α;
 * ternary — y ∈ {−α, 0, α}; codebook — y is one of its channel's levels.
 */
export function assertExportReproduces(exported: ExportedQuant, source: Tensor, y: Tensor, tol = 0): void {
  switch (exported.type) {
    case 'affine': {
      const q = quantizeArray(source.data, source.shape, exported.qparams);
      for (const v of q) assert.ok(v >= exported.qparams.qmin && v <= exported.qparams.qmax);
      assertClose(dequantizeArray(q, source.shape, exported.qparams), y.data, tol, 'dequantized');
      return;
    }
    case 'binary': {
      const idx = paramIndex(y.shape, { axis: exported.axis, groupSize: null });
      for (let i = 0; i < y.size; i++) assert.ok(Math.abs(Math.abs(y.data[i]!) - exported.alpha[idx(i)]!) <= tol * Math.max(1, exported.alpha[idx(i)]!), `binary at ${i}`);
      return;
    }
    case 'ternary': {
      const idx = paramIndex(y.shape, { axis: exported.axis, groupSize: null });
      for (let i = 0; i < y.size; i++) {
        const a = Math.abs(y.data[i]!);
        assert.ok(a === 0 || Math.abs(a - exported.alpha[idx(i)]!) <= tol * Math.max(1, a), `ternary at ${i}`);
      }
      return;
    }
    case 'codebook': {
      const idx = paramIndex(y.shape, { axis: exported.axis, groupSize: null });
      const channels = exported.axis === null ? 1 : y.shape[exported.axis]!;
      const per = exported.levels.length / channels;
      for (let i = 0; i < y.size; i++) {
        const row = exported.levels.subarray(idx(i) * per, (idx(i) + 1) * per);
        assert.ok([...row].some((l) => Math.abs(l - y.data[i]!) <= tol * Math.max(1, Math.abs(l))), `codebook at ${i}: ${y.data[i]} not in [${[...row].join(', ')}]`);
      }
      return;
    }
  }
}
