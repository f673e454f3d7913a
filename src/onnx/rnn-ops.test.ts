import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fuzzRng, timeFuzzCase, type FuzzTiming } from '../../test/fuzz-timing.ts';
import { noGrad } from '../autograd/engine.ts';
import { Embedding, GRU, Linear, LSTM } from '../nn/index.ts';
import { randn, Rng, Tensor, transpose } from '../tensor/index.ts';
import { importOnnx, OnnxModule } from './import.ts';
import { decodeModel, encodeModel, OnnxAttributeType, OnnxError, type OnnxAttribute, type OnnxModel, type OnnxNode } from './proto.ts';
import { exportRnnOnnx, rnnChain, runRnnChain } from './rnn.ts';
import { openRnnOnnx } from './rnn-verify.ts';
import { IntValue, type OnnxValue } from './values.ts';
import { loadOnnxRuntime } from './verify.ts';

const ortLoad = await loadOnnxRuntime();
const noOrt = ortLoad.ok ? false : `skipped: ${ortLoad.reason}`;

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let d = 0;
  for (let i = 0; i < a.size; i++) d = Math.max(d, Math.abs(a.data[i]! - b.data[i]!));
  return d;
}

function tensorOf(v: unknown): Tensor {
  assert.ok(v instanceof Tensor);
  return v;
}

function recurrentNode(m: OnnxModel): OnnxNode {
  return m.graph!.node!.find((n) => n.opType === 'LSTM' || n.opType === 'GRU')!;
}

function setAttr(node: OnnxNode, attr: OnnxAttribute): void {
  node.attribute = [...(node.attribute ?? []).filter((a) => a.name !== attr.name), attr];
}

const str = (name: string, s: string): OnnxAttribute => ({ name, type: OnnxAttributeType.STRING, s: new TextEncoder().encode(s) });
const int = (name: string, i: number): OnnxAttribute => ({ name, type: OnnxAttributeType.INT, i });

