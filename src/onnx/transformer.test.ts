import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { TransformerLM, type TransformerActivation } from '../nn/models/transformer-lm.ts';
import { prepareTransformerQat, transformerQatConfig } from '../quant/transformer/qat.ts';
import { Rng, Tensor } from '../tensor/index.ts';
import { decodeModel } from './proto.ts';
import { openRnnOnnx } from './rnn-verify.ts';
import { exportTransformerOnnx } from './transformer.ts';

const V = 40;
const L = 6;

function ids(rows: number, seed: number): Tensor {
  const rng = new Rng(seed);
  return new Tensor(Int32Array.from({ length: rows * L }, () => Math.floor(rng.uniform() * V)), [rows, L]);
}

function model(activation: TransformerActivation, seed: number): TransformerLM {
  const m = new TransformerLM({ vocabSize: V, embedDim: 16, numHeads: 4, numLayers: 2, mlpDim: 24, maxContext: L, activation, rng: new Rng(seed) });
  // larger random LayerNorm / bias values than the init, so every parameter matters
  const rng = new Rng(seed + 100);
  for (const [name, p] of m.namedParameters()) if (/ln|bias/.test(name)) for (let i = 0; i < p.size; i++) p.data[i] = (name.endsWith('weight') ? 1 : 0) + 0.3 * (2 * rng.uniform() - 1);
  return m;
}

/** Runs the exported bytes in onnxruntime-node; null when it is not installed. */
async function ortLogits(bytes: Uint8Array, x: Tensor): Promise<Float32Array | null> {
  const runner = await openRnnOnnx(bytes, { matMulNBitsAccuracyLevel: 0 });
  if ('skipped' in runner) return null;
  try {
    return (await runner.run({ input: x })).logits!.data as Float32Array;
  } finally {
    await runner.release();
  }
}

describe('exportTransformerOnnx', () => {
  for (const activation of ['gelu', 'gelu-tanh', 'relu'] as const) {
    it(`fp32 (${activation}): onnxruntime logits within 1e-5 of lowbit's`, async (t) => {
      const m = model(activation, 1);
      m.eval();
      const x = ids(5, 2);
      const want = noGrad(() => m.forward(x)).data;
      const result = exportTransformerOnnx(m, { sequenceLength: L });
      assert.equal(result.kind, 'fp32');
      assert.equal(result.quantizedWeights, 0);
      const got = await ortLogits(result.bytes, x);
      if (!got) return t.skip('onnxruntime-node not available');
      assert.equal(got.length, 5 * V);
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
      assert.ok(worst < 1e-5, `max |diff| ${worst}`);
    });
  }

  it('w4a8 QDQ: every weight int8 + DequantizeLinear, 4 attention operands + 5 layer inputs per block quantized; logits agree with the fake-quant model', async (t) => {
    const m = model('gelu-tanh', 3);
    prepareTransformerQat(m, transformerQatConfig('w4a8')!);
    const x = ids(64, 4);
    noGrad(() => m.forward(x)); // LSQ init
    m.eval();
    const want = noGrad(() => m.forward(x)).data;
    const result = exportTransformerOnnx(m, { metadata: { 'lowbit.quant': 'w4a8' } });
    assert.equal(result.kind, 'qdq');
    assert.equal(result.quantizedWeights, 1 + 2 * 4 + 1); // token table, 4 Linears per block, head
    assert.equal(result.quantizedActivations, 2 * (4 + 4) + 1); // per block: Q, K, V, A + inputs of qkv, proj, fc1, fc2; the head's input
    assert.ok(result.weightDeviation < 1e-6, `weight deviation ${result.weightDeviation}`);
    const decoded = decodeModel(result.bytes);
    const int8 = decoded.graph!.initializer!.filter((i) => i.name!.endsWith('_int8'));
    assert.equal(int8.length, 10);
    assert.ok(m.training === false);
    const got = await ortLogits(result.bytes, x);
    if (!got) return t.skip('onnxruntime-node not available');
    // A value within float32 rounding of an activation quantizer's midpoint may round the other way in
    // onnxruntime (x/s in float32): allow a few rows off by at most a few quantization steps' effect.
    let worst = 0;
    let scale = 0;
    let agree = 0;
    for (let r = 0; r < 64; r++) {
      let [a, b] = [0, 0];
      for (let v = 0; v < V; v++) {
        const i = r * V + v;
        worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
        scale = Math.max(scale, Math.abs(want[i]!));
        if (want[i]! > want[r * V + a]!) a = v;
        if (got[i]! > got[r * V + b]!) b = v;
      }
      if (a === b) agree++;
    }
    assert.ok(worst < 1e-3 * Math.max(1, scale), `max |diff| ${worst} (largest |logit| ${scale})`);
    assert.ok(agree >= 63, `argmax agreement ${agree}/64`);
  });

  it('refuses tied weights and a context beyond maxContext', () => {
    const tied = new TransformerLM({ vocabSize: V, embedDim: 8, numHeads: 2, maxContext: L, tieWeights: true });
    assert.throws(() => exportTransformerOnnx(tied), /tieWeights is not supported/);
    assert.throws(() => exportTransformerOnnx(model('relu', 5), { sequenceLength: L + 1 }), /sequenceLength 7 is outside \[1, 6\]/);
  });
});
