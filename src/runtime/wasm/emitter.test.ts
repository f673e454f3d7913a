/**
 * The wasm emitter: LEB128 encodings against known byte strings and round trips at the edges,
 * and modules it emits validate and compute what the opcodes mean (scalar i32 arithmetic and a
 * loop; SIMD128 widening loads and i32x4.dot_i16x8_s against a plain JS evaluation).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Code, emitModule, readSleb, readUleb, sleb, uleb, ValType } from './emitter.ts';

interface Api {
  validate(b: Uint8Array): boolean;
  Module: new (b: Uint8Array) => object;
  Instance: new (m: object, i: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: new (d: { initial: number }) => { buffer: ArrayBuffer };
}
const api = (globalThis as { WebAssembly?: Api }).WebAssembly!;

describe('LEB128', () => {
  it('known encodings', () => {
    assert.deepEqual(uleb(0), [0]);
    assert.deepEqual(uleb(127), [0x7f]);
    assert.deepEqual(uleb(128), [0x80, 0x01]);
    assert.deepEqual(uleb(624485), [0xe5, 0x8e, 0x26]);
    assert.deepEqual(uleb(2 ** 32 - 1), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert.deepEqual(sleb(0), [0]);
    assert.deepEqual(sleb(-1), [0x7f]);
    assert.deepEqual(sleb(63), [0x3f]);
    assert.deepEqual(sleb(64), [0xc0, 0x00]);
    assert.deepEqual(sleb(-64), [0x40]);
    assert.deepEqual(sleb(-65), [0xbf, 0x7f]);
    assert.deepEqual(sleb(-123456), [0xc0, 0xbb, 0x78]);
    assert.deepEqual(sleb(2 ** 31 - 1), [0xff, 0xff, 0xff, 0xff, 0x07]);
    assert.deepEqual(sleb(-(2 ** 31)), [0x80, 0x80, 0x80, 0x80, 0x78]);
  });

  it('round trips at the edges and rejects non-integers', () => {
    const unsigned = [0, 1, 63, 64, 127, 128, 255, 16383, 16384, 2 ** 31, 2 ** 32, 2 ** 35 + 5, Number.MAX_SAFE_INTEGER];
    for (const v of unsigned) assert.deepEqual(readUleb(uleb(v)), { value: v, length: uleb(v).length }, `uleb ${v}`);
    const signed = [0, 1, -1, 63, -63, 64, -64, 65, -65, 8191, -8192, 8192, -8193, 2 ** 31 - 1, -(2 ** 31), 2 ** 40, -(2 ** 40), Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];
    for (const v of signed) assert.deepEqual(readSleb(sleb(v)), { value: v, length: sleb(v).length }, `sleb ${v}`);
    assert.throws(() => uleb(-1), /non-negative/);
    assert.throws(() => uleb(1.5), /non-negative/);
    assert.throws(() => sleb(0.5), /safe integer/);
    assert.throws(() => new Code().i32Const(2 ** 32), /32-bit/);
    assert.throws(() => readUleb([0x80]), /unterminated/);
  });
});

describe('emitted modules', () => {
  it('scalar: i32 arithmetic and a counted loop', () => {
    const i32 = ValType.i32;
    // sum(n) = Σ_{i=1..n} i·a, with i32 wrapping
    const c = new Code();
    c.i32Const(0).localSet(2);
    c.block().localGet(0).i32Eqz().brIf(0).loop();
    c.localGet(2).localGet(0).localGet(1).i32Mul().i32Add().localSet(2);
    c.localGet(0).i32Const(1).i32Sub().localTee(0).brIf(0);
    c.end().end();
    c.localGet(2);
    const bytes = emitModule([{ params: [i32, i32], results: [i32], locals: [i32], body: c, exportName: 'sum' }]);
    assert.ok(api.validate(bytes));
    const sum = new api.Instance(new api.Module(bytes), {}).exports['sum'] as (n: number, a: number) => number;
    assert.equal(sum(0, 5), 0);
    assert.equal(sum(10, 3), 165);
    let ref = 0;
    for (let i = 1; i <= 1000; i++) ref = (ref + Math.imul(i, 0x7654321)) | 0;
    assert.equal(sum(1000, 0x7654321), ref);
  });

  it('SIMD128: sign-extending loads and i32x4.dot_i16x8_s', () => {
    // f(a, b, out): out[0..3] = dot(extend8(a), extend8(b)); out[4..7] = dot(load16(a+16), load16(b+16))
    const c = new Code();
    c.localGet(2).localGet(0).v128Load8x8S().localGet(1).v128Load8x8S().i32x4DotI16x8S().v128Store();
    c.localGet(2).localGet(0).v128Load(16).localGet(1).v128Load(16).i32x4DotI16x8S().localGet(0).v128Load32Splat(32).i32x4Add().v128Store(16);
    const i32 = ValType.i32;
    const bytes = emitModule([{ params: [i32, i32, i32], results: [], locals: [], body: c, exportName: 'f' }], { module: 'env', field: 'memory', minPages: 1 });
    assert.ok(api.validate(bytes));
    const memory = new api.Memory({ initial: 1 });
    const f = new api.Instance(new api.Module(bytes), { env: { memory } }).exports['f'] as (a: number, b: number, o: number) => void;
    const i8 = new Int8Array(memory.buffer);
    const i16 = new Int16Array(memory.buffer);
    const i32v = new Int32Array(memory.buffer);
    const a = [-128, 127, -1, 0, 5, -7, 100, -100];
    const b = [-128, -128, 127, 3, -9, 11, -50, 99];
    i8.set(a, 0);
    i8.set(b, 64);
    const a16 = [-32768, -32768, 32767, -1, 300, -300, 12345, -23456];
    const b16 = [-32768, -32768, 32767, 32767, -300, 299, 2, 3];
    i16.set(a16, 8);
    i16.set(b16, 40);
    i32v[8] = 1000; // splat at a + 32
    f(0, 64, 128);
    for (let l = 0; l < 4; l++) {
      assert.equal(i32v[32 + l], a[2 * l]! * b[2 * l]! + a[2 * l + 1]! * b[2 * l + 1]!, `8-bit lane ${l}`);
      // lane 0: 2·2^30 wraps to −2^31, as the spec's modular addition
      assert.equal(i32v[36 + l], (a16[2 * l]! * b16[2 * l]! + a16[2 * l + 1]! * b16[2 * l + 1]! + 1000) | 0, `16-bit lane ${l}`);
    }
  });
});

describe('f32 and f32x4 opcodes', () => {
  it('encode as the core specification 2.0 lists them', () => {
    const enc = (f: (c: Code) => Code) => f(new Code()).bytes;
    // scalar f32: load/store (memarg align 2), const (IEEE single LE), arithmetic and comparisons
    assert.deepEqual(enc((c) => c.f32Load(8)), [0x2a, 0x02, 0x08]);
    assert.deepEqual(enc((c) => c.f32Store(0)), [0x38, 0x02, 0x00]);
    assert.deepEqual(enc((c) => c.f32Const(1)), [0x43, 0x00, 0x00, 0x80, 0x3f]);
    assert.deepEqual(enc((c) => c.f32Const(-Infinity)), [0x43, 0x00, 0x00, 0x80, 0xff]);
    assert.deepEqual(enc((c) => c.f32Add().f32Mul().f32Max()), [0x92, 0x94, 0x97]);
    assert.deepEqual(enc((c) => c.f32Ne().f32Gt().f32Le()), [0x5c, 0x5e, 0x5f]);
    assert.deepEqual(enc((c) => c.i32Or()), [0x72]);
    assert.deepEqual(enc((c) => c.memoryCopy()), [0xfc, 0x0a, 0x00, 0x00]);
    assert.deepEqual(enc((c) => c.memoryFill()), [0xfc, 0x0b, 0x00]);
    // SIMD: 0xfd prefix, opcode as u32 LEB128 (0xe4 = 228 → 0xe4 0x01)
    assert.deepEqual(enc((c) => c.f32x4Splat()), [0xfd, 0x13]);
    assert.deepEqual(enc((c) => c.f32x4ExtractLane(3)), [0xfd, 0x1f, 0x03]);
    assert.deepEqual(enc((c) => c.f32x4Add()), [0xfd, 0xe4, 0x01]);
    assert.deepEqual(enc((c) => c.f32x4Sub()), [0xfd, 0xe5, 0x01]);
    assert.deepEqual(enc((c) => c.f32x4Mul()), [0xfd, 0xe6, 0x01]);
    assert.deepEqual(enc((c) => c.f32x4Max()), [0xfd, 0xe9, 0x01]);
    assert.deepEqual(enc((c) => c.f32x4Ne().f32x4Gt().f32x4Le()), [0xfd, 0x42, 0xfd, 0x44, 0xfd, 0x45]);
    assert.deepEqual(enc((c) => c.v128Or()), [0xfd, 0x50]);
  });

  it('compute what they mean: f32x4 mul then add, max with NaN and −0, splat, lane extraction, scalar ops', () => {
    const i32 = ValType.i32;
    // v(a, b, o): o[0..3] = a·b + splat(a[0]); o[4..7] = max(a, b); o[8] = lane 2 of a + 1.5; o[9] = a[1] > b[1] | a[1] ≠ a[1]; o[10] = a[3] ≤ b[3]
    const c = new Code();
    c.localGet(2).localGet(0).v128Load().localGet(1).v128Load().f32x4Mul().localGet(0).f32Load().f32x4Splat().f32x4Add().v128Store();
    c.localGet(2).localGet(0).v128Load().localGet(1).v128Load().f32x4Max().v128Store(16);
    c.localGet(2).localGet(0).v128Load().f32x4ExtractLane(2).f32Const(1.5).f32Add().f32Store(32);
    c.localGet(2).localGet(0).f32Load(4).localGet(1).f32Load(4).f32Gt().localGet(0).f32Load(4).localGet(0).f32Load(4).f32Ne().i32Or().i32Store(36);
    c.localGet(2).localGet(0).f32Load(12).localGet(1).f32Load(12).f32Le().i32Store(40);
    // o[11..14] = a (memory.copy); o[15] = 0x07070707 (memory.fill)
    c.localGet(2).i32Const(44).i32Add().localGet(0).i32Const(16).memoryCopy();
    c.localGet(2).i32Const(60).i32Add().i32Const(7).i32Const(4).memoryFill();
    const bytes = emitModule([{ params: [i32, i32, i32], results: [], locals: [], body: c, exportName: 'v' }], { module: 'env', field: 'memory', minPages: 1 });
    assert.ok(api.validate(bytes));
    const memory = new api.Memory({ initial: 1 });
    const v = new api.Instance(new api.Module(bytes), { env: { memory } }).exports['v'] as (a: number, b: number, o: number) => void;
    const f = new Float32Array(memory.buffer);
    const i = new Int32Array(memory.buffer);
    for (const [a64, b64] of [[[1.5, NaN, -0, 3], [2, 1, 0, 3]], [[0.1, 2, 7, -1], [0.3, 1, -0, -1]]] as const) {
      const a = Float32Array.from(a64);
      const b = Float32Array.from(b64);
      f.set(a, 0);
      f.set(b, 4);
      v(0, 16, 64);
      for (let l = 0; l < 4; l++) {
        const want = Math.fround(Math.fround(a[l]! * b[l]!) + a[0]!);
        assert.ok(Object.is(f[16 + l], want), `mul-add lane ${l}: ${f[16 + l]} vs ${want}`);
      }
      for (let l = 0; l < 4; l++) {
        // wasm max: NaN if either is NaN; max(−0, 0) = +0 whichever comes first
        const want = Number.isNaN(a[l]!) || Number.isNaN(b[l]!) ? NaN : a[l] === 0 && b[l] === 0 ? (Object.is(a[l], -0) && Object.is(b[l], -0) ? -0 : 0) : Math.max(a[l]!, b[l]!);
        assert.ok(Object.is(f[20 + l], want), `max lane ${l}: ${f[20 + l]} vs ${want}`);
      }
      assert.equal(f[24], Math.fround(a[2]! + 1.5));
      assert.equal(i[25], a[1]! > b[1]! || Number.isNaN(a[1]!) ? 1 : 0);
      assert.equal(i[26], a[3]! <= b[3]! ? 1 : 0);
      for (let l = 0; l < 4; l++) assert.ok(Object.is(f[27 + l], a[l]), `memory.copy lane ${l}`);
      assert.equal(i[31], 0x07070707);
    }
  });
});

describe('f64 / f64x2 opcodes of the fake-quantization kernels, f32x4 ones of the elementwise kernels', () => {
  it('encode as the core specification 2.0 lists them', () => {
    const enc = (f: (c: Code) => Code) => f(new Code()).bytes;
    assert.deepEqual(enc((c) => c.f64Load(8)), [0x2b, 0x03, 0x08]);
    assert.deepEqual(enc((c) => c.f64Store(0)), [0x39, 0x03, 0x00]);
    assert.deepEqual(enc((c) => c.f64Add().f64PromoteF32().i32RemU()), [0xa0, 0xbb, 0x70]);
    assert.deepEqual(enc((c) => c.f64x2ExtractLane(1)), [0xfd, 0x21, 0x01]);
    assert.deepEqual(enc((c) => c.f64x2Eq()), [0xfd, 0x47]);
    assert.deepEqual(enc((c) => c.v128AndNot()), [0xfd, 0x4f]);
    assert.deepEqual(enc((c) => c.f32x4DemoteF64x2Zero()), [0xfd, 0x5e]);
    // the elementwise kernels' f32x4 opcodes (their values are checked bit for bit in src/backend/wasm/wasm.test.ts)
    assert.deepEqual(enc((c) => c.f32x4Eq().f32x4Lt().f32x4Ge()), [0xfd, 0x41, 0xfd, 0x43, 0xfd, 0x46]);
    assert.deepEqual(enc((c) => c.f32x4Floor().f32x4Nearest()), [0xfd, 0x68, 0xfd, 0x6a]);
    assert.deepEqual(enc((c) => c.f32x4Abs().f32x4Neg().f32x4Sqrt().f32x4Div()), [0xfd, 0xe0, 0x01, 0xfd, 0xe1, 0x01, 0xfd, 0xe3, 0x01, 0xfd, 0xe7, 0x01]);
  });

  it('compute what they mean: demote (ties to even), f64x2.eq with NaN and ±0, andnot, lane extraction, f64 load / add / store, rem_u', () => {
    const i32 = ValType.i32;
    // d(p): f32x4 at p+32 = demote(f64x2 at p) ‖ demote(f64x2 at p+16); p+48: eq(f64x2 p, f64x2 p+16);
    // p+64: andnot(v p, v p+16); f64 at p+80 = lane 1 of p + f64 at p+16 promoted from f32 at p+96; i32 at p+104 = 17 rem_u 5
    const c = new Code();
    c.localGet(0).localGet(0).v128Load(0).f32x4DemoteF64x2Zero().localGet(0).v128Load(16).f32x4DemoteF64x2Zero();
    c.i8x16Shuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]).v128Store(32);
    c.localGet(0).localGet(0).v128Load(0).localGet(0).v128Load(16).f64x2Eq().v128Store(48);
    c.localGet(0).localGet(0).v128Load(0).localGet(0).v128Load(16).v128AndNot().v128Store(64);
    c.localGet(0).localGet(0).v128Load(0).f64x2ExtractLane(1).localGet(0).f32Load(96).f64PromoteF32().f64Add().f64Store(80);
    c.localGet(0).i32Const(17).i32Const(5).i32RemU().i32Store(104);
    const bytes = emitModule([{ params: [i32], results: [], locals: [], body: c, exportName: 'd' }], { module: 'env', field: 'memory', minPages: 1 });
    assert.ok(api.validate(bytes));
    const memory = new api.Memory({ initial: 1 });
    const d = new api.Instance(new api.Module(bytes), { env: { memory } }).exports['d'] as (p: number) => void;
    const f64 = new Float64Array(memory.buffer);
    const f32 = new Float32Array(memory.buffer);
    const u32 = new Uint32Array(memory.buffer);
    const tie = 1 + 2 ** -24; // halfway between float32 1 and 1 + 2^-23: ties to even gives 1
    f64.set([tie, NaN, -0, 1 + 3 * 2 ** -24], 0);
    f32[24] = 0.1;
    d(0);
    assert.deepEqual([...f32.subarray(8, 12)], [1, NaN, -0, Math.fround(1 + 3 * 2 ** -24)].map((v) => Math.fround(v)));
    assert.ok(Object.is(f32[10], -0));
    // eq lanes: tie vs −0 false, NaN vs 1+3·2^-24 false
    assert.deepEqual([...u32.subarray(12, 16)], [0, 0, 0, 0]);
    f64.set([0, NaN, -0, NaN], 0);
    d(0);
    assert.deepEqual([...u32.subarray(12, 16)], [0xffffffff, 0xffffffff, 0, 0], '0 = −0; NaN ≠ NaN');
    // andnot: bits of lane 0 (+0) & ~bits of −0 = 0; NaN & ~NaN = 0
    assert.deepEqual([...u32.subarray(16, 20)], [0, 0, 0, 0]);
    assert.ok(Number.isNaN(f64[10]!), 'NaN lane + 0.1 is NaN');
    f64.set([5, 2.5], 0);
    d(0);
    assert.equal(f64[10], 2.5 + Math.fround(0.1));
    assert.equal(u32[26], 2);
  });
});
