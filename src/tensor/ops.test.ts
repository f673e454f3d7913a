/** Argument validation of the user-facing ops (values are tested per backend in backend/). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../backend/index.ts';
import { availableBackends, withBackend } from '../backend/index.ts';
import { Tensor, tensor } from './tensor.ts';
import * as o from './ops.ts';

/** Runs `fn` once per available backend (reference, and native when the addon loaded). */
function onEachBackend(fn: () => void): void {
  for (const backend of availableBackends()) withBackend(backend, fn);
}

describe('losses', () => {
  it('nllLoss and crossEntropy refuse float targets instead of truncating them (PyTorch raises)', () => {
    const z = tensor([[0, 1, 2], [2, 1, 0]]);
    onEachBackend(() => {
      assert.throws(() => o.crossEntropy(z, tensor([1.9, 0.2])), /nllLoss: targets must be int32 class indices, got float32/);
      assert.throws(() => o.nllLoss(o.logSoftmax(z, 1), tensor([1, 0], undefined, 'float64')), /got float64/);
      // int32 targets still pick -log softmax at the label: row 0 label 1, row 1 label 0.
      const lse = Math.log(1 + Math.E + Math.E ** 2);
      const loss = o.crossEntropy(z, new Tensor(Int32Array.from([1, 0]), [2]));
      assert.ok(Math.abs(loss.item() - (lse - 1 + lse - 2) / 2) < 1e-6);
    });
  });
});
