/**
 * Multiplication-free layers: DeepShift-PS shift layers (weights ±2^p), AdderNet adder layers
 * (−Σ|x − w| with the paper's gradients and a batch norm after each), integer shift kernels, and
 * multiplication-reduced model plans with operation counts and energy estimates (docs/mulfree.md).
 */
export { ShiftLinear, ShiftConv2d, shiftWeight, shiftRange, shiftParamsFrom, shiftCodesOf, quantizeInt8, type ShiftOptions, type ShiftConv2dOptions } from './shift.ts';
export { shiftLinearInteger, shiftConv2dInteger, type ShiftCodes, type ShiftAccumulator } from './kernel.ts';
export { AdderConv2d, AdderLinear, adderConv2d, adderLinear, DEFAULT_ADAPTIVE_ETA, type AdderOptions, type AdderConv2dOptions } from './adder.ts';
export {
  toMulFree, mulFreeLeNet5, reestimateBatchNorm, countMulFreeOps, mulFreeEnergy, LENET5_MULFREE_PLANS, LENET5_WEIGHT_LAYERS, DEFAULT_MULFREE_ENERGY,
  type LayerKind, type MulFreePlan, type LeNet5MulFreeVariant, type ToMulFreeOptions, type LayerOps, type MulFreeEnergyConstants,
} from './model.ts';
