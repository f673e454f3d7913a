/** Quantization-aware training: prepareQat (swap Conv2d / Linear for fake-quant layers, fold BN) and its helpers. */
export {
  prepareQat, resolveTarget, quantizedLayers, quantizers, setQuantProgress, disableFakeQuant, enableFakeQuant,
  freezeBatchNormStats, formatQuantTable,
  type QatTarget, type PrepareQatOptions, type QuantizedLayerInfo,
} from './prepare.ts';
export { QuantLayer, QuantLinear, QuantConv2d, QuantConvBn2d, QuantConv1d, QuantConvBn1d, type ExportedLayer, type LayerGeometry } from './layers.ts';
export { QuantAdd } from './add.ts';
export { quantizeActivationGradients, ActivationGradientQuantizer, type ActivationGradientOptions } from './activation-gradients.ts';
export { qatFromCliOptions, qatPlanOfRunConfig, QUANT_CHOICES, ESTIMATOR_CHOICES, quantCliOptions, defaultEstimator, type QuantChoice, type EstimatorChoice } from './cli.ts';
export { qatParamGroups, type QatParamGroupOptions } from './param-groups.ts';
