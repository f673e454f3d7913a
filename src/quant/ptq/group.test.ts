/**
 * Per-group weights in PTQ: the 'static' quantizer with granularity 'group' fake-quantizes by the
 * formula of each (row, group) set; `calibrate(..., { weightGroupSize })` groups the Linear layers
 * whose input count allows it (and names the others); `convert` turns the result into per-group
 * integer layers (tested in src/runtime/group.test.ts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Flatten, Linear, ReLU, Sequential } from '../../nn/index.ts';
import { manualSeed, Rng, Tensor } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { createQuantizer } from '../quantizers/quantizer.ts';
import { quantizedLayers } from '../qat/prepare.ts';
import { convert } from '../../runtime/convert.ts';
import { calibrate, StaticQuantizer } from './index.ts';

/** Symmetric b-bit min-max fake quantization of `w` [rows, cols] with one scale per row and per `g` columns (float64 formula, float32 results). */
function groupFormula(w: Float32Array, rows: number, cols: number, g: number, bits: number): Float32Array {
  const qmax = 2 ** (bits - 1) - 1;
  const out = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols / g; k++) {
      let bound = 0;
      for (let c = k * g; c < (k + 1) * g; c++) bound = Math.max(bound, Math.abs(w[r * cols + c]!));
      const s = Math.fround(bound / qmax);
      for (let c = k * g; c < (k + 1) * g; c++) out[r * cols + c] = Math.fround(Math.max(-qmax, Math.min(qmax, roundHalfEven(w[r * cols + c]! / s))) * s);
    }
  }
  return out;
}

function weights(rng: Rng, n: number): Float32Array {
  // Rows whose groups have very different magnitudes: per-row scales lose the small groups.
  return Float32Array.from({ length: n }, (_, i) => rng.normal() * (Math.floor(i / 4) % 3 === 0 ? 5 : 0.1));
}

describe('quant/ptq: per-group weights', () => {
  it('static quantizer, granularity group: ŵ = s·clamp(round(w/s)) with s = max|w|/7 of each (row, group of 4)', () => {
    const rng = new Rng(5);
    const w = new Tensor(weights(rng, 3 * 8), [3, 8]);
    const q = createQuantizer({ kind: 'static', bits: 4, signed: true, symmetric: true, granularity: 'group', axis: 1, groupSize: 4, method: 'minmax' }, { role: 'weight', shape: [3, 8], channelAxis: 0 });
    assert.ok(q instanceof StaticQuantizer);
    const out = noGrad(() => q.forward(w));  // data-free: a weight quantizer calibrates on its first call
    assert.deepEqual(Array.from(out.data), Array.from(groupFormula(Float32Array.from(w.data), 3, 8, 4, 4)));
    const exported = q.exportQuant();
    assert.ok(exported.type === 'affine');
    assert.equal(exported.qparams.scale.length, 6);
    assert.equal(exported.qparams.groupSize, 4);
    // Per-row scales are set by the large groups: the small weights (groups of magnitude 0.1) round to 0 there, not with their own scale.
    const perRow = createQuantizer({ kind: 'static', bits: 4, signed: true, symmetric: true, granularity: 'channel', method: 'minmax' }, { role: 'weight', shape: [3, 8], channelAxis: 0 });
    const rowOut = noGrad(() => perRow.forward(w));
    const small = (i: number): boolean => Math.floor(i / 4) % 3 !== 0;
    const err = (y: Tensor): number => Array.from(y.data).reduce((e: number, v: number, i: number) => e + (small(i) ? (v - w.data[i]!) ** 2 : 0), 0);
    assert.ok(err(out) < err(rowOut) / 10, `${err(out)} vs ${err(rowOut)}`);
    assert.throws(() => createQuantizer({ kind: 'static', bits: 4, granularity: 'group', axis: 1, groupSize: 3, method: 'minmax' }, { role: 'weight', shape: [3, 8], channelAxis: 0 }), /groupSize 3 does not divide axis 1/);
    assert.throws(() => createQuantizer({ kind: 'static', bits: 8, signed: false, granularity: 'group', axis: 0, groupSize: 2 }, { role: 'activation' }), /activations are quantized per tensor/);
  });

  it('calibrate with weightGroupSize: Linear layers whose inputs divide are grouped (formula), the others named and kept per row; convert gives per-group integer layers', () => {
    manualSeed(9);
    const rng = new Rng(2);
    const model = new Sequential(new Flatten(), new Linear(12, 8), new ReLU(), new Linear(8, 6), new ReLU(), new Linear(6, 3));
    const float = [1, 3, 5].map((i) => Float32Array.from((model.getSubmodule(String(i)) as Linear).weight.data));
    const batches = Array.from({ length: 4 }, () => ({ x: new Tensor(Float32Array.from({ length: 16 * 12 }, () => rng.normal()), [16, 12]) }));
    const lines: string[] = [];
    calibrate(model, batches, { scheme: 'w4a8', weightMethod: 'minmax', keepFirstLast8bit: false, weightGroupSize: 4, samples: 64, progress: (m) => lines.push(m) });
    assert.ok(lines.includes('5: 6 inputs are not a multiple of weightGroupSize 4: weights stay per output channel'), lines.join('\n'));
    assert.ok(lines.includes('weights of 2 Linear layers in groups of 4 inputs'), lines.join('\n'));
    const layers = quantizedLayers(model);
    const groupSizes = layers.map(({ layer }) => (layer.weightQuantizer!.exportQuant() as { qparams: { groupSize: number | null } }).qparams.groupSize);
    assert.deepEqual(groupSizes, [4, 4, null]);
    const effective = layers.map(({ layer }) => Array.from(noGrad(() => layer.weightQuantizer!.forward(layer.weight)).data));
    assert.deepEqual(effective[0], Array.from(groupFormula(float[0]!, 8, 12, 4, 4)));
    assert.deepEqual(effective[1], Array.from(groupFormula(float[1]!, 6, 8, 4, 4)));
    assert.deepEqual(effective[2], Array.from(groupFormula(float[2]!, 3, 6, 6, 4)), 'per row = one group of all 6 inputs');
    const im = convert(model, { sample: batches[0]!.x });
    assert.deepEqual(im.nodes.flatMap((n) => (n.op === 'linear' ? [n.weightGroupSize ?? null] : [])), [4, 4, null]);
    assert.equal(im.graph.version, 3);
    assert.throws(() => calibrate(new Sequential(new Linear(4, 2)), batches.map((b) => ({ x: new Tensor(b.x.data.slice(0, 64), [16, 4]) })), { weightGroupSize: 0 }), /weightGroupSize must be a positive integer, got 0/);
  });
});
