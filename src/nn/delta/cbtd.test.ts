import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor } from '../../tensor/index.ts';
import { accumulateColumn, balancedBytes, balancedTopKMask, packBalanced, unpackBalanced } from './balanced.ts';
import { ColumnBalancedTargetedDropout } from './cbtd.ts';

function randomMatrix(rows: number, cols: number, rng: Rng): Float32Array {
  const data = new Float32Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  return data;
}

/** Asserts: every column block of `kept` (0/1) has exactly `keep` ones, and they are the largest |w| of the block. */
function assertBalancedTopK(weights: ArrayLike<number>, kept: ArrayLike<number>, rows: number, cols: number, blockRows: number, keep: number): void {
  for (let col = 0; col < cols; col++) {
    for (let start = 0; start < rows; start += blockRows) {
      let count = 0;
      let minKept = Infinity;
      let maxDropped = -Infinity;
      for (let r = start; r < start + blockRows; r++) {
        const magnitude = Math.abs(weights[r * cols + col]!);
        if (kept[r * cols + col] !== 0) {
          count++;
          minKept = Math.min(minKept, magnitude);
        } else {
          maxDropped = Math.max(maxDropped, magnitude);
        }
      }
      assert.equal(count, keep, `column ${col}, block at row ${start}`);
      assert.ok(minKept >= maxDropped, `column ${col}, block at row ${start}: kept ${minKept} < dropped ${maxDropped}`);
    }
  }
}

describe('balanced sparse matrices', () => {
  it('balancedTopKMask keeps exactly `keep` largest-magnitude entries per column block; ties go to the lower row', () => {
    const rng = new Rng(1);
    const w = randomMatrix(24, 7, rng);
    for (const keep of [0, 1, 3, 6]) assertBalancedTopK(w, balancedTopKMask(w, 24, 7, 6, keep), 24, 7, 6, keep);
    const tied = balancedTopKMask([1, -1, 1, 0.5], 4, 1, 4, 2);
    assert.deepEqual([...tied], [1, 1, 0, 0]);
  });

  it('pack → unpack restores a matrix with `keep` non-zeros per block; accumulateColumn adds W[:, j]·δ and returns blocks·keep', () => {
    const rng = new Rng(2);
    const rows = 16;
    const cols = 5;
    const w = randomMatrix(rows, cols, rng);
    const mask = balancedTopKMask(w, rows, cols, 4, 1);
    const pruned = w.map((v, i) => (mask[i] ? v : 0));
    const packed = packBalanced(pruned, rows, cols, 4, 1);
    assert.deepEqual([...unpackBalanced(packed)], [...pruned]);
    assert.equal(packed.values.length, cols * 4 * 1);
    assert.equal(balancedBytes(packed), cols * 4 * (4 + 2));
    for (let j = 0; j < cols; j++) {
      const out = new Float64Array(rows).fill(0.25);
      assert.equal(accumulateColumn(packed, j, -1.5, out), 4);
      for (let r = 0; r < rows; r++) assert.equal(out[r], 0.25 + pruned[r * cols + j]! * -1.5);
    }
  });

  it('bad layouts are refused', () => {
    assert.throws(() => balancedTopKMask(new Float32Array(12), 6, 2, 4, 1), /blockRows 4 must divide the 6 rows/);
    assert.throws(() => balancedTopKMask(new Float32Array(12), 6, 2, 3, 4), /keep must be an integer in \[0, 3\], got 4/);
    assert.throws(() => balancedTopKMask(new Float32Array(11), 6, 2, 3, 1), /11 weights for a 6×2 matrix/);
    assert.throws(() => packBalanced(new Float32Array(12), 6, 2, 0, 0), /blockRows must be a positive integer, got 0/);
  });
});

