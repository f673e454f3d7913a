/** iRNN: integer-only LSTM (PWL activations, QAT model, integer runtime, file io). See docs/irnn.md. */
export {
  type Pwl, type PwlObjective, type PwlFitOptions, type PwlError, type PwlFormat, type IntPwl,
  DEFAULT_PWL_FORMAT, fitPwl, fitSigmoidPwl, fitTanhPwl, sigmoidExact, evalPwl, pwlSlope, pwlError,
  quantizePwl, evalIntPwl, evalIntPwlIndexed, pwlSegmentIndex, pwlOfInt, intPwlProblems, pwlShift, roundShift, applyPwl,
} from './pwl.ts';
export { GATE_FRAC, ACT_FRAC, CELL_FRAC, LN_INPUT_FRAC, MIN_WEIGHT_BITS, MAX_WEIGHT_BITS, rowScales, absMaxScale, weightMax, weightStorage, packedWeightBytes } from './formats.ts';
export { QuantLSTM, lstmPwlTables, type QuantLSTMOptions } from './qlstm.ts';
export { IntLSTM, intLstmStep, lnCellUpdate, lnStepBuffers, convertQuantLSTM, type IntLSTMParams, type IntLSTMState, type IntLSTMRunOptions, type IntLSTMLayerNorm, type LnStepBuffers } from './intlstm.ts';
export { IrnnFormatError, intLSTMToLowbit, intLSTMFromLowbit, irnnFromLowbit, saveIntLSTM, loadIntLSTM, loadIrnnModel, MAX_IRNN_SIZE, MAX_PWL_SEGMENTS, type IrnnFormatErrorCode, type IrnnModel } from './io.ts';
export {
  QuantLayerNorm, IntLayerNorm, convertQuantLayerNorm, intLayerNormRow, isqrtFloor, isqrtRound, layerNormParams, epsCodeOf,
  NORM_FRAC, MAX_LN_SIZE, type IntLayerNormParams, type IntLayerNormModel, type QuantLayerNormOptions,
} from './layernorm.ts';
export {
  QuantAttention, IntAttention, convertQuantAttention, intAttention, intExp, intSoftmax, SCORE_FRAC, EXP_FRAC, PROB_FRAC, MAX_ATTENTION_SIZE,
  type IntAttentionParams, type AttentionTrace, type QuantAttentionOptions, type AttentionForwardOptions,
} from './attention.ts';
export {
  QuantTransducer, QuantTransducerJoint, QuantLstmPredictor, IntTransducer, convertQuantTransducer, JOINT_FRAC, JOINT_SCALE, PROJECTION_MAX,
  type QuantTransducerOptions, type QuantPredictorState, type IntJointParams, type IntTransducerParts,
} from './transducer.ts';
export { intTransducerToLowbit, intTransducerFromLowbit, saveIntTransducer, loadIntTransducer } from './transducer-io.ts';
export { QuantGRU, type QuantGRUOptions } from './qgru.ts';
export { IntGRU, intGruStep, convertQuantGRU, type IntGRUParams, type IntGRURunOptions, type IntGRUCellPath } from './intgru.ts';
export { intGRUToLowbit, intGRUFromLowbit, saveIntGRU, loadIntGRU, isIntGRUFile, IRNN_GRU_FORMAT } from './gru-io.ts';
export {
  IntTransformerLM, convertTransformerLM, intErf, intGelu, erfPolynomial, intCausalSoftmaxRow, GELU_FRAC, ERF_FRAC, RESIDUAL_BITS,
  type IntTransformerLMParams, type IntTransformerBlockParams, type IntTransformerCache, type IntTransformerRunOptions, type IntLinearParams, type IntHeadParams, type IntTransformerActivation,
} from './transformer.ts';
export { intTransformerToLowbit, intTransformerFromLowbit, saveIntTransformer, loadIntTransformer, isIntTransformerFile } from './transformer-io.ts';
