import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isFreshWhole, noteAllocated, recycle, setRecycling, takeRecycled, trackAllocations } from './recycle.ts';

const SIZE = 5000;  // above the 4096-element minimum

function drain(size: number): void {
  while (takeRecycled(size)) { /* empty the pool of that size */ }
}

describe('buffer recycling pool', () => {
  it('only buffers allocated inside trackAllocations, whole and large enough, count as fresh', () => {
    const outside = new Float32Array(SIZE);
    noteAllocated(outside);
    assert.equal(isFreshWhole(outside), false, 'allocated outside a tracked pass');
    trackAllocations(() => {
      const whole = new Float32Array(SIZE);
      const small = new Float32Array(100);
      const view = new Float32Array(new ArrayBuffer(4 * SIZE * 2), 0, SIZE);
      for (const d of [whole, small, view]) noteAllocated(d);
      assert.equal(isFreshWhole(whole), true);
      assert.equal(isFreshWhole(small), false, 'below the minimum size');
      assert.equal(isFreshWhole(view), false, 'a view of a larger buffer');
      assert.equal(isFreshWhole(outside), false);
    });
  });

  it('hands a buffer out once even if it is released twice, and no longer counts it fresh', () => {
    drain(SIZE);
    trackAllocations(() => {
      const data = new Float32Array(SIZE);
      noteAllocated(data);
      recycle(data);
      recycle(data);
      assert.equal(isFreshWhole(data), false);
      assert.equal(takeRecycled(SIZE), data);
      assert.equal(takeRecycled(SIZE), undefined);
    });
  });

  it('keeps at most four buffers of a size, matches sizes exactly, and holds nothing when off', () => {
    drain(SIZE);
    drain(SIZE + 1);
    const buffers = Array.from({ length: 6 }, () => new Float32Array(SIZE));
    for (const b of buffers) recycle(b);
    assert.equal(takeRecycled(SIZE + 1), undefined);
    const back = new Set<Float32Array>();
    for (let d = takeRecycled(SIZE); d; d = takeRecycled(SIZE)) back.add(d);
    assert.equal(back.size, 4);
    const previous = setRecycling(false);
    try {
      recycle(new Float32Array(SIZE));
      assert.equal(takeRecycled(SIZE), undefined);
    } finally {
      setRecycling(previous);
    }
  });
});
