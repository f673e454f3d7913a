/**
 * The RNN transducer loss (Graves 2012, "Sequence Transduction with Recurrent Neural Networks"):
 * −log P(y | x), summed over every alignment of the labels y to the T encoder frames, computed in
 * log space with the forward variables α and given an exact gradient from the forward–backward
 * variables β.
 */
import { add, sub, sum, mul, mean, Tensor, type Reduction } from '../../tensor/index.ts';
import { typedArrayFor } from '../../backend/primitives.ts';

/** Options of {@link transducerLoss}. */
export interface TransducerLossOptions {
  /** Index of the blank symbol in the joint output (default: the last index, V). */
  readonly blank?: number;
  /** 'mean' over the batch (default, as torchaudio's rnnt_loss), 'sum', or 'none' for [N]. */
  readonly reduction?: Reduction;
}

/** Per-sample lengths: an int32 tensor [N] or plain integers. */
export type Lengths = Tensor | ArrayLike<number>;

/** log(eᵃ + eᵇ) without overflow; −∞ stays −∞. */
export function logAddExp(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  return a > b ? a + Math.log1p(Math.exp(b - a)) : b + Math.log1p(Math.exp(a - b));
}

/** @internal Reads and checks `lengths` ([N] integers in [min, max]); `name` is the argument's name. */
export function readLengths(lengths: Lengths, n: number, min: number, max: number, who: string, name: string): Int32Array {
  let values: ArrayLike<number>;
  if (lengths instanceof Tensor) {
    if (lengths.dtype !== 'int32') throw new TypeError(`${who}: ${name} must be int32, got ${lengths.dtype}`);
    if (lengths.rank !== 1) throw new RangeError(`${who}: ${name} must be [N], got shape [${lengths.shape.join(', ')}]`);
    values = lengths.data;
  } else {
    values = lengths;
  }
  if (values.length !== n) throw new RangeError(`${who}: ${name} has ${values.length} entries for a batch of ${n}`);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${who}: ${name}[${i}] = ${v} is outside [${min}, ${max}]`);
    out[i] = v;
  }
  return out;
}

/** The forward–backward results of one batch: −log P(y|x) per sample and the gradient w.r.t. the logits. */
export interface TransducerLossValues {
  /** [N] −log P(y_n | x_n). */
  readonly losses: Float64Array;
  /** Same layout as the logits: ∂(Σ_n −log P_n)/∂logits, zero beyond each sample's lengths. */
  readonly gradient: Float64Array;
}

/**
 * The plain-array core of {@link transducerLoss} (no autograd), for logits [N, T, U+1, V+1] in
 * row-major order; computes in float64. Indices and lengths are not checked here (transducerLoss does).
 *
 * With lp = logSoftmax(logits) over the last axis, per sample (lengths T_n, U_n):
 *   α(0,0) = 0, α(t,u) = logaddexp(α(t−1,u) + lp(t−1,u,∅), α(t,u−1) + lp(t,u−1,y_u)),
 *   log P = α(T_n−1, U_n) + lp(T_n−1, U_n, ∅);
 *   β(T_n−1, U_n) = lp(T_n−1, U_n, ∅), β(t,u) = logaddexp(β(t+1,u) + lp(t,u,∅), β(t,u+1) + lp(t,u,y_{u+1})).
 * The gradient of −log P w.r.t. the logits z(t,u,k) is
 *   softmax(z(t,u))_k · e^{α(t,u)+β(t,u)−log P} − e^{α(t,u)+lp(t,u,k)+β(next)−log P}·[k ∈ {∅, y_{u+1}}],
 * where "next" is (t+1,u) for blank (1 at the final cell) and (t,u+1) for the label.
 */
export function transducerLossValues(
  logits: ArrayLike<number>, shape: readonly [number, number, number, number], labels: ArrayLike<number>,
  logitLengths: Int32Array, labelLengths: Int32Array, blank: number,
): TransducerLossValues {
  const [n, maxT, maxU1, vocab] = shape;
  const maxU = maxU1 - 1;
  const losses = new Float64Array(n);
  const gradient = new Float64Array(logits.length);
  const cells = maxT * maxU1;
  const logNorm = new Float64Array(cells);
  const alpha = new Float64Array(cells);
  const beta = new Float64Array(cells);
  for (let b = 0; b < n; b++) {
    const tn = logitLengths[b]!;
    const un = labelLengths[b]!;
    const base = b * cells * vocab;
    const y = (u: number): number => labels[b * maxU + u]!;
    // log Σ_k e^{z(t,u,k)} of each cell in range.
    for (let t = 0; t < tn; t++) {
      for (let u = 0; u <= un; u++) {
        const o = base + (t * maxU1 + u) * vocab;
        let m = -Infinity;
        for (let k = 0; k < vocab; k++) m = Math.max(m, logits[o + k]!);
        let s = 0;
        for (let k = 0; k < vocab; k++) s += Math.exp(logits[o + k]! - m);
        logNorm[t * maxU1 + u] = m + Math.log(s);
      }
    }
    const lp = (t: number, u: number, k: number): number => logits[base + (t * maxU1 + u) * vocab + k]! - logNorm[t * maxU1 + u]!;
    for (let t = 0; t < tn; t++) {
      for (let u = 0; u <= un; u++) {
        let a = t === 0 && u === 0 ? 0 : -Infinity;
        if (t > 0) a = logAddExp(a, alpha[(t - 1) * maxU1 + u]! + lp(t - 1, u, blank));
        if (u > 0) a = logAddExp(a, alpha[t * maxU1 + u - 1]! + lp(t, u - 1, y(u - 1)));
        alpha[t * maxU1 + u] = a;
      }
    }
    for (let t = tn - 1; t >= 0; t--) {
      for (let u = un; u >= 0; u--) {
        let v = t === tn - 1 && u === un ? lp(t, u, blank) : -Infinity;
        if (t < tn - 1) v = logAddExp(v, beta[(t + 1) * maxU1 + u]! + lp(t, u, blank));
        if (u < un) v = logAddExp(v, beta[t * maxU1 + u + 1]! + lp(t, u, y(u)));
        beta[t * maxU1 + u] = v;
      }
    }
    const logP = beta[0]!;
    losses[b] = -logP;
    for (let t = 0; t < tn; t++) {
      for (let u = 0; u <= un; u++) {
        const cell = t * maxU1 + u;
        const o = base + cell * vocab;
        const occupancy = Math.exp(alpha[cell]! + beta[cell]! - logP);
        for (let k = 0; k < vocab; k++) gradient[o + k] = occupancy * Math.exp(logits[o + k]! - logNorm[cell]!);
        const blankNext = t < tn - 1 ? beta[cell + maxU1]! : u === un ? 0 : -Infinity;
        gradient[o + blank]! -= Math.exp(alpha[cell]! + lp(t, u, blank) + blankNext - logP);
        if (u < un) gradient[o + y(u)]! -= Math.exp(alpha[cell]! + lp(t, u, y(u)) + beta[cell + 1]! - logP);
      }
    }
  }
  return { losses, gradient };
}

/**
 * RNN-T loss −log P(y | x) (Graves 2012), summed over all alignments, with per-sample lengths.
 *
 * Shapes: `logits` [N, T, U+1, V+1] float (the joint network's output, before log-softmax);
 * `labels` [N, U] int32 (entries beyond a sample's label length are ignored); `logitLengths` [N]
 * in [1, T]; `labelLengths` [N] in [0, U]. Every label within its length must be in [0, V] and
 * differ from `blank`. Any U is possible with T ≥ 1 (a frame may emit many labels).
 *
 * Gradient: exact, from the forward–backward variables (see {@link transducerLossValues}), with
 * respect to the logits; cells beyond a sample's lengths get exactly zero. It is attached as a
 * constant vector–Jacobian product (`Σ logits·G − (same, detached)` + loss), so it is not itself
 * differentiable (no double backward). Memory and time are O(N·T·(U+1)·(V+1)).
 */
export function transducerLoss(logits: Tensor, labels: Tensor, logitLengths: Lengths, labelLengths: Lengths, options: TransducerLossOptions = {}): Tensor {
  const who = 'transducerLoss';
  if (logits.rank !== 4) throw new RangeError(`${who}: logits must be [N, T, U+1, V+1], got shape [${logits.shape.join(', ')}]`);
  if (logits.dtype === 'int32') throw new TypeError(`${who}: logits must be float32 or float64, got int32`);
  const [n, maxT, maxU1, vocab] = logits.shape as [number, number, number, number];
  if (vocab < 2) throw new RangeError(`${who}: logits need at least 2 outputs (a label and blank), got ${vocab}`);
  if (maxT < 1) throw new RangeError(`${who}: logits have no frames (T = 0)`);
  if (labels.dtype !== 'int32') throw new TypeError(`${who}: labels must be int32, got ${labels.dtype}`);
  if (labels.rank !== 2 || labels.shape[0] !== n || labels.shape[1] !== maxU1 - 1) {
    throw new RangeError(`${who}: labels must be [N, U] = [${n}, ${maxU1 - 1}] to match logits [${logits.shape.join(', ')}], got [${labels.shape.join(', ')}]`);
  }
  const blank = options.blank ?? vocab - 1;
  if (!Number.isInteger(blank) || blank < 0 || blank >= vocab) throw new RangeError(`${who}: blank must be an integer in [0, ${vocab - 1}], got ${blank}`);
  const reduction = options.reduction ?? 'mean';
  if (reduction !== 'mean' && reduction !== 'sum' && reduction !== 'none') throw new RangeError(`${who}: reduction must be 'mean', 'sum' or 'none', got ${String(reduction)}`);
  const tLengths = readLengths(logitLengths, n, 1, maxT, who, 'logitLengths');
  const uLengths = readLengths(labelLengths, n, 0, maxU1 - 1, who, 'labelLengths');
  for (let b = 0; b < n; b++) {
    for (let u = 0; u < uLengths[b]!; u++) {
      const y = labels.data[b * (maxU1 - 1) + u]!;
      if (y < 0 || y >= vocab) throw new RangeError(`${who}: labels[${b}, ${u}] = ${y} is outside [0, ${vocab - 1}]`);
      if (y === blank) throw new RangeError(`${who}: labels[${b}, ${u}] is the blank index ${blank}; blank cannot be a label`);
    }
  }
  const { losses, gradient } = transducerLossValues(logits.data, [n, maxT, maxU1, vocab], labels.data, tLengths, uLengths, blank);
  const values = typedArrayFor(logits.dtype, n);
  values.set(losses);
  const lossTensor = new Tensor(values, [n]);
  let perSample = lossTensor;
  if (logits.requiresGrad) {
    const g = typedArrayFor(logits.dtype, gradient.length);
    g.set(gradient);
    // Value: the loss (s − s is exactly 0); gradient w.r.t. the logits: the forward–backward one.
    const s = sum(mul(logits, new Tensor(g, logits.shape)), [1, 2, 3]);
    perSample = add(sub(s, s.detach()), lossTensor);
  }
  return reduction === 'none' ? perSample : reduction === 'sum' ? sum(perSample) : mean(perSample);
}
