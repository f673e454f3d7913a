import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/index.ts';
import { add, linear, Rng, Tensor } from '../../tensor/index.ts';
import { logAddExp } from '../transducer/loss.ts';
import { editDistance } from '../transducer/metrics.ts';
import type { TransducerScorer } from '../transducer/greedy.ts';
import { LstmPredictor, type TransducerPredictor } from '../transducer/predictor.ts';
import { beamSearch } from '../transducer/beam.ts';
import { latticePaths, oracleErrors } from './lattice.ts';
import { beamLattice } from './lattice-search.ts';
import { VqLstmPredictor } from './predictor.ts';

const LABELS = 2; // labels 0, 1; blank = 2
const FRAMES = 4;
const WIDTH = 5;

function random(shape: number[], rng: Rng, scale = 1): Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

/** A VQ predictor with a small codebook taken from states it reaches, in eval mode. */
function vqPredictor(codebookSize: number, seed: number): VqLstmPredictor {
  const rng = new Rng(seed);
  const predictor = new VqLstmPredictor(LABELS + 1, { embeddingSize: 4, hiddenSize: 3, codebookSize, rng });
  const labels = new Int32Array(codebookSize * 3);
  for (let i = 0; i < labels.length; i++) labels[i] = rng.int(LABELS);
  noGrad(() => predictor.forward(new Tensor(labels, [codebookSize, 3])));
  predictor.eval();
  return predictor;
}

/** A toy joint: logits = W_f·frame + W_p·predictorOutput (scaled up so the distributions are peaked). */
function scorer<S>(predictor: TransducerPredictor<S>, rng: Rng): TransducerScorer<S> {
  const wf = random([LABELS + 1, WIDTH], rng, 1.5);
  const wp = random([LABELS + 1, predictor.outputSize], rng, 3);
  return {
    predictor,
    blank: LABELS,
    joint: (frames, outputs) => add(linear(frames, wf), linear(outputs, wp)),
  };
}

/** log P(y) for every label sequence y, by enumerating every emission choice per frame (≤ 1 label per frame). */
function bruteForce<S>(s: TransducerScorer<S>, frames: Tensor): Map<string, number> {
  const out = new Map<string, number>();
  const p = s.predictor;
  const steps = frames.shape[1]!;
  const walk = (t: number, labels: number[], score: number, state: S, output: Tensor): void => {
    if (t === steps) {
      const key = labels.join(',');
      out.set(key, logAddExp(out.get(key) ?? -Infinity, score));
      return;
    }
    const frame = new Tensor(frames.data.slice(t * WIDTH, (t + 1) * WIDTH), [1, WIDTH]);
    const logits = s.joint(frame, output).data;
    let z = 0;
    for (const v of logits) z += Math.exp(v);
    for (let k = 0; k <= LABELS; k++) {
      const logProb = logits[k]! - Math.log(z);
      if (k === s.blank) walk(t + 1, labels, score + logProb, state, output);
      else {
        const next = p.step(Int32Array.of(k), state);
        walk(t + 1, [...labels, k], score + logProb, next.state, next.output);
      }
    }
  };
  noGrad(() => {
    const start = p.step(Int32Array.of(s.blank), p.initialState(1));
    walk(0, [], 0, start.state, start.output);
  });
  return out;
}

/** log Σ over the lattice's paths spelling each label sequence of exp(path log-probability). */
function pathMass(paths: { labels: number[]; logProb: number }[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of paths) {
    const key = p.labels.join(',');
    out.set(key, logAddExp(out.get(key) ?? -Infinity, p.logProb));
  }
  return out;
}

describe('beamLattice without pruning', () => {
  const unpruned = 3 ** FRAMES;
  for (const [name, merge] of [['labels', 'labels'], ['state (VQ codes)', 'state']] as const) {
    it(`merge '${name}': every label sequence is in the lattice with exactly its probability (brute force), total mass 1`, () => {
      const rng = new Rng(8);
      const s = scorer(vqPredictor(3, 9), rng);
      const frames = random([1, FRAMES, WIDTH], rng, 2);
      const [decoded] = beamLattice(s, frames, [FRAMES], { beamSize: unpruned, merge });
      const brute = bruteForce(s, frames);
      const mass = pathMass(latticePaths(decoded!.lattice));
      assert.equal(mass.size, brute.size);
      for (const [key, logP] of brute) assert.ok(Math.abs(mass.get(key)! - logP) < 1e-5, `${name}: [${key}] ${mass.get(key)} vs ${logP}`);
      let total = -Infinity;
      for (const f of decoded!.lattice.finals) total = logAddExp(total, decoded!.nodeScores[f]!);
      assert.ok(Math.abs(total) < 1e-5, `total log-mass ${total}`);
      if (merge === 'labels') {
        // One final node per label sequence, scored log P(y).
        for (const f of decoded!.lattice.finals) assert.ok(Math.abs(decoded!.nodeScores[f]! - brute.get(decoded!.nodeLabels[f]!.join(','))!) < 1e-5);
      }
    });
  }

  it("state merging with 3 codes gives at most 3 nodes per frame where label merging needs one per sequence", () => {
    const rng = new Rng(8);
    const s = scorer(vqPredictor(3, 9), rng);
    const frames = random([1, FRAMES, WIDTH], rng, 2);
    const [byLabels] = beamLattice(s, frames, [FRAMES], { beamSize: unpruned, merge: 'labels' });
    const [byState] = beamLattice(s, frames, [FRAMES], { beamSize: unpruned, merge: 'state' });
    const perFrame = (f: Int32Array, t: number): number => f.filter((x) => x === t).length;
    for (let t = 1; t <= FRAMES; t++) assert.ok(perFrame(byState!.lattice.nodeFrame, t) <= 3, `frame ${t}`);
    assert.equal(perFrame(byLabels!.lattice.nodeFrame, FRAMES), 2 ** (FRAMES + 1) - 1); // all sequences of length ≤ 4 over 2 labels
  });
});

