import { availableBackends, getBackend, setBackend, type BackendName } from '../backend/index.ts';
import { loadNative, nativeInfo } from '../backend/native/index.ts';
import { loadWasm, WASM_OPS, wasmThreadsInfo } from '../backend/wasm/index.ts';
import { intKernelsBackend } from '../runtime/kernels/index.ts';

/** Values of the commands' `--backend` option. */
export const BACKEND_CHOICES: readonly BackendName[] = ['reference', 'native', 'wasm'];

/** What the CLI reports about the compute backends. */
export interface BackendDetails {
  available: string[];
  active: string;
  /** Worker threads of the active backend (the reference backend runs on the main thread). */
  threads: number;
  /** Native addon only: instruction set in use and CPU features detected. */
  isa?: string;
  cpuFeatures?: string[];
  /** Native addon only: integer kernel paths (int8 GEMM, binary GEMM, and 'amx-int8' or why AMX is off). */
  intKernels?: { int8: string; binary: string; amx: string };
  /** Why the native addon is not available, when it is not. */
  nativeUnavailable?: string;
  /**
   * The ops the wasm backend (WebAssembly SIMD128) runs itself and its threads (how many it will
   * use; why only one when more were asked for), or why it is not available.
   */
  wasm: { ops: string[]; threads: number; singleThreadReason?: string } | { unavailable: string };
}

/**
 * Switches to `name`, loading the native addon if needed. Without a name the library's default
 * stays (native when the addon loads, or what `LOWBIT_BACKEND` forces; see backend/index.ts).
 * Throws a one-line error when native is asked for and cannot load.
 */
export function useBackend(name: BackendName | undefined): void {
  if (name === undefined) return;
  if (name === 'native' || name === 'wasm') {
    const loaded = name === 'native' ? loadNative() : loadWasm();
    if (!loaded.ok) throw new Error(`backend '${name}' is not available: ${loaded.reason}`);
  }
  setBackend(name);
}

export function backendDetails(): BackendDetails {
  const loaded = loadNative();
  const active = getBackend();
  const wasm = loadWasm();
  const wasmThreads = wasmThreadsInfo();
  const usable = wasmThreads.reason === null ? wasmThreads.requested : 1;
  const details: BackendDetails = {
    available: availableBackends(), active, threads: active === 'wasm' ? usable : 1,
    wasm: wasm.ok ? { ops: [...WASM_OPS], threads: usable, ...(wasmThreads.reason === null ? {} : { singleThreadReason: wasmThreads.reason }) } : { unavailable: wasm.reason },
  };
  if (loaded.ok) {
    const info = nativeInfo();
    if (info) {
      details.cpuFeatures = info.features;
      details.intKernels = intKernelsBackend();
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

/** `native (avx512, 2 threads)` / `reference (1 thread)` / `wasm (simd128, 1 thread)`. */
export function describeBackend(details: BackendDetails = backendDetails()): string {
  const isa = details.active === 'wasm' ? 'simd128' : details.isa;
  const parts = [isa, `${details.threads} thread${details.threads === 1 ? '' : 's'}`].filter((p) => p !== undefined);
  return `${details.active} (${parts.join(', ')})`;
}
