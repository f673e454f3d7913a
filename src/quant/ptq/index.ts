/**
 * Post-training quantization: the 'static' quantizer kind (registered on import), `calibrate`,
 * AdaRound, bias correction, BatchNorm folding and cross-layer equalization.
 */
export { StaticQuantizer, createStaticQuantizer, STATIC_KIND } from './static.ts';
export {
  calibrate, calibrationReport, collectCalibrationBatches, ptqPlan, ptqTarget, parseScheme, PTQ_SCHEMES,
  type CalibrateOptions, type CalibrationReport, type PtqPlanOptions, type PtqScheme,
} from './calibrate.ts';
export { adaround, adaroundLayer, type AdaRoundOptions, type AdaRoundResult } from './adaround.ts';
export { correctBias, expectedOutputShift, type BiasCorrectionResult } from './bias-correction.ts';
export {
  applyEqualizedStructure, equalizeCrossLayer, equalizedStructure, foldBatchNorms,
  type EqualizedStructure, type EqualizeOptions, type EqualizePair, type EqualizeResult, type FoldedBatchNorm,
} from './equalize.ts';
