/**
 * Language-model fusion for RNN transducers, as a wrapper of a `TransducerScorer` that the
 * transducer decoders (`nn.transducer.beamSearch` with `scores: 'logProbs'`) run unchanged.
 *
 * Per decoding step, with p_rnnt the transducer's per-step distribution (labels and blank):
 *   label k:  log p_rnnt(k) + λ_t·log p_T(k | labels so far) − λ_s·log p_S(k | labels so far) + β
 *   blank:    log p_rnnt(blank)
 * Shallow fusion (Gulcehre et al. 2015) uses only the target-domain LM p_T; density-ratio fusion
 * (McDermott, Sak, Variani, "A Density Ratio Approach to Language Model Fusion in End-to-End
 * Automatic Speech Recognition", ASRU 2019) also divides out a source-domain LM p_S trained on the
 * transducer's training text. β (`labelBonus`, default 0) is a reward per emitted label, the usual
 * counterweight to shallow fusion's negative log p_T (without it blanks win more often and labels
 * get deleted). The scores are not renormalised.
 */
import { add, concat, logSoftmax, mul, reshape, slice, split, sum, Tensor, zeros, type Rng } from '../../tensor/index.ts';
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/linear.ts';
import { LstmPredictor, type LstmPredictorState, type TransducerPredictor } from '../../nn/transducer/predictor.ts';
import type { TransducerScorer } from '../../nn/transducer/greedy.ts';

export interface LstmLanguageModelOptions {
  /** Embedding width (default 16). */
  readonly embeddingSize?: number;
  /** LSTM width (default 64). */
  readonly hiddenSize?: number;
  readonly rng?: Rng;
}

/**
 * A label-level LSTM language model over labels 0..V−1 with start symbol V (a transducer's
 * blank index, so it steps on the same inputs as the prediction network): Embedding(V + 1, E) →
 * LSTM(E, H) (the `body`, an nn.transducer.LstmPredictor) → Linear(H, V) (`head`) → log-softmax.
 */
export class LstmLanguageModel extends Module {
  readonly numLabels: number;
  readonly body: LstmPredictor;
  readonly head: Linear;

  constructor(numLabels: number, options: LstmLanguageModelOptions = {}) {
    super();
    if (!Number.isInteger(numLabels) || numLabels < 1) throw new RangeError(`LstmLanguageModel: numLabels must be a positive integer, got ${numLabels}`);
    this.numLabels = numLabels;
    this.body = this.registerModule('body', new LstmPredictor(numLabels + 1, { embeddingSize: options.embeddingSize ?? 16, hiddenSize: options.hiddenSize ?? 64, blank: numLabels, rng: options.rng }));
    this.head = this.registerModule('head', new Linear(this.body.outputSize, numLabels, { rng: options.rng }));
  }

  /** labels [N, U] int32 → log p(next label) [N, U + 1, V]: after the start symbol, then after each label. */
  forward(labels: Tensor): Tensor {
    return logSoftmax(this.head.forward(this.body.forward(labels)), -1);
  }

  /** Mean negative log-likelihood per label of `labels` [N, U] (only positions below `lengths[n]` count). */
  loss(labels: Tensor, lengths: ArrayLike<number>): Tensor {
    const [n, u] = labels.shape as [number, number];
    if (lengths.length !== n) throw new RangeError(`LstmLanguageModel.loss: ${lengths.length} lengths for ${n} sequences`);
    const v = this.numLabels;
    const mask = new Float32Array(n * u * v);
    let count = 0;
    for (let b = 0; b < n; b++) {
      const len = lengths[b]!;
      if (!Number.isInteger(len) || len < 0 || len > u) throw new RangeError(`LstmLanguageModel.loss: lengths[${b}] = ${len} is outside [0, ${u}]`);
      for (let t = 0; t < len; t++) {
        mask[(b * u + t) * v + labels.data[b * u + t]!] = 1;
        count++;
      }
    }
    if (count === 0) throw new RangeError('LstmLanguageModel.loss: no label to score (every length is 0)');
    const logp = slice(this.forward(labels), [0, 0, 0], [n, u, v]);
    return mul(sum(mul(logp, new Tensor(mask, [n, u, v]))), -1 / count);
  }

  initialState(batch: number): LstmPredictorState {
    return this.body.initialState(batch);
  }

  /** Feeds `prevLabels` [B] (V = start symbol) and returns log p(next label) [B, V] and the new state. */
  step(prevLabels: Int32Array, state: LstmPredictorState): { logProbs: Tensor; state: LstmPredictorState } {
    const { output, state: next } = this.body.step(prevLabels, state);
    return { logProbs: logSoftmax(this.head.forward(output), -1), state: next };
  }
}

/** One LM in a fusion and its weight λ. */
export interface FusedLanguageModel {
  readonly lm: LstmLanguageModel;
  readonly weight: number;
}

