/**
 * The decodeAttention primitive (attention of S new positions over a KV cache) against the
 * full-sequence `attention` primitive: the rows of causal attention on the whole qkv at those
 * positions. Float64 on the reference backend (the specification), float32 on the default one and on
 * wasm (which has no kernel of its own: the reference kernel runs).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { withBackend } from '../index.ts';
import { profileOps } from '../registry.ts';
import { loadWasm } from '../wasm/index.ts';
import { attention, decodeAttention, narrow, Rng, Tensor, rand } from '../../tensor/index.ts';

type Float = 'float32' | 'float64';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * A KV cache [N, capacity, E] holding the K (part 1) or V (part 2) third of qkv's first `filled`
 * positions; the rows after them are NaN, so a kernel that reads them gives NaN.
 */
function cacheOf(qkv: Tensor, part: 1 | 2, filled: number, capacity: number): Tensor {
  const [n, length, e3] = qkv.shape as [number, number, number];
  const e = e3 / 3;
  const out = new Tensor(qkv.dtype === 'float64' ? new Float64Array(n * capacity * e).fill(NaN) : new Float32Array(n * capacity * e).fill(NaN), [n, capacity, e]);
  for (let b = 0; b < n; b++) {
    for (let t = 0; t < filled; t++) {
      for (let c = 0; c < e; c++) out.data[(b * capacity + t) * e + c] = qkv.data[(b * length + t) * e3 + part * e + c]!;
    }
  }
  return out;
}

/** The largest |decodeAttention − attention rows| over several (past, steps) splits of one sequence. */
function worstOverSplits(dtype: Float, batch: number, length: number, embed: number, heads: number, seed: number): number {
  const qkv = rand([batch, length, 3 * embed], { low: -2, high: 2, dtype, rng: new Rng(seed) });
  const full = attention(qkv, { heads, causal: true });
  const capacity = length + 3;
  let worst = 0;
  for (const [past, steps] of [[0, 1], [0, length], [1, 1], [2, 3], [length - 1, 1], [Math.floor(length / 2), length - Math.floor(length / 2)]] as const) {
    const keys = cacheOf(qkv, 1, past + steps, capacity);
    const values = cacheOf(qkv, 2, past + steps, capacity);
    const out = decodeAttention(narrow(qkv, 1, past, steps), keys, values, { heads, past });
    assert.deepEqual(out.shape, [batch, steps, embed]);
    assert.equal(out.dtype, dtype);
    worst = Math.max(worst, maxAbsDiff(out.data, narrow(full, 1, past, steps).data));
  }
  return worst;
}

describe('decodeAttention', () => {
  it('float64 reference: the rows of causal attention at positions past..past+S−1 (≤ 1e-13), never reading rows after them', () => {
    withBackend('reference', () => {
      for (const [batch, length, embed, heads, seed] of [[1, 6, 8, 2, 1], [3, 9, 12, 3, 2], [2, 5, 5, 1, 3], [2, 7, 20, 5, 4]] as const) {
        const worst = worstOverSplits('float64', batch, length, embed, heads, seed);
        assert.ok(worst <= 1e-13, `[${batch}, ${length}, ${embed}] heads ${heads}: ${worst}`);
      }
    });
  });

  it('float32 on the default backend (native when loaded): the same rows within 2e-6', () => {
    for (const [batch, length, embed, heads, seed] of [[1, 6, 8, 2, 5], [16, 12, 64, 4, 6], [2, 33, 30, 5, 7]] as const) {
      const worst = worstOverSplits('float32', batch, length, embed, heads, seed);
      assert.ok(worst <= 2e-6, `[${batch}, ${length}, ${embed}] heads ${heads}: ${worst}`);
    }
  });

  it('wasm backend: no wasm kernel, the reference kernel runs (same rows within 2e-6)', () => {
    const loaded = loadWasm();
    if (!loaded.ok) return void console.log(`wasm skipped: ${loaded.reason}`);
    withBackend('wasm', () => {
      let worst = 0;
      const ops = profileOps(() => (worst = worstOverSplits('float32', 2, 7, 12, 3, 8)));
      assert.ok(ops.has('reference/decodeAttention'), [...ops.keys()].join(' '));
      assert.ok(worst <= 2e-6, `${worst}`);
    });
  });

  it('rejects shapes that do not fit: capacity, batch, dtype, heads', () => {
    const qkv = rand([2, 2, 12]);
    const cache = rand([2, 4, 4]);
    assert.throws(() => decodeAttention(qkv, cache, cache, { heads: 2, past: 3 }), /positions 3\.\.4 do not fit the cache capacity 4/);
    assert.throws(() => decodeAttention(qkv, rand([1, 4, 4]), rand([1, 4, 4]), { heads: 2, past: 0 }), /keys must be \[2, C, 4\]/);
    assert.throws(() => decodeAttention(qkv, cache, rand([2, 5, 4]), { heads: 2, past: 0 }), /differ in capacity/);
    assert.throws(() => decodeAttention(qkv, rand([2, 4, 4], { dtype: 'float64' }), rand([2, 4, 4], { dtype: 'float64' }), { heads: 2, past: 0 }), /dtype float64 differs/);
    assert.throws(() => decodeAttention(qkv, cache, cache, { heads: 3, past: 0 }), /heads 3 must be a positive integer dividing E = 4/);
  });
});
