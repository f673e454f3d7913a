/**
 * The arena plan of the resident wasm executor: on random DAGs (adds, flattens that alias their
 * input, long-lived values), no two values live at the same time share memory, no output shares
 * memory with its own node's inputs, and slots hold their values plus the kernels' overshoot.
 * (That the resident executor gives the reference's integers is checked in executor.test.ts.)
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../tensor/index.ts';
import { planArena } from './resident.ts';

/** A graph of `ops` (only what planArena reads: ops, input references and shapes). */
function graph(ops: string[], refs: number[][], shapes: number[][]): { g: { nodes: { op: string }[] }; size: { inputRefs: number[][]; shapes: number[][] } } {
  return { g: { nodes: ops.map((op) => ({ op })) }, size: { inputRefs: refs, shapes } };
}

describe('planArena', () => {
  it('random DAGs: values live at once never overlap, outputs never overlap their inputs, slots hold the overshoot', () => {
    const rng = new Rng(37);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    for (let trial = 0; trial < 200; trial++) {
      const count = int(2, 24);
      const ops: string[] = ['quantize'], refs: number[][] = [[-1]], shapes: number[][] = [[int(1, 40)]];
      for (let i = 1; i < count; i++) {
        const kind = int(0, 5);
        if (kind === 0 && i >= 2) {
          ops.push('add');
          refs.push([int(0, i - 1), int(0, i - 1)]);
        } else {
          ops.push(kind === 1 ? 'flatten' : 'conv2d');
          refs.push([int(Math.max(0, i - 4), i - 1)]);
        }
        shapes.push(ops[i] === 'flatten' ? [...shapes[refs[i]![0]!]!] : [int(1, 40)]);
      }
      const batch = int(1, 5);
      const { g, size } = graph(ops, refs, shapes);
      const plan = planArena(g, size, batch);
      const n = (i: number): number => batch * shapes[i]!.reduce((p, d) => p * d, 1);
      // storage owner and live range [first, last] of each node's output
      const owner = ops.map((_, i) => i);
      for (let i = 0; i < count; i++) if (ops[i] === 'flatten') owner[i] = owner[refs[i]![0]!]!;
      const last = ops.map((_, i) => i);
      for (let i = 0; i < count; i++) for (const k of refs[i]!) if (k >= 0) last[owner[k]!] = Math.max(last[owner[k]!]!, i);
      last[owner[count - 1]!] = count;
      for (let i = 0; i < count; i++) {
        if (ops[i] === 'flatten') assert.equal(plan.offsets[i], plan.offsets[owner[i]!], `trial ${trial}: flatten ${i} aliases its input`);
        assert.deepEqual(plan.shapes[i], [batch, ...shapes[i]!]);
        assert.ok(plan.offsets[i]! + Math.ceil(n(i) / 4) * 4 + 4 <= plan.size, `trial ${trial}: node ${i} fits the arena with its overshoot`);
      }
      const span = (i: number): [number, number] => [plan.offsets[i]!, plan.offsets[i]! + Math.ceil(n(i) / 4) * 4 + 4];
      for (let i = 0; i < count; i++) {
        if (owner[i] !== i) continue;
        for (let j = i + 1; j < count; j++) {
          if (owner[j] !== j) continue;
          // j is created while i is still needed (i's last consumer runs at or after j)
          if (last[i]! < j) continue;
          const [a0, a1] = span(i), [b0, b1] = span(j);
          assert.ok(a1 <= b0 || b1 <= a0, `trial ${trial}: nodes ${i} [${a0}, ${a1}) and ${j} [${b0}, ${b1}) overlap while both live (${ops.join(',')})`);
        }
      }
    }
  });

  it('reuses memory along a chain: a long chain needs about two slots, not one per node', () => {
    const count = 30;
    const { g, size } = graph(['quantize', ...Array<string>(count - 1).fill('conv2d')], Array.from({ length: count }, (_, i) => [i - 1]), Array.from({ length: count }, () => [100]));
    const plan = planArena(g, size, 2);
    assert.equal(plan.size, 2 * (200 + 4));
  });
});
