/**
 * Robust accuracy of a model under FGSM / PGD at several budgets, with the gradient-vanishing
 * diagnostic that explains a quantized network's "false sense of robustness" (Gupta & Ajanthan
 * 2022): how many samples give an exactly-zero input gradient, and how many have a saturated
 * softmax, at T = 1 and at the attack's temperature.
 */
import type { Dataset, NormalizeStats } from '../data/index.ts';
import type { TensorModule } from '../nn/index.ts';
import { noGrad } from '../autograd/index.ts';
import { Tensor } from '../tensor/index.ts';
import { ProgressBar, type ProgressStream } from '../train/progress.ts';
import { argmaxRows, attack, betaRule, lossGradient, sliceBatch, type AttackName, type TemperatureOption } from './attack.ts';
import { classifierOf, withFrozenModel } from './classifier.ts';
import { njsTemperature, NJS_SAMPLES, oneMinusProbability } from './temperature.ts';

export interface RobustnessOptions {
  /** L∞ budgets in pixel units. */
  readonly eps: readonly number[];
  /** Default 'fgsm'. */
  readonly attack?: AttackName;
  /** Loss temperature: a number T, 'njs' or 'hns' (default 1). NJS is computed once, on the first {@link NJS_SAMPLES} samples. */
  readonly temperature?: number | 'njs' | 'hns';
  /** PGD iterations (default 20) and step (default 2.5 · eps / steps). */
  readonly steps?: number;
  readonly stepSize?: number;
  /** Dataset normalization applied inside the forward. */
  readonly normalize?: NormalizeStats;
  /** Evaluate the first N samples only. */
  readonly limit?: number;
  /** Samples per attack batch (default 100). */
  readonly batchSize?: number;
  /** Seed of PGD's random starts (default 0; batch b uses seed + b). */
  readonly seed?: number;
  /** Show a progress bar (default true) on `progressStream` (default stderr). */
  readonly progress?: boolean;
  readonly progressStream?: ProgressStream;
}

/** Gradient health at the clean inputs, for one temperature. */
export interface GradientDiagnostic {
  /** Fraction of samples whose input gradient of the loss is exactly zero everywhere. */
  readonly zeroGradient: number;
  /** Fraction of samples whose float32 softmax gives p_y = 1 (1 − p_y below 2⁻²⁴): a vanishing loss gradient. */
  readonly saturated: number;
  /** Median over samples of 1 − p_y (float64). */
  readonly medianOneMinusP: number;
}

export interface EpsResult {
  readonly eps: number;
  /** Fraction of samples still classified correctly after the attack. */
  readonly robustAccuracy: number;
  /** Fraction of the correctly classified clean samples that the attack flips. */
  readonly attackSuccessRate: number;
}

export interface RobustnessReport {
  readonly samples: number;
  readonly attack: AttackName;
  readonly steps: number;
  readonly temperature: number | 'njs' | 'hns';
  /** The NJS temperature found (with temperature 'njs'). */
  readonly njsTemperature?: number;
  /** Mean β = 1/T over samples at the first attack step of the first budget. */
  readonly meanBeta: number;
  readonly cleanAccuracy: number;
  readonly results: readonly EpsResult[];
  /** At T = 1 and at the attack's temperature. */
  readonly gradientAtT1: GradientDiagnostic;
  readonly gradientScaled: GradientDiagnostic;
  readonly seconds: number;
}

const FLOAT32_SATURATION = 2 ** -24;

/**
 * Clean accuracy, robust accuracy and attack success rate per budget, and the gradient-vanishing
 * diagnostic, of `model` on `data` (pixels in [0, 1]). The model is left as it was.
 */