describe('beamLattice with pruning', () => {
  it('node scores are the log-sum over incoming arcs; the 1-best is a lattice path; the lattice oracle is no worse than the 1-best', () => {
    for (const merge of ['labels', 'state'] as const) {
      const rng = new Rng(12);
      const s = scorer(vqPredictor(4, 13), rng);
      const frames = random([2, 7, WIDTH], rng, 2);
      for (const decoded of beamLattice(s, frames, [7, 5], { beamSize: 3, merge })) {
        const { lattice, nodeScores } = decoded;
        const incoming = new Map<number, number>();
        for (const a of lattice.arcs) incoming.set(a.to, logAddExp(incoming.get(a.to) ?? -Infinity, nodeScores[a.from]! + a.logProb));
        for (let v = 1; v < lattice.numNodes; v++) assert.ok(Math.abs(incoming.get(v)! - nodeScores[v]!) < 1e-9, `${merge} node ${v}`);
        const paths = latticePaths(lattice).map((p) => p.labels.join(','));
        assert.ok(paths.includes(decoded.best.join(',')), `${merge}: the 1-best is a path`);
        const reference = [1, 0, 1];
        const oracle = oracleErrors(lattice, reference);
        assert.ok(paths.includes(oracle.labels.join(',')));
        assert.ok(oracle.errors <= editDistance(decoded.best, reference));
        assert.ok(lattice.finals.length <= 3);
      }
    }
  });

  it('the 1-best and its score are those of nn.transducer.beamSearch, for both merge rules; state-merged alternatives are lattice paths', () => {
    for (const merge of ['labels', 'state'] as const) {
      const rng = new Rng(15);
      const s = scorer(vqPredictor(4, 16), rng);
      const frames = random([3, 8, WIDTH], rng, 2);
      const lattices = beamLattice(s, frames, [8, 6, 3], { beamSize: 3, merge });
      const searched = beamSearch(s, frames, [8, 6, 3], { beamSize: 3, merge });
      lattices.forEach((d, n) => {
        const top = searched[n]![0]!;
        assert.deepEqual(d.best, top.labels, `${merge} utterance ${n}`);
        assert.ok(Math.abs(d.bestScore - top.mergedScore) < 1e-9, `${merge} utterance ${n}: ${d.bestScore} vs ${top.mergedScore}`);
        const paths = new Set(latticePaths(d.lattice).map((p) => p.labels.join(',')));
        for (const h of searched[n]!) {
          assert.ok(paths.has(h.labels.join(',')), `${merge}: hypothesis [${h.labels}] is a path`);
          for (const a of h.alternatives) assert.ok(paths.has(a.labels.join(',')), `${merge}: alternative [${a.labels}] is a path`);
        }
      });
    }
  });

  it("works with the plain LstmPredictor (merge 'labels') and refuses merge 'state' without stateKey", () => {
    const rng = new Rng(14);
    const predictor = new LstmPredictor(LABELS + 1, { embeddingSize: 4, hiddenSize: 3, rng });
    predictor.eval();
    const s = scorer(predictor, rng);
    const frames = random([1, 3, WIDTH], rng, 2);
    const [decoded] = beamLattice(s, frames, [3], { beamSize: 27 });
    const brute = bruteForce(s, frames);
    assert.equal(decoded!.lattice.finals.length, brute.size);
    assert.throws(() => beamLattice(s, frames, [3], { merge: 'state' }), /merge 'state' needs a predictor with stateKey/);
    assert.throws(() => beamLattice(s, frames, [3], { beamSize: 0 }), /beamSize must be a positive integer, got 0/);
  });
});
