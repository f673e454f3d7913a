/**
 * The wasm backend's instance: the compiled module of ./module.ts (compiled once, on first use),
 * one growable WebAssembly.Memory and a bump arena over it that each kernel call resets. Where
 * SharedArrayBuffer exists (Node.js; a cross-origin isolated page) the memory is shared and the
 * modules import it as shared, so that the worker pool of ./threads.ts can run parts of a kernel.
 * @internal
 */
import { wasmApi as api, type WasmMemory } from '../../runtime/wasm/api.ts';
import { fp32ModuleBytes } from './module.ts';
import { FQ_EXPORTS, quantModulesBytes, type FqMode } from './quant-module.ts';
import { elementwiseModuleBytes, EW_BINARY, EW_UNARY, ewExport, type EwBinary, type EwUnary } from './elementwise-module.ts';
import { ENV_MEMORY, sharedEnvMemory } from './memory-import.ts';
import { NORM_EXPORTS, normModuleBytes } from './norm-module.ts';
import { DEPTHWISE_EXPORTS, depthwiseModuleBytes } from './depthwise-module.ts';
import { defaultThreadCount, MAX_THREADS, threadsUnavailableReason, WasmPool, type CallSink } from './threads.ts';

/** Every module of the backend (all import the one memory), emitted once; shared-memory variants when `shared`. */
const modules = new Map<boolean, Uint8Array[]>();
function moduleBytes(shared = false): Uint8Array[] {
  let bytes = modules.get(shared);
  if (!bytes) {
    const memory = shared ? sharedEnvMemory(MAX_BYTES / PAGE) : ENV_MEMORY;
    bytes = [fp32ModuleBytes(memory), ...quantModulesBytes(memory), elementwiseModuleBytes(memory), normModuleBytes(memory), depthwiseModuleBytes(memory)];
    modules.set(shared, bytes);
  }
  return bytes;
}

/** @internal The sizes of the backend's modules in bytes (tests keep the new ones under 4 KB). */
export function wasmModuleSizes(): number[] {
  return moduleBytes().map((b) => b.length);
}

export type { WasmMemory } from '../../runtime/wasm/api.ts';

const PAGE = 65536;
/** Largest memory the arena grows to (bytes): 1 GiB. A call needing more declines. */
export const MAX_BYTES = 2 ** 30;
/** Floats kept free past every reservation: the GEMM reads whole 16-byte vectors. */
const SLACK = 16;

/** Bump allocation of float32 blocks (16-byte aligned) in the memory, reset per kernel call. */
export class Arena {
  /** Next free float index. */
  top = 0;
  private view_: Float32Array;

  constructor(private readonly memory: WasmMemory) {
    this.view_ = new Float32Array(memory.buffer);
  }

  reset(): void {
    this.top = 0;
  }

  /** Reserves `floats` floats; returns the float index of the block. Call `fits()` after the last reservation. */
  reserve(floats: number): number {
    const at = this.top;
    this.top = at + Math.ceil((floats + SLACK) / 4) * 4;
    return at;
  }

  /**
   * Grows the memory to hold every reservation; false when that would pass MAX_BYTES or the engine
   * refuses the memory (the kernel then declines and the reference kernel runs).
   */
  fits(): boolean {
    const need = this.top * 4;
    if (need > MAX_BYTES) return false;
    const have = this.memory.buffer.byteLength;
    if (need > have) {
      try {
        this.memory.grow(Math.ceil((need - have) / PAGE));
      } catch {
        return false;
      }
    }
    return true;
  }

  /**
   * The memory as float32 (after `fits()`; growing replaces the buffer, so take the view after it;
   * a shared memory's old SharedArrayBuffer keeps its old length, hence the length check).
   */
  view(): Float32Array {
    const buffer = this.memory.buffer;
    if (this.view_.buffer !== buffer || this.view_.byteLength !== buffer.byteLength) this.view_ = new Float32Array(buffer);
    return this.view_;
  }
}

/**
 * A fake-quantization function of ./quant-module.ts: (g, x, y, acc, n, run, s, sMid, sInner, z,
 * zMid, zInner, qmin, qmax, flag), byte addresses.
 */
export type FqFunction = (
  g: number, x: number, y: number, acc: number, n: number, run: number, s: number, sMid: number, sInner: number,
  z: number, zMid: number, zInner: number, qmin: number, qmax: number, flag: number,
) => void;

