import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { concat, reshape, Rng, Tensor, zeros } from '../tensor/index.ts';
import { noGrad } from '../autograd/index.ts';
import { gradcheck } from '../autograd/gradcheck.ts';
import { withBackend } from '../backend/index.ts';
import { profileOps } from '../backend/registry.ts';
import { withFusedTransformerLayers } from './fused-layers.ts';
import { quantizableLayers } from '../quant/config/plan.ts';
import { MultiheadAttention } from './attention.ts';
import type { FloatDType } from './rnn.ts';
import { maxError, stateOf, toTensor, torchCases, type TorchCase } from '../../test/fixtures/torch-rnn-attn.ts';

function random64(shape: number[], rng: Rng, low = -1, high = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = low + (high - low) * rng.uniform();
  return new Tensor(data, shape);
}

function runCase(c: TorchCase, dtype: FloatDType): { output: Tensor; weights: Tensor | null } {
  const { embedDim, numHeads, bias, batchFirst, averageAttnWeights } = c.config as {
    embedDim: number; numHeads: number; bias: boolean; batchFirst: boolean; averageAttnWeights: boolean;
  };
  const mha = new MultiheadAttention(embedDim, numHeads, { bias, batchFirst, dtype });
  mha.loadStateDict(stateOf(c, dtype));
  const input = (name: string): Tensor | undefined => (c.inputs[name] ? toTensor(c.inputs[name]!, dtype) : undefined);
  const [output, weights] = noGrad(() => mha.forward(input('query')!, input('key')!, input('value')!, {
    keyPaddingMask: input('keyPaddingMask'),
    attnMask: input('attnMask'),
    averageAttnWeights,
  }));
  return { output, weights };
}

const mhaCases = torchCases().filter((c) => c.module === 'MultiheadAttention');
/** Cases with weights (composed path) and self-attention cases without them (the fused `attention` path). */
const attentionCases = mhaCases.filter((c) => c.config.needWeights !== false);
const selfAttentionCases = mhaCases.filter((c) => c.config.needWeights === false);

/** Runs `fn` with the fused Transformer layer primitives on or off. */
const withFused = withFusedTransformerLayers;

/**
 * A self-attention fixture case (query = key = value, needWeights false): the output and the
 * gradients of Σ output⊙g with respect to the input and every parameter, keyed as the fixture, with
 * the ops that ran.
 */
function runSelfCase(c: TorchCase, dtype: FloatDType): { results: Map<string, Tensor>; ops: string[] } {
  const { embedDim, numHeads, bias, batchFirst } = c.config as { embedDim: number; numHeads: number; bias: boolean; batchFirst: boolean };
  const mha = new MultiheadAttention(embedDim, numHeads, { bias, batchFirst, dtype });
  mha.loadStateDict(stateOf(c, dtype));
  const x = toTensor(c.inputs.query!, dtype).requiresGrad_();
  const attnMask = c.inputs.attnMask ? toTensor(c.inputs.attnMask, dtype) : undefined;
  const g = toTensor(c.inputs.outputGradient!, dtype);
  const results = new Map<string, Tensor>();
  const profile = profileOps(() => {
    const [output, weights] = mha.forward(x, x, x, { attnMask, needWeights: false });
    assert.equal(weights, null);
    results.set('output', output);
    output.backward(g);
  });
  results.set('grad.query', x.grad!);
  for (const [name, p] of mha.namedParameters()) results.set(`grad.${name}`, p.grad!);
  return { results, ops: [...profile.keys()] };
}

