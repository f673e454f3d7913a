/**
 * Row-wise comparison of two logit arrays (rows of `width` values): what verifyRnnOnnx reports for
 * onnxruntime against lowbit, and what the benchmarks check their peers with.
 * @internal
 */

/** Largest |a − b|, the largest |b| and the share of rows (of `width` values) whose argmax agree. */
export function compareLogits(a: ArrayLike<number>, b: ArrayLike<number>, width: number): { maxAbsDiff: number; maxAbsRef: number; argmaxAgreement: number } {
  if (a.length !== b.length || a.length % width !== 0) throw new RangeError(`compareLogits: ${a.length} vs ${b.length} values, rows of ${width}`);
  let maxAbsDiff = 0;
  let maxAbsRef = 0;
  let agree = 0;
  const rows = a.length / width;
  for (let r = 0; r < rows; r++) {
    let ia = 0;
    let ib = 0;
    for (let j = 0; j < width; j++) {
      const i = r * width + j;
      const d = Math.abs(a[i]! - b[i]!);
      if (d > maxAbsDiff || Number.isNaN(d)) maxAbsDiff = d; // a NaN stays
      maxAbsRef = Math.max(maxAbsRef, Math.abs(b[i]!));
      if (a[i]! > a[r * width + ia]!) ia = j;
      if (b[i]! > b[r * width + ib]!) ib = j;
    }
    if (ia === ib) agree++;
  }
  return { maxAbsDiff, maxAbsRef, argmaxAgreement: agree / rows };
}
