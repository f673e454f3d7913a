// The native executor's direct 3x3 conv (native/conv3x3.cc: no im2col, for byte inputs with
// C % 4 == 0 channels) must give the same integers as the TypeScript executor and as the native
// im2col + GEMM path. Random geometries: C_in 1/2/3 (the stem) and 4/8/16/32/48, C_out 8/12/16/20/32/40, H/W 5..30, stride 1/2,
// pad 0/1, uint8 and int8 inputs (random zero points, inputs past the range), batch 1 and 3, some
// with a 2 x 2 max pooling after the conv (fused into it; M0 < 0 channels pool the minimum).
// The conv feeds a dequantizing linear: the identity with scale 1 and bias 0 when the conv output
// has at most 4,096 values per sample (then the logits ARE the conv's output integers minus the
// zero point, and every one is compared, besides the TS trace), else a random 64-row projection
// with weights in {-1, 0, 1} (sums stay below 2^24, so the float logits are exact integers).
// The tests tagged [every-isa] re-run under LOWBIT_ISA=avx2 (the ymm kernel with AVX-VNNI when the
// CPU has it) and avx2-novnni (the ymm kernel on exact int16 multiply-adds); the scalar ISA has no
// direct kernel (im2col only).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../tensor/index.ts';
import { loadAddon } from '../backend/native/load.ts';
import { runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { packWeightTensor, type IntModel, type IntTensor } from './intmodel.ts';
import { convProbeModel } from './conv-testing.ts';
import { compileNativePlan } from './native-plan.ts';
import { quantizeMultiplier } from './requantize.ts';

const addon = loadAddon();
const skip = addon?.intPlanCreate && addon.intPlanRun && addon.intPlanKernels ? false : 'native addon without the IntModel executor';
const forcedIsa = process.env.LOWBIT_ISA !== undefined && process.env.LOWBIT_ISA !== '';

/**
 * The direct kernel the plan must name for the im2col path's GEMM `gemm` (its kernel name): the
 * AVX-512 VNNI one with that GEMM; on the AVX2 ISA the AVX-VNNI one when the CPU has AVX-VNNI and
 * LOWBIT_ISA is not avx2-novnni, else the int16 one; none on the scalar ISA.
 */
function expectedDirect(gemm: string): string | null {
  if (gemm.includes('avx512-vnni')) return 'avx512-vnni';
  const info = addon!.info();
  if (info.isa !== 'avx2') return null;
  return info.features.includes('avxvnni') && process.env.LOWBIT_ISA !== 'avx2-novnni' ? 'avx-vnni' : 'avx2';
}

interface Case {
  C: number;
  OC: number;
  H: number;
  W: number;
  stride: number;
  pad: number;
  signedIn: boolean;
  signedOut: boolean;
  /** A 2 x 2, stride 2 max pooling after the conv (the native plan fuses it into the conv). */
  pool: boolean;
}

const IDENTITY_MAX = 4096;

function buildModel(c: Case, rng: Rng): { im: IntModel; F: number; outZ: number; identity: boolean } {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const [qmin, qmax] = c.signedIn ? [-128, 127] : [0, 255];
  const z = int(qmin, qmax);
  const input = { mode: 'affine' as const, scale: 0.05, zeroPoint: z, bits: 8, qmin, qmax };
  const K = c.C * 9;
  const tensors = new Map<string, IntTensor>();
  tensors.set('conv.w', packWeightTensor('int8', Array.from({ length: c.OC * K }, () => int(-128, 127)), [c.OC, c.C, 3, 3]));
  const M = new Int32Array(c.OC), sh = new Int32Array(c.OC), bias = new Int32Array(c.OC);
  const lowShift = rng.uniform() < 0.5;
  for (let o = 0; o < c.OC; o++) {
    // |acc| reaches ~K 255 128: scales 2^-(10..16) spread the outputs over the range and clamp some.
    // A quarter of the channels round ties: scale 2^-(4..8) (M0 = 2^30) and a bias that is a
    // multiple of 2^4 (its low biasShift bits zero: the bml = 0 tie rule for negative values). In
    // half of the models channel 0 has a ratio of 1 or 1/2 (final shift n' < 32: the AVX2 output
    // stage then takes its int64 shift instead of the int32 one)
    const ties = rng.uniform() < 0.25;
    const big = o === 0 && lowShift;
    const m = quantizeMultiplier(big ? 2 ** -int(0, 1) : ties ? 2 ** -int(4, 8) : 2 ** -(10 + rng.uniform() * 6));
    M[o] = rng.uniform() < 0.1 ? -m.multiplier : m.multiplier;
    sh[o] = m.shift + 4;
    bias[o] = ties ? 16 * int(-2000, 2000) : int(-200000, 200000);
  }
  tensors.set('conv.b', { dtype: 'int32', shape: [c.OC], data: bias });
  tensors.set('conv.m', { dtype: 'int32', shape: [c.OC], data: M });
  tensors.set('conv.s', { dtype: 'int32', shape: [c.OC], data: sh });
  const [lo, hi] = c.signedOut ? [-128, 127] : [0, 255];
  const outZ = int(lo, hi);
  const { im, features: F, identity } = convProbeModel({ ...c, k: 3 }, input, { zeroPoint: outZ, lo, hi }, tensors, { identityMax: IDENTITY_MAX, projectionRows: 64, int });
  return { im, F, outZ, identity };
}

function randomCases(count: number, rng: Rng): Case[] {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rng.uniform() * list.length)]!;
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  // first the corners the kernel must get right: every C_in / C_out, both strides and pads, both
  // input types; then random draws
  const cases: Case[] = [
    { C: 16, OC: 16, H: 28, W: 28, stride: 1, pad: 1, signedIn: false, signedOut: false, pool: false },  // ResNet-8's block conv
    { C: 16, OC: 32, H: 28, W: 28, stride: 2, pad: 1, signedIn: false, signedOut: true, pool: false },
    { C: 32, OC: 40, H: 5, W: 30, stride: 1, pad: 0, signedIn: true, signedOut: false, pool: false },
    { C: 48, OC: 8, H: 30, W: 5, stride: 2, pad: 0, signedIn: true, signedOut: true, pool: false },
    { C: 48, OC: 40, H: 9, W: 13, stride: 2, pad: 1, signedIn: false, signedOut: true, pool: false },
    { C: 32, OC: 32, H: 14, W: 14, stride: 1, pad: 1, signedIn: true, signedOut: false, pool: false },
    { C: 16, OC: 16, H: 28, W: 28, stride: 1, pad: 1, signedIn: false, signedOut: false, pool: true },  // the Fashion CNN's conv2 + pool
    { C: 32, OC: 40, H: 11, W: 13, stride: 1, pad: 0, signedIn: true, signedOut: true, pool: true },  // odd conv output (9 x 11)
    // C_out not a multiple of 8 (a partial last block of the ymm kernels), C_in 4 and 8
    { C: 4, OC: 20, H: 12, W: 17, stride: 1, pad: 1, signedIn: false, signedOut: true, pool: false },
    { C: 8, OC: 12, H: 16, W: 15, stride: 2, pad: 1, signedIn: true, signedOut: false, pool: true },
    // the stem (C_in 1..3: packed window rows)
    { C: 1, OC: 16, H: 28, W: 28, stride: 1, pad: 1, signedIn: false, signedOut: false, pool: false },  // ResNet-8's stem
    { C: 3, OC: 20, H: 13, W: 11, stride: 2, pad: 1, signedIn: false, signedOut: true, pool: true },
    { C: 2, OC: 8, H: 9, W: 30, stride: 1, pad: 0, signedIn: true, signedOut: false, pool: false },
  ];
  while (cases.length < count) {
    const stride = int(1, 2), pad = int(0, 1);
    cases.push({
      C: pick([1, 3, 4, 16, 32, 48]), OC: pick([8, 12, 16, 32, 40]), H: int(5, 30), W: int(5, 30), stride, pad,
      signedIn: rng.uniform() < 0.5, signedOut: rng.uniform() < 0.5, pool: rng.uniform() < 0.3,
    });
  }
  return cases;
}

