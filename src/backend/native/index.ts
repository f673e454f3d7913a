/**
 * The native backend: C++ kernels (AVX-512 / AVX2 / scalar, chosen at load) behind the kernel
 * registry. `loadNative()` registers them; choosing the default backend is done elsewhere.
 */
import type { NativeAddon } from './addon.ts';
import { addonLoadError, loadAddon } from './load.ts';
import { registerNativeKernels } from './kernels.ts';

export type { NativeAddon } from './addon.ts';
export { NATIVE_OPS } from './kernels.ts';

export interface NativeInfo {
  /** Instruction set the kernels dispatch on (LOWBIT_ISA=avx2|scalar lowers it). */
  isa: 'avx512' | 'avx2' | 'scalar';
  /** Threads of the addon's pool (LOWBIT_THREADS, default: number of cores). */
  threads: number;
  features: string[];
}

let registered = false;

/** Loads the addon and registers its kernels under 'native' (once). */
export function loadNative(): { ok: true } | { ok: false; reason: string } {
  const addon = loadAddon();
  if (!addon) return { ok: false, reason: addonLoadError() ?? 'native addon unavailable' };
  if (!registered) {
    registerNativeKernels(addon);
    registered = true;
  }
  return { ok: true };
}

/** ISA, thread count and CPU features of the loaded addon; null when it is not loaded. */
export function nativeInfo(): NativeInfo | null {
  return loadAddon()?.info() ?? null;
}

/** Sets the size of the addon's thread pool (>= 1). */
export function setNativeThreads(threads: number): void {
  const addon = loadAddon();
  if (!addon) throw new Error(`native addon unavailable: ${addonLoadError()}`);
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`threads must be a positive integer, got ${threads}`);
  addon.setThreads(threads);
}

/** Measured fp32 FMA peak (GFLOP/s) of the active ISA on `threads` threads. */
export function fmaPeakGflops(threads: number, seconds = 0.2): number {
  const addon = loadAddon();
  if (!addon) throw new Error(`native addon unavailable: ${addonLoadError()}`);
  return addon.fmaPeak(threads, seconds);
}

/** The raw addon (for benchmarks); null when it is not loaded. */
export function nativeAddon(): NativeAddon | null {
  return loadAddon();
}
