/**
 * Every ONNX op handler against an independent reference: naive loops written here from the ONNX
 * operator definitions (conv, pooling, resize, matmul...) or hand-computed values.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../tensor/index.ts';
import { OnnxDataType, OnnxError, makeTensor, type OnnxAttribute, type OnnxModel, type OnnxTensor } from './proto.ts';
import { importOnnx } from './import.ts';
import { IntValue, type OnnxValue } from './values.ts';

type Arr = { shape: number[]; data: number[] };
type In = { name: string; value: Arr; int?: boolean; init?: boolean; tensor?: OnnxTensor };

const f = (shape: number[], data: number[]): Arr => ({ shape, data });
/** Deterministic pseudo-random values in [-1, 1). */
function rand(shape: number[], seed: number): Arr {
  const n = shape.reduce((a, b) => a * b, 1);
  let s = seed >>> 0;
  const data = Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.fround(s / 2 ** 31 - 1);
  });
  return { shape, data };
}

function attr(name: string, v: number | number[] | string, kind?: 'float' | 'floats'): OnnxAttribute {
  if (typeof v === 'string') return { name, type: 3, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return kind === 'floats' ? { name, type: 6, floats: v } : { name, type: 7, ints: v };
  return kind === 'float' ? { name, type: 1, f: v } : { name, type: 2, i: v };
}

/** Runs one node through importOnnx; inputs with `init` are initializers, the rest graph inputs. */
function runNode(opType: string, inputs: (In | null)[], attrs: OnnxAttribute[] = [], opset = 17, outputs = 1): OnnxValue[] {
  const model: OnnxModel = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: opset }],
    graph: {
      node: [{ opType, name: 'n', input: inputs.map((i) => i?.name ?? ''), output: Array.from({ length: outputs }, (_, k) => `y${k}`), attribute: attrs }],
      initializer: inputs.filter((i): i is In => i !== null && i.init === true).map((i) => i.tensor ?? makeTensor(i.name, i.int ? OnnxDataType.INT64 : OnnxDataType.FLOAT, i.value.shape, i.value.data)),
      input: inputs.filter((i): i is In => i !== null && !i.init).map((i) => ({ name: i.name, type: { tensorType: { elemType: i.int ? OnnxDataType.INT64 : OnnxDataType.FLOAT } } })),
      output: Array.from({ length: outputs }, (_, k) => ({ name: `y${k}` })),
    },
  };
  const m = importOnnx(model);
  const feeds: Record<string, OnnxValue> = {};
  for (const i of inputs) {
    if (!i || i.init) continue;
    feeds[i.name] = i.int ? new IntValue(i.value.shape, i.value.data) : new Tensor(Float32Array.from(i.value.data), i.value.shape);
  }
  const out = m.run(feeds);
  return Array.from({ length: outputs }, (_, k) => out[`y${k}`]!);
}

const X = (value: Arr): In => ({ name: 'x', value });
const W = (name: string, value: Arr): In => ({ name, value, init: true });
const I = (name: string, data: number[], shape = [data.length]): In => ({ name, value: { shape, data }, int: true, init: true });

function close(actual: OnnxValue, expected: Arr, tol = 1e-5): void {
  assert.deepEqual([...actual.shape], expected.shape, 'shape');
  const a = actual instanceof IntValue ? actual.data : Array.from(actual.data);
  a.forEach((v, i) => assert.ok(Math.abs(v - expected.data[i]!) <= tol * (1 + Math.abs(expected.data[i]!)), `element ${i}: ${v} vs ${expected.data[i]}`));
}

function onnxCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof OnnxError, String(e));
    return e.code;
  }
  return assert.fail('did not throw');
}

// ---- naive references (NCHW)
function at(a: Arr, idx: number[]): number {
  let flat = 0;
  for (let d = 0; d < idx.length; d++) flat = flat * a.shape[d]! + idx[d]!;
  return a.data[flat]!;
}

