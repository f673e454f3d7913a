import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Module, type TensorModule } from '../nn/module.ts';
import { Tensor } from '../tensor/index.ts';
import { evaluatePerplexity, PerplexityMeter } from './perplexity.ts';

describe('PerplexityMeter', () => {
  it('uniform logits over V words give perplexity V exactly', () => {
    const m = new PerplexityMeter();
    m.add(new Float32Array(3 * 7).fill(1.5), Int32Array.of(0, 3, 6), 7);
    const r = m.result();
    assert.ok(Math.abs(r.perplexity - 7) < 1e-12, String(r.perplexity));
    assert.equal(r.count, 3);
    assert.ok(Math.abs(r.accuracy - 1 / 3) < 1e-12);  // first maximum wins: only target 0 is hit
  });

  it('matches the closed form on two rows and returns each argmax', () => {
    const m = new PerplexityMeter();
    const logits = Float32Array.of(2, 0, 0, /* row 2 */ 0, 1, 3);
    const argmax = m.add(logits, Int32Array.of(0, 1), 3);
    assert.deepEqual([...argmax], [0, 2]);
    const nll0 = -(2 - Math.log(Math.exp(2) + 2));
    const nll1 = -(1 - Math.log(1 + Math.exp(1) + Math.exp(3)));
    const r = m.result();
    assert.ok(Math.abs(r.crossEntropy - (nll0 + nll1) / 2) < 1e-12);
    assert.ok(Math.abs(r.perplexity - Math.exp((nll0 + nll1) / 2)) < 1e-9);
    assert.equal(r.accuracy, 0.5);
  });

  it('refuses targets outside the vocabulary and mismatched sizes', () => {
    assert.throws(() => new PerplexityMeter().add(new Float32Array(4), Int32Array.of(0, 2), 2), /target 2 is outside \[0, 1\]/);
    assert.throws(() => new PerplexityMeter().add(new Float32Array(5), Int32Array.of(0, 1), 2), /5 logits for 2 targets/);
  });
});

/** logits = a fixed table row per first id: exp-able in closed form. */
class TableModel extends Module implements TensorModule {
  forward(ids: Tensor): Tensor {
    const n = ids.shape[0]!;
    const out = new Float32Array(n * 2);
    for (let i = 0; i < n; i++) out.set(ids.data[i * ids.shape[1]!] === 0 ? [0, Math.log(3)] : [0, 0], i * 2);
    return new Tensor(out, [n, 2]);
  }
}

describe('evaluatePerplexity', () => {
  it('scores batches in eval mode and restores the mode', () => {
    const model = new TableModel();
    model.train();
    let sawTraining = true;
    const batches = [0, 1].map((first) => ({ x: new Tensor(Int32Array.of(first, 5), [1, 2]), y: Int32Array.of(1) })).map(({ x, y }) => {
      return { x, y: new Tensor(y, [1]) };
    });
    const wrapped = { *[Symbol.iterator]() { for (const b of batches) { sawTraining = model.training; yield b; } } };
    const r = evaluatePerplexity(model, wrapped);
    // Row 1: p(1) = 3/4; row 2: p(1) = 1/2.
    const ce = -(Math.log(3 / 4) + Math.log(1 / 2)) / 2;
    assert.ok(Math.abs(r.crossEntropy - ce) < 1e-7);
    assert.equal(r.count, 2);
    assert.equal(sawTraining, false);
    assert.equal(model.training, true);
  });
});
