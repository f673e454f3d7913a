/** benchmarkQuantization refuses empty training / test sets before training (audit s11 #5). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Flatten, Linear, Sequential } from '../../nn/index.ts';
import { createDataset, type Dataset } from '../../data/dataset.ts';
import { MqbenchError } from './backends.ts';
import { benchmarkQuantization, runCell } from './runner.ts';

function blank(n: number): Dataset {
  return createDataset({ name: 'blank', images: new Float32Array(n * 4).fill(0.5), labels: new Int32Array(n), sampleShape: [1, 2, 2], numClasses: 2, classNames: ['a', 'b'] });
}

describe('mqbench: empty data', () => {
  const base = { createModel: () => new Sequential(new Flatten(), new Linear(4, 3), new Linear(3, 2)), algorithms: ['lsq'], backends: ['academic'], bits: [4], progress: false };
  it('benchmarkQuantization throws MqbenchError naming the empty set', () => {
    assert.throws(() => benchmarkQuantization({ ...base, train: blank(0), test: blank(4) }), (e: unknown) => e instanceof MqbenchError && /train.*no samples/.test(e.message));
    assert.throws(() => benchmarkQuantization({ ...base, train: blank(4), test: blank(0) }), (e: unknown) => e instanceof MqbenchError && /test.*no samples/.test(e.message));
  });
  it('runCell reports an error cell instead of an untrained "ok" one', () => {
    const cell = runCell({ ...base, train: blank(0), test: blank(4) }, 'lsq', 'academic', 4);
    assert.equal(cell.status, 'error');
    assert.match(cell.reason ?? '', /train.*no samples/);
  });
});
