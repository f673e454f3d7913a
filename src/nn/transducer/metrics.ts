/** Edit distance and the label error rate (the word error rate's analogue for any label sequence). */

/** Levenshtein distance: fewest substitutions, insertions and deletions turning `hypothesis` into `reference`. */
export function editDistance(hypothesis: ArrayLike<number>, reference: ArrayLike<number>): number {
  const m = reference.length;
  let previous = Array.from({ length: m + 1 }, (_, j) => j);
  for (let i = 1; i <= hypothesis.length; i++) {
    const current = [i];
    for (let j = 1; j <= m; j++) {
      const substitution = previous[j - 1]! + (hypothesis[i - 1] === reference[j - 1] ? 0 : 1);
      current.push(Math.min(substitution, previous[j]! + 1, current[j - 1]! + 1));
    }
    previous = current;
  }
  return previous[m]!;
}

/**
 * Σ editDistance(hyp_i, ref_i) / Σ |ref_i| over a corpus (not a mean of per-utterance rates). Can
 * exceed 1 (insertions). Throws when the lists differ in length or the references hold no label.
 */
export function labelErrorRate(hypotheses: readonly ArrayLike<number>[], references: readonly ArrayLike<number>[]): number {
  if (hypotheses.length !== references.length) throw new RangeError(`labelErrorRate: ${hypotheses.length} hypotheses for ${references.length} references`);
  let errors = 0;
  let total = 0;
  for (let i = 0; i < references.length; i++) {
    errors += editDistance(hypotheses[i]!, references[i]!);
    total += references[i]!.length;
  }
  if (total === 0) throw new RangeError('labelErrorRate: the references hold no label (the rate is undefined)');
  return errors / total;
}
