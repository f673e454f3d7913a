/**
 * Binary ResNets (Bi-Real, docs/binary.md) in the integer runtime: an add whose sum feeds a sign
 * input emits ±1 (`AddNode.output` 'sign'). Checks the sign rule against exact rational arithmetic
 * and the fake-quant float32 sum, convert() of the Bi-Real ResNet-8 against its fake-quant forward
 * (random and Fashion-MNIST inputs), the .lowbit round trip and validation of the new field.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { biRealResnet8 } from '../nn/index.ts';
import { crossEntropy, manualSeed, randn, Rng, Tensor } from '../tensor/index.ts';
import { noGrad } from '../autograd/engine.ts';
import { Adam } from '../optim/index.ts';
import { DATASET_STATS, loadDataset } from '../data/index.ts';
import { normalizeInPlace } from '../data/dataset.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { biRealPlan } from '../quant/config/index.ts';
import { convert, IntModel, type AddNode, type IntNode } from './index.ts';
import { signAddMultipliers } from './convert.ts';
import { signOfSum } from './intmodel.ts';
import { loadIntModel, saveIntModel } from './io.ts';
import { IntGraphError } from './validate.ts';


function preparedBiReal(seed: number): ReturnType<typeof biRealResnet8> {
  manualSeed(seed);
  const model = biRealResnet8();
  prepareQat(model, biRealPlan(model));
  return model;
}

/** s = m·2^e exactly (m an integer) as a BigInt numerator over 2^−E for a common E. */
function exactSign(da: number, sa: number, db: number, sb: number): number {
  const scaleTo = (s: number): bigint => {
    let v = s * 2 ** 200; // exact: a power-of-two rescaling of a double
    if (!Number.isInteger(v)) throw new Error('scale too small for the test');
    return BigInt(v);
  };
  const t = BigInt(da) * scaleTo(sa) + BigInt(db) * scaleTo(sb);
  return t >= 0n ? 1 : -1;
}

