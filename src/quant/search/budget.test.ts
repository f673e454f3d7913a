import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetError, costDisplay, parseBudget } from './budget.ts';

describe('parseBudget', () => {
  it('converts units to the cost model unit', () => {
    assert.deepEqual(parseBudget('size=40KB'), { cost: 'size', value: 320_000, text: 'size=40KB' });
    assert.equal(parseBudget('size=40kB').value, 320_000);
    assert.equal(parseBudget('size=1KiB').value, 8192);
    assert.equal(parseBudget('size=1.5MiB').value, 1.5 * 8 * 1024 * 1024);
    assert.equal(parseBudget('size=1000bits').value, 1000);
    assert.equal(parseBudget('size=100B').value, 800);
    assert.equal(parseBudget('bitops=1.2G').value, 1.2e9);
    assert.equal(parseBudget('bitops=350000').value, 350_000);
    assert.equal(parseBudget('bitops=2e8').value, 2e8);
    assert.equal(parseBudget('latency=2ms').value, 2000);
    assert.equal(parseBudget('latency=150us').value, 150);
    assert.equal(parseBudget('latency=150µs').value, 150);
    assert.equal(parseBudget('energy=5uJ').value, 5e6);
    assert.equal(parseBudget('bitserial=20k').value, 20_000);
    assert.deepEqual(parseBudget('silago=20k'), { cost: 'silago', value: 20_000, text: 'silago=20k' });
    assert.equal(parseBudget('silagoEnergy=1.5M').value, 1.5e6);
    assert.equal(parseBudget(' size = 40KB ').text, 'size = 40KB');
  });

  it('rejects bad budgets with the accepted form in the message', () => {
    assert.throws(() => parseBudget('size=40'), (e: Error) => e instanceof BudgetError && /needs a unit.*KB/.test(e.message));
    assert.throws(() => parseBudget('latency=2'), /needs a unit: latency=2ms/);
    assert.throws(() => parseBudget('flops=3G'), /unknown budget cost 'flops'.*size, bitops, latency/);
    assert.throws(() => parseBudget('size=40XB'), /unknown unit 'XB' for a size budget/);
    assert.throws(() => parseBudget('bitops=1.2Q'), /unknown unit 'Q'/);
    assert.throws(() => parseBudget('size40KB'), /reads <cost>=<number><unit>/);
    assert.throws(() => parseBudget('size=-4KB'), /reads <cost>=/);
    assert.throws(() => parseBudget('size=0KB'), /positive/);
  });

  it('costDisplay shows size in bytes, latency in seconds, energy in joules', () => {
    assert.deepEqual(costDisplay('size', 'bits'), { label: 'model size (weights)', unit: 'B', scale: 1 / 8 });
    assert.equal(costDisplay('latency', 'µs').scale, 1e-6);
    assert.equal(costDisplay('energy', 'pJ').scale, 1e-12);
    assert.equal(costDisplay('bitops', 'bitops').scale, 1);
    assert.equal(costDisplay('silago', 'cycles').unit, 'cycles');
    assert.equal(costDisplay('silagoEnergy', 'E16').unit, 'E16');
  });
});
