export * from './proto.ts';
export { importOnnx, defaultOpset, unsupportedOps, OnnxModule, OnnxOp, OnnxUnsupportedOpsError, MIN_ONNX_OPSET, MAX_ONNX_OPSET, type ImportOnnxOptions } from './import.ts';
export { ONNX_OPS, OnnxBatchNorm, OnnxFlatten, OnnxGlobalAveragePool, type OpHandler, type NodeContext, type BuildContext, type LayerPlan } from './ops.ts';
export { IntValue, Attributes, valueFromTensor, type OnnxValue } from './values.ts';
export { buildOnnxModel, exportOnnx, saveOnnx, ONNX_PROFILES, MIN_EXPORT_OPSET, MAX_EXPORT_OPSET, type OnnxExportOptions, type OnnxExportResult, type OnnxProfile } from './export.ts';
export { verifyOnnx, openOnnx, loadOnnxRuntime, formatVerifyReport, type VerifyReport, type VerifySamples, type ReferenceFn, type OnnxRunner, type OnnxRunOptions, type OnnxRuntimeLoad } from './verify.ts';
export {
  buildRnnOnnxModel, exportRnnOnnx, saveRnnOnnx, rnnChain, runRnnChain, MIN_RNN_EXPORT_OPSET, MAX_RNN_EXPORT_OPSET,
  type RnnOnnxExportOptions, type RnnOnnxExportResult, type RnnOnnxValue, type RnnChainModule, type RnnChainStates,
} from './rnn.ts';
export { openRnnOnnx, verifyRnnOnnx, type RnnOnnxOpenOptions, type RnnOnnxRunner, type RnnVerifyReport, type RnnVerifyOptions } from './rnn-verify.ts';
export { exportTransformerOnnx, saveTransformerOnnx, TRANSFORMER_ONNX_OPSET, type TransformerOnnxExportOptions, type TransformerOnnxExportResult } from './transformer.ts';
