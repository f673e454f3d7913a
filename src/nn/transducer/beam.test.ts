import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor } from '../../tensor/index.ts';
import { beamSearch } from './beam.ts';
import { greedyDecode } from './greedy.ts';
import { logAddExp } from './loss.ts';
import { Transducer } from './model.ts';
import { tableModel } from './testing.ts';

/** A random table of logits [T][U+1][V+1]. */
function randomTable(rng: Rng, steps: number, positions: number, vocab: number, scale = 2): number[][][] {
  return Array.from({ length: steps }, () => Array.from({ length: positions }, () => Array.from({ length: vocab }, () => (rng.uniform() * 2 - 1) * scale)));
}

/**
 * log P(labels) under the one-symbol-per-frame alignment model by enumerating every symbol
 * sequence: each frame t emits exactly one symbol s_t (blank or a label) with probability
 * softmax(table[t][u])[s_t], u = labels emitted before t.
 */
function bruteForceScores(table: number[][][], steps: number): Map<string, number> {
  const vocab = table[0]![0]!.length;
  const blank = vocab - 1;
  const logSoftmax = (row: number[]): number[] => {
    const m = Math.max(...row);
    const z = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    return row.map((v) => v - z);
  };
  const scores = new Map<string, number>();
  const walk = (t: number, labels: number[], score: number): void => {
    if (t === steps) {
      const key = labels.join(',');
      scores.set(key, logAddExp(scores.get(key) ?? -Infinity, score));
      return;
    }
    const row = table[t]!;
    const lp = logSoftmax(row[Math.min(labels.length, row.length - 1)]!);
    for (let k = 0; k < vocab; k++) walk(t + 1, k === blank ? labels : [...labels, k], score + lp[k]!);
  };
  walk(0, [], 0);
  return scores;
}

