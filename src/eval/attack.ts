/**
 * Untargeted L∞ gradient attacks: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), on
 * any lowbit model (float, fake-quant QAT, binary), batched, with the cross-entropy of β·logits
 * (β = 1/T: a fixed temperature, or the NJS / HNS rules of Gupta & Ajanthan 2022, see
 * temperature.ts).
 *
 *   FGSM: x' = clip_[lo,hi](x + ε · sign(∇ₓ CE(β f(x), y)))
 *   PGD:  x₀ = clip(x + U(−ε, ε)), x_{k+1} = clip_[lo,hi](Π_ε(x_k + α · sign(∇ CE(β f(x_k), y))))
 *
 * with sign(0) = 0. PGD keeps, per sample, the first iterate that is misclassified (every iterate
 * is a valid point of the ε-ball, so this only reports a success the attack found) and otherwise
 * the last one.
 */
import { grad, noGrad } from '../autograd/index.ts';
import type { NormalizeStats } from '../data/index.ts';
import type { TensorModule } from '../nn/index.ts';
import { crossEntropy, mul, Rng, Tensor } from '../tensor/index.ts';
import { classifierOf, withFrozenModel, type Classify } from './classifier.ts';
import { hnsBetas, njsTemperature, njsThresholdFactor, NJS_SAMPLES } from './temperature.ts';

/** Attack names. */
export const ATTACK_NAMES = ['fgsm', 'pgd'] as const;
export type AttackName = (typeof ATTACK_NAMES)[number];

/**
 * How the logits are scaled in the attack loss: a fixed temperature T (logits / T), or a rule of
 * the paper. `{ rule: 'njs', temperature }` reuses an NJS temperature computed before (on other
 * samples); plain `'njs'` computes it from the attacked batch (its first {@link NJS_SAMPLES}).
 */
export type TemperatureOption = number | 'njs' | 'hns' | { readonly rule: 'njs'; readonly temperature: number };

export interface AttackOptions {
  /** L∞ budget in input units (pixels in [0, 1] by default). */
  readonly eps: number;
  /** Default 'fgsm'. */
  readonly attack?: AttackName;
  /** PGD iterations (default 20). */
  readonly steps?: number;
  /** PGD step α (default 2.5 · eps / steps). */
  readonly stepSize?: number;
  /** Start from a uniform random point of the ε-ball (default: true for PGD, false for FGSM). */
  readonly randomStart?: boolean;
  /** Valid input range, enforced after every step (default [0, 1]). */
  readonly range?: readonly [number, number];
  /** Dataset normalization applied inside the model's forward (the attack works in pixel space). */
  readonly normalize?: NormalizeStats;
  /** Temperature of the loss (default 1). */
  readonly temperature?: TemperatureOption;
  /** Seed of the random start (default 0). */
  readonly seed?: number;
}

export interface AttackResult {
  /** The adversarial examples, same shape as the input. */
  readonly adversarial: Tensor;
  /** Predicted class of each adversarial example. */
  readonly predictions: Int32Array;
  /** β = 1/T used for each sample at the first step (NJS may change it at later steps). */
  readonly betas: Float64Array;
  /** NJS temperature, when the NJS rule ran. */
  readonly njsTemperature?: number;
  /** 1 where the first input gradient of the sample was exactly zero everywhere. */
  readonly zeroGradient: Uint8Array;
}

/**
 * Gradient of Σᵢ CE(βᵢ · f(xᵢ), yᵢ) with respect to `x` (a sum, so each sample's gradient does not
 * depend on the batch), and the logits at `x`. `betas` is read after the logits exist, through
 * `scale(logits)`, so that rules that look at the logits (NJS thresholding) can set it.
 * The model must already be frozen (see `withFrozenModel`). @internal
 */
