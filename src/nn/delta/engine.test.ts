import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/index.ts';
import { DeltaLSTM } from './delta-lstm.ts';
import { ColumnBalancedTargetedDropout } from './cbtd.ts';
import { DeltaLstmEngine } from './engine.ts';

function sequence(steps: number, features: number, rng: Rng): Float64Array {
  const x = new Float64Array(steps * features);
  for (let i = 0; i < x.length; i++) x[i] = rng.uniform() * 2 - 1;
  return x;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Rounds a float64 layer's parameters to float32 values, as the engine stores weights. */
function float32Weights(layer: DeltaLSTM): DeltaLSTM {
  for (const p of layer.parameters()) for (let i = 0; i < p.size; i++) p.data[i] = Math.fround(p.data[i]!);
  return layer;
}

/** The module's output for one sequence [steps, features] (float64, eval). */
function moduleOutput(layer: DeltaLSTM, x: Float64Array, steps: number): Float64Array {
  layer.eval();
  const [output] = noGrad(() => layer.forward(new Tensor(x, [steps, layer.inputSize])));
  return Float64Array.from(output.data);
}

describe('DeltaLstmEngine', () => {
  it('sparse path = dense delta computation = the DeltaLSTM module, for Θ = 0 and Θ = 0.1', () => {
    const rng = new Rng(1);
    const layer = float32Weights(new DeltaLSTM(6, 8, { dtype: 'float64', rng }));
    const x = sequence(12, 6, rng);
    for (const theta of [0, 0.1]) {
      layer.setThreshold(theta);
      const engine = DeltaLstmEngine.fromModule(layer);
      const sparse = engine.run(x, 12);
      const dense = engine.run(x, 12, 'dense');
      assert.ok(maxDiff(sparse.output, dense.output) < 1e-12, `Θ ${theta}: sparse vs dense ${maxDiff(sparse.output, dense.output)}`);
      assert.ok(maxDiff(sparse.output, moduleOutput(layer, x, 12)) < 1e-12, `Θ ${theta}: engine vs module`);
      const counts = layer.lastCounts;
      assert.equal(sparse.counts.inputSent, counts.inputSent);
      assert.equal(sparse.counts.hiddenSent, counts.hiddenSent);
      assert.equal(dense.counts.macs, dense.counts.denseMacs, 'dense mode multiplies every column');
      if (theta > 0) assert.ok(sparse.counts.macs < 0.8 * dense.counts.macs, `Θ ${theta}: ${sparse.counts.macs} of ${dense.counts.macs}`);
    }
  });

  it('op counts equal the closed forms', () => {
    const rng = new Rng(2);
    const [inputs, hidden, steps] = [5, 4, 9];
    const layer = float32Weights(new DeltaLSTM(inputs, hidden, { dtype: 'float64', rng }));
    const engine = DeltaLstmEngine.fromModule(layer);
    // Θ = 0, generic input: every input column every step; hidden columns from step 2 on (h0 = ĥ = 0).
    const generic = engine.run(sequence(steps, inputs, rng), steps).counts;
    assert.equal(generic.denseMacs, steps * 4 * hidden * (inputs + hidden));
    assert.equal(generic.macs, steps * 4 * hidden * inputs + (steps - 1) * 4 * hidden * hidden);
    // A constant input is sent once.
    const constant = new Float64Array(steps * inputs).fill(0.7);
    const once = engine.run(constant, steps).counts;
    assert.equal(once.inputSent, inputs);
    assert.equal(once.macs, 4 * hidden * inputs + (steps - 1) * 4 * hidden * hidden);
    // Balanced storage: a sent column costs blocks·keep; total = Σ sent × blocks·keep.
    const cbtd = new ColumnBalancedTargetedDropout({ sparsity: 0.75, blockRows: 8, rng });
    layer.weightTransform = (w, training) => cbtd.apply(w, training);
    cbtd.prune([layer.parameters()[0]!, layer.parameters()[1]!]);
    layer.setThreshold(0.05);
    const sparseEngine = DeltaLstmEngine.fromModule(layer, { balanced: { blockRows: 8, keep: cbtd.keepPerBlock } });
    const x = sequence(steps, inputs, rng);
    const run = sparseEngine.run(x, steps);
    assert.equal(run.counts.macs, (run.counts.inputSent + run.counts.hiddenSent) * 2 * 2);
    assert.ok(run.counts.hiddenSent < run.counts.hiddenColumns);
    assert.ok(maxDiff(run.output, sparseEngine.run(x, steps, 'dense').output) < 1e-12);
    assert.ok(maxDiff(run.output, moduleOutput(layer, x, steps)) < 1e-12, 'pruned module and balanced engine agree');
    assert.deepEqual(sparseEngine.storageBytes, { balanced: (inputs + hidden) * 2 * 2 * 6, dense: 4 * 16 * (inputs + hidden) });
  });

  it('bad inputs are refused', () => {
    const layer = new DeltaLSTM(3, 2);
    const engine = DeltaLstmEngine.fromModule(layer);
    assert.throws(() => engine.run(new Float32Array(7), 2), /7 inputs for 2 steps of 3/);
    assert.throws(() => engine.run(new Float32Array(0), 0), /steps must be a positive integer, got 0/);
    assert.throws(() => DeltaLstmEngine.fromModule(new DeltaLSTM(3, 2, { numLayers: 2 })), /only a one-layer, one-direction DeltaLSTM/);
    assert.throws(() => DeltaLstmEngine.fromModule(layer, { balanced: { blockRows: 3, keep: 1 } }), /blockRows 3 must divide the 8 rows/);
    assert.throws(() => DeltaLstmEngine.fromModule(layer, { thresholdX: -1 }), /thresholdX must be a finite number ≥ 0, got -1/);
  });
});
