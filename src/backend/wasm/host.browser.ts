/**
 * The browser build's ./host.ts (package.json "browser" field): Web Workers made from a Blob URL,
 * usable only when the page is cross-origin isolated (COOP + COEP headers), because the wasm
 * memory the workers share is a SharedArrayBuffer.
 * @internal
 */

export interface HostWorker {
  terminate(): void;
}

interface BrowserGlobals {
  crossOriginIsolated?: boolean;
  Worker?: new (url: string) => { postMessage(message: unknown): void; terminate(): void; onerror: ((e: { message?: string }) => void) | null };
  Blob?: new (parts: string[], options: { type: string }) => object;
  URL?: { createObjectURL(blob: object): string };
  navigator?: { hardwareConcurrency?: number };
  WorkerGlobalScope?: unknown;
}

const g = globalThis as BrowserGlobals;

export function threadsUnavailableReason(): string | null {
  if (typeof SharedArrayBuffer !== 'function' || g.crossOriginIsolated !== true) {
    return 'the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp), so SharedArrayBuffer is not available';
  }
  if (typeof g.Worker !== 'function' || typeof g.Blob !== 'function' || !g.URL) return 'Web Workers are not available';
  return null;
}

export function hostCores(): number {
  return g.navigator?.hardwareConcurrency ?? 1;
}

/** No environment in a browser. */
export function threadsFromEnvironment(): number | null {
  return null;
}

/**
 * A browser's main thread may not block in Atomics.wait: it spins on Atomics.load while the
 * workers finish their part of a kernel (milliseconds). A worker may block.
 */
export const callerCanBlock = g.WorkerGlobalScope !== undefined;

export function spawnWorker(source: string, init: unknown, onError: (message: string) => void): HostWorker {
  const url = g.URL!.createObjectURL(new g.Blob!([`${source}\nself.onmessage = (e) => startWorker(e.data);`], { type: 'text/javascript' }));
  const worker = new g.Worker!(url);
  worker.onerror = (e: { message?: string }) => onError(e.message ?? 'worker error');
  worker.postMessage(init);
  // the URL is not revoked: a worker may fetch its script after this returns
  return { terminate: () => worker.terminate() };
}
