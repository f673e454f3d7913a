import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, crossEntropy, manualSeed, randn } from '../tensor/index.ts';
import { noGrad } from '../autograd/engine.ts';
import { Linear, ReLU, Sequential } from '../nn/index.ts';
import { SGD } from '../optim/sgd.ts';
import { calibrate } from '../quant/ptq/calibrate.ts';
import { QuantConvBn2d } from '../quant/qat/layers.ts';
import { convert, type AgreementReport } from '../runtime/convert.ts';
import { OnnxDataType, OnnxError, floatTensor, makeTensor, type OnnxGraph, type OnnxModel, type OnnxNode } from './proto.ts';
import { OnnxOp, OnnxUnsupportedOpsError, importOnnx } from './import.ts';
import { IntValue } from './values.ts';

function model(graph: OnnxGraph, opset = 13): OnnxModel {
  return { irVersion: 8, opsetImport: [{ domain: '', version: opset }], graph };
}

const input = (name: string, dims?: (number | string)[]): NonNullable<OnnxGraph['input']>[number] => ({
  name,
  type: { tensorType: { elemType: 1, ...(dims ? { shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } : {}) } },
});

function rejects(m: OnnxModel, code: string, pattern?: RegExp): OnnxError {
  try {
    importOnnx(m);
  } catch (e) {
    assert.ok(e instanceof OnnxError, String(e));
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return e;
  }
  return assert.fail('imported');
}

describe('onnx/import: refusals', () => {
  it('lists every unsupported op with its count in one error, before building anything', () => {
    const nodes: OnnxNode[] = [
      { opType: 'Relu', input: ['x'], output: ['a'] },
      { opType: 'Loop', input: ['a'], output: ['b'] },
      { opType: 'RNN', input: ['b'], output: ['c'] },
      { opType: 'Loop', input: ['c'], output: ['d'] },
      { opType: 'FusedConv', domain: 'com.microsoft', input: ['d'], output: ['e'] },
      { opType: 'Gelu', input: ['e'], output: ['y'] },
    ];
    const e = rejects(model({ node: nodes, input: [input('x')], output: [{ name: 'y' }] }, 17), 'unsupported-op');
    assert.ok(e instanceof OnnxUnsupportedOpsError);
    assert.deepEqual(e.ops, { Loop: 2, RNN: 1, 'com.microsoft:FusedConv': 1, 'Gelu (needs opset 20)': 1 });
    assert.equal(e.message, 'unsupported ONNX ops (5 nodes): Loop ×2, RNN ×1, com.microsoft:FusedConv ×1, Gelu (needs opset 20) ×1');
  });

  it('accepts opsets 11 to 21 only', () => {
    const g: OnnxGraph = { node: [{ opType: 'Relu', input: ['x'], output: ['y'] }], input: [input('x')], output: [{ name: 'y' }] };
    for (const v of [11, 21]) assert.ok(importOnnx(model(g, v)));
    rejects(model(g, 10), 'unsupported-opset', /opset 10 is not supported \(supported: 11 to 21\)/);
    rejects(model(g, 22), 'unsupported-opset');
    rejects({ irVersion: 8, opsetImport: [{ domain: 'ai.onnx.ml', version: 3 }], graph: g }, 'unsupported-opset');
    rejects({ irVersion: 8, opsetImport: [{ domain: '', version: 13 }] }, 'bad-model');
  });

  it('refuses cycles, duplicate and undefined names', () => {
    const relu = (i: string, o: string, name?: string): OnnxNode => ({ opType: 'Relu', input: [i], output: [o], ...(name ? { name } : {}) });
    rejects(model({ node: [relu('x', 'a', 'r1'), relu('b', 'c', 'r2'), relu('c', 'b', 'r3'), relu('a', 'y')], input: [input('x')], output: [{ name: 'y' }] }), 'bad-graph', /cycle through 2 node\(s\): r2, r3/);
    rejects(model({ node: [relu('x', 'a'), relu('x', 'a')], input: [input('x')], output: [{ name: 'a' }] }), 'bad-graph', /'a' is defined more than once/);
    rejects(model({ node: [relu('x', 'x')], input: [input('x')], output: [{ name: 'x' }] }), 'bad-graph');
    rejects(model({ node: [relu('nope', 'y')], input: [input('x')], output: [{ name: 'y' }] }), 'bad-graph', /undefined value 'nope'/);
    rejects(model({ node: [relu('x', 'y')], input: [input('x')], output: [{ name: 'z' }] }), 'bad-graph', /never computed/);
    rejects(model({ node: [relu('x', 'y')], input: [input('x'), input('x')], output: [{ name: 'y' }] }), 'bad-graph');
    const w = floatTensor('w', [1], [1]);
    rejects(model({ node: [relu('x', 'y')], initializer: [w, w], input: [input('x')], output: [{ name: 'y' }] }), 'bad-graph', /defined twice/);
    rejects(model({ node: [{ opType: 'Relu', input: ['x'], output: ['y'], attribute: [{ name: 'a', type: 2, i: 1 }, { name: 'a', type: 2, i: 2 }] }], input: [input('x')], output: [{ name: 'y' }] }), 'bad-attribute');
  });
});

