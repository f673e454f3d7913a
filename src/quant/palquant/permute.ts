/**
 * Channel permutations between PalQuant's parallel groups (Hu et al., "PalQuant: Accelerating
 * High-precision Networks on Low-precision Accelerators", ECCV 2022, §3.3 cyclic shuffle).
 *
 * A tensor with C channels on axis 1 holds G groups of m = C/G consecutive channels (group g owns
 * channels g·m … g·m + m − 1). The cyclic permutation by `shift` moves whole groups:
 *   out channel g·m + j  ←  in channel ((g + shift) mod G)·m + j
 * so output group g is input group (g + shift) mod G. Its inverse is the shift by −shift, and G
 * applications give the identity.
 */
import { concat, split, type Tensor } from '../../tensor/index.ts';

/** Checks that `groups` is a positive integer dividing `channels`. @internal */
export function checkGroups(where: string, channels: number, groups: number): void {
  if (!Number.isInteger(groups) || groups < 1) throw new Error(`${where}: groups must be a positive integer, got ${String(groups)}`);
  if (!Number.isInteger(channels) || channels < 1) throw new Error(`${where}: channels must be a positive integer, got ${String(channels)}`);
  if (channels % groups !== 0) throw new Error(`${where}: ${channels} channels do not split into ${groups} equal groups`);
}

/** (a mod n) in [0, n). */
function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

/**
 * The cyclic group permutation as an index map: `source[c]` is the input channel that output
 * channel c takes, `source[g·m + j] = ((g + shift) mod G)·m + j`.
 */
export function cyclicPermutation(channels: number, groups: number, shift = 1): Int32Array {
  checkGroups('cyclicPermutation', channels, groups);
  if (!Number.isInteger(shift)) throw new Error(`cyclicPermutation: shift must be an integer, got ${String(shift)}`);
  const m = channels / groups;
  const source = new Int32Array(channels);
  for (let g = 0; g < groups; g++) {
    const from = mod(g + shift, groups);
    for (let j = 0; j < m; j++) source[g * m + j] = from * m + j;
  }
  return source;
}

/** The inverse of an index map: `inverse[source[c]] = c`. Throws if `source` is not a permutation. */
export function invertPermutation(source: ArrayLike<number>): Int32Array {
  const n = source.length;
  const inverse = new Int32Array(n).fill(-1);
  for (let c = 0; c < n; c++) {
    const s = source[c]!;
    if (!Number.isInteger(s) || s < 0 || s >= n || inverse[s] !== -1) throw new Error(`invertPermutation: not a permutation of 0..${n - 1} (entry ${c} = ${s})`);
    inverse[s] = c;
  }
  return inverse;
}

/**
 * x [N, C, ...] with its channel groups moved cyclically (see the module comment); the gradient is
 * the inverse permutation of the output gradient (split and concat carry it). shift ≡ 0 (mod G)
 * returns x itself.
 */
export function cyclicPermuteGroups(x: Tensor, groups: number, shift = 1): Tensor {
  if (x.rank < 2) throw new Error(`cyclicPermuteGroups: expected [N, C, ...], got [${x.shape.join(', ')}]`);
  const channels = x.shape[1]!;
  checkGroups('cyclicPermuteGroups', channels, groups);
  if (!Number.isInteger(shift)) throw new Error(`cyclicPermuteGroups: shift must be an integer, got ${String(shift)}`);
  const s = mod(shift, groups);
  if (s === 0) return x;
  const parts = split(x, new Array<number>(groups).fill(channels / groups), 1);
  return concat([...parts.slice(s), ...parts.slice(0, s)], 1);
}
