/**
 * Beam search for RNN transducers: the time-synchronous "modified" beam search (one label at most
 * per frame; as k2/icefall's `modified_beam_search` and ESPnet's `modified_adaptive_expansion`
 * family), with hypotheses merged by label sequence or by predictor state.
 */
import { noGrad } from '../../autograd/index.ts';
import { broadcastTo, concat, Tensor } from '../../tensor/index.ts';
import type { Lengths } from './loss.ts';
import { logAddExp } from './loss.ts';
import { checkFrames, frameAt, selectRows, type TransducerScorer } from './greedy.ts';
import type { TransducerPredictor } from './predictor.ts';

/** How beam search merges hypotheses. */
export type BeamMerge = 'labels' | 'state';

/** Options of {@link beamSearch}. */
export interface BeamSearchOptions {
  /** Hypotheses kept per frame (default 4). */
  readonly beamSize?: number;
  /**
   * 'labels' (default): hypotheses with identical label sequences become one, scores log-added.
   * 'state': also those whose predictor states have equal `stateKey`s (identical futures); the
   * best-scoring history stays the hypothesis, the others become its `alternatives`.
   */
  readonly merge?: BeamMerge;
  /** Hypotheses returned per utterance, best first (default beamSize). */
  readonly nBest?: number;
  /**
   * What the scorer's joint returns: 'logits' (default), normalised here by a log-softmax per row,
   * or 'logProbs': per-step log scores used as they are (e.g. with language-model fusion, quant.rnn.fusionScorer).
   */
  readonly scores?: 'logits' | 'logProbs';
}

/** A label sequence a hypothesis absorbed by state merging, continued with the hypothesis's later labels. */
export interface AlternativeHypothesis {
  readonly labels: number[];
  /** Its own log-probability: its score at the merge plus what the shared future added. */
  readonly score: number;
}

/** A decoded hypothesis. */
export interface TransducerHypothesis {
  readonly labels: number[];
  /** Log-probability of `labels`, summed over the alignments the search kept (≤ 1 label per frame). */
  readonly score: number;
  /** `score` log-added with the alternatives' scores: what the search ranks by (= score without state merging). */
  readonly mergedScore: number;
  /** Label sequences merged into this one by state ('state' merging; else empty), best first. */
  readonly alternatives: AlternativeHypothesis[];
}

/** An absorbed history: labels up to the merge, the hypothesis length then, and score − merged score. */
interface PendingAlternative {
  readonly prefix: readonly number[];
  readonly mergedAt: number;
  readonly offset: number;
}

interface Hypothesis {
  labels: number[];
  /** Log-added with the alternatives (the ranking score). */
  score: number;
  /** The labels' own log-probability. */
  own: number;
  alternatives: PendingAlternative[];
}

/** `h`'s alternatives (and `h` itself when `includeSelf`) re-expressed for a merged hypothesis of score `merged` and `length` labels. */
function absorb(h: Hypothesis, merged: number, length: number, includeSelf: boolean): PendingAlternative[] {
  const out: PendingAlternative[] = h.alternatives.map((a) => ({
    prefix: [...a.prefix, ...h.labels.slice(a.mergedAt)],
    mergedAt: length,
    offset: a.offset + h.score - merged,
  }));
  if (includeSelf) out.push({ prefix: h.labels, mergedAt: length, offset: h.own - merged });
  return out;
}

/** The final alternatives of `h`: full label sequences, duplicates log-added, the main sequence left out, best first. */
function finishAlternatives(h: Hypothesis): AlternativeHypothesis[] {
  const byKey = new Map<string, AlternativeHypothesis>();
  const own = h.labels.join(',');
  for (const a of h.alternatives) {
    const labels = [...a.prefix, ...h.labels.slice(a.mergedAt)];
    const key = labels.join(',');
    if (key === own) continue;
    const score = h.score + a.offset;
    const seen = byKey.get(key);
    byKey.set(key, { labels, score: seen ? logAddExp(seen.score, score) : score });
  }
  return [...byKey.values()].sort((x, y) => y.score - x.score);
}

