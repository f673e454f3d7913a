/**
 * The one-call decoding step of TransformerLM.forwardCached (transformer-decode.ts, native
 * floatTfDecode) against its specification, the composed path: (a) a float64 copy of the model (the
 * same float32-rounded weights) on the reference backend, and (b) the float32 composed path on the
 * reference backend. Prompt chunks (S = 3, 2) then one id at a time up to the last position of the
 * cache (capacity = maxContext), batch 1 and 3, GELU erf / tanh and ReLU, tied and untied head.
 * Bound: |fused − spec| ≤ 2e-6·max(1, max |logit|), float32 rounding through two blocks of width
 * 16 (measured: ≤ 3e-7 against both; the polynomial exp / erfc are within a few ulp of float64).
 * Tests tagged [every-isa] re-run under LOWBIT_ISA=avx2 and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { nativeInfo, profileOps, setNativeThreads, withBackend } from '../../backend/index.ts';
import { nativeAddon } from '../../backend/native/index.ts';
import { runEveryIsaTests } from '../../backend/native/isa-testing.ts';
import { mul, narrow, Rng, Tensor } from '../../tensor/index.ts';
import { withFusedTransformerLayers } from '../fused-layers.ts';
import { generate, generateBatch } from './generate.ts';
import { setFusedDecodeStep } from './transformer-decode.ts';
import { float64TransformerLM } from './transformer-lm-testing.ts';
import { Module } from '../module.ts';
import { TransformerBlock, TransformerLM, type TransformerActivation, type TransformerLMOptions } from './transformer-lm.ts';

const skip = nativeInfo() ? false : 'native addon unavailable';
const forcedIsa = process.env.LOWBIT_ISA !== undefined;
const TOLERANCE = 2e-6;

/**
 * A float32 TransformerLM and a float64 one with the same weights: float64TransformerLM's jittered
 * weights (LayerNorm 1 ± 0.2 / ± 0.1, embeddings ± 0.5) rounded to float32, copied into both.
 */
