/** The browser entry carries every pure-TypeScript namespace of today's features (audit s11 #6). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as browser from '../src/browser.ts';

describe('browser entry namespaces', () => {
  it('has nn.delta, nn.prune, quant.subgroup, quant.irnn and quant.mqbench (no Node.js imports)', () => {
    assert.equal(typeof browser.nn.delta.DeltaLSTM, 'function');
    assert.equal(typeof browser.nn.prune.VariationalPruner, 'function');
    assert.equal(typeof browser.quant.subgroup.SubgroupLinear, 'function');
    assert.equal(typeof browser.quant.irnn.QuantLSTM, 'function');
    assert.equal(typeof browser.quant.mqbench.benchmarkQuantization, 'function');
  });
});
