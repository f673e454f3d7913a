/** Pieces shared by the digit-string transducer benches (digits.ts, int4.ts). */
import type { DigitStringBatch, DigitStrings } from '../../src/data/index.ts';
import { transducer } from '../../src/nn/index.ts';
import { ProgressBar } from '../../src/train/index.ts';

/** Seconds since `from` (a performance.now() reading). */
export const seconds = (from: number): number => (performance.now() - from) / 1000;

/** The reference label sequences of a batch (padding dropped). */
export function labelsOf(batch: DigitStringBatch): number[][] {
  const u = batch.labels.shape[1]!;
  return Array.from(batch.labelLengths.data, (len, b) => Array.from(batch.labels.data.subarray(b * u, b * u + len)));
}

export interface DecodeResult {
  readonly labelErrorRate: number;
  readonly sequenceAccuracy: number;
  readonly strings: number;
  readonly seconds: number;
}

/** Decodes the first `limit` strings with `decode` (batches of 100, a progress bar): label error rate and exact-string rate. */
export function evaluateDecoder(strings: DigitStrings, limit: number, decode: (b: DigitStringBatch) => number[][], label: string): DecodeResult {
  const hyps: number[][] = [];
  const refs: number[][] = [];
  const count = Math.min(limit, strings.length);
  const bar = new ProgressBar({ total: count, label });
  const start = performance.now();
  for (const batch of strings.batches({ batchSize: 100 })) {
    if (refs.length >= count) break;
    const take = Math.min(batch.indices.length, count - refs.length);
    const part = take === batch.indices.length ? batch : strings.batch(batch.indices.subarray(0, take));
    hyps.push(...decode(part));
    refs.push(...labelsOf(part));
    bar.tick(take);
  }
  bar.done();
  const elapsed = seconds(start);
  const exact = hyps.filter((h, i) => h.length === refs[i]!.length && h.every((v, j) => v === refs[i]![j])).length;
  return { labelErrorRate: transducer.labelErrorRate(hyps, refs), sequenceAccuracy: exact / refs.length, strings: refs.length, seconds: elapsed };
}
