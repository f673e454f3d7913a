/**
 * The Bi-Real (binary) ResNet-8 on the native executor: the sign add (an add node with `output:
 * 'sign'`, native/signadd.cc) against `signOfSum` on edge values for every input type pair (ties
 * at 0, int32 extremes past the vector path, vector blocks and scalar tails), and the converted
 * Bi-Real ResNet-8 running fully native (sign adds, padded binary convs as XNOR-popcount) with
 * logits bit-identical to the TypeScript executor.
 * Tests tagged [every-isa] re-run under LOWBIT_ISA=avx2 and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { biRealResnet8 } from '../nn/index.ts';
import { manualSeed, randn, Rng } from '../tensor/index.ts';
import { noGrad } from '../autograd/engine.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { biRealPlan } from '../quant/config/index.ts';
import { loadAddon } from '../backend/native/load.ts';
import { INT32_MAX, INT32_MIN, INT_VALUE_TYPES, runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { convert, type AddNode, type IntModel } from './index.ts';
import { signOfSum } from './intmodel.ts';
import { compileNativePlan } from './native-plan.ts';

const addon = loadAddon();
const skip = addon?.intPlanCreate && addon.intSignAddValues ? false : 'native addon without the sign add';
const forcedIsa = process.env.LOWBIT_ISA !== undefined;
const TYPES = INT_VALUE_TYPES;


function convertedBiReal(seed: number, channels?: readonly [number, number, number]): { im: IntModel; x: Float32Array } {
  manualSeed(seed);
  const model = biRealResnet8(channels ? { channels } : {});
  prepareQat(model, biRealPlan(model));
  const x = randn([8, 1, 28, 28]);
  model.train();
  noGrad(() => {
    for (let i = 0; i < 2; i++) model.forward(x);
  });
  model.eval();
  return { im: convert(model, { sample: x }), x: x.data as Float32Array };
}

describe('native sign add', { skip }, () => {
  it('[every-isa] every input type pair equals signOfSum: zero sums (+1), int32 extremes, wide differences, tails', () => {
    const rng = new Rng(41);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    let cases = 0;
    let expected = 0;
    let zeros = 0;
    let wide = 0;
    for (const ta of TYPES) {
      for (const tb of TYPES) {
        for (let round = 0; round < 40; round++) {
          const n = [1, 3, 8, 13, 64, 67, 130][round % 7]!; // vector blocks (8 / 4 lanes) and scalar tails
          const a = ta.make(n);
          const b = tb.make(n);
          const pick = (t: (typeof TYPES)[number]): number => {
            if (rng.uniform() < 0.25) return [t.lo, t.lo + 1, -1, 0, 1, t.hi - 1, t.hi][int(0, 6)]!;
            return t.name === 'i32' && round % 3 !== 0 ? int(-300, 300) : int(t.lo, t.hi);
          };
          for (let i = 0; i < n; i++) { a[i] = pick(ta); b[i] = pick(tb); }
          // zero points: ordinary, and sometimes int32 extremes (differences past int32: the scalar fallback)
          const zp = (t: (typeof TYPES)[number]): number => (round % 9 === 8 ? [INT32_MIN, INT32_MAX][int(0, 1)]! : t.name === 'i32' ? int(-1000, 1000) : int(t.lo, t.hi));
          const za = zp(ta);
          const zb = zp(tb);
          let ma: number;
          let mb: number;
          if (round % 4 === 1) {
            // exact zero sums: M_a = M_b and b − z_b = −(a − z_a) on every other element (where b's type holds it)
            ma = mb = int(1, INT32_MAX);
            for (let i = 0; i < n; i += 2) {
              const bi = zb - (a[i]! - za);
              if (bi >= tb.lo && bi <= tb.hi) b[i] = bi;
            }
          } else if (round % 4 === 2) {
            [ma, mb] = [[INT32_MAX, -INT32_MAX], [-INT32_MAX, INT32_MAX], [INT32_MAX, INT32_MAX], [0, 1]][int(0, 3)]!;
          } else {
            ma = int(-INT32_MAX, INT32_MAX);
            mb = int(-INT32_MAX, INT32_MAX);
          }
          expected += n;
          const out = new Int8Array(n);
          addon!.intSignAddValues!(a, b, Float64Array.of(za, zb, ma, mb), out);
          const want = new Int32Array(n);
          signOfSum(Int32Array.from(a), Int32Array.from(b), za, zb, ma, mb, want);
          for (let i = 0; i < n; i++) {
            const da = a[i]! - za;
            const db = b[i]! - zb;
            assert.equal(out[i], want[i], `${ta.name}+${tb.name}: (${a[i]} − ${za})·${ma} + (${b[i]} − ${zb})·${mb}`);
            cases++;
            if (da * ma + db * mb === 0) zeros++;
            if (Math.abs(da) >= 2 ** 31 || Math.abs(db) >= 2 ** 31) wide++;
          }
        }
      }
    }
    assert.ok(zeros > 300, `${zeros} exact zero sums`);
    assert.ok(wide > 30, `${wide} differences beyond the int32 vector path`);
    assert.equal(cases, expected);
    // a sum of magnitude ≈ 2^63 whose sign a double would get right but an int64 wrap would not
    const out = new Int8Array(1);
    addon!.intSignAddValues!(Int32Array.of(INT32_MAX), Int32Array.of(INT32_MAX), Float64Array.of(INT32_MIN, INT32_MIN, INT32_MAX, INT32_MAX), out);
    assert.equal(out[0], 1);
    addon!.intSignAddValues!(Int32Array.of(INT32_MAX), Int32Array.of(INT32_MAX), Float64Array.of(INT32_MIN, INT32_MIN, -INT32_MAX, -INT32_MAX), out);
    assert.equal(out[0], -1);
    assert.throws(() => addon!.intSignAddValues!(new Int32Array(1), new Int32Array(1), Float64Array.of(0, 0, INT32_MIN, 1), out), /params\[2\]/);
    assert.throws(() => addon!.intSignAddValues!(new Int32Array(2), new Int32Array(2), Float64Array.of(0, 0, 1, 1), out), /equal lengths/);
  });
});

describe('Bi-Real ResNet-8 on the native executor', { skip }, () => {
  it('[every-isa] runs fully native (5 sign adds, 6 XNOR convs), logits bit-identical to the TypeScript executor on random inputs', () => {
    const { im, x } = convertedBiReal(3, [8, 16, 32]);
    assert.equal(im.nativeUnavailableReason(), null);
    const signAdds = im.nodes.filter((n): n is AddNode => n.op === 'add' && n.output === 'sign').length;
    assert.equal(signAdds, 5);
    const spec = compileNativePlan(im);
    assert.ok(typeof spec === 'object', String(spec));
    const kernels = addon!.intPlanKernels!(addon!.intPlanCreate!(spec.ops));
    assert.equal(kernels.filter((k) => k.startsWith('add sign')).length, 5, kernels.join(', '));
    // XNOR forced (by default it runs only where the int8 GEMM is scalar): the six padded binary 3×3 convs
    const xnor = addon!.intPlanCreate!(spec.ops, true, true, true, true, true);
    const xnorKernels = addon!.intPlanKernels!(xnor);
    assert.equal(xnorKernels.filter((k) => k.startsWith('conv xnor')).length, 6, xnorKernels.join(', '));
    const both = (data: Float32Array, n: number): void => {
      im.useNative = false;
      const ts = im.run(data, n);
      im.useNative = true;
      assert.deepEqual(Array.from(im.run(data, n)), Array.from(ts), `batch ${n}`);
      const viaXnor = new Float32Array(ts.length);
      addon!.intPlanRun!(xnor, data, n, viaXnor);
      assert.deepEqual(Array.from(viaXnor), Array.from(ts), `batch ${n}, XNOR convs`);
    };
    both(x, 8);
    const rng = new Rng(5);
    for (const [n, scale] of [[1, 1], [9, 3], [33, 0.3]] as const) {
      both(Float32Array.from({ length: n * 784 }, () => (rng.uniform() * 2 - 1) * scale * 2), n);
    }
  });

  it('a sign add must write int8: the native plan check refuses another output type', () => {
    const { im } = convertedBiReal(4, [4, 8, 8]);
    const spec = compileNativePlan(im);
    assert.ok(typeof spec === 'object', String(spec));
    const at = spec.ops.findIndex((op) => op.meta[0] === 6 && op.meta[21] === 1);
    assert.ok(at > 0);
    const ops = spec.ops.map((op, i) => (i === at ? { ...op, meta: Int32Array.from(op.meta, (v, k) => (k === 2 ? 0 : v)) } : op));
    assert.throws(() => addon!.intPlanCreate!(ops), /a sign add writes int8/);
    assert.doesNotThrow(() => addon!.intPlanCreate!(spec.ops));
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 2, `expected the 2 tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
