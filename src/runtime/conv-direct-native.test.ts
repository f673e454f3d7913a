// The native executor's direct 1x1 and 5x5 convs (native/conv3x3.cc, kh = kw = 1 or 5: the kernels of
// the direct 3x3 conv with kh kernel rows of kw C bytes, zero weights up to 4 bytes) must give the
// same integers as the TypeScript executor and as the native im2col + GEMM path. Cases: ResNet-8's
// stride-2 shortcuts (1x1, 16 -> 32 on 28x28, 32 -> 64 on 14x14), LeNet-5's conv1 (1 -> 6, 5x5 pad 2,
// + 2x2 max pool) and conv2 (6 -> 16, 5x5 on 14x14 / 12x12, + pool), then corners (C_in not a
// multiple of 4, C_out not a multiple of 8 or 16, odd maps, stride 2, pads 0..2, int8 / uint8 in and
// out) and random draws. A 1x1 conv with padding stays on im2col (checked). The conv feeds a
// dequantizing linear: the identity (scale 1, bias 0) when the conv output has <= 4,096 values per
// sample, so the logits are the conv's integers minus the zero point; else a 48-row projection with
// weights in {-1, 0, 1} (exact float sums). Every case also runs with the double requantization (the
// executor's epilogue instead of the kernels' own output stage).
// The [every-isa] tests re-run under LOWBIT_ISA=avx2 (AVX-VNNI ymm kernel on this CPU) and avx2-novnni
// (int16 multiply-adds); the scalar ISA has no direct kernel.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../tensor/index.ts';
import { loadAddon } from '../backend/native/load.ts';
import { runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { packWeightTensor, type IntModel, type IntTensor } from './intmodel.ts';
import { assertPlansAgree, convProbeModel, setProbeRequantization } from './conv-testing.ts';
import { compileNativePlan } from './native-plan.ts';

const addon = loadAddon();
const skip = addon?.intPlanCreate && addon.intPlanRun && addon.intPlanKernels ? false : 'native addon without the IntModel executor';
const forcedIsa = process.env.LOWBIT_ISA !== undefined && process.env.LOWBIT_ISA !== '';

interface Geometry {
  k: 1 | 5;
  C: number;
  OC: number;
  H: number;
  W: number;
  stride: number;
  pad: number;
  signedIn: boolean;
  signedOut: boolean;
  pool: boolean;
}

/** The kernel-name prefix the plan must show for the conv, from the im2col plan's GEMM name. */
function expectedKernel(g: Geometry, gemm: string): RegExp | null {
  const pool = g.pool ? '\\+maxpool' : ' ';
  if (g.k === 1 && g.pad > 0) return new RegExp(`^conv (?!direct)`);  // padded 1x1: im2col + GEMM
  let isa: string;
  if (gemm.includes('avx512-vnni')) {
    // one input channel, 5x5: the AVX-512 permute kernel (intmodel.cc) when the CPU has VBMI (this
    // one does; info().features does not list VBMI), else this kernel
    if (g.k === 5 && g.C === 1) return new RegExp(`^conv direct(5x5 avx512-vnni)?${pool}`);
    isa = 'avx512-vnni';
  } else {
    const info = addon!.info();
    if (info.isa !== 'avx2') return null;
    isa = info.features.includes('avxvnni') && process.env.LOWBIT_ISA !== 'avx2-novnni' ? 'avx-vnni' : 'avx2';
  }
  return new RegExp(`^conv direct${g.k}x${g.k} ${isa}${pool}`);
}

const IDENTITY_MAX = 4096;

function buildModel(g: Geometry, rng: Rng): { im: IntModel; features: number; outZ: number; identity: boolean } {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const [qmin, qmax] = g.signedIn ? [-128, 127] : [0, 255];
  const input = { mode: 'affine' as const, scale: 0.05, zeroPoint: int(qmin, qmax), bits: 8, qmin, qmax };
  const taps = g.C * g.k * g.k;
  const tensors = new Map<string, IntTensor>();
  tensors.set('conv.w', packWeightTensor('int8', Array.from({ length: g.OC * taps }, () => int(-128, 127)), [g.OC, g.C, g.k, g.k]));
  setProbeRequantization(tensors, g.OC, taps, int, () => rng.uniform(), rng.uniform() < 0.5);
  const [lo, hi] = g.signedOut ? [-128, 127] : [0, 255];
  const outZ = int(lo, hi);
  const { im, features, identity } = convProbeModel(g, input, { zeroPoint: outZ, lo, hi }, tensors, { identityMax: IDENTITY_MAX, projectionRows: 48, int });
  return { im, features, outZ, identity };
}

function geometries(count: number, rng: Rng): Geometry[] {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rng.uniform() * list.length)]!;
  const base = { signedIn: false, signedOut: false, pool: false };
  const list: Geometry[] = [
    { ...base, k: 1, C: 16, OC: 32, H: 28, W: 28, stride: 2, pad: 0 },  // ResNet-8's shortcuts
    { ...base, k: 1, C: 32, OC: 64, H: 14, W: 14, stride: 2, pad: 0, signedOut: true },
    { ...base, k: 1, C: 6, OC: 12, H: 13, W: 11, stride: 2, pad: 0, signedIn: true },  // C % 4 != 0: zero-weight tail bytes
    { ...base, k: 1, C: 3, OC: 8, H: 9, W: 9, stride: 1, pad: 0, signedOut: true },
    { ...base, k: 1, C: 48, OC: 40, H: 7, W: 10, stride: 1, pad: 0, signedIn: true, pool: true },
    { ...base, k: 1, C: 5, OC: 20, H: 12, W: 17, stride: 2, pad: 0 },
    { ...base, k: 1, C: 8, OC: 16, H: 9, W: 9, stride: 2, pad: 1 },  // padded: im2col
    { ...base, k: 5, C: 1, OC: 6, H: 28, W: 28, stride: 1, pad: 2, pool: true },  // LeNet-5's conv1
    { ...base, k: 5, C: 6, OC: 16, H: 14, W: 14, stride: 1, pad: 0, pool: true },  // LeNet-5's conv2
    { ...base, k: 5, C: 6, OC: 16, H: 12, W: 12, stride: 1, pad: 0, pool: true, signedIn: true, signedOut: true },
    { ...base, k: 5, C: 6, OC: 16, H: 14, W: 14, stride: 1, pad: 0 },
    { ...base, k: 5, C: 3, OC: 8, H: 15, W: 13, stride: 2, pad: 1, signedOut: true },
    { ...base, k: 5, C: 16, OC: 20, H: 11, W: 9, stride: 1, pad: 2, signedIn: true },
    { ...base, k: 5, C: 4, OC: 12, H: 7, W: 30, stride: 2, pad: 0, pool: true },
    { ...base, k: 5, C: 2, OC: 24, H: 10, W: 10, stride: 1, pad: 1, signedIn: true, pool: true },
  ];
  while (list.length < count) {
    const k = pick([1, 5] as const);
    const stride = int(1, 2);
    list.push({
      k, C: pick([1, 2, 6, 8, 16, 24]), OC: pick([6, 8, 16, 20, 32]), H: int(k, 20), W: int(k, 20), stride, pad: k === 1 ? 0 : int(0, 2),
      signedIn: rng.uniform() < 0.5, signedOut: rng.uniform() < 0.5, pool: rng.uniform() < 0.3,
    });
  }
  // a pooled map needs at least 2 x 2 conv outputs
  return list.filter((g) => !g.pool || Math.min(g.H, g.W) + 2 * g.pad - g.k >= g.stride);
}