/** The compiled kernels and their memory. */
export interface WasmRuntime {
  readonly arena: Arena;
  /** See ./module.ts: byte addresses. */
  gemm(ap: number, bp: number, c: number, mBlocks: number, nBlocks: number, k: number, ldc: number, accumulate: number): void;
  gemmTapsB(ap: number, x: number, taps: number, c: number, mBlocks: number, nBlocks: number, k: number, ldc: number, accumulate: number): void;
  gemmRowsA(a: number, rows: number, bp: number, c: number, mBlocks: number, nBlocks: number, k: number, ldc: number, accumulate: number): void;
  biasRelu(y: number, rows: number, cols: number, bias: number, relu: number): void;
  compact(c: number, ldc: number, y: number, rows: number, oh: number, ow: number, wp: number, bias: number, relu: number): void;
  maxPool(
    x: number, y: number, idx: number, planes: number, h: number, w: number, oh: number, ow: number,
    kh: number, kw: number, sh: number, sw: number, ph: number, pw: number, relu: number,
  ): void;
  col2im(
    c: number, ldc: number, dx: number, cg: number, h: number, w: number, kh: number, kw: number,
    oh: number, ow: number, ph: number, pw: number, dh: number, dw: number,
  ): void;
  scatterAdd(idx: number, g: number, dx: number, count: number): void;
  maxPool2x2(x: number, y: number, idx: number, planes: number, h: number, w: number, oh: number, ow: number, relu: number): void;
  /** The fake-quantization functions by mode. */
  fq: Readonly<Record<FqMode, FqFunction>>;
  /** Binary elementwise functions (see ./elementwise-module.ts): operands as (base, rows per i0, rows per i1), then y, d0, d1, d2. */
  binary: Readonly<Record<EwBinary, (...args: number[]) => void>>;
  /** Unary elementwise functions: (x, y, n). */
  unary: Readonly<Record<EwUnary, (x: number, y: number, n: number) => void>>;
  /** Index of an export for `parallel` call lists. */
  fn: Readonly<Record<ThreadedExport, number>>;
  /** Calls export `fn` on this thread (the sink of a part that runs here). */
  call: CallSink;
  /** Threads a kernel may split over right now (1 without a pool; starts the default pool on first use). */
  threads(): number;
  /**
   * Runs `parts` parts of a kernel, in parallel when that many threads are ready: `build(p, call)`
   * records part p's calls, each `call(rt.fn.name, ...byte addresses and sizes)`. Parts must write
   * disjoint outputs; each runs its calls in order, so results equal the calls run on one thread.
   */
  parallel(parts: number, build: (part: number, call: CallSink) => void): void;
}

/** The exports kernels may hand to workers. */
export const THREADED_EXPORTS = ['gemm', 'gemmTapsB', 'gemmRowsA', 'biasRelu', 'compact', 'padImage', 'canvasLanes', 'col2im', ...NORM_EXPORTS, ...DEPTHWISE_EXPORTS] as const;
export type ThreadedExport = (typeof THREADED_EXPORTS)[number];
export type { CallSink } from './threads.ts';

let cached: WasmRuntime | string | null = null;

/** The memory and compiled modules of the cached runtime, for the pool. */
let shared: { memory: object; modules: object[]; fns: ((...args: number[]) => unknown)[] } | null = null;
/** The pool, when started; the thread count asked for (null: the default, decided at first use). */
let pool: WasmPool | null = null;
let requested: number | null = null;
/** Dispatches of the pools closed so far. */
let dispatchedBefore = 0;
/** Why the runtime runs on one thread although more were asked for, or null. */
let singleReason: string | null = null;

function ensurePool(): WasmPool | null {
  if (pool || !shared) return pool;
  const threads = requested ?? defaultThreadCount();
  if (threads <= 1) return null;
  pool = new WasmPool({ memory: shared.memory, modules: shared.modules, names: THREADED_EXPORTS, fns: shared.fns }, threads);
  pool.spawn();
  return pool;
}

/**
 * Sets the wasm backend's thread count (caller included; 1 = no workers) and resolves, with the
 * count in use, once the workers are ready. Without a call the count is LOWBIT_THREADS, else
 * min(cores, 4), and the workers start when the first large kernel runs.
 */
export async function setWasmThreads(threads: number): Promise<number> {
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) throw new Error(`wasm threads must be an integer in [1, ${MAX_THREADS}], got ${threads}`);
  requested = threads;
  const rt = wasmRuntime();
  if (typeof rt === 'string') return 1;
  if (pool && pool.threads >= threads && pool.error === null) {
    // fewer threads than the pool has (or as many): keep the workers, lower the limit
    pool.limit = threads;
    await pool.ready();
    return rt.threads();
  }
  dispatchedBefore += pool?.dispatched ?? 0;
  pool?.close();
  pool = null;
  const started = ensurePool();
  if (started) await started.ready();
  return rt.threads();
}

/** @internal The pool when started (tests). */
export function wasmPoolForTests(): WasmPool | null {
  return pool;
}