describe('sign of an integer sum', () => {
  it('multipliers are the exact ratio of float32 scales: the integer sign is the exact sign of the dequantized sum, +1 at 0', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 200; trial++) {
      const sa = Math.fround(2 ** (rng.uniform() * 12 - 10));
      const sb = Math.fround(sa * 2 ** (rng.uniform() * 10 - 5));
      const [ma, mb] = signAddMultipliers(sa, sb);
      assert.ok(Number.isInteger(ma) && Number.isInteger(mb) && ma > 0 && mb > 0 && ma <= 2 ** 31 - 1 && mb <= 2 ** 31 - 1);
      assert.equal(BigInt(ma) * BigInt(Math.round(sb * 2 ** 160)), BigInt(mb) * BigInt(Math.round(sa * 2 ** 160)), 'M_a : M_b = s_a : s_b');
      const a = new Int32Array(64);
      const b = new Int32Array(64);
      for (let i = 0; i < 64; i++) {
        a[i] = Math.floor(rng.uniform() * 256) - 128;
        b[i] = Math.floor(rng.uniform() * 256) - 128;
      }
      const out = new Int32Array(64);
      signOfSum(a, b, 3, -5, ma, mb, out);
      for (let i = 0; i < 64; i++) assert.equal(out[i], exactSign(a[i]! - 3, sa, b[i]! + 5, sb), `trial ${trial} element ${i}`);
    }
    // Exact ties: 4·(3·2^−10) − 3·2^−8 = 0 → +1, as sign(0) = +1 in the fake-quant model (and in float32).
    const [ma, mb] = signAddMultipliers(3 * 2 ** -10, 2 ** -8);
    assert.deepEqual([ma, mb], [3, 4]);
    const out = new Int32Array(3);
    signOfSum(Int32Array.of(4, 4, 3), Int32Array.of(-3, -4, -2), 0, 0, ma, mb, out);
    assert.deepEqual(Array.from(out), [1, -1, 1]);
    assert.ok(Math.fround(4 * 3 * 2 ** -10) + Math.fround(-3 * 2 ** -8) >= 0);
  });

  it('against the float32 fake-quant sum it differs only within the stated bound |x̂_a + x̂_b| ≤ 2^−24·(|x̂_a| + |x̂_b|)', () => {
    const rng = new Rng(11);
    let flips = 0;
    let total = 0;
    for (let trial = 0; trial < 300; trial++) {
      const sa = Math.fround(0.001 + rng.uniform() * 0.1);
      const sb = Math.fround(0.001 + rng.uniform() * 0.1);
      const [ma, mb] = signAddMultipliers(sa, sb);
      for (let i = 0; i < 200; i++) {
        const da = Math.floor(rng.uniform() * 255) - 127;
        const db = Math.floor(rng.uniform() * 255) - 127;
        const out = new Int32Array(1);
        signOfSum(Int32Array.of(da), Int32Array.of(db), 0, 0, ma, mb, out);
        const f32 = Math.fround(Math.fround(da * sa) + Math.fround(db * sb)) >= 0 ? 1 : -1;
        total++;
        if (out[0] !== f32) {
          flips++;
          const x = da * sa;
          const y = db * sb;
          assert.ok(Math.abs(x + y) <= 2 ** -24 * (Math.abs(x) + Math.abs(y)) * 1.0001, `flip outside the bound: ${da}·${sa} + ${db}·${sb}`);
        }
      }
    }
    assert.ok(flips < total * 1e-3, `${flips} flips of ${total}`);
  });

  it('scales more than 2^7 apart fall back to rounded 31-bit multipliers (ratio within 2^−30)', () => {
    const [ma, mb] = signAddMultipliers(Math.fround(0.7), Math.fround(0.7 / 3000));
    const ratio = ma / mb;
    assert.ok(Math.abs(ratio / (Math.fround(0.7) / Math.fround(0.7 / 3000)) - 1) < 2 ** -20, `ratio ${ratio}`);
    assert.ok(Math.max(ma, mb) <= 2 ** 31 - 1 && Math.max(ma, mb) >= 2 ** 30);
  });
});

