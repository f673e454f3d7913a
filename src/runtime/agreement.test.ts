/**
 * The integer runtime against the fake-quant simulation on a really trained model (LeNet-5 W8A8,
 * QAT on 3072 MNIST images) and real test images: the acceptance bound of DESIGN.md "Integer
 * runtime" — same argmax, logits at most 1 output LSB apart — plus the float64 simulation's
 * exactness (every hidden integer equal). The whole test set is measured by the bench section
 * `int-agreement`.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DATASET_STATS, loadDataset, type Dataset } from '../data/index.ts';
import { normalizeInPlace } from '../data/dataset.ts';
import { cnn, lenet5 } from '../nn/index.ts';
import { Adam } from '../optim/index.ts';
import { crossEntropy, manualSeed, Tensor } from '../tensor/index.ts';
import { noGrad } from '../autograd/engine.ts';
import { withBackend } from '../backend/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor } from '../quant/config/qconfig.ts';
import { compareWithFakeQuant, convert } from './index.ts';

function batchOf(ds: Dataset, from: number, n: number, stats = DATASET_STATS.mnist): { x: Tensor; y: Tensor } {
  const per = 784;
  const images = ds.images.slice(from * per, (from + n) * per);
  normalizeInPlace(images, [1, 28, 28], stats);
  return { x: new Tensor(images, [n, 1, 28, 28]), y: new Tensor(Int32Array.from(ds.labels.subarray(from, from + n)), [n]) };
}

describe('IntModel vs fake-quant simulation on a trained LeNet-5', () => {
  it('W8A8 after QAT on MNIST: same argmax, logits within 1 LSB, hidden integers identical', () => {
    manualSeed(1);
    const model = lenet5();
    prepareQat(model, { default: qconfigFor('w8a8', 'ste') });
    model.train();
    const opt = new Adam(model.parameters(), { lr: 2e-3 });
    const train = loadDataset('mnist', 'train');
    for (let step = 0; step < 48; step++) {
      const { x, y } = batchOf(train, step * 64, 64);
      const loss = crossEntropy(model.forward(x), y);
      opt.zeroGrad();
      loss.backward();
      opt.step();
    }
    model.eval();
    const test = batchOf(loadDataset('mnist', 'test'), 0, 256);
    const im = convert(model, { inputShape: [1, 28, 28] });
    const logits = im.run(test.x);
    let correct = 0;
    for (let i = 0; i < 256; i++) {
      let best = 0;
      for (let c = 1; c < 10; c++) if (logits[i * 10 + c]! > logits[i * 10 + best]!) best = c;
      if (best === test.y.data[i]) correct++;
    }
    // A sanity bound (chance is 10 %): after 48 steps accuracy sits near 80 % and moves by a few
    // images with the float rounding of the backend's kernels (203-206/256 seen), so 0.75.
    assert.ok(correct / 256 > 0.75, `the model is trained: ${correct}/256 correct`);
    const r = compareWithFakeQuant(model, im, test.x);
    assert.ok(r.argmaxAgreement >= 0.999, `argmax agreement with the float32 forward ${r.argmaxAgreement}`);
    assert.equal(r.argmaxAgreementFloat64, 1);
    assert.ok(r.maxLogitLsb <= 1, `logits ${r.maxLogitLsb} LSB from the float64 simulation`);
    assert.equal(r.logitWithin1Lsb, 1);
    for (const [layer, d] of Object.entries(r.layerMaxDiff)) assert.equal(d, 0, `layer ${layer} input differs from the float64 simulation by ${d}`);
    assert.deepEqual(Object.keys(r.layerMaxDiff), ['conv1', 'conv2', 'fc1', 'fc2', 'fc3']);
  });
});

/**
 * The report "an untrained Fashion-MNIST CNN at W8A8 is 127 LSB from the float64 simulation, 0 from
 * the float32 forward" has it the other way round: the IntModel reproduces the simulation's hidden
 * integers exactly (BN folding, padding, flatten order, dropout all as in the simulation); the
 * float32 forward flips a few of them (rounding near a boundary; each flip before the last layer
 * moves a logit by |w| LSB, and per-channel int8 rows hold a |w| = 127), so it is float32MaxLogitLsb
 * that reads 480 here. On this seed and sample one image's two top logits lie close enough that
 * the flips reverse them in the float32 forward only, and convert would refuse the exact IntModel
 * with 'agreement' (93.75 % < 99 %) if such samples did not count as agreeing. (The case is rare:
 * about one seed in eight has such an image among 2,000, found by search; the BatchNorm running
 * statistics are computed on the reference backend so that a change of rounding in a backend's
 * training-mode BatchNorm kernels, which moved the case twice, cannot move it again. Image 213 of
 * seed 35 flips on the native and the reference backend alike.)
 */
describe('IntModel vs fake-quant simulation on an untrained Fashion-MNIST CNN (W8A8 ste, BN folded)', () => {
  const setup = (() => {
    let cached: { model: ReturnType<typeof cnn>; x: Tensor } | null = null;
    return () => {
      if (cached) return cached;
      manualSeed(35);
      const model = cnn();
      prepareQat(model, { default: qconfigFor('w8a8', 'ste') });
      model.train();
      const train = loadDataset('fashion-mnist', 'train', { limit: 228 });
      const stats = DATASET_STATS['fashion-mnist'];
      // The BatchNorm statistics come from the reference backend whichever backend runs the test, so
      // that the case does not move with the rounding of a backend's training-mode BatchNorm kernels.
      withBackend('reference', () => noGrad(() => { for (let i = 0; i < 3; i++) model.forward(batchOf(train, i * 8, 8, stats).x); }));
      model.eval();
      cached = { model, x: batchOf(train, 212, 16, stats).x };
      return cached;
    };
  })();

  it('logits within 1 LSB of the float64 simulation, hidden integers identical at every layer', () => {
    const { model, x } = setup();
    const im = convert(model, { sample: x, minAgreement: 0 });
    const r = compareWithFakeQuant(model, im, x);
    assert.deepEqual(Object.keys(r.layerMaxDiff), ['features.0', 'features.3', 'features.7', 'features.10', 'classifier.1', 'classifier.5']);
    for (const [layer, d] of Object.entries(r.layerMaxDiff)) assert.equal(d, 0, `layer ${layer} input differs from the float64 simulation by ${d}`);
    assert.ok(r.maxLogitLsb <= 1, `logits ${r.maxLogitLsb} LSB from the float64 simulation`);
    assert.equal(r.logitWithin1Lsb, 1);
    assert.equal(r.argmaxAgreementFloat64, 1);
    assert.equal(r.float32BeyondTolerance, 0);
  });

  it('convert accepts it: an argmax that only the float32 forward\'s rounding changed counts as agreeing', () => {
    const { model, x } = setup();
    const im = convert(model, { sample: x });
    const r = im.verification!;
    // The case this test exists for: the float32 forward flips hidden integers and one near-tied argmax.
    assert.ok(r.float32MaxLogitLsb > 100, `float32 forward ${r.float32MaxLogitLsb} LSB away`);
    assert.equal(r.argmaxAgreement, 15 / 16);
    assert.equal(r.argmaxFloat32RoundingFlips, 1 / 16);
    assert.equal(r.argmaxAgreement + r.argmaxFloat32RoundingFlips, r.argmaxAgreementFloat64);
  });
});
