/** Optimizers (SGD, Adam, AdamW, Madam, LNS-Madam), the LNS weight format and learning-rate schedules. */
export {
  Optimizer,
  type BaseHyper,
  type HyperValue,
  type OptimizerStateDict,
  type ParamGroup,
  type ParamGroupInput,
  type ParamsInput,
  type ParamState,
} from './optimizer.ts';
export { SGD, type SgdHyper, type SgdOptions, type SgdState } from './sgd.ts';
export { Adam, AdamW, type AdamHyper, type AdamOptions, type AdamState } from './adam.ts';
export { Madam, type MadamHyper, type MadamOptions, type MadamState } from './madam.ts';
export { LnsMadam, type LnsMadamHyper, type LnsMadamOptions, type LnsMadamState } from './lns-madam.ts';
export {
  checkLnsFormat, lnsDequantize, lnsExponentOf, lnsMagnitudes, lnsMinExponent, lnsQuantize, LnsError,
  type LnsFormat, type LnsQuantizeOptions, type LnsRounding, type LnsTensor,
} from './lns.ts';
export {
  LRScheduler,
  StepLR,
  MultiStepLR,
  CosineAnnealingLR,
  LinearWarmupLR,
  OneCycleLR,
  ReduceLROnPlateau,
  type ReduceLROnPlateauOptions,
  type ReduceLROnPlateauState,
  type LrGroups,
  type LinearWarmupOptions,
  type OneCycleOptions,
  type SchedulerStateDict,
} from './schedules.ts';
export { clipGradNorm } from './clip.ts';
export { createOptimizer, isOptimizerName, OPTIMIZER_NAMES, type OptimizerByName, type OptimizerName, type OptimizerOptionsMap } from './registry.ts';
export {
  quantizeGradientInPlace, withQuantizedGradients, QuantizedGradientOptimizer, MIN_GRADIENT_BITS, MAX_GRADIENT_BITS,
  type QuantizedGradientOptions, type SteppableOptimizer,
} from './grad-quant.ts';
