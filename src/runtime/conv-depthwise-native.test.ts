// The native executor's depthwise int8 conv (native/intdw.cc: groups = C = OC, channels in the vector
// lanes, tap pairs by int16 multiply-adds) must give the same integers as the TypeScript executor and
// as the native im2col + GEMM path (intPlanCreate(ops, false)), with the int64 and with the double
// requantization. Cases: MobileNet-like layers (3x3, stride 1 and 2, pad 1, 14x14 / 7x7, C = 32..144),
// channel counts that are not a multiple of 16 or 32 (3, 17, 40, 33), 5x5 and 7x7 kernels, pads 0..3,
// int8 / uint8 in and out, a ReLU-like (lo = z) and a ReLU6-like (lo = z, hi < 255) output clamp,
// a fused 2x2 max pool, then random draws; batches 1 and 3. The conv feeds a dequantizing linear:
// the identity when the conv output has <= 4,096 values per sample (the logits are the conv's
// integers minus the zero point, checked against the TS trace), else a 48-row projection with
// weights in {-1, 0, 1}. Input zero points are per tensor (the IntModel has no per-channel ones).
// The [every-isa] tests re-run under LOWBIT_ISA=avx2 (16 channels per step) and scalar.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../tensor/index.ts';
import { loadAddon } from '../backend/native/load.ts';
import { runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { packWeightTensor, type IntModel, type IntTensor } from './intmodel.ts';
import { assertPlansAgree, convProbeModel, setProbeRequantization } from './conv-testing.ts';
import { compileNativePlan } from './native-plan.ts';
import { quantizeMultiplier } from './requantize.ts';

const addon = loadAddon();
const skip = addon?.intPlanCreate && addon.intPlanRun && addon.intPlanKernels ? false : 'native addon without the IntModel executor';
const forcedIsa = process.env.LOWBIT_ISA !== undefined && process.env.LOWBIT_ISA !== '';

interface Geometry {
  k: number;
  C: number;
  H: number;
  W: number;
  stride: number;
  pad: number;
  signedIn: boolean;
  signedOut: boolean;
  pool: boolean;
  /** Output clamp: 'full' (the type's range), 'relu' (lo = z), 'relu6' (lo = z, hi = z + 60 within the type). */
  clamp: 'full' | 'relu' | 'relu6';
}

const IDENTITY_MAX = 4096;

function buildModel(g: Geometry, rng: Rng): { im: IntModel; features: number; outZ: number; identity: boolean } {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const [qmin, qmax] = g.signedIn ? [-128, 127] : [0, 255];
  const input = { mode: 'affine' as const, scale: 0.05, zeroPoint: int(qmin, qmax), bits: 8, qmin, qmax };
  const taps = g.k * g.k;
  const tensors = new Map<string, IntTensor>();
  tensors.set('conv.w', packWeightTensor('int8', Array.from({ length: g.C * taps }, () => int(-128, 127)), [g.C, 1, g.k, g.k]));
  setProbeRequantization(tensors, g.C, taps, int, () => rng.uniform(), false);
  const [tlo, thi] = g.signedOut ? [-128, 127] : [0, 255];
  const outZ = g.clamp === 'full' ? int(tlo, thi) : int(tlo, tlo + 100);
  const lo = g.clamp === 'full' ? tlo : outZ;
  const hi = g.clamp === 'relu6' ? Math.min(thi, outZ + 60) : thi;
  const probe = { ...g, OC: g.C, groups: g.C };
  const { im, features, identity } = convProbeModel(probe, input, { zeroPoint: outZ, lo, hi }, tensors, { identityMax: IDENTITY_MAX, projectionRows: 48, int });
  return { im, features, outZ, identity };
}

function geometries(count: number, rng: Rng): Geometry[] {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rng.uniform() * list.length)]!;
  const base = { signedIn: false, signedOut: false, pool: false, clamp: 'full' as const };
  const list: Geometry[] = [
    { ...base, k: 3, C: 144, H: 14, W: 14, stride: 1, pad: 1, clamp: 'relu6' },  // MobileNetV2-like
    { ...base, k: 3, C: 96, H: 14, W: 14, stride: 2, pad: 1, clamp: 'relu6' },
    { ...base, k: 3, C: 32, H: 7, W: 7, stride: 1, pad: 1, clamp: 'relu' },
    { ...base, k: 3, C: 64, H: 16, W: 16, stride: 2, pad: 1, signedIn: true },
    { ...base, k: 3, C: 17, H: 9, W: 11, stride: 1, pad: 1, signedOut: true },  // one masked-off tail lane block
    { ...base, k: 3, C: 3, H: 8, W: 8, stride: 2, pad: 0, signedIn: true, signedOut: true },
    { ...base, k: 3, C: 40, H: 10, W: 13, stride: 1, pad: 0, pool: true },
    { ...base, k: 3, C: 33, H: 12, W: 12, stride: 2, pad: 1, pool: true, signedIn: true, clamp: 'relu' },
    { ...base, k: 5, C: 24, H: 11, W: 9, stride: 1, pad: 2 },  // 25 taps: the last pair has one tap
    { ...base, k: 5, C: 48, H: 14, W: 14, stride: 2, pad: 2, signedIn: true, clamp: 'relu6' },
    { ...base, k: 7, C: 20, H: 9, W: 10, stride: 1, pad: 3, signedOut: true },
    { ...base, k: 1, C: 16, H: 5, W: 6, stride: 1, pad: 0 },  // one tap
    { ...base, k: 3, C: 8, H: 1, W: 1, stride: 1, pad: 1 },  // a 1x1 map: all taps but the centre in the border
  ];
  while (list.length < count) {
    const k = pick([3, 3, 5]);
    list.push({
      k, C: pick([2, 5, 16, 31, 32, 48, 72]), H: int(k, 16), W: int(k, 16), stride: int(1, 2), pad: int(0, (k - 1) / 2),
      signedIn: rng.uniform() < 0.5, signedOut: rng.uniform() < 0.5, pool: rng.uniform() < 0.25, clamp: pick(['full', 'relu', 'relu6'] as const),
    });
  }
  return list.filter((g) => !g.pool || Math.min(g.H, g.W) + 2 * g.pad - g.k >= g.stride);
}

