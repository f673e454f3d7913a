/** nceSearch's unreachable-budget message names the cost and the bits it is counted at, not a wrong unit (audit s11 #8). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { ReLU } from '../../nn/activation.ts';
import { Linear } from '../../nn/linear.ts';
import { Sequential } from '../../nn/sequential.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { bitOpsCost } from '../search/costs.ts';
import { nceSearch } from './search.ts';

describe('nceSearch budget message', () => {
  it('an unreachable budget names the narrowest cost with its cost model and bits', async () => {
    const rng = new Rng(0);
    const model = new Sequential(new Linear(8, 16, { rng }), new ReLU(), new Linear(16, 4, { rng }));
    const train = [{ x: new Tensor(new Float32Array(16), [2, 8]), y: new Tensor(Int32Array.from([0, 1]), [2]) }];
    // Narrowest: hidden width 8 of 16 -> 8·8 + 8·4 = 96 weights (size at 1-bit weights).
    await assert.rejects(nceSearch(model, { inputShape: [8], train, steps: 2, budget: 10 }), /budget 10 is below the narrowest architecture's 96 \(size at w1a1: weights\)/);
    // BitOps at 1/1 bits count MACs: the same 96 for this MLP.
    await assert.rejects(nceSearch(model, { inputShape: [8], train, steps: 2, budget: 10, cost: bitOpsCost() }), /96 \(bitops at w1a1: MACs\)/);
  });
});
