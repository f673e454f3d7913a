/**
 * The native loops of IntTransformerLM (native/inttransformer.cc: embedding, LayerNorm, requantization,
 * attention, i-GELU) against its TypeScript loops, the specification: bit for bit on random
 * parameters (wide accumulators, negative and large shifts, both activations, ε floors, odd sizes that
 * leave vector tails) and on converted models, through the full forward and the cached steps; with the
 * vector loops (AVX-512, or AVX2 under LOWBIT_ISA=avx2) and the scalar ones (`addon.intTfLoops`), on 1 and 2 threads. The kernels alone against
 * BigInt closed forms on edge values (every requantization shift regime, int32 extremes, constant
 * LayerNorm rows). Tests tagged [every-isa] re-run under LOWBIT_ISA=avx2 and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/index.ts';
import { loadAddon } from '../../backend/native/load.ts';
import { setNativeThreads } from '../../backend/native/index.ts';
import { runEveryIsaTests } from '../../backend/native/isa-testing.ts';
import { TransformerLM } from '../../nn/models/transformer-lm.ts';
import { setIntKernelsReference } from '../../runtime/kernels/index.ts';
import { quantizeMultiplier } from '../../runtime/requantize.ts';
import { Rng, Tensor } from '../../tensor/index.ts';
import { prepareTransformerQat, transformerQatConfig } from '../transformer/qat.ts';
import { intLayerNormRow, layerNormParams, sqrtSizeConstant, type IntLayerNormParams } from './layernorm.ts';
import {
  convertTransformerLM, IntTransformerLM, setIntTransformerFusedCalls, setIntTransformerFusedForward, type IntLinearParams, type IntTransformerActivation, type IntTransformerBlockParams, type IntTransformerLMParams,
} from './transformer.ts';

const addon = loadAddon();
const skip = !addon?.intTfAttention || !addon.intTfLoops ? 'the native addon (with the integer Transformer loops) is not loaded' : false;
const forcedIsa = process.env.LOWBIT_ISA !== undefined && process.env.LOWBIT_ISA !== '';
/** The vector loops the addon runs when allowed: 'avx512' on an AVX-512 CPU, 'avx2' under LOWBIT_ISA=avx2 or on an AVX2 CPU. */
const vectorKind = addon?.intTfLoops?.(true) ?? 'scalar';
/** Whether the addon has vector loops for this CPU / ISA (AVX-512 or AVX2). */
const vectorLoops = vectorKind === 'avx512' || vectorKind === 'avx2';

/** The calls of addon.intTfForward so far (the one-call forward; counted to check that it is the path that runs). */
let forwardCalls = 0;
if (addon?.intTfForward) {
  const inner = addon.intTfForward.bind(addon);
  addon.intTfForward = (...args: Parameters<typeof inner>): void => {
    forwardCalls++;
    inner(...args);
  };
}

/**
 * Runs `body` with every loop kind the machine has (the AVX-512 loops, then the scalar ones), three call
 * forms (the whole forward in one call, `addon.intTfForward`; the fused per-op calls, fc1 + i-GELU and the
 * head; the per-op calls of before), on 1 and 2 threads, checking that the kind asked for is the one that
 * runs (`oneCall` false: the model does not fit the one-call forward, which must then not run; null: the body
 * does not run a model); restores
 * the defaults.
 */
function forEachLoops(body: (what: string) => void, oneCall: boolean | null = true): void {
  const threads = addon!.info().threads;
  try {
    for (const vector of vectorLoops ? [true, false] : [false]) {
      assert.equal(addon!.intTfLoops!(vector), vector ? vectorKind : 'scalar');
      for (const calls of ['one call', 'fused calls', 'per-op calls'] as const) {
        setIntTransformerFusedCalls(calls !== 'per-op calls');
        setIntTransformerFusedForward(calls === 'one call');
        for (const n of [1, 2]) {
          setNativeThreads(n);
          const before = forwardCalls;
          body(`${vector ? vectorKind : 'scalar'} loops, ${calls}, ${n} thread(s)`);
          if (oneCall !== null) assert.equal(forwardCalls > before, calls === 'one call' && oneCall, `${calls}: intTfForward ran ${forwardCalls - before} times`);
        }
      }
    }
  } finally {
    addon!.intTfLoops!(true);
    setIntTransformerFusedCalls(true);
    setIntTransformerFusedForward(true);
    setNativeThreads(threads);
  }
}

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

