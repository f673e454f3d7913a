/** Scoring shared by the iRNN language-model benches (moby-dick-lm.ts, moby-dick-ln-attn.ts). */

/** Running totals of {@link scoreLogits}. */
export interface ScoreAccumulator {
  loss: number;
  correct: number;
  /** argmax per sample (for agreement between models). */
  predictions: Int32Array;
}

/**
 * Adds `rows` rows of float logits ([rows, vocabSize], row-major) to `acc`: the cross-entropy of
 * each row's label (for the perplexity), whether its argmax is right, and the argmax itself at
 * predictions[offset + row].
 */
export function scoreLogits(logits: ArrayLike<number>, labels: ArrayLike<number>, rows: number, offset: number, acc: ScoreAccumulator, vocabSize: number): void {
  for (let i = 0; i < rows; i++) {
    let best = 0;
    let max = -Infinity;
    for (let j = 0; j < vocabSize; j++) {
      const v = logits[i * vocabSize + j]!;
      if (v > max) {
        max = v;
        best = j;
      }
    }
    let sum = 0;
    for (let j = 0; j < vocabSize; j++) sum += Math.exp(logits[i * vocabSize + j]! - max);
    acc.loss += Math.log(sum) + max - logits[i * vocabSize + labels[i]!]!;
    if (best === labels[i]) acc.correct++;
    acc.predictions[offset + i] = best;
  }
}