/**
 * Modified beam search (time-synchronous, at most one label per frame). Per frame, every kept
 * hypothesis is extended by blank (same labels, same predictor state) and by each label k (labels +
 * k, predictor stepped with k), each scored by its joint log-softmax; candidates with identical
 * labels are log-added, the best `beamSize` kept, and the new labels fed to the predictor in one
 * batched step. With `merge: 'state'`, kept hypotheses whose `predictor.stateKey` agree are then
 * merged (best history kept, scores log-added, others recorded as alternatives). Returns per
 * utterance the `nBest` best hypotheses, best first. With beamSize 1 it is greedy decoding with
 * maxSymbolsPerFrame = 1. Runs without gradients.
 */
export function beamSearch<S>(scorer: TransducerScorer<S>, frames: Tensor, lengths: Lengths, options: BeamSearchOptions = {}): TransducerHypothesis[][] {
  const who = 'beamSearch';
  const lens = checkFrames(frames, lengths, who);
  const { beamSize, merge, stateKey } = beamOptions(scorer, options, who);
  const { predictor, blank } = scorer;
  const nBest = options.nBest ?? beamSize;
  if (!Number.isInteger(nBest) || nBest < 1) throw new RangeError(`${who}: nBest must be a positive integer, got ${nBest}`);
  const scores = options.scores ?? 'logits';
  if (scores !== 'logits' && scores !== 'logProbs') throw new RangeError(`${who}: scores must be 'logits' or 'logProbs', got ${String(scores)}`);
  const width = frames.shape[2]!;
  return noGrad(() => Array.from(lens, (length, n) => {
    const utterance = selectRows(frames, [n]);
    const start = predictor.step(Int32Array.of(blank), predictor.initialState(1));
    let state = start.state;
    let output = start.output;
    let hyps: Hypothesis[] = [{ labels: [], score: 0, own: 0, alternatives: [] }];
    for (let t = 0; t < length; t++) {
      const rows = hyps.length;
      const frame = broadcastTo(frameAt(utterance, t), [rows, width]);
      const logits = scorer.joint(frame, output);
      const vocab = logits.shape[1]!;
      // Candidates by label sequence: parent row, the label added (blank: none), score.
      const candidates = new Map<string, { parent: number; label: number; score: number; own: number; merged: Hypothesis[] }>();
      for (let b = 0; b < rows; b++) {
        let max = -Infinity;
        for (let k = 0; k < vocab; k++) max = Math.max(max, logits.data[b * vocab + k]!);
        let z = 0;
        for (let k = 0; k < vocab; k++) z += Math.exp(logits.data[b * vocab + k]! - max);
        const logZ = scores === 'logits' ? max + Math.log(z) : 0;
        const h = hyps[b]!;
        for (let k = 0; k < vocab; k++) {
          const labels = k === blank ? h.labels : [...h.labels, k];
          const lp = logits.data[b * vocab + k]! - logZ;
          const score = h.score + lp;
          const own = h.own + lp;
          const key = labels.join(',');
          const seen = candidates.get(key);
          const self: Hypothesis = { labels, score, own, alternatives: h.alternatives };
          if (!seen) {
            candidates.set(key, { parent: b, label: k, score, own, merged: [self] });
          } else {
            seen.score = logAddExp(seen.score, score);
            seen.own = logAddExp(seen.own, own);
            seen.merged.push(self);
            // A blank extension needs no predictor step: prefer it as the representative.
            if (k === blank) Object.assign(seen, { parent: b, label: k });
          }
        }
      }
      const kept = [...candidates.values()].sort((x, y) => y.score - x.score).slice(0, beamSize);
      const { joinedState, joinedOutput, picks } = stepKept(predictor, state, output, rows, kept, blank);
      let newHyps: Hypothesis[] = kept.map((c) => {
        const labels = c.merged[0]!.labels;
        return { labels, score: c.score, own: c.own, alternatives: c.merged.flatMap((m) => absorb(m, c.score, labels.length, false)) };
      });
      if (merge === 'state') {
        const chosen = predictor.selectState(joinedState, picks);
        const groups = new Map<string, number[]>();
        newHyps.forEach((_, i) => {
          const key = stateKey!(chosen, i);
          groups.set(key, [...(groups.get(key) ?? []), i]);
        });
        const survivors: number[] = [];
        const merged: Hypothesis[] = [];
        for (const members of groups.values()) {
          // Members are in score order: the first is the best history.
          const best = newHyps[members[0]!]!;
          const score = members.reduce((s, i) => logAddExp(s, newHyps[i]!.score), -Infinity);
          const alternatives = members.flatMap((i, j) => absorb(newHyps[i]!, score, best.labels.length, j > 0));
          survivors.push(picks[members[0]!]!);
          merged.push({ labels: best.labels, score, own: best.own, alternatives });
        }
        const order = merged.map((_, i) => i).sort((a, b) => merged[b]!.score - merged[a]!.score);
        newHyps = order.map((i) => merged[i]!);
        picks.splice(0, picks.length, ...order.map((i) => survivors[i]!));
      }
      state = predictor.selectState(joinedState, picks);
      output = selectRows(joinedOutput, picks);
      hyps = newHyps;
    }
    return hyps.slice(0, nBest).map((h) => ({ labels: h.labels, score: h.own, mergedScore: h.score, alternatives: finishAlternatives(h) }));
  }));
}

