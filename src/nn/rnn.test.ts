import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { concat, crossEntropy, reshape, Rng, Tensor, zeros } from '../tensor/index.ts';
import { noGrad } from '../autograd/index.ts';
import { gradcheck } from '../autograd/gradcheck.ts';
import { withBackend } from '../backend/index.ts';
import { Adam } from '../optim/adam.ts';
import { Module } from './module.ts';
import { Linear } from './linear.ts';
import { GRU, LSTM, type FloatDType, type RNNOptions } from './rnn.ts';
import { maxError, stateOf, toTensor, torchCases, type TorchCase } from '../../test/fixtures/torch-rnn-attn.ts';

/** float64 tensor of values uniform in [−1, 1). */
function random64(shape: number[], rng: Rng): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform() * 2 - 1;
  return new Tensor(data, shape);
}

function flat(...ts: Tensor[]): Tensor {
  return concat(ts.map((t) => reshape(t, [t.size])), 0);
}

function buildFromCase(c: TorchCase, dtype: FloatDType): LSTM | GRU {
  const options: RNNOptions = {
    numLayers: c.config.numLayers as number,
    bias: c.config.bias as boolean,
    batchFirst: c.config.batchFirst as boolean,
    bidirectional: c.config.bidirectional as boolean,
    dtype,
  };
  const { inputSize, hiddenSize } = c.config as { inputSize: number; hiddenSize: number };
  return c.module === 'LSTM' ? new LSTM(inputSize, hiddenSize, options) : new GRU(inputSize, hiddenSize, options);
}

/** Runs a fixture case; returns the named outputs. */
function runCase(c: TorchCase, dtype: FloatDType): Record<string, Tensor> {
  const module = buildFromCase(c, dtype);
  module.loadStateDict(stateOf(c, dtype));
  const x = toTensor(c.inputs.x!, dtype);
  const h0 = c.inputs.h0 ? toTensor(c.inputs.h0, dtype) : undefined;
  return noGrad((): Record<string, Tensor> => {
    if (module instanceof LSTM) {
      const [output, [hN, cN]] = module.forward(x, h0 ? [h0, toTensor(c.inputs.c0!, dtype)] : undefined);
      return { output, hN, cN };
    }
    const [output, hN] = module.forward(x, h0);
    return { output, hN };
  });
}

const rnnCases = torchCases().filter((c) => c.module !== 'MultiheadAttention');

describe('LSTM and GRU against PyTorch 1.13 (test/fixtures/torch-rnn-attn.json)', () => {
  it('the fixture covers a 2-layer bidirectional batchFirst LSTM and a GRU with h0', () => {
    assert.ok(rnnCases.some((c) => c.module === 'LSTM' && c.config.numLayers === 2 && c.config.bidirectional && c.config.batchFirst && c.inputs.h0));
    assert.ok(rnnCases.some((c) => c.module === 'GRU' && c.inputs.h0));
  });
  for (const c of rnnCases) {
    it(`${c.name}: state-dict keys equal PyTorch's, in order`, () => {
      const module = buildFromCase(c, 'float32');
      assert.deepEqual([...module.stateDict().keys()], c.state.map(([name]) => name));
      for (const [name, t] of module.stateDict()) assert.deepEqual(t.shape, c.state.find(([n]) => n === name)![1].shape, name);
    });
    it(`${c.name}: outputs within 1e-5 (float32) and 1e-12 (float64)`, () => {
      for (const [dtype, tolerance] of [['float32', 1e-5], ['float64', 1e-12]] as const) {
        const got = runCase(c, dtype);
        assert.deepEqual(Object.keys(got).sort(), Object.keys(c.outputs).sort());
        for (const [name, expected] of Object.entries(c.outputs)) {
          assert.deepEqual(got[name]!.shape, expected.shape, `${name} shape`);
          const error = maxError(got[name]!.data, expected.data);
          assert.ok(error < tolerance, `${dtype} ${name}: error ${error.toExponential(2)}`);
        }
      }
    });
  }
});

