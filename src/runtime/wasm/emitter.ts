/**
 * A small WebAssembly binary emitter: LEB128 integers, the sections of a module (type, import,
 * function, export, code) and a function-body builder with the opcodes the kernels of ./gemm.ts use
 * and the fp32 kernels of ../../backend/wasm use (control flow, locals, i32 arithmetic, f32 scalar
 * ops, memory, and the SIMD128 ops behind the 0xfd prefix, among them the f32x4 arithmetic).
 * Encodings follow the WebAssembly core specification 2.0 (binary format, chapter 5) and the
 * fixed-width SIMD proposal as standardised in it; relaxed SIMD is deliberately absent.
 * @internal
 */

/** Value types (binary encoding). */
export const ValType = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b } as const;
export type ValType = (typeof ValType)[keyof typeof ValType];

/** Unsigned LEB128 of a non-negative integer below 2^53. */
export function uleb(value: number): number[] {
  if (!Number.isInteger(value) || value < 0 || value > Number.MAX_SAFE_INTEGER) throw new RangeError(`uleb: value must be a non-negative safe integer, got ${value}`);
  const out: number[] = [];
  let v = value;
  do {
    const byte = v % 128;
    v = Math.floor(v / 128);
    out.push(v > 0 ? byte | 0x80 : byte);
  } while (v > 0);
  return out;
}