/**
 * @internal One batched predictor step for the kept candidates that extend their parent row by a
 * label (a blank extension keeps its parent's state and output). Returns the parents' `rows` rows
 * followed by the stepped ones, and each candidate's row in them.
 */
export function stepKept<S>(
  predictor: TransducerPredictor<S>, state: S, output: Tensor, rows: number,
  kept: readonly { readonly parent: number; readonly label: number }[], blank: number,
): { joinedState: S; joinedOutput: Tensor; picks: number[] } {
  const extended = kept.filter((c) => c.label !== blank);
  let joinedState = state;
  let joinedOutput = output;
  if (extended.length > 0) {
    const stepped = predictor.step(Int32Array.from(extended, (c) => c.label), predictor.selectState(state, extended.map((c) => c.parent)));
    joinedState = predictor.joinStates([state, stepped.state]);
    joinedOutput = concat([output, stepped.output], 0);
  }
  let next = 0;
  const picks = kept.map((c) => (c.label === blank ? c.parent : rows + next++));
  return { joinedState, joinedOutput, picks };
}

/**
 * @internal The checked beam size and merge rule of a beam search (`who` names the caller in
 * errors), with the predictor's bound `stateKey` (required by merge 'state').
 */
export function beamOptions<S>(
  scorer: TransducerScorer<S>, options: { readonly beamSize?: number; readonly merge?: 'labels' | 'state' }, who: string,
): { beamSize: number; merge: 'labels' | 'state'; stateKey: ((state: S, index: number) => string) | undefined } {
  const beamSize = options.beamSize ?? 4;
  if (!Number.isInteger(beamSize) || beamSize < 1) throw new RangeError(`${who}: beamSize must be a positive integer, got ${beamSize}`);
  const merge = options.merge ?? 'labels';
  if (merge !== 'labels' && merge !== 'state') throw new RangeError(`${who}: merge must be 'labels' or 'state', got ${String(merge)}`);
  const stateKey = scorer.predictor.stateKey?.bind(scorer.predictor);
  if (merge === 'state' && !stateKey) throw new RangeError(`${who}: merge 'state' needs a predictor with stateKey()`);
  return { beamSize, merge, stateKey };
}
