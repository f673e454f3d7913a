import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randn, Rng, Tensor, manualSeed, mul, sum } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Flatten, Identity, Linear, ReLU, Sequential } from '../../nn/index.ts';
import { estimatorsFor, int8PerChannelSym, int8PerTensorAffine, int4Lsq, qconfigFor, SCHEMES, uint4Lsq, uint8Ema } from '../config/index.ts';
import { resolvePlan, validateTable, type ResolvedLayer } from '../config/plan.ts';
import type { QParams } from '../core/qparams.ts';
import { calibrate } from '../ptq/calibrate.ts';
import { disableFakeQuant, prepareQat, quantizedLayers } from './prepare.ts';
import { QuantConv1d, QuantConv2d, QuantConvBn1d, QuantLinear } from './layers.ts';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void => {
  assert.equal(a.length, b.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (1 + Math.abs(b[i]!)));
  assert.ok(worst <= tol, `${what}: max relative difference ${worst} > ${tol}`);
};

/** The float64 fake quantization of `v` under affine `qp` along axis 0 (per channel) or per tensor. */
function fakeQuant64(v: ArrayLike<number>, qp: QParams, channels: number): Float64Array {
  const out = new Float64Array(v.length);
  const per = v.length / channels;
  for (let i = 0; i < v.length; i++) {
    const c = qp.scale.length === 1 ? 0 : Math.floor(i / per);
    const s = qp.scale[c]!;
    const z = qp.zeroPoint[c]!;
    const q = Math.min(qp.qmax, Math.max(qp.qmin, roundHalfEven(v[i]! / s) + z));
    out[i] = (q - z) * s;
  }
  return out;
}

/** y[n, o, t] = b[o] + Σ_{c in o's group, j} w[o, c, j]·x[n, c, t·stride + j·dilation − padding], in float64. */
function conv1d64(x: ArrayLike<number>, xShape: readonly number[], w: ArrayLike<number>, b: ArrayLike<number> | null, conv: Conv1d): { data: Float64Array; shape: number[] } {
  const [n, c, length] = xShape as [number, number, number];
  const O = conv.outChannels;
  const cg = c / conv.groups;
  const og = O / conv.groups;
  const k = conv.kernelSize;
  const L = conv.outputLength(length);
  const out = new Float64Array(n * O * L);
  for (let s = 0; s < n; s++) {
    for (let o = 0; o < O; o++) {
      const g = Math.floor(o / og);
      for (let t = 0; t < L; t++) {
        let acc = b ? b[o]! : 0;
        for (let ci = 0; ci < cg; ci++) {
          for (let j = 0; j < k; j++) {
            const pos = t * conv.stride + j * conv.dilation - conv.padding;
            if (pos < 0 || pos >= length) continue;
            acc += w[(o * cg + ci) * k + j]! * x[(s * c + g * cg + ci) * length + pos]!;
          }
        }
        out[(s * O + o) * L + t] = acc;
      }
    }
  }
  return { data: out, shape: [n, O, L] };
}

const GEOMETRIES = [
  { name: 'plain', in: 3, out: 4, k: 3, options: {} },
  { name: 'padding 2', in: 3, out: 4, k: 5, options: { padding: 2 } },
  { name: 'stride 2, padding 1', in: 2, out: 3, k: 3, options: { stride: 2, padding: 1 } },
  { name: 'dilation 2', in: 2, out: 3, k: 3, options: { dilation: 2, padding: 2 } },
  { name: 'groups 2, no bias', in: 4, out: 6, k: 3, options: { groups: 2, bias: false } },
  { name: 'depthwise, stride 3', in: 4, out: 4, k: 2, options: { groups: 4, stride: 3 } },
] as const;

const row = (name: string, type: ResolvedLayer['type'], weightSpec: ResolvedLayer['weightSpec'], activationSpec: ResolvedLayer['activationSpec'], fusedBatchNorm: string | null = null): ResolvedLayer => ({ name, type, weightSpec, activationSpec, fusedBatchNorm });

