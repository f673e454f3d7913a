import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, Rng } from '../../tensor/index.ts';
import { createDataset, DataLoader, type Dataset } from '../../data/index.ts';
import { mlp } from '../../nn/index.ts';
import { trainAdmm, trainAskew } from './train.ts';

/** Two concentric rings (radius 1 and 2, noise 0.2) in 2-D: a non-linearly separable 2-class problem. */
function rings(n: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const images = new Float32Array(n * 2);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const k = i % 2;
    const r = (k === 0 ? 1 : 2) + 0.2 * rng.normal();
    const t = 2 * Math.PI * rng.uniform();
    images[i * 2] = r * Math.cos(t);
    images[i * 2 + 1] = r * Math.sin(t);
    labels[i] = k;
  }
  return createDataset({ name: 'rings', images, labels, sampleShape: [1, 1, 2], numClasses: 2, classNames: ['inner', 'outer'] });
}

function loaders(seed: number): { train: DataLoader; test: DataLoader } {
  return {
    train: new DataLoader(rings(800, 1), { batchSize: 32, shuffle: true, seed }),
    test: new DataLoader(rings(400, 2), { batchSize: 100 }),
  };
}

function onGrid(layers: ReturnType<typeof trainAdmm>['layers'], model: ReturnType<typeof mlp>): void {
  const params = new Map(model.namedParameters());
  for (const layer of layers) {
    const w = params.get(layer.name)!;
    const inner = w.size / layer.alpha.length;
    for (let i = 0; i < w.size; i++) assert.equal(w.data[i], Math.fround(layer.alpha[Math.floor(i / inner)]! * layer.levels[layer.index[i]!]!));
  }
}

describe('constrained/train: end to end on a synthetic 2-class problem', () => {
  it('ADMM ternary MLP reaches >= 95 % with exactly ternary weights', (t) => {
    manualSeed(1);
    const model = mlp({ inputSize: 2, hidden: [32, 32], numClasses: 2 });
    const result = trainAdmm(model, loaders(1), { epochs: 12, lr: 0.05, momentum: 0.9, admm: { table: 'ternary', rho: 0.05, rhoGrowth: 1.3, projectEvery: 25 } });
    t.diagnostic(`ADMM ternary: before finalize ${(result.accuracyBeforeFinalize! * 100).toFixed(2)} %, after ${(result.accuracy! * 100).toFixed(2)} %, violation ${result.violation.map((v) => v.toFixed(3)).join(' ')}`);
    assert.ok(result.accuracy! >= 0.95, `accuracy ${result.accuracy}`);
    assert.equal(result.layers.length, 3);
    assert.deepEqual(result.layers[0]!.levels, [-1, 0, 1]);
    onGrid(result.layers, model);
  });

  it('AskewSGD 2-bit MLP reaches >= 95 % with weights on the grid', (t) => {
    manualSeed(2);
    const model = mlp({ inputSize: 2, hidden: [32, 32], numClasses: 2 });
    const result = trainAskew(model, loaders(2), { epochs: 12, lr: 0.05, momentum: 0.9, askew: { bits: 2 } });
    t.diagnostic(`AskewSGD 2-bit: before snap ${(result.accuracyBeforeFinalize! * 100).toFixed(2)} %, after ${(result.accuracy! * 100).toFixed(2)} %, rms distance ${result.violation.map((v) => v.toFixed(4)).join(' ')}`);
    assert.ok(result.accuracy! >= 0.95, `accuracy ${result.accuracy}`);
    // NaN during the unconstrained warm-up (first quarter), then shrinking towards 0.
    const constrained = result.violation.filter((v) => !Number.isNaN(v));
    assert.ok(constrained.length >= 8 && constrained.at(-1)! < 0.05 && constrained.at(-1)! < constrained[0]!, `distance ${result.violation}`);
    onGrid(result.layers, model);
  });
});
