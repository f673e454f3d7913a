/**
 * Depthwise conv (groups = C = O, 3x3) on a MobileNet-like layer set, batch 64: the new kernels
 * (native/dwconv.cc float, native/intdw.cc int8) against the generic grouped paths of the same build
 * (addon.setDepthwiseConv(false): im2col + a one-row GEMM per channel; intPlanCreate(ops, false):
 * int8 im2col + GEMM per group), and PyTorch 1.13's depthwise Conv2d (float, and its quantized
 * Conv2d on the engine it has) through a long-lived peer (bench/peers/torch_dwconv.py), all in one
 * run: every round times every (layer, method) once, the method order rotating per round; the
 * table gives medians over rounds of wall ms per call, then the best round of each. Native: the pool at --threads (default 2);
 * PyTorch: torch.set_num_threads(--threads), OPENBLAS_NUM_THREADS=1.
 *   float fwd     conv2d forward
 *   float fwd+bwd conv2d forward + grad input + grad weight (PyTorch: forward + backward(dy) with x
 *                 and the weight requiring grad)
 *   int8          the IntModel probe plan quantize -> conv (requantize, uint8) -> flatten -> a
 *                 10-row linear: whole-plan wall time, and the conv op's thread CPU time
 *                 (intPlanProfile, chunks of a --threads run) to isolate the layer
 * Also checks that new and old paths agree (float: max |difference|; int8: identical outputs).
 *
 *   nice -n 10 node --import tsx bench/native/depthwise.ts [--rounds 7] [--threads 2] [--batch 64]
 *
 * Writes bench/results/native-depthwise-t<threads>.json (with os.loadavg() before and after).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { numberFlag } from '../flags.ts';
import { median, writeAtomic } from '../lib.ts';
import { JsonLinePeer } from '../peers/json-line-peer.ts';
import type { NativeAddon } from '../../src/backend/native/addon.ts';
import { Rng } from '../../src/tensor/index.ts';
import { IntModel, packWeightTensor, type IntGraph, type IntNode, type IntTensor } from '../../src/runtime/intmodel.ts';
import { compileNativePlan } from '../../src/runtime/native-plan.ts';
import { quantizeMultiplier } from '../../src/runtime/requantize.ts';

const rounds = numberFlag('rounds', 7, { integer: true, min: 1 });
const threads = numberFlag('threads', 2, { integer: true, min: 1 });
const batch = numberFlag('batch', 64, { integer: true, min: 1 });
const require = createRequire(import.meta.url);
const addon = require(fileURLToPath(new URL('../../build/Release/lowbit_native.node', import.meta.url))) as NativeAddon;
if (!addon.setDepthwiseConv || !addon.intPlanCreate || !addon.intPlanRun || !addon.intPlanProfile) throw new Error('addon without the depthwise kernels: rebuild it');
addon.setThreads(threads);

interface Layer { name: string; C: number; H: number; stride: number }
const layers: Layer[] = [
  { name: 'C32 14x14 s1', C: 32, H: 14, stride: 1 },
  { name: 'C96 14x14 s1', C: 96, H: 14, stride: 1 },
  { name: 'C144 14x14 s1', C: 144, H: 14, stride: 1 },
  { name: 'C144 14x14 s2', C: 144, H: 14, stride: 2 },
  { name: 'C64 14x14 s2', C: 64, H: 14, stride: 2 },
  { name: 'C144 7x7 s1', C: 144, H: 7, stride: 1 },
];
const K = 3, PAD = 1;

function intModel(l: Layer, rng: Rng): IntModel {
  const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
  const input = { mode: 'affine' as const, scale: 0.05, zeroPoint: 64, bits: 8, qmin: 0, qmax: 255 };
  const o = Math.floor((l.H + 2 * PAD - K) / l.stride) + 1;
  const features = l.C * o * o;
  const tensors = new Map<string, IntTensor>();
  tensors.set('conv.w', packWeightTensor('int8', Array.from({ length: l.C * K * K }, () => int(-128, 127)), [l.C, 1, K, K]));
  const m = quantizeMultiplier(2 ** -(Math.log2(K * K) + 8));
  tensors.set('conv.b', { dtype: 'int32', shape: [l.C], data: Int32Array.from({ length: l.C }, () => int(-50000, 50000)) });
  tensors.set('conv.m', { dtype: 'int32', shape: [l.C], data: new Int32Array(l.C).fill(m.multiplier) });
  tensors.set('conv.s', { dtype: 'int32', shape: [l.C], data: new Int32Array(l.C).fill(m.shift + 4) });
  tensors.set('fc.w', packWeightTensor('int8', Array.from({ length: 10 * features }, () => int(-1, 1)), [10, features]));
  tensors.set('fc.scale', { dtype: 'float32', shape: [10], data: new Float32Array(10).fill(1) });
  tensors.set('fc.bias', { dtype: 'float32', shape: [10], data: new Float32Array(10) });
  const nodes: IntNode[] = [
    { op: 'quantize', name: 'q', input },
    {
      op: 'conv2d', name: 'conv', inFeatures: l.C, outFeatures: l.C, weight: 'conv.w', weightFormat: 'int8', weightBits: 8,
      conv: { inChannels: l.C, outChannels: l.C, kernelSize: [K, K], stride: [l.stride, l.stride], padding: [PAD, PAD], dilation: [1, 1], groups: l.C },
      input,
      output: { mode: 'requantize', bias: 'conv.b', multiplier: 'conv.m', shift: 'conv.s', biasShift: 4, scale: 0.1, zeroPoint: 0, lo: 0, hi: 255 },
    },
    { op: 'flatten', name: 'flat', startDim: 1, endDim: -1 },
    {
      op: 'linear', name: 'fc', inFeatures: features, outFeatures: 10, weight: 'fc.w', weightFormat: 'int8', weightBits: 8,
      input: { mode: 'affine', scale: 0.1, zeroPoint: 0, bits: 8, qmin: 0, qmax: 255 },
      output: { mode: 'dequantize', scale: 'fc.scale', bias: 'fc.bias' },
    },
  ];
  const graph: IntGraph = { format: 'lowbit-intmodel', version: 1, inputShape: [l.C, l.H, l.H], nodes };
  return new IntModel(graph, tensors);
}

type Timed = () => Promise<number> | number;  // ms per call of one sample (a few calls)

/** Wall ms per call over enough calls for ~25 ms, `reps` fixed after a first call. */
function nativeTimer(call: () => void): Timed {
  call();
  let once = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    call();
    once = Math.min(once, performance.now() - t0);
  }
  const reps = Math.max(1, Math.min(200, Math.ceil(25 / Math.max(once, 1e-3))));
  return () => {
    const t = performance.now();
    for (let i = 0; i < reps; i++) call();
    return (performance.now() - t) / reps;
  };
}