describe('onnx/import: folding and running', () => {
  // y = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) * 2: the flatten pattern of
  // older exporters, plus a Constant.
  const flattenGraph = (batch: number | string): OnnxGraph => ({
    node: [
      { opType: 'Shape', input: ['x'], output: ['s'] },
      { opType: 'Gather', input: ['s', 'zero'], output: ['n'], attribute: [{ name: 'axis', type: 2, i: 0 }] },
      { opType: 'Unsqueeze', input: ['n', 'axes'], output: ['n1'] },
      { opType: 'Concat', input: ['n1', 'minus1'], output: ['shape'], attribute: [{ name: 'axis', type: 2, i: 0 }] },
      { opType: 'Reshape', input: ['x', 'shape'], output: ['r'] },
      { opType: 'Constant', output: ['two'], attribute: [{ name: 'value', type: 4, t: floatTensor('', [], [2]) }] },
      { opType: 'Mul', input: ['r', 'two'], output: ['y'] },
    ],
    initializer: [makeTensor('zero', OnnxDataType.INT64, [], [0]), makeTensor('axes', OnnxDataType.INT64, [1], [0]), makeTensor('minus1', OnnxDataType.INT64, [1], [-1])],
    input: [input('x', [batch, 2, 3])],
    output: [{ name: 'y' }],
  });

  it('folds Shape arithmetic of a static shape and Constants at import', () => {
    const m = importOnnx(model(flattenGraph(4)));
    const ops = m.namedModules().filter(([, mod]) => mod instanceof OnnxOp).map(([, mod]) => (mod as OnnxOp).opType);
    assert.deepEqual(ops, ['Reshape', 'Mul']);
    const x = randn([4, 2, 3]);
    const y = m.forward(x);
    assert.deepEqual(y.shape, [4, 6]);
    assert.deepEqual(Array.from(y.data), Array.from(x.data, (v) => Math.fround(v * 2)));
    assert.throws(() => m.forward(randn([3, 2, 3])), /expects shape \[4, 2, 3\], got \[3, 2, 3\]/);
  });

  it('computes the same Shape arithmetic at run time for a symbolic batch', () => {
    const m = importOnnx(model(flattenGraph('N')));
    assert.equal(m.namedModules().filter(([, mod]) => mod instanceof OnnxOp).length, 6);
    for (const n of [1, 5]) assert.deepEqual(m.forward(randn([n, 2, 3])).shape, [n, 6]);
  });

  it('folds a Transpose of constant weights larger than the folding budget (Constant data is credited)', () => {
    const w = Array.from({ length: 300 * 300 }, (_, k) => (k % 7) - 3);
    const m = importOnnx(model({
      node: [
        { opType: 'Constant', output: ['w'], attribute: [{ name: 'value', type: 4, t: floatTensor('', [300, 300], w) }] },
        { opType: 'Transpose', input: ['w'], output: ['wt'] },
        { opType: 'MatMul', input: ['x', 'wt'], output: ['y'] },
      ],
      input: [input('x', [1, 300])],
      output: [{ name: 'y' }],
    }));
    assert.deepEqual(m.namedModules().filter(([, mod]) => mod instanceof OnnxOp).map(([, mod]) => (mod as OnnxOp).opType), ['MatMul']);
    const x = new Tensor(Float32Array.from({ length: 300 }, (_, k) => (k === 2 ? 1 : 0)), [1, 300]);
    // x selects row 2 of wᵀ, i.e. column 2 of w
    assert.deepEqual(Array.from(m.forward(x).data), Array.from({ length: 300 }, (_, r) => w[r * 300 + 2]!));
  });

  it('names 3,000 nodes of the same name uniquely', () => {
    const node = (k: number): OnnxNode => ({ opType: 'Relu', name: 'same', input: [k === 0 ? 'x' : `v${k - 1}`], output: [k === 2999 ? 'y' : `v${k}`] });
    const start = process.cpuUsage();
    const m = importOnnx(model({ node: Array.from({ length: 3000 }, (_, k) => node(k)), input: [input('x')], output: [{ name: 'y' }] }));
    const cpu = process.cpuUsage(start);
    const names = m.namedChildren().map(([n]) => n);
    assert.equal(new Set(names).size, 3000);
    assert.deepEqual(names.slice(0, 3), ['same', 'same_2', 'same_3']);
    assert.ok(cpu.user + cpu.system < 2e6, `import took ${(cpu.user + cpu.system) / 1000} ms of CPU`);
    assert.deepEqual(Array.from(m.forward(new Tensor(Float32Array.of(-1, 2), [2])).data), [0, 2]);
  });

  it('runs graphs with several inputs and outputs through run()', () => {
    const m = importOnnx(model({
      node: [
        { opType: 'Add', input: ['a', 'b'], output: ['s'] },
        { opType: 'Shape', input: ['s'], output: ['shape'] },
      ],
      input: [input('a'), input('b')],
      output: [{ name: 's' }, { name: 'shape' }],
    }));
    const out = m.run({ a: new Tensor(Float32Array.of(1, 2), [2]), b: new Tensor(Float32Array.of(10), [1]) });
    assert.deepEqual(Array.from((out['s'] as Tensor).data), [11, 12]);
    assert.deepEqual((out['shape'] as IntValue).data, [2]);
    assert.throws(() => m.forward(randn([2])), /one input and one output/);
  });
});

