/**
 * The `--quant` / `--estimator` options of CLI commands (train, later quantize and search), as
 * one function over the config API so the CLI never re-implements it.
 */
import { ESTIMATORS, estimatorsFor, qconfigFor, SCHEMES, type Estimator, type Scheme } from '../config/qconfig.ts';
import type { QuantPlan } from '../config/plan.ts';

/** Values of `--quant`: 'fp32' (no quantization) or a scheme. */
export const QUANT_CHOICES = ['fp32', ...SCHEMES] as const;
export type QuantChoice = (typeof QUANT_CHOICES)[number];

/** Values of `--estimator`. */
export const ESTIMATOR_CHOICES = ESTIMATORS;
export type EstimatorChoice = Estimator;

const DEFAULT_ESTIMATOR: Record<Scheme, Estimator> = {
  w8a8: 'ste',
  w4a4: 'lsq',
  w2a2: 'lsq',
  w1a1: 'binary',
  ternary: 'ternary',
};

/** The estimator used when `--estimator` is not given. */
export function defaultEstimator(scheme: Scheme): Estimator {
  return DEFAULT_ESTIMATOR[scheme];
}

/**
 * Option specs (the shape of `cli/args.ts` EnumSpec) to spread into a command's options:
 * `options: { ...quantCliOptions, epochs: {...} }`.
 */
export const quantCliOptions = {
  quant: {
    type: 'enum',
    choices: QUANT_CHOICES,
    default: 'fp32',
    help: 'quantization-aware training scheme: fp32 (none), w8a8, w4a4, w2a2, w1a1 (binary), ternary (ternary weights, 8-bit activations)',
  },
  estimator: {
    type: 'enum',
    choices: ESTIMATOR_CHOICES,
    help: 'gradient estimator / quantizer family (default: ste for w8a8, lsq for w4a4 and w2a2, binary for w1a1, ternary for ternary)',
  },
} as const;

export interface QuantCliOptions {
  readonly quant: QuantChoice;
  readonly estimator?: EstimatorChoice | undefined;
}

/**
 * The QuantPlan of the CLI options, or null for 'fp32' (an `--estimator` with fp32 throws, as does
 * an estimator that does not apply to the scheme). First/last layers at 8 bits and an 8-bit input,
 * as `QuantPlan`'s defaults.
 */
export function qatFromCliOptions(options: QuantCliOptions): QuantPlan | null {
  const { quant, estimator } = options;
  if (!(QUANT_CHOICES as readonly string[]).includes(quant)) throw new Error(`--quant must be one of ${QUANT_CHOICES.join(', ')}; got '${String(quant)}'`);
  if (quant === 'fp32') {
    if (estimator !== undefined) throw new Error(`--estimator ${estimator} needs a quantization scheme (--quant ${SCHEMES.join('|')})`);
    return null;
  }
  const chosen = estimator ?? defaultEstimator(quant);
  if (!estimatorsFor(quant).includes(chosen)) {
    throw new Error(`--estimator ${chosen} does not apply to --quant ${quant}; valid: ${estimatorsFor(quant).join(', ')}`);
  }
  return { default: qconfigFor(quant, chosen) };
}

/**
 * The QAT plan a training run's config describes: its stored `plan` (a `lowbit train --plan` run:
 * the searched per-layer widths) or the plan of its `quant` / `estimator` options; null for fp32.
 */
export function qatPlanOfRunConfig(config: { quant?: unknown; estimator?: unknown; plan?: unknown }): QuantPlan | null {
  if (config.plan !== undefined && config.plan !== null) {
    if (typeof config.plan !== 'object' || Array.isArray(config.plan)) throw new Error(`the run config's plan must be a QuantPlan object, got ${JSON.stringify(config.plan).slice(0, 80)}`);
    return config.plan as QuantPlan;
  }
  return qatFromCliOptions({
    quant: (typeof config.quant === 'string' ? config.quant : 'fp32') as QuantChoice,
    estimator: (typeof config.estimator === 'string' ? config.estimator : undefined) as EstimatorChoice | undefined,
  });
}