function refConv(x: Arr, w: Arr, b: number[] | null, o: { pads: number[]; strides: number[]; dil: number[]; group: number }): Arr {
  const [n, c, h, wd] = x.shape as [number, number, number, number];
  const [m, cg, kh, kw] = w.shape as [number, number, number, number];
  const oh = Math.floor((h + o.pads[0]! + o.pads[2]! - o.dil[0]! * (kh - 1) - 1) / o.strides[0]!) + 1;
  const ow = Math.floor((wd + o.pads[1]! + o.pads[3]! - o.dil[1]! * (kw - 1) - 1) / o.strides[1]!) + 1;
  const out: number[] = [];
  const mPerGroup = m / o.group;
  for (let bn = 0; bn < n; bn++) for (let oc = 0; oc < m; oc++) for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) {
    let s = b ? b[oc]! : 0;
    const g = Math.floor(oc / mPerGroup);
    for (let ic = 0; ic < cg; ic++) for (let p = 0; p < kh; p++) for (let q = 0; q < kw; q++) {
      const y = i * o.strides[0]! - o.pads[0]! + p * o.dil[0]!;
      const xx = j * o.strides[1]! - o.pads[1]! + q * o.dil[1]!;
      if (y < 0 || y >= h || xx < 0 || xx >= wd) continue;
      s += at(x, [bn, g * cg + ic, y, xx]) * at(w, [oc, ic, p, q]);
    }
    out.push(s);
  }
  void c;
  return { shape: [n, m, oh, ow], data: out };
}

function refPool(x: Arr, kind: 'max' | 'avg', k: number[], s: number[], pads: number[], opt: { ceil?: boolean; includePad?: boolean } = {}): Arr {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const size = (len: number, a: number): number => {
    const span = len + pads[a]! + pads[a + 2]! - k[a]!;
    let out = (opt.ceil ? Math.ceil(span / s[a]!) : Math.floor(span / s[a]!)) + 1;
    if (opt.ceil && (out - 1) * s[a]! >= len + pads[a]!) out--;
    return out;
  };
  const oh = size(h, 0);
  const ow = size(w, 1);
  const out: number[] = [];
  for (let b = 0; b < n; b++) for (let ch = 0; ch < c; ch++) for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) {
    let best = -Infinity;
    let sum = 0;
    let count = 0;
    for (let p = 0; p < k[0]!; p++) for (let q = 0; q < k[1]!; q++) {
      const y = i * s[0]! - pads[0]! + p;
      const xx = j * s[1]! - pads[1]! + q;
      const inPads = y >= -pads[0]! && y < h + pads[2]! && xx >= -pads[1]! && xx < w + pads[3]!;
      if (y < 0 || y >= h || xx < 0 || xx >= w) {
        if (opt.includePad && inPads) count++;
        continue;
      }
      const v = at(x, [b, ch, y, xx]);
      best = Math.max(best, v);
      sum += v;
      count++;
    }
    out.push(kind === 'max' ? best : sum / count);
  }
  return { shape: [n, c, oh, ow], data: out };
}

