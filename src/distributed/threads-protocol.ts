/**
 * @internal Messages between `fitDataParallelThreads` (the parent) and its worker threads.
 */
import type { BackendName } from '../backend/registry.ts';
import type { TypedArray } from '../backend/primitives.ts';
import type { DataParallelOptions } from './data-parallel.ts';
import type { DgcOptions } from './dgc.ts';
import type { ShardStepResult } from './data-parallel.ts';
import type { SharedCommunicatorMemory } from './shared-communicator.ts';

/**
 * Where a worker thread finds the model: `import(module)[export](...args)` must return a fresh model
 * of the architecture being trained (the worker then loads the parent model's weights into it).
 * `module` is an import specifier the worker can resolve, best an absolute URL
 * (`import.meta.resolve('./my-model.ts')`, `new URL(...).href`); `args` must be structured-cloneable.
 */
export interface ModelFactorySpec {
  readonly module: string;
  readonly export: string;
  readonly args?: readonly unknown[];
}

/** The DataParallel settings a worker needs (everything but the replica factory and communicator). */
export type WorkerTrainerOptions = Pick<DataParallelOptions, 'lr' | 'momentum' | 'weightDecay' | 'compressor' | 'clipNorm' | 'dgc' | 'stepsPerEpoch' | 'seed'>;

/** A tensor as it crosses the thread boundary. */
export interface TensorPayload {
  readonly data: TypedArray;
  readonly shape: readonly number[];
}

export interface WorkerInit {
  readonly rank: number;
  readonly memory: SharedCommunicatorMemory;
  readonly backend: BackendName;
  readonly factory: ModelFactorySpec;
  readonly parameters: readonly { name: string; shape: readonly number[] }[];
  readonly state: readonly (TensorPayload & { name: string })[];
  readonly options: WorkerTrainerOptions;
  /** manualSeed in the worker before the first step (dropout draws are per thread). */
  readonly seed?: number;
}

export type WorkerRequest =
  | { readonly type: 'step'; readonly lr: number; readonly total: number; readonly x: TensorPayload | null; readonly y: TensorPayload | null }
  | { readonly type: 'weights' };

export type WorkerReply =
  | { readonly type: 'ready' }
  | { readonly type: 'step'; readonly result: ShardStepResult; readonly bytesSent: number; readonly collectives: number }
  | { readonly type: 'weights'; readonly params: Float32Array[] }
  | { readonly type: 'error'; readonly name: string; readonly message: string; readonly stack: string };