/** The wasm backend's threads now. */
export interface WasmThreadsInfo {
  /** Threads asked for (setWasmThreads, else LOWBIT_THREADS, else min(cores, 4)). */
  requested: number;
  /** Threads kernels split over now: the caller plus the workers that are ready (they start on first use). */
  active: number;
  /** Why the backend runs on one thread although more were asked for, or null. */
  reason: string | null;
  /** Kernel calls so far that ran parts on workers. */
  dispatched: number;
}

export function wasmThreadsInfo(): WasmThreadsInfo {
  const asked = requested ?? defaultThreadCount();
  const reason = singleReason ?? (typeof cached === 'string' ? cached : null) ?? pool?.error ?? null;
  return { requested: asked, active: pool ? pool.available() : 1, reason: asked > 1 ? reason : null, dispatched: dispatchedBefore + (pool?.dispatched ?? 0) };
}

/** Why WebAssembly SIMD128 cannot run here, or null when it can (the module validates). */
export function wasmUnavailableReason(): string | null {
  const wasm = api();
  if (!wasm) return 'WebAssembly is not available';
  try {
    if (!moduleBytes().every((b) => wasm.validate(b))) return 'this WebAssembly engine does not support SIMD128';
  } catch (e) {
    return `WebAssembly validation failed: ${e instanceof Error ? e.message : String(e)}`;
  }
  return null;
}

/** The runtime (compiled once); a string says why it cannot be built. */
export function wasmRuntime(): WasmRuntime | string {
  if (cached !== null) return cached;
  const reason = wasmUnavailableReason();
  if (reason !== null) return (cached = reason);
  const wasm = api()!;
  singleReason = threadsUnavailableReason();
  let memory: WasmMemory | null = null;
  let compiled: object[] = [];
  if (singleReason === null) {
    try {
      memory = new wasm.Memory({ initial: 16, maximum: MAX_BYTES / PAGE, shared: true });
      compiled = moduleBytes(true).map((bytes) => new wasm.Module(bytes));
    } catch (e) {
      memory = null;
      singleReason = `this engine has no shared WebAssembly memory (${e instanceof Error ? e.message : String(e)})`;
    }
  }
  if (memory === null) {
    memory = new wasm.Memory({ initial: 16, maximum: MAX_BYTES / PAGE });
    compiled = moduleBytes().map((bytes) => new wasm.Module(bytes));
  }
  const exports: Record<string, unknown> = {};
  for (const module of compiled) Object.assign(exports, new wasm.Instance(module, { env: { memory } }).exports);
  const instance = { exports };
  const fns = THREADED_EXPORTS.map((name) => instance.exports[name] as (...args: number[]) => unknown);
  if (singleReason === null) shared = { memory, modules: compiled, fns };
  const direct: CallSink = (fn, ...args) => void fns[fn]!(...args);
  cached = {
    fn: Object.fromEntries(THREADED_EXPORTS.map((name, i) => [name, i])) as Record<ThreadedExport, number>,
    call: direct,
    threads: () => ensurePool()?.available() ?? 1,
    parallel: (parts, build) => {
      const p = ensurePool();
      if (p) p.run(parts, build);
      else for (let part = 0; part < parts; part++) build(part, direct);
    },
    arena: new Arena(memory),
    gemm: instance.exports['gemm'] as WasmRuntime['gemm'],
    gemmTapsB: instance.exports['gemmTapsB'] as WasmRuntime['gemmTapsB'],
    gemmRowsA: instance.exports['gemmRowsA'] as WasmRuntime['gemmRowsA'],
    biasRelu: instance.exports['biasRelu'] as WasmRuntime['biasRelu'],
    compact: instance.exports['compact'] as WasmRuntime['compact'],
    maxPool: instance.exports['maxPool'] as WasmRuntime['maxPool'],
    maxPool2x2: instance.exports['maxPool2x2'] as WasmRuntime['maxPool2x2'],
    col2im: instance.exports['col2im'] as WasmRuntime['col2im'],
    scatterAdd: instance.exports['scatterAdd'] as WasmRuntime['scatterAdd'],
    binary: Object.fromEntries(EW_BINARY.map((op) => [op, instance.exports[ewExport(op)] as (...args: number[]) => void])) as Record<EwBinary, (...args: number[]) => void>,
    unary: Object.fromEntries(EW_UNARY.map((op) => [op, instance.exports[ewExport(op)] as (x: number, y: number, n: number) => void])) as Record<EwUnary, (x: number, y: number, n: number) => void>,
    fq: Object.fromEntries((Object.keys(FQ_EXPORTS) as FqMode[]).map((mode) => [mode, instance.exports[FQ_EXPORTS[mode]] as FqFunction])) as Record<FqMode, FqFunction>,
  };
  return cached;
}