describe('onnx/ops: convolution and pooling', () => {
  it('Conv (layer and functional paths) matches a naive convolution', () => {
    const x = rand([2, 4, 6, 5], 1);
    const w = rand([6, 2, 3, 2], 2);
    const b = rand([6], 3).data;
    const geo = { strides: [2, 1], dil: [1, 2], group: 2 };
    // symmetric pads: becomes a Conv2d layer
    const sym = runNode('Conv', [X(x), W('w', w), W('b', f([6], b))], [attr('pads', [1, 1, 1, 1]), attr('strides', geo.strides), attr('dilations', geo.dil), attr('group', 2)]);
    close(sym[0]!, refConv(x, w, b, { pads: [1, 1, 1, 1], ...geo }), 1e-5);
    // asymmetric pads + weight fed at run time: the functional path
    const asym = runNode('Conv', [X(x), { name: 'w', value: w }], [attr('pads', [0, 1, 2, 0]), attr('strides', geo.strides), attr('dilations', geo.dil), attr('group', 2)]);
    close(asym[0]!, refConv(x, w, null, { pads: [0, 1, 2, 0], ...geo }), 1e-5);
    // SAME_UPPER: output = ceil(in / stride); total pad split with the extra at the end
    const same = runNode('Conv', [X(x), W('w', w)], [attr('auto_pad', 'SAME_UPPER'), attr('strides', [2, 2]), attr('group', 2)]);
    close(same[0]!, refConv(x, w, null, { pads: [0, 0, 1, 1], strides: [2, 2], dil: [1, 1], group: 2 }), 1e-5);
    // 1-D conv
    const x1 = rand([1, 2, 7], 4);
    const w1 = rand([3, 2, 3], 5);
    const y1 = runNode('Conv', [X(x1), W('w', w1)], [attr('pads', [1, 1])]);
    const ref1 = refConv({ shape: [1, 2, 1, 7], data: x1.data }, { shape: [3, 2, 1, 3], data: w1.data }, null, { pads: [0, 1, 0, 1], strides: [1, 1], dil: [1, 1], group: 1 });
    close(y1[0]!, { shape: [1, 3, 7], data: ref1.data }, 1e-5);
  });

  it('ConvTranspose is the adjoint scatter of a convolution', () => {
    const x = rand([1, 2, 3, 3], 6);
    const w = rand([2, 3, 3, 2], 7); // [C_in, C_out, kh, kw]
    const strides = [2, 1];
    const pads = [1, 0, 0, 1];
    const outPad = [1, 0];
    const [kh, kw] = [3, 2];
    const full = [2 * 2 + outPad[0]! + kh, 2 + kw];
    const acc = new Array<number>(3 * full[0]! * full[1]!).fill(0);
    for (let ic = 0; ic < 2; ic++) for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let oc = 0; oc < 3; oc++) for (let p = 0; p < kh; p++) for (let q = 0; q < kw; q++) {
      acc[(oc * full[0]! + i * strides[0]! + p) * full[1]! + j * strides[1]! + q]! += at(x, [0, ic, i, j]) * at(w, [ic, oc, p, q]);
    }
    const oh = full[0]! - pads[0]! - pads[2]!;
    const ow = full[1]! - pads[1]! - pads[3]!;
    const expected: number[] = [];
    for (let oc = 0; oc < 3; oc++) for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) expected.push(acc[(oc * full[0]! + i + pads[0]!) * full[1]! + j + pads[1]!]! + 0.5 * oc);
    const y = runNode('ConvTranspose', [X(x), W('w', w), W('b', f([3], [0, 0.5, 1]))], [attr('strides', strides), attr('pads', pads), attr('output_padding', outPad)]);
    close(y[0]!, { shape: [1, 3, oh, ow], data: expected }, 1e-5);
  });

  it('MaxPool / AveragePool / GlobalAveragePool match naive pooling', () => {
    const x = rand([1, 2, 5, 6], 8);
    close(runNode('MaxPool', [X(x)], [attr('kernel_shape', [2, 2]), attr('strides', [2, 2])])[0]!, refPool(x, 'max', [2, 2], [2, 2], [0, 0, 0, 0]));
    close(runNode('MaxPool', [X(x)], [attr('kernel_shape', [3, 2]), attr('strides', [2, 2]), attr('pads', [1, 0, 1, 1]), attr('ceil_mode', 1)])[0]!, refPool(x, 'max', [3, 2], [2, 2], [1, 0, 1, 1], { ceil: true }));
    close(runNode('AveragePool', [X(x)], [attr('kernel_shape', [3, 3]), attr('strides', [1, 2]), attr('pads', [1, 1, 1, 1])])[0]!, refPool(x, 'avg', [3, 3], [1, 2], [1, 1, 1, 1]));
    close(runNode('AveragePool', [X(x)], [attr('kernel_shape', [3, 3]), attr('pads', [1, 1, 1, 1]), attr('count_include_pad', 1)])[0]!, refPool(x, 'avg', [3, 3], [1, 1], [1, 1, 1, 1], { includePad: true }));
    close(runNode('AveragePool', [X(x)], [attr('kernel_shape', [2, 2]), attr('strides', [2, 2]), attr('ceil_mode', 1)])[0]!, refPool(x, 'avg', [2, 2], [2, 2], [0, 0, 0, 0], { ceil: true }));
    const g = runNode('GlobalAveragePool', [X(x)])[0]!;
    const means = [0, 1].map((c) => x.data.slice(c * 30, c * 30 + 30).reduce((a, b) => a + b, 0) / 30);
    close(g, { shape: [1, 2, 1, 1], data: means });
  });
});