export function lossGradient(classify: Classify, x: Tensor, labels: Int32Array, scale: (logits: Float32Array, classes: number) => Float64Array): { gradient: Float32Array; logits: Float32Array; betas: Float64Array } {
  const input = new Tensor(x.data.slice(), x.shape, true);
  const logits = classify(input);
  const n = logits.shape[0]!;
  const classes = logits.shape[1]!;
  const raw = Float32Array.from(logits.data);
  const bad = labels.findIndex((y) => y >= classes);
  if (bad >= 0) throw new Error(`attack: label ${labels[bad]} of sample ${bad} is not a class of this model (${classes} outputs)`);
  const betas = scale(raw, classes);
  const scaled = mul(logits, new Tensor(Float32Array.from(betas), [n, 1]));
  const loss = crossEntropy(scaled, new Tensor(labels, [n]), 'sum');
  const [g] = grad(loss, [input]);
  return { gradient: Float32Array.from(g!.data), logits: raw, betas };
}

/** Index of the largest value of each row. */
export function argmaxRows(values: ArrayLike<number>, classes: number): Int32Array {
  const n = values.length / classes;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (values[i * classes + c]! > values[i * classes + best]!) best = c;
    out[i] = best;
  }
  return out;
}

/** The per-sample β rule of a temperature option, resolved on the batch (x, labels). @internal */
export function betaRule(classify: Classify, x: Tensor, labels: Int32Array, temperature: TemperatureOption): { rule: (logits: Float32Array, classes: number) => Float64Array; njs?: number } {
  const n = labels.length;
  if (typeof temperature === 'number') {
    if (!(temperature > 0) || !Number.isFinite(temperature)) throw new Error(`attack: temperature must be a positive finite number, got ${temperature}`);
    const betas = new Float64Array(n).fill(1 / temperature);
    return { rule: () => betas };
  }
  if (temperature === 'hns') {
    const betas = hnsBetas(classify, x, labels);
    return { rule: () => betas };
  }
  if (temperature !== 'njs' && (typeof temperature !== 'object' || temperature === null || temperature.rule !== 'njs')) {
    throw new Error(`attack: temperature must be a number, 'njs', 'hns' or { rule: 'njs', temperature }, got ${JSON.stringify(temperature)}`);
  }
  const t = temperature === 'njs' ? njsTemperature(classify, sliceBatch(x, 0, Math.min(n, NJS_SAMPLES))).temperature : temperature.temperature;
  if (!(t > 0) || !Number.isFinite(t)) throw new Error(`attack: NJS temperature must be a positive finite number, got ${t}`);
  return {
    njs: t,
    rule: (logits, classes) => {
      const betas = new Float64Array(n);
      const scaled = new Float64Array(classes);
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < classes; c++) scaled[c] = logits[i * classes + c]! / t;
        betas[i] = njsThresholdFactor(scaled, labels[i]!) / t;
      }
      return betas;
    },
  };
}

/** Samples [from, to) of a batch tensor. @internal */
export function sliceBatch(x: Tensor, from: number, to: number): Tensor {
  const per = x.size / x.shape[0]!;
  return new Tensor(x.data.slice(from * per, to * per), [to - from, ...x.shape.slice(1)]);
}

function checkInputs(x: Tensor, labels: Int32Array, options: AttackOptions): { lo: number; hi: number } {
  if (x.dtype !== 'float32') throw new Error(`attack: images must be float32, got ${x.dtype}`);
  if (x.rank < 2 || x.shape[0] !== labels.length) throw new Error(`attack: ${labels.length} labels for images of shape [${x.shape.join(', ')}]`);
  if (!(options.eps >= 0) || !Number.isFinite(options.eps)) throw new Error(`attack: eps must be a finite number >= 0, got ${options.eps}`);
  const [lo, hi] = options.range ?? [0, 1];
  if (!(lo < hi)) throw new Error(`attack: range must be [lo, hi] with lo < hi, got [${lo}, ${hi}]`);
  if (options.seed !== undefined && !Number.isSafeInteger(options.seed)) throw new Error(`attack: seed must be an integer, got ${options.seed}`);
  const negative = labels.findIndex((y) => y < 0);
  if (negative >= 0) throw new Error(`attack: label ${labels[negative]} of sample ${negative} is negative`);
  const data = x.data as Float32Array;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new Error(`attack: image value ${data[i]} at flat index ${i} (sample ${Math.floor(i / (x.size / labels.length))}) is not finite`);
  }
  return { lo, hi };
}

