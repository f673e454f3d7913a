import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { withBackend } from '../../backend/index.ts';
import { prepareTransformerQat, transformerQatConfig } from '../../quant/transformer/qat.ts';
import { narrow, Rng, Tensor } from '../../tensor/index.ts';
import { generate, generateBatch, sampleNext } from './generate.ts';
import { NextWordModel } from './next-word.ts';
import { float64TransformerLM } from './transformer-lm-testing.ts';
import { TransformerLM } from './transformer-lm.ts';

const TINY = { vocabSize: 11, embedDim: 8, numHeads: 2, numLayers: 2, mlpDim: 12, maxContext: 6, activation: 'gelu-tanh' } as const;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Every step's logits of a generation. */
function stepLogits(run: (onStep: (l: Float64Array) => void) => number[]): { ids: number[]; logits: Float64Array[] } {
  const logits: Float64Array[] = [];
  const ids = run((l) => logits.push(l));
  return { ids, logits };
}

/** The logits [V] of the word after `ids` by a plain forward (no cache), as a float64 array. */
function forwardLast(model: TransformerLM | NextWordModel, ids: readonly number[]): Float64Array {
  return Float64Array.from(noGrad(() => model.forward(new Tensor(Int32Array.from(ids), [1, ids.length]))).data);
}

