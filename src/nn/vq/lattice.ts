/**
 * Label lattices from time-synchronous transducer decoding: nodes are (frame, predictor state)
 * pairs, arcs go from frame t to frame t + 1 and carry a label or blank (no label) with its
 * log-probability. Every path from the start node to a final node spells a label sequence.
 *
 * The oracle label error of a lattice is the fewest edits (substitutions, insertions, deletions)
 * between the reference and any path's labels. It is computed exactly by dynamic programming over
 * the lattice in topological order: per node a row D[j] = the least edit cost of turning some
 * path from the start to this node into the first j reference labels (the edit-distance DP, whose
 * rows compose along arcs and take the element-wise minimum where paths meet), so the cost is
 * O(arcs · |reference|) however many paths the lattice holds.
 */
import { logAddExp } from '../transducer/loss.ts';

/** An arc of a {@link Lattice}. */
export interface LatticeArc {
  readonly from: number;
  readonly to: number;
  /** The label emitted, or null for blank (no label). */
  readonly label: number | null;
  /** Log-probability of the emission given the source node's state. */
  readonly logProb: number;
}

/** A lattice; nodes are numbered so that every arc goes from a lower to a higher number. */
export interface Lattice {
  /** Number of nodes; node 0 is the start. */
  readonly numNodes: number;
  /** Frame of each node (the start is frame 0; an arc from frame t ends at t + 1). */
  readonly nodeFrame: Int32Array;
  /** Frames decoded. */
  readonly frames: number;
  /** Nodes where paths end (those of the last frame). */
  readonly finals: readonly number[];
  readonly arcs: readonly LatticeArc[];
}

/** Thrown for a malformed lattice or reference. */
export class LatticeError extends Error {
  override readonly name = 'LatticeError';
}

/** Checks a lattice's structure: node numbers, frames, arc order, finals. Throws LatticeError. */
export function checkLattice(lattice: Lattice): void {
  const { numNodes, nodeFrame, arcs, finals, frames } = lattice;
  if (!Number.isInteger(numNodes) || numNodes < 1) throw new LatticeError(`lattice: numNodes must be a positive integer, got ${numNodes}`);
  if (nodeFrame.length !== numNodes) throw new LatticeError(`lattice: nodeFrame has ${nodeFrame.length} entries for ${numNodes} nodes`);
  if (nodeFrame[0] !== 0) throw new LatticeError(`lattice: the start node is at frame ${nodeFrame[0]}, expected 0`);
  arcs.forEach((a, i) => {
    if (!(Number.isInteger(a.from) && Number.isInteger(a.to) && a.from >= 0 && a.to < numNodes && a.from < a.to)) {
      throw new LatticeError(`lattice: arc ${i} goes from ${a.from} to ${a.to} (nodes 0..${numNodes - 1}, from < to)`);
    }
    if (nodeFrame[a.to] !== nodeFrame[a.from]! + 1) throw new LatticeError(`lattice: arc ${i} goes from frame ${nodeFrame[a.from]} to frame ${nodeFrame[a.to]}`);
    if (a.label !== null && !(Number.isInteger(a.label) && a.label >= 0)) throw new LatticeError(`lattice: arc ${i} has label ${a.label}`);
  });
  if (finals.length === 0) throw new LatticeError('lattice: no final node');
  for (const f of finals) {
    if (!(Number.isInteger(f) && f >= 0 && f < numNodes)) throw new LatticeError(`lattice: final node ${f} is outside 0..${numNodes - 1}`);
    if (nodeFrame[f] !== frames) throw new LatticeError(`lattice: final node ${f} is at frame ${nodeFrame[f]}, not the last frame ${frames}`);
  }
}

/** The oracle: the fewest edits to the reference over all paths, and one path's labels achieving it. */
export interface OracleResult {
  readonly errors: number;
  readonly labels: number[];
}

/** How a D[j] entry was reached: through arc `arc` from the source's entry `previous`, or (arc −1) from D[j − 1] of the same node. */
interface Step {
  arc: number;
  previous: number;
}

/**
 * The exact oracle edit distance between `reference` and the lattice's paths (see the file
 * comment), with the labels of a path achieving it.
 */
