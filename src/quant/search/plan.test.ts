import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lenet5 } from '../../nn/models/lenet5.ts';
import { manualSeed, Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { calibrate } from '../ptq/calibrate.ts';
import { StaticQuantizer } from '../ptq/static.ts';
import { prepareQat, quantizedLayers } from '../qat/prepare.ts';
import { convert } from '../../runtime/convert.ts';
import { createQuantizer } from '../quantizers/quantizer.ts';
import { describeLayers } from './layers.ts';
import { assignmentFromPlan, loadPlanFile, planFromAssignment, savePlanFile } from './plan.ts';
import { evaluateAssignmentSync, quantizeAssignment } from './evaluate.ts';
import type { BitAssignment } from './types.ts';

function images(n: number, seed: number): Tensor {
  const rng = new Rng(seed);
  return new Tensor(new Float32Array(n * 784).map(() => rng.normal()), [n, 1, 28, 28]);
}
function labels(n: number, seed: number): Tensor {
  const rng = new Rng(seed);
  return new Tensor(Int32Array.from({ length: n }, () => rng.int(10)), [n]);
}

const mixed: BitAssignment = {
  conv1: { w: 8, a: 8 },
  conv2: { w: 4, a: 8 },
  fc1: { w: 2, a: 4, wPerChannel: [...Array(120)].map((_, i) => (i % 3 === 0 ? 2 : i % 3 === 1 ? 2 : 2)) },
  fc2: { w: 3, a: 8, wPerChannel: [...Array(84)].map((_, i) => (i < 20 ? 3 : 2)) },
  fc3: { w: 8, a: 8 },
};
// fc1 lists one width everywhere: not a real per-channel case; keep it plain.
const assignment: BitAssignment = { ...mixed, fc1: { w: 2, a: 4 } };

describe('planFromAssignment', () => {
  it('round trip: plan → prepareQat / calibrate → assignmentFromPlan gives the assignment back', () => {
    const plan = planFromAssignment(assignment, { firstLayer: 'conv1' });
    const json = JSON.parse(JSON.stringify(plan));
    const model = lenet5();
    assert.deepEqual(assignmentFromPlan(model, json), assignment);
    calibrate(model, [{ x: images(16, 1) }], { plan: json });
    const layers = quantizedLayers(model);
    assert.deepEqual(layers.map((l) => [l.name, l.weightSpec!.bits, l.activationSpec!.bits]), [
      ['conv1', 8, 8], ['conv2', 4, 8], ['fc1', 2, 4], ['fc2', 3, 8], ['fc3', 8, 8],
    ]);
    assert.equal(layers[0]!.activationSpec!['signed'], true, 'the model input is signed');
    assert.equal(layers[1]!.activationSpec!['signed'], false);
    assert.deepEqual(layers[3]!.weightSpec!['channelBits'], mixed.fc2!.wPerChannel);
  });
  it('the calibrated plan converts to an IntModel that matches the fake-quant model', () => {
    manualSeed(3);
    const model = lenet5();
    const plan = planFromAssignment(assignment, { firstLayer: describeLayers(model, [1, 28, 28])[0]!.name });
    const x = images(32, 2);
    calibrate(model, [{ x }], { plan });
    const im = convert(model, { sample: x, minAgreement: 0.99 });
    const bits = im.layers().filter((l) => l.op === 'conv2d' || l.op === 'linear').map((l) => l.bits);
    assert.deepEqual(bits, ['w8a8', 'w4a8', 'w2a4', 'w3a8', 'w8a8']);
  });
  it('a QAT kind plan is accepted by prepareQat (LSQ weights, STE activations)', () => {
    const model = lenet5();
    prepareQat(model, planFromAssignment({ ...assignment, fc2: { w: 3, a: 8 } }, { firstLayer: 'conv1', weightKind: 'lsq', activationKind: 'ste' }));
    assert.deepEqual(quantizedLayers(model).map((l) => l.weightSpec!.kind), ['lsq', 'lsq', 'lsq', 'lsq', 'lsq']);
    // Per-channel widths need the 'static' quantizer.
    assert.throws(() => planFromAssignment(mixed, { weightKind: 'lsq' }), /'static' weight quantizer only/);
  });
  it('validates assignments and plan files', () => {
    assert.throws(() => planFromAssignment({ fc1: { w: 0, a: 8 } }), /w must be an integer/);
    assert.throws(() => planFromAssignment({ fc1: { w: 4, a: 8, wPerChannel: [2, 3] } }), /widest channel/);
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-plan-'));
    try {
      const path = join(dir, 'plan.json');
      const plan = planFromAssignment(assignment, { firstLayer: 'conv1' });
      savePlanFile(path, plan, assignment, { budget: 123 });
      const back = loadPlanFile(path);
      assert.deepEqual(back.plan, JSON.parse(JSON.stringify(plan)));
      assert.deepEqual(back.assignment, assignment);
      assert.equal(back.search!['budget'], 123);
      writeFileSync(path, '{"format":"lowbit-plan","version":2}');
      assert.throws(() => loadPlanFile(path), /version 2/);
      writeFileSync(path, 'nope');
      assert.throws(() => loadPlanFile(path), /not a readable JSON plan/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("'static' quantizer with per-channel bits (channelBits)", () => {
  it('channel c: s_c = max|w_c|/(2^(b_c−1)−1), values s_c·clamp(round(w/s_c), ±(2^(b_c−1)−1))', () => {
    const w = new Tensor(Float32Array.from([0.9, -0.3, 0.2, 0.5, -1.4, 0.7, 0.1, 0.35, 0.6]), [3, 3]);
    const q = createQuantizer({ kind: 'static', bits: 4, signed: true, symmetric: true, granularity: 'channel', method: 'minmax', channelBits: [2, 3, 4] }, { role: 'weight', shape: [3, 3], channelAxis: 0 });
    const y = q.forward(w).data;
    const levels = [1, 3, 7];
    for (let c = 0; c < 3; c++) {
      const row = [...w.data.slice(c * 3, c * 3 + 3)];
      const s = Math.fround(Math.max(...row.map(Math.abs)) / levels[c]!);
      assert.ok(Math.abs((q as StaticQuantizer).scale.data[c]! - s) < 1e-7);
      row.forEach((v, k) => {
        const expected = s * Math.max(-levels[c]!, Math.min(levels[c]!, Math.round(v / s)));
        assert.ok(Math.abs(y[c * 3 + k]! - expected) < 1e-6, `w[${c},${k}] = ${v}: ${y[c * 3 + k]} vs ${expected}`);
      });
    }
    const exported = q.exportQuant();
    assert.equal(exported.type === 'affine' && exported.qparams.bits, 4);
  });
  it('with MSE scales (clipping) the integers still stay in each channel range; gradient is zero outside it', () => {
    const rng = new Rng(4);
    const w = new Tensor(new Float32Array(4 * 50).map(() => rng.normal()), [4, 50]).requiresGrad_();
    const q = createQuantizer({ kind: 'static', bits: 5, signed: true, symmetric: true, granularity: 'channel', method: 'mse', channelBits: [2, 5, 3, 2] }, { role: 'weight', shape: [4, 50], channelAxis: 0 }) as StaticQuantizer;
    const y = q.forward(w);
    const levels = [1, 15, 3, 1];
    for (let c = 0; c < 4; c++) {
      const s = q.scale.data[c]!;
      const ints = new Set<number>();
      for (let k = 0; k < 50; k++) ints.add(Math.round(y.data[c * 50 + k]! / s));
      assert.ok([...ints].every((v) => Math.abs(v) <= levels[c]!), `channel ${c}: ${[...ints]}`);
    }
    y.backward(new Tensor(new Float32Array(200).fill(1), [4, 50]));
    for (let k = 0; k < 50; k++) {
      const inside = Math.abs(w.data[k]!) <= q.scale.data[0]! * 1 + 1e-7;
      assert.equal(w.grad!.data[k], inside ? 1 : 0);
    }
  });
  it('rejects channelBits that do not fit the spec', () => {
    const ctx = { role: 'weight' as const, shape: [2, 3], channelAxis: 0 };
    assert.throws(() => createQuantizer({ kind: 'static', bits: 4, channelBits: [2, 3] }, ctx), /reach the container width/);
    assert.throws(() => createQuantizer({ kind: 'static', bits: 4, channelBits: [4] }, ctx), /one bit width per output channel/);
    assert.throws(() => createQuantizer({ kind: 'static', bits: 4, granularity: 'tensor', channelBits: [4, 4] }, ctx), /per-channel weights/);
  });
});

describe('evaluateAssignment', () => {
  it('PTQ and QAT evaluation leave the float model exactly as it was', () => {
    manualSeed(5);
    const model = lenet5();
    model.train();
    const before = [...model.stateDict()].map(([k, t]) => [k, t.data.slice()] as const);
    const x = images(16, 6);
    const y = labels(16, 7);
    const data = { calibration: [{ x }], eval: [{ x, y }], train: [{ x, y }] };
    const ptq = evaluateAssignmentSync(model, assignment, data, { method: 'ptq', calibrationSamples: 16 });
    const qat = evaluateAssignmentSync(model, assignment, data, { method: 'qat', qatSteps: 3, qatLr: 1e-2, calibrationSamples: 16 });
    assert.ok(ptq.accuracy >= 0 && ptq.accuracy <= 1 && Number.isFinite(ptq.loss));
    assert.notEqual(qat.loss, ptq.loss, 'fine-tuning changed the quantized model');
    assert.equal(model.training, true);
    assert.equal(quantizedLayers(model).length, 0);
    for (const [k, data] of before) assert.deepEqual(model.stateDict().get(k)!.data, data, k);
    // The same evaluation twice gives the same number (nothing leaks between candidates).
    assert.deepEqual(evaluateAssignmentSync(model, assignment, data, { method: 'ptq', calibrationSamples: 16 }), ptq);
  });
  it('quantizeAssignment leaves the quantized model for convert', () => {
    const model = lenet5();
    const x = images(8, 8);
    quantizeAssignment(model, assignment, { calibration: [{ x }], eval: [] }, { method: 'ptq' });
    assert.equal(quantizedLayers(model).length, 5);
  });
});