describe('MultiheadAttention against PyTorch 1.13 (test/fixtures/torch-rnn-attn.json)', () => {
  it('the fixture covers both masks (bool and float) with weights, averaged and per head', () => {
    assert.ok(attentionCases.some((c) => c.inputs.keyPaddingMask?.dtype === 'bool' && c.inputs.attnMask?.dtype === 'float'));
    assert.ok(attentionCases.some((c) => c.inputs.keyPaddingMask?.dtype === 'bool' && c.inputs.attnMask?.dtype === 'bool' && !c.config.averageAttnWeights));
    assert.ok(attentionCases.some((c) => c.inputs.keyPaddingMask?.dtype === 'float'));
  });
  it('the fixture has self-attention without weights: no mask, bool and float causal masks, batchFirst, unbatched', () => {
    assert.ok(selfAttentionCases.some((c) => !c.inputs.attnMask));
    assert.ok(selfAttentionCases.some((c) => c.inputs.attnMask?.dtype === 'bool' && c.inputs.query!.shape.length === 2));
    assert.ok(selfAttentionCases.some((c) => c.inputs.attnMask?.dtype === 'float' && c.config.batchFirst));
  });
  for (const c of mhaCases) {
    it(`${c.name}: state-dict keys equal PyTorch's, in order`, () => {
      const mha = new MultiheadAttention(c.config.embedDim as number, c.config.numHeads as number, { bias: c.config.bias as boolean });
      assert.deepEqual([...mha.stateDict().keys()], c.state.map(([name]) => name));
      for (const [name, t] of mha.stateDict()) assert.deepEqual(t.shape, c.state.find(([n]) => n === name)![1].shape, name);
    });
    if (c.config.needWeights === false) continue;
    it(`${c.name}: output and weights within 1e-5 (float32) and 1e-12 (float64)`, () => {
      for (const [dtype, tolerance] of [['float32', 1e-5], ['float64', 1e-12]] as const) {
        const { output, weights } = runCase(c, dtype);
        for (const [name, got] of [['output', output], ['weights', weights!]] as const) {
          const expected = c.outputs[name]!;
          assert.deepEqual(got.shape, expected.shape, `${name} shape`);
          const error = maxError(got.data, expected.data);
          assert.ok(error < tolerance, `${dtype} ${name}: error ${error.toExponential(2)}`);
        }
      }
    });
  }
});

