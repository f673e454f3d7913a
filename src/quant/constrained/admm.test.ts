import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, manualSeed, randn, Rng, crossEntropy } from '../../tensor/index.ts';
import { grad } from '../../autograd/engine.ts';
import { mlp } from '../../nn/index.ts';
import { SGD } from '../../optim/sgd.ts';
import { AdmmQuantizer } from './admm.ts';
import { fitScaleExact, makeTable } from './tables.ts';

function randomParam(shape: number[], seed: number, dtype: 'float32' | 'float64' = 'float32'): Tensor {
  return randn(shape, { rng: new Rng(seed), dtype }).requiresGrad_();
}

/** Checks every element of `w` is exactly fround(alpha[c]·level) for an in-table level. */
function assertOnGrid(w: Tensor, alpha: Float32Array, levels: readonly number[], index: Uint16Array): void {
  const inner = w.size / alpha.length;
  for (let i = 0; i < w.size; i++) {
    const a = alpha[Math.floor(i / inner)]!;
    const expected = w.dtype === 'float64' ? a * levels[index[i]!]! : Math.fround(a * levels[index[i]!]!);
    assert.equal(w.data[i], expected, `element ${i}`);
  }
}

describe('constrained/admm: AdmmQuantizer', () => {
  it('selects *.weight of rank >= 2 and starts with G = Π(W), U = 0', () => {
    manualSeed(1);
    const model = mlp({ inputSize: 6, hidden: [5], numClasses: 3 });
    for (const p of model.parameters()) p.data.set(randn(p.shape as number[], { rng: new Rng(p.size) }).data);
    const admm = new AdmmQuantizer(model, { table: 'ternary' });
    assert.deepEqual(admm.names, ['1.weight', '3.weight']);
    const g = admm.quantized().get('1.weight')!;
    const alpha = admm.scales().get('1.weight')!;
    assert.equal(alpha.length, 5);
    const w = model.parameters()[0]!;
    for (let c = 0; c < 5; c++) {
      const row = Float64Array.from(w.data.subarray(c * 6, (c + 1) * 6));
      assert.equal(alpha[c], Math.fround(fitScaleExact(row, makeTable('ternary')).alpha));
      for (let j = 0; j < 6; j++) assert.ok([-1, 0, 1].some((l) => g.data[c * 6 + j] === Math.fround(alpha[c]! * l)));
    }
    for (const u of admm.duals().values()) assert.ok(u.data.every((x) => x === 0));
  });

  it('penalty() gradient equals ρ(W − G + U), and addGradients() adds the same', () => {
    const w = randomParam([4, 5], 2, 'float64');
    const admm = new AdmmQuantizer([['layer.weight', w]], { table: { bits: 2, range: 'full' }, rho: 0.37 });
    // Move W and take an ADMM step so that U is nonzero.
    for (let i = 0; i < w.size; i++) w.data[i] = w.data[i]! + 0.1 * Math.sin(i);
    admm.step();
    const G = admm.quantized().get('layer.weight')!.data;
    const U = admm.duals().get('layer.weight')!.data;
    assert.ok(U.some((x) => x !== 0));
    for (let i = 0; i < w.size; i++) w.data[i] = w.data[i]! - 0.05 * Math.cos(i);
    const expected = Array.from(w.data, (x, i) => 0.37 * (x - G[i]! + U[i]!));
    const [gw] = grad(admm.penalty(), [w]);
    gw!.data.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-12, `penalty grad ${i}`));
    // Penalty value.
    const value = expected.reduce((s, g) => s + (g / 0.37) ** 2, 0) * (0.37 / 2);
    assert.ok(Math.abs(admm.penalty().item() - value) < 1e-12);
    w.grad = new Tensor(Float64Array.from({ length: w.size }, (_, i) => i), w.shape);
    admm.addGradients();
    w.grad!.data.forEach((v, i) => assert.ok(Math.abs(v - (i + expected[i]!)) < 1e-12, `addGradients ${i}`));
  });

  it('step(): G ← Π(W + U), U ← U + W − G, only every projectEvery steps', () => {
    const w = randomParam([3, 8], 3, 'float64');
    const admm = new AdmmQuantizer([['w.weight', w]], { table: 'ternary', projectEvery: 2 });
    const before = admm.quantized().get('w.weight')!.data.slice();
    for (let i = 0; i < w.size; i++) w.data[i] = w.data[i]! * 1.3;
    assert.equal(admm.step(), false);
    assert.deepEqual(admm.quantized().get('w.weight')!.data, before);
    assert.equal(admm.step(), true);
    const g = admm.quantized().get('w.weight')!.data;
    const u = admm.duals().get('w.weight')!.data;
    // With U = 0 before, G = Π(W) per channel and U = W − G.
    const table = makeTable('ternary');
    for (let c = 0; c < 3; c++) {
      const row = Float64Array.from(w.data.subarray(c * 8, (c + 1) * 8));
      const a = Math.fround(fitScaleExact(row, table).alpha);
      for (let j = 0; j < 8; j++) {
        const i = c * 8 + j;
        assert.ok(Math.abs(g[i]! - a * Math.max(-1, Math.min(1, Math.floor(row[j]! / a + 0.5)))) < 1e-12);
        assert.ok(Math.abs(u[i]! - (w.data[i]! - g[i]!)) < 1e-12);
      }
    }
  });

  it('tied: one α shared by every tensor; per-tensor: one α each', () => {
    const a = randomParam([4, 6], 4);
    const b = randomParam([3, 2, 2, 2], 5);
    for (let i = 0; i < b.size; i++) b.data[i] = b.data[i]! * 3;
    const tied = new AdmmQuantizer([['a.weight', a], ['b.weight', b]], { table: 'binary', tied: true });
    const [sa, sb] = [...tied.scales().values()];
    assert.equal(sa!.length, 1);
    assert.equal(sa![0], sb![0]);
    // Binary optimum: α = mean |v| over everything.
    const all = [...a.data, ...b.data];
    assert.ok(Math.abs(sa![0]! - all.reduce((s, v) => s + Math.abs(v), 0) / all.length) < 1e-5);
    const perTensor = new AdmmQuantizer([['a.weight', a], ['b.weight', b]], { table: 'binary', perChannel: false });
    const [pa, pb] = [...perTensor.scales().values()];
    assert.equal(pa!.length, 1);
    assert.ok(pb![0]! > 2 * pa![0]!);
  });

  it('finalize(): every weight is exactly alpha·level, codes match, violation is 0, and it is idempotent', () => {
    for (const table of ['binary', 'ternary', { bits: 3 }, { powerOfTwo: 3 }] as const) {
      const w = randomParam([5, 7], 6);
      const admm = new AdmmQuantizer([['x.weight', w]], { table });
      for (let i = 0; i < w.size; i++) w.data[i] = w.data[i]! + 0.01 * i;
      admm.step();
      const [layer] = admm.finalize();
      assert.equal(layer!.alpha.length, 5);
      assertOnGrid(w, layer!.alpha, layer!.levels, layer!.index);
      layer!.codes!.forEach((q, i) => assert.equal(q, layer!.levels[layer!.index[i]!]));
      assert.equal(admm.constraintViolation(), 0);
      const snapshot = w.data.slice();
      admm.finalize();
      assert.deepEqual(w.data, snapshot);
    }
  });

  it('constraint violation decreases over a short training run (and accuracy survives finalize)', () => {
    manualSeed(7);
    const rng = new Rng(8);
    const n = 240;
    const x = new Float32Array(n * 8);
    const y = new Int32Array(n);
    const centers = Array.from({ length: 3 }, () => Array.from({ length: 8 }, () => rng.normal() * 1.5));
    for (let i = 0; i < n; i++) {
      y[i] = i % 3;
      for (let j = 0; j < 8; j++) x[i * 8 + j] = centers[y[i]!]![j]! + 0.5 * rng.normal();
    }
    const model = mlp({ inputSize: 8, hidden: [16], numClasses: 3 });
    const opt = new SGD(model.parameters(), { lr: 0.05, momentum: 0.5 });
    // G/U updates once per epoch (10 steps): the W-subproblem is solved approximately in between.
    const admm = new AdmmQuantizer(model, { table: 'ternary', rho: 1, rhoGrowth: 1.1, projectEvery: 10 });
    const violations: number[] = [];
    for (let epoch = 0; epoch < 12; epoch++) {
      for (let b = 0; b < n; b += 24) {
        const xb = new Tensor(x.slice(b * 8, (b + 24) * 8), [24, 8]);
        const yb = new Tensor(y.slice(b, b + 24), [24]);
        crossEntropy(model.forward(xb), yb).backward();
        admm.addGradients();
        opt.step();
        opt.zeroGrad();
        admm.step();
      }
      admm.epochEnd();
      violations.push(admm.constraintViolation());
    }
    const trace = violations.map((v) => v.toFixed(3)).join(' ');
    assert.ok(violations.at(-1)! < 0.1 * violations[0]!, `violations ${trace}`);
    for (let e = 4; e < violations.length; e++) assert.ok(violations[e]! < violations[e - 4]!, `not decreasing: ${trace}`);
    assert.ok(Math.abs(admm.rho - 1.1 ** 12) < 1e-9);
    admm.finalize();
    const logits = model.forward(new Tensor(x, [n, 8]));
    let correct = 0;
    for (let i = 0; i < n; i++) {
      const row = Array.from(logits.data.subarray(i * 3, i * 3 + 3));
      if (row.indexOf(Math.max(...row)) === y[i]) correct++;
    }
    assert.ok(correct / n > 0.9, `accuracy after finalize ${correct / n}`);
  });

  it('alternating solver (warm-started) also keeps G on the grid', () => {
    const w = randomParam([6, 10], 9);
    const admm = new AdmmQuantizer([['w.weight', w]], { table: { bits: 3 }, solver: 'alternating', iterations: 4 });
    for (let i = 0; i < w.size; i++) w.data[i] = w.data[i]! * 0.9;
    admm.step();
    const [layer] = admm.finalize();
    assertOnGrid(w, layer!.alpha, layer!.levels, layer!.index);
  });

  it('validates its options', () => {
    const w = randomParam([2, 2], 1);
    assert.throws(() => new AdmmQuantizer([['w.weight', w]], { projectEvery: 0 }), /projectEvery/);
    assert.throws(() => new AdmmQuantizer([['w.weight', w]], { rhoGrowth: 0.5 }), /rhoGrowth/);
    assert.throws(() => new AdmmQuantizer([['bias', w]]), /no parameter/);
  });
});
