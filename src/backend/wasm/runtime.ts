/**
 * The wasm backend's instance: the compiled module of ./module.ts (compiled once, on first use),
 * one growable WebAssembly.Memory and a bump arena over it that each kernel call resets.
 * @internal
 */
import { wasmApi as api, type WasmMemory } from '../../runtime/wasm/api.ts';
import { fp32ModuleBytes } from './module.ts';
import { FQ_EXPORTS, quantModulesBytes, type FqMode } from './quant-module.ts';
import { elementwiseModuleBytes, EW_BINARY, EW_UNARY, ewExport, type EwBinary, type EwUnary } from './elementwise-module.ts';

/** Every module of the backend (all import the one memory), emitted once. */
let modules: Uint8Array[] | null = null;
function moduleBytes(): Uint8Array[] {
  return (modules ??= [fp32ModuleBytes(), ...quantModulesBytes(), elementwiseModuleBytes()]);
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

  /** The memory as float32 (after `fits()`; growing replaces the buffer, so take the view after it). */
  view(): Float32Array {
    if (this.view_.buffer !== this.memory.buffer) this.view_ = new Float32Array(this.memory.buffer);
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
  padImage(src: number, dst: number, planes: number, h: number, w: number, hp: number, wp: number, ph: number, pw: number): void;
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
}

let cached: WasmRuntime | string | null = null;

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
  const memory = new wasm.Memory({ initial: 16, maximum: MAX_BYTES / PAGE });
  const exports: Record<string, unknown> = {};
  for (const bytes of moduleBytes()) Object.assign(exports, new wasm.Instance(new wasm.Module(bytes), { env: { memory } }).exports);
  const instance = { exports };
  cached = {
    arena: new Arena(memory),
    gemm: instance.exports['gemm'] as WasmRuntime['gemm'],
    gemmTapsB: instance.exports['gemmTapsB'] as WasmRuntime['gemmTapsB'],
    gemmRowsA: instance.exports['gemmRowsA'] as WasmRuntime['gemmRowsA'],
    biasRelu: instance.exports['biasRelu'] as WasmRuntime['biasRelu'],
    compact: instance.exports['compact'] as WasmRuntime['compact'],
    padImage: instance.exports['padImage'] as WasmRuntime['padImage'],
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
