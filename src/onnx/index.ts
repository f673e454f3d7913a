export * from './proto.ts';
export { buildOnnxModel, exportOnnx, saveOnnx, ONNX_PROFILES, MIN_EXPORT_OPSET, MAX_EXPORT_OPSET, type OnnxExportOptions, type OnnxExportResult, type OnnxProfile } from './export.ts';
export { verifyOnnx, openOnnx, loadOnnxRuntime, formatVerifyReport, type VerifyReport, type VerifySamples, type ReferenceFn, type OnnxRunner, type OnnxRunOptions, type OnnxRuntimeLoad } from './verify.ts';
