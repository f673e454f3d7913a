import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BatchNorm2d, Conv2d, Identity, Linear, ReLU, ReLU6, Sequential, AdaptiveAvgPool2d, Flatten } from '../../nn/index.ts';
import { Rng, Tensor, manualSeed } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import type { Module, TensorModule } from '../../nn/module.ts';
import { Module as ModuleClass } from '../../nn/module.ts';
import { Add } from '../../nn/merge.ts';
import { lenet5 } from '../../nn/models/lenet5.ts';
import { applyEqualizedStructure, equalizeCrossLayer, equalizedStructure, foldBatchNorms } from './index.ts';

/** stem conv → BN → ReLU6 → (a: conv → ReLU → conv) + stem output → ReLU → head conv: a residual block, not a Sequential. */
class ResidualNet extends ModuleClass {
  readonly stem = this.registerModule('stem', new Conv2d(2, 4, 3, { padding: 1, bias: false }));
  readonly bn = this.registerModule('bn', new BatchNorm2d(4));
  readonly act = this.registerModule('act', new ReLU6());
  readonly a = this.registerModule('a', new Conv2d(4, 4, 3, { padding: 1 }));
  readonly aAct = this.registerModule('aAct', new ReLU());
  readonly b = this.registerModule('b', new Conv2d(4, 4, 3, { padding: 1 }));
  readonly add = this.registerModule('add', new Add());
  readonly out = this.registerModule('out', new ReLU());
  readonly head = this.registerModule('head', new Conv2d(4, 3, 1));
  forward(x: Tensor): Tensor {
    const s = this.act.forward(this.bn.forward(this.stem.forward(x)));
    return this.head.forward(this.out.forward(this.add.forward(this.b.forward(this.aAct.forward(this.a.forward(s))), s)));
  }
}

function randomData(rng: Rng, shape: number[], std = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(Float32Array.from({ length: n }, () => std * rng.normal()), shape);
}

/** BN with non-trivial running statistics and affine parameters. */
function randomBn(rng: Rng, c: number): BatchNorm2d {
  const bn = new BatchNorm2d(c);
  for (let i = 0; i < c; i++) {
    bn.runningMean!.data[i] = 0.3 * rng.normal();
    bn.runningVar!.data[i] = 0.2 + rng.uniform() * 2;
    bn.weight!.data[i] = 0.5 + rng.uniform();
    bn.bias!.data[i] = 0.2 * rng.normal();
  }
  return bn;
}

/** conv (bias-free) → BN → ReLU → depthwise conv → BN → ReLU → pointwise conv → pool → linear. */
function mobileBlock(rng: Rng, act: () => TensorModule = () => new ReLU()): Sequential {
  manualSeed(5);
  return new Sequential(
    new Conv2d(3, 8, 3, { padding: 1, bias: false }), randomBn(rng, 8), act(),
    new Conv2d(8, 8, 3, { padding: 1, groups: 8, bias: false }), randomBn(rng, 8), act(),
    new Conv2d(8, 6, 1), new AdaptiveAvgPool2d(1), new Flatten(), new Linear(6, 4),
  );
}

function forward(model: Sequential, x: Tensor): Float32Array {
  model.eval();
  return noGrad(() => model.forward(x).data.slice() as Float32Array);
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let scale = 0, diff = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(a[i]!));
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
  }
  return diff / Math.max(scale, 1e-12);
}

/** Output-channel weight ranges of a conv. */
function ranges(conv: Conv2d): number[] {
  const per = conv.weight.size / conv.outChannels;
  return Array.from({ length: conv.outChannels }, (_, c) => {
    let m = 0;
    for (let k = 0; k < per; k++) m = Math.max(m, Math.abs(conv.weight.data[c * per + k]!));
    return m;
  });
}

/** Input-channel weight ranges of a conv (groups 1 or depthwise). */
function inputRanges(conv: Conv2d): number[] {
  const cg = conv.inChannels / conv.groups, og = conv.outChannels / conv.groups;
  const taps = conv.kernelSize[0] * conv.kernelSize[1];
  return Array.from({ length: conv.inChannels }, (_, c) => {
    const g = Math.floor(c / cg);
    let m = 0;
    for (let o = g * og; o < (g + 1) * og; o++) for (let k = 0; k < taps; k++) m = Math.max(m, Math.abs(conv.weight.data[(o * cg + (c % cg)) * taps + k]!));
    return m;
  });
}

/** Every conv / linear weight per-tensor symmetric int-`bits` (round to nearest), in place. */
function quantizeWeightsPerTensor(model: Module, bits: number): void {
  const qmax = 2 ** (bits - 1) - 1;
  for (const m of model.modules()) {
    if (!(m instanceof Conv2d || m instanceof Linear)) continue;
    const w = m.weight.data as Float32Array;
    let r = 0;
    for (const v of w) r = Math.max(r, Math.abs(v));
    const s = r / qmax;
    for (let i = 0; i < w.length; i++) w[i] = Math.round(w[i]! / s) * s;
  }
}