describe('onnx/ops: linear algebra and elementwise', () => {
  it('Gemm with transposes, alpha, beta and a broadcast C', () => {
    const a = rand([3, 4], 9);
    const b = rand([5, 4], 10);
    const c = rand([5], 11);
    const expected: number[] = [];
    for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a.data[i * 4 + k]! * b.data[j * 4 + k]!;
      expected.push(2 * s + 0.5 * c.data[j]!);
    }
    close(runNode('Gemm', [X(a), W('b', b), W('c', c)], [attr('transB', 1), attr('alpha', 2, 'float'), attr('beta', 0.5, 'float')])[0]!, f([3, 5], expected));
    // alpha = beta = 1 with initializers: the Linear layer path
    const linear = expected.map((_, idx) => {
      const i = Math.floor(idx / 5);
      const j = idx % 5;
      let s = c.data[j]!;
      for (let k = 0; k < 4; k++) s += a.data[i * 4 + k]! * b.data[j * 4 + k]!;
      return s;
    });
    close(runNode('Gemm', [X(a), W('b', b), W('c', c)], [attr('transB', 1)])[0]!, f([3, 5], linear));
    const aT = { shape: [4, 3], data: Array.from({ length: 12 }, (_, idx) => a.data[(idx % 3) * 4 + Math.floor(idx / 3)]!) };
    close(runNode('Gemm', [X(aT), W('b', b), W('c', c)], [attr('transA', 1), attr('transB', 1)])[0]!, f([3, 5], linear));
  });

  it('MatMul follows numpy: batch broadcast and 1-D operands', () => {
    const a = rand([2, 1, 3, 4], 12);
    const b = rand([3, 4, 2], 13);
    const expected: number[] = [];
    for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let r = 0; r < 3; r++) for (let c = 0; c < 2; c++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += at(a, [i, 0, r, k]) * at(b, [j, k, c]);
      expected.push(s);
    }
    close(runNode('MatMul', [X(a), { name: 'b', value: b }])[0]!, f([2, 3, 3, 2], expected));
    const v = rand([4], 14);
    const m = rand([4, 3], 15);
    const vm = [0, 1, 2].map((c) => v.data.reduce((s, x, k) => s + x * m.data[k * 3 + c]!, 0));
    close(runNode('MatMul', [X(v), W('m', m)])[0]!, f([3], vm)); // Linear layer path, 1-D input
    close(runNode('MatMul', [X(m), { name: 'v', value: f([3], [1, 2, 3]) }])[0]!, f([4], [0, 1, 2, 3].map((r) => m.data[r * 3]! + 2 * m.data[r * 3 + 1]! + 3 * m.data[r * 3 + 2]!)));
  });

  it('Add / Sub / Mul / Div broadcast on floats and on integers (Div truncates)', () => {
    const a = f([2, 3], [1, 2, 3, 4, 5, 6]);
    const b = f([3], [2, -4, 8]);
    close(runNode('Add', [X(a), W('b', b)])[0]!, f([2, 3], [3, -2, 11, 6, 1, 14]));
    close(runNode('Sub', [X(a), W('b', b)])[0]!, f([2, 3], [-1, 6, -5, 2, 9, -2]));
    close(runNode('Mul', [X(a), W('b', b)])[0]!, f([2, 3], [2, -8, 24, 8, -20, 48]));
    close(runNode('Div', [X(a), W('b', b)])[0]!, f([2, 3], [0.5, -0.5, 0.375, 2, -1.25, 0.75]));
    const ints = runNode('Div', [{ name: 'x', value: f([3], [7, -7, 9]), int: true }, I('d', [2])])[0]!;
    assert.ok(ints instanceof IntValue);
    assert.deepEqual(ints.data, [3, -3, 4]);
    assert.equal(onnxCode(() => runNode('Add', [X(a), I('i', [1])])), 'bad-graph');
  });

  it('activations match their closed forms', () => {
    const x = f([7], [-3, -1, -0.5, 0, 0.5, 1, 4]);
    const map = (fn: (v: number) => number): Arr => f([7], x.data.map(fn));
    const erf = (v: number): number => {
      // Abramowitz-Stegun 7.1.26 is not exact enough: integrate the series instead.
      let sum = 0;
      let term = v;
      for (let n = 0; n < 60; n++) {
        sum += term / (2 * n + 1);
        term *= (-v * v) / (n + 1);
      }
      return (2 / Math.sqrt(Math.PI)) * sum;
    };
    close(runNode('Relu', [X(x)])[0]!, map((v) => Math.max(0, v)));
    close(runNode('LeakyRelu', [X(x)], [attr('alpha', 0.2, 'float')])[0]!, map((v) => (v > 0 ? v : 0.2 * v)));
    close(runNode('Sigmoid', [X(x)])[0]!, map((v) => 1 / (1 + Math.exp(-v))));
    close(runNode('Tanh', [X(x)])[0]!, map(Math.tanh));
    close(runNode('Erf', [X(x)])[0]!, map(erf), 1e-6);
    close(runNode('Gelu', [X(x)], [], 20)[0]!, map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2))), 1e-6);
    close(runNode('Gelu', [X(x)], [attr('approximate', 'tanh')], 20)[0]!, map((v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)))), 1e-6);
    close(runNode('HardSwish', [X(x)], [], 14)[0]!, map((v) => v * Math.max(0, Math.min(1, v / 6 + 0.5))));
    close(runNode('Clip', [X(x), W('lo', f([], [-0.5])), W('hi', f([], [1]))])[0]!, map((v) => Math.min(1, Math.max(-0.5, v))));
    close(runNode('Clip', [X(x), W('lo', f([], [0])), W('hi', f([], [6]))])[0]!, map((v) => Math.min(6, Math.max(0, v))));
    close(runNode('Clip', [X(x), null, W('hi', f([], [0.5]))])[0]!, map((v) => Math.min(0.5, v)));
    assert.equal(onnxCode(() => runNode('Gelu', [X(x)], [], 17)), 'unsupported-op'); // Gelu needs opset 20
  });

  it('Softmax: along an axis from opset 13, 2-D coerced before', () => {
    const x = rand([2, 2, 3], 16);
    const soft = (vals: number[]): number[] => {
      const m = Math.max(...vals);
      const e = vals.map((v) => Math.exp(v - m));
      const s = e.reduce((a, b) => a + b, 0);
      return e.map((v) => v / s);
    };
    const last = [0, 1, 2, 3].flatMap((r) => soft(x.data.slice(r * 3, r * 3 + 3)));
    close(runNode('Softmax', [X(x)], [], 13)[0]!, f([2, 2, 3], last));
    // opset 11, axis 1: each batch row of 6 values is one distribution
    close(runNode('Softmax', [X(x)], [], 11)[0]!, f([2, 2, 3], [0, 1].flatMap((r) => soft(x.data.slice(r * 6, r * 6 + 6)))));
  });

  it('BatchNormalization and LayerNormalization match their formulas', () => {
    const x = rand([2, 3, 2, 2], 17);
    const [scale, bias, mean, variance] = [f([3], [1, 2, -1]), f([3], [0, 0.5, 1]), f([3], [0.1, -0.2, 0.3]), f([3], [1, 0.25, 4])];
    const bn = x.data.map((v, i) => {
      const c = Math.floor(i / 4) % 3;
      return ((v - mean.data[c]!) / Math.sqrt(variance.data[c]! + 1e-3)) * scale.data[c]! + bias.data[c]!;
    });
    const attrs = [attr('epsilon', 1e-3, 'float')];
    close(runNode('BatchNormalization', [X(x), W('s', scale), W('b', bias), W('m', mean), W('v', variance)], attrs)[0]!, f(x.shape, bn), 1e-5);
    close(runNode('BatchNormalization', [X(x), { name: 's', value: scale }, W('b', bias), W('m', mean), W('v', variance)], attrs)[0]!, f(x.shape, bn), 1e-5);
    const y = rand([2, 3, 4], 18);
    const g = rand([3, 4], 19);
    const beta = rand([3, 4], 20);
    const ln = (axisStart: number): number[] => {
      const group = axisStart === 1 ? 12 : 4;
      const out: number[] = [];
      for (let s = 0; s < y.data.length; s += group) {
        const vals = y.data.slice(s, s + group);
        const m = vals.reduce((a, b) => a + b, 0) / group;
        const v = vals.reduce((a, b) => a + (b - m) ** 2, 0) / group;
        vals.forEach((val, k) => {
          const e = (s + k) % 12;
          const gi = axisStart === 1 ? e : 8 + (e % 4);
          out.push(((val - m) / Math.sqrt(v + 1e-5)) * g.data[gi]! + beta.data[gi]!);
        });
      }
      return out;
    };
    close(runNode('LayerNormalization', [X(y), W('g', g), W('b', beta)], [attr('axis', -2)])[0]!, f(y.shape, ln(1)), 1e-5);
    const g1 = f([4], g.data.slice(8));
    const b1 = f([4], beta.data.slice(8));
    close(runNode('LayerNormalization', [X(y), { name: 'g', value: g1 }, { name: 'b', value: b1 }], [attr('axis', 2)])[0]!, f(y.shape, ln(2)), 1e-5);
  });
});

