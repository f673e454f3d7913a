/**
 * Low-bit level tables T and the scaled projection onto α·T shared by the constrained trainers
 * (ADMM, AskewSGD).
 *
 * A table is a sorted list of levels (integers for the built-in ones). A weight group V (one
 * tensor, one output channel, or — "tied" — every selected tensor at once) is represented as
 * α·B with α ≥ 0 and every B_i ∈ T. The projection solves
 *
 *     min_{α ≥ 0, B ∈ Tⁿ} ‖V − α·B‖²
 *
 * either by alternating minimisation (fix B → α = ⟨V, B⟩/⟨B, B⟩; fix α → B = nearest(V/α)), or
 * exactly (`fitScaleExact`): as t = 1/α sweeps (0, ∞) the nearest codes change only when some
 * v_i·t crosses a midpoint between two levels, so there are at most n·(|T| − 1) + 1 distinct code
 * vectors B(t); the global optimum's codes are among them and each has closed-form error
 * ‖V‖² − ⟨V, B⟩²/⟨B, B⟩. One sort of the crossing times and an incremental sweep find it in
 * O(n·|T|·log(n·|T|)).
 *
 * Nearest level: ties go to the upper level, so the binary table gives sign(0) = +1 (DESIGN.md).
 */

/** A table of levels, as a preset name or explicit description. */
export type TableSpec =
  | 'binary'
  | 'ternary'
  /**
   * Uniform signed integers: narrow range (default, DESIGN.md's symmetric weights)
   * {−(2^(k−1)−1), …, 2^(k−1)−1}, or the full range {−2^(k−1), …, 2^(k−1)−1}. Note that narrow
   * 2-bit is the ternary table.
   */
  | { readonly bits: number; readonly range?: 'narrow' | 'full' }
  /** {0, ±1, ±2, …, ±2^(n−1)} (power-of-two levels, shift-only multiplies; Leng et al. 2018). */
  | { readonly powerOfTwo: number }
  /** Any explicit levels (sorted and deduplicated here). */
  | { readonly levels: readonly number[] };

/** A resolved table. */
export interface LevelTable {
  /** Readable name: `binary`, `ternary`, `int3`, `int2full`, `pow2x3`, `custom`. */
  readonly name: string;
  /** Levels in increasing order. */
  readonly levels: readonly number[];
  /** Midpoints between consecutive levels (length levels.length − 1). */
  readonly mids: readonly number[];
  /** Levels are consecutive integers (fast nearest-level path, integer export). */
  readonly uniform: boolean;
  /** Bits needed to index a level: ceil(log2(|T|)). */
  readonly bits: number;
}

/** Resolves a table spec (validating it). */
export function makeTable(spec: TableSpec): LevelTable {
  let name: string;
  let levels: number[];
  if (spec === 'binary') {
    name = 'binary';
    levels = [-1, 1];
  } else if (spec === 'ternary') {
    name = 'ternary';
    levels = [-1, 0, 1];
  } else if ('bits' in spec) {
    const k = spec.bits;
    if (!Number.isInteger(k) || k < 2 || k > 16) throw new Error(`table: bits must be an integer in [2, 16] (use 'binary' for 1 bit), got ${k}`);
    const half = 2 ** (k - 1);
    const full = spec.range === 'full';
    const lo = full ? -half : -(half - 1);
    levels = [];
    for (let v = lo; v <= half - 1; v++) levels.push(v);
    name = `int${k}${full ? 'full' : ''}`;
  } else if ('powerOfTwo' in spec) {
    const n = spec.powerOfTwo;
    if (!Number.isInteger(n) || n < 1 || n > 15) throw new Error(`table: powerOfTwo must be an integer in [1, 15], got ${n}`);
    levels = [0];
    for (let j = 0; j < n; j++) levels.push(2 ** j, -(2 ** j));
    name = `pow2x${n}`;
  } else if ('levels' in spec) {
    name = 'custom';
    levels = [...spec.levels];
    if (levels.some((v) => !Number.isFinite(v))) throw new Error('table: levels must be finite numbers');
  } else {
    throw new Error(`table: unknown spec ${JSON.stringify(spec)}`);
  }
  levels = [...new Set(levels)].sort((a, b) => a - b);
  if (levels.length < 2) throw new Error('table: needs at least two distinct levels');
  if (!levels.some((v) => v !== 0)) throw new Error('table: needs a nonzero level');
  const mids = levels.slice(1).map((v, i) => (v + levels[i]!) / 2);
  const uniform = levels.every((v, i) => Number.isInteger(v) && (i === 0 || v - levels[i - 1]! === 1));
  return Object.freeze({ name, levels: Object.freeze(levels), mids: Object.freeze(mids), uniform, bits: Math.ceil(Math.log2(levels.length)) });
}

/** Accepts a spec or an already resolved table. */
export function toTable(spec: TableSpec | LevelTable): LevelTable {
  return typeof spec === 'object' && 'mids' in spec ? spec : makeTable(spec);
}

/** Index of the level nearest to `u` (ties to the upper level). */
export function nearestIndex(table: LevelTable, u: number): number {
  const { levels, mids } = table;
  if (table.uniform) {
    const i = Math.floor(u - levels[0]! + 0.5);
    return i < 0 ? 0 : i >= levels.length ? levels.length - 1 : i;
  }
  // Number of midpoints <= u (binary search).
  let lo = 0;
  let hi = mids.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (mids[m]! <= u) lo = m + 1;
    else hi = m;
  }
  return lo;
}

/** The level nearest to `u`. */
export function nearestLevel(table: LevelTable, u: number): number {
  return table.levels[nearestIndex(table, u)]!;
}

