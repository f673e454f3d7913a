import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import '../../tensor/index.ts';
import { Conv2d, Flatten, Linear, ReLU, Sequential } from '../../nn/index.ts';
import { resolvePlan } from './plan.ts';
import { int4PerChannelSym, uint4Ema, uint4Lsq, uint4LsqPlus } from './presets.ts';

/** A chain conv0 → conv1 → conv2 → flatten → fc whose model names conv1 and conv2 as reading signed values. */
class Bottlenecked extends Sequential {
  constructor(private readonly names: readonly string[]) {
    super(new Conv2d(1, 4, 3), new ReLU(), new Conv2d(4, 4, 1), new Conv2d(4, 4, 1), new Flatten(), new Linear(4 * 4 * 4, 3));
  }
  signedInputLayers(): readonly string[] {
    return this.names;
  }
}

describe('resolvePlan: signed inputs a model names (SignedInputLayers)', () => {
  it('zero-point-free unsigned specs (LSQ) become signed with the same bits there, and only there', () => {
    const rows = resolvePlan(new Bottlenecked(['2', '3']), { default: { weight: int4PerChannelSym, activation: uint4Lsq }, keepFirstLast8bit: false });
    assert.deepEqual(rows.map((r) => [r.name, r.activationSpec?.signed, r.activationSpec?.bits]), [['0', true, 8], ['2', true, 4], ['3', true, 4], ['5', false, 4]]);
    assert.equal(rows[1]!.activationSpec!.kind, 'lsq');
    // A model without the method: unchanged.
    const plain = resolvePlan(new Sequential(new Conv2d(1, 4, 3), new Conv2d(4, 4, 1)), { default: { weight: int4PerChannelSym, activation: uint4Lsq }, keepFirstLast8bit: false });
    assert.equal(plain[1]!.activationSpec!.signed, false);
  });

  it('asymmetric specs (a zero point covers negatives) and layers an override names exactly are left as they are', () => {
    for (const activation of [uint4Ema, uint4LsqPlus]) {
      const rows = resolvePlan(new Bottlenecked(['2']), { default: { weight: int4PerChannelSym, activation }, keepFirstLast8bit: false });
      assert.equal(rows[1]!.activationSpec!.signed, false, activation.kind);
    }
    const exact = resolvePlan(new Bottlenecked(['2', '3']), {
      default: { weight: int4PerChannelSym, activation: uint4Lsq }, keepFirstLast8bit: false, overrides: [{ match: '3', config: { activation: uint4Lsq } }],
    });
    assert.deepEqual(exact.slice(1, 3).map((r) => r.activationSpec!.signed), [true, false]);
  });
});