describe('LSTM and GRU gradients against float64 central differences', () => {
  it('LSTM 2-layer bidirectional batchFirst: input, h0, c0 and every parameter', () => {
    withBackend('reference', () => {
      const rng = new Rng(11);
      const lstm = new LSTM(2, 2, { numLayers: 2, bidirectional: true, batchFirst: true, dtype: 'float64', rng });
      const x = random64([2, 3, 2], rng).requiresGrad_();
      const h0 = random64([4, 2, 2], rng).requiresGrad_();
      const c0 = random64([4, 2, 2], rng).requiresGrad_();
      const params = lstm.parameters();
      assert.equal(params.length, 16);
      const result = gradcheck(() => {
        const [output, [hN, cN]] = lstm.forward(x, [h0, c0]);
        return flat(output, hN, cN);
      }, [x, h0, c0, ...params]);
      assert.equal(result.relativeErrors.length, 19);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
    });
  });
  it('GRU 2-layer with h0 and unbatched bidirectional GRU: input, h0 and every parameter', () => {
    withBackend('reference', () => {
      const rng = new Rng(12);
      const gru = new GRU(2, 3, { numLayers: 2, dtype: 'float64', rng });
      const x = random64([3, 2, 2], rng).requiresGrad_();
      const h0 = random64([2, 2, 3], rng).requiresGrad_();
      const result = gradcheck(() => flat(...gru.forward(x, h0)), [x, h0, ...gru.parameters()]);
      assert.equal(result.relativeErrors.length, 10);
      assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);

      const bi = new GRU(2, 2, { bidirectional: true, dtype: 'float64', rng });
      const xu = random64([3, 2], rng).requiresGrad_();
      const hu = random64([2, 2], rng).requiresGrad_();
      const unbatched = gradcheck(() => flat(...bi.forward(xu, hu)), [xu, hu, ...bi.parameters()]);
      assert.ok(unbatched.maxRelativeError < 1e-6, `unbatched relative error ${unbatched.maxRelativeError.toExponential(2)}`);
    });
  });
});

