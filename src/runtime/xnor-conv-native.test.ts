/**
 * XNOR-popcount for padded binary convs on the native executor (native/xnorconv.cc): a conv with
 * ±1 (sign) inputs and binary weights, on random geometries (C_in 16..130 incl. non-multiples of
 * 64, 3×3 with padding 1, strides 1 and 2, some dilated or 5×5 with padding 2, maps down to 1×1 where
 * every position is a border one), must give the integers of the TypeScript executor and of a
 * direct loop over the taps (padded cells 0). The conv's accumulators are made visible: it
 * requantizes by exactly 1/2 (every accumulator of a position has the parity of its valid tap count,
 * so nothing is lost) and an identity Linear dequantizes them with scale 1. Tests tagged [every-isa]
 * re-run under LOWBIT_ISA=avx2 and scalar (the popcount GEMM has a kernel per ISA).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../tensor/index.ts';
import { loadAddon } from '../backend/native/load.ts';
import { runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { IntModel, packWeightTensor, type IntNode, type IntTensor } from './intmodel.ts';
import { compileNativePlan } from './native-plan.ts';
import { convOutputSize } from './ops.ts';

const addon = loadAddon();
const skip = addon?.intPlanCreate && addon.intPlanKernels ? false : 'native addon without the IntModel executor';
const forcedIsa = process.env.LOWBIT_ISA !== undefined;

interface Geometry { C: number; O: number; H: number; W: number; k: number; stride: number; pad: number; dilation: number }

/** quantize (sign) → binary conv (requantize ×1/2 + bias) → flatten → identity Linear (dequantize, scale 1). */
function xnorModel(g: Geometry, rng: Rng): { im: IntModel; weights: Int8Array; bias: Int32Array } {
  const { C, O, H, W, k, stride, pad, dilation } = g;
  const [OH, OW] = convOutputSize(H, W, { kernelSize: [k, k], stride: [stride, stride], padding: [pad, pad], dilation: [dilation, dilation] });
  const F = O * OH * OW;
  const weights = Int8Array.from({ length: O * C * k * k }, () => (rng.uniform() < 0.5 ? -1 : 1));
  const bias = Int32Array.from({ length: O }, () => Math.floor(rng.uniform() * 61) - 30);
  const identity = new Int8Array(F * F);
  for (let i = 0; i < F; i++) identity[i * F + i] = 1;
  const tensors = new Map<string, IntTensor>([
    ['conv.w', packWeightTensor('bits', weights, [O, C, k, k])],
    ['conv.bias', { dtype: 'int32', shape: [O], data: bias }],
    ['conv.mult', { dtype: 'int32', shape: [O], data: new Int32Array(O).fill(2 ** 30) }],
    ['conv.shift', { dtype: 'int32', shape: [O], data: new Int32Array(O).fill(31) }],
    ['fc.w', packWeightTensor('int8', identity, [F, F])],
    ['fc.S', { dtype: 'float32', shape: [F], data: new Float32Array(F).fill(1) }],
    ['fc.B', { dtype: 'float32', shape: [F], data: new Float32Array(F) }],
  ]);
  const nodes: IntNode[] = [
    { op: 'quantize', name: 'input', input: { mode: 'sign', scale: 1 } },
    {
      op: 'conv2d', name: 'conv', inFeatures: C, outFeatures: O, weight: 'conv.w', weightFormat: 'binary', weightBits: 1,
      conv: { inChannels: C, outChannels: O, kernelSize: [k, k], stride: [stride, stride], padding: [pad, pad], dilation: [dilation, dilation], groups: 1 },
      input: { mode: 'sign', scale: 1 },
      output: { mode: 'requantize', bias: 'conv.bias', multiplier: 'conv.mult', shift: 'conv.shift', biasShift: 0, scale: 0.5, zeroPoint: 0, lo: -128, hi: 127 },
    },
    { op: 'flatten', name: 'flatten', startDim: 1, endDim: -1 },
    {
      op: 'linear', name: 'fc', inFeatures: F, outFeatures: F, weight: 'fc.w', weightFormat: 'int8', weightBits: 8,
      input: { mode: 'affine', scale: 1, zeroPoint: 0, bits: 8, qmin: -128, qmax: 127 }, output: { mode: 'dequantize', scale: 'fc.S', bias: 'fc.B' },
    },
  ];
  return { im: new IntModel({ format: 'lowbit-intmodel', version: 1, inputShape: [C, H, W], nodes }, tensors), weights, bias };
}