const rng = new Rng(11);
const peer = await JsonLinePeer.start(fileURLToPath(new URL('../peers/torch_dwconv.py', import.meta.url)), threads, 600);
const torchNote = typeof peer === 'string' ? `PyTorch skipped: ${peer}` : `PyTorch ${String(peer.ready.torch)}, ${String(peer.ready.threads)} threads`;
console.log(`[depthwise] ${torchNote}`);
const loadBefore = loadavg();

interface Entry { layer: string; method: string; timer: Timed; samples: number[] }
const entries: Entry[] = [];
const checks: { layer: string; floatFwdMaxDiff: number; floatDxMaxDiff: number; floatDwMaxDiff: number; int8Identical: boolean; kernels: string[] }[] = [];
for (const l of layers) {
  const OH = Math.floor((l.H + 2 * PAD - K) / l.stride) + 1;
  const geom = Int32Array.from([batch, l.C, l.H, l.H, l.C, K, K, OH, OH, l.stride, l.stride, PAD, PAD, 1, 1, l.C]);
  const x = Float32Array.from({ length: batch * l.C * l.H * l.H }, () => rng.uniform() * 2 - 1);
  const w = Float32Array.from({ length: l.C * K * K }, () => rng.uniform() * 2 - 1);
  const dy = Float32Array.from({ length: batch * l.C * OH * OH }, () => rng.uniform() * 2 - 1);
  const y = new Float32Array(dy.length), dx = new Float32Array(x.length), dw = new Float32Array(w.length);
  const fwd = (on: boolean) => () => {
    addon.setDepthwiseConv!(on);
    addon.conv2d(x, w, y, geom);
  };
  const fwdBwd = (on: boolean) => () => {
    addon.setDepthwiseConv!(on);
    addon.conv2d(x, w, y, geom);
    addon.conv2dBackwardInput(dy, w, dx, geom);
    addon.conv2dBackwardWeight(x, dy, dw, geom);
  };
  // agreement of the two float paths
  const outs = [true, false].map((on) => {
    fwdBwd(on)();
    return [y.slice(), dx.slice(), dw.slice()];
  });
  const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
  const spec = compileNativePlan(intModel(l, rng));
  if (typeof spec === 'string') throw new Error(spec);
  const plans = [addon.intPlanCreate(spec.ops), addon.intPlanCreate(spec.ops, false)];
  const xi = Float32Array.from({ length: batch * l.C * l.H * l.H }, () => rng.uniform() * 8 - 2);
  const io = plans.map(() => new Float32Array(batch * spec.outputSize));
  plans.forEach((p, i) => addon.intPlanRun!(p, xi, batch, io[i]!));
  checks.push({
    layer: l.name, floatFwdMaxDiff: maxDiff(outs[0]![0]!, outs[1]![0]!), floatDxMaxDiff: maxDiff(outs[0]![1]!, outs[1]![1]!),
    floatDwMaxDiff: maxDiff(outs[0]![2]!, outs[1]![2]!), int8Identical: io[0]!.every((v, i) => Object.is(v, io[1]![i])),
    kernels: plans.map((p) => addon.intPlanKernels!(p)[1]!),
  });
  const add = (method: string, timer: Timed): void => void entries.push({ layer: l.name, method, timer, samples: [] });
  add('float fwd new', nativeTimer(fwd(true)));
  add('float fwd old', nativeTimer(fwd(false)));
  add('float fwd+bwd new', nativeTimer(fwdBwd(true)));
  add('float fwd+bwd old', nativeTimer(fwdBwd(false)));
  for (const [i, tag] of [[0, 'new'], [1, 'old']] as const) {
    add(`int8 plan ${tag}`, nativeTimer(() => addon.intPlanRun!(plans[i]!, xi, batch, io[i]!)));
    const nanos = new Float64Array(addon.intPlanKernels!(plans[i]!).length);
    add(`int8 conv cpu ${tag}`, () => {
      nanos.fill(0);
      addon.intPlanProfile!(plans[i]!, xi, batch, io[i]!, threads, nanos);
      return nanos[1]! / 1e6;
    });
  }
  if (typeof peer !== 'string') {
    const id = l.name;
    const init = await peer.request({ op: 'init', id, N: batch, C: l.C, H: l.H, k: K, stride: l.stride, pad: PAD, warmup: 2 });
    const modes: [string, string][] = [['fwd', 'torch fwd'], ['fwdbwd', 'torch fwd+bwd']];
    if (init.quantized) modes.push(['qfwd', `torch int8 ${String(init.qengine)}`]);
    for (const [mode, method] of modes) {
      let first = Infinity;
      for (let i = 0; i < 3; i++) first = Math.min(first, Number((await peer.request({ op: 'repeat', id, mode, reps: 1 })).ms));
      const reps = Math.max(1, Math.min(200, Math.ceil(25 / Math.max(first, 1e-3))));
      add(method, async () => Number((await peer.request({ op: 'repeat', id, mode, reps })).ms));
    }
  }
}

