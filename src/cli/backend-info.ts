import { availableBackends, getBackend, setBackend, type BackendName } from '../backend/index.ts';
import { loadNative, nativeInfo } from '../backend/native/index.ts';

/** Values of the commands' `--backend` option. */
export const BACKEND_CHOICES: readonly BackendName[] = ['reference', 'native'];

/** What the CLI reports about the compute backends. */
export interface BackendDetails {
  available: string[];
  active: string;
  /** Worker threads of the active backend (the reference backend runs on the main thread). */
  threads: number;
  /** Native addon only: instruction set in use and CPU features detected. */
  isa?: string;
  cpuFeatures?: string[];
  /** Why the native addon is not available, when it is not. */
  nativeUnavailable?: string;
}

/**
 * Switches to `name`, loading the native addon if needed. Without a name: `LOWBIT_BACKEND` if
 * set, else native when the addon loads, else reference (the design's default). Throws a
 * one-line error when native is asked for and cannot load.
 */
export function useBackend(name: BackendName | undefined): void {
  const fromEnv = process.env.LOWBIT_BACKEND;
  if (name === undefined && fromEnv) {
    if (!(BACKEND_CHOICES as readonly string[]).includes(fromEnv)) {
      throw new Error(`LOWBIT_BACKEND must be one of ${BACKEND_CHOICES.join(', ')}, got '${fromEnv}'`);
    }
    name = fromEnv as BackendName;
  }
  if (name === 'native' || name === undefined) {
    const loaded = loadNative();
    if (!loaded.ok && name === 'native') throw new Error(`backend 'native' is not available: ${loaded.reason}`);
    name ??= loaded.ok ? 'native' : 'reference';
  }
  setBackend(name);
}

export function backendDetails(): BackendDetails {
  const loaded = loadNative();
  const active = getBackend();
  const details: BackendDetails = { available: availableBackends(), active, threads: 1 };
  if (loaded.ok) {
    const info = nativeInfo();
    if (info) {
      details.cpuFeatures = info.features;
      if (active === 'native') {
        details.threads = info.threads;
        details.isa = info.isa;
      }
    }
  } else {
    details.nativeUnavailable = loaded.reason;
  }
  return details;
}

/** `native (avx512, 2 threads)` / `reference (1 thread)`. */
export function describeBackend(details: BackendDetails = backendDetails()): string {
  const parts = [details.isa, `${details.threads} thread${details.threads === 1 ? '' : 's'}`].filter((p) => p !== undefined);
  return `${details.active} (${parts.join(', ')})`;
}