describe('native executor: direct 3x3 conv (C % 4 == 0 byte inputs)', { skip }, () => {
  const rng = new Rng(20261123);
  for (const c of randomCases(26, rng)) {
    const label = `C ${c.C} -> ${c.OC}, ${c.H}x${c.W}, stride ${c.stride}, pad ${c.pad}, ${c.signedIn ? 'int8' : 'uint8'} in, ${c.signedOut ? 'int8' : 'uint8'} out${c.pool ? ', 2x2 max pool' : ''}`;
    it(`[every-isa] ${label}: integers identical to the TS executor and to the im2col path`, () => {
      const { im, F, outZ, identity } = buildModel(c, rng);
      const spec = compileNativePlan(im);
      assert.ok(typeof spec === 'object', String(spec));
      const fast = addon!.intPlanCreate!(spec.ops);
      const im2col = addon!.intPlanCreate!(spec.ops, false);
      const doubles = addon!.intPlanCreate!(spec.ops, true, true, true, false);
      const kernels = addon!.intPlanKernels!(fast);
      // the conv must take the direct kernel of the ISA (expectedDirect)
      const want = expectedDirect(addon!.intPlanKernels!(im2col)[1]!);
      if (want !== null) {
        assert.match(kernels[1]!, new RegExp(`^conv direct3x3 ${want}${c.pool ? '\\+maxpool' : ' '}`), kernels.join(', '));
      }
      assert.doesNotMatch(addon!.intPlanKernels!(im2col)[1]!, /direct3x3/);
      for (const n of [1, 3]) {
        const per = c.C * c.H * c.W;
        // inputs past both ends of the quantizer's range (every byte value occurs, the ends clamp)
        const x = Float32Array.from({ length: n * per }, () => (rng.uniform() * 2 - 1) * 10);
        im.useNative = false;
        const trace = new Map<string, { shape: number[]; data: Int32Array }>();
        const ts = im.run(x, n, { trace });
        const out: number = spec.outputSize;
        const a: Float32Array = new Float32Array(n * out), b: Float32Array = new Float32Array(n * out), d: Float32Array = new Float32Array(n * out);
        addon!.intPlanRun!(fast, x, n, a);
        addon!.intPlanRun!(im2col, x, n, b);
        addon!.intPlanRun!(doubles, x, n, d);
        if (identity) {
          // the logits are the conv's output integers minus the zero point, in the TS flatten order
          const ints = trace.get('fc')!.data;
          assert.equal(ints.length, n * F);
          for (let i = 0; i < n * F; i++) {
            if (a[i] !== ints[i]! - outZ) assert.fail(`batch ${n}: output ${i}: native ${a[i]! + outZ}, TS ${ints[i]}`);
          }
        }
        assert.deepEqual(Array.from(a), Array.from(ts), `batch ${n}: direct 3x3 vs TS executor`);
        assert.deepEqual(Array.from(a), Array.from(b), `batch ${n}: direct 3x3 vs im2col + GEMM`);
        assert.deepEqual(Array.from(d), Array.from(b), `batch ${n}: double requantization vs im2col + GEMM`);
      }
    });
  }

  for (const isa of ['avx2', 'avx2-novnni'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 26, `expected the 26 tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
