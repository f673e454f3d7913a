/**
 * The native IntModel executor on DAGs (graph version 2): value slots and the integer add op.
 * Checks the native add against `addRescaled` on edge values (ties, saturation, int32 extremes, the
 * double fast path's own rounding), a converted ResNet-8 (W8A8 and W4A4) natively against the
 * TypeScript executor bit for bit, a conv output read by a max pooling and by another op (no
 * fusion then), and that malformed slot plans are refused. Tests tagged [every-isa] re-run under
 * LOWBIT_ISA=avx2 and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { Add, Conv2d, Flatten, Linear, Module, ReLU, resnet8 } from '../nn/index.ts';
import { manualSeed, randn, Rng, type Tensor } from '../tensor/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor } from '../quant/config/qconfig.ts';
import { loadAddon } from '../backend/native/load.ts';
import type { NativeIntOp } from '../backend/native/addon.ts';
import { INT32_MAX, INT32_MIN, runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { convert, type IntModel } from './index.ts';
import { addRescaled } from './intmodel.ts';
import { compileNativePlan } from './native-plan.ts';

const addon = loadAddon();
const skip = addon?.intPlanCreate && addon.intAddValues ? false : 'native addon without the IntModel executor';
const forcedIsa = process.env.LOWBIT_ISA !== undefined;

function nativeResnet(scheme: 'w8a8' | 'w4a4'): { im: IntModel; x: Tensor } {
  manualSeed(scheme === 'w8a8' ? 0 : 1);
  const model = resnet8({ channels: [4, 8, 8] });
  const x = randn([12, 1, 28, 28]);
  prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
  model.eval();
  return { im: convert(model, { sample: x }), x };
}

/** Logits of `im` on `x` (batch n) from the TypeScript executor and from the native one. */
function bothExecutors(im: IntModel, x: Float32Array, n: number): { ts: Float32Array; native: Float32Array } {
  im.useNative = false;
  const ts = im.run(x, n);
  im.useNative = true;
  return { ts, native: im.run(x, n) };
}