function modelPair(options: TransformerLMOptions, seed: number): { f32: TransformerLM; f64: TransformerLM } {
  const f64 = float64TransformerLM(options, seed).eval();
  const f32 = new TransformerLM({ ...options, rng: new Rng(seed + 7) }).eval();
  const params64 = new Map(f64.namedParameters());
  for (const [name, p] of f32.namedParameters()) {
    const source = params64.get(name);
    assert.ok(source, `float64 model has no ${name}`);
    assert.equal(source.size, p.size, name);
    for (let i = 0; i < p.size; i++) p.data[i] = source.data[i] = Math.fround(source.data[i]!);
  }
  return { f32, f64 };
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Primitive kernel calls made by fn (0 when the one-call step ran). */
function kernelCalls(fn: () => void): number {
  let calls = 0;
  for (const { calls: c } of profileOps(fn).values()) calls += c;
  return calls;
}

/** An operand "quantizer" that doubles its input (changes the attention function). */
class Doubling extends Module {
  forward(x: Tensor): Tensor {
    return mul(x, 2);
  }
}

const SMALL = { vocabSize: 37, embedDim: 16, numHeads: 4, numLayers: 2, mlpDim: 24, maxContext: 9 } as const;

interface Case {
  readonly activation: TransformerActivation;
  readonly tieWeights: boolean;
  readonly batch: number;
}
const CASES: Case[] = [];
for (const activation of ['gelu', 'gelu-tanh', 'relu'] as const) {
  for (const batch of [1, 3]) CASES.push({ activation, tieWeights: false, batch });
}
CASES.push({ activation: 'gelu-tanh', tieWeights: true, batch: 2 });

/** Chunks of the sequence: a prompt of 3, one of 2, then single ids to the last position. */
const CHUNKS = [3, 2, 1, 1, 1, 1];

describe('TransformerLM one-call decoding step (native floatTfDecode) against the composed path', { skip }, () => {
  for (const { activation, tieWeights, batch } of CASES) {
    it(`[every-isa] ${activation}${tieWeights ? ', tied head' : ''}, batch ${batch}: every chunk to the capacity edge within ${TOLERANCE}·max(1, |logit|) of float64 and of the float32 composed path; no primitive calls`, () => {
      const options = { ...SMALL, activation, tieWeights };
      const { f32, f64 } = modelPair(options, 3 + batch);
      const rng = new Rng(batch);
      const width = CHUNKS.reduce((a, b) => a + b);
      assert.equal(width, SMALL.maxContext);
      const ids = new Tensor(Int32Array.from({ length: batch * width }, () => rng.int(SMALL.vocabSize)), [batch, width]);
      const fused = f32.createCache();
      const composed32 = f32.createCache();
      const spec = f64.createCache();
      let position = 0;
      for (const steps of CHUNKS) {
        const chunk = noGrad(() => narrow(ids, 1, position, steps));
        const contiguous = new Tensor(Int32Array.from(chunk.data), chunk.shape);
        let mine: Tensor | null = null;
        const calls = kernelCalls(() => {
          mine = noGrad(() => f32.forwardCached(contiguous, fused));
        });
        assert.equal(calls, 0, 'the one-call step ran (no primitive kernel calls)');
        const got = mine! as Tensor;
        assert.deepEqual(got.shape, [batch, steps, SMALL.vocabSize]);
        assert.ok(got.data instanceof Float32Array);
        const reference = withBackend('reference', () => noGrad(() => f64.forwardCached(contiguous, spec)));
        const reference32 = withBackend('reference', () => noGrad(() => f32.forwardCached(contiguous, composed32)));
        const bound = TOLERANCE * Math.max(1, maxAbs(reference.data));
        assert.ok(maxAbsDiff(got.data, reference.data) <= bound, `float64 spec at ${position}: ${maxAbsDiff(got.data, reference.data)} > ${bound}`);
        assert.ok(maxAbsDiff(got.data, reference32.data) <= bound, `float32 composed at ${position}: ${maxAbsDiff(got.data, reference32.data)} > ${bound}`);
        position += steps;
        assert.equal(fused.length, position);
        for (const layer of fused.layers) assert.equal(layer.length, position);
      }
      // The cache rows equal the composed path's (keys and values as the composed path wrote them).
      for (let l = 0; l < fused.layers.length; l++) {
        assert.ok(maxAbsDiff(fused.layers[l]!.keys!.data, composed32.layers[l]!.keys!.data) <= 1e-5, `keys of layer ${l}`);
        assert.ok(maxAbsDiff(fused.layers[l]!.values!.data, composed32.layers[l]!.values!.data) <= 1e-5, `values of layer ${l}`);
      }
      // Past the capacity: the same RangeError as before, nothing written.
      assert.throws(() => noGrad(() => f32.forwardCached(new Tensor(new Int32Array(batch), [batch, 1]), fused)), /positions 9\.\.9 are outside \[0, 8\] \(maxContext 9/);
      assert.equal(fused.length, SMALL.maxContext);
    });
  }

  it('[every-isa] 1 and 2 pool threads give identical logits (batch 1 and 5)', () => {
    const { f32 } = modelPair({ ...SMALL, activation: 'gelu-tanh' }, 21);
    for (const batch of [1, 5]) {
      const ids = new Tensor(Int32Array.from({ length: batch * 4 }, (_, i) => (i * 7) % SMALL.vocabSize), [batch, 4]);
      const runs = [1, 2].map((threads) => {
        setNativeThreads(threads);
        const cache = f32.createCache();
        const prompt = noGrad(() => f32.forwardCached(ids, cache));
        const step = noGrad(() => f32.forwardCached(new Tensor(Int32Array.from({ length: batch }, (_, i) => i + 1), [batch, 1]), cache));
        return [...prompt.data, ...step.data];
      });
      setNativeThreads(nativeInfo()!.threads);
      assert.deepEqual(runs[0], runs[1]);
    }
  });

  it('falls back to the composed path (and still equals it) with a tape, with fused layers off, and with operand quantizers', () => {
    const { f32 } = modelPair({ ...SMALL, activation: 'gelu' }, 5);
    const ids = new Tensor(Int32Array.of(4, 8, 15, 16), [1, 4]);
    const reference = noGrad(() => f32.forwardCached(ids, f32.createCache()));
    // A tape recording: composed ops (differentiable), same logits.
    let taped: Tensor | null = null;
    assert.ok(kernelCalls(() => (taped = f32.forwardCached(ids, f32.createCache()))) > 0);
    assert.ok(maxAbsDiff((taped! as Tensor).data, reference.data) <= 1e-5);
    let unfused: Tensor | null = null;
    assert.ok(kernelCalls(() => (unfused = withFusedTransformerLayers(false, () => noGrad(() => f32.forwardCached(ids, f32.createCache()))))) > 0);
    assert.ok(maxAbsDiff((unfused! as Tensor).data, reference.data) <= 1e-5);
    // The switch off: the per-layer primitives.
    const previous = setFusedDecodeStep(false);
    try {
      assert.ok(kernelCalls(() => noGrad(() => f32.forwardCached(ids, f32.createCache()))) > 0);
    } finally {
      setFusedDecodeStep(previous);
    }
    // An operand quantizer (here a module that doubles the attention weights' input) changes the function: not fused.
    const block = f32.blocks.children()[0];
    assert.ok(block instanceof TransformerBlock);
    block.attn.setOperandQuantizers({ query: new Doubling() });
    let quantized: Tensor | null = null;
    assert.ok(kernelCalls(() => (quantized = noGrad(() => f32.forwardCached(ids, f32.createCache())))) > 0);
    const composed = withBackend('reference', () => noGrad(() => f32.forwardCached(ids, f32.createCache())));
    assert.ok(maxAbsDiff((quantized! as Tensor).data, composed.data) <= 1e-5);
    assert.ok(maxAbsDiff((quantized! as Tensor).data, reference.data) > 1e-3, 'the query module is in the path');
  });

  it('generate / generateBatch: the same ids as the uncached forward with a fixed seed (sampling, top-k), through the one-call step', () => {
    const { f32 } = modelPair({ ...SMALL, activation: 'gelu-tanh', maxContext: 12 }, 9);
    const options = { tokens: 20, temperature: 0.9, topK: 8, seed: 3 } as const;
    let calls = -1;
    let cached: number[] = [];
    calls = kernelCalls(() => (cached = generate(f32, [1, 2, 3], options)));
    const full = generate(f32, [1, 2, 3], { ...options, cache: false });
    assert.deepEqual(cached, full);
    assert.equal(calls, 0, 'generate with the cache made no primitive calls');
    const prompts = [[1, 2, 3], [7, 7, 7], [30, 0, 12]];
    const batched = generateBatch(f32, prompts, options);
    const batchedFull = generateBatch(f32, prompts, { ...options, cache: false });
    assert.deepEqual(batched, batchedFull);
    // The window slides past maxContext (the cache is rebuilt from the last 12 ids each step).
    assert.equal(batched[0]!.length, 20);
  });

  it('invalid ids and foreign caches give typed errors before anything is written', () => {
    const { f32 } = modelPair({ ...SMALL, activation: 'relu' }, 2);
    const cache = f32.createCache();
    assert.throws(() => noGrad(() => f32.forwardCached(new Tensor(Int32Array.of(3, 37), [1, 2]), cache)), (e: Error) => e instanceof RangeError && /id 37 .*outside \[0, 37\)/.test(e.message));
    assert.throws(() => noGrad(() => f32.forwardCached(new Tensor(Int32Array.of(-1), [1, 1]), cache)), RangeError);
    assert.equal(cache.length, 0);
    assert.throws(() => noGrad(() => f32.forwardCached(new Tensor(Float32Array.of(3), [1, 1]), cache)), RangeError);
    noGrad(() => f32.forwardCached(new Tensor(Int32Array.of(3, 4), [2, 1]), cache));
    // A batch of 1 against a cache of 2 rows: the composed path's error.
    assert.throws(() => noGrad(() => f32.forwardCached(new Tensor(Int32Array.of(3), [1, 1]), cache)), /the cache holds 2 rows, x has 1/);
    assert.equal(cache.length, 1);
  });

  it('the addon entry checks its arguments (TypeError naming the argument)', () => {
    const addon = nativeAddon()!;
    const e = 4, v = 5, c = 3, f = 6;
    const vec = (n: number): Float32Array => new Float32Array(n).fill(0.1);
    const block = (): (Float32Array | null)[] => [vec(e), vec(e), vec(3 * e * e), null, vec(e * e), null, vec(e), vec(e), vec(f * e), null, vec(e * f), null, vec(c * e), vec(c * e)];
    const dims = (over: Partial<Record<number, number>> = {}): Int32Array => {
      const d = [1, 1, 0, c, e, 2, v, c, 1, f, 1];
      for (const [i, x] of Object.entries(over)) d[Number(i)] = x!;
      return Int32Array.from(d);
    };
    const call = (d: Int32Array, blocks: (Float32Array | null)[][], ids = Int32Array.of(2), logits = new Float32Array(v)): void =>
      addon.floatTfDecode!(d, vec(3), ids, [vec(v * e), vec(c * e)], blocks, [vec(e), vec(e), vec(v * e), null], logits);
    const logits = new Float32Array(v);
    call(dims(), [block()], Int32Array.of(2), logits);
    assert.ok(logits.every(Number.isFinite));
    assert.throws(() => call(dims({ 2: 3 }), [block()]), (x: Error) => x instanceof TypeError && /dims out of range/.test(x.message), 'past + steps > capacity');
    assert.throws(() => call(dims({ 5: 3 }), [block()]), /dims out of range/, 'E not divisible by heads');
    assert.throws(() => call(dims(), [block()], Int32Array.of(5)), /word id 5 is outside \[0, V\)/);
    const short = block();
    short[2] = vec(3 * e * e - 1);
    assert.throws(() => call(dims(), [short]), (x: Error) => x instanceof TypeError && /block 0: qkv\.weight must hold 48 values/.test(x.message));
    const wrongType = block() as unknown[];
    wrongType[12] = new Float64Array(c * e);
    assert.throws(() => call(dims(), [wrongType as (Float32Array | null)[]]), /block 0: keys must be a Float32Array/);
    assert.throws(() => call(dims(), []), /blocks must be an array of numBlocks/);
    assert.throws(() => call(dims(), [block()], Int32Array.of(2), new Float32Array(v + 1)), /logits must hold 5 values/);
  });
});

describe('TransformerLM one-call step under other ISAs', () => {
  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 8, output);
    });
  }
});