describe('beamSearch (modified, one label per frame)', () => {
  it('with a beam wide enough to keep everything, scores every label sequence exactly (brute force)', () => {
    const rng = new Rng(21);
    for (let trial = 0; trial < 3; trial++) {
      const table = randomTable(rng, 4, 5, 4);
      const { scorer, frames } = tableModel(table);
      const exact = bruteForceScores(table, 4);
      const nbest = beamSearch(scorer, frames, [4], { beamSize: 1000 })[0]!;
      assert.equal(nbest.length, exact.size);
      for (let i = 0; i < nbest.length; i++) {
        const h = nbest[i]!;
        assert.ok(Math.abs(h.score - exact.get(h.labels.join(','))!) < 1e-9, `${h.labels}: ${h.score}`);
        if (i > 0) assert.ok(nbest[i - 1]!.score >= h.score);
        assert.deepEqual(h.alternatives, []);
        assert.equal(h.mergedScore, h.score);
      }
      // Probabilities over all label sequences sum to 1.
      assert.ok(Math.abs(nbest.reduce((s, h) => logAddExp(s, h.score), -Infinity)) < 1e-9);
      assert.equal(beamSearch(scorer, frames, [4], { beamSize: 1000, nBest: 2 })[0]!.length, 2);
    }
  });

  it('beam 4 finds the most probable sequence where greedy does not (hand-built table)', () => {
    // Frame 0: blank 0.4, label 0 0.3, label 1 0.3. After blank (u = 0) frame 1 is uniform over
    // 4 symbols (blank slightly ahead); after a label (u = 1) frame 1 is almost surely blank. Greedy takes blank first
    // and ends on [] with P ≈ 0.4·0.26; [0] has P ≈ 0.3 + 0.4·0.25.
    const l = Math.log;
    const table = [
      [[l(0.3), l(0.3), l(1e-9), l(0.4)], [0, 0, 0, 0]],
      [[0, 0, 0, 0.1], [l(1e-6), l(1e-6), l(1e-6), 0]],
    ];
    const { scorer, frames } = tableModel(table);
    assert.deepEqual(greedyDecode(scorer, frames, [2], { maxSymbolsPerFrame: 1 }), [[]]);
    const best = beamSearch(scorer, frames, [2], { beamSize: 4 })[0]![0]!;
    assert.deepEqual(best.labels, [0]);
    const exact = bruteForceScores(table, 2);
    assert.ok(Math.abs(best.score - exact.get('0')!) < 1e-12);
  });

  it('beamSize 1 equals greedy decoding with one label per frame (tables and a random Transducer)', () => {
    const rng = new Rng(5);
    for (let trial = 0; trial < 5; trial++) {
      const table = randomTable(rng, 6, 7, 5);
      const { scorer, frames } = tableModel(table);
      const beam = beamSearch(scorer, frames, [6], { beamSize: 1 })[0]![0]!;
      assert.deepEqual(beam.labels, greedyDecode(scorer, frames, [6], { maxSymbolsPerFrame: 1 })[0]);
    }
    const model = new Transducer({ inputSize: 4, numLabels: 3, encoderSize: 8, predictorSize: 6, embeddingSize: 4, jointSize: 8, rng: new Rng(8) }).eval();
    model.joint.output.bias!.data[3] = -3; // blank less likely, so that the random model emits labels
    const features = new Float32Array(3 * 9 * 4);
    for (let i = 0; i < features.length; i++) features[i] = 3 * rng.normal();
    const x = new Tensor(features, [3, 9, 4]);
    const lengths = [9, 5, 7];
    const greedy = model.greedyDecode(x, lengths, { maxSymbolsPerFrame: 1 });
    assert.ok(greedy.some((h) => h.length > 0), 'the random model emits something');
    assert.deepEqual(model.beamSearch(x, lengths, { beamSize: 1 }).map((nbest) => nbest[0]!.labels), greedy);
  });

  it("merge 'state' keeps the best history, records the absorbed sequences with their exact scores", () => {
    // The table predictor's stateKey is the label count, which is all the table joint reads: equal
    // keys do mean identical futures, so every absorbed sequence keeps its exact probability.
    const rng = new Rng(33);
    const table = randomTable(rng, 4, 5, 3);
    const { scorer, frames } = tableModel(table);
    const exact = bruteForceScores(table, 4);
    const merged = beamSearch(scorer, frames, [4], { beamSize: 1000, merge: 'state' })[0]!;
    // One hypothesis per label count 0..4.
    assert.deepEqual(merged.map((h) => h.labels.length).sort(), [0, 1, 2, 3, 4]);
    const seen = new Set<string>();
    for (const h of merged) {
      let total = h.score;
      for (const a of h.alternatives) {
        assert.equal(a.labels.length, h.labels.length);
        assert.ok(Math.abs(a.score - exact.get(a.labels.join(','))!) < 1e-9, `alternative ${a.labels}`);
        // The kept history is the best of its group at every merge; here (same futures) the best overall.
        assert.ok(exact.get(h.labels.join(','))! >= a.score - 1e-12);
        total = logAddExp(total, a.score);
        seen.add(a.labels.join(','));
      }
      assert.ok(Math.abs(h.score - exact.get(h.labels.join(','))!) < 1e-9, `main ${h.labels}`);
      assert.ok(Math.abs(total - h.mergedScore) < 1e-9);
      seen.add(h.labels.join(','));
    }
    assert.equal(seen.size, exact.size, 'every label sequence is a hypothesis or an alternative');
  });

  it('refuses bad options', () => {
    const { scorer, frames } = tableModel([[[0, 0, 0]]]);
    assert.throws(() => beamSearch(scorer, frames, [1], { beamSize: 0 }), /beamSize must be a positive integer, got 0/);
    assert.throws(() => beamSearch(scorer, frames, [1], { merge: 'x' as 'labels' }), /merge must be 'labels' or 'state', got x/);
    assert.throws(() => beamSearch(scorer, frames, [1], { nBest: 1.5 }), /nBest must be a positive integer/);
    const { stateKey: _unused, ...noKey } = scorer.predictor;
    assert.throws(() => beamSearch({ ...scorer, predictor: noKey }, frames, [1], { merge: 'state' }), /merge 'state' needs a predictor with stateKey/);
  });
});
