/**
 * Per-group Linear weights in the integer runtime (graph version 3, see intmodel.ts): convert of a
 * calibrated model with `weightGroupSize`, every executor's integers against an independent exact
 * (BigInt) evaluation of the formula A = Σ_g r·Σ_{k∈g} (x − z)·w, then the requantize / dequantize
 * stage; the .lowbit round trip and the typed errors of malformed group fields.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Conv2d, Flatten, Linear, ReLU, Sequential } from '../nn/index.ts';
import { manualSeed, Rng, Tensor } from '../tensor/index.ts';
import { calibrate } from '../quant/ptq/index.ts';
import { convert } from './convert.ts';
import { IntModel, type IntGraph, type IntTensor, type LayerNode } from './intmodel.ts';
import { IntGraphError } from './validate.ts';
import { intModelFromLowbit, intModelToLowbit, loadIntModel, saveIntModel } from './io.ts';
import { nativeIntAddon } from './kernels/index.ts';
import { compileNativePlan } from './native-plan.ts';
import { runEveryIsaTests } from '../backend/native/isa-testing.ts';

const forcedIsa = process.env.LOWBIT_ISA !== undefined;

/** A 2-layer MLP K → 24 → 5 whose first row has groups of very different magnitudes (×1000 apart). */
function groupedModel(scheme: string, G: number, seed: number): { model: Sequential; x: Tensor } {
  manualSeed(seed);
  const K = 64;
  const rng = new Rng(seed);
  const model = new Sequential(new Flatten(), new Linear(K, 24), new ReLU(), new Linear(24, 5));
  const fc1 = model.getSubmodule('1') as Linear;
  for (let k = 0; k < K; k++) fc1.weight.data[k] = rng.normal() * (Math.floor(k / G) % 2 === 0 ? 1 : 0.001);
  const x = new Tensor(Float32Array.from({ length: 96 * K }, () => rng.normal()), [96, K]);
  calibrate(model, [{ x }], { scheme, weightMethod: 'minmax', keepFirstLast8bit: false, weightGroupSize: G, samples: 96 });
  return { model, x };
}

/** round(v·m·2^−n), half away from zero, in BigInt. */
function roundShift(v: bigint, m: bigint, n: number): bigint {
  const p = v * m;
  if (n <= 0) return p << BigInt(-n);
  const a = p < 0n ? -p : p;
  const r = (a + (1n << BigInt(n - 1))) >> BigInt(n);
  return p < 0n ? -r : r;
}

/** The exact integer formula of a per-group linear node on inputs x [N, K]: A[N, O] in BigInt. */
function groupSums(model: IntModel, node: LayerNode, x: Int32Array): bigint[] {
  const K = node.inFeatures;
  const O = node.outFeatures;
  const G = node.weightGroupSize!;
  const w = model.weightValues(node);
  const r = model.tensor(node.groupMultipliers!).data as Int32Array;
  const z = node.input.mode === 'affine' ? node.input.zeroPoint : 0;
  const n = x.length / K;
  const out: bigint[] = [];
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < O; c++) {
      let A = 0n;
      for (let g = 0; g < K / G; g++) {
        let part = 0n;
        for (let j = 0; j < G; j++) part += BigInt(w[c * K + g * G + j]!) * BigInt(x[b * K + g * G + j]! - z);
        A += BigInt(r[c * (K / G) + g]!) * part;
      }
      out.push(A);
    }
  }
  return out;
}

/** Executors of an IntModel (name → configure); native only when the addon is loaded. */
function executors(): [string, (m: IntModel) => void][] {
  const list: [string, (m: IntModel) => void][] = [
    ['ts reference', (m) => { m.useNative = false; m.tsExecutor = 'reference'; }],
    ['ts fast (double)', (m) => { m.useNative = false; m.tsExecutor = 'fast'; m.tsKernels = 'double'; }],
    ['ts fast (wasm)', (m) => { m.useNative = false; m.tsExecutor = 'fast'; m.tsKernels = 'wasm'; }],
  ];
  if (nativeIntAddon()) list.push(['native', (m) => { m.useNative = true; m.tsExecutor = 'fast'; m.tsKernels = 'wasm'; }]);
  return list;
}

