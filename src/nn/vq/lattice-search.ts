/**
 * Lattice generation by time-synchronous beam search with hypothesis merging (VQ-T, Shi et al.
 * 2022). The search is the transducer's modified beam search (at most one label per frame; the
 * same expansion, pruning and merge rules as nn.transducer.beamSearch), but it records the search
 * graph instead of only the surviving histories: after frame t each kept hypothesis is a node
 * (t + 1, key), and every expansion that led into it (a blank or a label from a node of frame t)
 * is an arc, including those of hypotheses merged into it.
 *
 * merge 'labels': hypotheses with the same label sequence share a node (the key is the sequence),
 *   so the lattice is a prefix tree with re-joined alignments.
 * merge 'state': hypotheses whose predictor states have the same `stateKey` share a node too (with
 *   a VQ predictor the key is the code, so nodes are (frame, code)); paths through a node may
 *   carry different label histories, which is what makes the lattice dense.
 * A node's score is the log-sum of (source score + arc log-probability) over its incoming arcs.
 */
import { noGrad } from '../../autograd/index.ts';
import { broadcastTo, type Tensor } from '../../tensor/index.ts';
import { checkFrames, frameAt, selectRows, type TransducerScorer } from '../transducer/greedy.ts';
import { beamOptions, stepKept } from '../transducer/beam.ts';
import { logAddExp, type Lengths } from '../transducer/loss.ts';
import type { Lattice, LatticeArc } from './lattice.ts';

/** Options of {@link beamLattice}. */
export interface BeamLatticeOptions {
  /** Hypotheses kept per frame (default 4). */
  readonly beamSize?: number;
  /** 'labels' (default) or 'state' (needs `predictor.stateKey`). */
  readonly merge?: 'labels' | 'state';
}

/** One utterance's search result. */
export interface DecodedLattice {
  readonly lattice: Lattice;
  /** Per node: its log-score and the label sequence of its best history. */
  readonly nodeScores: Float64Array;
  readonly nodeLabels: readonly (readonly number[])[];
  /** The best final node's labels: the 1-best hypothesis. */
  readonly best: number[];
  readonly bestScore: number;
}

/** A hypothesis on the beam: its node and best history. */
interface Hyp {
  node: number;
  labels: number[];
  score: number;
}

/** A candidate of one frame: its best history and every arc into it. */
interface Candidate {
  parent: number;
  label: number;
  labels: number[];
  score: number;
  arcs: { from: number; label: number | null; logProb: number }[];
}

/** Beam search with lattice generation (see the file comment); per utterance a {@link DecodedLattice}. Runs without gradients. */
export function beamLattice<S>(scorer: TransducerScorer<S>, frames: Tensor, lengths: Lengths, options: BeamLatticeOptions = {}): DecodedLattice[] {
  const who = 'beamLattice';
  const lens = checkFrames(frames, lengths, who);
  const { beamSize, merge, stateKey } = beamOptions(scorer, options, who);
  const { predictor, blank } = scorer;
  const width = frames.shape[2]!;
  return noGrad(() => Array.from(lens, (length, n) => {
    const utterance = selectRows(frames, [n]);
    const start = predictor.step(Int32Array.of(blank), predictor.initialState(1));
    let state = start.state;
    let output = start.output;
    const nodeFrame = [0];
    const nodeScores = [0];
    const nodeLabels: number[][] = [[]];
    const arcs: LatticeArc[] = [];
    let hyps: Hyp[] = [{ node: 0, labels: [], score: 0 }];
    for (let t = 0; t < length; t++) {
      const rows = hyps.length;
      const logits = scorer.joint(broadcastTo(frameAt(utterance, t), [rows, width]), output);
      const vocab = logits.shape[1]!;
      const candidates = new Map<string, Candidate>();
      for (let b = 0; b < rows; b++) {
        let max = -Infinity;
        for (let k = 0; k < vocab; k++) max = Math.max(max, logits.data[b * vocab + k]!);
        let z = 0;
        for (let k = 0; k < vocab; k++) z += Math.exp(logits.data[b * vocab + k]! - max);
        const logZ = max + Math.log(z);
        const h = hyps[b]!;
        for (let k = 0; k < vocab; k++) {
          const labels = k === blank ? h.labels : [...h.labels, k];
          const logProb = logits.data[b * vocab + k]! - logZ;
          const score = h.score + logProb;
          const arc = { from: h.node, label: k === blank ? null : k, logProb };
          const key = labels.join(',');
          const seen = candidates.get(key);
          if (!seen) {
            candidates.set(key, { parent: b, label: k, labels, score, arcs: [arc] });
          } else {
            seen.score = logAddExp(seen.score, score);
            seen.arcs.push(arc);
            // A blank extension needs no predictor step: prefer it as the representative.
            if (k === blank) Object.assign(seen, { parent: b, label: k });
          }
        }
      }
      const kept = [...candidates.values()].sort((x, y) => y.score - x.score).slice(0, beamSize);
      const { joinedState, joinedOutput, picks } = stepKept(predictor, state, output, rows, kept, blank);
      // Groups of kept candidates that become one node: by label sequence, or by state key.
      let groups: number[][];
      if (merge === 'state') {
        const chosen = predictor.selectState(joinedState, picks);
        const byKey = new Map<string, number[]>();
        kept.forEach((_, i) => {
          const key = stateKey!(chosen, i);
          byKey.set(key, [...(byKey.get(key) ?? []), i]);
        });
        groups = [...byKey.values()];
      } else {
        groups = kept.map((_, i) => [i]);
      }
      const merged = groups.map((members) => ({
        members,
        score: members.reduce((s, i) => logAddExp(s, kept[i]!.score), -Infinity),
      })).sort((a, b) => b.score - a.score);
      const newHyps: Hyp[] = [];
      const newPicks: number[] = [];
      for (const { members, score } of merged) {
        const node = nodeFrame.length;
        // Members are in score order: the first is the best history.
        const best = kept[members[0]!]!;
        nodeFrame.push(t + 1);
        nodeScores.push(score);
        nodeLabels.push(best.labels);
        for (const i of members) for (const a of kept[i]!.arcs) arcs.push({ from: a.from, to: node, label: a.label, logProb: a.logProb });
        newHyps.push({ node, labels: best.labels, score });
        newPicks.push(picks[members[0]!]!);
      }
      state = predictor.selectState(joinedState, newPicks);
      output = selectRows(joinedOutput, newPicks);
      hyps = newHyps;
    }
    const finals = hyps.map((h) => h.node);
    const lattice: Lattice = { numNodes: nodeFrame.length, nodeFrame: Int32Array.from(nodeFrame), frames: length, finals, arcs };
    return { lattice, nodeScores: Float64Array.from(nodeScores), nodeLabels, best: hyps[0]!.labels, bestScore: hyps[0]!.score };
  }));
}
