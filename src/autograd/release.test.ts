/**
 * Handing buffers back in no-grad inference: `releaseTensor` (the caller's dropped results) and the
 * TransformerLM's own intermediates (`releaseIntermediates`). With the pool poisoned (every buffer
 * taken back is filled with NaN first), a buffer released while something still reads it shows up
 * as NaN or a wrong logit; the results must equal, bit for bit, those of the same model with
 * nothing released.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nativeInfo, setNativeThreads, withBackend } from '../backend/index.ts';
import { loadNative } from '../backend/native/index.ts';
import { noteAllocated, releaseOutput, setRecyclePoison, setRecycling, takeRecycled } from '../backend/recycle.ts';
import { setFusedTransformerLayers } from '../nn/fused-layers.ts';
import { TransformerLM } from '../nn/models/transformer-lm.ts';
import { add, crossEntropy, reshape, Rng, Tensor } from '../tensor/index.ts';
import { grad, noGrad } from './engine.ts';
import { releaseTensor, setReleaseIntermediates } from './release.ts';

loadNative();

// Odd sizes; every block intermediate ([N, C, E] = 4536, [N, C, MLP] = 18144) and the logits
// (8253) are above the pool's 4096-element minimum.
const [V, C, E, H, F, N] = [131, 7, 72, 3, 288, 9];

/** Runs fn with intermediates released, outputs handed back and the pool poisoned, or with none of that. */
function released<T>(on: boolean, fn: () => T): T {
  const recycling = setRecycling(on);
  const intermediates = setReleaseIntermediates(on);
  setRecyclePoison(on);
  try {
    return fn();
  } finally {
    setRecycling(recycling);
    setReleaseIntermediates(intermediates);
    setRecyclePoison(false);
  }
}

function sameBits(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let k = 0; k < expected.length; k++) {
    if (!Object.is(actual[k], expected[k])) assert.fail(`${what}[${k}]: ${actual[k]} with releases vs ${expected[k]} without`);
  }
}

function model(activation: 'gelu' | 'gelu-tanh' | 'relu'): TransformerLM {
  return new TransformerLM({ vocabSize: V, maxContext: C, embedDim: E, numLayers: 2, numHeads: H, mlpDim: F, activation, rng: new Rng(3) });
}

function batches(count: number): Tensor[] {
  const rng = new Rng(5);
  return Array.from({ length: count }, () => new Tensor(Int32Array.from({ length: N * C }, () => Math.floor(rng.uniform() * V)), [N, C]));
}

describe('releaseOutput / releaseTensor', () => {
  it('take whole kernel outputs once; decline views, small, foreign and graph tensors', () => {
    const size = 5000;
    while (takeRecycled(size)) { /* empty the pool of that size */ }
    const kernelOut = new Float32Array(size);
    noteAllocated(kernelOut);
    assert.equal(releaseOutput(new Float32Array(size)), false, 'not made by a kernel');
    assert.equal(releaseOutput(kernelOut.subarray(1)), false, 'a view');
    const small = new Float32Array(100);
    noteAllocated(small);
    assert.equal(releaseOutput(small), false, 'below the minimum');
    assert.equal(releaseOutput(kernelOut), true);
    assert.equal(releaseOutput(kernelOut), false, 'released twice');
    assert.equal(takeRecycled(size), kernelOut);
    assert.equal(takeRecycled(size), undefined);

    const leaf = new Tensor(new Float32Array(size), [size], true);
    noteAllocated(leaf.data as Float32Array);
    assert.equal(releaseTensor(leaf), false, 'requires grad');
  });

  it('the native backend hands a released result to the next output of its size, never a recorded one', { skip: !nativeInfo() && 'native addon not loaded' }, () => {
    withBackend('native', () => {
      const a = new Tensor(Float32Array.from({ length: 6000 }, (_, i) => i), [6000]);
      const first = noGrad(() => add(a, a));
      assert.equal(releaseTensor(first), true);
      const second = noGrad(() => add(a, a));
      assert.equal(second.data, first.data, 'the released buffer is reused');
      for (let i = 0; i < 6000; i += 997) assert.equal(second.data[i], 2 * i);

      const w = new Tensor(new Float32Array(6000).fill(1), [6000], true);
      const recorded = add(a, w);
      assert.equal(releaseTensor(recorded), false, 'part of a graph');
    });
  });
});

describe('TransformerLM no-grad forward with released buffers', { skip: !nativeInfo() && 'native addon not loaded' }, () => {
  for (const threads of [1, 2]) {
    for (const fused of [true, false]) {
      for (const activation of ['gelu-tanh', 'relu'] as const) {
        it(`logits equal bit for bit over repeated calls (${threads} thread(s), ${fused ? 'fused' : 'composed'} layers, ${activation})`, () => {
          const previousFused = setFusedTransformerLayers(fused);
          const previousThreads = nativeInfo()!.threads;
          setNativeThreads(threads);
          try {
            withBackend('native', () => {
              const m = model(activation);
              m.eval();
              const inputs = batches(4);
              const run = (on: boolean): { all: Float32Array[]; last: Float32Array[] } => released(on, () => {
                const all: Float32Array[] = [];
                const last: Float32Array[] = [];
                for (const ids of inputs) {
                  const logits = noGrad(() => m.forwardAll(ids));
                  all.push(Float32Array.from(logits.data as Float32Array));
                  if (on) assert.equal(releaseTensor(logits), true, 'the logits are a whole kernel output');
                  last.push(Float32Array.from(noGrad(() => m.forward(ids)).data as Float32Array));
                }
                return { all, last };
              });
              const reference = run(false);
              const withReleases = run(true);
              for (let b = 0; b < inputs.length; b++) {
                sameBits(withReleases.all[b]!, reference.all[b]!, `forwardAll, batch ${b}`);
                sameBits(withReleases.last[b]!, reference.last[b]!, `forward, batch ${b}`);
              }
            });
          } finally {
            setFusedTransformerLayers(previousFused);
            setNativeThreads(previousThreads);
          }
        });
      }
    }
  }

  it('the buffers of a released call are reused by the next one', () => {
    withBackend('native', () => released(true, () => {
      const m = model('gelu');
      const [ids] = batches(1);
      noGrad(() => m.forwardAll(ids!)); // warm the pool with the intermediates
      const first = noGrad(() => m.forwardAll(ids!));
      releaseTensor(first);
      const firstBuffer = first.data;
      const second = noGrad(() => m.forwardAll(ids!));
      assert.equal(second.data, firstBuffer, 'the logits buffer handed back is the next call\'s output');
    }));
  });

  it('with grad enabled nothing is released: the gradients equal those without releases', () => {
    withBackend('native', () => {
      const m = model('gelu-tanh');
      const [ids] = batches(1);
      const rng = new Rng(9);
      const targets = new Tensor(Int32Array.from({ length: N * C }, () => Math.floor(rng.uniform() * V)), [N * C]);
      const grads = (on: boolean): Float32Array[] => released(on, () => {
        const params = m.parameters();
        const loss = crossEntropy(reshape(m.forwardAll(ids!), [N * C, V]), targets);
        return grad(loss, params).map((g) => Float32Array.from(g.data as Float32Array));
      });
      const reference = grads(false);
      const withReleases = grads(true);
      reference.forEach((g, i) => sameBits(withReleases[i]!, g, `gradient ${i}`));
    });
  });
});