function layerNodes(m: IntModel): LayerNode[] {
  return m.nodes.filter((n): n is LayerNode => n.op === 'linear' || n.op === 'conv2d');
}

describe('runtime: per-group Linear weights', () => {
  for (const scheme of ['w8a8', 'w4a8', 'w2a8']) {
    for (const G of [8, 16, 32]) {
      it(`${scheme} G = ${G}: every executor gives the exact integers of the formula; logits near the fake-quant model`, () => {
        const { model, x } = groupedModel(scheme, G, 11 + G);
        const im = convert(model, { sample: x });
        assert.equal(im.graph.version, 3);
        const [fc1, fc2] = layerNodes(im);
        assert.equal(fc1!.weightGroupSize, G);
        assert.equal(fc2!.weightGroupSize, 24 % G === 0 ? G : undefined);
        const R = fc1!.groupShift!;
        const r = im.tensor(fc1!.groupMultipliers!).data as Int32Array;
        // row 0: every other group is 1000× smaller, so its multiplier is about 2^R/1000, the others 2^R-ish
        assert.ok(r[1]! > 0 && r[1]! < 2 ** R / 200 && Math.max(r[0]!, r[2]!) > 2 ** R / 4, `r row 0: ${Array.from(r.subarray(0, 4))}`);
        const v = im.verification!;
        assert.equal(v.argmaxAgreement, 1);
        // the integer model differs from the fake-quant model only by the rounding of r: a hidden
        // value may round to the neighbouring integer (rarely), which moves a logit by at most
        // max|w| of the last layer per such flip; logits are otherwise within 0.05 LSB
        const [fc1Name, fc2Name] = [fc1!.name, fc2!.name];
        assert.equal(v.layerMismatch[fc1Name], 0);
        const flips = Math.round(v.layerMismatch[fc2Name]! * x.shape[0]! * 24);
        assert.ok(flips <= 2, `${flips} hidden values differ from the float64 simulation`);
        const wMax = im.weightValues(fc2!).reduce((m, w) => Math.max(m, Math.abs(w)), 0);
        assert.ok(v.maxLogitLsb < 0.1 + flips * wMax, `max logit error vs the float64 fake-quant simulation ${v.maxLogitLsb} LSB with ${flips} hidden flips`);

        // reference: the TS reference executor's trace holds fc1's input and fc2's (fc1's requantized output)
        im.useNative = false;
        im.tsExecutor = 'reference';
        const trace = new Map<string, { shape: number[]; data: Int32Array }>();
        const ref = im.run(x, undefined, { trace });
        const x1 = trace.get(fc1!.name)!.data;
        const x2 = trace.get(fc2!.name)!.data;
        // fc1: requantize of A (+ fused ReLU)
        const A1 = groupSums(im, fc1!, x1);
        const o1 = fc1!.output;
        assert.equal(o1.mode, 'requantize');
        if (o1.mode !== 'requantize') return;
        const bias = im.tensor(o1.bias).data as Int32Array;
        const mult = im.tensor(o1.multiplier).data as Int32Array;
        const shift = im.tensor(o1.shift).data as Int32Array;
        const O1 = fc1!.outFeatures;
        const expected1 = A1.map((A, i) => {
          const c = i % O1;
          const q = Number(roundShift(A * (1n << BigInt(o1.biasShift)) + BigInt(bias[c]!), BigInt(mult[c]!), shift[c]!)) + o1.zeroPoint;
          return Math.min(o1.hi, Math.max(o1.lo, q));
        });
        assert.deepEqual(Array.from(x2), expected1);
        // fc2: dequantize y = fl32(A·S + B) in float64
        const o2 = fc2!.output;
        assert.equal(o2.mode, 'dequantize');
        if (o2.mode !== 'dequantize') return;
        const S = im.tensor(o2.scale).data as Float32Array;
        const B = im.tensor(o2.bias).data as Float32Array;
        const A2 = fc2!.weightGroupSize !== undefined ? groupSums(im, fc2!, x2) : null;
        if (A2) assert.deepEqual(Array.from(ref), A2.map((A, i) => Math.fround(Number(A) * S[i % 5]! + B[i % 5]!)));
        const seven = new Tensor(x.data.slice(0, 7 * 64), [7, 64]); // a batch that is not a multiple of the kernels' row blocks
        for (const [name, configure] of executors()) {
          configure(im);
          if (name === 'native') assert.equal(im.nativeUnavailableReason(), null);
          assert.deepEqual(Array.from(im.run(x)), Array.from(ref), name);
          assert.deepEqual(Array.from(im.run(seven)), Array.from(ref.subarray(0, 7 * 5)), `${name}, 7 samples`);
        }
        // the fast TypeScript / wasm executors run the layer on the reference loop, and say so
        im.tsExecutor = 'fast';
        im.tsKernels = 'wasm';
        assert.match(im.wasmLayerFallback(fc1!.name) ?? '', /per-group weights \(groups of \d+\) run on the reference per-group loop/);
      });
    }
  }

  it('a grouped Linear after flattening a multi-channel map (native: inputs gathered from NHWC) gives the same logits on every executor', () => {
    manualSeed(21);
    const rng = new Rng(21);
    const model = new Sequential(new Conv2d(1, 4, 3), new ReLU(), new Flatten(), new Linear(4 * 4 * 4, 5));
    const x = new Tensor(Float32Array.from({ length: 32 * 36 }, () => rng.normal()), [32, 1, 6, 6]);
    calibrate(model, [{ x }], { scheme: 'w4a8', keepFirstLast8bit: false, weightGroupSize: 16, samples: 32 });
    const im = convert(model, { sample: x });
    assert.deepEqual(layerNodes(im).map((n) => n.weightGroupSize), [undefined, 16]);
    assert.equal(im.verification!.argmaxAgreement, 1);
    im.useNative = false;
    im.tsExecutor = 'reference';
    const ref = im.run(x);
    const trace = new Map<string, { shape: number[]; data: Int32Array }>();
    im.run(x, undefined, { trace });
    const fc = layerNodes(im)[1]!;
    const A = groupSums(im, fc, trace.get(fc.name)!.data);
    const out = fc.output;
    assert.ok(out.mode === 'dequantize');
    const S = im.tensor(out.scale).data as Float32Array;
    const B = im.tensor(out.bias).data as Float32Array;
    assert.deepEqual(Array.from(ref), A.map((a, i) => Math.fround(Number(a) * S[i % 5]! + B[i % 5]!)));
    for (const [name, configure] of executors()) {
      configure(im);
      if (name === 'native') assert.equal(im.nativeUnavailableReason(), null);
      assert.deepEqual(Array.from(im.run(x)), Array.from(ref), name);
    }
  });

  it('.lowbit round trip keeps the group fields and the logits; a model without groups is written as before (version 1, no group fields)', () => {
    const { model, x } = groupedModel('w4a8', 16, 3);
    const im = convert(model, { sample: x });
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-group-'));
    try {
      saveIntModel(join(dir, 'g.lowbit'), im);
      const back = loadIntModel(join(dir, 'g.lowbit'));
      assert.equal(back.graph.version, 3);
      assert.deepEqual(layerNodes(back).map((n) => n.weightGroupSize), [16, undefined]);
      assert.deepEqual(Array.from(back.run(x)), Array.from(im.run(x)));
      assert.match(back.formatLayers(), /w4a8 g16/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    manualSeed(4);
    const plain = new Sequential(new Flatten(), new Linear(64, 24), new ReLU(), new Linear(24, 5));
    calibrate(plain, [{ x }], { scheme: 'w4a8', keepFirstLast8bit: false, samples: 96 });
    const pm = convert(plain, { sample: x });
    assert.equal(pm.graph.version, 1);
    const file = intModelToLowbit(pm);
    assert.equal((file.metadata as { intModel: { version: number } }).intModel.version, 1);
    for (const node of file.graph) for (const f of ['weightGroupSize', 'groupMultipliers', 'groupShift']) assert.equal(f in node, false);
  });

  it('malformed group fields are refused with IntGraphError (on load too)', () => {
    const { model, x } = groupedModel('w4a8', 8, 5);
    const im = convert(model, { sample: x });
    const fc1Index = im.nodes.findIndex((n) => n.op === 'linear');
    const fc1 = im.nodes[fc1Index] as LayerNode;
    const build = (edit: (node: Record<string, unknown>, graph: Record<string, unknown>, tensors: Map<string, IntTensor>) => void): IntModel => {
      const graph = JSON.parse(JSON.stringify(im.graph)) as Record<string, unknown>;
      const tensors = new Map(im.tensors);
      edit((graph.nodes as Record<string, unknown>[])[fc1Index]!, graph, tensors);
      return new IntModel(graph as unknown as IntGraph, tensors);
    };
    const O = fc1.outFeatures;
    const K = fc1.inFeatures;
    const cases: [string, RegExp, (node: Record<string, unknown>, graph: Record<string, unknown>, tensors: Map<string, IntTensor>) => void][] = [
      ['multiplier tensor of the wrong size', /expected 192 elements/, (_n, _g, t) => t.set(fc1.groupMultipliers!, { dtype: 'int32', shape: [O, K / 8 - 1], data: new Int32Array(O * (K / 8 - 1)) })],
      ['multiplier tensor of the wrong shape', /expected \[24, 8\]/, (_n, _g, t) => t.set(fc1.groupMultipliers!, { dtype: 'int32', shape: [K / 8, O], data: new Int32Array(O * (K / 8)) })],
      ['multiplier tensor of float32', /is float32, expected int32/, (_n, _g, t) => t.set(fc1.groupMultipliers!, { dtype: 'float32', shape: [O, K / 8], data: new Float32Array(O * (K / 8)) })],
      ['G not dividing inFeatures', /weightGroupSize 24 must be a positive integer dividing inFeatures 64/, (n) => { n.weightGroupSize = 24; }],
      ['G = 0', /weightGroupSize 0/, (n) => { n.weightGroupSize = 0; }],
      ['R out of range', /groupShift 25 must be an integer in \[0, 24\]/, (n) => { n.groupShift = 25; }],
      ['R not an integer', /groupShift 1.5/, (n) => { n.groupShift = 1.5; }],
      ['a multiplier above 2^R', /group multiplier 0 is \d+, outside \[0, 2\^4\]/, (n) => { n.groupShift = 4; }],
      ['a negative multiplier', /group multiplier 3 is -1/, (_n, _g, t) => { const d = Int32Array.from(t.get(fc1.groupMultipliers!)!.data as Int32Array); d[3] = -1; t.set(fc1.groupMultipliers!, { dtype: 'int32', shape: [O, K / 8], data: d }); }],
      ['a group field missing', /need weightGroupSize, groupMultipliers and groupShift together/, (n) => { delete n.groupShift; }],
      ['graph version 2', /need graph version 3 \(this graph is version 2\)/, (_n, g) => { g.version = 2; }],
      ['a sign output', /needs a requantize or dequantize output/, (n, _g, t) => { n.output = { mode: 'sign', threshold: 'th', direction: 'dir' }; t.set('th', { dtype: 'int32', shape: [O], data: new Int32Array(O) }); t.set('dir', { dtype: 'int32', shape: [O], data: new Int32Array(O) }); }],
      ['a sum beyond 2^53', /beyond 2\^53/, (n) => { n.groupShift = 24; (n.output as Record<string, unknown>).biasShift = 31; }],
    ];
    for (const [what, message, edit] of cases) {
      assert.throws(() => build(edit), (e: unknown) => e instanceof IntGraphError && message.test(e.message), what);
    }
    // the same checks run when a file is read (the reader builds the IntModel)
    const file = intModelToLowbit(im);
    const bad = { ...file, graph: file.graph.map((n, i) => (i === fc1Index ? { ...n, weightGroupSize: 5 } : n)) };
    assert.throws(() => intModelFromLowbit(bad), IntGraphError);
    // an older reader: the graph version 3 marker is in the file's metadata
    assert.equal((file.metadata as { intModel: { version: number } }).intModel.version, 3);
    const unknownVersion = { ...file, metadata: { ...file.metadata, intModel: { format: 'lowbit-intmodel', version: 4, inputShape: [64] } } };
    assert.throws(() => intModelFromLowbit(unknownVersion), /version 1, 2 or 3/);
  });
});

/**
 * A Flatten → Linear(K, O1) → ReLU → Linear(O1, O2) model, both layers grouped where G divides
 * their inputs, calibrated on random inputs (seeded).
 */
function edgeModel(K: number, O1: number, O2: number, G: number, seed: number): { model: Sequential; x: Tensor } {
  manualSeed(seed);
  const rng = new Rng(seed);
  const model = new Sequential(new Flatten(), new Linear(K, O1), new ReLU(), new Linear(O1, O2));
  const x = new Tensor(Float32Array.from({ length: 40 * K }, () => rng.normal()), [40, K]);
  calibrate(model, [{ x }], { scheme: 'w4a8', weightMethod: 'minmax', keepFirstLast8bit: false, weightGroupSize: G, samples: 40 });
  return { model, x };
}

describe('runtime: per-group Linear, native kernel edges', () => {
  // (K, O1, O2, G): rows not a multiple of the 32-row tile (17, 33, 40, 48, 5), one group per row
  // (K = G), groups of 4 (one 4-byte k-step per group), G = 24 (a multiple of 4 that is not 16 / 32)
  const shapes: [number, number, number, number][] = [[32, 17, 5, 32], [64, 48, 5, 16], [96, 33, 7, 8], [12, 20, 5, 4], [48, 24, 3, 24], [64, 40, 40, 8]];
  it('[every-isa] native = TypeScript reference = the exact formula, batches 1 / 3 / 4 / 5 / 7 / 33, 1 and 2 threads', { skip: nativeIntAddon() ? false : 'native addon without the IntModel executor' }, () => {
    const addon = nativeIntAddon()!;
    const saved = addon.info().threads;
    const vnni = !forcedIsa && addon.info().isa === 'avx512' && addon.info().features.includes('avx512vnni');
    try {
      for (const [K, O1, O2, G] of shapes) {
        const label = `K ${K}, O ${O1} / ${O2}, G ${G}`;
        const { model, x } = edgeModel(K, O1, O2, G, K + O1 + G);
        const im = convert(model, { sample: x });
        const [fc1, fc2] = layerNodes(im);
        assert.equal(fc1!.weightGroupSize, G, label);
        assert.equal(fc2!.weightGroupSize, O1 % G === 0 ? G : undefined, label);
        // the reference executor against the exact formula on the last layer (dequantize output)
        im.useNative = false;
        im.tsExecutor = 'reference';
        const trace = new Map<string, { shape: number[]; data: Int32Array }>();
        const ref = im.run(x, undefined, { trace });
        const o2 = fc2!.output;
        assert.ok(o2.mode === 'dequantize');
        if (fc2!.weightGroupSize !== undefined) {
          const S = im.tensor(o2.scale).data as Float32Array;
          const B = im.tensor(o2.bias).data as Float32Array;
          const A2 = groupSums(im, fc2!, trace.get(fc2!.name)!.data);
          assert.deepEqual(Array.from(ref), A2.map((A, i) => Math.fround(Number(A) * S[i % O2]! + B[i % O2]!)), `${label}: reference vs formula`);
        }
        // which kernel runs: the blocked VNNI kernel when the CPU has it, else the int16 / scalar loop
        const spec = compileNativePlan(im);
        assert.ok(typeof spec === 'object', `${label}: ${String(spec)}`);
        const kernels = addon.intPlanKernels!(addon.intPlanCreate!(spec.ops)).filter((k) => k.includes(' group'));
        assert.equal(kernels.length, fc2!.weightGroupSize !== undefined ? 2 : 1, `${label}: ${kernels.join(', ')}`);
        for (const k of kernels) assert.match(k, vnni ? new RegExp(`^linear group-vnni g${G}( \\(|$)`) : new RegExp(`^linear group g${G}( \\(|$)`), label);
        im.useNative = true;
        assert.equal(im.nativeUnavailableReason(), null);
        for (const threads of [1, 2]) {
          addon.setThreads(threads);
          for (const n of [1, 3, 4, 5, 7, 33]) {
            const xs = new Tensor(x.data.slice(0, n * K), [n, K]);
            assert.deepEqual(Array.from(im.run(xs)), Array.from(ref.subarray(0, n * O2)), `${label}: native, ${n} samples, ${threads} thread(s)`);
          }
        }
      }
    } finally {
      addon.setThreads(saved);
    }
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] test passes under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : nativeIntAddon() ? false : 'no native addon' }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 1, `expected the tagged test to pass, got ${passed}:\n${output}`);
    });
  }
});