/** The conv's requantized outputs by a direct loop: acc = Σ over in-bounds taps of sign(x)·w (padded cells 0). */
function directReference(g: Geometry, weights: Int8Array, bias: Int32Array, x: Float32Array, n: number): number[] {
  const { C, O, H, W, k, stride, pad, dilation } = g;
  const [OH, OW] = convOutputSize(H, W, { kernelSize: [k, k], stride: [stride, stride], padding: [pad, pad], dilation: [dilation, dilation] });
  const out: number[] = [];
  for (let s = 0; s < n; s++) {
    for (let o = 0; o < O; o++) {
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++) {
          let acc = 0;
          for (let c = 0; c < C; c++) {
            for (let ky = 0; ky < k; ky++) {
              for (let kx = 0; kx < k; kx++) {
                const iy = oy * stride - pad + ky * dilation;
                const ix = ox * stride - pad + kx * dilation;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                const sx = x[((s * C + c) * H + iy) * W + ix]! >= 0 ? 1 : -1;
                acc += sx * weights[((o * C + c) * k + ky) * k + kx]!;
              }
            }
          }
          const v = acc + bias[o]!; // odd / 2 rounds half away from zero
          const q = Math.sign(v) * Math.floor((Math.abs(v) + 1) / 2);
          out.push(Math.max(-128, Math.min(127, q)));
        }
      }
    }
  }
  return out;
}

function randomGeometry(rng: Rng, index: number): Geometry {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const channels = [16, 17, 31, 63, 64, 65, 100, 127, 128, 129, 130];
  const C = index < channels.length ? channels[index]! : int(16, 130);
  const variant = index % 6;
  const k = variant === 5 ? 5 : 3;
  const pad = variant === 5 ? 2 : 1;
  const dilation = variant === 4 ? 2 : 1;
  const stride = index % 2 === 0 ? 1 : 2;
  const tiny = index % 7 === 3; // 1×1 / 2×2 maps: every output position has padded taps
  const H = tiny ? int(1, 2) : int(1, 9);
  const W = tiny ? int(1, 2) : int(1, 9);
  const least = dilation * (k - 1) + 1 - 2 * pad; // the smallest map with an output position
  return { C, O: int(1, 24), H: Math.max(H, least), W: Math.max(W, least), k, stride, pad, dilation };
}

