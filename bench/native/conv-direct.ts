/**
 * One W8A8 conv at a time: the native executor's direct kernel (native/conv3x3.cc) against the
 * im2col + GEMM path of the same build (intPlanCreate(ops, false)), per-op thread CPU time of the conv
 * (intPlanProfile, min over interleaved rounds), for the geometries the direct 1x1 / 5x5 kernels take:
 * ResNet-8's 1x1 stride-2 shortcuts, 1x1 stride 1 at a few widths, LeNet-5's conv1 / conv2 (+ 2x2 max
 * pool). Random weights and requantization constants (speed does not depend on them).
 *
 *   LOWBIT_ISA=avx2|avx2-novnni nice -n 10 node --import tsx bench/native/conv-direct.ts [--batch 64] [--rounds 9]
 *
 * Writes bench/results/native-conv-direct-<isa>.json.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { numberFlag } from '../flags.ts';
import { writeAtomic } from '../lib.ts';
import type { NativeAddon } from '../../src/backend/native/addon.ts';
import { Rng } from '../../src/tensor/index.ts';
import { IntModel, packWeightTensor, type IntGraph, type IntNode, type IntTensor } from '../../src/runtime/intmodel.ts';
import { compileNativePlan } from '../../src/runtime/native-plan.ts';
import { quantizeMultiplier } from '../../src/runtime/requantize.ts';

const batch = numberFlag('batch', 64);
const rounds = numberFlag('rounds', 9);
const require = createRequire(import.meta.url);
const addon = require(fileURLToPath(new URL('../../build/Release/lowbit_native.node', import.meta.url))) as NativeAddon;
const threads = Number(process.env.LOWBIT_THREADS ?? 1);

interface Geometry { name: string; k: number; C: number; OC: number; H: number; stride: number; pad: number; pool: boolean }
const geometries: Geometry[] = [
  { name: 'ResNet-8 shortcut 1', k: 1, C: 16, OC: 32, H: 28, stride: 2, pad: 0, pool: false },
  { name: 'ResNet-8 shortcut 2', k: 1, C: 32, OC: 64, H: 14, stride: 2, pad: 0, pool: false },
  { name: '1x1 s1 16->16 28x28', k: 1, C: 16, OC: 16, H: 28, stride: 1, pad: 0, pool: false },
  { name: '1x1 s1 64->64 14x14', k: 1, C: 64, OC: 64, H: 14, stride: 1, pad: 0, pool: false },
  { name: '1x1 s1 128->128 7x7', k: 1, C: 128, OC: 128, H: 7, stride: 1, pad: 0, pool: false },
  { name: 'LeNet-5 conv1 + pool', k: 5, C: 1, OC: 6, H: 28, stride: 1, pad: 2, pool: true },
  { name: 'LeNet-5 conv2 + pool', k: 5, C: 6, OC: 16, H: 14, stride: 1, pad: 0, pool: true },
  { name: '5x5 32->32 14x14 pad 2', k: 5, C: 32, OC: 32, H: 14, stride: 1, pad: 2, pool: false },
];

function build(g: Geometry, rng: Rng): IntModel {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const input = { mode: 'affine' as const, scale: 0.05, zeroPoint: 3, bits: 8, qmin: 0, qmax: 255 };
  const taps = g.C * g.k * g.k;
  const o = Math.floor((g.H + 2 * g.pad - g.k) / g.stride) + 1;
  const features = g.pool ? g.OC * Math.floor(o / 2) ** 2 : g.OC * o * o;
  const tensors = new Map<string, IntTensor>();
  tensors.set('conv.w', packWeightTensor('int8', Array.from({ length: g.OC * taps }, () => int(-128, 127)), [g.OC, g.C, g.k, g.k]));
  const m = quantizeMultiplier(2 ** -(Math.log2(taps) + 6));
  tensors.set('conv.b', { dtype: 'int32', shape: [g.OC], data: Int32Array.from({ length: g.OC }, () => int(-50000, 50000)) });
  tensors.set('conv.m', { dtype: 'int32', shape: [g.OC], data: new Int32Array(g.OC).fill(m.multiplier) });
  tensors.set('conv.s', { dtype: 'int32', shape: [g.OC], data: new Int32Array(g.OC).fill(m.shift + 4) });
  tensors.set('fc.w', packWeightTensor('int8', Array.from({ length: 10 * features }, () => int(-1, 1)), [10, features]));
  tensors.set('fc.scale', { dtype: 'float32', shape: [10], data: new Float32Array(10).fill(1) });
  tensors.set('fc.bias', { dtype: 'float32', shape: [10], data: new Float32Array(10) });
  const nodes: IntNode[] = [
    { op: 'quantize', name: 'q', input },
    {
      op: 'conv2d', name: 'conv', inFeatures: g.C, outFeatures: g.OC, weight: 'conv.w', weightFormat: 'int8', weightBits: 8,
      conv: { inChannels: g.C, outChannels: g.OC, kernelSize: [g.k, g.k], stride: [g.stride, g.stride], padding: [g.pad, g.pad], dilation: [1, 1], groups: 1 },
      input,
      output: { mode: 'requantize', bias: 'conv.b', multiplier: 'conv.m', shift: 'conv.s', biasShift: 4, scale: 0.1, zeroPoint: 0, lo: 0, hi: 255 },
    },
    ...(g.pool ? [{ op: 'maxpool2d' as const, name: 'pool', kernelSize: [2, 2] as const, stride: [2, 2] as const, padding: [0, 0] as const, zeroPoint: 0 }] : []),
    { op: 'flatten', name: 'flat', startDim: 1, endDim: -1 },
    {
      op: 'linear', name: 'fc', inFeatures: features, outFeatures: 10, weight: 'fc.w', weightFormat: 'int8', weightBits: 8,
      input: { mode: 'affine', scale: 0.1, zeroPoint: 0, bits: 8, qmin: 0, qmax: 255 },
      output: { mode: 'dequantize', scale: 'fc.scale', bias: 'fc.bias' },
    },
  ];
  const graph: IntGraph = { format: 'lowbit-intmodel', version: 1, inputShape: [g.C, g.H, g.H], nodes };
  return new IntModel(graph, tensors);
}

const rng = new Rng(7);
const rows: { name: string; direct: string; im2col: string; directUs: number; im2colUs: number; speedup: number; identical: boolean }[] = [];
for (const g of geometries) {
  const spec = compileNativePlan(build(g, rng));
  if (typeof spec === 'string') throw new Error(spec);
  const plans = [addon.intPlanCreate!(spec.ops), addon.intPlanCreate!(spec.ops, false)];
  const x = Float32Array.from({ length: batch * g.C * g.H * g.H }, () => rng.uniform() * 4 - 2);
  const outs = plans.map(() => new Float32Array(batch * spec.outputSize));
  plans.forEach((p, i) => addon.intPlanRun!(p, x, batch, outs[i]!));
  const identical = outs[0]!.every((v, i) => Object.is(v, outs[1]![i]));
  const best = [Infinity, Infinity];
  for (let r = 0; r < rounds; r++) {
    plans.forEach((p, i) => {
      const nanos = new Float64Array(addon.intPlanKernels!(p).length);
      addon.intPlanProfile!(p, x, batch, outs[i]!, threads, nanos);
      best[i] = Math.min(best[i]!, nanos[1]! / 1000 / batch);
    });
  }
  const [direct, im2col] = plans.map((p) => addon.intPlanKernels!(p)[1]!);
  const row = { name: g.name, direct: direct!, im2col: im2col!, directUs: best[0]!, im2colUs: best[1]!, speedup: best[1]! / best[0]!, identical };
  rows.push(row);
  console.log(`[conv-direct] ${g.name.padEnd(24)} ${row.directUs.toFixed(2).padStart(7)} µs (${direct})  vs ${row.im2colUs.toFixed(2).padStart(7)} µs (${im2col})  ${row.speedup.toFixed(2)}x  identical ${identical}`);
}
const isa = process.env.LOWBIT_ISA || 'native';
const file = fileURLToPath(new URL(`../results/native-conv-direct-${isa}.json`, import.meta.url));
writeAtomic(file, JSON.stringify({ isa, batch, rounds, threads, rows }, null, 2) + '\n');
console.log(`[conv-direct] wrote ${file}`);
