/**
 * Precision choices of a subgroup and their storage cost.
 *
 * A subgroup stored at b > 0 bits holds its weights as packed signed b-bit codes (narrow symmetric
 * range [−(2^(b−1)−1), 2^(b−1)−1]) plus one float32 scale; at b = 0 it is pruned and stores nothing.
 */

/** Bit widths a subgroup may take: 0 (pruned) or a width the packer stores (2, 4, 8). */
export const SUBGROUP_BITS = [0, 2, 4, 8] as const;

/** One allowed bit width. */
export type SubgroupBits = (typeof SUBGROUP_BITS)[number];

/** Bytes of one subgroup scale (float32). */
export const SCALE_BYTES = 4;

/**
 * Validates a list of precision choices: a non-empty list of distinct values from {0, 2, 4, 8}.
 * Returns them sorted ascending; throws a RangeError naming the bad value otherwise.
 */
export function validateChoices(choices: readonly number[], who = 'subgroup search'): SubgroupBits[] {
  if (!Array.isArray(choices) || choices.length === 0) throw new RangeError(`${who}: choices must be a non-empty list of bit widths from {${SUBGROUP_BITS.join(', ')}}`);
  const seen = new Set<number>();
  for (const c of choices) {
    if (!(SUBGROUP_BITS as readonly number[]).includes(c)) throw new RangeError(`${who}: choice ${JSON.stringify(c)} is not one of {${SUBGROUP_BITS.join(', ')}} (0 = pruned)`);
    if (seen.has(c)) throw new RangeError(`${who}: choice ${c} is listed twice`);
    seen.add(c);
  }
  return [...seen].sort((a, b) => a - b) as SubgroupBits[];
}

/** Largest code of a b-bit narrow symmetric range, 2^(b−1) − 1 (0 for pruned). */
export function qmaxOf(bits: number): number {
  return bits === 0 ? 0 : 2 ** (bits - 1) - 1;
}

/** Stored bytes of a subgroup of `elements` weights at `bits`: ⌈elements·b/8⌉ packed codes + a float32 scale; 0 when pruned. */
export function subgroupBytes(elements: number, bits: number): number {
  return bits === 0 ? 0 : Math.ceil((elements * bits) / 8) + SCALE_BYTES;
}
