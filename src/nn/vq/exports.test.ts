import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as node from '../../index.ts';
import * as browser from '../../browser.ts';

describe('nn.vq exports', () => {
  it('the Node and browser entries expose nn.vq (pure TypeScript)', () => {
    for (const lowbit of [node, browser]) {
      assert.equal(typeof lowbit.nn.vq.VQLSTM, 'function');
      assert.equal(typeof lowbit.nn.vq.VectorQuantizer, 'function');
      assert.equal(typeof lowbit.nn.vq.VqLstmPredictor, 'function');
      assert.equal(typeof lowbit.nn.vq.beamLattice, 'function');
      assert.equal(typeof lowbit.nn.vq.oracleErrors, 'function');
      assert.equal(lowbit.nn.vq.START_CODE, -1);
    }
  });
});
