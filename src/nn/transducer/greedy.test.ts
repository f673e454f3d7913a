import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { greedyDecode } from './greedy.ts';
import { tableModel } from './testing.ts';

/** A row of logits over 3 labels + blank (index 3) whose argmax is `k`. */
function peak(k: number, height = 2): number[] {
  const row = [0, 0, 0, 0];
  row[k] = height;
  return row;
}

describe('greedyDecode', () => {
  it('follows the argmax of a fixed table of logits (labels at a frame, then blank moves on)', () => {
    // table[t][u]: at t=0 emit 2 then blank; t=1 blank; t=2 emit 0, emit 1, blank.
    const B = 3;
    const table = [
      [peak(2), peak(B), peak(B), peak(B)],
      [peak(0), peak(B), peak(B), peak(B)],
      [peak(B), peak(0), peak(1), peak(B)],
    ];
    const { scorer, frames } = tableModel(table);
    assert.deepEqual(greedyDecode(scorer, frames, [3]), [[2, 0, 1]]);
    // Only the first two frames: [2].
    assert.deepEqual(greedyDecode(scorer, frames, [2]), [[2]]);
  });

  it('stops after maxSymbolsPerFrame labels on one frame', () => {
    const table = [
      [peak(1), peak(2), peak(0), peak(1), peak(3)],
      [peak(3), peak(3), peak(3), peak(0), peak(3)],
    ];
    const { scorer, frames } = tableModel(table);
    assert.deepEqual(greedyDecode(scorer, frames, [2]), [[1, 2, 0, 1]]);
    // Two per frame: [1, 2] on frame 0; frame 1 at u = 2 says blank.
    assert.deepEqual(greedyDecode(scorer, frames, [2], { maxSymbolsPerFrame: 2 }), [[1, 2]]);
    // One per frame: [1] on frame 0, then u = 1 on frame 1 is blank.
    assert.deepEqual(greedyDecode(scorer, frames, [2], { maxSymbolsPerFrame: 1 }), [[1]]);
    assert.throws(() => greedyDecode(scorer, frames, [2], { maxSymbolsPerFrame: 0 }), /maxSymbolsPerFrame must be a positive integer, got 0/);
    assert.throws(() => greedyDecode(scorer, frames, [3]), /lengths\[0\] = 3 is outside \[1, 2\]/);
  });

  it('a batch decodes as its utterances one by one (different lengths)', () => {
    const table = [
      [peak(1), peak(3), peak(3), peak(3)],
      [peak(3), peak(2), peak(3), peak(3)],
      [peak(0), peak(0), peak(3), peak(3)],
      [peak(3), peak(3), peak(1), peak(3)],
    ];
    const { scorer, frames } = tableModel(table, 4);
    const lengths = [4, 1, 3, 2];
    const batched = greedyDecode(scorer, frames, lengths);
    const single = lengths.map((len) => greedyDecode(scorer, tableModel(table).frames, [len])[0]);
    assert.deepEqual(batched, single);
    assert.deepEqual(batched, [[1, 2, 1], [1], [1, 2], [1, 2]]);
  });
});