describe('onnx/import: training and quantization', () => {
  it('trains exactly like the same network built from lowbit layers', () => {
    manualSeed(3);
    const ref = new Sequential(new Linear(4, 5), new ReLU(), new Linear(5, 3));
    const [l1, l2] = [ref.at(0) as Linear, ref.at(2) as Linear];
    // Gemm(transB) + Relu + MatMul + Add(bias): the second layer goes through the functional
    // path with the bias as a root parameter.
    const w2t = Array.from({ length: 15 }, (_, k) => l2.weight.data[(k % 3) * 5 + Math.floor(k / 3)]!);
    const m = importOnnx(model({
      node: [
        { opType: 'Gemm', name: 'fc1', input: ['x', 'w1', 'b1'], output: ['h'], attribute: [{ name: 'transB', type: 2, i: 1 }] },
        { opType: 'Relu', name: 'relu', input: ['h'], output: ['r'] },
        { opType: 'MatMul', name: 'fc2', input: ['r', 'w2t'], output: ['z'] },
        { opType: 'Add', name: 'bias2', input: ['z', 'b2'], output: ['y'] },
      ],
      initializer: [floatTensor('w1', [5, 4], l1.weight.data), floatTensor('b1', [5], l1.bias!.data), floatTensor('w2t', [5, 3], w2t), floatTensor('b2', [3], l2.bias!.data)],
      input: [input('x', ['N', 4])],
      output: [{ name: 'y' }],
    }));
    assert.deepEqual(m.namedParameters().map(([n, p]) => `${n}[${p.shape.join('x')}]`), ['init_b2[3]', 'fc1.weight[5x4]', 'fc1.bias[5]', 'fc2.weight[3x5]']);
    m.train();
    const x = randn([8, 4]);
    const t = new Tensor(Int32Array.from([0, 1, 2, 0, 1, 2, 0, 1]), [8]);
    const optA = new SGD(ref.parameters(), { lr: 0.1 });
    const optB = new SGD(m.parameters(), { lr: 0.1 });
    for (let step = 0; step < 3; step++) {
      optA.zeroGrad();
      optB.zeroGrad();
      const la = crossEntropy(ref.forward(x), t);
      const lb = crossEntropy(m.forward(x), t);
      assert.equal(lb.item(), la.item());
      la.backward();
      lb.backward();
      assert.deepEqual(Array.from(m.getSubmodule('fc1').parameters()[0]!.grad!.data), Array.from(l1.weight.grad!.data));
      assert.deepEqual(Array.from(m.namedParameters().find(([n]) => n === 'init_b2')![1].grad!.data), Array.from(l2.bias!.grad!.data));
      optA.step();
      optB.step();
    }
  });

  it('calibrates (Conv+BN fused through convBnPairs) and converts a chain', () => {
    manualSeed(5);
    const conv = randn([4, 1, 3, 3], { std: 0.5 });
    const fc = randn([3, 4], { std: 0.5 });
    const m = importOnnx(model({
      node: [
        { opType: 'Conv', name: 'conv', input: ['x', 'cw'], output: ['c'], attribute: [{ name: 'pads', type: 7, ints: [1, 1, 1, 1] }] },
        { opType: 'BatchNormalization', name: 'bn', input: ['c', 'g', 'b', 'm', 'v'], output: ['n'] },
        { opType: 'Relu', name: 'relu', input: ['n'], output: ['r'] },
        { opType: 'GlobalAveragePool', name: 'gap', input: ['r'], output: ['p'] },
        { opType: 'Flatten', name: 'flat', input: ['p'], output: ['f'] },
        { opType: 'Gemm', name: 'fc', input: ['f', 'fw'], output: ['y'], attribute: [{ name: 'transB', type: 2, i: 1 }] },
      ],
      initializer: [
        floatTensor('cw', [4, 1, 3, 3], conv.data), floatTensor('g', [4], [1, 0.5, 2, 1]), floatTensor('b', [4], [0, 0.1, -0.1, 0.2]),
        floatTensor('m', [4], [0.1, 0, -0.1, 0]), floatTensor('v', [4], [1, 2, 0.5, 1]), floatTensor('fw', [3, 4], fc.data),
      ],
      input: [input('x', ['N', 1, 6, 6])],
      output: [{ name: 'y' }],
    }));
    assert.deepEqual(m.convBnPairs(), [['conv', 'bn']]);
    const batches = Array.from({ length: 4 }, () => ({ x: randn([16, 1, 6, 6]) }));
    const fp32 = noGrad(() => m.forward(batches[0]!.x));
    calibrate(m, batches, { scheme: 'w8a8', samples: 64, prepare: { fusePairs: m.convBnPairs() } });
    assert.ok(m.getSubmodule('conv') instanceof QuantConvBn2d);
    const q = noGrad(() => m.forward(batches[0]!.x));
    let maxDiff = 0;
    let maxAbs = 0;
    for (let k = 0; k < q.size; k++) {
      maxDiff = Math.max(maxDiff, Math.abs(q.data[k]! - fp32.data[k]!));
      maxAbs = Math.max(maxAbs, Math.abs(fp32.data[k]!));
    }
    assert.ok(maxDiff < 0.05 * maxAbs, `W8A8 moves the logits by ${maxDiff} (max |logit| ${maxAbs})`);
    const intModel = convert(m, { sample: batches[1]!.x });
    assert.ok((intModel.verification as AgreementReport).argmaxAgreement >= 0.99);
  });
});

