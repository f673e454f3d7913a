/** Quantization configs: quantizer-spec presets, QConfig (validated), QuantPlan and its resolution. */
export * from './presets.ts';
export {
  qconfig, validateSpec, qconfigFor, estimatorsFor, describeSpec,
  float32, w8a8, w4a4, w2a2, w1a1, ternary,
  SCHEMES, ESTIMATORS, BINARY_KINDS, TERNARY_KINDS, UNIFORM_KINDS,
  type QConfig, type QuantRole, type Scheme, type Estimator, type QConfigForOptions,
} from './qconfig.ts';
export {
  resolvePlan, planFromTable, validateTable, specAt8Bits, globToRegExp, LAYER_TYPES,
  type QuantPlan, type PlanOverride, type PlanMatch, type ResolvedLayer, type ResolveOptions, type LayerType,
} from './plan.ts';
export { biRealPlan, signApprox, binaryMagnitudeAware, int8Signed } from './bireal.ts';