describe('importing ONNX LSTM / GRU nodes', () => {
  it('an exported chain imports and runs as lowbit ran it (LSTM / GRU × batchFirst × bidirectional, 2 layers, states)', () => {
    const rng = new Rng(2);
    for (const kind of ['LSTM', 'GRU'] as const) {
      for (const batchFirst of [false, true]) {
        for (const bidirectional of [false, true]) {
          const rnn = kind === 'LSTM' ? new LSTM(5, 6, { batchFirst, bidirectional, numLayers: 2, rng }) : new GRU(5, 6, { batchFirst, bidirectional, numLayers: 2, rng });
          const chain = [new Embedding(11, 5, { rng }), rnn, new Linear(bidirectional ? 12 : 6, 7, { rng })];
          const model = importOnnx(exportRnnOnnx(chain, { states: true }).bytes);
          const shape = batchFirst ? [3, 4] : [4, 3];
          const ids = Int32Array.from({ length: 12 }, () => Math.floor(rng.uniform() * 11));
          const D = bidirectional ? 2 : 1;
          const h0 = randn([2 * D, 3, 6], { rng });
          const c0 = randn([2 * D, 3, 6], { rng });
          const feeds: Record<string, OnnxValue> = kind === 'LSTM' ? { input: new IntValue(shape, Array.from(ids)), h0, c0 } : { input: new IntValue(shape, Array.from(ids)), h0 };
          const got = noGrad(() => model.run(feeds));
          const want = noGrad(() => runRnnChain(rnnChain(chain), new Tensor(ids, shape), { initial: { 1: kind === 'LSTM' ? [h0, c0] : [h0] } }));
          const what = `${kind} batchFirst=${batchFirst} bidirectional=${bidirectional}`;
          assert.ok(maxDiff(tensorOf(got['logits']), want.output) <= 1e-6, what);
          assert.ok(maxDiff(tensorOf(got['hN']), want.states['1']![0]!) <= 1e-6, `${what}: hN`);
          if (kind === 'LSTM') assert.ok(maxDiff(tensorOf(got['cN']), want.states['1']![1]!) <= 1e-6, `${what}: cN`);
        }
      }
    }
  });

  it("direction 'reverse' (never exported) agrees with onnxruntime", { skip: noOrt }, async () => {
    const rng = new Rng(4);
    for (const kind of ['LSTM', 'GRU'] as const) {
      const rnn = kind === 'LSTM' ? new LSTM(4, 5, { rng }) : new GRU(4, 5, { rng });
      const m = decodeModel(exportRnnOnnx(rnn, { states: true }).bytes);
      setAttr(recurrentNode(m), str('direction', 'reverse'));
      const bytes = encodeModel(m);
      const x = randn([6, 2, 4], { rng });
      const h0 = randn([1, 2, 5], { rng });
      const c0 = randn([1, 2, 5], { rng });
      const feeds: Record<string, Tensor> = kind === 'LSTM' ? { input: x, h0, c0 } : { input: x, h0 };
      const runner = await openRnnOnnx(bytes);
      if ('skipped' in runner) throw new Error(runner.skipped);
      const ort = await runner.run(feeds);
      await runner.release();
      const mine = noGrad(() => importOnnx(bytes).run(feeds));
      for (const name of Object.keys(ort)) assert.ok(maxDiff(tensorOf(mine[name]), ort[name]!) <= 1e-5, `${kind} ${name}`);
      // And it is not the forward direction from the same states.
      const forward = noGrad(() => (rnn instanceof LSTM ? rnn.forward(x, [h0, c0])[0] : rnn.forward(x, h0)[0]));
      assert.ok(maxDiff(tensorOf(mine['logits']), forward) > 1e-3);
    }
  });

  it('layout 1 (batch first inside the node) gives the layout-0 result transposed', () => {
    const rng = new Rng(6);
    const lstm = new LSTM(3, 4, { rng, bidirectional: true });
    const base = decodeModel(exportRnnOnnx(lstm, { states: true }).bytes);
    const x = randn([5, 2, 3], { rng });
    const h0 = randn([2, 2, 4], { rng });
    const c0 = randn([2, 2, 4], { rng });
    const node = recurrentNode(base);
    // A graph with the LSTM node alone, its outputs as graph outputs, in both layouts.
    const single = (layout: number): OnnxModule => {
      const m = decodeModel(encodeModel(base));
      const n = recurrentNode(m);
      setAttr(n, int('layout', layout));
      n.input = ['input', n.input![1]!, n.input![2]!, n.input![3]!, '', 'h0', 'c0'];
      n.output = ['Y', 'Yh', 'Yc'];
      m.graph!.node = [n];
      m.graph!.output = [{ name: 'Y' }, { name: 'Yh' }, { name: 'Yc' }];
      m.opsetImport = [{ domain: '', version: 14 }];
      m.irVersion = 8;
      return importOnnx(m);
    };
    assert.ok(node);
    const y0 = noGrad(() => single(0).run({ input: x, h0, c0 }));
    const t = (v: Tensor): Tensor => transpose(v, [1, 0, 2]);
    const y1 = noGrad(() => single(1).run({ input: t(x), h0: t(h0), c0: t(c0) }));
    assert.ok(maxDiff(tensorOf(y1['Y']), transpose(tensorOf(y0['Y']), [2, 0, 1, 3])) === 0);
    assert.ok(maxDiff(tensorOf(y1['Yh']), t(tensorOf(y0['Yh']))) === 0);
    assert.ok(maxDiff(tensorOf(y1['Yc']), t(tensorOf(y0['Yc']))) === 0);
  });

  it('refuses what it does not implement or what does not fit, naming the node', () => {
    const rng = new Rng(8);
    const lstmModel = decodeModel(exportRnnOnnx(new LSTM(3, 4, { rng }), { states: true }).bytes);
    const gruModel = decodeModel(exportRnnOnnx(new GRU(3, 4, { rng }), { states: true }).bytes);
    const x = randn([5, 2, 3], { rng });
    const h0 = randn([1, 2, 4], { rng });
    const cases: [string, OnnxModel, (n: OnnxNode, m: OnnxModel) => void, RegExp][] = [
      ['sequence_lens', lstmModel, (n) => { n.input![4] = 'h0'; }, /sequence_lens/],
      ['peepholes', lstmModel, (n) => { n.input![7] = 'h0'; }, /peephole/],
      ['clip', lstmModel, (n) => setAttr(n, { name: 'clip', type: OnnxAttributeType.FLOAT, f: 3 }), /clip/],
      ['input_forget', lstmModel, (n) => setAttr(n, int('input_forget', 1)), /input_forget/],
      ['activations', lstmModel, (n) => setAttr(n, { name: 'activations', type: OnnxAttributeType.STRINGS, strings: ['Relu', 'Tanh', 'Tanh'].map((s) => new TextEncoder().encode(s)) }), /activations/],
      ['direction', lstmModel, (n) => setAttr(n, str('direction', 'sideways')), /direction/],
      ['layout', lstmModel, (n) => setAttr(n, int('layout', 2)), /layout/],
      ['hidden_size', lstmModel, (n) => setAttr(n, int('hidden_size', 5)), /hidden_size/],
      ['bidirectional with one direction of weights', lstmModel, (n) => setAttr(n, str('direction', 'bidirectional')), /R must be \[2/],
      ['linear_before_reset 0', gruModel, (n) => setAttr(n, int('linear_before_reset', 0)), /linear_before_reset/],
      ['W of the wrong width', gruModel, (_n, m) => { const w = m.graph!.initializer!.find((t) => t.name!.endsWith('.W'))!; w.dims = [1, 9, 4]; }, /W must be/],
    ];
    for (const [label, source, edit, pattern] of cases) {
      const m = decodeModel(encodeModel(source));
      edit(recurrentNode(m), m);
      const feeds: Record<string, Tensor> = source === lstmModel ? { input: x, h0, c0: h0 } : { input: x, h0 };
      assert.throws(() => importOnnx(m).run(feeds), (e: unknown) => e instanceof OnnxError && pattern.test(e.message) && /LSTM|GRU/.test(e.message), label);
    }
    // initial_h of the wrong batch
    const m = importOnnx(decodeModel(encodeModel(lstmModel)));
    assert.throws(() => m.run({ input: x, h0: randn([1, 3, 4], { rng }), c0: randn([1, 3, 4], { rng }) }), (e: unknown) => e instanceof OnnxError);
  });

  it('fuzz: 1,500 mutated LSTM / GRU graphs import and run to a result or an OnnxError, each within 100 ms', () => {
    const rng = new Rng(10);
    const models = [
      decodeModel(exportRnnOnnx(new LSTM(3, 4, { rng, numLayers: 2, bidirectional: true }), { states: true }).bytes),
      decodeModel(exportRnnOnnx(new GRU(3, 4, { rng, batchFirst: true }), { states: true }).bytes),
    ];
    const random = fuzzRng(20261123);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const numbers = [0, 1, -1, 2, 3, 4, 5, 8, 12, 16, 24, 255, 2 ** 31 - 1, -(2 ** 31), 1e9];
    const strings = ['forward', 'reverse', 'bidirectional', '', 'Sigmoid', 'Tanh', 'Relu', 'x'.repeat(300)];
    const attrNames = ['direction', 'hidden_size', 'layout', 'linear_before_reset', 'input_forget', 'clip', 'activations', 'activation_alpha'];
    const timing: FuzzTiming = { count: 0, maxMs: 0, slowest: '', rawMaxMs: 0, retimed: 0, totalMs: 0 };
    let ran = 0;
    let rejected = 0;
    for (let i = 0; i < 1500; i++) {
      const source = models[i % 2]!;
      const m = decodeModel(encodeModel(source));
      const nodes = m.graph!.node!.filter((n) => n.opType === 'LSTM' || n.opType === 'GRU');
      const n = pick(nodes);
      const inits = m.graph!.initializer!.filter((t) => n.input!.includes(t.name!));
      const what = Math.floor(random() * 5);
      if (what === 0) {
        const name = pick(attrNames);
        setAttr(n, name === 'direction' ? str(name, pick(strings)) : name === 'clip' || name === 'activation_alpha' ? { name, type: OnnxAttributeType.FLOAT, f: pick(numbers) } : name === 'activations' ? { name, type: OnnxAttributeType.STRINGS, strings: Array.from({ length: Math.floor(random() * 7) }, () => new TextEncoder().encode(pick(strings))) } : int(name, pick(numbers)));
      } else if (what === 1) {
        const t = pick(inits);
        t.dims = t.dims!.map((d) => (random() < 0.4 ? pick(numbers.filter((v) => v >= 0 && v < 64)) : d));
      } else if (what === 2) {
        const k = Math.floor(random() * 8);
        const ins = [...n.input!];
        while (ins.length <= k) ins.push('');
        ins[k] = pick(['', 'h0', 'input', ...m.graph!.initializer!.map((t) => t.name!)]);
        n.input = ins;
      } else if (what === 3) {
        n.opType = pick(['LSTM', 'GRU']);
      } else {
        m.opsetImport = [{ domain: '', version: pick([11, 13, 14, 17, 21]) }];
      }
      const batchFirst = i % 2 === 1;
      const x = randn(batchFirst ? [2, 3, 3] : [3, 2, 3], { rng });
      const feeds: Record<string, Tensor> = i % 2 === 0 ? { input: x, h0: randn([4, 2, 4], { rng }), c0: randn([4, 2, 4], { rng }) } : { input: x, h0: randn([1, 2, 4], { rng }) };
      const outcome = timeFuzzCase(timing, `case ${i} (${what})`, 'an OnnxError', () => {
        try {
          return noGrad(() => importOnnx(decodeModel(encodeModel(m))).run(feeds));
        } catch (e) {
          if (e instanceof OnnxError) return e;
          throw e;
        }
      });
      if (outcome instanceof OnnxError) {
        rejected++;
        const cause = outcome.cause;
        assert.ok(!(cause instanceof TypeError || cause instanceof ReferenceError), `case ${i}: internal ${String(cause)}`);
      } else {
        ran++;
        for (const v of Object.values(outcome)) assert.ok(v instanceof Tensor && v.data.every(Number.isFinite), `case ${i}: a non-finite output`);
      }
    }
    assert.equal(timing.count, 1500);
    assert.ok(rejected > 300 && ran > 300, `${rejected} rejected, ${ran} ran`);
  });
});
