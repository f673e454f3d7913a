import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { gradcheck } from '../autograd/gradcheck.ts';
import { withBackend } from '../backend/index.ts';
import { float64TransformerLM } from '../nn/models/transformer-lm-testing.ts';
import { TransformerLM } from '../nn/models/transformer-lm.ts';
import { Adam } from '../optim/adam.ts';
import { crossEntropy, narrow, Rng, Tensor } from '../tensor/index.ts';
import { fit } from './fit.ts';
import { EveryPositionObjective, everyPositionBatches, everyPositionLoss, isLmObjective, shiftedTargets } from './lm-objective.ts';

const TINY = { vocabSize: 7, embedDim: 4, numHeads: 2, numLayers: 2, mlpDim: 6, maxContext: 5, activation: 'gelu-tanh' } as const;
const ids = new Tensor(Int32Array.of(1, 4, 2, 0, 3, 3, 6, 5, 1, 2, 5, 0, 2, 2, 6), [3, 5]);
const next = new Tensor(Int32Array.of(6, 0, 3), [3]);

describe('shiftedTargets', () => {
  it('is each window shifted left by one, then its next word', () => {
    assert.deepEqual([...shiftedTargets(ids, next).data], [4, 2, 0, 3, 6, 6, 5, 1, 2, 0, 0, 2, 2, 6, 3]);
    assert.deepEqual(shiftedTargets(ids, next).shape, [15]);
  });
  it('refuses mismatched or non-int32 inputs, naming the argument', () => {
    assert.throws(() => shiftedTargets(ids, new Tensor(Int32Array.of(1, 2), [2])), /next must be int32 \[3\], got int32 \[2\]/);
    assert.throws(() => shiftedTargets(new Tensor(Float32Array.of(1, 2), [1, 2]), next), /ids must be int32 \[N, C\], got float32/);
    assert.ok(isLmObjective('all') && isLmObjective('last') && !isLmObjective('every'));
  });
});

describe('everyPositionLoss (float64)', () => {
  it('equals the mean of the last-position losses of the C prefix windows', () => {
    withBackend('reference', () => {
      const model = float64TransformerLM(TINY, 3);
      model.eval();
      const all = noGrad(() => everyPositionLoss(model, ids, next)).item();
      const targets = shiftedTargets(ids, next);
      let sum = 0;
      for (let t = 0; t < 5; t++) {
        // Prefix window ids[:, 0..t]: its last position predicts the target of position t.
        const prefix = noGrad(() => model.forward(narrow(ids, 1, 0, t + 1)));
        assert.equal(prefix.dtype, 'float64');
        const y = new Tensor(Int32Array.from({ length: 3 }, (_, n) => targets.data[n * 5 + t]!), [3]);
        sum += noGrad(() => crossEntropy(prefix, y)).item();
      }
      assert.ok(Math.abs(all - sum / 5) < 1e-12, `all-position ${all} vs mean of prefixes ${sum / 5}`);
      assert.ok(all > 0.5, `a random model's loss is about ln 7: ${all}`);
    });
  });

  it('gradients of every parameter match float64 central differences', () => {
    withBackend('reference', () => {
      const model = float64TransformerLM({ ...TINY, numLayers: 1 }, 5);
      const params = model.parameters();
      const result = gradcheck(() => everyPositionLoss(model, ids, next), params);
      assert.equal(result.relativeErrors.length, params.length);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });
});

describe('EveryPositionObjective', () => {
  it('trains on forwardAll [N·C, V], evaluates on forward [N, V], and keeps the model\'s state names and modes', () => {
    const model = new TransformerLM({ ...TINY, rng: new Rng(1) });
    const wrapped = new EveryPositionObjective(model);
    wrapped.train();
    const trainLogits = noGrad(() => wrapped.forward(ids));
    const all = noGrad(() => model.forwardAll(ids));
    assert.deepEqual(trainLogits.shape, [15, 7]);
    assert.deepEqual([...trainLogits.data], [...all.data]);
    wrapped.eval();
    assert.equal(model.training, false);
    assert.deepEqual([...noGrad(() => wrapped.forward(ids)).data], [...noGrad(() => model.forward(ids)).data]);
    assert.deepEqual([...wrapped.stateDict().keys()], [...model.stateDict().keys()]);
    assert.equal(wrapped.parameters().length, model.parameters().length);
  });

  it('fit with everyPositionBatches learns a sequence at every position (last-position accuracy 100 %)', () => {
    // Period 6; each window of 4 words, every position's next word is determined by the sequence.
    const sequence = [0, 1, 2, 3, 1, 4];
    const windows: number[] = [];
    const targets: number[] = [];
    for (let start = 0; start < 6; start++) {
      for (let t = 0; t < 4; t++) windows.push(sequence[(start + t) % 6]!);
      targets.push(sequence[(start + 4) % 6]!);
    }
    const batch = { x: new Tensor(Int32Array.from(windows), [6, 4]), y: new Tensor(Int32Array.from(targets), [6]) };
    const model = new TransformerLM({ vocabSize: 5, embedDim: 16, numHeads: 2, numLayers: 1, maxContext: 4, rng: new Rng(0) });
    const history = fit(new EveryPositionObjective(model), {
      trainLoader: everyPositionBatches(Array.from({ length: 100 }, () => batch)), testLoader: [batch],
      optimizer: new Adam(model.parameters(), { lr: 1e-2 }), epochs: 1, progress: false,
    });
    const record = history.epochs[0]!;
    assert.ok(history.stepLosses[0]! > 1, `first step loss ${history.stepLosses[0]}`);
    // '1' is followed by 2 or 4, decided by the words before it. At position 0 of the windows
    // starting with '1' (2 of the 24 positions) there are none: those two cost ≥ 2·ln 2 together, so
    // the every-position loss cannot go below (2/24)·ln 2 ≈ 0.0578; it gets there only if every
    // other position uses the earlier words.
    const floor = (2 / 24) * Math.log(2);
    const last = history.stepLosses.at(-1)!;
    assert.ok(last >= floor - 1e-9 && last < floor + 0.01, `last step loss ${last}, floor ${floor}`);
    assert.equal(record.testAccuracy, 1);
  });
});
