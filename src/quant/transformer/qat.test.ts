import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Embedding } from '../../nn/embedding.ts';
import { Linear } from '../../nn/linear.ts';
import { CausalSelfAttention, TransformerLM } from '../../nn/models/transformer-lm.ts';
import { crossEntropy, Rng, Tensor } from '../../tensor/index.ts';
import { QuantLinear } from '../qat/layers.ts';
import { LsqQuantizer } from '../quantizers/lsq.ts';
import { QatEmbedding } from '../rnn/qat-embedding.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import { prepareTransformerQat, transformerQatConfig } from './qat.ts';

const ids = new Tensor(Int32Array.of(1, 4, 2, 0, 3, 3, 9, 5, 1, 2, 7, 8, 6, 6, 0, 1), [4, 4]);

function tinyModel(seed: number): TransformerLM {
  return new TransformerLM({ vocabSize: 10, embedDim: 8, numHeads: 2, numLayers: 2, maxContext: 4, rng: new Rng(seed) });
}

/** LSQ fake-quant, float64: (clamp(roundHalfEven(x/s), qmin, qmax))·s. */
function fq(x: number, step: number, qmin: number, qmax: number): number {
  return Math.min(qmax, Math.max(qmin, roundHalfEven(x / step))) * step;
}

function stepOf(q: unknown): Float32Array {
  assert.ok(q instanceof LsqQuantizer);
  return q.step.data as Float32Array;
}

describe('transformerQatConfig', () => {
  it('names the LSTM LM schemes: per-row weights, per-tensor activations, unsigned attention weights', () => {
    assert.equal(transformerQatConfig('fp32'), null);
    const c = transformerQatConfig('w4a8')!;
    assert.deepEqual(c.weight, { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'channel' });
    assert.deepEqual(c.activation, { kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'tensor' });
    assert.deepEqual(c.attentionOperand, c.activation);
    assert.deepEqual(c.attentionProbs, { kind: 'lsq', bits: 8, signed: false, symmetric: false, granularity: 'tensor' });
    assert.deepEqual(transformerQatConfig('w4'), { weight: c.weight, activation: null });
    assert.throws(() => transformerQatConfig('w2a2' as never), /unknown scheme "w2a2"/);
  });
});

