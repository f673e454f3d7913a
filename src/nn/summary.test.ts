import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, Tensor } from '../tensor/index.ts';
import { BatchNorm, cnn, Conv1d, Flatten, GroupNorm, lenet5, Linear, LSTM, NextWordModel, ReLU, Sequential, TransformerLM } from './index.ts';
import { nextWordQatPlan, prepareRnnQat } from '../quant/rnn/index.ts';
import { prepareTransformerQat, transformerQatConfig } from '../quant/transformer/index.ts';
import { summary } from './summary.ts';
import { prepareQat } from '../quant/qat/prepare.ts';
import { qatFromCliOptions } from '../quant/qat/cli.ts';

describe('nn.summary', () => {
  it('LeNet-5: output shapes and parameter counts in closed form, totals, fp32 size', () => {
    manualSeed(0);
    const model = lenet5();
    const s = summary(model, [2, 1, 28, 28]);
    const rows = Object.fromEntries(s.rows.map((r) => [r.name, r]));
    const expected: [string, string, number[], number][] = [
      ['conv1', 'Conv2d', [2, 6, 28, 28], 6 * 1 * 25 + 6],
      ['pool1', 'MaxPool2d', [2, 6, 14, 14], 0],
      ['conv2', 'Conv2d', [2, 16, 10, 10], 16 * 6 * 25 + 16],
      ['flatten', 'Flatten', [2, 400], 0],
      ['fc1', 'Linear', [2, 120], 400 * 120 + 120],
      ['fc2', 'Linear', [2, 84], 120 * 84 + 84],
      ['fc3', 'Linear', [2, 10], 84 * 10 + 10],
    ];
    for (const [name, type, shape, params] of expected) {
      assert.equal(rows[name]!.type, type, name);
      assert.deepEqual(rows[name]!.outputShapes, [shape], name);
      assert.equal(rows[name]!.trainableParams, params, name);
      assert.equal(rows[name]!.calls, 1);
    }
    const total = expected.reduce((n, [, , , p]) => n + p, 0);
    assert.equal(s.totalParams, total);
    assert.equal(s.rows.reduce((n, r) => n + r.trainableParams, 0), total);
    assert.equal(s.fp32Bytes, 4 * total);
    assert.equal(s.quantizedBytes, s.fp32Bytes);
    assert.deepEqual(s.outputShapes, [[2, 10]]);
    const text = s.format();
    assert.match(text, /^LeNet5: input \[2, 1, 28, 28\] -> \[2, 10\]/);
    assert.match(text, /fc1\s+Linear\s+\[2, 120\]\s+48,120/);
    assert.match(text, /total params:\s+61,706/);
    assert.doesNotMatch(text, /bits|quantized/);
  });

  it('frozen parameters and buffers are counted apart; the model state, mode and forwards are left as they were', () => {
    manualSeed(1);
    const model = new Sequential(new Conv1d(2, 4, 3), new GroupNorm(2, 4), new Flatten(), new Linear(4 * 6, 3));
    const bnModel = cnn();
    bnModel.train();
    (model.getSubmodule('3') as Linear).requiresGrad_(false);
    const s = summary(model, [1, 2, 8]);
    assert.deepEqual(s.rows.map((r) => r.outputShapes), [[[1, 4, 6]], [[1, 4, 6]], [[1, 24]], [[1, 3]]]);
    assert.equal(s.nonTrainableParams, 24 * 3 + 3);
    assert.equal(s.rows[3]!.nonTrainableParams, 75);
    assert.equal(s.trainableParams, 4 * 2 * 3 + 4 + 8);
    assert.match(s.format(), /75 \(75 frozen\)/);

    const before = [...bnModel.stateDict()].map(([k, t]) => [k, Array.from(t.data)]);
    const bs = summary(bnModel, [1, 1, 28, 28]);
    const bn = bnModel.modules().filter((m) => m instanceof BatchNorm);
    assert.ok(bn.length > 0);
    assert.equal(bs.bufferElements, bn.reduce((n, m) => n + 2 * m.numFeatures + 1, 0));
    assert.deepEqual([...bnModel.stateDict()].map(([k, t]) => [k, Array.from(t.data)]), before, 'running statistics untouched');
    assert.ok(bnModel.modules().every((m) => m.training), 'training mode restored');
    assert.ok(bnModel.modules().every((m) => !Object.prototype.hasOwnProperty.call(m, 'forward')), 'patched forwards removed');
  });

  it('after prepareQat: weight/input bits per layer and the size with quantized weights', () => {
    manualSeed(2);
    const model = lenet5();
    prepareQat(model, qatFromCliOptions({ quant: 'w4a4' })!);
    const before = [...model.stateDict()].map(([k, t]) => [k, Array.from(t.data)]);
    const s = summary(model, [1, 1, 28, 28]);
    // The forward would initialise the LSQ steps and observe ranges: all of it is undone.
    assert.deepEqual([...model.stateDict()].map(([k, t]) => [k, Array.from(t.data)]), before);
    const bits: Record<string, (number | null)[]> = Object.fromEntries(s.rows.filter((r) => r.weightBits !== null).map((r) => [r.name, [r.weightBits, r.activationBits]]));
    // First and last layers stay at 8 bits (the plan's rule), the rest at 4.
    assert.deepEqual(bits, { conv1: [8, 8], conv2: [4, 4], fc1: [4, 4], fc2: [4, 4], fc3: [8, 8] });
    assert.equal(s.quantizedLayers, 5);
    const weights = { conv1: 150, conv2: 2400, fc1: 48000, fc2: 10080, fc3: 840 };
    const saved = Object.entries(weights).reduce((n, [name, size]) => n + size * (4 - s.rows.find((r) => r.name === name)!.weightBits! / 8), 0);
    assert.equal(s.quantizedBytes, s.fp32Bytes - saved);
    assert.ok(s.rows.every((r) => !r.type.endsWith('Quantizer') && !r.name.includes('Quantizer')), 'quantizers get no row of their own');
    assert.equal(s.rows.find((r) => r.name === 'conv1')!.type, 'QuantConv2d');
    assert.equal(s.totalParams, s.rows.reduce((n, r) => n + r.trainableParams + r.nonTrainableParams, 0), 'quantizer parameters counted in their layer');
    assert.match(s.format(), /conv2\s+QuantConv2d\s+\[1, 16, 10, 10\]\s+[\d,]+\s+w4a4/);
    assert.match(s.format(), /size \(quantized\):/);
  });

  for (const cell of ['lstm', 'gru'] as const) {
    it(`QAT language model (${cell}, w4a8): the table, the recurrent weights and the head at their bits`, () => {
      manualSeed(3);
      const model = new NextWordModel({ vocabSize: 50, embeddingDim: 6, hiddenSize: 10, cell });
      prepareRnnQat(model, nextWordQatPlan('w4a8')!);
      const s = summary(model, [1, 5], { dtype: 'int32' });
      const rows = Object.fromEntries(s.rows.map((r) => [r.name, r]));
      assert.deepEqual([rows['embedding']!.weightBits, rows['embedding']!.activationBits], [4, null]);
      assert.deepEqual([rows['rnn']!.weightBits, rows['rnn']!.activationBits], [4, 8]);
      assert.deepEqual([rows['head']!.weightBits, rows['head']!.activationBits], [4, 8]);
      assert.equal(s.quantizedLayers, 3);
      const gates = cell === 'lstm' ? 4 : 3;
      // Quantized weights: the table 50x6, W_ih [gates*10, 6], W_hh [gates*10, 10], the head 50x10; everything else fp32.
      const quantized = 50 * 6 + gates * 10 * 6 + gates * 10 * 10 + 50 * 10;
      assert.equal(s.quantizedBytes, s.fp32Bytes - quantized * (4 - 4 / 8));
      assert.match(s.format(), new RegExp(`rnn\\s+Qat${cell.toUpperCase()}\\s.*w4a8`));
      assert.match(s.format(), /embedding\s+QatEmbedding\s.*w4 \(a float\)/);
    });
  }

  it('quantized Transformer LM: attention operand quantizers show as activation bits, its Linears as layers', () => {
    manualSeed(4);
    const model = new TransformerLM({ vocabSize: 40, maxContext: 6, embedDim: 8, numHeads: 2, numLayers: 1, mlpDim: 16 });
    prepareTransformerQat(model, transformerQatConfig('w4a8')!);
    const s = summary(model, [1, 6], { dtype: 'int32' });
    const rows = Object.fromEntries(s.rows.map((r) => [r.name, r]));
    assert.deepEqual([rows['blocks.0.attn']!.weightBits, rows['blocks.0.attn']!.activationBits], [null, 8]);
    assert.deepEqual([rows['blocks.0.attn.qkv']!.weightBits, rows['blocks.0.attn.qkv']!.activationBits], [4, 8]);
    assert.deepEqual([rows['positionEmbedding']!.weightBits, rows['positionEmbedding']!.activationBits], [null, null]);
    const quantized = 40 * 8 + 24 * 8 + 8 * 8 + 16 * 8 + 8 * 16 + 40 * 8;  // token table, qkv, proj, fc1, fc2, head
    assert.equal(s.quantizedBytes, s.fp32Bytes - quantized * (4 - 4 / 8));
  });

  it('modules returning several tensors, a given input, and bad shapes', () => {
    const lstm = new LSTM(3, 5);
    const s = summary(lstm, [], { input: new Tensor(new Float32Array(4 * 2 * 3), [4, 2, 3]) });
    assert.deepEqual(s.outputShapes, [[4, 2, 5], [1, 2, 5], [1, 2, 5]]);
    assert.throws(() => summary(lenet5(), [1, 28, 28.5]), /inputShape must be positive integers/);
    assert.throws(() => summary(new Sequential(new ReLU()), []), /inputShape must be positive integers/);
  });
});