describe('MultiheadAttention self-attention without weights: the fused attention primitive', () => {
  for (const c of selfAttentionCases) {
    it(`${c.name}: output and every gradient as PyTorch 1.13 (float32 1e-5, float64 1e-12), through one attention primitive`, () => {
      for (const [dtype, tolerance] of [['float32', 1e-5], ['float64', 1e-12]] as const) {
        const { results, ops } = runSelfCase(c, dtype);
        assert.ok(ops.some((op) => op.endsWith('/attention')) && ops.some((op) => op.endsWith('/attentionBackward')), `fused ops ran: ${ops.join(' ')}`);
        assert.ok(!ops.some((op) => op.endsWith('/softmax')), `no composed softmax: ${ops.join(' ')}`);
        for (const [name, expected] of Object.entries(c.outputs)) {
          const got = results.get(name)!;
          assert.deepEqual(got.shape, expected.shape, `${name} shape`);
          const error = maxError(got.data, expected.data);
          assert.ok(error < tolerance, `${dtype} ${name}: error ${error.toExponential(2)}`);
        }
      }
    });
  }

  it('equals the composed path (fused layers off) in output and gradients, float64 ≤ 1e-13, float32 ≤ 2e-6', () => {
    for (const c of selfAttentionCases) {
      for (const [dtype, tolerance] of [['float64', 1e-13], ['float32', 2e-6]] as const) {
        const fused = runSelfCase(c, dtype);
        const composed = withFused(false, () => runSelfCase(c, dtype));
        assert.ok(!composed.ops.some((op) => op.endsWith('/attention')), `composed: ${composed.ops.join(' ')}`);
        for (const [name, t] of fused.results) {
          const error = maxError(t.data, composed.results.get(name)!.data);
          assert.ok(error <= tolerance, `${c.name} ${dtype} ${name}: ${error.toExponential(2)}`);
        }
      }
    }
  });

  it('everything else runs the composed ops: weights asked for, cross-attention, padding mask, a non-causal mask, dropout in training', () => {
    const rng = new Rng(30);
    const x = random64([4, 2, 4], rng);
    const other = random64([4, 2, 4], rng);
    const causal = new Tensor(Int32Array.from({ length: 16 }, (_, i) => (i % 4 > Math.floor(i / 4) ? 1 : 0)), [4, 4]);
    const notCausal = new Tensor(Int32Array.from({ length: 16 }, (_, i) => (i % 4 > Math.floor(i / 4) + 1 ? 1 : 0)), [4, 4]);
    const nearlyCausal = new Tensor(Float64Array.from({ length: 16 }, (_, i) => (i % 4 > Math.floor(i / 4) ? -1e9 : 0)), [4, 4]);
    const mha = new MultiheadAttention(4, 2, { dtype: 'float64', rng });
    const dropping = new MultiheadAttention(4, 2, { dtype: 'float64', dropout: 0.5, rng });
    const fusedRan = (run: () => unknown): boolean => [...profileOps(() => noGrad(run)).keys()].some((op) => op.endsWith('/attention'));
    assert.ok(fusedRan(() => mha.forward(x, x, x, { needWeights: false })));
    assert.ok(fusedRan(() => mha.forward(x, x, x, { needWeights: false, attnMask: causal })));
    assert.ok(!fusedRan(() => mha.forward(x, x, x, { attnMask: causal })), 'weights');
    assert.ok(!fusedRan(() => mha.forward(x, other, other, { needWeights: false })), 'cross-attention');
    assert.ok(!fusedRan(() => mha.forward(x, x, x, { needWeights: false, keyPaddingMask: zeros([2, 4], 'int32') })), 'padding mask');
    assert.ok(!fusedRan(() => mha.forward(x, x, x, { needWeights: false, attnMask: notCausal })), 'a mask that is not causal');
    assert.ok(!fusedRan(() => mha.forward(x, x, x, { needWeights: false, attnMask: nearlyCausal })), '−1e9 is not −∞');
    assert.ok(!fusedRan(() => dropping.forward(x, x, x, { needWeights: false })), 'dropout in training');
    dropping.eval();
    assert.ok(fusedRan(() => dropping.forward(x, x, x, { needWeights: false })), 'dropout off in eval');
    // The fused causal call gives what the composed call with the same mask gives.
    const [fused] = noGrad(() => mha.forward(x, x, x, { needWeights: false, attnMask: causal }));
    const [composed] = noGrad(() => mha.forward(x, x, x, { attnMask: causal }));
    assert.ok(maxError(fused.data, composed.data) < 1e-14);
  });
});

