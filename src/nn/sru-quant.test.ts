/**
 * Quantizing SRUs: each layer-direction's W is a child Linear `proj`, so describeLayers, search
 * plans, prepareQat and PTQ address it by name like any Linear. Checked against a hand-quantized
 * float reference.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/index.ts';
import { reshape, Rng, slice, Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';
import { Linear } from './linear.ts';
import { SRU } from './sru.ts';
import { describeLayers } from '../quant/search/layers.ts';
import { quantizeAssignment, evaluateAssignmentSync, type SearchData } from '../quant/search/evaluate.ts';
import { quantizedLayers } from '../quant/qat/prepare.ts';
import type { BitAssignment } from '../quant/search/types.ts';

const [L, F, H] = [5, 6, 8];

/** [N, L, F] → SRU (2 layers, batchFirst) → last step → Linear(H → 3). */
class SeqClassifier extends Module {
  readonly sru: SRU;
  head: Linear;
  constructor(rng: Rng) {
    super();
    this.sru = this.registerModule('sru', new SRU(F, H, { numLayers: 2, batchFirst: true, rng }));
    this.head = this.registerModule('head', new Linear(H, 3, { rng }));
  }
  forward(x: Tensor): Tensor {
    const n = x.shape[0]!;
    const [out] = this.sru.forward(x);
    return this.head.forward(reshape(slice(out, [0, L - 1, 0], [n, L, H]), [n, H]));
  }
}

function randomBatch(n: number, rng: Rng): Tensor {
  const data = new Float32Array(n * L * F);
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform() * 2 - 1;
  return new Tensor(data, [n, L, F]);
}

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Symmetric narrow-range per-row quantization with the min-max scale max|w_row| / (2^(b−1) − 1). */
function quantizeRows(w: Tensor, bits: number): Float32Array {
  const [rows, cols] = w.shape as [number, number];
  const qmax = 2 ** (bits - 1) - 1;
  const out = new Float32Array(w.size);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(w.data[r * cols + c]!));
    const s = m / qmax;
    for (let c = 0; c < cols; c++) out[r * cols + c] = s === 0 ? 0 : Math.max(-qmax, Math.min(qmax, roundHalfEven(w.data[r * cols + c]! / s))) * s;
  }
  return out;
}

describe('SRU quantization through the Linear projections', () => {
  it('describeLayers names each SRU projection and counts its MACs over every step', () => {
    const layers = describeLayers(new SeqClassifier(new Rng(1)), [L, F]);
    assert.deepEqual(layers.map((l) => l.name), ['sru.layer0.proj', 'sru.layer1.proj', 'head']);
    // layer 0: F ≠ H, so 4 blocks (x̃, f, r, highway); layer 1: H = H, 3 blocks.
    assert.deepEqual(layers.map((l) => l.weightCount), [4 * H * F, 3 * H * H, 3 * H]);
    assert.deepEqual(layers.map((l) => l.macs), [L * 4 * H * F, L * 3 * H * H, 3 * H]);
  });

  // One SRU layer quantized at a time (the others float), so that the calibrated 16-bit input
  // ranges are those the float model sees and the comparison is exact up to 16-bit rounding.
  for (const [layer, bits] of [['layer0', 3], ['layer1', 4]] as const) {
    it(`PTQ of sru.${layer}.proj at W${bits}A16 equals the float model with hand-quantized weights`, () => {
      const rng = new Rng(7);
      const model = new SeqClassifier(rng);
      const x = randomBatch(16, rng);
      const data: SearchData = { calibration: [{ x }], eval: [{ x, y: new Tensor(new Int32Array(16), [16]) }] };
      const assignment: BitAssignment = { [`sru.${layer}.proj`]: { w: bits, a: 16 } };
      const reference = new SeqClassifier(new Rng(99));
      reference.loadStateDict(model.stateDict());
      const floatOut = noGrad(() => reference.forward(x)).toArray();
      const w = reference.stateDict().get(`sru.${layer}.proj.weight`)!;
      reference.sru.cells[layer === 'layer0' ? 0 : 1]!.proj.parameters()[0]!.data.set(quantizeRows(w, bits));
      const expected = noGrad(() => reference.forward(x)).toArray();

      quantizeAssignment(model, assignment, data, { method: 'ptq', base: { weightMethod: 'minmax' } });
      assert.deepEqual(quantizedLayers(model).map((l) => [l.name, l.weightSpec?.bits, l.activationSpec?.bits]), [[`sru.${layer}.proj`, bits, 16]]);
      const got = noGrad(() => model.forward(x)).toArray();
      let err = 0;
      let moved = 0;
      for (let i = 0; i < got.length; i++) {
        err = Math.max(err, Math.abs(got[i]! - expected[i]!));
        moved = Math.max(moved, Math.abs(expected[i]! - floatOut[i]!));
      }
      assert.ok(moved > 1e-2, `${bits}-bit weights must move the output (moved ${moved})`);
      assert.ok(err < 1e-3, `quantized model vs hand-quantized reference: max error ${err}`);
    });
  }

  it('evaluateAssignmentSync restores the float SRU model afterwards', () => {
    const rng = new Rng(5);
    const model = new SeqClassifier(rng);
    const x = randomBatch(8, rng);
    const before = noGrad(() => model.forward(x)).toArray();
    const data: SearchData = { calibration: [{ x }], eval: [{ x, y: new Tensor(new Int32Array(8), [8]) }] };
    const assignment: BitAssignment = { 'sru.layer0.proj': { w: 2, a: 4 }, 'sru.layer1.proj': { w: 2, a: 4 }, head: { w: 2, a: 4 } };
    evaluateAssignmentSync(model, assignment, data, { method: 'ptq' });
    assert.ok(model.sru.cells[0]!.proj instanceof Linear, 'projection restored to the float Linear');
    assert.deepEqual(noGrad(() => model.forward(x)).toArray(), before);
  });
});
