import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { availableBackends, withBackend } from '../backend/index.ts';
import { loadNative } from '../backend/native/index.ts';
import { setRecyclePoison, setRecycling } from '../backend/recycle.ts';
import { lenet5 } from '../nn/models/index.ts';
import { add, crossEntropy, manualSeed, matmul, mul, randint, randn, relu, sum, Tensor } from '../tensor/index.ts';
import { grad } from './engine.ts';

loadNative();

/** Runs fn with recycling on and poisoned (released buffers come back full of NaN), or off. */
function run<T>(recycling: boolean, fn: () => T): T {
  const previous = setRecycling(recycling);
  setRecyclePoison(recycling);
  try {
    return fn();
  } finally {
    setRecycling(previous);
    setRecyclePoison(false);
  }
}

function sameBits(actual: Float32Array[], expected: Float32Array[], what: string): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((a, i) => {
    const e = expected[i]!;
    assert.equal(a.length, e.length, `${what} ${i}: length`);
    for (let k = 0; k < e.length; k++) {
      if (!Object.is(a[k], e[k])) assert.fail(`${what} ${i}[${k}]: ${a[k]} with recycling vs ${e[k]} without`);
    }
  });
}

describe('gradient buffer recycling', () => {
  for (const backend of availableBackends()) {
    it(`three LeNet-5 training steps give bit-identical gradients with poisoned recycling (${backend})`, () => {
      withBackend(backend, () => {
        const steps = (recycling: boolean): Float32Array[] => run(recycling, () => {
          manualSeed(11);
          const model = lenet5();
          const x = randn([32, 1, 28, 28]);
          const y = randint(10, [32]);
          const out: Float32Array[] = [];
          for (let s = 0; s < 3; s++) {
            model.zeroGrad();
            crossEntropy(model.forward(x), y).backward();
            for (const p of model.parameters()) {
              out.push(Float32Array.from(p.grad!.data));
              p.data.set(p.data.map((v, k) => v - 0.05 * p.grad!.data[k]!));
            }
          }
          return out;
        });
        sameBits(steps(true), steps(false), 'grad');
      });
    });

    it(`shared subexpressions and grad() of intermediate tensors survive recycling (${backend})`, () => {
      withBackend(backend, () => {
        const grads = (recycling: boolean): Float32Array[] => run(recycling, () => {
          manualSeed(12);
          const x = randn([64, 96]);
          const w = randn([96, 128]);
          w.requiresGrad = true;
          const out: Float32Array[] = [];
          for (let s = 0; s < 2; s++) {
            const h = relu(matmul(x, w));
            const u = add(h, mul(h, h));  // h feeds three uses; add passes its gradient to both operands
            const z = add(sum(mul(u, u)), sum(h));
            const [gh, gu, gw] = grad(z, [h, u, w]);
            out.push(Float32Array.from(gh!.data), Float32Array.from(gu!.data), Float32Array.from(gw!.data));
            w.grad = null;
            z.backward();
            out.push(Float32Array.from(w.grad!.data));
          }
          return out;
        });
        sameBits(grads(true), grads(false), 'grad');
      });
    });
  }

  it('a kept gradient is returned intact although its tensor was processed', () => {
    run(true, () => {
      const x = new Tensor(Float32Array.from({ length: 8192 }, (_, i) => Math.sin(i)), [8192]);
      x.requiresGrad = true;
      const h = mul(x, x);
      const [gh] = grad(sum(mul(h, h)), [h]);
      for (let i = 0; i < 8192; i++) assert.equal(gh!.data[i], Math.fround(2 * h.data[i]!));
    });
  });
});
