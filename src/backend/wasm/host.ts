/**
 * Where the wasm backend's worker threads come from on Node.js: worker_threads workers running an
 * evaluated script, unref'd so that they never keep the process alive. The browser build uses
 * ./host.browser.ts instead (package.json "browser" field).
 * @internal
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** A started worker. */
export interface HostWorker {
  terminate(): void;
}

/** Why worker threads cannot be used here, or null. */
export function threadsUnavailableReason(): string | null {
  if (typeof SharedArrayBuffer !== 'function') return 'SharedArrayBuffer is not available';
  if (typeof Atomics !== 'object') return 'Atomics is not available';
  return null;
}

/** The default thread count before the cap: the cores this process may use. */
export function hostCores(): number {
  return availableParallelism();
}

/** LOWBIT_THREADS when set (checked by src/backend/index.ts), else null. */
export function threadsFromEnvironment(): number | null {
  const value = process.env.LOWBIT_THREADS;
  return value ? Number(value) : null;
}

/** Whether the calling thread may block in Atomics.wait (Node's main thread may). */
export const callerCanBlock = true;

/**
 * Starts a worker running `source` (a script that defines `startWorker(init)`) with `init`; an
 * error in it (a failed start: the worker then never reports ready) goes to `onError`. The worker
 * gets no execArgv (a parent's `--import tsx` or `--input-type=module` would slow or break it).
 */
export function spawnWorker(source: string, init: unknown, onError: (message: string) => void): HostWorker {
  const worker = new Worker(`${source}\nstartWorker(require('node:worker_threads').workerData);`, { eval: true, workerData: init, execArgv: [] });
  worker.unref();
  worker.on('error', (e: unknown) => onError(e instanceof Error ? e.message : String(e)));
  return { terminate: () => void worker.terminate() };
}
