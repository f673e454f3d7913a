/**
 * Test helpers (not part of the public API): a transducer whose joint reads a fixed table of
 * logits, so the best paths are known by hand.
 */
import { Tensor } from '../../tensor/index.ts';
import type { TransducerScorer } from './greedy.ts';
import type { TransducerPredictor } from './predictor.ts';

/** The table predictor's state: each hypothesis's fed symbols, the start symbol (blank) first. */
export interface HistoryState {
  readonly histories: readonly (readonly number[])[];
}

/**
 * Predictor whose output is the number of labels fed so far (start symbol excluded), [B, 1];
 * stateKey = that number: the table joint reads only it, so equal keys do mean identical futures.
 */
export const historyPredictor: TransducerPredictor<HistoryState> = {
  outputSize: 1,
  forward(labels: Tensor): Tensor {
    const [n, u] = labels.shape as [number, number];
    const out = new Float64Array(n * (u + 1));
    for (let b = 0; b < n; b++) for (let i = 0; i <= u; i++) out[b * (u + 1) + i] = i;
    return new Tensor(out, [n, u + 1, 1]);
  },
  initialState: (batch) => ({ histories: Array.from({ length: batch }, () => []) }),
  step(prevLabels, state) {
    const histories = state.histories.map((h, b) => [...h, prevLabels[b]!]);
    return { output: new Tensor(Float64Array.from(histories, (h) => h.length - 1), [histories.length, 1]), state: { histories } };
  },
  stateKey: (state, index) => String(state.histories[index]!.length),
  selectState: (state, indices) => ({ histories: indices.map((i) => state.histories[i]!) }),
  joinStates: (states) => ({ histories: states.flatMap((s) => s.histories) }),
};

/**
 * Frames [N, T, 1] holding the frame index t, and a scorer whose logits at (t, u labels emitted)
 * are `table[t][min(u, last)]`.
 */
export function tableModel(table: readonly (readonly (readonly number[])[])[], n = 1): { scorer: TransducerScorer<HistoryState>; frames: Tensor } {
  const steps = table.length;
  const vocab = table[0]![0]!.length;
  const frames = new Float64Array(n * steps);
  for (let b = 0; b < n; b++) for (let t = 0; t < steps; t++) frames[b * steps + t] = t;
  const scorer: TransducerScorer<HistoryState> = {
    predictor: historyPredictor,
    blank: vocab - 1,
    joint(f, p) {
      const rows = p.shape[0]!;
      const out = new Float64Array(rows * vocab);
      for (let b = 0; b < rows; b++) {
        const row = table[f.data[f.shape[0] === 1 ? 0 : b]!]!;
        out.set(row[Math.min(p.data[b]!, row.length - 1)]!, b * vocab);
      }
      return new Tensor(out, [rows, vocab]);
    },
  };
  return { scorer, frames: new Tensor(frames, [n, steps, 1]) };
}
