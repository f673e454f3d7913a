/**
 * Binary MLPs on the native executor with the sign stage fused into the GEMM micro-kernels
 * (native/intgemm.h SignOutput; plan kernels "linear avx512-vnni+sign bits", "linear binary+sign",
 * ...): int8 Linear → sign bits → XNOR-popcount Linears → sign (bits or int8 ±1) → int8 Linear.
 * Each model's thresholds are set from its own accumulators so that every channel has an exact tie
 * (d·acc = t: +1) on some sample (channels with direction 0 are constant: +1, or -1 for t > 0), and the last Linear is the identity on ±1 (dequantize with scale 1)
 * so that the logits are the last sign stage's ±1 values. The native output must equal the TypeScript
 * executor and a direct integer loop bit for bit, with the fused kernels (AVX-512) and without
 * (plans built with fuse = false; forced ISAs), on 1 and 2 threads and odd batches. Tests tagged
 * [every-isa] re-run under LOWBIT_ISA=avx2, avx2-novnni and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../tensor/index.ts';
import { loadAddon } from '../backend/native/load.ts';
import { runEveryIsaTests } from '../backend/native/isa-testing.ts';
import { IntModel, packWeightTensor, type IntNode, type IntTensor, type LayerInput } from './intmodel.ts';
import { compileNativePlan } from './native-plan.ts';

const addon = loadAddon();
const skip = addon?.intPlanCreate && addon.intPlanKernels && addon.intPlanRun ? false : 'native addon without the IntModel executor';
const forcedIsa = process.env.LOWBIT_ISA !== undefined;
/** The fused kernels run on the AVX-512 paths (VNNI for int8, VPOPCNTDQ for binary). */
const fusedExpected = !forcedIsa && addon?.info().isa === 'avx512' && ['avx512vnni', 'avx512vpopcntdq'].every((f) => addon.info().features.includes(f));

/** One hidden layer: int8 weights (the first, or on ±1 inputs) or binary ±1 weights (XNOR). */
interface Hidden { readonly width: number; readonly format: 'int8' | 'binary' }
interface MlpSpec { readonly inputs: number; readonly hidden: readonly Hidden[]; readonly zeroPoint: number; readonly signedInput: boolean }

interface Built { readonly im: IntModel; readonly want: number[] }

/**
 * The model for the batch x (n samples of spec.inputs values, multiples of the input scale 1/2 so
 * that quantization is exact), with the sign thresholds placed on exact ties (plus `offset(layer,
 * channel)`, default 0), and the expected logits from a direct integer loop.
 */