describe('LSTM and GRU behaviour', () => {
  it('init: every parameter in U(±1/√hiddenSize), spread over the range, reproducible from rng', () => {
    const lstm = new LSTM(5, 16, { numLayers: 2, rng: new Rng(3) });
    const bound = 1 / Math.sqrt(16);
    for (const [name, p] of lstm.namedParameters()) {
      assert.ok(p.toArray().every((v) => Math.abs(v) <= bound), name);
      assert.ok(Math.max(...p.toArray().map(Math.abs)) > 0.8 * bound, `${name} spreads`);
    }
    assert.deepEqual(new LSTM(5, 16, { numLayers: 2, rng: new Rng(3) }).stateDict().get('weight_hh_l1')!.toArray(), lstm.stateDict().get('weight_hh_l1')!.toArray());
    assert.deepEqual(lstm.stateDict().get('weight_ih_l1')!.shape, [64, 16]);
    assert.deepEqual(new GRU(5, 16, { bidirectional: true, numLayers: 2 }).stateDict().get('weight_ih_l1_reverse')!.shape, [48, 32]);
  });

  it('outputs: the last step of the forward direction and the first of the reverse are hN; batchFirst is a transpose', () => {
    const rng = new Rng(5);
    const gru = new GRU(3, 4, { bidirectional: true, rng });
    const x = random64([5, 2, 3], rng);
    const gru64 = new GRU(3, 4, { bidirectional: true, dtype: 'float64' });
    gru64.loadStateDict(gru.stateDict());
    const [output, hN] = gru64.forward(x);
    assert.deepEqual(output.shape, [5, 2, 8]);
    assert.deepEqual(hN.shape, [2, 2, 4]);
    for (let n = 0; n < 2; n++) {
      for (let j = 0; j < 4; j++) {
        assert.equal(output.data[(4 * 2 + n) * 8 + j], hN.data[n * 4 + j], 'forward direction ends at t = L − 1');
        assert.equal(output.data[(0 * 2 + n) * 8 + 4 + j], hN.data[(2 + n) * 4 + j], 'reverse direction ends at t = 0');
      }
    }
    const batchFirst = new GRU(3, 4, { bidirectional: true, batchFirst: true, dtype: 'float64' });
    batchFirst.loadStateDict(gru.stateDict());
    const xt = new Tensor(new Float64Array(x.size), [2, 5, 3]);
    for (let t = 0; t < 5; t++) for (let n = 0; n < 2; n++) for (let i = 0; i < 3; i++) xt.data[(n * 5 + t) * 3 + i] = x.data[(t * 2 + n) * 3 + i]!;
    const [outputT, hNT] = batchFirst.forward(xt);
    assert.deepEqual(hNT.toArray(), hN.toArray());
    for (let t = 0; t < 5; t++) for (let n = 0; n < 2; n++) for (let j = 0; j < 8; j++) {
      assert.equal(outputT.data[(n * 5 + t) * 8 + j], output.data[(t * 2 + n) * 8 + j]);
    }
  });

  it('dropout acts between layers in training only: p = 1 cuts the second layer off its input', () => {
    const rng = new Rng(9);
    const lstm = new LSTM(2, 3, { numLayers: 2, dropout: 1, rng, dtype: 'float64' });
    const [a] = lstm.forward(random64([4, 1, 2], rng));
    const [b] = lstm.forward(random64([4, 1, 2], rng));
    assert.deepEqual(a.toArray(), b.toArray(), 'training: the top layer sees zeros whatever the input');
    lstm.eval();
    const x = random64([4, 1, 2], rng);
    const plain = new LSTM(2, 3, { numLayers: 2, dtype: 'float64' });
    plain.loadStateDict(lstm.stateDict());
    assert.deepEqual(lstm.forward(x)[0].toArray(), plain.forward(x)[0].toArray(), 'eval: no dropout');
    assert.notDeepEqual(lstm.forward(x)[0].toArray(), a.toArray());
  });

  it('invalid settings and shapes give errors naming the layer and the expected shape', () => {
    assert.throws(() => new LSTM(0, 4), /LSTM: inputSize must be a positive integer, got 0/);
    assert.throws(() => new GRU(3, 4, { numLayers: 1.5 }), /GRU: numLayers must be a positive integer/);
    assert.throws(() => new LSTM(3, 4, { dropout: 2 }), /dropout must be in \[0, 1\]/);
    const lstm = new LSTM(3, 4, { numLayers: 2, batchFirst: true });
    const x = zeros([2, 5, 3]);
    assert.throws(() => lstm.forward(zeros([2, 5, 2])), /LSTM\(3, 4\): input has shape \[2, 5, 2\], last dim should be 3/);
    assert.throws(() => lstm.forward(zeros([1, 2, 5, 3])), /expected input \[N, L, inputSize\] or unbatched \[L, inputSize\], got \[1, 2, 5, 3\]/);
    assert.throws(() => lstm.forward(zeros([2, 0, 3])), /sequence is empty/);
    assert.throws(() => lstm.forward(x, [zeros([2, 5, 4]), zeros([2, 2, 4])]), /initial state h0 has shape \[2, 5, 4\], expected \[2, 2, 4\]/);
    assert.throws(() => lstm.forward(x, [zeros([2, 2, 4]), zeros([2, 4])]), /initial state c0 has shape \[2, 4\], expected \[2, 2, 4\]/);
    assert.throws(() => lstm.forward(zeros([2, 5, 3], 'float64')), /input dtype float64 differs from the parameters' float32/);
    assert.throws(() => new GRU(3, 4).forward(zeros([5, 3]), zeros([1, 1, 4])), /h0 has shape \[1, 1, 4\], expected \[1, 4\]/);
  });
});

describe('LSTM learning', () => {
  it('learns the sign of a sequence sum (200 Adam steps, seeded): last-20-step loss < 0.2 (measured 0.121), held-out accuracy ≥ 93 % (95.5 %)', () => {
    class SumSign extends Module {
      readonly lstm: LSTM;
      readonly head: Linear;
      constructor(rng: Rng) {
        super();
        this.lstm = this.registerModule('lstm', new LSTM(1, 8, { batchFirst: true, rng }));
        this.head = this.registerModule('head', new Linear(8, 2, { rng }));
      }
      forward(x: Tensor): Tensor {
        const [, [hN]] = this.lstm.forward(x);
        return this.head.forward(reshape(hN, [x.shape[0]!, 8]));
      }
    }
    const rng = new Rng(2024);
    const batch = (n: number): [Tensor, Tensor] => {
      const x = new Float32Array(n * 8);
      const y = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let t = 0; t < 8; t++) s += x[i * 8 + t] = rng.uniform() * 2 - 1;
        y[i] = s > 0 ? 1 : 0;
      }
      return [new Tensor(x, [n, 8, 1]), new Tensor(y, [n])];
    };
    const model = new SumSign(rng);
    const optimizer = new Adam(model.parameters(), { lr: 0.02 });
    const losses: number[] = [];
    for (let step = 0; step < 200; step++) {
      const [x, y] = batch(32);
      const loss = crossEntropy(model.forward(x), y);
      loss.backward();
      optimizer.step();
      optimizer.zeroGrad();
      losses.push(loss.item());
    }
    const last = losses.slice(-20).reduce((a, b) => a + b) / 20;
    const [xTest, yTest] = batch(512);
    const logits = noGrad(() => model.forward(xTest));
    let hits = 0;
    for (let i = 0; i < 512; i++) hits += (logits.data[2 * i + 1]! > logits.data[2 * i]! ? 1 : 0) === yTest.data[i] ? 1 : 0;
    assert.ok(losses[0]! > 0.6, `starts near chance (ln 2): ${losses[0]}`);
    assert.ok(last < 0.2, `mean loss of the last 20 steps ${last.toFixed(4)} (first step: ${losses[0]!.toFixed(4)})`);
    assert.ok(hits / 512 >= 0.93, `held-out accuracy ${hits / 512}`);
  });
});
