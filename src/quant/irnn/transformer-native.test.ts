/**
 * The native loops of IntTransformerLM (native/inttransformer.cc: embedding, LayerNorm, requantization,
 * attention, i-GELU) against its TypeScript loops, the specification: bit for bit on random
 * parameters (wide accumulators, negative and large shifts, both activations, ε floors) and on
 * converted models, through the full forward and the cached steps.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/index.ts';
import { loadAddon } from '../../backend/native/load.ts';
import { TransformerLM } from '../../nn/models/transformer-lm.ts';
import { setIntKernelsReference } from '../../runtime/kernels/index.ts';
import { quantizeMultiplier } from '../../runtime/requantize.ts';
import { Rng, Tensor } from '../../tensor/index.ts';
import { prepareTransformerQat, transformerQatConfig } from '../transformer/qat.ts';
import { layerNormParams } from './layernorm.ts';
import {
  convertTransformerLM, IntTransformerLM, type IntLinearParams, type IntTransformerActivation, type IntTransformerBlockParams, type IntTransformerLMParams,
} from './transformer.ts';

const addon = loadAddon();
const skip = !addon?.intTfAttention ? 'the native addon (with the integer Transformer loops) is not loaded' : false;

function ints(rng: Rng, n: number, lo: number, hi: number): number[] {
  return Array.from({ length: n }, () => lo + Math.floor(rng.uniform() * (hi - lo + 1)));
}

/** A multiplier for a ratio drawn log-uniformly in [lo, hi] (with a random sign when `signed`). */
function ratio(rng: Rng, lo: number, hi: number): { multiplier: number; shift: number } {
  return quantizeMultiplier(lo * (hi / lo) ** rng.uniform());
}

function linear(rng: Rng, inF: number, outF: number, outMin: number, outMax: number, target: number): IntLinearParams {
  // |acc| ~ √in·73·73 for uniform int8 codes; the ratios scatter the outputs around `target`, some clamped.
  const typical = Math.sqrt(inF) * 73 * 73;
  const m = Array.from({ length: outF }, () => ratio(rng, target / typical / 8, (target / typical) * 8));
  return {
    inFeatures: inF, outFeatures: outF, weightBits: 8,
    weight: Int8Array.from(ints(rng, inF * outF, -127, 127)),
    bias: Int32Array.from(ints(rng, outF, -(2 ** 14), 2 ** 14)),
    multiplier: Int32Array.from(m, (x) => x.multiplier), shift: Int32Array.from(m, (x) => x.shift), outMin, outMax,
  };
}

function layerNorm(rng: Rng, E: number, residualScale: number): ReturnType<typeof layerNormParams> {
  const gamma = Int32Array.from(ints(rng, E, -32767, 32767));
  const beta = Int32Array.from(ints(rng, E, -(2 ** 16), 2 ** 16));
  // eps from 0 to large (epsCode up to 2^30): the floor term in every regime.
  const eps = [0, 1e-5, 1e-2, 1e3][Math.floor(rng.uniform() * 4)]!;
  return layerNormParams(gamma, 1.5 / 32767, beta, eps, residualScale, 0.02 + rng.uniform() * 0.05, -127, 127);
}

/** Random integer parameters: E = 12, 3 heads, MLP 20, V = 23, maxContext 7. */
function randomParams(seed: number, activation: IntTransformerActivation): IntTransformerLMParams {
  const rng = new Rng(seed);
  const [V, E, H, F, C] = [23, 12, 3, 20, 7];
  const residualScale = 1e-4;
  const blocks: IntTransformerBlockParams[] = [];
  for (let i = 0; i < 2; i++) {
    const score = ratio(rng, 1, 60);
    const probs = ratio(rng, 2 ** -16 * 100, 2 ** -16 * 300);
    const ctx = ratio(rng, 2 ** -10, 2 ** -5);
    const gelu = ratio(rng, 2 ** -30, 2 ** -22);
    blocks.push({
      ln1: layerNorm(rng, E, residualScale),
      qkv: linear(rng, E, 3 * E, -127, 127, 60),
      scoreMultiplier: score.multiplier, scoreShift: score.shift,
      probsMultiplier: probs.multiplier, probsShift: probs.shift, probsMax: 255,
      contextMultiplier: ctx.multiplier, contextShift: ctx.shift, contextMin: -127, contextMax: 127,
      proj: linear(rng, E, E, -(2 ** 24), 2 ** 24, 2 ** 20),
      ln2: layerNorm(rng, E, residualScale),
      fc1: activation === 'gelu' ? linear(rng, E, F, -(2 ** 20), 2 ** 20, 2 ** 14) : linear(rng, E, F, 0, 127, 60),
      activation,
      geluMultiplier: activation === 'gelu' ? gelu.multiplier : 0, geluShift: activation === 'gelu' ? gelu.shift : 0,
      geluMin: -127, geluMax: 127,
      fc2: linear(rng, F, E, -(2 ** 24), 2 ** 24, 2 ** 20),
    });
  }
  // Token rows: ratios from 2^−3 to 2^12 (shifts down to 19 and, for the largest, small or negative ones).
  const tokens = Array.from({ length: V }, (_, r) => (r === 0 ? quantizeMultiplier(2 ** 33) : ratio(rng, 2 ** -3, 2 ** 12)));
  const headScale = Float32Array.from({ length: V }, () => 1e-4 * (1 + rng.uniform()));
  return {
    vocabSize: V, embedDim: E, numHeads: H, mlpDim: F, maxContext: C, residualScale, tokenBits: 8,
    tokenTable: Int8Array.from(ints(rng, V * E, -127, 127)),
    tokenMultiplier: Int32Array.from(tokens, (m) => m.multiplier), tokenShift: Int32Array.from(tokens, (m) => m.shift),
    positions: Int32Array.from(ints(rng, C * E, -(2 ** 20), 2 ** 20)),
    blocks, lnFinal: layerNorm(rng, E, residualScale),
    head: { inFeatures: E, outFeatures: V, weightBits: 8, weight: Int8Array.from(ints(rng, V * E, -127, 127)), bias: Int32Array.from(ints(rng, V, -999, 999)), scale: headScale },
  };
}