function buildMlp(spec: MlpSpec, x: Float32Array, n: number, rng: Rng, offset: (layer: number, c: number) => number = () => 0): Built {
  const tensors = new Map<string, IntTensor>();
  const scale = 0.5;
  const [qmin, qmax] = spec.signedInput ? [-128, 127] : [0, 255];
  const input: LayerInput = { mode: 'affine', scale, zeroPoint: spec.zeroPoint, bits: 8, qmin, qmax };
  const nodes: IntNode[] = [{ op: 'quantize', name: 'input', input }, { op: 'flatten', name: 'flat', startDim: 1, endDim: -1 }];
  // the layer inputs of every sample, as integers centred at the zero point (then ±1)
  let values: number[][] = [];
  for (let s = 0; s < n; s++) {
    const row: number[] = [];
    for (let k = 0; k < spec.inputs; k++) {
      const q = Math.min(qmax, Math.max(qmin, Math.round(x[s * spec.inputs + k]! / scale) + spec.zeroPoint));
      row.push(q - spec.zeroPoint);
    }
    values.push(row);
  }
  let K = spec.inputs;
  let layerInput: LayerInput = input;
  spec.hidden.forEach((h, li) => {
    const O = h.width;
    const w = Int8Array.from({ length: O * K }, () => (h.format === 'binary' ? (rng.uniform() < 0.5 ? -1 : 1) : Math.floor(rng.uniform() * 255) - 127));
    if (h.format === 'binary') {
      // the constant channels (c % 7 = 6) of a ±1 layer see, on sample c % n, their own weights
      // (c even: acc = K, no bit differs) or the opposite (c odd: acc = -K, every bit differs)
      for (let c = 6; c < O; c += 7) for (let k = 0; k < K; k++) w[c * K + k] = (c % 2 ? -1 : 1) * values[c % n]![k]!;
    }
    // accumulators by a direct loop, then thresholds: channel c ties on sample c % n
    const acc = values.map((v) => Array.from({ length: O }, (_, c) => {
      let sum = 0;
      for (let k = 0; k < K; k++) sum += v[k]! * w[c * K + k]!;
      return sum;
    }));
    // direction 0: a constant channel (t <= 0: always +1; t > 0: never, an empty interval natively)
    const d = Int32Array.from({ length: O }, (_, c) => (c % 7 === 6 ? 0 : c % 5 === 3 ? -1 : 1));
    const t = Int32Array.from({ length: O }, (_, c) => (d[c] === 0 ? c % 2 : d[c]! * acc[c % n]![c]!) + offset(li, c));
    const name = `l${li}`;
    tensors.set(`${name}.w`, packWeightTensor(h.format === 'binary' ? 'bits' : 'int8', w, [O, K]));
    tensors.set(`${name}.t`, { dtype: 'int32', shape: [O], data: t });
    tensors.set(`${name}.d`, { dtype: 'int32', shape: [O], data: d });
    nodes.push({
      op: 'linear', name, inFeatures: K, outFeatures: O, weight: `${name}.w`, weightFormat: h.format, weightBits: h.format === 'binary' ? 1 : 8,
      input: layerInput, output: { mode: 'sign', threshold: `${name}.t`, direction: `${name}.d` },
    });
    values = acc.map((row) => row.map((a, c) => (d[c]! * a >= t[c]! ? 1 : -1)));
    layerInput = { mode: 'sign', scale: 1 };
    K = O;
  });
  // the identity on ±1 inputs, dequantized with scale 1: the logits are the last sign values
  const identity = new Int8Array(K * K);
  for (let i = 0; i < K; i++) identity[i * K + i] = 1;
  tensors.set('out.w', packWeightTensor('int8', identity, [K, K]));
  tensors.set('out.S', { dtype: 'float32', shape: [K], data: new Float32Array(K).fill(1) });
  tensors.set('out.B', { dtype: 'float32', shape: [K], data: new Float32Array(K) });
  nodes.push({
    op: 'linear', name: 'out', inFeatures: K, outFeatures: K, weight: 'out.w', weightFormat: 'int8', weightBits: 8,
    input: { mode: 'sign', scale: 1 }, output: { mode: 'dequantize', scale: 'out.S', bias: 'out.B' },
  });
  const im = new IntModel({ format: 'lowbit-intmodel', version: 1, inputShape: [1, 1, spec.inputs], nodes }, tensors);
  return { im, want: values.flat() };
}

/** n samples of `inputs` values, multiples of 1/2 spread over the quantizer's range (some clamped). */
function batch(inputs: number, n: number, rng: Rng): Float32Array {
  return Float32Array.from({ length: n * inputs }, () => Math.round(rng.uniform() * 300 - 150) / 2);
}

/** Runs the plan (fuse on or off) on 1 and 2 threads; returns the kernel names of the fused plan. */
function checkNative(label: string, built: Built, x: Float32Array, n: number): string[] {
  const { im, want } = built;
  im.useNative = false;
  const ts = Array.from(im.run(x, n));
  assert.deepEqual(ts, want, `${label}: TypeScript executor vs direct loop`);
  const spec = compileNativePlan(im);
  assert.ok(typeof spec === 'object', `${label}: ${String(spec)}`);
  const saved = addon!.info().threads;
  const names: string[] = [];
  try {
    for (const fuse of [true, false]) {
      const plan = addon!.intPlanCreate!(spec.ops, true, true, fuse, true);
      if (fuse) names.push(...addon!.intPlanKernels!(plan));
      else assert.ok(!addon!.intPlanKernels!(plan).some((k) => k.includes('+sign')), `${label}: fuse = false keeps the separate sign stage`);
      for (const threads of [1, 2]) {
        addon!.setThreads(threads);
        const got = new Float32Array(n * spec.outputSize).fill(Number.NaN);
        addon!.intPlanRun!(plan, x, n, got);
        assert.deepEqual(Array.from(got), ts, `${label}: fuse ${fuse}, ${threads} thread(s)`);
      }
    }
  } finally {
    addon!.setThreads(saved);
  }
  return names;
}

