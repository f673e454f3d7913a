/**
 * Helpers of the irnn tests: the fuzz loop of the file tests, a tiny learning task, and the
 * real-arithmetic pieces (rounding, PWL, random integer parameters) of the fixed-point simulations.
 * @internal test helper
 */
import assert from 'node:assert/strict';
import { LowbitFormatError } from '../../format/lowbit.ts';
import { Adam } from '../../optim/adam.ts';
import { mseLoss, randn, Tensor, type Rng } from '../../tensor/index.ts';
import { IrnnFormatError } from './io.ts';
import type { Module } from '../../nn/module.ts';
import { quantizeMultiplier } from '../../runtime/requantize.ts';
import type { IntPwl } from './pwl.ts';

/**
 * Feeds `good` cut at `cuts` bytes, then `count` copies with 1–3 random bytes replaced, to `use`
 * (which loads the bytes and runs what loaded). A throw that is not an IrnnFormatError or a
 * LowbitFormatError fails the test. Returns how many loaded and how many were refused.
 */
export function fuzzIrnnBytes(
  good: Uint8Array,
  rng: Rng,
  count: number,
  use: (bytes: Uint8Array) => void,
  cuts: readonly number[] = [0, 8, 100, good.length >> 1, good.length - 1],
): { loaded: number; refused: number } {
  let loaded = 0;
  let refused = 0;
  const attempt = (bytes: Uint8Array): void => {
    try {
      use(bytes);
      loaded++;
    } catch (e) {
      assert.ok(e instanceof IrnnFormatError || e instanceof LowbitFormatError, `untyped error: ${String(e)}`);
      refused++;
    }
  };
  for (const cut of cuts) attempt(good.subarray(0, cut));
  for (let i = 0; i < count; i++) {
    const bytes = good.slice();
    const flips = 1 + Math.floor(rng.uniform() * 3);
    for (let f = 0; f < flips; f++) bytes[Math.floor(rng.uniform() * bytes.length)] = Math.floor(rng.uniform() * 256);
    attempt(bytes);
  }
  return { loaded, refused };
}

/**
 * Trains `model` (a QuantLSTM or QuantGRU with 2 inputs and 8 hidden units) for 40 Adam steps at lr 0.03 on a
 * tiny sequence task — per step, the tanh-squashed running mean of the first input channel, with
 * alternating signs over the 8 outputs — and asserts the loss stays finite and drops by more than
 * half. Inputs [6, 16, 2] are drawn from `rng`.
 */
export function assertLearnsRunningMean(model: Pick<Module, 'parameters'> & { forward(x: Tensor): readonly [Tensor, unknown] }, rng: Rng): void {
  const x = randn([6, 16, 2], { rng });
  const target = new Float32Array(6 * 16 * 8);
  for (let n = 0; n < 16; n++) {
    let s = 0;
    for (let t = 0; t < 6; t++) {
      s += x.data[(t * 16 + n) * 2]!;
      for (let k = 0; k < 8; k++) target[(t * 16 + n) * 8 + k] = Math.tanh(s / (t + 1)) * (k % 2 === 0 ? 0.5 : -0.5);
    }
  }
  const y = new Tensor(target, [6, 16, 8]);
  const opt = new Adam(model.parameters(), { lr: 0.03 });
  const losses: number[] = [];
  for (let step = 0; step < 40; step++) {
    opt.zeroGrad();
    const loss = mseLoss(model.forward(x)[0], y);
    loss.backward();
    opt.step();
    losses.push(loss.item());
  }
  assert.ok(losses.every(Number.isFinite));
  assert.ok(losses.at(-1)! < losses[0]! / 2, `loss ${losses[0]} -> ${losses.at(-1)}`);
}

const clampReal = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/** Round half away from zero (requantize.ts's rounding), in real arithmetic. */
export function roundAway(v: number): number {
  return Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
}

/** A float64 tensor of `shape` with values uniform in [−scale, scale) drawn from `rng`. */
export function random64(shape: number[], rng: Rng, scale = 1): Tensor {
  const data = new Float64Array(shape.reduce((p, d) => p * d, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rng.uniform() * 2 - 1) * scale;
  return new Tensor(data, shape);
}

/** `n` int8 codes uniform in [−top, top] drawn from `rng`. */
export function randomInt8(rng: Rng, n: number, top = 127): Int8Array {
  return Int8Array.from({ length: n }, () => Math.floor(rng.uniform() * (2 * top + 1)) - top);
}

/**
 * The PWL table evaluated on a real input (a Q3.12 value): clamped to the knot range, result
 * rounded to Q0.15 ties up and clamped to the table's output range.
 */
export function pwlReal(t: IntPwl, zReal: number): number {
  const x = clampReal(zReal, t.knots[0]! / 4096, t.knots[t.knots.length - 1]! / 4096);
  let k = 0;
  while (k < t.values.length - 1 && t.knots[k + 1]! / 4096 <= x) k++;
  const y = t.values[k]! / 32768 + (t.slopes[k]! / 32768) * (x - t.knots[k]! / 4096);
  return clampReal(Math.floor(y * 32768 + 0.5), t.outputMin, t.outputMax) / 32768;
}

/** `rows` requantization multipliers for ratios log-uniform in [lo, hi), drawn from `rng`. */
export function randomRowMultipliers(rng: Rng, rows: number, lo: number, hi: number): { m: Int32Array; s: Int32Array } {
  const m = new Int32Array(rows);
  const s = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const q = quantizeMultiplier(lo * (hi / lo) ** rng.uniform());
    m[r] = q.multiplier;
    s[r] = q.shift;
  }
  return { m, s };
}