describe('Bi-Real ResNet-8 in the integer runtime', () => {
  it('converts (every binary conv reads a sign add), agrees with the fake-quant forward on random inputs, runs natively', () => {
    const model = preparedBiReal(3);
    const x = randn([16, 1, 28, 28]);
    model.train();
    noGrad(() => {
      for (let i = 0; i < 2; i++) model.forward(x); // observers see data
    });
    model.eval();
    const im = convert(model, { sample: x });
    assert.equal(im.graph.version, 2);
    const signAdds = im.nodes.filter((n): n is AddNode => n.op === 'add' && n.output === 'sign');
    assert.equal(signAdds.length, 5, 'stages.0.add1, stages.0.add2, stages.1.add1, stages.1.add2, stages.2.add1 feed binary convs');
    const r = im.verification!;
    assert.ok(r.argmaxAgreement >= 0.99, `argmax agreement ${r.argmaxAgreement}`);
    assert.equal(r.float32BeyondTolerance, 0);
    for (const [name, v] of Object.entries(r.layerMismatch)) {
      if (/main[12]\.0$/.test(name)) assert.ok(v <= 1e-3, `${name}: ${v} of its sign inputs differ from the float64 simulation`);
    }
    // the native executor runs it (the sign add: native/signadd.cc; bireal-native.test.ts) unless the addon is missing
    const reason = im.nativeUnavailableReason();
    assert.ok(reason === null || /not loaded/.test(reason), String(reason));
    // The fast and reference TypeScript executors give identical logits.
    const fast = im.run(x);
    im.tsExecutor = 'reference';
    assert.deepEqual(im.run(x), fast);
  });

  it('after a few training steps on Fashion-MNIST: argmax agreement ≥ 99 %, .lowbit round trip with identical logits', () => {
    const model = preparedBiReal(5);
    const norm = (n: number, split: 'train' | 'test'): Tensor => {
      const ds = loadDataset('fashion-mnist', split, { limit: n });
      const images = ds.images.slice();
      normalizeInPlace(images, ds.sampleShape, DATASET_STATS['fashion-mnist']);
      return new Tensor(images, [n, ...ds.sampleShape]);
    };
    const train = loadDataset('fashion-mnist', 'train', { limit: 96 });
    const xs = norm(96, 'train');
    const optimizer = new Adam(model.parameters(), { lr: 2e-3 });
    model.train();
    for (let step = 0; step < 3; step++) {
      const lo = step * 32;
      const xb = new Tensor(xs.data.slice(lo * 784, (lo + 32) * 784), [32, 1, 28, 28]);
      const yb = new Tensor(Int32Array.from(train.labels.slice(lo, lo + 32)), [32]);
      optimizer.zeroGrad();
      crossEntropy(model.forward(xb), yb).backward();
      optimizer.step();
    }
    model.eval();
    const test = norm(128, 'test');
    const im = convert(model, { sample: test });
    assert.ok(im.verification!.argmaxAgreement >= 0.99, `argmax agreement ${im.verification!.argmaxAgreement}`);
    assert.equal(im.verification!.float32BeyondTolerance, 0);
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-bireal-'));
    try {
      const path = join(dir, 'bireal.lowbit');
      saveIntModel(path, im);
      const back = loadIntModel(path);
      assert.deepEqual(back.nodes, im.nodes);
      assert.deepEqual(back.run(test), im.run(test));
      assert.deepEqual(IntModel.fromJSON(JSON.parse(JSON.stringify(im))).run(test), im.run(test));
      // A file whose sign add has a malformed output field is refused on load, naming the node and the value.
      const bytes = readFileSync(path);
      const text = bytes.toString('latin1');
      const field = String.raw`\"output\":\"sign\"`;
      const at = text.indexOf(field);
      assert.ok(at > 0, 'the header holds the output field');
      const bad = Buffer.from(text.slice(0, at) + field.replace('sign', 'sigx') + text.slice(at + field.length), 'latin1');
      const badPath = join(dir, 'bad.lowbit');
      writeFileSync(badPath, bad);
      assert.throws(() => loadIntModel(badPath), (e: unknown) => e instanceof Error && /add 'stages\.0\.add1': output "sigx" must be 'sign' or absent/.test(e.message));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('validation: a malformed sign add is refused with a named error', () => {
    const model = preparedBiReal(9);
    const x = randn([4, 1, 28, 28]);
    model.train();
    noGrad(() => model.forward(x));
    model.eval();
    const im = convert(model, { inputShape: [1, 28, 28] });
    const at = im.nodes.findIndex((n) => n.op === 'add' && n.output === 'sign');
    const mutated = (key: string, value: unknown): IntModel => {
      const copy = JSON.parse(JSON.stringify(im.nodes)) as IntNode[];
      (copy[at] as unknown as Record<string, unknown>)[key] = value;
      return new IntModel({ ...im.graph, nodes: copy }, im.tensors);
    };
    const name = im.nodes[at]!.name.replace(/\./g, '\\.');
    const cases: [string, unknown, RegExp][] = [
      ['output', 'relu', new RegExp(`add '${name}': output "relu" must be 'sign' or absent`)],
      ['output', 1, /output 1 must be 'sign' or absent/],
      ['multipliers', [2 ** 31, 1], /multipliers must be two integers/],
      ['multipliers', [1.5, 1], /multipliers must be two integers/],
      ['inputZeroPoints', [0], /inputZeroPoints must be two integers/],
    ];
    for (const [key, value, message] of cases) {
      assert.throws(() => mutated(key, value), (e: unknown) => e instanceof IntGraphError && message.test(e.message), `${key} = ${JSON.stringify(value)}`);
    }
    assert.doesNotThrow(() => mutated('output', 'sign'));
    // Without the field the node is an ordinary requantizing add: a different, still valid model.
    const plain = mutated('output', undefined);
    assert.equal(plain.run(x).length, 40);
  });
});