describe('TransformerLM.forwardCached (float64)', () => {
  it('prefill then chunks of 3 and 1 give forwardAll\'s logits at those positions (≤ 1e-12)', () => {
    withBackend('reference', () => {
      const model = float64TransformerLM(TINY, 1).eval();
      const ids = new Tensor(Int32Array.of(3, 7, 1, 9, 4, 0, 2, 2, 10, 5, 6, 1), [2, 6]);
      const all = noGrad(() => model.forwardAll(ids)); // [2, 6, 11]
      const cache = model.createCache();
      let position = 0;
      for (const steps of [2, 3, 1]) {
        const chunk = noGrad(() => model.forwardCached(narrow(ids, 1, position, steps), cache));
        assert.deepEqual(chunk.shape, [2, steps, 11]);
        const reference = noGrad(() => narrow(all, 1, position, steps));
        assert.ok(maxAbsDiff(chunk.data, reference.data) <= 1e-12, `chunk at ${position}: ${maxAbsDiff(chunk.data, reference.data)}`);
        position += steps;
        assert.equal(cache.length, position);
      }
      assert.throws(() => model.forwardCached(new Tensor(Int32Array.of(1, 1), [2, 1]), cache), /positions 6\.\.6 are outside \[0, 5\] \(maxContext 6/);
    });
  });
});

describe('TransformerLM.forwardCached: the decodeAttention path and the composed path', () => {
  it('with a tape recording (composed ops) the chunks equal the noGrad decodeAttention chunks (float64, ≤ 1e-12); the cache buffers are allocated once', () => {
    withBackend('reference', () => {
      const model = float64TransformerLM(TINY, 4).eval();
      const ids = new Tensor(Int32Array.of(5, 1, 9, 9, 2, 7, 0, 3, 4, 10, 6, 8), [2, 6]);
      const direct = model.createCache();
      const composed = model.createCache();
      let position = 0;
      let buffers: (Tensor | null)[] = [];
      for (const steps of [3, 1, 2]) {
        const chunk = narrow(ids, 1, position, steps);
        const fast = noGrad(() => model.forwardCached(chunk, direct));
        const slow = model.forwardCached(chunk, composed);
        assert.ok(slow.requiresGrad, 'the composed path records a tape');
        assert.ok(maxAbsDiff(fast.data, slow.data) <= 1e-12, `chunk at ${position}: ${maxAbsDiff(fast.data, slow.data)}`);
        const now = direct.layers.flatMap((layer) => [layer.keys, layer.values]);
        if (position > 0) now.forEach((t, i) => assert.equal(t, buffers[i], 'the same buffer, written in place'));
        buffers = now;
        assert.deepEqual(direct.layers[0]!.keys!.shape, [2, 6, 8]);
        position += steps;
      }
      assert.ok(maxAbsDiff(direct.layers[1]!.values!.data, composed.layers[1]!.values!.data) <= 1e-12, 'both caches hold the same values');
    });
  });
});

describe('generate', () => {
  it('KV-cached steps equal the full recompute at every step, past the context window too (float64, ≤ 1e-12)', () => {
    withBackend('reference', () => {
      const model = float64TransformerLM(TINY, 2);
      // 2 prompt ids + 9 generated: the window of 6 fills at step 4 and slides after it.
      const options = { tokens: 9, temperature: 0.9, seed: 5 };
      const cached = stepLogits((onStep) => generate(model, [4, 8], { ...options, onStep }));
      const full = stepLogits((onStep) => generate(model, [4, 8], { ...options, cache: false, onStep }));
      assert.deepEqual(cached.ids, full.ids);
      const sequence = [4, 8, ...cached.ids];
      for (let step = 0; step < 9; step++) {
        assert.ok(maxAbsDiff(cached.logits[step]!, full.logits[step]!) <= 1e-12, `step ${step}: ${maxAbsDiff(cached.logits[step]!, full.logits[step]!)}`);
        // The full recompute is model.forward on the last ≤ 6 ids.
        const window = sequence.slice(Math.max(0, 2 + step - 6), 2 + step);
        assert.deepEqual([...full.logits[step]!], [...forwardLast(model, window)]);
      }
      assert.equal(model.training, true, 'the model\'s mode is restored');
    });
  });

  it('float32 (default backend): cached and recomputed steps agree within 1e-5 and give the same ids', () => {
    const model = new TransformerLM({ ...TINY, vocabSize: 50, embedDim: 32, numHeads: 4, mlpDim: 64, maxContext: 16, rng: new Rng(3) });
    const options = { tokens: 24, temperature: 1, seed: 1 };
    const cached = stepLogits((onStep) => generate(model, [1, 2, 3], { ...options, onStep }));
    const full = stepLogits((onStep) => generate(model, [1, 2, 3], { ...options, cache: false, onStep }));
    assert.deepEqual(cached.ids, full.ids);
    for (let step = 0; step < 24; step++) assert.ok(maxAbsDiff(cached.logits[step]!, full.logits[step]!) <= 1e-5, `step ${step}`);
  });

  it('a W4A8 QAT model generates through its fake-quant forward (cached = recomputed = model.forward)', () => {
    const model = new TransformerLM({ ...TINY, rng: new Rng(4) });
    prepareTransformerQat(model, transformerQatConfig('w4a8')!);
    noGrad(() => model.forwardAll(new Tensor(Int32Array.of(1, 5, 9, 2, 3, 7), [1, 6]))); // initialises the LSQ steps
    const cached = stepLogits((onStep) => generate(model, [5, 9], { tokens: 8, temperature: 0, onStep }));
    const full = stepLogits((onStep) => generate(model, [5, 9], { tokens: 8, temperature: 0, cache: false, onStep }));
    assert.deepEqual(cached.ids, full.ids);
    model.eval();
    assert.deepEqual([...full.logits[0]!], [...forwardLast(model, [5, 9])]);
    for (let step = 0; step < 8; step++) assert.ok(maxAbsDiff(cached.logits[step]!, full.logits[step]!) <= 1e-5, `step ${step}`);
    // The float model with the same weights gives other logits: the quantizers are in the path.
    const float = new TransformerLM({ ...TINY, rng: new Rng(4) }).eval();
    assert.ok(maxAbsDiff(forwardLast(float, [5, 9]), full.logits[0]!) > 1e-4);
  });

  it('greedy (temperature 0) is deterministic and picks each step\'s largest logit', () => {
    const model = new TransformerLM({ ...TINY, rng: new Rng(5) });
    const a = stepLogits((onStep) => generate(model, [1], { tokens: 12, temperature: 0, seed: 1, onStep }));
    const b = generate(model, [1], { tokens: 12, temperature: 0, seed: 99 });
    assert.deepEqual(a.ids, b);
    for (let step = 0; step < 12; step++) {
      const row = [...a.logits[step]!];
      assert.equal(a.ids[step], row.indexOf(Math.max(...row)));
    }
  });

  it('a fixed seed reproduces the sample; another seed gives another one', () => {
    const model = new TransformerLM({ ...TINY, rng: new Rng(6) });
    const first = generate(model, [2, 3], { tokens: 20, seed: 7 });
    assert.deepEqual(generate(model, [2, 3], { tokens: 20, seed: 7 }), first);
    assert.notDeepEqual(generate(model, [2, 3], { tokens: 20, seed: 8 }), first);
  });

  it('top-k never emits an id outside the step\'s k largest logits', () => {
    const model = new TransformerLM({ ...TINY, rng: new Rng(7) });
    for (const seed of [0, 1, 2]) {
      const run = stepLogits((onStep) => generate(model, [0, 4], { tokens: 15, topK: 3, temperature: 2, seed, onStep }));
      for (let step = 0; step < 15; step++) {
        const row = [...run.logits[step]!];
        const third = [...row].sort((x, y) => y - x)[2]!;
        assert.ok(row[run.ids[step]!]! >= third, `seed ${seed} step ${step}: id ${run.ids[step]} is not in the top 3`);
      }
    }
  });

  it('an LSTM NextWordModel generates by recomputing forward on the last `context` ids', () => {
    const model = new NextWordModel({ vocabSize: 11, embeddingDim: 6, hiddenSize: 8, rng: new Rng(8) });
    const run = stepLogits((onStep) => generate(model, [3, 1, 4], { tokens: 6, context: 4, seed: 2, onStep }));
    model.eval();
    const sequence = [3, 1, 4, ...run.ids];
    for (let step = 0; step < 6; step++) assert.deepEqual([...run.logits[step]!], [...forwardLast(model, sequence.slice(Math.max(0, 3 + step - 4), 3 + step))]);
  });

  it('refuses bad arguments, naming them', () => {
    const model = new TransformerLM({ ...TINY, rng: new Rng(9) });
    assert.throws(() => generate(model, [1], { tokens: 0 }), /tokens must be a positive integer, got 0/);
    assert.throws(() => generate(model, [1], { tokens: 2.5 }), /tokens must be a positive integer, got 2.5/);
    assert.throws(() => generate(model, [], { tokens: 3 }), /the prompt is empty/);
    assert.throws(() => generate(model, [1, 11], { tokens: 3 }), /prompt id 11 at index 1 is outside \[0, 11\)/);
    assert.throws(() => generate(model, [1], { tokens: 3, temperature: -1 }), /temperature must be a finite number ≥ 0, got -1/);
    assert.throws(() => generate(model, [1], { tokens: 3, topK: 0 }), /topK must be a positive integer, got 0/);
    assert.throws(() => generate(model, [1], { tokens: 3, context: 7 }), /context 7 is longer than the model's maxContext 6/);
    assert.throws(() => generate(model, [1], { tokens: 3, seed: -2 }), /seed must be a non-negative integer, got -2/);
  });
});

describe('generateBatch', () => {
  it('row r is generate(prompt r, seed + r), cached or not, past the context window too (float64)', () => {
    withBackend('reference', () => {
      const model = float64TransformerLM(TINY, 6);
      const prompts = [[4, 8], [1, 1], [10, 0]];
      const options = { tokens: 9, temperature: 0.9, seed: 5 };
      const cached = generateBatch(model, prompts, options);
      const full = generateBatch(model, prompts, { ...options, cache: false });
      assert.deepEqual(cached, full);
      prompts.forEach((prompt, r) => assert.deepEqual(cached[r], generate(model, prompt, { ...options, seed: 5 + r }), `row ${r}`));
      assert.equal(model.training, true, 'the model\'s mode is restored');
    });
  });

  it('float32 batch of 16, greedy: every row equals its own greedy generate; an LSTM recomputes', () => {
    const model = new TransformerLM({ ...TINY, vocabSize: 50, embedDim: 32, numHeads: 4, mlpDim: 64, maxContext: 24, rng: new Rng(8) });
    const rng = new Rng(2);
    const prompts = Array.from({ length: 16 }, () => Array.from({ length: 4 }, () => rng.int(50)));
    const batch = generateBatch(model, prompts, { tokens: 12, temperature: 0 });
    prompts.forEach((prompt, r) => assert.deepEqual(batch[r], generate(model, prompt, { tokens: 12, temperature: 0 }), `row ${r}`));
    const lstm = new NextWordModel({ vocabSize: 20, embeddingDim: 6, hiddenSize: 8, rng: new Rng(1) });
    const lstmBatch = generateBatch(lstm, [[1, 2], [3, 4]], { tokens: 5, temperature: 0, context: 3 });
    assert.deepEqual(lstmBatch[1], generate(lstm, [3, 4], { tokens: 5, temperature: 0, context: 3 }));
  });

  it('refuses prompts of different lengths, empty prompts and ids outside the vocabulary', () => {
    const model = new TransformerLM({ ...TINY, rng: new Rng(1) });
    assert.throws(() => generateBatch(model, [[1, 2], [3]], { tokens: 2 }), /prompt 1 has 1 ids, prompt 0 has 2/);
    assert.throws(() => generateBatch(model, [], { tokens: 2 }), /no prompts/);
    assert.throws(() => generateBatch(model, [[1, 11]], { tokens: 2 }), /prompt 0 id 11 at index 1 is outside \[0, 11\)/);
  });
});

describe('sampleNext', () => {
  it('draws from softmax(logits / T): frequencies of 40,000 draws within 0.01 of the closed form', () => {
    const logits = [1, 0, 2.5, -1];
    for (const temperature of [1, 0.5]) {
      const rng = new Rng(11);
      const counts = [0, 0, 0, 0];
      for (let i = 0; i < 40_000; i++) counts[sampleNext(logits, { temperature }, rng)]!++;
      const e = logits.map((l) => Math.exp(l / temperature));
      const z = e.reduce((s, x) => s + x, 0);
      for (let i = 0; i < 4; i++) assert.ok(Math.abs(counts[i]! / 40_000 - e[i]! / z) < 0.01, `T ${temperature} id ${i}: ${counts[i]! / 40_000} vs ${e[i]! / z}`);
    }
  });

  it('top-k renormalises over the k largest, ties broken towards the lower id', () => {
    const rng = new Rng(12);
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < 20_000; i++) counts[sampleNext([0, 3, 1, 3, 2], { topK: 2 }, rng)]!++;
    assert.equal(counts[0]! + counts[2]! + counts[4]!, 0);
    assert.ok(Math.abs(counts[1]! / 20_000 - 0.5) < 0.015 && Math.abs(counts[3]! / 20_000 - 0.5) < 0.015, `${counts}`);
    // topK 1 at a tie: the lower id, with any temperature.
    assert.equal(sampleNext([0, 3, 1, 3], { topK: 1, temperature: 5 }, rng), 1);
    assert.equal(sampleNext([0, 3, 1, 3], { temperature: 0 }, rng), 1);
    assert.throws(() => sampleNext([0, Number.NaN], {}, rng), /logits\[1\] is NaN/);
  });

  it('exclude: an excluded id is never drawn, greedy or sampled (the rest renormalised)', () => {
    const rng = new Rng(13);
    assert.equal(sampleNext([5, 1, 2], { temperature: 0, exclude: [0] }, rng), 2);
    const counts = [0, 0, 0];
    for (let i = 0; i < 20_000; i++) counts[sampleNext([5, 1, 1], { exclude: [0] }, rng)]!++;
    assert.equal(counts[0], 0);
    assert.ok(Math.abs(counts[1]! / 20_000 - 0.5) < 0.015, `${counts}`);
    assert.throws(() => sampleNext([1, 2], { exclude: [0, 1] }, rng), /no id left to draw/);
    assert.throws(() => sampleNext([1, 2], { exclude: [-1] }, rng), /exclude must be a list of non-negative integer ids/);
  });
});