describe('native executor: integer add', { skip }, () => {
  it('[every-isa] the add op equals addRescaled + clamp on edge values (ties, saturation, int32 extremes, wide products)', () => {
    const rng = new Rng(31);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    const edges = [INT32_MIN, INT32_MIN + 1, -(2 ** 21), -(2 ** 21) + 1, -129, -128, -1, 0, 1, 127, 128, 255, 2 ** 21 - 1, 2 ** 21, INT32_MAX - 1, INT32_MAX];
    let cases = 0;
    for (let round = 0; round < 300; round++) {
      const n = 64;
      const a = new Int32Array(n);
      const b = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        a[i] = i % 3 === 0 ? edges[int(0, edges.length - 1)]! : round % 2 ? int(-300, 300) : int(INT32_MIN, INT32_MAX);
        b[i] = i % 4 === 0 ? edges[int(0, edges.length - 1)]! : round % 3 ? int(-300, 300) : int(INT32_MIN, INT32_MAX);
      }
      const za = round % 5 === 0 ? edges[int(0, edges.length - 1)]! : int(-200, 200);
      const zb = int(-200, 200);
      const ma = round % 7 === 0 ? [INT32_MAX, -INT32_MAX, 1, 0][round % 4]! : int(-INT32_MAX, INT32_MAX);
      const mb = int(-INT32_MAX, INT32_MAX);
      const shift = round % 11 === 0 ? [0, 1, 62][round % 3]! : int(0, 62);
      const z = int(-1000, 1000);
      const [lo, hi] = round % 4 === 0 ? [INT32_MIN, INT32_MAX] : round % 4 === 1 ? [z, 255 + z] : [-128, 127];
      const out = new Int32Array(n);
      addon!.intAddValues!(a, b, Float64Array.from([za, zb, ma, mb, shift, z, lo, hi]), out);
      for (let i = 0; i < n; i++) {
        const r = addRescaled(a[i]! - za, ma, b[i]! - zb, mb, shift) + z;
        assert.equal(out[i], r < lo ? lo : r > hi ? hi : r, `a ${a[i]} − ${za}, M_a ${ma}, b ${b[i]} − ${zb}, M_b ${mb}, shift ${shift}, z ${z}, [${lo}, ${hi}]`);
        cases++;
      }
    }
    assert.equal(cases, 300 * 64);
    const one = (a: number, b: number, p: number[]): number => {
      const out = new Int32Array(1);
      addon!.intAddValues!(Int32Array.of(a), Int32Array.of(b), Float64Array.from(p), out);
      return out[0]!;
    };
    // ties away from zero: ±0.5 → ±1, 1.5 → 2, −2.5 → −3
    assert.equal(one(1, 0, [0, 0, 1, 0, 1, 0, INT32_MIN, INT32_MAX]), 1);
    assert.equal(one(-1, 0, [0, 0, 1, 0, 1, 0, INT32_MIN, INT32_MAX]), -1);
    assert.equal(one(3, 0, [0, 0, 1, 0, 1, 0, INT32_MIN, INT32_MAX]), 2);
    assert.equal(one(-5, 0, [0, 0, 1, 0, 1, 0, INT32_MIN, INT32_MAX]), -3);
    // (2^32 − 1)·(2^31 − 1)·2 overflows int64: saturates to hi / lo, not wrapped
    assert.equal(one(INT32_MAX, INT32_MAX, [INT32_MIN, INT32_MIN, INT32_MAX, INT32_MAX, 0, 0, -128, 127]), 127);
    assert.equal(one(INT32_MAX, INT32_MAX, [INT32_MIN, INT32_MIN, -INT32_MAX, -INT32_MAX, 0, 0, -128, 127]), -128);
    // the double fast path (|da|, |db| < 2^21) near its limits: |t| close to 2^53, large shifts
    for (let r = 0; r < 2000; r++) {
      const a = int(2 ** 21 - 2000, 2 ** 21 - 1);
      const b = int(2 ** 21 - 2000, 2 ** 21 - 1);
      const m1 = int(2 ** 31 - 5000, INT32_MAX);
      const m2 = int(2 ** 31 - 5000, INT32_MAX);
      const s = int(30, 62);
      assert.equal(one(a, b, [0, 0, m1, m2, s, 0, INT32_MIN, INT32_MAX]), addRescaled(a, m1, b, m2, s), `${a}·${m1} + ${b}·${m2} >> ${s}`);
    }
  });
});

type IntArray = Uint8Array | Int8Array | Int32Array;
const ADD_TYPES = [
  { name: 'u8', lo: 0, hi: 255, make: (n: number): IntArray => new Uint8Array(n) },
  { name: 's8', lo: -128, hi: 127, make: (n: number): IntArray => new Int8Array(n) },
  { name: 'i32', lo: INT32_MIN, hi: INT32_MAX, make: (n: number): IntArray => new Int32Array(n) },
] as const;

