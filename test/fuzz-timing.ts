/**
 * Timing of one fuzz case for the readers' fuzz tests (.lowbit, ONNX): the case runs once; a slow
 * outlier (>= half the limit) is timed again up to five times, keeping the fastest run — on a loaded
 * machine a GC pause or a descheduled thread is not the reader's doing, a slow input is slow every
 * time. Asserts the kept time is under the limit and returns the first run's outcome.
 */
import assert from 'node:assert/strict';

/** Timing statistics shared by the fuzz tests' reports. */
export interface FuzzTiming {
  count: number;
  maxMs: number;
  slowest: string;
  rawMaxMs: number;
  retimed: number;
  totalMs: number;
}

/**
 * Runs `attempt` (which turns the reader's typed error into a value and lets anything else throw),
 * records its time in `timing` and asserts it is under `limitMs`. An unexpected throw fails the case
 * with `label` and `expected` (e.g. "a LowbitFormatError") in the message.
 */
export function timeFuzzCase<T>(timing: FuzzTiming, label: string, expected: string, attempt: () => T, limitMs = 100): T {
  const start = performance.now();
  let outcome: T;
  try {
    outcome = attempt();
  } catch (e) {
    assert.fail(`${label}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} is not ${expected}`);
  }
  let ms = performance.now() - start;
  timing.rawMaxMs = Math.max(timing.rawMaxMs, ms);
  for (let retry = 0; retry < 5 && ms >= limitMs / 2; retry++) {
    timing.retimed++;
    const again = performance.now();
    attempt();
    ms = Math.min(ms, performance.now() - again);
  }
  timing.count++;
  timing.totalMs += ms;
  if (ms > timing.maxMs) {
    timing.maxMs = ms;
    timing.slowest = label;
  }
  assert.ok(ms < limitMs, `${label}: took ${ms.toFixed(1)} ms`);
  return outcome;
}

/** A small seeded generator of floats in [0, 1) (mulberry32) for the fuzz tests' mutations: the same cases every run. */
export function fuzzRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
