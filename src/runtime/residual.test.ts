/**
 * Residual networks in the integer runtime: nn.Add → QuantAdd → an integer add node in a version-2
 * DAG. Checks the add's arithmetic against exact rationals, a converted ResNet against the
 * float64 fake-quant simulation (the same integers at every layer input, logits within 1 LSB),
 * save/load of DAG files, that version-1 files written before DAGs existed still load and give
 * their logits, and the validation of DAG references.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../autograd/engine.ts';
import { Add, Linear, Module, ReLU, resnet8 } from '../nn/index.ts';
import { manualSeed, rand, randn, Rng, Tensor } from '../tensor/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { QuantAdd } from '../quant/qat/add.ts';
import { qconfigFor, type QConfig } from '../quant/config/qconfig.ts';
import { captureGraph, captureLeaves, convert, ConvertError, IntModel, type AddNode, type IntGraph, type IntNode, type LayerNode } from './index.ts';
import { addRescaled } from './intmodel.ts';
import { loadIntModel, saveIntModel } from './io.ts';
import { IntGraphError } from './validate.ts';

/** Prepared with `qconfig`, observers / LSQ steps set by a few train-mode forwards of `x`, then eval. */
function prepared<M extends Module & { forward(x: Tensor): Tensor }>(model: M, qconfig: QConfig, x: Tensor): M {
  prepareQat(model, { default: qconfig });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
  model.eval();
  return model;
}