/** Native == TypeScript on ids [batch, C]: all positions, and the cached steps (prompt of 2, then one id), caches equal too. */
function assertSame(int: IntTransformerLM, ids: Int32Array, batch: number, what: string): void {
  const C = ids.length / batch;
  const native = int.logitsAll(ids, batch);
  assert.deepEqual(native, int.logitsAll(ids, batch, { native: false }), `${what}: logitsAll`);
  const a = int.createCache(batch);
  const b = int.createCache(batch);
  const cut = (from: number, to: number): Int32Array => {
    const out = new Int32Array(batch * (to - from));
    for (let n = 0; n < batch; n++) out.set(ids.subarray(n * C + from, n * C + to), n * (to - from));
    return out;
  };
  for (const [from, to] of [[0, 2], ...Array.from({ length: C - 2 }, (_, k) => [k + 2, k + 3])] as [number, number][]) {
    assert.deepEqual(int.logitsCached(cut(from, to), a), int.logitsCached(cut(from, to), b, { native: false }), `${what}: cached step at ${from}`);
  }
  assert.deepEqual(a.keys, b.keys, `${what}: cached keys`);
  assert.deepEqual(a.values, b.values, `${what}: cached values`);
}

describe('IntTransformerLM native loops', { skip }, () => {
  it('equal the TypeScript loops bit for bit on random parameters (i-GELU and ReLU, 6 seeds)', () => {
    for (let seed = 1; seed <= 6; seed++) {
      const int = new IntTransformerLM(randomParams(seed, seed % 2 === 0 ? 'relu' : 'gelu'));
      assert.equal(int.loopsBackend, 'native');
      const rng = new Rng(100 + seed);
      const ids = Int32Array.from(ints(rng, 4 * 7, 0, 22));
      assertSame(int, ids, 4, `seed ${seed}`);
      // Not vacuous: the residual stream and the logits spread over many values (not saturated to constants).
      const residual = int.residual(ids, 4);
      assert.deepEqual(residual, int.residual(ids, 4, { native: false }));
      assert.ok(new Set(residual).size > residual.length * 0.9, `seed ${seed}: only ${new Set(residual).size} distinct residual values`);
      const logits = int.logitsAll(ids, 4);
      assert.ok(new Set(logits).size > logits.length / 4, `seed ${seed}: only ${new Set(logits).size} distinct logits`);
    }
  });

  it('equal the TypeScript loops on converted models (gelu-tanh w8a8, relu w4a8)', () => {
    for (const [activation, quant] of [['gelu-tanh', 'w8a8'], ['relu', 'w4a8']] as const) {
      const model = new TransformerLM({ vocabSize: 30, maxContext: 6, embedDim: 16, numLayers: 2, numHeads: 4, mlpDim: 32, activation, rng: new Rng(3) });
      prepareTransformerQat(model, transformerQatConfig(quant)!);
      const batch = (seed: number, n: number): Tensor => new Tensor(Int32Array.from(ints(new Rng(seed), n * 6, 0, 29)), [n, 6]);
      model.train();
      noGrad(() => model.forward(batch(4, 16)));
      model.eval();
      const int = convertTransformerLM(model, [batch(5, 16)]);
      assertSame(int, batch(6, 5).data as Int32Array, 5, `${activation} ${quant}`);
    }
  });

  it('fall back to the TypeScript loops when forced or when a shift is out of the kernels\' range', () => {
    const params = randomParams(9, 'gelu');
    const int = new IntTransformerLM(params);
    setIntKernelsReference(true);
    try {
      assert.match(int.loopsBackend, /^typescript \(the native addon is not loaded \(or the reference kernels are forced\)\)/);
    } finally {
      setIntKernelsReference(false);
    }
    assert.equal(int.loopsBackend, 'native');
    const far = new IntTransformerLM({ ...params, blocks: [{ ...params.blocks[0]!, scoreShift: 101 }, params.blocks[1]!] });
    assert.equal(far.loopsBackend, 'typescript (requantization shift 101 is outside [-32, 100])');
    const ids = Int32Array.from(ints(new Rng(1), 7, 0, 22));
    assert.deepEqual(far.logitsAll(ids, 1), far.logitsAll(ids, 1, { native: false }));
  });
});
