/** Perplexity of a next-word model: a running meter over logits, and the evaluation over batches. */
import { noGrad } from '../autograd/engine.ts';
import type { TensorModule } from '../nn/module.ts';
import type { Batch } from './fit.ts';

export interface PerplexityResult {
  /** exp(crossEntropy). */
  readonly perplexity: number;
  /** Mean negative log-likelihood of the targets, in nats per word (float64 log-softmax of the logits). */
  readonly crossEntropy: number;
  /** Fraction of targets that are the argmax of their logits (first maximum wins). */
  readonly accuracy: number;
  /** Targets scored. */
  readonly count: number;
  /** Wall time of the forward passes (scoring excluded); 0 when the meter was fed logits directly. */
  readonly seconds: number;
}

/** Accumulates the float64 negative log-likelihood and argmax hits of rows of logits. */
export class PerplexityMeter {
  private nll = 0;
  private correct = 0;
  private count = 0;

  /**
   * Scores `rows` rows of `logits` (row-major [rows, vocab]) against int32 `targets`; returns each
   * row's argmax (first maximum wins). Throws on a target outside [0, vocab).
   */
  add(logits: ArrayLike<number>, targets: ArrayLike<number>, vocab: number): Int32Array {
    const rows = targets.length;
    if (logits.length !== rows * vocab) throw new RangeError(`PerplexityMeter: ${logits.length} logits for ${rows} targets over ${vocab} words`);
    const argmax = new Int32Array(rows);
    for (let i = 0; i < rows; i++) {
      const target = targets[i]!;
      if (!Number.isInteger(target) || target < 0 || target >= vocab) throw new RangeError(`PerplexityMeter: target ${target} is outside [0, ${vocab - 1}]`);
      const row = i * vocab;
      let best = 0;
      for (let c = 1; c < vocab; c++) if (logits[row + c]! > logits[row + best]!) best = c;
      const max = logits[row + best]!;
      let sum = 0;
      for (let c = 0; c < vocab; c++) sum += Math.exp(logits[row + c]! - max);
      this.nll += Math.log(sum) + max - logits[row + target]!;
      if (best === target) this.correct++;
      argmax[i] = best;
    }
    this.count += rows;
    return argmax;
  }

  result(seconds = 0): PerplexityResult {
    const crossEntropy = this.count > 0 ? this.nll / this.count : Number.NaN;
    return { perplexity: Math.exp(crossEntropy), crossEntropy, accuracy: this.count > 0 ? this.correct / this.count : Number.NaN, count: this.count, seconds };
  }
}

/**
 * Scores `model` (logits [N, V] per batch, int32 targets [N]) over `batches` in eval mode, without
 * a graph (the previous mode is restored): perplexity, cross-entropy and next-word accuracy, the
 * log-softmax done in float64.
 */
export function evaluatePerplexity(model: TensorModule, batches: Iterable<Batch>): PerplexityResult {
  const wasTraining = model.training;
  model.eval();
  const meter = new PerplexityMeter();
  let seconds = 0;
  try {
    noGrad(() => {
      for (const { x, y } of batches) {
        const t0 = performance.now();
        const logits = model.forward(x);
        seconds += (performance.now() - t0) / 1000;
        const n = y.shape[0]!;
        if (logits.rank !== 2 || logits.shape[0] !== n) throw new Error(`evaluatePerplexity: expected logits [${n}, V], got [${logits.shape.join(', ')}]`);
        meter.add(logits.data, y.data, logits.shape[1]!);
      }
    });
  } finally {
    model.train(wasTraining);
  }
  return meter.result(seconds);
}
