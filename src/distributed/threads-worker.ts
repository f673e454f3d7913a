/**
 * @internal Entry of one worker thread of `fitDataParallelThreads`: builds its replica from the
 * factory named in workerData, holds its DataParallel rank (DGC state included) and answers the
 * parent's step / weights requests. Every failure is posted to the parent as an `error` reply; the
 * parent aborts the collectives of the others and terminates every worker.
 */
import { parentPort, workerData } from 'node:worker_threads';
import '../backend/index.ts';
import { setBackend } from '../backend/registry.ts';
import { manualSeed } from '../tensor/random.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { TensorModule } from '../nn/module.ts';
import { SharedMemoryCommunicator } from './shared-communicator.ts';
import { DataParallel } from './data-parallel.ts';
import type { WorkerInit, WorkerReply, WorkerRequest } from './threads-protocol.ts';

const port = parentPort;
if (port === null) throw new Error('threads-worker.ts runs as a worker thread of fitDataParallelThreads only');
const init = workerData as WorkerInit;

function replyError(error: unknown): void {
  const e = error instanceof Error ? error : new Error(String(error));
  port!.postMessage({ type: 'error', name: e.name, message: e.message, stack: e.stack ?? '' } satisfies WorkerReply);
}

async function buildModel(): Promise<TensorModule> {
  const { module, export: name, args } = init.factory;
  const loaded: Record<string, unknown> = await import(module);
  const factory = loaded[name];
  if (typeof factory !== 'function') throw new TypeError(`the module '${module}' has no function export '${name}'`);
  const model: unknown = factory(...(args ?? []));
  if (typeof model !== 'object' || model === null || typeof (model as Partial<TensorModule>).namedParameters !== 'function') {
    throw new TypeError(`${name}(...) from '${module}' did not return a module`);
  }
  return model as TensorModule;
}

async function setUp(): Promise<DataParallel> {
  setBackend(init.backend);
  const model = await buildModel();
  const theirs = model.namedParameters();
  const same = theirs.length === init.parameters.length && theirs.every(([name, p], i) => name === init.parameters[i]!.name && p.shape.join() === init.parameters[i]!.shape.join());
  if (!same) throw new Error(`the replica built by ${init.factory.export}() does not have the model's parameters (names and shapes must match)`);
  model.loadStateDict(new Map(init.state.map((entry) => [entry.name, new Tensor(entry.data, entry.shape)])));
  if (init.seed !== undefined) manualSeed(init.seed);
  const communicator = new SharedMemoryCommunicator(init.memory, init.rank);
  return new DataParallel(model, { ...init.options, workers: init.memory.size, replica: () => model, communicator, localRank: init.rank });
}

const ready = setUp();
ready.then(
  () => port.postMessage({ type: 'ready' } satisfies WorkerReply),
  (error: unknown) => replyError(error),
);

port.on('message', (request: WorkerRequest) => {
  ready
    .then(async (trainer) => {
      if (request.type === 'step') {
        trainer.lr = request.lr;
        const shard = request.x && request.y ? { x: new Tensor(request.x.data, request.x.shape), y: new Tensor(request.y.data, request.y.shape) } : null;
        const result = await trainer.stepShard(shard, request.total);
        const stats = trainer.trafficStats();
        port.postMessage({ type: 'step', result, bytesSent: stats.bytesSent[init.rank]!, collectives: stats.collectives } satisfies WorkerReply);
        return;
      }
      const params = trainer.replicas[0]!.parameters().map((p) => Float32Array.from(p.data));
      port.postMessage({ type: 'weights', params } satisfies WorkerReply, params.map((p) => p.buffer));
    })
    .catch(replyError);
});
