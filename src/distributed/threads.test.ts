import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed } from '../tensor/index.ts';
import { DataLoader } from '../data/index.ts';
import { rowClassDataset } from '../data/testing.ts';
import type { TensorModule } from '../nn/module.ts';
import { TrainingDivergedError, type Batch } from '../train/fit.ts';
import { DataParallel, type DataParallelOptions } from './data-parallel.ts';
import { fitDataParallel } from './fit-data-parallel.ts';
import { fitDataParallelThreads, ThreadedDataParallel, WorkerThreadError, type ModelFactorySpec } from './threads.ts';
import { tinyMlp } from './threads.fixture.ts';

const fixture = new URL('./threads.fixture.ts', import.meta.url).href;
const tiny: ModelFactorySpec = { module: fixture, export: 'tinyMlp' };

function model(seed: number): TensorModule {
  manualSeed(seed);
  return tinyMlp();
}

function batches(n: number, batchSize: number, seed: number): Batch[] {
  return [...new DataLoader(rowClassDataset(n, seed, 0.5), { batchSize, shuffle: true, seed })];
}

function weights(m: TensorModule): Float32Array[] {
  return m.parameters().map((p) => Float32Array.from(p.data));
}

type Shared = Omit<DataParallelOptions, 'replica' | 'communicator' | 'localRank'>;

/** k steps in process and on threads from the same weights; both sides' weights, losses and bytes. */
async function both(options: Shared, steps: Batch[]) {
  const inProcess = new DataParallel(model(5), { ...options, replica: tinyMlp });
  const processLosses: number[] = [];
  const processBytes: number[] = [];
  for (const b of steps) {
    const r = await inProcess.step(b);
    processLosses.push(r.loss);
    processBytes.push(r.bytesSent);
  }
  const threaded = await ThreadedDataParallel.create(model(5), { ...options, replica: tiny });
  try {
    const threadLosses: number[] = [];
    const threadBytes: number[] = [];
    for (const b of steps) {
      const r = await threaded.step(b);
      threadLosses.push(r.loss);
      threadBytes.push(r.bytesSent);
    }
    return {
      inProcess: { replicas: inProcess.replicas.map(weights), losses: processLosses, bytes: processBytes, stats: inProcess.trafficStats() },
      threads: { replicas: await threaded.replicaWeights(), losses: threadLosses, bytes: threadBytes, stats: threaded.trafficStats() },
    };
  } finally {
    await threaded.close();
  }
}

