import type { Kernel, PrimitiveAttrs, PrimitiveName, RawTensor } from './primitives.ts';

/** Name of a backend: `reference` (pure TS, every primitive), `native` (C++ addon) or `wasm` (WebAssembly SIMD128). */
export type BackendName = 'reference' | 'native' | 'wasm';

const kernels = new Map<string, Kernel>();
let current: BackendName = 'reference';
const available = new Set<BackendName>(['reference']);

/** Registers the kernel of `op` on `backend`; registering the same pair twice throws. */
export function registerKernel<P extends PrimitiveName>(backend: BackendName, op: P, kernel: Kernel<P>): void {
  const key = `${backend}/${op}`;
  if (kernels.has(key)) throw new Error(`kernel ${key} is already registered`);
  kernels.set(key, kernel as Kernel);
  available.add(backend);
}

export function hasKernel(backend: BackendName, op: PrimitiveName): boolean {
  return kernels.has(`${backend}/${op}`);
}

/** Makes `name` the backend every following op runs on. */
export function setBackend(name: BackendName): void {
  if (!available.has(name)) throw new Error(`backend '${name}' is not available (have: ${[...available].join(', ')})`);
  current = name;
}

export function getBackend(): BackendName {
  return current;
}

/** Runs `fn` with backend `name` selected, then restores the previous backend (also on throw). */
export function withBackend<T>(name: BackendName, fn: () => T): T {
  const previous = current;
  setBackend(name);
  try {
    return fn();
  } finally {
    current = previous;
  }
}

export function availableBackends(): BackendName[] {
  return [...available];
}

/**
 * Runs `op` on the current backend. A backend without that kernel, or whose kernel declines the
 * inputs (e.g. float64 on native), falls back to the reference kernel.
 */
export function runKernel<P extends PrimitiveName>(op: P, inputs: readonly RawTensor[], attrs: PrimitiveAttrs[P]): RawTensor {
  if (pendingNotice !== null) flushNotice();
  const start = profile ? performance.now() : 0;
  let ran: BackendName = current;
  let out: RawTensor | undefined;
  if (current !== 'reference') out = kernels.get(`${current}/${op}`)?.(inputs, attrs);
  if (!out) {
    ran = 'reference';
    const ref = kernels.get(`reference/${op}`);
    if (!ref) throw new Error(`no kernel for op '${op}' on backend 'reference'`);
    out = ref(inputs, attrs);
    if (!out) throw new Error(`reference kernel for '${op}' declined its inputs`);
  }
  if (profile) {
    const key = `${ran}/${op}`;
    const entry = profile.get(key) ?? { calls: 0, ms: 0 };
    entry.calls++;
    entry.ms += performance.now() - start;
    profile.set(key, entry);
  }
  return out;
}

let pendingNotice: string | null = null;

/**
 * A one-line notice printed to stderr when the first kernel runs (not at import, so a command
 * that fails on its arguments prints only its error). Used for the native-backend fallback.
 */
export function noticeOnFirstKernel(message: string): void {
  pendingNotice = message;
}

function flushNotice(): void {
  const message = pendingNotice;
  pendingNotice = null;
  if (typeof process !== 'undefined' && process.stderr) process.stderr.write(`${message}\n`);
}

/** Per-kernel call counts and time, keyed `${backend that ran}/${op}`. */
export type OpProfile = Map<string, { calls: number; ms: number }>;

let profile: OpProfile | null = null;

/**
 * Runs `fn` while timing every kernel call; returns the profile (which backend ran each op,
 * calls and milliseconds), to find ops that fall back to the reference backend or dominate a step.
 */
export function profileOps(fn: () => void): OpProfile {
  const previous = profile;
  profile = new Map();
  const mine = profile;
  try {
    fn();
  } finally {
    profile = previous;
  }
  return mine;
}
