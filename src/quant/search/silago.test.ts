import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  costModel, DEFAULT_SILAGO_ENERGY_PER_CYCLE, siLagoCost, siLagoEnergyCost, siLagoLanes, siLagoMode, sizeCost, totalCost, uniformAssignment,
} from './costs.ts';
import type { LayerInfo } from './types.ts';

const proj: LayerInfo = { name: 'sru.layer0.proj', type: 'Linear', weightCount: 512 * 28, outChannels: 512, macs: 28 * 512 * 28, inShape: [28, 28], outShape: [28, 512], reduction: 28 };
const head: LayerInfo = { name: 'head', type: 'Linear', weightCount: 10 * 128, outChannels: 10, macs: 1280, inShape: [128], outShape: [10], reduction: 128 };

describe('SiLago-like cost model', () => {
  it('mode: the narrowest of 4/8/16 bits holding both operands; wider than 16 is refused', () => {
    const cases: [number, number, number][] = [[2, 2, 4], [2, 4, 4], [4, 4, 4], [3, 8, 8], [5, 4, 8], [8, 8, 8], [16, 8, 16], [9, 16, 16], [2, 16, 16]];
    for (const [w, a, mode] of cases) assert.equal(siLagoMode(w, a), mode, `w=${w} a=${a}`);
    assert.deepEqual([16, 8, 4].map((m) => siLagoLanes(m as 16 | 8 | 4)), [1, 2, 4]);
    assert.throws(() => siLagoMode(32, 8), /at most 16 bits, got w=32 a=8/);
    assert.throws(() => siLagoMode(0, 8), /integers in \[1, 32\]/);
  });

  it('cycles = macs / (units · lanes), by hand', () => {
    const layer: LayerInfo = { ...head, macs: 1200 };
    const cost = siLagoCost({ macUnits: 2 });
    assert.equal(cost.name, 'silago');
    assert.equal(cost.unit, 'cycles');
    assert.equal(cost.layerCost(layer, 16, 16), 600);
    assert.equal(cost.layerCost(layer, 8, 16), 600);
    assert.equal(cost.layerCost(layer, 8, 8), 300);
    assert.equal(cost.layerCost(layer, 4, 8), 300);
    assert.equal(cost.layerCost(layer, 4, 4), 150);
    assert.equal(cost.layerCost(layer, 2, 4), 150);
  });

  it('speedup of uniform W4A4 over W16A16 is 4 whatever the unit count; mixed assignments add per layer', () => {
    const layers = [proj, head];
    for (const units of [1, 16, 64]) {
      const cost = siLagoCost({ macUnits: units });
      const ratio = totalCost(cost, layers, uniformAssignment(layers, 16, 16)) / totalCost(cost, layers, uniformAssignment(layers, 4, 4));
      assert.ok(Math.abs(ratio - 4) < 1e-12);
    }
    const cost = siLagoCost();
    const mixed = totalCost(cost, layers, { [proj.name]: { w: 2, a: 8 }, [head.name]: { w: 16, a: 16 } });
    assert.equal(mixed, proj.macs / (16 * 2) + head.macs / 16);
  });

  it('energy = macs · energyPerCycle[mode] / lanes (defaults 1, 1.15, 1.3 per unit-cycle), constants overridable', () => {
    const layer: LayerInfo = { ...head, macs: 1000 };
    const e = siLagoEnergyCost();
    assert.equal(e.unit, 'E16');
    assert.deepEqual({ ...DEFAULT_SILAGO_ENERGY_PER_CYCLE }, { 4: 1.3, 8: 1.15, 16: 1 });
    assert.ok(Math.abs(e.layerCost(layer, 16, 16) - 1000) < 1e-9);
    assert.ok(Math.abs(e.layerCost(layer, 8, 8) - 575) < 1e-9);
    assert.ok(Math.abs(e.layerCost(layer, 4, 4) - 325) < 1e-9);
    assert.ok(Math.abs(e.layerCost(layer, 2, 16) - 1000) < 1e-9);
    const flat = siLagoEnergyCost({ energyPerCycle: { 16: 2, 8: 2, 4: 2 } });
    assert.ok(Math.abs(flat.layerCost(layer, 4, 4) - 500) < 1e-9);
    // The largest energy saving (all 4-bit) is below the largest speedup's 1 − 1/4 under the defaults.
    const layers = [proj, head];
    const saving = 1 - totalCost(e, layers, uniformAssignment(layers, 4, 4)) / totalCost(e, layers, uniformAssignment(layers, 16, 16));
    assert.ok(Math.abs(saving - 0.675) < 1e-12);
  });

  it('refuses bad options, naming them', () => {
    assert.throws(() => siLagoCost({ macUnits: 0 }), /macUnits must be a positive integer, got 0/);
    assert.throws(() => siLagoEnergyCost({ energyPerCycle: { 16: 1, 8: -1, 4: 1 } }), /energyPerCycle\[8\] must be a finite number > 0, got -1/);
    // Size is unaffected by the datapath: W2 stores 2 bits even though it multiplies in 4-bit mode.
    assert.equal(sizeCost().layerCost(proj, 2, 8), proj.weightCount * 2);
  });

  it('costModel knows them by name (the CLI budgets silago=… and silagoEnergy=…), options passed through', () => {
    const layer: LayerInfo = { ...head, macs: 1200 };
    assert.equal(costModel('silago', { siLago: { macUnits: 2 } }).layerCost(layer, 4, 4), siLagoCost({ macUnits: 2 }).layerCost(layer, 4, 4));
    assert.equal(costModel('silago').layerCost(layer, 8, 8), 1200 / (16 * 2));
    assert.equal(costModel('silagoEnergy').layerCost(layer, 8, 8), siLagoEnergyCost().layerCost(layer, 8, 8));
    assert.equal(costModel('silagoEnergy').name, 'silagoEnergy');
  });
});