function expectedPath(): string | null {
  const info = addon!.info();
  const isa = process.env.LOWBIT_ISA;
  if (isa === 'scalar') return 'scalar';
  if (isa === 'avx2' || isa === 'avx2-novnni') return 'avx2';
  return info.isa === 'avx512' || info.isa === 'avx2' || info.isa === 'scalar' ? info.isa : null;
}

const CASES = 24;

describe('native executor: depthwise int8 conv', { skip }, () => {
  const rng = new Rng(20261124 + 7);
  const list = geometries(CASES, rng);
  for (const g of list) {
    const label = `${g.k}x${g.k}, C ${g.C}, ${g.H}x${g.W}, stride ${g.stride}, pad ${g.pad}, ${g.signedIn ? 'int8' : 'uint8'} in, ${g.signedOut ? 'int8' : 'uint8'} out, clamp ${g.clamp}${g.pool ? ', 2x2 max pool' : ''}`;
    it(`[every-isa] ${label}: integers identical to the TS executor and to the im2col path`, () => {
      const { im, features, outZ, identity } = buildModel(g, rng);
      const spec = compileNativePlan(im);
      assert.ok(typeof spec === 'object', String(spec));
      const fast = addon!.intPlanCreate!(spec.ops);
      const im2col = addon!.intPlanCreate!(spec.ops, false);
      const doubles = addon!.intPlanCreate!(spec.ops, true, true, true, false);
      const path = expectedPath();
      const want = new RegExp(`^conv depthwise ${path ?? '\\w+'}${g.pool ? '\\+maxpool' : ' '}`);
      assert.match(addon!.intPlanKernels!(fast)[1]!, want, addon!.intPlanKernels!(fast).join(', '));
      assert.match(addon!.intPlanKernels!(doubles)[1]!, want);
      assert.doesNotMatch(addon!.intPlanKernels!(im2col)[1]!, /depthwise/);
      for (const n of [1, 3]) {
        assertPlansAgree(im, (p, x, k, out) => addon!.intPlanRun!(p, x, k, out), { fast, im2col, doubles }, { features, outZ, identity },
          { inputSize: g.C * g.H * g.W, outputSize: spec.outputSize }, n, () => rng.uniform(), 'depthwise', (m) => assert.fail(m));
      }
    });
  }

  it('a conv with groups = C but a channel multiplier of 2 (OC = 2 C) stays on the grouped im2col path', () => {
    const rng2 = new Rng(5);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng2.uniform() * (hi - lo + 1));
    const C = 8, OC = 16;
    const tensors = new Map<string, IntTensor>();
    tensors.set('conv.w', packWeightTensor('int8', Array.from({ length: OC * 9 }, () => int(-128, 127)), [OC, 1, 3, 3]));
    tensors.set('conv.b', { dtype: 'int32', shape: [OC], data: new Int32Array(OC) });
    tensors.set('conv.m', { dtype: 'int32', shape: [OC], data: new Int32Array(OC).fill(quantizeMultiplier(1 / 64).multiplier) });
    tensors.set('conv.s', { dtype: 'int32', shape: [OC], data: new Int32Array(OC).fill(quantizeMultiplier(1 / 64).shift + 4) });
    const input = { mode: 'affine' as const, scale: 0.05, zeroPoint: 128, bits: 8, qmin: 0, qmax: 255 };
    const { im } = convProbeModel({ C, OC, H: 6, W: 6, k: 3, stride: 1, pad: 1, pool: false, groups: C }, input, { zeroPoint: 0, lo: 0, hi: 255 },
      tensors, { identityMax: IDENTITY_MAX, projectionRows: 48, int });
    const spec = compileNativePlan(im);
    assert.ok(typeof spec === 'object', String(spec));
    const fast = addon!.intPlanCreate!(spec.ops);
    assert.doesNotMatch(addon!.intPlanKernels!(fast)[1]!, /depthwise/);
    const x = Float32Array.from({ length: 2 * C * 36 }, () => (rng2.uniform() * 2 - 1) * 5);
    im.useNative = false;
    const ts = im.run(x, 2);
    const a = new Float32Array(2 * spec.outputSize);
    addon!.intPlanRun!(fast, x, 2, a);
    assert.deepEqual(Array.from(a), Array.from(ts));
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= list.length, `expected the ${list.length} tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
