/**
 * Backend selection. The reference backend is always there; the native addon, when it built and
 * loads, becomes the default. The wasm backend (WebAssembly SIMD128) is registered wherever the
 * engine validates a SIMD module; it is the default in a browser and selectable on Node.
 * `LOWBIT_BACKEND=reference|native|wasm` forces one; a forced native or wasm backend that cannot
 * load is an error, an unforced native one falls back with a one-line warning on stderr when the
 * first kernel runs. In a browser bundle (package.json "browser" field) the addon loader is a
 * stub: wasm runs when the browser has SIMD128, else the reference backend, without a notice.
 */
import './reference/index.ts';
import { loadNative } from './native/index.ts';
import { loadWasm } from './wasm/index.ts';
import { noticeOnFirstKernel, setBackend } from './registry.ts';

export { availableBackends, getBackend, setBackend, withBackend, profileOps, type BackendName, type OpProfile } from './registry.ts';
export type { DType, RawTensor, TypedArray, PrimitiveName } from './primitives.ts';
export { nativeInfo, setNativeThreads, fmaPeakGflops } from './native/index.ts';
export { wasmUnavailableReason, setWasmThreads, wasmThreadsInfo, type WasmThreadsInfo } from './wasm/index.ts';

/** Why the native backend is not in use, or null when it loaded. */
export let nativeUnavailableReason: string | null = null;

/** The process environment; empty in a browser. */
const env: Record<string, string | undefined> = typeof process !== 'undefined' && process.env ? process.env : {};

/** The environment variables lowbit reads (docs/guide.md), checked once: a typo is an error, not ignored. */
function checkEnvironment(): void {
  const check = (name: string, ok: (value: string) => boolean, expected: string) => {
    const value = env[name];
    if (value !== undefined && value !== '' && !ok(value)) throw new Error(`${name} must be ${expected}, got '${value}'`);
  };
  check('LOWBIT_BACKEND', (v) => v === 'reference' || v === 'native' || v === 'wasm', "'reference', 'native' or 'wasm'");
  check('LOWBIT_THREADS', (v) => /^[1-9][0-9]{0,2}$/.test(v) && Number(v) <= 256, 'an integer in [1, 256]');
  check('LOWBIT_ISA', (v) => ['avx512', 'avx2', 'avx2-novnni', 'scalar'].includes(v), "'avx512', 'avx2', 'avx2-novnni' or 'scalar'");
  for (const flag of ['LOWBIT_AMX', 'LOWBIT_MALLOC_TUNING', 'LOWBIT_DEBUG']) check(flag, (v) => v === '0' || v === '1', "'0' or '1'");
}

function chooseDefaultBackend(): void {
  checkEnvironment();
  const forced = env.LOWBIT_BACKEND;
  const wasm = loadWasm();
  if (forced === 'wasm') {
    if (!wasm.ok) throw new Error(`LOWBIT_BACKEND=wasm but the wasm backend is not available: ${wasm.reason}`);
    nativeUnavailableReason = 'LOWBIT_BACKEND=wasm';
    setBackend('wasm');
    return;
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
  if (typeof process === 'undefined') {
    // a browser: wasm when the engine has SIMD128, else the reference backend
    if (wasm.ok) setBackend('wasm');
    return;
  }
  if (forced === 'native') throw new Error(`LOWBIT_BACKEND=native but the native addon did not load: ${loaded.reason}`);
  noticeOnFirstKernel(`lowbit: warning: native backend unavailable (${loaded.reason}); using the pure-TypeScript reference backend`);
}

chooseDefaultBackend();