describe('onnx/import: Add of two computed tensors', () => {
  // a = Relu(x), b = Tanh(x) (or, for broadcasting, ReduceMean over axis 1 kept as [n, 1]),
  // s = Add(a, b), y = Add(s, c) with c a constant.
  const graph = (bShape: number[] | null): OnnxGraph => ({
    node: [
      { opType: 'Relu', input: ['x'], output: ['a'], name: 'r' },
      ...(bShape ? [{ opType: 'ReduceMean', input: ['x'], output: ['b'], name: 'm', attribute: [{ name: 'axes', type: 7, ints: [1] }, { name: 'keepdims', type: 2, i: 1 }] }] : [{ opType: 'Tanh', input: ['x'], output: ['b'], name: 't' }]),
      { opType: 'Add', input: ['a', 'b'], output: ['s'], name: 'sum' },
      { opType: 'Add', input: ['s', 'c'], output: ['y'], name: 'bias' },
    ],
    initializer: [floatTensor('c', [3], [0.5, -1, 2])],
    input: [input('x', ['n', 3])],
    output: [{ name: 'y' }],
  });

  it('becomes an nn.Add leaf for same-shape tensors (a constant operand stays an ONNX op); values equal the float64 formula', async () => {
    const { Add } = await import('../nn/merge.ts');
    const m = importOnnx(model(graph(null)));
    const leaves = Object.fromEntries(m.namedModules().filter(([n]) => n !== '').map(([n, mod]) => [n, mod.constructor.name]));
    assert.equal(leaves['sum'], Add.name);
    assert.equal(leaves['bias'], 'OnnxOp');
    const xs = [1, -2, 3, -0.5, 0, 4];
    const y = noGrad(() => m.forward(new Tensor(Float32Array.from(xs), [2, 3])));
    const c = [0.5, -1, 2];
    Array.from(y.data).forEach((v, i) => {
      const expected = Math.max(xs[i]!, 0) + Math.tanh(xs[i]!) + c[i % 3]!;
      assert.ok(Math.abs(v - expected) < 1e-6, `${i}: ${v} vs ${expected}`);
    });
  });

  it('broadcasting operands run as ONNX Add (numpy broadcasting), not through the leaf', () => {
    const m = importOnnx(model(graph([2, 1]), 17));
    const xs = [1, -2, 3, -0.5, 0, 4];
    const y = noGrad(() => m.forward(new Tensor(Float32Array.from(xs), [2, 3])));
    const mean = [2 / 3, 3.5 / 3];
    const c = [0.5, -1, 2];
    const expected = xs.map((v, i) => Math.max(v, 0) + mean[Math.floor(i / 3)]! + c[i % 3]!);
    Array.from(y.data).forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-6, `${i}: ${v} vs ${expected[i]}`));
  });
});
