/**
 * Column-balanced structured sparsity (Spartus' CBTD layout): a weight matrix W [rows, cols]
 * (row-major, as nn.Linear / LSTM weights) is cut, column by column, into `rows / blockRows`
 * column blocks of `blockRows` consecutive rows. A balanced sparse matrix keeps exactly `keep`
 * entries in every column block, so when one input column is multiplied by a delta, every block
 * (one processing element in hardware) does the same `keep` multiply-accumulates.
 */

/** Rejects a non-positive or non-integer size with a RangeError naming `who`. */
function checkSize(who: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${who}: ${name} must be a positive integer, got ${value}`);
}

/** Validates a column-block layout: blockRows divides rows, 0 ≤ keep ≤ blockRows. */
export function checkBlockLayout(who: string, rows: number, cols: number, blockRows: number, keep: number): void {
  checkSize(who, 'rows', rows);
  checkSize(who, 'cols', cols);
  checkSize(who, 'blockRows', blockRows);
  if (rows % blockRows !== 0) throw new RangeError(`${who}: blockRows ${blockRows} must divide the ${rows} rows`);
  if (blockRows > 65536) throw new RangeError(`${who}: blockRows ${blockRows} exceeds 65536 (row indices are stored as uint16)`);
  if (!Number.isInteger(keep) || keep < 0 || keep > blockRows) throw new RangeError(`${who}: keep must be an integer in [0, ${blockRows}], got ${keep}`);
}

/**
 * The `keep` largest-|w| entries of every column block of W [rows, cols] (row-major): returns a
 * 0/1 mask [rows, cols]. Ties are broken by the lower row index, so the result is deterministic.
 */
export function balancedTopKMask(weights: ArrayLike<number>, rows: number, cols: number, blockRows: number, keep: number): Uint8Array {
  checkBlockLayout('balancedTopKMask', rows, cols, blockRows, keep);
  if (weights.length !== rows * cols) throw new RangeError(`balancedTopKMask: ${weights.length} weights for a ${rows}×${cols} matrix`);
  const mask = new Uint8Array(rows * cols);
  const order = new Array<number>(blockRows);
  const magnitude = new Float64Array(blockRows);
  for (let col = 0; col < cols; col++) {
    for (let start = 0; start < rows; start += blockRows) {
      for (let r = 0; r < blockRows; r++) {
        order[r] = r;
        magnitude[r] = Math.abs(weights[(start + r) * cols + col]!);
      }
      order.sort((a, b) => magnitude[b]! - magnitude[a]! || a - b);
      for (let e = 0; e < keep; e++) mask[(start + order[e]!) * cols + col] = 1;
    }
  }
  return mask;
}

/**
 * A column-balanced sparse matrix: for column j and block b, entries e = 0..keep−1 at
 * `(j·blocks + b)·keep + e` hold the value and the row inside the block (row = b·blockRows + index).
 * Storage: 4 bytes per value + 2 per index, against 4·rows·cols dense.
 */
export interface BalancedSparseMatrix {
  readonly rows: number;
  readonly cols: number;
  readonly blockRows: number;
  /** Entries kept per column block. */
  readonly keep: number;
  /** [cols, rows / blockRows, keep] values. */
  readonly values: Float32Array;
  /** [cols, rows / blockRows, keep] row index inside the block, ascending within a block. */
  readonly indices: Uint16Array;
}

/**
 * Packs W [rows, cols] (row-major) into the balanced layout, keeping in every column block the
 * `keep` entries of largest magnitude (those of {@link balancedTopKMask}); everything else is
 * dropped. A matrix already pruned by CBTD to `keep` per block packs without loss.
 */
export function packBalanced(weights: ArrayLike<number>, rows: number, cols: number, blockRows: number, keep: number): BalancedSparseMatrix {
  const mask = balancedTopKMask(weights, rows, cols, blockRows, keep);
  const blocks = rows / blockRows;
  const values = new Float32Array(cols * blocks * keep);
  const indices = new Uint16Array(cols * blocks * keep);
  for (let col = 0; col < cols; col++) {
    for (let b = 0; b < blocks; b++) {
      let at = (col * blocks + b) * keep;
      for (let r = 0; r < blockRows; r++) {
        const i = (b * blockRows + r) * cols + col;
        if (mask[i] === 0) continue;
        values[at] = weights[i]!;
        indices[at++] = r;
      }
    }
  }
  return { rows, cols, blockRows, keep, values, indices };
}

/** The dense row-major [rows, cols] matrix a balanced sparse matrix stands for (zeros elsewhere). */
export function unpackBalanced(m: BalancedSparseMatrix): Float32Array {
  const dense = new Float32Array(m.rows * m.cols);
  const blocks = m.rows / m.blockRows;
  for (let col = 0; col < m.cols; col++) {
    for (let b = 0; b < blocks; b++) {
      const base = (col * blocks + b) * m.keep;
      for (let e = 0; e < m.keep; e++) dense[(b * m.blockRows + m.indices[base + e]!) * m.cols + col] = m.values[base + e]!;
    }
  }
  return dense;
}

/** Bytes of the compact storage: values (float32) + row indices (uint16). */
export function balancedBytes(m: BalancedSparseMatrix): number {
  return m.values.byteLength + m.indices.byteLength;
}

/**
 * The kernel of a delta step: out[r] += W[r, col]·delta for the stored entries of column `col`
 * (out has `rows` entries). Does `(rows / blockRows)·keep` multiply-accumulates and returns that count.
 */
export function accumulateColumn(m: BalancedSparseMatrix, col: number, delta: number, out: Float64Array): number {
  const blocks = m.rows / m.blockRows;
  const { values, indices, keep, blockRows } = m;
  let at = col * blocks * keep;
  for (let b = 0; b < blocks; b++) {
    const rowBase = b * blockRows;
    for (let e = 0; e < keep; e++, at++) out[rowBase + indices[at]!] += values[at]! * delta;
  }
  return blocks * keep;
}