describe('quant/ptq: BatchNorm folding', () => {
  it('folds BN into the conv before it (adding a bias where there was none); eval outputs unchanged', () => {
    const rng = new Rng(1);
    const model = mobileBlock(rng);
    const x = randomData(rng, [4, 3, 6, 6]);
    const before = forward(model, x);
    const folded = foldBatchNorms(model);
    assert.deepEqual(folded, [{ conv: '0', batchNorm: '1' }, { conv: '3', batchNorm: '4' }]);
    assert.ok(model.at(1) instanceof Identity && model.at(4) instanceof Identity);
    assert.ok((model.at(0) as Conv2d).bias !== null, 'a bias was added');
    assert.equal((model.at(3) as Conv2d).groups, 8);
    const after = forward(model, x);
    assert.ok(maxRelDiff(before, after) < 1e-5, `max rel diff ${maxRelDiff(before, after)}`);
  });

  it('matches the closed form W·γ/√(σ²+ε), (b − μ)·γ/√(σ²+ε) + β on one channel', () => {
    const rng = new Rng(2);
    manualSeed(3);
    const conv = new Conv2d(1, 2, 1);
    const bn = randomBn(rng, 2);
    const model = new Sequential(conv, bn);
    const w0 = conv.weight.data[1]!, b0 = conv.bias!.data[1]!;
    const scale = bn.weight!.data[1]! / Math.sqrt(bn.runningVar!.data[1]! + bn.eps);
    const expectW = w0 * scale, expectB = (b0 - bn.runningMean!.data[1]!) * scale + bn.bias!.data[1]!;
    foldBatchNorms(model);
    const c = model.at(0) as Conv2d;
    assert.ok(Math.abs(c.weight.data[1]! - expectW) < 1e-6);
    assert.ok(Math.abs(c.bias!.data[1]! - expectB) < 1e-6);
  });
});