/**
 * Runs FGSM or PGD on images `x` [N, C, H, W] with integer `labels` [N] against `model`. The model
 * is put in eval mode for the attack and restored afterwards; its parameters get no gradient.
 */
export function attack(model: TensorModule, x: Tensor, labels: Int32Array, options: AttackOptions): AttackResult {
  const { lo, hi } = checkInputs(x, labels, options);
  const kind = options.attack ?? 'fgsm';
  if (!(ATTACK_NAMES as readonly string[]).includes(kind)) throw new Error(`attack: unknown attack '${kind}' (known: ${ATTACK_NAMES.join(', ')})`);
  const steps = kind === 'fgsm' ? 1 : options.steps ?? 20;
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`attack: steps must be a positive integer, got ${steps}`);
  const eps = options.eps;
  const stepSize = kind === 'fgsm' ? eps : options.stepSize ?? (2.5 * eps) / steps;
  if (!(stepSize >= 0) || !Number.isFinite(stepSize)) throw new Error(`attack: stepSize must be a finite number >= 0, got ${stepSize}`);
  const randomStart = options.randomStart ?? kind === 'pgd';
  const classify = classifierOf(model, options.normalize);
  return withFrozenModel(model, () => {
    const n = labels.length;
    const per = x.size / n;
    const clean = x.data as Float32Array;
    const current = clean.slice();
    if (randomStart && eps > 0) {
      const rng = new Rng(options.seed ?? 0);
      for (let k = 0; k < current.length; k++) current[k] = clip(current[k]! + (2 * rng.uniform() - 1) * eps, clean[k]!, eps, lo, hi);
    }
    const { rule, njs } = betaRule(classify, new Tensor(current.slice(), x.shape), labels, options.temperature ?? 1);
    const done = new Uint8Array(n);
    const zeroGradient = new Uint8Array(n);
    let firstBetas: Float64Array | null = null;
    for (let step = 0; step < steps; step++) {
      const { gradient, logits, betas } = lossGradient(classify, new Tensor(current.slice(), x.shape), labels, rule);
      const classes = logits.length / n;
      const predicted = argmaxRows(logits, classes);
      if (step === 0) {
        firstBetas = betas;
        for (let i = 0; i < n; i++) zeroGradient[i] = gradient.subarray(i * per, (i + 1) * per).every((v) => v === 0) ? 1 : 0;
      }
      for (let i = 0; i < n; i++) {
        // PGD: a sample already fooled at this iterate stays there (FGSM always takes its step).
        if (kind === 'pgd' && (done[i] || predicted[i] !== labels[i])) {
          done[i] = 1;
          continue;
        }
        for (let k = i * per; k < (i + 1) * per; k++) {
          const g = gradient[k]!;
          const s = g > 0 ? 1 : g < 0 ? -1 : 0;
          current[k] = clip(current[k]! + stepSize * s, clean[k]!, eps, lo, hi);
        }
      }
    }
    const adversarial = new Tensor(current, x.shape);
    const logits = noGrad(() => classify(adversarial));
    return {
      adversarial,
      predictions: argmaxRows(logits.data as Float32Array, logits.shape[1]!),
      betas: firstBetas!,
      ...(njs !== undefined ? { njsTemperature: njs } : {}),
      zeroGradient,
    };
  });
}

/** Projection onto [x − ε, x + ε] ∩ [lo, hi] (in float64; the Float32Array it is stored in rounds it). */
function clip(value: number, origin: number, eps: number, lo: number, hi: number): number {
  const v = Math.min(Math.max(value, origin - eps), origin + eps);
  return Math.min(Math.max(v, lo), hi);
}

/** FGSM (see {@link attack}). */
export function fgsm(model: TensorModule, x: Tensor, labels: Int32Array, options: Omit<AttackOptions, 'attack' | 'steps' | 'stepSize'>): AttackResult {
  return attack(model, x, labels, { ...options, attack: 'fgsm' });
}

/** PGD with random start (see {@link attack}). */
export function pgd(model: TensorModule, x: Tensor, labels: Int32Array, options: Omit<AttackOptions, 'attack'>): AttackResult {
  return attack(model, x, labels, { ...options, attack: 'pgd' });
}