describe('native executor: vector add kernels', { skip }, () => {
  it('[every-isa] every input / output type combination (u8, s8, int32) equals addRescaled + clamp: ties, saturation, wide values, tails', () => {
    const rng = new Rng(77);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    let cases = 0;
    let ties = 0;
    let wide = 0;
    for (const ta of ADD_TYPES) {
      for (const tb of ADD_TYPES) {
        for (const to of ADD_TYPES) {
          for (let round = 0; round < 36; round++) {
            const n = [1, 3, 8, 13, 64, 67][round % 6]!; // vector blocks and scalar tails
            const a = ta.make(n);
            const b = tb.make(n);
            const pick = (t: (typeof ADD_TYPES)[number]): number => {
              const r = rng.uniform();
              if (r < 0.25) return [t.lo, t.lo + 1, -1, 0, 1, t.hi - 1, t.hi][int(0, 6)]!;
              return t.name === 'i32' && round % 3 === 0 ? int(-300, 300) : int(t.lo, t.hi);
            };
            for (let i = 0; i < n; i++) { a[i] = pick(ta); b[i] = pick(tb); }
            // zero points: ordinary ones, and (rarely) int32 extremes so that some |a - z_a| >= 2^31 (scalar fallback blocks)
            const zp = (t: (typeof ADD_TYPES)[number]): number => (round % 8 === 7 ? [INT32_MIN, INT32_MAX][int(0, 1)]! : t.name === 'i32' ? int(-1000, 1000) : int(t.lo, t.hi));
            const za = zp(ta);
            const zb = zp(tb);
            const tieRound = round % 4 === 1;
            const shift = tieRound ? int(1, 31) : round % 6 === 0 ? [0, 1, 62][round % 3]! : int(0, 62);
            // a tie round: M_a = 2^(n-1), M_b = 0, so odd differences a - z_a sit exactly on a half
            const ma = tieRound ? 2 ** (shift - 1) : round % 5 === 0 ? [INT32_MAX, -INT32_MAX][round % 2]! : int(-INT32_MAX, INT32_MAX);
            const mb = tieRound ? 0 : int(-INT32_MAX, INT32_MAX);
            const z = to.name === 'i32' ? int(-1000, 1000) : int(to.lo, to.hi);
            const narrow = round % 2 === 0;
            const lo = narrow ? Math.max(to.lo, z - 50) : to.lo;
            const hi = narrow ? Math.min(to.hi, z + 50) : to.hi;
            const out = to.make(n);
            addon!.intAddValues!(a, b, Float64Array.from([za, zb, ma, mb, shift, z, lo, hi]), out);
            for (let i = 0; i < n; i++) {
              const da = a[i]! - za;
              const db = b[i]! - zb;
              const r = addRescaled(da, ma, db, mb, shift) + z;
              const want = r < lo ? lo : r > hi ? hi : r;
              assert.equal(out[i], want, `${ta.name}+${tb.name}->${to.name}: a ${a[i]} − ${za}, M_a ${ma}, b ${b[i]} − ${zb}, M_b ${mb}, shift ${shift}, z ${z}, [${lo}, ${hi}]`);
              cases++;
              if (tieRound && Math.abs(da) % 2 === 1 && Math.abs(da) < 2 ** 31) ties++;
              if (Math.abs(da) >= 2 ** 31 || Math.abs(db) >= 2 ** 31) wide++;
            }
          }
        }
      }
    }
    assert.ok(ties > 500, `${ties} ties`);
    assert.ok(wide > 50, `${wide} values beyond the int32 vector path`);
    assert.equal(cases, 27 * 6 * (1 + 3 + 8 + 13 + 64 + 67)); // 25,272
    // exact ties away from zero through the vector blocks (16 lanes each): (2k + 1)/2 → k + 1, −(2k + 1)/2 → −(k + 1)
    const odd = Int32Array.from({ length: 16 }, (_, i) => (i % 2 ? -1 : 1) * (2 * i + 1));
    const tied = new Int32Array(16);
    addon!.intAddValues!(odd, new Int32Array(16), Float64Array.of(0, 0, 1, 0, 1, 0, INT32_MIN, INT32_MAX), tied);
    assert.deepEqual(Array.from(tied), Array.from(odd, (v) => Math.sign(v) * (Math.abs(v) + 1) / 2));
    // saturation of a huge sum into u8 / s8 outputs, both signs, whole blocks
    const big = new Int32Array(8).fill(INT32_MAX);
    for (const [to, m, want] of [[ADD_TYPES[0], INT32_MAX, 255], [ADD_TYPES[0], -INT32_MAX, 0], [ADD_TYPES[1], INT32_MAX, 127], [ADD_TYPES[1], -INT32_MAX, -128]] as const) {
      const out = to.make(8);
      addon!.intAddValues!(big, big, Float64Array.of(-1000, -1000, m, m, 0, 0, to.lo, to.hi), out);
      assert.deepEqual(Array.from(out), new Array(8).fill(want), `${to.name} ${m}`);
    }
    assert.throws(() => addon!.intAddValues!(new Int32Array(1), new Int32Array(1), Float64Array.of(0, 0, 1, 1, 0, 0, 0, 256), new Uint8Array(1)), /does not fit the output array's type/);
  });
});

describe('native executor runs residual DAGs', { skip }, () => {
  for (const scheme of ['w8a8', 'w4a4'] as const) {
    it(`[every-isa] ResNet-8 (narrow) ${scheme}: native plan with 3 add ops, logits bit-identical to the TypeScript executor`, () => {
      const { im, x } = nativeResnet(scheme);
      assert.equal(im.graph.version, 2);
      assert.equal(im.nativeUnavailableReason(), null);
      const spec = compileNativePlan(im);
      assert.ok(typeof spec === 'object', String(spec));
      const kernels = addon!.intPlanKernels!(addon!.intPlanCreate!(spec.ops));
      assert.equal(kernels.filter((k) => k.startsWith('add')).length, 3, kernels.join(', '));
      // fewer value slots than values: the liveness assignment reuses them
      const slots = new Set(spec.ops.map((op) => op.meta[31]).filter((s) => s >= 0));
      assert.ok(slots.size >= 3 && slots.size < spec.ops.length - 1, `slots ${[...slots].join(', ')} for ${spec.ops.length} ops`);
      const data = x.data as Float32Array;
      const a = bothExecutors(im, data, 12);
      assert.deepEqual(Array.from(a.native), Array.from(a.ts));
      // random inputs at several scales (saturating the input quantizer too), odd batch sizes
      const rng = new Rng(scheme === 'w8a8' ? 3 : 4);
      for (const [n, scale] of [[1, 1], [7, 3], [37, 0.2]] as const) {
        const xr = Float32Array.from({ length: n * 28 * 28 }, () => (rng.uniform() * 2 - 1) * scale * 2);
        const r = bothExecutors(im, xr, n);
        assert.deepEqual(Array.from(r.native), Array.from(r.ts), `batch ${n}, scale ${scale}`);
      }
    });
  }
});

/**
 * Adds of values the native executor lays out differently: s1 = flatten(conv1 map [3, 6, 6]) and
 * s2 = flatten(conv2 map [12, 3, 3]) are both NHWC but in different orders, g = Linear(s1) is in
 * plain order. add1 = s1 + s2 (two NHWC orders), add2 = g + add1 (plain + NHWC), add3 = add1 + add2
 * (NHWC + plain), then a Linear (its columns follow add3's NHWC order).
 */
class MixedLayouts extends Module {
  readonly conv1 = this.registerModule('conv1', new Conv2d(1, 3, 3, { padding: 1 }));
  readonly relu1 = this.registerModule('relu1', new ReLU());
  readonly flat1 = this.registerModule('flat1', new Flatten());
  readonly conv2 = this.registerModule('conv2', new Conv2d(3, 12, 3, { padding: 1, stride: 2 }));
  readonly relu2 = this.registerModule('relu2', new ReLU());
  readonly flat2 = this.registerModule('flat2', new Flatten());
  readonly fc = this.registerModule('fc', new Linear(108, 108));
  readonly relu3 = this.registerModule('relu3', new ReLU());
  readonly add1 = this.registerModule('add1', new Add());
  readonly add2 = this.registerModule('add2', new Add());
  readonly add3 = this.registerModule('add3', new Add());
  readonly out = this.registerModule('out', new Linear(108, 10));

  forward(x: Tensor): Tensor {
    const h = this.relu1.forward(this.conv1.forward(x));
    const s1 = this.flat1.forward(h);
    const s2 = this.flat2.forward(this.relu2.forward(this.conv2.forward(h)));
    const g = this.relu3.forward(this.fc.forward(s1));
    const y1 = this.add1.forward(s1, s2);
    const y2 = this.add2.forward(g, y1);
    return this.out.forward(this.add3.forward(y1, y2));
  }
}

describe('native executor: adds of differently laid out values', { skip }, () => {
  for (const scheme of ['w8a8', 'w4a4'] as const) {
    it(`[every-isa] ${scheme}: permute ops put the second input into the first one's order; logits bit-identical to the TypeScript executor`, () => {
      manualSeed(scheme === 'w8a8' ? 5 : 6);
      const model = new MixedLayouts();
      const x = randn([16, 1, 6, 6]);
      prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
      model.train();
      for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
      model.eval();
      const im = convert(model, { sample: x });
      assert.equal(im.nodes.filter((n) => n.op === 'add').length, 3);
      assert.equal(im.nativeUnavailableReason(), null);
      const spec = compileNativePlan(im);
      assert.ok(typeof spec === 'object', String(spec));
      const kernels = addon!.intPlanKernels!(addon!.intPlanCreate!(spec.ops));
      assert.equal(kernels.filter((k) => k === 'permute').length, 3, kernels.join(', '));
      // each permute is a bijection and directly precedes the add that reads it
      spec.ops.forEach((op, j) => {
        if (op.meta[0] !== 7) return;
        assert.deepEqual([...op.index!].sort((p, q) => p - q), Array.from({ length: 108 }, (_, k) => k));
        assert.equal(spec.ops[j + 1]!.meta[0], 6);
        assert.equal(spec.ops[j + 1]!.meta[30], op.meta[31]);
      });
      const a = bothExecutors(im, x.data as Float32Array, 16);
      assert.deepEqual(Array.from(a.native), Array.from(a.ts));
      assert.ok(a.ts.some((v) => v !== a.ts[0]), 'the logits vary');
      const rng = new Rng(scheme === 'w8a8' ? 11 : 12);
      for (const n of [1, 5, 33]) {
        const xr = Float32Array.from({ length: n * 36 }, () => (rng.uniform() * 2 - 1) * 3);
        const r = bothExecutors(im, xr, n);
        assert.deepEqual(Array.from(r.native), Array.from(r.ts), `batch ${n}`);
      }
    });
  }

  it('malformed permute ops are refused with a message', () => {
    manualSeed(5);
    const model = new MixedLayouts();
    const x = randn([8, 1, 6, 6]);
    prepareQat(model, { default: qconfigFor('w8a8', 'ste') });
    model.train();
    noGrad(() => model.forward(x));
    model.eval();
    const spec = compileNativePlan(convert(model, { sample: x }));
    assert.ok(typeof spec === 'object', String(spec));
    const j = spec.ops.findIndex((op) => op.meta[0] === 7);
    const withPermute = (op: NativeIntOp): NativeIntOp[] => spec.ops.map((o, k) => (k === j ? op : o));
    const p = spec.ops[j]!;
    assert.throws(() => addon!.intPlanCreate!(withPermute({ ...p, index: p.index!.map((v, k) => (k === 7 ? 108 : v)) })), /permute index 108 out of range \[0, 108\)/);
    assert.throws(() => addon!.intPlanCreate!(withPermute({ ...p, index: p.index!.subarray(0, 100) })), /permute size/);
    assert.throws(() => addon!.intPlanCreate!(withPermute({ ...p, meta: p.meta.map((m, q) => (q === 2 ? 2 : m)) })), /permute types/);
    assert.doesNotThrow(() => addon!.intPlanCreate!(spec.ops));
  });
});

/** meta of one plan op (layout of native/binding.cc IntPlanCreate) with slots src / src2 / dst. */
function planOp(fields: Record<number, number>, slots: [number, number, number], f64: [number, number, number] = [1, 0, 0], tensors: Omit<NativeIntOp, 'meta' | 'f64'> = {}): NativeIntOp {
  const meta = new Int32Array(32);
  for (const k of [9, 10, 11, 12, 15, 16, 17]) meta[k] = 1; // kh kw sh sw dh dw groups
  for (const [k, v] of Object.entries(fields)) meta[Number(k)] = v;
  meta[28] = 1;
  [meta[29], meta[30], meta[31]] = slots;
  return { meta, f64: Float64Array.from(f64), ...tensors };
}

/**
 * A hand-written DAG plan on [1, 6, 6] inputs: quantize → conv 3×3 (4 channels, u8) → two 2×2 max
 * poolings that both read the conv output (so the conv must not absorb the first) → an add of the
 * two → a dequantizing Linear.
 */
function sharedConvPlan(rng: Rng): NativeIntOp[] {
  const U8 = 0;
  const S8 = 1;
  const F32 = 4;
  const w = Int8Array.from({ length: 4 * 9 }, () => Math.floor(rng.uniform() * 15) - 7);
  const conv = planOp({ 0: 1, 1: U8, 2: U8, 3: 1, 4: 6, 5: 6, 6: 4, 7: 6, 8: 6, 9: 3, 10: 3, 13: 1, 14: 1, 18: 10, 21: 0, 22: 3, 23: 0, 24: 255, 25: 0, 27: 9 }, [0, -1, 1], [1, 0, 0], {
    w, mult: Int32Array.from({ length: 4 }, () => 2 ** 30 + Math.floor(rng.uniform() * 2 ** 29)), shift: Int32Array.of(36, 37, 36, 38), bias: Int32Array.of(5, -40, 100, 0),
  });
  const pool = (src: number, dst: number): NativeIntOp => planOp({ 0: 3, 1: U8, 2: U8, 3: 4, 4: 6, 5: 6, 6: 4, 7: 3, 8: 3, 9: 2, 10: 2, 11: 2, 12: 2 }, [src, -1, dst]);
  return [
    planOp({ 0: 0, 1: F32, 2: U8, 3: 1, 4: 6, 5: 6, 6: 1, 7: 6, 8: 6, 18: 128, 19: 0, 20: 255 }, [-1, -1, 0], [1 / 32, 0, 0]),
    conv,
    pool(1, 0), // the conv's max pooling (fusable by position)...
    pool(1, 2), // ...but the conv output is read again here
    planOp({ 0: 6, 1: U8, 2: S8, 3: 4, 4: 3, 5: 3, 6: 4, 7: 3, 8: 3, 18: 3, 19: 10, 20: U8, 22: -5, 23: -128, 24: 127, 25: 31 }, [0, 2, 1], [1, 2 ** 30 + 12345, -(2 ** 30) + 777]),
    planOp({ 0: 2, 1: S8, 2: F32, 3: 36, 4: 1, 5: 1, 6: 3, 7: 1, 8: 1, 18: 0, 21: 2, 27: 36 }, [1, -1, -1], [1, 0, 0], {
      w: Int8Array.from({ length: 3 * 36 }, () => Math.floor(rng.uniform() * 255) - 127), S: Float32Array.of(0.5, 0.25, 1), B: Float32Array.of(0, 1, -1),
    }),
  ];
}

describe('native slot plans', { skip }, () => {
  it('[every-isa] a conv read by a max pooling and another op is not fused (same logits as without fusion)', () => {
    const ops = sharedConvPlan(new Rng(8));
    const fused = addon!.intPlanCreate!(ops);
    const unfused = addon!.intPlanCreate!(ops, true, true, false);
    assert.deepEqual(addon!.intPlanKernels!(fused).filter((k) => k.includes('+maxpool')), []);
    const rng = new Rng(9);
    const n = 5;
    const x = Float32Array.from({ length: n * 36 }, () => rng.uniform() * 8 - 4);
    const a = new Float32Array(n * 3);
    const b = new Float32Array(n * 3);
    addon!.intPlanRun!(fused, x, n, a);
    addon!.intPlanRun!(unfused, x, n, b);
    assert.deepEqual(Array.from(a), Array.from(b));
    assert.ok(a.some((v) => v !== a[0]), 'the logits vary');
    // the same plan with a max pooling the conv alone reads (the second pooling reads the first's
    // output instead) fuses, and still gives the unfused plan's logits
    const chained = ops.map((op, i) => (i === 3 ? planOp({ 0: 4, 1: 0, 2: 2, 3: 4, 4: 3, 5: 3, 6: 4, 7: 3, 8: 3, 26: 0 }, [0, -1, 2]) : op));
    chained[4] = planOp({ 0: 6, 1: 0, 2: 1, 3: 4, 4: 3, 5: 3, 6: 4, 7: 3, 8: 3, 18: 3, 19: 10, 20: 2, 22: -5, 23: -128, 24: 127, 25: 31 }, [0, 2, 1], [1, 2 ** 30 + 12345, -(2 ** 30) + 777]);
    const f2 = addon!.intPlanCreate!(chained);
    assert.equal(addon!.intPlanKernels!(f2).filter((k) => k.includes('+maxpool')).length, 1);
    const c = new Float32Array(n * 3);
    const d = new Float32Array(n * 3);
    addon!.intPlanRun!(f2, x, n, c);
    addon!.intPlanRun!(addon!.intPlanCreate!(chained, true, true, false), x, n, d);
    assert.deepEqual(Array.from(c), Array.from(d));
  });

  it('malformed slot plans are refused with a message', () => {
    const ops = sharedConvPlan(new Rng(8));
    const edit = (i: number, k: number, v: number): NativeIntOp[] => ops.map((op, j) => (j === i ? { ...op, meta: op.meta.map((m, q) => (q === k ? v : m)) } : op));
    assert.throws(() => addon!.intPlanCreate!(edit(4, 30, 3)), /second input slot 3 is not written/); // add reads a slot nobody wrote
    assert.throws(() => addon!.intPlanCreate!(edit(2, 29, 5)), /input slot 5 is not written/);
    assert.throws(() => addon!.intPlanCreate!(edit(4, 30, -1)), /an add reads two slots/); // an add reading the float model input
    assert.throws(() => addon!.intPlanCreate!(edit(4, 31, 0)), /also the output slot/); // add writes its own input
    assert.throws(() => addon!.intPlanCreate!(edit(3, 31, 300)), /out of range/);
    assert.throws(() => addon!.intPlanCreate!(edit(5, 31, 2)), /last op writes the model output/);
    assert.throws(() => addon!.intPlanCreate!(edit(1, 29, -1)), /only the quantize op reads the model input/);
    assert.throws(() => addon!.intPlanCreate!(edit(4, 20, 1)), /second input type differs/); // b declared int8, produced uint8
    assert.throws(() => addon!.intPlanCreate!(edit(4, 3, 8)), /size differs/);
    assert.throws(() => addon!.intPlanCreate!(edit(4, 25, 63)), /add shift/);
    assert.throws(() => addon!.intPlanCreate!(edit(4, 24, 300)), /add output range/);
    assert.throws(() => addon!.intPlanCreate!(edit(2, 30, 0)), /only an add has a second input/);
    assert.throws(() => addon!.intPlanCreate!(edit(2, 28, 0)), /every op has slots/);
    assert.throws(() => addon!.intPlanCreate!(ops.map((op, j) => (j === 4 ? { ...op, f64: Float64Array.of(1, 2 ** 31, 0) } : op))), /int32 multipliers/);
    assert.throws(() => addon!.intAddValues!(new Int32Array(2), new Int32Array(3), new Float64Array(8), new Int32Array(2)), /equal lengths/);
    assert.throws(() => addon!.intAddValues!(new Int32Array(1), new Int32Array(1), Float64Array.of(0, 0, 1, 1, 63, 0, 0, 0), new Int32Array(1)), /params\[4\]/);
    // the well-formed plan is accepted
    assert.doesNotThrow(() => addon!.intPlanCreate!(ops));
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 7, `expected the 7 tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
