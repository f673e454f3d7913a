/** Adversarial attacks and robustness evaluation (FGSM, PGD, temperature-scaled losses). */
export { attack, fgsm, pgd, ATTACK_NAMES, type AttackName, type AttackOptions, type AttackResult, type TemperatureOption } from './attack.ts';
export { classifierOf, withFrozenModel, type Classify } from './classifier.ts';
export {
  njsTemperature, njsThresholdFactor, hnsBeta, hnsBetas, hessianNorm, jacobianSingularValues, symmetricEigenvalues, oneMinusProbability,
  NJS_SAMPLES, NJS_SATURATION, HNS_GRID, type NjsTemperature,
} from './temperature.ts';
export { evaluateRobustness, type RobustnessOptions, type RobustnessReport, type EpsResult, type GradientDiagnostic } from './robustness.ts';