describe('native XNOR-popcount conv with padding', { skip }, () => {
  it('[every-isa] random geometries (C_in 16..130, pad 1, stride 1 / 2): same integers as the TypeScript executor and a direct loop', () => {
    const rng = new Rng(2026);
    let borderOnly = 0;
    for (let index = 0; index < 22; index++) {
      const g = randomGeometry(rng, index);
      const label = JSON.stringify(g);
      const { im, weights, bias } = xnorModel(g, rng);
      assert.equal(im.nativeUnavailableReason(), null, label);
      const spec = compileNativePlan(im);
      assert.ok(typeof spec === 'object', String(spec));
      const xnor = addon!.intPlanCreate!(spec.ops, true, true, true, true, true); // XNOR forced (the default picks it only where faster)
      assert.equal(addon!.intPlanKernels!(xnor)[1], 'conv xnor (int64 requantize)', label);
      const n = 1 + (index % 3);
      // inputs with exact zeros (sign(0) = +1) among random values
      const x = Float32Array.from({ length: n * g.C * g.H * g.W }, () => (rng.uniform() < 0.1 ? 0 : rng.uniform() * 2 - 1));
      im.useNative = false;
      const ts = im.run(x, n);
      const native = new Float32Array(ts.length);
      addon!.intPlanRun!(xnor, x, n, native);
      assert.deepEqual(Array.from(native), Array.from(ts), label);
      im.useNative = true;
      assert.deepEqual(Array.from(im.run(x, n)), Array.from(ts), `${label} (default plan)`);
      assert.deepEqual(Array.from(ts), directReference(g, weights, bias, x, n), label);
      // and the ±1 int8 GEMM path of the same plan (xnor off) agrees
      const gemm = addon!.intPlanCreate!(spec.ops, true, true, true, true, false);
      assert.ok(!addon!.intPlanKernels!(gemm)[1]!.includes('xnor'));
      const viaGemm = new Float32Array(native.length);
      addon!.intPlanRun!(gemm, x, n, viaGemm);
      assert.deepEqual(Array.from(viaGemm), Array.from(native), label);
      if (g.H <= 2 && g.W <= 2) borderOnly++;
    }
    assert.ok(borderOnly >= 3, `${borderOnly} maps of at most 2×2`);
  });

  it('[every-isa] a Bi-Real-sized layer (64 → 64 channels, 7×7 and 14×14, stride 1 and 2) on a batch of 16', () => {
    const rng = new Rng(7);
    for (const g of [
      { C: 64, O: 16, H: 7, W: 7, k: 3, stride: 1, pad: 1, dilation: 1 },
      { C: 32, O: 8, H: 14, W: 14, k: 3, stride: 2, pad: 1, dilation: 1 },
    ]) {
      const { im } = xnorModel(g, rng);
      const spec = compileNativePlan(im);
      assert.ok(typeof spec === 'object', String(spec));
      const xnor = addon!.intPlanCreate!(spec.ops, true, true, true, true, true);
      assert.match(addon!.intPlanKernels!(xnor)[1]!, /^conv xnor/);
      const x = Float32Array.from({ length: 16 * g.C * g.H * g.W }, () => rng.uniform() * 2 - 1);
      im.useNative = false;
      const ts = im.run(x, 16);
      const native = new Float32Array(ts.length);
      addon!.intPlanRun!(xnor, x, 16, native);
      assert.deepEqual(Array.from(native), Array.from(ts), JSON.stringify(g));
    }
  });

  it('a conv with ±1 inputs but a weight outside ±1 stays on the int8 kernels (no XNOR)', () => {
    const rng = new Rng(3);
    const g = { C: 16, O: 4, H: 5, W: 5, k: 3, stride: 1, pad: 1, dilation: 1 };
    const { im } = xnorModel(g, rng);
    const spec = compileNativePlan(im);
    assert.ok(typeof spec === 'object', String(spec));
    const w = spec.ops[1]!.w as Int8Array;
    const edited = spec.ops.map((op, i) => (i === 1 ? { ...op, w: Int8Array.from(w, (v, j) => (j === 5 ? 2 : v)) } : op));
    const create = (ops: typeof spec.ops): string => addon!.intPlanKernels!(addon!.intPlanCreate!(ops, true, true, true, true, true))[1]!;
    assert.match(create(spec.ops), /^conv xnor/);
    assert.match(create(edited), /^conv (direct3x3 )?(avx512-vnni|avx2|scalar|amx)/);
    // without the ±1-input flag (meta[32]) the binary weights alone do not select XNOR either
    const unflagged = spec.ops.map((op, i) => (i === 1 ? { ...op, meta: Int32Array.from(op.meta, (v, j) => (j === 32 ? 0 : v)) } : op));
    assert.doesNotMatch(create(unflagged), /xnor/);
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 2, `expected the 2 tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
