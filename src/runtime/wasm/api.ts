/**
 * The part of the WebAssembly JS API lowbit's run-time-emitted modules use (the integer runtime's
 * WasmGemm and the wasm backend), typed locally because the project's lib has no DOM, and the
 * engine's WebAssembly object when it has one.
 * @internal
 */
export interface WasmMemory {
  /** (a SharedArrayBuffer for a shared memory; typed as the DOM lib types it) */
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}

export interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { readonly exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
}

/** globalThis.WebAssembly, or null on an engine without it. */
export function wasmApi(): WasmApi | null {
  return (globalThis as { WebAssembly?: WasmApi }).WebAssembly ?? null;
}
