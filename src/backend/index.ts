/**
 * Backend selection. The reference backend is always there; the native addon, when it built and
 * loads, becomes the default. `LOWBIT_BACKEND=reference|native` forces one; a forced native
 * backend that cannot load is an error, an unforced one falls back with a one-line warning on
 * stderr when the first kernel runs.
 */
import './reference/index.ts';
import { loadNative } from './native/index.ts';
import { noticeOnFirstKernel, setBackend } from './registry.ts';

export { availableBackends, getBackend, setBackend, profileOps, type BackendName, type OpProfile } from './registry.ts';
export type { DType, RawTensor, TypedArray, PrimitiveName } from './primitives.ts';
export { nativeInfo, setNativeThreads, fmaPeakGflops } from './native/index.ts';

/** Why the native backend is not in use, or null when it loaded. */
export let nativeUnavailableReason: string | null = null;

function chooseDefaultBackend(): void {
  const forced = process.env.LOWBIT_BACKEND;
  if (forced !== undefined && forced !== '' && forced !== 'reference' && forced !== 'native') {
    throw new Error(`LOWBIT_BACKEND must be 'reference' or 'native', got '${forced}'`);
  }
  if (forced === 'reference') {
    nativeUnavailableReason = 'LOWBIT_BACKEND=reference';
    return;
  }
  const loaded = loadNative();
  if (loaded.ok) {
    setBackend('native');
    return;
  }
  nativeUnavailableReason = loaded.reason;
  if (forced === 'native') throw new Error(`LOWBIT_BACKEND=native but the native addon did not load: ${loaded.reason}`);
  noticeOnFirstKernel(`lowbit: warning: native backend unavailable (${loaded.reason}); using the pure-TypeScript reference backend`);
}

chooseDefaultBackend();