describe('column-balanced targeted dropout', () => {
  it('prune: exactly blockRows − round(γ·blockRows) non-zeros per column block, the largest ones, zeroed in place; apply keeps the mask', () => {
    for (const sparsity of [0.75, 0.9, 0.94]) {
      const rng = new Rng(3);
      const original = randomMatrix(64, 9, rng);
      const weight = new Tensor(Float32Array.from(original), [64, 9]);
      const cbtd = new ColumnBalancedTargetedDropout({ sparsity, blockRows: 32, rng });
      const keep = 32 - Math.round(sparsity * 32);
      assert.equal(cbtd.keepPerBlock, keep);
      const [packed] = cbtd.prune([weight]);
      assertBalancedTopK(original, weight.data, 64, 9, 32, keep);
      for (let i = 0; i < original.length; i++) assert.ok(weight.data[i] === 0 || weight.data[i] === original[i]);
      assert.deepEqual([...unpackBalanced(packed!)], [...weight.data]);
      assert.equal(cbtd.isPruned(weight), true);
      weight.data.fill(1); // an optimizer moved the pruned weights: the layer still sees zeros there
      const seen = cbtd.apply(weight, true);
      let nonZero = 0;
      for (let i = 0; i < seen.size; i++) nonZero += seen.data[i] !== 0 ? 1 : 0;
      assert.equal(nonZero, keep * 2 * 9);
    }
  });

  it('training mask: only the targeted (smallest) weights drop, each with probability α; the target fraction ramps linearly', () => {
    const rng = new Rng(4);
    const weight = new Tensor(randomMatrix(16, 8, rng), [16, 8]);
    const cbtd = new ColumnBalancedTargetedDropout({ sparsity: 0.5, blockRows: 8, dropRate: 0.3, rampSteps: 4, rng });
    assert.equal(cbtd.targetFraction, 0);
    assert.equal(cbtd.apply(weight, true), weight, 'nothing targeted at step 0');
    cbtd.step();
    cbtd.step();
    assert.equal(cbtd.targetFraction, 0.25);
    for (let s = 0; s < 4; s++) cbtd.step();
    assert.equal(cbtd.targetFraction, 0.5, 'the ramp stops at the final sparsity');
    const safe = balancedTopKMask(weight.data, 16, 8, 8, 4);
    let dropped = 0;
    const draws = 300;
    for (let d = 0; d < draws; d++) {
      const mask = cbtd.dropoutMask(weight);
      for (let i = 0; i < mask.size; i++) {
        if (safe[i] === 1) assert.equal(mask.data[i], 1, 'a non-targeted weight was dropped');
        else dropped += 1 - mask.data[i]!;
      }
    }
    const rate = dropped / (draws * 64);
    assert.ok(Math.abs(rate - 0.3) < 0.02, `drop rate ${rate}`);
    assert.equal(cbtd.apply(weight, false), weight, 'evaluation before pruning uses the dense weight');
  });

  it('bad options are refused', () => {
    assert.throws(() => new ColumnBalancedTargetedDropout({ sparsity: 1, blockRows: 4 }), /sparsity must be in \[0, 1\), got 1/);
    assert.throws(() => new ColumnBalancedTargetedDropout({ sparsity: -0.1, blockRows: 4 }), /sparsity must be in \[0, 1\)/);
    assert.throws(() => new ColumnBalancedTargetedDropout({ sparsity: 0.5, blockRows: 2.5 }), /blockRows must be a positive integer, got 2.5/);
    assert.throws(() => new ColumnBalancedTargetedDropout({ sparsity: 0.5, blockRows: 4, dropRate: 1.5 }), /dropRate must be in \[0, 1\], got 1.5/);
    assert.throws(() => new ColumnBalancedTargetedDropout({ sparsity: 0.5, blockRows: 4, rampSteps: -1 }), /rampSteps must be a non-negative integer/);
    const cbtd = new ColumnBalancedTargetedDropout({ sparsity: 0.5, blockRows: 4 });
    assert.throws(() => cbtd.prune([new Tensor(new Float32Array(12), [6, 2])]), /blockRows 4 must divide the 6 rows/);
    assert.throws(() => cbtd.dropoutMask(new Tensor(new Float32Array(8), [8])), /expected a weight matrix \[rows, cols\], got rank 1/);
  });
});