for (let r = 0; r < rounds; r++) {
  const shift = r % entries.length;
  for (let j = 0; j < entries.length; j++) {
    const e = entries[(j + shift * 7) % entries.length]!;
    e.samples.push(await e.timer());
  }
  console.log(`[depthwise] round ${r + 1}/${rounds} done, load ${loadavg().map((v) => v.toFixed(2)).join(' ')}`);
}
addon.setDepthwiseConv(true);
if (typeof peer !== 'string') await peer.close();
const loadAfter = loadavg();

// medians over rounds (the table); the best round too (on a busy machine PyTorch's OpenMP threads
// lose whole time slices in some rounds, see docs/runtime.md)
const med = (layer: string, method: string): number | null => {
  const e = entries.find((x) => x.layer === layer && x.method === method);
  return e ? median(e.samples) : null;
};
const best = (layer: string, method: string): number | null => {
  const e = entries.find((x) => x.layer === layer && x.method === method);
  return e ? Math.min(...e.samples) : null;
};
const rows = layers.map((l) => {
  const get = (m: string): number | null => med(l.name, m);
  const ratio = (a: number | null, b: number | null): number | null => (a !== null && b !== null ? a / b : null);
  const torchInt8 = entries.find((e) => e.layer === l.name && e.method.startsWith('torch int8'));
  return {
    layer: l.name,
    floatFwd: { newMs: get('float fwd new'), oldMs: get('float fwd old'), torchMs: get('torch fwd'), oldOverNew: ratio(get('float fwd old'), get('float fwd new')), torchOverNew: ratio(get('torch fwd'), get('float fwd new')) },
    floatFwdBwd: { newMs: get('float fwd+bwd new'), oldMs: get('float fwd+bwd old'), torchMs: get('torch fwd+bwd'), oldOverNew: ratio(get('float fwd+bwd old'), get('float fwd+bwd new')), torchOverNew: ratio(get('torch fwd+bwd'), get('float fwd+bwd new')) },
    int8: {
      planNewMs: get('int8 plan new'), planOldMs: get('int8 plan old'), convCpuNewMs: get('int8 conv cpu new'), convCpuOldMs: get('int8 conv cpu old'),
      convOldOverNew: ratio(get('int8 conv cpu old'), get('int8 conv cpu new')), torchMethod: torchInt8?.method ?? null,
      torchMs: torchInt8 ? median(torchInt8.samples) : null,
    },
    best: Object.fromEntries(entries.filter((e) => e.layer === l.name).map((e) => [e.method, best(l.name, e.method)])),
  };
});
const f = (v: number | null, d = 2): string => (v === null ? '-' : v.toFixed(d));
console.log(`\n[depthwise] batch ${batch}, 3x3 pad 1, ${threads} threads, medians of ${rounds} rounds (ms per call); ${torchNote}`);
console.log('layer          | float fwd new  old   torch | fwd+bwd new  old   torch | int8 plan new old | conv cpu new old | torch int8');
for (const r of rows) {
  console.log(`${r.layer.padEnd(14)} | ${f(r.floatFwd.newMs).padStart(6)} ${f(r.floatFwd.oldMs).padStart(6)} ${f(r.floatFwd.torchMs).padStart(6)} | ${f(r.floatFwdBwd.newMs).padStart(6)} ${f(r.floatFwdBwd.oldMs).padStart(6)} ${f(r.floatFwdBwd.torchMs).padStart(6)} | ${f(r.int8.planNewMs).padStart(5)} ${f(r.int8.planOldMs).padStart(5)} | ${f(r.int8.convCpuNewMs, 3).padStart(6)} ${f(r.int8.convCpuOldMs, 3).padStart(6)} | ${f(r.int8.torchMs, 3)}`);
}
console.log(`\n[depthwise] best round (ms per call)`);
for (const r of rows) console.log(`${r.layer.padEnd(14)} | ${Object.entries(r.best).map(([m, v]) => `${m} ${f(v, 3)}`).join(' | ')}`);
console.log('checks:', JSON.stringify(checks));
console.log(`load (1/5/15 min) before ${loadBefore.map((v) => v.toFixed(2)).join(' ')}, after ${loadAfter.map((v) => v.toFixed(2)).join(' ')}`);
const file = fileURLToPath(new URL(`../results/native-depthwise-t${threads}.json`, import.meta.url));
writeAtomic(file, JSON.stringify({ batch, threads, rounds, kernel: [K, K], pad: PAD, torch: torchNote, loadBefore, loadAfter, checks, rows,
  samples: entries.map((e) => ({ layer: e.layer, method: e.method, ms: e.samples })) }, null, 2) + '\n');
console.log(`[depthwise] wrote ${file}`);
