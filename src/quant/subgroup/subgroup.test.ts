import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { MultiheadAttention } from '../../nn/attention.ts';
import { add, linear, mseLoss, mul, randn, Rng, Tensor } from '../../tensor/index.ts';
import { unpackBits } from '../core/packing.ts';
import { causalMask, SubgroupAttention } from './attention.ts';
import { subgroupBytes, validateChoices } from './choices.ts';
import { SubgroupLinear } from './linear.ts';
import { applyPlan, derivePlan, expectedModelBytes, packSubgroupModel, planBytes, subgroupLayers, uniformPlan } from './plan.ts';
import { searchSubgroups } from './search.ts';
import { TinyTransformerLm } from './transformer.ts';

/** Element-by-element equality with === (so 0 and −0 count as equal, NaN never does). */
function assertSame(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) if (actual[i] !== expected[i]) assert.fail(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]}`);
}

/** Logits that make the softmax exactly one-hot on choice index `pick[g]` for every subgroup. */
function setOneHot(layer: SubgroupLinear, pick: readonly number[]): void {
  const k = layer.choices.length;
  for (let g = 0; g < layer.groups; g++) for (let j = 0; j < k; j++) layer.archLogits.data[g * k + j] = j === pick[g] ? 0 : -Infinity;
}

/** The plain fake-quantized weight: subgroup g at bits[g], q = clamp(round(w/s), ±(2^(b−1)−1)), ŵ = q·s, pruned = 0. */
function plainQuantizedWeight(layer: SubgroupLinear, bits: readonly number[]): Float32Array | Float64Array {
  const out = layer.dtype === 'float64' ? new Float64Array(layer.weight.size) : new Float32Array(layer.weight.size);
  for (let g = 0; g < layer.groups; g++) {
    if (bits[g] === 0) continue;
    const qmax = 2 ** (bits[g]! - 1) - 1;
    const s = layer.steps.get(bits[g]!)!.data[g]!;
    for (const i of layer.subgroupIndices(g)) out[i] = Math.min(qmax, Math.max(-qmax, roundHalfEven(layer.weight.data[i]! / s))) * s;
  }
  return out;
}

describe('subgroup choices', () => {
  it('accepts subsets of {0, 2, 4, 8} (sorted) and refuses the rest', () => {
    assert.deepEqual(validateChoices([8, 0, 4]), [0, 4, 8]);
    for (const bad of [[], [3], [2, 2], [1, 2], [16], [Number.NaN]]) assert.throws(() => validateChoices(bad), RangeError, JSON.stringify(bad));
  });

  it('counts ⌈n·b/8⌉ bytes of codes plus a float32 scale, nothing when pruned', () => {
    assert.equal(subgroupBytes(1024, 0), 0);
    assert.equal(subgroupBytes(1024, 2), 256 + 4);
    assert.equal(subgroupBytes(1024, 4), 512 + 4);
    assert.equal(subgroupBytes(1024, 8), 1024 + 4);
    assert.equal(subgroupBytes(5, 2), 2 + 4);
  });
});

describe('SubgroupLinear', () => {
  for (const axis of [0, 1] as const) {
    it(`axis ${axis}: one-hot architecture weights give exactly the plain fake-quant layer of each choice`, () => {
      const rng = new Rng(3);
      const layer = new SubgroupLinear(12, 8, { axis, groupSize: axis === 0 ? 2 : 3, rng });
      const x = randn([5, 12], { rng });
      const picks = [0, 1, 2, 3]; // choice indices: 0, 2, 4, 8 bits
      const bits = picks.map((j) => layer.choices[j]!);
      setOneHot(layer, picks);
      layer.temperature = 0.7;
      const searched = noGrad(() => layer.quantizedWeight());
      const expected = plainQuantizedWeight(layer, bits);
      assertSame(searched.data, expected, 'search-mode weight');
      const y = noGrad(() => layer.forward(x));
      assertSame(y.data, noGrad(() => linear(x, new Tensor(expected, [8, 12]), layer.bias)).data, 'search-mode output');
      layer.setAssignment(bits);
      assertSame(noGrad(() => layer.forward(x)).data, y.data, 'fixed-mode output');
    });
  }

  it('a pruned subgroup contributes exactly zero (row blocks: output = bias; column blocks: its inputs are ignored)', () => {
    const rng = new Rng(5);
    const rows = new SubgroupLinear(6, 8, { axis: 0, groupSize: 4, rng });
    setOneHot(rows, [3, 0]);
    const x = randn([3, 6], { rng });
    const y = noGrad(() => rows.forward(x));
    for (let n = 0; n < 3; n++) for (let o = 4; o < 8; o++) assert.equal(y.data[n * 8 + o], rows.bias!.data[o], `row ${o}`);
    const cols = new SubgroupLinear(6, 4, { axis: 1, groupSize: 3, rng });
    setOneHot(cols, [0, 2]);
    const w = noGrad(() => cols.quantizedWeight());
    for (let o = 0; o < 4; o++) for (let c = 0; c < 3; c++) assert.ok(w.data[o * 6 + c] === 0, `weight ${o},${c} is ${w.data[o * 6 + c]}`);
    const x2 = new Tensor(Float32Array.from(x.data), x.shape);
    for (let n = 0; n < 3; n++) for (let c = 0; c < 3; c++) x2.data[n * 6 + c] = 1000 * (c + 1);
    assertSame(noGrad(() => cols.forward(x2)).data, noGrad(() => cols.forward(x)).data, 'column-pruned output');
    cols.setAssignment([0, 0]);
    assertSame(noGrad(() => cols.forward(x)).data, Array.from({ length: 12 }, (_, i) => cols.bias!.data[i % 4]!), 'all pruned = bias');
  });

  it('expected bytes equal the closed form Σ_g Σ_k softmax(θ_g/τ)_k·bytes(n, b_k)', () => {
    const rng = new Rng(7);
    const layer = new SubgroupLinear(10, 6, { axis: 0, groupSize: 2, rng });
    for (let i = 0; i < layer.archLogits.size; i++) layer.archLogits.data[i] = rng.uniform() * 4 - 2;
    layer.temperature = 0.6;
    const n = 2 * 10;
    const bytes = [0, (n * 2) / 8 + 4, (n * 4) / 8 + 4, n + 4];
    let expected = 0;
    for (let g = 0; g < 3; g++) {
      const e = [0, 1, 2, 3].map((k) => Math.exp(layer.archLogits.data[g * 4 + k]! / 0.6));
      const z = e.reduce((a, b) => a + b, 0);
      for (let k = 0; k < 4; k++) expected += (e[k]! / z) * bytes[k]!;
    }
    assert.ok(Math.abs(layer.expectedBytes().item() - expected) < 1e-4 * expected, `${layer.expectedBytes().item()} vs ${expected}`);
  });

  it('architecture-logit gradients (task loss + size term) match finite differences in float64', () => {
    const rng = new Rng(11);
    for (const axis of [0, 1] as const) {
      const layer = new SubgroupLinear(6, 4, { axis, groupSize: 2, dtype: 'float64', rng });
      for (let i = 0; i < layer.archLogits.size; i++) layer.archLogits.data[i] = rng.uniform() * 2 - 1;
      layer.temperature = 0.8;
      const x = new Tensor(Float64Array.from(randn([3, 6], { rng }).data), [3, 6]);
      const result = gradcheck(() => add(layer.forward(x), mul(layer.expectedBytes(), 1e-3)), [layer.archLogits]);
      assert.ok(result.maxRelativeError < 1e-6, `axis ${axis}: relative error ${result.maxRelativeError}`);
    }
  });

  it('refuses bad options', () => {
    assert.throws(() => new SubgroupLinear(4, 4, { choices: [3] }), RangeError);
    assert.throws(() => new SubgroupLinear(4, 4, { choices: [] }), RangeError);
    assert.throws(() => new SubgroupLinear(4, 6, { groupSize: 4 }), RangeError);
    assert.throws(() => new SubgroupLinear(4, 4, { axis: 2 as 0 }), RangeError);
    assert.throws(() => new SubgroupLinear(0, 4), RangeError);
    const layer = new SubgroupLinear(4, 4, { groupSize: 2, choices: [0, 4] });
    assert.throws(() => layer.setAssignment([4, 8]), RangeError);
    assert.throws(() => layer.setAssignment([4]), RangeError);
    layer.temperature = 0;
    assert.throws(() => layer.forward(randn([1, 4])), RangeError);
    assert.throws(() => layer.forward(randn([1, 5])), /last dim should be 4/);
  });
});

describe('SubgroupAttention', () => {
  it('in float mode computes MultiheadAttention (causal) from the copied weights', () => {
    const rng = new Rng(13);
    const mha = new MultiheadAttention(8, 2, { batchFirst: true, rng });
    for (let i = 0; i < mha.inProjBias!.size; i++) mha.inProjBias!.data[i] = rng.uniform() - 0.5;
    const attn = SubgroupAttention.fromMultiheadAttention(mha);
    attn.setMode('float');
    const x = randn([2, 5, 8], { rng });
    const [reference] = noGrad(() => mha.forward(x, x, x, { attnMask: causalMask(5), needWeights: false }));
    const y = noGrad(() => attn.forward(x, { causal: true }));
    let worst = 0;
    for (let i = 0; i < y.size; i++) worst = Math.max(worst, Math.abs(y.data[i]! - reference.data[i]!));
    assert.ok(worst < 1e-6, `max difference ${worst}`);
  });

  it('architecture-logit gradients of the four projections match finite differences in float64', () => {
    const rng = new Rng(17);
    const attn = new SubgroupAttention(4, 2, { dtype: 'float64', rng });
    for (const p of attn.projections()) for (let i = 0; i < p.archLogits.size; i++) p.archLogits.data[i] = rng.uniform() * 2 - 1;
    const x = new Tensor(Float64Array.from(randn([1, 3, 4], { rng }).data), [1, 3, 4]);
    const result = gradcheck(() => attn.forward(x, { causal: true }), attn.projections().map((p) => p.archLogits));
    assert.ok(result.maxRelativeError < 1e-6, `relative error ${result.maxRelativeError}`);
  });
});

describe('plans on a tiny transformer', () => {
  const build = (seed: number): TinyTransformerLm =>
    new TinyTransformerLm({ vocabSize: 20, context: 4, embedDim: 8, layers: 1, heads: 2, ffnDim: 16, rng: new Rng(seed) }).makeSearchable({ ffnGroupSize: 8 });

  it('has one subgroup per head in q, k, v, out and ffnGroupSize blocks in the feed-forward layers', () => {
    const layers = subgroupLayers(build(1));
    assert.deepEqual(layers.map(([name, l]) => `${name}:${l.groups}x${l.groupElements}`), ['block0.attn.q:2x32', 'block0.attn.k:2x32', 'block0.attn.v:2x32', 'block0.attn.out:2x32', 'block0.fc1:2x64', 'block0.fc2:2x64']);
    // At uniform logits the expected size is the mean of the choices' bytes per subgroup.
    const perGroup = (n: number): number => [0, 2, 4, 8].reduce((s, b) => s + subgroupBytes(n, b), 0) / 4;
    const expected = 8 * perGroup(32) + 4 * perGroup(64);
    assert.ok(Math.abs(expectedModelBytes(build(1)).item() - expected) < 1e-3, `${expectedModelBytes(build(1)).item()} vs ${expected}`);
  });

  it("the derived plan's size equals the counted bytes of the packed model, fits the budget, and the codes decode to the fixed weights", () => {
    const model = build(2);
    const rng = new Rng(9);
    for (const [, layer] of subgroupLayers(model)) for (let i = 0; i < layer.archLogits.size; i++) layer.archLogits.data[i] = rng.uniform() * 3;
    const budget = planBytes(uniformPlan(model, 4));
    assert.equal(budget, 8 * (16 + 4) + 4 * (32 + 4));
    const plan = derivePlan(model, { budgetBytes: budget });
    assert.ok(planBytes(plan) <= budget);
    applyPlan(model, plan);
    const packed = packSubgroupModel(model);
    assert.equal(packed.bytes, planBytes(plan));
    for (const [name, layer] of subgroupLayers(model)) {
      const w = noGrad(() => layer.quantizedWeight()).data;
      const stored = packed.layers.find((l) => l.name === name)!;
      stored.subgroups.forEach((sg, g) => {
        const idx = layer.subgroupIndices(g);
        const codes = sg.bits === 0 ? new Int32Array(idx.length) : unpackBits(sg.packed, idx.length, sg.bits as 2 | 4 | 8);
        const scale = sg.bits === 0 ? 0 : sg.scale[0]!;
        const decoded = Array.from(idx, (_, k) => Math.fround(codes[k]! * scale));
        assertSame(Array.from(idx, (i) => w[i]!), decoded, `${name} subgroup ${g}`);
      });
    }
  });

  it('fits an over-budget argmax by downgrades and fills the room left by upgrades', () => {
    const model = build(3);
    for (const [, layer] of subgroupLayers(model)) for (let g = 0; g < layer.groups; g++) layer.archLogits.data.set([0, 0, 0, 1], g * 4); // argmax: all 8 bits
    const w2 = planBytes(uniformPlan(model, 2));
    const fitted = derivePlan(model, { budgetBytes: w2 + 10 });
    assert.ok(planBytes(fitted) <= w2 + 10);
    assert.ok(planBytes(fitted) > w2 + 10 - 2 * 36, 'filled to within one upgrade');
    assert.equal(planBytes(derivePlan(model)), planBytes(uniformPlan(model, 8)));
    assert.throws(() => derivePlan(model, { budgetBytes: -1 }), RangeError);
    const noPrune = new TinyTransformerLm({ vocabSize: 20, context: 4, embedDim: 8, layers: 1, heads: 2, ffnDim: 16 }).makeSearchable({ choices: [2, 4], ffnGroupSize: 8 });
    assert.throws(() => derivePlan(noPrune, { budgetBytes: w2 - 1 }), /below the smallest plan/);
    assert.throws(() => applyPlan(model, { layers: [] }), /no entry for layer/);
    assert.throws(() => uniformPlan(noPrune, 8), RangeError);
  });

  it('a short search drives the expected size under the budget and returns a plan that fits', () => {
    const rng = new Rng(21);
    const layer = new SubgroupLinear(8, 8, { groupSize: 2, rng });
    const model = new TinyTransformerLm({ vocabSize: 4, context: 2, embedDim: 8, layers: 1, heads: 2, ffnDim: 16, rng });
    assert.throws(() => subgroupLayers(model), /no SubgroupLinear/);
    const x = randn([16, 8], { rng });
    const target = noGrad(() => linear(x, randn([8, 8], { rng }), null));
    const budget = 4 * subgroupBytes(16, 2);
    const result = searchSubgroups(layer, { budgetBytes: budget, steps: 30, trainLoss: () => mseLoss(layer.forward(x), target), sizeWeight: 5, archLr: 0.2, progress: false });
    const first = result.history[0]!.expectedBytes;
    const last = result.history.at(-1)!.expectedBytes;
    assert.ok(first > budget && last < first, `expected bytes ${first} -> ${last} (budget ${budget})`);
    assert.ok(result.planBytes <= budget);
    assert.equal(result.planBytes, planBytes(result.plan));
    assert.ok(result.history.every((h) => Number.isFinite(h.trainLoss) && Number.isFinite(h.archLoss)));
    assert.throws(() => searchSubgroups(layer, { budgetBytes: budget, steps: 0, trainLoss: () => mseLoss(layer.forward(x), target), progress: false }), RangeError);
    assert.throws(() => searchSubgroups(layer, { budgetBytes: 0, steps: 1, trainLoss: () => mseLoss(layer.forward(x), target), progress: false }), RangeError);
  });
});
