/** Data-parallel training for Node.js: everything in index.ts plus the worker-thread trainer (node:worker_threads). */
export * from './index.ts';
export { fitDataParallelThreads, ThreadedDataParallel, WorkerThreadError, type FitDataParallelThreadsOptions, type ModelFactorySpec, type ThreadedDataParallelOptions } from './threads.ts';
