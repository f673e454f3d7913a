import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/index.ts';
import { generate } from '../../nn/models/generate.ts';
import { TransformerLM, type TransformerActivation } from '../../nn/models/transformer-lm.ts';
import { Rng, Tensor } from '../../tensor/index.ts';
import { prepareTransformerQat, transformerQatConfig } from '../transformer/qat.ts';
import { convertTransformerLM, type IntTransformerLM } from './transformer.ts';

const V = 30;
const C = 5;

function idsOf(rng: Rng, n: number, steps = C): Int32Array {
  return Int32Array.from({ length: n * steps }, () => Math.floor(rng.uniform() * V));
}

/** A tiny converted model (QAT steps set by one training-mode forward). */
function tinyInt(activation: TransformerActivation, quant: 'w8a8' | 'w4a8'): IntTransformerLM {
  const model = new TransformerLM({ vocabSize: V, maxContext: C, embedDim: 12, numLayers: 2, numHeads: 3, mlpDim: 24, activation, rng: new Rng(5) });
  prepareTransformerQat(model, transformerQatConfig(quant)!);
  model.train();
  noGrad(() => model.forward(new Tensor(idsOf(new Rng(6), 16), [16, C])));
  model.eval();
  return convertTransformerLM(model, [new Tensor(idsOf(new Rng(7), 16), [16, C])]);
}

/** Rows [n, 0..steps) of ids [N, C]. */
function prefix(ids: Int32Array, batch: number, steps: number): Int32Array {
  const out = new Int32Array(batch * steps);
  for (let n = 0; n < batch; n++) out.set(ids.subarray(n * C, n * C + steps), n * steps);
  return out;
}

describe('IntTransformerLM integer KV cache', () => {
  for (const [activation, quant] of [['gelu-tanh', 'w8a8'], ['relu', 'w4a8']] as const) {
    it(`${activation} ${quant}: logitsCached equals the full recompute bit for bit at every step (prompt of 2, then one id at a time; batch 3)`, () => {
      const int = tinyInt(activation, quant);
      const batch = 3;
      const ids = idsOf(new Rng(8), batch);
      const cache = int.createCache(batch);
      let got = int.logitsCached(prefix(ids, batch, 2), cache);
      assert.equal(cache.length, 2);
      assert.deepEqual(got, int.logits(prefix(ids, batch, 2), batch));
      for (let t = 2; t < C; t++) {
        const step = Int32Array.from({ length: batch }, (_, n) => ids[n * C + t]!);
        got = int.logitsCached(step, cache);
        const full = int.logits(prefix(ids, batch, t + 1), batch);
        assert.deepEqual(got, full, `position ${t}`);
      }
      assert.equal(cache.length, C);
      // Not vacuous: the logits depend on the earlier ids (a cache of other ids gives other logits).
      const other = int.createCache(batch);
      const changed = ids.slice();
      changed[0] = (changed[0]! + 1) % V;
      const alt = int.logitsCached(changed, other);
      assert.deepEqual(alt, int.logits(changed, batch));
      assert.notDeepEqual(alt.subarray(0, V), got.subarray(0, V));
    });
  }

  it('generate: the cached decode equals the recompute step by step, also once the window slides past maxContext', () => {
    const int = tinyInt('gelu-tanh', 'w8a8');
    const record = (cache: boolean): { ids: number[]; logits: Float64Array[] } => {
      const logits: Float64Array[] = [];
      const ids = generate(int, [3, 1, 4], { tokens: 3 * C, temperature: 0.9, topK: 8, seed: 4, cache, onStep: (l) => logits.push(l) });
      return { ids, logits };
    };
    const cached = record(true);
    const recomputed = record(false);
    assert.equal(cached.ids.length, 3 * C);
    assert.deepEqual(cached.ids, recomputed.ids);
    cached.logits.forEach((l, step) => assert.deepEqual(l, recomputed.logits[step], `step ${step}`));
    // Each step's logits are the model's on the last ≤ C ids (the sliding window), recomputed here.
    const sequence = [3, 1, 4, ...cached.ids];
    cached.logits.forEach((l, step) => {
      const end = 3 + step;
      const window = sequence.slice(Math.max(0, end - C), end);
      assert.deepEqual(l, Float64Array.from(int.logits(window, 1)), `step ${step}`);
    });
  });

  it('refuses a full cache, a foreign cache and bad ids', () => {
    const int = tinyInt('relu', 'w8a8');
    const cache = int.createCache();
    int.logitsCached([1, 2, 3, 4], cache);
    assert.throws(() => int.logitsCached([1, 2], cache), /positions 4\.\.5 are outside \[0, 4\]/);
    assert.throws(() => int.logitsCached([1, 2], { ...int.createCache(), keys: [] }), /does not belong to this model/);
    assert.throws(() => int.logitsCached([V], int.createCache()), /word id 30 .* outside \[0, 29\]/);
    assert.throws(() => int.logitsCached([1, 2, 3], int.createCache(2)), /3 ids do not make the cache's 2 rows/);
    assert.throws(() => int.createCache(0), /batch must be a positive integer/);
  });
});