describe('MultiheadAttention gradients against float64 central differences', () => {
  it('query, key, value and every parameter, with a bool key-padding mask and a float attention mask', () => {
    withBackend('reference', () => {
      const rng = new Rng(21);
      const mha = new MultiheadAttention(4, 2, { dtype: 'float64', rng });
      for (const p of mha.parameters()) for (let i = 0; i < p.size; i++) p.data[i] = rng.uniform() - 0.5;
      const query = random64([3, 2, 4], rng).requiresGrad_();
      const key = random64([4, 2, 4], rng).requiresGrad_();
      const value = random64([4, 2, 4], rng).requiresGrad_();
      const keyPaddingMask = new Tensor(Int32Array.from([0, 0, 0, 0, 0, 1, 0, 1]), [2, 4]);
      const attnMask = random64([3, 4], rng, -1, 0.5);
      const params = mha.parameters();
      assert.deepEqual(mha.namedParameters().map(([n]) => n), ['in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias']);
      const result = gradcheck(() => {
        const [output, weights] = mha.forward(query, key, value, { keyPaddingMask, attnMask, averageAttnWeights: false });
        return concat([reshape(output, [output.size]), reshape(weights!, [weights!.size])], 0);
      }, [query, key, value, ...params]);
      assert.equal(result.relativeErrors.length, 7);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });
});

describe('MultiheadAttention behaviour', () => {
  it('masked keys get exactly zero weight; each row sums to 1; averaged weights are the mean over heads', () => {
    const rng = new Rng(4);
    const mha = new MultiheadAttention(6, 3, { batchFirst: true, dtype: 'float64', rng });
    const x = random64([2, 5, 6], rng);
    const keyPaddingMask = new Tensor(Int32Array.from([0, 0, 1, 0, 0, 0, 0, 0, 1, 1]), [2, 5]);
    const causal = new Tensor(Int32Array.from({ length: 25 }, (_, i) => (i % 5 > Math.floor(i / 5) ? 1 : 0)), [5, 5]);
    const [, perHead] = mha.forward(x, x, x, { keyPaddingMask, attnMask: causal, averageAttnWeights: false });
    const [, averaged] = mha.forward(x, x, x, { keyPaddingMask, attnMask: causal });
    assert.deepEqual(perHead!.shape, [2, 3, 5, 5]);
    for (let n = 0; n < 2; n++) for (let h = 0; h < 3; h++) for (let l = 0; l < 5; l++) {
      let rowSum = 0;
      for (let s = 0; s < 5; s++) {
        const w = perHead!.data[((n * 3 + h) * 5 + l) * 5 + s]!;
        rowSum += w;
        if (s > l || keyPaddingMask.data[n * 5 + s] === 1) assert.equal(w, 0, `n${n} h${h} l${l} s${s}`);
        const mean = (perHead!.data[((n * 3) * 5 + l) * 5 + s]! + perHead!.data[((n * 3 + 1) * 5 + l) * 5 + s]! + perHead!.data[((n * 3 + 2) * 5 + l) * 5 + s]!) / 3;
        assert.ok(Math.abs(averaged!.data[(n * 5 + l) * 5 + s]! - mean) < 1e-15);
      }
      assert.ok(Math.abs(rowSum - 1) < 1e-12);
    }
    assert.equal(mha.forward(x, x, x, { needWeights: false })[1], null);
  });

  it('a float mask of −∞ equals the boolean mask; one head equals single-head attention written out', () => {
    const rng = new Rng(8);
    const mha = new MultiheadAttention(2, 1, { dtype: 'float64', rng });
    const q = random64([1, 2], rng);
    const kv = random64([3, 2], rng);
    const boolMask = new Tensor(Int32Array.from([0, 1, 0]), [1, 3]);
    const floatMask = new Tensor(Float64Array.from([0, -Infinity, 0]), [1, 3]);
    const [a, wa] = mha.forward(q, kv, kv, { attnMask: boolMask });
    const [b] = mha.forward(q, kv, kv, { attnMask: floatMask });
    assert.deepEqual(a.toArray(), b.toArray());
    // By hand: Q = W_q q + b_q, K_s = W_k kv_s + b_k, V_s likewise; softmax(Q·K_s/√2) over s ≠ 1; out = W_o (Σ a_s V_s) + b_o.
    const w = mha.inProjWeight.data;
    const bias = mha.inProjBias!.data;
    const project = (row: number, v: ArrayLike<number>, offset: number): number => w[row * 2]! * v[offset]! + w[row * 2 + 1]! * v[offset + 1]! + bias[row]!;
    const query = [project(0, q.data, 0), project(1, q.data, 0)];
    const scores = [0, 2].map((s) => (query[0]! * project(2, kv.data, 2 * s) + query[1]! * project(3, kv.data, 2 * s)) / Math.SQRT2);
    const z = Math.exp(scores[0]!) + Math.exp(scores[1]!);
    const attn = [Math.exp(scores[0]!) / z, Math.exp(scores[1]!) / z];
    assert.ok(Math.abs(wa!.data[0]! - attn[0]!) < 1e-14 && wa!.data[1] === 0 && Math.abs(wa!.data[2]! - attn[1]!) < 1e-14);
    const context = [4, 5].map((row) => attn[0]! * project(row, kv.data, 0) + attn[1]! * project(row, kv.data, 4));
    const ow = mha.outProj.weight.data;
    const ob = mha.outProj.bias!.data;
    for (let j = 0; j < 2; j++) assert.ok(Math.abs(a.data[j]! - (ow[j * 2]! * context[0]! + ow[j * 2 + 1]! * context[1]! + ob[j]!)) < 1e-14);
  });

  it('dropout on the weights in training only: p = 1 leaves out_proj.bias; eval is deterministic', () => {
    const rng = new Rng(6);
    const mha = new MultiheadAttention(4, 2, { dropout: 1, dtype: 'float64', rng });
    for (let i = 0; i < 4; i++) mha.outProj.bias!.data[i] = i + 1;
    const x = random64([3, 2, 4], rng);
    const [out, weights] = mha.forward(x, x, x);
    assert.deepEqual(out.toArray(), Array.from({ length: 24 }, (_, i) => (i % 4) + 1));
    assert.ok(weights!.toArray().every((v) => v === 0));
    mha.eval();
    const [first] = mha.forward(x, x, x);
    assert.deepEqual(mha.forward(x, x, x)[0].toArray(), first.toArray());
    assert.notDeepEqual(first.toArray(), out.toArray());
  });

  it('init as PyTorch: in_proj_weight xavier-uniform, zero biases, out_proj.weight U(±1/√E); not swapped as a Linear', () => {
    const mha = new MultiheadAttention(32, 4, { rng: new Rng(1) });
    const xavier = Math.sqrt(6 / (32 + 96));
    assert.ok(mha.inProjWeight.toArray().every((v) => Math.abs(v) <= xavier));
    assert.ok(Math.max(...mha.inProjWeight.toArray().map(Math.abs)) > 0.9 * xavier);
    assert.ok(mha.outProj.weight.toArray().every((v) => Math.abs(v) <= 1 / Math.sqrt(32)));
    assert.ok(Math.max(...mha.outProj.weight.toArray().map(Math.abs)) > 0.9 / Math.sqrt(32));
    assert.ok(mha.inProjBias!.toArray().every((v) => v === 0) && mha.outProj.bias!.toArray().every((v) => v === 0));
    assert.deepEqual(quantizableLayers(mha), []);
    assert.equal(new MultiheadAttention(4, 2, { bias: false }).namedParameters().length, 2);
  });

  it('invalid settings and shapes give errors naming the layer and the expected shape', () => {
    assert.throws(() => new MultiheadAttention(6, 4), /embedDim 6 must be divisible by numHeads 4/);
    assert.throws(() => new MultiheadAttention(4, 2, { dropout: -0.1 }), /dropout must be in \[0, 1\]/);
    const mha = new MultiheadAttention(4, 2);
    const q = zeros([3, 2, 4]);
    const kv = zeros([5, 2, 4]);
    assert.throws(() => mha.forward(q, zeros([5, 2, 3]), zeros([5, 2, 3])), /key has shape \[5, 2, 3\], last dim should be 4/);
    assert.throws(() => mha.forward(q, kv, zeros([4, 2, 4])), /key \[5, 2, 4\] and value \[4, 2, 4\] must have the same shape/);
    assert.throws(() => mha.forward(q, zeros([5, 4]), zeros([5, 4])), /must all be \[L, N, E\] or all unbatched/);
    assert.throws(() => mha.forward(q, zeros([5, 3, 4]), zeros([5, 3, 4])), /differ in batch size/);
    assert.throws(() => mha.forward(q, kv, kv, { keyPaddingMask: zeros([2, 4], 'int32') }), /keyPaddingMask has shape \[2, 4\], expected \[2, 5\]/);
    assert.throws(() => mha.forward(q, kv, kv, { attnMask: zeros([5, 3]) }), /attnMask has shape \[5, 3\], expected \[3, 5\] or \[4, 3, 5\]/);
    assert.throws(() => mha.forward(zeros([3, 2, 4], 'float64'), kv, kv), /query dtype float64 differs from the parameters' float32/);
  });
});
