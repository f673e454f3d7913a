/**
 * What the sequence-model ONNX tests (rnn.test.ts, rnn-gru-qat.test.ts) share: running exported
 * bytes in onnxruntime-node, and comparing its outputs with lowbit's (largest difference, largest
 * magnitude, argmax agreement).
 * @internal test helper
 */
import assert from 'node:assert/strict';
import type { Tensor } from '../tensor/index.ts';
import { openRnnOnnx, type RnnOnnxOpenOptions } from './rnn-verify.ts';

/** Runs ONNX bytes on named feeds in onnxruntime-node; every output by name (throws when onnxruntime cannot be loaded). */
export async function runRnnOrt(bytes: Uint8Array, feeds: Record<string, Tensor>, options?: RnnOnnxOpenOptions): Promise<Record<string, Tensor>> {
  const runner = await openRnnOnnx(bytes, options);
  if ('skipped' in runner) throw new Error(runner.skipped);
  try {
    return await runner.run(feeds);
  } finally {
    await runner.release();
  }
}

/** max |a − b| over two tensors of one shape. */
export function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let d = 0;
  for (let i = 0; i < a.size; i++) d = Math.max(d, Math.abs(a.data[i]! - b.data[i]!));
  return d;
}

/** max |a|. */
export function maxAbs(a: Tensor): number {
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(a.data[i]!));
  return m;
}

/** Fraction of vectors along the last axis with the same argmax (first index on ties). */
export function argmaxAgreement(a: Tensor, b: Tensor): number {
  const w = a.shape[a.rank - 1]!;
  const n = a.size / w;
  let same = 0;
  for (let p = 0; p < n; p++) {
    let ia = 0;
    let ib = 0;
    for (let c = 1; c < w; c++) {
      if (a.data[p * w + c]! > a.data[p * w + ia]!) ia = c;
      if (b.data[p * w + c]! > b.data[p * w + ib]!) ib = c;
    }
    if (ia === ib) same++;
  }
  return same / n;
}