describe('quant/qat: Conv1d', () => {
  it('prepareQat swaps Conv1d for QuantConv1d and folds a following BatchNorm1d (QuantConvBn1d)', () => {
    const model = new Sequential(new Conv1d(2, 4, 3), new BatchNorm1d(4), new ReLU(), new Conv1d(4, 4, 3), new ReLU(), new Flatten(), new Linear(4 * 4, 3));
    const table = resolvePlan(model, { default: qconfigFor('w4a4', 'lsq') });
    assert.deepEqual(table.map((r) => [r.name, r.type, r.fusedBatchNorm]), [['0', 'Conv1d', '1'], ['3', 'Conv1d', null], ['6', 'Linear', null]]);
    // first and last layers at 8 bits, the model input int8 (the plan rules are the Conv2d ones)
    assert.equal(table[0]!.weightSpec!.bits, 8);
    assert.deepEqual(table[0]!.activationSpec, int8PerTensorAffine);
    assert.equal(table[1]!.weightSpec!.bits, 4);
    prepareQat(model, table);
    assert.ok(model.at(0) instanceof QuantConvBn1d && model.at(1) instanceof Identity);
    assert.ok(model.at(3) instanceof QuantConv1d && model.at(6) instanceof QuantLinear);
    assert.deepEqual(quantizedLayers(model).map((l) => [l.name, l.type, l.foldedBatchNorm]), [['0', 'Conv1d', true], ['3', 'Conv1d', false], ['6', 'Linear', false]]);
    assert.deepEqual(model.forward(randn([2, 2, 8])).shape, [2, 3]);
    assert.match(model.at(3).toString(), /QuantConv1d\(4, 4, kernelSize=3, stride=1, padding=0, dilation=1, groups=1/);
  });

  it("plans select Conv1d by type ({ type: 'Conv1d' }), JSON tables round-trip and are checked", () => {
    const model = (): Sequential => new Sequential(new Conv1d(2, 4, 3), new ReLU(), new Conv2d(4, 4, 1), new Flatten(), new Linear(4, 2));
    const m = model();
    // the Conv2d here gets a [N, 4, L] input, so it is only planned, never run
    const table = resolvePlan(m, { default: qconfigFor('w8a8', 'ste'), overrides: [{ match: { type: 'Conv1d' }, config: { weight: { ...int8PerChannelSym, bits: 6 } } }], keepFirstLast8bit: false });
    assert.equal(table[0]!.weightSpec!.bits, 6);
    assert.equal(table[1]!.weightSpec!.bits, 8);
    const parsed = JSON.parse(JSON.stringify(table)) as ResolvedLayer[];
    assert.deepEqual(validateTable(model(), parsed), table);
    assert.throws(() => validateTable(model(), [row('0', 'Conv2d', null, null)]), /the model has a Conv1d there, the table says Conv2d/);
    assert.throws(() => validateTable(model(), [row('0', 'Conv1d', null, null, '1')]), /'1' is a ReLU, not the BatchNorm1d a Conv1d folds/);
    // a Conv1d does not fold a BatchNorm2d (nor a Conv2d a BatchNorm1d)
    const mixed = new Sequential(new Conv1d(2, 4, 3), new BatchNorm2d(4));
    assert.equal(resolvePlan(mixed, { default: qconfigFor('w8a8', 'ste') })[0]!.fusedBatchNorm, null);
    assert.throws(() => resolvePlan(mixed, { default: qconfigFor('w8a8', 'ste') }, { fusePairs: [['0', '1']] }), /not the BatchNorm1d a Conv1d folds/);
  });

  for (const g of GEOMETRIES) {
    it(`fake-quant forward equals float64 quantize → conv1d (${g.name})`, () => {
      const rng = new Rng(11);
      const conv = new Conv1d(g.in, g.out, g.k, { ...g.options, rng });
      const model = new Sequential(conv);
      prepareQat(model, [row('0', 'Conv1d', int8PerChannelSym, uint8Ema)]);
      const q = model.at(0) as QuantConv1d;
      const x = randn([3, g.in, 11], { rng });
      model.train();
      noGrad(() => model.forward(x)); // the EMA observer sees one batch
      model.eval();
      const y = noGrad(() => model.forward(x));
      const ex = q.exportLayer();
      assert.equal(ex.geometry.type === 'conv2d' && ex.geometry.conv1d, true);
      const wq = ex.weightQuant!;
      const aq = ex.activationQuant!;
      assert.ok(wq.type === 'affine' && aq.type === 'affine');
      assert.equal(wq.qparams.scale.length, g.out, 'one weight scale per output channel (axis 0)');
      assert.equal(wq.qparams.axis, 0);
      const xq = fakeQuant64(x.data, aq.qparams, 1);
      const wfq = fakeQuant64(conv.weight.data, wq.qparams, g.out);
      const ref = conv1d64(xq, x.shape, wfq, conv.bias?.data ?? null, conv);
      assert.deepEqual(y.shape, ref.shape);
      close(y.data, ref.data, 2e-6, g.name);
      // and the exported fake-quant weight is that same grid
      close(ex.weightFakeQuant.data, wfq, 1e-7, `${g.name}: exported weight`);
    });
  }

  it('every scheme × estimator: QuantConv1d gives the outputs and gradients of QuantConv2d on [N, C, 1, L]', () => {
    for (const scheme of SCHEMES) {
      for (const estimator of estimatorsFor(scheme)) {
        const label = `${scheme}/${estimator}`;
        const rng = new Rng(5);
        const c1 = new Conv1d(4, 6, 3, { padding: 1, stride: 2, groups: 2, rng });
        const c2 = new Conv2d(4, 6, [1, 3], { padding: [0, 1], stride: [1, 2], groups: 2, rng });
        c2.weight.data.set(c1.weight.data);
        c2.bias!.data.set(c1.bias!.data);
        const cfg = qconfigFor(scheme, estimator);
        const m1 = prepareQat(new Sequential(c1), [row('0', 'Conv1d', cfg.weight, cfg.activation)]);
        const m2 = prepareQat(new Sequential(c2), [row('0', 'Conv2d', cfg.weight, cfg.activation)]);
        const xd = randn([3, 4, 9], { rng });
        const r = randn([3, 6, 5], { rng });
        const x1 = new Tensor(xd.data.slice(), [3, 4, 9]).requiresGrad_(true);
        const x2 = new Tensor(xd.data.slice(), [3, 4, 1, 9]).requiresGrad_(true);
        manualSeed(3);
        const y1 = m1.forward(x1);
        manualSeed(3);
        const y2 = m2.forward(x2);
        assert.deepEqual(y1.shape, [3, 6, 5], label);
        close(y1.data, y2.data, 1e-6, `${label}: forward`);
        sum(mul(y1, r)).backward();
        sum(mul(y2, new Tensor(r.data, [3, 6, 1, 5]))).backward();
        close(x1.grad!.data, x2.grad!.data, 1e-5, `${label}: input gradient`);
        close(c1.weight.grad!.data, c2.weight.grad!.data, 1e-5, `${label}: weight gradient`);
        close(c1.bias!.grad!.data, c2.bias!.grad!.data, 1e-5, `${label}: bias gradient`);
        // learned quantizer parameters (LSQ steps, PACT α, ...) get the same gradients
        const p1 = m1.namedParameters().filter(([n]) => n.includes('Quantizer'));
        const p2 = new Map(m2.namedParameters().filter(([n]) => n.includes('Quantizer')));
        assert.equal(p1.length, p2.size, label);
        for (const [name, p] of p1) {
          const other = p2.get(name)!;
          assert.equal(p.grad === null, other.grad === null, `${label}: ${name} gradient presence`);
          if (p.grad) close(p.grad.data, other.grad!.data, 1e-5, `${label}: ${name} gradient`);
        }
      }
    }
  });

  it('the LSQ step gradient of a Conv1d input quantizer is the closed form; the forward is piecewise linear in s as quantize → conv1d says', () => {
    const rng = new Rng(21);
    const conv = new Conv1d(2, 3, 3, { padding: 1, rng, dtype: 'float64' });
    const model = prepareQat(new Sequential(conv), [row('0', 'Conv1d', null, uint4Lsq)]);
    const q = model.at(0) as QuantConv1d;
    const x = new Tensor(Float64Array.from(randn([2, 2, 7], { rng }).data, (v) => Math.abs(v)), [2, 2, 7]);
    noGrad(() => model.forward(x)); // initialises the step
    const step = q.inputQuantizer!.parameters()[0]!;
    const r = new Tensor(Float64Array.from(randn([2, 3, 7], { rng }).data), [2, 3, 7]);
    const loss = (): number => noGrad(() => sum(mul(model.forward(x), r)).item());
    sum(mul(model.forward(x), r)).backward();
    const analytic = step.grad!.data[0]!;
    // LSQ: ∂x̂/∂s = round(x/s) − x/s inside the range, qmax / qmin at the clip, times the gradient
    // scale g = 1/√(N·qmax), N the features per sample
    const s0 = step.data[0]!;
    const n = x.size;
    const g = 1 / Math.sqrt((n / 2) * 15);
    let expected = 0;
    const xq = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const v = x.data[i]! / s0;
      xq[i] = v >= 15 ? 15 : roundHalfEven(v) - v;
    }
    // Σ over outputs of r·∂y/∂x̂ · ∂x̂/∂s
    const upstream = conv1dInputGradient(r.data, conv, [2, 2, 7]);
    for (let i = 0; i < n; i++) expected += upstream[i]! * xq[i]!;
    expected *= g;
    assert.ok(Math.abs(analytic - expected) <= 1e-9 * (1 + Math.abs(expected)), `LSQ step gradient ${analytic} vs formula ${expected}`);
    // Between rounding jumps x̂ = s·clamp(round(x/s)), so the loss's true slope in s is
    // Σ upstream·clamp(round(x/s)) (LSQ's straight-through gradient drops the jumps and adds −x/s):
    // a central difference sees that slope (the step is a float32 parameter: h = 2^−14·s, 1 % tolerance).
    let slope = 0;
    for (let i = 0; i < n; i++) slope += upstream[i]! * Math.min(15, roundHalfEven(x.data[i]! / s0));
    const h = s0 / 2 ** 14;
    step.data[0] = s0 + h;
    const up = loss();
    step.data[0] = s0 - h;
    const down = loss();
    step.data[0] = s0;
    assert.ok(Math.abs((up - down) / (2 * h) - slope) <= 1e-2 * (1 + Math.abs(slope)), `finite difference ${(up - down) / (2 * h)} vs ${slope}`);
  });

  it('QuantConvBn1d with fake quantization off equals Conv1d → BatchNorm1d (training and eval, running statistics)', () => {
    const rng = new Rng(3);
    const conv = new Conv1d(3, 4, 3, { padding: 1, rng });
    const bn = new BatchNorm1d(4);
    bn.weight!.data.set([1.5, -0.5, 0.8, 1]);
    bn.bias!.data.set([0.1, 0.2, -0.3, 0]);
    const ref = new Sequential(new Conv1d(3, 4, 3, { padding: 1 }), new BatchNorm1d(4));
    ref.loadStateDict(new Sequential(conv, bn).stateDict());
    const model = prepareQat(new Sequential(conv, bn), [row('0', 'Conv1d', int8PerChannelSym, uint8Ema, '1')]);
    model.train();
    noGrad(() => model.forward(randn([5, 3, 10], { rng: new Rng(4) }))); // the quantizers observe once (exportLayer needs it)
    ref.train();
    noGrad(() => ref.forward(randn([5, 3, 10], { rng: new Rng(4) })));
    disableFakeQuant(model);
    for (let step = 0; step < 3; step++) {
      const x = randn([5, 3, 10], { rng });
      close(model.forward(x).data, ref.forward(x).data, 1e-5, `training step ${step}`);
    }
    const foldedBn = (model.at(0) as QuantConvBn1d).bn;
    close(foldedBn.runningMean!.data, (ref.at(1) as BatchNorm1d).runningMean!.data, 2e-4, 'running mean');
    close(foldedBn.runningVar!.data, (ref.at(1) as BatchNorm1d).runningVar!.data, 2e-4, 'running var');
    model.eval();
    ref.eval();
    const x = randn([4, 3, 10], { rng });
    close(noGrad(() => model.forward(x)).data, noGrad(() => ref.forward(x)).data, 1e-4, 'eval');
    // the exported weight is the folded one: W·γ/√(σ² + ε) per output channel
    const ex = (model.at(0) as QuantConvBn1d).exportLayer();
    assert.deepEqual(ex.weightFloat.shape, [4, 3, 3]);
    const rv = foldedBn.runningVar!.data;
    for (let i = 0; i < 36; i++) {
      const o = Math.floor(i / 9);
      const expected = conv.weight.data[i]! * bn.weight!.data[o]! / Math.sqrt(rv[o]! + bn.eps);
      assert.ok(Math.abs(ex.weightFloat.data[i]! - expected) <= 1e-6 * (1 + Math.abs(expected)), `folded weight ${i}`);
    }
  });

  it('PTQ calibrate quantizes Conv1d weights per output channel (axis 0) from their own range', () => {
    const rng = new Rng(9);
    const model = new Sequential(new Conv1d(3, 5, 3, { padding: 1, rng }), new ReLU(), new Conv1d(5, 4, 3, { rng }), new ReLU(), new Flatten(), new Linear(4 * 6, 3, { rng }));
    const w = Float32Array.from((model.at(2) as Conv1d).weight.data);
    const x = randn([16, 3, 8], { rng });
    calibrate(model, [{ x }], { scheme: 'w4a8', weightMethod: 'minmax' });
    const layer = model.at(2) as QuantConv1d;
    assert.ok(layer instanceof QuantConv1d);
    const wq = layer.exportLayer().weightQuant!;
    assert.ok(wq.type === 'affine');
    assert.equal(wq.qparams.axis, 0);
    assert.equal(wq.qparams.bits, 4);
    for (let o = 0; o < 4; o++) {
      let m = 0;
      for (let i = o * 15; i < (o + 1) * 15; i++) m = Math.max(m, Math.abs(w[i]!));
      assert.ok(Math.abs(wq.qparams.scale[o]! - m / 7) <= 1e-6 * m, `channel ${o}: scale ${wq.qparams.scale[o]} vs max|w|/7 = ${m / 7}`);
    }
    assert.deepEqual(noGrad(() => model.forward(x)).shape, [16, 3]);
  });

  it('int4 LSQ weights on a Conv1d train: the step and the weights get gradients, the loss falls', () => {
    const rng = new Rng(2);
    const model = new Sequential(new Conv1d(2, 4, 3, { padding: 1, rng }), new ReLU(), new Flatten(), new Linear(4 * 6, 2, { rng }));
    prepareQat(model, [row('0', 'Conv1d', int4Lsq, int8PerTensorAffine), row('3', 'Linear', int8PerChannelSym, uint8Ema)]);
    const x = randn([16, 2, 6], { rng });
    const t = randn([16, 2], { rng });
    const params = model.parameters();
    const lossOf = (): Tensor => sum(mul(mul(model.forward(x).sub(t), model.forward(x).sub(t)), 1 / 16));
    const first = noGrad(() => lossOf().item());
    for (let i = 0; i < 40; i++) {
      for (const p of params) p.grad = null;
      lossOf().backward();
      for (const p of params) if (p.grad) for (let j = 0; j < p.size; j++) p.data[j]! -= 0.05 * p.grad.data[j]!;
    }
    const last = noGrad(() => lossOf().item());
    assert.ok(last < 0.7 * first, `loss ${first} -> ${last}`);
    const step = model.namedParameters().find(([n]) => n === '0.weightQuantizer.step' || n.startsWith('0.weightQuantizer'))!;
    assert.ok(step[1].grad !== null, `${step[0]} receives a gradient`);
  });
});

/** ∂(Σ r·y)/∂x of a conv1d (float64 loop): the transposed convolution of r with w. */
function conv1dInputGradient(r: ArrayLike<number>, conv: Conv1d, xShape: readonly number[]): Float64Array {
  const [n, c, length] = xShape as [number, number, number];
  const O = conv.outChannels;
  const cg = c / conv.groups;
  const og = O / conv.groups;
  const k = conv.kernelSize;
  const L = conv.outputLength(length);
  const w = conv.weight.data;
  const out = new Float64Array(n * c * length);
  for (let s = 0; s < n; s++) {
    for (let o = 0; o < O; o++) {
      const g = Math.floor(o / og);
      for (let t = 0; t < L; t++) {
        const ro = r[(s * O + o) * L + t]!;
        for (let ci = 0; ci < cg; ci++) {
          for (let j = 0; j < k; j++) {
            const pos = t * conv.stride + j * conv.dilation - conv.padding;
            if (pos < 0 || pos >= length) continue;
            out[(s * c + g * cg + ci) * length + pos]! += ro * w[(o * cg + ci) * k + j]!;
          }
        }
      }
    }
  }
  return out;
}