describe('ThreadedDataParallel (worker_threads)', () => {
  it('dense exchange, 3 threads on uneven shards: every replica bit-identical to the in-process run, same losses and bytes', async () => {
    const steps = batches(40, 10, 1).slice(0, 4); // 10 rows over 3 ranks: 3, 3, 4
    const r = await both({ workers: 3, lr: 0.2, momentum: 0.9, weightDecay: 1e-3 }, steps);
    assert.deepEqual(r.threads.replicas, r.inProcess.replicas);
    assert.deepEqual(r.threads.losses, r.inProcess.losses);
    assert.deepEqual(r.threads.bytes, r.inProcess.bytes);
    assert.deepEqual(r.threads.stats, r.inProcess.stats);
    // The run moved the weights (not comparing two untouched copies) and each step sent 3 dense gradients.
    assert.notDeepEqual(r.threads.replicas[0], weights(model(5)));
    const params = weights(model(5)).reduce((n, p) => n + p.length, 0);
    assert.deepEqual(r.threads.bytes, steps.map(() => 3 * 4 * params));
  });

  it('DGC with clipping: bit-identical weights, losses and byte counts, sparse messages smaller than dense', async () => {
    const steps = batches(48, 8, 2).slice(0, 6);
    const options: Shared = { workers: 2, lr: 0.1, momentum: 0.9, compressor: 'dgc', clipNorm: 1, dgc: { sparsity: 0.9, warmupStageEpochs: 1, minCompressSize: 16 }, seed: 3 };
    const r = await both(options, steps);
    assert.deepEqual(r.threads.replicas, r.inProcess.replicas);
    assert.deepEqual(r.threads.losses, r.inProcess.losses);
    assert.deepEqual(r.threads.bytes, r.inProcess.bytes);
    assert.deepEqual(r.threads.stats, r.inProcess.stats);
    // Per worker: 15 dense biases (60 B) + 8 B per (index, value) of the 192- and 36-weight tensors:
    // step 1 at the warm-up's 75 % sends 48 + 9 entries, later steps at 90 % send 20 + 4.
    assert.deepEqual(r.threads.bytes, [2 * (60 + 8 * 57), ...steps.slice(1).map(() => 2 * (60 + 8 * 24))]);
  });

  it('W = 1 equals the in-process single worker', async () => {
    const r = await both({ workers: 1, lr: 0.3, momentum: 0.5 }, batches(16, 8, 4));
    assert.deepEqual(r.threads.replicas, r.inProcess.replicas);
    assert.deepEqual(r.threads.losses, r.inProcess.losses);
  });

  it('fitDataParallelThreads: the same history as fitDataParallel, model holds rank 0, per-epoch log', async () => {
    // A fresh loader per run: a shuffling loader's order depends on how many passes it has made.
    const loader = () => new DataLoader(rowClassDataset(32, 6, 0.5), { batchSize: 8, shuffle: true, seed: 6 });
    const testLoader = new DataLoader(rowClassDataset(12, 7, 0.5), { batchSize: 12 });
    const common = { workers: 2, lr: 0.2, momentum: 0.9, epochs: 2, testLoader, progress: false } as const;
    const reference = model(8);
    const expected = await fitDataParallel(reference, { ...common, trainLoader: loader(), replica: tinyMlp });
    const lines: string[] = [];
    const threaded = model(8);
    const history = await fitDataParallelThreads(threaded, { ...common, trainLoader: loader(), replica: tiny, log: (line) => lines.push(line) });
    assert.deepEqual(weights(threaded), weights(reference));
    assert.deepEqual(history.stepLosses, expected.stepLosses);
    assert.deepEqual(history.traffic, expected.traffic);
    assert.deepEqual(history.epochs.map((e) => [e.testAccuracy, e.testLoss, e.trainLoss]), expected.epochs.map((e) => [e.testAccuracy, e.testLoss, e.trainLoss]));
    assert.equal(history.maxReplicaDifference, 0);
    assert.equal(lines.length, 2);
    assert.match(lines[1]!, /^epoch 2\/2 .* 2 workers/);
  });

  it('a worker whose forward throws rejects the step naming the rank, and every worker is terminated', async () => {
    const trainer = await ThreadedDataParallel.create(model(1), { workers: 3, lr: 0.1, replica: { module: fixture, export: 'failingMlp', args: [1, 2] } });
    const steps = batches(24, 12, 1);
    await trainer.step(steps[0]!);
    const exits = collectExits(trainer);
    await assert.rejects(trainer.step(steps[1]!), (e: unknown) => e instanceof WorkerThreadError && e.rank === 1 && /rank 1: Error: injected failure in forward call 2/.test(e.message));
    await trainer.close();
    assert.deepEqual((await exits).length, 3);
    await assert.rejects(trainer.step(steps[0]!), WorkerThreadError);
  });

  it('fitDataParallelThreads stops on a non-finite loss as fitDataParallel does, and terminates the workers', async () => {
    const loader = new DataLoader(rowClassDataset(16, 1, 0.5), { batchSize: 8 });
    await assert.rejects(fitDataParallelThreads(model(1), { workers: 2, lr: 1e30, momentum: 0.9, epochs: 3, trainLoader: loader, replica: tiny, progress: false }), TrainingDivergedError);
  });

  it('refuses bad options, a factory that is not a model, and a replica spec that is a closure', async () => {
    const m = model(0);
    await assert.rejects(ThreadedDataParallel.create(m, { workers: 0, lr: 0.1, replica: tiny }), /workers must be a positive integer, got 0/);
    await assert.rejects(ThreadedDataParallel.create(m, { workers: 2, lr: -1, replica: tiny }), /lr must be a finite number >= 0/);
    // @ts-expect-error -- a closure where a module spec belongs, as plain JavaScript could pass
    await assert.rejects(ThreadedDataParallel.create(m, { workers: 2, lr: 0.1, replica: tinyMlp }), /a closure cannot cross threads/);
    await assert.rejects(ThreadedDataParallel.create(m, { workers: 2, lr: 0.1, replica: tiny, kernelThreads: 0 }), /kernelThreads must be an integer in \[1, 256\]/);
    await assert.rejects(ThreadedDataParallel.create(m, { workers: 2, lr: 0.1, replica: { module: fixture, export: 'notAModel' } }), (e: unknown) => e instanceof WorkerThreadError && /rank \d: TypeError: notAModel\(\.\.\.\) .* did not return a module/.test(e.message));
    await assert.rejects(ThreadedDataParallel.create(m, { workers: 2, lr: 0.1, replica: { module: fixture, export: 'missing' } }), /has no function export 'missing'/);
    // The workers' DataParallel checks the rest (momentum range, ...) and the rank is named.
    await assert.rejects(ThreadedDataParallel.create(m, { workers: 2, lr: 0.1, momentum: 1.5, replica: tiny }), /rank \d: RangeError: DataParallel: momentum must be in \[0, 1\)/);
    await assert.rejects(fitDataParallelThreads(m, { workers: 2, lr: 0.1, replica: tiny, epochs: -1, trainLoader: [] }), /epochs must be a non-negative integer/);
  });
});

/** Resolves with the exit codes once all of the trainer's threads have exited. */
function collectExits(trainer: ThreadedDataParallel): Promise<number[]> {
  return Promise.all(trainer.workerThreads.map((t) => new Promise<number>((resolve) => t.once('exit', resolve))));
}