const SPECS: readonly MlpSpec[] = [
  // int8 → bits → binary → int8 ±1 → identity; widths across the 64-bit words and 24-column tiles
  { inputs: 35, hidden: [{ width: 70, format: 'int8' }, { width: 65, format: 'binary' }], zeroPoint: 17, signedInput: false },
  { inputs: 101, hidden: [{ width: 129, format: 'int8' }, { width: 200, format: 'binary' }, { width: 23, format: 'binary' }], zeroPoint: -9, signedInput: true },
  // one output channel; a 64-wide layer (whole words); int8 → int8 ±1 (the next layer is int8 on ±1)
  { inputs: 64, hidden: [{ width: 1, format: 'int8' }], zeroPoint: 0, signedInput: true },
  { inputs: 50, hidden: [{ width: 64, format: 'int8' }, { width: 48, format: 'int8' }, { width: 24, format: 'binary' }], zeroPoint: 128, signedInput: false },
  // K = 1100: the int8 GEMM runs K in two blocks (partial sums between them)
  { inputs: 1100, hidden: [{ width: 90, format: 'int8' }, { width: 31, format: 'binary' }], zeroPoint: 3, signedInput: true },
  // K = 8200 bits: the popcount GEMM runs K in blocks of 128 words
  { inputs: 20, hidden: [{ width: 8200, format: 'int8' }, { width: 30, format: 'binary' }], zeroPoint: 5, signedInput: false },
  // the bench's shape, narrower: 784-256-256
  { inputs: 784, hidden: [{ width: 256, format: 'int8' }, { width: 256, format: 'binary' }], zeroPoint: -95, signedInput: true },
];

describe('native binary MLP with the sign stage fused into the GEMMs', { skip }, () => {
  it('[every-isa] odd widths and batches, exact ties: native = TypeScript = direct loop, fused and not, 1 and 2 threads', () => {
    const rng = new Rng(4711);
    const kernels = new Set<string>();
    SPECS.forEach((spec, i) => {
      for (const n of [1, 7, 37]) {
        if (spec.hidden.some((h) => h.width > 4096) && n > 7) continue;  // (the 8200-wide layer: small batches)
        const x = batch(spec.inputs, n, rng);
        const built = buildMlp(spec, x, n, rng);
        for (const k of checkNative(`model ${i} batch ${n}`, built, x, n)) kernels.add(k);
      }
    });
    const fused = [...kernels].filter((k) => k.includes('+sign'));
    if (fusedExpected) {
      for (const k of ['linear avx512-vnni+sign bits', 'linear avx512-vnni+sign', 'linear binary+sign bits', 'linear binary+sign']) {
        assert.ok(kernels.has(k), `kernel '${k}' ran (ran: ${[...kernels].join(', ')})`);
      }
    } else if (forcedIsa) {
      assert.deepEqual(fused, [], 'no fused sign kernel under a forced ISA');
    }
  });

  it('[every-isa] the ties decide: a threshold 1 higher flips its tied samples to -1', () => {
    // the check above would also pass with a sign stage comparing d·acc > t if no accumulator met its
    // threshold; here every channel of each sign stage ties on one sample, and raising the last
    // stage's thresholds of channels 0, 3 (direction -1) and 26 by 1 must turn those samples to -1
    const spec: MlpSpec = { inputs: 40, hidden: [{ width: 66, format: 'int8' }, { width: 27, format: 'binary' }], zeroPoint: 2, signedInput: true };
    const n = 9;
    const x = batch(spec.inputs, n, new Rng(98));
    const tied = buildMlp(spec, x, n, new Rng(99));
    const moved = [0, 3, 26];
    const raised = buildMlp(spec, x, n, new Rng(99), (layer, c) => (layer === 1 && moved.includes(c) ? 1 : 0));
    // (a ±1 layer's accumulators take few values: other samples of a channel may tie too)
    const flipped = raised.want.flatMap((v, i) => (v !== tied.want[i] ? [i] : []));
    for (const c of moved) assert.ok(flipped.includes((c % n) * 27 + c), `the tie of channel ${c} flips`);
    for (const i of flipped) {
      assert.ok(moved.includes(i % 27) && tied.want[i] === 1 && raised.want[i] === -1, `only ties (+1) of the moved channels flip to -1 (index ${i})`);
    }
    checkNative('tied', tied, x, n);
    checkNative('thresholds + 1', raised, x, n);
  });

  for (const isa of ['avx2', 'avx2-novnni', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : skip }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 2, `expected the 2 tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});
