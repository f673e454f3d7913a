/**
 * The memory import every module of the wasm backend declares: `env.memory`, at least one page.
 * The threaded runtime (./runtime.ts) emits the modules with a shared import instead.
 * @internal
 */
import type { MemoryImport } from '../../runtime/wasm/emitter.ts';

export const ENV_MEMORY: MemoryImport = { module: 'env', field: 'memory', minPages: 1 };

/** The shared variant, at most `maxPages` pages (the size the runtime's memory is created with). */
export function sharedEnvMemory(maxPages: number): MemoryImport {
  return { ...ENV_MEMORY, sharedMaxPages: maxPages };
}
