import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../backend/index.ts';
import { QUANTIZER_KINDS, applicableKinds } from './index.ts';
import { grad } from '../../autograd/engine.ts';
import { sum } from '../../tensor/ops.ts';
import { Rng } from '../../tensor/random.ts';
import { createQuantizer, quantizerKinds, type QuantizerContext } from './quantizer.ts';
import { assertExportReproduces, maxDistinctPerChannel, randomTensor } from './testing.ts';

const rng = new Rng(606);

function levelBound(kind: string, bits: number): number {
  if (kind === 'ternary') return 3;
  return 2 ** bits;
}

describe('quantizers: registry, applicable kinds, generic contracts', () => {
  it('every kind in QUANTIZER_KINDS is registered; applicableKinds follows the bit width', () => {
    for (const kind of QUANTIZER_KINDS) assert.ok(quantizerKinds().includes(kind), kind);
    assert.deepEqual(applicableKinds('weight', 1), ['dorefa', 'lqnet', 'binary', 'irnet', 'smoothBinary', 'adaste']);
    assert.ok(applicableKinds('weight', 2).includes('ternary'));
    assert.ok(!applicableKinds('activation', 2).includes('ternary'));
    assert.ok(applicableKinds('activation', 4).includes('pact') && !applicableKinds('weight', 4).includes('pact'));
    assert.ok(!applicableKinds('weight', 4).includes('binary'));
    assert.deepEqual(applicableKinds('weight', 0), []);
    assert.throws(() => createQuantizer({ kind: 'binary', bits: 2 }, { role: 'weight', shape: [2, 2] }), /bits/);
    assert.throws(() => createQuantizer({ kind: 'lsq', bits: 4 }, { role: 'weight' }), /shape/);
    assert.throws(() => createQuantizer({ kind: 'ste', bits: 4, momentum: 'x' }, { role: 'activation' }), /momentum/);
  });

  for (const role of ['weight', 'activation'] as const) {
    for (const bits of [1, 2, 4, 8]) {
      it(`${role}s at ${bits} bit(s): every applicable kind trains, keeps ≤ its level count, survives stateDict and exports its eval forward`, () => {
        const shape = [4, 12];
        const context: QuantizerContext = role === 'weight' ? { role, shape } : { role };
        for (const kind of applicableKinds(role, bits)) {
          const spec = { kind, bits, seed: 3 };
          const q = createQuantizer(spec, context);
          const x = () => randomTensor(rng, shape, { dtype: 'float32', mean: role === 'activation' ? 0.5 : 0 });
          for (let epoch = 0; epoch < 3; epoch++) {
            q.setProgress(epoch, 3);
            const input = x().requiresGrad_();
            const y = q.forward(input);
            assert.deepEqual(y.shape, shape, kind);
            const [g] = grad(sum(y), [input]);
            assert.ok(g!.toArray().every(Number.isFinite), `${kind}: finite gradient`);
          }
          const copy = createQuantizer(spec, context);
          copy.loadStateDict(q.stateDict());
          q.eval();
          copy.eval();
          const probe = x();
          const y = q.forward(probe);
          assert.deepEqual(copy.forward(probe).toArray(), y.toArray(), `${kind}: state round trip`);
          const axis = role === 'weight' ? 0 : null;
          assert.ok(maxDistinctPerChannel(y, axis) <= levelBound(kind, bits), `${kind}: ${maxDistinctPerChannel(y, axis)} levels`);
          const exported = q.exportQuant();
          const tol = kind === 'lqnet' || kind === 'lsqPlus' ? 1e-6 : 0;
          assertExportReproduces(exported, role === 'weight' ? y : probe, y, tol);
          q.fakeQuantEnabled = false;
          assert.equal(q.forward(probe), probe);
        }
      });
    }
  }
});