describe('prepareTransformerQat', () => {
  it('quantizes every Linear, the token table and the four attention operands; positions stay float', () => {
    const model = tinyModel(1);
    const result = prepareTransformerQat(model, transformerQatConfig('w4a8')!);
    const quantLinears = model.namedModules().filter(([, m]) => m instanceof QuantLinear).map(([n]) => n);
    assert.deepEqual(quantLinears, ['blocks.0.attn.qkv', 'blocks.0.attn.proj', 'blocks.0.fc1', 'blocks.0.fc2', 'blocks.1.attn.qkv', 'blocks.1.attn.proj', 'blocks.1.fc1', 'blocks.1.fc2', 'head']);
    assert.equal(model.namedModules().filter(([, m]) => m instanceof Linear).length, 0);
    assert.ok(model.tokenEmbedding instanceof QatEmbedding);
    assert.ok(model.positionEmbedding instanceof Embedding);
    assert.deepEqual(result.attentionOperands, [0, 1].flatMap((b) => ['query', 'key', 'value', 'probs'].map((k) => `blocks.${b}.attn.quant_${k}`)));
    assert.throws(() => prepareTransformerQat(model, transformerQatConfig('w4a8')!), /already has operand quantizers/);
    const tied = new TransformerLM({ vocabSize: 10, embedDim: 8, numHeads: 2, tieWeights: true });
    assert.throws(() => prepareTransformerQat(tied, transformerQatConfig('w8a8')!), /tieWeights are not supported/);
    const fresh = tinyModel(1);
    assert.throws(() => prepareTransformerQat(fresh, { weight: null, activation: null, attentionProbs: { kind: 'lsq', bits: 40 } }), /attention weights quantizer/);
    assert.ok(fresh.namedModules().every(([, m]) => !(m instanceof QuantLinear)), 'a bad spec leaves the model untouched');
  });

  it('a quantized attention equals the closed-form fake-quant computation (float64 reference)', () => {
    const model = tinyModel(2);
    prepareTransformerQat(model, transformerQatConfig('w4a4')!);
    noGrad(() => model.forward(ids)); // initialises every LSQ step from data
    const attn = model.blocks.at(0) as unknown as { attn: CausalSelfAttention };
    const a = attn.attn;
    const qkv = a.qkv as unknown as QuantLinear;
    const proj = a.proj as unknown as QuantLinear;
    const ops = a.operandQuantizers();
    const rng = new Rng(9);
    const [n, steps, e, heads, d] = [2, 4, 8, 2, 4];
    const x = new Tensor(Float32Array.from({ length: n * steps * e }, () => 2 * rng.uniform() - 1), [n, steps, e]);
    const y = noGrad(() => a.forward(x));

    // Signed 4-bit symmetric: [−7, 7]; unsigned 4-bit: [0, 15].
    const linearRef = (input: Float64Array, rows: number, layer: QuantLinear, inF: number, outF: number): Float64Array => {
      const sIn = stepOf(layer.inputQuantizer)[0]!;
      const sW = stepOf(layer.weightQuantizer);
      assert.equal(sW.length, outF, 'one weight step per output row');
      const w = layer.weight.data;
      const b = layer.bias!.data;
      const out = new Float64Array(rows * outF);
      for (let r = 0; r < rows; r++) {
        for (let o = 0; o < outF; o++) {
          let s = b[o]!;
          for (let k = 0; k < inF; k++) s += fq(input[r * inF + k]!, sIn, -7, 7) * fq(w[o * inF + k]!, sW[o]!, -7, 7);
          out[r * outF + o] = s;
        }
      }
      return out;
    };
    const fused = linearRef(Float64Array.from(x.data), n * steps, qkv, e, 3 * e);
    const [sq, sk, sv, sp] = (['query', 'key', 'value', 'probs'] as const).map((k) => stepOf(ops[k])[0]!);
    const context = new Float64Array(n * steps * e);
    for (let b = 0; b < n; b++) {
      for (let h = 0; h < heads; h++) {
        const at = (t: number, part: number, j: number): number => fused[(b * steps + t) * 3 * e + part * e + h * d + j]!;
        for (let t = 0; t < steps; t++) {
          const scores: number[] = [];
          for (let u = 0; u <= t; u++) {
            let s = 0;
            for (let j = 0; j < d; j++) s += fq(at(t, 0, j), sq!, -7, 7) * fq(at(u, 1, j), sk!, -7, 7);
            scores.push(s / Math.sqrt(d));
          }
          const max = Math.max(...scores);
          const exps = scores.map((s) => Math.exp(s - max));
          const total = exps.reduce((p, q) => p + q, 0);
          for (let j = 0; j < d; j++) {
            let s = 0;
            for (let u = 0; u <= t; u++) s += fq(exps[u]! / total, sp!, 0, 15) * fq(at(u, 2, j), sv!, -7, 7);
            context[(b * steps + t) * e + h * d + j] = s;
          }
        }
      }
    }
    const ref = linearRef(context, n * steps, proj, e, e);
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(y.data[i]! - ref[i]!));
    assert.ok(worst < 1e-5, `largest difference ${worst}`);
  });

  it('16-bit quantizers with steps covering each operand: the QAT logits stay within 1e-3 of the float model', () => {
    const float = tinyModel(3);
    const qat = tinyModel(3);
    const lsq16 = (granularity: 'channel' | 'tensor', signed = true): QuantizerSpec => ({ kind: 'lsq', bits: 16, signed, symmetric: signed, granularity });
    prepareTransformerQat(qat, { weight: lsq16('channel'), activation: lsq16('tensor'), attentionOperand: lsq16('tensor'), attentionProbs: lsq16('tensor', false) });
    float.eval();
    qat.eval();
    noGrad(() => qat.forward(ids)); // LSQ's data init, then steps set to cover the range at 16 bits:
    // weights: row absmax / 32767; activations: ±8 / 32767 (|x| < 8 here); attention weights: 1 / 65535.
    for (const m of qat.modules()) {
      if (m instanceof QuantLinear || m instanceof QatEmbedding) {
        const step = stepOf(m.weightQuantizer);
        const cols = m.weight.shape[1]!;
        for (let r = 0; r < step.length; r++) step[r] = Math.max(...Array.from(m.weight.data.subarray(r * cols, (r + 1) * cols), Math.abs)) / 32767;
        if (m instanceof QuantLinear) stepOf(m.inputQuantizer)[0] = 8 / 32767;
      } else if (m instanceof CausalSelfAttention) {
        const ops = m.operandQuantizers();
        for (const k of ['query', 'key', 'value'] as const) stepOf(ops[k])[0] = 8 / 32767;
        stepOf(ops.probs)[0] = 1 / 65535;
      }
    }
    const want = noGrad(() => float.forwardAll(ids));
    const got = noGrad(() => qat.forwardAll(ids));
    const largest = (t: Tensor): number => Math.max(...Array.from(t.data, Math.abs));
    assert.ok(largest(noGrad(() => float.hidden(ids))) < 8, 'the ±8 activation range must cover the hidden states');
    let worst = 0;
    for (let i = 0; i < want.size; i++) worst = Math.max(worst, Math.abs(got.data[i]! - want.data[i]!));
    assert.ok(largest(want) > 0.1, `logits too small to compare (${largest(want)})`);
    assert.ok(worst < 1e-3, `largest logit difference ${worst} (largest logit ${largest(want)})`);
    // and 4-bit is visibly different: the bound above is not vacuous
    const coarse = tinyModel(3);
    prepareTransformerQat(coarse, transformerQatConfig('w4a4')!);
    noGrad(() => coarse.forward(ids));
    const far = noGrad(() => coarse.forwardAll(ids));
    let coarseWorst = 0;
    for (let i = 0; i < want.size; i++) coarseWorst = Math.max(coarseWorst, Math.abs(far.data[i]! - want.data[i]!));
    assert.ok(coarseWorst > 10 * worst, `4-bit difference ${coarseWorst} vs 16-bit ${worst}`);
  });

  it('gradients reach every weight and every quantizer step', () => {
    const model = tinyModel(4);
    prepareTransformerQat(model, transformerQatConfig('w8a8')!);
    const targets = new Tensor(Int32Array.of(1, 2, 3, 4), [4]);
    crossEntropy(model.forward(ids), targets).backward();
    const missing = model.namedParameters().filter(([name, p]) => {
      if (name.startsWith('positionEmbedding')) return false; // positions 0..3 all used, checked below
      const g = p.grad;
      return !g || !Array.from(g.data).some((v) => v !== 0);
    }).map(([name]) => name);
    assert.deepEqual(missing, []);
    assert.ok(model.namedParameters().some(([name]) => name === 'blocks.1.attn.quant_probs.step'));
  });
});

describe('quant.transformer exports', () => {
  it('prepareTransformerQat and transformerQatConfig are on the Node and browser entries, TransformerLM on nn', async () => {
    for (const entry of [await import('../../index.ts'), await import('../../browser.ts')]) {
      assert.equal(entry.quant.transformer.prepareTransformerQat, prepareTransformerQat);
      assert.equal(entry.quant.transformer.transformerQatConfig, transformerQatConfig);
      assert.equal(entry.nn.TransformerLM, TransformerLM);
    }
  });
});