export interface FusionOptions {
  /** Target-domain LM, added with +λ_t (shallow fusion when alone). */
  readonly target?: FusedLanguageModel;
  /** Source-domain LM, subtracted with −λ_s (density ratio, with `target`). */
  readonly source?: FusedLanguageModel;
  /** β added to every label's score (default 0). */
  readonly labelBonus?: number;
}

/** The fused decoder's state: the transducer predictor's and each LM's. */
export interface FusionState<S> {
  readonly predictor: S;
  readonly target: LstmPredictorState | null;
  readonly source: LstmPredictorState | null;
}

/**
 * A scorer whose joint returns the fused per-step log scores (file comment), for
 * `beamSearch(fusionScorer(model.scorer(), { target, source }), frames, lengths, { scores: 'logProbs' })`.
 * The LMs must have the transducer's labels (numLabels = blank, blank the last joint output).
 */
export function fusionScorer<S>(scorer: TransducerScorer<S>, options: FusionOptions): TransducerScorer<FusionState<S>> {
  const { blank } = scorer;
  const lms = [options.target, options.source];
  for (const [i, f] of lms.entries()) {
    if (!f) continue;
    const name = i === 0 ? 'target' : 'source';
    if (!(f.lm instanceof LstmLanguageModel)) throw new TypeError(`fusionScorer: ${name}.lm must be an LstmLanguageModel`);
    if (!Number.isFinite(f.weight) || f.weight < 0) throw new RangeError(`fusionScorer: ${name}.weight must be a finite number >= 0, got ${f.weight}`);
    if (f.lm.numLabels !== blank) throw new RangeError(`fusionScorer: the ${name} LM has ${f.lm.numLabels} labels, the transducer ${blank} (blank = ${blank})`);
  }
  const bonus = options.labelBonus ?? 0;
  if (!Number.isFinite(bonus)) throw new RangeError(`fusionScorer: labelBonus must be a finite number, got ${bonus}`);
  const inner = scorer.predictor;
  const V = blank;
  const target = options.target ?? null;
  const source = options.source ?? null;
  const widths = [inner.outputSize, ...(target ? [V] : []), ...(source ? [V] : [])];
  const predictor: TransducerPredictor<FusionState<S>> = {
    outputSize: widths.reduce((a, b) => a + b, 0),
    forward: () => {
      throw new Error('fusionScorer: the fused predictor is for decoding only (no teacher-forced forward)');
    },
    initialState: (batch) => ({ predictor: inner.initialState(batch), target: target?.lm.initialState(batch) ?? null, source: source?.lm.initialState(batch) ?? null }),
    step: (prevLabels, state) => {
      const stepped = inner.step(prevLabels, state.predictor);
      const outputs = [stepped.output];
      const t = target ? target.lm.step(prevLabels, state.target!) : null;
      const s = source ? source.lm.step(prevLabels, state.source!) : null;
      if (t) outputs.push(mul(t.logProbs, target!.weight));
      if (s) outputs.push(mul(s.logProbs, -source!.weight));
      return { output: outputs.length === 1 ? outputs[0]! : concat(outputs, 1), state: { predictor: stepped.state, target: t?.state ?? null, source: s?.state ?? null } };
    },
    selectState: (state, indices) => ({
      predictor: inner.selectState(state.predictor, indices),
      target: state.target && target ? target.lm.body.selectState(state.target, indices) : null,
      source: state.source && source ? source.lm.body.selectState(state.source, indices) : null,
    }),
    joinStates: (states) => ({
      predictor: inner.joinStates(states.map((s) => s.predictor)),
      target: target ? target.lm.body.joinStates(states.map((s) => s.target!)) : null,
      source: source ? source.lm.body.joinStates(states.map((s) => s.source!)) : null,
    }),
  };
  return {
    predictor,
    blank,
    joint: (frames, outputs) => {
      const parts = widths.length === 1 ? [outputs] : split(outputs, widths, 1);
      const logp = logSoftmax(scorer.joint(frames, parts[0]!), -1);
      if (logp.shape[1] !== V + 1) throw new RangeError(`fusionScorer: the joint gives ${logp.shape[1]} outputs, expected labels + blank = ${V + 1} with blank last`);
      let lmScore: Tensor | null = null;
      for (const p of parts.slice(1)) lmScore = lmScore ? add(lmScore, p) : p;
      const rows = logp.shape[0]!;
      if (!lmScore && bonus === 0) return logp;
      const labelTerms = lmScore ? (bonus === 0 ? lmScore : add(lmScore, bonus)) : add(zeros([rows, V], logp.dtype), bonus);
      // Labels get the LM terms and the bonus; blank (the last column) gets none.
      return add(logp, concat([reshape(labelTerms, [rows, V]), zeros([rows, 1], logp.dtype)], 1));
    },
  };
}
