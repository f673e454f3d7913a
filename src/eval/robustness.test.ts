import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Dataset } from '../data/index.ts';
import { Flatten, Linear, Sequential } from '../nn/index.ts';
import { Rng, Tensor } from '../tensor/index.ts';
import { argmaxRows, fgsm } from './attack.ts';
import { classifierOf } from './classifier.ts';
import { evaluateRobustness } from './robustness.ts';

/** Flatten → Linear(4, 3) with fixed weights times `gain`. */
function linearModel(gain: number): Sequential {
  const fc = new Linear(4, 3);
  fc.weight.data.set([0.9, -0.4, 0.3, 0.2, -0.5, 0.8, -0.1, 0.6, 0.2, 0.1, -0.7, -0.3].map((v) => v * gain));
  fc.bias!.data.set([0.1, -0.2, 0.05].map((v) => v * gain));
  return new Sequential(new Flatten(), fc);
}

/** n 1×2×2 images of uniform pixels labelled with the linear model's class, except every fifth (wrong on purpose). */
function dataset(n: number): Dataset {
  const rng = new Rng(3);
  const images = Float32Array.from({ length: n * 4 }, () => rng.uniform());
  const predicted = argmaxRows(classifierOf(linearModel(1))(new Tensor(images, [n, 1, 2, 2])).data as Float32Array, 3);
  const labels = predicted.map((c, i) => (i % 5 === 0 ? (c + 1) % 3 : c));
  return { name: 'toy', images, labels, length: n, sampleShape: [1, 2, 2], numClasses: 3, classNames: ['a', 'b', 'c'] };
}

describe('evaluateRobustness', () => {
  it('counts clean accuracy, robust accuracy and success rate as the attack on the whole set does', () => {
    const data = dataset(50);
    const model = linearModel(1);
    let written = '';
    const report = evaluateRobustness(model, data, { eps: [0, 0.05, 0.2], batchSize: 7, progressStream: { write: (s: string) => (written += s), isTTY: true } });
    assert.equal(report.samples, 50);
    assert.equal(report.cleanAccuracy, 40 / 50);
    // eps 0 moves nothing.
    assert.equal(report.results[0]!.robustAccuracy, report.cleanAccuracy);
    assert.equal(report.results[0]!.attackSuccessRate, 0);
    // Per-batch results add up to one attack on all 50 images.
    for (const r of report.results.slice(1)) {
      const whole = fgsm(model, new Tensor(data.images, [50, 1, 2, 2]), data.labels, { eps: r.eps });
      const robust = whole.predictions.filter((c, i) => c === data.labels[i]).length;
      assert.equal(r.robustAccuracy, robust / 50);
      assert.equal(r.attackSuccessRate, (40 - robust) / 40, 'every image still correct was correct before (a wrong label stays wrong here)');
    }
    assert.ok(report.results[2]!.robustAccuracy < report.results[1]!.robustAccuracy, 'a larger budget hurts more');
    assert.match(written, /fgsm T=1/, 'progress bar drawn');
  });

  it('diagnoses the vanishing gradient of a saturated model at T = 1 and its recovery with NJS', () => {
    const data = dataset(30);
    const model = linearModel(1e5);
    const t1 = evaluateRobustness(model, data, { eps: [0.1], progress: false });
    const njs = evaluateRobustness(model, data, { eps: [0.1], temperature: 'njs', progress: false });
    // Correct samples: p_y = 1 and an exactly zero gradient; the six wrong ones (i % 5 = 0) have p_y = 0 and a gradient.
    assert.equal(t1.gradientAtT1.zeroGradient, 24 / 30);
    assert.equal(t1.gradientAtT1.saturated, 24 / 30);
    assert.equal(t1.results[0]!.attackSuccessRate, 0, 'FGSM at T = 1 cannot move a zero-gradient image');
    assert.equal(njs.gradientAtT1.zeroGradient, 24 / 30, 'the T = 1 column does not depend on the attack temperature');
    assert.equal(njs.gradientScaled.zeroGradient, 0);
    assert.equal(njs.gradientScaled.saturated, 0);
    assert.ok(njs.njsTemperature! > 1000, `NJS T ${njs.njsTemperature} ~ the weight scale`);
    assert.ok(njs.results[0]!.attackSuccessRate > 0, 'the scaled attack flips some images');
  });

  it('refuses an empty eps list and a bad batch size', () => {
    const data = dataset(5);
    assert.throws(() => evaluateRobustness(linearModel(1), data, { eps: [] }), /at least one eps/);
    assert.throws(() => evaluateRobustness(linearModel(1), data, { eps: [0.1], batchSize: 0 }), /batchSize must be a positive integer/);
  });
});
