import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { lenet5 } from '../nn/index.ts';
import { Tensor } from '../tensor/index.ts';
import { fgsm } from './attack.ts';

/** test/fixtures/torch-fgsm-lenet5.json, printed by torch-fgsm-lenet5.py (PyTorch 1.13). */
interface Fixture {
  torch: string;
  eps: number;
  mean: number;
  std: number;
  labels: number[];
  pixels: number[];
  cases: { temperature: number; images: { signs: string; ambiguous: number[]; maxAbsGradient: number; logits: number[]; adversarialPrediction: number }[] }[];
}

const fixture = JSON.parse(readFileSync(new URL('../../test/fixtures/torch-fgsm-lenet5.json', import.meta.url), 'utf8')) as Fixture;

/** The fixture's weights: parameter `index`, element k = ((h mod 2001) − 1000) / 1000 · gain · √(6 / fanIn), h an integer hash (exact in float64). */
function hashedModel() {
  const model = lenet5();
  const params = new Map(model.namedParameters());
  [...params].forEach(([name, p], index) => {
    const weight = params.get(`${name.split('.')[0]!}.weight`)!;
    const fanIn = weight.size / weight.shape[0]!;
    const scale = (name.endsWith('weight') ? 1 : 0.1) * Math.sqrt(6 / fanIn);
    for (let k = 0; k < p.size; k++) {
      const h = (k * 2654435761 + index * 40503 + 12345) % 4294967296;
      p.data[k] = (((h % 2001) - 1000) / 1000) * scale;
    }
  });
  return model;
}

describe('FGSM against PyTorch 1.13 on a float LeNet-5', () => {
  const model = hashedModel();
  const n = fixture.labels.length;
  const x = new Tensor(Float32Array.from(fixture.pixels, (v) => v / 255), [n, 1, 28, 28]);
  const labels = Int32Array.from(fixture.labels);

  for (const c of fixture.cases) {
    it(`T = ${c.temperature}: the same perturbation signs on ${n} MNIST images, the same adversarial predictions`, () => {
      const result = fgsm(model, x, labels, { eps: fixture.eps, temperature: c.temperature, normalize: { mean: fixture.mean, std: fixture.std } });
      let compared = 0;
      c.images.forEach((image, i) => {
        const skip = new Set(image.ambiguous);
        for (let k = 0; k < 784; k++) {
          if (skip.has(k)) continue;
          const v = x.data[i * 784 + k]!;
          const sign = image.signs[k] === '+' ? 1 : image.signs[k] === '-' ? -1 : 0;
          assert.equal(result.adversarial.data[i * 784 + k], Math.fround(Math.min(1, Math.max(0, v + fixture.eps * sign))), `image ${i}, pixel ${k}: torch sign ${image.signs[k]}`);
          compared++;
        }
        assert.equal(result.predictions[i], image.adversarialPrediction, `image ${i}: adversarial prediction`);
      });
      // Nearly every pixel is compared (the few torch-side near-zero gradients are skipped).
      assert.ok(compared >= n * 784 - 5, `${compared} pixels compared`);
    });
  }

  it('the hashed weights give PyTorch\'s logits', () => {
    const logits = model.forward(new Tensor(Float32Array.from(fixture.pixels, (v) => (v / 255 - fixture.mean) / fixture.std), [n, 1, 28, 28]));
    fixture.cases[0]!.images.forEach((image, i) => image.logits.forEach((v, j) => assert.ok(Math.abs(logits.data[i * 10 + j]! - v) < 1e-5, `image ${i} logit ${j}: ${logits.data[i * 10 + j]} vs ${v}`)));
  });
});
