import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as node from '../../index.ts';
import * as browser from '../../browser.ts';

describe('quant.rnn exports', () => {
  it('QatLSTM, QatEmbedding, prepareRnnQat and modelSize are on the Node and browser entries', () => {
    for (const entry of [node, browser]) {
      assert.equal(typeof entry.quant.rnn.QatLSTM, 'function');
      assert.equal(typeof entry.quant.rnn.QatEmbedding, 'function');
      assert.equal(typeof entry.quant.rnn.prepareRnnQat, 'function');
      assert.equal(typeof entry.quant.rnn.modelSize, 'function');
    }
  });
});