export function evaluateRobustness(model: TensorModule, data: Dataset, options: RobustnessOptions): RobustnessReport {
  if (options.eps.length === 0) throw new Error('evaluateRobustness: give at least one eps');
  const attackName = options.attack ?? 'fgsm';
  const steps = attackName === 'fgsm' ? 1 : options.steps ?? 20;
  const temperature = options.temperature ?? 1;
  const batchSize = options.batchSize ?? 100;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`evaluateRobustness: batchSize must be a positive integer, got ${batchSize}`);
  if (options.limit !== undefined && !(Number.isInteger(options.limit) && options.limit >= 1)) throw new Error(`evaluateRobustness: limit must be a positive integer, got ${options.limit}`);
  if (typeof temperature !== 'number' && temperature !== 'njs' && temperature !== 'hns') throw new Error(`evaluateRobustness: temperature must be a number, 'njs' or 'hns', got ${JSON.stringify(temperature)}`);
  const n = Math.min(data.length, options.limit ?? data.length);
  if (n < 1) throw new Error('evaluateRobustness: no samples');
  const per = data.sampleShape.reduce((p, d) => p * d, 1);
  const images = new Tensor(data.images.subarray(0, n * per), [n, ...data.sampleShape]);
  const labels = data.labels.subarray(0, n);
  const classify = classifierOf(model, options.normalize);
  const start = performance.now();

  // One temperature for the whole set with NJS (the paper's network-level constant).
  const njs = temperature === 'njs' ? withFrozenModel(model, () => njsTemperature(classify, sliceBatch(images, 0, Math.min(n, NJS_SAMPLES))).temperature) : undefined;
  const resolved: TemperatureOption = njs !== undefined ? { rule: 'njs', temperature: njs } : temperature;

  const batches = Math.ceil(n / batchSize);
  const bar = options.progress === false ? null : new ProgressBar({ total: batches * (options.eps.length + 1), label: `${attackName} T=${temperature}`, rateUnit: 'batches', stream: options.progressStream });
  let correct = 0;
  const cleanCorrect = new Uint8Array(n);
  const stats = { t1: [] as number[], scaled: [] as number[], zeroT1: 0, zeroScaled: 0 };
  let betaSum = 0;
  const robust = options.eps.map(() => ({ correct: 0, flipped: 0 }));
  for (let b = 0; b < batches; b++) {
    const from = b * batchSize;
    const to = Math.min(n, from + batchSize);
    const x = sliceBatch(images, from, to);
    const y = labels.slice(from, to);
    // Clean accuracy and the gradient diagnostic at both temperatures.
    withFrozenModel(model, () => {
      const logits = noGrad(() => classify(x));
      const classes = logits.shape[1]!;
      const predicted = argmaxRows(logits.data as Float32Array, classes);
      for (let i = 0; i < y.length; i++) if (predicted[i] === y[i]) { correct++; cleanCorrect[from + i] = 1; }
      for (const [which, option] of [['t1', 1], ['scaled', resolved]] as const) {
        const { rule } = betaRule(classify, x, y, option);
        const { gradient, logits: raw, betas } = lossGradient(classify, x, y, rule);
        for (let i = 0; i < y.length; i++) {
          const zero = gradient.subarray(i * per, (i + 1) * per).every((v) => v === 0);
          if (which === 't1') stats.zeroT1 += zero ? 1 : 0;
          else stats.zeroScaled += zero ? 1 : 0;
          stats[which].push(oneMinusProbability(raw.subarray(i * classes, (i + 1) * classes), y[i]!, betas[i]!));
        }
      }
    });
    bar?.tick(1);
    options.eps.forEach((eps, e) => {
      const result = attack(model, x, y, {
        eps, attack: attackName, steps, ...(options.stepSize !== undefined ? { stepSize: options.stepSize } : {}),
        ...(options.normalize ? { normalize: options.normalize } : {}), temperature: resolved, seed: (options.seed ?? 0) + b,
      });
      if (e === 0) betaSum += result.betas.reduce((s, v) => s + v, 0);
      for (let i = 0; i < y.length; i++) {
        if (result.predictions[i] === y[i]) robust[e]!.correct++;
        else if (cleanCorrect[from + i]) robust[e]!.flipped++;
      }
      bar?.tick(1, { eps, acc: `${((100 * robust[e]!.correct) / to).toFixed(1)}%` });
    });
  }
  const seconds = (performance.now() - start) / 1000;
  bar?.done();
  const diagnostic = (tails: number[], zero: number): GradientDiagnostic => {
    const sorted = [...tails].sort((a, b) => a - b);
    return { zeroGradient: zero / n, saturated: tails.filter((t) => t < FLOAT32_SATURATION).length / n, medianOneMinusP: sorted[Math.floor(sorted.length / 2)]! };
  };
  return {
    samples: n,
    attack: attackName,
    steps,
    temperature,
    ...(njs !== undefined ? { njsTemperature: njs } : {}),
    meanBeta: betaSum / n,
    cleanAccuracy: correct / n,
    results: options.eps.map((eps, e) => ({ eps, robustAccuracy: robust[e]!.correct / n, attackSuccessRate: correct > 0 ? robust[e]!.flipped / correct : 0 })),
    gradientAtT1: diagnostic(stats.t1, stats.zeroT1),
    gradientScaled: diagnostic(stats.scaled, stats.zeroScaled),
    seconds,
  };
}