/** Signed LEB128 of a safe integer (i32 / i64 immediates). */
export function sleb(value: number): number[] {
  if (!Number.isSafeInteger(value)) throw new RangeError(`sleb: value must be a safe integer, got ${value}`);
  const out: number[] = [];
  let v = value;
  for (;;) {
    const byte = ((v % 128) + 128) % 128; // low 7 bits, two's complement
    v = Math.floor(v / 128); // arithmetic shift right by 7
    const signBit = byte & 0x40;
    if ((v === 0 && signBit === 0) || (v === -1 && signBit !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

/** Decodes an unsigned LEB128 at `offset` (tests and validation): value and bytes read. */
export function readUleb(bytes: ArrayLike<number>, offset = 0): { value: number; length: number } {
  const { value, length } = readLeb(bytes, offset, false);
  return { value: Number(value), length };
}

/** Decodes a signed LEB128 at `offset`: value and bytes read. */
export function readSleb(bytes: ArrayLike<number>, offset = 0): { value: number; length: number } {
  const { value, length } = readLeb(bytes, offset, true);
  return { value: Number(value), length };
}

function readLeb(bytes: ArrayLike<number>, offset: number, signed: boolean): { value: bigint; length: number } {
  let value = 0n;
  let shift = 0n;
  for (let i = offset; i < bytes.length; i++) {
    const b = bytes[i]!;
    value |= BigInt(b & 0x7f) << shift;
    shift += 7n;
    if ((b & 0x80) === 0) {
      if (signed && b & 0x40) value -= 1n << shift;
      return { value, length: i - offset + 1 };
    }
  }
  throw new RangeError('readLeb: unterminated LEB128');
}

/** UTF-8 name as a vector. */
function name(s: string): number[] {
  const bytes = [...new TextEncoder().encode(s)];
  return [...uleb(bytes.length), ...bytes];
}

/** Memory access immediate: alignment exponent and offset. */
function memarg(align: number, offset: number): number[] {
  return [...uleb(align), ...uleb(offset)];
}

/**
 * Bytes of one function body (without its locals header): each method appends one instruction.
 * Names follow the text format (`i32.add` → `i32Add`).
 */
export class Code {
  readonly bytes: number[] = [];

  private op(...b: number[]): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }

  private simd(opcode: number, ...imm: number[]): this {
    return this.op(0xfd, ...uleb(opcode), ...imm);
  }

  // control
  block(): this { return this.op(0x02, 0x40); }
  loop(): this { return this.op(0x03, 0x40); }
  if(): this { return this.op(0x04, 0x40); }
  else(): this { return this.op(0x05); }
  end(): this { return this.op(0x0b); }
  br(depth: number): this { return this.op(0x0c, ...uleb(depth)); }
  brIf(depth: number): this { return this.op(0x0d, ...uleb(depth)); }
  return(): this { return this.op(0x0f); }
  drop(): this { return this.op(0x1a); }
  /** select(a, b, c) = c ≠ 0 ? a : b (no branch). */
  select(): this { return this.op(0x1b); }

  // locals
  localGet(i: number): this { return this.op(0x20, ...uleb(i)); }
  localSet(i: number): this { return this.op(0x21, ...uleb(i)); }
  localTee(i: number): this { return this.op(0x22, ...uleb(i)); }

  // i32
  i32Const(v: number): this {
    if (!Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 32) throw new RangeError(`i32Const: ${v} is not a 32-bit integer`);
    return this.op(0x41, ...sleb(v | 0));
  }
  i32Load(offset = 0): this { return this.op(0x28, ...memarg(2, offset)); }
  i32Store(offset = 0): this { return this.op(0x36, ...memarg(2, offset)); }
  /** i32.store16: the low 16 bits (2-byte alignment hint). */
  i32Store16(offset = 0): this { return this.op(0x3b, ...memarg(1, offset)); }
  i32Eqz(): this { return this.op(0x45); }
  i32Eq(): this { return this.op(0x46); }
  i32Ne(): this { return this.op(0x47); }
  i32LtS(): this { return this.op(0x48); }
  i32LtU(): this { return this.op(0x49); }
  i32GtS(): this { return this.op(0x4a); }
  i32GtU(): this { return this.op(0x4b); }
  i32LeS(): this { return this.op(0x4c); }
  i32GeS(): this { return this.op(0x4e); }
  i32GeU(): this { return this.op(0x4f); }
  i32Add(): this { return this.op(0x6a); }
  i32Sub(): this { return this.op(0x6b); }
  i32Mul(): this { return this.op(0x6c); }
  i32Shl(): this { return this.op(0x74); }
  i32And(): this { return this.op(0x71); }
  i32Or(): this { return this.op(0x72); }
  i32ShrS(): this { return this.op(0x75); }
  i32DivU(): this { return this.op(0x6e); }
  i32RemU(): this { return this.op(0x70); }
  i32WrapI64(): this { return this.op(0xa7); }

  // bulk memory (prefix 0xfc; WebAssembly 2.0)
  /** memory.copy(dst, src, n) on memory 0 (overlap-safe). */
  memoryCopy(): this { return this.op(0xfc, ...uleb(10), 0x00, 0x00); }
  /** memory.fill(dst, byte, n) on memory 0. */
  memoryFill(): this { return this.op(0xfc, ...uleb(11), 0x00); }

  // i64
  i64Const(v: number): this {
    if (!Number.isSafeInteger(v)) throw new RangeError(`i64Const: ${v} is not a safe integer`);
    return this.op(0x42, ...sleb(v));
  }
  i64LtS(): this { return this.op(0x53); }
  i64GtS(): this { return this.op(0x55); }
  i64Add(): this { return this.op(0x7c); }
  i64Sub(): this { return this.op(0x7d); }
  i64Mul(): this { return this.op(0x7e); }
  /** i64.div_s: truncates toward zero. */
  i64DivS(): this { return this.op(0x7f); }
  i64And(): this { return this.op(0x83); }
  i64ExtendI32S(): this { return this.op(0xac); }

  // f32 (scalar)
  f32Load(offset = 0): this { return this.op(0x2a, ...memarg(2, offset)); }
  f32Store(offset = 0): this { return this.op(0x38, ...memarg(2, offset)); }
  /** f32.const (little-endian IEEE 754 single bytes; `v` is rounded to float32). */
  f32Const(v: number): this {
    const bytes = new Uint8Array(new Float32Array([v]).buffer);
    return this.op(0x43, ...bytes);
  }
  f32Add(): this { return this.op(0x92); }
  f32Sub(): this { return this.op(0x93); }
  f32Mul(): this { return this.op(0x94); }
  /** f32.max: NaN when either operand is NaN; max(−0, +0) = +0. */
  f32Max(): this { return this.op(0x97); }
  f32Ne(): this { return this.op(0x5c); }
  f32Gt(): this { return this.op(0x5e); }
  f32Le(): this { return this.op(0x5f); }

  // f64 (scalar)
  f64Load(offset = 0): this { return this.op(0x2b, ...memarg(3, offset)); }
  f64Store(offset = 0): this { return this.op(0x39, ...memarg(3, offset)); }
  f64Add(): this { return this.op(0xa0); }
  f64Mul(): this { return this.op(0xa2); }
  /** f64.promote_f32: exact. */
  f64PromoteF32(): this { return this.op(0xbb); }

  /** f64.const (little-endian IEEE 754 bytes). */
  f64Const(v: number): this {
    const bytes = new Uint8Array(new Float64Array([v]).buffer);
    return this.op(0x44, ...bytes);
  }

  // SIMD128 (prefix 0xfd)
  v128Load(offset = 0): this { return this.simd(0x00, ...memarg(4, offset)); }
  /** Loads 8 bytes and sign-extends them to 8 × i16. */
  v128Load8x8S(offset = 0): this { return this.simd(0x01, ...memarg(3, offset)); }
  v128Load32Splat(offset = 0): this { return this.simd(0x09, ...memarg(2, offset)); }
  v128Load64Splat(offset = 0): this { return this.simd(0x0a, ...memarg(3, offset)); }
  v128Store(offset = 0): this { return this.simd(0x0b, ...memarg(4, offset)); }
  /** v128.const of 16 bytes. */
  v128Const(bytes: readonly number[]): this {
    if (bytes.length !== 16) throw new RangeError(`v128Const: 16 bytes expected, got ${bytes.length}`);
    return this.simd(0x0c, ...bytes.map((b) => b & 255));
  }
  /** i8x16.shuffle: lane i of the result = byte lanes[i] of the 32 bytes a ‖ b. */
  i8x16Shuffle(lanes: readonly number[]): this {
    if (lanes.length !== 16 || lanes.some((l) => !(l >= 0 && l < 32))) throw new RangeError(`i8x16Shuffle: 16 lanes in [0, 32) expected, got ${lanes.join(',')}`);
    return this.simd(0x0d, ...lanes);
  }
  i16x8Splat(): this { return this.simd(0x10); }
  i32x4Splat(): this { return this.simd(0x11); }
  f32x4Splat(): this { return this.simd(0x13); }
  f64x2Splat(): this { return this.simd(0x14); }
  f32x4ExtractLane(lane: number): this { return this.simd(0x1f, lane); }
  f64x2ExtractLane(lane: number): this { return this.simd(0x21, lane); }
  f32x4Eq(): this { return this.simd(0x41); }
  f32x4Ne(): this { return this.simd(0x42); }
  f32x4Lt(): this { return this.simd(0x43); }
  f32x4Gt(): this { return this.simd(0x44); }
  f32x4Le(): this { return this.simd(0x45); }
  f32x4Ge(): this { return this.simd(0x46); }
  /** f32x4.floor: exact. */
  f32x4Floor(): this { return this.simd(0x68); }
  /** f32x4.nearest: round half to even (exact; keeps the sign of a zero result). */
  f32x4Nearest(): this { return this.simd(0x6a); }
  /** f64x2.eq: all ones where equal (false for NaN; −0 = +0). */
  f64x2Eq(): this { return this.simd(0x47); }
  f64x2Lt(): this { return this.simd(0x49); }
  f64x2Gt(): this { return this.simd(0x4a); }
  v128And(): this { return this.simd(0x4e); }
  /** v128.andnot(a, b) = a & ~b. */
  v128AndNot(): this { return this.simd(0x4f); }
  v128Or(): this { return this.simd(0x50); }
  /** f32x4.demote_f64x2_zero: the two f64 lanes rounded to f32 (to nearest, ties to even) in lanes 0, 1; lanes 2, 3 zero. */
  f32x4DemoteF64x2Zero(): this { return this.simd(0x5e); }
  f64x2PromoteLowF32x4(): this { return this.simd(0x5f); }
  f64x2Floor(): this { return this.simd(0x75); }
  /** f64x2.nearest: round half to even. */
  f64x2Nearest(): this { return this.simd(0x94); }
  i32x4AllTrue(): this { return this.simd(0xa3); }
  /** v128.bitselect(a, b, mask) = (a & mask) | (b & ~mask). */
  v128Bitselect(): this { return this.simd(0x52); }
  i32x4MinS(): this { return this.simd(0xb6); }
  i32x4MaxS(): this { return this.simd(0xb8); }
  f32x4Abs(): this { return this.simd(0xe0); }
  f32x4Neg(): this { return this.simd(0xe1); }
  /** f32x4.sqrt: correctly rounded. */
  f32x4Sqrt(): this { return this.simd(0xe3); }
  f32x4Add(): this { return this.simd(0xe4); }
  f32x4Sub(): this { return this.simd(0xe5); }
  f32x4Mul(): this { return this.simd(0xe6); }
  /** f32x4.div: correctly rounded. */
  f32x4Div(): this { return this.simd(0xe7); }
  /** f32x4.max: NaN when either lane is NaN; max(−0, +0) = +0. */
  f32x4Max(): this { return this.simd(0xe9); }
  f64x2Abs(): this { return this.simd(0xec); }
  f64x2Neg(): this { return this.simd(0xed); }
  f64x2Add(): this { return this.simd(0xf0); }
  f64x2Sub(): this { return this.simd(0xf1); }
  f64x2Mul(): this { return this.simd(0xf2); }
  f64x2Div(): this { return this.simd(0xf3); }
  /** f64x2.min / max: NaN when either lane is NaN. */
  f64x2Min(): this { return this.simd(0xf4); }
  f64x2Max(): this { return this.simd(0xf5); }
  i32x4TruncSatF64x2SZero(): this { return this.simd(0xfc); }
  f64x2ConvertLowI32x4S(): this { return this.simd(0xfe); }
  i32x4ExtractLane(lane: number): this { return this.simd(0x1b, lane); }
  i16x8ExtendLowI8x16S(): this { return this.simd(0x87); }
  i16x8ExtendHighI8x16S(): this { return this.simd(0x88); }
  i16x8ExtendLowI8x16U(): this { return this.simd(0x89); }
  i32x4Add(): this { return this.simd(0xae); }
  i32x4Mul(): this { return this.simd(0xb5); }
  i32x4DotI16x8S(): this { return this.simd(0xba); }
}

/** One function of a module: its type, locals (beyond the parameters) and body. */
export interface FunctionDef {
  readonly params: readonly ValType[];
  readonly results: readonly ValType[];
  readonly locals: readonly ValType[];
  readonly body: Code;
  /** Export name (none: not exported). */
  readonly exportName?: string;
}

/**
 * An imported memory `module.field` with at least `minPages` 64 KiB pages; with `sharedMaxPages`
 * a shared memory (threads proposal, limits flag 0x03) of at most that many pages, which is what
 * an instance on a `WebAssembly.Memory({ shared: true, maximum })` must declare.
 */
export interface MemoryImport {
  readonly module: string;
  readonly field: string;
  readonly minPages: number;
  readonly sharedMaxPages?: number;
}

function memoryLimits(memory: MemoryImport): number[] {
  if (memory.sharedMaxPages === undefined) return [0x00, ...uleb(memory.minPages)];
  if (memory.sharedMaxPages < memory.minPages) throw new Error(`shared memory maximum ${memory.sharedMaxPages} pages is below its minimum ${memory.minPages}`);
  return [0x03, ...uleb(memory.minPages), ...uleb(memory.sharedMaxPages)];
}

function section(id: number, content: number[]): number[] {
  return [id, ...uleb(content.length), ...content];
}

function vector(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

/** The binary module of `functions` (each with its own type) importing `memory` when given. */
export function emitModule(functions: readonly FunctionDef[], memory?: MemoryImport): Uint8Array {
  const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  out.push(...section(1, vector(functions.map((f) => [0x60, ...uleb(f.params.length), ...f.params, ...uleb(f.results.length), ...f.results]))));
  if (memory) out.push(...section(2, vector([[...name(memory.module), ...name(memory.field), 0x02, ...memoryLimits(memory)]])));
  out.push(...section(3, vector(functions.map((_, i) => uleb(i)))));
  const exports = functions.flatMap((f, i) => (f.exportName === undefined ? [] : [[...name(f.exportName), 0x00, ...uleb(i)]]));
  out.push(...section(7, vector(exports)));
  const bodies = functions.map((f) => {
    // locals as runs of one type
    const runs: number[][] = [];
    for (let i = 0; i < f.locals.length;) {
      let j = i;
      while (j < f.locals.length && f.locals[j] === f.locals[i]) j++;
      runs.push([...uleb(j - i), f.locals[i]!]);
      i = j;
    }
    const body = [...vector(runs), ...f.body.bytes, 0x0b];
    return [...uleb(body.length), ...body];
  });
  out.push(...section(10, vector(bodies)));
  // custom "name" section, function names (subsection 1): profilers and stack traces show them
  const names = functions.flatMap((f, i) => (f.exportName === undefined ? [] : [[...uleb(i), ...name(f.exportName)]]));
  if (names.length > 0) {
    const sub = vector(names);
    out.push(...section(0, [...name('name'), 1, ...uleb(sub.length), ...sub]));
  }
  return Uint8Array.from(out);
}