describe('quant/ptq: cross-layer equalization', () => {
  it('keeps the function, equalizes each pair (r1_c = r2_c) and narrows the channel range spread', () => {
    const rng = new Rng(3);
    const model = mobileBlock(rng);
    // unbalance: channel c of the first conv ×k_c, input c of the depthwise conv ÷k_c (same function)
    const x = randomData(rng, [4, 3, 6, 6]);
    foldBatchNorms(model); // replaces the bias-free convs by copies with a bias: take them after
    const f0 = model.at(0) as Conv2d;
    const dw = model.at(3) as Conv2d;
    const k = [40, 0.05, 1, 8, 0.3, 1, 20, 0.1];
    const per0 = f0.weight.size / 8, perDw = dw.weight.size / 8;
    for (let c = 0; c < 8; c++) {
      for (let i = 0; i < per0; i++) f0.weight.data[c * per0 + i]! *= k[c]!;
      f0.bias!.data[c]! *= k[c]!;
      for (let i = 0; i < perDw; i++) dw.weight.data[c * perDw + i]! /= k[c]!;
    }
    const before = forward(model, x);
    const result = equalizeCrossLayer(model);
    assert.deepEqual(result.pairs.map((p) => [p.first, p.second]), [['0', '3'], ['3', '6']]);
    assert.deepEqual(result.pairs[0]!.between, ['1', '2']);
    assert.ok(result.iterations >= 2 && result.iterations < 50, `iterations ${result.iterations}`);
    const after = forward(model, x);
    assert.ok(maxRelDiff(before, after) < 1e-5, `function changed: ${maxRelDiff(before, after)}`);
    // at convergence both pairs are balanced: out-range of the first = in-range of the second, per channel
    const a = model.at(0) as Conv2d, b = model.at(3) as Conv2d, c = model.at(6) as Conv2d;
    const pairsToCheck: [number[], number[]][] = [[ranges(a), inputRanges(b)], [ranges(b), inputRanges(c)]];
    for (const [r1, r2] of pairsToCheck) r1.forEach((v, i) => assert.ok(Math.abs(v - r2[i]!) <= 1e-3 * Math.max(v, r2[i]!), `channel ${i}: ${v} vs ${r2[i]}`));
    assert.ok(result.rangeRatio['0']!.after < result.rangeRatio['0']!.before / 10, JSON.stringify(result.rangeRatio['0']));
    assert.ok(result.rangeRatio['3']!.after < result.rangeRatio['3']!.before, JSON.stringify(result.rangeRatio['3']));
  });

  it('cuts the error of per-tensor 4-bit weights on an unbalanced depthwise block', () => {
    const errorOf = (equalize: boolean): number => {
      const rng = new Rng(4);
      const model = mobileBlock(rng);
      foldBatchNorms(model);
      const dw = model.at(3) as Conv2d, pw = model.at(6) as Conv2d;
      const per = dw.weight.size / 8;
      // depthwise channels with ranges 100x apart, undone by the pointwise conv after them (the same
      // function: what BN folding often leaves behind)
      for (let c = 0; c < 8; c++) {
        const k = c % 2 === 0 ? 10 : 0.1;
        for (let i = 0; i < per; i++) dw.weight.data[c * per + i]! *= k;
        dw.bias!.data[c]! *= k;
        for (let o = 0; o < pw.outChannels; o++) pw.weight.data[o * 8 + c]! /= k;
      }
      const x = randomData(rng, [8, 3, 6, 6]);
      if (equalize) equalizeCrossLayer(model);
      const ref = forward(model, x);
      quantizeWeightsPerTensor(model, 4);
      const q = forward(model, x);
      let se = 0, ss = 0;
      for (let i = 0; i < ref.length; i++) {
        se += (q[i]! - ref[i]!) ** 2;
        ss += ref[i]! ** 2;
      }
      return se / ss;
    };
    const plain = errorOf(false), equalized = errorOf(true);
    assert.ok(equalized < plain / 2, `relative squared error ${plain} -> ${equalized}`);
  });

  it('replaces ReLU6 between a pair by ReLU (reported); keeps such pairs out when told not to', () => {
    const rng = new Rng(5);
    const model = mobileBlock(rng, () => new ReLU6());
    const result = equalizeCrossLayer(model);
    assert.deepEqual(result.replacedRelu6, ['2', '5']);
    assert.ok(model.at(2) instanceof ReLU && model.at(5) instanceof ReLU);
    const kept = mobileBlock(new Rng(5), () => new ReLU6());
    const none = equalizeCrossLayer(kept, { replaceRelu6: false });
    assert.equal(none.pairs.length, 0);
    assert.ok(kept.at(2) instanceof ReLU6);
  });

  it('refuses explicit pairs that are not two weight layers with matching channels', () => {
    const model = new Sequential(new Linear(4, 5), new ReLU(), new Linear(6, 3));
    assert.throws(() => equalizeCrossLayer(model, { pairs: [['0', '2']] }), /takes 6 input channels, '0' gives 5/);
    assert.throws(() => equalizeCrossLayer(model, { pairs: [['0', '1']] }), /must be two Conv2d/);
  });

  it('with a sample, finds pairs in the forward graph of custom modules, never across a residual branch', () => {
    const rng = new Rng(6);
    manualSeed(7);
    const net = new ResidualNet();
    for (let i = 0; i < 4; i++) {
      net.bn.runningMean!.data[i] = 0.1 * rng.normal();
      net.bn.runningVar!.data[i] = 0.5 + rng.uniform();
    }
    net.eval();
    const x = randomData(rng, [2, 2, 5, 5], 0.3);
    const before = noGrad(() => net.forward(x).data.slice() as Float32Array);
    const result = equalizeCrossLayer(net, { sample: x });
    assert.deepEqual(result.folded, [{ conv: 'stem', batchNorm: 'bn' }]);
    // stem's output also feeds the add: only a → b and the block's own chain are pairs; the ReLU6 after stem stays
    assert.deepEqual(result.pairs.map((p) => `${p.first}>${p.second}`), ['a>b']);
    assert.deepEqual(result.replacedRelu6, []);
    assert.ok(net.act instanceof ReLU6);
    const after = noGrad(() => net.forward(x).data.slice() as Float32Array);
    assert.ok(maxRelDiff(before, after) < 1e-5, `function changed: ${maxRelDiff(before, after)}`);

    const lenet = lenet5();
    const r = equalizeCrossLayer(lenet, { sample: randomData(rng, [1, 1, 28, 28]) });
    assert.deepEqual(r.pairs.map((p) => `${p.first}>${p.second}`), ['conv1>conv2', 'fc1>fc2', 'fc2>fc3']);
    assert.deepEqual(r.pairs[0]!.between, ['relu1', 'pool1']);
  });

  it('applyEqualizedStructure gives a fresh model the equalized structure (the state loads); bad records are refused', () => {
    const rng = new Rng(8);
    const model = mobileBlock(rng, () => new ReLU6());
    const result = equalizeCrossLayer(model);
    const record = JSON.parse(JSON.stringify(equalizedStructure(result))) as unknown;
    const fresh = mobileBlock(new Rng(9), () => new ReLU6());
    applyEqualizedStructure(fresh, record);
    fresh.loadStateDict(model.stateDict());
    const x = randomData(rng, [2, 3, 6, 6]);
    assert.ok(maxRelDiff(forward(model, x), forward(fresh, x)) === 0);
    assert.throws(() => applyEqualizedStructure(mobileBlock(new Rng(9)), { folded: [['0', '1']], replacedRelu6: ['2'] }), /'2', which is a ReLU, not a ReLU6/);
    assert.throws(() => applyEqualizedStructure(mobileBlock(new Rng(9)), { folded: [['0', '99']], replacedRelu6: [] }), /names '99'/);
    assert.throws(() => applyEqualizedStructure(mobileBlock(new Rng(9)), { folded: 'x' }), /must be \{ folded/);
  });
});
