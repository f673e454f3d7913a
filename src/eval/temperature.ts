/**
 * Temperature rules of Gupta & Ajanthan, "Improved gradient based adversarial attacks for
 * quantized networks" (AAAI 2022). A trained quantized network's logits are often so far apart
 * that the softmax saturates (p_y = 1 in float32) and the cross-entropy gradient vanishes; the
 * attack then divides the logits by a temperature T (multiplies them by β = 1/T), which leaves the
 * argmax -- the decision boundary -- unchanged and brings the gradient back.
 *
 * - NJS (network Jacobian scaling): T = the mean singular value of the logit-to-input Jacobian
 *   over a few samples (the network's signal gain), plus the paper's per-sample gradient
 *   threshold: a sample whose scaled softmax is still saturated (1 − p_y < ρ, ρ = 0.01) gets its
 *   scaled logits multiplied by β_ρ = −ln(ρ / ((1 − ρ)(C − 1))) / γ, γ = max − min of the scaled
 *   logits, which makes 1 − p_y ≥ ρ.
 * - HNS (Hessian norm scaling): per sample, the β that maximizes the Frobenius norm of the
 *   Gauss-Newton input Hessian of the loss, β² Jᵀ S(βz) J with S(p) = diag(p) − p pᵀ, searched on
 *   100 points between the β that makes 1 − p_y = 1 − 1/C − 0.01 (nearly uniform) and the one
 *   that makes it 1e-72 (fully saturated), both from the top-1/top-2 logit gap; β = 1 when the
 *   maximum is at either end of the grid or the sample is misclassified.
 */
import type { Tensor } from '../tensor/index.ts';
import { logitJacobians, type Classify } from './classifier.ts';

/** ρ of the NJS gradient threshold (the paper's value). */
export const NJS_SATURATION = 1e-2;
/** Samples whose Jacobians give the NJS temperature (the paper uses about 100 test images). */
export const NJS_SAMPLES = 100;
/** Grid points of the HNS search. */
export const HNS_GRID = 100;

/** G = J Jᵀ (classes × classes) of a row-major `classes × per` Jacobian. @internal */
export function gramMatrix(jacobian: Float64Array, classes: number): Float64Array {
  const per = jacobian.length / classes;
  const g = new Float64Array(classes * classes);
  for (let a = 0; a < classes; a++) {
    for (let b = a; b < classes; b++) {
      let s = 0;
      for (let k = 0; k < per; k++) s += jacobian[a * per + k]! * jacobian[b * per + k]!;
      g[a * classes + b] = s;
      g[b * classes + a] = s;
    }
  }
  return g;
}

/** Eigenvalues (ascending) of a symmetric n × n matrix, by cyclic Jacobi rotations in float64. */
export function symmetricEigenvalues(matrix: Float64Array, n: number): number[] {
  if (matrix.length !== n * n) throw new Error(`symmetricEigenvalues: expected ${n * n} values, got ${matrix.length}`);
  const a = Float64Array.from(matrix);
  const scale = a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  for (let sweep = 0; sweep < 100 && scale > 0; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q]! ** 2;
    if (Math.sqrt(off) <= 1e-15 * scale) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        // Rotation zeroing a[p][q]: tan(θ) = t, the smaller root of t² + 2τt − 1 = 0.
        const tau = (a[q * n + q]! - a[p * n + p]!) / (2 * apq);
        const t = Math.sign(tau || 1) / (Math.abs(tau) + Math.sqrt(1 + tau * tau));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  return Array.from({ length: n }, (_, i) => a[i * n + i]!).sort((x, y) => x - y);
}

/** Singular values (descending) of a row-major `classes × per` Jacobian: √eig(J Jᵀ). */
export function jacobianSingularValues(jacobian: Float64Array, classes: number): number[] {
  return symmetricEigenvalues(gramMatrix(jacobian, classes), classes).map((v) => Math.sqrt(Math.max(0, v))).reverse();
}

/** The NJS temperature of a model and the singular values it was averaged from. */
export interface NjsTemperature {
  /** T = mean singular value of the logit-to-input Jacobians. */
  readonly temperature: number;
  /** Number of samples used. */
  readonly samples: number;
  /** Every singular value found (samples × classes). */
  readonly singularValues: readonly number[];
}

/**
 * NJS temperature: the mean singular value of the logit-to-input Jacobians of the samples in `x`
 * (pixel space; use about {@link NJS_SAMPLES}). Throws when every Jacobian is zero (no gradient
 * reaches the input at all: no temperature can help).
 */
export function njsTemperature(classify: Classify, x: Tensor): NjsTemperature {
  const { classes, jacobians } = logitJacobians(classify, x);
  const singularValues = jacobians.flatMap((j) => jacobianSingularValues(j, classes));
  const mean = singularValues.reduce((s, v) => s + v, 0) / Math.max(1, singularValues.length);
  if (!(mean > 0) || !Number.isFinite(mean)) throw new Error(`njs temperature: the mean Jacobian singular value is ${mean} (no gradient reaches the input)`);
  return { temperature: mean, samples: jacobians.length, singularValues };
}