/** Model sizes: vocabulary, width, heads, MLP width, maxContext. */
interface Shape {
  readonly V: number;
  readonly E: number;
  readonly H: number;
  readonly F: number;
  readonly C: number;
}

/** The first tests' sizes (head width 4). */
const SMALL: Shape = { V: 23, E: 12, H: 3, F: 20, C: 7 };
/**
 * Sizes that leave a tail in every vector loop: width 74 (9 vectors of 8 and 2), head width 37
 * (16 + 16 + 5), MLP 45, up to 19 keys per query (8 + 8 + 3 scores).
 */
const ODD: Shape = { V: 29, E: 74, H: 2, F: 45, C: 19 };

/**
 * Random integer parameters of `shape` (default SMALL). `narrowShift`: fc2's row 0 and the first
 * block's proj row 1 get requantization shifts below 16 (ratios ≥ 2^15, their outputs mostly clamped),
 * which the vector loops leave to the scalar ones.
 */
function randomParams(seed: number, activation: IntTransformerActivation, shape: Shape = SMALL, narrowShift = false): IntTransformerLMParams {
  const rng = new Rng(seed);
  const { V, E, H, F, C } = shape;
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
  if (narrowShift) {
    const wide = quantizeMultiplier(2 ** 17);
    for (const l of [blocks[0]!.fc2, blocks[1]!.fc2]) {
      l.multiplier[0] = wide.multiplier;
      l.shift[0] = wide.shift;
    }
    blocks[0]!.proj.multiplier[1] = quantizeMultiplier(2 ** 20).multiplier;
    blocks[0]!.proj.shift[1] = quantizeMultiplier(2 ** 20).shift;
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

/**
 * `p` with every requantization multiplier set to 2^30 (each ratio M·2^−n moved to the power of two at or below it,
 * the shifts kept): rq(a; 2^30, n) = round(a·2^(30−n)) then ties whenever the low n − 30 bits of a are 10…0, so the
 * forward meets many exact halves and a change to the half-away-from-zero rounding shows in its integers.
 */
function tieHeavy(p: IntTransformerLMParams): IntTransformerLMParams {
  const pow = 2 ** 30;
  const linear = (l: IntLinearParams): IntLinearParams => ({ ...l, multiplier: l.multiplier.map(() => pow) });
  const ln = (l: IntLayerNormParams): IntLayerNormParams => ({ ...l, multiplier: pow });
  return {
    ...p, tokenMultiplier: p.tokenMultiplier.map(() => pow), lnFinal: ln(p.lnFinal),
    blocks: p.blocks.map((b) => ({
      ...b, ln1: ln(b.ln1), ln2: ln(b.ln2), qkv: linear(b.qkv), proj: linear(b.proj), fc1: linear(b.fc1), fc2: linear(b.fc2),
      scoreMultiplier: pow, probsMultiplier: pow, contextMultiplier: pow, geluMultiplier: b.activation === 'gelu' ? pow : 0,
    })),
  };
}

/** Native == TypeScript on ids [batch, C]: all positions, and the cached steps (prompt of 2, then one id), caches equal too. */
function assertSame(int: IntTransformerLM, ids: Int32Array, batch: number, what: string): void {
  const C = ids.length / batch;
  const native = int.logitsAll(ids, batch);
  assert.deepEqual(native, int.logitsAll(ids, batch, { native: false }), `${what}: logitsAll`);
  assert.deepEqual(int.logits(ids, batch), int.logits(ids, batch, { native: false }), `${what}: logits (last positions)`);
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
  it('[every-isa] run the vector loops of the ISA: AVX2 under LOWBIT_ISA=avx2, none under scalar, AVX-512 on an AVX-512 CPU', () => {
    const isa = process.env.LOWBIT_ISA;
    if (isa === 'avx2') assert.equal(vectorKind, 'avx2');
    else if (isa === 'scalar') assert.equal(vectorKind, 'scalar');
    else if (addon!.info().isa === 'avx512') assert.equal(vectorKind, 'avx512');
    assert.equal(addon!.intTfLoops!(false), 'scalar');
    assert.equal(addon!.intTfLoops!(true), vectorKind);
  });

  it('[every-isa] equal the TypeScript loops bit for bit on random parameters (i-GELU and ReLU, 6 seeds, two shapes, AVX-512 and scalar loops, 1 and 2 threads)', () => {
    for (let seed = 1; seed <= 6; seed++) {
      const activation = seed % 2 === 0 ? 'relu' : 'gelu';
      const cases = [
        { shape: SMALL, int: new IntTransformerLM(randomParams(seed, activation)), batch: 4 },
        { shape: ODD, int: new IntTransformerLM(randomParams(seed, activation, ODD, seed % 3 === 0)), batch: 3 },
      ];
      for (const { shape, int, batch } of cases) {
        assert.equal(int.loopsBackend, 'native');
        const rng = new Rng(100 + seed);
        const ids = Int32Array.from(ints(rng, batch * shape.C, 0, shape.V - 1));
        const residualTs = int.residual(ids, batch, { native: false });
        forEachLoops((loops) => {
          const what = `seed ${seed}, E ${shape.E}, ${loops}`;
          assertSame(int, ids, batch, what);
          const residual = int.residual(ids, batch);
          assert.deepEqual(residual, residualTs, `${what}: residual`);
          // Not vacuous: the residual stream and the logits spread over many values (not saturated to constants).
          assert.ok(new Set(residual).size > residual.length * 0.9, `${what}: only ${new Set(residual).size} distinct residual values`);
          const logits = int.logitsAll(ids, batch);
          assert.ok(new Set(logits).size > logits.length / 4, `${what}: only ${new Set(logits).size} distinct logits`);
        });
      }
    }
  });

  it('[every-isa] equal the TypeScript loops on a batch that splits every loop over 2 threads (2048 rows)', () => {
    const int = new IntTransformerLM(randomParams(7, 'gelu', { ...ODD, C: 16 }, true));
    const ids = Int32Array.from(ints(new Rng(8), 128 * 16, 0, ODD.V - 1));
    const expected = int.residual(ids, 128, { native: false });
    forEachLoops((loops) => assert.deepEqual(int.residual(ids, 128), expected, loops));
  });

  it('[every-isa] the one-call forward equals the TypeScript loops over uneven sequence groups and head chunks (37 sequences of 19 and of 1)', () => {
    // 19 positions: groups of 6 sequences (7 groups, the last of 1), head chunks of 24 rows (114 = 4·24 + 18);
    // the cached single steps: groups of 18 (1 thread: 18, 18, 1) or 9 sequences (2 threads: 9, 9, 9, 9, 1).
    const int = new IntTransformerLM(randomParams(11, 'gelu', ODD, true));
    const ids = Int32Array.from(ints(new Rng(12), 37 * ODD.C, 0, ODD.V - 1));
    forEachLoops((loops) => assertSame(int, ids, 37, loops));
    const relu = new IntTransformerLM(randomParams(12, 'relu', ODD));
    forEachLoops((loops) => assertSame(relu, ids, 37, `relu, ${loops}`));
    // Exact halves in every requantization: the rounding of ties is part of what must agree.
    const ties = new IntTransformerLM(tieHeavy(randomParams(15, 'gelu', ODD)));
    forEachLoops((loops) => assertSame(ties, ids, 37, `ties, ${loops}`));
  });

  it('[every-isa] a model outside the one-call forward (ReLU codes above 127) runs the per-op calls, with the same integers', () => {
    const params = randomParams(13, 'relu');
    const wide = new IntTransformerLM({ ...params, blocks: params.blocks.map((b) => ({ ...b, fc1: { ...b.fc1, outMax: 255 } })) });
    const ids = Int32Array.from(ints(new Rng(14), 4 * SMALL.C, 0, SMALL.V - 1));
    forEachLoops((loops) => assertSame(wide, ids, 4, loops), false);
  });

  it('[every-isa] equal the TypeScript loops on converted models (gelu-tanh w8a8, relu w4a8)', () => {
    for (const [activation, quant] of [['gelu-tanh', 'w8a8'], ['relu', 'w4a8']] as const) {
      const model = new TransformerLM({ vocabSize: 30, maxContext: 11, embedDim: 40, numLayers: 2, numHeads: 2, mlpDim: 72, activation, rng: new Rng(3) });
      prepareTransformerQat(model, transformerQatConfig(quant)!);
      const batch = (seed: number, n: number): Tensor => new Tensor(Int32Array.from(ints(new Rng(seed), n * 11, 0, 29)), [n, 11]);
      model.train();
      noGrad(() => model.forward(batch(4, 16)));
      model.eval();
      const int = convertTransformerLM(model, [batch(5, 16)]);
      forEachLoops((loops) => assertSame(int, batch(6, 5).data as Int32Array, 5, `${activation} ${quant}, ${loops}`));
    }
  });

  it('[every-isa] kernels equal BigInt closed forms on edge values: the Linear output stage (3 modes), i-GELU, LayerNorm', () => {
    const rng = new Rng(77);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.uniform() * xs.length)]!;
    const shifts = [-32, -5, 0, 1, 15, 16, 17, 31, 40, 62, 63, 64, 100];
    const multipliers = [0, 1, -1, 2 ** 30, 2 ** 31 - 1, -(2 ** 31), 1518500250, -1518500250];
    const accEdges = [-(2 ** 31), -(2 ** 31) + 1, -1, 0, 1, 2 ** 31 - 1, 2 ** 24, -(2 ** 24)];
    let vectorCalls = 0;
    forEachLoops((loops) => {
      for (let round = 0; round < 60; round++) {
        // One shift regime per call: all in [16, 63] (the vector loop), or one outside (the scalar fallback).
        const R = 1 + Math.floor(rng.uniform() * 21);
        const M = 1 + Math.floor(rng.uniform() * 5);
        const inVector = round % 3 !== 0;
        const shift = Int32Array.from({ length: R }, (_, r) => (inVector || r > 0 ? 16 + Math.floor(rng.uniform() * 48) : pick(shifts)));
        if (inVector && round % 2) shift[0] = pick([16, 63]);
        const mult = Int32Array.from({ length: R }, () => (rng.uniform() < 0.3 ? pick(multipliers) : Math.floor((rng.uniform() * 2 - 1) * 2 ** 31)));
        const bias = Int32Array.from({ length: R }, () => (rng.uniform() < 0.3 ? pick(accEdges) : Math.floor((rng.uniform() * 2 - 1) * 2 ** 31)));
        const acc = Int32Array.from({ length: M * R }, () => (rng.uniform() < 0.3 ? pick(accEdges) : Math.floor((rng.uniform() * 2 - 1) * 2 ** (1 + rng.uniform() * 30))));
        const [lo, hi] = pick([[-(2 ** 24), 2 ** 24], [-127, 127], [-128, 127], [0, 255], [-(2 ** 31), 2 ** 31 - 1]]);
        const expected = Int32Array.from(acc, (a, i) => Number(clampBig(rqBig(BigInt(a) + BigInt(bias[i % R]!), mult[i % R]!, shift[i % R]!), lo, hi)));
        const out0 = new Int32Array(M * R);
        addon!.intTfRequantize!(Int32Array.of(M, R, lo, hi, 0), acc, bias, mult, shift, out0);
        assert.deepEqual(out0, expected, `${loops}, round ${round}: mode 0`);
        const residual = Int32Array.from({ length: M * R }, () => Math.floor((rng.uniform() * 2 - 1) * 2 ** 24));
        const out1 = residual.slice();
        addon!.intTfRequantize!(Int32Array.of(M, R, lo, hi, 1), acc, bias, mult, shift, out1);
        assert.deepEqual(out1, Int32Array.from(expected, (v, i) => Math.min(2 ** 24, Math.max(-(2 ** 24), v + residual[i]!))), `${loops}, round ${round}: mode 1`);
        if (lo >= -128 && hi <= 127) {
          const out2 = new Int8Array(M * R);
          addon!.intTfRequantize!(Int32Array.of(M, R, lo, hi, 2), acc, bias, mult, shift, out2);
          assert.deepEqual(out2, Int8Array.from(expected), `${loops}, round ${round}: mode 2`);
        }
        // i-GELU: the runtime's constants (vector loop when the shift allows) and wide ones (|g| >= 2^48: scalar).
        const [erfClip, erfA] = round % 4 === 3 ? [2 ** 20, -(2 ** 20)] : [7246, -9464];
        const count = 1 + Math.floor(rng.uniform() * 40);
        const tEdges = [-(2 ** 20), 2 ** 20, 0, 1, -1, erfClip, -erfClip, erfClip + 1, -erfClip - 1, erfClip - 1].map((v) => Math.max(-(2 ** 20), Math.min(2 ** 20, v)));
        const t = Int32Array.from({ length: count }, () => (rng.uniform() < 0.3 ? pick(tEdges) : Math.floor((rng.uniform() * 2 - 1) * 2 ** 20)));
        const gShift = inVector ? 16 + Math.floor(rng.uniform() * 48) : pick(shifts);
        const gMult = pick([...multipliers, Math.floor(rng.uniform() * 2 ** 31)]);
        const [glo, ghi] = pick([[-127, 127], [-128, 127], [0, 0]]);
        const gelu = new Int8Array(count);
        addon!.intTfGelu!(Int32Array.of(count, gMult, gShift, glo, ghi, erfClip, erfA), t, gelu);
        assert.deepEqual(gelu, Int8Array.from(t, (v) => Number(clampBig(rqBig(geluBig(v, erfClip, erfA), gMult, gShift), glo, ghi))), `${loops}, round ${round}: i-GELU`);
        if (inVector && vectorLoops && loops.startsWith(vectorKind)) vectorCalls++;
      }
      // LayerNorm: sizes 1..33 and 80 (tails), constant rows, one large value, |x| = 2^24, ε floors, shifts in and out of [16, 63].
      for (const D of [1, 2, 7, 8, 9, 15, 16, 17, 33, 80]) {
        for (const [epsCode, lnShift] of [[0, 30], [1, 16], [2 ** 30, 63], [5, 12], [0, 70]] as const) {
          const gamma = Int32Array.from({ length: D }, () => (rng.uniform() < 0.2 ? pick([-32767, 32767, 0]) : Math.floor((rng.uniform() * 2 - 1) * 32767)));
          const beta = Int32Array.from({ length: D }, () => Math.floor((rng.uniform() * 2 - 1) * 2 ** 16));
          const p: IntLayerNormParams = { size: D, gamma, beta, epsCode, multiplier: pick([1518500250, 2 ** 30, 2 ** 31 - 1, 1]), shift: lnShift, outMin: -127, outMax: 127 };
          const rows = [
            Int32Array.from({ length: D }, () => Math.floor((rng.uniform() * 2 - 1) * 2 ** (4 + rng.uniform() * 20))),
            new Int32Array(D).fill(pick([0, 5, -(2 ** 24), 2 ** 24])),
            Int32Array.from({ length: D }, (_, i) => (i === D >> 1 ? pick([2 ** 24, -(2 ** 24)]) : pick([0, 1, -1]))),
            Int32Array.from({ length: D }, () => pick([2 ** 24, -(2 ** 24)])),
          ];
          const x = new Int32Array(rows.length * D);
          rows.forEach((r, i) => x.set(r, i * D));
          const got = new Int8Array(x.length);
          addon!.intTfLayerNorm!(Int32Array.of(rows.length, D, epsCode, p.multiplier, p.shift, sqrtSizeConstant(D), p.outMin, p.outMax), gamma, beta, x, got);
          const want = new Int8Array(x.length);
          for (let r = 0; r < rows.length; r++) intLayerNormRow(p, x, r * D, want, r * D);
          assert.deepEqual(got, want, `${loops}: LayerNorm D ${D}, eps ${epsCode}, shift ${lnShift}`);
        }
      }
      // Ties of n = round(v·sqrtSize / r): D = 4 (sqrtSize = 2^21), c = Dx − S = (16386, 2, −8194, −8194) = v (k = 0) and
      // ε filling Q = Σv² + 64ε to 2^30 + 16, so r = 2^15·2^8 and v/4 = 4096.5, 0.5, −2048.5 (half away from zero:
      // n = 4097, 1, −2049); β puts each y = ⌊(n + β + 128) / 256⌋ next to a step, so n one off changes y.
      for (const offset of [0, 1000, -(2 ** 20)]) {
        const x = Int32Array.of(4097, 1, -2048, -2048).map((v) => v + offset);
        const out = new Int8Array(4);
        addon!.intTfLayerNorm!(Int32Array.of(1, 4, 10483712, 2 ** 30, 30, sqrtSizeConstant(4), -127, 127), Int32Array.of(1, 1, 1, 1), Int32Array.of(-3969, 127, 1920, 1920), x, out);
        assert.deepEqual([...out], [1, 1, -1, -1], `${loops}: LayerNorm ties, offset ${offset}`);
      }
    }, null);
    if (vectorLoops) assert.ok(vectorCalls > 50, `only ${vectorCalls} calls in the vector regime`);
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

  it('the fused and int8 entry points refuse malformed arguments with typed errors', () => {
    const acc = new Int32Array(6);
    const row = new Int32Array(3);
    // fc1 + i-GELU: GELU inputs wider than ±2^20, an output clamp outside int8, a short output.
    assert.throws(() => addon!.intTfRequantizeGelu!(Int32Array.of(2, 3, -(2 ** 21), 0, 1, 30, -127, 127, 7246, -9464), acc, row, row, Int32Array.of(30, 30, 30), new Int8Array(6)), /intTfRequantizeGelu: buffer sizes, types or values/);
    assert.throws(() => addon!.intTfRequantizeGelu!(Int32Array.of(2, 3, -5, 5, 1, 30, -129, 127, 7246, -9464), acc, row, row, Int32Array.of(30, 30, 30), new Int8Array(6)), /intTfRequantizeGelu/);
    assert.throws(() => addon!.intTfRequantizeGelu!(Int32Array.of(2, 3, -5, 5, 1, 30, -127, 127, 7246, -9464), acc, row, row, Int32Array.of(30, 30, 30), new Int8Array(5)), /intTfRequantizeGelu/);
    assert.throws(() => addon!.intTfRequantizeGelu!(Int32Array.of(2, 3, -5, 5, 1, 101, -127, 127, 7246, -9464), acc, row, row, Int32Array.of(30, 30, 30), new Int8Array(6)), /outside \[-32, 100\]/);
    // head: sizes that do not match the dims.
    assert.throws(() => addon!.intTfHead!(Int32Array.of(2, 3), acc, row, new Float32Array(2), new Float32Array(6)), /intTfHead: buffer sizes/);
    assert.throws(() => addon!.intTfHead!(Int32Array.of(2, 3), acc, row, new Float32Array(3), new Float32Array(7)), /intTfHead: buffer sizes/);
    // attention on int8 codes: a qkv of the wrong length.
    const dims = Int32Array.of(1, 2, 0, 2, 1, 4, 1 << 30, 30, 1 << 30, 30, 255, 1 << 30, 30, -127, 127);
    assert.throws(() => addon!.intTfAttention!(dims, new Int8Array(2 * 12 - 1), new Int8Array(8), new Int8Array(8), new Int8Array(8)), /intTfAttention: buffer sizes/);
    // The one-call forward: a valid call through the model, then single defects in copies of its arguments.
    const int = new IntTransformerLM(randomParams(16, 'gelu'));
    let captured: Parameters<NonNullable<NonNullable<typeof addon>['intTfForward']>> | null = null;
    const inner = addon!.intTfForward!;
    addon!.intTfForward = (...args) => {
      captured = args;
      inner(...args);
    };
    try {
      int.logitsAll(Int32Array.from(ints(new Rng(3), 2 * SMALL.C, 0, SMALL.V - 1)), 2);
    } finally {
      addon!.intTfForward = inner;
    }
    const [fdims, fids, embed, blocks, lnFinal, head, x, logits] = captured!;
    const call = (change: (a: unknown[]) => void): void => {
      const a: unknown[] = [fdims.slice(), fids.slice(), [...embed], blocks.map((b) => [b[0]!.slice(), ...b.slice(1)]), [...lnFinal], [...head], x.slice(), logits!.slice()];
      change(a);
      (inner as (...args: unknown[]) => void)(...a);
    };
    call(() => {}); // the copies themselves are fine
    assert.throws(() => call((a) => ((a[0] as Int32Array)[1] = SMALL.C + 1)), /intTfForward: dims out of range/);
    assert.throws(() => call((a) => ((a[1] as Int32Array)[3] = SMALL.V)), /intTfForward: word id 23 is outside \[0, V\)/);
    assert.throws(() => call((a) => ((a[3] as unknown[][])[1]![5] = new Int8Array(3))), /intTfForward: block 1: qkv must hold \d+ bytes/);
    assert.throws(() => call((a) => ((a[3] as unknown[][])[0]![9] = Int32Array.of(101, ...new Int32Array(3 * SMALL.E - 1)))), /block 0: qkv: a requantization shift is outside \[-32, 100\]/);
    assert.throws(() => call((a) => (((a[3] as unknown[][])[0]![0] as Int32Array)[24] = 128)), /block 0: the qkv codes must be int8/);
    assert.throws(() => call((a) => (((a[3] as unknown[][])[0]![0] as Int32Array)[28] = 2 ** 21)), /block 0: fc1's output range/);
    assert.throws(() => call((a) => ((a[3] as unknown[][])[0]![1] = Int32Array.from({ length: SMALL.E }, () => 40000))), /block 0: ln1: \|gamma\| must be <= 32767/);
    assert.throws(() => call((a) => ((a[3] as unknown[][])[0]!.pop())), /block 0: the block must be an array of 27/);
    assert.throws(() => call((a) => ((a[5] as unknown[])[3] = new Float32Array(SMALL.V - 1))), /intTfForward: head scale must hold 23 values/);
    assert.throws(() => call((a) => (a[7] = new Float32Array(1))), /intTfForward: logits must hold/);
    assert.throws(() => call((a) => (a[6] = new Float32Array(x.length))), /intTfForward: x must be an Int32Array/);
    assert.throws(() => addon!.intTfLoops!('yes' as unknown as boolean), /intTfLoops: the argument must be a boolean/);
    assert.equal(addon!.intTfLoops!(), vectorKind);
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : false }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.ok(passed >= 7, `expected the 7 tagged tests to pass, got ${passed}:\n${output}`);
    });
  }
});

/** round(a·m·2^−s), half away from zero, exactly (s may be negative). */
function rqBig(a: bigint, m: number, s: number): bigint {
  const p = a * BigInt(m);
  if (s <= 0) return p * 2n ** BigInt(-s);
  const magnitude = p < 0n ? -p : p;
  const r = (magnitude + 2n ** BigInt(s - 1)) >> BigInt(s);
  return p < 0n ? -r : r;
}

function clampBig(v: bigint, lo: number, hi: number): bigint {
  return v < BigInt(lo) ? BigInt(lo) : v > BigInt(hi) ? BigInt(hi) : v;
}

/** i-GELU's product t·(2^15 + intErf(t)) with the erf constants given (floor division by 2^24). */
function geluBig(t: number, erfClip: number, erfA: number): bigint {
  const c = BigInt(Math.min(Math.abs(t), erfClip) - erfClip);
  const erf = ((BigInt(erfA) * c * c + 2n ** 23n) >> 24n) + 32768n;
  return BigInt(t) * (32768n + (t < 0 ? -erf : erf));
}
