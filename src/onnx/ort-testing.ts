/**
 * Test helpers of the ONNX export tests: run exported bytes in onnxruntime-node and compare logits.
 * @internal test helper
 */
import type { Tensor } from '../tensor/index.ts';
import { argmaxRows } from '../eval/attack.ts';
import { openOnnx } from './verify.ts';

/** The model's output on `x` in onnxruntime-node (graph optimisation `level`); throws when it is missing. */
export async function runOrt(bytes: Uint8Array, x: Tensor, level: 'all' | 'disabled' = 'all'): Promise<Float32Array> {
  const runner = await openOnnx(bytes, x.shape.slice(1), { graphOptimizationLevel: level });
  if ('skipped' in runner) throw new Error(runner.skipped);
  try {
    return await runner.run(x.data as Float32Array, x.shape[0]!);
  } finally {
    await runner.release();
  }
}

/** max |a − b| (the lengths must match). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`maxAbsDiff: lengths ${a.length} and ${b.length} differ`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

/** The fraction of rows (of `classes` logits) whose argmax agrees. */
export function argmaxAgreement(a: ArrayLike<number>, b: ArrayLike<number>, classes: number): number {
  const ia = argmaxRows(a, classes);
  const ib = argmaxRows(b, classes);
  return ia.reduce((same, v, i) => same + (v === ib[i] ? 1 : 0), 0) / ia.length;
}
