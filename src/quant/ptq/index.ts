/**
 * Post-training quantization: the 'static' quantizer kind (registered on import), `calibrate`,
 * AdaRound and bias correction.
 */
export { StaticQuantizer, createStaticQuantizer, STATIC_KIND } from './static.ts';
export {
  calibrate, calibrationReport, collectCalibrationBatches, ptqPlan, ptqTarget, parseScheme, PTQ_SCHEMES,
  type CalibrateOptions, type CalibrationReport, type PtqPlanOptions, type PtqScheme,
} from './calibrate.ts';
export { adaround, adaroundLayer, type AdaRoundOptions, type AdaRoundResult } from './adaround.ts';
export { correctBias, expectedOutputShift, type BiasCorrectionResult } from './bias-correction.ts';
