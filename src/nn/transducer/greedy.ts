/** Greedy decoding of an RNN transducer, batched over utterances. */
import { noGrad } from '../../autograd/index.ts';
import { concat, gather, reshape, slice, Tensor } from '../../tensor/index.ts';
import { readLengths, type Lengths } from './loss.ts';
import type { TransducerPredictor } from './predictor.ts';

/**
 * What the decoders need from a model: the predictor, the blank index and the joint step.
 * `frames` are per-frame encoder activations in whatever form `joint` expects (a Transducer passes
 * them already projected by the joint's encoder layer).
 */
export interface TransducerScorer<S = unknown> {
  readonly predictor: TransducerPredictor<S>;
  readonly blank: number;
  /** frames [B, E] and predictor outputs [B, P] -> logits [B, V+1]. */
  joint(frames: Tensor, predictorOutputs: Tensor): Tensor;
}

/** Options of {@link greedyDecode}. */
export interface GreedyOptions {
  /** Most labels emitted on one frame before moving on (default 5). */
  readonly maxSymbolsPerFrame?: number;
}

/** @internal Frame t of [N, T, E] as [N, E]. */
export function frameAt(frames: Tensor, t: number): Tensor {
  const [n, , e] = frames.shape as [number, number, number];
  return reshape(slice(frames, [0, t, 0], [n, t + 1, e]), [n, e]);
}

/** @internal Rows `indices` of x [B, ...]. */
export function selectRows(x: Tensor, indices: readonly number[]): Tensor {
  return gather(x, new Tensor(Int32Array.from(indices), [indices.length]), 0);
}

/** @internal Checks frames [N, T, E] and their lengths; returns the lengths. */
export function checkFrames(frames: Tensor, lengths: Lengths, who: string): Int32Array {
  if (frames.rank !== 3) throw new RangeError(`${who}: frames must be [N, T, E], got [${frames.shape.join(', ')}]`);
  const [n, t] = frames.shape as [number, number, number];
  return readLengths(lengths, n, 1, t, who, 'lengths');
}

/**
 * Greedy decoding: per frame, take the joint's argmax (first maximum on ties); a label is emitted
 * and fed to the predictor, and the same frame is scored again, until blank or
 * `maxSymbolsPerFrame` labels; then the next frame. Frames beyond an utterance's length are not
 * read. Runs without gradients. Returns each utterance's labels.
 */
export function greedyDecode<S>(scorer: TransducerScorer<S>, frames: Tensor, lengths: Lengths, options: GreedyOptions = {}): number[][] {
  const who = 'greedyDecode';
  const lens = checkFrames(frames, lengths, who);
  const maxSymbols = options.maxSymbolsPerFrame ?? 5;
  if (!Number.isInteger(maxSymbols) || maxSymbols < 1) throw new RangeError(`${who}: maxSymbolsPerFrame must be a positive integer, got ${maxSymbols}`);
  const { predictor, blank } = scorer;
  const n = frames.shape[0]!;
  const maxT = Math.max(...lens);
  const hyps: number[][] = Array.from({ length: n }, () => []);
  return noGrad(() => {
    let { output, state } = predictor.step(new Int32Array(n).fill(blank), predictor.initialState(n));
    const emitted = new Int32Array(n);
    for (let t = 0; t < maxT; t++) {
      const frame = frameAt(frames, t);
      for (let s = 0; s < maxSymbols; s++) {
        const logits = scorer.joint(frame, output);
        const vocab = logits.shape[1]!;
        let any = false;
        for (let b = 0; b < n; b++) {
          let best = 0;
          for (let k = 1; k < vocab; k++) if (logits.data[b * vocab + k]! > logits.data[b * vocab + best]!) best = k;
          emitted[b] = t < lens[b]! && best !== blank ? best : blank;
          any ||= emitted[b] !== blank;
        }
        if (!any) break;
        const stepped = predictor.step(emitted, state);
        const rows = Array.from(emitted, (k, b) => (k === blank ? b : n + b));
        state = predictor.selectState(predictor.joinStates([state, stepped.state]), rows);
        output = selectRows(concat([output, stepped.output], 0), rows);
        emitted.forEach((k, b) => {
          if (k !== blank) hyps[b]!.push(k);
        });
      }
    }
    return hyps;
  });
}
