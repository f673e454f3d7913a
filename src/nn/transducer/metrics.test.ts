import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { editDistance, labelErrorRate } from './metrics.ts';

describe('editDistance / labelErrorRate', () => {
  it('edit distance: closed forms', () => {
    assert.equal(editDistance([], []), 0);
    assert.equal(editDistance([1, 2, 3], [1, 2, 3]), 0);
    assert.equal(editDistance([], [4, 5, 6]), 3); // three deletions
    assert.equal(editDistance([4, 5], []), 2); // two insertions
    assert.equal(editDistance([1, 9, 3], [1, 2, 3]), 1); // one substitution
    // kitten -> sitting: 3 (k→s, e→i, +g)
    const code = (w: string): number[] => [...w].map((c) => c.charCodeAt(0));
    assert.equal(editDistance(code('kitten'), code('sitting')), 3);
    assert.equal(editDistance(code('sitting'), code('kitten')), 3);
    assert.equal(editDistance([1, 2, 3, 4], [2, 3, 4, 5]), 2); // drop the 1, add the 5
  });

  it('label error rate is total edits over total reference length', () => {
    // edits 1 + 0 + 2 = 3 over 3 + 2 + 1 = 6 reference labels.
    assert.equal(labelErrorRate([[1, 2], [7, 8], [1, 2]], [[1, 2, 3], [7, 8], [5]]), 3 / 6);
    assert.equal(labelErrorRate([[0, 0, 0, 0]], [[1]]), 4); // insertions can push it above 1
    assert.equal(labelErrorRate([Int32Array.of(3, 1)], [[3, 1]]), 0);
    assert.throws(() => labelErrorRate([[1]], [[1], [2]]), /1 hypotheses for 2 references/);
    assert.throws(() => labelErrorRate([[1]], [[]]), /references hold no label/);
  });
});