/** 1 − softmax(β·z)_y of one sample's logits, in float64 (stable for saturated softmaxes). */
export function oneMinusProbability(logits: ArrayLike<number>, label: number, beta = 1): number {
  const zy = beta * logits[label]!;
  let others = 0;
  let total = 0;
  let top = -Infinity;
  for (let j = 0; j < logits.length; j++) top = Math.max(top, beta * logits[j]!);
  for (let j = 0; j < logits.length; j++) {
    const e = Math.exp(beta * logits[j]! - top);
    total += e;
    if (j !== label) others += e;
  }
  return zy === top ? others / total : 1 - Math.exp(zy - top) / total;
}

/** The β that makes 1 − p_top = `tail` for logits whose other classes all sit `gap` below the top: −ln(tail / ((1 − tail)(C − 1))) / gap. */
function betaForTail(tail: number, gap: number, classes: number): number {
  return -Math.log(tail / ((1 - tail) * (classes - 1))) / gap;
}

/**
 * NJS gradient threshold of one sample: its logits already divided by T. Returns the extra factor
 * β_ρ when the softmax is still saturated (1 − p_y < ρ), else 1.
 */
export function njsThresholdFactor(scaledLogits: ArrayLike<number>, label: number, rho = NJS_SATURATION): number {
  if (!(oneMinusProbability(scaledLogits, label) < rho)) return 1;
  let max = -Infinity;
  let min = Infinity;
  for (let j = 0; j < scaledLogits.length; j++) {
    max = Math.max(max, scaledLogits[j]!);
    min = Math.min(min, scaledLogits[j]!);
  }
  const gap = max - min;
  return gap > 0 ? betaForTail(rho, gap, scaledLogits.length) : 1;
}

/** Softmax probabilities of β·z in float64. */
function softmax64(logits: ArrayLike<number>, beta: number): Float64Array {
  const p = new Float64Array(logits.length);
  let top = -Infinity;
  for (let j = 0; j < logits.length; j++) top = Math.max(top, beta * logits[j]!);
  let total = 0;
  for (let j = 0; j < logits.length; j++) total += (p[j] = Math.exp(beta * logits[j]! - top));
  for (let j = 0; j < logits.length; j++) p[j]! /= total;
  return p;
}

/**
 * ‖β² Jᵀ S(βz) J‖_F, the Frobenius norm of the Gauss-Newton input Hessian of the cross-entropy of
 * β·z, from the Gram matrix G = J Jᵀ: ‖Jᵀ S J‖²_F = tr(S G S G).
 */
export function hessianNorm(logits: ArrayLike<number>, gram: Float64Array, beta: number): number {
  const c = logits.length;
  const p = softmax64(logits, beta);
  // M = S G, S = diag(p) − p pᵀ: M[a][b] = p_a (G[a][b] − Σ_k p_k G[k][b]).
  const pg = new Float64Array(c);
  for (let b = 0; b < c; b++) {
    let s = 0;
    for (let k = 0; k < c; k++) s += p[k]! * gram[k * c + b]!;
    pg[b] = s;
  }
  const m = new Float64Array(c * c);
  for (let a = 0; a < c; a++) for (let b = 0; b < c; b++) m[a * c + b] = p[a]! * (gram[a * c + b]! - pg[b]!);
  let trace = 0;
  for (let a = 0; a < c; a++) for (let b = 0; b < c; b++) trace += m[a * c + b]! * m[b * c + a]!;
  return beta * beta * Math.sqrt(Math.max(0, trace));
}

/**
 * HNS β of one sample from its logits (T = 1), label and Gram matrix G = J Jᵀ (see the module
 * comment). 1 when the sample is misclassified, the top two logits tie, or the best β is at an end
 * of the grid.
 */
export function hnsBeta(logits: ArrayLike<number>, label: number, gram: Float64Array, grid = HNS_GRID): number {
  const c = logits.length;
  let first = 0;
  for (let j = 1; j < c; j++) if (logits[j]! > logits[first]!) first = j;
  if (first !== label || c < 2) return 1;
  let second = -Infinity;
  for (let j = 0; j < c; j++) if (j !== first) second = Math.max(second, logits[j]!);
  const gap = logits[first]! - second;
  if (!(gap > 0) || !Number.isFinite(gap)) return 1;
  const low = betaForTail(1 - 1 / c - 0.01, gap, c);
  const high = betaForTail(1e-72, gap, c);
  let best = 0;
  let bestNorm = -Infinity;
  for (let i = 0; i < grid; i++) {
    const beta = low + ((high - low) * i) / (grid - 1);
    const norm = hessianNorm(logits, gram, beta);
    if (norm > bestNorm) {
      bestNorm = norm;
      best = i;
    }
  }
  return best === 0 || best === grid - 1 ? 1 : low + ((high - low) * best) / (grid - 1);
}

/** HNS β of every sample of `x` (pixel space) with `labels`. One forward and `classes` backward passes. */
export function hnsBetas(classify: Classify, x: Tensor, labels: Int32Array): Float64Array {
  const { logits, classes, jacobians } = logitJacobians(classify, x);
  return Float64Array.from(jacobians, (j, i) => hnsBeta(logits.subarray(i * classes, (i + 1) * classes), labels[i]!, gramMatrix(j, classes)));
}
