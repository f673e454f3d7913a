/** PalQuant (Hu et al., ECCV 2022): parallel low-bit groups approximating a high-precision network on a low-precision accelerator. */
export { cyclicPermutation, cyclicPermuteGroups, invertPermutation } from './permute.ts';
export { PalQuantLayer, PalQuantConv2d, PalQuantLinear, CyclicShuffle, type PalQuantSpecs, type PalQuantGeometry, type GroupedConvSource } from './layers.ts';
export { toPalQuant, palQuantLayers, palQuantWeightSpec, palQuantActivationSpec, PalQuantNet, type PalQuantOptions } from './convert.ts';
export { lowerPalQuantLayer, quantizePalQuantInput, palQuantAccumulators, runPalQuantInteger, type PalQuantIntLayer, type PalQuantIntInput } from './integer.ts';
export { palQuantCost, type PalQuantCost, type PalQuantLayerCost } from './cost.ts';