/** Result of fitting one group. */
export interface ScaleFit {
  /** Scale α ≥ 0. */
  alpha: number;
  /** Squared error ‖V − α·B‖² with B = nearest(V/α). */
  error: number;
}

/** ‖V − α·nearest(V/α)‖². */
export function projectionError(values: ArrayLike<number>, table: LevelTable, alpha: number): number {
  let e = 0;
  if (!(alpha > 0)) {
    for (let i = 0; i < values.length; i++) e += values[i]! * values[i]!;
    return e;
  }
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    const d = v - alpha * nearestLevel(table, v / alpha);
    e += d * d;
  }
  return e;
}

/**
 * Alternating minimisation from `alpha0`: B ← nearest(V/α), α ← ⟨V, B⟩/⟨B, B⟩, for at most
 * `iterations` rounds or until the codes stop changing. The error never increases.
 * Default start: α0 = max|V| / max|T| (every value inside the table's range).
 */
export function fitScaleAlternating(values: ArrayLike<number>, table: LevelTable, alpha0?: number, iterations = 10): ScaleFit {
  const n = values.length;
  let maxAbs = 0;
  for (let i = 0; i < n; i++) maxAbs = Math.max(maxAbs, Math.abs(values[i]!));
  if (maxAbs === 0) return { alpha: 0, error: 0 };
  const maxLevel = Math.max(...table.levels.map(Math.abs));
  let alpha = alpha0 !== undefined && alpha0 > 0 ? alpha0 : maxAbs / maxLevel;
  let codes = new Int32Array(n).fill(-1);
  for (let it = 0; it < iterations; it++) {
    let c = 0;
    let b = 0;
    let changed = false;
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const k = nearestIndex(table, values[i]! / alpha);
      next[i] = k;
      if (k !== codes[i]) changed = true;
      const l = table.levels[k]!;
      c += values[i]! * l;
      b += l * l;
    }
    codes = next;
    if (!changed) break;
    const a = b > 0 && c > 0 ? c / b : 0;
    if (!(a > 0)) break;
    // Accept only non-increasing error (guards against ties flipping back and forth).
    if (projectionError(values, table, a) > projectionError(values, table, alpha)) break;
    alpha = a;
  }
  return { alpha, error: projectionError(values, table, alpha) };
}

/**
 * The exact minimiser of ‖V − α·B‖² over α ≥ 0 and B ∈ Tⁿ (see the file comment), followed by
 * a few alternating rounds (which cannot increase the error and fix α to ⟨V, B⟩/⟨B, B⟩ of the
 * final codes).
 */
export function fitScaleExact(values: ArrayLike<number>, table: LevelTable): ScaleFit {
  const n = values.length;
  const { levels, mids } = table;
  // Codes at t = 0⁺: the level nearest to 0 approached from each side.
  let zPos = 0; // #mids <= 0
  let zNeg = 0; // #mids < 0
  for (const m of mids) {
    if (m <= 0) zPos++;
    if (m < 0) zNeg++;
  }
  let norm2 = 0;
  let c = 0;
  let b = 0;
  let events = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    norm2 += v * v;
    if (v > 0) {
      const l = levels[zPos]!;
      c += v * l;
      b += l * l;
      events += mids.length - zPos;
    } else if (v < 0) {
      const l = levels[zNeg]!;
      c += v * l;
      b += l * l;
      events += zNeg;
    } else {
      const l = levels[zPos]!;
      b += l * l;
    }
  }
  if (norm2 === 0) return { alpha: 0, error: 0 };
  // Crossing times t = mid / v, with the element and the index it moves from / to.
  const times = new Float64Array(events);
  const elem = new Int32Array(events);
  const from = new Int32Array(events);
  let e = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (v > 0) {
      for (let j = zPos; j < mids.length; j++) {
        times[e] = mids[j]! / v;
        elem[e] = i;
        from[e++] = j; // j → j + 1
      }
    } else if (v < 0) {
      for (let j = zNeg - 1; j >= 0; j--) {
        times[e] = mids[j]! / v;
        elem[e] = i;
        from[e++] = -(j + 2); // j + 1 → j, encoded negative
      }
    }
  }
  const order = new Uint32Array(events);
  for (let k = 0; k < events; k++) order[k] = k;
  order.sort((p, q) => times[p]! - times[q]!);

  let bestError = norm2;
  let bestAlpha = 0;
  const consider = (): void => {
    if (c > 0 && b > 0) {
      const err = norm2 - (c * c) / b;
      if (err < bestError) {
        bestError = err;
        bestAlpha = c / b;
      }
    }
  };
  consider();
  let k = 0;
  while (k < events) {
    const t = times[order[k]!]!;
    while (k < events && times[order[k]!] === t) {
      const ev = order[k++]!;
      const v = values[elem[ev]!]!;
      const f = from[ev]!;
      const [oldIdx, newIdx] = f >= 0 ? [f, f + 1] : [-f - 1, -f - 2];
      const lo = levels[oldIdx]!;
      const ln = levels[newIdx]!;
      c += v * (ln - lo);
      b += ln * ln - lo * lo;
    }
    consider();
  }
  if (!(bestAlpha > 0)) return { alpha: 0, error: norm2 };
  // Polish: nearest codes at the optimal α can only lower the error (ties), then refit α.
  return fitScaleAlternating(values, table, bestAlpha, 3);
}

/** Writes α·nearest(V/α) into `out` and the level indices into `index` (when given). */
export function projectValues(values: ArrayLike<number>, table: LevelTable, alpha: number, out: { [i: number]: number }, index?: { [i: number]: number }): void {
  for (let i = 0; i < values.length; i++) {
    const k = alpha > 0 ? nearestIndex(table, values[i]! / alpha) : nearestIndex(table, 0);
    out[i] = alpha * table.levels[k]!;
    if (index) index[i] = k;
  }
}
