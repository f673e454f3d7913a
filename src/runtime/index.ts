/** Integer runtime: convert a fake-quant model to an IntModel, run it, save/load it. */
export { IntModel, tensorData, type IntGraph, type IntNode, type AddNode, type IntTensor, type IntTensorDtype, type LayerNode, type LayerInput, type LayerOutput, type LayerSummary, type RunOptions, type WeightFormat } from './intmodel.ts';
export { convert, captureLeaves, compareWithFakeQuant, type ConvertOptions, type AgreementReport } from './convert.ts';
export { captureGraph, ConvertError, type ConvertErrorReason, type CapturedGraph, type CapturedNode } from './capture.ts';
export { quantizeMultiplier, requantizeScalar, multiplierValue, type FixedPointMultiplier } from './requantize.ts';
export { saveIntModel, loadIntModel, intModelToLowbit, intModelFromLowbit } from './io.ts';
export { compactIntModel, type PrunedChannels } from './compact.ts';
export { validateIntGraph, IntGraphError, MAX_SAMPLE_ELEMENTS, MAX_SAMPLE_MACS, type IntGraphSize } from './validate.ts';