function tinyResnet(scheme: 'w8a8' | 'w4a4', seed = 0): { model: ReturnType<typeof resnet8>; x: Tensor } {
  manualSeed(seed);
  const model = resnet8({ channels: [4, 8, 8] });
  const x = randn([12, 1, 28, 28]);
  return { model: prepared(model, qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq'), x), x };
}

/** round(t·2^−n) half away from zero for an exact BigInt t. */
function roundShift(t: bigint, n: number): bigint {
  const neg = t < 0n;
  const a = neg ? -t : t;
  const r = n === 0 ? a : (a + (1n << BigInt(n - 1))) >> BigInt(n);
  return neg ? -r : r;
}

describe('integer add', () => {
  it('addRescaled is round((da·ma + db·mb)·2^−n), half away from zero, exactly (doubles and the BigInt path)', () => {
    const rng = new Rng(5);
    const int = (lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
    for (let i = 0; i < 4000; i++) {
      const wide = i % 4 === 3; // operands beyond 2^21 take the BigInt path
      const span = wide ? 2 ** 30 : 300;
      const da = int(-span, span);
      const db = int(-span, span);
      const ma = int(-(2 ** 31) + 1, 2 ** 31 - 1);
      const mb = int(0, 2 ** 31 - 1);
      const n = int(0, 62);
      const exact = roundShift(BigInt(da) * BigInt(ma) + BigInt(db) * BigInt(mb), n);
      assert.equal(addRescaled(da, ma, db, mb, n), Number(exact), `${da}·${ma} + ${db}·${mb} >> ${n}`);
    }
    // Ties go away from zero: (1·1 + 0)·2^−1 = 0.5 → 1, −0.5 → −1, 1.5 → 2, −2.5 → −3.
    assert.equal(addRescaled(1, 1, 0, 0, 1), 1);
    assert.equal(addRescaled(-1, 1, 0, 0, 1), -1);
    assert.equal(addRescaled(3, 1, 0, 0, 1), 2);
    assert.equal(addRescaled(-5, 1, 0, 0, 1), -3);
  });

  it('an add node is within 1/2 LSB (plus the multipliers\' 2^−30 error) of the real sum, clamped to [lo, hi]', () => {
    // Two int8 inputs of different scales into a uint8 output with a fused ReLU (lo = z).
    const sa = 0.031;
    const sb = 0.0072;
    const s = 0.045;
    const shift = 31 - (Math.floor(Math.log2(sa / s)) + 1);
    const node: AddNode = {
      op: 'add', name: 'add', inputs: ['a', 'b'], inputZeroPoints: [-3, 5], inputScales: [sa, sb],
      multipliers: [Math.round((sa / s) * 2 ** shift), Math.round((sb / s) * 2 ** shift)], shift, scale: s, zeroPoint: 7, lo: 7, hi: 255,
    };
    const graph: IntGraph = {
      format: 'lowbit-intmodel', version: 2, inputShape: [256],
      nodes: [
        { op: 'quantize', name: 'a', inputs: [], input: { mode: 'affine', scale: sa, zeroPoint: -3, bits: 8, qmin: -128, qmax: 127 } },
        { op: 'quantize', name: 'b', inputs: [], input: { mode: 'affine', scale: sb, zeroPoint: 5, bits: 8, qmin: -128, qmax: 127 } },
        node,
        { op: 'linear', name: 'fc', inputs: ['add'], inFeatures: 256, outFeatures: 256, weight: 'w', weightFormat: 'int8', weightBits: 8, input: { mode: 'affine', scale: s, zeroPoint: 7, bits: 8, qmin: 0, qmax: 255 }, output: { mode: 'dequantize', scale: 'S', bias: 'B' } },
      ],
    };
    // fc is the identity on (q − z)·s, so the logits expose the add's integers: logit/s + z = q.
    const eye = new Uint8Array(256 * 256);
    for (let i = 0; i < 256; i++) eye[i * 256 + i] = 1;
    const m = new IntModel(graph, new Map([
      ['w', { dtype: 'int8', shape: [256, 256], data: eye }],
      ['S', { dtype: 'float32', shape: [256], data: new Float32Array(256).fill(1) }],
      ['B', { dtype: 'float32', shape: [256], data: new Float32Array(256) }],
    ]));
    const x = rand([64, 256], { low: -1.2, high: 1.2, rng: new Rng(2) });
    const logits = m.run(x);
    let checked = 0;
    for (let i = 0; i < x.size; i++) {
      const qa = Math.min(127, Math.max(-128, Math.round(x.data[i]! / sa) - 3));
      const qb = Math.min(127, Math.max(-128, Math.round(x.data[i]! / sb) + 5));
      const real = (qa + 3) * (sa / s) + (qb - 5) * (sb / s) + 7;
      const q = logits[i]! + 7;
      const expected = Math.min(255, Math.max(7, real));
      assert.ok(Math.abs(q - expected) <= 0.5 + 1e-6, `a ${qa}, b ${qb}: ${q} vs ${real}`);
      if (real > 7 && real < 255) checked++;
    }
    assert.ok(checked > 1000, `${checked} unclamped sums`);
  });
});

describe('residual networks convert to an integer DAG', () => {
  for (const scheme of ['w8a8', 'w4a4'] as const) {
    it(`ResNet-8 (narrow) ${scheme}: version-2 graph with 3 add nodes; every layer input equals the float64 simulation's, logits within 1 LSB`, () => {
      const { model, x } = tinyResnet(scheme);
      const im = convert(model, { sample: x });
      assert.equal(im.graph.version, 2);
      const adds = im.nodes.filter((n) => n.op === 'add');
      assert.deepEqual(adds.map((n) => n.name), ['stages.0.add', 'stages.1.add', 'stages.2.add']);
      // The block ReLU is the add's lower bound (fused): no clamp left after an add.
      for (const a of adds as AddNode[]) assert.equal(a.lo, a.zeroPoint);
      // The last add feeds the global average pooling with 16 extra fractional bits (a wide range).
      const pool = im.nodes.find((n) => n.op === 'adaptiveavgpool2d');
      assert.ok(pool?.op === 'adaptiveavgpool2d' && pool.fracBits === 16 && pool.inputs![0] === 'stages.2.add');
      const last = adds[2] as AddNode;
      assert.equal(last.hi, 2 ** 30);
      assert.equal(last.zeroPoint % 2 ** 16, 0);
      // The stem runs twice (block 1's conv and add quantize its output differently), sharing its weights.
      const stems = im.nodes.filter((n) => n.op === 'conv2d' && n.weight === 'stem.0.weight');
      assert.deepEqual(stems.map((n) => n.name), ['stem.0', 'stem.0@2']);
      const rows = im.layers();
      assert.equal(rows.find((l) => l.name === 'stem.0@2')!.params, 0);
      const unique = im.nodes.filter((n): n is LayerNode => (n.op === 'conv2d' || n.op === 'linear') && !n.name.includes('@'));
      assert.equal(rows.reduce((n, l) => n + l.params, 0), unique.reduce((n, l) => n + im.weightValues(l).length + l.outFeatures, 0));
      const r = im.verification!;
      assert.equal(r.argmaxAgreement, 1, JSON.stringify(r));
      assert.ok(r.maxLogitLsb <= 1, `${r.maxLogitLsb} LSB from the float64 simulation`);
      assert.equal(r.float32BeyondTolerance, 0);
      const layerNames = im.nodes.filter((n) => n.op === 'conv2d' || n.op === 'linear').map((n) => n.name).filter((n) => !n.includes('@'));
      assert.equal(Object.keys(r.layerMaxDiff).length, layerNames.length);
      for (const [name, d] of Object.entries(r.layerMaxDiff)) assert.ok(d <= 1, `${name}: ${d}`);
      // The native executor runs the DAG when the addon is loaded (residual-native.test.ts compares it with TypeScript).
      const reason = im.nativeUnavailableReason();
      assert.ok(reason === null || /addon/.test(reason), String(reason));
    });
  }

  it('capture: the add takes the block output and the shortcut; a float nn.Add and a dangling branch are refused', () => {
    const { model, x } = tinyResnet('w8a8', 1);
    const g = captureGraph(model, captureLeaves(model), x);
    const inputsOf = (name: string): string[] => g.nodes.find((n) => n.name === name)!.inputs.map((k) => (k < 0 ? '<input>' : g.nodes[k]!.name));
    assert.ok(g.nodes.find((n) => n.name === 'stages.1.add')!.module instanceof QuantAdd);
    // The folded BatchNorms' places hold Identity leaves, which the Sequential still calls.
    assert.deepEqual(inputsOf('stages.1.add'), ['stages.1.main2.1', 'stages.1.shortcut.1']);
    assert.deepEqual(inputsOf('stages.0.add'), ['stages.0.main2.1', 'stem.2']);
    assert.deepEqual(inputsOf('stages.1.shortcut.0'), ['stages.0.relu']);
    assert.deepEqual(inputsOf('stem.0'), ['<input>']);

    class Float extends Module {
      readonly fc1 = this.registerModule('fc1', new Linear(6, 6));
      readonly act = this.registerModule('act', new ReLU());
      readonly add = this.registerModule('add', new Add());
      readonly fc2 = this.registerModule('fc2', new Linear(6, 3));
      forward(t: Tensor): Tensor {
        return this.fc2.forward(this.add.forward(this.act.forward(this.fc1.forward(t)), t));
      }
    }
    manualSeed(3);
    const f = prepared(new Float(), qconfigFor('w8a8', 'ste'), randn([8, 6]));
    assert.ok(f.add instanceof QuantAdd, 'prepareQat swaps nn.Add for QuantAdd');
    assert.ok(convert(f, { inputShape: [6] }).nodes.some((n) => n.op === 'add'));
    manualSeed(3);
    const float = prepared(new Float(), qconfigFor('w8a8', 'ste'), randn([8, 6]));
    float.setSubmodule('add', new Add());
    assert.throws(() => convert(float, { inputShape: [6] }), /'add' is a float nn\.Add \(no input quantizers\)/);

    class Dangling extends Module {
      readonly fc1 = this.registerModule('fc1', new Linear(6, 6));
      readonly side = this.registerModule('side', new Linear(6, 6));
      readonly fc2 = this.registerModule('fc2', new Linear(6, 3));
      forward(t: Tensor): Tensor {
        const h = this.fc1.forward(t);
        this.side.forward(h);
        return this.fc2.forward(h);
      }
    }
    const d = prepared(new Dangling(), qconfigFor('w8a8', 'ste'), randn([8, 6]));
    assert.throws(() => convert(d, { inputShape: [6] }), (e: unknown) => e instanceof ConvertError && /the output of 'side' \(QuantLinear\) is never used/.test(e.message));
  });

  it('a DAG saves and loads (.lowbit and JSON) with identical logits', () => {
    const { model, x } = tinyResnet('w4a4', 2);
    const im = convert(model, { sample: x });
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-residual-'));
    try {
      const path = join(dir, 'resnet.lowbit');
      saveIntModel(path, im);
      const back = loadIntModel(path);
      assert.equal(back.graph.version, 2);
      assert.deepEqual(back.nodes, im.nodes);
      assert.deepEqual(back.run(x), im.run(x));
      const json = IntModel.fromJSON(JSON.parse(JSON.stringify(im)));
      assert.deepEqual(json.run(x), im.run(x));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a version-1 file written before DAGs existed (commit 18f8a97) loads and gives its recorded logits', () => {
    const dir = new URL('../../test/fixtures/intmodel/', import.meta.url);
    const m = loadIntModel(new URL('cnn-w4a4-v1.lowbit', dir).pathname);
    const ref = JSON.parse(readFileSync(new URL('cnn-w4a4-v1.json', dir), 'utf8')) as { input: number[]; logits: number[] };
    assert.equal(m.graph.version, 1);
    assert.ok(m.nodes.every((n) => n.inputs === undefined));
    const logits = m.run(new Tensor(Float32Array.from(ref.input), [4, 1, 28, 28]));
    assert.deepEqual(Array.from(logits), ref.logits);
    m.useNative = false;
    assert.deepEqual(Array.from(m.run(new Tensor(Float32Array.from(ref.input), [4, 1, 28, 28]))), ref.logits);
  });

  it('validation: DAG references must name earlier nodes, with the right arity, unique names, every output used, equal add shapes', () => {
    const { model, x } = tinyResnet('w8a8', 4);
    const im = convert(model, { sample: x });
    const nodes = im.graph.nodes;
    const at = (name: string): number => nodes.findIndex((n) => n.name === name);
    const mutated = (edit: (nodes: IntNode[]) => void, version: 1 | 2 = 2): IntModel => {
      const copy = JSON.parse(JSON.stringify(nodes)) as IntNode[];
      edit(copy);
      return new IntModel({ ...im.graph, version, nodes: copy }, im.tensors);
    };
    const set = (n: IntNode, key: string, value: unknown): void => {
      (n as unknown as Record<string, unknown>)[key] = value;
    };
    const cases: [string, (n: IntNode[]) => void, RegExp, (1 | 2)?][] = [
      ['a later node', (n) => set(n[at('stages.0.main1.0')]!, 'inputs', ['stages.0.main2.0']), /input "stages\.0\.main2\.0" does not name an earlier node/],
      ['an unknown node', (n) => set(n[at('fc')]!, 'inputs', ['nope']), /input "nope" does not name an earlier node/],
      ['arity', (n) => set(n[at('stages.1.add')]!, 'inputs', ['stages.1.main2.0']), /inputs \["stages\.1\.main2\.0"\] must list 2 node name\(s\)/],
      ['missing inputs', (n) => set(n[at('pool')]!, 'inputs', undefined), /inputs undefined must list 1 node name/],
      ['duplicate name', (n) => set(n[at('stages.2.main1.0')]!, 'name', 'stages.1.main1.0'), /name 'stages\.1\.main1\.0' is used by node \d+ too/],
      ['unused output', (n) => set(n[at('stages.2.add')]!, 'inputs', ['stages.2.main2.0', 'stages.2.main2.0']), /'stages\.2\.shortcut\.0'\): its output is never used/],
      ['add shapes', (n) => ((n[at('stages.1.shortcut.0')] as unknown as { conv: { stride: number[] } }).conv.stride = [1, 1]), /add 'stages\.1\.add': adds \[8, 14, 14\] and \[8, 28, 28\]: the shapes must be equal/],
      ['add multipliers', (n) => set(n[at('stages.1.add')]!, 'multipliers', [2 ** 31, 1]), /multipliers must be two integers/],
      ['add shift', (n) => set(n[at('stages.1.add')]!, 'shift', 63), /shift 63 must be an integer in \[0, 62\]/],
      ['add range', (n) => set(n[at('stages.1.add')]!, 'lo', 300), /output range \[300, \d+\] is not an int32 range/],
      ['add scale', (n) => set(n[at('stages.1.add')]!, 'inputScales', [0, 1]), /scales .* must be finite numbers > 0/],
      ['inputs in version 1', () => {}, /has 'inputs', which need graph version 2/, 1],
      ['add in version 1', (n) => n.forEach((node) => delete (node as { inputs?: unknown }).inputs), /an add node needs graph version 2/, 1],
      ['version 4', () => {}, /version 4 is not 1, 2 or 3/, 4 as 2],
    ];
    for (const [what, edit, message, version] of cases) {
      assert.throws(() => mutated(edit, version ?? 2), (e: unknown) => e instanceof IntGraphError && message.test(e.message), what);
    }
    assert.doesNotThrow(() => mutated(() => {}));
  });
});