const CASES = 24;

describe('native executor: direct 1x1 and 5x5 convs', { skip }, () => {
  const rng = new Rng(20261123 + 15);
  const list = geometries(CASES, rng);
  for (const g of list) {
    const label = `${g.k}x${g.k}, C ${g.C} -> ${g.OC}, ${g.H}x${g.W}, stride ${g.stride}, pad ${g.pad}, ${g.signedIn ? 'int8' : 'uint8'} in, ${g.signedOut ? 'int8' : 'uint8'} out${g.pool ? ', 2x2 max pool' : ''}`;
    it(`[every-isa] ${label}: integers identical to the TS executor and to the im2col path`, () => {
      const { im, features, outZ, identity } = buildModel(g, rng);
      const spec = compileNativePlan(im);
      assert.ok(typeof spec === 'object', String(spec));
      const fast = addon!.intPlanCreate!(spec.ops);
      const im2col = addon!.intPlanCreate!(spec.ops, false);
      const doubles = addon!.intPlanCreate!(spec.ops, true, true, true, false);
      const kernel = addon!.intPlanKernels!(fast)[1]!;
      const want = expectedKernel(g, addon!.intPlanKernels!(im2col)[1]!);
      if (want !== null) assert.match(kernel, want, addon!.intPlanKernels!(fast).join(', '));
      assert.doesNotMatch(addon!.intPlanKernels!(im2col)[1]!, /direct/);
      if (want !== null) assert.match(addon!.intPlanKernels!(doubles)[1]!, want);
      for (const n of [1, 3]) {
        assertPlansAgree(im, (p, x, k, out) => addon!.intPlanRun!(p, x, k, out), { fast, im2col, doubles }, { features, outZ, identity },
          { inputSize: g.C * g.H * g.W, outputSize: spec.outputSize }, n, () => rng.uniform(), 'direct', (m) => assert.fail(m));
      }
    });
  }

  for (const isa of ['avx2', 'avx2-novnni'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= list.length, `expected the ${list.length} tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