export function oracleErrors(lattice: Lattice, reference: ArrayLike<number>): OracleResult {
  checkLattice(lattice);
  const m = reference.length;
  const rows: (Float64Array | null)[] = new Array<Float64Array | null>(lattice.numNodes).fill(null);
  const back: Step[][] = new Array<Step[]>(lattice.numNodes);
  const incoming: number[][] = Array.from({ length: lattice.numNodes }, () => []);
  lattice.arcs.forEach((a, i) => incoming[a.to]!.push(i));
  for (let v = 0; v < lattice.numNodes; v++) {
    const row = new Float64Array(m + 1).fill(Infinity);
    const steps: Step[] = Array.from({ length: m + 1 }, () => ({ arc: -1, previous: -1 }));
    if (v === 0) row[0] = 0;
    for (const i of incoming[v]!) {
      const arc = lattice.arcs[i]!;
      const source = rows[arc.from];
      if (!source) continue;
      for (let j = 0; j <= m; j++) {
        if (arc.label === null) {
          if (source[j]! < row[j]!) {
            row[j] = source[j]!;
            steps[j] = { arc: i, previous: j };
          }
          continue;
        }
        // The arc's label is inserted (reference position unchanged) ...
        if (source[j]! + 1 < row[j]!) {
          row[j] = source[j]! + 1;
          steps[j] = { arc: i, previous: j };
        }
        // ... or matches / substitutes reference label j − 1.
        if (j > 0) {
          const cost = source[j - 1]! + (arc.label === reference[j - 1] ? 0 : 1);
          if (cost < row[j]!) {
            row[j] = cost;
            steps[j] = { arc: i, previous: j - 1 };
          }
        }
      }
    }
    // Reference labels no path label covers (deletions).
    for (let j = 1; j <= m; j++) {
      if (row[j - 1]! + 1 < row[j]!) {
        row[j] = row[j - 1]! + 1;
        steps[j] = { arc: -1, previous: j - 1 };
      }
    }
    if (row.every((x) => x === Infinity)) continue; // unreachable from the start
    rows[v] = row;
    back[v] = steps;
  }
  let best = Infinity;
  let bestNode = -1;
  for (const f of lattice.finals) {
    const row = rows[f];
    if (row && row[m]! < best) {
      best = row[m]!;
      bestNode = f;
    }
  }
  if (bestNode < 0) throw new LatticeError('lattice: no final node is reachable from the start');
  const labels: number[] = [];
  let node = bestNode;
  let j = m;
  while (!(node === 0 && j === 0)) {
    const step = back[node]![j]!;
    if (step.arc < 0) {
      j = step.previous;
      continue;
    }
    const arc = lattice.arcs[step.arc]!;
    if (arc.label !== null) labels.push(arc.label);
    node = arc.from;
    j = step.previous;
  }
  return { errors: best, labels: labels.reverse() };
}

/** Size measures of a lattice. */
export interface LatticeDensity {
  /** Arcs (blank and label) per frame. */
  readonly arcsPerFrame: number;
  /** Label-carrying arcs per frame. */
  readonly labelArcsPerFrame: number;
  /** Nodes per frame (without the start node). */
  readonly nodesPerFrame: number;
  /** Start-to-final paths (a float: it grows exponentially with the frames, and is Infinity past ~1e308). */
  readonly paths: number;
  /** log10 of `paths`, counted in log space so that it stays finite for long lattices. */
  readonly log10Paths: number;
}

/** Arcs, label arcs and nodes per frame, and the number of paths (counted by DP). */
export function latticeDensity(lattice: Lattice): LatticeDensity {
  checkLattice(lattice);
  const frames = Math.max(lattice.frames, 1);
  const counts = new Float64Array(lattice.numNodes);
  const logCounts = new Float64Array(lattice.numNodes).fill(-Infinity);
  counts[0] = 1;
  logCounts[0] = 0;
  const byTarget = [...lattice.arcs].sort((a, b) => a.to - b.to);
  for (const a of byTarget) {
    counts[a.to]! += counts[a.from]!;
    logCounts[a.to] = logAddExp(logCounts[a.to]!, logCounts[a.from]!);
  }
  let paths = 0;
  let logPaths = -Infinity;
  for (const f of lattice.finals) {
    paths += counts[f]!;
    logPaths = logAddExp(logPaths, logCounts[f]!);
  }
  return {
    arcsPerFrame: lattice.arcs.length / frames,
    labelArcsPerFrame: lattice.arcs.filter((a) => a.label !== null).length / frames,
    nodesPerFrame: (lattice.numNodes - 1) / frames,
    paths,
    log10Paths: logPaths / Math.LN10,
  };
}

/**
 * Every start-to-final path as (labels, summed arc log-probability), by depth-first enumeration;
 * throws when there are more than `limit` (default 100,000). For tests and small lattices.
 */
export function latticePaths(lattice: Lattice, limit = 100_000): { labels: number[]; logProb: number }[] {
  checkLattice(lattice);
  const outgoing: LatticeArc[][] = Array.from({ length: lattice.numNodes }, () => []);
  for (const a of lattice.arcs) outgoing[a.from]!.push(a);
  const finals = new Set(lattice.finals);
  const out: { labels: number[]; logProb: number }[] = [];
  const walk = (node: number, labels: number[], logProb: number): void => {
    if (finals.has(node)) {
      if (out.length >= limit) throw new LatticeError(`latticePaths: more than ${limit} paths`);
      out.push({ labels: [...labels], logProb });
    }
    for (const a of outgoing[node]!) {
      if (a.label !== null) labels.push(a.label);
      walk(a.to, labels, logProb + a.logProb);
      if (a.label !== null) labels.pop();
    }
  };
  walk(0, [], 0);
  return out;
}