describe('onnx/ops: shapes and data movement', () => {
  const x = f([2, 3, 4], Array.from({ length: 24 }, (_, i) => i));

  it('Flatten, Reshape (0 copies, -1 infers, allowzero), Transpose', () => {
    close(runNode('Flatten', [X(x)], [attr('axis', 2)])[0]!, f([6, 4], x.data));
    close(runNode('Flatten', [X(x)], [attr('axis', 0)])[0]!, f([1, 24], x.data));
    close(runNode('Flatten', [X(x)])[0]!, f([2, 12], x.data));
    close(runNode('Reshape', [X(x), I('s', [0, -1])])[0]!, f([2, 12], x.data));
    close(runNode('Reshape', [X(f([0, 3], [])), I('s', [3, 0])], [attr('allowzero', 1)], 14)[0]!, f([3, 0], []));
    const t = runNode('Transpose', [X(x)], [attr('perm', [2, 0, 1])])[0]!;
    close(t, f([4, 2, 3], Array.from({ length: 24 }, (_, i) => {
      const [k, a, b] = [Math.floor(i / 6), Math.floor(i / 3) % 2, i % 3];
      return a * 12 + b * 4 + k;
    })));
    close(runNode('Transpose', [X(f([2, 3], [1, 2, 3, 4, 5, 6]))])[0]!, f([3, 2], [1, 4, 2, 5, 3, 6]));
  });

  it('Squeeze / Unsqueeze: axes as attribute (opset 11) and as input (opset 13)', () => {
    const y = f([1, 3, 1], [1, 2, 3]);
    close(runNode('Squeeze', [X(y)], [attr('axes', [0])], 11)[0]!, f([3, 1], y.data));
    close(runNode('Squeeze', [X(y), I('a', [-1])], [], 13)[0]!, f([1, 3], y.data));
    close(runNode('Squeeze', [X(y)], [], 13)[0]!, f([3], y.data));
    close(runNode('Unsqueeze', [X(y)], [attr('axes', [0, 4])], 11)[0]!, f([1, 1, 3, 1, 1], y.data));
    close(runNode('Unsqueeze', [X(y), I('a', [-1, 1])], [], 13)[0]!, f([1, 1, 3, 1, 1], y.data));
    assert.equal(onnxCode(() => runNode('Squeeze', [X(y), I('a', [1])], [], 13)), 'bad-graph');
  });

  it('Concat, Slice (negative steps, clamping), Gather (negative indices)', () => {
    close(runNode('Concat', [X(f([2, 1], [1, 2])), W('b', f([2, 2], [3, 4, 5, 6]))], [attr('axis', -1)])[0]!, f([2, 3], [1, 3, 4, 2, 5, 6]));
    // x[:, ::-2, 1:100] -> rows 2, 0; columns 1..3
    const s = runNode('Slice', [X(x), I('st', [-1, 1]), I('en', [-100, 100]), I('ax', [1, 2]), I('sp', [-2, 1])])[0]!;
    const exp: number[] = [];
    for (const b of [0, 1]) for (const r of [2, 0]) for (const c of [1, 2, 3]) exp.push(b * 12 + r * 4 + c);
    close(s, f([2, 2, 3], exp));
    const int64Max: In = { name: 'en', value: f([1], [0]), init: true, tensor: makeTensor('en', OnnxDataType.INT64, [1], BigInt64Array.of(2n ** 63n - 1n)) };
    close(runNode('Slice', [X(x), I('st', [1]), int64Max])[0]!, f([1, 3, 4], x.data.slice(12)));
    const g = runNode('Gather', [X(x), I('i', [-1, 0, 2, 2], [2, 2])], [attr('axis', 1)])[0]!;
    const ge: number[] = [];
    for (const b of [0, 1]) for (const r of [2, 0, 2, 2]) for (let c = 0; c < 4; c++) ge.push(b * 12 + r * 4 + c);
    close(g, f([2, 2, 2, 4], ge));
    assert.equal(onnxCode(() => runNode('Gather', [X(x), I('i', [3])], [attr('axis', 1)])), 'bad-graph');
  });

  it('Shape (start/end from opset 15), Constant, Cast, Identity', () => {
    const sh = runNode('Shape', [X(x)], [attr('start', 1), attr('end', -1)], 15)[0]!;
    assert.deepEqual([...(sh as IntValue).data], [3]);
    assert.deepEqual([...(runNode('Shape', [X(x)], [], 13)[0] as IntValue).data], [2, 3, 4]);
    const c = runNode('Constant', [], [{ name: 'value', type: 4, t: makeTensor('c', OnnxDataType.FLOAT, [2], [0.5, 2]) }])[0]!;
    close(c, f([2], [0.5, 2]));
    assert.deepEqual([...(runNode('Constant', [], [attr('value_ints', [4, 5])])[0] as IntValue).data], [4, 5]);
    const cast = runNode('Cast', [X(f([3], [-1.7, 0.2, 2.9]))], [attr('to', OnnxDataType.INT64)])[0]!;
    assert.deepEqual([...(cast as IntValue).data], [-1, 0, 2]);
    close(runNode('Identity', [X(x)])[0]!, x);
  });

  it('Pad: constant (with negative pads), reflect, edge; axes input from opset 18', () => {
    const y = f([1, 3], [1, 2, 3]);
    close(runNode('Pad', [X(y), I('p', [0, 2, 0, -1]), W('v', f([], [9]))], [], 11)[0]!, f([1, 4], [9, 9, 1, 2]));
    close(runNode('Pad', [X(y), I('p', [0, 2, 0, 2])], [attr('mode', 'reflect')], 13)[0]!, f([1, 7], [3, 2, 1, 2, 3, 2, 1]));
    close(runNode('Pad', [X(y), I('p', [1, 1, 0, 2])], [attr('mode', 'edge')], 13)[0]!, f([2, 6], [1, 1, 2, 3, 3, 3, 1, 1, 2, 3, 3, 3]));
    close(runNode('Pad', [X(y), I('p', [1, 2]), null, I('a', [-1])], [], 18)[0]!, f([1, 6], [0, 1, 2, 3, 0, 0]));
    close(runNode('Pad', [X(y), I('p', [0, 1, 0, 3])], [attr('mode', 'wrap')], 19)[0]!, f([1, 7], [3, 1, 2, 3, 1, 2, 3]));
  });

  it('Resize nearest and linear with each coordinate mode (2-D reference per output pixel)', () => {
    const img = rand([1, 1, 3, 4], 21);
    const ref = (outH: number, outW: number, sh: number, sw: number, mode: 'nearest' | 'linear', coord: string, nearest = 'round_prefer_floor'): Arr => {
      const src = (i: number, scale: number, inLen: number, outLen: number): number => {
        if (coord === 'half_pixel') return (i + 0.5) / scale - 0.5;
        if (coord === 'pytorch_half_pixel') return outLen > 1 ? (i + 0.5) / scale - 0.5 : 0;
        if (coord === 'align_corners') return outLen === 1 ? 0 : (i * (inLen - 1)) / (outLen - 1);
        return i / scale;
      };
      const pick = (v: number, n: number): number => {
        const r = nearest === 'floor' ? Math.floor(v) : nearest === 'ceil' ? Math.ceil(v) : nearest === 'round_prefer_ceil' ? Math.floor(v + 0.5) : Math.ceil(v - 0.5);
        return Math.min(Math.max(r, 0), n - 1);
      };
      const out: number[] = [];
      for (let i = 0; i < outH; i++) for (let j = 0; j < outW; j++) {
        const y = src(i, sh, 3, outH);
        const x = src(j, sw, 4, outW);
        if (mode === 'nearest') {
          out.push(at(img, [0, 0, pick(y, 3), pick(x, 4)]));
          continue;
        }
        const yc = Math.min(Math.max(y, 0), 2);
        const xc = Math.min(Math.max(x, 0), 3);
        const [y0, x0] = [Math.floor(yc), Math.floor(xc)];
        const [y1, x1] = [Math.min(y0 + 1, 2), Math.min(x0 + 1, 3)];
        const [dy, dx] = [yc - y0, xc - x0];
        out.push((1 - dy) * ((1 - dx) * at(img, [0, 0, y0, x0]) + dx * at(img, [0, 0, y0, x1])) + dy * ((1 - dx) * at(img, [0, 0, y1, x0]) + dx * at(img, [0, 0, y1, x1])));
      }
      return f([1, 1, outH, outW], out);
    };
    const scales = W('sc', f([4], [1, 1, 2, 1.5]));
    close(runNode('Resize', [X(img), null, scales], [attr('mode', 'nearest')], 13)[0]!, ref(6, 6, 2, 1.5, 'nearest', 'half_pixel'));
    close(runNode('Resize', [X(img), null, scales], [attr('mode', 'nearest'), attr('nearest_mode', 'floor'), attr('coordinate_transformation_mode', 'asymmetric')], 13)[0]!, ref(6, 6, 2, 1.5, 'nearest', 'asymmetric', 'floor'));
    close(runNode('Resize', [X(img), null, scales], [attr('mode', 'linear')], 13)[0]!, ref(6, 6, 2, 1.5, 'linear', 'half_pixel'));
    close(runNode('Resize', [X(img), null, scales], [attr('mode', 'linear'), attr('coordinate_transformation_mode', 'pytorch_half_pixel')], 13)[0]!, ref(6, 6, 2, 1.5, 'linear', 'pytorch_half_pixel'));
    // sizes input (opset 11 needs roi and scales inputs present: empty)
    const sizes = I('sz', [1, 1, 5, 7]);
    close(runNode('Resize', [X(img), W('roi', f([0], [])), W('sc', f([0], [])), sizes], [attr('mode', 'linear'), attr('coordinate_transformation_mode', 'align_corners')], 11)[0]!, ref(5, 7, 5 / 3, 7 / 4, 'linear', 'align_corners'));
    assert.equal(onnxCode(() => runNode('Resize', [X(img), null, scales], [attr('mode', 'cubic')], 13)), 'bad-graph');
  });

  it('ReduceMean: axes attribute (opset 17), axes input and noop_with_empty_axes (opset 18)', () => {
    const m = (axis: number): number[] => (axis === 1 ? [0, 1].flatMap((b) => [0, 1, 2, 3].map((c) => (b * 12 + c + b * 12 + 4 + c + b * 12 + 8 + c) / 3)) : []);
    close(runNode('ReduceMean', [X(x)], [attr('axes', [1])], 17)[0]!, f([2, 1, 4], m(1)));
    close(runNode('ReduceMean', [X(x), I('a', [-2])], [attr('keepdims', 0)], 18)[0]!, f([2, 4], m(1)));
    close(runNode('ReduceMean', [X(x)], [attr('keepdims', 0)], 18)[0]!, f([], [11.5]));
    close(runNode('ReduceMean', [X(x)], [attr('noop_with_empty_axes', 1)], 18)[0]!, x);
  });
});
