/**
 * The fuzz loop of the irnn file tests: truncations and random byte flips of a good file, each
 * either loading (then `use` must run on it) or failing with a typed format error.
 * @internal test helper
 */
import assert from 'node:assert/strict';
import { LowbitFormatError } from '../../format/lowbit.ts';
import type { Rng } from '../../tensor/index.ts';
import { IrnnFormatError } from './io.ts';

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
