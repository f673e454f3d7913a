import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { withBackend } from '../../backend/index.ts';
import { crossEntropy, linear, Rng, Tensor, zeros } from '../../tensor/index.ts';
import { Module } from '../module.ts';
import { LayerNorm } from '../layernorm.ts';
import { MultiheadAttention } from '../attention.ts';
import { Adam } from '../../optim/adam.ts';
import { CausalSelfAttention, causalMask, TransformerBlock, TransformerLM } from './transformer-lm.ts';

function random64(shape: number[], rng: Rng, scale = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = scale * (2 * rng.uniform() - 1);
  return new Tensor(data, shape);
}

/** A float64 Linear for gradient checks (nn.Linear is float32 only). */
class Linear64 extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(inFeatures: number, outFeatures: number, rng: Rng) {
    super();
    this.weight = this.registerParameter('weight', random64([outFeatures, inFeatures], rng, 0.5));
    this.bias = this.registerParameter('bias', random64([outFeatures], rng, 0.2));
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

const ids = new Tensor(Int32Array.of(1, 4, 2, 0, 3, 3, 9, 5, 1, 2, 7, 8), [3, 4]);

describe('TransformerLM', () => {
  it('shapes: forward [N, V] is forwardAll at the last position; hidden [N, C, E]', () => {
    const model = new TransformerLM({ vocabSize: 10, embedDim: 8, numHeads: 2, numLayers: 2, maxContext: 6, rng: new Rng(1) });
    const last = noGrad(() => model.forward(ids));
    const all = noGrad(() => model.forwardAll(ids));
    assert.deepEqual(last.shape, [3, 10]);
    assert.deepEqual(all.shape, [3, 4, 10]);
    for (let n = 0; n < 3; n++) for (let v = 0; v < 10; v++) assert.equal(last.data[n * 10 + v], all.data[(n * 4 + 3) * 10 + v]);
    assert.deepEqual(noGrad(() => model.hidden(ids)).shape, [3, 4, 8]);
    // E·V + C·E + 2 blocks (2·E LN + E·3E + 3E + E·E + E + 2·E LN + E·4E + 4E + 4E·E + E) + 2·E + E·V + V
    const block = 2 * 8 + 8 * 24 + 24 + 64 + 8 + 2 * 8 + 8 * 32 + 32 + 32 * 8 + 8;
    assert.equal(model.numParameters(), 80 + 48 + 2 * block + 16 + 80 + 10);
  });

  it('is causal, exactly: changing later ids leaves the logits of earlier positions bit-identical', () => {
    const model = new TransformerLM({ vocabSize: 10, embedDim: 8, numHeads: 2, numLayers: 2, maxContext: 6, rng: new Rng(2) });
    const before = noGrad(() => model.forwardAll(ids));
    for (let t = 1; t < 4; t++) {
      const changed = Int32Array.from(ids.data);
      for (let n = 0; n < 3; n++) for (let s = t; s < 4; s++) changed[n * 4 + s] = (changed[n * 4 + s]! + 3 + s) % 10;
      const after = noGrad(() => model.forwardAll(new Tensor(changed, [3, 4])));
      let differsLater = false;
      for (let n = 0; n < 3; n++) {
        for (let s = 0; s < 4; s++) {
          for (let v = 0; v < 10; v++) {
            const i = (n * 4 + s) * 10 + v;
            if (s < t) assert.equal(after.data[i], before.data[i], `row ${n} position ${s} word ${v} changed when positions ≥ ${t} did`);
            else differsLater ||= after.data[i] !== before.data[i];
          }
        }
      }
      assert.ok(differsLater, 'the changed positions must change their own logits');
    }
  });

  it('tied weights: no head, logits = h·Wᵀ of the token table', () => {
    const model = new TransformerLM({ vocabSize: 10, embedDim: 8, numHeads: 2, numLayers: 1, maxContext: 4, tieWeights: true, rng: new Rng(3) });
    assert.equal(model.head, null);
    const h = noGrad(() => model.hidden(ids));
    const logits = noGrad(() => model.forward(ids));
    const w = model.tokenEmbedding.weight.data;
    for (let n = 0; n < 3; n++) {
      for (let v = 0; v < 10; v++) {
        let ref = 0;
        for (let k = 0; k < 8; k++) ref += h.data[(n * 4 + 3) * 8 + k]! * w[v * 8 + k]!;
        assert.ok(Math.abs(logits.data[n * 10 + v]! - ref) < 1e-5);
      }
    }
  });

  it('refuses bad sizes and ids, naming the argument', () => {
    assert.throws(() => new TransformerLM({ vocabSize: 10, embedDim: 6, numHeads: 4 }), /embedDim 6 must be divisible by numHeads 4/);
    assert.throws(() => new TransformerLM({ vocabSize: 1 }), /vocabSize must be at least 2/);
    assert.throws(() => new TransformerLM({ vocabSize: 10, numLayers: 0 }), /numLayers must be a positive integer, got 0/);
    const model = new TransformerLM({ vocabSize: 10, embedDim: 8, numHeads: 2, maxContext: 3 });
    assert.throws(() => model.forward(ids), /context length 4 is outside \[1, 3\]/);
    assert.throws(() => model.forward(zeros([2, 3])), /expected int32 ids/);
  });
});

describe('CausalSelfAttention', () => {
  it('equals nn.MultiheadAttention with the same weights and a causal attnMask (float64)', () => {
    withBackend('reference', () => {
      const rng = new Rng(5);
      const attn = new CausalSelfAttention(6, 3, { rng });
      attn.setSubmodule('qkv', new Linear64(6, 18, rng));
      attn.setSubmodule('proj', new Linear64(6, 6, rng));
      const mha = new MultiheadAttention(6, 3, { batchFirst: true, dtype: 'float64' });
      const qkv = attn.qkv as Linear64;
      const proj = attn.proj as Linear64;
      mha.loadStateDict({ in_proj_weight: qkv.weight, in_proj_bias: qkv.bias, 'out_proj.weight': proj.weight, 'out_proj.bias': proj.bias });
      const x = random64([2, 5, 6], rng);
      const mine = noGrad(() => attn.forward(x));
      const [theirs] = noGrad(() => mha.forward(x, x, x, { attnMask: causalMask(5, 'float64'), needWeights: false }));
      assert.deepEqual(mine.shape, [2, 5, 6]);
      for (let i = 0; i < mine.size; i++) assert.ok(Math.abs(mine.data[i]! - theirs.data[i]!) < 1e-12, `element ${i}: ${mine.data[i]} vs ${theirs.data[i]}`);
    });
  });
});

describe('TransformerBlock gradients against float64 central differences', () => {
  for (const activation of ['gelu', 'gelu-tanh', 'relu'] as const) {
    it(`${activation}: input and every Linear weight and bias of a 2-head block`, () => {
      withBackend('reference', () => {
        const rng = new Rng(activation.length);
        const block = new TransformerBlock(4, 2, { mlpDim: 6, activation, rng });
        // float64 stand-ins: Linears with random weights, LayerNorms without affine parameters (any dtype).
        for (const [name, inF, outF] of [['attn.qkv', 4, 12], ['attn.proj', 4, 4], ['fc1', 4, 6], ['fc2', 6, 4]] as const) block.setSubmodule(name, new Linear64(inF, outF, rng));
        block.setSubmodule('ln1', new LayerNorm(4, { elementwiseAffine: false }));
        block.setSubmodule('ln2', new LayerNorm(4, { elementwiseAffine: false }));
        const x = random64([2, 3, 4], rng).requiresGrad_();
        const params = block.parameters();
        assert.equal(params.length, 8);
        const result = gradcheck((input) => block.forward(input!), [x, ...params]);
        assert.equal(result.relativeErrors.length, 9);
        assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
      });
    });
  }
});

describe('TransformerLM learning', () => {
  it('memorises a repeated sequence whose next word needs more than the last word: loss < 0.05', () => {
    // Period 9: after "0 1" comes 2, 3 or 4, decided by the word before the 0.
    const sequence = [0, 1, 2, 0, 1, 3, 0, 1, 4];
    const context = 4;
    const windows: number[] = [];
    const targets: number[] = [];
    for (let start = 0; start < sequence.length; start++) {
      for (let t = 0; t < context; t++) windows.push(sequence[(start + t) % 9]!);
      targets.push(sequence[(start + context) % 9]!);
    }
    const x = new Tensor(Int32Array.from(windows), [9, context]);
    const y = new Tensor(Int32Array.from(targets), [9]);
    const model = new TransformerLM({ vocabSize: 5, embedDim: 16, numHeads: 2, numLayers: 1, maxContext: context, rng: new Rng(0) });
    const optimizer = new Adam(model.parameters(), { lr: 1e-2 });
    let first = NaN;
    let loss = NaN;
    for (let step = 0; step < 150; step++) {
      const l = crossEntropy(model.forward(x), y);
      l.backward();
      optimizer.step();
      optimizer.zeroGrad();
      loss = l.item();
      if (step === 0) first = loss;
    }
    assert.ok(first > 1, `initial loss ${first}`);
    // A model of the last word alone cannot go below (3/9)·ln 3 ≈ 0.37 here.
    assert.ok(loss < 0.05, `final loss ${loss}`);
    const predicted = noGrad(() => model.forward(x));
    for (let n = 0; n < 9; n++) {
      const row = Array.from(predicted.data.subarray(n * 5, n * 5 + 5));
      assert.equal(row.indexOf(Math.max(...row)), targets[n], `window ${n}`);
    }
  });
});
