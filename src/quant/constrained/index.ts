/** Constrained low-bit training for any model: ADMM (Leng et al. 2018) and AskewSGD (Leconte et al. 2023). */
export {
  makeTable,
  toTable,
  nearestIndex,
  nearestLevel,
  projectionError,
  projectValues,
  fitScaleExact,
  fitScaleAlternating,
  type TableSpec,
  type LevelTable,
  type ScaleFit,
} from './tables.ts';
export { AdmmQuantizer, defaultWeightSelector, type AdmmOptions, type ParamSelector, type QuantizedTensorExport } from './admm.ts';
export { AskewSGD, askewParamGroups, askewEpsilon, decayFor, type AskewHyper, type AskewOptions, type AskewState } from './askew.ts';
export { admmOptimizer, trainAdmm, trainAskew, type ConstrainedLoaders, type ConstrainedTrainOptions, type ConstrainedTrainResult } from './train.ts';
