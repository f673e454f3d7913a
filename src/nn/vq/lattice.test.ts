import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../tensor/index.ts';
import { editDistance } from '../transducer/metrics.ts';
import { checkLattice, latticeDensity, LatticeError, latticePaths, oracleErrors, type Lattice, type LatticeArc } from './lattice.ts';

/** A random lattice: `width` nodes per frame, each node with 1–3 arcs from random nodes of the frame before; labels in [0, labels) or blank. */
function randomLattice(rng: Rng, frames: number, width: number, labels: number): Lattice {
  const nodeFrame = [0];
  const arcs: LatticeArc[] = [];
  let previous = [0];
  for (let t = 1; t <= frames; t++) {
    const current: number[] = [];
    const count = 1 + rng.int(width);
    for (let i = 0; i < count; i++) {
      const node = nodeFrame.length;
      nodeFrame.push(t);
      current.push(node);
      const fanIn = 1 + rng.int(3);
      for (let a = 0; a < fanIn; a++) {
        const from = previous[rng.int(previous.length)]!;
        const label = rng.uniform() < 0.3 ? null : rng.int(labels);
        arcs.push({ from, to: node, label, logProb: Math.log(rng.uniform() + 1e-3) });
      }
    }
    previous = current;
  }
  return { numNodes: nodeFrame.length, nodeFrame: Int32Array.from(nodeFrame), frames, finals: previous, arcs };
}

describe('oracleErrors', () => {
  it('equals brute-force enumeration of all paths on random lattices, and its path achieves it', () => {
    const rng = new Rng(3);
    for (let trial = 0; trial < 60; trial++) {
      const lattice = randomLattice(rng, 1 + rng.int(6), 3, 3);
      const reference = Array.from({ length: rng.int(6) }, () => rng.int(3));
      const paths = latticePaths(lattice);
      const brute = Math.min(...paths.map((p) => editDistance(p.labels, reference)));
      const oracle = oracleErrors(lattice, reference);
      assert.equal(oracle.errors, brute, `trial ${trial}`);
      assert.equal(editDistance(oracle.labels, reference), brute, `trial ${trial}: the returned path`);
      assert.ok(paths.some((p) => p.labels.join(',') === oracle.labels.join(',')), `trial ${trial}: the returned labels are a lattice path`);
    }
  });

  it('a lattice holding the reference has oracle 0; an empty reference costs the shortest path length', () => {
    // 0 -a-> 1 -b-> 2, and 0 -c-> 3 -blank-> 4 (finals 2, 4).
    const lattice: Lattice = {
      numNodes: 5, nodeFrame: Int32Array.of(0, 1, 2, 1, 2), frames: 2, finals: [2, 4],
      arcs: [
        { from: 0, to: 1, label: 7, logProb: -1 }, { from: 1, to: 2, label: 8, logProb: -1 },
        { from: 0, to: 3, label: 9, logProb: -1 }, { from: 3, to: 4, label: null, logProb: -1 },
      ],
    };
    assert.deepEqual(oracleErrors(lattice, [7, 8]), { errors: 0, labels: [7, 8] });
    assert.deepEqual(oracleErrors(lattice, []), { errors: 1, labels: [9] });
    assert.deepEqual(oracleErrors(lattice, [9, 9, 9]), { errors: 2, labels: [9] });
  });
});

describe('latticeDensity', () => {
  it('counts arcs, label arcs and nodes per frame, and paths (checked by enumeration)', () => {
    const rng = new Rng(4);
    for (let trial = 0; trial < 10; trial++) {
      const lattice = randomLattice(rng, 5, 3, 2);
      const d = latticeDensity(lattice);
      assert.equal(d.arcsPerFrame, lattice.arcs.length / 5);
      assert.equal(d.labelArcsPerFrame, lattice.arcs.filter((a) => a.label !== null).length / 5);
      assert.equal(d.nodesPerFrame, (lattice.numNodes - 1) / 5);
      assert.equal(d.paths, latticePaths(lattice).length);
      assert.ok(Math.abs(d.log10Paths - Math.log10(d.paths)) < 1e-12);
    }
  });

  it('counts the paths of a long lattice in log space: a chain of 1,100 frames with two arcs per step has 2^1100', () => {
    const frames = 1100;
    const arcs: LatticeArc[] = [];
    for (let t = 0; t < frames; t++) arcs.push({ from: t, to: t + 1, label: 0, logProb: -1 }, { from: t, to: t + 1, label: null, logProb: -1 });
    const lattice: Lattice = { numNodes: frames + 1, nodeFrame: Int32Array.from({ length: frames + 1 }, (_, i) => i), frames, finals: [frames], arcs };
    const d = latticeDensity(lattice);
    assert.equal(d.paths, Infinity);
    assert.ok(Math.abs(d.log10Paths - frames * Math.log10(2)) < 1e-9, `${d.log10Paths}`);
  });
});

describe('checkLattice', () => {
  const good = (): Lattice => ({ numNodes: 2, nodeFrame: Int32Array.of(0, 1), frames: 1, finals: [1], arcs: [{ from: 0, to: 1, label: 0, logProb: 0 }] });
  it('accepts a well-formed lattice and names what is wrong with a bad one', () => {
    checkLattice(good());
    assert.throws(() => checkLattice({ ...good(), arcs: [{ from: 1, to: 0, label: 0, logProb: 0 }] }), (e: unknown) => e instanceof LatticeError && /arc 0 goes from 1 to 0/.test(e.message));
    assert.throws(() => checkLattice({ ...good(), finals: [0] }), /final node 0 is at frame 0, not the last frame 1/);
    assert.throws(() => checkLattice({ ...good(), finals: [] }), /no final node/);
    assert.throws(() => checkLattice({ ...good(), nodeFrame: Int32Array.of(0) }), /nodeFrame has 1 entries for 2 nodes/);
    assert.throws(() => checkLattice({ ...good(), arcs: [{ from: 0, to: 1, label: -2, logProb: 0 }] }), /arc 0 has label -2/);
    assert.throws(() => oracleErrors({ ...good(), arcs: [] }, [1]), /no final node is reachable/);
  });
});
